//! Shards and checkpoints of the Monte Carlo commands (`simulate`, `weak-order`,
//! `escape`): a run computed in pieces, by several processes or across interruptions,
//! with the numbers of the single run to the last bit.
//!
//! Every engine run of a command (one for `simulate` and `escape`; one per η,
//! integration check and split-estimator run for `weak-order`, in a fixed order) has
//! `C` chunks of [`CHUNK_PATHS`](crate::sim::CHUNK_PATHS) paths. The engine folds each
//! chunk in path order and merges the chunk summaries in chunk order
//! (`sim/engine.rs`), so a run is determined by its chunk summaries: a [`Ledger`] keeps
//! them, as exact data (every `f64` as its IEEE bits), keyed by (engine run, chunk).
//!
//! * **Shard `K/N`** (`0 ≤ K < N`): of each engine run's chunks, this process computes
//!   `⌊KC/N⌋ … ⌊(K+1)C/N⌋ − 1` ([`Shard::chunks`]) and skips the others. The command's
//!   analysis then sees only part of the paths ([`Ledger::partial`]), and what it
//!   prints is a [`Part`] instead.
//! * **Merge.** [`Ledger::replay`] checks that the parts have the same [`RunKey`] and
//!   cover every chunk exactly once; the command then runs again with every chunk
//!   summary read from the parts instead of computed, merged in chunk order by the same
//!   code, so the report and its text and JSON are the single run's.
//! * **Checkpoint.** The ledger of a run (whole or shard) saved as a part while it runs
//!   (at most every [`SAVE_EVERY`], and at the end: [`Ledger::save`]); the same command given the
//!   same file resumes, replaying the chunks it holds. A stop request
//!   ([`Ledger::stop_flag`], set by a signal handler) makes the engine hand out no
//!   more paths; the chunks finished by then are kept, the others dropped.
//!
//! The format (`"format": "hasme-part"`, [`VERSION`]): one JSON object with the key
//! (`hasme` version, `command`, `args`: the command line less the flags that do not
//! change the numbers, and `digest`), `shard` (`index`, `count`), `complete`, and
//! `runs`: per engine run its `chunks` and the `done` chunks with their summaries.
//! The digest is SHA-256 over the objective file, every data file it reads and the
//! start file, each preceded by its length ([`digest`]).

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

/// The part format's version: a part of another version is refused.
pub const VERSION: u64 = 1;

/// The `format` field of a part.
pub const FORMAT: &str = "hasme-part";

/// A checkpoint is rewritten at most this often (and once more at the end): often
/// enough that an interruption loses seconds of work, rarely enough that writing it
/// (milliseconds for thousands of chunks) costs nothing measurable.
pub const SAVE_EVERY: Duration = Duration::from_secs(3);

/// Why a shard, a part or a checkpoint is refused, or a checkpoint not written.
#[derive(Debug, thiserror::Error)]
pub enum ShardError {
    /// A bad `--shard`, a part that cannot be read or does not fit the others, a
    /// checkpoint of another run (bad input).
    #[error("{0}")]
    Input(String),
    /// A checkpoint could not be written (a failure while running).
    #[error("{0}")]
    Run(String),
}

impl ShardError {
    /// Bad input, or a failure while running.
    pub fn kind(&self) -> crate::ErrorKind {
        match self {
            ShardError::Input(_) => crate::ErrorKind::Input,
            ShardError::Run(_) => crate::ErrorKind::Run,
        }
    }
}

/// Shard `index` of `count`, numbered from 0 (as `SLURM_ARRAY_TASK_ID` of
/// `--array=0-(N−1)`).
///
/// ```
/// use hasme::shard::Shard;
///
/// let s: Shard = "2/7".parse()?;
/// assert_eq!((s.index, s.count), (2, 7));
/// assert_eq!(s.chunks(20), 5..8);
/// assert!("7/7".parse::<Shard>().is_err());
/// # Ok::<(), hasme::shard::ShardError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    /// K, from 0 to `count − 1`.
    pub index: u64,
    /// N ≥ 1.
    pub count: u64,
}

