//! Command-line tests of `hasme weak-order`: the JSON contract, exit statuses (0 ok,
//! 2 bad input), the plot written atomically, text output.

use serde_json::Value;
use std::process::Output;

mod common;
use common::*;

/// A small run on the cosine example (η = 0.2, 0.1; 400 paths), plus extra arguments.
fn small(extra: &[&str]) -> Output {
    let mut args = vec![
        "weak-order",
        "examples/cosine.hasme",
        "--etas",
        "0.2,0.1",
        "--horizon",
        "1",
        "--paths",
        "400",
        "--models",
        "sme1,hasme",
        "--quiet",
    ];
    args.extend_from_slice(extra);
    hasme(&args)
}

#[test]
fn json_contract() {
    let o = small(&["--json", "--seed", "4"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let v: Value = serde_json::from_slice(&o.stdout).expect("JSON");
    for key in [
        "file",
        "etas",
        "horizon",
        "paths",
        "seed",
        "substeps",
        "scheme",
        "coupling",
        "models",
        "params",
        "noise_floor_se",
        "observables",
        "warnings",
    ] {
        assert!(v.get(key).is_some(), "missing {key}");
    }
    assert_eq!(v["seed"], 4);
    assert_eq!(v["etas"], serde_json::json!([0.2, 0.1]));
    let m = &v["observables"]["x2"]["sme1"];
    for key in [
        "etas",
        "errors",
        "ci_low",
        "ci_high",
        "slope",
        "slope_ci",
        "excluded",
        "verdict",
        "constant",
        "integration_check",
        "sample_size_hint",
        "stderr",
        "signed",
        "nominal_order",
        "constant_upper_bound",
    ] {
        assert!(m.get(key).is_some(), "missing {key}");
    }
    assert_eq!(m["errors"].as_array().unwrap().len(), 2);
    assert_eq!(m["slope_ci"].as_array().unwrap().len(), 2);
    assert_eq!(m["integration_check"]["substeps"], 4);
    assert!(m["integration_check"]["paths"].as_u64().is_some());
    assert_eq!(
        m["integration_check"]["delta_stderrs"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert!(v.get("sweep").is_none());
    // Never NaN: the text is valid JSON, and every number parsed (serde_json rejects NaN).
    assert!(!String::from_utf8_lossy(&o.stdout).contains("NaN"));
}

#[test]
fn sweep_json_lists_constants_per_value() {
    let o = hasme(&[
        "weak-order",
        "examples/stiff.hasme",
        "--eta-max",
        "0.1",
        "--levels",
        "2",
        "--horizon",
        "1",
        "--paths",
        "300",
        "--models",
        "sme2",
        "--observables",
        "energy",
        "--sweep",
        "lambda=1,2",
        "--no-integration-check",
        "--json",
        "--quiet",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["etas"], serde_json::json!([0.1, 0.05]));
    assert_eq!(v["sweep"]["values"], serde_json::json!([1.0, 2.0]));
    assert_eq!(
        v["sweep"]["constants"]["energy"]["sme2"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert_eq!(v["sweep"]["runs"].as_array().unwrap().len(), 2);
    assert!(v["observables"]["energy"]["sme2"].is_object());
}

#[test]
fn text_output_has_the_table_and_the_fit() {
    let o = small(&[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("x2 — sme1"), "{text}");
    assert!(text.contains("slope"), "{text}");
    assert!(text.contains("95% CI"), "{text}");
}

#[test]
fn plot_and_out_are_written_atomically() {
    let dir = temp_dir("plot");
    let svg = dir.join("order.svg");
    let out = dir.join("report.json");
    let o = small(&[
        "--json",
        "--plot",
        svg.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(o.stdout.is_empty(), "--out replaces stdout");
    let text = std::fs::read_to_string(&svg).unwrap();
    assert!(text.trim_start().starts_with("<svg") && text.trim_end().ends_with("</svg>"));
    // The slope guides are labelled on the chart.
    assert!(text.contains(">\nslope 2\n</text>") && text.contains(">\nslope 1\n</text>"));
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert!(v["observables"]["x2"]["hasme"].is_object());
    // Only the two targets: no temporary file left behind.
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, vec!["order.svg", "report.json"]);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_input_exits_2_before_any_work() {
    let dir = temp_dir("bad");
    let missing = dir.join("no/such/dir/p.svg");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--etas", "0.3"], "not a positive multiple"),
        (vec!["--plot", "x.png"], "only SVG"),
        (vec!["--plot", missing.to_str().unwrap()], ""),
        (vec!["--observables", "nope"], "unknown observable"),
        (vec!["--sweep", "lambda=1,2"], "no scalar param"),
        (vec!["--sweep", "lambda"], "NAME=v1"),
        (vec!["--models", "nonsense"], "--model"),
        (vec!["--paths", "1"], "2 paths"),
        (vec!["--scheme", "rk4"], "unknown scheme"),
    ];
    for (extra, want) in cases {
        // clap rejects a repeated option: add the defaults only where not overridden.
        let mut args = vec![
            "weak-order",
            "examples/cosine.hasme",
            "--horizon",
            "1",
            "--quiet",
        ];
        if !extra.contains(&"--paths") {
            args.extend_from_slice(&["--paths", "400"]);
        }
        if !extra.contains(&"--etas") {
            args.extend_from_slice(&["--etas", "0.2,0.1"]);
        }
        args.extend_from_slice(&extra);
        let o = hasme(&args);
        assert_eq!(o.status.code(), Some(2), "{extra:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(want), "{extra:?}: {}", stderr(&o));
    }
    let o = hasme(&["weak-order", "examples/cosine.hasme", "--horizon", "1"]);
    assert_eq!(o.status.code(), Some(2), "no step sizes: {}", stderr(&o));
    assert!(stderr(&o).contains("--etas"), "{}", stderr(&o));
    let o = hasme(&[
        "weak-order",
        "examples/missing.hasme",
        "--etas",
        "0.1",
        "--horizon",
        "1",
    ]);
    assert_eq!(o.status.code(), Some(2));
    let _ = std::fs::remove_dir_all(&dir);
}
