//! Floating-point semantics of the PTX instructions: IEEE rounding modes, flush-to-zero,
//! saturation, NaN rules and the approximate instructions.
//!
//! # Directed rounding without a soft-float library
//! The host computes in round-to-nearest only. For f32 operands the exact result of `a+b`,
//! `a*b` and `a*b+c` is recovered as an unevaluated sum `s + e` of two f64 values: a product of
//! two f32 is exact in f64 (24+24 ≤ 53 significant bits), and Knuth's TwoSum gives the rounding
//! error `e` of an f64 addition exactly. Rounding `s + e` to f32 toward −∞ is then
//! `floor_f32(s)`, stepped down once more when `s` is itself an f32 value and `e < 0` (an f32
//! grid point is also an f64 grid point, so `e`, smaller than half an f64 ulp of `s`, can never
//! carry the value across another one). Toward +∞ and toward zero are the mirror images;
//! to nearest needs the tie case (`s` exactly halfway between two f32 values) settled by the
//! sign of `e`. This is the classic error-free-transformation argument (Ogita, Rump and Oishi,
//! "Accurate sum and dot product", SIAM J. Sci. Comput. 26(6), 2005).
//!
//! # Approximate instructions
//! `ex2.approx`, `lg2.approx`, `rcp.approx`, `rsqrt.approx`, `sqrt.approx`, `div.approx`,
//! `div.full`, `sin/cos/tanh.approx` are computed in f64 and rounded once to f32: the correctly
//! rounded result, which is within every error bound the PTX ISA states for them (e.g.
//! `ex2.approx.f32`: max. relative error 2⁻²²·⁵; `div.full.f32`: 2 ulp; `rcp.approx.f32`: 1 ulp).
//! A kernel whose output depends on the hardware's exact approximation bits is therefore not
//! reproduced bit for bit here; vitcore's kernels compare with the CPU to 1e-5, far above them.

use crate::ptx::ir::Rnd;

/// The canonical NaN the hardware returns from arithmetic (PTX ISA: NaN payloads are not kept).
pub const NAN32: f32 = f32::from_bits(0x7fff_ffff);
pub const NAN64: f64 = f64::from_bits(0x7fff_ffff_ffff_ffff);

#[inline]
pub fn ftz32(x: f32) -> f32 {
    if x.is_subnormal() {
        0.0f32.copysign(x)
    } else {
        x
    }
}

#[inline]
pub fn canon32(x: f32) -> f32 {
    if x.is_nan() {
        NAN32
    } else {
        x
    }
}

#[inline]
pub fn canon64(x: f64) -> f64 {
    if x.is_nan() {
        NAN64
    } else {
        x
    }
}

/// `.sat`: clamp to [0, 1]; NaN becomes +0.
#[inline]
pub fn sat32(x: f32) -> f32 {
    if x.is_nan() {
        0.0
    } else {
        x.clamp(0.0, 1.0)
    }
}

#[inline]
pub fn sat64(x: f64) -> f64 {
    if x.is_nan() {
        0.0
    } else {
        x.clamp(0.0, 1.0)
    }
}

pub fn next_up32(x: f32) -> f32 {
    if x.is_nan() || x == f32::INFINITY {
        return x;
    }
    if x == 0.0 {
        return f32::from_bits(1);
    }
    let b = x.to_bits();
    f32::from_bits(if x > 0.0 { b + 1 } else { b - 1 })
}

pub fn next_down32(x: f32) -> f32 {
    -next_up32(-x)
}

pub fn next_up64(x: f64) -> f64 {
    if x.is_nan() || x == f64::INFINITY {
        return x;
    }
    if x == 0.0 {
        return f64::from_bits(1);
    }
    let b = x.to_bits();
    f64::from_bits(if x > 0.0 { b + 1 } else { b - 1 })
}

pub fn next_down64(x: f64) -> f64 {
    -next_up64(-x)
}

/// The largest f32 ≤ s.
fn floor_f32(s: f64) -> f32 {
    let r = s as f32;
    if (r as f64) > s {
        next_down32(r)
    } else {
        r
    }
}

