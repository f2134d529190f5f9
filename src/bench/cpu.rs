//! The CPU cases of `vitcore bench kernels`: every op's public CPU entry point (`ops::*`,
//! `optim::Adam`) at the ViT's shapes and at large shapes, timed with `Instant`, compared with
//! the copy bandwidth measured in the same run (memory-bound kernels) or the CPU's theoretical
//! peak (matrix products), and validated after timing against the f64 references of `check`.
//!
//! Each case builds its input sets only when it runs (a `--filter` that skips it allocates
//! nothing), and returns its buffers to the system when done: the largest cases hold a few
//! hundred MB each, and the buffer pool would otherwise keep them all.

use super::check::{self, Checker, COMPOSITE_RTOL, EPS, SAMPLES, TRANSCENDENTAL_RTOL};
use super::shapes::{self, GemmProduct, CLASSES, DROPOUT, DROPOUT_SEED, IMAGE, LN_EPS, SMOOTHING};
use super::{
    cpu_info, cpu_last_level_cache, cpu_peak_gflops, git_commit, input_sets, measure, say, select, table_header,
    table_row, BenchOptions, Bound, CaseInfo, DeviceInfo, Phase, Plan, Record, Report, Timing, Validation, Yardstick,
};
use crate::autograd::{Graph, ParamStore};
use crate::backend::cpu::pool;
use crate::error::{Error, Result};
use crate::ops::dropout::Mask;
use crate::ops::{
    add, attention, cross_entropy, dropout, gelu, layernorm, linear, matmul, patchify, softmax, GeluKind,
};
use crate::optim::{Adam, AdamConfig};
use crate::rng::{derive_seed, hash_uniform};
use crate::tensor::{numel, Tensor};
use rayon::prelude::*;
use std::collections::HashMap;
use std::hint::black_box;
use std::rc::Rc;
use std::time::Instant;

// ---------------------------------------------------------------------------------------------
// Cases
// ---------------------------------------------------------------------------------------------

/// A benchmark ready to run: its input sets, one run of the kernel on a set, and the
/// validation (the kernel run once more on set 0, compared with the reference).
pub(crate) trait Runnable {
    fn sets(&self) -> usize;
    fn run(&mut self, set: usize) -> Result<()>;
    fn validate(&mut self) -> Result<Checker>;
}

struct Bench<S, R, V> {
    sets: Vec<S>,
    run: R,
    validate: V,
}

impl<S, R, V> Runnable for Bench<S, R, V>
where
    R: FnMut(&mut S) -> Result<()>,
    V: FnMut(&mut S) -> Result<Checker>,
{
    fn sets(&self) -> usize {
        self.sets.len()
    }
    fn run(&mut self, set: usize) -> Result<()> {
        (self.run)(&mut self.sets[set])
    }
    fn validate(&mut self) -> Result<Checker> {
        (self.validate)(&mut self.sets[0])
    }
}

/// Where a case sizes its input rotation.
pub(crate) struct Env {
    quick: bool,
    cache_bytes: u64,
}

impl Env {
    fn sets(&self, set_bytes: usize) -> usize {
        input_sets(set_bytes as f64, self.cache_bytes, self.quick)
    }
}

/// Builds a case's input sets and returns it ready to run.
type Prepare = Box<dyn FnOnce(&Env) -> Result<Box<dyn Runnable>>>;

/// One benchmark: what it measures, and how to build it (called only when it is selected).
pub(crate) struct Case {
    pub info: CaseInfo,
    prepare: Prepare,
}

type MakeSet = Box<dyn Fn(u64) -> Result<Vec<Tensor>>>;
type RunOp = Box<dyn Fn(&[Tensor]) -> Result<Vec<Tensor>>>;
type CheckOp = Box<dyn Fn(&[Tensor], &[Tensor], &mut Checker) -> Result<()>>;

/// A case over tensors: `make_set(seed)` builds one input set (`set_bytes` of which the kernel
/// reads), `run` calls the kernel and returns its outputs, `check` compares outputs with the
/// reference.
struct TensorCase {
    info: CaseInfo,
    set_bytes: usize,
    make_set: MakeSet,
    run: RunOp,
    check: CheckOp,
}

impl TensorCase {
    fn into_case(self) -> Case {
        let TensorCase {
            info,
            set_bytes,
            make_set,
            run,
            check,
        } = self;
        Case {
            info,
            prepare: Box::new(move |env: &Env| {
                let sets = (0..env.sets(set_bytes))
                    .map(|s| make_set(derive_seed(0xbe9c, s as u64)))
                    .collect::<Result<Vec<_>>>()?;
                let run = Rc::new(run);
                let run2 = run.clone();
                Ok(Box::new(Bench {
                    sets,
                    run: move |xs: &mut Vec<Tensor>| {
                        black_box(run(xs)?);
                        Ok(())
                    },
                    validate: move |xs: &mut Vec<Tensor>| {
                        let out = run2(xs)?;
                        let mut ck = Checker::new();
                        check(xs, &out, &mut ck)?;
                        Ok(ck)
                    },
                }) as Box<dyn Runnable>)
            }),
        }
    }
}

/// A tensor of values uniform in `[lo, hi)`, a function of `(seed, index)` only: repeatable, and
/// generated in parallel (the large cases need hundreds of MB of inputs).
pub(crate) fn uniform(shape: &[usize], lo: f32, hi: f32, seed: u64) -> Result<Tensor> {
    const BLOCK: usize = 1 << 16;
    let mut v = vec![0.0f32; numel(shape)];
    v.par_chunks_mut(BLOCK).enumerate().for_each(|(b, chunk)| {
        for (j, x) in chunk.iter_mut().enumerate() {
            *x = lo + (hi - lo) * hash_uniform(seed, (b * BLOCK + j) as u64);
        }
    });
    Tensor::from_vec(v, shape)
}

/// A tensor that only lends its shape to a kernel that does not read it (e.g. `x` of the linear
/// layer's dX). Zeroed by the allocator lazily: its pages are never touched.
pub(crate) fn shape_only(shape: &[usize]) -> Result<Tensor> {
    Tensor::from_vec(vec![0.0f32; numel(shape)], shape)
}

/// The `i`-th output of a kernel that returned fewer than expected: an error, not a panic.
fn output(outs: &[Tensor], i: usize) -> Result<&Tensor> {
    outs.get(i).ok_or_else(|| {
        Error::config(format!(
            "benchmark: the kernel returned {} outputs, not {}",
            outs.len(),
            i + 1
        ))
    })
}

fn take(t: Option<Tensor>, what: &str) -> Result<Tensor> {
    t.ok_or_else(|| Error::config(format!("benchmark: the backward returned no {what}")))
}

fn dims_str(shape: &[usize]) -> String {
    format!("{shape:?}").replace(' ', "")
}

const F32: usize = 4;

// ---- matrix products -------------------------------------------------------------------------

