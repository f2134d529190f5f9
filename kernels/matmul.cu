// Batched matrix multiply with transposed operands given by strides.
//
// Math (src/ops/matmul.rs): for each batch index z,
//     C[z] = op(A[z]) · op(B[z]) + beta · C[z]          op(A): [M, K]   op(B): [K, N]   C: [M, N]
//     C[i, j] = Σ_p op(A)[i, p] · op(B)[p, j]
// op(A)[i, p] = A[i·sa_i + p·sa_p] and op(B)[p, j] = B[p·sb_p + j·sb_j], so a transposed operand
// is just swapped strides: A stored [M, K] has (sa_i, sa_p) = (K, 1); A stored [K, M] and used
// transposed has (1, M). Likewise B: [K, N] → (sb_p, sb_j) = (N, 1); [N, K] transposed → (1, K).
// The backward passes (dA = G·Bᵀ, dB = Aᵀ·G, ...) are calls of these same kernels with other
// strides, so no transposed copy is ever made. C is contiguous, row stride N. beta = 0 writes C
// without reading it (C may hold garbage or NaN); beta = 1 accumulates (the linear layer writes
// its bias rows first, like the CPU kernel).
//
// Two kernels, same arguments, same results (up to summation order):
//
// matmul_tiled — the teaching version. Block (16, 16), grid (⌈N/16⌉, ⌈M/16⌉, batch). Each thread
//   computes one C element. The block walks K in steps of 16: it stages a 16×16 tile of op(A)
//   and one of op(B) in shared memory (each thread loads one element of each), synchronises, and
//   each thread does 16 multiply-adds from shared memory. Every global element is then read by
//   16 threads but fetched from DRAM once per block instead of 16 times.
//
// matmul_reg — the faster version. Block 256 threads, grid (⌈N/64⌉, ⌈M/64⌉, batch). A block
//   computes a 64×64 tile of C and each thread a 4×4 sub-tile held in registers. Per K-step of
//   16, a thread loads 4 elements of each operand tile into shared memory (k-major, so the inner
//   loop reads 4 consecutive floats of A and of B as one float4 each), then does 4×4 = 16
//   multiply-adds per 8 values read from shared memory: 2 FMAs per shared load instead of the
//   tiled kernel's 0.5, which is what made the tiled kernel shared-memory bound.
//   64×64 (not 128×128) keeps tiles useful for attention's small matrices (65×64 per head) and
//   keeps registers low (75–80 at sm_75/sm_90: 3 blocks per T4 SM) for occupancy.
//
// Both: offsets inside one matrix are 32-bit `int` (the host refuses a single matrix of 2^31 or
// more elements; the batch offset is 64-bit): 64-bit index arithmetic for the eight tile loads
// took matmul_reg from ~80 to ~125 registers. Sizes that are not tile multiples are handled by zero-filling out-of-range tile
// elements on load and masking stores. Which thread loads which tile element depends on which
// stride is 1, so consecutive threads read consecutive addresses (coalesced) whether or not the
// operand is transposed. Batch counts above 65535 (gridDim.z) and M above 65535 tiles are split
// by the host into several launches with offset pointers.
#include "common.cuh"

#define TS 16  // matmul_tiled tile edge

extern "C" __global__ void matmul_tiled(const float* __restrict__ A, const float* __restrict__ B,
                                        float* __restrict__ C, int M, int N, int K,
                                        int sa_i, int sa_p, int sb_p, int sb_j, long long bsa,
                                        long long bsb, long long bsc, float beta) {
    // +1 column: the transposed load pattern writes a column of the tile; with 17 floats per
    // row the 16 writes fall into 16 different banks.
    __shared__ float As[TS][TS + 1];  // As[i][p]
    __shared__ float Bs[TS][TS + 1];  // Bs[p][j]
    const int tx = threadIdx.x, ty = threadIdx.y;
    const long long z = blockIdx.z;
    A += z * bsa;
    B += z * bsb;
    C += z * bsc;
    const int row0 = blockIdx.y * TS, col0 = blockIdx.x * TS;
    // Loader roles: tx runs along the operand's contiguous direction.
    const bool a_p_contig = (sa_p == 1);
    const int ai = a_p_contig ? ty : tx, ap = a_p_contig ? tx : ty;
    const bool b_j_contig = (sb_j == 1);
    const int bp = b_j_contig ? ty : tx, bj = b_j_contig ? tx : ty;

    float acc = 0.0f;
    for (int k0 = 0; k0 < K; k0 += TS) {
        const int gi = row0 + ai, gp = k0 + ap;
        As[ai][ap] = (gi < M && gp < K) ? A[gi * sa_i + gp * sa_p] : 0.0f;
        const int gq = k0 + bp, gj = col0 + bj;
        Bs[bp][bj] = (gq < K && gj < N) ? B[gq * sb_p + gj * sb_j] : 0.0f;
        __syncthreads();
#pragma unroll
        for (int p = 0; p < TS; ++p) acc += As[ty][p] * Bs[p][tx];
        __syncthreads();  // before the next iteration overwrites the tiles
    }
    const int i = row0 + ty, j = col0 + tx;
    if (i < M && j < N) {
        float* c = C + (long long)i * N + j;
        *c = (beta == 0.0f) ? acc : acc + beta * *c;
    }
}

