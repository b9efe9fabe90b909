//! How reports write numbers: one formatter for the numbers of every text table
//! ([`num`], [`cell`], in the [`Style`] each column asks for), and the one JSON shape
//! the reports share beyond what `serde` derives, an object of named entries in a
//! given order ([`Named`]).
//!
//! The styles are the ones the commands have always printed (their text outputs are a
//! contract, compared byte for byte by the golden tests), gathered here so that a
//! column's format is a name, not a format string repeated across modules.

use serde::ser::{Serialize, SerializeMap, Serializer};

/// How a number prints in text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Style {
    /// Scientific with this many digits after the point (`{:.3e}`: `1.235e-2`).
    Sci(usize),
    /// Fixed with this many digits after the point (`{:.4}`: `0.0123`).
    Fixed(usize),
    /// The shortest form that reads back exactly when it has at most 12 characters,
    /// else scientific with 10 significant digits; −0 prints as 0 (a negated zero
    /// gradient would read as a sign error). What `check` and `derive` print.
    Exact,
    /// The shorter of the plain and the scientific form, each the shortest that reads
    /// back exactly (`1e-10`, not `0.0000000001`; `0.5`, not `5e-1`), when it has at
    /// most 12 characters, else scientific with 10 significant digits; −0 prints as 0.
    /// What `stationary` prints.
    Shortest,
    /// This many significant digits: plain decimals (trailing zeros dropped) for
    /// magnitudes in [1e−3, 1e5), scientific otherwise; zero prints as `0`. What
    /// `moments` prints.
    Significant(usize),
    /// Rounded to this many digits after the point for magnitudes in [1e−3, 1e5) (and
    /// zero), printed in the shortest form; scientific with one digit fewer after the
    /// point otherwise. What the report page prints.
    Rounded(usize),
}

/// A point with its coordinates named, as errors and reports print it:
/// `(x = 0.1, y = 2)`, each value exact (it reads back to the same bits) in the
/// shorter of Rust's plain and scientific forms, so a coordinate of 1e-19 prints as
/// `1e-19`, not with nineteen zeros.
///
/// ```
/// use hasme::format::point;
/// let names = ["x".to_string(), "y".to_string()];
/// assert_eq!(point(&names, &[0.1, 2.0]), "(x = 0.1, y = 2)");
/// assert_eq!(point(&names, &[2.103917556e-19, -1e21]), "(x = 2.103917556e-19, y = -1e21)");
/// ```
pub fn point(names: &[String], x: &[f64]) -> String {
    let parts: Vec<String> = names
        .iter()
        .zip(x)
        .map(|(n, &v)| {
            let (plain, sci) = (format!("{v}"), format!("{v:e}"));
            let v = if sci.len() < plain.len() { sci } else { plain };
            format!("{n} = {v}")
        })
        .collect();
    format!("({})", parts.join(", "))
}

/// `x` in `style`.
///
/// ```
/// use hasme::format::{Style, num};
/// assert_eq!(num(0.0123456, Style::Sci(3)), "1.235e-2");
/// assert_eq!(num(0.012345, Style::Fixed(4)), "0.0123");
/// assert_eq!(num(-0.0, Style::Exact), "0");
/// assert_eq!(num(1.0 / 3.0, Style::Exact), "3.333333333e-1");
/// assert_eq!(num(1e-10, Style::Exact), "0.0000000001");
/// assert_eq!(num(1e-10, Style::Shortest), "1e-10");
/// assert_eq!(num(0.5, Style::Shortest), "0.5");
/// assert_eq!(num(123.456789, Style::Significant(6)), "123.457");
/// assert_eq!(num(2.5e-7, Style::Significant(6)), "2.50000e-7");
/// assert_eq!(num(0.123456, Style::Rounded(4)), "0.1235");
/// assert_eq!(num(123456.0, Style::Rounded(4)), "1.235e5");
/// ```
pub fn num(x: f64, style: Style) -> String {
    match style {
        Style::Sci(p) => format!("{x:.p$e}"),
        Style::Fixed(p) => format!("{x:.p$}"),
        Style::Exact => {
            let x = if x == 0.0 { 0.0 } else { x };
            let s = format!("{x}");
            if s.len() <= 12 { s } else { format!("{x:.9e}") }
        }
        Style::Shortest => {
            let x = if x == 0.0 { 0.0 } else { x };
            let (plain, sci) = (format!("{x}"), format!("{x:e}"));
            let s = if sci.len() < plain.len() { sci } else { plain };
            if s.len() <= 12 { s } else { format!("{x:.9e}") }
        }
        Style::Significant(digits) => {
            if x == 0.0 {
                return "0".to_string();
            }
            let last = digits.saturating_sub(1);
            if (1e-3..1e5).contains(&x.abs()) {
                let decimals = (last as i32 - x.abs().log10().floor() as i32).max(0) as usize;
                let s = format!("{x:.decimals$}");
                if s.contains('.') {
                    s.trim_end_matches('0').trim_end_matches('.').to_string()
                } else {
                    s
                }
            } else {
                format!("{x:.last$e}")
            }
        }
        Style::Rounded(decimals) => {
            if x != 0.0 && (x.abs() < 1e-3 || x.abs() >= 1e5) {
                let p = decimals.saturating_sub(1);
                format!("{x:.p$e}")
            } else {
                let scale = 10f64.powi(decimals as i32);
                format!("{}", (x * scale).round() / scale)
            }
        }
    }
}

/// A table cell: `x` in `style`, or `—` where there is no number.
///
/// ```
/// use hasme::format::{Style, cell};
/// assert_eq!(cell(Some(2.0), Style::Sci(6)), "2.000000e0");
/// assert_eq!(cell(None, Style::Sci(6)), "—");
/// ```
pub fn cell(x: Option<f64>, style: Style) -> String {
    x.map_or_else(|| "—".to_string(), |x| num(x, style))
}

/// Entries serialised as a JSON object, keys in the order given (a model's or an
/// observable's name → its numbers).
#[derive(Clone, Debug, PartialEq)]
pub struct Named<K, V>(pub Vec<(K, V)>);

impl<K: AsRef<str>, V> Named<K, V> {
    /// The entries in order.
    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.0.iter().map(|(k, v)| (k, v))
    }

    /// The value named `name`, if any.
    pub fn get(&self, name: &str) -> Option<&V> {
        self.0
            .iter()
            .find(|(k, _)| k.as_ref() == name)
            .map(|(_, v)| v)
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<K, V> Default for Named<K, V> {
    fn default() -> Self {
        Named(Vec::new())
    }
}

impl<K, V> FromIterator<(K, V)> for Named<K, V> {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        Named(iter.into_iter().collect())
    }
}

impl<K: AsRef<str>, V: Serialize> Serialize for Named<K, V> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            map.serialize_entry(k.as_ref(), v)?;
        }
        map.end()
    }
}

/// A report's JSON with the input file's name appended as its last field, `file`: what
/// the commands print with `--json`.
///
/// ```
/// use hasme::format::WithFile;
/// let v = serde_json::to_string(&WithFile::new(&serde_json::json!({"a": 1}), "f.hasme"))?;
/// assert_eq!(v, r#"{"a":1,"file":"f.hasme"}"#);
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Debug, serde::Serialize)]
pub struct WithFile<'a, T: Serialize> {
    #[serde(flatten)]
    report: &'a T,
    file: &'a str,
}

impl<'a, T: Serialize> WithFile<'a, T> {
    /// `report`, then `"file": file`.
    pub fn new(report: &'a T, file: &'a str) -> WithFile<'a, T> {
        WithFile { report, file }
    }
}
