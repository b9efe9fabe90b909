//! Model coefficients without the d×d Hessian (docs/models.md §8, spec MODELS.md §7):
//! every product with a function of H is built from Hessian-vector products (HVPs)
//! `v ↦ Hv`, given as a closure.
//!
//! * `sme2` drift `−g − (η/2)Hg`: one HVP ([`sme2_drift`]).
//! * `hasme` drift `−φ(ηH)g`, φ with eigenvalues `ℓ(1 − ηλ)` ([`hasme_drift`]), and
//!   diffusion increment `√η ψ(ηH)^{1/2} u`, ψ with eigenvalues `ℓ((1 − ηλ)²)`, for a
//!   given `u = Σ^{1/2}ΔW` ([`hasme_diffusion_increment`]): Lanczos on H from the vector
//!   (g or u), `f(ηH)v ≈ ‖v‖ V_k f(ηT_k) e_1` ([`Lanczos::function_times_start`]), one
//!   HVP per step. The run stops at the first k where the change from k − 1 is at most
//!   the tolerance relative to the new vector (`‖y_k − y_{k−1}‖ ≤ tol·‖y_k‖`), or where
//!   the Krylov space closes (then the result is exact to round-off).
//! * Domain `ηλ_max < 1`. Every Ritz value is at most λ_max, so a Ritz value θ with
//!   `ηθ ≥ 1` proves the point outside: [`ModelError::StepSizeTooLarge`], naming the
//!   point, θ and 1/θ. Inside is accepted when the largest Ritz value plus its residual
//!   bound (`θ + ‖r‖`, an upper bound on the eigenvalue nearest θ) is below 1/η; while
//!   neither holds the run takes more steps (up to d, where the bound is 0). The check
//!   sees the eigenvalues the start vector touches: a random `u` touches every one
//!   (with probability 1), which is why a simulator's diffusion increments, a fresh
//!   start vector each step, are where an excursion out of the domain is caught.
//! * `hasme-exact` needs H's whole eigenbasis (`Σ̂ = UᵀΣU`): it has no matrix-free form
//!   ([`ModelError::DenseOnly`]).
//!
//! `φ` and `ψ^{1/2}` are evaluated on the Ritz values through the crate's stable
//! [`ell`](super::ell) (`ℓ(p)` from `q = −ηθ` exactly, `ℓ(p²) = 2ℓ(p)/(1 + p)`), so they
//! keep full relative accuracy as `ηθ → 0`.
//!
//! ```
//! use hasme::models::matrix_free::{hasme_drift, KrylovOptions};
//! use hasme::models::ModelError;
//! // H = diag(1, 4) as an operator; g = (1, 1); η = 0.1.
//! let hvp = |v: &[f64], out: &mut [f64]| {
//!     out[0] = v[0];
//!     out[1] = 4.0 * v[1];
//!     Ok::<(), ModelError>(())
//! };
//! let x = [0.0, 0.0];
//! let r = hasme_drift(&x, &[1.0, 1.0], 0.1, &KrylovOptions::default(), hvp)?;
//! // Along an eigenvector −φ(ηλ)g = log(1 − ηλ)/(ηλ)·g.
//! assert!((r.vector[1] - (0.6f64).ln() / 0.4).abs() < 1e-13);
//! assert_eq!(r.steps, 2); // the Krylov space of (1, 1) is the whole plane
//! # Ok::<(), ModelError>(())
//! ```

use nalgebra::{DMatrix, DVector};

use super::ell::ell_pq;
use super::error::{ModelError, Point};
use super::krylov::{Lanczos, Ritz};
use super::workspace::ell_square;
use super::{Local, Model, ModelKind, ModelOptions};

/// The default relative tolerance of the Lanczos runs: ten decades, the accuracy the
/// dense path's eigendecomposition has on Hessians of condition number up to about 1e5.
pub const DEFAULT_KRYLOV_TOLERANCE: f64 = 1e-10;

/// Outside the domain, the largest Ritz value is reported once its residual bound is
/// below this fraction of it: eight digits, more than an error message shows.
const OUTSIDE_BOUND: f64 = 1e-8;

