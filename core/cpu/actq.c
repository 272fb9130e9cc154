// Integer-dot kernels of the dsgate CPU backend: int4 weights times int8 activations
// (fast.h, "Quantized activations"; KERNELS.md explains the layout and the numerics).
#include "fast.h"
#include <string.h>
#include <math.h>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define DSG_X86 1
#endif

void dsg_quant_act(const float *x, long ldx, int M, int k0, int k1, int B, int8_t *xq, long ldxq, float *xs,
                   int32_t *xsum, long ldxs) {
	for (int m = 0; m < M; m++) {
		const float *xr = x + m * ldx;
		int8_t *qr = xq + m * ldxq;
		for (int b0 = k0; b0 < k1;) {
			int b1 = (b0 / B + 1) * B;
			if (b1 > k1) b1 = k1;
			float amax = 0;
			int finite = 1;
			for (int k = b0; k < b1; k++) {
				float a = fabsf(xr[k]);
				finite &= isfinite(a) != 0;
				if (a > amax) amax = a;
			}
			// A NaN or infinity makes the block's scale NaN, so that it reaches the
			// outputs as it would through the float kernels (and no cast is undefined).
			float inv = finite && amax > 0 ? 127.0f / amax : 0;
			int32_t sum = 0;
			for (int k = b0; k < b1; k++) {
				float v = rintf(xr[k] * inv);
				int q = v > 127 ? 127 : v < -127 ? -127 : (int)v;
				qr[k] = (int8_t)q;
				sum += q;
			}
			xs[m * ldxs + b0 / B] = finite ? amax / 127.0f : NAN;
			xsum[m * ldxs + b0 / B] = sum;
			b0 = b1;
		}
		// The kernel reads activations in pairs: the slot after an odd range end is 0.
		if (k1 & 1) qr[k1] = 0;
	}
}

#ifdef DSG_X86
#define T __attribute__((target("avx2,fma")))

#define KQ 16 // k rows unpacked per chunk: 8 pairs, whose int16 sums cannot overflow

// unpack_pair turns two int4 rows (k, k+1) of 64 columns into 4 vectors of byte pairs
// (u_k, u_k+1) with u = q + 8 in [0, 15] — the unsigned operand of vpmaddubsw.
T static inline void unpack_pair(const uint8_t *r0, const uint8_t *r1, __m256i w[4]) {
	const __m256i flip = _mm256_set1_epi8((char)0x88), m4 = _mm256_set1_epi8(0x0F);
	__m256i v0 = _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)r0), flip);
	__m256i v1 = _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)r1), flip);
	__m256i l0 = _mm256_and_si256(v0, m4), l1 = _mm256_and_si256(v1, m4);
	__m256i h0 = _mm256_and_si256(_mm256_srli_epi16(v0, 4), m4), h1 = _mm256_and_si256(_mm256_srli_epi16(v1, 4), m4);
	w[0] = _mm256_unpacklo_epi8(l0, l1);
	w[1] = _mm256_unpackhi_epi8(l0, l1);
	w[2] = _mm256_unpacklo_epi8(h0, h1);
	w[3] = _mm256_unpackhi_epi8(h0, h1);
}

