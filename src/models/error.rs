//! What can go wrong when computing model coefficients at a point: every domain check
//! of docs/models.md §2 (η > 0, `ηλ_max < 1` for the resummed models, Σ and Γ positive
//! semidefinite) becomes one variant that names the point and the offending quantity,
//! so that no model ever hands back a NaN.

use std::fmt;

/// A point of `R^d`, formatted for messages as `(0.1, 2)`.
///
/// Long points are shortened after [`Point::SHOWN`] coordinates so that an error at a
/// point of a 10 000-dimensional problem stays one readable line.
#[derive(Debug, Clone, PartialEq)]
pub struct Point(pub Vec<f64>);

impl Point {
    /// How many coordinates a message shows before eliding the rest.
    pub const SHOWN: usize = 8;

    pub(crate) fn from_slice(x: &[f64]) -> Point {
        Point(x.to_vec())
    }
}

impl From<&nalgebra::DVector<f64>> for Point {
    fn from(v: &nalgebra::DVector<f64>) -> Self {
        Point(v.iter().copied().collect())
    }
}

impl fmt::Display for Point {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("(")?;
        for (i, x) in self.0.iter().take(Self::SHOWN).enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{x}")?;
        }
        if self.0.len() > Self::SHOWN {
            write!(f, ", … {} more", self.0.len() - Self::SHOWN)?;
        }
        f.write_str(")")
    }
}

/// Why a model could not produce coefficients.
///
/// Every numerical variant carries the point and the quantity that failed; the
/// messages are meant to be shown to a user as they are.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ModelError {
    /// The step size is not a finite positive number.
    #[error("the step size η must be finite and > 0, got η = {eta}")]
    InvalidStepSize { eta: f64 },

    /// The point has no coordinates.
    #[error("the point has dimension 0; the models need at least one coordinate")]
    EmptyPoint,

    /// The gradient, Hessian or noise covariance does not match the point's dimension.
    #[error(
        "{quantity} has shape {found} but the point {point} has dimension {dim} (expected {expected})"
    )]
    DimensionMismatch {
        quantity: &'static str,
        found: String,
        expected: String,
        dim: usize,
        point: Point,
    },

    /// An input entry is NaN or infinite.
    #[error("{quantity} has a non-finite entry {value} at index {index} at the point {point}")]
    NonFiniteInput {
        quantity: &'static str,
        index: String,
        value: f64,
        point: Point,
    },

    /// A matrix that must be symmetric differs from its transpose by more than round-off.
    #[error(
        "{quantity} is not symmetric at the point {point}: entries ({row}, {col}) and ({col}, {row}) \
         differ by {asymmetry}, more than round-off allows ({tolerance})"
    )]
    NotSymmetric {
        quantity: &'static str,
        row: usize,
        col: usize,
        asymmetry: f64,
        tolerance: f64,
        point: Point,
    },

    /// `ηλ_max(H) ≥ 1`: outside the domain of `hasme` and `hasme-exact`.
    #[error(
        "η·λ_max(H) = {product} ≥ 1 at the point {point}: λ_max = {lambda_max}, η = {eta}; \
         hasme and hasme-exact need η < 1/λ_max = {inverse_lambda_max}. Along that eigenvector \
         SGD overshoots and flips sign each step, which no real diffusion can reproduce"
    )]
    StepSizeTooLarge {
        lambda_max: f64,
        eta: f64,
        product: f64,
        inverse_lambda_max: f64,
        point: Point,
    },

    /// The noise covariance Σ has an eigenvalue below −round-off.
    #[error(
        "the noise covariance Σ is not positive semidefinite at the point {point}: smallest \
         eigenvalue {min_eigenvalue} (largest |eigenvalue| {scale}); PsdPolicy::Clip continues \
         with the nearest PSD matrix"
    )]
    NoiseNotPsd {
        min_eigenvalue: f64,
        scale: f64,
        point: Point,
    },

    /// The `hasme-exact` diffusion is indefinite: the exact SGD covariance update has no
    /// real diffusion at this point.
    #[error(
        "the hasme-exact diffusion Γ is indefinite at the point {point}: smallest eigenvalue \
         {min_eigenvalue} (largest |eigenvalue| {scale}); no real diffusion reproduces SGD \
         exactly at this point. Use hasme, or PsdPolicy::Clip for the nearest PSD Γ"
    )]
    ExactDiffusionIndefinite {
        min_eigenvalue: f64,
        scale: f64,
        point: Point,
    },

    /// A diffusion other than `hasme-exact`'s came out indefinite (a truncated series
    /// need not be PSD when η‖H‖ is not small).
    #[error(
        "the {model} diffusion Γ is indefinite at the point {point}: smallest eigenvalue \
         {min_eigenvalue} (largest |eigenvalue| {scale}); PsdPolicy::Clip continues with the \
         nearest PSD matrix"
    )]
    DiffusionIndefinite {
        model: String,
        min_eigenvalue: f64,
        scale: f64,
        point: Point,
    },

    /// The symmetric eigensolver did not converge (or overflowed).
    #[error("the eigendecomposition of {quantity} failed at the point {point}: {reason}")]
    EigenFailed {
        quantity: &'static str,
        reason: &'static str,
        point: Point,
    },

    /// An output overflowed f64 although every input was finite.
    #[error(
        "{quantity} is not finite at the point {point}: the inputs are too large for f64 arithmetic"
    )]
    Overflow {
        quantity: &'static str,
        point: Point,
    },

    /// A Krylov tolerance that is not a finite number in (0, 1).
    #[error("the Krylov tolerance must be a finite number in (0, 1), got {tolerance}")]
    InvalidKrylovTolerance { tolerance: f64 },

    /// A model with no matrix-free form was asked for without the dense Hessian.
    #[error(
        "{model} has no matrix-free form: {reason}; use the dense linear algebra \
         (--linear-algebra dense) for it"
    )]
    DenseOnly { model: String, reason: &'static str },

    /// A model name that is not one of the known ones.
    #[error(
        "unknown model `{name}`; valid models: gf, sme1, sme2, hasme, hasme-exact, series:K \
         (K a non-negative integer, e.g. series:3)"
    )]
    UnknownModel { name: String },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn points_format_like_tuples() {
        assert_eq!(Point(vec![0.1, 2.0]).to_string(), "(0.1, 2)");
        assert_eq!(Point(vec![]).to_string(), "()");
        let long = Point((0..10).map(f64::from).collect());
        assert_eq!(long.to_string(), "(0, 1, 2, 3, 4, 5, 6, 7, … 2 more)");
    }
}