impl Shard {
    /// The whole run: shard 0 of 1.
    pub const WHOLE: Shard = Shard { index: 0, count: 1 };

    /// The chunks of an engine run of `total` chunks this shard computes:
    /// `⌊K·total/N⌋ … ⌊(K+1)·total/N⌋ − 1` (contiguous, the shards' ranges tile
    /// `0..total`, sizes differ by at most one).
    pub fn chunks(&self, total: u64) -> Range<u64> {
        let at = |k: u64| (k as u128 * total as u128 / self.count as u128) as u64;
        at(self.index)..at(self.index + 1)
    }

    /// The shard whose range holds `chunk` of a run of `total` chunks.
    pub fn owner(count: u64, total: u64, chunk: u64) -> u64 {
        (0..count)
            .find(|&k| Shard { index: k, count }.chunks(total).contains(&chunk))
            .unwrap_or(0)
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl std::str::FromStr for Shard {
    type Err = ShardError;

    fn from_str(s: &str) -> Result<Shard, ShardError> {
        let bad = || {
            ShardError::Input(format!(
                "--shard `{s}`: expected K/N with 0 ≤ K < N (shards are numbered from 0, as SLURM_ARRAY_TASK_ID)"
            ))
        };
        let (k, n) = s.split_once('/').ok_or_else(bad)?;
        let index: u64 = k.trim().parse().map_err(|_| bad())?;
        let count: u64 = n.trim().parse().map_err(|_| bad())?;
        if count == 0 || index >= count {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }
}

/// What makes two parts pieces of the same run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunKey {
    /// The `hasme` version that computed it.
    pub hasme: String,
    /// `simulate`, `weak-order` or `escape`.
    pub command: String,
    /// The command's arguments, less those that do not change the numbers (`--shard`,
    /// `--checkpoint`, `--out`, `--json`, `--plot`, `--threads`, `--batch`, `--quiet`).
    pub args: Vec<String>,
    /// [`digest`] of the files the problem was read from.
    pub digest: String,
}

impl RunKey {
    /// How `other` differs from this key, in words (`None`: it does not).
    pub fn difference(&self, other: &RunKey) -> Option<String> {
        if self.hasme != other.hasme {
            Some(format!(
                "computed by hasme {} instead of {}",
                other.hasme, self.hasme
            ))
        } else if self.command != other.command {
            Some(format!(
                "of `{}` instead of `{}`",
                other.command, self.command
            ))
        } else if self.args != other.args {
            Some(format!(
                "with other settings (`{}` instead of `{}`)",
                other.args.join(" "),
                self.args.join(" ")
            ))
        } else if self.digest != other.digest {
            Some(
                "of another version of the objective file or its data (their digests differ)"
                    .to_string(),
            )
        } else {
            None
        }
    }
}

/// SHA-256 of `files` in order, each as its length (8 bytes, little-endian) then its
/// bytes, as `sha256:` and 64 hex digits.
pub fn digest(files: &[PathBuf]) -> Result<String, ShardError> {
    let mut hash = Sha256::new();
    for path in files {
        let bytes = std::fs::read(path)
            .map_err(|e| ShardError::Input(format!("cannot read `{}`: {e}", path.display())))?;
        hash.update((bytes.len() as u64).to_le_bytes());
        hash.update(&bytes);
    }
    let hex: String = hash.finalize().iter().map(|b| format!("{b:02x}")).collect();
    Ok(format!("sha256:{hex}"))
}

/// One engine run's chunks in a part: how many the run has, and the summaries of
/// those done.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RunChunks {
    /// The run's number of chunks.
    pub chunks: u64,
    /// Chunk index → its summary (the observer's exact form), as compact JSON text:
    /// written once, when the chunk is done, so rewriting a checkpoint only copies it.
    pub done: BTreeMap<u64, String>,
}

/// A partial result: the chunks of a run one process computed (a shard, or a
/// checkpoint).
#[derive(Clone, Debug, PartialEq)]
pub struct Part {
    /// Which run.
    pub key: RunKey,
    /// Which shard of it.
    pub shard: Shard,
    /// Per engine run, in the order the command runs them.
    pub runs: Vec<RunChunks>,
}

impl Part {
    /// An empty part of `shard` of the run `key`.
    pub fn new(key: RunKey, shard: Shard) -> Part {
        Part {
            key,
            shard,
            runs: Vec::new(),
        }
    }

