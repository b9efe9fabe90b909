//! Evaluation of a checked problem at points: f, ∇f, ∇²f (by the tape's forward and
//! reverse modes, reusable buffers for hot loops), Σ(x) with its symmetry and PSD
//! checks, the observables and the escape margin. Every non-finite number becomes an
//! error naming the expression, its place in the file and the point.

use super::{Derivatives, NoiseKind, Problem, ProblemError};
use crate::data::FiniteSum;
use crate::lang::Sources;
use crate::models::{Local, PSD_TOLERANCE, SYMMETRY_TOLERANCE};
use crate::tape::{Derivs, Jets, NonFinite, Workspace};
use nalgebra::{DMatrix, DVector, SymmetricEigen};
use rayon::prelude::*;
use std::cell::RefCell;

/// Rows per parallel chunk of a finite sum's Hessian-vector product: the chunks are
/// fixed by n alone, so the sums are the same on any number of threads.
const HVP_CHUNK: usize = 256;

/// One chunk's sums of F_i, ∇F_i and ∇²F_i·v.
type ChunkSums = (f64, Vec<f64>, Vec<f64>);

thread_local! {
    /// The buffers of the chunks a thread evaluates (no allocation once grown).
    static CHUNK_WORKSPACE: RefCell<Workspace> = RefCell::new(Workspace::default());
}

// Σ is checked with the models' own tolerances, so the problem accepts exactly the
// covariances the models read: mirror entries may differ by round-off
// (`SYMMETRY_TOLERANCE`: `0.3` and `0.1*3` differ by an ulp), and an eigenvalue counts
// as negative only beyond the eigensolver's round-off (`PSD_TOLERANCE`).

impl Problem {
    pub(super) fn check_point(&self, x: &[f64]) -> Result<(), ProblemError> {
        if x.len() != self.dim() {
            return Err(ProblemError::Usage(format!(
                "the point has {} coordinates but the problem has {} variables",
                x.len(),
                self.dim()
            )));
        }
        if let Some(i) = x.iter().position(|v| !v.is_finite()) {
            return Err(ProblemError::Usage(format!(
                "coordinate `{}` of the point is not finite",
                self.variables[i]
            )));
        }
        Ok(())
    }

    /// A d×d matrix (`what`) may be formed: d ≤ [`DENSE_LIMIT`](super::DENSE_LIMIT).
    pub(super) fn check_dense(&self, what: &str) -> Result<(), ProblemError> {
        let d = self.dim();
        if d <= super::DENSE_LIMIT {
            return Ok(());
        }
        Err(ProblemError::Usage(format!(
            "{what} of {d} variables is a {d}×{d} matrix ({} MB), beyond the dense limit of {} variables: use the matrix-free coefficients (--linear-algebra krylov with gf, sme1, sme2 or hasme; a finite sum's noise then needs no d×d matrix)",
            d * d * 8 / 1_000_000,
            super::DENSE_LIMIT
        )))
    }

    pub(super) fn eval_error(&self, nf: NonFinite, x: &[f64]) -> ProblemError {
        self.eval_error_in(Sources::file(&self.source), nf, x)
    }

    /// An evaluation error of a tape whose spans point into `sources`.
    pub(super) fn eval_error_in(
        &self,
        sources: Sources<'_>,
        nf: NonFinite,
        x: &[f64],
    ) -> ProblemError {
        let expr = sources.snippet(nf.span).to_string();
        // Only the default observables have no source text; of them only `norm2` can
        // overflow (the coordinates themselves are finite).
        let expr = if expr.is_empty() {
            "norm2 = Σ x_i² (the default observable)".to_string()
        } else {
            expr
        };
        let expr = if expr.chars().count() > 60 {
            format!("{}…", expr.chars().take(60).collect::<String>())
        } else {
            expr
        };
        let message = if nf.in_derivative {
            format!(
                "a derivative of `{expr}` is not finite at {}",
                self.format_point(x)
            )
        } else {
            format!(
                "`{expr}` evaluates to {} at {}",
                nf.value,
                self.format_point(x)
            )
        };
        let label = if nf.in_derivative {
            "not differentiable here"
        } else {
            "not a finite number here"
        };
        ProblemError::Eval(Box::new(sources.diagnostic(nf.span, message, label)))
    }

