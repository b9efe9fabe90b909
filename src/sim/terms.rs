//! Terms: the drift `b(x)` and a diffusion factor `σ(x)` (`σσᵀ = Γ`) of each SDE model
//! at the simulator's current point, and SGD's own step (docs/models.md §1–2).
//!
//! One point at a time, a model's coefficients are the models' own code
//! ([`crate::models::ModelWorkspace`]), run on buffers the term keeps, so nothing is
//! allocated per step: up to `JACOBI_MAX_DIM` in [`Arithmetic::Jacobi`] (its
//! allocation-free eigensolver), above it through `Model::coefficients` itself. A
//! block of points at d ≤ 2 has closed forms of its own (`ModelTerm::eval_lanes`),
//! tested lane by lane against `Model::coefficients`.
//!
//! Domain failures are the models' own [`ModelError`]s (`ηλ_max ≥ 1`, an indefinite Γ,
//! overflow); the simulator counts them as divergences of the path for that model.

use crate::models::{
    Arithmetic, Local, ModelError, ModelKind, ModelOptions, ModelWorkspace, Noise, PSD_TOLERANCE,
    Point, ell_square,
};
use crate::problem::{NoiseBuffers, NoiseKind, Problem, ProblemError};
use crate::tape::{Jets, Workspace};
use nalgebra::{DMatrix, DVector};

use super::krylov::NoiseDrive;
use super::lanes::{LANES, LANES_MAX_DIM, LaneTape, Order, Row};
use super::vmath::ell as ell_lanes;
use crate::models::linalg::{EigenScratch, JACOBI_MAX_DIM, NoConvergence, mat_vec, sym_sqrt};

/// Why a process stopped at a point.
#[derive(Debug)]
pub enum Failure {
    /// The path left the domain of the process (a non-finite state or evaluation,
    /// `ηλ_max ≥ 1`, an indefinite diffusion…): counted as a divergence, with the
    /// reason.
    Diverged(String),
    /// The problem itself is invalid at a finite point (Σ(x) not symmetric positive
    /// semidefinite): the run stops with this error.
    Fatal(ProblemError),
}

/// Σ(x), evaluated as cheaply as the problem allows: once when it is constant.
#[derive(Clone, Debug)]
pub(crate) enum NoiseSource {
    /// No noise (Σ = 0).
    Zero,
    /// Σ and its symmetric square root, constant.
    Constant { cov: Vec<f64>, sqrt: Vec<f64> },
    /// Σ(x) from the problem at each point.
    State,
}

impl NoiseSource {
    /// Chooses the cheapest source for `problem`, evaluating Σ at `start` once when it
    /// is constant. For a matrix-free run (`diagonal`) a `noise sd` or `noise diag` is
    /// read as its diagonal at each point ([`Evaluator::noise_times`]: O(d), no d×d
    /// matrix), whether or not it depends on x.
    pub(crate) fn for_problem(
        problem: &Problem,
        start: &[f64],
        diagonal: bool,
    ) -> Result<NoiseSource, ProblemError> {
        let kind = problem.noise_kind();
        if kind == NoiseKind::None {
            return Ok(NoiseSource::Zero);
        }
        if !problem.structure().constant_noise
            || (diagonal && matches!(kind, NoiseKind::Sd | NoiseKind::Diag))
        {
            return Ok(NoiseSource::State);
        }
        let d = problem.dim();
        let cov: Vec<f64> = problem.noise_cov(start)?.as_slice().to_vec();
        if cov.iter().all(|&v| v == 0.0) {
            return Ok(NoiseSource::Zero);
        }
        let mut sqrt = vec![0.0; d * d];
        let mut scratch = EigenScratch::new(d);
        sym_sqrt(d, &cov, PSD_TOLERANCE, &mut scratch, &mut sqrt)
            .map_err(|_| eigen_problem(start))?;
        Ok(NoiseSource::Constant { cov, sqrt })
    }
}

fn eigen_problem(x: &[f64]) -> ProblemError {
    ProblemError::Model(ModelError::EigenFailed {
        quantity: "the noise covariance",
        reason: "no convergence within the iteration budget",
        point: Point(x.to_vec()),
    })
}

/// A process whose state is not finite has diverged.
pub(crate) fn finite_state(x: &[f64]) -> Result<(), Failure> {
    match x.iter().position(|v| !v.is_finite()) {
        None => Ok(()),
        Some(i) => Err(Failure::Diverged(format!(
            "the state is not finite (coordinate {} = {})",
            i + 1,
            x[i]
        ))),
    }
}

/// Evaluates f's gradient and Hessian and Σ at points, into reusable buffers.
#[derive(Debug)]
pub(crate) struct Evaluator<'p> {
    pub problem: &'p Problem,
    pub noise: &'p NoiseSource,
    ws: Workspace,
    jets: Jets,
    /// Σ(x) when state-dependent (row-major; Σ is symmetric so storage order is moot).
    cov: Vec<f64>,
    /// Reused by `Problem::noise_cov_into`, so evaluating Σ(x) allocates nothing.
    noise_buffers: NoiseBuffers,
    /// Σ(x)^{1/2} when state-dependent and asked for.
    sqrt: Vec<f64>,
    /// The diagonal of Σ(x) (`noise sd`, `noise diag`) on the matrix-free path.
    diag: Vec<f64>,
    scratch: EigenScratch,
}

