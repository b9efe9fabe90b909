//! Finite sums `f = (1/n) Σ_i F_i` over the rows of a data table (docs/models.md §1), at
//! evaluation time: errors naming the example, per-example gradients for minibatch SGD,
//! and the minibatch covariance Σ(x) = κ C(x) from the per-example gradients, alone or
//! in the same pass over the rows as ∇f and ∇²f.

use super::eval::NoiseBuffers;
use super::{Problem, ProblemError};
use crate::data::FiniteSum;
use crate::tape::{Jets, NonFinite, ROWS, Workspace};

impl Problem {
    /// An evaluation error in example `i` of a finite sum: the expression, the point,
    /// and the row.
    pub(super) fn row_eval_error(&self, nf: NonFinite, x: &[f64], i: usize) -> ProblemError {
        let mut e = self.eval_error(nf, x);
        if let (ProblemError::Eval(d), Some(fs)) = (&mut e, &self.finite_sum) {
            let cells: Vec<String> = fs
                .columns
                .iter()
                .zip(fs.row(i))
                .map(|(c, v)| format!("{}.{c} = {v}", fs.table))
                .collect();
            d.notes.push(format!(
                "in example {} of `{}` ({})",
                i + 1,
                fs.table,
                cells.join(", ")
            ));
        }
        e
    }

    /// The finite sum, when the objective is `mean(DATA, …)` over a data table.
    pub fn finite_sum(&self) -> Option<&FiniteSum> {
        self.finite_sum.as_ref()
    }

    /// Value and gradient of the per-example loss F_i at x (example `i`, 0-based, of
    /// the finite sum; for a problem without data, of f itself) into `jets`, by reverse
    /// mode: what a minibatch SGD step needs. No allocation once the buffers have grown.
    pub fn example_gradient_with(
        &self,
        x: &[f64],
        i: usize,
        ws: &mut Workspace,
        jets: &mut Jets,
    ) -> Result<(), ProblemError> {
        self.check_point(x)?;
        let row = self.finite_sum.as_ref().map_or(&[][..], |fs| fs.row(i));
        self.objective
            .gradients_row(x, row, ws, jets)
            .map_err(|nf| self.row_eval_error(nf, x, i))
    }

    /// `u = A ζ` for the factor `A = √(κ/n) [∇F_1 − ∇f, …, ∇F_n − ∇f]` (d×n) of a
    /// finite sum's Σ(x) = κ C(x) = AAᵀ (docs/models.md §8): for ζ ~ N(0, I_n), u has
    /// exactly the covariance Σ(x), with no d×d matrix formed. One reverse pass per
    /// row; `gradient` is ∇f(x), which the caller has (each row's difference
    /// `∇F_i − ∇f` is formed before it is weighted, so nothing cancels beyond the row).
    /// `out` is zero when the problem is not a finite sum over data or has no
    /// minibatch noise (κ = 0).
    ///
    /// ```
    /// use hasme::Problem;
    /// use hasme::tape::Workspace;
    /// let p = Problem::from_str(
    ///     "data t = [[a], [1], [3]]\nvar x = 0\nminimize mean(t, 0.5*(x - t.a)^2)\nbatch 1",
    /// )?;
    /// // ∇F_i = x − a_i = (−1, −3), ∇f = −2, κ = 1: A = √(1/2) [1, −1].
    /// let mut u = [0.0];
    /// p.noise_factor_times(&[0.0], &[-2.0], &[1.0, 1.0], &mut Workspace::default(), &mut u)?;
    /// assert_eq!(u, [0.0]);
    /// p.noise_factor_times(&[0.0], &[-2.0], &[2.0, 0.0], &mut Workspace::default(), &mut u)?;
    /// assert!((u[0] - 2.0 / 2f64.sqrt()).abs() < 1e-15);
    /// # Ok::<(), hasme::ProblemError>(())
    /// ```
    pub fn noise_factor_times(
        &self,
        x: &[f64],
        gradient: &[f64],
        zeta: &[f64],
        ws: &mut Workspace,
        out: &mut [f64],
    ) -> Result<(), ProblemError> {
        self.check_point(x)?;
        let d = self.dim();
        out.fill(0.0);
        let Some(fs) = self.finite_sum.as_ref() else {
            return Ok(());
        };
        if gradient.len() != d || out.len() != d || zeta.len() != fs.n {
            return Err(ProblemError::Usage(format!(
                "the noise factor of a finite sum over {} rows in {d} variables needs a gradient and an output of {d} entries and {} weights (got {}, {} and {})",
                fs.n,
                fs.n,
                gradient.len(),
                out.len(),
                zeta.len()
            )));
        }
        if fs.columns.is_empty() || fs.noise_factor() == 0.0 {
            return Ok(());
        }
        let mut jets = Jets::default();
        let push = |out: &mut [f64], z: f64, gi: &[f64]| {
            for ((o, gi), g) in out.iter_mut().zip(gi).zip(gradient) {
                *o += z * (gi - g);
            }
        };
        self.each_example_gradient(fs, x, ws, &mut jets, |i, row| {
            push(out, zeta[i], row.gradient(0))
        })?;
        let scale = (fs.noise_factor() / fs.n as f64).sqrt();
        out.iter_mut().for_each(|o| *o *= scale);
        self.check_factor_product(x, out)
    }

