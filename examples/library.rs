//! Using hasme as a library: parse an objective, override a param, evaluate exact
//! derivatives, compare the SDE models' coefficients at a point, then run the analyses
//! the commands run (exact moments, Monte Carlo, escape times) and print their text and
//! JSON forms.
//!
//! Run: `cargo run --release --example library`

use hasme::{
    ErrorKind, EscapeConfig, Model, ModelKind, MomentsConfig, Overrides, Problem, Region,
    SimConfig, compare_moments, escape, simulate,
};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let source = hasme::lang::Source::new(
        "inline.hasme",
        "param lambda = 2
         var x = 0.3, y = -0.2
         minimize 0.5*lambda*x^2 - 0.5*y^2 + 0.125*(x^2 + y^2)^2
         noise diag [0.02, 0.01]",
    );
    let problem = Problem::from_source(source, &Overrides::none().set("lambda", 4.0))?;
    let x = problem.start();
    let d = problem.derivatives(&x)?;
    println!("f(x)   = {}", d.value);
    println!("∇f(x)  = {:?}", d.gradient.as_slice());
    println!("∇²f(x) = {:?}", d.hessian.as_slice());

    let local = problem.local(&x)?;
    let eta = 0.1;
    for model in ModelKind::all() {
        let c = model.coefficients(&local, eta)?;
        println!(
            "{:<12} drift {:?}  diffusion diag {:?}",
            model.name(),
            c.drift.as_slice(),
            c.diffusion.diagonal().as_slice()
        );
    }

    // Monte Carlo of SGD beside two models: settings are checked when built.
    let config = SimConfig::builder(eta, 1.0, 2000)
        .models(vec![ModelKind::Sme1, ModelKind::Hasme])
        .threads(2)
        .build()?;
    let result = simulate(&problem, &config)?;
    println!("\n{result}");

    // Escape from the saddle at the origin: the time to leave the ball of radius 1.
    let config = EscapeConfig::builder(eta, 2000, 500, Region::ball(1.0))
        .models(vec![ModelKind::Hasme])
        .build()?;
    let report = escape(&problem, &config)?;
    println!("\n{report}");
    // The JSON form is the one `hasme escape --json` prints (without `file`).
    let json = serde_json::to_value(&report)?;
    println!(
        "mean escape time of SGD: {}",
        json["models"]["sgd"]["mean_time"]
    );

    // Exact moments need a quadratic with constant noise: this problem is quartic, so
    // the error says the input does not fit, which a caller can tell from a failure.
    let err = compare_moments(&problem, &MomentsConfig::new(eta, 50)?).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Input);
    println!("\nmoments: {err}");
    Ok(())
}
