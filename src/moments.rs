//! Exact Gaussian moments of SGD and of every SDE model on a quadratic objective with
//! constant noise, and the distances between them (docs/models.md §3).
//!
//! For `f(x) = ½xᵀHx + cᵀx` and constant Σ, SGD started at `x₀` is the Gaussian chain
//!
//! ```text
//! m₀ = x₀, C₀ = 0,   m_{k+1} = (I − ηH) m_k − ηc,   C_{k+1} = (I − ηH) C_k (I − ηH)ᵀ + η²Σ,
//! ```
//!
//! and every model of [`crate::models`] is a linear SDE `dX = (AX + a) dt + σ dW`,
//! `Γ = σσᵀ`. `A`, `a` and `Γ` are read off the models' own coefficients, so exact
//! moments and simulators share one code path: every drift is linear in the gradient
//! `g(x) = Hx + c`, hence column `i` of `A` is the drift evaluated with gradient `He_i`
//! and `a` the drift with gradient `c` (no differences, so no cancellation). `Γ` is the
//! model's diffusion; for `hasme-exact` it is [`hasme_exact_gamma`], which may be
//! indefinite (docs/models.md §2): the moments below are linear in `Γ` and remain well
//! defined (they are the moments of the formal linear SDE), and they still equal SGD's.
//!
//! The SDE moments at `t = kη` are
//!
//! ```text
//! m(t) = e^{At} x₀ + ∫₀ᵗ e^{As} ds a,        C(t) = ∫₀ᵗ e^{As} Γ e^{Aᵀs} ds,
//! ```
//!
//! computed exactly in the eigenbasis `A = V diag(α) Vᵀ` (every model's `A` is a
//! function of `H`, hence symmetric): with hats for coordinates in that basis,
//!
//! ```text
//! m̂_i = e^{α_i t} x̂₀_i + t φ₁(α_i t) â_i,     Ĉ_ij = t φ₁((α_i + α_j) t) Γ̂_ij,     φ₁(z) = (e^z − 1)/z,
//! ```
//!
//! `φ₁` through `expm1`: accurate for `α` of either sign and tiny, and exactly `t` for
//! `α = 0` (a singular `H`), so there is no `A⁻¹` anywhere. A non-symmetric `A` (no model
//! produces one) falls back on Van Loan's block exponential ([`LinearSde::moments_van_loan`]),
//! which is exact too but loses accuracy when `‖A‖t` is large.
//!
//! Per reported step, each model is compared with SGD by the Euclidean norm of the mean
//! difference, the relative Frobenius error of the covariance, and the 2-Wasserstein
//! (Bures) distance of the two Gaussians ([`wasserstein2`]).
//!
//! ```
//! use hasme::Problem;
//! use hasme::models::ModelKind;
//! use hasme::moments::{MomentsConfig, compare};
//!
//! // A quadratic saddle: curvature 1 along x, −2 along y, anisotropic constant noise.
//! let problem = Problem::from_str(
//!     "var x = 0.5, y = 0.1\nminimize 0.5*x^2 - y^2\nnoise diag [0.04, 0.01]",
//! )?;
//! let config = MomentsConfig::new(0.1, 50)?.with_every(10)?;
//! let report = compare(&problem, &config)?;
//! assert_eq!(report.steps, vec![0, 10, 20, 30, 40, 50]);
//!
//! // Along y, SGD multiplies the mean by 1 + ηκ = 1.2 per step.
//! assert!((report.sgd.mean[1] / (0.1 * 1.2f64.powi(50)) - 1.0).abs() < 1e-12);
//! // hasme reproduces SGD (Σ commutes with H here); sme1 does not.
//! let hasme = report.model(ModelKind::Hasme).unwrap().as_ref().unwrap();
//! let sme1 = report.model(ModelKind::Sme1).unwrap().as_ref().unwrap();
//! assert!(hasme.w2.iter().all(|&w| w < 1e-9 * report.sgd.mean.norm()));
//! assert!(sme1.w2[5] > 0.1);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;

use nalgebra::{DMatrix, DVector, SymmetricEigen};
use serde::Serialize;
use serde::ser::{SerializeMap, Serializer};

use crate::ErrorKind;
use crate::models::{
    Local, Model, ModelError, ModelKind, PSD_TOLERANCE, SYMMETRY_TOLERANCE, hasme_exact_gamma,
};
use crate::plot::{LinePlot, YAxis};
use crate::problem::{Problem, ProblemError};

/// By default about this many steps are reported (`every = ⌈steps / 200⌉`): enough for
/// a smooth curve, small enough for a readable table and JSON.
pub const DEFAULT_REPORTED_STEPS: usize = 200;

/// `HΣ = ΣH` when `‖HΣ − ΣH‖_F ≤ COMMUTE_TOLERANCE · ‖H‖_F ‖Σ‖_F`. Why 1e−12: each entry
/// of the two products carries round-off of at most `d·ε·‖H‖‖Σ‖`, far below 1e−12 for
/// any d this toolkit handles, while a genuine non-commuting pair differs at O(1).
pub const COMMUTE_TOLERANCE: f64 = 1e-12;

/// Sweeps of the symmetric eigensolver and the SVD per dimension before giving up.
/// Why 100: LAPACK allows 30 per eigenvalue and typically needs 2–3.
const SWEEPS_PER_DIM: usize = 100;

/// Why `hasme moments` (or a moment computation) failed.
#[derive(Debug, thiserror::Error)]
pub enum MomentsError {
    /// A configuration value is out of range (η, steps, every, models).
    #[error("{0}")]
    InvalidConfig(String),
    /// The objective is not quadratic or the noise not constant.
    #[error(
        "`{file}`: exact Gaussian moments need a quadratic objective (a polynomial of degree \
         ≤ 2) with constant noise, but {reason}. Without both, SGD and the SDE models are not \
         Gaussian processes with closed-form moments: use the Monte Carlo commands instead, \
         `hasme simulate` (paths of SGD and of each model) or `hasme weak-order` (weak error \
         against η)"
    )]
    NotQuadratic {
        /// The file.
        file: String,
        /// What fails, in words.
        reason: String,
    },
    /// Matrices or vectors given to the library are inconsistent or invalid.
    #[error("{0}")]
    InvalidInput(String),
    /// Reading or evaluating the problem failed.
    #[error("{0}")]
    Problem(#[from] ProblemError),
    /// A model cannot be built for this η (e.g. `ηλ_max ≥ 1` for `hasme`).
    #[error("{0}")]
    Model(#[from] ModelError),
    /// SGD's moments left the range of f64 (a strongly concave direction over many steps).
    #[error(
        "SGD's moments overflow f64 at step {step} (t = {time}): along a direction of \
         negative curvature they grow like (1 + η|λ_min|)^k; use fewer steps or a smaller η"
    )]
    SgdOverflow {
        /// The first step with a non-finite moment.
        step: usize,
        /// `t = step·η`.
        time: f64,
    },
    /// A model's moments (or a distance) left the range of f64.
    #[error("{quantity} overflows f64{}; use fewer steps or a smaller η", at_time(*.time))]
    Overflow {
        /// What overflowed.
        quantity: &'static str,
        /// The time, when there is one.
        time: Option<f64>,
    },
    /// An eigendecomposition or SVD did not converge, or a method's range was exceeded.
    #[error("{quantity}: {reason}")]
    Numerical {
        /// What was being computed.
        quantity: &'static str,
        /// What went wrong.
        reason: &'static str,
    },
}

/// `" at t = …"`, or nothing.
fn at_time(time: Option<f64>) -> String {
    time.map(|t| format!(" at t = {t}")).unwrap_or_default()
}

impl MomentsError {
    /// Bad input: the configuration, a non-quadratic problem, invalid matrices, or the
    /// problem's own input errors; anything else failed while running.
    pub fn kind(&self) -> ErrorKind {
        match self {
            MomentsError::InvalidConfig(_)
            | MomentsError::NotQuadratic { .. }
            | MomentsError::InvalidInput(_) => ErrorKind::Input,
            MomentsError::Problem(e) => e.kind(),
            MomentsError::Model(_)
            | MomentsError::SgdOverflow { .. }
            | MomentsError::Overflow { .. }
            | MomentsError::Numerical { .. } => ErrorKind::Run,
        }
    }
}

// ---------------------------------------------------------------------------------------
// Configuration

/// What `hasme moments` computes: step size, number of SGD steps, which steps to report
/// and which models to compare. Every value is checked when it is set.
///
/// ```
/// use hasme::models::ModelKind;
/// use hasme::moments::MomentsConfig;
///
/// let c = MomentsConfig::new(0.1, 1000)?;
/// assert_eq!(c.every(), 5); // ⌈1000 / 200⌉ by default
/// assert_eq!(c.models(), &ModelKind::all());
/// let c = c.with_every(300)?.with_models([ModelKind::Sme1, ModelKind::Hasme])?;
/// assert_eq!(c.reported_steps(), vec![0, 300, 600, 900, 1000]);
/// assert!(MomentsConfig::new(-0.1, 10).is_err());
/// assert!(MomentsConfig::new(0.1, 0).is_err());
/// # Ok::<(), hasme::moments::MomentsError>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct MomentsConfig {
    eta: f64,
    steps: usize,
    every: usize,
    models: Vec<ModelKind>,
}

