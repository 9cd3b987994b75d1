/*
 * Fused elementwise work of one shared-row LSTM or GRU step, forward and backward;
 * an LSTM layer's whole time loop without autograd (its GEMM through the BLAS
 * torch exports); one streaming step of an LSTM stack; the decoder's softmax
 * cross-entropy. Elsewhere the GEMMs stay in torch; these loops replace the ~10
 * (forward) and ~20 (backward) small torch ops per step. Compiled at first use by
 * rrnn/kernels/native.py; see rrnn/kernels/lstm.py and gru.py for the maths.
 *
 * Layout, all row-major and contiguous, one row per batch element:
 *   z, sig, dz : (B, m), m = s + 4q, columns [S | P_i | P_f | P_g | P_o]
 *   c_prev, c, h, tc, dh, dc, dc_prev : (B, d), d = s + q
 *   ts : (B, s) tanh(S)      tg : (B, q) tanh(P_g)
 */
#include <math.h>
#include <stddef.h>
#include <stdint.h> /* sizes are int64_t: a C long is 32 bits on Windows */
#include <string.h>

/* The batch rows of a step are independent: with OpenMP (built with -fopenmp only
 * where torch itself runs on libgomp, so that this library joins torch's own thread
 * pool instead of starting a second one; see native.py) they are split over the
 * calling thread's OpenMP thread count, which torch.set_num_threads sets. A step of
 * fewer rows than this runs on one thread: below it the fork costs more than it saves. */
#define RRNN_MIN_PARALLEL_ROWS 16
#ifdef _OPENMP
#include <omp.h>
#endif
/* The calling thread's OpenMP thread count (an ICV of each thread: a Python worker
 * thread starts with every core, whatever torch.set_num_threads said); native.py
 * sets it to torch.get_num_threads() before a thread's first kernel call and
 * whenever torch's count changes. Without OpenMP: one thread, and these do nothing. */
void rrnn_set_threads(int64_t n) {
#ifdef _OPENMP
    if (n > 0) omp_set_num_threads((int)n);
#else
    (void)n;
#endif
}
int64_t rrnn_max_threads(void) {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}
#ifdef _OPENMP
#define RRNN_ROWS_PARALLEL _Pragma("omp parallel for if(B >= RRNN_MIN_PARALLEL_ROWS) schedule(static)")
/* CALL on rows [b0, b1): one block of consecutive rows per thread */
#define RRNN_ROW_BLOCKS(B, CALL)                                                          \
    do {                                                                                  \
        const int64_t nb_ = (B) >= RRNN_MIN_PARALLEL_ROWS ? omp_get_max_threads() : 1;     \
        _Pragma("omp parallel for if(nb_ > 1) schedule(static)")                          \
        for (int64_t k_ = 0; k_ < nb_; k_++) {                                            \
            const int64_t b0 = (B) * k_ / nb_, b1 = (B) * (k_ + 1) / nb_;                 \
            CALL;                                                                         \
        }                                                                                 \
    } while (0)
/* blocks of whole sequences (rrnn_lstm_infer): one per thread, RRNN_MIN_SEQUENCE_ROWS rows or more each */
#ifndef RRNN_MIN_SEQUENCE_ROWS
#define RRNN_MIN_SEQUENCE_ROWS 16
#endif
#define RRNN_SEQUENCE_BLOCKS(B)                                                           \
    ((B) / RRNN_MIN_SEQUENCE_ROWS < omp_get_max_threads() ? (B) / RRNN_MIN_SEQUENCE_ROWS \
                                                           : omp_get_max_threads())
#define RRNN_PARALLEL_BLOCKS(NB, CALL)                                                    \
    do {                                                                                  \
        const int64_t nbp_ = (NB); /* a _Pragma's text is not macro-expanded */           \
        _Pragma("omp parallel for num_threads(nbp_) schedule(static)")                    \
        for (int64_t k_ = 0; k_ < nbp_; k_++) CALL;                                       \
    } while (0)
#else
#define RRNN_ROWS_PARALLEL
#define RRNN_ROW_BLOCKS(B, CALL) do { const int64_t b0 = 0, b1 = (B); CALL; } while (0)
#define RRNN_SEQUENCE_BLOCKS(B) ((int64_t)1)
#define RRNN_PARALLEL_BLOCKS(NB, CALL) do { const int64_t k_ = 0; CALL; } while (0)
#endif

/* glibc's vector exp (libmvec) without -ffast-math: -ffast-math would link
 * crtfastmath (flush-to-zero for the whole process) and let NaN vanish in the
 * clamps below. Built with -fno-math-errno -fno-trapping-math, IEEE semantics
 * otherwise: NaN and Inf propagate as on the reference path. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(RRNN_NO_MVEC)
__attribute__((__simd__("notinbranch"))) float expf(float);
__attribute__((__simd__("notinbranch"))) double exp(double);
/* glibc 2.35 added tanh to libmvec; older ones take libm's scalar tanh (as exact) */
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 35))
__attribute__((__simd__("notinbranch"))) float tanhf(float);
__attribute__((__simd__("notinbranch"))) double tanh(double);
#define RRNN_MVEC_TANH 1
#endif
#endif

/* AVX-512, float32: a span's last partial vector through masked loads and stores,
 * calling the same 16-wide libmvec functions the compiler calls for the full ones
 * (GCC finishes an omp simd loop with narrower vectors and scalar calls, and cannot
 * mask a call). sigm512 is 1 / (1 + exp(-x)) exactly as the compiled loop computes
 * it; masked-off lanes hold 0. */
#if defined(__AVX512F__) && defined(RRNN_MVEC_TANH)
#include <immintrin.h>
#define RRNN_SPANS_512 1
__m512 _ZGVeN16v_expf(__m512);
__m512 _ZGVeN16v_tanhf(__m512);
static inline __m512 sigm512(__m512 v) {
    const __m512 one = _mm512_set1_ps(1.0f);
    const __m512i sign = _mm512_set1_epi32((int)0x80000000u);
    __m512 e = _ZGVeN16v_expf(_mm512_castsi512_ps(_mm512_xor_si512(_mm512_castps_si512(v), sign)));
    return _mm512_div_ps(one, _mm512_add_ps(one, e));
}
static inline __mmask16 tail512(int64_t r) { return (__mmask16)((1u << r) - 1u); }
/* NAME(y, x, b, n): y = F(x + b) over n floats */
#define RRNN_XB_SPAN_512(NAME, F)                                                         \
    static inline void NAME(float *restrict y, const float *restrict x,                  \
                            const float *restrict b, int64_t n) {                        \
        int64_t i = 0;                                                                    \
        for (; i + 16 <= n; i += 16)                                                      \
            _mm512_storeu_ps(y + i, F(_mm512_add_ps(_mm512_loadu_ps(x + i), _mm512_loadu_ps(b + i)))); \
        if (i < n) {                                                                      \
            const __mmask16 k = tail512(n - i);                                           \
            __m512 v = _mm512_add_ps(_mm512_maskz_loadu_ps(k, x + i), _mm512_maskz_loadu_ps(k, b + i)); \
            _mm512_mask_storeu_ps(y + i, k, F(v));                                        \
        }                                                                                 \
    }
