//! Derivatives at scale: value + gradient + dense Hessian of the chained Rosenbrock
//! function written with a vector variable and `sum`, for d = 10, 50, 100, 200, against
//! num-dual's own dynamic `hessian` (`Dual2DVec64`) on the same function hand-written
//! as a closure, measured in the same run. Also the 8×8-block forward method, to show
//! why forward-over-reverse is chosen above d = 8, and the HA-SME coefficients at
//! d = 100 from the local data at the start point.
//!
//! Run: `cargo bench --bench scaling`; ids are `scaling/<what>/<d>`.

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use hasme::Problem;
use hasme::models::{Model, ModelKind};
use hasme::tape::{HessianMethod, Jets, Workspace};
use nalgebra::DVector;
use num_dual::{Dual2DVec64, DualNum, hessian};
use std::hint::black_box;
use std::time::Duration;

const DIMS: [usize; 4] = [10, 50, 100, 200];

fn rosenbrock(d: usize) -> Problem {
    Problem::from_str(&format!(
        "param n = {d}\nvar w[n] = 0.5\n\
         minimize sum(i = 1..n-1, 100*(w[i+1] - w[i]^2)^2 + (1 - w[i])^2)\nnoise sd 0.1"
    ))
    .expect("the benchmark objective parses")
}

fn rosenbrock_hand<D: DualNum<Primitive = f64>>(w: DVector<D>) -> D {
    let mut acc = D::from(0.0);
    for i in 0..w.len() - 1 {
        let a = w[i + 1].clone() - w[i].powi(2);
        let b = -w[i].clone() + 1.0;
        acc += a.powi(2) * 100.0 + b.powi(2);
    }
    acc
}

fn point(d: usize) -> Vec<f64> {
    (0..d)
        .map(|i| 0.5 + 0.3 * ((i as f64) * 0.7).sin())
        .collect()
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("scaling");
    g.warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(2))
        .sample_size(20);
    for d in DIMS {
        let p = rosenbrock(d);
        let x = point(d);
        let (mut ws, mut jets) = (Workspace::default(), Jets::default());
        g.bench_function(BenchmarkId::new("tape", d), |b| {
            b.iter(|| {
                p.objective_derivatives_with(black_box(&x), &mut ws, &mut jets)
                    .expect("finite");
                jets.values[0]
            })
        });
        if d <= 100 {
            g.bench_function(BenchmarkId::new("tape-blocked", d), |b| {
                b.iter(|| {
                    p.objective_tape()
                        .derivatives_by(HessianMethod::Blocked, black_box(&x), &mut ws, &mut jets)
                        .expect("finite");
                    jets.values[0]
                })
            });
        }
        let xv = DVector::from_vec(x.clone());
        g.bench_function(BenchmarkId::new("num-dual-dynamic", d), |b| {
            b.iter(|| hessian(rosenbrock_hand::<Dual2DVec64>, black_box(&xv)))
        });
    }
    let p = rosenbrock(100);
    let local = p.local(&point(100)).expect("finite");
    g.bench_function(BenchmarkId::new("hasme-coefficients", 100), |b| {
        b.iter(|| {
            ModelKind::Hasme
                .coefficients(black_box(&local), 1e-4)
                .expect("in domain")
        })
    });
    g.bench_function(BenchmarkId::new("local-data", 100), |b| {
        b.iter(|| p.local(black_box(&point(100))).expect("finite"))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
