//! Monte Carlo simulation of SGD and of its SDE models side by side, coupled and
//! reproducible (docs/models.md §1, §2, §4).
//!
//! For each path `p = 0, 1, …, paths − 1`:
//!
//! * SGD: `x_{k+1} = x_k − η(∇f(x_k) + z_k)`, `z_k = −Σ(x_k)^{1/2} ξ_k`, `ξ_k ~ N(0, I)`,
//!   with Σ factored at every step when it depends on x; for a finite sum, real
//!   minibatch SGD instead ([`minibatch`]: uncoupled, since it draws no Gaussian
//!   numbers), or with [`SimConfig::gaussian_sgd`] its Gaussian surrogate;
//! * each model `dX = b(X) dt + σ(X) dW` ([`Term`]), integrated by a [`Scheme`] with
//!   `m` substeps of `h = η/m` per SGD step, on a Brownian path whose increments over
//!   `[kη, (k+1)η]` sum to `√η ξ_k` (coupled, the default) or are independent of SGD's
//!   noise ([`BrownianPath`]).
//!
//! The split follows diffrax: *terms* (the models' drift and diffusion factor),
//! *schemes* (integrators that step and declare a weak order), *Brownian paths* (noise
//! and coupling), and *what to save* (the observables at times `0, Kη, 2Kη, …, T`,
//! summarised by streaming [`crate::stats`]).
//!
//! Statistics, per saved time and observable φ: for SGD and every model the mean of φ
//! with its standard error and the sample variance; for every model, the mean of the
//! coupled difference `φ(X_t) − φ(x_k)` and its standard error.
//!
//! Divergence: a process (SGD or a model) whose state becomes non-finite, or whose
//! evaluation leaves its domain (a non-finite f, ∇f, Σ or observable; `ηλ_max ≥ 1`
//! for the HA-SME models; an indefinite Γ), stops on that path. It is counted, the
//! first such event (smallest path index) is reported with its step, time, point and
//! reason, and the path is left out of that process's statistics *at every time*, so
//! each process's statistics describe one fixed set of paths; a difference uses the
//! paths on which neither SGD nor the model diverged. A Σ(x) that is finite but not
//! symmetric positive semidefinite is the problem's fault, not the path's: the run
//! stops with an error naming the path (the smallest on which it happens), step and
//! point.
//!
//! Invariant: the same seed gives the same numbers on any number of threads and any
//! batch size. Paths read their own random streams ([`BrownianPath`]); paths are grouped in
//! chunks of [`CHUNK_PATHS`] consecutive indices, each chunk summarised in path order
//! (its paths may run on several threads at once: a finished path waits for the earlier
//! ones), and the chunk summaries merged in chunk order.
//!
//! The paths are run by the crate's path engine (`engine.rs`, shared with
//! [`mod@crate::escape`]); what `simulate` adds is the observer that saves the observables
//! at the saved steps. Speed: for d ≤ 4 the paths are stepped 64 at a time
//! (`block.rs`), each model evaluated over the whole block at once (`lanes.rs`,
//! `LaneTerm::eval_lanes`); every lane computes from its own point only, so a path's
//! numbers do not depend on which paths share its block.
//!
//! ```
//! use hasme::Problem;
//! use hasme::models::ModelKind;
//! use hasme::sim::{SimConfig, simulate};
//!
//! let problem = Problem::from_str("var x = 1\nminimize 0.5*x^2 + cos(x)\nnoise sd 0.5")?;
//! let config = SimConfig::builder(0.1, 1.0, 2000)
//!     .models(vec![ModelKind::Sme1, ModelKind::Hasme])
//!     .build()?;
//! let result = simulate(&problem, &config)?;
//! assert_eq!(result.times.len(), 11);
//! let x = &result.observables[0]; // default observables: `x`, then `norm2`
//! assert_eq!(x.name, "x");
//! let hasme = &x.processes[2];     // sgd, sme1, hasme
//! let diff = hasme.diff_mean.as_ref().unwrap()[10].unwrap();
//! let diff_se = hasme.diff_stderr.as_ref().unwrap()[10].unwrap();
//! let se = hasme.stderr[10].unwrap();
//! // Coupling: the difference is known far more precisely than either mean.
//! assert!(diff_se < se / 20.0, "{diff} ± {diff_se} vs ± {se}");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod block;
pub(crate) mod brownian;
pub(crate) mod engine;
pub(crate) mod krylov;
mod lanes;
pub mod minibatch;
pub(crate) mod schemes;
pub(crate) mod terms;
mod vmath;

use std::fmt;

use serde::Serialize;

use crate::format::{Named, Style};

use crate::models::ModelKind;
use crate::models::matrix_free::{KrylovOptions, LinearAlgebra};
use crate::problem::{Problem, ProblemError};
use crate::shard::{Ledger, bits, field, float, opt_bits, opt_float};
use crate::stats::{Welford, WelfordGrid};

pub use brownian::{BrownianPath, Coupling, MAX_STEPS};
pub use krylov::LanczosTally;
pub use schemes::{EulerMaruyama, Scheme, SchemeKind, TalayTubaro};
pub use terms::{Coefficients, Failure, Term};

use engine::{Engine, EngineError, Observer, Settings, States};
use terms::NoiseSource;

/// Paths per reduction chunk. Fixed (not a setting) because the last bits of every
/// statistic depend on it: chunks are summarised in path order and merged in chunk
/// order, whatever the threads and batches.
pub const CHUNK_PATHS: u64 = 256;

/// Largest accepted number of substeps per SGD step (a guard against typos: 2²⁰
/// substeps of a 2-d problem already cost seconds per path).
pub const MAX_SUBSTEPS: usize = 1 << 20;

