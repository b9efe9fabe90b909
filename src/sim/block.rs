//! Lane-batched stepping: a worker's paths advance together, [`LANES`] at a time,
//! so each SDE coefficient evaluation runs the objective's tape once for a whole block
//! of points ([`super::lanes`]) instead of once per point.
//!
//! The mathematics, the random numbers and the bookkeeping are those of the
//! path-by-path loop of the engine, reused through the worker's own methods: each lane
//! keeps its path's SGD state, step, live flags and the observer's record, which are
//! swapped into the worker to take its SGD step when the batched step leaves it to
//! `Core::step_sgd`, to be looked at by the observer and to mark divergences. The
//! models' states and the Brownian increments are kept in structure-of-arrays form (a
//! row of [`LANES`] numbers per coordinate), the layout the batched evaluation reads
//! and writes, so the scheme's Euler moves ([`super::Scheme::moves`]) run across lanes
//! too. Each lane's numbers depend on its own path only (the batched tape works lane
//! by lane, a lane whose process stopped is masked), so a lane whose path is over
//! claims the next path from the engine's feed at once (paths that stop early, as in
//! `escape`, leave no lane idle); the feed folds finished paths into their chunk's
//! summary in path order, so the statistics do not depend on the block size, on which
//! paths shared a block, or on which thread's block ran them. A lane whose path fails
//! (a Σ(x) that is not a covariance, the observer's error) hands the error to the feed
//! and is freed; the others go on, so the run reports the smallest failed path's error.

use super::Scheme;
use super::engine::{Core, EngineError, Feed, Observer};
use super::krylov::LanczosTally;
use super::lanes::{LANES, LANES_MAX_DIM, LaneTape, Order, Row};
use super::terms::{
    Failure, LaneCoefficients, LaneTerm, batched_noise, clearly_covariance, sgd_move,
};

/// One lane: the path it runs (if any), its step, SGD's state, the flags of the
/// processes still running and what the observer keeps of the path.
#[derive(Debug)]
struct Lane<P> {
    path: Option<u64>,
    /// SGD steps taken.
    k: u64,
    x: Vec<f64>,
    alive: Vec<bool>,
    /// SGD's draw ξ_k of the current SGD step.
    xi: Vec<f64>,
    record: P,
}

/// The lanes and the buffers of a block.
#[derive(Debug)]
pub(super) struct Block<P> {
    lanes: Vec<Lane<P>>,
    /// Lanes running a path (the number of `true` in `occupied`).
    used: usize,
    /// The models' states: coordinate `i` of copy `c` of model `m` in row
    /// `(m · copies + c) · d + i`.
    states: Vec<Row>,
    /// The SDEs' Brownian increments of the current SGD step: coordinate `i` of the
    /// step's increment `e` in row `e · d + i`.
    increments: Vec<Row>,
    /// SGD's points handed to a batched evaluation (`d` rows, lane `l` the lane's path).
    xs: Vec<Row>,
    out: LaneCoefficients,
    /// Lanes running a path, lanes stepping the current model, and those the current
    /// move evaluates.
    occupied: [bool; LANES],
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

impl<P> Block<P> {
    /// Buffers for paths shaped like the worker's (`x` for SGD, `states` for the
    /// models, `alive`, ξ, and `grid` increments of `d` numbers per SGD step), or
    /// `None` when SGD's gradient cannot be batched ([`LaneTape::new`]).
    pub(super) fn new<O: Observer<Path = P>, S: Scheme>(
        w: &Core<'_, '_, O, S>,
        grid: usize,
    ) -> Option<Block<P>> {
        let d = w.x.len();
        let problem = w.engine.problem;
        let sgd_gradient = LaneTape::new(problem.objective_tape(), Order::Gradient)?;
        let sgd_noise = batched_noise(problem, &w.engine.noise);
        Some(Block {
            lanes: (0..LANES)
                .map(|_| Lane {
                    path: None,
                    k: 0,
                    x: w.x.clone(),
                    alive: w.alive.clone(),
                    xi: vec![0.0; d],
                    record: w.observer.new_path(),
                })
                .collect(),
            used: 0,
            states: vec![[0.0; LANES]; w.states.iter().map(Vec::len).sum()],
            increments: vec![[0.0; LANES]; grid * d],
            xs: vec![[0.0; LANES]; d],
            out: LaneCoefficients::new(),
            occupied: [false; LANES],
            active: [false; LANES],
            running: [false; LANES],
            failed: (0..LANES).map(|_| None).collect(),
            starts: vec![[0.0; LANES]; d],
            sgd_gradient,
            sgd_noise,
            sgd_slow: Vec::with_capacity(LANES),
        })
    }