    /// f(x). For a finite sum, the mean of the per-example losses.
    pub fn value(&self, x: &[f64]) -> Result<f64, ProblemError> {
        self.check_point(x)?;
        match &self.finite_sum {
            Some(fs) if !fs.columns.is_empty() => {
                let mut input = x.to_vec();
                let mut slots = Vec::new();
                let mut out = [0.0];
                let mut sum = 0.0;
                for i in 0..fs.n {
                    input.truncate(x.len());
                    input.extend_from_slice(fs.row(i));
                    self.objective
                        .values_with(&input, &mut slots, &mut out)
                        .map_err(|nf| self.row_eval_error(nf, x, i))?;
                    sum += out[0];
                }
                Ok(sum / fs.n as f64)
            }
            _ => {
                let v = self
                    .objective
                    .values(x)
                    .map_err(|nf| self.eval_error(nf, x))?;
                Ok(v[0])
            }
        }
    }

    /// Value, gradient and Hessian of f at x.
    pub fn objective_derivatives(&self, x: &[f64]) -> Result<Derivs, ProblemError> {
        let mut jets = Jets::default();
        self.objective_derivatives_with(x, &mut Workspace::default(), &mut jets)?;
        Ok(jets.derivs(0))
    }

    /// Value and gradient of f at x into `jets` (Hessians left empty), by reverse mode:
    /// for a finite sum, the mean over the rows of the per-example gradients. No
    /// allocation once the buffers have grown.
    ///
    /// ```
    /// use hasme::Problem;
    /// use hasme::tape::{Jets, Workspace};
    /// let p = Problem::from_str("data t = [[a], [1], [3]]\nvar x = 0\nminimize mean(t, 0.5*(x - t.a)^2)").unwrap();
    /// let (mut ws, mut jets) = (Workspace::default(), Jets::default());
    /// p.gradient_with(&[0.0], &mut ws, &mut jets).unwrap();
    /// assert_eq!(jets.gradient(0), &[-2.0]);
    /// ```
    pub fn gradient_with(
        &self,
        x: &[f64],
        ws: &mut Workspace,
        jets: &mut Jets,
    ) -> Result<(), ProblemError> {
        self.check_point(x)?;
        let Some(fs) = self.finite_sum.as_ref().filter(|fs| !fs.columns.is_empty()) else {
            return self
                .objective
                .gradients_with(x, ws, jets)
                .map_err(|nf| self.eval_error(nf, x));
        };
        let d = self.dim();
        let mut sum = std::mem::take(&mut ws.scratch);
        sum.clear();
        sum.resize(d + 1, 0.0);
        let result = self.each_example_gradient(fs, x, ws, jets, |_, row| {
            sum[d] += row.values[0];
            for (s, g) in sum.iter_mut().zip(row.gradient(0)) {
                *s += g;
            }
        });
        if result.is_ok() {
            let n = fs.n as f64;
            jets.reset_gradients(d, self.objective.outputs());
            jets.values[0] = sum[d] / n;
            for (g, s) in jets.gradients.iter_mut().zip(&sum) {
                *g = s / n;
            }
        }
        ws.scratch = sum;
        result
    }

