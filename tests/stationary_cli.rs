//! Command-line tests of `hasme stationary`: the JSON contract and its field order, the
//! JSON read back by `--start` in other commands to the bit, exit statuses (0 found,
//! 1 not converged with nothing written to `--out`, 2 bad input), atomic `--out`.

mod common;

use common::*;
use serde_json::Value;

#[test]
fn json_follows_the_contract_in_order() {
    let v = json(&hasme(&["stationary", "examples/saddle.hasme", "--json"]));
    let keys: Vec<&str> = v
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        [
            "variables",
            "point",
            "value",
            "gradient_norm",
            "iterations",
            "converged",
            "hessian_eigenvalues",
            "index",
            "kind",
            "eigenvalues",
            "method",
            "tolerance",
            "stop",
            "warnings",
            "file"
        ]
    );
    assert_eq!(v["variables"], serde_json::json!(["x", "y"]));
    assert_eq!(v["kind"], "saddle");
    assert_eq!(v["index"], 1);
    assert_eq!(v["hessian_eigenvalues"], serde_json::json!([-1.0, 2.0]));
    assert_eq!(v["converged"], true);
    assert!(v["gradient_norm"].as_f64().unwrap() <= v["tolerance"].as_f64().unwrap());
    // A drawn start echoes its init seed, a start file its name.
    let v = json(&hasme(&[
        "stationary",
        "examples/network.hasme",
        "--init-seed",
        "2",
        "--json",
    ]));
    assert_eq!(v["init_seed"], 2);
    assert_eq!(
        (v["kind"].as_str(), v["index"].as_u64()),
        (Some("saddle"), Some(3))
    );
}

