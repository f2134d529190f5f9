// cudasim's planted-bug set: small kernels, each with one classic defect, each next to its
// corrected twin. tests/planted.rs launches every pair on the simulator and asserts that the
// defect is reported by the right check (memcheck, racecheck, initcheck, synccheck, the
// watchdog), at the right PTX line, thread and address, and that the twin runs clean and
// computes the right numbers.
//
// kernels.ptx is this file compiled by gen_ptx.py (NVRTC, compute_75); its header records an
// FNV-1a hash of this file, which the test recomputes. Edit this file, then regenerate:
//   python3 cudasim/tests/planted/gen_ptx.py
//
// No atomics: the simulator does not model them, and none of the defects needs one.

// ---------------------------------------------------------------------------------------------
// 1. racecheck (shared): a block reduction whose tree loop lacks the __syncthreads() between
//    steps. Thread t reads s[t + stride], which thread t + stride wrote in the previous step
//    with no barrier between. One block of blockDim.x (a power of two, at most 256) threads sums
//    its slice of `in` into out[blockIdx.x].
extern "C" __global__ void reduce_missing_sync(const float* in, float* out, int n) {
    __shared__ float s[256];
    int t = threadIdx.x;
    int i = blockIdx.x * blockDim.x + t;
    s[t] = i < n ? in[i] : 0.0f;
    __syncthreads();
    for (int stride = blockDim.x / 2; stride > 0; stride >>= 1) {
        if (t < stride) s[t] += s[t + stride];
        // BUG: no __syncthreads() here
    }
    if (t == 0) out[blockIdx.x] = s[0];
}

extern "C" __global__ void reduce_fixed(const float* in, float* out, int n) {
    __shared__ float s[256];
    int t = threadIdx.x;
    int i = blockIdx.x * blockDim.x + t;
    s[t] = i < n ? in[i] : 0.0f;
    __syncthreads();
    for (int stride = blockDim.x / 2; stride > 0; stride >>= 1) {
        if (t < stride) s[t] += s[t + stride];
        __syncthreads();
    }
    if (t == 0) out[blockIdx.x] = s[0];
}

// ---------------------------------------------------------------------------------------------
// 2. memcheck (global): an off-by-one bound. Thread n stores one element past the end of `out`.
extern "C" __global__ void ramp_off_by_one(float* out, int n, float step) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i <= n) out[i] = step * (float)i;  // BUG: <= instead of <
}

extern "C" __global__ void ramp_fixed(float* out, int n, float step) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) out[i] = step * (float)i;
}

// ---------------------------------------------------------------------------------------------
// 3. racecheck (global): every block stores its row sum to the same word. One block per row;
//    thread 0 sums the row.
extern "C" __global__ void row_sum_same_slot(const float* in, float* out, int cols) {
    if (threadIdx.x != 0) return;
    const float* row = in + (size_t)blockIdx.x * cols;
    float acc = 0.0f;
    for (int c = 0; c < cols; ++c) acc += row[c];
    out[0] = acc;  // BUG: out[blockIdx.x]
}

extern "C" __global__ void row_sum_fixed(const float* in, float* out, int cols) {
    if (threadIdx.x != 0) return;
    const float* row = in + (size_t)blockIdx.x * cols;
    float acc = 0.0f;
    for (int c = 0; c < cols; ++c) acc += row[c];
    out[blockIdx.x] = acc;
}

// 3b. racecheck (global, between blocks): an in-place 3-point sum. Each block reads its
//     neighbours' edge elements (a halo), synchronises its own threads, then overwrites its own
//     elements: the barrier orders the block's own reads, but a neighbouring block overwrites
//     an element this block read (or reads one it overwrote), in whatever order blocks run.
extern "C" __global__ void sum3_in_place(float* x, int n) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    const float s = (i > 0 ? x[i - 1] : 0.0f) + x[i] + (i + 1 < n ? x[i + 1] : 0.0f);
    __syncthreads();
    x[i] = s;  // BUG: the halo reads of the neighbouring blocks race with this store
}

// 3d. racecheck (the read-only path): x is `const __restrict__`, so the compiler reads it with
//     ld.global.nc — a promise that nothing writes x during the launch. Called with x == y the
//     kernel breaks it: after the barrier thread i reads x[i + 1], which thread i + 1 wrote
//     through y, and the non-coherent path may still hold the old value.
extern "C" __global__ void shift_restrict(float* __restrict__ y, const float* __restrict__ x, int n) {
    const int i = threadIdx.x;
    y[i] = 2.0f * x[i];
    __syncthreads();
    if (i + 1 < n) y[i] += x[i + 1];  // BUG when x aliases y: an .nc read of a word written above
}

