//! Every CUDA kernel, forward and backward, against the CPU ops on fresh random inputs at awkward
//! sizes (not multiples of any tile or warp): relative error ‖gpu − cpu‖ / ‖cpu‖ ≤ 1e-5, NaN
//! fails. Plus the fused Adam against `optim::Adam`, the dropout mask bit for bit, and the
//! allocator's steady state.
//!
//! Without a usable GPU each test prints `skipped: <reason>` and passes (see `cuda_common`).
//! `tests/cuda_graph.rs` does the same through tensors, the autograd and a whole ViT step.
//!
//! The inputs are drawn from a fresh seed each run (printed; set `VITCORE_TEST_SEED` to replay).

mod cuda_common;

use cuda_common::{check_non_finite, check_tol, rand_tensor, rand_vec, rng};
use vitcore::autograd::{Graph, ParamStore};
use vitcore::backend::cuda::{AdamCoeffs, CudaBuffer, CudaDevice, DevicePtr, MatmulDims, MatmulKernel, RowKernel};
use vitcore::ops::{self, GeluKind};
use vitcore::optim::{default_no_decay, Adam, AdamConfig, DecayMode};
use vitcore::Tensor;

const TOL: f64 = 1e-5;

/// ‖gpu − cpu‖ / ‖cpu‖ ≤ 1e-5 (see `cuda_common::check_tol`).
fn check(what: &str, gpu: &[f32], cpu: &[f32]) {
    check_tol(what, gpu, cpu, TOL)
}

fn up(dev: &CudaDevice, t: &Tensor) -> CudaBuffer {
    dev.upload(t.data()).unwrap()
}

fn down(dev: &CudaDevice, b: &CudaBuffer) -> Vec<f32> {
    dev.download(b).unwrap()
}

/// How many elements differ in their bits (a mask must match exactly, not within a tolerance).
fn bit_mismatches(gpu: &[f32], cpu: &[f32]) -> usize {
    gpu.iter().zip(cpu).filter(|(a, b)| a.to_bits() != b.to_bits()).count()
}

// ---- matmul ---------------------------------------------------------------------------------

/// (batch, m, n, k): none a multiple of 16 or 64, plus degenerate edges, plus N a multiple of 4
/// (matmul_reg's float4 stores) with K not a multiple of 8 (its 8-wide k chunks).
const MATMUL_SIZES: [(usize, usize, usize, usize); 6] = [
    (3, 67, 45, 33),
    (2, 37, 68, 19),
    (1, 1, 130, 257),
    (2, 129, 1, 7),
    (4, 65, 65, 64),
    (1, 200, 70, 150),
];

fn stored_shape(batch: usize, rows: usize, cols: usize, transposed: bool) -> Vec<usize> {
    if transposed {
        vec![batch, cols, rows]
    } else {
        vec![batch, rows, cols]
    }
}

#[test]
fn matmul_forward_and_backward_match_cpu() {
    let dev = gpu_or_skip!();
    let mut r = rng("matmul");
    for kernel in [MatmulKernel::Tiled, MatmulKernel::RegisterTiled] {
        for (batch, m, n, k) in MATMUL_SIZES {
            for (ta, tb) in [(false, false), (false, true), (true, false), (true, true)] {
                let tag = format!("{kernel:?} b{batch} m{m} n{n} k{k} ta={ta} tb={tb}");
                let a = rand_tensor(&mut r, &stored_shape(batch, m, k, ta));
                let b = rand_tensor(&mut r, &stored_shape(batch, k, n, tb));
                let g = rand_tensor(&mut r, &[batch, m, n]);
                // CPU: forward, and the backward through the autograd rule.
                let mut graph = Graph::new();
                let (va, vb) = (graph.leaf(a.clone()), graph.leaf(b.clone()));
                let vc = graph.matmul_t(va, vb, ta, tb).unwrap();
                let grads = graph.backward_with(vc, g.clone()).unwrap();
                let (c_cpu, da_cpu, db_cpu) = (
                    graph.value(vc).clone(),
                    grads.get(va).unwrap().clone(),
                    grads.get(vb).unwrap().clone(),
                );

                let (ga, gb, gg) = (up(&dev, &a), up(&dev, &b), up(&dev, &g));
                let mut c = dev.alloc(batch * m * n).unwrap();
                let d = MatmulDims { batch, m, n, k, ta, tb };
                dev.matmul(kernel, &ga, &gb, &mut c, d, 0.0).unwrap();
                check(&format!("{tag} C"), &down(&dev, &c), c_cpu.data());
                // beta = 1 accumulates into C (how the linear layer adds its product to the bias).
                let c0 = rand_vec(&mut r, batch * m * n, -1.0, 1.0);
                let mut c1 = dev.upload(&c0).unwrap();
                dev.matmul(kernel, &ga, &gb, &mut c1, d, 1.0).unwrap();
                let want: Vec<f32> = c_cpu.data().iter().zip(&c0).map(|(x, y)| x + y).collect();
                check(&format!("{tag} C += A·B"), &down(&dev, &c1), &want);

                // Backward (the table in src/ops/matmul.rs): each gradient is one more product.
                let mut da = dev.alloc(a.numel()).unwrap();
                let mut db = dev.alloc(b.numel()).unwrap();
                let dims = |m, n, k, ta, tb| MatmulDims { batch, m, n, k, ta, tb };
                match (ta, tb) {
                    (false, false) => {
                        dev.matmul(kernel, &gg, &gb, &mut da, dims(m, k, n, false, true), 0.0)
                            .unwrap();
                        dev.matmul(kernel, &ga, &gg, &mut db, dims(k, n, m, true, false), 0.0)
                            .unwrap();
                    }
                    (false, true) => {
                        dev.matmul(kernel, &gg, &gb, &mut da, dims(m, k, n, false, false), 0.0)
                            .unwrap();
                        dev.matmul(kernel, &gg, &ga, &mut db, dims(n, k, m, true, false), 0.0)
                            .unwrap();
                    }
                    (true, false) => {
                        dev.matmul(kernel, &gb, &gg, &mut da, dims(k, m, n, false, true), 0.0)
                            .unwrap();
                        dev.matmul(kernel, &ga, &gg, &mut db, dims(k, n, m, false, false), 0.0)
                            .unwrap();
                    }
                    (true, true) => {
                        dev.matmul(kernel, &gb, &gg, &mut da, dims(k, m, n, true, true), 0.0)
                            .unwrap();
                        dev.matmul(kernel, &gg, &ga, &mut db, dims(n, k, m, true, true), 0.0)
                            .unwrap();
                    }
                }
                check(&format!("{tag} dA"), &down(&dev, &da), da_cpu.data());
                check(&format!("{tag} dB"), &down(&dev, &db), db_cpu.data());
            }
        }
        // beta = 1 accumulates onto C.
        let (m, n, k) = (37, 29, 41);
        let (a, b, c0) = (
            rand_tensor(&mut r, &[1, m, k]),
            rand_tensor(&mut r, &[1, k, n]),
            rand_tensor(&mut r, &[1, m, n]),
        );
        let mut want = ops::matmul::matmul(&a, &b, false, false).unwrap();
        want.add_assign(&c0).unwrap();
        let mut c = up(&dev, &c0);
        dev.matmul(
            kernel,
            &up(&dev, &a),
            &up(&dev, &b),
            &mut c,
            MatmulDims {
                batch: 1,
                m,
                n,
                k,
                ta: false,
                tb: false,
            },
            1.0,
        )
        .unwrap();
        check(&format!("{kernel:?} beta=1"), &down(&dev, &c), want.data());
    }
}