RRNN_XB_SPAN_512(sigm_span_512, sigm512)
RRNN_XB_SPAN_512(tanh_span_512, _ZGVeN16v_tanhf)
/* the GRU's candidate: y = tanh(a + r * g) */
static inline void cand_span_512(float *restrict y, const float *restrict a, const float *restrict r,
                                 const float *restrict g, int64_t n) {
    int64_t i = 0;
    for (; i + 16 <= n; i += 16)
        _mm512_storeu_ps(y + i, _ZGVeN16v_tanhf(_mm512_fmadd_ps(_mm512_loadu_ps(r + i), _mm512_loadu_ps(g + i),
                                                                _mm512_loadu_ps(a + i))));
    if (i < n) {
        const __mmask16 k = tail512(n - i);
        __m512 v = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(k, r + i), _mm512_maskz_loadu_ps(k, g + i),
                                   _mm512_maskz_loadu_ps(k, a + i));
        _mm512_mask_storeu_ps(y + i, k, _ZGVeN16v_tanhf(v));
    }
}
static inline void out_span_512(float *restrict h, const float *restrict c,
                                const float *restrict o, int64_t n) {
    int64_t i = 0;
    for (; i + 16 <= n; i += 16)
        _mm512_storeu_ps(h + i, _mm512_mul_ps(_mm512_loadu_ps(o + i), _ZGVeN16v_tanhf(_mm512_loadu_ps(c + i))));
    if (i < n) {
        const __mmask16 k = tail512(n - i);
        __m512 t = _ZGVeN16v_tanhf(_mm512_maskz_loadu_ps(k, c + i));
        _mm512_mask_storeu_ps(h + i, k, _mm512_mul_ps(_mm512_maskz_loadu_ps(k, o + i), t));
    }
}
#endif

/* lanes of the widest vector a span is cut into (16 floats in AVX-512) */
#define RRNN_VW 16
#ifdef RRNN_SPANS_512
#define SIGM_SPAN_f32 sigm_span_512
#define TANH_SPAN_f32 tanh_span_512
#define OUT_SPAN_f32 out_span_512
#define CAND_SPAN_f32 cand_span_512
#else
#define CAND_SPAN_f32 cand_span_f32
#define SIGM_SPAN_f32 sigm_span_f32
#define TANH_SPAN_f32 tanh_span_f32
#define OUT_SPAN_f32 out_span_f32
#endif
#define SIGM_SPAN_f64 sigm_span_f64
#define TANH_SPAN_f64 tanh_span_f64
#define OUT_SPAN_f64 out_span_f64
#define CAND_SPAN_f64 cand_span_f64
/* sigmoid: 1 / (1 + exp(-x)) has no cancellation; exp(-x) overflowing to +Inf for
 * x below about -88 (float) gives 0, where torch gives a subnormal or 0. tanh: the
 * C library's, within a few ulp of torch's everywhere; 1 - 2 / (1 + exp(2x))
 * cancels near 0 (4.6% off at 1e-6 in float32, 0 at 1e-8). */
/* NAME(y, x, bias, n): y = F(x + bias) over n entries, whole vectors of RRNN_VW lanes,
 * then the partial one padded into a buffer of RRNN_VW (one vector call, not scalar ones) */
#define RRNN_XB_SPAN(T, NAME, F)                                                          \
    static inline void NAME(T *restrict y, const T *restrict x, const T *restrict bias,  \
                            int64_t n) {                                                  \
        int64_t i = 0;                                                                    \
        for (; i + RRNN_VW <= n; i += RRNN_VW) {                                          \
            _Pragma("omp simd") for (int64_t k = 0; k < RRNN_VW; k++)                     \
                y[i + k] = F(x[i + k] + bias[i + k]);                                     \
        }                                                                                 \
        if (i < n) {                                                                      \
            T v[RRNN_VW] = {0};                                                           \
            for (int64_t k = 0; k < n - i; k++) v[k] = x[i + k] + bias[i + k];            \
            _Pragma("omp simd") for (int64_t k = 0; k < RRNN_VW; k++) v[k] = F(v[k]);     \
            for (int64_t k = 0; k < n - i; k++) y[i + k] = v[k];                          \
        }                                                                                 \
    }
#define TANH_f32 tanhf
#define TANH_f64 tanh
#define DEFINE_LSTM(T, SUF, EXP)                                                         \
static inline T sigm_##SUF(T x) { return (T)1 / ((T)1 + EXP(-x)); }                       \
static inline T tanh_##SUF(T x) { return TANH_##SUF(x); }                                 \
/* The transcendental passes run over whole blocks of rows, which are contiguous:  \
   a loop over one row's s, q or m entries ends in scalar calls of expf/tanhf (each  \
   ~10x a vector lane), and per row that was half the step's time (docs/kernels.md). \
   z holds the bias already. The sigmoid of the P_g columns is computed and not read \
   by backward: cheaper than a split pass. */                                        \
