// Fused Adam / AdamW step: one pass over (param, grad, m, v).
//
// Math (src/optim/adam.rs), step t, per element, scalars precomputed by the host in f64 and
// rounded to f32 once (as the CPU does, following PyTorch):
//     Adam  (L2):        g ← g + λ·p                            (l2 = λ, else 0)
//     AdamW (decoupled): p ← p·(1 − lr·λ)                        (decay_mul, else 1)
//     m ← m + (1 − β1)·(g − m)
//     v ← v·β2 + (1 − β2)·g·g
//     p ← p − step_size · m / (√v / √(1 − β2ᵗ) + eps),    step_size = lr / (1 − β1ᵗ)
// Every operation is written with the round-to-nearest intrinsics (__fmul_rn, __fadd_rn, ...),
// which the compiler may not fuse into FMAs: the same roundings in the same order as the CPU
// loop (Rust does not contract a·b + c either), so both backends take the same step bit for bit.
//
// Launch geometry: one thread per element, block 256, grid ⌈n/256⌉ capped, grid stride. The step
// is memory bound (16 bytes read and 12 written per element), so fusing into one pass over the
// four arrays is what matters, not the arithmetic.
#include "common.cuh"

extern "C" __global__ void adam_step(float* __restrict__ p, const float* __restrict__ g,
                                     float* __restrict__ m, float* __restrict__ v, long long n,
                                     float l2, float decay_mul, float one_minus_b1, float b2,
                                     float one_minus_b2, float bc2_sqrt, float eps,
                                     float step_size) {
    VC_GRID_STRIDE(i, n) {
        const float pi = p[i];
        float gi = g[i];
        if (l2 != 0.0f) gi = __fadd_rn(gi, __fmul_rn(l2, pi));
        const float pv = (decay_mul != 1.0f) ? __fmul_rn(pi, decay_mul) : pi;
        float mi = m[i];
        mi = __fadd_rn(mi, __fmul_rn(one_minus_b1, __fsub_rn(gi, mi)));
        const float vi = __fadd_rn(__fmul_rn(v[i], b2), __fmul_rn(__fmul_rn(one_minus_b2, gi), gi));
        const float denom = __fadd_rn(__fdiv_rn(__fsqrt_rn(vi), bc2_sqrt), eps);
        p[i] = __fadd_rn(pv, __fdiv_rn(__fmul_rn(-step_size, mi), denom));
        m[i] = mi;
        v[i] = vi;
    }
}
