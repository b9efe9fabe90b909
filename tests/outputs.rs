//! Output files never damage what is there (docs/commands.md, "Output files"): a link
//! is written through and stays a link, a FIFO or socket is written as it is and stays
//! one, `-` is standard output (one output at most), a regular file is replaced
//! atomically with its permission bits, bad paths exit 2 before the run, failed writes
//! exit 1, and no temporary file is ever left behind. Everything happens in a fresh
//! temporary directory; `/dev` only through the test's own standard output.
#![cfg(unix)]

use std::fs;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Output;

mod common;
use common::*;

/// A small simulation of the cosine example as JSON, with extra arguments, which may
/// replace `--horizon` or `--paths`.
fn simulate(extra: &[&str]) -> Output {
    let mut args = vec![
        "simulate",
        "examples/cosine.hasme",
        "--eta",
        "0.1",
        "--models",
        "sme1,hasme",
        "--json",
        "--quiet",
    ];
    for (flag, value) in [("--horizon", "1"), ("--paths", "200")] {
        if !extra.contains(&flag) {
            args.extend([flag, value]);
        }
    }
    args.extend(extra);
    hasme(&args)
}

/// What `simulate` prints without `--out`: the bytes every file target must hold.
fn printed() -> Vec<u8> {
    let o = simulate(&[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(!o.stdout.is_empty());
    o.stdout
}

fn simulate_to(path: &Path) -> Output {
    simulate(&["--out", path.to_str().expect("UTF-8 path")])
}

/// The names in `dir`, sorted; a temporary file would show up here.
fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .expect("readable")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn no_temporaries(dir: &Path) {
    let names = entries(dir);
    assert!(
        names.iter().all(|n| !n.ends_with(".tmp")),
        "temporary file left in {}: {names:?}",
        dir.display()
    );
}

fn is_link(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink())
}

fn mkfifo(path: &Path) {
    let name = std::ffi::CString::new(path.to_str().expect("UTF-8 path")).expect("no NUL");
    // SAFETY: a valid NUL-terminated path; mkfifo only creates a node.
    let r = unsafe { libc::mkfifo(name.as_ptr(), 0o600) };
    assert_eq!(r, 0, "mkfifo {}", path.display());
}

fn is_fifo(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_fifo())
}

/// Lets a reader still waiting in `open` go (with end of file), should the command have
/// failed before opening the FIFO: a non-blocking open for writing succeeds only when a
/// reader waits, and fails at once otherwise.
fn release_reader(fifo: &Path) {
    let _ = fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(fifo);
}

#[test]
fn a_link_is_written_through_and_stays_a_link() {
    let expected = printed();
    let dir = temp_dir("outputs-link");
    let elsewhere = temp_dir("outputs-link-target");
    let target = elsewhere.join("r.json");
    fs::write(&target, "old contents\n").unwrap();
    let link = dir.join("link.json");
    symlink(&target, &link).unwrap();
    let o = simulate_to(&link);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(o.stdout.is_empty());
    assert!(is_link(&link), "the link was replaced");
    assert_eq!(fs::read_link(&link).unwrap(), target);
    assert_eq!(fs::read(&target).unwrap(), expected);
    assert_eq!(entries(&dir), ["link.json"]);
    assert_eq!(entries(&elsewhere), ["r.json"]);
}

#[test]
fn chains_of_links_and_relative_links_reach_the_file() {
    // dir/first -> second (relative), dir/second -> out/r.json (relative to dir): a
    // chain of two links; the file is dir/out/r.json.
    let expected = printed();
    let dir = temp_dir("outputs-chain");
    fs::create_dir(dir.join("out")).unwrap();
    symlink("second", dir.join("first")).unwrap();
    symlink("out/r.json", dir.join("second")).unwrap();
    fs::write(dir.join("out/r.json"), "old").unwrap();
    let o = simulate_to(&dir.join("first"));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(fs::read(dir.join("out/r.json")).unwrap(), expected);
    assert!(is_link(&dir.join("first")) && is_link(&dir.join("second")));
    assert_eq!(entries(&dir), ["first", "out", "second"]);
    assert_eq!(entries(&dir.join("out")), ["r.json"]);

    // A relative link read against its own directory, not the working directory (the
    // command runs in the crate root).
    let sub = dir.join("sub");
    fs::create_dir(&sub).unwrap();
    symlink("../out/r.json", sub.join("up.json")).unwrap();
    fs::write(dir.join("out/r.json"), "old").unwrap();
    let o = simulate_to(&sub.join("up.json"));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(fs::read(dir.join("out/r.json")).unwrap(), expected);
    assert!(is_link(&sub.join("up.json")));
    assert_eq!(entries(&sub), ["up.json"]);
    assert_eq!(entries(&dir.join("out")), ["r.json"]);
}

