//! Stationary points: `hasme stationary` (docs/models.md §7, "Stationary points").
//!
//! HA-SME's promise is local: it predicts how SGD leaves a stationary point where f is
//! close to a quadratic, so studying a real objective starts by finding one. From the
//! start point, either
//!
//! * **Newton** on ∇f = 0 ([`Method::Newton`], `newton.rs`), with a backtracking line
//!   search on the merit `½‖∇f‖²` rather than on f, so that it converges to saddles and
//!   maxima as well as minima. Each step is the Levenberg–Marquardt step
//!   `p = −(H² + μI)⁻¹ H g` for the system ∇f = 0, computed in H's eigenbasis: Newton's
//!   step `−H⁻¹g` wherever `|λ| ≫ √μ`, a damped least-squares step along the
//!   (near-)null directions of a singular or ill-conditioned H. `√μ` starts at
//!   1e−8·max|λ| and grows by 10³ whenever no step length lowers the merit, shrinks
//!   again after a full step. Above [`DENSE_MAX_DIM`] variables no Hessian is formed:
//!   the step solves `Hp = −g` by MINRES on Hessian-vector products, to a relative
//!   residual that tightens as ‖∇f‖ falls (inexact Newton), with a line search on the
//!   same merit; the fallback direction is the merit's steepest descent `−Hg`.
//! * **gradient descent** ([`Method::Gd`], `descent.rs`) with a backtracking (Armijo)
//!   line search on f, for a minimum.
//!
//! Either stops when `‖∇f‖ ≤ tol` (default `1e−10·max(1, ‖∇f(x₀)‖)`), after
//! `max_iter` steps, or when no step lowers its merit (stalled). Then the Hessian's
//! eigenvalues at the point classify it (`spectrum.rs`): its index (the number of
//! negative eigenvalues) and its kind ([`PointKind`]). Above the dense limit they are
//! the extreme eigenvalues, from Lanczos with full reorthogonalisation
//! ([`crate::models::krylov`]).
//!
//! ```
//! use hasme::Problem;
//! use hasme::stationary::{Method, PointKind, StationaryConfig, find_stationary};
//!
//! let p = Problem::from_str("var x = 0.3, y = 0.2\nminimize x^2 - y^2 + x^4 + y^4")?;
//! let saddle = find_stationary(&p, &StationaryConfig::builder().build()?)?;
//! assert!(saddle.converged && saddle.kind == PointKind::Saddle && saddle.index == 1);
//! assert!(saddle.point.iter().all(|v| v.abs() < 1e-9));
//!
//! let config = StationaryConfig::builder().method(Method::Gd).build()?;
//! let minimum = find_stationary(&p, &config)?;
//! assert!(minimum.converged && minimum.kind == PointKind::Minimum);
//! assert!((minimum.point[1] - 0.5f64.sqrt()).abs() < 1e-8); // y² = 1/2
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod descent;
mod newton;
mod spectrum;

use crate::ErrorKind;
use crate::format::{Style, num};
use crate::problem::{Problem, ProblemError};
use crate::tape::{Jets, Workspace};
use nalgebra::DMatrix;
use serde::Serialize;
use std::fmt;
use std::str::FromStr;

pub use spectrum::{DEGENERATE_TOLERANCE, EXTREME_EIGENVALUES};

/// Largest dimension for which the Hessian is formed and fully diagonalised: d
/// Hessian-vector products and an O(d³) eigendecomposition per Newton step, under a
/// second at d = 500. Above it, Newton's step comes from MINRES and the eigenvalues
/// from Lanczos, both on Hessian-vector products.
pub const DENSE_MAX_DIM: usize = 500;

/// Default iteration limits: Newton converges quadratically near a nondegenerate point
/// and needs tens of steps from a fair start; gradient descent needs about κ(H) steps
/// per decade of ‖∇f‖.
pub const NEWTON_MAX_ITER: usize = 500;
/// See [`NEWTON_MAX_ITER`].
pub const GD_MAX_ITER: usize = 100_000;

/// The default tolerance on ‖∇f‖, relative to `max(1, ‖∇f(x₀)‖)`: ten orders of
/// magnitude below the start, while staying above the round-off of a gradient summed
/// over the terms of an O(1) objective (≈ 1e−16 per term).
pub const RELATIVE_TOLERANCE: f64 = 1e-10;

/// How the stationary point is sought.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// Newton's method on ∇f = 0 with a line search on ‖∇f‖²: any stationary point.
    Newton,
    /// Gradient descent with a line search on f: a minimum.
    Gd,
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Method::Newton => "newton",
            Method::Gd => "gd",
        })
    }
}

impl FromStr for Method {
    type Err = String;

