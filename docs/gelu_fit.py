"""Fit the polynomials vitcore's CPU GELU uses for |x| <= 2.5 (src/ops/gelu.rs).

    Phi(x)     ~ 1/2 + x * P(x^2)   (P: degree 8)
    gelu'(x)   ~ 1/2 + x * Q(x^2)   (Q: degree 9),  gelu'(x) = Phi(x) + x * phi(x)

Both functions minus 1/2 are odd, so (f(x) - 1/2) / x is a smooth function of x^2. Least squares
on Chebyshev nodes in f64 (close to minimax), then the error of the f32 Horner evaluation with
fused multiply-adds is measured against mpmath. Needs numpy and mpmath. Prints the coefficients
(lowest power first) and the errors.
"""
import mpmath
import numpy as np

mpmath.mp.dps = 30
RANGE = 2.5


def phi(x):
    return float(mpmath.ncdf(x))


def dgelu(x):
    return float(mpmath.ncdf(x) + x * mpmath.npdf(x))


for name, f, degree in [("PHI_POLY", phi, 8), ("DGELU_POLY", dgelu, 9)]:
    n = 600
    xs = RANGE * (np.cos(np.pi * (np.arange(n) + 0.5) / n) + 1) / 2
    xs = xs[xs > 1e-6]
    ys = np.array([(f(v) - 0.5) / v for v in xs])
    coeffs = np.polynomial.polynomial.polyfit(xs**2, ys, degree).astype(np.float32)
    x = np.linspace(-RANGE, RANGE, 20001).astype(np.float32)
    t = (x * x).astype(np.float32)
    p = np.full_like(t, coeffs[-1])
    for c in coeffs[-2::-1]:
        p = (p.astype(np.float64) * t + np.float64(c)).astype(np.float32)  # one rounding: FMA
    value = (x.astype(np.float64) * p + 0.5).astype(np.float32)
    reference = np.array([f(float(v)) for v in x])
    print(f"{name}: max abs error {np.abs(value - reference).max():.2e}")
    print("  " + ", ".join(repr(float(c)) for c in coeffs))
