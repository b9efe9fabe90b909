//! The Hessian's eigenvalues at a point and what they make of it: the index (the
//! number of negative eigenvalues) and the kind (minimum, saddle, maximum, degenerate).
//!
//! Up to the dense limit, every eigenvalue of the dense Hessian (nalgebra's symmetric
//! QR). Above it, the [`EXTREME_EIGENVALUES`] smallest and largest, as Ritz values of
//! Lanczos with full reorthogonalisation on Hessian-vector products
//! ([`crate::models::krylov::Lanczos`]), run until each has a residual bound below
//! [`LANCZOS_TOLERANCE`]·max|θ|.

use super::{Objective, PointKind};
use crate::models::krylov::Lanczos;
use crate::problem::ProblemError;
use nalgebra::{DMatrix, SymmetricEigen};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution as _, StandardNormal};

/// An eigenvalue within this fraction of max|λ| of 0 counts as zero: the point is then
/// degenerate, and the eigenvalue counts for neither sign. Far above the round-off of
/// the eigenvalues (≈ 1e−16·max|λ|), and above how far they move between the point
/// where ‖∇f‖ meets the tolerance and the exact stationary point (a distance of about
/// tol/|λ|min, times the third derivatives).
pub const DEGENERATE_TOLERANCE: f64 = 1e-6;

/// How many eigenvalues at each end of the spectrum Lanczos reports above the dense
/// limit: enough to see the few most negative curvatures of a saddle and the
/// sharpest directions, which escape and the step size's domain depend on.
pub const EXTREME_EIGENVALUES: usize = 6;

/// The residual bound each reported Ritz value must reach, relative to max|θ|: the
/// classification needs far less, and Lanczos reaches it for well-separated extremes
/// in tens of steps.
pub const LANCZOS_TOLERANCE: f64 = 1e-8;

/// Most Lanczos steps (each one Hessian-vector product and an O(dk) reorthogonalisation).
const LANCZOS_MAX_STEPS: usize = 300;

/// The Ritz values are checked for convergence every this many steps (each check an
/// O(k³) eigendecomposition of T_k, cheap beside k Hessian-vector products).
const CHECK_EVERY: usize = 5;

/// Eigenvalues, index and kind.
pub(super) struct Spectrum {
    pub(super) values: Vec<f64>,
    pub(super) index: usize,
    pub(super) kind: PointKind,
    pub(super) warnings: Vec<String>,
}

/// Every eigenvalue of a dense Hessian, ascending, with the index and kind.
pub(super) fn dense(hessian: &DMatrix<f64>) -> Spectrum {
    let mut values: Vec<f64> = SymmetricEigen::new(hessian.clone())
        .eigenvalues
        .iter()
        .copied()
        .collect();
    values.sort_by(f64::total_cmp);
    let (index, kind) = classify(&values, true);
    Spectrum {
        values,
        index,
        kind,
        warnings: Vec::new(),
    }
}

/// The extreme eigenvalues by Lanczos on Hessian-vector products at `x`.
pub(super) fn extreme(objective: &mut Objective<'_>, x: &[f64]) -> Result<Spectrum, ProblemError> {
    let d = objective.dim();
    // A fixed pseudo-random start: the same bits on every run, and (almost surely) not
    // orthogonal to any eigenvector, as a structured vector might be.
    let mut rng = ChaCha8Rng::seed_from_u64(0x4c41_4e43_5a4f_5321);
    let start: Vec<f64> = (0..d).map(|_| StandardNormal.sample(&mut rng)).collect();
    let mut lanczos = Lanczos::new(&start);
    let max_steps = d.min(LANCZOS_MAX_STEPS);
    let mut apply = |v: &[f64], out: &mut [f64]| objective.hessian_vector(x, v, out);
    loop {
        let more = lanczos.step(&mut apply)?;
        let k = lanczos.steps();
        let last = !more || k >= max_steps;
        if last || k.is_multiple_of(CHECK_EVERY) {
            let ritz = lanczos.ritz();
            let scale = ritz.iter().fold(0.0f64, |m, r| m.max(r.value.abs()));
            let wanted = EXTREME_EIGENVALUES.min(ritz.len());
            let ends = ritz[..wanted].iter().chain(&ritz[ritz.len() - wanted..]);
            let converged = ends.clone().all(|r| r.bound <= LANCZOS_TOLERANCE * scale);
            if converged || last {
                let mut chosen: Vec<usize> =
                    (0..wanted).chain(ritz.len() - wanted..ritz.len()).collect();
                chosen.sort_unstable();
                chosen.dedup();
                let values: Vec<f64> = chosen.iter().map(|&i| ritz[i].value).collect();
                let mut warnings = Vec::new();
                if !converged {
                    let worst = ends.fold(0.0f64, |m, r| m.max(r.bound));
                    warnings.push(format!(
                        "Lanczos stopped after {k} steps with a residual bound of {worst:e} on an extreme eigenvalue (wanted {:e})",
                        LANCZOS_TOLERANCE * scale
                    ));
                }
                let whole = chosen.len() == d;
                let (index, kind) = classify(&values, whole);
                return Ok(Spectrum {
                    values,
                    index,
                    kind,
                    warnings,
                });
            }
        }
    }
}

/// The index and kind of ascending eigenvalues; `whole` when they are all of H's (else
/// the extreme ones: the kind then follows from the ends).
fn classify(values: &[f64], whole: bool) -> (usize, PointKind) {
    let scale = values.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let zero = DEGENERATE_TOLERANCE * scale;
    let index = values.iter().filter(|&&v| v < -zero).count();
    let near_zero = values.iter().any(|v| v.abs() <= zero);
    let (Some(&low), Some(&high)) = (values.first(), values.last()) else {
        return (0, PointKind::Degenerate);
    };
    let kind = if near_zero && (whole || low >= -zero || high <= zero) {
        // Known only for the whole spectrum, or at an end that is the one nearest 0
        // (all eigenvalues of one sign): an interior eigenvalue of a large saddle may
        // be 0 unseen.
        PointKind::Degenerate
    } else if low > zero {
        PointKind::Minimum
    } else if high < -zero {
        PointKind::Maximum
    } else {
        PointKind::Saddle
    };
    (index, kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eigenvalues_classify_the_point() {
        assert_eq!(classify(&[1.0, 2.0], true), (0, PointKind::Minimum));
        assert_eq!(classify(&[-1.0, 2.0], true), (1, PointKind::Saddle));
        assert_eq!(classify(&[-3.0, -1.0], true), (2, PointKind::Maximum));
        assert_eq!(
            classify(&[-1.0, 1e-9, 2.0], true),
            (1, PointKind::Degenerate)
        );
        assert_eq!(classify(&[0.0, 0.0], true), (0, PointKind::Degenerate));
        // Extreme eigenvalues only: a zero among them decides only when it is the end
        // nearest 0.
        assert_eq!(
            classify(&[1e-9, 1.0, 5.0], false),
            (0, PointKind::Degenerate)
        );
        assert_eq!(classify(&[-2.0, 1e-9, 5.0], false), (1, PointKind::Saddle));
    }
}
