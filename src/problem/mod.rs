//! The checked problem: a parsed file given meaning. Names are resolved (each defined
//! once, before use), params evaluated (with `--set` overrides), shapes checked, and
//! every expression compiled to a [`Tape`]: the objective f, the noise covariance
//! Σ(x) of MODELS.md §1 (`noise sd|diag|cov`), and the observables.
//!
//! A structural analysis on the syntax tree records whether f is a polynomial of
//! degree ≤ 2 (a quadratic) and whether Σ is constant; exact-moment code relies on it.
//!
//! Invariant: every error names the file, line and column of its cause; evaluation
//! never returns a non-finite number, it returns an error naming the expression and
//! the point instead.

use crate::data::{FiniteSum, Table, parse_csv};
use crate::lang::ast::*;
use crate::lang::source::suggest;
use crate::lang::{Diagnostic, Source, Span, parse, parse_expr, print_expr};
use crate::models::{Local, ModelError};
use crate::tape::{
    Derivs, Func, Jets, NonFinite, Tape, TapeBuilder, Val, Workspace, integer_exponent,
};
use nalgebra::{DMatrix, DVector, SymmetricEigen};
use serde::Serialize;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::Path;
use std::str::FromStr;

/// Statement keywords (reserved, like `pi` and the function names).
pub const KEYWORDS: [&str; 10] = [
    "param", "var", "let", "minimize", "noise", "observe", "data", "batch", "sampling", "escape",
];

/// Functions that take other than one plain argument, or are not yet available.
const SPECIAL_FUNCTIONS: [&str; 4] = ["pow", "mean", "sum", "prod"];

/// Relative tolerance for symmetry and PSD checks of Σ: entries written differently
/// (`0.3` and `0.1*3`) differ by an ulp, and an eigendecomposition of a d×d matrix
/// with d ≤ a few hundred loses a few more; 1e-12 sits far above that and far below
/// any real asymmetry.
pub const SYMMETRY_TOL: f64 = 1e-12;

/// Most variables a problem may have: derivatives are dense (a d×d Hessian per point),
/// so 5000 variables already mean 200 MB per Hessian.
pub const MAX_DIMENSION: usize = 5000;

/// A vector variable `w[n]`: coordinates `start..start + len` of the point, named
/// `w[1]` … `w[n]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct VectorVar {
    /// Its name.
    pub name: String,
    /// Index of `w[1]` among the coordinates.
    pub start: usize,
    /// Its length n.
    pub len: usize,
}

/// Every way building or evaluating a problem can fail.
#[derive(Debug, thiserror::Error)]
pub enum ProblemError {
    /// The file could not be read.
    #[error("cannot read `{path}`: {message}")]
    Io {
        /// The path.
        path: String,
        /// The system's reason.
        message: String,
    },
    /// The text does not follow the grammar.
    #[error("{0}")]
    Syntax(Box<Diagnostic>),
    /// The text parses but means nothing valid (names, arity, shapes, constants).
    #[error("{0}")]
    Check(Box<Diagnostic>),
    /// A command-line value (`--set`, `--at`) is wrong.
    #[error("{0}")]
    Usage(String),
    /// Evaluation met a non-finite number or an invalid Σ(x) at a point.
    #[error("{0}")]
    Eval(Box<Diagnostic>),
    /// The local data could not be handed to the models (see [`ModelError`]).
    #[error("{0}")]
    Model(#[from] ModelError),
}

impl ProblemError {
    /// Process exit status: 2 for bad input, 1 for a failure while running.
    pub fn exit_code(&self) -> i32 {
        match self {
            ProblemError::Eval(_) | ProblemError::Model(_) => 1,
            _ => 2,
        }
    }
}

/// `--set NAME=VALUE` overrides of params, in the order given.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    values: Vec<(String, f64)>,
}

impl Overrides {
    /// No overrides.
    pub fn none() -> Overrides {
        Overrides::default()
    }

    /// Adds one override.
    pub fn set(mut self, name: impl Into<String>, value: f64) -> Overrides {
        self.values.push((name.into(), value));
        self
    }

    /// Parses `NAME=VALUE` items (as given to `--set`).
    pub fn parse<S: AsRef<str>>(items: &[S]) -> Result<Overrides, ProblemError> {
        let mut out = Overrides::default();
        for item in items {
            let item = item.as_ref();
            let (name, value) = item.split_once('=').ok_or_else(|| {
                ProblemError::Usage(format!(
                    "--set `{item}`: expected NAME=VALUE, e.g. lambda=4"
                ))
            })?;
            let value: f64 = value.trim().parse().map_err(|_| {
                ProblemError::Usage(format!(
                    "--set `{item}`: `{}` is not a number",
                    value.trim()
                ))
            })?;
            if !value.is_finite() {
                return Err(ProblemError::Usage(format!(
                    "--set `{item}`: the value must be finite"
                )));
            }
            out.values.push((name.trim().to_string(), value));
        }
        Ok(out)
    }

