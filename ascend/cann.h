/* cann.h — CANN prototypes and call trampolines for package ascend (see cann.go). */
#ifndef DSGATE_ASCEND_CANN_H
#define DSGATE_ASCEND_CANN_H
#include <dlfcn.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

// Prototypes of the CANN calls this package makes, declared here from the documented
// signatures (CANN 8.1.RC1; table in README.md). Device addresses cross into Go as
// uintptr_t. Every call goes through a function pointer resolved with dlsym.

typedef int aclError;
typedef int32_t aclnnStatus;
typedef int HcclResult;
typedef void *aclrtStream;
typedef void *HcclComm;
typedef void aclTensor;
typedef void aclScalar;
typedef void aclIntArray;
typedef void aclTensorList;
typedef void aclOpExecutor;
typedef struct { char internal[4108]; } HcclRootInfo;

enum {
  F_aclInit, F_aclGetRecentErrMsg, F_aclrtGetDeviceCount, F_aclrtSetDevice, F_aclrtCreateStream,
  F_aclrtDestroyStream, F_aclrtSynchronizeStream, F_aclrtMalloc, F_aclrtFree, F_aclrtMallocHost,
  F_aclrtFreeHost, F_aclrtMemcpy, F_aclrtMemcpyAsync, F_aclrtMemsetAsync,
  F_aclCreateTensor, F_aclDestroyTensor, F_aclCreateScalar, F_aclDestroyScalar, F_aclCreateIntArray,
  F_aclDestroyIntArray, F_aclCreateTensorList, F_aclDestroyTensorList,
  F_HcclCommInitAll, F_HcclGetRootInfo, F_HcclCommInitRootInfo, F_HcclAllReduce, F_HcclAllGather,
  F_HcclCommDestroy,
  // aclnn operators: GetWorkspaceSize then run, in pairs.
  F_aclnnEmbeddingGWS, F_aclnnEmbedding,
  F_aclnnIndexSelectGWS, F_aclnnIndexSelect,
  F_aclnnRmsNormGWS, F_aclnnRmsNorm,
  F_aclnnMatmulGWS, F_aclnnMatmul,
  F_aclnnBatchMatMulGWS, F_aclnnBatchMatMul,
  F_aclnnWeightQuantBatchMatmulV2GWS, F_aclnnWeightQuantBatchMatmulV2,
  F_aclnnAddGWS, F_aclnnAdd,
  F_aclnnMulsGWS, F_aclnnMuls,
  F_aclnnCastGWS, F_aclnnCast,
  F_aclnnSoftmaxGWS, F_aclnnSoftmax,
  F_aclnnRotaryPositionEmbeddingGWS, F_aclnnRotaryPositionEmbedding,
  F_aclnnSwiGluGWS, F_aclnnSwiGlu,
  F_aclnnArgMaxGWS, F_aclnnArgMax,
  F_aclnnTopkGWS, F_aclnnTopk,
  F_aclnnMoeGatingTopKGWS, F_aclnnMoeGatingTopK,
  F_aclnnMoeTokenUnpermuteGWS, F_aclnnMoeTokenUnpermute,
  F_aclnnMoeInitRoutingV3GWS, F_aclnnMoeInitRoutingV3,
  F_aclnnGroupedMatmulV4GWS, F_aclnnGroupedMatmulV4,
  F_aclnnInplaceIndexCopyGWS, F_aclnnInplaceIndexCopy,
  F_COUNT
};

typedef struct { void *fn[F_COUNT]; } dsg_api;

static inline void *dsg_dlopen(const char *path, char *err, size_t n) {
  void *h = dlopen(path, RTLD_NOW | RTLD_GLOBAL);
  if (!h) {
    const char *e = dlerror();
    strncpy(err, e ? e : "dlopen failed", n - 1);
    err[n - 1] = 0;
  }
  return h;
}
static inline void *dsg_dlsym(void *h, const char *name) { return dlsym(h, name); }

#define FN(T, i) ((T)a->fn[i])
typedef aclnnStatus (*run_t)(void *, uint64_t, aclOpExecutor *, aclrtStream);

