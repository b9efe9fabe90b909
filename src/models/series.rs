//! The series behind every model (docs/models.md §2, "one series behind every model"):
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
use super::linalg::{mul, symmetrise, tr_mul_vec};
use super::local::{Local, check};
use super::workspace::Arithmetic;
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
    let d = local.dim();
    let h = checked.hessian.as_slice();
    let mut a = DMatrix::zeros(d, d);
    scaled_hessian(d, eta, h, &mut a);
    let (mut power, mut tmp) = (local.gradient.clone(), DVector::zeros(d));
    let mut terms = Vec::with_capacity(count);
    for k in 0..count {
        if k > 0 {
            next_drift_power(d, eta, Arithmetic::Qr, h, &a, &mut power, &mut tmp);
        }
        let t = &power * (-1.0 / (k as f64 + 1.0));
        finite_or_overflow(t.iter(), "a drift series term", local)?;
        terms.push(t);
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
    let d = local.dim();
    let h = checked.hessian.as_slice();
    let mut a = DMatrix::zeros(d, d);
    scaled_hessian(d, eta, h, &mut a);
    let mut power = checked.noise_cov;
    let (mut t1, mut t2) = (DMatrix::zeros(d, d), DMatrix::zeros(d, d));
    let mut terms = Vec::with_capacity(count);
    for k in 0..count {
        if k > 0 {
            next_diffusion_power(
                d,
                eta,
                Arithmetic::Qr,
                h,
                &a,
                &mut power,
                [&mut t1, &mut t2],
            );
        }
        let t = &power * (eta / (k as f64 + 1.0));
        finite_or_overflow(t.iter(), "a diffusion series term", local)?;
        terms.push(t);
    }
    Ok(terms)
}

/// `a = ηH` (for [`Arithmetic::Qr`], whose powers multiply by it), H exactly symmetric.
pub(crate) fn scaled_hessian(d: usize, eta: f64, h: &[f64], a: &mut DMatrix<f64>) {
    for (a, h) in a.iter_mut().zip(&h[..d * d]) {
        *a = h * eta;
    }
}

/// `v ← ηH v`, the next power's vector: `(ηH)v` with `a = ηH` for [`Arithmetic::Qr`],
/// `η(Hv)` for [`Arithmetic::Jacobi`] (H row-major as given). `tmp` is scratch.
#[inline(always)]
pub(crate) fn next_drift_power(
    d: usize,
    eta: f64,
    arithmetic: Arithmetic,
    h: &[f64],
    a: &DMatrix<f64>,
    v: &mut DVector<f64>,
    tmp: &mut DVector<f64>,
) {
    match arithmetic {
        Arithmetic::Qr => {
            tmp.gemv(1.0, a, v, 0.0);
            v.copy_from(tmp);
        }
        Arithmetic::Jacobi => {
            // H_ik is h[i·d + k]: as a column-major matrix the slice is Hᵀ.
            tr_mul_vec(d, h, v.as_slice(), tmp.as_mut_slice());
            for (v, t) in v.as_mut_slice().iter_mut().zip(tmp.as_slice()) {
                *v = eta * t;
            }
        }
    }
}

/// `S ← 𝒬(S) = AS + SA − ASA` with `A = ηH`, using `SA = (AS)ᵀ` for symmetric `A`, `S`
/// (two matrix products), made exactly symmetric. `tmp` is scratch.
#[inline(always)]
pub(crate) fn next_diffusion_power(
    d: usize,
    eta: f64,
    arithmetic: Arithmetic,
    h: &[f64],
    a: &DMatrix<f64>,
    s: &mut DMatrix<f64>,
    tmp: [&mut DMatrix<f64>; 2],
) {
    let [as_, asa] = tmp;
    match arithmetic {
        Arithmetic::Qr => {
            a.mul_to(s, as_);
            as_.mul_to(a, asa);
            for j in 0..d {
                for i in 0..d {
                    s[(i, j)] = as_[(i, j)] + as_[(j, i)] - asa[(i, j)];
                }
            }
            // (S + Sᵀ)/2 entry by entry, the same expression on both sides.
            let sum = s.clone();
            for j in 0..d {
                for i in 0..d {
                    s[(i, j)] = 0.5 * sum[(i, j)] + 0.5 * sum[(j, i)];
                }
            }
        }
        Arithmetic::Jacobi => {
            // AS = η(HS), then ASA = η((AS)H), every matrix row-major in its memory (H
            // and Σ as given): the row-major product a·b is the column-major b·a.
            let (s, as_, asa) = (s.as_mut_slice(), as_.as_mut_slice(), asa.as_mut_slice());
            mul(d, s, h, as_);
            as_.iter_mut().for_each(|v| *v *= eta);
            mul(d, h, as_, asa);
            for i in 0..d {
                for j in 0..d {
                    s[i * d + j] = as_[i * d + j] + as_[j * d + i] - eta * asa[i * d + j];
                }
            }
            symmetrise(d, s);
        }
    }
}

/// `series:K` keeps diffusion terms `k = 0..=max(K − 1, 0)`.
pub(crate) fn diffusion_term_count(order: u32) -> usize {
    (order as usize).max(1)
}