    /// Whether it holds every chunk of its shard of every engine run it began.
    pub fn complete(&self) -> bool {
        self.runs
            .iter()
            .all(|r| self.shard.chunks(r.chunks).all(|c| r.done.contains_key(&c)))
    }

    /// Chunks held, over all engine runs.
    pub fn chunks_done(&self) -> usize {
        self.runs.iter().map(|r| r.done.len()).sum()
    }

    /// The part as one line of JSON (and a newline).
    pub fn to_json(&self) -> String {
        let head = json!({
            "format": FORMAT,
            "version": VERSION,
            "hasme": self.key.hasme,
            "command": self.key.command,
            "args": self.key.args,
            "digest": self.key.digest,
            "shard": { "index": self.shard.index, "count": self.shard.count },
            "complete": self.complete(),
        })
        .to_string();
        // The summaries are JSON text already: copied, not parsed and printed again.
        let mut out = String::with_capacity(
            head.len()
                + self
                    .runs
                    .iter()
                    .flat_map(|r| r.done.values())
                    .map(|s| s.len() + 32)
                    .sum::<usize>()
                + 16,
        );
        out.push_str(head.strip_suffix('}').unwrap_or(&head));
        out.push_str(",\"runs\":[");
        for (i, r) in self.runs.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(&format!("{{\"chunks\":{},\"done\":[", r.chunks));
            for (j, (c, summary)) in r.done.iter().enumerate() {
                if j > 0 {
                    out.push(',');
                }
                out.push_str(&format!("{{\"chunk\":{c},\"summary\":"));
                out.push_str(summary);
                out.push('}');
            }
            out.push_str("]}");
        }
        out.push_str("]}\n");
        out
    }

    /// Reads a part written by [`Part::to_json`]; `name` (the file) is for errors.
    pub fn from_json(text: &str, name: &str) -> Result<Part, ShardError> {
        let bad = |why: &str| ShardError::Input(format!("`{name}` is not a hasme part: {why}"));
        let v: Value = serde_json::from_str(text).map_err(|e| bad(&e.to_string()))?;
        if v.get("format").and_then(Value::as_str) != Some(FORMAT) {
            return Err(bad("no `\"format\": \"hasme-part\"`"));
        }
        let version = v.get("version").and_then(Value::as_u64);
        if version != Some(VERSION) {
            return Err(ShardError::Input(format!(
                "`{name}` is a part of format version {}, this hasme reads version {VERSION}",
                version.map_or("?".to_string(), |v| v.to_string())
            )));
        }
        let text_of = |field: &str| {
            v.get(field)
                .and_then(Value::as_str)
                .map(str::to_string)
                .ok_or_else(|| bad(&format!("no `{field}`")))
        };
        let args = v
            .get("args")
            .and_then(Value::as_array)
            .and_then(|a| {
                a.iter()
                    .map(|x| x.as_str().map(str::to_string))
                    .collect::<Option<Vec<_>>>()
            })
            .ok_or_else(|| bad("no `args`"))?;
        let key = RunKey {
            hasme: text_of("hasme")?,
            command: text_of("command")?,
            args,
            digest: text_of("digest")?,
        };
        let number = |x: &Value, field: &str| x.get(field).and_then(Value::as_u64);
        let shard = v
            .get("shard")
            .and_then(|s| Some((number(s, "index")?, number(s, "count")?)))
            .filter(|&(k, n)| k < n)
            .map(|(index, count)| Shard { index, count })
            .ok_or_else(|| bad("no valid `shard`"))?;
        let mut runs = Vec::new();
        for r in v
            .get("runs")
            .and_then(Value::as_array)
            .ok_or_else(|| bad("no `runs`"))?
        {
            let chunks = number(r, "chunks").ok_or_else(|| bad("a run without `chunks`"))?;
            let mut done = BTreeMap::new();
            for d in r
                .get("done")
                .and_then(Value::as_array)
                .ok_or_else(|| bad("a run without `done`"))?
            {
                let c = number(d, "chunk")
                    .filter(|&c| c < chunks)
                    .ok_or_else(|| bad("a chunk index out of range"))?;
                let s = d
                    .get("summary")
                    .ok_or_else(|| bad("a chunk without `summary`"))?;
                done.insert(c, s.to_string());
            }
            runs.push(RunChunks { chunks, done });
        }
        Ok(Part { key, shard, runs })
    }
}