static inline aclError dsg_aclInit(dsg_api *a) { return FN(aclError (*)(const char *), F_aclInit)(NULL); }
static const char *dsg_errmsg(dsg_api *a) { return FN(const char *(*)(void), F_aclGetRecentErrMsg)(); }
static inline aclError dsg_deviceCount(dsg_api *a, uint32_t *n) { return FN(aclError (*)(uint32_t *), F_aclrtGetDeviceCount)(n); }
static inline aclError dsg_setDevice(dsg_api *a, int32_t d) { return FN(aclError (*)(int32_t), F_aclrtSetDevice)(d); }
static inline aclError dsg_createStream(dsg_api *a, uintptr_t *s) {
  aclrtStream st = NULL;
  aclError r = FN(aclError (*)(aclrtStream *), F_aclrtCreateStream)(&st);
  *s = (uintptr_t)st;
  return r;
}
static inline aclError dsg_destroyStream(dsg_api *a, uintptr_t s) { return FN(aclError (*)(aclrtStream), F_aclrtDestroyStream)((aclrtStream)s); }
static inline aclError dsg_sync(dsg_api *a, uintptr_t s) { return FN(aclError (*)(aclrtStream), F_aclrtSynchronizeStream)((aclrtStream)s); }
static inline aclError dsg_malloc(dsg_api *a, uintptr_t *p, size_t n) {
  void *q = NULL;
  aclError r = FN(aclError (*)(void **, size_t, int), F_aclrtMalloc)(&q, n, 0); // ACL_MEM_MALLOC_HUGE_FIRST
  *p = (uintptr_t)q;
  return r;
}
static inline aclError dsg_free(dsg_api *a, uintptr_t p) { return FN(aclError (*)(void *), F_aclrtFree)((void *)p); }
static inline aclError dsg_mallocHost(dsg_api *a, uintptr_t *p, size_t n) {
  void *q = NULL;
  aclError r = FN(aclError (*)(void **, size_t), F_aclrtMallocHost)(&q, n);
  *p = (uintptr_t)q;
  return r;
}
static inline aclError dsg_freeHost(dsg_api *a, uintptr_t p) { return FN(aclError (*)(void *), F_aclrtFreeHost)((void *)p); }
static inline aclError dsg_memcpy(dsg_api *a, uintptr_t dst, size_t max, uintptr_t src, size_t n, int kind) {
  return FN(aclError (*)(void *, size_t, const void *, size_t, int), F_aclrtMemcpy)((void *)dst, max, (const void *)src, n, kind);
}
static inline aclError dsg_memcpyAsync(dsg_api *a, uintptr_t dst, size_t max, uintptr_t src, size_t n, int kind, uintptr_t s) {
  return FN(aclError (*)(void *, size_t, const void *, size_t, int, aclrtStream), F_aclrtMemcpyAsync)((void *)dst, max, (const void *)src, n, kind,
                                                                                                   (aclrtStream)s);
}
static inline aclError dsg_memsetAsync(dsg_api *a, uintptr_t dst, size_t max, int v, size_t n, uintptr_t s) {
  return FN(aclError (*)(void *, size_t, int32_t, size_t, aclrtStream), F_aclrtMemsetAsync)((void *)dst, max, v, n, (aclrtStream)s);
}
static inline uintptr_t dsg_tensor(dsg_api *a, const int64_t *dims, uint64_t nd, int dt, const int64_t *strides, int64_t off, const int64_t *sdims,
                            uint64_t snd, uintptr_t data) {
  return (uintptr_t)FN(aclTensor *(*)(const int64_t *, uint64_t, int, const int64_t *, int64_t, int, const int64_t *, uint64_t, void *),
                       F_aclCreateTensor)(dims, nd, dt, strides, off, 2 , sdims, snd, (void *)data); // format ACL_FORMAT_ND
}
static inline aclnnStatus dsg_destroyTensor(dsg_api *a, uintptr_t t) { return FN(aclnnStatus (*)(const aclTensor *), F_aclDestroyTensor)((const aclTensor *)t); }
static inline uintptr_t dsg_scalarF32(dsg_api *a, float v) { return (uintptr_t)FN(aclScalar *(*)(void *, int), F_aclCreateScalar)(&v, 0); }
static inline aclnnStatus dsg_destroyScalar(dsg_api *a, uintptr_t s) { return FN(aclnnStatus (*)(const aclScalar *), F_aclDestroyScalar)((const aclScalar *)s); }
static inline uintptr_t dsg_intArray(dsg_api *a, const int64_t *v, uint64_t n) {
  return (uintptr_t)FN(aclIntArray *(*)(const int64_t *, uint64_t), F_aclCreateIntArray)(v, n);
}
static inline aclnnStatus dsg_destroyIntArray(dsg_api *a, uintptr_t p) { return FN(aclnnStatus (*)(const aclIntArray *), F_aclDestroyIntArray)((const aclIntArray *)p); }
static inline uintptr_t dsg_tensorList(dsg_api *a, const uintptr_t *ts, uint64_t n) {
  const aclTensor *arr[16];
  for (uint64_t i = 0; i < n && i < 16; i++) arr[i] = (const aclTensor *)ts[i];
  return (uintptr_t)FN(aclTensorList *(*)(const aclTensor *const *, uint64_t), F_aclCreateTensorList)(arr, n);
}
static inline aclnnStatus dsg_destroyTensorList(dsg_api *a, uintptr_t l) {
  return FN(aclnnStatus (*)(const aclTensorList *), F_aclDestroyTensorList)((const aclTensorList *)l);
}

