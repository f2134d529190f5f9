//! The checker catches planted errors.
//!
//! Custom ops (users implement `vitcore::Op`) with a deliberately wrong backward are run through
//! the very same checker (`common::Check::run`, default tolerances: forward 1e-5, gradient 1e-4)
//! as the engine's ops, and the test asserts that the checker reports a *gradient* mismatch while
//! the forward passes. Each planted op has a correct twin that must pass, so the failures are due
//! to the plant and nothing else.

mod common;

use common::*;
use vitcore::ops::matmul::matmul;
use vitcore::rng::Rng;
use vitcore::{Op, Result, Tensor};

#[derive(Clone, Copy, Debug, PartialEq)]
enum Plant {
    /// The correct rule.
    None,
    /// d(x²)/dx written as x instead of 2x.
    MissingFactor,
    /// Right up to a factor 1 + 2e-3: a small error must still fail at tolerance 1e-4.
    Slightly,
    /// No gradient at all for the input.
    Missing,
    /// A NaN in one element.
    Nan,
}

fn map(x: &Tensor, f: impl Fn(f32) -> f32) -> Result<Tensor> {
    Tensor::from_vec(x.data().iter().map(|&v| f(v)).collect(), x.shape())
}

/// `y = x²` element-wise.
struct Square(Plant);

impl Op for Square {
    fn name(&self) -> &'static str {
        "square"
    }
    fn forward(&mut self, x: &[&Tensor]) -> Result<Tensor> {
        map(x[0], |v| v * v)
    }
    fn backward(&self, g: &Tensor, x: &[&Tensor], _y: &Tensor, _needs: &[bool]) -> Result<Vec<Option<Tensor>>> {
        let factor = match self.0 {
            Plant::MissingFactor => 1.0,
            Plant::Slightly => 2.0 * (1.0 + 2e-3),
            _ => 2.0,
        };
        let mut d: Vec<f32> = g
            .data()
            .iter()
            .zip(x[0].data())
            .map(|(&g, &x)| factor * g * x)
            .collect();
        match self.0 {
            Plant::Missing => return Ok(vec![None]),
            Plant::Nan => d[3] = f32::NAN,
            _ => {}
        }
        Ok(vec![Some(Tensor::from_vec(d, x[0].shape())?)])
    }
}

/// Exact GELU whose backward forgets the `x·φ(x)` term of the product rule when planted.
struct Gelu {
    drop_pdf_term: bool,
}

impl Op for Gelu {
    fn name(&self) -> &'static str {
        "planted_gelu"
    }
    fn forward(&mut self, x: &[&Tensor]) -> Result<Tensor> {
        map(x[0], |v| gelu_erf_ref(v as f64) as f32)
    }
    fn backward(&self, g: &Tensor, x: &[&Tensor], _y: &Tensor, _needs: &[bool]) -> Result<Vec<Option<Tensor>>> {
        let dy = |v: f64| {
            let cdf = 0.5 * erfc64(-v / std::f64::consts::SQRT_2);
            let pdf = (-0.5 * v * v).exp() / (2.0 * std::f64::consts::PI).sqrt();
            if self.drop_pdf_term {
                cdf
            } else {
                cdf + v * pdf
            }
        };
        let d = g
            .data()
            .iter()
            .zip(x[0].data())
            .map(|(&g, &x)| (g as f64 * dy(x as f64)) as f32)
            .collect();
        Ok(vec![Some(Tensor::from_vec(d, x[0].shape())?)])
    }
}

/// `y[r, j] = x[r, j] + b[j]`; the planted backward gives the bias the first row of G instead of
/// the sum over rows (the classic broadcast-gradient bug; shapes still match).
struct BiasAdd {
    first_row_only: bool,
}