/// `C = op(A)·op(B) (+ bias)` through `op`, validated as a GEMM with `p.dims` on inputs 0, 1
/// (`p`'s operands; then, with `bias`, a bias of `p.dims.n`; then, with `dummy`, a tensor that
/// only lends its shape).
fn product(
    p: GemmProduct,
    bias: bool,
    dummy: Option<Vec<usize>>,
    op: impl Fn(&[Tensor]) -> Result<Tensor> + 'static,
) -> TensorCase {
    let GemmProduct {
        kernel,
        phase,
        shape,
        dims: d,
        a: a_shape,
        b: b_shape,
    } = p;
    let (na, nb, nc) = (numel(&a_shape), numel(&b_shape), d.batch * d.m * d.n);
    let n_bias = if bias { d.n } else { 0 };
    let info = CaseInfo {
        kernel,
        phase,
        shape,
        bytes: (F32 * (na + nb + nc + n_bias)) as f64,
        flops: 2.0 * (d.batch * d.m * d.n) as f64 * d.k as f64,
        bound: Bound::Compute,
    };
    TensorCase {
        info,
        set_bytes: F32 * (na + nb + n_bias),
        make_set: Box::new(move |seed| {
            let mut v = vec![
                uniform(&a_shape, -1.0, 1.0, derive_seed(seed, 0))?,
                uniform(&b_shape, -1.0, 1.0, derive_seed(seed, 1))?,
            ];
            if bias {
                v.push(uniform(&[d.n], -1.0, 1.0, derive_seed(seed, 2))?);
            }
            if let Some(s) = &dummy {
                v.push(shape_only(s)?);
            }
            Ok(v)
        }),
        run: Box::new(move |xs| Ok(vec![op(xs)?])),
        check: Box::new(move |xs, out, ck| {
            let bias = if bias { Some(xs[2].data()) } else { None };
            check::gemm(ck, "c", xs[0].data(), xs[1].data(), output(out, 0)?.data(), d, bias);
            Ok(())
        }),
    }
}

/// The linear layer (see `shapes::linear_products`): forward, dX, dW.
fn linear_cases(label: &str, rows: usize, din: usize, dout: usize) -> Vec<TensorCase> {
    let [fwd, dx, dw] = shapes::linear_products(label, rows, din, dout);
    vec![
        product(fwd, true, None, |xs| linear::forward(&xs[0], &xs[1], Some(&xs[2]))),
        // dX = G·W: inputs G, W; x only lends its shape.
        product(dx, false, Some(vec![rows, din]), |xs| {
            let [dx, _, _] = linear::backward(&xs[0], &xs[2], &xs[1], [true, false, false])?;
            take(dx, "dX")
        }),
        // dW = Gᵀ·X: inputs G, X; W only lends its shape.
        product(dw, false, Some(vec![dout, din]), |xs| {
            let [_, dw, _] = linear::backward(&xs[0], &xs[1], &xs[2], [false, true, false])?;
            take(dw, "dW")
        }),
    ]
}

/// `ops::matmul`'s products of `shapes::matmul_products`, each with its own transposes.
fn matmul_cases(label: &str, batch: usize, m: usize, n: usize, k: usize, tb: bool, bwd: bool) -> Vec<TensorCase> {
    shapes::matmul_products(label, batch, m, n, k, tb, bwd)
        .into_iter()
        .map(|p| {
            let d = p.dims;
            product(p, false, None, move |xs| matmul::matmul(&xs[0], &xs[1], d.ta, d.tb))
        })
        .collect()
}

// ---- element-wise ----------------------------------------------------------------------------

/// A memory-bound case whose inputs are uniform tensors of the given shapes and ranges.
fn elementwise(
    kernel: &'static str,
    phase: Phase,
    shape: String,
    inputs: Vec<(Vec<usize>, f32, f32)>,
    out_elems: usize,
    run: impl Fn(&[Tensor]) -> Result<Vec<Tensor>> + 'static,
    check: impl Fn(&[Tensor], &[Tensor], &mut Checker) -> Result<()> + 'static,
) -> TensorCase {
    let in_elems: usize = inputs.iter().map(|(s, _, _)| numel(s)).sum();
    TensorCase {
        info: CaseInfo {
            kernel,
            phase,
            shape,
            bytes: (F32 * (in_elems + out_elems)) as f64,
            flops: 0.0,
            bound: Bound::Memory,
        },
        set_bytes: F32 * in_elems,
        make_set: Box::new(move |seed| {
            inputs
                .iter()
                .enumerate()
                .map(|(j, (s, lo, hi))| uniform(s, *lo, *hi, derive_seed(seed, j as u64)))
                .collect()
        }),
        run: Box::new(run),
        check: Box::new(check),
    }
}

/// Check sampled elements of output 0 against `want(i) -> (value, tolerance)`.
fn check_elements(ck: &mut Checker, part: &str, out: &Tensor, want: impl Fn(usize) -> (f64, f64)) {
    let d = out.data();
    for i in check::sample_indices(d.len(), SAMPLES) {
        let (w, tol) = want(i);
        ck.close(part, i, d[i], w, tol);
    }
}

fn gelu_cases(label: &str, shape: &[usize]) -> Vec<TensorCase> {
    let n = numel(shape);
    let s = format!("{label} {}", dims_str(shape));
    vec![
        elementwise(
            "gelu",
            Phase::Fwd,
            s.clone(),
            vec![(shape.to_vec(), -5.0, 5.0)],
            n,
            |xs| Ok(vec![gelu::forward(&xs[0], GeluKind::Erf)?]),
            |xs, out, ck| {
                let x = xs[0].data();
                check_elements(ck, "y", output(out, 0)?, |i| {
                    let w = check::gelu(x[i] as f64);
                    (w, TRANSCENDENTAL_RTOL * w.abs() + 1e-30)
                });
                Ok(())
            },
        ),
        elementwise(
            "gelu",
            Phase::Bwd,
            s,
            vec![(shape.to_vec(), -1.0, 1.0), (shape.to_vec(), -5.0, 5.0)],
            n,
            |xs| Ok(vec![gelu::backward(&xs[0], &xs[1], GeluKind::Erf)?]),
            |xs, out, ck| {
                let (g, x) = (xs[0].data(), xs[1].data());
                check_elements(ck, "dx", output(out, 0)?, |i| {
                    let (d, mag) = check::gelu_grad(x[i] as f64);
                    let gv = g[i] as f64;
                    (gv * d, TRANSCENDENTAL_RTOL * gv.abs() * mag + 1e-30)
                });
                Ok(())
            },
        ),
    ]
}

fn gelu_dropout_cases(label: &str, shape: &[usize]) -> Vec<TensorCase> {
    let n = numel(shape);
    let s = format!("{label} {}", dims_str(shape));
    let factor = |i: usize| check::dropout_factor(DROPOUT_SEED, i, DROPOUT);
    vec![
        elementwise(
            "gelu_dropout",
            Phase::Fwd,
            s.clone(),
            vec![(shape.to_vec(), -5.0, 5.0)],
            n,
            |xs| {
                Ok(vec![gelu::forward_dropout(
                    &xs[0],
                    GeluKind::Erf,
                    &Mask::new(DROPOUT, DROPOUT_SEED)?,
                )?])
            },
            move |xs, out, ck| {
                let x = xs[0].data();
                check_elements(ck, "y", output(out, 0)?, |i| {
                    let w = check::gelu(x[i] as f64) * factor(i);
                    (w, TRANSCENDENTAL_RTOL * w.abs() + 1e-30)
                });
                Ok(())
            },
        ),
        elementwise(
            "gelu_dropout",
            Phase::Bwd,
            s,
            vec![(shape.to_vec(), -1.0, 1.0), (shape.to_vec(), -5.0, 5.0)],
            n,
            |xs| {
                let mask = Mask::new(DROPOUT, DROPOUT_SEED)?;
                Ok(vec![gelu::backward_dropout(&xs[0], &xs[1], GeluKind::Erf, &mask)?])
            },
            move |xs, out, ck| {
                let (g, x) = (xs[0].data(), xs[1].data());
                check_elements(ck, "dx", output(out, 0)?, |i| {
                    let (d, mag) = check::gelu_grad(x[i] as f64);
                    let gf = g[i] as f64 * factor(i);
                    (gf * d, TRANSCENDENTAL_RTOL * gf.abs() * mag + 1e-30)
                });
                Ok(())
            },
        ),
    ]
}

