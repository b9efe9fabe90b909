//! Start points from a file (`--start FILE.json`, docs/language.md "Start points from a
//! file"): a JSON object with `variables` (coordinate names) and `point` (numbers, as
//! many), as `derive --json` and `stationary --json` write them; other fields are
//! ignored. The point replaces the file's start values and its random draws.
//!
//! Reading checks the file alone (JSON, the two fields, equal lengths, finite numbers,
//! no name twice); [`StartPoint::point_for`] then maps the names onto a problem's
//! variables, in any order, and says which names are unknown (with a suggestion) or
//! missing. Every error names the file and the place in the JSON (`point[3]`); text that
//! is not JSON gets a diagnostic at serde_json's line and column.
//!
//! Numbers are read with serde_json's `float_roundtrip`, so a point written by a JSON
//! output reads back to the same bits.

use super::ProblemError;
use crate::lang::Source;
use crate::lang::source::suggest;
use serde_json::Value;
use std::collections::HashMap;
use std::path::Path;

/// A named point read from a start file, not yet matched to a problem.
///
/// ```
/// use hasme::problem::StartPoint;
/// let s = StartPoint::from_json("s.json", r#"{"variables": ["y", "x"], "point": [2, 1]}"#)?;
/// let names = ["x".to_string(), "y".to_string()];
/// assert_eq!(s.point_for(&names)?, [1.0, 2.0]);
/// let err = StartPoint::from_json("s.json", r#"{"variables": ["x"], "point": [null]}"#).unwrap_err();
/// assert_eq!(err.to_string(), "s.json: point[0]: not a finite number (null)");
/// # Ok::<(), hasme::ProblemError>(())
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct StartPoint {
    origin: String,
    names: Vec<String>,
    values: Vec<f64>,
}

