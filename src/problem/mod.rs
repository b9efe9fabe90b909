//! The checked problem: a parsed file given meaning. Names are resolved (each defined
//! once, before use), params evaluated (with `--set` overrides), shapes checked, and
//! every expression compiled to a [`Tape`]: the objective f, the noise covariance
//! Σ(x) of docs/models.md §1 (`noise sd|diag|cov`), and the observables.
//!
//! A structural analysis on the syntax tree records whether f is a polynomial of
//! degree ≤ 2 (a quadratic) and whether Σ is constant; exact-moment code relies on it.
//!
//! Invariant: every error names the file, line and column of its cause; evaluation
//! never returns a non-finite number, it returns an error naming the expression and
//! the point instead.
//!
//! The rooms: this file holds the checked [`Problem`] and its public types; `eval`
//! evaluates it at points (values, derivatives, Σ(x) and its checks); `finite_sum` the
//! finite sums `mean(DATA, EXPR)` (per-example gradients, the minibatch covariance);
//! `expression` what is written after the file (`--when` expressions, `--at` points,
//! constants), compiled against the names the checker kept rather than by checking
//! the file again; `check` turns a syntax tree into a problem (names and scope,
//! compiling to tapes, noise, data).

mod check;
mod eval;
mod expression;
mod finite_sum;
mod start;

pub use check::{Degree, MAX_PARAM_ENTRIES, UNROLL_BUDGET};
pub use eval::{NoiseBuffers, min_eigenvalue_if_negative};
pub use expression::Expression;
pub use start::StartPoint;

use crate::ErrorKind;
use crate::data::FiniteSum;
use crate::lang::{Diagnostic, Source, Span, parse};
use crate::models::ModelError;
use crate::tape::Tape;
use check::{CheckFailure, Checker, Scope};
use nalgebra::{DMatrix, DVector};
use serde::Serialize;
use std::fmt;
use std::path::Path;
use std::str::FromStr;

/// Most variables a problem may have. Above [`DENSE_LIMIT`] only the matrix-free paths
/// run (gradients, Hessian-vector products, a finite sum's noise factor).
pub const MAX_DIMENSION: usize = 20_000;

/// Most variables for which a d×d matrix (the Hessian, Σ) is formed: 5000 variables
/// already mean 200 MB per matrix. Beyond it, what needs one is an error that says so.
pub const DENSE_LIMIT: usize = 5000;

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

/// A matrix variable `W[r, c]`: coordinates `start..start + rows·cols` of the point,
/// row-major, named `W[1,1]`, `W[1,2]`, … `W[r,c]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MatrixVar {
    /// Its name.
    pub name: String,
    /// Index of `W[1,1]` among the coordinates.
    pub start: usize,
    /// Number of rows.
    pub rows: usize,
    /// Number of columns.
    pub cols: usize,
}

/// A matrix param `param A[r, c] = …` with its values (after overrides).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ParamMatrix {
    /// Its name.
    pub name: String,
    /// Number of rows.
    pub rows: usize,
    /// Number of columns.
    pub cols: usize,
    /// The entries, row-major.
    pub values: Vec<f64>,
}

impl ParamMatrix {
    /// The rows as nested vectors.
    pub fn to_rows(&self) -> Vec<Vec<f64>> {
        self.values.chunks(self.cols).map(<[f64]>::to_vec).collect()
    }
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
    /// A start file (`--start`) is not JSON, lacks a field, or does not match the
    /// problem's variables: the message names the file and the place in the JSON.
    #[error("{0}")]
    Start(String),
}

impl ProblemError {
    /// Whether the input was wrong ([`ErrorKind::Input`]: the file, its syntax or
    /// meaning, a command-line value) or the evaluation failed at a point
    /// ([`ErrorKind::Run`]).
    pub fn kind(&self) -> ErrorKind {
        match self {
            ProblemError::Eval(_) | ProblemError::Model(_) => ErrorKind::Run,
            _ => ErrorKind::Input,
        }
    }
}

impl From<CheckFailure> for ProblemError {
    fn from(e: CheckFailure) -> ProblemError {
        match e {
            CheckFailure::Diag(d) => ProblemError::Check(d),
            CheckFailure::Usage(m) => ProblemError::Usage(m),
        }
    }
}

/// What the command line sets in a file: `--set NAME=VALUE` overrides of params, in
/// the order given, the seed of the random start values (`--init-seed`, default 0), and
/// a start point read from a file (`--start`), which replaces the file's start values
/// and random draws.
///
/// ```
/// use hasme::{Overrides, Problem};
/// use hasme::lang::Source;
/// let text = "var w[3] ~ normal(0, 1)\nminimize sum(i = 1..3, w[i]^2)";
/// let p = |seed| Problem::from_source(Source::new("t", text), &Overrides::none().init_seed(seed));
/// assert_eq!(p(7)?.start(), p(7)?.start());
/// assert_ne!(p(7)?.start(), p(8)?.start());
/// assert_eq!(p(7)?.init_seed(), 7);
/// # Ok::<(), hasme::ProblemError>(())
/// ```
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    values: Vec<(String, f64)>,
    init_seed: u64,
    start: Option<StartPoint>,
}

impl Overrides {
    /// No overrides, init seed 0.
    pub fn none() -> Overrides {
        Overrides::default()
    }

    /// Adds one override.
    pub fn set(mut self, name: impl Into<String>, value: f64) -> Overrides {
        self.values.push((name.into(), value));
        self
    }

    /// Sets the seed of the random start values (`var w ~ normal(0, 1)`).
    pub fn init_seed(mut self, seed: u64) -> Overrides {
        self.init_seed = seed;
        self
    }

