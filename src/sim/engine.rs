//! The path engine: SGD and the models stepped side by side on every path, for
//! `simulate` (and `weak-order`, which calls it) and `escape`. It owns the random
//! streams ([`super::brownian`], [`super::minibatch`]), the chunks of
//! [`CHUNK_PATHS`] paths and the thread pool, the stepping (lane-batched in `block.rs`
//! when every model has a lane form, one path at a time otherwise: [`Choice`]) and the
//! divergence of a process on a path. What a command does with the paths is an
//! [`Observer`]: it looks at the processes at the steps it asks for (saving observables
//! at grid times, or stopping a process that left a region), hears of divergences, and
//! summarises each finished path into its chunk's summary.
//!
//! Invariant: a chunk is an independent unit. Its paths read their own random streams,
//! its summary receives the paths in path order (whatever order the lanes finish them
//! in), and the caller merges the chunk summaries in chunk order, so the numbers do not
//! depend on the threads, the batch size, or which paths share a block. A shard of a
//! run is therefore a range of chunk indices, and a checkpoint the merged summary of a
//! prefix of them.
//!
//! A model's term is chosen once, when a worker is built ([`Choice::of`]): a new way of
//! evaluating coefficients (e.g. matrix-free for large d) is a new variant there and a
//! new arm of the worker's stepping.

use rayon::prelude::*;

use crate::models::ModelKind;
use crate::problem::{Problem, ProblemError};

use super::block::Block;
use super::minibatch::MinibatchSgd;
use super::terms::{Choice, Evaluator, Failure, LaneTerm, ModelTerm, NoiseSource, sgd_step};
use super::{BrownianPath, CHUNK_PATHS, Coupling, MAX_SUBSTEPS, Scheme};

/// The settings every run of the engine has, checked by the callers through
/// [`check_eta`] and its siblings (each command orders its own checks).
#[derive(Clone, Debug)]
pub(crate) struct Settings {
    pub eta: f64,
    /// SGD steps per path at most (the horizon, or the escape cap).
    pub steps: u64,
    pub paths: u64,
    pub models: Vec<ModelKind>,
    pub substeps: usize,
    pub coupling: Coupling,
    pub seed: u64,
    pub threads: usize,
    /// Paths handed to the thread pool at a time (0: 16 chunks per thread).
    pub batch: u64,
    /// Real minibatch SGD for a finite sum (else its Gaussian surrogate).
    pub minibatch: bool,
}

/// η must be a finite number > 0.
pub(crate) fn check_eta(eta: f64) -> Result<(), String> {
    if eta.is_finite() && eta > 0.0 {
        Ok(())
    } else {
        Err(format!("η must be a finite number > 0, got {eta}"))
    }
}

/// At least one path.
pub(crate) fn check_paths(paths: u64) -> Result<(), String> {
    if paths == 0 {
        Err("the number of paths must be at least 1".into())
    } else {
        Ok(())
    }
}

/// Between 1 and [`MAX_SUBSTEPS`] substeps.
pub(crate) fn check_substeps(substeps: usize) -> Result<(), String> {
    if substeps == 0 || substeps > MAX_SUBSTEPS {
        Err(format!(
            "the number of substeps must be between 1 and {MAX_SUBSTEPS}, got {substeps}"
        ))
    } else {
        Ok(())
    }
}

/// At least one thread.
pub(crate) fn check_threads(threads: usize) -> Result<(), String> {
    if threads == 0 {
        Err("the number of threads must be at least 1".into())
    } else {
        Ok(())
    }
}

/// No model listed twice.
pub(crate) fn check_models(models: &[ModelKind]) -> Result<(), String> {
    for (i, m) in models.iter().enumerate() {
        if models[..i].contains(m) {
            return Err(format!("model `{m}` is listed twice"));
        }
    }
    Ok(())
}

/// The processes' states on one path when an observer looks: SGD's, and each model's
/// (`copies × d` numbers: the scheme's copies).
pub(crate) struct States<'a> {
    pub sgd: &'a [f64],
    pub models: &'a [Vec<f64>],
}

