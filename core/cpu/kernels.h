// C kernels of the dsgate CPU backend. Every function returns nothing and never
// aborts: Go checks every shape and index before the call (STYLE.md point 12).
#ifndef DSGATE_CPU_KERNELS_H
#define DSGATE_CPU_KERNELS_H
#include <stdint.h>

// y[m*ldy + (n-n0)] = sum_k x[m*ldx + k] * W[n][k] for n in [n0, n1); W is F32 (N,K).
void dsg_linear_f32(const float *x, int ldx, int M, int K, const float *w, int n0, int n1, float *y, int ldy);
// Same with W in bfloat16 bits (N,K).
void dsg_linear_bf16(const float *x, int ldx, int M, int K, const uint16_t *w, int n0, int n1, float *y, int ldy);
// Weight-only quantized: q is int8 (K,N) (bits == 8) or int4 packed 8 per uint32
// along N, low nibble first (bits == 4); scale is (ceil(K/G), N) with G the group
// size (G == K for per-channel scales). n0 and n1 are multiples of 8 for int4.
void dsg_linear_q(const float *x, int ldx, int M, int K, const void *q, int bits, int N, const float *scale, int G,
                  int n0, int n1, float *y, int ldy);
// Absorbed MLA attention for M query rows at positions pos0.. of one sequence and
// heads [h0, h1): keys are cache rows cache[slots[t]*width], t <= pos0+i.
void dsg_mla(const float *qa, int ldqa, const float *qp, int ldqp, int M, int pos0, int h0, int h1, int lc, int r,
             const float *cache, int width, const int32_t *slots, float scale, float *out, int ldo, float *scratch);
#endif
