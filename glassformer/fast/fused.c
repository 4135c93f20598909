/* Training's elementwise layers in one pass each way, float32 on CPU: RMSNorm, the SwiGLU gate
 * silu(g) * u, and RoPE's rotation. glassformer/fused.py compiles this on first use (as matvec.c)
 * and calls it through ctypes from autograd functions; layers.py and positions.py keep the
 * equations, and tests/test_fused.py holds every kernel to them.
 *
 * Why by hand: torch 2.13 differentiates F.rms_norm on CPU through its decomposition, about 14
 * elementwise passes with autograd between them. On a 2-core Ice Lake one RMSNorm forward and
 * backward over (24, 64, 128) took 1.6-2.2 ms (F.layer_norm's fused backward: 0.4), and
 * shakespeare-char-speedrun's step has ten of them. silu(g) * u is three passes forward and four
 * backward; RoPE's halves, products and concatenation eight and more. Figures per kernel are in
 * fused.py.
 *
 * Rows: a tensor of n0 x n1 x n2 rows of d contiguous numbers, with any strides between rows
 * (s0, s1, s2), so that the heads of a fused Q/K/V projection are read in place. Outputs are
 * contiguous. Rows are split statically across torch's OpenMP threads (the thread count is
 * passed in); under 16K numbers one thread does it all.
 */
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <string.h>

#define SMALL 16384 /* numbers under which one thread is faster than two */

typedef struct { /* rows of d numbers: row r at offset (r / (n1 n2)) s0 + (r / n2 % n1) s1 + (r % n2) s2 */
    long n0, n1, n2, s0, s1, s2;
} gf_rows;

typedef struct { /* a row's indices and offset, stepped from row to row without dividing */
    long i0, i1, i2, offset;
} gf_cursor;

static inline gf_cursor cursor_at(const gf_rows *v, long r) {
    gf_cursor c = {r / (v->n1 * v->n2), r / v->n2 % v->n1, r % v->n2, 0};
    c.offset = c.i0 * v->s0 + c.i1 * v->s1 + c.i2 * v->s2;
    return c;
}

static inline void next_row(const gf_rows *v, gf_cursor *c) {
    if (++c->i2 < v->n2) {
        c->offset += v->s2;
        return;
    }
    c->i2 = 0;
    if (++c->i1 == v->n1) {
        c->i1 = 0;
        c->i0++;
    }
    c->offset = c->i0 * v->s0 + c->i1 * v->s1;
}

/* this thread's rows [*r0, *r1) of `rows`, in contiguous shares as OpenMP's static schedule would give */
static inline void my_rows(long rows, long *r0, long *r1) {
    const long t = omp_get_thread_num(), n = omp_get_num_threads(), base = rows / n, extra = rows % n;
    *r0 = t * base + (t < extra ? t : extra);
    *r1 = *r0 + base + (t < extra);
}

/* this thread's share of the rows of v, [*r0, *r1), and a cursor at its first */
static inline gf_cursor my_share(const gf_rows *v, long *r0, long *r1) {
    my_rows(v->n0 * v->n1 * v->n2, r0, r1);
    return cursor_at(v, *r0);
}

static inline int threads_for(long numbers, int threads) { return numbers < SMALL ? 1 : threads; }
/* exp(x) for a vector of numbers in about [-87, 88], within 4 ulp: x = n ln2 + r, exp(r) by its
 * Taylor polynomial to r^6 (|r| <= ln2 / 2), times 2^n put into the exponent bits. In GCC's vector
 * extension, 16 lanes with AVX-512 and 8 otherwise (AVX2, or SSE in pairs): libm's expf is a call
 * per number, and the bit cast to 2^n stops the compiler from vectorising a scalar version. */
#if defined(__AVX512F__)
#define LANES 16
#else
#define LANES 8
#endif
typedef float vf __attribute__((vector_size(4 * LANES)));
typedef int32_t vi __attribute__((vector_size(4 * LANES)));