impl<'p> Evaluator<'p> {
    pub(crate) fn new(problem: &'p Problem, noise: &'p NoiseSource) -> Evaluator<'p> {
        Evaluator {
            problem,
            noise,
            ws: Workspace::default(),
            jets: Jets::default(),
            cov: Vec::new(),
            noise_buffers: NoiseBuffers::default(),
            sqrt: Vec::new(),
            diag: Vec::new(),
            scratch: EigenScratch::new(0),
        }
    }

    /// ∇f at `x` (into `self.jets`) and the noise `u` of the increment `dw` for the
    /// matrix-free `drive` ([`Problem::gradient_and_factor_with`] in one pass for a
    /// finite sum's factor, else [`Evaluator::noise_times`]): `false` when Σ = 0.
    pub(crate) fn gradient_and_noise(
        &mut self,
        x: &[f64],
        drive: NoiseDrive,
        dw: &[f64],
        u: &mut [f64],
    ) -> Result<bool, Failure> {
        match drive {
            NoiseDrive::Factor => {
                self.gradient_and_factor(x, dw, u)?;
                Ok(true)
            }
            NoiseDrive::Root => {
                self.gradient(x)?;
                self.noise_times(x, dw, u)
            }
        }
    }

    /// `u = Σ(x)^{1/2} ΔW` for the d-dimensional increment `dw` into `u`: `false` (u
    /// untouched) when Σ = 0. A diagonal Σ (`noise sd`, `noise diag`) is read as its
    /// diagonal at `x`, O(d); a constant Σ uses its root; any other Σ(x) is formed and
    /// factored at `x` (d×d). The matrix-free steps' noise when it is not a finite
    /// sum's. Failures as [`Evaluator::state_noise`]'s.
    pub(crate) fn noise_times(
        &mut self,
        x: &[f64],
        dw: &[f64],
        u: &mut [f64],
    ) -> Result<bool, Failure> {
        let d = x.len();
        match self.noise {
            NoiseSource::Zero => Ok(false),
            NoiseSource::Constant { sqrt, .. } => {
                mat_vec(d, sqrt, dw, u);
                Ok(true)
            }
            NoiseSource::State
                if matches!(self.problem.noise_kind(), NoiseKind::Sd | NoiseKind::Diag) =>
            {
                self.diag.resize(d, 0.0);
                if let Err(e) =
                    (self.problem).noise_diagonal_into(x, &mut self.noise_buffers, &mut self.diag)
                {
                    // Not finite: the path left where the noise is defined; finite but
                    // negative: the problem's fault.
                    return Err(if self.diag.iter().all(|v| v.is_finite()) {
                        Failure::Fatal(e)
                    } else {
                        Failure::Diverged(e.to_string())
                    });
                }
                for ((u, &v), &w) in u.iter_mut().zip(&self.diag).zip(dw) {
                    *u = v.max(0.0).sqrt() * w;
                }
                Ok(true)
            }
            NoiseSource::State => {
                self.state_noise(x, true)?;
                mat_vec(d, &self.sqrt, dw, u);
                Ok(true)
            }
        }
    }

    /// Sizes the d×d buffers of a state-dependent Σ on first use: an evaluator that
    /// never forms Σ(x) (the matrix-free path, a constant Σ) holds no d×d matrix.
    fn size_noise(&mut self) {
        let d = self.problem.dim();
        if self.cov.len() != d * d {
            self.cov = vec![0.0; d * d];
            self.sqrt = vec![0.0; d * d];
            self.scratch = EigenScratch::new(d);
        }
    }

    /// Gradient and Hessian of f at `x` (into `self.jets`).
    fn derivatives(&mut self, x: &[f64]) -> Result<(), Failure> {
        finite_state(x)?;
        self.problem
            .objective_derivatives_with(x, &mut self.ws, &mut self.jets)
            .map_err(|e| Failure::Diverged(e.to_string()))
    }

    /// Value and gradient of f at `x` (into `self.jets`, no Hessian): SGD's need.
    pub(crate) fn gradient(&mut self, x: &[f64]) -> Result<(), Failure> {
        finite_state(x)?;
        self.problem
            .gradient_with(x, &mut self.ws, &mut self.jets)
            .map_err(|e| Failure::Diverged(e.to_string()))
    }

    /// Σ(x) (state-dependent case) into `self.cov`; the symmetric square root too when
    /// `with_sqrt`. Non-finite Σ is a divergence; a finite Σ that is not symmetric PSD
    /// is fatal.
    pub(crate) fn state_noise(&mut self, x: &[f64], with_sqrt: bool) -> Result<(), Failure> {
        self.size_noise();
        match self
            .problem
            .noise_cov_into(x, &mut self.noise_buffers, &mut self.cov)
        {
            Ok(()) => {}
            Err(e) => {
                // Tell a non-finite Σ (the path went where the noise is undefined: a
                // divergence) from a finite Σ that is not a covariance (the problem is
                // wrong there: fatal) by evaluating the entries without the checks.
                return Err(match self.problem.noise_cov_derivatives(x) {
                    Err(_) => Failure::Diverged(e.to_string()),
                    Ok(_) => Failure::Fatal(e),
                });
            }
        }
        if with_sqrt {
            self.noise_sqrt(x)?;
        }
        Ok(())
    }

    /// `self.sqrt = Σ^{1/2}` for the Σ in `self.cov`.
    fn noise_sqrt(&mut self, x: &[f64]) -> Result<(), Failure> {
        sym_sqrt(
            x.len(),
            &self.cov,
            PSD_TOLERANCE,
            &mut self.scratch,
            &mut self.sqrt,
        )
        .map_err(|NoConvergence| {
            Failure::Diverged(format!(
                "the eigendecomposition of Σ(x) did not converge at {}",
                Point(x.to_vec())
            ))
        })?;
        Ok(())
    }

    /// Prepares SGD's noise factor at `x` ([`Evaluator::sgd_sqrt`]): for a
    /// state-dependent Σ, from `checked` (Σ(x) already known to pass the problem's
    /// checks, e.g. batched over lanes) or else from the problem.
    pub(crate) fn sgd_noise(&mut self, x: &[f64], checked: Option<&[f64]>) -> Result<(), Failure> {
        if !matches!(self.noise, NoiseSource::State) {
            return Ok(());
        }
        match checked {
            Some(c) => {
                self.size_noise();
                self.cov.copy_from_slice(c);
                self.noise_sqrt(x)
            }
            None => self.state_noise(x, true),
        }
    }

    /// ∇f at `x` (into `self.jets`, [`Evaluator::gradient_at`]) and `u = A(x)ζ` for
    /// the factor A of a finite sum's Σ(x) (`ζ` of n entries), in one pass over the
    /// rows ([`Problem::gradient_and_factor_with`]): the matrix-free steps' need.
    pub(crate) fn gradient_and_factor(
        &mut self,
        x: &[f64],
        zeta: &[f64],
        u: &mut [f64],
    ) -> Result<(), Failure> {
        finite_state(x)?;
        self.problem
            .gradient_and_factor_with(x, zeta, &mut self.ws, &mut self.jets, u)
            .map_err(|e| Failure::Diverged(e.to_string()))
    }

    /// ∇f as the last [`Evaluator::gradient`] or [`Evaluator::gradient_and_factor`]
    /// left it.
    pub(crate) fn gradient_at(&self) -> &[f64] {
        self.jets.gradient(0)
    }

    /// SGD's noise factor Σ^{1/2} (none for Σ = 0), as [`Evaluator::sgd_noise`] left it.
    pub(crate) fn sgd_sqrt(&self) -> Option<&[f64]> {
        self.noise_refs(true, true).1
    }

    /// [`Evaluator::derivatives`] and [`Evaluator::state_noise`] together, in one pass
    /// over the rows of a finite sum (each example's gradient serves ∇f and Σ). A
    /// finite sum's Σ is a covariance by construction, so every failure is a divergence.
    fn derivatives_and_state_noise(&mut self, x: &[f64], with_sqrt: bool) -> Result<(), Failure> {
        finite_state(x)?;
        self.size_noise();
        self.problem
            .derivatives_and_noise_with(
                x,
                &mut self.ws,
                &mut self.jets,
                &mut self.noise_buffers,
                &mut self.cov,
            )
            .map_err(|e| Failure::Diverged(e.to_string()))?;
        if with_sqrt {
            self.noise_sqrt(x)?;
        }
        Ok(())
    }
}

impl Evaluator<'_> {
    /// Σ and its square root as last evaluated: the constant ones, or those of the
    /// last [`Evaluator::state_noise`] call (`sqrt` only when it computed one).
    pub(crate) fn noise_refs(
        &self,
        needs_noise: bool,
        with_sqrt: bool,
    ) -> (Option<&[f64]>, Option<&[f64]>) {
        match self.noise {
            _ if !needs_noise => (None, None),
            NoiseSource::Zero => (None, None),
            NoiseSource::Constant { cov, sqrt } => (Some(cov), Some(sqrt)),
            NoiseSource::State => (Some(&self.cov), with_sqrt.then_some(&self.sqrt[..])),
        }
    }
}

/// One SGD step in place: `x ← x − η(∇f(x) + z)`, `z = −Σ(x)^{1/2} ξ` (docs/models.md §1, §4).
pub(crate) fn sgd_step(
    ev: &mut Evaluator<'_>,
    eta: f64,
    x: &mut [f64],
    xi: &[f64],
    tmp: &mut [f64],
) -> Result<(), Failure> {
    ev.gradient(x)?;
    ev.sgd_noise(x, None)?;
    sgd_move(eta, x, xi, ev.jets.gradient(0), ev.sgd_sqrt(), tmp);
    Ok(())
}

/// One Gaussian SGD step of a matrix-free run in place (docs/models.md §8):
/// `x ← x + η(u − ∇f(x))` with the noise `u` of [`Evaluator::gradient_and_noise`] for
/// ξ: for a finite sum `u = A(x)ξ`, ξ of n entries, so `z = −Aξ` has exactly the
/// covariance Σ(x); otherwise `u = Σ(x)^{1/2}ξ` (a diagonal Σ read as its diagonal).
/// No d×d matrix either way, but for a state-dependent full `noise cov`.
pub(crate) fn sgd_matrix_free_step(
    ev: &mut Evaluator<'_>,
    drive: NoiseDrive,
    eta: f64,
    x: &mut [f64],
    xi: &[f64],
    tmp: &mut [f64],
) -> Result<(), Failure> {
    let noisy = ev.gradient_and_noise(x, drive, xi, tmp)?;
    for (i, g) in ev.gradient_at().iter().enumerate() {
        x[i] += eta * (if noisy { tmp[i] } else { 0.0 } - g);
    }
    Ok(())
}

/// `x ← x + η(S ξ − g)` (`S` = Σ(x)^{1/2}, none for Σ = 0): the SGD step given its
/// gradient and noise factor.
pub(crate) fn sgd_move(
    eta: f64,
    x: &mut [f64],
    xi: &[f64],
    g: &[f64],
    sqrt: Option<&[f64]>,
    tmp: &mut [f64],
) {
    let d = x.len();
    match sqrt {
        Some(s) => {
            mat_vec(d, s, xi, tmp);
            for i in 0..d {
                x[i] += eta * (tmp[i] - g[i]);
            }
        }
        None => {
            for i in 0..d {
                x[i] -= eta * g[i];
            }
        }
    }
}

/// A drift and a diffusion at a point: what a [`super::Scheme`] steps with.
pub trait Term {
    /// Evaluates the coefficients at `x` for a move driven by the Brownian increment
    /// `dw` (plus `dw2` when given: a coarse move over two increments). A term gives
    /// either its factor `σ(x)` ([`Coefficients::Factor`], not reading the increments)
    /// or, matrix-free, the increment `σ(x)(dw + dw2)` itself
    /// ([`Coefficients::Increment`]).
    fn eval(
        &mut self,
        x: &[f64],
        dw: &[f64],
        dw2: Option<&[f64]>,
    ) -> Result<Coefficients<'_>, Failure>;
}

/// A term's coefficients at a point ([`Term::eval`]).
#[derive(Clone, Copy, Debug)]
pub enum Coefficients<'a> {
    /// The drift and, unless the diffusion is zero, the factor `σ` (row-major `d×d`).
    Factor(&'a [f64], Option<&'a [f64]>),
    /// The drift and, unless the diffusion is zero, the increment `σ(x)ΔW` for the
    /// increments given (docs/models.md §8: how the matrix-free models step).
    Increment(&'a [f64], Option<&'a [f64]>),
}

/// The coefficients of one model at one point ([`Term::eval`]), evaluated without
/// allocation.
#[derive(Debug)]
pub(crate) struct ModelTerm<'p> {
    ev: Evaluator<'p>,
    coeffs: Coeffs,
}