/// Dropout (forward, and its backward: the same mask applied to the gradient) and the fused
/// dropout + residual add (its backward is plain dropout's plus a pass-through, so not repeated).
fn dropout_cases(label: &str, shape: &[usize]) -> Vec<TensorCase> {
    let n = numel(shape);
    let s = format!("{label} {}", dims_str(shape));
    let factor = |i: usize| check::dropout_factor(DROPOUT_SEED, i, DROPOUT);
    let masked = move |xs: &[Tensor], out: &[Tensor], ck: &mut Checker| -> Result<()> {
        let x = xs[0].data();
        check_elements(ck, "y", output(out, 0)?, |i| {
            let w = x[i] as f64 * factor(i);
            (w, 2.0 * EPS * w.abs())
        });
        Ok(())
    };
    let mut cases = Vec::new();
    for phase in [Phase::Fwd, Phase::Bwd] {
        cases.push(elementwise(
            "dropout",
            phase,
            s.clone(),
            vec![(shape.to_vec(), -1.0, 1.0)],
            n,
            |xs| Ok(vec![dropout::apply_mask(&xs[0], DROPOUT, DROPOUT_SEED)?]),
            masked,
        ));
    }
    cases.push(elementwise(
        "dropout_add",
        Phase::Fwd,
        s,
        vec![(shape.to_vec(), -1.0, 1.0), (shape.to_vec(), -1.0, 1.0)],
        n,
        |xs| Ok(vec![dropout::add_masked(&xs[0], &xs[1], DROPOUT, DROPOUT_SEED)?]),
        move |xs, out, ck| {
            let (r, x) = (xs[0].data(), xs[1].data());
            check_elements(ck, "y", output(out, 0)?, |i| {
                let (rv, xv) = (r[i] as f64, x[i] as f64 * factor(i));
                (rv + xv, 2.0 * EPS * (rv.abs() + xv.abs()))
            });
            Ok(())
        },
    ));
    cases
}

/// The residual add (equal shapes), the position-embedding add (`b` broadcast over the batch),
/// and `sum_rows` (the bias gradient: column sums of `[rows, cols]`).
fn add_cases(label: &str, a_shape: &[usize], b_shape: &[usize], sum_shape: (usize, usize)) -> Vec<TensorCase> {
    let n = numel(a_shape);
    let block = numel(b_shape);
    let add_check = move |xs: &[Tensor], out: &[Tensor], ck: &mut Checker| -> Result<()> {
        let (a, b) = (xs[0].data(), xs[1].data());
        check_elements(ck, "y", output(out, 0)?, |i| {
            let w = a[i] as f64 + b[i % block] as f64;
            (w, EPS * w.abs())
        });
        Ok(())
    };
    let (rows, cols) = sum_shape;
    vec![
        elementwise(
            "add",
            Phase::Fwd,
            format!("{label} {}", dims_str(a_shape)),
            vec![(a_shape.to_vec(), -1.0, 1.0), (a_shape.to_vec(), -1.0, 1.0)],
            n,
            |xs| Ok(vec![add::add_broadcast(&xs[0], &xs[1])?]),
            move |xs, out, ck| {
                let (a, b) = (xs[0].data(), xs[1].data());
                check_elements(ck, "y", output(out, 0)?, |i| {
                    let w = a[i] as f64 + b[i] as f64;
                    (w, EPS * w.abs())
                });
                Ok(())
            },
        ),
        elementwise(
            "add_broadcast",
            Phase::Fwd,
            format!("{label} {}+{}", dims_str(a_shape), dims_str(b_shape)),
            vec![(a_shape.to_vec(), -1.0, 1.0), (b_shape.to_vec(), -1.0, 1.0)],
            n,
            |xs| Ok(vec![add::add_broadcast(&xs[0], &xs[1])?]),
            add_check,
        ),
        elementwise(
            "sum_rows",
            Phase::Bwd,
            format!("{label} {}", dims_str(&[rows, cols])),
            vec![(vec![rows, cols], -1.0, 1.0)],
            cols,
            move |xs| Ok(vec![add::sum_rows(&xs[0], cols)?]),
            |xs, out, ck| {
                check::column_sums(ck, "db", xs[0].data(), output(out, 0)?.data());
                Ok(())
            },
        ),
    ]
}

// ---- row-wise --------------------------------------------------------------------------------

/// Sampled rows of a `[rows, n]` output.
fn sample_rows(rows: usize) -> Vec<usize> {
    check::sample_indices(rows, 64)
}

fn softmax_cases(label: &str, shape: &[usize]) -> Vec<TensorCase> {
    let n = *shape.last().unwrap_or(&1);
    let total = numel(shape);
    let s = format!("{label} {}", dims_str(shape));
    let fwd = elementwise(
        "softmax",
        Phase::Fwd,
        s.clone(),
        vec![(shape.to_vec(), -4.0, 4.0)],
        total,
        |xs| Ok(vec![softmax::forward(&xs[0])?]),
        move |xs, out, ck| {
            let (x, y) = (xs[0].data(), output(out, 0)?.data());
            for r in sample_rows(total / n) {
                let row = r * n..(r + 1) * n;
                check::row_normwise(
                    ck,
                    "y",
                    r * n,
                    &y[row.clone()],
                    &check::softmax_row(&x[row]),
                    COMPOSITE_RTOL,
                );
            }
            Ok(())
        },
    );
    // The backward reads G and the forward's output y (a real softmax output, made per set).
    let bwd_shape = shape.to_vec();
    let bwd = TensorCase {
        info: CaseInfo {
            kernel: "softmax",
            phase: Phase::Bwd,
            shape: s,
            bytes: (F32 * 3 * total) as f64,
            flops: 0.0,
            bound: Bound::Memory,
        },
        set_bytes: F32 * 2 * total,
        make_set: Box::new(move |seed| softmax_bwd_set(&bwd_shape, seed)),
        run: Box::new(|xs| Ok(vec![softmax::backward(&xs[0], &xs[1])?])),
        check: Box::new(move |xs, out, ck| {
            let (g, y, dx) = (xs[0].data(), xs[1].data(), output(out, 0)?.data());
            for r in sample_rows(total / n) {
                let (gr, yr) = (&g[r * n..(r + 1) * n], &y[r * n..(r + 1) * n]);
                let dot: f64 = gr.iter().zip(yr).map(|(&a, &b)| a as f64 * b as f64).sum();
                let want: Vec<f64> = gr.iter().zip(yr).map(|(&a, &b)| b as f64 * (a as f64 - dot)).collect();
                check::row_normwise(ck, "dx", r * n, &dx[r * n..(r + 1) * n], &want, COMPOSITE_RTOL);
            }
            Ok(())
        }),
    };
    vec![fwd, bwd]
}