/// What to simulate and how: built by [`SimConfig::builder`], which checks every
/// setting once (defaults on each field below); read through the getters.
///
/// ```
/// use hasme::{SimConfig, SimError};
///
/// let config = SimConfig::builder(0.1, 1.0, 1000).substeps(4).seed(7).build()?;
/// assert_eq!((config.eta(), config.substeps(), config.seed()), (0.1, 4, 7));
/// let err = SimConfig::builder(0.1, 0.25, 1000).build().unwrap_err();
/// assert_eq!(err.to_string(), "the horizon 0.25 is not a multiple of η = 0.1: use 0.2 or 0.30000000000000004");
/// assert!(matches!(SimConfig::builder(0.1, 1.0, 0).build(), Err(SimError::Config(_))));
/// # Ok::<(), SimError>(())
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct SimConfig {
    /// SGD step size η > 0.
    pub(crate) eta: f64,
    /// Horizon T ≥ 0; must be a multiple of η (to 1e−9 relative): the run takes
    /// `N = round(T/η)` steps and reports `Nη`.
    pub(crate) horizon: f64,
    /// Number of paths (≥ 1).
    pub(crate) paths: u64,
    /// SDE models simulated beside SGD (default: the five named models).
    pub(crate) models: Vec<ModelKind>,
    /// Substeps `m` per SGD step (default 8): the SDE step is `h = η/m`.
    pub(crate) substeps: usize,
    /// The integrator (default [`SchemeKind::TalayTubaro`]).
    pub(crate) scheme: SchemeKind,
    /// Coupled (default) or independent noise. For a finite sum, SGD draws real
    /// minibatches, which share no Gaussian numbers with the SDEs: such runs are always
    /// independent, and the result says so.
    pub(crate) coupling: Coupling,
    /// The seed (default 0).
    pub(crate) seed: u64,
    /// Save every `K`-th SGD step (default 1); the horizon is always saved.
    pub(crate) every: u64,
    /// Worker threads (default 1); they share the paths, however few (the paths of one
    /// chunk too). Does not change the numbers.
    pub(crate) threads: usize,
    /// Paths handed to the thread pool at a time, rounded up to whole chunks (default
    /// 16 chunks per thread); bounds memory. Does not change the numbers.
    pub(crate) batch: u64,
    /// For a finite sum: simulate SGD with Gaussian noise of the exact minibatch
    /// covariance, `z ~ N(0, Σ(x))` (the *Gaussian surrogate*), instead of real
    /// minibatches; it is then coupled to the SDEs like any Gaussian SGD. Default
    /// false. No effect on other problems.
    pub(crate) gaussian_sgd: bool,
    /// Keep the values at the horizon of the first `keep_paths` paths, one per path,
    /// observable and process ([`SimResult::kept`], default 0): what a paired
    /// comparison of two runs on the same paths needs. Memory grows with it.
    pub(crate) keep_paths: u64,
    /// Dense or matrix-free model coefficients (docs/models.md §8); default `None`: by
    /// the size rule (matrix-free above [`KRYLOV_ABOVE`](crate::models::matrix_free::KRYLOV_ABOVE) variables when every model
    /// has a matrix-free form). A matrix-free run of a finite sum drives SGD's
    /// Gaussian surrogate and the SDEs by the factor of Σ, n-dimensional noise: its
    /// numbers are those of the dense run in law, not path by path.
    pub(crate) linear_algebra: Option<LinearAlgebra>,
    /// The Lanczos tolerance of the matrix-free coefficients (default 1e−10).
    pub(crate) krylov: KrylovOptions,
    /// Run a shard, keep a checkpoint or replay parts ([`crate::shard`]; default none:
    /// the whole run, computed here). With a ledger that computes only part of the
    /// paths, the result describes those paths only.
    pub(crate) ledger: Option<Ledger>,
}

/// The settings of a simulation, before they are checked: see [`SimConfig`].
#[derive(Clone, Debug)]
pub struct SimConfigBuilder {
    draft: SimConfig,
}

impl SimConfigBuilder {
    crate::config::setters! {
        /// SGD step size η (finite, > 0).
        eta: f64,
        /// The horizon T (finite, ≥ 0, a multiple of η).
        horizon: f64,
        /// Number of paths (≥ 1).
        paths: u64,
        /// SDE models simulated beside SGD, in this order (no model twice).
        models: Vec<ModelKind>,
        /// Substeps per SGD step, between 1 and [`MAX_SUBSTEPS`].
        substeps: usize,
        /// The integrator.
        scheme: SchemeKind,
        /// Coupled or independent noise.
        coupling: Coupling,
        /// The seed.
        seed: u64,
        /// Save every `K`-th SGD step (K ≥ 1).
        every: u64,
        /// Worker threads (≥ 1).
        threads: usize,
        /// Paths handed to the thread pool at a time (0: the default).
        batch: u64,
        /// For a finite sum: simulate the Gaussian surrogate of minibatch SGD.
        gaussian_sgd: bool,
        /// Keep the horizon values of the first `keep_paths` paths.
        keep_paths: u64,
        /// Dense or matrix-free coefficients (`None`: by the size rule).
        linear_algebra: Option<LinearAlgebra>,
        /// The Lanczos tolerance of the matrix-free coefficients.
        krylov: KrylovOptions,
        /// The ledger of a shard, checkpoint or merge.
        ledger: Option<Ledger>,
    }

    /// Checks every setting (in the order of the fields, the same checks as
    /// [`simulate`] makes) and returns the configuration.
    pub fn build(&self) -> Result<SimConfig, SimError> {
        self.draft.plan()?;
        Ok(self.draft.clone())
    }
}

impl SimConfig {
    /// These settings as a builder, to derive a variant (e.g. another thread count).
    pub fn to_builder(&self) -> SimConfigBuilder {
        SimConfigBuilder {
            draft: self.clone(),
        }
    }

    /// Settings with the defaults listed on each field, to adjust and then
    /// [`build`](SimConfigBuilder::build).
    pub fn builder(eta: f64, horizon: f64, paths: u64) -> SimConfigBuilder {
        SimConfigBuilder {
            draft: SimConfig::unchecked(eta, horizon, paths),
        }
    }

    crate::config::getters! {
        /// SGD step size η.
        eta: f64,
        /// The horizon T.
        horizon: f64,
        /// Number of paths.
        paths: u64,
        /// Substeps per SGD step.
        substeps: usize,
        /// The integrator.
        scheme: SchemeKind,
        /// The coupling asked for.
        coupling: Coupling,
        /// The seed.
        seed: u64,
        /// The save interval K.
        every: u64,
        /// Worker threads.
        threads: usize,
        /// Paths handed to the thread pool at a time (0: the default).
        batch: u64,
        /// Whether a finite sum's SGD is its Gaussian surrogate.
        gaussian_sgd: bool,
        /// Paths whose horizon values are kept.
        keep_paths: u64,
        /// Dense or matrix-free coefficients, as asked (`None`: by the size rule).
        linear_algebra: Option<LinearAlgebra>,
        /// The Lanczos tolerance of the matrix-free coefficients.
        krylov: KrylovOptions,
        /// The ledger of a shard, checkpoint or merge.
        ledger: Option<Ledger>,
    }

    /// SDE models simulated beside SGD.
    pub fn models(&self) -> &[ModelKind] {
        &self.models
    }

