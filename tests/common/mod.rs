//! Shared machinery of the gradient-check suite.
//!
//! * [`rel_err`] / [`max_rel_err`]: errors in f64 that are `+inf` (so they fail every tolerance)
//!   as soon as either side holds a NaN or an infinity.
//! * Naive **f64** reference implementations of every op, written as plain index loops. They never
//!   call the engine's kernels: they are the definitions the engine is checked against.
//! * [`Check::run`] / [`gradcheck`]: the generic checker. Given an engine builder (records the op on
//!   a `Graph` from leaf inputs) and an f64 reference (`&[Vec<f64>] -> Vec<f64>`), it
//!   (a) compares the engine's f32 forward with the f64 reference, and
//!   (b) draws a random upstream gradient `R`, runs `backward_with(out, R)` and compares every
//!   input's autograd gradient with the central finite difference of
//!   `L(inputs) = Σ R ⊙ reference(inputs)`, computed entirely in f64 on the reference.
//!   It returns a [`Report`] instead of panicking, so a test can also assert that it *fails*
//!   (see `gradcheck_planted.rs`).
#![allow(dead_code)]

use vitcore::rng::Rng;
use vitcore::{Graph, Tensor, Var};

/// Default forward tolerance: relative error (2-norm) of the engine's f32 output against the f64
/// reference. f32 has a unit roundoff of 6e-8; 1e-5 leaves room for sums over a few hundred terms.
pub const FWD_TOL: f64 = 1e-5;
/// Default gradient tolerance: relative error (2-norm) of the f32 autograd gradient against the
/// f64 central finite difference of the f64 reference.
pub const GRAD_TOL: f64 = 1e-4;
/// Finite-difference step, relative to the input element: `h = FD_STEP · max(1, |x_i|)`.
/// In f64 the central difference then has truncation error ~h² ≈ 1e-12 and rounding error
/// ~1e-16/h ≈ 1e-10 (relative), both far below `GRAD_TOL`.
pub const FD_STEP: f64 = 1e-6;

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

fn all_finite(x: &[f64]) -> bool {
    x.iter().all(|v| v.is_finite())
}

/// `‖out − ref‖₂ / ‖ref‖₂` in f64 (the absolute `‖out − ref‖₂` when `ref` is all zeros).
/// `+inf` when the lengths differ or either side has a NaN or an infinity.
pub fn rel_err(out: &[f64], reference: &[f64]) -> f64 {
    if out.len() != reference.len() || !all_finite(out) || !all_finite(reference) {
        return f64::INFINITY;
    }
    let num: f64 = out.iter().zip(reference).map(|(o, r)| (o - r) * (o - r)).sum();
    let den: f64 = reference.iter().map(|r| r * r).sum();
    if den == 0.0 {
        num.sqrt()
    } else {
        (num / den).sqrt()
    }
}

/// `max_i |out_i − ref_i| / max_i |ref_i|` (absolute when `ref` is all zeros); `+inf` on NaN/inf.
/// Catches an error concentrated in a few elements of a large tensor, which the 2-norm dilutes.
pub fn max_rel_err(out: &[f64], reference: &[f64]) -> f64 {
    if out.len() != reference.len() || !all_finite(out) || !all_finite(reference) {
        return f64::INFINITY;
    }
    let num = out
        .iter()
        .zip(reference)
        .map(|(o, r)| (o - r).abs())
        .fold(0.0, f64::max);
    let den = reference.iter().map(|r| r.abs()).fold(0.0, f64::max);
    if den == 0.0 {
        num
    } else {
        num / den
    }
}

/// Largest element-wise relative error `|out_i − ref_i| / |ref_i|` (for tests that need every
/// element accurate, e.g. GELU's tail). `+inf` on NaN/inf or a nonzero output where ref is 0.
pub fn elementwise_rel_err(out: &[f64], reference: &[f64]) -> f64 {
    if out.len() != reference.len() || !all_finite(out) || !all_finite(reference) {
        return f64::INFINITY;
    }
    out.iter()
        .zip(reference)
        .map(|(o, r)| {
            if *r == 0.0 {
                if *o == 0.0 {
                    0.0
                } else {
                    f64::INFINITY
                }
            } else {
                ((o - r) / r).abs()
            }
        })
        .fold(0.0, f64::max)
}

pub fn to_f64(x: &[f32]) -> Vec<f64> {
    x.iter().map(|&v| v as f64).collect()
}

