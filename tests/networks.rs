//! Networks written naturally in the language (docs/language.md, "Matrices, random
//! starts and indexed columns"): matrix weights, random starts, indexed columns,
//! `max`/`min`/`relu` and `logsumexp`.
//!
//! The references are independent of the new syntax: the same networks written out
//! coordinate by coordinate with scalar variables and explicit column names, central
//! finite differences, and closed forms (softmax, the stable log-sum-exp).

mod common;

use common::{hasme, json, stderr, stdout, temp_file};
use hasme::lang::Source;
use hasme::{Overrides, Problem, SimConfig, simulate};
use proptest::prelude::*;

fn from_text(text: &str) -> Problem {
    Problem::from_str(text).unwrap_or_else(|e| panic!("{text}\n{e}"))
}

fn with_seed(text: &str, seed: u64) -> Problem {
    Problem::from_source(
        Source::new("t.hasme", text),
        &Overrides::none().init_seed(seed),
    )
    .unwrap_or_else(|e| panic!("{text}\n{e}"))
}

/// Largest magnitude among the value, gradient and Hessian: the scale of "relative".
fn scale(d: &hasme::Derivatives) -> f64 {
    d.gradient
        .iter()
        .chain(d.hessian.iter())
        .fold(d.value.abs().max(1.0), |m, v| m.max(v.abs()))
}

/// Values, gradients and Hessians of two problems over the same coordinates agree to
/// `tol` relative to the larger's scale.
fn assert_same_derivatives(a: &Problem, b: &Problem, x: &[f64], tol: f64) {
    let (da, db) = (a.derivatives(x).unwrap(), b.derivatives(x).unwrap());
    let s = scale(&da).max(scale(&db));
    assert!(
        (da.value - db.value).abs() <= tol * s,
        "{} vs {}",
        da.value,
        db.value
    );
    for (i, (p, q)) in da.gradient.iter().zip(&db.gradient).enumerate() {
        assert!((p - q).abs() <= tol * s, "∂{i}: {p} vs {q}");
    }
    for (k, (p, q)) in da.hessian.iter().zip(&db.hessian).enumerate() {
        assert!((p - q).abs() <= tol * s, "Hessian entry {k}: {p} vs {q}");
    }
}

/// The gradient and Hessian against central differences of the value and of the
/// gradient. Step 1e−5: truncation h²·f‴ ≈ 1e−10 and round-off ε/h ≈ 1e−11 relative
/// for these O(1) objectives, so 1e−6 relative leaves a wide margin.
fn assert_matches_finite_differences(p: &Problem, x: &[f64]) {
    let h = 1e-5;
    let d = p.derivatives(x).unwrap();
    let s = scale(&d);
    for i in 0..x.len() {
        let (mut up, mut down) = (x.to_vec(), x.to_vec());
        up[i] += h;
        down[i] -= h;
        let fd = (p.value(&up).unwrap() - p.value(&down).unwrap()) / (2.0 * h);
        assert!(
            (d.gradient[i] - fd).abs() <= 1e-6 * s,
            "∂{i}: {} vs {fd}",
            d.gradient[i]
        );
        let (gu, gd) = (
            p.derivatives(&up).unwrap().gradient,
            p.derivatives(&down).unwrap().gradient,
        );
        for j in 0..x.len() {
            let fd = (gu[j] - gd[j]) / (2.0 * h);
            let got = d.hessian[(j, i)];
            assert!((got - fd).abs() <= 1e-6 * s, "∂{j}∂{i}: {got} vs {fd}");
        }
    }
}

// ---------------------------------------------------------------------------------------
// A two-layer tanh network and a softmax classifier

const P: usize = 5;
const H: usize = 3;

/// `examples/network.hasme` written out with scalar variables `W_j_i`, `b_j`, `v_j` (in
/// the matrix file's coordinate order: W row-major, then b, then v) and explicit
/// column names `d.x1` ….
fn network_by_coordinates() -> String {
    let mut vars = Vec::new();
    for j in 1..=H {
        for i in 1..=P {
            vars.push(format!("W_{j}_{i}"));
        }
    }
    vars.extend((1..=H).map(|j| format!("b_{j}")));
    vars.extend((1..=H).map(|j| format!("v_{j}")));
    let hidden: Vec<String> = (1..=H)
        .map(|j| {
            let inner: Vec<String> = (1..=P).map(|i| format!("W_{j}_{i}*d.x{i}")).collect();
            format!("v_{j}*tanh({} + b_{j})", inner.join(" + "))
        })
        .collect();
    let penalty: Vec<String> = (1..=H)
        .flat_map(|j| (1..=P).map(move |i| format!("W_{j}_{i}^2")))
        .collect();
    format!(
        "data d = \"examples/teacher.csv\"\nvar {}\nminimize mean(d, 0.5*({} - d.y)^2) + 0.0005*({})\nbatch 8",
        vars.join(", "),
        hidden.join(" + "),
        penalty.join(" + ")
    )
}

