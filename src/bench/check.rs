//! Validation of a benchmarked kernel's output after timing: a fast kernel that computes the
//! wrong thing is worse than a slow one, and timing loops are where a stale or half-written
//! output goes unnoticed.
//!
//! Each check recomputes a sample of output elements independently — in f64, from the formula,
//! not by calling the kernel's own code — and compares them with the kernel's output under a
//! tolerance that f32 rounding provably (or, for the composite ops, comfortably) stays inside,
//! while any indexing or formula bug lands far outside:
//!
//! * sums of `k` products or terms (GEMM, `sum_rows`, layernorm's `dγ`/`dβ`): the smaller of
//!   the worst-case bound for summation in any order, `k·ε·Σ|tᵢ|` (ε = 2⁻²³, twice the unit
//!   roundoff, so FMA and blocked orders are covered), and eight times the random-walk estimate
//!   `ε·√k·√Σtᵢ²` — each addition's rounding error is proportional to the partial sum, of size
//!   `√j·rms(t)` after j terms. For long sums the worst case is uselessly loose (for k = 25600
//!   it tolerates a third of the result, enough to hide a GEMM that drops a k-panel); the
//!   estimate still leaves a correct kernel a margin of about 20;
//! * element-wise formulas: a few ε of the result, or 1e-5 where the CPU kernel evaluates a
//!   transcendental function by a polynomial (`fastmath::erfc` is good to about 1.2e-7);
//! * composite ops (softmax, layernorm, attention, cross-entropy): norm-wise per row or per head,
//!   `|got − ref| ≤ 1e-4 · max|ref|` over that row or head. f32 rounding gives about 1e-6 there.
//!
//! A [`Checker`] collects the comparisons of one validation and keeps the first [`Mismatch`].

use crate::rng::mix64;
use std::fmt;

/// f32's machine epsilon (2⁻²³) in f64.
pub const EPS: f64 = f32::EPSILON as f64;

/// Norm-wise relative tolerance of the composite ops (see the module doc).
pub const COMPOSITE_RTOL: f64 = 1e-4;

/// Relative tolerance of element-wise ops whose CPU kernel uses a polynomial `exp`/`erfc`.
pub const TRANSCENDENTAL_RTOL: f64 = 1e-5;

/// Output elements sampled per output tensor (all of them when there are fewer).
pub const SAMPLES: usize = 4096;

/// The first disagreement a validation found.
#[derive(Clone, Debug, PartialEq)]
pub struct Mismatch {
    /// Which output (`y`, `dx`, `probs`, ...).
    pub part: String,
    /// Flat index of the element in that output.
    pub index: usize,
    pub got: f64,
    pub want: f64,
    pub tolerance: f64,
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}[{}] is {:e}, the reference gives {:e} (difference {:.3e}, tolerance {:.3e})",
            self.part,
            self.index,
            self.got,
            self.want,
            (self.got - self.want).abs(),
            self.tolerance
        )
    }
}

/// What a passed validation saw.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Checked {
    /// Elements compared.
    pub elements: usize,
    /// The largest `|got − ref| / tolerance` (below 1 when it passed; 0 for exact matches).
    pub worst: f64,
}

/// Collects comparisons; see the module doc.
#[derive(Debug, Default)]
pub struct Checker {
    elements: usize,
    worst: f64,
    mismatch: Option<Mismatch>,
}

impl Checker {
    pub fn new() -> Checker {
        Checker::default()
    }

    /// Compare element `index` of output `part`: `got` must be within `tolerance` of `want`
    /// (a NaN or infinite `got` never is, unless `want` is the same infinity).
    pub fn close(&mut self, part: &str, index: usize, got: f32, want: f64, tolerance: f64) {
        let got = got as f64;
        let err = (got - want).abs();
        let ok = err <= tolerance || got == want;
        self.elements += 1;
        let ratio = if err == 0.0 || got == want {
            0.0
        } else if tolerance > 0.0 {
            err / tolerance
        } else {
            f64::INFINITY
        };
        if ok {
            self.worst = self.worst.max(ratio);
        } else if self.mismatch.is_none() {
            self.mismatch = Some(Mismatch {
                part: part.to_string(),
                index,
                got,
                want,
                tolerance,
            });
        }
    }

    /// Fold another checker's comparisons into this one (first mismatch wins).
    pub fn merge(&mut self, other: Checker) {
        self.elements += other.elements;
        self.worst = self.worst.max(other.worst);
        if self.mismatch.is_none() {
            self.mismatch = other.mismatch;
        }
    }