    /// The defaults listed on each field, unchecked: the crate's own analyses start
    /// from it and [`simulate`] checks it.
    pub(crate) fn unchecked(eta: f64, horizon: f64, paths: u64) -> SimConfig {
        SimConfig {
            eta,
            horizon,
            paths,
            models: ModelKind::all().to_vec(),
            substeps: 8,
            scheme: SchemeKind::default(),
            coupling: Coupling::default(),
            seed: 0,
            every: 1,
            threads: 1,
            batch: 0,
            gaussian_sgd: false,
            keep_paths: 0,
            linear_algebra: None,
            krylov: KrylovOptions::default(),
            ledger: None,
        }
    }

    /// Checks the configuration; returns the number of SGD steps and the saved steps.
    fn plan(&self) -> Result<(u64, Vec<u64>), SimError> {
        let bad = |m: String| Err(SimError::Config(m));
        engine::check_eta(self.eta).map_err(SimError::Config)?;
        if !(self.horizon.is_finite() && self.horizon >= 0.0) {
            return bad(format!(
                "the horizon must be a finite number ≥ 0, got {}",
                self.horizon
            ));
        }
        let ratio = self.horizon / self.eta;
        let steps = ratio.round();
        // 1e-9: horizons typed in decimal (1.0 with η = 0.1, 0.3 with η = 0.1) are
        // multiples up to a few ulps of the quotient; a real mismatch is far larger.
        if (ratio - steps).abs() > 1e-9 * ratio.max(1.0) {
            let (lo, hi) = (ratio.floor() * self.eta, ratio.ceil() * self.eta);
            return bad(format!(
                "the horizon {} is not a multiple of η = {}: use {lo} or {hi}",
                self.horizon, self.eta
            ));
        }
        if steps >= MAX_STEPS as f64 {
            return bad(format!(
                "{steps} steps is too many (at most {MAX_STEPS}); raise η or shorten the horizon"
            ));
        }
        let steps = steps as u64;
        engine::check_paths(self.paths).map_err(SimError::Config)?;
        engine::check_substeps(self.substeps).map_err(SimError::Config)?;
        if self.every == 0 {
            return bad("--every must be at least 1".into());
        }
        engine::check_threads(self.threads).map_err(SimError::Config)?;
        engine::check_models(&self.models).map_err(SimError::Config)?;
        let mut saved: Vec<u64> = (0..=steps).step_by(self.every as usize).collect();
        if saved.last() != Some(&steps) {
            saved.push(steps);
        }
        Ok((steps, saved))
    }
}

/// Where and why a process first diverged. Its JSON form lists the fields in this order
/// (a non-finite coordinate of `point` as `null`).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Divergence {
    /// The path index.
    pub path: u64,
    /// The SGD step `k` during which it happened (from `t = kη` to `(k+1)η`), or the
    /// saved step whose observable failed.
    pub step: u64,
    /// `kη`.
    pub time: f64,
    /// The process's state at `t = kη`, the last one known finite (for Talay–Tubaro,
    /// the `h/2` copy).
    pub point: Vec<f64>,
    /// What went wrong.
    pub reason: String,
}

/// One process's statistics for one observable, aligned with [`SimResult::times`].
/// `None` where no path survived (for standard errors and variances: fewer than two),
/// or where the statistic overflowed f64 (a surviving path about to blow up); never
/// NaN.
///
/// Each path contributes one value per time: `φ(x_k)` for SGD, `φ(X_t)` for a model
/// under Euler–Maruyama, and the extrapolated `2φ(X^{h/2}_t) − φ(X^h_t)` under
/// Talay–Tubaro. The mean and its standard error estimate `E φ`; `variance` is the
/// sample variance of those per-path values, which under Talay–Tubaro is `Var φ(X_t)`
/// only up to the strong error of the scheme (use a second-moment observable such as
/// `x^2` for an `O(h²)`-accurate variance).
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    /// `sgd` or the model's name.
    pub name: String,
    /// Mean of φ.
    pub mean: Vec<Option<f64>>,
    /// Standard error of the mean.
    pub stderr: Vec<Option<f64>>,
    /// Sample variance of φ across paths.
    pub variance: Vec<Option<f64>>,
    /// Mean of the coupled difference model − SGD (`None` for SGD itself).
    pub diff_mean: Option<Vec<Option<f64>>>,
    /// Its standard error.
    pub diff_stderr: Option<Vec<Option<f64>>>,
}

/// The statistics of one observable: SGD first, then the models in the order asked.
#[derive(Clone, Debug, PartialEq)]
pub struct ObservableStats {
    /// The observable's name.
    pub name: String,
    /// One series per process.
    pub processes: Vec<Series>,
}

/// Everything a simulation reports. Nothing in it depends on the number of threads or
/// the batch size.
#[derive(Clone, Debug, PartialEq)]
pub struct SimResult {
    /// Saved times `0, Kη, …, T`.
    pub times: Vec<f64>,
    /// The init seed of the problem's random start values, when it draws some
    /// ([`Problem::init_seed_if_random`](crate::Problem::init_seed_if_random)).
    pub init_seed: Option<u64>,
    /// The start file the start point was read from (`--start`), when given.
    pub start_file: Option<String>,
    /// SGD steps `N = T/η`.
    pub steps: u64,
    /// Number of paths.
    pub paths: u64,
    /// The seed.
    pub seed: u64,
    /// η.
    pub eta: f64,
    /// `Nη`.
    pub horizon: f64,
    /// Save interval K.
    pub every: u64,
    /// Substeps per SGD step.
    pub substeps: usize,
    /// The scheme.
    pub scheme: SchemeKind,
    /// The coupling.
    pub coupling: Coupling,
    /// SGD's noise: `gaussian` (z = Σ^{1/2} ξ) or `minibatch` (real minibatches of a
    /// finite sum, never coupled to the SDEs).
    pub sgd_noise: &'static str,
    /// Process names: `sgd`, then the models.
    pub processes: Vec<String>,
    /// The Lanczos tolerance when the models' coefficients were matrix-free
    /// ([`SimConfig::linear_algebra`]), `None` when dense.
    pub krylov_tolerance: Option<f64>,
    /// The Lanczos steps of the run's matrix-free `hasme` evaluations (zero when
    /// dense).
    pub lanczos: LanczosTally,
    /// Per observable, per process.
    pub observables: Vec<ObservableStats>,
    /// Paths on which each process diverged.
    pub diverged: Vec<u64>,
    /// Paths on which neither SGD nor the model diverged (the coupled pairs), per model
    /// (`None` for SGD).
    pub pairs: Vec<Option<u64>>,
    /// The first divergence of each process (smallest path index).
    pub first_divergence: Vec<Option<Divergence>>,
    /// Variable names, for printing points.
    pub variables: Vec<String>,
    /// With [`SimConfig::keep_paths`] = K: the value at the horizon of path `p < K`,
    /// observable `o`, process `q` (SGD = 0, then the models) at
    /// `(p · observables + o) · processes + q`; `None` where that process diverged on
    /// that path.
    pub kept: Vec<Option<f64>>,
}