// 3c. The same race made to overlap: block 0 reads x[0], keeps busy, passes its barrier and
//     overwrites x[0]; block 1 keeps busy for less time, then reads x[0]. Run on two host
//     threads, block 1's read usually falls between block 0's read and its write — both reads
//     before the write, which only a record of "read by two blocks" can connect to the write.
//     (Busy loops with a result, not volatile locals: local memory is not simulated.)
extern "C" __global__ void read_then_overwrite(float* x, int spin0, int spin1) {
    float busy = 0.0f;
    if (blockIdx.x == 0) {
        const float v = x[0];
        for (int k = 0; k < spin0; ++k) busy = busy * 0.5f + 1.0f;
        __syncthreads();
        x[0] = v + busy;  // BUG: block 1 reads x[0] in the same launch
    } else {
        for (int k = 0; k < spin1; ++k) busy = busy * 0.5f + 1.0f;
        x[1] = x[0] + busy;
    }
}

extern "C" __global__ void sum3_fixed(const float* x, float* y, int n) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    y[i] = (i > 0 ? x[i - 1] : 0.0f) + x[i] + (i + 1 < n ? x[i + 1] : 0.0f);
}

// ---------------------------------------------------------------------------------------------
// 4. initcheck (global): accumulate into an output buffer that nobody zeroed. The test passes
//    a freshly allocated, never written `out` (the host forgot its memset).
extern "C" __global__ void accumulate_uninit(const float* in, float* out, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) out[i] += in[i];  // BUG: reads out[i], which was never written
}

extern "C" __global__ void accumulate_fixed(const float* in, float* out, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) out[i] = in[i];  // the first contribution stores; nothing read before
}

// ---------------------------------------------------------------------------------------------
// 5. initcheck (shared): a block of 64 threads reverses 64 values through a shared tile, but
//    only the first warp loads the tile; thread 0 then reads tile[63], never written.
extern "C" __global__ void reverse_half_loaded(const float* in, float* out) {
    __shared__ float tile[64];
    int t = threadIdx.x;
    if (t < 32) tile[t] = in[t];  // BUG: t < 64 (every thread loads its element)
    __syncthreads();
    out[t] = tile[63 - t];
}

extern "C" __global__ void reverse_fixed(const float* in, float* out) {
    __shared__ float tile[64];
    int t = threadIdx.x;
    tile[t] = in[t];
    __syncthreads();
    out[t] = tile[63 - t];
}

// ---------------------------------------------------------------------------------------------
// 6. synccheck (divergent barrier): __syncthreads() inside `if (threadIdx.x < 16)`; the other
//    threads of the block wait at the barrier after the branch instead. A block of 64 threads
//    adds s[t + 32] into the first 16 values, then rotates the data by 16 through shared memory.
extern "C" __global__ void barrier_in_branch(const float* in, float* out) {
    __shared__ float s[64];
    int t = threadIdx.x;
    s[t] = in[t];
    if (t < 16) {
        __syncthreads();  // BUG: only threads 0-15 reach this barrier
        s[t] += s[t + 32];
    }
    __syncthreads();
    out[t] = s[(t + 16) & 63];
}

extern "C" __global__ void barrier_fixed(const float* in, float* out) {
    __shared__ float s[64];
    int t = threadIdx.x;
    s[t] = in[t];
    __syncthreads();  // every thread of the block
    if (t < 16) s[t] += s[t + 32];
    __syncthreads();
    out[t] = s[(t + 16) & 63];
}

// ---------------------------------------------------------------------------------------------
// 7. synccheck (shuffle mask): a butterfly warp sum whose member mask 0xffff names lanes 0-15
//    only, while all 32 lanes execute it (and the xor-16 step reads lanes 16-31).
extern "C" __global__ void warp_sum_half_mask(const float* in, float* out) {
    int t = threadIdx.x;
    float v = in[t];
    for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(0xffff, v, off);  // BUG: 0xffffffff
    out[t] = v;
}

extern "C" __global__ void warp_sum_fixed(const float* in, float* out) {
    int t = threadIdx.x;
    float v = in[t];
    for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffff, v, off);
    out[t] = v;
}

// ---------------------------------------------------------------------------------------------
// 8. synccheck (shuffle with exited lanes): lanes past n return early, then the others shuffle
//    with a full member mask that still names them.
extern "C" __global__ void warp_sum_exited(const float* in, float* out, int n) {
    int t = threadIdx.x;
    if (t >= n) return;  // BUG: these lanes are named by the full mask below
    float v = in[t];
    for (int off = 16; off > 0; off >>= 1) v += __shfl_down_sync(0xffffffff, v, off);
    if (t == 0) out[0] = v;
}