    /// The verdict: every comparison within tolerance, or the first one that was not.
    pub fn finish(self) -> std::result::Result<Checked, Mismatch> {
        match self.mismatch {
            Some(m) => Err(m),
            None if self.elements == 0 => Err(Mismatch {
                part: "(nothing was compared: a validation without comparisons proves nothing)".into(),
                index: 0,
                got: f64::NAN,
                want: f64::NAN,
                tolerance: 0.0,
            }),
            None => Ok(Checked {
                elements: self.elements,
                worst: self.worst,
            }),
        }
    }
}

/// `count` distinct-enough indices in `0..n`, the same on every call: all of them when
/// `n ≤ count`, else the first and last 16 (edges are where blocked kernels go wrong) and the
/// rest spread by a hash.
pub fn sample_indices(n: usize, count: usize) -> Vec<usize> {
    if n <= count {
        return (0..n).collect();
    }
    let edge = 16.min(count / 4);
    let mut v: Vec<usize> = (0..edge).chain(n - edge..n).collect();
    v.extend((0..(count - 2 * edge) as u64).map(|i| (mix64(i ^ 0x6a09_e667_f3bc_c908) % n as u64) as usize));
    v
}

// ---------------------------------------------------------------------------------------------
// GEMM
// ---------------------------------------------------------------------------------------------

/// The sizes of a batched `C[z] = op(A[z])·op(B[z])` as in `ops::matmul`: `op(A)` is `[m, k]`
/// (stored `[k, m]` when `ta`), `op(B)` is `[k, n]` (stored `[n, k]` when `tb`), C is `[m, n]`.
/// The CUDA matmul's own size struct (the backend is always compiled), so the sizes a product is
/// checked with are the very ones its GPU case launches, with no field-by-field copy to drift.
pub use crate::backend::cuda::MatmulDims as GemmDims;

/// Tolerance of an f32 sum of `n` terms whose absolute values sum to `abs_sum` and whose squares
/// sum to `sq_sum` (see the module doc).
pub fn sum_tolerance(n: usize, abs_sum: f64, sq_sum: f64) -> f64 {
    let worst_case = (n as f64 + 2.0) * EPS * abs_sum;
    let random_walk = 8.0 * EPS * ((n as f64).sqrt() + 2.0) * sq_sum.sqrt();
    worst_case.min(random_walk) + f64::MIN_POSITIVE
}

/// Check sampled elements of `c` against `op(A)·op(B) (+ bias[j])` summed in f64.
pub fn gemm(ck: &mut Checker, part: &str, a: &[f32], b: &[f32], c: &[f32], d: GemmDims, bias: Option<&[f32]>) {
    let GemmDims { m, n, k, ta, tb, .. } = d;
    let (sa, sb, sc) = (m * k, k * n, m * n);
    for idx in sample_indices(c.len().min(d.batch * sc), SAMPLES) {
        let (z, i, j) = (idx / sc, (idx % sc) / n, idx % n);
        let (az, bz) = (&a[z * sa..(z + 1) * sa], &b[z * sb..(z + 1) * sb]);
        let (mut sum, mut abs_sum, mut sq_sum) = (0.0f64, 0.0f64, 0.0f64);
        for p in 0..k {
            let av = if ta { az[p * m + i] } else { az[i * k + p] } as f64;
            let bv = if tb { bz[j * k + p] } else { bz[p * n + j] } as f64;
            sum += av * bv;
            abs_sum += (av * bv).abs();
            sq_sum += (av * bv) * (av * bv);
        }
        // The bias is the first term of the sum (the CPU kernel starts from it).
        let bias_j = bias.map_or(0.0, |b| b[j] as f64);
        let tol = sum_tolerance(k + 1, abs_sum + bias_j.abs(), sq_sum + bias_j * bias_j);
        ck.close(part, idx, c[idx], sum + bias_j, tol);
    }
}

/// Check sampled column sums `out[j] = Σ_r x[r, j]` of `x` viewed as rows of `out.len()`.
pub fn column_sums(ck: &mut Checker, part: &str, x: &[f32], out: &[f32]) {
    let cols = out.len();
    let rows = x.len() / cols.max(1);
    for j in sample_indices(cols, SAMPLES / 8) {
        let (mut sum, mut abs_sum, mut sq_sum) = (0.0f64, 0.0f64, 0.0f64);
        for r in 0..rows {
            let v = x[r * cols + j] as f64;
            sum += v;
            abs_sum += v.abs();
            sq_sum += v * v;
        }
        ck.close(part, j, out[j], sum, sum_tolerance(rows, abs_sum, sq_sum));
    }
}

// ---------------------------------------------------------------------------------------------
// Element-wise references
// ---------------------------------------------------------------------------------------------