/// [`rel_err`] of an f32 output against an f32 reference, for comparing two engine results (fused
/// against composed, vitcore against PyTorch). An all-zero reference is an error, not a pass,
/// unless the output is all zeros too: these comparisons never expect one.
pub fn rel_err_f32(out: &[f32], reference: &[f32]) -> f64 {
    let (o, r) = (to_f64(out), to_f64(reference));
    if r.iter().all(|&v| v == 0.0) && o.iter().any(|&v| v != 0.0) {
        return f64::INFINITY;
    }
    rel_err(&o, &r)
}

// ---------------------------------------------------------------------------------------------
// Inputs
// ---------------------------------------------------------------------------------------------

/// One input of an op under test: f32 values and a shape.
#[derive(Clone, Debug)]
pub struct Input {
    pub data: Vec<f32>,
    pub shape: Vec<usize>,
}

pub fn input(data: Vec<f32>, shape: &[usize]) -> Input {
    assert_eq!(
        data.len(),
        numel(shape),
        "test bug: input data does not fit shape {shape:?}"
    );
    Input {
        data,
        shape: shape.to_vec(),
    }
}

/// Normal values with standard deviation `std`.
pub fn randn(rng: &mut Rng, shape: &[usize], std: f32) -> Input {
    input(rng.normal_vec(numel(shape), std), shape)
}

/// `mean + std · N(0, 1)`.
pub fn randn_around(rng: &mut Rng, shape: &[usize], mean: f32, std: f32) -> Input {
    input(
        rng.normal_vec(numel(shape), std)
            .into_iter()
            .map(|v| v + mean)
            .collect(),
        shape,
    )
}

pub fn tensor(i: &Input) -> Tensor {
    Tensor::from_vec(i.data.clone(), &i.shape).expect("test bug: shape")
}

/// Fill the engine's buffer pool with NaN buffers of the given lengths. Kernels that take scratch
/// buffers from the pool must overwrite every element; a missed element then shows up as NaN,
/// which every error function here turns into a failure. (Only lengths ≥ 4096 are pooled.)
pub fn poison_pool(lens: &[usize]) {
    for &len in lens {
        let ts: Vec<Tensor> = (0..3).map(|_| Tensor::full(&[len], f32::NAN)).collect();
        drop(ts);
    }
}

// ---------------------------------------------------------------------------------------------
// The checker
// ---------------------------------------------------------------------------------------------

/// One comparison: engine vs reference.
#[derive(Clone, Debug)]
pub struct Cmp {
    pub what: String,
    /// 2-norm relative error.
    pub rel: f64,
    /// max-abs error over max-abs reference.
    pub max_rel: f64,
    pub tol: f64,
    pub note: Option<String>,
}

impl Cmp {
    /// Both errors within tolerance (false for NaN, as `NaN <= tol` is false).
    pub fn ok(&self) -> bool {
        self.note.is_none() && self.rel <= self.tol && self.max_rel <= self.tol
    }
    fn line(&self) -> String {
        format!(
            "{}: rel {:.2e}, max_rel {:.2e} (tol {:.0e}){}",
            self.what,
            self.rel,
            self.max_rel,
            self.tol,
            self.note.as_ref().map(|n| format!(" [{n}]")).unwrap_or_default()
        )
    }
}

/// What the checker found. It never panics on a mismatch: callers decide.
#[derive(Clone, Debug)]
pub struct Report {
    pub name: String,
    /// The engine returned an error (building, forward or backward) or the reference disagreed on
    /// the output size.
    pub error: Option<String>,
    pub forward: Option<Cmp>,
    pub grads: Vec<Cmp>,
}