/// A softmax backward's inputs: G, and the forward's output y (a real softmax output, so the
/// kernel sees rows that sum to 1). The GPU case uses it too: both time the same inputs.
pub(crate) fn softmax_bwd_set(shape: &[usize], seed: u64) -> Result<Vec<Tensor>> {
    let g = uniform(shape, -1.0, 1.0, derive_seed(seed, 0))?;
    let y = softmax::forward(&uniform(shape, -4.0, 4.0, derive_seed(seed, 1))?)?;
    Ok(vec![g, y])
}

/// A layer-norm backward's inputs: G, x, gamma, and the forward's statistics of x (mean, rstd).
/// The GPU case uses it too: both time the same inputs.
pub(crate) fn layernorm_bwd_set(rows: usize, d: usize, seed: u64) -> Result<Vec<Tensor>> {
    let g = uniform(&[rows, d], -1.0, 1.0, derive_seed(seed, 0))?;
    let x = uniform(&[rows, d], -3.0, 3.0, derive_seed(seed, 1))?;
    let gamma = uniform(&[d], 0.5, 1.5, derive_seed(seed, 2))?;
    let (_, mean, rstd) = layernorm::forward(&x, &gamma, &Tensor::zeros(&[d]), LN_EPS)?;
    Ok(vec![g, x, gamma, mean, rstd])
}

/// Row `r`'s mean and 1/√(var + eps) in f64.
fn row_stats(x: &[f32]) -> (f64, f64) {
    let d = x.len() as f64;
    let mean = x.iter().map(|&v| v as f64).sum::<f64>() / d;
    let var = x.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / d;
    (mean, 1.0 / (var + LN_EPS as f64).sqrt())
}

fn layernorm_cases(label: &str, rows: usize, d: usize) -> Vec<TensorCase> {
    let s = format!("{label} {}", dims_str(&[rows, d]));
    let fwd = elementwise(
        "layernorm",
        Phase::Fwd,
        s.clone(),
        vec![(vec![rows, d], -3.0, 3.0), (vec![d], 0.5, 1.5), (vec![d], -0.5, 0.5)],
        rows * d + 2 * rows,
        |xs| {
            let (y, mean, rstd) = layernorm::forward(&xs[0], &xs[1], &xs[2], LN_EPS)?;
            Ok(vec![y, mean, rstd])
        },
        move |xs, out, ck| {
            let (x, gam, bet) = (xs[0].data(), xs[1].data(), xs[2].data());
            let (y, mean, rstd) = (output(out, 0)?.data(), output(out, 1)?.data(), output(out, 2)?.data());
            for r in sample_rows(rows) {
                let xr = &x[r * d..(r + 1) * d];
                let (mu, rs) = row_stats(xr);
                let want: Vec<f64> = (0..d)
                    .map(|i| (xr[i] as f64 - mu) * rs * gam[i] as f64 + bet[i] as f64)
                    .collect();
                check::row_normwise(ck, "y", r * d, &y[r * d..(r + 1) * d], &want, COMPOSITE_RTOL);
                let abs_sum: f64 = xr.iter().map(|&v| (v as f64).abs()).sum();
                ck.close("mean", r, mean[r], mu, (d as f64 + 2.0) * EPS * abs_sum / d as f64);
                ck.close("rstd", r, rstd[r], rs, COMPOSITE_RTOL * rs);
            }
            Ok(())
        },
    );
    let bwd = TensorCase {
        info: CaseInfo {
            kernel: "layernorm",
            phase: Phase::Bwd,
            shape: s,
            bytes: (F32 * (3 * rows * d + 2 * rows + 3 * d)) as f64,
            flops: 0.0,
            bound: Bound::Memory,
        },
        set_bytes: F32 * (2 * rows * d + 2 * rows + d),
        make_set: Box::new(move |seed| layernorm_bwd_set(rows, d, seed)),
        run: Box::new(|xs| {
            let (dx, dgamma, dbeta) = layernorm::backward(&xs[0], &xs[1], &xs[2], &xs[3], &xs[4])?;
            Ok(vec![dx, dgamma, dbeta])
        }),
        check: Box::new(move |xs, out, ck| {
            let (g, x, gam, md, rd) = (xs[0].data(), xs[1].data(), xs[2].data(), xs[3].data(), xs[4].data());
            let (dx, dgamma, dbeta) = (output(out, 0)?.data(), output(out, 1)?.data(), output(out, 2)?.data());
            let xhat = |r: usize, i: usize| (x[r * d + i] as f64 - md[r] as f64) * rd[r] as f64;
            for r in sample_rows(rows) {
                let dxh: Vec<f64> = (0..d).map(|i| g[r * d + i] as f64 * gam[i] as f64).collect();
                let m1 = dxh.iter().sum::<f64>() / d as f64;
                let m2 = (0..d).map(|i| dxh[i] * xhat(r, i)).sum::<f64>() / d as f64;
                let want: Vec<f64> = (0..d).map(|i| rd[r] as f64 * (dxh[i] - m1 - xhat(r, i) * m2)).collect();
                check::row_normwise(ck, "dx", r * d, &dx[r * d..(r + 1) * d], &want, COMPOSITE_RTOL);
            }
            // dγ, dβ: sums over all rows, under the summation bound.
            for i in check::sample_indices(d, 64) {
                let (mut sg, mut ag, mut qg, mut sb, mut ab, mut qb) = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0);
                for r in 0..rows {
                    let gv = g[r * d + i] as f64;
                    let t = gv * xhat(r, i);
                    (sg, ag, qg) = (sg + t, ag + t.abs(), qg + t * t);
                    (sb, ab, qb) = (sb + gv, ab + gv.abs(), qb + gv * gv);
                }
                // Each dγ term is itself three f32 roundings: two more "terms" of slack.
                ck.close("dgamma", i, dgamma[i], sg, check::sum_tolerance(rows + 2, ag, qg));
                ck.close("dbeta", i, dbeta[i], sb, check::sum_tolerance(rows, ab, qb));
            }
            Ok(())
        }),
    };
    vec![fwd, bwd]
}

// ---- attention -------------------------------------------------------------------------------

/// One (image, head) of attention in f64, from the packed `qkv [B, T, 3D]`: the probabilities
/// `P [T, T]`, the dropout factors, and q, k, v `[T, Dh]` (for the backward's reference).
struct HeadRef {
    p: Vec<f64>,
    factors: Vec<f64>,
    q: Vec<f64>,
    k: Vec<f64>,
    v: Vec<f64>,
}

fn head_ref(qkv: &[f32], bi: usize, n: usize, t: usize, d: usize, heads: usize) -> HeadRef {
    let dh = d / heads;
    let at = |i: usize, which: usize, c: usize| qkv[(bi * t + i) * 3 * d + which * d + n * dh + c] as f64;
    let part = |which| (0..t * dh).map(|e| at(e / dh, which, e % dh)).collect::<Vec<f64>>();
    let (q, k, v) = (part(0), part(1), part(2));
    let scale = 1.0 / (dh as f64).sqrt();
    let mut p = vec![0.0f64; t * t];
    for i in 0..t {
        let s: Vec<f64> = (0..t)
            .map(|j| scale * (0..dh).map(|c| q[i * dh + c] * k[j * dh + c]).sum::<f64>())
            .collect();
        let m = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let e: Vec<f64> = s.iter().map(|v| (v - m).exp()).collect();
        let sum: f64 = e.iter().sum();
        for j in 0..t {
            p[i * t + j] = e[j] / sum;
        }
    }
    let bh = bi * heads + n;
    let factors = (0..t * t)
        .map(|ij| check::dropout_factor(DROPOUT_SEED, bh * t * t + ij, DROPOUT))
        .collect();
    HeadRef { p, factors, q, k, v }
}

