//! The cost of model coefficients at one point (docs/models.md §2), measured as a ratio
//! against a baseline in the same run: one symmetric eigendecomposition of `H` at the
//! same dimension. `hasme` needs three (H, and Σ and Γ for their PSD checks and the
//! symmetric square root σ), plus a handful of d×d products, so its ratio to the
//! baseline is the number to watch.
//!
//! A third row (d ≤ 16) times the same coefficients on a kept [`ModelWorkspace`] in
//! the simulator's arithmetic, what each simulated step pays. A fourth times the
//! derivatives (value, gradient, Hessian of a smooth d-variable objective from its
//! tape), so the report can say what the models cost relative to producing their
//! input.
//! Run: `cargo bench --bench models`; ids are `models/<what>/<d>`.

use std::hint::black_box;
use std::time::Duration;

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, BenchmarkId, Criterion, criterion_group, criterion_main};
use hasme::Problem;
use hasme::models::{Arithmetic, Local, Model, ModelKind, ModelWorkspace, Noise};
use hasme::tape::{Jets, Workspace};
use nalgebra::{DMatrix, DVector, SymmetricEigen};

/// The dimensions measured: tiny, small, and where the O(d³) terms dominate.
const DIMS: [usize; 3] = [2, 8, 32];

/// Deterministic local data of dimension `d` (no RNG, same numbers on every machine):
/// an indefinite symmetric `H`, a full-rank PSD `Σ = BBᵀ/d + I/10`, and `η` at half of
/// `1/λ_max`, inside the domain of the resummed models.
fn bench_case(d: usize) -> (Local, f64) {
    let h = DMatrix::from_fn(d, d, |i, j| {
        let (i, j) = (i as f64, j as f64);
        (i * j + 1.0).sin() + (j * i + 1.0).sin() + if i == j { 2.0 } else { 0.0 }
    });
    let b = DMatrix::from_fn(d, d, |i, j| (i as f64 + 2.0 * j as f64 + 0.5).cos());
    let sigma = &b * b.transpose() / d as f64 + DMatrix::identity(d, d) * 0.1;
    let gradient = DVector::from_fn(d, |i, _| (i as f64 + 1.0).sin());
    let point = DVector::from_fn(d, |i, _| 0.1 * i as f64);
    let lambda_max = h.symmetric_eigenvalues().max().max(1.0);
    let local = Local::new(point, gradient, h, sigma).expect("the bench data is valid");
    (local, 0.5 / lambda_max)
}

/// Baseline: one symmetric eigendecomposition (values and vectors) of `H`.
fn eigendecomposition(group: &mut BenchmarkGroup<'_, WallTime>, local: &Local) {
    group.bench_with_input(
        BenchmarkId::new("eigendecomposition", local.dim()),
        local,
        |bench, local| {
            bench.iter(|| SymmetricEigen::new(black_box(local.hessian.clone())));
        },
    );
}

/// `hasme` drift, diffusion and factor, as a simulator calls it at each step.
fn hasme_coefficients(group: &mut BenchmarkGroup<'_, WallTime>, local: &Local, eta: f64) {
    group.bench_with_input(
        BenchmarkId::new("hasme", local.dim()),
        local,
        |bench, local| {
            bench.iter(|| ModelKind::Hasme.coefficients(black_box(local), black_box(eta)));
        },
    );
}

/// The same `hasme` coefficients on a kept workspace in the simulator's arithmetic
/// (Jacobi, no allocation), as its per-point terms compute them up to d = 16.
fn hasme_on_workspace(group: &mut BenchmarkGroup<'_, WallTime>, local: &Local, eta: f64) {
    let d = local.dim();
    let mut ws = ModelWorkspace::new(d);
    let (x, g, h) = (
        local.point.as_slice(),
        local.gradient.as_slice(),
        local.hessian.as_slice(),
    );
    let noise = Noise {
        cov: local.noise_cov.as_slice(),
        sqrt: None,
    };
    group.bench_function(BenchmarkId::new("hasme-workspace", d), |bench| {
        bench.iter(|| {
            ws.evaluate(
                ModelKind::Hasme,
                black_box(eta),
                Arithmetic::Jacobi,
                x,
                black_box(g),
                h,
                Some(noise),
            )
            .expect("in the domain")
        });
    });
}

/// A smooth non-quadratic objective in `d` variables, written out in the file language:
/// a chain of quartic couplings plus a cosine per coordinate.
fn chain_problem(d: usize) -> Problem {
    let vars: Vec<String> = (1..=d)
        .map(|i| format!("x{i} = {}", 0.1 * i as f64))
        .collect();
    let mut terms: Vec<String> = (1..d)
        .map(|i| format!("0.25*(x{i}^2 - x{})^2", i + 1))
        .collect();
    terms.extend((1..=d).map(|i| format!("0.5*x{i}^2 + 0.1*cos(x{i})")));
    Problem::from_str(&format!(
        "var {}\nminimize {}",
        vars.join(", "),
        terms.join(" + ")
    ))
    .expect("the bench objective parses")
}

/// The derivative cost the model coefficients are compared with: value, gradient and
/// Hessian of a `d`-variable objective from its compiled tape.
fn derivatives(group: &mut BenchmarkGroup<'_, WallTime>, d: usize) {
    let problem = chain_problem(d);
    let x = problem.start();
    let (mut ws, mut jets) = (Workspace::default(), Jets::default());
    group.bench_function(BenchmarkId::new("derivatives", d), |bench| {
        bench.iter(|| {
            problem
                .objective_derivatives_with(black_box(&x), &mut ws, &mut jets)
                .expect("finite");
            jets.values[0]
        });
    });
}

fn models(c: &mut Criterion) {
    let mut group = c.benchmark_group("models");
    // Short and fixed, so the whole bench runs in well under a minute: these are
    // microsecond-scale calls, and 2 s gives criterion thousands of samples.
    group.warm_up_time(Duration::from_millis(500));
    group.measurement_time(Duration::from_secs(2));
    for d in DIMS {
        let (local, eta) = bench_case(d);
        eigendecomposition(&mut group, &local);
        hasme_coefficients(&mut group, &local, eta);
        if d <= 16 {
            hasme_on_workspace(&mut group, &local, eta);
        }
        derivatives(&mut group, d);
    }
    group.finish();
}

criterion_group!(benches, models);
criterion_main!(benches);
