//! The SDE integration error is negligible (docs/models.md §4): halving the substep
//! moves a model's mean by less than its standard error on a non-quadratic problem
//! with state-dependent noise, and each scheme shows its declared weak order.

use hasme::models::ModelKind;
use hasme::sim::{SchemeKind, SimConfig, simulate};
use hasme::{Overrides, Problem};

/// Halving h refines the same Brownian path (power-of-two grids are nested), so the
/// change of the mean is the integration error itself plus a tiny coupled noise.
/// Budget: 2000 paths; the band is one standard error of the mean, about 2% of the
/// spread of φ, while the Talay–Tubaro error at h = η/8 is O(h²) ≈ 1e−4 relative.
#[test]
fn halving_the_substep_moves_means_less_than_their_standard_error() {
    let problem = Problem::from_file(
        concat!(env!("CARGO_MANIFEST_DIR"), "/examples/state_noise.hasme"),
        &Overrides::none(),
    )
    .expect("the example parses");
    let run = |substeps| {
        let mut c = SimConfig::builder(0.1, 2.0, 2000);
        c.models(vec![ModelKind::Sme2, ModelKind::Hasme]);
        c.substeps(substeps);
        c.threads(2);
        c.seed(11);
        simulate(&problem, &c.build().unwrap()).expect("runs")
    };
    let (coarse, fine) = (run(8), run(16));
    for (oc, of) in coarse.observables.iter().zip(&fine.observables) {
        for (sc, sf) in oc.processes.iter().zip(&of.processes).skip(1) {
            for t in 0..coarse.times.len() {
                let (mc, mf) = (sc.mean[t].unwrap(), sf.mean[t].unwrap());
                let se = sf.stderr[t].unwrap_or(0.0);
                assert!(
                    (mc - mf).abs() <= se,
                    "{} {} at t = {}: h → h/2 moves the mean by {} > stderr {se}",
                    oc.name,
                    sc.name,
                    coarse.times[t],
                    (mc - mf).abs()
                );
            }
        }
    }
}

/// On gradient flow (an ODE, so one path is exact in law) of a non-quadratic
/// objective, the error against a reference integration halves with h for
/// Euler–Maruyama and quarters for Talay–Tubaro.
#[test]
fn schemes_show_their_declared_weak_order() {
    let problem = Problem::from_str("var x = 1.5\nminimize 0.5*x^2 + cos(x)\nobserve x = x")
        .expect("valid problem");
    let final_x = |scheme, substeps| {
        let mut c = SimConfig::builder(0.25, 1.0, 1);
        c.models(vec![ModelKind::Gf]);
        c.scheme(scheme);
        c.substeps(substeps);
        let r = simulate(&problem, &c.build().unwrap()).expect("runs");
        r.observables[0].processes[1].mean[4].expect("finite")
    };
    // Reference: TT with h = 0.25/4096, error ~ (6e-5)² ≈ 4e-9 below the smallest
    // error compared here (~1e-5).
    let exact = final_x(SchemeKind::TalayTubaro, 4096);
    for scheme in [SchemeKind::EulerMaruyama, SchemeKind::TalayTubaro] {
        let errors: Vec<f64> = [2, 4, 8, 16]
            .iter()
            .map(|&m| (final_x(scheme, m) - exact).abs())
            .collect();
        let order = scheme.weak_order() as i32;
        for w in errors.windows(2) {
            let ratio = w[0] / w[1];
            // Asymptotic ratio 2^order; 20% leaves room for the next term at h = η/2.
            assert!(
                (ratio / 2f64.powi(order) - 1.0).abs() < 0.2,
                "{scheme}: errors {errors:?}, ratio {ratio}"
            );
        }
    }
}