impl Op for BiasAdd {
    fn name(&self) -> &'static str {
        "planted_bias_add"
    }
    fn forward(&mut self, x: &[&Tensor]) -> Result<Tensor> {
        let n = x[1].numel();
        let b = x[1].data();
        Tensor::from_vec(
            x[0].data().iter().enumerate().map(|(i, &v)| v + b[i % n]).collect(),
            x[0].shape(),
        )
    }
    fn backward(&self, g: &Tensor, x: &[&Tensor], _y: &Tensor, _needs: &[bool]) -> Result<Vec<Option<Tensor>>> {
        let n = x[1].numel();
        let mut db = vec![0.0f32; n];
        for row in g.data().chunks(n) {
            for (d, &v) in db.iter_mut().zip(row) {
                *d += v;
            }
            if self.first_row_only {
                break;
            }
        }
        Ok(vec![Some(g.clone()), Some(Tensor::from_vec(db, &[n])?)])
    }
}

/// `C = A·B` on square matrices; the planted backward computes dA = G·B (a forgotten transpose,
/// which square shapes do not reveal) instead of G·Bᵀ.
struct SquareMatMul {
    forget_transpose: bool,
}

impl Op for SquareMatMul {
    fn name(&self) -> &'static str {
        "planted_matmul"
    }
    fn forward(&mut self, x: &[&Tensor]) -> Result<Tensor> {
        matmul(x[0], x[1], false, false)
    }
    fn backward(&self, g: &Tensor, x: &[&Tensor], _y: &Tensor, _needs: &[bool]) -> Result<Vec<Option<Tensor>>> {
        let da = matmul(g, x[1], false, !self.forget_transpose)?;
        let db = matmul(x[0], g, true, false)?;
        Ok(vec![Some(da), Some(db)])
    }
}

fn square_report(plant: Plant, check: &Check) -> Report {
    let x = randn(&mut Rng::new(1), &[13, 11], 1.0);
    check.run(
        &format!("square, plant {plant:?}"),
        &[x],
        move |g, v| g.apply(Square(plant), &[v[0]]),
        |x| x[0].iter().map(|v| v * v).collect(),
    )
}

/// Assert the report shows a passing forward and a failing gradient check.
#[track_caller]
fn assert_caught(report: &Report) {
    println!("{}", report.summary());
    assert!(report.forward_ok(), "the forward should pass: {}", report.summary());
    assert!(
        !report.grads_ok(),
        "planted gradient error NOT caught: {}",
        report.summary()
    );
    assert!(!report.ok() && report.result().is_err());
    assert!(
        report.failures().iter().any(|f| f.contains("gradient")),
        "failure does not name the gradient: {:?}",
        report.failures()
    );
}

#[test]
fn correct_custom_square_passes() {
    square_report(Plant::None, &Check::default()).assert_ok();
}

/// Missing factor 2 in d(x²)/dx: relative error 0.5, tolerance 1e-4.
#[test]
fn planted_missing_factor_is_caught() {
    let r = square_report(Plant::MissingFactor, &Check::default());
    assert_caught(&r);
    assert!(r.grads[0].rel > 0.4, "expected a 50% error, got {:.2e}", r.grads[0].rel);
}

/// A 0.2 % error fails at the suite's gradient tolerance 1e-4 (and would pass at 1e-2: the
/// tolerance is what decides, and 1e-4 is tight enough to see a 2e-3 slip).
#[test]
fn planted_small_error_is_caught_at_1e_4() {
    let r = square_report(Plant::Slightly, &Check::default());
    assert_caught(&r);
    let loose = square_report(Plant::Slightly, &Check::tol(1e-5, 1e-2));
    assert!(loose.ok(), "{}", loose.summary());
}

/// A backward that returns no gradient for an input the loss depends on.
#[test]
fn planted_missing_gradient_is_caught() {
    let r = square_report(Plant::Missing, &Check::default());
    assert_caught(&r);
    assert!(r.failures()[0].contains("no gradient returned"), "{:?}", r.failures());
}

/// One NaN element in an otherwise right gradient.
#[test]
fn planted_nan_is_caught() {
    let r = square_report(Plant::Nan, &Check::default());
    assert_caught(&r);
    assert!(r.grads[0].rel.is_infinite());
}