impl MomentsConfig {
    /// Step size `eta` (finite, > 0) and number of SGD steps (≥ 1); reports about
    /// [`DEFAULT_REPORTED_STEPS`] steps and compares every named model.
    pub fn new(eta: f64, steps: usize) -> Result<MomentsConfig, MomentsError> {
        if !(eta.is_finite() && eta > 0.0) {
            return Err(MomentsError::InvalidConfig(format!(
                "--eta must be a finite number > 0, got {eta}"
            )));
        }
        if steps == 0 {
            return Err(MomentsError::InvalidConfig(
                "--steps must be at least 1".to_string(),
            ));
        }
        if !(steps as f64 * eta).is_finite() {
            return Err(MomentsError::InvalidConfig(format!(
                "the horizon steps·η = {steps}·{eta} is not a finite number"
            )));
        }
        Ok(MomentsConfig {
            eta,
            steps,
            every: steps.div_ceil(DEFAULT_REPORTED_STEPS).max(1),
            models: ModelKind::all().to_vec(),
        })
    }

    /// Reports every `every`-th step (≥ 1), and always step 0 and the last step.
    pub fn with_every(mut self, every: usize) -> Result<MomentsConfig, MomentsError> {
        if every == 0 {
            return Err(MomentsError::InvalidConfig(
                "--every must be at least 1".to_string(),
            ));
        }
        self.every = every;
        Ok(self)
    }

    /// The models to compare with SGD, in this order (duplicates dropped; at least one).
    pub fn with_models(
        mut self,
        models: impl IntoIterator<Item = ModelKind>,
    ) -> Result<MomentsConfig, MomentsError> {
        let mut unique: Vec<ModelKind> = Vec::new();
        for m in models {
            if !unique.contains(&m) {
                unique.push(m);
            }
        }
        if unique.is_empty() {
            return Err(MomentsError::InvalidConfig(
                "at least one model is needed".to_string(),
            ));
        }
        self.models = unique;
        Ok(self)
    }

    /// The step size η.
    pub fn eta(&self) -> f64 {
        self.eta
    }

    /// The number of SGD steps.
    pub fn steps(&self) -> usize {
        self.steps
    }

    /// The reporting stride.
    pub fn every(&self) -> usize {
        self.every
    }

    /// The models compared.
    pub fn models(&self) -> &[ModelKind] {
        &self.models
    }

    /// The reported steps: `0, every, 2·every, …` and the last step.
    pub fn reported_steps(&self) -> Vec<usize> {
        let mut steps: Vec<usize> = (0..=self.steps).step_by(self.every).collect();
        if steps.last() != Some(&self.steps) {
            steps.push(self.steps);
        }
        steps
    }
}

// ---------------------------------------------------------------------------------------
// Gaussians and distances

/// A Gaussian distribution `N(mean, cov)`, the law of SGD's iterate and of each model's
/// state on a quadratic.
#[derive(Debug, Clone, PartialEq)]
pub struct Gaussian {
    /// The mean.
    pub mean: DVector<f64>,
    /// The covariance, symmetric positive semidefinite up to round-off.
    pub cov: DMatrix<f64>,
}

impl Gaussian {
    /// The point mass at `x` (covariance 0).
    pub fn point(x: DVector<f64>) -> Gaussian {
        let d = x.len();
        Gaussian {
            mean: x,
            cov: DMatrix::zeros(d, d),
        }
    }

    /// Whether every entry is finite.
    pub fn is_finite(&self) -> bool {
        self.mean
            .iter()
            .chain(self.cov.iter())
            .all(|x| x.is_finite())
    }
}

/// `‖v‖₂` (or Frobenius for a matrix), scaled so that squaring cannot overflow.
fn norm(entries: &[f64]) -> f64 {
    let scale = entries.iter().fold(0.0f64, |m, x| m.max(x.abs()));
    if scale == 0.0 || !scale.is_finite() {
        return scale;
    }
    scale
        * entries
            .iter()
            .map(|x| (x / scale).powi(2))
            .sum::<f64>()
            .sqrt()
}

/// The mean error `‖m_a − m_b‖₂`.
///
/// ```
/// use hasme::moments::{Gaussian, mean_error};
/// use nalgebra::dvector;
/// let a = Gaussian::point(dvector![0.0, 0.0]);
/// let b = Gaussian::point(dvector![3.0, 4.0]);
/// assert_eq!(mean_error(&a, &b), 5.0);
/// ```
pub fn mean_error(a: &Gaussian, b: &Gaussian) -> f64 {
    norm((&a.mean - &b.mean).as_slice())
}

/// The relative covariance error `‖C − C_ref‖_F / ‖C_ref‖_F`. When `C_ref = 0` (SGD at
/// step 0, or no noise) the ratio is undefined: the result is then the absolute error
/// `‖C‖_F`, which is 0 when both are zero.
///
/// ```
/// use hasme::moments::{Gaussian, cov_rel_error};
/// use nalgebra::{DMatrix, dvector};
/// let zero = Gaussian::point(dvector![0.0]);
/// assert_eq!(cov_rel_error(&zero, &zero), 0.0);
/// let a = Gaussian { mean: dvector![0.0], cov: DMatrix::from_element(1, 1, 1.1) };
/// let b = Gaussian { mean: dvector![0.0], cov: DMatrix::from_element(1, 1, 1.0) };
/// assert!((cov_rel_error(&a, &b) - 0.1).abs() < 1e-15);
/// ```
pub fn cov_rel_error(model: &Gaussian, reference: &Gaussian) -> f64 {
    let diff = norm((&model.cov - &reference.cov).as_slice());
    let size = norm(reference.cov.as_slice());
    if size == 0.0 { diff } else { diff / size }
}

/// The 2-Wasserstein distance between two Gaussians,
/// `W2² = ‖m_a − m_b‖² + tr(C_a + C_b − 2 (C_a^{1/2} C_b C_a^{1/2})^{1/2})`,
/// the second term being the squared Bures distance of the covariances.
///
/// Computed without the cancellation of the trace formula: with `S = C^{1/2}` (the
/// symmetric PSD square roots, by eigendecomposition, round-off negative eigenvalues
/// clamped to 0), the Bures distance is `min_Q ‖S_a − S_b Q‖_F` over orthogonal `Q`,
/// attained at the polar factor `Q = V Wᵀ` of `S_a S_b = W Σ Vᵀ` (an SVD, by one-sided
/// Jacobi: nalgebra's SVD is unreliable on the rank-deficient products met here). When
/// `C_a ≈ C_b` are well conditioned this keeps full relative precision, where the trace
/// formula would lose half the digits. Near a singular covariance half the digits are
/// lost anyway: an eigenvalue that is 0 in exact arithmetic comes out of the
/// eigensolver as ±ε‖C‖, and its square root is √ε·‖C‖^{1/2} ≈ 1e−8·‖C‖^{1/2}, the
/// floor of the distance between two such covariances. Report the moment errors
/// ([`mean_error`], [`cov_rel_error`]) alongside.
///
/// The inputs are scaled by their largest entry (W2 is homogeneous) so that no square
/// overflows. Errors: mismatched dimensions, non-finite entries, a solver that does not
/// converge.
///
/// ```
/// use hasme::moments::{Gaussian, wasserstein2};
/// use nalgebra::{DMatrix, dvector};
///
/// // 1-D: W2² = (m_a − m_b)² + (s_a − s_b)².
/// let a = Gaussian { mean: dvector![1.0], cov: DMatrix::from_element(1, 1, 4.0) };
/// let b = Gaussian { mean: dvector![4.0], cov: DMatrix::from_element(1, 1, 9.0) };
/// assert!((wasserstein2(&a, &b)? - 10f64.sqrt()).abs() < 1e-14);
/// assert_eq!(wasserstein2(&a, &a)?, 0.0);
/// # Ok::<(), hasme::moments::MomentsError>(())
/// ```
pub fn wasserstein2(a: &Gaussian, b: &Gaussian) -> Result<f64, MomentsError> {
    let d = a.mean.len();
    if b.mean.len() != d || a.cov.shape() != (d, d) || b.cov.shape() != (d, d) {
        return Err(MomentsError::InvalidInput(format!(
            "W2 needs two Gaussians of the same dimension, got means of length {} and {} and \
             covariances {:?} and {:?}",
            d,
            b.mean.len(),
            a.cov.shape(),
            b.cov.shape()
        )));
    }
    if !(a.is_finite() && b.is_finite()) {
        return Err(MomentsError::InvalidInput(
            "W2 needs Gaussians with finite means and covariances".to_string(),
        ));
    }
    let amax = |m: &[f64]| m.iter().fold(0.0f64, |acc, x| acc.max(x.abs()));
    let scale = amax(a.mean.as_slice())
        .max(amax(b.mean.as_slice()))
        .max(amax(a.cov.as_slice()).sqrt())
        .max(amax(b.cov.as_slice()).sqrt());
    if scale == 0.0 {
        return Ok(0.0);
    }
    let mean_part = norm((&a.mean / scale - &b.mean / scale).as_slice());
    let sa = psd_sqrt(&(&a.cov / scale / scale))?;
    let sb = psd_sqrt(&(&b.cov / scale / scale))?;
    let bures = if sa == sb {
        // Identical square roots: the polar factor is the identity, distance exactly 0.
        0.0
    } else {
        let q = polar_factor(&(&sa * &sb))?;
        norm((&sa - &sb * q).as_slice())
    };
    let w2 = scale * mean_part.hypot(bures);
    if w2.is_finite() {
        Ok(w2)
    } else {
        Err(MomentsError::Overflow {
            quantity: "the W2 distance",
            time: None,
        })
    }
}

