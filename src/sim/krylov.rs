//! Matrix-free model terms (docs/models.md §8, spec MODELS.md §7): a model's drift and
//! diffusion *increment* at a point from Hessian-vector products, never the d×d
//! Hessian or the d×d factor σ.
//!
//! * `gf`: `−∇f`, no diffusion; `sme1`: `−∇f` and `√η u`; `sme2`: `−∇f − (η/2)H∇f` by
//!   one HVP and `√η u`; `hasme`: `−φ(ηH)∇f` and `√η ψ(ηH)^{1/2} u` by Lanczos
//!   ([`crate::models::matrix_free`]), with the domain `ηλ_max < 1` checked on every
//!   run (a path that leaves it diverges, as on the dense path).
//! * `u` is the noise of the move: for a finite sum `u = A(x)ΔW` with the factor
//!   `A = √(κ/n)[∇F_i − ∇f]` and an n-dimensional Brownian increment (the run's
//!   Brownian paths and SGD's `ξ` then have n entries: [`NoiseDrive::Factor`]);
//!   otherwise `u = Σ^{1/2}ΔW` with the d-dimensional increment (`noise sd` and
//!   `noise diag` read as their diagonal at the point, a constant Σ factored once, a
//!   state-dependent full Σ(x) factored at the point).
//!
//! The increments are what the dense path's `σΔW` is only in law: `ψ^{1/2}Σ^{1/2}` and
//! the dense `(ψ^{1/2}Σψ^{1/2})^{1/2}` are two square roots of the same Γ, so a
//! matrix-free `hasme` path and a dense one agree in distribution, not path by path
//! (`sme1` and `sme2` with the same drive agree path by path to round-off).

use crate::models::ModelKind;
use crate::models::matrix_free::{self, KrylovOptions};
use crate::problem::ProblemError;
use crate::tape::Workspace;

use super::terms::{Coefficients, Evaluator, Failure, Term};

/// How the SDEs' noise enters a matrix-free run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum NoiseDrive {
    /// `u = Σ^{1/2} ΔW`, ΔW with d entries ([`Evaluator::noise_times`]).
    Root,
    /// A finite sum's factor: `u = A(x) ΔW`, ΔW with n entries (the rows).
    Factor,
}

impl NoiseDrive {
    /// The drive of a matrix-free run of `problem`: the factor for a finite sum's
    /// minibatch noise, the square root otherwise.
    pub(crate) fn of(problem: &crate::Problem) -> NoiseDrive {
        match problem.finite_sum() {
            Some(_) if problem.noise_kind() == crate::problem::NoiseKind::Minibatch => {
                NoiseDrive::Factor
            }
            _ => NoiseDrive::Root,
        }
    }

    /// Entries of a Brownian increment (and of SGD's ξ) for `problem`.
    pub(crate) fn dimension(self, problem: &crate::Problem) -> usize {
        match (self, problem.finite_sum()) {
            (NoiseDrive::Factor, Some(fs)) => fs.n,
            _ => problem.dim(),
        }
    }
}

/// Lanczos steps taken by a term's evaluations: for the report of a run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LanczosTally {
    /// Evaluations that ran Lanczos.
    pub evaluations: u64,
    /// Their steps for the drift, summed, and the most in one evaluation.
    pub drift_sum: u64,
    pub drift_max: u64,
    /// Their steps for the diffusion increment, summed, and the most in one.
    pub diffusion_sum: u64,
    pub diffusion_max: u64,
}

impl LanczosTally {
    /// Mean drift steps per evaluation (`None` before any).
    pub fn drift_mean(&self) -> Option<f64> {
        (self.evaluations > 0).then(|| self.drift_sum as f64 / self.evaluations as f64)
    }

    /// Mean diffusion steps per evaluation (`None` before any).
    pub fn diffusion_mean(&self) -> Option<f64> {
        (self.evaluations > 0).then(|| self.diffusion_sum as f64 / self.evaluations as f64)
    }

    /// Adds `other`'s evaluations.
    pub fn merge(&mut self, other: &LanczosTally) {
        self.evaluations += other.evaluations;
        self.drift_sum += other.drift_sum;
        self.drift_max = self.drift_max.max(other.drift_max);
        self.diffusion_sum += other.diffusion_sum;
        self.diffusion_max = self.diffusion_max.max(other.diffusion_max);
    }

    fn add(&mut self, drift: usize, diffusion: usize) {
        self.evaluations += 1;
        self.drift_sum += drift as u64;
        self.drift_max = self.drift_max.max(drift as u64);
        self.diffusion_sum += diffusion as u64;
        self.diffusion_max = self.diffusion_max.max(diffusion as u64);
    }
}

