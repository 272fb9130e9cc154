/* emu.h — shared definitions of dsgate's CPU emulation of the CANN subset used by the
 * ascend backend. Types and enum values follow CANN 8.1.RC1 headers (acl_base_rt.h,
 * acl_meta.h, hccl_types.h); see ascend/README.md for the signature table.
 * Internal helpers (prefix emu_) are exported from libascendcl.so only for the other
 * emulator libraries; the Go backend never calls them. */
#ifndef DSGATE_EMU_H
#define DSGATE_EMU_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>

#define EMU_API __attribute__((visibility("default")))
#define EMU_HIDDEN __attribute__((visibility("hidden")))

typedef int aclError;
typedef int32_t aclnnStatus;
typedef void *aclrtStream;
typedef void *aclrtContext;
typedef int HcclResult;
typedef void *HcclComm;

/* aclError */
#define ACL_SUCCESS 0
#define ACL_ERROR_INVALID_PARAM 100000
#define ACL_ERROR_UNINITIALIZE 100001
#define ACL_ERROR_REPEAT_INITIALIZE 100002
#define ACL_ERROR_INVALID_RESOURCE_HANDLE 107000
#define ACL_ERROR_BAD_ALLOC 200000
#define ACL_ERROR_INVALID_DEVICE 200002
#define ACL_ERROR_RT_PARAM_INVALID 107000
#define ACL_ERROR_INTERNAL_ERROR 500000

/* aclnnStatus */
#define ACLNN_SUCCESS 0
#define ACLNN_ERR_PARAM_NULLPTR 161001
#define ACLNN_ERR_PARAM_INVALID 161002
#define ACLNN_ERR_RUNTIME_ERROR 361001
#define ACLNN_ERR_INNER 561000

/* HcclResult */
#define HCCL_SUCCESS 0
#define HCCL_E_PARA 1
#define HCCL_E_PTR 2
#define HCCL_E_MEMORY 3
#define HCCL_E_INTERNAL 4
#define HCCL_E_NOT_SUPPORT 5
#define HCCL_E_TIMEOUT 9

/* aclDataType */
enum {
  ACL_DT_UNDEFINED = -1, ACL_FLOAT = 0, ACL_FLOAT16 = 1, ACL_INT8 = 2, ACL_INT32 = 3,
  ACL_UINT8 = 4, ACL_INT16 = 6, ACL_UINT16 = 7, ACL_UINT32 = 8, ACL_INT64 = 9,
  ACL_UINT64 = 10, ACL_DOUBLE = 11, ACL_BOOL = 12, ACL_BF16 = 27, ACL_INT4 = 29
};
/* aclFormat */
enum { ACL_FORMAT_ND = 2, ACL_FORMAT_FRACTAL_NZ = 29 };
/* aclrtMemcpyKind */
enum {
  ACL_MEMCPY_HOST_TO_HOST = 0, ACL_MEMCPY_HOST_TO_DEVICE = 1, ACL_MEMCPY_DEVICE_TO_HOST = 2,
  ACL_MEMCPY_DEVICE_TO_DEVICE = 3, ACL_MEMCPY_DEFAULT = 4
};
/* HcclDataType */
enum {
  HCCL_DATA_TYPE_INT8 = 0, HCCL_DATA_TYPE_INT16 = 1, HCCL_DATA_TYPE_INT32 = 2, HCCL_DATA_TYPE_FP16 = 3,
  HCCL_DATA_TYPE_FP32 = 4, HCCL_DATA_TYPE_INT64 = 5, HCCL_DATA_TYPE_UINT64 = 6, HCCL_DATA_TYPE_UINT8 = 7,
  HCCL_DATA_TYPE_BFP16 = 11
};
enum { HCCL_REDUCE_SUM = 0, HCCL_REDUCE_PROD = 1, HCCL_REDUCE_MAX = 2, HCCL_REDUCE_MIN = 3 };

#define HCCL_ROOT_INFO_BYTES 4108
typedef struct { char internal[HCCL_ROOT_INFO_BYTES]; } HcclRootInfo;

#define EMU_MAX_DIMS 8
#define EMU_TENSOR_MAGIC 0x7e45a0c1u

/* aclTensor: exactly what aclCreateTensor was given (shape/strides in elements). */
typedef struct aclTensor {
  uint32_t magic;
  int nd;
  int64_t dims[EMU_MAX_DIMS];
  int64_t strides[EMU_MAX_DIMS];
  int64_t offset;
  int dtype;
  int format;
  int snd;
  int64_t sdims[EMU_MAX_DIMS];
  void *data;
} aclTensor;

typedef struct aclScalar { uint32_t magic; int dtype; double v; } aclScalar;
typedef struct aclIntArray { uint32_t magic; uint64_t n; int64_t *v; } aclIntArray;
typedef struct aclTensorList { uint32_t magic; uint64_t n; aclTensor *t; } aclTensorList;

/* ---- internal runtime services (libascendcl.so) ---- */
typedef int (*emu_task_fn)(void *arg, char *err, size_t errlen);
EMU_API void emu_set_err(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* emu_dev_block returns the device id owning p and the bytes available from p to the end
 * of its allocation, or -1 when p is not inside a live device allocation. */
EMU_API int emu_dev_block(const void *p, size_t *avail);
EMU_API int emu_current_device(void);
EMU_API int emu_stream_enqueue(aclrtStream s, const char *name, emu_task_fn fn, void *arg, void (*free_arg)(void *));
EMU_API int emu_stream_device(aclrtStream s);
/* emu_alias maps a device address to the emulator's read-write view of it (other
 * pointers are returned unchanged). */
EMU_API void *emu_alias(const void *p);
EMU_API int emu_initialized(void);

/* ---- element helpers shared by the op and collective libraries (static copies) ---- */
static inline float emu_bf16_to_f32(uint16_t b) { union { uint32_t u; float f; } x = {(uint32_t)b << 16}; return x.f; }
static inline uint16_t emu_f32_to_bf16(float f) {
  union { float f; uint32_t u; } x = {f};
  if (f != f) return 0x7FC0;
  uint32_t bias = 0x7FFFu + ((x.u >> 16) & 1u);
  return (uint16_t)((x.u + bias) >> 16);
}
float emu_f16_to_f32(uint16_t h);
uint16_t emu_f32_to_f16(float f);

#endif
