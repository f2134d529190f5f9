//! Per-instruction semantics: every instruction family the simulator decodes, run in hand-written
//! PTX kernels (one test vector per thread) and compared bit for bit with a host reference
//! computed here in Rust, independently of `cudasim::exec` (std's f32/f64 operations are
//! correctly rounded to nearest; directed roundings are derived from exact f64 sums and
//! products). The vectors cover NaN, ±Inf, ±0, subnormals, f32::MAX, ties and near-ties, and a
//! few hundred seeded random bit patterns. NaN results are compared as "is NaN" only.
//!
//! Every failure names the instruction, its inputs (bits and values), what the simulator gave
//! and what was expected; a test reports all its failing instructions before it fails.

#![allow(clippy::type_complexity)]

use cudasim::{Arg, Device, DeviceModel, LaunchConfig, RunOptions};

// ---------------------------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------------------------

fn device() -> Device {
    Device::new(DeviceModel::t4(), RunOptions::default())
}

const HEAD: &str = ".version 7.8\n.target sm_75\n.address_size 64\n";

/// Registers every kernel declares. The element-wise template uses %r1-%r3 / %f1-%f3 (32-bit
/// inputs), %rd11-%rd13 / %fd1-%fd3 (64-bit inputs), %r10 / %rd20 (the result) and %r30-%r34,
/// %rd1-%rd10, %p7 for itself; a body may use %r11-%r29, %f4-%f15, %rd21-%rd39, %fd4-%fd15 and
/// %p1-%p6.
const REGS: &str = ".reg .pred %p<8>;\n.reg .b16 %h<8>;\n.reg .b32 %r<40>;\n.reg .f32 %f<16>;\n.reg .b64 %rd<40>;\n.reg .f64 %fd<16>;\n";

/// Seeded xorshift64.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    fn u32(&mut self) -> u32 {
        (self.next() >> 32) as u32
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn bool(&mut self) -> bool {
        self.next() & (1 << 40) != 0
    }
    /// An f32 with a moderate exponent (so that sums and products of two of them interact).
    fn f32_mid(&mut self) -> f32 {
        let sign = (self.u32() & 1) << 31;
        let exp = 100 + self.below(54) as u32;
        f32::from_bits(sign | (exp << 23) | (self.u32() & 0x7f_ffff))
    }
    /// An f32 in [0, 1).
    fn unit(&mut self) -> f32 {
        (self.u32() >> 8) as f32 / (1u32 << 24) as f32
    }
}

/// The element-wise kernel `k(pa, pb, pc, pd, n)`: thread `i < n` loads `pa[i]`, `pb[i]`, `pc[i]`
/// (`inw` bytes each: into %r1-%r3 and %f1-%f3 for 4, %rd11-%rd13 and %fd1-%fd3 for 8), runs
/// `body`, and stores %r10 (`outw` = 4) or %rd20 (`outw` = 8) to `pd[i]`.
fn ew_ptx(body: &str, inw: u32, outw: u32) -> String {
    let loads = if inw == 4 {
        "ld.global.u32 %r1, [%rd6];\nld.global.u32 %r2, [%rd7];\nld.global.u32 %r3, [%rd8];\n\
         mov.b32 %f1, %r1;\nmov.b32 %f2, %r2;\nmov.b32 %f3, %r3;\n"
    } else {
        "ld.global.u64 %rd11, [%rd6];\nld.global.u64 %rd12, [%rd7];\nld.global.u64 %rd13, [%rd8];\n\
         mov.b64 %fd1, %rd11;\nmov.b64 %fd2, %rd12;\nmov.b64 %fd3, %rd13;\n"
    };
    let store = if outw == 4 {
        "st.global.u32 [%rd9], %r10;"
    } else {
        "st.global.u64 [%rd9], %rd20;"
    };
    format!(
        "{HEAD}.visible .entry k(.param .u64 pa, .param .u64 pb, .param .u64 pc, .param .u64 pd, .param .u32 pn)\n{{\n{REGS}\
         ld.param.u64 %rd1, [pa];\nld.param.u64 %rd2, [pb];\nld.param.u64 %rd3, [pc];\nld.param.u64 %rd4, [pd];\n\
         ld.param.u32 %r30, [pn];\n\
         mov.u32 %r31, %ctaid.x;\nmov.u32 %r32, %ntid.x;\nmov.u32 %r33, %tid.x;\nmad.lo.u32 %r34, %r31, %r32, %r33;\n\
         setp.ge.u32 %p7, %r34, %r30;\n@%p7 bra DONE;\n\
         cvta.to.global.u64 %rd1, %rd1;\ncvta.to.global.u64 %rd2, %rd2;\ncvta.to.global.u64 %rd3, %rd3;\ncvta.to.global.u64 %rd4, %rd4;\n\
         mul.wide.u32 %rd5, %r34, {inw};\nadd.s64 %rd6, %rd1, %rd5;\nadd.s64 %rd7, %rd2, %rd5;\nadd.s64 %rd8, %rd3, %rd5;\n\
         {loads}\
         {body}\n\
         mul.wide.u32 %rd10, %r34, {outw};\nadd.s64 %rd9, %rd4, %rd10;\n{store}\n\
         DONE:\nret;\n}}\n"
    )
}

fn upload_words(dev: &Device, words: impl Iterator<Item = u64>, w: u32) -> u64 {
    let v: Vec<u32> = if w == 4 {
        words.map(|x| x as u32).collect()
    } else {
        words.flat_map(|x| [x as u32, (x >> 32) as u32]).collect()
    };
    dev.upload_u32(&v)
}

fn download_words(dev: &Device, ptr: u64, n: usize, w: u32) -> Vec<u64> {
    if w == 4 {
        dev.download_u32(ptr, n).into_iter().map(u64::from).collect()
    } else {
        dev.download_u32(ptr, 2 * n)
            .chunks_exact(2)
            .map(|c| c[0] as u64 | (c[1] as u64) << 32)
            .collect()
    }
}

fn load(dev: &Device, text: &str, what: &str) -> std::sync::Arc<cudasim::Module> {
    dev.load_ptx(text).unwrap_or_else(|e| {
        panic!(
            "`{what}`: the kernel failed to load: line {}: {}\n{text}",
            e.line, e.msg
        )
    })
}

/// Run `body` element-wise over `cases` (each the bits of operands a, b, c).
fn run_ew(dev: &Device, body: &str, inw: u32, outw: u32, cases: &[[u64; 3]]) -> Vec<u64> {
    let text = ew_ptx(body, inw, outw);
    let m = load(dev, &text, body);
    let n = cases.len();
    assert!(n > 0);
    let ins: Vec<u64> = (0..3)
        .map(|k| upload_words(dev, cases.iter().map(|c| c[k]), inw))
        .collect();
    let out = dev.alloc(n as u64 * outw as u64).expect("device memory");
    let cfg = LaunchConfig {
        grid: [n.div_ceil(128) as u32, 1, 1],
        block: [128, 1, 1],
        dynamic_shared: 0,
    };
    let args = [
        Arg::U64(ins[0]),
        Arg::U64(ins[1]),
        Arg::U64(ins[2]),
        Arg::U64(out),
        Arg::U32(n as u32),
    ];
    dev.launch(&m, "k", cfg, &args)
        .unwrap_or_else(|e| panic!("`{body}`: the launch failed: {e}"));
    download_words(dev, out, n, outw)
}

/// How to show a value in a failure message.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Fmt {
    F32,
    F64,
    U32,
    S32,
    U64,
    S64,
}

fn show(v: u64, f: Fmt) -> String {
    match f {
        Fmt::F32 => format!("{:#010x} ({:e})", v as u32, f32::from_bits(v as u32)),
        Fmt::F64 => format!("{v:#018x} ({:e})", f64::from_bits(v)),
        Fmt::U32 => format!("{:#010x} ({})", v as u32, v as u32),
        Fmt::S32 => format!("{:#010x} ({})", v as u32, v as u32 as i32),
        Fmt::U64 => format!("{v:#018x} ({v})"),
        Fmt::S64 => format!("{v:#018x} ({})", v as i64),
    }
}

/// Failures collected over a test; `finish` panics with all of them.
#[derive(Default)]
struct Report {
    lines: Vec<String>,
    failed_instrs: Vec<String>,
}

impl Report {
    /// Compare every case: `want(case, found)` is `Err(expected)` on a mismatch. `ins` gives how
    /// many operands to show and their formats.
    fn check(
        &mut self,
        instr: &str,
        ins: &[Fmt],
        out: Fmt,
        cases: &[[u64; 3]],
        found: &[u64],
        want: impl Fn(&[u64; 3], u64) -> Result<(), String>,
    ) {
        let mut bad = 0usize;
        for (c, &f) in cases.iter().zip(found) {
            if let Err(exp) = want(c, f) {
                bad += 1;
                if bad <= 4 {
                    let args: Vec<String> = ins
                        .iter()
                        .enumerate()
                        .map(|(k, &fm)| format!("{}={}", ["a", "b", "c"][k], show(c[k], fm)))
                        .collect();
                    self.lines.push(format!(
                        "`{instr}` {}: found {}, expected {exp}",
                        args.join(" "),
                        show(f, out)
                    ));
                }
            }
        }
        if bad > 0 {
            self.lines
                .push(format!("`{instr}`: {bad} of {} vectors wrong", cases.len()));
            self.failed_instrs.push(instr.to_string());
        }
    }

    fn fail(&mut self, msg: String) {
        self.failed_instrs.push(msg.clone());
        self.lines.push(msg);
    }

    fn finish(self) {
        if !self.lines.is_empty() {
            panic!(
                "{} instruction(s) disagree with the reference: {:?}\n{}",
                self.failed_instrs.len(),
                self.failed_instrs,
                self.lines.join("\n")
            );
        }
    }
}

fn want_f32(exp: f32, found: u64) -> Result<(), String> {
    let f = f32::from_bits(found as u32);
    if exp.is_nan() {
        if f.is_nan() {
            Ok(())
        } else {
            Err("NaN".into())
        }
    } else if exp.to_bits() == found as u32 {
        Ok(())
    } else {
        Err(show(exp.to_bits() as u64, Fmt::F32))
    }
}

fn want_f64(exp: f64, found: u64) -> Result<(), String> {
    let f = f64::from_bits(found);
    if exp.is_nan() {
        if f.is_nan() {
            Ok(())
        } else {
            Err("NaN".into())
        }
    } else if exp.to_bits() == found {
        Ok(())
    } else {
        Err(show(exp.to_bits(), Fmt::F64))
    }
}

fn want_u32(exp: u32, found: u64, fmt: Fmt) -> Result<(), String> {
    if exp as u64 == found {
        Ok(())
    } else {
        Err(show(exp as u64, fmt))
    }
}

fn want_u64(exp: u64, found: u64, fmt: Fmt) -> Result<(), String> {
    if exp == found {
        Ok(())
    } else {
        Err(show(exp, fmt))
    }
}

fn f(c: u64) -> f32 {
    f32::from_bits(c as u32)
}

fn d(c: u64) -> f64 {
    f64::from_bits(c)
}

// ---------------------------------------------------------------------------------------------
// Host references for directed rounding
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq)]
enum Mode {
    Rn,
    Rz,
    Rm,
    Rp,
}

const MODES: [(Mode, &str); 4] = [(Mode::Rn, "rn"), (Mode::Rz, "rz"), (Mode::Rm, "rm"), (Mode::Rp, "rp")];

/// Knuth's TwoSum: `s + e == a + b` exactly, `s = fl(a + b)`.
fn two_sum(a: f64, b: f64) -> (f64, f64) {
    let s = a + b;
    let bb = s - a;
    let e = (a - (s - bb)) + (b - bb);
    (s, e)
}

/// How the exact value `hi + lo` (with `hi = fl64(hi + lo)`) compares with the f64 `x`.
fn cmp_exact(hi: f64, lo: f64, x: f64) -> std::cmp::Ordering {
    // Rounding to nearest is monotonic and x is representable: hi < x iff exact < x.
    if hi != x {
        hi.partial_cmp(&x).unwrap()
    } else {
        lo.partial_cmp(&0.0).unwrap()
    }
}

/// Round the exact value `hi + lo` (finite, nonzero unless `zero` applies) to f32 in `mode`;
/// `zero` is the result when the exact value is 0.
fn round_f32(hi: f64, lo: f64, mode: Mode, zero: f32) -> f32 {
    if hi.is_nan() {
        return f32::NAN;
    }
    if hi.is_infinite() {
        return hi as f32;
    }
    if hi == 0.0 && lo == 0.0 {
        return zero;
    }
    round_f32_by(hi, |x| cmp_exact(hi, lo, x), mode)
}

/// Round a nonzero finite exact value to f32 in `mode`, given `approx`, its f64 rounding to
/// nearest (so that the f32 nearest `approx` is one of the two f32 values around the exact
/// value), and `cmp(x)`, how the exact value compares with an f64 `x`.
fn round_f32_by(approx: f64, cmp: impl Fn(f64) -> std::cmp::Ordering, mode: Mode) -> f32 {
    use std::cmp::Ordering::*;
    let mut r = approx as f32;
    if r.is_infinite() {
        r = f32::MAX.copysign(r);
    }
    let (lower, upper) = match cmp(r as f64) {
        Equal => return r,
        Less => (r.next_down(), r),
        Greater => (r, r.next_up()),
    };
    // The value one step past f32::MAX is 2^128 for deciding ties.
    let val = |x: f32| {
        if x.is_infinite() {
            2f64.powi(128).copysign(x as f64)
        } else {
            x as f64
        }
    };
    let positive = approx > 0.0;
    match mode {
        Mode::Rm => lower,
        Mode::Rp => upper,
        Mode::Rz => {
            if positive {
                lower
            } else {
                upper
            }
        }
        Mode::Rn => match cmp((val(lower) + val(upper)) / 2.0) {
            Less => lower,
            Greater => upper,
            Equal => {
                if lower.to_bits() & 1 == 0 {
                    lower
                } else {
                    upper
                }
            }
        },
    }
}

/// How the exact quotient x/y (finite, nonzero x and y) compares with v: the sign of
/// x − v·y (v·y is exact in f64 for f32 operands; TwoSum makes the difference exact), times
/// y's sign.
fn div_ref(x: f32, y: f32, mode: Mode) -> f32 {
    if x.is_nan() || y.is_nan() || x.is_infinite() || y.is_infinite() || x == 0.0 || y == 0.0 {
        return x / y;
    }
    let (xd, yd) = (x as f64, y as f64);
    round_f32_by(
        xd / yd,
        |v| {
            let (hi, lo) = two_sum(xd, -(v * yd));
            let o = cmp_exact(hi, lo, 0.0);
            if yd < 0.0 {
                o.reverse()
            } else {
                o
            }
        },
        mode,
    )
}

/// The sign of an exact zero sum `a + b`: the operands' sign when both are zeros of one sign,
/// otherwise +0, or −0 when rounding toward −∞.
fn zero_sum(a: f64, b: f64, mode: Mode) -> f32 {
    if a == 0.0 && b == 0.0 && a.is_sign_negative() == b.is_sign_negative() {
        a as f32
    } else if mode == Mode::Rm {
        -0.0
    } else {
        0.0
    }
}

fn add_ref(a: f32, b: f32, mode: Mode) -> f32 {
    let (x, y) = (a as f64, b as f64);
    if !(x + y).is_finite() {
        return (x + y) as f32;
    }
    let (hi, lo) = two_sum(x, y);
    round_f32(hi, lo, mode, zero_sum(x, y, mode))
}

fn mul_ref(a: f32, b: f32, mode: Mode) -> f32 {
    let p = a as f64 * b as f64; // exact: 24 + 24 bits, no f64 overflow or underflow
    round_f32(p, 0.0, mode, p as f32)
}

fn fma_ref(a: f32, b: f32, c: f32, mode: Mode) -> f32 {
    let p = a as f64 * b as f64; // exact
    let z = c as f64;
    if !(p + z).is_finite() {
        return (p + z) as f32;
    }
    let (hi, lo) = two_sum(p, z);
    round_f32(hi, lo, mode, zero_sum(p, z, mode))
}

fn ftz(x: f32) -> f32 {
    if x.is_subnormal() {
        0.0f32.copysign(x)
    } else {
        x
    }
}

// ---------------------------------------------------------------------------------------------
// Test vectors
// ---------------------------------------------------------------------------------------------

/// f32 special values: zeros, infinities, NaNs (quiet, negative, signalling), subnormals,
/// normal limits, ones, ties and values with long significands.
fn specials32() -> Vec<u32> {
    let mut v = vec![
        0x0000_0000,
        0x8000_0000,
        0x7f80_0000,
        0xff80_0000,
        0x7fc0_0000,
        0xffc0_0000,
        0x7f80_0001,
        0x0000_0001,
        0x8000_0001,
        0x007f_ffff,
        0x807f_ffff,
        0x0080_0000,
        0x8080_0000,
        0x7f7f_ffff,
        0xff7f_ffff,
        0x3f80_0001,
        0x3fff_ffff,
        0x4b80_0000,
        0x4b7f_ffff,
        0x3380_0000,
        0x3400_0000,
        0x7f00_0000,
    ];
    for x in [
        1.0f32,
        -1.0,
        0.5,
        1.5,
        2.5,
        -2.5,
        3.0,
        1.0 / 3.0,
        0.1,
        -1e30,
        1e-30,
        0.75,
        -0.5,
    ] {
        v.push(x.to_bits());
    }
    v
}

/// Pairs of f32 operands: every pair of specials, random bit patterns, random moderate values,
/// and constructed ties and near-ties for addition and multiplication.
fn pairs32(seed: u64) -> Vec<[u64; 3]> {
    let s = specials32();
    let mut v = Vec::new();
    for &a in &s {
        for &b in &s {
            v.push([a as u64, b as u64, 0]);
        }
    }
    let mut r = Rng::new(seed);
    for _ in 0..300 {
        v.push([r.u32() as u64, r.u32() as u64, 0]);
    }
    for _ in 0..300 {
        v.push([r.f32_mid().to_bits() as u64, r.f32_mid().to_bits() as u64, 0]);
    }
    for _ in 0..200 {
        // a + b where b is half an ulp of a (a tie), or just off it.
        let a = r.f32_mid();
        let half_ulp = (a.abs().next_up() - a.abs()) / 2.0;
        let mut b = half_ulp;
        match r.below(4) {
            0 => b = b.next_up(),
            1 => b = b.next_down(),
            2 => b *= 3.0,
            _ => {}
        }
        if r.bool() {
            b = -b;
        }
        v.push([a.to_bits() as u64, b.to_bits() as u64, 0]);
        // Products of two odd 13-bit significands: 25 or 26 significant bits, often a tie.
        let m1 = (r.below(1 << 12) as u32 | 1) + (1 << 12);
        let m2 = (r.below(1 << 12) as u32 | 1) + (1 << 12);
        let x = m1 as f32 * 2f32.powi(r.below(40) as i32 - 32);
        let y = m2 as f32 * 2f32.powi(r.below(40) as i32 - 20);
        let x = if r.bool() { -x } else { x };
        v.push([x.to_bits() as u64, y.to_bits() as u64, 0]);
        // Products in the subnormal range.
        let x = f32::from_bits(r.u32() & 0x807f_ffff | (r.below(30) as u32 + 40) << 23);
        let y = f32::from_bits(r.u32() & 0x807f_ffff | (r.below(30) as u32 + 40) << 23);
        v.push([x.to_bits() as u64, y.to_bits() as u64, 0]);
    }
    v
}

/// Triples for fma: specials crossed (a subset), random patterns, and cancellations where c is
/// minus the rounded product (the result is the product's rounding error).
fn triples32(seed: u64) -> Vec<[u64; 3]> {
    let s: Vec<u32> = vec![
        0x0000_0000,
        0x8000_0000,
        0x7f80_0000,
        0xff80_0000,
        0x7fc0_0000,
        0x0000_0001,
        0x807f_ffff,
        0x7f7f_ffff,
        0x3f80_0000,
        0xbf80_0000,
        0x3f80_0001,
        0x3380_0000,
        0x0080_0000,
    ];
    let mut v = Vec::new();
    for &a in &s {
        for &b in &s {
            for &c in &s {
                v.push([a as u64, b as u64, c as u64]);
            }
        }
    }
    let mut r = Rng::new(seed);
    for _ in 0..300 {
        v.push([r.u32() as u64, r.u32() as u64, r.u32() as u64]);
    }
    for _ in 0..300 {
        let (a, b, c) = (r.f32_mid(), r.f32_mid(), r.f32_mid());
        v.push([a.to_bits() as u64, b.to_bits() as u64, c.to_bits() as u64]);
    }
    for _ in 0..300 {
        let (a, b) = (r.f32_mid(), r.f32_mid());
        let p = a * b;
        let c = match r.below(4) {
            0 => -p,
            1 => (-p).next_up(),
            2 => -(p * 0.5),
            _ => {
                // c makes a*b + c land near a tie: c = -p + half an ulp of p.
                let h = (p.abs().next_up() - p.abs()) / 2.0;
                -p + h * if r.bool() { 1.0 } else { -1.0 }
            }
        };
        v.push([a.to_bits() as u64, b.to_bits() as u64, c.to_bits() as u64]);
    }
    // Subnormal results of fma.
    for _ in 0..100 {
        let a = f32::from_bits(r.u32() & 0x807f_ffff | (r.below(20) as u32 + 50) << 23);
        let b = f32::from_bits(r.u32() & 0x807f_ffff | (r.below(20) as u32 + 50) << 23);
        let c = f32::from_bits(r.u32() & 0x80ff_ffff);
        v.push([a.to_bits() as u64, b.to_bits() as u64, c.to_bits() as u64]);
    }
    v
}