impl Report {
    pub fn forward_ok(&self) -> bool {
        self.error.is_none() && self.forward.as_ref().is_some_and(|c| c.ok())
    }
    pub fn grads_ok(&self) -> bool {
        self.error.is_none() && !self.grads.is_empty() && self.grads.iter().all(|c| c.ok())
    }
    pub fn ok(&self) -> bool {
        self.forward_ok() && self.grads_ok()
    }
    /// A line per failed comparison.
    pub fn failures(&self) -> Vec<String> {
        let mut f = Vec::new();
        if let Some(e) = &self.error {
            f.push(format!("error: {e}"));
        }
        f.extend(
            self.forward
                .iter()
                .chain(&self.grads)
                .filter(|c| !c.ok())
                .map(|c| c.line()),
        );
        f
    }
    pub fn summary(&self) -> String {
        let mut s = format!("[{}]", self.name);
        if let Some(e) = &self.error {
            s += &format!(" error: {e}");
        }
        for c in self.forward.iter().chain(&self.grads) {
            s += &format!("\n    {}{}", if c.ok() { "ok   " } else { "FAIL " }, c.line());
        }
        s
    }
    pub fn result(&self) -> Result<(), String> {
        if self.ok() {
            Ok(())
        } else {
            Err(format!("{} failed:\n  {}", self.name, self.failures().join("\n  ")))
        }
    }
    /// Panic (failing the test) with every failed comparison unless all passed.
    #[track_caller]
    pub fn assert_ok(self) -> Report {
        println!("{}", self.summary());
        if let Err(e) = self.result() {
            panic!("{e}");
        }
        self
    }
}

/// Settings of one check.
#[derive(Clone, Debug)]
pub struct Check {
    pub fwd_tol: f64,
    pub grad_tol: f64,
    /// `None`: finite-difference every input element. `Some(n)`: only `n` random elements per
    /// input (for sizes beyond the GEMM's block sizes, where the full FD would be slow).
    pub fd_samples: Option<usize>,
    /// Seed of the upstream gradient `R` and of the FD sample.
    pub seed: u64,
    /// Inputs (by position) whose gradient is not checked (e.g. a constant-like operand).
    pub skip_grad: Vec<usize>,
}

impl Default for Check {
    fn default() -> Self {
        Check {
            fwd_tol: FWD_TOL,
            grad_tol: GRAD_TOL,
            fd_samples: None,
            seed: 0x5eed,
            skip_grad: Vec::new(),
        }
    }
}

impl Check {
    pub fn tol(fwd_tol: f64, grad_tol: f64) -> Check {
        Check {
            fwd_tol,
            grad_tol,
            ..Check::default()
        }
    }
    pub fn samples(mut self, n: usize) -> Check {
        self.fd_samples = Some(n);
        self
    }

    /// Check forward and gradients of `build` against `reference`.
    ///
    /// `build` records the op(s) under test on a fresh `Graph` whose leaves are `inputs` (same
    /// order); `reference` computes the same output in f64 from the same input values.
    pub fn run<B, R>(&self, name: &str, inputs: &[Input], build: B, reference: R) -> Report
    where
        B: Fn(&mut Graph, &[Var]) -> vitcore::Result<Var>,
        R: Fn(&[Vec<f64>]) -> Vec<f64>,
    {
        let mut report = Report {
            name: name.to_string(),
            error: None,
            forward: None,
            grads: Vec::new(),
        };
        let mut g = Graph::new();
        let vars: Vec<Var> = inputs.iter().map(|i| g.leaf(tensor(i))).collect();
        let out = match build(&mut g, &vars) {
            Ok(v) => v,
            Err(e) => {
                report.error = Some(format!("building the op failed: {e}"));
                return report;
            }
        };
        let y_shape = g.shape(out).to_vec();
        let y = to_f64(g.value(out).data());
        let xs: Vec<Vec<f64>> = inputs.iter().map(|i| to_f64(&i.data)).collect();
        let y_ref = reference(&xs);
        if y_ref.len() != y.len() {
            report.error = Some(format!(
                "engine output has {} elements (shape {y_shape:?}), the reference {}",
                y.len(),
                y_ref.len()
            ));
            return report;
        }
        report.forward = Some(Cmp {
            what: format!("forward {y_shape:?}"),
            rel: rel_err(&y, &y_ref),
            max_rel: max_rel_err(&y, &y_ref),
            tol: self.fwd_tol,
            note: None,
        });

        // (b) gradients: a fresh random upstream gradient R.
        let mut rng = Rng::new(self.seed);
        let r32 = rng.normal_vec(y.len(), 1.0);
        let r64 = to_f64(&r32);
        let grads = match g.backward_with(out, Tensor::from_vec(r32, &y_shape).expect("shape")) {
            Ok(gr) => gr,
            Err(e) => {
                report.error = Some(format!("backward failed: {e}"));
                return report;
            }
        };
        let loss = |xs: &[Vec<f64>]| -> f64 { reference(xs).iter().zip(&r64).map(|(a, b)| a * b).sum() };
        let mut xs_fd = xs.clone();
        for (k, (inp, &v)) in inputs.iter().zip(&vars).enumerate() {
            if self.skip_grad.contains(&k) {
                continue;
            }
            let n = inp.data.len();
            let mut note = None;
            let auto: Vec<f64> = match grads.get(v) {
                Some(t) if t.shape() == inp.shape.as_slice() => to_f64(t.data()),
                Some(t) => {
                    note = Some(format!("gradient has shape {:?}, input {:?}", t.shape(), inp.shape));
                    vec![0.0; n]
                }
                None => {
                    note = Some("no gradient returned".to_string());
                    vec![0.0; n]
                }
            };
            let idx: Vec<usize> = match self.fd_samples {
                Some(s) if s < n => {
                    let mut all: Vec<usize> = (0..n).collect();
                    rng.shuffle(&mut all);
                    all.truncate(s);
                    all.sort_unstable();
                    all
                }
                _ => (0..n).collect(),
            };
            let mut fd = Vec::with_capacity(idx.len());
            for &i in &idx {
                let x0 = xs_fd[k][i];
                let h = FD_STEP * x0.abs().max(1.0);
                let (xp, xm) = (x0 + h, x0 - h);
                xs_fd[k][i] = xp;
                let lp = loss(&xs_fd);
                xs_fd[k][i] = xm;
                let lm = loss(&xs_fd);
                xs_fd[k][i] = x0;
                fd.push((lp - lm) / (xp - xm));
            }
            let auto_at: Vec<f64> = idx.iter().map(|&i| auto[i]).collect();
            // A gradient reported as missing is fine only if the loss truly does not depend on it.
            if note.as_deref() == Some("no gradient returned") && fd.iter().all(|&d| d == 0.0) {
                note = None;
            }
            report.grads.push(Cmp {
                what: format!(
                    "gradient of input {k} {:?}{}",
                    inp.shape,
                    if idx.len() < n {
                        format!(" ({} of {n} elements)", idx.len())
                    } else {
                        String::new()
                    }
                ),
                rel: rel_err(&auto_at, &fd),
                max_rel: max_rel_err(&auto_at, &fd),
                tol: self.grad_tol,
                note,
            });
        }
        report
    }
}

