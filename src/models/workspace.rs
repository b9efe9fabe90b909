//! Every model's coefficients at one point, computed once for all callers on reusable
//! buffers (docs/models.md §2): `gf` (drift `−g`), the series truncations `series:K`
//! (`sme1 = series:0`, `sme2 = series:1`: drift `−Σ_{k≤K} (ηH)^k g/(k+1)`, diffusion
//! `η Σ_{k<max(K,1)} 𝒬^k(Σ)/(k+1)`), and the closed forms through `H = U diag(λ) Uᵀ`,
//! `p_i = 1 − ηλ_i`: drift `−U diag(ℓ(p_i)) Uᵀ g`, diffusion `η U (Σ̂ ∘ W) Uᵀ` with
//! `Σ̂ = UᵀΣU` and `W_ij = ℓ(p_i²)^{1/2} ℓ(p_j²)^{1/2}` (`hasme`) or `ℓ(p_i p_j)`
//! (`hasme-exact`); then `σ = Γ^{1/2}` after the positive semidefinite check of Γ.
//!
//! [`Model::coefficients`](super::Model::coefficients) runs this code on a fresh
//! [`ModelWorkspace`], the simulator keeps one per worker and model (no allocation per
//! point). The formulas, their order of operations, domain checks and errors are one;
//! what the caller chooses is the [`Arithmetic`] of the linear algebra underneath, which
//! fixes the last bits of the results (every command's output is reproducible to the
//! bit, so each caller keeps the arithmetic its numbers have always come from).

use nalgebra::{DMatrix, DMatrixView, DVector, DVectorView};

use super::ell::ell_pq;
use super::error::{ModelError, Point};
use super::linalg::{
    EigenScratch, mul, mul_vec, sym_eigen, sym_sqrt, symmetrise, tr_mul, tr_mul_tr, tr_mul_vec,
};
use super::spectral::{PSD_TOLERANCE, Psd, eigen, symmetric_part};
use super::{ModelKind, PsdPolicy, series};

/// The linear algebra a coefficient computation runs on. Both compute the same
/// formulas to round-off (agreement to 1e−11 relative is tested); they differ in the
/// last bits, so each caller keeps one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arithmetic {
    /// nalgebra's tridiagonal QR eigensolver and products (blocked above 5×5), `ηH`
    /// formed before it multiplies, and each weight `ℓ(p_i p_j)` from its own `q` formed
    /// with one rounding: what [`Model::coefficients`](super::Model::coefficients)
    /// gives (`derive`, `moments`, the simulator above
    /// `JACOBI_MAX_DIM` = 16). Allocates per call.
    Qr,
    /// Cyclic Jacobi rotations and products summed in index order, `η` applied
    /// after each product with `H` (d multiplications instead of d² per term), and
    /// `ℓ(p_i²) = 2ℓ(p_i)/(1 + p_i)` from the drift's `ℓ(p_i)` (one logarithm per
    /// eigenvalue): what the simulator steps with up to `JACOBI_MAX_DIM`, and what its
    /// closed forms at d ≤ 2 write out lane by lane. No allocation.
    Jacobi,
}

/// Σ at the point, as the diffusion reads it.
#[derive(Debug, Clone, Copy)]
pub struct Noise<'a> {
    /// Σ, row-major `d×d`, positive semidefinite (checked by the caller).
    pub cov: &'a [f64],
    /// `Σ^{1/2}` when the caller knows it (row-major): then the one-term diffusion `ηΣ`
    /// has the factor `√η Σ^{1/2}` without another eigendecomposition.
    pub sqrt: Option<&'a [f64]>,
}

/// Which error an indefinite Γ is.
enum Indefinite {
    /// `hasme-exact`: no real diffusion reproduces SGD exactly.
    Exact,
    /// Any other model.
    Other,
}

