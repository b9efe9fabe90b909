//! The `hasme` command line: parses arguments, calls the library, prints.
//!
//! Exit status: 0 on success, 2 for bad input (files, syntax, names, arguments),
//! 1 for a failure while running (a non-finite value, a model outside its domain).

use anyhow::Result;
use clap::{Parser, Subcommand, ValueEnum};
use hasme::escape::{EscapeConfig, EscapeError, escape_with_progress};
use hasme::experiment::WeakOrderError;
use hasme::inspect::{CheckSummary, DeriveReport, ModelRequest};
use hasme::models::matrix_free::{KrylovOptions, LinearAlgebra};
use hasme::models::{ModelOptions, PsdPolicy};
use hasme::moments::{self, MomentsConfig, MomentsError};
use hasme::options;
use hasme::output::{self, OutputError};
use hasme::problem::StartPoint;
use hasme::report::ReportError;
use hasme::shard::{Ledger, Part, RunKey, Shard, ShardError};
use hasme::sim::{SimConfig, SimError, simulate_with_progress};
use hasme::stationary::{StationaryConfig, StationaryError, Stop, find_stationary};
use hasme::{ErrorKind, Overrides, Problem, ProblemError};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(
    name = "hasme",
    version,
    about = "SGD and its stochastic modified equations (GF, SME-1, SME-2, HA-SME)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check an objective file and summarise it.
    Check {
        /// The objective file (.hasme).
        file: PathBuf,
        #[command(flatten)]
        problem: ProblemArgs,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Print f, ∇f, ∇²f, Σ and the observables at a point; with --eta, each model's
    /// drift and diffusion.
    Derive {
        /// The objective file (.hasme).
        file: PathBuf,
        /// The point, e.g. x=0.1,y=2 (default: the start point; unnamed variables keep
        /// their start values).
        #[arg(long, value_name = "x=..,y=..", allow_hyphen_values = true)]
        at: Option<String>,
        #[command(flatten)]
        problem: ProblemArgs,
        /// Step size η: adds every requested model's drift and diffusion.
        #[arg(long)]
        eta: Option<f64>,
        /// Models to show (gf, sme1, sme2, hasme, hasme-exact, series:K, or all);
        /// repeatable or comma-separated. Default with --eta: all.
        #[arg(long = "model", value_delimiter = ',', value_name = "NAME")]
        model: Vec<String>,
        /// Print the first K terms of the drift and diffusion series (needs --eta).
        #[arg(long, value_name = "K")]
        series: Option<usize>,
        /// What to do with a Σ or Γ that is not positive semidefinite.
        #[arg(long, value_enum, default_value_t = Psd::Error)]
        psd: Psd,
        /// How sme2 and hasme use the Hessian: dense (the d×d matrix and its
        /// eigendecomposition) or krylov (Hessian-vector products and Lanczos; gf,
        /// sme1, sme2 and hasme only). Default: dense up to 24 variables, krylov above.
        #[arg(long, value_enum, value_name = "KIND")]
        linear_algebra: Option<LinearAlgebraArg>,
        /// Relative tolerance of the Lanczos runs, in (0, 1) (default 1e-10).
        #[arg(long, value_name = "T", allow_hyphen_values = true)]
        krylov_tol: Option<f64>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Exact Gaussian moments of SGD and each model on a quadratic with constant noise:
    /// mean error, relative covariance error and W2 distance to SGD at t = kη.
    Moments(MomentsArgs),
    /// Monte Carlo: SGD and each SDE model simulated side by side, coupled and
    /// reproducible; means, standard errors and coupled differences at t = kη.
    Simulate(SimulateArgs),
    /// Escape times from a saddle or sharp minimum: SGD against each model, read at
    /// t = kη, coupled; censored at the cap (Kaplan–Meier), KS distance to SGD.
    Escape(EscapeArgs),
    /// Weak error |E φ(x_N) − E φ(X_T)| of each model over a grid of η, with 95% CIs,
    /// an integration check, the fitted order in η and (with --sweep) the error constant
    /// against a param.
    WeakOrder(WeakOrderArgs),
    /// Run everything that fits the problem (check, derive, moments, weak order,
    /// escape) and write one self-contained HTML page plus the JSON of every part.
    Report(ReportArgs),
    /// Find a stationary point from the start: Newton's method on ∇f = 0 (any kind) or
    /// gradient descent (a minimum); the point, f, ‖∇f‖, the Hessian's eigenvalues,
    /// index and kind. Its JSON is a --start file.
    Stationary(StationaryArgs),
    /// Merge the parts of a run computed in shards (`--shard K/N` of simulate,
    /// weak-order or escape): check they are of one run and cover it, and print what
    /// the single run prints.
    Merge(MergeArgs),
}

#[derive(clap::Args)]
struct MergeArgs {
    /// The parts, in any order: the outputs of `--shard K/N` (or their checkpoints).
    #[arg(required = true, value_name = "PART")]
    parts: Vec<PathBuf>,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
    /// Write the output to PATH instead of stdout (`-`: stdout).
    #[arg(long, value_name = "PATH")]
    out: Option<PathBuf>,
}

#[derive(clap::Args)]
struct StationaryArgs {
    /// The objective file (.hasme).
    file: PathBuf,
    /// newton (Newton on ∇f = 0 with a line search on ‖∇f‖²: minima, saddles, maxima)
    /// or gd (gradient descent with a line search on f: a minimum).
    #[arg(long, default_value = "newton")]
    method: String,
    /// Stop when ‖∇f‖ ≤ ε (default: 1e-10·max(1, ‖∇f‖ at the start)).
    #[arg(long, value_name = "ε", allow_hyphen_values = true)]
    tol: Option<f64>,
    /// Iteration limit (default: 500 for newton, 100000 for gd); 0 classifies the
    /// start point.
    #[arg(long, value_name = "N")]
    max_iter: Option<usize>,
    #[command(flatten)]
    problem: ProblemArgs,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
    /// Write the output to PATH instead of stdout (`-`: stdout; see "Output files" in
    /// docs/commands.md); nothing is written to a file when the search does not converge.
    #[arg(long, value_name = "PATH")]
    out: Option<PathBuf>,
}

#[derive(clap::Args)]
struct ReportArgs {
    /// The objective file (.hasme); default: the bundled example `examples/report.hasme`.
    file: Option<PathBuf>,
    /// Step size η (default: min(0.1, 0.25/|λ|max of ∇²f at the start point)).
    #[arg(long, allow_hyphen_values = true)]
    eta: Option<f64>,
    /// The directory for report.html and the JSON parts.
    #[arg(long, value_name = "DIR", default_value = "hasme-report")]
    out: PathBuf,
    /// Seconds instead of a minute: few paths, two η levels.
    #[arg(long)]
    quick: bool,
    /// Seed of the random streams.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Worker threads (default: all cores). The numbers do not depend on it.
    #[arg(long)]
    threads: Option<usize>,
    #[command(flatten)]
    problem: ProblemArgs,
    /// No progress bars.
    #[arg(long)]
    quiet: bool,
}

/// The bundled example of `hasme report`.
const REPORT_EXAMPLE: &str = include_str!("../examples/report.hasme");

/// The flags that pick the problem a command runs on, besides its file: params, the
/// draw of the random start values, a start file. Every command takes them.
#[derive(clap::Args)]
struct ProblemArgs {
    /// Override a param: NAME=VALUE (repeatable).
    #[arg(long = "set", value_name = "NAME=VALUE")]
    set: Vec<String>,
    /// Seed of the random start values (`var w ~ normal(0, 1)`).
    #[arg(long, default_value_t = 0, value_name = "S")]
    init_seed: u64,
    /// Start at the point in FILE.json (`variables` and `point`, as `derive --json`
    /// and `stationary --json` write them) instead of the file's start values and
    /// random draws.
    #[arg(long, value_name = "FILE.json")]
    start: Option<PathBuf>,
}

impl ProblemArgs {
    /// The `--set NAME=VALUE` items, the `--init-seed` and the `--start` file.
    fn overrides(&self) -> Result<Overrides, ProblemError> {
        let overrides = Overrides::parse(&self.set)?.init_seed(self.init_seed);
        Ok(match &self.start {
            Some(path) => overrides.start(StartPoint::from_file(path)?),
            None => overrides,
        })
    }
}

/// Flags shared by the Monte Carlo commands (`simulate`, `weak-order`, `escape`).
#[derive(clap::Args)]
struct RunArgs {
    /// Seed of the random streams.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Worker threads (default: all cores), all busy even with few paths. The numbers
    /// do not depend on it.
    #[arg(long)]
    threads: Option<usize>,
    #[command(flatten)]
    problem: ProblemArgs,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
    /// Write the output to PATH instead of stdout (`-`: stdout). A file is replaced
    /// atomically, a link written through, a device or FIFO written as it is.
    #[arg(long, value_name = "PATH")]
    out: Option<PathBuf>,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
    /// Compute only shard K of N (K = 0 … N−1, as SLURM_ARRAY_TASK_ID) of the path
    /// chunks and write a part (JSON) for `hasme merge` instead of the report.
    #[arg(long, value_name = "K/N")]
    shard: Option<String>,
    /// Save the finished chunks to PATH as the run goes (every few seconds, and on
    /// SIGINT or SIGTERM); the same command with the same PATH resumes from them.
    #[arg(long, value_name = "PATH")]
    checkpoint: Option<PathBuf>,
}

impl RunArgs {
    /// The settings of a merge: its output form and target, no shard or checkpoint.
    fn for_merge(&mut self, merge: &MergeArgs) {
        self.json = merge.json;
        self.out = merge.out.clone();
        self.quiet = true;
        self.shard = None;
        self.checkpoint = None;
    }

    /// `--set`, `--init-seed` and `--start`.
    fn overrides(&self) -> Result<Overrides, ProblemError> {
        self.problem.overrides()
    }

    /// `--threads`, defaulting to every core.
    fn threads(&self) -> usize {
        options::threads(self.threads)
    }

    /// `--out`, unless it is absent or `-` (standard output).
    fn out_file(&self) -> Option<&PathBuf> {
        self.out.as_ref().filter(|p| !is_stdout(p))
    }

    /// Prints `text`, or writes it to `--out`.
    fn deliver(&self, text: &str) -> Result<()> {
        deliver(self.out.as_ref(), text)
    }
}

#[derive(clap::Args)]
struct MomentsArgs {
    /// The objective file (.hasme): quadratic, with constant noise.
    file: PathBuf,
    /// Step size η.
    #[arg(long, allow_hyphen_values = true)]
    eta: f64,
    /// Number of SGD steps.
    #[arg(long)]
    steps: usize,
    /// Report every N-th step (and always step 0 and the last). Default: ⌈steps/200⌉.
    #[arg(long, value_name = "N")]
    every: Option<usize>,
    /// Models to compare (gf, sme1, sme2, hasme, hasme-exact, series:K, or all);
    /// repeatable or comma-separated. Default: all.
    #[arg(
        long = "models",
        visible_alias = "model",
        value_delimiter = ',',
        value_name = "NAME"
    )]
    models: Vec<String>,
    #[command(flatten)]
    problem: ProblemArgs,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
    /// Also write the comparison as CSV (one row per step and model) to PATH.
    #[arg(long, value_name = "PATH")]
    csv: Option<PathBuf>,
    /// Also write a plot of W2 against t (SVG) to PATH.
    #[arg(long, value_name = "PATH.svg")]
    plot: Option<PathBuf>,
}

