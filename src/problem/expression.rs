//! Expressions given after the file was checked: points as `name=value` assignments
//! (`--at`, `--centre`) and constant expressions over the file's params.

use super::check::{Binding, BindingKind, CheckFailure, Checker};
use super::{Overrides, Problem, ProblemError};
use crate::lang::source::suggest;
use crate::lang::{Source, Span, parse_expr};
use crate::tape::{TapeBuilder, Val};
use std::collections::HashMap;

impl Problem {
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
            if let Some(v) = self.vectors.iter().find(|v| v.name == name) {
                // `w=0.5` sets every coordinate of the vector variable `w`.
                let value = self
                    .constant(value.trim())
                    .map_err(|m| ProblemError::Usage(format!("--at `{}`: {m}", item.trim())))?;
                x[v.start..v.start + v.len]
                    .iter_mut()
                    .for_each(|c| *c = value);
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

    /// Evaluates a constant expression over numbers, `pi` and params.
    pub fn constant(&self, text: &str) -> Result<f64, String> {
        let src = Source::new("value", text);
        let expr = parse_expr(&src).map_err(|d| d.message.clone())?;
        let mut names = HashMap::new();
        for (i, (n, v)) in self.params.iter().enumerate() {
            names.insert(
                n.clone(),
                Binding {
                    kind: BindingKind::Param(*v),
                    span: Span::default(),
                    stmt: i,
                },
            );
        }
        for (i, (n, _)) in self.param_vectors.iter().enumerate() {
            names.insert(
                n.clone(),
                Binding {
                    kind: BindingKind::ParamVec(i),
                    span: Span::default(),
                    stmt: 0,
                },
            );
        }
        let overrides = Overrides::none();
        let mut checker = Checker::new(&src, &overrides);
        checker.names = names;
        checker.param_vecs = self.param_vectors.clone();
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
