//! Every case of `vitcore bench kernels`, written once for both devices: for each op, at the
//! shapes of `shapes`, what the row measures ([`CaseInfo`]), how to make an input set, the CPU
//! op, the validation of the CPU op's output against the f64 references of `check`, and how the
//! GPU runs the same case ([`CudaRun`]: its launch wrapper and output buffers). The CPU times
//! the CPU op (`cpu.rs`); the GPU times the launch and compares its results with the CPU op's on
//! the same inputs (`cuda.rs`). So the two tables list the same rows in the same order, and an op
//! without a CUDA kernel (attention, a fused CPU op) is simply a case with no `cuda`.
//!
//! Building a case allocates nothing large: input sets are made only when a case runs (a
//! `--filter` that skips it costs nothing). The one exception, a tensor that only lends its
//! shape to a CPU op, is zeroed by the allocator lazily and its pages are never touched.

use super::check::{self, Checker, GemmDims, COMPOSITE_RTOL, EPS, SAMPLES, TRANSCENDENTAL_RTOL};
use super::shapes::{self, GemmProduct, CLASSES, DROPOUT, DROPOUT_SEED, IMAGE, LN_EPS, SMOOTHING};
use super::{Bound, CaseInfo, Phase};
use crate::backend::cuda::{CudaBuffer, CudaDevice, CudaSlice, MatmulKernel, RowKernel};
use crate::error::{Error, Result};
use crate::ops::dropout::Mask;
use crate::ops::{
    add, attention, cross_entropy, dropout, gelu, layernorm, linear, matmul, patchify, softmax, GeluKind,
};
use crate::rng::{derive_seed, hash_uniform};
use crate::tensor::{numel, Tensor};
use rayon::prelude::*;
use std::rc::Rc;

// ---------------------------------------------------------------------------------------------
// Cases
// ---------------------------------------------------------------------------------------------

/// One input set from a seed.
pub(crate) type MakeSet = Box<dyn Fn(u64) -> Result<Vec<Tensor>>>;
/// The CPU op on an input set, returning its outputs.
pub(crate) type CpuOp = Box<dyn Fn(&[Tensor]) -> Result<Vec<Tensor>>>;
/// Compares the CPU op's outputs (second argument) for an input set (first) with the reference.
pub(crate) type CheckOp = Box<dyn Fn(&[Tensor], &[Tensor], &mut Checker) -> Result<()>>;
/// Queues one GPU run on the device buffers of an input set.
pub(crate) type Launch = Box<dyn Fn(&CudaDevice, &mut Bufs) -> Result<()>>;

/// One benchmark, for both devices (see the module doc).
pub(crate) struct Case {
    pub info: CaseInfo,
    /// Bytes of one input set that the kernel reads (what sizes the input rotation).
    pub set_bytes: usize,
    pub make_set: MakeSet,
    /// What the CPU times, and the reference of the GPU's results.
    pub cpu: CpuOp,
    /// The validation of the CPU op's outputs.
    pub check: CheckOp,
    /// How the GPU runs it; `None` where there is no CUDA kernel.
    pub cuda: Option<CudaRun>,
}

/// The GPU side of a [`Case`]: its input set is uploaded, `out_lens` output buffers allocated,
/// and `launch` queued on them.
pub(crate) struct CudaRun {
    pub out_lens: Vec<usize>,
    pub launch: Launch,
    /// Name, buffer and the longest sum behind each result, in the order of the CPU op's outputs.
    pub results: Vec<(&'static str, Slot, usize)>,
    /// Labels the launch reads (uploaded once, shared by the input sets).
    pub labels: Option<Rc<Vec<u32>>>,
    /// The cuBLAS problem on inputs 0 and 1, for a matrix product's yardstick.
    pub cublas: Option<GemmDims>,
}

/// The device buffers one launch works on.
pub(crate) struct Bufs<'a> {
    pub inputs: &'a mut [CudaBuffer],
    pub outputs: &'a mut [CudaBuffer],
    pub labels: Option<&'a CudaSlice<u32>>,
}

/// Where a result lives after a launch: an output buffer, or an input updated in place (Adam).
#[derive(Clone, Copy, Debug)]
pub(crate) enum Slot {
    Out(usize),
    In(usize),
}