/// Why a simulation could not run.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// A setting is invalid (bad input).
    #[error("{0}")]
    Config(String),
    /// The problem cannot be evaluated at its start point.
    #[error("at the start point: {0}")]
    Start(ProblemError),
    /// Σ(x) is not a covariance at a point a path reached (the smallest such path; a
    /// failure while running).
    #[error("path {path}, step {step} (t = {time}): {source}")]
    Problem {
        /// The path index.
        path: u64,
        /// The SGD step.
        step: u64,
        /// `kη`.
        time: f64,
        /// The problem's error, naming the point.
        source: ProblemError,
    },
    /// The thread pool could not be built.
    #[error("cannot start {threads} worker threads: {message}")]
    Threads {
        /// Threads asked for.
        threads: usize,
        /// The system's reason.
        message: String,
    },
}

impl SimError {
    /// Bad settings or input, or a failure while running.
    pub fn kind(&self) -> crate::ErrorKind {
        match self {
            SimError::Config(_) => crate::ErrorKind::Input,
            SimError::Start(e) => e.kind(),
            SimError::Problem { .. } | SimError::Threads { .. } => crate::ErrorKind::Run,
        }
    }
}

/// Runs the simulation: `hasme simulate`. Divergences are counted in the result, not
/// errors; the text form is what the command prints, the JSON form (`serde`) what it
/// prints with `--json` (less the `file` field).
///
/// ```
/// use hasme::{ModelKind, Problem, SimConfig, simulate};
///
/// let p = Problem::from_str("var x = 1\nminimize x^2\nnoise sd 0.1")?;
/// let c = SimConfig::builder(0.1, 0.5, 200).models(vec![ModelKind::Hasme]).build()?;
/// let r = simulate(&p, &c)?;
/// assert_eq!((r.steps, r.total_diverged()), (5, 0));
/// assert!(format!("{r}").starts_with("200 paths, η = 0.1"));
/// assert_eq!(serde_json::to_value(&r)?["models"], serde_json::json!(["hasme"]));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn simulate(problem: &Problem, config: &SimConfig) -> Result<SimResult, SimError> {
    simulate_with_progress(problem, config, &|_| {})
}

/// [`simulate`], calling `progress(n)` each time `n` more paths are done (from any
/// worker thread).
pub fn simulate_with_progress(
    problem: &Problem,
    config: &SimConfig,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<SimResult, SimError> {
    // The Gaussian surrogate of a finite sum couples like any Gaussian SGD.
    let possible = if config.gaussian_sgd {
        config.coupling
    } else {
        config.coupling.possible(problem)
    };
    let adjusted;
    let config = if possible == config.coupling {
        config
    } else {
        adjusted = SimConfig {
            coupling: possible,
            ..config.clone()
        };
        &adjusted
    };
    match config.scheme {
        SchemeKind::EulerMaruyama => run(problem, config, EulerMaruyama, progress),
        SchemeKind::TalayTubaro => run(problem, config, TalayTubaro, progress),
    }
}

/// Layout of the statistics grid: values `(t, o, p)` then differences `(t, o, m)`.
#[derive(Clone, Copy, Debug)]
struct Layout {
    times: usize,
    observables: usize,
    processes: usize,
}

impl Layout {
    fn value(&self, t: usize, o: usize, p: usize) -> usize {
        (t * self.observables + o) * self.processes + p
    }

    fn diff(&self, t: usize, o: usize, m: usize) -> usize {
        let models = self.processes - 1;
        self.times * self.observables * self.processes + (t * self.observables + o) * models + m
    }

    fn cells(&self) -> usize {
        self.times * self.observables * (2 * self.processes - 1)
    }
}

/// The summary of a chunk of consecutive paths.
struct ChunkStats {
    grid: WelfordGrid,
    diverged: Vec<u64>,
    first: Vec<Option<Divergence>>,
    /// Horizon values of the chunk's paths below `keep_paths`, in path order.
    kept: Vec<Option<f64>>,
}

impl ChunkStats {
    fn new(layout: &Layout) -> ChunkStats {
        ChunkStats {
            grid: WelfordGrid::new(layout.cells()),
            diverged: vec![0; layout.processes],
            first: vec![None; layout.processes],
            kept: Vec::new(),
        }
    }

    /// Appends `other`, which summarises later paths.
    fn merge(&mut self, other: ChunkStats) {
        self.grid.merge(&other.grid);
        self.kept.extend(other.kept);
        for (a, b) in self.diverged.iter_mut().zip(&other.diverged) {
            *a += b;
        }
        for (a, b) in self.first.iter_mut().zip(other.first) {
            if a.is_none() {
                *a = b;
            }
        }
    }
}

/// Observable values at `x` into `out` (`slots`: the tape's buffer), or why they
/// cannot be had.
fn observe(
    problem: &Problem,
    x: &[f64],
    slots: &mut Vec<f64>,
    out: &mut [f64],
) -> Result<(), String> {
    if x.iter().any(|v| !v.is_finite()) {
        return Err("the state is not finite".into());
    }
    problem
        .observables_into(x, slots, out)
        .map_err(|e| e.to_string())
}

/// What `simulate` does with the paths: the observables of every process at the saved
/// steps, summarised per chunk ([`ChunkStats`]); a process whose observable cannot be
/// had diverges there.
struct Saver<'p, S> {
    problem: &'p Problem,
    config: &'p SimConfig,
    scheme: S,
    steps: u64,
    saved: Vec<u64>,
    layout: Layout,
    /// The coefficients the run uses.
    linear_algebra: LinearAlgebra,
}

/// What [`Saver`] keeps of a path while it runs.
struct SavedPath {
    /// φ per (saved time, observable, process).
    values: Vec<f64>,
    /// Where and why each process diverged on the path, if it did.
    diverged: Vec<Option<Divergence>>,
}

/// [`Saver`]'s buffers: the observables at one point and their tape's buffer, and
/// each copy's values for the scheme to combine.
struct SaverScratch {
    observed: Vec<f64>,
    slots: Vec<f64>,
    copy_values: Vec<f64>,
}