    /// `u = Aζ` must be finite: else an error naming the point and the entry.
    fn check_factor_product(&self, x: &[f64], u: &[f64]) -> Result<(), ProblemError> {
        match u.iter().position(|v| !v.is_finite()) {
            None => Ok(()),
            Some(k) => Err(self.noise_error(
                format!(
                    "the minibatch noise factor times ζ is not finite at {} (entry {}): the weights or the per-example gradients are too large",
                    self.format_point(x),
                    k + 1
                ),
                "this finite sum",
            )),
        }
    }

    /// f(x) and ∇f(x) into `jets` (as [`Problem::gradient_with`], the same bits) and
    /// `u = A ζ` ([`Problem::noise_factor_times`]) in **one** pass over the rows: what
    /// a matrix-free simulator step needs. The pass sums `∇F_i` and `ζ_i ∇F_i`, and
    /// `u = √(κ/n) (Σ ζ_i ∇F_i − (Σ ζ_i) ∇f)`. Against the per-row differences of
    /// [`Problem::noise_factor_times`] this can lose `ε‖∇f‖·‖ζ‖₁` absolutely when
    /// every `∇F_i` is far larger than their spread; in a simulator step `√κ·ε‖∇f‖`
    /// is ten decades below the drift's own contribution `h‖∇f‖` for `h ≥ 1e−6`, so
    /// the saving of a pass costs nothing measurable (test: the two agree to 1e−12
    /// relative on the network example).
    ///
    /// Errors: a point or `zeta` of the wrong size; a row whose value or gradient is
    /// not finite (named); a `u` that is not finite.
    pub fn gradient_and_factor_with(
        &self,
        x: &[f64],
        zeta: &[f64],
        ws: &mut Workspace,
        jets: &mut Jets,
        u: &mut [f64],
    ) -> Result<(), ProblemError> {
        let Some(fs) = self.finite_sum.as_ref().filter(|fs| !fs.columns.is_empty()) else {
            u.fill(0.0);
            return self.gradient_with(x, ws, jets);
        };
        self.check_point(x)?;
        let d = self.dim();
        if zeta.len() != fs.n || u.len() != d {
            return Err(ProblemError::Usage(format!(
                "the noise factor of a finite sum over {} rows in {d} variables needs {} weights and an output of {d} entries (got {} and {})",
                fs.n,
                fs.n,
                zeta.len(),
                u.len()
            )));
        }
        // sum[0..d] = Σ ∇F_i, sum[d] = Σ F_i, sum[d + 1] = Σ ζ_i; u = Σ ζ_i ∇F_i.
        let mut sum = std::mem::take(&mut ws.scratch);
        sum.clear();
        sum.resize(d + 2, 0.0);
        u.fill(0.0);
        let result = self.each_example_gradient(fs, x, ws, jets, |i, row| {
            let z = zeta[i];
            sum[d] += row.values[0];
            sum[d + 1] += z;
            for ((s, w), g) in sum.iter_mut().zip(u.iter_mut()).zip(row.gradient(0)) {
                *s += g;
                *w += z * g;
            }
        });
        if result.is_ok() {
            let n = fs.n as f64;
            jets.reset_gradients(d, self.objective.outputs());
            jets.values[0] = sum[d] / n;
            for (g, s) in jets.gradients.iter_mut().zip(&sum) {
                *g = s / n;
            }
            let scale = (fs.noise_factor() / n).sqrt();
            let total = sum[d + 1];
            for (w, g) in u.iter_mut().zip(jets.gradient(0)) {
                *w = scale * (*w - total * g);
            }
        }
        ws.scratch = sum;
        result?;
        self.check_factor_product(x, u)
    }

    /// Σ(x) = κ C(x) of a finite sum, `C = (1/n) Σ_i (∇F_i − ∇f)(∇F_i − ∇f)ᵀ` from the
    /// per-example gradients (reverse mode, one pass per row), accumulated in one pass
    /// with Welford's co-moment update (no cancellation between a large mean square
    /// and a large squared mean, no storage per row).
    pub(super) fn minibatch_cov_into(
        &self,
        fs: &FiniteSum,
        x: &[f64],
        buffers: &mut NoiseBuffers,
        out: &mut [f64],
    ) -> Result<(), ProblemError> {
        out.fill(0.0);
        if fs.columns.is_empty() || fs.noise_factor() == 0.0 {
            // Every example is the same, or the batch is the whole table: no noise.
            return Ok(());
        }
        let NoiseBuffers {
            ws,
            jets,
            mean,
            delta,
            ..
        } = buffers;
        comoment_start(self.dim(), mean, delta);
        self.each_example_gradient(fs, x, ws, jets, |i, row| {
            comoment_push(i + 1, row.gradient(0), mean, delta, out)
        })?;
        self.minibatch_cov_finish(fs, x, out)
    }

