//! Compiling one expression to tape instructions: a loop over the post-order nodes
//! that also computes each node's polynomial degree, with `sum`/`prod` unrolled at
//! check time (bounded by [`UNROLL_BUDGET`]), indices checked against their vectors,
//! and arity, columns and `mean(…)` placement checked.

use super::scope::{Binding, BindingKind};
use super::{CheckFailure, CheckResult, Checker};
use crate::lang::Span;
use crate::lang::ast::*;
use crate::lang::source::suggest;
use crate::tape::{Func, TapeBuilder, Val, integer_exponent};

/// Polynomial degree of an expression, as read off its syntax tree (an upper bound:
/// `0*x^3` counts as degree 3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Degree {
    /// A polynomial of at most this degree (0: constant).
    Poly(u32),
    /// Not a polynomial.
    Other,
}

impl Degree {
    pub(crate) fn max(self, o: Degree) -> Degree {
        match (self, o) {
            (Degree::Poly(a), Degree::Poly(b)) => Degree::Poly(a.max(b)),
            _ => Degree::Other,
        }
    }

    pub(crate) fn is_const(self) -> bool {
        self == Degree::Poly(0)
    }
}

impl Checker<'_> {
    pub(crate) fn fold_error(&self, span: Span, value: f64) -> CheckFailure {
        let expr = self.source.snippet(span);
        self.err(
            span,
            format!("`{expr}` is not a finite number (it evaluates to {value})"),
            "not finite",
        )
    }

    /// Compiles one expression: a forward pass over its post-order nodes that also
    /// computes the polynomial degree of every node. `sum`/`prod` bodies are skipped by
    /// that pass and compiled once per index value instead (unrolled), with the index
    /// bound as a constant; that recursion is bounded by the bracket-nesting cap.
    pub(crate) fn compile(
        &mut self,
        expr: &Expr,
        stmt: usize,
        b: &mut TapeBuilder,
        constant: Option<&str>,
        lets: &[(Val, Degree)],
    ) -> CheckResult<(Val, Degree)> {
        let n = expr.nodes.len();
        if n == 0 {
            return Err(self.internal());
        }
        // A `mean(…)` other than the objective's: reported at the call, before its
        // arguments are (mis)read as values.
        for node in &expr.nodes {
            if let NodeKind::Call { func, .. } = &node.kind
                && func.name == "mean"
                && self
                    .data_scope
                    .as_ref()
                    .is_none_or(|s| s.mean_span != node.span)
            {
                return Err(self.err(
                    node.span,
                    "`mean(…)` may only appear in the `minimize` statement (not in `let`, `noise`, `observe` or `escape`)",
                    "a finite sum here",
                ));
            }
        }
        let layout = Layout::of(expr);
        let mut vals: Vec<(Val, Degree)> = vec![(Val::Const(0.0), Degree::Poly(0)); n];
        let mut ctx = Ctx {
            expr,
            layout: &layout,
            stmt,
            constant,
            lets,
            budget: UNROLL_BUDGET,
        };
        self.compile_range(&mut ctx, b, 0, n - 1, &mut vals)?;
        let result = vals[n - 1];
        if constant.is_some() && result.0.as_const().is_none() {
            return Err(self.internal());
        }
        Ok(result)
    }

    pub(crate) fn compile_range(
        &mut self,
        ctx: &mut Ctx<'_>,
        b: &mut TapeBuilder,
        first: usize,
        last: usize,
        vals: &mut [(Val, Degree)],
    ) -> CheckResult<()> {
        let mut k = first;
        while k <= last {
            // The body of a `sum`/`prod` inside this range: leave it to its Reduce node.
            if let Some((body_root, owner)) = ctx.layout.body_at[k]
                && owner <= last
            {
                k = body_root + 1;
                continue;
            }
            let node = &ctx.expr.nodes[k];
            let out = self.compile_node(ctx, b, node, vals)?;
            vals[k] = out;
            k += 1;
        }
        Ok(())
    }

    pub(crate) fn compile_node(
        &mut self,
        ctx: &mut Ctx<'_>,
        b: &mut TapeBuilder,
        node: &Node,
        vals: &mut [(Val, Degree)],
    ) -> CheckResult<(Val, Degree)> {
        let span = node.span;
        let at = |vals: &[(Val, Degree)], id: NodeId| vals[id as usize];
        Ok(match &node.kind {
            NodeKind::Num { value, .. } => (Val::Const(*value), Degree::Poly(0)),
            NodeKind::Name(name) => {
                let binding = self.resolve(name, span, ctx.stmt, ctx.constant)?;
                match binding.kind {
                    BindingKind::Param(v) | BindingKind::Index(v) => {
                        (Val::Const(v), Degree::Poly(0))
                    }
                    BindingKind::Var(i) => (b.var(i, span), Degree::Poly(1)),
                    BindingKind::Let(i) => {
                        self.used_lets.insert(i);
                        *ctx.lets.get(i).ok_or_else(|| self.internal())?
                    }
                    BindingKind::ParamVec(p) => {
                        let len = self.scope.param_vecs[p].1.len();
                        return Err(self.err(
                            span,
                            format!(
                                "`{name}` is a vector of {len} entries; index it, e.g. `{name}[1]`"
                            ),
                            "a vector, not a number",
                        ));
                    }
                    BindingKind::VarVec { len, .. } => {
                        return Err(self.err(
                            span,
                            format!("`{name}` is a vector of {len} variables; index it, e.g. `{name}[1]`"),
                            "a vector, not a number",
                        ));
                    }
                    BindingKind::ParamMat(p) => {
                        let m = &self.scope.param_mats[p];
                        return Err(self.err(
                            span,
                            format!(
                                "`{name}` is a {}×{} matrix; index it, e.g. `{name}[1, 1]`",
                                m.rows, m.cols
                            ),
                            "a matrix, not a number",
                        ));
                    }
                    BindingKind::VarMat { rows, cols, .. } => {
                        return Err(self.err(
                            span,
                            format!("`{name}` is a {rows}×{cols} matrix of variables; index it, e.g. `{name}[1, 1]`"),
                            "a matrix, not a number",
                        ));
                    }
                    BindingKind::Data(_) => {
                        // The table argument of the objective's `mean(…)` has no value.
                        if self
                            .data_scope
                            .as_ref()
                            .is_some_and(|s| s.table_arg_span == span)
                        {
                            return Ok((Val::Const(0.0), Degree::Poly(0)));
                        }
                        return Err(self.err(
                            span,
                            format!("`{name}` is a data table, not a number; read its columns as `{name}.COLUMN` inside `mean({name}, …)`"),
                            "a data table",
                        ));
                    }
                }
            }
            NodeKind::Index { name, indices } => {
                self.compile_index(ctx, b, name, indices, span, vals)?
            }
            NodeKind::Reduce {
                kind,
                index,
                lo,
                hi,
                body,
            } => {
                let lo_v = self.loop_bound(at(vals, *lo).0, ctx.expr.nodes[*lo as usize].span)?;
                let hi_v = self.loop_bound(at(vals, *hi).0, ctx.expr.nodes[*hi as usize].span)?;
                let body = *body as usize;
                let body_start = ctx.layout.start[body];
                let iterations = (hi_v - lo_v + 1).max(0) as u64;
                let cost = iterations.saturating_mul((body - body_start + 1) as u64);
                if cost > ctx.budget {
                    return Err(self.err(
                        span,
                        format!("this `{}` unrolls to {cost} nodes, more than the {UNROLL_BUDGET} allowed", kind.name()),
                        "too large to unroll",
                    ));
                }
                ctx.budget -= cost;
                if let Some(prev) = self.scope.names.get(&index.name) {
                    let what = if matches!(prev.kind, BindingKind::Index(_)) {
                        "an enclosing loop index"
                    } else {
                        "an existing name"
                    };
                    return Err(self.err(
                        index.span,
                        format!("loop index `{}` shadows {what}", index.name),
                        "choose another index name",
                    ));
                }
                if *kind == ReduceKind::LogSumExp && iterations == 0 {
                    return Err(self.err(
                        span,
                        format!("`logsumexp` over the empty range {lo_v}..{hi_v} is log 0 = −∞"),
                        "no terms",
                    ));
                }
                let (mut acc, mut deg) = match kind {
                    ReduceKind::Sum | ReduceKind::LogSumExp => (Val::Const(0.0), Degree::Poly(0)),
                    ReduceKind::Prod => (Val::Const(1.0), Degree::Poly(0)),
                };
                // The terms of a `logsumexp`, combined once they are all known.
                let mut terms: Vec<Val> = Vec::new();
                for i in lo_v..=hi_v {
                    self.scope.names.insert(
                        index.name.clone(),
                        Binding {
                            kind: BindingKind::Index(i as f64),
                            span: index.span,
                            stmt: 0,
                        },
                    );
                    self.loop_stack.push((index.name.clone(), i));
                    let r = self.compile_range(ctx, b, body_start, body, vals);
                    self.loop_stack.pop();
                    self.scope.names.remove(&index.name);
                    r?;
                    let (v, d) = vals[body];
                    let combined = match kind {
                        ReduceKind::Sum => b.add(acc, v, span),
                        ReduceKind::Prod => b.mul(acc, v, span),
                        ReduceKind::LogSumExp => {
                            terms.push(v);
                            Ok(acc)
                        }
                    };
                    acc = combined.map_err(|c| self.fold_error(span, c))?;
                    deg = match kind {
                        ReduceKind::Sum => deg.max(d),
                        ReduceKind::Prod => binary_degree(BinOp::Mul, deg, Val::Const(0.0), d),
                        ReduceKind::LogSumExp if d.is_const() => deg,
                        ReduceKind::LogSumExp => Degree::Other,
                    };
                }
                if *kind == ReduceKind::LogSumExp {
                    acc = log_sum_exp(b, &terms, span).map_err(|c| self.fold_error(span, c))?;
                }
                (acc, deg)
            }
            NodeKind::Neg(a) => {
                let (v, deg) = at(vals, *a);
                (b.neg(v, span).map_err(|c| self.fold_error(span, c))?, deg)
            }
            NodeKind::Binary { op, lhs, rhs } => {
                let ((x, dx), (y, dy)) = (at(vals, *lhs), at(vals, *rhs));
                let r = match op {
                    BinOp::Add => b.add(x, y, span),
                    BinOp::Sub => b.sub(x, y, span),
                    BinOp::Mul => b.mul(x, y, span),
                    BinOp::Div => b.div(x, y, span),
                    BinOp::Pow => b.pow(x, y, span),
                };
                let v = r.map_err(|c| self.fold_error(span, c))?;
                (v, binary_degree(*op, dx, y, dy))
            }
            NodeKind::Call { func, args } => {
                let name = func.name.as_str();
                let want = match name {
                    "pow" => 2,
                    "mean" => {
                        if self
                            .data_scope
                            .as_ref()
                            .is_some_and(|s| s.mean_span == span)
                        {
                            // The per-example loss: the body, read on one row.
                            return Ok(at(vals, args[1]));
                        }
                        return Err(self.err(
                            span,
                            "`mean(…)` may only appear in the `minimize` statement (not in `let`, `noise`, `observe` or `escape`)",
                            "a finite sum here",
                        ));
                    }
                    "max" | "min" => 2,
                    "sum" | "prod" | "logsumexp" => {
                        return Err(self.err(
                            span,
                            format!("`{name}` needs an index range: `{name}(i = 1..n, EXPR)`"),
                            "expected `i = A..B` as the first argument",
                        ));
                    }
                    _ => match Func::from_name(name) {
                        Some(_) => 1,
                        None => {
                            let all = Func::ALL.iter().map(|f| f.name()).chain([
                                "pow",
                                "max",
                                "min",
                                "sum",
                                "prod",
                                "logsumexp",
                            ]);
                            let hint = suggest(name, all)
                                .map_or(String::new(), |s| format!("; did you mean `{s}`?"));
                            return Err(self.err(
                                func.span,
                                format!("unknown function `{name}`{hint}"),
                                "not a built-in function",
                            ));
                        }
                    },
                };
                if args.len() != want {
                    let plural = if want == 1 { "" } else { "s" };
                    return Err(self.err(
                        span,
                        format!(
                            "`{name}` takes {want} argument{plural}, found {}",
                            args.len()
                        ),
                        format!("expected {want} argument{plural}"),
                    ));
                }
                if name == "pow" {
                    let ((x, dx), (y, dy)) = (at(vals, args[0]), at(vals, args[1]));
                    let v = b.pow(x, y, span).map_err(|c| self.fold_error(span, c))?;
                    (v, binary_degree(BinOp::Pow, dx, y, dy))
                } else if name == "max" || name == "min" {
                    let ((x, dx), (y, dy)) = (at(vals, args[0]), at(vals, args[1]));
                    if (x.as_const().is_none() || y.as_const().is_none())
                        && self.warned.insert(span)
                    {
                        self.warnings.push(self.source.diagnostic(
                            span,
                            format!("`{name}` is not differentiable where its arguments are equal (hasme takes the derivative of the first there)"),
                            "non-smooth",
                        ));
                    }
                    let v = if name == "max" {
                        b.max(x, y, span)
                    } else {
                        b.min(x, y, span)
                    };
                    let v = v.map_err(|c| self.fold_error(span, c))?;
                    let degree = if dx.is_const() && dy.is_const() {
                        Degree::Poly(0)
                    } else {
                        Degree::Other
                    };
                    (v, degree)
                } else {
                    let f = Func::from_name(name).ok_or_else(|| self.internal())?;
                    let (x, dx) = at(vals, args[0]);
                    let kink = match f {
                        Func::Abs => Some("+1"),
                        Func::Relu => Some("0"),
                        _ => None,
                    };
                    if let Some(derivative) = kink
                        && x.as_const().is_none()
                        && self.warned.insert(span)
                    {
                        self.warnings.push(self.source.diagnostic(
                            span,
                            format!("`{name}` is not differentiable at 0 (hasme takes the derivative {derivative} there)"),
                            "non-smooth",
                        ));
                    }
                    let v = b.func(f, x, span).map_err(|c| self.fold_error(span, c))?;
                    (
                        v,
                        if dx.is_const() {
                            Degree::Poly(0)
                        } else {
                            Degree::Other
                        },
                    )
                }
            }
            NodeKind::Column {
                data,
                column,
                index,
            } => {
                let inside = self.data_scope.as_ref().and_then(|s| {
                    (s.mean_span.start <= span.start && span.end <= s.mean_span.end)
                        .then_some(s.table)
                });
                let Some(t) = inside else {
                    let at = index.map_or(String::new(), |_| "[…]".to_string());
                    return Err(self.err(
                        span,
                        format!(
                            "`{}.{}{at}` reads a data column outside `mean(…)`: columns exist per example, inside `mean({}, …)` in the `minimize` statement",
                            data.name, column.name, data.name
                        ),
                        "not inside the finite sum",
                    ));
                };
                let (name, j) = match index {
                    // `find_mean` has checked the table and the column.
                    None => (column.name.clone(), self.column_position(t, &column.name)),
                    Some(i) => {
                        let ispan = ctx.expr.nodes[*i as usize].span;
                        let v = self.integer_index(at(vals, *i).0, ispan)?;
                        if v < 0.0 {
                            return Err(self.loop_err(
                                ispan,
                                format!("a column index must be ≥ 0 (its digits end the column's name), found {v}"),
                                "negative",
                            ));
                        }
                        let name = format!("{}{}", column.name, v as u64);
                        let j = self.column_position(t, &name);
                        (name, j)
                    }
                };
                let Some(j) = j else {
                    let all = &self.tables[t].table.columns;
                    let hint = suggest(&name, all.iter().map(String::as_str))
                        .map_or(String::new(), |s| format!("; did you mean `{s}`?"));
                    return Err(self.loop_err(
                        Span::new(column.span.start, span.end),
                        format!(
                            "`{}` has no column `{name}`{hint} (its columns: {})",
                            data.name,
                            list_names(all)
                        ),
                        "no such column",
                    ));
                };
                let Some(scope) = self.data_scope.as_mut() else {
                    return Err(self.internal());
                };
                let columns = &mut scope.columns;
                let pos = match columns.iter().position(|&c| c == j) {
                    Some(pos) => pos,
                    None => {
                        columns.push(j);
                        columns.len() - 1
                    }
                };
                (b.column(pos, span), Degree::Poly(0))
            }
        })
    }

    /// Index of the column called `name` in table `t`.
    fn column_position(&self, t: usize, name: &str) -> Option<usize> {
        self.tables[t].table.columns.iter().position(|c| c == name)
    }

    /// A loop bound: an integer constant.
    pub(crate) fn loop_bound(&self, v: Val, span: Span) -> CheckResult<i64> {
        match v {
            Val::Const(c) if c.fract() == 0.0 && c.abs() <= 1e15 => Ok(c as i64),
            Val::Const(c) => Err(self.loop_err(
                span,
                format!("a loop bound must be an integer, found {c}"),
                "not an integer",
            )),
            Val::Slot(_) => Err(self.err(
                span,
                "a loop bound must be a constant (numbers, params and enclosing loop indices)",
                "depends on the variables",
            )),
        }
    }

    /// An error inside `sum`/`prod` bodies names the loop indices' values.
    pub(crate) fn loop_err(&self, span: Span, message: String, label: &str) -> CheckFailure {
        let mut d = self.source.diagnostic(span, message, label);
        if !self.loop_stack.is_empty() {
            let at: Vec<String> = self
                .loop_stack
                .iter()
                .map(|(n, v)| format!("{n} = {v}"))
                .collect();
            d = d.with_note(format!("when {}", at.join(", ")));
        }
        CheckFailure::Diag(Box::new(d))
    }
}