#[test]
fn matmul_rejects_short_buffers() {
    let dev = gpu_or_skip!();
    let (a, b) = (dev.alloc(10).unwrap(), dev.alloc(10).unwrap());
    let mut c = dev.alloc(10).unwrap();
    let e = dev.matmul(
        MatmulKernel::RegisterTiled,
        &a,
        &b,
        &mut c,
        MatmulDims {
            batch: 1,
            m: 4,
            n: 4,
            k: 4,
            ta: false,
            tb: false,
        },
        0.0,
    );
    assert!(e.unwrap_err().to_string().contains("the sizes need 16"));
}

#[test]
fn linear_forward_and_backward_match_cpu() {
    let dev = gpu_or_skip!();
    let mut r = rng("linear");
    let (rows, din, dout) = (37, 29, 19);
    let (x, w, b, g) = (
        rand_tensor(&mut r, &[rows, din]),
        rand_tensor(&mut r, &[dout, din]),
        rand_tensor(&mut r, &[dout]),
        rand_tensor(&mut r, &[rows, dout]),
    );
    let y_cpu = ops::linear::forward(&x, &w, Some(&b)).unwrap();
    let [dx_cpu, dw_cpu, db_cpu] = ops::linear::backward(&g, &x, &w, [true; 3]).unwrap();
    let (gx, gw, gb, gg) = (up(&dev, &x), up(&dev, &w), up(&dev, &b), up(&dev, &g));
    let mut y = dev.alloc(rows * dout).unwrap();
    dev.linear_fwd(&gx, &gw, Some(&gb), &mut y, rows, din, dout).unwrap();
    check("linear y", &down(&dev, &y), y_cpu.data());
    let (mut dx, mut dw, mut db) = (
        dev.alloc(rows * din).unwrap(),
        dev.alloc(dout * din).unwrap(),
        dev.alloc(dout).unwrap(),
    );
    dev.linear_bwd(
        &gg,
        &gx,
        &gw,
        Some(&mut dx),
        Some(&mut dw),
        Some(&mut db),
        rows,
        din,
        dout,
    )
    .unwrap();
    check("linear dx", &down(&dev, &dx), dx_cpu.unwrap().data());
    check("linear dW", &down(&dev, &dw), dw_cpu.unwrap().data());
    check("linear db", &down(&dev, &db), db_cpu.unwrap().data());
}

// ---- softmax --------------------------------------------------------------------------------

#[test]
fn softmax_forward_and_backward_match_cpu() {
    let dev = gpu_or_skip!();
    let mut r = rng("softmax");
    for (rows, n, spread) in [(67, 77, 1.0), (5, 3001, 1.0), (33, 1, 1.0), (9, 200, 60.0)] {
        let x = Tensor::from_vec(rand_vec(&mut r, rows * n, -spread, spread), &[rows, n]).unwrap();
        let g = rand_tensor(&mut r, &[rows, n]);
        let y_cpu = ops::softmax::forward(&x).unwrap();
        let dx_cpu = ops::softmax::backward(&g, &y_cpu).unwrap();
        let (gx, gg) = (up(&dev, &x), up(&dev, &g));
        for kind in [RowKernel::Auto, RowKernel::Warp, RowKernel::Block] {
            let tag = format!("softmax {kind:?} {rows}x{n} spread {spread}");
            let mut y = dev.alloc(rows * n).unwrap();
            dev.softmax_fwd(kind, &gx, &mut y, rows, n).unwrap();
            check(&format!("{tag} y"), &down(&dev, &y), y_cpu.data());
            let mut dx = dev.alloc(rows * n).unwrap();
            dev.softmax_bwd(kind, &gg, &y, &mut dx, rows, n).unwrap();
            check(&format!("{tag} dx"), &down(&dev, &dx), dx_cpu.data());
        }
    }
}