impl<S: Scheme> Saver<'_, S> {
    /// Records a divergence of process `p` in the path's record (a process diverges at
    /// most once on a path: it stops there); [`Observer::finish_path`] counts it.
    fn count(
        &self,
        record: &mut SavedPath,
        p: usize,
        (path, step): (u64, u64),
        point: &[f64],
        reason: String,
    ) {
        record.diverged[p] = Some(Divergence {
            path,
            step,
            time: step as f64 * self.config.eta,
            point: point.to_vec(),
            reason,
        });
    }
}

impl<S: Scheme> Observer for Saver<'_, S> {
    type Path = SavedPath;
    type Chunk = ChunkStats;
    type Scratch = SaverScratch;
    type Error = std::convert::Infallible;

    fn new_path(&self) -> SavedPath {
        let l = self.layout;
        SavedPath {
            values: vec![0.0; l.times * l.observables * l.processes],
            diverged: vec![None; l.processes],
        }
    }

    fn new_chunk(&self) -> ChunkStats {
        ChunkStats::new(&self.layout)
    }

    fn new_scratch(&self) -> SaverScratch {
        let l = self.layout;
        SaverScratch {
            observed: vec![0.0; l.observables],
            slots: Vec::new(),
            copy_values: vec![0.0; self.scheme.copies() * l.observables],
        }
    }

    fn start_path(&self, record: &mut SavedPath) {
        record.diverged.fill(None);
    }

    fn looks_at(&self, step: u64) -> bool {
        step <= self.steps && self.saved.binary_search(&step).is_ok()
    }

    /// Records φ of every live process at the saved step.
    fn look(
        &self,
        (path, step): (u64, u64),
        states: States<'_>,
        alive: &mut [bool],
        record: &mut SavedPath,
        scratch: &mut SaverScratch,
    ) -> Result<(), Self::Error> {
        let l = self.layout;
        let problem = self.problem;
        let Ok(t) = self.saved.binary_search(&step) else {
            return Ok(());
        };
        let SaverScratch {
            observed,
            slots,
            copy_values,
        } = scratch;
        if alive[0] {
            match observe(problem, states.sgd, slots, observed) {
                Ok(()) => {
                    for (o, &v) in observed.iter().enumerate() {
                        record.values[l.value(t, o, 0)] = v;
                    }
                }
                Err(reason) => {
                    alive[0] = false;
                    self.count(record, 0, (path, step), states.sgd, reason);
                }
            }
        }
        let d = states.sgd.len();
        let copies = self.scheme.copies();
        for (m, state) in states.models.iter().enumerate() {
            if !alive[m + 1] {
                continue;
            }
            let mut failed = None;
            for c in 0..copies {
                let x = &state[c * d..(c + 1) * d];
                match observe(problem, x, slots, observed) {
                    Ok(()) => {
                        for (o, &v) in observed.iter().enumerate() {
                            copy_values[o * copies + c] = v;
                        }
                    }
                    Err(reason) => {
                        failed = Some(reason);
                        break;
                    }
                }
            }
            match failed {
                Some(reason) => {
                    alive[m + 1] = false;
                    let x = &state[(copies - 1) * d..];
                    self.count(record, m + 1, (path, step), x, reason);
                }
                None => {
                    for o in 0..l.observables {
                        let v = self
                            .scheme
                            .combine(&copy_values[o * copies..(o + 1) * copies]);
                        record.values[l.value(t, o, m + 1)] = v;
                    }
                }
            }
        }
        Ok(())
    }

    fn diverged(
        &self,
        p: usize,
        at: (u64, u64),
        point: &[f64],
        reason: String,
        record: &mut SavedPath,
    ) {
        self.count(record, p, at, point, reason);
    }

    fn non_finite(&self, p: usize) -> String {
        match p {
            0 => "the SGD iterate became non-finite".to_string(),
            _ => format!("the {} state became non-finite", self.config.models[p - 1]),
        }
    }

    /// Counts the path's divergences (the chunk's first of each process is on its
    /// smallest path: paths come in path order) and pushes the path's saved values
    /// (and differences) of every process that did not diverge.
    fn finish_path(
        &self,
        path: u64,
        alive: &[bool],
        record: &mut SavedPath,
        stats: &mut ChunkStats,
    ) {
        for (p, d) in record.diverged.iter_mut().enumerate() {
            if let Some(d) = d.take() {
                stats.diverged[p] += 1;
                stats.first[p].get_or_insert(d);
            }
        }
        let values = &record.values;
        let l = self.layout;
        if path < self.config.keep_paths {
            let t = l.times - 1;
            for o in 0..l.observables {
                for p in 0..l.processes {
                    let v = values[l.value(t, o, p)];
                    stats.kept.push(alive[p].then_some(v));
                }
            }
        }
        for p in 0..l.processes {
            if !alive[p] {
                continue;
            }
            for t in 0..l.times {
                for o in 0..l.observables {
                    let i = l.value(t, o, p);
                    stats.grid.push(i, values[i]);
                    if p > 0 && alive[0] {
                        let diff = values[i] - values[l.value(t, o, 0)];
                        stats.grid.push(l.diff(t, o, p - 1), diff);
                    }
                }
            }
        }
    }

    /// `{"grid": [n, mean, M2, …], "diverged", "first", "kept"}`, numbers as bits.
    fn save_chunk(&self, stats: &ChunkStats) -> serde_json::Value {
        use serde_json::{Value, json};
        let grid: Vec<Value> = (stats.grid.cells().iter())
            .flat_map(|w| {
                let (n, mean, m2) = w.parts();
                [Value::from(n), bits(mean), bits(m2)]
            })
            .collect();
        let first: Vec<Value> = (stats.first.iter())
            .map(|d| match d {
                None => Value::Null,
                Some(d) => json!({
                    "path": d.path,
                    "step": d.step,
                    "time": bits(d.time),
                    "point": d.point.iter().map(|&x| bits(x)).collect::<Vec<_>>(),
                    "reason": d.reason,
                }),
            })
            .collect();
        json!({
            "grid": grid,
            "diverged": stats.diverged,
            "first": first,
            "kept": stats.kept.iter().map(|&x| opt_bits(x)).collect::<Vec<_>>(),
        })
    }

    fn load_chunk(&self, v: &serde_json::Value) -> Option<ChunkStats> {
        use serde_json::Value;
        let l = self.layout;
        let list = |name| field(v, name).and_then(Value::as_array);
        let grid = list("grid")?;
        if grid.len() != 3 * l.cells() {
            return None;
        }
        let cells = (grid.chunks_exact(3))
            .map(|w| {
                Some(Welford::from_parts(
                    w[0].as_u64()?,
                    float(&w[1])?,
                    float(&w[2])?,
                ))
            })
            .collect::<Option<Vec<_>>>()?;
        let diverged = (list("diverged")?.iter())
            .map(Value::as_u64)
            .collect::<Option<Vec<_>>>()?;
        let first = (list("first")?.iter())
            .map(|d| {
                if d.is_null() {
                    return Some(None);
                }
                Some(Some(Divergence {
                    path: field(d, "path")?.as_u64()?,
                    step: field(d, "step")?.as_u64()?,
                    time: float(field(d, "time")?)?,
                    point: (field(d, "point")?.as_array()?.iter())
                        .map(float)
                        .collect::<Option<Vec<_>>>()?,
                    reason: field(d, "reason")?.as_str()?.to_string(),
                }))
            })
            .collect::<Option<Vec<_>>>()?;
        let kept = (list("kept")?.iter())
            .map(opt_float)
            .collect::<Option<Vec<_>>>()?;
        (diverged.len() == l.processes && first.len() == l.processes).then(|| ChunkStats {
            grid: WelfordGrid::from_cells(cells),
            diverged,
            first,
            kept,
        })
    }
}

