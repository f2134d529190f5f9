// Dropout with a counter-based hash mask, forward and backward, and fused with the residual add.
//
// Math (src/ops/dropout.rs):
//     u_i = keep_uniform(seed, i) ∈ [0, 1) (24 bits),  keep_i = (u_i ≥ p)
//     forward:  y_i  = keep_i ? x_i · scale : 0        scale = 1/(1 − p), computed in f32 by the host
//     backward: dx_i = keep_i ? G_i · scale : 0        (the same mask, recomputed from the seed)
//     dropout_add (the residual form r + dropout(x)): y_i = r_i + (keep_i ? x_i · scale : 0);
//         its backward is dr = G (no kernel) and dx = dropout_bwd(G).
// The hash (vc_keep_uniform in common.cuh) is the CPU's bit for bit, so the mask is identical on
// both devices, and x · scale is one correctly rounded multiply on both (__fmul_rn: no FMA
// contraction with the add).
//
// Launch geometry: one thread per element, block 256, grid ⌈n/256⌉ capped, grid stride. The
// mask is never stored: recomputing two hashes is cheaper than reading a mask from memory.
#include "common.cuh"

extern "C" __global__ void dropout_fwd(const float* __restrict__ x, float* __restrict__ y,
                                       long long n, float p, float scale,
                                       unsigned long long seed) {
    VC_GRID_STRIDE(i, n) y[i] = vc_dropout(x[i], i, p, scale, seed);
}

extern "C" __global__ void dropout_bwd(const float* __restrict__ g, float* __restrict__ dx,
                                       long long n, float p, float scale,
                                       unsigned long long seed) {
    VC_GRID_STRIDE(i, n) dx[i] = vc_dropout(g[i], i, p, scale, seed);
}

extern "C" __global__ void dropout_add_fwd(const float* __restrict__ r, const float* __restrict__ x,
                                           float* __restrict__ y, long long n, float p,
                                           float scale, unsigned long long seed) {
    VC_GRID_STRIDE(i, n) y[i] = __fadd_rn(r[i], vc_dropout(x[i], i, p, scale, seed));
}
