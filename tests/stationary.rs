//! Stationary points (docs/models.md §7): Newton's method on ∇f = 0 finds minima,
//! saddles and maxima of test functions with known stationary points and classifies
//! them; gradient descent finds minima; the matrix-free path (MINRES and Lanczos on
//! Hessian-vector products) agrees with the dense one; the network examples.
//!
//! References are closed forms: the stationary points and Hessians of the test
//! functions are known exactly, and the dense eigenvalues are nalgebra's.

use hasme::lang::Source;
use hasme::stationary::{
    Eigenvalues, Method, PointKind, StationaryConfig, StationaryReport, Stop, find_stationary,
};
use hasme::{Overrides, Problem};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

fn problem(text: &str) -> Problem {
    Problem::from_str(text).unwrap_or_else(|e| panic!("{text}\n{e}"))
}

fn search(p: &Problem, method: Method) -> StationaryReport {
    let config = StationaryConfig::builder().method(method).build().unwrap();
    find_stationary(p, &config).unwrap()
}

/// The search converged to `want` (to `tol` in every coordinate) with ‖∇f‖ below its
/// tolerance, and classified it as `kind` with `index` negative eigenvalues.
fn assert_found(r: &StationaryReport, want: &[f64], tol: f64, kind: PointKind, index: usize) {
    assert!(r.converged && r.stop == Stop::Tolerance, "{r}");
    assert!(r.gradient_norm <= r.tolerance, "{r}");
    for (x, w) in r.point.iter().zip(want) {
        assert!((x - w).abs() <= tol, "{r}");
    }
    assert_eq!((r.kind, r.index), (kind, index), "{r}");
}

// Tolerances on the point: ‖∇f‖ ≤ 1e−10·max(1, ‖∇f(x₀)‖) puts a nondegenerate point
// within about tol/|λ|min of the exact one, 1e−9 for these O(1)-curvature functions.

#[test]
fn newton_finds_the_minimum_of_the_rosenbrock_function() {
    for n in [2, 5] {
        let p = Problem::from_file(
            "examples/rosenbrock.hasme",
            &Overrides::none().set("n", n as f64),
        )
        .unwrap();
        let r = search(&p, Method::Newton);
        // f = Σ 100(w_{i+1} − w_i²)² + (1 − w_i)²: the minimum w = 1, f = 0.
        assert_found(&r, &vec![1.0; n], 1e-8, PointKind::Minimum, 0);
        assert!(r.value < 1e-16);
        assert_eq!(r.eigenvalues, Eigenvalues::All);
        assert_eq!(r.hessian_eigenvalues.len(), n);
        assert!(r.hessian_eigenvalues.windows(2).all(|w| w[0] <= w[1]));
        // Gradient descent too, slowly along the curved valley (κ(H) ≈ 3000 at n = 5).
        let r = search(&p, Method::Gd);
        assert_found(&r, &vec![1.0; n], 1e-6, PointKind::Minimum, 0);
    }
}

#[test]
fn newton_finds_saddles_and_maxima_and_gradient_descent_a_minimum() {
    // x² − y² + x⁴ + y⁴: a saddle at 0 (eigenvalues 2, −2), minima at (0, ±1/√2)
    // (eigenvalues 2, 4).
    let p = problem("var x = 0.3, y = 0.2\nminimize x^2 - y^2 + x^4 + y^4");
    let r = search(&p, Method::Newton);
    assert_found(&r, &[0.0, 0.0], 1e-9, PointKind::Saddle, 1);
    assert!((r.hessian_eigenvalues[0] + 2.0).abs() < 1e-8);
    let r = search(&p, Method::Gd);
    assert_found(&r, &[0.0, 0.5f64.sqrt()], 1e-9, PointKind::Minimum, 0);
    assert!((r.hessian_eigenvalues[1] - 4.0).abs() < 1e-8);
    // −x² − 2y² + x³/3: a maximum at 0 (eigenvalues −4, −2) and a saddle at (2, 0).
    let p = problem("var x = 0.4, y = -0.3\nminimize -x^2 - 2*y^2 + x^3/3");
    let r = search(&p, Method::Newton);
    assert_found(&r, &[0.0, 0.0], 1e-9, PointKind::Maximum, 2);
    let p = problem("var x = 1.7, y = 0.1\nminimize -x^2 - 2*y^2 + x^3/3");
    assert_found(
        &search(&p, Method::Newton),
        &[2.0, 0.0],
        1e-9,
        PointKind::Saddle,
        1,
    );
    // The saddle of the language's example: curvature λ = 2 along x, −1 along y.
    let p = Problem::from_file("examples/saddle.hasme", &Overrides::none()).unwrap();
    let r = search(&p, Method::Newton);
    assert_found(&r, &[0.0, 0.0], 1e-12, PointKind::Saddle, 1);
    assert_eq!(r.hessian_eigenvalues, [-1.0, 2.0]);
}