// ---------------------------------------------------------------------------------------------
// f32 arithmetic
// ---------------------------------------------------------------------------------------------

/// The reference itself, on cases whose directed roundings are known by hand.
#[test]
fn host_reference_rounds_as_expected() {
    let one = 1.0f32;
    let tiny = 2f32.powi(-30);
    assert_eq!(add_ref(one, tiny, Mode::Rn), one);
    assert_eq!(add_ref(one, tiny, Mode::Rz), one);
    assert_eq!(add_ref(one, tiny, Mode::Rm), one);
    assert_eq!(add_ref(one, tiny, Mode::Rp), one.next_up());
    assert_eq!(add_ref(one, -tiny, Mode::Rz), one.next_down());
    assert_eq!(add_ref(-one, -tiny, Mode::Rm), (-one).next_down());
    assert_eq!(add_ref(-one, -tiny, Mode::Rz), -one);
    // Ties to even.
    assert_eq!(add_ref(one, 2f32.powi(-24), Mode::Rn), one);
    assert_eq!(
        add_ref(one.next_up(), 2f32.powi(-24), Mode::Rn),
        one.next_up().next_up()
    );
    // Exact zeros.
    assert_eq!(add_ref(one, -one, Mode::Rm).to_bits(), 0x8000_0000);
    assert_eq!(add_ref(one, -one, Mode::Rn).to_bits(), 0);
    assert_eq!(add_ref(-0.0, -0.0, Mode::Rp).to_bits(), 0x8000_0000);
    assert_eq!(add_ref(0.0, -0.0, Mode::Rm).to_bits(), 0x8000_0000);
    // Overflow.
    assert_eq!(add_ref(f32::MAX, f32::MAX, Mode::Rz), f32::MAX);
    assert_eq!(add_ref(f32::MAX, f32::MAX, Mode::Rn), f32::INFINITY);
    assert_eq!(add_ref(-f32::MAX, -f32::MAX, Mode::Rp), -f32::MAX);
    assert_eq!(mul_ref(f32::MAX, 1.0f32.next_up(), Mode::Rm), f32::MAX);
    // Underflow.
    let dmin = f32::from_bits(1);
    assert_eq!(mul_ref(dmin, 0.5, Mode::Rn).to_bits(), 0); // tie to even: 0
    assert_eq!(mul_ref(dmin, 0.5, Mode::Rp), dmin);
    assert_eq!(mul_ref(dmin, -0.75, Mode::Rn), -dmin);
    assert_eq!(mul_ref(dmin, -0.25, Mode::Rz).to_bits(), 0x8000_0000);
    // fma: the rounding error of a product.
    let a = 1.0f32 + 2f32.powi(-12);
    let p = a * a;
    assert_eq!(fma_ref(a, a, -p, Mode::Rn), 2f32.powi(-24));
    // RN agrees with std on random inputs.
    let mut r = Rng::new(7);
    for _ in 0..100_000 {
        let (a, b, c) = (f32::from_bits(r.u32()), r.f32_mid(), r.f32_mid());
        for (x, y) in [(add_ref(a, b, Mode::Rn), a + b), (mul_ref(b, c, Mode::Rn), b * c)] {
            assert!(
                x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan()),
                "{a:e} {b:e} {c:e}"
            );
        }
        let (x, y) = (fma_ref(a, b, c, Mode::Rn), a.mul_add(b, c));
        assert!(
            x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan()),
            "fma {a:e} {b:e} {c:e}"
        );
        // Directed results bracket the exact value and are adjacent.
        let (lo, hi) = (fma_ref(b, c, a, Mode::Rm), fma_ref(b, c, a, Mode::Rp));
        if lo.is_finite() && hi.is_finite() {
            assert!(lo == hi || lo.next_up() == hi, "fma bracket {b:e} {c:e} {a:e}");
        }
    }
}

const F32_2: [Fmt; 2] = [Fmt::F32, Fmt::F32];
const F32_3: [Fmt; 3] = [Fmt::F32, Fmt::F32, Fmt::F32];

#[test]
fn f32_add_sub_mul_fma_in_every_rounding_mode() {
    let dev = device();
    let mut rep = Report::default();
    let pairs = pairs32(1);
    let triples = triples32(2);
    for (mode, m) in MODES {
        for (op, reference) in [
            ("add", add_ref as fn(f32, f32, Mode) -> f32),
            ("sub", |a: f32, b: f32, m| add_ref(a, -b, m)),
            ("mul", mul_ref),
        ] {
            let instr = format!("{op}.{m}.f32 %f4, %f1, %f2;");
            let found = run_ew(&dev, &format!("{instr}\nmov.b32 %r10, %f4;"), 4, 4, &pairs);
            rep.check(&instr, &F32_2, Fmt::F32, &pairs, &found, |c, x| {
                want_f32(reference(f(c[0]), f(c[1]), mode), x)
            });
        }
        let instr = format!("fma.{m}.f32 %f4, %f1, %f2, %f3;");
        let found = run_ew(&dev, &format!("{instr}\nmov.b32 %r10, %f4;"), 4, 4, &triples);
        rep.check(&instr, &F32_3, Fmt::F32, &triples, &found, |c, x| {
            want_f32(fma_ref(f(c[0]), f(c[1]), f(c[2]), mode), x)
        });
    }
    // With no rounding modifier, add/sub/mul round to nearest.
    for (op, reference) in [
        ("add", add_ref as fn(f32, f32, Mode) -> f32),
        ("sub", |a: f32, b: f32, m| add_ref(a, -b, m)),
        ("mul", mul_ref),
    ] {
        let instr = format!("{op}.f32 %f4, %f1, %f2;");
        let found = run_ew(&dev, &format!("{instr}\nmov.b32 %r10, %f4;"), 4, 4, &pairs);
        rep.check(&instr, &F32_2, Fmt::F32, &pairs, &found, |c, x| {
            want_f32(reference(f(c[0]), f(c[1]), Mode::Rn), x)
        });
    }
    rep.finish();
}

#[test]
fn f32_ftz_and_sat() {
    let dev = device();
    let mut rep = Report::default();
    let pairs = pairs32(3);
    let triples = triples32(4);
    for (op, reference) in [
        ("add", add_ref as fn(f32, f32, Mode) -> f32),
        ("sub", |a: f32, b: f32, m| add_ref(a, -b, m)),
        ("mul", mul_ref),
    ] {
        for (mode, m) in [(Mode::Rn, "rn"), (Mode::Rz, "rz")] {
            let instr = format!("{op}.{m}.ftz.f32 %f4, %f1, %f2;");
            let found = run_ew(&dev, &format!("{instr}\nmov.b32 %r10, %f4;"), 4, 4, &pairs);
            rep.check(&instr, &F32_2, Fmt::F32, &pairs, &found, |c, x| {
                want_f32(ftz(reference(ftz(f(c[0])), ftz(f(c[1])), mode)), x)
            });
        }
        let instr = format!("{op}.rn.sat.f32 %f4, %f1, %f2;");
        let found = run_ew(&dev, &format!("{instr}\nmov.b32 %r10, %f4;"), 4, 4, &pairs);
        rep.check(&instr, &F32_2, Fmt::F32, &pairs, &found, |c, x| {
            want_sat(reference(f(c[0]), f(c[1]), Mode::Rn), x)
        });
    }
    let instr = "fma.rn.ftz.f32 %f4, %f1, %f2, %f3;";
    let found = run_ew(&dev, &format!("{instr}\nmov.b32 %r10, %f4;"), 4, 4, &triples);
    rep.check(instr, &F32_3, Fmt::F32, &triples, &found, |c, x| {
        want_f32(ftz(fma_ref(ftz(f(c[0])), ftz(f(c[1])), ftz(f(c[2])), Mode::Rn)), x)
    });
    let instr = "fma.rn.sat.f32 %f4, %f1, %f2, %f3;";
    let found = run_ew(&dev, &format!("{instr}\nmov.b32 %r10, %f4;"), 4, 4, &triples);
    rep.check(instr, &F32_3, Fmt::F32, &triples, &found, |c, x| {
        want_sat(fma_ref(f(c[0]), f(c[1]), f(c[2]), Mode::Rn), x)
    });
    rep.finish();
}

/// `.sat` of an unsaturated result `r`: clamped to [0, 1], NaN to +0. (The ISA does not say
/// which zero a −0 result saturates to; either is accepted.)
fn want_sat(r: f32, found: u64) -> Result<(), String> {
    if r == 0.0 {
        if f(found) == 0.0 {
            return Ok(());
        }
        return Err("±0".into());
    }
    let exp = if r.is_nan() { 0.0 } else { r.clamp(0.0, 1.0) };
    want_f32(exp, found)
}

/// `fma.rm.f32 d, x, 252, 12582913` for x in [0, 1]: the sum lies in [2^23, 2^24), where the
/// ulp is 1, so rounding toward −∞ is floor(252·x) + 12582913.
#[test]
fn f32_fma_rm_with_immediates_floors() {
    let dev = device();
    let mut rep = Report::default();
    let mut r = Rng::new(5);
    let mut cases: Vec<[u64; 3]> = (0..=1024u32)
        .map(|k| [(k as f32 / 1024.0).to_bits() as u64, 0, 0])
        .collect();
    for k in 0..=252u32 {
        // x = k/252 and its neighbours: 252·x lands on, just below and just above an integer.
        let x = k as f32 / 252.0;
        for y in [x, x.next_down(), x.next_up()] {
            if (0.0..=1.0).contains(&y) {
                cases.push([y.to_bits() as u64, 0, 0]);
            }
        }
    }
    for _ in 0..500 {
        cases.push([r.unit().to_bits() as u64, 0, 0]);
    }
    cases.push([1.0f32.to_bits() as u64, 0, 0]);
    cases.push([0x8000_0000, 0, 0]);
    cases.push([1, 0, 0]);
    let instr = "fma.rm.f32 %f4, %f1, 0f437C0000, 0f4B400001;";
    let found = run_ew(&dev, &format!("{instr}\nmov.b32 %r10, %f4;"), 4, 4, &cases);
    rep.check(instr, &[Fmt::F32], Fmt::F32, &cases, &found, |c, x| {
        let exact = f(c[0]) as f64 * 252.0; // exact
        let floor = exact.floor() + 12582913.0;
        want_f32(floor as f32, x)?;
        want_f32(fma_ref(f(c[0]), 252.0, 12582913.0, Mode::Rm), x)
    });
    rep.finish();
}

/// The size of one unit in the last place of an f32 of magnitude `v` (subnormal spacing below
/// the normal range).
fn ulp32(v: f64) -> f64 {
    let v = v.abs();
    if v < f32::MIN_POSITIVE as f64 {
        return 2f64.powi(-149);
    }
    2f64.powi(v.log2().floor() as i32 - 23)
}

/// Found within `ulps` of the exact value `exact` (both finite), or the same special value.
fn want_within_ulps(exact: f64, found: u64, ulps: f64) -> Result<(), String> {
    let x = f(found) as f64;
    if exact.is_nan() {
        return want_f32(f32::NAN, found);
    }
    if exact.is_infinite() || exact == 0.0 {
        return want_f32(exact as f32, found);
    }
    if x.is_finite() && (x - exact).abs() <= ulps * ulp32(exact) {
        Ok(())
    } else {
        Err(format!("{exact:e} within {ulps} ulp"))
    }
}

#[test]
fn f32_div_rcp_sqrt() {
    let dev = device();
    let mut rep = Report::default();
    let mut pairs = pairs32(11);
    let mut r = Rng::new(12);
    for _ in 0..300 {
        // Quotients near the ends of the exponent range.
        let a = f32::from_bits(r.u32() & 0x807f_ffff | (r.below(254) as u32 + 1) << 23);
        let b = f32::from_bits(r.u32() & 0x807f_ffff | (r.below(254) as u32 + 1) << 23);
        pairs.push([a.to_bits() as u64, b.to_bits() as u64, 0]);
    }
    let instr = "div.rn.f32 %f4, %f1, %f2;";
    let found = run_ew(&dev, &format!("{instr}\nmov.b32 %r10, %f4;"), 4, 4, &pairs);
    rep.check(instr, &F32_2, Fmt::F32, &pairs, &found, |c, x| {
        want_f32(f(c[0]) / f(c[1]), x)
    });

    // div.full: 2 ulp over the full range, wherever the quotient is a normal number; the
    // special cases exactly.
    let special_quotient = |a: f32, b: f32| -> Option<f32> {
        if a.is_nan() || b.is_nan() || a.is_infinite() || b.is_infinite() || a == 0.0 || b == 0.0 {
            Some(a / b)
        } else {
            None
        }
    };
    let instr = "div.full.f32 %f4, %f1, %f2;";
    let found = run_ew(&dev, &format!("{instr}\nmov.b32 %r10, %f4;"), 4, 4, &pairs);
    rep.check(instr, &F32_2, Fmt::F32, &pairs, &found, |c, x| {
        let (a, b) = (f(c[0]), f(c[1]));
        if let Some(s) = special_quotient(a, b) {
            if a.is_subnormal() || b.is_subnormal() {
                return Ok(()); // full range, not subnormal-exact: checked below when normal
            }
            return want_f32(s, x);
        }
        let q = a as f64 / b as f64;
        if q.abs() < f32::MIN_POSITIVE as f64 || q.abs() > f32::MAX as f64 {
            return Ok(());
        }
        want_within_ulps(q, x, 2.0)
    });
    // div.approx: 2 ulp for |b| in [2^-126, 2^126] with a normal quotient.
    let instr = "div.approx.f32 %f4, %f1, %f2;";
    let found = run_ew(&dev, &format!("{instr}\nmov.b32 %r10, %f4;"), 4, 4, &pairs);
    rep.check(instr, &F32_2, Fmt::F32, &pairs, &found, |c, x| {
        let (a, b) = (f(c[0]), f(c[1]));
        if a.is_nan() || b.is_nan() {
            return want_f32(f32::NAN, x);
        }
        if a.is_subnormal() || b.is_subnormal() {
            return Ok(());
        }
        if let Some(s) = special_quotient(a, b) {
            return want_f32(s, x);
        }
        let q = a as f64 / b as f64;
        let bb = b.abs() as f64;
        if !(2f64.powi(-126)..=2f64.powi(126)).contains(&bb)
            || q.abs() < f32::MIN_POSITIVE as f64
            || q.abs() > f32::MAX as f64
        {
            return Ok(());
        }
        want_within_ulps(q, x, 2.0)
    });

    let mut singles: Vec<[u64; 3]> = specials32().into_iter().map(|a| [a as u64, 0, 0]).collect();
    for _ in 0..400 {
        singles.push([r.u32() as u64, 0, 0]);
    }
    for _ in 0..200 {
        singles.push([r.f32_mid().to_bits() as u64, 0, 0]);
    }
    for k in [
        2f32.powi(126),
        2f32.powi(127),
        2f32.powi(-126),
        2f32.powi(-127),
        3.0 * 2f32.powi(125),
    ] {
        for s in [k, -k, k.next_up(), k.next_down()] {
            singles.push([s.to_bits() as u64, 0, 0]);
        }
    }
    let one = [Fmt::F32];
    let instr = "rcp.rn.f32 %f4, %f1;";
    let found = run_ew(&dev, &format!("{instr}\nmov.b32 %r10, %f4;"), 4, 4, &singles);
    rep.check(instr, &one, Fmt::F32, &singles, &found, |c, x| {
        want_f32(1.0 / f(c[0]), x)
    });
    let instr = "sqrt.rn.f32 %f4, %f1;";
    let found = run_ew(&dev, &format!("{instr}\nmov.b32 %r10, %f4;"), 4, 4, &singles);
    rep.check(instr, &one, Fmt::F32, &singles, &found, |c, x| {
        want_f32(f(c[0]).sqrt(), x)
    });
    // rcp.approx.ftz: 1 ulp; subnormal inputs act as ±0 (→ ±Inf), subnormal results are ±0.
    let instr = "rcp.approx.ftz.f32 %f4, %f1;";
    let found = run_ew(&dev, &format!("{instr}\nmov.b32 %r10, %f4;"), 4, 4, &singles);
    rep.check(instr, &one, Fmt::F32, &singles, &found, |c, x| {
        let a = ftz(f(c[0]));
        let q = 1.0 / a as f64;
        if a.is_nan() || a.is_infinite() || a == 0.0 {
            return want_f32(q as f32, x);
        }
        if q.abs() < f32::MIN_POSITIVE as f64 {
            return want_f32(0.0f32.copysign(a), x);
        }
        want_within_ulps(q, x, 1.0)
    });
    // ex2.approx.ftz: relative error at most 2^-22; subnormal inputs act as 0 (→ 1), results
    // below the normal range are +0, above it +Inf.
    let mut ex: Vec<[u64; 3]> = singles.clone();
    for _ in 0..400 {
        ex.push([((r.unit() - 0.5) * 300.0).to_bits() as u64, 0, 0]);
    }
    for k in [
        -126.0f32, -125.5, -1.0, -0.5, 0.5, 1.0, 10.0, 127.0, 127.5, 128.0, 200.0, -200.0, -149.0,
    ] {
        ex.push([k.to_bits() as u64, 0, 0]);
    }
    let instr = "ex2.approx.ftz.f32 %f4, %f1;";
    let found = run_ew(&dev, &format!("{instr}\nmov.b32 %r10, %f4;"), 4, 4, &ex);
    rep.check(instr, &one, Fmt::F32, &ex, &found, |c, x| {
        let a = ftz(f(c[0]));
        let e = (a as f64).exp2();
        if a.is_nan() {
            return want_f32(f32::NAN, x);
        }
        if a >= 128.0 {
            return want_f32(f32::INFINITY, x);
        }
        if a < -127.0 {
            return want_f32(0.0, x);
        }
        if !(-125.99..=127.99).contains(&a) {
            return Ok(()); // within 2^-22 of a range end: either side is acceptable
        }
        let got = f(x) as f64;
        if (got - e).abs() <= e * 2f64.powi(-22) {
            Ok(())
        } else {
            Err(format!("{e:e} within a relative 2^-22"))
        }
    });
    rep.finish();
}

/// min/max reference: a NaN operand gives the other operand, two NaNs give NaN, −0 < +0.
fn minmax_ref(a: f32, b: f32, max: bool, nan: bool) -> f32 {
    if a.is_nan() || b.is_nan() {
        if nan || (a.is_nan() && b.is_nan()) {
            return f32::NAN;
        }
        return if a.is_nan() { b } else { a };
    }
    if a == 0.0 && b == 0.0 {
        let neg = if max {
            a.is_sign_negative() && b.is_sign_negative()
        } else {
            a.is_sign_negative() || b.is_sign_negative()
        };
        return if neg { -0.0 } else { 0.0 };
    }
    if (a > b) == max {
        a
    } else {
        b
    }
}

#[test]
fn f32_min_max_abs_neg_copysign() {
    let dev = device();
    let mut rep = Report::default();
    let pairs = pairs32(21);
    for (op, max) in [("min", false), ("max", true)] {
        for (modifier, nan, flush) in [("", false, false), (".NaN", true, false), (".ftz", false, true)] {
            let instr = format!("{op}{modifier}.f32 %f4, %f1, %f2;");
            let found = run_ew(&dev, &format!("{instr}\nmov.b32 %r10, %f4;"), 4, 4, &pairs);
            rep.check(&instr, &F32_2, Fmt::F32, &pairs, &found, |c, x| {
                let (a, b) = if flush {
                    (ftz(f(c[0])), ftz(f(c[1])))
                } else {
                    (f(c[0]), f(c[1]))
                };
                want_f32(minmax_ref(a, b, max, nan), x)
            });
        }
    }
    let instr = "copysign.f32 %f4, %f1, %f2;";
    let found = run_ew(&dev, &format!("{instr}\nmov.b32 %r10, %f4;"), 4, 4, &pairs);
    rep.check(instr, &F32_2, Fmt::F32, &pairs, &found, |c, x| {
        // b's magnitude with a's sign.
        want_f32(
            f32::from_bits((c[1] as u32 & 0x7fff_ffff) | (c[0] as u32 & 0x8000_0000)),
            x,
        )
    });
    let singles: Vec<[u64; 3]> = pairs.iter().map(|c| [c[0], 0, 0]).collect();
    for (instr, reference) in [
        (
            "abs.f32 %f4, %f1;",
            (|a: f32| f32::from_bits(a.to_bits() & 0x7fff_ffff)) as fn(f32) -> f32,
        ),
        ("neg.f32 %f4, %f1;", |a: f32| f32::from_bits(a.to_bits() ^ 0x8000_0000)),
        ("abs.ftz.f32 %f4, %f1;", |a: f32| ftz(a).abs()),
        ("neg.ftz.f32 %f4, %f1;", |a: f32| -ftz(a)),
    ] {
        let found = run_ew(&dev, &format!("{instr}\nmov.b32 %r10, %f4;"), 4, 4, &singles);
        rep.check(instr, &[Fmt::F32], Fmt::F32, &singles, &found, |c, x| {
            want_f32(reference(f(c[0])), x)
        });
    }
    rep.finish();
}

// ---------------------------------------------------------------------------------------------
// f64
// ---------------------------------------------------------------------------------------------

