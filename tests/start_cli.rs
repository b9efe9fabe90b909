//! `--start FILE.json` (docs/language.md, "Start points from a file"): every command
//! that reads a start point takes it, the point replaces the file's start values and
//! random draws exactly (to the bit), JSON outputs say where the start came from, and
//! every malformed file is an input error (exit 2) naming the file and the place.
//!
//! The reference for "replaces the start" is the same objective with the start values
//! written into the file: every command's JSON must then be the same but for the echo
//! of the start file and the file's name.

mod common;

use common::*;
use serde_json::Value;
use std::path::Path;

const OBJECTIVE: &str = "param a = 2
var x = 0.3, y = -0.2
minimize 0.5*a*x^2 + 0.5*y^2 + 0.25*x*y + 0.1*x^3
noise sd 0.1
observe x = x
observe y2 = y^2
";

/// `OBJECTIVE` without its cubic term, for `moments`.
fn quadratic() -> String {
    OBJECTIVE.replace(" + 0.1*x^3", "")
}

/// An objective with the start (x, y) = (0.7, 0.1) written in.
fn moved(objective: &str) -> String {
    objective.replace("var x = 0.3, y = -0.2", "var x = 0.7, y = 0.1")
}

fn start_file(name: &str, text: &str) -> String {
    temp_file(name, text).display().to_string()
}

/// The start (x, y) = (0.7, 0.1), names in the other order, in a file of its own for
/// each `user` (tests run in parallel: one test must not read a file another is
/// rewriting).
fn moved_start(user: &str) -> String {
    start_file(
        &format!("{user}-moved.json"),
        r#"{"variables": ["y", "x"], "point": [0.1, 0.7], "note": "other fields are ignored"}"#,
    )
}

/// A JSON output without the fields that name where the problem and its start came
/// from.
fn without_origin(mut v: Value) -> Value {
    if let Some(o) = v.as_object_mut() {
        o.remove("file");
        o.remove("start_file");
    }
    v
}

/// `hasme ARGS` on the objective with `--start`, and on the objective with the start
/// written in: the same JSON but for the origin, and the first echoes the start file.
fn same_as_moved(objective: &str, args: &[&str]) {
    let with_start = temp_file(&format!("{}.hasme", args[0]), objective);
    let written = temp_file(&format!("{}-moved.hasme", args[0]), &moved(objective));
    let start = moved_start(args[0]);
    let run = |file: &Path, extra: &[&str]| {
        let file = file.display().to_string();
        let mut all = vec![args[0], file.as_str()];
        all.extend(&args[1..]);
        all.extend(extra);
        json(&hasme(&all))
    };
    let a = run(&with_start, &["--start", &start]);
    let b = run(&written, &[]);
    assert_eq!(a["start_file"], Value::from(start.clone()), "{}", args[0]);
    assert!(b.get("start_file").is_none());
    assert_eq!(without_origin(a), without_origin(b), "{}", args[0]);
}

#[test]
fn every_command_with_an_init_seed_takes_a_start_file() {
    same_as_moved(OBJECTIVE, &["check", "--json"]);
    same_as_moved(OBJECTIVE, &["derive", "--eta", "0.1", "--json"]);
    same_as_moved(OBJECTIVE, &["stationary", "--json"]);
    same_as_moved(
        &quadratic(),
        &[
            "moments", "--eta", "0.1", "--steps", "20", "--every", "5", "--json",
        ],
    );
    same_as_moved(
        OBJECTIVE,
        &[
            "simulate",
            "--eta",
            "0.1",
            "--horizon",
            "0.5",
            "--paths",
            "200",
            "--quiet",
            "--json",
        ],
    );
    same_as_moved(
        OBJECTIVE,
        &[
            "weak-order",
            "--etas",
            "0.2,0.1",
            "--horizon",
            "0.4",
            "--paths",
            "200",
            "--models",
            "sme2,hasme",
            "--sweep",
            "a=1,2",
            "--quiet",
            "--json",
        ],
    );
    same_as_moved(
        OBJECTIVE,
        &[
            "escape",
            "--eta",
            "0.1",
            "--radius",
            "1",
            "--paths",
            "100",
            "--max-steps",
            "50",
            "--models",
            "hasme",
            "--quiet",
            "--json",
        ],
    );
}

