//! Command-line tests of `hasme check` and `hasme derive`: text and JSON output, exit
//! statuses (0 ok, 2 bad input, 1 failure while running), and error positions.
//! Expected numbers come from closed forms written out in each test.

// Matrix entries read clearest as (i, j) loops.
#![allow(clippy::needless_range_loop)]

use serde_json::Value;

mod common;
use common::*;

fn close(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol * (1.0 + b.abs())
}

#[test]
fn check_summarises_every_example() {
    for (file, quadratic, constant) in [
        ("examples/saddle.hasme", "no", "no"),
        ("examples/quadratic.hasme", "yes", "yes"),
        ("examples/quadratic_saddle.hasme", "yes", "yes"),
        ("examples/state_noise.hasme", "no", "no"),
    ] {
        let o = hasme(&["check", file]);
        assert_eq!(o.status.code(), Some(0), "{file}: {}", stderr(&o));
        let out = stdout(&o);
        assert!(
            out.contains(&format!("quadratic      {quadratic}")),
            "{file}: {out}"
        );
        assert!(
            out.contains(&format!("constant noise {constant}")),
            "{file}: {out}"
        );
        assert!(out.contains("variables      2"), "{out}");
    }
}

#[test]
fn check_json_has_the_structure() {
    let v = json(&hasme(&["check", "examples/saddle.hasme", "--json"]));
    assert_eq!(v["dimension"], 2);
    assert_eq!(v["variables"], serde_json::json!(["x", "y"]));
    assert_eq!(v["noise_kind"], "cov");
    assert_eq!(v["structure"]["quadratic"], false);
    assert_eq!(v["structure"]["objective_degree"], 4);
    assert_eq!(v["observables"], serde_json::json!(["dist2", "y2"]));
    assert_eq!(v["params"]["lambda"], 2.0);
}

#[test]
fn check_reports_abs_warning() {
    let f = temp_file("abs.hasme", "var x = 1\nminimize abs(x) + x^2\n");
    let o = hasme(&["check", f.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0));
    let out = stdout(&o);
    assert!(out.contains("warnings       1"), "{out}");
    assert!(
        out.contains("abs.hasme:2:10: `abs` is not differentiable at 0"),
        "{out}"
    );
}

#[test]
fn derive_json_matches_closed_forms_on_the_saddle() {
    // f = λx²/2 − y²/2 + (μ/4)(x² + y²)², λ = 4 (overridden), μ = 0.5, at (0.5, −1).
    let v = json(&hasme(&[
        "derive",
        "examples/saddle.hasme",
        "--at",
        "x=0.5,y=-1",
        "--set",
        "lambda=4",
        "--json",
    ]));
    let (x, y, l, mu) = (0.5f64, -1.0f64, 4.0, 0.5);
    let r2 = x * x + y * y;
    let f = 0.5 * l * x * x - 0.5 * y * y + 0.25 * mu * r2 * r2;
    let g = [l * x + mu * r2 * x, -y + mu * r2 * y];
    let h = [
        [l + mu * r2 + 2.0 * mu * x * x, 2.0 * mu * x * y],
        [2.0 * mu * x * y, -1.0 + mu * r2 + 2.0 * mu * y * y],
    ];
    // 1e-14: a handful of roundings of O(1) numbers.
    assert_eq!(v["variables"], serde_json::json!(["x", "y"]));
    assert_eq!(f64s(&v["point"]), vec![x, y]);
    assert!(close(v["value"].as_f64().unwrap(), f, 1e-14));
    for i in 0..2 {
        assert!(close(f64s(&v["gradient"])[i], g[i], 1e-14));
        for j in 0..2 {
            assert!(close(f64s(&v["hessian"][i])[j], h[i][j], 1e-14));
        }
    }
    let s = &v["noise_cov"];
    assert!(close(f64s(&s[0])[0], 0.02, 1e-15));
    assert!(close(f64s(&s[1])[1], 0.01 * (1.0 + x * x), 1e-15));
    assert_eq!(f64s(&s[0])[1], 0.0);
    assert!(close(
        v["observables"]["dist2"].as_f64().unwrap(),
        r2,
        1e-15
    ));
    assert!(close(v["observables"]["y2"].as_f64().unwrap(), 1.0, 1e-15));
    assert_eq!(v["params"]["lambda"], 4.0);
    assert!(v.get("models").is_none() && v.get("eta").is_none());
}

