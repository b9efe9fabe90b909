//! The local data every model reads at one point `x`: `g = ∇f(x)`, `H = ∇²f(x)` and the
//! SGD noise covariance `Σ(x)` (docs/models.md §1–2), checked once at the boundary.
//!
//! Checks: matching dimensions, finite entries, and symmetric `H` and `Σ`. A Hessian
//! from automatic differentiation is symmetric only up to round-off (`H_ij` and `H_ji`
//! come from differently ordered sums), so an asymmetry at round-off level is removed
//! by `(A + Aᵀ)/2`; anything larger is a modelling error and is reported.

use nalgebra::{DMatrix, DVector};

use super::error::{ModelError, Point};

/// Largest asymmetry `|A_ij − A_ji|`, relative to `max |A_kl|`, treated as round-off.
/// Why 1e−10: the two entries of an AD Hessian are sums of the same terms in different
/// orders, each within a few thousand ulps of the largest entry even for long
/// expressions (cancellation included), while a genuinely non-symmetric input differs
/// at O(1) relative.
pub const SYMMETRY_TOLERANCE: f64 = 1e-10;

/// Derivative data at one point: the input of every model.
///
/// Build it with [`Local::new`], which checks and symmetrises; a value built as a
/// struct literal is checked again by every model, so it cannot cause a panic or NaN.
#[derive(Debug, Clone, PartialEq)]
pub struct Local {
    /// The point `x`, used in messages.
    pub point: DVector<f64>,
    /// `g = ∇f(x)`.
    pub gradient: DVector<f64>,
    /// `H = ∇²f(x)`, symmetric.
    pub hessian: DMatrix<f64>,
    /// `Σ(x)`, the covariance of the gradient noise, symmetric positive semidefinite.
    pub noise_cov: DMatrix<f64>,
}

impl Local {
    /// Checks dimensions and finiteness, and symmetrises `H` and `Σ` when (and only
    /// when) their asymmetry is at round-off level ([`SYMMETRY_TOLERANCE`]).
    ///
    /// Positive semidefiniteness of `Σ` is not checked here: it is a model-time domain
    /// check, with a policy ([`PsdPolicy`](super::PsdPolicy)) to clip instead of fail.
    pub fn new(
        point: DVector<f64>,
        gradient: DVector<f64>,
        hessian: DMatrix<f64>,
        noise_cov: DMatrix<f64>,
    ) -> Result<Local, ModelError> {
        let raw = Local {
            point,
            gradient,
            hessian,
            noise_cov,
        };
        let checked = check(&raw)?;
        Ok(Local {
            point: raw.point,
            gradient: raw.gradient,
            hessian: checked.hessian,
            noise_cov: checked.noise_cov,
        })
    }

    /// The dimension `d` of the point.
    pub fn dim(&self) -> usize {
        self.point.len()
    }

    /// The point, formatted for messages.
    pub(crate) fn where_(&self) -> Point {
        Point::from(&self.point)
    }
}

/// The symmetrised matrices of a checked [`Local`].
pub(crate) struct Checked {
    pub hessian: DMatrix<f64>,
    pub noise_cov: DMatrix<f64>,
}

/// Every check of [`Local::new`]; models call it on each input because the fields of
/// `Local` are public.
pub(crate) fn check(local: &Local) -> Result<Checked, ModelError> {
    let d = local.point.len();
    if d == 0 {
        return Err(ModelError::EmptyPoint);
    }
    let point = || local.where_();
    if local.gradient.len() != d {
        return Err(ModelError::DimensionMismatch {
            quantity: "the gradient",
            found: format!("{}", local.gradient.len()),
            expected: format!("{d}"),
            dim: d,
            point: point(),
        });
    }
    for (quantity, m) in [
        ("the Hessian", &local.hessian),
        ("the noise covariance", &local.noise_cov),
    ] {
        if m.shape() != (d, d) {
            return Err(ModelError::DimensionMismatch {
                quantity,
                found: format!("{}×{}", m.nrows(), m.ncols()),
                expected: format!("{d}×{d}"),
                dim: d,
                point: point(),
            });
        }
    }
    if let Some(i) = local.point.iter().position(|x| !x.is_finite()) {
        return Err(ModelError::NonFiniteInput {
            quantity: "the point",
            index: format!("{i}"),
            value: local.point[i],
            point: point(),
        });
    }
    if let Some(i) = local.gradient.iter().position(|x| !x.is_finite()) {
        return Err(ModelError::NonFiniteInput {
            quantity: "the gradient",
            index: format!("{i}"),
            value: local.gradient[i],
            point: point(),
        });
    }
    Ok(Checked {
        hessian: symmetrised("the Hessian", &local.hessian, local)?,
        noise_cov: symmetrised("the noise covariance", &local.noise_cov, local)?,
    })
}

