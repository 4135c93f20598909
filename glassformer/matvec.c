/* One row times a float32 weight matrix: y = W x + b, W (out, in) row-major, as nn.Linear
 * stores it. glassformer/matvec.py compiles this on first use and calls it through ctypes for
 * the one-token decode step, where every matmul is one row against a matrix that comes from
 * memory, so its time is the time to stream W.
 *
 * Why by hand: on a 2-core Zen 4 (AVX-512, 32 MB L3), torch 2.13's F.linear at one row read the
 * 43 MB of a 6-layer d384 GPT's weights (25 matrices, each once, in a decode step's order) at
 * 8.7-10 GB/s; this reads them at 26-36 GB/s, as fast as torch's amax scans the same bytes
 * (24-36 GB/s; the shared machine's figures vary by that much from run to run).
 *
 * How: the rows are split statically across the OpenMP threads (the libgomp pool torch uses,
 * with torch's thread count passed in, so the cores are never oversubscribed); each thread walks
 * its rows in memory order, one row at a time, with four independent sums along the row. Measured
 * against the alternatives: four rows at a time (x loaded once for four rows) streamed at 23-25
 * GB/s, and software prefetches 512 B to 4 KB ahead slowed both (the hardware prefetcher follows
 * one sequential stream per thread best). Under 64K weights (256 KB) one thread does it all.
 */
#include <omp.h>
#include <stddef.h>
#if defined(__AVX512F__) || defined(__AVX2__)
#include <immintrin.h>
#endif

/* W[r,:] . x for one row of `in` floats */
static inline float dot(const float *restrict w, const float *restrict x, long in) {
    long i = 0;
    float s = 0.f;
#if defined(__AVX512F__)
    __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    for (; i + 64 <= in; i += 64) {
        a0 = _mm512_fmadd_ps(_mm512_loadu_ps(w + i), _mm512_loadu_ps(x + i), a0);
        a1 = _mm512_fmadd_ps(_mm512_loadu_ps(w + i + 16), _mm512_loadu_ps(x + i + 16), a1);
        a2 = _mm512_fmadd_ps(_mm512_loadu_ps(w + i + 32), _mm512_loadu_ps(x + i + 32), a2);
        a3 = _mm512_fmadd_ps(_mm512_loadu_ps(w + i + 48), _mm512_loadu_ps(x + i + 48), a3);
    }
    for (; i + 16 <= in; i += 16)
        a0 = _mm512_fmadd_ps(_mm512_loadu_ps(w + i), _mm512_loadu_ps(x + i), a0);
    if (i < in) { /* the last 1-15 columns: a masked load reads nothing past the row */
        const __mmask16 tail = (__mmask16)((1u << (in - i)) - 1u);
        a1 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(tail, w + i), _mm512_maskz_loadu_ps(tail, x + i), a1);
        i = in;
    }
    s = _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
#elif defined(__AVX2__)
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    for (; i + 32 <= in; i += 32) {
        a0 = _mm256_fmadd_ps(_mm256_loadu_ps(w + i), _mm256_loadu_ps(x + i), a0);
        a1 = _mm256_fmadd_ps(_mm256_loadu_ps(w + i + 8), _mm256_loadu_ps(x + i + 8), a1);
        a2 = _mm256_fmadd_ps(_mm256_loadu_ps(w + i + 16), _mm256_loadu_ps(x + i + 16), a2);
        a3 = _mm256_fmadd_ps(_mm256_loadu_ps(w + i + 24), _mm256_loadu_ps(x + i + 24), a3);
    }
    __m256 v = _mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3));
    __m128 h = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    h = _mm_add_ps(h, _mm_movehl_ps(h, h));
    s = _mm_cvtss_f32(_mm_add_ss(h, _mm_movehdup_ps(h)));
#endif
    float t = 0.f; /* what the vectors left (every column without AVX) */
#pragma omp simd reduction(+ : t)
    for (long j = i; j < in; j++) t += w[j] * x[j];
    return s + t;
}

static void rows_f32(const float *W, const float *x, const float *b, float *y, long r0, long r1, long in) {
    for (long r = r0; r < r1; r++) y[r] = dot(W + r * in, x, in) + (b ? b[r] : 0.f);
}

/* y (out) = W (out, in) x (in) + b (out, or NULL), on up to `threads` OpenMP threads. */
void glassformer_matvec_f32(const float *W, const float *x, const float *b, float *y, long out, long in,
                            int threads) {
    if (threads <= 1 || out * in < 65536 || out < 2) {
        rows_f32(W, x, b, y, 0, out, in);
        return;
    }
#pragma omp parallel num_threads(threads)
    {
        const long n = omp_get_num_threads(), t = omp_get_thread_num();
        rows_f32(W, x, b, y, out * t / n, out * (t + 1) / n, in); /* a contiguous share of the rows each */
    }
}
