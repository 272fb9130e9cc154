// Fast kernels of the dsgate CPU backend; see fast.h and RATIONALE.md.
//
// Numerics: every quantized output element is computed as
//   acc_g = fma chain over k in group g, in k order, starting from 0
//   out   = fma(acc_g, scale_g, out) for g = 0, 1, ... starting from 0
// in float32 with correctly rounded FMAs, whichever kernel (decode or GEMM) runs and
// whatever the tiling, so results do not depend on how many rows share a call.
#include "fast.h"
#include <string.h>
#include <math.h>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define DSG_X86 1
#endif

int dsg_detect_isa(void) {
#ifdef DSG_X86
	__builtin_cpu_init();
	if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
		if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
		    __builtin_cpu_supports("avx512vl"))
			return DSG_ISA_AVX512;
		return DSG_ISA_AVX2;
	}
#endif
	return DSG_ISA_GENERIC;
}

#define KB 64  // decode: k rows per block (the block is reread from L1 by every pair of rows of x)
#define KC 64  // GEMM: k rows dequantized per chunk (KC x 64 floats = 16 KiB)

#ifdef DSG_X86
#define T __attribute__((target("avx2,fma")))
#define AI __attribute__((always_inline)) inline

// ld64 converts 64 consecutive columns of one weight row to 8 vectors of floats
// (exact: small integers). int8: 64 bytes; int4: 32 bytes, byte j holds columns 2j
// (low nibble) and 2j+1 (high nibble), two's complement.
T static AI void ld64_i8(const uint8_t *p, __m256 w[8]) {
	UNROLL for (int i = 0; i < 8; i++)
		w[i] = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(p + 8 * i))));
}

T static AI void ld64_i4(const uint8_t *p, __m256 w[8]) {
	const __m128i tab = _mm_setr_epi8(0, 1, 2, 3, 4, 5, 6, 7, -8, -7, -6, -5, -4, -3, -2, -1);
	const __m128i m4 = _mm_set1_epi8(0x0F);
	UNROLL for (int h = 0; h < 2; h++) {
		__m128i v = _mm_loadu_si128((const __m128i *)(p + 16 * h));
		__m128i lo = _mm_shuffle_epi8(tab, _mm_and_si128(v, m4));
		__m128i hi = _mm_shuffle_epi8(tab, _mm_and_si128(_mm_srli_epi16(v, 4), m4));
		__m128i a = _mm_unpacklo_epi8(lo, hi); // columns 32h + 0..15
		__m128i b = _mm_unpackhi_epi8(lo, hi); // columns 32h + 16..31
		w[4 * h + 0] = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(a));
		w[4 * h + 1] = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(a, 8)));
		w[4 * h + 2] = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(b));
		w[4 * h + 3] = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(b, 8)));
	}
}

// dec_blk8: acc[0..64) = fma chain of x[k] * W[k][0..64) for k < kb (in k order);
// int8 rows. Eight accumulators cover the FMA latency.
T static void dec_blk8(const float *x, const uint8_t *w, long ldw, int kb, float *acc) {
	__m256 a[8];
	UNROLL for (int i = 0; i < 8; i++) a[i] = _mm256_loadu_ps(acc + 8 * i);
	for (int k = 0; k < kb; k++) {
		__m256 xv = _mm256_broadcast_ss(x + k);
		const uint8_t *p = w + k * ldw;
		UNROLL for (int i = 0; i < 8; i++)
			a[i] = _mm256_fmadd_ps(xv, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(p + 8 * i)))), a[i]);
	}
	UNROLL for (int i = 0; i < 8; i++) _mm256_storeu_ps(acc + 8 * i, a[i]);
}

// nib4 is nibble j (0..7) of every 32-bit lane of v moved to the lane's top 4 bits
// and converted: the exact float q·2^28 (see dec_blk4).
T static AI __m256 nib4(__m256i v, int j) {
	const __m256i hm = _mm256_set1_epi32((int)0xF0000000u);
	if (j == 0) return _mm256_cvtepi32_ps(_mm256_slli_epi32(v, 28));
	if (j == 7) return _mm256_cvtepi32_ps(_mm256_and_si256(v, hm));
	return _mm256_cvtepi32_ps(_mm256_and_si256(_mm256_slli_epi32(v, 28 - 4 * j), hm));
}

// dec_blk4: the same for int4 rows, without byte shuffles: a 32-byte row of 64
// columns is 8 words; nibble j of word i (column 8i+j) is moved to the top 4 bits of a
// 32-bit lane, so the lane converts to the exact float q·2^28. Accumulator j therefore
// holds columns 8i+j in lane i (a transposed layout q_decode undoes), scaled by 2^28
// (q_decode folds 2^-28 into the scales; exact, see INT4_SHIFT).
T static void dec_blk4(const float *x, const uint8_t *w, long ldw, int kb, float *acc) {
	__m256 a[8];
	UNROLL for (int i = 0; i < 8; i++) a[i] = _mm256_loadu_ps(acc + 8 * i);
	for (int k = 0; k < kb; k++) {
		__m256 xv = _mm256_broadcast_ss(x + k);
		__m256i v = _mm256_loadu_si256((const __m256i *)(w + k * ldw));
		UNROLL for (int i = 0; i < 8; i++) a[i] = _mm256_fmadd_ps(xv, nib4(v, i), a[i]);
	}
	UNROLL for (int i = 0; i < 8; i++) _mm256_storeu_ps(acc + 8 * i, a[i]);
}

