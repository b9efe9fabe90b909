//! What `hasme check` and `hasme derive` report: a problem's summary, and the
//! derivatives (and, given η, every model's coefficients) at a point. Each report is a
//! plain data structure with a stable JSON form (serde) and a text form (`Display`).
//!
//! JSON contract of `derive` (documented in the README): `file`, `variables`,
//! `params`, `point`, `value`, `gradient`, `hessian` (row-major nested arrays),
//! `noise_kind`, `noise_cov`, `observables` (name → value, in declaration order).

use crate::data::FiniteSumSummary;
use crate::format::{Named, Style};
use crate::models::matrix_free::{self, KrylovOptions, LanczosSteps, LinearAlgebra};
use crate::models::{
    Model, ModelError, ModelKind, ModelOptions, diffusion_series_terms, drift_series_terms,
};
use crate::problem::{
    MatrixVar, NoiseKind, Problem, ProblemError, RandomStart, Structure, VectorVar,
};
use crate::tape::Workspace;
use nalgebra::DMatrix;
use serde::Serialize;
use std::fmt;

/// Summary of a checked problem (`hasme check`).
#[derive(Clone, Debug, Serialize)]
pub struct CheckSummary {
    /// The file.
    pub file: String,
    /// Number of variables.
    pub dimension: usize,
    /// Variable names.
    pub variables: Vec<String>,
    /// Start point.
    pub start: Vec<f64>,
    /// The start file the start point was read from (`--start`), replacing the file's
    /// start values and random draws; absent when none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_file: Option<String>,
    /// Vector variables (name, first coordinate, length).
    pub vectors: Vec<VectorVar>,
    /// Matrix variables (name, first coordinate, rows, columns); absent when none.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub matrices: Vec<MatrixVar>,
    /// The seed the random start values were drawn with; absent when the file draws
    /// none (so the JSON of such a file does not depend on `--init-seed`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub init_seed: Option<u64>,
    /// The variables whose start values are drawn, with their draws' mean and sample
    /// standard deviation; absent when none, or when a start file replaced the draws.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub random_starts: Vec<RandomStart>,
    /// Params (after overrides), by name: scalars, then vectors, then matrices.
    pub params: Named<String, ParamValue>,
    /// Noise kind.
    pub noise_kind: NoiseKind,
    /// The finite sum (`mean(DATA, …)` objectives only): table, rows, columns, batch,
    /// sampling and the factor κ of Σ = κ C.
    pub finite_sum: Option<FiniteSumSummary>,
    /// Quadratic objective, constant noise.
    pub structure: Structure,
    /// Observable names.
    pub observables: Vec<String>,
    /// The `escape when …` region, if any.
    pub escape: Option<String>,
    /// Warnings, each printed as `file:line:col: …`.
    pub warnings: Vec<String>,
}

impl CheckSummary {
    /// Summarises a problem.
    ///
    /// ```
    /// use hasme::{Problem, inspect::CheckSummary};
    /// let p = Problem::from_str("var x\nminimize x^2\nnoise sd 0.1").unwrap();
    /// let s = CheckSummary::new(&p);
    /// assert!(s.structure.quadratic && s.structure.constant_noise);
    /// ```
    pub fn new(problem: &Problem) -> CheckSummary {
        CheckSummary {
            file: problem.source().name().to_string(),
            dimension: problem.dim(),
            variables: problem.variables().to_vec(),
            start: problem.start(),
            start_file: problem.start_file().map(str::to_string),
            vectors: problem.vectors().to_vec(),
            matrices: problem.matrices().to_vec(),
            init_seed: problem.init_seed_if_random(),
            random_starts: if problem.start_file().is_some() {
                Vec::new()
            } else {
                problem.random_starts().to_vec()
            },
            params: params_map(problem),
            noise_kind: problem.noise_kind(),
            finite_sum: problem.finite_sum().map(|fs| fs.summary()),
            structure: problem.structure(),
            observables: problem.observable_names().to_vec(),
            escape: problem.escape_region().map(str::to_string),
            warnings: problem
                .warnings()
                .iter()
                .map(|w| format!("{}:{}:{}: {}", w.file, w.line, w.column, w.message))
                .collect(),
        }
    }
}

