//! One HA-SME evaluation at large d (docs/models.md §8, docs/performance.md
//! "Matrix-free coefficients"): the drift `−φ(ηH)g` and one diffusion increment
//! `√η ψ(ηH)^{1/2} u` on teacher–student tanh networks with n = 1000 rows, matrix-free
//! (Hessian-vector products and Lanczos, tolerance 1e−10) against the dense path (the
//! d×d Hessian from the tape, then `ModelKind::Hasme`'s eigendecompositions and the
//! factor times ΔW) and against one full gradient ∇f of the same problem in the same
//! run. Σ's factor is left out of both sides (u is given).
//!
//! Networks: p inputs, h hidden units, d = h(p + 2) weights (W, b, v), the loss of
//! `examples/network.hasme` with weight decay on W; data from a teacher network of the
//! same shape, generated here deterministically; η set so that ηλ_max = 0.5 at the
//! point. d = 12, 16, 24, 48, 100, 400, 1600 (and 6400 with `HASME_BENCH_LARGE=1`); the
//! dense path up to d = 400.
//!
//! Run: `cargo bench --bench network`; ids are `network/<d>/<what>`. After the
//! criterion runs it prints, per d, the paired ratios (evaluation / gradient) and the
//! Lanczos steps, then the growth exponents in d.

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use hasme::Problem;
use hasme::models::krylov::Lanczos;
use hasme::models::matrix_free::{KrylovOptions, hasme_diffusion_increment, hasme_drift};
use hasme::models::{Local, Model, ModelKind};
use hasme::tape::{Jets, Workspace};
use nalgebra::{DMatrix, DVector};

#[path = "common/paired.rs"]
#[allow(dead_code)] // `describe` is for the benches that print one ratio
mod paired;
use paired::paired_ratio;

const ROWS: usize = 1000;
/// η is set per network so that ηλ_max(H) = 0.5 at the benchmark's point: the same
/// distance from the domain edge at every d (the Lanczos steps grow as ηλ_max → 1).
const ETA_LAMBDA_MAX: f64 = 0.5;

/// A deterministic pseudo-random number in [−1, 1).
fn u(i: usize, j: usize) -> f64 {
    let x = ((i * 7919 + j * 104_729 + 13) as f64 * 0.618_033_988_749_895).fract();
    2.0 * x - 1.0
}

/// The teacher–student network with p inputs and h hidden units, and a point (the
/// student's weights) near the teacher's scale.
fn network(p: usize, h: usize) -> (Problem, Vec<f64>) {
    // Teacher: W*_ji = u/√p, v*_j = u; inputs in [−1, 1)·√3 (unit variance).
    let wt: Vec<f64> = (0..h * p)
        .map(|k| u(k, 1) * 3f64.sqrt() / (p as f64).sqrt())
        .collect();
    let vt: Vec<f64> = (0..h).map(|j| u(j, 2)).collect();
    let mut rows = Vec::with_capacity(ROWS);
    for r in 0..ROWS {
        let x: Vec<f64> = (0..p).map(|i| u(r + 17, i + 3) * 3f64.sqrt()).collect();
        let y: f64 = (0..h)
            .map(|j| vt[j] * (0..p).map(|i| wt[j * p + i] * x[i]).sum::<f64>().tanh())
            .sum::<f64>()
            + 0.1 * u(r, 5);
        let cells: Vec<String> = x.iter().map(|v| format!("{v:.6}")).collect();
        rows.push(format!("[{}, {y:.6}]", cells.join(", ")));
    }
    let header: Vec<String> = (1..=p).map(|i| format!("x{i}")).collect();
    let text = format!(
        "param p = {p}\nparam h = {h}\ndata d = [[{}, y], {}]\n\
         var W[h, p] = 0\nvar b[h] = 0\nvar v[h] = 0\n\
         minimize mean(d, 0.5*(sum(j = 1..h, v[j]*tanh(sum(i = 1..p, W[j, i]*d.x[i]) + b[j])) - d.y)^2) \
         + 0.0005*sum(j = 1..h, sum(i = 1..p, W[j, i]^2))\nbatch 32",
        header.join(", "),
        rows.join(", ")
    );
    let problem = Problem::from_str(&text).expect("the network parses");
    // The student: W = W* + noise, b small, v = v*/2 (variables in declaration order).
    let mut x: Vec<f64> = (0..h * p)
        .map(|k| wt[k] + 0.3 * u(k, 7) / (p as f64).sqrt())
        .collect();
    x.extend((0..h).map(|j| 0.1 * u(j, 8)));
    x.extend((0..h).map(|j| 0.5 * vt[j] + 0.2 * u(j, 9)));
    assert_eq!(x.len(), problem.dim());
    (problem, x)
}