impl StartPoint {
    /// Reads and checks a start file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<StartPoint, ProblemError> {
        let path = path.as_ref();
        let origin = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|e| ProblemError::Io {
            path: origin.clone(),
            message: e.to_string(),
        })?;
        let source = Source::from_bytes(origin.clone(), bytes)
            .map_err(|d| ProblemError::Start(d.to_string()))?;
        StartPoint::from_json(&origin, source.text())
    }

    /// Parses and checks the JSON text of a start file; `origin` names it in errors.
    pub fn from_json(origin: &str, text: &str) -> Result<StartPoint, ProblemError> {
        let fail = |message: String| ProblemError::Start(format!("{origin}: {message}"));
        let value: Value = serde_json::from_str(text)
            .map_err(|e| ProblemError::Start(json_diagnostic(origin, text, &e)))?;
        let Value::Object(object) = value else {
            return Err(fail(format!(
                "expected a JSON object with `variables` and `point`, found {}",
                describe(&value)
            )));
        };
        let field = |name: &str| -> Result<&Vec<Value>, ProblemError> {
            match object.get(name) {
                None => Err(fail(format!(
                    "no `{name}` field (a start file holds `variables`, the coordinate names, and `point`, their values)"
                ))),
                Some(Value::Array(items)) => Ok(items),
                Some(other) => Err(fail(format!(
                    "{name}: expected an array, found {}",
                    describe(other)
                ))),
            }
        };
        let (names, point) = (field("variables")?, field("point")?);
        let names: Vec<String> = names
            .iter()
            .enumerate()
            .map(|(i, v)| match v {
                Value::String(s) => Ok(s.clone()),
                other => Err(fail(format!(
                    "variables[{i}]: expected a name (a string), found {}",
                    describe(other)
                ))),
            })
            .collect::<Result<_, _>>()?;
        let values: Vec<f64> = point
            .iter()
            .enumerate()
            .map(|(i, v)| match v.as_f64() {
                Some(x) if x.is_finite() => Ok(x),
                _ if v.is_null() => Err(fail(format!("point[{i}]: not a finite number (null)"))),
                _ => Err(fail(format!(
                    "point[{i}]: expected a number, found {}",
                    describe(v)
                ))),
            })
            .collect::<Result<_, _>>()?;
        StartPoint::new(origin, names, values)
    }

    /// A start point given by names and values, checked as a file's would be: as many
    /// values as names, every value finite, no name twice. `origin` names it in errors.
    pub fn new(
        origin: impl Into<String>,
        names: Vec<String>,
        values: Vec<f64>,
    ) -> Result<StartPoint, ProblemError> {
        let origin = origin.into();
        let fail = |message: String| ProblemError::Start(format!("{origin}: {message}"));
        if names.len() != values.len() {
            return Err(fail(format!(
                "`point` has {} {} but `variables` has {} {}",
                values.len(),
                plural(values.len(), "value", "values"),
                names.len(),
                plural(names.len(), "name", "names")
            )));
        }
        if let Some(i) = values.iter().position(|v| !v.is_finite()) {
            return Err(fail(format!("point[{i}]: not a finite number")));
        }
        let mut seen: HashMap<&str, usize> = HashMap::with_capacity(names.len());
        for (i, n) in names.iter().enumerate() {
            if let Some(first) = seen.insert(n, i) {
                return Err(fail(format!(
                    "variables[{i}]: `{n}` appears twice (first as variables[{first}])"
                )));
            }
        }
        Ok(StartPoint {
            origin,
            names,
            values,
        })
    }

    /// Where the point came from (the file's path as given).
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The names, in the file's order.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// The values, in the file's order.
    pub fn values(&self) -> &[f64] {
        &self.values
    }

    /// The point in the order of `variables`: every file name must be one of them
    /// (else an error naming it, with the closest variable), and every variable must
    /// have a value (else an error naming the missing ones).
    pub fn point_for(&self, variables: &[String]) -> Result<Vec<f64>, ProblemError> {
        let fail = |message: String| ProblemError::Start(format!("{}: {message}", self.origin));
        let index: HashMap<&str, usize> = variables
            .iter()
            .enumerate()
            .map(|(i, n)| (n.as_str(), i))
            .collect();
        let mut point: Vec<Option<f64>> = vec![None; variables.len()];
        for (i, (name, &value)) in self.names.iter().zip(&self.values).enumerate() {
            let Some(&k) = index.get(name.as_str()) else {
                let hint = suggest(name, variables.iter().map(String::as_str))
                    .map_or(String::new(), |s| format!("; did you mean `{s}`?"));
                return Err(fail(format!(
                    "variables[{i}]: `{name}` is not a variable of the problem{hint}"
                )));
            };
            point[k] = Some(value);
        }
        let missing: Vec<&str> = variables
            .iter()
            .zip(&point)
            .filter(|(_, v)| v.is_none())
            .map(|(n, _)| n.as_str())
            .collect();
        if !missing.is_empty() {
            // A handful of names say enough; a whole matrix would drown the message.
            const SHOWN: usize = 5;
            let mut list: Vec<String> = missing
                .iter()
                .take(SHOWN)
                .map(|n| format!("`{n}`"))
                .collect();
            if missing.len() > SHOWN {
                list.push(format!("and {} more", missing.len() - SHOWN));
            }
            return Err(fail(format!(
                "variables: no value for {} (every variable of the problem needs one)",
                list.join(", ")
            )));
        }
        Ok(point.into_iter().flatten().collect())
    }
}

fn plural<'a>(n: usize, one: &'a str, many: &'a str) -> &'a str {
    if n == 1 { one } else { many }
}

/// What a JSON value is, for "expected …, found …".
fn describe(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => format!("`{b}`"),
        Value::Number(n) => format!("the number {n}"),
        Value::String(s) if s.chars().count() <= 20 => format!("the string \"{s}\""),
        Value::String(_) => "a string".into(),
        Value::Array(_) => "an array".into(),
        Value::Object(_) => "an object".into(),
    }
}

