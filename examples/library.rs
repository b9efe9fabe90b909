//! Using hasme as a library: parse an objective, override a param, evaluate exact
//! derivatives, and compare the SDE models' coefficients at a point.
//!
//! Run: `cargo run --release --example library`

use hasme::models::{Model, ModelKind};
use hasme::{Overrides, Problem};

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
    Ok(())
}
