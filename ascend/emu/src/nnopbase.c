/* nnopbase.c — libnnopbase.so of the CANN emulator: tensor, scalar, int-array and
 * tensor-list descriptors (acl_meta.h subset, CANN 8.1.RC1). */
#include "tensor.h"
#include <stdlib.h>
#include <string.h>

EMU_API aclTensor *aclCreateTensor(const int64_t *viewDims, uint64_t viewDimsNum, int dataType, const int64_t *stride,
                                   int64_t offset, int format, const int64_t *storageDims, uint64_t storageDimsNum,
                                   void *tensorData) {
  if (viewDimsNum > EMU_MAX_DIMS || storageDimsNum > EMU_MAX_DIMS || (viewDimsNum && (!viewDims || !stride)) ||
      (storageDimsNum && !storageDims) || offset < 0) {
    emu_set_err("aclCreateTensor: invalid arguments (ndims %llu, storage ndims %llu, offset %lld)",
                (unsigned long long)viewDimsNum, (unsigned long long)storageDimsNum, (long long)offset);
    return NULL;
  }
  for (uint64_t i = 0; i < viewDimsNum; i++)
    if (viewDims[i] < 0) {
      emu_set_err("aclCreateTensor: negative dimension");
      return NULL;
    }
  aclTensor *t = calloc(1, sizeof *t);
  if (!t) return NULL;
  t->magic = EMU_TENSOR_MAGIC;
  t->nd = (int)viewDimsNum;
  if (viewDimsNum) {
    memcpy(t->dims, viewDims, viewDimsNum * sizeof(int64_t));
    memcpy(t->strides, stride, viewDimsNum * sizeof(int64_t));
  }
  t->offset = offset;
  t->dtype = dataType;
  t->format = format;
  t->snd = (int)storageDimsNum;
  if (storageDimsNum) memcpy(t->sdims, storageDims, storageDimsNum * sizeof(int64_t));
  t->data = tensorData;
  return t;
}

EMU_API aclnnStatus aclDestroyTensor(const aclTensor *tensor) {
  if (!tensor) return ACLNN_SUCCESS;
  aclTensor *t = (aclTensor *)tensor;
  if (t->magic != EMU_TENSOR_MAGIC) {
    emu_set_err("aclDestroyTensor: not a live tensor");
    return ACLNN_ERR_PARAM_INVALID;
  }
  t->magic = 0;
  free(t);
  return ACLNN_SUCCESS;
}

EMU_API aclScalar *aclCreateScalar(void *value, int dataType) {
  if (!value) return NULL;
  aclScalar *s = calloc(1, sizeof *s);
  if (!s) return NULL;
  s->magic = 0x5ca1a7u;
  s->dtype = dataType;
  switch (dataType) {
  case ACL_FLOAT: s->v = *(float *)value; break;
  case ACL_DOUBLE: s->v = *(double *)value; break;
  case ACL_FLOAT16: s->v = emu_f16_to_f32(*(uint16_t *)value); break;
  case ACL_BF16: s->v = emu_bf16_to_f32(*(uint16_t *)value); break;
  case ACL_INT32: s->v = *(int32_t *)value; break;
  case ACL_INT64: s->v = (double)*(int64_t *)value; break;
  case ACL_INT8: s->v = *(int8_t *)value; break;
  default:
    free(s);
    emu_set_err("aclCreateScalar: unsupported dtype %d", dataType);
    return NULL;
  }
  return s;
}

EMU_API aclnnStatus aclDestroyScalar(const aclScalar *scalar) {
  free((void *)scalar);
  return ACLNN_SUCCESS;
}

EMU_API aclIntArray *aclCreateIntArray(const int64_t *value, uint64_t size) {
  aclIntArray *a = calloc(1, sizeof *a);
  if (!a) return NULL;
  a->magic = 0x1a7a77u;
  a->n = size;
  a->v = malloc((size ? size : 1) * sizeof(int64_t));
  if (!a->v) {
    free(a);
    return NULL;
  }
  if (size) memcpy(a->v, value, size * sizeof(int64_t));
  return a;
}

EMU_API aclnnStatus aclDestroyIntArray(const aclIntArray *array) {
  if (array) {
    free(array->v);
    free((void *)array);
  }
  return ACLNN_SUCCESS;
}

EMU_API aclTensorList *aclCreateTensorList(const aclTensor *const *value, uint64_t size) {
  aclTensorList *l = calloc(1, sizeof *l);
  if (!l) return NULL;
  l->magic = 0x7e451157u;
  l->n = size;
  l->t = calloc(size ? size : 1, sizeof(aclTensor));
  if (!l->t) {
    free(l);
    return NULL;
  }
  for (uint64_t i = 0; i < size; i++) {
    if (!value[i] || value[i]->magic != EMU_TENSOR_MAGIC) {
      emu_set_err("aclCreateTensorList: element %llu is not a live tensor", (unsigned long long)i);
      free(l->t);
      free(l);
      return NULL;
    }
    l->t[i] = *value[i]; /* CANN takes ownership of the tensors; we copy and free them */
    aclDestroyTensor(value[i]);
  }
  return l;
}

EMU_API aclnnStatus aclDestroyTensorList(const aclTensorList *list) {
  if (list) {
    free(list->t);
    free((void *)list);
  }
  return ACLNN_SUCCESS;
}