#[test]
fn a_dangling_link_creates_its_target() {
    let expected = printed();
    let dir = temp_dir("outputs-dangling");
    symlink("made.json", dir.join("link.json")).unwrap();
    let o = simulate_to(&dir.join("link.json"));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(is_link(&dir.join("link.json")));
    assert_eq!(fs::read(dir.join("made.json")).unwrap(), expected);
    assert_eq!(entries(&dir), ["link.json", "made.json"]);
}

#[test]
fn a_fifo_is_written_as_it_is_and_stays_a_fifo() {
    let expected = printed();
    let dir = temp_dir("outputs-fifo");
    let fifo = dir.join("pipe");
    mkfifo(&fifo);
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || fs::read(fifo).expect("read the FIFO"))
    };
    let o = simulate_to(&fifo);
    release_reader(&fifo);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(reader.join().expect("reader"), expected);
    assert!(is_fifo(&fifo), "the FIFO was replaced");
    assert_eq!(entries(&dir), ["pipe"]);
}

#[test]
fn a_fifo_whose_reader_leaves_is_a_run_failure_that_leaves_nothing() {
    // The reader opens the FIFO and closes it at once. The output (1000 saved steps of
    // three processes, about 430 kB of JSON) is larger than a pipe holds (64 KiB unless
    // resized), so whichever comes first the write meets a closed pipe: EPIPE, exit 1.
    let dir = temp_dir("outputs-epipe");
    let fifo = dir.join("pipe");
    mkfifo(&fifo);
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || drop(fs::File::open(fifo).expect("open the FIFO")))
    };
    let path = fifo.to_str().unwrap();
    let o = simulate(&["--horizon", "100", "--paths", "10", "--out", path]);
    release_reader(&fifo);
    reader.join().expect("reader");
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("cannot write"), "{}", stderr(&o));
    assert!(
        stderr(&o).to_lowercase().contains("broken pipe"),
        "{}",
        stderr(&o)
    );
    assert!(o.stdout.is_empty());
    assert!(is_fifo(&fifo));
    assert_eq!(entries(&dir), ["pipe"]);
}

#[test]
fn a_socket_refuses_the_write_as_a_run_failure_and_stays_a_socket() {
    let dir = temp_dir("outputs-socket");
    let path = dir.join("sock");
    let _listener = std::os::unix::net::UnixListener::bind(&path).expect("bind");
    let o = simulate_to(&path);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("cannot write"), "{}", stderr(&o));
    assert!(fs::symlink_metadata(&path).unwrap().file_type().is_socket());
    assert_eq!(entries(&dir), ["sock"]);
}

