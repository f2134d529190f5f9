//! The CPU matrix multiply: `C (+)= op(A) · op(B)`, cache-blocked, packed and rayon-parallel.
//!
//! This is the classic Goto/BLIS structure, because a naive triple loop runs at memory speed
//! while a matrix multiply can run at the FMA units' speed if every number fetched is reused
//! many times:
//!
//! ```text
//! for pc in 0..K step kc (≤ KC, equal slices) // a K-slice: A-block and B-panel fit in cache
//!     pack B[pc..pc+kc, :] into NR-wide column panels   (shared by all threads)
//!     parallel for each (MC rows) x (NCT cols) tile of C:
//!         pack A[rows, pc..pc+kc] into MR-tall row panels (per thread, stays in L2)
//!         for each NR panel j, MR panel i:    // the micro-kernel: an MR x NR block of C
//!             C[i, j] += Apanel_i · Bpanel_j  // held in 12 AVX registers, kc FMAs deep
//! ```
//!
//! Two shapes get their own routes, because the tiles above leave threads idle or waste packing:
//! a long K with few tiles of C (weight gradients) is split along K across threads, and thin or
//! short-wide C reads A in place / computes Cᵀ (see the comments in [`gemm_with`]).
//!
//! Packing also absorbs transposition: A and B are read through (row stride, column stride), so
//! `Aᵀ` is the same matrix with its strides swapped and costs nothing extra.
//! The micro-kernel is chosen at run time ([`Isa::best`], so one binary runs everywhere):
//! AVX-512 when the CPU has it (a 6 × 32 tile over two neighbouring B panels in 12 zmm
//! registers: twice the arithmetic per instruction of AVX2 on a core with two 512-bit FMA
//! units), else AVX2+FMA (6 × 16 in 12 ymm registers), else a portable loop the compiler
//! vectorises.

use rayon::prelude::*;
use std::cell::Cell;

/// Micro-kernel rows.
pub const MR: usize = 6;
/// Micro-kernel columns (two AVX registers of 8 floats).
pub const NR: usize = 16;
/// Depth of a K-slice: an MR x KC A-panel plus a KC x NR B-panel stay in L1/L2.
const KC: usize = 256;
/// Rows of an A-block: MC x KC floats (96 KB) stay in L2.
const MC: usize = 96;

/// A matrix view: element (i, j) is at `data[i * rs + j * cs]`.
#[derive(Clone, Copy)]
pub struct MatRef<'a> {
    pub data: &'a [f32],
    pub rs: usize,
    pub cs: usize,
}

impl<'a> MatRef<'a> {
    /// A row-major `rows x cols` matrix, transposed when `trans` (then it reads as `cols x rows`).
    pub fn new(data: &'a [f32], cols: usize, trans: bool) -> Self {
        if trans {
            MatRef { data, rs: 1, cs: cols }
        } else {
            MatRef { data, rs: cols, cs: 1 }
        }
    }
    #[inline(always)]
    fn at(&self, i: usize, j: usize) -> f32 {
        self.data[i * self.rs + j * self.cs]
    }
}

#[derive(Clone, Copy)]
struct SendPtr(*mut f32);
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}

/// The instruction sets a micro-kernel is written in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isa {
    /// Plain Rust; the compiler vectorises the NR-wide inner loop.
    Portable,
    /// 256-bit AVX2 + FMA (`_mm256_fmadd_ps`): a 6 × 16 tile.
    Avx2,
    /// 512-bit AVX-512F (`_mm512_fmadd_ps`): 6 × 32 tiles over two B panels, 6 × 16 at an edge.
    Avx512,
}

impl Isa {
    /// The fastest this CPU runs (checked once): what [`gemm`] uses and what `vitcore bench
    /// kernels` measures its peak with.
    pub fn best() -> Isa {
        if has_avx512f() {
            Isa::Avx512
        } else if has_avx2_fma() {
            Isa::Avx2
        } else {
            Isa::Portable
        }
    }

    /// Every kernel this CPU can run, portable first (the tests check each against the naive
    /// product).
    pub fn available() -> Vec<Isa> {
        let mut v = vec![Isa::Portable];
        if has_avx2_fma() {
            v.push(Isa::Avx2);
        }
        if has_avx512f() {
            v.push(Isa::Avx512);
        }
        v
    }

    /// Whether a vector kernel with strided A (the direct path) runs.
    fn simd(self) -> bool {
        self != Isa::Portable
    }

    /// Whether the B panel at column `col` and the next one make one AVX-512 6 × 32 tile: the
    /// wide kernel exists and both panels (`col..col + 2·NR`) end by column `end`.
    fn pairs(self, col: usize, end: usize) -> bool {
        self == Isa::Avx512 && col + 2 * NR <= end
    }
}

