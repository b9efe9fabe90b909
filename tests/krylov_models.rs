//! Matrix-free model coefficients (docs/models.md §8) against the dense ones: the `sme2`
//! drift, the `hasme` drift and the `hasme` diffusion increment for the same ΔW, on
//! random symmetric problems up to d = 60 (saddles included), near the domain edge, and
//! on the network example through `derive`; the domain check on both sides of 1/η; the
//! CLI's errors.
//!
//! The references are independent of the Lanczos code: nalgebra's symmetric
//! eigendecomposition with the eigenbasis formulas `φ(ηλ) = −log(1 − ηλ)/(ηλ)`,
//! `ψ(ηλ) = −2 log(1 − ηλ)/(ηλ(2 − ηλ))` (no λ of these problems is within 1e−3/η of 0,
//! so the naive quotients lose at most ~1e−13), and the dense models' own workspace.

use std::process::Command;

use hasme::models::matrix_free::{
    self, KrylovOptions, hasme_diffusion_increment, hasme_drift, sme2_drift,
};
use hasme::models::{Local, Model, ModelError, ModelKind, ModelOptions};
use nalgebra::{DMatrix, DVector};
use proptest::collection::vec;
use proptest::prelude::*;

/// The matrix-free results must match the dense ones to this relative accuracy. Why
/// 1e−8 for a Lanczos tolerance of 1e−10: the stopping rule measures the last change,
/// which bounds the error only up to a constant once convergence is superlinear; the
/// dense references carry their own round-off (~1e−13·κ with κ ≤ 1e3 here).
const AGREE: f64 = 1e-8;

/// H = Q diag(λ) Qᵀ, Q orthogonal from the QR factorisation of `mix`.
fn symmetric(lambda: &[f64], mix: &[f64]) -> DMatrix<f64> {
    let d = lambda.len();
    let q = DMatrix::from_column_slice(d, d, mix).qr().q();
    let h = &q * DMatrix::from_diagonal(&DVector::from_column_slice(lambda)) * q.transpose();
    (&h + h.transpose()) * 0.5
}

fn operator(h: &DMatrix<f64>) -> impl FnMut(&[f64], &mut [f64]) -> Result<(), ModelError> + '_ {
    move |v, out| {
        out.copy_from_slice((h * DVector::from_column_slice(v)).as_slice());
        Ok(())
    }
}

/// f(H)v from nalgebra's eigendecomposition.
fn dense_function(h: &DMatrix<f64>, v: &[f64], f: impl Fn(f64) -> f64) -> DVector<f64> {
    let e = h.clone().symmetric_eigen();
    &e.eigenvectors
        * DMatrix::from_diagonal(&e.eigenvalues.map(f))
        * e.eigenvectors.transpose()
        * DVector::from_column_slice(v)
}

fn relative(a: &[f64], b: &DVector<f64>) -> f64 {
    (DVector::from_column_slice(a) - b).norm() / b.norm()
}

/// One random problem: spectrum in [−lo, hi/η]·… scaled so that ηλ_max = `edge`, with a
/// spread of magnitudes and negative eigenvalues (saddles) when `saddle`.
#[derive(Debug, Clone)]
struct Case {
    h: DMatrix<f64>,
    g: Vec<f64>,
    /// Σ^{1/2}ΔW for some Σ and ΔW: any vector.
    u: Vec<f64>,
    eta: f64,
}

fn case() -> impl Strategy<Value = Case> {
    (2usize..=60, prop::bool::ANY, 0.05..0.99f64).prop_flat_map(|(d, saddle, edge)| {
        (
            vec(0.01..1.0f64, d),
            vec(-1.0..1.0f64, d * d),
            vec(-1.0..1.0f64, d),
            vec(-1.0..1.0f64, d),
            0.01..1.0f64,
        )
            .prop_map(move |(mut lambda, mix, g, u, eta)| {
                // The largest eigenvalue sits exactly at ηλ_max = edge; a saddle flips
                // the sign of every other one, down to −3/η.
                let top = lambda.iter().copied().fold(0.0, f64::max);
                for (i, l) in lambda.iter_mut().enumerate() {
                    *l *= edge / (eta * top);
                    if saddle && i % 2 == 1 {
                        *l *= -3.0;
                    }
                }
                lambda[0] = edge / eta;
                Case {
                    h: symmetric(&lambda, &mix),
                    g,
                    u,
                    eta,
                }
            })
    })
}

fn phi(eta: f64) -> impl Fn(f64) -> f64 {
    move |l| -(1.0 - eta * l).ln() / (eta * l)
}