/// Rows holding NaN, +Inf or −Inf, each placed so that it is alone in its lane (a lane whose
/// only element is NaN once merged as "empty" and dropped it), in short rows (warp kernel) and
/// long ones (block kernel). The GPU must give what the CPU gives: a NaN or a +Inf anywhere makes
/// the whole softmax row NaN; −Inf elements get probability 0.
fn non_finite_rows(n: usize, r: &mut vitcore::rng::Rng) -> (Vec<f32>, usize) {
    let specials = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY];
    let mut rows = Vec::new();
    for (k, &v) in specials.iter().enumerate() {
        for pos in [0, 1, n - 1] {
            let mut row = rand_vec(r, n, -3.0, 3.0);
            row[pos.min(n - 1)] = v;
            rows.extend(row);
            let _ = k;
        }
    }
    rows.extend(vec![f32::NEG_INFINITY; n]); // all −Inf: NaN on the CPU (e^{−inf − −inf})
    let mut mixed = rand_vec(r, n, -3.0, 3.0);
    mixed[n / 2] = f32::NEG_INFINITY;
    mixed[n - 1] = f32::NAN;
    rows.extend(mixed);
    let nrows = rows.len() / n;
    (rows, nrows)
}

#[test]
fn non_finite_rows_match_cpu_in_softmax_layernorm_and_cross_entropy() {
    let dev = gpu_or_skip!();
    let mut r = rng("non_finite");
    for n in [2usize, 40, 1500] {
        let (data, rows) = non_finite_rows(n, &mut r);
        let x = Tensor::from_vec(data, &[rows, n]).unwrap();
        let gx = up(&dev, &x);
        // softmax, both kernels
        let y_cpu = ops::softmax::forward(&x).unwrap();
        for kind in [RowKernel::Warp, RowKernel::Block] {
            let mut y = dev.alloc(rows * n).unwrap();
            dev.softmax_fwd(kind, &gx, &mut y, rows, n).unwrap();
            check_non_finite(&format!("softmax {kind:?} n={n}"), &down(&dev, &y), y_cpu.data(), TOL);
        }
        // layernorm forward
        let gamma = Tensor::from_vec(rand_vec(&mut r, n, 0.5, 1.5), &[n]).unwrap();
        let beta = rand_tensor(&mut r, &[n]);
        let (y_cpu, mean_cpu, rstd_cpu) = ops::layernorm::forward(&x, &gamma, &beta, 1e-5).unwrap();
        let (mut y, mut mean, mut rstd) = (
            dev.alloc(rows * n).unwrap(),
            dev.alloc(rows).unwrap(),
            dev.alloc(rows).unwrap(),
        );
        dev.layernorm_fwd(
            &gx,
            &up(&dev, &gamma),
            &up(&dev, &beta),
            &mut y,
            &mut mean,
            &mut rstd,
            rows,
            n,
            1e-5,
        )
        .unwrap();
        check_non_finite(&format!("layernorm y n={n}"), &down(&dev, &y), y_cpu.data(), TOL);
        check_non_finite(
            &format!("layernorm mean n={n}"),
            &down(&dev, &mean),
            mean_cpu.data(),
            TOL,
        );
        check_non_finite(
            &format!("layernorm rstd n={n}"),
            &down(&dev, &rstd),
            rstd_cpu.data(),
            TOL,
        );
        // cross-entropy: the loss (a mean over rows) is NaN on both; the probabilities row by row
        let labels: Vec<u32> = (0..rows).map(|_| r.below(n) as u32).collect();
        let (loss_cpu, p_cpu) = ops::cross_entropy::forward(&x, &labels, 0.1).unwrap();
        let gl = dev.upload_u32(&labels).unwrap();
        let (mut p, mut loss) = (dev.alloc(rows * n).unwrap(), dev.alloc(1).unwrap());
        dev.cross_entropy_fwd(&gx, &gl, &mut p, &mut loss, rows, n, 0.1)
            .unwrap();
        check_non_finite(&format!("cross_entropy p n={n}"), &down(&dev, &p), p_cpu.data(), TOL);
        check_non_finite(
            &format!("cross_entropy loss n={n}"),
            &down(&dev, &loss),
            loss_cpu.data(),
            TOL,
        );
    }
}

/// Sizes for which the grid-stride loops run several laps: the host caps grids at 32 blocks per
/// SM, so an element-wise kernel (256 threads per block) covers `sm_count·32·256` elements per
/// lap and a warp-per-row kernel (4 rows per block) `sm_count·32·4` rows. 3.5 laps leaves a
/// partial last lap. On the cudasim 2-SM model (`CUDASIM_SM_COUNT=2`) these are small.
fn laps(per_lap: usize) -> usize {
    per_lap * 7 / 2 + 1
}

#[test]
fn grid_stride_loops_of_several_laps_match_cpu() {
    let dev = gpu_or_skip!();
    let mut r = rng("grid_stride");
    let sms = dev.sm_count() as usize;
    // Element-wise: GELU forward and backward.
    let n = laps(sms * 32 * 256);
    let x = Tensor::from_vec(rand_vec(&mut r, n, -4.0, 4.0), &[n]).unwrap();
    let g = rand_tensor(&mut r, &[n]);
    let (gx, gg) = (up(&dev, &x), up(&dev, &g));
    let mut y = dev.alloc(n).unwrap();
    dev.gelu_fwd(&gx, &mut y, n, GeluKind::Erf).unwrap();
    check(
        &format!("gelu over {n} elements"),
        &down(&dev, &y),
        ops::gelu::forward(&x, GeluKind::Erf).unwrap().data(),
    );
    let mut dx = dev.alloc(n).unwrap();
    dev.gelu_bwd(&gg, &gx, &mut dx, n, GeluKind::Erf).unwrap();
    let dx_cpu = ops::gelu::backward(&g, &x, GeluKind::Erf).unwrap();
    check(
        &format!("gelu backward over {n} elements"),
        &down(&dev, &dx),
        dx_cpu.data(),
    );
    // Warp per row: softmax forward and backward, layernorm forward.
    let (rows, cols) = (laps(sms * 32 * 4), 5);
    let x = Tensor::from_vec(rand_vec(&mut r, rows * cols, -3.0, 3.0), &[rows, cols]).unwrap();
    let g = rand_tensor(&mut r, &[rows, cols]);
    let (gx, gg) = (up(&dev, &x), up(&dev, &g));
    let y_cpu = ops::softmax::forward(&x).unwrap();
    let mut y = dev.alloc(rows * cols).unwrap();
    dev.softmax_fwd(RowKernel::Warp, &gx, &mut y, rows, cols).unwrap();
    check(&format!("softmax over {rows} rows"), &down(&dev, &y), y_cpu.data());
    let mut dx = dev.alloc(rows * cols).unwrap();
    dev.softmax_bwd(RowKernel::Warp, &gg, &y, &mut dx, rows, cols).unwrap();
    check(
        &format!("softmax backward over {rows} rows"),
        &down(&dev, &dx),
        ops::softmax::backward(&g, &y_cpu).unwrap().data(),
    );
    // Block per row: one block per row, grid capped at 32 blocks per SM.
    let rows_b = laps(sms * 32);
    let xb = Tensor::from_vec(rand_vec(&mut r, rows_b * 3, -3.0, 3.0), &[rows_b, 3]).unwrap();
    let mut yb = dev.alloc(rows_b * 3).unwrap();
    dev.softmax_fwd(RowKernel::Block, &up(&dev, &xb), &mut yb, rows_b, 3)
        .unwrap();
    check(
        &format!("softmax (block per row) over {rows_b} rows"),
        &down(&dev, &yb),
        ops::softmax::forward(&xb).unwrap().data(),
    );
}

