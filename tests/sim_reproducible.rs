//! Reproducibility (the invariant "the same seed gives the same numbers on any number
//! of threads"): the JSON of a run is byte-identical with 1 and 2 threads and with any
//! batch size, and a different seed gives different numbers.

use hasme::sim::{SchemeKind, SimConfig, simulate};
use hasme::{Overrides, Problem};

fn saddle() -> Problem {
    Problem::from_file(
        concat!(env!("CARGO_MANIFEST_DIR"), "/examples/saddle.hasme"),
        &Overrides::none(),
    )
    .expect("the example parses")
}

/// 700 paths: two full chunks of 256 and a partial one, so chunk boundaries and the
/// last short chunk are exercised.
fn config(seed: u64, threads: usize, batch: u64) -> hasme::SimConfigBuilder {
    let mut c = SimConfig::builder(0.05, 0.5, 700);
    c.seed(seed);
    c.threads(threads);
    c.batch(batch);
    c.every(2);
    c.substeps(4);
    c
}

fn json(problem: &Problem, c: &SimConfig) -> String {
    serde_json::to_string(&simulate(problem, c).expect("runs")).expect("JSON")
}

#[test]
fn threads_and_batches_do_not_change_a_bit() {
    let p = saddle();
    let reference = json(&p, &config(7, 1, 0).build().unwrap());
    for (threads, batch) in [(2, 0), (2, 1), (1, 300), (2, 512), (2, 1_000_000)] {
        assert_eq!(
            json(&p, &config(7, threads, batch).build().unwrap()),
            reference,
            "threads {threads}, batch {batch}"
        );
    }
}

#[test]
fn both_schemes_are_reproducible_and_seeds_matter() {
    let p = saddle();
    let mut a = config(1, 1, 0);
    a.scheme(SchemeKind::EulerMaruyama);
    let mut b = a.clone();
    b.threads(2);
    assert_eq!(json(&p, &a.build().unwrap()), json(&p, &b.build().unwrap()));
    let mut c = a.clone();
    c.seed(2);
    let (ra, rc) = (
        simulate(&p, &a.build().unwrap()).unwrap(),
        simulate(&p, &c.build().unwrap()).unwrap(),
    );
    let last = ra.times.len() - 1;
    for (oa, oc) in ra.observables.iter().zip(&rc.observables) {
        for (sa, sc) in oa.processes.iter().zip(&oc.processes) {
            if sa.name == "gf" {
                continue; // deterministic: no noise
            }
            assert_ne!(sa.mean[last], sc.mean[last], "{} {}", oa.name, sa.name);
        }
    }
}

/// SGD's noise is drawn first at each step, so its statistics do not depend on the
/// scheme, the substeps or the models simulated beside it.
#[test]
fn sgd_numbers_do_not_depend_on_the_sde_settings() {
    let p = saddle();
    let a = config(5, 2, 0);
    let mut b = a.clone();
    b.scheme(SchemeKind::EulerMaruyama);
    b.substeps(3);
    b.models(vec![hasme::models::ModelKind::Sme2]);
    let (ra, rb) = (
        simulate(&p, &a.build().unwrap()).unwrap(),
        simulate(&p, &b.build().unwrap()).unwrap(),
    );
    for (oa, ob) in ra.observables.iter().zip(&rb.observables) {
        assert_eq!(oa.processes[0], ob.processes[0], "{}", oa.name);
    }
}

/// `keep_paths` keeps each path's horizon values in path order, the same on any number
/// of threads: their average over the first K paths is the mean of a run of K paths
/// (the same paths), up to the rounding of a plain sum against Welford's updates.
#[test]
fn kept_values_are_the_first_paths_in_order() {
    let p = saddle();
    let mut a = config(5, 1, 0);
    a.keep_paths(300);
    let mut b = a.clone();
    b.threads(2);
    let (ra, rb) = (
        simulate(&p, &a.build().unwrap()).unwrap(),
        simulate(&p, &b.build().unwrap()).unwrap(),
    );
    assert_eq!(ra.kept, rb.kept);
    let (procs, obs) = (ra.processes.len(), ra.observables.len());
    assert_eq!(ra.kept.len(), 300 * procs * obs);
    let mut small = a.clone();
    small.paths(300);
    small.keep_paths(0);
    let rs = simulate(&p, &small.build().unwrap()).unwrap();
    assert!(rs.kept.is_empty());
    let last = rs.times.len() - 1;
    for o in 0..obs {
        for q in 0..procs {
            let values: Vec<f64> = (0..300)
                .filter_map(|i| ra.kept[(i * obs + o) * procs + q])
                .collect();
            let mean = values.iter().sum::<f64>() / values.len() as f64;
            let want = rs.observables[o].processes[q].mean[last].unwrap();
            // 1e-12 relative: two summation orders of 300 numbers.
            assert!(
                (mean - want).abs() <= 1e-12 * want.abs().max(1e-300),
                "{mean} vs {want}"
            );
        }
    }
}