// dec_x2: dec_blk8 (bits 8) or dec_blk4 (bits 4) for two rows of x at once, over
// 32-column halves (int8) or nibbles 0-3 then 4-7 (int4), with eight accumulators
// each pass, converting each weight once for both rows; the same FMA chains, so the
// same bits as two single-row calls.
T static AI void dec_x2(int bits, const float *x0, const float *x1, const uint8_t *w, long ldw, int kb, float *acc0,
                        float *acc1) {
	UNROLL for (int h = 0; h < 2; h++) {
		__m256 a[4], b[4];
		UNROLL for (int i = 0; i < 4; i++) {
			a[i] = _mm256_loadu_ps(acc0 + 32 * h + 8 * i);
			b[i] = _mm256_loadu_ps(acc1 + 32 * h + 8 * i);
		}
		for (int k = 0; k < kb; k++) {
			__m256 xv0 = _mm256_broadcast_ss(x0 + k), xv1 = _mm256_broadcast_ss(x1 + k);
			const uint8_t *p = w + k * ldw;
			__m256i v = bits == 4 ? _mm256_loadu_si256((const __m256i *)p) : _mm256_setzero_si256();
			UNROLL for (int i = 0; i < 4; i++) {
				__m256 wv = bits == 4 ? nib4(v, 4 * h + i)
				                      : _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(p + 32 * h + 8 * i))));
				a[i] = _mm256_fmadd_ps(xv0, wv, a[i]);
				b[i] = _mm256_fmadd_ps(xv1, wv, b[i]);
			}
		}
		UNROLL for (int i = 0; i < 4; i++) {
			_mm256_storeu_ps(acc0 + 32 * h + 8 * i, a[i]);
			_mm256_storeu_ps(acc1 + 32 * h + 8 * i, b[i]);
		}
	}
}

T static void dec_blk8x2(const float *x0, const float *x1, const uint8_t *w, long ldw, int kb, float *acc0,
                         float *acc1) {
	dec_x2(8, x0, x1, w, ldw, kb, acc0, acc1);
}

T static void dec_blk4x2(const float *x0, const float *x1, const uint8_t *w, long ldw, int kb, float *acc0,
                         float *acc1) {
	dec_x2(4, x0, x1, w, ldw, kb, acc0, acc1);
}

// INT4_SHIFT: int4 weights enter both int4 kernels as the exact floats q·2^28 and the
// scales as s·2^-28 (exact: powers of two), so fma(acc, s', out) gives the same value as
// the unscaled algebra while the decode kernel saves its nibble shuffles; decode and
// GEMM use the same scaled values, hence the same bits.
#define INT4_SHIFT 268435456.0f
#define INT4_UNSHIFT (1.0f / 268435456.0f)

// transpose64 writes dst[8·(c % 8) + c / 8] = src[c]·mul for c < 64 (mul a power of
// two, so the products are exact): the int4 decode block's column order (see
// dec_blk4), or back, in 24 shuffles.
T static void transpose64(float *dst, const float *src, float mul) {
	__m256 r[8], t[8];
	UNROLL for (int i = 0; i < 8; i++) r[i] = _mm256_loadu_ps(src + 8 * i);
	UNROLL for (int i = 0; i < 8; i += 2) {
		t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
		t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
	}
	UNROLL for (int i = 0; i < 8; i += 4) {
		r[i] = _mm256_shuffle_ps(t[i], t[i + 2], 0x44);
		r[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], 0xEE);
		r[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0x44);
		r[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0xEE);
	}
	const __m256 m = _mm256_set1_ps(mul);
	UNROLL for (int i = 0; i < 4; i++) {
		_mm256_storeu_ps(dst + 8 * i, _mm256_mul_ps(_mm256_permute2f128_ps(r[i], r[i + 4], 0x20), m));
		_mm256_storeu_ps(dst + 8 * (i + 4), _mm256_mul_ps(_mm256_permute2f128_ps(r[i], r[i + 4], 0x31), m));
	}
}

// out[j] = fma(acc[j], s[j], out[j]) for j < n (vector part, then scalar with fmaf:
// both are correctly rounded, so the split does not change any value).
T static void scale_acc(float *out, const float *acc, const float *s, int n) {
	int j = 0;
	for (; j + 8 <= n; j += 8)
		_mm256_storeu_ps(out + j, _mm256_fmadd_ps(_mm256_loadu_ps(acc + j), _mm256_loadu_ps(s + j), _mm256_loadu_ps(out + j)));
	for (; j < n; j++) out[j] = fmaf(acc[j], s[j], out[j]);
}

// store_panel writes columns [lo, hi) of a 64-column panel starting at column cb
// from out (64 floats; int4: in the decode kernel's transposed order, undone here
// through tmp) to y, whose first column is c0.
T static void store_panel(int bits, const float *out, int cb, int lo, int hi, int c0, float *y, float *tmp) {
	if (bits == 4) {
		transpose64(tmp, out, 1.0f); // a transpose is its own inverse
		out = tmp;
	}
	memcpy(y + lo - c0, out + lo - cb, sizeof(float) * (size_t)(hi - lo));
}

// PAIR: q_decode walks two panels side by side, alternating between them every block
// of KB rows: two sequential streams per thread read memory 10–25 % faster than one
// on the development VM (KERNELS.md, "Round of 2026-11-27 (fourth session)").
#define PAIR 2