/// The shapes: (p, h) with d = h(p + 2).
fn shapes() -> Vec<(usize, usize)> {
    let mut s = vec![
        (4, 2),
        (6, 2),
        (10, 2),
        (10, 4),
        (23, 4),
        (38, 10),
        (78, 20),
    ];
    if std::env::var_os("HASME_BENCH_LARGE").is_some() {
        // d = 6400 = 80·(78 + 2), beyond the dense limit of 5000 variables: only the
        // matrix-free path and the gradient run.
        s.push((78, 80));
    }
    s
}

/// Largest d for the dense path.
const DENSE_MAX: usize = 400;

struct Row {
    d: usize,
    gradient: f64,
    krylov: f64,
    krylov_ratio: [f64; 3],
    dense: Option<(f64, [f64; 3])>,
    steps: (usize, usize),
    eta_lambda_max: f64,
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("network");
    g.warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
        .sample_size(10);
    let options = KrylovOptions::default();
    let mut table = Vec::new();
    for (p, h) in shapes() {
        let (problem, x) = network(p, h);
        let d = problem.dim();
        let (mut ws, mut jets) = (Workspace::default(), Jets::default());
        problem
            .gradient_with(&x, &mut ws, &mut jets)
            .expect("finite");
        let grad = jets.gradient(0).to_vec();
        // u stands for Σ^{1/2}ΔW: a fixed vector of the gradient's scale.
        let noise: Vec<f64> = (0..d).map(|i| 0.1 * u(i, 11)).collect();
        let eta = ETA_LAMBDA_MAX / lambda_max(&problem, &x);

        let mut gradient = || {
            problem
                .gradient_with(black_box(&x), &mut ws, &mut jets)
                .expect("finite");
            jets.values[0]
        };
        let (mut hvp_ws, mut hvp_grad) = (Workspace::default(), vec![0.0; d]);
        let mut krylov = || {
            let mut hvp = |v: &[f64], out: &mut [f64]| {
                problem
                    .hessian_vector_with(&x, v, &mut hvp_ws, &mut hvp_grad, out)
                    .map(|_| ())
            };
            let b = hasme_drift(&x, &grad, eta, &options, &mut hvp).expect("in the domain");
            let i = hasme_diffusion_increment(&x, &noise, eta, &options, &mut hvp)
                .expect("in the domain");
            (b, i)
        };
        let (b, i) = krylov();
        let top = b.top.expect("steps").value.max(i.top.expect("steps").value);
        let steps = (b.steps, i.steps);
        let mut dense_ws = (Workspace::default(), Jets::default());
        let identity = DMatrix::identity(d, d);
        let dw = DVector::from_column_slice(&noise);
        let mut dense = || {
            problem
                .objective_derivatives_with(black_box(&x), &mut dense_ws.0, &mut dense_ws.1)
                .expect("finite");
            let hessian = DMatrix::from_row_slice(d, d, dense_ws.1.hessian(0));
            let local = Local::new(
                DVector::from_column_slice(&x),
                DVector::from_column_slice(&grad),
                hessian,
                identity.clone(),
            )
            .expect("valid");
            let c = ModelKind::Hasme
                .coefficients(&local, eta)
                .expect("in the domain");
            (c.drift, &c.factor * &dw)
        };

        g.bench_function(BenchmarkId::new(format!("{d}"), "gradient"), |bch| {
            bch.iter(&mut gradient)
        });
        g.bench_function(BenchmarkId::new(format!("{d}"), "krylov"), |bch| {
            bch.iter(&mut krylov)
        });
        if d <= DENSE_MAX {
            g.bench_function(BenchmarkId::new(format!("{d}"), "dense"), |bch| {
                bch.iter(&mut dense)
            });
        }
        // Paired ratios: 11 rounds (5 above d = 1000, 3 for the dense path, whose
        // evaluations take seconds at d = 400), each one evaluation against as many
        // gradients as take about as long, so a slow spell of the shared machine hits
        // both sides.
        let per = (steps.0 + steps.1).max(1) * 3;
        let rounds = if d > 1000 { 5 } else { 11 };
        let pk = paired_ratio(rounds, 1, &mut krylov, || {
            (0..per).map(|_| gradient()).sum::<f64>()
        });
        let krylov_ratio = pk.ratio.map(|r| r * per as f64);
        let dense_row = (d <= DENSE_MAX).then(|| {
            let pd = paired_ratio(3, 1, &mut dense, &mut gradient);
            (pd.a, pd.ratio)
        });
        let row = Row {
            d,
            gradient: pk.b / per as f64,
            krylov: pk.a,
            krylov_ratio,
            dense: dense_row,
            steps,
            eta_lambda_max: eta * top,
        };
        println!("{}", line(&row));
        table.push(row);
    }
    g.finish();