static void lstm_fwd_rows_##SUF(int64_t b0, int64_t b1, int64_t s, int64_t q, int64_t w,  \
                                const T *restrict z, const T *restrict c_prev,            \
                                T *restrict c, T *restrict h, T *restrict sig,            \
                                T *restrict ts, T *restrict tg, T *restrict tc) {         \
    const int64_t d = s + q, m = s + 4 * q, n = b1 - b0;                                  \
    z += b0 * w; sig += b0 * m; ts += b0 * s; tg += b0 * q;                               \
    c_prev += b0 * d; c += b0 * d; h += b0 * d; tc += b0 * d;                             \
    for (int64_t b = 0; b < n; b++) {                                                     \
        const T *zb = z + b * w;                                                          \
        for (int64_t j = 0; j < s; j++) ts[b * s + j] = zb[j];                            \
        for (int64_t j = 0; j < q; j++) tg[b * q + j] = zb[s + 2 * q + j];                \
        if (w != m) memcpy(sig + b * m, zb, (size_t)m * sizeof(T)); /* rows -> one block */ \
    }                                                                                     \
    if (w != m) {                                                                         \
        _Pragma("omp simd") for (int64_t i = 0; i < n * m; i++) sig[i] = sigm_##SUF(sig[i]); \
    } else {                                                                              \
        _Pragma("omp simd") for (int64_t i = 0; i < n * m; i++) sig[i] = sigm_##SUF(z[i]); \
    }                                                                                     \
    _Pragma("omp simd") for (int64_t i = 0; i < n * s; i++) ts[i] = tanh_##SUF(ts[i]);    \
    _Pragma("omp simd") for (int64_t i = 0; i < n * q; i++) tg[i] = tanh_##SUF(tg[i]);    \
    for (int64_t b = 0; b < n; b++) {                                                     \
        const T *sb = sig + b * m, *tsb = ts + b * s, *tgb = tg + b * q;                  \
        const T *cp = c_prev + b * d;                                                     \
        T *cb = c + b * d;                                                                \
        for (int64_t j = 0; j < s; j++) cb[j] = sb[j] * (cp[j] + tsb[j]);                 \
        for (int64_t j = 0; j < q; j++)                                                   \
            cb[s + j] = sb[s + q + j] * cp[s + j] + sb[s + j] * tgb[j];                   \
    }                                                                                     \
    _Pragma("omp simd") for (int64_t i = 0; i < n * d; i++) tc[i] = tanh_##SUF(c[i]);     \
    for (int64_t b = 0; b < n; b++) {                                                     \
        const T *sb = sig + b * m, *tcb = tc + b * d;                                     \
        T *hb = h + b * d;                                                                \
        for (int64_t j = 0; j < s; j++) hb[j] = sb[j] * tcb[j];                           \
        for (int64_t j = 0; j < q; j++) hb[s + j] = sb[s + 3 * q + j] * tcb[s + j];       \
    }                                                                                     \
}                                                                                         \
RRNN_XB_SPAN(T, sigm_span_##SUF, sigm_##SUF)                                           \
RRNN_XB_SPAN(T, tanh_span_##SUF, tanh_##SUF)                                           \
/* h = o * tanh(c) */                                                                    \
static inline void out_span_##SUF(T *restrict h, const T *restrict c,                   \
                                  const T *restrict o, int64_t n) {                      \
    int64_t i = 0;                                                                        \
    for (; i + RRNN_VW <= n; i += RRNN_VW) {                                              \
        _Pragma("omp simd") for (int64_t k = 0; k < RRNN_VW; k++)                         \
            h[i + k] = o[i + k] * tanh_##SUF(c[i + k]);                                   \
    }                                                                                     \
    if (i < n) {                                                                          \
        T v[RRNN_VW] = {0};                                                               \
        for (int64_t k = 0; k < n - i; k++) v[k] = c[i + k];                              \
        _Pragma("omp simd") for (int64_t k = 0; k < RRNN_VW; k++) v[k] = tanh_##SUF(v[k]); \
        for (int64_t k = 0; k < n - i; k++) h[i + k] = o[i + k] * v[k];                   \
    }                                                                                     \
}                                                                                         \
/* Inference rows: nothing is kept for backward, so each row is finished while it  \
   sits in L1, reading z + bias once. sg holds a row's gates  \
   [sig S | sig P_i | sig P_f | tanh P_g | sig P_o], ts tanh(S). Only the 4d values  \
   the step reads are computed (the training step also takes sig(P_g)). */           \
static void lstm_inf_rows_##SUF(int64_t b0, int64_t b1, int64_t s, int64_t q, int64_t w,  \
                                const T *restrict z, const T *restrict bias,              \
                                const T *restrict c_prev, T *restrict c, T *restrict h,   \
                                T *restrict sg, T *restrict ts) {                         \
    const int64_t d = s + q, m = s + 4 * q;                                               \
    for (int64_t b = b0; b < b1; b++) {                                                   \
        const T *zb = z + b * w, *cp = c_prev + b * d;                                    \
        T *gb = sg + b * m, *tb = ts + b * s, *cb = c + b * d, *hb = h + b * d;           \
        SIGM_SPAN_##SUF(gb, zb, bias, s + 2 * q);                  /* S, P_i, P_f */      \
        SIGM_SPAN_##SUF(gb + s + 3 * q, zb + s + 3 * q, bias + s + 3 * q, q); /* P_o */   \
        TANH_SPAN_##SUF(tb, zb, bias, s);                                                 \
        TANH_SPAN_##SUF(gb + s + 2 * q, zb + s + 2 * q, bias + s + 2 * q, q); /* P_g */   \
        _Pragma("omp simd") for (int64_t j = 0; j < s; j++) cb[j] = gb[j] * (cp[j] + tb[j]); \
        _Pragma("omp simd") for (int64_t j = 0; j < q; j++)                               \
            cb[s + j] = gb[s + q + j] * cp[s + j] + gb[s + j] * gb[s + 2 * q + j];         \
        OUT_SPAN_##SUF(hb, cb, gb, s);                                                    \
        OUT_SPAN_##SUF(hb + s, cb + s, gb + s + 3 * q, q);                                \
    }                                                                                     \
}                                                                                         \
void rrnn_lstm_fwd_##SUF(int64_t B, int64_t s, int64_t q, const T *restrict z,                     \
                         const T *restrict c_prev, T *restrict c, T *restrict h,          \
                         T *restrict sig, T *restrict ts, T *restrict tg,                 \
                         T *restrict tc) {                                                \
    const int64_t m = s + 4 * q;                                                          \
    RRNN_ROW_BLOCKS(B, lstm_fwd_rows_##SUF(b0, b1, s, q, m, z, c_prev, c, h, sig, ts, tg, tc)); \
}                                                                                         \
/* The same step reading z (B, w) in rows of w >= m values (the training forward's    \
   x P_x^T, padded as the inference loop's is; columns m.. are not read). */          \
void rrnn_lstm_fwd_strided_##SUF(int64_t B, int64_t s, int64_t q, int64_t w,                        \
                                 const T *restrict z, const T *restrict c_prev,           \
                                 T *restrict c, T *restrict h, T *restrict sig,           \
                                 T *restrict ts, T *restrict tg, T *restrict tc) {        \
    RRNN_ROW_BLOCKS(B, lstm_fwd_rows_##SUF(b0, b1, s, q, w, z, c_prev, c, h, sig, ts, tg, tc)); \
}                                                                                         \
/* A whole sequence of one layer, inference: per step z_t += h_{t-1} P_h^T through the \
   BLAS GEMM torch itself calls (``gemm``: the Fortran-interface sgemm_/dgemm_ found   \
   by native.blas_gemm; its integer arguments are passed as int64_t, which an LP64    \
   BLAS reads correctly too, as the low half on a little-endian machine), then the    \
   inference rows with the bias added. xz (steps, B, w) holds x_t P_x^T in its first  \
   m = s + 4q columns on entry and is overwritten there; ph is P_h (m, d), row-major, \
   read by the GEMM as the transpose of a column-major (d x m): no P_h^T copy per    \
   call, and no slower (docs/kernels.md). w >= m is xz's row stride: rows of a       \
   multiple of 16 values keep MKL's GEMM on its fast path, and columns m.. are       \
   never read or written. bias (m,) is never NULL (zeros for a layer                  \
   without one: the caller passes them); sig (B, m) and ts (B, s) are one step's      \
   scratch; c alternates between c_n and c_tmp so that the last step writes c_n.      \
   With `fold` (the input as wide as h, so x and h read the same s shared rows S):    \
   out holds the layer's input x on entry, xz only x P_x^T's private columns s..m-1,  \
   and each step computes the shared columns as (x_t + h_{t-1}) S^T, one product      \
   where two were (x_t S^T in the input projection, h_{t-1} S^T here), into z's      \
   columns 0..s-1 (not read on entry), then its private columns += h_{t-1} P_hp^T.   \
   u (B, d) is scratch for x_t + h_{t-1}; x_t is read before h_t is written over it. */ \
typedef void (*gemm_##SUF##_t)(const char *, const char *, const int64_t *, const int64_t *,      \
                               const int64_t *, const T *, const T *, const int64_t *,    \
                               const T *, const int64_t *, const T *, T *, const int64_t *); \
/* The time loop over rows [r0, r1) of the batch; with `split`, each step's rows are \
   also split over the threads (RRNN_ROW_BLOCKS) and the GEMM runs on BLAS's own     \
   threads; without, one thread does it all. */                                       \
static void lstm_infer_rows_##SUF(int64_t steps, int64_t B, int64_t r0, int64_t r1,      \
                                  int64_t s, int64_t q, int64_t w, gemm_##SUF##_t g, T *xz, \
                                  const T *ph, const T *bias, const T *h0, const T *c0,   \
                                  T *out, T *c_n, T *c_tmp, T *sig, T *ts, int split,     \
                                  int64_t fold, T *u) {                                   \
    const int64_t d = s + q, m = s + 4 * q, n = r1 - r0, p = 4 * q;                       \
    const T one = 1, zero = 0;                                                            \
    const char N = 'N', Tr = 'T';                                                         \
    const T *h = h0, *cp = c0;                                                            \
    for (int64_t t = 0; t < steps; t++) {                                                 \
        T *z = xz + t * B * w, *ht = out + t * B * d;                                     \
        T *cn = (steps - 1 - t) % 2 == 0 ? c_n : c_tmp;                                   \
        if (fold) {                                                                       \
            /* u = x_t + h_{t-1} (x_t sits in ht until the step writes h_t there) */       \
            _Pragma("omp simd") for (int64_t i = r0 * d; i < r1 * d; i++) u[i] = ht[i] + h[i]; \
            /* z^T[0:s] = S (s x d) u^T; z^T[s:m] += P_hp (4q x d) h^T; columns r0.. */   \
            if (s > 0) g(&Tr, &N, &s, &n, &d, &one, ph, &d, u + r0 * d, &d, &zero, z + r0 * w, &w); \
            if (p > 0)                                                                    \
                g(&Tr, &N, &p, &n, &d, &one, ph + s * d, &d, h + r0 * d, &d, &one, z + r0 * w + s, &w); \
        } else {                                                                          \
            /* column-major: z^T (m x n) += P_h (m x d) h^T (d x n), columns r0.. */       \
            g(&Tr, &N, &m, &n, &d, &one, ph, &d, h + r0 * d, &d, &one, z + r0 * w, &w);    \
        }                                                                                 \
        if (split) {                                                                      \
            RRNN_ROW_BLOCKS(B, lstm_inf_rows_##SUF(b0, b1, s, q, w, z, bias, cp, cn, ht, sig, ts)); \
        } else {                                                                          \
            lstm_inf_rows_##SUF(r0, r1, s, q, w, z, bias, cp, cn, ht, sig, ts);           \
        }                                                                                 \
        h = ht;                                                                           \
        cp = cn;                                                                          \
    }                                                                                     \
}                                                                                         \
/* A batch of at least RRNN_MIN_SEQUENCE_ROWS rows per thread is cut into one block of \
   rows per thread, and each thread runs the whole time loop on its block with a     \
   one-thread GEMM (BLAS called inside a parallel region keeps to the calling        \
   thread): rows never depend on each other, so the threads meet once per sequence   \
   instead of twice per step. A smaller batch splits each step instead. */            \
void rrnn_lstm_infer_##SUF(int64_t steps, int64_t B, int64_t s, int64_t q, int64_t w, void *gemm, \
                           T *restrict xz, const T *restrict ph, const T *restrict bias,  \
                           const T *restrict h0, const T *restrict c0, T *restrict out,   \
                           T *restrict c_n, T *restrict c_tmp, T *restrict sig,           \
                           T *restrict ts, int64_t fold, T *restrict u) {                 \
    const gemm_##SUF##_t g = (gemm_##SUF##_t)gemm;                                        \
    const int64_t nb = RRNN_SEQUENCE_BLOCKS(B);                                           \
    if (nb > 1) {                                                                         \
        RRNN_PARALLEL_BLOCKS(nb, lstm_infer_rows_##SUF(steps, B, B * k_ / nb, B * (k_ + 1) / nb, s, q, w, g, \
                             xz, ph, bias, h0, c0, out, c_n, c_tmp, sig, ts, 0, fold, u)); \
    } else {                                                                              \
        lstm_infer_rows_##SUF(steps, B, 0, B, s, q, w, g, xz, ph, bias, h0, c0, out, c_n, c_tmp, \
                              sig, ts, 1, fold, u);                                       \
    }                                                                                     \
}                                                                                         \
/* dh: the gradient reaching h_t through the recurrence; dout (or NULL): the one      \
   reaching it from the layer's output. */                                               \
