//! The path engine: SGD and the models stepped side by side on every path, for
//! `simulate` (and `weak-order`, which calls it) and `escape`. It owns the random
//! streams ([`super::brownian`], [`super::minibatch`]), the chunks of
//! [`CHUNK_PATHS`] paths and the thread pool, the stepping (lane-batched in `block.rs`
//! when every model has a lane form, one path at a time otherwise: [`Choice`]) and the
//! divergence of a process on a path. What a command does with the paths is an
//! [`Observer`]: it looks at the processes at the steps it asks for (saving observables
//! at grid times, or stopping a process that left a region), hears of divergences, and
//! keeps all it learns of a path in the path's record, which it summarises into its
//! chunk's summary when the path is over.
//!
//! Invariant: a chunk's summary is the fold of its paths' records in path order. Its
//! paths read their own random streams, an observer touches the chunk's summary only
//! when it is handed a finished path ([`Observer::finish_path`], in path order,
//! whatever order the paths finish in), and the caller merges the chunk summaries in
//! chunk order, so the numbers do not depend on the threads, the batch size, which
//! paths share a block, or which thread ran a path. A shard of a run is therefore a
//! range of chunk indices, and a checkpoint the merged summary of a prefix of them.
//!
//! Scheduling ([`Wave`]): the threads take the chunks of a wave one at a time and
//! claim their paths one at a time (a block of lanes claims one per free lane); a
//! thread that finds no chunk left untouched helps the one with the most paths left.
//! So with many chunks each is run by one thread, as whole units, and with few (100
//! paths: one chunk) every thread still works, on paths of the same chunk. Finished
//! paths wait in their chunk's fold until every earlier path of the chunk is folded.
//!
//! A model's term is chosen once, when a worker is built ([`Choice::of`]): a new way of
//! evaluating coefficients (e.g. matrix-free for large d) is a new variant there and a
//! new arm of the worker's stepping.

use std::ops::Range;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};

use crate::models::ModelKind;
use crate::problem::{Problem, ProblemError};
use crate::shard::{Ledger, Plan, ShardError};

use super::block::Block;
use super::krylov::{KrylovTerm, LanczosTally, NoiseDrive};
use super::lanes::LANES;
use super::minibatch::MinibatchSgd;
use super::terms::{
    Choice, Coefficients, Evaluator, Failure, LaneTerm, ModelTerm, NoiseSource, Term,
    sgd_matrix_free_step, sgd_step,
};
use super::{BrownianPath, CHUNK_PATHS, Coupling, MAX_SUBSTEPS, Scheme};
use crate::models::matrix_free::{self, KrylovOptions, LinearAlgebra};

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
    /// Dense or matrix-free model coefficients ([`linear_algebra`] resolves the
    /// request), and the Lanczos tolerance of the matrix-free ones.
    pub linear_algebra: LinearAlgebra,
    pub krylov: KrylovOptions,
    /// Which chunks to run, which to read back and which to leave out, and where the
    /// finished ones go (shards, checkpoints, merges: [`crate::shard`]); `None`: run
    /// them all.
    pub ledger: Option<Ledger>,
}

/// η must be a finite number > 0.
pub(crate) fn check_eta(eta: f64) -> Result<(), String> {
    if eta.is_finite() && eta > 0.0 {
        Ok(())
    } else {
        Err(format!("η must be a finite number > 0, got {eta}"))
    }
}

/// The coefficients a run of `models` on a problem in `d` variables uses: those asked
/// for, or by the size rule when none is ([`LinearAlgebra::for_dimension`] when every
/// model has a matrix-free form, dense otherwise; one choice for the whole run, since the matrix-free runs of a
/// finite sum draw their noise in another dimension). Asking for `krylov` with a model
/// that has no matrix-free form is an error naming it.
pub(crate) fn linear_algebra(
    asked: Option<LinearAlgebra>,
    d: usize,
    models: &[ModelKind],
) -> Result<LinearAlgebra, String> {
    let dense_only = models.iter().find_map(|&k| matrix_free::dense_only(k));
    match (asked, dense_only) {
        (Some(LinearAlgebra::Krylov), Some(e)) => Err(format!(
            "{e}; run it with --linear-algebra dense, or leave it out of --models"
        )),
        (Some(la), _) => Ok(la),
        (None, Some(_)) => Ok(LinearAlgebra::Dense),
        (None, None) => Ok(LinearAlgebra::for_dimension(d)),
    }
}