/// The error function in f64, to about 1e-14: its Maclaurin series below 2.5 (alternating terms
/// up to ~10², so a few digits are lost of 16), else `1 − erfc` from the continued fraction.
pub fn erf(x: f64) -> f64 {
    if x.abs() >= 2.5 {
        return x.signum() * (1.0 - erfc_cf(x.abs()));
    }
    // erf(x) = 2/√π Σ (−1)ⁿ x^(2n+1) / (n!·(2n+1))
    let (mut term, mut sum) = (x, x);
    for n in 1..200 {
        term *= -x * x / n as f64;
        let add = term / (2 * n + 1) as f64;
        sum += add;
        if add.abs() < 1e-17 * sum.abs() {
            break;
        }
    }
    sum * std::f64::consts::FRAC_2_SQRT_PI
}

/// `erfc(x) = 1 − erf(x)`, accurate in the tails too.
pub fn erfc(x: f64) -> f64 {
    if x >= 2.5 {
        erfc_cf(x)
    } else if x <= -2.5 {
        2.0 - erfc_cf(-x)
    } else {
        1.0 - erf(x)
    }
}

/// `erfc(x)` for `x ≥ 2.5` by its continued fraction
/// `e^{−x²}/√π · 1/(x + (1/2)/(x + 1/(x + (3/2)/(x + ...))))`, evaluated from the tail.
fn erfc_cf(x: f64) -> f64 {
    let mut f = x;
    for n in (1..=120).rev() {
        f = x + (n as f64 / 2.0) / f;
    }
    (-x * x).exp() / (std::f64::consts::PI.sqrt() * f)
}

/// Φ(x), the standard normal CDF.
pub fn normal_cdf(x: f64) -> f64 {
    0.5 * erfc(-x / std::f64::consts::SQRT_2)
}

/// Exact GELU `x·Φ(x)`.
pub fn gelu(x: f64) -> f64 {
    x * normal_cdf(x)
}

/// `gelu'(x) = Φ(x) + x·φ(x)`, and the size of its terms (the scale its rounding error has).
pub fn gelu_grad(x: f64) -> (f64, f64) {
    let pdf = (-0.5 * x * x).exp() / (2.0 * std::f64::consts::PI).sqrt();
    let cdf = normal_cdf(x);
    (cdf + x * pdf, cdf + (x * pdf).abs())
}

/// The dropout factor of element `i` in f64: `1/(1 − p)` when kept, else 0 (the definition in
/// `ops::dropout`: kept when the element's uniform is at least `p`).
pub fn dropout_factor(seed: u64, i: usize, p: f32) -> f64 {
    if crate::ops::dropout::keep_uniform(seed, i as u32) >= p {
        1.0 / (1.0 - p as f64)
    } else {
        0.0
    }
}

// ---------------------------------------------------------------------------------------------
// Row-wise references
// ---------------------------------------------------------------------------------------------

/// Softmax of one row in f64.
pub fn softmax_row(x: &[f32]) -> Vec<f64> {
    let m = x.iter().fold(f64::NEG_INFINITY, |a, &v| a.max(v as f64));
    let e: Vec<f64> = x.iter().map(|&v| (v as f64 - m).exp()).collect();
    let s: f64 = e.iter().sum();
    e.into_iter().map(|v| v / s).collect()
}

