//! `data` statements and the objective's finite sum: tables loaded (CSV files through
//! `crate::data`, inline tables checked here), the one `mean(DATA, EXPR)` of the
//! objective found and checked (its table, the columns it reads, used affinely), and
//! the [`FiniteSum`] the evaluation reads assembled with its batch and sampling.

use super::scope::BindingKind;
use super::{CheckFailure, CheckResult, Checker};
use crate::data::{FiniteSum, Table, parse_csv};
use crate::lang::ast::*;
use crate::lang::source::suggest;
use crate::lang::{Source, Span};
use std::path::Path;

/// A `data` statement, loaded.
pub(crate) struct TableDef {
    pub(crate) name: String,
    pub(crate) table: Table,
    pub(crate) origin: String,
    /// Read from a file (not inline).
    pub(crate) file: bool,
    pub(crate) span: Span,
}

/// The objective's `mean(DATA, EXPR)`: which table, where, and the columns it reads.
#[derive(Clone, Debug)]
pub(crate) struct DataScope {
    pub(crate) table: usize,
    /// The whole `mean(…)` call: columns are valid only inside it.
    pub(crate) mean_span: Span,
    /// The `DATA` argument.
    pub(crate) table_arg_span: Span,
    /// Table column indices, in the order of the tape's data inputs.
    pub(crate) columns: Vec<usize>,
}

/// How an expression depends on the value of `mean(…)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum MeanUse {
    None,
    Affine,
}