/// Compare one head's block of a `[.., T, width]` output (columns `col..col + dh` of each of the
/// head's `T` rows, starting at row `row0`), norm-wise over the block.
#[allow(clippy::too_many_arguments)]
fn head_block(
    ck: &mut Checker,
    part: &str,
    got: &[f32],
    want: &[f64],
    row0: usize,
    width: usize,
    col: usize,
    t: usize,
    dh: usize,
) {
    let scale = want.iter().fold(0.0f64, |a, &v| a.max(v.abs()));
    let tol = COMPOSITE_RTOL * scale + f64::MIN_POSITIVE;
    for i in 0..t {
        for c in 0..dh {
            let idx = (row0 + i) * width + col + c;
            ck.close(part, idx, got[idx], want[i * dh + c], tol);
        }
    }
}

fn attention_cases(label: &str, b: usize, t: usize, d: usize, heads: usize) -> Vec<TensorCase> {
    let dh = d / heads;
    let s = format!("{label} {} h{heads}", dims_str(&[b, t, 3 * d]));
    let (qkv_n, out_n, probs_n) = (b * t * 3 * d, b * t * d, b * heads * t * t);
    // Q·Kᵀ and P·V per head, forward; four such products backward.
    let head_flops = 2.0 * 2.0 * (t * t * dh) as f64;
    let sampled_heads = move || check::sample_indices(b * heads, 6);
    let mut fwd = elementwise(
        "attention",
        Phase::Fwd,
        s.clone(),
        vec![(vec![b, t, 3 * d], -1.0, 1.0)],
        out_n + probs_n,
        move |xs| {
            let (out, probs) = attention::forward(&xs[0], heads, DROPOUT, DROPOUT_SEED)?;
            Ok(vec![out, probs])
        },
        move |xs, outs, ck| {
            let (qkv, out, probs) = (xs[0].data(), output(outs, 0)?.data(), output(outs, 1)?.data());
            for bh in sampled_heads() {
                let (bi, n) = (bh / heads, bh % heads);
                let h = head_ref(qkv, bi, n, t, d, heads);
                for i in 0..t {
                    let off = (bh * t + i) * t;
                    check::row_normwise(
                        ck,
                        "probs",
                        off,
                        &probs[off..off + t],
                        &h.p[i * t..(i + 1) * t],
                        COMPOSITE_RTOL,
                    );
                }
                let o: Vec<f64> = (0..t * dh)
                    .map(|e| {
                        let (i, c) = (e / dh, e % dh);
                        (0..t)
                            .map(|j| h.p[i * t + j] * h.factors[i * t + j] * h.v[j * dh + c])
                            .sum()
                    })
                    .collect();
                head_block(ck, "out", out, &o, bi * t, d, n * dh, t, dh);
            }
            Ok(())
        },
    );
    fwd.info.flops = head_flops * (b * heads) as f64;

    let bwd = TensorCase {
        info: CaseInfo {
            kernel: "attention",
            phase: Phase::Bwd,
            shape: s,
            bytes: (F32 * (out_n + qkv_n + probs_n + qkv_n)) as f64,
            flops: 2.0 * head_flops * (b * heads) as f64,
            bound: Bound::Memory,
        },
        set_bytes: F32 * (out_n + qkv_n + probs_n),
        // G, qkv and the forward's probabilities of that qkv.
        make_set: Box::new(move |seed| {
            let g = uniform(&[b, t, d], -1.0, 1.0, derive_seed(seed, 0))?;
            let qkv = uniform(&[b, t, 3 * d], -1.0, 1.0, derive_seed(seed, 1))?;
            let (_, probs) = attention::forward(&qkv, heads, DROPOUT, DROPOUT_SEED)?;
            Ok(vec![g, qkv, probs])
        }),
        run: Box::new(move |xs| {
            Ok(vec![attention::backward(
                &xs[0],
                &xs[1],
                &xs[2],
                heads,
                DROPOUT,
                DROPOUT_SEED,
            )?])
        }),
        check: Box::new(move |xs, outs, ck| {
            let (g, qkv, dqkv) = (xs[0].data(), xs[1].data(), output(outs, 0)?.data());
            let scale = 1.0 / (dh as f64).sqrt();
            for bh in check::sample_indices(b * heads, 6) {
                let (bi, n) = (bh / heads, bh % heads);
                let h = head_ref(qkv, bi, n, t, d, heads);
                let go = |i: usize, c: usize| g[(bi * t + i) * d + n * dh + c] as f64;
                let mut dq = vec![0.0f64; t * dh];
                let mut dk = vec![0.0f64; t * dh];
                let mut dv = vec![0.0f64; t * dh];
                for i in 0..t {
                    // dP̃_ij = ⟨G_i, v_j⟩, dP = dP̃ ⊙ factors, dS = P ⊙ (dP − ⟨P_i, dP_i⟩) / √Dh.
                    let dp: Vec<f64> = (0..t)
                        .map(|j| h.factors[i * t + j] * (0..dh).map(|c| go(i, c) * h.v[j * dh + c]).sum::<f64>())
                        .collect();
                    let rowdot: f64 = (0..t).map(|j| h.p[i * t + j] * dp[j]).sum();
                    for j in 0..t {
                        let ds = h.p[i * t + j] * (dp[j] - rowdot) * scale;
                        let pd = h.p[i * t + j] * h.factors[i * t + j];
                        for c in 0..dh {
                            dq[i * dh + c] += ds * h.k[j * dh + c];
                            dk[j * dh + c] += ds * h.q[i * dh + c];
                            dv[j * dh + c] += pd * go(i, c);
                        }
                    }
                }
                for (w, (part, want)) in [("dq", &dq), ("dk", &dk), ("dv", &dv)].into_iter().enumerate() {
                    head_block(ck, part, dqkv, want, bi * t, 3 * d, w * d + n * dh, t, dh);
                }
            }
            Ok(())
        }),
    };
    vec![roofline(fwd), roofline(bwd)]
}

/// Attention is neither a plain product nor a plain stream: it is held against whichever
/// yardstick bounds it at this shape on this machine (see [`CaseInfo::resolve`]). With Dh = 2
/// (the seed preset) it moves bytes; with Dh = 64 (ViT-B) it computes.
fn roofline(mut c: TensorCase) -> TensorCase {
    c.info.bound = Bound::Roofline;
    c
}

// ---- patchify, cross-entropy -----------------------------------------------------------------

