//! Command-line tests of shards, merges and checkpoints: `--shard K/N` parts of
//! `simulate`, `weak-order` (integration check on) and `escape` merged by `hasme merge`
//! print the single run's bytes, text and JSON; parts that are missing, duplicated or of
//! another run are refused with exit status 2; a run stopped by SIGINT or SIGTERM and
//! resumed from its `--checkpoint` prints the uninterrupted run's bytes.
//!
//! Sizes: 2000 paths are 8 chunks of 256, so 7 shards each hold one or two chunks and
//! 3 shards two or three; the runs take tens of milliseconds.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::*;

/// Runs `hasme ARGS…` in `dir`.
fn hasme_in(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hasme"))
        .args(args)
        .current_dir(dir)
        .output()
        .expect("the hasme binary runs")
}

/// A directory holding a copy of the example `name`.
fn with_example(test: &str, name: &str) -> std::path::PathBuf {
    let dir = temp_dir(test);
    let from = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples")
        .join(name);
    std::fs::copy(from, dir.join(name)).expect("example copied");
    dir
}

fn ok(o: &Output) -> &Output {
    assert_eq!(o.status.code(), Some(0), "stderr: {}", stderr(o));
    o
}

/// The single run's text and JSON equal those of `hasme merge` over `n` shards, for
/// every `n` in 1, 3 and 7. The single run uses two threads, the shards one: neither
/// reaches the numbers.
fn shards_merge_to_the_single_run(test: &str, dir: &Path, run: &[&str]) {
    let single = |json: bool| {
        let mut args = run.to_vec();
        args.extend(["--threads", "2", "--quiet"]);
        if json {
            args.push("--json");
        }
        ok(&hasme_in(dir, &args)).stdout.clone()
    };
    let (text, json) = (single(false), single(true));
    for n in [1, 3, 7] {
        let mut parts = Vec::new();
        for k in 0..n {
            let shard = format!("{k}/{n}");
            let part = format!("part-{n}-{k}.json");
            let mut args = run.to_vec();
            args.extend([
                "--threads",
                "1",
                "--quiet",
                "--shard",
                &shard,
                "--out",
                &part,
            ]);
            ok(&hasme_in(dir, &args));
            parts.push(part);
        }
        // Merged in another order than computed: the order of the parts does not matter.
        parts.reverse();
        let merge = |extra: &[&str]| {
            let mut args = vec!["merge"];
            args.extend(parts.iter().map(String::as_str));
            args.extend(extra);
            ok(&hasme_in(dir, &args)).stdout.clone()
        };
        assert!(merge(&[]) == text, "{test}: {n} shards, text differs");
        assert!(
            merge(&["--json"]) == json,
            "{test}: {n} shards, JSON differs"
        );
        // --out: the same bytes in a file.
        merge(&["--json", "--out", "merged.json"]);
        assert!(std::fs::read(dir.join("merged.json")).unwrap() == json);
    }
}

const SIMULATE: &[&str] = &[
    "simulate",
    "cosine.hasme",
    "--eta",
    "0.1",
    "--horizon",
    "0.5",
    "--paths",
    "2000",
    "--seed",
    "7",
];

/// [`SIMULATE`] with another seed.
fn seed8() -> Vec<&'static str> {
    SIMULATE
        .iter()
        .map(|&a| if a == "7" { "8" } else { a })
        .collect()
}

#[test]
fn simulate_shards_merge_to_the_single_run() {
    let dir = with_example("shards-simulate", "cosine.hasme");
    shards_merge_to_the_single_run("simulate", &dir, SIMULATE);
}

#[test]
fn diverging_runs_merge_to_the_single_run() {
    // SGD on x⁴ at η = 0.3 blows up on some paths: the first divergence (its path,
    // step, reason and a point with huge coordinates) travels through the parts.
    let dir = temp_dir("shards-diverging");
    std::fs::write(
        dir.join("quartic.hasme"),
        "var x = 1\nminimize x^4\nnoise sd 1\n",
    )
    .unwrap();
    let run = [
        "simulate",
        "quartic.hasme",
        "--eta",
        "0.3",
        "--horizon",
        "3",
        "--paths",
        "2000",
        "--models",
        "sme1,hasme",
    ];
    let o = ok(&hasme_in(
        &dir,
        &[&run[..], &["--json", "--quiet"]].concat(),
    ))
    .clone();
    assert!(json_unchecked(&o)["diverged"]["sgd"].as_u64().unwrap() > 0);
    shards_merge_to_the_single_run("diverging", &dir, &run);
}

#[test]
fn weak_order_shards_merge_to_the_single_run() {
    // The integration check is on (the default): every η runs twice, the check run
    // pairing its paths with the main run's kept values.
    let dir = with_example("shards-weak-order", "cosine.hasme");
    shards_merge_to_the_single_run(
        "weak-order",
        &dir,
        &[
            "weak-order",
            "cosine.hasme",
            "--etas",
            "0.2,0.1",
            "--horizon",
            "0.4",
            "--paths",
            "2000",
            "--models",
            "sme1,hasme",
        ],
    );
}

