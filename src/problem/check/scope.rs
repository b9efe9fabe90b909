//! Names and their scope: what each name is bound to (a param's value, a variable's
//! coordinate, a `let`, a loop index, a data table), defining a name once and never a
//! reserved word, and resolving a use (defined before it, constant where a constant is
//! needed), with "did you mean" suggestions.

use super::compile::Degree;
use super::{CheckFailure, CheckResult, Checker};
use crate::lang::Span;
use crate::lang::ast::*;
use crate::lang::source::suggest;
use crate::lang::words::{WordKind, reserved};
use crate::problem::{MatrixVar, ParamMatrix, VectorVar};
use crate::tape::{TapeBuilder, Val};
use std::collections::HashMap;

#[derive(Clone, Copy, Debug)]
pub(crate) enum BindingKind {
    Param(f64),
    /// Index into `Scope::param_vecs`.
    ParamVec(usize),
    /// Index into `Scope::param_mats`.
    ParamMat(usize),
    Var(usize),
    /// Coordinates `start..start + len`.
    VarVec {
        start: usize,
        len: usize,
    },
    /// Coordinates `start..start + rows·cols`, row-major.
    VarMat {
        start: usize,
        rows: usize,
        cols: usize,
    },
    Let(usize),
    /// A `sum`/`prod` index, bound to one value while its body is compiled.
    Index(f64),
    /// Index into `Checker::tables`.
    Data(usize),
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct Binding {
    pub(crate) kind: BindingKind,
    pub(crate) span: Span,
    /// Index of the statement that defines it.
    pub(crate) stmt: usize,
}

#[derive(Clone, Debug)]
pub(crate) struct LetDef {
    pub(crate) expr: Expr,
    pub(crate) stmt: usize,
}

/// The names a file defines, as the checker leaves them. The problem keeps them, so
/// that expressions written after the file (`--when`, `--at`, constants) compile
/// against the file's names without checking the file again.
#[derive(Clone, Debug, Default)]
pub(crate) struct Scope {
    pub(crate) names: HashMap<String, Binding>,
    /// Scalar params with their values (after overrides), in file order.
    pub(crate) params: Vec<(String, f64)>,
    /// Vector params with their values, in file order.
    pub(crate) param_vecs: Vec<(String, Vec<f64>)>,
    /// Matrix params with their values, in file order.
    pub(crate) param_mats: Vec<ParamMatrix>,
    /// Coordinates of the point (vector variables laid out as `w[1]` …) with their
    /// start values.
    pub(crate) vars: Vec<(String, f64)>,
    pub(crate) vector_vars: Vec<VectorVar>,
    pub(crate) matrix_vars: Vec<MatrixVar>,
    /// `let`s as syntax, compiled into each tape that reads them.
    pub(crate) lets: Vec<(String, Span, LetDef)>,
}

impl Scope {
    /// The part of the scope known before any point: params, vector and matrix params. A
    /// constant (a `--at` value) sees only these, so a variable or a `let` there is an
    /// unknown name, as it is in a `param` statement written before it.
    pub(crate) fn constants(&self) -> Scope {
        Scope {
            names: self
                .names
                .iter()
                .filter(|(_, b)| {
                    matches!(
                        b.kind,
                        BindingKind::Param(_) | BindingKind::ParamVec(_) | BindingKind::ParamMat(_)
                    )
                })
                .map(|(n, b)| (n.clone(), *b))
                .collect(),
            param_vecs: self.param_vecs.clone(),
            param_mats: self.param_mats.clone(),
            ..Scope::default()
        }
    }
}

impl Checker<'_> {
    pub(crate) fn define(
        &mut self,
        ident: &Ident,
        kind: BindingKind,
        stmt: usize,
    ) -> CheckResult<()> {
        let name = ident.name.as_str();
        if let Some(kind) = reserved(name) {
            let what = match kind {
                WordKind::Constant => "the constant π",
                WordKind::Statement => "a statement keyword",
                // `reserved` never gives a clause keyword.
                WordKind::Function | WordKind::Clause => "a built-in function",
            };
            return Err(self.err(
                ident.span,
                format!("`{name}` is reserved ({what}) and cannot be defined"),
                "choose another name",
            ));
        }
        if let Some(prev) = self.scope.names.get(name) {
            let d = self
                .source
                .diagnostic(
                    ident.span,
                    format!("`{name}` is defined twice"),
                    "second definition",
                )
                .with_note(format!("first defined at {}", self.pos(prev.span)));
            return Err(CheckFailure::Diag(Box::new(d)));
        }
        self.scope.names.insert(
            name.to_string(),
            Binding {
                kind,
                span: ident.span,
                stmt,
            },
        );
        Ok(())
    }