    /// f(x), with ∇f(x) into `grad` and the Hessian-vector product ∇²f(x)·v into `hv`,
    /// without forming ∇²f: one forward pass in dual numbers seeded with v and one
    /// reverse sweep (per row of a finite sum, whose mean it takes). A few tape passes
    /// whatever d, against d of them for the whole Hessian: the product Krylov methods
    /// (Lanczos, MINRES) are built on. No allocation once `ws` has grown.
    ///
    /// ```
    /// use hasme::Problem;
    /// use hasme::tape::Workspace;
    /// let p = Problem::from_str("var x, y\nminimize x^2*y + y^3")?;
    /// let (mut g, mut hv) = ([0.0; 2], [0.0; 2]);
    /// let f = p.hessian_vector_with(&[1.0, 2.0], &[1.0, -1.0], &mut Workspace::default(), &mut g, &mut hv)?;
    /// assert_eq!((f, g, hv), (10.0, [4.0, 13.0], [4.0 - 2.0, 2.0 - 12.0])); // H = [[2y, 2x], [2x, 6y]]
    /// # Ok::<(), hasme::ProblemError>(())
    /// ```
    pub fn hessian_vector_with(
        &self,
        x: &[f64],
        v: &[f64],
        ws: &mut Workspace,
        grad: &mut [f64],
        hv: &mut [f64],
    ) -> Result<f64, ProblemError> {
        self.check_point(x)?;
        let d = self.dim();
        if v.len() != d || grad.len() != d || hv.len() != d {
            return Err(ProblemError::Usage(format!(
                "a Hessian-vector product over {d} variables needs a direction and outputs of {d} entries (got {}, {} and {})",
                v.len(),
                grad.len(),
                hv.len()
            )));
        }
        grad.fill(0.0);
        hv.fill(0.0);
        let Some(fs) = self.finite_sum.as_ref().filter(|fs| !fs.columns.is_empty()) else {
            return self
                .objective
                .hessian_vector_row(0, x, &[], v, ws, grad, hv)
                .map_err(|nf| self.eval_error(nf, x));
        };
        // Chunks of rows in parallel, each summed in row order and the chunk sums added
        // in chunk order: the same bits on any number of threads.
        let mut sum = 0.0;
        if fs.n <= HVP_CHUNK {
            sum = self.hessian_vector_rows_with(fs, x, v, 0..fs.n, ws, grad, hv)?;
        } else {
            let starts: Vec<usize> = (0..fs.n).step_by(HVP_CHUNK).collect();
            let parts: Vec<Result<ChunkSums, ProblemError>> = starts
                .par_iter()
                .map(|&start| {
                    CHUNK_WORKSPACE.with(|cell| {
                        let ws = &mut cell.borrow_mut();
                        let (mut g, mut h) = (vec![0.0; d], vec![0.0; d]);
                        let rows = start..(start + HVP_CHUNK).min(fs.n);
                        let s =
                            self.hessian_vector_rows_with(fs, x, v, rows, ws, &mut g, &mut h)?;
                        Ok((s, g, h))
                    })
                })
                .collect();
            for part in parts {
                let (s, g, h) = part?;
                sum += s;
                grad.iter_mut().zip(&g).for_each(|(a, b)| *a += b);
                hv.iter_mut().zip(&h).for_each(|(a, b)| *a += b);
            }
        }
        // The mean as the dense derivatives take it: the sums scaled by 1/n.
        let scale = 1.0 / fs.n as f64;
        grad.iter_mut()
            .chain(hv.iter_mut())
            .for_each(|a| *a *= scale);
        Ok(sum * scale)
    }

    /// The sums over the examples `rows` of F_i, ∇F_i and ∇²F_i·v, `grad` and `hv`
    /// written (from zero), each entry's terms added in row order. Blocks of rows at
    /// once: each row's numbers are the scalar ones; when something is not finite, the
    /// sums start again row by row, which names the row.
    #[allow(clippy::too_many_arguments)]
    fn hessian_vector_rows_with(
        &self,
        fs: &FiniteSum,
        x: &[f64],
        v: &[f64],
        rows: std::ops::Range<usize>,
        ws: &mut Workspace,
        grad: &mut [f64],
        hv: &mut [f64],
    ) -> Result<f64, ProblemError> {
        let c = fs.columns.len();
        grad.fill(0.0);
        hv.fill(0.0);
        let block = &fs.rows[rows.start * c..rows.end * c];
        if let Some(sum) =
            (self.objective).hessian_vector_rows(0, x, v, block, rows.len(), &mut ws.rows, grad, hv)
        {
            return Ok(sum);
        }
        grad.fill(0.0);
        hv.fill(0.0);
        let mut sum = 0.0;
        for r in rows {
            sum += self
                .objective
                .hessian_vector_row(0, x, fs.row(r), v, ws, grad, hv)
                .map_err(|nf| self.row_eval_error(nf, x, r))?;
        }
        Ok(sum)
    }

    /// Value, gradient and Hessian of f at x into reusable buffers (no allocation
    /// after the first call): the form for hot loops.
    ///
    /// ```
    /// use hasme::Problem;
    /// use hasme::tape::{Jets, Workspace};
    /// let p = Problem::from_str("var x, y\nminimize x^2*y").unwrap();
    /// let (mut ws, mut jets) = (Workspace::default(), Jets::default());
    /// p.objective_derivatives_with(&[3.0, 2.0], &mut ws, &mut jets).unwrap();
    /// assert_eq!(jets.values[0], 18.0);
    /// assert_eq!(jets.gradient(0), &[12.0, 9.0]);
    /// assert_eq!(jets.hessian(0), &[4.0, 6.0, 6.0, 0.0]);
    /// ```
    pub fn objective_derivatives_with(
        &self,
        x: &[f64],
        ws: &mut Workspace,
        jets: &mut Jets,
    ) -> Result<(), ProblemError> {
        self.check_point(x)?;
        self.check_dense("the Hessian")?;
        match &self.finite_sum {
            Some(fs) if !fs.columns.is_empty() => self
                .objective
                .mean_derivatives_with(x, &fs.rows, ws, jets, |_| {})
                .map_err(|(i, nf)| self.row_eval_error(nf, x, i)),
            _ => self
                .objective
                .derivatives_with(x, ws, jets)
                .map_err(|nf| self.eval_error(nf, x)),
        }
    }

