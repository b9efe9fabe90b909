//! Vectors and matrices: the sizes of `param NAME[…]` and `var NAME[…]` declarations
//! (one length or two), param literals held against their shape, variables laid out as
//! named coordinates (`w[i]`; `W[i,j]` row-major, no spaces), and entries `w[i]`,
//! `W[i, j]` resolved with their indices checked against the shape (docs/language.md,
//! "Matrices, random starts and indexed columns").

use super::compile::{Ctx, Degree};
use super::scope::BindingKind;
use super::{CheckResult, Checker};
use crate::lang::Span;
use crate::lang::ast::*;
use crate::problem::{MAX_DIMENSION, MatrixVar, ParamMatrix, VectorVar};
use crate::tape::{TapeBuilder, Val};

/// Most entries a matrix param may hold (8 MB of numbers): a typo such as
/// `param A[5000, 5000] = 0` is refused rather than filling memory.
pub const MAX_PARAM_ENTRIES: usize = 1_000_000;

/// The shape of a declaration: `[n]` or `[rows, cols]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Shape {
    Vector(usize),
    Matrix(usize, usize),
}

impl Shape {
    /// Number of entries.
    pub(crate) fn len(self) -> usize {
        match self {
            Shape::Vector(n) => n,
            Shape::Matrix(r, c) => r * c,
        }
    }
}

/// The name of entry `i` (0-based, row-major) of an array named `name`: `w[3]`,
/// `W[2,1]` (1-based, no spaces).
pub(crate) fn entry_name(name: &str, shape: Shape, i: usize) -> String {
    match shape {
        Shape::Vector(_) => format!("{name}[{}]", i + 1),
        Shape::Matrix(_, c) => format!("{name}[{},{}]", i / c + 1, i % c + 1),
    }
}