/// Jacobi sweeps before [`polar_factor`] gives up. Why 60: one-sided Jacobi converges
/// quadratically once the columns are nearly orthogonal; 6–10 sweeps are typical for
/// the small matrices here, LAPACK's `dgesvj` allows 30.
const JACOBI_SWEEPS: usize = 60;

/// An orthogonal `Q` maximising `tr(XQ)` (then `XQ` is symmetric PSD): `Q = V Wᵀ` for an
/// SVD `X = W Σ Vᵀ`, computed by one-sided (Hestenes) Jacobi: rotations of column pairs
/// of `X V` until all columns are orthogonal, then `W_i = (XV)_i / σ_i`.
///
/// Why not nalgebra's SVD: with singular vectors requested it can return a
/// decomposition that does not reproduce `X` (dimforge/nalgebra#1172, seen here on a
/// rank-one 3×3 product of square roots), and rank-deficient `X` is the common case
/// (singular covariances). Columns with `σ_i ≤ d·ε·σ_max` are numerically zero: their
/// `W_i` are an arbitrary orthonormal completion, which leaves `tr(XQ) = Σσ` unchanged.
fn polar_factor(x: &DMatrix<f64>) -> Result<DMatrix<f64>, MomentsError> {
    let d = x.ncols();
    let mut a = x.clone();
    let mut v = DMatrix::<f64>::identity(d, d);
    // Columns are orthogonal enough when |cos| ≤ d·ε (LAPACK's dgesvj uses √m·ε), and a
    // column below d·ε·‖X‖_F is numerically zero: rotating round-off against round-off
    // need never converge, and such columns get completed below anyway.
    let tolerance = d as f64 * f64::EPSILON;
    let negligible = (tolerance * x.norm()).powi(2);
    let mut converged = false;
    for _ in 0..JACOBI_SWEEPS {
        let mut rotated = false;
        for p in 0..d {
            for q in p + 1..d {
                let alpha = a.column(p).norm_squared();
                let beta = a.column(q).norm_squared();
                if alpha <= negligible || beta <= negligible {
                    continue;
                }
                let gamma = a.column(p).dot(&a.column(q));
                if gamma.abs() <= tolerance * (alpha * beta).sqrt() {
                    continue;
                }
                rotated = true;
                let zeta = (beta - alpha) / (2.0 * gamma);
                let t = zeta.signum() / (zeta.abs() + zeta.hypot(1.0));
                let c = 1.0 / t.hypot(1.0);
                let s = c * t;
                for m in [&mut a, &mut v] {
                    for i in 0..d {
                        let (mp, mq) = (m[(i, p)], m[(i, q)]);
                        m[(i, p)] = c * mp - s * mq;
                        m[(i, q)] = s * mp + c * mq;
                    }
                }
            }
        }
        if !rotated {
            converged = true;
            break;
        }
    }
    if !converged {
        return Err(MomentsError::Numerical {
            quantity: "the polar factor in the W2 distance",
            reason: "one-sided Jacobi did not converge within its sweep budget",
        });
    }
    let sigma: Vec<f64> = (0..d).map(|j| a.column(j).norm()).collect();
    let sigma_max = sigma.iter().fold(0.0f64, |m, &s| m.max(s));
    let zero = d as f64 * f64::EPSILON * sigma_max;
    // Largest σ first, so that Gram–Schmidt keeps the best-determined columns as they
    // are and fills the numerically zero ones with an orthonormal completion.
    let mut order: Vec<usize> = (0..d).collect();
    order.sort_by(|&i, &j| sigma[j].total_cmp(&sigma[i]));
    let mut w = DMatrix::<f64>::zeros(d, d);
    let mut basis: Vec<DVector<f64>> = Vec::with_capacity(d);
    // Projects out the basis found so far; two passes of modified Gram–Schmidt ("twice
    // is enough" for orthogonality to working precision).
    let orthogonalise = |mut col: DVector<f64>, basis: &[DVector<f64>]| {
        for _ in 0..2 {
            for b in basis {
                let proj = b.dot(&col);
                col -= b * proj;
            }
        }
        col
    };
    for &j in &order {
        let mut col = if sigma[j] > zero {
            orthogonalise(a.column(j) / sigma[j], &basis)
        } else {
            DVector::zeros(d)
        };
        // A well-determined column keeps almost all of its unit norm; one that does not
        // (numerically zero, or dependent through round-off) is replaced by the unit
        // vector e_k with the largest residual: with r basis vectors the squared
        // residuals of e_1…e_d sum to d − r ≥ 1, so the best one is at least 1/√d.
        if col.norm() <= 0.5 {
            col = (0..d)
                .map(|k| {
                    orthogonalise(
                        DVector::from_fn(d, |i, _| f64::from(u8::from(i == k))),
                        &basis,
                    )
                })
                .max_by(|x, y| x.norm().total_cmp(&y.norm()))
                .ok_or(MomentsError::Numerical {
                    quantity: "the polar factor in the W2 distance",
                    reason: "could not complete an orthonormal basis",
                })?;
            col = orthogonalise(col, &basis);
        }
        let n = col.norm();
        col /= n;
        w.set_column(j, &col);
        basis.push(col);
    }
    Ok(v * w.transpose())
}

/// The symmetric eigendecomposition, with a convergence budget.
fn symmetric_eigen(
    m: &DMatrix<f64>,
    quantity: &'static str,
) -> Result<SymmetricEigen<f64, nalgebra::Dyn>, MomentsError> {
    let budget = SWEEPS_PER_DIM * m.nrows().max(1);
    SymmetricEigen::try_new(m.clone(), f64::EPSILON, budget).ok_or(MomentsError::Numerical {
        quantity,
        reason: "the symmetric eigensolver did not converge within its iteration budget",
    })
}

/// `V diag(√max(μ, 0)) Vᵀ` of a symmetric matrix, made exactly symmetric.
fn psd_sqrt(c: &DMatrix<f64>) -> Result<DMatrix<f64>, MomentsError> {
    let e = symmetric_eigen(c, "the square root of a covariance in the W2 distance")?;
    let mut scaled = e.eigenvectors.clone();
    for (k, mut col) in scaled.column_iter_mut().enumerate() {
        col *= e.eigenvalues[k].max(0.0).sqrt();
    }
    Ok(symmetric_part(&(scaled * e.eigenvectors.transpose())))
}

/// `(A + Aᵀ)/2`.
fn symmetric_part(a: &DMatrix<f64>) -> DMatrix<f64> {
    DMatrix::from_fn(a.nrows(), a.ncols(), |i, j| {
        0.5 * a[(i, j)] + 0.5 * a[(j, i)]
    })
}

/// Largest `|A_ij − A_ji|` relative to `max |A_kl|` (0 for the zero matrix).
fn asymmetry(a: &DMatrix<f64>) -> f64 {
    let scale = a.amax();
    if scale == 0.0 {
        return 0.0;
    }
    let mut worst = 0.0f64;
    for j in 0..a.ncols() {
        for i in 0..j {
            worst = worst.max((a[(i, j)] - a[(j, i)]).abs());
        }
    }
    worst / scale
}

// ---------------------------------------------------------------------------------------
// The quadratic problem and SGD's moments

/// A quadratic objective `f(x) = ½xᵀHx + cᵀx` with constant noise covariance Σ and a
/// start point: everything the exact moments need.
///
/// ```
/// use hasme::moments::Quadratic;
/// use nalgebra::{DMatrix, dvector};
///
/// // f(x) = x²/2 − x from x₀ = 0 with Σ = 1/4: SGD's mean after one step is η.
/// let q = Quadratic::new(
///     DMatrix::from_element(1, 1, 1.0),
///     dvector![-1.0],
///     DMatrix::from_element(1, 1, 0.25),
///     dvector![0.0],
/// )?;
/// let mut sgd = q.sgd(0.1)?;
/// sgd.advance();
/// assert!((sgd.gaussian().mean[0] - 0.1).abs() < 1e-15);
/// assert!((sgd.gaussian().cov[(0, 0)] - 0.01 * 0.25).abs() < 1e-15);
/// # Ok::<(), hasme::moments::MomentsError>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Quadratic {
    hessian: DMatrix<f64>,
    linear: DVector<f64>,
    noise_cov: DMatrix<f64>,
    start: DVector<f64>,
    name: String,
    variables: Vec<String>,
}

