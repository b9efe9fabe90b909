//! `hasme report`: runs on every bundled example in quick mode; its JSON parts agree
//! with the standalone library calls with the same seed; the page is well formed and
//! has every section. Quick mode keeps the file to a few seconds in release mode
//! (the 20-variable Rosenbrock runs at `n = 4`: at 20 it alone takes ~35 s).

use hasme::escape::escape;
use hasme::experiment::weak_order;
use hasme::moments::compare;
use hasme::report::{ReportConfig, SECTIONS, Silent, run_report};
use hasme::{Overrides, Problem};
use std::path::PathBuf;

fn out_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("hasme-report-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// The file's text, which must equal the standalone value's pretty JSON byte for byte
/// (serde_json's text parser is not round-trip exact in the last bit, so compare text).
fn read_text(dir: &std::path::Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name)).expect("part written")
}

fn pretty(v: &serde_json::Value) -> String {
    serde_json::to_string_pretty(v).unwrap() + "\n"
}

fn read_json(dir: &std::path::Path, name: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(dir.join(name)).expect("part written");
    serde_json::from_str(&text).expect("valid JSON")
}

/// Checks that tags are balanced: every opened element is closed, in order, except void
/// elements and self-closing `<…/>` tags. Comments, `<!DOCTYPE>` and `<?…?>` are skipped.
fn check_balanced(html: &str) -> Result<(), String> {
    const VOID: [&str; 8] = ["meta", "br", "hr", "img", "input", "link", "col", "wbr"];
    let mut stack: Vec<String> = Vec::new();
    let mut rest = html;
    while let Some(i) = rest.find('<') {
        rest = &rest[i..];
        if rest.starts_with("<!--") {
            let end = rest.find("-->").ok_or("unclosed comment")?;
            rest = &rest[end + 3..];
            continue;
        }
        let end = rest.find('>').ok_or("unclosed tag")?;
        let tag = &rest[1..end];
        rest = &rest[end + 1..];
        if tag.starts_with('!') || tag.starts_with('?') {
            continue;
        }
        if let Some(name) = tag.strip_prefix('/') {
            let name = name.trim().to_ascii_lowercase();
            match stack.pop() {
                Some(open) if open == name => {}
                other => return Err(format!("`</{name}>` closes {other:?}")),
            }
            continue;
        }
        let name: String = tag
            .chars()
            .take_while(|c| !c.is_whitespace() && *c != '/')
            .collect::<String>()
            .to_ascii_lowercase();
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            return Err(format!("bad tag `<{tag}>`"));
        }
        if tag.ends_with('/') || VOID.contains(&name.as_str()) {
            continue;
        }
        stack.push(name);
    }
    if stack.is_empty() {
        Ok(())
    } else {
        Err(format!("unclosed: {stack:?}"))
    }
}

#[test]
fn the_checker_rejects_bad_nesting() {
    assert!(check_balanced("<p><b>x</b></p><br><svg><g/></svg>").is_ok());
    assert!(check_balanced("<p><b>x</p></b>").is_err());
    assert!(check_balanced("<p>").is_err());
}

