//! The plots read as a person expects: the escape survival plot's time axis ends where
//! every curve has fallen to 1% (or at the cap), the weak-order plot has its ticks at
//! the step sizes of the run and a marker at every estimate, and the moments plot a
//! marker at every reported step.

use hasme::Problem;
use hasme::escape::{EscapeConfig, Region, escape};
use hasme::models::ModelKind;

mod common;
use common::*;

/// f = x²/2 − y², Σ = 0.01 I, from the saddle point: every path leaves the unit ball
/// within a few units of time.
fn saddle() -> Problem {
    Problem::from_str("var x = 0, y = 0\nminimize 0.5*x^2 - y^2\nnoise sd 0.1").unwrap()
}

fn config(max_steps: u64) -> EscapeConfig {
    EscapeConfig::builder(0.1, max_steps, 300, Region::ball(1.0))
        .models(vec![ModelKind::Sme1, ModelKind::Hasme])
        .substeps(4)
        .threads(2)
        .build()
        .unwrap()
}

#[test]
fn survival_axis_ends_shortly_after_every_curve_is_below_one_percent() {
    let r = escape(&saddle(), &config(2000)).unwrap();
    let plot = r.survival_plot();
    let (start, end) = plot.x_limits.expect("the survival plot sets its x-range");
    assert_eq!(start, 0.0);
    assert!(end < r.cap_time, "end {end}, cap {}", r.cap_time);
    // The last curve to reach 1% reaches it at end / 1.05; before that it is above 1%.
    let reached = end / 1.05;
    for p in &r.processes {
        assert!(p.survival.survival(reached + 1e-9) <= 0.01, "{}", p.name);
    }
    assert!(
        r.processes
            .iter()
            .any(|p| p.survival.survival(reached - 0.05) > 0.01),
        "end {end} is later than needed"
    );
    // No drawn point lies beyond the axis.
    for s in &plot.series {
        assert!(s.points.iter().all(|&(t, _)| t <= end), "{}", s.name);
    }
    let svg = plot.to_svg().unwrap();
    assert!(svg.contains("when every curve is below 1%"));
}

#[test]
fn survival_axis_ends_at_the_cap_when_a_curve_stays_above_one_percent() {
    // Ten steps: most paths are still inside at the cap.
    let r = escape(&saddle(), &config(10)).unwrap();
    let plot = r.survival_plot();
    assert_eq!(plot.x_limits, Some((0.0, r.cap_time)));
    assert!(plot.to_svg().unwrap().contains("The axis ends at the cap"));
}

#[test]
fn weak_order_plot_has_ticks_at_the_step_sizes_and_a_marker_per_estimate() {
    let dir = temp_dir("plots-weak-order");
    let svg = dir.join("order.svg");
    let o = hasme(&[
        "weak-order",
        "examples/cosine.hasme",
        "--etas",
        "0.2,0.1,0.05",
        "--horizon",
        "1",
        "--paths",
        "2000",
        "--models",
        "sme1,sme2",
        "--no-integration-check",
        "--quiet",
        "--json",
        "--plot",
        svg.to_str().unwrap(),
    ]);
    let report = json(&o);
    let svg = std::fs::read_to_string(&svg).unwrap();
    for tick in ["0.2", "0.1", "0.05"] {
        assert!(
            svg.contains(&format!(">\n{tick}\n</text>")),
            "no tick at {tick}"
        );
    }
    // Filled markers are polygons: one per fitted estimate and one in each legend
    // swatch; an estimate left out of the fit gets an open marker (an outline).
    let mut fitted = 0;
    for model in ["sme1", "sme2"] {
        let m = &report["observables"]["x2"][model];
        let estimates = m["errors"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e.is_number());
        fitted += estimates.count() - m["excluded"].as_array().unwrap().len();
    }
    assert!(fitted > 0);
    assert_eq!(svg.matches("<polygon").count(), fitted + 2);
    // The slope guides are labelled on the chart, not in the legend.
    assert!(svg.contains(">\nslope 1\n</text>") && svg.contains(">\nslope 2\n</text>"));
    assert!(!svg.contains("(guide)"));
}

/// With `--sweep` the figure is the constants against the param: ticks at the swept
/// values, a filled marker per resolved constant and an open one (its upper bound)
/// per value where none is resolved.
#[test]
fn weak_order_sweep_plot_draws_the_constants_against_the_param() {
    let dir = temp_dir("plots-weak-order-sweep");
    let svg = dir.join("sweep.svg");
    let o = hasme(&[
        "weak-order",
        "examples/stiff.hasme",
        "--etas",
        "0.1,0.05",
        "--horizon",
        "0.5",
        "--paths",
        "2000",
        "--models",
        "sme2,hasme",
        "--observables",
        "x2",
        "--sweep",
        "lambda=1,4",
        "--no-integration-check",
        "--quiet",
        "--json",
        "--plot",
        svg.to_str().unwrap(),
    ]);
    let report = json(&o);
    let svg = std::fs::read_to_string(&svg).unwrap();
    assert!(svg.contains("Weak-error constant against lambda"));
    for tick in ["1", "4"] {
        assert!(
            svg.contains(&format!(">\n{tick}\n</text>")),
            "no tick at {tick}"
        );
    }
    let observable = report["observables"]
        .as_object()
        .unwrap()
        .keys()
        .next()
        .unwrap()
        .clone();
    let mut resolved = 0;
    for model in ["sme2", "hasme"] {
        let constants = &report["sweep"]["constants"][&observable][model];
        resolved += constants
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c.is_number())
            .count();
    }
    // Filled markers are polygons: one per resolved constant and one per legend swatch.
    assert_eq!(svg.matches("<polygon").count(), resolved + 2);
}

#[test]
fn moments_plot_marks_every_reported_step() {
    let dir = temp_dir("plots-moments");
    let svg = dir.join("w2.svg");
    let o = hasme(&[
        "moments",
        "examples/quadratic.hasme",
        "--eta",
        "0.1",
        "--steps",
        "20",
        "--every",
        "5",
        "--models",
        "sme1,sme2",
        "--plot",
        svg.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let svg = std::fs::read_to_string(&svg).unwrap();
    // Steps 0, 5, 10, 15, 20 for each of two models, and two legend swatches.
    assert_eq!(svg.matches("<polygon").count(), 2 * 5 + 2);
}
