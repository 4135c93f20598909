/* The one-token decode step's kernels: one row times a float32 weight matrix, the same for int8
 * and for bfloat16 weights, one query's attention over the KV cache, and the whole step for one
 * row built from those (the last four after the first).
 *
 * One row times a float32 weight matrix: y = W x + b, W (out, in) row-major, as nn.Linear
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
#include <math.h>
#include <omp.h>
#include <stddef.h>
#include <stdlib.h>
#if defined(__AVX512F__) || defined(__AVX2__)
#include <immintrin.h>
#endif

#if defined(__AVX2__) && !defined(__AVX512F__)
/* the sum of a vector's 8 floats */
static inline float sum8(__m256 v) {
    __m128 h = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    h = _mm_add_ps(h, _mm_movehl_ps(h, h));
    return _mm_cvtss_f32(_mm_add_ss(h, _mm_movehdup_ps(h)));
}
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
    s = sum8(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
#endif
    float t = 0.f; /* what the vectors left (every column without AVX) */
#pragma omp simd reduction(+ : t)
    for (long j = i; j < in; j++) t += w[j] * x[j];
    return s + t;
}

static void rows_f32(const float *W, const float *x, const float *b, float *y, long r0, long r1, long in) {
    for (long r = r0; r < r1; r++) y[r] = dot(W + r * in, x, in) + (b ? b[r] : 0.f);
}

/* The same for int8 weights with one float32 scale per row (glassformer.quant's storage):
 * y = scale * (Q x) + b, each int8 widened to float32 in registers, so that a matrix streams a
 * quarter of float32's bytes. Why by hand: torch's int8-weight kernel (_weight_int8pack_mm, in
 * bfloat16) left a 6/6/384 generation at 2.47 ms per token on a 2-core Zen 4; this one, 1.62.
 *
 * And for bfloat16 weights (quant.Bf16Linear's storage, a checkpoint's own bf16 values):
 * y = W x + b with each weight widened to float32 in registers (its 16 bits become the top half
 * of a float32, exactly), the products and sums in float32, so that a matrix streams half of
 * float32's bytes and the result is float32's matvec of the bf16 weights.
 *
 * Both run one loop, dot_widened, which the compiler specialises for each storage (`kind` is a
 * constant at every call): widen16 / widen8 / widen1 turn 16, 8 or 1 stored weights into float32. */
enum { GF_F32, GF_INT8, GF_BF16 }; /* weight storages (gf_matrix.kind, decode_step.MATRIX_KINDS) */

static inline float widen1(const void *w, long j, int kind) {
    if (kind == GF_INT8) return (float)((const signed char *)w)[j];
    union { unsigned int u; float f; } v = {(unsigned int)((const unsigned short *)w)[j] << 16};
    return v.f;
}

#if defined(__AVX512F__)
static inline __m512 widen16(const void *w, long i, int kind) {
    if (kind == GF_INT8)
        return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)((const signed char *)w + i))));
    return _mm512_castsi512_ps(_mm512_slli_epi32(
        _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)((const unsigned short *)w + i))), 16));
}
#elif defined(__AVX2__)
static inline __m256 widen8(const void *w, long i, int kind) {
    if (kind == GF_INT8)
        return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)((const signed char *)w + i))));
    return _mm256_castsi256_ps(_mm256_slli_epi32(
        _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)((const unsigned short *)w + i))), 16));
}
#endif

