//! Command-line tests of `hasme moments`: the JSON contract, exit statuses (0 ok,
//! 2 bad input, 1 a model failed), the non-quadratic error, and the CSV and SVG files
//! (well formed, written atomically, refused for a missing directory).

use std::path::Path;

mod common;
use common::*;

fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("readable")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

const SADDLE: &str = "examples/quadratic_saddle.hasme";

#[test]
fn json_follows_the_contract() {
    let o = hasme(&[
        "moments", SADDLE, "--eta", "0.1", "--steps", "25", "--every", "10", "--json",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let v = json_unchecked(&o);
    assert_eq!(v["steps"], serde_json::json!([0, 10, 20, 25]));
    assert_eq!(f64s(&v["times"]).len(), 4);
    assert_eq!(v["file"], SADDLE);
    assert_eq!(v["eta"], 0.1);
    assert_eq!(v["every"], 10);
    assert_eq!(v["variables"], serde_json::json!(["x", "y"]));
    assert_eq!(v["noise_commutes_with_hessian"], true);
    assert_eq!(f64s(&v["hessian_eigenvalues"]), vec![-2.0, 1.0]);
    assert_eq!(f64s(&v["sgd"]["mean"]).len(), 2);
    assert_eq!(v["sgd"]["cov"].as_array().map(Vec::len), Some(2));
    let models = v["models"].as_object().expect("models object");
    let names: Vec<&str> = models.keys().map(String::as_str).collect();
    assert_eq!(names, ["gf", "sme1", "sme2", "hasme", "hasme-exact"]);
    for (name, m) in models {
        for key in ["mean_error", "cov_rel_error", "w2"] {
            let list = f64s(&m[key]);
            assert_eq!(list.len(), 4, "{name}.{key}");
            assert_eq!(list[0], 0.0, "{name}.{key} at k = 0");
            assert!(list.iter().all(|x| x.is_finite() && *x >= 0.0));
        }
        assert_eq!(f64s(&m["mean"]).len(), 2);
        assert!(m["weak_order"].is_u64());
        assert!(m["warnings"].is_array());
    }
    // SGD's variance along y at step 25, from its closed form: η²σ² Σ_{j<25} (1.2²)^j.
    let p2: f64 = 1.2f64 * 1.2;
    let expected = 0.01 * 0.01 * (p2.powi(25) - 1.0) / (p2 - 1.0);
    let var_y = v["sgd"]["cov"][1][1].as_f64().unwrap();
    assert!(
        (var_y / expected - 1.0).abs() < 1e-12,
        "{var_y} vs {expected}"
    );
    // hasme reproduces it (Σ diagonal, H diagonal), sme1 does not.
    let w2 = |name: &str| f64s(&v["models"][name]["w2"])[3];
    assert!(w2("hasme") < 1e-12 * var_y.sqrt(), "{}", w2("hasme"));
    assert!(w2("hasme-exact") < 1e-12 * var_y.sqrt());
    assert!(w2("sme1") > 1e-3 * var_y.sqrt());
    let text = stdout(&o);
    assert!(!text.contains("NaN") && !text.contains("null"), "{text}");
}

#[test]
fn text_output_has_the_table_and_the_summary() {
    let o = hasme(&[
        "moments",
        "examples/quadratic.hasme",
        "--eta",
        "0.1",
        "--steps",
        "30",
        "--every",
        "15",
        "--models",
        "sme2,hasme",
        "--model",
        "hasme-exact",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    for needle in [
        "η = 0.1, 30 steps (T = 3), reported every 15 steps",
        "HΣ = ΣH        no",
        "W2 distance to SGD",
        "hasme-exact",
        "mean error",
    ] {
        assert!(out.contains(needle), "missing `{needle}` in\n{out}");
    }
    assert!(!out.contains("sme1"), "only the requested models:\n{out}");
    assert!(!out.contains("NaN"));
}

#[test]
fn a_non_quadratic_problem_is_bad_input_pointing_to_monte_carlo() {
    let o = hasme(&[
        "moments",
        "examples/saddle.hasme",
        "--eta",
        "0.1",
        "--steps",
        "10",
    ]);
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert!(err.contains("quadratic"), "{err}");
    assert!(
        err.contains("hasme simulate") && err.contains("hasme weak-order"),
        "{err}"
    );
    assert!(err.contains("examples/saddle.hasme"), "{err}");
    assert!(stdout(&o).is_empty());

    let o = hasme(&[
        "moments",
        "examples/state_noise.hasme",
        "--eta",
        "0.1",
        "--steps",
        "10",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("not a polynomial"), "{}", stderr(&o));
}

#[test]
fn bad_arguments_exit_2() {
    for args in [
        vec!["moments", SADDLE, "--eta", "-0.1", "--steps", "10"],
        vec!["moments", SADDLE, "--eta", "0", "--steps", "10"],
        vec!["moments", SADDLE, "--eta", "0.1", "--steps", "0"],
        vec![
            "moments", SADDLE, "--eta", "0.1", "--steps", "10", "--every", "0",
        ],
        vec![
            "moments", SADDLE, "--eta", "0.1", "--steps", "10", "--models", "sme3",
        ],
        vec!["moments", SADDLE, "--eta", "0.1"],
        vec![
            "moments", SADDLE, "--eta", "0.1", "--steps", "10", "--set", "kappa",
        ],
        vec![
            "moments", SADDLE, "--eta", "0.1", "--steps", "10", "--plot", "w2.png",
        ],
        vec![
            "moments",
            "examples/no-such-file.hasme",
            "--eta",
            "0.1",
            "--steps",
            "10",
        ],
    ] {
        let o = hasme(&args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        assert!(!stderr(&o).is_empty(), "{args:?}");
        assert!(stdout(&o).is_empty(), "{args:?}");
    }
}

#[test]
fn a_model_outside_its_domain_fails_alone_with_exit_1() {
    // quadratic.hasme has λ_max ≈ 4.03: at η = 0.3, ηλ_max ≈ 1.2 ≥ 1.
    let o = hasme(&[
        "moments",
        "examples/quadratic.hasme",
        "--eta",
        "0.3",
        "--steps",
        "20",
        "--json",
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let v = json_unchecked(&o);
    for failed in ["hasme", "hasme-exact"] {
        let e = v["models"][failed]["error"]
            .as_str()
            .expect("an error entry");
        assert!(e.contains("λ_max") && e.contains("1/λ_max"), "{e}");
        assert!(v["models"][failed]["w2"].is_null());
    }
    for ok in ["gf", "sme1", "sme2"] {
        // 20 steps, every step reported by default (⌈20/200⌉ = 1).
        assert_eq!(f64s(&v["models"][ok]["w2"]).len(), 21, "{ok}");
    }
    let err = stderr(&o);
    assert!(err.contains("error: model `hasme`:"), "{err}");
    assert!(err.contains("error: model `hasme-exact`:"), "{err}");
    assert!(!stdout(&o).contains("NaN"));
}

#[test]
fn set_overrides_params() {
    // The example's curvature along y is −kappa.
    let o = hasme(&[
        "moments", SADDLE, "--eta", "0.1", "--steps", "5", "--set", "kappa=4", "--json",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(
        f64s(&json_unchecked(&o)["hessian_eigenvalues"]),
        vec![-4.0, 1.0]
    );
}

#[test]
fn csv_and_svg_files_are_written_and_well_formed() {
    let dir = temp_dir("files");
    let csv = dir.join("moments.csv");
    let svg = dir.join("w2.svg");
    let o = hasme(&[
        "moments",
        SADDLE,
        "--eta",
        "0.1",
        "--steps",
        "40",
        "--every",
        "20",
        "--csv",
        csv.to_str().unwrap(),
        "--plot",
        svg.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let table = std::fs::read_to_string(&csv).expect("the CSV exists");
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines[0], "step,t,model,mean_error,cov_rel_error,w2");
    // 3 reported steps × 5 models.
    assert_eq!(lines.len(), 1 + 15);
    for line in &lines[1..] {
        let fields: Vec<&str> = line.split(',').collect();
        assert_eq!(fields.len(), 6, "{line}");
        assert!(fields[0].parse::<usize>().is_ok(), "{line}");
        for f in [fields[1], fields[3], fields[4], fields[5]] {
            let x: f64 = f.parse().unwrap_or_else(|_| panic!("number in {line}"));
            assert!(x.is_finite() && x >= 0.0, "{line}");
        }
    }
    assert!(lines[1].starts_with("0,0,gf,"));
    assert!(lines.last().unwrap().starts_with("40,4,hasme-exact,"));

    let plot = std::fs::read_to_string(&svg).expect("the SVG exists");
    assert!(plot.trim_start().starts_with("<svg"), "{}", &plot[..80]);
    assert!(plot.trim_end().ends_with("</svg>"));
    assert!(plot.contains("xmlns=\"http://www.w3.org/2000/svg\""));
    for name in [
        "gf",
        "sme1",
        "sme2",
        "hasme",
        "hasme-exact",
        "W2 distance to SGD",
        "t = kη",
    ] {
        assert!(plot.contains(name), "the plot names {name}");
    }
    // Well-formed enough: every element opened is closed.
    assert_eq!(
        plot.matches("<text").count(),
        plot.matches("</text>").count()
    );
    assert!(!plot.contains("NaN"));
    // Atomic writes leave no temporary files behind.
    assert_eq!(
        entries(&dir),
        vec!["moments.csv".to_string(), "w2.svg".to_string()]
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_missing_output_directory_fails_before_any_work() {
    let dir = temp_dir("missing");
    let csv = dir.join("absent").join("moments.csv");
    let o = hasme(&[
        "moments",
        SADDLE,
        "--eta",
        "0.1",
        "--steps",
        "10",
        "--csv",
        csv.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("does not exist"), "{}", stderr(&o));
    assert!(stdout(&o).is_empty(), "no report is printed");
    assert!(entries(&dir).is_empty());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn an_existing_file_is_replaced_whole() {
    let dir = temp_dir("replace");
    let csv = dir.join("moments.csv");
    std::fs::write(
        &csv,
        "old content that is much longer than nothing\n".repeat(1000),
    )
    .unwrap();
    let o = hasme(&[
        "moments",
        SADDLE,
        "--eta",
        "0.1",
        "--steps",
        "2",
        "--models",
        "gf",
        "--csv",
        csv.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let table = std::fs::read_to_string(&csv).unwrap();
    assert!(!table.contains("old content"));
    assert_eq!(table.lines().count(), 1 + 3);
    assert_eq!(entries(&dir), vec!["moments.csv".to_string()]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn sgd_overflow_is_a_run_failure() {
    let dir = temp_dir("overflow");
    let file = dir.join("steep.hasme");
    std::fs::write(&file, "var y = 1\nminimize -5*y^2\nnoise sd 0.1\n").unwrap();
    // λ = −10, η = 1: the mean grows like 11^k and overflows f64 near k = 296.
    let o = hasme(&[
        "moments",
        file.to_str().unwrap(),
        "--eta",
        "1",
        "--steps",
        "1000",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("overflow"), "{}", stderr(&o));
    assert!(!stdout(&o).contains("NaN") && !stdout(&o).contains("inf"));
    std::fs::remove_dir_all(&dir).unwrap();
}