// q_decode reads each panel of [c0, c1) once for up to DSG_DECODE_ROWS rows of x, down
// rows [k0, k1) in blocks of KB, PAIR panels at a time: one sequential stream per
// panel. Accumulators (acc), results (out) and the permuted int4 scales (sperm) are 64
// columns per row of x and panel, in scratch, and stay in L1; each block of KB weight
// rows (4 KiB for int8) is read from memory once and from L1 by every further pair of
// rows of x. Each panel's arithmetic is that of a walk of the panel alone.
T static void q_decode(const float *x, long ldx, int M, const uint8_t *q, int bits, int K, const float *scale,
                       long ldsc, int G, int k0, int k1, int c0, int c1, float *y, long ldy, float *scratch, int nh,
                       long xhs) {
	int pb = bits == 8 ? 64 : 32;
	long pm = 64L * M; // floats per panel of acc and out
	float *acc = scratch, *out = scratch + PAIR * pm, *sperm = scratch + 2 * PAIR * pm;
	for (int cp = c0 & ~63; cp < c1; cp += 64 * PAIR) {
		int np = (c1 - cp + 63) / 64 < PAIR ? (c1 - cp + 63) / 64 : PAIR;
		memset(out, 0, sizeof(float) * (size_t)(np * pm));
		for (int g0 = k0; g0 < k1;) {
			int g1 = (g0 / G + 1) * G;
			if (g1 > k1) g1 = k1;
			memset(acc, 0, sizeof(float) * (size_t)(np * pm));
			for (int kk = g0; kk < g1; kk += KB) {
				int kb = g1 - kk < KB ? g1 - kk : KB;
				for (int p = 0; p < np; p++) {
					int cb = cp + 64 * p;
					const uint8_t *wp = q + ((long)(cb / 64) * K + kk) * pb;
					const float *xb = (nh ? x + (long)(cb / nh) * xhs : x) + kk;
					float *a = acc + p * pm;
					int m = 0;
					for (; m + 1 < M; m += 2)
						(bits == 8 ? dec_blk8x2 : dec_blk4x2)(xb + m * ldx, xb + (m + 1) * ldx, wp, pb, kb, a + 64L * m,
						                                      a + 64L * (m + 1));
					for (; m < M; m++) (bits == 8 ? dec_blk8 : dec_blk4)(xb + m * ldx, wp, pb, kb, a + 64L * m);
				}
			}
			for (int p = 0; p < np; p++) {
				const float *sg = scale + (long)(g0 / G) * ldsc + cp + 64 * p;
				if (bits == 4) {
					transpose64(sperm, sg, INT4_UNSHIFT);
					sg = sperm;
				}
				for (int m = 0; m < M; m++) scale_acc(out + p * pm + 64L * m, acc + p * pm + 64L * m, sg, 64);
			}
			g0 = g1;
		}
		for (int p = 0; p < np; p++) {
			int cb = cp + 64 * p, lo = cb < c0 ? c0 : cb, hi = cb + 64 < c1 ? cb + 64 : c1;
			for (int m = 0; m < M; m++) store_panel(bits, out + p * pm + 64L * m, cb, lo, hi, c0, y + m * ldy, sperm);
		}
	}
}

// micro: R rows x 16 columns of the dequantized chunk wb (kc rows of 64 floats).
// acc (row stride 64) is loaded unless first; at the end it is either stored, or (last
// chunk of a group) folded into out (row stride 64) with the group's scales s.
T static AI void micro(int R, const float *x, long ldx, const float *wb, int kc, float *acc, int first, int last,
                       float *out, const float *s) {
	__m256 a[6][2];
	UNROLL for (int r = 0; r < R; r++) {
		if (first) {
			a[r][0] = _mm256_setzero_ps();
			a[r][1] = _mm256_setzero_ps();
		} else {
			a[r][0] = _mm256_loadu_ps(acc + r * 64);
			a[r][1] = _mm256_loadu_ps(acc + r * 64 + 8);
		}
	}
	for (int k = 0; k < kc; k++) {
		__m256 w0 = _mm256_load_ps(wb + k * 64), w1 = _mm256_load_ps(wb + k * 64 + 8);
		UNROLL for (int r = 0; r < R; r++) {
			__m256 xv = _mm256_broadcast_ss(x + r * ldx + k);
			a[r][0] = _mm256_fmadd_ps(xv, w0, a[r][0]);
			a[r][1] = _mm256_fmadd_ps(xv, w1, a[r][1]);
		}
	}
	if (last) {
		__m256 s0 = _mm256_loadu_ps(s), s1 = _mm256_loadu_ps(s + 8);
		UNROLL for (int r = 0; r < R; r++) {
			_mm256_storeu_ps(out + r * 64, _mm256_fmadd_ps(a[r][0], s0, _mm256_loadu_ps(out + r * 64)));
			_mm256_storeu_ps(out + r * 64 + 8, _mm256_fmadd_ps(a[r][1], s1, _mm256_loadu_ps(out + r * 64 + 8)));
		}
	} else {
		UNROLL for (int r = 0; r < R; r++) {
			_mm256_storeu_ps(acc + r * 64, a[r][0]);
			_mm256_storeu_ps(acc + r * 64 + 8, a[r][1]);
		}
	}
}