/// [`Check::run`] with the default tolerances (forward 1e-5, gradient 1e-4, full FD).
pub fn gradcheck<B, R>(name: &str, inputs: &[Input], build: B, reference: R) -> Report
where
    B: Fn(&mut Graph, &[Var]) -> vitcore::Result<Var>,
    R: Fn(&[Vec<f64>]) -> Vec<f64>,
{
    Check::default().run(name, inputs, build, reference)
}

// ---------------------------------------------------------------------------------------------
// Index helpers
// ---------------------------------------------------------------------------------------------

pub fn numel(shape: &[usize]) -> usize {
    shape.iter().product()
}

/// Row-major multi-index of flat offset `i`.
pub fn unravel(mut i: usize, shape: &[usize]) -> Vec<usize> {
    let mut idx = vec![0; shape.len()];
    for d in (0..shape.len()).rev() {
        idx[d] = i % shape[d];
        i /= shape[d];
    }
    idx
}

/// Row-major flat offset of a multi-index.
pub fn ravel(idx: &[usize], shape: &[usize]) -> usize {
    idx.iter().zip(shape).fold(0, |acc, (&i, &n)| {
        assert!(i < n, "test bug: index out of range");
        acc * n + i
    })
}

// ---------------------------------------------------------------------------------------------
// f64 references (plain loops, written from the definitions)
// ---------------------------------------------------------------------------------------------

/// Batched `op(A)·op(B)`: leading dims of both shapes are the batch.
pub fn matmul_ref(a: &[f64], ash: &[usize], b: &[f64], bsh: &[usize], ta: bool, tb: bool) -> Vec<f64> {
    let r = ash.len();
    assert_eq!(r, bsh.len());
    let batch = numel(&ash[..r - 2]);
    let (ar, ac) = (ash[r - 2], ash[r - 1]);
    let (br, bc) = (bsh[r - 2], bsh[r - 1]);
    let (m, k) = if ta { (ac, ar) } else { (ar, ac) };
    let n = if tb { br } else { bc };
    assert_eq!(k, if tb { bc } else { br }, "test bug: inner dims");
    let mut c = vec![0.0; batch * m * n];
    for bi in 0..batch {
        let a0 = bi * ar * ac;
        let b0 = bi * br * bc;
        for i in 0..m {
            for j in 0..n {
                let mut s = 0.0;
                for p in 0..k {
                    let av = if ta { a[a0 + p * ac + i] } else { a[a0 + i * ac + p] };
                    let bv = if tb { b[b0 + j * bc + p] } else { b[b0 + p * bc + j] };
                    s += av * bv;
                }
                c[bi * m * n + i * n + j] = s;
            }
        }
    }
    c
}