/// Settings of the matrix-free coefficients, checked once when built.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct KrylovOptions {
    tolerance: f64,
}

impl Default for KrylovOptions {
    fn default() -> Self {
        KrylovOptions {
            tolerance: DEFAULT_KRYLOV_TOLERANCE,
        }
    }
}

impl KrylovOptions {
    /// Options with the relative tolerance `tolerance`, which must be finite and in
    /// (0, 1).
    ///
    /// ```
    /// use hasme::models::matrix_free::KrylovOptions;
    /// assert!(KrylovOptions::new(1e-8).is_ok());
    /// assert!(KrylovOptions::new(0.0).is_err() && KrylovOptions::new(f64::NAN).is_err());
    /// ```
    pub fn new(tolerance: f64) -> Result<KrylovOptions, ModelError> {
        if tolerance.is_finite() && tolerance > 0.0 && tolerance < 1.0 {
            Ok(KrylovOptions { tolerance })
        } else {
            Err(ModelError::InvalidKrylovTolerance { tolerance })
        }
    }

    /// The relative tolerance.
    pub fn tolerance(&self) -> f64 {
        self.tolerance
    }
}

/// A vector computed by Lanczos, with the work it took.
#[derive(Clone, Debug, PartialEq)]
pub struct KrylovVector {
    /// The result (`−φ(ηH)g`, or `√η ψ(ηH)^{1/2} u`).
    pub vector: Vec<f64>,
    /// Lanczos steps taken, one HVP each.
    pub steps: usize,
    /// The largest Ritz value with its residual bound, when any step was taken.
    pub top: Option<Ritz>,
}

/// Which arithmetic computes the Hessian's part of the model coefficients.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LinearAlgebra {
    /// The d×d Hessian and its eigendecomposition.
    Dense,
    /// Hessian-vector products and Lanczos ([`KrylovOptions`]).
    Krylov,
}

/// Above this dimension [`LinearAlgebra::for_dimension`] picks Lanczos. Measured on the
/// teacher–student tanh networks of `benches/network.rs` (docs/performance.md,
/// "Matrix-free coefficients"): paired against one gradient, the dense evaluation is
/// level with the matrix-free one or ahead at d = 12 and behind from d = 16 on
/// (1.2–2.1× the matrix-free time at 16, 1.4–2.2× at 24, 3.4–4.0× at 48), so on
/// finite sums the crossover lies between 12 and 16. The switch stays above 24: at or
/// below it every existing output (the bundled examples have d ≤ 21) stays the dense
/// path's, bit for bit, and an objective without data has a cheap dense Hessian
/// (static jets) that moves the crossover up.
pub const KRYLOV_ABOVE: usize = 24;

impl LinearAlgebra {
    /// The rule used when none is asked for: dense for `d ≤` [`KRYLOV_ABOVE`], Lanczos
    /// above. It applies to the models with a matrix-free form
    /// ([`has_matrix_free_form`]); the others are always dense.
    ///
    /// ```
    /// use hasme::models::matrix_free::LinearAlgebra;
    /// assert_eq!(LinearAlgebra::for_dimension(21), LinearAlgebra::Dense);
    /// assert_eq!(LinearAlgebra::for_dimension(400), LinearAlgebra::Krylov);
    /// ```
    pub fn for_dimension(d: usize) -> LinearAlgebra {
        if d <= KRYLOV_ABOVE {
            LinearAlgebra::Dense
        } else {
            LinearAlgebra::Krylov
        }
    }
}

impl std::fmt::Display for LinearAlgebra {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LinearAlgebra::Dense => "dense",
            LinearAlgebra::Krylov => "krylov",
        })
    }
}

/// The `sme2` drift `−g − (η/2)Hg` from one Hessian-vector product.
///
/// Errors: an invalid η; whatever `hvp` returns.
pub fn sme2_drift<E: From<ModelError>>(
    gradient: &[f64],
    eta: f64,
    mut hvp: impl FnMut(&[f64], &mut [f64]) -> Result<(), E>,
) -> Result<Vec<f64>, E> {
    super::check_eta(eta)?;
    let mut hg = vec![0.0; gradient.len()];
    hvp(gradient, &mut hg)?;
    Ok(gradient
        .iter()
        .zip(&hg)
        .map(|(g, h)| -g - 0.5 * eta * h)
        .collect())
}

