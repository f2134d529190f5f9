// Softmax over the last axis, forward and backward.
//
// Math (src/ops/softmax.rs), for each row x of length n:
//     forward:   y_i = e^{x_i − m} / Σ_j e^{x_j − m},        m = max_j x_j   (stable: exponents ≤ 0)
//     backward:  dx_k = y_k · (G_k − ⟨G, y⟩)                 (uses only the saved output y)
//
// Launch geometry: rows are independent and each needs a reduction over the row, so one warp
// or one block owns a row and reduces with shuffles; no atomics, deterministic.
// * *_warp kernels — one warp per row, block 128 threads (4 rows per block), grid ⌈rows/4⌉
//   (capped; warps loop over rows by grid stride). For rows up to a few thousand (attention rows
//   are the number of tokens, 50–200): no shared memory, no __syncthreads, each lane strides the
//   row so a warp reads 32 consecutive floats per step (coalesced).
// * *_block kernels — one block per row, block 256 threads, grid = rows (capped, grid stride).
//   For long rows (e.g. 1000+ classes) where one warp would leave the GPU mostly idle.
// The forward makes one pass for the statistics using the online softmax (a running maximum and
// a sum rescaled whenever the maximum grows, see common.cuh) and one pass to write y: two reads
// of x instead of three.
#include "common.cuh"

extern "C" __global__ void softmax_fwd_warp(const float* __restrict__ x, float* __restrict__ y,
                                            long long rows, int n) {
    const int lane = threadIdx.x % VC_WARP;
    const long long warps_per_block = blockDim.x / VC_WARP;
    // The row index is the same for all 32 lanes, so a warp exits the loop together and every
    // shuffle has all its lanes present.
    for (long long row = blockIdx.x * warps_per_block + threadIdx.x / VC_WARP; row < rows;
         row += (long long)gridDim.x * warps_per_block) {
                const float* xr = x + row * n;
        float* yr = y + row * n;
        VcMaxSum st{VC_NEG_INF, 0.0f};
        if (n <= VC_WARP * VC_ROW_CACHE) {  // one read of the row (see common.cuh)
            float v[VC_ROW_CACHE];
#pragma unroll
            for (int k = 0; k < VC_ROW_CACHE; ++k) {
            if (k * VC_WARP >= n) break;  // the slots this row needs (uniform over the warp)
                const int i = lane + k * VC_WARP;
                v[k] = i < n ? xr[i] : 0.0f;
                if (i < n) st = vc_maxsum_push(st, v[k]);
            }
            st = vc_warp_maxsum(st);
            const float inv = 1.0f / st.s;
#pragma unroll
            for (int k = 0; k < VC_ROW_CACHE; ++k) {
            if (k * VC_WARP >= n) break;  // the slots this row needs (uniform over the warp)
                const int i = lane + k * VC_WARP;
                if (i < n) yr[i] = expf(v[k] - st.m) * inv;
            }
            continue;
        }
        for (int i = lane; i < n; i += VC_WARP) st = vc_maxsum_push(st, xr[i]);
        st = vc_warp_maxsum(st);
        const float inv = 1.0f / st.s;
        for (int i = lane; i < n; i += VC_WARP) yr[i] = expf(xr[i] - st.m) * inv;
    }
}

extern "C" __global__ void softmax_bwd_warp(const float* __restrict__ g, const float* __restrict__ y,
                                            float* __restrict__ dx, long long rows, int n) {
    const int lane = threadIdx.x % VC_WARP;
    const long long warps_per_block = blockDim.x / VC_WARP;
    for (long long row = blockIdx.x * warps_per_block + threadIdx.x / VC_WARP; row < rows;
         row += (long long)gridDim.x * warps_per_block) {
                const float* gr = g + row * n;
        const float* yr = y + row * n;
        float dot = 0.0f;
        if (n <= VC_WARP * VC_ROW_CACHE) {  // one read of g and y (see common.cuh)
            float gv[VC_ROW_CACHE], yv[VC_ROW_CACHE];
#pragma unroll
            for (int k = 0; k < VC_ROW_CACHE; ++k) {
            if (k * VC_WARP >= n) break;  // the slots this row needs (uniform over the warp)
                const int i = lane + k * VC_WARP;
                gv[k] = i < n ? gr[i] : 0.0f;
                yv[k] = i < n ? yr[i] : 0.0f;
                if (i < n) dot += gv[k] * yv[k];
            }
            dot = vc_warp_sum(dot);
#pragma unroll
            for (int k = 0; k < VC_ROW_CACHE; ++k) {
            if (k * VC_WARP >= n) break;  // the slots this row needs (uniform over the warp)
                const int i = lane + k * VC_WARP;
                if (i < n) dx[row * n + i] = yv[k] * (gv[k] - dot);
            }
            continue;
        }
        for (int i = lane; i < n; i += VC_WARP) dot += gr[i] * yr[i];
        dot = vc_warp_sum(dot);
        for (int i = lane; i < n; i += VC_WARP) dx[row * n + i] = yr[i] * (gr[i] - dot);
    }
}

// Block-wide merge of the online-softmax state; `sm`/`ss` hold 32 floats each in shared memory.
static __device__ __forceinline__ VcMaxSum vc_block_maxsum(VcMaxSum st, float* sm, float* ss) {
    const int lane = threadIdx.x % VC_WARP, warp = threadIdx.x / VC_WARP;
    const int nwarps = (blockDim.x + VC_WARP - 1) / VC_WARP;
    st = vc_warp_maxsum(st);
    if (lane == 0) {
        sm[warp] = st.m;
        ss[warp] = st.s;
    }
    __syncthreads();
    st = (lane < nwarps) ? VcMaxSum{sm[lane], ss[lane]} : VcMaxSum{VC_NEG_INF, 0.0f};
    st = vc_warp_maxsum(st);
    __syncthreads();  // the caller may reuse sm/ss for the next row
    return st;
}

extern "C" __global__ void softmax_fwd_block(const float* __restrict__ x, float* __restrict__ y,
                                             long long rows, int n) {
    __shared__ float sm[VC_WARP], ss[VC_WARP];
    for (long long row = blockIdx.x; row < rows; row += gridDim.x) {  // uniform per block
        const float* xr = x + row * n;
        float* yr = y + row * n;
        VcMaxSum st{VC_NEG_INF, 0.0f};
        for (int i = threadIdx.x; i < n; i += blockDim.x) st = vc_maxsum_push(st, xr[i]);
        st = vc_block_maxsum(st, sm, ss);
        const float inv = 1.0f / st.s;
        for (int i = threadIdx.x; i < n; i += blockDim.x) yr[i] = expf(xr[i] - st.m) * inv;
    }
}

extern "C" __global__ void softmax_bwd_block(const float* __restrict__ g, const float* __restrict__ y,
                                             float* __restrict__ dx, long long rows, int n) {
    __shared__ float scratch[VC_WARP];
    for (long long row = blockIdx.x; row < rows; row += gridDim.x) {
        const float* gr = g + row * n;
        const float* yr = y + row * n;
        float dot = 0.0f;
        for (int i = threadIdx.x; i < n; i += blockDim.x) dot += gr[i] * yr[i];
        dot = vc_block_sum(dot, scratch);
        for (int i = threadIdx.x; i < n; i += blockDim.x) dx[row * n + i] = yr[i] * (gr[i] - dot);
    }
}