static inline void lstm_bwd_##SUF(int64_t B, int64_t s, int64_t q, const T *restrict sig,          \
                                  const T *restrict ts, const T *restrict tg,             \
                                  const T *restrict tc, const T *restrict c_prev,         \
                                  const T *restrict dh, const T *restrict dout,           \
                                  const T *restrict dc, T *restrict dz,                   \
                                  T *restrict dc_prev) {                                  \
    const int64_t d = s + q, m = s + 4 * q;                                                  \
    RRNN_ROWS_PARALLEL                                                                    \
    for (int64_t b = 0; b < B; b++) {                                                        \
        const T *sb = sig + b * m, *tsb = ts + b * s, *tgb = tg + b * q;                  \
        const T *tcb = tc + b * d, *cp = c_prev + b * d;                                  \
        const T *dhb = dh + b * d, *dcb = dc + b * d;                                     \
        const T *dob = dout ? dout + b * d : NULL;                                        \
        T *dzb = dz + b * m, *dcp = dc_prev + b * d;                                      \
        for (int64_t j = 0; j < s; j++) { /* shared: i = f = o = sig(S), g = tanh(S) */      \
            T sg = sb[j], t = tcb[j], g = tsb[j];                                         \
            T dy = dhb[j] + (dob ? dob[j] : (T)0);                                        \
            T dct = dcb[j] + dy * ((T)1 - t * t) * sg;                                    \
            T a = (cp[j] + g) * dct + dy * t;                                             \
            T di = dct * sg;                                                              \
            dzb[j] = a * sg * ((T)1 - sg) + di * ((T)1 - g * g);                          \
            dcp[j] = di;                                                                  \
        }                                                                                 \
        for (int64_t j = 0; j < q; j++) { /* private rows of i, f, g, o */                   \
            int64_t k = s + j;                                                               \
            T si = sb[s + j], sf = sb[s + q + j], so = sb[s + 3 * q + j];                 \
            T g = tgb[j], t = tcb[k];                                                     \
            T dy = dhb[k] + (dob ? dob[k] : (T)0);                                        \
            T dct = dcb[k] + dy * ((T)1 - t * t) * so;                                    \
            dzb[s + j] = dct * g * si * ((T)1 - si);                                      \
            dzb[s + q + j] = dct * cp[k] * sf * ((T)1 - sf);                              \
            dzb[s + 2 * q + j] = dct * si * ((T)1 - g * g);                               \
            dzb[s + 3 * q + j] = dy * t * so * ((T)1 - so);                               \
            dcp[k] = dct * sf;                                                            \
        }                                                                                 \
    }                                                                                     \
}                                                                                         \
void rrnn_lstm_bwd_##SUF(int64_t B, int64_t s, int64_t q, const T *restrict sig,                   \
                         const T *restrict ts, const T *restrict tg,                      \
                         const T *restrict tc, const T *restrict c_prev,                  \
                         const T *restrict dh, const T *restrict dc,                      \
                         T *restrict dz, T *restrict dc_prev) {                           \
    lstm_bwd_##SUF(B, s, q, sig, ts, tg, tc, c_prev, dh, NULL, dc, dz, dc_prev);          \
}                                                                                         \
void rrnn_lstm_bwd_out_##SUF(int64_t B, int64_t s, int64_t q, const T *restrict sig,               \
                             const T *restrict ts, const T *restrict tg,                  \
                             const T *restrict tc, const T *restrict c_prev,              \
                             const T *restrict dh, const T *restrict dout,                \
                             const T *restrict dc, T *restrict dz,                        \
                             T *restrict dc_prev) {                                       \
    lstm_bwd_##SUF(B, s, q, sig, ts, tg, tc, c_prev, dh, dout, dc, dz, dc_prev);          \
}

