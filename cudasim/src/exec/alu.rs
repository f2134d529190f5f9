//! Per-lane semantics of the integer, comparison, selection and conversion instructions, as
//! pure functions on raw register bits (PTX ISA §9.7.1, §9.7.3 `setp`, §9.7.9 `cvt`).
//!
//! Values of types narrower than 64 bits travel zero-extended in a `u64`; signed types are
//! sign-extended from their width where the semantics need it.

use super::float::{self, canon32, canon64, ftz32, int_to_f32, int_to_f64, round_integral32, round_integral64};
use crate::ptx::ir::{BoolOp, Cmp, IRnd, IntOp, IntUnOp, Rnd, Ty};

#[inline]
pub fn mask(bits: u32) -> u64 {
    if bits >= 64 {
        u64::MAX
    } else {
        (1u64 << bits) - 1
    }
}

/// Sign-extend the low `bits` of `v`.
#[inline]
pub fn sext(v: u64, bits: u32) -> i64 {
    if bits >= 64 {
        v as i64
    } else {
        let s = 64 - bits;
        ((v << s) as i64) >> s
    }
}

/// A result of type `ty` as a register holds it: PTX writes a value into a register wider than
/// its type sign-extended for signed types and zero-extended otherwise (PTX ISA, "Operand Size
/// Exceeding Instruction-Type Size").
#[inline]
pub fn fit(v: u64, ty: Ty) -> u64 {
    if ty.is_signed() {
        sext(v, ty.bits()) as u64
    } else {
        v & mask(ty.bits())
    }
}

/// `v` as the (mathematical) integer its type says.
#[inline]
pub fn int_value(v: u64, ty: Ty) -> i128 {
    let bits = ty.bits();
    if ty.is_signed() {
        sext(v, bits) as i128
    } else {
        (v & mask(bits)) as i128
    }
}

/// Two-source integer instructions. Division by zero does not trap on a GPU: the result is
/// unspecified in the PTX ISA; here `div` gives all bits set and `rem` the dividend (what the
/// hardware's division sequence returns). `i32::MIN / -1` wraps.
#[inline]
pub fn int_bin(op: IntOp, ty: Ty, a: u64, b: u64) -> u64 {
    let bits = ty.bits();
    let m = mask(bits);
    let signed = ty.is_signed();
    let r = match op {
        IntOp::Add => a.wrapping_add(b),
        IntOp::Sub => a.wrapping_sub(b),
        IntOp::MulLo => a.wrapping_mul(b),
        IntOp::MulHi => {
            let p = int_value(a, ty).wrapping_mul(int_value(b, ty));
            (p >> bits) as u64
        }
        IntOp::Div => {
            if b & m == 0 {
                m
            } else if signed {
                sext(a, bits).wrapping_div(sext(b, bits)) as u64
            } else {
                (a & m) / (b & m)
            }
        }
        IntOp::Rem => {
            if b & m == 0 {
                a
            } else if signed {
                sext(a, bits).wrapping_rem(sext(b, bits)) as u64
            } else {
                (a & m) % (b & m)
            }
        }
        IntOp::Min => {
            if signed {
                sext(a, bits).min(sext(b, bits)) as u64
            } else {
                (a & m).min(b & m)
            }
        }
        IntOp::Max => {
            if signed {
                sext(a, bits).max(sext(b, bits)) as u64
            } else {
                (a & m).max(b & m)
            }
        }
        IntOp::And => a & b,
        IntOp::Or => a | b,
        IntOp::Xor => a ^ b,
        // Shift amounts are unsigned 32-bit; amounts ≥ the width clamp to the width.
        IntOp::Shl => {
            let s = b as u32;
            if s >= bits {
                0
            } else {
                a << s
            }
        }
        IntOp::Shr => {
            let s = (b as u32).min(bits);
            if signed {
                (sext(a, bits) >> s.min(63)) as u64
            } else if s >= bits {
                0
            } else {
                (a & m) >> s
            }
        }
    };
    fit(r, ty)
}

#[inline]
pub fn int_un(op: IntUnOp, ty: Ty, a: u64) -> u64 {
    let bits = ty.bits();
    let m = mask(bits);
    let r = match op {
        IntUnOp::Neg => a.wrapping_neg(),
        IntUnOp::Abs => sext(a, bits).wrapping_abs() as u64,
        IntUnOp::Not => !a,
        IntUnOp::Cnot => (a & m == 0) as u64,
        IntUnOp::Popc => (a & m).count_ones() as u64,
        IntUnOp::Clz => ((a & m).leading_zeros() - (64 - bits)) as u64,
        IntUnOp::Brev => (a & m).reverse_bits() >> (64 - bits),
    };
    // popc and clz write a .u32 result whatever their source width.
    if matches!(op, IntUnOp::Popc | IntUnOp::Clz) {
        r
    } else {
        fit(r & m, ty)
    }
}

