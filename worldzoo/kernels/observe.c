/* The categorical RSSM's posterior unroll (DreamerV2/V3 `observe`) forward and backward
 * through time in C: the per-step elementwise work of worldzoo/components/rssm_fused.py
 * (LayerNorm, SiLU/ELU, the NormGRU gating, softmax, unimix, the inverse-CDF one-hot sample
 * and their backwards) as loops over 16-row tensors, and the per-step products through the
 * MKL functions whose addresses Python hands over (inside PyTorch: packed GEMM, else sgemm);
 * and imagination's prior sample over OpenMP's threads. Same maths as rssm_fused.py step for
 * step, in float32; built and loaded by worldzoo/native.py, called by
 * worldzoo/components/rssm_native.py. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef void (*sgemm_fn)(const char *, const char *, const int *, const int *, const int *,
                         const float *, const float *, const int *, const float *,
                         const int *, const float *, float *, const int *);

/* MKL's packed GEMM (cblas_sgemm_pack / _compute): a weight multiplied at every step is
   packed once per unroll into the layout MKL's kernels read */
typedef size_t (*pack_size_fn)(int, int, int, int);
typedef void (*pack_fn)(int, int, int, int, int, int, float, const float *, int, float *);
typedef void (*compute_fn)(int, int, int, int, int, int, const float *, int, const float *, int,
                           float, float *, int);
enum { ROW_MAJOR = 101, NO_TRANS = 111, TRANS = 112, PACKED = 151, B_MATRIX = 162 };

typedef struct {
    int B, T, S, k, K, H, D, act, normed, ld_in, ld_post;
    float unimix, eps_in, eps_gru, eps_post;
    sgemm_fn sgemm;
    pack_size_fn pack_size; /* NULL: plain sgemm on the transposes below */
    pack_fn pack;
    compute_fn compute;
    /* weights: w_s = img_in's stoch columns [H, S] (row stride ld_in), w_gru [3D, H + D],
       w_d = the posterior net's deter columns [H, D] (row stride ld_post), w_out [S, H] */
    const float *w_s, *w_gru, *w_d, *w_out, *b_out;
    /* their transposes, row-major (MKL multiplies 16 rows by W^T 2-3x faster this way):
       [S, H], [H + D, 3D], [D, H], [H, S] */
    const float *wt_s, *wt_gru, *wt_d, *wt_out;
    const float *ln_in_w, *ln_in_b, *ln_gru_w, *ln_gru_b, *ln_post_w, *ln_post_b;
    /* inputs: pa, pe [T, B, H] (the projected action and embedding), first [B, T],
       starts [T], h0, init_h [B, D], z0, init_z [B, S], uniform [T, B, k] */
    const float *pa, *pe, *first, *h0, *z0, *init_h, *init_z, *uniform;
    const uint8_t *starts;
    /* records [T, B, x] */
    float *z, *u1, *m1, *r1, *n1, *xh, *ug, *mg, *rg, *reset, *cand, *newh, *upd;
    float *u2, *m2, *r2, *n2, *y, *soft, *probs, *h;
    /* outputs [B, T, x]: deter, logits (the mixed probabilities with unimix, for Python to
       take the log of; the raw outputs without), stoch */
    float *out_deter, *out_logits, *out_stoch;
    float *work; /* scratch: B * (D + S + 3D) + S + 2k floats */
} wz_observe_args;

typedef struct {
    const wz_observe_args *f;
    const float *g_deter, *g_logits, *g_stoch; /* [B, T, x] */
    /* per-step gradients [T, B, x]: w.r.t. the posterior's raw output, the LayerNorms'
       outputs and inputs */
    float *g_o, *g_n2, *g_u2, *g_ng, *g_ug, *g_n1, *g_u1;
    float *gh, *gz, *g_init_h, *g_init_z; /* [B, D], [B, S], zero on entry */
    float *work; /* scratch: B * (H + 4D + S) floats */
} wz_observe_grad_args;

/* exp by range reduction and Cephes' polynomial (~1 ulp), written so loops vectorize;
   NaN stays NaN */
