//! Finite sums over data (docs/models.md §1, docs/language.md "Finite sums"): the exact minibatch
//! covariance against independent computations and exhaustive enumeration, the
//! unbiasedness of a minibatch step, the sampler's distribution, structure detection,
//! and every bad-input error with its file, line and column.

use hasme::lang::ast::Sampling;
use hasme::problem::NoiseKind;
use hasme::sim::minibatch::MinibatchSampler;
use hasme::tape::{Jets, Workspace};
use hasme::{ErrorKind, Overrides, Problem, ProblemError};
use proptest::prelude::*;

/// Logistic regression written in the language: rows (x1, x2, y) with y = ±1,
/// F_i(w) = log(1 + exp(−y_i (w1 x1 + w2 x2 + c))) + (λ/2)(w1² + w2² + c²).
const DATA: [[f64; 3]; 6] = [
    [0.5, -1.0, 1.0],
    [1.5, 0.3, 1.0],
    [-0.7, 0.8, -1.0],
    [0.2, 0.1, -1.0],
    [-1.2, -0.4, 1.0],
    [0.9, 1.1, -1.0],
];
const LAMBDA: f64 = 0.1;

fn logistic(batch: usize, sampling: &str) -> Problem {
    let rows: Vec<String> = DATA
        .iter()
        .map(|r| format!("[{}, {}, {}]", r[0], r[1], r[2]))
        .collect();
    Problem::from_str(&format!(
        "data d = [[x1, x2, y], {}]\n\
         var w1 = 0.1, w2 = -0.2, c = 0.3\n\
         minimize mean(d, log(1 + exp(-d.y*(w1*d.x1 + w2*d.x2 + c)))) + {LAMBDA}/2*(w1^2 + w2^2 + c^2)\n\
         batch {batch}\n\
         sampling {sampling}",
        rows.join(", ")
    ))
    .expect("a valid finite sum")
}

/// ∇F_i by hand: −y σ(−y m) (x1, x2, 1) + λ w, m = w·x + c.
fn example_gradient(w: &[f64], r: &[f64; 3]) -> [f64; 3] {
    let m = w[0] * r[0] + w[1] * r[1] + w[2];
    let s = 1.0 / (1.0 + (r[2] * m).exp()); // σ(−y m)
    let k = -r[2] * s;
    [
        k * r[0] + LAMBDA * w[0],
        k * r[1] + LAMBDA * w[1],
        k + LAMBDA * w[2],
    ]
}

/// C(w) = (1/n) Σ (g_i − ḡ)(g_i − ḡ)ᵀ by the two-pass formula.
fn brute_force_c(w: &[f64]) -> [[f64; 3]; 3] {
    let g: Vec<[f64; 3]> = DATA.iter().map(|r| example_gradient(w, r)).collect();
    let n = g.len() as f64;
    let mean: Vec<f64> = (0..3)
        .map(|a| g.iter().map(|v| v[a]).sum::<f64>() / n)
        .collect();
    let mut c = [[0.0; 3]; 3];
    for v in &g {
        for a in 0..3 {
            for b in 0..3 {
                c[a][b] += (v[a] - mean[a]) * (v[b] - mean[b]) / n;
            }
        }
    }
    c
}

/// All b-subsets of 0..n.
fn subsets(n: usize, b: usize) -> Vec<Vec<usize>> {
    let mut out = Vec::new();
    let mut pick = Vec::new();
    fn go(start: usize, n: usize, b: usize, pick: &mut Vec<usize>, out: &mut Vec<Vec<usize>>) {
        if pick.len() == b {
            out.push(pick.clone());
            return;
        }
        for i in start..n {
            pick.push(i);
            go(i + 1, n, b, pick, out);
            pick.pop();
        }
    }
    go(0, n, b, &mut pick, &mut out);
    out
}

/// All ordered b-tuples of 0..n (with replacement).
fn tuples(n: usize, b: usize) -> Vec<Vec<usize>> {
    (0..n.pow(b as u32))
        .map(|mut k| {
            (0..b)
                .map(|_| {
                    let i = k % n;
                    k /= n;
                    i
                })
                .collect()
        })
        .collect()
}