#[test]
fn escape_shards_merge_to_the_single_run() {
    let dir = with_example("shards-escape", "report.hasme");
    shards_merge_to_the_single_run(
        "escape",
        &dir,
        &[
            "escape",
            "report.hasme",
            "--eta",
            "0.1",
            "--paths",
            "2000",
            "--max-steps",
            "200",
            "--models",
            "sme1,hasme",
            "--substeps",
            "4",
        ],
    );
}

/// Shard `k` of 3 of `run`, written to `out` in `dir`.
fn shard(dir: &Path, k: u64, run: &[&str], out: &str) {
    let shard = format!("{k}/3");
    let mut args = run.to_vec();
    args.extend(["--quiet", "--shard", &shard, "--out", out]);
    ok(&hasme_in(dir, &args));
}

fn refused(o: &Output, words: &str) {
    assert_eq!(o.status.code(), Some(2), "stderr: {}", stderr(o));
    assert!(stderr(o).contains(words), "{words:?} not in: {}", stderr(o));
    assert!(o.stdout.is_empty(), "nothing printed");
}

#[test]
fn bad_parts_are_refused_with_what_is_wrong() {
    let dir = with_example("shards-bad", "cosine.hasme");
    for k in 0..3 {
        shard(&dir, k, SIMULATE, &format!("p{k}.json"));
    }
    ok(&hasme_in(&dir, &["merge", "p0.json", "p1.json", "p2.json"]));
    // A missing shard is named, with how to make it.
    refused(
        &hasme_in(&dir, &["merge", "p0.json", "p2.json"]),
        "no part of shard 1/3 was given",
    );
    // A shard given twice (even under two names).
    std::fs::copy(dir.join("p1.json"), dir.join("copy.json")).unwrap();
    refused(
        &hasme_in(
            &dir,
            &["merge", "p0.json", "p1.json", "copy.json", "p2.json"],
        ),
        "`p1.json` and `copy.json` are both shard 1/3",
    );
    // A part of another seed.
    shard(&dir, 1, &seed8(), "seed8.json");
    refused(
        &hasme_in(&dir, &["merge", "p0.json", "seed8.json", "p2.json"]),
        "`seed8.json` is a part of another run than `p0.json`: it is with other settings",
    );
    // A part of another version of the objective file.
    let file = dir.join("cosine.hasme");
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, format!("{text}\n# edited\n")).unwrap();
    shard(&dir, 2, SIMULATE, "edited.json");
    refused(
        &hasme_in(&dir, &["merge", "p0.json", "p1.json", "edited.json"]),
        "another version of the objective file",
    );
    // Parts that agree with each other but not with the file as it is now.
    refused(
        &hasme_in(&dir, &["merge", "p0.json", "p1.json", "p2.json"]),
        "has changed since the parts were computed",
    );
    // Not a part at all; a part of another shard count.
    refused(
        &hasme_in(&dir, &["merge", "cosine.hasme"]),
        "`cosine.hasme` is not a hasme part",
    );
    std::fs::write(&file, &text).unwrap();
    let mut args = SIMULATE.to_vec();
    args.extend(["--quiet", "--shard", "1/2", "--out", "half.json"]);
    ok(&hasme_in(&dir, &args));
    refused(
        &hasme_in(&dir, &["merge", "p0.json", "half.json"]),
        "the parts of a run have one shard count",
    );
    // Bad shards.
    for bad in ["3/3", "1", "a/2", "0/0"] {
        let mut args = SIMULATE.to_vec();
        args.extend(["--quiet", "--shard", bad]);
        refused(&hasme_in(&dir, &args), "expected K/N with 0 ≤ K < N");
    }
}

/// A run long enough to be stopped part-way (about a second on one thread).
const LONG: &[&str] = &[
    "simulate",
    "cosine.hasme",
    "--eta",
    "0.1",
    "--horizon",
    "2",
    "--paths",
    "40000",
    "--threads",
    "1",
    "--quiet",
];

