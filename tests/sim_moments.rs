//! The simulator against exact Gaussian moments (docs/models.md §3): on a quadratic with
//! constant correlated noise, the simulated means and second moments of SGD and of every
//! model agree with `hasme::moments` within 4 standard errors.
//!
//! Budget: 10 000 paths. The standard error of a mean is then ≈ 1% of the standard
//! deviation of the quantity, and the integration bias of Talay–Tubaro with 8 substeps
//! (h = η/8 = 0.0125, curvature ≤ 4.1) is below 0.3 standard errors at every checked
//! time (worked out for the stiffest direction: |TT − e^{−λt}| ≤ 1e−4 of the initial
//! deviation). 4 standard errors over 72 comparisons: a false alarm has probability
//! ≈ 0.5% for a random seed, and the seed is fixed.

use hasme::Problem;
use hasme::models::ModelKind;
use hasme::moments::{Gaussian, Quadratic};
use hasme::sim::{SimConfig, SimResult, simulate};

const ETA: f64 = 0.1;
const STEPS: usize = 10;
const PATHS: u64 = 10_000;
/// Talay–Tubaro's own bias with h = 0.0125 along the stiffest direction (λ ≈ 4.1),
/// worked out from the scalar recursion: ≤ 1e−4 × the initial deviation (≈ 1.3),
/// so 2e−4. It matters only for `gf`, whose paths are deterministic (stderr 0).
const INTEGRATION: f64 = 2e-4;

/// The bundled ill-conditioned quadratic with correlated noise, plus the observables
/// needed for first and second moments.
const PROBLEM: &str = "param a = 4.0
param b = 0.5
param c = 0.3
var x = 1.0, y = -1.0
minimize 0.5*a*x^2 + 0.5*b*y^2 + c*x*y - x
noise cov [[0.10, 0.02], [0.02, 0.05]]
observe x = x
observe y = y
observe xx = x^2
observe yy = y^2";

fn series<'a>(r: &'a SimResult, obs: &str, process: &str) -> &'a hasme::sim::Series {
    r.observables
        .iter()
        .find(|o| o.name == obs)
        .and_then(|o| o.processes.iter().find(|s| s.name == process))
        .expect("observable and process present")
}

/// Checks mean and second moments of `process` at step `k` against `exact`.
fn check(r: &SimResult, process: &str, k: usize, exact: &Gaussian) {
    let expected = [
        ("x", exact.mean[0]),
        ("y", exact.mean[1]),
        ("xx", exact.cov[(0, 0)] + exact.mean[0].powi(2)),
        ("yy", exact.cov[(1, 1)] + exact.mean[1].powi(2)),
    ];
    for (obs, want) in expected {
        let s = series(r, obs, process);
        let (mean, se) = (s.mean[k].expect("mean"), s.stderr[k].expect("stderr"));
        assert!(
            (mean - want).abs() <= 4.0 * se + INTEGRATION,
            "{process} {obs} at step {k}: simulated {mean} ± {se}, exact {want} ({:.1} se)",
            (mean - want) / se
        );
    }
}

#[test]
fn simulated_moments_match_the_exact_ones() {
    let problem = Problem::from_str(PROBLEM).expect("valid problem");
    let mut config = SimConfig::builder(ETA, ETA * STEPS as f64, PATHS);
    config.threads(2);
    config.seed(20240501);
    let r = simulate(&problem, &config.build().unwrap()).expect("simulates");
    assert_eq!(r.total_diverged(), 0);
    let q = Quadratic::from_problem(&problem).expect("a quadratic");
    let checked = [2, 5, 10];

    let mut sgd = q.sgd(ETA).expect("SGD moments");
    for k in 1..=STEPS {
        sgd.advance();
        if checked.contains(&k) {
            check(&r, "sgd", k, sgd.gaussian());
            // SGD's sample variance is a real variance (no extrapolation): compare it
            // to C_xx with the standard error of a Gaussian sample variance,
            // σ²√(2/(n−1)).
            let var = series(&r, "x", "sgd").variance[k].expect("variance");
            let c = sgd.gaussian().cov[(0, 0)];
            let se = c * (2.0 / (PATHS as f64 - 1.0)).sqrt();
            assert!(
                (var - c).abs() <= 4.0 * se,
                "sgd Var x at {k}: {var} vs {c}"
            );
        }
    }
    for kind in ModelKind::all() {
        let sde = q.model_sde(kind, ETA).expect("the model's linear SDE").sde;
        for &k in &checked {
            let exact = sde
                .moments(q.start(), k as f64 * ETA)
                .expect("exact moments");
            check(&r, &kind.to_string(), k, &exact);
        }
    }
}

/// Above 16 variables the simulator hands eigendecompositions to nalgebra and model
/// coefficients to `hasme::models`: the same checks on a 20-variable quadratic (a
/// coupled chain, `sum` over vector variables), fewer paths (1000: se ≈ 3% of the
/// spread), 2 substeps (Talay–Tubaro bias at h = 0.05, λ ≤ 3.1: ≈ 3e−4, 0.15 se) and
/// the last step only.
#[test]
fn large_problems_take_the_allocating_path_and_agree_too() {
    let problem = Problem::from_str(
        "param n = 20
var w[n] = 0.5
minimize sum(i = 1..n, 0.5*(1 + i/10)*w[i]^2) + sum(i = 1..n-1, 0.1*w[i]*w[i+1]) - w[1]
noise sd 0.3
observe x = w[1]
observe y = w[20]
observe xx = w[1]^2
observe yy = w[20]^2",
    )
    .expect("valid problem");
    assert_eq!(problem.dim(), 20);
    let mut config = SimConfig::builder(ETA, 0.5, 1000);
    config.models(vec![ModelKind::Sme1, ModelKind::HasmeExact]);
    config.threads(2);
    config.substeps(2);
    config.every(5);
    let r = simulate(&problem, &config.build().unwrap()).expect("simulates");
    assert_eq!(r.total_diverged(), 0);
    let q = Quadratic::from_problem(&problem).expect("a quadratic");
    let mut sgd = q.sgd(ETA).expect("SGD moments");
    (0..5).for_each(|_| sgd.advance());
    let last = |g: &Gaussian| {
        let n = 19;
        Gaussian {
            mean: nalgebra::DVector::from_vec(vec![g.mean[0], g.mean[n]]),
            cov: nalgebra::DMatrix::from_row_slice(
                2,
                2,
                &[g.cov[(0, 0)], g.cov[(0, n)], g.cov[(n, 0)], g.cov[(n, n)]],
            ),
        }
    };
    check(&r, "sgd", 1, &last(sgd.gaussian()));
    for kind in config.build().unwrap().models() {
        let sde = q.model_sde(*kind, ETA).expect("linear SDE").sde;
        let exact = sde.moments(q.start(), 0.5).expect("exact moments");
        check(&r, &kind.to_string(), 1, &last(&exact));
    }
}
