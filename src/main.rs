//! The `hasme` command line: parses arguments, calls the library, prints.
//!
//! Exit status: 0 on success, 2 for bad input (files, syntax, names, arguments),
//! 1 for a failure while running (a non-finite value, a model outside its domain).

use anyhow::Result;
use clap::{Parser, Subcommand, ValueEnum};
use hasme::inspect::{CheckSummary, DeriveReport, ModelRequest};
use hasme::models::{ModelKind, ModelOptions, PsdPolicy};
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
            let code = match err.downcast_ref::<ProblemError>() {
                Some(e) => e.exit_code(),
                None => 2,
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

fn print_json(value: &impl serde::Serialize) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
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
                println!("{summary}");
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
                println!("{report}");
            }
            Ok(if failed {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            })
        }
    }
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