/// The `hasme` drift `−φ(ηH)g` by Lanczos from g, with the domain check.
///
/// Errors: an invalid η; [`ModelError::StepSizeTooLarge`] outside the domain;
/// [`ModelError::Overflow`] if the result is not finite; whatever `hvp` returns.
pub fn hasme_drift<E: From<ModelError>>(
    point: &[f64],
    gradient: &[f64],
    eta: f64,
    options: &KrylovOptions,
    hvp: impl FnMut(&[f64], &mut [f64]) -> Result<(), E>,
) -> Result<KrylovVector, E> {
    super::check_eta(eta)?;
    let mut r = function_times(point, gradient, eta, options, phi, hvp)?;
    r.vector.iter_mut().for_each(|x| *x = -*x);
    Ok(r)
}

/// The `hasme` diffusion increment `√η ψ(ηH)^{1/2} u` by Lanczos from u (for
/// `u = Σ^{1/2}ΔW` it has covariance `η ψ^{1/2} Σ ψ^{1/2}·Δt`, the model's Γ·Δt), with
/// the domain check.
///
/// Errors: as [`hasme_drift`].
pub fn hasme_diffusion_increment<E: From<ModelError>>(
    point: &[f64],
    u: &[f64],
    eta: f64,
    options: &KrylovOptions,
    hvp: impl FnMut(&[f64], &mut [f64]) -> Result<(), E>,
) -> Result<KrylovVector, E> {
    super::check_eta(eta)?;
    let mut r = function_times(point, u, eta, options, sqrt_psi, hvp)?;
    let root = eta.sqrt();
    r.vector.iter_mut().for_each(|x| *x *= root);
    Ok(r)
}

/// Lanczos steps a model's coefficients took.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct LanczosSteps {
    /// For the drift (`hasme`: the run from g).
    pub drift: usize,
    /// For the diffusion (`hasme`: the longest of the runs from the columns of Σ^{1/2}).
    pub diffusion: usize,
}

/// A model's drift and diffusion matrix computed without the Hessian (what `derive`
/// reports).
#[derive(Clone, Debug, PartialEq)]
pub struct KrylovCoefficients {
    /// The drift `b(x)`.
    pub drift: DVector<f64>,
    /// `Γ`, symmetric positive semidefinite; for `hasme` formed as `FFᵀ` from the
    /// increments `F e_j = √η ψ(ηH)^{1/2} Σ^{1/2} e_j`, so it is the covariance of the
    /// increments a simulator draws.
    pub diffusion: DMatrix<f64>,
    /// The Lanczos steps taken (0 for the models that need none).
    pub steps: LanczosSteps,
    /// As [`Coefficients::warnings`](super::Coefficients::warnings).
    pub warnings: Vec<String>,
}

/// Whether a model has a matrix-free form here: `gf` and `sme1` need no H at all,
/// `sme2` one HVP, `hasme` Lanczos; `hasme-exact` and `series:K` need the matrix.
pub fn has_matrix_free_form(kind: ModelKind) -> bool {
    dense_only(kind).is_none()
}

/// Why a model has no matrix-free form ([`ModelError::DenseOnly`]), or `None` when it
/// has one.
///
/// ```
/// use hasme::models::{matrix_free::dense_only, ModelKind};
/// assert!(dense_only(ModelKind::Hasme).is_none());
/// let why = dense_only(ModelKind::HasmeExact).unwrap().to_string();
/// assert!(why.contains("eigenbasis"), "{why}");
/// ```
pub fn dense_only(kind: ModelKind) -> Option<ModelError> {
    let reason = match kind {
        ModelKind::Gf | ModelKind::Sme1 | ModelKind::Sme2 | ModelKind::Hasme => return None,
        ModelKind::HasmeExact => {
            "its diffusion η U (Σ̂ ∘ L) Uᵀ needs the whole eigenbasis U of H (Σ̂ = UᵀΣU)"
        }
        ModelKind::Series(_) => "its diffusion terms 𝒬^k(Σ) are products of d×d matrices",
    };
    Some(ModelError::DenseOnly {
        model: kind.to_string(),
        reason,
    })
}

