//! `hasme._hasme`: the compiled module behind the Python package `hasme`. It holds a
//! checked [`hasme::Problem`] and calls the library's analyses with the settings the
//! Python layer (`python/hasme/__init__.py`) passes on, every one spelled out (the
//! defaults live there, equal to the command line's).
//!
//! Each analysis returns an [`Output`], whose `json()` is the command's `--json` text,
//! made by the same `hasme::options` calls as the command line's. A run releases the
//! GIL and is watched from the calling thread ([`watched`]): every [`POLL`] it reports
//! progress and checks for signals; a Ctrl-C stops the engine through a ledger's stop
//! flag (no more paths handed out) and raises `KeyboardInterrupt`.
//!
//! Errors become `hasme.InputError` (a `ValueError`) or `hasme.RunError` (a
//! `RuntimeError`) by the library's [`ErrorKind`], with the diagnostic's `path`,
//! `line` and `column` when the error has one.

use hasme::escape::{EscapeConfig, EscapeError, EscapeReport, escape_with_progress};
use hasme::experiment::{
    Method, Sweep, WeakOrderConfig, WeakOrderError, WeakOrderReport, weak_order_with_progress,
};
use hasme::inspect::{CheckSummary, DeriveReport, ModelRequest};
use hasme::lang::{Diagnostic, Source};
use hasme::models::matrix_free::{KrylovOptions, LinearAlgebra};
use hasme::models::{ModelOptions, PsdPolicy};
use hasme::moments::{MomentsConfig, MomentsError, MomentsReport};
use hasme::options;
use hasme::plot::{LinePlot, SeriesKind, YAxis};
use hasme::problem::StartPoint;
use hasme::report::{ReportConfig, ReportError};
use hasme::shard::{Ledger, Part, RunKey, Shard};
use hasme::sim::{SimConfig, SimError, SimResult, simulate_with_progress};
use hasme::stationary::{
    StationaryConfig, StationaryError, StationaryReport, Stop, find_stationary,
};
use hasme::{ErrorKind, Overrides, ProblemError};
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyString};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, mpsc};
use std::time::Duration;

pyo3::create_exception!(
    hasme,
    InputError,
    PyValueError,
    "The input is wrong: a file, its syntax or meaning, a setting, a point. The message \
     is the command line's diagnostic; `path`, `line` and `column` locate it in a file \
     (None when it is not about a place in a file)."
);
pyo3::create_exception!(
    hasme,
    RunError,
    PyRuntimeError,
    "The input was accepted but the computation failed while running (a non-finite \
     value, a model outside its domain, a search that did not converge)."
);

/// The library's errors, each knowing whether the input or the run failed.
trait Failure: std::error::Error + 'static {
    fn kind(&self) -> ErrorKind;
}

macro_rules! failures {
    ($($t:ty),*) => {$(
        impl Failure for $t {
            fn kind(&self) -> ErrorKind {
                <$t>::kind(self)
            }
        }
    )*};
}
failures!(
    ProblemError,
    MomentsError,
    SimError,
    WeakOrderError,
    EscapeError,
    StationaryError,
    ReportError,
    hasme::shard::ShardError
);

