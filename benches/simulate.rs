//! Coupled SGD + `hasme` path-steps per second on the 2-variable saddle of
//! `examples/saddle.hasme` (η = 0.05, 20 steps, Euler–Maruyama with m = 8 substeps,
//! state-dependent noise), measured three ways in the same run:
//!
//! * `engine/1`: `hasme::sim::simulate` on one thread (tape derivatives, Σ(x) from the
//!   problem, the allocation-free model terms, the Brownian bridge, streaming stats);
//! * `hand/1`: the same mathematics as a plain Rust loop on one thread: closed-form
//!   ∇f, ∇²f and Σ(x) of the saddle, a closed-form 2×2 eigendecomposition and square
//!   root, the same random numbers and the same statistics. Before timing, the bench
//!   checks that both give the same means (to 1e−9 relative: same draws, different
//!   rounding), so the ratio compares equal work;
//! * `engine/2`: the engine on two threads (scaling).
//!
//! Each is measured on the saddle (`simulate/saddle/…`) and on the same saddle with
//! constant Σ (`simulate/constant-noise/…`), which the engine evaluates once: the
//! difference is the cost of evaluating and checking Σ(x) through
//! `Problem::noise_cov_into` (one point at a time) at every point.
//!
//! Throughput is reported in path-steps (one SGD step of one path, with its 8 SDE
//! substeps). After each problem's group, the engine / hand-written time ratio measured
//! in paired rounds (one run of each back to back per round, median and quartiles over
//! 21 rounds), the figure to quote on a shared machine. Run: `cargo bench --bench
//! simulate`.
//!
//! `simulate/few-paths/…`: 100 paths, fewer than one chunk of 256, on one and two
//! threads, where the threads share the chunk's paths: the 20-variable chained
//! Rosenbrock function (every model one point at a time; `hasme`, 5 steps) and the
//! saddle (lanes; `hasme`, 200 steps), both Euler–Maruyama with m = 4. After each, the
//! time on 2 threads over the time on 1 in paired rounds (11 rounds): about 0.5 when
//! both threads work, 1 when one does. Run: `cargo bench --bench simulate -- few-paths`.

use std::hint::black_box;
use std::time::Duration;

#[path = "common/paired.rs"]
mod paired;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use hasme::Problem;
use hasme::models::{ModelKind, ell};
use hasme::sim::{SchemeKind, SimConfig, simulate};
use hasme::stats::Welford;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

const ETA: f64 = 0.05;
const STEPS: u64 = 20;
const SUBSTEPS: usize = 8;
const PATHS: u64 = 1024;
const SEED: u64 = 3;
const LAMBDA: f64 = 2.0;
const MU: f64 = 0.5;

fn config(threads: usize) -> hasme::SimConfigBuilder {
    let mut c = SimConfig::builder(ETA, ETA * STEPS as f64, PATHS);
    c.models(vec![ModelKind::Hasme]);
    c.substeps(SUBSTEPS);
    c.scheme(SchemeKind::EulerMaruyama);
    c.seed(SEED);
    c.threads(threads);
    c
}

/// Gradient and Hessian of `½λx² − ½y² + ¼μ(x² + y²)²`.
#[inline]
fn derivatives(x: [f64; 2]) -> ([f64; 2], [f64; 3]) {
    let r2 = x[0] * x[0] + x[1] * x[1];
    let g = [LAMBDA * x[0] + MU * r2 * x[0], -x[1] + MU * r2 * x[1]];
    let h = [
        LAMBDA + MU * (r2 + 2.0 * x[0] * x[0]),
        2.0 * MU * x[0] * x[1],
        -1.0 + MU * (r2 + 2.0 * x[1] * x[1]),
    ];
    (g, h)
}

/// Σ(x) = diag(0.02, 0.01(1 + x²)), or diag(0.02, 0.01) for the constant-noise variant.
#[inline]
fn noise(x: [f64; 2], state: bool) -> [f64; 2] {
    if state {
        [0.02, 0.01 * (1.0 + x[0] * x[0])]
    } else {
        [0.02, 0.01]
    }
}

/// Eigenvalues and the rotation (c, s) of a symmetric 2×2 [[a, b], [b, d]]:
/// U = [[c, −s], [s, c]].
#[inline]
fn eigen2(a: f64, b: f64, d: f64) -> ([f64; 2], f64, f64) {
    if b == 0.0 {
        return ([a, d], 1.0, 0.0);
    }
    let theta = 0.5 * (d - a) / b;
    let t = theta.signum() / (theta.abs() + (1.0 + theta * theta).sqrt());
    let c = 1.0 / (1.0 + t * t).sqrt();
    let s = t * c;
    ([a - t * b, d + t * b], c, -s)
}

/// Symmetric PSD square root of [[a, b], [b, d]]: (M + √det I)/√(tr + 2√det).
#[inline]
fn sqrt2(a: f64, b: f64, d: f64) -> [f64; 3] {
    let det = (a * d - b * b).max(0.0).sqrt();
    let n = (a + d + 2.0 * det).sqrt();
    if n == 0.0 {
        return [0.0; 3];
    }
    [(a + det) / n, b / n, (d + det) / n]
}