fn patchify_cases(label: &str, images: [usize; 4], p: usize) -> Vec<TensorCase> {
    let [b, c, h, w] = images;
    let (gw, n, f) = (w / p, (h / p) * (w / p), c * p * p);
    let total = b * c * h * w;
    let s = format!("{label} {} p{p}", dims_str(&images));
    // x's offset of patch element (b, n, f), written out independently of ops::patchify.
    let src = move |bi: usize, ni: usize, fi: usize| {
        let (gy, gx, ch, py, px) = (ni / gw, ni % gw, fi / (p * p), (fi / p) % p, fi % p);
        ((bi * c + ch) * h + gy * p + py) * w + gx * p + px
    };
    vec![
        elementwise(
            "patchify",
            Phase::Fwd,
            s.clone(),
            vec![(images.to_vec(), -1.0, 1.0)],
            total,
            move |xs| Ok(vec![patchify::forward(&xs[0], p)?]),
            move |xs, out, ck| {
                let x = xs[0].data();
                check_elements(ck, "patches", output(out, 0)?, |i| {
                    (x[src(i / (n * f), (i / f) % n, i % f)] as f64, 0.0)
                });
                Ok(())
            },
        ),
        elementwise(
            "patchify",
            Phase::Bwd,
            s,
            vec![(vec![b, n, f], -1.0, 1.0)],
            total,
            move |xs| Ok(vec![patchify::backward(&xs[0], &images, p)?]),
            move |xs, out, ck| {
                let g = xs[0].data();
                let dx = output(out, 0)?.data();
                // Every patch slot maps to one pixel: check the scatter from the patch side.
                for i in check::sample_indices(g.len(), SAMPLES) {
                    let at = src(i / (n * f), (i / f) % n, i % f);
                    ck.close("dx", at, dx[at], g[i] as f64, 0.0);
                }
                Ok(())
            },
        ),
    ]
}

/// Label of row `r` (a hash, so every class appears).
fn label_of(r: usize, classes: usize) -> u32 {
    (crate::rng::mix64(r as u64 ^ 0x1ab3) % classes as u64) as u32
}

fn cross_entropy_cases(label: &str, rows: usize, classes: usize) -> Vec<TensorCase> {
    let s = format!("{label} {}", dims_str(&[rows, classes]));
    let labels: Rc<Vec<u32>> = Rc::new((0..rows).map(|r| label_of(r, classes)).collect());
    let q = move |r: usize, k: usize, labels: &[u32]| {
        SMOOTHING as f64 / classes as f64
            + if k == labels[r] as usize {
                1.0 - SMOOTHING as f64
            } else {
                0.0
            }
    };
    let total = rows * classes;
    let (l1, l2, l3, l4) = (labels.clone(), labels.clone(), labels.clone(), labels);
    let fwd = elementwise(
        "cross_entropy",
        Phase::Fwd,
        s.clone(),
        vec![(vec![rows, classes], -4.0, 4.0)],
        total,
        move |xs| {
            let (loss, p) = cross_entropy::forward(&xs[0], &l1, SMOOTHING)?;
            Ok(vec![loss, p])
        },
        move |xs, out, ck| {
            let (z, loss, p) = (xs[0].data(), output(out, 0)?.item()?, output(out, 1)?.data());
            let mut total_loss = 0.0f64;
            for r in 0..rows {
                let zr = &z[r * classes..(r + 1) * classes];
                let m = zr.iter().fold(f64::NEG_INFINITY, |a, &v| a.max(v as f64));
                let lse = m + zr.iter().map(|&v| (v as f64 - m).exp()).sum::<f64>().ln();
                total_loss -= (0..classes).map(|k| q(r, k, &l2) * (zr[k] as f64 - lse)).sum::<f64>();
            }
            let want = total_loss / rows as f64;
            ck.close("loss", 0, loss, want, COMPOSITE_RTOL * want.abs());
            for r in sample_rows(rows) {
                let row = r * classes..(r + 1) * classes;
                check::row_normwise(
                    ck,
                    "p",
                    r * classes,
                    &p[row.clone()],
                    &check::softmax_row(&z[row]),
                    COMPOSITE_RTOL,
                );
            }
            Ok(())
        },
    );
    let bwd = TensorCase {
        info: CaseInfo {
            kernel: "cross_entropy",
            phase: Phase::Bwd,
            shape: s,
            bytes: (F32 * 2 * total) as f64,
            flops: 0.0,
            bound: Bound::Memory,
        },
        set_bytes: F32 * total,
        // The forward's probabilities of random logits.
        make_set: Box::new(move |seed| {
            let z = uniform(&[rows, classes], -4.0, 4.0, seed)?;
            Ok(vec![cross_entropy::forward(&z, &l3, SMOOTHING)?.1])
        }),
        run: {
            let (labels, one) = (l4.clone(), Tensor::scalar(1.0));
            Box::new(move |xs| Ok(vec![cross_entropy::backward(&one, &xs[0], &labels, SMOOTHING)?]))
        },
        check: Box::new(move |xs, out, ck| {
            let p = xs[0].data();
            check_elements(ck, "dz", output(out, 0)?, |i| {
                let (r, k) = (i / classes, i % classes);
                let qv = q(r, k, &l4);
                let pv = p[i] as f64;
                ((pv - qv) / rows as f64, 4.0 * EPS * (pv.abs() + qv.abs()) / rows as f64)
            });
            Ok(())
        }),
    };
    vec![fwd, bwd]
}

// ---- Adam ------------------------------------------------------------------------------------

/// The optimiser the Adam cases step: AdamW with the default recipe's decay, every parameter decayed.
pub(crate) fn bench_adam_config() -> AdamConfig {
    AdamConfig {
        lr: 1e-3,
        betas: (0.9, 0.999),
        eps: 1e-8,
        weight_decay: 0.05,
    }
}

/// A parameter store with random values and gradients of the given shapes.
fn adam_store(params: &[(String, Vec<usize>)], seed: u64) -> Result<ParamStore> {
    let mut store = ParamStore::new();
    for (j, (name, shape)) in params.iter().enumerate() {
        let id = store.add(
            name.clone(),
            uniform(shape, -0.1, 0.1, derive_seed(seed, 2 * j as u64))?,
        )?;
        // The store takes gradients from a backward pass: seed one at the parameter itself.
        let mut graph = Graph::new();
        let v = graph.param(&store, id);
        let grads = graph.backward_with(v, uniform(shape, -1e-2, 1e-2, derive_seed(seed, 2 * j as u64 + 1))?)?;
        store.accumulate_grads(&grads)?;
    }
    Ok(store)
}

/// One AdamW step in f64 of element `(p, g, m, v)` at step `t`: `(p', m', v')` and the size of
/// the update's terms (the scale of its rounding error).
pub(crate) fn adam_ref(cfg: &AdamConfig, t: u64, p: f64, g: f64, m: f64, v: f64) -> (f64, f64, f64, f64) {
    let (b1, b2) = cfg.betas;
    let m1 = b1 * m + (1.0 - b1) * g;
    let v1 = b2 * v + (1.0 - b2) * g * g;
    let step = cfg.lr / (1.0 - b1.powi(t as i32));
    let denom = v1.sqrt() / (1.0 - b2.powi(t as i32)).sqrt() + cfg.eps;
    let decayed = p * (1.0 - cfg.lr * cfg.weight_decay);
    let scale = p.abs() + step * (m.abs() + g.abs()) / denom;
    (decayed - step * m1 / denom, m1, v1, scale)
}

