//! The SDE models of SGD: drift `b(x)` and diffusion `Γ(x) = σσᵀ` from the local data
//! `g = ∇f(x)`, `H = ∇²f(x)`, `Σ(x)` at one point; see docs/models.md §2.
//!
//! | model | drift | diffusion Γ | weak order |
//! |---|---|---|---|
//! | `gf` | `−g` | `0` | 1 |
//! | `sme1` | `−g` | `ηΣ` | 1 |
//! | `sme2` | `−g − (η/2)Hg` | `ηΣ` | 2 |
//! | `hasme` | `−φ(ηH)g` | `η ψ^{1/2} Σ ψ^{1/2}` | 2 |
//! | `hasme-exact` | `−φ(ηH)g` | `η U (Σ̂ ∘ L) Uᵀ` | 2 |
//! | `series:K` | `−Σ_{k≤K} (ηH)^k g/(k+1)` | `η Σ_{k≤max(K−1,0)} 𝒬^k(Σ)/(k+1)` | min(K+1, 2) |
//!
//! Everything is one series (docs/models.md §2): with `P = I − ηH` and `ℓ(p) = log p/(p − 1)`
//! ([`ell`]), the drift is `−ℓ(P)g` and the exact diffusion `η ℓ(𝒫)(Σ)`, `𝒫(S) = PSPᵀ`.
//! `sme1` and `sme2` are its truncations and are computed as such ([`drift_series_terms`],
//! [`diffusion_series_terms`]); `hasme` and `hasme-exact` are its closed forms, computed
//! through one symmetric eigendecomposition of `H` per call (`φ` has eigenvalues
//! `ℓ(p_i)`, `ψ` has `ℓ(p_i²)`, `L_ij = ℓ(p_i p_j)`, `p_i = 1 − ηλ_i`, `Σ̂ = UᵀΣU`).
//! The formulas are written once, in [`ModelWorkspace`]: [`Model::coefficients`] runs
//! them on fresh buffers, a simulator keeps a workspace and calls
//! [`ModelWorkspace::evaluate`] at every step without allocating; each picks the
//! [`Arithmetic`] (eigensolver and order of operations) its numbers come from.
//! The weak order of `series:K` is capped at 2 because a diffusion model of SGD is in
//! general weak order 2 at best (the higher moments of the noise are not matched), so
//! the extra terms improve the constant, not the order.
//!
//! Invariants: this module never parses text; it never returns NaN (every failure is a
//! [`ModelError`] naming the point and the quantity); it never clips a non-PSD matrix
//! unless asked to ([`PsdPolicy::Clip`]), and then says so in
//! [`Coefficients::warnings`]. `factor` is always the symmetric PSD square root of
//! `diffusion`, so simulators and exact-moment code read the same numbers.
//!
//! ```
//! use hasme::models::{Local, Model, ModelError, ModelKind};
//! use nalgebra::{DMatrix, DVector};
//!
//! // f(x) = x₁²/2 + 2x₂² at x = (0.1, 2), so g = Hx, with isotropic noise Σ = I/4.
//! let local = Local::new(
//!     DVector::from_vec(vec![0.1, 2.0]),
//!     DVector::from_vec(vec![0.1, 8.0]),
//!     DMatrix::from_diagonal(&DVector::from_vec(vec![1.0, 4.0])),
//!     DMatrix::identity(2, 2) * 0.25,
//! )?;
//! let eta = 0.1;
//! let model: ModelKind = "hasme".parse()?;
//! let c = model.coefficients(&local, eta)?;
//!
//! // Along an eigenvector the drift is −ℓ(1 − ηλ)λx = log(1 − ηλ) x/η.
//! assert!((c.drift[1] - (1.0 - eta * 4.0_f64).ln() * 2.0 / eta).abs() < 1e-12);
//! // Γ = ηψΣ here (Σ commutes with H), ψ's eigenvalue being ℓ((1 − ηλ)²).
//! let psi = hasme::models::ell((1.0 - eta * 4.0_f64).powi(2));
//! assert!((c.diffusion[(1, 1)] - eta * psi * 0.25).abs() < 1e-12);
//! // `factor` is the symmetric square root of `diffusion`.
//! assert!((&c.factor * &c.factor - &c.diffusion).norm() < 1e-12);
//! assert!(c.warnings.is_empty());
//!
//! // Outside the domain ηλ_max < 1 the error names λ_max and 1/λ_max.
//! let err = model.coefficients(&local, 0.3).unwrap_err();
//! assert!(matches!(err, ModelError::StepSizeTooLarge { .. }));
//! assert!(err.to_string().contains("1/λ_max = 0.25"));
//! # Ok::<(), ModelError>(())
//! ```