T static void micro_n(int R, const float *x, long ldx, const float *wb, int kc, float *acc, int first, int last,
                      float *out, const float *s) {
	switch (R) {
	case 6: micro(6, x, ldx, wb, kc, acc, first, last, out, s); break;
	case 5: micro(5, x, ldx, wb, kc, acc, first, last, out, s); break;
	case 4: micro(4, x, ldx, wb, kc, acc, first, last, out, s); break;
	case 3: micro(3, x, ldx, wb, kc, acc, first, last, out, s); break;
	case 2: micro(2, x, ldx, wb, kc, acc, first, last, out, s); break;
	default: micro(1, x, ldx, wb, kc, acc, first, last, out, s); break;
	}
}

// q_gemm: per panel, per group, per chunk of KC rows: dequantize the chunk once into
// wbuf, then run every row tile of 6 over it.
T static void q_gemm(const float *x, long ldx, int M, const uint8_t *q, int bits, int K, const float *scale, long ldsc,
                     int G, int k0, int k1, int c0, int c1, float *y, long ldy, float *scratch, int nh, long xhs) {
	float wbuf[KC * 64] __attribute__((aligned(32)));
	float spad[64] __attribute__((aligned(32)));
	int pb = bits == 8 ? 64 : 32;
	float *accb = scratch, *outb = scratch + 64L * M;
	for (int cb = c0 & ~63; cb < c1; cb += 64) {
		const uint8_t *pan = q + (long)(cb / 64) * K * pb;
		const float *xb = nh ? x + (long)(cb / nh) * xhs : x;
		memset(outb, 0, sizeof(float) * 64 * (size_t)M);
		for (int g0 = k0; g0 < k1;) {
			int g1 = (g0 / G + 1) * G;
			if (g1 > k1) g1 = k1;
			const float *sg = scale + (long)(g0 / G) * ldsc + cb;
			for (int j = 0; j < 64; j++) spad[j] = bits == 4 ? sg[j] * INT4_UNSHIFT : sg[j];
			for (int kc0 = g0; kc0 < g1; kc0 += KC) {
				int kc = g1 - kc0 < KC ? g1 - kc0 : KC;
				for (int k = 0; k < kc; k++) {
					const uint8_t *src = pan + (long)(kc0 + k) * pb;
					__m256 wv[8];
					if (bits == 8) {
						ld64_i8(src, wv);
					} else {
						ld64_i4(src, wv);
						UNROLL for (int i = 0; i < 8; i++) wv[i] = _mm256_mul_ps(wv[i], _mm256_set1_ps(INT4_SHIFT));
					}
					UNROLL for (int i = 0; i < 8; i++) _mm256_store_ps(wbuf + k * 64 + 8 * i, wv[i]);
				}
				int first = kc0 == g0, last = kc0 + kc == g1;
				// Row tiles of at most 6, balanced (8 rows: 4 + 4) so that every tile
				// has enough independent FMA chains.
				int tiles = (M + 5) / 6;
				for (int t = 0, m0 = 0; t < tiles; t++) {
					int R = (M - m0 + (tiles - t) - 1) / (tiles - t);
					for (int cs = 0; cs < 64; cs += 16)
						micro_n(R, xb + m0 * ldx + kc0, ldx, wbuf + cs, kc, accb + 64L * m0 + cs, first, last,
						        outb + 64L * m0 + cs, spad + cs);
					m0 += R;
				}
			}
			g0 = g1;
		}
		int lo = cb < c0 ? c0 : cb, hi = cb + 64 < c1 ? cb + 64 : c1;
		for (int m = 0; m < M; m++) memcpy(y + m * ldy + lo - c0, outb + 64L * m + lo - cb, sizeof(float) * (size_t)(hi - lo));
	}
}

void dsg_qlinear_avx2(const float *x, long ldx, int M, const void *q, int bits, int K, const float *scale, long ldsc,
                      int G, int k0, int k1, int c0, int c1, float *y, long ldy, float *scratch, int nh, long xhs) {
	if (M <= DSG_DECODE_ROWS)
		q_decode(x, ldx, M, (const uint8_t *)q, bits, K, scale, ldsc, G, k0, k1, c0, c1, y, ldy, scratch, nh, xhs);
	else
		q_gemm(x, ldx, M, (const uint8_t *)q, bits, K, scale, ldsc, G, k0, k1, c0, c1, y, ldy, scratch, nh, xhs);
}

