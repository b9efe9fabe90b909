//! Symmetric spectra with nalgebra's QR eigensolver (the models' [`Arithmetic::Qr`](
//! super::Arithmetic::Qr)): `A = V diag(μ) Vᵀ` checked finite, and the positive
//! semidefinite checks, clipping and square roots of Σ and Γ (docs/models.md §2: Σ and
//! Γ must be covariances, `σ = Γ^{1/2}`).

use nalgebra::{DMatrix, Dyn, SymmetricEigen};

use super::error::{ModelError, Point};

/// Eigenvalues at or above `−PSD_TOLERANCE · max|eigenvalue|` count as zero.
/// Why 1e−12: the symmetric eigensolver is backward stable, its eigenvalues are exact for
/// a matrix within about `c·d·ε·‖A‖` of `A`; with `c·d` up to a few thousand (d in the
/// hundreds) that is ~1e−12 relative, so a smaller negative eigenvalue is
/// indistinguishable from a zero one (e.g. a rank-deficient minibatch covariance).
pub const PSD_TOLERANCE: f64 = 1e-12;

/// Iteration budget of the implicit QR sweeps, per dimension. Why 100: LAPACK allows
/// 30 per eigenvalue and typically needs 2–3; more means the solver is not converging.
const EIGEN_SWEEPS_PER_DIM: usize = 100;

/// `A = V diag(μ) Vᵀ`, with every entry checked finite.
pub(crate) fn eigen(
    a: DMatrix<f64>,
    quantity: &'static str,
    point: &Point,
) -> Result<SymmetricEigen<f64, Dyn>, ModelError> {
    // The inputs were checked finite, so a non-finite matrix here is an overflowed
    // intermediate (Γ from huge H or Σ); the eigensolver must not see it.
    if !a.iter().all(|x| x.is_finite()) {
        return Err(ModelError::Overflow {
            quantity,
            point: point.clone(),
        });
    }
    let budget = EIGEN_SWEEPS_PER_DIM * a.nrows().max(1);
    let failed = |reason| ModelError::EigenFailed {
        quantity,
        reason,
        point: point.clone(),
    };
    let e = SymmetricEigen::try_new(a, f64::EPSILON, budget)
        .ok_or_else(|| failed("no convergence within the iteration budget"))?;
    if e.eigenvalues
        .iter()
        .chain(e.eigenvectors.iter())
        .all(|x| x.is_finite())
    {
        Ok(e)
    } else {
        Err(failed("the eigenvalues overflowed f64"))
    }
}

/// `V diag(f(μ_k)) Vᵀ`, made exactly symmetric.
fn recompose(e: &SymmetricEigen<f64, Dyn>, f: impl Fn(f64) -> f64) -> DMatrix<f64> {
    let mut scaled = e.eigenvectors.clone();
    for (k, mut column) in scaled.column_iter_mut().enumerate() {
        column *= f(e.eigenvalues[k]);
    }
    symmetric_part(&(scaled * e.eigenvectors.transpose()))
}

/// `(A + Aᵀ)/2`: removes the round-off asymmetry of a product that is symmetric in exact
/// arithmetic, so downstream code may rely on exact symmetry.
pub(crate) fn symmetric_part(a: &DMatrix<f64>) -> DMatrix<f64> {
    DMatrix::from_fn(a.nrows(), a.ncols(), |i, j| {
        0.5 * a[(i, j)] + 0.5 * a[(j, i)]
    })
}

/// The spectrum of a symmetric matrix that must be positive semidefinite, with its
/// smallest eigenvalue and its scale, ready to be checked, clipped or square-rooted.
pub(crate) struct Psd {
    eigen: SymmetricEigen<f64, Dyn>,
    /// Smallest eigenvalue.
    pub min: f64,
    /// Largest |eigenvalue|, the scale of the round-off tolerance.
    pub scale: f64,
}

impl Psd {
    pub(crate) fn new(
        a: &DMatrix<f64>,
        quantity: &'static str,
        point: &Point,
    ) -> Result<Psd, ModelError> {
        let eigen = eigen(a.clone(), quantity, point)?;
        let min = eigen.eigenvalues.min();
        let scale = eigen.eigenvalues.amax();
        Ok(Psd { eigen, min, scale })
    }

    /// Whether every eigenvalue is above `−PSD_TOLERANCE · scale` (round-off counts as 0).
    pub(crate) fn is_psd(&self) -> bool {
        self.min >= -PSD_TOLERANCE * self.scale
    }

    /// The nearest PSD matrix in the Frobenius norm: negative eigenvalues set to 0.
    pub(crate) fn clipped(&self) -> DMatrix<f64> {
        recompose(&self.eigen, |mu| mu.max(0.0))
    }

    /// The symmetric PSD square root of the clipped matrix, `V diag(√μ₊) Vᵀ`, where
    /// eigenvalues below `PSD_TOLERANCE · scale` count as 0. Why also the small positive
    /// ones: they are round-off as much as the small negative ones, and the square root
    /// would blow a round-off eigenvalue of 1e−18 up to a spurious 1e−9 in σ.
    pub(crate) fn sqrt(&self) -> DMatrix<f64> {
        let floor = PSD_TOLERANCE * self.scale;
        recompose(&self.eigen, |mu| if mu > floor { mu.sqrt() } else { 0.0 })
    }
}