/// `y[r, o] = Σ_i x[r, i] · w[o, i] + b[o]` (PyTorch layout `w: [out, in]`).
pub fn linear_ref(x: &[f64], w: &[f64], b: Option<&[f64]>, din: usize, dout: usize) -> Vec<f64> {
    let rows = x.len() / din;
    let mut y = vec![0.0; rows * dout];
    for r in 0..rows {
        for o in 0..dout {
            let mut s = b.map_or(0.0, |b| b[o]);
            for i in 0..din {
                s += x[r * din + i] * w[o * din + i];
            }
            y[r * dout + o] = s;
        }
    }
    y
}

/// numpy-style broadcast of `b` (shape aligned to the right, dims 1 or equal) to `out_shape`.
pub fn broadcast_ref(b: &[f64], bsh: &[usize], out_shape: &[usize]) -> Vec<f64> {
    let off = out_shape.len() - bsh.len();
    (0..numel(out_shape))
        .map(|i| {
            let idx = unravel(i, out_shape);
            let bidx: Vec<usize> = (0..bsh.len())
                .map(|d| {
                    assert!(
                        bsh[d] == 1 || bsh[d] == out_shape[off + d],
                        "test bug: not broadcastable"
                    );
                    if bsh[d] == 1 {
                        0
                    } else {
                        idx[off + d]
                    }
                })
                .collect();
            b[ravel(&bidx, bsh)]
        })
        .collect()
}

pub fn add_ref(a: &[f64], b: &[f64]) -> Vec<f64> {
    a.iter().zip(b).map(|(x, y)| x + y).collect()
}

/// Output dim `d` is input dim `perm[d]`: `y[i] = x[j]` with `j[perm[d]] = i[d]`.
pub fn permute_ref(x: &[f64], shape: &[usize], perm: &[usize]) -> Vec<f64> {
    let out_shape: Vec<usize> = perm.iter().map(|&p| shape[p]).collect();
    (0..x.len())
        .map(|i| {
            let oi = unravel(i, &out_shape);
            let mut xi = vec![0; shape.len()];
            for d in 0..perm.len() {
                xi[perm[d]] = oi[d];
            }
            x[ravel(&xi, shape)]
        })
        .collect()
}

/// Concatenate along `axis`.
pub fn concat_ref(parts: &[(&[f64], &[usize])], axis: usize) -> Vec<f64> {
    let mut out_shape = parts[0].1.to_vec();
    out_shape[axis] = parts.iter().map(|p| p.1[axis]).sum();
    (0..numel(&out_shape))
        .map(|i| {
            let mut idx = unravel(i, &out_shape);
            for (data, shape) in parts {
                if idx[axis] < shape[axis] {
                    return data[ravel(&idx, shape)];
                }
                idx[axis] -= shape[axis];
            }
            unreachable!()
        })
        .collect()
}

/// `x[..., index, ...]` along `axis`, which disappears.
pub fn select_ref(x: &[f64], shape: &[usize], axis: usize, index: usize) -> Vec<f64> {
    let mut out_shape = shape.to_vec();
    out_shape.remove(axis);
    (0..numel(&out_shape))
        .map(|i| {
            let mut idx = unravel(i, &out_shape);
            idx.insert(axis, index);
            x[ravel(&idx, shape)]
        })
        .collect()
}

/// Softmax of each row of length `n` (max-subtracted, in f64).
pub fn softmax_ref(x: &[f64], n: usize) -> Vec<f64> {
    let mut y = vec![0.0; x.len()];
    for (xr, yr) in x.chunks(n).zip(y.chunks_mut(n)) {
        let m = xr.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let mut s = 0.0;
        for (o, &v) in yr.iter_mut().zip(xr) {
            *o = (v - m).exp();
            s += *o;
        }
        for o in yr.iter_mut() {
            *o /= s;
        }
    }
    y
}