/// Whether the CPU has AVX-512F (checked once; `false` off x86-64).
pub(crate) fn has_avx512f() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        use std::sync::OnceLock;
        static HAS: OnceLock<bool> = OnceLock::new();
        *HAS.get_or_init(|| has_avx2_fma() && std::is_x86_feature_detected!("avx512f"))
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Whether the AVX2+FMA micro-kernel can run here (checked once; `false` off x86-64).
pub(crate) fn has_avx2_fma() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        use std::sync::OnceLock;
        static HAS: OnceLock<bool> = OnceLock::new();
        *HAS.get_or_init(|| std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma"))
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// `C[m x n] (+)= A[m x k] · B[k x n]`, C row-major with row stride `ldc`.
/// With `accumulate` false, C is overwritten. `parallel` lets it use the rayon pool.
#[allow(clippy::too_many_arguments)]
pub fn gemm(
    m: usize,
    n: usize,
    k: usize,
    a: MatRef,
    b: MatRef,
    c: &mut [f32],
    ldc: usize,
    accumulate: bool,
    parallel: bool,
) {
    gemm_with(m, n, k, a, b, c, ldc, accumulate, parallel, Isa::best())
}

/// `C[m x n] = A[m x k] · B[k x n] + bias` with `bias[j]` added to every row: a linear layer's
/// forward. The bias is added when the first K-slice is stored, so it costs no pass over C.
#[allow(clippy::too_many_arguments)]
pub fn gemm_bias(
    m: usize,
    n: usize,
    k: usize,
    a: MatRef,
    b: MatRef,
    bias: &[f32],
    c: &mut [f32],
    ldc: usize,
    parallel: bool,
) {
    assert!(bias.len() >= n, "gemm: bias is shorter than n");
    gemm_impl(m, n, k, a, b, c, ldc, Init::Bias(bias), parallel, Isa::best())
}

/// [`gemm`] with the micro-kernel chosen by the caller (tests run every [`Isa::available`]).
#[allow(clippy::too_many_arguments)]
pub fn gemm_with(
    m: usize,
    n: usize,
    k: usize,
    a: MatRef,
    b: MatRef,
    c: &mut [f32],
    ldc: usize,
    accumulate: bool,
    parallel: bool,
    isa: Isa,
) {
    let init = if accumulate { Init::Keep } else { Init::Zero };
    gemm_impl(m, n, k, a, b, c, ldc, init, parallel, isa)
}

/// What C starts from before `A·B` is added.
#[derive(Clone, Copy)]
enum Init<'a> {
    /// C is overwritten.
    Zero,
    /// C's current values (accumulate).
    Keep,
    /// `bias[j]` in every row.
    Bias(&'a [f32]),
}

impl Init<'_> {
    /// C's starting value at (row, `j`), given its current value.
    #[inline(always)]
    fn start(&self, current: f32, j: usize) -> f32 {
        match self {
            Init::Zero => 0.0,
            Init::Keep => current,
            Init::Bias(b) => b[j],
        }
    }
}

/// How a micro-tile's result is stored into C.
#[derive(Clone, Copy)]
enum Store {
    Overwrite,
    Accumulate,
    /// Overwrite, adding a row vector: the bias at the tile's first column (NR values readable).
    AddRow(*const f32),
}

