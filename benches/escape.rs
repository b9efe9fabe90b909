//! Escape paths per second on the quadratic saddle of `examples/quadratic_saddle.hasme`
//! (κ = 2, λ = 1, diagonal constant noise, start at the saddle), η = 0.1, unit ball,
//! Euler–Maruyama with m = 8 substeps, measured in the same run as ratios against a
//! baseline:
//!
//! * `sgd-only/1`: SGD alone (no model), one thread: the baseline;
//! * `hasme/1`: SGD beside `hasme`, one thread;
//! * `all/1` and `all/2`: SGD beside the five named models, on one and two threads.
//!
//! A path runs until every process has left the ball (≈ 27 steps here), so a path is
//! ≈ 27 SGD steps plus, per model, ≈ 27 × 8 substeps. Except `gf`: noiseless and
//! started at the saddle, it never leaves and runs to the cap (2000 steps) on every
//! path, so `all/…` measures mostly `gf` (figures in docs/performance.md, "Escape").
//! Memory is one outcome per path and process, whatever the number of steps.
//!
//! Then escape's path-step throughput against `simulate`'s on the same problem, models
//! (`hasme`), substeps (8), paths (20 000) and thread (one), in paired rounds (one run
//! of each back to back per round, median and quartiles over 9 rounds): simulate runs to
//! the horizon `Nη`, N the larger mean escape time of SGD and `hasme` in steps (27), so
//! both do about the same path-steps; the printed ratio is escape's time per path-step
//! over simulate's, escape's path-steps counted as paths × that mean. A path runs until
//! both processes left, which is at least the larger of the two means, so the count is
//! low and the ratio an upper bound. Against simulate with Euler–Maruyama (escape's
//! scheme: the same work per path-step) and with simulate's default, Talay–Tubaro
//! (three coefficient evaluations per substep instead of one). Run: `cargo bench
//! --bench escape` (the ratios alone: `cargo bench --bench escape -- ratio`).

use std::hint::black_box;
use std::time::Duration;

#[path = "common/paired.rs"]
mod paired;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use hasme::escape::{EscapeConfig, Region, escape};
use hasme::models::ModelKind;
use hasme::sim::{SchemeKind, SimConfig, simulate};
use hasme::{Overrides, Problem};

const PATHS: u64 = 1024;

fn bench(c: &mut Criterion) {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/quadratic_saddle.hasme"
    );
    let problem = Problem::from_file(path, &Overrides::none()).expect("the example parses");
    let mut group = c.benchmark_group("escape/quadratic-saddle");
    group.throughput(Throughput::Elements(PATHS));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(5));
    let cases: [(&str, Vec<ModelKind>, usize); 4] = [
        ("sgd-only", vec![], 1),
        ("hasme", vec![ModelKind::Hasme], 1),
        ("all", ModelKind::all().to_vec(), 1),
        ("all", ModelKind::all().to_vec(), 2),
    ];
    for (name, models, threads) in cases {
        let mut config = EscapeConfig::builder(0.1, 2000, PATHS, Region::ball(1.0));
        config.models(models);
        config.substeps(8);
        config.threads(threads);
        let config = config.build().expect("valid settings");
        group.bench_with_input(BenchmarkId::new(name, threads), &config, |b, config| {
            b.iter(|| black_box(escape(&problem, config).expect("the run succeeds")))
        });
    }
    group.finish();
}

/// Escape's path-step throughput against simulate's, printed as ratios.
fn ratio(c: &mut Criterion) {
    const RATIO_PATHS: u64 = 20_000;
    const ETA: f64 = 0.1;
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/quadratic_saddle.hasme"
    );
    let problem = Problem::from_file(path, &Overrides::none()).expect("the example parses");
    let esc = EscapeConfig::builder(ETA, 2000, RATIO_PATHS, Region::ball(1.0))
        .models(vec![ModelKind::Hasme])
        .substeps(8)
        .build()
        .expect("valid settings");
    let report = escape(&problem, &esc).expect("the run succeeds");
    // Steps per escape path, at least: the larger mean of the two processes.
    let mean_steps = report
        .processes
        .iter()
        .map(|p| p.mean_time.expect("every path escapes") / ETA)
        .fold(0.0, f64::max);
    let steps = mean_steps.round();
    for scheme in [SchemeKind::EulerMaruyama, SchemeKind::TalayTubaro] {
        let sim = SimConfig::builder(ETA, steps * ETA, RATIO_PATHS)
            .models(vec![ModelKind::Hasme])
            .substeps(8)
            .scheme(scheme)
            .build()
            .expect("valid settings");
        let p = paired::paired_ratio(
            9,
            1,
            || escape(&problem, &esc).expect("the run succeeds"),
            || simulate(&problem, &sim).expect("the run succeeds"),
        );
        // Time per path-step: escape's over paths × mean_steps, simulate's over
        // paths × steps.
        let per_step = p.ratio.map(|r| r * steps / mean_steps);
        println!(
            "escape/ratio: escape vs simulate ({scheme}, horizon {steps} steps; escape's mean {mean_steps:.2} steps), \
             time per path-step: median {:.2} (quartiles {:.2}–{:.2}); wall time {}",
            per_step[1],
            per_step[0],
            per_step[2],
            p.describe(1e3, "ms")
        );
    }
    // Criterion needs a measurement in every bench function: one escape run.
    let mut group = c.benchmark_group("escape/ratio");
    group.sample_size(10);
    group.bench_function("escape-20000", |b| {
        b.iter(|| black_box(escape(&problem, &esc).expect("the run succeeds")))
    });
    group.finish();
}

criterion_group!(benches, bench, ratio);
criterion_main!(benches);