    /// Every example's value and gradient at x (of the objective's outputs), in row
    /// order: `each(i, jets)` for example i (0-based). Rows go in blocks
    /// ([`crate::tape::ROWS`] at once, each row's numbers those of the row-by-row
    /// loop); a block with something not finite goes row by row, which names the
    /// example. `jets` is scratch for the rows that go one by one.
    pub(super) fn each_example_gradient(
        &self,
        fs: &FiniteSum,
        x: &[f64],
        ws: &mut Workspace,
        jets: &mut Jets,
        mut each: impl FnMut(usize, &Jets),
    ) -> Result<(), ProblemError> {
        let c = fs.columns.len();
        let mut start = 0;
        while start < fs.n {
            let blocked = self.objective.gradients_rows(
                x,
                &fs.rows[start * c..],
                fs.n - start,
                &mut ws.rows,
                |r, lane| each(start + r, lane),
            );
            let Err(r) = blocked else { break };
            // A block with something not finite: its rows one by one, which names the
            // example; then the blocks go on after it.
            let end = (start + r + ROWS).min(fs.n);
            for i in start + r..end {
                self.objective
                    .gradients_row(x, fs.row(i), ws, jets)
                    .map_err(|nf| self.row_eval_error(nf, x, i))?;
                each(i, jets);
            }
            start = end;
        }
        Ok(())
    }

    /// `out ← κ/n · out` (the co-moment of the n per-example gradients), symmetric,
    /// checked finite.
    pub(super) fn minibatch_cov_finish(
        &self,
        fs: &FiniteSum,
        x: &[f64],
        out: &mut [f64],
    ) -> Result<(), ProblemError> {
        let d = self.dim();
        let scale = fs.noise_factor() / fs.n as f64;
        for a in 0..d {
            for b in a..d {
                let v = out[a * d + b] * scale;
                out[a * d + b] = v;
                out[b * d + a] = v;
            }
        }
        if let Some(k) = out.iter().position(|v| !v.is_finite()) {
            return Err(self.noise_error(
                format!(
                    "the minibatch covariance overflows at {} (entry ({}, {}))",
                    self.format_point(x),
                    k / d + 1,
                    k % d + 1
                ),
                "this finite sum",
            ));
        }
        Ok(())
    }

    /// [`Problem::objective_derivatives_with`] and [`Problem::noise_cov_into`] at the
    /// same point: for a finite sum in one pass over the rows (each example's gradient
    /// serves both ∇f and Σ), otherwise one after the other. What a simulator needs at
    /// every model evaluation.
    pub fn derivatives_and_noise_with(
        &self,
        x: &[f64],
        ws: &mut Workspace,
        jets: &mut Jets,
        buffers: &mut NoiseBuffers,
        cov: &mut [f64],
    ) -> Result<(), ProblemError> {
        let Some(fs) = self
            .finite_sum
            .as_ref()
            .filter(|fs| !fs.columns.is_empty() && fs.noise_factor() > 0.0)
        else {
            self.objective_derivatives_with(x, ws, jets)?;
            return self.noise_cov_into(x, buffers, cov);
        };
        self.check_point(x)?;
        self.check_dense("the Hessian")?;
        assert_eq!(cov.len(), self.dim() * self.dim(), "Σ has d² entries");
        cov.fill(0.0);
        let NoiseBuffers { mean, delta, .. } = buffers;
        comoment_start(self.dim(), mean, delta);
        let mut k = 0;
        self.objective
            .mean_derivatives_with(x, &fs.rows, ws, jets, |row| {
                k += 1;
                comoment_push(k, row.gradient(0), mean, delta, cov);
            })
            .map_err(|(i, nf)| self.row_eval_error(nf, x, i))?;
        self.minibatch_cov_finish(fs, x, cov)
    }
}

/// Starts Welford's co-moment of d-vectors: `mean ← 0`, `delta` sized.
fn comoment_start(d: usize, mean: &mut Vec<f64>, delta: &mut Vec<f64>) {
    mean.clear();
    mean.resize(d, 0.0);
    delta.clear();
    delta.resize(d, 0.0);
}

/// Adds the `k`-th vector `g` (1-based) to the running mean and to the upper triangle of
/// the co-moment `m2` (row-major d×d): `m2 += (g − mean_{k−1})(g − mean_k)ᵀ`, the update
/// that avoids cancelling a large mean square against a large squared mean.
fn comoment_push(k: usize, g: &[f64], mean: &mut [f64], delta: &mut [f64], m2: &mut [f64]) {
    let d = g.len();
    let k = k as f64;
    for a in 0..d {
        delta[a] = g[a] - mean[a];
        mean[a] += delta[a] / k;
    }
    for a in 0..d {
        for b in a..d {
            m2[a * d + b] += delta[a] * (g[b] - mean[b]);
        }
    }
}