fn adam_case(label: &str, params: Vec<(String, Vec<usize>)>) -> Case {
    let n: usize = params.iter().map(|(_, s)| numel(s)).sum();
    let info = CaseInfo {
        kernel: "adam",
        phase: Phase::Step,
        shape: format!("{label} {n} params in {}", params.len()),
        // Read p, g, m, v; write p, m, v.
        bytes: (F32 * 7 * n) as f64,
        flops: 0.0,
        bound: Bound::Memory,
    };
    Case {
        info,
        prepare: Box::new(move |env: &Env| {
            let sets = (0..env.sets(F32 * 4 * n))
                .map(|s| {
                    let store = adam_store(&params, derive_seed(0xada, s as u64))?;
                    Ok((store, Adam::adamw(bench_adam_config())?))
                })
                .collect::<Result<Vec<_>>>()?;
            Ok(Box::new(Bench {
                sets,
                run: |(store, adam): &mut (ParamStore, Adam)| adam.step(store),
                validate: |(store, adam): &mut (ParamStore, Adam)| {
                    // The state before one more step, then the step, then the f64 reference.
                    let before: Vec<Tensor> = store.ids().map(|id| store.value(id).clone()).collect();
                    let state: HashMap<String, Tensor> = adam.state_tensors(store).into_iter().collect();
                    let steps: Vec<u64> = store.ids().map(|id| adam.steps(id)).collect();
                    let state_of = |kind: &str, name: &str| {
                        state
                            .get(&format!("{}{kind}.{name}", crate::optim::STATE_PREFIX))
                            .cloned()
                    };
                    let prior: Vec<(Option<Tensor>, Option<Tensor>)> = store
                        .ids()
                        .map(|id| (state_of("m", store.name(id)), state_of("v", store.name(id))))
                        .collect();
                    adam.step(store)?;
                    let after: HashMap<String, Tensor> = adam.state_tensors(store).into_iter().collect();
                    let cfg = bench_adam_config();
                    let mut ck = Checker::new();
                    for (j, id) in store.ids().enumerate() {
                        let name = store.name(id).to_string();
                        let key = |k: &str| format!("{}{k}.{name}", crate::optim::STATE_PREFIX);
                        let (Some(m_new), Some(v_new)) = (after.get(&key("m")), after.get(&key("v"))) else {
                            return Err(Error::config(format!("benchmark: Adam kept no state for `{name}`")));
                        };
                        let g = store
                            .grad(id)
                            .ok_or_else(|| Error::config(format!("benchmark: `{name}` lost its gradient")))?
                            .data();
                        let (p0, p1) = (before[j].data(), store.value(id).data());
                        let (m0, v0) = (&prior[j].0, &prior[j].1);
                        for i in check::sample_indices(p0.len(), SAMPLES / 8) {
                            let m = m0.as_ref().map_or(0.0, |t| t.data()[i] as f64);
                            let v = v0.as_ref().map_or(0.0, |t| t.data()[i] as f64);
                            let gv = g[i] as f64;
                            let (pw, mw, vw, scale) = adam_ref(&cfg, steps[j] + 1, p0[i] as f64, gv, m, v);
                            ck.close(&name, i, p1[i], pw, 16.0 * EPS * scale);
                            ck.close(&key("m"), i, m_new.data()[i], mw, 4.0 * EPS * (m.abs() + gv.abs()));
                            ck.close(&key("v"), i, v_new.data()[i], vw, 4.0 * EPS * (v.abs() + gv * gv));
                        }
                    }
                    Ok(ck)
                },
            }) as Box<dyn Runnable>)
        }),
    }
}

// ---------------------------------------------------------------------------------------------
// The list, and the run
// ---------------------------------------------------------------------------------------------

/// Every CPU case over tensors: the ViT configurations' shapes, then the large ones.
fn tensor_cases(quick: bool) -> Vec<TensorCase> {
    let mut v = Vec::new();
    for s in shapes::vit_shapes(quick) {
        let (rows, t, d) = (s.rows(), s.tokens(), s.embed);
        for (role, din, dout) in s.linears() {
            v.extend(linear_cases(&format!("{} {role}", s.name), rows, din, dout));
        }
        // The attention scores of the composed (unfused) attention, Q·Kᵀ per (image, head).
        v.extend(matmul_cases(
            &format!("{} scores", s.name),
            s.batch * s.heads,
            t,
            t,
            d / s.heads,
            true,
            false,
        ));
        v.extend(attention_cases(s.name, s.batch, t, d, s.heads));
        v.extend(softmax_cases(&format!("{} scores", s.name), &[s.batch, s.heads, t, t]));
        v.extend(layernorm_cases(s.name, rows, d));
        v.extend(gelu_cases(&format!("{} mlp", s.name), &[s.batch, t, s.mlp]));
        v.extend(gelu_dropout_cases(&format!("{} mlp", s.name), &[s.batch, t, s.mlp]));
        v.extend(dropout_cases(&format!("{} resid", s.name), &[s.batch, t, d]));
        v.extend(add_cases(
            &format!("{} resid", s.name),
            &[s.batch, t, d],
            &[1, t, d],
            (rows, s.mlp),
        ));
        v.extend(patchify_cases(s.name, [s.batch, 1, IMAGE, IMAGE], s.patch));
        v.extend(cross_entropy_cases(s.name, s.batch, CLASSES));
    }
    let l = shapes::large_shapes(quick, false);
    let (rows, cols) = (l.rows, l.cols);
    v.extend(matmul_cases("large", 1, l.gemm, l.gemm, l.gemm, false, true));
    let (lr, li, lo) = l.linear;
    v.extend(linear_cases("large", lr, li, lo));
    let (ab, at, ad, ah) = l.attention;
    v.extend(attention_cases("large", ab, at, ad, ah));
    v.extend(softmax_cases("large", &[rows, cols]));
    v.extend(layernorm_cases("large", rows, cols));
    v.extend(gelu_cases("large", &[rows, cols]));
    v.extend(gelu_dropout_cases("large", &[rows, cols]));
    v.extend(dropout_cases("large", &[rows, cols]));
    // A [256, cols] block broadcast over the leading dimension (a position embedding's pattern).
    v.extend(add_cases(
        "large",
        &[rows / 256, 256, cols],
        &[1, 256, cols],
        (rows, cols),
    ));
    v.extend(patchify_cases("large", l.images, l.patch));
    v.extend(cross_entropy_cases("large", l.logits.0, l.logits.1));
    v
}

/// Every CPU case: the tensor cases, then the optimiser's (per configuration, and large).
pub(crate) fn cases(quick: bool) -> Result<Vec<Case>> {
    let mut v: Vec<Case> = tensor_cases(quick).into_iter().map(TensorCase::into_case).collect();
    for s in shapes::vit_shapes(quick) {
        v.push(adam_case(s.name, s.parameters()?));
    }
    let params = shapes::large_shapes(quick, false).params;
    let side = (params as f64).sqrt() as usize;
    v.push(adam_case(
        "large",
        vec![("weight".to_string(), vec![params / side, side])],
    ));
    Ok(v)
}

/// The rayon-parallel copy the memory-bound kernels are compared with: `dst = src` in 1 MiB
/// chunks (each read once and written once, like an element-wise kernel's streams). Counted as
/// 2 bytes moved per byte copied, as STREAM does, although writing `dst` also makes the memory
/// read it (for ownership of the lines): a kernel that updates in place (Adam) or reads more than
/// it writes pays less of that, and can beat this yardstick by up to 1.5×.
fn parallel_copy(src: &[f32], dst: &mut [f32]) {
    const CHUNK: usize = 1 << 18;
    dst.par_chunks_mut(CHUNK)
        .zip(src.par_chunks(CHUNK))
        .for_each(|(d, s)| d.copy_from_slice(s));
}

