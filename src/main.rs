//! The `hasme` command line: parses arguments, calls the library, prints.
//!
//! Exit status: 0 on success, 2 for bad input (files, syntax, names, arguments),
//! 1 for a failure while running (a non-finite value, a model outside its domain).

use anyhow::Result;
use clap::{Parser, Subcommand, ValueEnum};
use hasme::inspect::{CheckSummary, DeriveReport, ModelRequest};
use hasme::models::{ModelKind, ModelOptions, PsdPolicy};
use hasme::moments::{self, MomentsConfig, MomentsError};
use hasme::output::{self, OutputError};
use hasme::sim::progress::PathProgress;
use hasme::sim::{SimConfig, SimError, simulate_with_progress};
use hasme::{Overrides, Problem, ProblemError};
use std::path::PathBuf;
use std::process::ExitCode;

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
        /// Override a param: NAME=VALUE (repeatable).
        #[arg(long = "set", value_name = "NAME=VALUE")]
        set: Vec<String>,
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
        /// Override a param: NAME=VALUE (repeatable).
        #[arg(long = "set", value_name = "NAME=VALUE")]
        set: Vec<String>,
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
    /// Override a param: NAME=VALUE (repeatable).
    #[arg(long = "set", value_name = "NAME=VALUE")]
    set: Vec<String>,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
    /// Also write the comparison as CSV (one row per step and model).
    #[arg(long, value_name = "PATH")]
    csv: Option<PathBuf>,
    /// Also write a plot of W2 against t (SVG).
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
    /// coupled (common random numbers with SGD) or independent.
    #[arg(long, default_value = "coupled")]
    coupling: String,
    /// Seed of the random streams.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Worker threads (default: all cores). The numbers do not depend on it.
    #[arg(long)]
    threads: Option<usize>,
    /// Save every K-th SGD step (the horizon is always saved).
    #[arg(long, default_value_t = 1, value_name = "K")]
    every: u64,
    /// Paths handed to the threads at a time (memory bound). The numbers do not depend
    /// on it.
    #[arg(long, hide = true)]
    batch: Option<u64>,
    /// Override a param: NAME=VALUE (repeatable).
    #[arg(long = "set", value_name = "NAME=VALUE")]
    set: Vec<String>,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
    /// Write the output to PATH (atomically) instead of stdout.
    #[arg(long, value_name = "PATH")]
    out: Option<PathBuf>,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
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
            let code = if let Some(e) = err.downcast_ref::<ProblemError>() {
                e.exit_code()
            } else if let Some(e) = err.downcast_ref::<MomentsError>() {
                e.exit_code()
            } else if let Some(e) = err.downcast_ref::<OutputError>() {
                e.exit_code()
            } else if let Some(e) = err.downcast_ref::<SimError>() {
                e.exit_code()
            } else {
                2
            };
            let text = err.to_string();
            if text.contains(": error: ") {
                eprintln!("{text}");
            } else {
                eprintln!("error: {text}");
            }
            ExitCode::from(code as u8)
        }
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

