//! Escape from saddles and sharp minima: first-exit times of SGD and of its SDE models,
//! read on the grid `t = kη`, compared as distributions (docs/models.md §5).
//!
//! For each path `p = 0, 1, …, paths − 1`, SGD and every model start at the problem's
//! start point and run on the coupled noise of [`crate::sim`] (SGD step `k` and the SDE
//! substeps on `[kη, (k+1)η]` share the Gaussian draws of the path's own ChaCha8
//! stream, [`crate::sim::BrownianPath`]). The *escape time* of a process is `kη` for the
//! first `k ≥ 1` at which its state is outside the region ([`Region`]): a ball
//! `‖x − c‖ > r`, or `g(x) > 0` for an expression `g`. The SDEs are integrated with
//! substeps but looked at only at grid times, so SGD and the models are compared on the
//! same clock. A path that has not left by the cap `K` steps is *censored* at `Kη`
//! (never dropped); a process that diverges on a path (a non-finite state, `ηλ_max ≥ 1`
//! for HA-SME…) is censored at the last grid time it was seen inside, and counted.
//!
//! Statistics per process (times in units of `t = kη`):
//!
//! * the Kaplan–Meier survival curve `Ŝ(t) = Π_{t_i ≤ t} (1 − d_i/n_i)` ([`KaplanMeier`]);
//! * the escape probability by the cap, `1 − Ŝ(Kη)` (the plain fraction of paths that
//!   escaped when nothing diverged);
//! * the mean escape time: the *restricted* mean `∫₀^{Kη} Ŝ(t) dt` (equal to the sample
//!   mean when every path escaped; a lower bound on the mean otherwise), its standard
//!   error by the Greenwood-type formula `Var = Σ_i A_i² d_i / (n_i (n_i − d_i))` with
//!   `A_i = ∫_{t_i}^{Kη} Ŝ`, and a normal 95 % interval;
//! * median and quartiles from the KM curve: the `q`-quantile is the smallest event time
//!   with `Ŝ(t) ≤ 1 − q` (none when the curve never gets there);
//! * for a model, the two-sample Kolmogorov–Smirnov distance to SGD,
//!   `D = sup_t |Ŝ_model(t) − Ŝ_sgd(t)|`, and its p-value from the asymptotic Kolmogorov
//!   distribution at `√(n m/(n + m)) D` ([`kolmogorov_pvalue`]). Censoring: both curves
//!   are compared up to the common cap; with censoring only at the cap this is exactly
//!   the KS statistic of the samples with every censored time replaced by one value
//!   beyond the cap (the empirical CDFs agree up to the cap). Two caveats, both making
//!   the test conservative: escape times are discrete (grid times, with ties), and the
//!   coupled samples are positively correlated, whereas the Kolmogorov law assumes
//!   independent continuous samples. Use [`Coupling::Independent`] for a calibrated
//!   p-value; keep the coupling for sharp paired differences;
//! * for a model, the paired difference of `min(T, Kη)` against SGD on the same path,
//!   with its standard error (the coupling makes it far more precise than the two means).
//!
//! The models are integrated by Euler–Maruyama with `m` substeps of `h = η/m`:
//! Talay–Tubaro extrapolation improves expectations of smooth functions of `X_t`, not a
//! path functional such as a first-exit time. Its `O(h)` error is the price of a
//! simulated escape time; on a quadratic saddle it biases HA-SME's per-step growth by
//! about `η h μ²/2` (μ the growth rate), which more substeps shrink.
//!
//! For a quadratic objective with constant noise, [`growth_rates`] gives the exact
//! per-step growth factor of each process along the eigenvector of `λ_min(H)`: SGD's
//! `|1 − ηλ_min|`, a model's `e^{μη}` with `μ` its linear drift's eigenvalue there
//! ([`crate::moments::Quadratic::model_sde`]).
//!
//! The paths run on the simulator's path engine (the random streams, chunks, threads,
//! divergences and lane-batched stepping of `simulate`), with an observer that stops a
//! process once it is outside the region: a path's states at the grid times are the
//! bits `simulate` would save on the same seed with Euler–Maruyama.
//!
//! Invariant: the same seed gives the same numbers on any number of threads. Memory is
//! one outcome per path and process, whatever the number of steps.
//!
//! ```
//! use hasme::Problem;
//! use hasme::escape::{EscapeConfig, Region, escape};
//! use hasme::models::ModelKind;
//!
//! let problem = Problem::from_str(
//!     "var x = 0, y = 0\nminimize 0.5*x^2 - 0.5*y^2\nnoise sd 0.1",
//! )?;
//! let config = EscapeConfig::builder(0.1, 2000, 200, Region::ball(0.5))
//!     .models(vec![ModelKind::Hasme])
//!     .build()?;
//! let report = escape(&problem, &config)?;
//! let sgd = &report.processes[0];
//! assert_eq!(sgd.name, "sgd");
//! assert_eq!(sgd.escaped, 200); // every path left the ball before the cap
//! let hasme = &report.processes[1];
//! assert!(hasme.ks_pvalue.unwrap() > 0.01);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;

use nalgebra::SymmetricEigen;
use serde::Serialize;

use crate::format::Named;
use crate::models::ModelKind;
use crate::models::matrix_free::{KrylovOptions, LinearAlgebra};
use crate::moments::Quadratic;
use crate::plot::LinePlot;
use crate::problem::{Expression, Problem, ProblemError};
use crate::shard::{Ledger, field};
use crate::sim::engine::{self, Engine, EngineError, Observer, Settings, States};
use crate::sim::krylov::{KrylovJson, krylov_lines};
use crate::sim::terms::NoiseSource;
use crate::sim::{CHUNK_PATHS, Coupling, EulerMaruyama, LanczosTally, MAX_STEPS};
use crate::stats::Welford;

/// The two-sided 97.5 % standard normal quantile, for 95 % intervals (the same
/// constant as [`crate::experiment::Z975`], see there why not `statrs`).
const Z95: f64 = 1.959_963_984_540_054;

/// Relative slack when comparing a KM product with `1 − q`: the product of
/// `(1 − d_i/n_i)` carries a few ulps of round-off (e.g. `0.75 · (2/3)` is
/// `0.49999999999999994`), which must not move a quantile to the next event.
const QUANTILE_SLACK: f64 = 1e-12;

/// Where a path has escaped.
#[derive(Clone, Debug, PartialEq)]
pub enum Region {
    /// Escaped when `‖x − centre‖ > radius` (centre: the start point when `None`).
    Ball {
        /// The centre, one value per coordinate; `None` for the start point.
        centre: Option<Vec<f64>>,
        /// The radius r > 0.
        radius: f64,
    },
    /// Escaped when `EXPR > 0`; EXPR is an expression of the objective language over
    /// the problem's variables, params and lets.
    When(String),
    /// The file's own `escape when LHS > RHS` statement ([`Problem::escape_region`]).
    File,
}

impl Region {
    /// A ball of radius `radius` around the start point.
    pub fn ball(radius: f64) -> Region {
        Region::Ball {
            centre: None,
            radius,
        }
    }
}

/// What to simulate: built by [`EscapeConfig::builder`], which checks every setting
/// once (defaults on each field below); read through the getters.
///
/// ```
/// use hasme::{EscapeConfig, EscapeError, Region};
///
/// let config = EscapeConfig::builder(0.1, 500, 200, Region::ball(1.0)).seed(3).build()?;
/// assert_eq!((config.max_steps(), config.substeps()), (500, 32));
/// let err = EscapeConfig::builder(0.1, 500, 200, Region::ball(-1.0)).build().unwrap_err();
/// assert_eq!(err.to_string(), "the radius must be a finite number > 0, got -1");
/// # Ok::<(), EscapeError>(())
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct EscapeConfig {
    /// SGD step size η > 0.
    pub(crate) eta: f64,
    /// The cap K ≥ 1 on SGD steps: paths still inside at `Kη` are censored there.
    pub(crate) max_steps: u64,
    /// Number of paths (≥ 1).
    pub(crate) paths: u64,
    /// The region to leave.
    pub(crate) region: Region,
    /// Models simulated beside SGD (default: the five named models).
    pub(crate) models: Vec<ModelKind>,
    /// Euler–Maruyama substeps per SGD step (default 32: at 8, HA-SME's paired
    /// difference to SGD on the quadratic saddle shows the scheme's O(h) bias, about 1%
    /// of the mean escape time; at 32 it is below the standard error of 2000 paths).
    pub(crate) substeps: usize,
    /// Coupled (default) or independent noise. A finite sum's minibatch SGD cannot be
    /// coupled: its runs are always independent (and reported so).
    pub(crate) coupling: Coupling,
    /// The seed (default 0).
    pub(crate) seed: u64,
    /// Worker threads (default 1). Does not change the numbers.
    pub(crate) threads: usize,
    /// Dense or matrix-free model coefficients (default `None`: by the size rule), as
    /// [`crate::SimConfig`]'s.
    pub(crate) linear_algebra: Option<LinearAlgebra>,
    /// The Lanczos tolerance of the matrix-free coefficients (default 1e−10).
    pub(crate) krylov: KrylovOptions,
    /// Run a shard, keep a checkpoint or replay parts ([`crate::shard`]; default none).
    /// With a ledger that computes only part of the paths, the report has no
    /// processes.
    pub(crate) ledger: Option<Ledger>,
}