DEFINE_LSTM(float, f32, expf)
DEFINE_LSTM(double, f64, exp)

/*
 * GRU, torch.nn gate order (r, z, n). Packed columns [S | R | Z | N] (widths s, q, q, q),
 * m = s + 3q; the x and h projections stay apart because n = tanh(a_n + r * g_n):
 *   a = x P_x^T + b_x, g = h P_h^T + b_h : (B, m)
 * Shared columns: r = z = u = sigmoid(a_S + g_S), n = tanh(a_S + u * g_S).
 * Saved for backward: rr (B, d) = [u | r], zz (B, q) = z, nn (B, d) = n, gn (B, d) = [g_S | g_N].
 * Backward fills da, dg (B, m) (gradients of a and g) and dh_direct (B, d), the part of
 * dh_prev that does not pass through P_h.
 */
#define DEFINE_GRU(T, SUF)                                                               \
/* The GRU's candidate over a span: y = tanh(a + r * g), the last partial vector \
   padded (see the LSTM's spans). */                                                  \
static inline void cand_span_##SUF(T *restrict y, const T *restrict a, const T *restrict r, \
                                   const T *restrict g, int64_t n) {                     \
    int64_t i = 0;                                                                        \
    for (; i + RRNN_VW <= n; i += RRNN_VW) {                                              \
        _Pragma("omp simd") for (int64_t k = 0; k < RRNN_VW; k++)                         \
            y[i + k] = tanh_##SUF(a[i + k] + r[i + k] * g[i + k]);                        \
    }                                                                                     \
    if (i < n) {                                                                          \
        T v[RRNN_VW] = {0};                                                               \
        for (int64_t k = 0; k < n - i; k++) v[k] = a[i + k] + r[i + k] * g[i + k];        \
        _Pragma("omp simd") for (int64_t k = 0; k < RRNN_VW; k++) v[k] = tanh_##SUF(v[k]); \
        for (int64_t k = 0; k < n - i; k++) y[i + k] = v[k];                              \
    }                                                                                     \
}                                                                                         \
/* One row at a time, each gate a span (the sigmoid spans take g as their "bias":     \
   sigmoid(a + g)); a row's loop over its entries ended in scalar calls of expf and   \
   tanhf, as the LSTM's did. a is read in rows of w >= m values (the sequence's       \
   x P_x^T is padded as the LSTM's is; columns m.. are not read). */                  \
