//! Behaviour of the tape itself: gradient accumulation over several consumers, `no_grad`,
//! constants, `ParamStore` accumulation, and shape errors at the public API (an `Err` naming the
//! op and both shapes, never a panic).

mod common;

use common::*;
use std::panic::{catch_unwind, AssertUnwindSafe};
use vitcore::ops::GeluKind;
use vitcore::rng::Rng;
use vitcore::{Graph, ParamStore, Tensor, Var};

// ---------------------------------------------------------------------------------------------
// Accumulation
// ---------------------------------------------------------------------------------------------

/// `add(x, x)`: both operands are the same value, so its gradient is 2·R — exactly (a sum of two
/// equal f32 numbers is exact).
#[test]
fn add_x_x_gives_twice_the_gradient() {
    let mut rng = Rng::new(1);
    let x = randn(&mut rng, &[3, 7], 1.0);
    let r = rng.normal_vec(21, 1.0);
    let mut g = Graph::new();
    let xv = g.leaf(tensor(&x));
    let y = g.add(xv, xv).unwrap();
    let grads = g
        .backward_with(y, Tensor::from_vec(r.clone(), &[3, 7]).unwrap())
        .unwrap();
    let want: Vec<f32> = r.iter().map(|v| 2.0 * v).collect();
    assert_eq!(grads.get(xv).unwrap().data(), &want[..]);
}

/// Values feeding several consumers, checked against finite differences (tolerances: default):
/// a residual `x + gelu(x)`, `x·x` (both matmul operands), `concat(x, 3x, x)` (three consumers),
/// and a two-level residual `h = x + f(x); y = h + f(h)`.
#[test]
fn several_consumers_sum_their_gradients() {
    let mut rng = Rng::new(2);
    let x = randn(&mut rng, &[5, 7], 1.0);
    gradcheck(
        "residual x + gelu(x)",
        std::slice::from_ref(&x),
        |g, v| {
            let f = g.gelu(v[0], GeluKind::Erf)?;
            g.add(v[0], f)
        },
        |x| x[0].iter().map(|&v| v + gelu_erf_ref(v)).collect(),
    )
    .assert_ok();

    let sq = randn(&mut rng, &[7, 7], 1.0);
    gradcheck(
        "x·x",
        &[sq],
        |g, v| g.matmul(v[0], v[0]),
        |x| matmul_ref(&x[0], &[7, 7], &x[0], &[7, 7], false, false),
    )
    .assert_ok();

    gradcheck(
        "concat(x, 3x, x)",
        std::slice::from_ref(&x),
        |g, v| {
            let s = g.scale(v[0], 3.0)?;
            g.concat(&[v[0], s, v[0]], 0)
        },
        |x| {
            let s: Vec<f64> = x[0].iter().map(|v| v * 3.0).collect();
            concat_ref(&[(&x[0], &[5, 7]), (&s, &[5, 7]), (&x[0], &[5, 7])], 0)
        },
    )
    .assert_ok();

    let w = randn(&mut rng, &[7, 7], 0.5);
    gradcheck(
        "two residual levels",
        &[x, w],
        |g, v| {
            let f = g.linear(v[0], v[1], None)?;
            let f = g.gelu(f, GeluKind::Tanh)?;
            let h = g.add(v[0], f)?;
            let f2 = g.linear(h, v[1], None)?;
            let f2 = g.gelu(f2, GeluKind::Tanh)?;
            g.add(h, f2)
        },
        |x| {
            let f = |a: &[f64]| -> Vec<f64> {
                linear_ref(a, &x[1], None, 7, 7)
                    .into_iter()
                    .map(gelu_tanh_ref)
                    .collect()
            };
            let h = add_ref(&x[0], &f(&x[0]));
            add_ref(&h, &f(&h))
        },
    )
    .assert_ok();
}

// ---------------------------------------------------------------------------------------------
// no_grad, constants, unused leaves
// ---------------------------------------------------------------------------------------------