/// What the engine does with one chunk of one of its runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Plan {
    /// Run its paths (and record its summary).
    Compute,
    /// Read its summary from the ledger.
    Stored,
    /// Leave it out: another shard's, or the run is stopping.
    Skip,
}

/// Whether the ledger computes chunks or only replays them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Compute,
    Replay,
}

/// The chunk summaries of a run as it goes: those computed here, those read from a
/// checkpoint or from parts, and which ones this process computes. Shared (cheap to
/// clone) between the command's configuration, the engine's threads and the CLI.
#[derive(Clone)]
pub struct Ledger(Arc<Inner>);

struct Inner {
    mode: Mode,
    checkpoint: Option<PathBuf>,
    /// Non-zero once a stop is asked for (the CLI stores the signal number).
    stop: Arc<AtomicUsize>,
    state: Mutex<State>,
}

struct State {
    part: Part,
    /// Engine runs begun so far.
    begun: usize,
    /// Why the run cannot be trusted (a part that does not fit, a checkpoint not
    /// written).
    error: Option<ShardError>,
    last_save: Instant,
    dirty: bool,
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.state();
        write!(
            f,
            "Ledger({:?}, shard {}, {} chunks)",
            self.0.mode,
            state.part.shard,
            state.part.chunks_done()
        )
    }
}

