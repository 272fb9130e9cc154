// Fast kernels of the dsgate CPU backend (fast.c): AVX2+FMA paths for weight-only int8
// and int4 matmul (a streaming decode kernel and a blocked GEMM for prefill), a
// row-tiled bf16/f32 matmul, plus the streaming-read and peak-FMA probes the
// benchmarks compare against. Every function returns nothing and never aborts: Go
// checks shapes before the call (STYLE.md point 12). Functions taking "isa" only run
// the vector path when the caller passes DSG_ISA_AVX2 (from dsg_detect_isa).
#ifndef DSGATE_CPU_FAST_H
#define DSGATE_CPU_FAST_H
#include <stdint.h>

// UNROLL marks the loops over arrays of vector registers in the kernels: GCC keeps
// such an array in memory, with a store per iteration of the hot loop, unless the
// loops over it are unrolled completely (KERNELS.md "Register arrays").
#define UNROLL _Pragma("GCC unroll 16")

#define DSG_ISA_GENERIC 0
#define DSG_ISA_AVX2 2
#define DSG_ISA_AVX512 3

// dsg_detect_isa returns the best ISA level of the running CPU.
int dsg_detect_isa(void);

// Quantized weights come in panels (packed by core/cpu at load; KERNELS.md "Layout:
// panels, packed at load"): panel p holds output columns [64p, 64p+64) for all K input
// rows, row k at q + (p·K + k)·PB bytes, where PB is 64 for int8 (one byte per column)
// and 32 for int4 (8 little-endian words, low nibble first: the bytes of that segment
// of a (K, N) checkpoint row); columns past N are zero. Scales are ceil(K/G) rows of
// ldsc floats (ldsc: N rounded up to 64, zero past N), G == K or more: per channel.
//
// Quantized linear over input rows [k0, k1) and output columns [c0, c1) (any
// 0 <= c0 < c1 <= N; whole panels are computed): row m of x starts at x + m*ldx
// (x[m*ldx + k] is input k); output column c of row m is y[m*ldy + c - c0]. Per
// element it computes, for every sub-group [a, b) = group ∩ [k0, k1) in k order,
// acc = fma chain over k in [a, b) from 0 and out = fma(acc, scale, out) from 0. For
// M <= DSG_DECODE_ROWS the streaming decode kernel runs, else the GEMM kernel; both
// give the same bits. scratch: (4M+1)·64 floats. With nh > 0 the weight is a
// HeadLinear's: output column c reads its inputs at x + (c / nh)·xhs (the head's slice
// of each row of x); nh and c0 are then multiples of 64, so that no panel spans two
// heads. nh = 0: every column reads x.
#ifndef DSG_DECODE_ROWS
#define DSG_DECODE_ROWS 8
#endif
void dsg_qlinear_avx2(const float *x, long ldx, int M, const void *q, int bits, int K, const float *scale, long ldsc,
                      int G, int k0, int k1, int c0, int c1, float *y, long ldy, float *scratch, int nh, long xhs);

// Dense linear over output rows [n0, n1) of W (N, K) in f32 (bits 32) or bf16
// (bits 16): y[m*ldy + n - n0] = dot(x_m, W_n) with 8-lane partial sums over k
// (fixed order, independent of M), reduced in lane order, then the tail.
void dsg_dlinear_avx2(const float *x, long ldx, int M, int K, const void *w, int bits, int n0, int n1, float *y,
                      long ldy);

// Absorbed MLA attention (as dsg_mla in kernels.h) for M query rows of one sequence
// and heads [h0, h1), in chunks of DSG_MLA_HEADS heads, each over the cached rows in
// blocks that stay in L2 while all the chunk's heads read them: scores are one 8-lane
// fma chain per head and position (four heads and two positions at a time, lanes
// summed by a tree), outputs fma chains over t in register accumulators, four heads
// per pass over a block. sc: DSG_MLA_HEADS·T floats with T = pos0 + M.
#define DSG_MLA_HEADS 32
void dsg_mla_avx2(const float *qa, long ldqa, const float *qp, long ldqp, int M, int pos0, int h0, int h1, int lc,
                  int r, const float *cache, long width, const int32_t *slots, float scale, float *out, long ldo,
                  float *sc);

// SwiGLU: out[i*ldo + j] = silu(g)·u with g = x[i*ldx + j], u = x[i*ldx + m + j], for
// rows i < M and j < m; silu(g) = g / (1 + e^-g) with a vector e^x within 2 ulp (its
// argument clamped to [-87, 87]).
void dsg_swiglu_avx2(const float *x, long ldx, int M, int m, float *out, long ldo);

// Quantized activations (actq.c). dsg_quant_act quantizes rows of x over inputs
// [k0, k1) in blocks of B (aligned to multiples of B from input 0, the last one
// clipped at k1): per block s = absmax/127, q = rint(x·127/absmax) in [-127, 127];
// it writes q at xq[m*ldxq + k], s at xs[m*ldxs + k/B] and the block's sum of q at
// xsum[m*ldxs + k/B], and zeroes xq[m*ldxq + k1] when k1 is odd.
void dsg_quant_act(const float *x, long ldx, int M, int k0, int k1, int B, int8_t *xq, long ldxq, float *xs,
                   int32_t *xsum, long ldxs);

// dsg_q4a8_avx2 is dsg_qlinear_avx2 for int4 weights with activations quantized by
// dsg_quant_act (same B, k0, k1): per element and block, an exact integer dot product
// of q_x and q_w (vpmaddubsw on q_w + 8, corrected by 8·sum q_x), then
// out = fma(float(dot)·w_scale, x_scale, out) in block order from 0. q and scale are
// int4 panels as for dsg_qlinear_avx2. G is a multiple of B, or G >= k1. k0 is a
// multiple of B. scratch: 3M·64 4-byte words. nh and xhs as for dsg_qlinear_avx2
// (xhs then a multiple of B: xq, xs and xsum hold every head's slice, quantized as one
// row).
void dsg_q4a8_avx2(const int8_t *xq, long ldxq, const float *xs, const int32_t *xsum, long ldxs, int M,
                   const void *q, int K, const float *scale, long ldsc, int G, int B, int k0, int k1, int c0, int c1,
                   float *y, long ldy, void *scratch, int nh, long xhs);

// dsg_stream_read sums n floats (n a multiple of 64, p 32-byte aligned) with 8-wide
// vectors, reading p's quarters side by side as four streams: a memory-bandwidth probe. dsg_peak_fma runs iters rounds of 12 independent 8-wide FMA
// chains (96 FMAs per round per chain set) and returns a value that depends on them.
float dsg_stream_read(const float *p, long n, int isa);
float dsg_peak_fma(long iters, int isa);
#endif
