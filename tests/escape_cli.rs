//! Command-line tests of `hasme escape`: the JSON contract, exit statuses (0 ok, 2 bad
//! input), atomic `--out`, the survival plot, and the three ways of giving the region.

use serde_json::Value;
use std::process::Output;

mod common;
use common::*;

/// The quadratic saddle example (κ = 2), 200 paths, η = 0.1, unit ball, plus `extra`.
fn small(extra: &[&str]) -> Output {
    let mut args = vec![
        "escape",
        "examples/quadratic_saddle.hasme",
        "--eta",
        "0.1",
        "--paths",
        "200",
        "--max-steps",
        "1000",
        "--quiet",
    ];
    args.extend(extra);
    hasme(&args)
}

#[test]
fn json_follows_the_contract() {
    let v = json(&small(&[
        "--radius",
        "1",
        "--json",
        "--models",
        "sme1,hasme",
    ]));
    assert_eq!(v["paths"], 200);
    assert_eq!(v["seed"], 0);
    assert_eq!(v["eta"], 0.1);
    assert_eq!(v["max_steps"], 1000);
    assert_eq!(v["file"], "examples/quadratic_saddle.hasme");
    assert_eq!(v["region"]["kind"], "ball");
    assert_eq!(v["region"]["radius"], 1.0);
    let models = v["models"].as_object().unwrap();
    assert_eq!(models.keys().collect::<Vec<_>>(), ["sgd", "sme1", "hasme"]);
    for (name, m) in models {
        for key in [
            "escaped_fraction",
            "mean_time",
            "mean_time_ci",
            "median_time",
            "quartiles",
        ] {
            assert!(m.get(key).is_some(), "{name}: {key}");
        }
        let ci = m["mean_time_ci"].as_array().unwrap();
        let mean = m["mean_time"].as_f64().unwrap();
        assert!(ci[0].as_f64().unwrap() < mean && mean < ci[1].as_f64().unwrap());
        assert_eq!(m["quartiles"].as_array().unwrap().len(), 2);
        let has_ks = m.get("ks_distance").is_some() && m.get("ks_pvalue").is_some();
        assert_eq!(has_ks, name != "sgd", "{name}");
    }
    // The saddle is quadratic with constant noise: exact growth rates are reported.
    assert_eq!(v["growth_rates"]["lambda_min"], -2.0);
    assert!((v["growth_rates"]["per_step"]["sgd"].as_f64().unwrap() - 1.2).abs() < 1e-12);
}

#[test]
fn text_output_has_a_row_per_process_and_the_growth_rates() {
    let o = small(&["--radius", "1", "--models", "sme1"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let text = String::from_utf8(o.stdout).unwrap();
    assert!(text.contains("sgd") && text.contains("sme1"), "{text}");
    assert!(text.contains("exact growth"), "{text}");
    assert!(!text.contains("NaN"));
}

#[test]
fn out_and_plot_are_written_atomically() {
    let dir = temp_dir("out");
    let out = dir.join("escape.json");
    let plot = dir.join("survival.svg");
    let o = small(&[
        "--radius",
        "1",
        "--models",
        "hasme",
        "--json",
        "--out",
        out.to_str().unwrap(),
        "--plot",
        plot.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(o.stdout.is_empty());
    let v: Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    assert_eq!(v["paths"], 200);
    let svg = std::fs::read_to_string(&plot).unwrap();
    assert!(svg.trim_start().starts_with("<svg") && svg.contains("hasme"));
    let mut entries: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    entries.sort();
    assert_eq!(
        entries,
        ["escape.json", "survival.svg"],
        "no temporaries left"
    );
}

#[test]
fn radius_when_and_the_file_statement_agree() {
    let dir = temp_dir("region");
    let file = dir.join("saddle.hasme");
    std::fs::write(
        &file,
        "var x = 0, y = 0\nminimize 0.5*x^2 - y^2\nnoise sd 0.1\nescape when x^2 + y^2 > 1\n",
    )
    .unwrap();
    let run = |extra: &[&str]| {
        let mut args = vec![
            "escape",
            file.to_str().unwrap(),
            "--eta",
            "0.1",
            "--paths",
            "100",
            "--quiet",
            "--json",
            "--models",
            "hasme",
        ];
        args.extend(extra);
        json(&hasme(&args))["models"].clone()
    };
    let from_file = run(&[]);
    assert_eq!(from_file, run(&["--radius", "1"]));
    assert_eq!(from_file, run(&["--when", "x^2 + y^2 - 1"]));
    assert_eq!(from_file, run(&["--radius", "1", "--centre", "x=0,y=0"]));
    assert_ne!(from_file, run(&["--radius", "1", "--centre", "y=0.5"]));
}

#[test]
fn the_threads_do_not_change_the_output() {
    let a = json(&small(&["--radius", "1", "--json", "--threads", "1"]));
    let b = json(&small(&["--radius", "1", "--json", "--threads", "2"]));
    assert_eq!(a, b);
}

#[test]
fn bad_input_exits_2() {
    let dir = temp_dir("bad");
    let missing_dir = dir.join("no/such/dir/out.json");
    let cases: Vec<Vec<&str>> = vec![
        vec![],                                    // no region
        vec!["--radius", "1", "--when", "y - 1"],  // both
        vec!["--radius", "0"],                     // bad radius
        vec!["--radius", "1", "--eta", "-1"],      // bad η (repeated flag: clap error)
        vec!["--radius", "1", "--models", "sme9"], // unknown model
        vec!["--when", "z - 1"],                   // unknown name
        vec!["--when", "y -"],                     // syntax
        vec!["--when", "1 - y"],                   // starts outside
        vec!["--radius", "1", "--centre", "q=1"],  // not a variable
        vec!["--radius", "1", "--plot", "a.png"],  // not SVG
        vec!["--radius", "1", "--max-steps", "0"], // no steps
        vec!["--radius", "1", "--out", missing_dir.to_str().unwrap()],
    ];
    for args in cases {
        let o = small(&args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains("error"), "{args:?}");
    }
    let o = hasme(&[
        "escape",
        "no-such-file.hasme",
        "--eta",
        "0.1",
        "--radius",
        "1",
    ]);
    assert_eq!(o.status.code(), Some(2));
}