#[test]
fn derive_text_shows_every_quantity() {
    let o = hasme(&["derive", "examples/quadratic.hasme"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    for key in [
        "at (x = 1, y = -1)",
        "f ",
        "gradient",
        "hessian",
        "noise_cov",
        "observables",
        "x2",
    ] {
        assert!(out.contains(key), "missing {key}: {out}");
    }
    assert!(!out.contains("NaN") && !out.contains("inf"), "{out}");
}

#[test]
fn derive_with_eta_reports_every_model() {
    // Quadratic f = ½xᵀHx + cᵀx with H = [[4, .3], [.3, .5]], c = (−1, 0), at (1, −1).
    let eta = 0.1;
    let v = json(&hasme(&[
        "derive",
        "examples/quadratic.hasme",
        "--eta",
        "0.1",
        "--json",
    ]));
    assert_eq!(v["eta"], eta);
    let g = f64s(&v["gradient"]);
    let sigma = [[0.10, 0.02], [0.02, 0.05]];
    for name in ["gf", "sme1", "sme2", "hasme", "hasme-exact"] {
        let m = &v["models"][name];
        assert_eq!(f64s(&m["drift"]).len(), 2, "{name}");
        assert_eq!(m["diffusion"].as_array().unwrap().len(), 2, "{name}");
    }
    // gf and sme1: drift −g; sme1 diffusion ηΣ; gf diffusion 0.
    for i in 0..2 {
        assert!(close(f64s(&v["models"]["gf"]["drift"])[i], -g[i], 1e-15));
        assert!(close(f64s(&v["models"]["sme1"]["drift"])[i], -g[i], 1e-15));
        for j in 0..2 {
            let d = f64s(&v["models"]["sme1"]["diffusion"][i])[j];
            assert!(close(d, eta * sigma[i][j], 1e-14));
            assert_eq!(f64s(&v["models"]["gf"]["diffusion"][i])[j], 0.0);
        }
    }
    // sme2 drift: −g − (η/2)Hg.
    let h = [[4.0, 0.3], [0.3, 0.5]];
    for i in 0..2 {
        let hg = h[i][0] * g[0] + h[i][1] * g[1];
        assert!(close(
            f64s(&v["models"]["sme2"]["drift"])[i],
            -g[i] - 0.5 * eta * hg,
            1e-14
        ));
    }
}

#[test]
fn derive_series_terms_are_reported() {
    let v = json(&hasme(&[
        "derive",
        "examples/quadratic_saddle.hasme",
        "--at",
        "x=1,y=1",
        "--eta",
        "0.1",
        "--series",
        "3",
        "--model",
        "sme2,series:2",
        "--json",
    ]));
    let drift = v["series"]["drift"].as_array().unwrap();
    assert_eq!(drift.len(), 3);
    // H = diag(1, −2), g = (1, −2): term k = −(ηH)^k g/(k+1).
    let term2 = f64s(&drift[2]);
    assert!(close(term2[0], -(0.1f64.powi(2)) / 3.0, 1e-14));
    assert!(close(term2[1], -((-0.2f64).powi(2) * -2.0) / 3.0, 1e-14));
    assert_eq!(v["models"].as_object().unwrap().len(), 2);
}

#[test]
fn derive_text_lists_models_and_series() {
    let o = hasme(&[
        "derive",
        "examples/saddle.hasme",
        "--eta",
        "0.1",
        "--series",
        "2",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    for key in [
        "models",
        "hasme-exact",
        "drift",
        "diffusion",
        "series",
        "k = 1",
    ] {
        assert!(out.contains(key), "missing {key}: {out}");
    }
}

#[test]
fn syntax_error_has_position_caret_and_status_2() {
    let f = temp_file("bad.hasme", "var x\nminimize x *\n");
    let o = hasme(&["check", f.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert!(
        err.contains("bad.hasme:2:13: error: expected an expression after `*`"),
        "{err}"
    );
    assert!(err.contains("2 | minimize x *\n  |             ^"), "{err}");
}

#[test]
fn unknown_name_suggests_and_exits_2() {
    let f = temp_file(
        "typo.hasme",
        "param lambda = 1\nvar x\nminimize lamda*x^2\n",
    );
    let o = hasme(&["derive", f.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("typo.hasme:3:10: error: unknown name `lamda`; did you mean `lambda`?")
    );
}

#[test]
fn input_errors_exit_2() {
    for args in [
        vec!["check", "no/such/file.hasme"],
        vec!["derive", "examples/saddle.hasme", "--set", "lamda=3"],
        vec!["derive", "examples/saddle.hasme", "--set", "lambda"],
        vec!["derive", "examples/saddle.hasme", "--at", "z=1"],
        vec!["derive", "examples/saddle.hasme", "--eta", "-1"],
        vec![
            "derive",
            "examples/saddle.hasme",
            "--eta",
            "0.1",
            "--model",
            "sme3",
        ],
        vec!["derive", "examples/saddle.hasme", "--model", "sme1"],
        vec!["frobnicate"],
    ] {
        let o = hasme(&args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        assert!(!stderr(&o).is_empty());
        assert!(stdout(&o).is_empty(), "{args:?} printed a result");
    }
    let o = hasme(&["derive", "examples/saddle.hasme", "--set", "lamda=3"]);
    assert!(
        stderr(&o).contains("did you mean `lambda`?"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn evaluation_failure_exits_1_and_names_the_point() {
    let f = temp_file("log.hasme", "var x = -1\nminimize log(x) + x^2\n");
    let o = hasme(&["derive", f.to_str().unwrap(), "--json"]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(
        err.contains("log.hasme:2:10: error: `log(x)` evaluates to NaN at (x = -1)"),
        "{err}"
    );
    assert!(stdout(&o).is_empty(), "no half result on stdout");
}

#[test]
fn model_outside_its_domain_fails_alone() {
    // λ_max = 4 on the quadratic: η = 0.3 puts hasme outside ηλ_max < 1.
    let o = hasme(&[
        "derive",
        "examples/quadratic.hasme",
        "--eta",
        "0.3",
        "--json",
    ]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(
        err.contains("model `hasme`") && err.contains("1/λ_max"),
        "{err}"
    );
    let v: Value = serde_json::from_slice(&o.stdout).expect("still JSON");
    assert!(
        v["models"]["hasme"]["error"]
            .as_str()
            .unwrap()
            .contains("λ_max")
    );
    assert!(
        v["models"]["sme2"]["drift"].is_array(),
        "other models still reported"
    );
}

#[test]
fn indefinite_exact_diffusion_needs_explicit_clip() {
    // docs/models.md §2: η = 0.1, λ = (1, 5), Σ = [[1, .999], [.999, 1]] makes Γ indefinite.
    let f = temp_file(
        "indef.hasme",
        "var x, y\nminimize 0.5*x^2 + 2.5*y^2\nnoise cov [[1, 0.999], [0.999, 1]]\n",
    );
    let path = f.to_str().unwrap();
    let o = hasme(&["derive", path, "--eta", "0.1", "--model", "hasme-exact"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("indefinite"), "{}", stderr(&o));
    let v = json(&hasme(&[
        "derive",
        path,
        "--eta",
        "0.1",
        "--model",
        "hasme-exact",
        "--psd",
        "clip",
        "--json",
    ]));
    let w = v["models"]["hasme-exact"]["warnings"].as_array().unwrap();
    assert_eq!(w.len(), 1, "clipping is announced");
}

#[test]
fn vector_variables_through_the_cli() {
    // Chained Rosenbrock at its minimum w = (1, …, 1): f = 0, ∇f = 0, and the Hessian
    // is tridiagonal with H[1][1] = 802, H[1][2] = −400 (closed form).
    let v = json(&hasme(&[
        "derive",
        "examples/rosenbrock.hasme",
        "--set",
        "n=12",
        "--at",
        "w=1",
        "--json",
    ]));
    let names = v["variables"].as_array().unwrap();
    assert_eq!(names.len(), 12);
    assert_eq!(names[0], "w[1]");
    assert_eq!(names[11], "w[12]");
    assert_eq!(v["value"], 0.0);
    assert!(f64s(&v["gradient"]).iter().all(|g| *g == 0.0));
    let h0 = f64s(&v["hessian"][0]);
    assert!(close(h0[0], 802.0, 1e-14) && close(h0[1], -400.0, 1e-14));
    assert_eq!(h0[2], 0.0);
    assert_eq!(v["observables"]["dist2"], 0.0);
    // One coordinate moved: --at w[3]=0.
    let v = json(&hasme(&[
        "derive",
        "examples/rosenbrock.hasme",
        "--at",
        "w=1,w[3]=0",
        "--json",
    ]));
    assert_eq!(f64s(&v["point"])[2], 0.0);
    assert!(close(
        v["observables"]["dist2"].as_f64().unwrap(),
        1.0,
        1e-15
    ));
}

#[test]
fn vector_index_out_of_range_exits_2_with_position() {
    let f = temp_file(
        "range.hasme",
        "param n = 3\nvar w[n]\nminimize sum(i = 1..n, w[i+1]^2)\n",
    );
    let o = hasme(&["check", f.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert!(
        err.contains("range.hasme:3:26: error: index 4 is out of range"),
        "{err}"
    );
    assert!(err.contains("= note: when i = 3"), "{err}");
}