/// The engine and the observer of a run, once the configuration and the start point
/// are checked.
fn prepare<'p, S: Scheme>(
    problem: &'p Problem,
    config: &'p SimConfig,
    scheme: S,
) -> Result<(Engine<'p>, Saver<'p, S>), SimError> {
    let (steps, saved) = config.plan()?;
    let start = problem.start();
    let linear_algebra =
        engine::linear_algebra(config.linear_algebra, problem.dim(), &config.models)
            .map_err(SimError::Config)?;
    // Evaluate everything once at the start point, so a problem that is invalid there
    // fails before any path runs, with the problem's own message.
    engine::check_start(problem, &start, linear_algebra).map_err(SimError::Start)?;
    problem.observables(&start).map_err(SimError::Start)?;
    let diagonal = linear_algebra == LinearAlgebra::Krylov;
    let noise = NoiseSource::for_problem(problem, &start, diagonal).map_err(SimError::Start)?;
    let layout = Layout {
        times: saved.len(),
        observables: problem.observable_names().len(),
        processes: config.models.len() + 1,
    };
    let engine = Engine {
        problem,
        noise,
        start,
        settings: Settings {
            eta: config.eta,
            steps,
            paths: config.paths,
            models: config.models.clone(),
            substeps: config.substeps,
            coupling: config.coupling,
            seed: config.seed,
            threads: config.threads,
            batch: config.batch,
            minibatch: !config.gaussian_sgd,
            linear_algebra,
            krylov: config.krylov,
            ledger: config.ledger.clone(),
        },
    };
    let saver = Saver {
        problem,
        config,
        scheme,
        steps,
        saved,
        layout,
        linear_algebra,
    };
    Ok((engine, saver))
}

/// Maps the engine's errors to the simulator's.
fn sim_error(config: &SimConfig, e: EngineError<std::convert::Infallible>) -> SimError {
    match e {
        EngineError::Fatal {
            path, step, source, ..
        } => SimError::Problem {
            path,
            step,
            time: step as f64 * config.eta,
            source,
        },
        EngineError::Threads { threads, message } => SimError::Threads { threads, message },
        EngineError::Observer(never) => match never {},
    }
}

fn run<S: Scheme + Copy>(
    problem: &Problem,
    config: &SimConfig,
    scheme: S,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<SimResult, SimError> {
    let (engine, saver) = prepare(problem, config, scheme)?;
    let mut total = ChunkStats::new(&saver.layout);
    let lanczos = engine
        .run(scheme, &saver, progress, |c| total.merge(c))
        .map_err(|e| sim_error(config, e))?;
    Ok(finish(&saver, total, lanczos))
}

/// What the engine's processes were at every saved step of every path of an
/// Euler–Maruyama run ([`engine::tap`]), for tests that compare commands path by path.
#[cfg(test)]
pub(crate) fn trace(
    problem: &Problem,
    config: &SimConfig,
) -> Result<Vec<engine::tap::Trace>, SimError> {
    assert_eq!(
        config.scheme,
        SchemeKind::EulerMaruyama,
        "one copy per model"
    );
    let (engine, saver) = prepare(problem, config, EulerMaruyama)?;
    let mut traces = Vec::new();
    engine
        .run(
            EulerMaruyama,
            &engine::tap::Tap(saver),
            &|_| {},
            |(_, t)| traces.extend(t),
        )
        .map_err(|e| sim_error(config, e))?;
    Ok(traces)
}

/// `Some(x)` for finite `x`: statistics never carry NaN or infinities.
fn finite(x: Option<f64>) -> Option<f64> {
    x.filter(|v| v.is_finite())
}

fn finish<S>(plan: &Saver<'_, S>, total: ChunkStats, lanczos: LanczosTally) -> SimResult {
    let config = plan.config;
    let l = plan.layout;
    let mut processes = vec!["sgd".to_string()];
    processes.extend(config.models.iter().map(|m| m.to_string()));
    let observables = plan
        .problem
        .observable_names()
        .iter()
        .enumerate()
        .map(|(o, name)| ObservableStats {
            name: name.clone(),
            processes: processes
                .iter()
                .enumerate()
                .map(|(p, pname)| {
                    let cell = |t| total.grid.cell(l.value(t, o, p));
                    let series = |f: &dyn Fn(usize) -> Option<f64>| -> Vec<Option<f64>> {
                        (0..l.times).map(|t| finite(f(t))).collect()
                    };
                    let diff = |t| total.grid.cell(l.diff(t, o, p - 1));
                    Series {
                        name: pname.clone(),
                        mean: series(&|t| cell(t).mean()),
                        stderr: series(&|t| cell(t).stderr()),
                        variance: series(&|t| cell(t).variance()),
                        diff_mean: (p > 0).then(|| series(&|t| diff(t).mean())),
                        diff_stderr: (p > 0).then(|| series(&|t| diff(t).stderr())),
                    }
                })
                .collect(),
        })
        .collect();
    let pairs = (0..l.processes)
        .map(|p| {
            (p > 0).then(|| {
                if l.observables == 0 {
                    0
                } else {
                    total.grid.cell(l.diff(0, 0, p - 1)).count()
                }
            })
        })
        .collect();
    SimResult {
        times: plan.saved.iter().map(|&k| k as f64 * config.eta).collect(),
        steps: plan.steps,
        paths: config.paths,
        seed: config.seed,
        init_seed: plan.problem.init_seed_if_random(),
        start_file: plan.problem.start_file().map(str::to_string),
        eta: config.eta,
        horizon: plan.steps as f64 * config.eta,
        every: config.every,
        substeps: config.substeps,
        scheme: config.scheme,
        coupling: config.coupling,
        sgd_noise: if plan.problem.finite_sum().is_some() && !config.gaussian_sgd {
            "minibatch"
        } else {
            "gaussian"
        },
        processes,
        krylov_tolerance: (plan.linear_algebra == LinearAlgebra::Krylov)
            .then(|| config.krylov.tolerance()),
        lanczos,
        observables,
        diverged: total.diverged,
        pairs,
        first_divergence: total.first,
        variables: plan.problem.variables().to_vec(),
        kept: total.kept,
    }
}

impl SimResult {
    /// Total divergences over all processes.
    pub fn total_diverged(&self) -> u64 {
        self.diverged.iter().sum()
    }

    fn format_point(&self, x: &[f64]) -> String {
        crate::format::point(&self.variables, x)
    }
}

/// The JSON form (the contract of `hasme simulate --json`): `times`, `paths`, `seed`,
/// `init_seed` (only when the problem draws its start), `start_file` (only with a start
/// file), `eta`, `horizon`, `steps`, `every`, `scheme`, `weak_order`, `substeps`, `coupling`,
/// `sgd_noise`, `models`, `variables`, `observables.NAME.PROCESS.{mean, stderr,
/// variance}` and, for models, `.diff_mean`/`.diff_stderr` (lists aligned with
/// `times`, `null` where no path survived), `diverged.PROCESS`, `pairs.MODEL`, and
/// `first_divergence.PROCESS` (`path`, `step`, `time`, `point`, `reason`) for each
/// process that diverged.
impl Serialize for SimResult {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let names = self.processes.iter().map(String::as_str);
        SimJson {
            times: &self.times,
            paths: self.paths,
            seed: self.seed,
            init_seed: self.init_seed,
            start_file: self.start_file.as_deref(),
            eta: self.eta,
            horizon: self.horizon,
            steps: self.steps,
            every: self.every,
            scheme: self.scheme.to_string(),
            weak_order: self.scheme.weak_order(),
            substeps: self.substeps,
            coupling: self.coupling.to_string(),
            sgd_noise: self.sgd_noise,
            krylov: krylov::KrylovJson::new(self.krylov_tolerance, &self.lanczos),
            models: &self.processes[1..],
            variables: &self.variables,
            observables: self
                .observables
                .iter()
                .map(|o| {
                    let per = o
                        .processes
                        .iter()
                        .map(|s| (s.name.as_str(), SeriesJson::from(s)));
                    (o.name.as_str(), per.collect())
                })
                .collect(),
            diverged: names.clone().zip(self.diverged.iter().copied()).collect(),
            pairs: names
                .clone()
                .zip(&self.pairs)
                .filter_map(|(n, p)| p.map(|p| (n, p)))
                .collect(),
            first_divergence: names
                .zip(&self.first_divergence)
                .filter_map(|(n, d)| d.as_ref().map(|d| (n, d)))
                .collect(),
        }
        .serialize(serializer)
    }
}