impl Case {
    /// A memory-bound case whose inputs are uniform tensors of the given shapes and ranges and
    /// whose outputs have `out_elems` elements in all; CPU only until [`Case::on_gpu`].
    fn memory(
        kernel: &'static str,
        phase: Phase,
        shape: String,
        inputs: Vec<(Vec<usize>, f32, f32)>,
        out_elems: usize,
        cpu: impl Fn(&[Tensor]) -> Result<Vec<Tensor>> + 'static,
        check: impl Fn(&[Tensor], &[Tensor], &mut Checker) -> Result<()> + 'static,
    ) -> Case {
        let in_elems: usize = inputs.iter().map(|(s, _, _)| numel(s)).sum();
        Case {
            info: CaseInfo {
                kernel,
                phase,
                shape,
                bytes: (F32 * (in_elems + out_elems)) as f64,
                flops: 0.0,
                bound: Bound::Memory,
            },
            set_bytes: F32 * in_elems,
            make_set: uniform_set(inputs),
            cpu: Box::new(cpu),
            check: Box::new(check),
            cuda: None,
        }
    }

    /// The GPU runs this case with `launch`, which writes buffers of `out_lens` elements holding
    /// `results`.
    fn on_gpu(
        mut self,
        out_lens: Vec<usize>,
        results: Vec<(&'static str, Slot, usize)>,
        launch: impl Fn(&CudaDevice, &mut Bufs) -> Result<()> + 'static,
    ) -> Case {
        self.cuda = Some(CudaRun {
            out_lens,
            launch: Box::new(launch),
            results,
            labels: None,
            cublas: None,
        });
        self
    }

    /// The GPU launch reads `labels` (uploaded once for all input sets).
    fn with_labels(mut self, labels: &Rc<Vec<u32>>) -> Case {
        if let Some(run) = &mut self.cuda {
            run.labels = Some(labels.clone());
        }
        self
    }

    /// [`Case::on_gpu`] with one output `part` of `len` elements, each a sum of at most `k` terms.
    fn on_gpu_one(
        self,
        part: &'static str,
        len: usize,
        k: usize,
        launch: impl Fn(&CudaDevice, &mut Bufs) -> Result<()> + 'static,
    ) -> Case {
        self.on_gpu(vec![len], vec![(part, Slot::Out(0), k)], launch)
    }
}

/// Input sets of uniform tensors of the given shapes and ranges.
fn uniform_set(shapes: Vec<(Vec<usize>, f32, f32)>) -> MakeSet {
    Box::new(move |seed| {
        shapes
            .iter()
            .enumerate()
            .map(|(j, (s, lo, hi))| uniform(s, *lo, *hi, derive_seed(seed, j as u64)))
            .collect()
    })
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

/// A launch's buffers by position, or an error (never an index panic).
pub(crate) fn buffers<'b>(v: &'b mut [CudaBuffer], n: usize, what: &str) -> Result<&'b mut [CudaBuffer]> {
    if v.len() < n {
        return Err(Error::config(format!(
            "benchmark: {n} {what} buffers needed, {} given",
            v.len()
        )));
    }
    Ok(&mut v[..n])
}

fn take(t: Option<Tensor>, what: &str) -> Result<Tensor> {
    t.ok_or_else(|| Error::config(format!("benchmark: the backward returned no {what}")))
}

fn dims_str(shape: &[usize]) -> String {
    format!("{shape:?}").replace(' ', "")
}

pub(crate) const F32: usize = 4;

// ---------------------------------------------------------------------------------------------
// Matrix products
// ---------------------------------------------------------------------------------------------