/// What a command does with the paths. Process `p` is SGD for 0, model `p − 1`
/// otherwise; a process runs on a path until it diverges, the observer stops it
/// (`alive[p] = false`), or the path reaches [`Settings::steps`].
pub(crate) trait Observer: Sync {
    /// What is kept of one path while it runs.
    type Path: Send;
    /// A chunk's summary.
    type Chunk: Send;
    /// One worker's scratch buffers.
    type Scratch: Send;
    /// Why a run stops.
    type Error: Send;

    fn new_path(&self) -> Self::Path;
    fn new_chunk(&self) -> Self::Chunk;
    fn new_scratch(&self) -> Self::Scratch;
    /// A new path begins (`path` is reused from an earlier one).
    fn start_path(&self, path: &mut Self::Path);
    /// Whether to look at the processes after `step` SGD steps (0: the start).
    fn looks_at(&self, step: u64) -> bool;
    /// Looks at path `at.0` after `at.1` steps, at the processes still `alive`; may
    /// stop any of them.
    #[allow(clippy::too_many_arguments)]
    fn look(
        &self,
        at: (u64, u64),
        states: States<'_>,
        alive: &mut [bool],
        path: &mut Self::Path,
        chunk: &mut Self::Chunk,
        scratch: &mut Self::Scratch,
    ) -> Result<(), Self::Error>;
    /// Process `p` diverged on path `at.0` during step `at.1`; `point` is its state at
    /// the start of that step. Paths may diverge out of path order.
    fn diverged(
        &self,
        p: usize,
        at: (u64, u64),
        point: &[f64],
        reason: String,
        path: &mut Self::Path,
        chunk: &mut Self::Chunk,
    );
    /// Why process `p` stopped when its state became non-finite.
    fn non_finite(&self, p: usize) -> String;
    /// Path `index` is over; `alive` marks the processes that ran to the last step.
    /// Called in path order within a chunk.
    fn finish_path(
        &self,
        index: u64,
        alive: &[bool],
        path: &mut Self::Path,
        chunk: &mut Self::Chunk,
    );
}

/// Why the engine stopped.
#[derive(Debug)]
pub(crate) enum EngineError<E> {
    /// Σ(x) is not a covariance where process `process` reached on `path` during `step`.
    Fatal {
        process: usize,
        path: u64,
        step: u64,
        source: ProblemError,
    },
    /// The thread pool could not be built.
    Threads { threads: usize, message: String },
    /// The observer's own error.
    Observer(E),
}

/// A problem and the settings of a run: what every worker reads.
pub(crate) struct Engine<'p> {
    pub problem: &'p Problem,
    pub noise: NoiseSource,
    pub start: Vec<f64>,
    pub settings: Settings,
}

impl<'p> Engine<'p> {
    /// Runs every path with `scheme`, hands the chunk summaries to `merge` in chunk
    /// order and calls `progress(n)` when `n` more paths are done (from any thread).
    pub(crate) fn run<S: Scheme + Copy, O: Observer>(
        &self,
        scheme: S,
        observer: &O,
        progress: &(dyn Fn(u64) + Sync),
        mut merge: impl FnMut(O::Chunk),
    ) -> Result<(), EngineError<O::Error>> {
        let s = &self.settings;
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(s.threads)
            .build()
            .map_err(|e| EngineError::Threads {
                threads: s.threads,
                message: e.to_string(),
            })?;
        let chunks = s.paths.div_ceil(CHUNK_PATHS);
        let wave = if s.batch == 0 {
            16 * s.threads as u64
        } else {
            s.batch.div_ceil(CHUNK_PATHS)
        }
        .max(1);
        let mut first = 0;
        while first < chunks {
            let last = (first + wave).min(chunks);
            let done: Vec<Result<O::Chunk, EngineError<O::Error>>> = pool.install(|| {
                (first..last)
                    .into_par_iter()
                    .map_init(
                        || Worker::new(self, observer, scheme),
                        |w, c| w.run_chunk(c, progress),
                    )
                    .collect()
            });
            // Merged in chunk order: the invariant that makes threads invisible.
            for r in done {
                merge(r?);
            }
            first = last;
        }
        Ok(())
    }
}