mod ell;
mod error;
pub mod krylov;
pub(crate) mod linalg;
mod local;
pub mod matrix_free;
mod series;
mod spectral;
mod workspace;

use std::fmt;
use std::str::FromStr;

use nalgebra::{DMatrix, DVector};

pub use ell::ell;
pub use error::{ModelError, Point};
pub use local::{Local, SYMMETRY_TOLERANCE};
pub use series::{diffusion_series_terms, drift_series_terms};
pub use spectral::PSD_TOLERANCE;
pub(crate) use workspace::ell_square;
pub use workspace::{Arithmetic, ModelWorkspace, Noise};

use spectral::Psd;

/// A model's coefficients at one point.
#[derive(Debug, Clone, PartialEq)]
pub struct Coefficients {
    /// The drift `b(x)`.
    pub drift: DVector<f64>,
    /// `Γ = σσᵀ`, symmetric positive semidefinite (exactly symmetric).
    pub diffusion: DMatrix<f64>,
    /// `σ`, the symmetric positive semidefinite square root of `Γ`.
    pub factor: DMatrix<f64>,
    /// What was changed to produce these numbers (e.g. a clipped Σ or Γ); empty when
    /// nothing was.
    pub warnings: Vec<String>,
}

/// What to do with a matrix that should be positive semidefinite but is not (beyond
/// round-off, see [`PSD_TOLERANCE`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum PsdPolicy {
    /// Report a [`ModelError`].
    #[default]
    Error,
    /// Continue with the nearest PSD matrix (negative eigenvalues set to 0) and record a
    /// warning in [`Coefficients::warnings`].
    Clip,
}

/// Options of a coefficient computation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct ModelOptions {
    /// Non-PSD Σ or Γ: fail (default) or clip with a warning.
    pub psd: PsdPolicy,
}

/// An SDE model of SGD: coefficients at a point, and the weak order it claims.
pub trait Model {
    /// The model's name as the CLI spells it (`hasme-exact`, `series:3`).
    fn name(&self) -> String;

    /// The weak order in η the model is expected to have (docs/models.md §2, §4).
    fn weak_order(&self) -> u32;

    /// Drift, diffusion and its square root at `local.point` for step size `eta`.
    fn coefficients_with(
        &self,
        local: &Local,
        eta: f64,
        options: &ModelOptions,
    ) -> Result<Coefficients, ModelError>;

    /// [`Model::coefficients_with`] with the default options (fail on non-PSD input).
    fn coefficients(&self, local: &Local, eta: f64) -> Result<Coefficients, ModelError> {
        self.coefficients_with(local, eta, &ModelOptions::default())
    }
}

/// The models of docs/models.md §2, by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum ModelKind {
    /// `gf`: gradient flow, drift `−g`, no noise.
    Gf,
    /// `sme1`: the series truncated at `K = 0`.
    Sme1,
    /// `sme2`: the series truncated at `K = 1`.
    Sme2,
    /// `hasme`: drift `−φ(ηH)g`, diffusion `η ψ^{1/2} Σ ψ^{1/2}`.
    Hasme,
    /// `hasme-exact`: drift `−φ(ηH)g`, diffusion `η ℓ(𝒫)(Σ)` (may be indefinite).
    HasmeExact,
    /// `series:K`: drift terms `k ≤ K`, diffusion terms `k ≤ max(K − 1, 0)`.
    Series(u32),
}

impl ModelKind {
    /// The five named models, in the order of the spec's table.
    pub fn all() -> [ModelKind; 5] {
        [
            ModelKind::Gf,
            ModelKind::Sme1,
            ModelKind::Sme2,
            ModelKind::Hasme,
            ModelKind::HasmeExact,
        ]
    }
}