impl Quadratic {
    /// `H` (symmetric), `c`, Σ (symmetric PSD) and `x₀`, all finite and of matching
    /// dimension. Asymmetry at round-off level ([`SYMMETRY_TOLERANCE`]) is removed;
    /// Σ's eigenvalues may be negative by round-off only ([`PSD_TOLERANCE`]).
    pub fn new(
        hessian: DMatrix<f64>,
        linear: DVector<f64>,
        noise_cov: DMatrix<f64>,
        start: DVector<f64>,
    ) -> Result<Quadratic, MomentsError> {
        let d = start.len();
        // `Local` runs the models' own checks (dimensions, finiteness, symmetry); its
        // "gradient" is c = ∇f(0).
        let local = Local::new(start, linear, hessian, noise_cov)
            .map_err(|e| MomentsError::InvalidInput(format!("invalid quadratic: {e}")))?;
        let e = symmetric_eigen(&local.noise_cov, "the noise covariance")?;
        let (min, scale) = (e.eigenvalues.min(), e.eigenvalues.amax());
        if min < -PSD_TOLERANCE * scale {
            return Err(MomentsError::InvalidInput(format!(
                "the noise covariance Σ is not positive semidefinite: smallest eigenvalue {min} \
                 (largest |eigenvalue| {scale})"
            )));
        }
        Ok(Quadratic {
            hessian: local.hessian,
            linear: local.gradient,
            noise_cov: local.noise_cov,
            start: local.point,
            name: "(quadratic)".to_string(),
            variables: (1..=d).map(|i| format!("x{i}")).collect(),
        })
    }

    /// The quadratic of a checked problem: `H` and Σ at the start point, `c = ∇f(0)`,
    /// `x₀` the start point. Errors unless the objective is quadratic and the noise
    /// constant (the structural check of [`Problem::structure`]).
    pub fn from_problem(problem: &Problem) -> Result<Quadratic, MomentsError> {
        let structure = problem.structure();
        let file = problem.source().name().to_string();
        if !(structure.quadratic && structure.constant_noise) {
            let objective = match structure.objective_degree {
                Some(n) if n <= 2 => "the objective is quadratic".to_string(),
                Some(n) => format!("the objective is a polynomial of degree {n}"),
                None => "the objective is not a polynomial".to_string(),
            };
            let noise = if structure.constant_noise {
                "the noise is constant"
            } else {
                "the noise covariance depends on the variables"
            };
            return Err(MomentsError::NotQuadratic {
                file,
                reason: format!("{objective} and {noise}"),
            });
        }
        let x0 = problem.start();
        // Only f and Σ: an observable that cannot be evaluated at the start is no concern
        // of the moments.
        let at_start = problem.objective_derivatives(&x0)?;
        let noise_cov = problem.noise_cov(&x0)?;
        let at_zero = problem.objective_derivatives(&vec![0.0; x0.len()])?;
        let mut q = Quadratic::new(
            at_start.hessian,
            at_zero.gradient,
            noise_cov,
            DVector::from_vec(x0),
        )?;
        q.name = file;
        q.variables = problem.variables().to_vec();
        Ok(q)
    }

    /// The dimension d.
    pub fn dim(&self) -> usize {
        self.start.len()
    }

    /// `H`.
    pub fn hessian(&self) -> &DMatrix<f64> {
        &self.hessian
    }

    /// `c = ∇f(0)`.
    pub fn linear(&self) -> &DVector<f64> {
        &self.linear
    }

    /// Σ.
    pub fn noise_cov(&self) -> &DMatrix<f64> {
        &self.noise_cov
    }

    /// `x₀`.
    pub fn start(&self) -> &DVector<f64> {
        &self.start
    }

    /// SGD's moment chain from `x₀` (step 0: the point mass at `x₀`).
    pub fn sgd(&self, eta: f64) -> Result<SgdMoments, MomentsError> {
        if !(eta.is_finite() && eta > 0.0) {
            return Err(MomentsError::InvalidConfig(format!(
                "η must be a finite number > 0, got {eta}"
            )));
        }
        let d = self.dim();
        Ok(SgdMoments {
            p: DMatrix::identity(d, d) - &self.hessian * eta,
            shift: &self.linear * -eta,
            noise: &self.noise_cov * (eta * eta),
            current: Gaussian::point(self.start.clone()),
            step: 0,
            mean_buffer: DVector::zeros(d),
            cov_buffer: DMatrix::zeros(d, d),
        })
    }

    /// The model `kind` at step size `eta` as a linear SDE, built from the model's own
    /// drift and diffusion (see the module documentation). Errors: the model's domain
    /// errors (e.g. `ηλ_max ≥ 1` for `hasme`, an indefinite truncated-series Γ), as
    /// [`MomentsError::Model`].
    ///
    /// ```
    /// use hasme::models::ModelKind;
    /// use hasme::moments::Quadratic;
    /// use nalgebra::{DMatrix, dvector};
    ///
    /// let q = Quadratic::new(
    ///     DMatrix::from_diagonal(&dvector![1.0, -2.0]),
    ///     dvector![0.5, 0.0],
    ///     DMatrix::identity(2, 2),
    ///     dvector![0.0, 0.1],
    /// )?;
    /// // hasme's drift matrix has eigenvalues log(1 − ηλ)/η.
    /// let m = q.model_sde(ModelKind::Hasme, 0.1)?;
    /// assert!((m.sde.drift_matrix()[(1, 1)] - 1.2f64.ln() / 0.1).abs() < 1e-13);
    /// // sme1's is −H.
    /// let m = q.model_sde(ModelKind::Sme1, 0.1)?;
    /// assert_eq!(m.sde.drift_matrix()[(0, 0)], -1.0);
    /// // Outside ηλ_max < 1, hasme fails and names λ_max.
    /// let err = q.model_sde(ModelKind::Hasme, 1.5).unwrap_err();
    /// assert!(err.to_string().contains("λ_max = 1"));
    /// # Ok::<(), hasme::moments::MomentsError>(())
    /// ```
    pub fn model_sde(&self, kind: ModelKind, eta: f64) -> Result<ModelSde, MomentsError> {
        let d = self.dim();
        // The drift does not read Σ: evaluate it with Σ = 0, which every model accepts.
        let no_noise = DMatrix::zeros(d, d);
        let drift = |gradient: DVector<f64>| -> Result<DVector<f64>, ModelError> {
            let local = Local::new(
                self.start.clone(),
                gradient,
                self.hessian.clone(),
                no_noise.clone(),
            )?;
            Ok(kind.coefficients(&local, eta)?.drift)
        };
        let offset = drift(self.linear.clone())?;
        let mut matrix = DMatrix::zeros(d, d);
        for i in 0..d {
            matrix.set_column(i, &drift(self.hessian.column(i).into_owned())?);
        }
        let local = Local::new(
            self.start.clone(),
            self.linear.clone(),
            self.hessian.clone(),
            self.noise_cov.clone(),
        )?;
        let mut warnings = Vec::new();
        let diffusion = if kind == ModelKind::HasmeExact {
            // Possibly indefinite (docs/models.md §2): the moments are linear in Γ and
            // stay well defined, and they are still SGD's; only a simulator needs a real σ.
            let gamma = hasme_exact_gamma(&local, eta)?;
            let e = symmetric_eigen(&gamma, "the hasme-exact diffusion")?;
            let (min, scale) = (e.eigenvalues.min(), e.eigenvalues.amax());
            if min < -PSD_TOLERANCE * scale {
                warnings.push(format!(
                    "the hasme-exact diffusion Γ is indefinite (smallest eigenvalue {min}, \
                     largest |eigenvalue| {scale}): no real diffusion has these moments; they \
                     are the exact moments of the formal linear SDE, which still match SGD"
                ));
            }
            gamma
        } else {
            let c = kind.coefficients(&local, eta)?;
            warnings.extend(c.warnings);
            c.diffusion
        };
        Ok(ModelSde {
            kind,
            sde: LinearSde::new(matrix, offset, diffusion)?,
            warnings,
        })
    }
}

/// SGD's exact moment chain `m_{k+1} = P m_k − ηc`, `C_{k+1} = P C_k Pᵀ + η²Σ` with
/// `P = I − ηH` (symmetric, so `Pᵀ = P`). Stepping allocates nothing.
#[derive(Debug, Clone)]
pub struct SgdMoments {
    p: DMatrix<f64>,
    shift: DVector<f64>,
    noise: DMatrix<f64>,
    current: Gaussian,
    step: usize,
    mean_buffer: DVector<f64>,
    cov_buffer: DMatrix<f64>,
}

impl SgdMoments {
    /// The current step k.
    pub fn step(&self) -> usize {
        self.step
    }

    /// The law of `x_k`.
    pub fn gaussian(&self) -> &Gaussian {
        &self.current
    }

    /// One SGD step of the moments. The covariance is re-symmetrised each step so that
    /// round-off asymmetry cannot accumulate. Overflow (possible along negative
    /// curvature) shows as non-finite entries: check [`Gaussian::is_finite`].
    pub fn advance(&mut self) {
        let Gaussian { mean, cov } = &mut self.current;
        self.mean_buffer.gemv(1.0, &self.p, mean, 0.0);
        self.mean_buffer += &self.shift;
        std::mem::swap(mean, &mut self.mean_buffer);
        self.cov_buffer.gemm(1.0, &self.p, cov, 0.0);
        cov.gemm(1.0, &self.cov_buffer, &self.p, 0.0);
        *cov += &self.noise;
        let d = cov.nrows();
        for j in 0..d {
            for i in 0..j {
                let s = 0.5 * cov[(i, j)] + 0.5 * cov[(j, i)];
                cov[(i, j)] = s;
                cov[(j, i)] = s;
            }
        }
        self.step += 1;
    }
}

