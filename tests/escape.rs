//! Escape times on a quadratic saddle (docs/models.md §5): `hasme` reproduces SGD's
//! escape-time distribution, `sme1` is biased and more so as η|λ_min| grows; censoring
//! at a tiny cap; the three ways of giving the region agree; threads change nothing.

use hasme::Problem;
use hasme::escape::{EscapeConfig, EscapeReport, Region, escape};
use hasme::models::ModelKind;
use hasme::sim::Coupling;

/// f = x²/2 − κy²/2, Σ = 0.01 I, from the saddle point: the escape along y is driven
/// by the noise alone.
fn saddle(kappa: f64) -> Problem {
    Problem::from_str(&format!(
        "param kappa = {kappa}\nvar x = 0, y = 0\nminimize 0.5*x^2 - 0.5*kappa*y^2\nnoise sd 0.1"
    ))
    .unwrap()
}

fn run(problem: &Problem, config: &EscapeConfig) -> EscapeReport {
    escape(problem, config).unwrap()
}

fn saddle_config(eta: f64, paths: u64, models: Vec<ModelKind>) -> hasme::EscapeConfigBuilder {
    let mut c = EscapeConfig::builder(eta, 2000, paths, Region::ball(1.0));
    c.models(models);
    c.threads(2);
    c
}

#[test]
fn hasme_escape_times_match_sgd_and_sme1_are_biased() {
    // η|λ_min| = 0.2. Independent noise, so that the two-sample KS p-value is calibrated.
    // n = 2000 paths per process: the 1 % critical KS distance is 1.63/√1000 ≈ 0.052,
    // while sme1's rate κ against SGD's log(1 + ηκ)/η (9.7 % faster) moves the escape
    // time by ≈ 0.23 on a spread of ≈ 0.6, a KS distance of ≈ 0.2.
    // 32 substeps: Euler–Maruyama's own bias on the growth rate, ≈ hμ/2 (0.3 % here),
    // stays far below what n = 2000 can resolve (standard error of the mean ≈ 1 %).
    let p = saddle(2.0);
    let mut c = saddle_config(0.1, 2000, vec![ModelKind::Hasme, ModelKind::Sme1]);
    c.coupling(Coupling::Independent);
    c.substeps(32);
    c.seed(7);
    let r = run(&p, &c.build().unwrap());
    let (sgd, hasme, sme1) = (&r.processes[0], &r.processes[1], &r.processes[2]);
    assert_eq!(
        sgd.escaped, 2000,
        "every path leaves the unit ball by the cap"
    );
    assert!(!sgd.mean_restricted);
    let hasme_p = hasme.ks_pvalue.unwrap();
    assert!(hasme_p > 0.05, "hasme vs SGD: KS p = {hasme_p}");
    let shift = hasme.mean_shift_in_stderr(sgd).unwrap();
    assert!(
        shift.abs() < 3.0,
        "hasme mean off by {shift} standard errors"
    );
    let sme1_p = sme1.ks_pvalue.unwrap();
    assert!(sme1_p < 1e-6, "sme1 vs SGD: KS p = {sme1_p}");
    let shift = sme1.mean_shift_in_stderr(sgd).unwrap();
    // sme1 escapes early: by ≈ 0.23 against a combined standard error ≈ 0.02.
    assert!(
        shift < -8.0,
        "sme1 mean off by only {shift} standard errors"
    );
}

#[test]
fn coupled_sme1_bias_grows_with_eta_lambda() {
    // Coupled: the paired difference of escape times has a standard error ≈ 0.005 for
    // 1000 paths, far below the biases (≈ 4 % and ≈ 11 % of a mean ≈ 2.5 at
    // η|λ| = 0.1 and 0.3, from the rates log(1 + η|λ|)/η against |λ|).
    let p = saddle(2.0);
    let relative_bias = |eta: f64| {
        let r = run(
            &p,
            &saddle_config(eta, 1000, vec![ModelKind::Sme1])
                .build()
                .unwrap(),
        );
        let (sgd, sme1) = (&r.processes[0], &r.processes[1]);
        let (d, se) = (sme1.mean_diff.unwrap(), sme1.mean_diff_stderr.unwrap());
        let mean = sgd.mean_time.unwrap();
        assert!(d < -10.0 * se, "η = {eta}: sme1 − sgd = {d} ± {se}");
        (d / mean, se / mean)
    };
    let (small, se_small) = relative_bias(0.05);
    let (large, se_large) = relative_bias(0.15);
    assert!(
        large < small - 5.0 * se_small.hypot(se_large),
        "bias {small} at η|λ| = 0.1, {large} at 0.3"
    );
}