/// `Graph::no_grad()` records nothing for backward: the forward values equal a recording graph's
/// exactly, and a backward returns no gradient for any leaf or parameter.
#[test]
fn no_grad_records_no_backward() {
    let mut rng = Rng::new(3);
    let x = randn(&mut rng, &[3, 5], 1.0);
    let w = randn(&mut rng, &[4, 5], 1.0);
    let mut store = ParamStore::new();
    let wid = store.add("head.weight", tensor(&w)).unwrap();
    let labels = [1u32, 3, 0];

    let forward = |g: &mut Graph| {
        let xv = g.leaf(tensor(&x));
        let wv = g.param(&store, wid);
        let z = g.linear(xv, wv, None).unwrap();
        let z = g.gelu(z, GeluKind::Erf).unwrap();
        let loss = g.cross_entropy(z, &labels, 0.1).unwrap();
        (xv, z, loss)
    };
    let mut gr = Graph::new();
    let (_, zr, lr) = forward(&mut gr);
    let mut gn = Graph::no_grad();
    assert!(!gn.grad_enabled() && gr.grad_enabled());
    let (xn, zn, ln) = forward(&mut gn);
    assert_eq!(gn.value(zn).data(), gr.value(zr).data());
    assert_eq!(gn.value(ln).data(), gr.value(lr).data());

    let grads = gn.backward(ln).unwrap();
    assert!(grads.get(xn).is_none(), "no_grad leaf got a gradient");
    assert_eq!(grads.params().count(), 0, "no_grad parameter got a gradient");
    let grads = gn.backward_with(zn, Tensor::ones(gn.shape(zn))).unwrap();
    assert!(grads.get(xn).is_none());
    store.accumulate_grads(&grads).unwrap();
    assert!(store.grad(wid).is_none());
}

/// Constants get no gradient, leaves do; a leaf the output does not depend on gets `None`.
#[test]
fn constants_and_unused_leaves_get_no_gradient() {
    let mut rng = Rng::new(4);
    let mut g = Graph::new();
    let a = g.constant(tensor(&randn(&mut rng, &[3, 5], 1.0)));
    let b = g.leaf(tensor(&randn(&mut rng, &[5, 2], 1.0)));
    let unused = g.leaf(tensor(&randn(&mut rng, &[4], 1.0)));
    let y = g.matmul(a, b).unwrap();
    let grads = g.backward_with(y, Tensor::ones(&[3, 2])).unwrap();
    assert!(grads.get(a).is_none(), "constant got a gradient");
    assert!(grads.get(unused).is_none(), "unused leaf got a gradient");
    let gb = grads.get(b).expect("leaf gradient");
    // dB = Aᵀ·1: row p of dB is the column sum p of A.
    let av = to_f64(g.value(a).data());
    for p in 0..5 {
        let col: f64 = (0..3).map(|i| av[i * 5 + p]).sum();
        for j in 0..2 {
            assert!((gb.data()[p * 2 + j] as f64 - col).abs() <= 1e-5 * (1.0 + col.abs()));
        }
    }
    // An op on constants only is not recorded for backward.
    let c = g.gelu(a, GeluKind::Erf).unwrap();
    assert!(g.backward_with(c, Tensor::ones(&[3, 5])).unwrap().get(a).is_none());
}

// ---------------------------------------------------------------------------------------------
// ParamStore
// ---------------------------------------------------------------------------------------------

