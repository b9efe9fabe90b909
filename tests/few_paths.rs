//! Few paths on several threads: with fewer chunks of 256 paths than threads, the
//! threads share the paths of a chunk, and the numbers must stay those of one thread
//! (the invariant "the same seed gives the same bits on any number of threads and any
//! batch size"). `simulate` one point at a time (d > 4) and in lanes (d ≤ 2), with and
//! without divergences, and `escape` both ways: the JSON is byte-identical on 1, 2 and
//! 3 threads and with one chunk per batch. A run that fails reports the smallest
//! failing path's error, whatever the threads.

use hasme::Problem;
use hasme::escape::{EscapeConfig, Region, escape};
use hasme::models::ModelKind;
use hasme::sim::{SimConfig, simulate};

const PATHS: [u64; 4] = [5, 70, 100, 300];

/// (threads, batch): one thread; two and three threads, each wave as large as it can
/// be; two threads with one chunk per wave.
const RUNS: [(usize, u64); 4] = [(1, 0), (2, 0), (3, 0), (2, 1)];

fn problem(text: &str) -> Problem {
    Problem::from_str(text).expect("the test problem parses")
}

/// A softened chained Rosenbrock function in 8 variables: every model one point at a
/// time.
fn rosenbrock8() -> Problem {
    problem(
        "param n = 8\nvar w[n] = 0.5\n\
         minimize sum(i = 1..n-1, (w[i+1] - w[i]^2)^2 + 0.1*(1 - w[i])^2)\nnoise sd 0.2",
    )
}

/// `simulate`'s JSON for each of [`RUNS`], after checking they are all the same.
fn simulate_everywhere(problem: &Problem, config: &hasme::SimConfigBuilder) -> String {
    let mut reference: Option<String> = None;
    for (threads, batch) in RUNS {
        let mut c = config.clone();
        c.threads(threads);
        c.batch(batch);
        let r = simulate(problem, &c.build().unwrap()).expect("runs");
        let json = serde_json::to_string(&r).unwrap();
        match &reference {
            None => reference = Some(json),
            Some(one) => assert!(
                *one == json,
                "{} paths: {threads} threads, batch {batch} differ from one thread",
                r.paths
            ),
        }
    }
    reference.unwrap()
}

#[test]
fn simulate_one_point_at_a_time_is_the_same_on_any_threads() {
    let p = rosenbrock8();
    for paths in PATHS {
        let mut c = SimConfig::builder(0.05, 0.5, paths);
        c.models(vec![ModelKind::Sme1, ModelKind::Sme2, ModelKind::Hasme]);
        c.seed(11);
        c.keep_paths(3);
        simulate_everywhere(&p, &c);
    }
}

#[test]
fn simulate_in_lanes_is_the_same_on_any_threads() {
    let saddle = problem(
        "var x = 0.01, y = 0\nminimize x^2 - 0.5*y^2 + 0.125*(x^2 + y^2)^2\n\
         noise cov [[0.02, 0], [0, 0.01*(1 + x^2)]]",
    );
    let line = problem("var x = 1\nminimize 0.5*x^2 + cos(x)\nnoise sd 0.5");
    for paths in PATHS {
        for p in [&saddle, &line] {
            let mut c = SimConfig::builder(0.05, 1.0, paths);
            c.models(vec![ModelKind::Sme1, ModelKind::Hasme]);
            c.seed(5);
            simulate_everywhere(p, &c);
        }
    }
}

/// SGD on quartics blows up on some paths (|x| > 2 at η = 0.5): the counts and the
/// first divergence (the smallest path's) do not depend on the threads, in lanes
/// (d = 1) and one point at a time (d = 5).
#[test]
fn divergences_are_the_same_on_any_threads() {
    let one = problem("var x = 1\nminimize 0.25*x^4\nnoise sd 1.5");
    let five = problem("var w[5] = 1\nminimize sum(i = 1..5, 0.25*w[i]^4)\nnoise sd 1.5");
    let mut diverged = 0;
    for paths in [70, 300] {
        for p in [&one, &five] {
            let mut c = SimConfig::builder(0.5, 5.0, paths);
            c.models(vec![ModelKind::Sme1]);
            c.substeps(2);
            c.seed(9);
            let json = simulate_everywhere(p, &c);
            let v: serde_json::Value = serde_json::from_str(&json).unwrap();
            diverged += v["diverged"]["sgd"].as_u64().unwrap();
        }
    }
    assert!(diverged > 0, "some paths diverge");
}

#[test]
fn escape_is_the_same_on_any_threads() {
    let saddle = problem("var x = 0, y = 0\nminimize 0.5*x^2 - y^2\nnoise sd 0.1");
    let saddle6 = problem(
        "var x[6] = 0\nminimize 0.5*sum(i = 1..5, x[i]^2) - x[6]^2 + 0.1*x[6]^4\nnoise sd 0.1",
    );
    for paths in PATHS {
        for (p, models) in [
            (&saddle, vec![ModelKind::Sme2, ModelKind::Hasme]),
            (&saddle6, vec![ModelKind::Hasme]),
        ] {
            let mut reference: Option<String> = None;
            for threads in [1, 2, 3] {
                let mut c = EscapeConfig::builder(0.1, 2000, paths, Region::ball(1.0));
                c.models(models.clone());
                c.seed(3);
                c.threads(threads);
                let r = escape(p, &c.build().unwrap()).expect("runs");
                let json = serde_json::to_string(&r).unwrap();
                match &reference {
                    None => reference = Some(json),
                    Some(one) => assert!(*one == json, "{paths} paths, {threads} threads"),
                }
            }
        }
    }
}

/// Σ(x) = 1 − x stops being a variance once x passes 1, which the drift and the noise
/// carry some paths to, at different steps: the run fails with the smallest such
/// path's error (path 33 in lanes, d = 2; path 18 one point at a time, d = 5), on any
/// threads and batch size, and the paths before it run cleanly.
#[test]
fn a_failing_run_reports_the_smallest_failing_path() {
    let two = problem("var x = 0, y = 0\nminimize -0.3*x + y^2\nnoise cov [[1 - x, 0], [0, 1]]");
    let five = problem(
        "var x[5] = 0\nminimize -0.3*x[1] + sum(i = 2..5, x[i]^2)\n\
         noise diag [1 - x[1], 1, 1, 1, 1]",
    );
    for p in [&two, &five] {
        let config = |paths: u64, threads: usize, batch: u64| {
            let mut c = SimConfig::builder(0.1, 2.0, paths);
            c.models(vec![ModelKind::Sme1]);
            c.seed(2);
            c.threads(threads);
            c.batch(batch);
            c.build().unwrap()
        };
        let err = simulate(p, &config(300, 1, 0)).expect_err("some path passes x = 1");
        let text = err.to_string();
        let hasme::sim::SimError::Problem { path, .. } = err else {
            panic!("{text}")
        };
        assert!(
            path > 0,
            "{text}: a later path, so that the test means something"
        );
        for (threads, batch) in RUNS {
            let e = simulate(p, &config(300, threads, batch)).expect_err("fails");
            assert_eq!(e.to_string(), text, "{threads} threads, batch {batch}");
            let e = simulate(p, &config(path + 1, threads, batch)).expect_err("fails");
            assert_eq!(e.to_string(), text, "{threads} threads, batch {batch}");
            simulate(p, &config(path, threads, batch)).expect("the paths before it run");
        }
    }
}
