//! Expectations without Monte Carlo noise in one and two dimensions (docs/models.md §6):
//! `E φ(x_N)` of SGD and `E φ(X_T)` of each SDE model by backward recursions on a
//! tensor Chebyshev grid, the weak error's two halves for `weak-order --method
//! quadrature`.
//!
//! **SGD.** `u_N = φ`, `u_k(x) = E_ξ u_{k+1}(x − η∇f(x) + ηΣ(x)^{1/2}ξ)` — the step of
//! the simulator (`x ← x + η(Σ^{1/2}ξ − g)`); the law of the step is `N(x − ηg,
//! η²Σ)`, so any factor `A` with `AAᵀ = Σ` gives the same expectation, and the lower
//! triangular one makes the two-dimensional rule a product of one-dimensional ones
//! (the first coordinate moves with `ξ₁` only). The expectation is a Gauss–Hermite rule
//! in ξ (a tensor rule in 2-D) applied to the Chebyshev interpolant of `u_{k+1}`; for a
//! finite sum, the exact mean over the `C(n, b)` minibatches (or the `C(n + b − 1, b)`
//! multisets with their multinomial weights). Then `E φ(x_N) = u_0(x_0)`, the last step
//! taken at `x_0` itself.
//!
//! **Each SDE.** Its backward Kolmogorov equation `∂_t u + b·∇u + ½Γ:∇²u = 0`,
//! `u(T) = φ`, by a semi-Lagrangian scheme on the same grid: a substep `h` reads `u` at
//! the Euler–Maruyama foot `x + b(x)h + √h Γ(x)^{1/2}ξ` through the same interpolation
//! and quadrature, so it is stable for any grid and needs no boundary condition (it
//! reads `u` where the process goes). Its error is a series in `h` (Talay–Tubaro), which
//! polynomial extrapolation in `h` to 0 over the substep counts `M₀·(1, 2, 3, 4, 6, 8,
//! 12, 16, …)` removes term by term: levels are added until the last two extrapolants
//! agree to the tolerance ([`richardson`]). `b(x)` and `Γ(x)` are the model's own
//! coefficients ([`Model::coefficients`]) at the grid nodes.
//!
//! **The box** covers the process: the linearised Gaussian laws of SGD along its mean
//! path (`m ← m − ηg(m)`, `C ← PCPᵀ + η²Σ(m)`, `P = I − ηH(m)`) give each step's mean
//! and standard deviations, and the box spans `mean ± L·sd` at every step (L = 8, 10 in
//! the refined run). Its reported `mass_outside` is the normal tail mass beyond the box,
//! summed over steps and coordinates (a union bound under the linearisation). Steps from
//! nodes near the edge that land outside read the interpolant's polynomial continuation
//! (exact for the polynomial solutions of linear problems, convergent near the box for
//! analytic ones, clamped only where round-off would grow past 1e−3 of the solution),
//! so no value is invented at the edge; what this costs is measured by the
//! refined run's larger box.
//!
//! **Error estimate.** Every expectation is computed twice: a base run, and a refined
//! run with more grid nodes (×4/3), more Gauss–Hermite nodes, a box of 10 instead of 8
//! standard deviations and, for the SDEs, one more extrapolation level. The refined
//! value is reported, with `|refined − base|` (plus the SDE's extrapolation estimate and
//! a round-off floor) as its error: each refinement only improves a converging
//! approximation, so the base is the worse of the two and the difference bounds the
//! refined value's error from above for spectrally converging runs.

mod chebyshev;
mod hermite;

pub use chebyshev::{Axis, CHOP, Grid, Interpolant, MIN_REACH, REACH};
pub use hermite::Rule;

use crate::ErrorKind;
use crate::lang::ast::Sampling;
use crate::models::{Model, ModelKind};
use crate::problem::{NoiseBuffers, Problem, ProblemError};
use crate::tape::{Jets, Workspace};
use rayon::prelude::*;

/// Largest dimension the grids handle.
pub const MAX_DIM: usize = 2;

/// Most minibatches whose exact mean is taken per SGD step (a finite sum): each grid
/// node evaluates every minibatch's gradient, so the SGD recursion costs this many
/// gradient evaluations per node and step. 4096 covers n = 16 with b = 3, n = 64 with
/// b = 2 and n ≤ 4096 with b = 1.
pub const MAX_MINIBATCHES: u64 = 4096;

/// Standard deviations the box spans around the linearised mean (base run).
const SPREAD: f64 = 8.0;
/// The same in the refined run.
const SPREAD_REFINED: f64 = 10.0;

/// Round-off floor of an expectation: this many ulps of the largest value met, per
/// square root of the number of steps (round-off of a recursion accumulates like a
/// random walk).
const ROUNDOFF_ULPS: f64 = 64.0;

/// How accurately to compute.
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    /// The target absolute accuracy of each expectation (extrapolation levels are added
    /// until it is met, grids resolve the coefficients to it).
    pub tolerance: f64,
    /// Worker threads (the numbers do not depend on it).
    pub threads: usize,
    /// Nodes per axis are multiplied by this (1 by default; 2 halves the grid spacing:
    /// a check of the error estimates).
    pub grid_scale: f64,
}