    /// Σ(x), checked symmetric and positive semidefinite.
    pub fn noise_cov(&self, x: &[f64]) -> Result<DMatrix<f64>, ProblemError> {
        self.check_dense("the noise covariance Σ")?;
        let d = self.dim();
        let mut out = vec![0.0; d * d];
        self.noise_cov_into(x, &mut NoiseBuffers::default(), &mut out)?;
        Ok(DMatrix::from_row_slice(d, d, &out))
    }

    /// Σ(x) into `out` (row-major d×d) with the same checks as [`Problem::noise_cov`]
    /// (finite, symmetric, positive semidefinite), reusing `buffers`: no allocation once
    /// they have grown, unless Σ(x) fails the PSD check (the error path computes the
    /// smallest eigenvalue for its message). The form for simulation loops.
    ///
    /// ```
    /// use hasme::Problem;
    /// use hasme::problem::NoiseBuffers;
    /// let p = Problem::from_str("var x, y\nminimize x^2 + y^2\nnoise cov [[1 + x^2, 0.5], [0.5, 1]]").unwrap();
    /// let mut out = [0.0; 4];
    /// p.noise_cov_into(&[1.0, 0.0], &mut NoiseBuffers::default(), &mut out).unwrap();
    /// assert_eq!(out, [2.0, 0.5, 0.5, 1.0]);
    /// ```
    pub fn noise_cov_into(
        &self,
        x: &[f64],
        buffers: &mut NoiseBuffers,
        out: &mut [f64],
    ) -> Result<(), ProblemError> {
        self.check_point(x)?;
        self.check_dense("the noise covariance Σ")?;
        let d = self.dim();
        assert_eq!(out.len(), d * d, "Σ has d² entries");
        if let Some(fs) = &self.finite_sum {
            return self.minibatch_cov_into(fs, x, buffers, out);
        }
        self.noise_values(x, buffers)?;
        let NoiseBuffers {
            values, scratch, ..
        } = buffers;
        out.fill(0.0);
        match self.noise.kind {
            NoiseKind::None | NoiseKind::Minibatch => {}
            NoiseKind::Sd => (0..d).for_each(|i| out[i * d + i] = values[0]),
            NoiseKind::Diag => (0..d).for_each(|i| out[i * d + i] = values[i]),
            NoiseKind::Cov => out.copy_from_slice(values),
        }
        for &(a, b) in &self.noise.runtime_symmetry {
            let (va, vb) = (values[a], values[b]);
            if (va - vb).abs() > SYMMETRY_TOLERANCE * va.abs().max(vb.abs()).max(f64::MIN_POSITIVE)
            {
                return Err(self.noise_error(
                    format!(
                        "Σ(x) is not symmetric at {}: entry ({}, {}) = {va} but entry ({}, {}) = {vb}",
                        self.format_point(x),
                        a / d + 1,
                        a % d + 1,
                        b / d + 1,
                        b % d + 1
                    ),
                    "this covariance",
                ));
            }
        }
        if !psd_within_tolerance(d, out, scratch) {
            let m = DMatrix::from_row_slice(d, d, out);
            if let Some(min) = min_eigenvalue_if_negative(&m) {
                return Err(self.noise_error(
                    format!(
                        "Σ(x) is not positive semidefinite at {}: smallest eigenvalue {min:e}",
                        self.format_point(x)
                    ),
                    "this covariance",
                ));
            }
        }
        Ok(())
    }

