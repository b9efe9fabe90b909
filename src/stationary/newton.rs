//! Newton's method on ∇f = 0 with a backtracking line search on the merit
//! `m(x) = ½‖∇f(x)‖²` (docs/models.md §7): every stationary point is a minimum of m, so
//! the search converges to saddles and maxima as well as minima.
//!
//! **The step.** With H = ∇²f and g = ∇f at x, the Levenberg–Marquardt step for the
//! system ∇f = 0 (whose Jacobian is H) is `p = −(H² + μI)⁻¹ H g`. In H's eigenbasis
//! (λ_i, q_i) it is `p = −Σ λ_i/(λ_i² + μ) (q_iᵀg) q_i`: Newton's step `−H⁻¹g` along every
//! direction with `|λ_i| ≫ √μ`, and a damped least-squares step (not a division by a
//! tiny or zero λ_i) along the others, so a singular or ill-conditioned H gives a
//! bounded step. Its slope on the merit, `∇m·p = (Hg)·p = −Σ λ_i²/(λ_i² + μ)(q_iᵀg)²`,
//! is negative unless Hg = 0, so some step length lowers m.
//!
//! **The damping.** `√μ = δ·max|λ|` with δ on a ladder from 1e−12 (Newton's step but
//! for null directions at the eigenvalues' round-off) up to 1e4 (a short step along the
//! merit's steepest descent −Hg). A search that finds no step length lowering m (40
//! halvings) climbs one rung and tries again, as does the next step after one cut below
//! a hundredth; a full step (length 1) steps one rung down, so near a nondegenerate
//! point the iteration is Newton's and converges quadratically.
//!
//! **Above the dense limit** no H is formed. The step solves `Hp = −g` by MINRES on
//! Hessian-vector products ([`crate::models::krylov::minres`]), to a relative residual
//! `min(1e−2, ‖g‖/‖g₀‖)` that tightens as the iteration converges (inexact Newton,
//! superlinear);
//! every MINRES iterate is a descent direction of m. When its line search fails, the
//! fallback is the merit's steepest descent −Hg from the Cauchy step length
//! `‖Hg‖²/‖H·Hg‖²` (the limit of the ladder's top).

use super::{Objective, Search, Stop, dot, norm};
use crate::models::krylov::minres;
use crate::problem::ProblemError;
use nalgebra::SymmetricEigen;

/// Armijo's sufficient-decrease fraction: accept a step length t when
/// `m(x + tp) ≤ m(x) + 1e−4·t·∇m·p`, the usual choice (Nocedal and Wright, §3.1).
const ARMIJO: f64 = 1e-4;

/// Halvings of the step length before a line search gives up (t ≥ 2⁻⁴⁰ ≈ 1e−12).
const MAX_HALVINGS: usize = 40;

/// The ladder of damping levels √μ/max|λ|. The lowest, 1e−12, keeps the step bounded
/// (1/(2√μ) per unit of gradient) along directions whose eigenvalue is round-off
/// (≈ 1e−16·max|λ|) while leaving Newton's step alone wherever |λ| ≥ 1e−10·max|λ|; the
/// highest, 1e4, is a short step along the merit's steepest descent −Hg.
const DAMPING: [f64; 9] = [1e-12, 1e-10, 1e-8, 1e-6, 1e-4, 1e-2, 1e0, 1e2, 1e4];

/// A step cut below this fraction of the damped Newton step means the linearisation
/// g + Hp failed badly along it (typically a near-singular H whose step grows without
/// bound near a minimum of ‖∇f‖ that is not a stationary point): the next step starts
/// one rung higher.
const SHORT_STEP: f64 = 1e-2;

/// Most MINRES iterations per step (each one Hessian-vector product); without
/// reorthogonalisation MINRES may need more than d of them, hence up to 2d.
const MINRES_MAX_ITER: usize = 1000;

/// MINRES's relative residual never asked below this (round-off of the products).
const MINRES_MIN_RTOL: f64 = 1e-12;

/// MINRES's relative residual at most: the forcing term is ‖g‖/‖g₀‖ capped at 1e−2. A
/// looser cap (0.1, or √(‖g‖/‖g₀‖)) leaves the small-eigenvalue components of the step
/// unsolved, and on the chained Rosenbrock function (κ(H) ≈ 3000) Newton then crept
/// along the valley for hundreds of steps instead of the dense path's 28.
const MINRES_MAX_RTOL: f64 = 1e-2;

pub(super) fn run(
    objective: &mut Objective<'_>,
    x0: Vec<f64>,
    tolerance: f64,
    max_iter: usize,
    dense: bool,
) -> Result<Search, ProblemError> {
    let mut x = x0;
    let (_, mut g) = objective.gradient(&x)?;
    let g0 = norm(&g);
    let mut iterations = 0;
    let mut level = 0;
    loop {
        let stop = if norm(&g) <= tolerance {
            Some(Stop::Tolerance)
        } else if iterations >= max_iter {
            Some(Stop::MaxIter)
        } else {
            None
        };
        if let Some(stop) = stop {
            return Ok(Search {
                point: x,
                iterations,
                stop,
            });
        }
        let next = if dense {
            dense_step(objective, &x, &mut level)?
        } else {
            matrix_free_step(objective, &x, &g, g0)?
        };
        let Some((xn, gn)) = next else {
            return Ok(Search {
                point: x,
                iterations,
                stop: Stop::Stalled,
            });
        };
        x = xn;
        g = gn;
        iterations += 1;
    }
}