/// Why the quadrature could not run.
#[derive(Debug, thiserror::Error)]
pub enum QuadratureError {
    /// The problem is outside what the method handles (the message says what and
    /// suggests Monte Carlo).
    #[error("{0}")]
    Unsupported(String),
    /// Evaluating the problem failed at a point.
    #[error("{0}")]
    Problem(#[from] ProblemError),
    /// A number left the range of f64.
    #[error("{0}")]
    Numerical(String),
}

impl QuadratureError {
    /// Bad input (an unsupported problem) or a failure while running.
    pub fn kind(&self) -> ErrorKind {
        match self {
            QuadratureError::Unsupported(_) => ErrorKind::Input,
            QuadratureError::Problem(e) => e.kind(),
            QuadratureError::Numerical(_) => ErrorKind::Run,
        }
    }
}

/// Checks that the problem is one the quadrature handles: d ≤ 2, Gaussian noise (any
/// kind) or a finite sum with at most [`MAX_MINIBATCHES`] minibatches.
///
/// ```
/// use hasme::Problem;
/// use hasme::quadrature::supported;
/// assert!(supported(&Problem::from_str("var x = 1\nminimize x^2\nnoise sd 0.5")?).is_ok());
/// let p = Problem::from_str("var w[3] = 1\nminimize sum(i = 1..3, w[i]^2)\nnoise sd 0.5")?;
/// assert!(supported(&p).unwrap_err().to_string().contains("--method monte-carlo"));
/// # Ok::<(), hasme::ProblemError>(())
/// ```
pub fn supported(problem: &Problem) -> Result<(), QuadratureError> {
    let d = problem.dim();
    if d > MAX_DIM {
        return Err(QuadratureError::Unsupported(format!(
            "--method quadrature handles one or two variables (its grids grow like nᵈ), but \
             `{}` has {d}; use --method monte-carlo",
            problem.source().name()
        )));
    }
    if let Some(fs) = problem.finite_sum() {
        let count = minibatch_count(fs.n, fs.batch, fs.sampling);
        if count > MAX_MINIBATCHES {
            return Err(QuadratureError::Unsupported(format!(
                "--method quadrature takes SGD's expectation over every minibatch, but `{}` \
                 has {} of them (n = {}, batch {}, {}), more than {MAX_MINIBATCHES}; use \
                 --method monte-carlo",
                problem.source().name(),
                if count == u64::MAX {
                    "more than 2⁶⁴".to_string()
                } else {
                    count.to_string()
                },
                fs.n,
                fs.batch,
                crate::data::sampling_name(fs.sampling)
            )));
        }
    }
    Ok(())
}

/// The number of distinct minibatches: `C(n, b)` without replacement, `C(n + b − 1, b)`
/// multisets with replacement (`u64::MAX` when it overflows).
pub fn minibatch_count(n: usize, b: usize, sampling: Sampling) -> u64 {
    let top = match sampling {
        Sampling::WithoutReplacement => n,
        Sampling::WithReplacement => n + b - 1,
    };
    binomial(top as u64, b as u64)
}

fn binomial(n: u64, k: u64) -> u64 {
    if k > n {
        return 0;
    }
    let k = k.min(n - k);
    let mut r: u128 = 1;
    for i in 0..k {
        r = r * u128::from(n - i) / u128::from(i + 1);
        if r > u128::from(u64::MAX) {
            return u64::MAX;
        }
    }
    r as u64
}

/// An expectation and its estimated numerical error.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Estimate {
    /// The value (the refined run's).
    pub value: f64,
    /// `|refined − base|` plus the extrapolation estimate and the round-off floor.
    pub error: f64,
}

/// The grid box of one step size and what it leaves out.
#[derive(Clone, Debug, PartialEq)]
pub struct Domain {
    /// Lower corner (refined run).
    pub lo: Vec<f64>,
    /// Upper corner (refined run).
    pub hi: Vec<f64>,
    /// Standard deviations of the linearised laws the box spans (refined run).
    pub spread: f64,
    /// Chebyshev nodes per axis: base run, refined run.
    pub nodes: (Vec<usize>, Vec<usize>),
    /// Normal tail mass outside the refined box, summed over the steps and coordinates
    /// of the linearised SGD laws (an estimate: a union bound under linearisation).
    pub mass_outside: f64,
    /// Gauss–Hermite nodes per dimension of the SGD step in the refined run (0 for a
    /// finite sum, whose steps are its minibatches).
    pub sgd_rule: usize,
    /// Minibatches per SGD step (finite sums), else 0.
    pub minibatches: u64,
}

/// One model's expectations at one step size.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelExpectations {
    /// One per observable.
    pub values: Vec<Estimate>,
    /// The substep counts of the extrapolation (refined run).
    pub substeps: Vec<usize>,
}

/// Every expectation at one step size.
#[derive(Clone, Debug, PartialEq)]
pub struct Expectations {
    /// The step size.
    pub eta: f64,
    /// The grid box.
    pub domain: Domain,
    /// SGD's `E φ(x_N)`, one per observable.
    pub sgd: Vec<Estimate>,
    /// Each model's `E φ(X_T)`, or why it failed (the model left its domain at a grid
    /// node, …).
    pub models: Vec<Result<ModelExpectations, String>>,
}

/// The problem's data at a point: the gradient and the factor of η²Σ's law.
struct Sampler<'a> {
    problem: &'a Problem,
    ws: Workspace,
    jets: Jets,
    buffers: NoiseBuffers,
    cov: Vec<f64>,
}

