//! The `noise` statement: Σ = s²I, diag(v) or a full matrix, compiled to a tape of its
//! entries, with the checks that can be made before any point is known (entry count,
//! non-negative variances, symmetry and PSD of constant entries, which entries must be
//! compared at evaluation time) and whether Σ is constant.

use super::scope::{Binding, BindingKind};
use super::{CheckResult, Checker};
use crate::lang::Span;
use crate::lang::ast::*;
use crate::models::SYMMETRY_TOLERANCE;
use crate::problem::eval::min_eigenvalue_if_negative;
use crate::problem::{NoiseKind, NoiseTape};
use crate::tape::{TapeBuilder, Val};
use nalgebra::DMatrix;

pub(crate) struct CompiledNoise {
    pub(crate) tape: NoiseTape,
    pub(crate) constant: bool,
}

impl Checker<'_> {
    pub(crate) fn compile_noise(
        &mut self,
        n: &Noise,
        span: Span,
        k: usize,
        d: usize,
    ) -> CheckResult<CompiledNoise> {
        let mut b = TapeBuilder::new(d);
        let lets = self.compile_lets(&mut b)?;
        let mut constant = true;
        let mut runtime_symmetry = Vec::new();
        let (kind, outputs) = match n {
            Noise::Sd(e) => {
                let (s, deg) = self.compile(e, k, &mut b, None, &lets)?;
                constant &= deg.is_const();
                let var = b
                    .mul(s, s, e.span())
                    .map_err(|_| self.err(e.span(), "the noise variance overflows", "too large"))?;
                (NoiseKind::Sd, vec![(var, e.span())])
            }
            Noise::Diag(list) => {
                // An entry that is a bare vector param (`noise diag [v, 0.1]` with
                // `param v[n]`) stands for all its entries, so long diagonals need not
                // be written out.
                let mut outs: Vec<(Val, Span)> = Vec::new();
                for e in &list.items {
                    if let [
                        Node {
                            kind: NodeKind::Name(n),
                            span,
                        },
                    ] = e.nodes.as_slice()
                        && let Some(Binding {
                            kind: BindingKind::ParamVec(p),
                            ..
                        }) = self.scope.names.get(n).copied()
                    {
                        self.resolve(n, *span, k, None)?;
                        for &c in &self.scope.param_vecs[p].1 {
                            if c < 0.0 {
                                return Err(self.err(
                                    *span,
                                    format!("a variance must be ≥ 0, but `{n}` has the entry {c}"),
                                    "negative variance",
                                ));
                            }
                            outs.push((Val::Const(c), *span));
                        }
                        continue;
                    }
                    let (v, deg) = self.compile(e, k, &mut b, None, &lets)?;
                    constant &= deg.is_const();
                    if let Val::Const(c) = v
                        && c < 0.0
                    {
                        return Err(self.err(
                            e.span(),
                            format!("a variance must be ≥ 0, found {c}"),
                            "negative variance",
                        ));
                    }
                    outs.push((v, e.span()));
                }
                if outs.len() != d {
                    return Err(self.err(
                        list.span,
                        format!(
                            "`noise diag` needs {d} entries (one variance per variable), found {}",
                            outs.len()
                        ),
                        format!("expected {d} entries"),
                    ));
                }
                (NoiseKind::Diag, outs)
            }
            Noise::Cov { rows, span: mspan } => {
                if rows.len() != d {
                    return Err(self.err(
                        *mspan,
                        format!(
                            "`noise cov` needs a {d}×{d} matrix, found {} rows",
                            rows.len()
                        ),
                        format!("expected {d} rows"),
                    ));
                }
                let mut vals: Vec<(Val, Span)> = Vec::with_capacity(d * d);
                for (i, row) in rows.iter().enumerate() {
                    if row.items.len() != d {
                        return Err(self.err(
                            row.span,
                            format!(
                                "row {} of `noise cov` has {} entries; the matrix must be {d}×{d}",
                                i + 1,
                                row.items.len()
                            ),
                            format!("expected {d} entries"),
                        ));
                    }
                    for e in &row.items {
                        let (v, deg) = self.compile(e, k, &mut b, None, &lets)?;
                        constant &= deg.is_const();
                        vals.push((v, e.span()));
                    }
                }
                for i in 0..d {
                    for j in i + 1..d {
                        let (a, sa) = vals[i * d + j];
                        let (c, _) = vals[j * d + i];
                        match (a, c) {
                            (Val::Const(x), Val::Const(y)) => {
                                if (x - y).abs() > SYMMETRY_TOLERANCE * x.abs().max(y.abs()) {
                                    return Err(self.err(
                                        sa,
                                        format!(
                                            "the covariance is not symmetric: entry ({}, {}) = {x} but entry ({}, {}) = {y}",
                                            i + 1,
                                            j + 1,
                                            j + 1,
                                            i + 1
                                        ),
                                        "must equal its mirror entry",
                                    ));
                                }
                            }
                            (x, y) if x == y => {}
                            _ => runtime_symmetry.push((i * d + j, j * d + i)),
                        }
                    }
                }
                if vals.iter().all(|(v, _)| v.as_const().is_some()) {
                    let m = DMatrix::from_row_iterator(
                        d,
                        d,
                        vals.iter().map(|(v, _)| v.as_const().unwrap_or(0.0)),
                    );
                    if let Some(min) = min_eigenvalue_if_negative(&m) {
                        return Err(self.err(
                            *mspan,
                            format!("the covariance is not positive semidefinite (smallest eigenvalue {min:e})"),
                            "not a covariance matrix",
                        ));
                    }
                }
                (NoiseKind::Cov, vals)
            }
        };
        Ok(CompiledNoise {
            tape: NoiseTape {
                kind,
                tape: b.finish(&outputs),
                runtime_symmetry,
                span,
            },
            constant,
        })
    }
}
