//! Value + gradient + Hessian per point: the compiled tape against the same function
//! hand-written in Rust over num-dual (`num_dual::hessian` on a closure), measured in
//! the same run so the ratio is meaningful on a noisy machine.
//!
//! (a) the 2-variable saddle of `examples/saddle.hasme` (objective only);
//! (b) an 8-variable chained Rosenbrock written out term by term in the file language.
//!
//! After criterion's figures, the run prints each tape / hand-written ratio measured in
//! paired rounds (both functions timed back to back in every round, median and
//! quartiles of the per-round ratios): the figure to quote on a shared machine.
//!
//! Run: `cargo bench --bench derivatives`.

use criterion::{Criterion, criterion_group, criterion_main};
use hasme::Problem;
use hasme::tape::{HessianMethod, Jets, Workspace};
use nalgebra::SVector;
use num_dual::{Dual2SVec64, DualNum, hessian};
use std::hint::black_box;
use std::time::Duration;

#[path = "common/paired.rs"]
mod paired;
use paired::paired_ratio;

const SADDLE: &str = "param lambda = 2.0
param mu = 0.5
var x = 0.01, y = 0.0
let r2 = x^2 + y^2
minimize 0.5*lambda*x^2 - 0.5*y^2 + 0.25*mu*r2^2";

fn saddle_hand<D: DualNum<Primitive = f64> + Copy>(v: SVector<D, 2>) -> D {
    let (lambda, mu) = (2.0, 0.5);
    let (x, y) = (v[0], v[1]);
    let r2 = x.powi(2) + y.powi(2);
    x.powi(2) * (0.5 * lambda) - y.powi(2) * 0.5 + r2.powi(2) * (0.25 * mu)
}

fn rosenbrock_text(n: usize) -> String {
    let vars: Vec<String> = (1..=n).map(|i| format!("x{i} = 0.5")).collect();
    let terms: Vec<String> = (1..n)
        .map(|i| format!("100*(x{} - x{i}^2)^2 + (1 - x{i})^2", i + 1))
        .collect();
    format!("var {}\nminimize {}", vars.join(", "), terms.join(" + "))
}

fn rosenbrock_hand<D: DualNum<Primitive = f64> + Copy>(v: SVector<D, 8>) -> D {
    let mut acc = D::from(0.0);
    for i in 0..7 {
        let a = v[i + 1] - v[i].powi(2);
        let b = -v[i] + 1.0;
        acc += a.powi(2) * 100.0 + b.powi(2);
    }
    acc
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("derivatives");
    g.warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));

    let saddle = Problem::from_str(SADDLE).expect("saddle parses");
    let xs = [0.3, -0.7];
    let (mut ws, mut jets) = (Workspace::default(), Jets::default());
    g.bench_function("saddle/tape", |b| {
        b.iter(|| {
            saddle
                .objective_derivatives_with(black_box(&xs), &mut ws, &mut jets)
                .expect("finite");
            jets.values[0]
        })
    });
    for (name, method) in [
        ("saddle/tape-static", HessianMethod::Static),
        ("saddle/tape-reverse", HessianMethod::Reverse),
    ] {
        g.bench_function(name, |b| {
            b.iter(|| {
                saddle
                    .objective_tape()
                    .derivatives_by(method, black_box(&xs), &mut ws, &mut jets)
                    .expect("finite");
                jets.values[0]
            })
        });
    }
    let xv = SVector::<f64, 2>::from(xs);
    g.bench_function("saddle/hand", |b| {
        b.iter(|| hessian(saddle_hand::<Dual2SVec64<2>>, black_box(&xv)))
    });

    let rosen = Problem::from_str(&rosenbrock_text(8)).expect("rosenbrock parses");
    let xr: Vec<f64> = (0..8).map(|i| 0.1 * i as f64 - 0.2).collect();
    g.bench_function("rosenbrock8/tape", |b| {
        b.iter(|| {
            rosen
                .objective_derivatives_with(black_box(&xr), &mut ws, &mut jets)
                .expect("finite");
            jets.values[0]
        })
    });
    for (name, method) in [
        ("rosenbrock8/tape-static", HessianMethod::Static),
        ("rosenbrock8/tape-reverse", HessianMethod::Reverse),
    ] {
        g.bench_function(name, |b| {
            b.iter(|| {
                rosen
                    .objective_tape()
                    .derivatives_by(method, black_box(&xr), &mut ws, &mut jets)
                    .expect("finite");
                jets.values[0]
            })
        });
    }
    let xrv = SVector::<f64, 8>::from_iterator(xr.iter().copied());
    g.bench_function("rosenbrock8/hand", |b| {
        b.iter(|| hessian(rosenbrock_hand::<Dual2SVec64<8>>, black_box(&xrv)))
    });
    g.finish();

    let (mut ws2, mut jets2) = (Workspace::default(), Jets::default());
    report(
        "saddle",
        paired_ratio(
            401,
            2000,
            || {
                saddle
                    .objective_derivatives_with(black_box(&xs), &mut ws2, &mut jets2)
                    .expect("finite");
                jets2.values[0]
            },
            || hessian(saddle_hand::<Dual2SVec64<2>>, black_box(&xv)),
        ),
    );
    report(
        "rosenbrock8",
        paired_ratio(
            101,
            100,
            || {
                rosen
                    .objective_derivatives_with(black_box(&xr), &mut ws2, &mut jets2)
                    .expect("finite");
                jets2.values[0]
            },
            || hessian(rosenbrock_hand::<Dual2SVec64<8>>, black_box(&xrv)),
        ),
    );
}

fn report(name: &str, p: paired::Paired) {
    println!("{name}: tape / hand-written {}", p.describe(1e9, "ns"));
}

criterion_group!(benches, bench);
criterion_main!(benches);