/// The objective evaluated once at the start point, as the run's coefficients will
/// need it (the Hessian on the dense path, the gradient on the matrix-free one, which
/// forms no d×d matrix), so a problem invalid there fails before any path runs.
pub(crate) fn check_start(
    problem: &Problem,
    start: &[f64],
    linear_algebra: LinearAlgebra,
) -> Result<(), ProblemError> {
    match linear_algebra {
        LinearAlgebra::Dense => problem.objective_derivatives(start).map(|_| ()),
        LinearAlgebra::Krylov => {
            let mut jets = crate::tape::Jets::default();
            problem.gradient_with(start, &mut crate::tape::Workspace::default(), &mut jets)
        }
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
///
/// All the observer learns of a path while it runs goes into the path's record
/// ([`Observer::Path`]); the chunk's summary receives a path only through
/// [`Observer::finish_path`], in path order. A path may run on any thread, beside other
/// paths of its chunk.
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
    /// A new path begins (`path` is reused from an earlier one, maybe another chunk's).
    fn start_path(&self, path: &mut Self::Path);
    /// Whether to look at the processes after `step` SGD steps (0: the start).
    fn looks_at(&self, step: u64) -> bool;
    /// Looks at path `at.0` after `at.1` steps, at the processes still `alive`; may
    /// stop any of them.
    fn look(
        &self,
        at: (u64, u64),
        states: States<'_>,
        alive: &mut [bool],
        path: &mut Self::Path,
        scratch: &mut Self::Scratch,
    ) -> Result<(), Self::Error>;
    /// Process `p` diverged on path `at.0` during step `at.1`; `point` is its state at
    /// the start of that step.
    fn diverged(
        &self,
        p: usize,
        at: (u64, u64),
        point: &[f64],
        reason: String,
        path: &mut Self::Path,
    );
    /// Why process `p` stopped when its state became non-finite.
    fn non_finite(&self, p: usize) -> String;
    /// Path `index` is over; `alive` marks the processes that ran to the last step.
    /// Called in path order within a chunk, once for every path of the chunk.
    fn finish_path(
        &self,
        index: u64,
        alive: &[bool],
        path: &mut Self::Path,
        chunk: &mut Self::Chunk,
    );
    /// A chunk's summary as exact data (every `f64` as its bits), for shards and
    /// checkpoints.
    fn save_chunk(&self, chunk: &Self::Chunk) -> serde_json::Value;
    /// The summary [`Observer::save_chunk`] wrote, or `None` if `value` is not one of
    /// this run's.
    fn load_chunk(&self, value: &serde_json::Value) -> Option<Self::Chunk>;
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
    /// When paths fail ([`EngineError::Fatal`], or the observer's error), the error is
    /// the smallest such path's, as that path alone would report it, and nothing is
    /// merged from the wave it belongs to. Returns the Lanczos steps of the merged
    /// chunks' model evaluations (zero on the dense path).
    pub(crate) fn run<S: Scheme + Copy, O: Observer>(
        &self,
        scheme: S,
        observer: &O,
        progress: &(dyn Fn(u64) + Sync),
        mut merge: impl FnMut(O::Chunk),
    ) -> Result<LanczosTally, EngineError<O::Error>> {
        let s = &self.settings;
        let krylov = s.linear_algebra == LinearAlgebra::Krylov;
        let mut total = LanczosTally::default();
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
        let ledger = s.ledger.as_ref().map(|l| (l, l.begin(chunks)));
        let plan = |c: u64| match ledger {
            None => Plan::Compute,
            Some((l, Some(r))) => l.plan(r, c),
            Some((_, None)) => Plan::Skip,
        };
        let mut first = 0;
        while first < chunks {
            match plan(first) {
                Plan::Skip => first += 1,
                Plan::Stored => {
                    if let Some((l, Some(r))) = ledger {
                        let stored = l.stored(r, first);
                        let read = stored.as_ref().and_then(|v| {
                            let (summary, tally) = stored_chunk(v, krylov)?;
                            Some((observer.load_chunk(summary)?, tally))
                        });
                        match read {
                            Some((summary, tally)) => {
                                total.merge(&tally);
                                merge(summary);
                            }
                            None => l.fail(ShardError::Input(format!(
                                "chunk {first} of engine run {} is not a summary of this run",
                                r + 1
                            ))),
                        }
                    }
                    first += 1;
                }
                Plan::Compute => {
                    let mut last = first + 1;
                    while last < chunks && last - first < wave && plan(last) == Plan::Compute {
                        last += 1;
                    }
                    let record = ledger.and_then(|(l, r)| Some((l, r?)));
                    let range = first..last;
                    let shared = Wave::new(
                        observer, progress, range, s.paths, s.threads, record, krylov,
                    );
                    pool.broadcast(|_| shared.work(self, scheme));
                    // Merged in chunk order: the invariant that makes threads invisible. A
                    // chunk left unfinished by a stop is left out.
                    for (summary, tally) in shared.into_summaries()?.into_iter().flatten() {
                        total.merge(&tally);
                        merge(summary);
                    }
                    first = last;
                }
            }
        }
        if let Some((l, _)) = ledger {
            l.maybe_save();
        }
        Ok(total)
    }
}

/// The chunks of one wave as the threads share them: each thread takes chunks no one
/// has started, one at a time, and claims their paths in order; once none is left it
/// helps the chunk with the most paths left. The paths' records are folded into their
/// chunk's summary in path order ([`Fold`]).
pub(crate) struct Wave<'o, O: Observer> {
    observer: &'o O,
    progress: &'o (dyn Fn(u64) + Sync),
    /// The wave's first chunk index.
    first: u64,
    chunks: Vec<Slot<O>>,
    /// The next chunk no thread has started.
    fresh: AtomicUsize,
    /// Lanes a block fills at most: the wave's paths shared evenly among one block per
    /// thread, but among no more blocks than it takes to hold them all (5 paths run in
    /// one block of 5, 100 paths on two threads in two blocks of 50): a block's step
    /// costs nearly as much with few lanes as with many (with 32, about 3/4 of 64's),
    /// so splitting paths that fit in one block would cost more work for little time.
    lanes: usize,
    /// The smallest path that failed (`u64::MAX`: none yet), and its error.
    halt: AtomicU64,
    error: Mutex<Option<(u64, EngineError<O::Error>)>>,
    /// Where finished chunks are recorded (the ledger and the engine run's index), and
    /// who may ask the wave to stop.
    ledger: Option<(&'o Ledger, usize)>,
    /// A matrix-free run: chunks carry their Lanczos tally ([`saved_chunk`]).
    krylov: bool,
}

/// A finished chunk as the ledger keeps it: the observer's summary, and for a
/// matrix-free run `{"observer": summary, "lanczos": [evaluations, drift steps, most
/// drift steps, diffusion steps, most diffusion steps]}`.
fn saved_chunk(summary: serde_json::Value, tally: Option<&LanczosTally>) -> serde_json::Value {
    match tally {
        None => summary,
        Some(t) => serde_json::json!({
            "observer": summary,
            "lanczos": [t.evaluations, t.drift_sum, t.drift_max, t.diffusion_sum, t.diffusion_max],
        }),
    }
}

/// [`saved_chunk`] read back: the observer's summary and the tally (zero for a dense
/// run), or `None` if `value` is not of the run's form.
fn stored_chunk(
    value: &serde_json::Value,
    krylov: bool,
) -> Option<(&serde_json::Value, LanczosTally)> {
    if !krylov {
        return Some((value, LanczosTally::default()));
    }
    let counts: Vec<u64> = (value.get("lanczos")?.as_array()?.iter())
        .map(serde_json::Value::as_u64)
        .collect::<Option<_>>()?;
    let &[
        evaluations,
        drift_sum,
        drift_max,
        diffusion_sum,
        diffusion_max,
    ] = &counts[..]
    else {
        return None;
    };
    let tally = LanczosTally {
        evaluations,
        drift_sum,
        drift_max,
        diffusion_sum,
        diffusion_max,
    };
    Some((value.get("observer")?, tally))
}

/// One chunk of a wave.
struct Slot<O: Observer> {
    paths: Range<u64>,
    /// The next path to claim (may overshoot the end).
    next: AtomicU64,
    fold: Mutex<Fold<O>>,
}

/// A chunk's summary as its paths finish.
struct Fold<O: Observer> {
    summary: O::Chunk,
    /// The Lanczos steps of the chunk's finished paths (sums and maxima: the order the
    /// paths finish in does not matter).
    tally: LanczosTally,
    /// The next path the summary takes.
    next: u64,
    /// Finished paths waiting for an earlier one: path `paths.start + i` at
    /// `waiting[i]`, with its flags and record.
    waiting: Vec<Option<(Vec<bool>, O::Path)>>,
    /// Flags and records not in use, handed back to workers for their next paths.
    spare: Vec<(Vec<bool>, O::Path)>,
}

impl<'o, O: Observer> Wave<'o, O> {
    fn new(
        observer: &'o O,
        progress: &'o (dyn Fn(u64) + Sync),
        chunks: Range<u64>,
        paths: u64,
        threads: usize,
        ledger: Option<(&'o Ledger, usize)>,
        krylov: bool,
    ) -> Self {
        let range = |c: u64| c * CHUNK_PATHS..((c + 1) * CHUNK_PATHS).min(paths);
        let total = range(chunks.end - 1).end - range(chunks.start).start;
        let blocks = total.div_ceil(LANES as u64).clamp(1, threads.max(1) as u64);
        Wave {
            observer,
            progress,
            first: chunks.start,
            chunks: chunks
                .clone()
                .map(|c| Slot {
                    paths: range(c),
                    next: AtomicU64::new(range(c).start),
                    fold: Mutex::new(Fold {
                        summary: observer.new_chunk(),
                        tally: LanczosTally::default(),
                        next: range(c).start,
                        waiting: Vec::new(),
                        spare: Vec::new(),
                    }),
                })
                .collect(),
            fresh: AtomicUsize::new(0),
            lanes: (total.div_ceil(blocks) as usize).clamp(1, LANES),
            halt: AtomicU64::new(u64::MAX),
            error: Mutex::new(None),
            ledger,
            krylov,
        }
    }

    /// One thread's share: a worker (built once there is a path for it) runs the paths
    /// it claims until none is left.
    fn work<S: Scheme + Copy>(&self, engine: &Engine<'_>, scheme: S) {
        let mut feed = Feed {
            wave: self,
            current: None,
            held: None,
        };
        feed.held = feed.claim();
        if feed.held.is_some() {
            Worker::new(engine, self.observer, scheme).run(&mut feed);
        }
    }

    /// The chunk summaries in chunk order (`None` for a chunk a stop left unfinished),
    /// or the error of the smallest failed path.
    #[allow(clippy::type_complexity)]
    fn into_summaries(
        self,
    ) -> Result<Vec<Option<(O::Chunk, LanczosTally)>>, EngineError<O::Error>> {
        if let Some((_, e)) = self
            .error
            .into_inner()
            .unwrap_or_else(PoisonError::into_inner)
        {
            return Err(e);
        }
        Ok(self
            .chunks
            .into_iter()
            .map(|slot| {
                let fold = slot
                    .fold
                    .into_inner()
                    .unwrap_or_else(PoisonError::into_inner);
                (fold.next == slot.paths.end).then_some((fold.summary, fold.tally))
            })
            .collect())
    }
}

/// One worker's access to a wave: the chunk it is claiming paths from.
pub(crate) struct Feed<'w, 'o, O: Observer> {
    wave: &'w Wave<'o, O>,
    current: Option<usize>,
    /// A path claimed before the worker was built.
    held: Option<u64>,
}

impl<O: Observer> Feed<'_, '_, O> {
    /// The next path to run, if any is left: from the current chunk, else from a chunk
    /// no one has started, else from the chunk with the most paths left. After a
    /// failure only paths before the failed one are handed out.
    pub(crate) fn claim(&mut self) -> Option<u64> {
        if let Some(path) = self.held.take() {
            return Some(path);
        }
        let wave = self.wave;
        if wave.ledger.is_some_and(|(l, _)| l.stop_requested()) {
            return None;
        }
        loop {
            let halt = wave.halt.load(Ordering::Acquire);
            let left = |slot: &Slot<O>| {
                slot.paths
                    .end
                    .min(halt)
                    .saturating_sub(slot.next.load(Ordering::Relaxed))
            };
            if let Some(slot) = self.current.map(|c| &wave.chunks[c])
                && left(slot) > 0
            {
                let path = slot.next.fetch_add(1, Ordering::Relaxed);
                if path < slot.paths.end.min(halt) {
                    return Some(path);
                }
            }
            let fresh = wave.fresh.fetch_add(1, Ordering::Relaxed);
            if fresh < wave.chunks.len() {
                self.current = Some(fresh);
                continue;
            }
            let busiest = (wave.chunks.iter().enumerate())
                .map(|(c, slot)| (left(slot), std::cmp::Reverse(c)))
                .max()
                .filter(|&(n, _)| n > 0)?;
            self.current = Some(busiest.1.0);
        }
    }

    /// Lanes a block fills at most.
    pub(crate) fn lanes(&self) -> usize {
        self.wave.lanes
    }

    /// The smallest path that failed so far (`u64::MAX`: none): the numbers of the
    /// paths after it are not needed.
    pub(crate) fn failed_at(&self) -> u64 {
        self.wave.halt.load(Ordering::Relaxed)
    }

    /// Path `path` is over: folded into its chunk's summary now if every earlier path
    /// of the chunk is, else kept (`record` is then exchanged for a spare one).
    pub(crate) fn finish(
        &mut self,
        path: u64,
        alive: &[bool],
        record: &mut O::Path,
        tally: &LanczosTally,
    ) {
        let wave = self.wave;
        if path >= wave.halt.load(Ordering::Relaxed) {
            return;
        }
        let slot = &wave.chunks[(path / CHUNK_PATHS - wave.first) as usize];
        let mut guard = slot.fold.lock().unwrap_or_else(PoisonError::into_inner);
        let fold = &mut *guard;
        fold.tally.merge(tally);
        let start = slot.paths.start;
        if path != fold.next {
            let (mut flags, mut kept) =
                (fold.spare.pop()).unwrap_or_else(|| (Vec::new(), wave.observer.new_path()));
            flags.clear();
            flags.extend_from_slice(alive);
            std::mem::swap(record, &mut kept);
            let i = (path - start) as usize;
            if fold.waiting.len() <= i {
                fold.waiting.resize_with(i + 1, || None);
            }
            fold.waiting[i] = Some((flags, kept));
            return;
        }
        (wave.observer).finish_path(path, alive, record, &mut fold.summary);
        fold.next += 1;
        while let Some((flags, mut kept)) = (fold.waiting)
            .get_mut((fold.next - start) as usize)
            .and_then(Option::take)
        {
            (wave.observer).finish_path(fold.next, &flags, &mut kept, &mut fold.summary);
            fold.spare.push((flags, kept));
            fold.next += 1;
        }
        let done = fold.next == slot.paths.end;
        let ledger = wave.ledger.filter(|_| done);
        if let Some((l, r)) = ledger {
            let summary = wave.observer.save_chunk(&fold.summary);
            let tally = wave.krylov.then_some(&fold.tally);
            l.record(r, path / CHUNK_PATHS, saved_chunk(summary, tally));
        }
        drop(guard);
        if done {
            (wave.progress)(slot.paths.end - start);
        }
        if let Some((l, _)) = ledger {
            l.maybe_save();
        }
    }

    /// Path `path` failed with `error`: kept if no earlier path has failed, and no path
    /// after it is handed out from now on.
    pub(crate) fn fail(&mut self, path: u64, error: EngineError<O::Error>) {
        let mut first = (self.wave.error.lock()).unwrap_or_else(PoisonError::into_inner);
        if first.as_ref().is_none_or(|&(p, _)| path < p) {
            *first = Some((path, error));
            self.wave.halt.fetch_min(path, Ordering::AcqRel);
        }
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
        terms: Vec<PointTerm<'p>>,
    },
}

/// A model's term stepped one path at a time: dense (the factor σ) or matrix-free
/// (the increment σΔW).
#[derive(Debug)]
enum PointTerm<'p> {
    Dense(Box<ModelTerm<'p>>),
    Krylov(Box<KrylovTerm<'p>>),
}

impl Term for PointTerm<'_> {
    fn eval(
        &mut self,
        x: &[f64],
        dw: &[f64],
        dw2: Option<&[f64]>,
    ) -> Result<Coefficients<'_>, Failure> {
        match self {
            PointTerm::Dense(t) => t.eval(x, dw, dw2),
            PointTerm::Krylov(t) => t.eval(x, dw, dw2),
        }
    }
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
    /// A matrix-free run's noise: SGD's Gaussian noise by the factor of a finite
    /// sum's Σ (n-dimensional ξ and Brownian increments), `None` for Σ^{1/2}.
    pub drive: Option<NoiseDrive>,
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
        let drive = (s.linear_algebra == LinearAlgebra::Krylov).then(|| NoiseDrive::of(problem));
        // The dimension of ξ and of the Brownian increments.
        let m = drive.map_or(d, |drive| drive.dimension(problem));
        let core = Core {
            engine,
            observer,
            scheme,
            brownian: BrownianPath::new(s.seed, m, s.eta, grid, s.coupling),
            sgd: Evaluator::new(problem, &engine.noise),
            minibatch: problem
                .finite_sum()
                .filter(|_| s.minibatch)
                .map(|fs| MinibatchSgd::new(fs, s.seed, d)),
            drive,
            x: vec![0.0; d],
            states: vec![vec![0.0; d * scheme.copies()]; s.models.len()],
            alive: vec![true; processes],
            step_start: vec![0.0; d],
            tmp: vec![0.0; d],
            xi: vec![0.0; m],
            path: observer.new_path(),
            scratch: observer.new_scratch(),
        };
        if let Some(drive) = drive {
            let terms = s
                .models
                .iter()
                .map(|&k| {
                    let ev = Evaluator::new(problem, &engine.noise);
                    PointTerm::Krylov(Box::new(KrylovTerm::new(k, s.eta, s.krylov, drive, ev)))
                })
                .collect();
            let stepping = Stepping::PerPoint { terms };
            return Worker { core, stepping };
        }
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
                terms: choices
                    .into_iter()
                    .map(|c| PointTerm::Dense(Box::new(c.into_point())))
                    .collect(),
            },
        };
        Worker { core, stepping }
    }

    /// Runs the paths the feed hands out until none is left.
    fn run(&mut self, feed: &mut Feed<'_, '_, O>) {
        match &mut self.stepping {
            Stepping::Lanes { terms, block } => block.run(&mut self.core, terms, feed),
            Stepping::PerPoint { terms } => {
                while let Some(path) = feed.claim() {
                    let run = self.core.run_path(terms, path);
                    // The path's Lanczos steps, each term's count left at zero for the next.
                    let mut tally = LanczosTally::default();
                    for t in terms.iter_mut() {
                        if let PointTerm::Krylov(t) = t {
                            tally.merge(&std::mem::take(&mut t.tally));
                        }
                    }
                    match run {
                        Ok(()) => feed.finish(path, &self.core.alive, &mut self.core.path, &tally),
                        Err(e) => feed.fail(path, e),
                    }
                }
            }
        }
    }
}