    fn from_str(s: &str) -> Result<Method, String> {
        match s {
            "newton" => Ok(Method::Newton),
            "gd" => Ok(Method::Gd),
            _ => Err(format!("unknown method `{s}`; expected newton or gd")),
        }
    }
}

/// What the Hessian says about a point.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PointKind {
    /// Every eigenvalue clearly positive.
    Minimum,
    /// Eigenvalues of both signs, none near 0.
    Saddle,
    /// Every eigenvalue clearly negative.
    Maximum,
    /// Some eigenvalue within [`DEGENERATE_TOLERANCE`]·max|λ| of 0: the second
    /// derivatives do not decide.
    Degenerate,
}

impl fmt::Display for PointKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PointKind::Minimum => "minimum",
            PointKind::Saddle => "saddle",
            PointKind::Maximum => "maximum",
            PointKind::Degenerate => "degenerate",
        })
    }
}

/// Which eigenvalues a report holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Eigenvalues {
    /// All of them, from the dense Hessian (d ≤ the dense limit).
    All,
    /// The [`EXTREME_EIGENVALUES`] smallest and largest, from Lanczos.
    Extreme,
}

/// Why the iteration stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Stop {
    /// ‖∇f‖ ≤ tol.
    Tolerance,
    /// The iteration limit was reached first.
    MaxIter,
    /// No step length lowered the merit (‖∇f‖² for Newton, f for gradient descent):
    /// a local minimum of ‖∇f‖ that is not a stationary point, or a tolerance below
    /// the round-off of ∇f.
    Stalled,
}

/// The settings of [`find_stationary`], checked when built.
///
/// ```
/// use hasme::stationary::{Method, StationaryConfig};
/// let c = StationaryConfig::builder().method(Method::Gd).build()?;
/// assert_eq!((c.max_iter(), c.tolerance()), (100_000, None));
/// let err = StationaryConfig::builder().tolerance(Some(0.0)).build().unwrap_err();
/// assert_eq!(err.to_string(), "--tol must be a finite number > 0, got 0");
/// # Ok::<(), hasme::stationary::StationaryError>(())
/// ```
#[derive(Clone, Debug)]
pub struct StationaryConfig {
    pub(crate) method: Method,
    pub(crate) tolerance: Option<f64>,
    pub(crate) max_iter: Option<usize>,
    pub(crate) dense_max_dim: usize,
}

/// The settings of a search, before they are checked: see [`StationaryConfig`].
#[derive(Clone, Debug)]
pub struct StationaryConfigBuilder {
    draft: StationaryConfig,
}

impl StationaryConfigBuilder {
    crate::config::setters! {
        /// Newton (default) or gradient descent.
        method: Method,
        /// The tolerance on ‖∇f‖ (finite, > 0); `None`: `1e−10·max(1, ‖∇f(x₀)‖)`.
        tolerance: Option<f64>,
        /// The iteration limit; `None`: 500 for Newton, 100 000 for gradient descent.
        /// 0 classifies the start point.
        max_iter: Option<usize>,
        /// Above this many variables, Hessian-vector products replace the Hessian
        /// (default [`DENSE_MAX_DIM`]; lower it to run the matrix-free path on a
        /// small problem).
        dense_max_dim: usize,
    }

    /// Checks every setting and returns the configuration.
    pub fn build(&self) -> Result<StationaryConfig, StationaryError> {
        if let Some(tol) = self.draft.tolerance
            && !(tol.is_finite() && tol > 0.0)
        {
            return Err(StationaryError::Setting(format!(
                "--tol must be a finite number > 0, got {tol}"
            )));
        }
        Ok(self.draft.clone())
    }
}

impl StationaryConfig {
    /// The defaults (Newton, default tolerance and limit), to adjust and then
    /// [`build`](StationaryConfigBuilder::build).
    pub fn builder() -> StationaryConfigBuilder {
        StationaryConfigBuilder {
            draft: StationaryConfig {
                method: Method::Newton,
                tolerance: None,
                max_iter: None,
                dense_max_dim: DENSE_MAX_DIM,
            },
        }
    }

    /// These settings as a builder, to derive a variant.
    pub fn to_builder(&self) -> StationaryConfigBuilder {
        StationaryConfigBuilder {
            draft: self.clone(),
        }
    }

    crate::config::getters! {
        /// The method.
        method: Method,
        /// The tolerance on ‖∇f‖, when given.
        tolerance: Option<f64>,
        /// The largest dimension with a dense Hessian.
        dense_max_dim: usize,
    }

    /// The iteration limit (the method's default when not given).
    pub fn max_iter(&self) -> usize {
        self.max_iter.unwrap_or(match self.method {
            Method::Newton => NEWTON_MAX_ITER,
            Method::Gd => GD_MAX_ITER,
        })
    }
}