// widen_add adds the int16 lane sums a[0..4) to ac[0..64) (int32, column order), or
// stores them there when first is set. The unpacking leaves even columns in a[0], a[1]
// and odd ones in a[2], a[3], each 16-byte lane holding 8 consecutive bytes of the row:
// interleaving even with odd int16s puts 8 consecutive columns in each half-lane, so
// the accumulators stay in column order and the scales and outputs need no
// permutation.
T static inline __attribute__((always_inline)) void widen_add(const __m256i a[4], int32_t *ac, int first) {
	const __m256i u[4] = {_mm256_unpacklo_epi16(a[0], a[2]), _mm256_unpackhi_epi16(a[0], a[2]),
	                      _mm256_unpacklo_epi16(a[1], a[3]), _mm256_unpackhi_epi16(a[1], a[3])};
	UNROLL for (int i = 0; i < 4; i++) {
		__m256i lo = _mm256_cvtepi16_epi32(_mm256_castsi256_si128(u[i]));
		__m256i hi = _mm256_cvtepi16_epi32(_mm256_extracti128_si256(u[i], 1));
		__m256i *d0 = (__m256i *)(ac + 8 * i), *d1 = (__m256i *)(ac + 32 + 8 * i);
		if (!first) {
			lo = _mm256_add_epi32(_mm256_loadu_si256(d0), lo);
			hi = _mm256_add_epi32(_mm256_loadu_si256(d1), hi);
		}
		_mm256_storeu_si256(d0, lo);
		_mm256_storeu_si256(d1, hi);
	}
}

// pair_act broadcasts activations k and k+1 (xp[0], xp[1]) as the int16 byte pair.
T static inline __attribute__((always_inline)) __m256i pair_act(const int8_t *xp) {
	int16_t pr;
	memcpy(&pr, xp, 2);
	return _mm256_set1_epi16(pr);
}

// dot_chunk adds to ac[0..64) (int32, column order; stores when first) the np pair
// products of one row's activations xp with the unpacked chunk wb.
T static inline void dot_chunk(const int8_t *xp, const __m256i *wb, int np, int32_t *ac, int first) {
	__m256i a[4] = {_mm256_setzero_si256(), _mm256_setzero_si256(), _mm256_setzero_si256(), _mm256_setzero_si256()};
	for (int p = 0; p < np; p++) {
		__m256i av = pair_act(xp + 2 * p);
		UNROLL for (int i = 0; i < 4; i++) a[i] = _mm256_add_epi16(a[i], _mm256_maddubs_epi16(wb[4 * p + i], av));
	}
	widen_add(a, ac, first);
}

// dot_fused is unpack + dot_chunk for R (1 or 2) rows without storing the unpacked
// weights: at one or two rows the stores and reloads cost more than they save. Pair p
// is the 64 bytes at w + 64p (two consecutive panel rows).
T static inline __attribute__((always_inline)) void dot_fused(int R, const int8_t *x0, const int8_t *x1,
                                                              const uint8_t *w, int np, int32_t *ac0, int32_t *ac1,
                                                              int first) {
	__m256i a[2][4];
	UNROLL for (int r = 0; r < R; r++)
		UNROLL for (int i = 0; i < 4; i++) a[r][i] = _mm256_setzero_si256();
	for (int p = 0; p < np; p++) {
		__m256i u[4];
		unpack_pair(w + 64 * p, w + 64 * p + 32, u);
		__m256i av0 = pair_act(x0 + 2 * p);
		UNROLL for (int i = 0; i < 4; i++) a[0][i] = _mm256_add_epi16(a[0][i], _mm256_maddubs_epi16(u[i], av0));
		if (R == 2) {
			__m256i av1 = pair_act(x1 + 2 * p);
			UNROLL for (int i = 0; i < 4; i++) a[1][i] = _mm256_add_epi16(a[1][i], _mm256_maddubs_epi16(u[i], av1));
		}
	}
	widen_add(a[0], ac0, first);
	if (R == 2) widen_add(a[1], ac1, first);
}

