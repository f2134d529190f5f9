//! Gradient checks of every op, one `#[test]` per op (family).
//!
//! Each check (see `common::Check::run`) does two things on fresh random inputs at awkward sizes
//! (odd, prime, never a multiple of the GEMM's MR = 6 / NR = 16 / MC = 96 / KC = 256 blocks):
//! (a) forward: engine f32 output vs a naive f64 loop, relative 2-norm error ≤ `FWD_TOL` = 1e-5
//!     (and max-abs error / max-abs reference ≤ 1e-5) unless a test states otherwise;
//! (b) backward: autograd gradient for a random upstream gradient R vs the central finite
//!     difference (in f64, on the reference) of L = Σ R ⊙ ref(inputs), relative error ≤
//!     `GRAD_TOL` = 1e-4 unless stated otherwise.
//! Any NaN or infinity on either side fails both.

mod common;

use common::*;
use vitcore::ops::GeluKind;
use vitcore::rng::Rng;
use vitcore::{Graph, Tensor};

// ---------------------------------------------------------------------------------------------
// matmul
// ---------------------------------------------------------------------------------------------

#[allow(clippy::too_many_arguments)]
fn matmul_case(
    rng: &mut Rng,
    check: &Check,
    batch: &[usize],
    m: usize,
    k: usize,
    n: usize,
    ta: bool,
    tb: bool,
) -> Report {
    let mut ash = batch.to_vec();
    ash.extend(if ta { [k, m] } else { [m, k] });
    let mut bsh = batch.to_vec();
    bsh.extend(if tb { [n, k] } else { [k, n] });
    let a = randn(rng, &ash, 1.0);
    let b = randn(rng, &bsh, 1.0);
    poison_pool(&[a.data.len(), b.data.len(), numel(batch) * m * n]);
    check.run(
        &format!("matmul ta={ta} tb={tb} batch={batch:?} M={m} K={k} N={n}"),
        &[a, b],
        move |g, v| g.matmul_t(v[0], v[1], ta, tb),
        move |x| matmul_ref(&x[0], &ash, &x[1], &bsh, ta, tb),
    )
}

/// All four (ta, tb) combinations, without batch dims, with batch dims [2, 3] (rank 4) and with a
/// batch of 5 (≥ 2·threads: the engine then runs one product per thread). Tolerances: default.
#[test]
fn matmul_all_transposes_and_batch_dims() {
    let mut rng = Rng::new(1);
    let check = Check::default();
    for (ta, tb) in [(false, false), (false, true), (true, false), (true, true)] {
        for batch in [&[][..], &[2, 3][..], &[5][..]] {
            for (m, k, n) in [(5, 7, 3), (7, 13, 11), (1, 17, 1)] {
                matmul_case(&mut rng, &check, batch, m, k, n, ta, tb).assert_ok();
            }
        }
    }
}

/// Sizes beyond every GEMM block (M > MC = 96, K > KC = 256, N > NR = 16, and N > KC so that
/// dA = G·Bᵀ has an inner dimension > KC too), tensors > 4096 elements (pooled buffers, the pool
/// poisoned with NaN first). FD on 24 random elements per input. Forward tolerance 1e-5 (f32 sums of 263
/// products: ~1e-6 expected); gradient 1e-4.
#[test]
fn matmul_beyond_block_sizes() {
    let mut rng = Rng::new(2);
    let check = Check::default().samples(24);
    for (ta, tb) in [(false, false), (false, true), (true, false), (true, true)] {
        matmul_case(&mut rng, &check, &[], 101, 263, 43, ta, tb).assert_ok();
        matmul_case(&mut rng, &check, &[], 13, 17, 271, ta, tb).assert_ok();
    }
    matmul_case(&mut rng, &check, &[3], 97, 259, 23, false, true).assert_ok();
}

// ---------------------------------------------------------------------------------------------
// linear
// ---------------------------------------------------------------------------------------------

fn linear_case(rng: &mut Rng, check: &Check, xsh: &[usize], dout: usize, bias: bool) -> Report {
    let din = *xsh.last().unwrap();
    let mut inputs = vec![randn(rng, xsh, 1.0), randn(rng, &[dout, din], 0.5)];
    if bias {
        inputs.push(randn(rng, &[dout], 1.0));
    }
    let rows = numel(xsh) / din;
    poison_pool(&[rows * dout, numel(xsh), dout * din]);
    check.run(
        &format!("linear x={xsh:?} out={dout} bias={bias}"),
        &inputs,
        move |g, v| g.linear(v[0], v[1], if bias { Some(v[2]) } else { None }),
        move |x| linear_ref(&x[0], &x[1], if bias { Some(&x[2][..]) } else { None }, din, dout),
    )
}

/// Linear with and without bias, 1-D, 2-D and 3-D inputs. Tolerances: default.
#[test]
fn linear_with_and_without_bias() {
    let mut rng = Rng::new(3);
    let check = Check::default();
    for bias in [true, false] {
        linear_case(&mut rng, &check, &[2, 5, 7], 3, bias).assert_ok();
        linear_case(&mut rng, &check, &[13, 11], 17, bias).assert_ok();
        linear_case(&mut rng, &check, &[1, 1, 5], 1, bias).assert_ok();
        linear_case(&mut rng, &check, &[11], 7, bias).assert_ok();
    }
}

/// Linear beyond the GEMM blocks (rows 111 > MC, in 263 > KC), > 4096-element tensors with a
/// NaN-poisoned pool; FD on 20 random elements per input. Tolerances: default.
#[test]
fn linear_beyond_block_sizes() {
    let mut rng = Rng::new(4);
    let check = Check::default().samples(20);
    linear_case(&mut rng, &check, &[3, 37, 263], 45, true).assert_ok();
    linear_case(&mut rng, &check, &[3, 37, 263], 45, false).assert_ok();
}