/// The host splits a batched product whose batch exceeds the grid's z limit (65535 on every GPU;
/// smaller on the cudasim model CI's second run uses, `CUDASIM_MAX_GRID_YZ`) into several
/// launches on offset pointers, and rows beyond the y limit likewise: every batch and row must
/// come out right, the last ones too.
#[test]
fn matmul_batches_beyond_the_grid_limit_are_split() {
    let dev = gpu_or_skip!();
    let mut r = rng("matmul_split");
    let lim = dev.max_grid_yz() as usize;
    let (batch, m, n, k) = (lim + 3, 2, 3, 1);
    let a = Tensor::from_vec(rand_vec(&mut r, batch * m * k, -1.0, 1.0), &[batch, m, k]).unwrap();
    let b = Tensor::from_vec(rand_vec(&mut r, batch * k * n, -1.0, 1.0), &[batch, k, n]).unwrap();
    let want = ops::matmul::matmul(&a, &b, false, false).unwrap();
    let mut c = dev.alloc(batch * m * n).unwrap();
    let dims = MatmulDims {
        batch,
        m,
        n,
        k,
        ta: false,
        tb: false,
    };
    dev.matmul(MatmulKernel::Tiled, &up(&dev, &a), &up(&dev, &b), &mut c, dims, 0.0)
        .unwrap();
    let got = down(&dev, &c);
    check(&format!("matmul batch {batch}"), &got, want.data());
    let last = (batch - 1) * m * n;
    check(
        "matmul: the last batch (second launch)",
        &got[last..],
        &want.data()[last..],
    );
    // Rows beyond the y limit (16-row tiles): only affordable where the limit is small.
    if lim <= 64 {
        let (m, n, k) = (16 * lim + 5, 3, 2);
        let a = Tensor::from_vec(rand_vec(&mut r, m * k, -1.0, 1.0), &[1, m, k]).unwrap();
        let b = Tensor::from_vec(rand_vec(&mut r, k * n, -1.0, 1.0), &[1, k, n]).unwrap();
        let want = ops::matmul::matmul(&a, &b, false, false).unwrap();
        let mut c = dev.alloc(m * n).unwrap();
        let dims = MatmulDims {
            batch: 1,
            m,
            n,
            k,
            ta: false,
            tb: false,
        };
        dev.matmul(MatmulKernel::Tiled, &up(&dev, &a), &up(&dev, &b), &mut c, dims, 0.0)
            .unwrap();
        check(&format!("matmul {m} rows"), &down(&dev, &c), want.data());
    }
}

// ---- layernorm ------------------------------------------------------------------------------

#[test]
fn layernorm_forward_and_backward_match_cpu() {
    let dev = gpu_or_skip!();
    let mut r = rng("layernorm");
    for (rows, d) in [(45, 97), (1000, 384), (3, 1000), (7, 1)] {
        let x = Tensor::from_vec(rand_vec(&mut r, rows * d, -2.0, 3.0), &[rows, d]).unwrap();
        let gamma = Tensor::from_vec(rand_vec(&mut r, d, 0.5, 1.5), &[d]).unwrap();
        let beta = rand_tensor(&mut r, &[d]);
        let g = rand_tensor(&mut r, &[rows, d]);
        let eps = 1e-6;
        let (y_cpu, mean_cpu, rstd_cpu) = ops::layernorm::forward(&x, &gamma, &beta, eps).unwrap();
        let (dx_cpu, dg_cpu, db_cpu) = ops::layernorm::backward(&g, &x, &gamma, &mean_cpu, &rstd_cpu).unwrap();
        let (gx, ggam, gbet, gg) = (up(&dev, &x), up(&dev, &gamma), up(&dev, &beta), up(&dev, &g));
        let (mut y, mut mean, mut rstd) = (
            dev.alloc(rows * d).unwrap(),
            dev.alloc(rows).unwrap(),
            dev.alloc(rows).unwrap(),
        );
        dev.layernorm_fwd(&gx, &ggam, &gbet, &mut y, &mut mean, &mut rstd, rows, d, eps)
            .unwrap();
        let tag = format!("layernorm {rows}x{d}");
        check(&format!("{tag} y"), &down(&dev, &y), y_cpu.data());
        check(&format!("{tag} mean"), &down(&dev, &mean), mean_cpu.data());
        check(&format!("{tag} rstd"), &down(&dev, &rstd), rstd_cpu.data());
        let (mut dx, mut dg, mut db) = (
            dev.alloc(rows * d).unwrap(),
            dev.alloc(d).unwrap(),
            dev.alloc(d).unwrap(),
        );
        dev.layernorm_bwd(&gg, &gx, &ggam, &mean, &rstd, &mut dx, &mut dg, &mut db, rows, d)
            .unwrap();
        check(&format!("{tag} dx"), &down(&dev, &dx), dx_cpu.data());
        check(&format!("{tag} dgamma"), &down(&dev, &dg), dg_cpu.data());
        check(&format!("{tag} dbeta"), &down(&dev, &db), db_cpu.data());
    }
}

