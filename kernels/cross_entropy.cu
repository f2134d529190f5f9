// Cross-entropy on logits with label smoothing, forward and backward.
//
// Math (src/ops/cross_entropy.rs), logits z: [B, C], labels t_b, smoothing ε:
//     q_c = ε/C + (1 − ε)·[c = t]                          (target distribution)
//     log p_c = z_c − m − log Σ_j e^{z_j − m},  m = max_j z_j   (stable log-softmax)
//     forward:  loss_b = −Σ_c q_c · log p_c,   L = (1/B) Σ_b loss_b;  p is saved
//     backward: dz_{b,k} = s · (p_{b,k} − q_{b,k}),  s = G / B
//     (G is read from device memory: the upstream gradient is itself a GPU tensor, and reading it
//     on the host would stall the stream once per step)
//
// Launch geometry:
// * cross_entropy_fwd — one warp per sample row, block 128 (4 rows), grid ⌈B/4⌉ (capped, grid
//   stride): the row statistics are warp reductions (online max/sum, then the loss sum). It
//   writes p and one loss per row; the host sums the B losses with elementwise.cu's sum_all
//   (deterministic, f64), which is the mean.
// * cross_entropy_bwd — one thread per logit, block 256, grid ⌈B·C/256⌉ capped, grid stride.
// Labels are u32 and already checked < C by the host.
#include "common.cuh"

extern "C" __global__ void cross_entropy_fwd(const float* __restrict__ z,
                                             const unsigned int* __restrict__ labels,
                                             float* __restrict__ p, float* __restrict__ row_loss,
                                             long long rows, int c, float smoothing) {
    const int lane = threadIdx.x % VC_WARP;
    const long long warps_per_block = blockDim.x / VC_WARP;
    const float q_off = smoothing / (float)c, q_on = 1.0f - smoothing;
    for (long long row = blockIdx.x * warps_per_block + threadIdx.x / VC_WARP; row < rows;
         row += (long long)gridDim.x * warps_per_block) {
        const float* zr = z + row * c;
        const unsigned int t = labels[row];
        VcMaxSum st{VC_NEG_INF, 0.0f};
        for (int k = lane; k < c; k += VC_WARP) st = vc_maxsum_push(st, zr[k]);
        st = vc_warp_maxsum(st);
        const float log_sum = logf(st.s);
        float loss = 0.0f;
        for (int k = lane; k < c; k += VC_WARP) {
            const float logp = zr[k] - st.m - log_sum;
            p[row * c + k] = expf(logp);
            const float q = q_off + ((unsigned int)k == t ? q_on : 0.0f);
            loss -= q * logp;
        }
        loss = vc_warp_sum(loss);
        if (lane == 0) row_loss[row] = loss;
    }
}

extern "C" __global__ void cross_entropy_bwd(const float* __restrict__ p,
                                             const unsigned int* __restrict__ labels,
                                             float* __restrict__ dz, long long rows, int c,
                                             const float* __restrict__ g, float smoothing) {
    const float s = g[0] / (float)rows;  // the CPU's `g / b as f32`
    const float q_off = smoothing / (float)c, q_on = 1.0f - smoothing;
    const long long n = rows * c;
    VC_GRID_STRIDE(i, n) {
        const long long r = i / c;
        const unsigned int k = (unsigned int)(i % c);
        const float q = q_off + (k == labels[r] ? q_on : 0.0f);
        dz[i] = s * (p[i] - q);
    }
}