/// `accumulate_grads` sums over two backward passes (dW = Σ_passes Rᵀ·X, db = Σ_passes Σ_rows R,
/// checked in f64 to 1e-5 relative); `zero_grad` forgets them; a parameter brought into one graph
/// twice (weight tying) gets the sum of both uses.
#[test]
fn param_store_accumulates_and_zeroes() {
    const TOL: f64 = 1e-5;
    let mut rng = Rng::new(5);
    let (rows, din, dout) = (7, 5, 3);
    let mut store = ParamStore::new();
    let w = store
        .add("fc.weight", tensor(&randn(&mut rng, &[dout, din], 1.0)))
        .unwrap();
    let b = store.add("fc.bias", tensor(&randn(&mut rng, &[dout], 1.0))).unwrap();
    assert!(
        store.add("fc.bias", Tensor::zeros(&[dout])).is_err(),
        "duplicate name accepted"
    );
    assert_eq!(store.id("fc.weight"), Some(w));
    assert!(store.grad(w).is_none());

    let mut want_w = vec![0.0f64; dout * din];
    let mut want_b = vec![0.0f64; dout];
    let mut pass = |store: &mut ParamStore, want_w: &mut Vec<f64>, want_b: &mut Vec<f64>| {
        let x = rng.normal_vec(rows * din, 1.0);
        let r = rng.normal_vec(rows * dout, 1.0);
        let mut g = Graph::new();
        let xv = g.constant(Tensor::from_vec(x.clone(), &[rows, din]).unwrap());
        let (wv, bv) = (g.param(store, w), g.param(store, b));
        let y = g.linear(xv, wv, Some(bv)).unwrap();
        let grads = g
            .backward_with(y, Tensor::from_vec(r.clone(), &[rows, dout]).unwrap())
            .unwrap();
        store.accumulate_grads(&grads).unwrap();
        for rr in 0..rows {
            for o in 0..dout {
                want_b[o] += r[rr * dout + o] as f64;
                for i in 0..din {
                    want_w[o * din + i] += r[rr * dout + o] as f64 * x[rr * din + i] as f64;
                }
            }
        }
    };
    pass(&mut store, &mut want_w, &mut want_b);
    pass(&mut store, &mut want_w, &mut want_b);
    let ew = rel_err(&to_f64(store.grad(w).unwrap().data()), &want_w);
    let eb = rel_err(&to_f64(store.grad(b).unwrap().data()), &want_b);
    assert!(
        ew <= TOL && eb <= TOL,
        "accumulated gradients off: dW {ew:.2e}, db {eb:.2e}"
    );

    store.zero_grad();
    assert!(
        store.grad(w).is_none() && store.grad(b).is_none(),
        "zero_grad kept a gradient"
    );
    let (mut ww, mut wb) = (vec![0.0; dout * din], vec![0.0; dout]);
    pass(&mut store, &mut ww, &mut wb);
    let ew = rel_err(&to_f64(store.grad(w).unwrap().data()), &ww);
    assert!(
        ew <= TOL,
        "after zero_grad the store holds more than one pass: {ew:.2e}"
    );

    // Weight tying: y = W·(W·x); dL/dW gets both uses.
    let mut tied = ParamStore::new();
    let t = tied.add("tied", tensor(&randn(&mut rng, &[4, 4], 0.5))).unwrap();
    let xt = randn(&mut rng, &[3, 4], 1.0);
    let mut g = Graph::new();
    let xv = g.constant(tensor(&xt));
    let (w1, w2) = (g.param(&tied, t), g.param(&tied, t));
    let h = g.linear(xv, w1, None).unwrap();
    let y = g.linear(h, w2, None).unwrap();
    let grads = g.backward_with(y, Tensor::ones(&[3, 4])).unwrap();
    assert_eq!(grads.params().count(), 2);
    tied.accumulate_grads(&grads).unwrap();
    let mut sum = grads.get(w1).unwrap().clone();
    sum.add_assign(grads.get(w2).unwrap()).unwrap();
    assert_eq!(tied.grad(t).unwrap().data(), sum.data());
    // And that sum is the true gradient (FD on the f64 reference, default tolerance).
    Check::default()
        .run(
            "tied weight",
            &[input(tied.value(t).to_vec(), &[4, 4])],
            |g, v| {
                let xv = g.constant(tensor(&xt));
                let h = g.linear(xv, v[0], None)?;
                g.linear(h, v[0], None)
            },
            |p| {
                let h = linear_ref(&to_f64(&xt.data), &p[0], None, 4, 4);
                linear_ref(&h, &p[0], None, 4, 4)
            },
        )
        .assert_ok();
}

// ---------------------------------------------------------------------------------------------
// Shape errors
// ---------------------------------------------------------------------------------------------

fn leaf(g: &mut Graph, shape: &[usize]) -> Var {
    g.leaf(Tensor::zeros(shape))
}

/// Run `f` on a fresh graph; it must return `Err` (not panic, not `Ok`) whose message contains
/// every string in `must_contain`.
#[track_caller]
fn expect_err(what: &str, must_contain: &[&str], f: impl FnOnce(&mut Graph) -> vitcore::Result<Var>) {
    let mut g = Graph::new();
    let res = catch_unwind(AssertUnwindSafe(|| f(&mut g)));
    match res {
        Err(_) => panic!("{what}: panicked instead of returning Err"),
        Ok(Ok(_)) => panic!("{what}: accepted"),
        Ok(Err(e)) => {
            let msg = e.to_string();
            for s in must_contain {
                assert!(msg.contains(s), "{what}: message {msg:?} does not contain {s:?}");
            }
        }
    }
}