#define BM 64   // C tile rows per block
#define BN 64   // C tile columns per block
#define BK 16   // K step
#define TM 4    // C rows per thread
#define TN 4    // C columns per thread
#define NT 256  // threads per block = (BM / TM) * (BN / TN)

extern "C" __global__ void __launch_bounds__(NT)
    matmul_reg(const float* __restrict__ A, const float* __restrict__ B, float* __restrict__ C,
               int M, int N, int K, int sa_i, int sa_p, int sb_p, int sb_j, long long bsa,
               long long bsb, long long bsc, float beta) {
        // k-major tiles; rows padded by 4 floats (a multiple of 4 keeps the float4 reads aligned).
    // Where the operand is contiguous along k, a warp loads 8 consecutive k (one 32-byte sector)
    // of 4 rows: coalesced in global memory, and its shared stores As[p][i] land in bank
    // (4p + i) mod 32 — 32 different banks for p < 8 and 4 consecutive i, so no conflict. (With
    // 16 consecutive k per row, p and p + 8 share a bank: a 2-way conflict on every store.)
    __shared__ __align__(16) float As[BK][BM + 4];  // As[p][i]
    __shared__ __align__(16) float Bs[BK][BN + 4];  // Bs[p][j]
    const int tid = threadIdx.x;
    const int tx = tid % (BN / TN), ty = tid / (BN / TN);
    const long long z = blockIdx.z;
    A += z * bsa;
    B += z * bsb;
    C += z * bsc;
    const int m0 = blockIdx.y * BM, n0 = blockIdx.x * BN;
    const bool a_p_contig = (sa_p == 1), b_j_contig = (sb_j == 1);

    float acc[TM][TN];
#pragma unroll
    for (int r = 0; r < TM; ++r)
#pragma unroll
        for (int c = 0; c < TN; ++c) acc[r][c] = 0.0f;

    for (int k0 = 0; k0 < K; k0 += BK) {
        // A tile: BM·BK = 1024 elements, 4 per thread.
#pragma unroll
        for (int r = 0; r < (BM * BK) / NT; ++r) {
                        const int e = tid + r * NT;
            // k-contiguous: e = k_lo + 8·i + 512·k_hi with k = k_lo + 8·k_hi (see above).
            const int i = a_p_contig ? (e / 8) % BM : e % BM;
            const int p = a_p_contig ? e % 8 + 8 * (e / (8 * BM)) : e / BM;
            const int gi = m0 + i, gp = k0 + p;
            As[p][i] = (gi < M && gp < K) ? A[gi * sa_i + gp * sa_p] : 0.0f;
        }
        // B tile: BK·BN = 1024 elements, 4 per thread.
#pragma unroll
        for (int r = 0; r < (BK * BN) / NT; ++r) {
                        const int e = tid + r * NT;
            const int j = b_j_contig ? e % BN : (e / 8) % BN;
            const int p = b_j_contig ? e / BN : e % 8 + 8 * (e / (8 * BN));
            const int gp = k0 + p, gj = n0 + j;
            Bs[p][j] = (gp < K && gj < N) ? B[gp * sb_p + gj * sb_j] : 0.0f;
        }
        __syncthreads();
        // Unrolled by 4, not 16: full unrolling hoists more shared loads and costs ~20 more
        // registers, which drops a T4 from 3 to 2 resident blocks per SM.
#pragma unroll 4
        for (int p = 0; p < BK; ++p) {
            const float4 a4 = *reinterpret_cast<const float4*>(&As[p][ty * TM]);
            const float4 b4 = *reinterpret_cast<const float4*>(&Bs[p][tx * TN]);
            const float a[TM] = {a4.x, a4.y, a4.z, a4.w};
            const float b[TN] = {b4.x, b4.y, b4.z, b4.w};
#pragma unroll
            for (int r = 0; r < TM; ++r)
#pragma unroll
                for (int c = 0; c < TN; ++c) acc[r][c] += a[r] * b[c];
        }
        __syncthreads();
    }
    // A thread's 4 columns are consecutive: one float4 store (and load, for beta) where they are
    // in range and 16-byte aligned, so a warp writes whole 32-byte sectors; four scalar stores
    // would touch every sector four times (25% efficiency). Same arithmetic either way.
    const int j0 = n0 + tx * TN;
#pragma unroll
    for (int r = 0; r < TM; ++r) {
        const int i = m0 + ty * TM + r;
        if (i >= M) break;
        float* out = C + (long long)i * N + j0;
        if (j0 + TN <= N && (reinterpret_cast<unsigned long long>(out) & 15) == 0) {
            float4 v = make_float4(acc[r][0], acc[r][1], acc[r][2], acc[r][3]);
            if (beta != 0.0f) {
                const float4 o = *reinterpret_cast<const float4*>(out);
                v = make_float4(acc[r][0] + beta * o.x, acc[r][1] + beta * o.y, acc[r][2] + beta * o.z,
                                acc[r][3] + beta * o.w);
            }
            *reinterpret_cast<float4*>(out) = v;
        } else {
#pragma unroll
            for (int c = 0; c < TN; ++c) {
                if (j0 + c < N) out[c] = (beta == 0.0f) ? acc[r][c] : acc[r][c] + beta * out[c];
            }
        }
    }
}
