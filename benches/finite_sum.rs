//! The cost of a finite sum's exact noise covariance Σ(x) = κ C(x) (docs/models.md §1),
//! against one full gradient ∇f = (1/n) Σ ∇F_i of the same problem measured in the same
//! run: both loop over the n rows with one reverse pass of the per-example tape, and Σ
//! adds the d×d co-moment update per row. Two problems, generated deterministically:
//! linear regression (n = 1000, d = 3) and logistic regression (n = 1000, d = 10).
//! Run: `cargo bench --bench finite_sum`; ids are `finite_sum/<problem>/<what>`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use hasme::Problem;
use hasme::problem::NoiseBuffers;
use hasme::tape::{Jets, Workspace};

/// A deterministic pseudo-random number in [−1, 1) (no RNG dependence across versions).
fn u(i: usize, j: usize) -> f64 {
    let x = ((i * 7919 + j * 104_729 + 13) as f64 * 0.618_033_988_749_895).fract();
    2.0 * x - 1.0
}

/// Linear regression: y = 1.5 x1 − 0.7 x2 + 0.3 + noise, F_i = ½(w·x_i + c − y_i)².
fn linear_regression() -> Problem {
    let mut rows = Vec::new();
    for i in 0..1000 {
        let (a, b) = (u(i, 0), u(i, 1));
        rows.push(format!(
            "[{a}, {b}, {}]",
            1.5 * a - 0.7 * b + 0.3 + 0.2 * u(i, 2)
        ));
    }
    Problem::from_str(&format!(
        "data pts = [[x1, x2, y], {}]\nvar w1 = 0.1, w2 = -0.2, c = 0\n\
         minimize mean(pts, 0.5*(w1*pts.x1 + w2*pts.x2 + c - pts.y)^2)\nbatch 10",
        rows.join(", ")
    ))
    .expect("valid")
}

/// Logistic regression with 10 weights: F_i = softplus(−y_i w·x_i) + 0.01‖w‖²/2.
fn logistic_regression() -> Problem {
    let d = 10;
    let header: Vec<String> = (1..=d).map(|j| format!("x{j}")).collect();
    let mut rows = Vec::new();
    for i in 0..1000 {
        let x: Vec<f64> = (0..d).map(|j| u(i, j)).collect();
        let score: f64 = x
            .iter()
            .enumerate()
            .map(|(j, v)| v * (j as f64 - 4.5) / 4.5)
            .sum();
        let y = if score + 0.3 * u(i, d) > 0.0 {
            1.0
        } else {
            -1.0
        };
        let cells: Vec<String> = x.iter().map(|v| v.to_string()).collect();
        rows.push(format!("[{}, {y}]", cells.join(", ")));
    }
    let margin: Vec<String> = (1..=d).map(|j| format!("w[{j}]*s.x{j}")).collect();
    Problem::from_str(&format!(
        "data s = [[{}, y], {}]\nvar w[{d}] = 0.1\n\
         minimize mean(s, softplus(-s.y*({}))) + 0.005*sum(j = 1..{d}, w[j]^2)\nbatch 32",
        header.join(", "),
        rows.join(", "),
        margin.join(" + ")
    ))
    .expect("valid")
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("finite_sum");
    group.measurement_time(Duration::from_secs(3));
    for (name, p) in [
        ("linreg_n1000_d3", linear_regression()),
        ("logistic_n1000_d10", logistic_regression()),
    ] {
        let x: Vec<f64> = (0..p.dim()).map(|i| 0.05 * i as f64 - 0.1).collect();
        let (mut ws, mut jets) = (Workspace::default(), Jets::default());
        group.bench_function(format!("{name}/gradient"), |b| {
            b.iter(|| p.gradient_with(black_box(&x), &mut ws, &mut jets).unwrap())
        });
        let mut buffers = NoiseBuffers::default();
        let mut out = vec![0.0; p.dim() * p.dim()];
        group.bench_function(format!("{name}/sigma"), |b| {
            b.iter(|| {
                p.noise_cov_into(black_box(&x), &mut buffers, &mut out)
                    .unwrap()
            })
        });
        group.bench_function(format!("{name}/gradient_and_hessian"), |b| {
            b.iter(|| {
                p.objective_derivatives_with(black_box(&x), &mut ws, &mut jets)
                    .unwrap()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
