//! The error contract of docs/language.md ("Errors"): no input, however malformed, huge or
//! deeply nested, panics, hangs or overflows the stack; every error names the line and
//! column of its cause, shows the line with a caret under it and says what was
//! expected; evaluation failures name the expression and the point. Each error class
//! is checked for its kind, position and text.

use hasme::lang::ast::{BinOp, NodeKind};
use hasme::lang::parse::MAX_NESTING;
use hasme::lang::{Diagnostic, Source, parse_expr};
use hasme::{ErrorKind, Overrides, Problem, ProblemError};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;
use proptest::test_runner::TestCaseError;

// ---------------------------------------------------------------------------------------
// Helpers

/// Runs `f` on a thread with a 2 MiB stack (the size of a default spawned thread), so a
/// recursion that grows with the input would overflow here rather than pass by luck on
/// an 8 MiB main thread.
fn on_small_stack<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(f)
        .expect("spawn a thread")
        .join()
        .expect("the thread did not panic")
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Syntax,
    Check,
}

/// The diagnostic of a Syntax or Check error, with its kind.
fn diagnostic(e: &ProblemError) -> Option<(Kind, &Diagnostic)> {
    match e {
        ProblemError::Syntax(d) => Some((Kind::Syntax, d)),
        ProblemError::Check(d) => Some((Kind::Check, d)),
        _ => None,
    }
}

/// Asserts the display shows `file:line:column: error: …`, the source line, and a caret
/// under `column` (the texts below have no tabs or wide characters before the caret).
fn assert_rendered(d: &Diagnostic, text: &str) {
    let shown = d.to_string();
    let source_line = text
        .split('\n')
        .nth(d.line - 1)
        .unwrap_or("")
        .trim_end_matches('\r');
    let header = format!("{}:{}:{}: error: {}", d.file, d.line, d.column, d.message);
    let code = format!("{} | {source_line}", d.line);
    let pad = " ".repeat(d.line.to_string().len());
    let caret = format!("{pad} | {}^", " ".repeat(d.column - 1));
    let lines: Vec<&str> = shown.lines().collect();
    assert_eq!(lines.first().copied(), Some(header.as_str()), "{shown}");
    assert_eq!(lines.get(2).copied(), Some(code.as_str()), "{shown}");
    assert!(
        lines.get(3).is_some_and(|l| l.starts_with(&caret)),
        "caret:\n{shown}"
    );
}

/// Checks `text` fails with the given kind at `line:column`, the message containing
/// `message`; returns the diagnostic for further checks.
fn expect_error(text: &str, kind: Kind, line: usize, column: usize, message: &str) -> Diagnostic {
    let e = match Problem::from_str(text) {
        Ok(_) => panic!("expected an error for:\n{text}"),
        Err(e) => e,
    };
    let Some((k, d)) = diagnostic(&e) else {
        panic!("expected a {kind:?} error for:\n{text}\ngot {e:?}");
    };
    assert_eq!(k, kind, "kind for:\n{text}\n{e}");
    assert!(
        d.message.contains(message),
        "message for:\n{text}\nwant `{message}` in:\n{e}"
    );
    assert_eq!(
        (d.line, d.column),
        (line, column),
        "position for:\n{text}\n{e}"
    );
    assert_rendered(d, text);
    assert_eq!(
        e.kind(),
        ErrorKind::Input,
        "input errors exit with status 2"
    );
    d.clone()
}

/// The Eval error of a failed evaluation (exit status 1).
fn eval_error(r: Result<impl std::fmt::Debug, ProblemError>) -> Diagnostic {
    let e = r.expect_err("expected an evaluation error");
    assert_eq!(
        e.kind(),
        ErrorKind::Run,
        "evaluation failures exit with status 1"
    );
    match e {
        ProblemError::Eval(d) => *d,
        other => panic!("expected an evaluation error, got {other:?}"),
    }
}

