//! The checker: a parsed program given meaning. Pass 1 declares every name in file
//! order (params evaluated with `--set` overrides, variables laid out as coordinates,
//! `let`s kept as syntax, data tables loaded) and checks the statements' shapes; pass 2
//! compiles the objective, Σ(x), the observables and the escape region into tapes.
//! Names and scope are in `scope`, the compiler of one expression in `compile`, the
//! `noise` statement in `noise`, `data` statements and the objective's `mean(…)` in
//! `data`. The problem keeps the final [`Scope`], so that expressions written later
//! compile against it ([`Checker::in_scope`]).
//!
//! The module is private to `problem`; its items are `pub(crate)` only so that the
//! problem's other rooms (`expression`) can drive a checker.

mod arrays;
mod compile;
mod data;
mod noise;
mod scope;
mod starts;

pub use arrays::MAX_PARAM_ENTRIES;
pub use compile::{Degree, UNROLL_BUDGET};
pub(super) use scope::Scope;

use super::{EscapeRegion, NoiseKind, NoiseTape, Overrides, Problem, RandomStart, Structure};
use crate::lang::ast::*;
use crate::lang::source::suggest;
use crate::lang::{Diagnostic, Source, Sources, Span, print_expr};
use crate::tape::{TapeBuilder, Val};

use data::{DataScope, TableDef};
use noise::CompiledNoise;
use scope::{BindingKind, LetDef};
use starts::StartStream;
use std::collections::{HashMap, HashSet};

pub(crate) enum CheckFailure {
    Diag(Box<Diagnostic>),
    Usage(String),
}

pub(crate) type CheckResult<T> = Result<T, CheckFailure>;

pub(crate) struct Checker<'a> {
    /// Where spans point: the file, and an expression compiled after it.
    pub(crate) source: Sources<'a>,
    pub(crate) overrides: &'a Overrides,
    /// The names defined so far; the problem keeps them.
    pub(crate) scope: Scope,
    pub(crate) used_lets: HashSet<usize>,
    pub(crate) loop_stack: Vec<(String, i64)>,
    /// Every name the file declares, with its first definition: to tell "used before
    /// it is defined" from "unknown".
    pub(crate) declared: HashMap<String, Span>,
    pub(crate) warned: HashSet<Span>,
    pub(crate) warnings: Vec<Diagnostic>,
    pub(crate) tables: Vec<TableDef>,
    /// The objective's `mean(…)`, once found.
    pub(crate) data_scope: Option<DataScope>,
    /// The stream random start values are drawn from, and what was drawn.
    pub(crate) starts: StartStream,
    pub(crate) random_starts: Vec<RandomStart>,
}