/// Why a search could not run.
#[derive(Debug, thiserror::Error)]
pub enum StationaryError {
    /// A setting is out of range.
    #[error("{0}")]
    Setting(String),
    /// The problem failed at the start point, or at an accepted point (a non-finite
    /// value or derivative).
    #[error("{0}")]
    Problem(#[from] ProblemError),
}

impl StationaryError {
    /// A bad setting is the caller's input; a problem error keeps its own kind.
    pub fn kind(&self) -> ErrorKind {
        match self {
            StationaryError::Setting(_) => ErrorKind::Input,
            StationaryError::Problem(e) => e.kind(),
        }
    }
}

/// What a search found: the last point, its value, gradient norm and Hessian
/// eigenvalues with the index and kind they give.
///
/// Its JSON form (`serde`) is the contract of `hasme stationary --json`, in this order:
/// `variables`, `point`, `value`, `gradient_norm`, `iterations`, `converged`,
/// `hessian_eigenvalues` (ascending), `index`, `kind`, `eigenvalues` (`all` or
/// `extreme`), `method`, `tolerance`, `stop` (`tolerance`, `max-iter` or `stalled`),
/// `warnings`, `init_seed` (only when the start was drawn), `start_file` (only with a
/// start file), `file`. With `variables` and `point` it is a start file (`--start`).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StationaryReport {
    /// Coordinate names.
    pub variables: Vec<String>,
    /// The last point (the stationary point when `converged`).
    pub point: Vec<f64>,
    /// f there.
    pub value: f64,
    /// ‖∇f‖ there.
    pub gradient_norm: f64,
    /// Accepted steps.
    pub iterations: usize,
    /// Whether ‖∇f‖ ≤ tolerance.
    pub converged: bool,
    /// The Hessian's eigenvalues there, ascending (the extreme ones above the dense
    /// limit, [`Eigenvalues::Extreme`]).
    pub hessian_eigenvalues: Vec<f64>,
    /// Eigenvalues below −[`DEGENERATE_TOLERANCE`]·max|λ| (above the dense limit,
    /// among the extreme ones: a lower bound).
    pub index: usize,
    /// What the eigenvalues make of the point (a stationary point's kind only when
    /// `converged`).
    pub kind: PointKind,
    /// All eigenvalues, or the extreme ones.
    pub eigenvalues: Eigenvalues,
    /// The method.
    pub method: Method,
    /// The tolerance on ‖∇f‖ used.
    pub tolerance: f64,
    /// Why the iteration stopped.
    pub stop: Stop,
    /// What was noticed (Lanczos short of its tolerance).
    pub warnings: Vec<String>,
    /// The init seed of the drawn start, when the start was drawn.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub init_seed: Option<u64>,
    /// The start file the start came from, when given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_file: Option<String>,
    /// The problem's file.
    pub file: String,
}

/// Runs the search from the problem's start point: `hasme stationary`. Not converging
/// is not an error: the report says so (`converged`, `stop`) and holds the last point.
pub fn find_stationary(
    problem: &Problem,
    config: &StationaryConfig,
) -> Result<StationaryReport, StationaryError> {
    let mut objective = Objective::new(problem);
    let x0 = problem.start();
    let (_, g0) = objective.gradient(&x0)?;
    let tolerance = config
        .tolerance
        .unwrap_or(RELATIVE_TOLERANCE * norm(&g0).max(1.0));
    let dense = problem.dim() <= config.dense_max_dim;
    let max_iter = config.max_iter();
    let search = match config.method {
        Method::Newton => newton::run(&mut objective, x0, tolerance, max_iter, dense)?,
        Method::Gd => descent::run(&mut objective, x0, tolerance, max_iter)?,
    };
    let (value, gradient) = objective.gradient(&search.point)?;
    let gradient_norm = norm(&gradient);
    let spectrum = if dense {
        spectrum::dense(&objective.hessian(&search.point)?)
    } else {
        spectrum::extreme(&mut objective, &search.point)?
    };
    Ok(StationaryReport {
        variables: problem.variables().to_vec(),
        point: search.point,
        value,
        gradient_norm,
        iterations: search.iterations,
        converged: search.stop == Stop::Tolerance,
        index: spectrum.index,
        kind: spectrum.kind,
        hessian_eigenvalues: spectrum.values,
        eigenvalues: if dense {
            Eigenvalues::All
        } else {
            Eigenvalues::Extreme
        },
        method: config.method,
        tolerance,
        stop: search.stop,
        warnings: spectrum.warnings,
        init_seed: problem.init_seed_if_random(),
        start_file: problem.start_file().map(str::to_string),
        file: problem.source().name().to_string(),
    })
}