static inline float wz_exp(float x) {
    x = x > 88.0f ? 88.0f : x;
    x = x < -87.3365447504f ? -87.3365447504f : x;
    float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f; /* round: 1.5 * 2^23 */
    float r = x - n * 0.693359375f;
    r = r + n * 2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    float e = p * r * r + r + 1.0f;
    int32_t bits = ((int32_t)n + 127) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return e * scale;
}

static inline float wz_sigmoid(float x) { return 1.0f / (1.0f + wz_exp(-x)); }

static inline float wz_tanh(float x) {
    float a = x < 0 ? -x : x;
    float t = wz_exp(-2.0f * a);
    float v = (1.0f - t) / (1.0f + t);
    return x < 0 ? -v : v;
}

static void act_fwd(int kind, const float *restrict x, float *restrict y, int n) {
    if (kind == 0)
        for (int i = 0; i < n; i++) y[i] = x[i] / (1.0f + wz_exp(-x[i]));
    else
        for (int i = 0; i < n; i++) y[i] = x[i] > 0 ? x[i] : wz_exp(x[i]) - 1.0f;
}

static void act_bwd(int kind, const float *restrict g, const float *restrict x,
                    float *restrict out, int n) {
    if (kind == 0)
        for (int i = 0; i < n; i++) {
            float s = wz_sigmoid(x[i]);
            out[i] = g[i] * s * (1.0f + x[i] * (1.0f - s));
        }
    else
        for (int i = 0; i < n; i++) out[i] = x[i] > 0 ? g[i] : g[i] * wz_exp(x[i]);
}

/* LayerNorm of each of `rows` rows of n: out = (x - mean) * rstd * w + b */
static void ln_fwd(const float *restrict x, const float *restrict w, const float *restrict b,
                   float eps, int rows, int n, float *restrict out, float *restrict mean,
                   float *restrict rstd) {
    for (int r = 0; r < rows; r++) {
        const float *restrict xr = x + (size_t)r * n;
        float *restrict o = out + (size_t)r * n;
        float s = 0, v = 0;
#pragma omp simd reduction(+ : s)
        for (int i = 0; i < n; i++) s += xr[i];
        const float m = s / n;
#pragma omp simd reduction(+ : v)
        for (int i = 0; i < n; i++) v += (xr[i] - m) * (xr[i] - m);
        const float rs = 1.0f / sqrtf(v / n + eps);
        for (int i = 0; i < n; i++) o[i] = (xr[i] - m) * rs * w[i] + b[i];
        mean[r] = m;
        rstd[r] = rs;
    }
}

/* LayerNorm's input gradient: rstd * (gy - mean(gy) - xhat * mean(gy * xhat)), gy = g * w */
static void ln_bwd(const float *restrict g, const float *restrict x,
                   const float *restrict mean, const float *restrict rstd,
                   const float *restrict w, int rows, int n, float *restrict out) {
    for (int r = 0; r < rows; r++) {
        const float *restrict gr = g + (size_t)r * n, *restrict xr = x + (size_t)r * n;
        float *restrict o = out + (size_t)r * n;
        const float m = mean[r], rs = rstd[r];
        float sg = 0, sgx = 0;
#pragma omp simd reduction(+ : sg, sgx)
        for (int i = 0; i < n; i++) {
            float gy = gr[i] * w[i];
            sg += gy;
            sgx += gy * (xr[i] - m) * rs;
        }
        sg /= n;
        sgx /= n;
        for (int i = 0; i < n; i++) o[i] = rs * (gr[i] * w[i] - sg - (xr[i] - m) * rs * sgx);
    }
}

/* NormGRU gating of one row: reset = sigmoid(g[:D]), cand = g[D:2D],
   upd = sigmoid(g[2D:] - 1), new = tanh(reset * cand), h = lerp(hp, new, upd) (ATen's) */
static void gates_fwd(const float *restrict g, const float *restrict hp, int D,
                      float *restrict reset, float *restrict cand, float *restrict nw,
                      float *restrict upd, float *restrict h) {
    for (int i = 0; i < D; i++) {
        float rs = wz_sigmoid(g[i]), c = g[D + i], u = wz_sigmoid(g[2 * D + i] - 1.0f);
        float n = wz_tanh(rs * c);
        reset[i] = rs;
        cand[i] = c;
        nw[i] = n;
        upd[i] = u;
        h[i] = u < 0.5f ? hp[i] + u * (n - hp[i]) : n - (n - hp[i]) * (1.0f - u);
    }
}