#[derive(clap::Args)]
struct SimulateArgs {
    /// The objective file (.hasme).
    file: PathBuf,
    /// SGD step size η.
    #[arg(long, allow_hyphen_values = true)]
    eta: f64,
    /// Horizon T, a multiple of η.
    #[arg(long, allow_hyphen_values = true)]
    horizon: f64,
    /// Number of paths.
    #[arg(long, default_value_t = 10_000)]
    paths: u64,
    /// Models to simulate beside SGD (gf, sme1, sme2, hasme, hasme-exact, series:K, or
    /// all); repeatable or comma-separated. Default: all.
    #[arg(
        long = "models",
        visible_alias = "model",
        value_delimiter = ',',
        value_name = "NAME"
    )]
    models: Vec<String>,
    /// SDE substeps per SGD step.
    #[arg(long, default_value_t = 8)]
    substeps: usize,
    /// Integrator: talay-tubaro (weak order 2) or em (Euler–Maruyama, weak order 1).
    #[arg(long, default_value = "talay-tubaro")]
    scheme: String,
    /// coupled (common random numbers with SGD; the default) or independent. Finite
    /// sums (minibatch SGD) are always independent.
    #[arg(long)]
    coupling: Option<String>,
    /// Save every K-th SGD step (the horizon is always saved).
    #[arg(long, default_value_t = 1, value_name = "K")]
    every: u64,
    /// Paths handed to the threads at a time, rounded up to whole chunks of 256 (memory
    /// bound). The numbers do not depend on it.
    #[arg(long, hide = true)]
    batch: Option<u64>,
    /// Finite sums: SGD's noise, minibatch (real minibatches, the default) or gaussian
    /// (Gaussian noise of the exact minibatch covariance, coupled to the SDEs).
    #[arg(long, value_enum, value_name = "KIND")]
    sgd_noise: Option<SgdNoiseArg>,
    #[command(flatten)]
    coefficients: CoefficientArgs,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum SgdNoiseArg {
    /// Real minibatches of the finite sum.
    Minibatch,
    /// Gaussian noise of the exact minibatch covariance Σ(x).
    Gaussian,
}