#[test]
fn a_vanishing_eigenvalue_is_degenerate() {
    // x⁴ + y²: Newton converges linearly along x (x ← 2x/3); at ‖∇f‖ ≤ 1e−14 the x
    // eigenvalue 12x² is below 1e−8, under the 1e−6 relative threshold.
    let p = problem("var x = 0.5, y = 0.5\nminimize x^4 + y^2");
    let config = StationaryConfig::builder()
        .tolerance(Some(1e-14))
        .build()
        .unwrap();
    let r = find_stationary(&p, &config).unwrap();
    assert!(r.converged, "{r}");
    assert_eq!((r.kind, r.index), (PointKind::Degenerate, 0));
}

#[test]
fn no_stationary_point_is_reported_as_not_converged() {
    // x + y²: ∇f = (1, 2y) never vanishes. Newton lowers ‖∇f‖ to 1 and stalls (Hg = 0
    // there); gradient descent walks off to x → −∞ until its limit.
    let p = problem("var x = 0, y = 0.5\nminimize x + y^2");
    let r = search(&p, Method::Newton);
    assert!(!r.converged && r.stop == Stop::Stalled, "{r}");
    assert!((r.gradient_norm - 1.0).abs() < 1e-12);
    let config = StationaryConfig::builder()
        .method(Method::Gd)
        .max_iter(Some(50))
        .build()
        .unwrap();
    let r = find_stationary(&p, &config).unwrap();
    assert!(
        !r.converged && r.stop == Stop::MaxIter && r.iterations == 50,
        "{r}"
    );
    // 0 iterations classify the start point.
    let p = problem("var x = 1, y = 0\nminimize x^2 - 3*y^2");
    let config = StationaryConfig::builder()
        .max_iter(Some(0))
        .build()
        .unwrap();
    let r = find_stationary(&p, &config).unwrap();
    assert!(!r.converged && r.iterations == 0 && r.point == [1.0, 0.0]);
    assert_eq!((r.index, r.kind), (1, PointKind::Saddle));
}

/// The matrix-free path (MINRES steps, Lanczos eigenvalues) on a problem small enough
/// for the dense one: the same stationary point, and the extreme eigenvalues equal
/// the dense ones.
fn matrix_free_agrees(p: &Problem, method: Method) {
    let dense = search(p, method);
    let config = StationaryConfig::builder()
        .method(method)
        .dense_max_dim(0)
        .build()
        .unwrap();
    let free = find_stationary(p, &config).unwrap();
    assert!(dense.converged && free.converged, "{dense}\n{free}");
    assert_eq!((free.kind, free.index), (dense.kind, dense.index), "{free}");
    assert_eq!(free.eigenvalues, Eigenvalues::Extreme);
    let scale = dense
        .hessian_eigenvalues
        .iter()
        .fold(0.0f64, |m, v| m.max(v.abs()));
    for (a, b) in dense.point.iter().zip(&free.point) {
        // Both within ~tol/|λ|min of the same point.
        assert!((a - b).abs() <= 1e-7, "{dense}\n{free}");
    }
    // Lanczos's extremes against the dense spectrum at the dense search's point:
    // converged Ritz values (bound ≤ 1e−8·max|θ|) at points 1e−7 apart.
    let d = dense.hessian_eigenvalues.len();
    let k = hasme::stationary::EXTREME_EIGENVALUES.min(d);
    let want: Vec<f64> = dense.hessian_eigenvalues[..k]
        .iter()
        .chain(&dense.hessian_eigenvalues[d.saturating_sub(k).max(k)..])
        .copied()
        .collect();
    assert_eq!(free.hessian_eigenvalues.len(), want.len(), "{free}");
    for (a, b) in free.hessian_eigenvalues.iter().zip(&want) {
        assert!((a - b).abs() <= 1e-6 * scale, "{a} vs {b}\n{free}");
    }
    assert!(free.warnings.is_empty(), "{free}");
}

#[test]
fn the_matrix_free_path_agrees_with_the_dense_one() {
    let p = problem("var x = 0.3, y = 0.2\nminimize x^2 - y^2 + x^4 + y^4");
    matrix_free_agrees(&p, Method::Newton);
    matrix_free_agrees(&p, Method::Gd);
    let p = Problem::from_file(
        "examples/rosenbrock.hasme",
        &Overrides::none().set("n", 5.0),
    )
    .unwrap();
    matrix_free_agrees(&p, Method::Newton);
    // 21 variables, over the rows of a finite sum: more eigenvalues than the ends.
    let p = decayed_network().with_start(&teacher()).unwrap();
    matrix_free_agrees(&p, Method::Newton);
}

// ---------------------------------------------------------------------------------------
// The network examples