/// How a model's coefficients are evaluated, chosen once when its term is built
/// ([`Choice::of`]): over a block of lanes when the objective's tape can be batched,
/// else one point at a time. A new way of evaluating (e.g. matrix-free for large d) is
/// a new variant.
#[derive(Debug)]
pub(crate) enum Choice<'p> {
    /// Over a block of points ([`LaneTerm::eval_lanes`]), in one of its [`LaneForm`]s.
    Lanes(Box<LaneTerm<'p>>),
    /// One point at a time ([`Term::eval`]).
    PerPoint(Box<ModelTerm<'p>>),
}

/// The formulas of a lane-batched term.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum LaneForm {
    /// Closed forms at d = 1 for a constant Σ (or none), its entry and square root
    /// given ([`scalar_coefficients`]).
    Scalar(Scalar, Option<(f64, f64)>),
    /// Closed forms at d = 2 in passes over the block ([`LaneTerm::two_by_two`]).
    TwoByTwo,
    /// The batched tape's derivatives, then the per-point formulas lane by lane.
    Tape,
}

/// The coefficients of one model at a block of points ([`LaneTerm::eval_lanes`]), with
/// its per-point term for the lanes the batched code leaves to it.
#[derive(Debug)]
pub(crate) struct LaneTerm<'p> {
    point: ModelTerm<'p>,
    form: LaneForm,
    /// The objective's tape batched over lanes (d ≤ 4, single output), carrying the
    /// Hessian only when the model needs it.
    tape: LaneTape,
    /// The entries of Σ(x) batched over lanes, for the d = 2 closed forms when Σ
    /// depends on the state.
    noise_lanes: Option<LaneTape>,
    /// ∇f and ∇²f of the lane being finished.
    g: Vec<f64>,
    h: Vec<f64>,
    /// d = 2 blocks: Σ and √Σ per lane (entries 00, 01, 11), and the lanes left to the
    /// general code.
    cov: [[f64; LANES]; 3],
    sqrt: [[f64; LANES]; 3],
    slow: [bool; LANES],
    /// Per-lane intermediate results of the d = 2 closed forms.
    tmp: [[f64; LANES]; 10],
}

/// One model's coefficients at a point: the models' own code ([`ModelWorkspace`]) on
/// buffers kept for the term.
#[derive(Debug)]
struct Coeffs {
    kind: ModelKind,
    eta: f64,
    ws: ModelWorkspace,
}

/// Drift, factor and outcome per lane of a block evaluation, in the block's layout
/// (structure of arrays: one row of [`LANES`] numbers per entry).
#[derive(Debug)]
pub(crate) struct LaneCoefficients {
    /// Entry `i` of the drift in row `i` (`d` rows used).
    pub drift: [Row; LANES_MAX_DIM],
    /// Entry `(i, j)` of the factor in row `i·d + j` (`d²` rows used).
    pub factor: [Row; LANES_MAX_DIM * LANES_MAX_DIM],
    /// Whether lane `l`'s diffusion is nonzero (else its factor entries are
    /// meaningless).
    pub noisy: [bool; LANES],
    /// Why lane `l` could not be evaluated. The caller takes (`Option::take`) every
    /// failure, so all entries are `None` when an evaluation starts.
    pub failure: Vec<Option<Failure>>,
    /// Whether the last evaluation stored any failure.
    pub any_failure: bool,
}

impl LaneCoefficients {
    pub(crate) fn new() -> LaneCoefficients {
        LaneCoefficients {
            drift: [[0.0; LANES]; LANES_MAX_DIM],
            factor: [[0.0; LANES]; LANES_MAX_DIM * LANES_MAX_DIM],
            noisy: [false; LANES],
            failure: (0..LANES).map(|_| None).collect(),
            any_failure: false,
        }
    }

    /// Lane `l`'s drift (`d` entries).
    #[cfg(test)]
    pub(crate) fn drift_at(&self, l: usize, d: usize) -> Vec<f64> {
        (0..d).map(|i| self.drift[i][l]).collect()
    }

    /// Lane `l`'s factor (row-major `d×d`), zero when its diffusion is.
    #[cfg(test)]
    pub(crate) fn factor_at(&self, l: usize, d: usize) -> Vec<f64> {
        let noisy = self.noisy[l];
        (0..d * d)
            .map(|r| if noisy { self.factor[r][l] } else { 0.0 })
            .collect()
    }
}

impl<'p> ModelTerm<'p> {
    /// The per-point term of model `kind` at step size `eta`.
    pub(crate) fn new(kind: ModelKind, eta: f64, ev: Evaluator<'p>) -> ModelTerm<'p> {
        let d = ev.problem.dim();
        ModelTerm {
            ev,
            coeffs: Coeffs {
                kind,
                eta,
                ws: ModelWorkspace::new(d),
            },
        }
    }

    /// Whether the model's diffusion needs Σ, and its square root.
    fn noise_needs(&self, d: usize) -> (bool, bool) {
        let kind = self.coeffs.kind;
        let one_term = d <= JACOBI_MAX_DIM && matches!(kind.series_order(), Some(k) if k <= 1);
        (kind != ModelKind::Gf, one_term)
    }
}

impl<'p> Choice<'p> {
    /// Model `kind`'s term at step size `eta`, evaluated the fastest way the problem
    /// allows: closed forms over lanes at d = 1 (constant Σ) and d = 2 for the models
    /// that have them, the batched tape with per-lane formulas for any other d ≤ 4
    /// objective with one output ([`LaneTape::new`]), one point at a time otherwise.
    pub(crate) fn of(kind: ModelKind, eta: f64, ev: Evaluator<'p>) -> Choice<'p> {
        let point = ModelTerm::new(kind, eta, ev);
        let problem = point.ev.problem;
        let d = problem.dim();
        // Gradient flow and SME-1 read only ∇f (SME-1's σ is √η Σ^{1/2}).
        let order = if kind == ModelKind::Gf || kind.series_order() == Some(0) {
            Order::Gradient
        } else {
            Order::Hessian
        };
        let Some(tape) = LaneTape::new(problem.objective_tape(), order) else {
            return Choice::PerPoint(Box::new(point));
        };
        let noise_lanes = if kind == ModelKind::Gf {
            None
        } else {
            batched_noise(problem, point.ev.noise)
        };
        let spectral = matches!(kind, ModelKind::Hasme | ModelKind::HasmeExact);
        let closed = spectral || kind == ModelKind::Gf || kind.series_order() <= Some(1);
        let (needs_noise, _) = point.noise_needs(d);
        // A state-dependent Σ has no d = 1 closed form (gradient flow reads no Σ).
        let state_noise = needs_noise && matches!(point.ev.noise, NoiseSource::State);
        let form = match d {
            2 if closed => LaneForm::TwoByTwo,
            1 if closed && !state_noise => {
                let model = match kind {
                    ModelKind::Gf => Scalar::Gf,
                    _ if spectral => Scalar::Spectral,
                    _ if kind.series_order() == Some(0) => Scalar::Sme1,
                    _ => Scalar::Sme2,
                };
                let cov = match point.ev.noise {
                    NoiseSource::Constant { cov, sqrt } if needs_noise => Some((cov[0], sqrt[0])),
                    _ => None,
                };
                LaneForm::Scalar(model, cov)
            }
            _ => LaneForm::Tape,
        };
        let mut term = LaneTerm {
            point,
            form,
            tape,
            noise_lanes,
            g: vec![0.0; d],
            h: vec![0.0; d * d],
            cov: [[0.0; LANES]; 3],
            sqrt: [[0.0; LANES]; 3],
            slow: [false; LANES],
            tmp: [[0.0; LANES]; 10],
        };
        // A constant Σ (and √Σ) as rows, once: the d = 2 closed forms read them.
        if let NoiseSource::Constant { cov, sqrt } = term.point.ev.noise
            && d == 2
        {
            term.cov = [
                [cov[0]; LANES],
                [0.5 * cov[1] + 0.5 * cov[2]; LANES],
                [cov[3]; LANES],
            ];
            term.sqrt = [[sqrt[0]; LANES], [sqrt[1]; LANES], [sqrt[3]; LANES]];
        }
        Choice::Lanes(Box::new(term))
    }

    /// The per-point term, whatever was chosen (what a caller that steps paths one at
    /// a time uses).
    pub(crate) fn into_point(self) -> ModelTerm<'p> {
        match self {
            Choice::Lanes(t) => t.point,
            Choice::PerPoint(t) => *t,
        }
    }
}

impl LaneTerm<'_> {
    /// How the term evaluates a block.
    #[cfg(test)]
    pub(crate) fn form(&self) -> LaneForm {
        self.form
    }