    fn get(&self, name: &str) -> Option<f64> {
        self.values
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|&(_, v)| v)
    }
}

/// The kind of gradient noise (MODELS.md §1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NoiseKind {
    /// No `noise` statement: Σ = 0 (plain gradient descent).
    None,
    /// `noise sd s`: Σ = s² I.
    Sd,
    /// `noise diag [v…]`: Σ = diag(v).
    Diag,
    /// `noise cov [[…]]`: Σ in full.
    Cov,
    /// A finite sum `mean(DATA, …)`: Σ(x) = κ C(x), the covariance of minibatch
    /// gradients (MODELS.md §1).
    Minibatch,
}

impl fmt::Display for NoiseKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NoiseKind::None => "none",
            NoiseKind::Sd => "sd",
            NoiseKind::Diag => "diag",
            NoiseKind::Cov => "cov",
            NoiseKind::Minibatch => "minibatch",
        })
    }
}

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
    fn max(self, o: Degree) -> Degree {
        match (self, o) {
            (Degree::Poly(a), Degree::Poly(b)) => Degree::Poly(a.max(b)),
            _ => Degree::Other,
        }
    }

    fn is_const(self) -> bool {
        self == Degree::Poly(0)
    }
}

/// What later commands need to know about the problem's shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Structure {
    /// Degree of f when it is a polynomial.
    pub objective_degree: Option<u32>,
    /// f is a polynomial of degree ≤ 2.
    pub quadratic: bool,
    /// Σ does not depend on the variables.
    pub constant_noise: bool,
}

/// Everything [`Problem::derivatives`] computes at one point.
#[derive(Clone, Debug, PartialEq)]
pub struct Derivatives {
    /// The point.
    pub point: DVector<f64>,
    /// f(x)
    pub value: f64,
    /// ∇f(x)
    pub gradient: DVector<f64>,
    /// ∇²f(x)
    pub hessian: DMatrix<f64>,
    /// Σ(x), symmetric PSD (checked).
    pub noise_cov: DMatrix<f64>,
    /// Observable values, in declaration order.
    pub observables: Vec<f64>,
}

/// The `escape when LHS > RHS` region: a tape for the margin LHS − RHS.
#[derive(Clone, Debug)]
struct EscapeRegion {
    tape: Tape,
    /// `LHS > RHS`, as printed from the syntax tree.
    text: String,
}

/// Layout of the noise tape's outputs.
#[derive(Clone, Debug)]
struct NoiseTape {
    kind: NoiseKind,
    tape: Tape,
    /// Pairs of output indices (row-major i·d + j, j·d + i) whose symmetry can only be
    /// checked at evaluation time.
    runtime_symmetry: Vec<(usize, usize)>,
    span: Span,
}

/// A checked, compiled problem.
///
/// ```
/// use hasme::Problem;
/// let p = Problem::from_str("param a = 3\nvar x = 1, y = 2\nminimize a*x^2 + x*y\nnoise sd 0.1").unwrap();
/// let d = p.derivatives(&p.start()).unwrap();
/// assert_eq!(d.value, 5.0);
/// assert_eq!(d.gradient.as_slice(), &[8.0, 1.0]);
/// assert_eq!(d.hessian[(0, 1)], 1.0);
/// assert!((d.noise_cov[(0, 0)] - 0.01).abs() < 1e-15);
/// ```
#[derive(Clone, Debug)]
pub struct Problem {
    source: Source,
    variables: Vec<String>,
    vectors: Vec<VectorVar>,
    start: Vec<f64>,
    params: Vec<(String, f64)>,
    param_vectors: Vec<(String, Vec<f64>)>,
    objective: Tape,
    noise: NoiseTape,
    observable_names: Vec<String>,
    observables: Tape,
    escape: Option<EscapeRegion>,
    finite_sum: Option<FiniteSum>,
    structure: Structure,
    warnings: Vec<Diagnostic>,
}

impl Problem {
    /// Parses and checks a problem given as a string (named `<string>` in errors).
    ///
    /// An inherent constructor, so callers need no trait import; [`FromStr`] is
    /// implemented as well (`"…".parse::<Problem>()`).
    #[allow(clippy::should_implement_trait)]
    pub fn from_str(text: &str) -> Result<Problem, ProblemError> {
        Problem::from_source(Source::new("<string>", text), &Overrides::none())
    }

