//! `hasme report`: runs every analysis that fits a problem and writes one
//! self-contained HTML page plus the JSON of every part.
//!
//! The stages are the library's own calls, in the order of the data: the check
//! ([`CheckSummary`]), derivatives and model coefficients at the start point
//! ([`DeriveReport`]), exact Gaussian moments when the objective is quadratic with
//! constant noise ([`moments::compare`]), weak errors and their order in η
//! ([`experiment::weak_order`]), and escape times when the file has an `escape when …` statement
//! ([`escape`]). The page leads with the answer (models against SGD), then the plots,
//! then the settings and the standalone commands that reproduce every number.
//!
//! Default step size: `η = min(0.1, 0.25/|λ|_max)` with `|λ|_max` the largest absolute
//! eigenvalue of `∇²f` at the start point, i.e. half of the `1/(2λ_max)` bound, so that
//! HA-SME (`ηλ < 1`) stays in its domain while the curvature grows along the path.

use crate::ErrorKind;
use crate::escape::{self, EscapeConfig, EscapeError, EscapeReport, Region};
use crate::experiment::{self, Method, WeakOrderConfig, WeakOrderError, WeakOrderReport};
use crate::format::WithFile;
use crate::inspect::{CheckSummary, DeriveReport, ModelRequest};
use crate::models::{ModelKind, ModelOptions, PsdPolicy};
use crate::moments::{self, MomentsConfig, MomentsError, MomentsReport};
use crate::output::{self, OutputError};
use crate::plot::PlotError;
use crate::shard::Ledger;
use crate::{Overrides, Problem, ProblemError};
use serde_json::Value;
use std::fmt::Write as _;
use std::path::PathBuf;

/// Largest default step size.
pub const DEFAULT_ETA_MAX: f64 = 0.1;

/// The target accuracy of the report's weak-order run by quadrature.
pub const QUADRATURE_TOLERANCE: f64 = 1e-8;

/// What a report runs: built by [`ReportConfig::builder`], which checks every setting
/// (defaults on each field below); [`run_report`] checks them again before starting,
/// since the output directory may have changed since.
///
/// ```
/// use hasme::{ReportConfig, ReportError};
///
/// let config = ReportConfig::builder("hasme-report").quick(true).seed(1).build()?;
/// assert!(config.quick() && config.eta().is_none());
/// let err = ReportConfig::builder("hasme-report").eta(Some(-1.0)).build().unwrap_err();
/// assert_eq!(err.to_string(), "--eta must be a finite number > 0, got -1");
/// # Ok::<(), ReportError>(())
/// ```
#[derive(Clone, Debug)]
pub struct ReportConfig {
    /// The step size η (largest of the weak-order grid); `None`: [`default_eta`].
    pub(crate) eta: Option<f64>,
    /// Seconds instead of a minute: fewer paths, two η levels, fewer substeps.
    pub(crate) quick: bool,
    /// Seed of every random stream.
    pub(crate) seed: u64,
    /// Worker threads (the numbers do not depend on it).
    pub(crate) threads: usize,
    /// The directory the page and the JSON files are written into.
    pub(crate) out_dir: PathBuf,
    /// The file name shown in the reproduce commands (default: the source's name).
    pub(crate) file_label: Option<String>,
    /// The `--set NAME=VALUE` overrides, for the reproduce commands.
    pub(crate) set: Vec<String>,
    /// A ledger every simulation of the report runs under (all chunks computed, in
    /// order): a front end stops the report through its stop flag.
    pub(crate) ledger: Option<Ledger>,
}

/// The settings of a report, before they are checked: see [`ReportConfig`].
#[derive(Clone, Debug)]
pub struct ReportConfigBuilder {
    draft: ReportConfig,
}

impl ReportConfigBuilder {
    crate::config::setters! {
        /// The output directory (not an existing file).
        out_dir: PathBuf,
        /// The step size η (finite, > 0); `None`: [`default_eta`].
        eta: Option<f64>,
        /// Seconds instead of a minute.
        quick: bool,
        /// Seed of every random stream.
        seed: u64,
        /// Worker threads (≥ 1).
        threads: usize,
        /// The file name shown in the reproduce commands.
        file_label: Option<String>,
        /// The `--set NAME=VALUE` overrides, for the reproduce commands.
        set: Vec<String>,
        /// A ledger that computes every chunk, for its stop flag (a front end's Ctrl-C):
        /// the report's simulations stop at the next path and the report fails.
        ledger: Option<Ledger>,
    }

    /// Checks every setting and returns the configuration.
    pub fn build(&self) -> Result<ReportConfig, ReportError> {
        self.draft.check()?;
        Ok(self.draft.clone())
    }
}

impl ReportConfig {
    /// These settings as a builder, to derive a variant (e.g. another thread count).
    pub fn to_builder(&self) -> ReportConfigBuilder {
        ReportConfigBuilder {
            draft: self.clone(),
        }
    }