    /// Evaluates the coefficients at the block of points `xs` (`d` rows, [`LaneTape::eval`]'s
    /// layout) into `out`, for the lanes marked in `live` (the others' results are
    /// meaningless): the tape once for the block ([`LaneTape`]), then the formulas
    /// across lanes (d = 2) or lane by lane. A lane whose batched derivatives are not
    /// finite is evaluated again by the tape's own code, which either succeeds or names
    /// the failure exactly as [`Term::eval`] does. Each lane's result depends on its
    /// point only.
    pub(crate) fn eval_lanes(
        &mut self,
        xs: &[Row],
        live: &[bool; LANES],
        out: &mut LaneCoefficients,
    ) {
        let d = self.g.len();
        let (needs_noise, one_term) = self.point.noise_needs(d);
        self.tape.eval(xs);
        let fast = match self.form {
            LaneForm::Scalar(model, cov) => {
                self.one_by_one(model, cov, xs, live, out);
                true
            }
            LaneForm::TwoByTwo => {
                self.two_by_two(xs, live, out);
                true
            }
            LaneForm::Tape => false,
        };
        out.any_failure = false;
        if fast && !self.slow.contains(&true) {
            return;
        }
        let lanes = &mut self.tape;
        let ModelTerm { ev, coeffs } = &mut self.point;
        let mut point = [0.0; LANES_MAX_DIM];
        for l in 0..LANES {
            if !live[l] || (fast && !self.slow[l]) {
                continue;
            }
            for (p, row) in point.iter_mut().zip(xs) {
                *p = row[l];
            }
            let x = &point[..d];
            let r = (|| {
                if lanes.finite(l) && x.iter().all(|v| v.is_finite()) {
                    lanes.gradient(l, &mut self.g);
                    lanes.hessian(l, &mut self.h);
                } else {
                    ev.derivatives(x)?;
                    self.g.copy_from_slice(ev.jets.gradient(0));
                    self.h.copy_from_slice(ev.jets.hessian(0));
                }
                if needs_noise && matches!(ev.noise, NoiseSource::State) {
                    ev.state_noise(x, one_term)?;
                }
                let (cov, sqrt) = ev.noise_refs(needs_noise, one_term);
                coeffs.compute(x, &self.g, &self.h, cov, sqrt)
            })();
            match r {
                Ok(noisy) => {
                    for (row, &v) in out.drift.iter_mut().zip(coeffs.drift()) {
                        row[l] = v;
                    }
                    if noisy {
                        for (row, &v) in out.factor.iter_mut().zip(coeffs.factor()) {
                            row[l] = v;
                        }
                    }
                    out.noisy[l] = noisy;
                    out.failure[l] = None;
                }
                Err(f) => {
                    out.failure[l] = Some(f);
                    out.any_failure = true;
                }
            }
        }
    }
}

impl LaneTerm<'_> {
    /// A state-dependent Σ (and √Σ for the SME models) per lane of a d = 2 block, into
    /// `self.cov` and `self.sqrt`, for the lanes not already marked slow: the batched
    /// entries when they are plainly a covariance (the square root as one point at a
    /// time), anything else (not finite, not exactly symmetric, near singular, not
    /// batched) through the problem's own checks; a lane they reject is marked slow
    /// and goes to the general code.
    fn state_noise_lanes(&mut self, xs: &[Row], live: &[bool; LANES], out: &mut LaneCoefficients) {
        let (_, one_term) = self.point.noise_needs(2);
        let ev = &mut self.point.ev;
        let kind = ev.problem.noise_kind();
        if let Some(nl) = &mut self.noise_lanes {
            nl.eval(xs);
        }
        for l in 0..LANES {
            if self.slow[l] || !live[l] {
                continue;
            }
            let x = &[xs[0][l], xs[1][l]];
            let batched = self
                .noise_lanes
                .as_ref()
                .and_then(|nl| clearly_covariance(kind, nl, l));
            let ok = match batched {
                Some(c) => {
                    ev.size_noise();
                    ev.cov.copy_from_slice(&c);
                    !one_term || ev.noise_sqrt(x).is_ok()
                }
                None => ev.state_noise(x, one_term).is_ok(),
            };
            if !ok {
                self.slow[l] = true;
                continue;
            }
            let (cov, sqrt) = (&ev.cov, &ev.sqrt);
            out.noisy[l] = true;
            self.cov[0][l] = cov[0];
            self.cov[1][l] = 0.5 * cov[1] + 0.5 * cov[2];
            self.cov[2][l] = cov[3];
            if one_term {
                self.sqrt[0][l] = sqrt[0];
                self.sqrt[1][l] = sqrt[1];
                self.sqrt[2][l] = sqrt[3];
            }
        }
    }

    /// The d = 1 closed forms over a block, for a constant Σ (or none): with `h = f''`,
    /// `p = 1 − ηh`, the drift is `−g` (`gf`, `sme1`), `−g − (η/2) h g` (`sme2`) or
    /// `−ℓ(p) g` (`hasme`, `hasme-exact`), and σ is `√η Σ^{1/2}` (SME) or
    /// `√(η Σ ℓ(p²))` (both HA-SME models: `W₀₀ = ℓ(p²)` for each). A lane that is not
    /// finite, leaves the domain (`p ≤ 0`) or whose Γ is not positive is marked in
    /// `self.slow` for the general code. `cov`: Σ's entry and its square root, when
    /// the model reads them.
    fn one_by_one(
        &mut self,
        model: Scalar,
        cov: Option<(f64, f64)>,
        xs: &[Row],
        live: &[bool; LANES],
        out: &mut LaneCoefficients,
    ) {
        let lanes = &self.tape;
        lanes.all_finite(&mut self.slow);
        let x0 = &xs[0];
        for (l, s) in self.slow.iter_mut().enumerate() {
            *s = !(*s & (x0[l] * 0.0 == 0.0));
        }
        out.noisy = if cov.is_some() {
            self.slow.map(|s| !s)
        } else {
            [false; LANES]
        };
        let (g, h) = (lanes.row(1), lanes.row(2));
        let [drift, ..] = &mut out.drift;
        let [factor, ..] = &mut out.factor;
        let [p, e, ..] = &mut self.tmp;
        scalar_coefficients(
            model,
            self.point.coeffs.eta,
            cov,
            [g, h],
            [p, e],
            [drift, factor],
            &mut self.slow,
        );
        for (s, &live) in self.slow.iter_mut().zip(live) {
            *s &= live;
        }
    }

    /// The d = 2 closed forms over a block, in structure-of-arrays loops: `gf`, `sme1`,
    /// `sme2`, `hasme`, `hasme-exact` (the models [`Choice::of`] gives this form). The
    /// formulas are those of [`Coeffs::compute`] written out for a 2×2 `H = [[a, b],
    /// [b, c]]` with eigenvectors `e₀ = (cs, −sn)`, `e₁ = (sn, cs)` (the rotation of
    /// `linalg::sym_eigen`):
    ///
    /// ```text
    /// drift = −Σᵢ ℓ(pᵢ) (eᵢ·g) eᵢ,   Γ = Σᵢⱼ Ĝᵢⱼ eᵢ eⱼᵀ,   Ĝᵢⱼ = η (eᵢᵀ Σ eⱼ) Wᵢⱼ,
    /// ```
    ///
    /// `Wᵢⱼ = sᵢsⱼ`, `sᵢ² = ℓ(pᵢ²)` (`hasme`) or `Wᵢⱼ = ℓ(pᵢpⱼ)` (`hasme-exact`), and
    /// `σ = (Γ + √det I)/√(tr + 2√det)` with the determinant and trace of `Ĝ` (the
    /// same as Γ's). A lane that is not finite, leaves the domain (`ηλ_max ≥ 1`), or
    /// whose Γ is not clearly positive definite (smallest eigenvalue at or below the
    /// round-off floor, where the closed form does not apply) is marked in
    /// `self.slow` and left to the general per-lane code, which reports or handles it
    /// exactly as [`Term::eval`].
    fn two_by_two(&mut self, xs: &[Row], live: &[bool; LANES], out: &mut LaneCoefficients) {
        // Every lane is computed (branch-free loops of fixed length, which the compiler
        // vectorises); `live` lanes only are flagged slow, and read.
        let kind = self.point.coeffs.kind;
        let eta = self.point.coeffs.eta;
        let spectral = matches!(kind, ModelKind::Hasme | ModelKind::HasmeExact);
        // Gradient flow and the spectral models have no series order; SME-1 and SME-2
        // have 0 and 1 (the only ones this form is chosen for).
        let series = kind.series_order();
        let (needs_noise, _) = self.point.noise_needs(2);
        let lanes = &self.tape;
        lanes.all_finite(&mut self.slow);
        let (x0, x1) = (&xs[0], &xs[1]);
        for (l, s) in self.slow.iter_mut().enumerate() {
            // The point finite too (`all_finite`'s test: v·0 is 0 exactly when v is finite).
            *s = !(*s & (x0[l] * 0.0 + x1[l] * 0.0 == 0.0));
        }
        out.noisy = [false; LANES];
        // Σ (and √Σ for the SME models): a constant one for the whole block at once, a
        // state-dependent one per lane.
        match self.point.ev.noise {
            _ if !needs_noise => {}
            NoiseSource::Zero => {}
            // Its rows were filled when the term was built (`Choice::of`).
            NoiseSource::Constant { .. } => out.noisy = self.slow.map(|s| !s),
            NoiseSource::State => self.state_noise_lanes(xs, live, out),
        }
        let lanes = &self.tape;
        let row = |r: usize| lanes.row(r);
        let (g0, g1) = (row(1), row(2));
        if let Some(order) = series {
            let root_eta = eta.sqrt();
            let [dr0, dr1, ..] = &mut out.drift;
            let h = (order == 1).then(|| [row(3), row(4), row(5)]);
            series_drift(eta, [g0, g1], h, [dr0, dr1], &mut self.slow);
            // A lane without noise keeps no factor: `out.noisy` says which.
            let [f00, f01, f10, f11, ..] = &mut out.factor;
            for l in 0..LANES {
                f00[l] = root_eta * self.sqrt[0][l];
                f01[l] = root_eta * self.sqrt[1][l];
                f10[l] = f01[l];
                f11[l] = root_eta * self.sqrt[2][l];
            }
        } else if spectral {
            // In passes over the block (loop fission), each pass without branches (a
            // choice is a select; a lane's flags are or-ed in), so the compiler
            // vectorises the square roots and divisions across lanes, and what a
            // failing lane computes is discarded (it goes to the general code).
            let exact = kind == ModelKind::HasmeExact;
            let (ha, hb, hc) = (row(3), row(4), row(5));
            let [cs_, sn_, p0_, p1_, e0_, e1_, e01_, k00_, k01_, k11_] = &mut self.tmp;
            rotations(eta, [ha, hb, hc], [cs_, sn_, p0_, p1_]);
            // Out of the domain, ηλ ≥ 1, exactly when p = 1 − ηλ ≤ 0: 1 − y is exact for
            // y ∈ [1/2, 2] and keeps its sign elsewhere.
            for l in 0..LANES {
                self.slow[l] |= !((p0_[l] > 0.0) & (p1_[l] > 0.0));
            }
            ell_lanes(p0_, e0_);
            ell_lanes(p1_, e1_);
            if exact {
                for l in 0..LANES {
                    k00_[l] = p0_[l] * p1_[l];
                }
                ell_lanes(k00_, e01_);
            }
            let w01 = if exact { Some(&*e01_) } else { None };
            let [dr0, dr1, ..] = &mut out.drift;
            drift_and_g_hat(
                eta,
                [cs_, sn_, p0_, p1_, e0_, e1_, g0, g1],
                &self.cov,
                w01,
                [dr0, dr1, k00_, k01_, k11_],
            );
            // `fine` per lane into `p0_` (1 or 0), no longer needed.
            let [f00, f01, f10, f11, ..] = &mut out.factor;
            factor_of_g_hat([cs_, sn_, k00_, k01_, k11_], [f00, f01, f10, f11], p0_);
            let [dr0, dr1, ..] = &out.drift;
            for l in 0..LANES {
                let drift_finite = dr0[l] * 0.0 + dr1[l] * 0.0 == 0.0;
                // A lane without noise keeps no factor: `out.noisy` says which.
                self.slow[l] |= !drift_finite | (out.noisy[l] & (p0_[l] == 0.0));
            }
        } else {
            for l in 0..LANES {
                out.drift[0][l] = -g0[l];
                out.drift[1][l] = -g1[l];
            }
            out.noisy = [false; LANES];
        }
        for (s, &live) in self.slow.iter_mut().zip(live) {
            *s &= live;
        }
        // `out.failure` is all `None` here: the caller takes every failure it is given.
    }
}