// ---- gelu -----------------------------------------------------------------------------------

#[test]
fn gelu_forward_and_backward_match_cpu() {
    let dev = gpu_or_skip!();
    let mut r = rng("gelu");
    let n = 10_007;
    let x = Tensor::from_vec(rand_vec(&mut r, n, -6.0, 6.0), &[n]).unwrap();
    let g = rand_tensor(&mut r, &[n]);
    let (gx, gg) = (up(&dev, &x), up(&dev, &g));
    for kind in [GeluKind::Erf, GeluKind::Tanh] {
        let mut y = dev.alloc(n).unwrap();
        dev.gelu_fwd(&gx, &mut y, n, kind).unwrap();
        check(
            &format!("gelu {kind:?} y"),
            &down(&dev, &y),
            ops::gelu::forward(&x, kind).unwrap().data(),
        );
        let mut dx = dev.alloc(n).unwrap();
        dev.gelu_bwd(&gg, &gx, &mut dx, n, kind).unwrap();
        check(
            &format!("gelu {kind:?} dx"),
            &down(&dev, &dx),
            ops::gelu::backward(&g, &x, kind).unwrap().data(),
        );
    }
}

/// GELU fused with dropout, forward and backward, against the CPU's fused op: the kept elements
/// within the GELU tolerance, the dropped ones exactly +0 on both devices (the same mask).
#[test]
fn gelu_dropout_forward_and_backward_match_cpu() {
    let dev = gpu_or_skip!();
    let mut r = rng("gelu_dropout");
    let n = 30_011;
    let x = Tensor::from_vec(rand_vec(&mut r, n, -6.0, 6.0), &[n]).unwrap();
    let g = rand_tensor(&mut r, &[n]);
    let (gx, gg) = (up(&dev, &x), up(&dev, &g));
    for kind in [GeluKind::Erf, GeluKind::Tanh] {
        for (p, seed) in [(0.1f32, 3u64), (0.6, r.next_u64())] {
            let mask = ops::dropout::Mask::new(p, seed).unwrap();
            let mut y = dev.alloc(n).unwrap();
            dev.gelu_dropout_fwd(&gx, &mut y, n, kind, p, seed).unwrap();
            let want = ops::gelu::forward_dropout(&x, kind, &mask).unwrap();
            let got = down(&dev, &y);
            let zeros_differ = got
                .iter()
                .zip(want.data())
                .filter(|(a, b)| (a.to_bits() == 0) != (b.to_bits() == 0))
                .count();
            assert_eq!(zeros_differ, 0, "gelu_dropout {kind:?} p={p}: dropped elements differ");
            check(&format!("gelu_dropout {kind:?} p={p} y"), &got, want.data());
            let mut dx = dev.alloc(n).unwrap();
            dev.gelu_dropout_bwd(&gg, &gx, &mut dx, n, kind, p, seed).unwrap();
            check(
                &format!("gelu_dropout {kind:?} p={p} dx"),
                &down(&dev, &dx),
                ops::gelu::backward_dropout(&g, &x, kind, &mask).unwrap().data(),
            );
        }
    }
}

// ---- patchify -------------------------------------------------------------------------------

#[test]
fn patchify_forward_and_backward_match_cpu() {
    let dev = gpu_or_skip!();
    let mut r = rng("patchify");
    for (shape, p) in [
        ([2, 3, 12, 20], 4),
        ([3, 1, 28, 28], 7),
        ([1, 2, 5, 5], 5),
        ([2, 3, 3, 6], 1),
        // A band of 4 rows × 3200 floats (51 KB) does not fit in shared memory: the gather kernels.
        ([1, 2, 4, 3200], 4),
    ] {
        let x = rand_tensor(&mut r, &shape);
        let y_cpu = ops::patchify::forward(&x, p).unwrap();
        let g = rand_tensor(&mut r, y_cpu.shape());
        let dx_cpu = ops::patchify::backward(&g, &shape, p).unwrap();
        let mut y = dev.alloc(x.numel()).unwrap();
        dev.patchify_fwd(&up(&dev, &x), &mut y, shape, p).unwrap();
        check(&format!("patchify {shape:?} P{p} y"), &down(&dev, &y), y_cpu.data());
        let mut dx = dev.alloc(x.numel()).unwrap();
        dev.patchify_bwd(&up(&dev, &g), &mut dx, shape, p).unwrap();
        check(&format!("patchify {shape:?} P{p} dx"), &down(&dev, &dx), dx_cpu.data());
    }
    let mut y = dev.alloc(100).unwrap();
    assert!(
        dev.patchify_fwd(&dev.alloc(100).unwrap(), &mut y, [1, 1, 10, 10], 3)
            .is_err(),
        "10 is not a multiple of 3"
    );
}

// ---- elementwise ----------------------------------------------------------------------------