/// A param's value: a number, a vector or a matrix (rows) of numbers.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum ParamValue {
    /// A scalar `param`.
    Scalar(f64),
    /// A vector `param`.
    Vector(Vec<f64>),
    /// A matrix `param`, row by row.
    Matrix(Vec<Vec<f64>>),
}

impl fmt::Display for ParamValue {
    /// As in the JSON (`1.0`, `[1.0,2.0]`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&serde_json::to_string(self).map_err(|_| fmt::Error)?)
    }
}

fn params_map(problem: &Problem) -> Named<String, ParamValue> {
    let scalars = problem
        .params()
        .iter()
        .map(|(n, v)| (n.clone(), ParamValue::Scalar(*v)));
    let vectors = problem
        .param_vectors()
        .iter()
        .map(|(n, v)| (n.clone(), ParamValue::Vector(v.clone())));
    let matrices = problem
        .param_matrices()
        .iter()
        .map(|m| (m.name.clone(), ParamValue::Matrix(m.to_rows())));
    scalars.chain(vectors).chain(matrices).collect()
}

/// `lo … hi` of some values, or their one value.
fn range_of(values: &[f64]) -> String {
    let (lo, hi) = values
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &x| {
            (a.min(x), b.max(x))
        });
    if lo == hi {
        num(lo)
    } else {
        format!("{} … {}", num(lo), num(hi))
    }
}

impl CheckSummary {
    /// How a variable is named in the text: `w[1..n]`, `W[1..r,1..c]`, or its name.
    fn label(&self, name: &str) -> String {
        if let Some(v) = self.vectors.iter().find(|v| v.name == name) {
            format!("{name}[1..{}]", v.len)
        } else if let Some(m) = self.matrices.iter().find(|m| m.name == name) {
            format!("{name}[1..{},1..{}]", m.rows, m.cols)
        } else {
            name.to_string()
        }
    }
}

