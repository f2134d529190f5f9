// vitcore CUDA kernels: helpers shared by every kernel file (handed to NVRTC as a header).
//
// Conventions for all kernels:
// * f32 everywhere; element counts and offsets are 64-bit (`long long`) so tensors past 2^31
//   elements stay correct; matrix dimensions are `int`.
// * Every kernel bounds-checks, so any size works with the launch geometry its file documents.
// * A warp is 32 lanes (true of every NVIDIA GPU so far, and of sm_75+); nothing assumes more.
// * Reductions use `__shfl_xor_sync` butterflies: after log2(32) = 5 steps every lane holds the
//   total, so no lane has to broadcast it afterwards.
#pragma once

#define VC_WARP 32
#define VC_FULL_MASK 0xffffffffu
// -inf without <math.h> (NVRTC compiles without the C library headers).
#define VC_NEG_INF (__int_as_float(0xff800000))

// Grid-stride loop over [0, n): any grid size covers any n (the grid is capped on the host).
#define VC_GRID_STRIDE(i, n)                                                          \
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < (n);     \
         i += (long long)gridDim.x * blockDim.x)

static __device__ __forceinline__ float vc_warp_sum(float v) {
#pragma unroll
    for (int o = VC_WARP / 2; o > 0; o >>= 1) v += __shfl_xor_sync(VC_FULL_MASK, v, o);
    return v;
}

static __device__ __forceinline__ double vc_warp_sum_d(double v) {
#pragma unroll
    for (int o = VC_WARP / 2; o > 0; o >>= 1) v += __shfl_xor_sync(VC_FULL_MASK, v, o);
    return v;
}

static __device__ __forceinline__ float vc_warp_max(float v) {
#pragma unroll
    for (int o = VC_WARP / 2; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(VC_FULL_MASK, v, o));
    return v;
}

// Sum over a whole block (blockDim.x a multiple of 32, at most 1024): warp sums, then the first
// warp sums the per-warp results. `scratch` needs 32 floats of shared memory. Every thread gets
// the total. The trailing __syncthreads lets the caller reuse `scratch` at once.
static __device__ __forceinline__ float vc_block_sum(float v, float* scratch) {
    const int lane = threadIdx.x % VC_WARP, warp = threadIdx.x / VC_WARP;
    const int nwarps = (blockDim.x + VC_WARP - 1) / VC_WARP;
    v = vc_warp_sum(v);
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    v = (lane < nwarps) ? scratch[lane] : 0.0f;
    v = vc_warp_sum(v);  // every warp reduces the same values: all threads get the total
    __syncthreads();
    return v;
}

static __device__ __forceinline__ float vc_block_max(float v, float* scratch) {
    const int lane = threadIdx.x % VC_WARP, warp = threadIdx.x / VC_WARP;
    const int nwarps = (blockDim.x + VC_WARP - 1) / VC_WARP;
    v = vc_warp_max(v);
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    v = (lane < nwarps) ? scratch[lane] : VC_NEG_INF;
    v = vc_warp_max(v);
    __syncthreads();
    return v;
}

// Warp-per-row kernels keep a row in registers when it has at most VC_ROW_CACHE · 32 elements
// (lane l holds elements l, l + 32, ...), so they read it from global memory once instead of
// once per pass; longer rows are re-read (from L1/L2 on a GPU). The cached and re-read paths
// visit the elements in the same order, so they compute the same bits.
#define VC_ROW_CACHE 8

// Online (one-pass) softmax statistics: a running maximum m and the sum s of e^{x - m}.
// Merging two partial states rescales the one with the smaller maximum. A state that has seen
// nothing (m = -inf, s = 0) merges as the identity instead of producing e^{-inf - -inf} = NaN.
// Non-finite inputs give what the CPU's two-pass form gives (src/ops/softmax.rs): a NaN
// anywhere, or a +inf (the sum then holds e^{inf - inf} = NaN), makes the sum NaN, and a NaN sum
// is never mistaken for an empty state, so it reaches every element of the row.
struct VcMaxSum {
    float m, s;
};

static __device__ __forceinline__ bool vc_maxsum_empty(VcMaxSum a) {
    return a.m == VC_NEG_INF && a.s == 0.0f;  // false for a NaN sum
}

static __device__ __forceinline__ VcMaxSum vc_maxsum_merge(VcMaxSum a, VcMaxSum b) {
    if (vc_maxsum_empty(a)) return b;
    if (vc_maxsum_empty(b)) return a;
    const float m = fmaxf(a.m, b.m);
    return VcMaxSum{m, a.s * expf(a.m - m) + b.s * expf(b.m - m)};
}

// Add one element: one exponential per element (rescale the sum only when the maximum grows).
static __device__ __forceinline__ VcMaxSum vc_maxsum_push(VcMaxSum a, float x) {
    if (x > a.m) {
        // A new +inf maximum: the CPU's sum holds e^{inf - inf} = NaN, so this one does too.
        a.s = x == -VC_NEG_INF ? __int_as_float(0x7fffffff)
                               : (vc_maxsum_empty(a) ? 0.0f : a.s * expf(a.m - x)) + 1.0f;
        a.m = x;
    } else if (x != VC_NEG_INF) {  // -inf adds e^{-inf} = 0 (and must not compute -inf - -inf)
        a.s += expf(x - a.m);        // a NaN x lands here and makes the sum NaN, as it should
    }
    return a;
}

static __device__ __forceinline__ VcMaxSum vc_warp_maxsum(VcMaxSum a) {
#pragma unroll
    for (int o = VC_WARP / 2; o > 0; o >>= 1) {
        VcMaxSum b{__shfl_xor_sync(VC_FULL_MASK, a.m, o), __shfl_xor_sync(VC_FULL_MASK, a.s, o)};
        a = vc_maxsum_merge(a, b);
    }
    return a;
}

// ---- the dropout mask (src/ops/dropout.rs), shared by dropout.cu and gelu.cu ----------------
// keep_uniform is the CPU's expression bit for bit: MurmurHash3's fmix32 twice over the element
// index (as u32) and the two halves of the 64-bit seed. Its output h >> 8 < 2^24 converts to f32
// exactly and the scale by 2^-24 is exact, so the comparison with p — hence the mask — is
// identical on both devices.
static __device__ __forceinline__ unsigned int vc_fmix32(unsigned int h) {
    h ^= h >> 16;
    h *= 0x85ebca6bu;  // unsigned multiply wraps mod 2^32, like Rust's wrapping_mul
    h ^= h >> 13;
    h *= 0xc2b2ae35u;
    return h ^ (h >> 16);
}

static __device__ __forceinline__ float vc_keep_uniform(unsigned long long seed, unsigned int i) {
    const unsigned int h =
        vc_fmix32((vc_fmix32(i ^ (unsigned int)seed) + (unsigned int)(seed >> 32)) ^ 0x9e3779b9u);
    return (float)(h >> 8) * (1.0f / 16777216.0f);
}

// x · scale where element i is kept, exactly +0 where it is dropped (the CPU's `masked`). The
// index is hashed as u32, as on the CPU (which refuses tensors of 2^32+ elements).
static __device__ __forceinline__ float vc_dropout(float x, long long i, float p, float scale,
                                                   unsigned long long seed) {
    return vc_keep_uniform(seed, (unsigned int)i) >= p ? __fmul_rn(x, scale) : 0.0f;
}
