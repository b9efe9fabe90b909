//! Command-line tests of `hasme weak-order --method quadrature`: the JSON contract,
//! exit status 2 (suggesting Monte Carlo) for what it does not handle, `--sweep`.

use serde_json::Value;

mod common;
use common::*;

#[test]
fn json_contract() {
    let o = hasme(&[
        "weak-order",
        "examples/cosine.hasme",
        "--etas",
        "0.2,0.1,0.05",
        "--horizon",
        "1",
        "--method",
        "quadrature",
        "--models",
        "sme1,hasme",
        "--json",
        "--quiet",
    ]);
    let v: Value = json(&o);
    for key in [
        "method",
        "etas",
        "horizon",
        "tolerance",
        "sgd_noise",
        "models",
        "params",
        "domains",
        "observables",
        "warnings",
        "file",
    ] {
        assert!(v.get(key).is_some(), "missing `{key}`");
    }
    assert_eq!(v["method"], "quadrature");
    let domain = &v["domains"][0];
    for key in [
        "eta",
        "lo",
        "hi",
        "spread_sd",
        "nodes",
        "base_nodes",
        "mass_outside",
    ] {
        assert!(domain.get(key).is_some(), "missing domains.{key}");
    }
    assert!(domain["mass_outside"].as_f64().unwrap() < 1e-12);
    let a = &v["observables"]["x2"]["hasme"];
    // The Monte Carlo names where they apply, with the numerical error beside them.
    for key in [
        "nominal_order",
        "etas",
        "errors",
        "ci_low",
        "ci_high",
        "signed",
        "numerical_error",
        "sgd_expectation",
        "model_expectation",
        "verdict",
        "slope",
        "slope_ci",
        "constant",
        "constant_upper_bound",
        "excluded",
        "excluded_reasons",
    ] {
        assert!(a.get(key).is_some(), "missing `{key}`");
    }
    assert!(a.get("stderr").is_none() && a.get("pairs").is_none());
    assert_eq!(a["verdict"], "fitted");
    let slope = a["slope"].as_f64().unwrap();
    assert!((slope - 2.0).abs() < 0.1, "{slope}");
    let errors = f64s(&a["errors"]);
    let numerical = f64s(&a["numerical_error"]);
    assert!(errors.iter().zip(&numerical).all(|(e, n)| *n < 1e-6 * e));
}

#[test]
fn unsupported_problems_exit_2_and_suggest_monte_carlo() {
    let o = hasme(&[
        "weak-order",
        "examples/rosenbrock.hasme",
        "--etas",
        "0.001",
        "--horizon",
        "0.001",
        "--method",
        "quadrature",
        "--quiet",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("--method monte-carlo"),
        "{}",
        stderr(&o)
    );
    // A finite sum of 60 rows with batches of 3: C(60, 3) = 34 220 minibatches.
    let rows: String = (0..60)
        .map(|i| format!(", [{}]", i as f64 / 60.0))
        .collect();
    let file = temp_file(
        "many_batches.hasme",
        &format!(
            "data a = [[u]{rows}]\nvar x = 1, y = 0\nminimize mean(a, 0.5*(x - a.u)^2 + 0.5*y^2)\nbatch 3\n"
        ),
    );
    let o = hasme(&[
        "weak-order",
        file.to_str().unwrap(),
        "--etas",
        "0.1",
        "--horizon",
        "0.1",
        "--method",
        "quadrature",
        "--quiet",
    ]);
    assert_eq!(o.status.code(), Some(2));
    let e = stderr(&o);
    assert!(
        e.contains("34220") && e.contains("--method monte-carlo"),
        "{e}"
    );
    let o = hasme(&[
        "weak-order",
        "examples/cosine.hasme",
        "--etas",
        "0.1",
        "--horizon",
        "1",
        "--method",
        "exact",
    ]);
    assert_eq!(o.status.code(), Some(2));
    let o = hasme(&[
        "weak-order",
        "examples/cosine.hasme",
        "--etas",
        "0.1",
        "--horizon",
        "1",
        "--method",
        "quadrature",
        "--tolerance",
        "0",
    ]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn sweeps_and_text() {
    let o = hasme(&[
        "weak-order",
        "examples/stiff.hasme",
        "--etas",
        "0.1,0.05",
        "--horizon",
        "0.5",
        "--method",
        "quadrature",
        "--models",
        "sme2,hasme",
        "--observables",
        "energy",
        "--sweep",
        "lambda=1,2",
        "--json",
        "--quiet",
    ]);
    let v = json(&o);
    assert_eq!(v["sweep"]["param"], "lambda");
    assert_eq!(v["sweep"]["runs"].as_array().unwrap().len(), 2);
    let constants = &v["sweep"]["constants"]["energy"]["sme2"];
    assert_eq!(constants.as_array().unwrap().len(), 2);
    assert!(v["sweep"]["runs"][0]["observables"]["energy"]["sme2"]["numerical_error"].is_array());
    let o = hasme(&[
        "weak-order",
        "examples/cosine.hasme",
        "--etas",
        "0.1,0.05",
        "--horizon",
        "1",
        "--method",
        "quadrature",
        "--quiet",
    ]);
    assert_eq!(o.status.code(), Some(0));
    let text = stdout(&o);
    assert!(
        text.contains("by quadrature") && text.contains("mass outside"),
        "{text}"
    );
}