// ---------------------------------------------------------------------------------------
// Linear SDEs

/// A model of SGD as a linear SDE, with what was noticed while building it.
#[derive(Debug, Clone)]
pub struct ModelSde {
    /// The model.
    pub kind: ModelKind,
    /// `dX = (AX + a) dt + σ dW`, `Γ = σσᵀ`.
    pub sde: LinearSde,
    /// E.g. an indefinite `hasme-exact` Γ.
    pub warnings: Vec<String>,
}

/// The linear SDE `dX = (AX + a) dt + σ dW` with `Γ = σσᵀ` (Γ symmetric, not
/// necessarily PSD), and its exact Gaussian moments from a deterministic start.
///
/// ```
/// use hasme::moments::LinearSde;
/// use nalgebra::{DMatrix, dvector};
///
/// // Ornstein–Uhlenbeck: dX = −2X dt + dW, from X₀ = 1.
/// let ou = LinearSde::new(
///     DMatrix::from_element(1, 1, -2.0),
///     dvector![0.0],
///     DMatrix::from_element(1, 1, 1.0),
/// )?;
/// let g = ou.moments(&dvector![1.0], 0.5)?;
/// assert!((g.mean[0] - (-1.0f64).exp()).abs() < 1e-15);
/// assert!((g.cov[(0, 0)] - (1.0 - (-2.0f64).exp()) / 4.0).abs() < 1e-15);
/// # Ok::<(), hasme::moments::MomentsError>(())
/// ```
#[derive(Debug, Clone)]
pub struct LinearSde {
    drift_matrix: DMatrix<f64>,
    drift_offset: DVector<f64>,
    diffusion: DMatrix<f64>,
    spectral: Option<Spectral>,
}

/// `A = V diag(α) Vᵀ`, with `a` and Γ in that basis.
#[derive(Debug, Clone)]
struct Spectral {
    v: DMatrix<f64>,
    alpha: DVector<f64>,
    offset: DVector<f64>,
    diffusion: DMatrix<f64>,
}

/// `∫₀ᵗ e^{αs} ds = t φ₁(αt)`, `φ₁(z) = expm1(z)/z`: no cancellation for small `|αt|`,
/// exactly `t` at `α = 0`, and `−1/α` (no overflow) for very negative `αt`.
fn integral_of_exp(alpha: f64, t: f64) -> f64 {
    let z = alpha * t;
    if z == 0.0 { t } else { z.exp_m1() / z * t }
}

/// `a·b`, but 0 whenever `b` is 0 (so that an overflowed `a` times an exact zero is 0,
/// not NaN).
fn times(a: f64, b: f64) -> f64 {
    if b == 0.0 { 0.0 } else { a * b }
}

impl LinearSde {
    /// Drift matrix `A` (d×d), drift offset `a` (d), diffusion Γ (d×d, symmetric up to
    /// round-off; it may be indefinite). When `A` is symmetric up to round-off
    /// ([`SYMMETRY_TOLERANCE`]), as for every model of [`crate::models`], moments use its
    /// eigenbasis; otherwise Van Loan's block exponential.
    pub fn new(
        drift_matrix: DMatrix<f64>,
        drift_offset: DVector<f64>,
        diffusion: DMatrix<f64>,
    ) -> Result<LinearSde, MomentsError> {
        let d = drift_offset.len();
        if d == 0 || drift_matrix.shape() != (d, d) || diffusion.shape() != (d, d) {
            return Err(MomentsError::InvalidInput(format!(
                "a linear SDE needs A d×d, a of length d ≥ 1 and Γ d×d; got A {:?}, a of \
                 length {d}, Γ {:?}",
                drift_matrix.shape(),
                diffusion.shape()
            )));
        }
        let all = drift_matrix
            .iter()
            .chain(drift_offset.iter())
            .chain(diffusion.iter());
        if !all.into_iter().all(|x| x.is_finite()) {
            return Err(MomentsError::InvalidInput(
                "a linear SDE's A, a and Γ must be finite".to_string(),
            ));
        }
        if asymmetry(&diffusion) > SYMMETRY_TOLERANCE {
            return Err(MomentsError::InvalidInput(format!(
                "the diffusion Γ of a linear SDE must be symmetric; its relative asymmetry is {}",
                asymmetry(&diffusion)
            )));
        }
        let diffusion = symmetric_part(&diffusion);
        let spectral = if asymmetry(&drift_matrix) <= SYMMETRY_TOLERANCE {
            let e = symmetric_eigen(&symmetric_part(&drift_matrix), "the drift matrix A")?;
            let v = e.eigenvectors;
            Some(Spectral {
                offset: v.tr_mul(&drift_offset),
                diffusion: v.tr_mul(&(&diffusion * &v)),
                alpha: e.eigenvalues,
                v,
            })
        } else {
            None
        };
        Ok(LinearSde {
            drift_matrix,
            drift_offset,
            diffusion,
            spectral,
        })
    }

    /// `A`.
    pub fn drift_matrix(&self) -> &DMatrix<f64> {
        &self.drift_matrix
    }

    /// `a`.
    pub fn drift_offset(&self) -> &DVector<f64> {
        &self.drift_offset
    }

    /// Γ (exactly symmetric).
    pub fn diffusion(&self) -> &DMatrix<f64> {
        &self.diffusion
    }

    /// The law of `X_t` from `X_0 = start`: exact, through `A`'s eigenbasis when `A` is
    /// symmetric (see the module documentation), else [`LinearSde::moments_van_loan`].
    /// At `t = 0` it is exactly the point mass at `start`.
    pub fn moments(&self, start: &DVector<f64>, t: f64) -> Result<Gaussian, MomentsError> {
        self.check_query(start, t)?;
        if t == 0.0 {
            return Ok(Gaussian::point(start.clone()));
        }
        let Some(s) = &self.spectral else {
            return self.moments_van_loan(start, t);
        };
        let d = start.len();
        let x0 = s.v.tr_mul(start);
        let mean = DVector::from_fn(d, |i, _| {
            times((s.alpha[i] * t).exp(), x0[i])
                + times(integral_of_exp(s.alpha[i], t), s.offset[i])
        });
        let cov = DMatrix::from_fn(d, d, |i, j| {
            times(
                integral_of_exp(s.alpha[i] + s.alpha[j], t),
                s.diffusion[(i, j)],
            )
        });
        finish(&s.v * mean, &s.v * cov * s.v.transpose(), t)
    }

    /// The same law through Van Loan's block exponentials (C. Van Loan, "Computing
    /// integrals involving the matrix exponential", 1978):
    /// `exp([[A, a], [0, 0]] t)` holds `e^{At}` and `∫₀ᵗ e^{As} ds a`, and
    /// `exp([[−A, Γ], [0, Aᵀ]] t) = [[·, G], [0, F]]` gives `C(t) = Fᵀ G`. Exact for any
    /// `A`, but `e^{−At}` appears in the block: for large `‖A‖t` the product cancels
    /// catastrophically, so the eigenbasis is preferred whenever `A` is symmetric; here
    /// `‖A‖₁t > 700` (where `e^{‖A‖t}` would overflow) is refused.
    pub fn moments_van_loan(&self, start: &DVector<f64>, t: f64) -> Result<Gaussian, MomentsError> {
        self.check_query(start, t)?;
        let d = start.len();
        let norm1 = (0..d)
            .map(|j| self.drift_matrix.column(j).abs().sum())
            .fold(0.0, f64::max);
        if norm1 * t > 700.0 {
            return Err(MomentsError::Numerical {
                quantity: "Van Loan's block exponential",
                reason: "‖A‖₁·t > 700: e^{‖A‖t} would overflow f64",
            });
        }
        let mut block = DMatrix::zeros(d + 1, d + 1);
        block
            .view_mut((0, 0), (d, d))
            .copy_from(&(&self.drift_matrix * t));
        block
            .view_mut((0, d), (d, 1))
            .copy_from(&(&self.drift_offset * t));
        let e = block.exp();
        let mean = e.view((0, 0), (d, d)) * start + e.view((0, d), (d, 1));
        let mut block = DMatrix::zeros(2 * d, 2 * d);
        block
            .view_mut((0, 0), (d, d))
            .copy_from(&(&self.drift_matrix * -t));
        block
            .view_mut((0, d), (d, d))
            .copy_from(&(&self.diffusion * t));
        block
            .view_mut((d, d), (d, d))
            .copy_from(&(self.drift_matrix.transpose() * t));
        let e = block.exp();
        let cov = e.view((d, d), (d, d)).transpose() * e.view((0, d), (d, d));
        finish(mean, cov, t)
    }

    fn check_query(&self, start: &DVector<f64>, t: f64) -> Result<(), MomentsError> {
        if start.len() != self.drift_offset.len() || !start.iter().all(|x| x.is_finite()) {
            return Err(MomentsError::InvalidInput(format!(
                "the start point must be finite and of dimension {}",
                self.drift_offset.len()
            )));
        }
        if !(t.is_finite() && t >= 0.0) {
            return Err(MomentsError::InvalidInput(format!(
                "the time must be finite and ≥ 0, got {t}"
            )));
        }
        Ok(())
    }
}