impl<'a> Sampler<'a> {
    fn new(problem: &'a Problem) -> Sampler<'a> {
        let d = problem.dim();
        Sampler {
            problem,
            ws: Workspace::default(),
            jets: Jets::default(),
            buffers: NoiseBuffers::default(),
            cov: vec![0.0; d * d],
        }
    }

    /// ∇f and Σ at x (Σ into `self.cov`).
    fn gradient_and_noise(&mut self, x: &[f64], g: &mut [f64]) -> Result<(), ProblemError> {
        self.problem
            .gradient_with(x, &mut self.ws, &mut self.jets)?;
        g.copy_from_slice(self.jets.gradient(0));
        self.problem
            .noise_cov_into(x, &mut self.buffers, &mut self.cov)
    }
}

/// The lower triangular factor `L` (`LLᵀ = S`) of a PSD 1×1 or 2×2 matrix, as
/// `[l11]` or `[l11, l21, l22]`, scaled by `scale`. A round-off-negative pivot is 0.
fn lower_factor(s: &[f64], scale: f64, out: &mut [f64]) {
    match s.len() {
        1 => out[0] = scale * s[0].max(0.0).sqrt(),
        4 => {
            let a = s[0].max(0.0).sqrt();
            let (l21, l22) = if a > 0.0 {
                let l21 = s[2] / a;
                (l21, (s[3] - l21 * l21).max(0.0).sqrt())
            } else {
                (0.0, s[3].max(0.0).sqrt())
            };
            out[0] = scale * a;
            out[1] = scale * l21;
            out[2] = scale * l22;
        }
        _ => unreachable!("d ≤ 2"),
    }
}

/// Values and factors per point (a drift or centre, and a lower triangular factor).
type Fields = (Vec<f64>, Vec<f64>);

/// A run's extrapolated values, their extrapolation errors, the substep counts, `M₀`.
type Extrapolated = (Vec<f64>, Vec<f64>, Vec<usize>, usize);

/// Per step of the linearised path: the mean and each coordinate's standard deviation.
type Path = Vec<(Vec<f64>, Vec<f64>)>;

/// Where a step from each node goes: a Gaussian law `N(c, AAᵀ)` with `A` lower
/// triangular, or the equally likely minibatch steps of a finite sum.
#[derive(Clone, Debug)]
enum Steps {
    /// `centres` (nodes × d) and factors (nodes × {1, 3}).
    Gaussian {
        centres: Vec<f64>,
        factors: Vec<f64>,
    },
    /// `centres` (nodes × batches × d), `weights` per minibatch.
    Discrete {
        centres: Vec<f64>,
        weights: Vec<f64>,
    },
}

fn factor_len(d: usize) -> usize {
    if d == 1 { 1 } else { 3 }
}

/// The enumerated minibatches with their probabilities.
fn minibatches(n: usize, b: usize, sampling: Sampling) -> Vec<(Vec<usize>, f64)> {
    let mut out = Vec::new();
    let mut current = Vec::with_capacity(b);
    // Multisets (with replacement) are non-decreasing index lists; subsets increasing.
    fn rec(
        start: usize,
        n: usize,
        b: usize,
        repeat: bool,
        current: &mut Vec<usize>,
        out: &mut Vec<Vec<usize>>,
    ) {
        if current.len() == b {
            out.push(current.clone());
            return;
        }
        for i in start..n {
            current.push(i);
            rec(if repeat { i } else { i + 1 }, n, b, repeat, current, out);
            current.pop();
        }
    }
    let mut lists = Vec::new();
    let repeat = sampling == Sampling::WithReplacement;
    rec(0, n, b, repeat, &mut current, &mut lists);
    let total = match sampling {
        Sampling::WithoutReplacement => lists.len() as f64,
        Sampling::WithReplacement => (n as f64).powi(b as i32),
    };
    for list in lists {
        // Ordered draws giving this multiset: b! / Π multiplicity!.
        let mut count = (1..=b).map(|k| k as f64).product::<f64>();
        if repeat {
            let mut i = 0;
            while i < list.len() {
                let j = list[i..].iter().take_while(|&&v| v == list[i]).count();
                count /= (1..=j).map(|k| k as f64).product::<f64>();
                i += j;
            }
        } else {
            count = 1.0;
        }
        out.push((list, count / total));
    }
    out
}

/// SGD's step law from every node of `grid` (and from `x0`, as a one-node list).
fn sgd_steps(problem: &Problem, eta: f64, points: &[Vec<f64>]) -> Result<Steps, ProblemError> {
    let d = problem.dim();
    match problem.finite_sum() {
        Some(fs) if !fs.columns.is_empty() => {
            let batches = minibatches(fs.n, fs.batch, fs.sampling);
            let chunks: Vec<Result<Vec<f64>, ProblemError>> = points
                .par_iter()
                .map(|x| {
                    let (mut ws, mut jets) = (Workspace::default(), Jets::default());
                    let mut grads = vec![0.0; fs.n * d];
                    for i in 0..fs.n {
                        problem.example_gradient_with(x, i, &mut ws, &mut jets)?;
                        grads[i * d..(i + 1) * d].copy_from_slice(jets.gradient(0));
                    }
                    let mut out = Vec::with_capacity(batches.len() * d);
                    for (list, _) in &batches {
                        for a in 0..d {
                            let mean: f64 = list.iter().map(|&i| grads[i * d + a]).sum::<f64>()
                                / list.len() as f64;
                            out.push(x[a] - eta * mean);
                        }
                    }
                    Ok(out)
                })
                .collect();
            let mut centres = Vec::with_capacity(points.len() * batches.len() * d);
            for c in chunks {
                centres.extend(c?);
            }
            Ok(Steps::Discrete {
                centres,
                weights: batches.iter().map(|b| b.1).collect(),
            })
        }
        _ => {
            let fl = factor_len(d);
            let chunks: Vec<Result<Fields, ProblemError>> = points
                .par_iter()
                .map(|x| {
                    let mut s = Sampler::new(problem);
                    let mut g = vec![0.0; d];
                    s.gradient_and_noise(x, &mut g)?;
                    let c: Vec<f64> = (0..d).map(|a| x[a] - eta * g[a]).collect();
                    let mut f = vec![0.0; fl];
                    lower_factor(&s.cov, eta, &mut f);
                    Ok((c, f))
                })
                .collect();
            let mut centres = Vec::with_capacity(points.len() * d);
            let mut factors = Vec::with_capacity(points.len() * fl);
            for c in chunks {
                let (c, f) = c?;
                centres.extend(c);
                factors.extend(f);
            }
            Ok(Steps::Gaussian { centres, factors })
        }
    }
}

/// A model's drift and the lower factor of its Γ at every point.
fn model_fields(
    problem: &Problem,
    model: ModelKind,
    eta: f64,
    points: &[Vec<f64>],
) -> Result<Fields, String> {
    let d = problem.dim();
    let fl = factor_len(d);
    let per: Vec<Result<Fields, String>> = points
        .par_iter()
        .map(|x| {
            let local = problem.local(x).map_err(|e| e.to_string())?;
            let c = model.coefficients(&local, eta).map_err(|e| e.to_string())?;
            let mut f = vec![0.0; fl];
            lower_factor(c.diffusion.transpose().as_slice(), 1.0, &mut f);
            Ok((c.drift.as_slice().to_vec(), f))
        })
        .collect();
    let mut drift = Vec::with_capacity(points.len() * d);
    let mut factor = Vec::with_capacity(points.len() * fl);
    for r in per {
        let (b, f) = r?;
        drift.extend(b);
        factor.extend(f);
    }
    Ok((drift, factor))
}

/// The expectation of each interpolant under a step law from one node: `Σ_q w_q u(c +
/// Aξ_q)` (tensor rule, the triangular factor) or the minibatch mean.
fn expect(
    grid: &Grid,
    interps: &[Interpolant],
    rule: &Rule,
    centre: &[f64],
    factor: &[f64],
    row: &mut Vec<f64>,
    out: &mut [f64],
) {
    out.fill(0.0);
    match grid.axes.as_slice() {
        [ax] => {
            let a = factor[0];
            if a == 0.0 {
                let t = ax.local(centre[0]);
                for (o, it) in out.iter_mut().zip(interps) {
                    *o = it.eval1(t);
                }
                return;
            }
            for (&xi, &w) in rule.nodes.iter().zip(&rule.weights) {
                let t = ax.local(centre[0] + a * xi);
                for (o, it) in out.iter_mut().zip(interps) {
                    *o += w * it.eval1(t);
                }
            }
        }
        [ax, ay] => {
            let (a11, a21, a22) = (factor[0], factor[1], factor[2]);
            let point = Rule::point();
            let first = if a11 == 0.0 && a21 == 0.0 {
                &point
            } else {
                rule
            };
            let second = if a22 == 0.0 { &point } else { rule };
            for (&x1, &w1) in first.nodes.iter().zip(&first.weights) {
                let tx = ax.local(centre[0] + a11 * x1);
                let cy = centre[1] + a21 * x1;
                for (o, it) in out.iter_mut().zip(interps) {
                    row.resize(it.my, 0.0);
                    it.contract_x(tx, &mut row[..it.my]);
                    let mut s = 0.0;
                    for (&x2, &w2) in second.nodes.iter().zip(&second.weights) {
                        s += w2 * it.eval_row(&row[..it.my], ay.local(cy + a22 * x2));
                    }
                    *o += w1 * s;
                }
            }
        }
        _ => unreachable!("d ≤ 2"),
    }
}

/// The expectation under a discrete law (minibatches) from one node.
fn expect_discrete(
    grid: &Grid,
    interps: &[Interpolant],
    centres: &[f64],
    weights: &[f64],
    row: &mut Vec<f64>,
    out: &mut [f64],
) {
    let d = grid.axes.len();
    out.fill(0.0);
    for (b, &w) in weights.iter().enumerate() {
        let c = &centres[b * d..(b + 1) * d];
        for (o, it) in out.iter_mut().zip(interps) {
            *o += w * eval(grid, it, c, row);
        }
    }
}

/// The interpolant at a point.
fn eval(grid: &Grid, it: &Interpolant, x: &[f64], row: &mut Vec<f64>) -> f64 {
    match grid.axes.as_slice() {
        [ax] => it.eval1(ax.local(x[0])),
        [ax, ay] => {
            row.resize(it.my, 0.0);
            it.contract_x(ax.local(x[0]), &mut row[..it.my]);
            it.eval_row(&row[..it.my], ay.local(x[1]))
        }
        _ => unreachable!("d ≤ 2"),
    }
}

/// One backward step on the grid: `u_new(node) = E u(step(node))` for every observable.
fn step_grid(
    grid: &Grid,
    interps: &[Interpolant],
    rule: &Rule,
    steps: &StepView<'_>,
) -> Vec<Vec<f64>> {
    let nodes = grid.len();
    let k = interps.len();
    let flat: Vec<f64> = (0..nodes)
        .into_par_iter()
        .map_init(Vec::new, |row, i| {
            let mut out = vec![0.0; k];
            steps.expect_from(grid, interps, rule, i, row, &mut out);
            out
        })
        .flatten_iter()
        .collect();
    (0..k)
        .map(|o| (0..nodes).map(|i| flat[i * k + o]).collect())
        .collect()
}

/// A step law from every node, possibly rescaled (Euler substeps).
enum StepView<'a> {
    Steps(&'a Steps, usize),
    Euler {
        points: &'a [Vec<f64>],
        drift: &'a [f64],
        factor: &'a [f64],
        h: f64,
    },
}

impl StepView<'_> {
    fn expect_from(
        &self,
        grid: &Grid,
        interps: &[Interpolant],
        rule: &Rule,
        i: usize,
        row: &mut Vec<f64>,
        out: &mut [f64],
    ) {
        match self {
            StepView::Steps(Steps::Gaussian { centres, factors }, d) => {
                let fl = factor_len(*d);
                expect(
                    grid,
                    interps,
                    rule,
                    &centres[i * d..(i + 1) * d],
                    &factors[i * fl..(i + 1) * fl],
                    row,
                    out,
                );
            }
            StepView::Steps(Steps::Discrete { centres, weights }, d) => {
                let per = weights.len() * d;
                expect_discrete(
                    grid,
                    interps,
                    &centres[i * per..(i + 1) * per],
                    weights,
                    row,
                    out,
                );
            }
            StepView::Euler {
                points,
                drift,
                factor,
                h,
            } => {
                let d = points[i].len();
                let fl = factor_len(d);
                let mut c = [0.0; MAX_DIM];
                for a in 0..d {
                    c[a] = points[i][a] + h * drift[i * d + a];
                }
                let mut f = [0.0; 3];
                for a in 0..fl {
                    f[a] = h.sqrt() * factor[i * fl + a];
                }
                expect(grid, interps, rule, &c[..d], &f[..fl], row, out);
            }
        }
    }
}