impl ModelKind {
    /// The truncation order `K` when the model is a truncation of the series:
    /// `sme1` is `series:0`, `sme2` is `series:1`; `None` for `gf` and the closed forms.
    pub fn series_order(&self) -> Option<u32> {
        match *self {
            ModelKind::Sme1 => Some(0),
            ModelKind::Sme2 => Some(1),
            ModelKind::Series(k) => Some(k),
            ModelKind::Gf | ModelKind::Hasme | ModelKind::HasmeExact => None,
        }
    }
}

impl fmt::Display for ModelKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ModelKind::Gf => f.write_str("gf"),
            ModelKind::Sme1 => f.write_str("sme1"),
            ModelKind::Sme2 => f.write_str("sme2"),
            ModelKind::Hasme => f.write_str("hasme"),
            ModelKind::HasmeExact => f.write_str("hasme-exact"),
            ModelKind::Series(k) => write!(f, "series:{k}"),
        }
    }
}

impl FromStr for ModelKind {
    type Err = ModelError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let unknown = || ModelError::UnknownModel { name: s.to_owned() };
        match s {
            "gf" => Ok(ModelKind::Gf),
            "sme1" => Ok(ModelKind::Sme1),
            "sme2" => Ok(ModelKind::Sme2),
            "hasme" => Ok(ModelKind::Hasme),
            "hasme-exact" => Ok(ModelKind::HasmeExact),
            _ => {
                let digits = s.strip_prefix("series:").ok_or_else(unknown)?;
                // Digits only: `u32::from_str` would also take "+3", whose Display
                // would not round-trip.
                if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(unknown());
                }
                digits.parse().map(ModelKind::Series).map_err(|_| unknown())
            }
        }
    }
}

impl TryFrom<String> for ModelKind {
    type Error = ModelError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<ModelKind> for String {
    fn from(kind: ModelKind) -> String {
        kind.to_string()
    }
}

impl Model for ModelKind {
    fn name(&self) -> String {
        self.to_string()
    }

    fn weak_order(&self) -> u32 {
        match self {
            ModelKind::Gf | ModelKind::Sme1 | ModelKind::Series(0) => 1,
            ModelKind::Sme2 | ModelKind::Hasme | ModelKind::HasmeExact | ModelKind::Series(_) => 2,
        }
    }