/// The fused linear equals the composition reshape → matmul_t(x, W, tb) → add_bias → reshape,
/// forward and every gradient (both computed by the engine). Tolerance 1e-6 relative: the two
/// differ only in where the bias enters the f32 sum.
#[test]
fn linear_equals_matmul_t_plus_add_bias() {
    const TOL: f64 = 1e-6;
    let mut rng = Rng::new(5);
    let (b, t, din, dout) = (3, 7, 11, 5);
    let x = randn(&mut rng, &[b, t, din], 1.0);
    let w = randn(&mut rng, &[dout, din], 0.5);
    let bias = randn(&mut rng, &[dout], 1.0);
    let r = Tensor::from_vec(rng.normal_vec(b * t * dout, 1.0), &[b, t, dout]).unwrap();

    let run = |fused: bool| {
        let mut g = Graph::new();
        let (xv, wv, bv) = (g.leaf(tensor(&x)), g.leaf(tensor(&w)), g.leaf(tensor(&bias)));
        let y = if fused {
            g.linear(xv, wv, Some(bv)).unwrap()
        } else {
            let x2 = g.reshape(xv, &[b * t, din]).unwrap();
            let y2 = g.matmul_t(x2, wv, false, true).unwrap();
            let y2 = g.add_bias(y2, bv).unwrap();
            g.reshape(y2, &[b, t, dout]).unwrap()
        };
        let grads = g.backward_with(y, r.clone()).unwrap();
        let out = [y, xv, wv, bv].map(|v| match v {
            v if v == y => to_f64(g.value(y).data()),
            v => to_f64(grads.get(v).expect("gradient").data()),
        });
        (g.shape(y).to_vec(), out)
    };
    let (shape_f, fused) = run(true);
    let (shape_c, composed) = run(false);
    assert_eq!(shape_f, shape_c);
    for (what, (f, c)) in ["forward", "dx", "dW", "db"].iter().zip(fused.iter().zip(&composed)) {
        let e = rel_err(f, c);
        assert!(
            e <= TOL,
            "linear vs matmul_t+add_bias, {what}: rel err {e:.2e} > {TOL:.0e}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// add, add_bias, add_broadcast, scale
// ---------------------------------------------------------------------------------------------

/// Residual add of equal shapes. Tolerances: default.
#[test]
fn add_same_shape() {
    let mut rng = Rng::new(6);
    for shape in [&[3, 7, 5][..], &[13][..], &[2, 3, 5, 7][..]] {
        let (a, b) = (randn(&mut rng, shape, 1.0), randn(&mut rng, shape, 1.0));
        gradcheck(
            &format!("add {shape:?}"),
            &[a, b],
            |g, v| g.add(v[0], v[1]),
            |x| add_ref(&x[0], &x[1]),
        )
        .assert_ok();
    }
}

/// Bias add over the last dimension (the bias gradient sums over all rows). Tolerances: default.
#[test]
fn add_bias_last_dim() {
    let mut rng = Rng::new(7);
    for xsh in [&[3, 7, 5][..], &[13, 11][..], &[17][..]] {
        let d = *xsh.last().unwrap();
        let x = randn(&mut rng, xsh, 1.0);
        let b = randn(&mut rng, &[d], 1.0);
        let shape = xsh.to_vec();
        gradcheck(
            &format!("add_bias {xsh:?} + [{d}]"),
            &[x, b],
            |g, v| g.add_bias(v[0], v[1]),
            move |x| add_ref(&x[0], &broadcast_ref(&x[1], &[d], &shape)),
        )
        .assert_ok();
    }
}

/// Broadcast add: position embedding [1,T,D] onto [B,T,D]; a middle-dim broadcast [B,1,D];
/// trailing [T,1]; [D]; [1]; a 4-D case with two broadcast dims. Tolerances: default.
#[test]
fn add_broadcast_shapes() {
    let mut rng = Rng::new(8);
    let cases: &[(&[usize], &[usize])] = &[
        (&[2, 7, 5], &[1, 7, 5]),
        (&[3, 7, 5], &[3, 1, 5]),
        (&[2, 7, 5], &[7, 1]),
        (&[2, 3, 5], &[5]),
        (&[3, 5], &[1]),
        (&[2, 3, 5, 7], &[2, 1, 5, 1]),
        (&[3, 7, 5], &[3, 7, 5]),
    ];
    for &(ash, bsh) in cases {
        let (a, b) = (randn(&mut rng, ash, 1.0), randn(&mut rng, bsh, 1.0));
        let (ash2, bsh2) = (ash.to_vec(), bsh.to_vec());
        gradcheck(
            &format!("add_broadcast {ash:?} + {bsh:?}"),
            &[a, b],
            |g, v| g.add_broadcast(v[0], v[1]),
            move |x| add_ref(&x[0], &broadcast_ref(&x[1], &bsh2, &ash2)),
        )
        .assert_ok();
    }
}

/// `s·x` with a negative and an irrational scale. Tolerances: default.
#[test]
fn scale_by_constant() {
    let mut rng = Rng::new(10);
    for s in [-0.37f32, 1.0 / 7f32.sqrt(), 0.0] {
        let x = randn(&mut rng, &[5, 13], 1.0);
        gradcheck(
            &format!("scale {s}"),
            &[x],
            move |g, v| g.scale(v[0], s),
            move |x| x[0].iter().map(|v| v * s as f64).collect(),
        )
        .assert_ok();
    }
}

// ---------------------------------------------------------------------------------------------
// reshape, permute, transpose, broadcast_to
// ---------------------------------------------------------------------------------------------

/// Reshape alone, and reshape feeding a softmax over the new last dimension (so a wrong reshape
/// of the gradient would mix rows). Tolerances: default.
#[test]
fn reshape_alone_and_composed() {
    let mut rng = Rng::new(11);
    let x = randn(&mut rng, &[3, 5, 7], 1.0);
    gradcheck(
        "reshape [3,5,7] -> [15,7]",
        std::slice::from_ref(&x),
        |g, v| g.reshape(v[0], &[15, 7]),
        |x| x[0].clone(),
    )
    .assert_ok();
    gradcheck(
        "reshape [3,5,7] -> [105]",
        std::slice::from_ref(&x),
        |g, v| g.reshape(v[0], &[105]),
        |x| x[0].clone(),
    )
    .assert_ok();
    gradcheck(
        "reshape [3,5,7] -> [5,21] -> softmax",
        &[x],
        |g, v| {
            let r = g.reshape(v[0], &[5, 21])?;
            g.softmax(r)
        },
        |x| softmax_ref(&x[0], 21),
    )
    .assert_ok();
}

/// 4-D permutes ([0,2,1,3] = split heads, two with perm ≠ perm⁻¹ so a backward that used perm
/// instead of its inverse fails), the attention 5-D [2,0,3,1,4], and a 2-D swap. Tolerances: default.
#[test]
fn permute_nd() {
    let mut rng = Rng::new(12);
    let cases: &[(&[usize], &[usize])] = &[
        (&[2, 3, 5, 7], &[0, 2, 1, 3]),
        (&[2, 3, 5, 7], &[3, 1, 0, 2]),
        (&[2, 3, 5, 7], &[2, 0, 3, 1]),
        (&[2, 5, 3, 3, 2], &[2, 0, 3, 1, 4]),
        (&[7, 13], &[1, 0]),
        (&[3, 5, 7], &[0, 1, 2]),
    ];
    for &(shape, perm) in cases {
        let x = randn(&mut rng, shape, 1.0);
        let (s, p) = (shape.to_vec(), perm.to_vec());
        gradcheck(
            &format!("permute {shape:?} by {perm:?}"),
            &[x],
            |g, v| g.permute(v[0], perm),
            move |x| permute_ref(&x[0], &s, &p),
        )
        .assert_ok();
    }
}

/// Transpose of two dims (0↔2, 1↔2, 0↔1 of a rank-3 tensor). Tolerances: default.
#[test]
fn transpose_dims() {
    let mut rng = Rng::new(14);
    let shape = [3, 5, 7];
    for (d0, d1) in [(0, 2), (1, 2), (0, 1), (2, 2)] {
        let x = randn(&mut rng, &shape, 1.0);
        let mut perm = vec![0, 1, 2];
        perm.swap(d0, d1);
        gradcheck(
            &format!("transpose {shape:?} ({d0},{d1})"),
            &[x],
            move |g, v| g.transpose(v[0], d0, d1),
            move |x| permute_ref(&x[0], &shape, &perm),
        )
        .assert_ok();
    }
}

/// broadcast_to: class token [1,1,D] → [B,1,D], a bias-like [D] → [B,T,D], middle dim
/// [3,1,5] → [3,4,5], two non-leading dims [1,7,1] → [2,7,3], new leading dim [7,1] → [2,7,3].
/// Tolerances: default.
#[test]
fn broadcast_to_shapes() {
    let mut rng = Rng::new(15);
    let cases: &[(&[usize], &[usize])] = &[
        (&[1, 1, 5], &[3, 1, 5]),
        (&[5], &[3, 7, 5]),
        (&[3, 1, 5], &[3, 4, 5]),
        (&[1, 7, 1], &[2, 7, 3]),
        (&[7, 1], &[2, 7, 3]),
        (&[2, 7, 3], &[2, 7, 3]),
    ];
    for &(xsh, to) in cases {
        let x = randn(&mut rng, xsh, 1.0);
        let (xs, t) = (xsh.to_vec(), to.to_vec());
        gradcheck(
            &format!("broadcast_to {xsh:?} -> {to:?}"),
            &[x],
            |g, v| g.broadcast_to(v[0], to),
            move |x| broadcast_ref(&x[0], &xs, &t),
        )
        .assert_ok();
    }
}

// ---------------------------------------------------------------------------------------------
// concat, select
// ---------------------------------------------------------------------------------------------

/// Concat along axis 1 (class token [B,1,D] ++ tokens [B,N,D]), axis 0 (three parts), and the
/// last axis. Tolerances: default.
#[test]
fn concat_axes() {
    let mut rng = Rng::new(16);
    let cases: &[(&[&[usize]], usize)] = &[
        (&[&[2, 1, 5], &[2, 7, 5]], 1),
        (&[&[2, 3, 5], &[3, 3, 5], &[1, 3, 5]], 0),
        (&[&[3, 2, 5], &[3, 2, 4]], 2),
        (&[&[13], &[7]], 0),
    ];
    for &(shapes, axis) in cases {
        let inputs: Vec<Input> = shapes.iter().map(|s| randn(&mut rng, s, 1.0)).collect();
        let sh: Vec<Vec<usize>> = shapes.iter().map(|s| s.to_vec()).collect();
        gradcheck(
            &format!("concat {shapes:?} axis {axis}"),
            &inputs,
            move |g, v| g.concat(v, axis),
            move |x| {
                let parts: Vec<(&[f64], &[usize])> = x.iter().zip(&sh).map(|(d, s)| (&d[..], &s[..])).collect();
                concat_ref(&parts, axis)
            },
        )
        .assert_ok();
    }
}

/// The ViT input pattern: class token [1,1,D] broadcast to [B,1,D], concatenated before the
/// patch tokens, plus the position embedding [1,N+1,D]. Tolerances: default.
#[test]
fn class_token_and_pos_embed_pattern() {
    let mut rng = Rng::new(17);
    let (b, n, d) = (3, 7, 5);
    let inputs = [
        randn(&mut rng, &[1, 1, d], 1.0),
        randn(&mut rng, &[b, n, d], 1.0),
        randn(&mut rng, &[1, n + 1, d], 1.0),
    ];
    gradcheck(
        "cls broadcast + concat + pos_embed",
        &inputs,
        |g, v| {
            let cls = g.broadcast_to(v[0], &[b, 1, d])?;
            let x = g.concat(&[cls, v[1]], 1)?;
            g.add_broadcast(x, v[2])
        },
        |x| {
            let cls = broadcast_ref(&x[0], &[1, 1, d], &[b, 1, d]);
            let cat = concat_ref(&[(&cls, &[b, 1, d]), (&x[1], &[b, n, d])], 1);
            add_ref(&cat, &broadcast_ref(&x[2], &[1, n + 1, d], &[b, n + 1, d]))
        },
    )
    .assert_ok();
}

/// select: axis 1 index 0 (the class token), axis 0 index 2 (q/k/v split), last axis, last index.
/// Tolerances: default (unselected positions must get exactly zero gradient: FD gives 0 there).
#[test]
fn select_axes() {
    let mut rng = Rng::new(18);
    let cases: &[(&[usize], usize, usize)] = &[
        (&[3, 7, 5], 1, 0),
        (&[5, 3, 4], 0, 2),
        (&[3, 4, 7], 2, 6),
        (&[3, 4, 7], 1, 3),
    ];
    for &(shape, axis, index) in cases {
        let x = randn(&mut rng, shape, 1.0);
        let s = shape.to_vec();
        gradcheck(
            &format!("select {shape:?} axis {axis} index {index}"),
            &[x],
            move |g, v| g.select(v[0], axis, index),
            move |x| select_ref(&x[0], &s, axis, index),
        )
        .assert_ok();
    }
}

// ---------------------------------------------------------------------------------------------
// softmax
// ---------------------------------------------------------------------------------------------

/// Softmax over the last axis on ordinary inputs. Tolerances: default.
#[test]
fn softmax_rows() {
    let mut rng = Rng::new(19);
    for shape in [&[3, 5, 7][..], &[13, 1][..], &[2, 29][..]] {
        let x = randn(&mut rng, shape, 2.0);
        let n = *shape.last().unwrap();
        gradcheck(
            &format!("softmax {shape:?}"),
            &[x],
            |g, v| g.softmax(v[0]),
            move |x| softmax_ref(&x[0], n),
        )
        .assert_ok();
    }
}

/// Stability: rows in 80..100 (e^x overflows f32 above 88.7 without the max subtraction), rows in
/// -100..-80 (would underflow to 0/0), a row in 88..89 and a row spread over ±1000: forward and
/// gradient checked with the default tolerances (the error functions fail on any NaN/inf), and
/// each row sums to 1 within 1e-6. A row of equal values 1e30 must give exactly-uniform finite
/// output (forward only: no f64 finite difference can resolve a step at 1e30).
#[test]
fn softmax_large_values_are_stable() {
    let mut rng = Rng::new(20);
    let n = 11;
    let mut data = Vec::new();
    for _ in 0..2 {
        data.extend((0..n).map(|_| rng.uniform_in(80.0, 100.0)));
    }
    data.extend((0..n).map(|_| rng.uniform_in(-100.0, -80.0)));
    data.extend((0..n).map(|_| rng.uniform_in(88.0, 89.0)));
    data.extend((0..n).map(|i| [1000.0, -1000.0, 0.0, 999.0, -3.0][i % 5]));
    let rows = data.len() / n;
    let x = input(data, &[rows, n]);
    let mut g = Graph::new();
    let xv = g.leaf(tensor(&x));
    let y = g.softmax(xv).unwrap();
    for (r, row) in g.value(y).data().chunks(n).enumerate() {
        assert!(row.iter().all(|v| v.is_finite() && *v >= 0.0), "row {r}: {row:?}");
        let s: f64 = row.iter().map(|&v| v as f64).sum();
        assert!((s - 1.0).abs() <= 1e-6, "row {r} sums to {s}");
    }
    gradcheck(
        "softmax large values",
        &[x],
        |g, v| g.softmax(v[0]),
        move |x| softmax_ref(&x[0], n),
    )
    .assert_ok();

    let mut g = Graph::new();
    let huge = g.leaf(Tensor::full(&[2, n], 1.0e30));
    let y = g.softmax(huge).unwrap();
    let e = max_rel_err(&to_f64(g.value(y).data()), &vec![1.0 / n as f64; 2 * n]);
    assert!(e <= 1e-6, "softmax of equal huge values: {:?}", g.value(y).data());
    let dx = g
        .backward_with(y, Tensor::from_vec(rng.normal_vec(2 * n, 1.0), &[2, n]).unwrap())
        .unwrap();
    assert!(
        dx.get(huge).unwrap().data().iter().all(|v| v.is_finite()),
        "NaN/inf gradient at 1e30"
    );
}

// ---------------------------------------------------------------------------------------------
// layernorm
// ---------------------------------------------------------------------------------------------

fn layernorm_case(x: Input, rng: &mut Rng, eps: f32, check: &Check) -> Report {
    let d = *x.shape.last().unwrap();
    let gamma = randn_around(rng, &[d], 1.0, 0.3);
    let beta = randn(rng, &[d], 0.5);
    check.run(
        &format!("layernorm {:?} eps {eps}", x.shape),
        &[x, gamma, beta],
        move |g, v| g.layernorm(v[0], v[1], v[2], eps),
        move |x| layernorm_ref(&x[0], d, &x[1], &x[2], eps as f64),
    )
}

/// Layer norm (affine) w.r.t. x, γ and β: ordinary rows; rows with a large mean (10) relative to
/// their spread; rows whose variance (~0.0025) is comparable to eps = 1e-2 (checks eps sits
/// inside the square root, added to the biased variance); D = 1 (output is β, dx = 0).
/// Tolerances: default.
#[test]
fn layernorm_affine() {
    let mut rng = Rng::new(21);
    let check = Check::default();
    let x = randn(&mut rng, &[3, 5, 13], 1.0);
    layernorm_case(x, &mut rng, 1e-5, &check).assert_ok();
    let x = randn_around(&mut rng, &[7, 11], 10.0, 1.0);
    layernorm_case(x, &mut rng, 1e-6, &check).assert_ok();
    let x = randn(&mut rng, &[5, 7], 0.05);
    layernorm_case(x, &mut rng, 1e-2, &check).assert_ok();
    let x = randn(&mut rng, &[5, 1], 1.0);
    layernorm_case(x, &mut rng, 1e-5, &check).assert_ok();
}

// ---------------------------------------------------------------------------------------------
// gelu
// ---------------------------------------------------------------------------------------------

fn gelu_inputs(rng: &mut Rng) -> Input {
    let mut v = rng.normal_vec(77, 3.0);
    v.extend([-1.0e3f32, -50.0, -20.0, -10.0, -6.0, 0.0, 6.0, 10.0, 20.0, 1.0e3]);
    input(v, &[3, 29])
}

/// GELU, exact (erf) and tanh forms, on N(0, 3²) values plus large |x| up to 1000 and x = 0.
/// Tolerances: default.
#[test]
fn gelu_both_kinds() {
    let mut rng = Rng::new(22);
    for (kind, f) in [
        (GeluKind::Erf, gelu_erf_ref as fn(f64) -> f64),
        (GeluKind::Tanh, gelu_tanh_ref),
    ] {
        let x = gelu_inputs(&mut rng);
        gradcheck(
            &format!("gelu {kind:?}"),
            &[x],
            move |g, v| g.gelu(v[0], kind),
            move |x| x[0].iter().map(|&v| f(v)).collect(),
        )
        .assert_ok();
    }
}

/// The CPU's polynomial path for exact GELU (used when eight inputs in a row lie in [−2, 2.5]):
/// a dense grid over that range, every value within 1e-5 relative and 2e-7 on Φ's scale, every
/// derivative within 5e-7 absolute of the f64 functions, both 1e-6 relative in norm; then a
/// gradient check on N(0, 0.7²) inputs, which take that path almost everywhere. Tolerances:
/// default.
#[test]
fn gelu_erf_polynomial_range() {
    let xs: Vec<f32> = (0..1600).map(|i| -2.0 + 4.5 * i as f32 / 1599.0).collect();
    let n = xs.len();
    let mut g = Graph::new();
    let xv = g.leaf(Tensor::from_vec(xs.clone(), &[n]).unwrap());
    let y = g.gelu(xv, GeluKind::Erf).unwrap();
    let grads = g.backward_with(y, Tensor::ones(&[n])).unwrap();
    let x64 = to_f64(&xs);
    let pdf = |v: f64| (-0.5 * v * v).exp() / (2.0 * std::f64::consts::PI).sqrt();
    let y_ref: Vec<f64> = x64.iter().map(|&v| gelu_erf_ref(v)).collect();
    let d_ref: Vec<f64> = x64
        .iter()
        .map(|&v| 0.5 * erfc64(-v / std::f64::consts::SQRT_2) + v * pdf(v))
        .collect();
    let (y_got, d_got) = (to_f64(g.value(y).data()), to_f64(grads.get(xv).unwrap().data()));
    for i in 0..n {
        // Forward: gelu = x·Φ, so Φ's error is scaled by |x| (≤ 2.5).
        let (ey, ed) = ((y_got[i] - y_ref[i]).abs(), (d_got[i] - d_ref[i]).abs());
        assert!(ey <= 2e-7 * x64[i].abs().max(1.0), "gelu({}) off by {ey:.2e}", xs[i]);
        assert!(
            ey <= 1e-5 * y_ref[i].abs(),
            "gelu({}) off by {:.2e} relative",
            xs[i],
            ey / y_ref[i].abs()
        );
        assert!(ed <= 5e-7, "gelu'({}) off by {ed:.2e}", xs[i]);
    }
    assert!(rel_err(&y_got, &y_ref) <= 1e-6 && rel_err(&d_got, &d_ref) <= 1e-6);
    let mut rng = Rng::new(23);
    gradcheck(
        "gelu Erf, small inputs",
        &[randn(&mut rng, &[8, 41], 0.7)],
        |g, v| g.gelu(v[0], GeluKind::Erf),
        |x| x[0].iter().map(|&v| gelu_erf_ref(v)).collect(),
    )
    .assert_ok();
}

/// Exact GELU's negative tail, x ∈ [-9, -3], where gelu(x) is 1e-18..1e-2 and `1 + erf` would
/// cancel to nothing in f32: every element must have relative error ≤ 1e-5 (forward, vs f64),
/// and every element of the gradient ≤ 1e-4 relative (vs the f64 derivative Φ(x) + x·φ(x)).
#[test]
fn gelu_erf_negative_tail_elementwise() {
    const FWD_ELEM_TOL: f64 = 1e-5;
    const GRAD_ELEM_TOL: f64 = 1e-4;
    let xs: Vec<f32> = (0..29).map(|i| -9.0 + 6.0 * i as f32 / 28.0).collect();
    let mut g = Graph::new();
    let xv = g.leaf(Tensor::from_vec(xs.clone(), &[29]).unwrap());
    let y = g.gelu(xv, GeluKind::Erf).unwrap();
    let grads = g.backward_with(y, Tensor::ones(&[29])).unwrap();
    let x64 = to_f64(&xs);
    let y_ref: Vec<f64> = x64.iter().map(|&v| gelu_erf_ref(v)).collect();
    let e = elementwise_rel_err(&to_f64(g.value(y).data()), &y_ref);
    assert!(
        e <= FWD_ELEM_TOL,
        "gelu tail forward: element-wise rel err {e:.2e} > {FWD_ELEM_TOL:.0e}"
    );
    let pdf = |v: f64| (-0.5 * v * v).exp() / (2.0 * std::f64::consts::PI).sqrt();
    let d_ref: Vec<f64> = x64
        .iter()
        .map(|&v| 0.5 * erfc64(-v / std::f64::consts::SQRT_2) + v * pdf(v))
        .collect();
    let e = elementwise_rel_err(&to_f64(grads.get(xv).unwrap().data()), &d_ref);
    assert!(
        e <= GRAD_ELEM_TOL,
        "gelu tail gradient: element-wise rel err {e:.2e} > {GRAD_ELEM_TOL:.0e}"
    );
}

// ---------------------------------------------------------------------------------------------
// patchify
// ---------------------------------------------------------------------------------------------

/// Patchify `[B,C,H,W] → [B,N,C·P·P]` at several awkward geometries, including non-square images,
/// P = 1 and a single patch. Tolerances: default (it is a permutation: errors should be 0).
#[test]
fn patchify_geometries() {
    let mut rng = Rng::new(24);
    for (dims, p) in [
        ([2, 3, 9, 6], 3),
        ([1, 2, 10, 15], 5),
        ([3, 1, 7, 7], 7),
        ([2, 2, 3, 5], 1),
    ] {
        let x = randn(&mut rng, &dims, 1.0);
        gradcheck(
            &format!("patchify {dims:?} P={p}"),
            &[x],
            move |g, v| g.patchify(v[0], p),
            move |x| patchify_ref(&x[0], dims, p),
        )
        .assert_ok();
    }
}

/// The (channel, row, col) flattening order, checked against the convolution definition:
/// `linear(patchify(x), W.reshape([D, C·P·P]), b)` must equal a naive f64 Conv2d with
/// kernel = stride = P (weight [D, C, P, P]) whose [B, D, H/P, W/P] output is permuted to
/// [B, N, D]. Gradients w.r.t. x, the conv weight and the bias. Tolerances: default.
#[test]
fn patchify_linear_equals_conv2d() {
    let mut rng = Rng::new(25);
    for (dims, p, d) in [([2, 3, 9, 6], 3, 5), ([1, 2, 10, 15], 5, 7)] {
        let [bn, c, h, w] = dims;
        let inputs = [
            randn(&mut rng, &dims, 1.0),
            randn(&mut rng, &[d, c, p, p], 0.3),
            randn(&mut rng, &[d], 1.0),
        ];
        let n = (h / p) * (w / p);
        gradcheck(
            &format!("linear(patchify) vs conv2d {dims:?} P={p} D={d}"),
            &inputs,
            move |g, v| {
                let patches = g.patchify(v[0], p)?;
                let wm = g.reshape(v[1], &[d, c * p * p])?;
                g.linear(patches, wm, Some(v[2]))
            },
            move |x| {
                let conv = conv2d_ref(&x[0], dims, &x[1], &x[2], d, p); // [B, D, H/P, W/P]
                permute_ref(&conv, &[bn, d, n], &[0, 2, 1]) // → [B, N, D]
            },
        )
        .assert_ok();
    }
}

// ---------------------------------------------------------------------------------------------
// dropout
// ---------------------------------------------------------------------------------------------

fn dropout_values(x: &Tensor, p: f32, seed: u64) -> Vec<f32> {
    let mut g = Graph::no_grad();
    let v = g.constant(x.clone());
    let y = g.dropout(v, p, seed).unwrap();
    g.value(y).to_vec()
}

/// The mask is a function of (seed, element index): the same seed gives bit-identical output,
/// another seed (differing in the low or in the high 32 bits) an independent mask, and the first 997 mask entries of a 100 003-element tensor
/// (computed in parallel chunks) equal those of a 997-element tensor.
#[test]
fn dropout_mask_is_reproducible() {
    let ones_big = Tensor::ones(&[100_003]);
    let a = dropout_values(&ones_big, 0.3, 42);
    let b = dropout_values(&ones_big, 0.3, 42);
    let c = dropout_values(&ones_big, 0.3, 43);
    assert_eq!(a, b, "same seed, different output");
    // Independent masks disagree on a fraction 2p(1-p) = 0.42 of the elements (±0.02 ≈ 13σ).
    let n = a.len() as f64;
    let differ = a.iter().zip(&c).filter(|(x, y)| x != y).count() as f64 / n;
    assert!(
        (differ - 0.42).abs() < 0.02,
        "seeds 42 and 43: masks differ on a fraction {differ}, want ≈ 0.42"
    );
    // The high 32 bits of the seed matter too.
    let hi = dropout_values(&ones_big, 0.3, 42 + (1u64 << 32));
    let differ = a.iter().zip(&hi).filter(|(x, y)| x != y).count() as f64 / n;
    assert!(
        (differ - 0.42).abs() < 0.02,
        "seeds 42 and 42 + 2^32: masks differ on a fraction {differ}"
    );
    let small = dropout_values(&Tensor::ones(&[997]), 0.3, 42);
    assert_eq!(
        &a[..997],
        &small[..],
        "mask depends on the tensor size, not only on (seed, index)"
    );
}

/// Statistics on a 100 003-element tensor: the dropped fraction is within 0.01 of p (≈ 7σ for
/// p = 0.3, 0.5; the bound is loose on purpose, the mask is fixed per seed so this is no flake),
/// survivors equal x/(1−p) within 1e-6 relative each, and the mean of dropout(ones) is within
/// 0.02 of 1.
#[test]
fn dropout_statistics() {
    let n = 100_003;
    let mut rng = Rng::new(26);
    let xs: Vec<f32> = rng
        .normal_vec(n, 1.0)
        .into_iter()
        .map(|v| if v == 0.0 { 1.0 } else { v })
        .collect();
    let x = Tensor::from_vec(xs.clone(), &[n]).unwrap();
    for (p, seed) in [(0.3f32, 7u64), (0.5, 8), (0.1, 9)] {
        let y = dropout_values(&x, p, seed);
        let dropped = y.iter().filter(|&&v| v == 0.0).count();
        let frac = dropped as f64 / n as f64;
        assert!((frac - p as f64).abs() < 0.01, "p = {p}: dropped fraction {frac}");
        let scale = 1.0 / (1.0 - p as f64);
        let (kept_y, kept_ref): (Vec<f64>, Vec<f64>) = y
            .iter()
            .zip(&xs)
            .filter(|(y, _)| **y != 0.0)
            .map(|(&y, &x)| (y as f64, x as f64 * scale))
            .unzip();
        let e = elementwise_rel_err(&kept_y, &kept_ref);
        assert!(e <= 1e-6, "p = {p}: survivors not scaled by 1/(1-p): rel err {e:.2e}");
        let ones = dropout_values(&Tensor::ones(&[n]), p, seed);
        let mean = ones.iter().map(|&v| v as f64).sum::<f64>() / n as f64;
        assert!((mean - 1.0).abs() < 0.02, "p = {p}: E[dropout(1)] = {mean}");
    }
}

/// Gradient check with a fixed seed: the mask (read off the engine's dropout of a tensor of ones,
/// same shape and seed) is fixed, so dropout is the linear map x ↦ mask ⊙ x / (1−p) and FD of
/// that f64 map must match. Tolerances: default. p = 0 must return the input unchanged.
#[test]
fn dropout_gradcheck_fixed_seed() {
    let mut rng = Rng::new(27);
    for (shape, p, seed) in [(&[7, 13][..], 0.37f32, 42u64), (&[3, 5, 11][..], 0.5, 1234)] {
        let mask: Vec<f64> = dropout_values(&Tensor::ones(shape), p, seed)
            .iter()
            .map(|&v| if v != 0.0 { 1.0 } else { 0.0 })
            .collect();
        let kept = mask.iter().filter(|&&m| m == 1.0).count();
        assert!(kept > 0 && kept < mask.len(), "degenerate mask");
        let x = randn(&mut rng, shape, 1.0);
        gradcheck(
            &format!("dropout {shape:?} p={p} seed={seed}"),
            &[x],
            move |g, v| g.dropout(v[0], p, seed),
            move |x| x[0].iter().zip(&mask).map(|(v, m)| v * m / (1.0 - p as f64)).collect(),
        )
        .assert_ok();
    }
    let x = randn(&mut rng, &[5, 3], 1.0);
    let mut g = Graph::new();
    let xv = g.leaf(tensor(&x));
    assert_eq!(g.dropout(xv, 0.0, 9).unwrap(), xv, "p = 0 should be the identity");
    assert!(
        g.dropout(xv, 1.0, 9).is_err() && g.dropout(xv, -0.1, 9).is_err(),
        "p outside [0,1) accepted"
    );
}

// ---------------------------------------------------------------------------------------------
// fused attention
// ---------------------------------------------------------------------------------------------

/// Naive f64 multi-head attention on `qkv [B, T, 3D]` → `[B, T, D]` (no dropout).
fn attention_ref(qkv: &[f64], b: usize, t: usize, heads: usize, dh: usize) -> Vec<f64> {
    let d = heads * dh;
    let at = |bi: usize, i: usize, which: usize, n: usize, c: usize| qkv[(bi * t + i) * 3 * d + which * d + n * dh + c];
    let mut out = vec![0.0; b * t * d];
    for bi in 0..b {
        for n in 0..heads {
            for i in 0..t {
                let s: Vec<f64> = (0..t)
                    .map(|j| (0..dh).map(|c| at(bi, i, 0, n, c) * at(bi, j, 1, n, c)).sum::<f64>() / (dh as f64).sqrt())
                    .collect();
                let m = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let e: Vec<f64> = s.iter().map(|v| (v - m).exp()).collect();
                let z: f64 = e.iter().sum();
                for c in 0..dh {
                    out[(bi * t + i) * d + n * dh + c] = (0..t).map(|j| e[j] / z * at(bi, j, 2, n, c)).sum();
                }
            }
        }
    }
    out
}

/// The fused attention op against a naive f64 attention, forward and finite-difference
/// gradients, at head widths below, at and past the CPU kernel's 16-column tiles and token counts
/// that are not multiples of its 6-row tiles. Tolerances: default.
#[test]
fn attention_fused_gradcheck() {
    let mut rng = Rng::new(74);
    for &(b, t, heads, dh) in &[(2usize, 7usize, 3usize, 5usize), (1, 9, 2, 17), (1, 13, 1, 16)] {
        let d = heads * dh;
        gradcheck(
            &format!("attention b{b} t{t} h{heads} dh{dh}"),
            &[randn(&mut rng, &[b, t, 3 * d], 1.0)],
            move |g, v| g.attention(v[0], heads, 0.0, 0),
            move |x| attention_ref(&x[0], b, t, heads, dh),
        )
        .assert_ok();
    }
}

// ---------------------------------------------------------------------------------------------
// fused dropout: gelu_dropout and dropout_add
// ---------------------------------------------------------------------------------------------

/// The fused op and its composed form, on the same inputs and upstream gradient `r`: the output
/// and every input gradient, bit for bit (both do the same f32 operations in the same order).
fn assert_fused_equals_composed(
    what: &str,
    inputs: &[Tensor],
    r: &Tensor,
    fused: impl Fn(&mut Graph, &[vitcore::Var]) -> vitcore::Var,
    composed: impl Fn(&mut Graph, &[vitcore::Var]) -> vitcore::Var,
) {
    let run = |f: &dyn Fn(&mut Graph, &[vitcore::Var]) -> vitcore::Var| {
        let mut g = Graph::new();
        let vars: Vec<_> = inputs.iter().map(|t| g.leaf(t.clone())).collect();
        let y = f(&mut g, &vars);
        let grads = g.backward_with(y, r.clone()).unwrap();
        let mut out = vec![g.value(y).to_vec()];
        out.extend(vars.iter().map(|&v| grads.get(v).expect("gradient").to_vec()));
        out
    };
    let (a, b) = (run(&fused), run(&composed));
    for (i, (x, y)) in a.iter().zip(&b).enumerate() {
        let part = if i == 0 {
            "output".to_string()
        } else {
            format!("gradient {}", i - 1)
        };
        assert!(x.iter().all(|v| v.is_finite()), "{what}: {part} not finite");
        assert_eq!(x, y, "{what}: {part} differs from the composed ops");
    }
}

/// `gelu_dropout` = `dropout(gelu(x))` exactly, both GELU kinds, several masks, an awkward size
/// that spans several mask blocks and parallel chunks; `p = 0` is a plain GELU.
#[test]
fn gelu_dropout_equals_gelu_then_dropout() {
    let mut rng = Rng::new(71);
    let shape = [37, 1031];
    let x = Tensor::from_vec(rng.normal_vec(37 * 1031, 2.0), &shape).unwrap();
    let r = Tensor::from_vec(rng.normal_vec(37 * 1031, 1.0), &shape).unwrap();
    for kind in [GeluKind::Erf, GeluKind::Tanh] {
        for (p, seed) in [(0.1f32, 3u64), (0.5, 1 << 40), (0.0, 9)] {
            assert_fused_equals_composed(
                &format!("gelu_dropout {kind:?} p={p}"),
                &[x.clone()],
                &r,
                |g, v| g.gelu_dropout(v[0], kind, p, seed).unwrap(),
                |g, v| {
                    let h = g.gelu(v[0], kind).unwrap();
                    g.dropout(h, p, seed).unwrap()
                },
            );
        }
    }
    let mut g = Graph::new();
    let xv = g.leaf(Tensor::ones(&[3]));
    assert!(g.gelu_dropout(xv, GeluKind::Erf, 1.0, 0).is_err(), "p = 1 accepted");
}

/// `dropout_add(r, a)` = `r + dropout(a)` exactly; `p = 0` is a plain add; shapes must match.
#[test]
fn dropout_add_equals_add_of_dropout() {
    let mut rng = Rng::new(72);
    let shape = [5, 13, 523];
    let n = 5 * 13 * 523;
    let res = Tensor::from_vec(rng.normal_vec(n, 1.0), &shape).unwrap();
    let a = Tensor::from_vec(rng.normal_vec(n, 1.0), &shape).unwrap();
    let r = Tensor::from_vec(rng.normal_vec(n, 1.0), &shape).unwrap();
    for (p, seed) in [(0.1f32, 11u64), (0.7, 12), (0.0, 13)] {
        assert_fused_equals_composed(
            &format!("dropout_add p={p}"),
            &[res.clone(), a.clone()],
            &r,
            |g, v| g.dropout_add(v[0], v[1], p, seed).unwrap(),
            |g, v| {
                let d = g.dropout(v[1], p, seed).unwrap();
                g.add(v[0], d).unwrap()
            },
        );
    }
    let mut g = Graph::new();
    let (u, w) = (g.leaf(Tensor::ones(&[3, 2])), g.leaf(Tensor::ones(&[2, 3])));
    assert!(g.dropout_add(u, w, 0.1, 0).is_err(), "mismatched shapes accepted");
}

/// A dropped element is exactly +0 (bits 0) whatever the input — negative, −∞, NaN — in plain
/// dropout, its backward and the fused GELU form, as the CUDA kernel writes it (the GPU test
/// compares masks bit for bit).
#[test]
fn dropped_elements_are_positive_zero() {
    let n = 4099;
    let specials = [-1.5f32, f32::NEG_INFINITY, f32::NAN, -0.0, -3.0e-3];
    let x = Tensor::from_vec((0..n).map(|i| specials[i % specials.len()]).collect(), &[n]).unwrap();
    let dropped: Vec<bool> = dropout_values(&Tensor::ones(&[n]), 0.5, 8)
        .iter()
        .map(|&v| v == 0.0)
        .collect();
    assert!(
        dropped.iter().any(|&d| d) && dropped.iter().any(|&d| !d),
        "degenerate mask"
    );
    let mut g = Graph::new();
    let xv = g.leaf(x.clone());
    let y = g.dropout(xv, 0.5, 8).unwrap();
    let h = g.gelu_dropout(xv, GeluKind::Erf, 0.5, 8).unwrap();
    let grads = g.backward_with(y, x.clone()).unwrap();
    for (what, values) in [
        ("dropout", g.value(y).to_vec()),
        ("gelu_dropout", g.value(h).to_vec()),
        ("dropout backward", grads.get(xv).unwrap().to_vec()),
    ] {
        for (i, (&v, &d)) in values.iter().zip(&dropped).enumerate() {
            if d {
                assert_eq!(v.to_bits(), 0, "{what}: dropped element {i} is {v:?}, not +0");
            }
        }
    }
}

/// Gradient checks of both fused ops with a fixed mask (read off plain dropout of ones), against
/// f64 references `gelu(x)·m` and `r + a·m`. Tolerances: default.
#[test]
fn fused_dropout_gradcheck_fixed_seed() {
    let mut rng = Rng::new(73);
    let (shape, p, seed) = (&[7, 19][..], 0.3f32, 77u64);
    let mask: Vec<f64> = dropout_values(&Tensor::ones(shape), p, seed)
        .iter()
        .map(|&v| if v != 0.0 { 1.0 / (1.0 - p as f64) } else { 0.0 })
        .collect();
    assert!(
        mask.iter().any(|&m| m == 0.0) && mask.iter().any(|&m| m != 0.0),
        "degenerate mask"
    );
    for (kind, f) in [
        (GeluKind::Erf, gelu_erf_ref as fn(f64) -> f64),
        (GeluKind::Tanh, gelu_tanh_ref),
    ] {
        let m = mask.clone();
        gradcheck(
            &format!("gelu_dropout {kind:?}"),
            &[randn(&mut rng, shape, 2.0)],
            move |g, v| g.gelu_dropout(v[0], kind, p, seed),
            move |x| x[0].iter().zip(&m).map(|(&v, m)| f(v) * m).collect(),
        )
        .assert_ok();
    }
    let m = mask.clone();
    gradcheck(
        "dropout_add",
        &[randn(&mut rng, shape, 1.0), randn(&mut rng, shape, 1.0)],
        move |g, v| g.dropout_add(v[0], v[1], p, seed),
        move |x| x[0].iter().zip(&x[1]).zip(&m).map(|((&r, &a), m)| r + a * m).collect(),
    )
    .assert_ok();
}

// ---------------------------------------------------------------------------------------------
// cross_entropy
// ---------------------------------------------------------------------------------------------

/// Mean cross-entropy on logits [B, C] against an f64 log-softmax reference, with label smoothing
/// 0 and 0.1 (and 0.3), on ordinary logits and on logits offset by 80..100 with a ±50 spread
/// (stability). Tolerances: default.
#[test]
fn cross_entropy_with_and_without_smoothing() {
    let mut rng = Rng::new(28);
    for (b, c, offset, spread) in [(7usize, 11usize, 0.0f32, 2.0f32), (5, 13, 90.0, 50.0), (1, 3, 0.0, 1.0)] {
        for smoothing in [0.0f32, 0.1, 0.3] {
            let z = randn_around(&mut rng, &[b, c], offset, spread);
            let labels: Vec<u32> = (0..b).map(|_| rng.below(c) as u32).collect();
            let l2 = labels.clone();
            gradcheck(
                &format!("cross_entropy [{b},{c}] offset {offset} smoothing {smoothing}"),
                &[z],
                move |g, v| g.cross_entropy(v[0], &labels, smoothing),
                move |x| vec![cross_entropy_ref(&x[0], c, &l2, smoothing as f64)],
            )
            .assert_ok();
        }
    }
}

/// `backward(loss)` (seed 1) on a cross-entropy loss equals `backward_with(loss, [1])`, and the
/// gradient is (softmax − q)/B to 1e-6 relative.
#[test]
fn cross_entropy_backward_from_scalar_loss() {
    let mut rng = Rng::new(29);
    let (b, c) = (5, 7);
    let z = randn(&mut rng, &[b, c], 1.5);
    let labels: Vec<u32> = (0..b).map(|_| rng.below(c) as u32).collect();
    let mut g = Graph::new();
    let zv = g.leaf(tensor(&z));
    let loss = g.cross_entropy(zv, &labels, 0.1).unwrap();
    assert_eq!(g.shape(loss), &[] as &[usize]);
    let g1 = g.backward(loss).unwrap().get(zv).unwrap().to_vec();
    let g2 = g
        .backward_with(loss, Tensor::scalar(1.0))
        .unwrap()
        .get(zv)
        .unwrap()
        .to_vec();
    assert_eq!(g1, g2);
    let p = softmax_ref(&to_f64(&z.data), c);
    let expect: Vec<f64> = (0..b * c)
        .map(|i| {
            let q = 0.1 / c as f64 + if i % c == labels[i / c] as usize { 0.9 } else { 0.0 };
            (p[i] - q) / b as f64
        })
        .collect();
    let e = rel_err(&to_f64(&g1), &expect);
    assert!(e <= 1e-6, "cross-entropy gradient vs (p - q)/B: {e:.2e}");
}

// ---------------------------------------------------------------------------------------------
// Large tensors: the parallel paths
// ---------------------------------------------------------------------------------------------
//
// The CPU kernels switch to rayon-parallel chunks above PAR_GRAIN = 16384 elements (element-wise
// ops in blocks of 16384, row ops in groups of rows, bias/γ/β gradients in partial sums over
// chunks of ≤ 256 rows), and take their output buffers from a pool (lengths ≥ 4096) that hands
// back stale memory. Each case below exceeds 16384 elements, poisons the pool with NaN buffers of
// the lengths the op will ask for (an element a kernel forgets to write then fails the check), and
// finite-differences a random sample of elements per input. Tolerances: default.

fn large_check(n: usize) -> Check {
    Check {
        seed: 0xb16,
        ..Check::default()
    }
    .samples(n)
}

#[test]
fn large_add_broadcast_and_add_bias() {
    let mut rng = Rng::new(40);
    let ash = [7, 53, 47];
    for bsh in [&[1, 53, 47][..], &[7, 1, 47][..], &[47][..], &[7, 53, 47][..]] {
        let (a, b) = (randn(&mut rng, &ash, 1.0), randn(&mut rng, bsh, 1.0));
        poison_pool(&[numel(&ash), numel(bsh)]);
        let bsh2 = bsh.to_vec();
        large_check(30)
            .run(
                &format!("add_broadcast {ash:?} + {bsh:?}"),
                &[a, b],
                |g, v| g.add_broadcast(v[0], v[1]),
                move |x| add_ref(&x[0], &broadcast_ref(&x[1], &bsh2, &ash)),
            )
            .assert_ok();
    }
    // 613 rows of 37: the bias gradient is summed in three chunks of ≤ 256 rows.
    let (x, b) = (randn(&mut rng, &[613, 37], 1.0), randn(&mut rng, &[37], 1.0));
    poison_pool(&[613 * 37]);
    large_check(37)
        .run(
            "add_bias [613, 37]",
            &[x, b],
            |g, v| g.add_bias(v[0], v[1]),
            |x| add_ref(&x[0], &broadcast_ref(&x[1], &[37], &[613, 37])),
        )
        .assert_ok();
}

#[test]
fn large_scale_and_gelu() {
    let mut rng = Rng::new(41);
    let shape = [3, 101, 59];
    let x = randn(&mut rng, &shape, 2.0);
    poison_pool(&[numel(&shape)]);
    large_check(40)
        .run(
            "scale large",
            std::slice::from_ref(&x),
            |g, v| g.scale(v[0], -0.7),
            |x| x[0].iter().map(|v| v * -0.7f32 as f64).collect(),
        )
        .assert_ok();
    for (kind, f) in [
        (GeluKind::Erf, gelu_erf_ref as fn(f64) -> f64),
        (GeluKind::Tanh, gelu_tanh_ref),
    ] {
        poison_pool(&[numel(&shape)]);
        large_check(40)
            .run(
                &format!("gelu {kind:?} {shape:?}"),
                std::slice::from_ref(&x),
                move |g, v| g.gelu(v[0], kind),
                move |x| x[0].iter().map(|&v| f(v)).collect(),
            )
            .assert_ok();
    }
}

#[test]
fn large_permute() {
    let mut rng = Rng::new(42);
    let shape = [5, 17, 11, 19];
    for perm in [[2, 0, 3, 1], [0, 2, 1, 3], [0, 1, 3, 2]] {
        let x = randn(&mut rng, &shape, 1.0);
        poison_pool(&[numel(&shape)]);
        large_check(30)
            .run(
                &format!("permute {shape:?} by {perm:?}"),
                &[x],
                move |g, v| g.permute(v[0], &perm),
                move |x| permute_ref(&x[0], &shape, &perm),
            )
            .assert_ok();
    }
}

#[test]
fn large_softmax_and_layernorm() {
    let mut rng = Rng::new(43);
    let (rows, n) = (1301, 13);
    let x = randn(&mut rng, &[rows, n], 3.0);
    poison_pool(&[rows * n]);
    large_check(40)
        .run(
            "softmax [1301, 13]",
            std::slice::from_ref(&x),
            |g, v| g.softmax(v[0]),
            move |x| softmax_ref(&x[0], n),
        )
        .assert_ok();
    let gamma = randn_around(&mut rng, &[n], 1.0, 0.3);
    let beta = randn(&mut rng, &[n], 0.5);
    poison_pool(&[rows * n]);
    large_check(40)
        .run(
            "layernorm [1301, 13]",
            &[x, gamma, beta],
            |g, v| g.layernorm(v[0], v[1], v[2], 1e-5),
            move |x| layernorm_ref(&x[0], n, &x[1], &x[2], 1e-5),
        )
        .assert_ok();
}

#[test]
fn large_patchify() {
    let mut rng = Rng::new(44);
    let dims = [2, 3, 66, 63];
    let x = randn(&mut rng, &dims, 1.0);
    poison_pool(&[numel(&dims)]);
    large_check(40)
        .run(
            "patchify [2,3,66,63] P=3",
            &[x],
            |g, v| g.patchify(v[0], 3),
            move |x| patchify_ref(&x[0], dims, 3),
        )
        .assert_ok();
}

#[test]
fn large_cross_entropy() {
    let mut rng = Rng::new(45);
    let (b, c) = (131, 127);
    let z = randn(&mut rng, &[b, c], 3.0);
    let labels: Vec<u32> = (0..b).map(|_| rng.below(c) as u32).collect();
    let l2 = labels.clone();
    poison_pool(&[b * c]);
    large_check(40)
        .run(
            "cross_entropy [131, 127] smoothing 0.1",
            &[z],
            move |g, v| g.cross_entropy(v[0], &labels, 0.1),
            move |x| vec![cross_entropy_ref(&x[0], c, &l2, 0.1)],
        )
        .assert_ok();
}

#[test]
fn large_concat_and_select() {
    let mut rng = Rng::new(46);
    let shapes = [[3, 1, 4099], [3, 5, 4099]];
    let inputs: Vec<Input> = shapes.iter().map(|s| randn(&mut rng, s, 1.0)).collect();
    poison_pool(&[3 * 6 * 4099]);
    large_check(30)
        .run(
            "concat [3,1,4099] ++ [3,5,4099] axis 1",
            &inputs,
            |g, v| g.concat(v, 1),
            move |x| concat_ref(&[(&x[0], &shapes[0]), (&x[1], &shapes[1])], 1),
        )
        .assert_ok();
    let x = randn(&mut rng, &[3, 6, 4099], 1.0);
    poison_pool(&[3 * 6 * 4099]);
    large_check(30)
        .run(
            "select [3,6,4099] axis 1 index 5",
            &[x],
            |g, v| g.select(v[0], 1, 5),
            |x| select_ref(&x[0], &[3, 6, 4099], 1, 5),
        )
        .assert_ok();
}
