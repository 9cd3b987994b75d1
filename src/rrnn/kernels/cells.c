/*
 * Fused elementwise work of one shared-row LSTM step, forward and backward.
 * The GEMMs stay in torch; these loops replace the ~10 (forward) and ~20
 * (backward) small torch ops per step. Compiled at first use by
 * rrnn/kernels/native.py; see rrnn/kernels/lstm.py for the maths.
 *
 * Layout, all row-major and contiguous, one row per batch element:
 *   z, sig, dz : (B, m), m = s + 4q, columns [S | P_i | P_f | P_g | P_o]
 *   c_prev, c, h, tc, dh, dc, dc_prev : (B, d), d = s + q
 *   ts : (B, s) tanh(S)      tg : (B, q) tanh(P_g)
 */
#include <math.h>
#include <stddef.h>

/* glibc's vector exp (libmvec) without -ffast-math: -ffast-math would link
 * crtfastmath (flush-to-zero for the whole process) and let NaN vanish in the
 * clamps below. Built with -fno-math-errno -fno-trapping-math, IEEE semantics
 * otherwise: NaN and Inf propagate as on the reference path. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(RRNN_NO_MVEC)
__attribute__((__simd__("notinbranch"))) float expf(float);
__attribute__((__simd__("notinbranch"))) double exp(double);
#endif

#define DEFINE_LSTM(T, SUF, EXP, LIM)                                                    \
static inline T sigm_##SUF(T x) {                                                         \
    x = x < -(LIM) ? -(LIM) : (x > (LIM) ? (LIM) : x);                                    \
    return (T)1 / ((T)1 + EXP(-x));                                                       \
}                                                                                         \
static inline T tanh_##SUF(T x) {                                                         \
    x = x < -(LIM) ? -(LIM) : (x > (LIM) ? (LIM) : x);                                    \
    return (T)1 - (T)2 / ((T)1 + EXP((T)2 * x));                                          \
}                                                                                         \
void rrnn_lstm_fwd_##SUF(long B, long s, long q, const T *restrict z,                     \
                         const T *restrict c_prev, T *restrict c, T *restrict h,          \
                         T *restrict sig, T *restrict ts, T *restrict tg,                 \
                         T *restrict tc) {                                                \
    const long d = s + q, m = s + 4 * q;                                                  \
    for (long b = 0; b < B; b++) {                                                        \
        const T *zb = z + b * m, *cp = c_prev + b * d;                                    \
        T *sb = sig + b * m, *tsb = ts + b * s, *tgb = tg + b * q;                        \
        T *cb = c + b * d, *hb = h + b * d, *tcb = tc + b * d;                            \
        for (long j = 0; j < m; j++) sb[j] = sigm_##SUF(zb[j]);                           \
        for (long j = 0; j < s; j++) tsb[j] = tanh_##SUF(zb[j]);                          \
        for (long j = 0; j < q; j++) tgb[j] = tanh_##SUF(zb[s + 2 * q + j]);              \
        for (long j = 0; j < s; j++) cb[j] = sb[j] * (cp[j] + tsb[j]);                    \
        for (long j = 0; j < q; j++)                                                      \
            cb[s + j] = sb[s + q + j] * cp[s + j] + sb[s + j] * tgb[j];                   \
        for (long j = 0; j < d; j++) tcb[j] = tanh_##SUF(cb[j]);                          \
        for (long j = 0; j < s; j++) hb[j] = sb[j] * tcb[j];                              \
        for (long j = 0; j < q; j++) hb[s + j] = sb[s + 3 * q + j] * tcb[s + j];          \
    }                                                                                     \
}                                                                                         \
void rrnn_lstm_bwd_##SUF(long B, long s, long q, const T *restrict sig,                   \
                         const T *restrict ts, const T *restrict tg,                      \
                         const T *restrict tc, const T *restrict c_prev,                  \
                         const T *restrict dh, const T *restrict dc,                      \
                         T *restrict dz, T *restrict dc_prev) {                           \
    const long d = s + q, m = s + 4 * q;                                                  \
    for (long b = 0; b < B; b++) {                                                        \
        const T *sb = sig + b * m, *tsb = ts + b * s, *tgb = tg + b * q;                  \
        const T *tcb = tc + b * d, *cp = c_prev + b * d;                                  \
        const T *dhb = dh + b * d, *dcb = dc + b * d;                                     \
        T *dzb = dz + b * m, *dcp = dc_prev + b * d;                                      \
        for (long j = 0; j < s; j++) { /* shared: i = f = o = sig(S), g = tanh(S) */      \
            T sg = sb[j], t = tcb[j], g = tsb[j];                                         \
            T dct = dcb[j] + dhb[j] * ((T)1 - t * t) * sg;                                \
            T a = (cp[j] + g) * dct + dhb[j] * t;                                         \
            T di = dct * sg;                                                              \
            dzb[j] = a * sg * ((T)1 - sg) + di * ((T)1 - g * g);                          \
            dcp[j] = di;                                                                  \
        }                                                                                 \
        for (long j = 0; j < q; j++) { /* private rows of i, f, g, o */                   \
            long k = s + j;                                                               \
            T si = sb[s + j], sf = sb[s + q + j], so = sb[s + 3 * q + j];                 \
            T g = tgb[j], t = tcb[k];                                                     \
            T dct = dcb[k] + dhb[k] * ((T)1 - t * t) * so;                                \
            dzb[s + j] = dct * g * si * ((T)1 - si);                                      \
            dzb[s + q + j] = dct * cp[k] * sf * ((T)1 - sf);                              \
            dzb[s + 2 * q + j] = dct * si * ((T)1 - g * g);                               \
            dzb[s + 3 * q + j] = dhb[k] * t * so * ((T)1 - so);                           \
            dcp[k] = dct * sf;                                                            \
        }                                                                                 \
    }                                                                                     \
}