static inline HcclResult dsg_commInitAll(dsg_api *a, uint32_t n, int32_t *devs, uintptr_t *comms) {
  HcclComm c[64];
  if (n > 64) return 1;
  HcclResult r = FN(HcclResult (*)(uint32_t, int32_t *, HcclComm *), F_HcclCommInitAll)(n, devs, c);
  for (uint32_t i = 0; i < n; i++) comms[i] = r ? 0 : (uintptr_t)c[i];
  return r;
}
static inline HcclResult dsg_getRootInfo(dsg_api *a, char *out) { return FN(HcclResult (*)(HcclRootInfo *), F_HcclGetRootInfo)((HcclRootInfo *)out); }
static inline HcclResult dsg_commInitRootInfo(dsg_api *a, uint32_t n, const char *info, uint32_t rank, uintptr_t *comm) {
  HcclComm c = NULL;
  HcclResult r = FN(HcclResult (*)(uint32_t, const HcclRootInfo *, uint32_t, HcclComm *), F_HcclCommInitRootInfo)(n, (const HcclRootInfo *)info, rank, &c);
  *comm = (uintptr_t)c;
  return r;
}
static inline HcclResult dsg_allReduce(dsg_api *a, uintptr_t send, uintptr_t recv, uint64_t n, int dt, int op, uintptr_t comm, uintptr_t s) {
  return FN(HcclResult (*)(void *, void *, uint64_t, int, int, HcclComm, aclrtStream), F_HcclAllReduce)((void *)send, (void *)recv, n, dt, op, (HcclComm)comm,
                                                                                                   (aclrtStream)s);
}
static inline HcclResult dsg_allGather(dsg_api *a, uintptr_t send, uintptr_t recv, uint64_t n, int dt, uintptr_t comm, uintptr_t s) {
  return FN(HcclResult (*)(void *, void *, uint64_t, int, HcclComm, aclrtStream), F_HcclAllGather)((void *)send, (void *)recv, n, dt, (HcclComm)comm,
                                                                                              (aclrtStream)s);
}
static inline HcclResult dsg_commDestroy(dsg_api *a, uintptr_t c) { return FN(HcclResult (*)(HcclComm), F_HcclCommDestroy)((HcclComm)c); }

