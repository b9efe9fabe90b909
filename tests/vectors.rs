//! Vector variables, vector params, indices and `sum`/`prod` (docs/language.md "Vector
//! variables"): the vector form equals the written-out form exactly, derivatives at
//! d = 50 match finite differences, and every misuse is an error at its position.

use hasme::tape::{HessianMethod, Jets, Workspace};
use hasme::{Overrides, Problem, ProblemError};

/// The chained Rosenbrock function written out term by term, each summand in
/// parentheses as `sum` adds it (floating-point addition is not associative).
fn written_out(d: usize) -> String {
    let vars: Vec<String> = (1..=d).map(|i| format!("w{i} = 0.1")).collect();
    let terms: Vec<String> = (1..d)
        .map(|i| format!("(100*(w{} - w{i}^2)^2 + (1 - w{i})^2)", i + 1))
        .collect();
    format!(
        "var {}\nminimize {}\nnoise sd 0.1",
        vars.join(", "),
        terms.join(" + ")
    )
}

fn vector_form(d: usize) -> String {
    format!(
        "param n = {d}\nvar w[n] = 0.1\n\
         minimize sum(i = 1..n-1, 100*(w[i+1] - w[i]^2)^2 + (1 - w[i])^2)\nnoise sd 0.1"
    )
}

fn point(d: usize) -> Vec<f64> {
    (0..d)
        .map(|i| 0.4 + 0.5 * ((i as f64) * 1.3).sin())
        .collect()
}

#[test]
fn vector_and_written_out_forms_agree_exactly() {
    for d in [2, 5, 8, 9, 20] {
        let a = Problem::from_str(&vector_form(d)).unwrap();
        let b = Problem::from_str(&written_out(d)).unwrap();
        assert_eq!(a.dim(), d);
        assert_eq!(a.start(), b.start());
        let x = point(d);
        let (da, db) = (a.derivatives(&x).unwrap(), b.derivatives(&x).unwrap());
        // Exact equality: both compile to the same instructions in the same order.
        assert_eq!(da.value, db.value, "d = {d}");
        assert_eq!(da.gradient, db.gradient, "d = {d}");
        assert_eq!(da.hessian, db.hessian, "d = {d}");
        assert_eq!(da.noise_cov, db.noise_cov, "d = {d}");
        assert_eq!(a.structure().objective_degree, Some(4));
    }
}

#[test]
fn coordinates_are_named_with_indices() {
    let p = Problem::from_str("var w[3] = 1, z\nminimize sum(i = 1..3, w[i]^2) + z^2").unwrap();
    assert_eq!(p.variables(), ["w[1]", "w[2]", "w[3]", "z"]);
    assert_eq!(p.observable_names(), ["w[1]", "w[2]", "w[3]", "z", "norm2"]);
    let x = p.point_from_assignments("w=2,w[2]=-1,z=pi").unwrap();
    assert_eq!(x, vec![2.0, -1.0, 2.0, std::f64::consts::PI]);
}

#[test]
fn derivatives_at_d50_match_finite_differences() {
    // A non-polynomial chained objective, so every Hessian entry is exercised.
    let text = "param n = 50\nvar w[n] = 0.2\n\
        minimize sum(i = 1..n-1, (w[i+1] - w[i]^2)^2 + 0.1*cos(w[i]*w[i+1])) + sum(i = 1..n, exp(0.1*w[i]))";
    let p = Problem::from_str(text).unwrap();
    let x = point(50);
    let d = p.objective_derivatives(&x).unwrap();
    let h = 1e-5;
    // Central differences of the value (for ∇f) and of the AD gradient (for ∇²f):
    // truncation O(h²)·|f'''| ~ 1e-10, round-off ~ ε|f|/h ~ 1e-10; 1e-6 is far above both.
    for i in 0..50 {
        let (mut xp, mut xm) = (x.clone(), x.clone());
        xp[i] += h;
        xm[i] -= h;
        let fd = (p.value(&xp).unwrap() - p.value(&xm).unwrap()) / (2.0 * h);
        assert!(
            (fd - d.gradient[i]).abs() < 1e-6 * (1.0 + fd.abs()),
            "∂{i}: {fd} vs {}",
            d.gradient[i]
        );
        let (gp, gm) = (
            p.objective_derivatives(&xp).unwrap(),
            p.objective_derivatives(&xm).unwrap(),
        );
        for j in 0..50 {
            let fdh = (gp.gradient[j] - gm.gradient[j]) / (2.0 * h);
            assert!(
                (fdh - d.hessian[(j, i)]).abs() < 1e-6 * (1.0 + fdh.abs()),
                "∂{j}∂{i}: {fdh} vs {}",
                d.hessian[(j, i)]
            );
        }
    }
}

#[test]
fn hessian_methods_agree_at_d50() {
    let p = Problem::from_str(&vector_form(50)).unwrap();
    let x = point(50);
    let mut ws = Workspace::default();
    let (mut a, mut b) = (Jets::default(), Jets::default());
    p.objective_tape()
        .derivatives_by(HessianMethod::Blocked, &x, &mut ws, &mut a)
        .unwrap();
    p.objective_tape()
        .derivatives_by(HessianMethod::Reverse, &x, &mut ws, &mut b)
        .unwrap();
    let scale = a.hessians.iter().fold(1.0f64, |m, v| m.max(v.abs()));
    // 1e-13 relative: the same chain rule applied in a different order.
    for (u, v) in a
        .hessians
        .iter()
        .zip(&b.hessians)
        .chain(a.gradients.iter().zip(&b.gradients))
    {
        assert!((u - v).abs() <= 1e-13 * scale, "{u} vs {v}");
    }
}