static void gru_fwd_rows_##SUF(int64_t B, int64_t s, int64_t q, int64_t w, const T *restrict a, \
                               const T *restrict g, const T *restrict h_prev, T *restrict h, \
                               T *restrict rr, T *restrict zz, T *restrict nn,            \
                               T *restrict gn) {                                          \
    const int64_t d = s + q, m = s + 3 * q;                                                  \
    RRNN_ROWS_PARALLEL                                                                    \
    for (int64_t b = 0; b < B; b++) {                                                        \
        const T *ab = a + b * w, *gb = g + b * m, *hp = h_prev + b * d;                   \
        T *hb = h + b * d, *rb = rr + b * d, *zb = zz + b * q, *nb = nn + b * d;          \
        T *gnb = gn + b * d;                                                              \
        SIGM_SPAN_##SUF(rb, ab, gb, s);                       /* shared: u = r = z */     \
        CAND_SPAN_##SUF(nb, ab, rb, gb, s);                                               \
        SIGM_SPAN_##SUF(rb + s, ab + s, gb + s, q);           /* private r */             \
        SIGM_SPAN_##SUF(zb, ab + s + q, gb + s + q, q);       /* private z */             \
        CAND_SPAN_##SUF(nb + s, ab + s + 2 * q, rb + s, gb + s + 2 * q, q);               \
        _Pragma("omp simd") for (int64_t j = 0; j < s; j++) {                             \
            const T u = rb[j];                                                            \
            gnb[j] = gb[j];                                                               \
            hb[j] = ((T)1 - u) * nb[j] + u * hp[j];                                       \
        }                                                                                 \
        _Pragma("omp simd") for (int64_t j = 0; j < q; j++) {                             \
            const T z = zb[j];                                                            \
            gnb[s + j] = gb[s + 2 * q + j];                                               \
            hb[s + j] = ((T)1 - z) * nb[s + j] + z * hp[s + j];                           \
        }                                                                                 \
    }                                                                                     \
}                                                                                         \
void rrnn_gru_fwd_##SUF(int64_t B, int64_t s, int64_t q, const T *restrict a,                      \
                        const T *restrict g, const T *restrict h_prev, T *restrict h,     \
                        T *restrict rr, T *restrict zz, T *restrict nn, T *restrict gn) { \
    gru_fwd_rows_##SUF(B, s, q, s + 3 * q, a, g, h_prev, h, rr, zz, nn, gn);              \
}                                                                                         \
void rrnn_gru_fwd_strided_##SUF(int64_t B, int64_t s, int64_t q, int64_t w, const T *restrict a,   \
                                const T *restrict g, const T *restrict h_prev, T *restrict h, \
                                T *restrict rr, T *restrict zz, T *restrict nn,           \
                                T *restrict gn) {                                         \
    gru_fwd_rows_##SUF(B, s, q, w, a, g, h_prev, h, rr, zz, nn, gn);                      \
}                                                                                         \
static inline void gru_bwd_##SUF(int64_t B, int64_t s, int64_t q, const T *restrict rr,           \
                        const T *restrict zz, const T *restrict nn,                       \
                        const T *restrict gn, const T *restrict h_prev,                   \
                        const T *restrict dh, const T *restrict dout,                     \
                        T *restrict da, T *restrict dg,                                   \
                        T *restrict dh_direct) {                                          \
    const int64_t d = s + q, m = s + 3 * q;                                                  \
    RRNN_ROWS_PARALLEL                                                                    \
    for (int64_t b = 0; b < B; b++) {                                                        \
        const T *rb = rr + b * d, *zb = zz + b * q, *nb = nn + b * d, *gnb = gn + b * d;  \
        const T *hp = h_prev + b * d, *dhb = dh + b * d;                                  \
        const T *dob = dout ? dout + b * d : NULL;                                        \
        T *dab = da + b * m, *dgb = dg + b * m, *dhd = dh_direct + b * d;                 \
        for (int64_t j = 0; j < s; j++) { /* u is both r and z */                            \
            T u = rb[j], n = nb[j], dy = dhb[j] + (dob ? dob[j] : (T)0);                \
            T dpn = dy * ((T)1 - u) * ((T)1 - n * n);                                     \
            T du = dy * (hp[j] - n) + dpn * gnb[j];                                       \
            T dpu = du * u * ((T)1 - u);                                                  \
            dab[j] = dpn + dpu;                                                           \
            dgb[j] = dpn * u + dpu;                                                       \
            dhd[j] = dy * u;                                                              \
        }                                                                                 \
        for (int64_t j = 0; j < q; j++) {                                                    \
            int64_t k = s + j;                                                               \
            T r = rb[k], z = zb[j], n = nb[k], dy = dhb[k] + (dob ? dob[k] : (T)0);     \
            T dpn = dy * ((T)1 - z) * ((T)1 - n * n);                                     \
            T dpr = dpn * gnb[k] * r * ((T)1 - r);                                        \
            T dpz = dy * (hp[k] - n) * z * ((T)1 - z);                                    \
            dab[s + j] = dpr; dgb[s + j] = dpr;                                           \
            dab[s + q + j] = dpz; dgb[s + q + j] = dpz;                                   \
            dab[s + 2 * q + j] = dpn; dgb[s + 2 * q + j] = dpn * r;                       \
            dhd[k] = dy * z;                                                              \
        }                                                                                 \
    }                                                                                     \
}                                                                                         \
void rrnn_gru_bwd_##SUF(int64_t B, int64_t s, int64_t q, const T *restrict rr,                     \
                        const T *restrict zz, const T *restrict nn,                       \
                        const T *restrict gn, const T *restrict h_prev,                   \
                        const T *restrict dh, T *restrict da, T *restrict dg,             \
                        T *restrict dh_direct) {                                          \
    gru_bwd_##SUF(B, s, q, rr, zz, nn, gn, h_prev, dh, NULL, da, dg, dh_direct);          \
}                                                                                         \
/* dout (or NULL): the gradient reaching h_t from the layer's output, added to dh */     \
void rrnn_gru_bwd_out_##SUF(int64_t B, int64_t s, int64_t q, const T *restrict rr,                 \
                            const T *restrict zz, const T *restrict nn,                   \
                            const T *restrict gn, const T *restrict h_prev,               \
                            const T *restrict dh, const T *restrict dout,                 \
                            T *restrict da, T *restrict dg, T *restrict dh_direct) {      \
    gru_bwd_##SUF(B, s, q, rr, zz, nn, gn, h_prev, dh, dout, da, dg, dh_direct);          \
}

DEFINE_GRU(float, f32)
DEFINE_GRU(double, f64)

/*
 * A whole unidirectional LSTM stack, one time step, inference: for each layer l,
 * z = [in | h0[l]] W[l]^T + bias[l] (W[l] is the packed (m, k + d) matrix [P_x | P_h]),
 * then the fused cell above. One call per step from Python instead of three per layer.
 * Rows are processed four at a time so that the dot products run as independent chains.
 */