/// A model's coefficients at `local.point` from Hessian-vector products `hvp` (the
/// Hessian in `local` is never read beyond the checks of [`Local`]). Σ is made usable
/// as by the dense path (`options.psd`); for `hasme` Γ takes d Lanczos runs, one per
/// column of Σ^{1/2}: a report's cost, not a simulator's, which draws one increment
/// per step ([`hasme_diffusion_increment`]).
///
/// Errors: [`ModelError::DenseOnly`] for `hasme-exact` and `series:K`; otherwise those
/// of the dense path (invalid η, Σ not PSD, the domain) and whatever `hvp` returns.
///
/// ```
/// use hasme::models::matrix_free::{coefficients, KrylovOptions};
/// use hasme::models::{Local, Model, ModelError, ModelKind, ModelOptions};
/// use nalgebra::{DMatrix, DVector};
/// let h = DMatrix::from_row_slice(2, 2, &[2.0, 0.5, 0.5, -1.0]);
/// let local = Local::new(
///     DVector::from_vec(vec![0.1, 2.0]),
///     DVector::from_vec(vec![1.0, -0.5]),
///     h.clone(),
///     DMatrix::from_row_slice(2, 2, &[0.3, 0.1, 0.1, 0.2]),
/// )?;
/// let hvp = |v: &[f64], out: &mut [f64]| {
///     out.copy_from_slice((&h * DVector::from_column_slice(v)).as_slice());
///     Ok::<(), ModelError>(())
/// };
/// let (o, k) = (ModelOptions::default(), KrylovOptions::default());
/// let free = coefficients(ModelKind::Hasme, &local, 0.1, &o, &k, hvp)?;
/// let dense = ModelKind::Hasme.coefficients(&local, 0.1)?;
/// assert!((&free.drift - &dense.drift).norm() < 1e-12);
/// assert!((&free.diffusion - &dense.diffusion).norm() < 1e-12);
/// # Ok::<(), ModelError>(())
/// ```
pub fn coefficients<E: From<ModelError>>(
    kind: ModelKind,
    local: &Local,
    eta: f64,
    options: &ModelOptions,
    krylov: &KrylovOptions,
    mut hvp: impl FnMut(&[f64], &mut [f64]) -> Result<(), E>,
) -> Result<KrylovCoefficients, E> {
    if let Some(e) = dense_only(kind) {
        return Err(e.into());
    }
    super::check_eta(eta)?;
    let checked = super::local::check(local)?;
    let x = local.point.as_slice();
    let g = local.gradient.as_slice();
    match kind {
        ModelKind::Gf | ModelKind::Sme1 | ModelKind::Sme2 => {
            // The diffusion ηΣ₊ (none for gf) and the warnings are the dense path's own:
            // they never read H.
            let base = if kind == ModelKind::Gf {
                ModelKind::Gf
            } else {
                ModelKind::Sme1
            };
            let c = base.coefficients_with(local, eta, options)?;
            let drift = if kind == ModelKind::Sme2 {
                DVector::from_vec(sme2_drift(g, eta, &mut hvp)?)
            } else {
                c.drift
            };
            super::finite_or_overflow(drift.iter(), "the drift", local)?;
            Ok(KrylovCoefficients {
                drift,
                diffusion: c.diffusion,
                steps: LanczosSteps::default(),
                warnings: c.warnings,
            })
        }
        _ => {
            let drift = hasme_drift(x, g, eta, krylov, &mut hvp)?;
            let mut warnings = Vec::new();
            let noise =
                super::psd_noise(&checked.noise_cov, options, &local.where_(), &mut warnings)?;
            let root = noise.psd.sqrt();
            let d = local.dim();
            let mut factor = DMatrix::zeros(d, d);
            let mut diffusion_steps = 0;
            for j in 0..d {
                let column: Vec<f64> = root.column(j).iter().copied().collect();
                let inc = hasme_diffusion_increment(x, &column, eta, krylov, &mut hvp)?;
                diffusion_steps = diffusion_steps.max(inc.steps);
                factor.set_column(j, &DVector::from_vec(inc.vector));
            }
            // Zero start vectors (g = 0 at a stationary point and Σ = 0) take no step
            // and so see no eigenvalue: the domain is then checked on its own, as the
            // dense path always does.
            if drift.steps == 0 && diffusion_steps == 0 {
                check_domain(x, eta, &mut hvp)?;
            }
            let gamma = &factor * factor.transpose();
            // Exactly symmetric, as the dense Γ.
            let diffusion = (&gamma + gamma.transpose()) * 0.5;
            super::finite_or_overflow(diffusion.iter(), "the diffusion Γ", local)?;
            Ok(KrylovCoefficients {
                drift: DVector::from_vec(drift.vector),
                diffusion,
                steps: LanczosSteps {
                    drift: drift.steps,
                    diffusion: diffusion_steps,
                },
                warnings,
            })
        }
    }
}