// ld8 loads 8 weights of a dense row as floats.
T static AI __m256 ld8(const void *w, long i, int bits) {
	if (bits == 32) return _mm256_loadu_ps((const float *)w + i);
	__m128i h = _mm_loadu_si128((const __m128i *)((const uint16_t *)w + i));
	return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

T static AI float wat(const void *w, long i, int bits) {
	if (bits == 32) return ((const float *)w)[i];
	union { uint32_t u; float f; } v;
	v.u = (uint32_t)((const uint16_t *)w)[i] << 16;
	return v.f;
}

// hsum8 reduces the lanes in order: ((l0 + l1) + l2) + ... + l7.
T static AI float hsum8(__m256 v) {
	float l[8];
	_mm256_storeu_ps(l, v);
	float s = l[0];
	for (int i = 1; i < 8; i++) s += l[i];
	return s;
}

// dtile: R rows of x times NR rows of W (dense); per element: 8 lane accumulators
// over k < K8, lane-order reduction, plus an fma chain over the tail.
T static AI void dtile(int R, int NR, const float *x, long ldx, int K, const void *w, int bits, long n, float *y,
                       long ldy) {
	__m256 a[2][4];
	UNROLL for (int r = 0; r < R; r++)
		UNROLL for (int c = 0; c < NR; c++) a[r][c] = _mm256_setzero_ps();
	int K8 = K & ~7;
	for (int k = 0; k < K8; k += 8) {
		__m256 xv[2];
		UNROLL for (int r = 0; r < R; r++) xv[r] = _mm256_loadu_ps(x + r * ldx + k);
		UNROLL for (int c = 0; c < NR; c++) {
			__m256 wv = ld8(w, (n + c) * (long)K + k, bits);
			UNROLL for (int r = 0; r < R; r++) a[r][c] = _mm256_fmadd_ps(xv[r], wv, a[r][c]);
		}
	}
	UNROLL for (int r = 0; r < R; r++)
		UNROLL for (int c = 0; c < NR; c++) {
			float t = 0;
			for (int k = K8; k < K; k++) t = fmaf(x[r * ldx + k], wat(w, (n + c) * (long)K + k, bits), t);
			y[r * ldy + c] = hsum8(a[r][c]) + t;
		}
}

T static void dtile_n(int R, int NR, const float *x, long ldx, int K, const void *w, int bits, long n, float *y,
                      long ldy) {
	if (R == 2) {
		switch (NR) {
		case 4: dtile(2, 4, x, ldx, K, w, bits, n, y, ldy); return;
		case 3: dtile(2, 3, x, ldx, K, w, bits, n, y, ldy); return;
		case 2: dtile(2, 2, x, ldx, K, w, bits, n, y, ldy); return;
		default: dtile(2, 1, x, ldx, K, w, bits, n, y, ldy); return;
		}
	}
	switch (NR) {
	case 4: dtile(1, 4, x, ldx, K, w, bits, n, y, ldy); return;
	case 3: dtile(1, 3, x, ldx, K, w, bits, n, y, ldy); return;
	case 2: dtile(1, 2, x, ldx, K, w, bits, n, y, ldy); return;
	default: dtile(1, 1, x, ldx, K, w, bits, n, y, ldy); return;
	}
}

// DPF: how far ahead dsg_dlinear_avx2 prefetches the weight rows of a tile whose rows
// are at most DPF_ROW bytes. At one row of x over 33.5 MB of W_UKᵀ (one thread) the
// kernel read 0.38–0.46 of the streaming bandwidth without it and 0.66–0.87 with it.
#define DPF 4096
#define DPF_ROW 2048

void dsg_dlinear_avx2(const float *x, long ldx, int M, int K, const void *w, int bits, int n0, int n1, float *y,
                      long ldy) {
	// Rows of x in chunks of 32 (kept in L2) against every 4-row tile of W.
	for (int mc = 0; mc < M; mc += 32) {
		int me = mc + 32 < M ? mc + 32 : M;
		for (int n = n0; n < n1; n += 4) {
			int NR = n1 - n < 4 ? n1 - n : 4;
			// Short rows (a HeadLinear head's W_UKᵀ: 128 floats) end each tile before
			// the hardware prefetcher ramps up: prefetch the tiles DPF bytes ahead
			// (the rows are contiguous), once per tile and chunk of rows of x.
			if ((long)K * (bits / 8) <= DPF_ROW) {
				const char *pf = (const char *)w + (long)n * K * (bits / 8) + DPF;
				for (long l = 0; l < (long)NR * K * (bits / 8); l += 64) _mm_prefetch(pf + l, _MM_HINT_T0);
			}
			for (int m = mc; m < me; m += 2) {
				int R = me - m < 2 ? me - m : 2;
				dtile_n(R, NR, x + m * ldx, ldx, K, w, bits, n, y + m * ldy + (n - n0), ldy);
			}
		}
	}
}

// hsum_vecs returns, in lane j < n, the sum of the lanes of v[j], for n = 4 or 8
// vectors (a tree of horizontal adds: pairs of lanes, then pairs of pairs, then the
// two 128-bit halves).
T static AI __m256 hsum_vecs(int n, const __m256 *v) {
	__m256 s01 = _mm256_hadd_ps(v[0], v[1]), s23 = _mm256_hadd_ps(v[2], v[3]);
	__m256 s0123 = _mm256_hadd_ps(s01, s23); // lanes: v0..v3 low halves, then high halves
	if (n == 4) return _mm256_add_ps(s0123, _mm256_permute2f128_ps(s0123, s0123, 0x01));
	__m256 s45 = _mm256_hadd_ps(v[4], v[5]), s67 = _mm256_hadd_ps(v[6], v[7]);
	__m256 s4567 = _mm256_hadd_ps(s45, s67);
	return _mm256_add_ps(_mm256_permute2f128_ps(s0123, s4567, 0x20), _mm256_permute2f128_ps(s0123, s4567, 0x31));
}

// mla_scores writes sc[h·nt + t] = (qa[h] · c_t + qp[h] · k_t) · scale for nh (1 to 4)
// heads and the J (1 or 2) positions t0 … t0+J-1, whose cached rows are rows[0..J):
// one 8-lane fma chain per (head, position) over the latent then the rope columns,
// nh·J independent chains, lanes summed by the same tree whatever nh and J (so a
// score does not depend on how heads and positions are grouped), plus scalar fma
// chains over the columns past a multiple of 8. Four heads share each load of a
// cached row, which comes from L2: two rows per eight FMAs.
T static AI void mla_scores(int nh, int J, const float *const *qa, const float *const *qp, const float *const *rows,
                            int lc, int r, float scale, float *sc, int nt, int t0) {
	__m256 acc[8];
	UNROLL for (int i = 0; i < 8; i++) acc[i] = _mm256_setzero_ps();
	int d = 0;
	for (; d + 8 <= lc; d += 8) {
		__m256 v[2];
		UNROLL for (int j = 0; j < J; j++) v[j] = _mm256_loadu_ps(rows[j] + d);
		UNROLL for (int h = 0; h < nh; h++) {
			__m256 q = _mm256_loadu_ps(qa[h] + d);
			UNROLL for (int j = 0; j < J; j++) acc[2 * h + j] = _mm256_fmadd_ps(q, v[j], acc[2 * h + j]);
		}
	}
	int e = 0;
	for (; e + 8 <= r; e += 8) {
		__m256 v[2];
		UNROLL for (int j = 0; j < J; j++) v[j] = _mm256_loadu_ps(rows[j] + lc + e);
		UNROLL for (int h = 0; h < nh; h++) {
			__m256 q = _mm256_loadu_ps(qp[h] + e);
			UNROLL for (int j = 0; j < J; j++) acc[2 * h + j] = _mm256_fmadd_ps(q, v[j], acc[2 * h + j]);
		}
	}
	float sum[8];
	_mm256_storeu_ps(sum, hsum_vecs(8, acc));
	for (int h = 0; h < nh; h++)
		for (int j = 0; j < J; j++) {
			float t = 0;
			for (int c = d; c < lc; c++) t = fmaf(qa[h][c], rows[j][c], t);
			for (int c = e; c < r; c++) t = fmaf(qp[h][c], rows[j][lc + c], t);
			sc[h * nt + t0 + j] = (sum[2 * h + j] + t) * scale;
		}
}

// mla_scores_n dispatches mla_scores with nh and J as constants.
T static void mla_scores_n(int nh, int J, const float *const *qa, const float *const *qp, const float *const *rows,
                           int lc, int r, float scale, float *sc, int nt, int t0) {
#define MLA_S(H, JJ) mla_scores(H, JJ, qa, qp, rows, lc, r, scale, sc, nt, t0)
	if (J == 2) {
		switch (nh) {
		case 4: MLA_S(4, 2); return;
		case 3: MLA_S(3, 2); return;
		case 2: MLA_S(2, 2); return;
		default: MLA_S(1, 2); return;
		}
	}
	switch (nh) {
	case 4: MLA_S(4, 1); return;
	case 3: MLA_S(3, 1); return;
	case 2: MLA_S(2, 1); return;
	default: MLA_S(1, 1); return;
	}
#undef MLA_S
}

// mla_out: o_h[j] = fma chain over t < n of p_h[t] · row_t[j] (p_h at p + h·ldp) for nh
// (1 to 4) heads at a time, continuing the chains held in o when !first (the blocks
// of MLA_TB rows continue one chain): register accumulators over 16 latent columns,
// so each cached row segment is read once for all the heads; scalar chains for the
// tail.
T static AI void mla_out_n(int nh, const float *p, long ldp, int n, const float *cache, long width,
                           const int32_t *slots, int lc, float **o, int first) {
	int d0 = 0;
	for (; d0 + 16 <= lc; d0 += 16) {
		__m256 a[4][2];
		UNROLL for (int h = 0; h < 4; h++)
			UNROLL for (int c = 0; c < 2; c++)
				a[h][c] = h < nh && !first ? _mm256_loadu_ps(o[h] + d0 + 8 * c) : _mm256_setzero_ps();
		for (int t = 0; t < n; t++) {
			const float *row = cache + (long)slots[t] * width + d0;
			__m256 v0 = _mm256_loadu_ps(row), v1 = _mm256_loadu_ps(row + 8);
			UNROLL for (int h = 0; h < 4; h++) {
				if (h < nh) {
					__m256 w = _mm256_broadcast_ss(p + h * ldp + t);
					a[h][0] = _mm256_fmadd_ps(w, v0, a[h][0]);
					a[h][1] = _mm256_fmadd_ps(w, v1, a[h][1]);
				}
			}
		}
		UNROLL for (int h = 0; h < 4; h++)
			if (h < nh)
				UNROLL for (int c = 0; c < 2; c++) _mm256_storeu_ps(o[h] + d0 + 8 * c, a[h][c]);
	}
	for (int h = 0; h < nh; h++)
		for (int j = d0; j < lc; j++) {
			float acc = first ? 0 : o[h][j];
			for (int t = 0; t < n; t++) acc = fmaf(p[h * ldp + t], cache[(long)slots[t] * width + j], acc);
			o[h][j] = acc;
		}
}

T static void mla_out(int nh, const float *p, long ldp, int n, const float *cache, long width, const int32_t *slots,
                      int lc, float **o, int first) {
	switch (nh) {
	case 4: mla_out_n(4, p, ldp, n, cache, width, slots, lc, o, first); return;
	case 3: mla_out_n(3, p, ldp, n, cache, width, slots, lc, o, first); return;
	case 2: mla_out_n(2, p, ldp, n, cache, width, slots, lc, o, first); return;
	default: mla_out_n(1, p, ldp, n, cache, width, slots, lc, o, first); return;
	}
}

// MLA_TB: cached rows per block: 64 rows of DeepSeek-V3's 576 floats are 144 KiB,
// which stay in L2 while every head of a chunk of DSG_MLA_HEADS reads them (before
// blocks, each pair of heads read the whole sequence's rows: from L3 or memory once
// they outgrow L2, at about 900 positions).
#define MLA_TB 64

T void dsg_mla_avx2(const float *qa, long ldqa, const float *qp, long ldqp, int M, int pos0, int h0, int h1, int lc,
                  int r, const float *cache, long width, const int32_t *slots, float scale, float *out, long ldo,
                  float *sc) {
	for (int i = 0; i < M; i++) {
		int nt = pos0 + i + 1;
		for (int hc = h0; hc < h1; hc += DSG_MLA_HEADS) {
			int nc = h1 - hc < DSG_MLA_HEADS ? h1 - hc : DSG_MLA_HEADS;
			// Scores of the chunk's heads, block by block of cached rows.
			for (int tb = 0; tb < nt; tb += MLA_TB) {
				int te = nt - tb < MLA_TB ? nt : tb + MLA_TB;
				for (int hb = hc; hb < hc + nc; hb += 4) {
					int nh = hc + nc - hb < 4 ? hc + nc - hb : 4;
					const float *qa4[4], *qp4[4];
					for (int h = 0; h < nh; h++) {
						qa4[h] = qa + (long)i * ldqa + (long)(hb + h) * lc;
						qp4[h] = qp + (long)i * ldqp + (long)(hb + h) * r;
					}
					float *scb = sc + (long)(hb - hc) * nt;
					for (int t = tb; t < te; t += 2) {
						const float *rows[2];
						int J = te - t < 2 ? 1 : 2;
						for (int j = 0; j < J; j++) rows[j] = cache + (long)slots[t + j] * width;
						mla_scores_n(nh, J, qa4, qp4, rows, lc, r, scale, scb, nt, t);
					}
				}
			}
			for (int h = 0; h < nc; h++) {
				float *s = sc + (long)h * nt, mx = -INFINITY, sum = 0;
				for (int t = 0; t < nt; t++)
					if (s[t] > mx) mx = s[t];
				for (int t = 0; t < nt; t++) {
					s[t] = expf(s[t] - mx);
					sum += s[t];
				}
				float inv = 1.0f / sum;
				for (int t = 0; t < nt; t++) s[t] *= inv;
			}
			// Outputs, block by block of cached rows, four heads at a time.
			for (int tb = 0; tb < nt; tb += MLA_TB) {
				int n = nt - tb < MLA_TB ? nt - tb : MLA_TB;
				for (int hq = 0; hq < nc; hq += 4) {
					int nq = nc - hq < 4 ? nc - hq : 4;
					float *o[4];
					for (int h = 0; h < nq; h++) o[h] = out + (long)i * ldo + (long)(hc + hq + h) * lc;
					mla_out(nq, sc + (long)hq * nt + tb, nt, n, cache, width, slots + tb, lc, o, tb == 0);
				}
			}
		}
	}
}

// exp8 is e^x in 8 lanes (Cephes expf: x = n·ln2 + r, a degree-5 polynomial in r,
// then 2^n through the exponent bits), within 2 ulp of the correctly rounded value for
// x in [-87, 87]; x is clamped to that range first, so the result is never 0, a
// denormal or infinite (a NaN becomes a bound).
T static AI __m256 exp8(__m256 x) {
	x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.0f)), _mm256_set1_ps(87.0f));
	__m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
	                           _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
	__m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
	r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
	__m256 p = _mm256_set1_ps(1.9875691500e-4f);
	p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
	p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
	p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
	p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
	p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
	p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
	__m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
	return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