extern "C" __global__ void warp_sum_exited_fixed(const float* in, float* out, int n) {
    int t = threadIdx.x;
    float v = t < n ? in[t] : 0.0f;  // every lane stays and contributes
    for (int off = 16; off > 0; off >>= 1) v += __shfl_down_sync(0xffffffff, v, off);
    if (t == 0) out[0] = v;
}

// ---------------------------------------------------------------------------------------------
// 9. memcheck (misaligned vector load): sums of groups of four floats that start one float into
//    the buffer (a one-element header), read as float4 — 16-byte loads at addresses that are
//    4 mod 16.
extern "C" __global__ void sum4_misaligned(const float* in, float* out, int groups) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < groups) {
        float4 v = reinterpret_cast<const float4*>(in + 1)[i];  // BUG: in + 1 is not 16-aligned
        out[i] = v.x + v.y + v.z + v.w;
    }
}

extern "C" __global__ void sum4_fixed(const float* in, float* out, int groups) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < groups) {
        const float* p = in + 1 + 4 * i;
        out[i] = p[0] + p[1] + p[2] + p[3];
    }
}

// 9b. memcheck (misaligned float2 load): thread r reads the first two values of row r as a
//     float2, but rows are 3 floats long, so odd rows start 4 mod 8.
extern "C" __global__ void row_head2_misaligned(const float* in, float* out, int rows, int cols) {
    int r = blockIdx.x * blockDim.x + threadIdx.x;
    if (r < rows) {
        float2 v = *reinterpret_cast<const float2*>(in + (size_t)r * cols);  // BUG: odd cols
        out[r] = v.x + v.y;
    }
}

extern "C" __global__ void row_head2_fixed(const float* in, float* out, int rows, int cols) {
    int r = blockIdx.x * blockDim.x + threadIdx.x;
    if (r < rows) {
        const float* p = in + (size_t)r * cols;
        out[r] = p[0] + p[1];
    }
}

// ---------------------------------------------------------------------------------------------
// 10. memcheck (use after free): a plain copy; the defect is the host's, which frees `in`
//     between launches and launches again with the stale pointer.
extern "C" __global__ void copy(const float* in, float* out, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) out[i] = in[i];
}

// ---------------------------------------------------------------------------------------------
// 11. watchdog: a spin-wait on a flag that nobody sets — the kernel never ends. The twin gives
//     up after max_spins polls and stores how many it made.
extern "C" __global__ void spin_until_flag(const volatile int* flag, int* out) {
    int spins = 0;
    while (*flag == 0) ++spins;  // BUG: waits forever when the flag is never set
    out[threadIdx.x] = spins;
}

extern "C" __global__ void spin_bounded(const volatile int* flag, int* out, int max_spins) {
    int spins = 0;
    while (*flag == 0 && spins < max_spins) ++spins;
    out[threadIdx.x] = spins;
}

// ---------------------------------------------------------------------------------------------
// 12. racecheck (block order): block 0 raises a flag that the other blocks read in the same
//     launch. What they read depends on which block ran first, which nothing orders.
extern "C" __global__ void flag_from_block0(int* flag, int* out) {
    if (threadIdx.x != 0) return;
    if (blockIdx.x == 0) {
        *flag = 1;  // BUG: the other blocks of this launch read it
    } else {
        out[blockIdx.x] = *flag;
    }
}

// The twin: the flag is raised by a launch of its own (set_flag), and the readers only read.
extern "C" __global__ void set_flag(int* flag) {
    if (threadIdx.x == 0 && blockIdx.x == 0) *flag = 1;
}

extern "C" __global__ void flag_read_only(const int* flag, int* out) {
    if (threadIdx.x != 0) return;
    out[blockIdx.x] = blockIdx.x == 0 ? 1 : *flag;
}

// ---------------------------------------------------------------------------------------------
// Correct kernels the checks must not flag.
//
// A long-running block: thread 0 marks out[0] as "running" (-1) before the first barrier, the
// block then steps `steps` times with two barriers a step (thread 0 publishes k through shared
// memory, everyone adds it), and thread 1 stores the total to out[0] at the end. The two stores
// to out[0] are by different threads, 2 * steps barriers apart: ordered, no race, for any steps.
extern "C" __global__ void long_ping_pong(int* out, int steps) {
    __shared__ int s;
    int t = threadIdx.x;
    int acc = 0;
    if (t == 0) out[0] = -1;
    for (int k = 0; k < steps; ++k) {
        if (t == 0) s = k;
        __syncthreads();
        acc += s;
        __syncthreads();
    }
    if (t == 1) out[0] = acc;
}