#[test]
fn broadcast_add_and_its_reductions_match_cpu() {
    let dev = gpu_or_skip!();
    let mut r = rng("add");
    // residual, bias, position embedding, a middle broadcast (general kernel), a scalar.
    let cases: [(&[usize], &[usize]); 6] = [
        (&[3, 17, 13], &[3, 17, 13]),
        (&[3, 17, 13], &[13]),
        (&[3, 17, 13], &[1, 17, 13]),
        (&[3, 17, 13], &[3, 1, 13]),
        (&[2, 3, 5, 7], &[3, 1, 7]),
        (&[4, 9], &[1]),
    ];
    for (a_shape, b_shape) in cases {
        let (a, b) = (rand_tensor(&mut r, a_shape), rand_tensor(&mut r, b_shape));
        let g = rand_tensor(&mut r, a_shape);
        let mut y = dev.alloc(a.numel()).unwrap();
        dev.add_broadcast(&up(&dev, &a), a_shape, &up(&dev, &b), b_shape, &mut y)
            .unwrap();
        check(
            &format!("add {a_shape:?} + {b_shape:?}"),
            &down(&dev, &y),
            ops::add::add_broadcast(&a, &b).unwrap().data(),
        );
        // The gradient of b.
        let mut db = dev.alloc(b.numel()).unwrap();
        dev.reduce_to_shape(&up(&dev, &g), a_shape, &mut db, b_shape).unwrap();
        check(
            &format!("reduce {a_shape:?} → {b_shape:?}"),
            &down(&dev, &db),
            ops::add::reduce_to_shape(&g, b_shape).unwrap().data(),
        );
    }
    // Column sums over many rows: the two-pass path.
    for (rows, cols) in [(5000, 37), (3, 1000), (70_000, 3)] {
        let g = rand_tensor(&mut r, &[rows, cols]);
        let mut out = dev.alloc(cols).unwrap();
        dev.sum_rows(&up(&dev, &g), &mut out, rows, cols).unwrap();
        check(
            &format!("sum_rows {rows}x{cols}"),
            &down(&dev, &out),
            ops::add::sum_rows(&g, cols).unwrap().data(),
        );
    }
    assert!(dev
        .add_broadcast(
            &dev.alloc(6).unwrap(),
            &[2, 3],
            &dev.alloc(2).unwrap(),
            &[2],
            &mut dev.alloc(6).unwrap()
        )
        .is_err());
}

#[test]
fn scale_fill_add_assign_and_sum_all_match_cpu() {
    let dev = gpu_or_skip!();
    let mut r = rng("scale");
    let n = 12_345;
    let (x, g) = (rand_tensor(&mut r, &[n]), rand_tensor(&mut r, &[n]));
    let s = 0.125f32.sqrt();
    let mut y = dev.alloc(n).unwrap();
    dev.scale(&up(&dev, &x), &mut y, n, s).unwrap();
    check("scale y", &down(&dev, &y), ops::scale::scale(&x, s).unwrap().data());
    let mut dx = dev.alloc(n).unwrap();
    dev.scale(&up(&dev, &g), &mut dx, n, s).unwrap(); // the backward: dx = s·G
    check("scale dx", &down(&dev, &dx), ops::scale::scale(&g, s).unwrap().data());

    let mut acc = up(&dev, &x);
    dev.add_assign(&mut acc, &up(&dev, &g), n).unwrap();
    let mut want = x.clone();
    want.add_assign(&g).unwrap();
    check("add_assign", &down(&dev, &acc), want.data());

    dev.fill(&mut acc, n, 2.5).unwrap();
    check("fill", &down(&dev, &acc), &vec![2.5; n]);

    let mut total = dev.alloc(1).unwrap();
    dev.sum_all(&up(&dev, &x), &mut total, n, 0.5).unwrap();
    let want = x.data().iter().map(|&v| v as f64).sum::<f64>() * 0.5;
    check("sum_all", &down(&dev, &total), &[want as f32]);
}

#[test]
fn permute_and_its_inverse_match_cpu() {
    let dev = gpu_or_skip!();
    let mut r = rng("permute");
    let cases: [(&[usize], &[usize]); 4] = [
        (&[3, 5, 4, 7], &[0, 2, 1, 3]),
        (&[2, 3, 5, 7, 3], &[4, 2, 0, 3, 1]),
        (&[13, 29], &[1, 0]),
        (&[3, 65, 3, 2, 11], &[2, 0, 3, 1, 4]),
    ];
    for (shape, perm) in cases {
        let x = rand_tensor(&mut r, shape);
        let y_cpu = ops::shape::permute(&x, perm).unwrap();
        let mut y = dev.alloc(x.numel()).unwrap();
        dev.permute(&up(&dev, &x), &mut y, shape, perm).unwrap();
        check(&format!("permute {shape:?} {perm:?}"), &down(&dev, &y), y_cpu.data());
        // The backward: the inverse permutation of a gradient shaped like y.
        let mut inv = vec![0; perm.len()];
        for (d, &p) in perm.iter().enumerate() {
            inv[p] = d;
        }
        let g = rand_tensor(&mut r, y_cpu.shape());
        let mut dx = dev.alloc(x.numel()).unwrap();
        dev.permute(&up(&dev, &g), &mut dx, g.shape(), &inv).unwrap();
        check(
            &format!("permute {shape:?} backward"),
            &down(&dev, &dx),
            ops::shape::permute(&g, &inv).unwrap().data(),
        );
    }
    assert!(dev
        .permute(&dev.alloc(6).unwrap(), &mut dev.alloc(6).unwrap(), &[2, 3], &[0, 0])
        .is_err());
}