    /// The defaults (η chosen from the problem, full mode, seed 0, one thread), to
    /// adjust and then [`build`](ReportConfigBuilder::build).
    pub fn builder(out_dir: impl Into<PathBuf>) -> ReportConfigBuilder {
        ReportConfigBuilder {
            draft: ReportConfig::unchecked(out_dir.into()),
        }
    }

    crate::config::getters! {
        /// The step size η, when given.
        eta: Option<f64>,
        /// Whether the report is the quick one.
        quick: bool,
        /// The seed.
        seed: u64,
        /// Worker threads.
        threads: usize,
    }

    /// The directory the page and the JSON files are written into.
    pub fn out_dir(&self) -> &std::path::Path {
        &self.out_dir
    }

    /// The file name shown in the reproduce commands, when given.
    pub fn file_label(&self) -> Option<&str> {
        self.file_label.as_deref()
    }

    /// The `--set` overrides shown in the reproduce commands.
    pub fn set(&self) -> &[String] {
        &self.set
    }

    fn unchecked(out_dir: PathBuf) -> ReportConfig {
        ReportConfig {
            eta: None,
            quick: false,
            seed: 0,
            threads: 1,
            out_dir,
            file_label: None,
            set: Vec::new(),
            ledger: None,
        }
    }

    fn check(&self) -> Result<(), ReportError> {
        if let Some(eta) = self.eta
            && !(eta.is_finite() && eta > 0.0)
        {
            return Err(ReportError::Config(format!(
                "--eta must be a finite number > 0, got {eta}"
            )));
        }
        if self.out_dir.exists() && !self.out_dir.is_dir() {
            return Err(ReportError::Config(format!(
                "--out `{}` is a file, not a directory",
                self.out_dir.display()
            )));
        }
        if self.threads == 0 {
            return Err(ReportError::Config("--threads must be at least 1".into()));
        }
        Ok(())
    }
}