/// The covariance of the minibatch gradient over equally likely minibatches.
fn enumerated_cov(p: &Problem, w: &[f64], batches: &[Vec<usize>]) -> [[f64; 3]; 3] {
    let (mut ws, mut jets) = (Workspace::default(), Jets::default());
    let grads: Vec<[f64; 3]> = batches
        .iter()
        .map(|batch| {
            let mut g = [0.0; 3];
            for &i in batch {
                p.example_gradient_with(w, i, &mut ws, &mut jets).unwrap();
                for (ga, ja) in g.iter_mut().zip(jets.gradient(0)) {
                    *ga += ja / batch.len() as f64;
                }
            }
            g
        })
        .collect();
    let n = grads.len() as f64;
    let mean: Vec<f64> = (0..3)
        .map(|a| grads.iter().map(|v| v[a]).sum::<f64>() / n)
        .collect();
    let mut c = [[0.0; 3]; 3];
    for v in &grads {
        for a in 0..3 {
            for b in 0..3 {
                c[a][b] += (v[a] - mean[a]) * (v[b] - mean[b]) / n;
            }
        }
    }
    c
}

fn assert_matrix_close(a: &nalgebra::DMatrix<f64>, b: &[[f64; 3]; 3], what: &str) {
    let scale = b.iter().flatten().fold(1e-300f64, |m, v| m.max(v.abs()));
    for i in 0..3 {
        for j in 0..3 {
            // 1e-12 relative: sums of a few dozen terms of size ≤ 1 in different orders.
            assert!(
                (a[(i, j)] - b[i][j]).abs() <= 1e-12 * scale,
                "{what}: ({i}, {j}) {} vs {}",
                a[(i, j)],
                b[i][j]
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Σ(w) = κ C(w) with C from hand-written per-example gradients, for both
    /// sampling modes and every batch size.
    #[test]
    fn sigma_is_the_brute_force_covariance_of_example_gradients(
        w in proptest::array::uniform3(-2.0f64..2.0),
        batch in 1usize..=6,
        with in any::<bool>(),
    ) {
        let n = DATA.len() as f64;
        let b = batch as f64;
        let (mode, kappa) = if with {
            ("with-replacement", 1.0 / b)
        } else {
            ("without-replacement", if batch == DATA.len() { 0.0 } else { (n - b) / (b * (n - 1.0)) })
        };
        let p = logistic(batch, mode);
        prop_assert_eq!(p.noise_kind(), NoiseKind::Minibatch);
        let sigma = p.noise_cov(&w).unwrap();
        let c = brute_force_c(&w);
        let want = c.map(|r| r.map(|v| kappa * v));
        assert_matrix_close(&sigma, &want, mode);
    }

    /// f, ∇f and ∇²f are the means over the rows (∇f against the hand gradient).
    #[test]
    fn objective_derivatives_are_row_means(w in proptest::array::uniform3(-2.0f64..2.0)) {
        let p = logistic(1, "without-replacement");
        let d = p.objective_derivatives(&w).unwrap();
        for a in 0..3 {
            let want: f64 = DATA.iter().map(|r| example_gradient(&w, r)[a]).sum::<f64>() / DATA.len() as f64;
            prop_assert!((d.gradient[a] - want).abs() < 1e-14, "{} vs {}", d.gradient[a], want);
        }
        // The value by its own route (row-by-row values, no derivatives) agrees.
        prop_assert!((p.value(&w).unwrap() - d.value).abs() < 1e-14);
    }
}

/// Without replacement, the covariance of the minibatch gradient over all C(n, b)
/// equally likely subsets is exactly C/b·(n − b)/(n − 1); with replacement, over all n^b
/// ordered tuples, C/b. This checks the factor itself, by enumeration.
#[test]
fn sampling_factors_match_enumeration_of_all_minibatches() {
    let w = [0.4, -0.3, 0.2];
    for b in 1..=DATA.len() {
        let without = logistic(b, "without-replacement");
        let enumerated = enumerated_cov(&without, &w, &subsets(DATA.len(), b));
        assert_matrix_close(&without.noise_cov(&w).unwrap(), &enumerated, "without");
        if b <= 3 {
            let with = logistic(b, "with-replacement");
            let enumerated = enumerated_cov(&with, &w, &tuples(DATA.len(), b));
            assert_matrix_close(&with.noise_cov(&w).unwrap(), &enumerated, "with");
        }
    }
}

/// The mean minibatch step over all minibatches is the full gradient step −η∇f.
#[test]
fn the_mean_minibatch_step_is_the_gradient_step() {
    let w = [0.7, 0.1, -0.5];
    let eta = 0.3;
    let (mut ws, mut jets) = (Workspace::default(), Jets::default());
    for (b, mode) in [(2, "without-replacement"), (3, "with-replacement")] {
        let p = logistic(b, mode);
        let batches = if mode == "with-replacement" {
            tuples(DATA.len(), b)
        } else {
            subsets(DATA.len(), b)
        };
        let mut mean_step = [0.0; 3];
        for batch in &batches {
            for &i in batch {
                p.example_gradient_with(&w, i, &mut ws, &mut jets).unwrap();
                for (m, ja) in mean_step.iter_mut().zip(jets.gradient(0)) {
                    *m -= eta * ja / (b as f64 * batches.len() as f64);
                }
            }
        }
        let g = p.objective_derivatives(&w).unwrap().gradient;
        for a in 0..3 {
            assert!(
                (mean_step[a] + eta * g[a]).abs() < 1e-15,
                "{mode}: {mean_step:?} vs {g}"
            );
        }
    }
}

/// The sampler draws every b-subset equally often (without replacement): 10 subsets of
/// 5 choose 2, 50 000 draws, each count Binomial(50 000, 0.1) with sd ≈ 67; 5 sd.
#[test]
fn the_sampler_draws_subsets_uniformly() {
    let mut s = MinibatchSampler::new(9, 5, 2, Sampling::WithoutReplacement);
    let all = subsets(5, 2);
    let mut counts = vec![0u64; all.len()];
    for k in 0..50_000 {
        let mut batch = s.draw(0, k).to_vec();
        batch.sort_unstable();
        let k = all.iter().position(|x| *x == batch).expect("a 2-subset");
        counts[k] += 1;
    }
    for c in counts {
        assert!((c as f64 - 5000.0).abs() < 5.0 * 67.1, "{c}");
    }
}

/// Constant minibatch noise is recognised when the data enter affinely (the noise is
/// then evaluated once), and not otherwise; when recognised, Σ is indeed the same at
/// different points.
#[test]
fn constant_noise_is_detected_from_the_data_part() {
    let constant = Problem::from_str(
        "data a = [[u, v], [1, 2], [0, 1], [3, -1]]\nvar x, y\n\
         minimize mean(a, 0.5*((x - a.u)^2 + (y - a.v)^2) + a.u*sin(0.3)) + cos(x*y)",
    )
    .unwrap();
    assert!(constant.structure().constant_noise);
    let s1 = constant.noise_cov(&[0.3, -1.0]).unwrap();
    let s2 = constant.noise_cov(&[-2.0, 5.0]).unwrap();
    assert!((s1 - s2).abs().max() < 1e-13);
    for text in [
        "minimize mean(a, (x*a.u - a.v)^2)",
        "minimize mean(a, exp(x*a.u))",
        "minimize mean(a, x^2*a.u)",
        "minimize mean(a, x/a.u + y^3/a.v)",
    ] {
        let p = Problem::from_str(&format!(
            "data a = [[u, v], [1, 2], [0.5, 1], [3, -1]]\nvar x = 0.2, y = 0.3\n{text}"
        ))
        .unwrap();
        assert!(!p.structure().constant_noise, "{text}");
    }
}

/// A CSV table is read relative to the objective file, and its numbers are those of
/// the equivalent inline table.
#[test]
fn csv_files_resolve_relative_to_the_objective() {
    let dir = std::env::temp_dir().join(format!("hasme-fs-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("data")).unwrap();
    std::fs::write(dir.join("data/pts.csv"), "u,v\n1,2\n0,1\n3,-1\n").unwrap();
    let body = "var x = 0.5, y = -0.5\nminimize mean(a, 0.5*(x*a.u - a.v)^2 + y^2*a.u)\nbatch 2";
    std::fs::write(
        dir.join("obj.hasme"),
        format!("data a = \"data/pts.csv\"\n{body}"),
    )
    .unwrap();
    let from_file = Problem::from_file(dir.join("obj.hasme"), &Overrides::none()).unwrap();
    let inline = Problem::from_str(&format!(
        "data a = [[u, v], [1, 2], [0, 1], [3, -1]]\n{body}"
    ))
    .unwrap();
    let x = [0.3, 0.9];
    assert_eq!(
        from_file.objective_derivatives(&x).unwrap(),
        inline.objective_derivatives(&x).unwrap()
    );
    assert_eq!(
        from_file.noise_cov(&x).unwrap(),
        inline.noise_cov(&x).unwrap()
    );
    let fs = from_file.finite_sum().unwrap();
    assert_eq!(
        (fs.n, fs.batch, fs.sampling),
        (3, 2, Sampling::WithoutReplacement)
    );
    assert!(fs.origin.ends_with("pts.csv"), "{}", fs.origin);
    std::fs::remove_dir_all(&dir).ok();
}

// ---- bad input ------------------------------------------------------------------------

/// The check error of `text` (exit status 2), at `line:column`, containing `message`.
fn check_error(text: &str, line: usize, column: usize, message: &str) -> hasme::lang::Diagnostic {
    check_error_in(Problem::from_str(text), text, line, column, message)
}

fn check_error_in(
    r: Result<Problem, ProblemError>,
    text: &str,
    line: usize,
    column: usize,
    message: &str,
) -> hasme::lang::Diagnostic {
    let e = r.expect_err(text);
    assert_eq!(e.kind(), ErrorKind::Input, "{text}: {e}");
    let ProblemError::Check(d) = e else {
        panic!("{text}: expected a check error, got {e:?}");
    };
    assert!(
        d.message.contains(message),
        "{text}:\nwant `{message}` in\n{d}"
    );
    assert_eq!((d.line, d.column), (line, column), "{text}:\n{d}");
    *d
}

const OBJ: &str = "var x\nminimize mean(t, (x - t.a)^2)";

#[test]
fn inline_table_faults_are_located() {
    check_error(
        &format!("data t = [[a, b], [1, 2], [3]]\n{OBJ}"),
        1,
        27,
        "row 2 has 1 entries but the header has 2 columns",
    );
    check_error(
        &format!("data t = [[a, a], [1, 2]]\n{OBJ}"),
        1,
        15,
        "column `a` appears twice",
    );
    check_error(
        &format!("data t = [[a]]\n{OBJ}"),
        1,
        12,
        "the table has a header but no rows",
    );
    check_error(
        "var z = 1\ndata t = [[a], [z]]\nminimize mean(t, (z - t.a)^2)",
        2,
        17,
        "a data value must be a constant, but `z` is a variable",
    );
}

#[test]
fn csv_faults_name_the_data_file_and_line() {
    let dir = std::env::temp_dir().join(format!("hasme-fs-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let obj = dir.join("obj.hasme");
    let cases = [
        (
            "a,b\n1,2\n3\n",
            3,
            2,
            "this row has 1 cells but the header has 2 columns",
        ),
        (
            "a,b\n1,2\n3,x7\n",
            3,
            3,
            "`x7` in column `b` is not a number",
        ),
        ("a,b\n", 1, 1, "the table has a header but no rows"),
        ("", 1, 1, "the data file is empty"),
    ];
    for (k, (csv, line, column, message)) in cases.into_iter().enumerate() {
        let name = format!("t{k}.csv");
        std::fs::write(dir.join(&name), csv).unwrap();
        std::fs::write(&obj, format!("data t = \"{name}\"\n{OBJ}")).unwrap();
        let d = check_error_in(
            Problem::from_file(&obj, &Overrides::none()),
            csv,
            line,
            column,
            message,
        );
        assert!(d.file.ends_with(&name), "the CSV file is named: {}", d.file);
        assert!(
            d.notes
                .iter()
                .any(|n| n.contains("read by the `data` statement at 1:10")),
            "{:?}",
            d.notes
        );
    }
    // A missing file: the error points at the path in the objective file.
    std::fs::write(&obj, format!("data t = \"missing.csv\"\n{OBJ}")).unwrap();
    let d = check_error_in(
        Problem::from_file(&obj, &Overrides::none()),
        "missing",
        1,
        10,
        "cannot read the data file",
    );
    assert!(d.message.contains("missing.csv"), "{}", d.message);
    assert!(d.file.ends_with("obj.hasme"));
    // A directory is unreadable as a file.
    std::fs::create_dir_all(dir.join("sub.csv")).unwrap();
    std::fs::write(&obj, format!("data t = \"sub.csv\"\n{OBJ}")).unwrap();
    check_error_in(
        Problem::from_file(&obj, &Overrides::none()),
        "dir",
        1,
        10,
        "cannot read the data file",
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn finite_sum_misuse_is_located() {
    // Three rows.
    let t = "data t = [[a, b], [1, 2], [3, 4], [5, 6]]\nvar x = 0.5\n";
    let cases: [(&str, usize, usize, &str); 14] = [
        (
            "minimize mean(t, (x - t.c)^2)",
            3,
            25,
            "`t` has no column `c`",
        ),
        ("minimize mean(t, (x - t.aa)^2)", 3, 25, "did you mean `a`?"),
        (
            "minimize mean(t, x^2)\nbatch 4",
            4,
            7,
            "the batch size 4 is larger than the 3 rows of `t`",
        ),
        (
            "minimize mean(t, x^2)\nbatch 1.5",
            4,
            7,
            "a batch size must be an integer ≥ 1",
        ),
        (
            "minimize mean(t, x^2*t.a)\nnoise sd 0.1",
            4,
            1,
            "a `noise` statement cannot be combined with `mean(…)`",
        ),
        (
            "minimize x^2\nbatch 2",
            4,
            1,
            "`batch` applies to finite sums",
        ),
        (
            "minimize x^2\nsampling with-replacement",
            4,
            1,
            "`sampling` applies to finite sums",
        ),
        (
            "minimize log(mean(t, x^2*t.a))",
            3,
            10,
            "the objective must be an average of per-example losses",
        ),
        (
            "minimize mean(t, x*t.a)*mean(t, x)",
            3,
            25,
            "at most one `mean(…)` per objective",
        ),
        (
            "minimize mean(t, x*t.a) + t.b",
            3,
            27,
            "reads a data column outside `mean(…)`",
        ),
        (
            "let l = mean(t, x*t.a)\nminimize l",
            3,
            9,
            "`mean(…)` may only appear in the `minimize` statement",
        ),
        ("minimize mean(x, x^2)", 3, 15, "`x` is not a data table"),
        (
            "minimize sum(i = 1..2, mean(t, x*t.a))",
            3,
            24,
            "cannot be inside `sum(…)`",
        ),
        (
            "minimize x^2 + t",
            3,
            16,
            "`t` is a data table, not a number",
        ),
    ];
    for (body, line, column, message) in cases {
        check_error(&format!("{t}{body}"), line, column, message);
    }
    check_error(
        &format!("{t}minimize mean(t, x^2)\nobserve m = mean(t, x)"),
        4,
        13,
        "`mean(…)` may only appear in the `minimize` statement",
    );
    check_error(
        "var x\nminimize mean(t, (x - t.a)^2)\ndata t = [[a], [1], [2]]",
        2,
        15,
        "`t` is used before it is defined",
    );
    let d = check_error(
        &format!("{t}minimize mean(t, x^2)\nbatch 1\nbatch 2"),
        5,
        1,
        "more than one `batch` statement",
    );
    assert_eq!(d.notes, vec!["the first is at 4:1".to_string()]);
}

/// An evaluation failure inside the sum names the example and its columns.
#[test]
fn evaluation_errors_name_the_example() {
    let p = Problem::from_str("data t = [[a], [1], [-2]]\nvar x = 1\nminimize mean(t, log(x*t.a))")
        .unwrap();
    let e = p
        .objective_derivatives(&[1.0])
        .expect_err("log of a negative");
    assert_eq!(e.kind(), ErrorKind::Run);
    let ProblemError::Eval(d) = e else {
        panic!("{e:?}")
    };
    assert!(
        d.notes
            .iter()
            .any(|n| n.contains("example 2 of `t` (t.a = -2)")),
        "{d}"
    );
}

// ---- weak order ---------------------------------------------------------------------

/// Weak order on the finite sum d = 2, n = 8 (examples/finite_sum_tight.hasme),
/// φ = ‖x‖², T = 1, η = 0.5 … 0.0625, with the split estimator (docs/models.md §1:
/// minibatch SGD cannot be coupled to an SDE).
///
/// Pilot runs (2000 SDE paths, 100 000 SGD paths per SGD-only run, seeds 0 and 5)
/// gave slopes 1.02–1.03 for `sme1` (95% CI half-width ≈ 0.02), 1.93–1.96 for `sme2`
/// (± 0.07–0.1) and, on its three points above the noise floor, 1.99–2.27 for `hasme`
/// (local slopes 2.2–2.3 at these η: pre-asymptotic). Bands: each model's propagated
/// slope standard error is asserted small (below), and the slope must lie within the
/// nominal order ± (3 propagated standard errors + the pilot's pre-asymptotic spread):
/// sme1 ± 0.12, sme2 ± 0.3, hasme ± 0.6. HA-SME's error is below SME-2's at every η
/// (it depends less on the curvature): a > 5-fold gap in the pilots.
#[test]
fn weak_order_on_a_finite_sum() {
    use hasme::experiment::{Verdict, WeakOrderConfig, weak_order};
    use hasme::models::ModelKind;
    let p = Problem::from_file("examples/finite_sum_tight.hasme", &Overrides::none()).unwrap();
    let mut config = WeakOrderConfig::builder(WeakOrderConfig::halving(0.5, 4), 1.0, 2000);
    config.models(vec![ModelKind::Sme1, ModelKind::Sme2, ModelKind::Hasme]);
    config.sgd_paths(100_000);
    config.seed(21);
    config.threads(2);
    config.integration_check(false);
    let r = weak_order(&p, &Overrides::none(), &config.build().unwrap()).unwrap();
    assert!(r.split, "a finite sum uses the split estimator");
    let obs = &r.observables[0];
    assert_eq!(obs.name, "norm2");
    let get = |m: ModelKind| obs.models.iter().find(|a| a.model == m).unwrap();
    for (m, order, band, max_se, min_points) in [
        (ModelKind::Sme1, 1.0, 0.12, 0.03, 4),
        (ModelKind::Sme2, 2.0, 0.3, 0.08, 4),
        (ModelKind::Hasme, 2.0, 0.6, 0.2, 3),
    ] {
        let a = get(m);
        assert_eq!(a.verdict, Verdict::Fitted, "{m}");
        let used = a.points.iter().filter(|p| p.excluded.is_none()).count();
        assert!(used >= min_points, "{m}: {used} points");
        let fit = a.fit.as_ref().unwrap();
        assert!(fit.stderr_propagated < max_se, "{m}: {fit:?}");
        assert!((fit.slope - order).abs() < band, "{m}: slope {fit:?}");
    }
    for (s, h) in get(ModelKind::Sme2)
        .points
        .iter()
        .zip(&get(ModelKind::Hasme).points)
    {
        let (s, h) = (s.error.unwrap(), h.error.unwrap());
        assert!(h < s, "η: hasme {h} vs sme2 {s}");
    }
}

/// Real minibatch SGD against exact moments: on a quadratic finite sum whose examples
/// differ by constants in their gradients, the minibatch noise z_k is independent of x_k
/// with the covariance Σ = κC, so SGD's first two moments follow the same linear
/// recursion as with Gaussian noise (`hasme::moments`), whatever the noise's higher
/// moments. 20 000 paths; 4 standard errors over 12 comparisons (false alarm ≈ 0.1%
/// for a random seed; the seed is fixed). Variances use the Gaussian-sample standard
/// error σ²√(2/(n−1)) with a 1.5× margin for the non-Gaussian fourth moment (a sum of
/// a few discrete draws).
#[test]
fn minibatch_sgd_has_the_exact_moments_on_a_quadratic() {
    use hasme::moments::Quadratic;
    use hasme::sim::{SimConfig, simulate};
    let p = Problem::from_str(
        "data a = [[u, v], [1, 0.5], [-0.5, 1], [2, -1], [0, 0], [1.5, 2], [-1, -0.5]]\n\
         var x = 2, y = -1\n\
         minimize mean(a, (x - a.u)^2 + 0.5*(y - a.v)^2) + 0.3*x*y\n\
         batch 2\n\
         observe x = x\nobserve y = y\nobserve xx = x^2\nobserve yy = y^2",
    )
    .unwrap();
    assert!(p.structure().quadratic && p.structure().constant_noise);
    let eta = 0.1;
    let steps = 8;
    let paths = 20_000;
    let mut config = SimConfig::builder(eta, eta * steps as f64, paths);
    config.models(Vec::new());
    config.seed(77);
    config.threads(2);
    let r = simulate(&p, &config.build().unwrap()).unwrap();
    assert_eq!(r.sgd_noise, "minibatch");
    let q = Quadratic::from_problem(&p).unwrap();
    let mut exact = q.sgd(eta).unwrap();
    for k in 1..=steps {
        exact.advance();
        if k % 4 != 0 {
            continue;
        }
        let g = exact.gaussian();
        let obs = |name: &str| {
            let o = r.observables.iter().find(|o| o.name == name).unwrap();
            &o.processes[0]
        };
        for (name, want) in [
            ("x", g.mean[0]),
            ("y", g.mean[1]),
            ("xx", g.cov[(0, 0)] + g.mean[0].powi(2)),
            ("yy", g.cov[(1, 1)] + g.mean[1].powi(2)),
        ] {
            let s = obs(name);
            let (mean, se) = (s.mean[k].unwrap(), s.stderr[k].unwrap());
            assert!(
                (mean - want).abs() <= 4.0 * se,
                "{name} at {k}: {mean} ± {se} vs {want}"
            );
        }
        for (name, i) in [("x", 0), ("y", 1)] {
            let var = obs(name).variance[k].unwrap();
            let c = g.cov[(i, i)];
            let se = 1.5 * c * (2.0 / (paths as f64 - 1.0)).sqrt();
            assert!(
                (var - c).abs() <= 4.0 * se,
                "Var {name} at {k}: {var} vs {c}"
            );
        }
    }
}

/// A sum that reads no column has identical examples: zero noise, and a warning; an
/// unused table is a warning too.
#[test]
fn degenerate_sums_warn() {
    let p = Problem::from_str(
        "data t = [[a], [1], [2]]\ndata u = [[b], [3]]\nvar x = 1\nminimize mean(t, x^2)",
    )
    .unwrap();
    let messages: Vec<&str> = p.warnings().iter().map(|w| w.message.as_str()).collect();
    assert!(
        messages
            .iter()
            .any(|m| m.contains("reads no column of `t`")),
        "{messages:?}"
    );
    assert!(
        messages
            .iter()
            .any(|m| m.contains("data `u` is never used")),
        "{messages:?}"
    );
    assert_eq!(p.noise_cov(&[0.5]).unwrap()[(0, 0)], 0.0);
    assert_eq!(p.value(&[3.0]).unwrap(), 9.0);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    /// The fused pass (one loop over the rows for ∇f, ∇²f and Σ, as the simulator uses
    /// it) agrees with the separate evaluations.
    #[test]
    fn the_fused_pass_agrees_with_the_separate_ones(
        w in proptest::array::uniform3(-2.0f64..2.0),
        batch in 1usize..6,
    ) {
        use hasme::problem::NoiseBuffers;
        let p = logistic(batch, "without-replacement");
        let (mut ws, mut jets) = (Workspace::default(), Jets::default());
        let mut cov = vec![0.0; 9];
        p.derivatives_and_noise_with(&w, &mut ws, &mut jets, &mut NoiseBuffers::default(), &mut cov)
            .unwrap();
        let d = p.objective_derivatives(&w).unwrap();
        let sigma = p.noise_cov(&w).unwrap();
        prop_assert_eq!(jets.values[0], d.value);
        prop_assert_eq!(jets.gradient(0), d.gradient.as_slice());
        let scale = sigma.iter().fold(1e-300f64, |m, v| m.max(v.abs()));
        for i in 0..3 {
            for j in 0..3 {
                // The per-example gradients come from two methods (jets, reverse mode):
                // round-off of O(1) quantities.
                prop_assert!((cov[i * 3 + j] - sigma[(i, j)]).abs() <= 1e-13 * scale);
            }
        }
    }
}