/// The `hasme` drift and σ at x (docs/models.md §2), in closed form for d = 2.
#[inline]
fn hasme(x: [f64; 2], state: bool) -> ([f64; 2], [f64; 3]) {
    let (g, h) = derivatives(x);
    let sigma = noise(x, state);
    let (lam, c, s) = eigen2(h[0], h[1], h[2]);
    // U columns: u0 = (c, s), u1 = (−s, c).
    let gh = [c * g[0] + s * g[1], -s * g[0] + c * g[1]];
    let p = [1.0 - ETA * lam[0], 1.0 - ETA * lam[1]];
    let ph = [-ell(p[0]) * gh[0], -ell(p[1]) * gh[1]];
    let drift = [c * ph[0] - s * ph[1], s * ph[0] + c * ph[1]];
    // Σ̂ = UᵀΣU for diagonal Σ.
    let sh = [
        c * c * sigma[0] + s * s * sigma[1],
        -c * s * sigma[0] + s * c * sigma[1],
        s * s * sigma[0] + c * c * sigma[1],
    ];
    let w = [ell(p[0] * p[0]).sqrt(), ell(p[1] * p[1]).sqrt()];
    let gh = [
        ETA * sh[0] * w[0] * w[0],
        ETA * sh[1] * w[0] * w[1],
        ETA * sh[2] * w[1] * w[1],
    ];
    // Γ = U Ĝ Uᵀ.
    let g00 = c * c * gh[0] - 2.0 * c * s * gh[1] + s * s * gh[2];
    let g01 = c * s * gh[0] + (c * c - s * s) * gh[1] - s * c * gh[2];
    let g11 = s * s * gh[0] + 2.0 * s * c * gh[1] + c * c * gh[2];
    (drift, sqrt2(g00, g01, g11))
}

/// The hand-written simulation: per (time, observable) the SGD and `hasme` means, and
/// the coupled difference, exactly the engine's statistics for this configuration.
fn hand_written(paths: u64, state: bool) -> Vec<Welford> {
    let times = STEPS as usize + 1;
    let mut stats = vec![Welford::new(); times * 2 * 3];
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&SEED.to_le_bytes());
    let mut rng = ChaCha8Rng::from_seed(key);
    let h = ETA / SUBSTEPS as f64;
    // Breadth-first bridge plan of [0, 8]: (a, c, b).
    let plan = [
        (0, 4, 8),
        (0, 2, 4),
        (4, 6, 8),
        (0, 1, 2),
        (2, 3, 4),
        (4, 5, 6),
        (6, 7, 8),
    ];
    let mut values = vec![[0.0f64; 4]; times];
    let observe = |x: [f64; 2]| [x[0] * x[0] + x[1] * x[1], x[1] * x[1]];
    for path in 0..paths {
        rng.set_stream(path);
        let (mut x, mut y) = ([0.01, 0.0], [0.01, 0.0]);
        let (a, b) = (observe(x), observe(y));
        values[0] = [a[0], a[1], b[0], b[1]];
        for k in 0..STEPS {
            rng.set_word_pos(u128::from(k) << 36);
            let xi: [f64; 2] = [
                StandardNormal.sample(&mut rng),
                StandardNormal.sample(&mut rng),
            ];
            let mut w = [[0.0f64; 2]; 9];
            w[8] = [ETA.sqrt() * xi[0], ETA.sqrt() * xi[1]];
            for &(a, c, b) in &plan {
                let (ca, bc, ba) = ((c - a) as f64, (b - c) as f64, (b - a) as f64);
                let sd = (h * ca * bc / ba).sqrt();
                let (wa, wb) = (w[a], w[b]);
                for (i, wc) in w[c].iter_mut().enumerate() {
                    let z: f64 = StandardNormal.sample(&mut rng);
                    *wc = wa[i] + ca / ba * (wb[i] - wa[i]) + sd * z;
                }
            }
            // SGD: x ← x − ηg + ηΣ^{1/2}ξ.
            let (g, _) = derivatives(x);
            let s = noise(x, state);
            x = [
                x[0] + ETA * (s[0].sqrt() * xi[0] - g[0]),
                x[1] + ETA * (s[1].sqrt() * xi[1] - g[1]),
            ];
            // hasme: 8 Euler–Maruyama substeps on the bridge increments.
            for j in 0..SUBSTEPS {
                let dw = [w[j + 1][0] - w[j][0], w[j + 1][1] - w[j][1]];
                let (b, f) = hasme(y, state);
                y = [
                    y[0] + b[0] * h + f[0] * dw[0] + f[1] * dw[1],
                    y[1] + b[1] * h + f[1] * dw[0] + f[2] * dw[1],
                ];
            }
            let (a, b) = (observe(x), observe(y));
            values[k as usize + 1] = [a[0], a[1], b[0], b[1]];
        }
        for (t, v) in values.iter().enumerate() {
            for o in 0..2 {
                stats[(t * 2 + o) * 3].push(v[o]);
                stats[(t * 2 + o) * 3 + 1].push(v[2 + o]);
                stats[(t * 2 + o) * 3 + 2].push(v[2 + o] - v[o]);
            }
        }
    }
    stats
}