/// Every op's shape check: `Err` whose message names the op and both shapes.
#[test]
fn shape_errors_name_op_and_shapes() {
    expect_err("matmul [2,3]x[4,5]", &["matmul", "[2, 3]", "[4, 5]"], |g| {
        let (a, b) = (leaf(g, &[2, 3]), leaf(g, &[4, 5]));
        g.matmul(a, b)
    });
    expect_err("matmul_t tb [2,3]x[5,4]ᵀ", &["matmul", "[2, 3]", "[5, 4]"], |g| {
        let (a, b) = (leaf(g, &[2, 3]), leaf(g, &[5, 4]));
        g.matmul_t(a, b, false, true)
    });
    expect_err("matmul batch mismatch", &["matmul", "[2, 3, 4]", "[3, 4, 5]"], |g| {
        let (a, b) = (leaf(g, &[2, 3, 4]), leaf(g, &[3, 4, 5]));
        g.matmul(a, b)
    });
    expect_err("matmul rank 1", &["matmul", "[3]"], |g| {
        let (a, b) = (leaf(g, &[3]), leaf(g, &[3]));
        g.matmul(a, b)
    });
    expect_err("add [2,3]+[3,2]", &["add", "[2, 3]", "[3, 2]"], |g| {
        let (a, b) = (leaf(g, &[2, 3]), leaf(g, &[3, 2]));
        g.add(a, b)
    });
    expect_err("add_bias [2,3]+[2]", &["add_bias", "[2, 3]", "[2]"], |g| {
        let (a, b) = (leaf(g, &[2, 3]), leaf(g, &[2]));
        g.add_bias(a, b)
    });
    expect_err(
        "add_broadcast [2,3]+[3,3]",
        &["add_broadcast", "[2, 3]", "[3, 3]"],
        |g| {
            let (a, b) = (leaf(g, &[2, 3]), leaf(g, &[3, 3]));
            g.add_broadcast(a, b)
        },
    );
    expect_err(
        "add_broadcast b of higher rank",
        &["add_broadcast", "[3]", "[2, 3]"],
        |g| {
            let (a, b) = (leaf(g, &[3]), leaf(g, &[2, 3]));
            g.add_broadcast(a, b)
        },
    );
    expect_err("linear x[2,3] w[4,5]", &["linear", "[2, 3]", "[4, 5]"], |g| {
        let (x, w) = (leaf(g, &[2, 3]), leaf(g, &[4, 5]));
        g.linear(x, w, None)
    });
    expect_err("linear bias [3] for out 4", &["linear", "[4, 5]", "[3]"], |g| {
        let (x, w, b) = (leaf(g, &[2, 5]), leaf(g, &[4, 5]), leaf(g, &[3]));
        g.linear(x, w, Some(b))
    });
    expect_err("layernorm gamma [4] for D 5", &["layernorm", "[2, 5]", "[4]"], |g| {
        let (x, ga, be) = (leaf(g, &[2, 5]), leaf(g, &[4]), leaf(g, &[4]));
        g.layernorm(x, ga, be, 1e-5)
    });
    expect_err("reshape [2,3] -> [4,2]", &["reshape", "[2, 3]", "[4, 2]"], |g| {
        let x = leaf(g, &[2, 3]);
        g.reshape(x, &[4, 2])
    });
    expect_err("permute [2,3] by [0,0]", &["permute", "[2, 3]", "[0, 0]"], |g| {
        let x = leaf(g, &[2, 3]);
        g.permute(x, &[0, 0])
    });
    expect_err("permute [2,3] by [0,1,2]", &["permute", "[2, 3]", "[0, 1, 2]"], |g| {
        let x = leaf(g, &[2, 3]);
        g.permute(x, &[0, 1, 2])
    });
    expect_err("transpose dim 2 of rank 2", &["transpose", "[2, 3]"], |g| {
        let x = leaf(g, &[2, 3]);
        g.transpose(x, 0, 2)
    });
    expect_err("concat [2,3]++[2,4] axis 0", &["concat", "[2, 3]", "[2, 4]"], |g| {
        let (a, b) = (leaf(g, &[2, 3]), leaf(g, &[2, 4]));
        g.concat(&[a, b], 0)
    });
    expect_err("concat axis 2 of rank 2", &["concat", "[2, 3]"], |g| {
        let (a, b) = (leaf(g, &[2, 3]), leaf(g, &[2, 3]));
        g.concat(&[a, b], 2)
    });
    expect_err("concat of nothing", &["concat"], |g| g.concat(&[], 0));
    expect_err("select index 7 of axis 1 [3,7,5]", &["select", "[3, 7, 5]"], |g| {
        let x = leaf(g, &[3, 7, 5]);
        g.select(x, 1, 7)
    });
    expect_err("select axis 3 of rank 3", &["select", "[3, 7, 5]"], |g| {
        let x = leaf(g, &[3, 7, 5]);
        g.select(x, 3, 0)
    });
    expect_err("softmax of empty rows", &["softmax", "[3, 0]"], |g| {
        let x = leaf(g, &[3, 0]);
        g.softmax(x)
    });
    expect_err("patchify 10x10 by 3", &["patchify", "[1, 3, 10, 10]", "[3]"], |g| {
        let x = leaf(g, &[1, 3, 10, 10]);
        g.patchify(x, 3)
    });
    expect_err("patchify rank 3", &["patchify", "[3, 9, 9]"], |g| {
        let x = leaf(g, &[3, 9, 9]);
        g.patchify(x, 3)
    });
    expect_err(
        "cross_entropy 3 labels for B 4",
        &["cross_entropy", "[4, 5]", "[3]"],
        |g| {
            let z = leaf(g, &[4, 5]);
            g.cross_entropy(z, &[0, 1, 2], 0.0)
        },
    );
    expect_err("cross_entropy label out of range", &["cross_entropy", "5"], |g| {
        let z = leaf(g, &[2, 5]);
        g.cross_entropy(z, &[0, 5], 0.0)
    });
    expect_err("cross_entropy smoothing 1", &["smoothing"], |g| {
        let z = leaf(g, &[2, 5]);
        g.cross_entropy(z, &[0, 1], 1.0)
    });
    expect_err("dropout p = 1", &["dropout"], |g| {
        let x = leaf(g, &[2, 5]);
        g.dropout(x, 1.0, 0)
    });
    expect_err(
        "backward_with a seed of the wrong shape",
        &["backward_with", "[2, 3]", "[3, 2]"],
        |g| {
            let x = leaf(g, &[2, 3]);
            let y = g.gelu(x, GeluKind::Erf)?;
            g.backward_with(y, Tensor::zeros(&[3, 2])).map(|_| y)
        },
    );
    expect_err("backward from a non-scalar", &["backward", "[2, 3]"], |g| {
        let x = leaf(g, &[2, 3]);
        let y = g.gelu(x, GeluKind::Erf)?;
        g.backward(y).map(|_| y)
    });
    expect_err("Tensor::from_vec 5 values as [2, 3]", &["from_vec", "[2, 3]"], |g| {
        Tensor::from_vec(vec![0.0; 5], &[2, 3]).map(|t| g.leaf(t))
    });
    expect_err(
        "ParamStore::set of another shape",
        &["ParamStore::set", "[2, 3]", "[3, 2]"],
        |g| {
            let mut s = ParamStore::new();
            let id = s.add("p", Tensor::zeros(&[2, 3]))?;
            s.set(id, Tensor::zeros(&[3, 2]))?;
            Ok(g.param(&s, id))
        },
    );
}

