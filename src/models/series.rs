//! The series behind every model (spec MODELS.md §2, "one series behind every model"):
//! with `P = I − ηH` and `ℓ(p) = Σ_k (1 − p)^k/(k + 1)`,
//!
//! ```text
//! drift      b = −ℓ(P) g   = −Σ_k (ηH)^k g / (k + 1)
//! diffusion  Γ = η ℓ(𝒫)(Σ) =  η Σ_k 𝒬^k(Σ) / (k + 1),   𝒬(S) = S − P S Pᵀ = η(HS + SH) − η² HSH
//! ```
//!
//! Only matrix products, no eigendecomposition. The `series:K` model keeps drift terms
//! `k = 0..=K` and diffusion terms `k = 0..=max(K − 1, 0)`, one order fewer, because
//! the k-th diffusion term is `O(η^{k+1})` against `O(η^k)` for the drift: over one
//! step of length η, drift term k moves the mean by `O(η^{k+1})` while diffusion term k
//! adds `O(η^{k+2})` to the covariance, so a local error of `O(η^{K+2})` needs drift
//! terms `k ≤ K` and diffusion terms `k ≤ K − 1` (at least the first one is kept, so
//! the model stays stochastic). Then `series:0` is SME-1 and `series:1` is SME-2;
//! `sme1` and `sme2` are implemented as exactly these truncations.
//!
//! Convergence: the drift series converges geometrically when every `|ηλ_i| < 1`, with
//! ratio `max|ηλ_i|`. `𝒬` has eigenvalues `1 − p_i p_j`, so the diffusion series needs
//! every `p_i p_j ≤ 2` (for instance `η‖H‖ ≤ √2 − 1`), with ratio
//! `max|1 − p_i p_j| ≤ 2η‖H‖ + (η‖H‖)²`: a stricter condition than the spec's
//! `|ηλ_i| < 1`, which is the drift's. The closed forms in `spectral` hold on all of
//! `ηλ_max < 1`.

use nalgebra::{DMatrix, DVector};

use super::error::ModelError;
use super::local::{Local, check};
use super::spectral::symmetric_part;
use super::{check_eta, finite_or_overflow};

/// The first `count` drift terms `−(ηH)^k g/(k + 1)`, `k = 0..count`.
///
/// Errors: an invalid η or [`Local`], or a term that overflows f64.
pub fn drift_series_terms(
    local: &Local,
    eta: f64,
    count: usize,
) -> Result<Vec<DVector<f64>>, ModelError> {
    check_eta(eta)?;
    let checked = check(local)?;
    let terms = drift_terms(&checked.hessian, &local.gradient, eta, count);
    for t in &terms {
        finite_or_overflow(t.iter(), "a drift series term", local)?;
    }
    Ok(terms)
}

/// The first `count` diffusion terms `η 𝒬^k(Σ)/(k + 1)`, `k = 0..count`.
///
/// Σ is used as given (after the symmetry check of [`Local::new`]); positive
/// semidefiniteness is the models' check, not the series'.
pub fn diffusion_series_terms(
    local: &Local,
    eta: f64,
    count: usize,
) -> Result<Vec<DMatrix<f64>>, ModelError> {
    check_eta(eta)?;
    let checked = check(local)?;
    let terms = diffusion_terms(&checked.hessian, &checked.noise_cov, eta, count);
    for t in &terms {
        finite_or_overflow(t.iter(), "a diffusion series term", local)?;
    }
    Ok(terms)
}

/// `−(ηH)^k g/(k + 1)` for `k = 0..count`, on checked inputs.
pub(crate) fn drift_terms(
    hessian: &DMatrix<f64>,
    gradient: &DVector<f64>,
    eta: f64,
    count: usize,
) -> Vec<DVector<f64>> {
    let a = hessian * eta;
    let mut power = gradient.clone();
    let mut terms = Vec::with_capacity(count);
    for k in 0..count {
        if k > 0 {
            power = &a * &power;
        }
        terms.push(&power * (-1.0 / (k as f64 + 1.0)));
    }
    terms
}

/// `η 𝒬^k(Σ)/(k + 1)` for `k = 0..count`, on checked inputs.
pub(crate) fn diffusion_terms(
    hessian: &DMatrix<f64>,
    noise_cov: &DMatrix<f64>,
    eta: f64,
    count: usize,
) -> Vec<DMatrix<f64>> {
    let a = hessian * eta;
    let mut power = noise_cov.clone();
    let mut terms = Vec::with_capacity(count);
    for k in 0..count {
        if k > 0 {
            power = q_map(&a, &power);
        }
        terms.push(&power * (eta / (k as f64 + 1.0)));
    }
    terms
}

/// `𝒬(S) = AS + SA − ASA` with `A = ηH`, using `SA = (AS)ᵀ` for symmetric `A`, `S`:
/// two matrix products per term.
fn q_map(a: &DMatrix<f64>, s: &DMatrix<f64>) -> DMatrix<f64> {
    let as_ = a * s;
    let asa = &as_ * a;
    symmetric_part(&(&as_ + as_.transpose() - asa))
}

/// The `series:K` drift and diffusion (before any positive semidefinite check).
pub(crate) fn truncation(
    hessian: &DMatrix<f64>,
    gradient: &DVector<f64>,
    noise_cov: &DMatrix<f64>,
    eta: f64,
    order: u32,
) -> (DVector<f64>, DMatrix<f64>) {
    let k = order as usize;
    let drift = sum_vectors(drift_terms(hessian, gradient, eta, k + 1));
    let diffusion = sum_matrices(diffusion_terms(
        hessian,
        noise_cov,
        eta,
        diffusion_term_count(order),
    ));
    (drift, diffusion)
}

/// `series:K` keeps diffusion terms `k = 0..=max(K − 1, 0)`.
pub(crate) fn diffusion_term_count(order: u32) -> usize {
    (order as usize).max(1)
}

fn sum_vectors(terms: Vec<DVector<f64>>) -> DVector<f64> {
    let mut it = terms.into_iter();
    let first = it.next().unwrap_or_else(|| DVector::zeros(0));
    it.fold(first, |acc, t| acc + t)
}

fn sum_matrices(terms: Vec<DMatrix<f64>>) -> DMatrix<f64> {
    let mut it = terms.into_iter();
    let first = it.next().unwrap_or_else(|| DMatrix::zeros(0, 0));
    it.fold(first, |acc, t| acc + t)
}