/* ... and backward: the gradient w.r.t. the normed gates [reset | cand | update] (gr) and
   the direct part of the gradient w.r.t. hp (ghd), from the gradient gh w.r.t. h */
static void gates_bwd(const float *restrict gh, const float *restrict reset,
                      const float *restrict cand, const float *restrict nw,
                      const float *restrict upd, const float *restrict hp, int D,
                      float *restrict gr, float *restrict ghd) {
    for (int i = 0; i < D; i++) {
        float u = upd[i], n = nw[i], rs = reset[i];
        float gpre = gh[i] * u * (1.0f - n * n);
        gr[i] = gpre * cand[i] * (rs * (1.0f - rs));
        gr[D + i] = gpre * rs;
        gr[2 * D + i] = gh[i] * (n - hp[i]) * (u * (1.0f - u));
        ghd[i] = gh[i] * (1.0f - u);
    }
}

/* one row's k latents of K classes: the softmax of the raw outputs in place (o), the mixed
   probabilities p, and the one-hot sample (zs) of the class where uniform * cdf[K - 1] falls
   in the cdf (searchsorted, right). The cdfs are summed in order, as cumsum, but across the
   k latents at once (k independent chains, not one chain of K adds after another).
   work: k * K + 2 * k floats */
static inline void latent_fwd(float *restrict o, float *restrict p, float *restrict zs, int k, int K,
                       float mix, const float *restrict uniform, float *restrict work) {
    float *restrict cdf = work, *restrict tot = work + k * K, *restrict cnt = tot + k;
    for (int j = 0; j < k; j++) {
        float *restrict oj = o + j * K, *restrict pj = p + j * K;
        float mx = oj[0], sum = 0;
#pragma omp simd reduction(max : mx)
        for (int c = 1; c < K; c++) mx = oj[c] > mx ? oj[c] : mx;
        for (int c = 0; c < K; c++) oj[c] = wz_exp(oj[c] - mx);
#pragma omp simd reduction(+ : sum)
        for (int c = 0; c < K; c++) sum += oj[c];
        const float inv = 1.0f / sum;
        for (int c = 0; c < K; c++) oj[c] *= inv;
        if (mix > 0)
            for (int c = 0; c < K; c++) pj[c] = oj[c] * (1.0f - mix) + mix / K;
        else
            for (int c = 0; c < K; c++) pj[c] = oj[c];
    }
    for (int j = 0; j < k; j++) tot[j] = 0, cnt[j] = 0;
    for (int c = 0; c < K; c++)
        for (int j = 0; j < k; j++) cdf[c * k + j] = tot[j] += p[j * K + c];
    for (int j = 0; j < k; j++) tot[j] *= uniform[j];
    for (int c = 0; c < K; c++)
        for (int j = 0; j < k; j++) cnt[j] += cdf[c * k + j] <= tot[j] ? 1.0f : 0.0f;
    memset(zs, 0, sizeof(float) * k * K);
    for (int j = 0; j < k; j++) {
        int idx = (int)cnt[j];
        zs[j * K + (idx > K - 1 ? K - 1 : idx)] = 1.0f;
    }
}

/* latent_fwd for 16 latents at once, classes down and latents across (a transposed tile):
   no horizontal reductions, 16 independent chains in every pass (~25% faster than
   latent_fwd where k is a multiple of 16 and K <= 64). Each cdf is still summed in order. */