fn print_json(value: &impl serde::Serialize) -> Result<()> {
    emit(&format!("{}\n", serde_json::to_string_pretty(value)?))?;
    Ok(())
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Check { file, set, json } => {
            let problem = Problem::from_file(&file, &Overrides::parse(&set)?)?;
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
            set,
            eta,
            model,
            series,
            psd,
            json,
        } => {
            let problem = Problem::from_file(&file, &Overrides::parse(&set)?)?;
            let x = problem.point_from_assignments(at.as_deref().unwrap_or(""))?;
            let mut report = DeriveReport::new(&problem, &x)?;
            let mut failed = false;
            if eta.is_none() && (!model.is_empty() || series.is_some()) {
                return Err(ProblemError::Usage(
                    "--model and --series need a step size: add --eta".to_string(),
                )
                .into());
            }
            if let Some(eta) = eta {
                if !(eta.is_finite() && eta > 0.0) {
                    return Err(ProblemError::Usage(format!(
                        "--eta must be a finite number > 0, got {eta}"
                    ))
                    .into());
                }
                let request = ModelRequest {
                    eta,
                    models: parse_models(&model)?,
                    series_terms: series.unwrap_or(0),
                    options: ModelOptions {
                        psd: match psd {
                            Psd::Error => PsdPolicy::Error,
                            Psd::Clip => PsdPolicy::Clip,
                        },
                    },
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
        Command::Simulate(args) => run_simulate(args),
    }
}

/// `hasme moments`: checks the output paths first (so a typo fails before the work),
/// compares, writes the files atomically, prints; exit 1 when a model failed.
fn run_moments(args: MomentsArgs) -> Result<ExitCode> {
    let problem = Problem::from_file(&args.file, &Overrides::parse(&args.set)?)?;
    let mut config = MomentsConfig::new(args.eta, args.steps)?;
    if let Some(every) = args.every {
        config = config.with_every(every)?;
    }
    config = config.with_models(parse_models(&args.models)?)?;
    if let Some(path) = &args.plot {
        let svg = path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("svg"));
        if !svg {
            return Err(ProblemError::Usage(format!(
                "--plot `{}`: only SVG plots are supported; use a .svg file name",
                path.display()
            ))
            .into());
        }
    }
    for path in args.csv.iter().chain(&args.plot) {
        output::check_target(path)?;
    }
    let report = moments::compare(&problem, &config)?;
    for (kind, err) in report.failures() {
        eprintln!("error: model `{kind}`: {err}");
    }
    if let Some(path) = &args.csv {
        output::write_atomic(path, report.to_csv().as_bytes())?;
    }
    if let Some(path) = &args.plot {
        let svg = report.w2_plot().to_svg()?;
        output::write_atomic(path, svg.as_bytes())?;
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

fn parse_models(names: &[String]) -> Result<Vec<ModelKind>, ProblemError> {
    if names.is_empty() {
        return Ok(ModelKind::all().to_vec());
    }
    let mut out: Vec<ModelKind> = Vec::new();
    for n in names {
        let n = n.trim();
        let kinds = if n == "all" {
            ModelKind::all().to_vec()
        } else {
            vec![
                n.parse::<ModelKind>()
                    .map_err(|e| ProblemError::Usage(format!("--model: {e}")))?,
            ]
        };
        for k in kinds {
            if !out.contains(&k) {
                out.push(k);
            }
        }
    }
    Ok(out)
}

/// `hasme simulate`: checks the output path first, simulates with a progress bar,
/// prints (or writes atomically) text or JSON; divergences are reported, not errors.
fn run_simulate(args: SimulateArgs) -> Result<ExitCode> {
    let problem = Problem::from_file(&args.file, &Overrides::parse(&args.set)?)?;
    if let Some(path) = &args.out {
        output::check_target(path)?;
    }
    let usage = |m: String| ProblemError::Usage(m);
    let mut config = SimConfig::new(args.eta, args.horizon, args.paths);
    config.models = parse_models(&args.models)?;
    config.substeps = args.substeps;
    config.scheme = args
        .scheme
        .parse()
        .map_err(|m| usage(format!("--scheme: {m}")))?;
    config.coupling = args
        .coupling
        .parse()
        .map_err(|m| usage(format!("--coupling: {m}")))?;
    config.seed = args.seed;
    config.every = args.every;
    config.threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    config.batch = args.batch.unwrap_or(0);
    let progress = PathProgress::stderr(config.paths, args.quiet);
    let result = simulate_with_progress(&problem, &config, &|n| progress.inc(n));
    progress.finish();
    let result = result?;
    let text = if args.json {
        let mut value = result.to_json();
        if let Some(map) = value.as_object_mut() {
            map.insert("file".into(), args.file.display().to_string().into());
        }
        serde_json::to_string_pretty(&value)? + "\n"
    } else {
        format!("{result}\n")
    };
    match &args.out {
        Some(path) => output::write_atomic(path, text.as_bytes())?,
        None => emit(&text)?,
    }
    if result.total_diverged() > 0 && (args.json || args.out.is_some()) {
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