    /// Starts at `point` instead of the file's start values and random draws (every
    /// problem built with these overrides, e.g. each value of a weak-order sweep).
    pub fn start(mut self, point: StartPoint) -> Overrides {
        self.start = Some(point);
        self
    }

    /// The start point given with [`Overrides::start`], if any.
    pub fn start_point(&self) -> Option<&StartPoint> {
        self.start.as_ref()
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

/// The kind of gradient noise (docs/models.md §1).
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
    /// gradients (docs/models.md §1).
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

/// A variable whose start values are drawn (`var W[h, p] ~ normal(0, 0.3)`): its
/// distribution and a summary of its draws, as `check` shows them.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RandomStart {
    /// The variable's name.
    pub name: String,
    /// `normal` or `uniform`.
    pub distribution: &'static str,
    /// The distribution's parameters: (mean, standard deviation) or (low, high).
    pub parameters: [f64; 2],
    /// Index of its first coordinate among the point's coordinates.
    pub start: usize,
    /// Number of coordinates drawn.
    pub count: usize,
    /// Mean of the draws.
    pub mean: f64,
    /// Sample standard deviation of the draws (divisor count − 1); `None` for one draw.
    pub sd: Option<f64>,
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
    start: Vec<f64>,
    /// The checker's names (params, variables, `let`s), for expressions compiled later.
    scope: Scope,
    objective: Tape,
    noise: NoiseTape,
    observable_names: Vec<String>,
    observables: Tape,
    escape: Option<EscapeRegion>,
    finite_sum: Option<FiniteSum>,
    structure: Structure,
    warnings: Vec<Diagnostic>,
    /// The seed the random start values were drawn with.
    init_seed: u64,
    random_starts: Vec<RandomStart>,
    /// Where the start point came from when a start file replaced the file's own.
    start_file: Option<String>,
    /// The data files read (`data d = "…"`), as resolved, in file order.
    data_files: Vec<String>,
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
        let problem = Checker::new(&source, overrides).check(&program)?;
        match overrides.start_point() {
            Some(start) => problem.with_start(start),
            None => Ok(problem),
        }
    }

    /// The same problem starting at `start` (matched to the variables by name) instead
    /// of its file's start values and random draws; [`Problem::start_file`] then names
    /// the start's origin, and JSON outputs echo it instead of the init seed.
    ///
    /// ```
    /// use hasme::Problem;
    /// use hasme::problem::StartPoint;
    /// let p = Problem::from_str("var x ~ normal(0, 1), y = 2\nminimize x^2 + y^2")?;
    /// let s = StartPoint::new("s.json", vec!["y".into(), "x".into()], vec![0.5, -1.0])?;
    /// let q = p.with_start(&s)?;
    /// assert_eq!(q.start(), [-1.0, 0.5]);
    /// assert_eq!((q.start_file(), q.init_seed_if_random()), (Some("s.json"), None));
    /// # Ok::<(), hasme::ProblemError>(())
    /// ```
    pub fn with_start(mut self, start: &StartPoint) -> Result<Problem, ProblemError> {
        self.start = start.point_for(&self.variables)?;
        self.start_file = Some(start.origin().to_string());
        Ok(self)
    }

    /// The start file the start point came from ([`Problem::with_start`]), if any.
    pub fn start_file(&self) -> Option<&str> {
        self.start_file.as_deref()
    }

    /// The data files the problem read (`data d = "file.csv"`), as resolved from the
    /// objective file's directory, in file order.
    pub fn data_files(&self) -> &[String] {
        &self.data_files
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
        &self.scope.params
    }

    /// Vector params (`param a[3] = [1, 2, 3]`) with their values, in declaration order.
    pub fn param_vectors(&self) -> &[(String, Vec<f64>)] {
        &self.scope.param_vecs
    }

    /// Matrix params (`param A[2, 2] = [[1, 0], [0, 1]]`) with their values, in
    /// declaration order.
    pub fn param_matrices(&self) -> &[ParamMatrix] {
        &self.scope.param_mats
    }

    /// Vector variables (`var w[n]`), in declaration order.
    pub fn vectors(&self) -> &[VectorVar] {
        &self.scope.vector_vars
    }

    /// Matrix variables (`var W[r, c]`), in declaration order.
    pub fn matrices(&self) -> &[MatrixVar] {
        &self.scope.matrix_vars
    }

    /// The seed the random start values were drawn with (`--init-seed`, default 0;
    /// [`Overrides::init_seed`]), whether or not the file draws any.
    pub fn init_seed(&self) -> u64 {
        self.init_seed
    }

    /// Whether some variable's start values are drawn (`~ normal(…)`, `~ uniform(…)`).
    pub fn has_random_starts(&self) -> bool {
        !self.random_starts.is_empty()
    }

    /// The variables whose start values are drawn, in declaration order, with their
    /// draws' summaries.
    pub fn random_starts(&self) -> &[RandomStart] {
        &self.random_starts
    }

    /// The init seed when the start point depends on it (the file draws start values
    /// and no start file replaced them), else `None`: what JSON outputs echo (a file
    /// without random starts keeps its JSON unchanged).
    pub fn init_seed_if_random(&self) -> Option<u64> {
        (self.has_random_starts() && self.start_file.is_none()).then_some(self.init_seed)
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

    /// Formats a point as `(x = 0.1, y = 2)`.
    pub fn format_point(&self, x: &[f64]) -> String {
        crate::format::point(&self.variables, x)
    }
}

impl FromStr for Problem {
    type Err = ProblemError;

    fn from_str(text: &str) -> Result<Problem, ProblemError> {
        Problem::from_str(text)
    }
}