/// Compare a row of `got` (at flat offset `offset` of output `part`) with `want`, norm-wise:
/// tolerance `rtol · max|want|`.
pub fn row_normwise(ck: &mut Checker, part: &str, offset: usize, got: &[f32], want: &[f64], rtol: f64) {
    let scale = want.iter().fold(0.0f64, |a, &v| a.max(v.abs()));
    let tol = rtol * scale + f64::MIN_POSITIVE;
    for (j, (&g, &w)) in got.iter().zip(want).enumerate() {
        ck.close(part, offset + j, g, w, tol);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(a: &[f32], b: &[f32], d: GemmDims) -> Vec<f32> {
        let mut c = vec![0.0f32; d.batch * d.m * d.n];
        for z in 0..d.batch {
            for i in 0..d.m {
                for j in 0..d.n {
                    let mut s = 0.0f64;
                    for p in 0..d.k {
                        let av = if d.ta {
                            a[z * d.m * d.k + p * d.m + i]
                        } else {
                            a[z * d.m * d.k + i * d.k + p]
                        };
                        let bv = if d.tb {
                            b[z * d.k * d.n + j * d.k + p]
                        } else {
                            b[z * d.k * d.n + p * d.n + j]
                        };
                        s += av as f64 * bv as f64;
                    }
                    c[z * d.m * d.n + i * d.n + j] = s as f32;
                }
            }
        }
        c
    }

    #[test]
    fn gemm_check_passes_a_right_product_and_catches_a_wrong_element() {
        let d = GemmDims {
            batch: 2,
            m: 5,
            n: 7,
            k: 33,
            ta: true,
            tb: true,
        };
        let a: Vec<f32> = (0..d.batch * d.m * d.k)
            .map(|i| ((i * 37 % 19) as f32 - 9.0) / 7.0)
            .collect();
        let b: Vec<f32> = (0..d.batch * d.k * d.n)
            .map(|i| ((i * 11 % 23) as f32 - 11.0) / 5.0)
            .collect();
        let mut c = naive(&a, &b, d);
        let mut ck = Checker::new();
        gemm(&mut ck, "c", &a, &b, &c, d, None);
        let ok = ck.finish().expect("the right product passes");
        assert_eq!(ok.elements, c.len(), "small outputs are checked completely");

        // A wrong transpose flag reads other elements: it must fail.
        let mut ck = Checker::new();
        gemm(&mut ck, "c", &a, &b, &c, GemmDims { tb: false, ..d }, None);
        assert!(ck.finish().is_err());

        // One corrupted element, by far less than an indexing bug would give.
        c[40] += 1e-3;
        let mut ck = Checker::new();
        gemm(&mut ck, "c", &a, &b, &c, d, None);
        let m = ck.finish().expect_err("a corrupted element is found");
        assert_eq!((m.part.as_str(), m.index), ("c", 40));
        assert!(m.to_string().starts_with("c[40] is "), "{m}");
    }

    #[test]
    fn nan_and_empty_checks_fail() {
        let mut ck = Checker::new();
        ck.close("y", 3, f32::NAN, 1.0, 1.0);
        assert_eq!(ck.finish().unwrap_err().index, 3);
        assert!(Checker::new().finish().is_err(), "no comparison is not a pass");
    }

    #[test]
    fn erf_matches_tabulated_values() {
        // Values from the closed forms' tables (Abramowitz & Stegun 7.1; mpmath to 16 digits).
        let cases = [
            (0.5, 0.520_499_877_813_046_5),
            (1.0, 0.842_700_792_949_714_9),
            (2.0, 0.995_322_265_018_952_7),
            (-1.5, -0.966_105_146_475_310_7),
        ];
        for (x, want) in cases {
            assert!((erf(x) - want).abs() < 1e-14, "erf({x}) = {}", erf(x));
        }
        let tails = [
            (2.5, 4.069_520_174_449_59e-4),
            (3.0, 2.209_049_699_858_544e-5),
            (5.0, 1.537_459_794_428_035e-12),
        ];
        for (x, want) in tails {
            assert!(((erfc(x) - want) / want).abs() < 1e-12, "erfc({x}) = {}", erfc(x));
        }
        assert!((erfc(-3.0) - (2.0 - 2.209_049_699_858_544e-5)).abs() < 1e-15);
        // GELU's zero of the derivative is near x = -0.7518.
        assert!(gelu_grad(-0.7518).0.abs() < 1e-4);
    }

    #[test]
    fn crate_gelu_agrees_with_the_f64_reference() {
        // The CPU kernel's scalar formula against this module's reference, over the range the
        // benchmark draws its inputs from: the tolerance the benchmark uses holds.
        use crate::ops::gelu::{gelu_grad_scalar, gelu_scalar};
        use crate::ops::GeluKind;
        let mut ck = Checker::new();
        for i in 0..=2000 {
            let x = -6.0 + 12.0 * i as f32 / 2000.0;
            let want = gelu(x as f64);
            ck.close(
                "y",
                i,
                gelu_scalar(x, GeluKind::Erf),
                want,
                TRANSCENDENTAL_RTOL * want.abs() + 1e-30,
            );
            let (g, mag) = gelu_grad(x as f64);
            ck.close(
                "dx",
                i,
                gelu_grad_scalar(x, GeluKind::Erf),
                g,
                TRANSCENDENTAL_RTOL * mag,
            );
        }
        let ok = ck.finish().unwrap_or_else(|m| panic!("{m}"));
        assert!(ok.worst < 0.5, "the tolerance has less than 2x headroom: {ok:?}");
    }

    #[test]
    fn samples_cover_the_edges_and_stay_in_range() {
        assert_eq!(sample_indices(5, 10), vec![0, 1, 2, 3, 4]);
        let s = sample_indices(1_000_000, 100);
        assert_eq!(s.len(), 100);
        assert!(s.contains(&0) && s.contains(&999_999));
        assert!(s.iter().all(|&i| i < 1_000_000));
        assert_eq!(s, sample_indices(1_000_000, 100), "the same every time");
    }
}