/// `mul.wide`: the product of two `ty` values in twice the width.
#[inline]
pub fn mul_wide(ty: Ty, a: u64, b: u64) -> u64 {
    let p = int_value(a, ty).wrapping_mul(int_value(b, ty));
    let wide = match ty {
        Ty::S16 => Ty::S32,
        Ty::S32 => Ty::S64,
        Ty::U16 | Ty::B16 => Ty::U32,
        _ => Ty::U64,
    };
    fit(p as u64, wide)
}

/// `mad.lo/.hi/.wide`.
#[inline]
pub fn mad(ty: Ty, hi: bool, wide: bool, a: u64, b: u64, c: u64) -> u64 {
    let bits = ty.bits();
    if wide {
        let wty = match ty {
            Ty::S16 => Ty::S32,
            Ty::U16 => Ty::U32,
            Ty::S32 => Ty::S64,
            _ => Ty::U64,
        };
        return int_bin(IntOp::Add, wty, mul_wide(ty, a, b), c);
    }
    if hi {
        let p = int_value(a, ty).wrapping_mul(int_value(b, ty));
        return fit(((p >> bits) as u64).wrapping_add(c), ty);
    }
    fit(a.wrapping_mul(b).wrapping_add(c), ty)
}

/// `bfe`: `len` bits of `a` from bit `pos` (each taken mod 256), sign-extended from the last
/// extracted bit for signed types (PTX ISA `bfe`).
pub fn bfe(ty: Ty, a: u64, pos: u64, len: u64) -> u64 {
    let bits = ty.bits() as u64;
    let pos = pos & 0xff;
    let len = len & 0xff;
    let m = mask(bits as u32);
    let sbit = if ty.is_signed() && len != 0 {
        let msb = (pos + len - 1).min(bits - 1);
        (a >> msb) & 1
    } else {
        0
    };
    let mut d = 0u64;
    for i in 0..bits {
        let bit = if i < len && pos + i < bits {
            (a >> (pos + i)) & 1
        } else {
            sbit
        };
        d |= bit << i;
    }
    fit(d & m, ty)
}

/// `bfi`: `b` with `len` bits from `a` inserted at `pos`.
pub fn bfi(ty: Ty, a: u64, b: u64, pos: u64, len: u64) -> u64 {
    let bits = ty.bits() as u64;
    let pos = pos & 0xff;
    let len = len & 0xff;
    let mut d = b;
    for i in 0..len {
        if pos + i < bits {
            d = (d & !(1 << (pos + i))) | (((a >> i) & 1) << (pos + i));
        }
    }
    d & mask(bits as u32)
}

#[inline]
fn f32_of(v: u64) -> f32 {
    f32::from_bits(v as u32)
}

/// `setp.cmp.ty a, b` (before any boolean combine). Float comparisons are ordered (false on
/// NaN) except the `u` forms (true on NaN); `.ftz` flushes subnormal inputs.
#[inline]
pub fn compare(cmp: Cmp, ty: Ty, ftz: bool, a: u64, b: u64) -> bool {
    match ty {
        Ty::F32 => {
            let (mut x, mut y) = (f32_of(a), f32_of(b));
            if ftz {
                x = ftz32(x);
                y = ftz32(y);
            }
            fcmp(cmp, x as f64, y as f64)
        }
        Ty::F64 => fcmp(cmp, f64::from_bits(a), f64::from_bits(b)),
        _ => {
            let (x, y) = (int_value(a, ty), int_value(b, ty));
            // Unsigned comparisons of the raw bits.
            let (ux, uy) = (a & mask(ty.bits()), b & mask(ty.bits()));
            match cmp {
                Cmp::Eq => x == y,
                Cmp::Ne => x != y,
                Cmp::Lt => x < y,
                Cmp::Le => x <= y,
                Cmp::Gt => x > y,
                Cmp::Ge => x >= y,
                Cmp::Lo => ux < uy,
                Cmp::Ls => ux <= uy,
                Cmp::Hi => ux > uy,
                Cmp::Hs => ux >= uy,
                _ => false, // unordered forms are refused for integers at load
            }
        }
    }
}

fn fcmp(cmp: Cmp, x: f64, y: f64) -> bool {
    let nan = x.is_nan() || y.is_nan();
    match cmp {
        Cmp::Eq => x == y,
        Cmp::Ne => !nan && x != y,
        Cmp::Lt | Cmp::Lo => x < y,
        Cmp::Le | Cmp::Ls => x <= y,
        Cmp::Gt | Cmp::Hi => x > y,
        Cmp::Ge | Cmp::Hs => x >= y,
        Cmp::Equ => nan || x == y,
        Cmp::Neu => nan || x != y,
        Cmp::Ltu => nan || x < y,
        Cmp::Leu => nan || x <= y,
        Cmp::Gtu => nan || x > y,
        Cmp::Geu => nan || x >= y,
        Cmp::Num => !nan,
        Cmp::Nan => nan,
    }
}