#[test]
fn vector_params_sums_and_products() {
    let p = Problem::from_str(
        "param a[3] = [1, 2, 3]\nparam s = sum(i = 1..3, a[i]^2)\nvar x\n\
         minimize s*x^2 + prod(i = 1..3, a[i] + x)",
    )
    .unwrap();
    assert_eq!(p.params(), [("s".to_string(), 14.0)]);
    assert_eq!(p.param_vectors(), [("a".to_string(), vec![1.0, 2.0, 3.0])]);
    // At x = 1: 14 + 2·3·4 = 38; derivative 28 + (3·4 + 2·4 + 2·3) = 54.
    let d = p.objective_derivatives(&[1.0]).unwrap();
    assert_eq!(d.value, 38.0);
    assert_eq!(d.gradient[0], 54.0);
    // Empty ranges: a sum is 0 and a product 1.
    let e =
        Problem::from_str("var x\nminimize x + sum(i = 3..1, x^2) + prod(j = 2..1, 5)").unwrap();
    assert_eq!(e.value(&[2.0]).unwrap(), 3.0);
    // Overrides of a whole vector and of one entry.
    let src = "param a[2] = [1, 2]\nvar x\nminimize a[1]*x + a[2]";
    let o = Problem::from_source(
        hasme::lang::Source::new("f", src),
        &Overrides::none().set("a", 5.0).set("a[2]", 7.0),
    )
    .unwrap();
    assert_eq!(o.value(&[1.0]).unwrap(), 12.0);
}

#[test]
fn noise_diag_expands_vector_params() {
    let p = Problem::from_str(
        "param n = 3\nparam v[n] = [0.1, 0.2, 0.3]\nvar w[n], z\nminimize sum(i = 1..n, w[i]^2) + z^2\nnoise diag [v, 0.5]",
    )
    .unwrap();
    let s = p.noise_cov(&p.start()).unwrap();
    assert_eq!(s.diagonal().as_slice(), &[0.1, 0.2, 0.3, 0.5]);
    assert!(p.structure().constant_noise && p.structure().quadratic);
}

fn check_error(text: &str) -> hasme::lang::Diagnostic {
    match Problem::from_str(text) {
        Err(ProblemError::Check(d)) => *d,
        other => panic!("expected a check error, got {other:?}"),
    }
}

#[test]
fn misuse_is_an_error_at_its_position() {
    let d = check_error("param n = 3\nvar w[n]\nminimize sum(i = 1..n, w[i+1]^2)");
    assert_eq!((d.line, d.column), (3, 26));
    assert!(
        d.message
            .contains("index 4 is out of range for the variable vector `w` (valid: 1..3)")
    );
    assert!(d.notes.iter().any(|n| n == "when i = 3"), "{:?}", d.notes);

    let d = check_error("var w[3]\nminimize w^2");
    assert_eq!((d.line, d.column), (2, 10));
    assert!(
        d.message
            .contains("`w` is a vector of 3 variables; index it")
    );

    let d = check_error("var w[3], x\nminimize w[x]");
    assert!(
        d.message.contains("an index must be a constant"),
        "{}",
        d.message
    );

    let d = check_error("var w[3]\nminimize w[1.5]");
    assert!(d.message.contains("an index must be an integer, found 1.5"));

    let d = check_error("var x\nminimize x[1]");
    assert!(d.message.contains("`x` is not a vector"));

    let d = check_error("var w[0]\nminimize 1");
    assert!(
        d.message
            .contains("a vector length must be an integer from 1 to")
    );

    let d = check_error("var w[2], x\nminimize sum(i = 1..x, w[i])");
    assert!(d.message.contains("a loop bound must be a constant"));

    let d = check_error("var w[2]\nminimize sum(i = 1..2, sum(i = 1..2, w[i]))");
    assert!(
        d.message
            .contains("loop index `i` shadows an enclosing loop index")
    );

    let d = check_error("var i\nminimize sum(i = 1..2, i)");
    assert!(d.message.contains("shadows an existing name"));

    let d = check_error("var x\nminimize sum(i = 1..100000000, x)");
    assert!(d.message.contains("more than"), "{}", d.message);

    let d = check_error("param a[2] = [1, 2, 3]\nvar x\nminimize x");
    assert!(
        d.message
            .contains("declared with 2 entries but the list has 3")
    );

    let d = check_error("param a = [1, 2]\nvar x\nminimize x");
    assert!(d.message.contains("a list needs a vector param"));

    let d = check_error("var w[2]\nminimize w[1]\nnoise diag [0.1]");
    assert!(d.message.contains("needs 2 entries"));
}

#[test]
fn unknown_vector_override_is_a_usage_error() {
    let src = hasme::lang::Source::new("f", "param a[2] = [1, 2]\nvar x\nminimize a[1]*x");
    let err = Problem::from_source(src, &Overrides::none().set("b[1]", 1.0)).unwrap_err();
    assert!(matches!(err, ProblemError::Usage(_)), "{err}");
}
