//! Vectorisable f32 `exp`, `erfc` and `tanh`.
//!
//! Why not `f32::exp`: it calls the C library one element at a time. GELU and softmax evaluate it
//! on tens of millions of elements a step; these versions are plain arithmetic on `f32` with no
//! branches, so the compiler turns a loop over them into SIMD code. Accuracy is checked against
//! the f64 functions in the tests below (a few ulp).

/// `e^x` (Cephes-style: `2^n · p(r)` with `x = n·ln2 + r`, `|r| ≤ ln2/2`). Underflows to 0 below
/// about -87.3, saturates at `f32::MAX`-range above 88.7.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    let xc = x.clamp(-87.0, 88.0);
    // Round to nearest by the 1.5·2²³ trick: `f32::round` is a library call on baseline x86-64
    // and would stop the loop from vectorising.
    const SHIFTER: f32 = 12_582_912.0;
    let shifted = xc * LOG2E + SHIFTER;
    let n = shifted - SHIFTER;
    // n as an integer, read from the mantissa of `shifted` (a float→int cast would not vectorise).
    let n_int = shifted.to_bits().wrapping_sub(SHIFTER.to_bits()) as i32;
    // `mul_add` is one fused multiply-add (the crate is built for x86-64-v3, which has FMA);
    // written as `a * b + c` Rust keeps two roundings and two instructions.
    let r = n.mul_add(-LN2_LO, n.mul_add(-LN2_HI, xc));
    let mut p = 1.987_569_1e-4_f32;
    p = p.mul_add(r, 1.398_199_9e-3);
    p = p.mul_add(r, 8.333_452e-3);
    p = p.mul_add(r, 4.166_579_6e-2);
    p = p.mul_add(r, 1.666_666_5e-1);
    p = p.mul_add(r, 5.000_000_1e-1);
    let p = p.mul_add(r * r, r + 1.0);
    let scale = f32::from_bits(((n_int + 127) as u32) << 23);
    if x < -87.0 {
        0.0
    } else {
        p * scale
    }
}

/// The complementary error function `erfc(x) = 1 - erf(x)`, relative error about 1e-7 (the
/// Chebyshev fit of Numerical Recipes' `erfcc`), accurate also in the tail where `1 - erf` would
/// cancel.
#[inline(always)]
pub fn erfc(x: f32) -> f32 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    const COEFFS: [f32; 10] = [
        -1.265_512_2,
        1.000_023_7,
        0.374_091_96,
        0.096_784_18,
        -0.186_288_06,
        0.278_868_07,
        -1.135_203_98,
        1.488_515_87,
        -0.822_152_23,
        0.170_872_77,
    ];
    // Horner from the highest power down, one fused multiply-add per coefficient.
    let mut poly = COEFFS[9];
    for &c in COEFFS[..9].iter().rev() {
        poly = poly.mul_add(t, c);
    }
    let ans = t * exp((-z).mul_add(z, poly));
    if x >= 0.0 {
        ans
    } else {
        2.0 - ans
    }
}

/// `tanh(x) = 1 - 2 / (e^{2x} + 1)`, exact to rounding at both ends.
#[inline(always)]
pub fn tanh(x: f32) -> f32 {
    let e = exp(2.0 * x.clamp(-15.0, 15.0));
    1.0 - 2.0 / (e + 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn erfc64(x: f64) -> f64 {
        // Reference by series / continued fraction in f64, good to ~1e-15 for this range.
        if x.abs() < 2.0 {
            // erf by Maclaurin series.
            let (mut term, mut sum, x2) = (x, x, x * x);
            for n in 1..80 {
                term *= -x2 / n as f64;
                sum += term / (2 * n + 1) as f64;
            }
            1.0 - 2.0 / std::f64::consts::PI.sqrt() * sum
        } else {
            // Continued fraction for erfc, x >= 2 (and symmetry below -2).
            let z = x.abs();
            let mut f = 0.0;
            for k in (1..200).rev() {
                f = (k as f64 / 2.0) / (z + f);
            }
            let v = (-z * z).exp() / std::f64::consts::PI.sqrt() / (z + f);
            if x > 0.0 {
                v
            } else {
                2.0 - v
            }
        }
    }

    #[test]
    fn exp_is_accurate() {
        let mut worst = 0.0f64;
        for i in -8700..8800 {
            let x = i as f32 * 0.01;
            let r = (x as f64).exp();
            worst = worst.max(((exp(x) as f64 - r) / r).abs());
        }
        assert!(worst < 3e-7, "worst relative error {worst}");
        assert_eq!(exp(-1000.0), 0.0);
        assert!(exp(0.0) == 1.0);
    }

    #[test]
    fn erfc_and_tanh_are_accurate() {
        for i in -600..600 {
            let x = i as f32 * 0.01;
            let r = erfc64(x as f64);
            let e = ((erfc(x) as f64 - r) / r).abs();
            // Beyond |x| = 4 the f32 rounding of x² (in e^{-x²}) dominates; erfc < 2e-8 there.
            let tol = if x.abs() < 4.0 { 2e-6 } else { 1e-5 };
            assert!(e < tol, "erfc({x}) rel err {e}");
            let t = (x as f64).tanh();
            assert!((tanh(x) as f64 - t).abs() < 3e-7, "tanh({x})");
        }
    }
}

/// `Σ a_i b_i` with 8 independent partial sums. A plain `.sum()` of floats must add in order,
/// which the compiler may not vectorise; eight lanes it can (and the rounding is no worse).
#[inline(always)]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0.0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for k in 0..8 {
            acc[k] += x[k] * y[k];
        }
    }
    let mut tail = 0.0;
    for (x, y) in ra.iter().zip(rb) {
        tail += x * y;
    }
    acc.iter().sum::<f32>() + tail
}

/// `Σ a_i` with 8 independent partial sums (see [`dot`]).
#[inline(always)]
pub fn sum(a: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let c = a.chunks_exact(8);
    let tail: f32 = c.remainder().iter().sum();
    for x in c {
        for k in 0..8 {
            acc[k] += x[k];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// `Σ (a_i − c)²` with 8 independent partial sums (see [`dot`]): a row's variance times its
/// length, given its mean `c`.
#[inline(always)]
pub fn sum_sq_dev(a: &[f32], c: f32) -> f32 {
    let mut acc = [0.0f32; 8];
    let chunks = a.chunks_exact(8);
    let tail: f32 = chunks.remainder().iter().map(|&x| (x - c) * (x - c)).sum();
    for x in chunks {
        for k in 0..8 {
            acc[k] += (x[k] - c) * (x[k] - c);
        }
    }
    acc.iter().sum::<f32>() + tail
}
