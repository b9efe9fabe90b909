//! The laws the objective-file language claims (docs/language.md), each checked against
//! an independent reference: the printer and parser invert each other on random syntax
//! trees; derivatives agree with central finite differences on random smooth
//! expressions; every built-in function matches its closed-form derivatives; `let`,
//! `--set`, default observables and the noise statements mean what the spec says; and
//! the structure analysis (polynomial degree, constant noise) matches a table and is
//! sound (a "quadratic" objective equals its own second-order Taylor expansion).
//! Tolerances carry their reasons.

use hasme::lang::ast::{BinOp, Expr, Ident, Node, NodeId, NodeKind};
use hasme::lang::{Source, Span, parse_expr, print_expr};
use hasme::problem::NoiseKind;
use hasme::tape::{Derivs, Func};
use hasme::{Overrides, Problem, ProblemError};
use nalgebra::{DMatrix, DVector};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;
use proptest::test_runner::TestCaseError;

// ---------------------------------------------------------------------------------------
// Helpers

fn problem(text: &str) -> Problem {
    Problem::from_str(text).unwrap_or_else(|e| panic!("the problem should check:\n{text}\n{e}"))
}

fn problem_with(text: &str, overrides: &Overrides) -> Problem {
    Problem::from_source(Source::new("<string>", text), overrides)
        .unwrap_or_else(|e| panic!("the problem should check:\n{text}\n{e}"))
}

fn derivs(p: &Problem, x: &[f64]) -> Derivs {
    p.objective_derivatives(x)
        .unwrap_or_else(|e| panic!("derivatives at {x:?} should be finite:\n{e}"))
}

/// `|got − want| ≤ tol`, with both numbers in the message.
fn close(what: &str, got: f64, want: f64, tol: f64) -> Result<(), TestCaseError> {
    prop_assert!(
        (got - want).abs() <= tol,
        "{what}: got {got:e}, want {want:e} (|diff| = {:e} > tol {tol:e})",
        (got - want).abs()
    );
    Ok(())
}

/// Central differences `(F(x + h e_j) − F(x − h e_j)) / 2h` of a vector-valued `F`:
/// entry `[k][j]` approximates `∂F_k/∂x_j`.
fn central_jacobian(
    x: &[f64],
    h: f64,
    f: impl Fn(&[f64]) -> Result<Vec<f64>, ProblemError>,
) -> Result<Vec<Vec<f64>>, TestCaseError> {
    let eval = |p: &[f64]| f(p).map_err(|e| TestCaseError::fail(format!("at {p:?}:\n{e}")));
    let mut cols = Vec::with_capacity(x.len());
    for j in 0..x.len() {
        let (mut up, mut down) = (x.to_vec(), x.to_vec());
        up[j] += h;
        down[j] -= h;
        let (fu, fd) = (eval(&up)?, eval(&down)?);
        cols.push(
            fu.iter()
                .zip(&fd)
                .map(|(a, b)| (a - b) / (2.0 * h))
                .collect::<Vec<_>>(),
        );
    }
    let outputs = cols.first().map_or(0, Vec::len);
    Ok((0..outputs)
        .map(|k| cols.iter().map(|c| c[k]).collect())
        .collect())
}

/// Step for central differences. Truncation error is `h²/6 · |f'''|` ≈ 1.7e-11·|f'''|;
/// round-off is `ε·|f|/h` ≈ 2e-11·|f|. Both sit far below [`FD_TOL`].
const FD_STEP: f64 = 1e-5;

/// Relative-plus-absolute tolerance for finite-difference checks: `FD_TOL·(1 + scale)`,
/// where `scale` is the largest magnitude among f, ∇f and ∇²f at the point. With
/// [`FD_STEP`] the difference error is ~1e-11·(|f| + |f'''|), so 1e-6 allows third
/// derivatives up to ~5e4 times the scale — the generators below keep them far
/// smaller by bounding every argument — while a wrong derivative rule (an error of
/// order the derivative itself) still fails by orders of magnitude.
const FD_TOL: f64 = 1e-6;

fn scale_of(d: &Derivs) -> f64 {
    d.gradient
        .iter()
        .chain(d.hessian.iter())
        .fold(d.value.abs(), |m, v| m.max(v.abs()))
}