#define WZ_TILE 16
static inline void latent_tile(float *restrict o, float *restrict p, float *restrict zs,
                               int K, float mix, const float *restrict uniform) {
    float t[64][WZ_TILE], mx[WZ_TILE], sum[WZ_TILE], tot[WZ_TILE], cnt[WZ_TILE];
    for (int c = 0; c < K; c++)
        for (int j = 0; j < WZ_TILE; j++) t[c][j] = o[j * K + c];
    for (int j = 0; j < WZ_TILE; j++) mx[j] = t[0][j], sum[j] = 0, tot[j] = 0, cnt[j] = 0;
    for (int c = 1; c < K; c++)
        for (int j = 0; j < WZ_TILE; j++) mx[j] = t[c][j] > mx[j] ? t[c][j] : mx[j];
    for (int c = 0; c < K; c++)
        for (int j = 0; j < WZ_TILE; j++) {
            t[c][j] = wz_exp(t[c][j] - mx[j]);
            sum[j] += t[c][j];
        }
    for (int j = 0; j < WZ_TILE; j++) sum[j] = 1.0f / sum[j];
    for (int c = 0; c < K; c++)
        for (int j = 0; j < WZ_TILE; j++) {
            float sf = t[c][j] * sum[j];
            o[j * K + c] = sf;
            t[c][j] = mix > 0 ? sf * (1.0f - mix) + mix / K : sf;
        }
    for (int c = 0; c < K; c++)
        for (int j = 0; j < WZ_TILE; j++) p[j * K + c] = t[c][j];
    for (int c = 0; c < K; c++)
        for (int j = 0; j < WZ_TILE; j++) t[c][j] = tot[j] += t[c][j]; /* the cdf */
    for (int j = 0; j < WZ_TILE; j++) tot[j] *= uniform[j];
    for (int c = 0; c < K; c++)
        for (int j = 0; j < WZ_TILE; j++) cnt[j] += t[c][j] <= tot[j] ? 1.0f : 0.0f;
    memset(zs, 0, sizeof(float) * WZ_TILE * K);
    for (int j = 0; j < WZ_TILE; j++) {
        int idx = (int)cnt[j];
        zs[j * K + (idx > K - 1 ? K - 1 : idx)] = 1.0f;
    }
}

/* a row's k latents: by tiles of 16 where they fit, else one at a time */
static inline void latent_row(float *restrict o, float *restrict p, float *restrict zs, int k,
                              int K, float mix, const float *restrict uniform,
                              float *restrict work) {
    if (k % WZ_TILE == 0 && K <= 64) {
        for (int j = 0; j < k; j += WZ_TILE)
            latent_tile(o + j * K, p + j * K, zs + j * K, K, mix, uniform + j);
    } else {
        latent_fwd(o, p, zs, k, K, mix, uniform, work);
    }
}

/* ... and backward: the gradient w.r.t. the raw outputs from those w.r.t. the sample (gs,
   straight-through) and the logits (gl: log p with unimix, else the raw outputs) */
static void latent_bwd(const float *restrict sf, const float *restrict p,
                       const float *restrict gs, const float *restrict gl, int K, float mix,
                       float *restrict out) {
    float s = 0;
    if (mix > 0)
        for (int c = 0; c < K; c++) out[c] = (gs[c] + gl[c] / p[c]) * (1.0f - mix);
    else
        for (int c = 0; c < K; c++) out[c] = gs[c];
#pragma omp simd reduction(+ : s)
    for (int c = 0; c < K; c++) s += out[c] * sf[c];
    if (mix > 0)
        for (int c = 0; c < K; c++) out[c] = sf[c] * (out[c] - s);
    else
        for (int c = 0; c < K; c++) out[c] = sf[c] * (out[c] - s) + gl[c];
}

/* y[M, N] = x[M, K] @ W^T + beta * y for W [N, K] (row stride ldw), all row-major */
static void mm_nt(sgemm_fn f, int M, int N, int K, const float *x, int ldx, const float *w,
                  int ldw, float beta, float *y, int ldy) {
    const float one = 1.0f;
    f("T", "N", &N, &M, &K, &one, w, &ldw, x, &ldx, &beta, y, &ldy);
}

/* y[M, N] = g[M, K] @ W + beta * y for W [K, N] (row stride ldw), all row-major */
static void mm_nn(sgemm_fn f, int M, int N, int K, const float *g, int ldg, const float *w,
                  int ldw, float beta, float *y, int ldy) {
    const float one = 1.0f;
    f("N", "N", &N, &M, &K, &one, w, &ldw, g, &ldg, &beta, y, &ldy);
}

/* A weight operand of the per-step products: y[M, N] = x[M, K] @ op(W) with op(W) = W^T
   (W [N, K], `trans`) or W (W [K, N]); packed once where MKL's packed GEMM is there, else
   multiplied by plain sgemm: by `plain`, a row-major [K, N] op(W) (W itself or a transposed
   copy: 16 rows times W^T are 2-3x slower on MKL) where given, else by op(W) as it is */