#[inline]
pub fn combine(op: BoolOp, a: bool, b: bool) -> bool {
    match op {
        BoolOp::And => a && b,
        BoolOp::Or => a || b,
        BoolOp::Xor => a ^ b,
    }
}

/// Clamp an integer to the range of `ty` (for `cvt.sat` and float→int conversions).
fn clamp_to(v: i128, ty: Ty) -> u64 {
    let bits = ty.bits();
    let (lo, hi): (i128, i128) = if ty.is_signed() {
        (-(1i128 << (bits - 1)), (1i128 << (bits - 1)) - 1)
    } else {
        (0, (1i128 << bits) - 1)
    };
    (v.clamp(lo, hi) as u64) & mask(bits)
}

/// `cvt{.rnd}{.ftz}{.sat}.dty.sty` (PTX ISA §9.7.9.21). Float→integer conversions saturate to
/// the destination's range and give 0 for NaN, as the ISA specifies.
pub fn cvt(dty: Ty, sty: Ty, rnd: Option<Rnd>, irnd: Option<IRnd>, sat: bool, ftz: bool, a: u64) -> u64 {
    let r = cvt_bits(dty, sty, rnd, irnd, sat, ftz, a);
    if dty.is_float() {
        r
    } else {
        fit(r, dty)
    }
}