/// The smallest f32 ≥ s.
fn ceil_f32(s: f64) -> f32 {
    let r = s as f32;
    if (r as f64) < s {
        next_up32(r)
    } else {
        r
    }
}

/// TwoSum: `a + b = s + e` exactly, with `s = fl(a + b)` (Knuth).
#[inline]
pub fn two_sum(a: f64, b: f64) -> (f64, f64) {
    let s = a + b;
    let bb = s - a;
    let e = (a - (s - bb)) + (b - bb);
    (s, e)
}

/// Round the exact value `s + e` (`s` = its f64 rounding, `e` the exact remainder) to f32.
pub fn round_to_f32(s: f64, e: f64, mode: Rnd) -> f32 {
    if s.is_nan() {
        return NAN32;
    }
    if s.is_infinite() {
        return s as f32;
    }
    let down = || {
        let r = floor_f32(s);
        if r as f64 == s && e < 0.0 {
            next_down32(r)
        } else {
            r
        }
    };
    let up = || {
        let r = ceil_f32(s);
        if r as f64 == s && e > 0.0 {
            next_up32(r)
        } else {
            r
        }
    };
    match mode {
        Rnd::Rm => down(),
        Rnd::Rp => up(),
        Rnd::Rz => {
            if s > 0.0 || (s == 0.0 && e > 0.0) {
                down()
            } else {
                up()
            }
        }
        Rnd::Rn => {
            let lo = floor_f32(s);
            if lo as f64 == s {
                return lo; // s is an f32: e (< half an f64 ulp) cannot move it to another
            }
            let hi = next_up32(lo);
            let hi64 = if hi.is_infinite() { 2f64.powi(128) } else { hi as f64 };
            let mid = lo as f64 + (hi64 - lo as f64) / 2.0;
            if s < mid || (s == mid && e < 0.0) {
                lo
            } else if s > mid || (s == mid && e > 0.0) {
                hi
            } else if lo.to_bits() & 1 == 0 {
                lo // a true tie: to even
            } else {
                hi
            }
        }
    }
}

/// Exact zero results: IEEE 754 §6.3 gives +0 in every mode but toward −∞, which gives −0;
/// a sum of two zeros of the same sign keeps that sign.
fn zero_sign(a_zero_sign: Option<(bool, bool)>, mode: Rnd) -> f32 {
    match a_zero_sign {
        Some((sa, sb)) if sa == sb => {
            if sa {
                -0.0
            } else {
                0.0
            }
        }
        _ => {
            if mode == Rnd::Rm {
                -0.0
            } else {
                0.0
            }
        }
    }
}

/// `add{.rnd}.f32`.
pub fn add32(a: f32, b: f32, mode: Rnd) -> f32 {
    if mode == Rnd::Rn {
        return canon32(a + b);
    }
    let (s, e) = two_sum(a as f64, b as f64);
    if s == 0.0 && e == 0.0 {
        let zeros = (a == 0.0 && b == 0.0).then(|| (a.is_sign_negative(), b.is_sign_negative()));
        return zero_sign(zeros, mode);
    }
    round_to_f32(s, e, mode)
}

/// `mul{.rnd}.f32`.
pub fn mul32(a: f32, b: f32, mode: Rnd) -> f32 {
    if mode == Rnd::Rn {
        return canon32(a * b);
    }
    let p = a as f64 * b as f64; // exact
    if p == 0.0 {
        return p as f32; // the sign of a product of zeros is exact in f64
    }
    round_to_f32(p, 0.0, mode)
}

/// `fma.rnd.f32`: `a*b + c` rounded once.
pub fn fma32(a: f32, b: f32, c: f32, mode: Rnd) -> f32 {
    if mode == Rnd::Rn {
        return canon32(a.mul_add(b, c));
    }
    let p = a as f64 * b as f64; // exact
    if !p.is_finite() || !c.is_finite() {
        return canon32((p + c as f64) as f32);
    }
    let (s, e) = two_sum(p, c as f64);
    if s == 0.0 && e == 0.0 {
        let zeros = (p == 0.0 && c == 0.0).then(|| (p.is_sign_negative(), c.is_sign_negative()));
        return zero_sign(zeros, mode);
    }
    round_to_f32(s, e, mode)
}