/// The product `p` (`C = op(A)·op(B)`, plus a bias of `p.dims.n` when `bias`): inputs A, B
/// (and the bias), validated as a GEMM on the CPU and against cuBLAS's speed on the GPU.
fn product(
    p: GemmProduct,
    bias: bool,
    cpu: impl Fn(&[Tensor]) -> Result<Tensor> + 'static,
    launch: impl Fn(&CudaDevice, &mut Bufs) -> Result<()> + 'static,
) -> Case {
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
    let mut inputs = vec![(a_shape, -1.0, 1.0), (b_shape, -1.0, 1.0)];
    if bias {
        inputs.push((vec![d.n], -1.0, 1.0));
    }
    Case {
        info: CaseInfo {
            kernel,
            phase,
            shape,
            bytes: (F32 * (na + nb + nc + n_bias)) as f64,
            flops: 2.0 * (d.batch * d.m * d.n) as f64 * d.k as f64,
            bound: Bound::Compute,
        },
        set_bytes: F32 * (na + nb + n_bias),
        make_set: uniform_set(inputs),
        cpu: Box::new(move |xs| Ok(vec![cpu(xs)?])),
        check: Box::new(move |xs, out, ck| {
            let bias = if bias { Some(xs[2].data()) } else { None };
            check::gemm(ck, "c", xs[0].data(), xs[1].data(), output(out, 0)?.data(), d, bias);
            Ok(())
        }),
        cuda: Some(CudaRun {
            out_lens: vec![nc],
            launch: Box::new(launch),
            results: vec![("c", Slot::Out(0), d.k)],
            labels: None,
            cublas: Some(d),
        }),
    }
}

/// The linear layer (see `shapes::linear_products`): forward, dX, dW.
fn linear_cases(label: &str, rows: usize, din: usize, dout: usize) -> Result<Vec<Case>> {
    let [fwd, dx, dw] = shapes::linear_products(label, rows, din, dout);
    // dX = G·W does not read x, dW = Gᵀ·X does not read W: to the CPU op they only lend their
    // shapes (and the GPU wrapper is given the other input in their place).
    let (x_shape, w_shape) = (shape_only(&[rows, din])?, shape_only(&[dout, din])?);
    Ok(vec![
        product(
            fwd,
            true,
            |xs| linear::forward(&xs[0], &xs[1], Some(&xs[2])),
            move |dev, b| {
                let i = buffers(b.inputs, 3, "input")?;
                dev.linear_fwd(&i[0], &i[1], Some(&i[2]), &mut b.outputs[0], rows, din, dout)
            },
        ),
        // Inputs G, W.
        product(
            dx,
            false,
            move |xs| {
                let [dx, _, _] = linear::backward(&xs[0], &x_shape, &xs[1], [true, false, false])?;
                take(dx, "dX")
            },
            move |dev, b| {
                let i = buffers(b.inputs, 2, "input")?;
                let (g, w) = (&i[0], &i[1]);
                dev.linear_bwd(g, g, w, Some(&mut b.outputs[0]), None, None, rows, din, dout)
            },
        ),
        // Inputs G, X.
        product(
            dw,
            false,
            move |xs| {
                let [_, dw, _] = linear::backward(&xs[0], &xs[1], &w_shape, [false, true, false])?;
                take(dw, "dW")
            },
            move |dev, b| {
                let i = buffers(b.inputs, 2, "input")?;
                let (g, x) = (&i[0], &i[1]);
                dev.linear_bwd(g, x, x, None, Some(&mut b.outputs[0]), None, rows, din, dout)
            },
        ),
    ])
}