#define DEFINE_STREAM(T, SUF)                                                             \
void rrnn_lstm_stream_##SUF(int64_t L, int64_t B, int64_t d, const int64_t *s_arr, const int64_t *k_arr,  \
                            T *const *W, T *const *bias, const T *x, T *const *h0,         \
                            T *const *c0, T *const *h1, T *const *c1, T *z, T *sig,        \
                            T *ts, T *tg, T *tc) {                                         \
    const T *in = x;                                                                       \
    for (int64_t l = 0; l < L; l++) {                                                         \
        const int64_t s = s_arr[l], q = d - s, m = s + 4 * q, k = k_arr[l], kk = k + d;       \
        const T *Wl = W[l], *bl = bias[l];                                                 \
        /* where x is as wide as h, the s shared rows read x and h through the same  \
           weights: (x + h) S^T, each row's first k weights only (kernels/lstm.py) */  \
        const int64_t fs = k == d ? s : 0;                                                 \
        for (int64_t b = 0; b < B; b++) {                                                     \
            const T *xb = in + b * k, *hb = h0[l] + b * d;                                 \
            T *zb = z + b * m;                                                             \
            int64_t r = 0;                                                                    \
            for (; r + 4 <= fs; r += 4) {                                                  \
                const T *w0 = Wl + r * kk, *w1 = w0 + kk, *w2 = w1 + kk, *w3 = w2 + kk;    \
                T a0 = 0, a1 = 0, a2 = 0, a3 = 0;                                          \
                _Pragma("omp simd reduction(+ : a0, a1, a2, a3)")         \
                for (int64_t j = 0; j < k; j++) {                                             \
                    T v = xb[j] + hb[j];                                                   \
                    a0 += w0[j] * v; a1 += w1[j] * v; a2 += w2[j] * v; a3 += w3[j] * v;    \
                }                                                                          \
                zb[r] = a0 + (bl ? bl[r] : 0); zb[r + 1] = a1 + (bl ? bl[r + 1] : 0);       \
                zb[r + 2] = a2 + (bl ? bl[r + 2] : 0); zb[r + 3] = a3 + (bl ? bl[r + 3] : 0); \
            }                                                                              \
            for (; r < fs; r++) {                                                          \
                const T *w = Wl + r * kk;                                                  \
                T a = bl ? bl[r] : 0;                                                      \
                _Pragma("omp simd reduction(+ : a)")                           \
                for (int64_t j = 0; j < k; j++) a += w[j] * (xb[j] + hb[j]);                  \
                zb[r] = a;                                                                 \
            }                                                                              \
            for (; r + 4 <= m; r += 4) {                                                   \
                const T *w0 = Wl + r * kk, *w1 = w0 + kk, *w2 = w1 + kk, *w3 = w2 + kk;    \
                T a0 = 0, a1 = 0, a2 = 0, a3 = 0;                                          \
                _Pragma("omp simd reduction(+ : a0, a1, a2, a3)")         \
                for (int64_t j = 0; j < k; j++) {                                             \
                    T v = xb[j];                                                           \
                    a0 += w0[j] * v; a1 += w1[j] * v; a2 += w2[j] * v; a3 += w3[j] * v;    \
                }                                                                          \
                _Pragma("omp simd reduction(+ : a0, a1, a2, a3)")         \
                for (int64_t j = 0; j < d; j++) {                                             \
                    T v = hb[j];                                                           \
                    a0 += w0[k + j] * v; a1 += w1[k + j] * v;                              \
                    a2 += w2[k + j] * v; a3 += w3[k + j] * v;                              \
                }                                                                          \
                zb[r] = a0 + (bl ? bl[r] : 0); zb[r + 1] = a1 + (bl ? bl[r + 1] : 0);       \
                zb[r + 2] = a2 + (bl ? bl[r + 2] : 0); zb[r + 3] = a3 + (bl ? bl[r + 3] : 0); \
            }                                                                              \
            for (; r < m; r++) {                                                           \
                const T *w = Wl + r * kk;                                                  \
                T a = bl ? bl[r] : 0;                                                      \
                _Pragma("omp simd reduction(+ : a)")                           \
                for (int64_t j = 0; j < k; j++) a += w[j] * xb[j];                            \
                _Pragma("omp simd reduction(+ : a)")                           \
                for (int64_t j = 0; j < d; j++) a += w[k + j] * hb[j];                        \
                zb[r] = a;                                                                 \
            }                                                                              \
        }                                                                                  \
        rrnn_lstm_fwd_##SUF(B, s, q, z, c0[l], c1[l], h1[l], sig, ts, tg, tc);             \
        in = h1[l];                                                                        \
    }                                                                                      \
}

DEFINE_STREAM(float, f32)
DEFINE_STREAM(double, f64)

/*
 * A whole unidirectional GRU stack, one time step, inference: for each layer l,
 * a = P_x[l] in + b_x[l] and g = P_h[l] h0[l] + b_h[l] (m = s + 3q rows each; the
 * reset gate multiplies g alone, so the two products stay apart), then the fused
 * GRU cell above. One call per step from Python instead of three per layer. Rows
 * four at a time, as the LSTM's stream step.
 */
#define DEFINE_GRU_STREAM(T, SUF)                                                         \
/* y[r] = bias[r] + W[r, :n] . v for r < m; W is (m, n), contiguous. */                   \
static void stream_rows_##SUF(int64_t m, int64_t n, const T *restrict W, const T *restrict v, \
                              const T *restrict bias, T *restrict y) {                    \
    int64_t r = 0;                                                                        \
    for (; r + 4 <= m; r += 4) {                                                          \
        const T *w0 = W + r * n, *w1 = w0 + n, *w2 = w1 + n, *w3 = w2 + n;                \
        T a0 = 0, a1 = 0, a2 = 0, a3 = 0;                                                 \
        _Pragma("omp simd reduction(+ : a0, a1, a2, a3)")                                 \
        for (int64_t j = 0; j < n; j++) {                                                 \
            const T x = v[j];                                                             \
            a0 += w0[j] * x; a1 += w1[j] * x; a2 += w2[j] * x; a3 += w3[j] * x;           \
        }                                                                                 \
        y[r] = a0 + (bias ? bias[r] : 0); y[r + 1] = a1 + (bias ? bias[r + 1] : 0);       \
        y[r + 2] = a2 + (bias ? bias[r + 2] : 0); y[r + 3] = a3 + (bias ? bias[r + 3] : 0); \
    }                                                                                     \
    for (; r < m; r++) {                                                                  \
        const T *w = W + r * n;                                                           \
        T a = bias ? bias[r] : 0;                                                         \
        _Pragma("omp simd reduction(+ : a)")                                              \
        for (int64_t j = 0; j < n; j++) a += w[j] * v[j];                                 \
        y[r] = a;                                                                         \
    }                                                                                     \
}                                                                                         \
void rrnn_gru_stream_##SUF(int64_t L, int64_t B, int64_t d, const int64_t *s_arr,         \
                           const int64_t *k_arr, T *const *PX, T *const *PH,              \
                           T *const *BX, T *const *BH, const T *x, T *const *h0,          \
                           T *const *h1, T *a, T *g, T *rr, T *zz, T *nn, T *gn) {        \
    const T *in = x;                                                                      \
    for (int64_t l = 0; l < L; l++) {                                                     \
        const int64_t s = s_arr[l], q = d - s, m = s + 3 * q, k = k_arr[l];               \
        for (int64_t b = 0; b < B; b++) {                                                 \
            stream_rows_##SUF(m, k, PX[l], in + b * k, BX[l], a + b * m);                 \
            stream_rows_##SUF(m, d, PH[l], h0[l] + b * d, BH[l], g + b * m);              \
        }                                                                                 \
        rrnn_gru_fwd_##SUF(B, s, q, a, g, h0[l], h1[l], rr, zz, nn, gn);                  \
        in = h1[l];                                                                       \
    }                                                                                     \
}