#[test]
fn exact_growth_rates_accompany_the_quadratic_saddle() {
    let p = saddle(2.0);
    let r = run(
        &p,
        &saddle_config(0.1, 10, ModelKind::all().to_vec())
            .build()
            .unwrap(),
    );
    let g = r.growth_rates.as_ref().unwrap();
    assert_eq!(g.lambda_min, -2.0);
    assert!((g.sgd - 1.2).abs() < 1e-15);
    for (kind, rate) in &g.models {
        let rate = *rate.as_ref().unwrap();
        let expected = match kind {
            // hasme's drift matrix is log(I − ηH)/η: e^{μη} = 1 − ηλ exactly.
            ModelKind::Hasme | ModelKind::HasmeExact => 1.2,
            ModelKind::Sme1 => 0.2f64.exp(),
            // −H − ηH²/2 along λ = −2: μ = 2 − 0.2.
            ModelKind::Sme2 => 0.18f64.exp(),
            ModelKind::Gf => 0.2f64.exp(),
            _ => continue,
        };
        assert!((rate - expected).abs() < 1e-12, "{kind}: {rate}");
    }
    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(
        json["models"]["hasme"]["growth_rate"],
        serde_json::json!(1.2)
    );
}

#[test]
fn with_a_tiny_cap_survival_is_the_empirical_fraction() {
    // Cap 8 steps (t = 0.8): about a tenth of the paths escape; every other path is
    // censored at the cap, so the KM curve must be the plain empirical survival.
    let p = saddle(2.0);
    let mut c = saddle_config(0.1, 1000, vec![ModelKind::Sme1]);
    c.max_steps(8);
    c.region(Region::ball(0.05));
    let r = run(&p, &c.build().unwrap());
    for proc in &r.processes {
        assert_eq!(proc.escaped + proc.censored, 1000);
        assert!(proc.escaped > 0 && proc.censored > 0, "{}", proc.escaped);
        assert!(proc.mean_restricted);
        let fraction = proc.escaped as f64 / 1000.0;
        assert!((proc.escaped_fraction.unwrap() - fraction).abs() < 1e-12);
        let mut escaped = 0;
        for s in proc.survival.steps() {
            escaped += s.events;
            let empirical = 1.0 - escaped as f64 / 1000.0;
            assert!((s.survival - empirical).abs() < 1e-12, "t = {}", s.time);
            assert_eq!(s.at_risk, 1000 - (escaped - s.events));
        }
        // The restricted mean is the area under the step curve: η Σ_{k<K} Ŝ(kη).
        let area: f64 = (0..8)
            .map(|k| 0.1 * proc.survival.survival(k as f64 * 0.1))
            .sum();
        assert!((proc.mean_time.unwrap() - area).abs() < 1e-12);
        if fraction < 0.5 {
            assert_eq!(proc.median_time, None);
        }
    }
}

#[test]
fn ball_expression_and_file_statement_give_the_same_times() {
    let ball = run(
        &saddle(2.0),
        &saddle_config(0.1, 300, vec![ModelKind::Hasme])
            .build()
            .unwrap(),
    );
    let mut c = saddle_config(0.1, 300, vec![ModelKind::Hasme]);
    c.region(Region::When("x^2 + y^2 - 1".into()));
    let when = run(&saddle(2.0), &c.build().unwrap());
    let file = Problem::from_str(
        "param kappa = 2\nvar x = 0, y = 0\nminimize 0.5*x^2 - 0.5*kappa*y^2\nnoise sd 0.1\n\
         escape when x^2 + y^2 > 1",
    )
    .unwrap();
    c.region(Region::File);
    let stated = run(&file, &c.build().unwrap());
    for (a, b) in ball.processes.iter().zip(&when.processes) {
        assert_eq!(a.survival, b.survival);
    }
    for (a, b) in ball.processes.iter().zip(&stated.processes) {
        assert_eq!(a.survival, b.survival);
    }
}