/// `ops::matmul`'s products of `shapes::matmul_products`, each with its own transposes.
fn matmul_cases(label: &str, batch: usize, m: usize, n: usize, k: usize, tb: bool, bwd: bool) -> Vec<Case> {
    shapes::matmul_products(label, batch, m, n, k, tb, bwd)
        .into_iter()
        .map(|p| {
            let d = p.dims;
            product(
                p,
                false,
                move |xs| matmul::matmul(&xs[0], &xs[1], d.ta, d.tb),
                move |dev, b| {
                    let i = buffers(b.inputs, 2, "input")?;
                    dev.matmul(MatmulKernel::RegisterTiled, &i[0], &i[1], &mut b.outputs[0], d, 0.0)
                },
            )
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Element-wise
// ---------------------------------------------------------------------------------------------

/// Check sampled elements of output 0 against `want(i) -> (value, tolerance)`.
fn check_elements(ck: &mut Checker, part: &str, out: &Tensor, want: impl Fn(usize) -> (f64, f64)) {
    let d = out.data();
    for i in check::sample_indices(d.len(), SAMPLES) {
        let (w, tol) = want(i);
        ck.close(part, i, d[i], w, tol);
    }
}

fn gelu_cases(label: &str, shape: &[usize]) -> Vec<Case> {
    let n = numel(shape);
    let s = format!("{label} {}", dims_str(shape));
    vec![
        Case::memory(
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
        )
        .on_gpu_one("y", n, 1, move |dev, b| {
            dev.gelu_fwd(&b.inputs[0], &mut b.outputs[0], n, GeluKind::Erf)
        }),
        Case::memory(
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
        )
        .on_gpu_one("dx", n, 1, move |dev, b| {
            let i = buffers(b.inputs, 2, "input")?;
            dev.gelu_bwd(&i[0], &i[1], &mut b.outputs[0], n, GeluKind::Erf)
        }),
    ]
}

fn gelu_dropout_cases(label: &str, shape: &[usize]) -> Vec<Case> {
    let n = numel(shape);
    let s = format!("{label} {}", dims_str(shape));
    let factor = |i: usize| check::dropout_factor(DROPOUT_SEED, i, DROPOUT);
    vec![
        Case::memory(
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
        )
        .on_gpu_one("y", n, 1, move |dev, b| {
            dev.gelu_dropout_fwd(&b.inputs[0], &mut b.outputs[0], n, GeluKind::Erf, DROPOUT, DROPOUT_SEED)
        }),
        Case::memory(
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
        )
        .on_gpu_one("dx", n, 1, move |dev, b| {
            let i = buffers(b.inputs, 2, "input")?;
            dev.gelu_dropout_bwd(&i[0], &i[1], &mut b.outputs[0], n, GeluKind::Erf, DROPOUT, DROPOUT_SEED)
        }),
    ]
}

/// Dropout (forward, and its backward: the same mask applied to the gradient) and the fused
/// dropout + residual add (its backward is plain dropout's plus a pass-through, so not repeated).
fn dropout_cases(label: &str, shape: &[usize]) -> Vec<Case> {
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
    let dropout_case = |phase| {
        Case::memory(
            "dropout",
            phase,
            s.clone(),
            vec![(shape.to_vec(), -1.0, 1.0)],
            n,
            |xs| Ok(vec![dropout::apply_mask(&xs[0], DROPOUT, DROPOUT_SEED)?]),
            masked,
        )
    };
    vec![
        dropout_case(Phase::Fwd).on_gpu_one("y", n, 1, move |dev, b| {
            dev.dropout_fwd(&b.inputs[0], &mut b.outputs[0], n, DROPOUT, DROPOUT_SEED)
        }),
        dropout_case(Phase::Bwd).on_gpu_one("dx", n, 1, move |dev, b| {
            dev.dropout_bwd(&b.inputs[0], &mut b.outputs[0], n, DROPOUT, DROPOUT_SEED)
        }),
        Case::memory(
            "dropout_add",
            Phase::Fwd,
            s.clone(),
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
        )
        .on_gpu_one("y", n, 1, move |dev, b| {
            let i = buffers(b.inputs, 2, "input")?;
            dev.dropout_add_fwd(&i[0], &i[1], &mut b.outputs[0], n, DROPOUT, DROPOUT_SEED)
        }),
    ]
}

/// The residual add (equal shapes), the position-embedding add (`b` broadcast over the batch),
/// and `sum_rows` (the bias gradient: column sums of `[rows, cols]`).
fn add_cases(label: &str, a_shape: &[usize], b_shape: &[usize], sum_shape: (usize, usize)) -> Vec<Case> {
    let n = numel(a_shape);
    let block = numel(b_shape);
    let (a_v, b_v) = (a_shape.to_vec(), b_shape.to_vec());
    // y = a + b with b repeating every `block` elements (block = n: the plain residual add).
    let add_check = move |block: usize| {
        move |xs: &[Tensor], out: &[Tensor], ck: &mut Checker| -> Result<()> {
            let (a, b) = (xs[0].data(), xs[1].data());
            check_elements(ck, "y", output(out, 0)?, |i| {
                let w = a[i] as f64 + b[i % block] as f64;
                (w, EPS * w.abs())
            });
            Ok(())
        }
    };
    let (rows, cols) = sum_shape;
    vec![
        Case::memory(
            "add",
            Phase::Fwd,
            format!("{label} {}", dims_str(a_shape)),
            vec![(a_v.clone(), -1.0, 1.0), (a_v.clone(), -1.0, 1.0)],
            n,
            |xs| Ok(vec![add::add_broadcast(&xs[0], &xs[1])?]),
            add_check(n),
        )
        .on_gpu_one("y", n, 1, move |dev, b| {
            let i = buffers(b.inputs, 2, "input")?;
            dev.add_bcast_block(&i[0], &i[1], &mut b.outputs[0], n, n)
        }),
        Case::memory(
            "add_broadcast",
            Phase::Fwd,
            format!("{label} {}+{}", dims_str(a_shape), dims_str(b_shape)),
            vec![(a_v.clone(), -1.0, 1.0), (b_v.clone(), -1.0, 1.0)],
            n,
            |xs| Ok(vec![add::add_broadcast(&xs[0], &xs[1])?]),
            add_check(block),
        )
        .on_gpu_one("y", n, 1, move |dev, b| {
            let i = buffers(b.inputs, 2, "input")?;
            dev.add_broadcast(&i[0], &a_v, &i[1], &b_v, &mut b.outputs[0])
        }),
        Case::memory(
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
        )
        .on_gpu_one("db", cols, rows, move |dev, b| {
            dev.sum_rows(&b.inputs[0], &mut b.outputs[0], rows, cols)
        }),
    ]
}

// ---------------------------------------------------------------------------------------------
// Row-wise
// ---------------------------------------------------------------------------------------------

/// Sampled rows of a `[rows, n]` output.
fn sample_rows(rows: usize) -> Vec<usize> {
    check::sample_indices(rows, 64)
}

/// Sampled rows of `y` (rows of `n`) against the softmax of the same rows of `x`, norm-wise.
fn check_softmax_rows(ck: &mut Checker, part: &str, x: &[f32], y: &[f32], n: usize) {
    for r in sample_rows(x.len() / n.max(1)) {
        let row = r * n..(r + 1) * n;
        check::row_normwise(
            ck,
            part,
            r * n,
            &y[row.clone()],
            &check::softmax_row(&x[row]),
            COMPOSITE_RTOL,
        );
    }
}

fn softmax_cases(label: &str, shape: &[usize]) -> Vec<Case> {
    let n = *shape.last().unwrap_or(&1);
    let total = numel(shape);
    let rows = total / n.max(1);
    let s = format!("{label} {}", dims_str(shape));
    let fwd = Case::memory(
        "softmax",
        Phase::Fwd,
        s.clone(),
        vec![(shape.to_vec(), -4.0, 4.0)],
        total,
        |xs| Ok(vec![softmax::forward(&xs[0])?]),
        move |xs, out, ck| {
            check_softmax_rows(ck, "y", xs[0].data(), output(out, 0)?.data(), n);
            Ok(())
        },
    )
    .on_gpu_one("y", total, n, move |dev, b| {
        dev.softmax_fwd(RowKernel::Auto, &b.inputs[0], &mut b.outputs[0], rows, n)
    });
    // The backward reads G and the forward's output y (a real softmax output, made per set).
    let bwd_shape = shape.to_vec();
    let bwd = Case {
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
        cpu: Box::new(|xs| Ok(vec![softmax::backward(&xs[0], &xs[1])?])),
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
        cuda: None,
    }
    .on_gpu_one("dx", total, n, move |dev, b| {
        let i = buffers(b.inputs, 2, "input")?;
        dev.softmax_bwd(RowKernel::Auto, &i[0], &i[1], &mut b.outputs[0], rows, n)
    });
    vec![fwd, bwd]
}

/// A softmax backward's inputs: G, and the forward's output y (a real softmax output, so the
/// kernel sees rows that sum to 1).
fn softmax_bwd_set(shape: &[usize], seed: u64) -> Result<Vec<Tensor>> {
    let g = uniform(shape, -1.0, 1.0, derive_seed(seed, 0))?;
    let y = softmax::forward(&uniform(shape, -4.0, 4.0, derive_seed(seed, 1))?)?;
    Ok(vec![g, y])
}

/// A layer-norm backward's inputs: G, x, gamma, and the forward's statistics of x (mean, rstd).
fn layernorm_bwd_set(rows: usize, d: usize, seed: u64) -> Result<Vec<Tensor>> {
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

fn layernorm_cases(label: &str, rows: usize, d: usize) -> Vec<Case> {
    let s = format!("{label} {}", dims_str(&[rows, d]));
    let fwd = Case::memory(
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
    )
    .on_gpu(
        vec![rows * d, rows, rows],
        vec![
            ("y", Slot::Out(0), d),
            ("mean", Slot::Out(1), d),
            ("rstd", Slot::Out(2), d),
        ],
        move |dev, b| {
            let i = buffers(b.inputs, 3, "input")?;
            let [y, mean, rstd] = buffers(b.outputs, 3, "output")? else {
                return Err(Error::config("benchmark: layernorm needs 3 outputs"));
            };
            dev.layernorm_fwd(&i[0], &i[1], &i[2], y, mean, rstd, rows, d, LN_EPS)
        },
    );
    let bwd = Case {
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
        cpu: Box::new(|xs| {
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
        cuda: None,
    }
    .on_gpu(
        vec![rows * d, d, d],
        vec![
            ("dx", Slot::Out(0), d),
            ("dgamma", Slot::Out(1), rows),
            ("dbeta", Slot::Out(2), rows),
        ],
        move |dev, b| {
            let i = buffers(b.inputs, 5, "input")?;
            let [dx, dgamma, dbeta] = buffers(b.outputs, 3, "output")? else {
                return Err(Error::config("benchmark: layernorm backward needs 3 outputs"));
            };
            dev.layernorm_bwd(&i[0], &i[1], &i[2], &i[3], &i[4], dx, dgamma, dbeta, rows, d)
        },
    );
    vec![fwd, bwd]
}

// ---------------------------------------------------------------------------------------------
// Attention (a fused CPU op; the GPU composes it from the kernels above, so it has no case there)
// ---------------------------------------------------------------------------------------------

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

fn attention_cases(label: &str, b: usize, t: usize, d: usize, heads: usize) -> Vec<Case> {
    let dh = d / heads;
    let s = format!("{label} {} h{heads}", dims_str(&[b, t, 3 * d]));
    let (qkv_n, out_n, probs_n) = (b * t * 3 * d, b * t * d, b * heads * t * t);
    // Q·Kᵀ and P·V per head, forward; four such products backward.
    let head_flops = 2.0 * 2.0 * (t * t * dh) as f64;
    let sampled_heads = move || check::sample_indices(b * heads, 6);
    let mut fwd = Case::memory(
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

    let bwd = Case {
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
        cpu: Box::new(move |xs| {
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
        cuda: None,
    };
    vec![roofline(fwd), roofline(bwd)]
}

/// Attention is neither a plain product nor a plain stream: it is held against whichever
/// yardstick bounds it at this shape on this machine (see [`CaseInfo::resolve`]). With Dh = 2
/// (the seed preset) it moves bytes; with Dh = 64 (ViT-B) it computes.
fn roofline(mut c: Case) -> Case {
    c.info.bound = Bound::Roofline;
    c
}

// ---------------------------------------------------------------------------------------------
// Patchify, cross-entropy
// ---------------------------------------------------------------------------------------------

fn patchify_cases(label: &str, images: [usize; 4], p: usize) -> Vec<Case> {
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
        Case::memory(
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
        )
        .on_gpu_one("patches", total, 1, move |dev, bufs| {
            dev.patchify_fwd(&bufs.inputs[0], &mut bufs.outputs[0], images, p)
        }),
        Case::memory(
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
        )
        .on_gpu_one("dx", total, 1, move |dev, bufs| {
            dev.patchify_bwd(&bufs.inputs[0], &mut bufs.outputs[0], images, p)
        }),
    ]
}

/// Label of row `r` (a hash, so every class appears).
fn label_of(r: usize, classes: usize) -> u32 {
    (crate::rng::mix64(r as u64 ^ 0x1ab3) % classes as u64) as u32
}

fn cross_entropy_cases(label: &str, rows: usize, classes: usize) -> Vec<Case> {
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
    let label_bytes = 4 * rows; // u32 each, read by both passes
    let [l1, l2, l3, l4, l5] = [(); 5].map(|_| labels.clone());
    let mut fwd = Case::memory(
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
            check_softmax_rows(ck, "p", z, p, classes);
            Ok(())
        },
    )
    .on_gpu(
        vec![1, total],
        vec![("loss", Slot::Out(0), rows), ("p", Slot::Out(1), classes)],
        move |dev, b| {
            let lab = b
                .labels
                .ok_or_else(|| Error::config("benchmark: cross_entropy needs its labels"))?;
            let [loss, p] = buffers(b.outputs, 2, "output")? else {
                return Err(Error::config("benchmark: cross_entropy needs 2 outputs"));
            };
            dev.cross_entropy_fwd(&b.inputs[0], lab, p, loss, rows, classes, SMOOTHING)
        },
    )
    .with_labels(&labels);
    fwd.info.bytes += label_bytes as f64;
    let bwd = Case {
        info: CaseInfo {
            kernel: "cross_entropy",
            phase: Phase::Bwd,
            shape: s,
            bytes: (F32 * 2 * total + label_bytes) as f64,
            flops: 0.0,
            bound: Bound::Memory,
        },
        set_bytes: F32 * total,
        // The forward's probabilities of random logits, and the upstream gradient 1.
        make_set: Box::new(move |seed| {
            let z = uniform(&[rows, classes], -4.0, 4.0, seed)?;
            Ok(vec![cross_entropy::forward(&z, &l3, SMOOTHING)?.1, Tensor::scalar(1.0)])
        }),
        cpu: Box::new(move |xs| Ok(vec![cross_entropy::backward(&xs[1], &xs[0], &l4, SMOOTHING)?])),
        check: Box::new(move |xs, out, ck| {
            let p = xs[0].data();
            check_elements(ck, "dz", output(out, 0)?, |i| {
                let (r, k) = (i / classes, i % classes);
                let qv = q(r, k, &l5);
                let pv = p[i] as f64;
                ((pv - qv) / rows as f64, 4.0 * EPS * (pv.abs() + qv.abs()) / rows as f64)
            });
            Ok(())
        }),
        cuda: None,
    }
    .on_gpu_one("dz", total, 1, move |dev, b| {
        let lab = b
            .labels
            .ok_or_else(|| Error::config("benchmark: cross_entropy needs its labels"))?;
        let i = buffers(b.inputs, 2, "input")?;
        dev.cross_entropy_bwd(&i[1], &i[0], lab, &mut b.outputs[0], rows, classes, SMOOTHING)
    })
    .with_labels(&labels);
    vec![fwd, bwd]
}

// ---------------------------------------------------------------------------------------------
// The list
// ---------------------------------------------------------------------------------------------

/// Every case over tensors, in table order: the ViT configurations' shapes, then the large ones
/// (`gpu`: the larger matrix products a GPU needs, see `shapes::large_shapes`). The optimiser's
/// cases follow them in each device's list (`shapes::adam_shapes`).
pub(crate) fn tensor_cases(quick: bool, gpu: bool) -> Result<Vec<Case>> {
    let mut v = Vec::new();
    for s in shapes::vit_shapes(quick) {
        let (rows, t, d) = (s.rows(), s.tokens(), s.embed);
        for (role, din, dout) in s.linears() {
            v.extend(linear_cases(&format!("{} {role}", s.name), rows, din, dout)?);
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
    let l = shapes::large_shapes(quick, gpu);
    let (rows, cols) = (l.rows, l.cols);
    v.extend(matmul_cases("large", 1, l.gemm, l.gemm, l.gemm, false, true));
    let (lr, li, lo) = l.linear;
    v.extend(linear_cases("large", lr, li, lo)?);
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
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Run a case's kernel on one input set, let `corrupt` change its first output, and return
    /// the case's own validation verdict.
    fn verdict(case: &Case, corrupt: impl Fn(&mut Tensor)) -> std::result::Result<check::Checked, check::Mismatch> {
        let xs = (case.make_set)(7).unwrap();
        let mut out = (case.cpu)(&xs).unwrap();
        corrupt(&mut out[0]);
        let mut ck = Checker::new();
        (case.check)(&xs, &out, &mut ck).unwrap();
        ck.finish()
    }

    #[test]
    fn every_quick_case_passes_and_catches_a_corrupted_output() {
        for case in tensor_cases(true, false).unwrap() {
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
        let case = tensor_cases(true, false)
            .unwrap()
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
}
