// Conv-as-patchify: cut images into P×P patches (gather), and its backward (scatter).
//
// Math (src/ops/patchify.rs): x: [B, C, H, W] → y: [B, N, F],  N = (H/P)·(W/P), F = C·P·P,
//     y[b, gy·(W/P) + gx, c·P·P + py·P + px] = x[b, c, gy·P + py, gx·P + px]
// i.e. each patch flattened in (channel, row, col) order, the order of PyTorch's conv weight
// [D, C, P, P]. Patches do not overlap, so this is a permutation of the elements and the backward
// is the inverse permutation: dx[b, c, gy·P + py, gx·P + px] = G[b, gy·(W/P) + gx, c·P·P + py·P + px].
// H and W are multiples of P (checked by the host).
//
// Launch geometry, two kernels per direction:
// * *_band (the default): one block per band of P image rows of one channel (grid B·C·(H/P),
//   block 256). The band is P·W consecutive floats of x, and its patches' entries for that
//   channel are W/P runs of P·P consecutive floats of y (all of y's band when C = 1).
//   The block copies the band through shared memory, reading and writing whole runs, so both
//   sides are coalesced; with one thread per element of the gather instead, a warp read runs of
//   only P floats (16 bytes for P = 4: half of every 32-byte sector wasted). Shared memory
//   holds the band (P·W floats, dynamic): the host uses it while that fits in 48 KB.
//   The band's accesses in patch order meet 2-way bank conflicts for P = 4 or 7 (up to 1 extra
//   wavefront per request): no row padding removes them without adding conflicts to the
//   row-order accesses (the padded stride would have to be ≡ W and ≡ 8 mod 32 at once), and a
//   swizzle would cost index arithmetic in a kernel bound by DRAM, whose bandwidth is ~25× below
//   shared memory's — the sectors saved are what counts (cudasim's profile: 54–64% → 100%).
// * the gather kernels (patchify_fwd / patchify_bwd): one thread per *output* element (block
//   256, grid ⌈n/256⌉ capped, grid stride), for bands too wide for shared memory: writes are
//   coalesced, reads are runs of P.
// Every output element is written exactly once either way, so the backward needs no atomics and
// no zero-fill.
#include "common.cuh"

extern "C" __global__ void patchify_fwd(const float* __restrict__ x, float* __restrict__ y, int B,
                                        int C, int H, int W, int P) {
    const int gw = W / P, pp = P * P;
    const long long N = (long long)(H / P) * gw, F = (long long)C * pp;
    const long long total = (long long)B * N * F;
    VC_GRID_STRIDE(idx, total) {
        const long long f = idx % F, t = idx / F;
        const long long n = t % N, b = t / N;
        const long long gy = n / gw, gx = n % gw;
        const long long ch = f / pp, py = (f % pp) / P, px = f % P;
        y[idx] = x[((b * C + ch) * H + gy * P + py) * W + gx * P + px];
    }
}

// Band (b, c, gy) = blockIdx.x as ((b·C + c)·(H/P) + gy). The band is x[b, c, gy·P .. gy·P + P, :],
// contiguous; band element k = py·W + gx·P + px. Its patch entries for channel c sit in y at
// (b·N + gy·(W/P) + gx)·F + c·P·P + py·P + px: W/P runs of P·P, in the order of e = gx·P·P + py·P + px.
extern "C" __global__ void patchify_fwd_band(const float* __restrict__ x, float* __restrict__ y, int B,
                                             int C, int H, int W, int P) {
    extern __shared__ float band[];
    const int gh = H / P, gw = W / P, pp = P * P, n = P * W;
    const long long N = (long long)gh * gw, F = (long long)C * pp;
    const long long blk = blockIdx.x;
    const int gy = (int)(blk % gh), ch = (int)((blk / gh) % C);
    const long long b = blk / ((long long)gh * C);
    const float* src = x + (blk / gh) * H * W + (long long)gy * P * W;  // (b·C + c)·H·W + gy·P·W
    for (int k = threadIdx.x; k < n; k += blockDim.x) band[k] = src[k];
    __syncthreads();
    float* dst = y + (b * N + (long long)gy * gw) * F + ch * pp;
    for (int e = threadIdx.x; e < n; e += blockDim.x) {
        const int gx = e / pp, r = e % pp, py = r / P, px = r % P;
        dst[gx * F + r] = band[py * W + gx * P + px];
    }
}

// The inverse: read the band's W/P runs of G into shared memory in patch order, write the band of
// dx as consecutive floats.
extern "C" __global__ void patchify_bwd_band(const float* __restrict__ g, float* __restrict__ dx, int B,
                                             int C, int H, int W, int P) {
    extern __shared__ float band[];
    const int gh = H / P, gw = W / P, pp = P * P, n = P * W;
    const long long N = (long long)gh * gw, F = (long long)C * pp;
    const long long blk = blockIdx.x;
    const int gy = (int)(blk % gh), ch = (int)((blk / gh) % C);
    const long long b = blk / ((long long)gh * C);
    const float* src = g + (b * N + (long long)gy * gw) * F + ch * pp;
    for (int e = threadIdx.x; e < n; e += blockDim.x) {
        const int gx = e / pp, r = e % pp;
        band[e] = src[gx * F + r];
    }
    __syncthreads();
    float* dst = dx + (blk / gh) * H * W + (long long)gy * P * W;
    for (int k = threadIdx.x; k < n; k += blockDim.x) {
        const int py = k / W, xx = k % W, gx = xx / P, px = xx % P;
        dst[k] = band[gx * pp + py * P + px];
    }
}

extern "C" __global__ void patchify_bwd(const float* __restrict__ g, float* __restrict__ dx, int B,
                                        int C, int H, int W, int P) {
    const int gw = W / P, pp = P * P;
    const long long N = (long long)(H / P) * gw, F = (long long)C * pp;
    const long long total = (long long)B * C * H * W;
    VC_GRID_STRIDE(idx, total) {
        const long long xx = idx % W, t = idx / W;
        const long long yy = t % H, bc = t / H;
        const long long ch = bc % C, b = bc / C;
        const long long gy = yy / P, py = yy % P, gx = xx / P, px = xx % P;
        dx[idx] = g[(b * N + gy * gw + gx) * F + ch * pp + py * P + px];
    }
}
