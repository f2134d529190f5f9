// Dropout with a counter-based hash mask, forward and backward.
//
// Math (src/ops/dropout.rs):
//     u_i = keep_uniform(seed, i) ∈ [0, 1) (24 bits),  keep_i = (u_i ≥ p)
//     forward:  y_i  = keep_i ? x_i · scale : 0        scale = 1/(1 − p), computed in f32 by the host
//     backward: dx_i = keep_i ? G_i · scale : 0        (the same mask, recomputed from the seed)
// keep_uniform is the CPU's expression bit for bit: MurmurHash3's fmix32 twice over the element
// index (as u32) and the two halves of the 64-bit seed. Its output h >> 8 < 2^24 converts to
// f32 exactly and the scale by 2^-24 is exact, so the comparison with p — hence the mask — is
// identical on both devices, and x · scale is one correctly rounded multiply on both.
//
// Launch geometry: one thread per element, block 256, grid ⌈n/256⌉ capped, grid stride. The
// mask is never stored: recomputing two hashes is cheaper than reading a mask from memory.
#include "common.cuh"

static __device__ __forceinline__ unsigned int fmix32(unsigned int h) {
    h ^= h >> 16;
    h *= 0x85ebca6bu;  // unsigned multiply wraps mod 2^32, like Rust's wrapping_mul
    h ^= h >> 13;
    h *= 0xc2b2ae35u;
    return h ^ (h >> 16);
}

static __device__ __forceinline__ float keep_uniform(unsigned long long seed, unsigned int i) {
    const unsigned int h =
        fmix32((fmix32(i ^ (unsigned int)seed) + (unsigned int)(seed >> 32)) ^ 0x9e3779b9u);
    return (float)(h >> 8) * (1.0f / 16777216.0f);
}

static __device__ __forceinline__ void dropout_apply(const float* __restrict__ x,
                                                     float* __restrict__ y, long long n, float p,
                                                     float scale, unsigned long long seed) {
    // The index is hashed as u32, as on the CPU (which refuses tensors of 2^32+ elements).
    VC_GRID_STRIDE(i, n) y[i] = keep_uniform(seed, (unsigned int)i) >= p ? __fmul_rn(x[i], scale) : 0.0f;
}

extern "C" __global__ void dropout_fwd(const float* __restrict__ x, float* __restrict__ y,
                                       long long n, float p, float scale,
                                       unsigned long long seed) {
    dropout_apply(x, y, n, p, scale, seed);
}

extern "C" __global__ void dropout_bwd(const float* __restrict__ g, float* __restrict__ dx,
                                       long long n, float p, float scale,
                                       unsigned long long seed) {
    dropout_apply(g, dx, n, p, scale, seed);
}