/// Symmetrises the covariance and turns non-finite results into errors.
fn finish(mean: DVector<f64>, cov: DMatrix<f64>, time: f64) -> Result<Gaussian, MomentsError> {
    if !mean.iter().all(|x| x.is_finite()) {
        return Err(MomentsError::Overflow {
            quantity: "the model's mean",
            time: Some(time),
        });
    }
    if !cov.iter().all(|x| x.is_finite()) {
        return Err(MomentsError::Overflow {
            quantity: "the model's covariance",
            time: Some(time),
        });
    }
    Ok(Gaussian {
        mean,
        cov: symmetric_part(&cov),
    })
}

// ---------------------------------------------------------------------------------------
// The comparison

/// One model compared with SGD at every reported step.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelMoments {
    /// `‖m_model − m_sgd‖₂` per reported step.
    pub mean_error: Vec<f64>,
    /// `‖C_model − C_sgd‖_F / ‖C_sgd‖_F` per reported step (the absolute error where
    /// `C_sgd = 0`, see [`cov_rel_error`]).
    pub cov_rel_error: Vec<f64>,
    /// The W2 distance to SGD's Gaussian per reported step ([`wasserstein2`]).
    pub w2: Vec<f64>,
    /// The model's law at the last step.
    pub last: Gaussian,
    /// What was noticed while building the model (e.g. an indefinite Γ).
    pub warnings: Vec<String>,
}

/// SGD against each model, step by step: the result of [`compare`].
///
/// Its JSON form (`serde`) is the contract of `hasme moments --json`: `file`,
/// `init_seed` (only when the problem draws its start), `start_file` (only with a start
/// file), `variables`, `eta`, `horizon` (steps·η), `every`, `start`, `hessian_eigenvalues`,
/// `eta_lambda_max`, `noise_commutes_with_hessian`, `sgd_noise` (`gaussian` or
/// `minibatch`), `steps` (the reported k, from 0 to
/// the last), `times` (kη), `sgd.mean` and `sgd.cov` (last step, row-major), and for each
/// model `models.NAME` either `mean_error`, `cov_rel_error`, `w2` (aligned with
/// `steps`), `mean`, `cov` (last step), `weak_order`, `warnings`, or `error`.
#[derive(Debug)]
pub struct MomentsReport {
    /// The file the problem came from.
    pub file: String,
    /// The init seed of the problem's random start values, when it draws some
    /// ([`Problem::init_seed_if_random`](crate::Problem::init_seed_if_random)).
    pub init_seed: Option<u64>,
    /// The start file the start point was read from (`--start`), when given.
    pub start_file: Option<String>,
    /// Variable names.
    pub variables: Vec<String>,
    /// The step size η.
    pub eta: f64,
    /// The reporting stride.
    pub every: usize,
    /// `x₀`.
    pub start: DVector<f64>,
    /// `H`'s eigenvalues, ascending.
    pub hessian_eigenvalues: Vec<f64>,
    /// Whether `HΣ = ΣH` (up to [`COMMUTE_TOLERANCE`]): then `hasme` is exact too.
    pub noise_commutes_with_hessian: bool,
    /// SGD draws real minibatches (a finite sum with constant noise): its noise is
    /// independent of the iterate with covariance Σ, so the mean and covariance above
    /// are still exact, but SGD's law is not Gaussian (the W2 distances compare the
    /// Gaussians with these moments).
    pub minibatch: bool,
    /// The reported steps k, from 0 to the last.
    pub steps: Vec<usize>,
    /// SGD's law at the last step.
    pub sgd: Gaussian,
    /// Each requested model, in the requested order, with its comparison or its failure.
    pub models: Vec<(ModelKind, Result<ModelMoments, MomentsError>)>,
}

impl MomentsReport {
    /// The times `t = kη` of the reported steps.
    pub fn times(&self) -> Vec<f64> {
        self.steps.iter().map(|&k| k as f64 * self.eta).collect()
    }

    /// One model's outcome, if it was requested.
    pub fn model(&self, kind: ModelKind) -> Option<&Result<ModelMoments, MomentsError>> {
        self.models.iter().find(|(k, _)| *k == kind).map(|(_, r)| r)
    }

    /// The models that failed, with their errors.
    pub fn failures(&self) -> Vec<(ModelKind, &MomentsError)> {
        self.models
            .iter()
            .filter_map(|(k, r)| r.as_ref().err().map(|e| (*k, e)))
            .collect()
    }

    /// The comparison as CSV, one row per (reported step, model) ("long" format, one
    /// observation per row, as plotting and data-frame tools expect): the header
    /// `step,t,model,mean_error,cov_rel_error,w2`, numbers in Rust's shortest
    /// round-trip form (`1.5e-7`). Failed models have no rows.
    ///
    /// ```
    /// use hasme::Problem;
    /// use hasme::models::ModelKind;
    /// use hasme::moments::{MomentsConfig, compare};
    /// let p = Problem::from_str("var x = 1\nminimize x^2/2\nnoise sd 0.1")?;
    /// let c = MomentsConfig::new(0.1, 2)?.with_models([ModelKind::Gf])?;
    /// let csv = compare(&p, &c)?.to_csv();
    /// let lines: Vec<&str> = csv.lines().collect();
    /// assert_eq!(lines[0], "step,t,model,mean_error,cov_rel_error,w2");
    /// assert_eq!(lines[1], "0,0,gf,0e0,0e0,0e0");
    /// assert_eq!(lines.len(), 4);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn to_csv(&self) -> String {
        let mut out = String::from("step,t,model,mean_error,cov_rel_error,w2\n");
        let times = self.times();
        for (idx, (&k, t)) in self.steps.iter().zip(&times).enumerate() {
            for (kind, outcome) in &self.models {
                if let Ok(m) = outcome {
                    out.push_str(&format!(
                        "{k},{t},{kind},{:e},{:e},{:e}\n",
                        m.mean_error[idx], m.cov_rel_error[idx], m.w2[idx]
                    ));
                }
            }
        }
        out
    }

    /// W2 to SGD against t on a log axis, one line per successful model with a marker
    /// at every reported step (exact zeros, e.g. at t = 0, are drawn at the axis floor
    /// and the legend says how many). No error bars: the moments are exact.
    pub fn w2_plot(&self) -> LinePlot {
        let times = self.times();
        let title = format!(
            "W2 distance to SGD: {} (η = {}, {} steps)",
            self.file,
            self.eta,
            self.steps.last().copied().unwrap_or(0)
        );
        let mut plot = LinePlot::new(title, "t = kη", "W2 distance to SGD").y_axis(YAxis::Log);
        for (kind, outcome) in &self.models {
            if let Ok(m) = outcome {
                let points = times.iter().copied().zip(m.w2.iter().copied()).collect();
                plot = plot.series(kind.to_string(), points);
            }
        }
        let exact = if self.noise_commutes_with_hessian {
            "hasme and hasme-exact reproduce SGD (HΣ = ΣH): their W2 is round-off."
        } else {
            "hasme-exact reproduces SGD (its W2 is round-off); HΣ ≠ ΣH, so hasme does not."
        };
        plot = plot.note(exact).note(
            "Near a singular covariance W2 keeps only half the digits: its round-off floor is \
             about 1e-8·‖C‖^(1/2).",
        );
        let failed: Vec<String> = self.failures().iter().map(|(k, _)| k.to_string()).collect();
        if !failed.is_empty() {
            plot = plot.note(format!(
                "Not drawn (failed, see the error output): {}.",
                failed.join(", ")
            ));
        }
        plot
    }
}

/// Compares SGD with each configured model on a quadratic problem with constant noise.
///
/// Errors: a problem that is not quadratic with constant noise
/// ([`MomentsError::NotQuadratic`], with a pointer to the Monte Carlo commands), and
/// SGD's own moments overflowing. A model that cannot be built or whose moments
/// overflow is reported as failed in [`MomentsReport::models`] while the others are
/// still compared.
///
/// ```
/// use hasme::{ModelKind, MomentsConfig, Problem, compare_moments};
///
/// let p = Problem::from_str("var x = 1\nminimize 0.5*x^2\nnoise sd 0.1")?;
/// let c = MomentsConfig::new(0.1, 10)?.with_models([ModelKind::HasmeExact])?;
/// let r = compare_moments(&p, &c)?;
/// let exact = r.model(ModelKind::HasmeExact).unwrap().as_ref().unwrap();
/// assert!(exact.w2.iter().all(|&w| w < 1e-12)); // exact on a quadratic
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn compare(problem: &Problem, config: &MomentsConfig) -> Result<MomentsReport, MomentsError> {
    let mut report = compare_quadratic(&Quadratic::from_problem(problem)?, config)?;
    report.minibatch = problem.finite_sum().is_some();
    report.init_seed = problem.init_seed_if_random();
    report.start_file = problem.start_file().map(str::to_string);
    Ok(report)
}