/// A serde_json error as a diagnostic at its line and column, with the line and a caret.
fn json_diagnostic(origin: &str, text: &str, e: &serde_json::Error) -> String {
    let source = Source::new(origin, text);
    // serde_json counts lines from 1 and columns in bytes from 1 (0 at the start of a
    // line, before any byte was read).
    let line_start: usize = text
        .split_inclusive('\n')
        .take(e.line().saturating_sub(1))
        .map(str::len)
        .sum();
    let offset = (line_start + e.column().saturating_sub(1)).min(text.len());
    let message = e.to_string();
    let message = message
        .rsplit_once(" at line ")
        .map_or(message.as_str(), |(m, _)| m);
    let label = if e.is_eof() {
        "the JSON ends early"
    } else {
        "not valid JSON here"
    };
    source
        .diagnostic(
            crate::lang::Span::new(offset, offset),
            format!("not valid JSON: {message}"),
            label,
        )
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn err(text: &str) -> String {
        StartPoint::from_json("s.json", text)
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn names_map_in_any_order_and_other_fields_are_ignored() {
        let s = StartPoint::from_json(
            "s.json",
            r#"{"file": "f", "variables": ["b", "a", "c"], "point": [2.5, -1, 3e-300], "value": 1}"#,
        )
        .unwrap();
        assert_eq!(
            s.point_for(&names(&["a", "b", "c"])).unwrap(),
            [-1.0, 2.5, 3e-300]
        );
    }

    #[test]
    fn every_malformed_file_is_named() {
        assert!(err("[1, 2]").contains("expected a JSON object"));
        assert!(err(r#"{"point": [1]}"#).contains("no `variables` field"));
        assert!(err(r#"{"variables": ["x"]}"#).contains("no `point` field"));
        assert!(
            err(r#"{"variables": "x", "point": [1]}"#)
                .contains("variables: expected an array, found the string \"x\"")
        );
        assert!(
            err(r#"{"variables": [1], "point": [1]}"#)
                .contains("variables[0]: expected a name (a string), found the number 1")
        );
        assert!(
            err(r#"{"variables": ["x", "y"], "point": [1]}"#)
                .contains("`point` has 1 value but `variables` has 2 names")
        );
        assert!(
            err(r#"{"variables": ["x", "y"], "point": [1, "2"]}"#)
                .contains("point[1]: expected a number, found the string \"2\"")
        );
        assert!(
            err(r#"{"variables": ["x", "x"], "point": [1, 2]}"#)
                .contains("variables[1]: `x` appears twice (first as variables[0])")
        );
        let e = err("{\"variables\": [\"x\"],\n \"point\": [1,]}");
        assert!(e.starts_with("s.json:2:14: error: not valid JSON: "), "{e}");
        assert!(e.contains("\n2 |  \"point\": [1,]}"), "{e}");
        let e = err(r#"{"variables": ["x"], "point": [1e999]}"#);
        assert!(e.contains("s.json:1:") && e.contains("out of range"), "{e}");
    }

    #[test]
    fn unknown_and_missing_names_are_errors() {
        let s = StartPoint::from_json(
            "s.json",
            r#"{"variables": ["W[1,1]", "W[1,3]"], "point": [1, 2]}"#,
        )
        .unwrap();
        let e = s
            .point_for(&names(&["W[1,1]", "W[1,2]"]))
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "s.json: variables[1]: `W[1,3]` is not a variable of the problem; did you mean `W[1,1]`?"
        );
        let s = StartPoint::from_json("s.json", r#"{"variables": ["x"], "point": [1]}"#).unwrap();
        let vars = names(&["x", "a", "b", "c", "d", "e", "f"]);
        let e = s.point_for(&vars).unwrap_err().to_string();
        assert!(
            e.contains("no value for `a`, `b`, `c`, `d`, `e`, and 1 more"),
            "{e}"
        );
        assert_eq!(
            StartPoint::from_json("s.json", r#"{"variables": [], "point": []}"#)
                .unwrap()
                .point_for(&[])
                .unwrap(),
            Vec::<f64>::new()
        );
    }

    #[test]
    fn numbers_read_back_to_their_bits() {
        let x: [f64; 5] = [
            0.1,
            1.0 / 3.0,
            -2.718281828459045e-7,
            5e-324,
            1.7976931348623157e308,
        ];
        let text = serde_json::to_string(
            &serde_json::json!({"variables": ["a", "b", "c", "d", "e"], "point": x}),
        )
        .unwrap();
        let s = StartPoint::from_json("s.json", &text).unwrap();
        for (a, b) in s.values().iter().zip(x) {
            assert_eq!(a.to_bits(), b.to_bits());
        }
    }
}