impl Checker<'_> {
    /// A length of a vector or matrix: a constant integer in 1..=MAX_DIMENSION.
    pub(crate) fn size_of(&mut self, e: &Expr, stmt: usize, what: &str) -> CheckResult<usize> {
        let v = self.constant_of(e, stmt, what)?;
        if v.fract() != 0.0 || v < 1.0 || v > MAX_DIMENSION as f64 {
            return Err(self.err(
                e.span(),
                format!("{what} must be an integer from 1 to {MAX_DIMENSION}, found {v}"),
                "not a valid length",
            ));
        }
        Ok(v as usize)
    }

    /// The shape of `[n]` or `[rows, cols]`; a third length is an error at its place.
    pub(crate) fn shape_of(&mut self, size: &Size, stmt: usize) -> CheckResult<Shape> {
        match size.dims.as_slice() {
            [n] => Ok(Shape::Vector(self.size_of(n, stmt, "a vector length")?)),
            [r, c] => Ok(Shape::Matrix(
                self.size_of(r, stmt, "a number of rows")?,
                self.size_of(c, stmt, "a number of columns")?,
            )),
            [_, _, third, ..] => Err(self.err(
                third.span(),
                format!(
                    "at most two lengths: a vector `[n]` or a matrix `[rows, cols]`, found {}",
                    size.dims.len()
                ),
                "a third length",
            )),
            [] => Err(self.internal()),
        }
    }

    /// `param NAME[n] = …` or `param NAME[r, c] = …`: the values checked against the
    /// shape, then `--set NAME=v` (every entry) and `--set NAME[i]=v` /
    /// `--set NAME[i,j]=v` (one entry) applied.
    pub(crate) fn declare_param_array(
        &mut self,
        name: &Ident,
        size: &Size,
        value: &ParamValue,
        stmt: usize,
    ) -> CheckResult<()> {
        let shape = self.shape_of(size, stmt)?;
        if shape.len() > MAX_PARAM_ENTRIES {
            return Err(self.err(
                size.span,
                format!(
                    "`{}` would hold {} entries, more than the {MAX_PARAM_ENTRIES} a param may hold",
                    name.name,
                    shape.len()
                ),
                "too large",
            ));
        }
        let mut values = match (value, shape) {
            (ParamValue::Scalar(e), _) => {
                vec![self.constant_of(e, stmt, "a param value")?; shape.len()]
            }
            (ParamValue::List(l), Shape::Vector(n)) => {
                if l.items.len() != n {
                    return Err(self.err(
                        l.span,
                        format!(
                            "`{}` is declared with {n} entries but the list has {}",
                            name.name,
                            l.items.len()
                        ),
                        format!("expected {n} entries"),
                    ));
                }
                self.constants_of(&l.items, stmt)?
            }
            (ParamValue::Matrix { rows, span }, Shape::Matrix(r, c)) => {
                if rows.len() != r {
                    return Err(self.err(
                        *span,
                        format!(
                            "`{}` is declared {r}×{c} but the matrix has {} rows",
                            name.name,
                            rows.len()
                        ),
                        format!("expected {r} rows"),
                    ));
                }
                let mut v = Vec::with_capacity(r * c);
                for (i, row) in rows.iter().enumerate() {
                    if row.items.len() != c {
                        return Err(self.err(
                            row.span,
                            format!(
                                "row {} of `{}` has {} entries; `{}` is declared {r}×{c}",
                                i + 1,
                                name.name,
                                row.items.len(),
                                name.name
                            ),
                            format!("expected {c} entries"),
                        ));
                    }
                    v.extend(self.constants_of(&row.items, stmt)?);
                }
                v
            }
            (ParamValue::List(l), Shape::Matrix(r, c)) => {
                return Err(self.err(
                    l.span,
                    format!(
                        "`{}` is a {r}×{c} matrix: give its rows, `[[…], …]`, or one constant for every entry",
                        name.name
                    ),
                    "a list for a matrix",
                ));
            }
            (ParamValue::Matrix { span, .. }, Shape::Vector(n)) => {
                return Err(self.err(
                    *span,
                    format!(
                        "`{}` is a vector of {n} entries: give a list, `[…]`, or declare a matrix, `param {}[rows, cols]`",
                        name.name, name.name
                    ),
                    "a matrix for a vector",
                ));
            }
        };
        if let Some(all) = self.overrides.get(&name.name) {
            values.iter_mut().for_each(|v| *v = all);
        }
        for (i, v) in values.iter_mut().enumerate() {
            if let Some(o) = self.overrides.get(&entry_name(&name.name, shape, i)) {
                *v = o;
            }
        }
        match shape {
            Shape::Vector(_) => {
                let index = self.scope.param_vecs.len();
                self.define(name, BindingKind::ParamVec(index), stmt)?;
                self.scope.param_vecs.push((name.name.clone(), values));
            }
            Shape::Matrix(rows, cols) => {
                let index = self.scope.param_mats.len();
                self.define(name, BindingKind::ParamMat(index), stmt)?;
                self.scope.param_mats.push(ParamMatrix {
                    name: name.name.clone(),
                    rows,
                    cols,
                    values,
                });
            }
        }
        Ok(())
    }

    fn constants_of(&mut self, items: &[Expr], stmt: usize) -> CheckResult<Vec<f64>> {
        items
            .iter()
            .map(|e| self.constant_of(e, stmt, "a param value"))
            .collect()
    }

    /// Whether `--set NAME=…` names a param: a scalar, a whole vector or matrix, or one
    /// entry (`a[2]`, `A[1,2]`).
    pub(crate) fn is_param_name(&self, name: &str) -> bool {
        let s = &self.scope;
        if s.params.iter().any(|(p, _)| p == name) {
            return true;
        }
        let entry = |base: &str, shape: Shape| {
            name == base
                || name
                    .strip_prefix(base)
                    .is_some_and(|rest| rest.starts_with('['))
                    && (0..shape.len()).any(|i| entry_name(base, shape, i) == name)
        };
        s.param_vecs
            .iter()
            .any(|(p, v)| entry(p, Shape::Vector(v.len())))
            || s.param_mats
                .iter()
                .any(|m| entry(&m.name, Shape::Matrix(m.rows, m.cols)))
    }

    /// Lays out a vector or matrix variable's coordinates after the current ones, with
    /// their start values (one per entry, row-major; the caller has checked the count
    /// against [`MAX_DIMENSION`]).
    pub(crate) fn declare_var_array(
        &mut self,
        name: &Ident,
        shape: Shape,
        starts: Vec<f64>,
        stmt: usize,
    ) -> CheckResult<()> {
        let start = self.scope.vars.len();
        let kind = match shape {
            Shape::Vector(len) => BindingKind::VarVec { start, len },
            Shape::Matrix(rows, cols) => BindingKind::VarMat { start, rows, cols },
        };
        self.define(name, kind, stmt)?;
        for (i, s) in starts.into_iter().enumerate() {
            self.scope.vars.push((entry_name(&name.name, shape, i), s));
        }
        match shape {
            Shape::Vector(len) => self.scope.vector_vars.push(VectorVar {
                name: name.name.clone(),
                start,
                len,
            }),
            Shape::Matrix(rows, cols) => self.scope.matrix_vars.push(MatrixVar {
                name: name.name.clone(),
                start,
                rows,
                cols,
            }),
        }
        Ok(())
    }

    /// `name[i]` or `name[i, j]`: a param's entry (a constant) or a variable's
    /// coordinate, each index an integer constant within the shape.
    pub(crate) fn compile_index(
        &mut self,
        ctx: &Ctx<'_>,
        b: &mut TapeBuilder,
        name: &Ident,
        indices: &[NodeId],
        span: Span,
        vals: &[(Val, Degree)],
    ) -> CheckResult<(Val, Degree)> {
        let binding = self.resolve(&name.name, name.span, ctx.stmt, ctx.constant)?;
        let n = &name.name;
        let (shape, what) = match binding.kind {
            BindingKind::ParamVec(p) => (Shape::Vector(self.scope.param_vecs[p].1.len()), "param"),
            BindingKind::ParamMat(p) => {
                let m = &self.scope.param_mats[p];
                (Shape::Matrix(m.rows, m.cols), "param")
            }
            BindingKind::VarVec { len, .. } => (Shape::Vector(len), "variable"),
            BindingKind::VarMat { rows, cols, .. } => (Shape::Matrix(rows, cols), "variable"),
            _ => {
                return Err(self.err(
                    name.span,
                    format!(
                        "`{n}` is not a vector, so it cannot be indexed (only vectors and matrices are)"
                    ),
                    "not a vector or matrix",
                ));
            }
        };
        let ispan = |k: usize| ctx.expr.nodes[indices[k] as usize].span;
        match (shape, indices.len()) {
            (_, k) if k > 2 => {
                return Err(self.err(
                    ispan(2),
                    format!("at most two indices, `{n}[i]` or `{n}[i, j]`, found {k}"),
                    "a third index",
                ));
            }
            (Shape::Vector(len), 2) => {
                return Err(self.err(
                    ispan(1),
                    format!(
                        "`{n}` is a {what} vector of {len} entries: it takes one index, `{n}[i]`"
                    ),
                    "a second index",
                ));
            }
            (Shape::Matrix(r, c), 1) => {
                return Err(self.err(
                    span,
                    format!("`{n}` is a {r}×{c} {what} matrix: it takes two indices, `{n}[i, j]`"),
                    "one index",
                ));
            }
            _ => {}
        }
        let (limits, axes): (Vec<usize>, [&str; 2]) = match shape {
            Shape::Vector(len) => (vec![len], ["", ""]),
            Shape::Matrix(r, c) => (vec![r, c], ["row ", "column "]),
        };
        let mut at = [0usize; 2];
        for (k, &limit) in limits.iter().enumerate() {
            let i = self.integer_index(vals[indices[k] as usize].0, ispan(k))?;
            if i < 1.0 || i > limit as f64 {
                let kind = match shape {
                    Shape::Vector(_) => format!("the {what} vector `{n}`"),
                    Shape::Matrix(r, c) => format!("the {r}×{c} {what} matrix `{n}`"),
                };
                return Err(self.loop_err(
                    ispan(k),
                    format!(
                        "{}index {i} is out of range for {kind} (valid: 1..{limit})",
                        axes[k]
                    ),
                    "out of range",
                ));
            }
            at[k] = i as usize - 1;
        }
        let i = match shape {
            Shape::Vector(_) => at[0],
            Shape::Matrix(_, c) => at[0] * c + at[1],
        };
        Ok(match binding.kind {
            BindingKind::ParamVec(p) => {
                (Val::Const(self.scope.param_vecs[p].1[i]), Degree::Poly(0))
            }
            BindingKind::ParamMat(p) => (
                Val::Const(self.scope.param_mats[p].values[i]),
                Degree::Poly(0),
            ),
            BindingKind::VarVec { start, .. } | BindingKind::VarMat { start, .. } => {
                (b.var(start + i, span), Degree::Poly(1))
            }
            _ => return Err(self.internal()),
        })
    }

    /// An index: an integer constant (numbers, params, loop indices).
    pub(crate) fn integer_index(&self, v: Val, span: Span) -> CheckResult<f64> {
        match v {
            Val::Const(c) if c.fract() == 0.0 => Ok(c),
            Val::Const(c) => Err(self.loop_err(
                span,
                format!("an index must be an integer, found {c}"),
                "not an integer",
            )),
            Val::Slot(_) => Err(self.err(
                span,
                "an index must be a constant (numbers, params and loop indices)",
                "depends on the variables",
            )),
        }
    }
}