DEFINE_LSTM(float, f32, expf, 40.0f)
DEFINE_LSTM(double, f64, exp, 300.0)

/*
 * GRU, torch.nn gate order (r, z, n). Packed columns [S | R | Z | N] (widths s, q, q, q),
 * m = s + 3q; the x and h projections stay apart because n = tanh(a_n + r * g_n):
 *   a = x P_x^T + b_x, g = h P_h^T + b_h : (B, m)
 * Shared columns: r = z = u = sigmoid(a_S + g_S), n = tanh(a_S + u * g_S).
 * Saved for backward: rr (B, d) = [u | r], zz (B, q) = z, nn (B, d) = n, gn (B, d) = [g_S | g_N].
 * Backward fills da, dg (B, m) (gradients of a and g) and dh_direct (B, d), the part of
 * dh_prev that does not pass through P_h.
 */
#define DEFINE_GRU(T, SUF, EXP, LIM)                                                     \
void rrnn_gru_fwd_##SUF(long B, long s, long q, const T *restrict a,                      \
                        const T *restrict g, const T *restrict h_prev, T *restrict h,     \
                        T *restrict rr, T *restrict zz, T *restrict nn, T *restrict gn) { \
    const long d = s + q, m = s + 3 * q;                                                  \
    for (long b = 0; b < B; b++) {                                                        \
        const T *ab = a + b * m, *gb = g + b * m, *hp = h_prev + b * d;                   \
        T *hb = h + b * d, *rb = rr + b * d, *zb = zz + b * q, *nb = nn + b * d;          \
        T *gnb = gn + b * d;                                                              \
        for (long j = 0; j < s; j++) {                                                    \
            T u = sigm_##SUF(ab[j] + gb[j]);                                              \
            T n = tanh_##SUF(ab[j] + u * gb[j]);                                          \
            rb[j] = u; nb[j] = n; gnb[j] = gb[j];                                         \
            hb[j] = ((T)1 - u) * n + u * hp[j];                                           \
        }                                                                                 \
        for (long j = 0; j < q; j++) {                                                    \
            T r = sigm_##SUF(ab[s + j] + gb[s + j]);                                      \
            T z = sigm_##SUF(ab[s + q + j] + gb[s + q + j]);                              \
            T gN = gb[s + 2 * q + j];                                                     \
            T n = tanh_##SUF(ab[s + 2 * q + j] + r * gN);                                 \
            rb[s + j] = r; zb[j] = z; nb[s + j] = n; gnb[s + j] = gN;                     \
            hb[s + j] = ((T)1 - z) * n + z * hp[s + j];                                   \
        }                                                                                 \
    }                                                                                     \
}                                                                                         \
void rrnn_gru_bwd_##SUF(long B, long s, long q, const T *restrict rr,                     \
                        const T *restrict zz, const T *restrict nn,                       \
                        const T *restrict gn, const T *restrict h_prev,                   \
                        const T *restrict dh, T *restrict da, T *restrict dg,             \
                        T *restrict dh_direct) {                                          \
    const long d = s + q, m = s + 3 * q;                                                  \
    for (long b = 0; b < B; b++) {                                                        \
        const T *rb = rr + b * d, *zb = zz + b * q, *nb = nn + b * d, *gnb = gn + b * d;  \
        const T *hp = h_prev + b * d, *dhb = dh + b * d;                                  \
        T *dab = da + b * m, *dgb = dg + b * m, *dhd = dh_direct + b * d;                 \
        for (long j = 0; j < s; j++) { /* u is both r and z */                            \
            T u = rb[j], n = nb[j], dy = dhb[j];                                          \
            T dpn = dy * ((T)1 - u) * ((T)1 - n * n);                                     \
            T du = dy * (hp[j] - n) + dpn * gnb[j];                                       \
            T dpu = du * u * ((T)1 - u);                                                  \
            dab[j] = dpn + dpu;                                                           \
            dgb[j] = dpn * u + dpu;                                                       \
            dhd[j] = dy * u;                                                              \
        }                                                                                 \
        for (long j = 0; j < q; j++) {                                                    \
            long k = s + j;                                                               \
            T r = rb[k], z = zb[j], n = nb[k], dy = dhb[k];                               \
            T dpn = dy * ((T)1 - z) * ((T)1 - n * n);                                     \
            T dpr = dpn * gnb[k] * r * ((T)1 - r);                                        \
            T dpz = dy * (hp[k] - n) * z * ((T)1 - z);                                    \
            dab[s + j] = dpr; dgb[s + j] = dpr;                                           \
            dab[s + q + j] = dpz; dgb[s + q + j] = dpz;                                   \
            dab[s + 2 * q + j] = dpn; dgb[s + 2 * q + j] = dpn * r;                       \
            dhd[k] = dy * z;                                                              \
        }                                                                                 \
    }                                                                                     \
}