impl<O: Observer, S: Scheme + Copy> Core<'_, '_, O, S> {
    /// Marks process `p` diverged on `path` during `step`, last known at `point`.
    pub(crate) fn diverge(&mut self, p: usize, at: (u64, u64), point: &[f64], reason: String) {
        self.alive[p] = false;
        self.observer.diverged(p, at, point, reason, &mut self.path);
    }

    /// Lets the observer look at the current path after `step` steps, when it asks to.
    pub(crate) fn look(&mut self, path: u64, step: u64) -> Result<(), EngineError<O::Error>> {
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
                &mut self.scratch,
            )
            .map_err(EngineError::Observer)
    }

    /// SGD step `k` of `path` for the worker's own state.
    pub(crate) fn step_sgd(&mut self, path: u64, k: u64) -> Result<(), EngineError<O::Error>> {
        let eta = self.engine.settings.eta;
        self.step_start.copy_from_slice(&self.x);
        let r = match &mut self.minibatch {
            Some(mb) => mb.step(self.engine.problem, eta, &mut self.x, (path, k)),
            None => match self.drive {
                Some(drive) => {
                    let (x, xi, tmp) = (&mut self.x, &self.xi, &mut self.tmp);
                    sgd_matrix_free_step(&mut self.sgd, drive, eta, x, xi, tmp)
                }
                None => sgd_step(&mut self.sgd, eta, &mut self.x, &self.xi, &mut self.tmp),
            },
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
        self.diverge(0, (path, k), &start, reason);
        self.step_start = start;
        Ok(())
    }

    /// The substeps of model `m` over SGD step `k` of `path`.
    fn step_model(
        &mut self,
        term: &mut PointTerm<'_>,
        path: u64,
        k: u64,
        m: usize,
    ) -> Result<(), EngineError<O::Error>> {
        let s = &self.engine.settings;
        let d = self.x.len();
        let h = s.eta / s.substeps as f64;
        let per_substep = self.scheme.increments_per_substep() * self.xi.len();
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
        self.diverge(m + 1, (path, k), &start, reason);
        self.step_start = start;
        Ok(())
    }

    /// One path, stepped alone (its record in `self.path`, its flags in `self.alive`).
    fn run_path(
        &mut self,
        terms: &mut [PointTerm<'_>],
        path: u64,
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
        self.look(path, 0)?;
        for k in 0..engine.settings.steps {
            if !self.alive.iter().any(|&a| a) {
                break;
            }
            self.brownian.draw_step(k);
            self.xi.copy_from_slice(self.brownian.xi());
            if self.alive[0] {
                self.step_sgd(path, k)?;
            }
            for (m, term) in terms.iter_mut().enumerate() {
                if self.alive[m + 1] {
                    self.step_model(term, path, k, m)?;
                }
            }
            self.look(path, k + 1)?;
        }
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
            self.0.look(at, states, alive, &mut path.0, scratch)
        }
        fn diverged(
            &self,
            p: usize,
            at: (u64, u64),
            point: &[f64],
            reason: String,
            path: &mut Self::Path,
        ) {
            self.0.diverged(p, at, point, reason, &mut path.0);
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
        fn save_chunk(&self, chunk: &Self::Chunk) -> serde_json::Value {
            self.0.save_chunk(&chunk.0)
        }
        /// The inner summary, without traces.
        fn load_chunk(&self, value: &serde_json::Value) -> Option<Self::Chunk> {
            Some((self.0.load_chunk(value)?, Vec::new()))
        }
    }
}

/// An observer that makes the first paths of a run wait until `threads` threads have
/// started one (or a long timeout passes), to show without timing that a run's paths
/// are spread over the threads.
#[cfg(test)]
pub(crate) mod meet {
    use std::collections::BTreeSet;
    use std::sync::{Condvar, Mutex, PoisonError};
    use std::time::Duration;

    use super::{Observer, States};

    /// `O`, with the threads met at the start of paths.
    pub(crate) struct Meet<O> {
        pub inner: O,
        threads: usize,
        /// The rayon thread indices that started a path, and whether waiting gave up.
        seen: Mutex<(BTreeSet<usize>, bool)>,
        met: Condvar,
    }

    impl<O> Meet<O> {
        pub(crate) fn new(inner: O, threads: usize) -> Self {
            Meet {
                inner,
                threads,
                seen: Mutex::new((BTreeSet::new(), false)),
                met: Condvar::new(),
            }
        }

        /// The threads that ran a path.
        pub(crate) fn threads_seen(&self) -> BTreeSet<usize> {
            let seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
            seen.0.clone()
        }

        /// Notes this thread; waits (at most a minute in all) for the others.
        fn arrive(&self) {
            let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
            seen.0
                .insert(rayon::current_thread_index().unwrap_or(usize::MAX));
            self.met.notify_all();
            let (guard, timeout) = self
                .met
                .wait_timeout_while(seen, Duration::from_secs(60), |(s, gave_up)| {
                    s.len() < self.threads && !*gave_up
                })
                .unwrap_or_else(PoisonError::into_inner);
            seen = guard;
            if timeout.timed_out() {
                seen.1 = true;
                self.met.notify_all();
            }
        }
    }

    impl<O: Observer> Observer for Meet<O> {
        type Path = O::Path;
        type Chunk = O::Chunk;
        type Scratch = O::Scratch;
        type Error = O::Error;

        fn new_path(&self) -> O::Path {
            self.inner.new_path()
        }
        fn new_chunk(&self) -> O::Chunk {
            self.inner.new_chunk()
        }
        fn new_scratch(&self) -> O::Scratch {
            self.inner.new_scratch()
        }
        fn start_path(&self, path: &mut O::Path) {
            self.inner.start_path(path);
        }
        fn looks_at(&self, step: u64) -> bool {
            step == 0 || self.inner.looks_at(step)
        }
        fn look(
            &self,
            at: (u64, u64),
            states: States<'_>,
            alive: &mut [bool],
            path: &mut O::Path,
            scratch: &mut O::Scratch,
        ) -> Result<(), O::Error> {
            if at.1 == 0 {
                self.arrive();
            }
            if self.inner.looks_at(at.1) {
                self.inner.look(at, states, alive, path, scratch)
            } else {
                Ok(())
            }
        }
        fn diverged(
            &self,
            p: usize,
            at: (u64, u64),
            point: &[f64],
            reason: String,
            path: &mut O::Path,
        ) {
            self.inner.diverged(p, at, point, reason, path);
        }
        fn non_finite(&self, p: usize) -> String {
            self.inner.non_finite(p)
        }
        fn finish_path(
            &self,
            index: u64,
            alive: &[bool],
            path: &mut O::Path,
            chunk: &mut O::Chunk,
        ) {
            self.inner.finish_path(index, alive, path, chunk);
        }
        fn save_chunk(&self, chunk: &O::Chunk) -> serde_json::Value {
            self.inner.save_chunk(chunk)
        }
        fn load_chunk(&self, value: &serde_json::Value) -> Option<O::Chunk> {
            self.inner.load_chunk(value)
        }
    }
}
