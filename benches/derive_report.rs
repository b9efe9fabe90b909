//! `hasme derive` at a point as a library call: `DeriveReport::new` on the saddle of
//! `examples/saddle.hasme`, with the point read from `name=value` assignments and
//! without. The baseline of the Python package's `problem.derive(at=…)`, whose
//! overhead per call (the boundary: arguments in, a result object out) is measured
//! against it by `python/benchmarks/boundary.py` (docs/python.md, "Speed").
//!
//! Run: `cargo bench --bench derive_report`.

use criterion::{Criterion, criterion_group, criterion_main};
use hasme::Problem;
use hasme::inspect::DeriveReport;
use std::hint::black_box;
use std::time::Duration;

fn derive_report(c: &mut Criterion) {
    let problem = Problem::from_file(
        concat!(env!("CARGO_MANIFEST_DIR"), "/examples/saddle.hasme"),
        &hasme::Overrides::none(),
    )
    .expect("the bundled example checks");
    let at = [0.3, -0.2];
    let mut group = c.benchmark_group("derive_report");
    group.measurement_time(Duration::from_secs(3));
    group.bench_function("saddle", |b| {
        b.iter(|| DeriveReport::new(&problem, black_box(&at)).expect("finite"))
    });
    group.bench_function("saddle_from_assignments", |b| {
        b.iter(|| {
            let x = problem
                .point_from_assignments(black_box("x=0.3,y=-0.2"))
                .expect("valid");
            DeriveReport::new(&problem, &x).expect("finite")
        })
    });
    group.finish();
}

criterion_group!(benches, derive_report);
criterion_main!(benches);