#[derive(clap::Args)]
struct WeakOrderArgs {
    /// The objective file (.hasme).
    file: PathBuf,
    /// Step sizes, comma-separated (e.g. 0.2,0.1,0.05,0.025).
    #[arg(long, value_delimiter = ',', value_name = "η,…", conflicts_with_all = ["eta_max", "levels"])]
    etas: Vec<f64>,
    /// Largest step size of a halving grid (with --levels).
    #[arg(
        long,
        value_name = "η",
        requires = "levels",
        allow_hyphen_values = true
    )]
    eta_max: Option<f64>,
    /// Number of step sizes of the halving grid (with --eta-max).
    #[arg(long, value_name = "K", requires = "eta_max")]
    levels: Option<usize>,
    /// Horizon T, a multiple of every η.
    #[arg(long, allow_hyphen_values = true)]
    horizon: f64,
    /// Paths per simulation.
    #[arg(long, default_value_t = 10_000)]
    paths: u64,
    /// Models (default: sme1, sme2, hasme, hasme-exact); repeatable or comma-separated.
    #[arg(
        long = "models",
        visible_alias = "model",
        value_delimiter = ',',
        value_name = "NAME"
    )]
    models: Vec<String>,
    /// Observables (default: all of the file's); repeatable or comma-separated.
    #[arg(long = "observables", value_delimiter = ',', value_name = "NAME")]
    observables: Vec<String>,
    /// SDE substeps per SGD step (the integration check reruns at half, or double when
    /// odd).
    #[arg(long, default_value_t = 8)]
    substeps: usize,
    /// Integrator: talay-tubaro (weak order 2) or em (Euler–Maruyama, weak order 1).
    #[arg(long, default_value = "talay-tubaro")]
    scheme: String,
    /// Skip the integration check (a rerun at the other substep count on an eighth of
    /// the paths; the report then cannot say the integration error is negligible).
    #[arg(long)]
    no_integration_check: bool,
    /// Finite sums: paths of each SGD-only run of the split estimator (minibatch SGD
    /// and its Gaussian surrogate). Default: 16 × --paths.
    #[arg(long, value_name = "N")]
    sgd_paths: Option<u64>,
    /// Finite sums: the SGD the error is measured against, minibatch (real minibatches,
    /// the default: the split estimator) or gaussian (Gaussian noise of the exact
    /// minibatch covariance, coupled to the SDEs: no SGD-only runs).
    #[arg(long, value_enum, value_name = "KIND")]
    sgd_noise: Option<SgdNoiseArg>,
    #[command(flatten)]
    coefficients: CoefficientArgs,
    /// Rerun the analysis with a param varied: NAME=v1,v2,…
    #[arg(long, value_name = "NAME=v1,v2,…")]
    sweep: Option<String>,
    /// How to compute the expectations: monte-carlo (coupled paths, any dimension) or
    /// quadrature (deterministic, one or two variables; --paths, --seed, --substeps,
    /// --scheme and the integration check do not apply).
    #[arg(long, default_value = "monte-carlo", value_name = "METHOD")]
    method: String,
    /// Quadrature: the target absolute accuracy of each expectation.
    #[arg(long, default_value_t = hasme::experiment::DEFAULT_TOLERANCE, value_name = "TOL")]
    tolerance: f64,
    /// Also write a log-log plot of the errors with 95% bars (SVG) to PATH (`-`: stdout,
    /// when --out sends the text or JSON to a file).
    #[arg(long, value_name = "PATH.svg")]
    plot: Option<PathBuf>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(clap::Args)]
struct EscapeArgs {
    /// The objective file (.hasme).
    file: PathBuf,
    /// SGD step size η.
    #[arg(long, allow_hyphen_values = true)]
    eta: f64,
    /// Escape when ‖x − centre‖ > R.
    #[arg(long, allow_hyphen_values = true, value_name = "R")]
    radius: Option<f64>,
    /// The ball's centre: NAME=VALUE assignments, e.g. x=0,y=0 (default: the start
    /// point; unnamed variables keep their start values).
    #[arg(
        long,
        visible_alias = "center",
        value_name = "x=..,y=..",
        allow_hyphen_values = true
    )]
    centre: Option<String>,
    /// Escape when EXPR > 0 (an expression over the file's variables, params and lets),
    /// instead of a ball.
    #[arg(long, value_name = "EXPR", allow_hyphen_values = true)]
    when: Option<String>,
    /// The cap K on SGD steps: paths still inside are censored at t = Kη.
    #[arg(long, default_value_t = 100_000, value_name = "K")]
    max_steps: u64,
    /// Number of paths.
    #[arg(long, default_value_t = 1000)]
    paths: u64,
    /// Models simulated beside SGD (gf, sme1, sme2, hasme, hasme-exact, series:K, or
    /// all); repeatable or comma-separated. Default: all.
    #[arg(
        long = "models",
        visible_alias = "model",
        value_delimiter = ',',
        value_name = "NAME"
    )]
    models: Vec<String>,
    /// Euler–Maruyama substeps per SGD step (default 32: at 8 the first-order bias in
    /// HA-SME's growth rate is detectable against SGD with a few thousand paths).
    #[arg(long, default_value_t = 32)]
    substeps: usize,
    /// coupled (common random numbers with SGD; the default) or independent. Finite
    /// sums (minibatch SGD) are always independent.
    #[arg(long)]
    coupling: Option<String>,
    #[command(flatten)]
    coefficients: CoefficientArgs,
    /// Also write the survival curves (SVG) to PATH (`-`: stdout, when --out sends the
    /// text or JSON to a file).
    #[arg(long, value_name = "PATH.svg")]
    plot: Option<PathBuf>,
    #[command(flatten)]
    run: RunArgs,
}