fn sqrt_psi(eta: f64) -> impl Fn(f64) -> f64 {
    move |l| (-2.0 * (1.0 - eta * l).ln() / (eta * l * (2.0 - eta * l))).sqrt()
}

proptest! {
    // 48 cases: each builds a d ≤ 60 problem and two dense eigendecompositions, a
    // fraction of a second in all; enough to meet saddles, small and large d, and
    // edges from 0.05 to 0.99.
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn matrix_free_equals_dense(c in case()) {
        let o = KrylovOptions::default();
        let d = c.g.len();
        let x = vec![0.0; d];
        let hg = &c.h * DVector::from_column_slice(&c.g);
        let sme2 = sme2_drift(&c.g, c.eta, operator(&c.h)).unwrap();
        let reference = -DVector::from_column_slice(&c.g) - hg * (c.eta / 2.0);
        prop_assert!(relative(&sme2, &reference) <= 1e-14);

        let b = hasme_drift(&x, &c.g, c.eta, &o, operator(&c.h)).unwrap();
        let reference = -dense_function(&c.h, &c.g, phi(c.eta));
        let err = relative(&b.vector, &reference);
        prop_assert!(err <= AGREE, "drift: {} after {} steps", err, b.steps);

        let inc = hasme_diffusion_increment(&x, &c.u, c.eta, &o, operator(&c.h)).unwrap();
        let reference = dense_function(&c.h, &c.u, sqrt_psi(c.eta)) * c.eta.sqrt();
        let err = relative(&inc.vector, &reference);
        prop_assert!(err <= AGREE, "increment: {} after {} steps", err, inc.steps);
        prop_assert!(b.steps <= d && inc.steps <= d);
    }
}

#[test]
fn the_coefficients_equal_the_dense_models_at_a_saddle_near_the_edge() {
    // d = 40, ηλ_max = 0.99, eigenvalues down to −2/η; Σ of rank 10.
    let d = 40;
    let eta = 0.1;
    let lambda: Vec<f64> = (0..d)
        .map(|i| {
            if i % 3 == 0 {
                -20.0 * (i as f64 + 1.0) / d as f64
            } else {
                9.9 * (i as f64 + 1.0) / d as f64
            }
        })
        .collect();
    let mix: Vec<f64> = (0..d * d).map(|i| (i as f64 * 0.618).sin()).collect();
    let h = symmetric(&lambda, &mix);
    let b = DMatrix::from_fn(d, 10, |i, j| ((i * 7 + j * 3) as f64 * 0.41).cos() / 3.0);
    let local = Local::new(
        DVector::from_fn(d, |i, _| i as f64 / 10.0),
        DVector::from_fn(d, |i, _| (i as f64 * 0.9).sin()),
        h.clone(),
        &b * b.transpose(),
    )
    .unwrap();
    let (o, k) = (ModelOptions::default(), KrylovOptions::default());
    for kind in [
        ModelKind::Gf,
        ModelKind::Sme1,
        ModelKind::Sme2,
        ModelKind::Hasme,
    ] {
        let free = matrix_free::coefficients(kind, &local, eta, &o, &k, operator(&h)).unwrap();
        let dense = kind.coefficients(&local, eta).unwrap();
        let drift = (&free.drift - &dense.drift).norm() / dense.drift.norm();
        assert!(drift <= AGREE, "{kind}: drift {drift}");
        let scale = dense.diffusion.norm().max(f64::MIN_POSITIVE);
        let gamma = (&free.diffusion - &dense.diffusion).norm() / scale;
        assert!(gamma <= AGREE, "{kind}: diffusion {gamma}");
        if kind == ModelKind::Hasme {
            assert!(
                free.steps.drift > 1 && free.steps.diffusion > 1,
                "{:?}",
                free.steps
            );
        }
    }
    for kind in [ModelKind::HasmeExact, ModelKind::Series(2)] {
        let err = matrix_free::coefficients(kind, &local, eta, &o, &k, operator(&h)).unwrap_err();
        assert!(matches!(err, ModelError::DenseOnly { .. }), "{err}");
    }
}