/// Measure the copy bandwidth: (bytes read + written) / median time of copying a buffer far
/// larger than the caches.
fn copy_bandwidth(plan: &Plan) -> Result<(Yardstick, Timing, usize)> {
    let len: usize = if plan.quick { 16 << 20 } else { 64 << 20 };
    let src = uniform(&[len], -1.0, 1.0, 0xc0b1)?;
    let mut dst = vec![0.0f32; len];
    let timing = measure(plan, 1, |_| {
        let t = Instant::now();
        parallel_copy(src.data(), &mut dst);
        Ok(t.elapsed().as_secs_f64())
    })?;
    // A yardstick that did not copy would make every kernel look good.
    let mut ck = Checker::new();
    for i in check::sample_indices(len, SAMPLES) {
        ck.close("copy", i, dst[i], src.data()[i] as f64, 0.0);
    }
    ck.finish()
        .map_err(|m| Error::config(format!("the copy-bandwidth measurement did not copy: {m}")))?;
    let gbps = (2 * F32 * len) as f64 / timing.median_s / 1e9;
    Ok((Yardstick::bandwidth(gbps), timing, len * F32))
}

/// Run the selected CPU cases: header, copy bandwidth, then one table row per case.
pub fn run(opts: &BenchOptions) -> Result<Report> {
    let plan = Plan::new(opts.quick);
    let cases = select(cases(opts.quick)?, |c| &c.info, opts.filter.as_deref())?;
    let threads = rayon::current_num_threads();
    let cpu = cpu_info();
    let (cache_bytes, cache_source) = cpu_last_level_cache();
    let commit = git_commit();

    say(&format!(
        "vitcore bench kernels: cpu, {}, {threads} threads (rayon), commit {}{}",
        cpu.model,
        commit.as_deref().unwrap_or("unknown"),
        if opts.quick { ", --quick" } else { "" }
    ));
    let peak = match cpu.clock_mhz {
        Some(mhz) if cfg!(target_arch = "x86_64") => {
            let gflops = cpu_peak_gflops(threads, mhz);
            say(&format!(
                "f32 peak: {threads} threads x 2 FMA pipes x 8 lanes (AVX2) x 2 flop x {:.3} GHz = {gflops:.1} GFLOP/s \
                 (clock: {})",
                mhz / 1e3,
                cpu.clock_source
            ));
            Some(Yardstick::flops("CPU peak", gflops))
        }
        _ => {
            say(&format!(
                "f32 peak: unknown (clock {}; the formula assumes x86-64 AVX2 FMA): matrix products get no ratio",
                cpu.clock_source
            ));
            None
        }
    };
    say(&format!(
        "inputs rotate over sets totalling at least 2x the {} MiB last-level cache ({cache_source}) where memory allows",
        cache_bytes >> 20
    ));
    let (copy, copy_timing, copy_bytes) = copy_bandwidth(&plan)?;
    say(&format!(
        "copy bandwidth: {:.1} GB/s (rayon parallel copy of {} MiB, read + write, median of {})",
        copy.value,
        copy_bytes >> 20,
        copy_timing.runs
    ));
    say("");
    say(&table_header());

    let env = Env {
        quick: opts.quick,
        cache_bytes,
    };
    let mut records = Vec::with_capacity(cases.len());
    for case in cases {
        let mut bench = (case.prepare)(&env)?;
        let timing = measure(&plan, bench.sets(), |set| {
            let t = Instant::now();
            bench.run(set)?;
            Ok(t.elapsed().as_secs_f64())
        })?;
        let validation = Validation::from_check(bench.validate()?.finish());
        drop(bench);
        pool::clear(); // give this case's buffers back before the next case allocates its own
        let info = case.info.resolve(copy.value, peak.as_ref().map(|p| p.value));
        let yardstick = match info.bound {
            Bound::Compute => peak.clone(),
            Bound::Memory | Bound::Roofline => Some(copy.clone()),
        };
        let record = Record::new(&info, timing, yardstick, validation);
        say(&table_row(&record));
        records.push(record);
    }
    Ok(Report {
        vitcore_version: env!("CARGO_PKG_VERSION"),
        commit,
        quick: opts.quick,
        filter: opts.filter.clone(),
        device: DeviceInfo {
            kind: "cpu".into(),
            name: cpu.model,
            parallelism: threads,
            clock_mhz: cpu.clock_mhz,
            clock_source: Some(cpu.clock_source),
            cache_bytes,
            cache_source,
            detail: None,
        },
        copy_bandwidth: copy,
        peak,
        records,
        not_on_this_device: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Run a case's kernel on one input set, let `corrupt` change its first output, and return
    /// the case's own validation verdict.
    fn verdict(
        case: &TensorCase,
        corrupt: impl Fn(&mut Tensor),
    ) -> std::result::Result<check::Checked, check::Mismatch> {
        let xs = (case.make_set)(7).unwrap();
        let mut out = (case.run)(&xs).unwrap();
        corrupt(&mut out[0]);
        let mut ck = Checker::new();
        (case.check)(&xs, &out, &mut ck).unwrap();
        ck.finish()
    }

    #[test]
    fn every_quick_case_passes_and_catches_a_corrupted_output() {
        for case in tensor_cases(true) {
            let label = case.info.label();
            if let Err(m) = verdict(&case, |_| {}) {
                panic!("{label}: the real kernel fails its validation: {m}");
            }
            // A wrong result far outside any rounding: every element moved by 1 + |x|.
            let wrong = verdict(&case, |t| t.data_mut().iter_mut().for_each(|x| *x += 1.0 + x.abs()));
            assert!(wrong.is_err(), "{label}: a corrupted output passed validation");
        }
    }

    #[test]
    fn a_single_wrong_matrix_element_is_caught() {
        // A GEMM edge bug touches few elements: corrupt only the last one (always sampled).
        let case = tensor_cases(true)
            .into_iter()
            .find(|c| c.info.kernel == "linear.dw")
            .expect("a linear.dw case");
        let m = verdict(&case, |t| {
            let d = t.data_mut();
            let last = d.len() - 1;
            d[last] += 0.05 * (1.0 + d[last].abs());
        })
        .expect_err("the corrupted element is found");
        assert_eq!(m.part, "c");
    }

    #[test]
    fn adam_validates_against_the_f64_update() {
        let case = cases(true)
            .unwrap()
            .into_iter()
            .find(|c| c.info.kernel == "adam")
            .expect("an adam case");
        let env = Env {
            quick: true,
            cache_bytes: 1,
        };
        let mut bench = (case.prepare)(&env).unwrap();
        for _ in 0..3 {
            bench.run(0).unwrap();
        }
        let ok = bench.validate().unwrap().finish().unwrap_or_else(|m| panic!("{m}"));
        assert!(ok.elements > 0);
        // The reference itself: one step from zero moments moves p by about lr against g.
        let cfg = bench_adam_config();
        let (p, m, v, _) = adam_ref(&cfg, 1, 0.5, 0.01, 0.0, 0.0);
        assert!((m - 0.001).abs() < 1e-12 && (v - 1e-7).abs() < 1e-15);
        assert!((p - (0.5 * (1.0 - 1e-3 * 0.05) - 1e-3 * 0.01 / (0.01 + 1e-8))).abs() < 1e-12);
    }
}