fn network() -> Problem {
    Problem::from_file("examples/network.hasme", &Overrides::none()).expect("the example")
}

#[test]
fn the_network_equals_itself_written_by_coordinates() {
    let p = network();
    let q = from_text(&network_by_coordinates());
    assert_eq!(p.dim(), H * P + 2 * H);
    assert_eq!(p.dim(), q.dim());
    assert_eq!(&p.variables()[..3], ["W[1,1]", "W[1,2]", "W[1,3]"]);
    assert_eq!(p.variables()[P], "W[2,1]");
    assert_eq!(p.variables()[H * P], "b[1]");
    // 1e−12: the same arithmetic compiled from two spellings (sums may associate the
    // other way where the checker folds differently).
    let start = p.start();
    assert_same_derivatives(&p, &q, &start, 1e-12);
    let x: Vec<f64> = (0..p.dim()).map(|k| 0.7 * (k as f64 * 1.3).sin()).collect();
    assert_same_derivatives(&p, &q, &x, 1e-12);
    // The per-example gradients too (what minibatch SGD reads): the noise covariances.
    let (sa, sb) = (p.noise_cov(&x).unwrap(), q.noise_cov(&x).unwrap());
    let m = sa.iter().fold(1e-300f64, |m, v| m.max(v.abs()));
    assert!((sa - sb).abs().max() <= 1e-12 * m);
}

#[test]
fn the_network_matches_finite_differences() {
    let p = network();
    assert_matches_finite_differences(&p, &p.start());
}

/// Hessian-vector products over the rows of a finite sum (one dual forward pass and one
/// reverse sweep per row) equal the dense Hessian times the vector, on the network and
/// the softmax classifier.
#[test]
fn hessian_vector_products_over_the_rows_match_the_dense_hessian() {
    let softmax = Problem::from_file("examples/softmax.hasme", &Overrides::none()).unwrap();
    for p in [network(), softmax] {
        let d = p.dim();
        let x: Vec<f64> = (0..d).map(|k| 0.5 * (k as f64 * 0.7 + 0.1).sin()).collect();
        let dense = p.objective_derivatives(&x).unwrap();
        let mut ws = hasme::Workspace::default();
        let scale = dense.hessian.iter().fold(1e-300f64, |m, v| m.max(v.abs()));
        for seed in 0..3 {
            let v: Vec<f64> = (0..d)
                .map(|k| ((k * 5 + seed) as f64 * 0.61).cos())
                .collect();
            let (mut g, mut hv) = (vec![0.0; d], vec![0.0; d]);
            let f = p
                .hessian_vector_with(&x, &v, &mut ws, &mut g, &mut hv)
                .unwrap();
            let want = &dense.hessian * nalgebra::DVector::from_column_slice(&v);
            // 1e-12 relative: the same chain rule summed over the rows in another order.
            assert!((f - dense.value).abs() <= 1e-12 * dense.value.abs().max(1.0));
            for i in 0..d {
                assert!((hv[i] - want[i]).abs() <= 1e-12 * scale * d as f64, "{i}");
                assert!((g[i] - dense.gradient[i]).abs() <= 1e-12 * scale);
            }
        }
    }
}

/// `examples/softmax.hasme` with scalar variables and explicit columns, `log Σ exp`
/// written directly (safe here: the scores stay small).
fn softmax_by_coordinates() -> String {
    let z = |k: usize| format!("(W_{k}_1*d.x1 + W_{k}_2*d.x2 + c_{k})");
    let vars: Vec<String> = (1..=3)
        .flat_map(|k| (1..=2).map(move |i| format!("W_{k}_{i}")))
        .chain((1..=3).map(|k| format!("c_{k}")))
        .collect();
    let exps: Vec<String> = (1..=3).map(|k| format!("exp({})", z(k))).collect();
    let picked: Vec<String> = (1..=3).map(|k| format!("d.y{k}*{}", z(k))).collect();
    let penalty: Vec<String> = (1..=3)
        .flat_map(|k| (1..=2).map(move |i| format!("W_{k}_{i}^2")))
        .collect();
    format!(
        "data d = \"examples/classes.csv\"\nvar {}\nminimize mean(d, log({}) - ({})) + 0.005*({})\nbatch 6",
        vars.join(", "),
        exps.join(" + "),
        picked.join(" + "),
        penalty.join(" + ")
    )
}

