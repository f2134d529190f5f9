// Element-wise and data-movement kernels: broadcast adds, scale, column sums, permute,
// concat/slice, fill, in-place add, and a full sum.
//
// Math (src/ops/add.rs, scale.rs, shape.rs, concat.rs):
//   add_bcast_block    y[i] = a[i] + b[i mod block]   — b repeats every `block` elements: the
//                      residual add (block = n), bias add (block = D), position embedding
//                      (block = T·D): every broadcast over *leading* dimensions.
//   add_bcast_general  y = a + broadcast(b) for any numpy-style broadcast (b aligned right, each
//                      of its dimensions 1 or equal to a's), via per-dimension strides.
//   reduce_bcast_general  its backward for b: db[q] = Σ over the broadcast positions of G.
//   sum_rows           column sums of a [rows, cols] matrix: out[c] = Σ_r x[r, c]; the gradient
//                      of a bias (db = Σ_rows G) and of any leading broadcast.
//   scale              y = s·x (forward and backward: dx = s·G).
//   add_assign         y += x (gradient accumulation).
//   fill               y = v.
//   permute            y[i_0..i_{r-1}] = x[j] with j[perm[d]] = i_d; its backward is the
//                      inverse permutation (the host passes the inverse).
//   copy_rows          dst[o·dst_stride + dst_off + k] = src[o·src_stride + src_off + k],
//                      k < row_len: slice (the concat backward), concat (one call per input),
//                      unslice (the select backward, into a zero-filled dst).
//   sum_all            out[0] = scale · Σ x (one block, f64 accumulation): the mean loss.
//
// Launch geometry: element-wise kernels use one thread per output element, block 256, grid
// ⌈n/256⌉ capped with a grid-stride loop (coalesced, memory bound). sum_rows uses block
// (32, 8) and grid (⌈cols/32⌉, chunks): 32 threads along adjacent columns (coalesced), 8 along
// rows, a shared-memory fold of the 8, and one partial row per chunk of rows; with chunks > 1
// the host calls it again on the [chunks, cols] partials (two deterministic passes, no atomics).
// reduce_bcast_general uses one thread per element of b, each summing its broadcast positions
// in order (deterministic; b is small: a position embedding or a token). sum_all is one block of
// 1024 threads (it reduces a few thousand values: the per-sample losses).
#include "common.cuh"

#define VC_MAX_RANK 8

// Broadcast description, all in a's index space (b right-aligned and padded with 1s to a's rank).
// b_stride[d] is b's contiguous stride, 0 where b_shape[d] = 1 (that dimension is broadcast).
struct VcBcast {
    int rank;
    int pad_;
    long long a_shape[VC_MAX_RANK];
    long long a_stride[VC_MAX_RANK];
    long long b_shape[VC_MAX_RANK];
    long long b_stride[VC_MAX_RANK];
};

// Permutation description: output shape and, per output dimension, the stride of x it walks.
struct VcPerm {
    int rank;
    int pad_;
    long long out_shape[VC_MAX_RANK];
    long long src_stride[VC_MAX_RANK];
};

extern "C" __global__ void add_bcast_block(const float* __restrict__ a, const float* __restrict__ b,
                                           float* __restrict__ y, long long n, long long block) {
    VC_GRID_STRIDE(i, n) y[i] = a[i] + b[i % block];
}

extern "C" __global__ void add_bcast_general(const float* __restrict__ a, const float* __restrict__ b,
                                             float* __restrict__ y, long long n, VcBcast s) {
    VC_GRID_STRIDE(i, n) {
        long long rem = i, off = 0;
        for (int d = s.rank - 1; d >= 0; --d) {
            off += (rem % s.a_shape[d]) * s.b_stride[d];
            rem /= s.a_shape[d];
        }
        y[i] = a[i] + b[off];
    }
}

