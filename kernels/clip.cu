// Gradient clipping: the global L2 norm's sum of squares, and the in-place rescale / clamp.
//
// Math (src/optim/clip.rs):
//     ‖g‖² = Σ_params Σ_i g_i²                    accumulated in f64 (10⁷ terms and more)
//     by norm:   g ← g · s,  s = max_norm / max(‖g‖, max_norm)   (s computed by the host)
//     by value:  g_i ← clamp(g_i, −c, c)
//
// Launch geometry:
// * sum_squares_blocks — block 256, a fixed grid chosen by the host (a few blocks per SM), a
//   grid-stride loop; each thread sums its elements' squares in f64, the block folds them
//   (warp shuffles, then one warp over the warp sums) and writes one partial per block. The host
//   gives every gradient its own run of partials in one buffer and downloads them all at once:
//   one synchronisation per clip, whatever the number of parameters. The partial is written as
//   the square root of the block's sum, rounded to f32: a sum of squares overflows f32 for
//   gradients of 1e19, its root only when the gradient itself does; the host squares the roots
//   back in f64 (relative error 1e-7 per block: harmless for a norm).
// * scale_inplace, clamp_inplace — one thread per element, block 256, grid stride.
#include "common.cuh"

extern "C" __global__ void sum_squares_blocks(const float* __restrict__ x, float* __restrict__ partial,
                                              long long n) {
    __shared__ double warp_sums[VC_WARP];
    double acc = 0.0;
    VC_GRID_STRIDE(i, n) {
        const double v = (double)x[i];
        acc += v * v;
    }
    acc = vc_warp_sum_d(acc);
    const int lane = threadIdx.x % VC_WARP, warp = threadIdx.x / VC_WARP;
    if (lane == 0) warp_sums[warp] = acc;
    __syncthreads();
    if (warp == 0) {
        const int nwarps = (blockDim.x + VC_WARP - 1) / VC_WARP;
        acc = vc_warp_sum_d(lane < nwarps ? warp_sums[lane] : 0.0);
        if (lane == 0) partial[blockIdx.x] = (float)sqrt(acc);
    }
}

extern "C" __global__ void scale_inplace(float* __restrict__ y, long long n, float s) {
    VC_GRID_STRIDE(i, n) y[i] *= s;
}

extern "C" __global__ void clamp_inplace(float* __restrict__ y, long long n, float c) {
    // fminf/fmaxf return the number when one operand is NaN; the CPU's f32::clamp keeps the NaN.
    VC_GRID_STRIDE(i, n) {
        const float v = y[i];
        y[i] = (v != v) ? v : fminf(fmaxf(v, -c), c);
    }
}