/// How a worker steps the models: over blocks of lanes when every model has a lane
/// form and SGD's gradient can be batched, else one path at a time.
enum Stepping<'p, P> {
    Lanes {
        terms: Vec<LaneTerm<'p>>,
        block: Box<Block<P>>,
    },
    PerPoint {
        terms: Vec<ModelTerm<'p>>,
    },
}

/// One worker's state beside its terms: the current path's processes, the random
/// streams and the observer's buffers.
pub(crate) struct Core<'p, 'o, O: Observer, S> {
    pub engine: &'p Engine<'p>,
    pub observer: &'o O,
    pub scheme: S,
    pub brownian: BrownianPath,
    pub sgd: Evaluator<'p>,
    /// Real minibatch SGD, for finite sums (instead of Gaussian noise).
    pub minibatch: Option<MinibatchSgd>,
    /// SGD's state.
    pub x: Vec<f64>,
    /// Models' states, `copies × d` each.
    pub states: Vec<Vec<f64>>,
    /// Which processes are still running on the current path.
    pub alive: Vec<bool>,
    /// The state of the process being stepped at the start of the step (for reports).
    step_start: Vec<f64>,
    pub tmp: Vec<f64>,
    /// SGD's Gaussian draw ξ_k of the current step.
    pub xi: Vec<f64>,
    /// What the observer keeps of the current path, and its scratch.
    pub path: O::Path,
    pub scratch: O::Scratch,
}

struct Worker<'p, 'o, O: Observer, S> {
    core: Core<'p, 'o, O, S>,
    stepping: Stepping<'p, O::Path>,
}

impl<'p, 'o, O: Observer, S: Scheme + Copy> Worker<'p, 'o, O, S> {
    fn new(engine: &'p Engine<'p>, observer: &'o O, scheme: S) -> Self {
        let s = &engine.settings;
        let problem = engine.problem;
        let d = problem.dim();
        let grid = s.substeps * scheme.increments_per_substep();
        let processes = s.models.len() + 1;
        let core = Core {
            engine,
            observer,
            scheme,
            brownian: BrownianPath::new(s.seed, d, s.eta, grid, s.coupling),
            sgd: Evaluator::new(problem, &engine.noise),
            minibatch: problem
                .finite_sum()
                .filter(|_| s.minibatch)
                .map(|fs| MinibatchSgd::new(fs, s.seed, d)),
            x: vec![0.0; d],
            states: vec![vec![0.0; d * scheme.copies()]; s.models.len()],
            alive: vec![true; processes],
            step_start: vec![0.0; d],
            tmp: vec![0.0; d],
            xi: vec![0.0; d],
            path: observer.new_path(),
            scratch: observer.new_scratch(),
        };
        let choices: Vec<Choice<'p>> = s
            .models
            .iter()
            .map(|&k| Choice::of(k, s.eta, Evaluator::new(problem, &engine.noise)))
            .collect();
        let lanes = choices.iter().all(|c| matches!(c, Choice::Lanes(_)));
        let block = if lanes { Block::new(&core, grid) } else { None };
        let stepping = match block {
            Some(block) => Stepping::Lanes {
                terms: choices
                    .into_iter()
                    .filter_map(|c| match c {
                        Choice::Lanes(t) => Some(*t),
                        Choice::PerPoint(_) => None,
                    })
                    .collect(),
                block: Box::new(block),
            },
            None => Stepping::PerPoint {
                terms: choices.into_iter().map(Choice::into_point).collect(),
            },
        };
        Worker { core, stepping }
    }