fn specials64() -> Vec<u64> {
    let mut v = vec![
        0,
        0x8000_0000_0000_0000,
        0x7ff0_0000_0000_0000,
        0xfff0_0000_0000_0000,
        0x7ff8_0000_0000_0000,
        0xfff8_0000_0000_0000,
        1,
        0x8000_0000_0000_0001,
        0x000f_ffff_ffff_ffff,
        0x0010_0000_0000_0000,
        0x7fef_ffff_ffff_ffff,
        0xffef_ffff_ffff_ffff,
        0x3ff0_0000_0000_0001,
        0x3ca0_0000_0000_0000, // 2^-53
        0x4340_0000_0000_0000, // 2^53
    ];
    for x in [1.0f64, -1.0, 0.5, 1.5, 2.5, 3.0, 1.0 / 3.0, 0.1, -1e300, 1e-300] {
        v.push(x.to_bits());
    }
    // Values at the f32 range's edges (for cvt to f32).
    for x in [
        f32::MAX as f64,
        f32::MAX as f64 * (1.0 + 2f64.powi(-25)),
        f32::MAX as f64 * (1.0 + 2f64.powi(-24)),
        2f64.powi(128),
        f32::MIN_POSITIVE as f64,
        2f64.powi(-149),
        2f64.powi(-150),
        2f64.powi(-150) * 1.5,
        -2f64.powi(-151),
        1.0 + 2f64.powi(-24),
        1.0 + 2f64.powi(-24) + 2f64.powi(-52),
        -(1.0 + 3.0 * 2f64.powi(-24)),
    ] {
        v.push(x.to_bits());
    }
    v
}

fn mid64(r: &mut Rng) -> f64 {
    let sign = r.next() & (1 << 63);
    let exp = 900 + r.below(240);
    f64::from_bits(sign | exp << 52 | r.next() & 0x000f_ffff_ffff_ffff)
}

#[test]
fn f64_arithmetic_and_conversions_to_and_from_f32() {
    let dev = device();
    let mut rep = Report::default();
    let s = specials64();
    let mut cases: Vec<[u64; 3]> = Vec::new();
    for &a in &s {
        for &b in &s {
            cases.push([a, b, s[(a as usize ^ b as usize) % s.len()]]);
        }
    }
    let mut r = Rng::new(31);
    for _ in 0..300 {
        cases.push([r.next(), r.next(), r.next()]);
    }
    for _ in 0..300 {
        let (a, b) = (mid64(&mut r), mid64(&mut r));
        let c = match r.below(3) {
            0 => -(a * b),
            1 => mid64(&mut r),
            _ => -(a * b) * (1.0 + 2f64.powi(-50)),
        };
        cases.push([a.to_bits(), b.to_bits(), c.to_bits()]);
    }
    let two = [Fmt::F64, Fmt::F64];
    let bin: [(&str, fn(f64, f64) -> f64); 5] = [
        ("add.rn.f64 %fd4, %fd1, %fd2;", |a, b| a + b),
        ("sub.rn.f64 %fd4, %fd1, %fd2;", |a, b| a - b),
        ("mul.rn.f64 %fd4, %fd1, %fd2;", |a, b| a * b),
        ("div.rn.f64 %fd4, %fd1, %fd2;", |a, b| a / b),
        ("add.f64 %fd4, %fd1, %fd2;", |a, b| a + b),
    ];
    for (instr, reference) in bin {
        let found = run_ew(&dev, &format!("{instr}\nmov.b64 %rd20, %fd4;"), 8, 8, &cases);
        rep.check(instr, &two, Fmt::F64, &cases, &found, |c, x| {
            want_f64(reference(d(c[0]), d(c[1])), x)
        });
    }
    let instr = "fma.rn.f64 %fd4, %fd1, %fd2, %fd3;";
    let found = run_ew(&dev, &format!("{instr}\nmov.b64 %rd20, %fd4;"), 8, 8, &cases);
    rep.check(instr, &[Fmt::F64; 3], Fmt::F64, &cases, &found, |c, x| {
        want_f64(d(c[0]).mul_add(d(c[1]), d(c[2])), x)
    });
    let instr = "sqrt.rn.f64 %fd4, %fd1;";
    let found = run_ew(&dev, &format!("{instr}\nmov.b64 %rd20, %fd4;"), 8, 8, &cases);
    rep.check(instr, &[Fmt::F64], Fmt::F64, &cases, &found, |c, x| {
        want_f64(d(c[0]).sqrt(), x)
    });
    // Hex immediates: 0dBFF0000000000000 is -1.0.
    let instr = "fma.rn.f64 %fd4, %fd1, 0dBFF0000000000000, %fd2;";
    let found = run_ew(&dev, &format!("{instr}\nmov.b64 %rd20, %fd4;"), 8, 8, &cases);
    rep.check(instr, &two, Fmt::F64, &cases, &found, |c, x| {
        want_f64(d(c[1]) - d(c[0]), x)
    });

    // f64 → f32 in each rounding mode, and f32 → f64 (exact).
    let mut narrow = cases.clone();
    for _ in 0..300 {
        // Values with bits below f32 precision, in and around the f32 range.
        let e = 1023 - 160 + r.below(300);
        narrow.push([
            (r.next() & (1 << 63)) | e << 52 | r.next() & 0x000f_ffff_ffff_ffff,
            0,
            0,
        ]);
    }
    for (mode, m) in MODES {
        let instr = format!("cvt.{m}.f32.f64 %f4, %fd1;");
        let found = run_ew(&dev, &format!("{instr}\nmov.b32 %r10, %f4;"), 8, 4, &narrow);
        rep.check(&instr, &[Fmt::F64], Fmt::F32, &narrow, &found, |c, x| {
            let a = d(c[0]);
            let exp = if mode == Mode::Rn {
                a as f32
            } else {
                round_f32(a, 0.0, mode, a as f32)
            };
            want_f32(exp, x)
        });
    }
    let singles: Vec<[u64; 3]> = pairs32(32).iter().map(|c| [c[0], 0, 0]).collect();
    let instr = "cvt.f64.f32 %fd4, %f1;";
    let found = run_ew(&dev, &format!("{instr}\nmov.b64 %rd20, %fd4;"), 4, 8, &singles);
    rep.check(instr, &[Fmt::F32], Fmt::F64, &singles, &found, |c, x| {
        want_f64(f(c[0]) as f64, x)
    });
    rep.finish();
}

// ---------------------------------------------------------------------------------------------
// setp, selp
// ---------------------------------------------------------------------------------------------

const FLOAT_CMPS: [&str; 18] = [
    "eq", "ne", "lt", "le", "gt", "ge", "equ", "neu", "ltu", "leu", "gtu", "geu", "num", "nan", "lo", "ls", "hi", "hs",
];

/// A float comparison: ordered ones are false on NaN, unordered ones true.
fn fcmp(cmp: &str, a: f64, b: f64) -> bool {
    let un = a.is_nan() || b.is_nan();
    match cmp {
        "eq" => a == b,
        "ne" => !un && a != b,
        "lt" => a < b,
        "le" => a <= b,
        "gt" => a > b,
        "ge" => a >= b,
        "equ" => un || a == b,
        "neu" => a != b,
        "ltu" => un || a < b,
        "leu" => un || a <= b,
        "gtu" => un || a > b,
        "geu" => un || a >= b,
        "num" => !un,
        "nan" => un,
        _ => unreachable!(),
    }
}

/// An integer comparison: lt/le/gt/ge signed on .s types (unsigned on .u/.b), lo/ls/hi/hs
/// unsigned. `a`, `b` are sign- or zero-extended already.
fn icmp(cmp: &str, a: i128, b: i128) -> bool {
    match cmp {
        "eq" => a == b,
        "ne" => a != b,
        "lt" | "lo" => a < b,
        "le" | "ls" => a <= b,
        "gt" | "hi" => a > b,
        "ge" | "hs" => a >= b,
        _ => unreachable!(),
    }
}

fn ints32(seed: u64) -> Vec<u32> {
    let mut v = vec![
        0,
        1,
        2,
        3,
        7,
        31,
        32,
        33,
        0xffff_ffff,
        0xffff_fffe,
        0x7fff_ffff,
        0x8000_0000,
        0x8000_0001,
        0x0000_ffff,
        0x0001_0000,
        0x1234_5678,
        0xdead_beef,
        0xffff_ff80,
    ];
    let mut r = Rng::new(seed);
    for _ in 0..6 {
        v.push(r.u32());
    }
    v
}

fn int_pairs32(seed: u64) -> Vec<[u64; 3]> {
    let s = ints32(seed);
    let mut v = Vec::new();
    for &a in &s {
        for &b in &s {
            v.push([a as u64, b as u64, 0]);
        }
    }
    let mut r = Rng::new(seed + 1);
    for _ in 0..400 {
        let a = r.u32();
        let b = match r.below(4) {
            0 => r.u32() >> r.below(32),
            1 => a.wrapping_add(r.below(3) as u32).wrapping_sub(1),
            _ => r.u32(),
        };
        v.push([a as u64, b as u64, r.u32() as u64]);
    }
    v
}

fn ints64(seed: u64) -> Vec<u64> {
    let mut v = vec![
        0,
        1,
        2,
        63,
        64,
        65,
        u64::MAX,
        u64::MAX - 1,
        i64::MAX as u64,
        i64::MIN as u64,
        i64::MIN as u64 + 1,
        0xffff_ffff,
        0x1_0000_0000,
        0x8000_0000,
        0xffff_ffff_8000_0000,
        0x1234_5678_9abc_def0,
    ];
    let mut r = Rng::new(seed);
    for _ in 0..6 {
        v.push(r.next());
    }
    v
}

fn int_pairs64(seed: u64) -> Vec<[u64; 3]> {
    let s = ints64(seed);
    let mut v = Vec::new();
    for &a in &s {
        for &b in &s {
            v.push([a, b, s[(a ^ b) as usize % s.len()]]);
        }
    }
    let mut r = Rng::new(seed + 1);
    for _ in 0..400 {
        let a = r.next();
        let b = match r.below(4) {
            0 => r.next() >> r.below(64),
            1 => a.wrapping_add(r.below(3)).wrapping_sub(1),
            _ => r.next(),
        };
        v.push([a, b, r.next()]);
    }
    v
}

#[test]
fn setp_every_comparison_combine_and_selp() {
    let dev = device();
    let mut rep = Report::default();
    let out1 = "selp.u32 %r10, 1, 0, %p1;";
    // Floats.
    let pairs = pairs32(41);
    for cmp in &FLOAT_CMPS[..14] {
        let instr = format!("setp.{cmp}.f32 %p1, %f1, %f2;");
        let found = run_ew(&dev, &format!("{instr}\n{out1}"), 4, 4, &pairs);
        rep.check(&instr, &F32_2, Fmt::U32, &pairs, &found, |c, x| {
            want_u32(fcmp(cmp, f(c[0]) as f64, f(c[1]) as f64) as u32, x, Fmt::U32)
        });
        let instr = format!("setp.{cmp}.ftz.f32 %p1, %f1, %f2;");
        let found = run_ew(&dev, &format!("{instr}\n{out1}"), 4, 4, &pairs);
        rep.check(&instr, &F32_2, Fmt::U32, &pairs, &found, |c, x| {
            want_u32(fcmp(cmp, ftz(f(c[0])) as f64, ftz(f(c[1])) as f64) as u32, x, Fmt::U32)
        });
    }
    let s64 = specials64();
    let mut dpairs: Vec<[u64; 3]> = Vec::new();
    for &a in &s64 {
        for &b in &s64 {
            dpairs.push([a, b, 0]);
        }
    }
    for cmp in &FLOAT_CMPS[..14] {
        let instr = format!("setp.{cmp}.f64 %p1, %fd1, %fd2;");
        let found = run_ew(&dev, &format!("{instr}\n{out1}"), 8, 4, &dpairs);
        rep.check(&instr, &[Fmt::F64; 2], Fmt::U32, &dpairs, &found, |c, x| {
            want_u32(fcmp(cmp, d(c[0]), d(c[1])) as u32, x, Fmt::U32)
        });
    }
    // Integers, 32 and 64 bits.
    let ip = int_pairs32(42);
    for (ty, cmps) in [
        ("s32", &["eq", "ne", "lt", "le", "gt", "ge"][..]),
        ("u32", &["eq", "ne", "lt", "le", "gt", "ge", "lo", "ls", "hi", "hs"][..]),
        ("b32", &["eq", "ne"][..]),
    ] {
        for cmp in cmps {
            let instr = format!("setp.{cmp}.{ty} %p1, %r1, %r2;");
            let found = run_ew(&dev, &format!("{instr}\n{out1}"), 4, 4, &ip);
            let fm = if ty == "s32" { Fmt::S32 } else { Fmt::U32 };
            rep.check(&instr, &[fm; 2], Fmt::U32, &ip, &found, |c, x| {
                let (a, b) = if ty == "s32" {
                    (c[0] as u32 as i32 as i128, c[1] as u32 as i32 as i128)
                } else {
                    (c[0] as u32 as i128, c[1] as u32 as i128)
                };
                want_u32(icmp(cmp, a, b) as u32, x, Fmt::U32)
            });
        }
    }
    let ip64 = int_pairs64(43);
    for (ty, cmps) in [
        ("s64", &["eq", "ne", "lt", "le", "gt", "ge"][..]),
        ("u64", &["lt", "le", "gt", "ge", "lo", "ls", "hi", "hs"][..]),
    ] {
        for cmp in cmps {
            let instr = format!("setp.{cmp}.{ty} %p1, %rd11, %rd12;");
            let found = run_ew(&dev, &format!("{instr}\n{out1}"), 8, 4, &ip64);
            let fm = if ty == "s64" { Fmt::S64 } else { Fmt::U64 };
            rep.check(&instr, &[fm; 2], Fmt::U32, &ip64, &found, |c, x| {
                let (a, b) = if ty == "s64" {
                    (c[0] as i64 as i128, c[1] as i64 as i128)
                } else {
                    (c[0] as i128, c[1] as i128)
                };
                want_u32(icmp(cmp, a, b) as u32, x, Fmt::U32)
            });
        }
    }
    // Combining with a predicate, writing p|q: p = (a cmp b) OP c, q = !(a cmp b) OP c.
    // c is (operand c odd); bit 0 of the result is p, bit 1 is q.
    let pq = "selp.u32 %r11, 1, 0, %p1;\nselp.u32 %r12, 2, 0, %p2;\nor.b32 %r10, %r11, %r12;";
    let mk_c = "and.b32 %r20, %r3, 1;\nsetp.ne.u32 %p3, %r20, 0;";
    let mut ipc = ip.clone();
    for (k, c) in ipc.iter_mut().enumerate() {
        c[2] = k as u64 % 3;
    }
    let boolop = |op: &str, x: bool, y: bool| match op {
        "and" => x && y,
        "or" => x || y,
        _ => x ^ y,
    };
    for op in ["and", "or", "xor"] {
        for (cmp, neg) in [("lt", false), ("ge", false), ("ne", true)] {
            let cs = if neg { "!%p3" } else { "%p3" };
            let instr = format!("setp.{cmp}.{op}.s32 %p1|%p2, %r1, %r2, {cs};");
            let found = run_ew(&dev, &format!("{mk_c}\n{instr}\n{pq}"), 4, 4, &ipc);
            rep.check(
                &instr,
                &[Fmt::S32, Fmt::S32, Fmt::U32],
                Fmt::U32,
                &ipc,
                &found,
                |c, x| {
                    let t = icmp(cmp, c[0] as u32 as i32 as i128, c[1] as u32 as i32 as i128);
                    let cv = (c[2] & 1 == 1) != neg;
                    want_u32(boolop(op, t, cv) as u32 | (boolop(op, !t, cv) as u32) << 1, x, Fmt::U32)
                },
            );
        }
    }
    let mut fpc = pairs.clone();
    for (k, c) in fpc.iter_mut().enumerate() {
        c[2] = k as u64 % 3;
    }
    for (cmp, op) in [("lt", "and"), ("gtu", "or"), ("nan", "xor"), ("equ", "and")] {
        let instr = format!("setp.{cmp}.{op}.f32 %p1|%p2, %f1, %f2, %p3;");
        let found = run_ew(&dev, &format!("{mk_c}\n{instr}\n{pq}"), 4, 4, &fpc);
        rep.check(
            &instr,
            &[Fmt::F32, Fmt::F32, Fmt::U32],
            Fmt::U32,
            &fpc,
            &found,
            |c, x| {
                let t = fcmp(cmp, f(c[0]) as f64, f(c[1]) as f64);
                let cv = c[2] & 1 == 1;
                want_u32(boolop(op, t, cv) as u32 | (boolop(op, !t, cv) as u32) << 1, x, Fmt::U32)
            },
        );
    }
    // p|q without a combine: q is the complement.
    let instr = "setp.le.u32 %p1|%p2, %r1, %r2;";
    let found = run_ew(&dev, &format!("{instr}\n{pq}"), 4, 4, &ip);
    rep.check(instr, &[Fmt::U32; 2], Fmt::U32, &ip, &found, |c, x| {
        let t = (c[0] as u32) <= (c[1] as u32);
        want_u32(t as u32 | (!t as u32) << 1, x, Fmt::U32)
    });
    // selp: a if c else b.
    for (instr, w) in [
        ("selp.b32 %r10, %r1, %r2, %p3;", 4),
        ("selp.f32 %f4, %f1, %f2, !%p3;\nmov.b32 %r10, %f4;", 4),
        ("selp.s32 %r10, %r1, -5, %p3;", 4),
    ] {
        let found = run_ew(&dev, &format!("{mk_c}\n{instr}"), w, w, &ipc);
        rep.check(instr, &[Fmt::U32; 3], Fmt::U32, &ipc, &found, |c, x| {
            let p = c[2] & 1 == 1;
            let exp = if instr.contains("-5") {
                if p {
                    c[0]
                } else {
                    (-5i32) as u32 as u64
                }
            } else if p != instr.contains('!') {
                c[0]
            } else {
                c[1]
            };
            want_u32(exp as u32, x, Fmt::U32)
        });
    }
    let mut ipc64 = ip64.clone();
    for (k, c) in ipc64.iter_mut().enumerate() {
        c[2] = k as u64 % 3;
    }
    let instr = "selp.b64 %rd20, %rd11, %rd12, %p3;";
    let body = format!("and.b64 %rd21, %rd13, 1;\nsetp.ne.u64 %p3, %rd21, 0;\n{instr}");
    let found = run_ew(&dev, &body, 8, 8, &ipc64);
    rep.check(instr, &[Fmt::U64; 3], Fmt::U64, &ipc64, &found, |c, x| {
        want_u64(if c[2] & 1 == 1 { c[0] } else { c[1] }, x, Fmt::U64)
    });
    rep.finish();
}

// ---------------------------------------------------------------------------------------------
// cvt
// ---------------------------------------------------------------------------------------------

fn round_int(x: f64, irnd: &str) -> f64 {
    match irnd {
        "rni" => x.round_ties_even(),
        "rzi" => x.trunc(),
        "rmi" => x.floor(),
        _ => x.ceil(),
    }
}

/// Float → integer: round, then saturate to the destination's range (NaN → 0); narrow
/// destinations are sign- or zero-extended into the 32-bit register.
fn f2i(x: f64, irnd: &str, dty: &str) -> u64 {
    let v = round_int(x, irnd);
    match dty {
        "s8" => v as i8 as i32 as u32 as u64,
        "u8" => v as u8 as u64,
        "s16" => v as i16 as i32 as u32 as u64,
        "u16" => v as u16 as u64,
        "s32" => v as i32 as u32 as u64,
        "u32" => v as u32 as u64,
        "s64" => v as i64 as u64,
        _ => v as u64,
    }
}

/// Round the integer `v` to f32 in `mode`.
fn i2f(v: i128, mode: Mode) -> f32 {
    let hi = v as f64; // to nearest
    let lo = (v - hi as i128) as f64; // exact: |lo| < 2^11
    round_f32(hi, lo, mode, 0.0)
}

/// Float → integer test inputs: specials, halves (the ties of .rni) and their neighbours,
/// the limits of every integer type and their neighbours, random values of every magnitude; as
/// f32 and as f64.
fn f2i_cases() -> (Vec<[u64; 3]>, Vec<[u64; 3]>) {
    let mut xs: Vec<u32> = specials32();
    let mut r = Rng::new(51);
    for k in -12..=12 {
        // Halves and their neighbours: the ties of .rni.
        let h = k as f32 * 0.5;
        xs.extend([h.to_bits(), h.next_up().to_bits(), h.next_down().to_bits()]);
    }
    for lim in [
        127.0f32,
        128.0,
        -128.0,
        -129.0,
        255.0,
        256.0,
        32767.0,
        32768.0,
        65535.0,
        65536.0,
        2147483520.0,
        2147483648.0,
        -2147483648.0,
        -2147483904.0,
        4294967040.0,
        4294967296.0,
        9.223372e18,
        -9.223372e18,
        1.8446743e19,
        1.8446744e19,
        -0.75,
        -0.25,
    ] {
        xs.extend([lim.to_bits(), lim.next_up().to_bits(), lim.next_down().to_bits()]);
    }
    for _ in 0..200 {
        xs.push(r.u32());
        xs.push(((r.unit() - 0.5) * 2f32.powi(r.below(70) as i32)).to_bits());
    }
    let cases: Vec<[u64; 3]> = xs.iter().map(|&x| [x as u64, 0, 0]).collect();
    let cases64: Vec<[u64; 3]> = xs
        .iter()
        .map(|&x| [(f32::from_bits(x) as f64).to_bits(), 0, 0])
        .chain(specials64().into_iter().map(|x| [x, 0, 0]))
        .chain((0..200).map(|_| {
            [
                ((r.unit() as f64 - 0.5) * 2f64.powi(r.below(70) as i32)).to_bits(),
                0,
                0,
            ]
        }))
        .chain(
            [
                2147483647.5f64,
                2147483648.0,
                -2147483648.5,
                -2147483649.0,
                4294967295.5,
                4294967296.0,
                -0.5,
                0.5,
                1.5,
                2.5,
                -2.5,
            ]
            .into_iter()
            .map(|x| [x.to_bits(), 0, 0]),
        )
        .collect();
    (cases, cases64)
}

