/* opapi.c — libopapi.so of the CANN emulator: the aclnn operators the ascend backend
 * calls, two-phase (aclnnXxxGetWorkspaceSize validates and sizes the workspace;
 * aclnnXxx enqueues on a stream). Semantics and limits follow the operator documents
 * named in ascend/README.md (CANN 8.1.RC1 era ops-nn / ops-transformer / ops-math).
 *
 * Protocol checks: phase 2 with less workspace than phase 1 asked for fails; phase 2
 * twice on one executor fails (the executor is consumed); tensors must be device memory
 * of the stream's device, with views inside their allocations. */

#include "tensor.h"
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAXT 12
#define MAXL 4
typedef struct exec {
  uint32_t magic;
  const char *op;
  uint64_t ws;
  int dev;
  int (*run)(struct exec *e, void *ws, char *err, size_t errlen);
  aclTensor t[MAXT]; /* copies; t[i].magic == 0 marks an absent optional tensor */
  aclTensor l[MAXL][8];
  int ln[MAXL];
  double f[6];
  int64_t i[12];
  void *wsptr;
} exec_t;
typedef exec_t aclOpExecutor;
#define EXEC_MAGIC 0xe8ec0001u

/* live executors: created by phase 1 and not yet consumed by phase 2 */
static struct {
  pthread_mutex_t mu; /* guards set */
  exec_t **set;
  size_t n, cap;
} reg = {.mu = PTHREAD_MUTEX_INITIALIZER};

static int reg_add(exec_t *e) {
  pthread_mutex_lock(&reg.mu);
  if (reg.n == reg.cap) {
    size_t nc = reg.cap ? reg.cap * 2 : 256;
    exec_t **ns = realloc(reg.set, nc * sizeof *ns);
    if (!ns) {
      pthread_mutex_unlock(&reg.mu);
      return -1;
    }
    reg.set = ns;
    reg.cap = nc;
  }
  reg.set[reg.n++] = e;
  pthread_mutex_unlock(&reg.mu);
  return 0;
}

static int reg_take(exec_t *e) {
  pthread_mutex_lock(&reg.mu);
  for (size_t i = reg.n; i-- > 0;)
    if (reg.set[i] == e) {
      reg.set[i] = reg.set[--reg.n];
      pthread_mutex_unlock(&reg.mu);
      return 0;
    }
  pthread_mutex_unlock(&reg.mu);
  return -1;
}

static exec_t *new_exec(const char *op, int (*run)(exec_t *, void *, char *, size_t)) {
  exec_t *e = calloc(1, sizeof *e);
  if (!e) return NULL;
  e->magic = EXEC_MAGIC;
  e->op = op;
  e->run = run;
  e->dev = emu_current_device();
  return e;
}

static aclnnStatus finish_phase1(exec_t *e, uint64_t ws, uint64_t *workspaceSize, aclOpExecutor **executor) {
  if (!workspaceSize || !executor) {
    emu_set_err("%sGetWorkspaceSize: null workspaceSize or executor pointer", e->op);
    free(e);
    return ACLNN_ERR_PARAM_NULLPTR;
  }
  e->ws = ws;
  if (reg_add(e)) {
    free(e);
    return ACLNN_ERR_INNER;
  }
  *workspaceSize = ws;
  *executor = e;
  return ACLNN_SUCCESS;
}

static int run_task(void *arg, char *err, size_t errlen) {
  exec_t *e = arg;
  /* Operators reach device memory through the emulator's read-write alias. */
  for (int i = 0; i < MAXT; i++)
    if (e->t[i].magic) e->t[i].data = emu_alias(e->t[i].data);
  for (int l = 0; l < MAXL; l++)
    for (int i = 0; i < e->ln[l]; i++) e->l[l][i].data = emu_alias(e->l[l][i].data);
  return e->run(e, emu_alias(e->wsptr), err, errlen);
}

static aclnnStatus phase2(const char *op, void *workspace, uint64_t workspaceSize, aclOpExecutor *executor, aclrtStream stream) {
  exec_t *e = executor;
  if (!e || reg_take(e)) {
    emu_set_err("%s: executor %p is not live: phase 2 was already called on it, or it did not come from %sGetWorkspaceSize", op,
                (void *)e, op);
    return ACLNN_ERR_PARAM_INVALID;
  }
  if (strcmp(e->op, op) != 0) {
    emu_set_err("%s: executor was made by %sGetWorkspaceSize", op, e->op);
    free(e);
    return ACLNN_ERR_PARAM_INVALID;
  }
  if (workspaceSize < e->ws) {
    emu_set_err("%s: workspace of %llu bytes is smaller than the %llu bytes phase 1 asked for", op,
                (unsigned long long)workspaceSize, (unsigned long long)e->ws);
    free(e);
    return ACLNN_ERR_PARAM_INVALID;
  }
  if (e->ws) {
    size_t avail = 0;
    if (!workspace || emu_dev_block(workspace, &avail) != e->dev || avail < e->ws) {
      emu_set_err("%s: workspace %p is not %llu bytes of device memory on device %d", op, workspace,
                  (unsigned long long)e->ws, e->dev);
      free(e);
      return ACLNN_ERR_PARAM_INVALID;
    }
  }
  int sd = emu_stream_device(stream);
  if (sd != e->dev) {
    emu_set_err("%s: stream belongs to device %d but the operator's tensors to device %d", op, sd, e->dev);
    free(e);
    return ACLNN_ERR_PARAM_INVALID;
  }
  e->wsptr = workspace;
  int rc = emu_stream_enqueue(stream, op, run_task, e, free);
  return rc ? ACLNN_ERR_RUNTIME_ERROR : ACLNN_SUCCESS;
}

#define FAIL(code, ...)       \
  do {                        \
    emu_set_err(__VA_ARGS__); \
    free(e);                  \
    return code;              \
  } while (0)
#define CHECK_T(idx, name, ptr)                                   \
  do {                                                            \
    int _r = emu_check_tensor(OPNAME, name, ptr);                 \
    if (_r) { free(e); return _r; }                               \
    e->t[idx] = *(ptr);                                           \
  } while (0)
#define CHECK_OPT(idx, name, ptr)  \
  do {                             \
    if (ptr) CHECK_T(idx, name, ptr); \
  } while (0)