/// The settings of an escape run, before they are checked: see [`EscapeConfig`].
#[derive(Clone, Debug)]
pub struct EscapeConfigBuilder {
    draft: EscapeConfig,
}

impl EscapeConfigBuilder {
    crate::config::setters! {
        /// SGD step size η (finite, > 0).
        eta: f64,
        /// The cap K on SGD steps (between 1 and `MAX_STEPS − 1`).
        max_steps: u64,
        /// Number of paths (≥ 1).
        paths: u64,
        /// The region to leave (a ball's radius finite and > 0).
        region: Region,
        /// Models simulated beside SGD, in this order (no model twice).
        models: Vec<ModelKind>,
        /// Euler–Maruyama substeps per SGD step, between 1 and [`crate::sim::MAX_SUBSTEPS`].
        substeps: usize,
        /// Coupled or independent noise.
        coupling: Coupling,
        /// The seed.
        seed: u64,
        /// Worker threads (≥ 1).
        threads: usize,
        /// Dense or matrix-free coefficients (`None`: by the size rule).
        linear_algebra: Option<LinearAlgebra>,
        /// The Lanczos tolerance of the matrix-free coefficients.
        krylov: KrylovOptions,
        /// The ledger of a shard, checkpoint or merge.
        ledger: Option<Ledger>,
    }

    /// Checks every setting (the same checks as [`escape`] makes, in the same order)
    /// and returns the configuration.
    pub fn build(&self) -> Result<EscapeConfig, EscapeError> {
        self.draft.check()?;
        Ok(self.draft.clone())
    }
}

impl EscapeConfig {
    /// These settings as a builder, to derive a variant (e.g. another thread count).
    pub fn to_builder(&self) -> EscapeConfigBuilder {
        EscapeConfigBuilder {
            draft: self.clone(),
        }
    }

    /// Settings with the defaults listed on each field, to adjust and then
    /// [`build`](EscapeConfigBuilder::build).
    pub fn builder(eta: f64, max_steps: u64, paths: u64, region: Region) -> EscapeConfigBuilder {
        EscapeConfigBuilder {
            draft: EscapeConfig::unchecked(eta, max_steps, paths, region),
        }
    }

    crate::config::getters! {
        /// SGD step size η.
        eta: f64,
        /// The cap K on SGD steps.
        max_steps: u64,
        /// Number of paths.
        paths: u64,
        /// Euler–Maruyama substeps per SGD step.
        substeps: usize,
        /// The coupling asked for.
        coupling: Coupling,
        /// The seed.
        seed: u64,
        /// Worker threads.
        threads: usize,
    }

    /// The region to leave.
    pub fn region(&self) -> &Region {
        &self.region
    }

    /// Models simulated beside SGD.
    pub fn models(&self) -> &[ModelKind] {
        &self.models
    }

    /// The defaults listed on each field, unchecked ([`escape`] checks it).
    pub(crate) fn unchecked(eta: f64, max_steps: u64, paths: u64, region: Region) -> EscapeConfig {
        EscapeConfig {
            eta,
            max_steps,
            paths,
            region,
            models: ModelKind::all().to_vec(),
            substeps: 32,
            coupling: Coupling::Coupled,
            seed: 0,
            threads: 1,
            linear_algebra: None,
            krylov: KrylovOptions::default(),
            ledger: None,
        }
    }

    fn check(&self) -> Result<(), EscapeError> {
        let bad = |m: String| Err(EscapeError::Config(m));
        engine::check_eta(self.eta).map_err(EscapeError::Config)?;
        if self.max_steps == 0 || self.max_steps >= MAX_STEPS {
            return bad(format!(
                "--max-steps must be between 1 and {}, got {}",
                MAX_STEPS - 1,
                self.max_steps
            ));
        }
        engine::check_paths(self.paths).map_err(EscapeError::Config)?;
        engine::check_substeps(self.substeps).map_err(EscapeError::Config)?;
        engine::check_threads(self.threads).map_err(EscapeError::Config)?;
        engine::check_models(&self.models).map_err(EscapeError::Config)?;
        if let Region::Ball { radius, .. } = self.region
            && !(radius.is_finite() && radius > 0.0)
        {
            return bad(format!(
                "the radius must be a finite number > 0, got {radius}"
            ));
        }
        Ok(())
    }
}

/// Why an escape run could not be done.
#[derive(Debug, thiserror::Error)]
pub enum EscapeError {
    /// A setting is invalid (bad input).
    #[error("{0}")]
    Config(String),
    /// The problem, or the region's expression, is invalid (its own kind).
    #[error("{0}")]
    Problem(#[from] ProblemError),
    /// The run failed at a point a path reached (a failure while running).
    #[error("{process}, path {path}, step {step} (t = {time}): {message}")]
    Run {
        /// `sgd` or the model.
        process: String,
        /// The path index.
        path: u64,
        /// The SGD step.
        step: u64,
        /// `kη`.
        time: f64,
        /// What went wrong.
        message: String,
    },
    /// The thread pool could not be built (a failure while running).
    #[error("cannot start {threads} worker threads: {message}")]
    Threads {
        /// Threads asked for.
        threads: usize,
        /// The system's reason.
        message: String,
    },
}

impl EscapeError {
    /// Bad settings or input, or a failure while running.
    pub fn kind(&self) -> crate::ErrorKind {
        match self {
            EscapeError::Config(_) => crate::ErrorKind::Input,
            EscapeError::Problem(e) => e.kind(),
            EscapeError::Run { .. } | EscapeError::Threads { .. } => crate::ErrorKind::Run,
        }
    }
}

// ---------------------------------------------------------------------------------------
// Kaplan–Meier and Kolmogorov–Smirnov

/// One observed time: an event (escape) at `time`, or censored there.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Observation {
    /// The time.
    pub time: f64,
    /// `true` for an escape, `false` for a censored time.
    pub escaped: bool,
}

/// One step of a Kaplan–Meier curve.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct KmStep {
    /// The event time `t_i`.
    pub time: f64,
    /// Observations still at risk just before `t_i` (times ≥ `t_i`, censored ones
    /// included).
    pub at_risk: u64,
    /// Events at `t_i`.
    pub events: u64,
    /// `Ŝ(t_i)`, after the drop.
    pub survival: f64,
}

/// The Kaplan–Meier estimate of a survival function from right-censored times:
/// `Ŝ(t) = Π_{t_i ≤ t} (1 − d_i/n_i)` over the distinct event times (a censored time
/// equal to an event time counts as at risk there).
///
/// ```
/// use hasme::escape::{KaplanMeier, Observation};
///
/// let o = |time, escaped| Observation { time, escaped };
/// // Escapes at 1, 2, 2, 4; one path censored at 3.
/// let km = KaplanMeier::new(&[o(1.0, true), o(2.0, true), o(2.0, true), o(3.0, false), o(4.0, true)]);
/// assert_eq!(km.survival(1.5), 0.8);
/// assert!((km.survival(2.0) - 0.4).abs() < 1e-15);
/// assert_eq!(km.survival(4.0), 0.0);
/// assert_eq!(km.quantile(0.5), Some(2.0));
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct KaplanMeier {
    steps: Vec<KmStep>,
    observations: u64,
    last_time: f64,
}