/// `(A + Aᵀ)/2` after checking finiteness and that `A` is symmetric up to round-off.
fn symmetrised(
    quantity: &'static str,
    a: &DMatrix<f64>,
    local: &Local,
) -> Result<DMatrix<f64>, ModelError> {
    let d = a.nrows();
    let mut scale = 0.0_f64;
    for i in 0..d {
        for j in 0..d {
            let x = a[(i, j)];
            if !x.is_finite() {
                return Err(ModelError::NonFiniteInput {
                    quantity,
                    index: format!("({i}, {j})"),
                    value: x,
                    point: local.where_(),
                });
            }
            scale = scale.max(x.abs());
        }
    }
    let tolerance = SYMMETRY_TOLERANCE * scale;
    for i in 0..d {
        for j in 0..i {
            let asymmetry = (a[(i, j)] - a[(j, i)]).abs();
            // The entries are finite, so the difference is finite or +inf (overflow),
            // and an overflowing difference is rejected too.
            if asymmetry > tolerance {
                return Err(ModelError::NotSymmetric {
                    quantity,
                    row: i,
                    col: j,
                    asymmetry,
                    tolerance,
                    point: local.where_(),
                });
            }
        }
    }
    // Halving first keeps entries near f64::MAX from overflowing; the result is exactly
    // symmetric because addition commutes.
    Ok(DMatrix::from_fn(d, d, |i, j| {
        0.5 * a[(i, j)] + 0.5 * a[(j, i)]
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local(h: DMatrix<f64>) -> Result<Local, ModelError> {
        Local::new(
            DVector::from_vec(vec![0.1, 2.0]),
            DVector::from_vec(vec![1.0, -1.0]),
            h,
            DMatrix::identity(2, 2),
        )
    }

    #[test]
    fn round_off_asymmetry_is_removed() {
        let h = DMatrix::from_row_slice(2, 2, &[2.0, 1.0 + 1e-15, 1.0, 3.0]);
        let l = local(h).expect("round-off asymmetry is accepted");
        assert_eq!(l.hessian[(0, 1)], l.hessian[(1, 0)]);
    }

    #[test]
    fn real_asymmetry_is_an_error_naming_the_point() {
        let h = DMatrix::from_row_slice(2, 2, &[2.0, 1.1, 1.0, 3.0]);
        let err = local(h).expect_err("asymmetric Hessian");
        assert!(matches!(
            err,
            ModelError::NotSymmetric { row: 1, col: 0, .. }
        ));
        assert!(err.to_string().contains("(0.1, 2)"), "{err}");
    }

    #[test]
    fn shapes_and_finiteness_are_checked() {
        let err = local(DMatrix::identity(3, 3)).expect_err("3×3 Hessian at a 2-d point");
        assert!(matches!(err, ModelError::DimensionMismatch { .. }));
        let mut h = DMatrix::identity(2, 2);
        h[(1, 1)] = f64::NAN;
        let err = local(h).expect_err("NaN Hessian");
        assert!(matches!(err, ModelError::NonFiniteInput { .. }));
        let empty = Local::new(
            DVector::zeros(0),
            DVector::zeros(0),
            DMatrix::zeros(0, 0),
            DMatrix::zeros(0, 0),
        );
        assert_eq!(empty, Err(ModelError::EmptyPoint));
    }
}
