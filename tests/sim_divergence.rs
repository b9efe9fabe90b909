//! Divergence is counted per process, reported with the first path, step, point and
//! reason, and kept out of the statistics (never averaged in as NaN); a Σ(x) that is
//! not a covariance at a reached point stops the run with an error naming it.

use hasme::Problem;
use hasme::models::ModelKind;
use hasme::sim::{SimConfig, SimError, simulate};

/// f = 2x²: λ = 4, so η = 0.3 puts ηλ = 1.2 outside the domain of the HA-SME models,
/// while SGD (|1 − ηλ| = 0.2 < 1) and SME-1 are fine.
#[test]
fn step_size_beyond_one_over_lambda_max_diverges_hasme_on_every_path() {
    let problem = Problem::from_str("var x = 1\nminimize 2*x^2\nnoise sd 0.1").unwrap();
    let mut c = SimConfig::builder(0.3, 1.5, 300);
    c.models(vec![
        ModelKind::Sme1,
        ModelKind::Hasme,
        ModelKind::HasmeExact,
    ]);
    let r = simulate(&problem, &c.build().unwrap()).expect("divergences are results, not errors");
    assert_eq!(r.diverged, vec![0, 0, 300, 300]);
    assert_eq!(r.pairs, vec![None, Some(300), Some(0), Some(0)]);
    let first = r.first_divergence[2].as_ref().expect("reported");
    assert_eq!(
        (first.path, first.step, first.point.clone()),
        (0, 0, vec![1.0])
    );
    assert!(first.reason.contains("1/λ_max = 0.25"), "{}", first.reason);
    for o in &r.observables {
        let hasme = &o.processes[2];
        assert!(hasme.mean.iter().all(Option::is_none));
        assert!(
            hasme
                .diff_mean
                .as_ref()
                .unwrap()
                .iter()
                .all(Option::is_none)
        );
        assert!(o.processes[1].mean.iter().all(Option::is_some));
    }
    let json = serde_json::to_string(&r).unwrap();
    assert!(!json.contains("NaN"), "{json}");
    let value = serde_json::to_value(&r).unwrap();
    assert_eq!(value["diverged"]["hasme"], 300);
    assert!(value["observables"]["x"]["hasme"]["mean"][0].is_null());
}

/// SGD on x⁴/4 with η = 0.5 blows up once |x| > 2 (then |x_{k+1}| ≈ ηx³ grows without
/// bound): with unit noise some paths get there and some do not.
fn quartic() -> (Problem, hasme::SimConfigBuilder) {
    let problem =
        Problem::from_str("var x = 1\nminimize 0.25*x^4\nnoise sd 1.5\nobserve x2 = x^2").unwrap();
    let mut c = SimConfig::builder(0.5, 10.0, 600);
    c.models(vec![ModelKind::Sme1]);
    c.substeps(2);
    c.seed(9);
    (problem, c)
}

#[test]
fn blow_ups_are_counted_and_left_out() {
    let (problem, c) = quartic();
    let r = simulate(&problem, &c.build().unwrap()).expect("runs");
    let n = r.diverged[0];
    assert!(0 < n && n < 600, "{n} of 600 SGD paths diverged");
    let first = r.first_divergence[0].clone().expect("reported");
    // Either the iterate overflowed or f itself did at the last finite point.
    assert!(
        first.reason.contains("non-finite") || first.reason.contains("evaluates to inf"),
        "{}",
        first.reason
    );
    assert_eq!(first.time, first.step as f64 * 0.5);
    // The first divergence is on the smallest path index: the paths before it are clean.
    let mut before = c.clone();
    before.paths(first.path);
    if first.path > 0 {
        assert_eq!(
            simulate(&problem, &before.build().unwrap())
                .unwrap()
                .diverged[0],
            0
        );
    }
    before.paths(first.path + 1);
    assert_eq!(
        simulate(&problem, &before.build().unwrap())
            .unwrap()
            .diverged[0],
        1
    );
    // Survivors' statistics are numbers or null, never NaN (a survivor about to blow
    // up can still overflow a sum of squares: that statistic is null too).
    let sgd = &r.observables[0].processes[0];
    assert!(
        sgd.mean
            .iter()
            .chain(&sgd.stderr)
            .flatten()
            .all(|v| v.is_finite())
    );
    assert_eq!(sgd.mean[0], Some(1.0));
    assert!(sgd.mean[1].is_some());
    let pairs = r.pairs[1].unwrap();
    assert!(pairs <= 600 - n.max(r.diverged[1]));
    // Threads do not change which divergence comes first.
    let mut two = c.clone();
    two.threads(2);
    assert_eq!(simulate(&problem, &two.build().unwrap()).unwrap(), r);
}

/// Σ(x) = 1 − x stops being a variance once the drift (f = −x pushes x up by η per
/// step) carries x past 1: the problem is at fault, so the run stops with an error
/// naming the path, the step and the point.
#[test]
fn an_invalid_covariance_at_a_reached_point_is_an_error() {
    let problem = Problem::from_str("var x = 0\nminimize -x\nnoise diag [1 - x]").unwrap();
    let mut c = SimConfig::builder(0.1, 3.0, 10);
    c.models(vec![]);
    let err = simulate(&problem, &c.build().unwrap()).expect_err("Σ(x) < 0 is reached");
    assert!(matches!(err, SimError::Problem { path: 0, .. }), "{err}");
    assert_eq!(err.kind(), hasme::ErrorKind::Run);
    let text = err.to_string();
    assert!(text.starts_with("path 0, step "), "{text}");
    assert!(text.contains("positive semidefinite"), "{text}");
}

/// The same in two dimensions, where SGD's Σ(x) is evaluated over blocks of paths: the
/// lane that reaches the invalid covariance is stepped alone and reported the same way.
#[test]
fn an_invalid_covariance_in_a_block_is_the_same_error() {
    let problem =
        Problem::from_str("var x = 0, y = 0\nminimize -x + y^2\nnoise cov [[1 - x, 0], [0, 1]]")
            .unwrap();
    let mut c = SimConfig::builder(0.1, 3.0, 10);
    c.models(vec![ModelKind::Hasme]);
    let err = simulate(&problem, &c.build().unwrap()).expect_err("Σ(x) is not PSD once x > 1");
    assert!(matches!(err, SimError::Problem { path: 0, .. }), "{err}");
    let text = err.to_string();
    assert!(text.starts_with("path 0, step "), "{text}");
    assert!(text.contains("positive semidefinite"), "{text}");
    // The same on a path stepped alone (one path: a block of one lane) and on two threads.
    c.paths(1);
    assert_eq!(
        simulate(&problem, &c.build().unwrap())
            .expect_err("same")
            .to_string(),
        text
    );
    c.paths(10);
    c.threads(2);
    assert_eq!(
        simulate(&problem, &c.build().unwrap())
            .expect_err("same")
            .to_string(),
        text
    );
}