#[test]
fn concat_slice_and_unslice_match_cpu() {
    let dev = gpu_or_skip!();
    let mut r = rng("concat");
    // The class token joining the patch tokens, and a concat along the last axis.
    for (shapes, axis) in [
        (vec![vec![3, 1, 13], vec![3, 17, 13]], 1),
        (vec![vec![2, 5, 3], vec![2, 5, 7], vec![2, 5, 1]], 2),
        (vec![vec![4, 3], vec![1, 3]], 0),
    ] {
        let xs: Vec<Tensor> = shapes.iter().map(|s| rand_tensor(&mut r, s)).collect();
        let refs: Vec<&Tensor> = xs.iter().collect();
        let y_cpu = ops::concat::concat(&refs, axis).unwrap();
        let bufs: Vec<CudaBuffer> = xs.iter().map(|x| up(&dev, x)).collect();
        let parts: Vec<(&dyn DevicePtr<f32>, &[usize])> = bufs
            .iter()
            .zip(&shapes)
            .map(|(b, s)| (b as &dyn DevicePtr<f32>, s.as_slice()))
            .collect();
        let mut y = dev.alloc(y_cpu.numel()).unwrap();
        dev.concat(&parts, &mut y, axis).unwrap();
        check(&format!("concat {shapes:?} axis {axis}"), &down(&dev, &y), y_cpu.data());
        // The backward of concat: each input's slice of G.
        let g = rand_tensor(&mut r, y_cpu.shape());
        let gg = up(&dev, &g);
        let mut off = 0;
        for s in &shapes {
            let len = s[axis];
            let mut dx = dev.alloc(s.iter().product()).unwrap();
            dev.slice(&gg, &mut dx, g.shape(), axis, off, len).unwrap();
            check(
                &format!("slice axis {axis} at {off}"),
                &down(&dev, &dx),
                ops::concat::slice(&g, axis, off, len).unwrap().data(),
            );
            // ... and unslice (select's backward) puts it back among zeros.
            let mut back = dev.alloc(g.numel()).unwrap();
            dev.unslice(&dx, &mut back, g.shape(), axis, off, len).unwrap();
            let want =
                ops::concat::unslice(&ops::concat::slice(&g, axis, off, len).unwrap(), g.shape(), axis, off).unwrap();
            check(
                &format!("unslice axis {axis} at {off}"),
                &down(&dev, &back),
                want.data(),
            );
            off += len;
        }
    }
}

// ---- cross-entropy --------------------------------------------------------------------------

#[test]
fn cross_entropy_forward_and_backward_match_cpu() {
    let dev = gpu_or_skip!();
    let mut r = rng("cross_entropy");
    for (b, c) in [(37, 10), (5, 1001), (64, 100)] {
        for smoothing in [0.0, 0.1] {
            let z = Tensor::from_vec(rand_vec(&mut r, b * c, -4.0, 4.0), &[b, c]).unwrap();
            let labels: Vec<u32> = (0..b).map(|_| r.below(c) as u32).collect();
            let (loss_cpu, p_cpu) = ops::cross_entropy::forward(&z, &labels, smoothing).unwrap();
            let gscale = Tensor::scalar(0.7);
            let dz_cpu = ops::cross_entropy::backward(&gscale, &p_cpu, &labels, smoothing).unwrap();
            let gl = dev.upload_u32(&labels).unwrap();
            let (mut p, mut loss) = (dev.alloc(b * c).unwrap(), dev.alloc(1).unwrap());
            dev.cross_entropy_fwd(&up(&dev, &z), &gl, &mut p, &mut loss, b, c, smoothing)
                .unwrap();
            let tag = format!("cross_entropy {b}x{c} ε={smoothing}");
            check(&format!("{tag} loss"), &down(&dev, &loss), loss_cpu.data());
            check(&format!("{tag} p"), &down(&dev, &p), p_cpu.data());
            let mut dz = dev.alloc(b * c).unwrap();
            dev.cross_entropy_bwd(&up(&dev, &gscale), &p, &gl, &mut dz, b, c, smoothing)
                .unwrap();
            check(&format!("{tag} dz"), &down(&dev, &dz), dz_cpu.data());
        }
    }
}

// ---- dropout --------------------------------------------------------------------------------

#[test]
fn dropout_mask_is_the_cpu_mask_bit_for_bit() {
    let dev = gpu_or_skip!();
    let mut r = rng("dropout");
    let n = 100_003;
    let x = Tensor::from_vec(rand_vec(&mut r, n, 0.5, 1.5), &[n]).unwrap(); // no zeros: a zero output means dropped
    for (p, seed) in [
        (0.1f32, 7u64),
        (0.5, 0xdead_beef_0123_4567),
        (0.0, 42),
        (0.9, r.next_u64()),
    ] {
        let want = ops::dropout::apply_mask(&x, p, seed).unwrap();
        let mut y = dev.alloc(n).unwrap();
        dev.dropout_fwd(&up(&dev, &x), &mut y, n, p, seed).unwrap();
        let got = down(&dev, &y);
        let mismatches = bit_mismatches(&got, want.data());
        assert_eq!(
            mismatches, 0,
            "dropout p={p} seed={seed}: {mismatches} elements differ from the CPU"
        );
        check(&format!("dropout p={p} y"), &got, want.data());
        let g = rand_tensor(&mut r, &[n]);
        let mut dx = dev.alloc(n).unwrap();
        dev.dropout_bwd(&up(&dev, &g), &mut dx, n, p, seed).unwrap();
        let got = down(&dev, &dx);
        let want = ops::dropout::apply_mask(&g, p, seed).unwrap();
        assert!(
            got.iter().zip(want.data()).all(|(a, b)| a.to_bits() == b.to_bits()),
            "dropout backward p={p}"
        );
    }
    assert!(dev
        .dropout_fwd(&dev.alloc(4).unwrap(), &mut dev.alloc(4).unwrap(), 4, 1.0, 0)
        .is_err());
}

/// The residual add fused with dropout: bit for bit the CPU's `add_masked` (same mask, one
/// rounded multiply and one rounded add on both devices).
#[test]
fn dropout_add_matches_cpu_bit_for_bit() {
    let dev = gpu_or_skip!();
    let mut r = rng("dropout_add");
    let n = 50_021;
    let (res, x) = (rand_tensor(&mut r, &[n]), rand_tensor(&mut r, &[n]));
    for (p, seed) in [(0.1f32, 5u64), (0.5, r.next_u64())] {
        let mut y = dev.alloc(n).unwrap();
        dev.dropout_add_fwd(&up(&dev, &res), &up(&dev, &x), &mut y, n, p, seed)
            .unwrap();
        let got = down(&dev, &y);
        let want = ops::dropout::add_masked(&res, &x, p, seed).unwrap();
        let mismatches = bit_mismatches(&got, want.data());
        assert_eq!(
            mismatches, 0,
            "dropout_add p={p}: {mismatches} elements differ from the CPU"
        );
        check(&format!("dropout_add p={p}"), &got, want.data());
    }
}