#[allow(clippy::too_many_arguments)]
fn gemm_impl(
    m: usize,
    n: usize,
    k: usize,
    a: MatRef,
    b: MatRef,
    c: &mut [f32],
    ldc: usize,
    init: Init,
    parallel: bool,
    isa: Isa,
) {
    if m == 0 || n == 0 {
        return;
    }
    assert!(c.len() >= (m - 1) * ldc + n, "gemm: C is too small");
    if k == 0 {
        for i in 0..m {
            for (j, x) in c[i * ldc..i * ldc + n].iter_mut().enumerate() {
                *x = init.start(*x, j);
            }
        }
        return;
    }
    assert!(
        a.data.len() > (m - 1) * a.rs + (k - 1) * a.cs && b.data.len() > (k - 1) * b.rs + (n - 1) * b.cs,
        "gemm: A or B is smaller than its shape"
    );
    // Short, wide C (e.g. the weight gradient 16 x 2048 of the seed preset's fc2): every element
    // of B would be packed for only m multiply-adds. Compute Cᵀ = op(B)ᵀ·op(A)ᵀ instead, which is
    // thin and takes the direct path below, then add it back transposed (m·n is small).
    if isa.simd() && m <= 2 * NR && n > 2 * NR && cfg!(target_arch = "x86_64") {
        let (at, bt) = (
            MatRef {
                data: a.data,
                rs: a.cs,
                cs: a.rs,
            },
            MatRef {
                data: b.data,
                rs: b.cs,
                cs: b.rs,
            },
        );
        let mut ct = vec![0.0f32; n * m];
        gemm_with(n, m, k, bt, at, &mut ct, m, false, parallel, isa);
        for i in 0..m {
            let row = &mut c[i * ldc..i * ldc + n];
            for (j, x) in row.iter_mut().enumerate() {
                *x = init.start(*x, j) + ct[j * m + i];
            }
        }
        return;
    }
    // Few output tiles over a long K (weight gradients: dW = Gᵀ·X is out × in, summed over
    // K = batch·tokens rows, e.g. 64 × 64 over 12 800): the tiles alone cannot keep every
    // thread busy, and each K-slice would end in a barrier. Cut K instead: each thread computes
    // the whole C over its part of K, serially with its own packing, and the parts are summed.
    let threads = if parallel { rayon::current_num_threads() } else { 1 };
    let tiles = m.div_ceil(MC) * n.div_ceil(NR * 4);
    if threads > 1 && tiles < 4 * threads && k >= 2 * threads * KC {
        let splits = threads.min(k / (2 * KC));
        // Equal parts, not whole KC blocks: K = 1,088 (batch 64 × 17 tokens) in blocks of 256
        // would give one thread 768 rows and the other 320.
        let kslice = k.div_ceil(splits);
        let partials: Vec<Vec<f32>> = (0..splits)
            .into_par_iter()
            .map(|s| {
                let (p0, p1) = (s * kslice, ((s + 1) * kslice).min(k));
                let mut part = vec![0.0f32; m * n];
                if p1 > p0 {
                    let a_s = MatRef {
                        data: &a.data[p0 * a.cs..],
                        ..a
                    };
                    let b_s = MatRef {
                        data: &b.data[p0 * b.rs..],
                        ..b
                    };
                    gemm_with(m, n, p1 - p0, a_s, b_s, &mut part, n, false, false, isa);
                }
                part
            })
            .collect();
        for i in 0..m {
            let row = &mut c[i * ldc..i * ldc + n];
            for (j, x) in row.iter_mut().enumerate() {
                let sum: f32 = partials.iter().map(|p| p[i * n + j]).sum();
                *x = init.start(*x, j) + sum;
            }
        }
        return;
    }
    // Thin C (at most four column panels: the seed preset's 16-wide and the small config's
    // 64-wide activations): each element of A then feeds only n multiply-adds, so packing A
    // costs a large share of the arithmetic. Full A panels are read in place by a strided
    // micro-kernel instead (AVX2 only); an MR × KC strip of A stays in L1 across the panels.
    // (Measured side by side: 64-wide products 90-100 → 120-150 GFLOP/s.)
    let direct = isa.simd() && n <= 4 * NR && cfg!(target_arch = "x86_64");
    let n_panels = n.div_ceil(NR);
    let mut bp = scratch_take(&PACK_B, n_panels * NR * KC.min(k));
    let cptr = SendPtr(c.as_mut_ptr());
    // Column width of one task: the whole of N when there are enough row blocks to share out,
    // else N is cut so every thread gets work (e.g. dW of fc2: M = 16 rows, N = 2048).
    let m_blocks = m.div_ceil(MC);
    let nct = if m_blocks >= 2 * threads || threads == 1 {
        n_panels * NR
    } else {
        let want = (2 * threads).div_ceil(m_blocks);
        (n_panels.div_ceil(want).max(4) * NR).min(n_panels * NR)
    };
    let n_blocks = (n_panels * NR).div_ceil(nct);
    // K-slices of equal depth, at most KC: K = 544 as 272 + 272, not 256 + 256 + 32 (a short
    // last slice loads and stores all of C for few multiply-adds).
    let kc_even = k.div_ceil(k.div_ceil(KC));
    let mut pc = 0;
    while pc < k {
        let kc = kc_even.min(k - pc);
        // The first K-slice stores according to `init`, later ones accumulate.
        let first_store = |j0: usize| match init {
            _ if pc > 0 => Store::Accumulate,
            Init::Zero => Store::Overwrite,
            Init::Keep => Store::Accumulate,
            Init::Bias(bias) => Store::AddRow(bias[j0..].as_ptr()),
        };
        // Pack B[pc..pc+kc, :] into column panels: panel j holds kc rows of NR floats.
        let pack_b = |(jp, panel): (usize, &mut [f32])| {
            let j0 = jp * NR;
            let nr = NR.min(n - j0);
            for p in 0..kc {
                let row = &mut panel[p * NR..p * NR + NR];
                if nr == NR && b.cs == 1 {
                    // A full panel of a row-major B: NR contiguous floats, one vector copy.
                    let start = (pc + p) * b.rs + j0;
                    row.copy_from_slice(&b.data[start..start + NR]);
                    continue;
                }
                for (jj, x) in row.iter_mut().enumerate() {
                    *x = if jj < nr { b.at(pc + p, j0 + jj) } else { 0.0 };
                }
            }
        };
        let bp_k = &mut bp[..n_panels * NR * kc];
        if parallel && n_panels * kc * NR > 1 << 15 {
            bp_k.par_chunks_mut(NR * kc).enumerate().for_each(pack_b);
        } else {
            bp_k.chunks_mut(NR * kc).enumerate().for_each(pack_b);
        }
        let bp_k = &*bp_k;
        let task = |t: usize| {
            let (ib, jb) = (t / n_blocks, t % n_blocks);
            let i0 = ib * MC;
            let mc = MC.min(m - i0);
            let j0 = jb * nct;
            let ncols = nct.min(n - j0.min(n));
            if ncols == 0 {
                return;
            }
            // Pack A[i0..i0+mc, pc..pc+kc] into row panels: panel i holds kc columns of MR floats.
            // With `direct`, full panels are read in place and only a partial last panel is packed.
            let m_panels = mc.div_ceil(MR);
            let mut ap = scratch_take(&PACK_A, if direct { MR * kc } else { m_panels * MR * kc });
            for ip in 0..m_panels {
                let r0 = i0 + ip * MR;
                let mr = MR.min(i0 + mc - r0);
                if direct && mr == MR {
                    continue;
                }
                let slot = if direct { 0 } else { ip };
                let panel = &mut ap[slot * MR * kc..(slot + 1) * MR * kc];
                for p in 0..kc {
                    let col = &mut panel[p * MR..p * MR + MR];
                    if mr == MR && a.rs == 1 {
                        // A transposed in memory (e.g. Gᵀ of a weight gradient): MR contiguous.
                        let start = r0 + (pc + p) * a.cs;
                        col.copy_from_slice(&a.data[start..start + MR]);
                        continue;
                    }
                    for (ii, x) in col.iter_mut().enumerate() {
                        *x = if ii < mr { a.at(r0 + ii, pc + p) } else { 0.0 };
                    }
                }
            }
            let cp = cptr;
            let (jp_end, mut jp) = ((j0 + ncols).div_ceil(NR), j0 / NR);
            while jp < jp_end {
                // Two full panels side by side make one AVX-512 6 × 32 tile.
                let pair = isa.pairs(jp * NR, n.min(jp_end * NR));
                let width = if pair { 2 } else { 1 };
                for ip in 0..m_panels {
                    let r0 = i0 + ip * MR;
                    let mr = MR.min(i0 + mc - r0);
                    let slot = if direct { 0 } else { ip };
                    let apanel = &ap[slot * MR * kc..(slot + 1) * MR * kc];
                    // A's panel: in place (direct) or packed (element (i, p) at p*MR + i).
                    let (a0, rs, cs) = if direct && mr == MR {
                        // SAFETY: rows r0..r0+MR and columns pc..pc+kc lie inside A (checked above).
                        (unsafe { a.data.as_ptr().add(r0 * a.rs + pc * a.cs) }, a.rs, a.cs)
                    } else {
                        (apanel.as_ptr(), 1, MR)
                    };
                    // SAFETY: tasks own disjoint (row block, column block) tiles of C, and each
                    // tile [r0..r0+mr, jq*NR..jq*NR+nr] lies inside C (checked above); (a0, rs,
                    // cs) reads MR × kc elements inside A or the packed panel; a pair's second
                    // panel follows the first in `bp_k`.
                    unsafe {
                        if pair && mr == MR {
                            let (bpanel, ct) = (bp_k[jp * NR * kc..].as_ptr(), cp.0.add(r0 * ldc + jp * NR));
                            micro_tile_x2(kc, a0, rs, cs, bpanel, NR, kc * NR, ct, ldc, first_store(jp * NR));
                            continue;
                        }
                        // Single panels, or a pair's two panels one at a time (a partial row panel).
                        for jq in jp..jp + width {
                            let bpanel = &bp_k[jq * NR * kc..(jq + 1) * NR * kc];
                            let nr = NR.min(n - jq * NR);
                            let ct = cp.0.add(r0 * ldc + jq * NR);
                            micro_tile(kc, a0, rs, cs, bpanel, ct, ldc, mr, nr, first_store(jq * NR), isa);
                        }
                    }
                }
                jp += width;
            }
            PACK_A.set(ap);
        };
        let tasks = m_blocks * n_blocks;
        if parallel && tasks > 1 && (m as u64 * n as u64 * kc as u64) > 1 << 16 {
            (0..tasks).into_par_iter().for_each(task);
        } else {
            (0..tasks).for_each(task);
        }
        pc += kc;
    }
    PACK_B.set(bp);
}