    /// The diagonal of Σ(x) (d entries) for `noise sd` and `noise diag`, whose Σ is
    /// diagonal: what the matrix-free simulators need, with no d×d matrix. Checked:
    /// finite (else the evaluation error) and non-negative up to round-off (an entry
    /// below −1e−12 of the largest is the covariance's fault: not positive
    /// semidefinite, naming the point and the entry).
    ///
    /// Errors also for any other kind of noise (a usage error: its Σ is not diagonal).
    ///
    /// ```
    /// use hasme::Problem;
    /// use hasme::problem::NoiseBuffers;
    /// let p = Problem::from_str("var x, y\nminimize x^2 + y^2\nnoise diag [1 + x^2, 0.5]").unwrap();
    /// let mut out = [0.0; 2];
    /// p.noise_diagonal_into(&[1.0, 0.0], &mut NoiseBuffers::default(), &mut out).unwrap();
    /// assert_eq!(out, [2.0, 0.5]);
    /// ```
    pub fn noise_diagonal_into(
        &self,
        x: &[f64],
        buffers: &mut NoiseBuffers,
        out: &mut [f64],
    ) -> Result<(), ProblemError> {
        self.check_point(x)?;
        let d = self.dim();
        let kind = self.noise.kind;
        if !matches!(kind, NoiseKind::Sd | NoiseKind::Diag) || out.len() != d {
            return Err(ProblemError::Usage(format!(
                "the diagonal of Σ is read for `noise sd` and `noise diag` into {d} entries (this noise is `{kind}`, the output has {})",
                out.len()
            )));
        }
        self.noise_values(x, buffers)?;
        let values = &buffers.values;
        match kind {
            NoiseKind::Sd => out.fill(values[0]),
            _ => out.copy_from_slice(&values[..d]),
        }
        let scale = out.iter().fold(0.0f64, |a, v| a.max(v.abs()));
        match out
            .iter()
            .position(|&v| v < -PSD_TOLERANCE * scale.max(f64::MIN_POSITIVE))
        {
            None => Ok(()),
            Some(i) => Err(self.noise_error(
                format!(
                    "Σ(x) is not positive semidefinite at {}: diagonal entry {} is {:e}",
                    self.format_point(x),
                    i + 1,
                    out[i]
                ),
                "this covariance",
            )),
        }
    }

    /// The `noise` statement's outputs at `x` into `buffers.values` (its tape's values:
    /// one for `sd`, d for `diag`, d² for `cov`).
    fn noise_values(&self, x: &[f64], buffers: &mut NoiseBuffers) -> Result<(), ProblemError> {
        let NoiseBuffers { slots, values, .. } = buffers;
        values.clear();
        values.resize(self.noise.tape.outputs(), 0.0);
        self.noise
            .tape
            .values_with(x, slots, values)
            .map_err(|nf| self.eval_error(nf, x))
    }

    pub(super) fn noise_error(&self, message: String, label: &str) -> ProblemError {
        ProblemError::Eval(Box::new(self.source.diagnostic(
            self.noise.span,
            message,
            label,
        )))
    }

    /// Value, gradient and Hessian of every entry of Σ(x), row-major (entry i·d + j).
    /// Not available for a finite sum (its Σ(x) is computed from per-example gradients,
    /// and no model needs its derivatives): a usage error.
    pub fn noise_cov_derivatives(&self, x: &[f64]) -> Result<Vec<Derivs>, ProblemError> {
        self.check_point(x)?;
        if self.finite_sum.is_some() {
            return Err(ProblemError::Usage(
                "the derivatives of a finite sum's Σ(x) are not computed (no model needs them)"
                    .into(),
            ));
        }
        let d = self.dim();
        let outs = self
            .noise
            .tape
            .derivatives(x)
            .map_err(|nf| self.eval_error(nf, x))?;
        let zero = Derivs {
            value: 0.0,
            gradient: DVector::zeros(d),
            hessian: DMatrix::zeros(d, d),
        };
        let mut entries = vec![zero; d * d];
        match self.noise.kind {
            NoiseKind::None | NoiseKind::Minibatch => {}
            NoiseKind::Sd => (0..d).for_each(|i| entries[i * d + i] = outs[0].clone()),
            NoiseKind::Diag => (0..d).for_each(|i| entries[i * d + i] = outs[i].clone()),
            NoiseKind::Cov => entries = outs,
        }
        Ok(entries)
    }

    /// Observable values at x, in order.
    pub fn observables(&self, x: &[f64]) -> Result<Vec<f64>, ProblemError> {
        self.check_point(x)?;
        self.observables
            .values(x)
            .map_err(|nf| self.eval_error(nf, x))
    }