#[test]
fn the_softmax_classifier_equals_its_direct_formula_and_finite_differences() {
    let p = Problem::from_file("examples/softmax.hasme", &Overrides::none()).unwrap();
    let q = from_text(&softmax_by_coordinates());
    assert_eq!(p.dim(), 9);
    let x: Vec<f64> = (0..9).map(|k| 0.4 * (k as f64 * 0.9 + 0.2).cos()).collect();
    // 1e−12: the shifted and the direct log-sum-exp differ by a few roundings.
    assert_same_derivatives(&p, &q, &x, 1e-12);
    assert_same_derivatives(&p, &q, &p.start(), 1e-12);
    assert_matches_finite_differences(&p, &x);
    // At W = 0, c = 0 every class has probability 1/3: f = log 3.
    let f0 = p.value(&p.start()).unwrap();
    // 1e−14: the mean of 60 rows of a few roundings each.
    assert!((f0 - 3f64.ln()).abs() < 1e-14);
}

// ---------------------------------------------------------------------------------------
// logsumexp far from 0

/// softmax(z) and log Σ exp z in closed form, shifted by the largest entry.
fn softmax(z: &[f64]) -> (f64, Vec<f64>) {
    let m = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = z.iter().map(|v| (v - m).exp()).collect();
    let s: f64 = e.iter().sum();
    (m + s.ln(), e.iter().map(|v| v / s).collect())
}

