/* common.c — dtype conversion and strided element access shared by the emulator libraries. */
#include "tensor.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

float emu_f16_to_f32(uint16_t h) {
  uint32_t sign = (uint32_t)(h >> 15) << 31, exp = (h >> 10) & 0x1F, man = h & 0x3FF;
  union { uint32_t u; float f; } x;
  if (exp == 0x1F) x.u = sign | 0x7F800000u | man << 13;
  else if (exp) x.u = sign | (exp + 112) << 23 | man << 13;
  else {
    float v = (float)man * (1.0f / 16777216.0f);
    return sign ? -v : v;
  }
  return x.f;
}

uint16_t emu_f32_to_f16(float f) {
  union { float f; uint32_t u; } x = {f};
  uint32_t u = x.u;
  uint16_t sign = (u >> 16) & 0x8000;
  int32_t exp = (u >> 23) & 0xFF;
  uint32_t man = u & 0x7FFFFF;
  if (exp == 0xFF) return sign | (man ? 0x7E00 : 0x7C00);
  int32_t e = exp - 127 + 15;
  if (e >= 0x1F) return sign | 0x7C00;
  if (e <= 0) {
    if (e < -10) return sign;
    man |= 0x800000;
    uint32_t shift = (uint32_t)(14 - e), half = 1u << (shift - 1), rest = man & ((1u << shift) - 1), r = man >> shift;
    if (rest > half || (rest == half && (r & 1))) r++;
    return sign | (uint16_t)r;
  }
  uint32_t r = (uint32_t)e << 10 | man >> 13, rest = man & 0x1FFF;
  if (rest > 0x1000 || (rest == 0x1000 && (r & 1))) r++;
  return sign | (uint16_t)r;
}

const char *emu_dtype_name(int dt) {
  switch (dt) {
  case ACL_FLOAT: return "FLOAT";
  case ACL_FLOAT16: return "FLOAT16";
  case ACL_BF16: return "BFLOAT16";
  case ACL_INT8: return "INT8";
  case ACL_INT4: return "INT4";
  case ACL_INT32: return "INT32";
  case ACL_INT64: return "INT64";
  case ACL_UINT8: return "UINT8";
  case ACL_BOOL: return "BOOL";
  case ACL_DOUBLE: return "DOUBLE";
  }
  return "UNSUPPORTED";
}

int emu_is_float(int dt) { return dt == ACL_FLOAT || dt == ACL_FLOAT16 || dt == ACL_BF16 || dt == ACL_DOUBLE; }

/* bits per element */
static int dt_bits(int dt) {
  switch (dt) {
  case ACL_FLOAT: case ACL_INT32: return 32;
  case ACL_FLOAT16: case ACL_BF16: case ACL_INT16: return 16;
  case ACL_INT8: case ACL_UINT8: case ACL_BOOL: return 8;
  case ACL_INT4: return 4;
  case ACL_INT64: case ACL_DOUBLE: return 64;
  }
  return 0;
}

int64_t emu_numel(const aclTensor *t) {
  int64_t n = 1;
  for (int i = 0; i < t->nd; i++) n *= t->dims[i];
  return n;
}

int emu_check_tensor(const char *op, const char *what, const aclTensor *t) {
  if (!t) {
    emu_set_err("%s: %s is a null tensor", op, what);
    return ACLNN_ERR_PARAM_NULLPTR;
  }
  if (t->magic != EMU_TENSOR_MAGIC) {
    emu_set_err("%s: %s is not a live aclTensor (destroyed or corrupt)", op, what);
    return ACLNN_ERR_PARAM_INVALID;
  }
  if (!dt_bits(t->dtype)) {
    emu_set_err("%s: %s has unsupported dtype %d", op, what, t->dtype);
    return ACLNN_ERR_PARAM_INVALID;
  }
  if (t->format != ACL_FORMAT_ND) {
    emu_set_err("%s: %s has format %d; the emulator implements ND only", op, what, t->format);
    return ACLNN_ERR_PARAM_INVALID;
  }
  int64_t n = emu_numel(t);
  if (n == 0) return 0;
  if (!t->data) {
    emu_set_err("%s: %s has no device address", op, what);
    return ACLNN_ERR_PARAM_NULLPTR;
  }
  int64_t last = t->offset;
  for (int i = 0; i < t->nd; i++) {
    if (t->strides[i] < 0) {
      emu_set_err("%s: %s has a negative stride", op, what);
      return ACLNN_ERR_PARAM_INVALID;
    }
    last += (t->dims[i] - 1) * t->strides[i];
  }
  int64_t storage = 1;
  for (int i = 0; i < t->snd; i++) storage *= t->sdims[i];
  if (last + 1 > storage) {
    emu_set_err("%s: %s view addresses element %lld beyond its storage shape (%lld elements)", op, what,
                (long long)last, (long long)storage);
    return ACLNN_ERR_PARAM_INVALID;
  }
  size_t avail = 0;
  int dev = emu_dev_block(t->data, &avail);
  if (dev < 0) {
    emu_set_err("%s: %s data %p is not device memory (host pointer or freed allocation)", op, what, t->data);
    return ACLNN_ERR_PARAM_INVALID;
  }
  int cur = emu_current_device();
  if (dev != cur) {
    emu_set_err("%s: %s lives on device %d but the thread's device is %d", op, what, dev, cur);
    return ACLNN_ERR_PARAM_INVALID;
  }
  size_t need = (size_t)((storage * dt_bits(t->dtype) + 7) / 8);
  if (need > avail) {
    emu_set_err("%s: %s storage needs %zu bytes but its device allocation has %zu", op, what, need, avail);
    return ACLNN_ERR_PARAM_INVALID;
  }
  return 0;
}