/// `φ(z) = ℓ(1 − z)` at `z = ηθ < 1`, from `q = −z` exactly.
fn phi(z: f64) -> f64 {
    ell_pq(1.0 - z, -z)
}

/// `ψ(z)^{1/2} = ℓ((1 − z)²)^{1/2}` at `z = ηθ < 1`.
fn sqrt_psi(z: f64) -> f64 {
    let p = 1.0 - z;
    ell_square(ell_pq(p, -z), p).sqrt()
}

/// `f(ηH)v` by Lanczos from v, stopping on the relative change, then stepping on until
/// the domain is decided.
fn function_times<E: From<ModelError>>(
    point: &[f64],
    v: &[f64],
    eta: f64,
    options: &KrylovOptions,
    f: fn(f64) -> f64,
    mut hvp: impl FnMut(&[f64], &mut [f64]) -> Result<(), E>,
) -> Result<KrylovVector, E> {
    let where_ = || Point::from_slice(point);
    if let Some((index, &value)) = v.iter().enumerate().find(|(_, x)| !x.is_finite()) {
        return Err(ModelError::NonFiniteInput {
            quantity: "the Lanczos start vector",
            index: index.to_string(),
            value,
            point: where_(),
        }
        .into());
    }
    let mut lanczos = Lanczos::new(v);
    if lanczos.finished() {
        // A zero vector: f(ηH)·0 = 0 without a product.
        return Ok(KrylovVector {
            vector: vec![0.0; v.len()],
            steps: 0,
            top: None,
        });
    }
    let mut previous: Option<Vec<f64>> = None;
    let mut converged = false;
    loop {
        let more = lanczos.step(&mut hvp)?;
        let ritz = lanczos.ritz();
        let top = *ritz.last().expect("a step was taken");
        let (alpha, _) = lanczos.tridiagonal();
        if alpha.iter().any(|a| !a.is_finite()) {
            return Err(ModelError::Overflow {
                quantity: "a Hessian-vector product",
                point: where_(),
            }
            .into());
        }
        // Every Ritz value is ≤ λ_max: one at or beyond 1/η proves the point outside.
        // The run goes on until that Ritz value has converged (or the space closes), so
        // the error names an eigenvalue, not an early underestimate of it.
        if eta * top.value >= 1.0 {
            if more && top.bound > OUTSIDE_BOUND * top.value.abs() {
                continue;
            }
            return Err(outside(top.value, eta, point).into());
        }
        if !converged {
            let y = lanczos.function_times_start(|theta| f(eta * theta));
            if let Some(prev) = &previous {
                let change = distance(&y, prev);
                converged = change <= options.tolerance * norm(&y);
            }
            previous = Some(y);
        }
        let decided = eta * (top.value + top.bound) < 1.0;
        if !more || (converged && decided) {
            // A finished run has bound 0, so `decided` holds; the check above
            // already failed any run that saw ηθ ≥ 1.
            let vector = previous.expect("set on the first step");
            if vector.iter().any(|x| !x.is_finite()) {
                return Err(ModelError::Overflow {
                    quantity: "a Lanczos matrix-function product",
                    point: where_(),
                }
                .into());
            }
            return Ok(KrylovVector {
                vector,
                steps: lanczos.steps(),
                top: Some(top),
            });
        }
    }
}