/// Reusable buffers for model coefficients at points of dimension `d`, and the last
/// results: [`ModelWorkspace::drift`], [`ModelWorkspace::diffusion`], [`ModelWorkspace::factor`]
/// (column-major, the two matrices symmetric).
#[derive(Debug, Clone)]
pub struct ModelWorkspace {
    drift: DVector<f64>,
    gamma: DMatrix<f64>,
    factor: DMatrix<f64>,
    /// The eigenvectors of H (columns) and `x_i = ηλ_i`, `ℓ(p_i)`.
    u: DMatrix<f64>,
    x: DVector<f64>,
    ells: DVector<f64>,
    m1: DMatrix<f64>,
    m2: DMatrix<f64>,
    m3: DMatrix<f64>,
    v1: DVector<f64>,
    v2: DVector<f64>,
    eigen: EigenScratch,
    /// Whether Γ and σ hold zeros (set by a computation without noise).
    zero_noise: bool,
    /// Whether the last computation formed Γ.
    gamma_formed: bool,
}

impl ModelWorkspace {
    /// Buffers for points of dimension `d`.
    pub fn new(d: usize) -> ModelWorkspace {
        let m = || DMatrix::zeros(d, d);
        let v = || DVector::zeros(d);
        ModelWorkspace {
            drift: v(),
            gamma: m(),
            factor: m(),
            u: m(),
            x: v(),
            ells: v(),
            m1: m(),
            m2: m(),
            m3: m(),
            v1: v(),
            v2: v(),
            // Allocated by the first Jacobi square root, so Qr calls (a fresh workspace
            // each) do not pay for it.
            eigen: EigenScratch::default(),
            zero_noise: true,
            gamma_formed: true,
        }
    }

    /// The dimension the buffers are for.
    pub fn dim(&self) -> usize {
        self.drift.len()
    }

    /// Drift, Γ and σ of the last computation, moved out (Γ zero if not formed).
    pub(crate) fn into_parts(self) -> (DVector<f64>, DMatrix<f64>, DMatrix<f64>) {
        (self.drift, self.gamma, self.factor)
    }

    /// The drift of the last computation.
    pub fn drift(&self) -> &DVector<f64> {
        &self.drift
    }

    /// The diffusion Γ of the last computation (zero without noise); `None` after an
    /// [`Arithmetic::Jacobi`] one of a one-term series given `Σ^{1/2}`, which forms σ
    /// alone.
    pub fn diffusion(&self) -> Option<&DMatrix<f64>> {
        self.gamma_formed.then_some(&self.gamma)
    }

    /// The factor σ = Γ^{1/2} of the last computation (zero without noise).
    pub fn factor(&self) -> &DMatrix<f64> {
        &self.factor
    }

    /// `kind`'s drift, diffusion and factor at `point` from `g`, `H` (row-major) and
    /// the noise (none: Σ = 0), into the workspace; returns whether the diffusion is
    /// nonzero. Inputs are taken as checked (finite, `d`-dimensional, Σ positive
    /// semidefinite, and exactly symmetric for [`Arithmetic::Qr`]); an indefinite Γ is
    /// an error (`hasme-exact`, or a series whose η‖H‖ is not small).
    ///
    /// For `d` = 1 and 2 the sequential arithmetic runs with the dimension a constant
    /// (loops unrolled, bounds checks gone: measured 2× faster at d = 2).
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    pub fn evaluate(
        &mut self,
        kind: ModelKind,
        eta: f64,
        arithmetic: Arithmetic,
        point: &[f64],
        g: &[f64],
        h: &[f64],
        noise: Option<Noise<'_>>,
    ) -> Result<bool, ModelError> {
        // Each arm a copy with the arithmetic (and d = 1, 2) a constant.
        let jacobi = (kind, eta, Arithmetic::Jacobi, point, g, h, noise);
        match (arithmetic, point.len()) {
            (Arithmetic::Jacobi, 1) => self.evaluate_in(1, jacobi),
            (Arithmetic::Jacobi, 2) => self.evaluate_in(2, jacobi),
            (Arithmetic::Jacobi, d) => self.evaluate_in(d, jacobi),
            (Arithmetic::Qr, d) => {
                self.evaluate_in(d, (kind, eta, Arithmetic::Qr, point, g, h, noise))
            }
        }
    }

