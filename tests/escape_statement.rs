//! The `escape when LHS > RHS` statement: the escape region of `hasme escape` written
//! in the objective file.

use hasme::lang::{Source, parse, print_program};
use hasme::{Problem, ProblemError};

#[test]
fn margin_is_lhs_minus_rhs() {
    let p = Problem::from_str(
        "param r = 2\nvar x, y\nminimize x^2 - y^2\nlet d2 = x^2 + y^2\nescape when d2 > r^2",
    )
    .unwrap();
    assert_eq!(p.escape_region(), Some("d2 > r^2"));
    let mut slots = Vec::new();
    // Exact: small integers.
    assert_eq!(
        p.escape_margin_with(&[3.0, 0.0], &mut slots).unwrap(),
        Some(5.0)
    );
    assert_eq!(
        p.escape_margin_with(&[1.0, 1.0], &mut slots).unwrap(),
        Some(-2.0)
    );
    let none = Problem::from_str("var x\nminimize x^2").unwrap();
    assert_eq!(none.escape_region(), None);
    assert_eq!(none.escape_margin_with(&[1.0], &mut slots).unwrap(), None);
}

#[test]
fn escape_statement_prints_and_parses_back() {
    let src = Source::new("f", "var x\nminimize x^2\nescape when abs(x) > 0.5\n");
    let program = parse(&src).unwrap();
    let printed = print_program(&program);
    assert!(printed.contains("escape when abs(x) > 0.5"), "{printed}");
    let again = parse(&Source::new("g", printed.as_str())).unwrap();
    assert_eq!(print_program(&again), printed);
}

#[test]
fn misuse_is_an_error_at_its_position() {
    match Problem::from_str("var x\nminimize x^2\nescape when x > 1\nescape when x > 2") {
        Err(ProblemError::Check(d)) => {
            assert_eq!((d.line, d.column), (4, 1));
            assert!(d.message.contains("more than one `escape` statement"));
        }
        other => panic!("{other:?}"),
    }
    match Problem::from_str("var x\nminimize x^2\nescape when x < 1") {
        Err(ProblemError::Syntax(d)) => {
            assert_eq!((d.line, d.column), (3, 15));
            assert!(d.message.contains("expected `>`"), "{}", d.message);
        }
        other => panic!("{other:?}"),
    }
    match Problem::from_str("var x\nminimize x^2\nescape when z > 1") {
        Err(ProblemError::Check(d)) => assert!(d.message.contains("unknown name `z`")),
        other => panic!("{other:?}"),
    }
    // `escape` is reserved now.
    match Problem::from_str("var escape\nminimize escape^2") {
        Err(ProblemError::Syntax(_)) | Err(ProblemError::Check(_)) => {}
        other => panic!("{other:?}"),
    }
}

#[test]
fn evaluation_failure_names_the_expression() {
    let p = Problem::from_str("var x = -1\nminimize x^2\nescape when log(x) > 0").unwrap();
    let err = p.escape_margin_with(&[-1.0], &mut Vec::new()).unwrap_err();
    assert!(
        err.to_string().contains("`log(x)` evaluates to NaN"),
        "{err}"
    );
}
