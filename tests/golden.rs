//! Golden outputs: every command on the bundled examples, byte for byte.
//!
//! `tests/golden/cases.txt` lists the cases (`NAME: ARGS`). Each case's standard output
//! must equal `tests/golden/NAME.out` exactly; a case that exits non-zero also keeps its
//! exit status and standard error in `NAME.err` (`exit N` on the first line). A `report`
//! case (NAME ending in `.report`) writes its directory and every JSON part is compared
//! with `tests/golden/NAME/PART.json`. The files were captured before the engine and
//! problem refactors and stay fixed: a refactor changes no number. To record a deliberate
//! change of output, run `HASME_BLESS=1 cargo test --release --test golden` and say why
//! in the commit.

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn golden_dir() -> PathBuf {
    root().join("tests/golden")
}

fn cases() -> Vec<(String, Vec<String>)> {
    let text = std::fs::read_to_string(golden_dir().join("cases.txt")).expect("cases.txt");
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (name, args) = l.split_once(':').expect("NAME: ARGS");
            let args = args.split_whitespace().map(str::to_owned).collect();
            (name.trim().to_owned(), args)
        })
        .collect()
}

fn bless() -> bool {
    std::env::var_os("HASME_BLESS").is_some()
}

/// Compares `actual` with the golden file at `path` (or writes it when blessing);
/// returns a description of the mismatch.
fn compare(path: &Path, actual: &[u8]) -> Option<String> {
    if bless() {
        std::fs::create_dir_all(path.parent().expect("parent")).expect("golden dir");
        std::fs::write(path, actual).expect("write golden");
        return None;
    }
    let expected = match std::fs::read(path) {
        Ok(e) => e,
        Err(e) => return Some(format!("{}: {e}", path.display())),
    };
    if expected == actual {
        return None;
    }
    let (e, a) = (
        String::from_utf8_lossy(&expected),
        String::from_utf8_lossy(actual),
    );
    let line = e
        .lines()
        .zip(a.lines())
        .position(|(x, y)| x != y)
        .unwrap_or_else(|| e.lines().count().min(a.lines().count()));
    Some(format!(
        "{}: differs at line {}\n  expected: {:?}\n  actual:   {:?}",
        path.display(),
        line + 1,
        e.lines().nth(line).unwrap_or("<end>"),
        a.lines().nth(line).unwrap_or("<end>")
    ))
}

fn run_case(name: &str, args: &[String]) -> Vec<String> {
    let mut failures = Vec::new();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hasme"));
    cmd.args(args).current_dir(root());
    if let Some(stem) = name.strip_suffix(".report") {
        let out = std::env::temp_dir().join(format!("hasme-golden-{}-{stem}", std::process::id()));
        let _ = std::fs::remove_dir_all(&out);
        let o = cmd.arg("--out").arg(&out).output().expect("hasme runs");
        if o.status.code() != Some(0) {
            return vec![format!(
                "{name}: exit {:?}: {}",
                o.status.code(),
                String::from_utf8_lossy(&o.stderr)
            )];
        }
        let mut parts: Vec<_> = std::fs::read_dir(&out)
            .expect("report directory")
            .map(|e| e.expect("entry").path())
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        parts.sort();
        let golden = golden_dir().join(name);
        if !bless() {
            let mut expected: Vec<_> = std::fs::read_dir(&golden)
                .map(|d| d.map(|e| e.expect("entry").file_name()).collect())
                .unwrap_or_default();
            expected.sort();
            let actual: Vec<_> = parts
                .iter()
                .map(|p| p.file_name().expect("name").to_owned())
                .collect();
            if expected != actual {
                failures.push(format!("{name}: parts {actual:?}, expected {expected:?}"));
            }
        }
        for part in &parts {
            let bytes = std::fs::read(part).expect("part");
            failures.extend(compare(
                &golden.join(part.file_name().expect("name")),
                &bytes,
            ));
        }
        let _ = std::fs::remove_dir_all(&out);
        return failures;
    }
    let o = cmd.output().expect("hasme runs");
    failures.extend(compare(
        &golden_dir().join(format!("{name}.out")),
        &o.stdout,
    ));
    let err_path = golden_dir().join(format!("{name}.err"));
    match o.status.code() {
        Some(0) => {
            if err_path.exists() && !bless() {
                failures.push(format!("{name}: exit 0, expected a failure"));
            }
        }
        code => {
            let mut err = format!("exit {}\n", code.unwrap_or(-1)).into_bytes();
            err.extend_from_slice(&o.stderr);
            failures.extend(compare(&err_path, &err));
        }
    }
    failures
}

#[test]
fn every_command_gives_its_golden_output() {
    let cases = cases();
    assert!(cases.len() >= 30, "the manifest lists every command");
    let failures: Vec<String> = cases.iter().flat_map(|(n, a)| run_case(n, a)).collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