    #[allow(clippy::type_complexity)]
    #[inline(always)]
    fn evaluate_in(
        &mut self,
        d: usize,
        (kind, eta, arithmetic, point, g, h, noise): (
            ModelKind,
            f64,
            Arithmetic,
            &[f64],
            &[f64],
            &[f64],
            Option<Noise<'_>>,
        ),
    ) -> Result<bool, ModelError> {
        if kind.is_spectral() {
            self.spectrum_in(d, eta, arithmetic, point, h)?;
        }
        self.finish_in(
            d,
            kind,
            eta,
            arithmetic,
            point,
            g,
            h,
            noise,
            PsdPolicy::Error,
            &mut Vec::new(),
        )
    }

    /// The spectral step of `hasme` and `hasme-exact`: `H = U diag(λ) Uᵀ` and the domain
    /// `ηλ_max < 1` (every `p_i > 0`), checked before anything else is computed.
    pub(crate) fn spectrum(
        &mut self,
        eta: f64,
        arithmetic: Arithmetic,
        point: &[f64],
        h: &[f64],
    ) -> Result<(), ModelError> {
        self.spectrum_in(point.len(), eta, arithmetic, point, h)
    }

    #[inline(always)]
    fn spectrum_in(
        &mut self,
        d: usize,
        eta: f64,
        arithmetic: Arithmetic,
        point: &[f64],
        h: &[f64],
    ) -> Result<(), ModelError> {
        let lambda_max = match arithmetic {
            Arithmetic::Qr => {
                let hessian = DMatrix::from_column_slice(d, d, &h[..d * d]);
                let e = eigen(hessian, "the Hessian", &Point::from_slice(point))?;
                self.u.copy_from(&e.eigenvectors);
                self.x.copy_from(&(&e.eigenvalues * eta));
                e.eigenvalues.max()
            }
            Arithmetic::Jacobi => {
                let (a, u) = (self.m1.as_mut_slice(), self.u.as_mut_slice());
                a.copy_from_slice(&h[..d * d]);
                symmetrise(d, a);
                sym_eigen(d, a, u, self.x.as_mut_slice()).map_err(|_| ModelError::EigenFailed {
                    quantity: "the Hessian",
                    reason: "no convergence within the iteration budget",
                    point: Point::from_slice(point),
                })?;
                // `sym_eigen` writes the eigenvectors row-major: the buffer holds Uᵀ,
                // which the products below read as such.
                let lambda_max = self.x.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                for x in self.x.iter_mut() {
                    *x *= eta;
                }
                lambda_max
            }
        };
        let product = eta * lambda_max;
        // η and λ_max are finite, so the product is finite or ±inf, never NaN; +inf is
        // outside the domain too.
        if product >= 1.0 {
            return Err(ModelError::StepSizeTooLarge {
                lambda_max,
                eta,
                product,
                inverse_lambda_max: 1.0 / lambda_max,
                point: Point::from_slice(point),
            });
        }
        for i in 0..d {
            let p = 1.0 - self.x[i];
            self.ells[i] = match arithmetic {
                // q = −x_i exactly, while p_i is rounded: ell_pq reads q near p = 1.
                Arithmetic::Qr => ell_pq(p, -self.x[i]),
                // ℓ of the rounded p, as the closed forms' lanes compute it.
                Arithmetic::Jacobi => ell_pq(p, p - 1.0),
            };
        }
        Ok(())
    }