/// [`compare`] for a quadratic given as matrices.
///
/// ```
/// use hasme::models::ModelKind;
/// use hasme::moments::{MomentsConfig, Quadratic, compare_quadratic};
/// use nalgebra::{DMatrix, dvector};
///
/// // Σ does not commute with H: hasme-exact is exact, hasme is not.
/// let q = Quadratic::new(
///     DMatrix::from_diagonal(&dvector![1.0, 3.0]),
///     dvector![0.0, 0.0],
///     DMatrix::from_row_slice(2, 2, &[1.0, 0.5, 0.5, 1.0]),
///     dvector![1.0, 1.0],
/// )?;
/// let config = MomentsConfig::new(0.1, 40)?
///     .with_models([ModelKind::Hasme, ModelKind::HasmeExact])?;
/// let r = compare_quadratic(&q, &config)?;
/// assert!(!r.noise_commutes_with_hessian);
/// let exact = r.model(ModelKind::HasmeExact).unwrap().as_ref().unwrap();
/// let hasme = r.model(ModelKind::Hasme).unwrap().as_ref().unwrap();
/// assert!(exact.cov_rel_error.iter().all(|&e| e < 1e-12));
/// assert!(hasme.cov_rel_error[10] > 1e-4);
/// # Ok::<(), hasme::moments::MomentsError>(())
/// ```
pub fn compare_quadratic(
    q: &Quadratic,
    config: &MomentsConfig,
) -> Result<MomentsReport, MomentsError> {
    let eta = config.eta();
    let steps = config.reported_steps();
    let mut sgd = q.sgd(eta)?;
    let mut snapshots = Vec::with_capacity(steps.len());
    let mut next = 0;
    for k in 0..=config.steps() {
        if k > 0 {
            sgd.advance();
            if !sgd.gaussian().is_finite() {
                return Err(MomentsError::SgdOverflow {
                    step: k,
                    time: k as f64 * eta,
                });
            }
        }
        if steps.get(next) == Some(&k) {
            snapshots.push(sgd.gaussian().clone());
            next += 1;
        }
    }
    let models = config
        .models()
        .iter()
        .map(|&kind| (kind, compare_model(q, kind, eta, &steps, &snapshots)))
        .collect();
    let e = symmetric_eigen(q.hessian(), "the Hessian")?;
    let mut eigenvalues: Vec<f64> = e.eigenvalues.iter().copied().collect();
    eigenvalues.sort_by(f64::total_cmp);
    let (h, s) = (q.hessian(), q.noise_cov());
    let commutator = norm((h * s - s * h).as_slice());
    let noise_commutes_with_hessian =
        commutator <= COMMUTE_TOLERANCE * norm(h.as_slice()) * norm(s.as_slice());
    Ok(MomentsReport {
        file: q.name.clone(),
        init_seed: None,
        start_file: None,
        variables: q.variables.clone(),
        eta,
        every: config.every(),
        start: q.start().clone(),
        hessian_eigenvalues: eigenvalues,
        noise_commutes_with_hessian,
        minibatch: false,
        steps,
        sgd: snapshots
            .pop()
            .unwrap_or_else(|| Gaussian::point(q.start().clone())),
        models,
    })
}

/// One model against SGD's snapshots.
fn compare_model(
    q: &Quadratic,
    kind: ModelKind,
    eta: f64,
    steps: &[usize],
    snapshots: &[Gaussian],
) -> Result<ModelMoments, MomentsError> {
    let model = q.model_sde(kind, eta)?;
    let n = steps.len();
    let (mut mean_errors, mut cov_errors, mut w2s) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let mut last = Gaussian::point(q.start().clone());
    for (&k, reference) in steps.iter().zip(snapshots) {
        let time = k as f64 * eta;
        let law = model.sde.moments(q.start(), time)?;
        let mean_error = mean_error(&law, reference);
        let cov_error = cov_rel_error(&law, reference);
        for (value, quantity) in [
            (mean_error, "the mean error"),
            (cov_error, "the relative covariance error"),
        ] {
            if !value.is_finite() {
                return Err(MomentsError::Overflow {
                    quantity,
                    time: Some(time),
                });
            }
        }
        let w2 = wasserstein2(&law, reference).map_err(|e| match e {
            MomentsError::Overflow { quantity, .. } => MomentsError::Overflow {
                quantity,
                time: Some(time),
            },
            other => other,
        })?;
        mean_errors.push(mean_error);
        cov_errors.push(cov_error);
        w2s.push(w2);
        last = law;
    }
    Ok(ModelMoments {
        mean_error: mean_errors,
        cov_rel_error: cov_errors,
        w2: w2s,
        last,
        warnings: model.warnings,
    })
}

// ---------------------------------------------------------------------------------------
// Output forms

fn rows(m: &DMatrix<f64>) -> Vec<Vec<f64>> {
    m.row_iter().map(|r| r.iter().copied().collect()).collect()
}

fn vector(v: &DVector<f64>) -> Vec<f64> {
    v.iter().copied().collect()
}

/// `{"mean": …, "cov": …}`.
#[derive(Serialize)]
struct LawJson {
    mean: Vec<f64>,
    cov: Vec<Vec<f64>>,
}

impl From<&Gaussian> for LawJson {
    fn from(g: &Gaussian) -> Self {
        LawJson {
            mean: vector(&g.mean),
            cov: rows(&g.cov),
        }
    }
}

#[derive(Serialize)]
struct ModelJson<'a> {
    mean_error: &'a [f64],
    cov_rel_error: &'a [f64],
    w2: &'a [f64],
    mean: Vec<f64>,
    cov: Vec<Vec<f64>>,
    weak_order: u32,
    warnings: &'a [String],
}

#[derive(Serialize)]
struct FailureJson {
    error: String,
}

/// The models as a JSON object in the requested order.
struct ModelsJson<'a>(&'a [(ModelKind, Result<ModelMoments, MomentsError>)]);

impl Serialize for ModelsJson<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (kind, outcome) in self.0 {
            let name = kind.to_string();
            match outcome {
                Ok(m) => map.serialize_entry(
                    &name,
                    &ModelJson {
                        mean_error: &m.mean_error,
                        cov_rel_error: &m.cov_rel_error,
                        w2: &m.w2,
                        mean: vector(&m.last.mean),
                        cov: rows(&m.last.cov),
                        weak_order: kind.weak_order(),
                        warnings: &m.warnings,
                    },
                )?,
                Err(e) => map.serialize_entry(
                    &name,
                    &FailureJson {
                        error: e.to_string(),
                    },
                )?,
            }
        }
        map.end()
    }
}

#[derive(Serialize)]
struct ReportJson<'a> {
    file: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    init_seed: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    start_file: Option<&'a str>,
    variables: &'a [String],
    eta: f64,
    horizon: f64,
    every: usize,
    start: Vec<f64>,
    hessian_eigenvalues: &'a [f64],
    eta_lambda_max: f64,
    noise_commutes_with_hessian: bool,
    sgd_noise: &'static str,
    steps: &'a [usize],
    times: Vec<f64>,
    sgd: LawJson,
    models: ModelsJson<'a>,
}

impl Serialize for MomentsReport {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let last = self.steps.last().copied().unwrap_or(0);
        ReportJson {
            file: &self.file,
            init_seed: self.init_seed,
            start_file: self.start_file.as_deref(),
            variables: &self.variables,
            eta: self.eta,
            horizon: last as f64 * self.eta,
            every: self.every,
            start: vector(&self.start),
            hessian_eigenvalues: &self.hessian_eigenvalues,
            eta_lambda_max: self.eta * self.hessian_eigenvalues.last().copied().unwrap_or(0.0),
            noise_commutes_with_hessian: self.noise_commutes_with_hessian,
            sgd_noise: if self.minibatch {
                "minibatch"
            } else {
                "gaussian"
            },
            steps: &self.steps,
            times: self.times(),
            sgd: LawJson::from(&self.sgd),
            models: ModelsJson(&self.models),
        }
        .serialize(serializer)
    }
}

/// A number for the text report: plain decimals between 1e−3 and 1e5, else scientific,
/// six significant digits.
fn num(x: f64) -> String {
    crate::format::num(x, crate::format::Style::Significant(6))
}

fn list(v: &DVector<f64>) -> String {
    let items: Vec<String> = v.iter().map(|&x| num(x)).collect();
    format!("({})", items.join(", "))
}

fn matrix(m: &DMatrix<f64>) -> String {
    let r: Vec<String> = m
        .row_iter()
        .map(|row| {
            let items: Vec<String> = row.iter().map(|&x| num(x)).collect();
            format!("[{}]", items.join(", "))
        })
        .collect();
    format!("[{}]", r.join(", "))
}