impl KaplanMeier {
    /// The curve of `observations` (any order; non-finite times are not expected).
    pub fn new(observations: &[Observation]) -> KaplanMeier {
        let mut sorted = observations.to_vec();
        sorted.sort_by(|a, b| a.time.total_cmp(&b.time));
        let mut steps = Vec::new();
        let mut at_risk = sorted.len() as u64;
        let mut survival = 1.0;
        let mut i = 0;
        while i < sorted.len() {
            let t = sorted[i].time;
            let mut j = i;
            let mut events = 0;
            while j < sorted.len() && sorted[j].time == t {
                events += u64::from(sorted[j].escaped);
                j += 1;
            }
            if events > 0 {
                survival *= 1.0 - events as f64 / at_risk as f64;
                steps.push(KmStep {
                    time: t,
                    at_risk,
                    events,
                    survival,
                });
            }
            at_risk -= (j - i) as u64;
            i = j;
        }
        KaplanMeier {
            steps,
            observations: sorted.len() as u64,
            last_time: sorted.last().map_or(0.0, |o| o.time),
        }
    }

    /// The steps, in time order.
    pub fn steps(&self) -> &[KmStep] {
        &self.steps
    }

    /// The number of observations.
    pub fn observations(&self) -> u64 {
        self.observations
    }

    /// `Ŝ(t)`.
    pub fn survival(&self, t: f64) -> f64 {
        let n = self.steps.partition_point(|s| s.time <= t);
        if n == 0 {
            1.0
        } else {
            self.steps[n - 1].survival
        }
    }

    /// The `q`-quantile (0 < q < 1): the smallest event time with `Ŝ(t) ≤ 1 − q`, or
    /// `None` when the curve never drops that far.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let level = (1.0 - q) * (1.0 + QUANTILE_SLACK);
        self.steps
            .iter()
            .find(|s| s.survival <= level)
            .map(|s| s.time)
    }

    /// The restricted mean `∫₀^τ Ŝ(t) dt` and its standard error
    /// `(Σ_{t_i ≤ τ} A_i² d_i / (n_i (n_i − d_i)))^{1/2}`, `A_i = ∫_{t_i}^τ Ŝ`
    /// (Klein & Moeschberger §4.5). With no censoring and `τ` at least the largest
    /// time this is the sample mean, with the standard error `s/√n` up to the factor
    /// `√((n − 1)/n)`.
    pub fn restricted_mean(&self, tau: f64) -> (f64, f64) {
        // Areas between consecutive event times, from τ backwards, give every A_i.
        let steps: Vec<&KmStep> = self.steps.iter().filter(|s| s.time <= tau).collect();
        let mut mean = 0.0;
        let mut prev_t = 0.0;
        let mut prev_s = 1.0;
        for s in &steps {
            mean += prev_s * (s.time - prev_t);
            prev_t = s.time;
            prev_s = s.survival;
        }
        mean += prev_s * (tau - prev_t);
        let mut variance = 0.0;
        let mut tail = 0.0; // A_i, built from τ down.
        let mut upper = tau;
        for s in steps.iter().rev() {
            tail += s.survival * (upper - s.time);
            upper = s.time;
            if s.at_risk > s.events {
                let (n, d) = (s.at_risk as f64, s.events as f64);
                variance += tail * tail * d / (n * (n - d));
            }
        }
        (mean, variance.sqrt())
    }

    /// The largest observed time (0 without observations).
    pub fn last_time(&self) -> f64 {
        self.last_time
    }
}

/// The Kolmogorov–Smirnov distance between two survival curves, `sup_t |Ŝ_a − Ŝ_b|`
/// (both are step functions, so the sup is taken at their event times).
///
/// ```
/// use hasme::escape::{KaplanMeier, Observation, ks_distance};
///
/// let km = |ts: &[f64]| KaplanMeier::new(&ts.iter().map(|&time| Observation { time, escaped: true }).collect::<Vec<_>>());
/// // ECDFs of {1, 2, 3} and {2, 3, 4} differ by 1/3 at most.
/// assert!((ks_distance(&km(&[1.0, 2.0, 3.0]), &km(&[2.0, 3.0, 4.0])) - 1.0 / 3.0).abs() < 1e-15);
/// ```
pub fn ks_distance(a: &KaplanMeier, b: &KaplanMeier) -> f64 {
    let mut d: f64 = 0.0;
    for s in a.steps.iter().chain(&b.steps) {
        d = d.max((a.survival(s.time) - b.survival(s.time)).abs());
    }
    d
}

/// `Q(λ) = P(K > λ)` for the Kolmogorov distribution `K = sup |B(t)|` of a Brownian
/// bridge: `2 Σ_{j≥1} (−1)^{j−1} e^{−2j²λ²}` for λ ≥ 1.18, and
/// `1 − √(2π)/λ Σ_{j≥1} e^{−(2j−1)²π²/(8λ²)}` below (both series converge in a few
/// terms on their side of 1.18, where they agree to 1e−15). Written here because
/// `statrs` has no Kolmogorov distribution.
///
/// ```
/// use hasme::escape::kolmogorov_q;
///
/// assert!((kolmogorov_q(1.3581) - 0.05).abs() < 1e-4); // the 5 % critical value
/// assert!((kolmogorov_q(1.0) - 0.26999967).abs() < 1e-7);
/// assert_eq!(kolmogorov_q(0.0), 1.0);
/// ```
pub fn kolmogorov_q(lambda: f64) -> f64 {
    if lambda.is_nan() || lambda <= 0.0 {
        return 1.0;
    }
    let q = if lambda < 1.18 {
        let c = std::f64::consts::PI * std::f64::consts::PI / (8.0 * lambda * lambda);
        let mut s = 0.0;
        for j in 1..=20 {
            let k = (2 * j - 1) as f64;
            s += (-k * k * c).exp();
        }
        1.0 - (2.0 * std::f64::consts::PI).sqrt() / lambda * s
    } else {
        let mut s = 0.0;
        for j in 1..=100 {
            let jf = j as f64;
            let term = (-2.0 * jf * jf * lambda * lambda).exp();
            s += if j % 2 == 1 { term } else { -term };
            if term < 1e-300 {
                break;
            }
        }
        2.0 * s
    };
    q.clamp(0.0, 1.0)
}

/// The asymptotic two-sample Kolmogorov–Smirnov p-value of a distance `d` between
/// samples of sizes `n` and `m`: `Q(√(nm/(n + m)) d)`.
pub fn kolmogorov_pvalue(d: f64, n: u64, m: u64) -> f64 {
    if n == 0 || m == 0 {
        return 1.0;
    }
    let (n, m) = (n as f64, m as f64);
    kolmogorov_q((n * m / (n + m)).sqrt() * d)
}

// ---------------------------------------------------------------------------------------
// Exact growth rates on quadratics

/// The exact per-step growth factors along the eigenvector of `λ_min(H)` on a quadratic
/// with constant noise: SGD's `|1 − ηλ_min|`, and a model's `e^{μη}` with `μ = vᵀAv`
/// its drift matrix's eigenvalue along that eigenvector `v` (every model's `A` is a
/// function of `H`).
#[derive(Clone, Debug, PartialEq)]
pub struct GrowthRates {
    /// `λ_min(H)` (negative at a saddle).
    pub lambda_min: f64,
    /// Its unit eigenvector.
    pub direction: Vec<f64>,
    /// SGD's factor `|1 − ηλ_min|`.
    pub sgd: f64,
    /// Each model's factor, or why the model has none (outside its domain).
    pub models: Vec<(ModelKind, Result<f64, String>)>,
}

impl GrowthRates {
    /// The per-step factor of the process named `name` (`sgd` or a model), if it has one.
    pub fn per_step(&self, name: &str) -> Option<f64> {
        if name == "sgd" {
            return Some(self.sgd);
        }
        self.models
            .iter()
            .find(|(k, _)| k.to_string() == name)
            .and_then(|(_, r)| r.as_ref().ok().copied())
    }
}