    /// [`Problem::observables`] into `out` (one entry per observable), reusing `slots`:
    /// no allocation once `slots` has grown. The form for simulation loops.
    pub fn observables_into(
        &self,
        x: &[f64],
        slots: &mut Vec<f64>,
        out: &mut [f64],
    ) -> Result<(), ProblemError> {
        self.check_point(x)?;
        self.observables
            .values_with(x, slots, out)
            .map_err(|nf| self.eval_error(nf, x))
    }

    /// Value, gradient and Hessian of every observable at x.
    pub fn observable_derivatives(&self, x: &[f64]) -> Result<Vec<Derivs>, ProblemError> {
        self.check_point(x)?;
        self.observables
            .derivatives(x)
            .map_err(|nf| self.eval_error(nf, x))
    }

    /// f, ∇f, ∇²f, Σ and the observables at x.
    pub fn derivatives(&self, x: &[f64]) -> Result<Derivatives, ProblemError> {
        let f = self.objective_derivatives(x)?;
        Ok(Derivatives {
            point: DVector::from_column_slice(x),
            value: f.value,
            gradient: f.gradient,
            hessian: f.hessian,
            noise_cov: self.noise_cov(x)?,
            observables: self.observables(x)?,
        })
    }

    /// The escape region of an `escape when LHS > RHS` statement, as text, if the file
    /// has one.
    pub fn escape_region(&self) -> Option<&str> {
        self.escape.as_ref().map(|e| e.text.as_str())
    }

    /// The escape margin LHS − RHS at x (escaped when > 0), or `None` when the file has
    /// no `escape` statement. `slots` is reused: no allocation once it has grown.
    ///
    /// ```
    /// use hasme::Problem;
    /// let p = Problem::from_str("var x, y\nminimize x^2 - y^2\nescape when x^2 + y^2 > 1").unwrap();
    /// assert_eq!(p.escape_region(), Some("x^2 + y^2 > 1"));
    /// let mut slots = Vec::new();
    /// assert_eq!(p.escape_margin_with(&[2.0, 0.0], &mut slots).unwrap(), Some(3.0));
    /// ```
    pub fn escape_margin_with(
        &self,
        x: &[f64],
        slots: &mut Vec<f64>,
    ) -> Result<Option<f64>, ProblemError> {
        let Some(escape) = &self.escape else {
            return Ok(None);
        };
        self.check_point(x)?;
        let mut out = [0.0];
        escape
            .tape
            .values_with(x, slots, &mut out)
            .map_err(|nf| self.eval_error(nf, x))?;
        Ok(Some(out[0]))
    }

    /// The local data every SDE model reads at x: ∇f, ∇²f and Σ (docs/models.md §2).
    pub fn local(&self, x: &[f64]) -> Result<Local, ProblemError> {
        let d = self.derivatives(x)?;
        Ok(Local::new(d.point, d.gradient, d.hessian, d.noise_cov)?)
    }
}

/// Reusable buffers for [`Problem::noise_cov_into`].
#[derive(Clone, Debug, Default)]
pub struct NoiseBuffers {
    pub(super) slots: Vec<f64>,
    pub(super) values: Vec<f64>,
    pub(super) scratch: Vec<f64>,
    // Finite sums: per-example gradients and the running mean.
    pub(super) ws: Workspace,
    pub(super) jets: Jets,
    pub(super) mean: Vec<f64>,
    pub(super) delta: Vec<f64>,
}

/// A cheap sufficient test that the symmetric `m` (row-major d×d) is PSD within the
/// tolerance of [`min_eigenvalue_if_negative`]: diagonal matrices by their entries,
/// others by an in-place Cholesky factorisation of `m + δI` with
/// δ = PSD_TOLERANCE·trace(m) (trace ≥ λ_max for a PSD matrix). `false` means "not
/// shown PSD": the caller then computes the smallest eigenvalue to decide and report.
fn psd_within_tolerance(d: usize, m: &[f64], scratch: &mut Vec<f64>) -> bool {
    let trace: f64 = (0..d).map(|i| m[i * d + i]).sum();
    let delta = PSD_TOLERANCE * trace.abs();
    let diagonal = (0..d).all(|i| (0..d).all(|j| i == j || m[i * d + j] == 0.0));
    if diagonal {
        return (0..d).all(|i| m[i * d + i] >= -delta);
    }
    scratch.clear();
    scratch.extend_from_slice(m);
    let l = scratch;
    for j in 0..d {
        let mut djj = l[j * d + j] + delta;
        for k in 0..j {
            djj -= l[j * d + k] * l[j * d + k];
        }
        // `djj` may be NaN (it is not, for finite input) — then too the test fails.
        if djj.is_nan() || djj <= 0.0 {
            return false;
        }
        let ljj = djj.sqrt();
        l[j * d + j] = ljj;
        for i in j + 1..d {
            let mut v = l[i * d + j];
            for k in 0..j {
                v -= l[i * d + k] * l[j * d + k];
            }
            l[i * d + j] = v / ljj;
        }
    }
    true
}