// ---- aclnn phase 1 (each returns the workspace size and executor) ----
#define T(x) ((aclTensor *)(x))
#define P1(idx, ...) FN(aclnnStatus (*)(__VA_ARGS__), idx)
static inline aclnnStatus dsg_run(dsg_api *a, int idx, uintptr_t ws, uint64_t wsn, uintptr_t ex, uintptr_t s) {
  return ((run_t)a->fn[idx])((void *)ws, wsn, (aclOpExecutor *)ex, (aclrtStream)s);
}
static inline aclnnStatus dsg_embedding(dsg_api *a, uintptr_t w, uintptr_t idx, uintptr_t out, uint64_t *ws, uintptr_t *ex) {
  return P1(F_aclnnEmbeddingGWS, aclTensor *, aclTensor *, aclTensor *, uint64_t *, aclOpExecutor **)(T(w), T(idx), T(out), ws, (aclOpExecutor **)ex);
}
static inline aclnnStatus dsg_indexSelect(dsg_api *a, uintptr_t x, int64_t dim, uintptr_t idx, uintptr_t out, uint64_t *ws, uintptr_t *ex) {
  return P1(F_aclnnIndexSelectGWS, aclTensor *, int64_t, aclTensor *, aclTensor *, uint64_t *, aclOpExecutor **)(T(x), dim, T(idx), T(out), ws, (aclOpExecutor **)ex);
}
static inline aclnnStatus dsg_rmsNorm(dsg_api *a, uintptr_t x, uintptr_t g, double eps, uintptr_t y, uintptr_t rstd, uint64_t *ws, uintptr_t *ex) {
  return P1(F_aclnnRmsNormGWS, aclTensor *, aclTensor *, double, aclTensor *, aclTensor *, uint64_t *, aclOpExecutor **)(T(x), T(g), eps, T(y), T(rstd), ws,
                                                                                                                    (aclOpExecutor **)ex);
}
static inline aclnnStatus dsg_matmul(dsg_api *a, int batch, uintptr_t x, uintptr_t w, uintptr_t out, int8_t cube, uint64_t *ws, uintptr_t *ex) {
  return P1(batch ? F_aclnnBatchMatMulGWS : F_aclnnMatmulGWS, aclTensor *, aclTensor *, aclTensor *, int8_t, uint64_t *, aclOpExecutor **)(
      T(x), T(w), T(out), cube, ws, (aclOpExecutor **)ex);
}
static inline aclnnStatus dsg_wqbmm(dsg_api *a, uintptr_t x, uintptr_t w, uintptr_t scale, int g, uintptr_t y, uint64_t *ws, uintptr_t *ex) {
  return P1(F_aclnnWeightQuantBatchMatmulV2GWS, aclTensor *, aclTensor *, aclTensor *, aclTensor *, aclTensor *, aclTensor *, aclTensor *, int,
            aclTensor *, uint64_t *, aclOpExecutor **)(T(x), T(w), T(scale), NULL, NULL, NULL, NULL, g, T(y), ws, (aclOpExecutor **)ex);
}
static inline aclnnStatus dsg_add(dsg_api *a, uintptr_t x, uintptr_t y, uintptr_t alpha, uintptr_t out, uint64_t *ws, uintptr_t *ex) {
  return P1(F_aclnnAddGWS, aclTensor *, aclTensor *, aclScalar *, aclTensor *, uint64_t *, aclOpExecutor **)(T(x), T(y), (aclScalar *)alpha, T(out), ws,
                                                                                                        (aclOpExecutor **)ex);
}
static inline aclnnStatus dsg_muls(dsg_api *a, uintptr_t x, uintptr_t s, uintptr_t out, uint64_t *ws, uintptr_t *ex) {
  return P1(F_aclnnMulsGWS, aclTensor *, aclScalar *, aclTensor *, uint64_t *, aclOpExecutor **)(T(x), (aclScalar *)s, T(out), ws, (aclOpExecutor **)ex);
}
static inline aclnnStatus dsg_cast(dsg_api *a, uintptr_t x, int dt, uintptr_t out, uint64_t *ws, uintptr_t *ex) {
  return P1(F_aclnnCastGWS, aclTensor *, int, aclTensor *, uint64_t *, aclOpExecutor **)(T(x), dt, T(out), ws, (aclOpExecutor **)ex);
}
static inline aclnnStatus dsg_softmax(dsg_api *a, uintptr_t x, int64_t dim, uintptr_t out, uint64_t *ws, uintptr_t *ex) {
  return P1(F_aclnnSoftmaxGWS, aclTensor *, int64_t, aclTensor *, uint64_t *, aclOpExecutor **)(T(x), dim, T(out), ws, (aclOpExecutor **)ex);
}
static inline aclnnStatus dsg_rope(dsg_api *a, uintptr_t x, uintptr_t c, uintptr_t s, int64_t mode, uintptr_t out, uint64_t *ws, uintptr_t *ex) {
  return P1(F_aclnnRotaryPositionEmbeddingGWS, aclTensor *, aclTensor *, aclTensor *, int64_t, aclTensor *, uint64_t *, aclOpExecutor **)(
      T(x), T(c), T(s), mode, T(out), ws, (aclOpExecutor **)ex);
}
static inline aclnnStatus dsg_swiglu(dsg_api *a, uintptr_t x, int64_t dim, uintptr_t out, uint64_t *ws, uintptr_t *ex) {
  return P1(F_aclnnSwiGluGWS, aclTensor *, int64_t, aclTensor *, uint64_t *, aclOpExecutor **)(T(x), dim, T(out), ws, (aclOpExecutor **)ex);
}
static inline aclnnStatus dsg_argmax(dsg_api *a, uintptr_t x, int64_t dim, uintptr_t out, uint64_t *ws, uintptr_t *ex) {
  return P1(F_aclnnArgMaxGWS, aclTensor *, int64_t, _Bool, aclTensor *, uint64_t *, aclOpExecutor **)(T(x), dim, 0, T(out), ws, (aclOpExecutor **)ex);
}
static inline aclnnStatus dsg_topk(dsg_api *a, uintptr_t x, int64_t k, uintptr_t v, uintptr_t i, uint64_t *ws, uintptr_t *ex) {
  return P1(F_aclnnTopkGWS, aclTensor *, int64_t, int64_t, _Bool, _Bool, aclTensor *, aclTensor *, uint64_t *, aclOpExecutor **)(
      T(x), k, -1, 1, 1, T(v), T(i), ws, (aclOpExecutor **)ex);
}
static inline aclnnStatus dsg_gating(dsg_api *a, uintptr_t x, uintptr_t bias, int64_t k, int64_t kg, int64_t groups, int64_t mode, double scale, double eps,
                              uintptr_t y, uintptr_t idx, uint64_t *ws, uintptr_t *ex) {
  return P1(F_aclnnMoeGatingTopKGWS, aclTensor *, aclTensor *, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, _Bool, double, double, aclTensor *,
            aclTensor *, aclTensor *, uint64_t *, aclOpExecutor **)(T(x), T(bias), k, kg, groups, mode, 0, 1, 0, scale, eps, T(y), T(idx), NULL, ws,
                                                                    (aclOpExecutor **)ex);
}
static inline aclnnStatus dsg_unpermute(dsg_api *a, uintptr_t perm, uintptr_t idx, uintptr_t probs, uintptr_t out, uint64_t *ws, uintptr_t *ex) {
  return P1(F_aclnnMoeTokenUnpermuteGWS, aclTensor *, aclTensor *, aclTensor *, _Bool, aclIntArray *, aclTensor *, uint64_t *, aclOpExecutor **)(
      T(perm), T(idx), T(probs), 0, NULL, T(out), ws, (aclOpExecutor **)ex);
}
static inline aclnnStatus dsg_initRouting(dsg_api *a, uintptr_t x, uintptr_t ei, int64_t experts, uintptr_t rng, int64_t rowIdxType, uintptr_t xo,
                                   uintptr_t ro, uintptr_t co, uint64_t *ws, uintptr_t *ex) {
  return P1(F_aclnnMoeInitRoutingV3GWS, aclTensor *, aclTensor *, aclTensor *, aclTensor *, int64_t, int64_t, int64_t, int64_t, int64_t, _Bool, int64_t,
            aclIntArray *, int64_t, aclTensor *, aclTensor *, aclTensor *, aclTensor *, uint64_t *, aclOpExecutor **)(
      T(x), T(ei), NULL, NULL, 0, 0, experts, 0, 1, 1, -1, (aclIntArray *)rng, rowIdxType, T(xo), T(ro), T(co), NULL, ws, (aclOpExecutor **)ex);
}
static inline aclnnStatus dsg_gmm(dsg_api *a, uintptr_t x, uintptr_t w, uintptr_t scale, uintptr_t gl, uintptr_t out, uint64_t *ws, uintptr_t *ex) {
  typedef aclTensorList L;
  return P1(F_aclnnGroupedMatmulV4GWS, L *, L *, L *, L *, L *, L *, L *, L *, aclTensor *, L *, L *, L *, int64_t, int64_t, int64_t, int64_t, L *, L *, L *,
            uint64_t *, aclOpExecutor **)((L *)x, (L *)w, NULL, NULL, NULL, (L *)scale, NULL, NULL, T(gl), NULL, NULL, NULL, 3, 0, 1, 0, (L *)out, NULL, NULL, ws,
                                          (aclOpExecutor **)ex);
}

static inline aclnnStatus dsg_indexCopy(dsg_api *a, uintptr_t self, int64_t dim, uintptr_t idx, uintptr_t src, uint64_t *ws, uintptr_t *ex) {
  return P1(F_aclnnInplaceIndexCopyGWS, aclTensor *, int64_t, aclTensor *, aclTensor *, uint64_t *, aclOpExecutor **)(T(self), dim, T(idx), T(src), ws, (aclOpExecutor **)ex);
}
static inline void dsg_host_put(uintptr_t dst, const void *src, size_t n) { memcpy((void *)dst, src, n); }
static inline void dsg_host_get(void *dst, uintptr_t src, size_t n) { memcpy(dst, (const void *)src, n); }
#endif