/// What one recursion returns: the value per observable at x₀, the largest value met
/// (for the round-off floor) and the steps taken.
struct Backward {
    values: Vec<f64>,
    scale: f64,
    /// The largest tail of an interpolant met, relative to its scale: how well the
    /// grid resolved the solution.
    tail: f64,
}

/// Runs a backward recursion of `steps` steps (the grid's step law on all but the last,
/// `last` from x₀), from the observables' values `phi` at the nodes.
fn backward(
    grid: &Grid,
    phi: &[Vec<f64>],
    rule: &Rule,
    on_grid: &StepView<'_>,
    last: &StepView<'_>,
    steps: usize,
) -> Backward {
    let mut u: Vec<Vec<f64>> = phi.to_vec();
    let mut scale = 0.0f64;
    let mut tail = 0.0f64;
    let mut track = |interps: &[Interpolant]| {
        for it in interps {
            scale = scale.max(it.scale);
            if it.scale > 0.0 {
                tail = tail.max(it.tail / it.scale);
            }
        }
    };
    for _ in 1..steps {
        let interps: Vec<Interpolant> = u.iter().map(|v| grid.interpolate(v)).collect();
        track(&interps);
        u = step_grid(grid, &interps, rule, on_grid);
    }
    let interps: Vec<Interpolant> = u.iter().map(|v| grid.interpolate(v)).collect();
    track(&interps);
    let mut out = vec![0.0; phi.len()];
    last.expect_from(grid, &interps, rule, 0, &mut Vec::new(), &mut out);
    Backward {
        values: out,
        scale,
        tail,
    }
}

