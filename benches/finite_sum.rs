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

/// A two-layer tanh network over `n` rows of `p` inputs with `h` hidden units
/// (d = h(p + 2)), its labels from a fixed teacher: the per-example tape of the
/// blocked-rows comparison.
fn network(n: usize, p: usize, h: usize) -> Problem {
    let header: Vec<String> = (1..=p).map(|j| format!("x{j}")).collect();
    let mut rows = Vec::new();
    for i in 0..n {
        let x: Vec<f64> = (0..p).map(|j| u(i, j)).collect();
        let y: f64 = (0..3)
            .map(|k| (x.iter().enumerate().map(|(j, v)| v * u(k, j)).sum::<f64>()).tanh())
            .sum();
        let cells: Vec<String> = x.iter().map(|v| v.to_string()).collect();
        rows.push(format!("[{}, {y}]", cells.join(", ")));
    }
    Problem::from_str(&format!(
        "data s = [[{}, y], {}]\nparam p = {p}\nparam h = {h}\n\
         var W[h, p] = 0.1\nvar b[h] = 0.05\nvar v[h] = 0.2\n\
         minimize mean(s, 0.5*(sum(j = 1..h, v[j]*tanh(sum(i = 1..p, W[j, i]*s.x[i]) + b[j])) - s.y)^2)\nbatch 16",
        header.join(", "),
        rows.join(", ")
    ))
    .expect("valid")
}

/// Rows in blocks against rows one at a time, in the same run: a Hessian-vector
/// product over the rows (`Problem::hessian_vector_with`, blocked) against the loop of
/// `Tape::hessian_vector_row` it replaces, and the same for the dense derivatives.
/// Both give the same bits (tests in `tape::rows`).
fn rows(c: &mut Criterion) {
    let mut group = c.benchmark_group("rows");
    group.measurement_time(Duration::from_secs(3));
    let p = network(1000, 10, 8);
    let (d, tape, fs) = (
        p.dim(),
        p.objective_tape(),
        p.finite_sum().expect("a finite sum"),
    );
    let x: Vec<f64> = (0..d).map(|i| 0.3 * u(i, 7)).collect();
    let v: Vec<f64> = (0..d).map(|i| u(i, 11)).collect();
    let mut ws = Workspace::default();
    let (mut g, mut hv) = (vec![0.0; d], vec![0.0; d]);
    group.bench_function("network_n1000_d96/hvp_row_by_row", |b| {
        b.iter(|| {
            g.fill(0.0);
            hv.fill(0.0);
            for i in 0..fs.n {
                tape.hessian_vector_row(0, black_box(&x), fs.row(i), &v, &mut ws, &mut g, &mut hv)
                    .unwrap();
            }
        })
    });
    group.bench_function("network_n1000_d96/hvp_blocked", |b| {
        b.iter(|| {
            p.hessian_vector_with(black_box(&x), &v, &mut ws, &mut g, &mut hv)
                .unwrap()
        })
    });
    let mut jets = Jets::default();
    group.bench_function("network_n1000_d96/gradient_row_by_row", |b| {
        b.iter(|| {
            g.fill(0.0);
            for i in 0..fs.n {
                tape.gradients_row(black_box(&x), fs.row(i), &mut ws, &mut jets)
                    .unwrap();
                g.iter_mut()
                    .zip(jets.gradient(0))
                    .for_each(|(a, b)| *a += b);
            }
        })
    });
    group.bench_function("network_n1000_d96/gradient_blocked", |b| {
        b.iter(|| p.gradient_with(black_box(&x), &mut ws, &mut jets).unwrap())
    });
    group.bench_function("network_n1000_d96/hessian_row_by_row", |b| {
        b.iter(|| {
            for i in 0..fs.n {
                tape.derivatives_row(black_box(&x), fs.row(i), &mut ws, &mut jets)
                    .unwrap();
            }
        })
    });
    group.bench_function("network_n1000_d96/hessian_blocked", |b| {
        b.iter(|| {
            tape.mean_derivatives_with(black_box(&x), &fs.rows, &mut ws, &mut jets, |_| {})
                .unwrap()
        })
    });
    group.finish();
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

criterion_group!(benches, bench, rows);
criterion_main!(benches);