typedef struct {
    const wz_observe_args *a;
    int M, N, K, ld, trans, ld_plain;
    const float *w, *plain;
    float *packed;
} wz_mat;

static wz_mat mat(const wz_observe_args *a, int M, int N, int K, const float *w, int ld,
                  int trans, const float *plain, int ld_plain) {
    wz_mat m = {a, M, N, K, ld, trans, ld_plain, w, plain, NULL};
    if (a->pack_size) {
        m.packed = malloc(a->pack_size(B_MATRIX, M, N, K));
        if (m.packed) /* (else, out of memory: plain sgemm) */
            a->pack(ROW_MAJOR, B_MATRIX, trans ? TRANS : NO_TRANS, M, N, K, 1.0f, w, ld,
                    m.packed);
    }
    return m;
}

static void mm(const wz_mat *m, const float *x, int ldx, float beta, float *y, int ldy) {
    if (m->packed)
        m->a->compute(ROW_MAJOR, NO_TRANS, PACKED, m->M, m->N, m->K, x, ldx, m->packed, m->N,
                      beta, y, ldy);
    else if (m->plain)
        mm_nn(m->a->sgemm, m->M, m->N, m->K, x, ldx, m->plain, m->ld_plain, beta, y, ldy);
    else if (m->trans)
        mm_nt(m->a->sgemm, m->M, m->N, m->K, x, ldx, m->w, m->ld, beta, y, ldy);
    else
        mm_nn(m->a->sgemm, m->M, m->N, m->K, x, ldx, m->w, m->ld, beta, y, ldy);
}

int wz_observe_forward(const wz_observe_args *a) {
    const int B = a->B, T = a->T, S = a->S, k = a->k, K = a->K, H = a->H, D = a->D;
    const int X = H + D;
    const float mix = a->unimix;
    float *hcur = a->work;          /* [B, D] */
    float *zcur = a->work + B * D;  /* [B, S] */
    float *ng = zcur + B * S;       /* [B, 3D] */
    float *scratch = ng + B * 3 * D; /* S + 2k */
    memcpy(hcur, a->h0, sizeof(float) * B * D);
    memcpy(zcur, a->z0, sizeof(float) * B * S);
    wz_mat m_s = mat(a, B, H, S, a->w_s, a->ld_in, 1, a->wt_s, H);
    wz_mat m_gru = mat(a, B, 3 * D, X, a->w_gru, X, 1, a->wt_gru, 3 * D);
    wz_mat m_d = mat(a, B, H, D, a->w_d, a->ld_post, 1, a->wt_d, H);
    wz_mat m_out = mat(a, B, S, H, a->w_out, H, 1, a->wt_out, S);
    for (int t = 0; t < T; t++) {
        size_t bh = (size_t)t * B * H, bd = (size_t)t * B * D, bs = (size_t)t * B * S;
        if (a->starts[t])
            for (int b = 0; b < B; b++) {
                float f = a->first[(size_t)b * T + t];
                for (int i = 0; i < D; i++)
                    hcur[b * D + i] = hcur[b * D + i] * (1.0f - f) + a->init_h[b * D + i] * f;
                for (int i = 0; i < S; i++)
                    zcur[b * S + i] = zcur[b * S + i] * (1.0f - f) + a->init_z[b * S + i] * f;
            }
        float *z = a->z + bs, *u1 = a->u1 + bh, *n1 = a->n1 + bh, *xh = a->xh + (size_t)t * B * X;
        memcpy(z, zcur, sizeof(float) * B * S);
        memcpy(u1, a->pa + bh, sizeof(float) * B * H);
        mm(&m_s, z, S, 1.0f, u1, H);
        if (a->normed)
            ln_fwd(u1, a->ln_in_w, a->ln_in_b, a->eps_in, B, H, n1, a->m1 + t * B, a->r1 + t * B);
        else
            memcpy(n1, u1, sizeof(float) * B * H);
        for (int b = 0; b < B; b++) {
            act_fwd(a->act, n1 + b * H, xh + (size_t)b * X, H);
            memcpy(xh + (size_t)b * X + H, hcur + b * D, sizeof(float) * D);
        }
        float *ug = a->ug + 3 * bd;
        mm(&m_gru, xh, X, 0.0f, ug, 3 * D);
        ln_fwd(ug, a->ln_gru_w, a->ln_gru_b, a->eps_gru, B, 3 * D, ng, a->mg + t * B, a->rg + t * B);
        float *reset = a->reset + bd, *cand = a->cand + bd, *nw = a->newh + bd, *upd = a->upd + bd;
        float *h = a->h + bd;
        for (int b = 0; b < B; b++) {
            gates_fwd(ng + b * 3 * D, hcur + b * D, D, reset + b * D, cand + b * D,
                      nw + b * D, upd + b * D, h + b * D);
            memcpy(hcur + b * D, h + b * D, sizeof(float) * D);
            memcpy(a->out_deter + ((size_t)b * T + t) * D, h + b * D, sizeof(float) * D);
        }
        float *u2 = a->u2 + bh, *n2 = a->n2 + bh, *y = a->y + bh;
        memcpy(u2, a->pe + bh, sizeof(float) * B * H);
        mm(&m_d, h, D, 1.0f, u2, H);
        if (a->normed)
            ln_fwd(u2, a->ln_post_w, a->ln_post_b, a->eps_post, B, H, n2, a->m2 + t * B,
                   a->r2 + t * B);
        else
            memcpy(n2, u2, sizeof(float) * B * H);
        act_fwd(a->act, n2, y, B * H);
        float *soft = a->soft + bs, *probs = a->probs + bs;
        for (int b = 0; b < B; b++) memcpy(soft + b * S, a->b_out, sizeof(float) * S);
        mm(&m_out, y, H, 1.0f, soft, S); /* raw outputs */
        for (int b = 0; b < B; b++) {
            float *lo = a->out_logits + ((size_t)b * T + t) * S;
            float *st = a->out_stoch + ((size_t)b * T + t) * S;
            if (mix == 0) memcpy(lo, soft + b * S, sizeof(float) * S);
            latent_row(soft + b * S, probs + b * S, zcur + b * S, k, K, mix,
                       a->uniform + ((size_t)t * B + b) * k, scratch);
            memcpy(st, zcur + b * S, sizeof(float) * S);
            if (mix > 0) memcpy(lo, probs + b * S, sizeof(float) * S);
        }
    }
    free(m_s.packed), free(m_gru.packed), free(m_d.packed), free(m_out.packed);
    return 0;
}