T static void swiglu_avx2(const float *x, long ldx, int M, int m, float *out, long ldo) {
	const __m256 one = _mm256_set1_ps(1.0f), sign = _mm256_set1_ps(-0.0f);
	for (int i = 0; i < M; i++) {
		const float *g = x + i * ldx, *u = g + m;
		float *o = out + i * ldo;
		int j = 0;
		for (; j + 8 <= m; j += 8) {
			__m256 gv = _mm256_loadu_ps(g + j);
			__m256 s = _mm256_div_ps(gv, _mm256_add_ps(one, exp8(_mm256_xor_ps(gv, sign))));
			_mm256_storeu_ps(o + j, _mm256_mul_ps(s, _mm256_loadu_ps(u + j)));
		}
		if (j < m) { // the tail through a padded copy, with the same lane arithmetic
			float gt[8] = {0}, ut[8] = {0}, ot[8];
			memcpy(gt, g + j, sizeof(float) * (size_t)(m - j));
			memcpy(ut, u + j, sizeof(float) * (size_t)(m - j));
			__m256 gv = _mm256_loadu_ps(gt);
			__m256 s = _mm256_div_ps(gv, _mm256_add_ps(one, exp8(_mm256_xor_ps(gv, sign))));
			_mm256_storeu_ps(ot, _mm256_mul_ps(s, _mm256_loadu_ps(ut)));
			memcpy(o + j, ot, sizeof(float) * (size_t)(m - j));
		}
	}
}