#[test]
fn cvt_float_to_int_roundings_and_saturation() {
    let dev = device();
    let mut rep = Report::default();
    let (cases, cases64) = f2i_cases();
    for irnd in ["rni", "rzi", "rmi", "rpi"] {
        for dty in ["s32", "u32", "s64", "u64", "u16", "u8"] {
            let wide = dty.ends_with("64");
            let dreg = if wide { "%rd20" } else { "%r10" };
            let instr = format!("cvt.{irnd}.{dty}.f32 {dreg}, %f1;");
            let outw = if wide { 8 } else { 4 };
            let fm = match dty {
                "s64" => Fmt::S64,
                "u64" => Fmt::U64,
                d if d.starts_with('s') => Fmt::S32,
                _ => Fmt::U32,
            };
            let found = run_ew(&dev, &instr, 4, outw, &cases);
            rep.check(&instr, &[Fmt::F32], fm, &cases, &found, |c, x| {
                want_u64(f2i(f(c[0]) as f64, irnd, dty), x, fm)
            });
            if ["s32", "u32", "s64", "u64"].contains(&dty) {
                let instr = format!("cvt.{irnd}.{dty}.f64 {dreg}, %fd1;");
                let found = run_ew(&dev, &instr, 8, outw, &cases64);
                rep.check(&instr, &[Fmt::F64], fm, &cases64, &found, |c, x| {
                    want_u64(f2i(d(c[0]), irnd, dty), x, fm)
                });
            }
        }
        // Rounding to an integral float.
        let instr = format!("cvt.{irnd}.f32.f32 %f4, %f1;");
        let found = run_ew(&dev, &format!("{instr}\nmov.b32 %r10, %f4;"), 4, 4, &cases);
        rep.check(&instr, &[Fmt::F32], Fmt::F32, &cases, &found, |c, x| {
            want_f32(round_int(f(c[0]) as f64, irnd) as f32, x)
        });
        let instr = format!("cvt.{irnd}.f64.f64 %fd4, %fd1;");
        let found = run_ew(&dev, &format!("{instr}\nmov.b64 %rd20, %fd4;"), 8, 8, &cases64);
        rep.check(&instr, &[Fmt::F64], Fmt::F64, &cases64, &found, |c, x| {
            want_f64(round_int(d(c[0]), irnd), x)
        });
    }
    let instr = "cvt.sat.f32.f32 %f4, %f1;";
    let found = run_ew(&dev, &format!("{instr}\nmov.b32 %r10, %f4;"), 4, 4, &cases);
    rep.check(instr, &[Fmt::F32], Fmt::F32, &cases, &found, |c, x| {
        want_sat(f(c[0]), x)
    });
    rep.finish();
}

#[test]
fn cvt_int_to_float_and_between_integers() {
    let dev = device();
    let mut rep = Report::default();
    let i32s: Vec<[u64; 3]> = {
        let mut v: Vec<u32> = ints32(61);
        let mut r = Rng::new(62);
        for k in 0..100u32 {
            // Integers just above 2^24 and 2^25: ties and near-ties for f32.
            v.push((1 << 24) + k);
            v.push((1 << 25) + 2 * k + 1);
            v.push(((1u32 << 24) + k).wrapping_neg());
            v.push(r.u32() >> r.below(32));
            v.push(r.u32());
        }
        v.into_iter().map(|x| [x as u64, 0, 0]).collect()
    };
    let i64s: Vec<[u64; 3]> = {
        let mut v: Vec<u64> = ints64(63);
        let mut r = Rng::new(64);
        for k in 0..100u64 {
            v.push((1 << 40) + k);
            v.push(u64::MAX - k);
            v.push((1u64 << 63) + (1 << 39) + k);
            v.push((1u64 << 63) - (1 << 39) - k);
            v.push(r.next() >> r.below(64));
            v.push(r.next());
            // Exactly halfway between two f32 values, and one off.
            let m = (1u64 << 24) | r.below(1 << 24);
            let sh = r.below(39);
            v.push(((2 * m + 1) << sh) + r.below(2));
        }
        v.into_iter().map(|x| [x, 0, 0]).collect()
    };
    for (mode, m) in MODES {
        for sty in ["s32", "u32"] {
            let instr = format!("cvt.{m}.f32.{sty} %f4, %r1;");
            let found = run_ew(&dev, &format!("{instr}\nmov.b32 %r10, %f4;"), 4, 4, &i32s);
            let fm = if sty == "s32" { Fmt::S32 } else { Fmt::U32 };
            rep.check(&instr, &[fm], Fmt::F32, &i32s, &found, |c, x| {
                let v = if sty == "s32" {
                    c[0] as u32 as i32 as i128
                } else {
                    c[0] as u32 as i128
                };
                want_f32(i2f(v, mode), x)
            });
        }
        for sty in ["s64", "u64"] {
            let instr = format!("cvt.{m}.f32.{sty} %f4, %rd11;");
            let found = run_ew(&dev, &format!("{instr}\nmov.b32 %r10, %f4;"), 8, 4, &i64s);
            let fm = if sty == "s64" { Fmt::S64 } else { Fmt::U64 };
            rep.check(&instr, &[fm], Fmt::F32, &i64s, &found, |c, x| {
                let v = if sty == "s64" {
                    c[0] as i64 as i128
                } else {
                    c[0] as i128
                };
                want_f32(i2f(v, mode), x)
            });
        }
    }
    // std's casts round to nearest, ties to even: a second reference for .rn.
    for (instr, inw, reference) in [
        (
            "cvt.rn.f32.s32 %f4, %r1;",
            4,
            (|v: u64| (v as u32 as i32) as f32) as fn(u64) -> f32,
        ),
        ("cvt.rn.f32.u32 %f4, %r1;", 4, |v: u64| (v as u32) as f32),
        ("cvt.rn.f32.s64 %f4, %rd11;", 8, |v: u64| (v as i64) as f32),
        ("cvt.rn.f32.u64 %f4, %rd11;", 8, |v: u64| v as f32),
    ] {
        let cases = if inw == 4 { &i32s } else { &i64s };
        let found = run_ew(&dev, &format!("{instr}\nmov.b32 %r10, %f4;"), inw, 4, cases);
        rep.check(instr, &[Fmt::U64], Fmt::F32, cases, &found, |c, x| {
            want_f32(reference(c[0]), x)
        });
    }
    for (instr, reference) in [
        (
            "cvt.rn.f64.s64 %fd4, %rd11;",
            (|v: u64| (v as i64) as f64) as fn(u64) -> f64,
        ),
        ("cvt.rn.f64.u64 %fd4, %rd11;", |v: u64| v as f64),
    ] {
        let found = run_ew(&dev, &format!("{instr}\nmov.b64 %rd20, %fd4;"), 8, 8, &i64s);
        rep.check(instr, &[Fmt::U64], Fmt::F64, &i64s, &found, |c, x| {
            want_f64(reference(c[0]), x)
        });
    }
    for (instr, reference) in [
        (
            "cvt.f64.s32 %fd4, %r1;",
            (|v: u64| (v as u32 as i32) as f64) as fn(u64) -> f64,
        ),
        ("cvt.f64.u32 %fd4, %r1;", |v: u64| (v as u32) as f64),
    ] {
        let found = run_ew(&dev, &format!("{instr}\nmov.b64 %rd20, %fd4;"), 4, 8, &i32s);
        rep.check(instr, &[Fmt::U32], Fmt::F64, &i32s, &found, |c, x| {
            want_f64(reference(c[0]), x)
        });
    }
    // Integer ↔ integer: widening extends by the source's signedness, narrowing chops, .sat
    // clamps to the destination range; narrow results are extended into the register.
    let int32: [(&str, fn(u64) -> u64, u32, u32); 8] = [
        ("cvt.s64.s32 %rd20, %r1;", |v| v as u32 as i32 as i64 as u64, 4, 8),
        ("cvt.u64.u32 %rd20, %r1;", |v| v as u32 as u64, 4, 8),
        ("cvt.u64.s32 %rd20, %r1;", |v| v as u32 as i32 as i64 as u64, 4, 8),
        (
            "cvt.sat.u8.s32 %r10, %r1;",
            |v| (v as u32 as i32).clamp(0, 255) as u64,
            4,
            4,
        ),
        ("cvt.sat.u16.u32 %r10, %r1;", |v| (v as u32).min(65535) as u64, 4, 4),
        ("cvt.u8.u32 %r10, %r1;", |v| v & 0xff, 4, 4),
        ("cvt.sat.u32.s32 %r10, %r1;", |v| (v as u32 as i32).max(0) as u64, 4, 4),
        (
            "cvt.sat.s32.u32 %r10, %r1;",
            |v| (v as u32).min(i32::MAX as u32) as u64,
            4,
            4,
        ),
    ];
    for (instr, reference, inw, outw) in int32 {
        let fm = if outw == 8 { Fmt::S64 } else { Fmt::S32 };
        let found = run_ew(&dev, instr, inw, outw, &i32s);
        rep.check(instr, &[Fmt::S32], fm, &i32s, &found, |c, x| {
            want_u64(reference(c[0]), x, fm)
        });
    }
    let int64: [(&str, fn(u64) -> u64); 5] = [
        ("cvt.u32.u64 %r10, %rd11;", |v| v & 0xffff_ffff),
        ("cvt.s32.s64 %r10, %rd11;", |v| v & 0xffff_ffff),
        ("cvt.sat.s32.s64 %r10, %rd11;", |v| {
            (v as i64).clamp(i32::MIN as i64, i32::MAX as i64) as i32 as u32 as u64
        }),
        ("cvt.sat.u32.s64 %r10, %rd11;", |v| {
            (v as i64).clamp(0, u32::MAX as i64) as u64
        }),
        ("cvt.sat.u32.u64 %r10, %rd11;", |v| v.min(u32::MAX as u64)),
    ];
    for (instr, reference) in int64 {
        let found = run_ew(&dev, instr, 8, 4, &i64s);
        rep.check(instr, &[Fmt::S64], Fmt::U32, &i64s, &found, |c, x| {
            want_u64(reference(c[0]), x, Fmt::U32)
        });
    }
    rep.finish();
}

/// PTX ISA, "Operand Size Exceeding Instruction-Type Size": a destination register wider than
/// the instruction type receives the value sign-extended when the type is signed. So cvt to
/// .s8/.s16 in a 32-bit register leaves e.g. −1 as 0xffffffff, not 0x000000ff.
#[test]
fn cvt_to_narrow_signed_types_sign_extends_into_the_register() {
    let dev = device();
    let mut rep = Report::default();
    let (cases, _) = f2i_cases();
    for irnd in ["rni", "rzi", "rmi", "rpi"] {
        for dty in ["s16", "s8"] {
            let instr = format!("cvt.{irnd}.{dty}.f32 %r10, %f1;");
            let found = run_ew(&dev, &instr, 4, 4, &cases);
            rep.check(&instr, &[Fmt::F32], Fmt::S32, &cases, &found, |c, x| {
                want_u64(f2i(f(c[0]) as f64, irnd, dty), x, Fmt::S32)
            });
        }
    }
    let i32s: Vec<[u64; 3]> = int_pairs32(71).iter().map(|c| [c[0], 0, 0]).collect();
    let int32: [(&str, fn(u64) -> u64); 4] = [
        ("cvt.sat.s8.s32 %r10, %r1;", |v| {
            (v as u32 as i32).clamp(-128, 127) as u32 as u64
        }),
        ("cvt.s8.s32 %r10, %r1;", |v| v as u8 as i8 as i32 as u32 as u64),
        ("cvt.s16.u32 %r10, %r1;", |v| v as u16 as i16 as i32 as u32 as u64),
        ("cvt.sat.s16.s32 %r10, %r1;", |v| {
            (v as u32 as i32).clamp(-32768, 32767) as u32 as u64
        }),
    ];
    for (instr, reference) in int32 {
        let found = run_ew(&dev, instr, 4, 4, &i32s);
        rep.check(instr, &[Fmt::S32], Fmt::S32, &i32s, &found, |c, x| {
            want_u64(reference(c[0]), x, Fmt::S32)
        });
    }
    rep.finish();
}

// ---------------------------------------------------------------------------------------------
// Integer arithmetic and bit operations
// ---------------------------------------------------------------------------------------------

/// PTX `bfe` on a `bits`-wide value: `len` bits of `a` from `pos` (both taken mod 256); bits
/// past the top are the sign bit (a[min(pos+len-1, msb)] for .s, 0 for .u; 0 when len is 0).
fn bfe_ref(a: u64, pos: u64, len: u64, bits: u32, signed: bool) -> u64 {
    let msb = bits as u64 - 1;
    let (pos, len) = (pos & 0xff, len & 0xff);
    let sbit = if !signed || len == 0 {
        0
    } else {
        (a >> (pos + len - 1).min(msb)) & 1
    };
    let mut d = 0u64;
    for i in 0..bits as u64 {
        let bit = if i < len && pos + i <= msb {
            (a >> (pos + i)) & 1
        } else {
            sbit
        };
        d |= bit << i;
    }
    d
}

/// PTX `bfi`: the low `len` bits of `a` into `b` at `pos` (both mod 256), as far as fits.
fn bfi_ref(a: u64, b: u64, pos: u64, len: u64, bits: u32) -> u64 {
    let (pos, len) = (pos & 0xff, len & 0xff);
    let mut f = b;
    for i in 0..len {
        if pos + i >= bits as u64 {
            break;
        }
        f = (f & !(1 << (pos + i))) | (((a >> i) & 1) << (pos + i));
    }
    f
}

fn s32(v: u64) -> i32 {
    v as u32 as i32
}

fn u32of(v: u64) -> u32 {
    v as u32
}

type IntRef = fn(u64, u64, u64) -> u64;

#[test]
fn integer_arithmetic_32() {
    let dev = device();
    let mut rep = Report::default();
    let cases = int_pairs32(81);
    let ops: Vec<(&str, IntRef, Fmt)> = vec![
        (
            "add.s32 %r10, %r1, %r2;",
            |a, b, _| s32(a).wrapping_add(s32(b)) as u32 as u64,
            Fmt::S32,
        ),
        (
            "add.u32 %r10, %r1, %r2;",
            |a, b, _| u32of(a).wrapping_add(u32of(b)) as u64,
            Fmt::U32,
        ),
        (
            "sub.s32 %r10, %r1, %r2;",
            |a, b, _| s32(a).wrapping_sub(s32(b)) as u32 as u64,
            Fmt::S32,
        ),
        (
            "mul.lo.s32 %r10, %r1, %r2;",
            |a, b, _| s32(a).wrapping_mul(s32(b)) as u32 as u64,
            Fmt::S32,
        ),
        (
            "mul.lo.u32 %r10, %r1, %r2;",
            |a, b, _| u32of(a).wrapping_mul(u32of(b)) as u64,
            Fmt::U32,
        ),
        (
            "mul.hi.s32 %r10, %r1, %r2;",
            |a, b, _| ((s32(a) as i64 * s32(b) as i64) >> 32) as u32 as u64,
            Fmt::S32,
        ),
        (
            "mul.hi.u32 %r10, %r1, %r2;",
            |a, b, _| (a as u32 as u64 * b as u32 as u64) >> 32,
            Fmt::U32,
        ),
        (
            "mad.lo.s32 %r10, %r1, %r2, %r3;",
            |a, b, c| s32(a).wrapping_mul(s32(b)).wrapping_add(s32(c)) as u32 as u64,
            Fmt::S32,
        ),
        (
            "mad.lo.u32 %r10, %r1, %r2, %r3;",
            |a, b, c| u32of(a).wrapping_mul(u32of(b)).wrapping_add(u32of(c)) as u64,
            Fmt::U32,
        ),
        (
            "mad.hi.s32 %r10, %r1, %r2, %r3;",
            |a, b, c| (((s32(a) as i64 * s32(b) as i64) >> 32) as i32).wrapping_add(s32(c)) as u32 as u64,
            Fmt::S32,
        ),
        (
            "mad.hi.u32 %r10, %r1, %r2, %r3;",
            |a, b, c| (((u32of(a) as u64 * u32of(b) as u64) >> 32) as u32).wrapping_add(u32of(c)) as u64,
            Fmt::U32,
        ),
        // Division by zero gives all ones (div) and the dividend (rem); INT_MIN / -1 wraps.
        (
            "div.s32 %r10, %r1, %r2;",
            |a, b, _| {
                if s32(b) == 0 {
                    u32::MAX as u64
                } else {
                    s32(a).wrapping_div(s32(b)) as u32 as u64
                }
            },
            Fmt::S32,
        ),
        (
            "div.u32 %r10, %r1, %r2;",
            |a, b, _| {
                if u32of(b) == 0 {
                    u32::MAX as u64
                } else {
                    (u32of(a) / u32of(b)) as u64
                }
            },
            Fmt::U32,
        ),
        (
            "rem.s32 %r10, %r1, %r2;",
            |a, b, _| {
                if s32(b) == 0 {
                    a & 0xffff_ffff
                } else {
                    s32(a).wrapping_rem(s32(b)) as u32 as u64
                }
            },
            Fmt::S32,
        ),
        (
            "rem.u32 %r10, %r1, %r2;",
            |a, b, _| {
                if u32of(b) == 0 {
                    a & 0xffff_ffff
                } else {
                    (u32of(a) % u32of(b)) as u64
                }
            },
            Fmt::U32,
        ),
        (
            "min.s32 %r10, %r1, %r2;",
            |a, b, _| s32(a).min(s32(b)) as u32 as u64,
            Fmt::S32,
        ),
        (
            "max.s32 %r10, %r1, %r2;",
            |a, b, _| s32(a).max(s32(b)) as u32 as u64,
            Fmt::S32,
        ),
        (
            "min.u32 %r10, %r1, %r2;",
            |a, b, _| u32of(a).min(u32of(b)) as u64,
            Fmt::U32,
        ),
        (
            "max.u32 %r10, %r1, %r2;",
            |a, b, _| u32of(a).max(u32of(b)) as u64,
            Fmt::U32,
        ),
        ("and.b32 %r10, %r1, %r2;", |a, b, _| a & b & 0xffff_ffff, Fmt::U32),
        ("or.b32 %r10, %r1, %r2;", |a, b, _| (a | b) & 0xffff_ffff, Fmt::U32),
        ("xor.b32 %r10, %r1, %r2;", |a, b, _| (a ^ b) & 0xffff_ffff, Fmt::U32),
        ("not.b32 %r10, %r1;", |a, _, _| !a & 0xffff_ffff, Fmt::U32),
        ("cnot.b32 %r10, %r1;", |a, _, _| (u32of(a) == 0) as u64, Fmt::U32),
        (
            "abs.s32 %r10, %r1;",
            |a, _, _| s32(a).wrapping_abs() as u32 as u64,
            Fmt::S32,
        ),
        (
            "neg.s32 %r10, %r1;",
            |a, _, _| s32(a).wrapping_neg() as u32 as u64,
            Fmt::S32,
        ),
        ("popc.b32 %r10, %r1;", |a, _, _| u32of(a).count_ones() as u64, Fmt::U32),
        (
            "clz.b32 %r10, %r1;",
            |a, _, _| u32of(a).leading_zeros() as u64,
            Fmt::U32,
        ),
        (
            "brev.b32 %r10, %r1;",
            |a, _, _| u32of(a).reverse_bits() as u64,
            Fmt::U32,
        ),
        (
            "add.s32 %r10, %r1, -7;",
            |a, _, _| s32(a).wrapping_add(-7) as u32 as u64,
            Fmt::S32,
        ),
        ("and.b32 %r10, %r1, 0xF0F0F0F0;", |a, _, _| a & 0xf0f0_f0f0, Fmt::U32),
    ];
    for (instr, reference, fm) in ops {
        let found = run_ew(&dev, instr, 4, 4, &cases);
        rep.check(instr, &[fm; 3], fm, &cases, &found, |c, x| {
            want_u64(reference(c[0], c[1], c[2]), x, fm)
        });
    }
    // Wide products and multiply-adds: 32 × 32 → 64 bits.
    let wide: Vec<(&str, IntRef)> = vec![
        ("mul.wide.s32 %rd20, %r1, %r2;", |a, b, _| {
            (s32(a) as i64 * s32(b) as i64) as u64
        }),
        ("mul.wide.u32 %rd20, %r1, %r2;", |a, b, _| {
            u32of(a) as u64 * u32of(b) as u64
        }),
    ];
    for (instr, reference) in wide {
        let found = run_ew(&dev, instr, 4, 8, &cases);
        rep.check(instr, &[Fmt::S32; 2], Fmt::S64, &cases, &found, |c, x| {
            want_u64(reference(c[0], c[1], 0), x, Fmt::S64)
        });
    }
    let cases64 = int_pairs64(82);
    let unpack = "mov.b64 {%r21, %r22}, %rd11;\nmov.b64 {%r23, %r24}, %rd12;\n";
    let madw: Vec<(&str, IntRef)> = vec![
        ("mad.wide.s32 %rd20, %r21, %r23, %rd13;", |a, b, c| {
            ((s32(a) as i64 * s32(b) as i64) as u64).wrapping_add(c)
        }),
        ("mad.wide.u32 %rd20, %r21, %r23, %rd13;", |a, b, c| {
            (u32of(a) as u64 * u32of(b) as u64).wrapping_add(c)
        }),
    ];
    for (instr, reference) in madw {
        let found = run_ew(&dev, &format!("{unpack}{instr}"), 8, 8, &cases64);
        rep.check(instr, &[Fmt::S64; 3], Fmt::S64, &cases64, &found, |c, x| {
            want_u64(reference(c[0], c[1], c[2]), x, Fmt::S64)
        });
    }
    rep.finish();
}