/// [`GrowthRates`] of `problem` at step size `eta`, or `None` unless the objective is
/// quadratic and the noise constant.
///
/// ```
/// use hasme::Problem;
/// use hasme::escape::growth_rates;
/// use hasme::models::ModelKind;
///
/// let p = Problem::from_str("var x, y\nminimize 0.5*x^2 - y^2\nnoise sd 0.1")?;
/// let g = growth_rates(&p, 0.1, &[ModelKind::Sme1, ModelKind::Hasme]).unwrap();
/// assert_eq!(g.lambda_min, -2.0);
/// assert!((g.sgd - 1.2).abs() < 1e-15);
/// let sme1 = g.models[0].1.clone().unwrap();
/// assert!((sme1 - 0.2f64.exp()).abs() < 1e-12);   // e^{η|λ|}: too fast
/// let hasme = g.models[1].1.clone().unwrap();
/// assert!((hasme - 1.2).abs() < 1e-12);            // exactly SGD's
/// # Ok::<(), hasme::ProblemError>(())
/// ```
pub fn growth_rates(problem: &Problem, eta: f64, models: &[ModelKind]) -> Option<GrowthRates> {
    let q = Quadratic::from_problem(problem).ok()?;
    let e = SymmetricEigen::new(q.hessian().clone());
    let i = e.eigenvalues.imin();
    let lambda_min = e.eigenvalues[i];
    let v = e.eigenvectors.column(i).into_owned();
    let models = models
        .iter()
        .map(|&kind| {
            let rate = q
                .model_sde(kind, eta)
                .map(|m| {
                    let a = m.sde.drift_matrix();
                    let mu = v.dot(&(a * &v));
                    (mu * eta).exp()
                })
                .map_err(|e| e.to_string());
            (kind, rate)
        })
        .collect();
    Some(GrowthRates {
        lambda_min,
        direction: v.iter().copied().collect(),
        sgd: (1.0 - eta * lambda_min).abs(),
        models,
    })
}

// ---------------------------------------------------------------------------------------
// The region

/// The region, compiled against a problem.
enum Compiled<'p> {
    Ball { centre: Vec<f64>, r2: f64 },
    When(Expression<'p>),
    File(&'p Problem),
}

impl Compiled<'_> {
    /// Whether `x` is outside; `slots` is the evaluation scratch of the region's tape.
    fn outside(&self, x: &[f64], slots: &mut Vec<f64>) -> Result<bool, ProblemError> {
        match self {
            Compiled::Ball { centre, r2 } => {
                let d2: f64 = x.iter().zip(centre).map(|(a, c)| (a - c) * (a - c)).sum();
                Ok(d2 > *r2)
            }
            Compiled::When(e) => Ok(e.value_with(x, slots)? > 0.0),
            Compiled::File(p) => Ok(p.escape_margin_with(x, slots)?.is_some_and(|m| m > 0.0)),
        }
    }
}

/// Compiles `EXPR` of `--when` in the file's scope (its params, with `--set` applied,
/// variables and `let`s); errors point into the expression itself.
fn compile_when<'p>(problem: &'p Problem, expr: &str) -> Result<Expression<'p>, ProblemError> {
    problem.compile_expression("--when", expr)
}

fn compile_region<'p>(
    problem: &'p Problem,
    region: &Region,
    start: &[f64],
) -> Result<Compiled<'p>, EscapeError> {
    let compiled = match region {
        Region::Ball { centre, radius } => {
            let centre = centre.clone().unwrap_or_else(|| start.to_vec());
            if centre.len() != start.len() || centre.iter().any(|c| !c.is_finite()) {
                return Err(EscapeError::Config(format!(
                    "the centre must have {} finite coordinates",
                    start.len()
                )));
            }
            Compiled::Ball {
                centre,
                r2: radius * radius,
            }
        }
        Region::When(expr) => Compiled::When(compile_when(problem, expr)?),
        Region::File if problem.escape_region().is_some() => Compiled::File(problem),
        Region::File => {
            return Err(EscapeError::Config(
                "the file has no `escape when … > …` statement: give the region as a ball \
                 (a radius) or an expression"
                    .into(),
            ));
        }
    };
    match compiled.outside(start, &mut Vec::new()) {
        Ok(false) => Ok(compiled),
        Ok(true) => Err(EscapeError::Config(format!(
            "the start point {} is already outside the escape region",
            problem.format_point(start)
        ))),
        Err(e) => Err(EscapeError::Config(format!(
            "the escape region cannot be evaluated at the start point: {e}"
        ))),
    }
}

// ---------------------------------------------------------------------------------------
// The simulation

/// How a process ended on a path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Status {
    Escaped,
    Censored,
    Diverged,
}

/// A process's outcome on one path: the grid step `k` of the escape, the cap, or the
/// last step seen inside before diverging.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Outcome {
    step: u64,
    status: Status,
}

/// What `escape` does with the paths: after every step, a process outside the region
/// has escaped there and stops; one outcome per path and process.
struct Watcher<'p> {
    config: &'p EscapeConfig,
    region: Compiled<'p>,
}

/// The outcomes of a chunk of paths (path-major), and the first divergence per process.
struct ChunkOut {
    outcomes: Vec<Outcome>,
    first: Vec<Option<FirstDivergence>>,
}

/// Where a process first diverged (smallest path index).
#[derive(Clone, Debug, PartialEq)]
pub struct FirstDivergence {
    /// The path.
    pub path: u64,
    /// The SGD step during which it happened.
    pub step: u64,
    /// Why.
    pub reason: String,
}

impl Watcher<'_> {
    fn name(&self, p: usize) -> String {
        if p == 0 {
            "sgd".into()
        } else {
            self.config.models[p - 1].to_string()
        }
    }

    /// The engine's errors as the escape run's.
    fn error(&self, e: EngineError<EscapeError>) -> EscapeError {
        match e {
            EngineError::Fatal {
                process,
                path,
                step,
                source,
            } => EscapeError::Run {
                process: self.name(process),
                path,
                step,
                time: step as f64 * self.config.eta,
                message: source.to_string(),
            },
            EngineError::Threads { threads, message } => EscapeError::Threads { threads, message },
            EngineError::Observer(e) => e,
        }
    }
}

/// The engine and the observer of a run of `config` (checked, its coupling one the
/// problem can have), once the problem and the region are checked at the start point.
fn prepare<'p>(
    problem: &'p Problem,
    config: &'p EscapeConfig,
) -> Result<(Engine<'p>, Watcher<'p>), EscapeError> {
    let start = problem.start();
    let linear_algebra =
        engine::linear_algebra(config.linear_algebra, problem.dim(), &config.models)
            .map_err(EscapeError::Config)?;
    engine::check_start(problem, &start, linear_algebra)?;
    let noise = NoiseSource::for_problem(problem, &start, linear_algebra == LinearAlgebra::Krylov)?;
    let region = compile_region(problem, &config.region, &start)?;
    let engine = Engine {
        problem,
        noise,
        start,
        settings: Settings {
            eta: config.eta,
            steps: config.max_steps,
            paths: config.paths,
            models: config.models.clone(),
            substeps: config.substeps,
            coupling: config.coupling,
            seed: config.seed,
            threads: config.threads,
            batch: 0,
            minibatch: true,
            linear_algebra,
            krylov: config.krylov,
            ledger: config.ledger.clone(),
        },
    };
    Ok((engine, Watcher { config, region }))
}

/// What [`Watcher`] keeps of a path while it runs: each process's outcome, once it has
/// one, and why it diverged, if it did.
struct Watched {
    outcomes: Vec<Option<Outcome>>,
    reasons: Vec<Option<String>>,
}