    fn coefficients_with(
        &self,
        local: &Local,
        eta: f64,
        options: &ModelOptions,
    ) -> Result<Coefficients, ModelError> {
        let mut ws = ModelWorkspace::new(local.dim());
        let warnings = self.coefficients_into(local, eta, options, &mut ws)?;
        // Arithmetic::Qr always forms Γ.
        let (drift, diffusion, factor) = ws.into_parts();
        Ok(Coefficients {
            drift,
            diffusion,
            factor,
            warnings,
        })
    }
}

impl ModelKind {
    /// [`Model::coefficients_with`] into `ws` (of the local data's dimension, results in
    /// [`ModelWorkspace::drift`], [`ModelWorkspace::diffusion`], [`ModelWorkspace::factor`]); returns
    /// the warnings.
    pub(crate) fn coefficients_into(
        &self,
        local: &Local,
        eta: f64,
        options: &ModelOptions,
        ws: &mut ModelWorkspace,
    ) -> Result<Vec<String>, ModelError> {
        check_eta(eta)?;
        let checked = local::check(local)?;
        let point = local.where_();
        let (x, g, h) = (
            local.point.as_slice(),
            local.gradient.as_slice(),
            checked.hessian.as_slice(),
        );
        // The domain of the closed forms is checked before Σ.
        if self.is_spectral() {
            ws.spectrum(eta, Arithmetic::Qr, x, h)?;
        }
        let mut warnings = Vec::new();
        let noise = if *self == ModelKind::Gf {
            None
        } else {
            Some(psd_noise(
                &checked.noise_cov,
                options,
                &point,
                &mut warnings,
            )?)
        };
        // Γ = ηΣ₊ has the square root √η Σ₊^{1/2}: no second eigendecomposition.
        let one_term = self.series_order().map(series::diffusion_term_count) == Some(1);
        let sqrt = noise.as_ref().filter(|_| one_term).map(|n| n.psd.sqrt());
        let noise = noise.as_ref().map(|n| Noise {
            cov: n.matrix.as_slice(),
            sqrt: sqrt.as_ref().map(|s| s.as_slice()),
        });
        ws.finish(
            *self,
            eta,
            Arithmetic::Qr,
            x,
            g,
            h,
            noise,
            options.psd,
            &mut warnings,
        )?;
        Ok(warnings)
    }
}

/// The `hasme-exact` diffusion `Γ = η U (Σ̂ ∘ L) Uᵀ` as it is, possibly indefinite and
/// with Σ not checked for positive semidefiniteness: what exact-moment code needs
/// (Gaussian moments stay well defined with an indefinite Γ, docs/models.md §2–3).
///
/// Errors: an invalid η or [`Local`], and the domain `ηλ_max < 1`.
///
/// ```
/// use hasme::models::{Local, hasme_exact_gamma};
/// use nalgebra::{DMatrix, DVector};
///
/// // The spec's indefinite example: η = 0.1, λ = (1, 5), Σ̂ = [[1, 0.999], [0.999, 1]].
/// let local = Local::new(
///     DVector::zeros(2),
///     DVector::zeros(2),
///     DMatrix::from_diagonal(&DVector::from_vec(vec![1.0, 5.0])),
///     DMatrix::from_row_slice(2, 2, &[1.0, 0.999, 0.999, 1.0]),
/// )?;
/// let gamma = hasme_exact_gamma(&local, 0.1)?;
/// let smallest = gamma.symmetric_eigenvalues().min();
/// assert!((smallest + 1.8e-3).abs() < 1e-4);
/// # Ok::<(), hasme::models::ModelError>(())
/// ```
pub fn hasme_exact_gamma(local: &Local, eta: f64) -> Result<DMatrix<f64>, ModelError> {
    check_eta(eta)?;
    let checked = local::check(local)?;
    let mut ws = ModelWorkspace::new(local.dim());
    let x = local.point.as_slice();
    ws.spectrum(eta, Arithmetic::Qr, x, checked.hessian.as_slice())?;
    ws.exact_diffusion(eta, Arithmetic::Qr, checked.noise_cov.as_slice());
    let gamma = ws.diffusion().expect("the closed forms form Γ");
    finite_or_overflow(gamma.iter(), "the diffusion Γ", local)?;
    Ok(gamma.clone())
}

/// η must be finite and positive.
pub(crate) fn check_eta(eta: f64) -> Result<(), ModelError> {
    if eta.is_finite() && eta > 0.0 {
        Ok(())
    } else {
        Err(ModelError::InvalidStepSize { eta })
    }
}

/// An output with an infinite or NaN entry becomes [`ModelError::Overflow`]: the inputs
/// were finite (checked), so only overflow can have produced it.
pub(crate) fn finite_or_overflow<'a>(
    mut entries: impl Iterator<Item = &'a f64>,
    quantity: &'static str,
    local: &Local,
) -> Result<(), ModelError> {
    if entries.all(|x| x.is_finite()) {
        Ok(())
    } else {
        Err(ModelError::Overflow {
            quantity,
            point: local.where_(),
        })
    }
}

/// Σ made usable: itself when PSD up to round-off, else clipped (with a warning) or an
/// error, per the policy. Keeps Σ's spectrum for its square root.
struct UsableNoise {
    matrix: DMatrix<f64>,
    psd: Psd,
}