/// How the models of a run use the Hessian (`simulate`, `weak-order`, `escape`).
#[derive(clap::Args)]
struct CoefficientArgs {
    /// How sme2 and hasme use the Hessian: dense (the d×d matrix and its
    /// eigendecomposition) or krylov (Hessian-vector products and Lanczos, no d×d
    /// matrix; gf, sme1, sme2 and hasme only; a finite sum's noise then enters by the
    /// factor of Σ over its rows). Default: krylov above 24 variables when every model
    /// has a matrix-free form, dense otherwise.
    #[arg(long, value_enum, value_name = "KIND")]
    linear_algebra: Option<LinearAlgebraArg>,
    /// Relative tolerance of the Lanczos runs, in (0, 1) (default 1e-10).
    #[arg(long, value_name = "T", allow_hyphen_values = true)]
    krylov_tol: Option<f64>,
}

impl CoefficientArgs {
    /// The choice asked for (`None`: the size rule) and the Lanczos settings.
    fn resolve(&self) -> Result<(Option<LinearAlgebra>, KrylovOptions), ProblemError> {
        let la = self.linear_algebra.map(LinearAlgebraArg::kind);
        Ok((la, options::krylov_options(la, self.krylov_tol)?))
    }
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum LinearAlgebraArg {
    /// The d×d Hessian and its eigendecomposition.
    Dense,
    /// Hessian-vector products and Lanczos, no d×d Hessian.
    Krylov,
}

impl LinearAlgebraArg {
    fn kind(self) -> LinearAlgebra {
        match self {
            LinearAlgebraArg::Dense => LinearAlgebra::Dense,
            LinearAlgebraArg::Krylov => LinearAlgebra::Krylov,
        }
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum Psd {
    /// Fail with the smallest eigenvalue and the point.
    Error,
    /// Continue with the nearest PSD matrix, with a warning.
    Clip,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(err) => {
            let code = exit_status(&err);
            let text = err.to_string();
            if text.contains(": error: ") {
                eprintln!("{text}");
            } else {
                eprintln!("error: {text}");
            }
            ExitCode::from(code)
        }
    }
}

/// The exit status of a failed command: 2 for bad input (files, syntax, names,
/// arguments), 1 for a failure while running. Errors that are not the library's (the
/// argument parser's, the plot's, a write to stdout) count as bad input.
fn exit_status(err: &anyhow::Error) -> u8 {
    let kind = if let Some(e) = err.downcast_ref::<ProblemError>() {
        e.kind()
    } else if let Some(e) = err.downcast_ref::<MomentsError>() {
        e.kind()
    } else if let Some(e) = err.downcast_ref::<OutputError>() {
        e.kind()
    } else if let Some(e) = err.downcast_ref::<SimError>() {
        e.kind()
    } else if let Some(e) = err.downcast_ref::<EscapeError>() {
        e.kind()
    } else if let Some(e) = err.downcast_ref::<WeakOrderError>() {
        e.kind()
    } else if let Some(e) = err.downcast_ref::<ReportError>() {
        e.kind()
    } else if let Some(e) = err.downcast_ref::<StationaryError>() {
        e.kind()
    } else if let Some(e) = err.downcast_ref::<ShardError>() {
        e.kind()
    } else {
        ErrorKind::Input
    };
    match kind {
        ErrorKind::Input => 2,
        ErrorKind::Run => 1,
    }
}

/// Writes to stdout. A closed pipe (`hasme … | head`) ends the program quietly rather
/// than panicking.
fn emit(text: &str) -> Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(0),
        r => Ok(r?),
    }
}

/// Whether an output path is `-`, standard output.
fn is_stdout(path: &Path) -> bool {
    path.as_os_str() == "-"
}

/// Prints `text` (no path, or `-`), or writes it to the file `path` through
/// `output::write_atomic`, which never replaces a device, a FIFO or a link.
fn deliver(path: Option<&PathBuf>, text: &str) -> Result<()> {
    match path {
        Some(path) if !is_stdout(path) => Ok(output::write_atomic(path, text.as_bytes())?),
        _ => emit(text),
    }
}