thread_local! {
    /// This thread's A-panel packing buffer, kept between calls: a fresh allocation of this size
    /// per call and K-slice was a fresh mapping from the kernel (page faults, zeroing and TLB
    /// shoot-downs took over a third of a linear layer's weight-gradient product).
    static PACK_A: Cell<Vec<f32>> = const { Cell::new(Vec::new()) };
    /// This thread's B-panel packing buffer (the caller's; the tasks share it read-only).
    static PACK_B: Cell<Vec<f32>> = const { Cell::new(Vec::new()) };
}

/// A scratch buffer of at least `len` floats from `key`, with stale contents: the packing
/// writes every element it later reads. It is taken out of the thread-local (and put back with
/// `set`), so a nested call on the same thread finds it empty and allocates its own instead of
/// aliasing it.
fn scratch_take(key: &'static std::thread::LocalKey<Cell<Vec<f32>>>, len: usize) -> Vec<f32> {
    let mut v = key.take();
    if v.len() < len {
        v.resize(len, 0.0);
    }
    v
}

/// `C[m × n] = A[m × k] · B[k × n]` for small matrices laid out for the micro-kernel, with no
/// packing and no threads: the attention's per-head products (50 × 50 × 16), where packing and
/// task set-up would cost more than the arithmetic. `m` must be a multiple of [`MR`] and `n` of
/// [`NR`] (the caller pads with zeros); A is read through its strides, B is row-major with row
/// stride `ldb`, C row-major with row stride `ldc`.
#[allow(clippy::too_many_arguments)]
pub fn gemm_padded(m: usize, n: usize, k: usize, a: MatRef, b: &[f32], ldb: usize, c: &mut [f32], ldc: usize) {
    assert!(
        m % MR == 0 && n % NR == 0,
        "gemm_padded: m must be a multiple of MR, n of NR"
    );
    if m == 0 || n == 0 {
        return;
    }
    assert!(ldc >= n && c.len() >= (m - 1) * ldc + n, "gemm_padded: C is too small");
    if k == 0 {
        for i in 0..m {
            c[i * ldc..i * ldc + n].fill(0.0);
        }
        return;
    }
    assert!(
        a.data.len() > (m - 1) * a.rs + (k - 1) * a.cs && ldb >= n && b.len() >= (k - 1) * ldb + n,
        "gemm_padded: A or B is smaller than its shape"
    );
    let isa = Isa::best();
    if isa.simd() {
        for i0 in (0..m).step_by(MR) {
            let mut j0 = 0;
            while j0 < n {
                let pair = isa.pairs(j0, n);
                // SAFETY: rows i0..i0+MR < m and columns < k of A, rows < k and columns
                // j0..j0+NR (a pair: j0+2·NR) ≤ n of B, and the C tile lie inside their slices
                // (asserted above).
                unsafe {
                    let ap = a.data.as_ptr().add(i0 * a.rs);
                    let cp = c.as_mut_ptr().add(i0 * ldc + j0);
                    let bp = b.as_ptr().add(j0);
                    if pair {
                        micro_tile_x2(k, ap, a.rs, a.cs, bp, ldb, NR, cp, ldc, Store::Overwrite);
                    } else {
                        micro_kernel(isa, k, ap, a.rs, a.cs, bp, ldb, cp, ldc, Store::Overwrite);
                    }
                }
                j0 += if pair { 2 * NR } else { NR };
            }
        }
        return;
    }
    let bm = MatRef {
        data: b,
        rs: ldb,
        cs: 1,
    };
    gemm_with(m, n, k, a, bm, c, ldc, false, false, Isa::Portable);
}