/// Adjust a round-to-nearest f64 result `s` (exact value `s + e`) to a directed mode.
fn direct64(s: f64, e: f64, mode: Rnd) -> f64 {
    if !s.is_finite() || e == 0.0 {
        return s;
    }
    match mode {
        Rnd::Rn => s,
        Rnd::Rm => {
            if e < 0.0 {
                next_down64(s)
            } else {
                s
            }
        }
        Rnd::Rp => {
            if e > 0.0 {
                next_up64(s)
            } else {
                s
            }
        }
        Rnd::Rz => {
            if s > 0.0 && e < 0.0 {
                next_down64(s)
            } else if s < 0.0 && e > 0.0 {
                next_up64(s)
            } else {
                s
            }
        }
    }
}

/// `min` / `max` (PTX ISA, "Floating Point Instructions: min, max"): a NaN operand yields the
/// other operand (both NaN: NaN); with `.NaN` any NaN operand yields NaN; −0 counts as smaller
/// than +0. f32 operands go through f64 exactly (the result is one of them, or NaN).
pub fn minmax64(a: f64, b: f64, nan: bool, max: bool) -> f64 {
    match (a.is_nan(), b.is_nan()) {
        (true, true) => NAN64,
        (true, false) | (false, true) if nan => NAN64,
        (true, false) => b,
        (false, true) => a,
        _ => {
            let a_wins = if a == b {
                a.is_sign_negative() != max
            } else {
                (a < b) != max
            };
            if a_wins {
                a
            } else {
                b
            }
        }
    }
}

pub fn min32(a: f32, b: f32, nan: bool) -> f32 {
    minmax64(a as f64, b as f64, nan, false) as f32
}

pub fn max32(a: f32, b: f32, nan: bool) -> f32 {
    minmax64(a as f64, b as f64, nan, true) as f32
}

/// Round an f32 to an integral f32 value (`cvt.rni/rzi/rmi/rpi.f32.f32`).
pub fn round_integral32(x: f32, mode: crate::ptx::ir::IRnd) -> f32 {
    use crate::ptx::ir::IRnd::*;
    match mode {
        Rni => x.round_ties_even(),
        Rzi => x.trunc(),
        Rmi => x.floor(),
        Rpi => x.ceil(),
    }
}

pub fn round_integral64(x: f64, mode: crate::ptx::ir::IRnd) -> f64 {
    use crate::ptx::ir::IRnd::*;
    match mode {
        Rni => x.round_ties_even(),
        Rzi => x.trunc(),
        Rmi => x.floor(),
        Rpi => x.ceil(),
    }
}

/// An integer (given exactly as i128) to f32 in a rounding mode.
pub fn int_to_f32(v: i128, mode: Rnd) -> f32 {
    let r = v as f32; // to nearest
    if mode == Rnd::Rn || !r.is_finite() {
        return r;
    }
    let back = r as f64 as i128; // r is integral here (|v| < 2^127)
    let e = (v - back).signum() as f64;
    round_to_f32(r as f64, e, mode)
}