fn yes_no(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

impl fmt::Display for CheckSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}: ok", self.file)?;
        // Vector and matrix variables print as one item, `w[1..n] = v` (or the range of
        // values).
        let mut vars: Vec<String> = Vec::new();
        let mut i = 0;
        while i < self.variables.len() {
            let array = self
                .vectors
                .iter()
                .find(|v| v.start == i)
                .map(|v| (&v.name, v.len))
                .or_else(|| {
                    self.matrices
                        .iter()
                        .find(|m| m.start == i)
                        .map(|m| (&m.name, m.rows * m.cols))
                });
            match array {
                Some((name, len)) => {
                    let value = range_of(&self.start[i..i + len]);
                    vars.push(format!("{} = {value}", self.label(name)));
                    i += len;
                }
                None => {
                    vars.push(format!("{} = {}", self.variables[i], num(self.start[i])));
                    i += 1;
                }
            }
        }
        writeln!(
            f,
            "  variables      {} (start {})",
            self.dimension,
            vars.join(", ")
        )?;
        if let Some(file) = &self.start_file {
            writeln!(
                f,
                "  start          from {file} (in place of the file's start values and random draws)"
            )?;
        }
        if let Some(seed) = self.init_seed {
            writeln!(f, "  random starts  init seed {seed}")?;
            for r in &self.random_starts {
                // Four significant digits: a summary of the draws, not their values.
                let short = |x: f64| crate::format::num(x, Style::Significant(4));
                let sd = r.sd.map_or(String::new(), |s| format!(", sd {}", short(s)));
                let draws = if r.count == 1 { "draw" } else { "draws" };
                writeln!(
                    f,
                    "    {} ~ {}({}, {}): {} {draws}, mean {}{sd}",
                    self.label(&r.name),
                    r.distribution,
                    num(r.parameters[0]),
                    num(r.parameters[1]),
                    r.count,
                    short(r.mean)
                )?;
            }
        }
        let params: Vec<String> = self
            .params
            .iter()
            .map(|(n, v)| match v {
                ParamValue::Matrix(rows) => {
                    let all: Vec<f64> = rows.iter().flatten().copied().collect();
                    let shape = format!("{n}[1..{},1..{}]", rows.len(), rows[0].len());
                    if all.windows(2).all(|w| w[0] == w[1]) || all.len() > 6 {
                        format!("{shape} = {}", range_of(&all))
                    } else {
                        let rows: Vec<String> = rows.iter().map(|r| vector(r)).collect();
                        format!("{n} = [{}]", rows.join(", "))
                    }
                }
                ParamValue::Vector(xs) => {
                    if xs.windows(2).all(|w| w[0] == w[1]) {
                        format!(
                            "{n}[1..{}] = {}",
                            xs.len(),
                            xs.first().map_or(String::new(), |x| num(*x))
                        )
                    } else if xs.len() <= 6 {
                        format!("{n} = {}", vector(xs))
                    } else {
                        format!(
                            "{n}[1..{}] = [{}, {}, …, {}]",
                            xs.len(),
                            num(xs[0]),
                            num(xs[1]),
                            num(xs[xs.len() - 1])
                        )
                    }
                }
                ParamValue::Scalar(x) => format!("{n} = {}", num(*x)),
            })
            .collect();
        writeln!(
            f,
            "  params         {}",
            if params.is_empty() {
                "none".into()
            } else {
                params.join(", ")
            }
        )?;
        match &self.finite_sum {
            None => writeln!(f, "  noise          {}", self.noise_kind)?,
            Some(fs) => {
                writeln!(
                    f,
                    "  noise          minibatch: Σ = C/b{} = {} C",
                    if fs.sampling == "with-replacement" {
                        ""
                    } else {
                        "·(n − b)/(n − 1)"
                    },
                    num(fs.noise_factor)
                )?;
                writeln!(
                    f,
                    "  data           `{}` ({}): {} rows, columns {}; reads {}",
                    fs.table,
                    fs.origin,
                    fs.rows,
                    fs.columns.join(", "),
                    if fs.used_columns.is_empty() {
                        "none".to_string()
                    } else {
                        fs.used_columns.join(", ")
                    }
                )?;
                writeln!(f, "  minibatch      batch {}, {}", fs.batch, fs.sampling)?;
            }
        }
        let degree = self
            .structure
            .objective_degree
            .map_or("not a polynomial".to_string(), |d| {
                format!("polynomial of degree {d}")
            });
        writeln!(
            f,
            "  quadratic      {} ({degree})",
            yes_no(self.structure.quadratic)
        )?;
        writeln!(
            f,
            "  constant noise {}",
            yes_no(self.structure.constant_noise)
        )?;
        let shown = if self.observables.len() > 12 {
            let head = self.observables[..10].join(", ");
            format!(
                "{head}, … ({} in all; --json lists them)",
                self.observables.len()
            )
        } else {
            self.observables.join(", ")
        };
        writeln!(f, "  observables    {shown}")?;
        if let Some(e) = &self.escape {
            writeln!(f, "  escape when    {e}")?;
        }
        if self.warnings.is_empty() {
            write!(f, "  warnings       none")
        } else {
            write!(f, "  warnings       {}", self.warnings.len())?;
            for w in &self.warnings {
                write!(f, "\n    warning: {w}")?;
            }
            Ok(())
        }
    }
}

/// Derivatives at a point (`hasme derive`). `models`, `eta` and `series` are filled
/// by the caller when η is given.
#[derive(Clone, Debug, Serialize)]
pub struct DeriveReport {
    /// The file.
    pub file: String,
    /// The seed the random start values were drawn with, when the file draws some.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub init_seed: Option<u64>,
    /// The start file the start point was read from (`--start`), when given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_file: Option<String>,
    /// Variable names.
    pub variables: Vec<String>,
    /// Params (after overrides), by name: scalars, then vectors.
    pub params: Named<String, ParamValue>,
    /// The point.
    pub point: Vec<f64>,
    /// f(x)
    pub value: f64,
    /// ∇f(x)
    pub gradient: Vec<f64>,
    /// ∇²f(x), row-major.
    pub hessian: Vec<Vec<f64>>,
    /// Noise kind.
    pub noise_kind: NoiseKind,
    /// Σ(x), row-major.
    pub noise_cov: Vec<Vec<f64>>,
    /// Observable values by name.
    pub observables: Named<String, f64>,
    /// Step size, when model coefficients were asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eta: Option<f64>,
    /// The relative tolerance of the Lanczos runs, when a model was computed without
    /// the Hessian (`--linear-algebra krylov`, or the size rule).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub krylov_tolerance: Option<f64>,
    /// Model coefficients by model name.
    #[serde(skip_serializing_if = "Named::is_empty")]
    pub models: Named<String, ModelEntry>,
    /// Backward-error series terms, when asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub series: Option<SeriesEntry>,
    /// Text blocks appended to the text form (models, series).
    #[serde(skip)]
    pub text_sections: Vec<String>,
}