impl fmt::Display for MomentsReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let last = self.steps.last().copied().unwrap_or(0);
        let horizon = last as f64 * self.eta;
        writeln!(f, "moments  {}", self.file)?;
        let every = match self.every {
            1 => "every step".to_string(),
            n => format!("every {n} steps"),
        };
        writeln!(
            f,
            "  η = {}, {last} steps (T = {}), reported {every}",
            self.eta,
            num(horizon),
        )?;
        let eig: Vec<String> = self.hessian_eigenvalues.iter().map(|&x| num(x)).collect();
        let lambda_max = self.hessian_eigenvalues.last().copied().unwrap_or(0.0);
        writeln!(
            f,
            "  H eigenvalues  {}   (ηλ_max = {})",
            eig.join(", "),
            num(self.eta * lambda_max)
        )?;
        writeln!(
            f,
            "  HΣ = ΣH        {}",
            if self.noise_commutes_with_hessian {
                "yes"
            } else {
                "no"
            }
        )?;
        if self.minibatch {
            writeln!(
                f,
                "  SGD noise      minibatch: mean and covariance exact (the noise is independent of the iterate), law not Gaussian; W2 compares Gaussians with these moments"
            )?;
        }
        writeln!(f, "  SGD at step {last} (t = {})", num(horizon))?;
        writeln!(f, "    mean  {}", list(&self.sgd.mean))?;
        writeln!(f, "    cov   {}", matrix(&self.sgd.cov))?;
        let ok: Vec<(ModelKind, &ModelMoments)> = self
            .models
            .iter()
            .filter_map(|(k, r)| r.as_ref().ok().map(|m| (*k, m)))
            .collect();
        if !ok.is_empty() {
            writeln!(f, "  W2 distance to SGD")?;
            write!(f, "    {:>8}  {:>10}", "k", "t")?;
            for (k, _) in &ok {
                write!(f, "  {:>12}", k.to_string())?;
            }
            writeln!(f)?;
            for (idx, (&k, t)) in self.steps.iter().zip(self.times()).enumerate() {
                write!(f, "    {k:>8}  {:>10}", num(t))?;
                for (_, m) in &ok {
                    write!(f, "  {:>12}", num(m.w2[idx]))?;
                }
                writeln!(f)?;
            }
        }
        writeln!(f, "  at step {last}")?;
        let width = self
            .models
            .iter()
            .map(|(k, _)| k.to_string().len())
            .max()
            .unwrap_or(5)
            .max(5);
        writeln!(
            f,
            "    {:<width$}  {:>12}  {:>14}  {:>12}",
            "model", "mean error", "cov rel. error", "W2"
        )?;
        for (kind, outcome) in &self.models {
            let name = kind.to_string();
            match outcome {
                Ok(m) => {
                    let i = m.w2.len().saturating_sub(1);
                    writeln!(
                        f,
                        "    {name:<width$}  {:>12}  {:>14}  {:>12}",
                        num(m.mean_error[i]),
                        num(m.cov_rel_error[i]),
                        num(m.w2[i])
                    )?;
                    for w in &m.warnings {
                        writeln!(f, "    {:<width$}  warning: {w}", "")?;
                    }
                }
                Err(e) => writeln!(f, "    {name:<width$}  error: {e}")?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nalgebra::dvector;

    #[test]
    fn integral_of_exp_is_stable_at_both_signs_and_zero() {
        assert_eq!(integral_of_exp(0.0, 2.0), 2.0);
        // Tiny α: t(1 + αt/2) to first order, no cancellation.
        let (a, t) = (1e-12, 3.0);
        assert!((integral_of_exp(a, t) / (t * (1.0 + a * t / 2.0)) - 1.0).abs() < 1e-15);
        // Very negative: −1/α.
        assert!((integral_of_exp(-1e4, 5.0) - 1e-4).abs() < 1e-19);
        assert!((integral_of_exp(2.0, 1.0) - (2f64.exp() - 1.0) / 2.0).abs() < 1e-15);
    }

    #[test]
    fn times_keeps_exact_zeros() {
        assert_eq!(times(f64::INFINITY, 0.0), 0.0);
        assert_eq!(times(2.0, 3.0), 6.0);
    }

    #[test]
    fn reported_steps_include_zero_and_the_last() {
        let c = MomentsConfig::new(0.1, 7).unwrap().with_every(3).unwrap();
        assert_eq!(c.reported_steps(), vec![0, 3, 6, 7]);
        let c = MomentsConfig::new(0.1, 6).unwrap().with_every(3).unwrap();
        assert_eq!(c.reported_steps(), vec![0, 3, 6]);
        let c = MomentsConfig::new(0.1, 5).unwrap().with_every(50).unwrap();
        assert_eq!(c.reported_steps(), vec![0, 5]);
        assert_eq!(MomentsConfig::new(0.1, 200).unwrap().every(), 1);
        assert_eq!(MomentsConfig::new(0.1, 201).unwrap().every(), 2);
    }

    #[test]
    fn config_errors_are_bad_input() {
        for e in [
            MomentsConfig::new(f64::NAN, 3).unwrap_err(),
            MomentsConfig::new(0.0, 3).unwrap_err(),
            MomentsConfig::new(1e308, usize::MAX).unwrap_err(),
            MomentsConfig::new(0.1, 3)
                .unwrap()
                .with_every(0)
                .unwrap_err(),
            MomentsConfig::new(0.1, 3)
                .unwrap()
                .with_models([])
                .unwrap_err(),
        ] {
            assert!(matches!(e, MomentsError::InvalidConfig(_)), "{e}");
            assert_eq!(e.kind(), ErrorKind::Input);
        }
    }

    #[test]
    fn numbers_print_readably() {
        assert_eq!(num(0.0), "0");
        assert_eq!(num(1.0), "1");
        assert_eq!(num(0.1), "0.1");
        assert_eq!(num(-2.5), "-2.5");
        assert_eq!(num(123.456789), "123.457");
        assert_eq!(num(1.5e-7), "1.50000e-7");
    }

    #[test]
    fn polar_factor_is_orthogonal_and_makes_xq_symmetric_psd() {
        // Full rank, rank one (the product that broke nalgebra's SVD), zero, and 1×1.
        let cases = [
            DMatrix::from_row_slice(3, 3, &[1.0, 2.0, 2.0, 2.0, -1.0, -1.0, 2.0, 1.0, -1.0]),
            DVector::from_vec(vec![0.3, -0.5, 0.2])
                * DVector::from_vec(vec![1.0, 0.1, -2.0]).transpose(),
            DMatrix::from_element(2, 2, 1.0),
            DMatrix::zeros(3, 3),
            DMatrix::from_element(1, 1, -2.0),
            // Rank one in six dimensions: five columns to complete.
            DVector::from_fn(6, |i, _| (i as f64 - 2.5) / 3.0)
                * DVector::from_fn(6, |i, _| 1.0 / (1.0 + i as f64)).transpose(),
        ];
        for x in cases {
            let d = x.nrows();
            let q = polar_factor(&x).unwrap();
            assert!(
                (q.transpose() * &q - DMatrix::identity(d, d)).amax() < 1e-14,
                "{q}"
            );
            let xq = &x * &q;
            assert!(asymmetry(&xq) < 1e-13, "{xq}");
            let min = symmetric_part(&xq).symmetric_eigenvalues().min();
            assert!(min > -1e-14 * x.amax().max(1.0), "{xq}");
            // tr(XQ) is the nuclear norm: Σσ, checked through the eigenvalues of XᵀX.
            let nuclear: f64 = (x.transpose() * &x)
                .symmetric_eigenvalues()
                .iter()
                .map(|v| v.max(0.0).sqrt())
                .sum();
            assert!((xq.trace() - nuclear).abs() < 1e-7 * (1.0 + nuclear));
        }
    }

    #[test]
    fn psd_sqrt_clamps_round_off_negatives() {
        let c = DMatrix::from_row_slice(2, 2, &[1.0, 1.0, 1.0, 1.0 - 1e-17]);
        let s = psd_sqrt(&c).unwrap();
        assert!(s.iter().all(|x| x.is_finite()));
        assert!((&s * &s - &c).amax() < 1e-15);
    }

    #[test]
    fn sgd_overflow_is_an_error_naming_the_step() {
        // Along λ = −10 with η = 1 the mean grows like 11^k: ≈ 1e308 after ~296 steps.
        let q = Quadratic::new(
            DMatrix::from_element(1, 1, -10.0),
            dvector![0.0],
            DMatrix::from_element(1, 1, 1.0),
            dvector![1.0],
        )
        .unwrap();
        let c = MomentsConfig::new(1.0, 1000).unwrap();
        let e = compare_quadratic(&q, &c).unwrap_err();
        let MomentsError::SgdOverflow { step, .. } = e else {
            panic!("expected an SGD overflow, got {e}");
        };
        assert!((140..300).contains(&step), "{step}");
        assert_eq!(e.kind(), ErrorKind::Run);
    }

    #[test]
    fn a_model_overflowing_before_sgd_is_reported_as_failed() {
        // λ = −1, η = 1: SGD grows like 2^k, sme1 like e^k: at k = 1000 SGD is 1e301,
        // sme1 overflows.
        let q = Quadratic::new(
            DMatrix::from_element(1, 1, -1.0),
            dvector![0.0],
            DMatrix::from_element(1, 1, 0.0),
            dvector![1e-10],
        )
        .unwrap();
        let c = MomentsConfig::new(1.0, 990)
            .unwrap()
            .with_models([ModelKind::Sme1, ModelKind::Hasme])
            .unwrap();
        let r = compare_quadratic(&q, &c).unwrap();
        assert!(matches!(
            r.model(ModelKind::Sme1),
            Some(Err(MomentsError::Overflow { .. }))
        ));
        assert!(matches!(r.model(ModelKind::Hasme), Some(Ok(_))));
        assert_eq!(r.failures().len(), 1);
    }
}
