//! The laws the `models` module claims (docs/models.md §2), each checked against an
//! independent formula: the explicit Taylor terms, the tail bounds of the series, exact
//! 2×2 closed forms, and invariance under rotations. Tolerances carry their reasons.

use hasme::models::{
    Coefficients, Local, Model, ModelError, ModelKind, ModelOptions, PSD_TOLERANCE, PsdPolicy,
    diffusion_series_terms, drift_series_terms, ell, hasme_exact_gamma,
};
use nalgebra::{DMatrix, DVector};
use proptest::collection::vec;
use proptest::prelude::*;

// ---------------------------------------------------------------------------------------
// Random local data

/// Random local data of dimension 1–4: `H` symmetric with entries in [−2, 2] (negative
/// eigenvalues included), `Σ = B Bᵀ` of random rank (singular Σ included), and a random
/// orthogonal `Q` for the equivariance law.
#[derive(Debug, Clone)]
struct Case {
    local: Local,
    q: DMatrix<f64>,
}

fn case() -> impl Strategy<Value = Case> {
    (1usize..=4).prop_flat_map(|d| {
        (
            vec(-1.0..1.0f64, d),
            vec(-2.0..2.0f64, d * d),
            vec(-1.0..1.0f64, d * d),
            1..=d,
            vec(-1.0..1.0f64, d * d),
        )
            .prop_map(move |(g, h, b, rank, q)| {
                let h = DMatrix::from_vec(d, d, h);
                let b = DMatrix::from_vec(d, d, b).columns(0, rank).into_owned();
                Case {
                    local: local(
                        DVector::from_vec(g),
                        (&h + h.transpose()) * 0.5,
                        &b * b.transpose(),
                    ),
                    q: DMatrix::from_vec(d, d, q).qr().q(),
                }
            })
    })
}

fn local(g: DVector<f64>, h: DMatrix<f64>, sigma: DMatrix<f64>) -> Local {
    let point = DVector::from_fn(g.len(), |i, _| 0.5 * i as f64);
    Local::new(point, g, h, sigma).expect("valid local data by construction")
}

/// `‖H‖₂` of a symmetric matrix.
fn norm2(h: &DMatrix<f64>) -> f64 {
    h.symmetric_eigenvalues().amax()
}

fn lambda_max(h: &DMatrix<f64>) -> f64 {
    h.symmetric_eigenvalues().max()
}

/// Every model the module offers, truncations included.
fn every_model() -> Vec<ModelKind> {
    let mut models = ModelKind::all().to_vec();
    models.extend([ModelKind::Series(2), ModelKind::Series(3)]);
    models
}

fn clip() -> ModelOptions {
    ModelOptions {
        psd: PsdPolicy::Clip,
    }
}

// ---------------------------------------------------------------------------------------
// Independent formulas

/// `−g − (η/2)Hg − (η²/3)H²g`, the drift through O(η²) (docs/models.md §2).
fn drift_through_eta2(l: &Local, eta: f64) -> DVector<f64> {
    let hg = &l.hessian * &l.gradient;
    let h2g = &l.hessian * &hg;
    -&l.gradient - hg * (eta / 2.0) - h2g * (eta * eta / 3.0)
}

/// `ηΣ + η²(HΣ + ΣH)/2`, both diffusions through O(η²).
fn diffusion_through_eta2(l: &Local, eta: f64) -> DMatrix<f64> {
    let hs = &l.hessian * &l.noise_cov;
    &l.noise_cov * eta + (&hs + hs.transpose()) * (eta * eta / 2.0)
}

fn hasme(l: &Local, eta: f64) -> Coefficients {
    ModelKind::Hasme
        .coefficients(l, eta)
        .expect("hasme is defined for ηλ_max < 1 and PSD Σ")
}

// ---------------------------------------------------------------------------------------
// Series law: the closed forms agree with their Taylor expansions to O(η³)

/// `η‖H‖` over the grids below stays ≤ this, so the tail bounds apply.
const RHO_DRIFT: f64 = 0.4;
const RHO_DIFFUSION: f64 = 0.2;