fn print_json(value: &impl serde::Serialize) -> Result<()> {
    emit(&options::json(value)?)
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Check {
            file,
            problem: which,
            json,
        } => {
            let problem = Problem::from_file(&file, &which.overrides()?)?;
            let summary = CheckSummary::new(&problem);
            if json {
                print_json(&summary)?;
            } else {
                emit(&format!("{summary}\n"))?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Derive {
            file,
            at,
            problem: which,
            eta,
            model,
            series,
            psd,
            linear_algebra,
            krylov_tol,
            json,
        } => {
            let problem = Problem::from_file(&file, &which.overrides()?)?;
            let x = problem.point_from_assignments(at.as_deref().unwrap_or(""))?;
            let mut report = DeriveReport::new(&problem, &x)?;
            let mut failed = false;
            if eta.is_none()
                && (!model.is_empty()
                    || series.is_some()
                    || linear_algebra.is_some()
                    || krylov_tol.is_some())
            {
                return Err(ProblemError::Usage(
                    "--model, --series, --linear-algebra and --krylov-tol need a step size: add --eta"
                        .to_string(),
                )
                .into());
            }
            let linear_algebra = linear_algebra.map(LinearAlgebraArg::kind);
            if let Some(eta) = eta {
                if !(eta.is_finite() && eta > 0.0) {
                    return Err(ProblemError::Usage(format!(
                        "--eta must be a finite number > 0, got {eta}"
                    ))
                    .into());
                }
                let (models, krylov) =
                    options::derive_models(&model, series, linear_algebra, krylov_tol)?;
                let request = ModelRequest {
                    eta,
                    models,
                    series_terms: series.unwrap_or(0),
                    options: ModelOptions {
                        psd: match psd {
                            Psd::Error => PsdPolicy::Error,
                            Psd::Clip => PsdPolicy::Clip,
                        },
                    },
                    linear_algebra,
                    krylov,
                };
                let failures = report.add_models(&problem, &request)?;
                for (kind, err) in &failures {
                    eprintln!("error: model `{kind}`: {err}");
                }
                failed = !failures.is_empty();
            }
            if json {
                print_json(&report)?;
            } else {
                emit(&format!("{report}\n"))?;
            }
            Ok(if failed {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            })
        }
        Command::Moments(args) => run_moments(args),
        Command::Simulate(args) => run_simulate(args, None),
        Command::Escape(args) => run_escape(args, None),
        Command::WeakOrder(args) => run_weak_order(args, None),
        Command::Report(args) => run_report(args),
        Command::Stationary(args) => run_stationary(args),
        Command::Merge(args) => run_merge(args),
    }
}

// ---------------------------------------------------------------------------------------
// Shards, checkpoints and merges: the library keeps the chunk summaries in a `Ledger`;
// which run it is, where its parts go and the signals are the CLI's business.

/// How a Monte Carlo command runs: whole (no ledger), as a shard (its part is the
/// output), with a checkpoint, or replayed from parts by `merge`.
struct Pieces {
    ledger: Option<Ledger>,
    shard: bool,
}

/// Flags that do not change the numbers, left out of a run's key (with a value, then
/// without).
const NOT_THE_RUN: [&str; 6] = [
    "--shard",
    "--checkpoint",
    "--out",
    "--threads",
    "--plot",
    "--batch",
];
const NOT_THE_RUN_FLAGS: [&str; 2] = ["--json", "--quiet"];

/// The command's arguments (after its name) that define the run.
fn run_args() -> Vec<String> {
    let mut kept = Vec::new();
    let mut args = std::env::args_os()
        .skip(2)
        .map(|a| a.to_string_lossy().into_owned());
    while let Some(a) = args.next() {
        if NOT_THE_RUN.contains(&a.as_str()) {
            args.next();
        } else if !(NOT_THE_RUN_FLAGS.contains(&a.as_str())
            || NOT_THE_RUN
                .iter()
                .any(|f| a.starts_with(f) && a[f.len()..].starts_with('=')))
        {
            kept.push(a);
        }
    }
    kept
}

/// The digest of the files a problem was read from: the objective file, its data
/// files, the start file.
fn files_digest(file: &Path, problem: &Problem, run: &RunArgs) -> Result<String, ShardError> {
    let mut files = vec![file.to_path_buf()];
    files.extend(problem.data_files().iter().map(PathBuf::from));
    files.extend(run.problem.start.clone());
    hasme::shard::digest(&files)
}

/// Sets up the ledger of a shard, a checkpoint or a merge (`replay`), after checking
/// that the files are those of the parts or the checkpoint.
fn pieces(
    command: &str,
    file: &Path,
    problem: &Problem,
    run: &RunArgs,
    plot: Option<&PathBuf>,
    replay: Option<Ledger>,
) -> Result<Pieces> {
    let input = |m: String| anyhow::Error::from(ShardError::Input(m));
    if let Some(ledger) = replay {
        if files_digest(file, problem, run)? != ledger.part().key.digest {
            return Err(input(format!(
                "`{}` or its data or start file has changed since the parts were computed (their digests differ): merge against the files the shards read",
                file.display()
            )));
        }
        return Ok(Pieces {
            ledger: Some(ledger),
            shard: false,
        });
    }
    if run.shard.is_none() && run.checkpoint.is_none() {
        return Ok(Pieces {
            ledger: None,
            shard: false,
        });
    }
    let shard = match &run.shard {
        Some(text) => {
            if run.json {
                return Err(input(
                    "--json: a shard writes a part (always JSON), not the report; choose text or JSON when merging (`hasme merge --json`)".into(),
                ));
            }
            if plot.is_some() {
                return Err(input(
                    "--plot: a shard has no report to plot; run the whole command for a plot"
                        .into(),
                ));
            }
            text.parse::<Shard>()?
        }
        None => Shard::WHOLE,
    };
    let key = RunKey {
        hasme: env!("CARGO_PKG_VERSION").to_string(),
        command: command.to_string(),
        args: run_args(),
        digest: files_digest(file, problem, run)?,
    };
    let mut part = Part::new(key.clone(), shard);
    if let Some(path) = &run.checkpoint {
        output::check_target(path)?;
        if path.is_file() {
            let name = path.display().to_string();
            let text = std::fs::read_to_string(path)
                .map_err(|e| input(format!("cannot read the checkpoint `{name}`: {e}")))?;
            let saved = Part::from_json(&text, &name)?;
            let diff = key.difference(&saved.key).or_else(|| {
                (saved.shard != shard)
                    .then(|| format!("of shard {} instead of {shard}", saved.shard))
            });
            if let Some(diff) = diff {
                return Err(input(format!(
                    "`{name}` is a checkpoint of another run: it is {diff}; give another --checkpoint file, or delete it to start afresh"
                )));
            }
            part = saved;
        }
    }
    let ledger = Ledger::compute(part, run.checkpoint.clone());
    if run.checkpoint.is_some() {
        stop_on_signals(&ledger)?;
    }
    Ok(Pieces {
        ledger: Some(ledger),
        shard: run.shard.is_some(),
    })
}

/// SIGINT and SIGTERM ask the run to stop (the engine hands out no more paths, the
/// chunks done are saved); a second one ends the process at once.
fn stop_on_signals(ledger: &Ledger) -> Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let asked = std::sync::Arc::new(AtomicBool::new(false));
    for signal in [SIGINT, SIGTERM] {
        signal_hook::flag::register_conditional_shutdown(
            signal,
            128 + signal,
            std::sync::Arc::clone(&asked),
        )?;
        signal_hook::flag::register(signal, std::sync::Arc::clone(&asked))?;
        signal_hook::flag::register_usize(signal, ledger.stop_flag(), signal as usize)?;
    }
    Ok(())
}