/// Store the top-left `mr x nr` part of a full micro-tile result into C.
unsafe fn store_partial(tmp: &[f32; MR * NR], c: *mut f32, ldc: usize, mr: usize, nr: usize, store: Store) {
    for i in 0..mr {
        for j in 0..nr {
            let dst = c.add(i * ldc + j);
            let v = tmp[i * NR + j];
            *dst = match store {
                Store::Overwrite => v,
                Store::Accumulate => *dst + v,
                Store::AddRow(r) => *r.add(j) + v,
            };
        }
    }
}

/// One MR × NR tile of C, of which the top-left `mr × nr` is stored (a partial tile goes
/// through a local buffer). A's element (i, p) is at `a[i*rs + p*cs]`: a packed panel is
/// `rs = 1, cs = MR`, the direct path passes A's own strides. `b` is a packed NR-wide panel.
#[allow(clippy::too_many_arguments)]
unsafe fn micro_tile(
    kc: usize,
    a: *const f32,
    rs: usize,
    cs: usize,
    b: &[f32],
    c: *mut f32,
    ldc: usize,
    mr: usize,
    nr: usize,
    store: Store,
    isa: Isa,
) {
    if mr == MR && nr == NR {
        micro_kernel(isa, kc, a, rs, cs, b.as_ptr(), NR, c, ldc, store);
        return;
    }
    let mut tmp = [0.0f32; MR * NR];
    micro_kernel(
        isa,
        kc,
        a,
        rs,
        cs,
        b.as_ptr(),
        NR,
        tmp.as_mut_ptr(),
        NR,
        Store::Overwrite,
    );
    store_partial(&tmp, c, ldc, mr, nr, store);
}