#[test]
fn logsumexp_of_large_arguments_is_finite_with_softmax_derivatives() {
    let p = from_text("var z[4]\nminimize logsumexp(k = 1..4, z[k])");
    let q = from_text("var z[11]\nminimize logsumexp(k = 1..11, z[k])");
    for z in [
        vec![1000.0, 999.0, -1000.0, 1000.0],
        vec![-1000.0, -1000.0, -1001.0, -999.5],
        vec![1e3, -1e3, 0.0, 3.0],
    ] {
        let d = p.derivatives(&z).unwrap();
        let (value, pr) = softmax(&z);
        // 1e−15 relative: a few roundings of |value| ≈ 1000.
        assert!(
            (d.value - value).abs() <= 1e-15 * value.abs().max(1.0),
            "{z:?}"
        );
        let total: f64 = d.gradient.iter().sum();
        assert!(
            (total - 1.0).abs() < 1e-15,
            "softmax weights sum to 1: {total}"
        );
        for i in 0..4 {
            assert!((d.gradient[i] - pr[i]).abs() < 1e-15);
            for j in 0..4 {
                // ∇² log Σ exp = diag(p) − ppᵀ.
                let want = if i == j { pr[i] } else { 0.0 } - pr[i] * pr[j];
                assert!((d.hessian[(i, j)] - want).abs() < 1e-15, "({i}, {j})");
            }
        }
    }
    // Above 8 variables (forward-over-reverse Hessians) the same.
    let z: Vec<f64> = (0..11).map(|k| 1000.0 - 0.5 * k as f64).collect();
    let d = q.derivatives(&z).unwrap();
    let (value, pr) = softmax(&z);
    assert!((d.value - value).abs() <= 1e-15 * value);
    for (i, &p) in pr.iter().enumerate() {
        assert!((d.gradient[i] - p).abs() < 1e-15);
        assert!((d.hessian[(i, i)] - (p - p * p)).abs() < 1e-15);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Where `exp` cannot overflow, logsumexp equals `log(Σ exp)` written out, with its
    /// derivatives (1e−13 relative: the shift changes the roundings, not the function).
    #[test]
    fn logsumexp_equals_the_direct_formula_where_safe(
        z in prop::collection::vec(-20.0f64..20.0, 3),
    ) {
        let term = |k: usize| format!("(2*z[{k}] - z[{k}]^2/10 + z[1]*z[{k}]/5)");
        let p = from_text(
            "var z[3]\nminimize logsumexp(k = 1..3, 2*z[k] - z[k]^2/10 + z[1]*z[k]/5)",
        );
        let direct: Vec<String> = (1..=3).map(|k| format!("exp({})", term(k))).collect();
        let q = from_text(&format!("var z[3]\nminimize log({})", direct.join(" + ")));
        let (dp, dq) = (p.derivatives(&z).unwrap(), q.derivatives(&z).unwrap());
        let s = scale(&dp);
        prop_assert!((dp.value - dq.value).abs() <= 1e-13 * s);
        for (a, b) in dp.gradient.iter().zip(&dq.gradient).chain(dp.hessian.iter().zip(&dq.hessian)) {
            prop_assert!((a - b).abs() <= 1e-13 * s, "{} vs {}", a, b);
        }
    }
}

// ---------------------------------------------------------------------------------------
// max, min and relu

#[test]
fn max_min_and_relu_have_the_documented_derivatives() {
    let p = from_text(
        "var x, y\nlet u = x^2\nlet w = 2*y\n\
         observe mx = max(u, w)\nobserve mn = min(u, w)\nobserve swapped = max(w, u)\n\
         observe r = relu(x - 1)\nminimize max(u, w) + min(u, w)",
    );
    let at = |x: f64, y: f64| p.observable_derivatives(&[x, y]).unwrap();
    // u > w at (2, 1): max is u (∇ = (2x, 0)), min is w (∇ = (0, 2)).
    let d = at(2.0, 1.0);
    assert_eq!(d[0].gradient.as_slice(), [4.0, 0.0]);
    assert_eq!(d[0].hessian[(0, 0)], 2.0);
    assert_eq!(d[1].gradient.as_slice(), [0.0, 2.0]);
    assert_eq!(d[3].gradient.as_slice(), [1.0, 0.0]);
    // A tie at (2, 2): u = w = 4. Ties take the first argument.
    let d = at(2.0, 2.0);
    assert_eq!((d[0].value, d[1].value), (4.0, 4.0));
    assert_eq!(d[0].gradient.as_slice(), [4.0, 0.0], "max(u, w) takes u");
    assert_eq!(d[1].gradient.as_slice(), [4.0, 0.0], "min(u, w) takes u");
    assert_eq!(d[2].gradient.as_slice(), [0.0, 2.0], "max(w, u) takes w");
    // relu: 0 below and at the kink, 1 above.
    assert_eq!(at(1.0, 0.0)[3].gradient.as_slice(), [0.0, 0.0]);
    assert_eq!(at(1.0, 0.0)[3].value, 0.0);
    assert_eq!(at(0.5, 0.0)[3].gradient.as_slice(), [0.0, 0.0]);
    assert_eq!(at(1.5, 0.0)[3].gradient.as_slice(), [1.0, 0.0]);
    // The kinks are reported, as for `abs`.
    let warnings: Vec<&str> = p.warnings().iter().map(|w| w.message.as_str()).collect();
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("`max` is not differentiable"))
    );
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("`min` is not differentiable"))
    );
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("`relu` is not differentiable at 0"))
    );
    // Constant arguments fold, without a warning.
    let c = from_text("var x\nminimize x^2 + max(1, 2) + min(3, -1) + relu(-4)");
    assert!(c.warnings().is_empty());
    assert_eq!(c.value(&[0.0]).unwrap(), 2.0 - 1.0);
    assert_eq!(c.structure().objective_degree, Some(2));
}

// ---------------------------------------------------------------------------------------
// Random starts

const NORMAL: &str = "var w[5000] ~ normal(0.5, 2)\nminimize sum(i = 1..5000, w[i]^2)";
const UNIFORM: &str = "var w[50, 100] ~ uniform(-1, 3)\nminimize w[1, 1]^2";

fn bits(x: &[f64]) -> Vec<u64> {
    x.iter().map(|v| v.to_bits()).collect()
}