/// The linearised SGD laws along the mean path: per step, the mean and the standard
/// deviation of each coordinate.
fn linearised_path(problem: &Problem, eta: f64, steps: usize) -> Result<Path, QuadratureError> {
    let d = problem.dim();
    let mut m = problem.start();
    let mut c: Vec<f64> = vec![0.0; d * d];
    let mut out = Vec::with_capacity(steps + 1);
    for k in 0..=steps {
        let sd: Vec<f64> = (0..d).map(|i| c[i * d + i].max(0.0).sqrt()).collect();
        if m.iter().chain(&sd).any(|v| !v.is_finite()) {
            return Err(QuadratureError::Numerical(format!(
                "the linearised SGD path leaves the range of f64 at step {k} (t = {}): \
                 the process spreads too far for a grid; use --method monte-carlo",
                k as f64 * eta
            )));
        }
        out.push((m.clone(), sd));
        if k == steps {
            break;
        }
        let der = problem.derivatives(&m)?;
        let mut p = vec![0.0; d * d];
        for i in 0..d {
            for j in 0..d {
                p[i * d + j] = f64::from(u8::from(i == j)) - eta * der.hessian[(i, j)];
            }
        }
        // C ← P C Pᵀ + η²Σ.
        let mut pc = vec![0.0; d * d];
        for i in 0..d {
            for j in 0..d {
                pc[i * d + j] = (0..d).map(|l| p[i * d + l] * c[l * d + j]).sum();
            }
        }
        let mut next = vec![0.0; d * d];
        for i in 0..d {
            for j in 0..d {
                next[i * d + j] = (0..d).map(|l| pc[i * d + l] * p[j * d + l]).sum::<f64>()
                    + eta * eta * der.noise_cov[(i, j)];
            }
        }
        c = next;
        for (mi, gi) in m.iter_mut().zip(der.gradient.iter()) {
            *mi -= eta * gi;
        }
    }
    Ok(out)
}

/// The box spanning `mean ± spread·sd` at every step, with a floor on its half-width
/// (a process without noise still needs a box around its path).
fn domain_box(path: &[(Vec<f64>, Vec<f64>)], spread: f64) -> (Vec<f64>, Vec<f64>) {
    let d = path[0].0.len();
    let mut lo = vec![f64::INFINITY; d];
    let mut hi = vec![f64::NEG_INFINITY; d];
    for (m, sd) in path {
        for i in 0..d {
            lo[i] = lo[i].min(m[i] - spread * sd[i]);
            hi[i] = hi[i].max(m[i] + spread * sd[i]);
        }
    }
    for i in 0..d {
        // 1e-2 (relative to the coordinate's size, at least 1e-2): a deterministic path
        // needs some width for its interpolant; the recursion reads u along the path.
        let floor = 1e-2 * (1.0 + lo[i].abs().max(hi[i].abs())) + 0.05 * (hi[i] - lo[i]);
        let (mid, half) = (0.5 * (lo[i] + hi[i]), 0.5 * (hi[i] - lo[i]));
        let half = half + floor;
        lo[i] = mid - half;
        hi[i] = mid + half;
    }
    (lo, hi)
}

/// Normal tail mass outside the box, summed over steps and coordinates.
fn mass_outside(path: &[(Vec<f64>, Vec<f64>)], lo: &[f64], hi: &[f64]) -> f64 {
    let mut total = 0.0;
    for (m, sd) in path {
        for i in 0..m.len() {
            if sd[i] > 0.0 {
                total += 0.5 * erfc((m[i] - lo[i]) / (sd[i] * std::f64::consts::SQRT_2));
                total += 0.5 * erfc((hi[i] - m[i]) / (sd[i] * std::f64::consts::SQRT_2));
            }
        }
    }
    total
}

/// The complementary error function (Numerical Recipes' `erfcc`, relative error below
/// 1.2e−7: enough for a mass estimate).
fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let r = t
        * (-z * z - 1.265_512_23
            + t * (1.000_023_68
                + t * (0.374_091_96
                    + t * (0.096_784_18
                        + t * (-0.186_288_06
                            + t * (0.278_868_07
                                + t * (-1.135_203_98
                                    + t * (1.488_515_87
                                        + t * (-0.822_152_23 + t * 0.170_872_77)))))))))
            .exp();
    if x >= 0.0 { r } else { 2.0 - r }
}