    pub(crate) fn compile_lets(&mut self, b: &mut TapeBuilder) -> CheckResult<Vec<(Val, Degree)>> {
        let mut out: Vec<(Val, Degree)> = Vec::with_capacity(self.scope.lets.len());
        for i in 0..self.scope.lets.len() {
            let (expr, stmt) = {
                let def = &self.scope.lets[i].2;
                (def.expr.clone(), def.stmt)
            };
            let v = self.compile(&expr, stmt, b, None, &out)?;
            out.push(v);
        }
        Ok(out)
    }

    pub(crate) fn resolve(
        &mut self,
        name: &str,
        span: Span,
        stmt: usize,
        constant: Option<&str>,
    ) -> CheckResult<Binding> {
        let Some(&b) = self.scope.names.get(name) else {
            if name == "pi" {
                return Ok(Binding {
                    kind: BindingKind::Param(std::f64::consts::PI),
                    span,
                    stmt: 0,
                });
            }
            if reserved(name) == Some(WordKind::Function) {
                return Err(self.err(
                    span,
                    format!("`{name}` is a function; call it as `{name}(…)`"),
                    "a function, not a value",
                ));
            }
            if let Some(&later) = self.declared.get(name) {
                let d = self
                    .source
                    .diagnostic(
                        span,
                        format!("`{name}` is used before it is defined"),
                        "not yet defined",
                    )
                    .with_note(format!("`{name}` is defined at {}", self.pos(later)));
                return Err(CheckFailure::Diag(Box::new(d)));
            }
            let mut candidates: Vec<&str> = self.scope.names.keys().map(String::as_str).collect();
            candidates.sort();
            candidates.push("pi");
            let hint = suggest(name, candidates)
                .map_or(String::new(), |s| format!("; did you mean `{s}`?"));
            return Err(self.err(span, format!("unknown name `{name}`{hint}"), "not defined"));
        };
        if let Some(what) = constant {
            let kind = match b.kind {
                BindingKind::Param(_)
                | BindingKind::ParamVec(_)
                | BindingKind::ParamMat(_)
                | BindingKind::Index(_) => None,
                BindingKind::Var(_) | BindingKind::VarVec { .. } | BindingKind::VarMat { .. } => {
                    Some("a variable")
                }
                BindingKind::Let(_) => Some("a `let` (which may depend on variables)"),
                BindingKind::Data(_) => Some("a data table"),
            };
            if let Some(kind) = kind {
                return Err(self.err(
                    span,
                    format!("{what} must be a constant, but `{name}` is {kind}"),
                    "expected numbers, `pi` and params only",
                ));
            }
        }
        if b.stmt >= stmt && stmt != usize::MAX && !matches!(b.kind, BindingKind::Index(_)) {
            let d = self
                .source
                .diagnostic(
                    span,
                    format!("`{name}` is used before it is defined"),
                    "not yet defined",
                )
                .with_note(format!("`{name}` is defined at {}", self.pos(b.span)));
            return Err(CheckFailure::Diag(Box::new(d)));
        }
        Ok(b)
    }
}