proptest! {
    /// `hasme drift = −g − (η/2)Hg − (η²/3)H²g + R`, `‖R‖ ≤ Σ_{k≥3} ρ^k‖g‖/(k+1)
    /// ≤ ‖H‖³‖g‖η³/(4(1 − ρ))` with `ρ = η‖H‖` (the tail of −ℓ(P)g): R = O(η³).
    #[test]
    fn drift_is_the_series_to_order_eta_cubed(c in case()) {
        let l = &c.local;
        let (hn, gn) = (norm2(&l.hessian), l.gradient.norm());
        let bound = hn.powi(3) * gn / (4.0 * (1.0 - RHO_DRIFT));
        for scale in [1.0, 0.5, 0.25, 0.125] {
            let eta = RHO_DRIFT * scale / hn.max(1.0);
            let r = (hasme(l, eta).drift - drift_through_eta2(l, eta)).norm();
            // 1e−13‖g‖: round-off of the eigenbasis route, ~d·ε·max φ·‖g‖ with
            // max φ = ℓ(0.6) ≈ 1.3, times a safety factor of ~50.
            prop_assert!(r <= bound * eta.powi(3) + 1e-13 * gn,
                "η = {eta}: ‖R‖ = {r} > {} η³", bound);
        }
    }

    /// `Γ = ηΣ + η²(HΣ + ΣH)/2 + R`, `R = O(η³)` for both diffusions.
    ///
    /// hasme-exact: `R = −η³HΣH/2 + η Σ_{k≥2} 𝒬^k(Σ)/(k+1)` and `𝒬` has eigenvalues
    /// `1 − p_i p_j`, `|·| ≤ r = 2ρ + ρ²`, so `‖R‖ ≤ η³‖H‖²‖Σ‖(1/2 + (2 + ρ)²/(3(1 − r)))`.
    /// hasme: `ψ^{1/2} = I + ηH/2 + E`, `‖E‖ ≤ Kρ²` with `K = max_{|x|≤0.2}
    /// |√ℓ((1−x)²) − 1 − x/2|/x² = 0.3353` (evaluated offline on a 2e5-point grid), so
    /// `‖R‖ ≤ η³‖H‖²‖Σ‖(1/4 + 2K + Kρ + K²ρ²) ≤ 0.993 η³‖H‖²‖Σ‖`; 1.1 leaves 10 %.
    #[test]
    fn diffusions_are_the_series_to_order_eta_cubed(c in case()) {
        let l = &c.local;
        let (hn, sn) = (norm2(&l.hessian), l.noise_cov.norm());
        let r = 2.0 * RHO_DIFFUSION + RHO_DIFFUSION.powi(2);
        let exact_bound =
            hn * hn * sn * (0.5 + (2.0 + RHO_DIFFUSION).powi(2) / (3.0 * (1.0 - r)));
        let hasme_bound = 1.1 * hn * hn * sn;
        for scale in [1.0, 0.5, 0.25, 0.125] {
            let eta = RHO_DIFFUSION * scale / hn.max(1.0);
            let expansion = diffusion_through_eta2(l, eta);
            // 1e−13ηΣ: round-off of U(·)Uᵀ with weights ≤ ℓ(0.64) ≈ 1.24, d ≤ 4.
            let floor = 1e-13 * eta * sn;
            let exact = hasme_exact_gamma(l, eta).expect("in the domain");
            let r_exact = (exact - &expansion).norm();
            prop_assert!(r_exact <= exact_bound * eta.powi(3) + floor,
                "hasme-exact, η = {eta}: ‖R‖ = {r_exact}");
            let r_hasme = (hasme(l, eta).diffusion - &expansion).norm();
            prop_assert!(r_hasme <= hasme_bound * eta.powi(3) + floor,
                "hasme, η = {eta}: ‖R‖ = {r_hasme}");
        }
    }
}

/// The remainders of a fixed example halve η and shrink by 2³ = 8: the leading
/// remainder terms (`−η³H³g/4`; `η³(HΣH/4 + 7(H²Σ + ΣH²)/24)` for hasme) are nonzero
/// here, and the next order changes the ratio by ~η‖H‖ ≈ 4 %, hence the band [7.5, 8.5].
#[test]
fn remainders_shrink_eightfold_when_eta_halves() {
    let l = local(
        DVector::from_vec(vec![1.0, 0.7]),
        DMatrix::from_row_slice(2, 2, &[1.0, 0.3, 0.3, -0.5]),
        DMatrix::from_row_slice(2, 2, &[1.0, 0.2, 0.2, 0.5]),
    );
    let remainders = |eta: f64| {
        let expansion = diffusion_through_eta2(&l, eta);
        let gamma = hasme_exact_gamma(&l, eta).expect("in the domain");
        [
            (hasme(&l, eta).drift - drift_through_eta2(&l, eta)).norm(),
            (hasme(&l, eta).diffusion - &expansion).norm(),
            (gamma - expansion).norm(),
        ]
    };
    let (big, small) = (remainders(0.04), remainders(0.02));
    for (what, (b, s)) in ["drift", "hasme Γ", "hasme-exact Γ"]
        .iter()
        .zip(big.iter().zip(small))
    {
        let ratio = b / s;
        assert!((7.5..=8.5).contains(&ratio), "{what}: ratio {ratio}");
    }
}