/// The domain check `ηλ_max < 1` alone, by Lanczos from a fixed start vector with
/// every entry nonzero (`1 + sin(1.7 i)/2`), stepping until the largest Ritz value has
/// converged (residual bound at most 1e−8 of it, or the space closed) and then deciding
/// by `θ + ‖r‖`; returns that Ritz value and its bound (or `None` at d = 0). What a
/// zero drift and diffusion (no Lanczos run of their own) are checked with.
///
/// Why wait for convergence here: `θ + ‖r‖` bounds the eigenvalue nearest θ, not
/// λ_max, and while θ is still climbing towards λ_max the interval around it can hold a
/// lower eigenvalue only. In [`hasme_drift`] and [`hasme_diffusion_increment`] the
/// matrix function's own convergence does that work: the result has not converged
/// while the start vector has a component along an eigenvector the run has not found.
///
/// Errors: an invalid η; [`ModelError::StepSizeTooLarge`]; whatever `hvp` returns.
pub fn check_domain<E: From<ModelError>>(
    point: &[f64],
    eta: f64,
    mut hvp: impl FnMut(&[f64], &mut [f64]) -> Result<(), E>,
) -> Result<Option<Ritz>, E> {
    super::check_eta(eta)?;
    let start: Vec<f64> = (0..point.len())
        .map(|i| 1.0 + 0.5 * (1.7 * i as f64).sin())
        .collect();
    let mut lanczos = Lanczos::new(&start);
    if lanczos.finished() {
        return Ok(None);
    }
    loop {
        let more = lanczos.step(&mut hvp)?;
        let top = *lanczos.ritz().last().expect("a step was taken");
        if !top.value.is_finite() {
            return Err(ModelError::Overflow {
                quantity: "a Hessian-vector product",
                point: Point::from_slice(point),
            }
            .into());
        }
        if eta * top.value >= 1.0 {
            if more && top.bound > OUTSIDE_BOUND * top.value.abs() {
                continue;
            }
            return Err(outside(top.value, eta, point).into());
        }
        let converged = top.bound <= OUTSIDE_BOUND * top.value.abs();
        if !more || (converged && eta * (top.value + top.bound) < 1.0) {
            return Ok(Some(top));
        }
    }
}

fn outside(lambda_max: f64, eta: f64, point: &[f64]) -> ModelError {
    ModelError::StepSizeTooLarge {
        lambda_max,
        eta,
        product: eta * lambda_max,
        inverse_lambda_max: 1.0 / lambda_max,
        point: Point::from_slice(point),
    }
}

fn norm(a: &[f64]) -> f64 {
    a.iter().map(|x| x * x).sum::<f64>().sqrt()
}