DEFINE_GRU(float, f32, expf, 40.0f)
DEFINE_GRU(double, f64, exp, 300.0)

/*
 * A whole unidirectional LSTM stack, one time step, inference: for each layer l,
 * z = [in | h0[l]] W[l]^T + bias[l] (W[l] is the packed (m, k + d) matrix [P_x | P_h]),
 * then the fused cell above. One call per step from Python instead of three per layer.
 * Rows are processed four at a time so that the dot products run as independent chains.
 */
#define DEFINE_STREAM(T, SUF)                                                             \
void rrnn_lstm_stream_##SUF(long L, long B, long d, const long *s_arr, const long *k_arr,  \
                            T *const *W, T *const *bias, const T *x, T *const *h0,         \
                            T *const *c0, T *const *h1, T *const *c1, T *z, T *sig,        \
                            T *ts, T *tg, T *tc) {                                         \
    const T *in = x;                                                                       \
    for (long l = 0; l < L; l++) {                                                         \
        const long s = s_arr[l], q = d - s, m = s + 4 * q, k = k_arr[l], kk = k + d;       \
        const T *Wl = W[l], *bl = bias[l];                                                 \
        for (long b = 0; b < B; b++) {                                                     \
            const T *xb = in + b * k, *hb = h0[l] + b * d;                                 \
            T *zb = z + b * m;                                                             \
            long r = 0;                                                                    \
            for (; r + 4 <= m; r += 4) {                                                   \
                const T *w0 = Wl + r * kk, *w1 = w0 + kk, *w2 = w1 + kk, *w3 = w2 + kk;    \
                T a0 = 0, a1 = 0, a2 = 0, a3 = 0;                                          \
                for (long j = 0; j < k; j++) {                                             \
                    T v = xb[j];                                                           \
                    a0 += w0[j] * v; a1 += w1[j] * v; a2 += w2[j] * v; a3 += w3[j] * v;    \
                }                                                                          \
                for (long j = 0; j < d; j++) {                                             \
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
                for (long j = 0; j < k; j++) a += w[j] * xb[j];                            \
                for (long j = 0; j < d; j++) a += w[k + j] * hb[j];                        \
                zb[r] = a;                                                                 \
            }                                                                              \
        }                                                                                  \
        rrnn_lstm_fwd_##SUF(B, s, q, z, c0[l], c1[l], h1[l], sig, ts, tg, tc);             \
        in = h1[l];                                                                        \
    }                                                                                      \
}

DEFINE_STREAM(float, f32)
DEFINE_STREAM(double, f64)