/// The teacher network of `examples/teacher.csv` (`examples/network_data.rs`: seed
/// 2024, `W_ji ~ N(0, 1/5)`, then `v_j ~ N(0, 1)`), with `b = 0`, as a start point.
fn teacher() -> hasme::problem::StartPoint {
    let mut rng = ChaCha8Rng::seed_from_u64(2024);
    let mut normal = || -> f64 { StandardNormal.sample(&mut rng) };
    let mut names = Vec::new();
    let mut point = Vec::new();
    for j in 1..=3 {
        for i in 1..=5 {
            names.push(format!("W[{j},{i}]"));
            point.push(normal() / 5f64.sqrt());
        }
    }
    for j in 1..=3 {
        names.push(format!("b[{j}]"));
        point.push(0.0);
    }
    for j in 1..=3 {
        names.push(format!("v[{j}]"));
        point.push(normal());
    }
    hasme::problem::StartPoint::new("teacher", names, point).unwrap()
}

/// `examples/network.hasme` with the weight decay on every weight (b and v too).
fn decayed_network() -> Problem {
    let text = std::fs::read_to_string("examples/network.hasme").unwrap();
    let decayed = text.replace(
        "+ 0.0005*sum(j = 1..h, sum(i = 1..p, W[j, i]^2))",
        "+ 0.0005*(sum(j = 1..h, sum(i = 1..p, W[j, i]^2)) + sum(j = 1..h, b[j]^2 + v[j]^2))",
    );
    assert_ne!(text, decayed);
    Problem::from_source(
        Source::new("examples/network.hasme", decayed),
        &Overrides::none(),
    )
    .unwrap()
}

#[test]
fn the_network_has_a_minimum_near_its_teacher_and_a_saddle_where_it_is_dead() {
    // With every weight decayed the loss grows without bound, so it has a minimum;
    // Newton from the teacher's weights finds it (f ≈ the noise's ½·0.1² plus the
    // decay), every eigenvalue clearly positive.
    let p = decayed_network().with_start(&teacher()).unwrap();
    let r = search(&p, Method::Newton);
    assert!(r.converged && r.gradient_norm <= 1e-10, "{r}");
    assert_eq!((r.kind, r.index), (PointKind::Minimum, 0), "{r}");
    assert!(r.value > 0.005 && r.value < 0.007, "{r}");
    assert!(r.hessian_eigenvalues[0] > 1e-3, "{r}");
    // The bundled network from a random start: Newton goes to a stationary point of
    // the dead network (every hidden unit silent), a saddle whose three negative
    // curvatures say the output weights should grow.
    let p = Problem::from_file("examples/network.hasme", &Overrides::none().init_seed(2)).unwrap();
    let r = search(&p, Method::Newton);
    assert!(r.converged && r.gradient_norm <= r.tolerance, "{r}");
    assert_eq!((r.kind, r.index), (PointKind::Saddle, 3), "{r}");
    // There every example's gradient vanishes (each term carries v_j or tanh(b_j)),
    // not only their mean: the minibatch noise covariance is zero to round-off,
    // against entries of order 1e-2 at the random start.
    let at_start = p.noise_cov(&p.start()).unwrap().amax();
    let at_saddle = p.noise_cov(&r.point).unwrap().amax();
    assert!(
        at_start > 1e-3 && at_saddle < 1e-20,
        "{at_start} {at_saddle}"
    );
}

#[test]
fn the_softmax_classifier_has_a_minimum_flat_along_its_bias_shift() {
    // Adding a constant to every bias c_k leaves the softmax unchanged, and only W is
    // decayed: one zero eigenvalue (direction (1, 1, 1)/√3 on c), the others positive.
    let p = Problem::from_file("examples/softmax.hasme", &Overrides::none()).unwrap();
    let r = search(&p, Method::Newton);
    assert!(r.converged && r.gradient_norm <= r.tolerance, "{r}");
    assert_eq!((r.kind, r.index), (PointKind::Degenerate, 0), "{r}");
    let scale = r.hessian_eigenvalues[8];
    assert!(r.hessian_eigenvalues[0].abs() < 1e-12 * scale, "{r}");
    assert!(r.hessian_eigenvalues[1] > 1e-3 * scale, "{r}");
    // The biases sum to about their start's sum, 0: the gradient along the flat
    // direction is round-off (≈ 1e−17), so the steps barely move along it (≈ 1e−9 in
    // all, where the guard damping would allow up to 1/(2√μ) ≈ 3e12 times the
    // round-off per step).
    let c: f64 = r.point[6..].iter().sum();
    assert!(c.abs() < 1e-7, "{r}");
    // Gradient descent reaches the same minimum.
    let g = search(&p, Method::Gd);
    assert!(g.converged, "{g}");
    for (a, b) in g.point.iter().zip(&r.point) {
        assert!((a - b).abs() < 1e-6, "{g}");
    }
}
