// Layer normalisation over the last axis (affine), forward and backward.
//
// Math (src/ops/layernorm.rs), for each row x of length D with γ, β: [D]:
//     μ = (1/D) Σ x_i      σ² = (1/D) Σ (x_i − μ)²  (biased)      r = 1/√(σ² + eps)
//     x̂_i = (x_i − μ)·r    y_i = γ_i x̂_i + β_i                    μ and r saved per row
// Backward with G = dL/dy:
//     dx_k = r · (G_k γ_k − mean_i(G_i γ_i) − x̂_k · mean_i(G_i γ_i x̂_i))
//     dγ = Σ_rows G ⊙ x̂       dβ = Σ_rows G
//
// Launch geometry:
// * layernorm_fwd, layernorm_bwd_dx — one warp per row, block 128 (4 rows), grid ⌈rows/4⌉
//   (capped, grid stride). Per-row work is a couple of reductions over D ≤ a few thousand (ViT:
//   192–1024), which one warp does with shuffles and no shared memory; two passes (mean, then
//   variance, as the CPU, which avoids the cancellation of E[x²] − μ²) over the row held in
//   registers up to 256 elements (read once: common.cuh's VC_ROW_CACHE), re-read from L1/L2
//   above.
// * layernorm_bwd_params_partial — dγ, dβ are sums over rows, i.e. column sums: block (32, 8),
//   grid (⌈D/32⌉, chunks). threadIdx.x walks 32 adjacent columns (coalesced loads), the 8 rows
//   of threads stride the rows of one chunk, and shared memory folds the 8 partial sums. Each
//   chunk writes its own partial row [dγ | dβ] (no atomics: deterministic); the host then sums
//   the chunk rows with elementwise.cu's sum_rows.
#include "common.cuh"

extern "C" __global__ void layernorm_fwd(const float* __restrict__ x, const float* __restrict__ gamma,
                                         const float* __restrict__ beta, float* __restrict__ y,
                                         float* __restrict__ mean, float* __restrict__ rstd,
                                         long long rows, int d, float eps) {
        const int lane = threadIdx.x % VC_WARP;
    const long long warps_per_block = blockDim.x / VC_WARP;
    // Short rows: γ and β in registers for all the rows this warp does, each row read once.
    const bool cached = d <= VC_WARP * VC_ROW_CACHE;
    float gm[VC_ROW_CACHE], bt[VC_ROW_CACHE];
#pragma unroll
    for (int k = 0; k < VC_ROW_CACHE; ++k) {
            if (k * VC_WARP >= d) break;  // the slots this row needs (uniform over the warp)
        const int i = lane + k * VC_WARP;
        gm[k] = cached && i < d ? gamma[i] : 0.0f;
        bt[k] = cached && i < d ? beta[i] : 0.0f;
    }
    for (long long row = blockIdx.x * warps_per_block + threadIdx.x / VC_WARP; row < rows;
         row += (long long)gridDim.x * warps_per_block) {
        const float* xr = x + row * d;
        if (cached) {  // one read of the row (see common.cuh)
            float v[VC_ROW_CACHE];
            float s = 0.0f;
#pragma unroll
            for (int k = 0; k < VC_ROW_CACHE; ++k) {
            if (k * VC_WARP >= d) break;  // the slots this row needs (uniform over the warp)
                const int i = lane + k * VC_WARP;
                v[k] = i < d ? xr[i] : 0.0f;
                if (i < d) s += v[k];
            }
            const float mu = vc_warp_sum(s) / (float)d;
            float ss = 0.0f;
#pragma unroll
            for (int k = 0; k < VC_ROW_CACHE; ++k) {
            if (k * VC_WARP >= d) break;  // the slots this row needs (uniform over the warp)
                const float c = v[k] - mu;
                if (lane + k * VC_WARP < d) ss += c * c;
            }
            const float var = vc_warp_sum(ss) / (float)d;
            const float r = 1.0f / sqrtf(var + eps);
            float* yr = y + row * d;
#pragma unroll
            for (int k = 0; k < VC_ROW_CACHE; ++k) {
            if (k * VC_WARP >= d) break;  // the slots this row needs (uniform over the warp)
                const int i = lane + k * VC_WARP;
                                if (i < d) yr[i] = (v[k] - mu) * r * gm[k] + bt[k];
            }
            if (lane == 0) {
                mean[row] = mu;
                rstd[row] = r;
            }
            continue;
        }
        float s = 0.0f;
        for (int i = lane; i < d; i += VC_WARP) s += xr[i];
        const float mu = vc_warp_sum(s) / (float)d;
        float ss = 0.0f;
        for (int i = lane; i < d; i += VC_WARP) {
            const float c = xr[i] - mu;
            ss += c * c;
        }
        const float var = vc_warp_sum(ss) / (float)d;
        const float r = 1.0f / sqrtf(var + eps);  // IEEE sqrt and divide, as the CPU (not rsqrtf)
        float* yr = y + row * d;
        for (int i = lane; i < d; i += VC_WARP) yr[i] = (xr[i] - mu) * r * gamma[i] + beta[i];
        if (lane == 0) {
            mean[row] = mu;
            rstd[row] = r;
        }
    }
}