/// JSON: `{"evaluations": N, "drift": {"mean", "max"}, "diffusion": {"mean", "max"}}`
/// (`mean` is `null` with no evaluation).
impl serde::Serialize for LanczosTally {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(serde::Serialize)]
        struct Steps {
            mean: Option<f64>,
            max: u64,
        }
        #[derive(serde::Serialize)]
        struct Json {
            evaluations: u64,
            drift: Steps,
            diffusion: Steps,
        }
        Json {
            evaluations: self.evaluations,
            drift: Steps {
                mean: self.drift_mean(),
                max: self.drift_max,
            },
            diffusion: Steps {
                mean: self.diffusion_mean(),
                max: self.diffusion_max,
            },
        }
        .serialize(serializer)
    }
}

impl std::fmt::Display for LanczosTally {
    /// `Lanczos steps per hasme evaluation: drift 7.12 (max 9), diffusion 6.02 (max 8),
    /// over N evaluations`, or that none ran Lanczos.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.drift_mean(), self.diffusion_mean()) {
            (Some(d), Some(s)) => write!(
                f,
                "Lanczos steps per hasme evaluation: drift {d:.2} (max {}), diffusion {s:.2} (max {}), over {} evaluations",
                self.drift_max, self.diffusion_max, self.evaluations
            ),
            _ => f.write_str("no evaluation ran Lanczos (only hasme does)"),
        }
    }
}

/// The JSON fields of a run on matrix-free coefficients (`simulate`, `weak-order`,
/// `escape`): `linear_algebra` (`"krylov"`), `krylov_tol` and `lanczos_steps`, all
/// absent on the dense path (flattened into each report's JSON).
#[derive(serde::Serialize)]
pub(crate) struct KrylovJson<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    linear_algebra: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    krylov_tol: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    lanczos_steps: Option<&'a LanczosTally>,
}

impl KrylovJson<'_> {
    /// The fields for a run with Lanczos tolerance `tolerance` (`None`: dense).
    pub(crate) fn new(tolerance: Option<f64>, tally: &LanczosTally) -> KrylovJson<'_> {
        KrylovJson {
            linear_algebra: tolerance.map(|_| "krylov"),
            krylov_tol: tolerance,
            lanczos_steps: tolerance.map(|_| tally),
        }
    }
}

/// The lines a matrix-free run's text report adds (none on the dense path).
pub(crate) fn krylov_lines(
    f: &mut std::fmt::Formatter<'_>,
    tolerance: Option<f64>,
    tally: &LanczosTally,
) -> std::fmt::Result {
    match tolerance {
        None => Ok(()),
        Some(tol) => writeln!(
            f,
            "matrix-free coefficients (Lanczos on Hessian-vector products, relative tolerance {tol:e}); a finite sum's noise by the factor of Σ over its rows\n{tally}"
        ),
    }
}

/// One model's matrix-free coefficients at the simulator's current point.
#[derive(Debug)]
pub(crate) struct KrylovTerm<'p> {
    ev: Evaluator<'p>,
    kind: ModelKind,
    eta: f64,
    krylov: KrylovOptions,
    drive: NoiseDrive,
    /// The HVPs' workspace and gradient output (not read).
    hvp_ws: Workspace,
    hvp_grad: Vec<f64>,
    /// The move's summed Brownian increment, `u`, the drift and the increment.
    dw: Vec<f64>,
    u: Vec<f64>,
    drift: Vec<f64>,
    increment: Vec<f64>,
    /// Lanczos steps of this term's evaluations (`hasme` only).
    pub tally: LanczosTally,
}

impl<'p> KrylovTerm<'p> {
    /// Model `kind`'s matrix-free term at step size `eta`; `kind` has a matrix-free
    /// form ([`matrix_free::has_matrix_free_form`], checked when the run is planned).
    pub(crate) fn new(
        kind: ModelKind,
        eta: f64,
        krylov: KrylovOptions,
        drive: NoiseDrive,
        ev: Evaluator<'p>,
    ) -> KrylovTerm<'p> {
        let d = ev.problem.dim();
        let m = drive.dimension(ev.problem);
        KrylovTerm {
            ev,
            kind,
            eta,
            krylov,
            drive,
            hvp_ws: Workspace::default(),
            hvp_grad: vec![0.0; d],
            dw: vec![0.0; m],
            u: vec![0.0; d],
            drift: vec![0.0; d],
            increment: vec![0.0; d],
            tally: LanczosTally::default(),
        }
    }

    /// ∇f at `x` and the move's noise `u` (none when Σ = 0 or the model has no
    /// diffusion) from the summed increment in `self.dw`.
    fn gradient_and_noise(&mut self, x: &[f64]) -> Result<bool, Failure> {
        if self.kind == ModelKind::Gf {
            self.ev.gradient(x)?;
            return Ok(false);
        }
        (self.ev).gradient_and_noise(x, self.drive, &self.dw, &mut self.u)
    }
}