#[test]
fn text_names_the_kind_the_point_and_the_spectrum() {
    let o = hasme(&["stationary", "examples/saddle.hasme"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(
        text.starts_with("examples/saddle.hasme: saddle (index 1) after 2 newton iterations\n"),
        "{text}"
    );
    assert!(text.contains("  hessian      eigenvalues: -1, 2"), "{text}");
    assert!(text.contains("≤ 1e-10 (tolerance)"), "{text}");
    let text = stdout(&hasme(&[
        "stationary",
        "examples/softmax.hasme",
        "--method",
        "gd",
    ]));
    assert!(
        text.starts_with("examples/softmax.hasme: degenerate (index 0) after"),
        "{text}"
    );
    assert!(text.contains("gd iterations"), "{text}");
}

/// A JSON array of numbers as their bits.
fn bits(v: &Value) -> Vec<u64> {
    f64s(v).iter().map(|x| x.to_bits()).collect()
}

#[test]
fn the_json_is_a_start_file_read_back_to_the_bit() {
    let dir = temp_dir("stationary-start");
    let out = dir.join("softmax.json").display().to_string();
    let o = hasme(&[
        "stationary",
        "examples/softmax.hasme",
        "--json",
        "--out",
        &out,
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(o.stdout.is_empty(), "--out replaces stdout");
    let found: Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    let d = json(&hasme(&[
        "derive",
        "examples/softmax.hasme",
        "--start",
        &out,
        "--json",
    ]));
    assert_eq!(bits(&d["point"]), bits(&found["point"]));
    assert_eq!(d["start_file"], Value::from(out.clone()));
    // At the point, derive's gradient is as small as stationary said.
    let g = f64s(&d["gradient"]);
    let norm = g.iter().map(|x| x * x).sum::<f64>().sqrt();
    assert!(norm <= found["tolerance"].as_f64().unwrap(), "{norm}");
    let c = json(&hasme(&[
        "check",
        "examples/softmax.hasme",
        "--start",
        &out,
        "--json",
    ]));
    assert_eq!(bits(&c["start"]), bits(&found["point"]));
    // Searching again from the stationary point takes no step and finds it again.
    let again = json(&hasme(&[
        "stationary",
        "examples/softmax.hasme",
        "--start",
        &out,
        "--json",
    ]));
    assert_eq!(again["iterations"], 0);
    assert_eq!(bits(&again["point"]), bits(&found["point"]));
    assert_eq!(again["start_file"], Value::from(out.clone()));
    // So is an escape run's start.
    let e = json(&hasme(&[
        "escape",
        "examples/softmax.hasme",
        "--start",
        &out,
        "--eta",
        "0.1",
        "--radius",
        "0.5",
        "--paths",
        "20",
        "--max-steps",
        "5",
        "--models",
        "hasme",
        "--quiet",
        "--json",
    ]));
    assert_eq!(bits(&e["start"]), bits(&found["point"]));
}

#[test]
fn a_search_that_does_not_converge_exits_1_and_writes_no_file() {
    let dir = temp_dir("stationary-fail");
    let out = dir.join("never.json");
    let o = hasme(&[
        "stationary",
        "examples/rosenbrock.hasme",
        "--max-iter",
        "3",
        "--json",
        "--out",
        &out.display().to_string(),
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("error: no stationary point: ‖∇f‖ = "), "{err}");
    assert!(
        err.contains("after 3 newton iterations (the iteration limit)"),
        "{err}"
    );
    assert!(err.contains("nothing written to --out"), "{err}");
    assert!(!out.exists() && o.stdout.is_empty());
    assert_eq!(
        std::fs::read_dir(&dir).unwrap().count(),
        0,
        "no temporary file left"
    );
    // Without --out the last point goes to stdout, marked as not converged.
    let o = hasme(&[
        "stationary",
        "examples/rosenbrock.hasme",
        "--max-iter",
        "3",
        "--json",
    ]);
    assert_eq!(o.status.code(), Some(1));
    let v = json_unchecked(&o);
    assert_eq!(
        (v["converged"].as_bool(), v["stop"].as_str()),
        (Some(false), Some("max-iter"))
    );
    assert_eq!(v["iterations"], 3);
    // `--out -` is standard output: the same text, exit 1 again.
    let dash = hasme(&[
        "stationary",
        "examples/rosenbrock.hasme",
        "--max-iter",
        "3",
        "--json",
        "--out",
        "-",
    ]);
    assert_eq!(dash.status.code(), Some(1));
    assert_eq!(dash.stdout, o.stdout, "--out - prints what no --out prints");
    // No stationary point at all: Newton stalls.
    let file = temp_file("linear.hasme", "var x = 0, y = 1\nminimize x + y^2");
    let o = hasme(&["stationary", &file.display().to_string()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("(stalled: no step lowers the merit)"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn bad_settings_are_input_errors_before_any_work() {
    let cases: [(&[&str], &str); 5] = [
        (
            &["--method", "bfgs"],
            "--method: unknown method `bfgs`; expected newton or gd",
        ),
        (&["--tol", "0"], "--tol must be a finite number > 0, got 0"),
        (
            &["--tol", "-1e-3"],
            "--tol must be a finite number > 0, got -0.001",
        ),
        (
            &["--out", "no/such/dir/p.json"],
            "the directory `no/such/dir` does not exist",
        ),
        (&["--set", "lambda"], "--set `lambda`: expected NAME=VALUE"),
    ];
    for (extra, message) in cases {
        let mut args = vec!["stationary", "examples/saddle.hasme"];
        args.extend(extra);
        let o = hasme(&args);
        assert_eq!(o.status.code(), Some(2), "{extra:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(message), "{extra:?}: {}", stderr(&o));
    }
    // A start file that does not fit.
    let start = temp_file(
        "wrong.json",
        r#"{"variables": ["x", "z"], "point": [1, 2]}"#,
    );
    let o = hasme(&[
        "stationary",
        "examples/saddle.hasme",
        "--start",
        &start.display().to_string(),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("variables[1]: `z` is not a variable of the problem"));
}