#define PHASE2(NAME)                                                                                     \
  EMU_API aclnnStatus NAME(void *workspace, uint64_t workspaceSize, aclOpExecutor *executor, aclrtStream stream) { \
    return phase2(#NAME, workspace, workspaceSize, executor, stream);                                   \
  }
#define RUNERR(...)                     \
  do {                                  \
    snprintf(err, errlen, __VA_ARGS__); \
    return ACLNN_ERR_RUNTIME_ERROR;     \
  } while (0)
#define NEW(OPN, RUN)                           \
  exec_t *e = new_exec(OPN, RUN);               \
  if (!e) return ACLNN_ERR_INNER

static int same_shape(const aclTensor *a, const aclTensor *b) {
  if (a->nd != b->nd) return 0;
  for (int i = 0; i < a->nd; i++)
    if (a->dims[i] != b->dims[i]) return 0;
  return 1;
}
static int is_fp(int dt) { return dt == ACL_FLOAT || dt == ACL_FLOAT16 || dt == ACL_BF16; }
static int64_t norm_dim(int64_t d, int nd) { return d < 0 ? d + nd : d; }

/* ========================= Embedding ========================= */
#undef OPNAME
#define OPNAME "aclnnEmbedding"
static int run_embedding(exec_t *e, void *ws, char *err, size_t errlen) {
  (void)ws;
  aclTensor *w = &e->t[0], *idx = &e->t[1], *out = &e->t[2];
  int64_t V = w->dims[0], D = w->dims[1], n = emu_numel(idx);
  int64_t *ix = emu_load_i64(idx);
  float *of = malloc((size_t)(n * D + 1) * sizeof *of);
  int rc = 0;
  if (!ix || !of) {
    rc = ACLNN_ERR_INNER;
    snprintf(err, errlen, "out of host memory");
  }
  for (int64_t i = 0; i < n && !rc; i++) {
    if (ix[i] < 0 || ix[i] >= V) {
      snprintf(err, errlen, "index %lld out of range [0,%lld)", (long long)ix[i], (long long)V);
      rc = ACLNN_ERR_RUNTIME_ERROR;
      break;
    }
    for (int64_t k = 0; k < D; k++) of[i * D + k] = (float)emu_get(w, w->offset + ix[i] * w->strides[0] + k * w->strides[1]);
  }
  if (!rc) emu_store_f32(out, of);
  free(ix);
  free(of);
  return rc;
}
EMU_API aclnnStatus aclnnEmbeddingGetWorkspaceSize(const aclTensor *weight, const aclTensor *indices, const aclTensor *out,
                                                   uint64_t *workspaceSize, aclOpExecutor **executor) {
  NEW(OPNAME, run_embedding);
  CHECK_T(0, "weight", weight);
  CHECK_T(1, "indices", indices);
  CHECK_T(2, "out", out);
  if (weight->nd != 2) FAIL(ACLNN_ERR_PARAM_INVALID, OPNAME ": weight must be 2-D");
  if (indices->dtype != ACL_INT32 && indices->dtype != ACL_INT64) FAIL(ACLNN_ERR_PARAM_INVALID, OPNAME ": indices must be INT32 or INT64");
  if (out->dtype != weight->dtype) FAIL(ACLNN_ERR_PARAM_INVALID, OPNAME ": out dtype must equal weight dtype");
  if (emu_numel(out) != emu_numel(indices) * weight->dims[1] || out->dims[out->nd - 1] != weight->dims[1])
    FAIL(ACLNN_ERR_PARAM_INVALID, OPNAME ": out shape must be indices shape + (%lld)", (long long)weight->dims[1]);
  return finish_phase1(e, 0, workspaceSize, executor);
}
PHASE2(aclnnEmbedding)

/* ========================= IndexSelect ========================= */
#undef OPNAME
#define OPNAME "aclnnIndexSelect"
static int run_index_select(exec_t *e, void *ws, char *err, size_t errlen) {
  (void)ws;
  aclTensor *x = &e->t[0], *idx = &e->t[1], *out = &e->t[2];
  int dim = (int)e->i[0];
  int64_t outer = 1, inner = 1, D = x->dims[dim], n = emu_numel(idx);
  for (int i = 0; i < dim; i++) outer *= x->dims[i];
  for (int i = dim + 1; i < x->nd; i++) inner *= x->dims[i];
  int64_t *ix = emu_load_i64(idx);
  float *of = malloc((size_t)(outer * n * inner + 1) * sizeof *of);
  int rc = 0;
  if (!ix || !of) rc = ACLNN_ERR_INNER;
  for (int64_t j = 0; !rc && j < n; j++)
    if (ix[j] < 0 || ix[j] >= D) {
      snprintf(err, errlen, "index %lld out of range [0,%lld)", (long long)ix[j], (long long)D);
      rc = ACLNN_ERR_RUNTIME_ERROR;
    }
  if (!rc) { /* read only the selected slices */
    for (int64_t o = 0; o < outer; o++)
      for (int64_t j = 0; j < n; j++)
        for (int64_t i = 0; i < inner; i++) of[(o * n + j) * inner + i] = (float)emu_get(x, emu_elem_off(x, (o * D + ix[j]) * inner + i));
    emu_store_f32(out, of);
  }
  free(ix);
  free(of);
  return rc;
}
EMU_API aclnnStatus aclnnIndexSelectGetWorkspaceSize(const aclTensor *self, int64_t dim, const aclTensor *index, aclTensor *out,
                                                     uint64_t *workspaceSize, aclOpExecutor **executor) {
  NEW(OPNAME, run_index_select);
  CHECK_T(0, "self", self);
  CHECK_T(1, "index", index);
  CHECK_T(2, "out", out);
  dim = norm_dim(dim, self->nd);
  if (dim < 0 || dim >= self->nd) FAIL(ACLNN_ERR_PARAM_INVALID, OPNAME ": dim out of range");
  if (index->nd > 1 || (index->dtype != ACL_INT32 && index->dtype != ACL_INT64))
    FAIL(ACLNN_ERR_PARAM_INVALID, OPNAME ": index must be a 1-D INT32/INT64 tensor");
  if (out->dtype != self->dtype || out->nd != self->nd) FAIL(ACLNN_ERR_PARAM_INVALID, OPNAME ": out must match self's dtype and rank");
  for (int i = 0; i < self->nd; i++)
    if (out->dims[i] != (i == dim ? emu_numel(index) : self->dims[i])) FAIL(ACLNN_ERR_PARAM_INVALID, OPNAME ": out shape mismatch");
  e->i[0] = dim;
  return finish_phase1(e, 0, workspaceSize, executor);
}
PHASE2(aclnnIndexSelect)

/* ========================= RmsNorm ========================= */
#undef OPNAME
#define OPNAME "aclnnRmsNorm"
static int run_rmsnorm(exec_t *e, void *ws, char *err, size_t errlen) {
  (void)ws;
  aclTensor *x = &e->t[0], *g = &e->t[1], *y = &e->t[2], *rs = &e->t[3];
  int64_t D = emu_numel(g), rows = emu_numel(x) / D;
  float *xf = emu_load_f32(x), *gf = emu_load_f32(g), *yf = malloc((size_t)(rows * D + 1) * sizeof *yf),
        *rf = malloc((size_t)(rows + 1) * sizeof *rf);
  if (!xf || !gf || !yf || !rf) {
    free(xf), free(gf), free(yf), free(rf);
    RUNERR("out of host memory");
  }
  for (int64_t r = 0; r < rows; r++) {
    double ss = 0;
    for (int64_t i = 0; i < D; i++) ss += (double)xf[r * D + i] * xf[r * D + i];
    float rstd = (float)(1.0 / sqrt(ss / (double)D + e->f[0]));
    rf[r] = rstd;
    for (int64_t i = 0; i < D; i++) yf[r * D + i] = xf[r * D + i] * rstd * gf[i];
  }
  emu_store_f32(y, yf);
  if (rs->magic) emu_store_f32(rs, rf);
  free(xf), free(gf), free(yf), free(rf);
  return 0;
}
EMU_API aclnnStatus aclnnRmsNormGetWorkspaceSize(const aclTensor *x, const aclTensor *gamma, double epsilon, const aclTensor *yOut,
                                                 const aclTensor *rstdOut, uint64_t *workspaceSize, aclOpExecutor **executor) {
  NEW(OPNAME, run_rmsnorm);
  CHECK_T(0, "x", x);
  CHECK_T(1, "gamma", gamma);
  CHECK_T(2, "yOut", yOut);
  CHECK_OPT(3, "rstdOut", rstdOut);
  if (!is_fp(x->dtype) || !is_fp(gamma->dtype)) FAIL(ACLNN_ERR_PARAM_INVALID, OPNAME ": x and gamma must be floating point");
  if (!same_shape(x, yOut) || yOut->dtype != x->dtype) FAIL(ACLNN_ERR_PARAM_INVALID, OPNAME ": yOut must match x");
  if (gamma->nd > x->nd) FAIL(ACLNN_ERR_PARAM_INVALID, OPNAME ": gamma has more dims than x");
  for (int i = 0; i < gamma->nd; i++)
    if (gamma->dims[i] != x->dims[x->nd - gamma->nd + i]) FAIL(ACLNN_ERR_PARAM_INVALID, OPNAME ": gamma must match x's trailing dims");
  if (rstdOut && (rstdOut->dtype != ACL_FLOAT || emu_numel(rstdOut) * emu_numel(gamma) != emu_numel(x)))
    FAIL(ACLNN_ERR_PARAM_INVALID, OPNAME ": rstdOut must be FLOAT with x's shape and the normalized dims set to 1");
  e->f[0] = epsilon;
  return finish_phase1(e, 0, workspaceSize, executor);
}
PHASE2(aclnnRmsNorm)

/* ========================= Matmul / BatchMatMul ========================= */
/* out[b] = self[b] @ mat2[b]; self (…,m,k), mat2 (…,k,n) with batch broadcasting of a
 * 2-D operand. fp32 accumulation, one rounding to out's dtype. */
static int run_matmul(exec_t *e, void *ws, char *err, size_t errlen) {
  (void)ws;
  aclTensor *a = &e->t[0], *b = &e->t[1], *o = &e->t[2];
  int64_t m = a->dims[a->nd - 2], k = a->dims[a->nd - 1], n = b->dims[b->nd - 1];
  int64_t ba = emu_numel(a) / (m * k), bb = emu_numel(b) / (k * n), bo = ba > bb ? ba : bb;
  if (b->nd == 2 && b->strides[0] == 1 && (b->dtype == ACL_BF16 || b->dtype == ACL_FLOAT)) {
    /* mat2 is the transposed view of a row-major (n, k) weight: dot products over its
     * contiguous rows, without converting the whole weight first. */
    float *af = emu_load_f32(a), *of = malloc((size_t)(bo * m * n + 1) * sizeof *of), *wr = malloc((size_t)k * sizeof *wr);
    if (!af || !of || !wr) {
      free(af), free(of), free(wr);
      RUNERR("out of host memory");
    }
    for (int64_t j = 0; j < n; j++) {
      int64_t base = b->offset + j * b->strides[1];
      if (b->dtype == ACL_BF16)
        for (int64_t p = 0; p < k; p++) wr[p] = emu_bf16_to_f32(((const uint16_t *)b->data)[base + p]);
      else
        memcpy(wr, (const float *)b->data + base, (size_t)k * sizeof *wr);
      for (int64_t r = 0; r < bo * m; r++) {
        const float *ar = af + r * k;
        float acc = 0;
        for (int64_t p = 0; p < k; p++) acc += ar[p] * wr[p];
        of[r * n + j] = acc;
      }
    }
    emu_store_f32(o, of);
    free(af), free(of), free(wr);
    return 0;
  }
  float *af = emu_load_f32(a), *bf = emu_load_f32(b), *of = calloc((size_t)(bo * m * n + 1), sizeof *of);
  if (!af || !bf || !of) {
    free(af), free(bf), free(of);
    RUNERR("out of host memory");
  }
  for (int64_t z = 0; z < bo; z++) {
    const float *A = af + (ba == 1 ? 0 : z) * m * k, *B = bf + (bb == 1 ? 0 : z) * k * n;
    float *O = of + z * m * n;
    for (int64_t i = 0; i < m; i++)
      for (int64_t p = 0; p < k; p++) {
        float av = A[i * k + p];
        if (av == 0) continue;
        const float *br = B + p * n;
        float *orow = O + i * n;
        for (int64_t j = 0; j < n; j++) orow[j] += av * br[j];
      }
  }
  emu_store_f32(o, of);
  free(af), free(bf), free(of);
  return 0;
}
static aclnnStatus matmul_p1(const char *opn, const aclTensor *self, const aclTensor *mat2, const aclTensor *out, int batch,
                             uint64_t *workspaceSize, aclOpExecutor **executor) {
#undef OPNAME
#define OPNAME opn
  NEW(opn, run_matmul);
  CHECK_T(0, "self", self);
  CHECK_T(1, "mat2", mat2);
  CHECK_T(2, "out", out);
  if (!is_fp(self->dtype) || self->dtype != mat2->dtype) FAIL(ACLNN_ERR_PARAM_INVALID, "%s: self and mat2 must be the same float dtype", opn);
  if (batch && (self->nd != 3 || mat2->nd != 3 || self->dims[0] != mat2->dims[0]))
    FAIL(ACLNN_ERR_PARAM_INVALID, "%s: self and mat2 must be 3-D with equal batch", opn);
  if (!batch && (self->nd < 2 || self->nd > 3 || mat2->nd != 2 || (self->nd == 3 && out->nd != 3)))
    FAIL(ACLNN_ERR_PARAM_INVALID, "%s: the emulator supports (m,k)@(k,n) and (b,m,k)@(k,n)", opn);
  int64_t m = self->dims[self->nd - 2], k = self->dims[self->nd - 1];
  if (mat2->dims[mat2->nd - 2] != k) FAIL(ACLNN_ERR_PARAM_INVALID, "%s: inner dims differ (%lld vs %lld)", opn, (long long)k, (long long)mat2->dims[mat2->nd - 2]);
  int64_t n = mat2->dims[mat2->nd - 1];
  if (out->dims[out->nd - 2] != m || out->dims[out->nd - 1] != n || emu_numel(out) != emu_numel(self) / k * n)
    FAIL(ACLNN_ERR_PARAM_INVALID, "%s: out shape must be (…,%lld,%lld)", opn, (long long)m, (long long)n);
  if (!is_fp(out->dtype)) FAIL(ACLNN_ERR_PARAM_INVALID, "%s: out must be floating point", opn);
  return finish_phase1(e, 0, workspaceSize, executor);
}
EMU_API aclnnStatus aclnnMatmulGetWorkspaceSize(const aclTensor *self, const aclTensor *mat2, aclTensor *out, int8_t cubeMathType,
                                                uint64_t *workspaceSize, aclOpExecutor **executor) {
  (void)cubeMathType;
  return matmul_p1("aclnnMatmul", self, mat2, out, 0, workspaceSize, executor);
}
PHASE2(aclnnMatmul)
EMU_API aclnnStatus aclnnBatchMatMulGetWorkspaceSize(const aclTensor *self, const aclTensor *mat2, aclTensor *out, int8_t cubeMathType,
                                                     uint64_t *workspaceSize, aclOpExecutor **executor) {
  (void)cubeMathType;
  return matmul_p1("aclnnBatchMatMul", self, mat2, out, 1, workspaceSize, executor);
}
PHASE2(aclnnBatchMatMul)

/* ========================= WeightQuantBatchMatmulV2 ========================= */
/* Dequantized weight element (k index p, n index j) from an INT8 / INT4 (k,n) view or an
 * INT32 (k, n/8) view of 8 packed int4 (element 8c+q in bits 4q..4q+3 of int32 c). */
static float wq_elem(const aclTensor *w, int64_t p, int64_t j) {
  if (w->dtype == ACL_INT32) {
    int64_t c = j >> 3, q = j & 7;
    int32_t word = ((const int32_t *)w->data)[w->offset + p * w->strides[0] + c * w->strides[1]];
    int v = (int)(((uint32_t)word >> (4 * q)) & 15u);
    return (float)(v >= 8 ? v - 16 : v);
  }
  int64_t el = w->offset + p * w->strides[0] + j * w->strides[1];
  if (w->dtype == ACL_INT8) return ((const int8_t *)w->data)[el];
  uint8_t b = ((const uint8_t *)w->data)[el >> 1];
  int v = (el & 1) ? (b >> 4) : (b & 15);
  return (float)(v >= 8 ? v - 16 : v);
}
static int run_wqbmm(exec_t *e, void *ws, char *err, size_t errlen) {
  aclTensor *x = &e->t[0], *w = &e->t[1], *sc = &e->t[2], *off = &e->t[3], *bias = &e->t[4], *y = &e->t[5];
  int64_t m = x->dims[0], k = x->dims[1], n = y->dims[1], g = e->i[0];
  int64_t ng = g ? (k + g - 1) / g : 1;
  float *xf = emu_load_f32(x), *sf = emu_load_f32(sc), *of = off->magic ? emu_load_f32(off) : NULL;
  float *bf = bias->magic ? emu_load_f32(bias) : NULL;
  float *acc = ws; /* fp32 accumulators live in the workspace, m*n floats */
  float *wrow = malloc((size_t)n * sizeof *wrow);
  if (!xf || !sf || !wrow || (off->magic && !of) || (bias->magic && !bf)) {
    free(xf), free(sf), free(of), free(bf), free(wrow);
    RUNERR("out of host memory");
  }
  int per_tensor = emu_numel(sc) == 1;
  memset(acc, 0, (size_t)(m * n) * sizeof *acc);
  for (int64_t p = 0; p < k; p++) {
    int64_t gi = g ? p / g : 0;
    for (int64_t j = 0; j < n; j++) {
      int64_t si = per_tensor ? 0 : (ng > 1 || g ? gi * n + j : j);
      float wv = wq_elem(w, p, j);
      if (of) wv += of[si];
      /* the dequantized weight is formed in x's dtype, as the kernel does */
      wrow[j] = emu_round_to(x->dtype, wv * sf[si]);
    }
    for (int64_t i = 0; i < m; i++) {
      float xv = xf[i * k + p];
      if (xv == 0) continue;
      float *a = acc + i * n;
      for (int64_t j = 0; j < n; j++) a[j] += xv * wrow[j];
    }
  }
  if (bf)
    for (int64_t i = 0; i < m; i++)
      for (int64_t j = 0; j < n; j++) acc[i * n + j] += bf[j];
  emu_store_f32(y, acc);
  free(xf), free(sf), free(of), free(bf), free(wrow);
  return 0;
}
#undef OPNAME
#define OPNAME "aclnnWeightQuantBatchMatmulV2"
EMU_API aclnnStatus aclnnWeightQuantBatchMatmulV2GetWorkspaceSize(const aclTensor *x, const aclTensor *weight, const aclTensor *antiquantScale,
                                                                  const aclTensor *antiquantOffsetOptional, const aclTensor *quantScaleOptional,
                                                                  const aclTensor *quantOffsetOptional, const aclTensor *biasOptional,
                                                                  int antiquantGroupSize, const aclTensor *y, uint64_t *workspaceSize,
                                                                  aclOpExecutor **executor) {
  NEW(OPNAME, run_wqbmm);
  CHECK_T(0, "x", x);
  CHECK_T(1, "weight", weight);
  CHECK_T(2, "antiquantScale", antiquantScale);
  CHECK_OPT(3, "antiquantOffset", antiquantOffsetOptional);
  CHECK_OPT(4, "bias", biasOptional);
  CHECK_T(5, "y", y);
  if (quantScaleOptional || quantOffsetOptional) FAIL(ACLNN_ERR_PARAM_INVALID, OPNAME ": output quantization is not emulated");
  if (x->dtype != ACL_BF16 && x->dtype != ACL_FLOAT16) FAIL(ACLNN_ERR_PARAM_INVALID, OPNAME ": x must be FLOAT16 or BFLOAT16, got %s", emu_dtype_name(x->dtype));
  if (x->nd != 2 || weight->nd != 2 || y->nd != 2) FAIL(ACLNN_ERR_PARAM_INVALID, OPNAME ": x, weight and y must be 2-D");
  if (x->strides[1] != 1 || x->strides[0] != x->dims[1]) FAIL(ACLNN_ERR_PARAM_INVALID, OPNAME ": x must be contiguous (non-transposed)");
  int64_t m = x->dims[0], k = x->dims[1], n;
  switch (weight->dtype) {
  case ACL_INT8: n = weight->dims[1]; break;
  case ACL_INT4:
    n = weight->dims[1];
    if (n % 2) FAIL(ACLNN_ERR_PARAM_INVALID, OPNAME ": INT4 weight inner dim must be even, got %lld", (long long)n);
    break;
  case ACL_INT32: n = weight->dims[1] * 8; break;
  default: FAIL(ACLNN_ERR_PARAM_INVALID, OPNAME ": weight must be INT8, INT4 or INT32 (packed int4), got %s", emu_dtype_name(weight->dtype));
  }
  if (weight->dims[0] != k) FAIL(ACLNN_ERR_PARAM_INVALID, OPNAME ": weight is (%lld,…) but x has k=%lld", (long long)weight->dims[0], (long long)k);
  if (k < 1 || k > 65535 || n < 1 || n > 65535)
    FAIL(ACLNN_ERR_PARAM_INVALID, OPNAME ": k=%lld and n=%lld must each be in [1, 65535] on Atlas A2/A3", (long long)k, (long long)n);
  if (weight->dtype != ACL_INT8 && weight->strides[1] != 1) FAIL(ACLNN_ERR_PARAM_INVALID, OPNAME ": packed int4 weight must be contiguous along n");
  if (y->dims[0] != m || y->dims[1] != n || y->dtype != x->dtype) FAIL(ACLNN_ERR_PARAM_INVALID, OPNAME ": y must be (%lld,%lld) in x's dtype", (long long)m, (long long)n);
  if (antiquantScale->dtype != x->dtype) FAIL(ACLNN_ERR_PARAM_INVALID, OPNAME ": antiquantScale dtype must equal x dtype (%s), got %s", emu_dtype_name(x->dtype), emu_dtype_name(antiquantScale->dtype));
  int64_t g = antiquantGroupSize, ns = emu_numel(antiquantScale);
  if (g != 0) {
    if (g % 32 || g < 32 || g > k - 1) FAIL(ACLNN_ERR_PARAM_INVALID, OPNAME ": antiquantGroupSize %lld must be 0 or a multiple of 32 in [32, k-1=%lld]", (long long)g, (long long)(k - 1));
    if (antiquantScale->nd != 2 || antiquantScale->dims[0] != (k + g - 1) / g || antiquantScale->dims[1] != n)
      FAIL(ACLNN_ERR_PARAM_INVALID, OPNAME ": per-group antiquantScale must be (ceil(k/g)=%lld, n=%lld)", (long long)((k + g - 1) / g), (long long)n);
  } else if (!(ns == 1 || (ns == n && antiquantScale->dims[antiquantScale->nd - 1] == n && antiquantScale->nd <= 2)))
    FAIL(ACLNN_ERR_PARAM_INVALID, OPNAME ": antiquantScale must be (1,), (n,) or (1,n) with group size 0");
  if (antiquantOffsetOptional && (!same_shape(antiquantOffsetOptional, antiquantScale) || antiquantOffsetOptional->dtype != x->dtype))
    FAIL(ACLNN_ERR_PARAM_INVALID, OPNAME ": antiquantOffset must match antiquantScale");
  if (biasOptional && (emu_numel(biasOptional) != n || biasOptional->dtype != (x->dtype == ACL_BF16 ? ACL_FLOAT : ACL_FLOAT16)))
    FAIL(ACLNN_ERR_PARAM_INVALID, OPNAME ": bias must be (n,) FLOAT for BFLOAT16 x (FLOAT16 for FLOAT16 x)");
  e->i[0] = g;
  return finish_phase1(e, (uint64_t)(m * n) * sizeof(float), workspaceSize, executor);
}
PHASE2(aclnnWeightQuantBatchMatmulV2)

/* ========================= elementwise with broadcasting ========================= */
/* offset in a broadcast operand b for the linear index li of the output shape o */
static int64_t bcast_index(const aclTensor *o, const aclTensor *b, int64_t li) {
  int64_t idx = 0, mul = 1;
  for (int d = o->nd - 1; d >= 0; d--) {
    int64_t q = li % o->dims[d];
    li /= o->dims[d];
    int bd = d - (o->nd - b->nd);
    if (bd < 0) continue;
    if (b->dims[bd] != 1) idx += q * mul;
    mul *= b->dims[bd];
  }
  return idx;
}
static int bcast_ok(const aclTensor *o, const aclTensor *b) {
  if (b->nd > o->nd) return 0;
  for (int i = 0; i < b->nd; i++) {
    int64_t bd = b->dims[i], od = o->dims[o->nd - b->nd + i];
    if (bd != 1 && bd != od) return 0;
  }
  return 1;
}

enum { EW_ADD, EW_MUL, EW_MULS, EW_CAST, EW_SIGMOID, EW_SILU };
static int run_ew(exec_t *e, void *ws, char *err, size_t errlen) {
  (void)ws;
  aclTensor *a = &e->t[0], *b = &e->t[1], *o = &e->t[2];
  int64_t n = emu_numel(o);
  float *af = emu_load_f32(a), *bf = b->magic ? emu_load_f32(b) : NULL, *of = malloc((size_t)(n + 1) * sizeof *of);
  if (!af || !of || (b->magic && !bf)) {
    free(af), free(bf), free(of);
    RUNERR("out of host memory");
  }
  float s = (float)e->f[0];
  for (int64_t i = 0; i < n; i++) {
    float x = af[bcast_index(o, a, i)];
    switch (e->i[0]) {
    case EW_ADD: of[i] = x + s * bf[bcast_index(o, b, i)]; break;
    case EW_MUL: of[i] = x * bf[bcast_index(o, b, i)]; break;
    case EW_MULS: of[i] = x * s; break;
    case EW_CAST: of[i] = x; break;
    case EW_SIGMOID: of[i] = 1.0f / (1.0f + expf(-x)); break;
    case EW_SILU: of[i] = x / (1.0f + expf(-x)); break;
    }
  }
  emu_store_f32(o, of);
  free(af), free(bf), free(of);
  return 0;
}
static aclnnStatus ew_p1(const char *opn, int kind, const aclTensor *a, const aclTensor *b, double s, const aclTensor *o,
                         uint64_t *workspaceSize, aclOpExecutor **executor) {
  NEW(opn, run_ew);
#undef OPNAME
#define OPNAME opn
  CHECK_T(0, "self", a);
  if (b) CHECK_T(1, "other", b);
  CHECK_T(2, "out", o);
  if (!bcast_ok(o, a) || (b && !bcast_ok(o, b))) FAIL(ACLNN_ERR_PARAM_INVALID, "%s: operands do not broadcast to out's shape", opn);
  if (kind != EW_CAST && (!is_fp(a->dtype) || !is_fp(o->dtype) || (b && !is_fp(b->dtype))))
    FAIL(ACLNN_ERR_PARAM_INVALID, "%s: the emulator implements floating point operands only", opn);
  e->i[0] = kind;
  e->f[0] = s;
  return finish_phase1(e, 0, workspaceSize, executor);
}
EMU_API aclnnStatus aclnnAddGetWorkspaceSize(const aclTensor *self, const aclTensor *other, const aclScalar *alpha, aclTensor *out,
                                             uint64_t *workspaceSize, aclOpExecutor **executor) {
  if (!other) {
    emu_set_err("aclnnAdd: other is null");
    return ACLNN_ERR_PARAM_NULLPTR;
  }
  return ew_p1("aclnnAdd", EW_ADD, self, other, alpha ? alpha->v : 1.0, out, workspaceSize, executor);
}
PHASE2(aclnnAdd)
EMU_API aclnnStatus aclnnMulGetWorkspaceSize(const aclTensor *self, const aclTensor *other, aclTensor *out, uint64_t *workspaceSize,
                                             aclOpExecutor **executor) {
  if (!other) {
    emu_set_err("aclnnMul: other is null");
    return ACLNN_ERR_PARAM_NULLPTR;
  }
  return ew_p1("aclnnMul", EW_MUL, self, other, 1, out, workspaceSize, executor);
}
PHASE2(aclnnMul)
EMU_API aclnnStatus aclnnMulsGetWorkspaceSize(const aclTensor *self, const aclScalar *other, aclTensor *out, uint64_t *workspaceSize,
                                              aclOpExecutor **executor) {
  if (!other) {
    emu_set_err("aclnnMuls: scalar is null");
    return ACLNN_ERR_PARAM_NULLPTR;
  }
  return ew_p1("aclnnMuls", EW_MULS, self, NULL, other->v, out, workspaceSize, executor);
}
PHASE2(aclnnMuls)
EMU_API aclnnStatus aclnnCastGetWorkspaceSize(const aclTensor *self, int dtype, aclTensor *out, uint64_t *workspaceSize,
                                              aclOpExecutor **executor) {
  if (out && out->dtype != dtype) {
    emu_set_err("aclnnCast: out dtype %s differs from the requested %s", emu_dtype_name(out->dtype), emu_dtype_name(dtype));
    return ACLNN_ERR_PARAM_INVALID;
  }
  return ew_p1("aclnnCast", EW_CAST, self, NULL, 0, out, workspaceSize, executor);
}
PHASE2(aclnnCast)
EMU_API aclnnStatus aclnnSigmoidGetWorkspaceSize(const aclTensor *self, aclTensor *out, uint64_t *workspaceSize, aclOpExecutor **executor) {
  return ew_p1("aclnnSigmoid", EW_SIGMOID, self, NULL, 0, out, workspaceSize, executor);
}
PHASE2(aclnnSigmoid)
EMU_API aclnnStatus aclnnSiluGetWorkspaceSize(const aclTensor *self, aclTensor *out, uint64_t *workspaceSize, aclOpExecutor **executor) {
  return ew_p1("aclnnSilu", EW_SILU, self, NULL, 0, out, workspaceSize, executor);
}
PHASE2(aclnnSilu)

/* ========================= SwiGlu ========================= */
#undef OPNAME
#define OPNAME "aclnnSwiGlu"
static int run_swiglu(exec_t *e, void *ws, char *err, size_t errlen) {
  (void)ws;
  aclTensor *x = &e->t[0], *o = &e->t[1];
  int dim = (int)e->i[0];
  int64_t outer = 1, inner = 1, D = x->dims[dim], h = D / 2;
  for (int i = 0; i < dim; i++) outer *= x->dims[i];
  for (int i = dim + 1; i < x->nd; i++) inner *= x->dims[i];
  float *xf = emu_load_f32(x), *of = malloc((size_t)(outer * h * inner + 1) * sizeof *of);
  if (!xf || !of) {
    free(xf), free(of);
    RUNERR("out of host memory");
  }
  for (int64_t a = 0; a < outer; a++)
    for (int64_t j = 0; j < h; j++)
      for (int64_t b = 0; b < inner; b++) {
        float A = xf[(a * D + j) * inner + b], B = xf[(a * D + h + j) * inner + b];
        of[(a * h + j) * inner + b] = A / (1.0f + expf(-A)) * B;
      }
  emu_store_f32(o, of);
  free(xf), free(of);
  return 0;
}
EMU_API aclnnStatus aclnnSwiGluGetWorkspaceSize(const aclTensor *x, int64_t dim, aclTensor *out, uint64_t *workspaceSize,
                                                aclOpExecutor **executor) {
  NEW(OPNAME, run_swiglu);
  CHECK_T(0, "x", x);
  CHECK_T(1, "out", out);
  dim = norm_dim(dim, x->nd);
  if (dim < 0 || dim >= x->nd || x->dims[dim] % 2) FAIL(ACLNN_ERR_PARAM_INVALID, OPNAME ": dim must exist and have even size");
  if (!is_fp(x->dtype) || out->dtype != x->dtype || out->nd != x->nd) FAIL(ACLNN_ERR_PARAM_INVALID, OPNAME ": out must match x's dtype and rank");
  for (int i = 0; i < x->nd; i++)
    if (out->dims[i] != (i == dim ? x->dims[i] / 2 : x->dims[i])) FAIL(ACLNN_ERR_PARAM_INVALID, OPNAME ": out must halve dim %lld", (long long)dim);
  e->i[0] = dim;
  return finish_phase1(e, 0, workspaceSize, executor);
}
PHASE2(aclnnSwiGlu)

/* ========================= Softmax ========================= */
#undef OPNAME
#define OPNAME "aclnnSoftmax"
static int run_softmax(exec_t *e, void *ws, char *err, size_t errlen) {
  (void)ws;
  aclTensor *x = &e->t[0], *o = &e->t[1];
  int64_t D = x->dims[x->nd - 1], rows = emu_numel(x) / (D ? D : 1);
  float *xf = emu_load_f32(x);
  if (!xf) RUNERR("out of host memory");
  for (int64_t r = 0; r < rows; r++) {
    float *v = xf + r * D, mx = -INFINITY;
    for (int64_t i = 0; i < D; i++) mx = v[i] > mx ? v[i] : mx;
    double s = 0;
    for (int64_t i = 0; i < D; i++) s += (v[i] = (mx == -INFINITY) ? 0 : expf(v[i] - mx));
    for (int64_t i = 0; i < D; i++) v[i] = s > 0 ? (float)(v[i] / s) : 0;
  }
  emu_store_f32(o, xf);
  free(xf);
  return 0;
}
EMU_API aclnnStatus aclnnSoftmaxGetWorkspaceSize(const aclTensor *self, int64_t dim, aclTensor *out, uint64_t *workspaceSize,
                                                 aclOpExecutor **executor) {
  NEW(OPNAME, run_softmax);
  CHECK_T(0, "self", self);
  CHECK_T(1, "out", out);
  if (norm_dim(dim, self->nd) != self->nd - 1) FAIL(ACLNN_ERR_PARAM_INVALID, OPNAME ": the emulator implements the last dim only");
  if (!same_shape(self, out) || !is_fp(self->dtype) || !is_fp(out->dtype)) FAIL(ACLNN_ERR_PARAM_INVALID, OPNAME ": out must match self");
  return finish_phase1(e, 0, workspaceSize, executor);
}
PHASE2(aclnnSoftmax)

/* ========================= RotaryPositionEmbedding ========================= */
#undef OPNAME
#define OPNAME "aclnnRotaryPositionEmbedding"
static int run_rope(exec_t *e, void *ws, char *err, size_t errlen) {
  (void)ws;
  aclTensor *x = &e->t[0], *c = &e->t[1], *s = &e->t[2], *o = &e->t[3];
  int64_t n = emu_numel(x), D = x->dims[x->nd - 1];
  float *xf = emu_load_f32(x), *cf = emu_load_f32(c), *sf = emu_load_f32(s), *of = malloc((size_t)(n + 1) * sizeof *of);
  if (!xf || !cf || !sf || !of) {
    free(xf), free(cf), free(sf), free(of);
    RUNERR("out of host memory");
  }
  for (int64_t r = 0; r < n / D; r++) {
    const float *v = xf + r * D;
    float *y = of + r * D;
    for (int64_t i = 0; i < D; i++) {
      int64_t li = r * D + i;
      float cv = cf[bcast_index(x, c, li)], sv = sf[bcast_index(x, s, li)];
      float rot;
      if (e->i[0] == 1) rot = (i & 1) ? v[i - 1] : -v[i + 1]; /* interleave: (x0,x1) -> (-x1, x0) */
      else rot = i < D / 2 ? -v[i + D / 2] : v[i - D / 2];   /* half: rotate_half */
      y[i] = v[i] * cv + rot * sv;
    }
  }
  emu_store_f32(o, of);
  free(xf), free(cf), free(sf), free(of);
  return 0;
}
EMU_API aclnnStatus aclnnRotaryPositionEmbeddingGetWorkspaceSize(const aclTensor *x, const aclTensor *cos, const aclTensor *sin, int64_t mode,
                                                                 aclTensor *out, uint64_t *workspaceSize, aclOpExecutor **executor) {
  NEW(OPNAME, run_rope);
  CHECK_T(0, "x", x);
  CHECK_T(1, "cos", cos);
  CHECK_T(2, "sin", sin);
  CHECK_T(3, "out", out);
  if (mode != 0 && mode != 1) FAIL(ACLNN_ERR_PARAM_INVALID, OPNAME ": the emulator implements mode 0 (half) and 1 (interleave), got %lld", (long long)mode);
  if (x->nd != 3 && x->nd != 4) FAIL(ACLNN_ERR_PARAM_INVALID, OPNAME ": x must be 3-D or 4-D");
  if (!is_fp(x->dtype) || cos->dtype != x->dtype || sin->dtype != x->dtype) FAIL(ACLNN_ERR_PARAM_INVALID, OPNAME ": x, cos and sin must share a float dtype");
  if (x->dims[x->nd - 1] % 2) FAIL(ACLNN_ERR_PARAM_INVALID, OPNAME ": last dim must be even");
  if (cos->nd != x->nd || !bcast_ok(x, cos) || !same_shape(cos, sin) || cos->dims[cos->nd - 1] != x->dims[x->nd - 1])
    FAIL(ACLNN_ERR_PARAM_INVALID, OPNAME ": cos/sin must have x's rank, full last dim and broadcast to x");
  if (!same_shape(x, out) || out->dtype != x->dtype) FAIL(ACLNN_ERR_PARAM_INVALID, OPNAME ": out must match x");
  e->i[0] = mode;
  return finish_phase1(e, 0, workspaceSize, executor);
}
PHASE2(aclnnRotaryPositionEmbedding)

/* ========================= ArgMax / Topk ========================= */
#undef OPNAME
#define OPNAME "aclnnArgMax"
static int run_argmax(exec_t *e, void *ws, char *err, size_t errlen) {
  (void)ws;
  aclTensor *x = &e->t[0], *o = &e->t[1];
  int64_t D = x->dims[x->nd - 1], rows = emu_numel(x) / D;
  float *xf = emu_load_f32(x);
  int64_t *r = malloc((size_t)(rows + 1) * sizeof *r);
  if (!xf || !r) {
    free(xf), free(r);
    RUNERR("out of host memory");
  }
  for (int64_t i = 0; i < rows; i++) {
    int64_t best = 0;
    for (int64_t j = 1; j < D; j++)
      if (xf[i * D + j] > xf[i * D + best]) best = j;
    r[i] = best;
  }
  emu_store_i64(o, r);
  free(xf), free(r);
  return 0;
}
EMU_API aclnnStatus aclnnArgMaxGetWorkspaceSize(const aclTensor *self, int64_t dim, bool keepdim, aclTensor *out, uint64_t *workspaceSize,
                                                aclOpExecutor **executor) {
  NEW(OPNAME, run_argmax);
  CHECK_T(0, "self", self);
  CHECK_T(1, "out", out);
  if (norm_dim(dim, self->nd) != self->nd - 1) FAIL(ACLNN_ERR_PARAM_INVALID, OPNAME ": the emulator implements the last dim only");
  if (out->dtype != ACL_INT64 && out->dtype != ACL_INT32) FAIL(ACLNN_ERR_PARAM_INVALID, OPNAME ": out must be INT64 or INT32");
  if (emu_numel(out) * self->dims[self->nd - 1] != emu_numel(self) || (keepdim && out->nd != self->nd))
    FAIL(ACLNN_ERR_PARAM_INVALID, OPNAME ": out shape mismatch");
  return finish_phase1(e, 0, workspaceSize, executor);
}
PHASE2(aclnnArgMax)

#undef OPNAME
#define OPNAME "aclnnTopk"
static int run_topk(exec_t *e, void *ws, char *err, size_t errlen) {
  (void)ws;
  aclTensor *x = &e->t[0], *vo = &e->t[1], *io = &e->t[2];
  int64_t D = x->dims[x->nd - 1], rows = emu_numel(x) / D, k = e->i[0];
  int largest = (int)e->i[1];
  float *xf = emu_load_f32(x), *vf = malloc((size_t)(rows * k + 1) * sizeof *vf);
  int64_t *ix = malloc((size_t)(rows * k + 1) * sizeof *ix);
  char *used = malloc((size_t)D + 1);
  if (!xf || !vf || !ix || !used) {
    free(xf), free(vf), free(ix), free(used);
    RUNERR("out of host memory");
  }
  for (int64_t r = 0; r < rows; r++) {
    memset(used, 0, (size_t)D);
    const float *v = xf + r * D;
    for (int64_t q = 0; q < k; q++) { /* selection; ties -> lower index first */
      int64_t best = -1;
      for (int64_t j = 0; j < D; j++) {
        if (used[j]) continue;
        if (best < 0 || (largest ? v[j] > v[best] : v[j] < v[best])) best = j;
      }
      if (best < 0) break;
      used[best] = 1;
      vf[r * k + q] = v[best];
      ix[r * k + q] = best;
    }
  }
  emu_store_f32(vo, vf);
  emu_store_i64(io, ix);
  free(xf), free(vf), free(ix), free(used);
  return 0;
}
EMU_API aclnnStatus aclnnTopkGetWorkspaceSize(const aclTensor *self, int64_t k, int64_t dim, bool largest, bool sorted, aclTensor *valuesOut,
                                              aclTensor *indicesOut, uint64_t *workspaceSize, aclOpExecutor **executor) {
  NEW(OPNAME, run_topk);
  CHECK_T(0, "self", self);
  CHECK_T(1, "valuesOut", valuesOut);
  CHECK_T(2, "indicesOut", indicesOut);
  (void)sorted; /* the emulator always returns sorted results */
  if (norm_dim(dim, self->nd) != self->nd - 1) FAIL(ACLNN_ERR_PARAM_INVALID, OPNAME ": the emulator implements the last dim only");
  int64_t D = self->dims[self->nd - 1];
  if (k < 0 || k > D) FAIL(ACLNN_ERR_PARAM_INVALID, OPNAME ": k=%lld out of range [0,%lld]", (long long)k, (long long)D);
  if (indicesOut->dtype != ACL_INT64 && indicesOut->dtype != ACL_INT32) FAIL(ACLNN_ERR_PARAM_INVALID, OPNAME ": indicesOut must be INT64");
  if (valuesOut->dtype != self->dtype || emu_numel(valuesOut) != emu_numel(self) / D * k || emu_numel(indicesOut) != emu_numel(valuesOut))
    FAIL(ACLNN_ERR_PARAM_INVALID, OPNAME ": outputs must be self's shape with the last dim = k");
  e->i[0] = k;
  e->i[1] = largest;
  return finish_phase1(e, 0, workspaceSize, executor);
}
PHASE2(aclnnTopk)

/* ========================= MoeGatingTopK ========================= */
/* DeepSeek-V3 routing as the kernel computes it (ops-transformer
 * moe_gating_top_k_e_k_fullload.h SelectTopKExpertScore): s = sigmoid(x); selection on
 * s + bias; group score = sum of the group's top-2 (mode 1) or max (mode 0); keep kGroup
 * groups; top-k; y = s[idx] / (sum + eps) * routedScalingFactor. normType 0 (softmax) is
 * not emulated: its renormalisation rule was not confirmed from the kernel source. */
#undef OPNAME
#define OPNAME "aclnnMoeGatingTopK"
static int run_gating(exec_t *e, void *ws, char *err, size_t errlen) {
  (void)ws;
  aclTensor *x = &e->t[0], *bias = &e->t[1], *y = &e->t[2], *ido = &e->t[3], *oo = &e->t[4];
  int64_t N = x->dims[0], E = x->dims[1], k = e->i[0], kg = e->i[1], G = e->i[2], mode = e->i[3];
  int64_t per = E / G;
  float *xf = emu_load_f32(x), *bf = bias->magic ? emu_load_f32(bias) : NULL;
  float *s = malloc((size_t)(N * E) * sizeof *s), *sb = malloc((size_t)E * sizeof *sb), *gs = malloc((size_t)G * sizeof *gs);
  float *yf = malloc((size_t)(N * k) * sizeof *yf);
  int64_t *idx = malloc((size_t)(N * k) * sizeof *idx);
  char *gkeep = malloc((size_t)G);
  int rc = 0;
  if (!xf || !s || !sb || !gs || !yf || !idx || !gkeep || (bias->magic && !bf)) {
    snprintf(err, errlen, "out of host memory");
    rc = ACLNN_ERR_INNER;
    goto out;
  }
  for (int64_t t = 0; t < N; t++) {
    float *st = s + t * E;
    for (int64_t j = 0; j < E; j++) {
      st[j] = 1.0f / (1.0f + expf(-xf[t * E + j]));
      sb[j] = st[j] + (bf ? bf[j] : 0.0f);
    }
    for (int64_t g = 0; g < G; g++) {
      float m1 = -INFINITY, m2 = -INFINITY;
      for (int64_t j = g * per; j < (g + 1) * per; j++) {
        if (sb[j] > m1) m2 = m1, m1 = sb[j];
        else if (sb[j] > m2) m2 = sb[j];
      }
      gs[g] = (mode == 1 && per > 1) ? m1 + m2 : m1;
      gkeep[g] = 0;
    }
    for (int64_t q = 0; q < kg; q++) {
      int64_t best = -1;
      for (int64_t g = 0; g < G; g++)
        if (!gkeep[g] && (best < 0 || gs[g] > gs[best])) best = g;
      if (best >= 0) gkeep[best] = 1;
    }
    for (int64_t j = 0; j < E; j++)
      if (!gkeep[j / per]) sb[j] = -INFINITY;
    double sum = 0;
    for (int64_t q = 0; q < k; q++) {
      int64_t best = -1;
      for (int64_t j = 0; j < E; j++)
        if (sb[j] != -INFINITY && (best < 0 || sb[j] > sb[best])) best = j;
      if (best < 0) {
        snprintf(err, errlen, "fewer than k selectable experts");
        rc = ACLNN_ERR_RUNTIME_ERROR;
        goto out;
      }
      idx[t * k + q] = best;
      sb[best] = -INFINITY;
      sum += st[best];
    }
    for (int64_t q = 0; q < k; q++) yf[t * k + q] = (float)(st[idx[t * k + q]] / (sum + e->f[1]) * e->f[0]);
  }
  emu_store_f32(y, yf);
  emu_store_i64(ido, idx);
  if (oo->magic) emu_store_f32(oo, s);
out:
  free(xf), free(bf), free(s), free(sb), free(gs), free(yf), free(idx), free(gkeep);
  return rc;
}
EMU_API aclnnStatus aclnnMoeGatingTopKGetWorkspaceSize(const aclTensor *x, const aclTensor *biasOptional, int64_t k, int64_t kGroup,
                                                       int64_t groupCount, int64_t groupSelectMode, int64_t renorm, int64_t normType,
                                                       bool outFlag, double routedScalingFactor, double eps, aclTensor *yOut,
                                                       aclTensor *expertIdxOut, aclTensor *outOut, uint64_t *workspaceSize,
                                                       aclOpExecutor **executor) {
  NEW(OPNAME, run_gating);
  CHECK_T(0, "x", x);
  CHECK_OPT(1, "bias", biasOptional);
  CHECK_T(2, "yOut", yOut);
  CHECK_T(3, "expertIdxOut", expertIdxOut);
  if (outFlag) CHECK_T(4, "outOut", outOut);
  if (!is_fp(x->dtype) || x->nd != 2) FAIL(ACLNN_ERR_PARAM_INVALID, OPNAME ": x must be a 2-D float tensor (tokens, experts)");
  int64_t N = x->dims[0], E = x->dims[1];
  if (E > 2048) FAIL(ACLNN_ERR_PARAM_INVALID, OPNAME ": expert count %lld exceeds 2048", (long long)E);
  if (groupCount < 1 || E % groupCount) FAIL(ACLNN_ERR_PARAM_INVALID, OPNAME ": expert count %lld not divisible by groupCount %lld", (long long)E, (long long)groupCount);
  if (kGroup < 1 || kGroup > groupCount) FAIL(ACLNN_ERR_PARAM_INVALID, OPNAME ": kGroup %lld out of [1, groupCount]", (long long)kGroup);
  if (k < 1 || k > E / groupCount * kGroup) FAIL(ACLNN_ERR_PARAM_INVALID, OPNAME ": k %lld must be in [1, E/groupCount*kGroup]", (long long)k);
  if (groupSelectMode != 0 && groupSelectMode != 1) FAIL(ACLNN_ERR_PARAM_INVALID, OPNAME ": groupSelectMode must be 0 or 1");
  if (renorm != 0) FAIL(ACLNN_ERR_PARAM_INVALID, OPNAME ": renorm must be 0");
  if (normType != 1) FAIL(ACLNN_ERR_PARAM_INVALID, OPNAME ": normType %lld not emulated (only 1 = sigmoid)", (long long)normType);
  if (biasOptional && (emu_numel(biasOptional) != E)) FAIL(ACLNN_ERR_PARAM_INVALID, OPNAME ": bias must have E elements");
  if (yOut->dtype != x->dtype || emu_numel(yOut) != N * k || expertIdxOut->dtype != ACL_INT32 || emu_numel(expertIdxOut) != N * k)
    FAIL(ACLNN_ERR_PARAM_INVALID, OPNAME ": yOut must be (N,k) in x's dtype and expertIdxOut (N,k) INT32");
  if (outFlag && (outOut->dtype != ACL_FLOAT || emu_numel(outOut) != N * E)) FAIL(ACLNN_ERR_PARAM_INVALID, OPNAME ": outOut must be (N,E) FLOAT");
  e->i[0] = k, e->i[1] = kGroup, e->i[2] = groupCount, e->i[3] = groupSelectMode;
  e->f[0] = routedScalingFactor, e->f[1] = eps;
  return finish_phase1(e, 0, workspaceSize, executor);
}
PHASE2(aclnnMoeGatingTopK)

/* ========================= MoeInitRoutingV3 ========================= */
/* Dropless dispatch: the (N·k) flattened (token, slot) pairs j = t·k + q are sorted by
 * expert (stable in j) and those with experts in activeExpertRange [start, end) kept.
 * expandedX[r] = x[L[r] / k]; rowIdxType 0 (gather): expandedRowIdx[r] = L[r] (-1 past the
 * kept rows); rowIdxType 1 (scatter): expandedRowIdx[j] = r, or -1 when j was dropped.
 * expertTokensCountOrCumsum has end-start entries: type 0 cumsum, 1 count. */
#undef OPNAME
#define OPNAME "aclnnMoeInitRoutingV3"
static int run_init_routing(exec_t *e, void *ws, char *err, size_t errlen) {
  (void)ws;
  aclTensor *x = &e->t[0], *ei = &e->t[1], *xo = &e->t[2], *ro = &e->t[3], *co = &e->t[4];
  int64_t N = x->dims[0], H = x->dims[1], k = ei->dims[1], nk = N * k, start = e->i[0], end = e->i[1];
  int64_t *ex = emu_load_i64(ei), *L = malloc((size_t)(nk + 1) * sizeof *L), *row = malloc((size_t)(nk + 1) * sizeof *row);
  int64_t *cnt = calloc((size_t)(end - start + 1), sizeof *cnt);
  float *xf = emu_load_f32(x), *of = emu_load_f32(xo);
  int rc = 0;
  if (!ex || !L || !row || !cnt || !xf || !of) {
    snprintf(err, errlen, "out of host memory");
    rc = ACLNN_ERR_INNER;
    goto out;
  }
  int64_t M = 0;
  for (int64_t j = 0; j < nk; j++)
    if (ex[j] < 0 || ex[j] >= e->i[2]) {
      snprintf(err, errlen, "expert id %lld out of [0,%lld)", (long long)ex[j], (long long)e->i[2]);
      rc = ACLNN_ERR_RUNTIME_ERROR;
      goto out;
    }
  for (int64_t ex_id = start; ex_id < end; ex_id++)
    for (int64_t j = 0; j < nk; j++)
      if (ex[j] == ex_id) L[M++] = j, cnt[ex_id - start]++;
  for (int64_t r = 0; r < M; r++) memcpy(of + r * H, xf + (L[r] / k) * H, (size_t)H * sizeof *of);
  emu_store_f32(xo, of);
  for (int64_t j = 0; j < nk; j++) row[j] = -1;
  if (e->i[3] == 0)
    for (int64_t r = 0; r < M; r++) row[r] = L[r];
  else
    for (int64_t r = 0; r < M; r++) row[L[r]] = r;
  emu_store_i64(ro, row);
  if (e->i[4] == 0)
    for (int64_t q = 1; q < end - start; q++) cnt[q] += cnt[q - 1];
  if (co->magic) emu_store_i64(co, cnt);
out:
  free(ex), free(L), free(row), free(cnt), free(xf), free(of);
  return rc;
}
EMU_API aclnnStatus aclnnMoeInitRoutingV3GetWorkspaceSize(const aclTensor *x, const aclTensor *expertIdx, const aclTensor *scaleOptional,
                                                          const aclTensor *offsetOptional, int64_t activeNum, int64_t expertCapacity,
                                                          int64_t expertNum, int64_t dropPadMode, int64_t expertTokensNumType,
                                                          bool expertTokensNumFlag, int64_t quantMode,
                                                          const aclIntArray *activeExpertRangeOptional, int64_t rowIdxType,
                                                          aclTensor *expandedXOut, aclTensor *expandedRowIdxOut,
                                                          aclTensor *expertTokensCountOrCumsumOut, aclTensor *expandedScaleOut,
                                                          uint64_t *workspaceSize, aclOpExecutor **executor) {
  NEW(OPNAME, run_init_routing);
  (void)activeNum, (void)expertCapacity, (void)expandedScaleOut;
  CHECK_T(0, "x", x);
  CHECK_T(1, "expertIdx", expertIdx);
  CHECK_T(2, "expandedXOut", expandedXOut);
  CHECK_T(3, "expandedRowIdxOut", expandedRowIdxOut);
  if (expertTokensNumFlag) CHECK_T(4, "expertTokensCountOrCumsumOut", expertTokensCountOrCumsumOut);
  if (scaleOptional || offsetOptional || quantMode != -1) FAIL(ACLNN_ERR_PARAM_INVALID, OPNAME ": quantization is not emulated (quantMode must be -1)");
  if (dropPadMode != 0) FAIL(ACLNN_ERR_PARAM_INVALID, OPNAME ": only dropless (dropPadMode 0) is emulated");
  if (expertTokensNumType != 0 && expertTokensNumType != 1) FAIL(ACLNN_ERR_PARAM_INVALID, OPNAME ": expertTokensNumType must be 0 (cumsum) or 1 (count)");
  if (rowIdxType != 0 && rowIdxType != 1) FAIL(ACLNN_ERR_PARAM_INVALID, OPNAME ": rowIdxType must be 0 or 1");
  if (x->nd != 2 || expertIdx->nd != 2 || expertIdx->dims[0] != x->dims[0] || expertIdx->dtype != ACL_INT32)
    FAIL(ACLNN_ERR_PARAM_INVALID, OPNAME ": x must be (N,H) and expertIdx (N,k) INT32");
  int64_t start = 0, end = expertNum;
  if (activeExpertRangeOptional) {
    if (activeExpertRangeOptional->n != 2) FAIL(ACLNN_ERR_PARAM_INVALID, OPNAME ": activeExpertRange must have 2 values");
    start = activeExpertRangeOptional->v[0], end = activeExpertRangeOptional->v[1];
  }
  if (start < 0 || end > expertNum || start >= end) FAIL(ACLNN_ERR_PARAM_INVALID, OPNAME ": activeExpertRange [%lld,%lld) invalid for %lld experts", (long long)start, (long long)end, (long long)expertNum);
  int64_t nk = x->dims[0] * expertIdx->dims[1];
  if (expandedXOut->nd != 2 || expandedXOut->dims[0] != nk || expandedXOut->dims[1] != x->dims[1] || expandedXOut->dtype != x->dtype)
    FAIL(ACLNN_ERR_PARAM_INVALID, OPNAME ": expandedXOut must be (N*k=%lld, H) in x's dtype", (long long)nk);
  if (emu_numel(expandedRowIdxOut) != nk || expandedRowIdxOut->dtype != ACL_INT32) FAIL(ACLNN_ERR_PARAM_INVALID, OPNAME ": expandedRowIdxOut must be (N*k,) INT32");
  if (expertTokensNumFlag && (emu_numel(expertTokensCountOrCumsumOut) != end - start || expertTokensCountOrCumsumOut->dtype != ACL_INT64))
    FAIL(ACLNN_ERR_PARAM_INVALID, OPNAME ": expertTokensCountOrCumsumOut must be (end-start,) INT64");
  e->i[0] = start, e->i[1] = end, e->i[2] = expertNum, e->i[3] = rowIdxType, e->i[4] = expertTokensNumType;
  return finish_phase1(e, 0, workspaceSize, executor);
}
PHASE2(aclnnMoeInitRoutingV3)

/* ========================= GroupedMatmulV4 ========================= */
/* MoE form only: one x (M,K), one weight (E,K,N) [BF16/FP16, INT8, INT4 or INT32 = 8 packed
 * int4], antiquantScale (E,N) per-channel or (E,G,N) per-group (int4 only), groupList
 * (E,) INT64 cumsum (type 0) or counts (type 1), groupType 0 (split M), one out (M,N). */
#undef OPNAME
#define OPNAME "aclnnGroupedMatmulV4"
static float gmm_w(const aclTensor *w, int64_t z, int64_t p, int64_t j) {
  if (w->dtype == ACL_INT32) {
    int32_t word = ((const int32_t *)w->data)[w->offset + z * w->strides[0] + p * w->strides[1] + (j >> 3) * w->strides[2]];
    int v = (int)(((uint32_t)word >> (4 * (j & 7))) & 15u);
    return (float)(v >= 8 ? v - 16 : v);
  }
  int64_t el = w->offset + z * w->strides[0] + p * w->strides[1] + j * w->strides[2];
  switch (w->dtype) {
  case ACL_INT8: return ((const int8_t *)w->data)[el];
  case ACL_BF16: return emu_bf16_to_f32(((const uint16_t *)w->data)[el]);
  case ACL_FLOAT16: return emu_f16_to_f32(((const uint16_t *)w->data)[el]);
  }
  uint8_t b = ((const uint8_t *)w->data)[el >> 1];
  int v = (el & 1) ? (b >> 4) : (b & 15);
  return (float)(v >= 8 ? v - 16 : v);
}
static int run_gmm(exec_t *e, void *ws, char *err, size_t errlen) {
  (void)ws;
  aclTensor *x = &e->l[0][0], *w = &e->l[1][0], *o = &e->l[3][0], *sc = &e->l[2][0], *gl = &e->t[0];
  int has_scale = e->ln[2] > 0;
  int64_t M = x->dims[0], K = x->dims[1], N = o->dims[1], E = w->dims[0], G = e->i[1];
  int64_t *glv = emu_load_i64(gl);
  float *xf = emu_load_f32(x), *of = emu_load_f32(o), *sf = has_scale ? emu_load_f32(sc) : NULL;
  float *wrow = malloc((size_t)N * sizeof *wrow), *acc = malloc((size_t)N * sizeof *acc);
  int rc = 0;
  if (!glv || !xf || !of || !wrow || !acc || (has_scale && !sf)) {
    snprintf(err, errlen, "out of host memory");
    rc = ACLNN_ERR_INNER;
    goto out;
  }
  int64_t row = 0;
  for (int64_t z = 0; z < E; z++) {
    int64_t end = e->i[0] == 0 ? glv[z] : row + glv[z];
    if (end < row || end > M) {
      snprintf(err, errlen, "groupList entry %lld gives rows [%lld,%lld) outside [0,%lld]", (long long)z, (long long)row, (long long)end, (long long)M);
      rc = ACLNN_ERR_RUNTIME_ERROR;
      goto out;
    }
    for (int64_t r = row; r < end; r++) {
      memset(acc, 0, (size_t)N * sizeof *acc);
      for (int64_t p = 0; p < K; p++) {
        float xv = xf[r * K + p];
        if (xv == 0) continue;
        int64_t gi = G ? p / (K / G) : 0;
        for (int64_t j = 0; j < N; j++) {
          float wv = gmm_w(w, z, p, j);
          if (has_scale) wv = emu_round_to(x->dtype, wv * sf[(z * (G ? G : 1) + gi) * N + j]);
          acc[j] += xv * wv;
        }
      }
      memcpy(of + r * N, acc, (size_t)N * sizeof *acc);
    }
    row = end;
  }
  emu_store_f32(o, of);
out:
  free(glv), free(xf), free(of), free(sf), free(wrow), free(acc);
  return rc;
}
static int take_list(exec_t *e, int slot, const char *what, const aclTensorList *l) {
  if (!l) return 0;
  if (l->n > 8) {
    emu_set_err(OPNAME ": %s has more than 8 tensors", what);
    return ACLNN_ERR_PARAM_INVALID;
  }
  for (uint64_t i = 0; i < l->n; i++) {
    int r = emu_check_tensor(OPNAME, what, &l->t[i]);
    if (r) return r;
    e->l[slot][i] = l->t[i];
  }
  e->ln[slot] = (int)l->n;
  return 0;
}
EMU_API aclnnStatus aclnnGroupedMatmulV4GetWorkspaceSize(
    const aclTensorList *x, const aclTensorList *weight, const aclTensorList *biasOptional, const aclTensorList *scaleOptional,
    const aclTensorList *offsetOptional, const aclTensorList *antiquantScaleOptional, const aclTensorList *antiquantOffsetOptional,
    const aclTensorList *perTokenScaleOptional, const aclTensor *groupListOptional, const aclTensorList *activationInputOptional,
    const aclTensorList *activationQuantScaleOptional, const aclTensorList *activationQuantOffsetOptional, int64_t splitItem,
    int64_t groupType, int64_t groupListType, int64_t actType, aclTensorList *out, aclTensorList *activationFeatureOutOptional,
    aclTensorList *dynQuantScaleOutOptional, uint64_t *workspaceSize, aclOpExecutor **executor) {
  NEW(OPNAME, run_gmm);
  int r;
  if ((r = take_list(e, 0, "x", x)) || (r = take_list(e, 1, "weight", weight)) || (r = take_list(e, 2, "antiquantScale", antiquantScaleOptional)) ||
      (r = take_list(e, 3, "out", out))) {
    free(e);
    return r;
  }
  if (biasOptional || scaleOptional || offsetOptional || antiquantOffsetOptional || perTokenScaleOptional || activationInputOptional ||
      activationQuantScaleOptional || activationQuantOffsetOptional || activationFeatureOutOptional || dynQuantScaleOutOptional)
    FAIL(ACLNN_ERR_PARAM_INVALID, OPNAME ": the emulator implements x, weight, antiquantScale, groupList and out only");
  if (e->ln[0] != 1 || e->ln[1] != 1 || e->ln[3] != 1 || e->ln[2] > 1) FAIL(ACLNN_ERR_PARAM_INVALID, OPNAME ": expected one x, one weight, one out (MoE form)");
  if (splitItem != 2 && splitItem != 3) FAIL(ACLNN_ERR_PARAM_INVALID, OPNAME ": splitItem must be 2 or 3 for a single output");
  if (groupType != 0) FAIL(ACLNN_ERR_PARAM_INVALID, OPNAME ": groupType must be 0 (split M)");
  if (groupListType != 0 && groupListType != 1) FAIL(ACLNN_ERR_PARAM_INVALID, OPNAME ": groupListType must be 0 (cumsum) or 1 (count)");
  if (actType != 0) FAIL(ACLNN_ERR_PARAM_INVALID, OPNAME ": actType must be 0");
  if (!groupListOptional) FAIL(ACLNN_ERR_PARAM_NULLPTR, OPNAME ": groupList is required");
  CHECK_T(0, "groupList", groupListOptional);
  aclTensor *xt = &e->l[0][0], *wt = &e->l[1][0], *ot = &e->l[3][0], *st = e->ln[2] ? &e->l[2][0] : NULL;
  if (xt->nd != 2 || wt->nd != 3 || ot->nd != 2) FAIL(ACLNN_ERR_PARAM_INVALID, OPNAME ": x (M,K), weight (E,K,N), out (M,N) expected");
  if (xt->dtype != ACL_BF16 && xt->dtype != ACL_FLOAT16) FAIL(ACLNN_ERR_PARAM_INVALID, OPNAME ": x must be BFLOAT16 or FLOAT16");
  int64_t E = wt->dims[0], K = xt->dims[1], N = wt->dtype == ACL_INT32 ? wt->dims[2] * 8 : wt->dims[2];
  if (E > 1024) FAIL(ACLNN_ERR_PARAM_INVALID, OPNAME ": at most 1024 groups, got %lld", (long long)E);
  if (wt->dims[1] != K || ot->dims[1] != N || ot->dims[0] != xt->dims[0] || ot->dtype != xt->dtype)
    FAIL(ACLNN_ERR_PARAM_INVALID, OPNAME ": shapes do not agree (x %lldx%lld, weight K=%lld N=%lld)", (long long)xt->dims[0], (long long)K, (long long)wt->dims[1], (long long)N);
  if (K >= 65536 || N >= 65536) FAIL(ACLNN_ERR_PARAM_INVALID, OPNAME ": every tensor's last dim must be < 65536");
  if (groupListOptional->dtype != ACL_INT64 || emu_numel(groupListOptional) != E) FAIL(ACLNN_ERR_PARAM_INVALID, OPNAME ": groupList must be (E,) INT64");
  int64_t G = 0;
  if (wt->dtype == ACL_INT8 || wt->dtype == ACL_INT4 || wt->dtype == ACL_INT32) {
    if (!st || st->dtype != xt->dtype) FAIL(ACLNN_ERR_PARAM_INVALID, OPNAME ": quantized weight needs antiquantScale in x's dtype");
    if (st->nd == 3) {
      if (wt->dtype == ACL_INT8) FAIL(ACLNN_ERR_PARAM_INVALID, OPNAME ": A16W8 supports per-channel antiquantScale only");
      G = st->dims[1];
      if (st->dims[0] != E || st->dims[2] != N || G < 1 || K % G) FAIL(ACLNN_ERR_PARAM_INVALID, OPNAME ": per-group antiquantScale must be (E,G,N) with G dividing K");
    } else if (st->nd != 2 || st->dims[0] != E || st->dims[1] != N)
      FAIL(ACLNN_ERR_PARAM_INVALID, OPNAME ": per-channel antiquantScale must be (E,N)");
  } else if (wt->dtype != xt->dtype || st)
    FAIL(ACLNN_ERR_PARAM_INVALID, OPNAME ": float weight must be in x's dtype without antiquantScale");
  e->i[0] = groupListType, e->i[1] = G;
  return finish_phase1(e, 1024, workspaceSize, executor);
}
PHASE2(aclnnGroupedMatmulV4)

/* ========================= MoeTokenUnpermute ========================= */
/* out[i] = Σ_q permuted[sorted[i·k+q]] · probs[i][q] (k = numel(sorted)/N). An index < 0
 * (a row dropped by activeExpertRange) contributes nothing: an emulator assumption to
 * check on hardware (see README). */
#undef OPNAME
#define OPNAME "aclnnMoeTokenUnpermute"
static int run_unpermute(exec_t *e, void *ws, char *err, size_t errlen) {
  (void)ws;
  aclTensor *pt = &e->t[0], *si = &e->t[1], *pr = &e->t[2], *o = &e->t[3];
  int64_t P = pt->dims[0], H = pt->dims[1], N = o->dims[0], k = emu_numel(si) / N;
  int64_t *ix = emu_load_i64(si);
  float *pf = emu_load_f32(pt), *wf = pr->magic ? emu_load_f32(pr) : NULL, *of = calloc((size_t)(N * H + 1), sizeof *of);
  int rc = 0;
  if (!ix || !pf || !of || (pr->magic && !wf)) {
    snprintf(err, errlen, "out of host memory");
    rc = ACLNN_ERR_INNER;
    goto out;
  }
  for (int64_t i = 0; i < N; i++)
    for (int64_t q = 0; q < k; q++) {
      int64_t r = ix[i * k + q];
      if (r < 0) continue;
      if (r >= P) {
        snprintf(err, errlen, "sorted index %lld out of [0,%lld)", (long long)r, (long long)P);
        rc = ACLNN_ERR_RUNTIME_ERROR;
        goto out;
      }
      float w = wf ? wf[i * k + q] : 1.0f;
      for (int64_t h = 0; h < H; h++) of[i * H + h] += pf[r * H + h] * w;
    }
  emu_store_f32(o, of);
out:
  free(ix), free(pf), free(wf), free(of);
  return rc;
}
EMU_API aclnnStatus aclnnMoeTokenUnpermuteGetWorkspaceSize(const aclTensor *permutedTokens, const aclTensor *sortedIndices,
                                                           const aclTensor *probsOptional, bool paddedMode,
                                                           const aclIntArray *restoreShapeOptional, aclTensor *out,
                                                           uint64_t *workspaceSize, aclOpExecutor **executor) {
  NEW(OPNAME, run_unpermute);
  (void)restoreShapeOptional;
  CHECK_T(0, "permutedTokens", permutedTokens);
  CHECK_T(1, "sortedIndices", sortedIndices);
  CHECK_OPT(2, "probs", probsOptional);
  CHECK_T(3, "out", out);
  if (paddedMode) FAIL(ACLNN_ERR_PARAM_INVALID, OPNAME ": paddedMode is not emulated");
  if (permutedTokens->nd != 2 || out->nd != 2 || out->dims[1] != permutedTokens->dims[1] || out->dtype != permutedTokens->dtype)
    FAIL(ACLNN_ERR_PARAM_INVALID, OPNAME ": permutedTokens (P,H) and out (N,H) expected");
  if (sortedIndices->dtype != ACL_INT32 || emu_numel(sortedIndices) % out->dims[0]) FAIL(ACLNN_ERR_PARAM_INVALID, OPNAME ": sortedIndices must be (N*k,) INT32");
  if (probsOptional && emu_numel(probsOptional) != emu_numel(sortedIndices)) FAIL(ACLNN_ERR_PARAM_INVALID, OPNAME ": probs must be (N,k)");
  return finish_phase1(e, 0, workspaceSize, executor);
}
PHASE2(aclnnMoeTokenUnpermute)

/* ========================= InplaceIndexCopy ========================= */
/* selfRef[index[i]] = source[i] along dim (the paged-cache write). */
#undef OPNAME
#define OPNAME "aclnnInplaceIndexCopy"
static int run_index_copy(exec_t *e, void *ws, char *err, size_t errlen) {
  (void)ws;
  aclTensor *self = &e->t[0], *idx = &e->t[1], *src = &e->t[2];
  int dim = (int)e->i[0];
  int64_t outer = 1, inner = 1, D = self->dims[dim], n = emu_numel(idx);
  for (int i = 0; i < dim; i++) outer *= self->dims[i];
  for (int i = dim + 1; i < self->nd; i++) inner *= self->dims[i];
  int64_t *ix = emu_load_i64(idx);
  float *xf = emu_load_f32(src);
  int rc = 0;
  if (!ix || !xf) {
    snprintf(err, errlen, "out of host memory");
    rc = ACLNN_ERR_INNER;
    goto out;
  }
  for (int64_t j = 0; j < n; j++)
    if (ix[j] < 0 || ix[j] >= D) {
      snprintf(err, errlen, "index %lld out of range [0,%lld)", (long long)ix[j], (long long)D);
      rc = ACLNN_ERR_RUNTIME_ERROR;
      goto out;
    }
  /* write only the addressed slices */
  for (int64_t o = 0; o < outer; o++)
    for (int64_t j = 0; j < n; j++)
      for (int64_t i = 0; i < inner; i++) emu_put(self, emu_elem_off(self, (o * D + ix[j]) * inner + i), xf[(o * n + j) * inner + i]);
out:
  free(ix), free(xf);
  return rc;
}
EMU_API aclnnStatus aclnnInplaceIndexCopyGetWorkspaceSize(aclTensor *selfRef, int64_t dim, const aclTensor *index, const aclTensor *source,
                                                          uint64_t *workspaceSize, aclOpExecutor **executor) {
  NEW(OPNAME, run_index_copy);
  CHECK_T(0, "selfRef", selfRef);
  CHECK_T(1, "index", index);
  CHECK_T(2, "source", source);
  dim = norm_dim(dim, selfRef->nd);
  if (dim < 0 || dim >= selfRef->nd) FAIL(ACLNN_ERR_PARAM_INVALID, OPNAME ": dim out of range");
  if (index->nd > 1 || (index->dtype != ACL_INT32 && index->dtype != ACL_INT64)) FAIL(ACLNN_ERR_PARAM_INVALID, OPNAME ": index must be 1-D INT32/INT64");
  if (source->dtype != selfRef->dtype || source->nd != selfRef->nd) FAIL(ACLNN_ERR_PARAM_INVALID, OPNAME ": source must match selfRef's dtype and rank");
  for (int i = 0; i < selfRef->nd; i++)
    if (source->dims[i] != (i == dim ? emu_numel(index) : selfRef->dims[i])) FAIL(ACLNN_ERR_PARAM_INVALID, OPNAME ": source shape mismatch");
  e->i[0] = dim;
  return finish_phase1(e, 0, workspaceSize, executor);
}
PHASE2(aclnnInplaceIndexCopy)