    /// Reads, parses and checks a file.
    pub fn from_file(
        path: impl AsRef<Path>,
        overrides: &Overrides,
    ) -> Result<Problem, ProblemError> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|e| ProblemError::Io {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        let source =
            Source::from_bytes(path.display().to_string(), bytes).map_err(ProblemError::Syntax)?;
        Problem::from_source(source, overrides)
    }

    /// Parses and checks a source with param overrides.
    pub fn from_source(source: Source, overrides: &Overrides) -> Result<Problem, ProblemError> {
        let program = parse(&source).map_err(ProblemError::Syntax)?;
        Checker::new(&source, overrides)
            .check(&program)
            .map_err(|e| match e {
                CheckFailure::Diag(d) => ProblemError::Check(d),
                CheckFailure::Usage(m) => ProblemError::Usage(m),
            })
    }

    /// The source the problem came from.
    pub fn source(&self) -> &Source {
        &self.source
    }

    /// Number of variables d.
    pub fn dim(&self) -> usize {
        self.variables.len()
    }

    /// Variable names, in declaration order.
    pub fn variables(&self) -> &[String] {
        &self.variables
    }

    /// The start point.
    pub fn start(&self) -> Vec<f64> {
        self.start.clone()
    }

    /// Scalar params with their values (after overrides), in declaration order.
    pub fn params(&self) -> &[(String, f64)] {
        &self.params
    }

    /// Vector params (`param a[3] = [1, 2, 3]`) with their values, in declaration order.
    pub fn param_vectors(&self) -> &[(String, Vec<f64>)] {
        &self.param_vectors
    }

    /// Vector variables (`var w[n]`), in declaration order.
    pub fn vectors(&self) -> &[VectorVar] {
        &self.vectors
    }

    /// Observable names, in order.
    pub fn observable_names(&self) -> &[String] {
        &self.observable_names
    }

    /// The noise kind.
    pub fn noise_kind(&self) -> NoiseKind {
        self.noise.kind
    }

    /// Shape facts: quadratic objective, constant noise.
    pub fn structure(&self) -> Structure {
        self.structure
    }

    /// Warnings found while checking (e.g. `abs`, unused `let`).
    pub fn warnings(&self) -> &[Diagnostic] {
        &self.warnings
    }

    /// The compiled objective.
    pub fn objective_tape(&self) -> &Tape {
        &self.objective
    }

    /// The compiled entries of Σ(x) ([`Problem::noise_kind`] says which: one standard
    /// deviation, d diagonal entries or d² entries row-major; empty without a `noise`
    /// statement and for finite sums, whose Σ is a covariance over the rows).
    pub fn noise_tape(&self) -> &Tape {
        &self.noise.tape
    }