// ---- Adam -----------------------------------------------------------------------------------

fn set_grad(params: &mut ParamStore, id: vitcore::ParamId, g: &[f32]) {
    let shape = params.value(id).shape().to_vec();
    let mut graph = Graph::new();
    let x = graph.param(params, id);
    let grads = graph.backward_with(x, Tensor::from_slice(g, &shape).unwrap()).unwrap();
    params.accumulate_grads(&grads).unwrap();
}

#[test]
fn fused_adam_matches_cpu_adam() {
    let dev = gpu_or_skip!();
    let mut r = rng("adam");
    for (mode, wd) in [(DecayMode::L2, 0.0), (DecayMode::L2, 0.1), (DecayMode::Decoupled, 0.05)] {
        let cfg = AdamConfig {
            lr: 3e-3,
            betas: (0.9, 0.999),
            eps: 1e-8,
            weight_decay: wd,
        };
        // One decayed weight and one no-decay bias, of awkward sizes.
        let names = ["blocks.0.mlp.fc1.weight", "blocks.0.mlp.fc1.bias"];
        let sizes = [1003usize, 37];
        let mut params = ParamStore::new();
        let ids: Vec<_> = names
            .iter()
            .zip(sizes)
            .map(|(n, s)| params.add(*n, rand_tensor(&mut r, &[s])).unwrap())
            .collect();
        let mut opt = Adam::new(cfg, mode).unwrap().with_no_decay(default_no_decay);
        let mut gp: Vec<CudaBuffer> = ids.iter().map(|&id| up(&dev, params.value(id))).collect();
        let mut gm: Vec<CudaBuffer> = sizes.iter().map(|&s| dev.alloc_zeros(s).unwrap()).collect();
        let mut gv: Vec<CudaBuffer> = sizes.iter().map(|&s| dev.alloc_zeros(s).unwrap()).collect();
        for step in 1..=6u64 {
            params.zero_grad();
            let grads: Vec<Vec<f32>> = sizes.iter().map(|&s| rand_vec(&mut r, s, -2.0, 2.0)).collect();
            for (&id, g) in ids.iter().zip(&grads) {
                set_grad(&mut params, id, g);
            }
            opt.step(&mut params).unwrap();
            for (i, &id) in ids.iter().enumerate() {
                let k = AdamCoeffs::new(&cfg, mode, opt.decays(names[i]), step);
                let gg = dev.upload(&grads[i]).unwrap();
                dev.adam_step(&mut gp[i], &gg, &mut gm[i], &mut gv[i], sizes[i], &k)
                    .unwrap();
                let got = down(&dev, &gp[i]);
                let want = params.value(id).data();
                check(&format!("adam {mode:?} wd={wd} step {step} {}", names[i]), &got, want);
                let exact = got.iter().zip(want).all(|(a, b)| a.to_bits() == b.to_bits());
                println!("    bit-identical to the CPU: {exact}");
            }
        }
    }
}

// ---- allocator ------------------------------------------------------------------------------

/// On the cudasim simulator the allocator tells it that a buffer it hands out again holds no
/// data, so a kernel that reads a new tensor before writing it is caught (initcheck) in the
/// steady state too, not only on the first use of a size. (On a GPU there is nothing to see.)
#[test]
fn a_recycled_buffer_reads_as_never_written_on_the_simulator() {
    let dev = gpu_or_skip!();
    if !dev.is_simulator() {
        return;
    }
    let n = 1000;
    drop(dev.upload(&vec![1.0; n]).unwrap()); // written, then back to the pool
    let recycled = dev.alloc(n).unwrap(); // the same buffer, its old contents stale
    let mut out = dev.alloc(n).unwrap();
    let e = dev.scale(&recycled, &mut out, n, 2.0).unwrap_err().to_string();
    assert!(e.contains("initcheck") && e.contains("never written"), "{e}");
}

#[test]
fn allocator_reuses_buffers_in_the_steady_state() {
    let dev = gpu_or_skip!();
    let sizes = [1usize, 255, 1000, 4097, 123_457, 1 << 20];
    let step = || {
        // A "training step": allocate, use and drop buffers of the same sizes.
        let bufs: Vec<CudaBuffer> = sizes.iter().map(|&s| dev.alloc(s).unwrap()).collect();
        for (b, &s) in bufs.iter().zip(&sizes) {
            assert_eq!(b.len(), s);
            assert!(b.capacity() >= s);
        }
    };
    step();
    let before = dev.pool_stats();
    for _ in 0..5 {
        step();
    }
    let after = dev.pool_stats();
    // Other tests share the device and may allocate concurrently; this test's own requests are
    // all served from the cache, so the reuse count grows by at least 5 × 6.
    assert!(after.reuses >= before.reuses + 30, "{before:?} → {after:?}");
    let round_trip = dev.upload(&[1.0, -2.0, 3.5]).unwrap();
    assert_eq!(dev.download(&round_trip).unwrap(), [1.0, -2.0, 3.5]);
    println!("pool: {after:?}");
}

#[test]
fn device_describes_itself() {
    let dev = gpu_or_skip!();
    println!("{}", dev.describe());
    let names = dev.kernel_names();
    for k in [
        "matmul_tiled",
        "matmul_reg",
        "softmax_fwd_warp",
        "layernorm_fwd",
        "adam_step",
        "dropout_fwd",
        "patchify_bwd",
        "cross_entropy_fwd",
    ] {
        assert!(names.contains(&k), "{k} not loaded: {names:?}");
    }
}
