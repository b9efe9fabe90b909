//! Lane-batched stepping: the paths of a chunk advance together, [`LANES`] at a time,
//! so each SDE coefficient evaluation runs the objective's tape once for a whole block
//! of points ([`super::lanes`]) instead of once per point.
//!
//! The mathematics, the random numbers and the bookkeeping are those of the
//! path-by-path loop in `mod.rs`, reused through the worker's own methods: each lane
//! (path) keeps its SGD state, live flags and saved values, which are swapped into the
//! worker to take its SGD step when the batched step leaves it to
//! [`Worker::step_sgd`], record its observables and mark divergences. The models'
//! states and the Brownian increments are kept in structure-of-arrays form (a row of
//! [`LANES`] numbers per coordinate), the layout the batched evaluation reads and
//! writes, so the scheme's Euler moves ([`super::Scheme::moves`]) run across lanes
//! too. Each lane's numbers depend on its own path only (the batched tape works lane
//! by lane, a lane that stops is masked, not removed), and lanes are summarised in
//! path order at the end of the block, so the statistics do not depend on the block
//! size.

use super::lanes::{LANES, LANES_MAX_DIM, LaneTape, Order, Row};
use super::terms::{Failure, LaneCoefficients, batched_noise, clearly_covariance, sgd_move};
use super::{ChunkStats, Scheme, SimError, Worker};

/// One path's SGD state, flags and saved values while its block runs.
#[derive(Debug)]
pub(super) struct Lane {
    x: Vec<f64>,
    alive: Vec<bool>,
    values: Vec<f64>,
    /// SGD's draw ξ_k of the current SGD step.
    xi: Vec<f64>,
}

/// The lanes and the buffers of a block.
#[derive(Debug)]
pub(super) struct Block {
    lanes: Vec<Lane>,
    /// The models' states: coordinate `i` of copy `c` of model `m` in row
    /// `(m · copies + c) · d + i`.
    states: Vec<Row>,
    /// The SDEs' Brownian increments of the current SGD step: coordinate `i` of the
    /// step's increment `e` in row `e · d + i`.
    increments: Vec<Row>,
    /// SGD's points handed to a batched evaluation (`d` rows, lane `l` the block's path `l`).
    xs: Vec<Row>,
    out: LaneCoefficients,
    /// Lanes stepping the current model, and those the current move evaluates.
    active: [bool; LANES],
    running: [bool; LANES],
    /// Why a lane stopped during the current SGD step.
    failed: Vec<Option<Failure>>,
    /// The last copy's state at the start of the step (`d` rows).
    starts: Vec<Row>,
    /// ∇f over the block for SGD's steps, and Σ(x)'s entries when they depend on the
    /// state (d = 2, where the batched entries can be checked in closed form).
    sgd_gradient: LaneTape,
    sgd_noise: Option<LaneTape>,
    /// Lanes whose SGD step the batched evaluation leaves to the point-at-a-time code.
    sgd_slow: Vec<usize>,
}

impl Block {
    /// Buffers for paths shaped like the worker's (`x` for SGD, `states` for the
    /// models, `alive`, `values`, ξ, and `grid` increments of `d` numbers per SGD step),
    /// or `None` when the objective cannot be batched ([`LaneTape::new`]).
    pub(super) fn new<S: Scheme>(w: &Worker<'_, S>, grid: usize) -> Option<Block> {
        let d = w.x.len();
        let problem = w.plan.problem;
        let sgd_gradient = LaneTape::new(problem.objective_tape(), Order::Gradient)?;
        let sgd_noise = batched_noise(problem, &w.plan.noise);
        Some(Block {
            lanes: (0..LANES)
                .map(|_| Lane {
                    x: w.x.clone(),
                    alive: w.alive.clone(),
                    values: w.values.clone(),
                    xi: vec![0.0; d],
                })
                .collect(),
            states: vec![[0.0; LANES]; w.states.iter().map(Vec::len).sum()],
            increments: vec![[0.0; LANES]; grid * d],
            xs: vec![[0.0; LANES]; d],
            out: LaneCoefficients::new(),
            active: [false; LANES],
            running: [false; LANES],
            failed: (0..LANES).map(|_| None).collect(),
            starts: vec![[0.0; LANES]; d],
            sgd_gradient,
            sgd_noise,
            sgd_slow: Vec::with_capacity(LANES),
        })
    }
}