impl DeriveReport {
    /// f, ∇f, ∇²f, Σ and the observables of a problem at a point.
    ///
    /// ```
    /// use hasme::{Problem, inspect::DeriveReport};
    /// let p = Problem::from_str("var x = 2\nminimize x^3").unwrap();
    /// let r = DeriveReport::new(&p, &[2.0]).unwrap();
    /// assert_eq!((r.value, r.gradient[0], r.hessian[0][0]), (8.0, 12.0, 12.0));
    /// ```
    pub fn new(problem: &Problem, x: &[f64]) -> Result<DeriveReport, ProblemError> {
        let d = problem.derivatives(x)?;
        Ok(DeriveReport {
            file: problem.source().name().to_string(),
            init_seed: problem.init_seed_if_random(),
            start_file: problem.start_file().map(str::to_string),
            variables: problem.variables().to_vec(),
            params: params_map(problem),
            point: x.to_vec(),
            value: d.value,
            gradient: d.gradient.iter().copied().collect(),
            hessian: rows(&d.hessian),
            noise_kind: problem.noise_kind(),
            noise_cov: rows(&d.noise_cov),
            observables: problem
                .observable_names()
                .iter()
                .zip(&d.observables)
                .map(|(n, v)| (n.clone(), *v))
                .collect(),
            eta: None,
            krylov_tolerance: None,
            models: Named::default(),
            series: None,
            text_sections: Vec::new(),
        })
    }
}

/// A matrix as row-major nested vectors (the JSON layout of every matrix).
pub fn rows(m: &DMatrix<f64>) -> Vec<Vec<f64>> {
    (0..m.nrows())
        .map(|i| m.row(i).iter().copied().collect())
        .collect()
}

/// A number for text output: the shortest exact form when short, else 10 significant
/// digits in scientific notation ([`Style::Exact`]).
pub fn num(v: f64) -> String {
    crate::format::num(v, Style::Exact)
}

/// A vector for text output.
pub fn vector(v: &[f64]) -> String {
    let parts: Vec<String> = v.iter().map(|x| num(*x)).collect();
    format!("[{}]", parts.join(", "))
}

/// A matrix for text output: one row per line, columns aligned, indented.
pub fn matrix(m: &[Vec<f64>], indent: usize) -> String {
    let cells: Vec<Vec<String>> = m
        .iter()
        .map(|r| r.iter().map(|x| num(*x)).collect())
        .collect();
    let width = cells.iter().flatten().map(String::len).max().unwrap_or(1);
    let pad = " ".repeat(indent);
    cells
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let row: Vec<String> = r.iter().map(|c| format!("{c:>width$}")).collect();
            let lead = if i == 0 { String::new() } else { pad.clone() };
            format!("{lead}[{}]", row.join("  "))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

impl fmt::Display for DeriveReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let point: Vec<String> = self
            .variables
            .iter()
            .zip(&self.point)
            .map(|(n, v)| format!("{n} = {}", num(*v)))
            .collect();
        writeln!(f, "{} at ({})", self.file, point.join(", "))?;
        if let Some(eta) = self.eta {
            writeln!(f, "  eta        {}", num(eta))?;
        }
        writeln!(f, "  f          {}", num(self.value))?;
        writeln!(f, "  gradient   {}", vector(&self.gradient))?;
        writeln!(f, "  hessian    {}", matrix(&self.hessian, 13))?;
        writeln!(
            f,
            "  noise_cov  {}   ({})",
            matrix(&self.noise_cov, 13),
            self.noise_kind
        )?;
        write!(f, "  observables")?;
        let width = self
            .observables
            .iter()
            .map(|(n, _)| n.len())
            .max()
            .unwrap_or(0);
        for (n, v) in self.observables.iter() {
            // A non-finite value (never produced: evaluation fails first) prints empty.
            let v = if v.is_finite() {
                num(*v)
            } else {
                String::new()
            };
            write!(f, "\n    {n:<width$}  {v}")?;
        }
        for s in &self.text_sections {
            write!(f, "\n{s}")?;
        }
        Ok(())
    }
}