/// Checks one output's AD gradient and Hessian against central differences of its
/// values (`values`) and of its AD gradients (`gradients`).
fn check_against_fd(
    what: &str,
    x: &[f64],
    ad: &[Derivs],
    values: impl Fn(&[f64]) -> Result<Vec<f64>, ProblemError>,
    gradients: impl Fn(&[f64]) -> Result<Vec<DVector<f64>>, ProblemError>,
) -> Result<(), TestCaseError> {
    let d = x.len();
    let jac = central_jacobian(x, FD_STEP, values)?;
    // Flatten the gradients of every output into one vector-valued function so one set of
    // central differences gives every Hessian: component k·d + i is ∂_i F_k.
    let grad_jac = central_jacobian(x, FD_STEP, |p| {
        gradients(p).map(|gs| gs.iter().flat_map(|g| g.iter().copied()).collect())
    })?;
    for (k, out) in ad.iter().enumerate() {
        let tol = FD_TOL * (1.0 + scale_of(out));
        for (i, fd_row) in grad_jac[k * d..(k + 1) * d].iter().enumerate() {
            close(
                &format!("{what} output {k}: ∂_{i} at {x:?}"),
                out.gradient[i],
                jac[k][i],
                tol,
            )?;
            for (j, &fd) in fd_row.iter().enumerate() {
                close(
                    &format!("{what} output {k}: ∂_{i}∂_{j} at {x:?}"),
                    out.hessian[(i, j)],
                    fd,
                    tol,
                )?;
                // Exact symmetry is not promised; round-off of the dual arithmetic is.
                close(
                    &format!("{what} output {k}: symmetry ({i}, {j})"),
                    out.hessian[(i, j)],
                    out.hessian[(j, i)],
                    1e-14 * (1.0 + scale_of(out)),
                )?;
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// 1. Round trip: random syntax trees → printed → parsed → the same tree

/// A syntax tree built by the test, independent of the parser.
#[derive(Clone, Debug)]
enum Tree {
    Num(f64),
    Name(&'static str),
    Neg(Box<Tree>),
    Bin(BinOp, Box<Tree>, Box<Tree>),
    Call(&'static str, Vec<Tree>),
}

/// Appends `t` to the arena in post-order (operands before their operator).
fn push_post_order(t: &Tree, nodes: &mut Vec<Node>) -> NodeId {
    let kind = match t {
        // `{}` of a finite non-negative f64 is the shortest text that reads back as the
        // same value, so the literal's spelling survives the round trip too.
        Tree::Num(v) => NodeKind::Num {
            value: *v,
            text: format!("{v}"),
        },
        Tree::Name(n) => NodeKind::Name((*n).to_string()),
        Tree::Neg(a) => NodeKind::Neg(push_post_order(a, nodes)),
        Tree::Bin(op, a, b) => {
            let lhs = push_post_order(a, nodes);
            let rhs = push_post_order(b, nodes);
            NodeKind::Binary { op: *op, lhs, rhs }
        }
        Tree::Call(f, args) => {
            let args = args.iter().map(|a| push_post_order(a, nodes)).collect();
            NodeKind::Call {
                func: Ident {
                    name: (*f).to_string(),
                    span: Span::default(),
                },
                args,
            }
        }
    };
    nodes.push(Node {
        kind,
        span: Span::default(),
    });
    (nodes.len() - 1) as NodeId
}

fn to_expr(t: &Tree) -> Expr {
    let mut nodes = Vec::new();
    push_post_order(t, &mut nodes);
    Expr { nodes }
}

/// Every node in its own parentheses: a second, independent text for the same tree.
fn print_fully_parenthesised(t: &Tree) -> String {
    match t {
        Tree::Num(v) => format!("{v}"),
        Tree::Name(n) => (*n).to_string(),
        Tree::Neg(a) => format!("(-{})", print_fully_parenthesised(a)),
        Tree::Bin(op, a, b) => format!(
            "({} {} {})",
            print_fully_parenthesised(a),
            op.symbol(),
            print_fully_parenthesised(b)
        ),
        Tree::Call(f, args) => {
            let args: Vec<String> = args.iter().map(print_fully_parenthesised).collect();
            format!("{f}({})", args.join(", "))
        }
    }
}

fn literal() -> impl Strategy<Value = f64> {
    prop_oneof![
        // Small integers, as written in real objectives (`x^2`, `3*y`).
        (0u32..=12).prop_map(f64::from),
        0.0..1e6f64,
        // Any finite magnitude, tiny and huge included; `abs` turns −0 into 0.
        (prop::num::f64::NORMAL | prop::num::f64::SUBNORMAL | prop::num::f64::ZERO)
            .prop_map(f64::abs),
    ]
}

fn tree() -> impl Strategy<Value = Tree> {
    let leaf = prop_oneof![
        literal().prop_map(Tree::Num),
        select(vec!["x", "y", "a", "lambda", "_t1"]).prop_map(Tree::Name),
    ];
    let ops = vec![BinOp::Add, BinOp::Sub, BinOp::Mul, BinOp::Div, BinOp::Pow];
    let funcs: Vec<&'static str> = Func::ALL.iter().map(|f| f.name()).collect();
    leaf.prop_recursive(6, 64, 2, move |inner| {
        prop_oneof![
            inner.clone().prop_map(|a| Tree::Neg(Box::new(a))),
            (select(ops.clone()), inner.clone(), inner.clone()).prop_map(|(op, a, b)| Tree::Bin(
                op,
                Box::new(a),
                Box::new(b)
            )),
            (select(funcs.clone()), inner.clone()).prop_map(|(f, a)| Tree::Call(f, vec![a])),
            (select(vec!["pow", "max", "min"]), inner.clone(), inner)
                .prop_map(|(f, a, b)| Tree::Call(f, vec![a, b])),
        ]
    })
}

proptest! {
    // 512 trees of up to 64 nodes: every operator pair and nesting pattern of depth ≤ 6
    // shows up many times, in well under a second.
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// print → parse is the identity on syntax trees (up to spans).
    #[test]
    fn printed_trees_parse_back_to_themselves(t in tree()) {
        let expr = to_expr(&t);
        let text = print_expr(&expr);
        let parsed = parse_expr(&Source::new("printed", text.clone()))
            .map_err(|d| TestCaseError::fail(format!("`{text}` does not parse:\n{d}")))?;
        prop_assert_eq!(parsed.without_spans(), expr.without_spans(), "printed as `{}`", text);
        // And printing is a function of the tree alone.
        prop_assert_eq!(print_expr(&parsed), text);
    }

    /// The parser gives the same tree whether or not the redundant parentheses are there.
    #[test]
    fn fully_parenthesised_text_parses_to_the_same_tree(t in tree()) {
        let text = print_fully_parenthesised(&t);
        let parsed = parse_expr(&Source::new("parenthesised", text.clone()))
            .map_err(|d| TestCaseError::fail(format!("`{text}` does not parse:\n{d}")))?;
        prop_assert_eq!(parsed.without_spans(), to_expr(&t).without_spans(), "text `{}`", text);
    }
}

// ---------------------------------------------------------------------------------------
// 2. Derivatives agree with central finite differences

/// One-argument templates (`@1` is the argument), each smooth everywhere its argument can
/// go. Arguments of growing functions (`exp`, `sinh`, `cosh`, `tan`) are first squashed
/// by a bounded one, denominators stay ≥ 1, and bases of real powers stay ≥ 0.5.
const UNARY: [&str; 22] = [
    "sin(@1)",
    "cos(@1)",
    "tanh(@1)",
    "atan(@1)",
    "sigmoid(@1)",
    "softplus(@1)",
    "exp(sin(@1))",
    "log(1 + (@1)^2)",
    "sqrt(1 + (@1)^2)",
    "(@1)^2",
    "(@1)^3",
    "-(@1)",
    "log1p((@1)^2)",
    "expm1(0.5*sin(@1))",
    "sinh(sin(@1))",
    "cosh(sin(@1))",
    "tan(0.5*tanh(@1))",
    "2^sin(@1)",
    "(2 + cos(@1))^-2",
    "(1 + (@1)^2)^1.5",
    "abs(2 + sin(@1))",
    "pow(1.5 + sin(@1), 0.7)",
];

/// Two-argument templates (`@1`, `@2`).
const BINARY: [&str; 6] = [
    "(@1) + (@2)",
    "(@1) - (@2)",
    "(@1)*(@2)",
    "(@1)/(2 + cos(@2))",
    "pow(1.5 + sin(@1), cos(@2))",
    "(1.5 + sin(@1))^sin(@2)",
];

/// Random smooth expressions over `vars`, as text.
fn smooth_expr(vars: Vec<&'static str>, depth: u32) -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        select(vars).prop_map(String::from),
        (-1.0..1.0f64).prop_map(|c| format!("({c})")),
    ];
    leaf.prop_recursive(depth, 32, 2, |inner| {
        prop_oneof![
            (select(UNARY.to_vec()), inner.clone()).prop_map(|(t, a)| t.replace("@1", &a)),
            (select(BINARY.to_vec()), inner.clone(), inner)
                .prop_map(|(t, a, b)| t.replace("@1", &a).replace("@2", &b)),
        ]
    })
}

const VARS: [&str; 3] = ["x", "y", "z"];

/// (dimension, expression, point in [−1, 1]^d) for d ∈ {2, 3}.
fn smooth_case() -> impl Strategy<Value = (usize, String, Vec<f64>)> {
    (2usize..=3).prop_flat_map(|d| {
        (
            Just(d),
            smooth_expr(VARS[..d].to_vec(), 3),
            vec(-1.0..1.0f64, d),
        )
    })
}

fn objective_check(text: &str, x: &[f64]) -> Result<(), TestCaseError> {
    let p = Problem::from_str(text)
        .map_err(|e| TestCaseError::fail(format!("should check:\n{text}\n{e}")))?;
    let ad = p
        .objective_derivatives(x)
        .map_err(|e| TestCaseError::fail(format!("AD failed:\n{text}\n{e}")))?;
    check_against_fd(
        text,
        x,
        &[ad],
        |q| p.value(q).map(|v| vec![v]),
        |q| p.objective_derivatives(q).map(|d| vec![d.gradient]),
    )
}

proptest! {
    // 192 random expressions of depth ≤ 3 at random points: each case costs a parse and
    // 4d + 1 evaluations, so the block stays around a second in debug builds.
    #![proptest_config(ProptestConfig { cases: 192, ..ProptestConfig::default() })]

    /// ∇f and ∇²f from the tape match central differences of f and of ∇f; ∇²f is
    /// symmetric.
    #[test]
    fn derivatives_match_central_differences((d, e, x) in smooth_case()) {
        let vars = VARS[..d].join(", ");
        objective_check(&format!("var {vars}\nminimize {e}"), &x)?;
    }
}

proptest! {
    // Dimension 9–10 takes the blocked Hessian path (8×8 blocks of hyper-duals); fewer
    // cases because each costs 4d + 1 evaluations of a wider number type.
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn blocked_hessians_match_central_differences(
        (d, terms, x) in (9usize..=10).prop_flat_map(|d| {
            let names: Vec<&'static str> =
                ["x0", "x1", "x2", "x3", "x4", "x5", "x6", "x7", "x8", "x9"][..d].to_vec();
            (Just(d), vec(smooth_expr(names, 2), 3), vec(-1.0..1.0f64, d))
        })
    ) {
        let vars: Vec<String> = (0..d).map(|i| format!("x{i}")).collect();
        // Couple every coordinate into the objective, so no block of the Hessian is
        // trivially zero, then add the random terms.
        let chain: Vec<String> = (0..d).map(|i| format!("x{i}*x{}", (i + 1) % d)).collect();
        let text = format!(
            "var {}\nminimize sin({}) + {}",
            vars.join(", "),
            chain.join(" + "),
            terms.join(" + ")
        );
        objective_check(&text, &x)?;
    }
}

/// (noise statement, observable expressions) over x, y, every Σ(x) symmetric PSD by
/// construction: variances are `1 + u²` or `u²`, off-diagonal entries `0.5·tanh(v)`.
fn noise_case() -> impl Strategy<Value = (String, Vec<String>, Vec<f64>)> {
    let e = || smooth_expr(vec!["x", "y"], 2);
    let noise = prop_oneof![
        e().prop_map(|a| format!("noise sd 0.1 + ({a})^2")),
        (e(), e()).prop_map(|(a, b)| format!("noise diag [({a})^2, 1 + ({b})^2]")),
        (e(), e(), e()).prop_map(|(a, b, c)| format!(
            "noise cov [[1 + ({a})^2, 0.5*tanh({b})], [0.5*tanh({b}), 1 + ({c})^2]]"
        )),
    ];
    (noise, vec(e(), 1..=2), vec(-1.0..1.0f64, 2))
}

proptest! {
    // 96 cases: three noise kinds, each with observables; every case checks up to 6
    // outputs against differences.
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    /// Every entry of Σ(x) and every observable: derivatives match central differences,
    /// and the derivative values equal the plain values.
    #[test]
    fn noise_and_observable_derivatives_match_central_differences(
        (noise, observables, x) in noise_case()
    ) {
        let obs: String = observables
            .iter()
            .enumerate()
            .map(|(i, o)| format!("observe o{i} = {o}\n"))
            .collect();
        let text = format!("var x, y\nminimize x*y\n{noise}\n{obs}");
        let p = Problem::from_str(&text)
            .map_err(|e| TestCaseError::fail(format!("should check:\n{text}\n{e}")))?;

        let sigma = p.noise_cov(&x).map_err(|e| TestCaseError::fail(format!("{text}\n{e}")))?;
        let entries = p
            .noise_cov_derivatives(&x)
            .map_err(|e| TestCaseError::fail(format!("{text}\n{e}")))?;
        prop_assert_eq!(entries.len(), 4);
        for (k, entry) in entries.iter().enumerate() {
            // Dual and plain evaluation round differently by a few ulps (e.g. `powi`).
            close(
                &format!("Σ entry {k} value"),
                entry.value,
                sigma[(k / 2, k % 2)],
                1e-13 * (1.0 + sigma[(k / 2, k % 2)].abs()),
            )?;
        }
        check_against_fd(
            &format!("{text} (noise)"),
            &x,
            &entries,
            |q| p.noise_cov(q).map(|s| s.transpose().as_slice().to_vec()),
            |q| p.noise_cov_derivatives(q).map(|es| es.into_iter().map(|e| e.gradient).collect()),
        )?;

        let obs_d = p
            .observable_derivatives(&x)
            .map_err(|e| TestCaseError::fail(format!("{text}\n{e}")))?;
        prop_assert_eq!(obs_d.len(), observables.len());
        check_against_fd(
            &format!("{text} (observables)"),
            &x,
            &obs_d,
            |q| p.observables(q),
            |q| p.observable_derivatives(q).map(|os| os.into_iter().map(|o| o.gradient).collect()),
        )?;
    }
}

// ---------------------------------------------------------------------------------------
// 3. Built-in functions against their closed forms

/// Closed-form value, first and second derivative of a one-variable objective at `x`.
struct Reference {
    objective: &'static str,
    x: f64,
    f: f64,
    d1: f64,
    d2: f64,
}

fn r(objective: &'static str, x: f64, (f, d1, d2): (f64, f64, f64)) -> Reference {
    Reference {
        objective,
        x,
        f,
        d1,
        d2,
    }
}

/// σ(x) and 1 − σ(x), each computed without cancellation or overflow.
fn sigmoid_pair(x: f64) -> (f64, f64) {
    let e = (-x.abs()).exp();
    let (big, small) = (1.0 / (1.0 + e), e / (1.0 + e));
    if x >= 0.0 { (big, small) } else { (small, big) }
}

/// The reference table: every built-in at two or more points, by hand.
fn references() -> Vec<Reference> {
    let ln2 = std::f64::consts::LN_2;
    let mut t = Vec::new();
    for x in [0.3f64, -1.7] {
        t.push(r("exp(x)", x, (x.exp(), x.exp(), x.exp())));
    }
    for x in [0.5, 3.0] {
        t.push(r("log(x)", x, (x.ln(), 1.0 / x, -1.0 / (x * x))));
    }
    for x in [0.25, 4.0] {
        t.push(r(
            "sqrt(x)",
            x,
            (x.sqrt(), 0.5 / x.sqrt(), -0.25 / (x * x.sqrt())),
        ));
    }
    for x in [0.7, -2.0] {
        t.push(r("sin(x)", x, (x.sin(), x.cos(), -x.sin())));
        t.push(r("cos(x)", x, (x.cos(), -x.sin(), -x.cos())));
    }
    for x in [0.4f64, -1.2] {
        let tn = x.tan();
        t.push(r(
            "tan(x)",
            x,
            (tn, 1.0 + tn * tn, 2.0 * tn * (1.0 + tn * tn)),
        ));
    }
    for x in [0.5f64, -1.2] {
        let th = x.tanh();
        let sech2 = 1.0 / (x.cosh() * x.cosh());
        t.push(r("tanh(x)", x, (th, sech2, -2.0 * th * sech2)));
    }
    for x in [0.5, -1.5] {
        t.push(r("sinh(x)", x, (x.sinh(), x.cosh(), x.sinh())));
        t.push(r("cosh(x)", x, (x.cosh(), x.sinh(), x.cosh())));
    }
    for x in [0.5, -2.0] {
        let q = 1.0 + x * x;
        t.push(r("atan(x)", x, (x.atan(), 1.0 / q, -2.0 * x / (q * q))));
    }
    // σ' = σ(1 − σ), σ'' = σ(1 − σ)(1 − 2σ); softplus' = σ, softplus'' = σ(1 − σ).
    // ±50 and ±800: e^{±x} alone would lose everything or overflow there.
    for x in [0.8, -1.3, 50.0, -50.0, 800.0, -800.0] {
        let (s, c) = sigmoid_pair(x);
        t.push(r("sigmoid(x)", x, (s, s * c, s * c * (c - s))));
        let softplus = x.max(0.0) + (-x.abs()).exp().ln_1p();
        t.push(r("softplus(x)", x, (softplus, s, s * c)));
    }
    for x in [0.5, -0.5] {
        let q = 1.0 + x;
        t.push(r("log1p(x)", x, (x.ln_1p(), 1.0 / q, -1.0 / (q * q))));
    }
    for x in [0.5, -1e-8] {
        t.push(r("expm1(x)", x, (x.exp_m1(), x.exp(), x.exp())));
    }
    t.push(r("abs(x)", -1.5, (1.5, -1.0, 0.0)));
    t.push(r("abs(x)", 2.0, (2.0, 1.0, 0.0)));
    // Documented: the derivative of `abs` at 0 is taken as +1.
    t.push(r("abs(x)", 0.0, (0.0, 1.0, 0.0)));
    // Integer-literal exponents are exact integer powers, valid for negative bases.
    t.push(r("x^3", -2.0, (-8.0, 12.0, -12.0)));
    t.push(r("x^2", -3.0, (9.0, -6.0, 2.0)));
    t.push(r("x^0", 5.0, (1.0, 0.0, 0.0)));
    t.push(r("x^-1", -2.0, (-0.5, -0.25, -0.25))); // −1/x², 2/x³
    t.push(r("x^-2", -2.0, (0.25, 0.25, 0.375))); // −2/x³, 6/x⁴
    t.push(r("x^0.5", 4.0, (2.0, 0.25, -1.0 / 32.0))); // x^{−1/2}/2, −x^{−3/2}/4
    t.push(r("x^1.5", 4.0, (8.0, 3.0, 0.375))); // 1.5 x^{1/2}, 0.75 x^{−1/2}
    let p = 2f64.powf(1.5);
    t.push(r("2^x", 1.5, (p, ln2 * p, ln2 * ln2 * p)));
    t.push(r("-x^2", 3.0, (-9.0, -6.0, -2.0))); // unary minus is looser than `^`
    t
}

/// 1e-13 relative: the closed forms and the dual-number rules each take a handful of
/// correctly rounded operations on well-conditioned quantities (a few ulps, ~1e-15 each);
/// 1e-13 leaves two orders of margin. Exact zeros (e.g. `abs''`) must come out exactly.
const REFERENCE_TOL: f64 = 1e-13;

#[test]
fn builtin_functions_match_their_closed_forms() {
    let mut failures = Vec::new();
    for c in references() {
        let p = problem(&format!("var x\nminimize {}", c.objective));
        let got = match p.objective_derivatives(&[c.x]) {
            Ok(d) => d,
            Err(e) => {
                failures.push(format!("{} at {}: {e}", c.objective, c.x));
                continue;
            }
        };
        let value = p
            .value(&[c.x])
            .expect("the value exists where the derivatives do");
        for (what, g, w) in [
            ("value (tape)", value, c.f),
            ("value (duals)", got.value, c.f),
            ("f'", got.gradient[0], c.d1),
            ("f''", got.hessian[(0, 0)], c.d2),
        ] {
            if (g - w).abs() > REFERENCE_TOL * w.abs() {
                failures.push(format!(
                    "{} at x = {}: {what} = {g:e}, want {w:e}",
                    c.objective, c.x
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// `tanh` saturates: at |x| = 20 its derivative is sech²x ≈ 1.7e-17 and at |x| = 400 it
/// underflows to 0, while the value is ±1. The dual `tanh` is computed as sinh/cosh, so
/// the derivative is (cosh² − sinh²)/cosh², which cancels to 0 (or noise) for |x| ≳ 18
/// and is inf/inf = NaN once cosh² overflows (|x| ≳ 355).
#[test]
fn tanh_keeps_its_derivatives_at_large_arguments() {
    let p = problem("var x\nminimize tanh(x)");
    let mut failures = Vec::new();
    for x in [20.0f64, -20.0, 400.0, -400.0] {
        let th = x.tanh();
        // sech²x = 4/(eˣ + e⁻ˣ)², written with e^{−|x|} so nothing overflows.
        let e = (-2.0 * x.abs()).exp();
        let sech2 = 4.0 * e / ((1.0 + e) * (1.0 + e));
        let want = (th, sech2, -2.0 * th * sech2);
        match p.objective_derivatives(&[x]) {
            Ok(d) => {
                let got = (d.value, d.gradient[0], d.hessian[(0, 0)]);
                // Same reason as REFERENCE_TOL.
                let ok = |g: f64, w: f64| (g - w).abs() <= REFERENCE_TOL * w.abs();
                if !(ok(got.0, want.0) && ok(got.1, want.1) && ok(got.2, want.2)) {
                    failures.push(format!("tanh at {x}: got {got:?}, want {want:?}"));
                }
            }
            Err(e) => failures.push(format!("tanh at {x}: {e}")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// `x^2.5` and `x^3.5` are twice continuously differentiable at 0 with value, first and
/// second derivative all 0. The dual `powf` forms x^{n−3}·x·x·x, which is ∞·0 = NaN at 0
/// whenever n − 3 < 0 (so `x^2.5` fails, `x^3.5` passes).
#[test]
fn real_powers_are_twice_differentiable_at_zero_where_smooth() {
    let mut failures = Vec::new();
    for objective in ["x^2.5", "x^3.5", "pow(x, 2.5)"] {
        let p = problem(&format!("var x\nminimize {objective}"));
        match p.objective_derivatives(&[0.0]) {
            // Exact: every term is a power of 0.
            Ok(d) if (d.value, d.gradient[0], d.hessian[(0, 0)]) == (0.0, 0.0, 0.0) => {}
            Ok(d) => failures.push(format!("{objective} at 0: {d:?}")),
            Err(e) => failures.push(format!("{objective} at 0: {e}")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// `pow(x, y)` with both arguments variable: ∂x = y x^{y−1}, ∂y = x^y log x,
/// ∂xx = y(y−1)x^{y−2}, ∂xy = x^{y−1}(1 + y log x), ∂yy = x^y log²x.
#[test]
fn pow_of_two_variables_matches_its_closed_form() {
    let (x, y) = (2.0f64, 3.0f64);
    let l = x.ln();
    let want_g = [y * x.powf(y - 1.0), x.powf(y) * l];
    let want_h = [
        [
            y * (y - 1.0) * x.powf(y - 2.0),
            x.powf(y - 1.0) * (1.0 + y * l),
        ],
        [x.powf(y - 1.0) * (1.0 + y * l), x.powf(y) * l * l],
    ];
    for text in ["var x, y\nminimize pow(x, y)", "var x, y\nminimize x^y"] {
        let d = derivs(&problem(text), &[x, y]);
        // Same reason as REFERENCE_TOL: a few roundings of O(10) quantities.
        let tol = |w: f64| REFERENCE_TOL * w.abs();
        assert!(
            (d.value - 8.0).abs() <= tol(8.0),
            "{text}: value {}",
            d.value
        );
        for (i, (&wg, wh)) in want_g.iter().zip(&want_h).enumerate() {
            assert!((d.gradient[i] - wg).abs() <= tol(wg), "{text}: ∂{i}");
            for (j, &w) in wh.iter().enumerate() {
                assert!(
                    (d.hessian[(i, j)] - w).abs() <= tol(w),
                    "{text}: ∂{i}∂{j} = {}, want {w}",
                    d.hessian[(i, j)],
                );
            }
        }
    }
}

/// Constant subexpressions are folded with the precedence of docs/language.md.
#[test]
fn constants_fold_with_the_right_precedence() {
    let p = problem("var x\nminimize x");
    // Exact by construction: small integer powers of 2 are exact in binary.
    for (text, want) in [
        ("2^3^2", 512.0),
        ("(2^3)^2", 64.0),
        ("-2^2", -4.0),
        ("(-2)^2", 4.0),
        ("(-2)^3", -8.0),
        ("2^-1", 0.5),
        ("2*3 - 4/2", 4.0),
        ("2 - 3 - 4", -5.0),
        ("16/4/2", 2.0),
        ("- -2", 2.0),
    ] {
        assert_eq!(p.constant(text), Ok(want), "{text}");
    }
    assert_eq!(p.constant("pi"), Ok(std::f64::consts::PI));
    // Folding inside an objective gives the same numbers.
    let q = problem("var x\nminimize 2^3^2 + (-2)^2*x - -2^2");
    let d = derivs(&q, &[0.0]);
    assert_eq!((d.value, d.gradient[0]), (516.0, 4.0));
}

// ---------------------------------------------------------------------------------------
// 4. Semantics

proptest! {
    // Exactness holds at every point by construction; 256 random points (wide range,
    // both signs) would catch an exponent read as a real power (NaN for x < 0).
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// An exponent written `2.0` is the same exact integer power as `2`.
    #[test]
    fn real_literal_with_integer_value_is_an_exact_integer_power(x in -1e3..1e3f64) {
        for (a, b) in [("x^2.0", "x^2"), ("x^3.0", "x^3"), ("x^-1.0", "x^-1"), ("pow(x, 2.0)", "x^2")] {
            let pa = problem(&format!("var x\nminimize {a}"));
            let pb = problem(&format!("var x\nminimize {b}"));
            prop_assert_eq!(pa.objective_tape().ops(), pb.objective_tape().ops());
            if x != 0.0 {
                prop_assert_eq!(derivs(&pa, &[x]), derivs(&pb, &[x]), "{} vs {}", a, b);
            }
        }
    }

    /// A `let` means its expression: the tape is the one of the text with the `let`s
    /// substituted (hash-consing shares the repeats), so the numbers are identical.
    #[test]
    fn lets_are_inlined(x in -2.0..2.0f64, y in -2.0..2.0f64) {
        let with_lets = problem(
            "var x, y\nlet r2 = x^2 + y^2\nlet r4 = r2^2\nminimize 0.25*r4 - r2 + x*y\n\
             noise diag [1 + r2, 2]\nobserve dist = sqrt(r2)",
        );
        let inline = problem(
            "var x, y\nminimize 0.25*(x^2 + y^2)^2 - (x^2 + y^2) + x*y\n\
             noise diag [1 + (x^2 + y^2), 2]\nobserve dist = sqrt(x^2 + y^2)",
        );
        prop_assert_eq!(with_lets.objective_tape().ops(), inline.objective_tape().ops());
        let (a, b) = (derivs(&with_lets, &[x, y]), derivs(&inline, &[x, y]));
        prop_assert_eq!(&a, &b);
        prop_assert_eq!(with_lets.noise_cov(&[x, y]).ok(), inline.noise_cov(&[x, y]).ok());
        prop_assert_eq!(with_lets.observables(&[x, y]).ok(), inline.observables(&[x, y]).ok());
        // And against the closed form: r2 = x² + y², f = r2²/4 − r2 + xy.
        let r2 = x * x + y * y;
        let f = 0.25 * r2 * r2 - r2 + x * y;
        // A dozen roundings of numbers up to ~16: 1e-13 relative is ample.
        close("f", a.value, f, 1e-13 * (1.0 + f.abs()))?;
        close("∂x f", a.gradient[0], r2 * x - 2.0 * x + y, 1e-13 * (1.0 + r2 * 4.0))?;
    }
}

#[test]
fn set_overrides_change_params_and_everything_computed_from_them() {
    let text = "param a = 2\nparam b = 3*a\nvar x = a/2\nminimize a*x^2 + b*x\nnoise sd a/10";
    let base = problem(text);
    assert_eq!(
        base.params(),
        &[("a".to_string(), 2.0), ("b".to_string(), 6.0)]
    );
    assert_eq!(base.start(), vec![1.0]);
    let d = base.derivatives(&[1.0]).expect("finite");
    assert_eq!(d.value, 8.0); // 2·1 + 6·1, exact small integers

    let set = problem_with(text, &Overrides::none().set("a", 4.0));
    assert_eq!(
        set.params(),
        &[("a".to_string(), 4.0), ("b".to_string(), 12.0)]
    );
    assert_eq!(set.start(), vec![2.0]);
    let d = set.derivatives(&[1.0]).expect("finite");
    assert_eq!(d.value, 16.0); // 4·1 + 12·1
    assert_eq!(d.gradient[0], 20.0); // 2·4·1 + 12
    // (4/10)² = 0.16 up to the rounding of 0.4 and its square.
    assert!((d.noise_cov[(0, 0)] - 0.16).abs() < 1e-15);

    // The last of repeated overrides wins (as on the command line).
    let twice = problem_with(text, &Overrides::none().set("a", 1.0).set("a", 3.0));
    assert_eq!(twice.params()[0].1, 3.0);
    // The same through the `--set` parser.
    let parsed = Overrides::parse(&["a=4", " b = 1 "]).expect("valid --set items");
    let p = problem_with(text, &parsed);
    assert_eq!(
        p.params(),
        &[("a".to_string(), 4.0), ("b".to_string(), 1.0)]
    );
}

#[test]
fn default_observables_are_the_variables_then_norm2() {
    let p = problem("var x = 1, y = -2, z = 0.5\nminimize x + y + z");
    assert_eq!(p.observable_names(), &["x", "y", "z", "norm2"]);
    let x = [1.0, -2.0, 0.5];
    // Exact: squares and sums of small dyadic numbers.
    assert_eq!(
        p.observables(&x).expect("finite"),
        vec![1.0, -2.0, 0.5, 5.25]
    );
    let d = p.observable_derivatives(&x).expect("finite");
    assert_eq!(d[3].gradient.as_slice(), &[2.0, -4.0, 1.0]);
    assert_eq!(d[3].hessian, DMatrix::identity(3, 3) * 2.0);
    assert_eq!(d[1].gradient.as_slice(), &[0.0, 1.0, 0.0]);
    // Declared observables replace the defaults, in declaration order.
    let q = problem("var x, y\nminimize x\nobserve b = y^2\nobserve a = x*y");
    assert_eq!(q.observable_names(), &["b", "a"]);
    assert_eq!(q.observables(&[2.0, 3.0]).expect("finite"), vec![9.0, 6.0]);
}

#[test]
fn noise_statements_give_the_right_sigma() {
    let x = [0.5, -1.0];
    // 1e-15: one or two roundings of numbers below 2.
    let tol = 1e-15;
    let p = problem("var x, y\nminimize x\nnoise sd 0.1*(1 + x^2)");
    assert_eq!(p.noise_kind(), NoiseKind::Sd);
    let s = 0.1 * (1.0 + 0.25);
    let want = DMatrix::identity(2, 2) * (s * s);
    assert!((p.noise_cov(&x).expect("PSD") - want).abs().max() < tol);

    let p = problem("var x, y\nminimize x\nnoise diag [x^2, 1 + y^2]");
    assert_eq!(p.noise_kind(), NoiseKind::Diag);
    let want = DMatrix::from_diagonal(&DVector::from_vec(vec![0.25, 2.0]));
    assert!((p.noise_cov(&x).expect("PSD") - want).abs().max() < tol);

    let p = problem("var x, y\nminimize x\nnoise cov [[2, x*y], [x*y, 1 + y^2]]");
    assert_eq!(p.noise_kind(), NoiseKind::Cov);
    let want = DMatrix::from_row_slice(2, 2, &[2.0, -0.5, -0.5, 2.0]);
    assert!((p.noise_cov(&x).expect("PSD") - want).abs().max() < tol);

    let p = problem("var x, y\nminimize x");
    assert_eq!(p.noise_kind(), NoiseKind::None);
    assert_eq!(p.noise_cov(&x).expect("zero"), DMatrix::zeros(2, 2));
}

/// Σ(x) = [[1 + x², xy], [xy, 2 + sin y]]: entry derivatives by hand, and against
/// central differences of Σ.
#[test]
fn noise_cov_derivatives_of_a_state_dependent_sigma() {
    let p = problem("var x, y\nminimize x\nnoise cov [[1 + x^2, x*y], [x*y, 2 + sin(y)]]");
    let (x, y) = (0.3, -0.7);
    let e = p.noise_cov_derivatives(&[x, y]).expect("finite");
    // Hand derivatives: (value, ∇, ∇²) per entry, row-major.
    let hand = [
        (1.0 + x * x, [2.0 * x, 0.0], [[2.0, 0.0], [0.0, 0.0]]),
        (x * y, [y, x], [[0.0, 1.0], [1.0, 0.0]]),
        (x * y, [y, x], [[0.0, 1.0], [1.0, 0.0]]),
        (2.0 + y.sin(), [0.0, y.cos()], [[0.0, 0.0], [0.0, -y.sin()]]),
    ];
    for (k, (v, g, h)) in hand.iter().enumerate() {
        // A few roundings of O(1) numbers.
        let tol = 1e-15 * 4.0;
        assert!((e[k].value - v).abs() < tol, "entry {k} value");
        for (i, (&gi, hi)) in g.iter().zip(h).enumerate() {
            assert!((e[k].gradient[i] - gi).abs() < tol, "entry {k} ∂{i}");
            for (j, &hij) in hi.iter().enumerate() {
                assert!(
                    (e[k].hessian[(i, j)] - hij).abs() < tol,
                    "entry {k} ∂{i}∂{j}"
                );
            }
        }
    }
    // Against differences too (the same law as the property test, at a fixed point).
    check_against_fd(
        "Σ",
        &[x, y],
        &e,
        |q| p.noise_cov(q).map(|s| s.transpose().as_slice().to_vec()),
        |q| {
            p.noise_cov_derivatives(q)
                .map(|es| es.into_iter().map(|e| e.gradient).collect())
        },
    )
    .expect("matches central differences");
}

#[test]
fn warnings_flag_abs_and_unused_lets() {
    let p = problem("var x\nlet unused = x^2\nminimize abs(x) + abs(2)");
    let w: Vec<String> = p.warnings().iter().map(|w| w.message.clone()).collect();
    assert_eq!(w.len(), 2, "{w:?}");
    assert!(w[0].contains("`unused` is defined but never used"), "{w:?}");
    // `abs` of a constant is folded and needs no warning; `abs(x)` does.
    assert!(w[1].contains("`abs` is not differentiable at 0"), "{w:?}");
    assert_eq!((p.warnings()[1].line, p.warnings()[1].column), (3, 10));
}

// ---------------------------------------------------------------------------------------
// 5. Structure analysis

#[test]
fn structure_of_objectives() {
    // (objective, polynomial degree if any, quadratic)
    let table: [(&str, Option<u32>, bool); 22] = [
        ("x*y + x", Some(2), true),
        ("x^2*y", Some(3), false),
        ("exp(x)", None, false),
        ("x/2", Some(1), true),
        ("1/x", None, false),
        ("(x+y)^2", Some(2), true),
        ("exp(1)*x^2", Some(2), true),
        ("pi*x", Some(1), true),
        ("3", Some(0), true),
        ("x^0", Some(0), true),
        ("x^2.0", Some(2), true),
        ("x^-1", None, false),
        ("x^0.5", None, false),
        ("2^x", None, false),
        ("x^y", None, false),
        ("pow(x, 2)", Some(2), true),
        ("(x^2)^2", Some(4), false),
        ("-x^2 + 3*x - y/4", Some(2), true),
        ("x/y", None, false),
        ("sin(2)*x*y", Some(2), true),
        ("r2 + x", Some(2), true),
        ("a*x^a", Some(3), false),
    ];
    for (objective, degree, quadratic) in table {
        let p = problem(&format!(
            "param a = 3\nvar x, y\nlet r2 = x^2 + y^2\nminimize {objective}"
        ));
        let s = p.structure();
        assert_eq!(s.objective_degree, degree, "degree of `{objective}`");
        assert_eq!(s.quadratic, quadratic, "quadratic: `{objective}`");
        assert!(s.constant_noise, "no noise statement is constant noise");
    }
}

#[test]
fn structure_of_noise() {
    let table: [(&str, bool); 9] = [
        ("noise sd 0.1", true),
        ("noise sd a/10", true),
        ("noise sd 0.1*x", false),
        ("noise diag [x^2, 1]", false),
        ("noise diag [1, 2]", true),
        ("noise diag [s, s]", true),
        ("noise cov [[1, 0], [0, 1]]", true),
        ("noise cov [[1, 0.1*y], [0.1*y, 1]]", false),
        ("noise cov [[exp(1), 0], [0, pi]]", true),
    ];
    for (noise, constant) in table {
        let p = problem(&format!(
            "param a = 1\nvar x, y\nlet s = 2*a\nminimize x\n{noise}"
        ));
        assert_eq!(p.structure().constant_noise, constant, "`{noise}`");
    }
}

/// Random expressions mixing polynomial and non-polynomial pieces, over x and y.
fn mixed_expr() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        select(vec!["x", "y"]).prop_map(String::from),
        select(vec!["2", "0.5", "3", "pi"]).prop_map(String::from),
    ];
    leaf.prop_recursive(4, 32, 2, |inner| {
        prop_oneof![
            (
                select(vec![
                    "(@1)^2",
                    "(@1)^0",
                    "-(@1)",
                    "(@1)/4",
                    "exp(sin(@1))",
                    "sin(@1)"
                ]),
                inner.clone()
            )
                .prop_map(|(t, a)| t.replace("@1", &a)),
            (
                select(vec![
                    "(@1) + (@2)",
                    "(@1) - (@2)",
                    "(@1)*(@2)",
                    "(@1)/(1 + (@2)^2)"
                ]),
                inner.clone(),
                inner
            )
                .prop_map(|(t, a, b)| t.replace("@1", &a).replace("@2", &b)),
        ]
    })
}

proptest! {
    // 256 random objectives; about a third come out quadratic, so each property below
    // is exercised on ~80 cases.
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Soundness of the structure flag exact-moment code relies on: a "quadratic"
    /// objective equals its second-order Taylor expansion about any point, and a
    /// "degree ≤ 1" objective has a zero Hessian.
    #[test]
    fn quadratic_objectives_equal_their_taylor_expansion(
        e in mixed_expr(),
        x0 in vec(-1.0..1.0f64, 2),
        x1 in vec(-1.0..1.0f64, 2),
    ) {
        let p = problem(&format!("var x, y\nminimize {e}"));
        let s = p.structure();
        if let Some(n) = s.objective_degree {
            prop_assert_eq!(s.quadratic, n <= 2);
        }
        if !s.quadratic {
            return Ok(());
        }
        let d0 = derivs(&p, &x0);
        let f1 = p.value(&x1).map_err(|err| TestCaseError::fail(err.to_string()))?;
        let dx = DVector::from_column_slice(&[x1[0] - x0[0], x1[1] - x0[1]]);
        let linear = d0.gradient.dot(&dx);
        let curvature = 0.5 * dx.dot(&(&d0.hessian * &dx));
        let taylor = d0.value + linear + curvature;
        // Exact for a quadratic up to round-off: a few dozen operations on numbers of the
        // size of the terms, so 1e-12 relative to the largest term.
        let size = 1.0 + d0.value.abs().max(f1.abs()).max(linear.abs()).max(curvature.abs());
        close(&format!("`{e}` Taylor"), f1, taylor, 1e-12 * size)?;
        if s.objective_degree.is_some_and(|n| n <= 1) {
            prop_assert!(d0.hessian.iter().all(|&h| h == 0.0), "`{}`: H = {}", e, d0.hessian);
        }
    }
}

// ---------------------------------------------------------------------------------------
// Networks: the new statements print back to themselves

/// Matrices, random starts, indexed columns and `logsumexp` survive print → parse →
/// print unchanged, and the reparsed program is checked to the same problem.
#[test]
fn network_statements_print_back_to_themselves() {
    use hasme::lang::{parse, print_program};
    let text = "param p = 2\nparam A[2, 2] = [[1, 0.5], [-1, 2]]\nparam a[2] = [1, 2]\n\
        data d = [[x1, x2, y1, y2], [0.5, 1, 1, 0], [-1, 0.25, 0, 1]]\n\
        var W[2, p] ~ normal(0, 1/sqrt(p)), c[2] ~ uniform(-0.5, 0.5), s = 1\n\
        minimize mean(d, logsumexp(k = 1..2, sum(i = 1..p, A[k, i]*W[k, i]*d.x[i]) + c[k]) \
        - sum(k = 1..2, d.y[k]*(max(c[k], 0) + min(s, relu(W[k, 1]))))) + a[1]*s^2\n";
    let program = parse(&Source::new("n.hasme", text)).unwrap();
    let printed = print_program(&program);
    let again = parse(&Source::new("printed", printed.clone())).unwrap();
    assert_eq!(print_program(&again), printed);
    let (p, q) = (
        Problem::from_str(text).unwrap(),
        Problem::from_str(&printed).unwrap(),
    );
    assert_eq!(p.start(), q.start());
    let x = p.start();
    assert_eq!(derivs(&p, &x), derivs(&q, &x));
}
