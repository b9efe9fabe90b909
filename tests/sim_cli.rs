//! Command-line tests of `hasme simulate`: the JSON contract, exit statuses (0 ok,
//! 2 bad input, 1 failure while running), atomic `--out`, reproducibility across
//! thread counts.

use serde_json::Value;
use std::process::Output;

mod common;
use common::*;

/// A small run of the saddle example (η = 0.1, horizon 0.5, 300 paths) with extra
/// arguments, which may replace `--eta` or `--horizon`.
fn small(extra: &[&str]) -> Output {
    let mut args = vec![
        "simulate",
        "examples/saddle.hasme",
        "--paths",
        "300",
        "--quiet",
    ];
    for (flag, value) in [("--eta", "0.1"), ("--horizon", "0.5")] {
        if !extra.contains(&flag) {
            args.extend([flag, value]);
        }
    }
    args.extend(extra);
    hasme(&args)
}

#[test]
fn json_follows_the_contract() {
    let v = json(&small(&[
        "--json",
        "--models",
        "sme1,hasme",
        "--every",
        "2",
    ]));
    assert_eq!(v["times"], serde_json::json!([0.0, 0.2, 0.4, 0.5]));
    assert_eq!(v["paths"], 300);
    assert_eq!(v["seed"], 0);
    assert_eq!(v["horizon"], 0.5);
    assert_eq!(v["models"], serde_json::json!(["sme1", "hasme"]));
    for obs in ["dist2", "y2"] {
        let o = &v["observables"][obs];
        assert_eq!(
            o.as_object().unwrap().keys().collect::<Vec<_>>(),
            ["sgd", "sme1", "hasme"]
        );
        for (name, s) in o.as_object().unwrap() {
            for key in ["mean", "stderr", "variance"] {
                assert_eq!(s[key].as_array().unwrap().len(), 4, "{obs} {name} {key}");
            }
            let has_diff = s.get("diff_mean").is_some() && s.get("diff_stderr").is_some();
            assert_eq!(has_diff, name != "sgd", "{obs} {name}");
        }
    }
    assert_eq!(
        v["diverged"],
        serde_json::json!({"sgd": 0, "sme1": 0, "hasme": 0})
    );
    assert_eq!(v["pairs"]["hasme"], 300);
    assert_eq!(v["file"], "examples/saddle.hasme");
}

#[test]
fn default_observables_are_the_variables_and_norm2() {
    let dir = temp_dir("default-obs");
    let file = dir.join("plain.hasme");
    std::fs::write(
        &file,
        "var a = 1, b = 2\nminimize a^2 + b^2\nnoise sd 0.1\n",
    )
    .unwrap();
    let v = json(&hasme(&[
        "simulate",
        file.to_str().unwrap(),
        "--eta",
        "0.1",
        "--horizon",
        "0.2",
        "--paths",
        "10",
        "--json",
        "--models",
        "gf",
    ]));
    let names: Vec<&String> = v["observables"].as_object().unwrap().keys().collect();
    assert_eq!(names, ["a", "b", "norm2"]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn threads_do_not_change_the_output_and_seeds_do() {
    let one = small(&["--json", "--threads", "1", "--seed", "42"]);
    let two = small(&["--json", "--threads", "2", "--seed", "42"]);
    assert_eq!(json(&one), json(&two));
    assert_eq!(one.stdout, two.stdout);
    let other = small(&["--json", "--threads", "2", "--seed", "43"]);
    assert_ne!(json(&other)["observables"], json(&one)["observables"]);
}

#[test]
fn out_is_written_atomically_and_nothing_else_is_left() {
    let dir = temp_dir("out");
    let path = dir.join("result.json");
    let o = small(&["--json", "--out", path.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(o.stdout.is_empty());
    let text = std::fs::read_to_string(&path).unwrap();
    let v: Value = serde_json::from_str(&text).expect("the file is complete JSON");
    assert_eq!(v["paths"], 300);
    let entries: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(entries, ["result.json"], "temporary files left behind");
    // Text output goes to the file too; a second run replaces the first.
    let o = small(&["--out", path.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0));
    assert!(
        std::fs::read_to_string(&path)
            .unwrap()
            .contains("no path diverged")
    );
    let entries = std::fs::read_dir(&dir).unwrap().count();
    assert_eq!(entries, 1);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_missing_output_directory_fails_before_the_run() {
    let o = small(&["--out", "/nonexistent-hasme-dir/result.json"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("does not exist"), "{}", stderr(&o));
}

#[test]
fn bad_arguments_exit_2_with_a_message() {
    let cases: [(&[&str], &str); 11] = [
        (&["--eta", "-1"], "η must be"),
        (&["--eta", "0"], "η must be"),
        (&["--horizon", "0.55"], "not a multiple of η"),
        (&["--paths", "0"], "paths"),
        (&["--models", "sme3"], "unknown model"),
        (&["--scheme", "rk4"], "unknown scheme"),
        (&["--coupling", "loose"], "unknown coupling"),
        (&["--threads", "0"], "threads"),
        (&["--every", "0"], "--every"),
        (&["--substeps", "0"], "substeps"),
        (&["--set", "nosuch=1"], "nosuch"),
    ];
    for (extra, message) in cases {
        let o = small(extra);
        assert_eq!(o.status.code(), Some(2), "{extra:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(message), "{extra:?}: {}", stderr(&o));
    }
    let o = hasme(&["simulate", "examples/saddle.hasme", "--horizon", "1"]);
    assert_eq!(o.status.code(), Some(2), "missing --eta");
    let o = hasme(&[
        "simulate",
        "no/such/file.hasme",
        "--eta",
        "0.1",
        "--horizon",
        "1",
    ]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn a_covariance_that_fails_on_the_way_exits_1_naming_the_point() {
    let dir = temp_dir("bad-cov");
    let file = dir.join("bad.hasme");
    std::fs::write(&file, "var x = 0\nminimize -x\nnoise diag [1 - x]\n").unwrap();
    let o = hasme(&[
        "simulate",
        file.to_str().unwrap(),
        "--eta",
        "0.1",
        "--horizon",
        "3",
        "--paths",
        "5",
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(e.contains("path 0, step") && e.contains("x = 1."), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn divergences_are_reported_in_text_and_on_stderr_with_json() {
    let dir = temp_dir("diverge");
    let file = dir.join("steep.hasme");
    std::fs::write(&file, "var x = 1\nminimize 2*x^2\nnoise sd 0.1\n").unwrap();
    let args = |json: bool| {
        let mut a = vec![
            "simulate",
            file.to_str().unwrap(),
            "--eta",
            "0.3",
            "--horizon",
            "0.9",
            "--paths",
            "20",
            "--models",
            "hasme",
        ];
        if json {
            a.push("--json");
        }
        hasme(&a)
    };
    let text = args(false);
    assert_eq!(text.status.code(), Some(0));
    let out = String::from_utf8_lossy(&text.stdout);
    assert!(
        out.contains("hasme: 20 of 20; first on path 0, step 0"),
        "{out}"
    );
    let j = args(true);
    let v = json(&j);
    assert_eq!(v["diverged"]["hasme"], 20);
    assert!(v["observables"]["x"]["hasme"]["mean"][3].is_null());
    assert_eq!(v["first_divergence"]["hasme"]["step"], 0);
    assert!(
        stderr(&j).contains("hasme diverged on 20 of 20 paths"),
        "{}",
        stderr(&j)
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
