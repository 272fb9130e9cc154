#include "kernels.h"
#include <math.h>
#include <string.h>

// Runtime dispatch: GCC builds one clone per target and picks one at load time (ifunc).
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define DSG_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define DSG_CLONES
#endif

#define LANES 16

static inline float bf16f(uint16_t b) {
	union { uint32_t u; float f; } v;
	v.u = (uint32_t)b << 16;
	return v.f;
}

// Fixed-order reduction: 16 lane accumulators, summed in lane order, then the tail.
static inline float dot_f32(const float *x, const float *w, int K) {
	float acc[LANES] = {0};
	int k = 0;
	for (; k + LANES <= K; k += LANES)
		for (int j = 0; j < LANES; j++) acc[j] += x[k + j] * w[k + j];
	float s = 0, tail = 0;
	for (; k < K; k++) tail += x[k] * w[k];
	for (int j = 0; j < LANES; j++) s += acc[j];
	return s + tail;
}

static inline float dot_bf16(const float *x, const uint16_t *w, int K) {
	float acc[LANES] = {0};
	int k = 0;
	for (; k + LANES <= K; k += LANES)
		for (int j = 0; j < LANES; j++) acc[j] += x[k + j] * bf16f(w[k + j]);
	float s = 0, tail = 0;
	for (; k < K; k++) tail += x[k] * bf16f(w[k]);
	for (int j = 0; j < LANES; j++) s += acc[j];
	return s + tail;
}

DSG_CLONES
void dsg_linear_f32(const float *x, int ldx, int M, int K, const float *w, int n0, int n1, float *y, int ldy) {
	for (int n = n0; n < n1; n++) {
		const float *wr = w + (long)n * K;
		for (int m = 0; m < M; m++) y[(long)m * ldy + (n - n0)] = dot_f32(x + (long)m * ldx, wr, K);
	}
}

DSG_CLONES
void dsg_linear_bf16(const float *x, int ldx, int M, int K, const uint16_t *w, int n0, int n1, float *y, int ldy) {
	for (int n = n0; n < n1; n++) {
		const uint16_t *wr = w + (long)n * K;
		for (int m = 0; m < M; m++) y[(long)m * ldy + (n - n0)] = dot_bf16(x + (long)m * ldx, wr, K);
	}
}

#define NB 64

DSG_CLONES
void dsg_linear_q(const float *x, int ldx, int M, int K, const void *q, int bits, int N, const float *scale, int G,
                  int n0, int n1, float *y, int ldy) {
	float acc[NB], out[NB];
	for (int m = 0; m < M; m++) {
		const float *xr = x + (long)m * ldx;
		for (int nb = n0; nb < n1; nb += NB) {
			int width = n1 - nb < NB ? n1 - nb : NB;
			for (int j = 0; j < NB; j++) out[j] = 0;
			for (int g0 = 0; g0 < K; g0 += G) {
				int g1 = g0 + G < K ? g0 + G : K;
				for (int j = 0; j < NB; j++) acc[j] = 0;
				if (bits == 8) {
					const int8_t *qq = (const int8_t *)q;
					for (int k = g0; k < g1; k++) {
						const int8_t *row = qq + (long)k * N + nb;
						float xk = xr[k];
						for (int j = 0; j < width; j++) acc[j] += xk * (float)row[j];
					}
				} else {
					const uint32_t *qq = (const uint32_t *)q;
					for (int k = g0; k < g1; k++) {
						const uint32_t *row = qq + (long)k * (N / 8) + nb / 8;
						float xk = xr[k];
						for (int j = 0; j < width / 8; j++) {
							uint32_t wd = row[j];
							for (int t = 0; t < 8; t++) {
								int32_t v = (int32_t)(wd << (28 - 4 * t)) >> 28;
								acc[8 * j + t] += xk * (float)v;
							}
						}
					}
				}
				const float *s = scale + (long)(g0 / G) * N + nb;
				for (int j = 0; j < width; j++) out[j] += acc[j] * s[j];
			}
			float *yr = y + (long)m * ldy + (nb - n0);
			for (int j = 0; j < width; j++) yr[j] = out[j];
		}
	}
}

DSG_CLONES
void dsg_mla(const float *qa, int ldqa, const float *qp, int ldqp, int M, int pos0, int h0, int h1, int lc, int r,
             const float *cache, int width, const int32_t *slots, float scale, float *out, int ldo, float *sc) {
	for (int i = 0; i < M; i++) {
		int T = pos0 + i + 1;
		for (int h = h0; h < h1; h++) {
			const float *a = qa + (long)i * ldqa + (long)h * lc;
			const float *p = qp + (long)i * ldqp + (long)h * r;
			float mx = -INFINITY;
			for (int t = 0; t < T; t++) {
				const float *row = cache + (long)slots[t] * width;
				float s = (dot_f32(a, row, lc) + dot_f32(p, row + lc, r)) * scale;
				sc[t] = s;
				if (s > mx) mx = s;
			}
			float sum = 0;
			for (int t = 0; t < T; t++) {
				sc[t] = expf(sc[t] - mx);
				sum += sc[t];
			}
			float inv = 1.0f / sum;
			float *o = out + (long)i * ldo + (long)h * lc;
			for (int j = 0; j < lc; j++) o[j] = 0;
			for (int t = 0; t < T; t++) {
				const float *row = cache + (long)slots[t] * width;
				float pt = sc[t] * inv;
				for (int j = 0; j < lc; j++) o[j] += pt * row[j];
			}
		}
	}
}
