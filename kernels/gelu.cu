// GELU activation, exact (erf) and tanh forms, forward and backward.
//
// Math (src/ops/gelu.rs), element-wise:
//     erf:   y = ½·x·erfc(−x/√2)                        y' = Φ(x) + x·φ(x),  Φ(x) = ½·erfc(−x/√2),
//                                                                             φ(x) = e^{−x²/2}/√(2π)
//     tanh:  y = ½·x·(1 + t),  t = tanh(u),  u = √(2/π)·(x + 0.044715·x³)
//            y' = ½(1 + t) + ½·x·(1 − t²)·√(2/π)·(1 + 3·0.044715·x²)
//     backward: dx = G · y'(x)
//     fused with the dropout after it (gelu_dropout):  y = keep ? gelu(x) · scale : 0,
//                                                     dx = (keep ? G · scale : 0) · y'(x)
// erfc (not 1 + erf) keeps the exact form accurate for very negative x, where 1 + erf cancels.
// (The CPU evaluates Φ and y' by polynomials for |x| ≤ 2.5; both agree to a few 1e-7.)
// `kind`: 0 = erf, 1 = tanh (the GeluKind order); uniform across the grid, so no divergence.
//
// Launch geometry: one thread per element, block 256, grid ⌈n/256⌉ capped with a grid-stride
// loop. Memory bound: consecutive threads touch consecutive floats (coalesced).
#include "common.cuh"

#define SQRT_2_OVER_PI 0.7978846f
#define FRAC_1_SQRT_2 0.70710678f
#define FRAC_1_SQRT_2PI 0.3989423f
#define GELU_C 0.044715f

static __device__ __forceinline__ float gelu(float x, int kind) {
    if (kind == 0) return 0.5f * x * erfcf(-x * FRAC_1_SQRT_2);
    return 0.5f * x * (1.0f + tanhf(SQRT_2_OVER_PI * (x + GELU_C * x * x * x)));
}

static __device__ __forceinline__ float gelu_grad(float x, int kind) {
    if (kind == 0) {
        const float cdf = 0.5f * erfcf(-x * FRAC_1_SQRT_2);
        return cdf + x * FRAC_1_SQRT_2PI * expf(-0.5f * x * x);
    }
    const float t = tanhf(SQRT_2_OVER_PI * (x + GELU_C * x * x * x));
    return 0.5f * (1.0f + t) + 0.5f * x * (1.0f - t * t) * SQRT_2_OVER_PI * (1.0f + 3.0f * GELU_C * x * x);
}

extern "C" __global__ void gelu_fwd(const float* __restrict__ x, float* __restrict__ y, long long n,
                                    int kind) {
    VC_GRID_STRIDE(i, n) y[i] = gelu(x[i], kind);
}

extern "C" __global__ void gelu_bwd(const float* __restrict__ g, const float* __restrict__ x,
                                    float* __restrict__ dx, long long n, int kind) {
    VC_GRID_STRIDE(i, n) dx[i] = g[i] * gelu_grad(x[i], kind);
}

extern "C" __global__ void gelu_dropout_fwd(const float* __restrict__ x, float* __restrict__ y,
                                            long long n, int kind, float p, float scale,
                                            unsigned long long seed) {
    VC_GRID_STRIDE(i, n) y[i] = vc_dropout(gelu(x[i], kind), i, p, scale, seed);
}

extern "C" __global__ void gelu_dropout_bwd(const float* __restrict__ g, const float* __restrict__ x,
                                            float* __restrict__ dx, long long n, int kind, float p,
                                            float scale, unsigned long long seed) {
    VC_GRID_STRIDE(i, n) dx[i] = vc_dropout(g[i], i, p, scale, seed) * gelu_grad(x[i], kind);
}
