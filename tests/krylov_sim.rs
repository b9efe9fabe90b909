//! The simulators on matrix-free coefficients (docs/models.md §8): `sme1` and `sme2`
//! step exactly as on the dense path when they share its noise, `hasme` agrees in law,
//! a finite sum's noise by the factor of Σ (n-dimensional) keeps SGD's Gaussian
//! surrogate coupled to the models, the domain check makes a path that leaves
//! `ηλ_max < 1` diverge, and the numbers do not depend on the threads.
//!
//! Statistical comparisons use fixed seeds and bands of 4 standard errors of the
//! difference of two estimates, `√(se₁² + se₂²)` (conservative: the two runs share
//! their Brownian paths, so their errors are positively correlated).

mod common;

use common::{hasme, json, stderr, temp_file};
use hasme::Problem;
use hasme::models::ModelKind;
use hasme::models::matrix_free::LinearAlgebra;
use hasme::sim::{Coupling, SimConfig, SimResult, simulate};

/// d = 6 (past the lane-batched sizes), smooth, not quadratic, constant full Σ.
const SMOOTH: &str = "var x[6] = 0.3\n\
    minimize sum(i = 1..6, 0.5*i*x[i]^2) + sum(i = 1..5, 0.3*cos(x[i])*x[i + 1]) + 0.002*sum(i = 1..6, x[i])^4 + sum(i = 1..6, 0.05*i*x[i])\n\
    noise cov [[0.5, 0.1, 0, 0, 0, 0], [0.1, 0.4, 0.05, 0, 0, 0], [0, 0.05, 0.3, 0, 0, 0], \
    [0, 0, 0, 0.2, 0.02, 0], [0, 0, 0, 0.02, 0.3, 0], [0, 0, 0, 0, 0, 0.1]]\n\
    observe phi = sum(i = 1..6, x[i]^2)";

fn run(
    problem: &Problem,
    models: &[ModelKind],
    la: LinearAlgebra,
    eta: f64,
    paths: u64,
    configure: impl Fn(&mut hasme::sim::SimConfigBuilder),
) -> SimResult {
    let mut c = SimConfig::builder(eta, 0.4, paths);
    c.models(models.to_vec())
        .linear_algebra(Some(la))
        .substeps(4)
        .seed(11)
        .threads(2);
    configure(&mut c);
    simulate(problem, &c.build().unwrap()).expect("runs")
}

/// (mean, stderr) of model `m`'s difference to SGD at the horizon.
fn diff(r: &SimResult, m: usize) -> (f64, f64) {
    let s = &r.observables[0].processes[m + 1];
    let t = r.times.len() - 1;
    (
        s.diff_mean.as_ref().unwrap()[t].unwrap(),
        s.diff_stderr.as_ref().unwrap()[t].unwrap(),
    )
}

#[test]
fn sme_paths_are_the_dense_paths_and_hasme_agrees_in_law() {
    let p = Problem::from_str(SMOOTH).unwrap();
    let models = [ModelKind::Sme1, ModelKind::Sme2, ModelKind::Hasme];
    let dense = run(&p, &models, LinearAlgebra::Dense, 0.1, 2000, |_| {});
    let free = run(&p, &models, LinearAlgebra::Krylov, 0.1, 2000, |_| {});
    assert_eq!(dense.krylov_tolerance, None);
    assert_eq!(free.krylov_tolerance, Some(1e-10));
    let t = dense.times.len() - 1;
    for m in 0..3 {
        let (a, b) = (
            &dense.observables[0].processes[m + 1],
            &free.observables[0].processes[m + 1],
        );
        let (ma, mb) = (a.mean[t].unwrap(), b.mean[t].unwrap());
        if m < 2 {
            // The same noise, the same moves to round-off: path by path.
            assert!(
                (ma - mb).abs() <= 1e-10 * ma.abs(),
                "{}: {ma} vs {mb}",
                a.name
            );
        } else {
            // Another square root of the same Γ: equal in law only.
            let ((da, sa), (db, sb)) = (diff(&dense, m), diff(&free, m));
            let band = 4.0 * (sa * sa + sb * sb).sqrt();
            assert!((da - db).abs() <= band, "hasme: {da} ± {sa} vs {db} ± {sb}");
            assert!(ma != mb, "hasme's increments are a different root");
        }
    }
}