#[test]
fn integer_arithmetic_64() {
    let dev = device();
    let mut rep = Report::default();
    let cases = int_pairs64(91);
    let ops: Vec<(&str, IntRef, Fmt)> = vec![
        ("add.s64 %rd20, %rd11, %rd12;", |a, b, _| a.wrapping_add(b), Fmt::S64),
        ("sub.s64 %rd20, %rd11, %rd12;", |a, b, _| a.wrapping_sub(b), Fmt::S64),
        ("mul.lo.s64 %rd20, %rd11, %rd12;", |a, b, _| a.wrapping_mul(b), Fmt::S64),
        (
            "mul.hi.s64 %rd20, %rd11, %rd12;",
            |a, b, _| ((a as i64 as i128 * b as i64 as i128) >> 64) as u64,
            Fmt::S64,
        ),
        (
            "mul.hi.u64 %rd20, %rd11, %rd12;",
            |a, b, _| ((a as u128 * b as u128) >> 64) as u64,
            Fmt::U64,
        ),
        (
            "mad.lo.s64 %rd20, %rd11, %rd12, %rd13;",
            |a, b, c| a.wrapping_mul(b).wrapping_add(c),
            Fmt::S64,
        ),
        (
            "div.s64 %rd20, %rd11, %rd12;",
            |a, b, _| {
                if b == 0 {
                    u64::MAX
                } else {
                    (a as i64).wrapping_div(b as i64) as u64
                }
            },
            Fmt::S64,
        ),
        (
            "div.u64 %rd20, %rd11, %rd12;",
            |a, b, _| a.checked_div(b).unwrap_or(u64::MAX),
            Fmt::U64,
        ),
        (
            "rem.s64 %rd20, %rd11, %rd12;",
            |a, b, _| {
                if b == 0 {
                    a
                } else {
                    (a as i64).wrapping_rem(b as i64) as u64
                }
            },
            Fmt::S64,
        ),
        (
            "rem.u64 %rd20, %rd11, %rd12;",
            |a, b, _| if b == 0 { a } else { a % b },
            Fmt::U64,
        ),
        (
            "min.s64 %rd20, %rd11, %rd12;",
            |a, b, _| (a as i64).min(b as i64) as u64,
            Fmt::S64,
        ),
        (
            "max.s64 %rd20, %rd11, %rd12;",
            |a, b, _| (a as i64).max(b as i64) as u64,
            Fmt::S64,
        ),
        ("min.u64 %rd20, %rd11, %rd12;", |a, b, _| a.min(b), Fmt::U64),
        ("max.u64 %rd20, %rd11, %rd12;", |a, b, _| a.max(b), Fmt::U64),
        ("and.b64 %rd20, %rd11, %rd12;", |a, b, _| a & b, Fmt::U64),
        ("or.b64 %rd20, %rd11, %rd12;", |a, b, _| a | b, Fmt::U64),
        ("xor.b64 %rd20, %rd11, %rd12;", |a, b, _| a ^ b, Fmt::U64),
        ("not.b64 %rd20, %rd11;", |a, _, _| !a, Fmt::U64),
        (
            "abs.s64 %rd20, %rd11;",
            |a, _, _| (a as i64).wrapping_abs() as u64,
            Fmt::S64,
        ),
        (
            "neg.s64 %rd20, %rd11;",
            |a, _, _| (a as i64).wrapping_neg() as u64,
            Fmt::S64,
        ),
        ("brev.b64 %rd20, %rd11;", |a, _, _| a.reverse_bits(), Fmt::U64),
        ("add.s64 %rd20, %rd11, -1;", |a, _, _| a.wrapping_sub(1), Fmt::S64),
    ];
    for (instr, reference, fm) in ops {
        let found = run_ew(&dev, instr, 8, 8, &cases);
        rep.check(instr, &[fm; 3], fm, &cases, &found, |c, x| {
            want_u64(reference(c[0], c[1], c[2]), x, fm)
        });
    }
    let to32: Vec<(&str, IntRef)> = vec![
        ("popc.b64 %r10, %rd11;", |a, _, _| a.count_ones() as u64),
        ("clz.b64 %r10, %rd11;", |a, _, _| a.leading_zeros() as u64),
    ];
    for (instr, reference) in to32 {
        let found = run_ew(&dev, instr, 8, 4, &cases);
        rep.check(instr, &[Fmt::U64], Fmt::U32, &cases, &found, |c, x| {
            want_u64(reference(c[0], 0, 0), x, Fmt::U32)
        });
    }
    rep.finish();
}

#[test]
fn shifts_clamp_their_amount() {
    let dev = device();
    let mut rep = Report::default();
    let mut r = Rng::new(101);
    let mut amounts: Vec<u64> = (0..=40)
        .chain([63, 64, 65, 127, 255, 256, 257, 0x8000_0000, 0xffff_ffff])
        .collect();
    for _ in 0..20 {
        amounts.push(r.below(70));
    }
    let values32 = ints32(102);
    let values64 = ints64(103);
    let mut c32 = Vec::new();
    let mut c64 = Vec::new();
    for &s in &amounts {
        for &a in &values32 {
            c32.push([a as u64, s, 0]);
        }
        for &a in &values64 {
            c64.push([a, s, 0]);
        }
    }
    let sh32: Vec<(&str, IntRef)> = vec![
        ("shl.b32 %r10, %r1, %r2;", |a, s, _| {
            if s >= 32 {
                0
            } else {
                (u32of(a) << s) as u64
            }
        }),
        ("shr.u32 %r10, %r1, %r2;", |a, s, _| {
            if s >= 32 {
                0
            } else {
                (u32of(a) >> s) as u64
            }
        }),
        ("shr.b32 %r10, %r1, %r2;", |a, s, _| {
            if s >= 32 {
                0
            } else {
                (u32of(a) >> s) as u64
            }
        }),
        ("shr.s32 %r10, %r1, %r2;", |a, s, _| (s32(a) >> s.min(31)) as u32 as u64),
    ];
    for (instr, reference) in sh32 {
        let found = run_ew(&dev, instr, 4, 4, &c32);
        rep.check(instr, &[Fmt::S32, Fmt::U32], Fmt::U32, &c32, &found, |c, x| {
            want_u64(reference(c[0], c[1] & 0xffff_ffff, 0), x, Fmt::U32)
        });
    }
    let sh64: Vec<(&str, IntRef)> = vec![
        (
            "shl.b64 %rd20, %rd11, %r23;",
            |a, s, _| if s >= 64 { 0 } else { a << s },
        ),
        (
            "shr.u64 %rd20, %rd11, %r23;",
            |a, s, _| if s >= 64 { 0 } else { a >> s },
        ),
        ("shr.s64 %rd20, %rd11, %r23;", |a, s, _| {
            ((a as i64) >> s.min(63)) as u64
        }),
    ];
    for (instr, reference) in sh64 {
        let body = format!("mov.b64 {{%r23, %r24}}, %rd12;\n{instr}");
        let found = run_ew(&dev, &body, 8, 8, &c64);
        rep.check(instr, &[Fmt::S64, Fmt::U64], Fmt::U64, &c64, &found, |c, x| {
            want_u64(reference(c[0], c[1] & 0xffff_ffff, 0), x, Fmt::U64)
        });
    }
    // Immediate amounts.
    let cases: Vec<[u64; 3]> = values32.iter().map(|&a| [a as u64, 0, 0]).collect();
    for (instr, reference) in [
        (
            "shl.b32 %r10, %r1, 31;",
            (|a: u64| (u32of(a) << 31) as u64) as fn(u64) -> u64,
        ),
        ("shr.s32 %r10, %r1, 31;", |a: u64| (s32(a) >> 31) as u32 as u64),
        ("shr.u32 %r10, %r1, 3;", |a: u64| (u32of(a) >> 3) as u64),
    ] {
        let found = run_ew(&dev, instr, 4, 4, &cases);
        rep.check(instr, &[Fmt::S32], Fmt::U32, &cases, &found, |c, x| {
            want_u64(reference(c[0]), x, Fmt::U32)
        });
    }
    rep.finish();
}

#[test]
fn bfe_and_bfi() {
    let dev = device();
    let mut rep = Report::default();
    let mut r = Rng::new(111);
    // Operand c packs pos (low 16 bits) and len (high 16 bits), so that values above 255 test the
    // mod-256 rule too.
    let mut inrange32 = Vec::new();
    let mut outside32 = Vec::new();
    let mut inrange64 = Vec::new();
    let mut outside64 = Vec::new();
    for k in 0..600 {
        let (a, b) = (r.next(), r.next());
        let pos = r.below(33);
        let len = r.below(33 - pos);
        inrange32.push([a & 0xffff_ffff, b & 0xffff_ffff, pos | len << 16]);
        let pos = r.below(65);
        let len = r.below(65 - pos);
        inrange64.push([a, b, pos | len << 16]);
        let (pos, len) = match k % 4 {
            0 => (r.below(300), r.below(300)),
            1 => (r.below(70), 0),
            2 => (r.below(70) + 256 * r.below(3), r.below(70) + 256 * r.below(3)),
            _ => (r.below(64), 64 - r.below(64) + r.below(10)),
        };
        outside32.push([a & 0xffff_ffff, b & 0xffff_ffff, pos | len << 16]);
        outside64.push([a, b, pos | len << 16]);
    }
    // Sign bits at the edge of the field.
    for pos in [0u64, 1, 15, 31] {
        for len in [1u64, 8, 16, 31, 32] {
            if pos + len <= 32 {
                inrange32.push([0xffff_ffff, 0, pos | len << 16]);
                inrange32.push([0x8000_0001, 0x5555_5555, pos | len << 16]);
            }
        }
    }
    let split32 = "and.b32 %r21, %r3, 0xffff;\nshr.u32 %r22, %r3, 16;\n";
    let split64 = "mov.b64 {%r23, %r24}, %rd13;\nand.b32 %r21, %r23, 0xffff;\nshr.u32 %r22, %r23, 16;\n";
    for (label, c32, c64) in [
        ("", &inrange32, &inrange64),
        (" [pos+len past the top, len 0, or > 255]", &outside32, &outside64),
    ] {
        for (instr, signed) in [
            ("bfe.u32 %r10, %r1, %r21, %r22;", false),
            ("bfe.s32 %r10, %r1, %r21, %r22;", true),
        ] {
            let found = run_ew(&dev, &format!("{split32}{instr}"), 4, 4, c32);
            rep.check(
                &format!("{instr}{label}"),
                &[Fmt::U32, Fmt::U32, Fmt::U32],
                Fmt::U32,
                c32,
                &found,
                |c, x| want_u64(bfe_ref(c[0], c[2] & 0xffff, c[2] >> 16, 32, signed), x, Fmt::U32),
            );
        }
        let instr = "bfi.b32 %r10, %r1, %r2, %r21, %r22;";
        let found = run_ew(&dev, &format!("{split32}{instr}"), 4, 4, c32);
        rep.check(
            &format!("{instr}{label}"),
            &[Fmt::U32; 3],
            Fmt::U32,
            c32,
            &found,
            |c, x| want_u64(bfi_ref(c[0], c[1], c[2] & 0xffff, c[2] >> 16, 32), x, Fmt::U32),
        );
        for (instr, signed) in [
            ("bfe.u64 %rd20, %rd11, %r21, %r22;", false),
            ("bfe.s64 %rd20, %rd11, %r21, %r22;", true),
        ] {
            let found = run_ew(&dev, &format!("{split64}{instr}"), 8, 8, c64);
            rep.check(
                &format!("{instr}{label}"),
                &[Fmt::U64; 3],
                Fmt::U64,
                c64,
                &found,
                |c, x| {
                    want_u64(
                        bfe_ref(c[0], c[2] & 0xffff, (c[2] >> 16) & 0xffff, 64, signed),
                        x,
                        Fmt::U64,
                    )
                },
            );
        }
        let instr = "bfi.b64 %rd20, %rd11, %rd12, %r21, %r22;";
        let found = run_ew(&dev, &format!("{split64}{instr}"), 8, 8, c64);
        rep.check(
            &format!("{instr}{label}"),
            &[Fmt::U64; 3],
            Fmt::U64,
            c64,
            &found,
            |c, x| {
                want_u64(
                    bfi_ref(c[0], c[1], c[2] & 0xffff, (c[2] >> 16) & 0xffff, 64),
                    x,
                    Fmt::U64,
                )
            },
        );
    }
    // The example of the ISA: bfe with immediates.
    let cases = vec![[0xdead_beef, 0, 0], [0x0000_0f00, 0, 0], [0x0000_0800, 0, 0]];
    let instr = "bfe.s32 %r10, %r1, 8, 4;";
    let found = run_ew(&dev, instr, 4, 4, &cases);
    rep.check(instr, &[Fmt::U32], Fmt::S32, &cases, &found, |c, x| {
        want_u64(bfe_ref(c[0], 8, 4, 32, true), x, Fmt::S32)
    });
    rep.finish();
}

// ---------------------------------------------------------------------------------------------
// Memory, parameters, immediates, moves
// ---------------------------------------------------------------------------------------------

fn cfg3(grid: [u32; 3], block: [u32; 3]) -> LaunchConfig {
    LaunchConfig {
        grid,
        block,
        dynamic_shared: 0,
    }
}

fn launch(dev: &Device, text: &str, what: &str, cfg: LaunchConfig, args: &[Arg]) -> cudasim::Stats {
    let m = load(dev, text, what);
    dev.launch(&m, "k", cfg, args)
        .unwrap_or_else(|e| panic!("{what}: the launch failed: {e}\n{text}"))
}

fn download_bytes(dev: &Device, ptr: u64, n: usize) -> Vec<u8> {
    dev.download_u32(ptr, n.div_ceil(4))
        .into_iter()
        .flat_map(|w| w.to_le_bytes())
        .take(n)
        .collect()
}

/// Every width and vector form of ld.global / st.global (and ld.global.nc), each thread on its
/// own 32 source bytes and 128 result bytes; sign extension of .s8/.s16 into 32- and 64-bit
/// registers, zero extension of .u8/.u16, and narrow stores of the low bits.
#[test]
fn ld_st_global_every_type_and_vector() {
    let dev = device();
    let threads = 64usize;
    let mut r = Rng::new(121);
    let src: Vec<u8> = (0..threads * 32).map(|_| r.next() as u8).collect();
    let src_words: Vec<u32> = src
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    let psrc = dev.upload_u32(&src_words);
    let pout = dev.alloc((threads * 128) as u64).unwrap();
    // (offset in the result, bytes, what the kernel does there)
    let fields: [(usize, usize, &str); 24] = [
        (0, 4, "ld.global.u8 [+3] → st.u32"),
        (4, 4, "ld.global.s8 [+5] → st.u32"),
        (8, 4, "ld.global.u16 [+6] → st.u32"),
        (12, 4, "ld.global.s16 [+10] → st.u32"),
        (16, 4, "ld.global.u32 [+12]"),
        (20, 4, "ld.global.nc.u32 [+28]"),
        (24, 8, "ld.global.u64 [+8] / st.global.u64"),
        (32, 4, "ld.global.f32 [+4] / st.global.f32"),
        (36, 1, "st.global.u8 of a 32-bit register"),
        (37, 1, "st.global.u8 of an s8 value"),
        (38, 2, "st.global.u16 of an s16 value"),
        (40, 8, "ld.global.f64 [+16] / st.global.f64"),
        (48, 8, "ld.global.v2.u32 [+8] / st.global.v2.u32"),
        (56, 8, "ld.global.s8 into a 64-bit register [+7]"),
        (64, 16, "ld.global.v4.u32 [+16] / st.global.v4.u32"),
        (80, 16, "ld.global.v2.f64 [+0] / st.global.v2.f64"),
        (96, 16, "ld.global.nc.v4.f32 [+0] / st.global.v4.f32"),
        (112, 8, "ld.global.v2.f32 [+24] / st.global.v2.f32"),
        (120, 2, "st.global.s16 of a u16 value"),
        (122, 2, "st.global.u16 of an immediate moved to a register"),
        (124, 2, "ld.global.u16 into a .b16 register [+2], cvt.u32.u16"),
        (126, 1, "ld.global.s8 [+31] → st.global.s8"),
        (127, 1, "st.global.b8"),
        (0, 0, ""),
    ];
    let text = format!(
        "{HEAD}.visible .entry k(.param .u64 psrc, .param .u64 pout)\n{{\n{REGS}\
         ld.param.u64 %rd1, [psrc];\nld.param.u64 %rd2, [pout];\n\
         cvta.to.global.u64 %rd1, %rd1;\ncvta.to.global.u64 %rd2, %rd2;\n\
         mov.u32 %r1, %ctaid.x;\nmov.u32 %r2, %ntid.x;\nmov.u32 %r3, %tid.x;\nmad.lo.u32 %r1, %r1, %r2, %r3;\n\
         mul.wide.u32 %rd3, %r1, 32;\nadd.s64 %rd4, %rd1, %rd3;\n\
         mul.wide.u32 %rd5, %r1, 128;\nadd.s64 %rd6, %rd2, %rd5;\n\
         ld.global.u8 %r11, [%rd4+3];\n\
         ld.global.s8 %r12, [%rd4+5];\n\
         ld.global.u16 %r13, [%rd4+6];\n\
         ld.global.s16 %r14, [%rd4+10];\n\
         ld.global.u32 %r15, [%rd4+12];\n\
         ld.global.u64 %rd21, [%rd4+8];\n\
         ld.global.f32 %f4, [%rd4+4];\n\
         ld.global.f64 %fd4, [%rd4+16];\n\
         ld.global.v2.u32 {{%r16, %r17}}, [%rd4+8];\n\
         ld.global.v4.u32 {{%r18, %r19, %r20, %r21}}, [%rd4+16];\n\
         ld.global.nc.u32 %r22, [%rd4+28];\n\
         ld.global.s8 %rd22, [%rd4+7];\n\
         ld.global.v2.f64 {{%fd5, %fd6}}, [%rd4];\n\
         ld.global.nc.v4.f32 {{%f5, %f6, %f7, %f8}}, [%rd4];\n\
         ld.global.v2.f32 {{%f9, %f10}}, [%rd4+24];\n\
         ld.global.u16 %h1, [%rd4+2];\ncvt.u32.u16 %r23, %h1;\n\
         ld.global.s8 %r25, [%rd4+31];\n\
         mov.u32 %r24, 0xBEEF;\n\
         st.global.u32 [%rd6], %r11;\n\
         st.global.u32 [%rd6+4], %r12;\n\
         st.global.u32 [%rd6+8], %r13;\n\
         st.global.u32 [%rd6+12], %r14;\n\
         st.global.u32 [%rd6+16], %r15;\n\
         st.global.u32 [%rd6+20], %r22;\n\
         st.global.u64 [%rd6+24], %rd21;\n\
         st.global.f32 [%rd6+32], %f4;\n\
         st.global.u8 [%rd6+36], %r15;\n\
         st.global.u8 [%rd6+37], %r12;\n\
         st.global.u16 [%rd6+38], %r14;\n\
         st.global.f64 [%rd6+40], %fd4;\n\
         st.global.v2.u32 [%rd6+48], {{%r16, %r17}};\n\
         st.global.u64 [%rd6+56], %rd22;\n\
         st.global.v4.u32 [%rd6+64], {{%r18, %r19, %r20, %r21}};\n\
         st.global.v2.f64 [%rd6+80], {{%fd5, %fd6}};\n\
         st.global.v4.f32 [%rd6+96], {{%f5, %f6, %f7, %f8}};\n\
         st.global.v2.f32 [%rd6+112], {{%f9, %f10}};\n\
         st.global.s16 [%rd6+120], %r13;\n\
         st.global.u16 [%rd6+122], %r24;\n\
         st.global.u16 [%rd6+124], %r23;\n\
         st.global.s8 [%rd6+126], %r25;\n\
         st.global.b8 [%rd6+127], %r11;\n\
         ret;\n}}\n"
    );
    launch(
        &dev,
        &text,
        "ld/st kernel",
        cfg3([threads as u32 / 32, 1, 1], [32, 1, 1]),
        &[Arg::U64(psrc), Arg::U64(pout)],
    );
    let out = download_bytes(&dev, pout, threads * 128);
    let mut rep = Report::default();
    for t in 0..threads {
        let s = &src[t * 32..t * 32 + 32];
        let u16at = |o: usize| u16::from_le_bytes([s[o], s[o + 1]]);
        let mut e = Vec::with_capacity(128);
        e.extend((s[3] as u32).to_le_bytes());
        e.extend((s[5] as i8 as i32).to_le_bytes());
        e.extend((u16at(6) as u32).to_le_bytes());
        e.extend((u16at(10) as i16 as i32).to_le_bytes());
        e.extend(&s[12..16]);
        e.extend(&s[28..32]);
        e.extend(&s[8..16]);
        e.extend(&s[4..8]);
        e.push(s[12]);
        e.push(s[5]);
        e.extend(&s[10..12]);
        e.extend(&s[16..24]);
        e.extend(&s[8..16]);
        e.extend((s[7] as i8 as i64).to_le_bytes());
        e.extend(&s[16..32]);
        e.extend(&s[0..16]);
        e.extend(&s[0..16]);
        e.extend(&s[24..32]);
        e.extend(&s[6..8]);
        e.extend(0xBEEFu16.to_le_bytes());
        e.extend(&s[2..4]);
        e.push(s[31]);
        e.push(s[3]);
        assert_eq!(e.len(), 128);
        let o = &out[t * 128..t * 128 + 128];
        for &(off, len, what) in &fields[..23] {
            if o[off..off + len] != e[off..off + len] {
                rep.fail(format!(
                    "thread {t}: `{what}` (result bytes {off}..{}): found {:02x?}, expected {:02x?}; source bytes {:02x?}",
                    off + len,
                    &o[off..off + len],
                    &e[off..off + len],
                    s
                ));
            }
        }
    }
    rep.finish();
}