/// The hand-written loop and the engine compute the same numbers.
fn check_same_mathematics(problem: &Problem, state: bool) {
    let result = simulate(problem, &config(1).build().unwrap()).expect("the saddle simulates");
    let hand = hand_written(PATHS, state);
    let t = STEPS as usize;
    for o in 0..2 {
        let series = &result.observables[o].processes;
        let pairs = [
            (series[0].mean[t], hand[(t * 2 + o) * 3].mean()),
            (series[1].mean[t], hand[(t * 2 + o) * 3 + 1].mean()),
        ];
        for (engine, hand) in pairs {
            let (e, h) = (engine.expect("mean"), hand.expect("mean"));
            // Same draws; only the rounding of the arithmetic differs.
            assert!(
                (e - h).abs() <= 1e-9 * h.abs(),
                "engine {e} vs hand-written {h}"
            );
        }
    }
}

fn bench(c: &mut Criterion) {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/saddle.hasme"
    ))
    .expect("the saddle example is readable");
    let saddle = Problem::from_str(&text).expect("the saddle example parses");
    // The same saddle with Σ = diag(0.02, 0.01): the engine evaluates a constant Σ
    // once, so this variant isolates the cost of `Problem::noise_cov` per point.
    let constant = Problem::from_str(&text.replace("0.01*(1 + x^2)", "0.01"))
        .expect("the constant-noise variant parses");
    assert!(constant.structure().constant_noise);
    for (name, problem, state) in [
        ("saddle", &saddle, true),
        ("constant-noise", &constant, false),
    ] {
        check_same_mathematics(problem, state);
        let mut group = c.benchmark_group(format!("simulate/{name}"));
        group
            .sample_size(10)
            .warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(8))
            .throughput(Throughput::Elements(PATHS * STEPS));
        group.bench_function(BenchmarkId::new("hand", 1), |b| {
            b.iter(|| black_box(hand_written(black_box(PATHS), state)))
        });
        for threads in [1, 2] {
            let cfg = config(threads);
            group.bench_function(BenchmarkId::new("engine", threads), |b| {
                b.iter(|| black_box(simulate(problem, &cfg.build().unwrap()).expect("runs")))
            });
        }
        group.finish();
        let cfg = config(1);
        let p = paired::paired_ratio(
            21,
            1,
            || simulate(problem, &cfg.build().unwrap()).expect("runs"),
            || hand_written(black_box(PATHS), state),
        );
        println!(
            "simulate/{name}: engine (1 thread) / hand-written {}",
            p.describe(1e3, "ms")
        );
    }
}

/// Paths of the few-paths runs: one chunk.
const FEW: u64 = 100;

fn few_paths(c: &mut Criterion) {
    let rosenbrock = Problem::from_str(
        "param n = 20\nvar w[n] = 0.5\n\
         minimize sum(i = 1..n-1, 100*(w[i+1] - w[i]^2)^2 + (1 - w[i])^2)\nnoise sd 0.1",
    )
    .expect("the Rosenbrock function parses");
    let saddle = Problem::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/examples/saddle.hasme"
        ))
        .expect("the saddle example is readable"),
    )
    .expect("the saddle example parses");
    // η below 1/λ_max (≈ 700 at the Rosenbrock function's start point) for `hasme`.
    for (name, problem, eta, steps) in [
        ("rosenbrock20", &rosenbrock, 0.0005, 5),
        ("saddle", &saddle, ETA, 200),
    ] {
        let config = |threads: usize| {
            let mut c = SimConfig::builder(eta, eta * steps as f64, FEW);
            c.models(vec![ModelKind::Hasme]);
            c.substeps(4);
            c.scheme(SchemeKind::EulerMaruyama);
            c.seed(SEED);
            c.threads(threads);
            c.build().expect("valid settings")
        };
        let mut group = c.benchmark_group(format!("simulate/few-paths/{name}"));
        group
            .sample_size(10)
            .warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(5))
            .throughput(Throughput::Elements(FEW * steps));
        for threads in [1, 2] {
            let cfg = config(threads);
            group.bench_function(BenchmarkId::new("engine", threads), |b| {
                b.iter(|| black_box(simulate(problem, &cfg).expect("runs")))
            });
        }
        group.finish();
        let (one, two) = (config(1), config(2));
        let p = paired::paired_ratio(
            11,
            1,
            || simulate(problem, &two).expect("runs"),
            || simulate(problem, &one).expect("runs"),
        );
        println!(
            "simulate/few-paths/{name}: 2 threads / 1 thread {}",
            p.describe(1e3, "ms")
        );
    }
}

criterion_group!(benches, bench, few_paths);
criterion_main!(benches);
