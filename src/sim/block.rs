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

use super::lanes::{LANES, LANES_MAX_DIM};
use super::terms::{Failure, LaneCoefficients};
use super::{ChunkStats, Scheme, SimError, Worker};

/// One path's state while its block runs.
#[derive(Debug)]
pub(super) struct Lane {
    x: Vec<f64>,
    states: Vec<Vec<f64>>,
    alive: Vec<bool>,
    values: Vec<f64>,
    /// The SDEs' Brownian increments of the current SGD step.
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
}

impl Block {
    /// Buffers for paths shaped like the worker's: `x` (SGD), `states` (models),
    /// `alive`, `values`, and `grid` increments of `d` numbers per SGD step.
    pub(super) fn new(
        x: &[f64],
        states: &[Vec<f64>],
        alive: &[bool],
        values: &[f64],
        grid: usize,
    ) -> Block {
        let d = x.len();
        Block {
            lanes: (0..LANES)
                .map(|_| Lane {
                    x: x.to_vec(),
                    states: states.to_vec(),
                    alive: alive.to_vec(),
                    values: values.to_vec(),
                    increments: vec![0.0; grid * d],
                })
                .collect(),
            xs: vec![0.0; LANES * d],
            out: LaneCoefficients::new(d),
            active: Vec::with_capacity(LANES),
            running: Vec::with_capacity(LANES),
            failed: (0..LANES).map(|_| None).collect(),
            starts: vec![0.0; LANES * d],
        }
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
                self.swap_lane(l);
                let path = first + l as u64;
                let mut outcome = Ok(());
                if self.alive.iter().any(|&a| a) {
                    running = true;
                    self.brownian.start_path(path);
                    self.brownian.draw_step(k);
                    let block = self.block.as_mut().expect("block mode");
                    block.lanes[l]
                        .increments
                        .copy_from_slice(self.brownian.increments());
                    if self.alive[0] {
                        outcome = self.step_sgd(stats, path, k);
                    }
                }
                self.swap_lane(l);
                outcome?;
            }
            if !running {
                break;
            }
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