fn psd_noise(
    noise_cov: &DMatrix<f64>,
    options: &ModelOptions,
    point: &Point,
    warnings: &mut Vec<String>,
) -> Result<UsableNoise, ModelError> {
    let psd = Psd::new(noise_cov, "the noise covariance", point)?;
    if psd.is_psd() {
        return Ok(UsableNoise {
            matrix: noise_cov.clone(),
            psd,
        });
    }
    match options.psd {
        PsdPolicy::Error => Err(ModelError::NoiseNotPsd {
            min_eigenvalue: psd.min,
            scale: psd.scale,
            point: point.clone(),
        }),
        PsdPolicy::Clip => {
            warnings.push(format!(
                "the noise covariance Σ at {point} is not positive semidefinite (smallest \
                 eigenvalue {}, largest |eigenvalue| {}): clipped to the nearest PSD matrix \
                 (negative eigenvalues set to 0)",
                psd.min, psd.scale
            ));
            Ok(UsableNoise {
                matrix: psd.clipped(),
                psd,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local() -> Local {
        Local::new(
            DVector::from_vec(vec![0.1, 2.0]),
            DVector::from_vec(vec![1.0, -0.5]),
            DMatrix::from_row_slice(2, 2, &[2.0, 0.5, 0.5, -1.0]),
            DMatrix::from_row_slice(2, 2, &[0.3, 0.1, 0.1, 0.2]),
        )
        .expect("a valid local")
    }

    #[test]
    fn names_round_trip() {
        for kind in ModelKind::all()
            .into_iter()
            .chain([ModelKind::Series(0), ModelKind::Series(17)])
        {
            assert_eq!(kind.to_string().parse::<ModelKind>(), Ok(kind));
        }
        for bad in [
            "",
            "SME1",
            "series:",
            "series:+3",
            "series:-1",
            "series:x",
            "hasme_exact",
        ] {
            let err = bad.parse::<ModelKind>().expect_err(bad);
            assert!(err.to_string().contains("hasme-exact"), "{err}");
        }
    }

    #[test]
    fn serde_uses_the_names() {
        let json = serde_json::to_string(&ModelKind::Series(3)).expect("serialise");
        assert_eq!(json, "\"series:3\"");
        let back: ModelKind = serde_json::from_str("\"hasme-exact\"").expect("deserialise");
        assert_eq!(back, ModelKind::HasmeExact);
        assert!(serde_json::from_str::<ModelKind>("\"sgd\"").is_err());
    }

    #[test]
    fn weak_orders() {
        let orders: Vec<u32> = ModelKind::all().iter().map(Model::weak_order).collect();
        assert_eq!(orders, [1, 1, 2, 2, 2]);
        assert_eq!(ModelKind::Series(0).weak_order(), 1);
        assert_eq!(ModelKind::Series(5).weak_order(), 2);
    }

    #[test]
    fn gf_has_no_noise_and_needs_no_psd_sigma() {
        let mut l = local();
        l.noise_cov = -DMatrix::identity(2, 2);
        let c = ModelKind::Gf.coefficients(&l, 0.1).expect("gf ignores Σ");
        assert_eq!(c.drift, -&l.gradient);
        assert_eq!(c.diffusion, DMatrix::zeros(2, 2));
    }

    #[test]
    fn invalid_step_sizes() {
        for eta in [0.0, -0.1, f64::NAN, f64::INFINITY] {
            for kind in ModelKind::all() {
                let err = kind.coefficients(&local(), eta).expect_err("invalid η");
                assert!(
                    matches!(err, ModelError::InvalidStepSize { .. }),
                    "{kind}: {err}"
                );
            }
        }
    }

    #[test]
    fn factor_squares_to_diffusion() {
        for kind in ModelKind::all().into_iter().chain([ModelKind::Series(4)]) {
            let c = kind.coefficients(&local(), 0.1).expect("in the domain");
            // 1e−14: two products of O(1) matrices at d = 2.
            assert!(
                (&c.factor * &c.factor - &c.diffusion).norm() < 1e-14,
                "{kind}"
            );
            assert_eq!(c.diffusion, c.diffusion.transpose(), "{kind}");
        }
    }

    #[test]
    fn overflow_is_an_error_not_nan() {
        let mut l = local();
        l.hessian *= 1e200;
        l.gradient *= 1e200;
        for kind in [ModelKind::Sme2, ModelKind::Series(3)] {
            let err = kind.coefficients(&l, 1e-3).expect_err("overflow");
            assert!(matches!(err, ModelError::Overflow { .. }), "{kind}: {err}");
        }
    }
}