pub fn int_to_f64(v: i128, mode: Rnd) -> f64 {
    let r = v as f64;
    if mode == Rnd::Rn {
        return r;
    }
    let back = r as i128;
    direct64(r, (v - back).signum() as f64, mode)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directed_rounding_of_sums_products_and_fmas() {
        let one = 1.0f32;
        let tiny = f32::EPSILON / 4.0; // below half an ulp of 1
        assert_eq!(add32(one, tiny, Rnd::Rn), one);
        assert_eq!(add32(one, tiny, Rnd::Rp), next_up32(one));
        assert_eq!(add32(one, tiny, Rnd::Rm), one);
        assert_eq!(add32(one, -tiny, Rnd::Rm), next_down32(one));
        assert_eq!(add32(one, -tiny, Rnd::Rz), next_down32(one));
        assert_eq!(add32(-one, tiny, Rnd::Rz), -next_down32(one));
        // The expf expansion: fma.rm with the magic constant 12582913 must round toward -inf.
        let x = 0.7f32;
        let r = fma32(x, 254.0, 12582913.0, Rnd::Rm);
        assert_eq!(r, (x as f64 * 254.0 + 12582913.0).floor() as f32);
        // Exact cancellations: +0, or -0 toward -inf.
        assert!(add32(1.0, -1.0, Rnd::Rm).is_sign_negative());
        assert!(add32(1.0, -1.0, Rnd::Rp).is_sign_positive());
        assert!(add32(-0.0, -0.0, Rnd::Rp).is_sign_negative());
        // Overflow toward zero stays finite.
        assert_eq!(mul32(f32::MAX, 2.0, Rnd::Rz), f32::MAX);
        assert_eq!(mul32(f32::MAX, 2.0, Rnd::Rp), f32::INFINITY);
        assert_eq!(mul32(-f32::MAX, 2.0, Rnd::Rp), -f32::MAX);
    }

    #[test]
    fn round_to_nearest_settles_ties_with_the_remainder() {
        // 1 + 2^-24 is exactly halfway between 1 and its successor: ties to even (1).
        let mid = 1.0f64 + 2f64.powi(-24);
        assert_eq!(round_to_f32(mid, 0.0, Rnd::Rn), 1.0);
        assert_eq!(round_to_f32(mid, 1e-30, Rnd::Rn), next_up32(1.0));
        assert_eq!(round_to_f32(mid, -1e-30, Rnd::Rn), 1.0);
    }

    #[test]
    fn min_max_nan_and_signed_zero() {
        assert_eq!(min32(f32::NAN, 2.0, false), 2.0);
        assert!(min32(f32::NAN, 2.0, true).is_nan());
        assert!(min32(f32::NAN, f32::NAN, false).is_nan());
        assert!(min32(0.0, -0.0, false).is_sign_negative());
        assert!(max32(-0.0, 0.0, false).is_sign_positive());
        assert_eq!(minmax64(1.0, f64::NAN, false, true), 1.0);
        assert_eq!(min32(f32::NAN, f32::NAN, false).to_bits(), 0x7fff_ffff);
    }

    #[test]
    fn integer_conversions_round_as_asked() {
        let big = (1i128 << 60) + 1; // not representable in f32
        assert!((int_to_f32(big, Rnd::Rp) as f64 as i128) > big);
        assert!((int_to_f32(big, Rnd::Rm) as f64 as i128) < big);
        assert_eq!(int_to_f32(big, Rnd::Rm), (1u64 << 60) as f32);
        assert_eq!(int_to_f32(-big, Rnd::Rz), -((1u64 << 60) as f32));
    }
}

// ---------------------------------------------------------------------------------------------
// Instruction-level dispatch on raw register bits (f32 in the low 32 bits, f64 in all 64).
// ---------------------------------------------------------------------------------------------

use crate::ptx::ir::{FBinOp, FMods, FUnOp, Prec};

#[inline]
fn in32(v: u64, m: &FMods) -> f32 {
    let f = f32::from_bits(v as u32);
    if m.ftz {
        ftz32(f)
    } else {
        f
    }
}

#[inline]
fn out32(f: f32, m: &FMods) -> u64 {
    let mut f = f;
    if m.ftz {
        f = ftz32(f);
    }
    if m.sat {
        f = sat32(f);
    }
    f.to_bits() as u64
}

#[inline]
fn out64(d: f64, m: &FMods) -> u64 {
    (if m.sat { sat64(d) } else { d }).to_bits()
}