/// GELU backward without the x·φ(x) term; the correct twin passes.
#[test]
fn planted_gelu_missing_term_is_caught() {
    let x = randn(&mut Rng::new(2), &[7, 13], 2.0);
    let run = |drop_pdf_term: bool| {
        Check::default().run(
            &format!("custom gelu, drop_pdf_term {drop_pdf_term}"),
            std::slice::from_ref(&x),
            move |g, v| g.apply(Gelu { drop_pdf_term }, &[v[0]]),
            |x| x[0].iter().map(|&v| gelu_erf_ref(v)).collect(),
        )
    };
    run(false).assert_ok();
    assert_caught(&run(true));
}

/// Bias gradient taken from the first row instead of the sum over rows: only the bias gradient
/// must fail, the x gradient stays right.
#[test]
fn planted_bias_gradient_is_caught() {
    let mut rng = Rng::new(3);
    let (x, b) = (randn(&mut rng, &[5, 7], 1.0), randn(&mut rng, &[7], 1.0));
    let run = |first_row_only: bool| {
        Check::default().run(
            &format!("custom bias add, first_row_only {first_row_only}"),
            &[x.clone(), b.clone()],
            move |g, v| g.apply(BiasAdd { first_row_only }, &[v[0], v[1]]),
            |x| add_ref(&x[0], &broadcast_ref(&x[1], &[7], &[5, 7])),
        )
    };
    run(false).assert_ok();
    let r = run(true);
    assert_caught(&r);
    assert!(r.grads[0].ok() && !r.grads[1].ok(), "{}", r.summary());
}

/// dA = G·B instead of G·Bᵀ on square 7×7 matrices: only dA must fail.
#[test]
fn planted_forgotten_transpose_is_caught() {
    let mut rng = Rng::new(4);
    let (a, b) = (randn(&mut rng, &[7, 7], 1.0), randn(&mut rng, &[7, 7], 1.0));
    let run = |forget_transpose: bool| {
        Check::default().run(
            &format!("custom matmul, forget_transpose {forget_transpose}"),
            &[a.clone(), b.clone()],
            move |g, v| g.apply(SquareMatMul { forget_transpose }, &[v[0], v[1]]),
            |x| matmul_ref(&x[0], &[7, 7], &x[1], &[7, 7], false, false),
        )
    };
    run(false).assert_ok();
    let r = run(true);
    assert_caught(&r);
    assert!(!r.grads[0].ok() && r.grads[1].ok(), "{}", r.summary());
}

/// A wrong forward (x²·(1 + 1e-3)) fails the forward comparison.
#[test]
fn planted_forward_error_is_caught() {
    struct Off;
    impl Op for Off {
        fn name(&self) -> &'static str {
            "off"
        }
        fn forward(&mut self, x: &[&Tensor]) -> Result<Tensor> {
            map(x[0], |v| v * v * 1.001)
        }
        fn backward(&self, g: &Tensor, x: &[&Tensor], _y: &Tensor, _n: &[bool]) -> Result<Vec<Option<Tensor>>> {
            Ok(vec![Some(Tensor::from_vec(
                g.data().iter().zip(x[0].data()).map(|(g, x)| 2.0 * g * x).collect(),
                x[0].shape(),
            )?)])
        }
    }
    let x = randn(&mut Rng::new(5), &[5, 3], 1.0);
    let r = Check::default().run(
        "off-by-1e-3 forward",
        &[x],
        |g, v| g.apply(Off, &[v[0]]),
        |x| x[0].iter().map(|v| v * v).collect(),
    );
    println!("{}", r.summary());
    assert!(!r.forward_ok() && r.grads_ok(), "{}", r.summary());
}

/// The error functions fail on NaN and infinity, whatever the tolerance.
#[test]
fn error_functions_fail_on_non_finite() {
    for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
        assert!(rel_err(&[1.0, bad], &[1.0, 2.0]).is_infinite());
        assert!(rel_err(&[1.0, 2.0], &[1.0, bad]).is_infinite());
        assert!(max_rel_err(&[bad], &[1.0]).is_infinite());
        assert!(elementwise_rel_err(&[bad], &[1.0]).is_infinite());
    }
    assert_eq!(rel_err(&[1.0, 2.0], &[1.0, 2.0]), 0.0);
    assert!((rel_err(&[1.1], &[1.0]) - 0.1).abs() < 1e-12);
}
