//! The closed (resummed) forms, through the symmetric eigendecomposition
//! `H = U diag(λ) Uᵀ` computed once per call (spec MODELS.md §2): with `x_i = ηλ_i` and
//! `p_i = 1 − x_i`,
//!
//! * drift `−φ(ηH) g = −U diag(ℓ(p_i)) Uᵀ g`;
//! * `hasme` diffusion `η ψ^{1/2} Σ ψ^{1/2} = η U (Σ̂ ∘ s sᵀ) Uᵀ`, `s_i = ℓ(p_i²)^{1/2}`;
//! * `hasme-exact` diffusion `η U (Σ̂ ∘ L) Uᵀ`, `L_ij = ℓ(p_i p_j)`,
//!
//! where `Σ̂ = Uᵀ Σ U`. Both diffusions are one weighted congruence in the eigenbasis;
//! they coincide when Σ commutes with H (then Σ̂ is diagonal and `L_ii = s_i²`).
//! Also here: the positive semidefinite checks and square roots of Σ and Γ.

use nalgebra::{DMatrix, DVector, Dyn, SymmetricEigen};

use super::ell::ell_pq;
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

/// The eigendecomposition of `ηH` with the domain of the resummed models checked.
pub(crate) struct Spectrum {
    u: DMatrix<f64>,
    /// `x_i = ηλ_i`.
    x: DVector<f64>,
    eta: f64,
}

impl Spectrum {
    /// Decomposes `H` and checks `ηλ_max < 1` (every `p_i = 1 − ηλ_i > 0`).
    pub(crate) fn new(
        hessian: &DMatrix<f64>,
        eta: f64,
        point: &Point,
    ) -> Result<Spectrum, ModelError> {
        let e = eigen(hessian.clone(), "the Hessian", point)?;
        let lambda_max = e.eigenvalues.max();
        let product = eta * lambda_max;
        // η and λ_max are finite, so the product is finite or ±inf, never NaN; +inf is
        // outside the domain too.
        if product >= 1.0 {
            return Err(ModelError::StepSizeTooLarge {
                lambda_max,
                eta,
                product,
                inverse_lambda_max: 1.0 / lambda_max,
                point: point.clone(),
            });
        }
        Ok(Spectrum {
            x: e.eigenvalues * eta,
            u: e.eigenvectors,
            eta,
        })
    }

    /// `p_i = 1 − ηλ_i`.
    fn p(&self, i: usize) -> f64 {
        1.0 - self.x[i]
    }

    /// The drift `−φ(ηH) g = −U diag(ℓ(1 − x_i)) Uᵀ g`.
    pub(crate) fn drift(&self, gradient: &DVector<f64>) -> DVector<f64> {
        let mut in_basis = self.u.tr_mul(gradient);
        for (i, c) in in_basis.iter_mut().enumerate() {
            // q = −x_i exactly, while p_i is rounded: ell_pq reads q near p = 1.
            *c *= -ell_pq(self.p(i), -self.x[i]);
        }
        &self.u * in_basis
    }

    /// `ℓ(p_i p_j)`: the `hasme-exact` weights; the diagonal is `ψ`'s eigenvalues.
    fn ell_of_products(&self, i: usize, j: usize) -> f64 {
        let (pi, pj) = (self.p(i), self.p(j));
        // One rounding: q has absolute error ≲ ε(1 + p_i p_j), which moves ℓ by no more
        // than that (|ℓ'| ≤ 1/2 near q = 0), whatever the cancellation in q.
        ell_pq(pi * pj, pi.mul_add(pj, -1.0))
    }

    /// The `hasme` diffusion `η ψ^{1/2} Σ ψ^{1/2}`.
    pub(crate) fn hasme_diffusion(&self, noise_cov: &DMatrix<f64>) -> DMatrix<f64> {
        let d = self.x.len();
        let s = DVector::from_fn(d, |i, _| self.ell_of_products(i, i).sqrt());
        self.weighted_congruence(noise_cov, |i, j| s[i] * s[j])
    }

    /// The `hasme-exact` diffusion `η U (Σ̂ ∘ L) Uᵀ`, possibly indefinite.
    pub(crate) fn exact_diffusion(&self, noise_cov: &DMatrix<f64>) -> DMatrix<f64> {
        self.weighted_congruence(noise_cov, |i, j| self.ell_of_products(i, j))
    }

    /// `η U ((UᵀΣU) ∘ W) Uᵀ`.
    fn weighted_congruence(
        &self,
        noise_cov: &DMatrix<f64>,
        weight: impl Fn(usize, usize) -> f64,
    ) -> DMatrix<f64> {
        let mut hat = self.u.tr_mul(&(noise_cov * &self.u));
        for j in 0..hat.ncols() {
            for i in 0..hat.nrows() {
                hat[(i, j)] *= self.eta * weight(i, j);
            }
        }
        symmetric_part(&(&self.u * hat * self.u.transpose()))
    }
}