/// [`SimResult`]'s JSON, field by field in the contract's order.
#[derive(Serialize)]
struct SimJson<'a> {
    times: &'a [f64],
    paths: u64,
    seed: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    init_seed: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    start_file: Option<&'a str>,
    eta: f64,
    horizon: f64,
    steps: u64,
    every: u64,
    scheme: String,
    weak_order: u32,
    substeps: usize,
    coupling: String,
    sgd_noise: &'a str,
    #[serde(flatten)]
    krylov: krylov::KrylovJson<'a>,
    models: &'a [String],
    variables: &'a [String],
    observables: Named<&'a str, Named<&'a str, SeriesJson<'a>>>,
    diverged: Named<&'a str, u64>,
    pairs: Named<&'a str, u64>,
    first_divergence: Named<&'a str, &'a Divergence>,
}

/// One process's statistics for one observable; the differences for models only.
#[derive(Serialize)]
struct SeriesJson<'a> {
    mean: &'a [Option<f64>],
    stderr: &'a [Option<f64>],
    variance: &'a [Option<f64>],
    #[serde(skip_serializing_if = "Option::is_none")]
    diff_mean: Option<&'a [Option<f64>]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    diff_stderr: Option<&'a [Option<f64>]>,
}

impl<'a> From<&'a Series> for SeriesJson<'a> {
    fn from(s: &'a Series) -> Self {
        // Both differences or neither, as the simulator fills them.
        let both = s.diff_mean.is_some() && s.diff_stderr.is_some();
        SeriesJson {
            mean: &s.mean,
            stderr: &s.stderr,
            variance: &s.variance,
            diff_mean: s.diff_mean.as_deref().filter(|_| both),
            diff_stderr: s.diff_stderr.as_deref().filter(|_| both),
        }
    }
}

fn cell(x: Option<f64>) -> String {
    crate::format::cell(x, Style::Sci(6))
}