impl Term for KrylovTerm<'_> {
    fn eval(
        &mut self,
        x: &[f64],
        dw: &[f64],
        dw2: Option<&[f64]>,
    ) -> Result<Coefficients<'_>, Failure> {
        match dw2 {
            Some(dw2) => {
                for ((s, a), b) in self.dw.iter_mut().zip(dw).zip(dw2) {
                    *s = a + b;
                }
            }
            None => self.dw.copy_from_slice(dw),
        }
        let noisy = self.gradient_and_noise(x)?;
        let diverged = |e: ProblemError| Failure::Diverged(e.to_string());
        let (problem, eta) = (self.ev.problem, self.eta);
        let (hvp_ws, hvp_grad) = (&mut self.hvp_ws, &mut self.hvp_grad);
        let mut hvp = |v: &[f64], out: &mut [f64]| -> Result<(), ProblemError> {
            problem.hessian_vector_with(x, v, hvp_ws, hvp_grad, out)?;
            Ok(())
        };
        let g = self.ev.gradient_at();
        let root = eta.sqrt();
        match self.kind {
            ModelKind::Gf | ModelKind::Sme1 => {
                for (b, g) in self.drift.iter_mut().zip(g) {
                    *b = -g;
                }
            }
            ModelKind::Sme2 => {
                let b = matrix_free::sme2_drift(g, eta, &mut hvp).map_err(diverged)?;
                self.drift.copy_from_slice(&b);
            }
            _ => {
                let b = matrix_free::hasme_drift(x, g, eta, &self.krylov, &mut hvp)
                    .map_err(diverged)?;
                self.drift.copy_from_slice(&b.vector);
                let mut diffusion_steps = 0;
                if noisy {
                    let inc = matrix_free::hasme_diffusion_increment(
                        x,
                        &self.u,
                        eta,
                        &self.krylov,
                        &mut hvp,
                    )
                    .map_err(diverged)?;
                    diffusion_steps = inc.steps;
                    self.increment.copy_from_slice(&inc.vector);
                }
                // Zero start vectors (∇f = 0 and no noise) see no eigenvalue: check the
                // domain on its own, as the dense path always does.
                if b.steps == 0 && diffusion_steps == 0 {
                    matrix_free::check_domain(x, eta, &mut hvp).map_err(diverged)?;
                }
                self.tally.add(b.steps, diffusion_steps);
                return Ok(Coefficients::Increment(
                    &self.drift,
                    noisy.then_some(&self.increment[..]),
                ));
            }
        }
        if noisy {
            for (i, u) in self.increment.iter_mut().zip(&self.u) {
                *i = root * u;
            }
        }
        if let Some(k) = self.drift.iter().position(|v| !v.is_finite()) {
            return Err(Failure::Diverged(format!(
                "the drift of {} is not finite (entry {})",
                self.kind,
                k + 1
            )));
        }
        Ok(Coefficients::Increment(
            &self.drift,
            noisy.then_some(&self.increment[..]),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::linalg::mat_vec;
    use crate::problem::{Overrides, Problem};
    use crate::sim::terms::NoiseSource;
    use crate::sim::terms::{ModelTerm, sgd_matrix_free_step};
    use crate::tape::Jets;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;
    use rand_distr::{Distribution, StandardNormal};

    fn network() -> Problem {
        let file = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/network.hasme");
        Problem::from_file(file, &Overrides::none().init_seed(3)).expect("the bundled network")
    }

    fn normals(rng: &mut ChaCha8Rng, n: usize) -> Vec<f64> {
        (0..n).map(|_| StandardNormal.sample(rng)).collect()
    }

    fn norm(v: &[f64]) -> f64 {
        v.iter().map(|x| x * x).sum::<f64>().sqrt()
    }

    #[test]
    fn one_pass_gradient_and_factor_agree_with_their_parts() {
        let p = network();
        let (d, n) = (p.dim(), p.finite_sum().unwrap().n);
        let x = p.start();
        let zeta = normals(&mut ChaCha8Rng::seed_from_u64(1), n);
        let (mut ws, mut jets, mut u) = (Workspace::default(), Jets::default(), vec![0.0; d]);
        p.gradient_and_factor_with(&x, &zeta, &mut ws, &mut jets, &mut u)
            .unwrap();
        let mut alone = Jets::default();
        p.gradient_with(&x, &mut ws, &mut alone).unwrap();
        // ∇f: the same sums in the same order, so the same bits.
        assert_eq!(jets.gradient(0), alone.gradient(0));
        assert_eq!(jets.values[0], alone.values[0]);
        let mut by_rows = vec![0.0; d];
        p.noise_factor_times(&x, alone.gradient(0), &zeta, &mut ws, &mut by_rows)
            .unwrap();
        let diff: Vec<f64> = u.iter().zip(&by_rows).map(|(a, b)| a - b).collect();
        assert!(norm(&diff) <= 1e-12 * norm(&u), "{u:?} vs {by_rows:?}");
    }

    /// One Gaussian-surrogate step by the factor moves x by `η(Aξ − ∇f)`: over many
    /// ξ ∈ R^n its noise has mean 0 and covariance Σ(x). Bands: 5 standard errors of
    /// the sample mean (`√(Σ_ii/N)`) and of each sample covariance entry
    /// (`√((Σ_ii Σ_jj + Σ_ij²)/N)`, Gaussian fourth moments), fixed seed.
    #[test]
    fn factor_steps_have_the_minibatch_covariance() {
        let p = network();
        let (d, n) = (p.dim(), p.finite_sum().unwrap().n);
        let x = p.start();
        let noise = NoiseSource::for_problem(&p, &x, false).unwrap();
        let mut ev = Evaluator::new(&p, &noise);
        let sigma = p.noise_cov(&x).unwrap();
        let mut g = Jets::default();
        p.gradient_with(&x, &mut Workspace::default(), &mut g)
            .unwrap();
        let samples = 4000;
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let (mut mean, mut second) = (vec![0.0; d], vec![0.0; d * d]);
        let (mut y, mut tmp) = (vec![0.0; d], vec![0.0; d]);
        for _ in 0..samples {
            let xi = normals(&mut rng, n);
            y.copy_from_slice(&x);
            sgd_matrix_free_step(&mut ev, NoiseDrive::Factor, 1.0, &mut y, &xi, &mut tmp).unwrap();
            // η = 1: y − x + ∇f = Aξ.
            let z: Vec<f64> = (0..d).map(|i| y[i] - x[i] + g.gradient(0)[i]).collect();
            for i in 0..d {
                mean[i] += z[i] / samples as f64;
                for j in 0..d {
                    second[i * d + j] += z[i] * z[j] / samples as f64;
                }
            }
        }
        let s = samples as f64;
        for i in 0..d {
            assert!(
                mean[i].abs() <= 5.0 * (sigma[(i, i)] / s).sqrt(),
                "mean {i}: {}",
                mean[i]
            );
            for j in 0..d {
                let band =
                    5.0 * ((sigma[(i, i)] * sigma[(j, j)] + sigma[(i, j)].powi(2)) / s).sqrt();
                let c = second[i * d + j] - mean[i] * mean[j];
                assert!(
                    (c - sigma[(i, j)]).abs() <= band,
                    "Σ[{i},{j}] = {} sampled as {c} (band {band})",
                    sigma[(i, j)]
                );
            }
        }
    }

    /// A diagonal Σ(x) (`noise diag`, state-dependent; `noise sd`) is read as its
    /// diagonal: the matrix-free `sme1` increment is the dense factor's σ·ΔW.
    #[test]
    fn diagonal_noise_moves_as_the_dense_root() {
        for noise in [
            "noise diag [0.2 + 0.1*x[1]^2, 0.3, 0.1, 0.4 + x[2]^2, 0.05, 0.2]",
            "noise sd 0.3 + 0.1*x[3]^2",
        ] {
            let p = Problem::from_str(&format!(
                "var x[6] = 0.3\nminimize sum(i = 1..6, 0.5*i*x[i]^2 + 0.1*cos(x[i]))\n{noise}"
            ))
            .unwrap();
            let d = p.dim();
            let x: Vec<f64> = (0..d).map(|i| 0.1 * i as f64 - 0.2).collect();
            let dense_noise = NoiseSource::for_problem(&p, &x, false).unwrap();
            let free_noise = NoiseSource::for_problem(&p, &x, true).unwrap();
            let mut dense = ModelTerm::new(ModelKind::Sme1, 0.1, Evaluator::new(&p, &dense_noise));
            let mut free = KrylovTerm::new(
                ModelKind::Sme1,
                0.1,
                KrylovOptions::default(),
                NoiseDrive::Root,
                Evaluator::new(&p, &free_noise),
            );
            let sigma = dense.factor_at(&x).unwrap().1.unwrap().to_vec();
            let dw: Vec<f64> = (0..d).map(|i| 0.3 - 0.17 * i as f64).collect();
            let mut want = vec![0.0; d];
            mat_vec(d, &sigma, &dw, &mut want);
            let Coefficients::Increment(_, Some(inc)) = free.eval(&x, &dw, None).unwrap() else {
                panic!("{noise}: an increment");
            };
            for i in 0..d {
                assert!(
                    (inc[i] - want[i]).abs() <= 1e-14,
                    "{noise}: {i}: {} vs {}",
                    inc[i],
                    want[i]
                );
            }
        }
    }

    /// On a problem with a constant Σ (the square-root drive, d-dimensional ΔW) the
    /// matrix-free `sme1` and `sme2` moves are the dense ones to round-off, and the
    /// matrix-free `hasme` drift is the dense drift to the Lanczos tolerance; its
    /// increments `F ΔW` have the dense diffusion `FFᵀ = σσᵀ = Γ`.
    #[test]
    fn matrix_free_moves_match_the_dense_ones() {
        let p = Problem::from_str(
            "var x[6] = 0.3\n\
             minimize sum(i = 1..6, 0.5*i*x[i]^2) + sum(i = 1..5, 0.3*cos(x[i])*x[i + 1]) + 0.002*sum(i = 1..6, x[i])^4 + sum(i = 1..6, 0.05*i*x[i])\n\
             noise cov [[0.5, 0.1, 0, 0, 0, 0], [0.1, 0.4, 0.05, 0, 0, 0], [0, 0.05, 0.3, 0, 0, 0], \
             [0, 0, 0, 0.2, 0.02, 0], [0, 0, 0, 0.02, 0.3, 0], [0, 0, 0, 0, 0, 0.1]]",
        )
        .unwrap();
        let d = p.dim();
        let x = p.start();
        let noise = NoiseSource::for_problem(&p, &x, false).unwrap();
        let eta = 0.1;
        let options = KrylovOptions::default();
        for kind in [ModelKind::Sme1, ModelKind::Sme2, ModelKind::Hasme] {
            let mut dense = ModelTerm::new(kind, eta, Evaluator::new(&p, &noise));
            let mut free = KrylovTerm::new(
                kind,
                eta,
                options,
                NoiseDrive::Root,
                Evaluator::new(&p, &noise),
            );
            let (drift, sigma) = dense.factor_at(&x).unwrap();
            let (drift, sigma) = (drift.to_vec(), sigma.unwrap().to_vec());
            let mut f = vec![0.0; d * d];
            for j in 0..d {
                let mut e = vec![0.0; d];
                e[j] = 1.0;
                let Coefficients::Increment(b, Some(inc)) = free.eval(&x, &e, None).unwrap() else {
                    panic!("{kind}: a matrix-free term gives increments");
                };
                let tol = if kind == ModelKind::Hasme {
                    1e-9
                } else {
                    1e-13
                };
                for i in 0..d {
                    assert!((b[i] - drift[i]).abs() <= tol, "{kind} drift {i}");
                    f[i * d + j] = inc[i];
                }
                if kind != ModelKind::Hasme {
                    let mut dense_inc = vec![0.0; d];
                    mat_vec(d, &sigma, &e, &mut dense_inc);
                    for i in 0..d {
                        assert!((inc[i] - dense_inc[i]).abs() <= 1e-13, "{kind} inc");
                    }
                }
            }
            for i in 0..d {
                for j in 0..d {
                    let ffx: f64 = (0..d).map(|k| f[i * d + k] * f[j * d + k]).sum();
                    let ssx: f64 = (0..d).map(|k| sigma[i * d + k] * sigma[j * d + k]).sum();
                    assert!(
                        (ffx - ssx).abs() <= 1e-9,
                        "{kind} Γ[{i},{j}]: {ffx} vs {ssx}"
                    );
                }
            }
            if kind == ModelKind::Hasme {
                assert_eq!(free.tally.evaluations, d as u64);
                assert!(free.tally.drift_max >= 1 && free.tally.diffusion_max >= 1);
            }
        }
    }
}