/// One model's entry in [`DeriveReport::models`]: its coefficients at the point, or
/// why it has none.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum ModelEntry {
    /// The model's drift and diffusion (Γ, row-major).
    Coefficients {
        /// The drift.
        drift: Vec<f64>,
        /// The diffusion matrix Γ = σσᵀ, row-major.
        diffusion: Vec<Vec<f64>>,
        /// The model's weak order.
        weak_order: u32,
        /// What was noticed (e.g. a clipped Γ).
        warnings: Vec<String>,
        /// The Lanczos steps, when computed without the Hessian; absent when dense.
        #[serde(skip_serializing_if = "Option::is_none")]
        lanczos_steps: Option<LanczosSteps>,
    },
    /// The model failed at this point (e.g. `ηλ_max ≥ 1` for `hasme`).
    Error {
        /// The model's error.
        error: String,
    },
}

/// The backward-error series terms in [`DeriveReport::series`], or why they failed.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum SeriesEntry {
    /// Term k of the drift and diffusion series, k = 0, 1, ….
    Terms {
        /// Drift terms `−(ηH)^k g/(k+1)`.
        drift: Vec<Vec<f64>>,
        /// Diffusion terms `η 𝒬^k(Σ)/(k+1)`, row-major.
        diffusion: Vec<Vec<Vec<f64>>>,
    },
    /// The series could not be computed.
    Error {
        /// The error.
        error: String,
    },
}

/// Which models `derive` adds, for which step size.
#[derive(Clone, Debug)]
pub struct ModelRequest {
    /// The step size η.
    pub eta: f64,
    /// The models, in the order to report them.
    pub models: Vec<ModelKind>,
    /// Number of backward-error series terms to print (0: none).
    pub series_terms: usize,
    /// Fail on (default) or clip a non-PSD Σ or Γ.
    pub options: ModelOptions,
    /// Dense or matrix-free coefficients; `None`: [`LinearAlgebra::for_dimension`] for
    /// the models with a matrix-free form, dense for the others. With
    /// `Some(LinearAlgebra::Krylov)` a model with no matrix-free form (`hasme-exact`,
    /// `series:K`) is reported as failed ([`ModelError::DenseOnly`]).
    pub linear_algebra: Option<LinearAlgebra>,
    /// The Lanczos settings, when the coefficients are matrix-free.
    pub krylov: KrylovOptions,
}