/// Most nodes one expression may unroll to (sum of iterations × body sizes): keeps a
/// typo like `sum(i = 1..1e9, …)` from hanging the checker.
pub const UNROLL_BUDGET: u64 = 20_000_000;

/// Where each subtree starts in the post-order arena, and which nodes begin the body
/// of a `sum`/`prod` (with that body's root and the Reduce node owning it).
pub(crate) struct Layout {
    pub(crate) start: Vec<usize>,
    pub(crate) body_at: Vec<Option<(usize, usize)>>,
}

impl Layout {
    fn of(expr: &Expr) -> Layout {
        let n = expr.nodes.len();
        let mut start: Vec<usize> = (0..n).collect();
        let mut body_at = vec![None; n];
        for (k, node) in expr.nodes.iter().enumerate() {
            for c in node.kind.children() {
                start[k] = start[k].min(start[c as usize]);
            }
            if let NodeKind::Reduce { body, .. } = node.kind {
                body_at[start[body as usize]] = Some((body as usize, k));
            }
        }
        Layout { start, body_at }
    }
}

/// What every node of one expression compiles against.
pub(crate) struct Ctx<'e> {
    pub(crate) expr: &'e Expr,
    pub(crate) layout: &'e Layout,
    pub(crate) stmt: usize,
    pub(crate) constant: Option<&'e str>,
    pub(crate) lets: &'e [(Val, Degree)],
    pub(crate) budget: u64,
}