#[test]
fn every_bundled_example_reports_in_quick_mode() {
    let mut examples: Vec<PathBuf> = std::fs::read_dir("examples")
        .expect("examples/")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "hasme"))
        .collect();
    examples.sort();
    assert!(examples.len() >= 9);
    for path in examples {
        let stem = path.file_stem().unwrap().to_string_lossy().to_string();
        // The network at its full size takes minutes even at the quick mode's fewest
        // paths (a 21×21 Hessian over 500 rows per model step); one hidden unit on two
        // inputs runs the same code.
        let set: Vec<String> = match stem.as_str() {
            "rosenbrock" => vec!["n=4".into()],
            "network" => vec!["h=1".into(), "p=2".into()],
            _ => Vec::new(),
        };
        let overrides = Overrides::parse(&set).unwrap();
        let problem = Problem::from_file(&path, &overrides).unwrap();
        let dir = out_dir(&stem);
        let mut config = ReportConfig::builder(&dir);
        config.quick(true);
        config.seed(7);
        config.threads(2);
        config.set(set);
        let report = run_report(&problem, &overrides, &config.build().unwrap(), &Silent)
            .unwrap_or_else(|e| panic!("{stem}: {e}"));
        let html = std::fs::read_to_string(dir.join("report.html")).unwrap();
        check_balanced(&html).unwrap_or_else(|e| panic!("{stem}: {e}"));
        for s in SECTIONS {
            assert!(
                html.contains(&format!("<h2>{s}</h2>")),
                "{stem}: section {s}"
            );
        }
        assert!(
            !html.contains("NaN") && !html.contains("http://www.w3.org/1999/xlink\" href=\"http")
        );
        for name in ["check.json", "derive.json", "weak_order.json"] {
            read_json(&dir, name);
        }
        // The quick mode's work budget: the usual paths where a model step is cheap,
        // fewer (said on the page) where the finite sum makes it expensive.
        let work = hasme::report::evaluation_work(&problem);
        let paths = report.settings.weak_order.paths();
        match stem.as_str() {
            "cosine" | "saddle" | "report" => {
                assert_eq!(
                    (paths, &report.settings.paths_reason),
                    (500, &None),
                    "{stem}"
                )
            }
            "softmax" => {
                assert!(work > 5e4, "{stem}: {work}");
                assert_eq!(paths, hasme::report::QUICK_MIN_PATHS, "{stem}");
                let why = report.settings.paths_reason.as_deref().unwrap();
                assert!(why.starts_with("20 paths, not 100: one model step costs about 8.4e4 tape operations here (the 9×9 Hessian over 150 rows)"), "{why}");
                assert!(html.contains("<p>Quick mode: 20 paths, not 100"), "{stem}");
            }
            _ => {}
        }
        let s = problem.structure();
        assert_eq!(
            dir.join("moments.json").exists(),
            s.quadratic && s.constant_noise,
            "{stem}"
        );
        assert_eq!(
            dir.join("escape.json").exists(),
            problem.escape_region().is_some(),
            "{stem}"
        );
        assert_eq!(
            report.files.len(),
            std::fs::read_dir(&dir).unwrap().count(),
            "{stem}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// The parts equal the standalone calls with the same settings and seed: compared
/// exactly, since the same seed gives the same numbers on any number of threads.
#[test]
fn parts_agree_with_the_standalone_calls() {
    for file in ["examples/report.hasme", "examples/quadratic_saddle.hasme"] {
        let overrides = Overrides::none();
        let problem = Problem::from_file(file, &overrides).unwrap();
        // A name of its own: the per-example test runs in parallel in the same process.
        let dir = out_dir(&format!(
            "parts-{}",
            file.trim_start_matches("examples/")
                .trim_end_matches(".hasme")
        ));
        let mut config = ReportConfig::builder(&dir);
        config.quick(true);
        config.seed(11);
        config.threads(2);
        let report = run_report(&problem, &overrides, &config.build().unwrap(), &Silent).unwrap();

        // Standalone, on one thread: same seed, same numbers.
        let wc = report
            .settings
            .weak_order
            .to_builder()
            .threads(1)
            .build()
            .unwrap();
        let weak = weak_order(&problem, &overrides, &wc).unwrap();
        let mut standalone = serde_json::to_value(&weak).unwrap();
        standalone["file"] = file.into();
        assert_eq!(
            read_text(&dir, "weak_order.json"),
            pretty(&standalone),
            "{file}"
        );
        let part = read_json(&dir, "weak_order.json");
        let first = &weak.observables[0].models[0].points[0];
        assert!(
            !part["observables"][&weak.observables[0].name].is_null(),
            "{file}"
        );
        assert!(first.eta > 0.0);

        if let Some(ec) = &report.settings.escape {
            let ec = ec.to_builder().threads(1).build().unwrap();
            let e = escape(&problem, &ec).unwrap();
            let mut standalone = serde_json::to_value(&e).unwrap();
            standalone["file"] = file.into();
            assert_eq!(
                read_text(&dir, "escape.json"),
                pretty(&standalone),
                "{file}"
            );
            let part = read_json(&dir, "escape.json");
            for p in &e.processes {
                let m = &part["models"][&p.name];
                assert_eq!(m["escaped"].as_u64(), Some(p.escaped), "{file} {}", p.name);
                assert_eq!(m["mean_time"].as_f64(), p.mean_time, "{file} {}", p.name);
                if p.name != "sgd" {
                    assert_eq!(
                        m["ks_distance"].as_f64(),
                        p.ks_distance,
                        "{file} {}",
                        p.name
                    );
                }
            }
        }
        if let Some(mc) = &report.settings.moments {
            let m = compare(&problem, mc).unwrap();
            let standalone = serde_json::to_value(&m).unwrap();
            assert_eq!(
                read_text(&dir, "moments.json"),
                pretty(&standalone),
                "{file}"
            );
            let part = read_json(&dir, "moments.json");
            let (kind, r) = &m.models[0];
            let w2 = r.as_ref().unwrap().w2.last().copied();
            assert_eq!(
                part["models"][kind.to_string()]["w2"]
                    .as_array()
                    .unwrap()
                    .last()
                    .unwrap()
                    .as_f64(),
                w2
            );
        }
        let check = read_json(&dir, "check.json");
        assert_eq!(check["dimension"].as_u64(), Some(problem.dim() as u64));
        let derive = read_json(&dir, "derive.json");
        assert_eq!(derive["eta"].as_f64(), Some(report.settings.eta));
        assert_eq!(
            derive["value"].as_f64(),
            Some(problem.value(&problem.start()).unwrap())
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[test]
fn file_text_is_escaped_and_bad_eta_is_a_config_error() {
    let problem = Problem::from_str("# <script>alert(1)</script> & co\nvar x = 1\nminimize x^2/2\nnoise sd 0.1\nobserve a_b = x").unwrap();
    let dir = out_dir("escaped");
    let mut config = ReportConfig::builder(&dir);
    config.quick(true);
    run_report(
        &problem,
        &Overrides::none(),
        &config.build().unwrap(),
        &Silent,
    )
    .unwrap();
    let html = std::fs::read_to_string(dir.join("report.html")).unwrap();
    assert!(!html.contains("<script>"));
    assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt; &amp; co"));
    check_balanced(&html).unwrap();
    config.eta(Some(-1.0));
    let err = config.build().err().unwrap();
    assert_eq!(err.kind(), hasme::ErrorKind::Input);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The binary: the bundled example without FILE, its summary and page path on stdout;
/// exit 2 for a bad setting.
#[test]
fn the_command_runs_the_bundled_example() {
    let bin = env!("CARGO_BIN_EXE_hasme");
    let dir = out_dir("cli");
    let out = std::process::Command::new(bin)
        .args(["report", "--quick", "--quiet", "--seed", "5", "--out"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        stdout.contains("report.html") && !stdout.contains("NaN"),
        "{stdout}"
    );
    let html = std::fs::read_to_string(dir.join("report.html")).unwrap();
    assert!(html.contains("hasme escape examples/report.hasme"));
    assert!(dir.join("escape.json").exists());
    let bad = std::process::Command::new(bin)
        .args(["report", "--quick", "--quiet", "--eta", "0", "--out"])
        .arg(&dir)
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    let _ = std::fs::remove_dir_all(&dir);
}

/// In one or two variables the full report also runs the weak-order experiment by
/// quadrature: its part equals the standalone call's JSON and the table has the exact
/// slopes beside the Monte Carlo ones; the quick report skips it and says so.
#[test]
fn full_reports_add_the_quadrature_part() {
    let file = "examples/cosine.hasme";
    let overrides = Overrides::none();
    let problem = Problem::from_file(file, &overrides).unwrap();
    let dir = out_dir("quadrature-full");
    let mut config = ReportConfig::builder(&dir);
    config.seed(2).threads(2);
    let report = run_report(&problem, &overrides, &config.build().unwrap(), &Silent).unwrap();
    let qc = report.settings.weak_order_quadrature.as_ref().unwrap();
    let q = weak_order(
        &problem,
        &overrides,
        &qc.to_builder().threads(1).build().unwrap(),
    )
    .unwrap();
    let mut standalone = serde_json::to_value(&q).unwrap();
    standalone["file"] = file.into();
    assert_eq!(
        read_text(&dir, "weak_order_quadrature.json"),
        pretty(&standalone)
    );
    let html = std::fs::read_to_string(dir.join("report.html")).unwrap();
    check_balanced(&html).unwrap();
    assert!(html.contains("exact slope, quadrature") && html.contains("--method quadrature"));
    let _ = std::fs::remove_dir_all(&dir);

    let dir = out_dir("quadrature-quick");
    let mut config = ReportConfig::builder(&dir);
    config.quick(true).threads(2);
    let report = run_report(&problem, &overrides, &config.build().unwrap(), &Silent).unwrap();
    assert!(report.weak_order_quadrature.is_none());
    assert!(
        report
            .notes
            .iter()
            .any(|n| n.contains("skipped in quick mode"))
    );
    assert!(!dir.join("weak_order_quadrature.json").exists());
    let _ = std::fs::remove_dir_all(&dir);
}
