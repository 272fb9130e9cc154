/* tensor.h — element access for emulated aclTensors (hidden, linked into each library). */
#ifndef DSGATE_EMU_TENSOR_H
#define DSGATE_EMU_TENSOR_H
#include "emu.h"

EMU_HIDDEN const char *emu_dtype_name(int dt);
EMU_HIDDEN int64_t emu_numel(const aclTensor *t);
/* emu_check_tensor validates a tensor at phase 1: magic, dtype, storage span inside one
 * live device allocation of the current device. what names it in the error. */
EMU_HIDDEN int emu_check_tensor(const char *op, const char *what, const aclTensor *t);
/* Loads every element of the view (row-major over view dims) as float / int64. The
 * result is malloc'ed; NULL on allocation failure. Only call while executing queued work. */
EMU_HIDDEN float *emu_load_f32(const aclTensor *t);
EMU_HIDDEN int64_t *emu_load_i64(const aclTensor *t);
/* Stores src (row-major over view dims) into t, rounding to t's dtype. */
EMU_HIDDEN void emu_store_f32(const aclTensor *t, const float *src);
EMU_HIDDEN void emu_store_i64(const aclTensor *t, const int64_t *src);
EMU_HIDDEN int emu_is_float(int dt);
/* element access by element offset (offset + Σ index·stride) */
EMU_HIDDEN double emu_get(const aclTensor *t, int64_t e);
EMU_HIDDEN void emu_put(const aclTensor *t, int64_t e, double v);
/* element offset of linear index li (row-major over the view) */
EMU_HIDDEN int64_t emu_elem_off(const aclTensor *t, int64_t li);
EMU_HIDDEN float emu_round_to(int dt, float v);
#endif