static inline vf load(const float *p) { vf v; memcpy(&v, p, sizeof v); return v; }
static inline void store(float *p, vf v) { memcpy(p, &v, sizeof v); }
static inline vf splat(float a) { vf v = {0}; return v + a; }
static inline vf select_lanes(vi mask, vf a, vf b) { return (vf)(((vi)a & mask) | ((vi)b & ~mask)); }

static inline vf exp_lanes(vf x) {
    x = select_lanes(x < splat(-87.0f), splat(-87.0f), x);
    x = select_lanes(x > splat(88.0f), splat(88.0f), x);
    const vf n = (x * 1.44269504089f + 12582912.0f) - 12582912.0f; /* round to nearest: 1.5 2^23 */
    const vf r = (x - n * 0.693145751953125f) - n * 1.428606765330187e-06f; /* ln2 as hi + lo */
    vf p = splat(1.0f / 720.0f);
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    return p * (vf)((__builtin_convertvector(n, vi) + 127) << 23); /* times 2^n */
}

/* RMSNorm forward: y = x / sqrt(mean(x^2) + eps) * w, and rstd = 1 / sqrt(mean(x^2) + eps) per row */
void glassformer_rms_norm_forward(const float *x, gf_rows xv, long d, const float *w, float eps, float *y,
                                  float *rstd, int threads) {
#pragma omp parallel num_threads(threads_for(xv.n0 * xv.n1 * xv.n2 * d, threads))
    {
        long r0, r1;
        gf_cursor at = my_share(&xv, &r0, &r1);
        for (long r = r0; r < r1; r++, next_row(&xv, &at)) {
            const float *xr = x + at.offset;
            float *yr = y + r * d;
            float ss = 0.f;
#pragma omp simd reduction(+ : ss)
            for (long j = 0; j < d; j++) ss += xr[j] * xr[j];
            const float s = 1.0f / sqrtf(ss / (float)d + eps);
            rstd[r] = s;
#pragma omp simd
            for (long j = 0; j < d; j++) yr[j] = xr[j] * s * w[j];
        }
    }
}

/* RMSNorm backward, with x^ = x s (s = rstd):
 *   dx = s (dy w - x^ mean(dy w x^)),   dw = sum over rows of dy x^.
 * dw: each thread sums its rows into its own row of `partial` (threads x d), then the columns
 * are summed across threads; gw may be NULL (no weight gradient wanted). */
void glassformer_rms_norm_backward(const float *gy, const float *x, gf_rows xv, long d, const float *w,
                                   const float *rstd, float *gx, float *gw, float *partial, int threads) {
    const int team = threads_for(xv.n0 * xv.n1 * xv.n2 * d, threads);
    if (gw != NULL) memset(partial, 0, sizeof(float) * (size_t)team * (size_t)d);
#pragma omp parallel num_threads(team)
    {
        float *mine = gw != NULL ? partial + (long)omp_get_thread_num() * d : NULL;
        long r0, r1;
        gf_cursor at = my_share(&xv, &r0, &r1);
        for (long r = r0; r < r1; r++, next_row(&xv, &at)) {
            const float *xr = x + at.offset, *gr = gy + r * d;
            const float s = rstd[r];
            float dot = 0.f;
#pragma omp simd reduction(+ : dot)
            for (long j = 0; j < d; j++) dot += gr[j] * w[j] * xr[j];
            const float k = dot * s * s / (float)d; /* mean(dy w x^) / s, so that k x = mean(...) x^ */
            float *out = gx + r * d;
#pragma omp simd
            for (long j = 0; j < d; j++) out[j] = s * (gr[j] * w[j] - k * xr[j]);
            if (mine != NULL) {
#pragma omp simd
                for (long j = 0; j < d; j++) mine[j] += gr[j] * xr[j] * s;
            }
        }
        if (gw != NULL) {
#pragma omp barrier
#pragma omp for schedule(static)
            for (long j = 0; j < d; j++) {
                float total = 0.f;
                for (int t = 0; t < team; t++) total += partial[(long)t * d + j];
                gw[j] = total;
            }
        }
    }
}