/// Two configurations are equal only when they share the same ledger.
impl PartialEq for Ledger {
    fn eq(&self, other: &Ledger) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Ledger {
    /// A ledger that computes `part.shard`'s chunks, starting from those `part` holds
    /// (an empty [`Part::new`], or a checkpoint read back), and saves itself to
    /// `checkpoint` when given.
    pub fn compute(part: Part, checkpoint: Option<PathBuf>) -> Ledger {
        Ledger::with(Mode::Compute, part, checkpoint)
    }

    fn with(mode: Mode, part: Part, checkpoint: Option<PathBuf>) -> Ledger {
        Ledger(Arc::new(Inner {
            mode,
            checkpoint,
            stop: Arc::new(AtomicUsize::new(0)),
            state: Mutex::new(State {
                part,
                begun: 0,
                error: None,
                last_save: Instant::now(),
                dirty: false,
            }),
        }))
    }

    /// A ledger that replays the parts' chunks, once they are checked to be of one run
    /// and to cover every chunk of every engine run exactly once (`names`: the parts'
    /// files, for the errors).
    pub fn replay(parts: Vec<Part>, names: &[String]) -> Result<Ledger, ShardError> {
        let input = |m: String| Err(ShardError::Input(m));
        let Some(first) = parts.first() else {
            return input("no parts to merge".into());
        };
        let (key, count) = (first.key.clone(), first.shard.count);
        let mut owner: BTreeMap<u64, usize> = BTreeMap::new();
        for (i, p) in parts.iter().enumerate() {
            if let Some(diff) = key.difference(&p.key) {
                return input(format!(
                    "`{}` is a part of another run than `{}`: it is {diff}",
                    names[i], names[0]
                ));
            }
            if p.shard.count != count {
                return input(format!(
                    "`{}` is shard {} but `{}` is shard {}: the parts of a run have one shard count",
                    names[i], p.shard, names[0], first.shard
                ));
            }
            if let Some(&j) = owner.get(&p.shard.index) {
                return input(format!(
                    "`{}` and `{}` are both shard {}: give each shard once",
                    names[j], names[i], p.shard
                ));
            }
            owner.insert(p.shard.index, i);
        }
        let runs = parts.iter().map(|p| p.runs.len()).max().unwrap_or(0);
        let mut merged: Vec<RunChunks> = Vec::with_capacity(runs);
        for r in 0..runs {
            let mut run = RunChunks::default();
            let mut from: BTreeMap<u64, usize> = BTreeMap::new();
            for (i, p) in parts.iter().enumerate() {
                let Some(pr) = p.runs.get(r) else { continue };
                if run.chunks == 0 {
                    run.chunks = pr.chunks;
                } else if pr.chunks != run.chunks {
                    return input(format!(
                        "`{}` and `{}` disagree on the size of engine run {}: parts of another run",
                        names[from.values().next().copied().unwrap_or(0)],
                        names[i],
                        r + 1
                    ));
                }
                for (&c, s) in &pr.done {
                    if let Some(&j) = from.get(&c) {
                        return input(format!(
                            "chunk {c} of engine run {} is in both `{}` and `{}`: give each shard once",
                            r + 1,
                            names[j],
                            names[i]
                        ));
                    }
                    from.insert(c, i);
                    run.done.insert(c, s.clone());
                }
            }
            merged.push(run);
        }
        // What is missing, by shard: a shard with no part, or an incomplete part.
        let mut absent: Vec<u64> = Vec::new();
        let mut incomplete: Vec<u64> = Vec::new();
        for run in &merged {
            for c in (0..run.chunks).filter(|c| !run.done.contains_key(c)) {
                let k = Shard::owner(count, run.chunks, c);
                let list = if owner.contains_key(&k) {
                    &mut incomplete
                } else {
                    &mut absent
                };
                if !list.contains(&k) {
                    list.push(k);
                }
            }
        }
        for k in 0..count {
            let began = owner.get(&k).map(|&i| parts[i].runs.len());
            if began.is_some_and(|b| b < runs) && !incomplete.contains(&k) {
                incomplete.push(k);
            }
        }
        absent.sort_unstable();
        incomplete.sort_unstable();
        if !absent.is_empty() || !incomplete.is_empty() {
            let list = |ks: &[u64]| {
                ks.iter()
                    .map(|k| format!("{k}/{count}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let mut why = Vec::new();
            if !absent.is_empty() {
                why.push(format!("no part of shard {} was given", list(&absent)));
            }
            if !incomplete.is_empty() {
                why.push(format!(
                    "the part of shard {} is incomplete (an interrupted shard: resume it with its --checkpoint)",
                    list(&incomplete)
                ));
            }
            return input(format!(
                "the parts do not cover the run: {}; run the missing shards with `--shard K/{count}` and merge again",
                why.join("; ")
            ));
        }
        let mut part = Part::new(key, Shard::WHOLE);
        part.runs = merged;
        Ok(Ledger::with(Mode::Replay, part, None))
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.0.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The flag a signal handler sets (to the signal's number) to stop the run: the
    /// engine then hands out no more paths, and the command finishes early with what it
    /// has ([`Ledger::partial`]).
    pub fn stop_flag(&self) -> Arc<AtomicUsize> {
        Arc::clone(&self.0.stop)
    }

    /// What stopped the run: the value stored in [`Ledger::stop_flag`], if any.
    pub fn stopped(&self) -> Option<usize> {
        match self.0.stop.load(Ordering::Relaxed) {
            0 => None,
            s => Some(s),
        }
    }

    /// Whether the command saw only some of the paths: a shard of several, a stopped
    /// run, or a ledger in error. Its report is then not to be printed (the commands
    /// skip their analyses).
    pub fn partial(&self) -> bool {
        let state = self.state();
        (self.0.mode == Mode::Compute && state.part.shard.count > 1)
            || state.error.is_some()
            || self.stopped().is_some()
    }

    /// Why the ledger's chunks cannot be trusted, if they cannot (taken: asked once).
    pub fn take_error(&self) -> Option<ShardError> {
        self.state().error.take()
    }

    /// The chunks held so far, as a part.
    pub fn part(&self) -> Part {
        self.state().part.clone()
    }

    /// The checkpoint file, if any.
    pub fn checkpoint(&self) -> Option<&Path> {
        self.0.checkpoint.as_deref()
    }

    /// Writes the checkpoint (atomically) if there is one and it has changed.
    pub fn save(&self) -> Result<(), ShardError> {
        let mut state = self.state();
        self.save_locked(&mut state)
    }

    fn save_locked(&self, state: &mut State) -> Result<(), ShardError> {
        let Some(path) = &self.0.checkpoint else {
            return Ok(());
        };
        if !state.dirty {
            return Ok(());
        }
        crate::output::write_atomic(path, state.part.to_json().as_bytes())
            .map_err(|e| ShardError::Run(format!("cannot write the checkpoint: {e}")))?;
        state.dirty = false;
        state.last_save = Instant::now();
        Ok(())
    }

    /// Saves the checkpoint if [`SAVE_EVERY`] has passed since the last save (a failure
    /// stops the run and is reported at its end).
    pub(crate) fn maybe_save(&self) {
        let mut state = self.state();
        if self.0.checkpoint.is_none() || state.last_save.elapsed() < SAVE_EVERY {
            return;
        }
        if let Err(e) = self.save_locked(&mut state) {
            state.error.get_or_insert(e);
        }
    }

    /// Records a failure that makes the chunks untrustworthy.
    pub(crate) fn fail(&self, error: ShardError) {
        self.state().error.get_or_insert(error);
    }

    /// An engine run of `chunks` chunks begins: its index, or `None` when it does not
    /// fit what the ledger holds (recorded as an error).
    pub(crate) fn begin(&self, chunks: u64) -> Option<usize> {
        let mut state = self.state();
        let r = state.begun;
        state.begun += 1;
        let mismatch = match state.part.runs.get(r) {
            Some(run) => run.chunks != chunks,
            None if self.0.mode == Mode::Replay => true,
            None => {
                state.part.runs.push(RunChunks {
                    chunks,
                    done: BTreeMap::new(),
                });
                state.dirty = true;
                false
            }
        };
        if mismatch {
            state.error.get_or_insert(ShardError::Input(format!(
                "engine run {} of this command has {chunks} chunks, which the parts or the checkpoint do not match: they are of another run",
                r + 1
            )));
            return None;
        }
        Some(r)
    }

    /// What to do with chunk `c` of engine run `r`.
    pub(crate) fn plan(&self, r: usize, c: u64) -> Plan {
        let state = self.state();
        let run = &state.part.runs[r];
        if run.done.contains_key(&c) {
            Plan::Stored
        } else if self.0.mode == Mode::Compute
            && state.error.is_none()
            && self.stopped().is_none()
            && state.part.shard.chunks(run.chunks).contains(&c)
        {
            Plan::Compute
        } else {
            Plan::Skip
        }
    }

    /// The stored summary of chunk `c` of engine run `r`.
    pub(crate) fn stored(&self, r: usize, c: u64) -> Option<Value> {
        let state = self.state();
        serde_json::from_str(state.part.runs[r].done.get(&c)?).ok()
    }

    /// Keeps the summary of chunk `c` of engine run `r`, just computed.
    pub(crate) fn record(&self, r: usize, c: u64, summary: Value) {
        let text = summary.to_string();
        let mut state = self.state();
        state.part.runs[r].done.insert(c, text);
        state.dirty = true;
    }

    /// Whether a stop was asked for.
    pub(crate) fn stop_requested(&self) -> bool {
        self.0.stop.load(Ordering::Relaxed) != 0
    }
}

/// `x` exactly, as its IEEE bits (NaN and infinities included).
pub(crate) fn bits(x: f64) -> Value {
    Value::from(x.to_bits())
}

/// The number [`bits`] wrote.
pub(crate) fn float(v: &Value) -> Option<f64> {
    v.as_u64().map(f64::from_bits)
}

/// An optional number: `null` or [`bits`].
pub(crate) fn opt_bits(x: Option<f64>) -> Value {
    x.map_or(Value::Null, bits)
}

/// The optional number [`opt_bits`] wrote (`Some(None)`: `null`).
pub(crate) fn opt_float(v: &Value) -> Option<Option<f64>> {
    if v.is_null() {
        Some(None)
    } else {
        float(v).map(Some)
    }
}

/// An object's field.
pub(crate) fn field<'v>(v: &'v Value, name: &str) -> Option<&'v Value> {
    v.as_object().and_then(|o: &Map<String, Value>| o.get(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> RunKey {
        RunKey {
            hasme: "0".into(),
            command: "simulate".into(),
            args: vec!["f.hasme".into()],
            digest: "sha256:0".into(),
        }
    }

    #[test]
    fn shard_ranges_tile_the_chunks() {
        for total in [0, 1, 5, 64, 1000] {
            for count in [1, 3, 7, 64] {
                let mut next = 0;
                for index in 0..count {
                    let r = Shard { index, count }.chunks(total);
                    assert_eq!(r.start, next);
                    next = r.end;
                    for c in r {
                        assert_eq!(Shard::owner(count, total, c), index);
                    }
                }
                assert_eq!(next, total);
            }
        }
    }

    #[test]
    fn parts_read_back_as_written() {
        let mut part = Part::new(key(), Shard { index: 1, count: 3 });
        part.runs.push(RunChunks {
            chunks: 9,
            done: [
                (3, json!({"x": bits(f64::NAN)}).to_string()),
                (4, "[1,2]".to_string()),
            ]
            .into(),
        });
        let back = Part::from_json(&part.to_json(), "p").unwrap();
        assert_eq!(back, part);
        assert!(!back.complete());
        assert!(Part::from_json("{}", "p").is_err());
    }

    #[test]
    fn replay_names_missing_and_duplicated_shards() {
        let part = |index: u64, chunks: &[u64]| {
            let mut p = Part::new(key(), Shard { index, count: 3 });
            p.runs.push(RunChunks {
                chunks: 6,
                done: chunks.iter().map(|&c| (c, c.to_string())).collect(),
            });
            p
        };
        let names: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
        let all = vec![part(0, &[0, 1]), part(1, &[2, 3]), part(2, &[4, 5])];
        assert!(Ledger::replay(all, &names).is_ok());
        let e = Ledger::replay(vec![part(0, &[0, 1]), part(2, &[4, 5])], &names)
            .unwrap_err()
            .to_string();
        assert!(e.contains("no part of shard 1/3"), "{e}");
        let e = Ledger::replay(vec![part(0, &[0, 1]), part(0, &[0, 1])], &names)
            .unwrap_err()
            .to_string();
        assert!(e.contains("both shard 0/3"), "{e}");
        let e = Ledger::replay(
            vec![part(0, &[0, 1]), part(1, &[2]), part(2, &[4, 5])],
            &names,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("shard 1/3 is incomplete"), "{e}");
    }
}