// ---------------------------------------------------------------------------------------
// η → 0

proptest! {
    /// Every drift tends to `−g` and every `Γ/η` to `Σ` (gf: Γ = 0), with deviations of
    /// first order: `‖b + g‖ ≤ ρ‖g‖` (the drift tail from k = 1 is at most ρ/(2(1 − ρ)))
    /// and `‖Γ/η − Σ‖ ≤ 3ρ‖Σ‖` (first-order term `(HΣ + ΣH)η/2` has norm ≤ ρ‖Σ‖, the
    /// rest is O(ρ²)); checked at two η three decades apart, so the deviation is shown
    /// to vanish, not merely to be small.
    #[test]
    fn small_eta_limit(c in case()) {
        let l = &c.local;
        let (hn, gn, sn) = (norm2(&l.hessian), l.gradient.norm(), l.noise_cov.norm());
        for rho in [1e-3, 1e-6] {
            let eta = rho / hn.max(1.0);
            for kind in every_model() {
                // Clip: for a nearly singular Σ the O(ρ) part of hasme-exact may dip
                // below zero; clipping moves Γ by at most that much, within the bound.
                let co = kind.coefficients_with(l, eta, &clip()).expect("in the domain");
                // 1e−13: round-off, relative to ‖g‖ and ‖Σ‖, of the eigenbasis route.
                prop_assert!((&co.drift + &l.gradient).norm() <= rho * gn + 1e-13 * gn,
                    "{kind}: drift");
                let target = if kind == ModelKind::Gf { DMatrix::zeros(l.dim(), l.dim()) }
                    else { l.noise_cov.clone() };
                let dev = (&co.diffusion / eta - target).norm();
                prop_assert!(dev <= 3.0 * rho * sn + 1e-12 * sn, "{kind}: Γ/η − Σ = {dev}");
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// hasme against hasme-exact

proptest! {
    /// With `Σ = Q diag(s) Qᵀ` in the eigenbasis of `H = Q diag(λ) Qᵀ`, the two diffusions
    /// coincide (`Σ̂` diagonal and `L_ii = ψ_i`), and hasme-exact's Γ is then PSD.
    #[test]
    fn hasme_and_exact_coincide_when_sigma_commutes(
        c in case(),
        lambdas in vec(-3.0..3.0f64, 4),
        s in vec(0.0..2.0f64, 4),
        eta in 0.01..0.3f64,
    ) {
        let d = c.local.dim();
        let q = &c.q;
        let h = q * DMatrix::from_diagonal(&DVector::from_row_slice(&lambdas[..d])) * q.transpose();
        let sigma = q * DMatrix::from_diagonal(&DVector::from_row_slice(&s[..d])) * q.transpose();
        let l = local(c.local.gradient.clone(), (&h + h.transpose()) * 0.5, (&sigma + sigma.transpose()) * 0.5);
        let a = hasme(&l, eta);
        let b = ModelKind::HasmeExact.coefficients(&l, eta).expect("commuting Σ: Γ is PSD");
        prop_assert_eq!(&a.drift, &b.drift);
        // 1e−12 η‖Σ‖: Σ̂'s off-diagonal is round-off (~ε‖Σ‖) instead of 0, weighted by
        // L_ij − s_i s_j (|·| ≤ 3 for ηλ ≤ 0.9), plus the products in U(·)Uᵀ.
        let diff = (&a.diffusion - &b.diffusion).norm();
        prop_assert!(diff <= 1e-12 * eta * l.noise_cov.norm() + 1e-300, "‖ΔΓ‖ = {diff}");
    }

    /// hasme's Γ is exactly symmetric and PSD (up to the eigensolver's round-off), its
    /// factor squares to it, and no warning is raised, for any H (saddles included)
    /// with ηλ_max < 1 and any PSD Σ.
    #[test]
    fn hasme_diffusion_is_symmetric_psd(c in case(), u in 0.01..1.0f64) {
        let l = &c.local;
        let lm = lambda_max(&l.hessian);
        let eta = if lm > 0.0 { 0.95 * u / lm } else { 10.0 * u };
        let co = hasme(l, eta);
        prop_assert_eq!(&co.diffusion, &co.diffusion.transpose());
        let eig = co.diffusion.symmetric_eigenvalues();
        prop_assert!(eig.min() >= -PSD_TOLERANCE * eig.amax());
        prop_assert!(co.warnings.is_empty());
        // 1e−13‖Γ‖: two eigendecompositions' round-off at d ≤ 4.
        let sq = (&co.factor * &co.factor - &co.diffusion).norm();
        prop_assert!(sq <= 1e-13 * co.diffusion.norm() + 1e-300);
    }
}

/// Off the commuting case the two differ: `L_12 = ℓ(p_1p_2) ≠ s_1s_2 = √(ℓ(p_1²)ℓ(p_2²))`.
/// Here η = 0.1, λ = (1, 5): `ℓ(0.45) = 1.4518` against `1.4317`, so
/// `|ΔΓ_12| = η · 0.5 · 0.0201 ≈ 1.0e−3`.
#[test]
fn hasme_and_exact_differ_when_sigma_does_not_commute() {
    let l = local(
        DVector::from_vec(vec![1.0, 1.0]),
        DMatrix::from_diagonal(&DVector::from_vec(vec![1.0, 5.0])),
        DMatrix::from_row_slice(2, 2, &[1.0, 0.5, 0.5, 1.0]),
    );
    let eta = 0.1;
    let exact = hasme_exact_gamma(&l, eta).expect("in the domain");
    let independent = |pi: f64, pj: f64| (pi * pj).ln() / (pi * pj - 1.0);
    let (p1, p2) = (0.9, 0.5);
    let expected =
        eta * 0.5 * (independent(p1, p2) - (independent(p1, p1) * independent(p2, p2)).sqrt());
    let diff = exact[(0, 1)] - hasme(&l, eta).diffusion[(0, 1)];
    // 1e−14: the closed forms above are accurate to an ulp; Γ through U = I.
    assert!((diff - expected).abs() < 1e-14, "{diff} vs {expected}");
    assert!(diff.abs() > 9e-4);
}

// ---------------------------------------------------------------------------------------
// Equivariance

proptest! {
    /// Rotating the problem (`g → Qg`, `H → QHQᵀ`, `Σ → QΣQᵀ`) rotates every model's
    /// output (`b → Qb`, `Γ → QΓQᵀ`, `σ → QσQᵀ`: the symmetric square root is unique).
    #[test]
    fn every_model_is_rotation_equivariant(c in case(), u in 0.01..1.0f64) {
        let l = &c.local;
        let q = &c.q;
        let lm = lambda_max(&l.hessian);
        // ηλ_max ≤ 0.9: p ≥ 0.1 keeps ℓ' ≤ 100, so matrix functions stay well conditioned.
        let eta = if lm > 0.0 { 0.9 * u / lm } else { u };
        let rot = |m: &DMatrix<f64>| q * m * q.transpose();
        let r = local(q * &l.gradient, (rot(&l.hessian) + rot(&l.hessian).transpose()) * 0.5,
            (rot(&l.noise_cov) + rot(&l.noise_cov).transpose()) * 0.5);
        for kind in every_model() {
            // Clip: a truncated series or hasme-exact may be indefinite; the clipped
            // result is equivariant too, and this keeps every case comparable.
            let a = kind.coefficients_with(l, eta, &clip()).expect("in the domain");
            let b = kind.coefficients_with(&r, eta, &clip()).expect("in the domain");
            // 1e−10: eigenbasis round-off (~1e−15) amplified by ℓ' ≤ 100 and by the
            // series' (ηH)^k growth; a wrong basis would be off at O(1).
            let tol = |x: f64| 1e-10 * (1.0 + x);
            prop_assert!((&b.drift - q * &a.drift).norm() <= tol(a.drift.norm()), "{kind}: drift");
            prop_assert!((&b.diffusion - rot(&a.diffusion)).norm() <= tol(a.diffusion.norm()),
                "{kind}: Γ");
            // σ: the square root is only Hölder-½ at singular Γ (‖√A − √B‖ ≤ ‖A − B‖^½),
            // so a round-off ΔΓ ~ 1e−14‖Γ‖ may move σ by its square root.
            let tol_factor = (1e-13 * (1.0 + a.diffusion.norm())).sqrt();
            prop_assert!((&b.factor - rot(&a.factor)).norm() <= tol_factor, "{kind}: σ");
        }
    }
}

// ---------------------------------------------------------------------------------------
// ℓ

proptest! {
    /// Near 1 against `Σ_{k<12} (−q)^k/(k+1)` (remainder ≤ q¹²/13 < 1e−36 for |q| ≤ 1e−3),
    /// summed from the small end so the reference is good to an ulp.
    #[test]
    fn ell_near_one_matches_its_series(q in -1e-3..1e-3f64) {
        let p = 1.0 + q;
        let q = p - 1.0; // the q that p actually represents (exact: Sterbenz)
        let reference = (0..12).rev().fold(0.0, |acc, k| acc + (-q).powi(k) / f64::from(k + 1));
        let rel = (ell(p) - reference).abs() / reference;
        prop_assert!(rel <= 1e-14, "q = {q}: relative error {rel}");
    }

    /// Far from 1 the quotient `log(p)/(p − 1)` does not cancel and is the reference.
    #[test]
    fn ell_far_from_one_matches_the_quotient(
        p in prop_oneof![1e-12..0.9f64, 1.1..1e6f64],
    ) {
        let naive = p.ln() / (p - 1.0);
        // 1e−14: ln is within an ulp and p − 1 is exact or within an ulp.
        prop_assert!((ell(p) - naive).abs() <= 1e-14 * naive, "p = {p}");
    }
}

// ---------------------------------------------------------------------------------------
// Truncations

/// `Σ_{k<count}` of a list of terms.
fn partial_sums<T>(terms: Vec<T>) -> Vec<T>
where
    T: Clone + std::ops::Add<Output = T>,
{
    let mut sums: Vec<T> = Vec::with_capacity(terms.len());
    for t in terms {
        let next = match sums.last() {
            Some(s) => s.clone() + t,
            None => t,
        };
        sums.push(next);
    }
    sums
}

proptest! {
    /// The truncated series converge to the closed forms geometrically.
    ///
    /// In the eigenbasis the drift error after `K` is the tail `T_K(x) = Σ_{k>K} x^k/(k+1)`
    /// per component, with `x = ηλ_i`; `|T_{K+1}| ≤ |x|/(1 − |x|)·|T_K|` (for x < 0 the
    /// tail alternates, which costs the `1/(1 − |x|)`), so `e_{K+1} ≤ ρ/(1 − ρ)·e_K`. The
    /// diffusion tail runs over `𝒬`'s eigenvalues `1 − p_i p_j`, `|·| ≤ r = 2ρ + ρ²`, so
    /// `e_{K+1} ≤ r/(1 − r)·e_K`.
    #[test]
    fn truncations_converge_geometrically_to_hasme_exact(c in case(), rho in 0.05..RHO_DIFFUSION) {
        let l = &c.local;
        let hn = norm2(&l.hessian);
        prop_assume!(hn > 1e-3);
        let eta = rho / hn;
        let count = 14;
        let drift = hasme(l, eta).drift;
        let gamma = hasme_exact_gamma(l, eta).expect("in the domain");
        let drift_err: Vec<f64> = partial_sums(drift_series_terms(l, eta, count).expect("finite"))
            .into_iter().map(|s| (s - &drift).norm()).collect();
        let gamma_err: Vec<f64> = partial_sums(diffusion_series_terms(l, eta, count).expect("finite"))
            .into_iter().map(|s| (s - &gamma).norm()).collect();
        let r = 2.0 * rho + rho * rho;
        // Round-off floors (closed form vs. series, d ≤ 4, weights ≤ 1.3): below them the
        // ratio is noise. 1e−14 relative to ‖g‖ and to η‖Σ‖.
        let drift_floor = 1e-14 * l.gradient.norm();
        let gamma_floor = 1e-14 * eta * l.noise_cov.norm();
        for k in 0..count - 1 {
            prop_assert!(drift_err[k + 1] <= rho / (1.0 - rho) * drift_err[k] + drift_floor,
                "drift, K = {k}: {} then {}", drift_err[k], drift_err[k + 1]);
            prop_assert!(gamma_err[k + 1] <= r / (1.0 - r) * gamma_err[k] + gamma_floor,
                "Γ, K = {k}: {} then {}", gamma_err[k], gamma_err[k + 1]);
        }
        // And the errors are small in absolute terms: `e_K ≤ ρ^{K+1}/(1 − ρ)‖g‖`.
        let last = count - 1;
        prop_assert!(drift_err[last] <= rho.powi(count as i32) / (1.0 - rho) * l.gradient.norm()
            + drift_floor);
        prop_assert!(gamma_err[last] <= eta * r.powi(count as i32) / (1.0 - r) * l.noise_cov.norm()
            + gamma_floor);
    }

    /// `series:0` is `sme1` and `series:1` is `sme2`, bit for bit (one code path), and
    /// they are the formulas of the spec's table.
    #[test]
    fn sme1_and_sme2_are_the_first_truncations(c in case(), eta in 1e-3..0.5f64) {
        let l = &c.local;
        let co = |kind: ModelKind| kind.coefficients(l, eta).expect("PSD Σ");
        prop_assert_eq!(co(ModelKind::Series(0)), co(ModelKind::Sme1));
        prop_assert_eq!(co(ModelKind::Series(1)), co(ModelKind::Sme2));
        let sme1 = co(ModelKind::Sme1);
        prop_assert_eq!(&sme1.drift, &-&l.gradient);
        prop_assert_eq!(&sme1.diffusion, &(&l.noise_cov * eta));
        let sme2 = co(ModelKind::Sme2);
        let expected = -&l.gradient - &l.hessian * &l.gradient * (eta / 2.0);
        // 1e−15: the same sum with ηH formed before instead of after the product.
        prop_assert!((&sme2.drift - &expected).norm() <= 1e-15 * (1.0 + expected.norm()));
        prop_assert_eq!(&sme2.diffusion, &sme1.diffusion);
    }
}

// ---------------------------------------------------------------------------------------
// Domain errors

/// The spec's example: η = 0.1, λ = (1, 5), Σ̂ = [[1, 0.999], [0.999, 1]], here in a
/// rotated basis so that U ≠ I.
fn indefinite_example() -> (Local, f64) {
    let (c, s) = (0.3f64.cos(), 0.3f64.sin());
    let q = DMatrix::from_row_slice(2, 2, &[c, -s, s, c]);
    let rot = |m: DMatrix<f64>| {
        let r = &q * m * q.transpose();
        (&r + r.transpose()) * 0.5
    };
    let l = local(
        DVector::from_vec(vec![0.3, -0.2]),
        rot(DMatrix::from_diagonal(&DVector::from_vec(vec![1.0, 5.0]))),
        rot(DMatrix::from_row_slice(2, 2, &[1.0, 0.999, 0.999, 1.0])),
    );
    (l, 0.1)
}

/// Smallest eigenvalue of the example's `Γ = η Σ̂ ∘ L` by the 2×2 closed form.
fn indefinite_example_min_eigenvalue() -> f64 {
    let lp = |p: f64| p.ln() / (p - 1.0);
    let (p1, p2, eta) = (0.9, 0.5, 0.1);
    let (a, b, d) = (
        eta * lp(p1 * p1),
        eta * 0.999 * lp(p1 * p2),
        eta * lp(p2 * p2),
    );
    let (tr, det) = (a + d, a * d - b * b);
    (tr - (tr * tr - 4.0 * det).sqrt()) / 2.0
}

#[test]
fn indefinite_exact_diffusion_is_reported_or_clipped() {
    let (l, eta) = indefinite_example();
    let expected = indefinite_example_min_eigenvalue();
    assert!(
        (expected + 1.8e-3).abs() < 1e-5,
        "the spec's ≈ −1.8e−3: {expected}"
    );
    // 1e−14: a 2×2 eigenproblem of O(0.1) entries, rotated.
    let raw = hasme_exact_gamma(&l, eta).expect("the raw Γ is available even when indefinite");
    let raw_min = raw.symmetric_eigenvalues().min();
    assert!(
        (raw_min - expected).abs() < 1e-14,
        "{raw_min} vs {expected}"
    );

    let err = ModelKind::HasmeExact
        .coefficients(&l, eta)
        .expect_err("indefinite Γ");
    match &err {
        ModelError::ExactDiffusionIndefinite { min_eigenvalue, .. } => {
            assert!((min_eigenvalue - expected).abs() < 1e-14)
        }
        other => panic!("wrong error: {other}"),
    }
    let message = err.to_string();
    assert!(
        message.contains("no real diffusion reproduces SGD exactly"),
        "{message}"
    );
    assert!(message.contains("(0, 0.5)"), "the point: {message}");

    let clipped = ModelKind::HasmeExact
        .coefficients_with(&l, eta, &clip())
        .expect("clipped");
    assert_eq!(clipped.warnings.len(), 1);
    assert!(
        clipped.warnings[0].contains("clipped"),
        "{:?}",
        clipped.warnings
    );
    assert!(
        clipped.warnings[0].contains("hasme-exact"),
        "{:?}",
        clipped.warnings
    );
    let eig = clipped.diffusion.symmetric_eigenvalues();
    assert!(eig.min() >= -PSD_TOLERANCE * eig.amax());
    // The nearest PSD matrix moves Γ by exactly |μ_min| in the Frobenius norm.
    let moved = (&clipped.diffusion - &raw).norm();
    assert!((moved + expected).abs() < 1e-14, "moved {moved}");
    assert!((&clipped.factor * &clipped.factor - &clipped.diffusion).norm() < 1e-14);

    // hasme has no such problem here.
    assert!(hasme(&l, eta).warnings.is_empty());
}

#[test]
fn step_size_at_or_beyond_one_over_lambda_max_is_reported() {
    let l = local(
        DVector::from_vec(vec![1.0, 1.0]),
        DMatrix::from_diagonal(&DVector::from_vec(vec![2.0, -1.0])),
        DMatrix::identity(2, 2),
    );
    for eta in [0.5, 0.6, 1e6] {
        for kind in [ModelKind::Hasme, ModelKind::HasmeExact] {
            let err = kind.coefficients(&l, eta).expect_err("ηλ_max ≥ 1");
            assert!(
                matches!(err, ModelError::StepSizeTooLarge { lambda_max, .. } if lambda_max == 2.0),
                "{kind}: {err}"
            );
            let message = err.to_string();
            assert!(message.contains("λ_max = 2"), "{message}");
            assert!(message.contains("1/λ_max = 0.5"), "{message}");
            assert!(message.contains("(0, 0.5)"), "{message}");
        }
        let err = hasme_exact_gamma(&l, eta).expect_err("ηλ_max ≥ 1");
        assert!(matches!(err, ModelError::StepSizeTooLarge { .. }));
        // The truncations and gf have no such domain.
        for kind in [ModelKind::Gf, ModelKind::Sme1, ModelKind::Sme2] {
            kind.coefficients(&l, eta).expect("no ηλ domain");
        }
    }
    // Concave directions are fine for any η: p = 1 − ηλ > 1.
    let concave = local(
        DVector::from_vec(vec![1.0, 1.0]),
        DMatrix::from_diagonal(&DVector::from_vec(vec![-1.0, -5.0])),
        DMatrix::identity(2, 2),
    );
    for eta in [1e-3, 1.0, 1e3, 1e12] {
        for kind in [ModelKind::Hasme, ModelKind::HasmeExact] {
            let c = kind.coefficients(&concave, eta).expect("concave: any η");
            assert!(
                c.drift
                    .iter()
                    .chain(c.diffusion.iter())
                    .all(|x| x.is_finite())
            );
        }
    }
}

#[test]
fn noise_that_is_not_psd_is_reported_or_clipped() {
    let l = local(
        DVector::from_vec(vec![1.0, 1.0]),
        DMatrix::from_row_slice(2, 2, &[1.0, 0.2, 0.2, 0.5]),
        DMatrix::from_diagonal(&DVector::from_vec(vec![1.0, -0.5])),
    );
    for kind in every_model().into_iter().filter(|k| *k != ModelKind::Gf) {
        let err = kind.coefficients(&l, 0.1).expect_err("Σ not PSD");
        assert!(
            matches!(err, ModelError::NoiseNotPsd { min_eigenvalue, .. } if min_eigenvalue == -0.5),
            "{kind}: {err}"
        );
        assert!(err.to_string().contains("-0.5"), "{err}");
        let c = kind.coefficients_with(&l, 0.1, &clip()).expect("clipped Σ");
        assert!(
            c.warnings.iter().any(|w| w.contains("noise covariance")),
            "{kind}"
        );
        let eig = c.diffusion.symmetric_eigenvalues();
        assert!(eig.min() >= -PSD_TOLERANCE * eig.amax(), "{kind}");
    }
    // A rank-one Σ whose zero eigenvalue comes out as ±1e−17 is round-off, not an error,
    // for every model whose Γ is congruent to Σ. (Not for hasme-exact: with Σ̂ = v̂v̂ᵀ,
    // Γ = η D L D with D = diag(v̂), and the 2×2 minors of L = [ℓ(p_i p_j)] are negative
    // because log ℓ(eᵘ) is strictly concave, so a rank-one Σ spread over two eigenvectors
    // of H always gives an indefinite hasme-exact Γ.)
    let v = DVector::from_vec(vec![0.3, 0.7]);
    let rank_one = local(l.gradient.clone(), l.hessian.clone(), &v * v.transpose());
    for kind in [
        ModelKind::Gf,
        ModelKind::Sme1,
        ModelKind::Sme2,
        ModelKind::Hasme,
    ] {
        let c = kind
            .coefficients(&rank_one, 0.1)
            .expect("PSD up to round-off");
        assert!(c.warnings.is_empty(), "{kind}: {:?}", c.warnings);
    }
    let err = ModelKind::HasmeExact
        .coefficients(&rank_one, 0.1)
        .expect_err("rank-one Σ across two eigenvectors");
    assert!(
        matches!(err, ModelError::ExactDiffusionIndefinite { .. }),
        "{err}"
    );
}

// ---------------------------------------------------------------------------------------
// Robustness: no panic, no NaN

fn wild() -> impl Strategy<Value = f64> {
    prop_oneof![
        -1.0..1.0f64,
        -1e300..1e300f64,
        -1e-300..1e-300f64,
        Just(0.0),
        Just(f64::NAN),
        Just(f64::INFINITY),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Any input, even malformed (asymmetric, mismatched, non-finite, huge), gives either
    /// finite coefficients or an error: never a panic, never a NaN.
    #[test]
    fn no_panic_and_no_nan_on_any_input(
        d in 0usize..=3,
        extra in 0usize..=1,
        entries in vec(wild(), 40),
        eta in prop_oneof![1e-300..1e-10f64, 1e-3..10.0f64, 1e10..1e300f64, Just(-1.0)],
    ) {
        let at = |k: usize| entries[k % entries.len()];
        let n = d + extra * usize::from(entries.len() % 2 == 0);
        let l = Local {
            point: DVector::from_fn(d, |i, _| at(i)),
            gradient: DVector::from_fn(n, |i, _| at(i + 3)),
            // Symmetric (so that the models run) unless `extra` asks for malformed input.
            hessian: DMatrix::from_fn(d, d, |i, j| {
                if extra == 0 { at(7 + i.min(j) * d + i.max(j)) } else { at(7 + i * d + j) }
            }),
            noise_cov: DMatrix::from_fn(d, d, |i, j| at(19 + i.min(j) * d + i.max(j))),
        };
        for kind in every_model() {
            for options in [ModelOptions::default(), clip()] {
                if let Ok(c) = kind.coefficients_with(&l, eta, &options) {
                    prop_assert!(c.drift.iter().chain(c.diffusion.iter()).chain(c.factor.iter())
                        .all(|x| x.is_finite()), "{kind}");
                }
            }
        }
        if let Ok(g) = hasme_exact_gamma(&l, eta) {
            prop_assert!(g.iter().all(|x| x.is_finite()));
        }
        if let Ok(ts) = drift_series_terms(&l, eta, 5) {
            prop_assert!(ts.iter().all(|t| t.iter().all(|x| x.is_finite())));
        }
        if let Ok(ts) = diffusion_series_terms(&l, eta, 5) {
            prop_assert!(ts.iter().all(|t| t.iter().all(|x| x.is_finite())));
        }
    }
}

#[test]
fn model_names_and_orders() {
    let names: Vec<String> = ModelKind::all().iter().map(Model::name).collect();
    assert_eq!(names, ["gf", "sme1", "sme2", "hasme", "hasme-exact"]);
    assert_eq!("series:12".parse::<ModelKind>(), Ok(ModelKind::Series(12)));
    let err = "sde".parse::<ModelKind>().expect_err("unknown");
    for name in ["gf", "sme1", "sme2", "hasme", "hasme-exact", "series:K"] {
        assert!(err.to_string().contains(name), "{err}");
    }
}