/// An MR × 2·NR tile of C from two B panels, the second `b1` floats after the first (both with
/// row stride `ldb`): the AVX-512 kernel's full tile, only ever chosen with [`Isa::Avx512`].
#[allow(clippy::too_many_arguments)]
unsafe fn micro_tile_x2(
    kc: usize,
    a: *const f32,
    rs: usize,
    cs: usize,
    b: *const f32,
    ldb: usize,
    b1: usize,
    c: *mut f32,
    ldc: usize,
    store: Store,
) {
    #[cfg(target_arch = "x86_64")]
    {
        micro_kernel_avx512_x2(kc, a, rs, cs, b, ldb, b1, c, ldc, store)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (kc, a, rs, cs, b, ldb, b1, c, ldc, store);
        unreachable!("AVX-512 is only chosen on x86_64");
    }
}

/// An MR × NR tile `C (+)= A·B` in the given instruction set. A's element (i, p) is at
/// `a[i*rs + p*cs]`, B's row p at `b[p*ldb ..]`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn micro_kernel(
    isa: Isa,
    kc: usize,
    a: *const f32,
    rs: usize,
    cs: usize,
    b: *const f32,
    ldb: usize,
    c: *mut f32,
    ldc: usize,
    store: Store,
) {
    #[cfg(target_arch = "x86_64")]
    match isa {
        Isa::Avx512 => return micro_kernel_avx512(kc, a, rs, cs, b, ldb, c, ldc, store),
        Isa::Avx2 => return micro_kernel_avx2(kc, a, rs, cs, b, ldb, c, ldc, store),
        Isa::Portable => {}
    }
    let _ = isa;
    micro_kernel_portable(kc, a, rs, cs, b, ldb, c, ldc, store)
}

/// Portable micro-kernel: the compiler vectorises the NR-wide inner loop.
#[allow(clippy::too_many_arguments)]
unsafe fn micro_kernel_portable(
    kc: usize,
    a: *const f32,
    rs: usize,
    cs: usize,
    b: *const f32,
    ldb: usize,
    c: *mut f32,
    ldc: usize,
    store: Store,
) {
    let mut t = [[0.0f32; NR]; MR];
    for p in 0..kc {
        let bp = std::slice::from_raw_parts(b.add(p * ldb), NR);
        for (i, row) in t.iter_mut().enumerate() {
            let ai = *a.add(i * rs + p * cs);
            for j in 0..NR {
                row[j] += ai * bp[j];
            }
        }
    }
    for (i, row) in t.iter().enumerate() {
        for (j, &v) in row.iter().enumerate() {
            let dst = c.add(i * ldc + j);
            *dst = match store {
                Store::Overwrite => v,
                Store::Accumulate => *dst + v,
                Store::AddRow(r) => *r.add(j) + v,
            };
        }
    }
}

/// AVX2 micro-kernel: 6 rows x 16 columns = 12 accumulator registers; per step of k, two loads
/// of B, six broadcasts of A and twelve FMAs.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn micro_kernel_avx2(
    kc: usize,
    a: *const f32,
    rs: usize,
    cs: usize,
    b: *const f32,
    ldb: usize,
    c: *mut f32,
    ldc: usize,
    store: Store,
) {
    use std::arch::x86_64::*;
    let mut t = [[_mm256_setzero_ps(); 2]; MR];
    for p in 0..kc {
        let b0 = _mm256_loadu_ps(b.add(p * ldb));
        let b1 = _mm256_loadu_ps(b.add(p * ldb + 8));
        let ap = a.add(p * cs);
        for (i, row) in t.iter_mut().enumerate() {
            let ai = _mm256_broadcast_ss(&*ap.add(i * rs));
            row[0] = _mm256_fmadd_ps(ai, b0, row[0]);
            row[1] = _mm256_fmadd_ps(ai, b1, row[1]);
        }
    }
    // What is added to each row's result: C's current row, the bias, or nothing.
    for (i, row) in t.iter().enumerate() {
        let dst = c.add(i * ldc);
        let (add0, add1) = match store {
            Store::Overwrite => (_mm256_setzero_ps(), _mm256_setzero_ps()),
            Store::Accumulate => (_mm256_loadu_ps(dst), _mm256_loadu_ps(dst.add(8))),
            Store::AddRow(r) => (_mm256_loadu_ps(r), _mm256_loadu_ps(r.add(8))),
        };
        _mm256_storeu_ps(dst, _mm256_add_ps(add0, row[0]));
        _mm256_storeu_ps(dst.add(8), _mm256_add_ps(add1, row[1]));
    }
}

