// Conv-as-patchify: cut images into P×P patches (gather), and its backward (scatter).
//
// Math (src/ops/patchify.rs): x: [B, C, H, W] → y: [B, N, F],  N = (H/P)·(W/P), F = C·P·P,
//     y[b, gy·(W/P) + gx, c·P·P + py·P + px] = x[b, c, gy·P + py, gx·P + px]
// i.e. each patch flattened in (channel, row, col) order, the order of PyTorch's conv weight
// [D, C, P, P]. Patches do not overlap, so this is a permutation of the elements and the backward
// is the inverse permutation: dx[b, c, gy·P + py, gx·P + px] = G[b, gy·(W/P) + gx, c·P·P + py·P + px].
// H and W are multiples of P (checked by the host).
//
// Launch geometry: one thread per *output* element in both directions (block 256, grid ⌈n/256⌉
// capped, grid stride): writes are coalesced and every output is written exactly once, so the
// backward needs no atomics and no zero-fill. Reads are gathers, but runs of P consecutive
// pixels (or patch entries) stay contiguous.
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