/// A model's closed forms at d = 1 ([`LaneTerm::one_by_one`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Scalar {
    Gf,
    Sme1,
    Sme2,
    Spectral,
}

multiversion! {
    /// [`LaneTerm::one_by_one`]'s arithmetic over a block: ∇f and f'' in `gh`, the
    /// constant Σ and its square root in `cov`, `p` and `ℓ(p)` into `tmp`, drift and
    /// factor into `out`; a lane whose results do not stand is flagged in `slow`.
    fn scalar_coefficients(
        model: Scalar,
        eta: f64,
        cov: Option<(f64, f64)>,
        gh: [&Row; 2],
        tmp: [&mut Row; 2],
        out: [&mut Row; 2],
        slow: &mut [bool; LANES],
    ) {
        let [g, h] = gh;
        let [p, e] = tmp;
        let [drift, factor] = out;
        match model {
            Scalar::Gf | Scalar::Sme1 => {
                for l in 0..LANES {
                    drift[l] = -g[l];
                }
            }
            Scalar::Sme2 => {
                for l in 0..LANES {
                    drift[l] = -g[l] + -0.5 * (eta * (h[l] * g[l]));
                }
            }
            Scalar::Spectral => {
                for l in 0..LANES {
                    p[l] = 1.0 - eta * h[l];
                    // Out of the domain exactly when p ≤ 0 (as at d = 2).
                    slow[l] |= p[l].is_nan() | (p[l] <= 0.0);
                }
                ell_lanes(p, e);
                for l in 0..LANES {
                    drift[l] = -e[l] * g[l];
                }
            }
        }
        for l in 0..LANES {
            slow[l] |= !(drift[l] * 0.0 == 0.0);
        }
        let Some((cov, sqrt)) = cov else { return };
        if model == Scalar::Spectral {
            for l in 0..LANES {
                let gamma = eta * cov * ell_square(e[l], p[l]);
                factor[l] = gamma.sqrt();
                slow[l] |= !(gamma > 0.0 && gamma < f64::INFINITY);
            }
        } else {
            let root = eta.sqrt() * sqrt;
            *factor = [root; LANES];
        }
    }
    baseline scalar_coefficients_base
}

/// The entries of a state-dependent Σ(x) batched over lanes, where
/// [`clearly_covariance`] can check them: d = 2, not a finite sum (whose Σ is a
/// covariance over the rows, not a tape).
pub(crate) fn batched_noise(problem: &Problem, noise: &NoiseSource) -> Option<LaneTape> {
    let state = matches!(noise, NoiseSource::State);
    if state && problem.dim() == 2 && problem.finite_sum().is_none() {
        LaneTape::new(problem.noise_tape(), Order::Value)
    } else {
        None
    }
}

/// Lane `l`'s Σ (row-major 2×2) from the batched noise entries, when it is plainly a
/// covariance: finite, exactly symmetric, and positive semidefinite with a margin that
/// rounding cannot cross (a diagonal with non-negative entries, or a positive
/// determinant well above its round-off). Such a Σ passes the problem's own checks
/// ([`Problem::noise_cov_into`]) with the same entries; any other lane is left to
/// them, so failures are reported exactly as one point at a time.
#[inline]
pub(crate) fn clearly_covariance(kind: NoiseKind, nl: &LaneTape, l: usize) -> Option<[f64; 4]> {
    let v = |o: usize| nl.output_value(o)[l];
    let c = match kind {
        NoiseKind::Sd => [v(0), 0.0, 0.0, v(0)],
        NoiseKind::Diag => [v(0), 0.0, 0.0, v(1)],
        NoiseKind::Cov => [v(0), v(1), v(2), v(3)],
        NoiseKind::None | NoiseKind::Minibatch => return None,
    };
    let [a, b, b2, d] = c;
    let finite = c.iter().all(|x| x.is_finite());
    let definite = if b == 0.0 {
        a >= 0.0 && d >= 0.0
    } else {
        a > 0.0 && d > 0.0 && a * d - b * b > 1e-12 * (a * d)
    };
    (finite && b.to_bits() == b2.to_bits() && definite).then_some(c)
}

// Two passes of `ModelTerm::two_by_two` over a block, as functions of their own: their
// reference parameters cannot alias, which the compiler is told, so it vectorises the
// loops without run-time overlap checks (with a dozen arrays in play it gives up on
// those checks, and the loops stay scalar). Defined through `multiversion!`.

multiversion! {
    /// The eigendecomposition of each lane's `H = [[a, b], [b, c]]`: the rotation
    /// `(cs, sn)` of `linalg::sym_eigen` at d = 2 and `pᵢ = 1 − ηλᵢ`.
    fn rotations(eta: f64, h: [&[f64; LANES]; 3], out: [&mut [f64; LANES]; 4]) {
        let [ha, hb, hc] = h;
        let [cs_, sn_, p0_, p1_] = out;
        for l in 0..LANES {
            let (a, b, c) = (ha[l], hb[l], hc[l]);
            let (h, g) = (c - a, 100.0 * b.abs());
            let theta = 0.5 * h / b;
            let t_theta = 1.0 / (theta.abs() + (1.0 + theta * theta).sqrt());
            let t_theta = if theta < 0.0 { -t_theta } else { t_theta };
            // Every candidate computed, then chosen: selects, not branches.
            let t_tiny = b / h;
            let t = if b == 0.0 {
                0.0
            } else if h.abs() + g == h.abs() {
                t_tiny
            } else {
                t_theta
            };
            // t = 0 gives cs = 1, sn = 0 exactly.
            let cs = 1.0 / (1.0 + t * t).sqrt();
            let sn = t * cs;
            let (l0, l1) = (a - t * b, c + t * b);
            (cs_[l], sn_[l]) = (cs, sn);
            (p0_[l], p1_[l]) = (1.0 - eta * l0, 1.0 - eta * l1);
        }
    }
    baseline rotations_base
}