#[test]
fn the_same_init_seed_gives_the_same_start_and_another_differs() {
    for text in [
        NORMAL,
        "var a ~ uniform(0, 1), b = 2, W[2, 3] ~ normal(1, 0.1)\nminimize a + b",
    ] {
        let (p, q, r) = (with_seed(text, 7), with_seed(text, 7), with_seed(text, 8));
        assert_eq!(bits(&p.start()), bits(&q.start()));
        assert_ne!(bits(&p.start()), bits(&r.start()));
        assert_eq!((p.init_seed(), r.init_seed()), (7, 8));
        assert!(p.has_random_starts());
    }
    // Seed 0 by default, and a file without draws has no random starts.
    let p = from_text(NORMAL);
    assert_eq!(bits(&p.start()), bits(&with_seed(NORMAL, 0).start()));
    let plain = from_text("var x = 1\nminimize x^2");
    assert!(!plain.has_random_starts() && plain.init_seed_if_random().is_none());
}

/// One stream for the whole file, in declaration order and row-major: splitting the
/// same draws over several variables reads the same numbers.
#[test]
fn draws_are_read_in_declaration_order_and_row_major() {
    let one = with_seed("var z[7] ~ normal(0, 1)\nminimize z[1]", 3).start();
    let split = with_seed(
        "var a ~ normal(0, 1)\nvar W[2, 2] ~ normal(0, 1), c = 5, v[2] ~ normal(0, 1)\nminimize a",
        3,
    );
    let s = split.start();
    assert_eq!(
        split.variables()[1..5],
        ["W[1,1]", "W[1,2]", "W[2,1]", "W[2,2]"]
    );
    assert_eq!(
        bits(&[s[0], s[1], s[2], s[3], s[4], s[6], s[7]]),
        bits(&one)
    );
    assert_eq!(s[5], 5.0);
    // A normal with mean M and deviation S is M + S·z of the same z.
    let shifted = with_seed("var z[7] ~ normal(3, 2)\nminimize z[1]", 3).start();
    for (a, b) in shifted.iter().zip(&one) {
        assert_eq!(*a, 3.0 + 2.0 * b);
    }
}

/// Mean and variance of 5000 draws (the most for which a dense Hessian may be formed) within bands that follow from their count: the
/// sample mean has standard error S/√n, the sample variance S²·√(2/(n−1)) for a
/// normal and σ²·√((μ₄/σ⁴ − (n−3)/(n−1))/n) ≈ σ²·√(0.8/n) for a uniform (μ₄/σ⁴ = 9/5);
/// four standard errors each (sixteen checks over four seeds) fail by chance with
/// probability about 1e−3; the seeds are fixed, so the test is deterministic.
#[test]
fn draws_have_the_right_mean_and_spread() {
    let n = 5000.0f64;
    for seed in 0..4 {
        let p = with_seed(NORMAL, seed);
        let x = p.start();
        let (m, v) = mean_var(&x);
        let (mu, s) = (0.5, 2.0);
        assert!((m - mu).abs() < 4.0 * s / n.sqrt(), "seed {seed}: mean {m}");
        assert!(
            (v - s * s).abs() < 4.0 * s * s * (2.0 / (n - 1.0)).sqrt(),
            "seed {seed}: variance {v}"
        );
        // What `check` reports is the same summary.
        let r = &p.random_starts()[0];
        assert_eq!(
            (r.name.as_str(), r.distribution, r.count),
            ("w", "normal", 5000)
        );
        assert!((r.mean - m).abs() < 1e-12 && (r.sd.unwrap() - v.sqrt()).abs() < 1e-12);

        let u = with_seed(UNIFORM, seed).start();
        assert!(u.iter().all(|&v| (-1.0..3.0).contains(&v)));
        let (m, v) = mean_var(&u);
        let var: f64 = 16.0 / 12.0;
        assert!(
            (m - 1.0).abs() < 4.0 * var.sqrt() / n.sqrt(),
            "seed {seed}: mean {m}"
        );
        assert!(
            (v - var).abs() < 4.0 * var * (0.8 / n).sqrt(),
            "seed {seed}: variance {v}"
        );
    }
}

fn mean_var(x: &[f64]) -> (f64, f64) {
    let n = x.len() as f64;
    let m = x.iter().sum::<f64>() / n;
    let v = x.iter().map(|v| (v - m) * (v - m)).sum::<f64>() / (n - 1.0);
    (m, v)
}