impl DeriveReport {
    /// Adds each requested model's drift and diffusion (and the series terms) at the
    /// report's point. A model that fails (e.g. `ηλ_max ≥ 1` for `hasme`) is reported
    /// under `models.NAME.error` and in the returned list of failures; the others are
    /// still computed.
    ///
    /// ```
    /// use hasme::{Problem, inspect::{DeriveReport, ModelEntry, ModelRequest}, models::{ModelKind, ModelOptions}};
    /// let p = Problem::from_str("var x = 1\nminimize x^2\nnoise sd 0.5").unwrap();
    /// let mut r = DeriveReport::new(&p, &[1.0]).unwrap();
    /// let req = ModelRequest { eta: 0.1, models: ModelKind::all().to_vec(), series_terms: 2, options: ModelOptions::default(), linear_algebra: None, krylov: Default::default() };
    /// let failures = r.add_models(&p, &req).unwrap();
    /// assert!(failures.is_empty());
    /// let Some(ModelEntry::Coefficients { drift, .. }) = r.models.get("sme2") else {
    ///     panic!("sme2 has coefficients at x = 1")
    /// };
    /// assert!((drift[0] - (-2.0 - 0.05 * 2.0 * 2.0)).abs() < 1e-12); // −g − (η/2)Hg
    /// ```
    pub fn add_models(
        &mut self,
        problem: &Problem,
        request: &ModelRequest,
    ) -> Result<Vec<(ModelKind, ModelError)>, ProblemError> {
        let local = problem.local(&self.point)?;
        let eta = request.eta;
        self.eta = Some(eta);
        let mut failures = Vec::new();
        let mut text = String::from("  models");
        let width = request
            .models
            .iter()
            .map(|m| m.to_string().len())
            .max()
            .unwrap_or(0);
        let rule = LinearAlgebra::for_dimension(local.dim());
        let mut ws = Workspace::default();
        let mut grad = vec![0.0; local.dim()];
        for kind in &request.models {
            let name = kind.to_string();
            let krylov = match request.linear_algebra {
                Some(la) => la == LinearAlgebra::Krylov,
                None => rule == LinearAlgebra::Krylov && matrix_free::has_matrix_free_form(*kind),
            };
            let result = if krylov {
                self.krylov_tolerance = Some(request.krylov.tolerance());
                let hvp = |v: &[f64], out: &mut [f64]| -> Result<(), ProblemError> {
                    problem.hessian_vector_with(&self.point, v, &mut ws, &mut grad, out)?;
                    Ok(())
                };
                matrix_free::coefficients(
                    *kind,
                    &local,
                    eta,
                    &request.options,
                    &request.krylov,
                    hvp,
                )
                .map(|c| (c.drift, c.diffusion, c.warnings, Some(c.steps)))
            } else {
                kind.coefficients_with(&local, eta, &request.options)
                    .map(|c| (c.drift, c.diffusion, c.warnings, None))
                    .map_err(ProblemError::from)
            };
            let result = match result {
                Ok(c) => Ok(c),
                Err(ProblemError::Model(e)) => Err(e),
                // A Hessian-vector product failed to evaluate: the problem's error, as
                // when the derivatives themselves fail.
                Err(e) => return Err(e),
            };
            match result {
                Ok((drift, diffusion, warnings, steps)) => {
                    let diffusion = rows(&diffusion);
                    let drift: Vec<f64> = drift.iter().copied().collect();
                    self.models.0.push((
                        name.clone(),
                        ModelEntry::Coefficients {
                            drift: drift.clone(),
                            diffusion: diffusion.clone(),
                            weak_order: kind.weak_order(),
                            warnings: warnings.clone(),
                            lanczos_steps: steps,
                        },
                    ));
                    text.push_str(&format!(
                        "\n    {name:<width$}  drift      {}",
                        vector(&drift)
                    ));
                    let pad = width + 17;
                    text.push_str(&format!(
                        "\n    {:<width$}  diffusion  {}",
                        "",
                        matrix(&diffusion, pad)
                    ));
                    if let Some(k) = steps {
                        text.push_str(&format!(
                            "\n    {:<width$}  lanczos    drift {} steps, diffusion {} steps (tolerance {:e})",
                            "",
                            k.drift,
                            k.diffusion,
                            request.krylov.tolerance()
                        ));
                    }
                    for w in &warnings {
                        text.push_str(&format!("\n    {:<width$}  warning: {w}", ""));
                    }
                }
                Err(e) => {
                    self.models.0.push((
                        name.clone(),
                        ModelEntry::Error {
                            error: e.to_string(),
                        },
                    ));
                    text.push_str(&format!("\n    {name:<width$}  error: {e}"));
                    failures.push((*kind, e));
                }
            }
        }
        self.text_sections.push(text);
        if request.series_terms > 0 {
            let k = request.series_terms;
            let series = (|| -> Result<SeriesEntry, ModelError> {
                let drift = drift_series_terms(&local, eta, k)?;
                let diffusion = diffusion_series_terms(&local, eta, k)?;
                let mut text = String::from(
                    "  series (drift term k = −(ηH)^k g/(k+1); diffusion term k = η 𝒬^k(Σ)/(k+1), 𝒬(S) = S − PSPᵀ, P = I − ηH)",
                );
                for (i, (b, g)) in drift.iter().zip(&diffusion).enumerate() {
                    let b: Vec<f64> = b.iter().copied().collect();
                    text.push_str(&format!("\n    k = {i:<3}  drift      {}", vector(&b)));
                    text.push_str(&format!("\n{:13}diffusion  {}", "", matrix(&rows(g), 24)));
                }
                self.text_sections.push(text);
                Ok(SeriesEntry::Terms {
                    drift: drift.iter().map(|t| t.iter().copied().collect()).collect(),
                    diffusion: diffusion.iter().map(rows).collect(),
                })
            })();
            match series {
                Ok(v) => self.series = Some(v),
                Err(e) => {
                    self.series = Some(SeriesEntry::Error {
                        error: e.to_string(),
                    });
                    self.text_sections.push(format!("  series  error: {e}"));
                    failures.push((ModelKind::Series(k as u32), e));
                }
            }
        }
        Ok(failures)
    }
}