/* W[r,:] . x for one row of `in` stored weights, widened to float32 */
static inline __attribute__((always_inline)) float dot_widened(const void *restrict w, int kind,
                                                               const float *restrict x, long in) {
    long i = 0;
    float s = 0.f;
#if defined(__AVX512F__)
    __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    for (; i + 64 <= in; i += 64) {
        a0 = _mm512_fmadd_ps(widen16(w, i, kind), _mm512_loadu_ps(x + i), a0);
        a1 = _mm512_fmadd_ps(widen16(w, i + 16, kind), _mm512_loadu_ps(x + i + 16), a1);
        a2 = _mm512_fmadd_ps(widen16(w, i + 32, kind), _mm512_loadu_ps(x + i + 32), a2);
        a3 = _mm512_fmadd_ps(widen16(w, i + 48, kind), _mm512_loadu_ps(x + i + 48), a3);
    }
    for (; i + 16 <= in; i += 16) a0 = _mm512_fmadd_ps(widen16(w, i, kind), _mm512_loadu_ps(x + i), a0);
    s = _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
#elif defined(__AVX2__)
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    for (; i + 32 <= in; i += 32) {
        a0 = _mm256_fmadd_ps(widen8(w, i, kind), _mm256_loadu_ps(x + i), a0);
        a1 = _mm256_fmadd_ps(widen8(w, i + 8, kind), _mm256_loadu_ps(x + i + 8), a1);
        a2 = _mm256_fmadd_ps(widen8(w, i + 16, kind), _mm256_loadu_ps(x + i + 16), a2);
        a3 = _mm256_fmadd_ps(widen8(w, i + 24, kind), _mm256_loadu_ps(x + i + 24), a3);
    }
    s = sum8(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
#endif
    float t = 0.f; /* what the vectors left (every column without AVX) */
    for (long j = i; j < in; j++) t += widen1(w, j, kind) * x[j];
    return s + t;
}

static void rows_i8(const signed char *Q, const float *scale, const float *x, const float *b, float *y, long r0,
                    long r1, long in) {
    for (long r = r0; r < r1; r++) y[r] = scale[r] * dot_widened(Q + r * in, GF_INT8, x, in) + (b ? b[r] : 0.f);
}

static void rows_bf16(const unsigned short *W, const float *x, const float *b, float *y, long r0, long r1, long in) {
    for (long r = r0; r < r1; r++) y[r] = dot_widened(W + r * in, GF_BF16, x, in) + (b ? b[r] : 0.f);
}

typedef struct { /* y = W x + b: float32 W, int8 W with a float32 scale per row (quant.Int8Linear), or bf16 W */
    const void *w;
    const float *scale, *bias; /* scale: int8's only; bias NULL: none */
    long out, in;
    int kind; /* GF_F32, GF_INT8 or GF_BF16 */
} gf_matrix;

/* rows r0..r1-1 of y = W x + b */
static void matrix_rows(const gf_matrix *m, const float *x, float *y, long r0, long r1) {
    if (m->kind == GF_INT8)
        rows_i8(m->w, m->scale, x, m->bias, y, r0, r1, m->in);
    else if (m->kind == GF_BF16)
        rows_bf16(m->w, x, m->bias, y, r0, r1, m->in);
    else
        rows_f32(m->w, x, m->bias, y, r0, r1, m->in);
}

/* y = W x + b for one row, any storage: under 256 KB of weights one thread does it all, else each
 * of up to `threads` OpenMP threads a contiguous share of the rows. */
static void matvec_threaded(const gf_matrix *m, const float *x, float *y, int threads) {
    static const long bytes[] = {[GF_F32] = 4, [GF_INT8] = 1, [GF_BF16] = 2}; /* per weight */
    if (threads <= 1 || m->out * m->in * bytes[m->kind] < 262144 || m->out < 2) {
        matrix_rows(m, x, y, 0, m->out);
        return;
    }
#pragma omp parallel num_threads(threads)
    {
        const long n = omp_get_num_threads(), t = omp_get_thread_num();
        matrix_rows(m, x, y, m->out * t / n, m->out * (t + 1) / n);
    }
}

/* y (out) = W (out, in) x (in) + b (out, or NULL), on up to `threads` OpenMP threads. */
void glassformer_matvec_f32(const float *W, const float *x, const float *b, float *y, long out, long in,
                            int threads) {
    const gf_matrix m = {W, NULL, b, out, in, GF_F32};
    matvec_threaded(&m, x, y, threads);
}

/* y (out) = scale (out) * (Q (out, in) x (in)) + b (out, or NULL), on up to `threads` OpenMP threads. */
void glassformer_matvec_i8(const signed char *Q, const float *scale, const float *x, const float *b, float *y,
                           long out, long in, int threads) {
    const gf_matrix m = {Q, scale, b, out, in, GF_INT8};
    matvec_threaded(&m, x, y, threads);
}

/* y (out) = W (out, in, bfloat16) x (in) + b (out, or NULL), on up to `threads` OpenMP threads. */
void glassformer_matvec_bf16(const unsigned short *W, const float *x, const float *b, float *y, long out, long in,
                             int threads) {
    const gf_matrix m = {W, NULL, b, out, in, GF_BF16};
    matvec_threaded(&m, x, y, threads);
}

/* One query's attention for one head: out (d) = softmax(scale * K q) V over L keys and values
 * (K, V: L rows `stride` floats apart, d contiguous each), with `s` room for L scores. The
 * largest score is subtracted before exp, as torch's softmax does. */
static void attend_head(const float *q, const float *k, const float *v, float *out, long L, long d, long k_stride,
                        long v_stride, float scale, float *s) {
    float top = -INFINITY, total = 0.f;
    for (long j = 0; j < L; j++) {
        const float *kj = k + j * k_stride;
        float t = 0.f;
#pragma omp simd reduction(+ : t)
        for (long i = 0; i < d; i++) t += q[i] * kj[i];
        s[j] = t * scale;
        top = s[j] > top ? s[j] : top;
    }
    for (long i = 0; i < d; i++) out[i] = 0.f;
    for (long j = 0; j < L; j++) {
        const float p = expf(s[j] - top), *vj = v + j * v_stride;
        total += p;
#pragma omp simd
        for (long i = 0; i < d; i++) out[i] += p * vj[i];
    }
    for (long i = 0; i < d; i++) out[i] /= total;
}

/* The decode step's attention, one new query per row and head, no mask: out (B, h, d) =
 * softmax(scale * K q) V. q (B, h, d) contiguous; K and V (B, h, L, d) with the given row, head
 * and position strides (the KV cache's buffers, read in place), d contiguous. The (row, head)
 * pairs are split across up to `threads` OpenMP threads. Returns 0, or 1 where the scores could
 * not be allocated (nothing written).
 *
 * Why by hand: at one query torch's fused CPU kernel costs 57-75 us per layer inside a decode
 * step of a 6-layer d384 GPT at 200 cached positions on a 2-core Zen 4 (22 us alone with the
 * cache cold); this one brought a generation of 256 tokens from 3.06 to 2.73 ms per token
 * (medians of 12, alternating, same tokens). */
int glassformer_attend_f32(const float *q, const float *k, const float *v, float *out, long rows, long heads,
                           long L, long d, long k_row, long k_head, long k_pos, long v_row, long v_head,
                           long v_pos, float scale, int threads) {
    const long pairs = rows * heads;
    if (pairs * L * d < 16384) threads = 1; /* under 64 KB of keys: not worth a second thread */
    float *scores = malloc(sizeof(float) * (size_t)(L > 0 ? L : 1) * (size_t)(threads > 0 ? threads : 1));
    if (scores == NULL) return 1;
#pragma omp parallel for num_threads(threads > 0 ? threads : 1) schedule(static)
    for (long p = 0; p < pairs; p++) {
        const long b = p / heads, h = p % heads;
        attend_head(q + p * d, k + b * k_row + h * k_head, v + b * v_row + h * v_head, out + p * d, L, d, k_pos,
                    v_pos, scale, scores + (size_t)omp_get_thread_num() * (size_t)L);
    }
    free(scores);
    return 0;
}

/* ---------------------------------------------------------------------------------------------
 * The whole one-token step for one row: every block and the head in one call, on one team of
 * OpenMP threads that meets at a barrier between the stages that read what others wrote. It is
 * GPT.next_logits for one new token after the KV cache, written out in C: each norm, activation,
 * rotation and residual as the model's modules compute it, in float32 (norms sum in double).
 * glassformer/decode_step.py (StepKernel) fills these structures from a model and uses this only
 * for the options it lists; tests/test_generate_fast.py holds it to the modules for every
 * architecture variant.
 *
 * Why by hand: at 6/6/384 and one row, the step built from torch ops spent about 1.1 ms per
 * token around its 25 matmuls (some 130 small ops, their dispatch and Python, each slowed by the
 * 43 MB of weights streaming through the caches in between). On a 2-core Zen 3, a generation of
 * 256 tokens: 3.34 ms per token against 4.32, and 3.75 against 5.06 an hour later (medians of 8
 * and 10, alternating, the same tokens); with int8 weights 1.84 against 2.93, 2.73 against 4.28.
 */

typedef struct { /* LayerNorm (bias may be NULL) or RMSNorm over n numbers; weight NULL: no norm */
    const float *weight, *bias;
    float eps;
    int rms;
} gf_norm;

typedef struct {
    gf_norm attn_norm, ffn_norm, q_norm, k_norm; /* q_norm, k_norm: per head (qk_norm), weight NULL without */
    gf_matrix qkv, o, gate, up, down;           /* qkv: W_Q, W_K, W_V stacked; gate.w NULL: not gated */
    float *k, *v;                               /* the cache's keys and values (h_kv, capacity, d) of row 0 */
    long k_head, k_pos, v_head, v_pos;          /* their head and position strides */
} gf_layer;

enum { GF_RELU, GF_RELU2, GF_GELU, GF_GELU_TANH, GF_SILU }; /* decode_step.ACTIVATION_CODES */

typedef struct {
    long n_layer, width, n_head, n_kv_head, d_head, d_ff;
    int pre_norm, activation;
    const gf_layer *layers;
    gf_norm final_norm; /* weight NULL: none (post-LN) */
    gf_matrix head;
} gf_model;

/* out (n) = the norm of x (n); out may be x */
static void norm(const gf_norm *g, const float *x, float *out, long n) {
    double mean = 0., square = 0.;
    if (!g->rms) {
        for (long i = 0; i < n; i++) mean += x[i];
        mean /= n;
    }
    for (long i = 0; i < n; i++) square += (x[i] - mean) * (x[i] - mean);
    const float m = (float)mean, r = (float)(1. / sqrt(square / n + g->eps));
    for (long i = 0; i < n; i++) out[i] = (x[i] - m) * r * g->weight[i] + (g->bias ? g->bias[i] : 0.f);
}

static float activation(int kind, float x) {
    switch (kind) {
    case GF_RELU: return x > 0.f ? x : 0.f;
    case GF_RELU2: return x > 0.f ? x * x : 0.f;
    case GF_GELU: return 0.5f * x * (1.f + erff(x * 0.70710678f)); /* x / sqrt(2) */
    case GF_GELU_TANH: return 0.5f * x * (1.f + tanhf(0.7978845608f * (x + 0.044715f * x * x * x)));
    default: return x / (1.f + expf(-x)); /* GF_SILU */
    }
}

/* x (d) rotated by the position's angles, "rotate half": (x1 cos - x2 sin, x1 sin + x2 cos) */
static void rotate(float *x, const float *cos, const float *sin, long d) {
    const long half = d / 2;
    for (long i = 0; i < half; i++) {
        const float a = x[i], b = x[i + half];
        x[i] = a * cos[i] - b * sin[i];
        x[i + half] = a * sin[i] + b * cos[i];
    }
}

/* x (n) += y (n) for rows r0..r1-1 (pre-LN), or, once every row of y is there, x = norm(x + y) by one thread */
static void residual(const gf_model *m, const gf_norm *g, float *x, const float *y, long r0, long r1) {
    if (m->pre_norm) {
        for (long r = r0; r < r1; r++) x[r] += y[r];
        return;
    }
#pragma omp barrier
#pragma omp single
    {
        for (long r = 0; r < m->width; r++) x[r] += y[r];
        norm(g, x, x, m->width);
    }
}

/* logits (V) = the model's next-token logits after one token, whose embedding (its position added,
 * as GPT.embed gives it) is x0 (width), at position `pos` after pos cached positions; the token's
 * keys and values go into the cache at `pos`. cos, sin: RoPE's (d/2) for the position, or NULL.
 * Returns 0, or 1 where the working memory could not be allocated (nothing written). */
int glassformer_decode_step(const gf_model *m, const float *x0, long pos, const float *cos, const float *sin,
                            float *logits, int threads) {
    const long C = m->width, d = m->d_head, H = m->n_head * d, KV = m->n_kv_head * d, L = pos + 1;
    const long F = m->d_ff, group = m->n_head / m->n_kv_head;
    if (threads < 1) threads = 1;
    /* the stream x and a sublayer's output y (C each), Q K V, the heads' outputs (H), the hidden
     * layer and the gate's (F each), the scores (h, L), each thread's normed input (C) */
    float *work = malloc(sizeof(float) * (size_t)(2 * C + 2 * H + 2 * KV + 2 * F + m->n_head * L + threads * C));
    if (work == NULL) return 1;
    float *x = work, *y = x + C, *qkv = y + C, *att = qkv + H + 2 * KV, *hidden = att + H, *gate = hidden + F;
    float *scores = gate + F, *normed = scores + m->n_head * L;
    for (long i = 0; i < C; i++) x[i] = x0[i];
    const float scale = 1.f / sqrtf((float)d);
#pragma omp parallel num_threads(threads)
    {
        const long n = omp_get_num_threads(), t = omp_get_thread_num();
        float *h = normed + t * C;
        /* each thread's contiguous share of the rows of C, Q K V, the hidden layer, the heads, the kv heads */
        const long c0 = C * t / n, c1 = C * (t + 1) / n, f0 = F * t / n, f1 = F * (t + 1) / n;
        const long h0 = m->n_head * t / n, h1 = m->n_head * (t + 1) / n;
        const long g0 = m->n_kv_head * t / n, g1 = m->n_kv_head * (t + 1) / n;
        for (long l = 0; l < m->n_layer; l++) {
            const gf_layer *b = &m->layers[l];
            /* self-attention: Q, K, V of the stream (pre-LN: normed) */
            const float *in = x;
            if (m->pre_norm) norm(&b->attn_norm, x, h, C), in = h;
            matrix_rows(&b->qkv, in, qkv, (H + 2 * KV) * t / n, (H + 2 * KV) * (t + 1) / n);
#pragma omp barrier
            for (long g = g0; g < g1; g++) { /* each kv head's new key (normed, rotated) and value into the cache */
                float *k = qkv + H + g * d, *v = qkv + H + KV + g * d;
                float *kc = b->k + g * b->k_head + pos * b->k_pos, *vc = b->v + g * b->v_head + pos * b->v_pos;
                if (b->k_norm.weight) norm(&b->k_norm, k, k, d);
                if (cos) rotate(k, cos, sin, d);
                for (long i = 0; i < d; i++) kc[i] = k[i], vc[i] = v[i];
            }
#pragma omp barrier
            for (long q = h0; q < h1; q++) { /* each query head over its kv head's L keys and values */
                float *qh = qkv + q * d;
                if (b->q_norm.weight) norm(&b->q_norm, qh, qh, d);
                if (cos) rotate(qh, cos, sin, d);
                const long g = q / group;
                attend_head(qh, b->k + g * b->k_head, b->v + g * b->v_head, att + q * d, L, d, b->k_pos, b->v_pos,
                            scale, scores + q * L);
            }
#pragma omp barrier
            matrix_rows(&b->o, att, y, c0, c1); /* the heads concatenated, through W_O */
            residual(m, &b->attn_norm, x, y, c0, c1);
#pragma omp barrier
            /* feed-forward: down(act(up(x))), or down(act(gate(x)) * up(x)) */
            in = x;
            if (m->pre_norm) norm(&b->ffn_norm, x, h, C), in = h;
            if (b->gate.w) { /* the gate first: the step's maps are packed in that order (decode_step.linears) */
                matrix_rows(&b->gate, in, gate, f0, f1);
                matrix_rows(&b->up, in, hidden, f0, f1);
                for (long r = f0; r < f1; r++) hidden[r] = activation(m->activation, gate[r]) * hidden[r];
            } else {
                matrix_rows(&b->up, in, hidden, f0, f1);
                for (long r = f0; r < f1; r++) hidden[r] = activation(m->activation, hidden[r]);
            }
#pragma omp barrier
            matrix_rows(&b->down, hidden, y, c0, c1);
            residual(m, &b->ffn_norm, x, y, c0, c1);
#pragma omp barrier
        }
        const float *in = x;
        if (m->final_norm.weight) norm(&m->final_norm, x, h, C), in = h;
        matrix_rows(&m->head, in, logits, m->head.out * t / n, m->head.out * (t + 1) / n);
    }
    free(work);
    return 0;
}