/// The smallest eigenvalue of a symmetric matrix when it is negative beyond round-off
/// (relative [`PSD_TOLERANCE`] of the largest magnitude).
pub fn min_eigenvalue_if_negative(m: &DMatrix<f64>) -> Option<f64> {
    if m.nrows() == 0 {
        return None;
    }
    let eig = SymmetricEigen::new(m.clone()).eigenvalues;
    let scale = eig.iter().fold(0.0f64, |a, v| a.max(v.abs()));
    let min = eig.iter().copied().fold(f64::INFINITY, f64::min);
    (min < -PSD_TOLERANCE * scale.max(f64::MIN_POSITIVE)).then_some(min)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic symmetric test matrices: B·diag(s)·Bᵀ with B = QR-free mixing of
    /// sines, so the spectrum is `s` up to the mixing's conditioning.
    fn matrix(d: usize, s: &[f64], seed: f64) -> DMatrix<f64> {
        let b = DMatrix::from_fn(d, d, |i, j| ((i * d + j) as f64 * 1.7 + seed).sin());
        let q = b.qr().q();
        &q * DMatrix::from_diagonal(&DVector::from_column_slice(s)) * q.transpose()
    }

    #[test]
    fn cholesky_test_agrees_with_the_spectrum() {
        for d in 1..=6 {
            for seed in 0..20 {
                let seed = seed as f64;
                let pd: Vec<f64> = (0..d).map(|i| 0.1 + i as f64).collect();
                let mut singular = pd.clone();
                singular[0] = 0.0;
                let mut indefinite = pd.clone();
                indefinite[0] = -0.05;
                let mut scratch = Vec::new();
                for (s, psd) in [(&pd, true), (&singular, true), (&indefinite, false)] {
                    let m = matrix(d, s, seed);
                    let m = (&m + m.transpose()) * 0.5;
                    let row_major: Vec<f64> = m.transpose().as_slice().to_vec();
                    let shown = psd_within_tolerance(d, &row_major, &mut scratch);
                    // A clear eigenvalue of −0.05 is never passed; PD and PSD (rank-
                    // deficient by round-off) matrices pass, as the eigen test agrees.
                    assert_eq!(shown, psd, "d = {d}, seed = {seed}, spectrum {s:?}");
                    assert_eq!(min_eigenvalue_if_negative(&m).is_none(), psd);
                }
            }
        }
    }

    #[test]
    fn noise_cov_into_matches_noise_cov() {
        let p = Problem::from_str(
            "var x, y\nminimize x^2 + y^2\nnoise cov [[1 + x^2, 0.3*y], [0.3*y, 1 + y^2]]",
        )
        .unwrap();
        let mut buffers = NoiseBuffers::default();
        let mut out = [0.0; 4];
        for x in [[0.0, 0.0], [1.0, -2.0], [0.3, 5.0]] {
            p.noise_cov_into(&x, &mut buffers, &mut out).unwrap();
            assert_eq!(
                out.as_slice(),
                p.noise_cov(&x).unwrap().transpose().as_slice()
            );
        }
        // A 1×1 covariance, and a state-dependent one that stops being PSD at x = 2
        // (eigenvalues 1 ± x).
        let q = Problem::from_str("var x\nminimize x^2\nnoise cov [[1]]").unwrap();
        assert!(q.noise_cov_into(&[0.0], &mut buffers, &mut [0.0]).is_ok());
        let r = Problem::from_str("var x, y\nminimize x^2\nnoise cov [[1, x], [x, 1]]").unwrap();
        let err = r
            .noise_cov_into(&[2.0, 0.0], &mut buffers, &mut out)
            .unwrap_err();
        assert!(
            err.to_string().contains("smallest eigenvalue -1e0"),
            "{err}"
        );
    }
}
