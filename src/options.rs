//! The command line's option values as the library reads them, shared by the `hasme`
//! binary and the Python package so that both accept the same words and print the
//! same bytes: a `--models` list ([`models`]), a `--coupling` ([`coupling`]), the
//! default thread count ([`threads`]), `derive`'s models with its linear algebra
//! ([`derive_models`]) and a report's `--json` text ([`json`], [`json_with_file`]).
//!
//! Invariant: a setting given the same words here and on the command line is the same
//! setting, and a report printed here is the command's `--json` output byte for byte.

use crate::escape::Region;
use crate::format::WithFile;
use crate::models::ModelKind;
use crate::models::matrix_free::{self, KrylovOptions, LinearAlgebra};
use crate::problem::{Problem, ProblemError};
use crate::sim::Coupling;
use serde::Serialize;

/// The models of a `--models` list: each a model's name or `all` (every model), in the
/// order given, none twice; an empty list is every model.
///
/// ```
/// use hasme::ModelKind;
/// use hasme::options::models;
/// assert_eq!(models(&["sme1".into(), "gf".into(), "sme1".into()])?, [ModelKind::Sme1, ModelKind::Gf]);
/// assert_eq!(models(&[])?, ModelKind::all());
/// assert!(models(&["sme3".into()]).is_err());
/// # Ok::<(), hasme::ProblemError>(())
/// ```
pub fn models(names: &[String]) -> Result<Vec<ModelKind>, ProblemError> {
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

/// The Lanczos settings from `--krylov-tol` (checked), which needs the matrix-free
/// coefficients to be possible (not `--linear-algebra dense`).
///
/// ```
/// use hasme::models::matrix_free::LinearAlgebra;
/// use hasme::options::krylov_options;
/// assert_eq!(krylov_options(None, Some(1e-8))?.tolerance(), 1e-8);
/// assert!(krylov_options(Some(LinearAlgebra::Dense), Some(1e-8)).is_err());
/// assert!(krylov_options(None, Some(2.0)).is_err());
/// # Ok::<(), hasme::ProblemError>(())
/// ```
pub fn krylov_options(
    linear_algebra: Option<LinearAlgebra>,
    krylov_tol: Option<f64>,
) -> Result<KrylovOptions, ProblemError> {
    let krylov = match krylov_tol {
        None => KrylovOptions::default(),
        Some(t) => {
            KrylovOptions::new(t).map_err(|e| ProblemError::Usage(format!("--krylov-tol: {e}")))?
        }
    };
    if krylov_tol.is_some() && linear_algebra == Some(LinearAlgebra::Dense) {
        return Err(ProblemError::Usage(
            "--krylov-tol sets the Lanczos tolerance: it needs --linear-algebra krylov (or no --linear-algebra)"
                .to_string(),
        ));
    }
    Ok(krylov)
}

/// `derive`'s models and Lanczos settings from its `--model` list, `--series`,
/// `--linear-algebra` and `--krylov-tol`: with an explicit `krylov`, the default list is
/// every model with a matrix-free form, and `--series` or a dense-only model is an
/// error; a tolerance is checked, and needs the matrix-free form to be possible.
///
/// ```
/// use hasme::ModelKind;
/// use hasme::models::matrix_free::LinearAlgebra;
/// use hasme::options::derive_models;
/// let (kinds, krylov) = derive_models(&[], None, Some(LinearAlgebra::Krylov), Some(1e-8))?;
/// assert!(!kinds.contains(&ModelKind::HasmeExact) && krylov.tolerance() == 1e-8);
/// assert!(derive_models(&["hasme-exact".into()], None, Some(LinearAlgebra::Krylov), None).is_err());
/// assert!(derive_models(&[], None, Some(LinearAlgebra::Dense), Some(1e-8)).is_err());
/// # Ok::<(), hasme::ProblemError>(())
/// ```
pub fn derive_models(
    names: &[String],
    series: Option<usize>,
    linear_algebra: Option<LinearAlgebra>,
    krylov_tol: Option<f64>,
) -> Result<(Vec<ModelKind>, KrylovOptions), ProblemError> {
    let krylov = krylov_options(linear_algebra, krylov_tol)?;
    let explicit_krylov = linear_algebra == Some(LinearAlgebra::Krylov);
    let kinds = if explicit_krylov && names.is_empty() {
        // The default list is every model that has a matrix-free form.
        ModelKind::all()
            .into_iter()
            .filter(|k| matrix_free::has_matrix_free_form(*k))
            .collect()
    } else {
        models(names)?
    };
    if explicit_krylov {
        if series.is_some() {
            return Err(ProblemError::Usage(
                "--series prints products of d×d matrices: it needs --linear-algebra dense (or no --linear-algebra)".to_string(),
            ));
        }
        if let Some(e) = kinds.iter().find_map(|k| matrix_free::dense_only(*k)) {
            return Err(ProblemError::Usage(format!("--linear-algebra krylov: {e}")));
        }
    }
    Ok((kinds, krylov))
}

/// The `--coupling` setting (`None`: not given): coupled unless asked otherwise; a
/// finite sum's minibatch SGD cannot be coupled (it draws minibatches, not Gaussian
/// numbers), so asking for it is an error and the default falls back to independent;
/// its Gaussian surrogate (`gaussian_sgd`) can.
pub fn coupling(
    arg: Option<&str>,
    problem: &Problem,
    gaussian_sgd: bool,
) -> Result<Coupling, ProblemError> {
    let usage = ProblemError::Usage;
    let coupling: Coupling = arg
        .unwrap_or("coupled")
        .parse()
        .map_err(|m| usage(format!("--coupling: {m}")))?;
    if gaussian_sgd {
        // A finite sum's Gaussian surrogate draws Gaussian numbers like any SGD.
        return Ok(coupling);
    }
    if arg.is_some() && coupling == Coupling::Coupled && problem.finite_sum().is_some() {
        return Err(usage(format!(
            "--coupling coupled: {} is a finite sum, whose SGD draws real minibatches that share no random numbers with the SDEs; its runs are always independent (omit --coupling, or simulate SGD's Gaussian surrogate with --sgd-noise gaussian)",
            problem.source().name()
        )));
    }
    Ok(coupling.possible(problem))
}

/// `--threads` (`None`: not given): every core the system offers.
pub fn threads(arg: Option<usize>) -> usize {
    arg.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// What `--json` prints for a report that does not name its file (`check`, `derive`,
/// `moments`, `stationary`): pretty JSON and a newline.
///
/// ```
/// assert_eq!(hasme::options::json(&serde_json::json!({"a": 1}))?, "{\n  \"a\": 1\n}\n");
/// # Ok::<(), serde_json::Error>(())
/// ```
pub fn json(report: &impl Serialize) -> Result<String, serde_json::Error> {
    Ok(serde_json::to_string_pretty(report)? + "\n")
}

/// What `--json` prints for a Monte Carlo report (`simulate`, `weak-order`, `escape`):
/// the report with `"file": file` appended ([`WithFile`]), pretty, and a newline.
///
/// ```
/// let text = hasme::options::json_with_file(&serde_json::json!({"a": 1}), "f.hasme")?;
/// assert_eq!(text, "{\n  \"a\": 1,\n  \"file\": \"f.hasme\"\n}\n");
/// # Ok::<(), serde_json::Error>(())
/// ```
pub fn json_with_file(report: &impl Serialize, file: &str) -> Result<String, serde_json::Error> {
    json(&WithFile::new(report, file))
}

/// The step sizes of `weak-order`: the list given (`--etas`), or a halving grid of
/// `levels` step sizes from `eta_max` down (`--eta-max`, `--levels`); one of the two,
/// not both.
///
/// ```
/// use hasme::options::etas;
/// assert_eq!(etas(&[], Some(0.2), Some(3))?, [0.2, 0.1, 0.05]);
/// assert_eq!(etas(&[0.1, 0.05], None, None)?, [0.1, 0.05]);
/// assert!(etas(&[], None, None).is_err());
/// # Ok::<(), hasme::ProblemError>(())
/// ```
pub fn etas(
    list: &[f64],
    eta_max: Option<f64>,
    levels: Option<usize>,
) -> Result<Vec<f64>, ProblemError> {
    let usage = |m: &str| Err(ProblemError::Usage(m.to_string()));
    match (list.is_empty(), eta_max, levels) {
        (true, Some(eta_max), Some(levels)) => {
            Ok(crate::experiment::WeakOrderConfig::halving(eta_max, levels))
        }
        (true, None, None) => {
            usage("give the step sizes: --etas 0.2,0.1,0.05 or --eta-max 0.2 --levels 4")
        }
        (true, _, _) => usage("--eta-max and --levels go together: give both"),
        (false, None, None) => Ok(list.to_vec()),
        (false, _, _) => usage("give either --etas or --eta-max with --levels, not both"),
    }
}

/// The region of `escape`: a ball (`--radius`, around `--centre`, default the start
/// point), a condition (`--when EXPR`), or else the file's own `escape when` statement.
/// `centre` reads the centre given, called only once the settings make a ball.
pub fn region(
    radius: Option<f64>,
    centre: Option<impl FnOnce() -> Result<Vec<f64>, ProblemError>>,
    when: Option<&str>,
    problem: &Problem,
) -> Result<Region, ProblemError> {
    let usage = |m: &str| Err(ProblemError::Usage(m.to_string()));
    match (when, radius) {
        (Some(_), Some(_)) => usage("give either --radius (a ball) or --when, not both"),
        (Some(_), None) if centre.is_some() => usage("--centre goes with --radius, not --when"),
        (Some(expr), None) => Ok(Region::When(expr.to_string())),
        (None, Some(radius)) => Ok(Region::Ball {
            centre: centre.map(|read| read()).transpose()?,
            radius,
        }),
        (None, None) if problem.escape_region().is_some() => Ok(Region::File),
        (None, None) => usage(
            "give the escape region: --radius R (a ball around --centre, default the start \
             point), --when EXPR (escape when EXPR > 0), or an `escape when … > …` \
             statement in the file",
        ),
    }
}