impl Observer for Watcher<'_> {
    type Path = Watched;
    type Chunk = ChunkOut;
    /// The evaluation scratch of the file's region.
    type Scratch = Vec<f64>;
    type Error = EscapeError;

    fn new_path(&self) -> Watched {
        let processes = self.config.models.len() + 1;
        Watched {
            outcomes: vec![None; processes],
            reasons: vec![None; processes],
        }
    }

    fn new_chunk(&self) -> ChunkOut {
        let processes = self.config.models.len() + 1;
        ChunkOut {
            outcomes: Vec::with_capacity(CHUNK_PATHS as usize * processes),
            first: vec![None; processes],
        }
    }

    fn new_scratch(&self) -> Vec<f64> {
        Vec::new()
    }

    fn start_path(&self, path: &mut Watched) {
        path.outcomes.fill(None);
        path.reasons.fill(None);
    }

    /// After every step (the start point is inside: checked before the run).
    fn looks_at(&self, step: u64) -> bool {
        step > 0
    }

    fn look(
        &self,
        (path, step): (u64, u64),
        states: States<'_>,
        alive: &mut [bool],
        result: &mut Watched,
        slots: &mut Vec<f64>,
    ) -> Result<(), EscapeError> {
        for (p, alive) in alive.iter_mut().enumerate() {
            if !*alive {
                continue;
            }
            let state = if p == 0 {
                states.sgd
            } else {
                &states.models[p - 1]
            };
            match self.region.outside(state, slots) {
                Ok(true) => {
                    *alive = false;
                    result.outcomes[p] = Some(Outcome {
                        step,
                        status: Status::Escaped,
                    });
                }
                Ok(false) => {}
                Err(e) => {
                    return Err(EscapeError::Run {
                        process: self.name(p),
                        path,
                        step,
                        time: step as f64 * self.config.eta,
                        message: format!("the escape region cannot be evaluated: {e}"),
                    });
                }
            }
        }
        Ok(())
    }

    /// Censored at the last grid time seen inside.
    fn diverged(
        &self,
        p: usize,
        (_, step): (u64, u64),
        _: &[f64],
        reason: String,
        result: &mut Watched,
    ) {
        result.outcomes[p] = Some(Outcome {
            step,
            status: Status::Diverged,
        });
        result.reasons[p] = Some(reason);
    }

    fn non_finite(&self, p: usize) -> String {
        format!("the {} state became non-finite", self.name(p))
    }

    /// A process still inside at the cap is censored there; the chunk's first
    /// divergence of a process is on its smallest path (paths come in path order).
    fn finish_path(&self, path: u64, _: &[bool], result: &mut Watched, out: &mut ChunkOut) {
        out.outcomes.extend(result.outcomes.iter().map(|o| {
            o.unwrap_or(Outcome {
                step: self.config.max_steps,
                status: Status::Censored,
            })
        }));
        for (p, reason) in result.reasons.iter_mut().enumerate() {
            if let (Some(reason), Some(o)) = (reason.take(), result.outcomes[p]) {
                out.first[p].get_or_insert(FirstDivergence {
                    path,
                    step: o.step,
                    reason,
                });
            }
        }
    }

    /// `{"outcomes": [step, status, …], "first": [null | {path, step, reason}]}`,
    /// status 0 escaped, 1 censored, 2 diverged.
    fn save_chunk(&self, out: &ChunkOut) -> serde_json::Value {
        use serde_json::{Value, json};
        let outcomes: Vec<u64> = (out.outcomes.iter())
            .flat_map(|o| {
                let status = match o.status {
                    Status::Escaped => 0,
                    Status::Censored => 1,
                    Status::Diverged => 2,
                };
                [o.step, status]
            })
            .collect();
        let first: Vec<Value> = (out.first.iter())
            .map(|d| match d {
                None => Value::Null,
                Some(d) => json!({ "path": d.path, "step": d.step, "reason": d.reason }),
            })
            .collect();
        json!({ "outcomes": outcomes, "first": first })
    }

    fn load_chunk(&self, v: &serde_json::Value) -> Option<ChunkOut> {
        let processes = self.config.models.len() + 1;
        let flat = field(v, "outcomes")?.as_array()?;
        if flat.len() % (2 * processes) != 0 || flat.len() > 2 * processes * CHUNK_PATHS as usize {
            return None;
        }
        let outcomes = (flat.chunks_exact(2))
            .map(|o| {
                let status = match o[1].as_u64()? {
                    0 => Status::Escaped,
                    1 => Status::Censored,
                    2 => Status::Diverged,
                    _ => return None,
                };
                Some(Outcome {
                    step: o[0].as_u64()?,
                    status,
                })
            })
            .collect::<Option<Vec<_>>>()?;
        let first = (field(v, "first")?.as_array()?.iter())
            .map(|d| {
                if d.is_null() {
                    return Some(None);
                }
                Some(Some(FirstDivergence {
                    path: field(d, "path")?.as_u64()?,
                    step: field(d, "step")?.as_u64()?,
                    reason: field(d, "reason")?.as_str()?.to_string(),
                }))
            })
            .collect::<Option<Vec<_>>>()?;
        (first.len() == processes).then_some(ChunkOut { outcomes, first })
    }
}

/// The statistics of one process's escape times (times in units of `t = kη`).
#[derive(Clone, Debug, PartialEq)]
pub struct ProcessEscape {
    /// `sgd` or the model's name.
    pub name: String,
    /// Paths on which it escaped by the cap.
    pub escaped: u64,
    /// Paths still inside at the cap.
    pub censored: u64,
    /// Paths on which it diverged first (censored at the last grid time seen inside).
    pub diverged: u64,
    /// `1 − Ŝ(Kη)`: the escape probability by the cap (`None` when the KM curve is not
    /// identified up to the cap: the latest observation is a divergence before it).
    pub escaped_fraction: Option<f64>,
    /// The (restricted, when any path is censored) mean escape time (`None` as above).
    pub mean_time: Option<f64>,
    /// Its standard error (`None` as above).
    pub mean_time_stderr: Option<f64>,
    /// Whether the mean is restricted to the cap (some path censored or diverged).
    pub mean_restricted: bool,
    /// The median from the KM curve (`None` when it never drops to 1/2).
    pub median_time: Option<f64>,
    /// The lower and upper quartiles from the KM curve.
    pub quartiles: [Option<f64>; 2],
    /// KS distance of the KM curve to SGD's (`None` for SGD).
    pub ks_distance: Option<f64>,
    /// Its asymptotic p-value.
    pub ks_pvalue: Option<f64>,
    /// Mean of the paired difference `min(T, Kη) − min(T_sgd, Kη)` over the paths on
    /// which neither diverged (`None` for SGD or without such paths).
    pub mean_diff: Option<f64>,
    /// Its standard error (`None` with fewer than two such paths).
    pub mean_diff_stderr: Option<f64>,
    /// The first divergence (smallest path index).
    pub first_divergence: Option<FirstDivergence>,
    /// The survival curve.
    pub survival: KaplanMeier,
}

impl ProcessEscape {
    /// The 95 % normal interval of the mean escape time.
    pub fn mean_time_ci(&self) -> Option<[f64; 2]> {
        let (m, se) = (self.mean_time?, self.mean_time_stderr?);
        Some([m - Z95 * se, m + Z95 * se])
    }

    /// The mean's difference to `other`'s in units of the combined standard error of
    /// the two means (ignoring the coupling's correlation, so conservative), or `None`
    /// when both standard errors are zero.
    pub fn mean_shift_in_stderr(&self, other: &ProcessEscape) -> Option<f64> {
        let se = self.mean_time_stderr?.hypot(other.mean_time_stderr?);
        let diff = self.mean_time? - other.mean_time?;
        (se > 0.0).then(|| diff / se)
    }
}

/// Everything an escape run reports. Nothing in it depends on the number of threads.
#[derive(Clone, Debug, PartialEq)]
pub struct EscapeReport {
    /// The init seed of the problem's random start values, when it draws some
    /// ([`Problem::init_seed_if_random`](crate::Problem::init_seed_if_random)).
    pub init_seed: Option<u64>,
    /// The start file the start point was read from (`--start`), when given.
    pub start_file: Option<String>,
    /// η.
    pub eta: f64,
    /// The step cap K.
    pub max_steps: u64,
    /// `Kη`.
    pub cap_time: f64,
    /// Number of paths.
    pub paths: u64,
    /// The seed.
    pub seed: u64,
    /// Euler–Maruyama substeps per SGD step.
    pub substeps: usize,
    /// The coupling.
    pub coupling: Coupling,
    /// The region, as configured.
    pub region: Region,
    /// The ball's centre actually used (the start point by default).
    pub centre: Option<Vec<f64>>,
    /// The file's `escape when` region as text, for [`Region::File`].
    pub file_region: Option<String>,
    /// Variable names.
    pub variables: Vec<String>,
    /// The start point.
    pub start: Vec<f64>,
    /// SGD first, then the models in the order asked.
    pub processes: Vec<ProcessEscape>,
    /// Exact growth factors, for a quadratic with constant noise.
    pub growth_rates: Option<GrowthRates>,
    /// The Lanczos tolerance when the models' coefficients were matrix-free, `None`
    /// when dense.
    pub krylov_tolerance: Option<f64>,
    /// The Lanczos steps of the run's matrix-free `hasme` evaluations (zero when
    /// dense).
    pub lanczos: LanczosTally,
}