fn cvt_bits(dty: Ty, sty: Ty, rnd: Option<Rnd>, irnd: Option<IRnd>, sat: bool, ftz: bool, a: u64) -> u64 {
    let rnd = rnd.unwrap_or(Rnd::Rn);
    match (sty.is_float(), dty.is_float()) {
        (false, false) => {
            let v = int_value(a, sty);
            if sat {
                clamp_to(v, dty)
            } else {
                (v as u64) & mask(dty.bits())
            }
        }
        (false, true) => {
            let v = int_value(a, sty);
            match dty {
                Ty::F32 => {
                    let f = int_to_f32(v, rnd);
                    (if sat { float::sat32(f) } else { f }).to_bits() as u64
                }
                _ => {
                    let f = int_to_f64(v, rnd);
                    (if sat { float::sat64(f) } else { f }).to_bits()
                }
            }
        }
        (true, false) => {
            let x = match sty {
                Ty::F32 => {
                    let f = f32_of(a);
                    (if ftz { ftz32(f) } else { f }) as f64
                }
                _ => f64::from_bits(a),
            };
            if x.is_nan() {
                return 0;
            }
            let r = round_integral64(x, irnd.unwrap_or(IRnd::Rzi));
            let v = if r >= 1.8e38 {
                i128::MAX
            } else if r <= -1.8e38 {
                i128::MIN
            } else {
                r as i128
            };
            clamp_to(v, dty)
        }
        (true, true) => {
            let out_f32 = |mut f: f32| {
                if ftz {
                    f = ftz32(f);
                }
                if sat {
                    f = float::sat32(f);
                }
                canon32(f).to_bits() as u64
            };
            match (sty, dty) {
                (Ty::F32, Ty::F32) => {
                    let mut f = f32_of(a);
                    if ftz {
                        f = ftz32(f);
                    }
                    if let Some(m) = irnd {
                        f = round_integral32(f, m);
                    }
                    out_f32(f)
                }
                (Ty::F32, _) => {
                    let mut f = f32_of(a);
                    if ftz {
                        f = ftz32(f);
                    }
                    let d = f as f64;
                    canon64(if sat { float::sat64(d) } else { d }).to_bits()
                }
                (_, Ty::F32) => {
                    let d = f64::from_bits(a);
                    out_f32(float::round_to_f32(d, 0.0, rnd))
                }
                _ => {
                    let mut d = f64::from_bits(a);
                    if let Some(m) = irnd {
                        d = round_integral64(d, m);
                    }
                    canon64(if sat { float::sat64(d) } else { d }).to_bits()
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integer_edge_cases() {
        assert_eq!(int_bin(IntOp::Div, Ty::U32, 7, 0), 0xffff_ffff);
        assert_eq!(int_bin(IntOp::Rem, Ty::S64, 7, 0), 7);
        assert_eq!(
            int_bin(IntOp::Div, Ty::S32, 0x8000_0000, 0xffff_ffff) & 0xffff_ffff,
            0x8000_0000
        );
        assert_eq!(int_bin(IntOp::Div, Ty::S32, (-7i32) as u32 as u64, 2), (-3i64) as u64);
        assert_eq!(int_bin(IntOp::Rem, Ty::S32, (-7i32) as u32 as u64, 2), (-1i64) as u64);
        assert_eq!(int_bin(IntOp::Shl, Ty::B32, 1, 32), 0);
        assert_eq!(int_bin(IntOp::Shr, Ty::S32, 0x8000_0000, 40) & 0xffff_ffff, 0xffff_ffff);
        assert_eq!(int_bin(IntOp::Shr, Ty::U32, 0x8000_0000, 31), 1);
        assert_eq!(int_bin(IntOp::MulHi, Ty::U32, 0xffff_ffff, 0xffff_ffff), 0xffff_fffe);
        assert_eq!(
            int_bin(IntOp::MulHi, Ty::S32, (-2i32) as u32 as u64, 3) & 0xffff_ffff,
            0xffff_ffff
        );
        assert_eq!(mul_wide(Ty::S32, (-3i32) as u32 as u64, 5), (-15i64) as u64);
        assert_eq!(mul_wide(Ty::U32, 0xffff_ffff, 2), 0x1_ffff_fffe);
        assert_eq!(int_un(IntUnOp::Clz, Ty::B32, 1), 31);
        assert_eq!(int_un(IntUnOp::Brev, Ty::B32, 1), 0x8000_0000);
        assert_eq!(bfe(Ty::S32, 0x0000_0f00, 8, 4) & 0xffff_ffff, 0xffff_ffff);
        assert_eq!(bfe(Ty::U32, 0x0000_0f00, 8, 4), 0xf);
        assert_eq!(bfi(Ty::B32, 0b101, 0, 4, 3), 0b101_0000);
    }

    #[test]
    fn comparisons_order_nan() {
        let nan = f32::NAN.to_bits() as u64;
        let one = 1f32.to_bits() as u64;
        assert!(!compare(Cmp::Lt, Ty::F32, false, nan, one));
        assert!(compare(Cmp::Ltu, Ty::F32, false, nan, one));
        assert!(!compare(Cmp::Ne, Ty::F32, false, nan, one));
        assert!(compare(Cmp::Neu, Ty::F32, false, nan, one));
        assert!(compare(Cmp::Lt, Ty::S32, false, 0xffff_ffff, 0));
        assert!(!compare(Cmp::Lo, Ty::U32, false, 0xffff_ffff, 0));
    }

    #[test]
    fn conversions() {
        let f = |x: f32| x.to_bits() as u64;
        assert_eq!(
            cvt(Ty::S32, Ty::F32, None, Some(IRnd::Rzi), false, false, f(-2.7)),
            (-2i64) as u64
        );
        assert_eq!(cvt(Ty::S32, Ty::F32, None, Some(IRnd::Rni), false, false, f(2.5)), 2);
        assert_eq!(cvt(Ty::U32, Ty::F32, None, Some(IRnd::Rzi), false, false, f(-5.0)), 0);
        assert_eq!(
            cvt(Ty::S32, Ty::F32, None, Some(IRnd::Rzi), false, false, f(1e20)),
            0x7fff_ffff
        );
        assert_eq!(
            cvt(Ty::S32, Ty::F32, None, Some(IRnd::Rzi), false, false, f(f32::NAN)),
            0
        );
        assert_eq!(
            cvt(Ty::F32, Ty::F32, None, Some(IRnd::Rzi), false, false, f(-2.7)),
            f(-2.0)
        );
        assert_eq!(cvt(Ty::F32, Ty::F32, None, None, true, false, f(7.0)), f(1.0));
        assert_eq!(cvt(Ty::F32, Ty::F32, None, None, true, false, f(f32::NAN)), f(0.0));
        assert_eq!(cvt(Ty::S64, Ty::S32, None, None, false, false, 0xffff_ffff), u64::MAX);
        assert_eq!(
            cvt(Ty::U64, Ty::U32, None, None, false, false, 0xffff_ffff),
            0xffff_ffff
        );
        assert_eq!(cvt(Ty::U32, Ty::U64, None, None, false, false, 0x1_0000_0005), 5);
        assert_eq!(cvt(Ty::U8, Ty::S32, None, None, true, false, 300), 255);
        assert_eq!(cvt(Ty::F32, Ty::U32, Some(Rnd::Rn), None, false, false, 3), f(3.0));
        let d = 0.1f64;
        assert_eq!(
            cvt(Ty::F32, Ty::F64, Some(Rnd::Rn), None, false, false, d.to_bits()),
            f(0.1)
        );
        assert!(f32::from_bits(cvt(Ty::F32, Ty::F64, Some(Rnd::Rm), None, false, false, d.to_bits()) as u32) < 0.1f32);
    }
}