impl<'a> Checker<'a> {
    pub(crate) fn new(source: &'a Source, overrides: &'a Overrides) -> Checker<'a> {
        Checker::in_scope(Sources::file(source), Scope::default(), overrides)
    }

    /// A checker that starts from the names of `scope`, spans pointing into `source`.
    pub(crate) fn in_scope(
        source: Sources<'a>,
        scope: Scope,
        overrides: &'a Overrides,
    ) -> Checker<'a> {
        Checker {
            source,
            overrides,
            scope,
            used_lets: HashSet::new(),
            loop_stack: Vec::new(),
            declared: HashMap::new(),
            warned: HashSet::new(),
            warnings: Vec::new(),
            tables: Vec::new(),
            data_scope: None,
            starts: StartStream::new(overrides.init_seed),
            random_starts: Vec::new(),
        }
    }

    pub(crate) fn err(
        &self,
        span: Span,
        message: impl Into<String>,
        label: impl Into<String>,
    ) -> CheckFailure {
        CheckFailure::Diag(Box::new(self.source.diagnostic(span, message, label)))
    }

    pub(crate) fn pos(&self, span: Span) -> String {
        let p = self.source.position(span);
        format!("{}:{}", p.line, p.column)
    }

    /// "more than one `KEYWORD` statement", at the second, with a note at the first.
    pub(crate) fn second_statement(
        &self,
        span: Span,
        first: Span,
        keyword: &str,
        label: &str,
    ) -> CheckFailure {
        let d = self
            .source
            .diagnostic(span, format!("more than one `{keyword}` statement"), label)
            .with_note(format!("the first is at {}", self.pos(first)));
        CheckFailure::Diag(Box::new(d))
    }

    /// A constant expression's value (numbers, `pi`, params, loop indices).
    pub(crate) fn constant_of(&mut self, e: &Expr, stmt: usize, what: &str) -> CheckResult<f64> {
        let mut b = TapeBuilder::new(0);
        let (v, _) = self.compile(e, stmt, &mut b, Some(what), &[])?;
        v.as_const().ok_or_else(|| self.internal())
    }

    pub(crate) fn check(mut self, program: &Program) -> CheckResult<Problem> {
        let mut minimize: Option<(&Expr, Span, usize)> = None;
        let mut noise: Option<(&Noise, Span, usize)> = None;
        let mut observes: Vec<(&Ident, &Expr, usize)> = Vec::new();
        let mut escape: Option<(&Expr, &Expr, Span, usize)> = None;
        let mut batch: Option<(f64, Span, Span)> = None;
        let mut sampling: Option<(Sampling, Span)> = None;

        if let Some((name, value)) = self.overrides.values.iter().find(|(_, v)| !v.is_finite()) {
            return Err(CheckFailure::Usage(format!(
                "--set {name}: the value must be finite, got {value}"
            )));
        }
        for st in &program.statements {
            let names: Vec<&Ident> = match &st.kind {
                StatementKind::Param { name, .. }
                | StatementKind::Let { name, .. }
                | StatementKind::Data { name, .. } => vec![name],
                StatementKind::Var(decls) => decls.iter().map(|d| &d.name).collect(),
                _ => Vec::new(),
            };
            for n in names {
                self.declared.entry(n.name.clone()).or_insert(n.span);
            }
        }

        // Pass 1: declarations, params and start values, in file order.
        for (k, st) in program.statements.iter().enumerate() {
            match &st.kind {
                StatementKind::Param { name, size, value } => {
                    if let Some(size) = size {
                        self.declare_param_array(name, size, value, k)?;
                        continue;
                    }
                    let expr = match value {
                        ParamValue::Scalar(e) => e,
                        ParamValue::List(l) => {
                            return Err(self.err(
                                l.span,
                                format!(
                                    "a list needs a vector param: `param {}[{}] = […]`",
                                    name.name,
                                    l.items.len()
                                ),
                                "a list for a scalar param",
                            ));
                        }
                        ParamValue::Matrix { rows, span } => {
                            return Err(self.err(
                                *span,
                                format!(
                                    "a matrix needs a matrix param: `param {}[{}, {}] = [[…], …]`",
                                    name.name,
                                    rows.len(),
                                    rows.first().map_or(0, |r| r.items.len())
                                ),
                                "a matrix for a scalar param",
                            ));
                        }
                    };
                    let v = self.constant_of(expr, k, "a param value")?;
                    let v = self.overrides.get(&name.name).unwrap_or(v);
                    self.define(name, BindingKind::Param(v), k)?;
                    self.scope.params.push((name.name.clone(), v));
                }
                StatementKind::Var(decls) => {
                    for d in decls {
                        let spec = self.start_spec(d.init.as_ref(), k)?;
                        let index = self.scope.vars.len();
                        match &d.size {
                            None => {
                                let start = self.start_values(&spec, &d.name.name, index, 1)?;
                                self.define(&d.name, BindingKind::Var(index), k)?;
                                self.scope.vars.push((d.name.name.clone(), start[0]));
                            }
                            Some(size) => {
                                let shape = self.shape_of(size, k)?;
                                if index + shape.len() > super::MAX_DIMENSION {
                                    return Err(self.err(
                                        size.span,
                                        format!(
                                            "more than {} variables in all",
                                            super::MAX_DIMENSION
                                        ),
                                        "too many variables",
                                    ));
                                }
                                let starts =
                                    self.start_values(&spec, &d.name.name, index, shape.len())?;
                                self.declare_var_array(&d.name, shape, starts, k)?;
                            }
                        }
                    }
                }
                StatementKind::Let { name, value } => {
                    let index = self.scope.lets.len();
                    self.define(name, BindingKind::Let(index), k)?;
                    self.scope.lets.push((
                        name.name.clone(),
                        name.span,
                        LetDef {
                            expr: value.clone(),
                            stmt: k,
                        },
                    ));
                }
                StatementKind::Minimize(e) => {
                    if let Some((_, first, _)) = minimize {
                        return Err(self.second_statement(
                            st.span,
                            first,
                            "minimize",
                            "second objective",
                        ));
                    }
                    minimize = Some((e, st.span, k));
                }
                StatementKind::Noise(n) => {
                    if let Some((_, first, _)) = noise {
                        return Err(self.second_statement(st.span, first, "noise", "second noise"));
                    }
                    noise = Some((n, st.span, k));
                }
                StatementKind::Observe { name, value } => {
                    if let Some((prev, _, _)) =
                        observes.iter().find(|(n, _, _)| n.name == name.name)
                    {
                        let d = self
                            .source
                            .diagnostic(
                                name.span,
                                format!("observable `{}` is defined twice", name.name),
                                "second definition",
                            )
                            .with_note(format!("first defined at {}", self.pos(prev.span)));
                        return Err(CheckFailure::Diag(Box::new(d)));
                    }
                    observes.push((name, value, k));
                }
                StatementKind::Data { name, source } => {
                    let (table, origin) = self.load_table(source, k)?;
                    let index = self.tables.len();
                    self.define(name, BindingKind::Data(index), k)?;
                    self.tables.push(TableDef {
                        name: name.name.clone(),
                        table,
                        file: matches!(source, DataSource::File { .. }),
                        origin,
                        span: name.span,
                    });
                }
                StatementKind::Batch(e) => {
                    if let Some((_, _, first)) = batch {
                        return Err(self.second_statement(st.span, first, "batch", "second batch"));
                    }
                    let b = self.constant_of(e, k, "a batch size")?;
                    if b.fract() != 0.0 || b < 1.0 {
                        return Err(self.err(
                            e.span(),
                            format!("a batch size must be an integer ≥ 1, found {b}"),
                            "not a valid batch size",
                        ));
                    }
                    batch = Some((b, e.span(), st.span));
                }
                StatementKind::Sampling(mode) => {
                    if let Some((_, first)) = sampling {
                        return Err(self.second_statement(
                            st.span,
                            first,
                            "sampling",
                            "second sampling",
                        ));
                    }
                    sampling = Some((*mode, st.span));
                }
                StatementKind::Escape { lhs, rhs } => {
                    if let Some((_, _, first, _)) = escape {
                        return Err(self.second_statement(
                            st.span,
                            first,
                            "escape",
                            "second escape region",
                        ));
                    }
                    escape = Some((lhs, rhs, st.span, k));
                }
            }
        }
        for (name, _) in &self.overrides.values {
            if !self.is_param_name(name) {
                let all = self.scope.params.iter().map(|(p, _)| p.as_str());
                let hint = suggest(
                    name,
                    all.chain(self.scope.param_vecs.iter().map(|(p, _)| p.as_str()))
                        .chain(self.scope.param_mats.iter().map(|m| m.name.as_str())),
                )
                .map_or(String::new(), |s| format!("; did you mean `{s}`?"));
                let known = if self.scope.params.is_empty()
                    && self.scope.param_vecs.is_empty()
                    && self.scope.param_mats.is_empty()
                {
                    " (the file declares no params)".to_string()
                } else {
                    String::new()
                };
                return Err(CheckFailure::Usage(format!(
                    "--set: `{name}` is not a param of {}{known}{hint}",
                    self.source.name()
                )));
            }
        }
        let Some((objective_expr, _, objective_stmt)) = minimize else {
            let end = self.source.text().len();
            return Err(self.err(
                Span::new(end, end),
                "the file has no `minimize` statement",
                "expected `minimize EXPR` somewhere in the file",
            ));
        };
        let d = self.scope.vars.len();

        // Finite sums: the objective's `mean(…)`, its table and the columns it reads.
        self.data_scope = self.find_mean(objective_expr)?;
        let batch_size =
            self.check_finite_sum_statements(noise.map(|(_, span, _)| span), batch, sampling)?;
        for (t, def) in self.tables.iter().enumerate() {
            if self.data_scope.as_ref().is_none_or(|s| s.table != t) {
                self.warnings.push(self.source.diagnostic(
                    def.span,
                    format!("data `{}` is never used", def.name),
                    "unused data",
                ));
            }
        }

        // Pass 2: compile. Lets are compiled into each tape once, in order; the tape
        // drops the ones it does not use. A finite sum's objective is the per-example
        // loss F_i, reading the row's columns as data inputs.
        let data_inputs = self.data_scope.as_ref().map_or(0, |s| s.columns.len());
        let mut b = TapeBuilder::with_data(d, data_inputs);
        let lets = self.compile_lets(&mut b)?;
        let (f, degree) = self.compile(objective_expr, objective_stmt, &mut b, None, &lets)?;
        let objective = b.finish(&[(f, objective_expr.span())]);
        let finite_sum = self.finite_sum(batch_size, sampling);

        let noise_tape = match noise {
            None if finite_sum.is_some() => CompiledNoise {
                tape: NoiseTape {
                    kind: NoiseKind::Minibatch,
                    tape: TapeBuilder::new(d).finish(&[]),
                    runtime_symmetry: Vec::new(),
                    span: self
                        .data_scope
                        .as_ref()
                        .map_or(Span::default(), |s| s.mean_span),
                },
                // Σ is constant when the data-dependent part of F_i is affine in x.
                constant: match objective.data_part_degree(0) {
                    None => true,
                    Some(degree) => degree.is_some_and(|d| d <= 1),
                },
            },
            None => CompiledNoise {
                tape: NoiseTape {
                    kind: NoiseKind::None,
                    tape: TapeBuilder::new(d).finish(&[]),
                    runtime_symmetry: Vec::new(),
                    span: Span::default(),
                },
                constant: true,
            },
            Some((n, span, k)) => self.compile_noise(n, span, k, d)?,
        };
        let constant_noise = noise_tape.constant;

        let mut b = TapeBuilder::new(d);
        let lets = self.compile_lets(&mut b)?;
        let mut outputs = Vec::new();
        let mut observable_names = Vec::new();
        if observes.is_empty() {
            // Default observables: every variable and the squared norm.
            let mut norm2 = Val::Const(0.0);
            for (i, (name, _)) in self.scope.vars.iter().enumerate() {
                let v = b.var(i, Span::default());
                outputs.push((v, Span::default()));
                observable_names.push(name.clone());
                let sq = b.mul(v, v, Span::default()).map_err(|_| self.internal())?;
                norm2 = b
                    .add(norm2, sq, Span::default())
                    .map_err(|_| self.internal())?;
            }
            outputs.push((norm2, Span::default()));
            observable_names.push("norm2".to_string());
        } else {
            for (name, e, k) in &observes {
                let (v, _) = self.compile(e, *k, &mut b, None, &lets)?;
                outputs.push((v, e.span()));
                observable_names.push(name.name.clone());
            }
        }
        let observables = b.finish(&outputs);

        let escape = match escape {
            None => None,
            Some((lhs, rhs, span, k)) => {
                let mut b = TapeBuilder::new(d);
                let lets = self.compile_lets(&mut b)?;
                let (l, _) = self.compile(lhs, k, &mut b, None, &lets)?;
                let (r, _) = self.compile(rhs, k, &mut b, None, &lets)?;
                let margin = b.sub(l, r, span).map_err(|c| self.fold_error(span, c))?;
                let text = format!("{} > {}", print_expr(lhs), print_expr(rhs));
                Some(EscapeRegion {
                    tape: b.finish(&[(margin, span)]),
                    text,
                })
            }
        };

        for (i, (name, span, _)) in self.scope.lets.iter().enumerate() {
            if !self.used_lets.contains(&i) {
                self.warnings.push(self.source.diagnostic(
                    *span,
                    format!("`{name}` is defined but never used"),
                    "unused let",
                ));
            }
        }
        self.warnings.sort_by_key(|w| (w.line, w.column));

        let objective_degree = match degree {
            Degree::Poly(n) => Some(n),
            Degree::Other => None,
        };
        Ok(Problem {
            source: self.source.file_source().clone(),
            variables: self.scope.vars.iter().map(|(n, _)| n.clone()).collect(),
            start: self.scope.vars.iter().map(|&(_, s)| s).collect(),
            scope: self.scope,
            objective,
            noise: noise_tape.tape,
            observable_names,
            observables,
            escape,
            finite_sum,
            structure: Structure {
                objective_degree,
                quadratic: objective_degree.is_some_and(|n| n <= 2),
                constant_noise,
            },
            warnings: self.warnings,
            data_files: (self.tables.iter())
                .filter(|t| t.file)
                .map(|t| t.origin.clone())
                .collect(),
            init_seed: self.overrides.init_seed,
            random_starts: self.random_starts,
            start_file: None,
        })
    }

    pub(crate) fn internal(&self) -> CheckFailure {
        self.err(
            Span::default(),
            "internal error while compiling",
            "please report this file",
        )
    }
}