/// AVX-512 micro-kernel, 6 × 16: one zmm register per row. Six accumulators cannot cover the
/// FMA latency (4 cycles × 2 units = 8 in flight), so even and odd steps of k accumulate
/// separately (12 chains) and are added at the end.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn micro_kernel_avx512(
    kc: usize,
    a: *const f32,
    rs: usize,
    cs: usize,
    b: *const f32,
    ldb: usize,
    c: *mut f32,
    ldc: usize,
    store: Store,
) {
    use std::arch::x86_64::*;
    let mut even = [_mm512_setzero_ps(); MR];
    let mut odd = [_mm512_setzero_ps(); MR];
    let mut p = 0;
    while p + 1 < kc {
        let b0 = _mm512_loadu_ps(b.add(p * ldb));
        let b1 = _mm512_loadu_ps(b.add((p + 1) * ldb));
        let (ap0, ap1) = (a.add(p * cs), a.add((p + 1) * cs));
        for i in 0..MR {
            even[i] = _mm512_fmadd_ps(_mm512_set1_ps(*ap0.add(i * rs)), b0, even[i]);
            odd[i] = _mm512_fmadd_ps(_mm512_set1_ps(*ap1.add(i * rs)), b1, odd[i]);
        }
        p += 2;
    }
    if p < kc {
        let b0 = _mm512_loadu_ps(b.add(p * ldb));
        let ap0 = a.add(p * cs);
        for (i, acc) in even.iter_mut().enumerate() {
            *acc = _mm512_fmadd_ps(_mm512_set1_ps(*ap0.add(i * rs)), b0, *acc);
        }
    }
    for i in 0..MR {
        let dst = c.add(i * ldc);
        let add = match store {
            Store::Overwrite => _mm512_setzero_ps(),
            Store::Accumulate => _mm512_loadu_ps(dst),
            Store::AddRow(r) => _mm512_loadu_ps(r),
        };
        _mm512_storeu_ps(dst, _mm512_add_ps(add, _mm512_add_ps(even[i], odd[i])));
    }
}