/// The node counts per axis tried, in order.
const NODE_COUNTS: [usize; 10] = [12, 16, 24, 32, 48, 64, 96, 128, 192, 256];

/// Nodes per axis that resolve the observables, the gradient and Σ on the box: the
/// smallest of 12, 16, 24, 32, 48, 64, … (up to `max`) whose Chebyshev series of each
/// of them has its last quarter below `tol` of its largest coefficient.
fn resolving_nodes(
    problem: &Problem,
    lo: &[f64],
    hi: &[f64],
    max: usize,
    tol: f64,
) -> Result<usize, QuadratureError> {
    let d = problem.dim();
    for &n in NODE_COUNTS.iter().filter(|&&n| n <= max) {
        let grid = Grid {
            axes: (0..d).map(|i| Axis::new(lo[i], hi[i], n)).collect(),
        };
        let points = grid_points(&grid);
        let values = sample(problem, &points)?;
        let resolved = values.iter().all(|v| {
            let it = grid.interpolate(v);
            it.tail <= tol * it.scale.max(f64::MIN_POSITIVE)
        });
        if resolved {
            return Ok(n);
        }
    }
    Ok(max)
}

/// The observables, gradient components and Σ entries at the points, one vector per
/// function.
fn sample(problem: &Problem, points: &[Vec<f64>]) -> Result<Vec<Vec<f64>>, QuadratureError> {
    let d = problem.dim();
    let rows: Vec<Result<Vec<f64>, ProblemError>> = points
        .par_iter()
        .map(|x| {
            let mut s = Sampler::new(problem);
            let mut g = vec![0.0; d];
            s.gradient_and_noise(x, &mut g)?;
            let mut out = problem.observables(x)?;
            out.extend_from_slice(&g);
            out.extend_from_slice(&s.cov);
            Ok(out)
        })
        .collect();
    let rows: Vec<Vec<f64>> = rows.into_iter().collect::<Result<_, _>>()?;
    let k = rows.first().map_or(0, Vec::len);
    Ok((0..k)
        .map(|j| rows.iter().map(|r| r[j]).collect())
        .collect())
}

fn grid_points(grid: &Grid) -> Vec<Vec<f64>> {
    let d = grid.axes.len();
    (0..grid.len())
        .map(|i| {
            let mut p = vec![0.0; d];
            grid.node(i, &mut p);
            p
        })
        .collect()
}

/// Polynomial extrapolation to `h = 0` of the values `a_j` at `h_j` (Neville's
/// tableau), for one observable: the extrapolant through all the points, and the one
/// through all but the last (the tableau's previous diagonal entry), whose difference
/// estimates the first's error.
pub fn richardson(h: &[f64], a: &[f64]) -> (f64, f64) {
    let n = a.len();
    let mut p = a.to_vec();
    let mut previous = p[0];
    // After column k, p[j] (j ≥ k) extrapolates through the points j − k … j.
    for k in 1..n {
        for j in (k..n).rev() {
            p[j] = (h[j - k] * p[j] - h[j] * p[j - 1]) / (h[j - k] - h[j]);
        }
        if k == n - 2 {
            previous = p[n - 2];
        }
    }
    if n == 2 {
        previous = a[1];
    }
    (p[n - 1], previous)
}

/// The substep multipliers of the extrapolation (a Bulirsch-like sequence: more levels
/// per unit of work than doubling).
const LEVELS: [usize; 10] = [1, 2, 3, 4, 6, 8, 12, 16, 24, 32];

/// One run (base or refined) at one step size.
struct Run {
    grid: Grid,
    points: Vec<Vec<f64>>,
    phi: Vec<Vec<f64>>,
    sgd_rule: Rule,
    sde_rule: Rule,
    min_levels: usize,
    /// SGD's recursion on this run's grid.
    sgd: Backward,
    /// Nodes per axis before `grid_scale`.
    nodes: usize,
}

/// Computes every expectation at step size `eta`, horizon `horizon = Nη`, for the
/// observables `observables` (indices into the problem's) and the models.
///
/// ```
/// use hasme::{ModelKind, Problem};
/// use hasme::quadrature::{Settings, expectations};
///
/// // An Ornstein–Uhlenbeck SGD: x ← (1 − η)x + η·0.5ξ, so E x_N² = (1 − η)^{2N} x₀² +
/// // η²/4 · Σ_k (1 − η)^{2k}.
/// let p = Problem::from_str("var x = 1\nminimize 0.5*x^2\nnoise sd 0.5\nobserve x2 = x^2")?;
/// let settings = Settings { tolerance: 1e-10, threads: 1, grid_scale: 1.0 };
/// let e = expectations(&p, 0.25, 1.0, &[ModelKind::Hasme], &[0], &settings)?;
/// let q: f64 = 0.75f64 * 0.75;
/// let exact = q.powi(4) + 0.0625 / 4.0 * (0..4).map(|k| q.powi(k)).sum::<f64>();
/// assert!((e.sgd[0].value - exact).abs() < 1e-12 && e.sgd[0].error < 1e-10);
/// // HA-SME is exact in law on a quadratic: its weak error is round-off.
/// let hasme = e.models[0].as_ref().unwrap().values[0];
/// assert!((hasme.value - e.sgd[0].value).abs() < 1e-10);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn expectations(
    problem: &Problem,
    eta: f64,
    horizon: f64,
    models: &[ModelKind],
    observables: &[usize],
    settings: &Settings,
) -> Result<Expectations, QuadratureError> {
    supported(problem)?;
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(settings.threads.max(1))
        .build()
        .map_err(|e| QuadratureError::Numerical(format!("thread pool: {e}")))?;
    pool.install(|| expectations_in_pool(problem, eta, horizon, models, observables, settings))
}

