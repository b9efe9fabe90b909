//! Every command on finite-sum files (`check`, `derive`, `simulate`, `weak-order`,
//! `escape`): their JSON contracts, reproducibility over threads, and bad input.

mod common;

use common::*;

#[test]
fn check_reports_the_data_and_the_minibatch() {
    let v = json(&hasme(&["check", "examples/linreg.hasme", "--json"]));
    assert_eq!(v["noise_kind"], "minibatch");
    let fs = &v["finite_sum"];
    assert_eq!(fs["table"], "pts");
    assert_eq!(fs["rows"], 200);
    assert_eq!(fs["batch"], 10);
    assert_eq!(fs["sampling"], "without-replacement");
    assert_eq!(fs["used_columns"], serde_json::json!(["x1", "x2", "y"]));
    // κ = (n − b)/(b(n − 1)) = 190/1990.
    assert!((fs["noise_factor"].as_f64().unwrap() - 190.0 / 1990.0).abs() < 1e-15);
    assert!(fs["origin"].as_str().unwrap().ends_with("linreg.csv"));
    let text = stdout(&hasme(&["check", "examples/finite_sum.hasme"]));
    assert!(
        text.contains("minibatch: Σ = C/b·(n − b)/(n − 1)"),
        "{text}"
    );
    assert!(text.contains("constant noise yes"), "{text}");
    // Without a finite sum there is no `finite_sum` key's content.
    let v = json(&hasme(&["check", "examples/saddle.hasme", "--json"]));
    assert!(v["finite_sum"].is_null());
}

#[test]
fn derive_shows_the_minibatch_covariance_and_the_models() {
    let v = json(&hasme(&[
        "derive",
        "examples/finite_sum.hasme",
        "--at",
        "x=0.5,y=-0.2",
        "--eta",
        "0.1",
        "--json",
    ]));
    assert_eq!(v["noise_kind"], "minibatch");
    // The table's covariance C (batch 1, κ = 1): independent of the point here.
    let sigma: Vec<Vec<f64>> = v["noise_cov"]
        .as_array()
        .unwrap()
        .iter()
        .map(f64s)
        .collect();
    let a = [
        [0.9, 0.2],
        [1.3, -0.4],
        [0.4, 0.6],
        [1.1, 0.9],
        [0.7, -0.8],
        [1.6, 0.1],
        [0.2, -0.1],
        [1.0, 0.3],
    ];
    let mean = |j: usize| a.iter().map(|r| r[j]).sum::<f64>() / 8.0;
    for i in 0..2 {
        for j in 0..2 {
            let c = a
                .iter()
                .map(|r| (r[i] - mean(i)) * (r[j] - mean(j)))
                .sum::<f64>()
                / 8.0;
            assert!(
                (sigma[i][j] - c).abs() < 1e-14,
                "{i},{j}: {} vs {c}",
                sigma[i][j]
            );
        }
    }
    assert!(v["models"]["hasme"]["diffusion"].is_array());
}

fn simulate(extra: &[&str]) -> std::process::Output {
    let mut args = vec![
        "simulate",
        "examples/finite_sum.hasme",
        "--eta",
        "0.1",
        "--horizon",
        "0.5",
        "--paths",
        "600",
        "--models",
        "sme1,hasme",
        "--substeps",
        "2",
        "--json",
        "--quiet",
    ];
    args.extend_from_slice(extra);
    hasme(&args)
}

#[test]
fn simulate_draws_minibatches_reproducibly_and_says_it_is_uncoupled() {
    let one = json(&simulate(&["--threads", "1"]));
    let two = json(&simulate(&["--threads", "2"]));
    assert_eq!(one, two, "bit-identical on 1 and 2 threads");
    assert_eq!(one["sgd_noise"], "minibatch");
    assert_eq!(one["coupling"], "independent");
    let other = json(&simulate(&["--seed", "1"]));
    assert_ne!(one["observables"], other["observables"]);
    // SGD's mean moves: minibatch steps pull x from -1 towards the data.
    let sgd = f64s(&one["observables"]["norm2"]["sgd"]["mean"]);
    assert!(sgd[0] > sgd[sgd.len() - 1]);
    // Asking for a coupling that cannot exist is bad input.
    let o = simulate(&["--coupling", "coupled"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("always independent"), "{}", stderr(&o));
}

#[test]
fn weak_order_uses_the_split_estimator() {
    let v = json(&hasme(&[
        "weak-order",
        "examples/finite_sum.hasme",
        "--etas",
        "0.5,0.25",
        "--horizon",
        "1",
        "--paths",
        "200",
        "--sgd-paths",
        "2000",
        "--models",
        "sme1",
        "--substeps",
        "2",
        "--json",
        "--quiet",
    ]));
    assert_eq!(v["estimator"], "split");
    assert_eq!(v["sgd_noise"], "minibatch");
    assert_eq!(v["sgd_paths"], 2000);
    let errors = f64s(&v["observables"]["norm2"]["sme1"]["errors"]);
    assert_eq!(errors.len(), 2);
    let text = stdout(&hasme(&[
        "weak-order",
        "examples/finite_sum.hasme",
        "--etas",
        "0.5",
        "--horizon",
        "1",
        "--paths",
        "50",
        "--sgd-paths",
        "200",
        "--models",
        "sme1",
        "--substeps",
        "2",
        "--quiet",
    ]));
    assert!(text.contains("split estimator"), "{text}");
}

#[test]
fn escape_runs_minibatch_sgd() {
    let v = json(&hasme(&[
        "escape",
        "examples/finite_sum.hasme",
        "--eta",
        "0.1",
        "--radius",
        "1",
        "--max-steps",
        "200",
        "--paths",
        "200",
        "--models",
        "sme1",
        "--substeps",
        "2",
        "--json",
        "--quiet",
    ]));
    assert_eq!(v["coupling"], "independent");
}

#[test]
fn a_bad_csv_cell_exits_2_with_the_data_file_position() {
    let dir = temp_dir("bad-csv");
    std::fs::write(dir.join("d.csv"), "u,v\n1,2\n3,abc\n").unwrap();
    let obj = dir.join("obj.hasme");
    std::fs::write(
        &obj,
        "data t = \"d.csv\"\nvar x\nminimize mean(t, (x - t.u)^2 + t.v)\n",
    )
    .unwrap();
    let o = hasme(&["check", obj.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert!(err.contains("d.csv:3:3"), "{err}");
    assert!(err.contains("`abc` in column `v` is not a number"), "{err}");
    assert!(err.contains('^'), "a caret under the cell: {err}");
    std::fs::remove_dir_all(&dir).ok();
}