/// AVX-512 micro-kernel, 6 × 32: rows of two B panels (`b` and `b + b1`) in two zmm registers,
/// 12 accumulators; per step of k, two loads of B, six broadcasts of A and twelve FMAs of 16
/// lanes (the AVX2 kernel's instruction count for twice the arithmetic).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn micro_kernel_avx512_x2(
    kc: usize,
    a: *const f32,
    rs: usize,
    cs: usize,
    b: *const f32,
    ldb: usize,
    b1: usize,
    c: *mut f32,
    ldc: usize,
    store: Store,
) {
    use std::arch::x86_64::*;
    let mut t = [[_mm512_setzero_ps(); 2]; MR];
    let b_second = b.add(b1);
    for p in 0..kc {
        let v0 = _mm512_loadu_ps(b.add(p * ldb));
        let v1 = _mm512_loadu_ps(b_second.add(p * ldb));
        let ap = a.add(p * cs);
        for (i, row) in t.iter_mut().enumerate() {
            let ai = _mm512_set1_ps(*ap.add(i * rs));
            row[0] = _mm512_fmadd_ps(ai, v0, row[0]);
            row[1] = _mm512_fmadd_ps(ai, v1, row[1]);
        }
    }
    for (i, row) in t.iter().enumerate() {
        let dst = c.add(i * ldc);
        let (add0, add1) = match store {
            Store::Overwrite => (_mm512_setzero_ps(), _mm512_setzero_ps()),
            Store::Accumulate => (_mm512_loadu_ps(dst), _mm512_loadu_ps(dst.add(NR))),
            Store::AddRow(r) => (_mm512_loadu_ps(r), _mm512_loadu_ps(r.add(NR))),
        };
        _mm512_storeu_ps(dst, _mm512_add_ps(add0, row[0]));
        _mm512_storeu_ps(dst.add(NR), _mm512_add_ps(add1, row[1]));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    fn naive(m: usize, n: usize, k: usize, a: MatRef, b: MatRef) -> Vec<f64> {
        let mut c = vec![0.0f64; m * n];
        for i in 0..m {
            for j in 0..n {
                for p in 0..k {
                    c[i * n + j] += a.at(i, p) as f64 * b.at(p, j) as f64;
                }
            }
        }
        c
    }

    fn rel_err(x: &[f32], r: &[f64]) -> f64 {
        let num: f64 = x.iter().zip(r).map(|(&x, &r)| (x as f64 - r).powi(2)).sum();
        let den: f64 = r.iter().map(|r| r * r).sum();
        (num / den.max(1e-300)).sqrt()
    }

    #[test]
    fn gemm_matches_naive_for_all_transposes_kernels_and_awkward_sizes() {
        let mut rng = Rng::new(11);
        for &(m, n, k) in &[
            (1, 1, 1),
            (7, 13, 5),
            (97, 33, 300),
            (6, 16, 256),
            (200, 17, 515),
            (13, 251, 3),
            (61, 64, 129),
            (103, 50, 20),
            // Wider than 64 and taller than 32: the packed path with the AVX2 kernel.
            (100, 90, 300),
        ] {
            for ta in [false, true] {
                for tb in [false, true] {
                    for isa in Isa::available() {
                        for parallel in [false, true] {
                            let av = rng.normal_vec(m * k, 1.0);
                            let bv = rng.normal_vec(k * n, 1.0);
                            let a = MatRef::new(&av, if ta { m } else { k }, ta);
                            let b = MatRef::new(&bv, if tb { k } else { n }, tb);
                            let mut c = vec![f32::NAN; m * n];
                            gemm_with(m, n, k, a, b, &mut c, n, false, parallel, isa);
                            let r = naive(m, n, k, a, b);
                            let e = rel_err(&c, &r);
                            assert!(e < 1e-5, "m{m} n{n} k{k} ta{ta} tb{tb} {isa:?}: rel err {e}");
                            // accumulate: C += A·B doubles it
                            gemm_with(m, n, k, a, b, &mut c, n, true, parallel, isa);
                            let r2: Vec<f64> = r.iter().map(|x| 2.0 * x).collect();
                            assert!(rel_err(&c, &r2) < 1e-5);
                        }
                    }
                }
            }
        }
    }

    /// `gemm_bias` = naive product + bias on every route: packed, direct (n ≤ 32), Cᵀ (m ≤ 32 <
    /// n), K-split, partial tiles, K = 0.
    #[test]
    fn gemm_bias_matches_naive() {
        let mut rng = Rng::new(13);
        for &(m, n, k) in &[
            (97, 45, 300),
            (200, 17, 70),
            (7, 70, 33),
            (11, 13, 3000),
            (5, 9, 0),
            (12, 32, 1),
        ] {
            let av = rng.normal_vec(m * k, 1.0);
            let bv = rng.normal_vec(k * n, 1.0);
            let bias = rng.normal_vec(n, 1.0);
            let a = MatRef::new(&av, k, false);
            let b = MatRef::new(&bv, k, true);
            let mut r = naive(m, n, k, a, b);
            for (i, x) in r.iter_mut().enumerate() {
                *x += bias[i % n] as f64;
            }
            for isa in Isa::available() {
                for parallel in [false, true] {
                    let mut c = vec![f32::NAN; m * n];
                    gemm_impl(m, n, k, a, b, &mut c, n, Init::Bias(&bias), parallel, isa);
                    let e = rel_err(&c, &r);
                    assert!(e < 1e-5, "bias m{m} n{n} k{k} {isa:?} parallel{parallel}: rel err {e}");
                }
            }
        }
    }

    /// `gemm_padded` (the attention's per-head products) = the naive product, with widths that
    /// take the AVX-512 pair tile, a single tile after pairs, and single tiles only; A read
    /// through transposed strides as the attention does.
    #[test]
    fn gemm_padded_matches_naive() {
        let mut rng = Rng::new(14);
        for &(m, n, k, ta) in &[
            (18, 32, 16, false),
            (24, 48, 17, true),
            (6, 16, 5, false),
            (12, 80, 64, true),
        ] {
            let (av, bv) = (rng.normal_vec(m * k, 1.0), rng.normal_vec(k * n, 1.0));
            let (a, b) = (MatRef::new(&av, if ta { m } else { k }, ta), MatRef::new(&bv, n, false));
            let mut c = vec![f32::NAN; m * n];
            gemm_padded(m, n, k, a, &bv, n, &mut c, n);
            let e = rel_err(&c, &naive(m, n, k, a, b));
            assert!(e < 1e-5, "padded m{m} n{n} k{k}: rel err {e}");
        }
    }

    /// Few output tiles over a long K takes the K-split path (partial products summed), cut in
    /// near-equal slices that end inside a KC block: 1,088 = the default recipe's dW (two
    /// slices of 544 on 2 threads), 1,537 on 3 threads (513 + 513 + 511), the rest on 3
    /// threads. Also through the Cᵀ route (m ≤ 32 < n).
    #[test]
    fn k_split_matches_naive() {
        let mut rng = Rng::new(12);
        for &(m, n, k, ta, threads) in &[
            (64, 64, 1088, true, 2),
            (192, 64, 1537, true, 3),
            (37, 45, 2311, true, 3),
            (5, 70, 1600, true, 3),
            (100, 20, 4099, false, 3),
            (70, 100, 1700, true, 3),
        ] {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            let av = rng.normal_vec(m * k, 1.0);
            let bv = rng.normal_vec(k * n, 1.0);
            let a = MatRef::new(&av, if ta { m } else { k }, ta);
            let b = MatRef::new(&bv, n, false);
            let r = naive(m, n, k, a, b);
            for isa in Isa::available() {
                let mut c = vec![f32::NAN; m * n];
                pool.install(|| gemm_with(m, n, k, a, b, &mut c, n, false, true, isa));
                let e = rel_err(&c, &r);
                assert!(e < 1e-5, "k-split m{m} n{n} k{k} {isa:?}: rel err {e}");
                pool.install(|| gemm_with(m, n, k, a, b, &mut c, n, true, true, isa));
                let r2: Vec<f64> = r.iter().map(|x| 2.0 * x).collect();
                assert!(rel_err(&c, &r2) < 1e-5, "k-split accumulate m{m} n{n} k{k}");
            }
        }
    }
}