#[test]
fn dash_and_dev_stdout_are_standard_output() {
    let expected = printed();
    let o = simulate(&["--out", "-"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(o.stdout, expected);
    // The command's standard output is the test's pipe: written directly, as it is.
    if Path::new("/dev/stdout").exists() {
        let o = simulate(&["--out", "/dev/stdout"]);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        assert_eq!(o.stdout, expected);
    }
    // Text too, and with its stderr unchanged: `--out -` is the same as no `--out`.
    let text = |extra: &[&str]| {
        let mut args = vec![
            "simulate",
            "examples/cosine.hasme",
            "--eta",
            "0.1",
            "--horizon",
            "1",
            "--paths",
            "100",
            "--quiet",
        ];
        args.extend(extra);
        hasme(&args)
    };
    let (a, b) = (text(&[]), text(&["--out", "-"]));
    assert_eq!(a.status.code(), Some(0));
    assert_eq!((a.stdout, a.stderr), (b.stdout, b.stderr));
}

#[test]
fn standard_output_carries_one_output() {
    let dir = temp_dir("outputs-dash");
    let weak = |extra: &[&str]| {
        let mut args = vec![
            "weak-order",
            "examples/cosine.hasme",
            "--etas",
            "0.2,0.1",
            "--horizon",
            "0.4",
            "--paths",
            "200",
            "--models",
            "sme1",
            "--no-integration-check",
            "--quiet",
        ];
        args.extend(extra);
        hasme(&args)
    };
    // The plot on stdout while the report goes to a file: the same SVG as a plot file.
    let report = dir.join("weak.txt");
    let plot = dir.join("weak.svg");
    let to_files = weak(&[
        "--out",
        report.to_str().unwrap(),
        "--plot",
        plot.to_str().unwrap(),
    ]);
    assert_eq!(to_files.status.code(), Some(0), "{}", stderr(&to_files));
    let report_text = fs::read(&report).unwrap();
    let o = weak(&["--out", report.to_str().unwrap(), "--plot", "-"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(o.stdout, fs::read(&plot).unwrap());
    assert_eq!(fs::read(&report).unwrap(), report_text);

    // Two outputs on stdout is bad input, found before the run.
    for args in [
        vec!["--plot", "-"],
        vec!["--plot", "-", "--out", "-"],
        vec!["--plot", "-", "--json"],
    ] {
        let o = weak(&args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains("standard output"), "{}", stderr(&o));
        assert!(o.stdout.is_empty());
    }
    // moments always prints its comparison, so its files cannot be `-`.
    for flag in ["--csv", "--plot"] {
        let o = hasme(&[
            "moments",
            "examples/quadratic.hasme",
            "--eta",
            "0.1",
            "--steps",
            "10",
            flag,
            "-",
        ]);
        assert_eq!(o.status.code(), Some(2), "{flag}: {}", stderr(&o));
        assert!(o.stdout.is_empty());
    }
    // A report is a directory of files.
    let o = hasme(&["report", "--quick", "--quiet", "--out", "-"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(!Path::new(env!("CARGO_MANIFEST_DIR")).join("-").exists());
    assert_eq!(entries(&dir), ["weak.svg", "weak.txt"]);
}

#[test]
fn a_regular_file_is_replaced_with_its_permission_bits() {
    let expected = printed();
    let dir = temp_dir("outputs-mode");
    let path = dir.join("private.json");
    fs::write(&path, "old").unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
    let o = simulate_to(&path);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(fs::read(&path).unwrap(), expected);
    let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o600, "{mode:o}");
    assert_eq!(entries(&dir), ["private.json"]);
}

#[test]
fn bad_targets_exit_2_before_the_run_and_create_nothing() {
    let dir = temp_dir("outputs-bad");
    fs::create_dir(dir.join("sub")).unwrap();
    symlink("sub", dir.join("to-sub")).unwrap();
    symlink("missing/r.json", dir.join("lost.json")).unwrap();
    symlink("missing/r.svg", dir.join("lost.svg")).unwrap();
    symlink("loop-b", dir.join("loop-a")).unwrap();
    symlink("loop-a", dir.join("loop-b")).unwrap();
    let cases: [(PathBuf, &str); 5] = [
        (dir.join("sub"), "directory"),
        (dir.join("to-sub"), "directory"),
        (dir.join("missing/r.json"), "does not exist"),
        (dir.join("lost.json"), "does not exist"),
        (dir.join("loop-a"), "loop"),
    ];
    // 10⁸ paths would run for minutes: an answer means the path was checked first.
    for (path, says) in &cases {
        let o = simulate(&["--paths", "100000000", "--out", path.to_str().unwrap()]);
        assert_eq!(
            o.status.code(),
            Some(2),
            "{}: {}",
            path.display(),
            stderr(&o)
        );
        assert!(
            stderr(&o).contains(says),
            "{}: {}",
            path.display(),
            stderr(&o)
        );
    }
    // The same checks for --csv and --plot.
    for (flag, link) in [("--csv", "lost.json"), ("--plot", "lost.svg")] {
        let o = hasme(&[
            "moments",
            "examples/quadratic.hasme",
            "--eta",
            "0.1",
            "--steps",
            "10",
            flag,
            dir.join(link).to_str().unwrap(),
        ]);
        assert_eq!(o.status.code(), Some(2), "{flag}: {}", stderr(&o));
        assert!(stderr(&o).contains("does not exist"), "{}", stderr(&o));
    }
    assert_eq!(
        entries(&dir),
        ["loop-a", "loop-b", "lost.json", "lost.svg", "sub", "to-sub"]
    );
    assert!(entries(&dir.join("sub")).is_empty());
}

#[test]
fn csv_plot_and_report_files_follow_the_same_rules() {
    // moments' CSV through a link, its plot into a FIFO; the report's parts through a
    // link out of its directory.
    let dir = temp_dir("outputs-others");
    let table = dir.join("table.csv");
    symlink("table.csv", dir.join("csv-link")).unwrap();
    let fifo = dir.join("plot.svg");
    mkfifo(&fifo);
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || fs::read(fifo).expect("read the FIFO"))
    };
    let o = hasme(&[
        "moments",
        "examples/quadratic.hasme",
        "--eta",
        "0.1",
        "--steps",
        "10",
        "--csv",
        dir.join("csv-link").to_str().unwrap(),
        "--plot",
        fifo.to_str().unwrap(),
    ]);
    release_reader(&fifo);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let svg = reader.join().expect("reader");
    assert!(String::from_utf8_lossy(&svg).contains("<svg"));
    assert!(fs::read_to_string(&table).unwrap().starts_with("step,"));
    assert!(is_link(&dir.join("csv-link")) && is_fifo(&fifo));
    assert_eq!(entries(&dir), ["csv-link", "plot.svg", "table.csv"]);

    let out = dir.join("report");
    fs::create_dir(&out).unwrap();
    symlink("../check-kept.json", out.join("check.json")).unwrap();
    let o = hasme(&[
        "report",
        "--quick",
        "--quiet",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(is_link(&out.join("check.json")));
    let kept = fs::read_to_string(dir.join("check-kept.json")).unwrap();
    assert!(kept.contains("\"variables\""), "{kept}");
    no_temporaries(&out);
    no_temporaries(&dir);
}