    fn run_chunk(
        &mut self,
        chunk: u64,
        progress: &(dyn Fn(u64) + Sync),
    ) -> Result<O::Chunk, EngineError<O::Error>> {
        let mut summary = self.core.observer.new_chunk();
        let first = chunk * CHUNK_PATHS;
        let last = (first + CHUNK_PATHS).min(self.core.engine.settings.paths);
        match &mut self.stepping {
            Stepping::Lanes { terms, block } => {
                block.run(&mut self.core, terms, first..last, &mut summary)?;
            }
            Stepping::PerPoint { terms } => {
                for path in first..last {
                    self.core.run_path(terms, path, &mut summary)?;
                }
            }
        }
        progress(last - first);
        Ok(summary)
    }
}

impl<O: Observer, S: Scheme + Copy> Core<'_, '_, O, S> {
    /// Marks process `p` diverged on `path` during `step`, last known at `point`.
    pub(crate) fn diverge(
        &mut self,
        chunk: &mut O::Chunk,
        p: usize,
        at: (u64, u64),
        point: &[f64],
        reason: String,
    ) {
        self.alive[p] = false;
        self.observer
            .diverged(p, at, point, reason, &mut self.path, chunk);
    }

    /// Lets the observer look at the current path after `step` steps, when it asks to.
    pub(crate) fn look(
        &mut self,
        chunk: &mut O::Chunk,
        path: u64,
        step: u64,
    ) -> Result<(), EngineError<O::Error>> {
        if !self.observer.looks_at(step) {
            return Ok(());
        }
        let states = States {
            sgd: &self.x,
            models: &self.states,
        };
        self.observer
            .look(
                (path, step),
                states,
                &mut self.alive,
                &mut self.path,
                chunk,
                &mut self.scratch,
            )
            .map_err(EngineError::Observer)
    }

    /// SGD step `k` of `path` for the worker's own state.
    pub(crate) fn step_sgd(
        &mut self,
        chunk: &mut O::Chunk,
        path: u64,
        k: u64,
    ) -> Result<(), EngineError<O::Error>> {
        let eta = self.engine.settings.eta;
        self.step_start.copy_from_slice(&self.x);
        let r = match &mut self.minibatch {
            Some(mb) => mb.step(self.engine.problem, eta, &mut self.x, (path, k)),
            None => sgd_step(&mut self.sgd, eta, &mut self.x, &self.xi, &mut self.tmp),
        };
        let reason = match r {
            Ok(()) if self.x.iter().all(|v| v.is_finite()) => return Ok(()),
            Ok(()) => self.observer.non_finite(0),
            Err(Failure::Diverged(reason)) => reason,
            Err(Failure::Fatal(source)) => {
                return Err(EngineError::Fatal {
                    process: 0,
                    path,
                    step: k,
                    source,
                });
            }
        };
        let start = std::mem::take(&mut self.step_start);
        self.diverge(chunk, 0, (path, k), &start, reason);
        self.step_start = start;
        Ok(())
    }

    /// The substeps of model `m` over SGD step `k` of `path`.
    fn step_model(
        &mut self,
        term: &mut ModelTerm<'_>,
        chunk: &mut O::Chunk,
        path: u64,
        k: u64,
        m: usize,
    ) -> Result<(), EngineError<O::Error>> {
        let s = &self.engine.settings;
        let d = self.x.len();
        let h = s.eta / s.substeps as f64;
        let per_substep = self.scheme.increments_per_substep() * d;
        let state = &mut self.states[m];
        self.step_start.copy_from_slice(&state[state.len() - d..]);
        let increments = self.brownian.increments();
        let mut outcome = Ok(());
        for dw in increments.chunks_exact(per_substep) {
            outcome = self.scheme.step(term, state, h, dw);
            if outcome.is_err() {
                break;
            }
        }
        let reason = match outcome {
            Ok(()) if state.iter().all(|v| v.is_finite()) => return Ok(()),
            Ok(()) => self.observer.non_finite(m + 1),
            Err(Failure::Diverged(reason)) => reason,
            Err(Failure::Fatal(source)) => {
                return Err(EngineError::Fatal {
                    process: m + 1,
                    path,
                    step: k,
                    source,
                });
            }
        };
        let start = std::mem::take(&mut self.step_start);
        self.diverge(chunk, m + 1, (path, k), &start, reason);
        self.step_start = start;
        Ok(())
    }