multiversion! {
    /// Each lane's HA-SME drift `−Σᵢ ℓ(pᵢ)(eᵢ·g)eᵢ` and `Ĝ = η (UᵀΣU) ∘ W` (entries 00, 01,
    /// 11), from the rotation, `pᵢ`, `ℓ(pᵢ)`, ∇f and Σ (entries 00, 01, 11); `W₀₁` is
    /// `ℓ(p₀p₁)` when given (`hasme-exact`), else `√(W₀₀W₁₁)` (`hasme`).
    fn drift_and_g_hat(
        eta: f64,
        at: [&[f64; LANES]; 8],
        cov: &[[f64; LANES]; 3],
        w01: Option<&[f64; LANES]>,
        out: [&mut [f64; LANES]; 5],
    ) {
        let [cs_, sn_, p0_, p1_, e0_, e1_, g0, g1] = at;
        let [d0_, d1_, k00_, k01_, k11_] = out;
        for l in 0..LANES {
            let (cs, sn, p0, p1, e0, e1) = (cs_[l], sn_[l], p0_[l], p1_[l], e0_[l], e1_[l]);
            // Components of g on the eigenvectors, weighted by −ℓ(pᵢ).
            let q0 = -e0 * (cs * g0[l] - sn * g1[l]);
            let q1 = -e1 * (sn * g0[l] + cs * g1[l]);
            (d0_[l], d1_[l]) = (cs * q0 + sn * q1, cs * q1 - sn * q0);
            // Σ̂ = UᵀΣU.
            let (s00, s01, s11) = (cov[0][l], cov[1][l], cov[2][l]);
            let (u0, u1) = (cs * s00 - sn * s01, cs * s01 - sn * s11); // Σ e₀
            let (v0, v1) = (sn * s00 + cs * s01, sn * s01 + cs * s11); // Σ e₁
            let h00 = cs * u0 - sn * u1;
            let h01 = sn * u0 + cs * u1;
            let h11 = sn * v0 + cs * v1;
            let (w0, w1) = (ell_square(e0, p0), ell_square(e1, p1));
            let w = match w01 {
                Some(e01) => e01[l],
                None => (w0 * w1).sqrt(),
            };
            (k00_[l], k01_[l], k11_[l]) = (eta * h00 * w0, eta * h01 * w, eta * h11 * w1);
        }
    }
    baseline drift_and_g_hat_base
}

multiversion! {
    /// Each lane's SME drift, `−g` (`h` not given: SME-1) or `−g − (η/2) H g` (`h` the
    /// Hessian's entries 00, 01, 11: SME-2), into `out`; a lane whose drift is not finite
    /// is flagged in `slow`.
    fn series_drift(
        eta: f64,
        g: [&Row; 2],
        h: Option<[&Row; 3]>,
        out: [&mut Row; 2],
        slow: &mut [bool; LANES],
    ) {
        let [g0, g1] = g;
        let [dr0, dr1] = out;
        for l in 0..LANES {
            (dr0[l], dr1[l]) = (-g0[l], -g1[l]);
        }
        if let Some([ha, hb, hc]) = h {
            for l in 0..LANES {
                let (a, b, c) = (ha[l], hb[l], hc[l]);
                dr0[l] += -0.5 * (eta * (a * g0[l] + b * g1[l]));
                dr1[l] += -0.5 * (eta * (b * g0[l] + c * g1[l]));
            }
        }
        for l in 0..LANES {
            slow[l] |= !(dr0[l] * 0.0 + dr1[l] * 0.0 == 0.0);
        }
    }
    baseline series_drift_base
}

multiversion! {
    /// Each lane's factor `σ = U √Ĝ Uᵀ` from the rotation and `Ĝ` (entries 00, 01, 11), √Ĝ
    /// by Cayley–Hamilton: `√Ĝ = (Ĝ + √det I)/√(tr + 2√det)`. `fine[l]` is 1 when the lane's
    /// result stands, 0 when it goes to the general code: `Ĝ`'s scale outside
    /// `(1e−100, 1e100)` (where the squares below could overflow or underflow; `hypot`'s
    /// care would cost as much as the rest), its smallest eigenvalue at or below the
    /// round-off floor (there `min·max > 1e−212` also keeps `√(min·max)` accurate), or a
    /// factor that is not finite.
    fn factor_of_g_hat(at: [&[f64; LANES]; 5], out: [&mut [f64; LANES]; 4], fine: &mut [f64; LANES]) {
        let [cs_, sn_, k00_, k01_, k11_] = at;
        let [f00_, f01_, f10_, f11_] = out;
        for l in 0..LANES {
            let (cs, sn) = (cs_[l], sn_[l]);
            let (k00, k01, k11) = (k00_[l], k01_[l], k11_[l]);
            let half_tr = 0.5 * (k00 + k11);
            let half_diff = 0.5 * (k00 - k11);
            let half_gap = (half_diff * half_diff + k01 * k01).sqrt();
            let scale = half_tr.abs().max(half_gap);
            let (min, max) = (half_tr - half_gap, half_tr + half_gap);
            let clearly_definite = min > PSD_TOLERANCE * min.abs().max(max.abs());
            let root_det = (min * max).sqrt();
            let norm = 1.0 / (k00 + k11 + 2.0 * root_det).sqrt();
            let (r00, r01, r11) = ((k00 + root_det) * norm, k01 * norm, (k11 + root_det) * norm);
            let (cc, ss, cssn) = (cs * cs, sn * sn, cs * sn);
            let f00 = r00 * cc + 2.0 * r01 * cssn + r11 * ss;
            let f01 = (r11 - r00) * cssn + r01 * (cc - ss);
            let f11 = r00 * ss - 2.0 * r01 * cssn + r11 * cc;
            (f00_[l], f01_[l], f10_[l], f11_[l]) = (f00, f01, f01, f11);
            let ok = (scale > 1e-100)
                & (scale < 1e100)
                & clearly_definite
                & f00.is_finite()
                & f01.is_finite()
                & f11.is_finite();
            fine[l] = if ok { 1.0 } else { 0.0 };
        }
    }
    baseline factor_of_g_hat_base
}

impl Term for ModelTerm<'_> {
    fn eval(
        &mut self,
        x: &[f64],
        _dw: &[f64],
        _dw2: Option<&[f64]>,
    ) -> Result<Coefficients<'_>, Failure> {
        let (drift, factor) = self.factor_at(x)?;
        Ok(Coefficients::Factor(drift, factor))
    }
}

impl ModelTerm<'_> {
    /// The drift and, unless the diffusion is zero, the factor at `x`.
    pub(crate) fn factor_at(&mut self, x: &[f64]) -> Result<(&[f64], Option<&[f64]>), Failure> {
        let d = x.len();
        let (needs_noise, one_term) = self.noise_needs(d);
        let state = needs_noise && matches!(self.ev.noise, NoiseSource::State);
        if state && self.ev.problem.finite_sum().is_some() {
            self.ev.derivatives_and_state_noise(x, one_term)?;
        } else {
            self.ev.derivatives(x)?;
            if state {
                self.ev.state_noise(x, one_term)?;
            }
        }
        let (cov, sqrt) = self.ev.noise_refs(needs_noise, one_term);
        let noisy = self.coeffs.compute(
            x,
            self.ev.jets.gradient(0),
            self.ev.jets.hessian(0),
            cov,
            sqrt,
        )?;
        let c = &self.coeffs;
        Ok((c.drift(), noisy.then_some(c.factor())))
    }
}

impl Coeffs {
    /// The drift and factor at `x` from ∇f, ∇²f (row-major) and Σ (and Σ^{1/2} when
    /// known); returns whether the diffusion is nonzero. A model's domain failure is a
    /// divergence of the path.
    fn compute(
        &mut self,
        x: &[f64],
        g: &[f64],
        h: &[f64],
        cov: Option<&[f64]>,
        sqrt: Option<&[f64]>,
    ) -> Result<bool, Failure> {
        let d = x.len();
        let diverged = |e: ModelError| Failure::Diverged(e.to_string());
        if d > JACOBI_MAX_DIM {
            // Large d: `Model::coefficients` itself, with its checks (the O(d³) work
            // dwarfs its allocations).
            let zero;
            let sigma = match cov {
                Some(c) => c,
                None => {
                    zero = vec![0.0; d * d];
                    &zero[..]
                }
            };
            let local = Local::new(
                DVector::from_column_slice(x),
                DVector::from_column_slice(g),
                DMatrix::from_row_slice(d, d, h),
                DMatrix::from_row_slice(d, d, sigma),
            )
            .map_err(diverged)?;
            self.kind
                .coefficients_into(&local, self.eta, &ModelOptions::default(), &mut self.ws)
                .map_err(diverged)?;
            return Ok(self.ws.factor().iter().any(|&v| v != 0.0));
        }
        let noise = cov.map(|cov| Noise { cov, sqrt });
        self.ws
            .evaluate(self.kind, self.eta, Arithmetic::Jacobi, x, g, h, noise)
            .map_err(diverged)
    }

    /// The drift of the last [`Coeffs::compute`].
    fn drift(&self) -> &[f64] {
        self.ws.drift().as_slice()
    }