#[test]
fn the_domain_check_trips_just_above_one_over_eta_and_not_just_below() {
    let d = 50;
    let eta = 0.2;
    let mix: Vec<f64> = (0..d * d).map(|i| (i as f64 * 1.3 + 0.5).cos()).collect();
    let g: Vec<f64> = (0..d).map(|i| 1.0 + (i as f64).sin()).collect();
    let x = vec![0.0; d];
    for (edge, inside) in [(0.999, true), (1.001, false)] {
        let mut lambda: Vec<f64> = (0..d).map(|i| -1.0 + 4.0 * i as f64 / d as f64).collect();
        lambda[d - 1] = edge / eta;
        let h = symmetric(&lambda, &mix);
        let o = KrylovOptions::default();
        let drift = hasme_drift(&x, &g, eta, &o, operator(&h));
        let inc = hasme_diffusion_increment(&x, &g, eta, &o, operator(&h));
        for r in [drift, inc] {
            match (inside, r) {
                (true, Ok(_)) => {}
                (
                    false,
                    Err(ModelError::StepSizeTooLarge {
                        lambda_max,
                        inverse_lambda_max,
                        ..
                    }),
                ) => {
                    // The Ritz value named has converged to the eigenvalue.
                    assert!((lambda_max - edge / eta).abs() <= 1e-7 * lambda_max);
                    assert!((inverse_lambda_max - eta / edge).abs() <= 1e-7);
                }
                (inside, r) => panic!("ηλ_max = {edge}: inside = {inside}, got {r:?}"),
            }
        }
    }
}

fn hasme() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_hasme"));
    c.current_dir(env!("CARGO_MANIFEST_DIR"));
    c
}