fn expectations_in_pool(
    problem: &Problem,
    eta: f64,
    horizon: f64,
    models: &[ModelKind],
    observables: &[usize],
    settings: &Settings,
) -> Result<Expectations, QuadratureError> {
    let d = problem.dim();
    let steps = ((horizon / eta).round() as usize).max(1);
    let path = linearised_path(problem, eta, steps)?;
    let tol = settings.tolerance;
    let max_nodes = if d == 1 { 256 } else { 64 };
    let x0 = problem.start();
    let minibatches = problem
        .finite_sum()
        .filter(|fs| !fs.columns.is_empty())
        .map_or(0, |fs| minibatch_count(fs.n, fs.batch, fs.sampling));

    // Base and refined runs.
    // The SGD recursion on a run's grid.
    let sgd_on = |grid: &Grid, points: &[Vec<f64>], phi: &[Vec<f64>], rule: &Rule| {
        let on_grid = sgd_steps(problem, eta, points)?;
        let last = sgd_steps(problem, eta, std::slice::from_ref(&x0))?;
        Ok::<Backward, QuadratureError>(backward(
            grid,
            phi,
            rule,
            &StepView::Steps(&on_grid, d),
            &StepView::Steps(&last, d),
            steps,
        ))
    };
    // Resolve the solution well below the tolerance (relative to its size): the
    // recursion adds each step's interpolation error.
    let resolve = (tol * 1e-3).max(1e-15);
    let make_run = |spread: f64, nodes: Option<usize>| -> Result<Run, QuadratureError> {
        let refine = nodes.is_some();
        let (lo, hi) = domain_box(&path, spread);
        // Gauss–Hermite nodes: the SGD step's spread is a sizeable part of the box at
        // large η; an Euler substep's is small.
        let (q_sgd, q_sde) = match (d, refine) {
            (1, false) => (24, 8),
            (1, true) => (32, 10),
            (_, false) => (12, 4),
            (_, true) => (16, 6),
        };
        let sgd_rule = Rule::new(q_sgd);
        let scaled = |n: usize| ((n as f64 * settings.grid_scale).round() as usize).max(4);
        // The base run: the fewest nodes (12, 16, 24, 32, 48, …) that resolve the
        // observables, ∇f and Σ on the box and then SGD's solution at every step; the
        // refined run: a third more than the base.
        let mut n = match nodes {
            Some(n) => n,
            None => resolving_nodes(problem, &lo, &hi, max_nodes, resolve)?,
        };
        loop {
            let grid = Grid {
                axes: (0..d).map(|i| Axis::new(lo[i], hi[i], scaled(n))).collect(),
            };
            let points = grid_points(&grid);
            let phi_rows: Vec<Result<Vec<f64>, ProblemError>> =
                points.par_iter().map(|x| problem.observables(x)).collect();
            let phi_rows: Vec<Vec<f64>> = phi_rows.into_iter().collect::<Result<_, _>>()?;
            let phi: Vec<Vec<f64>> = observables
                .iter()
                .map(|&o| phi_rows.iter().map(|r| r[o]).collect())
                .collect();
            let sgd = sgd_on(&grid, &points, &phi, &sgd_rule)?;
            let next = NODE_COUNTS.iter().copied().find(|&m| m > n);
            match next {
                Some(m) if !refine && sgd.tail > resolve && m <= max_nodes => n = m,
                _ => {
                    return Ok(Run {
                        grid,
                        points,
                        phi,
                        sgd_rule,
                        sde_rule: Rule::new(q_sde),
                        min_levels: if refine { 4 } else { 3 },
                        sgd,
                        nodes: n,
                    });
                }
            }
        }
    };
    let base = make_run(SPREAD, None)?;
    let refined = make_run(
        SPREAD_REFINED,
        Some((base.nodes + base.nodes.div_ceil(3)).min(max_nodes)),
    )?;
    let (sgd_base, sgd_refined) = (&base.sgd, &refined.sgd);
    let floor =
        |scale: f64, steps: usize| ROUNDOFF_ULPS * f64::EPSILON * scale * (steps as f64).sqrt();
    let sgd = (0..observables.len())
        .map(|o| Estimate {
            value: sgd_refined.values[o],
            error: (sgd_refined.values[o] - sgd_base.values[o]).abs()
                + floor(sgd_refined.scale.max(sgd_base.scale), steps),
        })
        .collect();

    // Each model.
    let mut model_results = Vec::with_capacity(models.len());
    for &model in models {
        model_results.push(model_expectations(
            problem,
            model,
            eta,
            horizon,
            &x0,
            &base,
            &refined,
            observables.len(),
            tol,
        ));
    }
    let (lo, hi) = (
        refined.grid.axes.iter().map(|a| a.lo).collect::<Vec<_>>(),
        refined.grid.axes.iter().map(|a| a.hi).collect::<Vec<_>>(),
    );
    Ok(Expectations {
        eta,
        domain: Domain {
            mass_outside: mass_outside(&path, &lo, &hi),
            lo,
            hi,
            spread: SPREAD_REFINED,
            nodes: (
                base.grid.axes.iter().map(Axis::len).collect(),
                refined.grid.axes.iter().map(Axis::len).collect(),
            ),
            sgd_rule: if minibatches > 0 {
                0
            } else {
                refined.sgd_rule.len()
            },
            minibatches,
        },
        sgd,
        models: model_results,
    })
}