/// After the library call (`ok`: it succeeded): saves the checkpoint, and ends the
/// command when the run stopped (exit 128 + the signal) or was a shard (its part is
/// the output). `None`: print the report as usual.
fn settle(pieces: &Pieces, run: &RunArgs, ok: bool) -> Result<Option<ExitCode>> {
    let Some(ledger) = &pieces.ledger else {
        return Ok(None);
    };
    let saved = ledger.save();
    if !ok {
        return Ok(None);
    }
    if let Some(e) = ledger.take_error() {
        return Err(e.into());
    }
    saved?;
    if let Some(signal) = ledger.stopped() {
        let name = match signal as i32 {
            signal_hook::consts::SIGINT => "SIGINT",
            signal_hook::consts::SIGTERM => "SIGTERM",
            _ => "a signal",
        };
        let path = ledger
            .checkpoint()
            .map_or(String::new(), |p| p.display().to_string());
        eprintln!(
            "interrupted by {name}: {} finished chunks of paths are saved in `{path}`; run the same command again to resume",
            ledger.part().chunks_done()
        );
        return Ok(Some(ExitCode::from((128 + signal).min(255) as u8)));
    }
    if pieces.shard {
        deliver(run.out.as_ref(), &ledger.part().to_json())?;
        return Ok(Some(ExitCode::SUCCESS));
    }
    Ok(None)
}

fn run_merge(args: MergeArgs) -> Result<ExitCode> {
    let mut parts = Vec::new();
    let mut names = Vec::new();
    for path in &args.parts {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|e| ShardError::Input(format!("cannot read the part `{name}`: {e}")))?;
        parts.push(Part::from_json(&text, &name)?);
        names.push(name);
    }
    let ledger = Ledger::replay(parts, &names)?;
    let key = ledger.part().key;
    let version = env!("CARGO_PKG_VERSION");
    if key.hasme != version {
        return Err(ShardError::Input(format!(
            "the parts were computed by hasme {}, this is {version}: merge them with the version that computed them",
            key.hasme
        ))
        .into());
    }
    let argv = ["hasme".to_string(), key.command.clone()]
        .into_iter()
        .chain(key.args.iter().cloned());
    let cli = Cli::try_parse_from(argv).map_err(|e| {
        ShardError::Input(format!(
            "the parts' command line `{} {}` does not parse: {e}",
            key.command,
            key.args.join(" ")
        ))
    })?;
    match cli.command {
        Command::Simulate(mut a) => {
            a.run.for_merge(&args);
            run_simulate(a, Some(ledger))
        }
        Command::WeakOrder(mut a) => {
            a.run.for_merge(&args);
            a.plot = None;
            run_weak_order(a, Some(ledger))
        }
        Command::Escape(mut a) => {
            a.run.for_merge(&args);
            a.plot = None;
            run_escape(a, Some(ledger))
        }
        _ => Err(ShardError::Input(format!(
            "parts of `{}`: only simulate, weak-order and escape run in shards",
            key.command
        ))
        .into()),
    }
}

/// One progress bar per stage of `hasme report`, with the stage's name.
struct StageBars {
    quiet: bool,
    bar: std::sync::Mutex<Option<PathProgress>>,
}

impl hasme::report::Progress for StageBars {
    fn stage(&self, name: &str, total: u64) {
        if !self.quiet {
            eprintln!("report: {name}");
        }
        if let Ok(mut b) = self.bar.lock() {
            *b = Some(PathProgress::stderr(total.max(1), self.quiet));
        }
    }
    fn inc(&self, n: u64) {
        if let Ok(b) = self.bar.lock()
            && let Some(b) = b.as_ref()
        {
            b.inc(n);
        }
    }
    fn finish(&self) {
        if let Ok(mut b) = self.bar.lock()
            && let Some(b) = b.take()
        {
            b.finish();
        }
    }
}

/// `hasme report`: builds the problem (the bundled example without FILE), runs the
/// library's report, prints the summary and the page's path.
fn run_report(args: ReportArgs) -> Result<ExitCode> {
    use hasme::lang::Source;
    use hasme::report::{ReportConfig, run_report};
    if is_stdout(&args.out) {
        return Err(ProblemError::Usage(
            "--out -: a report is a directory of files, which standard output cannot hold; give a directory".into(),
        )
        .into());
    }
    let overrides = args.problem.overrides()?;
    let (problem, label) = match &args.file {
        Some(path) => (
            Problem::from_file(path, &overrides)?,
            path.display().to_string(),
        ),
        None => (
            Problem::from_source(
                Source::new("examples/report.hasme", REPORT_EXAMPLE),
                &overrides,
            )?,
            "examples/report.hasme".to_string(),
        ),
    };
    let config = ReportConfig::builder(&args.out)
        .eta(args.eta)
        .quick(args.quick)
        .seed(args.seed)
        .threads(options::threads(args.threads))
        .file_label(Some(label))
        .set(args.problem.set.clone())
        .build()?;
    let bars = StageBars {
        quiet: args.quiet,
        bar: std::sync::Mutex::new(None),
    };
    let report = run_report(&problem, &overrides, &config, &bars)?;
    emit(&format!(
        "{}  page: {}\n",
        report.summary(),
        report.files[0].display()
    ))?;
    Ok(ExitCode::SUCCESS)
}