/// Runs the escape simulation: `hasme escape`.
///
/// ```
/// use hasme::{EscapeConfig, ModelKind, Problem, Region, escape};
///
/// let p = Problem::from_str("var x = 0, y = 0\nminimize 0.5*x^2 - y^2\nnoise sd 0.1")?;
/// let c = EscapeConfig::builder(0.1, 1000, 100, Region::ball(0.5))
///     .models(vec![ModelKind::Sme1])
///     .build()?;
/// let r = escape(&p, &c)?;
/// assert_eq!(r.processes[0].escaped, 100); // SGD leaves the saddle on every path
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn escape(problem: &Problem, config: &EscapeConfig) -> Result<EscapeReport, EscapeError> {
    escape_with_progress(problem, config, &|_| {})
}

/// [`escape`], calling `progress(n)` each time `n` more paths are done (from any worker
/// thread).
pub fn escape_with_progress(
    problem: &Problem,
    config: &EscapeConfig,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<EscapeReport, EscapeError> {
    config.check()?;
    let adjusted;
    let config = if config.coupling.possible(problem) == config.coupling {
        config
    } else {
        adjusted = EscapeConfig {
            coupling: config.coupling.possible(problem),
            ..config.clone()
        };
        &adjusted
    };
    let (engine, watcher) = prepare(problem, config)?;
    let start = engine.start.clone();
    let krylov_tolerance = (engine.settings.linear_algebra == LinearAlgebra::Krylov)
        .then(|| config.krylov.tolerance());
    let centre = match &watcher.region {
        Compiled::Ball { centre, .. } => Some(centre.clone()),
        Compiled::When(_) | Compiled::File(_) => None,
    };
    let processes = config.models.len() + 1;
    let mut outcomes = Vec::with_capacity(config.paths as usize * processes);
    let mut first: Vec<Option<FirstDivergence>> = vec![None; processes];
    // In chunk order: the first divergence is the smallest path's, whatever the threads.
    let lanczos = engine
        .run(EulerMaruyama, &watcher, progress, |chunk| {
            outcomes.extend(chunk.outcomes);
            for (a, b) in first.iter_mut().zip(chunk.first) {
                if a.is_none() {
                    *a = b;
                }
            }
        })
        .map_err(|e| watcher.error(e))?;
    // A shard or a stopped run saw only some paths: no statistics of them.
    let partial = config.ledger.as_ref().is_some_and(Ledger::partial);
    let names: Vec<String> = std::iter::once("sgd".to_string())
        .chain(config.models.iter().map(|m| m.to_string()))
        .filter(|_| !partial)
        .collect();
    let cap_time = config.max_steps as f64 * config.eta;
    let column = |p: usize| outcomes.iter().skip(p).step_by(processes);
    let mut reports: Vec<ProcessEscape> = Vec::with_capacity(processes);
    for (p, name) in names.iter().enumerate() {
        let obs: Vec<Observation> = column(p)
            .map(|o| Observation {
                time: o.step as f64 * config.eta,
                escaped: o.status == Status::Escaped,
            })
            .collect();
        let count = |s: Status| column(p).filter(|o| o.status == s).count() as u64;
        let km = KaplanMeier::new(&obs);
        // Beyond the latest observation the KM curve is unknown unless it reached 0.
        let identified = km.last_time() >= cap_time || km.survival(km.last_time()) == 0.0;
        let (mean, se) = km.restricted_mean(cap_time);
        let (escaped, censored, diverged) = (
            count(Status::Escaped),
            count(Status::Censored),
            count(Status::Diverged),
        );
        let (ks_d, ks_p, diff_mean, diff_se) = if p == 0 {
            (None, None, None, None)
        } else {
            let d = ks_distance(&km, &reports[0].survival);
            let pv = kolmogorov_pvalue(d, config.paths, config.paths);
            let mut w = Welford::new();
            for (a, b) in column(p).zip(column(0)) {
                if a.status != Status::Diverged && b.status != Status::Diverged {
                    w.push((a.step as f64 - b.step as f64) * config.eta);
                }
            }
            (Some(d), Some(pv), w.mean(), w.stderr())
        };
        reports.push(ProcessEscape {
            name: name.clone(),
            escaped,
            censored,
            diverged,
            escaped_fraction: identified.then(|| 1.0 - km.survival(cap_time)),
            mean_time: identified.then_some(mean),
            mean_time_stderr: identified.then_some(se),
            mean_restricted: censored + diverged > 0,
            median_time: km.quantile(0.5),
            quartiles: [km.quantile(0.25), km.quantile(0.75)],
            ks_distance: ks_d,
            ks_pvalue: ks_p,
            mean_diff: diff_mean.filter(|v| v.is_finite()),
            mean_diff_stderr: diff_se.filter(|v| v.is_finite()),
            first_divergence: first[p].clone(),
            survival: km,
        });
    }
    Ok(EscapeReport {
        eta: config.eta,
        max_steps: config.max_steps,
        cap_time,
        paths: config.paths,
        seed: config.seed,
        init_seed: problem.init_seed_if_random(),
        start_file: problem.start_file().map(str::to_string),
        substeps: config.substeps,
        coupling: config.coupling,
        region: config.region.clone(),
        centre,
        file_region: problem.escape_region().map(str::to_string),
        variables: problem.variables().to_vec(),
        start,
        processes: reports,
        growth_rates: growth_rates(problem, config.eta, &config.models),
        krylov_tolerance,
        lanczos,
    })
}

fn fmt_opt(x: Option<f64>) -> String {
    crate::format::cell(x, crate::format::Style::Fixed(4))
}

/// The JSON form (the contract of `hasme escape --json`): the settings (`eta`,
/// `max_steps`, `cap_time`, `paths`, `seed`, `init_seed` (only when the problem draws
/// its start), `start_file` (only with a start file), `substeps`, `scheme`, `coupling`, `region`,
/// `variables`, `start`), `models.PROCESS` for `sgd` and each model with `escaped`,
/// `censored`, `diverged`, `escaped_fraction`, `mean_time`, `mean_time_stderr`,
/// `mean_time_ci` (`[low, high]`), `mean_restricted`, `median_time` and `quartiles`
/// (`[q25, q75]`; `null` where the KM curve never drops that far) and, for models,
/// `ks_distance`, `ks_pvalue`, `mean_diff`, `mean_diff_stderr`, `growth_rate`;
/// `first_divergence` where one diverged; and `growth_rates` (`null` unless the problem
/// is quadratic with constant noise). Times are in units of `t = kη`; a non-finite
/// number is `null`.
impl Serialize for EscapeReport {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let region = match &self.region {
            Region::Ball { radius, .. } => RegionJson {
                kind: "ball",
                centre: Some(self.centre.as_deref()),
                radius: Some(*radius),
                expr: None,
            },
            Region::When(e) => RegionJson {
                kind: "when",
                centre: None,
                radius: None,
                expr: Some(Some(format!("{e} > 0"))),
            },
            Region::File => RegionJson {
                kind: "file",
                centre: None,
                radius: None,
                expr: Some(self.file_region.clone()),
            },
        };
        let growth = self.growth_rates.as_ref().map(|g| GrowthJson {
            lambda_min: g.lambda_min,
            direction: &g.direction,
            per_step: std::iter::once(("sgd".to_string(), Some(g.sgd)))
                .chain(
                    g.models
                        .iter()
                        .map(|(k, r)| (k.to_string(), r.as_ref().ok().copied())),
                )
                .collect(),
        });
        let models = self
            .processes
            .iter()
            .map(|p| {
                let model = p.name != "sgd";
                let ci = p.mean_time_ci();
                let json = ProcessJson {
                    escaped: p.escaped,
                    censored: p.censored,
                    diverged: p.diverged,
                    escaped_fraction: p.escaped_fraction,
                    mean_time: p.mean_time,
                    mean_time_stderr: p.mean_time_stderr,
                    mean_time_ci: [ci.map(|c| c[0]), ci.map(|c| c[1])],
                    mean_restricted: p.mean_restricted,
                    median_time: p.median_time,
                    quartiles: p.quartiles,
                    ks_distance: model.then_some(p.ks_distance),
                    ks_pvalue: model.then_some(p.ks_pvalue),
                    mean_diff: model.then_some(p.mean_diff),
                    mean_diff_stderr: model.then_some(p.mean_diff_stderr),
                    growth_rate: self.growth_rates.as_ref().map(|g| g.per_step(&p.name)),
                    first_divergence: p.first_divergence.as_ref().map(|f| DivergenceJson {
                        path: f.path,
                        step: f.step,
                        time: f.step as f64 * self.eta,
                        reason: &f.reason,
                    }),
                };
                (p.name.as_str(), json)
            })
            .collect();
        EscapeJson {
            eta: self.eta,
            max_steps: self.max_steps,
            cap_time: self.cap_time,
            paths: self.paths,
            seed: self.seed,
            init_seed: self.init_seed,
            start_file: self.start_file.as_deref(),
            substeps: self.substeps,
            scheme: "em",
            coupling: self.coupling.to_string(),
            krylov: KrylovJson::new(self.krylov_tolerance, &self.lanczos),
            region,
            variables: &self.variables,
            start: &self.start,
            models,
            growth_rates: growth,
        }
        .serialize(serializer)
    }
}