/// The diagnostic an error carries, if any: the error itself or one of its sources.
fn located<'e>(err: &'e (dyn std::error::Error + 'static)) -> Option<&'e Diagnostic> {
    let mut current = Some(err);
    while let Some(e) = current {
        if let Some(ProblemError::Syntax(d) | ProblemError::Check(d) | ProblemError::Eval(d)) =
            e.downcast_ref::<ProblemError>()
        {
            return Some(d);
        }
        if let Some(d) = e.downcast_ref::<Diagnostic>() {
            return Some(d);
        }
        current = e.source();
    }
    None
}

/// `InputError` or `RunError` with `message`, located by `diagnostic`.
fn raise(kind: ErrorKind, message: String, diagnostic: Option<&Diagnostic>) -> PyErr {
    let err = match kind {
        ErrorKind::Input => InputError::new_err(message),
        ErrorKind::Run => RunError::new_err(message),
    };
    Python::attach(|py| {
        let value = err.value(py);
        let place = diagnostic.map(|d| (d.file.clone(), d.line, d.column));
        // Setting attributes on a fresh exception object cannot fail but for memory.
        let _ = value.setattr("path", place.as_ref().map(|p| p.0.clone()));
        let _ = value.setattr("line", place.as_ref().map(|p| p.1));
        let _ = value.setattr("column", place.as_ref().map(|p| p.2));
        // A failed model or search sets it to the report of the rest (in Python).
        let _ = value.setattr("result", py.None());
    });
    err
}

fn to_py<E: Failure>(err: E) -> PyErr {
    raise(err.kind(), err.to_string(), located(&err))
}

fn input(message: impl Into<String>) -> PyErr {
    raise(ErrorKind::Input, message.into(), None)
}

fn run_error(message: impl Into<String>) -> PyErr {
    raise(ErrorKind::Run, message.into(), None)
}

/// `?` on a library result: the error becomes `InputError` or `RunError`.
trait OrRaise<T> {
    fn or_raise(self) -> PyResult<T>;
}

impl<T, E: Failure> OrRaise<T> for Result<T, E> {
    fn or_raise(self) -> PyResult<T> {
        self.map_err(to_py)
    }
}

/// A checked problem with the overrides it was built with (a sweep rebuilds it).
#[pyclass(frozen, module = "hasme._hasme")]
struct Problem {
    inner: hasme::Problem,
    overrides: Overrides,
    /// The params as `NAME=VALUE`, for the reproduce commands of a report.
    set: Vec<String>,
}

/// `params` (a dict, in its order), `init_seed` and a `start` file as overrides.
fn overrides(
    params: Option<&Bound<'_, PyDict>>,
    init_seed: u64,
    start: Option<PathBuf>,
) -> PyResult<(Overrides, Vec<String>)> {
    let mut out = Overrides::none().init_seed(init_seed);
    let mut set = Vec::new();
    for (name, value) in params.into_iter().flat_map(|d| d.iter()) {
        let name: String = name
            .extract()
            .map_err(|_| input("params: the names must be strings"))?;
        let value: f64 = value
            .extract()
            .map_err(|_| input(format!("params: `{name}` must be a number")))?;
        set.push(format!("{name}={value}"));
        out = out.set(name, value);
    }
    if let Some(path) = start {
        out = out.start(StartPoint::from_file(path).or_raise()?);
    }
    Ok((out, set))
}

impl Problem {
    fn new(
        read: impl FnOnce(&Overrides) -> Result<hasme::Problem, ProblemError>,
        params: Option<&Bound<'_, PyDict>>,
        init_seed: u64,
        start: Option<PathBuf>,
    ) -> PyResult<Problem> {
        let (overrides, set) = overrides(params, init_seed, start)?;
        let inner = read(&overrides).or_raise()?;
        Ok(Problem {
            inner,
            overrides,
            set,
        })
    }

    /// The file's name as the reports print it.
    fn file(&self) -> String {
        self.inner.source().name().to_string()
    }

    /// A point given as `None` (the start point), a string of `name=value`
    /// assignments, a dict of names to values, or a sequence of every coordinate.
    fn point(&self, at: Option<&Bound<'_, PyAny>>, what: &str) -> PyResult<Vec<f64>> {
        let from_spec = |spec: &str| {
            self.inner
                .point_from_assignments(spec)
                .map_err(|e| match e {
                    ProblemError::Usage(m) => input(m.replace("--at", what)),
                    e => to_py(e),
                })
        };
        let Some(at) = at else {
            return from_spec("");
        };
        if at.is_instance_of::<PyString>() {
            return from_spec(&at.extract::<String>()?);
        }
        if let Ok(named) = at.cast::<PyDict>() {
            let mut spec = Vec::new();
            for (name, value) in named.iter() {
                let name: String = name
                    .extract()
                    .map_err(|_| input(format!("{what}: the names must be strings")))?;
                let value: f64 = value
                    .extract()
                    .map_err(|_| input(format!("{what}: `{name}` must be a number")))?;
                if !value.is_finite() {
                    return Err(input(format!(
                        "{what}: {name} = {value} is not a finite number"
                    )));
                }
                // `{:?}` reads back to the same bits.
                spec.push(format!("{name}={value:?}"));
            }
            return from_spec(&spec.join(","));
        }
        // A list (what the Python layer makes of an array) is read as it is; anything
        // else with `tolist` (an array given to the module directly) through it.
        let list = if at.is_instance_of::<PyList>() || !at.hasattr("tolist")? {
            at.clone()
        } else {
            at.call_method0("tolist")?
        };
        let x: Vec<f64> = list.extract().map_err(|_| {
            input(format!(
                "{what}: expected a point: a 1-D array or sequence of {} numbers, a dict of names to values, or a string `x=..,y=..`",
                self.inner.dim()
            ))
        })?;
        let names = self.inner.variables();
        if x.len() != names.len() {
            return Err(input(format!(
                "{what}: expected {} coordinates ({}), got {}",
                names.len(),
                names.join(", "),
                x.len()
            )));
        }
        Ok(x)
    }
}

#[pymethods]
impl Problem {
    #[staticmethod]
    #[pyo3(signature = (path, params, init_seed, start))]
    fn from_file(
        path: PathBuf,
        params: Option<&Bound<'_, PyDict>>,
        init_seed: u64,
        start: Option<PathBuf>,
    ) -> PyResult<Problem> {
        Problem::new(
            |o| hasme::Problem::from_file(&path, o),
            params,
            init_seed,
            start,
        )
    }

    #[staticmethod]
    #[pyo3(signature = (text, name, params, init_seed, start))]
    fn from_source(
        text: &str,
        name: &str,
        params: Option<&Bound<'_, PyDict>>,
        init_seed: u64,
        start: Option<PathBuf>,
    ) -> PyResult<Problem> {
        Problem::new(
            |o| hasme::Problem::from_source(Source::new(name, text), o),
            params,
            init_seed,
            start,
        )
    }

    #[getter]
    fn variables(&self) -> Vec<String> {
        self.inner.variables().to_vec()
    }

    #[getter]
    fn start(&self) -> Vec<f64> {
        self.inner.start()
    }

    #[getter]
    fn dimension(&self) -> usize {
        self.inner.dim()
    }

    #[getter]
    fn observables(&self) -> Vec<String> {
        self.inner.observable_names().to_vec()
    }

    #[getter]
    fn params(&self) -> Vec<(String, f64)> {
        self.inner.params().to_vec()
    }

    #[getter(file)]
    fn file_name(&self) -> String {
        self.file()
    }

    /// The point `at` (see [`Problem::point`]) as coordinates.
    #[pyo3(signature = (at, what))]
    fn point_of(&self, at: Option<&Bound<'_, PyAny>>, what: &str) -> PyResult<Vec<f64>> {
        self.point(at, what)
    }

    fn check(&self) -> Output {
        Output::new(Report::Check(CheckSummary::new(&self.inner)), String::new())
    }

    /// `derive`: the report, and the messages of the models that failed.
    #[pyo3(signature = (at, eta, models, series, psd, linear_algebra, krylov_tol))]
    #[allow(clippy::too_many_arguments)]
    fn derive(
        &self,
        at: Option<&Bound<'_, PyAny>>,
        eta: Option<f64>,
        models: Vec<String>,
        series: Option<usize>,
        psd: &str,
        linear_algebra: Option<&str>,
        krylov_tol: Option<f64>,
    ) -> PyResult<(Output, Vec<String>)> {
        let x = self.point(at, "at")?;
        let mut report = DeriveReport::new(&self.inner, &x).or_raise()?;
        let mut failed = Vec::new();
        match eta {
            None if !models.is_empty()
                || series.is_some()
                || linear_algebra.is_some()
                || krylov_tol.is_some() =>
            {
                return Err(input(
                    "models, series, linear_algebra and krylov_tol need a step size: give eta",
                ));
            }
            None => {}
            Some(eta) => {
                if !(eta.is_finite() && eta > 0.0) {
                    return Err(input(format!("eta must be a finite number > 0, got {eta}")));
                }
                let psd = match psd {
                    "error" => PsdPolicy::Error,
                    "clip" => PsdPolicy::Clip,
                    other => {
                        return Err(input(format!(
                            "psd: expected `error` or `clip`, got `{other}`"
                        )));
                    }
                };
                let linear_algebra = linear_algebra_arg(linear_algebra)?;
                let (models, krylov) =
                    options::derive_models(&models, series, linear_algebra, krylov_tol)
                        .or_raise()?;
                let request = ModelRequest {
                    eta,
                    models,
                    series_terms: series.unwrap_or(0),
                    options: ModelOptions { psd },
                    linear_algebra,
                    krylov,
                };
                for (kind, err) in report.add_models(&self.inner, &request).or_raise()? {
                    failed.push(format!("model `{kind}`: {err}"));
                }
            }
        }
        Ok((Output::new(Report::Derive(report), String::new()), failed))
    }

    fn __repr__(&self) -> String {
        format!(
            "Problem(file={:?}, variables=[{}])",
            self.file(),
            self.inner
                .variables()
                .iter()
                .map(|v| format!("{v:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        )
    }
}

/// What an analysis returned.
enum Report {
    Check(CheckSummary),
    Derive(DeriveReport),
    Moments(MomentsReport),
    Simulate(SimResult),
    WeakOrder(WeakOrderReport),
    Escape(EscapeReport),
    Stationary(StationaryReport),
}

/// An analysis's result; `json()` is its command's `--json` text.
#[pyclass(frozen, module = "hasme._hasme")]
struct Output {
    report: Report,
    /// The file name the Monte Carlo reports end with.
    file: String,
}

impl Output {
    fn new(report: Report, file: String) -> Output {
        Output { report, file }
    }
}

#[pymethods]
impl Output {
    fn json(&self) -> PyResult<String> {
        let file = self.file.as_str();
        match &self.report {
            Report::Check(r) => options::json(r),
            Report::Derive(r) => options::json(r),
            Report::Moments(r) => options::json(r),
            Report::Stationary(r) => options::json(r),
            Report::Simulate(r) => options::json_with_file(r, file),
            Report::WeakOrder(r) => options::json_with_file(r, file),
            Report::Escape(r) => options::json_with_file(r, file),
        }
        .map_err(|e| run_error(format!("cannot write the report as JSON: {e}")))
    }

    /// `derive`'s point, f, ∇f and ∇²f, read without the JSON.
    #[allow(clippy::type_complexity)]
    fn derivatives(&self) -> Option<(Vec<f64>, f64, Vec<f64>, Vec<Vec<f64>>)> {
        match &self.report {
            Report::Derive(r) => Some((
                r.point.clone(),
                r.value,
                r.gradient.clone(),
                r.hessian.clone(),
            )),
            _ => None,
        }
    }

    /// The text the command prints without `--json`.
    fn text(&self) -> String {
        match &self.report {
            Report::Check(r) => format!("{r}\n"),
            Report::Derive(r) => format!("{r}\n"),
            Report::Moments(r) => format!("{r}"),
            Report::Simulate(r) => format!("{r}\n"),
            Report::WeakOrder(r) => format!("{r}"),
            Report::Escape(r) => format!("{r}"),
            Report::Stationary(r) => format!("{r}\n"),
        }
    }

    /// The command's figure as SVG (what `--plot` writes), for the commands that draw
    /// one.
    fn svg(&self) -> PyResult<Option<String>> {
        let Some(plot) = self.plot() else {
            return Ok(None);
        };
        plot.to_svg()
            .map(Some)
            .map_err(|e| run_error(format!("cannot draw the plot: {e}")))
    }

    /// The command's figure as data, for the commands that draw one: its title, axis
    /// labels and scales, ticks and limits, notes, and every series with its points,
    /// error bars, kind (`measured`, `steps`, `guide`) and open markers.
    fn figure<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyDict>>> {
        let Some(plot) = self.plot() else {
            return Ok(None);
        };
        let log = |axis: YAxis| axis == YAxis::Log;
        let figure = PyDict::new(py);
        figure.set_item("title", &plot.title)?;
        figure.set_item("x_label", &plot.x_label)?;
        figure.set_item("y_label", &plot.y_label)?;
        figure.set_item("x_log", log(plot.x_axis))?;
        figure.set_item("y_log", log(plot.y_axis))?;
        figure.set_item("x_ticks", &plot.x_ticks)?;
        figure.set_item("x_limits", plot.x_limits)?;
        figure.set_item("notes", &plot.notes)?;
        let mut series = Vec::new();
        for s in &plot.series {
            let item = PyDict::new(py);
            item.set_item("name", &s.name)?;
            item.set_item("points", &s.points)?;
            item.set_item("error_bars", &s.error_bars)?;
            let kind = match s.kind {
                SeriesKind::Measured => "measured",
                SeriesKind::Steps => "steps",
                SeriesKind::Guide => "guide",
            };
            item.set_item("kind", kind)?;
            item.set_item("open", &s.open)?;
            series.push(item);
        }
        figure.set_item("series", series)?;
        Ok(Some(figure))
    }
}

impl Output {
    fn plot(&self) -> Option<LinePlot> {
        match &self.report {
            Report::Moments(r) => Some(r.w2_plot()),
            Report::WeakOrder(r) => Some(r.plot()),
            Report::Escape(r) => Some(r.survival_plot()),
            _ => None,
        }
    }
}

// ---------------------------------------------------------------------------------------
// Runs: off the GIL on a thread of their own, watched from the caller's.

/// How often a run's caller reports progress and checks for Ctrl-C: well under the
/// second within which an interrupt is to be felt.
const POLL: Duration = Duration::from_millis(50);

/// What a run reports as it goes: paths done out of the stage's total.
#[derive(Default)]
struct Watch {
    done: AtomicU64,
    total: AtomicU64,
    stage: Mutex<String>,
}

impl Watch {
    fn new(stage: &str, total: u64) -> Watch {
        let watch = Watch::default();
        hasme::report::Progress::stage(&watch, stage, total);
        watch
    }

    fn inc(&self, n: u64) {
        self.done.fetch_add(n, Ordering::Relaxed);
    }

    /// Calls `progress(done, total, stage)`.
    fn report(&self, progress: Option<&Bound<'_, PyAny>>) -> PyResult<()> {
        let Some(progress) = progress else {
            return Ok(());
        };
        let stage = self
            .stage
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        progress.call1((
            self.done.load(Ordering::Relaxed),
            self.total.load(Ordering::Relaxed),
            stage,
        ))?;
        Ok(())
    }
}

impl hasme::report::Progress for Watch {
    fn stage(&self, name: &str, total: u64) {
        *self.stage.lock().unwrap_or_else(PoisonError::into_inner) = name.to_string();
        self.done.store(0, Ordering::Relaxed);
        self.total.store(total, Ordering::Relaxed);
    }
    fn inc(&self, n: u64) {
        Watch::inc(self, n);
    }
    fn finish(&self) {}
}

/// A ledger that computes every chunk of a run and saves nothing: it is there for its
/// stop flag, which the engine checks before handing out each path.
fn stoppable(command: &str) -> Ledger {
    let key = RunKey {
        hasme: env!("CARGO_PKG_VERSION").to_string(),
        command: command.to_string(),
        args: Vec::new(),
        digest: String::new(),
    };
    Ledger::compute(Part::new(key, Shard::WHOLE), None)
}

/// The value stored in a stop flag for Ctrl-C (the signal's number, as the command
/// line stores it).
const SIGINT: usize = 2;

/// Runs `work` on a thread of its own with the GIL released; every [`POLL`] calls
/// `progress` and checks for signals. On a signal's exception (Ctrl-C:
/// `KeyboardInterrupt`) it raises `stop` (when the run has one; otherwise the run is
/// let finish), waits for the run to end, and returns the exception. A panic in the
/// run is a `RunError`.
fn watched<T: Send>(
    py: Python<'_>,
    watch: &Watch,
    stop: Option<Arc<AtomicUsize>>,
    progress: Option<&Bound<'_, PyAny>>,
    work: impl FnOnce() -> T + Send,
) -> PyResult<T> {
    std::thread::scope(|scope| {
        let (done, wait) = mpsc::channel::<()>();
        let handle = scope.spawn(move || {
            let out = work();
            // The receiver outlives the run: the send cannot fail.
            let _ = done.send(());
            out
        });
        let mut wait = Some(wait);
        let mut interrupted = None;
        while let Some(rx) = wait.take() {
            let (finished, rx) = py.detach(move || {
                let finished =
                    !matches!(rx.recv_timeout(POLL), Err(mpsc::RecvTimeoutError::Timeout));
                (finished, rx)
            });
            let checked = watch.report(progress).and_then(|()| py.check_signals());
            if let Err(e) = checked {
                if let Some(stop) = &stop {
                    stop.store(SIGINT, Ordering::Relaxed);
                }
                interrupted = Some(e);
                break;
            }
            if !finished {
                wait = Some(rx);
            }
        }
        let out = py.detach(move || handle.join());
        if let Some(e) = interrupted {
            return Err(e);
        }
        out.map_err(|panic| {
            let why = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            run_error(format!(
                "internal error (a bug in hasme, please report it): {why}"
            ))
        })
    })
}

/// `threads` or every core, checked.
fn threads(threads: Option<usize>) -> usize {
    options::threads(threads)
}

#[pyfunction]
#[pyo3(signature = (problem, *, eta, steps, every, models))]
fn moments(
    problem: &Bound<'_, Problem>,
    eta: f64,
    steps: usize,
    every: Option<usize>,
    models: Vec<String>,
) -> PyResult<(Output, Vec<String>)> {
    let problem = problem.get();
    let mut config = MomentsConfig::new(eta, steps).or_raise()?;
    if let Some(every) = every {
        config = config.with_every(every).or_raise()?;
    }
    config = config
        .with_models(options::models(&models).or_raise()?)
        .or_raise()?;
    let report = hasme::moments::compare(&problem.inner, &config).or_raise()?;
    let failed = report
        .failures()
        .iter()
        .map(|(kind, err)| format!("model `{kind}`: {err}"))
        .collect();
    Ok((Output::new(Report::Moments(report), problem.file()), failed))
}

#[pyfunction]
#[pyo3(signature = (problem, *, eta, horizon, paths, models, substeps, scheme, coupling, every, seed, threads, sgd_noise, linear_algebra, krylov_tol, progress))]
#[allow(clippy::too_many_arguments)]
fn simulate(
    py: Python<'_>,
    problem: &Bound<'_, Problem>,
    eta: f64,
    horizon: f64,
    paths: u64,
    models: Vec<String>,
    substeps: usize,
    scheme: &str,
    coupling: Option<&str>,
    every: u64,
    seed: u64,
    threads: Option<usize>,
    sgd_noise: &str,
    linear_algebra: Option<&str>,
    krylov_tol: Option<f64>,
    progress: Option<&Bound<'_, PyAny>>,
) -> PyResult<Output> {
    let problem = problem.get();
    let p = &problem.inner;
    let scheme = scheme
        .parse()
        .map_err(|m| input(format!("--scheme: {m}")))?;
    let gaussian = gaussian_sgd(sgd_noise)?;
    let (linear_algebra, krylov) = coefficients(linear_algebra, krylov_tol)?;
    let ledger = stoppable("simulate");
    let config = SimConfig::builder(eta, horizon, paths)
        .models(options::models(&models).or_raise()?)
        .substeps(substeps)
        .scheme(scheme)
        .coupling(options::coupling(coupling, p, gaussian).or_raise()?)
        .gaussian_sgd(gaussian)
        .linear_algebra(linear_algebra)
        .krylov(krylov)
        .seed(seed)
        .every(every)
        .threads(self::threads(threads))
        .ledger(Some(ledger.clone()))
        .build()
        .or_raise()?;
    let watch = Watch::new("simulate", config.paths());
    let result = watched(py, &watch, Some(ledger.stop_flag()), progress, || {
        simulate_with_progress(p, &config, &|n| watch.inc(n))
    })?;
    finished(&ledger)?;
    Ok(Output::new(
        Report::Simulate(result.or_raise()?),
        problem.file(),
    ))
}

/// `linear_algebra="dense"|"krylov"` (`None`: by size).
fn linear_algebra_arg(name: Option<&str>) -> PyResult<Option<LinearAlgebra>> {
    match name {
        None => Ok(None),
        Some("dense") => Ok(Some(LinearAlgebra::Dense)),
        Some("krylov") => Ok(Some(LinearAlgebra::Krylov)),
        Some(other) => Err(input(format!(
            "linear_algebra: expected `dense` or `krylov`, got `{other}`"
        ))),
    }
}

/// `linear_algebra` and `krylov_tol` of a run, checked.
fn coefficients(
    linear_algebra: Option<&str>,
    krylov_tol: Option<f64>,
) -> PyResult<(Option<LinearAlgebra>, KrylovOptions)> {
    let la = linear_algebra_arg(linear_algebra)?;
    Ok((la, options::krylov_options(la, krylov_tol).or_raise()?))
}

/// `sgd_noise="minibatch"|"gaussian"`: whether a finite sum's SGD is its Gaussian
/// surrogate.
fn gaussian_sgd(sgd_noise: &str) -> PyResult<bool> {
    match sgd_noise {
        "minibatch" => Ok(false),
        "gaussian" => Ok(true),
        other => Err(input(format!(
            "sgd_noise: expected `minibatch` or `gaussian`, got `{other}`"
        ))),
    }
}

/// After a run with a [`stoppable`] ledger: the ledger's own error, if it has one.
fn finished(ledger: &Ledger) -> PyResult<()> {
    match ledger.take_error() {
        Some(e) => Err(to_py(e)),
        None => Ok(()),
    }
}

#[pyfunction]
#[pyo3(signature = (problem, *, etas, eta_max, levels, horizon, paths, models, observables, substeps, scheme, no_integration_check, sgd_paths, sweep, method, tolerance, seed, threads, sgd_noise, linear_algebra, krylov_tol, progress))]
#[allow(clippy::too_many_arguments)]
fn weak_order(
    py: Python<'_>,
    problem: &Bound<'_, Problem>,
    etas: Vec<f64>,
    eta_max: Option<f64>,
    levels: Option<usize>,
    horizon: f64,
    paths: u64,
    models: Option<Vec<String>>,
    observables: Vec<String>,
    substeps: usize,
    scheme: &str,
    no_integration_check: bool,
    sgd_paths: Option<u64>,
    sweep: Option<&str>,
    method: &str,
    tolerance: f64,
    seed: u64,
    threads: Option<usize>,
    sgd_noise: &str,
    linear_algebra: Option<&str>,
    krylov_tol: Option<f64>,
    progress: Option<&Bound<'_, PyAny>>,
) -> PyResult<Output> {
    let problem = problem.get();
    let p = &problem.inner;
    let etas = options::etas(&etas, eta_max, levels).or_raise()?;
    let scheme = scheme
        .parse()
        .map_err(|m| input(format!("--scheme: {m}")))?;
    let sweep = sweep.map(Sweep::parse).transpose().or_raise()?;
    let method: Method = method
        .parse()
        .map_err(|m| input(format!("--method: {m}")))?;
    let gaussian = gaussian_sgd(sgd_noise)?;
    let (linear_algebra, krylov) = coefficients(linear_algebra, krylov_tol)?;
    // Quadrature has no paths to stop: it runs to its end.
    let ledger = (method == Method::MonteCarlo).then(|| stoppable("weak-order"));
    let mut config = WeakOrderConfig::builder(etas, horizon, paths);
    if let Some(models) = models {
        config.models(options::models(&models).or_raise()?);
    }
    let config = config
        .observables(observables.iter().map(|o| o.trim().to_string()).collect())
        .seed(seed)
        .substeps(substeps)
        .scheme(scheme)
        .integration_check(!no_integration_check)
        .sgd_paths(sgd_paths.unwrap_or(0))
        .gaussian_sgd(gaussian)
        .linear_algebra(linear_algebra)
        .krylov(krylov)
        .method(method)
        .tolerance(tolerance)
        .threads(self::threads(threads))
        .sweep(sweep)
        .ledger(ledger.clone())
        .build()
        .or_raise()?;
    let watch = Watch::new("weak-order", config.total_paths(p));
    let stop = ledger.as_ref().map(Ledger::stop_flag);
    let report = watched(py, &watch, stop, progress, || {
        weak_order_with_progress(p, &problem.overrides, &config, &|n| watch.inc(n))
    })?;
    if let Some(ledger) = &ledger {
        finished(ledger)?;
    }
    Ok(Output::new(
        Report::WeakOrder(report.or_raise()?),
        problem.file(),
    ))
}

#[pyfunction]
#[pyo3(signature = (problem, *, eta, radius, centre, when, max_steps, paths, models, substeps, coupling, seed, threads, linear_algebra, krylov_tol, progress))]
#[allow(clippy::too_many_arguments)]
fn escape(
    py: Python<'_>,
    problem: &Bound<'_, Problem>,
    eta: f64,
    radius: Option<f64>,
    centre: Option<&Bound<'_, PyAny>>,
    when: Option<&str>,
    max_steps: u64,
    paths: u64,
    models: Vec<String>,
    substeps: usize,
    coupling: Option<&str>,
    seed: u64,
    threads: Option<usize>,
    linear_algebra: Option<&str>,
    krylov_tol: Option<f64>,
    progress: Option<&Bound<'_, PyAny>>,
) -> PyResult<Output> {
    let problem = problem.get();
    let p = &problem.inner;
    let (linear_algebra, krylov) = coefficients(linear_algebra, krylov_tol)?;
    // The centre is read first: a Python object cannot be read inside the region's
    // check, which only reads it for a ball.
    let centre = centre
        .map(|c| problem.point(Some(c), "centre"))
        .transpose()?;
    let region = options::region(radius, centre.map(|c| move || Ok(c)), when, p).or_raise()?;
    let ledger = stoppable("escape");
    let config = EscapeConfig::builder(eta, max_steps, paths, region)
        .models(options::models(&models).or_raise()?)
        .linear_algebra(linear_algebra)
        .krylov(krylov)
        .substeps(substeps)
        .coupling(options::coupling(coupling, p, false).or_raise()?)
        .seed(seed)
        .threads(self::threads(threads))
        .ledger(Some(ledger.clone()))
        .build()
        .or_raise()?;
    let watch = Watch::new("escape", config.paths());
    let report = watched(py, &watch, Some(ledger.stop_flag()), progress, || {
        escape_with_progress(p, &config, &|n| watch.inc(n))
    })?;
    finished(&ledger)?;
    Ok(Output::new(
        Report::Escape(report.or_raise()?),
        problem.file(),
    ))
}

/// `stationary`: the report, and why it is not a stationary point when it is not.
#[pyfunction]
#[pyo3(signature = (problem, *, method, tol, max_iter))]
fn stationary(
    problem: &Bound<'_, Problem>,
    method: &str,
    tol: Option<f64>,
    max_iter: Option<usize>,
) -> PyResult<(Output, Option<String>)> {
    let problem = problem.get();
    let method = method
        .parse()
        .map_err(|m| input(format!("--method: {m}")))?;
    let config = StationaryConfig::builder()
        .method(method)
        .tolerance(tol)
        .max_iter(max_iter)
        .build()
        .or_raise()?;
    let report = find_stationary(&problem.inner, &config).or_raise()?;
    let failure = (!report.converged).then(|| {
        let why = match report.stop {
            Stop::MaxIter => "the iteration limit",
            _ => "stalled: no step lowers the merit",
        };
        let shortest = |x| hasme::format::num(x, hasme::format::Style::Shortest);
        format!(
            "no stationary point: ‖∇f‖ = {} > {} (the tolerance) after {} {} iterations ({why})",
            shortest(report.gradient_norm),
            shortest(report.tolerance),
            report.iterations,
            report.method,
        )
    });
    Ok((
        Output::new(Report::Stationary(report), problem.file()),
        failure,
    ))
}

/// `report`: what the command prints, the files written (the page first) and the JSON
/// of every part by file name, as written.
#[pyfunction]
#[pyo3(signature = (problem, *, out, eta, quick, seed, threads, progress))]
#[allow(clippy::too_many_arguments, clippy::type_complexity)]
fn report(
    py: Python<'_>,
    problem: &Bound<'_, Problem>,
    out: PathBuf,
    eta: Option<f64>,
    quick: bool,
    seed: u64,
    threads: Option<usize>,
    progress: Option<&Bound<'_, PyAny>>,
) -> PyResult<(String, Vec<String>, Vec<(String, String)>)> {
    let problem = problem.get();
    let file = problem.file();
    let ledger = stoppable("report");
    let config = ReportConfig::builder(&out)
        .eta(eta)
        .quick(quick)
        .seed(seed)
        .threads(self::threads(threads))
        .file_label(Some(file.clone()))
        .set(problem.set.clone())
        .ledger(Some(ledger.clone()))
        .build()
        .or_raise()?;
    let watch = Watch::new("report", 0);
    let report = watched(py, &watch, Some(ledger.stop_flag()), progress, || {
        hasme::report::run_report(&problem.inner, &problem.overrides, &config, &watch)
    })?;
    finished(&ledger)?;
    let report = report.or_raise()?;
    let parts = report
        .parts_json(&file)
        .or_raise()?
        .into_iter()
        .map(|(name, value)| {
            options::json(&value)
                .map(|text| (name, text))
                .map_err(|e| run_error(format!("cannot write the report as JSON: {e}")))
        })
        .collect::<PyResult<Vec<_>>>()?;
    let files: Vec<String> = report
        .files
        .iter()
        .map(|f| f.display().to_string())
        .collect();
    let summary = format!(
        "{}  page: {}\n",
        report.summary(),
        files.first().map_or("", String::as_str)
    );
    Ok((summary, files, parts))
}

#[pymodule]
fn _hasme(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("InputError", py.get_type::<InputError>())?;
    m.add("RunError", py.get_type::<RunError>())?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add("DEFAULT_TOLERANCE", hasme::experiment::DEFAULT_TOLERANCE)?;
    m.add_class::<Problem>()?;
    m.add_class::<Output>()?;
    m.add_function(wrap_pyfunction!(moments, m)?)?;
    m.add_function(wrap_pyfunction!(simulate, m)?)?;
    m.add_function(wrap_pyfunction!(weak_order, m)?)?;
    m.add_function(wrap_pyfunction!(escape, m)?)?;
    m.add_function(wrap_pyfunction!(stationary, m)?)?;
    m.add_function(wrap_pyfunction!(report, m)?)?;
    Ok(())
}