    /// Everything after [`ModelWorkspace::spectrum`] (which the closed forms need first):
    /// drift, Γ and σ, with the output checks. `policy` says what an indefinite Γ
    /// becomes; a clipped one is recorded in `warnings`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn finish(
        &mut self,
        kind: ModelKind,
        eta: f64,
        arithmetic: Arithmetic,
        point: &[f64],
        g: &[f64],
        h: &[f64],
        noise: Option<Noise<'_>>,
        policy: PsdPolicy,
        warnings: &mut Vec<String>,
    ) -> Result<bool, ModelError> {
        let d = point.len();
        self.finish_in(
            d, kind, eta, arithmetic, point, g, h, noise, policy, warnings,
        )
    }

    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn finish_in(
        &mut self,
        d: usize,
        kind: ModelKind,
        eta: f64,
        arithmetic: Arithmetic,
        point: &[f64],
        g: &[f64],
        h: &[f64],
        noise: Option<Noise<'_>>,
        policy: PsdPolicy,
        warnings: &mut Vec<String>,
    ) -> Result<bool, ModelError> {
        let noise = noise.filter(|_| kind != ModelKind::Gf);
        if kind == ModelKind::Gf {
            for (b, gi) in self.drift.as_mut_slice().iter_mut().zip(g) {
                *b = -gi;
            }
        } else if kind.is_spectral() {
            self.spectral_drift(d, arithmetic, g);
        } else {
            let order = kind.series_order().unwrap_or(0) as usize;
            self.series_drift(d, eta, arithmetic, order, g, h);
        }
        self.gamma_formed = true;
        // Whether Γ is formed and not yet checked finite (`factor_of_gamma` checks it).
        let mut gamma_unchecked = false;
        let noisy = match noise {
            None => {
                if !self.zero_noise {
                    self.gamma.fill(0.0);
                    self.factor.fill(0.0);
                    self.zero_noise = true;
                }
                false
            }
            Some(noise) => {
                self.zero_noise = false;
                let which = if kind == ModelKind::HasmeExact {
                    Indefinite::Exact
                } else {
                    Indefinite::Other
                };
                let terms = kind.series_order().map(series::diffusion_term_count);
                if kind.is_spectral() {
                    self.spectral_diffusion(d, eta, arithmetic, kind, noise.cov);
                } else if arithmetic == Arithmetic::Jacobi
                    && terms == Some(1)
                    && noise.sqrt.is_some()
                {
                    // The simulator reads σ alone: Γ = ηΣ is not formed (d² products
                    // and checks per step that nothing would read).
                    self.gamma_formed = false;
                } else {
                    self.series_diffusion(d, eta, arithmetic, terms.unwrap_or(1), h, noise.cov);
                }
                match (terms, noise.sqrt) {
                    (Some(1), Some(sqrt)) => {
                        // Γ = ηΣ: its square root is √η Σ^{1/2}.
                        gamma_unchecked = self.gamma_formed;
                        let s = eta.sqrt();
                        for (f, r) in self.factor.as_mut_slice().iter_mut().zip(sqrt) {
                            *f = s * r;
                        }
                    }
                    _ => {
                        self.factor_of_gamma(d, arithmetic, kind, which, point, policy, warnings)?
                    }
                }
                true
            }
        };
        let overflow = |quantity| ModelError::Overflow {
            quantity,
            point: Point::from_slice(point),
        };
        let finite = |m: &[f64]| m.iter().all(|v| v.is_finite());
        if !finite(self.drift.as_slice()) {
            return Err(overflow("the drift"));
        }
        if gamma_unchecked && !finite(self.gamma.as_slice()) {
            return Err(overflow("the diffusion Γ"));
        }
        if noisy && !finite(self.factor.as_slice()) {
            return Err(overflow("the diffusion factor σ"));
        }
        Ok(noisy)
    }

    /// `−U diag(ℓ(p_i)) Uᵀ g`.
    #[inline(always)]
    fn spectral_drift(&mut self, d: usize, arithmetic: Arithmetic, g: &[f64]) {
        match arithmetic {
            Arithmetic::Qr => {
                self.u
                    .tr_mul_to(&DVectorView::from_slice(g, d), &mut self.v1);
            }
            // `u` holds Uᵀ (`Workspace::spectrum`).
            Arithmetic::Jacobi => mul_vec(d, self.u.as_slice(), g, self.v1.as_mut_slice()),
        }
        for i in 0..d {
            self.v1[i] *= -self.ells[i];
        }
        match arithmetic {
            Arithmetic::Qr => self.drift.gemv(1.0, &self.u, &self.v1, 0.0),
            Arithmetic::Jacobi => tr_mul_vec(
                d,
                self.u.as_slice(),
                self.v1.as_slice(),
                self.drift.as_mut_slice(),
            ),
        }
    }

    /// `Γ = η U ((UᵀΣU) ∘ W) Uᵀ`, W the `hasme` or `hasme-exact` weights.
    #[inline(always)]
    fn spectral_diffusion(
        &mut self,
        d: usize,
        eta: f64,
        arithmetic: Arithmetic,
        kind: ModelKind,
        cov: &[f64],
    ) {
        // Σ̂ = UᵀΣU into m1 (Σ as given, row-major: Σ_ik is cov[i·d + k]).
        match arithmetic {
            Arithmetic::Qr => {
                DMatrixView::from_slice(&cov[..d * d], d, d).mul_to(&self.u, &mut self.m2);
                self.u.tr_mul_to(&self.m2, &mut self.m1);
            }
            Arithmetic::Jacobi => {
                // `u` holds Uᵀ: ΣU = cov·(Uᵀ)ᵀ, then Uᵀ(ΣU).
                tr_mul_tr(d, cov, self.u.as_slice(), self.m2.as_mut_slice());
                mul(
                    d,
                    self.u.as_slice(),
                    self.m2.as_slice(),
                    self.m1.as_mut_slice(),
                );
            }
        }
        let p = |x: f64| 1.0 - x;
        // ℓ(p_i²): the diagonal weights of both models.
        for i in 0..d {
            let pi = p(self.x[i]);
            self.v2[i] = match arithmetic {
                Arithmetic::Qr => ell_of_product(pi, pi),
                Arithmetic::Jacobi => ell_square(self.ells[i], pi),
            };
        }
        let (hat, diagonal) = (self.m1.as_mut_slice(), self.v2.as_mut_slice());
        if kind == ModelKind::HasmeExact {
            // L_ij = ℓ(p_i p_j), symmetric (both forms are symmetric in i, j to the
            // bit): one logarithm per pair.
            for j in 0..d {
                for i in 0..=j {
                    let w = if i == j {
                        diagonal[i]
                    } else {
                        let (pi, pj) = (p(self.x[i]), p(self.x[j]));
                        match arithmetic {
                            Arithmetic::Qr => ell_of_product(pi, pj),
                            Arithmetic::Jacobi => {
                                let q = pi * pj;
                                ell_pq(q, q - 1.0)
                            }
                        }
                    };
                    let w = eta * w;
                    hat[j * d + i] *= w;
                    if i != j {
                        hat[i * d + j] *= w;
                    }
                }
            }
        } else {
            // s_i = ℓ(p_i²)^{1/2}, weights s_i s_j.
            for s in diagonal.iter_mut() {
                *s = s.sqrt();
            }
            for j in 0..d {
                for i in 0..d {
                    hat[j * d + i] *= eta * (diagonal[i] * diagonal[j]);
                }
            }
        }
        // Γ = U Σ̂∘W Uᵀ, made exactly symmetric.
        match arithmetic {
            Arithmetic::Qr => {
                self.u.mul_to(&self.m1, &mut self.m2);
                self.u.transpose_to(&mut self.m3);
                self.m2.mul_to(&self.m3, &mut self.gamma);
                self.gamma = symmetric_part(&self.gamma);
            }
            Arithmetic::Jacobi => {
                // `u` holds Uᵀ: U·Σ̂∘W = (Uᵀ)ᵀ·Σ̂∘W, then times (Uᵀ).
                tr_mul(
                    d,
                    self.u.as_slice(),
                    self.m1.as_slice(),
                    self.m2.as_mut_slice(),
                );
                mul(
                    d,
                    self.m2.as_slice(),
                    self.u.as_slice(),
                    self.gamma.as_mut_slice(),
                );
                symmetrise(d, self.gamma.as_mut_slice());
            }
        }
    }

    /// The drift terms `k = 0..=order`, summed: `−g − Σ_{k≥1} (ηH)^k g/(k + 1)`.
    #[inline(always)]
    fn series_drift(
        &mut self,
        d: usize,
        eta: f64,
        arithmetic: Arithmetic,
        order: usize,
        g: &[f64],
        h: &[f64],
    ) {
        self.v1.as_mut_slice().copy_from_slice(&g[..d]);
        for (b, gi) in self.drift.as_mut_slice().iter_mut().zip(g) {
            *b = -gi;
        }
        if order > 0 && arithmetic == Arithmetic::Qr {
            series::scaled_hessian(d, eta, h, &mut self.m3);
        }
        for k in 1..=order {
            series::next_drift_power(d, eta, arithmetic, h, &self.m3, &mut self.v1, &mut self.v2);
            let c = -1.0 / (k as f64 + 1.0);
            let (drift, v) = (self.drift.as_mut_slice(), self.v1.as_slice());
            for i in 0..d {
                drift[i] += v[i] * c;
            }
        }
    }

    /// The diffusion terms `k = 0..terms`, summed: `η Σ_k 𝒬^k(Σ)/(k + 1)`.
    #[inline(always)]
    fn series_diffusion(
        &mut self,
        d: usize,
        eta: f64,
        arithmetic: Arithmetic,
        terms: usize,
        h: &[f64],
        cov: &[f64],
    ) {
        // Γ = ηΣ and S = Σ, in Σ's memory order: the Jacobi products read them
        // row-major as given (a Σ may keep a round-off asymmetry), and `sym_sqrt` reads
        // Γ so; Qr's Σ is exactly symmetric.
        let (s, gamma) = (self.m1.as_mut_slice(), self.gamma.as_mut_slice());
        for (g_, c) in gamma.iter_mut().zip(&cov[..d * d]) {
            *g_ = c * eta;
        }
        if terms > 1 {
            s.copy_from_slice(&cov[..d * d]);
        }
        if terms > 1 && arithmetic == Arithmetic::Qr {
            series::scaled_hessian(d, eta, h, &mut self.m3);
        }
        for k in 1..terms {
            series::next_diffusion_power(
                d,
                eta,
                arithmetic,
                h,
                &self.m3,
                &mut self.m1,
                [&mut self.m2, &mut self.factor],
            );
            let c = eta / (k as f64 + 1.0);
            for (g_, s) in self.gamma.as_mut_slice().iter_mut().zip(self.m1.as_slice()) {
                *g_ += s * c;
            }
        }
    }

    /// `σ = Γ^{1/2}` after the positive semidefinite check of Γ (round-off below
    /// [`PSD_TOLERANCE`] counts as 0): an indefinite Γ is an error or, under
    /// [`PsdPolicy::Clip`], clipped with a warning.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn factor_of_gamma(
        &mut self,
        d: usize,
        arithmetic: Arithmetic,
        kind: ModelKind,
        which: Indefinite,
        point: &[f64],
        policy: PsdPolicy,
        warnings: &mut Vec<String>,
    ) -> Result<(), ModelError> {
        let at = || Point::from_slice(point);
        let (min, scale) = match arithmetic {
            Arithmetic::Qr => {
                let psd = Psd::new(&self.gamma, "the diffusion Γ", &at())?;
                if psd.is_psd() {
                    self.factor.copy_from(&psd.sqrt());
                    return Ok(());
                }
                if policy == PsdPolicy::Clip {
                    let model = kind.to_string();
                    let consequence = if kind == ModelKind::HasmeExact {
                        "; no real diffusion reproduces SGD exactly at this point"
                    } else {
                        ""
                    };
                    warnings.push(format!(
                        "the {model} diffusion Γ at {} is indefinite (smallest eigenvalue {}, \
                         largest |eigenvalue| {}): clipped to the nearest PSD matrix (negative \
                         eigenvalues set to 0){consequence}",
                        at(),
                        psd.min,
                        psd.scale
                    ));
                    self.gamma.copy_from(&psd.clipped());
                    self.factor.copy_from(&psd.sqrt());
                    return Ok(());
                }
                (psd.min, psd.scale)
            }
            Arithmetic::Jacobi => {
                if !self.gamma.as_slice().iter().all(|v| v.is_finite()) {
                    return Err(ModelError::Overflow {
                        quantity: "the diffusion Γ",
                        point: at(),
                    });
                }
                if self.eigen.w.len() != d {
                    self.eigen = EigenScratch::new(d);
                }
                // A series Γ is in Σ's (row-major) memory order, as `sym_sqrt` reads.
                let spread = sym_sqrt(
                    d,
                    self.gamma.as_slice(),
                    PSD_TOLERANCE,
                    &mut self.eigen,
                    self.factor.as_mut_slice(),
                )
                .map_err(|_| ModelError::EigenFailed {
                    quantity: "the diffusion Γ",
                    reason: "no convergence within the iteration budget",
                    point: at(),
                })?;
                if spread.min >= -PSD_TOLERANCE * spread.scale {
                    return Ok(());
                }
                if policy == PsdPolicy::Clip {
                    unreachable!("PsdPolicy::Clip runs Arithmetic::Qr")
                }
                (spread.min, spread.scale)
            }
        };
        Err(match which {
            Indefinite::Exact => ModelError::ExactDiffusionIndefinite {
                min_eigenvalue: min,
                scale,
                point: at(),
            },
            Indefinite::Other => ModelError::DiffusionIndefinite {
                model: kind.to_string(),
                min_eigenvalue: min,
                scale,
                point: at(),
            },
        })
    }

    /// The `hasme-exact` Γ alone, possibly indefinite, after [`ModelWorkspace::spectrum`].
    pub(crate) fn exact_diffusion(&mut self, eta: f64, arithmetic: Arithmetic, cov: &[f64]) {
        let d = self.dim();
        self.spectral_diffusion(d, eta, arithmetic, ModelKind::HasmeExact, cov);
        self.gamma_formed = true;
    }
}