/// Starts [`LONG`] with a checkpoint, sends `signal` after 300 ms, and checks the
/// stop: exit status 128 + signal, a message on how to resume, an incomplete
/// checkpoint and no temporary file. Then resumes it and returns the output.
fn stop_and_resume(dir: &Path, signal: i32, name: &str) -> Vec<u8> {
    let mut args = LONG.to_vec();
    args.extend(["--checkpoint", "ck.json"]);
    let child = Command::new(env!("CARGO_BIN_EXE_hasme"))
        .args(&args)
        .current_dir(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the hasme binary starts");
    let start = Instant::now();
    std::thread::sleep(Duration::from_millis(300));
    // SAFETY: kill(2) on the child's own pid, which has not been waited for yet.
    assert_eq!(unsafe { libc::kill(child.id() as i32, signal) }, 0);
    let out = child.wait_with_output().expect("the child ends");
    assert_eq!(
        out.status.code(),
        Some(128 + signal),
        "stopped by {name} ({:?} after the start); stderr: {}",
        start.elapsed(),
        stderr(&out)
    );
    assert!(out.stdout.is_empty(), "no report from a stopped run");
    let msg = stderr(&out);
    assert!(msg.contains(&format!("interrupted by {name}")), "{msg}");
    assert!(
        msg.contains("run the same command again to resume"),
        "{msg}"
    );
    let files: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let mut sorted = files.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        ["ck.json", "cosine.hasme"],
        "no temporary file left"
    );
    let ck: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("ck.json")).unwrap()).unwrap();
    assert_eq!(ck["complete"], false);
    let resumed = ok(&hasme_in(dir, &args)).stdout.clone();
    let ck: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("ck.json")).unwrap()).unwrap();
    assert_eq!(ck["complete"], true);
    resumed
}

#[test]
fn stopped_runs_resume_to_the_uninterrupted_output() {
    let whole = {
        let dir = with_example("shards-whole", "cosine.hasme");
        ok(&hasme_in(&dir, LONG)).stdout.clone()
    };
    for (signal, name) in [(libc::SIGINT, "SIGINT"), (libc::SIGTERM, "SIGTERM")] {
        let dir = with_example(&format!("shards-{name}"), "cosine.hasme");
        let resumed = stop_and_resume(&dir, signal, name);
        assert!(resumed == whole, "resumed after {name}: the output differs");
    }
}

#[test]
fn checkpoints_resume_only_their_own_run() {
    let dir = with_example("shards-checkpoint", "cosine.hasme");
    let mut args = SIMULATE.to_vec();
    args.extend(["--quiet", "--checkpoint", "ck.json"]);
    let first = ok(&hasme_in(&dir, &args)).stdout.clone();
    // Complete: run again, it replays every chunk.
    assert!(ok(&hasme_in(&dir, &args)).stdout == first);
    // JSON and --threads do not change the run.
    let mut json = args.clone();
    json.extend(["--json", "--threads", "2"]);
    let v = json_unchecked(ok(&hasme_in(&dir, &json)));
    assert_eq!(v["paths"], 2000);
    // Another seed, another shard, another file: refused, the checkpoint untouched.
    let saved = std::fs::read(dir.join("ck.json")).unwrap();
    let mut other = seed8();
    other.extend(["--quiet", "--checkpoint", "ck.json"]);
    refused(
        &hasme_in(&dir, &other),
        "`ck.json` is a checkpoint of another run: it is with other settings",
    );
    let mut sharded = args.clone();
    sharded.extend(["--shard", "0/2"]);
    refused(&hasme_in(&dir, &sharded), "of shard 0/1 instead of 0/2");
    std::fs::write(
        dir.join("cosine.hasme"),
        "var x = 1\nminimize x^2\nnoise sd 0.1\n",
    )
    .unwrap();
    refused(
        &hasme_in(&dir, &args),
        "another version of the objective file",
    );
    assert!(std::fs::read(dir.join("ck.json")).unwrap() == saved);
}

#[test]
fn a_complete_checkpoint_is_a_part() {
    let dir = with_example("shards-ck-part", "cosine.hasme");
    let mut args = SIMULATE.to_vec();
    args.extend(["--quiet", "--json", "--checkpoint", "ck.json"]);
    let whole = ok(&hasme_in(&dir, &args)).stdout.clone();
    assert!(ok(&hasme_in(&dir, &["merge", "ck.json", "--json"])).stdout == whole);
}

/// Matrix-free runs: a finite sum on the factor of Σ (its noise n-dimensional), with
/// the Lanczos tally of each chunk travelling through the parts (the merged report's
/// `lanczos_steps` are the single run's).
#[test]
fn matrix_free_shards_merge_to_the_single_run() {
    let dir = with_example("shards-krylov", "finite_sum.hasme");
    let common = [
        "--models",
        "sme2,hasme",
        "--linear-algebra",
        "krylov",
        "--sgd-noise",
        "gaussian",
        "--paths",
        "600",
        "--seed",
        "3",
    ];
    let mut simulate = vec![
        "simulate",
        "finite_sum.hasme",
        "--eta",
        "0.2",
        "--horizon",
        "0.4",
    ];
    simulate.extend(common);
    shards_merge_to_the_single_run("simulate krylov", &dir, &simulate);
    let mut weak = vec![
        "weak-order",
        "finite_sum.hasme",
        "--etas",
        "0.2,0.1",
        "--horizon",
        "0.4",
    ];
    weak.extend(common);
    shards_merge_to_the_single_run("weak-order krylov", &dir, &weak);
}