fn derive_json(linear_algebra: &str) -> serde_json::Value {
    let out = hasme()
        .args([
            "derive",
            "examples/network.hasme",
            "--eta",
            "0.05",
            "--init-seed",
            "3",
            "--model",
            "gf,sme1,sme2,hasme",
            "--json",
            "--linear-algebra",
            linear_algebra,
        ])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn numbers(v: &serde_json::Value) -> Vec<f64> {
    match v {
        serde_json::Value::Number(n) => vec![n.as_f64().unwrap()],
        serde_json::Value::Array(a) => a.iter().flat_map(numbers).collect(),
        _ => Vec::new(),
    }
}

#[test]
fn derive_on_the_network_agrees_dense_and_krylov() {
    let dense = derive_json("dense");
    let krylov = derive_json("krylov");
    assert!(dense.get("krylov_tolerance").is_none());
    assert_eq!(krylov["krylov_tolerance"], serde_json::json!(1e-10));
    for model in ["gf", "sme1", "sme2", "hasme"] {
        let (a, b) = (&dense["models"][model], &krylov["models"][model]);
        assert!(a.get("lanczos_steps").is_none());
        for part in ["drift", "diffusion"] {
            let (x, y) = (numbers(&a[part]), numbers(&b[part]));
            assert_eq!(x.len(), y.len());
            let scale = x
                .iter()
                .map(|v| v * v)
                .sum::<f64>()
                .sqrt()
                .max(f64::MIN_POSITIVE);
            let diff = x
                .iter()
                .zip(&y)
                .map(|(p, q)| (p - q) * (p - q))
                .sum::<f64>()
                .sqrt();
            assert!(diff <= AGREE * scale, "{model} {part}: {diff} vs {scale}");
        }
    }
    let steps = &krylov["models"]["hasme"]["lanczos_steps"];
    // d = 21: at least two steps, at most d.
    for part in ["drift", "diffusion"] {
        let k = steps[part].as_u64().unwrap();
        assert!((2..=21).contains(&k), "{part}: {k}");
    }
}

#[test]
fn bad_options_are_input_errors() {
    for args in [
        vec!["--linear-algebra", "krylov", "--krylov-tol", "0"],
        vec!["--linear-algebra", "krylov", "--krylov-tol", "1.5"],
        vec!["--krylov-tol", "nan"],
        vec!["--krylov-tol", "-1e-8"],
        vec!["--linear-algebra", "dense", "--krylov-tol", "1e-8"],
        vec!["--linear-algebra", "cholesky"],
        vec!["--linear-algebra", "krylov", "--model", "hasme-exact"],
        vec!["--linear-algebra", "krylov", "--model", "all"],
        vec!["--linear-algebra", "krylov", "--series", "2"],
    ] {
        let out = hasme()
            .args(["derive", "examples/network.hasme", "--eta", "0.05"])
            .args(&args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(out.stdout.is_empty(), "{args:?}");
        if args.contains(&"hasme-exact") || args.contains(&"all") {
            assert!(
                stderr.contains("hasme-exact has no matrix-free form"),
                "{stderr}"
            );
            assert!(stderr.contains("eigenbasis"), "{stderr}");
        }
        if args.contains(&"1.5") {
            assert!(stderr.contains("(0, 1)"), "{stderr}");
        }
    }
    // Without --eta there is nothing for the flag to act on.
    let out = hasme()
        .args([
            "derive",
            "examples/network.hasme",
            "--linear-algebra",
            "krylov",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn krylov_outside_the_domain_is_a_model_failure() {
    // As the dense path: the model's error, exit status 1, never NaN.
    let out = hasme()
        .args([
            "derive",
            "examples/network.hasme",
            "--eta",
            "50",
            "--model",
            "hasme",
            "--linear-algebra",
            "krylov",
            "--json",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!stdout.contains("NaN"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("1/λ_max") && stderr.contains("≥ 1 at the point"),
        "{stderr}"
    );
}

#[test]
fn the_finite_sum_factor_times_zeta_has_covariance_sigma() {
    // A = √(κ/n)[∇F_i − ∇f] column by column (ζ = e_i), then AAᵀ against Σ(x) from the
    // problem's own co-moment pass: an independent accumulation of the same matrix.
    use hasme::problem::Overrides;
    use hasme::tape::{Jets, Workspace};
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let p =
        hasme::Problem::from_file(root.join("examples/network.hasme"), &Overrides::none()).unwrap();
    let x = p.start();
    let d = p.dim();
    let n = p.finite_sum().unwrap().n;
    let (mut ws, mut jets) = (Workspace::default(), Jets::default());
    p.gradient_with(&x, &mut ws, &mut jets).unwrap();
    let g = jets.gradient(0).to_vec();
    let mut a = DMatrix::zeros(d, n);
    let mut zeta = vec![0.0; n];
    let mut u = vec![0.0; d];
    for i in 0..n {
        zeta.fill(0.0);
        zeta[i] = 1.0;
        p.noise_factor_times(&x, &g, &zeta, &mut ws, &mut u)
            .unwrap();
        a.set_column(i, &DVector::from_column_slice(&u));
    }
    let sigma = p.noise_cov(&x).unwrap();
    let err = (&a * a.transpose() - &sigma).norm() / sigma.norm();
    // 1e−12: two summation orders of 500 rank-one terms of one sign pattern.
    assert!(err <= 1e-12, "{err}");
    // Linear in ζ: a general ζ gives Aζ.
    let zeta: Vec<f64> = (0..n).map(|i| (i as f64 * 0.37).sin()).collect();
    p.noise_factor_times(&x, &g, &zeta, &mut ws, &mut u)
        .unwrap();
    let reference = &a * DVector::from_column_slice(&zeta);
    assert!((DVector::from_column_slice(&u) - &reference).norm() <= 1e-12 * reference.norm());
    // A wrong number of weights is a usage error.
    let err = p
        .noise_factor_times(&x, &g, &zeta[..n - 1], &mut ws, &mut u)
        .unwrap_err();
    assert!(matches!(err, hasme::ProblemError::Usage(_)), "{err}");
}

#[test]
fn a_zero_drift_and_noise_still_meet_the_domain_check() {
    // g = 0 and Σ = 0: no Lanczos run of the coefficients' own, yet outside the domain
    // it fails as the dense path does, and inside it gives zeros.
    let d = 30;
    let mix: Vec<f64> = (0..d * d).map(|i| (i as f64 * 0.77).sin()).collect();
    let lambda: Vec<f64> = (0..d).map(|i| -2.0 + 0.5 * i as f64).collect(); // λ_max = 12.5
    let h = symmetric(&lambda, &mix);
    let local = Local::new(
        DVector::zeros(d),
        DVector::zeros(d),
        h.clone(),
        DMatrix::zeros(d, d),
    )
    .unwrap();
    let (o, k) = (ModelOptions::default(), KrylovOptions::default());
    for (eta, inside) in [(0.079, true), (0.081, false)] {
        let free = matrix_free::coefficients(ModelKind::Hasme, &local, eta, &o, &k, operator(&h));
        let dense = ModelKind::Hasme.coefficients(&local, eta);
        assert_eq!(free.is_ok(), inside, "η = {eta}");
        assert_eq!(dense.is_ok(), inside, "η = {eta}");
        match free {
            Ok(c) => assert!(c.drift.iter().chain(c.diffusion.iter()).all(|&v| v == 0.0)),
            Err(ModelError::StepSizeTooLarge { lambda_max, .. }) => {
                assert!((lambda_max - 12.5).abs() < 1e-7, "{lambda_max}")
            }
            Err(e) => panic!("{e}"),
        }
        // The same spectrum from a generic g and u: the runs' own checks decide alike
        // (the case where a Ritz value still climbing could pass θ + ‖r‖).
        let v: Vec<f64> = (0..d).map(|i| 1.0 + (i as f64 * 0.3).cos()).collect();
        let x = vec![0.0; d];
        let drift = hasme_drift(&x, &v, eta, &k, operator(&h));
        let inc = hasme_diffusion_increment(&x, &v, eta, &k, operator(&h));
        assert_eq!((drift.is_ok(), inc.is_ok()), (inside, inside), "η = {eta}");
    }
}