impl<S: Scheme + Copy> Worker<'_, S> {
    /// Exchanges lane `l`'s per-path state with the worker's (an involution: calling it
    /// again puts both back). The models' states stay in the block.
    fn swap_lane(&mut self, l: usize) {
        let lane = &mut self.block.as_mut().expect("block mode").lanes[l];
        std::mem::swap(&mut self.x, &mut lane.x);
        std::mem::swap(&mut self.alive, &mut lane.alive);
        std::mem::swap(&mut self.values, &mut lane.values);
        std::mem::swap(&mut self.xi, &mut lane.xi);
    }

    /// Records lane `l`'s observables at saved time `t` (the worker's
    /// [`Worker::record`], with the lane's model states copied into the worker's).
    fn record_lane(&mut self, stats: &mut ChunkStats, path: u64, l: usize, t: usize, step: u64) {
        let b = self.block.as_ref().expect("block mode");
        for (v, row) in self.states.iter_mut().flatten().zip(&b.states) {
            *v = row[l];
        }
        self.swap_lane(l);
        self.record(stats, path, t, step);
        self.swap_lane(l);
    }

    /// Simulates paths `first .. first + n` (`n ≤ LANES`) and pushes their values into
    /// `stats` in path order.
    pub(super) fn run_block(
        &mut self,
        first: u64,
        n: usize,
        stats: &mut ChunkStats,
    ) -> Result<(), SimError> {
        let plan = self.plan;
        let d = self.x.len();
        let saves_start = plan.saved[0] == 0;
        let b = self.block.as_mut().expect("block mode");
        for (r, row) in b.states.iter_mut().enumerate() {
            *row = [plan.start[r % d]; LANES];
        }
        for lane in &mut b.lanes[..n] {
            lane.x.copy_from_slice(&plan.start);
            lane.alive.fill(true);
        }
        if saves_start {
            for l in 0..n {
                self.record_lane(stats, first + l as u64, l, 0, 0);
            }
        }
        let mut next_save = usize::from(saves_start);
        for k in 0..plan.steps {
            let mut running = false;
            for l in 0..n {
                let path = first + l as u64;
                let block = self.block.as_mut().expect("block mode");
                let lane = &mut block.lanes[l];
                if lane.alive.iter().any(|&a| a) {
                    running = true;
                    self.brownian.start_path(path);
                    self.brownian.draw_step(k);
                    lane.xi.copy_from_slice(self.brownian.xi());
                    for (row, &v) in block.increments.iter_mut().zip(self.brownian.increments()) {
                        row[l] = v;
                    }
                }
            }
            if !running {
                break;
            }
            self.step_sgd_lanes(stats, first, n, k)?;
            for m in 0..self.terms.len() {
                self.step_model_lanes(stats, first, n, k, m)?;
            }
            if plan.saved.get(next_save) == Some(&(k + 1)) {
                for l in 0..n {
                    self.record_lane(stats, first + l as u64, l, next_save, k + 1);
                }
                next_save += 1;
            }
        }
        for l in 0..n {
            self.swap_lane(l);
            self.push_path(first + l as u64, stats);
            self.swap_lane(l);
        }
        Ok(())
    }

    /// SGD's step `k` for every lane still running it: ∇f batched over the block (and
    /// Σ(x) when it depends on the state, d = 2), then each lane's move. A lane the
    /// batched numbers do not settle plainly (a non-finite gradient or iterate, a Σ(x)
    /// that is not plainly a covariance) takes the point-at-a-time step, which
    /// reports or handles it exactly as a path stepped alone.
    fn step_sgd_lanes(
        &mut self,
        stats: &mut ChunkStats,
        first: u64,
        n: usize,
        k: u64,
    ) -> Result<(), SimError> {
        let eta = self.plan.config.eta;
        let d = self.x.len();
        let kind = self.plan.problem.noise_kind();
        let b = self.block.as_mut().expect("block mode");
        b.sgd_slow.clear();
        for l in 0..n {
            let x = &b.lanes[l].x;
            if b.lanes[l].alive[0] {
                for (row, &v) in b.xs.iter_mut().zip(x) {
                    row[l] = v;
                }
            }
        }
        b.sgd_gradient.eval(&b.xs);
        if let Some(nl) = &mut b.sgd_noise {
            nl.eval(&b.xs);
        }
        let mut g = [0.0; LANES_MAX_DIM];
        let mut next = [0.0; LANES_MAX_DIM];
        for l in 0..n {
            if !b.lanes[l].alive[0] {
                continue;
            }
            let lane = &mut b.lanes[l];
            let x = &lane.x;
            let plain = self.minibatch.is_none()
                && b.sgd_gradient.finite(l)
                && x.iter().all(|v| v.is_finite());
            let checked = b
                .sgd_noise
                .as_ref()
                .map(|nl| clearly_covariance(kind, nl, l));
            let noise_ok = plain
                && match checked {
                    // Batched, and not plainly a covariance: the point-at-a-time step.
                    Some(None) => false,
                    Some(Some(c)) => self.sgd.sgd_noise(x, Some(&c)).is_ok(),
                    // Constant, or state-dependent but not batched here (d ≠ 2).
                    None => self.sgd.sgd_noise(x, None).is_ok(),
                };
            if noise_ok {
                b.sgd_gradient.gradient(l, &mut g[..d]);
                next[..d].copy_from_slice(x);
                sgd_move(
                    eta,
                    &mut next[..d],
                    &lane.xi,
                    &g[..d],
                    self.sgd.sgd_sqrt(),
                    &mut self.tmp,
                );
                if next[..d].iter().all(|v| v.is_finite()) {
                    lane.x.copy_from_slice(&next[..d]);
                    continue;
                }
            }
            b.sgd_slow.push(l);
        }
        let slow = std::mem::take(&mut b.sgd_slow);
        let mut outcome = Ok(());
        for &l in &slow {
            self.swap_lane(l);
            outcome = self.step_sgd(stats, first + l as u64, k);
            self.swap_lane(l);
            if outcome.is_err() {
                break;
            }
        }
        self.block.as_mut().expect("block mode").sgd_slow = slow;
        outcome
    }

    /// The substeps of model `m` over SGD step `k` for every lane still running it:
    /// each of the scheme's moves evaluates the coefficients at the moving copy of
    /// every lane at once, then moves all lanes still running (a lane that failed is
    /// masked and keeps its state).
    fn step_model_lanes(
        &mut self,
        stats: &mut ChunkStats,
        first: u64,
        n: usize,
        k: u64,
        m: usize,
    ) -> Result<(), SimError> {
        let config = self.plan.config;
        let d = self.x.len();
        let h = config.eta / config.substeps as f64;
        let per_substep = self.scheme.increments_per_substep();
        let copies = self.scheme.copies();
        let moves = self.scheme.moves();
        let b = self.block.as_mut().expect("block mode");
        let term = &mut self.terms[m];
        let base = m * copies * d;
        for l in 0..LANES {
            b.active[l] = l < n && b.lanes[l].alive[m + 1];
            b.failed[l] = None;
        }
        if !b.active.contains(&true) {
            return Ok(());
        }
        let last = base + (copies - 1) * d;
        b.starts.copy_from_slice(&b.states[last..last + d]);
        b.running = b.active;
        'substeps: for sub in 0..config.substeps {
            for mv in moves {
                let copy = base + mv.copy * d;
                term.eval_lanes(&b.states[copy..copy + d], &b.running, &mut b.out);
                if b.out.any_failure {
                    for l in 0..LANES {
                        if let Some(f) = b.out.failure[l].take() {
                            b.failed[l] = Some(f);
                            b.running[l] = false;
                        }
                    }
                }
                // Every lane moves: one that is not running is either not read again
                // (it diverged this step, reported from `starts`; or it stopped
                // earlier, or holds no path) or a lane that failed this step.
                let e = |j: usize| (sub * per_substep + j) * d;
                let (w1, w2) = match mv.increments {
                    [e1] => (&b.increments[e(*e1)..e(*e1) + d], None),
                    [e1, e2] => (
                        &b.increments[e(*e1)..e(*e1) + d],
                        Some(&b.increments[e(*e2)..e(*e2) + d]),
                    ),
                    _ => unreachable!("a move reads one or two increments"),
                };
                let out = &b.out;
                let noisy = |on: bool| (0..LANES).any(|l| b.running[l] && out.noisy[l] == on);
                let noise = match (noisy(true), noisy(false)) {
                    (false, _) => Noise::None,
                    (true, false) => Noise::All,
                    (true, true) => Noise::Some,
                };
                let x = &mut b.states[copy..copy + d];
                euler_lanes(x, out, [w1, w2.unwrap_or(&[])], mv.fraction * h, noise);
                if !b.running.contains(&true) {
                    break 'substeps;
                }
            }
        }
        for l in 0..n {
            let b = self.block.as_mut().expect("block mode");
            if !b.active[l] {
                continue;
            }
            let path = first + l as u64;
            let finite = (base..base + copies * d).all(|r| b.states[r][l].is_finite());
            let reason = match b.failed[l].take() {
                None if finite => continue,
                None => format!("the {} state became non-finite", config.models[m]),
                Some(Failure::Diverged(reason)) => reason,
                Some(Failure::Fatal(source)) => {
                    return Err(SimError::Problem {
                        path,
                        step: k,
                        time: k as f64 * config.eta,
                        source,
                    });
                }
            };
            let start: Vec<f64> = b.starts.iter().map(|row| row[l]).collect();
            self.swap_lane(l);
            self.diverge(stats, m + 1, (path, k), &start, reason);
            self.swap_lane(l);
        }
        Ok(())
    }
}