/// `hasme moments`: checks the output paths first (so a typo fails before the work),
/// compares, writes the files, prints; exit 1 when a model failed.
fn run_moments(args: MomentsArgs) -> Result<ExitCode> {
    let problem = Problem::from_file(&args.file, &args.problem.overrides()?)?;
    let mut config = MomentsConfig::new(args.eta, args.steps)?;
    if let Some(every) = args.every {
        config = config.with_every(every)?;
    }
    config = config.with_models(options::models(&args.models)?)?;
    check_outputs(
        None,
        "the comparison, which moments always prints",
        &[("--csv", args.csv.as_ref()), ("--plot", args.plot.as_ref())],
    )?;
    let report = moments::compare(&problem, &config)?;
    for (kind, err) in report.failures() {
        eprintln!("error: model `{kind}`: {err}");
    }
    if let Some(path) = &args.csv {
        deliver(Some(path), &report.to_csv())?;
    }
    if let Some(path) = &args.plot {
        deliver(Some(path), &report.w2_plot().to_svg()?)?;
    }
    if args.json {
        print_json(&report)?;
    } else {
        emit(&format!("{report}"))?;
    }
    Ok(if report.failures().is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Checks the outputs of a command before any work. `out` is `--out`; without it the
/// command prints `printed` (what its text or JSON is called in a message) to standard
/// output. `also` are the other outputs by flag (`--csv`, `--plot`). Standard output
/// (`-`) carries one output at most; a `--plot` file must be an SVG file; every file
/// must be writable (`output::check_target`: not a directory, its directory there, its
/// links ending).
fn check_outputs(
    out: Option<&PathBuf>,
    printed: &str,
    also: &[(&str, Option<&PathBuf>)],
) -> Result<()> {
    let usage = |m: String| anyhow::Error::from(ProblemError::Usage(m));
    let mut on_stdout = match out {
        Some(path) if !is_stdout(path) => {
            output::check_target(path)?;
            None
        }
        Some(_) => Some("`--out -`".to_string()),
        None => Some(printed.to_string()),
    };
    for &(flag, path) in also {
        let Some(path) = path else { continue };
        if is_stdout(path) {
            if let Some(holder) = &on_stdout {
                return Err(usage(format!(
                    "`{flag} -`: standard output is already taken by {holder}"
                )));
            }
            on_stdout = Some(format!("`{flag} -`"));
            continue;
        }
        let svg = path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("svg"));
        if flag == "--plot" && !svg {
            return Err(usage(format!(
                "--plot `{}`: only SVG plots are supported; use a .svg file name",
                path.display()
            )));
        }
        output::check_target(path)?;
    }
    Ok(())
}

/// What `simulate`, `weak-order`, `escape` and `stationary` print without `--out`, for a message.
const PRINTED: &str = "the text or JSON (send it to a file with --out PATH)";

/// `hasme simulate`: checks the output path first, simulates with a progress bar,
/// prints (or writes to `--out`) text or JSON; divergences are reported, not errors.
fn run_simulate(args: SimulateArgs, replay: Option<Ledger>) -> Result<ExitCode> {
    let problem = Problem::from_file(&args.file, &args.run.overrides()?)?;
    check_outputs(args.run.out.as_ref(), PRINTED, &[])?;
    let usage = |m: String| ProblemError::Usage(m);
    let models = options::models(&args.models)?;
    let scheme = args
        .scheme
        .parse()
        .map_err(|m| usage(format!("--scheme: {m}")))?;
    let coupling = options::coupling(
        args.coupling.as_deref(),
        &problem,
        args.sgd_noise == Some(SgdNoiseArg::Gaussian),
    )?;
    let pieces = pieces("simulate", &args.file, &problem, &args.run, None, replay)?;
    let (linear_algebra, krylov) = args.coefficients.resolve()?;
    let config = SimConfig::builder(args.eta, args.horizon, args.paths)
        .models(models)
        .linear_algebra(linear_algebra)
        .krylov(krylov)
        .gaussian_sgd(args.sgd_noise == Some(SgdNoiseArg::Gaussian))
        .substeps(args.substeps)
        .scheme(scheme)
        .coupling(coupling)
        .seed(args.run.seed)
        .every(args.every)
        .threads(args.run.threads())
        .batch(args.batch.unwrap_or(0))
        .ledger(pieces.ledger.clone())
        .build()?;
    let progress = PathProgress::stderr(config.paths(), args.run.quiet);
    let result = simulate_with_progress(&problem, &config, &|n| progress.inc(n));
    progress.finish();
    if let Some(code) = settle(&pieces, &args.run, result.is_ok())? {
        return Ok(code);
    }
    let result = result?;
    let text = if args.run.json {
        options::json_with_file(&result, &args.file.display().to_string())?
    } else {
        format!("{result}\n")
    };
    args.run.deliver(&text)?;
    if result.total_diverged() > 0 && (args.run.json || args.run.out_file().is_some()) {
        for (p, name) in result.processes.iter().enumerate() {
            if let Some(d) = &result.first_divergence[p] {
                eprintln!(
                    "warning: {name} diverged on {} of {} paths (first: path {}, step {}): {}",
                    result.diverged[p], result.paths, d.path, d.step, d.reason
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `hasme weak-order`: checks the output paths first, runs the experiment with a
/// progress bar, writes the plot and the text or JSON (to `--out` if given).
fn run_weak_order(args: WeakOrderArgs, replay: Option<Ledger>) -> Result<ExitCode> {
    use hasme::experiment::{Sweep, WeakOrderConfig, weak_order_with_progress};
    let overrides = args.run.overrides()?;
    let problem = Problem::from_file(&args.file, &overrides)?;
    let usage = |m: String| ProblemError::Usage(m);
    let etas = options::etas(&args.etas, args.eta_max, args.levels)?;
    check_outputs(
        args.run.out.as_ref(),
        PRINTED,
        &[("--plot", args.plot.as_ref())],
    )?;
    let models = if args.models.is_empty() {
        None
    } else {
        Some(options::models(&args.models)?)
    };
    let scheme = args
        .scheme
        .parse()
        .map_err(|m| usage(format!("--scheme: {m}")))?;
    let sweep = match &args.sweep {
        Some(sweep) => Some(Sweep::parse(sweep)?),
        None => None,
    };
    let method: hasme::experiment::Method = args
        .method
        .parse()
        .map_err(|m| usage(format!("--method: {m}")))?;
    if method == hasme::experiment::Method::Quadrature
        && (args.run.shard.is_some() || args.run.checkpoint.is_some())
    {
        return Err(usage(
            "--shard and --checkpoint share out Monte Carlo paths; --method quadrature has none"
                .into(),
        )
        .into());
    }
    let pieces = pieces(
        "weak-order",
        &args.file,
        &problem,
        &args.run,
        args.plot.as_ref(),
        replay,
    )?;
    let (linear_algebra, krylov) = args.coefficients.resolve()?;
    let mut config = WeakOrderConfig::builder(etas, args.horizon, args.paths);
    if let Some(models) = models {
        config.models(models);
    }
    let config = config
        .observables(
            args.observables
                .iter()
                .map(|o| o.trim().to_string())
                .collect(),
        )
        .seed(args.run.seed)
        .substeps(args.substeps)
        .scheme(scheme)
        .integration_check(!args.no_integration_check)
        .sgd_paths(args.sgd_paths.unwrap_or(0))
        .gaussian_sgd(args.sgd_noise == Some(SgdNoiseArg::Gaussian))
        .linear_algebra(linear_algebra)
        .krylov(krylov)
        .method(method)
        .tolerance(args.tolerance)
        .threads(args.run.threads())
        .sweep(sweep)
        .ledger(pieces.ledger.clone())
        .build()?;
    let progress = PathProgress::stderr(config.total_paths(&problem), args.run.quiet);
    let report = weak_order_with_progress(&problem, &overrides, &config, &|n| progress.inc(n));
    progress.finish();
    if let Some(code) = settle(&pieces, &args.run, report.is_ok())? {
        return Ok(code);
    }
    let report = report?;
    if let Some(path) = &args.plot {
        deliver(Some(path), &report.plot().to_svg()?)?;
    }
    let text = if args.run.json {
        options::json_with_file(&report, &args.file.display().to_string())?
    } else {
        format!("{report}")
    };
    args.run.deliver(&text)?;
    if args.run.json || args.run.out_file().is_some() {
        for w in &report.warnings {
            eprintln!("warning: {w}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `hasme escape`: checks the settings and output paths first, simulates with a
/// progress bar, prints (or writes to `--out`) text or JSON, and the survival plot.
fn run_escape(args: EscapeArgs, replay: Option<Ledger>) -> Result<ExitCode> {
    let problem = Problem::from_file(&args.file, &args.run.overrides()?)?;
    let usage = |m: String| ProblemError::Usage(m);
    let centre = args.centre.as_ref().map(|spec| {
        || {
            problem
                .point_from_assignments(spec)
                .map_err(|e| usage(e.to_string().replace("--at", "--centre")))
        }
    });
    let region = options::region(args.radius, centre, args.when.as_deref(), &problem)?;
    check_outputs(
        args.run.out.as_ref(),
        PRINTED,
        &[("--plot", args.plot.as_ref())],
    )?;
    let models = options::models(&args.models)?;
    let coupling = options::coupling(args.coupling.as_deref(), &problem, false)?;
    let pieces = pieces(
        "escape",
        &args.file,
        &problem,
        &args.run,
        args.plot.as_ref(),
        replay,
    )?;
    let (linear_algebra, krylov) = args.coefficients.resolve()?;
    let config = EscapeConfig::builder(args.eta, args.max_steps, args.paths, region)
        .models(models)
        .linear_algebra(linear_algebra)
        .krylov(krylov)
        .substeps(args.substeps)
        .coupling(coupling)
        .seed(args.run.seed)
        .threads(args.run.threads())
        .ledger(pieces.ledger.clone())
        .build()?;
    let progress = PathProgress::stderr(config.paths(), args.run.quiet);
    let report = escape_with_progress(&problem, &config, &|n| progress.inc(n));
    progress.finish();
    if let Some(code) = settle(&pieces, &args.run, report.is_ok())? {
        return Ok(code);
    }
    let report = report?;
    let text = if args.run.json {
        options::json_with_file(&report, &args.file.display().to_string())?
    } else {
        format!("{report}")
    };
    if let Some(path) = &args.plot {
        deliver(Some(path), &report.survival_plot().to_svg()?)?;
    }
    args.run.deliver(&text)?;
    Ok(ExitCode::SUCCESS)
}

fn shortest(x: f64) -> String {
    hasme::format::num(x, hasme::format::Style::Shortest)
}

/// `hasme stationary`: checks the output path first, searches, prints (or writes
/// atomically) text or JSON. A search that does not converge exits 1 with the last
/// ‖∇f‖ on stderr; its report still goes to stdout (the last point, e.g. to continue
/// from with `--start`), but never to `--out`, which only ever holds a stationary point.
fn run_stationary(args: StationaryArgs) -> Result<ExitCode> {
    let problem = Problem::from_file(&args.file, &args.problem.overrides()?)?;
    check_outputs(args.out.as_ref(), PRINTED, &[])?;
    let method = args
        .method
        .parse()
        .map_err(|m| ProblemError::Usage(format!("--method: {m}")))?;
    let config = StationaryConfig::builder()
        .method(method)
        .tolerance(args.tol)
        .max_iter(args.max_iter)
        .build()?;
    let report = find_stationary(&problem, &config)?;
    let text = if args.json {
        options::json(&report)?
    } else {
        format!("{report}\n")
    };
    if report.converged {
        deliver(args.out.as_ref(), &text)?;
        return Ok(ExitCode::SUCCESS);
    }
    // `--out -` is standard output, where a report that is not a stationary point may go.
    let to_file = args.out.as_ref().is_some_and(|p| !is_stdout(p));
    if !to_file {
        emit(&text)?;
    }
    let why = match report.stop {
        Stop::MaxIter => "the iteration limit",
        _ => "stalled: no step lowers the merit",
    };
    eprintln!(
        "error: no stationary point: ‖∇f‖ = {} > {} (the tolerance) after {} {} iterations ({why}){}",
        shortest(report.gradient_norm),
        shortest(report.tolerance),
        report.iterations,
        report.method,
        if to_file {
            "; nothing written to --out"
        } else {
            ""
        }
    );
    Ok(ExitCode::from(1))
}

// ---------------------------------------------------------------------------------------
// Progress bars: the library reports finished paths through a callback; drawing them is
// the CLI's business.

/// How long a run must last before the bar appears.
const SHOW_AFTER: Duration = Duration::from_secs(1);

/// A bar of finished paths on stderr, shown only when stderr is a terminal and the run
/// has lasted more than a second (a short run prints nothing), and never when asked to
/// be quiet. Safe to update from worker threads.
#[derive(Debug)]
struct PathProgress {
    bar: ProgressBar,
    start: Instant,
    enabled: bool,
    shown: AtomicBool,
}

impl PathProgress {
    /// A bar over `total` paths on stderr: inert when `quiet` or when stderr is not a
    /// terminal.
    fn stderr(total: u64, quiet: bool) -> PathProgress {
        let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::hidden());
        if let Ok(style) = ProgressStyle::with_template(
            "{elapsed_precise} [{bar:30}] {human_pos}/{human_len} paths, ETA {eta}",
        ) {
            bar.set_style(style.progress_chars("=> "));
        }
        PathProgress {
            bar,
            start: Instant::now(),
            enabled: !quiet && std::io::stderr().is_terminal(),
            shown: AtomicBool::new(false),
        }
    }

    /// `n` more paths are done.
    fn inc(&self, n: u64) {
        self.bar.inc(n);
        if self.enabled
            && self.start.elapsed() >= SHOW_AFTER
            && !self.shown.swap(true, Ordering::Relaxed)
        {
            self.bar.set_draw_target(ProgressDrawTarget::stderr());
        }
    }

    /// Removes the bar (if it was shown).
    fn finish(&self) {
        self.bar.finish_and_clear();
    }
}