impl Checker<'_> {
    /// Loads the table of a `data` statement.
    pub(crate) fn load_table(
        &mut self,
        source: &DataSource,
        stmt: usize,
    ) -> CheckResult<(Table, String)> {
        match source {
            DataSource::File { path, span } => {
                let base = Path::new(self.source.name());
                let resolved = if self.source.name().starts_with('<') {
                    Path::new(path).to_path_buf()
                } else {
                    base.parent().unwrap_or(Path::new("")).join(path)
                };
                let shown = resolved.display().to_string();
                let bytes = std::fs::read(&resolved).map_err(|e| {
                    self.err(
                        *span,
                        format!("cannot read the data file `{shown}`: {e}"),
                        "this file",
                    )
                })?;
                let here = format!("read by the `data` statement at {}", self.pos(*span));
                let csv = Source::from_bytes(shown.clone(), bytes)
                    .map_err(|d| CheckFailure::Diag(Box::new(d.with_note(here.clone()))))?;
                let table =
                    parse_csv(&csv).map_err(|d| CheckFailure::Diag(Box::new(d.with_note(here))))?;
                Ok((table, shown))
            }
            DataSource::Inline { header, rows } => {
                let mut columns: Vec<String> = Vec::new();
                for h in header {
                    if columns.contains(&h.name) {
                        return Err(self.err(
                            h.span,
                            format!("column `{}` appears twice in the header row", h.name),
                            "duplicate column",
                        ));
                    }
                    columns.push(h.name.clone());
                }
                let mut values = Vec::with_capacity(rows.len() * columns.len());
                for (i, row) in rows.iter().enumerate() {
                    if row.items.len() != columns.len() {
                        return Err(self.err(
                            row.span,
                            format!(
                                "row {} has {} entries but the header has {} columns",
                                i + 1,
                                row.items.len(),
                                columns.len()
                            ),
                            format!("expected {} entries", columns.len()),
                        ));
                    }
                    for e in &row.items {
                        values.push(self.constant_of(e, stmt, "a data value")?);
                    }
                }
                if rows.is_empty() {
                    let span = header
                        .first()
                        .map_or(Span::default(), |f| f.span)
                        .to(header.last().map_or(Span::default(), |l| l.span));
                    return Err(self.err(
                        span,
                        "the table has a header but no rows",
                        "expected rows of numbers after the header",
                    ));
                }
                Ok((Table { columns, values }, "inline".to_string()))
            }
        }
    }

    /// Finds the objective's `mean(DATA, EXPR)`, checks where it and every column
    /// appear, and that the objective is affine in it (so f is the average of the
    /// per-example losses F_i).
    pub(crate) fn find_mean(&mut self, expr: &Expr) -> CheckResult<Option<DataScope>> {
        let nodes = &expr.nodes;
        let is_mean =
            |n: &Node| matches!(&n.kind, NodeKind::Call { func, .. } if func.name == "mean");
        let means: Vec<usize> = (0..nodes.len()).filter(|&k| is_mean(&nodes[k])).collect();
        let Some(&m) = means.first() else {
            return Ok(None);
        };
        if let Some(&second) = means.get(1) {
            let d = self
                .source
                .diagnostic(
                    nodes[second].span,
                    "at most one `mean(…)` per objective",
                    "second finite sum",
                )
                .with_note(format!("the first is at {}", self.pos(nodes[m].span)));
            return Err(CheckFailure::Diag(Box::new(d)));
        }
        let mean_span = nodes[m].span;
        let NodeKind::Call { args, .. } = &nodes[m].kind else {
            return Err(self.internal());
        };
        if args.len() != 2 {
            return Err(self.err(
                mean_span,
                format!(
                    "`mean` takes 2 arguments, `mean(DATA, EXPR)`, found {}",
                    args.len()
                ),
                "expected 2 arguments",
            ));
        }
        let arg = &nodes[args[0] as usize];
        let table_names: Vec<&str> = self.tables.iter().map(|t| t.name.as_str()).collect();
        let table = match &arg.kind {
            NodeKind::Name(n) => match self.scope.names.get(n).map(|b| b.kind) {
                Some(BindingKind::Data(t)) => t,
                _ => {
                    let hint = suggest(n, table_names.iter().copied())
                        .map_or(String::new(), |s| format!("; did you mean `{s}`?"));
                    return Err(self.err(
                        arg.span,
                        format!("`{n}` is not a data table{hint}"),
                        "expected the name of a `data` statement",
                    ));
                }
            },
            _ => {
                return Err(self.err(
                    arg.span,
                    "the first argument of `mean` must be a data table, `mean(DATA, EXPR)`",
                    "expected the name of a `data` statement",
                ));
            }
        };
        let table_name = self.tables[table].name.clone();
        let mut columns: Vec<usize> = Vec::new();
        let mut uses = vec![MeanUse::None; nodes.len()];
        for (k, node) in nodes.iter().enumerate() {
            let span = node.span;
            let inside = mean_span.start <= span.start && span.end <= mean_span.end;
            let use_of = |id: &NodeId| uses[*id as usize];
            let nonlinear = match &node.kind {
                NodeKind::Column {
                    data,
                    column,
                    index,
                } => {
                    if !inside {
                        // Reported with its position when compiled.
                        continue;
                    }
                    if data.name != table_name {
                        let what = if table_names.contains(&data.name.as_str()) {
                            format!(
                                "`{}.{}` reads table `{}` inside `mean({table_name}, …)`: only the columns of `{table_name}` are defined per example here",
                                data.name, column.name, data.name
                            )
                        } else {
                            let hint = suggest(&data.name, table_names.iter().copied())
                                .map_or(String::new(), |s| format!("; did you mean `{s}`?"));
                            format!("unknown data table `{}`{hint}", data.name)
                        };
                        return Err(self.err(data.span, what, "not this sum's table"));
                    }
                    if index.is_some() {
                        // `DATA.NAME[i]`: its column is known once `i` is, when compiled.
                        continue;
                    }
                    let all = &self.tables[table].table.columns;
                    let Some(j) = all.iter().position(|c| *c == column.name) else {
                        let hint = suggest(&column.name, all.iter().map(String::as_str))
                            .map_or(String::new(), |s| format!("; did you mean `{s}`?"));
                        return Err(self.err(
                            column.span,
                            format!(
                                "`{table_name}` has no column `{}`{hint} (its columns: {})",
                                column.name,
                                all.join(", ")
                            ),
                            "unknown column",
                        ));
                    };
                    if !columns.contains(&j) {
                        columns.push(j);
                    }
                    false
                }
                _ if k == m => {
                    uses[k] = MeanUse::Affine;
                    continue;
                }
                NodeKind::Num { .. } | NodeKind::Name(_) | NodeKind::Index { .. } => false,
                NodeKind::Reduce { kind, .. } => {
                    if span.start <= mean_span.start && mean_span.end <= span.end {
                        return Err(self.err(
                            mean_span,
                            format!(
                                "`mean(…)` cannot be inside `{}(…)`: the objective holds one finite sum",
                                kind.name()
                            ),
                            "inside a loop",
                        ));
                    }
                    false
                }
                NodeKind::Neg(a) => {
                    uses[k] = use_of(a);
                    false
                }
                NodeKind::Binary { op, lhs, rhs } => {
                    let (l, r) = (use_of(lhs), use_of(rhs));
                    match op {
                        BinOp::Add | BinOp::Sub => {
                            uses[k] = l.max(r);
                            false
                        }
                        BinOp::Mul => {
                            uses[k] = l.max(r);
                            l == MeanUse::Affine && r == MeanUse::Affine
                        }
                        BinOp::Div => {
                            uses[k] = l;
                            r == MeanUse::Affine
                        }
                        BinOp::Pow => l == MeanUse::Affine || r == MeanUse::Affine,
                    }
                }
                NodeKind::Call { args, .. } => args.iter().any(|a| use_of(a) == MeanUse::Affine),
            };
            if nonlinear {
                let d = self
                    .source
                    .diagnostic(
                        span,
                        "the objective must be an average of per-example losses, so `mean(…)` may only be added, subtracted, negated, or multiplied or divided by an expression without `mean`",
                        "not linear in the finite sum",
                    )
                    .with_note("f = (1/n) Σ_i F_i is what makes minibatch SGD unbiased (docs/models.md §1)");
                return Err(CheckFailure::Diag(Box::new(d)));
            }
        }
        Ok(Some(DataScope {
            table,
            mean_span,
            table_arg_span: arg.span,
            columns,
        }))
    }

    /// Checks the statements that go with a finite sum before the objective is compiled:
    /// `batch` and `sampling` without a `mean(…)`, or a `noise` statement with one, are
    /// errors, and a batch may not exceed the rows. Returns the batch size.
    pub(crate) fn check_finite_sum_statements(
        &mut self,
        noise: Option<Span>,
        batch: Option<(f64, Span, Span)>,
        sampling: Option<(Sampling, Span)>,
    ) -> CheckResult<usize> {
        let Some(scope) = &self.data_scope else {
            if let Some((_, _, span)) = batch {
                return Err(self.err(
                    span,
                    "`batch` applies to finite sums, but the objective has no `mean(DATA, …)`",
                    "no minibatches to size",
                ));
            }
            if let Some((_, span)) = sampling {
                return Err(self.err(
                    span,
                    "`sampling` applies to finite sums, but the objective has no `mean(DATA, …)`",
                    "no minibatches to draw",
                ));
            }
            return Ok(1);
        };
        if let Some(span) = noise {
            let d = self
                .source
                .diagnostic(
                    span,
                    "a `noise` statement cannot be combined with `mean(…)`: a finite sum defines its own noise (the minibatch covariance of docs/models.md §1)",
                    "remove this statement",
                )
                .with_note(format!("the finite sum is at {}", self.pos(scope.mean_span)));
            return Err(CheckFailure::Diag(Box::new(d)));
        }
        let def = &self.tables[scope.table];
        let n = def.table.rows();
        match batch {
            None => Ok(1),
            Some((b, span, _)) if b > n as f64 => Err(self.err(
                span,
                format!(
                    "the batch size {b} is larger than the {n} rows of `{}`",
                    def.name
                ),
                format!("expected at most {n}"),
            )),
            Some((b, _, _)) => Ok(b as usize),
        }
    }

    /// The finite sum of the objective's `mean(…)` (found by `find_mean`, its columns
    /// completed while the objective was compiled), with its batch size and sampling.
    pub(crate) fn finite_sum(
        &mut self,
        batch: usize,
        sampling: Option<(Sampling, Span)>,
    ) -> Option<FiniteSum> {
        let scope = self.data_scope.as_ref()?;
        let def = &self.tables[scope.table];
        if scope.columns.is_empty() {
            self.warnings.push(self.source.diagnostic(
                scope.mean_span,
                format!(
                    "`mean({}, …)` reads no column of `{}`: every example is the same, so the minibatch noise is zero",
                    def.name, def.name
                ),
                "no column read",
            ));
        }
        let n = def.table.rows();
        let c = def.table.columns.len();
        let mut rows = Vec::with_capacity(n * scope.columns.len());
        for i in 0..n {
            rows.extend(scope.columns.iter().map(|&j| def.table.values[i * c + j]));
        }
        Some(FiniteSum {
            table: def.name.clone(),
            origin: def.origin.clone(),
            all_columns: def.table.columns.clone(),
            columns: scope
                .columns
                .iter()
                .map(|&j| def.table.columns[j].clone())
                .collect(),
            rows,
            n,
            batch,
            sampling: sampling.map_or(Sampling::WithoutReplacement, |(s, _)| s),
        })
    }
}