/// `log Σ exp(z_k)` over the terms, shifted by their largest: with `m = max_k z_k`
/// (binary `max`, a tie taking the first), `m + log Σ exp(z_k − m)`. Every exponent is
/// ≤ 0 and one is 0, so nothing overflows and the sum is ≥ 1; and since the identity
/// holds for every `m`, the derivatives are exact wherever the maximum switches.
fn log_sum_exp(b: &mut TapeBuilder, terms: &[Val], span: Span) -> Result<Val, f64> {
    let mut m = terms[0];
    for &z in &terms[1..] {
        m = b.max(m, z, span)?;
    }
    let mut sum = Val::Const(0.0);
    for &z in terms {
        let shifted = b.sub(z, m, span)?;
        let e = b.func(Func::Exp, shifted, span)?;
        sum = b.add(sum, e, span)?;
    }
    let log = b.func(Func::Log, sum, span)?;
    b.add(m, log, span)
}

/// Column names for a message: all of them, or the first ten and a count.
fn list_names(all: &[String]) -> String {
    if all.len() <= 12 {
        all.join(", ")
    } else {
        format!("{}, … ({} in all)", all[..10].join(", "), all.len())
    }
}

fn binary_degree(op: BinOp, dx: Degree, y: Val, dy: Degree) -> Degree {
    match op {
        BinOp::Add | BinOp::Sub => dx.max(dy),
        BinOp::Mul => match (dx, dy) {
            (Degree::Poly(a), Degree::Poly(b)) => Degree::Poly(a.saturating_add(b)),
            _ => Degree::Other,
        },
        BinOp::Div => {
            if dy.is_const() {
                dx
            } else {
                Degree::Other
            }
        }
        BinOp::Pow => match (dx, y.as_const().and_then(integer_exponent)) {
            (Degree::Poly(0), _) if dy.is_const() => Degree::Poly(0),
            (Degree::Poly(a), Some(n)) if n >= 0 => Degree::Poly(a.saturating_mul(n as u32)),
            _ => Degree::Other,
        },
    }
}