/* element offset of linear index li (row-major over view dims) */
int64_t emu_elem_off(const aclTensor *t, int64_t li) {
  int64_t off = t->offset;
  for (int d = t->nd - 1; d >= 0; d--) {
    int64_t q = li % t->dims[d];
    li /= t->dims[d];
    off += q * t->strides[d];
  }
  return off;
}

double emu_get(const aclTensor *t, int64_t e) {
  const char *p = t->data;
  switch (t->dtype) {
  case ACL_FLOAT: return ((const float *)p)[e];
  case ACL_FLOAT16: return emu_f16_to_f32(((const uint16_t *)p)[e]);
  case ACL_BF16: return emu_bf16_to_f32(((const uint16_t *)p)[e]);
  case ACL_INT8: return ((const int8_t *)p)[e];
  case ACL_UINT8: case ACL_BOOL: return ((const uint8_t *)p)[e];
  case ACL_INT16: return ((const int16_t *)p)[e];
  case ACL_INT32: return ((const int32_t *)p)[e];
  case ACL_INT64: return (double)((const int64_t *)p)[e];
  case ACL_DOUBLE: return ((const double *)p)[e];
  case ACL_INT4: { /* two's-complement nibbles, even element in the low nibble */
    uint8_t b = ((const uint8_t *)p)[e >> 1];
    int v = (e & 1) ? (b >> 4) : (b & 15);
    return v >= 8 ? v - 16 : v;
  }
  }
  return 0;
}

void emu_put(const aclTensor *t, int64_t e, double v) {
  char *p = t->data;
  switch (t->dtype) {
  case ACL_FLOAT: ((float *)p)[e] = (float)v; break;
  case ACL_FLOAT16: ((uint16_t *)p)[e] = emu_f32_to_f16((float)v); break;
  case ACL_BF16: ((uint16_t *)p)[e] = emu_f32_to_bf16((float)v); break;
  case ACL_INT8: ((int8_t *)p)[e] = (int8_t)v; break;
  case ACL_UINT8: case ACL_BOOL: ((uint8_t *)p)[e] = (uint8_t)v; break;
  case ACL_INT16: ((int16_t *)p)[e] = (int16_t)v; break;
  case ACL_INT32: ((int32_t *)p)[e] = (int32_t)v; break;
  case ACL_INT64: ((int64_t *)p)[e] = (int64_t)v; break;
  case ACL_DOUBLE: ((double *)p)[e] = v; break;
  case ACL_INT4: {
    uint8_t *b = (uint8_t *)p + (e >> 1);
    uint8_t n = (uint8_t)((int)v & 15);
    *b = (e & 1) ? (uint8_t)((*b & 0x0F) | n << 4) : (uint8_t)((*b & 0xF0) | n);
    break;
  }
  }
}

float emu_round_to(int dt, float v) {
  switch (dt) {
  case ACL_BF16: return emu_bf16_to_f32(emu_f32_to_bf16(v));
  case ACL_FLOAT16: return emu_f16_to_f32(emu_f32_to_f16(v));
  }
  return v;
}

/* odometer over the view: calls fn(element offset, linear index) in row-major order */
#define FOR_VIEW(t, OFF, LI, BODY)                                              \
  do {                                                                          \
    int64_t _n = emu_numel(t), _c[EMU_MAX_DIMS] = {0}, OFF = (t)->offset;       \
    for (int64_t LI = 0; LI < _n; LI++) {                                       \
      BODY;                                                                     \
      for (int _d = (t)->nd - 1; _d >= 0; _d--) {                               \
        OFF += (t)->strides[_d];                                                \
        if (++_c[_d] < (t)->dims[_d]) break;                                    \
        OFF -= (t)->strides[_d] * (t)->dims[_d];                                \
        _c[_d] = 0;                                                             \
      }                                                                         \
    }                                                                           \
  } while (0)

float *emu_load_f32(const aclTensor *t) {
  int64_t n = emu_numel(t);
  float *r = malloc((size_t)(n ? n : 1) * sizeof *r);
  if (!r) return NULL;
  if (t->dtype == ACL_BF16) {
    const uint16_t *p = t->data;
    FOR_VIEW(t, off, li, r[li] = emu_bf16_to_f32(p[off]));
  } else if (t->dtype == ACL_FLOAT) {
    const float *p = t->data;
    FOR_VIEW(t, off, li, r[li] = p[off]);
  } else {
    FOR_VIEW(t, off, li, r[li] = (float)emu_get(t, off));
  }
  return r;
}

int64_t *emu_load_i64(const aclTensor *t) {
  int64_t n = emu_numel(t);
  int64_t *r = malloc((size_t)(n ? n : 1) * sizeof *r);
  if (!r) return NULL;
  if (t->dtype == ACL_INT64) {
    const int64_t *p = t->data;
    FOR_VIEW(t, off, li, r[li] = p[off]);
  } else {
    FOR_VIEW(t, off, li, r[li] = (int64_t)emu_get(t, off));
  }
  return r;
}

void emu_store_f32(const aclTensor *t, const float *src) {
  if (t->dtype == ACL_BF16) {
    uint16_t *p = t->data;
    FOR_VIEW(t, off, li, p[off] = emu_f32_to_bf16(src[li]));
  } else if (t->dtype == ACL_FLOAT) {
    float *p = t->data;
    FOR_VIEW(t, off, li, p[off] = src[li]);
  } else {
    FOR_VIEW(t, off, li, emu_put(t, off, src[li]));
  }
}

void emu_store_i64(const aclTensor *t, const int64_t *src) {
  if (t->dtype == ACL_INT64) {
    int64_t *p = t->data;
    FOR_VIEW(t, off, li, p[off] = src[li]);
    return;
  }
  FOR_VIEW(t, off, li, emu_put(t, off, (double)src[li]));
}