extern "C" __global__ void layernorm_bwd_dx(const float* __restrict__ g, const float* __restrict__ x,
                                            const float* __restrict__ gamma,
                                            const float* __restrict__ mean,
                                            const float* __restrict__ rstd, float* __restrict__ dx,
                                            long long rows, int d) {
    const int lane = threadIdx.x % VC_WARP;
    const long long warps_per_block = blockDim.x / VC_WARP;
    const bool cached = d <= VC_WARP * VC_ROW_CACHE;
    float gm[VC_ROW_CACHE];
#pragma unroll
    for (int k = 0; k < VC_ROW_CACHE; ++k) gm[k] = cached && lane + k * VC_WARP < d ? gamma[lane + k * VC_WARP] : 0.0f;
    for (long long row = blockIdx.x * warps_per_block + threadIdx.x / VC_WARP; row < rows;
         row += (long long)gridDim.x * warps_per_block) {
        const float* gr = g + row * d;
        const float* xr = x + row * d;
                        const float mu = mean[row], r = rstd[row];
        float s1 = 0.0f, s2 = 0.0f;
        if (cached) {  // one read of g and x (see common.cuh)
            float gv[VC_ROW_CACHE], xh[VC_ROW_CACHE];
#pragma unroll
            for (int k = 0; k < VC_ROW_CACHE; ++k) {
            if (k * VC_WARP >= d) break;  // the slots this row needs (uniform over the warp)
                const int i = lane + k * VC_WARP;
                                gv[k] = i < d ? gr[i] * gm[k] : 0.0f;
                xh[k] = i < d ? (xr[i] - mu) * r : 0.0f;
                if (i < d) {
                    s1 += gv[k];
                    s2 += gv[k] * xh[k];
                }
            }
            const float m1 = vc_warp_sum(s1) / (float)d;
            const float m2 = vc_warp_sum(s2) / (float)d;
            float* out = dx + row * d;
#pragma unroll
            for (int k = 0; k < VC_ROW_CACHE; ++k) {
            if (k * VC_WARP >= d) break;  // the slots this row needs (uniform over the warp)
                const int i = lane + k * VC_WARP;
                if (i < d) out[i] = r * (gv[k] - m1 - xh[k] * m2);
            }
            continue;
        }
        for (int i = lane; i < d; i += VC_WARP) {
            const float dxh = gr[i] * gamma[i];
            s1 += dxh;
            s2 += dxh * ((xr[i] - mu) * r);
        }
        const float m1 = vc_warp_sum(s1) / (float)d;
        const float m2 = vc_warp_sum(s2) / (float)d;
        float* out = dx + row * d;
        for (int i = lane; i < d; i += VC_WARP) {
            const float xh = (xr[i] - mu) * r;
            out[i] = r * (gr[i] * gamma[i] - m1 - xh * m2);
        }
    }
}

#define PR_X 32  // columns per block
#define PR_Y 8   // row lanes per block

extern "C" __global__ void layernorm_bwd_params_partial(const float* __restrict__ g,
                                                        const float* __restrict__ x,
                                                        const float* __restrict__ mean,
                                                        const float* __restrict__ rstd,
                                                        float* __restrict__ partial,
                                                        long long rows, int d,
                                                        long long rows_per_chunk) {
    __shared__ float sg[PR_Y][PR_X + 1], sb[PR_Y][PR_X + 1];  // +1: no bank conflicts on the fold
    const int tx = threadIdx.x, ty = threadIdx.y;
    const int col = blockIdx.x * PR_X + tx;
    const long long chunk = blockIdx.y;
    const long long r0 = chunk * rows_per_chunk;
    const long long r1 = min(rows, r0 + rows_per_chunk);
    float dg = 0.0f, db = 0.0f;
    if (col < d) {
        for (long long r = r0 + ty; r < r1; r += PR_Y) {
            const float gv = g[r * d + col];
            dg += gv * ((x[r * d + col] - mean[r]) * rstd[r]);
            db += gv;
        }
    }
    sg[ty][tx] = dg;
    sb[ty][tx] = db;
    __syncthreads();
    if (ty == 0 && col < d) {
        for (int k = 1; k < PR_Y; ++k) {
            dg += sg[k][tx];
            db += sb[k][tx];
        }
        partial[chunk * 2 * d + col] = dg;      // row `chunk` of [chunks, 2D]: dγ part
        partial[chunk * 2 * d + d + col] = db;  //                               dβ part
    }
}