T void dsg_q4a8_avx2(const int8_t *xq, long ldxq, const float *xs, const int32_t *xsum, long ldxs, int M,
                   const void *qv, int K, const float *scale, long ldsc, int G, int B, int k0, int k1, int c0, int c1,
                   float *y, long ldy, void *scratch, int nh, long xhs) {
	const uint8_t *q = (const uint8_t *)qv;
	uint8_t odd[KQ + 1][32]; // a chunk with an odd row count, padded with a zero row
	__m256i wb[4 * KQ / 2];
	int32_t *acc = (int32_t *)scratch;
	float *out = (float *)(acc + 64L * M);
	// Two panels at a time (PAIR in fast.c: two streams per thread), each down k in
	// blocks of B, alternating between them every block; 64 int32 accumulators per row
	// of x, which stay in L1, and 64 float results per row and panel.
	for (int cp = c0 & ~63; cp < c1; cp += 128) {
		int npan = c1 - cp > 64 ? 2 : 1;
		memset(out, 0, sizeof(float) * 64 * (size_t)(M * npan));
		for (int b0 = k0; b0 < k1;) {
			int b1 = (b0 / B + 1) * B;
			if (b1 > k1) b1 = k1;
			for (int pi = 0; pi < npan; pi++) {
				int cb = cp + 64 * pi;
				const uint8_t *pan = q + (long)(cb / 64) * K * 32;
				long head = nh ? cb / nh : 0; // one activation block per head (a panel is in one head)
				for (int kk = b0; kk < b1; kk += KQ) {
					int kb = b1 - kk < KQ ? b1 - kk : KQ, np = (kb + 1) / 2, first = kk == b0;
					const uint8_t *wk = pan + (long)kk * 32;
					if (kb & 1) {
						memcpy(odd, wk, 32 * (size_t)kb);
						memset(odd[kb], 0, 32);
						wk = odd[0];
					}
					const int8_t *xk = xq + head * xhs + kk;
					if (M <= 2) {
						if (M == 2)
							dot_fused(2, xk, xk + ldxq, wk, np, acc, acc + 64, first);
						else
							dot_fused(1, xk, xk, wk, np, acc, acc, first);
						continue;
					}
					for (int p = 0; p < np; p++) unpack_pair(wk + 64 * p, wk + 64 * p + 32, wb + 4 * p);
					for (int m = 0; m < M; m++) dot_chunk(xk + m * ldxq, wb, np, acc + 64L * m, first);
				}
				const float *sg = scale + (long)(b0 / G) * ldsc + cb;
				for (int m = 0; m < M; m++) {
					const int32_t *ac = acc + 64L * m;
					float *o = out + 64L * (pi * M + m);
					long bi = m * ldxs + (head * xhs + b0) / B;
					__m256 as = _mm256_set1_ps(xs[bi]);
					__m256i off = _mm256_set1_epi32(8 * xsum[bi]);
					UNROLL for (int j = 0; j < 64; j += 8) {
						__m256 f = _mm256_cvtepi32_ps(_mm256_sub_epi32(_mm256_loadu_si256((const __m256i *)(ac + j)), off));
						_mm256_storeu_ps(o + j, _mm256_fmadd_ps(_mm256_mul_ps(f, _mm256_loadu_ps(sg + j)), as, _mm256_loadu_ps(o + j)));
					}
				}
			}
			b0 = b1;
		}
		for (int pi = 0; pi < npan; pi++) {
			int cb = cp + 64 * pi, lo = cb < c0 ? c0 : cb, hi = cb + 64 < c1 ? cb + 64 : c1;
			for (int m = 0; m < M; m++)
				memcpy(y + m * ldy + lo - c0, out + 64L * (pi * M + m) + lo - cb, sizeof(float) * (size_t)(hi - lo));
		}
	}
}
#else
void dsg_q4a8_avx2(const int8_t *xq, long ldxq, const float *xs, const int32_t *xsum, long ldxs, int M,
                   const void *qv, int K, const float *scale, long ldsc, int G, int B, int k0, int k1, int c0, int c1,
                   float *y, long ldy, void *scratch, int nh, long xhs) {
	(void)nh; (void)xhs; (void)xq; (void)ldxq; (void)xs; (void)xsum; (void)ldxs; (void)M; (void)qv; (void)K; (void)scale; (void)ldsc; (void)G;
	(void)B; (void)k0; (void)k1; (void)c0; (void)c1; (void)y; (void)ldy; (void)scratch;
}
#endif