/// Why a report could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// A bad setting.
    #[error("{0}")]
    Config(String),
    /// The problem failed at the start point.
    #[error(transparent)]
    Problem(#[from] ProblemError),
    /// The exact moments failed.
    #[error("moments: {0}")]
    Moments(#[from] MomentsError),
    /// The weak-order experiment failed.
    #[error("weak order: {0}")]
    WeakOrder(#[from] WeakOrderError),
    /// The escape experiment failed.
    #[error("escape: {0}")]
    Escape(#[from] EscapeError),
    /// A file could not be written.
    #[error(transparent)]
    Output(#[from] OutputError),
    /// A plot could not be drawn.
    #[error("plot: {0}")]
    Plot(#[from] PlotError),
    /// JSON could not be built.
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
    /// The ledger's stop flag was set before the simulations finished: nothing was
    /// written.
    #[error("stopped before its simulations finished: no page or part was written")]
    Stopped,
}

impl ReportError {
    /// Bad input, or a failure while running: that of the part that failed.
    pub fn kind(&self) -> ErrorKind {
        match self {
            ReportError::Config(_) => ErrorKind::Input,
            ReportError::Problem(e) => e.kind(),
            ReportError::Moments(e) => e.kind(),
            ReportError::WeakOrder(e) => e.kind(),
            ReportError::Escape(e) => e.kind(),
            ReportError::Output(e) => e.kind(),
            ReportError::Plot(_) | ReportError::Json(_) | ReportError::Stopped => ErrorKind::Run,
        }
    }
}

/// Reports the start and end of each stage and the paths done, from any thread.
pub trait Progress: Sync {
    /// A stage begins with `total` paths to simulate (0 for the deterministic ones).
    fn stage(&self, name: &str, total: u64);
    /// `n` more paths are done.
    fn inc(&self, n: u64);
    /// The stage is over.
    fn finish(&self);
}

/// No progress report.
pub struct Silent;

impl Progress for Silent {
    fn stage(&self, _: &str, _: u64) {}
    fn inc(&self, _: u64) {}
    fn finish(&self) {}
}

/// The settings each stage ran with (so each part can be rerun on its own).
#[derive(Clone, Debug)]
pub struct Settings {
    /// The step size used.
    pub eta: f64,
    /// How η was chosen.
    pub eta_reason: String,
    /// Why the quick weak-order experiment runs fewer paths than usual, when it does.
    pub paths_reason: Option<String>,
    /// The moments configuration, when run.
    pub moments: Option<MomentsConfig>,
    /// The weak-order configuration.
    pub weak_order: WeakOrderConfig,
    /// The same experiment by quadrature (d ≤ 2), when the problem allows it.
    pub weak_order_quadrature: Option<WeakOrderConfig>,
    /// The escape configuration, when run.
    pub escape: Option<EscapeConfig>,
    /// The init seed of the random start values, when the problem draws some (the
    /// reproduce commands then pass `--init-seed`).
    pub init_seed: Option<u64>,
    /// The start file the start point was read from, when given (the reproduce
    /// commands then pass `--start`).
    pub start_file: Option<String>,
}

/// Everything a report computed, and where it was written.
pub struct Report {
    /// The settings.
    pub settings: Settings,
    /// `hasme check`.
    pub check: CheckSummary,
    /// `hasme derive --eta η` at the start point.
    pub derive: DeriveReport,
    /// `hasme moments`, when the problem is quadratic with constant noise.
    pub moments: Option<MomentsReport>,
    /// `hasme weak-order`.
    pub weak_order: WeakOrderReport,
    /// `hasme weak-order --method quadrature` (d ≤ 2): exact weak errors beside the
    /// Monte Carlo ones.
    pub weak_order_quadrature: Option<WeakOrderReport>,
    /// `hasme escape`, when the file has an escape region.
    pub escape: Option<EscapeReport>,
    /// The exact standalone commands, one per part.
    pub commands: Vec<(String, String)>,
    /// The files written, page first.
    pub files: Vec<PathBuf>,
    /// Notes on what was skipped or failed.
    pub notes: Vec<String>,
    /// The problem's source text.
    pub source: String,
}

/// `min(0.1, 0.25/|λ|_max)` from `∇²f` at the start point, see the module docs.
///
/// ```
/// let p = hasme::Problem::from_str("var x = 1\nminimize 10*x^2").unwrap();
/// assert_eq!(hasme::report::default_eta(&p).unwrap(), 0.0125);
/// ```
pub fn default_eta(problem: &Problem) -> Result<f64, ProblemError> {
    let d = problem.derivatives(&problem.start())?;
    let lambda = d
        .hessian
        .clone()
        .symmetric_eigenvalues()
        .iter()
        .fold(0.0f64, |m, v| m.max(v.abs()));
    Ok(if lambda * DEFAULT_ETA_MAX > 0.25 {
        0.25 / lambda
    } else {
        DEFAULT_ETA_MAX
    })
}

/// Runs every stage that fits `problem` (built with `overrides`), writes `report.html`,
/// `check.json`, `derive.json`, `moments.json` (if run), `weak_order.json` and
/// `escape.json` (if run) into `config.out_dir` (created if missing) through
/// [`output::write_atomic`]: each file replaced atomically, a link written through, a
/// device or FIFO written as it is. Every path is checked before the first stage.
///
/// ```no_run
/// use hasme::report::{ReportConfig, Silent, run_report};
/// let p = hasme::Problem::from_file("examples/report.hasme", &hasme::Overrides::none())?;
/// let c = ReportConfig::builder("hasme-report").quick(true).build()?;
/// let r = run_report(&p, &hasme::Overrides::none(), &c, &Silent)?;
/// println!("{}", r.files[0].display());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn run_report(
    problem: &Problem,
    overrides: &Overrides,
    config: &ReportConfig,
    progress: &dyn Progress,
) -> Result<Report, ReportError> {
    config.check()?;
    std::fs::create_dir_all(&config.out_dir).map_err(|e| OutputError::Io {
        path: config.out_dir.clone(),
        message: format!("creating the directory: {e}"),
    })?;
    let names = [
        "report.html",
        "check.json",
        "derive.json",
        "moments.json",
        "weak_order.json",
        "weak_order_quadrature.json",
        "escape.json",
    ];
    for n in names {
        output::check_target(config.out_dir.join(n))?;
    }
    let settings = settings(problem, config)?;
    let eta = settings.eta;
    let mut notes = Vec::new();
    if let Some(why) = &settings.paths_reason {
        notes.push(format!("weak order, quick mode: {why}"));
    }

    progress.stage("check", 0);
    let check = CheckSummary::new(problem);
    progress.finish();

    progress.stage("derive", 0);
    let mut derive = DeriveReport::new(problem, &problem.start())?;
    let request = ModelRequest {
        eta,
        models: ModelKind::all().to_vec(),
        series_terms: 0,
        options: ModelOptions {
            psd: PsdPolicy::Error,
        },
        // The size rule: dense in the report's usual dimensions.
        linear_algebra: None,
        krylov: Default::default(),
    };
    for (kind, err) in derive.add_models(problem, &request)? {
        notes.push(format!("derive: model `{kind}` at the start point: {err}"));
    }
    progress.finish();

    let moments = match &settings.moments {
        Some(mc) => {
            progress.stage("moments", 0);
            let m = moments::compare(problem, mc)?;
            for (kind, err) in m.failures() {
                notes.push(format!("moments: model `{kind}`: {err}"));
            }
            progress.finish();
            Some(m)
        }
        None => {
            notes.push(
                "exact moments skipped: they need a quadratic objective with constant noise".into(),
            );
            None
        }
    };

    let mut wc = settings.weak_order.clone();
    wc.ledger.clone_from(&config.ledger);
    progress.stage("weak order", wc.total_paths(problem));
    let weak = experiment::weak_order_with_progress(problem, overrides, &wc, &|n| progress.inc(n));
    progress.finish();
    let stopped = || config.ledger.as_ref().is_some_and(Ledger::partial);
    if stopped() {
        return Err(ReportError::Stopped);
    }
    let weak = weak?;
    notes.extend(weak.warnings.iter().map(|w| format!("weak order: {w}")));

    let weak_quadrature = match &settings.weak_order_quadrature {
        Some(qc) => {
            progress.stage("weak order by quadrature", qc.total_paths(problem));
            let q =
                experiment::weak_order_with_progress(problem, overrides, qc, &|n| progress.inc(n));
            progress.finish();
            match q {
                Ok(q) => {
                    notes.extend(
                        q.warnings
                            .iter()
                            .map(|w| format!("weak order by quadrature: {w}")),
                    );
                    Some(q)
                }
                Err(e) => {
                    notes.push(format!("weak order by quadrature failed: {e}"));
                    None
                }
            }
        }
        None if config.quick => {
            notes.push(
                "weak order by quadrature skipped in quick mode (seconds in two dimensions): the full report runs it, as does `hasme weak-order --method quadrature`".into(),
            );
            None
        }
        None => {
            notes.push(format!(
                "weak order by quadrature skipped: it needs one or two variables and Gaussian noise or a finite sum with at most {} minibatches",
                crate::quadrature::MAX_MINIBATCHES
            ));
            None
        }
    };

    let escape = match &settings.escape {
        Some(ec) => {
            let mut ec = ec.clone();
            ec.ledger.clone_from(&config.ledger);
            progress.stage("escape", ec.paths());
            let e = escape::escape_with_progress(problem, &ec, &|n| progress.inc(n));
            progress.finish();
            if stopped() {
                return Err(ReportError::Stopped);
            }
            Some(e?)
        }
        None => {
            notes.push("escape times skipped: the file has no `escape when …` statement".into());
            None
        }
    };

    let file = config
        .file_label
        .clone()
        .unwrap_or_else(|| problem.source().name().to_string());
    let commands = commands(&file, config, &settings);
    let mut report = Report {
        settings,
        check,
        derive,
        moments,
        weak_order: weak,
        weak_order_quadrature: weak_quadrature,
        escape,
        commands,
        files: Vec::new(),
        notes,
        source: problem.source().text().to_string(),
    };
    let dir = &config.out_dir;
    let write = |name: &str, bytes: &[u8]| -> Result<(), ReportError> {
        let path = dir.join(name);
        output::write_atomic(&path, bytes)?;
        Ok(())
    };
    // Parts first, then the page, so a page on disk always has its parts beside it.
    let parts = report.parts_json(&file)?;
    for (name, value) in &parts {
        write(
            name,
            (serde_json::to_string_pretty(value)? + "\n").as_bytes(),
        )?;
    }
    let html = report.to_html(&file, config)?;
    write("report.html", html.as_bytes())?;
    report.files = std::iter::once(dir.join("report.html"))
        .chain(parts.iter().map(|(n, _)| dir.join(n)))
        .collect();
    Ok(report)
}

fn settings(problem: &Problem, config: &ReportConfig) -> Result<Settings, ReportError> {
    let (eta, eta_reason) = match config.eta {
        Some(eta) => (eta, "given with --eta".to_string()),
        None => {
            let eta = default_eta(problem)?;
            let reason = if eta < DEFAULT_ETA_MAX {
                format!(
                    "0.25/|λ|max of ∇²f at the start point (below 1/(2λmax)); {DEFAULT_ETA_MAX} would be too large"
                )
            } else {
                format!(
                    "default {DEFAULT_ETA_MAX} (0.25/|λ|max of ∇²f at the start point is larger)"
                )
            };
            (eta, reason)
        }
    };
    let s = problem.structure();
    let moments = if s.quadratic && s.constant_noise {
        let steps = if config.quick { 20 } else { 100 };
        Some(MomentsConfig::new(eta, steps)?.with_every(if config.quick { 1 } else { 2 })?)
    } else {
        None
    };
    // Ten SGD steps at the largest η: long enough for the errors to build up, short
    // enough that the smallest η (8× more steps) stays cheap.
    let levels = if config.quick { 2 } else { 3 };
    let etas = WeakOrderConfig::halving(eta, levels);
    let (paths, paths_reason) = if config.quick {
        quick_paths(problem, &etas)
    } else {
        (20_000, None)
    };
    let mut wc = WeakOrderConfig::builder(etas, 10.0 * eta, paths);
    wc.seed(config.seed).threads(config.threads);
    if config.quick {
        wc.models(vec![ModelKind::Sme1, ModelKind::Hasme])
            .substeps(4)
            .integration_check(false);
    }
    let wc = wc.build()?;
    // The same experiment without Monte Carlo noise where the quadrature applies (not
    // in quick mode: in two dimensions it takes seconds). 1e−8: each expectation to
    // about 1e−10 in practice, at half the time of the default 1e−10.
    let wq = if !config.quick && crate::quadrature::supported(problem).is_ok() {
        Some(
            wc.to_builder()
                .method(Method::Quadrature)
                .tolerance(QUADRATURE_TOLERANCE)
                .build()?,
        )
    } else {
        None
    };
    let escape = match problem.escape_region() {
        None => None,
        Some(_) => Some(
            EscapeConfig::builder(
                eta,
                if config.quick { 500 } else { 2000 },
                if config.quick { 100 } else { 1000 },
                Region::File,
            )
            // Noiseless gradient flow never leaves a saddle it starts on: every path
            // would run to the cap.
            .models(if config.quick {
                vec![ModelKind::Sme1, ModelKind::Hasme]
            } else {
                vec![
                    ModelKind::Sme1,
                    ModelKind::Sme2,
                    ModelKind::Hasme,
                    ModelKind::HasmeExact,
                ]
            })
            .substeps(if config.quick { 8 } else { 32 })
            .seed(config.seed)
            .threads(config.threads)
            .build()?,
        ),
    };
    Ok(Settings {
        eta,
        eta_reason,
        paths_reason,
        moments,
        weak_order: wc,
        weak_order_quadrature: wq,
        escape,
        init_seed: problem.init_seed_if_random(),
        start_file: problem.start_file().map(str::to_string),
    })
}

/// Tape operations the quick weak-order experiment may cost (two models, every path
/// and step): one to three seconds on one core at the 10–30 ns an operation measured
/// on the bundled finite sums.
pub const QUICK_WORK: f64 = 1e8;

/// The fewest paths a quick weak-order experiment runs, whatever its cost.
pub const QUICK_MIN_PATHS: u64 = 20;

/// The quick weak-order experiment's paths and, when the cost forced fewer than usual,
/// why. Usually 500 (100 above 4 variables, where every model step costs
/// eigendecompositions of d×d matrices); fewer, down to [`QUICK_MIN_PATHS`], when the
/// work ([`evaluation_work`] per model step, four substeps per SGD step, two models)
/// would pass [`QUICK_WORK`]. A count from the problem's size, never from a clock, so
/// the same command gives the same numbers on any machine.
fn quick_paths(problem: &Problem, etas: &[f64]) -> (u64, Option<String>) {
    let usual: u64 = if problem.dim() > 4 { 100 } else { 500 };
    let horizon = 10.0 * etas[0];
    let steps: f64 = etas.iter().map(|e| (horizon / e).round() * 4.0).sum();
    let per_path = 2.0 * steps * evaluation_work(problem);
    let affordable = (QUICK_WORK / per_path).floor();
    if affordable >= usual as f64 {
        return (usual, None);
    }
    let paths = (affordable as u64).max(QUICK_MIN_PATHS);
    let rows = problem
        .finite_sum()
        .map_or(String::new(), |fs| format!(" over {} rows", fs.n));
    (
        paths,
        Some(format!(
            "{paths} paths, not {usual}: one model step costs about {:.1e} tape operations here (the {d}×{d} Hessian{rows})",
            evaluation_work(problem),
            d = problem.dim()
        )),
    )
}

/// Tape operations of one evaluation of a model's coefficients (value, gradient and
/// dense Hessian: d + 1 passes of the objective's tape, per row of a finite sum).
pub fn evaluation_work(problem: &Problem) -> f64 {
    let rows = problem.finite_sum().map_or(1, |fs| fs.n.max(1));
    rows as f64 * problem.objective_tape().len() as f64 * (problem.dim() + 1) as f64
}

fn join_models(models: &[ModelKind]) -> String {
    models
        .iter()
        .map(|m| m.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

fn commands(file: &str, config: &ReportConfig, s: &Settings) -> Vec<(String, String)> {
    let file = shell_word(file);
    let mut set: String = config
        .set
        .iter()
        .map(|v| format!(" --set {}", shell_word(v)))
        .collect();
    if let Some(seed) = s.init_seed {
        set.push_str(&format!(" --init-seed {seed}"));
    }
    if let Some(start) = &s.start_file {
        set.push_str(&format!(" --start {}", shell_word(start)));
    }
    let mut out = vec![
        (
            "check.json".into(),
            format!("hasme check {file}{set} --json"),
        ),
        (
            "derive.json".into(),
            format!(
                "hasme derive {file}{set} --eta {} --model all --json",
                s.eta
            ),
        ),
    ];
    if let Some(m) = &s.moments {
        out.push((
            "moments.json".into(),
            format!(
                "hasme moments {file}{set} --eta {} --steps {} --every {} --models {} --json",
                m.eta(),
                m.steps(),
                m.every(),
                join_models(m.models())
            ),
        ));
    }
    let w = &s.weak_order;
    let etas: Vec<String> = w.etas.iter().map(|e| e.to_string()).collect();
    out.push((
        "weak_order.json".into(),
        format!(
            "hasme weak-order {file}{set} --etas {} --horizon {} --paths {} --models {} --substeps {} --scheme {} --seed {}{} --json",
            etas.join(","),
            w.horizon,
            w.paths,
            join_models(&w.models),
            w.substeps,
            w.scheme,
            w.seed,
            if w.integration_check { "" } else { " --no-integration-check" }
        ),
    ));
    if let Some(q) = &s.weak_order_quadrature {
        let etas: Vec<String> = q.etas.iter().map(|e| e.to_string()).collect();
        out.push((
            "weak_order_quadrature.json".into(),
            format!(
                "hasme weak-order {file}{set} --method quadrature --etas {} --horizon {} --models {} --tolerance {:e} --json",
                etas.join(","),
                q.horizon,
                join_models(&q.models),
                q.tolerance
            ),
        ));
    }
    if let Some(e) = &s.escape {
        out.push((
            "escape.json".into(),
            format!(
                "hasme escape {file}{set} --eta {} --max-steps {} --paths {} --models {} --substeps {} --coupling {} --seed {} --json",
                e.eta,
                e.max_steps,
                e.paths,
                join_models(&e.models),
                e.substeps,
                e.coupling,
                e.seed
            ),
        ));
    }
    out
}

/// A word safe for a POSIX shell (single-quoted unless plain).
fn shell_word(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=,:+".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// Escapes text for HTML element content and attribute values.
pub fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A number for the page: rounded to 4 decimals (scientific outside [1e−3, 1e5)), `—`
/// for none or non-finite.
fn fmt_num(v: Option<f64>) -> String {
    crate::format::cell(
        v.filter(|v| v.is_finite()),
        crate::format::Style::Rounded(4),
    )
}

/// The page's sections, in order (their headings).
pub const SECTIONS: [&str; 5] = [
    "Models against SGD",
    "Plots",
    "Problem",
    "Settings and reproduction",
    "Notes",
];

impl Report {
    /// The JSON of every part, by file name, as written.
    pub fn parts_json(&self, file: &str) -> Result<Vec<(String, Value)>, ReportError> {
        let mut out = vec![
            ("check.json".to_string(), serde_json::to_value(&self.check)?),
            (
                "derive.json".to_string(),
                serde_json::to_value(&self.derive)?,
            ),
        ];
        if let Some(m) = &self.moments {
            out.push(("moments.json".into(), serde_json::to_value(m)?));
        }
        out.push((
            "weak_order.json".into(),
            serde_json::to_value(WithFile::new(&self.weak_order, file))?,
        ));
        if let Some(q) = &self.weak_order_quadrature {
            out.push((
                "weak_order_quadrature.json".into(),
                serde_json::to_value(WithFile::new(q, file))?,
            ));
        }
        if let Some(e) = &self.escape {
            out.push((
                "escape.json".into(),
                serde_json::to_value(WithFile::new(e, file))?,
            ));
        }
        Ok(out)
    }

    /// The models compared with SGD: one row per model, every column that was run.
    fn answer_table(&self, h: &mut String) {
        let w = &self.weak_order;
        let mut models: Vec<ModelKind> = w.config.models.clone();
        if let Some(m) = &self.moments {
            for (k, _) in &m.models {
                if !models.contains(k) {
                    models.push(*k);
                }
            }
        }
        if let Some(e) = &self.escape {
            for k in &e_models(e) {
                if !models.contains(k) {
                    models.push(*k);
                }
            }
        }
        let all = ModelKind::all();
        models.sort_by_key(|k| all.iter().position(|a| a == k).unwrap_or(all.len()));
        h.push_str("<table>\n<thead><tr><th>model</th>");
        for o in &w.observables {
            let _ = write!(
                h,
                "<th>weak-order slope [95% CI] ({})</th><th>error constant ({})</th>",
                html_escape(&o.name),
                html_escape(&o.name)
            );
        }
        let exact = self.weak_order_quadrature.as_ref();
        for o in exact.map_or(&[][..], |q| &q.observables[..]) {
            let _ = write!(
                h,
                "<th>exact slope, quadrature ({})</th><th>exact error constant ({})</th>",
                html_escape(&o.name),
                html_escape(&o.name)
            );
        }
        if self.moments.is_some() {
            h.push_str("<th>W2 to SGD at the last step</th>");
        }
        if self.escape.is_some() {
            h.push_str("<th>escape-time KS distance</th>");
        }
        h.push_str("</tr></thead>\n<tbody>\n");
        for k in &models {
            let _ = write!(h, "<tr><td>{}</td>", html_escape(&k.to_string()));
            for o in &w.observables {
                match o.models.iter().find(|m| m.model == *k) {
                    Some(m) => {
                        let slope = match &m.fit {
                            Some(f) => format!(
                                "{} [{}, {}]",
                                fmt_num(Some(f.slope)),
                                fmt_num(Some(f.slope_ci.0)),
                                fmt_num(Some(f.slope_ci.1))
                            ),
                            None => format!("— ({})", html_escape(&m.verdict.to_string())),
                        };
                        let c = match &m.constant {
                            Some(c) => format!("{} (order {})", fmt_num(Some(c.value)), c.order),
                            None => "—".into(),
                        };
                        let _ = write!(h, "<td>{slope}</td><td>{c}</td>");
                    }
                    None => h.push_str("<td>not run</td><td>not run</td>"),
                }
            }
            for o in exact.map_or(&[][..], |q| &q.observables[..]) {
                match o.models.iter().find(|m| m.model == *k) {
                    Some(m) => {
                        let slope = match &m.fit {
                            Some(f) => fmt_num(Some(f.slope)),
                            None => format!("— ({})", m.verdict.key().replace('_', " ")),
                        };
                        let c = match &m.constant {
                            Some(c) => format!("{} (order {})", fmt_num(Some(c.value)), c.order),
                            None => "—".into(),
                        };
                        let _ = write!(h, "<td>{slope}</td><td>{c}</td>");
                    }
                    None => h.push_str("<td>not run</td><td>not run</td>"),
                }
            }
            if let Some(m) = &self.moments {
                let cell = match m.model(*k) {
                    Some(Ok(mm)) => fmt_num(mm.w2.last().copied()),
                    Some(Err(e)) => format!("failed: {}", html_escape(&e.to_string())),
                    None => "not run".into(),
                };
                let _ = write!(h, "<td>{cell}</td>");
            }
            if let Some(e) = &self.escape {
                let cell = match e.processes.iter().find(|p| p.name == k.to_string()) {
                    Some(p) => fmt_num(p.ks_distance),
                    None => "not run".into(),
                };
                let _ = write!(h, "<td>{cell}</td>");
            }
            h.push_str("</tr>\n");
        }
        h.push_str("</tbody>\n</table>\n");
    }

    /// The page: the answer, the plots, the problem, the settings and commands, notes.
    pub fn to_html(&self, file: &str, config: &ReportConfig) -> Result<String, ReportError> {
        let mut h = String::new();
        h.push_str("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
        let _ = writeln!(h, "<title>hasme report: {}</title>", html_escape(file));
        h.push_str(CSS);
        h.push_str("</head>\n<body>\n");
        let _ = writeln!(h, "<h1>hasme report: {}</h1>", html_escape(file));
        let _ = writeln!(
            h,
            "<p>Which SDE tracks SGD on this problem, and how well: step size η = {} ({}), seed {}{}.</p>",
            self.settings.eta,
            html_escape(&self.settings.eta_reason),
            config.seed,
            if config.quick {
                ", quick mode (few paths: rough numbers)"
            } else {
                ""
            }
        );
        if let Some(why) = &self.settings.paths_reason {
            let _ = writeln!(h, "<p>Quick mode: {}.</p>", html_escape(why));
        }

        let _ = writeln!(h, "<section>\n<h2>{}</h2>", SECTIONS[0]);
        h.push_str(
            "<p>Weak-order slope: the fitted order of the weak error |E φ(x<sub>N</sub>) − E φ(X<sub>T</sub>)| in η, with its 95% CI; \
             error constant C in error ≈ C η<sup>p</sup> at the nominal order p. \
             Exact slope and constant (one or two variables): the same fit on weak errors computed by quadrature, without Monte Carlo noise (<code>--method quadrature</code>). \
             W2: the exact Wasserstein-2 distance of the model's Gaussian law to SGD's at the last step (quadratic objectives with constant noise). \
             KS: the Kolmogorov–Smirnov distance between the model's and SGD's escape-time distributions. Smaller is closer to SGD.</p>\n",
        );
        self.answer_table(&mut h);
        h.push_str("</section>\n");

        let _ = writeln!(h, "<section>\n<h2>{}</h2>", SECTIONS[1]);
        let mut plots = vec![(
            "Weak error against η (log-log, 95% bars)",
            self.weak_order.plot(),
        )];
        if let Some(q) = &self.weak_order_quadrature {
            plots.push((
                "Weak error against η by quadrature (log-log, bars: numerical error)",
                q.plot(),
            ));
        }
        if let Some(m) = &self.moments {
            plots.push(("W2 distance to SGD against t = kη", m.w2_plot()));
        }
        if let Some(e) = &self.escape {
            plots.push((
                "Escape-time survival curves (Kaplan–Meier)",
                e.survival_plot(),
            ));
        }
        for (title, plot) in plots {
            let _ = writeln!(h, "<figure>");
            match plot.to_svg() {
                Ok(svg) => h.push_str(strip_prolog(&svg)),
                Err(e) => {
                    let _ = write!(h, "<p>no plot: {}</p>", html_escape(&e.to_string()));
                }
            }
            let _ = writeln!(
                h,
                "\n<figcaption>{}</figcaption>\n</figure>",
                html_escape(title)
            );
        }
        h.push_str("</section>\n");

        let _ = writeln!(h, "<section>\n<h2>{}</h2>", SECTIONS[2]);
        h.push_str("<table>\n<tbody>\n");
        let c = &self.check;
        let row = |h: &mut String, k: &str, v: &str| {
            let _ = writeln!(h, "<tr><th>{}</th><td>{}</td></tr>", k, html_escape(v));
        };
        row(&mut h, "file", file);
        row(&mut h, "variables", &c.variables.join(", "));
        row(&mut h, "start", &format!("{:?}", c.start));
        let params: Vec<String> = c.params.iter().map(|(k, v)| format!("{k} = {v}")).collect();
        row(&mut h, "params", &params.join(", "));
        row(
            &mut h,
            "structure",
            &format!(
                "quadratic: {}, constant noise: {}",
                c.structure.quadratic, c.structure.constant_noise
            ),
        );
        row(&mut h, "observables", &c.observables.join(", "));
        row(&mut h, "escape when", c.escape.as_deref().unwrap_or("—"));
        h.push_str("</tbody>\n</table>\n<details><summary>source</summary>\n<pre>");
        h.push_str(&html_escape(&self.source));
        h.push_str("</pre>\n</details>\n</section>\n");

        let _ = writeln!(h, "<section>\n<h2>{}</h2>", SECTIONS[3]);
        h.push_str(
            "<p>Each part was computed by the library call behind the command beside it, with the same settings and seed; \
             rerunning the command prints the same numbers (on any number of threads).</p>\n<table>\n<thead><tr><th>file</th><th>command</th></tr></thead>\n<tbody>\n",
        );
        for (name, cmd) in &self.commands {
            let _ = writeln!(
                h,
                "<tr><td><a href=\"{0}\">{0}</a></td><td><code>{1}</code></td></tr>",
                html_escape(name),
                html_escape(cmd)
            );
        }
        let mut whole = format!(
            "hasme report {}",
            shell_word(config.file_label.as_deref().unwrap_or(file))
        );
        for s in &config.set {
            let _ = write!(whole, " --set {}", shell_word(s));
        }
        if let Some(seed) = self.settings.init_seed {
            let _ = write!(whole, " --init-seed {seed}");
        }
        if let Some(start) = &self.settings.start_file {
            let _ = write!(whole, " --start {}", shell_word(start));
        }
        let _ = write!(whole, " --eta {} --seed {}", self.settings.eta, config.seed);
        if config.quick {
            whole.push_str(" --quick");
        }
        let _ = writeln!(
            h,
            "<tr><td>this page</td><td><code>{}</code></td></tr>\n</tbody>\n</table>\n</section>",
            html_escape(&whole)
        );

        let _ = writeln!(h, "<section>\n<h2>{}</h2>\n<ul>", SECTIONS[4]);
        if self.notes.is_empty() {
            h.push_str("<li>none</li>\n");
        }
        for n in &self.notes {
            let _ = writeln!(h, "<li>{}</li>", html_escape(n));
        }
        h.push_str("</ul>\n</section>\n</body>\n</html>\n");
        Ok(h)
    }

    /// A short text summary: the answer table's numbers for the first observable.
    pub fn summary(&self) -> String {
        let mut s = format!("hasme report (η = {})\n", self.settings.eta);
        if let Some(o) = self.weak_order.observables.first() {
            let _ = writeln!(s, "  weak-order slope for {}:", o.name);
            for m in &o.models {
                let slope = m.fit.as_ref().map(|f| f.slope);
                let _ = writeln!(s, "    {:<12} {}", m.model.to_string(), fmt_num(slope));
            }
        }
        if let Some(o) = self
            .weak_order_quadrature
            .as_ref()
            .and_then(|q| q.observables.first())
        {
            let _ = writeln!(s, "  exact weak-order slope (quadrature) for {}:", o.name);
            for m in &o.models {
                let slope = m.fit.as_ref().map(|f| f.slope);
                let _ = writeln!(s, "    {:<12} {}", m.model.to_string(), fmt_num(slope));
            }
        }
        if let Some(m) = &self.moments {
            let _ = writeln!(s, "  W2 to SGD at the last step:");
            for (k, r) in &m.models {
                let v = r.as_ref().ok().and_then(|mm| mm.w2.last().copied());
                let _ = writeln!(s, "    {:<12} {}", k.to_string(), fmt_num(v));
            }
        }
        if let Some(e) = &self.escape {
            let _ = writeln!(s, "  escape-time KS distance to SGD:");
            for p in e.processes.iter().filter(|p| p.name != "sgd") {
                let _ = writeln!(s, "    {:<12} {}", p.name, fmt_num(p.ks_distance));
            }
        }
        s
    }
}

fn e_models(e: &EscapeReport) -> Vec<ModelKind> {
    e.processes
        .iter()
        .filter_map(|p| p.name.parse::<ModelKind>().ok())
        .collect()
}

/// The SVG element alone: without an XML declaration or doctype before it.
fn strip_prolog(svg: &str) -> &str {
    svg.find("<svg").map_or(svg, |i| &svg[i..])
}

const CSS: &str = "<style>
body { font-family: system-ui, sans-serif; max-width: 72rem; margin: 2rem auto; padding: 0 1rem; color: #222; }
h1 { font-size: 1.6rem; } h2 { font-size: 1.25rem; border-bottom: 1px solid #ccc; padding-bottom: .2rem; }
table { border-collapse: collapse; margin: .5rem 0; }
th, td { border: 1px solid #ddd; padding: .25rem .5rem; text-align: left; vertical-align: top; }
thead th { background: #f3f3f3; }
code, pre { font-family: ui-monospace, monospace; font-size: .85rem; }
pre { background: #f7f7f7; padding: .5rem; overflow-x: auto; }
figure { margin: 1rem 0; } figure svg { max-width: 100%; height: auto; }
figcaption { font-style: italic; }
</style>
";