/// Where a search ended.
pub(crate) struct Search {
    point: Vec<f64>,
    iterations: usize,
    stop: Stop,
}

/// The objective with reusable buffers: values, gradients, Hessians and
/// Hessian-vector products of f.
pub(crate) struct Objective<'a> {
    problem: &'a Problem,
    ws: Workspace,
    jets: Jets,
    scratch: Vec<f64>,
}

impl<'a> Objective<'a> {
    fn new(problem: &'a Problem) -> Objective<'a> {
        Objective {
            problem,
            ws: Workspace::default(),
            jets: Jets::default(),
            scratch: Vec::new(),
        }
    }

    fn dim(&self) -> usize {
        self.problem.dim()
    }

    fn value(&self, x: &[f64]) -> Result<f64, ProblemError> {
        self.problem.value(x)
    }

    /// f(x) and ∇f(x).
    fn gradient(&mut self, x: &[f64]) -> Result<(f64, Vec<f64>), ProblemError> {
        self.problem
            .gradient_with(x, &mut self.ws, &mut self.jets)?;
        Ok((self.jets.values[0], self.jets.gradient(0).to_vec()))
    }

    /// ∇f(x) and ∇²f(x).
    fn gradient_and_hessian(
        &mut self,
        x: &[f64],
    ) -> Result<(Vec<f64>, DMatrix<f64>), ProblemError> {
        let d = self.problem.objective_derivatives(x)?;
        Ok((d.gradient.iter().copied().collect(), d.hessian))
    }

    fn hessian(&mut self, x: &[f64]) -> Result<DMatrix<f64>, ProblemError> {
        Ok(self.gradient_and_hessian(x)?.1)
    }

    /// ∇²f(x)·v into `out`.
    fn hessian_vector(
        &mut self,
        x: &[f64],
        v: &[f64],
        out: &mut [f64],
    ) -> Result<(), ProblemError> {
        self.scratch.resize(self.dim(), 0.0);
        self.problem
            .hessian_vector_with(x, v, &mut self.ws, &mut self.scratch, out)
            .map(|_| ())
    }
}

pub(crate) fn norm(v: &[f64]) -> f64 {
    v.iter().map(|x| x * x).sum::<f64>().sqrt()
}

pub(crate) fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn exact(x: f64) -> String {
    num(x, Style::Shortest)
}

/// Values in rows of four, continuation rows indented to `indent`.
fn wrapped(values: &[String], indent: usize) -> String {
    values
        .chunks(4)
        .map(|c| c.join(", "))
        .collect::<Vec<_>>()
        .join(&format!(",\n{}", " ".repeat(indent)))
}

impl fmt::Display for StationaryReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let steps = if self.iterations == 1 {
            "iteration"
        } else {
            "iterations"
        };
        if self.converged {
            writeln!(
                f,
                "{}: {} (index {}) after {} {} {steps}",
                self.file, self.kind, self.index, self.iterations, self.method
            )?;
        } else {
            let why = match self.stop {
                Stop::MaxIter => "the iteration limit",
                _ => "stalled: no step lowers the merit",
            };
            writeln!(
                f,
                "{}: not converged after {} {} {steps} ({why})",
                self.file, self.iterations, self.method
            )?;
        }
        let coordinates: Vec<String> = self
            .variables
            .iter()
            .zip(&self.point)
            .map(|(n, v)| format!("{n} = {}", exact(*v)))
            .collect();
        if coordinates.len() <= 4 {
            writeln!(f, "  point        {}", coordinates.join(", "))?;
        } else {
            writeln!(
                f,
                "  point        {}",
                coordinates.join("\n               ")
            )?;
        }
        writeln!(f, "  f            {}", exact(self.value))?;
        let relation = if self.converged { "≤" } else { ">" };
        writeln!(
            f,
            "  ‖∇f‖         {} {relation} {} (tolerance)",
            exact(self.gradient_norm),
            exact(self.tolerance)
        )?;
        let values: Vec<String> = self.hessian_eigenvalues.iter().map(|v| exact(*v)).collect();
        let which = match self.eigenvalues {
            Eigenvalues::All => "eigenvalues",
            Eigenvalues::Extreme => "eigenvalues (the extreme ones, by Lanczos)",
        };
        write!(f, "  hessian      {which}: {}", wrapped(&values, 15))?;
        if !self.converged {
            write!(f, "\n               index {}, {}", self.index, self.kind)?;
        }
        for w in &self.warnings {
            write!(f, "\n  warning: {w}")?;
        }
        Ok(())
    }
}
