//! Expressions written after the file was checked, compiled against the names the
//! checker kept ([`Problem`]'s scope) rather than by checking the file again: functions
//! of the point ([`Problem::compile_expression`], e.g. the `--when` region of `hasme
//! escape`), constants over the params ([`Problem::constant`]) and points given as
//! `name=value` assignments (`--at`, `--centre`).

use super::check::{CheckFailure, Checker};
use super::{Overrides, Problem, ProblemError};
use crate::lang::source::suggest;
use crate::lang::{Source, Sources, parse_expr};
use crate::tape::{Tape, TapeBuilder, Val};

/// An expression compiled in a problem's scope (its params, variables and `let`s): a
/// function of the point, evaluated with the problem's checks and error messages.
/// Its diagnostics point into its own text, those of a `let` it reads into the file.
///
/// ```
/// use hasme::Problem;
/// let p = Problem::from_str("param r = 2\nvar x, y\nlet d2 = x^2 + y^2\nminimize x*y").unwrap();
/// let e = p.compile_expression("--when", "d2 - r^2").unwrap();
/// assert_eq!(e.value(&[3.0, 0.0]).unwrap(), 5.0);
/// let err = p.compile_expression("--when", "d3 - 1").unwrap_err();
/// assert!(err.to_string().starts_with("--when:1:1: error: unknown name `d3`; did you mean `d2`?"));
/// ```
#[derive(Clone, Debug)]
pub struct Expression<'p> {
    problem: &'p Problem,
    /// The expression's text, under the name its diagnostics show.
    source: Source,
    /// One output; spans at or past `Sources::base(problem.source())` are the
    /// expression's, the others the file's (its `let`s).
    tape: Tape,
}

impl Expression<'_> {
    /// The expression as written.
    pub fn text(&self) -> &str {
        self.source.text()
    }

    /// The value at x; a non-finite value is an error naming the expression (or the
    /// `let` it reads) and the point.
    pub fn value(&self, x: &[f64]) -> Result<f64, ProblemError> {
        self.value_with(x, &mut Vec::new())
    }

    /// [`Expression::value`] reusing `slots`: no allocation once it has grown.
    pub fn value_with(&self, x: &[f64], slots: &mut Vec<f64>) -> Result<f64, ProblemError> {
        self.problem.check_point(x)?;
        let mut out = [0.0];
        self.tape.values_with(x, slots, &mut out).map_err(|nf| {
            let sources = Sources::with_expression(&self.problem.source, &self.source);
            self.problem.eval_error_in(sources, nf, x)
        })?;
        Ok(out[0])
    }
}

impl Problem {
    /// Parses `text` as one expression and compiles it in the file's scope: numbers,
    /// `pi`, params, variables and `let`s, every name visible (the expression comes after
    /// the whole file). Errors are located in `text`, shown under `name` (e.g.
    /// `--when`); `mean(…)` and data columns belong to the objective only.
    pub fn compile_expression(
        &self,
        name: &str,
        text: &str,
    ) -> Result<Expression<'_>, ProblemError> {
        let source = Source::new(name, text);
        let expr = parse_expr(&source)
            .map_err(ProblemError::Syntax)?
            .shifted(Sources::base(&self.source));
        let overrides = Overrides::none();
        let mut checker = Checker::in_scope(
            Sources::with_expression(&self.source, &source),
            self.scope.clone(),
            &overrides,
        );
        let mut b = TapeBuilder::new(self.dim());
        let lets = checker.compile_lets(&mut b)?;
        let (value, _) = checker.compile(&expr, usize::MAX, &mut b, None, &lets)?;
        let tape = b.finish(&[(value, expr.span())]);
        Ok(Expression {
            problem: self,
            source,
            tape,
        })
    }

    /// A point from `name=value` assignments (as given to `--at`), starting from the
    /// start point; values may be constant expressions over params (`pi/4`, `2*a`).
    pub fn point_from_assignments(&self, spec: &str) -> Result<Vec<f64>, ProblemError> {
        let mut x = self.start();
        if spec.trim().is_empty() {
            return Ok(x);
        }
        for item in split_top_level(spec) {
            let (name, value) = item.split_once('=').ok_or_else(|| {
                ProblemError::Usage(format!("--at `{item}`: expected NAME=VALUE, e.g. x=0.1"))
            })?;
            let name = name.trim();
            // `w=0.5` sets every coordinate of the vector or matrix variable `w`.
            let whole = self
                .vectors()
                .iter()
                .find(|v| v.name == name)
                .map(|v| (v.start, v.len))
                .or_else(|| {
                    self.matrices()
                        .iter()
                        .find(|m| m.name == name)
                        .map(|m| (m.start, m.rows * m.cols))
                });
            if let Some((start, len)) = whole {
                let value = self
                    .constant(value.trim())
                    .map_err(|m| ProblemError::Usage(format!("--at `{}`: {m}", item.trim())))?;
                x[start..start + len].iter_mut().for_each(|c| *c = value);
                continue;
            }
            let i = self
                .variables
                .iter()
                .position(|v| v == name)
                .ok_or_else(|| {
                    let hint = suggest(name, self.variables.iter().map(String::as_str))
                        .map_or(String::new(), |s| format!("; did you mean `{s}`?"));
                    ProblemError::Usage(format!("--at: `{name}` is not a variable{hint}"))
                })?;
            x[i] = self
                .constant(value.trim())
                .map_err(|m| ProblemError::Usage(format!("--at `{}`: {m}", item.trim())))?;
        }
        Ok(x)
    }

    /// Evaluates a constant expression over numbers, `pi` and params (the part of the
    /// scope known before any point), compiled against the kept scope like
    /// [`Problem::compile_expression`]. The error is the diagnostic's message alone.
    pub fn constant(&self, text: &str) -> Result<f64, String> {
        let source = Source::new("value", text);
        let expr = parse_expr(&source).map_err(|d| d.message.clone())?;
        let overrides = Overrides::none();
        // No `let` is compiled here, so every span points into `text` itself.
        let mut checker =
            Checker::in_scope(Sources::file(&source), self.scope.constants(), &overrides);
        let mut b = TapeBuilder::new(0);
        match checker.compile(&expr, usize::MAX, &mut b, Some("a value"), &[]) {
            Ok((Val::Const(c), _)) => Ok(c),
            Ok(_) => Err("expected a constant".to_string()),
            Err(CheckFailure::Diag(d)) => Err(d.message.clone()),
            Err(CheckFailure::Usage(m)) => Err(m),
        }
    }
}

/// Splits `a=1,b=pow(2, 3)` at the commas outside brackets.
fn split_top_level(spec: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0i32, 0);
    for (i, c) in spec.char_indices() {
        match c {
            '(' | '[' => depth += 1,
            ')' | ']' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&spec[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&spec[start..]);
    parts
}