/// [`EscapeReport`]'s JSON, field by field in the contract's order.
#[derive(Serialize)]
struct EscapeJson<'a> {
    eta: f64,
    max_steps: u64,
    cap_time: f64,
    paths: u64,
    seed: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    init_seed: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    start_file: Option<&'a str>,
    substeps: usize,
    scheme: &'static str,
    coupling: String,
    #[serde(flatten)]
    krylov: KrylovJson<'a>,
    region: RegionJson<'a>,
    variables: &'a [String],
    start: &'a [f64],
    models: Named<&'a str, ProcessJson<'a>>,
    growth_rates: Option<GrowthJson<'a>>,
}

/// The region: `kind`, then `centre` and `radius` for a ball, `expr` otherwise.
#[derive(Serialize)]
struct RegionJson<'a> {
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    centre: Option<Option<&'a [f64]>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    radius: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    expr: Option<Option<String>>,
}

/// One process's escape statistics; the outer `Option`s leave a field out.
#[derive(Serialize)]
struct ProcessJson<'a> {
    escaped: u64,
    censored: u64,
    diverged: u64,
    escaped_fraction: Option<f64>,
    mean_time: Option<f64>,
    mean_time_stderr: Option<f64>,
    mean_time_ci: [Option<f64>; 2],
    mean_restricted: bool,
    median_time: Option<f64>,
    quartiles: [Option<f64>; 2],
    #[serde(skip_serializing_if = "Option::is_none")]
    ks_distance: Option<Option<f64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ks_pvalue: Option<Option<f64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    mean_diff: Option<Option<f64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    mean_diff_stderr: Option<Option<f64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    growth_rate: Option<Option<f64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    first_divergence: Option<DivergenceJson<'a>>,
}

#[derive(Serialize)]
struct DivergenceJson<'a> {
    path: u64,
    step: u64,
    time: f64,
    reason: &'a str,
}

#[derive(Serialize)]
struct GrowthJson<'a> {
    lambda_min: f64,
    direction: &'a [f64],
    per_step: Named<String, Option<f64>>,
}

impl EscapeReport {
    /// The survival curves `Ŝ(t)` of every process, in one plot: a step at every
    /// escape time, marked, on a time axis that ends shortly after every curve has
    /// fallen to 1% (or at the cap).
    pub fn survival_plot(&self) -> LinePlot {
        let end = self.survival_plot_end();
        let mut plot = LinePlot::new(
            format!(
                "Escape: Kaplan–Meier survival (η = {}, {} paths, cap {} steps)",
                self.eta, self.paths, self.max_steps
            ),
            "t = kη",
            "fraction still inside",
        )
        .x_limits(0.0, end);
        for p in &self.processes {
            let mut points = vec![(0.0, 1.0)];
            points.extend(
                p.survival
                    .steps()
                    .iter()
                    .filter(|step| step.time <= end)
                    .map(|step| (step.time, step.survival)),
            );
            plot = plot.step_series(p.name.clone(), points);
        }
        let axis = if end < self.cap_time {
            // Three decimals: the end is 5% past a grid time, not a number to read.
            let shown = (end * 1e3).round() / 1e3;
            format!("The axis ends at t ≈ {shown}, when every curve is below 1%")
        } else {
            "The axis ends at the cap".to_string()
        };
        plot.note(
            "Escape times read at t = kη for SGD and every model; a mark at every escape time.",
        )
        .note(format!(
            "{axis}; paths still inside at the cap (t = {}) are censored there.",
            self.cap_time
        ))
    }

    /// Where the survival plot's time axis ends: 5% past the first time by which every
    /// curve is at or below 1% (so the last drop is not drawn on the frame), at most the
    /// cap; the cap when some curve stays above 1% (or ends undefined).
    fn survival_plot_end(&self) -> f64 {
        let mut last = 0.0f64;
        for p in &self.processes {
            match p.survival.steps().iter().find(|step| step.survival <= 0.01) {
                Some(step) => last = last.max(step.time),
                None => return self.cap_time,
            }
        }
        if last > 0.0 {
            (1.05 * last).min(self.cap_time)
        } else {
            self.cap_time
        }
    }
}