/// ld.shared.v4.f32 from a 16-byte-aligned `.shared` array declared in the kernel, written a
/// float at a time by another thread before a barrier; also a symbol+offset address.
#[test]
fn ld_shared_v4_f32() {
    let dev = device();
    let mut r = Rng::new(131);
    let input: Vec<f32> = (0..128).map(|_| r.f32_mid()).collect();
    let pin = dev.upload_f32(&input);
    let pout = dev.alloc(32 * 32).unwrap();
    let text = format!(
        "{HEAD}.visible .entry k(.param .u64 pin, .param .u64 pout)\n{{\n{REGS}\
         .shared .align 16 .b8 buf[512];\n\
         ld.param.u64 %rd1, [pin];\nld.param.u64 %rd2, [pout];\n\
         cvta.to.global.u64 %rd1, %rd1;\ncvta.to.global.u64 %rd2, %rd2;\n\
         mov.u32 %r1, %tid.x;\n\
         mul.wide.u32 %rd3, %r1, 16;\nadd.s64 %rd4, %rd1, %rd3;\n\
         ld.global.v4.f32 {{%f1, %f2, %f3, %f4}}, [%rd4];\n\
         mov.u64 %rd5, buf;\nadd.s64 %rd6, %rd5, %rd3;\n\
         st.shared.f32 [%rd6], %f1;\nst.shared.f32 [%rd6+4], %f2;\nst.shared.f32 [%rd6+8], %f3;\nst.shared.f32 [%rd6+12], %f4;\n\
         bar.sync 0;\n\
         add.u32 %r2, %r1, 1;\nand.b32 %r2, %r2, 31;\nmul.wide.u32 %rd7, %r2, 16;\nadd.s64 %rd8, %rd5, %rd7;\n\
         ld.shared.v4.f32 {{%f5, %f6, %f7, %f8}}, [%rd8];\n\
         ld.shared.v4.f32 {{%f9, %f10, %f11, %f12}}, [buf+16];\n\
         mul.wide.u32 %rd9, %r1, 32;\nadd.s64 %rd10, %rd2, %rd9;\n\
         st.global.v4.f32 [%rd10], {{%f5, %f6, %f7, %f8}};\n\
         st.global.v4.f32 [%rd10+16], {{%f9, %f10, %f11, %f12}};\n\
         ret;\n}}\n"
    );
    launch(
        &dev,
        &text,
        "ld.shared.v4.f32 kernel",
        cfg3([1, 1, 1], [32, 1, 1]),
        &[Arg::U64(pin), Arg::U64(pout)],
    );
    let out = dev.download_f32(pout, 32 * 8);
    let mut rep = Report::default();
    for t in 0..32 {
        let j = (t + 1) % 32;
        let want: Vec<f32> = input[j * 4..j * 4 + 4].iter().chain(&input[4..8]).copied().collect();
        let got = &out[t * 8..t * 8 + 8];
        if got.iter().zip(&want).any(|(a, b)| a.to_bits() != b.to_bits()) {
            rep.fail(format!(
                "thread {t}: `ld.shared.v4.f32` of thread {j}'s floats and of [buf+16]: found {got:?}, expected {want:?}"
            ));
        }
    }
    rep.finish();
}

/// A by-value struct parameter read through a register holding its address
/// (`mov.b64 %rd, s; ld.param.u32 %r, [%rd+8]`) and directly (`[s+12]`).
#[test]
fn struct_parameter_read_through_a_register() {
    let dev = device();
    let pout = dev.alloc(32).unwrap();
    let mut s = Vec::new();
    s.extend(0x1122_3344u32.to_le_bytes());
    s.extend((-2.5f32).to_le_bytes());
    s.extend(0xdead_beefu32.to_le_bytes());
    s.extend(0x0bad_f00du32.to_le_bytes());
    s.extend(0x0123_4567_89ab_cdefu64.to_le_bytes());
    let text = format!(
        "{HEAD}.visible .entry k(.param .u64 pout, .param .align 8 .b8 s[24])\n{{\n{REGS}\
         ld.param.u64 %rd1, [pout];\ncvta.to.global.u64 %rd1, %rd1;\n\
         mov.b64 %rd2, s;\n\
         ld.param.u32 %r1, [%rd2+8];\n\
         ld.param.u32 %r2, [%rd2];\n\
         ld.param.f32 %f1, [%rd2+4];\n\
         ld.param.u64 %rd3, [%rd2+16];\n\
         ld.param.u32 %r3, [s+12];\n\
         ld.param.u8 %r4, [s+1];\n\
         ld.param.s8 %r5, [%rd2+11];\n\
         st.global.u32 [%rd1], %r1;\nst.global.u32 [%rd1+4], %r2;\nst.global.f32 [%rd1+8], %f1;\n\
         st.global.u32 [%rd1+12], %r3;\nst.global.u64 [%rd1+16], %rd3;\nst.global.u32 [%rd1+24], %r4;\n\
         st.global.u32 [%rd1+28], %r5;\n\
         ret;\n}}\n"
    );
    launch(
        &dev,
        &text,
        "struct parameter kernel",
        cfg3([1, 1, 1], [1, 1, 1]),
        &[Arg::U64(pout), Arg::Bytes(s)],
    );
    let got = dev.download_u32(pout, 8);
    let want = [
        0xdead_beef,
        0x1122_3344,
        (-2.5f32).to_bits(),
        0x0bad_f00d,
        0x89ab_cdef,
        0x0123_4567,
        0x33,
        0xffff_ffde,
    ];
    let names = [
        "ld.param.u32 [%rd+8]",
        "ld.param.u32 [%rd]",
        "ld.param.f32 [%rd+4]",
        "ld.param.u32 [s+12]",
        "ld.param.u64 [%rd+16] (low)",
        "ld.param.u64 [%rd+16] (high)",
        "ld.param.u8 [s+1]",
        "ld.param.s8 [%rd+11]",
    ];
    let mut rep = Report::default();
    for k in 0..8 {
        if got[k] != want[k] {
            rep.fail(format!(
                "`{}`: found {:#010x}, expected {:#010x}",
                names[k], got[k], want[k]
            ));
        }
    }
    rep.finish();
}

#[test]
fn immediates_and_register_pack_unpack() {
    let dev = device();
    let mut rep = Report::default();
    let cases = pairs32(141);
    let f32_imm: [(&str, fn(f32) -> f32); 7] = [
        ("add.f32 %f4, %f1, 0f3F800000;", |a| a + 1.0),
        ("mul.f32 %f4, %f1, 0fBF000000;", |a| a * -0.5),
        ("fma.rn.f32 %f4, %f1, 0f40000000, 0fC0400000;", |a| a.mul_add(2.0, -3.0)),
        ("mov.f32 %f4, 0f80000000;", |_| -0.0),
        ("mov.f32 %f4, 0f00000001;", |_| f32::from_bits(1)),
        ("mov.f32 %f4, 0f7F800000;", |_| f32::INFINITY),
        ("mov.f32 %f4, 0f7FC00000;", |_| f32::NAN),
    ];
    for (instr, reference) in f32_imm {
        let found = run_ew(&dev, &format!("{instr}\nmov.b32 %r10, %f4;"), 4, 4, &cases);
        rep.check(instr, &[Fmt::F32], Fmt::F32, &cases, &found, |c, x| {
            want_f32(reference(f(c[0])), x)
        });
    }
    let dcases: Vec<[u64; 3]> = specials64().into_iter().map(|x| [x, 0, 0]).collect();
    let f64_imm: [(&str, fn(f64) -> f64); 4] = [
        ("add.f64 %fd4, %fd1, 0dBFF0000000000000;", |a| a - 1.0),
        ("mul.f64 %fd4, %fd1, 0d3FE0000000000000;", |a| a * 0.5),
        ("mov.f64 %fd4, 0d7FF0000000000000;", |_| f64::INFINITY),
        ("mov.f64 %fd4, 0d8000000000000000;", |_| -0.0),
    ];
    for (instr, reference) in f64_imm {
        let found = run_ew(&dev, &format!("{instr}\nmov.b64 %rd20, %fd4;"), 8, 8, &dcases);
        rep.check(instr, &[Fmt::F64], Fmt::F64, &dcases, &found, |c, x| {
            want_f64(reference(d(c[0])), x)
        });
    }
    let icases = int_pairs32(142);
    let int_imm: [(&str, fn(u64) -> u64); 8] = [
        ("mov.u32 %r10, 0xFFFFFFFF;", |_| 0xffff_ffff),
        ("mov.s32 %r10, -2147483648;", |_| 0x8000_0000),
        ("add.s32 %r10, %r1, -1;", |a| (a as u32).wrapping_sub(1) as u64),
        ("mov.u32 %r10, 017;", |_| 15),
        ("mov.u32 %r10, 0b101;", |_| 5),
        ("mov.b32 %r10, 0f3F800000;", |_| 0x3f80_0000),
        ("xor.b32 %r10, %r1, 0x80000000;", |a| (a ^ 0x8000_0000) & 0xffff_ffff),
        ("mov.u32 %r10, 4294967295U;", |_| 0xffff_ffff),
    ];
    for (instr, reference) in int_imm {
        let found = run_ew(&dev, instr, 4, 4, &icases);
        rep.check(instr, &[Fmt::U32], Fmt::U32, &icases, &found, |c, x| {
            want_u64(reference(c[0]), x, Fmt::U32)
        });
    }
    let i64cases = int_pairs64(143);
    let pack: [(&str, IntRef); 4] = [
        // Unpack into halves, then pack them back swapped.
        ("mov.b64 {%r21, %r22}, %rd11;\nmov.b64 %rd20, {%r22, %r21};", |a, _, _| a.rotate_left(32)),
        ("mov.b64 {%r21, %r22}, %rd11;\nmov.b64 %rd20, {%r21, %r22};", |a, _, _| a),
        // The low half of a, the high half of b.
        ("mov.b64 {%r21, %r22}, %rd11;\nmov.b64 {%r23, %r24}, %rd12;\nmov.b64 %rd20, {%r21, %r24};", |a, b, _| {
            (a & 0xffff_ffff) | (b & 0xffff_ffff_0000_0000)
        }),
        // 16-bit halves of a 32-bit register.
        ("mov.b64 {%r21, %r22}, %rd11;\nmov.b32 {%h1, %h2}, %r21;\nmov.b32 %r23, {%h2, %h1};\ncvt.u64.u32 %rd20, %r23;", |a, _, _| {
            (a as u32).rotate_left(16) as u64
        }),
    ];
    for (body, reference) in pack {
        let found = run_ew(&dev, body, 8, 8, &i64cases);
        rep.check(body, &[Fmt::U64; 2], Fmt::U64, &i64cases, &found, |c, x| {
            want_u64(reference(c[0], c[1], 0), x, Fmt::U64)
        });
    }
    rep.finish();
}

// ---------------------------------------------------------------------------------------------
// Special registers, warp-level instructions, barriers, control flow
// ---------------------------------------------------------------------------------------------