impl fmt::Display for SimResult {
    /// A summary at the horizon: per observable, each process's mean ± standard error
    /// and each model's coupled difference to SGD; then the divergences.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.sgd_noise == "minibatch" {
            writeln!(
                f,
                "SGD draws real minibatches, independent of the SDEs' noise: each difference to SGD combines two independent estimates (its variance is the sum of theirs)"
            )?;
        }
        writeln!(
            f,
            "{} paths, η = {}, horizon {} ({} steps), {} with {} substeps (weak order {}), {}, seed {}",
            self.paths,
            self.eta,
            self.horizon,
            self.steps,
            self.scheme,
            self.substeps,
            self.scheme.weak_order(),
            self.coupling,
            self.seed
        )?;
        krylov::krylov_lines(f, self.krylov_tolerance, &self.lanczos)?;
        let last = self.times.len() - 1;
        for o in &self.observables {
            writeln!(f, "\nobservable `{}` at t = {}", o.name, self.times[last])?;
            writeln!(
                f,
                "  {:<14} {:>14} {:>12} {:>14} {:>12}",
                "process", "mean", "± stderr", "minus sgd", "± stderr"
            )?;
            for s in &o.processes {
                let (dm, ds) = match (&s.diff_mean, &s.diff_stderr) {
                    (Some(dm), Some(ds)) => (cell(dm[last]), cell(ds[last])),
                    _ => (String::new(), String::new()),
                };
                writeln!(
                    f,
                    "  {:<14} {:>14} {:>12} {:>14} {:>12}",
                    s.name,
                    cell(s.mean[last]),
                    cell(s.stderr[last]),
                    dm,
                    ds
                )?;
            }
        }
        if self.total_diverged() == 0 {
            write!(f, "\nno path diverged")?;
        } else {
            write!(
                f,
                "\ndiverged paths (left out of that process's statistics):"
            )?;
            for (p, name) in self.processes.iter().enumerate() {
                if let Some(d) = &self.first_divergence[p] {
                    write!(
                        f,
                        "\n  {name}: {} of {}; first on path {}, step {} (t = {}), from {}: {}",
                        self.diverged[p],
                        self.paths,
                        d.path,
                        d.step,
                        d.time,
                        self.format_point(&d.point),
                        d.reason
                    )?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn horizons_must_be_multiples_of_eta() {
        let c = SimConfig::builder(0.1, 0.3, 10).build().unwrap();
        assert_eq!(c.plan().unwrap().0, 3);
        let e = SimConfig::builder(0.1, 0.35, 10).build().unwrap_err();
        assert!(
            e.to_string().contains("use 0.30000000000000004 or 0.4")
                || e.to_string().contains("0.4"),
            "{e}"
        );
        assert_eq!(e.kind(), crate::ErrorKind::Input);
    }

    #[test]
    fn saved_steps_include_the_horizon() {
        let mut c = SimConfig::unchecked(0.1, 1.0, 10);
        c.every = 3;
        assert_eq!(c.plan().unwrap().1, vec![0, 3, 6, 9, 10]);
        c.every = 20;
        assert_eq!(c.plan().unwrap().1, vec![0, 10]);
        let c = SimConfig::unchecked(0.1, 0.0, 10);
        assert_eq!(c.plan().unwrap().1, vec![0]);
    }

    #[test]
    fn bad_settings_are_config_errors() {
        let base = SimConfig::builder(0.1, 1.0, 10);
        let cases: [fn(&mut SimConfigBuilder); 8] = [
            |c| c.draft.eta = -1.0,
            |c| c.draft.eta = f64::NAN,
            |c| c.draft.horizon = f64::INFINITY,
            |c| c.draft.paths = 0,
            |c| _ = c.substeps(0),
            |c| _ = c.every(0),
            |c| _ = c.threads(0),
            |c| _ = c.models(vec![ModelKind::Gf, ModelKind::Gf]),
        ];
        for f in cases {
            let mut c = base.clone();
            f(&mut c);
            assert!(matches!(c.build(), Err(SimError::Config(_))), "{c:?}");
        }
    }

    #[test]
    fn layout_cells_do_not_overlap() {
        let l = Layout {
            times: 3,
            observables: 2,
            processes: 4,
        };
        let mut seen = vec![false; l.cells()];
        for t in 0..3 {
            for o in 0..2 {
                for p in 0..4 {
                    assert!(!std::mem::replace(&mut seen[l.value(t, o, p)], true));
                }
                for m in 0..3 {
                    assert!(!std::mem::replace(&mut seen[l.diff(t, o, m)], true));
                }
            }
        }
        assert!(seen.into_iter().all(|s| s));
    }

    /// A run of one chunk (100 paths) keeps both threads of two busy: the first path a
    /// thread starts waits until the other thread has started one too, which happens
    /// only when the chunk's paths are shared out (no timing is involved; a run whose
    /// paths all went to one thread would wait out the timeout and fail here). One
    /// thread per point (d = 5) and in lanes (d = 1); the numbers are one thread's.
    #[test]
    fn the_paths_of_one_chunk_are_shared_by_the_threads() {
        let rosenbrock = "var w[5] = 0.5\n\
            minimize sum(i = 1..4, (w[i+1] - w[i]^2)^2 + 0.1*(1 - w[i])^2)\nnoise sd 0.1";
        for text in [rosenbrock, "var x = 1\nminimize 0.5*x^2\nnoise sd 0.5"] {
            let problem = Problem::from_str(text).unwrap();
            let mut c = SimConfig::builder(0.05, 0.5, 100);
            c.models(vec![ModelKind::Sme1, ModelKind::Hasme]);
            c.scheme(SchemeKind::EulerMaruyama);
            c.threads(2);
            let config = c.build().unwrap();
            let (engine, saver) = prepare(&problem, &config, EulerMaruyama).unwrap();
            let meet = engine::meet::Meet::new(saver, 2);
            let mut total = ChunkStats::new(&meet.inner.layout);
            let lanczos = engine
                .run(EulerMaruyama, &meet, &|_| {}, |chunk| total.merge(chunk))
                .unwrap();
            assert_eq!(meet.threads_seen().len(), 2, "{text}");
            let shared = finish(&meet.inner, total, lanczos);
            c.threads(1);
            assert_eq!(shared, simulate(&problem, &c.build().unwrap()).unwrap());
        }
    }

    /// Shards through ledgers, merged by replaying their parts, give the whole run's
    /// result to the bit, kept values and divergences included, and so does a run
    /// resumed from a ledger that holds some of its chunks.
    #[test]
    fn shards_replayed_give_the_whole_run() {
        use crate::shard::{Ledger, Part, RunKey, Shard};
        let problem = Problem::from_str("var x = 1\nminimize x^4\nnoise sd 1").unwrap();
        let mut c = SimConfig::builder(0.3, 1.5, 1800);
        c.models(vec![ModelKind::Sme1, ModelKind::Hasme])
            .keep_paths(600)
            .threads(2);
        let whole = simulate(&problem, &c.build().unwrap()).unwrap();
        assert!(
            whole.total_diverged() > 0,
            "the run has divergences to carry"
        );
        let key = RunKey {
            hasme: "test".into(),
            command: "simulate".into(),
            args: Vec::new(),
            digest: String::new(),
        };
        let parts: Vec<Part> = (0..3)
            .map(|index| {
                let ledger =
                    Ledger::compute(Part::new(key.clone(), Shard { index, count: 3 }), None);
                c.ledger(Some(ledger.clone()));
                simulate(&problem, &c.build().unwrap()).unwrap();
                assert!(ledger.partial());
                ledger.part()
            })
            .collect();
        let names: Vec<String> = (0..3).map(|k| k.to_string()).collect();
        // Shard 0/3's chunks (0 and 1) done: the resumed run computes the other six.
        let mut resumed = Part::new(key.clone(), Shard::WHOLE);
        resumed.runs = parts[0].runs.clone();
        for replay in [
            Ledger::replay(parts, &names).unwrap(),
            Ledger::compute(resumed, None),
        ] {
            c.ledger(Some(replay.clone()));
            assert_eq!(simulate(&problem, &c.build().unwrap()).unwrap(), whole);
            assert!(!replay.partial());
            assert!(replay.take_error().is_none());
        }
    }
}