/// One model: the extrapolated Euler semi-Lagrangian recursion on both runs.
#[allow(clippy::too_many_arguments)]
fn model_expectations(
    problem: &Problem,
    model: ModelKind,
    eta: f64,
    horizon: f64,
    x0: &[f64],
    base: &Run,
    refined: &Run,
    k: usize,
    tol: f64,
) -> Result<ModelExpectations, String> {
    let start = std::slice::from_ref(&x0.to_vec()).to_vec();
    let (b0, f0) = model_fields(problem, model, eta, &start)?;
    let run = |r: &Run, m0: Option<usize>| -> Result<Extrapolated, String> {
        let (drift, factor) = model_fields(problem, model, eta, &r.points)?;
        // The first substep count: h₀·Lip(b) ≤ 1/2 (Euler's feet then keep their order
        // and the extrapolation's series converges fast), and at least 2 substeps.
        let lip = lipschitz(&r.grid, &drift);
        let m0 = m0.unwrap_or_else(|| ((2.0 * lip * horizon).ceil() as usize).clamp(2, 4096));
        let mut hs = Vec::new();
        let mut table: Vec<Vec<f64>> = vec![Vec::new(); k];
        let mut used = Vec::new();
        let mut scale = 0.0f64;
        let mut result = (vec![0.0; k], vec![f64::INFINITY; k]);
        for (level, &s) in LEVELS.iter().enumerate() {
            let m = m0 * s;
            let h = horizon / m as f64;
            let on_grid = StepView::Euler {
                points: &r.points,
                drift: &drift,
                factor: &factor,
                h,
            };
            let last = StepView::Euler {
                points: &start,
                drift: &b0,
                factor: &f0,
                h,
            };
            let rule = if factor.iter().all(|&v| v == 0.0) {
                Rule::point()
            } else {
                r.sde_rule.clone()
            };
            let bw = backward(&r.grid, &r.phi, &rule, &on_grid, &last, m);
            scale = scale.max(bw.scale);
            hs.push(h);
            used.push(m);
            for (column, v) in table.iter_mut().zip(&bw.values) {
                column.push(*v);
            }
            let mut done = level + 1 >= r.min_levels;
            for (o, column) in table.iter().enumerate() {
                let (best, previous) = richardson(&hs, column);
                result.0[o] = best;
                result.1[o] = (best - previous).abs();
                done &= result.1[o] <= 0.25 * tol;
            }
            if done {
                break;
            }
        }
        let floor =
            ROUNDOFF_ULPS * f64::EPSILON * scale * (*used.last().unwrap_or(&1) as f64).sqrt();
        let est: Vec<f64> = result.1.iter().map(|e| e + floor).collect();
        Ok((result.0, est, used, m0))
    };
    let (base_values, _, _, m0) = run(base, None)?;
    let (values, extrapolation, substeps, _) = run(refined, Some(m0))?;
    Ok(ModelExpectations {
        values: (0..k)
            .map(|o| Estimate {
                value: values[o],
                error: (values[o] - base_values[o]).abs() + extrapolation[o],
            })
            .collect(),
        substeps,
    })
}

/// The largest difference quotient of the drift between neighbouring grid nodes.
fn lipschitz(grid: &Grid, drift: &[f64]) -> f64 {
    let d = grid.axes.len();
    let mut lip = 0.0f64;
    match grid.axes.as_slice() {
        [ax] => {
            for j in 1..ax.len() {
                let q = (drift[j] - drift[j - 1]).abs() / (ax.nodes[j - 1] - ax.nodes[j]);
                lip = lip.max(q);
            }
        }
        [ax, ay] => {
            let ny = ay.len();
            for i in 0..ax.len() {
                for j in 0..ny {
                    let here = (i * ny + j) * d;
                    if j > 0 {
                        let there = (i * ny + j - 1) * d;
                        let dy = ay.nodes[j - 1] - ay.nodes[j];
                        for a in 0..d {
                            lip = lip.max((drift[here + a] - drift[there + a]).abs() / dy);
                        }
                    }
                    if i > 0 {
                        let there = ((i - 1) * ny + j) * d;
                        let dx = ax.nodes[i - 1] - ax.nodes[i];
                        for a in 0..d {
                            lip = lip.max((drift[here + a] - drift[there + a]).abs() / dx);
                        }
                    }
                }
            }
        }
        _ => unreachable!("d ≤ 2"),
    }
    if lip.is_finite() { lip } else { 0.0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minibatches_enumerate_with_their_probabilities() {
        let w = minibatches(4, 2, Sampling::WithoutReplacement);
        assert_eq!(w.len(), 6);
        assert!(w.iter().all(|b| (b.1 - 1.0 / 6.0).abs() < 1e-15));
        let r = minibatches(3, 2, Sampling::WithReplacement);
        assert_eq!(r.len(), 6);
        let total: f64 = r.iter().map(|b| b.1).sum();
        assert!((total - 1.0).abs() < 1e-15);
        // {0, 0} is drawn one way in 9, {0, 1} two ways.
        assert!((r[0].1 - 1.0 / 9.0).abs() < 1e-15);
        assert!((r[1].1 - 2.0 / 9.0).abs() < 1e-15);
        assert_eq!(minibatch_count(4, 2, Sampling::WithoutReplacement), 6);
        assert_eq!(minibatch_count(3, 2, Sampling::WithReplacement), 6);
    }

    #[test]
    fn extrapolation_removes_the_series_in_h() {
        let h = [0.1, 0.05, 0.1 / 3.0, 0.025];
        let a: Vec<f64> = h
            .iter()
            .map(|h| 2.0 + 3.0 * h - h * h + 0.5 * h * h * h)
            .collect();
        let (best, _) = richardson(&h, &a);
        assert!((best - 2.0).abs() < 1e-13, "{best}");
    }

    #[test]
    fn erfc_is_accurate_enough_for_a_mass_estimate() {
        // erfc(1) = 0.157299207050285, erfc(4) = 1.541725790028e-8.
        assert!((erfc(1.0) / 0.157_299_207_050_285 - 1.0).abs() < 2e-7);
        assert!((erfc(4.0) / 1.541_725_790_028e-8 - 1.0).abs() < 2e-7);
        assert!((erfc(-1.0) - (2.0 - 0.157_299_207_050_285)).abs() < 1e-7);
    }
}