    /// One path, stepped alone.
    fn run_path(
        &mut self,
        terms: &mut [ModelTerm<'_>],
        path: u64,
        chunk: &mut O::Chunk,
    ) -> Result<(), EngineError<O::Error>> {
        let engine = self.engine;
        let d = self.x.len();
        self.brownian.start_path(path);
        self.x.copy_from_slice(&engine.start);
        for s in &mut self.states {
            for c in s.chunks_mut(d) {
                c.copy_from_slice(&engine.start);
            }
        }
        self.alive.fill(true);
        self.observer.start_path(&mut self.path);
        self.look(chunk, path, 0)?;
        for k in 0..engine.settings.steps {
            if !self.alive.iter().any(|&a| a) {
                break;
            }
            self.brownian.draw_step(k);
            self.xi.copy_from_slice(self.brownian.xi());
            if self.alive[0] {
                self.step_sgd(chunk, path, k)?;
            }
            for (m, term) in terms.iter_mut().enumerate() {
                if self.alive[m + 1] {
                    self.step_model(term, chunk, path, k, m)?;
                }
            }
            self.look(chunk, path, k + 1)?;
        }
        self.observer
            .finish_path(path, &self.alive, &mut self.path, chunk);
        Ok(())
    }
}

/// An observer that records the states it is shown before handing them on, to test
/// that two commands see the same paths.
#[cfg(test)]
pub(crate) mod tap {
    use super::{Observer, States};

    /// One path's states at every look: `(step, process, state)` for each process
    /// still running there, in look order.
    pub(crate) type Trace = Vec<(u64, usize, Vec<f64>)>;

    /// `O`, recording.
    pub(crate) struct Tap<O>(pub O);

    impl<O: Observer> Observer for Tap<O> {
        type Path = (O::Path, Trace);
        /// The inner summary, and the traces of the chunk's paths in path order.
        type Chunk = (O::Chunk, Vec<Trace>);
        type Scratch = O::Scratch;
        type Error = O::Error;

        fn new_path(&self) -> Self::Path {
            (self.0.new_path(), Vec::new())
        }
        fn new_chunk(&self) -> Self::Chunk {
            (self.0.new_chunk(), Vec::new())
        }
        fn new_scratch(&self) -> O::Scratch {
            self.0.new_scratch()
        }
        fn start_path(&self, path: &mut Self::Path) {
            self.0.start_path(&mut path.0);
            path.1.clear();
        }
        fn looks_at(&self, step: u64) -> bool {
            self.0.looks_at(step)
        }
        fn look(
            &self,
            at: (u64, u64),
            states: States<'_>,
            alive: &mut [bool],
            path: &mut Self::Path,
            chunk: &mut Self::Chunk,
            scratch: &mut O::Scratch,
        ) -> Result<(), O::Error> {
            for (p, _) in alive.iter().enumerate().filter(|(_, a)| **a) {
                let x = if p == 0 {
                    states.sgd
                } else {
                    &states.models[p - 1]
                };
                path.1.push((at.1, p, x.to_vec()));
            }
            self.0
                .look(at, states, alive, &mut path.0, &mut chunk.0, scratch)
        }
        fn diverged(
            &self,
            p: usize,
            at: (u64, u64),
            point: &[f64],
            reason: String,
            path: &mut Self::Path,
            chunk: &mut Self::Chunk,
        ) {
            self.0
                .diverged(p, at, point, reason, &mut path.0, &mut chunk.0);
        }
        fn non_finite(&self, p: usize) -> String {
            self.0.non_finite(p)
        }
        fn finish_path(
            &self,
            index: u64,
            alive: &[bool],
            path: &mut Self::Path,
            chunk: &mut Self::Chunk,
        ) {
            self.0.finish_path(index, alive, &mut path.0, &mut chunk.0);
            chunk.1.push(std::mem::take(&mut path.1));
        }
    }
}