/// Two-source floating-point instruction (`add sub mul div min max copysign`).
pub fn fbin(op: FBinOp, m: &FMods, a: u64, b: u64) -> u64 {
    match m.prec {
        Prec::F32 => {
            let (x, y) = (in32(a, m), in32(b, m));
            let r = match op {
                FBinOp::Add => add32(x, y, m.rnd),
                FBinOp::Sub => add32(x, -y, m.rnd),
                FBinOp::Mul => mul32(x, y, m.rnd),
                FBinOp::Div => {
                    if m.approx {
                        // div.approx / div.full: the correctly rounded quotient (within the ISA's
                        // 2-ulp bound for both).
                        canon32(((x as f64) / (y as f64)) as f32)
                    } else if m.rnd == Rnd::Rn {
                        canon32(x / y)
                    } else {
                        let q = x as f64 / y as f64;
                        // x/y - q = -(q*y - x)/y, and the residual q*y - x is exact through an
                        // fma: its sign tells which side of q the exact quotient lies on
                        // (round_to_f32 reads only the sign of its second argument).
                        let r = if q.is_finite() && q != 0.0 {
                            q.mul_add(y as f64, -(x as f64))
                        } else {
                            0.0
                        };
                        let e = if r == 0.0 {
                            0.0
                        } else {
                            -r.signum() * (y as f64).signum()
                        };
                        round_to_f32(q, e, m.rnd)
                    }
                }
                FBinOp::Min => min32(x, y, m.nan),
                FBinOp::Max => max32(x, y, m.nan),
                // copysign d, a, b: b's magnitude with a's sign.
                FBinOp::Copysign => y.copysign(x),
            };
            out32(r, m)
        }
        Prec::F64 => {
            let (x, y) = (f64::from_bits(a), f64::from_bits(b));
            let r = match op {
                // f64 runs in round-to-nearest only (directed modes are refused at load).
                FBinOp::Add => canon64(x + y),
                FBinOp::Sub => canon64(x - y),
                FBinOp::Mul => canon64(x * y),
                FBinOp::Div => canon64(x / y),
                FBinOp::Min => minmax64(x, y, m.nan, false),
                FBinOp::Max => minmax64(x, y, m.nan, true),
                FBinOp::Copysign => y.copysign(x),
            };
            out64(r, m)
        }
    }
}

/// `fma.rnd` / `mad.rnd`.
pub fn ffma(m: &FMods, a: u64, b: u64, c: u64) -> u64 {
    match m.prec {
        Prec::F32 => out32(fma32(in32(a, m), in32(b, m), in32(c, m), m.rnd), m),
        Prec::F64 => {
            // Only .rn is accepted for f64 at load.
            out64(
                canon64(f64::from_bits(a).mul_add(f64::from_bits(b), f64::from_bits(c))),
                m,
            )
        }
    }
}

/// One-source floating-point instruction.
pub fn fun(op: FUnOp, m: &FMods, a: u64) -> u64 {
    match m.prec {
        Prec::F32 => {
            let x = in32(a, m);
            let r = match op {
                // neg and abs change the sign bit only (a NaN stays the same NaN).
                FUnOp::Neg => -x,
                FUnOp::Abs => x.abs(),
                FUnOp::Sqrt => {
                    if m.approx {
                        canon32((x as f64).sqrt() as f32)
                    } else {
                        canon32(x.sqrt())
                    }
                }
                FUnOp::Rcp => {
                    if m.approx {
                        canon32((1.0 / x as f64) as f32)
                    } else {
                        canon32(1.0 / x)
                    }
                }
                FUnOp::Rsqrt => canon32((1.0 / (x as f64).sqrt()) as f32),
                FUnOp::Ex2 => canon32((x as f64).exp2() as f32),
                FUnOp::Lg2 => canon32((x as f64).log2() as f32),
                FUnOp::Sin => canon32((x as f64).sin() as f32),
                FUnOp::Cos => canon32((x as f64).cos() as f32),
                FUnOp::Tanh => canon32((x as f64).tanh() as f32),
            };
            out32(r, m)
        }
        Prec::F64 => {
            let x = f64::from_bits(a);
            let r = match op {
                FUnOp::Neg => -x,
                FUnOp::Abs => x.abs(),
                FUnOp::Sqrt => canon64(x.sqrt()),
                FUnOp::Rcp => canon64(1.0 / x),
                FUnOp::Rsqrt => canon64(1.0 / x.sqrt()),
                // Refused at load for f64.
                FUnOp::Ex2 | FUnOp::Lg2 | FUnOp::Sin | FUnOp::Cos | FUnOp::Tanh => f64::NAN,
            };
            out64(r, m)
        }
    }
}