/// A finite sum on the factor: the models are driven by n-dimensional noise and SGD's
/// Gaussian surrogate by the same factor, so each model's difference to SGD agrees
/// with the dense run's in law, and stays coupled: its standard error is far below
/// that of an independent run of the same size.
#[test]
fn the_factor_keeps_finite_sums_coupled_and_equal_in_law() {
    let file = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/finite_sum.hasme");
    let p = Problem::from_file(file, &hasme::Overrides::none()).unwrap();
    let models = [ModelKind::Sme1, ModelKind::Sme2, ModelKind::Hasme];
    let gaussian = |c: &mut hasme::sim::SimConfigBuilder| {
        c.gaussian_sgd(true);
    };
    let dense = run(&p, &models, LinearAlgebra::Dense, 0.2, 4000, gaussian);
    let free = run(&p, &models, LinearAlgebra::Krylov, 0.2, 4000, gaussian);
    let loose = run(&p, &models, LinearAlgebra::Krylov, 0.2, 4000, |c| {
        c.gaussian_sgd(true).coupling(Coupling::Independent);
    });
    for m in 0..3 {
        let ((da, sa), (db, sb)) = (diff(&dense, m), diff(&free, m));
        let band = 4.0 * (sa * sa + sb * sb).sqrt();
        assert!(
            (da - db).abs() <= band,
            "model {m}: {da} ± {sa} vs {db} ± {sb}"
        );
        let (_, independent) = diff(&loose, m);
        assert!(
            sb < independent / 10.0,
            "model {m}: coupled se {sb} vs independent {independent}"
        );
    }
    // SGD itself: the surrogate by the factor and by Σ^{1/2} agree in law.
    let t = dense.times.len() - 1;
    let (a, b) = (
        &dense.observables[0].processes[0],
        &free.observables[0].processes[0],
    );
    let band = 4.0 * (a.stderr[t].unwrap().powi(2) + b.stderr[t].unwrap().powi(2)).sqrt();
    assert!((a.mean[t].unwrap() - b.mean[t].unwrap()).abs() <= band);
}

/// H = diag(8, 12) and η = 0.1: ηλ_max = 1.2, outside HA-SME's domain. Every `hasme`
/// path diverges at its first step on both paths, naming the step size; `sme2` (no
/// domain) runs on.
#[test]
fn hasme_leaves_its_domain_on_both_paths() {
    let p = Problem::from_str("var x = 1, y = -1\nminimize 4*x^2 + 6*y^2\nnoise sd 0.1").unwrap();
    for la in [LinearAlgebra::Dense, LinearAlgebra::Krylov] {
        let r = run(&p, &[ModelKind::Sme2, ModelKind::Hasme], la, 0.1, 8, |_| {});
        assert_eq!(r.diverged, vec![0, 0, 8], "{la}");
        let first = r.first_divergence[2].as_ref().unwrap();
        assert_eq!(first.step, 0, "{la}");
        assert!(first.reason.contains("1/"), "{la}: {}", first.reason);
    }
}

