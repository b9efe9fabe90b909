//! One HA-SME evaluation of a finite sum from the library, timed: what a simulator
//! step of `hasme` needs at large d without any d×d matrix (docs/models.md §8).
//!
//! At the point x: ∇f over the rows (in blocks) and, in the same pass, the noise
//! `u = Aζ` with the finite sum's factor `A = √(κ/n)[∇F_i − ∇f]` for a given ζ ∈ Rⁿ
//! (`Problem::gradient_and_factor_with`), the drift `−φ(ηH)g` and the diffusion increment
//! `√η ψ(ηH)^{1/2} u` by Lanczos on Hessian-vector products. Prints JSON: the drift, the
//! increment, the Lanczos steps and the best time of `REPEATS` evaluations.
//!
//! The library side of `benches/baseline/jax_network.py`, which writes the objective,
//! the point and ζ and compares both programs on the same evaluation:
//!
//!     cargo run --release --example evaluation -- FILE POINT.json ETA ZETA.json REPEATS
//!
//! POINT.json and ZETA.json are JSON lists of numbers (the point in the problem's
//! variable order, ζ with one entry per row).

use hasme::Problem;
use hasme::models::matrix_free::{KrylovOptions, hasme_diffusion_increment, hasme_drift};
use hasme::tape::{Jets, Workspace};
use std::process::ExitCode;
use std::time::Instant;

fn read_list(path: &str) -> Result<Vec<f64>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
    serde_json::from_str(&text).map_err(|e| format!("{path}: {e}"))
}

fn run(args: &[String]) -> Result<String, String> {
    let [file, point, eta, zeta, repeats] = args else {
        return Err(
            "usage: evaluation FILE POINT.json ETA ZETA.json REPEATS (see the file's header)"
                .to_string(),
        );
    };
    let problem = Problem::from_file(file, &hasme::Overrides::none()).map_err(|e| e.to_string())?;
    let x = read_list(point)?;
    let zeta = read_list(zeta)?;
    let eta: f64 = eta.parse().map_err(|e| format!("ETA: {e}"))?;
    let repeats: usize = repeats.parse().map_err(|e| format!("REPEATS: {e}"))?;
    let d = problem.dim();
    if x.len() != d {
        return Err(format!(
            "the point has {} entries, the problem {d}",
            x.len()
        ));
    }
    let options = KrylovOptions::default();
    let (mut ws, mut jets, mut hvp_ws) =
        (Workspace::default(), Jets::default(), Workspace::default());
    let (mut u, mut hvp_grad) = (vec![0.0; d], vec![0.0; d]);
    let mut evaluate = || -> Result<_, String> {
        // ∇f and u = Aζ in one pass over the rows, as a simulator step takes them.
        problem
            .gradient_and_factor_with(&x, &zeta, &mut ws, &mut jets, &mut u)
            .map_err(|e| e.to_string())?;
        let g = jets.gradient(0);
        let mut hvp = |v: &[f64], out: &mut [f64]| {
            problem
                .hessian_vector_with(&x, v, &mut hvp_ws, &mut hvp_grad, out)
                .map(|_| ())
        };
        let drift = hasme_drift(&x, g, eta, &options, &mut hvp).map_err(|e| e.to_string())?;
        let increment = hasme_diffusion_increment(&x, &u, eta, &options, &mut hvp)
            .map_err(|e| e.to_string())?;
        Ok((drift, increment))
    };
    let mut best = f64::INFINITY;
    let mut last = None;
    for _ in 0..repeats.max(1) {
        let start = Instant::now();
        let r = evaluate()?;
        best = best.min(start.elapsed().as_secs_f64());
        last = Some(r);
    }
    let (drift, increment) = last.expect("at least one evaluation");
    Ok(serde_json::json!({
        "dimension": d,
        "drift": drift.vector,
        "increment": increment.vector,
        "lanczos_steps": [drift.steps, increment.steps],
        "seconds_per_evaluation": best,
    })
    .to_string())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(json) => {
            println!("{json}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}