fn distance(a: &[f64], b: &[f64]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y) * (x - y))
        .sum::<f64>()
        .sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;
    use nalgebra::{DMatrix, DVector};

    use crate::models::krylov::tests::with_spectrum;

    fn operator(a: &DMatrix<f64>) -> impl FnMut(&[f64], &mut [f64]) -> Result<(), ModelError> + '_ {
        move |v, out| {
            out.copy_from_slice((a * DVector::from_column_slice(v)).as_slice());
            Ok(())
        }
    }

    /// f(H)v through the dense eigendecomposition: the independent reference.
    fn dense(a: &DMatrix<f64>, v: &[f64], f: impl Fn(f64) -> f64) -> DVector<f64> {
        let e = a.clone().symmetric_eigen();
        let fl = e.eigenvalues.map(f);
        &e.eigenvectors
            * DMatrix::from_diagonal(&fl)
            * e.eigenvectors.transpose()
            * DVector::from_column_slice(v)
    }

    #[test]
    fn drift_and_increment_match_the_eigenbasis_formulas() {
        let s: Vec<f64> = (0..30).map(|i| -3.0 + 0.4 * i as f64).collect(); // −3 … 8.6
        let a = with_spectrum(&s);
        let eta = 0.1;
        let g: Vec<f64> = (0..30).map(|i| (i as f64 * 0.37).cos()).collect();
        let x = vec![0.0; 30];
        let o = KrylovOptions::default();
        let b = hasme_drift(&x, &g, eta, &o, operator(&a)).unwrap();
        // φ(ηλ) = −log(1 − ηλ)/(ηλ), the naive quotient: no λ is near 0 here.
        let reference = -dense(&a, &g, |l| -(1.0 - eta * l).ln() / (eta * l));
        let err = (DVector::from_column_slice(&b.vector) - &reference).norm();
        assert!(err <= 1e-9 * reference.norm(), "{err}");
        let inc = hasme_diffusion_increment(&x, &g, eta, &o, operator(&a)).unwrap();
        let psi = |l: f64| {
            let p = 1.0 - eta * l;
            (-2.0 * p.ln() / (eta * l * (2.0 - eta * l))).sqrt()
        };
        let reference = dense(&a, &g, psi) * eta.sqrt();
        let err = (DVector::from_column_slice(&inc.vector) - &reference).norm();
        assert!(err <= 1e-9 * reference.norm(), "{err}");
        assert!(b.steps < 30 && inc.steps < 30, "{} {}", b.steps, inc.steps);
    }

    #[test]
    fn sme2_is_one_product() {
        let a = with_spectrum(&[-1.0, 0.5, 2.0]);
        let g = [0.3, -0.2, 1.0];
        let mut calls = 0;
        let b = sme2_drift(&g, 0.2, |v: &[f64], out: &mut [f64]| {
            calls += 1;
            operator(&a)(v, out)
        })
        .unwrap();
        let hg = &a * DVector::from_column_slice(&g);
        for i in 0..3 {
            assert!((b[i] - (-g[i] - 0.1 * hg[i])).abs() < 1e-15);
        }
        assert_eq!(calls, 1);
    }

    #[test]
    fn domain_edges() {
        // λ_max = 10: η just below 1/10 is inside, just above is outside.
        let s = [-2.0, 1.0, 3.0, 10.0];
        let a = with_spectrum(&s);
        let g = [1.0, 0.5, -0.3, 0.2];
        let o = KrylovOptions::default();
        assert!(hasme_drift(&[0.0; 4], &g, 0.0999, &o, operator(&a)).is_ok());
        let err = hasme_drift(&[0.0; 4], &g, 0.1001, &o, operator(&a)).unwrap_err();
        let ModelError::StepSizeTooLarge { lambda_max, .. } = err else {
            panic!("{err}")
        };
        assert!((lambda_max - 10.0).abs() < 1e-9);
        assert!(err.to_string().contains("1/λ_max"));
    }

    #[test]
    fn zero_start_and_bad_options() {
        let a = with_spectrum(&[1.0, 2.0]);
        let r = hasme_drift(
            &[0.0; 2],
            &[0.0; 2],
            0.1,
            &KrylovOptions::default(),
            operator(&a),
        );
        assert_eq!(r.unwrap().steps, 0);
        for t in [0.0, 1.0, -1e-3, f64::NAN, f64::INFINITY] {
            assert!(matches!(
                KrylovOptions::new(t),
                Err(ModelError::InvalidKrylovTolerance { .. })
            ));
        }
        let err = hasme_drift(
            &[0.0; 2],
            &[f64::NAN, 0.0],
            0.1,
            &KrylovOptions::default(),
            operator(&a),
        )
        .unwrap_err();
        assert!(matches!(err, ModelError::NonFiniteInput { .. }), "{err}");
    }

    #[test]
    fn small_eta_keeps_relative_accuracy() {
        // ηλ ~ 1e−14: φ ≈ 1 + ηλ/2; the naive quotient would lose every digit.
        let a = with_spectrum(&[1.0, 2.0, 3.0]);
        let g = [1.0, 1.0, 1.0];
        let eta = 1e-14;
        let b = hasme_drift(&[0.0; 3], &g, eta, &KrylovOptions::default(), operator(&a)).unwrap();
        let reference = -dense(&a, &g, |l| 1.0 + eta * l / 2.0);
        for (x, y) in b.vector.iter().zip(reference.iter()) {
            assert!((x - y).abs() <= 1e-15 * y.abs(), "{x} {y}");
        }
    }
}