    fn check_point(&self, x: &[f64]) -> Result<(), ProblemError> {
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

    /// Formats a point as `(x = 0.1, y = 2)`.
    pub fn format_point(&self, x: &[f64]) -> String {
        let parts: Vec<String> = self
            .variables
            .iter()
            .zip(x)
            .map(|(n, v)| format!("{n} = {v}"))
            .collect();
        format!("({})", parts.join(", "))
    }

    fn eval_error(&self, nf: NonFinite, x: &[f64]) -> ProblemError {
        let expr = self.source.snippet(nf.span).to_string();
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
        ProblemError::Eval(Box::new(self.source.diagnostic(nf.span, message, label)))
    }

    /// An evaluation error in example `i` of a finite sum: the expression, the point,
    /// and the row.
    fn row_eval_error(&self, nf: NonFinite, x: &[f64], i: usize) -> ProblemError {
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
        let mut result = Ok(());
        for i in 0..fs.n {
            if let Err(nf) = self.objective.gradients_row(x, fs.row(i), ws, jets) {
                result = Err(self.row_eval_error(nf, x, i));
                break;
            }
            sum[d] += jets.values[0];
            for (s, g) in sum.iter_mut().zip(jets.gradient(0)) {
                *s += g;
            }
        }
        if result.is_ok() {
            let n = fs.n as f64;
            jets.values[0] = sum[d] / n;
            for (g, s) in jets.gradients.iter_mut().zip(&sum) {
                *g = s / n;
            }
        }
        ws.scratch = sum;
        result
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
        let d = self.dim();
        assert_eq!(out.len(), d * d, "Σ has d² entries");
        if let Some(fs) = &self.finite_sum {
            return self.minibatch_cov_into(fs, x, buffers, out);
        }
        let NoiseBuffers {
            slots,
            values,
            scratch,
            ..
        } = buffers;
        values.clear();
        values.resize(self.noise.tape.outputs(), 0.0);
        self.noise
            .tape
            .values_with(x, slots, values)
            .map_err(|nf| self.eval_error(nf, x))?;
        out.fill(0.0);
        match self.noise.kind {
            NoiseKind::None | NoiseKind::Minibatch => {}
            NoiseKind::Sd => (0..d).for_each(|i| out[i * d + i] = values[0]),
            NoiseKind::Diag => (0..d).for_each(|i| out[i * d + i] = values[i]),
            NoiseKind::Cov => out.copy_from_slice(values),
        }
        for &(a, b) in &self.noise.runtime_symmetry {
            let (va, vb) = (values[a], values[b]);
            if (va - vb).abs() > SYMMETRY_TOL * va.abs().max(vb.abs()).max(f64::MIN_POSITIVE) {
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

    /// Σ(x) = κ C(x) of a finite sum, `C = (1/n) Σ_i (∇F_i − ∇f)(∇F_i − ∇f)ᵀ` from the
    /// per-example gradients (reverse mode, one pass per row), accumulated in one pass
    /// with Welford's co-moment update (no cancellation between a large mean square
    /// and a large squared mean, no storage per row).
    fn minibatch_cov_into(
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
        for i in 0..fs.n {
            self.objective
                .gradients_row(x, fs.row(i), ws, jets)
                .map_err(|nf| self.row_eval_error(nf, x, i))?;
            comoment_push(i + 1, jets.gradient(0), mean, delta, out);
        }
        self.minibatch_cov_finish(fs, x, out)
    }

    /// `out ← κ/n · out` (the co-moment of the n per-example gradients), symmetric,
    /// checked finite.
    fn minibatch_cov_finish(
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

    fn noise_error(&self, message: String, label: &str) -> ProblemError {
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

    /// The local data every SDE model reads at x: ∇f, ∇²f and Σ (MODELS.md §2).
    pub fn local(&self, x: &[f64]) -> Result<Local, ProblemError> {
        let d = self.derivatives(x)?;
        Ok(Local::new(d.point, d.gradient, d.hessian, d.noise_cov)?)
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

impl FromStr for Problem {
    type Err = ProblemError;

    fn from_str(text: &str) -> Result<Problem, ProblemError> {
        Problem::from_str(text)
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

/// Reusable buffers for [`Problem::noise_cov_into`].
#[derive(Clone, Debug, Default)]
pub struct NoiseBuffers {
    slots: Vec<f64>,
    values: Vec<f64>,
    scratch: Vec<f64>,
    // Finite sums: per-example gradients and the running mean.
    ws: Workspace,
    jets: Jets,
    mean: Vec<f64>,
    delta: Vec<f64>,
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

/// A cheap sufficient test that the symmetric `m` (row-major d×d) is PSD within the
/// tolerance of [`min_eigenvalue_if_negative`]: diagonal matrices by their entries,
/// others by an in-place Cholesky factorisation of `m + δI` with
/// δ = SYMMETRY_TOL·trace(m) (trace ≥ λ_max for a PSD matrix). `false` means "not
/// shown PSD": the caller then computes the smallest eigenvalue to decide and report.
fn psd_within_tolerance(d: usize, m: &[f64], scratch: &mut Vec<f64>) -> bool {
    let trace: f64 = (0..d).map(|i| m[i * d + i]).sum();
    let delta = SYMMETRY_TOL * trace.abs();
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
/// (relative [`SYMMETRY_TOL`] of the largest magnitude).
pub fn min_eigenvalue_if_negative(m: &DMatrix<f64>) -> Option<f64> {
    if m.nrows() == 0 {
        return None;
    }
    let eig = SymmetricEigen::new(m.clone()).eigenvalues;
    let scale = eig.iter().fold(0.0f64, |a, v| a.max(v.abs()));
    let min = eig.iter().copied().fold(f64::INFINITY, f64::min);
    (min < -SYMMETRY_TOL * scale.max(f64::MIN_POSITIVE)).then_some(min)
}

// ---- the checker --------------------------------------------------------------------

#[derive(Clone, Copy, Debug)]
enum BindingKind {
    Param(f64),
    /// Index into `Checker::param_vecs`.
    ParamVec(usize),
    Var(usize),
    /// Coordinates `start..start + len`.
    VarVec {
        start: usize,
        len: usize,
    },
    Let(usize),
    /// A `sum`/`prod` index, bound to one value while its body is compiled.
    Index(f64),
    /// Index into `Checker::tables`.
    Data(usize),
}

#[derive(Clone, Copy, Debug)]
struct Binding {
    kind: BindingKind,
    span: Span,
    /// Index of the statement that defines it.
    stmt: usize,
}

enum CheckFailure {
    Diag(Box<Diagnostic>),
    Usage(String),
}

type CheckResult<T> = Result<T, CheckFailure>;

struct LetDef {
    expr: Expr,
    stmt: usize,
}

/// A `data` statement, loaded.
struct TableDef {
    name: String,
    table: Table,
    origin: String,
    span: Span,
}

/// The objective's `mean(DATA, EXPR)`: which table, where, and the columns it reads.
#[derive(Clone, Debug)]
struct DataScope {
    table: usize,
    /// The whole `mean(…)` call: columns are valid only inside it.
    mean_span: Span,
    /// The `DATA` argument.
    table_arg_span: Span,
    /// Table column indices, in the order of the tape's data inputs.
    columns: Vec<usize>,
}

/// How an expression depends on the value of `mean(…)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum MeanUse {
    None,
    Affine,
}

struct Checker<'a> {
    source: &'a Source,
    overrides: &'a Overrides,
    names: HashMap<String, Binding>,
    params: Vec<(String, f64)>,
    param_vecs: Vec<(String, Vec<f64>)>,
    vars: Vec<(String, f64)>,
    vector_vars: Vec<VectorVar>,
    lets: Vec<(String, Span, LetDef)>,
    used_lets: HashSet<usize>,
    loop_stack: Vec<(String, i64)>,
    /// Every name the file declares, with its first definition: to tell "used before
    /// it is defined" from "unknown".
    declared: HashMap<String, Span>,
    warned: HashSet<Span>,
    warnings: Vec<Diagnostic>,
    tables: Vec<TableDef>,
    scope: Option<DataScope>,
}

impl<'a> Checker<'a> {
    fn new(source: &'a Source, overrides: &'a Overrides) -> Checker<'a> {
        Checker {
            source,
            overrides,
            names: HashMap::new(),
            params: Vec::new(),
            param_vecs: Vec::new(),
            vars: Vec::new(),
            vector_vars: Vec::new(),
            lets: Vec::new(),
            used_lets: HashSet::new(),
            loop_stack: Vec::new(),
            declared: HashMap::new(),
            warned: HashSet::new(),
            warnings: Vec::new(),
            tables: Vec::new(),
            scope: None,
        }
    }

    fn err(
        &self,
        span: Span,
        message: impl Into<String>,
        label: impl Into<String>,
    ) -> CheckFailure {
        CheckFailure::Diag(Box::new(self.source.diagnostic(span, message, label)))
    }

    fn pos(&self, span: Span) -> String {
        let p = self.source.position(span.start);
        format!("{}:{}", p.line, p.column)
    }

    fn define(&mut self, ident: &Ident, kind: BindingKind, stmt: usize) -> CheckResult<()> {
        let name = ident.name.as_str();
        if name == "pi"
            || KEYWORDS.contains(&name)
            || Func::from_name(name).is_some()
            || SPECIAL_FUNCTIONS.contains(&name)
        {
            let what = if name == "pi" {
                "the constant π"
            } else if KEYWORDS.contains(&name) {
                "a statement keyword"
            } else {
                "a built-in function"
            };
            return Err(self.err(
                ident.span,
                format!("`{name}` is reserved ({what}) and cannot be defined"),
                "choose another name",
            ));
        }
        if let Some(prev) = self.names.get(name) {
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
        self.names.insert(
            name.to_string(),
            Binding {
                kind,
                span: ident.span,
                stmt,
            },
        );
        Ok(())
    }

    /// "more than one `KEYWORD` statement", at the second, with a note at the first.
    fn second_statement(
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
    fn constant_of(&mut self, e: &Expr, stmt: usize, what: &str) -> CheckResult<f64> {
        let mut b = TapeBuilder::new(0);
        let (v, _) = self.compile(e, stmt, &mut b, Some(what), &[])?;
        v.as_const().ok_or_else(|| self.internal())
    }

    /// The length of a vector: a constant integer in 1..=MAX_DIMENSION.
    fn size_of(&mut self, e: &Expr, stmt: usize) -> CheckResult<usize> {
        let v = self.constant_of(e, stmt, "a vector length")?;
        if v.fract() != 0.0 || v < 1.0 || v > MAX_DIMENSION as f64 {
            return Err(self.err(
                e.span(),
                format!("a vector length must be an integer from 1 to {MAX_DIMENSION}, found {v}"),
                "not a valid length",
            ));
        }
        Ok(v as usize)
    }

    fn check(mut self, program: &Program) -> CheckResult<Problem> {
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
                        let n = self.size_of(size, k)?;
                        let mut values = match value {
                            ParamValue::Scalar(e) => {
                                vec![self.constant_of(e, k, "a param value")?; n]
                            }
                            ParamValue::List(l) => {
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
                                let mut v = Vec::with_capacity(n);
                                for e in &l.items {
                                    v.push(self.constant_of(e, k, "a param value")?);
                                }
                                v
                            }
                        };
                        if let Some(all) = self.overrides.get(&name.name) {
                            values.iter_mut().for_each(|v| *v = all);
                        }
                        for (i, v) in values.iter_mut().enumerate() {
                            if let Some(o) =
                                self.overrides.get(&format!("{}[{}]", name.name, i + 1))
                            {
                                *v = o;
                            }
                        }
                        let index = self.param_vecs.len();
                        self.define(name, BindingKind::ParamVec(index), k)?;
                        self.param_vecs.push((name.name.clone(), values));
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
                    };
                    let v = self.constant_of(expr, k, "a param value")?;
                    let v = self.overrides.get(&name.name).unwrap_or(v);
                    self.define(name, BindingKind::Param(v), k)?;
                    self.params.push((name.name.clone(), v));
                }
                StatementKind::Var(decls) => {
                    for d in decls {
                        let start = match &d.init {
                            Some(e) => self.constant_of(e, k, "a start value")?,
                            None => 0.0,
                        };
                        let index = self.vars.len();
                        match &d.size {
                            None => {
                                self.define(&d.name, BindingKind::Var(index), k)?;
                                self.vars.push((d.name.name.clone(), start));
                            }
                            Some(size) => {
                                let len = self.size_of(size, k)?;
                                if self.vars.len() + len > MAX_DIMENSION {
                                    return Err(self.err(
                                        size.span(),
                                        format!("more than {MAX_DIMENSION} variables in all"),
                                        "too many variables",
                                    ));
                                }
                                self.define(&d.name, BindingKind::VarVec { start: index, len }, k)?;
                                for i in 1..=len {
                                    self.vars.push((format!("{}[{i}]", d.name.name), start));
                                }
                                self.vector_vars.push(VectorVar {
                                    name: d.name.name.clone(),
                                    start: index,
                                    len,
                                });
                            }
                        }
                    }
                }
                StatementKind::Let { name, value } => {
                    let index = self.lets.len();
                    self.define(name, BindingKind::Let(index), k)?;
                    self.lets.push((
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
            let vector_entry = self
                .param_vecs
                .iter()
                .any(|(p, v)| p == name || (1..=v.len()).any(|i| *name == format!("{p}[{i}]")));
            if !vector_entry && !self.params.iter().any(|(p, _)| p == name) {
                let all = self.params.iter().map(|(p, _)| p.as_str());
                let hint = suggest(
                    name,
                    all.chain(self.param_vecs.iter().map(|(p, _)| p.as_str())),
                )
                .map_or(String::new(), |s| format!("; did you mean `{s}`?"));
                let known = if self.params.is_empty() && self.param_vecs.is_empty() {
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
        let d = self.vars.len();

        // Finite sums: the objective's `mean(…)`, its table and the columns it reads.
        self.scope = self.find_mean(objective_expr)?;
        let finite_sum = match &self.scope {
            None => {
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
                None
            }
            Some(scope) => {
                if let Some((_, span, _)) = noise {
                    let d = self
                        .source
                        .diagnostic(
                            span,
                            "a `noise` statement cannot be combined with `mean(…)`: a finite sum defines its own noise (the minibatch covariance of MODELS.md §1)",
                            "remove this statement",
                        )
                        .with_note(format!("the finite sum is at {}", self.pos(scope.mean_span)));
                    return Err(CheckFailure::Diag(Box::new(d)));
                }
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
                let b = match batch {
                    None => 1,
                    Some((b, span, _)) if b > n as f64 => {
                        return Err(self.err(
                            span,
                            format!(
                                "the batch size {b} is larger than the {n} rows of `{}`",
                                def.name
                            ),
                            format!("expected at most {n}"),
                        ));
                    }
                    Some((b, _, _)) => b as usize,
                };
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
                    batch: b,
                    sampling: sampling.map_or(Sampling::WithoutReplacement, |(s, _)| s),
                })
            }
        };
        for (t, def) in self.tables.iter().enumerate() {
            if self.scope.as_ref().is_none_or(|s| s.table != t) {
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
        let data_inputs = self.scope.as_ref().map_or(0, |s| s.columns.len());
        let mut b = TapeBuilder::with_data(d, data_inputs);
        let lets = self.compile_lets(&mut b)?;
        let (f, degree) = self.compile(objective_expr, objective_stmt, &mut b, None, &lets)?;
        let objective = b.finish(&[(f, objective_expr.span())]);

        let noise_tape = match noise {
            None if finite_sum.is_some() => CompiledNoise {
                tape: NoiseTape {
                    kind: NoiseKind::Minibatch,
                    tape: TapeBuilder::new(d).finish(&[]),
                    runtime_symmetry: Vec::new(),
                    span: self.scope.as_ref().map_or(Span::default(), |s| s.mean_span),
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
            for (i, (name, _)) in self.vars.iter().enumerate() {
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

        for (i, (name, span, _)) in self.lets.iter().enumerate() {
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
            source: self.source.clone(),
            variables: self.vars.iter().map(|(n, _)| n.clone()).collect(),
            vectors: self.vector_vars,
            param_vectors: self.param_vecs,
            start: self.vars.iter().map(|&(_, s)| s).collect(),
            params: self.params,
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
        })
    }

    fn internal(&self) -> CheckFailure {
        self.err(
            Span::default(),
            "internal error while compiling",
            "please report this file",
        )
    }

    fn compile_lets(&mut self, b: &mut TapeBuilder) -> CheckResult<Vec<(Val, Degree)>> {
        let mut out: Vec<(Val, Degree)> = Vec::with_capacity(self.lets.len());
        for i in 0..self.lets.len() {
            let (expr, stmt) = {
                let def = &self.lets[i].2;
                (def.expr.clone(), def.stmt)
            };
            let v = self.compile(&expr, stmt, b, None, &out)?;
            out.push(v);
        }
        Ok(out)
    }

    fn compile_noise(
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
                        }) = self.names.get(n).copied()
                    {
                        self.resolve(n, *span, k, None)?;
                        for &c in &self.param_vecs[p].1 {
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
                                if (x - y).abs() > SYMMETRY_TOL * x.abs().max(y.abs()) {
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

    fn fold_error(&self, span: Span, value: f64) -> CheckFailure {
        let expr = self.source.snippet(span);
        self.err(
            span,
            format!("`{expr}` is not a finite number (it evaluates to {value})"),
            "not finite",
        )
    }

    fn resolve(
        &mut self,
        name: &str,
        span: Span,
        stmt: usize,
        constant: Option<&str>,
    ) -> CheckResult<Binding> {
        let Some(&b) = self.names.get(name) else {
            if name == "pi" {
                return Ok(Binding {
                    kind: BindingKind::Param(std::f64::consts::PI),
                    span,
                    stmt: 0,
                });
            }
            if Func::from_name(name).is_some() || SPECIAL_FUNCTIONS.contains(&name) {
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
            let mut candidates: Vec<&str> = self.names.keys().map(String::as_str).collect();
            candidates.sort();
            candidates.push("pi");
            let hint = suggest(name, candidates)
                .map_or(String::new(), |s| format!("; did you mean `{s}`?"));
            return Err(self.err(span, format!("unknown name `{name}`{hint}"), "not defined"));
        };
        if let Some(what) = constant {
            let kind = match b.kind {
                BindingKind::Param(_) | BindingKind::ParamVec(_) | BindingKind::Index(_) => None,
                BindingKind::Var(_) | BindingKind::VarVec { .. } => Some("a variable"),
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

    /// Compiles one expression: a forward pass over its post-order nodes that also
    /// computes the polynomial degree of every node. `sum`/`prod` bodies are skipped by
    /// that pass and compiled once per index value instead (unrolled), with the index
    /// bound as a constant; that recursion is bounded by the bracket-nesting cap.
    fn compile(
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
                && self.scope.as_ref().is_none_or(|s| s.mean_span != node.span)
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

    fn compile_range(
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

    fn compile_node(
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
                        let len = self.param_vecs[p].1.len();
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
                    BindingKind::Data(_) => {
                        // The table argument of the objective's `mean(…)` has no value.
                        if self
                            .scope
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
            NodeKind::Index { name, index } => {
                let binding = self.resolve(&name.name, name.span, ctx.stmt, ctx.constant)?;
                let ispan = ctx.expr.nodes[*index as usize].span;
                let (len, what) = match binding.kind {
                    BindingKind::ParamVec(p) => (self.param_vecs[p].1.len(), "param"),
                    BindingKind::VarVec { len, .. } => (len, "variable"),
                    _ => {
                        return Err(self.err(
                            name.span,
                            format!("`{}` is not a vector, so it cannot be indexed", name.name),
                            "not a vector",
                        ));
                    }
                };
                let i = match at(vals, *index).0 {
                    Val::Const(c) if c.fract() == 0.0 => c,
                    Val::Const(c) => {
                        return Err(self.loop_err(
                            ispan,
                            format!("an index must be an integer, found {c}"),
                            "not an integer",
                        ));
                    }
                    Val::Slot(_) => {
                        return Err(self.err(
                            ispan,
                            "an index must be a constant (numbers, params and loop indices)",
                            "depends on the variables",
                        ));
                    }
                };
                if i < 1.0 || i > len as f64 {
                    return Err(self.loop_err(
                        ispan,
                        format!("index {i} is out of range for the {what} vector `{}` (valid: 1..{len})", name.name),
                        "out of range",
                    ));
                }
                let i = i as usize - 1;
                match binding.kind {
                    BindingKind::ParamVec(p) => {
                        (Val::Const(self.param_vecs[p].1[i]), Degree::Poly(0))
                    }
                    BindingKind::VarVec { start, .. } => (b.var(start + i, span), Degree::Poly(1)),
                    _ => return Err(self.internal()),
                }
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
                if let Some(prev) = self.names.get(&index.name) {
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
                let (mut acc, mut deg) = match kind {
                    ReduceKind::Sum => (Val::Const(0.0), Degree::Poly(0)),
                    ReduceKind::Prod => (Val::Const(1.0), Degree::Poly(0)),
                };
                for i in lo_v..=hi_v {
                    self.names.insert(
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
                    self.names.remove(&index.name);
                    r?;
                    let (v, d) = vals[body];
                    let combined = match kind {
                        ReduceKind::Sum => b.add(acc, v, span),
                        ReduceKind::Prod => b.mul(acc, v, span),
                    };
                    acc = combined.map_err(|c| self.fold_error(span, c))?;
                    deg = match kind {
                        ReduceKind::Sum => deg.max(d),
                        ReduceKind::Prod => binary_degree(BinOp::Mul, deg, Val::Const(0.0), d),
                    };
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
                        if self.scope.as_ref().is_some_and(|s| s.mean_span == span) {
                            // The per-example loss: the body, read on one row.
                            return Ok(at(vals, args[1]));
                        }
                        return Err(self.err(
                            span,
                            "`mean(…)` may only appear in the `minimize` statement (not in `let`, `noise`, `observe` or `escape`)",
                            "a finite sum here",
                        ));
                    }
                    "sum" | "prod" => {
                        return Err(self.err(
                            span,
                            format!("`{name}` needs an index range: `{name}(i = 1..n, EXPR)`"),
                            "expected `i = A..B` as the first argument",
                        ));
                    }
                    _ => match Func::from_name(name) {
                        Some(_) => 1,
                        None => {
                            let all = Func::ALL
                                .iter()
                                .map(|f| f.name())
                                .chain(["pow", "sum", "prod"]);
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
                } else {
                    let f = Func::from_name(name).ok_or_else(|| self.internal())?;
                    let (x, dx) = at(vals, args[0]);
                    if f == Func::Abs && x.as_const().is_none() && self.warned.insert(span) {
                        self.warnings.push(self.source.diagnostic(
                            span,
                            "`abs` is not differentiable at 0 (hasme takes the derivative +1 there)",
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
            NodeKind::Column { data, column } => {
                let inside = self.scope.as_ref().and_then(|s| {
                    (s.mean_span.start <= span.start && span.end <= s.mean_span.end)
                        .then_some((s.table, &s.columns))
                });
                let Some((t, columns)) = inside else {
                    return Err(self.err(
                        span,
                        format!(
                            "`{}.{}` reads a data column outside `mean(…)`: columns exist per example, inside `mean({}, …)` in the `minimize` statement",
                            data.name, column.name, data.name
                        ),
                        "not inside the finite sum",
                    ));
                };
                // `find_mean` has checked the table and the column.
                let def = &self.tables[t];
                let j = def
                    .table
                    .columns
                    .iter()
                    .position(|c| *c == column.name)
                    .ok_or_else(|| self.internal())?;
                let pos = columns
                    .iter()
                    .position(|&c| c == j)
                    .ok_or_else(|| self.internal())?;
                (b.column(pos, span), Degree::Poly(0))
            }
        })
    }

    /// Loads the table of a `data` statement.
    fn load_table(&mut self, source: &DataSource, stmt: usize) -> CheckResult<(Table, String)> {
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
    fn find_mean(&mut self, expr: &Expr) -> CheckResult<Option<DataScope>> {
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
            NodeKind::Name(n) => match self.names.get(n).map(|b| b.kind) {
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
                NodeKind::Column { data, column } => {
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
                    .with_note("f = (1/n) Σ_i F_i is what makes minibatch SGD unbiased (MODELS.md §1)");
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

    /// A loop bound: an integer constant.
    fn loop_bound(&self, v: Val, span: Span) -> CheckResult<i64> {
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
    fn loop_err(&self, span: Span, message: String, label: &str) -> CheckFailure {
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
struct Layout {
    start: Vec<usize>,
    body_at: Vec<Option<(usize, usize)>>,
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
struct Ctx<'e> {
    expr: &'e Expr,
    layout: &'e Layout,
    stmt: usize,
    constant: Option<&'e str>,
    lets: &'e [(Val, Degree)],
    budget: u64,
}

struct CompiledNoise {
    tape: NoiseTape,
    constant: bool,
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