/// The message of a Usage error (exit status 2).
fn usage_error(r: Result<impl std::fmt::Debug, ProblemError>) -> String {
    match r {
        Err(e @ ProblemError::Usage(_)) => {
            assert_eq!(
                e.kind(),
                ErrorKind::Input,
                "usage errors exit with status 2"
            );
            e.to_string()
        }
        other => panic!("expected a usage error, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------
// 1. Arbitrary text never panics, and errors point inside the text

/// Line and column of every Syntax/Check error lie inside the text, and the error says
/// something other than "internal error". Evaluating a problem that checks fails only
/// with an Eval error.
fn never_panics(text: &str) -> Result<(), TestCaseError> {
    match Problem::from_str(text) {
        Ok(p) => match p.derivatives(&p.start()) {
            Ok(_) | Err(ProblemError::Eval(_)) => Ok(()),
            Err(e) => Err(TestCaseError::fail(format!("{text:?}: unexpected {e:?}"))),
        },
        Err(e) => {
            let Some((_, d)) = diagnostic(&e) else {
                return Err(TestCaseError::fail(format!("{text:?}: unexpected {e:?}")));
            };
            let lines: Vec<&str> = text.split('\n').collect();
            prop_assert!(
                d.line >= 1 && d.line <= lines.len(),
                "{:?}: line {}",
                text,
                d.line
            );
            let width = lines[d.line - 1].chars().count();
            prop_assert!(
                d.column >= 1 && d.column <= width + 1,
                "{:?}: column {}",
                text,
                d.column
            );
            prop_assert!(!d.message.contains("internal"), "{:?}: {}", text, d.message);
            // Rendering must not panic either.
            prop_assert!(!e.to_string().is_empty());
            Ok(())
        }
    }
}

/// The language's own tokens, with the separators that matter (newlines of every kind,
/// `;`, comments, string quotes) and a few wide characters.
const TOKENS: [&str; 67] = [
    "param",
    "var",
    "let",
    "minimize",
    "noise",
    "sd",
    "diag",
    "cov",
    "observe",
    "data",
    "batch",
    "sampling",
    "with-replacement",
    "x",
    "y",
    "a",
    "lamda",
    "w",
    "pts",
    "i",
    "pi",
    "exp",
    "log",
    "sqrt",
    "abs",
    "pow",
    "sum",
    "prod",
    "mean",
    "max",
    "relu",
    "logsumexp",
    "~",
    "normal",
    "uniform",
    "W",
    "d.x",
    "0",
    "1",
    "2.5",
    ".5",
    "1e-3",
    "1e999",
    "6.02E23",
    "+",
    "-",
    "*",
    "/",
    "^",
    "(",
    ")",
    "[",
    "]",
    "=",
    ",",
    "..",
    ".",
    "\n",
    "\r\n",
    "\r",
    "#",
    ";",
    "\"",
    " ",
    "\t",
    "é",
    "\u{1F600}",
];

fn token_soup() -> impl Strategy<Value = String> {
    vec((select(TOKENS.to_vec()), select(vec!["", " "])), 0..48)
        .prop_map(|ts| ts.into_iter().map(|(t, s)| format!("{t}{s}")).collect())
}

/// Token soup that is mostly a valid program: a header of declarations, then soup.
fn almost_valid() -> impl Strategy<Value = String> {
    token_soup().prop_map(|s| format!("param a = 2\nvar x = 0.5, y = -1\nminimize {s}"))
}

proptest! {
    // 512 cases per generator: each is a parse and maybe a check, well under a
    // millisecond, and together they reach every statement rule and error path.
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_strings_never_panic(text in any::<String>()) {
        never_panics(&text)?;
    }

    #[test]
    fn token_soup_never_panics(text in token_soup()) {
        never_panics(&text)?;
    }

    #[test]
    fn almost_valid_programs_never_panic(text in almost_valid()) {
        never_panics(&text)?;
    }

    /// Arbitrary bytes: invalid UTF-8 is a diagnostic at the first bad byte.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in vec(any::<u8>(), 0..64)) {
        match Source::from_bytes("bytes.hasme", bytes.clone()) {
            Ok(source) => {
                let text = source.text().to_string();
                // Same law as for strings, through the named-source entry point.
                match Problem::from_source(source, &Overrides::none()) {
                    Ok(_) => {}
                    Err(_) => never_panics(&text)?,
                }
            }
            Err(d) => {
                let good = std::str::from_utf8(&bytes).map_or_else(|e| e.valid_up_to(), |_| bytes.len());
                let prefix = String::from_utf8_lossy(&bytes[..good]).into_owned();
                let line = prefix.matches('\n').count() + 1;
                let column = prefix.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
                prop_assert_eq!((d.line, d.column), (line, column));
                prop_assert!(d.message.contains("not valid UTF-8"), "{}", d.message);
            }
        }
    }

    /// `--at` strings never panic either.
    #[test]
    fn arbitrary_assignments_never_panic(spec in any::<String>()) {
        let p = Problem::from_str("param a = 2\nvar x, y\nminimize x*y").expect("valid");
        match p.point_from_assignments(&spec) {
            Ok(x) => prop_assert_eq!(x.len(), 2),
            Err(e) => prop_assert!(matches!(e, ProblemError::Usage(_)), "{:?}", e),
        }
    }
}

// ---------------------------------------------------------------------------------------
// 2. Adversarial inputs

#[test]
fn hundred_thousand_nested_parentheses_are_an_error() {
    let n = 100_000;
    let text = format!("var x\nminimize {}x{}", "(".repeat(n), ")".repeat(n));
    let e = on_small_stack(move || Problem::from_str(&text).map(|_| ()));
    let e = e.expect_err("too deep");
    let (kind, d) = diagnostic(&e).expect("a diagnostic");
    assert_eq!(kind, Kind::Syntax);
    assert_eq!(
        d.message,
        format!("brackets nested more than {MAX_NESTING} deep")
    );
    // `minimize ` is 9 characters; the first bracket past the cap is number MAX_NESTING + 1.
    assert_eq!((d.line, d.column), (2, 9 + MAX_NESTING + 1));
    assert!(d.notes.iter().any(|n| n.contains("`let`")), "{d}");
}

#[test]
fn nesting_exactly_at_the_cap_parses_and_one_more_does_not() {
    let nest = |open: &str, close: &str, depth: usize| {
        format!(
            "var x = 1.5\nminimize {}x{}",
            open.repeat(depth),
            close.repeat(depth)
        )
    };
    let results = on_small_stack(move || {
        let at_cap = [nest("(", ")", MAX_NESTING), nest("sin(", ")", MAX_NESTING)]
            .map(|t| Problem::from_str(&t).map(|p| p.value(&p.start()).ok()));
        let over = [
            nest("(", ")", MAX_NESTING + 1),
            nest("sin(", ")", MAX_NESTING + 1),
        ]
        .map(|t| Problem::from_str(&t).err().map(|e| e.to_string()));
        // Square brackets count too: a `noise diag` list holding 63 parentheses is 64 deep.
        let list = |depth: usize| {
            format!(
                "var x\nminimize x\nnoise diag [{}1{}]",
                "(".repeat(depth - 1),
                ")".repeat(depth - 1)
            )
        };
        let lists = [list(MAX_NESTING), list(MAX_NESTING + 1)]
            .map(|t| Problem::from_str(&t).err().map(|e| e.to_string()));
        (at_cap, over, lists)
    });
    let (at_cap, over, lists) = results;
    assert_eq!(at_cap[0].as_ref().ok(), Some(&Some(1.5)), "{at_cap:?}");
    // sin applied 64 times to 1.5: finite, and checks.
    assert!(
        matches!(at_cap[1], Ok(Some(v)) if v.is_finite()),
        "{at_cap:?}"
    );
    for (e, column) in over
        .iter()
        .zip([9 + MAX_NESTING + 1, 9 + 4 * (MAX_NESTING + 1)])
    {
        let e = e.as_deref().expect("one bracket too deep is an error");
        assert!(
            e.contains(&format!("nested more than {MAX_NESTING} deep")),
            "{e}"
        );
        assert!(e.starts_with(&format!("<string>:2:{column}: error")), "{e}");
    }
    assert_eq!(lists[0], None, "64 brackets in a list are fine");
    let e = lists[1]
        .as_deref()
        .expect("65 brackets in a list are too deep");
    // `noise diag ` is 11 characters, so bracket number k (the `[` is the first) sits at
    // column 11 + k; number MAX_NESTING + 1 is the first one too deep.
    assert!(
        e.starts_with(&format!("<string>:3:{}: error", 11 + MAX_NESTING + 1)),
        "{e}"
    );
}

/// A megabyte-long flat chain is not deep: it checks, and its value is n·x.
#[test]
fn megabyte_flat_sum_succeeds() {
    let n: u32 = 1 << 18; // "x + " is 4 bytes: 2^18 terms ≈ 1 MiB of text
    let text = format!("var x = 0.5\nminimize {}x", "x + ".repeat(n as usize - 1));
    assert!(text.len() > 1_000_000);
    let (value, gradient, hessian) = on_small_stack(move || {
        let p = Problem::from_str(&text).expect("a flat chain checks");
        let d = p.objective_derivatives(&p.start()).expect("finite");
        (d.value, d.gradient[0], d.hessian[(0, 0)])
    });
    // Exact: every partial sum k·0.5 ≤ 2^17 is a representable float.
    assert_eq!(value, f64::from(n) * 0.5);
    assert_eq!(gradient, f64::from(n));
    assert_eq!(hessian, 0.0);
}

#[test]
fn hundred_thousand_unary_minuses_succeed() {
    let values = on_small_stack(|| {
        [100_000usize, 100_001].map(|n| {
            let text = format!("var x = 3\nminimize {}x", "- ".repeat(n));
            let p = Problem::from_str(&text).expect("a flat prefix chain checks");
            let d = p.objective_derivatives(&p.start()).expect("finite");
            (d.value, d.gradient[0])
        })
    });
    // Exact: negation is exact.
    assert_eq!(values, [(3.0, 1.0), (-3.0, -1.0)]);
}

#[test]
fn long_power_chain_parses_right_associative_without_overflow() {
    // 50 000 levels: far past any recursion a 2 MiB stack could hold, and half the time
    // of 100 000 (parsing takes ~50 µs per operator in debug builds).
    let n = 50_000;
    let text = format!("{}x", "x^".repeat(n - 1));
    let (len, root_lhs, root_rhs, last_name) = on_small_stack(move || {
        let e = parse_expr(&Source::new("chain", text)).expect("a flat chain parses");
        let root = e.node(e.root()).kind.clone();
        let NodeKind::Binary { lhs, rhs, .. } = root else {
            panic!("root is {root:?}")
        };
        let name_at = |i: u32| matches!(&e.node(i).kind, NodeKind::Name(x) if x == "x");
        (
            e.nodes.len(),
            name_at(lhs),
            e.node(rhs).kind.clone(),
            name_at((n - 1) as u32),
        )
    });
    assert_eq!(len, 2 * n - 1, "n names and n − 1 operators");
    // Right associative: x^(x^(…)): the root's left operand is the first `x`, its right
    // operand another power; post-order puts all n names before the first operator.
    assert!(root_lhs);
    assert!(matches!(root_rhs, NodeKind::Binary { op: BinOp::Pow, .. }));
    assert!(last_name);
    // And it checks and evaluates: x↑↑n at 1 is 1 with derivative 1
    // (f_n' = f_n·(f_{n−1}' log x + f_{n−1}/x) = 1 at x = 1).
    let d = on_small_stack(move || {
        let text = format!("var x = 1\nminimize {}x", "x^".repeat(n - 1));
        let p = Problem::from_str(&text).expect("checks");
        p.objective_derivatives(&p.start())
            .map(|d| (d.value, d.gradient[0]))
    });
    // Exact: log 1 = 0 and exp 0 = 1 exactly.
    assert_eq!(d.ok(), Some((1.0, 1.0)));
}

#[test]
fn invalid_utf8_is_an_error_with_its_position() {
    let bytes = b"var x\nminimize x + \xff\n".to_vec();
    let d = Source::from_bytes("bad.hasme", bytes.clone()).expect_err("not UTF-8");
    assert_eq!((d.line, d.column), (2, 14));
    assert!(
        d.message
            .contains("not valid UTF-8 (bad byte at offset 19)"),
        "{d}"
    );
    assert!(d.to_string().starts_with("bad.hasme:2:14: error"), "{d}");

    // Through a file: a Syntax error, exit status 2. Missing files are Io errors.
    let dir = std::env::temp_dir().join(format!("hasme-language-errors-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("bad.hasme");
    std::fs::write(&path, &bytes).expect("write");
    let e = Problem::from_file(&path, &Overrides::none()).expect_err("not UTF-8");
    assert!(
        matches!(&e, ProblemError::Syntax(d) if (d.line, d.column) == (2, 14)),
        "{e:?}"
    );
    assert_eq!(e.kind(), ErrorKind::Input);
    let e = Problem::from_file(dir.join("missing.hasme"), &Overrides::none()).expect_err("no file");
    assert!(matches!(e, ProblemError::Io { .. }), "{e:?}");
    assert_eq!(e.kind(), ErrorKind::Input);
    std::fs::remove_dir_all(&dir).expect("clean up");
}

/// A comment that ends in a lone carriage return (old Mac line ending) must not hide
/// brackets from the nesting cap. The reader's comment skipping runs to `\n`, but the
/// grammar's COMMENT stops at any NEWLINE, `\r` included, so the brackets after the
/// `\r` are parsed without being counted.
#[test]
fn comment_ending_in_carriage_return_keeps_the_nesting_cap() {
    let depth = MAX_NESTING + 1;
    let text = format!(
        "var x\nminimize # note\r{}x{}",
        "(".repeat(depth),
        ")".repeat(depth)
    );
    let r = on_small_stack(move || {
        Problem::from_str(&text)
            .map(|_| ())
            .map_err(|e| e.to_string())
    });
    let e = r.expect_err("65 nested brackets are over the cap, comment or not");
    assert!(
        e.contains(&format!("nested more than {MAX_NESTING} deep")),
        "{e}"
    );
}

/// The same hole, deep enough to overflow a 2 MiB stack while building the tree, had the
/// nesting cap not applied after such a comment.
#[test]
fn comment_ending_in_carriage_return_cannot_overflow_the_stack() {
    let depth = 500;
    let text = format!(
        "var x\nminimize # note\r{}x{}",
        "(".repeat(depth),
        ")".repeat(depth)
    );
    let r = on_small_stack(move || {
        Problem::from_str(&text)
            .map(|_| ())
            .map_err(|e| e.to_string())
    });
    assert!(r.is_err(), "500 nested brackets are over the cap");
}

// ---------------------------------------------------------------------------------------
// 3. Each error class: kind, position, text

#[test]
fn unknown_names_suggest_the_closest() {
    expect_error(
        "param lambda = 1; var x; minimize lamda*x",
        Kind::Check,
        1,
        35,
        "unknown name `lamda`; did you mean `lambda`?",
    );
    let d = expect_error(
        "var x\nminimize zzz*x",
        Kind::Check,
        2,
        10,
        "unknown name `zzz`",
    );
    assert!(!d.message.contains("did you mean"), "nothing close: {d}");
    expect_error(
        "var x\nminimize exp*x",
        Kind::Check,
        2,
        10,
        "`exp` is a function; call it as `exp(…)`",
    );
}

#[test]
fn duplicate_names_point_at_the_first_definition() {
    let d = expect_error(
        "var x\nparam x = 2\nminimize x",
        Kind::Check,
        2,
        7,
        "`x` is defined twice",
    );
    assert_eq!(d.notes, vec!["first defined at 1:5".to_string()]);
    let d = expect_error(
        "var x, y, x\nminimize x",
        Kind::Check,
        1,
        11,
        "`x` is defined twice",
    );
    assert_eq!(d.notes, vec!["first defined at 1:5".to_string()]);
    let d = expect_error(
        "var x\nminimize x\nobserve o = x\nobserve o = x^2",
        Kind::Check,
        4,
        9,
        "observable `o` is defined twice",
    );
    assert_eq!(d.notes, vec!["first defined at 3:9".to_string()]);
}

#[test]
fn use_before_definition() {
    let d = expect_error(
        "var x\nminimize x*a\nparam a = 1",
        Kind::Check,
        2,
        12,
        "`a` is used before it is defined",
    );
    assert_eq!(d.notes, vec!["`a` is defined at 3:7".to_string()]);
    expect_error(
        "var x\nlet r = s + x\nlet s = x\nminimize r",
        Kind::Check,
        2,
        9,
        "`s` is used before it is defined",
    );
}

/// A param (or start value) naming a param defined further down is a use before
/// definition too. Params are resolved while the file is read, so today the later name
/// is not known yet and the message says "unknown name `b`" although `b` is defined on
/// the next line.
#[test]
fn forward_reference_to_a_param_is_a_use_before_definition() {
    expect_error(
        "param a = b\nparam b = 1\nvar x\nminimize x",
        Kind::Check,
        1,
        11,
        "`b` is used before it is defined",
    );
}

#[test]
fn reserved_names_cannot_be_defined() {
    expect_error(
        "param exp = 1\nvar x\nminimize x",
        Kind::Check,
        1,
        7,
        "`exp` is reserved (a built-in function) and cannot be defined",
    );
    expect_error(
        "var pi\nminimize pi",
        Kind::Check,
        1,
        5,
        "`pi` is reserved (the constant π)",
    );
    expect_error(
        "var x\nlet minimize = x\nminimize x",
        Kind::Check,
        2,
        5,
        "`minimize` is reserved (a statement keyword)",
    );
    expect_error(
        "var pow\nminimize 1",
        Kind::Check,
        1,
        5,
        "`pow` is reserved",
    );
}

#[test]
fn unknown_functions_and_wrong_arity() {
    expect_error(
        "var x\nminimize sine(x)",
        Kind::Check,
        2,
        10,
        "unknown function `sine`; did you mean `sin`?",
    );
    expect_error(
        "var x\nminimize exp(x, 2)",
        Kind::Check,
        2,
        10,
        "`exp` takes 1 argument, found 2",
    );
    expect_error(
        "var x\nminimize pow(x)",
        Kind::Check,
        2,
        10,
        "`pow` takes 2 arguments, found 1",
    );
    expect_error(
        "var x\nminimize sin()",
        Kind::Check,
        2,
        10,
        "`sin` takes 1 argument, found 0",
    );
}

#[test]
fn minimize_must_appear_exactly_once_and_noise_at_most_once() {
    // The missing statement is reported at the end of the file.
    expect_error(
        "var x = 1\nnoise sd 0.1\n",
        Kind::Check,
        3,
        1,
        "the file has no `minimize` statement",
    );
    let d = expect_error(
        "var x\nminimize x\nminimize x^2",
        Kind::Check,
        3,
        1,
        "more than one `minimize` statement",
    );
    assert_eq!(d.notes, vec!["the first is at 2:1".to_string()]);
    let d = expect_error(
        "var x\nminimize x\nnoise sd 1\nnoise diag [1]",
        Kind::Check,
        4,
        1,
        "more than one `noise` statement",
    );
    assert_eq!(d.notes, vec!["the first is at 3:1".to_string()]);
}

#[test]
fn noise_shapes_and_constant_covariances_are_checked() {
    expect_error(
        "var x, y\nminimize x\nnoise diag [1]",
        Kind::Check,
        3,
        12,
        "`noise diag` needs 2 entries (one variance per variable), found 1",
    );
    expect_error(
        "var x, y\nminimize x\nnoise cov [[1, 0]]",
        Kind::Check,
        3,
        11,
        "`noise cov` needs a 2×2 matrix, found 1 rows",
    );
    expect_error(
        "var x, y\nminimize x\nnoise cov [[1, 0], [0]]",
        Kind::Check,
        3,
        20,
        "row 2 of `noise cov` has 1 entries; the matrix must be 2×2",
    );
    expect_error(
        "var x, y\nminimize x\nnoise cov [[1, 0.5], [0.4, 1]]",
        Kind::Check,
        3,
        16,
        "the covariance is not symmetric: entry (1, 2) = 0.5 but entry (2, 1) = 0.4",
    );
    // Eigenvalues of [[1, 2], [2, 1]] are 3 and −1.
    expect_error(
        "var x, y\nminimize x\nnoise cov [[1, 2], [2, 1]]",
        Kind::Check,
        3,
        11,
        "the covariance is not positive semidefinite (smallest eigenvalue -1e0)",
    );
    expect_error(
        "var x, y\nminimize x\nnoise diag [1, -0.5]",
        Kind::Check,
        3,
        16,
        "a variance must be ≥ 0, found -0.5",
    );
    // Entries written differently but equal up to an ulp are symmetric (models::SYMMETRY_TOLERANCE).
    Problem::from_str("var x, y\nminimize x\nnoise cov [[1, 0.3], [0.1*3, 1]]")
        .expect("0.3 and 0.1*3 differ by an ulp only");
    // The tolerance is the models' (1e-10 relative): what `Local::new` would symmetrise
    // as round-off is accepted, anything larger is an error.
    Problem::from_str("var x, y\nminimize x\nnoise cov [[1, 0.3], [0.300000000003, 1]]")
        .expect("a relative asymmetry of 1e-11 is round-off");
    expect_error(
        "var x, y\nminimize x\nnoise cov [[1, 0.3], [0.30000003, 1]]",
        Kind::Check,
        3,
        16,
        "the covariance is not symmetric: entry (1, 2) = 0.3 but entry (2, 1) = 0.30000003",
    );
}

#[test]
fn params_and_start_values_must_be_constants() {
    expect_error(
        "var x\nparam a = 2*x\nminimize a*x",
        Kind::Check,
        2,
        13,
        "a param value must be a constant, but `x` is a variable",
    );
    expect_error(
        "var x\nlet r = x^2\nparam a = r\nminimize a*x",
        Kind::Check,
        3,
        11,
        "a param value must be a constant, but `r` is a `let`",
    );
    expect_error(
        "var x\nvar y = x\nminimize y",
        Kind::Check,
        2,
        9,
        "a start value must be a constant, but `x` is a variable",
    );
}

/// A start value naming a variable of the same `var` statement is the same mistake as in
/// a later statement, but it is reported as a use before definition, with a note that
/// contradicts it (`x` "is defined at 1:5", before the use at 1:16).
#[test]
fn start_value_naming_a_variable_of_the_same_statement_must_be_a_constant() {
    expect_error(
        "var x = 1, y = x\nminimize y",
        Kind::Check,
        1,
        16,
        "a start value must be a constant, but `x` is a variable",
    );
}

#[test]
fn non_finite_constants_are_errors() {
    expect_error(
        "param a = log(0)\nvar x\nminimize a*x",
        Kind::Check,
        1,
        11,
        "`log(0)` is not a finite number (it evaluates to -inf)",
    );
    expect_error(
        "var x\nminimize x\nnoise sd 1/0",
        Kind::Check,
        3,
        10,
        "`1/0` is not a finite number (it evaluates to inf)",
    );
    expect_error(
        "var x\nminimize x/0",
        Kind::Check,
        2,
        10,
        "`x/0` is not a finite number",
    );
    expect_error(
        "var x\nminimize x\nnoise sd 1e200",
        Kind::Check,
        3,
        10,
        "the noise variance overflows",
    );
}

#[test]
fn syntax_errors_say_what_was_expected() {
    expect_error(
        "var x\nminimize x *",
        Kind::Syntax,
        2,
        13,
        "expected an expression after `*`, found the end of the file",
    );
    expect_error(
        "var x\nminimize x +* 2",
        Kind::Syntax,
        2,
        13,
        "expected an expression after `+`, found `*`",
    );
    let d = expect_error("var x\nminimize x y", Kind::Syntax, 2, 12, "found `y`");
    assert!(d.message.contains("an operator"), "{d}");
    let d = expect_error(
        "var x\nminimize (x + 1",
        Kind::Syntax,
        2,
        16,
        "found the end of the file",
    );
    assert!(d.message.contains("`)`"), "{d}");
    assert_eq!(
        d.notes,
        vec!["the bracket `(` opened at 2:10 is never closed".to_string()]
    );
    // A bracket continues the statement over lines; the note still finds the opening.
    let d = expect_error(
        "var x\nminimize 2*(x +\n  1",
        Kind::Syntax,
        3,
        4,
        "found the end of the file",
    );
    assert_eq!(
        d.notes,
        vec!["the bracket `(` opened at 2:12 is never closed".to_string()]
    );
    expect_error("var x, \nminimize x", Kind::Syntax, 1, 8, "expected a name");
    expect_error(
        "var x\nminimize x\nnoise x",
        Kind::Syntax,
        3,
        7,
        "expected `sd`, `diag` or `cov`",
    );
    expect_error(
        "var x\nminimise x",
        Kind::Syntax,
        2,
        1,
        "a statement (`param`, `var`, `let`, `minimize`, `noise`, `observe`, …), found `minimise`",
    );
}

/// The first statement of a file gets the same description as any other; today it gets
/// "expected something else, found `minimise`", which says nothing of what was expected.
#[test]
fn a_bad_first_statement_says_a_statement_was_expected() {
    expect_error(
        "minimise x\nvar x",
        Kind::Syntax,
        1,
        1,
        "expected a statement (`param`, `var`, `let`, `minimize`, `noise`, `observe`, …)",
    );
}

#[test]
fn number_too_large() {
    let d = expect_error(
        "var x\nminimize 1e999*x",
        Kind::Syntax,
        2,
        10,
        "the number `1e999` is too large for a 64-bit float",
    );
    assert_eq!(d.caret_len, 5, "the caret covers the number");
}

// Finite sums (`data`, `mean`, `batch`, `sampling`) have their errors in
// tests/finite_sums.rs.

/// Vector variables and `sum`/`prod` (once unsupported, now available): their errors
/// name the index and the loop value.
#[test]
fn vector_errors_name_the_index() {
    let d = expect_error(
        "var w[3]\nminimize sum(i = 1..3, w[i]*w[i+1])",
        Kind::Check,
        2,
        31,
        "index 4 is out of range for the variable vector `w` (valid: 1..3)",
    );
    assert_eq!(d.notes, vec!["when i = 3".to_string()]);
    expect_error(
        "var w[2.5]\nminimize 1",
        Kind::Check,
        1,
        7,
        "a vector length must be an integer",
    );
    expect_error(
        "var w[3]\nminimize w",
        Kind::Check,
        2,
        10,
        "`w` is a vector of 3 variables; index it",
    );
    expect_error(
        "var x\nminimize x[1]",
        Kind::Check,
        2,
        10,
        "`x` is not a vector, so it cannot be indexed",
    );
    expect_error(
        "param a[2] = [1, 2, 3]\nvar x\nminimize x",
        Kind::Check,
        1,
        14,
        "`a` is declared with 2 entries but the list has 3",
    );
}

/// Matrices: the number of indices and lengths, indices against the shape, and param
/// literals against their declared shape.
#[test]
fn matrix_errors_name_the_index_and_the_shape() {
    let m = "var W[2, 3]\n";
    // A third index, at its place.
    expect_error(
        &format!("{m}minimize W[1, 2, 1]"),
        Kind::Check,
        2,
        18,
        "at most two indices, `W[i]` or `W[i, j]`, found 3",
    );
    // Out of range, by axis, with the loop index's value.
    let d = expect_error(
        &format!("{m}minimize sum(i = 1..3, W[i, 1])"),
        Kind::Check,
        2,
        26,
        "row index 3 is out of range for the 2×3 variable matrix `W` (valid: 1..2)",
    );
    assert_eq!(d.notes, vec!["when i = 3".to_string()]);
    expect_error(
        &format!("{m}minimize W[1, 4]"),
        Kind::Check,
        2,
        15,
        "column index 4 is out of range for the 2×3 variable matrix `W` (valid: 1..3)",
    );
    expect_error(
        &format!("{m}minimize W[0, 1]"),
        Kind::Check,
        2,
        12,
        "row index 0 is out of range",
    );
    // The wrong number of indices: a matrix with one, a vector with two.
    expect_error(
        &format!("{m}minimize 1 + W[2]"),
        Kind::Check,
        2,
        14,
        "`W` is a 2×3 variable matrix: it takes two indices, `W[i, j]`",
    );
    expect_error(
        "var w[3]\nminimize w[1, 1]",
        Kind::Check,
        2,
        15,
        "`w` is a variable vector of 3 entries: it takes one index, `w[i]`",
    );
    expect_error(
        "param A[2, 2] = 1\nvar x\nminimize x*A[3]",
        Kind::Check,
        3,
        12,
        "`A` is a 2×2 param matrix: it takes two indices",
    );
    expect_error(
        &format!("{m}minimize W"),
        Kind::Check,
        2,
        10,
        "`W` is a 2×3 matrix of variables; index it, e.g. `W[1, 1]`",
    );
    expect_error(
        "var x\nminimize x[1, 1]",
        Kind::Check,
        2,
        10,
        "`x` is not a vector, so it cannot be indexed",
    );
    // Declarations: a third length, a bad length.
    expect_error(
        "var W[2, 2, 2]\nminimize 1",
        Kind::Check,
        1,
        13,
        "at most two lengths: a vector `[n]` or a matrix `[rows, cols]`, found 3",
    );
    expect_error(
        "var W[2, 0.5]\nminimize 1",
        Kind::Check,
        1,
        10,
        "a number of columns must be an integer from 1 to 20000, found 0.5",
    );
    expect_error(
        "var W[200, 101]\nminimize 1",
        Kind::Check,
        1,
        6,
        "more than 20000 variables in all",
    );
    // Param literals against the declared shape.
    expect_error(
        "param A[2, 2] = [[1, 2], [3]]\nvar x\nminimize x",
        Kind::Check,
        1,
        26,
        "row 2 of `A` has 1 entries; `A` is declared 2×2",
    );
    expect_error(
        "param A[2, 2] = [[1, 2]]\nvar x\nminimize x",
        Kind::Check,
        1,
        17,
        "`A` is declared 2×2 but the matrix has 1 rows",
    );
    expect_error(
        "param A[2, 2] = [1, 2, 3, 4]\nvar x\nminimize x",
        Kind::Check,
        1,
        17,
        "`A` is a 2×2 matrix: give its rows",
    );
    expect_error(
        "param a[2] = [[1, 2]]\nvar x\nminimize x",
        Kind::Check,
        1,
        14,
        "`a` is a vector of 2 entries: give a list",
    );
    expect_error(
        "param a = [[1, 2]]\nvar x\nminimize x",
        Kind::Check,
        1,
        11,
        "a matrix needs a matrix param: `param a[1, 2] = [[…], …]`",
    );
    expect_error(
        "param A[2000, 2000] = 0\nvar x\nminimize x",
        Kind::Check,
        1,
        8,
        "more than the 1000000 a param may hold",
    );
}

/// Matrix params are read, overridden entry by entry, and named in `--set` errors.
#[test]
fn matrix_params_take_overrides_by_entry() {
    let text = "param A[2, 2] = [[1, 2], [3, 4]]\nvar x\nminimize A[2, 1]*x";
    let p = Problem::from_source(
        Source::new("m.hasme", text),
        &Overrides::none().set("A[2,1]", 7.0),
    )
    .unwrap();
    assert_eq!(p.param_matrices()[0].values, [1.0, 2.0, 7.0, 4.0]);
    let p = Problem::from_source(
        Source::new("m.hasme", text),
        &Overrides::none().set("A", 5.0),
    )
    .unwrap();
    assert_eq!(p.param_matrices()[0].values, [5.0; 4]);
    let m = usage_error(Problem::from_source(
        Source::new("m.hasme", text),
        &Overrides::none().set("A[3,1]", 1.0),
    ));
    assert!(m.contains("`A[3,1]` is not a param"), "{m}");
}

/// Random starts: parameters checked at their place, `~` refused on a param, and only
/// `normal` and `uniform` known.
#[test]
fn random_start_errors_are_at_their_place() {
    expect_error(
        "var w[3] ~ normal(0, -1)\nminimize 1",
        Kind::Check,
        1,
        22,
        "the standard deviation of `normal(M, S)` must be ≥ 0, found -1",
    );
    expect_error(
        "var a = 1, w ~ uniform(2, 2)\nminimize a",
        Kind::Check,
        1,
        16,
        "`uniform(A, B)` needs A < B, found A = 2 and B = 2",
    );
    expect_error(
        "var x\nvar w ~ normal(x, 1)\nminimize x",
        Kind::Check,
        2,
        16,
        "the mean of `normal` must be a constant, but `x` is a variable",
    );
    expect_error(
        "var w ~ normal(1e308, 1e308)\nminimize w",
        Kind::Check,
        1,
        9,
        "its parameters are too large",
    );
    expect_error(
        "param s ~ normal(0, 1)\nvar x\nminimize x",
        Kind::Syntax,
        1,
        9,
        "a param is a constant, so it cannot be drawn at random",
    );
    expect_error(
        "var w ~ gamma(1, 2)\nminimize w",
        Kind::Syntax,
        1,
        9,
        "expected `normal(M, S)` or `uniform(A, B)`, found `gamma`",
    );
    expect_error(
        "var w ~ normal(1)\nminimize w",
        Kind::Syntax,
        1,
        17,
        "expected",
    );
}

/// Indexed columns: a missing column at the place naming it, with a suggestion and the
/// loop index; only inside the finite sum; one index.
#[test]
fn indexed_column_errors_name_the_column() {
    let data = "data d = [[x1, x2, x3, y], [1, 2, 3, 4], [0, 1, 0, 1]]\nvar w[4]\n";
    let d = expect_error(
        &format!("{data}minimize mean(d, (sum(i = 1..4, w[i]*d.x[i]) - d.y)^2)"),
        Kind::Check,
        3,
        40,
        "`d` has no column `x4`; did you mean `x1`? (its columns: x1, x2, x3, y)",
    );
    assert_eq!(d.notes, vec!["when i = 4".to_string()]);
    expect_error(
        &format!("{data}minimize mean(d, w[1]*d.x[-1])"),
        Kind::Check,
        3,
        27,
        "a column index must be ≥ 0",
    );
    expect_error(
        &format!("{data}minimize mean(d, w[1]*d.x[w[2]])"),
        Kind::Check,
        3,
        27,
        "an index must be a constant",
    );
    expect_error(
        &format!("{data}minimize mean(d, w[1]*d.y) + d.x[1]"),
        Kind::Check,
        3,
        30,
        "`d.x[…]` reads a data column outside `mean(…)`",
    );
    expect_error(
        &format!("{data}minimize mean(d, w[1]*d.x[1, 2])"),
        Kind::Syntax,
        3,
        30,
        "a column takes one index: `d.x[i]` reads the column `x` followed by the digits of i",
    );
    // And they read the right columns.
    let p = Problem::from_str(&format!(
        "{data}minimize mean(d, (sum(i = 1..3, w[i]*d.x[i]) + w[4] - d.y)^2)"
    ))
    .unwrap();
    let fs = p.finite_sum().unwrap();
    assert_eq!(fs.columns, ["y", "x1", "x2", "x3"]);
    // f at w = (1, 0, 0, 0): rows (1 − 4)², (0 − 1)², mean 5.
    assert_eq!(p.value(&[1.0, 0.0, 0.0, 0.0]).unwrap(), 5.0);
}

/// The new functions: arity, `logsumexp` used as a call, an empty range.
#[test]
fn function_errors_for_max_min_and_logsumexp() {
    expect_error(
        "var x\nminimize max(x)",
        Kind::Check,
        2,
        10,
        "`max` takes 2 arguments, found 1",
    );
    expect_error(
        "var x\nminimize relu(x, 1)",
        Kind::Check,
        2,
        10,
        "`relu` takes 1 argument, found 2",
    );
    expect_error(
        "var x\nminimize logsumexp(x, 1)",
        Kind::Check,
        2,
        10,
        "`logsumexp` needs an index range: `logsumexp(i = 1..n, EXPR)`",
    );
    expect_error(
        "var x\nminimize x + logsumexp(k = 2..1, k*x)",
        Kind::Check,
        2,
        14,
        "`logsumexp` over the empty range 2..1 is log 0 = −∞",
    );
    expect_error(
        "var x\nminimize maxx(x, 1)",
        Kind::Check,
        2,
        10,
        "unknown function `maxx`; did you mean `max`?",
    );
    expect_error(
        "var max = 1\nminimize max",
        Kind::Check,
        1,
        5,
        "`max` is reserved (a built-in function)",
    );
}

#[test]
fn set_errors_are_usage_errors_with_suggestions() {
    let text = "param lambda = 1\nvar x\nminimize lambda*x";
    let source = || Source::new("f.hasme", text);
    let m = usage_error(Problem::from_source(
        source(),
        &Overrides::none().set("lamda", 2.0),
    ));
    assert_eq!(
        m,
        "--set: `lamda` is not a param of f.hasme; did you mean `lambda`?"
    );
    let m = usage_error(Problem::from_source(
        Source::new("g.hasme", "var x\nminimize x"),
        &Overrides::none().set("a", 1.0),
    ));
    assert!(m.contains("(the file declares no params)"), "{m}");
    for (item, want) in [
        ("lambda", "expected NAME=VALUE"),
        ("lambda=abc", "`abc` is not a number"),
        ("lambda=inf", "the value must be finite"),
        ("lambda=NaN", "the value must be finite"),
    ] {
        let m = usage_error(Overrides::parse(&[item]));
        assert!(m.contains(want), "{item}: {m}");
    }
}

#[test]
fn at_errors_are_usage_errors_with_suggestions() {
    let p = Problem::from_str("param a = 2\nvar alpha = 1, beta = 2\nminimize alpha*beta")
        .expect("valid");
    for (spec, want) in [
        (
            "alpa=1",
            "--at: `alpa` is not a variable; did you mean `alpha`?",
        ),
        ("alpha", "--at `alpha`: expected NAME=VALUE"),
        ("alpha=abc", "--at `alpha=abc`: unknown name `abc`"),
        ("alpha=", "--at `alpha=`: expected an expression"),
        ("alpha=log(0)", "`log(0)` is not a finite number"),
        ("alpha=beta", "unknown name `beta`"),
    ] {
        let m = usage_error(p.point_from_assignments(spec));
        assert!(m.contains(want), "{spec}: {m}");
    }
    // An empty spec is the start point.
    assert_eq!(p.point_from_assignments("").expect("valid"), vec![1.0, 2.0]);
    let x = p
        .point_from_assignments("beta = pi/4, alpha=2*a")
        .expect("valid");
    assert_eq!(x, vec![4.0, std::f64::consts::FRAC_PI_4]);
    // A point of the wrong size, or not finite, is a usage error too.
    usage_error(p.value(&[1.0]));
    usage_error(p.value(&[1.0, f64::NAN]));
}

// ---------------------------------------------------------------------------------------
// Evaluation errors

#[test]
fn log_of_a_negative_number_names_the_expression_and_the_point() {
    let p = Problem::from_str("var x\nminimize log(x)").expect("valid");
    let d = eval_error(p.value(&[-1.0]));
    assert_eq!(d.message, "`log(x)` evaluates to NaN at (x = -1)");
    assert_eq!((d.line, d.column), (2, 10));
    assert_rendered(&d, "var x\nminimize log(x)");
    eval_error(p.derivatives(&[-1.0]));
}

#[test]
fn sqrt_at_zero_has_a_non_finite_derivative() {
    let p = Problem::from_str("var x\nminimize sqrt(x)").expect("valid");
    assert_eq!(p.value(&[0.0]).ok(), Some(0.0), "the value itself is fine");
    let d = eval_error(p.objective_derivatives(&[0.0]));
    assert_eq!(
        d.message,
        "a derivative of `sqrt(x)` is not finite at (x = 0)"
    );
    assert_eq!((d.line, d.column), (2, 10));
}

/// `x^0.5` at 0 is the same function as `sqrt(x)`: its value is 0 and its derivative is
/// what is not finite. Today the dual `powf` computes 0^{−2.5}·0³ and reports the value
/// itself as NaN.
#[test]
fn real_power_at_zero_reports_the_derivative_not_the_value() {
    let p = Problem::from_str("var x\nminimize x^0.5").expect("valid");
    assert_eq!(p.value(&[0.0]).ok(), Some(0.0));
    let d = eval_error(p.objective_derivatives(&[0.0]));
    assert_eq!(
        d.message,
        "a derivative of `x^0.5` is not finite at (x = 0)"
    );
}

#[test]
fn state_dependent_covariance_is_checked_where_evaluated() {
    let text = "var x, y\nminimize x\nnoise cov [[1, x], [x, 1]]";
    let p = Problem::from_str(text).expect("valid");
    assert!(p.noise_cov(&[0.5, 0.0]).is_ok(), "PSD for |x| ≤ 1");
    // Eigenvalues 1 ± x: at x = 2 the smallest is −1.
    let d = eval_error(p.noise_cov(&[2.0, 0.0]));
    assert_eq!(
        d.message,
        "Σ(x) is not positive semidefinite at (x = 2, y = 0): smallest eigenvalue -1e0"
    );
    assert_eq!((d.line, d.column), (3, 1));
    assert_rendered(&d, text);
    eval_error(p.derivatives(&[2.0, 0.0]));

    let text = "var x, y\nminimize x\nnoise cov [[1, x], [2*x, 1]]";
    let p = Problem::from_str(text).expect("symmetry can only be checked at run time");
    assert!(p.noise_cov(&[0.0, 0.0]).is_ok(), "symmetric at x = 0");
    let d = eval_error(p.noise_cov(&[0.5, 0.0]));
    assert_eq!(
        d.message,
        "Σ(x) is not symmetric at (x = 0.5, y = 0): entry (1, 2) = 0.5 but entry (2, 1) = 1"
    );
    let p = Problem::from_str("var x\nminimize x\nnoise diag [x]").expect("valid");
    let d = eval_error(p.noise_cov(&[-1.0]));
    assert!(
        d.message.contains("not positive semidefinite at (x = -1)"),
        "{d}"
    );
}

/// The quoted expression is the source text of the failing operation. A parenthesised
/// operand must be quoted with its parentheses: today the span of `(a)^b` starts inside
/// the bracket and the message quotes `x + 1)^0.5`.
#[test]
fn parenthesised_expressions_are_quoted_whole() {
    let p = Problem::from_str("var x\nminimize (x + 1)^0.5").expect("valid");
    let d = eval_error(p.value(&[-2.0]));
    assert_eq!(d.message, "`(x + 1)^0.5` evaluates to NaN at (x = -2)");
    assert_eq!((d.line, d.column), (2, 10));
    expect_error(
        "var x\nminimize (-8)^(1/3) + x",
        Kind::Check,
        2,
        10,
        "`(-8)^(1/3)` is not a finite number",
    );
}

/// Default observables have no source text; an overflow in `norm2` must still name it.
/// Today the message quotes an empty expression ("`` evaluates to inf") at 1:1.
#[test]
fn overflow_in_a_default_observable_names_it() {
    let p = Problem::from_str("var x\nminimize x").expect("valid");
    let d = eval_error(p.observables(&[1e200]));
    assert!(d.message.contains("norm2"), "{d}");
}

#[test]
fn error_kinds() {
    let syntax = Problem::from_str("var x\nminimize x *").expect_err("syntax");
    let check = Problem::from_str("var x\nminimize y").expect_err("check");
    let usage = Overrides::parse(&["a"]).expect_err("usage");
    let p = Problem::from_str("var x\nminimize log(x)").expect("valid");
    let eval = p.value(&[-1.0]).expect_err("eval");
    assert!(matches!(syntax, ProblemError::Syntax(_)));
    assert!(matches!(check, ProblemError::Check(_)));
    assert_eq!(
        [syntax.kind(), check.kind(), usage.kind(), eval.kind()],
        [
            ErrorKind::Input,
            ErrorKind::Input,
            ErrorKind::Input,
            ErrorKind::Run
        ]
    );
}

// ---------------------------------------------------------------------------------------
// Expressions compiled in a checked problem's scope (`--when`)

#[test]
fn expressions_are_checked_in_the_files_scope_and_located_in_their_own_text() {
    let file = "param r = 2\nvar x = 0.5, y\nlet d2 = x^2 + y^2\nlet q = log(x)\nminimize x*y";
    let p = Problem::from_source(
        Source::new("f.hasme", file),
        &Overrides::none().set("r", 3.0),
    )
    .expect("valid");
    // Params (with overrides), variables and lets are all visible.
    let e = p
        .compile_expression("--when", "d2 - r^2 + q")
        .expect("valid");
    assert_eq!(e.text(), "d2 - r^2 + q");
    assert_eq!(e.value(&[1.0, 2.0]).expect("finite"), 5.0 - 9.0);
    // Check errors point into the expression, under its name.
    for (text, column, message) in [
        ("d3 - 1", 1, "unknown name `d3`; did you mean `d2`?"),
        (
            "x + y[1]",
            5,
            "`y` is not a vector, so it cannot be indexed",
        ),
        ("2*exp(1000)", 3, "`exp(1000)` is not a finite number"),
        (
            "mean(t, x)",
            1,
            "`mean(…)` may only appear in the `minimize` statement",
        ),
        ("x + t.a", 5, "`t.a` reads a data column outside `mean(…)`"),
    ] {
        let err = p.compile_expression("--when", text).expect_err(text);
        let (kind, d) = diagnostic(&err).expect("a diagnostic");
        assert_eq!(kind, Kind::Check, "{text}");
        assert_eq!(
            (d.file.as_str(), d.line, d.column),
            ("--when", 1, column),
            "{text}: {d}"
        );
        assert!(d.message.contains(message), "{text}: {d}");
        assert_rendered(d, text);
    }
    let err = p.compile_expression("--when", "y -").expect_err("syntax");
    let (kind, d) = diagnostic(&err).expect("a diagnostic");
    assert_eq!((kind, d.line, d.column), (Kind::Syntax, 1, 4));
    // An evaluation error in the expression is located there; in a `let` it reads, in
    // the file.
    let d = eval_error(
        p.compile_expression("--when", "1 + sqrt(y)")
            .expect("valid")
            .value(&[1.0, -1.0]),
    );
    assert_eq!((d.file.as_str(), d.line, d.column), ("--when", 1, 5), "{d}");
    assert_eq!(d.message, "`sqrt(y)` evaluates to NaN at (x = 1, y = -1)");
    assert_rendered(&d, "1 + sqrt(y)");
    let d = eval_error(e.value(&[-1.0, 0.0]));
    assert_eq!(
        (d.file.as_str(), d.line, d.column),
        ("f.hasme", 4, 9),
        "{d}"
    );
    assert_eq!(d.message, "`log(x)` evaluates to NaN at (x = -1, y = 0)");
    assert_rendered(&d, file);
    // A point of the wrong size is a usage error, as for the problem itself.
    usage_error(e.value(&[1.0]));
}