    /// Exchanges lane `l`'s per-path state with the worker's (an involution: calling it
    /// again puts both back). The models' states stay in the block.
    fn swap_lane<O: Observer<Path = P>, S: Scheme + Copy>(
        &mut self,
        w: &mut Core<'_, '_, O, S>,
        l: usize,
    ) {
        let lane = &mut self.lanes[l];
        std::mem::swap(&mut w.x, &mut lane.x);
        std::mem::swap(&mut w.alive, &mut lane.alive);
        std::mem::swap(&mut w.xi, &mut lane.xi);
        std::mem::swap(&mut w.path, &mut lane.record);
    }

    /// Runs the paths the feed hands out through at most `feed.lanes()` lanes, a lane
    /// claiming the next path as soon as its own is over, until none is left.
    pub(super) fn run<O: Observer<Path = P>, S: Scheme + Copy>(
        &mut self,
        w: &mut Core<'_, '_, O, S>,
        terms: &mut [LaneTerm<'_>],
        feed: &mut Feed<'_, '_, O>,
    ) {
        let cap = feed.lanes().min(LANES);
        self.occupied = [false; LANES];
        self.used = 0;
        for lane in &mut self.lanes {
            lane.path = None;
        }
        let mut open = true;
        loop {
            let mut l = 0;
            while open && self.used < cap && l < LANES {
                if self.lanes[l].path.is_some() {
                    l += 1;
                    continue;
                }
                let Some(path) = feed.claim() else {
                    open = false;
                    break;
                };
                self.start_lane(w, feed, l, path);
                if self.occupied[l] && self.over(w, l) {
                    self.finish_lane(feed, l);
                }
            }
            if self.used == 0 {
                return;
            }
            self.step(w, terms, feed);
            let failed = feed.failed_at();
            for l in 0..LANES {
                let Some(path) = self.lanes[l].path else {
                    continue;
                };
                if path > failed {
                    self.free_lane(l);
                    continue;
                }
                self.lanes[l].k += 1;
                let k = self.lanes[l].k;
                if w.observer.looks_at(k)
                    && let Err(e) = self.look_lane(w, l, path, k)
                {
                    self.fail_lane(feed, l, e);
                    continue;
                }
                if self.over(w, l) {
                    self.finish_lane(feed, l);
                }
            }
        }
    }

    /// Whether lane `l`'s path is over: every process stopped, or the last step taken.
    fn over<O: Observer<Path = P>, S: Scheme + Copy>(
        &self,
        w: &Core<'_, '_, O, S>,
        l: usize,
    ) -> bool {
        let lane = &self.lanes[l];
        lane.k >= w.engine.settings.steps || !lane.alive.contains(&true)
    }

    /// Puts path `path` on lane `l` at the start point, and lets the observer look.
    fn start_lane<O: Observer<Path = P>, S: Scheme + Copy>(
        &mut self,
        w: &mut Core<'_, '_, O, S>,
        feed: &mut Feed<'_, '_, O>,
        l: usize,
        path: u64,
    ) {
        let start = &w.engine.start;
        let d = start.len();
        for (r, row) in self.states.iter_mut().enumerate() {
            row[l] = start[r % d];
        }
        let lane = &mut self.lanes[l];
        lane.path = Some(path);
        lane.k = 0;
        lane.x.copy_from_slice(start);
        lane.alive.fill(true);
        w.observer.start_path(&mut lane.record);
        self.occupied[l] = true;
        self.used += 1;
        if w.observer.looks_at(0)
            && let Err(e) = self.look_lane(w, l, path, 0)
        {
            self.fail_lane(feed, l, e);
        }
    }

    /// The observer's look at lane `l` (the worker's, with the lane's states copied in).
    fn look_lane<O: Observer<Path = P>, S: Scheme + Copy>(
        &mut self,
        w: &mut Core<'_, '_, O, S>,
        l: usize,
        path: u64,
        step: u64,
    ) -> Result<(), EngineError<O::Error>> {
        for (v, row) in w.states.iter_mut().flatten().zip(&self.states) {
            *v = row[l];
        }
        self.swap_lane(w, l);
        let r = w.look(path, step);
        self.swap_lane(w, l);
        r
    }

    /// Lane `l` runs no path any more.
    fn free_lane(&mut self, l: usize) -> Option<u64> {
        let path = self.lanes[l].path.take()?;
        self.occupied[l] = false;
        self.used -= 1;
        Some(path)
    }

    /// Lane `l`'s path is over: handed to the feed, and the lane is free again.
    fn finish_lane<O: Observer<Path = P>>(&mut self, feed: &mut Feed<'_, '_, O>, l: usize) {
        if let Some(path) = self.free_lane(l) {
            let lane = &mut self.lanes[l];
            feed.finish(
                path,
                &lane.alive,
                &mut lane.record,
                &LanczosTally::default(),
            );
        }
    }

    /// Lane `l`'s path failed with `error`: reported to the feed, and the lane is free.
    fn fail_lane<O: Observer<Path = P>>(
        &mut self,
        feed: &mut Feed<'_, '_, O>,
        l: usize,
        error: EngineError<O::Error>,
    ) {
        if let Some(path) = self.free_lane(l) {
            feed.fail(path, error);
        }
    }

    /// One SGD step of every occupied lane (each at its own step `k`): the lanes' draws,
    /// SGD's step, then each model's substeps.
    fn step<O: Observer<Path = P>, S: Scheme + Copy>(
        &mut self,
        w: &mut Core<'_, '_, O, S>,
        terms: &mut [LaneTerm<'_>],
        feed: &mut Feed<'_, '_, O>,
    ) {
        for l in 0..LANES {
            let lane = &mut self.lanes[l];
            let Some(path) = lane.path else { continue };
            w.brownian.start_path(path);
            w.brownian.draw_step(lane.k);
            lane.xi.copy_from_slice(w.brownian.xi());
            for (row, &v) in self.increments.iter_mut().zip(w.brownian.increments()) {
                row[l] = v;
            }
        }
        self.step_sgd_lanes(w, feed);
        for (m, term) in terms.iter_mut().enumerate() {
            self.step_model_lanes(w, term, feed, m);
        }
    }

    /// SGD's step for every lane still running it: ∇f batched over the block (and
    /// Σ(x) when it depends on the state, d = 2), then each lane's move. A lane the
    /// batched numbers do not settle plainly (a non-finite gradient or iterate, a Σ(x)
    /// that is not plainly a covariance) takes the point-at-a-time step, which
    /// reports or handles it exactly as a path stepped alone.
    fn step_sgd_lanes<O: Observer<Path = P>, S: Scheme + Copy>(
        &mut self,
        w: &mut Core<'_, '_, O, S>,
        feed: &mut Feed<'_, '_, O>,
    ) {
        let eta = w.engine.settings.eta;
        let d = w.x.len();
        let kind = w.engine.problem.noise_kind();
        self.sgd_slow.clear();
        for l in 0..LANES {
            let lane = &self.lanes[l];
            if self.occupied[l] && lane.alive[0] {
                for (row, &v) in self.xs.iter_mut().zip(&lane.x) {
                    row[l] = v;
                }
            }
        }
        self.sgd_gradient.eval(&self.xs);
        if let Some(nl) = &mut self.sgd_noise {
            nl.eval(&self.xs);
        }
        let mut g = [0.0; LANES_MAX_DIM];
        let mut next = [0.0; LANES_MAX_DIM];
        for l in 0..LANES {
            if !self.occupied[l] || !self.lanes[l].alive[0] {
                continue;
            }
            let lane = &mut self.lanes[l];
            let x = &lane.x;
            let plain = w.minibatch.is_none()
                && self.sgd_gradient.finite(l)
                && x.iter().all(|v| v.is_finite());
            let checked = self
                .sgd_noise
                .as_ref()
                .map(|nl| clearly_covariance(kind, nl, l));
            let noise_ok = plain
                && match checked {
                    // Batched, and not plainly a covariance: the point-at-a-time step.
                    Some(None) => false,
                    Some(Some(c)) => w.sgd.sgd_noise(x, Some(&c)).is_ok(),
                    // Constant, or state-dependent but not batched here (d ≠ 2).
                    None => w.sgd.sgd_noise(x, None).is_ok(),
                };
            if noise_ok {
                self.sgd_gradient.gradient(l, &mut g[..d]);
                next[..d].copy_from_slice(x);
                sgd_move(
                    eta,
                    &mut next[..d],
                    &lane.xi,
                    &g[..d],
                    w.sgd.sgd_sqrt(),
                    &mut w.tmp,
                );
                if next[..d].iter().all(|v| v.is_finite()) {
                    lane.x.copy_from_slice(&next[..d]);
                    continue;
                }
            }
            self.sgd_slow.push(l);
        }
        let slow = std::mem::take(&mut self.sgd_slow);
        for &l in &slow {
            let (path, k) = (self.lanes[l].path.unwrap_or_default(), self.lanes[l].k);
            self.swap_lane(w, l);
            let outcome = w.step_sgd(path, k);
            self.swap_lane(w, l);
            if let Err(e) = outcome {
                self.fail_lane(feed, l, e);
            }
        }
        self.sgd_slow = slow;
    }

    /// The substeps of model `m` over the current SGD step for every lane still running
    /// it: each of the scheme's moves evaluates the coefficients at the moving copy of
    /// every lane at once, then moves all lanes still running (a lane that failed is
    /// masked and keeps its state; one whose path fails is freed).
    fn step_model_lanes<O: Observer<Path = P>, S: Scheme + Copy>(
        &mut self,
        w: &mut Core<'_, '_, O, S>,
        term: &mut LaneTerm<'_>,
        feed: &mut Feed<'_, '_, O>,
        m: usize,
    ) {
        let settings = &w.engine.settings;
        let d = w.x.len();
        let h = settings.eta / settings.substeps as f64;
        let per_substep = w.scheme.increments_per_substep();
        let copies = w.scheme.copies();
        let moves = w.scheme.moves();
        let base = m * copies * d;
        for l in 0..LANES {
            self.active[l] = self.occupied[l] && self.lanes[l].alive[m + 1];
            self.failed[l] = None;
        }
        if !self.active.contains(&true) {
            return;
        }
        let last = base + (copies - 1) * d;
        self.starts.copy_from_slice(&self.states[last..last + d]);
        self.running = self.active;
        'substeps: for sub in 0..settings.substeps {
            for mv in moves {
                let copy = base + mv.copy * d;
                term.eval_lanes(&self.states[copy..copy + d], &self.running, &mut self.out);
                if self.out.any_failure {
                    for l in 0..LANES {
                        if let Some(f) = self.out.failure[l].take() {
                            self.failed[l] = Some(f);
                            self.running[l] = false;
                        }
                    }
                }
                // Every lane moves: one that is not running is either not read again
                // (it diverged this step, reported from `starts`; or it stopped
                // earlier, or holds no path) or a lane that failed this step.
                let e = |j: usize| (sub * per_substep + j) * d;
                let (w1, w2) = match mv.increments {
                    [e1] => (&self.increments[e(*e1)..e(*e1) + d], None),
                    [e1, e2] => (
                        &self.increments[e(*e1)..e(*e1) + d],
                        Some(&self.increments[e(*e2)..e(*e2) + d]),
                    ),
                    _ => unreachable!("a move reads one or two increments"),
                };
                let out = &self.out;
                let running = &self.running;
                let noisy = |on: bool| (0..LANES).any(|l| running[l] && out.noisy[l] == on);
                let noise = match (noisy(true), noisy(false)) {
                    (false, _) => Noise::None,
                    (true, false) => Noise::All,
                    (true, true) => Noise::Some,
                };
                let x = &mut self.states[copy..copy + d];
                euler_lanes(x, out, [w1, w2.unwrap_or(&[])], mv.fraction * h, noise);
                if !self.running.contains(&true) {
                    break 'substeps;
                }
            }
        }
        for l in 0..LANES {
            if !self.active[l] {
                continue;
            }
            let (path, k) = (self.lanes[l].path.unwrap_or_default(), self.lanes[l].k);
            let finite = (base..base + copies * d).all(|r| self.states[r][l].is_finite());
            let reason = match self.failed[l].take() {
                None if finite => continue,
                None => w.observer.non_finite(m + 1),
                Some(Failure::Diverged(reason)) => reason,
                Some(Failure::Fatal(source)) => {
                    let error = EngineError::Fatal {
                        process: m + 1,
                        path,
                        step: k,
                        source,
                    };
                    self.fail_lane(feed, l, error);
                    continue;
                }
            };
            let start: Vec<f64> = self.starts.iter().map(|row| row[l]).collect();
            self.swap_lane(w, l);
            w.diverge(m + 1, (path, k), &start, reason);
            self.swap_lane(w, l);
        }
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