/// Which lanes of a block evaluation have a diffusion ([`LaneCoefficients::noisy`]).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Noise {
    None,
    All,
    Some,
}

multiversion! {
    /// One Euler–Maruyama move of every lane: `x ← x + b h + σ ΔW`, with ΔW the
    /// increment rows `w[0]`, plus `w[1]` when not empty; a lane without diffusion
    /// moves by `b h` (`noise` says whether all, none or some lanes have one). The
    /// expression is that of `schemes::euler`, so the same bits.
    fn euler_lanes(x: &mut [Row], out: &LaneCoefficients, w: [&[Row]; 2], h: f64, noise: Noise) {
        let d = x.len();
        let [w1, w2] = w;
        let mut dw = [[0.0; LANES]; LANES_MAX_DIM];
        if noise != Noise::None {
            for c in 0..d {
                dw[c] = w1[c];
                if let Some(w2) = w2.get(c) {
                    for l in 0..LANES {
                        dw[c][l] += w2[l];
                    }
                }
            }
        }
        for (i, x) in x.iter_mut().enumerate() {
            let drift = &out.drift[i];
            let mut delta = [0.0; LANES];
            for l in 0..LANES {
                delta[l] = drift[l] * h;
            }
            if noise != Noise::None {
                for (f, w) in out.factor[i * d..(i + 1) * d].iter().zip(&dw) {
                    for l in 0..LANES {
                        delta[l] += f[l] * w[l];
                    }
                }
            }
            if noise == Noise::Some {
                for l in 0..LANES {
                    x[l] += if out.noisy[l] { delta[l] } else { drift[l] * h };
                }
            } else {
                for l in 0..LANES {
                    x[l] += delta[l];
                }
            }
        }
    }
    baseline euler_lanes_base
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A block's Euler move gives, lane by lane, the bits of `schemes::euler`'s
    /// expression (`x + (b h + Σ_c σ_ic ΔW_c)` with `ΔW = w₁ + w₂`, or `x + b h` for a
    /// lane without diffusion), with and without AVX.
    #[test]
    fn euler_lanes_is_the_scalar_move_lane_by_lane() {
        let v = |k: usize, l: usize| ((k * LANES + l) as f64 * 0.618_033_988_7).sin() * 1.7;
        for d in 1..=LANES_MAX_DIM {
            let mut out = LaneCoefficients::new();
            for (i, row) in out.drift.iter_mut().enumerate() {
                *row = std::array::from_fn(|l| v(i, l));
            }
            for (r, row) in out.factor.iter_mut().enumerate() {
                *row = std::array::from_fn(|l| v(10 + r, l));
            }
            out.noisy = std::array::from_fn(|l| l % 5 != 2);
            let x0: Vec<Row> = (0..d)
                .map(|i| std::array::from_fn(|l| v(40 + i, l)))
                .collect();
            let w1: Vec<Row> = (0..d)
                .map(|i| std::array::from_fn(|l| v(50 + i, l)))
                .collect();
            let w2: Vec<Row> = (0..d)
                .map(|i| std::array::from_fn(|l| v(60 + i, l)))
                .collect();
            let h = 0.037;
            for (w, noise) in [
                ([&w1[..], &w2[..]], Noise::Some),
                ([&w1[..], &[][..]], Noise::Some),
                ([&w1[..], &w2[..]], Noise::None),
            ] {
                let (mut a, mut b) = (x0.clone(), x0.clone());
                euler_lanes(&mut a, &out, w, h, noise);
                euler_lanes_base(&mut b, &out, w, h, noise);
                for l in 0..LANES {
                    let quiet = noise == Noise::None || !out.noisy[l];
                    for i in 0..d {
                        let mut s = out.drift[i][l] * h;
                        if !quiet {
                            for c in 0..d {
                                let dw = match w[1].get(c) {
                                    Some(w2) => w[0][c][l] + w2[l],
                                    None => w[0][c][l],
                                };
                                s += out.factor[i * d + c][l] * dw;
                            }
                        }
                        let want = x0[i][l] + s;
                        assert_eq!(a[i][l].to_bits(), want.to_bits(), "d = {d}, lane {l}");
                        assert_eq!(b[i][l].to_bits(), want.to_bits(), "d = {d}, lane {l}");
                    }
                }
            }
        }
    }
}