// stream_avx2 reads p as four sequential streams (its quarters) side by side: one
// stream per thread reads 15–25 % slower than two or four on the development VM
// (BENCHMARKS.md, "Measuring bw_ratio"), and the probe must be the fastest plain read.
T static float stream_avx2(const float *p, long n) {
	__m256 a[8];
	UNROLL for (int j = 0; j < 8; j++) a[j] = _mm256_setzero_ps();
	long q = n / 4 & ~63L;
	for (long i = 0; i < q; i += 64)
		UNROLL for (int s = 0; s < 4; s++)
			UNROLL for (int j = 0; j < 8; j++) a[j] = _mm256_add_ps(a[j], _mm256_load_ps(p + s * q + i + 8 * j));
	for (long i = 4 * q; i < n; i += 64)
		UNROLL for (int j = 0; j < 8; j++) a[j] = _mm256_add_ps(a[j], _mm256_load_ps(p + i + 8 * j));
	return hsum8(hsum_vecs(8, a));
}

T static float peak_avx2(long iters) {
	__m256 m = _mm256_set1_ps(0.999999f), c = _mm256_set1_ps(1e-7f);
	__m256 a0 = _mm256_set1_ps(0), a1 = _mm256_set1_ps(1), a2 = _mm256_set1_ps(2), a3 = _mm256_set1_ps(3);
	__m256 a4 = _mm256_set1_ps(4), a5 = _mm256_set1_ps(5), a6 = _mm256_set1_ps(6), a7 = _mm256_set1_ps(7);
	__m256 a8 = _mm256_set1_ps(8), a9 = _mm256_set1_ps(9), a10 = _mm256_set1_ps(10), a11 = _mm256_set1_ps(11);
	for (long it = 0; it < iters; it++) {
		a0 = _mm256_fmadd_ps(a0, m, c); a1 = _mm256_fmadd_ps(a1, m, c); a2 = _mm256_fmadd_ps(a2, m, c);
		a3 = _mm256_fmadd_ps(a3, m, c); a4 = _mm256_fmadd_ps(a4, m, c); a5 = _mm256_fmadd_ps(a5, m, c);
		a6 = _mm256_fmadd_ps(a6, m, c); a7 = _mm256_fmadd_ps(a7, m, c); a8 = _mm256_fmadd_ps(a8, m, c);
		a9 = _mm256_fmadd_ps(a9, m, c); a10 = _mm256_fmadd_ps(a10, m, c); a11 = _mm256_fmadd_ps(a11, m, c);
	}
	__m256 s = _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)),
	                         _mm256_add_ps(_mm256_add_ps(a4, a5), _mm256_add_ps(a6, a7)));
	s = _mm256_add_ps(s, _mm256_add_ps(_mm256_add_ps(a8, a9), _mm256_add_ps(a10, a11)));
	return hsum8(s);
}