/// `broadcast_to` to an incompatible shape must fail with an error that names `broadcast_to`
/// (the op the user called) and both shapes.
#[test]
fn broadcast_to_error_names_broadcast_to() {
    expect_err(
        "broadcast_to [2,3] -> [4,3]",
        &["broadcast_to", "[2, 3]", "[4, 3]"],
        |g| {
            let x = leaf(g, &[2, 3]);
            g.broadcast_to(x, &[4, 3])
        },
    );
}

/// Zero-size tensors are legal shapes; ops on them must return `Ok` (or `Err`), never panic.
#[test]
fn zero_size_tensors_do_not_panic() {
    type Case = Box<dyn FnOnce(&mut Graph) -> vitcore::Result<Var>>;
    let cases: Vec<(&str, Case)> = vec![
        (
            "concat [2,0,3] ++ [2,0,3] axis 1",
            Box::new(|g: &mut Graph| {
                let (a, b) = (leaf(g, &[2, 0, 3]), leaf(g, &[2, 0, 3]));
                g.concat(&[a, b], 1)
            }),
        ),
        (
            "concat [0,3] ++ [0,3] axis 0",
            Box::new(|g: &mut Graph| {
                let (a, b) = (leaf(g, &[0, 3]), leaf(g, &[0, 3]));
                g.concat(&[a, b], 0)
            }),
        ),
        (
            "select + backward on [3,4,0]",
            Box::new(|g: &mut Graph| {
                let x = leaf(g, &[3, 4, 0]);
                let y = g.select(x, 1, 2)?;
                g.backward_with(y, Tensor::zeros(&[3, 0])).map(|_| y)
            }),
        ),
        (
            "matmul [0,3]x[3,2]",
            Box::new(|g: &mut Graph| {
                let (a, b) = (leaf(g, &[0, 3]), leaf(g, &[3, 2]));
                g.matmul(a, b)
            }),
        ),
        (
            "permute [2,0,3]",
            Box::new(|g: &mut Graph| {
                let x = leaf(g, &[2, 0, 3]);
                g.permute(x, &[2, 1, 0])
            }),
        ),
    ];
    let mut panicked = Vec::new();
    for (what, f) in cases {
        let mut g = Graph::new();
        if catch_unwind(AssertUnwindSafe(|| f(&mut g))).is_err() {
            panicked.push(what);
        }
    }
    assert!(panicked.is_empty(), "panicked on zero-size tensors: {panicked:?}");
}