    /// The factor of the last [`Coeffs::compute`] (symmetric, so its column-major
    /// storage reads row-major too).
    fn factor(&self) -> &[f64] {
        self.ws.factor().as_slice()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::Model;
    use crate::sim::lanes::rows_of;
    use proptest::prelude::*;

    fn problem(h: [f64; 3], sigma: [f64; 3], state: bool) -> Problem {
        let extra = if state { "*(1 + 0.1*x^2)" } else { "" };
        Problem::from_str(&format!(
            "var x = 0.3, y = -0.2\n\
             minimize 0.5*{}*x^2 + {}*x*y + 0.5*{}*y^2 + 0.1*x^3 + 0.05*cos(y)\n\
             noise cov [[{}{extra}, {}], [{}, {}]]",
            h[0], h[1], h[2], sigma[0], sigma[1], sigma[1], sigma[2]
        ))
        .expect("a valid problem")
    }

    /// Model `kind`'s lane-batched term (the problems here all have one).
    fn lane_term<'p>(kind: ModelKind, eta: f64, ev: Evaluator<'p>) -> LaneTerm<'p> {
        match Choice::of(kind, eta, ev) {
            Choice::Lanes(t) => *t,
            Choice::PerPoint(_) => panic!("{kind}: no lane form"),
        }
    }

    /// Each model gets the fastest form its problem allows, chosen once.
    #[test]
    fn terms_choose_their_form_once() {
        let form = |text: &str, kind: ModelKind| {
            let p = Problem::from_str(text).expect("a valid problem");
            let noise = NoiseSource::for_problem(&p, &p.start(), false).expect("Σ is valid");
            match Choice::of(kind, 0.1, Evaluator::new(&p, &noise)) {
                Choice::Lanes(t) => Some(t.form()),
                Choice::PerPoint(_) => None,
            }
        };
        let one = "var x = 1\nminimize x^2 + cos(x)\nnoise sd 0.5";
        let one_state = "var x = 1\nminimize x^2\nnoise sd 1 + 0.1*x^2";
        let two = "var x = 1, y = 0\nminimize x^2 + y^4\nnoise sd 0.5";
        let five = "var w[5] = 1\nminimize sum(i = 1..5, w[i]^2)\nnoise sd 0.5";
        assert_eq!(
            form(one, ModelKind::Hasme),
            Some(LaneForm::Scalar(Scalar::Spectral, Some((0.25, 0.5))))
        );
        assert_eq!(
            form(one, ModelKind::Gf),
            Some(LaneForm::Scalar(Scalar::Gf, None))
        );
        // A state-dependent Σ: no d = 1 closed form, except for gradient flow (no Σ).
        assert_eq!(form(one_state, ModelKind::Sme1), Some(LaneForm::Tape));
        assert_eq!(
            form(one_state, ModelKind::Gf),
            Some(LaneForm::Scalar(Scalar::Gf, None))
        );
        assert_eq!(form(two, ModelKind::Sme2), Some(LaneForm::TwoByTwo));
        assert_eq!(form(two, ModelKind::Series(3)), Some(LaneForm::Tape));
        assert_eq!(form(five, ModelKind::Hasme), None);
    }

    fn assert_close(a: &[f64], b: &[f64], what: &str) {
        let scale = b.iter().fold(1e-300f64, |m, v| m.max(v.abs()));
        for (x, y) in a.iter().zip(b) {
            // 1e-11 relative: two backward-stable eigensolvers (Jacobi here, QR in the
            // models) differ by a few hundred ulps at d = 2.
            assert!((x - y).abs() <= 1e-11 * scale, "{what}: {a:?} vs {b:?}");
        }
    }

    /// Lane `l` of a block evaluation against `Model::coefficients` at the same point:
    /// the same drift and factor, or a divergence for the same reason.
    fn lane_matches_the_model(
        kind: ModelKind,
        local: &Local,
        eta: f64,
        out: &mut LaneCoefficients,
        l: usize,
    ) -> Result<(), TestCaseError> {
        let d = local.gradient.len();
        match (kind.coefficients(local, eta), out.failure[l].take()) {
            (Ok(c), None) => {
                assert_close(
                    &out.drift_at(l, d),
                    c.drift.as_slice(),
                    &format!("{kind} drift"),
                );
                assert_close(
                    &out.factor_at(l, d),
                    c.factor.as_slice(),
                    &format!("{kind} factor"),
                );
            }
            (Err(e), Some(Failure::Diverged(reason))) => {
                let head = |m: &str| m.split_whitespace().take(2).collect::<Vec<_>>().join(" ");
                prop_assert_eq!(head(&e.to_string()), head(&reason));
            }
            (c, o) => prop_assert!(false, "{kind} lane {l}: models {c:?}, lanes {o:?}"),
        }
        Ok(())
    }

    proptest! {
        /// Drift and factor agree with `Model::coefficients` for every model, for
        /// constant and state-dependent noise, inside and outside the domains.
        #[test]
        fn terms_agree_with_the_models(
            h in (-3.0f64..3.0, -1.0f64..1.0, -3.0f64..3.0),
            s in (0.01f64..1.0, -0.9f64..0.9, 0.01f64..1.0),
            x in (-1.0f64..1.0, -1.0f64..1.0),
            eta in 0.01f64..0.5,
            state in any::<bool>(),
        ) {
            let sigma = [s.0, s.1 * (s.0 * s.2).sqrt(), s.2];
            let p = problem([h.0, h.1, h.2], sigma, state);
            let x = [x.0, x.1];
            let noise = NoiseSource::for_problem(&p, &p.start(), false).expect("Σ is valid");
            let local = p.local(&x).expect("finite");
            for kind in ModelKind::all().into_iter().chain([ModelKind::Series(3)]) {
                let mut term = ModelTerm::new(kind, eta, Evaluator::new(&p, &noise));
                let ours = term.factor_at(&x);
                match (kind.coefficients(&local, eta), ours) {
                    (Ok(c), Ok((drift, factor))) => {
                        assert_close(drift, c.drift.as_slice(), &format!("{kind} drift"));
                        let zero = vec![0.0; 4];
                        assert_close(factor.unwrap_or(&zero), c.factor.as_slice(), &format!("{kind} factor"));
                    }
                    (Err(e), Err(Failure::Diverged(reason))) => {
                        let (a, b) = (e.to_string(), reason);
                        // Same failure; the numbers in the message may differ in the last digits.
                        let head = |m: &str| m.split_whitespace().take(2).collect::<Vec<_>>().join(" ");
                        prop_assert_eq!(head(&a), head(&b));
                    }
                    (c, o) => prop_assert!(false, "{kind}: models {c:?}, terms {o:?}"),
                }
            }
        }

        /// The same at a block of points ([`LaneTerm::eval_lanes`]: the batched tape,
        /// the d = 2 closed forms and the per-lane fallback), with the point at two
        /// lanes among others: each lane's result depends on its own point only.
        #[test]
        fn blocks_agree_with_the_models(
            h in (-3.0f64..3.0, -1.0f64..1.0, -3.0f64..3.0),
            s in (0.01f64..1.0, -0.9f64..0.9, 0.01f64..1.0),
            others in prop::collection::vec(-1.0f64..1.0, 2 * LANES),
            lanes in (1usize..LANES, 0usize..LANES),
            eta in 0.01f64..0.5,
            state in any::<bool>(),
        ) {
            let sigma = [s.0, s.1 * (s.0 * s.2).sqrt(), s.2];
            let p = problem([h.0, h.1, h.2], sigma, state);
            let noise = NoiseSource::for_problem(&p, &p.start(), false).expect("Σ is valid");
            let (n, at) = (lanes.0 + 1, lanes.1.min(lanes.0));
            let mut xs = others.clone();
            // The point under test at lane `at` and lane `n − 1`.
            let x = [others[0], others[1]];
            xs[2 * at..2 * at + 2].copy_from_slice(&x);
            xs[2 * (n - 1)..2 * n].copy_from_slice(&x);
            let local = p.local(&x).expect("finite");
            for kind in ModelKind::all().into_iter().chain([ModelKind::Series(3)]) {
                let mut term = lane_term(kind, eta, Evaluator::new(&p, &noise));
                let mut out = LaneCoefficients::new();
                let live = std::array::from_fn(|l| l < n);
                term.eval_lanes(&rows_of(&xs, 2), &live, &mut out);
                let mut check = vec![at, n - 1];
                check.dedup();
                for l in check {
                    lane_matches_the_model(kind, &local, eta, &mut out, l)?;
                }
            }
        }
    }

    proptest! {
        /// At d = 1 the block's closed forms agree with `Model::coefficients` at every
        /// lane, for every model, with a constant noise (closed forms), no noise, and a
        /// state-dependent one (the general code), inside and outside HA-SME's domain
        /// (`ηf'' ≥ 1` there: the same divergence as one point at a time).
        #[test]
        fn one_dimensional_blocks_agree_with_the_models(
            a in 0.1f64..3.0,
            b in -2.0f64..2.0,
            sd in 0.05f64..1.0,
            noise in 0usize..3,
            points in prop::collection::vec(-3.0f64..3.0, 1..LANES),
            eta in 0.01f64..0.6,
        ) {
            let noise_line = match noise {
                0 => format!("noise sd {sd}"),
                1 => String::new(),
                _ => format!("noise sd {sd}*(1 + 0.1*x^2)"),
            };
            let p = Problem::from_str(&format!(
                "var x = 0.3\nminimize 0.5*{a}*x^2 + {b}*cos(x)\n{noise_line}"
            ))
            .expect("a valid problem");
            let source = NoiseSource::for_problem(&p, &p.start(), false).expect("Σ is valid");
            let live = std::array::from_fn(|l| l < points.len());
            for kind in ModelKind::all().into_iter().chain([ModelKind::Series(3)]) {
                let mut term = lane_term(kind, eta, Evaluator::new(&p, &source));
                let mut out = LaneCoefficients::new();
                term.eval_lanes(&rows_of(&points, 1), &live, &mut out);
                for (l, &x) in points.iter().enumerate() {
                    let local = p.local(&[x]).expect("finite");
                    lane_matches_the_model(kind, &local, eta, &mut out, l)?;
                }
            }
        }
    }

    /// Σ(x) batched over a block: lanes where it is a covariance, is not positive
    /// semidefinite (fatal), is not finite (a divergence), or is singular each get
    /// exactly what the point-at-a-time evaluation gives them.
    #[test]
    fn batched_noise_fails_lane_by_lane_as_one_point_at_a_time() {
        // The three forms of `noise` (one standard deviation, a diagonal, a matrix).
        for text in [
            "noise cov [[1 - x, 0.1*x*y], [0.1*x*y, sqrt(1 + y)]]",
            "noise diag [1 - x, sqrt(1 + y)]",
            "noise sd sqrt(1 - x) + 0*y",
        ] {
            let p = Problem::from_str(&format!(
                "var x = 0, y = 0\nminimize x^2 + y^2 + 0.1*x*y\n{text}"
            ))
            .unwrap();
            batched_noise_as_one_point_at_a_time(&p);
        }
    }

    fn batched_noise_as_one_point_at_a_time(p: &Problem) {
        let noise = NoiseSource::for_problem(p, &p.start(), false).unwrap();
        let points = [
            [0.2, 0.3],  // a covariance
            [1.5, 0.0],  // 1 − x < 0: not PSD
            [0.1, -2.0], // sqrt of a negative: not finite
            [1.0, 0.0],  // singular: Σ₀₀ = 0 exactly
            [-0.4, 0.5], // a covariance
        ];
        let xs: Vec<f64> = points.iter().flatten().copied().collect();
        for kind in ModelKind::all() {
            let mut term = lane_term(kind, 0.1, Evaluator::new(p, &noise));
            let mut out = LaneCoefficients::new();
            let live = std::array::from_fn(|l| l < points.len());
            term.eval_lanes(&rows_of(&xs, 2), &live, &mut out);
            for (l, x) in points.iter().enumerate() {
                let mut one = ModelTerm::new(kind, 0.1, Evaluator::new(p, &noise));
                match (one.factor_at(x), out.failure[l].take()) {
                    (Ok((drift, factor)), None) => {
                        assert_close(&out.drift_at(l, 2), drift, &format!("{kind} drift"));
                        if let Some(f) = factor {
                            assert_close(&out.factor_at(l, 2), f, &format!("{kind} factor"));
                        }
                    }
                    (Err(Failure::Fatal(a)), Some(Failure::Fatal(b))) => {
                        assert_eq!(a.to_string(), b.to_string())
                    }
                    (Err(Failure::Diverged(a)), Some(Failure::Diverged(b))) => assert_eq!(a, b),
                    (a, b) => panic!("{kind} lane {l}: one point {a:?}, block {b:?}"),
                }
            }
        }
    }

    /// The closed forms' passes give the same bits run with AVX (when the processor
    /// has it) as compiled for the baseline.
    #[test]
    fn closed_form_passes_have_the_same_bits_with_and_without_avx() {
        let row = |seed: f64| -> [f64; LANES] {
            std::array::from_fn(|l| ((l as f64 + seed) * 0.754_877_666).sin() * 2.0)
        };
        let (ha, mut hb, hc) = (row(0.1), row(0.2), row(0.3));
        hb[3] = 0.0; // a diagonal H
        hb[5] = 1e-30; // a nearly diagonal one
        let rows = |n: usize| -> Vec<[f64; LANES]> { vec![[0.0; LANES]; n] };
        let (mut a, mut b) = (rows(4), rows(4));
        let [a0, a1, a2, a3] = &mut a[..] else {
            unreachable!()
        };
        rotations_base(0.3, [&ha, &hb, &hc], [a0, a1, a2, a3]);
        let [b0, b1, b2, b3] = &mut b[..] else {
            unreachable!()
        };
        rotations(0.3, [&ha, &hb, &hc], [b0, b1, b2, b3]);
        let bits =
            |v: &[[f64; LANES]]| -> Vec<u64> { v.iter().flatten().map(|x| x.to_bits()).collect() };
        assert_eq!(bits(&a), bits(&b));
        let (e0, e1, g0, g1, w) = (row(0.4), row(0.5), row(0.6), row(0.7), row(0.8));
        let cov = [
            row(0.9).map(f64::abs),
            row(1.0).map(|v| 0.1 * v),
            row(1.1).map(f64::abs),
        ];
        for w01 in [None, Some(&w)] {
            let (mut c, mut d) = (rows(5), rows(5));
            let at = [&a[0], &a[1], &a[2], &a[3], &e0, &e1, &g0, &g1];
            let [c0, c1, c2, c3, c4] = &mut c[..] else {
                unreachable!()
            };
            drift_and_g_hat_base(0.3, at, &cov, w01, [c0, c1, c2, c3, c4]);
            let [d0, d1, d2, d3, d4] = &mut d[..] else {
                unreachable!()
            };
            drift_and_g_hat(0.3, at, &cov, w01, [d0, d1, d2, d3, d4]);
            assert_eq!(bits(&c), bits(&d));
        }
    }

    /// The d = 1 pass gives the same bits with and without AVX, for every model.
    #[test]
    fn the_one_dimensional_pass_has_the_same_bits_with_and_without_avx() {
        let row = |seed: f64| -> Row {
            std::array::from_fn(|l| ((l as f64 + seed) * 0.754_877_666).sin() * 2.0)
        };
        let (g, h) = (row(0.1), row(0.2));
        type Pass = fn(
            Scalar,
            f64,
            Option<(f64, f64)>,
            [&Row; 2],
            [&mut Row; 2],
            [&mut Row; 2],
            &mut [bool; LANES],
        );
        let passes: [Pass; 2] = [scalar_coefficients, scalar_coefficients_base];
        for model in [Scalar::Gf, Scalar::Sme1, Scalar::Sme2, Scalar::Spectral] {
            let mut runs = Vec::new();
            for pass in passes {
                let (mut p, mut e, mut d, mut f) =
                    ([0.0; LANES], [0.0; LANES], [0.0; LANES], [0.0; LANES]);
                let mut slow = [false; LANES];
                let cov = Some((0.4, 0.4f64.sqrt()));
                let (tmp, out) = ([&mut p, &mut e], [&mut d, &mut f]);
                pass(model, 0.3, cov, [&g, &h], tmp, out, &mut slow);
                let bits: Vec<u64> = d.iter().chain(&f).map(|v| v.to_bits()).collect();
                runs.push((bits, slow));
            }
            assert_eq!(runs[0], runs[1]);
        }
    }

    #[test]
    fn sgd_step_moves_with_the_noise() {
        let p = problem([2.0, 0.0, 1.0], [0.25, 0.0, 0.04], false);
        let noise = NoiseSource::for_problem(&p, &p.start(), false).unwrap();
        let mut ev = Evaluator::new(&p, &noise);
        let mut x = [0.3, -0.2];
        let g = p.objective_derivatives(&x).unwrap().gradient;
        let mut tmp = [0.0; 2];
        sgd_step(&mut ev, 0.1, &mut x, &[1.0, -1.0], &mut tmp).unwrap();
        // x − η g + η Σ^{1/2} ξ with Σ^{1/2} = diag(0.5, 0.2).
        assert!((x[0] - (0.3 - 0.1 * g[0] + 0.1 * 0.5)).abs() < 1e-15);
        assert!((x[1] - (-0.2 - 0.1 * g[1] - 0.1 * 0.2)).abs() < 1e-15);
    }

    #[test]
    fn non_psd_noise_is_fatal_and_non_finite_noise_diverges() {
        let p = Problem::from_str("var x = 0\nminimize x^2\nnoise cov [[1 - x, 0], [0, 1]]").err();
        // A 2×2 covariance needs two variables; build a 1-d one instead.
        assert!(p.is_some());
        let p = Problem::from_str("var x = 0\nminimize x^2\nnoise diag [1 - x]").unwrap();
        let noise = NoiseSource::for_problem(&p, &p.start(), false).unwrap();
        let mut ev = Evaluator::new(&p, &noise);
        let mut tmp = [0.0];
        let mut x = [2.0];
        let r = sgd_step(&mut ev, 0.1, &mut x, &[0.0], &mut tmp);
        assert!(matches!(r, Err(Failure::Fatal(_))), "{r:?}");
        let p = Problem::from_str("var x = 0\nminimize x^2\nnoise diag [sqrt(1 - x)]").unwrap();
        let noise = NoiseSource::for_problem(&p, &p.start(), false).unwrap();
        let mut ev = Evaluator::new(&p, &noise);
        let mut x = [2.0];
        let r = sgd_step(&mut ev, 0.1, &mut x, &[0.0], &mut tmp);
        assert!(matches!(r, Err(Failure::Diverged(_))), "{r:?}");
    }
}