/// Every thread of a 3-D grid of 3-D blocks writes its special registers at its linear index;
/// the block has 60 threads, so its second warp is partial.
#[test]
fn special_registers_in_a_3d_grid_of_3d_blocks() {
    let dev = device();
    let (grid, block) = ([2u32, 3, 2], [4u32, 3, 5]);
    let per_block = (block[0] * block[1] * block[2]) as usize;
    let total = per_block * (grid[0] * grid[1] * grid[2]) as usize;
    const N: usize = 19;
    let pout = dev.alloc((total * N * 4) as u64).unwrap();
    let names = [
        "%tid.x",
        "%tid.y",
        "%tid.z",
        "%ntid.x",
        "%ntid.y",
        "%ntid.z",
        "%ctaid.x",
        "%ctaid.y",
        "%ctaid.z",
        "%nctaid.x",
        "%nctaid.y",
        "%nctaid.z",
        "%laneid",
        "%warpid",
        "%lanemask_lt",
        "%lanemask_le",
        "%lanemask_eq",
        "%lanemask_gt",
        "%lanemask_ge",
    ];
    let mut body = String::new();
    for (k, n) in names.iter().enumerate() {
        body += &format!("mov.u32 %r{}, {n};\n", k + 1);
    }
    for k in 0..N {
        body += &format!("st.global.u32 [%rd3+{}], %r{};\n", k * 4, k + 1);
    }
    let text = format!(
        "{HEAD}.visible .entry k(.param .u64 pout)\n{{\n{REGS}\
         ld.param.u64 %rd1, [pout];\ncvta.to.global.u64 %rd1, %rd1;\n\
         mov.u32 %r1, %tid.x;\nmov.u32 %r2, %tid.y;\nmov.u32 %r3, %tid.z;\n\
         mov.u32 %r4, %ntid.x;\nmov.u32 %r5, %ntid.y;\nmov.u32 %r6, %ntid.z;\n\
         mov.u32 %r7, %ctaid.x;\nmov.u32 %r8, %ctaid.y;\nmov.u32 %r9, %ctaid.z;\n\
         mov.u32 %r10, %nctaid.x;\nmov.u32 %r11, %nctaid.y;\n\
         mad.lo.u32 %r20, %r3, %r5, %r2;\nmad.lo.u32 %r20, %r20, %r4, %r1;\n\
         mad.lo.u32 %r21, %r9, %r11, %r8;\nmad.lo.u32 %r21, %r21, %r10, %r7;\n\
         mul.lo.u32 %r22, %r4, %r5;\nmul.lo.u32 %r22, %r22, %r6;\nmad.lo.u32 %r23, %r21, %r22, %r20;\n\
         mul.wide.u32 %rd2, %r23, {};\nadd.s64 %rd3, %rd1, %rd2;\n{body}ret;\n}}\n",
        N * 4
    );
    launch(
        &dev,
        &text,
        "special registers kernel",
        cfg3(grid, block),
        &[Arg::U64(pout)],
    );
    let got = dev.download_u32(pout, total * N);
    let mut rep = Report::default();
    for cz in 0..grid[2] {
        for cy in 0..grid[1] {
            for cx in 0..grid[0] {
                for tz in 0..block[2] {
                    for ty in 0..block[1] {
                        for tx in 0..block[0] {
                            let tl = tx + block[0] * (ty + block[1] * tz);
                            let bl = cx + grid[0] * (cy + grid[1] * cz);
                            let g = bl as usize * per_block + tl as usize;
                            let lane = tl % 32;
                            let eq = 1u32 << lane;
                            let want = [
                                tx,
                                ty,
                                tz,
                                block[0],
                                block[1],
                                block[2],
                                cx,
                                cy,
                                cz,
                                grid[0],
                                grid[1],
                                grid[2],
                                lane,
                                tl / 32,
                                eq - 1,
                                eq | (eq - 1),
                                eq,
                                !(eq | (eq - 1)),
                                !(eq - 1),
                            ];
                            for k in 0..N {
                                if got[g * N + k] != want[k] {
                                    rep.fail(format!(
                                        "`mov.u32 %r, {}` in block ({cx},{cy},{cz}) thread ({tx},{ty},{tz}): found {:#x}, expected {:#x}",
                                        names[k],
                                        got[g * N + k],
                                        want[k]
                                    ));
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    rep.lines.truncate(40);
    rep.finish();
}

/// The source lane and predicate of `shfl.sync.MODE` for lane `l` (PTX ISA's pseudocode).
fn shfl_ref(mode: &str, l: u32, b: u32, c: u32) -> (u32, bool) {
    let bval = b & 31;
    let cval = c & 31;
    let segmask = (c >> 8) & 31;
    let max_lane = (l & segmask) | (cval & !segmask);
    let min_lane = l & segmask;
    match mode {
        "up" => {
            let j = l as i32 - bval as i32;
            (j.max(0) as u32, j >= max_lane as i32)
        }
        "down" => {
            let j = l + bval;
            (j, j <= max_lane)
        }
        "bfly" => {
            let j = l ^ bval;
            (j, j <= max_lane)
        }
        _ => {
            let j = min_lane | (bval & !segmask);
            (j, j <= max_lane)
        }
    }
}

#[test]
fn shfl_sync_every_mode_width_and_predicate() {
    let dev = device();
    let mut rep = Report::default();
    let mut r = Rng::new(151);
    for mode in ["up", "down", "bfly", "idx"] {
        // One warp per (width, b), operands uniform in the warp; then warps with random clamp
        // and segment masks, and warps whose b differs from lane to lane.
        let mut cases: Vec<[u64; 3]> = Vec::new();
        let warp = |cases: &mut Vec<[u64; 3]>, b: &dyn Fn(u32) -> u32, c: u32, r: &mut Rng| {
            for l in 0..32 {
                cases.push([(r.u32() >> 1) as u64, b(l) as u64, c as u64]);
            }
        };
        for w in [32u32, 16, 8, 4] {
            let c = if mode == "up" {
                (32 - w) << 8
            } else {
                ((32 - w) << 8) | 0x1f
            };
            for bv in [0u32, 1, 2, 3, 5, 7, 8, 15, 16, 31, 32, 33] {
                warp(&mut cases, &|_| bv, c, &mut r);
            }
        }
        for _ in 0..8 {
            let c = r.u32() & 0x1f1f;
            let bv = r.u32() & 63;
            warp(&mut cases, &|_| bv, c, &mut r);
        }
        for _ in 0..4 {
            let c = if r.bool() { 0x1f } else { r.u32() & 0x1f1f };
            let bs: Vec<u32> = (0..32).map(|_| r.u32() & 31).collect();
            warp(&mut cases, &|l| bs[l as usize], c, &mut r);
        }
        let instr = format!("shfl.sync.{mode}.b32 %r11|%p1, %r1, %r2, %r3, 0xffffffff;");
        let body = format!("{instr}\nselp.u32 %r12, 1, 0, %p1;\nshl.b32 %r13, %r11, 1;\nor.b32 %r10, %r13, %r12;");
        let found = run_ew(&dev, &body, 4, 4, &cases);
        let label = format!("{instr} (result: d << 1 | p)");
        rep.check(&label, &[Fmt::U32; 3], Fmt::U32, &cases, &found, |c, x| {
            // The case's lane: its index in `cases` mod 32.
            let idx = (c as *const [u64; 3] as usize - cases.as_ptr() as usize) / std::mem::size_of::<[u64; 3]>();
            let (l, base) = (idx as u32 % 32, idx - idx % 32);
            let (j, p) = shfl_ref(mode, l, c[1] as u32, c[2] as u32);
            let dv = if p { cases[base + j as usize][0] } else { c[0] };
            want_u32(((dv as u32) << 1) | p as u32, x, Fmt::U32)
        });
    }
    // Immediate operands, as NVRTC writes them.
    let cases: Vec<[u64; 3]> = (0..256).map(|_| [(r.u32() >> 1) as u64, 0, 0]).collect();
    for (instr, mode, b, c) in [
        ("shfl.sync.down.b32 %r10, %r1, 1, 31, -1;", "down", 1u32, 31u32),
        ("shfl.sync.bfly.b32 %r10, %r1, 16, 0x1f, -1;", "bfly", 16, 0x1f),
        ("shfl.sync.idx.b32 %r10, %r1, 3, 0x181f, -1;", "idx", 3, 0x181f),
        ("shfl.sync.up.b32 %r10, %r1, 2, 0x1000, -1;", "up", 2, 0x1000),
        (
            "shfl.sync.bfly.b32 %r10, %r1, 4, 0x1c1f, 0xffffffff;",
            "bfly",
            4,
            0x1c1f,
        ),
    ] {
        let found = run_ew(&dev, instr, 4, 4, &cases);
        rep.check(instr, &[Fmt::U32], Fmt::U32, &cases, &found, |cs, x| {
            let idx = (cs as *const [u64; 3] as usize - cases.as_ptr() as usize) / std::mem::size_of::<[u64; 3]>();
            let (l, base) = (idx as u32 % 32, idx - idx % 32);
            let (j, p) = shfl_ref(mode, l, b, c);
            want_u32(if p { cases[base + j as usize][0] } else { cs[0] } as u32, x, Fmt::U32)
        });
    }
    rep.finish();
}

#[test]
fn vote_and_activemask() {
    let dev = device();
    let mut rep = Report::default();
    let mut r = Rng::new(161);
    // Warps with no, one, some and all lanes' predicate true (p = a odd).
    let mut cases: Vec<[u64; 3]> = Vec::new();
    for kind in 0..8 {
        for l in 0..32u64 {
            let a = match kind {
                0 => 0,
                1 => 1,
                2 => (l == 7) as u64,
                3 => (l != 31) as u64,
                4 => l,
                _ => r.u32() as u64,
            };
            cases.push([a, 0, 0]);
        }
    }
    let warp_of = |c: &[u64; 3]| {
        let idx = (c as *const [u64; 3] as usize - cases.as_ptr() as usize) / std::mem::size_of::<[u64; 3]>();
        let base = idx - idx % 32;
        (
            idx % 32,
            (0..32).fold(0u32, |m, k| m | ((cases[base + k][0] as u32 & 1) << k)),
        )
    };
    let pred = "and.b32 %r20, %r1, 1;\nsetp.ne.u32 %p1, %r20, 0;\n";
    let instr = "vote.sync.ballot.b32 %r10, %p1, 0xffffffff;";
    let found = run_ew(&dev, &format!("{pred}{instr}"), 4, 4, &cases);
    rep.check(instr, &[Fmt::U32], Fmt::U32, &cases, &found, |c, x| {
        want_u32(warp_of(c).1, x, Fmt::U32)
    });
    let instr = "vote.sync.ballot.b32 %r10, !%p1, 0xffffffff;";
    let found = run_ew(&dev, &format!("{pred}{instr}"), 4, 4, &cases);
    rep.check(instr, &[Fmt::U32], Fmt::U32, &cases, &found, |c, x| {
        want_u32(!warp_of(c).1, x, Fmt::U32)
    });
    for (mode, reference) in [
        ("all", (|m: u32| m == u32::MAX) as fn(u32) -> bool),
        ("any", |m: u32| m != 0),
        ("uni", |m: u32| m == 0 || m == u32::MAX),
    ] {
        let instr = format!("vote.sync.{mode}.pred %p2, %p1, 0xffffffff;");
        let found = run_ew(&dev, &format!("{pred}{instr}\nselp.u32 %r10, 1, 0, %p2;"), 4, 4, &cases);
        rep.check(&instr, &[Fmt::U32], Fmt::U32, &cases, &found, |c, x| {
            want_u32(reference(warp_of(c).1) as u32, x, Fmt::U32)
        });
    }
    // activemask: all lanes when converged; in each side of a divergent branch, that side's lanes.
    let instr = "activemask.b32 %r10;";
    let found = run_ew(&dev, instr, 4, 4, &cases);
    rep.check(instr, &[Fmt::U32], Fmt::U32, &cases, &found, |_, x| {
        want_u32(u32::MAX, x, Fmt::U32)
    });
    let body = format!(
        "{pred}@%p1 bra ODD;\nactivemask.b32 %r11;\nbra JOIN;\nODD:\nactivemask.b32 %r11;\nJOIN:\n\
         activemask.b32 %r12;\nxor.b32 %r10, %r11, %r12;"
    );
    let found = run_ew(&dev, &body, 4, 4, &cases);
    rep.check(
        "activemask.b32 in each side of an if/else, xor activemask.b32 after it",
        &[Fmt::U32],
        Fmt::U32,
        &cases,
        &found,
        |c, x| {
            let (l, odd) = warp_of(c);
            let side = if odd >> l & 1 == 1 { odd } else { !odd };
            want_u32(side ^ u32::MAX, x, Fmt::U32)
        },
    );
    // A warp cut short by the launch (n = 48): the last warp has 16 lanes.
    let short: Vec<[u64; 3]> = cases[..48].to_vec();
    let found = run_ew(&dev, "activemask.b32 %r10;", 4, 4, &short);
    rep.check(
        "activemask.b32 in a warp of 16 live lanes",
        &[Fmt::U32],
        Fmt::U32,
        &short,
        &found,
        |c, x| {
            let idx = (c as *const [u64; 3] as usize - short.as_ptr() as usize) / std::mem::size_of::<[u64; 3]>();
            want_u32(if idx < 32 { u32::MAX } else { 0xffff }, x, Fmt::U32)
        },
    );
    rep.finish();
}

/// bar.sync orders shared-memory writes and reads across the 4 warps of a block, twice
/// (read-after-write, then write-after-read); racecheck would flag a barrier that did not.
#[test]
fn bar_sync_orders_shared_memory_across_warps() {
    let dev = device();
    let blocks = 3u32;
    let n = 128 * blocks as usize;
    let mut r = Rng::new(171);
    let input: Vec<u32> = (0..n).map(|_| r.u32()).collect();
    let pin = dev.upload_u32(&input);
    let pout = dev.alloc((n * 8) as u64).unwrap();
    let text = format!(
        "{HEAD}.visible .entry k(.param .u64 pin, .param .u64 pout)\n{{\n{REGS}\
         .shared .align 4 .b8 sh[512];\n\
         ld.param.u64 %rd1, [pin];\nld.param.u64 %rd2, [pout];\n\
         cvta.to.global.u64 %rd1, %rd1;\ncvta.to.global.u64 %rd2, %rd2;\n\
         mov.u32 %r1, %tid.x;\nmov.u32 %r2, %ctaid.x;\nmad.lo.u32 %r3, %r2, 128, %r1;\n\
         mul.wide.u32 %rd3, %r3, 4;\nadd.s64 %rd4, %rd1, %rd3;\nld.global.u32 %r4, [%rd4];\n\
         mov.u64 %rd5, sh;\nmul.wide.u32 %rd6, %r1, 4;\nadd.s64 %rd7, %rd5, %rd6;\n\
         st.shared.u32 [%rd7], %r4;\n\
         bar.sync 0;\n\
         add.u32 %r5, %r1, 37;\nand.b32 %r5, %r5, 127;\nmul.wide.u32 %rd8, %r5, 4;\nadd.s64 %rd9, %rd5, %rd8;\n\
         ld.shared.u32 %r6, [%rd9];\n\
         bar.sync 0;\n\
         xor.b32 %r7, %r4, 0x5a5a5a5a;\nst.shared.u32 [%rd7], %r7;\n\
         barrier.sync.aligned 0;\n\
         add.u32 %r8, %r1, 65;\nand.b32 %r8, %r8, 127;\nmul.wide.u32 %rd10, %r8, 4;\nadd.s64 %rd11, %rd5, %rd10;\n\
         ld.shared.u32 %r9, [%rd11];\n\
         mul.wide.u32 %rd12, %r3, 8;\nadd.s64 %rd13, %rd2, %rd12;\n\
         st.global.v2.u32 [%rd13], {{%r6, %r9}};\n\
         ret;\n}}\n"
    );
    let stats = launch(
        &dev,
        &text,
        "bar.sync kernel",
        cfg3([blocks, 1, 1], [128, 1, 1]),
        &[Arg::U64(pin), Arg::U64(pout)],
    );
    let got = dev.download_u32(pout, n * 2);
    let mut rep = Report::default();
    for b in 0..blocks as usize {
        for t in 0..128 {
            let g = b * 128 + t;
            let want = [
                input[b * 128 + (t + 37) % 128],
                input[b * 128 + (t + 65) % 128] ^ 0x5a5a_5a5a,
            ];
            if got[2 * g..2 * g + 2] != want {
                rep.fail(format!(
                    "block {b} thread {t}: reads after bar.sync found {:x?}, expected {want:x?}",
                    &got[2 * g..2 * g + 2]
                ));
            }
        }
    }
    if stats.barriers != 3 * blocks as u64 {
        rep.fail(format!(
            "Stats::barriers = {}, expected {} (3 per block)",
            stats.barriers,
            3 * blocks
        ));
    }
    rep.lines.truncate(20);
    rep.finish();
}

/// Nested if/else on per-lane conditions, then a per-lane trip-count loop; after each the warp
/// must have reconverged (a full-warp shfl.sync and vote.sync read every lane's value).
#[test]
fn divergence_reconverges_and_per_lane_loops() {
    let dev = device();
    let mut rep = Report::default();
    let mut r = Rng::new(181);
    let cases: Vec<[u64; 3]> = (0..256).map(|_| [(r.u32() & 0xffff) as u64, 0, 0]).collect();
    let idx_of =
        |c: &[u64; 3]| (c as *const [u64; 3] as usize - cases.as_ptr() as usize) / std::mem::size_of::<[u64; 3]>();
    // x = a odd ? (a & 2 ? a*3 : a+7) : a + 100
    let x_of = |a: u32| {
        if a & 1 == 1 {
            if a & 2 != 0 {
                a * 3
            } else {
                a + 7
            }
        } else {
            a + 100
        }
    };
    let body = "and.b32 %r20, %r1, 1;\nsetp.eq.u32 %p1, %r20, 0;\n\
                @%p1 bra EVEN;\n\
                and.b32 %r21, %r1, 2;\nsetp.ne.u32 %p2, %r21, 0;\n\
                @!%p2 bra ODD1;\nmul.lo.u32 %r11, %r1, 3;\nbra ODDJOIN;\n\
                ODD1:\nadd.u32 %r11, %r1, 7;\n\
                ODDJOIN:\nbra JOIN;\n\
                EVEN:\nadd.u32 %r11, %r1, 100;\n\
                JOIN:\n\
                shfl.sync.bfly.b32 %r12, %r11, 1, 0x1f, 0xffffffff;\n\
                and.b32 %r22, %r11, 4;\nsetp.ne.u32 %p3, %r22, 0;\n\
                vote.sync.ballot.b32 %r13, %p3, 0xffffffff;\n\
                add.u32 %r14, %r11, %r12;\nxor.b32 %r10, %r14, %r13;";
    let found = run_ew(&dev, body, 4, 4, &cases);
    rep.check(
        "nested if/else, then shfl.sync.bfly and vote.sync.ballot",
        &[Fmt::U32],
        Fmt::U32,
        &cases,
        &found,
        |c, x| {
            let i = idx_of(c);
            let base = i - i % 32;
            let xs: Vec<u32> = (0..32).map(|k| x_of(cases[base + k][0] as u32)).collect();
            let l = i % 32;
            let ballot = (0..32).fold(0u32, |m, k| m | (((xs[k] >> 2) & 1) << k));
            want_u32(xs[l].wrapping_add(xs[l ^ 1]) ^ ballot, x, Fmt::U32)
        },
    );
    // Loop: lane runs (a & 15) + lane % 5 iterations of s = s*3 + i.
    let body = "mov.u32 %r23, %laneid;\nrem.u32 %r24, %r23, 5;\nand.b32 %r25, %r1, 15;\nadd.u32 %r26, %r24, %r25;\n\
                mov.u32 %r11, 0;\nmov.u32 %r27, 0;\n\
                setp.eq.u32 %p1, %r26, 0;\n@%p1 bra DONELOOP;\n\
                LOOP:\nmad.lo.u32 %r11, %r11, 3, %r27;\nadd.u32 %r27, %r27, 1;\n\
                setp.lt.u32 %p2, %r27, %r26;\n@%p2 bra LOOP;\n\
                DONELOOP:\n\
                shfl.sync.idx.b32 %r12, %r11, 0, 0x1f, 0xffffffff;\n\
                setp.gt.u32 %p3, %r27, 8;\nvote.sync.ballot.b32 %r13, %p3, 0xffffffff;\n\
                activemask.b32 %r15;\n\
                add.u32 %r14, %r11, %r12;\nxor.b32 %r14, %r14, %r13;\nxor.b32 %r10, %r14, %r15;";
    let found = run_ew(&dev, body, 4, 4, &cases);
    rep.check(
        "per-lane trip-count loop, then shfl.sync.idx, vote.sync.ballot and activemask",
        &[Fmt::U32],
        Fmt::U32,
        &cases,
        &found,
        |c, x| {
            let i = idx_of(c);
            let base = i - i % 32;
            let trips: Vec<u32> = (0..32)
                .map(|k| (cases[base + k][0] as u32 & 15) + k as u32 % 5)
                .collect();
            let s: Vec<u32> = trips
                .iter()
                .map(|&n| (0..n).fold(0u32, |s, i| s.wrapping_mul(3).wrapping_add(i)))
                .collect();
            let ballot = (0..32).fold(0u32, |m, k| m | ((trips[k] > 8) as u32) << k);
            let l = i % 32;
            want_u32(s[l].wrapping_add(s[0]) ^ ballot ^ u32::MAX, x, Fmt::U32)
        },
    );
    rep.finish();
}

// ---------------------------------------------------------------------------------------------
// Load-time errors
// ---------------------------------------------------------------------------------------------

/// A module whose line `bad_line` (1-based) must fail the load with a message containing
/// every one of `names`.
fn expect_load_error(dev: &Device, text: &str, bad_line: u32, names: &[&str], rep: &mut Report) {
    let what = text.lines().nth(bad_line as usize - 1).unwrap_or("").trim();
    match dev.load_ptx(text) {
        Ok(_) => rep.fail(format!(
            "`{what}` (line {bad_line}): the module loaded; expected an error"
        )),
        Err(e) => {
            if e.line != bad_line {
                rep.fail(format!(
                    "`{what}`: the error names line {}, expected line {bad_line} (message: {})",
                    e.line, e.msg
                ));
            }
            for n in names {
                if !e.msg.contains(n) {
                    rep.fail(format!(
                        "`{what}` (line {bad_line}): the message `{}` does not name `{n}`",
                        e.msg
                    ));
                }
            }
        }
    }
}

#[test]
fn load_errors_name_their_line() {
    let dev = device();
    let mut rep = Report::default();
    let kernel = |instr: &str| {
        format!(
            ".version 7.8\n.target sm_75\n.address_size 64\n\n.visible .entry k(.param .u64 p)\n{{\n{REGS}\
             ld.param.u64 %rd1, [p];\ncvta.to.global.u64 %rd1, %rd1;\n{instr}\nret;\n}}\n"
        )
    };
    // The instruction is on line 6 + 1 + (lines of REGS) + 2.
    let line = 6 + REGS.lines().count() as u32 + 3;
    expect_load_error(
        &dev,
        &kernel("atom.global.add.f32 %f1, [%rd1], %f2;"),
        line,
        &["atom"],
        &mut rep,
    );
    expect_load_error(
        &dev,
        &kernel("add.weird.f32 %f1, %f2, %f3;"),
        line,
        &["weird"],
        &mut rep,
    );
    expect_load_error(&dev, &kernel("call.uni foo, (%r1);"), line, &["call"], &mut rep);
    expect_load_error(&dev, &kernel("call foo;"), line, &["call"], &mut rep);
    expect_load_error(
        &dev,
        &kernel("frobnicate.b32 %r1, %r2;"),
        line,
        &["frobnicate"],
        &mut rep,
    );
    // A device function: the load fails at its .func, naming calls.
    let func = ".version 7.8\n.target sm_75\n.address_size 64\n.func foo()\n{\nret;\n}\n.visible .entry k()\n{\ncall foo, ();\nret;\n}\n";
    expect_load_error(&dev, func, 4, &["call"], &mut rep);
    // A target newer than the device (T4 is sm_75): the error is the .target line's.
    let newer = ".version 8.0\n.target sm_90\n.address_size 64\n.visible .entry k()\n{\nret;\n}\n";
    expect_load_error(&dev, newer, 2, &["sm_90"], &mut rep);
    // The same module for sm_75 loads.
    if let Err(e) = dev.load_ptx(&newer.replace("sm_90", "sm_75")) {
        rep.fail(format!(
            "an sm_75 module failed to load on the T4: line {}: {}",
            e.line, e.msg
        ));
    }
    if let Err(e) = dev.load_ptx(&kernel("add.f32 %f1, %f2, %f3;")) {
        rep.fail(format!(
            "the error-free twin failed to load: line {}: {}",
            e.line, e.msg
        ));
    }
    rep.finish();
}

// ---------------------------------------------------------------------------------------------
// Directed rounding beyond add/sub/mul/fma.f32: div.f32, and f64 (exact integer reference)
// ---------------------------------------------------------------------------------------------

#[test]
fn f32_div_in_every_rounding_mode_and_ftz_forms() {
    let dev = device();
    let mut rep = Report::default();
    let mut pairs = pairs32(191);
    let mut r = Rng::new(192);
    for _ in 0..300 {
        // Quotients that are exact, or just off a tie: y·q ± tiny for small q.
        let y = r.f32_mid();
        let q = (r.below(1 << 24) as f32 + 0.5) * 2f32.powi(r.below(20) as i32 - 30);
        let x = y * q;
        pairs.push([x.to_bits() as u64, y.to_bits() as u64, 0]);
        pairs.push([x.next_up().to_bits() as u64, y.to_bits() as u64, 0]);
    }
    for (mode, m) in MODES {
        let instr = format!("div.{m}.f32 %f4, %f1, %f2;");
        let found = run_ew(&dev, &format!("{instr}\nmov.b32 %r10, %f4;"), 4, 4, &pairs);
        rep.check(&instr, &F32_2, Fmt::F32, &pairs, &found, |c, x| {
            want_f32(div_ref(f(c[0]), f(c[1]), mode), x)
        });
    }
    for (mode, m) in MODES {
        for op in ["add", "sub", "mul"] {
            if mode == Mode::Rn || mode == Mode::Rz {
                continue; // in f32_ftz_and_sat
            }
            let instr = format!("{op}.{m}.ftz.f32 %f4, %f1, %f2;");
            let found = run_ew(&dev, &format!("{instr}\nmov.b32 %r10, %f4;"), 4, 4, &pairs);
            rep.check(&instr, &F32_2, Fmt::F32, &pairs, &found, |c, x| {
                let (a, b) = (ftz(f(c[0])), ftz(f(c[1])));
                let v = match op {
                    "add" => add_ref(a, b, mode),
                    "sub" => add_ref(a, -b, mode),
                    _ => mul_ref(a, b, mode),
                };
                want_f32(ftz(v), x)
            });
        }
        let triples = triples32(193);
        let instr = format!("fma.{m}.ftz.f32 %f4, %f1, %f2, %f3;");
        let found = run_ew(&dev, &format!("{instr}\nmov.b32 %r10, %f4;"), 4, 4, &triples);
        rep.check(&instr, &F32_3, Fmt::F32, &triples, &found, |c, x| {
            want_f32(ftz(fma_ref(ftz(f(c[0])), ftz(f(c[1])), ftz(f(c[2])), mode)), x)
        });
        let instr = format!("div.{m}.ftz.f32 %f4, %f1, %f2;");
        let found = run_ew(&dev, &format!("{instr}\nmov.b32 %r10, %f4;"), 4, 4, &pairs);
        rep.check(&instr, &F32_2, Fmt::F32, &pairs, &found, |c, x| {
            want_f32(ftz(div_ref(ftz(f(c[0])), ftz(f(c[1])), mode)), x)
        });
    }
    let singles: Vec<[u64; 3]> = pairs.iter().map(|c| [c[0], 0, 0]).collect();
    let one = [Fmt::F32];
    for (instr, reference) in [
        (
            "sqrt.rn.ftz.f32 %f4, %f1;",
            (|a: f32| ftz(ftz(a).sqrt())) as fn(f32) -> f32,
        ),
        ("rcp.rn.ftz.f32 %f4, %f1;", |a: f32| ftz(1.0 / ftz(a))),
        ("cvt.ftz.f32.f32 %f4, %f1;", ftz),
        ("cvt.rzi.ftz.f32.f32 %f4, %f1;", |a: f32| ftz(a).trunc()),
        ("cvt.sat.ftz.f32.f32 %f4, %f1;", |a: f32| {
            let a = ftz(a);
            if a.is_nan() {
                0.0
            } else {
                a.clamp(0.0, 1.0)
            }
        }),
    ] {
        let found = run_ew(&dev, &format!("{instr}\nmov.b32 %r10, %f4;"), 4, 4, &singles);
        rep.check(instr, &one, Fmt::F32, &singles, &found, |c, x| {
            let e = reference(f(c[0]));
            if e == 0.0 && instr.contains("sat") {
                return want_sat(e, x);
            }
            want_f32(e, x)
        });
    }
    let instr = "cvt.rzi.ftz.s32.f32 %r10, %f1;";
    let found = run_ew(&dev, instr, 4, 4, &singles);
    rep.check(instr, &one, Fmt::S32, &singles, &found, |c, x| {
        want_u64(f2i(ftz(f(c[0])) as f64, "rzi", "s32"), x, Fmt::S32)
    });
    let dsingles: Vec<[u64; 3]> = specials64()
        .into_iter()
        .chain((0..300).map(|_| {
            let e = 1023 - 160 + r.below(300);
            (r.next() & (1 << 63)) | e << 52 | r.next() & 0x000f_ffff_ffff_ffff
        }))
        .map(|x| [x, 0, 0])
        .collect();
    let instr = "cvt.rn.ftz.f32.f64 %f4, %fd1;";
    let found = run_ew(&dev, &format!("{instr}\nmov.b32 %r10, %f4;"), 8, 4, &dsingles);
    rep.check(instr, &[Fmt::F64], Fmt::F32, &dsingles, &found, |c, x| {
        want_f32(ftz(d(c[0]) as f32), x)
    });
    // sqrt.approx and rsqrt.approx: relative error within 2^-22 (normal inputs and results).
    for (instr, reference) in [
        ("sqrt.approx.f32 %f4, %f1;", (|a: f64| a.sqrt()) as fn(f64) -> f64),
        ("rsqrt.approx.f32 %f4, %f1;", |a: f64| 1.0 / a.sqrt()),
        ("sqrt.approx.ftz.f32 %f4, %f1;", |a: f64| a.sqrt()),
        ("rsqrt.approx.ftz.f32 %f4, %f1;", |a: f64| 1.0 / a.sqrt()),
    ] {
        let found = run_ew(&dev, &format!("{instr}\nmov.b32 %r10, %f4;"), 4, 4, &singles);
        rep.check(instr, &one, Fmt::F32, &singles, &found, |c, x| {
            let a = if instr.contains("ftz") { ftz(f(c[0])) } else { f(c[0]) };
            let e = reference(a as f64);
            if a.is_nan() || a < 0.0 {
                return want_f32(f32::NAN, x);
            }
            if a.is_infinite() || a == 0.0 {
                return want_f32(e as f32, x);
            }
            if a.is_subnormal() || e < f32::MIN_POSITIVE as f64 || e > f32::MAX as f64 {
                return Ok(());
            }
            let g = f(x) as f64;
            if (g - e).abs() <= e * 2f64.powi(-22) {
                Ok(())
            } else {
                Err(format!("{e:e} within a relative 2^-22"))
            }
        });
    }
    rep.finish();
}

/// A finite f64 as (negative, m, e) with |x| = m · 2^e.
fn parts64(x: f64) -> (bool, u128, i32) {
    let b = x.to_bits();
    let neg = b >> 63 == 1;
    let e = ((b >> 52) & 0x7ff) as i32;
    let m = (b & ((1 << 52) - 1)) as u128;
    if e == 0 {
        (neg, m, -1074)
    } else {
        (neg, m | 1 << 52, e - 1075)
    }
}

fn pow2(q: i32) -> f64 {
    if q >= -1022 {
        f64::from_bits(((q + 1023) as u64) << 52)
    } else {
        f64::from_bits(1u64 << (q + 1074))
    }
}

/// Round ±m·2^e (m > 0) to f64 in `mode`, with integers only.
fn round_parts_f64(neg: bool, m: u128, e: i32, mode: Mode) -> f64 {
    use std::cmp::Ordering::*;
    let len = 128 - m.leading_zeros() as i32;
    let q = (e + len - 53).max(-1074); // the exponent of the result's ulp
    let (mut mant, half_cmp, inexact) = if q <= e {
        (m << (e - q), Equal, false)
    } else {
        let sh = (q - e) as u32;
        if sh >= 129 {
            (0, Less, true)
        } else if sh == 128 {
            (0, m.cmp(&(1 << 127)), true)
        } else {
            let rem = m & ((1u128 << sh) - 1);
            (m >> sh, rem.cmp(&(1u128 << (sh - 1))), rem != 0)
        }
    };
    let inc = match mode {
        Mode::Rn => half_cmp == Greater || (half_cmp == Equal && inexact && mant & 1 == 1),
        Mode::Rz => false,
        Mode::Rm => neg && inexact,
        Mode::Rp => !neg && inexact,
    };
    mant += inc as u128;
    let sign = if neg { -1.0 } else { 1.0 };
    if mant != 0 && (128 - mant.leading_zeros() as i32) + q > 1024 {
        let away = match mode {
            Mode::Rn => true,
            Mode::Rz => false,
            Mode::Rm => neg,
            Mode::Rp => !neg,
        };
        return sign * if away { f64::INFINITY } else { f64::MAX };
    }
    sign * (mant as f64 * pow2(q))
}

/// a·b + c in `mode`, exactly: the product's 106-bit significand and c aligned in an i128, the
/// part of the smaller term below the window kept as a sticky bit (it lies more than 70 bits
/// below the result's ulp, so it only breaks ties).
fn fma64_ref(a: f64, b: f64, c: f64, mode: Mode) -> f64 {
    if !a.is_finite() || !b.is_finite() || !c.is_finite() {
        return a.mul_add(b, c);
    }
    let (na, ma, ea) = parts64(a);
    let (nb, mb, eb) = parts64(b);
    let (nc, mc, ec) = parts64(c);
    let (np, mp, ep) = (na ^ nb, ma * mb, ea + eb);
    let rm_zero = if mode == Mode::Rm { -0.0 } else { 0.0 };
    if mp == 0 && mc == 0 {
        return if np == nc {
            if np {
                -0.0
            } else {
                0.0
            }
        } else {
            rm_zero
        };
    }
    if mp == 0 {
        return c;
    }
    if mc == 0 {
        return round_parts_f64(np, mp, ep, mode);
    }
    let top = |m: u128, e: i32| e + (128 - m.leading_zeros() as i32);
    let ((nx, mx, ex), (ny, my, ey)) = if top(mp, ep) >= top(mc, ec) {
        ((np, mp, ep), (nc, mc, ec))
    } else {
        ((nc, mc, ec), (np, mp, ep))
    };
    let w = top(mx, ex) - 125;
    let xa = (mx << (ex - w)) as i128;
    let sh = ey - w;
    let (ya, sticky) = if sh >= 0 {
        ((my << sh) as i128, false)
    } else if -sh >= 128 {
        (0, true)
    } else {
        let k = (-sh) as u32;
        ((my >> k) as i128, my & ((1u128 << k) - 1) != 0)
    };
    let z = if nx { -xa } else { xa } + if ny { -ya } else { ya };
    let s = if sticky {
        if ny {
            -1
        } else {
            1
        }
    } else {
        0
    };
    let m2 = 2 * z + s;
    if m2 == 0 {
        return rm_zero;
    }
    round_parts_f64(m2 < 0, m2.unsigned_abs(), w - 1, mode)
}

fn mul64_ref(a: f64, b: f64, mode: Mode) -> f64 {
    if !a.is_finite() || !b.is_finite() || a == 0.0 || b == 0.0 {
        return a * b;
    }
    let (na, ma, ea) = parts64(a);
    let (nb, mb, eb) = parts64(b);
    round_parts_f64(na ^ nb, ma * mb, ea + eb, mode)
}

fn add64_ref(a: f64, b: f64, mode: Mode) -> f64 {
    fma64_ref(a, 1.0, b, mode)
}

#[test]
fn host_f64_reference_agrees_with_std_and_brackets() {
    let mut r = Rng::new(201);
    for k in 0..200_000 {
        let (a, b, c) = if k % 2 == 0 {
            (
                f64::from_bits(r.next()),
                f64::from_bits(r.next()),
                f64::from_bits(r.next()),
            )
        } else {
            (mid64(&mut r), mid64(&mut r), mid64(&mut r))
        };
        let same = |x: f64, y: f64| x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan());
        assert!(
            same(fma64_ref(a, b, c, Mode::Rn), a.mul_add(b, c)),
            "fma {a:e} {b:e} {c:e}"
        );
        assert!(same(mul64_ref(a, b, Mode::Rn), a * b), "mul {a:e} {b:e}");
        assert!(same(add64_ref(a, c, Mode::Rn), a + c), "add {a:e} {c:e}");
        let (lo, hi) = (fma64_ref(a, b, c, Mode::Rm), fma64_ref(a, b, c, Mode::Rp));
        if lo.is_finite() && hi.is_finite() {
            assert!(lo == hi || lo.next_up() == hi, "bracket {a:e} {b:e} {c:e}");
        }
        let z = fma64_ref(a, b, c, Mode::Rz);
        assert!(z.is_nan() || z == lo || z == hi, "rz {a:e} {b:e} {c:e}");
    }
    // Hand-checked cases.
    let dmin = f64::from_bits(1);
    assert_eq!(mul64_ref(dmin, 0.5, Mode::Rp), dmin);
    assert_eq!(mul64_ref(dmin, 0.5, Mode::Rn), 0.0);
    assert_eq!(mul64_ref(-dmin, 0.75, Mode::Rn), -dmin);
    assert_eq!(mul64_ref(f64::MAX, 2.0, Mode::Rz), f64::MAX);
    assert_eq!(add64_ref(f64::MAX, f64::MAX, Mode::Rm), f64::MAX);
    assert_eq!(add64_ref(-f64::MAX, -f64::MAX, Mode::Rm), f64::NEG_INFINITY);
    assert_eq!(add64_ref(1.0, 2f64.powi(-60), Mode::Rp), 1.0f64.next_up());
    assert_eq!(add64_ref(1.0, -2f64.powi(-60), Mode::Rz), 1.0f64.next_down());
    assert_eq!(fma64_ref(1.0, 1.0, -1.0, Mode::Rm).to_bits(), (-0.0f64).to_bits());
    assert_eq!(
        fma64_ref(3.0, 1.0 / 3.0, -1.0, Mode::Rn),
        3.0f64.mul_add(1.0 / 3.0, -1.0)
    );
}

/// f64 operand triples: specials crossed, random patterns, cancellations and near-ties of
/// a·b + c, sums and products in the subnormal range and at the top of the range.
fn f64_cases() -> Vec<[u64; 3]> {
    let s = specials64();
    let mut cases: Vec<[u64; 3]> = Vec::new();
    for &a in &s {
        for &b in &s {
            cases.push([a, b, s[(a.rotate_left(7) ^ b) as usize % s.len()]]);
        }
    }
    let mut r = Rng::new(211);
    for _ in 0..300 {
        cases.push([r.next(), r.next(), r.next()]);
    }
    for _ in 0..400 {
        let (a, b) = (mid64(&mut r), mid64(&mut r));
        let p = a * b;
        let c = match r.below(5) {
            0 => -p,
            1 => (-p).next_up(),
            2 => mid64(&mut r),
            3 => -p * (1.0 + 2f64.powi(-52)),
            _ => {
                let h = (p.abs().next_up() - p.abs()) / 2.0;
                h * if r.bool() { 1.0 } else { -1.0 }
            }
        };
        cases.push([a.to_bits(), b.to_bits(), c.to_bits()]);
        // Sums and products in the subnormal range and at the top of the range.
        let t = f64::from_bits(r.next() & 0x800f_ffff_ffff_ffff | (r.below(40)) << 52);
        let u = f64::from_bits(r.next() & 0x800f_ffff_ffff_ffff | (r.below(40) + 1000) << 52);
        let v = f64::from_bits(r.next() & 0x800f_ffff_ffff_ffff | (2046 - r.below(3)) << 52);
        cases.push([t.to_bits(), u.to_bits(), t.to_bits() ^ 0x8000_0000_0000_0001]);
        cases.push([v.to_bits(), v.to_bits(), v.to_bits()]);
    }
    cases
}

#[test]
fn f64_add_sub_mul_fma_in_every_rounding_mode() {
    let dev = device();
    let mut rep = Report::default();
    let cases = f64_cases();
    let three = [Fmt::F64; 3];
    for (mode, m) in MODES {
        for op in ["add", "sub", "mul", "fma"] {
            let instr = if op == "fma" {
                format!("fma.{m}.f64 %fd4, %fd1, %fd2, %fd3;")
            } else {
                format!("{op}.{m}.f64 %fd4, %fd1, %fd2;")
            };
            let body = format!("{instr}\nmov.b64 %rd20, %fd4;");
            if mode != Mode::Rn {
                // The simulator implements f64 arithmetic in round-to-nearest only (vitcore's
                // kernels use no other): a directed mode must be refused at load, naming the
                // instruction, never computed in another mode.
                let e = dev
                    .load_ptx(&ew_ptx(&body, 8, 8))
                    .expect_err(&format!("`{instr}` must be refused at load"));
                assert!(e.msg.contains(&format!("{op}.{m}.f64")), "`{instr}`: {}", e.msg);
                continue;
            }
            let found = run_ew(&dev, &body, 8, 8, &cases);
            let n = if op == "fma" { 3 } else { 2 };
            rep.check(&instr, &three[..n], Fmt::F64, &cases, &found, |c, x| {
                let (a, b) = (d(c[0]), d(c[1]));
                want_f64(
                    match op {
                        "add" => add64_ref(a, b, mode),
                        "sub" => add64_ref(a, -b, mode),
                        "mul" => mul64_ref(a, b, mode),
                        _ => fma64_ref(a, b, d(c[2]), mode),
                    },
                    x,
                )
            });
        }
    }
    rep.finish();
}

#[test]
fn f64_min_max_abs_neg_copysign_and_integer_conversions() {
    let dev = device();
    let mut rep = Report::default();
    let cases = f64_cases();
    let three = [Fmt::F64; 3];
    for (mode, m) in MODES {
        // Integers to f64.
        let ints: Vec<[u64; 3]> = int_pairs64(212).iter().map(|c| [c[0], 0, 0]).collect();
        for sty in ["s64", "u64"] {
            let instr = format!("cvt.{m}.f64.{sty} %fd4, %rd11;");
            let found = run_ew(&dev, &format!("{instr}\nmov.b64 %rd20, %fd4;"), 8, 8, &ints);
            let fm = if sty == "s64" { Fmt::S64 } else { Fmt::U64 };
            rep.check(&instr, &[fm], Fmt::F64, &ints, &found, |c, x| {
                let v: i128 = if sty == "s64" {
                    c[0] as i64 as i128
                } else {
                    c[0] as i128
                };
                let e = if v == 0 {
                    0.0
                } else {
                    round_parts_f64(v < 0, v.unsigned_abs(), 0, mode)
                };
                want_f64(e, x)
            });
        }
    }
    // min/max/abs/neg/copysign on f64: the f32 rules.
    let minmax64 = |a: f64, b: f64, max: bool, nan: bool| -> f64 {
        if a.is_nan() || b.is_nan() {
            if nan || (a.is_nan() && b.is_nan()) {
                return f64::NAN;
            }
            return if a.is_nan() { b } else { a };
        }
        if a == 0.0 && b == 0.0 {
            let neg = if max {
                a.is_sign_negative() && b.is_sign_negative()
            } else {
                a.is_sign_negative() || b.is_sign_negative()
            };
            return if neg { -0.0 } else { 0.0 };
        }
        if (a > b) == max {
            a
        } else {
            b
        }
    };
    for (op, max) in [("min", false), ("max", true)] {
        for (modifier, nan) in [("", false), (".NaN", true)] {
            let instr = format!("{op}{modifier}.f64 %fd4, %fd1, %fd2;");
            let found = run_ew(&dev, &format!("{instr}\nmov.b64 %rd20, %fd4;"), 8, 8, &cases);
            rep.check(&instr, &three[..2], Fmt::F64, &cases, &found, |c, x| {
                want_f64(minmax64(d(c[0]), d(c[1]), max, nan), x)
            });
        }
    }
    for (instr, reference) in [
        (
            "abs.f64 %fd4, %fd1;",
            (|a: u64, _b: u64| a & !(1 << 63)) as fn(u64, u64) -> u64,
        ),
        ("neg.f64 %fd4, %fd1;", |a, _| a ^ 1 << 63),
        ("copysign.f64 %fd4, %fd1, %fd2;", |a, b| {
            (b & !(1 << 63)) | (a & 1 << 63)
        }),
    ] {
        let found = run_ew(&dev, &format!("{instr}\nmov.b64 %rd20, %fd4;"), 8, 8, &cases);
        rep.check(instr, &three[..2], Fmt::F64, &cases, &found, |c, x| {
            want_f64(d(reference(c[0], c[1])), x)
        });
    }
    rep.finish();
}

/// shfl.sync and vote.sync inside a divergent branch, with the membermask naming exactly the
/// lanes that took it (lanes 0-15 of each warp; sources stay inside the group).
#[test]
fn shfl_and_vote_with_a_partial_membermask() {
    let dev = device();
    let mut rep = Report::default();
    let mut r = Rng::new(221);
    let cases: Vec<[u64; 3]> = (0..128).map(|_| [(r.u32() >> 1) as u64, 0, 0]).collect();
    let idx_of =
        |c: &[u64; 3]| (c as *const [u64; 3] as usize - cases.as_ptr() as usize) / std::mem::size_of::<[u64; 3]>();
    let body = "mov.u32 %r20, %laneid;\nsetp.ge.u32 %p1, %r20, 16;\n\
                @%p1 bra HIGH;\n\
                shfl.sync.bfly.b32 %r11, %r1, 5, 0x1f, 0xffff;\n\
                and.b32 %r21, %r1, 1;\nsetp.ne.u32 %p2, %r21, 0;\n\
                vote.sync.ballot.b32 %r12, %p2, 0xffff;\n\
                activemask.b32 %r13;\n\
                xor.b32 %r10, %r11, %r12;\nxor.b32 %r10, %r10, %r13;\nbra JOIN;\n\
                HIGH:\n\
                shfl.sync.idx.b32 %r11, %r1, 17, 0x1f, 0xffff0000;\n\
                vote.sync.all.pred %p3, %p1, 0xffff0000;\nselp.u32 %r12, 7, 0, %p3;\n\
                add.u32 %r10, %r11, %r12;\n\
                JOIN:";
    let found = run_ew(&dev, body, 4, 4, &cases);
    rep.check(
        "shfl.sync.bfly/idx, vote.sync.ballot/all and activemask with membermask 0xffff / 0xffff0000",
        &[Fmt::U32],
        Fmt::U32,
        &cases,
        &found,
        |c, x| {
            let i = idx_of(c);
            let (l, base) = (i % 32, i - i % 32);
            let a = |k: usize| cases[base + k][0] as u32;
            let want = if l < 16 {
                let ballot = (0..16).fold(0u32, |m, k| m | (a(k) & 1) << k);
                a(l ^ 5) ^ ballot ^ 0xffff
            } else {
                a(17).wrapping_add(7)
            };
            want_u32(want, x, Fmt::U32)
        },
    );
    rep.finish();
}

/// On sm_70 and later `shfl.sync` waits for the lanes of its member mask at *any* `shfl.sync`
/// with the same mode and mask (PTX ISA, `shfl.sync`): here the two halves of a warp shuffle at
/// two different instructions on the two sides of a branch, and must exchange values. And the
/// waiting is the instruction's semantics, not a check: with every check off, a warp whose
/// lanes arrive at a shuffle at different times (lanes 16-31 first, lanes 0-15 after a loop)
/// must compute the same as with them on.
#[test]
fn shfl_sync_waits_for_its_mask_at_any_shuffle_with_or_without_checks() {
    let text = format!(
        "{HEAD}\n.visible .entry split(.param .u64 out)\n{{\n{REGS}\
         ld.param.u64 %rd1, [out];\ncvta.to.global.u64 %rd1, %rd1;\n\
         mov.u32 %r1, %laneid;\nsetp.lt.u32 %p1, %r1, 16;\n@%p1 bra $LOW;\n\
         shfl.sync.bfly.b32 %r2, %r1, 16, 31, -1;\nbra.uni $DONE;\n\
         $LOW:\nshfl.sync.bfly.b32 %r2, %r1, 16, 31, -1;\n\
         $DONE:\nmul.wide.u32 %rd2, %r1, 4;\nadd.s64 %rd3, %rd1, %rd2;\nst.global.u32 [%rd3], %r2;\nret;\n}}\n\
         .visible .entry late(.param .u64 out)\n{{\n{REGS}\
         ld.param.u64 %rd1, [out];\ncvta.to.global.u64 %rd1, %rd1;\n\
         mov.u32 %r1, %laneid;\nadd.u32 %r3, %r1, 100;\nmov.u32 %r4, 0;\n\
         setp.ge.u32 %p1, %r1, 16;\n@%p1 bra $SHFL;\n\
         $SPIN:\nadd.u32 %r4, %r4, 1;\nsetp.lt.u32 %p2, %r4, 5;\n@%p2 bra $SPIN;\n\
         $SHFL:\nshfl.sync.idx.b32 %r2, %r3, 0, 31, -1;\n\
         mul.wide.u32 %rd2, %r1, 4;\nadd.s64 %rd3, %rd1, %rd2;\nst.global.u32 [%rd3], %r2;\nret;\n}}\n"
    );
    for checks in [cudasim::Checks::ALL, cudasim::Checks::NONE] {
        let dev = Device::new(
            DeviceModel::t4(),
            RunOptions {
                checks,
                ..RunOptions::default()
            },
        );
        let m = load(&dev, &text, "split/late");
        let cfg = LaunchConfig {
            grid: [1, 1, 1],
            block: [32, 1, 1],
            dynamic_shared: 0,
        };
        let out = dev.alloc(128).unwrap();
        dev.launch(&m, "split", cfg, &[Arg::U64(out)])
            .unwrap_or_else(|e| panic!("split ({checks:?}): {e}"));
        let got = dev.download_u32(out, 32);
        let want: Vec<u32> = (0..32).map(|l| l ^ 16).collect();
        assert_eq!(got, want, "shuffles at two instructions exchange values ({checks:?})");
        dev.launch(&m, "late", cfg, &[Arg::U64(out)])
            .unwrap_or_else(|e| panic!("late ({checks:?}): {e}"));
        assert_eq!(
            dev.download_u32(out, 32),
            vec![100; 32],
            "every lane reads lane 0's value ({checks:?})"
        );
    }
}

/// Constructs the simulator does not run are refused at load, naming them — never merged into
/// something nearby or truncated: a named barrier, a 32-bit generic address, an immediate too
/// wide for its operand. And a `bar.sync` that some lanes of a warp skip is a synccheck finding.
#[test]
fn refused_constructs_and_a_partly_guarded_barrier() {
    let dev = device();
    let kernel = |body: &str| {
        format!("{HEAD}\n.visible .entry k(.param .u64 p)\n{{\n{REGS}ld.param.u64 %rd1, [p];\n{body}\nret;\n}}\n")
    };
    for (body, says) in [
        ("bar.sync 1;", "barrier number"),
        ("mov.u32 %r1, 0;\nbar.sync %r1;", "barrier number"),
        ("cvta.shared.u32 %r2, %r1;", "32-bit generic"),
        ("mov.u32 %r1, 0x100000000;", "does not fit"),
        ("add.s32 %r1, %r1, -2147483649;", "does not fit"),
    ] {
        let e = dev.load_ptx(&kernel(body)).expect_err(body);
        assert!(e.msg.contains(says), "`{body}`: {}", e.msg);
    }
    // Fits: the most negative and the largest unsigned values.
    dev.load_ptx(&kernel("add.s32 %r1, %r1, -2147483648;\nmov.u32 %r2, 0xffffffff;"))
        .unwrap();
    let m = load(
        &dev,
        &kernel("mov.u32 %r1, %laneid;\nsetp.lt.u32 %p1, %r1, 8;\n@%p1 bar.sync 0;"),
        "guarded bar.sync",
    );
    let cfg = LaunchConfig {
        grid: [1, 1, 1],
        block: [32, 1, 1],
        dynamic_shared: 0,
    };
    let p = dev.alloc(4).unwrap();
    match dev.launch(&m, "k", cfg, &[Arg::U64(p)]) {
        Err(cudasim::LaunchError::Found(f)) => {
            assert_eq!(f.check, cudasim::CheckKind::Synccheck, "{f}");
            assert!(f.detail.contains("0-7") && f.detail.contains("8-31"), "{f}");
        }
        other => panic!("a bar.sync only lanes 0-7 execute: {other:?}"),
    }
}