int wz_observe_backward(const wz_observe_grad_args *g) {
    const wz_observe_args *a = g->f;
    const int B = a->B, T = a->T, S = a->S, k = a->k, K = a->K, H = a->H, D = a->D;
    const int X = H + D;
    const float mix = a->unimix;
    float *gy = g->work;            /* [B, H] */
    float *gxh = gy + B * H;        /* [B, H + D] */
    float *ghd = gxh + B * X;       /* [B, D] */
    float *gzs = ghd + B * D;       /* [B, S] */
    float *gh = g->gh, *gz = g->gz;
    /* the transposed products: g @ W for each weight W of the forward */
    wz_mat m_out = mat(a, B, H, S, a->w_out, H, 0, a->w_out, H);
    wz_mat m_d = mat(a, B, D, H, a->w_d, a->ld_post, 0, a->w_d, a->ld_post);
    wz_mat m_gru = mat(a, B, X, 3 * D, a->w_gru, X, 0, a->w_gru, X);
    wz_mat m_s = mat(a, B, S, H, a->w_s, a->ld_in, 0, a->w_s, a->ld_in);
    for (int t = T - 1; t >= 0; t--) {
        size_t bh = (size_t)t * B * H, bd = (size_t)t * B * D, bs = (size_t)t * B * S;
        float *go = g->g_o + bs;
        for (int b = 0; b < B; b++) {
            const float *gst = g->g_stoch + ((size_t)b * T + t) * S;
            const float *glo = g->g_logits + ((size_t)b * T + t) * S;
            const float *gd = g->g_deter + ((size_t)b * T + t) * D;
            for (int i = 0; i < S; i++) gzs[b * S + i] = gz[b * S + i] + gst[i];
            for (int i = 0; i < D; i++) gh[b * D + i] += gd[i];
            for (int j = 0; j < k; j++) {
                size_t o = (size_t)b * S + j * K;
                latent_bwd(a->soft + bs + o, a->probs + bs + o, gzs + o, glo + j * K, K, mix,
                           go + o);
            }
        }
        mm(&m_out, go, S, 0.0f, gy, H);
        float *gn2 = g->g_n2 + bh, *gu2 = g->g_u2 + bh;
        act_bwd(a->act, gy, a->n2 + bh, gn2, B * H);
        if (a->normed)
            ln_bwd(gn2, a->u2 + bh, a->m2 + t * B, a->r2 + t * B, a->ln_post_w, B, H, gu2);
        else
            memcpy(gu2, gn2, sizeof(float) * B * H);
        mm(&m_d, gu2, H, 1.0f, gh, D);
        const float *reset = a->reset + bd, *cand = a->cand + bd, *nw = a->newh + bd;
        const float *upd = a->upd + bd, *xh = a->xh + (size_t)t * B * X;
        float *gng = g->g_ng + 3 * bd;
        for (int b = 0; b < B; b++)
            gates_bwd(gh + b * D, reset + b * D, cand + b * D, nw + b * D, upd + b * D,
                      xh + (size_t)b * X + H, D, gng + b * 3 * D, ghd + b * D);
        float *gug = g->g_ug + 3 * bd;
        ln_bwd(gng, a->ug + 3 * bd, a->mg + t * B, a->rg + t * B, a->ln_gru_w, B, 3 * D, gug);
        mm(&m_gru, gug, 3 * D, 0.0f, gxh, X);
        float *gn1 = g->g_n1 + bh, *gu1 = g->g_u1 + bh;
        for (int b = 0; b < B; b++) {
            for (int i = 0; i < D; i++) gh[b * D + i] = ghd[b * D + i] + gxh[(size_t)b * X + H + i];
            act_bwd(a->act, gxh + (size_t)b * X, a->n1 + bh + b * H, gn1 + b * H, H);
        }
        if (a->normed)
            ln_bwd(gn1, a->u1 + bh, a->m1 + t * B, a->r1 + t * B, a->ln_in_w, B, H, gu1);
        else
            memcpy(gu1, gn1, sizeof(float) * B * H);
        mm(&m_s, gu1, H, 0.0f, gz, S);
        if (a->starts[t])
            for (int b = 0; b < B; b++) {
                float f = a->first[(size_t)b * T + t];
                for (int i = 0; i < D; i++) {
                    g->g_init_h[b * D + i] += gh[b * D + i] * f;
                    gh[b * D + i] *= 1.0f - f;
                }
                for (int i = 0; i < S; i++) {
                    g->g_init_z[b * S + i] += gz[b * S + i] * f;
                    gz[b * S + i] *= 1.0f - f;
                }
            }
    }
    free(m_s.packed), free(m_gru.packed), free(m_d.packed), free(m_out.packed);
    return 0;
}

