//! Lane-batched stepping: the paths of a chunk advance together, [`LANES`] at a time,
//! so each SDE coefficient evaluation runs the objective's tape once for a whole block
//! of points ([`super::lanes`]) instead of once per point.
//!
//! The mathematics, the random numbers and the bookkeeping are those of the
//! path-by-path loop in `mod.rs`, reused through the worker's own methods: each lane
//! (path) keeps its SGD state, model states, live flags and saved values, which are
//! swapped into the worker to draw its noise, take its SGD step
//! ([`Worker::step_sgd`]), record its observables and mark divergences; only the
//! models' substeps are stepped lane by lane here, by the scheme's Euler moves
//! ([`super::Scheme::moves`]). Each lane's numbers depend on its own path only (the
//! batched tape works lane by lane), and lanes are summarised in path order at the end
//! of the block, so the statistics do not depend on the block size.

use super::lanes::{LANES, LANES_MAX_DIM, LaneTape, Order};
use super::terms::{Failure, LaneCoefficients, batched_noise, clearly_covariance, sgd_move};
use super::{ChunkStats, Scheme, SimError, Worker};

/// One path's state while its block runs.
#[derive(Debug)]
pub(super) struct Lane {
    x: Vec<f64>,
    states: Vec<Vec<f64>>,
    alive: Vec<bool>,
    values: Vec<f64>,
    /// SGD's draw ξ_k and the SDEs' Brownian increments of the current SGD step.
    xi: Vec<f64>,
    increments: Vec<f64>,
}

/// The lanes and the buffers of a block.
#[derive(Debug)]
pub(super) struct Block {
    lanes: Vec<Lane>,
    /// Points handed to a batched evaluation, `LANES × d`.
    xs: Vec<f64>,
    out: LaneCoefficients,
    /// Lanes stepping the current model (indices into `lanes`).
    active: Vec<usize>,
    /// Entries of `active` evaluated by the current move.
    running: Vec<usize>,
    /// Why an entry of `active` stopped during the current SGD step.
    failed: Vec<Option<Failure>>,
    /// The last copy's state at the start of the step, per entry of `active`.
    starts: Vec<f64>,
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
                    states: w.states.clone(),
                    alive: w.alive.clone(),
                    values: w.values.clone(),
                    xi: vec![0.0; d],
                    increments: vec![0.0; grid * d],
                })
                .collect(),
            xs: vec![0.0; LANES * d],
            out: LaneCoefficients::new(d),
            active: Vec::with_capacity(LANES),
            running: Vec::with_capacity(LANES),
            failed: (0..LANES).map(|_| None).collect(),
            starts: vec![0.0; LANES * d],
            sgd_gradient,
            sgd_noise,
            sgd_slow: Vec::with_capacity(LANES),
        })
    }
}