void dsg_swiglu_avx2(const float *x, long ldx, int M, int m, float *out, long ldo) {
	swiglu_avx2(x, ldx, M, m, out, ldo);
}
#else
void dsg_qlinear_avx2(const float *x, long ldx, int M, const void *q, int bits, int K, const float *scale, long ldsc,
                      int G, int k0, int k1, int c0, int c1, float *y, long ldy, float *scratch, int nh, long xhs) {
	(void)nh; (void)xhs; (void)x; (void)ldx; (void)M; (void)k0; (void)k1; (void)q; (void)bits; (void)K; (void)scale; (void)ldsc; (void)G;
	(void)c0; (void)c1; (void)y; (void)ldy; (void)scratch;
}
void dsg_mla_avx2(const float *qa, long ldqa, const float *qp, long ldqp, int M, int pos0, int h0, int h1, int lc,
                  int r, const float *cache, long width, const int32_t *slots, float scale, float *out, long ldo,
                  float *sc) {
	(void)qa; (void)ldqa; (void)qp; (void)ldqp; (void)M; (void)pos0; (void)h0; (void)h1; (void)lc; (void)r;
	(void)cache; (void)width; (void)slots; (void)scale; (void)out; (void)ldo; (void)sc;
}
void dsg_swiglu_avx2(const float *x, long ldx, int M, int m, float *out, long ldo) {
	(void)x; (void)ldx; (void)M; (void)m; (void)out; (void)ldo;
}
void dsg_dlinear_avx2(const float *x, long ldx, int M, int K, const void *w, int bits, int n0, int n1, float *y,
                      long ldy) {
	(void)x; (void)ldx; (void)M; (void)K; (void)w; (void)bits; (void)n0; (void)n1; (void)y; (void)ldy;
}
#endif

float dsg_stream_read(const float *p, long n, int isa) {
#ifdef DSG_X86
	if (isa >= DSG_ISA_AVX2) return stream_avx2(p, n);
#endif
	(void)isa;
	float s[8] = {0};
	for (long i = 0; i < n; i += 8)
		for (int j = 0; j < 8; j++) s[j] += p[i + j];
	return s[0] + s[1] + s[2] + s[3] + s[4] + s[5] + s[6] + s[7];
}

float dsg_peak_fma(long iters, int isa) {
#ifdef DSG_X86
	if (isa >= DSG_ISA_AVX2) return peak_avx2(iters);
#endif
	(void)isa;
	float a[12][8];
	for (int i = 0; i < 12; i++)
		for (int j = 0; j < 8; j++) a[i][j] = (float)i;
	for (long it = 0; it < iters; it++)
		for (int i = 0; i < 12; i++)
			for (int j = 0; j < 8; j++) a[i][j] = a[i][j] * 0.999999f + 1e-7f;
	float s = 0;
	for (int i = 0; i < 12; i++)
		for (int j = 0; j < 8; j++) s += a[i][j];
	return s;
}