/// The start, hence a simulation from it, is the same on one thread and on two.
#[test]
fn a_simulation_from_a_random_start_does_not_depend_on_the_threads() {
    let text = "var w[2] ~ normal(0, 1)\nminimize 0.5*w[1]^2 + 0.25*w[2]^4\nnoise sd 0.2";
    let run = |threads| {
        let p = with_seed(text, 11);
        let c = SimConfig::builder(0.1, 0.5, 600)
            .threads(threads)
            .build()
            .unwrap();
        simulate(&p, &c).unwrap()
    };
    let (one, two) = (run(1), run(2));
    assert_eq!(one, two);
    assert_eq!(one.init_seed, Some(11));
}

// ---------------------------------------------------------------------------------------
// The command line

#[test]
fn init_seed_is_an_option_of_the_commands_and_echoed_when_there_are_draws() {
    let a = json(&hasme(&[
        "check",
        "examples/network.hasme",
        "--json",
        "--init-seed",
        "3",
    ]));
    let b = json(&hasme(&[
        "check",
        "examples/network.hasme",
        "--json",
        "--init-seed",
        "3",
    ]));
    let c = json(&hasme(&["check", "examples/network.hasme", "--json"]));
    assert_eq!(a, b);
    assert_eq!(a["init_seed"], 3);
    assert_eq!(c["init_seed"], 0);
    assert_ne!(a["start"], c["start"]);
    assert_eq!(a["random_starts"][0]["name"], "W");
    assert_eq!(a["random_starts"][0]["count"], 15);
    assert_eq!(a["matrices"][0]["rows"], 3);
    // A file without draws: its JSON has no `init_seed`, whatever the option says.
    let plain = json(&hasme(&[
        "check",
        "examples/saddle.hasme",
        "--json",
        "--init-seed",
        "3",
    ]));
    assert!(plain.get("init_seed").is_none());
    assert_eq!(
        plain,
        json(&hasme(&["check", "examples/saddle.hasme", "--json"]))
    );
    // The draws the derive report starts from are those of `check`.
    let d = json(&hasme(&[
        "derive",
        "examples/network.hasme",
        "--json",
        "--init-seed",
        "3",
    ]));
    assert_eq!(d["point"], a["start"]);
    assert_eq!(d["init_seed"], 3);
}

#[test]
fn a_simulation_from_a_random_start_is_the_same_on_one_and_two_threads() {
    let file = temp_file(
        "random_start.hasme",
        "var w[2] ~ normal(0, 1)\nminimize 0.5*w[1]^2 + 0.25*w[2]^4\nnoise sd 0.2",
    );
    let run = |threads: &str| {
        let o = hasme(&[
            "simulate",
            file.to_str().unwrap(),
            "--eta",
            "0.1",
            "--horizon",
            "0.5",
            "--paths",
            "300",
            "--init-seed",
            "5",
            "--threads",
            threads,
            "--quiet",
            "--json",
        ]);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        stdout(&o)
    };
    let one = run("1");
    assert_eq!(one, run("2"));
    let v: serde_json::Value = serde_json::from_str(&one).unwrap();
    assert_eq!(v["init_seed"], 5);
}

#[test]
fn matrix_coordinates_are_named_in_at() {
    let d = json(&hasme(&[
        "derive",
        "examples/softmax.hasme",
        "--json",
        "--at",
        "W[2,1]=0.5,c=0.25",
    ]));
    let names: Vec<&str> = d["variables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "W[1,1]", "W[1,2]", "W[2,1]", "W[2,2]", "W[3,1]", "W[3,2]", "c[1]", "c[2]", "c[3]"
        ]
    );
    let point = common::f64s(&d["point"]);
    assert_eq!(point, [0.0, 0.0, 0.5, 0.0, 0.0, 0.0, 0.25, 0.25, 0.25]);
    assert_eq!(d["params"]["K"], 3.0);
}

#[test]
fn language_errors_exit_2_with_the_place() {
    for (text, place) in [
        (
            "var W[2, 2]\nminimize W[1, 3]",
            ":2:15: error: column index 3 is out of range",
        ),
        (
            "param s ~ normal(0, 1)\nvar x\nminimize x",
            ":1:9: error: a param is a constant",
        ),
        (
            "var w ~ uniform(1, 0)\nminimize w",
            ":1:9: error: `uniform(A, B)` needs A < B",
        ),
    ] {
        let file = temp_file("bad_network.hasme", text);
        let o = hasme(&["check", file.to_str().unwrap()]);
        assert_eq!(o.status.code(), Some(2), "{text}");
        let err = stderr(&o);
        assert!(err.contains(place), "{err}");
        assert!(err.contains('^'), "a caret: {err}");
    }
}