impl<S: Scheme + Copy> Worker<'_, S> {
    /// Exchanges lane `l`'s per-path state with the worker's (an involution: calling it
    /// again puts both back).
    fn swap_lane(&mut self, l: usize) {
        let lane = &mut self.block.as_mut().expect("block mode").lanes[l];
        std::mem::swap(&mut self.x, &mut lane.x);
        std::mem::swap(&mut self.states, &mut lane.states);
        std::mem::swap(&mut self.alive, &mut lane.alive);
        std::mem::swap(&mut self.values, &mut lane.values);
        std::mem::swap(&mut self.xi, &mut lane.xi);
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
        for l in 0..n {
            self.swap_lane(l);
            self.x.copy_from_slice(&plan.start);
            for s in &mut self.states {
                for c in s.chunks_mut(d) {
                    c.copy_from_slice(&plan.start);
                }
            }
            self.alive.fill(true);
            if saves_start {
                self.record(stats, first + l as u64, 0, 0);
            }
            self.swap_lane(l);
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
                    lane.increments.copy_from_slice(self.brownian.increments());
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
                    self.swap_lane(l);
                    self.record(stats, first + l as u64, next_save, k + 1);
                    self.swap_lane(l);
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
        b.active.clear();
        b.active.extend((0..n).filter(|&l| b.lanes[l].alive[0]));
        b.sgd_slow.clear();
        for (q, &l) in b.active.iter().enumerate() {
            b.xs[q * d..(q + 1) * d].copy_from_slice(&b.lanes[l].x);
        }
        let m = b.active.len();
        b.sgd_gradient.eval(&b.xs, m);
        if let Some(nl) = &mut b.sgd_noise {
            nl.eval(&b.xs, m);
        }
        let mut g = [0.0; LANES_MAX_DIM];
        let mut next = [0.0; LANES_MAX_DIM];
        for (q, &l) in b.active.iter().enumerate() {
            let lane = &mut b.lanes[l];
            let x = &lane.x;
            let plain = self.minibatch.is_none()
                && b.sgd_gradient.finite(q)
                && x.iter().all(|v| v.is_finite());
            let checked = b
                .sgd_noise
                .as_ref()
                .map(|nl| clearly_covariance(kind, nl, q));
            let noise_ok = plain
                && match checked {
                    // Batched, and not plainly a covariance: the point-at-a-time step.
                    Some(None) => false,
                    Some(Some(c)) => self.sgd.sgd_noise(x, Some(&c)).is_ok(),
                    // Constant, or state-dependent but not batched here (d ≠ 2).
                    None => self.sgd.sgd_noise(x, None).is_ok(),
                };
            if noise_ok {
                b.sgd_gradient.gradient(q, &mut g[..d]);
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

    /// The substeps of model `m` over SGD step `k` for every lane still running it.
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
        let per_substep = self.scheme.increments_per_substep() * d;
        let copies = self.scheme.copies();
        let moves = self.scheme.moves();
        let b = self.block.as_mut().expect("block mode");
        b.active.clear();
        b.active.extend((0..n).filter(|&l| b.lanes[l].alive[m + 1]));
        for (j, &l) in b.active.iter().enumerate() {
            let s = &b.lanes[l].states[m];
            b.starts[j * d..(j + 1) * d].copy_from_slice(&s[(copies - 1) * d..]);
            b.failed[j] = None;
        }
        for sub in 0..config.substeps {
            for mv in moves {
                b.running.clear();
                for (j, &l) in b.active.iter().enumerate() {
                    if b.failed[j].is_none() {
                        let q = b.running.len();
                        let s = &b.lanes[l].states[m][mv.copy * d..(mv.copy + 1) * d];
                        b.xs[q * d..(q + 1) * d].copy_from_slice(s);
                        b.running.push(j);
                    }
                }
                if b.running.is_empty() {
                    break;
                }
                self.terms[m].eval_lanes(&b.xs, b.running.len(), &mut b.out);
                let hh = mv.fraction * h;
                for (q, &j) in b.running.iter().enumerate() {
                    if let Some(f) = b.out.failure[q].take() {
                        b.failed[j] = Some(f);
                        continue;
                    }
                    let Lane {
                        states, increments, ..
                    } = &mut b.lanes[b.active[j]];
                    let x = &mut states[m][mv.copy * d..(mv.copy + 1) * d];
                    let dw = &increments[sub * per_substep..(sub + 1) * per_substep];
                    let drift = &b.out.drift[q * d..(q + 1) * d];
                    if b.out.noisy[q] {
                        let sigma = &b.out.factor[q * d * d..(q + 1) * d * d];
                        // ΔW, then the same expression as `schemes::euler`, so the
                        // same bits.
                        let mut dws = [0.0; LANES_MAX_DIM];
                        match mv.increments {
                            [e] => dws[..d].copy_from_slice(&dw[e * d..(e + 1) * d]),
                            [e1, e2] => {
                                for c in 0..d {
                                    dws[c] = dw[e1 * d + c] + dw[e2 * d + c];
                                }
                            }
                            _ => unreachable!("a move reads one or two increments"),
                        }
                        for i in 0..d {
                            let mut s = drift[i] * hh;
                            for c in 0..d {
                                s += sigma[i * d + c] * dws[c];
                            }
                            x[i] += s;
                        }
                    } else {
                        for i in 0..d {
                            x[i] += drift[i] * hh;
                        }
                    }
                }
            }
        }
        for j in 0..b.active.len() {
            let b = self.block.as_mut().expect("block mode");
            let l = b.active[j];
            let path = first + l as u64;
            let reason = match b.failed[j].take() {
                None if b.lanes[l].states[m].iter().all(|v| v.is_finite()) => continue,
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
            let start = b.starts[j * d..(j + 1) * d].to_vec();
            self.swap_lane(l);
            self.diverge(stats, m + 1, (path, k), &start, reason);
            self.swap_lane(l);
        }
        Ok(())
    }
}