#[test]
fn report_takes_a_start_file_and_passes_it_on() {
    let file = temp_file("report.hasme", OBJECTIVE).display().to_string();
    let start = moved_start("report");
    let dir = temp_dir("start-report");
    let out = dir.join("r").display().to_string();
    let o = hasme(&[
        "report", &file, "--start", &start, "--quick", "--quiet", "--out", &out,
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let read = |part: &str| -> Value {
        let text = std::fs::read_to_string(Path::new(&out).join(part)).expect("part");
        serde_json::from_str(&text).expect("JSON")
    };
    assert_eq!(read("check.json")["start"], serde_json::json!([0.7, 0.1]));
    assert_eq!(read("derive.json")["point"], serde_json::json!([0.7, 0.1]));
    assert_eq!(
        read("weak_order.json")["start_file"],
        Value::from(start.clone())
    );
    let page = std::fs::read_to_string(Path::new(&out).join("report.html")).expect("page");
    assert!(
        page.contains(&format!("--start {start}")),
        "reproduce commands"
    );
}

#[test]
fn a_derive_output_read_back_gives_its_point_to_the_bit() {
    let o = hasme(&[
        "derive",
        "examples/network.hasme",
        "--init-seed",
        "3",
        "--json",
    ]);
    let written = json(&o);
    let path = start_file("network-start.json", &stdout(&o));
    let c = json(&hasme(&[
        "check",
        "examples/network.hasme",
        "--start",
        &path,
        "--json",
    ]));
    let bits = |v: &Value| -> Vec<u64> { f64s(v).iter().map(|x| x.to_bits()).collect() };
    assert_eq!(bits(&c["start"]), bits(&written["point"]));
    // The draws no longer make the start: no init seed, no summary of draws, the start
    // file named instead, in JSON and in text.
    assert!(c.get("init_seed").is_none() && c.get("random_starts").is_none());
    assert_eq!(c["start_file"], Value::from(path.clone()));
    let text = stdout(&hasme(&[
        "check",
        "examples/network.hasme",
        "--start",
        &path,
    ]));
    assert!(
        text.contains(&format!("start          from {path}")),
        "{text}"
    );
    assert!(!text.contains("random starts"), "{text}");
    // The init seed changes nothing once a start file is given.
    let other = json(&hasme(&[
        "check",
        "examples/network.hasme",
        "--start",
        &path,
        "--init-seed",
        "9",
        "--json",
    ]));
    assert_eq!(other, c);
}

/// `check` on the saddle example with a start file holding `text`: exit 2 and the
/// message on stderr.
fn rejected(name: &str, text: &str) -> (String, String) {
    let path = start_file(name, text);
    let o = hasme(&["check", "examples/saddle.hasme", "--start", &path]);
    assert_eq!(o.status.code(), Some(2), "{text}: {}", stderr(&o));
    assert!(o.stdout.is_empty());
    (path, stderr(&o))
}

#[test]
fn every_malformed_start_file_is_an_input_error_naming_the_place() {
    let cases: [(&str, &str, &str); 11] = [
        (
            "not-json.json",
            "{\"variables\": [\"x\", \"y\"],\n \"point\": [1 2]}",
            ":2:14: error: not valid JSON: expected `,` or `]`",
        ),
        (
            "no-variables.json",
            r#"{"point": [1, 2]}"#,
            ": no `variables` field",
        ),
        (
            "no-point.json",
            r#"{"variables": ["x", "y"]}"#,
            ": no `point` field",
        ),
        (
            "lengths.json",
            r#"{"variables": ["x", "y"], "point": [1, 2, 3]}"#,
            ": `point` has 3 values but `variables` has 2 names",
        ),
        (
            "unknown.json",
            r#"{"variables": ["x", "yy"], "point": [1, 2]}"#,
            ": variables[1]: `yy` is not a variable of the problem; did you mean `y`?",
        ),
        (
            "missing.json",
            r#"{"variables": ["y"], "point": [1]}"#,
            ": variables: no value for `x` (every variable of the problem needs one)",
        ),
        (
            "twice.json",
            r#"{"variables": ["x", "y", "x"], "point": [1, 2, 3]}"#,
            ": variables[2]: `x` appears twice (first as variables[0])",
        ),
        (
            "null.json",
            r#"{"variables": ["x", "y"], "point": [1, null]}"#,
            ": point[1]: not a finite number (null)",
        ),
        (
            "string.json",
            r#"{"variables": ["x", "y"], "point": ["1", 2]}"#,
            ": point[0]: expected a number, found the string \"1\"",
        ),
        (
            "huge.json",
            r#"{"variables": ["x", "y"], "point": [1, 1e999]}"#,
            ":1:",
        ),
        (
            "array.json",
            "[1, 2]",
            ": expected a JSON object with `variables` and `point`, found an array",
        ),
    ];
    for (name, text, expected) in cases {
        let (path, err) = rejected(name, text);
        assert!(err.contains(&format!("{path}{expected}")), "{name}: {err}");
    }
    // Text that is not JSON shows the line and a caret under the place.
    let (_, err) = rejected(
        "caret.json",
        "{\"variables\": [\"x\", \"y\"],\n \"point\": [1 2]}",
    );
    assert!(
        err.contains("2 |  \"point\": [1 2]}\n  |              ^"),
        "{err}"
    );
    // A file that cannot be read.
    let o = hasme(&[
        "check",
        "examples/saddle.hasme",
        "--start",
        "no/such/start.json",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("cannot read `no/such/start.json`"));
}