impl fmt::Display for EscapeReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let region = match &self.region {
            Region::Ball { radius, .. } => {
                let c = self.centre.as_deref().unwrap_or(&[]);
                format!(
                    "‖x − c‖ > {radius}, c = {}",
                    crate::format::point(&self.variables, c)
                )
            }
            Region::When(e) => format!("{e} > 0"),
            Region::File => self.file_region.clone().unwrap_or_default(),
        };
        writeln!(
            f,
            "escape from {region}: η = {}, {} paths, cap {} steps (t = {}), {} Euler–Maruyama \
             substeps, {} noise, seed {}",
            self.eta,
            self.paths,
            self.max_steps,
            self.cap_time,
            self.substeps,
            self.coupling,
            self.seed
        )?;
        krylov_lines(f, self.krylov_tolerance, &self.lanczos)?;
        writeln!(
            f,
            "times in units of t = kη; mean: restricted to the cap (r) where censored"
        )?;
        let growth = self.growth_rates.is_some();
        write!(
            f,
            "{:<12} {:>9} {:>24} {:>9} {:>19} {:>8} {:>9} {:>20}",
            "process",
            "escaped",
            "mean [95% CI]",
            "median",
            "quartiles",
            "KS D",
            "KS p",
            "paired diff ± se"
        )?;
        if growth {
            write!(f, " {:>12}", "exact growth")?;
        }
        writeln!(f)?;
        for p in &self.processes {
            let mean = match (p.mean_time, p.mean_time_ci()) {
                (Some(m), Some(ci)) => format!(
                    "{m:.4}{} [{:.4}, {:.4}]",
                    if p.mean_restricted { "r" } else { "" },
                    ci[0],
                    ci[1]
                ),
                _ => "—".into(),
            };
            let diff = match (p.mean_diff, p.mean_diff_stderr) {
                (Some(m), Some(s)) => format!("{m:+.4} ± {s:.4}"),
                (Some(m), None) => format!("{m:+.4}"),
                _ => "—".into(),
            };
            write!(
                f,
                "{:<12} {:>9} {:>24} {:>9} {:>19} {:>8} {:>9} {:>20}",
                p.name,
                fmt_opt(p.escaped_fraction),
                mean,
                fmt_opt(p.median_time),
                format!("{} {}", fmt_opt(p.quartiles[0]), fmt_opt(p.quartiles[1])),
                crate::format::cell(p.ks_distance, crate::format::Style::Fixed(4)),
                crate::format::cell(p.ks_pvalue, crate::format::Style::Fixed(3)),
                diff
            )?;
            if let Some(g) = &self.growth_rates {
                let rate = g.per_step(&p.name);
                write!(
                    f,
                    " {:>12}",
                    crate::format::cell(rate, crate::format::Style::Fixed(6))
                )?;
            }
            writeln!(f)?;
        }
        if let Some(g) = &self.growth_rates {
            writeln!(
                f,
                "exact growth: per-step factor along the eigenvector of λ_min = {} (SGD: |1 − ηλ_min|, \
                 a model: e^(μη))",
                g.lambda_min
            )?;
        }
        for p in &self.processes {
            if let Some(d) = &p.first_divergence {
                writeln!(
                    f,
                    "{} diverged on {} of {} paths (first: path {}, step {}): {}",
                    p.name, p.diverged, self.paths, d.path, d.step, d.reason
                )?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::engine::tap::{Tap, Trace};
    use crate::sim::{SchemeKind, SimConfig};

    /// The states the engine showed the escape observer on every path.
    fn escape_traces(problem: &Problem, config: &EscapeConfig) -> Vec<Trace> {
        config.check().expect("valid settings");
        let (engine, watcher) = prepare(problem, config).expect("a valid problem");
        let mut traces = Vec::new();
        engine
            .run(EulerMaruyama, &Tap(watcher), &|_| {}, |(_, t)| {
                traces.extend(t)
            })
            .expect("runs");
        traces
    }

    /// `simulate` (Euler–Maruyama, saving every step) and `escape` on the same paths
    /// see the same bits: at every grid time a process is still inside the region in
    /// escape, its state is the one simulate saves. On a 2-d saddle (the closed-form
    /// lanes) and on the 4-d Rosenbrock function (the batched tape), with a few hundred
    /// paths so that some lanes take a second path while others still run their first.
    #[test]
    fn simulate_and_escape_agree_path_by_path() {
        let saddle = Problem::from_str(
            "var x = 0, y = 0\nminimize 0.5*x^2 - y^2 + 0.1*x*y^3\nnoise diag [0.04, 0.01*(1 + x^2)]",
        )
        .expect("a valid problem");
        let rosenbrock = Problem::from_str(
            "var w[4] = 0.5\nminimize sum(i = 1..3, 100*(w[i+1] - w[i]^2)^2 + (1 - w[i])^2)\nnoise sd 0.1",
        )
        .expect("a valid problem");
        for (problem, eta, radius, models) in [
            (
                &saddle,
                0.1,
                0.8,
                vec![ModelKind::Hasme, ModelKind::Sme2, ModelKind::Gf],
            ),
            (
                &rosenbrock,
                0.0005,
                0.3,
                vec![ModelKind::Hasme, ModelKind::Sme1],
            ),
        ] {
            let steps = 60;
            let mut e = EscapeConfig::unchecked(eta, steps, 300, Region::ball(radius));
            e.models = models.clone();
            e.substeps = 4;
            e.seed = 11;
            let mut s = SimConfig::unchecked(eta, steps as f64 * eta, 300);
            s.models = models;
            s.substeps = 4;
            s.seed = 11;
            s.scheme = SchemeKind::EulerMaruyama;
            let simulated = crate::sim::trace(problem, &s).expect("runs");
            let escaped = escape_traces(problem, &e);
            assert_eq!(simulated.len(), 300);
            assert_eq!(escaped.len(), 300);
            let mut compared = 0;
            let mut stopped = 0;
            for (path, (a, b)) in simulated.iter().zip(&escaped).enumerate() {
                for (step, p, x) in b {
                    let same = a.iter().find(|(k, q, _)| k == step && q == p);
                    let (_, _, y) = same.expect("simulate saw the process there");
                    let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                    assert_eq!(bits(x), bits(y), "path {path}, step {step}, process {p}");
                    compared += 1;
                }
                // Escape stops looking at a process once it left.
                stopped +=
                    usize::from(b.len() < a.len() - a.iter().filter(|(k, ..)| *k == 0).count());
            }
            assert!(compared > 10_000, "{compared} states compared");
            assert!(
                stopped > 50,
                "only {stopped} paths escaped: the test needs escapes"
            );
        }
    }

    fn o(time: f64, escaped: bool) -> Observation {
        Observation { time, escaped }
    }

    #[test]
    fn kaplan_meier_matches_a_hand_computation() {
        // Escapes at 1, 2, 2, 4; censored at 3. Risk sets 5, 4, 1:
        // Ŝ = 4/5, then 4/5 · 2/4 = 0.4, then 0.
        let km = KaplanMeier::new(&[
            o(2.0, true),
            o(1.0, true),
            o(3.0, false),
            o(2.0, true),
            o(4.0, true),
        ]);
        let steps = km.steps();
        assert_eq!(steps.len(), 3);
        assert_eq!((steps[0].at_risk, steps[0].events), (5, 1));
        assert_eq!((steps[1].at_risk, steps[1].events), (4, 2));
        assert_eq!((steps[2].at_risk, steps[2].events), (1, 1));
        assert!((km.survival(3.5) - 0.4).abs() < 1e-15);
        assert_eq!(km.survival(0.5), 1.0);
        // ∫₀⁴ Ŝ = 1 + 0.8 + 0.4 + 0.4 = 2.6; A = 1.6 at t = 1, 0.8 at t = 2, 0 at 4:
        // Var = 1.6²·1/(5·4) + 0.8²·2/(4·2) = 0.128 + 0.16.
        let (mean, se) = km.restricted_mean(4.0);
        assert!((mean - 2.6).abs() < 1e-14);
        assert!((se - 0.288f64.sqrt()).abs() < 1e-14);
        assert_eq!(km.quantile(0.5), Some(2.0));
        assert_eq!(km.quantile(0.1), Some(1.0));
        assert_eq!(km.quantile(0.9), Some(4.0));
    }

    #[test]
    fn uncensored_restricted_mean_is_the_sample_mean() {
        let ts = [0.3, 1.2, 0.7, 2.5, 0.7];
        let km = KaplanMeier::new(&ts.iter().map(|&t| o(t, true)).collect::<Vec<_>>());
        let n = ts.len() as f64;
        let mean = ts.iter().sum::<f64>() / n;
        let (m, se) = km.restricted_mean(3.0);
        assert!((m - mean).abs() < 1e-14);
        // Σ(x − x̄)²/n², the plug-in variance of the mean.
        let var = ts.iter().map(|t| (t - mean) * (t - mean)).sum::<f64>() / (n * n);
        assert!((se - var.sqrt()).abs() < 1e-14, "{se} vs {}", var.sqrt());
    }

    #[test]
    fn median_is_none_when_the_curve_stays_above_one_half() {
        let km = KaplanMeier::new(&[o(1.0, true), o(5.0, false), o(5.0, false)]);
        assert_eq!(km.quantile(0.5), None);
        assert_eq!(km.quantile(0.25), Some(1.0));
    }

    #[test]
    fn ks_distance_matches_the_ecdf_sup() {
        let km = |ts: &[f64]| KaplanMeier::new(&ts.iter().map(|&t| o(t, true)).collect::<Vec<_>>());
        // F_a − F_b at 1: 1/2 − 0; at 2: 1 − 1/4 = 3/4 → D = 3/4.
        let d = ks_distance(&km(&[1.0, 2.0]), &km(&[3.0, 3.0, 3.0, 2.0]));
        assert!((d - 0.75).abs() < 1e-15);
        assert_eq!(ks_distance(&km(&[1.0, 2.0]), &km(&[1.0, 2.0])), 0.0);
    }

    #[test]
    fn kolmogorov_series_agree_at_the_switch_and_match_tables() {
        // The two series on either side of 1.18.
        let below = kolmogorov_q(1.18 - 1e-12);
        let above = kolmogorov_q(1.18 + 1e-12);
        assert!((below - above).abs() < 1e-10);
        // Critical values of the Kolmogorov distribution: 1.2238 (10 %), 1.3581 (5 %),
        // 1.6276 (1 %) (Smirnov's table, 4 digits).
        for (lambda, p) in [(1.2238, 0.10), (1.3581, 0.05), (1.6276, 0.01)] {
            assert!((kolmogorov_q(lambda) - p).abs() < 2e-4, "Q({lambda})");
        }
        assert!(kolmogorov_q(10.0) < 1e-80);
        assert!((kolmogorov_q(0.2) - 1.0).abs() < 1e-12);
    }
}