DEFINE_GRU_STREAM(float, f32)
DEFINE_GRU_STREAM(double, f64)

/*
 * Softmax cross-entropy of a block of logits rows, in place (the decoder's loss,
 * see rrnn/lm/loss.py). For each row x of width V with target y, bias b (or 0):
 *   mx = max(x + b),  e = exp(x + b - mx),  S = sum(e),  loss = mx + log(S) - x[y] - b[y]
 *   x <- e * (scale / S),  x[y] -= scale        (the gradient (softmax - onehot) * scale)
 *   db += x                                     (the bias gradient, when db is given)
 * One pass reads the row for its max, one writes e and sums it, one scales it (and
 * adds it to db): the row (40 KB at V = 10,000) stays in cache between them. The rows
 * are split over `threads` threads (torch's OpenMP pool, or POSIX threads started for
 * the call where the library is built without OpenMP); each
 * writes its own rows, its own entries of `loss` (one per row, double) and its own
 * copy of db, which are added in thread order after the join, so no state is shared
 * and the result does not depend on timing. `omp simd` (built with -fopenmp-simd: no
 * OpenMP runtime) lets the max and the sum vectorize; NaN reaches the sum (the max
 * skips it, exp does not) and so the loss.
 */
#include <stdlib.h>
#ifdef _OPENMP /* torch's own pool (see the top of this file) */
#define XENT_RUN_JOBS(SUF)                                                                \
    _Pragma("omp parallel for num_threads(threads) schedule(static, 1)")                  \
    for (int64_t i = 0; i < threads; i++) xent_worker_##SUF(&jobs[i]);
#else /* POSIX threads, started and joined per call */
#include <pthread.h>
#define XENT_RUN_JOBS(SUF)                                                                \
    pthread_t tid[MAX_THREADS];                                                           \
    int started[MAX_THREADS] = {0};                                                       \
    for (int64_t i = 1; i < threads; i++)                                                    \
        started[i] = pthread_create(&tid[i], NULL, xent_worker_##SUF, &jobs[i]) == 0;     \
    xent_worker_##SUF(&jobs[0]);                                                          \
    for (int64_t i = 1; i < threads; i++) {                                                  \
        if (started[i]) pthread_join(tid[i], NULL);                                       \
        else xent_worker_##SUF(&jobs[i]); /* no thread: do its rows here */               \
    }
#endif

#define DEFINE_XENT(T, SUF, EXP, LOG)                                                     \
static void xent_rows_##SUF(int64_t r0, int64_t r1, int64_t V, T *x, const int64_t *y,                \
                            const T *b, T scale, double *loss, T *db) {                   \
    for (int64_t r = r0; r < r1; r++) {                                                      \
        T *row = x + r * V;                                                               \
        const int64_t t = y[r];                                                              \
        const T xt = row[t] + (b ? b[t] : (T)0);                                          \
        T mx = -(T)INFINITY;                                                              \
        if (b) {                                                                          \
            _Pragma("omp simd reduction(max:mx)")                                         \
            for (int64_t j = 0; j < V; j++) { T v = row[j] + b[j]; mx = v > mx ? v : mx; }   \
        } else {                                                                          \
            _Pragma("omp simd reduction(max:mx)")                                         \
            for (int64_t j = 0; j < V; j++) mx = row[j] > mx ? row[j] : mx;                  \
        }                                                                                 \
        T sum = 0;                                                                        \
        if (b) {                                                                          \
            _Pragma("omp simd reduction(+:sum)")                                          \
            for (int64_t j = 0; j < V; j++) {                                                \
                T e = EXP(row[j] + b[j] - mx); row[j] = e; sum += e;                      \
            }                                                                             \
        } else {                                                                          \
            _Pragma("omp simd reduction(+:sum)")                                          \
            for (int64_t j = 0; j < V; j++) { T e = EXP(row[j] - mx); row[j] = e; sum += e; }\
        }                                                                                 \
        loss[r] = (double)mx + (double)LOG(sum) - (double)xt;                             \
        const T k = scale / sum;                                                          \
        if (db) {                                                                         \
            _Pragma("omp simd")                                                           \
            for (int64_t j = 0; j < V; j++) { T g = row[j] * k; row[j] = g; db[j] += g; }    \
        } else {                                                                          \
            _Pragma("omp simd")                                                           \
            for (int64_t j = 0; j < V; j++) row[j] *= k;                                     \
        }                                                                                 \
        row[t] -= scale;                                                                  \
        if (db) db[t] -= scale;                                                           \
    }                                                                                     \
}                                                                                         \
typedef struct {                                                                          \
    int64_t r0, r1, V; T *x; const int64_t *y; const T *b; T scale; double *loss; T *db;        \
} xent_job_##SUF;                                                                         \
static void *xent_worker_##SUF(void *arg) {                                               \
    xent_job_##SUF *j = (xent_job_##SUF *)arg;                                            \
    xent_rows_##SUF(j->r0, j->r1, j->V, j->x, j->y, j->b, j->scale, j->loss, j->db);      \
    return NULL;                                                                          \
}                                                                                         \
void rrnn_xent_##SUF(int64_t n, int64_t V, int64_t threads, T *x, const int64_t *y, const T *b,       \
                     double scale, double *loss, T *db) {                                 \
    enum { MAX_THREADS = 64 };                                                            \
    if (threads > MAX_THREADS) threads = MAX_THREADS;                                     \
    if (threads > n) threads = n;                                                         \
    if (threads < 1) threads = 1;                                                         \
    xent_job_##SUF jobs[MAX_THREADS];                                                     \
    T *own_db = NULL; /* threads 1.. accumulate db apart: (threads - 1, V) */             \
    if (db && threads > 1) {                                                              \
        own_db = (T *)calloc((size_t)(threads - 1) * (size_t)V, sizeof(T));               \
        if (!own_db) threads = 1;                                                         \
    }                                                                                     \
    for (int64_t i = 0; i < threads; i++) {                                                  \
        T *dbi = !db ? NULL : (i == 0 ? db : own_db + (i - 1) * V);                       \
        jobs[i] = (xent_job_##SUF){n * i / threads, n * (i + 1) / threads, V, x, y, b,    \
                                   (T)scale, loss, dbi};                                  \
    }                                                                                     \
    XENT_RUN_JOBS(SUF)                                                                    \
    if (own_db) {                                                                         \
        for (int64_t i = 1; i < threads; i++) {                                              \
            const T *src = own_db + (i - 1) * V;                                          \
            for (int64_t j = 0; j < V; j++) db[j] += src[j];                                 \
        }                                                                                 \
        free(own_db);                                                                     \
    }                                                                                     \
}

DEFINE_XENT(float, f32, expf, logf)
DEFINE_XENT(double, f64, exp, log)