    println!(
        "\nHA-SME evaluation (drift + one diffusion increment), n = {ROWS}, ηλ_max = {ETA_LAMBDA_MAX}:"
    );
    println!(
        "{:>6} {:>12} {:>12} {:>22} {:>12} {:>22} {:>8} {:>9}",
        "d", "gradient", "krylov", "krylov/gradient", "dense", "dense/gradient", "steps", "ηλ_max"
    );
    for r in &table {
        println!("{}", line(r));
    }
    let fit = |pick: &dyn Fn(&Row) -> Option<f64>| {
        let pts: Vec<(f64, f64)> = table
            .iter()
            .filter(|r| r.d >= 100)
            .filter_map(|r| pick(r).map(|t| ((r.d as f64).ln(), t.ln())))
            .collect();
        slope(&pts)
    };
    println!(
        "growth exponents in d (log-log slope over d ≥ 100): gradient {:.2}, krylov {:.2}, dense {:.2}",
        fit(&|r| Some(r.gradient)),
        fit(&|r| Some(r.krylov)),
        fit(&|r| r.dense.map(|x| x.0))
    );
}

/// λ_max(H) at x: the largest Ritz value plus its residual bound after 40 Lanczos steps
/// from a fixed vector (or fewer, when the space closes): an upper bound on the
/// eigenvalue it has converged to.
fn lambda_max(problem: &Problem, x: &[f64]) -> f64 {
    let d = x.len();
    let (mut ws, mut g) = (Workspace::default(), vec![0.0; d]);
    let start: Vec<f64> = (0..d).map(|i| 1.0 + 0.5 * u(i, 13)).collect();
    let mut l = Lanczos::new(&start);
    for _ in 0..40 {
        let more = l
            .step(|v: &[f64], out: &mut [f64]| {
                problem
                    .hessian_vector_with(x, v, &mut ws, &mut g, out)
                    .map(|_| ())
            })
            .expect("finite");
        if !more {
            break;
        }
    }
    let top = *l.ritz().last().expect("steps");
    top.value + top.bound
}

/// One row of the summary table.
fn line(r: &Row) -> String {
    let (dense, dense_ratio) = r
        .dense
        .map_or((String::from("—"), String::from("—")), |(t, q)| {
            (ms(t), format!("{:.1} ({:.1}–{:.1})", q[1], q[0], q[2]))
        });
    format!(
        "{:>6} {:>12} {:>12} {:>22} {:>12} {:>22} {:>8} {:>9.3}",
        r.d,
        ms(r.gradient),
        ms(r.krylov),
        format!(
            "{:.1} ({:.1}–{:.1})",
            r.krylov_ratio[1], r.krylov_ratio[0], r.krylov_ratio[2]
        ),
        dense,
        dense_ratio,
        format!("{}+{}", r.steps.0, r.steps.1),
        r.eta_lambda_max
    )
}

fn ms(seconds: f64) -> String {
    format!("{:.3} ms", seconds * 1e3)
}

/// Least-squares slope of y on x (NaN-free: fewer than two points give 0).
fn slope(pts: &[(f64, f64)]) -> f64 {
    if pts.len() < 2 {
        return 0.0;
    }
    let n = pts.len() as f64;
    let (mx, my) = pts
        .iter()
        .fold((0.0, 0.0), |(a, b), (x, y)| (a + x / n, b + y / n));
    let sxy: f64 = pts.iter().map(|(x, y)| (x - mx) * (y - my)).sum();
    let sxx: f64 = pts.iter().map(|(x, _)| (x - mx) * (x - mx)).sum();
    sxy / sxx
}

criterion_group!(benches, bench);
criterion_main!(benches);