#[test]
fn the_when_expression_sees_params_lets_and_overrides() {
    let p = Problem::from_file(
        write_file(
            "lets.hasme",
            "param r = 5\nvar x = 0, y = 0\nlet d2 = x^2 + y^2\nminimize 0.5*x^2 - y^2\nnoise sd 0.1",
        ),
        &hasme::Overrides::none().set("r", 1.0),
    )
    .unwrap();
    let mut c = saddle_config(0.1, 100, vec![]);
    c.region(Region::When("d2 - r^2".into()));
    let when = run(&p, &c.build().unwrap());
    c.region(Region::ball(1.0));
    let ball = run(&p, &c.build().unwrap());
    assert_eq!(when.processes[0].survival, ball.processes[0].survival);
    // Unknown names and syntax errors are the user's: exit status 2.
    for bad in ["d3 - 1", "x^^2"] {
        c.region(Region::When(bad.into()));
        let err = escape(&p, &c.build().unwrap()).unwrap_err();
        assert_eq!(err.kind(), hasme::ErrorKind::Input, "{bad}: {err}");
    }
    // Starting outside the region is a bad setting.
    c.region(Region::When("1 - x^2".into()));
    assert_eq!(
        escape(&p, &c.build().unwrap()).unwrap_err().kind(),
        hasme::ErrorKind::Input
    );
}

fn write_file(name: &str, text: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("hasme-escape-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn the_numbers_do_not_depend_on_the_threads() {
    // 600 paths: three chunks of 256, the last one partial.
    let p = saddle(2.0);
    let mut c = saddle_config(0.1, 600, vec![ModelKind::Sme2, ModelKind::Hasme]);
    c.threads(1);
    let one = run(&p, &c.build().unwrap());
    c.threads(3);
    let three = run(&p, &c.build().unwrap());
    assert_eq!(one, three);
    c.seed(1);
    assert_ne!(one, run(&p, &c.build().unwrap()));
}

#[test]
fn divergence_censors_and_is_reported() {
    // ηλ_max = 1.5 ≥ 1: hasme is undefined everywhere, so every path diverges at step
    // 0; its curve is unidentified beyond t = 0 and its mean is None, never NaN.
    let p = saddle(2.0);
    let mut c = saddle_config(1.5, 50, vec![ModelKind::Hasme]);
    c.max_steps(20);
    c.region(Region::ball(1e6));
    let r = run(&p, &c.build().unwrap());
    let h = &r.processes[1];
    assert_eq!(h.diverged, 50);
    assert_eq!(h.mean_time, None);
    assert_eq!(h.escaped_fraction, None);
    assert_eq!(h.first_divergence.as_ref().unwrap().path, 0);
    assert!(
        h.first_divergence
            .as_ref()
            .unwrap()
            .reason
            .contains("λ_max")
    );
    let text = serde_json::to_string(&r).unwrap();
    assert!(!text.contains("NaN"));
}

#[test]
fn bad_settings_are_config_errors() {
    let p = saddle(2.0);
    let ok = saddle_config(0.1, 10, vec![ModelKind::Hasme]);
    type Edit = Box<dyn Fn(&mut hasme::EscapeConfigBuilder)>;
    let cases: Vec<Edit> = vec![
        Box::new(|c| _ = c.eta(0.0)),
        Box::new(|c| _ = c.eta(f64::NAN)),
        Box::new(|c| _ = c.max_steps(0)),
        Box::new(|c| _ = c.paths(0)),
        Box::new(|c| _ = c.substeps(0)),
        Box::new(|c| _ = c.threads(0)),
        Box::new(|c| _ = c.region(Region::ball(-1.0))),
        Box::new(|c| _ = c.region(Region::File)),
        Box::new(|c| {
            c.region(Region::Ball {
                centre: Some(vec![0.0]),
                radius: 1.0,
            });
        }),
        Box::new(|c| _ = c.models(vec![ModelKind::Hasme, ModelKind::Hasme])),
    ];
    for (i, f) in cases.iter().enumerate() {
        let mut c = ok.clone();
        f(&mut c);
        // Settings are checked when built; what needs the problem, when run.
        let err = match c.build() {
            Err(e) => e,
            Ok(c) => escape(&p, &c).unwrap_err(),
        };
        assert_eq!(err.kind(), hasme::ErrorKind::Input, "case {i}: {err}");
    }
}