/// Layer norm of each row of length `d`: biased variance, `eps` inside the square root.
pub fn layernorm_ref(x: &[f64], d: usize, gamma: &[f64], beta: &[f64], eps: f64) -> Vec<f64> {
    let mut y = vec![0.0; x.len()];
    for (xr, yr) in x.chunks(d).zip(y.chunks_mut(d)) {
        let mean = xr.iter().sum::<f64>() / d as f64;
        let var = xr.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / d as f64;
        let inv = 1.0 / (var + eps).sqrt();
        for i in 0..d {
            yr[i] = (xr[i] - mean) * inv * gamma[i] + beta[i];
        }
    }
    y
}

/// `erfc(x)` in f64, ~1e-15: Maclaurin series of erf for |x| < 2.5, continued fraction beyond.
pub fn erfc64(x: f64) -> f64 {
    if x.abs() < 2.5 {
        let (mut term, mut sum, x2) = (x, x, x * x);
        for n in 1..120 {
            term *= -x2 / n as f64;
            let t = term / (2 * n + 1) as f64;
            sum += t;
            if t.abs() < 1e-18 {
                break;
            }
        }
        1.0 - 2.0 / std::f64::consts::PI.sqrt() * sum
    } else {
        // erfc(z) = e^{-z²}/√π · 1/(z + (1/2)/(z + 1/(z + (3/2)/(z + ...)))), z > 0.
        let z = x.abs();
        let mut f = 0.0;
        for k in (1..300).rev() {
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

/// Exact GELU `x·Φ(x) = ½·x·erfc(−x/√2)`.
pub fn gelu_erf_ref(x: f64) -> f64 {
    0.5 * x * erfc64(-x / std::f64::consts::SQRT_2)
}

/// Tanh GELU `½·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))`.
pub fn gelu_tanh_ref(x: f64) -> f64 {
    let u = (2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x * x * x);
    0.5 * x * (1.0 + u.tanh())
}

/// Patchify written as a scatter over the image's pixels: pixel `(b, c, yy, xx)` lands in patch
/// `(yy/P)·(W/P) + xx/P`, feature `(c·P + yy%P)·P + xx%P` (channel, row, col order).
pub fn patchify_ref(x: &[f64], [bn, c, h, w]: [usize; 4], p: usize) -> Vec<f64> {
    let (n, f) = ((h / p) * (w / p), c * p * p);
    let mut y = vec![f64::NAN; bn * n * f];
    for b in 0..bn {
        for ch in 0..c {
            for yy in 0..h {
                for xx in 0..w {
                    let patch = (yy / p) * (w / p) + xx / p;
                    let feat = (ch * p + yy % p) * p + xx % p;
                    y[(b * n + patch) * f + feat] = x[((b * c + ch) * h + yy) * w + xx];
                }
            }
        }
    }
    y
}

/// Naive 2-D convolution, kernel = stride = `p`, no padding: `x [B,C,H,W]`, `wt [D,C,P,P]`,
/// `bias [D]` → `[B, D, H/P, W/P]` (PyTorch's `Conv2d`, cross-correlation).
pub fn conv2d_ref(x: &[f64], [bn, c, h, w]: [usize; 4], wt: &[f64], bias: &[f64], d: usize, p: usize) -> Vec<f64> {
    let (oh, ow) = (h / p, w / p);
    let mut y = vec![0.0; bn * d * oh * ow];
    for b in 0..bn {
        for o in 0..d {
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut s = bias[o];
                    for ch in 0..c {
                        for ky in 0..p {
                            for kx in 0..p {
                                s += wt[((o * c + ch) * p + ky) * p + kx]
                                    * x[((b * c + ch) * h + oy * p + ky) * w + ox * p + kx];
                            }
                        }
                    }
                    y[((b * d + o) * oh + oy) * ow + ox] = s;
                }
            }
        }
    }
    y
}

/// Mean cross-entropy of logits `[B, C]` (row-major) with label smoothing `eps`:
/// `q = (1−eps)·onehot + eps/C`, loss = mean_b Σ_c −q_c · log_softmax(z_b)_c.
pub fn cross_entropy_ref(z: &[f64], c: usize, labels: &[u32], eps: f64) -> f64 {
    let b = labels.len();
    let mut total = 0.0;
    for (r, zr) in z.chunks(c).enumerate() {
        let m = zr.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let lse = m + zr.iter().map(|v| (v - m).exp()).sum::<f64>().ln();
        for (k, &zk) in zr.iter().enumerate() {
            let q = eps / c as f64 + if k == labels[r] as usize { 1.0 - eps } else { 0.0 };
            total -= q * (zk - lse);
        }
    }
    total / b as f64
}
