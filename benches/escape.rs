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
//! path, so `all/…` measures mostly `gf` (measured: ≈ 81 000 paths/s for SGD alone,
//! ≈ 6 900 with `hasme`, ≈ 320 with all five, on a shared 2-core machine). Memory is one outcome per path
//! and process, whatever the number of steps. Run: `cargo bench --bench escape`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use hasme::escape::{EscapeConfig, Region, escape};
use hasme::models::ModelKind;
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
        config.threads(threads);
        let config = config.build().expect("valid settings");
        group.bench_with_input(BenchmarkId::new(name, threads), &config, |b, config| {
            b.iter(|| black_box(escape(&problem, config).expect("the run succeeds")))
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