/* Imagination's prior sample (no gradient): raw [N, k * K] to one-hot samples out
   [N, k * K] (rows ld_out apart), as the unroll samples its posterior, the rows split over
   the OpenMP threads (PyTorch's own runtime where it is libgomp, loaded already: no second
   pool) */
int wz_sample_onehot(const float *raw, float *out, int ld_out, const float *uniform, int N,
                     int k, int K, float mix) {
    const int S = k * K;
#pragma omp parallel
    {
        float work[3 * S + 2 * k];
        float *o = work, *p = work + S, *scratch = work + 2 * S;
#pragma omp for schedule(static)
        for (int r = 0; r < N; r++) {
            memcpy(o, raw + (size_t)r * S, sizeof(float) * S);
            latent_row(o, p, out + (size_t)r * ld_out, k, K, mix, uniform + (size_t)r * k,
                       scratch);
        }
    }
    return 0;
}

/* dst[r, :n] = src[r, :n] for N rows (ld_src, ld_dst apart) */
int wz_copy_rows(const float *src, int ld_src, float *dst, int ld_dst, int N, int n) {
#pragma omp parallel for schedule(static)
    for (int r = 0; r < N; r++)
        memcpy(dst + (size_t)r * ld_dst, src + (size_t)r * ld_src, sizeof(float) * n);
    return 0;
}