/// `ℓ(p_i p_j)` with `q = p_i p_j − 1` formed with one rounding: q has absolute error
/// ≲ ε(1 + p_i p_j), which moves ℓ by no more than that (|ℓ'| ≤ 1/2 near q = 0),
/// whatever the cancellation in q.
fn ell_of_product(pi: f64, pj: f64) -> f64 {
    ell_pq(pi * pj, pi.mul_add(pj, -1.0))
}

/// `ℓ(p²) = 2ℓ(p)/(1 + p)` from `ℓ(p)` (as `log p² = 2 log p` and
/// `p² − 1 = (p − 1)(p + 1)`): one logarithm per eigenvalue serves both the drift's φ
/// and the diffusion's ψ, and `1 + p > 1` loses nothing.
#[inline]
pub(crate) fn ell_square(ell_p: f64, p: f64) -> f64 {
    2.0 * ell_p / (1.0 + p)
}

impl ModelKind {
    /// Whether the model is a closed form through H's eigendecomposition.
    pub(crate) fn is_spectral(&self) -> bool {
        matches!(self, ModelKind::Hasme | ModelKind::HasmeExact)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Row-major symmetric `d×d` from the first `d²` entries (lower triangle mirrored).
    fn symmetric(d: usize, entries: &[f64]) -> Vec<f64> {
        let mut a = vec![0.0; d * d];
        for i in 0..d {
            for j in 0..=i {
                a[i * d + j] = entries[i * d + j];
                a[j * d + i] = entries[i * d + j];
            }
        }
        a
    }

    fn max_abs(a: &[f64]) -> f64 {
        a.iter().fold(1e-300f64, |m, v| m.max(v.abs()))
    }

    proptest! {
        /// The two arithmetics compute the same coefficients, or fail the same way, for
        /// every model at random points of dimension 1–7 (indefinite H), inside and
        /// outside the domains.
        #[test]
        fn jacobi_and_qr_agree(
            d in 1usize..8,
            h in prop::collection::vec(-3.0f64..3.0, 49),
            b in prop::collection::vec(-1.0f64..1.0, 49),
            g in prop::collection::vec(-2.0f64..2.0, 7),
            eta in 0.01f64..0.4,
        ) {
            // ‖H‖ ≲ 3: η‖H‖ mostly inside the domains, sometimes beyond them.
            let h: Vec<f64> = symmetric(d, &h).iter().map(|v| v / d as f64).collect();
            // Σ = BBᵀ, positive semidefinite by construction (row-major, symmetric).
            let mut cov = vec![0.0; d * d];
            for i in 0..d {
                for j in 0..d {
                    cov[i * d + j] = (0..d).map(|k| b[i * d + k] * b[j * d + k]).sum();
                }
            }
            let cov = symmetric(d, &cov);
            let (x, g) = (vec![0.5; d], &g[..d]);
            let noise = Some(Noise { cov: &cov, sqrt: None });
            for kind in ModelKind::all().into_iter().chain([ModelKind::Series(3)]) {
                let (mut jacobi, mut qr) = (ModelWorkspace::new(d), ModelWorkspace::new(d));
                let a = jacobi.evaluate(kind, eta, Arithmetic::Jacobi, &x, g, &h, noise);
                let b = qr.evaluate(kind, eta, Arithmetic::Qr, &x, g, &h, noise);
                match (a, b) {
                    (Ok(a), Ok(b)) => {
                        prop_assert_eq!(a, b);
                        // 1e−11 relative: two backward-stable eigensolvers differ by a
                        // few hundred ulps of ‖H‖ at d < 8.
                        let (u, v) = (jacobi.drift().as_slice(), qr.drift().as_slice());
                        let scale = max_abs(v);
                        for (p, q) in u.iter().zip(v) {
                            prop_assert!((p - q).abs() <= 1e-11 * scale, "{kind}: {u:?} vs {v:?}");
                        }
                        // The factor is the square root of Γ, which amplifies those
                        // differences by its condition: ‖√A − √B‖ ≤ ‖A − B‖/(√λ_min(A) +
                        // √λ_min(B)), and never more than ‖A − B‖^{1/2}. With ‖A − B‖ ≤
                        // 1e−13‖Γ‖ (a few hundred ulps), the bound below follows; for a
                        // well-conditioned Γ it is the drift's 1e−11.
                        let (fa, fb) = (jacobi.factor(), qr.factor());
                        let scale = max_abs(fb.as_slice());
                        let gamma = fb * fb.transpose();
                        let norm = max_abs(gamma.as_slice()) * d as f64;
                        let low = if gamma.nrows() > 0 {
                            gamma.clone().symmetric_eigenvalues().min().max(0.0)
                        } else {
                            0.0
                        };
                        let delta = 1e-13 * norm;
                        let tol = 1e-11 * scale + (delta / (2.0 * low.sqrt())).min(delta.sqrt());
                        for (p, q) in fa.iter().zip(fb.iter()) {
                            prop_assert!((p - q).abs() <= tol, "{kind}: {fa:?} vs {fb:?} (tolerance {tol:e})");
                        }
                        // Their squares, Γ itself, agree as the drifts do.
                        let gamma_a = fa * fa.transpose();
                        for (p, q) in gamma_a.iter().zip(gamma.iter()) {
                            prop_assert!((p - q).abs() <= 1e-11 * scale * scale * d as f64, "{kind}: Γ {gamma_a:?} vs {gamma:?}");
                        }
                    }
                    (Err(a), Err(b)) => prop_assert_eq!(
                        std::mem::discriminant(&a),
                        std::mem::discriminant(&b),
                        "{}: {} vs {}", kind, a, b
                    ),
                    (a, b) => prop_assert!(false, "{kind}: Jacobi {a:?}, QR {b:?}"),
                }
            }
        }
    }

    #[test]
    fn gf_has_no_diffusion_and_a_one_term_series_takes_the_given_root() {
        let (h, cov, root) = (
            [2.0, 0.0, 0.0, 1.0],
            [4.0, 0.0, 0.0, 1.0],
            [2.0, 0.0, 0.0, 1.0],
        );
        let mut ws = ModelWorkspace::new(2);
        let noise = Some(Noise {
            cov: &cov,
            sqrt: Some(&root),
        });
        let noisy = ws
            .evaluate(
                ModelKind::Sme1,
                0.25,
                Arithmetic::Jacobi,
                &[0.0; 2],
                &[1.0, -1.0],
                &h,
                noise,
            )
            .expect("in the domain");
        assert!(noisy);
        // σ = √η Σ^{1/2} exactly; Γ is not formed.
        assert_eq!(ws.factor().as_slice(), &[1.0, 0.0, 0.0, 0.5]);
        assert!(ws.diffusion().is_none());
        let noisy = ws
            .evaluate(
                ModelKind::Gf,
                0.25,
                Arithmetic::Jacobi,
                &[0.0; 2],
                &[1.0, -1.0],
                &h,
                noise,
            )
            .expect("gf has no domain");
        assert!(!noisy);
        assert_eq!(ws.drift().as_slice(), &[-1.0, 1.0]);
        assert_eq!(ws.factor().as_slice(), &[0.0; 4]);
        assert_eq!(ws.diffusion().map(|m| m.as_slice()), Some(&[0.0; 4][..]));
    }
}