extern "C" __global__ void reduce_bcast_general(const float* __restrict__ g, float* __restrict__ out,
                                                long long nb, VcBcast s) {
    // How many a-positions map onto one b element.
    long long reps = 1;
    for (int d = 0; d < s.rank; ++d)
        if (s.b_shape[d] == 1) reps *= s.a_shape[d];
    VC_GRID_STRIDE(q, nb) {
        // This b element's coordinates → offset in g along the kept dimensions.
        long long rem = q, base = 0;
        for (int d = s.rank - 1; d >= 0; --d) {
            if (s.b_shape[d] != 1) {
                base += (rem % s.b_shape[d]) * s.a_stride[d];
                rem /= s.b_shape[d];
            }
        }
        // Walk the broadcast dimensions in row-major order (the CPU's summation order).
        float acc = 0.0f;
        for (long long j = 0; j < reps; ++j) {
            long long r = j, off = base;
            for (int d = s.rank - 1; d >= 0; --d) {
                if (s.b_shape[d] == 1) {
                    off += (r % s.a_shape[d]) * s.a_stride[d];
                    r /= s.a_shape[d];
                }
            }
            acc += g[off];
        }
        out[q] = acc;
    }
}

#define SR_X 32
#define SR_Y 8

extern "C" __global__ void sum_rows(const float* __restrict__ x, float* __restrict__ out,
                                    long long rows, long long cols, long long rows_per_chunk) {
    __shared__ float s[SR_Y][SR_X + 1];
    const int tx = threadIdx.x, ty = threadIdx.y;
    const long long col = (long long)blockIdx.x * SR_X + tx;
    const long long chunk = blockIdx.y;
    const long long r0 = chunk * rows_per_chunk;
    const long long r1 = min(rows, r0 + rows_per_chunk);
    float acc = 0.0f;
    if (col < cols)
        for (long long r = r0 + ty; r < r1; r += SR_Y) acc += x[r * cols + col];
    s[ty][tx] = acc;
    __syncthreads();
    if (ty == 0 && col < cols) {
        for (int k = 1; k < SR_Y; ++k) acc += s[k][tx];
        out[chunk * cols + col] = acc;
    }
}

extern "C" __global__ void scale(const float* __restrict__ x, float* __restrict__ y, long long n,
                                 float s) {
    VC_GRID_STRIDE(i, n) y[i] = s * x[i];
}

extern "C" __global__ void add_assign(float* __restrict__ y, const float* __restrict__ x,
                                      long long n) {
    VC_GRID_STRIDE(i, n) y[i] += x[i];
}

extern "C" __global__ void fill(float* __restrict__ y, long long n, float v) {
    VC_GRID_STRIDE(i, n) y[i] = v;
}

extern "C" __global__ void permute(const float* __restrict__ x, float* __restrict__ y, long long n,
                                   VcPerm p) {
    VC_GRID_STRIDE(i, n) {
        long long rem = i, off = 0;
        for (int d = p.rank - 1; d >= 0; --d) {
            off += (rem % p.out_shape[d]) * p.src_stride[d];
            rem /= p.out_shape[d];
        }
        y[i] = x[off];
    }
}

extern "C" __global__ void copy_rows(const float* __restrict__ src, float* __restrict__ dst,
                                     long long outer, long long row_len, long long src_stride,
                                     long long src_off, long long dst_stride, long long dst_off) {
    const long long n = outer * row_len;
    VC_GRID_STRIDE(i, n) {
        const long long o = i / row_len, k = i % row_len;
        dst[o * dst_stride + dst_off + k] = src[o * src_stride + src_off + k];
    }
}

extern "C" __global__ void sum_all(const float* __restrict__ x, float* __restrict__ out, long long n,
                                   double scale) {
    __shared__ double partial[VC_WARP];
    double acc = 0.0;
    for (long long i = threadIdx.x; i < n; i += blockDim.x) acc += (double)x[i];
    acc = vc_warp_sum_d(acc);
    const int lane = threadIdx.x % VC_WARP, warp = threadIdx.x / VC_WARP;
    if (lane == 0) partial[warp] = acc;
    __syncthreads();
    if (warp == 0) {
        const int nwarps = (blockDim.x + VC_WARP - 1) / VC_WARP;
        acc = vc_warp_sum_d(lane < nwarps ? partial[lane] : 0.0);
        if (lane == 0) out[0] = (float)(acc * scale);
    }
}