#[test]
fn matrix_free_runs_do_not_depend_on_the_threads() {
    let file = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/finite_sum.hasme");
    let args = |threads: &'static str| {
        let o = hasme(&[
            "simulate",
            file,
            "--eta",
            "0.2",
            "--horizon",
            "0.4",
            "--paths",
            "300",
            "--models",
            "sme2,hasme",
            "--linear-algebra",
            "krylov",
            "--sgd-noise",
            "gaussian",
            "--threads",
            threads,
            "--json",
            "--quiet",
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
        o.stdout
    };
    let one = args("1");
    assert_eq!(one, args("2"));
    let v: serde_json::Value = serde_json::from_slice(&one).unwrap();
    assert_eq!(v["linear_algebra"], "krylov");
    assert_eq!(v["krylov_tol"], 1e-10);
    assert_eq!(v["coupling"], "coupled");
    assert_eq!(v["sgd_noise"], "gaussian");
    let steps = &v["lanczos_steps"];
    // 300 paths × 2 steps × 8 substeps × 3 evaluations (Talay–Tubaro) of hasme.
    assert_eq!(steps["evaluations"], 14400);
    let mean = steps["drift"]["mean"].as_f64().unwrap();
    assert!(
        (1.0..=2.0).contains(&mean),
        "d = 2: at most 2 steps, {steps}"
    );
    assert!(steps["diffusion"]["max"].as_u64().unwrap() <= 2);
}

#[test]
fn bad_coefficient_settings_are_input_errors() {
    let file = temp_file(
        "krylov_sim_bad.hasme",
        "var x = 1\nminimize x^2\nnoise sd 0.1",
    );
    let f = file.to_str().unwrap();
    for (args, says) in [
        (
            vec![
                "simulate",
                f,
                "--eta",
                "0.1",
                "--horizon",
                "0.2",
                "--models",
                "hasme-exact",
                "--linear-algebra",
                "krylov",
            ],
            "eigenbasis",
        ),
        (
            vec![
                "escape",
                f,
                "--eta",
                "0.1",
                "--radius",
                "2",
                "--models",
                "series:2",
                "--linear-algebra",
                "krylov",
            ],
            "d×d",
        ),
        (
            vec![
                "weak-order",
                f,
                "--etas",
                "0.1",
                "--horizon",
                "0.2",
                "--models",
                "hasme-exact",
                "--linear-algebra",
                "krylov",
            ],
            "eigenbasis",
        ),
        (
            vec![
                "simulate",
                f,
                "--eta",
                "0.1",
                "--horizon",
                "0.2",
                "--linear-algebra",
                "dense",
                "--krylov-tol",
                "1e-8",
            ],
            "--krylov-tol",
        ),
        (
            vec![
                "simulate",
                f,
                "--eta",
                "0.1",
                "--horizon",
                "0.2",
                "--krylov-tol",
                "0",
            ],
            "--krylov-tol",
        ),
        (
            vec![
                "weak-order",
                f,
                "--etas",
                "0.1",
                "--horizon",
                "0.2",
                "--method",
                "quadrature",
                "--linear-algebra",
                "krylov",
            ],
            "monte-carlo only",
        ),
    ] {
        let o = hasme(&args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(says), "{args:?}: {}", stderr(&o));
    }
}

/// Dense runs print no coefficient fields (every existing output is unchanged);
/// matrix-free ones name the tolerance, in `escape` and `weak-order` too.
#[test]
fn reports_say_when_the_coefficients_were_matrix_free() {
    let file = temp_file(
        "krylov_sim_report.hasme",
        "var x = 0.1, y = 0\nminimize 0.5*x^2 - 0.5*y^2 + 0.25*y^4\nnoise sd 0.3",
    );
    let f = file.to_str().unwrap();
    let escape = |la: &str| {
        json(&hasme(&[
            "escape",
            f,
            "--eta",
            "0.1",
            "--radius",
            "0.5",
            "--paths",
            "40",
            "--max-steps",
            "200",
            "--models",
            "sme2,hasme",
            "--linear-algebra",
            la,
            "--json",
            "--quiet",
        ]))
    };
    assert!(escape("dense").get("linear_algebra").is_none());
    assert_eq!(escape("krylov")["krylov_tol"], 1e-10);
    let weak = json(&hasme(&[
        "weak-order",
        f,
        "--etas",
        "0.2,0.1",
        "--horizon",
        "0.4",
        "--paths",
        "40",
        "--models",
        "sme2,hasme",
        "--linear-algebra",
        "krylov",
        "--krylov-tol",
        "1e-9",
        "--json",
        "--quiet",
    ]));
    assert_eq!(weak["linear_algebra"], "krylov");
    assert_eq!(weak["krylov_tol"], 1e-9);
}

/// Beyond the dense limit (d = 6000 > 5000): a matrix-free run with `noise sd` (read as
/// its diagonal) needs no d×d matrix and runs; what needs one (`derive`'s Hessian, a
/// dense run) is an input error saying so.
#[test]
fn beyond_the_dense_limit_only_the_matrix_free_path_runs() {
    let file = temp_file(
        "krylov_sim_large.hasme",
        "var w[6000] = 0.5\nminimize sum(i = 1..6000, 0.5*w[i]^2 + 0.1*cos(w[i]))\nnoise sd 0.1",
    );
    let f = file.to_str().unwrap();
    let run = |extra: &[&str]| {
        let mut args = vec![
            "simulate",
            f,
            "--eta",
            "0.1",
            "--horizon",
            "0.2",
            "--paths",
            "4",
            "--models",
            "sme2,hasme",
            "--substeps",
            "2",
            "--json",
            "--quiet",
        ];
        args.extend(extra);
        hasme(&args)
    };
    let v = json(&run(&[]));
    assert_eq!(v["linear_algebra"], "krylov");
    assert_eq!(v["diverged"]["hasme"], 0);
    for o in [run(&["--linear-algebra", "dense"]), hasme(&["derive", f])] {
        assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
        assert!(stderr(&o).contains("dense limit of 5000"), "{}", stderr(&o));
    }
}