/* SwiGLU's gate, forward: h = silu(g) u = g sigmoid(g) u, rows of m numbers, g and u rows
 * `gs` and `us` apart (views into one projection's output), h contiguous */
void glassformer_swiglu_forward(const float *g, long gs, const float *u, long us, float *h, long rows, long m,
                                int threads) {
#pragma omp parallel for num_threads(threads_for(rows * m, threads)) schedule(static)
    for (long r = 0; r < rows; r++) {
        const float *gr = g + r * gs, *ur = u + r * us;
        float *hr = h + r * m;
        long j = 0;
        for (; j + LANES <= m; j += LANES) {
            const vf gj = load(gr + j);
            store(hr + j, gj / (1.0f + exp_lanes(-gj)) * load(ur + j));
        }
        for (; j < m; j++) hr[j] = gr[j] / (1.0f + expf(-gr[j])) * ur[j];
    }
}

/* SwiGLU's gate, backward: with σ = sigmoid(g),
 *   du = dh g σ,   dg = dh u σ (1 + g (1 - σ)).
 * dh contiguous; dg and du rows `dgs` and `dus` apart (one buffer for a fused projection). */
void glassformer_swiglu_backward(const float *dh, const float *g, long gs, const float *u, long us, float *dg,
                                 long dgs, float *du, long dus, long rows, long m, int threads) {
#pragma omp parallel for num_threads(threads_for(rows * m, threads)) schedule(static)
    for (long r = 0; r < rows; r++) {
        const float *hr = dh + r * m, *gr = g + r * gs, *ur = u + r * us;
        float *dgr = dg + r * dgs, *dur = du + r * dus;
        long j = 0;
        for (; j + LANES <= m; j += LANES) {
            const vf hj = load(hr + j), gj = load(gr + j), sig = 1.0f / (1.0f + exp_lanes(-gj));
            store(dur + j, hj * gj * sig);
            store(dgr + j, hj * load(ur + j) * sig * (1.0f + gj * (1.0f - sig)));
        }
        for (; j < m; j++) {
            const float sig = 1.0f / (1.0f + expf(-gr[j]));
            dur[j] = hr[j] * gr[j] * sig;
            dgr[j] = hr[j] * ur[j] * sig * (1.0f + gr[j] * (1.0f - sig));
        }
    }
}

/* RoPE, "rotate half" layout: each row's pairs (x_i, x_{i+d/2}) turned by the angle whose cosine
 * and sine are row i2 (the row's position) of cos, sin (n2 x d/2; n2 is the positions):
 *   y_i = x_i cos - x_{i+d/2} sin,   y_{i+d/2} = x_i sin + x_{i+d/2} cos.
 * sign -1 turns the other way: the backward of a rotation is the rotation back. y contiguous. */
void glassformer_rotary(const float *x, gf_rows xv, long d, const float *cos, const float *sin, float sign,
                        float *y, int threads) {
    const long half = d / 2;
#pragma omp parallel num_threads(threads_for(xv.n0 * xv.n1 * xv.n2 * d, threads))
    {
        long r0, r1;
        gf_cursor at = my_share(&xv, &r0, &r1);
        for (long r = r0; r < r1; r++, next_row(&xv, &at)) {
            const float *xr = x + at.offset, *c = cos + at.i2 * half, *s = sin + at.i2 * half;
            float *yr = y + r * d;
#pragma omp simd
            for (long i = 0; i < half; i++) {
                const float a = xr[i], b = xr[i + half], si = sign * s[i];
                yr[i] = a * c[i] - b * si;
                yr[i + half] = a * si + b * c[i];
            }
        }
    }
}