/// The next point and its gradient, when a step was taken.
type Step = Option<(Vec<f64>, Vec<f64>)>;

/// An accepted step length with the new point and its gradient.
type Accepted = Option<(f64, Vec<f64>, Vec<f64>)>;

/// One damped Newton step from x with the dense Hessian, climbing the damping ladder
/// from `level` until a line search succeeds; the new point and its gradient, or `None`
/// when none does.
fn dense_step(
    objective: &mut Objective<'_>,
    x: &[f64],
    level: &mut usize,
) -> Result<Step, ProblemError> {
    let (g, h) = objective.gradient_and_hessian(x)?;
    let d = g.len();
    let eigen = SymmetricEigen::new(h);
    let scale = eigen.eigenvalues.iter().fold(0.0f64, |m, l| m.max(l.abs()));
    if scale == 0.0 {
        return Ok(None);
    }
    let q = &eigen.eigenvectors;
    let c: Vec<f64> = (0..d).map(|i| dot(q.column(i).as_slice(), &g)).collect();
    let merit = 0.5 * dot(&g, &g);
    for (rung, delta) in DAMPING.iter().enumerate().skip(*level) {
        let mu = (delta * scale).powi(2);
        let mut p = vec![0.0; d];
        let mut slope = 0.0;
        for (i, (&l, &ci)) in eigen.eigenvalues.iter().zip(&c).enumerate() {
            let w = l / (l * l + mu);
            slope -= l * w * ci * ci;
            for (pk, qk) in p.iter_mut().zip(q.column(i).iter()) {
                *pk -= w * ci * qk;
            }
        }
        if slope >= 0.0 || slope.is_nan() {
            // Hg = 0 (to round-off): no damping makes a descent direction of the merit.
            return Ok(None);
        }
        if let Some((t, xn, gn)) = line_search(objective, x, &p, merit, slope)? {
            *level = if t == 1.0 {
                rung.saturating_sub(1)
            } else if t < SHORT_STEP {
                (rung + 1).min(DAMPING.len() - 1)
            } else {
                rung
            };
            return Ok(Some((xn, gn)));
        }
    }
    Ok(None)
}

/// One inexact Newton step from x by MINRES on Hessian-vector products, with the
/// merit's steepest descent as the fallback.
fn matrix_free_step(
    objective: &mut Objective<'_>,
    x: &[f64],
    g: &[f64],
    g0: f64,
) -> Result<Step, ProblemError> {
    let d = g.len();
    let merit = 0.5 * dot(g, g);
    let rtol = (norm(g) / g0.max(f64::MIN_POSITIVE)).clamp(MINRES_MIN_RTOL, MINRES_MAX_RTOL);
    let b: Vec<f64> = g.iter().map(|v| -v).collect();
    let solved = minres(
        &b,
        |v: &[f64], out: &mut [f64]| objective.hessian_vector(x, v, out),
        rtol,
        (2 * d).min(MINRES_MAX_ITER),
    )?;
    let p = solved.solution;
    let mut hp = vec![0.0; d];
    objective.hessian_vector(x, &p, &mut hp)?;
    // ∇m·p = (Hg)·p = g·(Hp).
    let slope = dot(g, &hp);
    if slope < 0.0
        && let Some((_, xn, gn)) = line_search(objective, x, &p, merit, slope)?
    {
        return Ok(Some((xn, gn)));
    }
    let mut hg = vec![0.0; d];
    objective.hessian_vector(x, g, &mut hg)?;
    let mut hhg = vec![0.0; d];
    objective.hessian_vector(x, &hg, &mut hhg)?;
    let (a, b) = (dot(&hg, &hg), dot(&hhg, &hhg));
    if !(a > 0.0 && b > 0.0) {
        return Ok(None);
    }
    let t = a / b;
    let p: Vec<f64> = hg.iter().map(|v| -t * v).collect();
    Ok(line_search(objective, x, &p, merit, -t * a)?.map(|(_, xn, gn)| (xn, gn)))
}

/// Backtracking from the full step: the first length t = 1, ½, ¼, … at which the merit
/// falls by Armijo's fraction of its slope, with the new point and its gradient. A
/// trial point where f cannot be evaluated (a non-finite value) counts as a failure.
fn line_search(
    objective: &mut Objective<'_>,
    x: &[f64],
    p: &[f64],
    merit: f64,
    slope: f64,
) -> Result<Accepted, ProblemError> {
    let mut t = 1.0;
    for _ in 0..MAX_HALVINGS {
        let xn: Vec<f64> = x.iter().zip(p).map(|(a, b)| a + t * b).collect();
        if let Ok((_, gn)) = objective.gradient(&xn) {
            let m = 0.5 * dot(&gn, &gn);
            if m <= merit + ARMIJO * t * slope {
                return Ok(Some((t, xn, gn)));
            }
        }
        t *= 0.5;
    }
    Ok(None)
}
