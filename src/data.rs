//! Data tables for finite-sum objectives (docs/language.md "Finite sums"): reading CSV
//! files and holding the numbers.
//!
//! A CSV file has a header row of column names, then one row of numbers per example:
//!
//! ```text
//! x, y
//! 0.0, 1.1
//! 1.0, 2.9
//! ```
//!
//! The file is read by the `csv` crate (commas, RFC 4180 quotes, `\n` or `\r\n` line
//! ends); cells are trimmed of spaces; a column name must be a name the language
//! can read as `DATA.col`; every cell must be a finite number; blank lines are skipped;
//! a UTF-8 byte-order mark is accepted. Anything else is an error at the file, line and
//! column of the fault, with a caret, like an error in the objective file itself.

use crate::lang::ast::Sampling;
use crate::lang::{Diagnostic, Source, Span};
use serde::Serialize;

/// A finite-sum objective `f = (1/n) Σ_i F_i` over the rows of a data table
/// (docs/models.md §1): what the problem's per-example tape reads, and how SGD samples.
#[derive(Clone, Debug, PartialEq)]
pub struct FiniteSum {
    /// The table's name in the file.
    pub table: String,
    /// Where it came from: the CSV path as resolved, or `inline`.
    pub origin: String,
    /// Every column of the table.
    pub all_columns: Vec<String>,
    /// The columns the objective reads, in the order of the tape's data inputs.
    pub columns: Vec<String>,
    /// Those columns' values, row-major (`n × columns.len()`).
    pub rows: Vec<f64>,
    /// Number of examples n.
    pub n: usize,
    /// Minibatch size b (1 ≤ b ≤ n).
    pub batch: usize,
    /// How minibatches are drawn.
    pub sampling: Sampling,
}

impl FiniteSum {
    /// The data inputs of example `i` (0-based).
    pub fn row(&self, i: usize) -> &[f64] {
        let c = self.columns.len();
        &self.rows[i * c..(i + 1) * c]
    }

    /// The factor κ in `Σ(x) = κ C(x)`: `1/b` with replacement, `(n − b)/(b(n − 1))`
    /// without (0 when b = n: the full batch has no noise).
    pub fn noise_factor(&self) -> f64 {
        let (n, b) = (self.n as f64, self.batch as f64);
        match self.sampling {
            Sampling::WithReplacement => 1.0 / b,
            Sampling::WithoutReplacement if self.batch >= self.n => 0.0,
            Sampling::WithoutReplacement => (n - b) / (b * (n - 1.0)),
        }
    }

    /// A summary for reports.
    pub fn summary(&self) -> FiniteSumSummary {
        FiniteSumSummary {
            table: self.table.clone(),
            origin: self.origin.clone(),
            rows: self.n,
            columns: self.all_columns.clone(),
            used_columns: self.columns.clone(),
            batch: self.batch,
            sampling: sampling_name(self.sampling),
            noise_factor: self.noise_factor(),
        }
    }
}

/// The spelling of a sampling mode in the language.
pub fn sampling_name(s: Sampling) -> &'static str {
    match s {
        Sampling::WithReplacement => "with-replacement",
        Sampling::WithoutReplacement => "without-replacement",
    }
}

/// What `hasme check` reports about a finite sum (JSON key `finite_sum`).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FiniteSumSummary {
    /// The table's name.
    pub table: String,
    /// The CSV path, or `inline`.
    pub origin: String,
    /// Number of rows n.
    pub rows: usize,
    /// All columns of the table.
    pub columns: Vec<String>,
    /// The columns the objective reads.
    pub used_columns: Vec<String>,
    /// Minibatch size b.
    pub batch: usize,
    /// `with-replacement` or `without-replacement`.
    pub sampling: &'static str,
    /// κ in Σ = κ C: 1/b, or (n − b)/(b(n − 1)).
    pub noise_factor: f64,
}

/// A data table: named columns of finite numbers, stored row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct Table {
    /// Column names, in file order.
    pub columns: Vec<String>,
    /// The numbers, row after row (`rows × columns.len()`).
    pub values: Vec<f64>,
}

impl Table {
    /// Number of rows.
    pub fn rows(&self) -> usize {
        if self.columns.is_empty() {
            0
        } else {
            self.values.len() / self.columns.len()
        }
    }

    /// Entry (row `i`, column `j`), both 0-based.
    pub fn get(&self, i: usize, j: usize) -> f64 {
        self.values[i * self.columns.len() + j]
    }
}

/// Whether `name` is a valid name in the language (`[A-Za-z_][A-Za-z0-9_]*`).
pub fn is_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Parses a CSV table. Errors are diagnostics in `source` (the CSV file itself).
///
/// ```
/// use hasme::data::parse_csv;
/// use hasme::lang::Source;
/// let t = parse_csv(&Source::new("pts.csv", "x, y\n0, 1.5\n2, -3\n")).unwrap();
/// assert_eq!(t.columns, ["x", "y"]);
/// assert_eq!(t.rows(), 2);
/// assert_eq!(t.get(1, 1), -3.0);
/// let e = parse_csv(&Source::new("pts.csv", "x, y\n0, 1.5\n2, oops\n")).unwrap_err();
/// assert_eq!((e.line, e.column), (3, 4));
/// ```
pub fn parse_csv(source: &Source) -> Result<Table, Box<Diagnostic>> {
    let text = source.text();
    let err = |start: usize, end: usize, message: String, label: &str| {
        Box::new(source.diagnostic(Span::new(start, end), message, label))
    };
    // A byte-order mark is not part of the first column's name (the reader keeps it).
    let bom = if text.starts_with('\u{feff}') {
        '\u{feff}'.len_utf8()
    } else {
        0
    };
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(&text.as_bytes()[bom..]);
    let mut columns: Vec<String> = Vec::new();
    let mut header_span = Span::default();
    let mut values = Vec::new();
    let mut record = csv::StringRecord::new();
    loop {
        let start = bom + reader.position().byte() as usize;
        match reader.read_record(&mut record) {
            Ok(true) => {}
            Ok(false) => break,
            // The text is UTF-8 and rows may differ in length, so the reader has no
            // error of its own to give; should one come, it is located at the record.
            Err(e) => return Err(err(start, start, format!("unreadable CSV: {e}"), "here")),
        }
        // A line of spaces is one empty cell to the reader, and blank here.
        if record.len() <= 1 && record.get(0).is_none_or(|cell| cell.trim().is_empty()) {
            continue;
        }
        let cells = cell_spans(text, start, &record);
        let line_end = cells.last().map_or(start, |c| c.raw_end);
        if columns.is_empty() {
            header_span = Span::new(cells.first().map_or(start, |c| c.raw_start), line_end);
            for cell in &cells {
                let raw = cell.text.as_str();
                // A name quoted after a space is not unquoted by the reader.
                let name = raw
                    .strip_prefix('"')
                    .and_then(|r| r.strip_suffix('"'))
                    .unwrap_or(raw);
                let (s, e) = (cell.start, cell.end);
                if name.is_empty() {
                    return Err(err(
                        s,
                        e,
                        "empty column name in the header row".into(),
                        "expected a column name",
                    ));
                }
                if !is_name(name) {
                    return Err(err(
                        s,
                        e,
                        format!(
                            "column name `{name}` is not a name (letters, digits and `_`, not starting with a digit), so it could not be read as `DATA.{name}`"
                        ),
                        "not a valid column name",
                    ));
                }
                if columns.iter().any(|c| c == name) {
                    return Err(err(
                        s,
                        e,
                        format!("column `{name}` appears twice in the header row"),
                        "duplicate column",
                    ));
                }
                columns.push(name.to_string());
            }
            continue;
        }
        if cells.len() != columns.len() {
            let (s, e) = if cells.len() > columns.len() {
                (cells[columns.len()].start, line_end)
            } else {
                (line_end, line_end)
            };
            return Err(err(
                s,
                e,
                format!(
                    "this row has {} cells but the header has {} columns",
                    cells.len(),
                    columns.len()
                ),
                if cells.len() > columns.len() {
                    "extra cells"
                } else {
                    "missing cells"
                },
            ));
        }
        for (j, cell) in cells.iter().enumerate() {
            let (s, e, text) = (cell.start, cell.end, cell.text.as_str());
            if text.is_empty() {
                return Err(err(
                    s,
                    e,
                    format!("empty cell in column `{}`", columns[j]),
                    "expected a number",
                ));
            }
            match text.parse::<f64>() {
                Ok(v) if v.is_finite() => values.push(v),
                Ok(v) => {
                    return Err(err(
                        s,
                        e,
                        format!(
                            "`{text}` in column `{}` is not a finite number ({v})",
                            columns[j]
                        ),
                        "not finite",
                    ));
                }
                Err(_) => {
                    return Err(err(
                        s,
                        e,
                        format!("`{text}` in column `{}` is not a number", columns[j]),
                        "expected a number",
                    ));
                }
            }
        }
    }
    if columns.is_empty() {
        return Err(err(
            0,
            0,
            "the data file is empty: expected a header row of column names, then rows of numbers"
                .into(),
            "empty file",
        ));
    }
    if values.is_empty() {
        return Err(Box::new(source.diagnostic(
            header_span,
            "the table has a header but no rows",
            "expected rows of numbers after the header",
        )));
    }
    Ok(Table { columns, values })
}

/// One cell of a record: its text trimmed of spaces, where that text lies in the file
/// (for the caret), and where the raw cell (quotes and spaces included) ends.
struct Cell {
    text: String,
    start: usize,
    end: usize,
    raw_start: usize,
    raw_end: usize,
}

/// Places the cells of `record`, read by the csv reader from `start` in `text`, back in
/// the file. The reader gives a record's start but not its cells', so they are counted
/// from its output: a field is its text, or, when it starts with a quote, the text
/// quoted with each inner quote doubled; fields are one comma apart. (Text after a
/// closing quote, which the reader keeps, can shift later carets of that line; the
/// spans stay inside the file.)
fn cell_spans(text: &str, start: usize, record: &csv::StringRecord) -> Vec<Cell> {
    let bytes = text.as_bytes();
    // The reader skips line ends before a record.
    let mut at = start;
    while matches!(bytes.get(at), Some(b'\r' | b'\n')) {
        at += 1;
    }
    let mut cells = Vec::with_capacity(record.len());
    for field in record.iter() {
        let trimmed = field.trim();
        let (lead, trail) = (
            field.len() - field.trim_start().len(),
            field.len() - field.trim_end().len(),
        );
        // A quoted cell's caret covers its quotes, as it is written.
        let (raw_len, start, end) = if bytes.get(at) == Some(&b'"') {
            let raw_len = field.len() + 2 + field.matches('"').count();
            (raw_len, at, at + raw_len - trail)
        } else {
            (field.len(), at + lead, at + field.len() - trail)
        };
        let raw_end = (at + raw_len).min(text.len());
        cells.push(Cell {
            text: trimmed.to_string(),
            start: start.min(raw_end),
            end: end.min(raw_end),
            raw_start: at.min(text.len()),
            raw_end,
        });
        at = raw_end + 1;
    }
    cells
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Table, Box<Diagnostic>> {
        parse_csv(&Source::new("t.csv", text))
    }

    #[test]
    fn reads_headers_rows_and_odd_but_valid_layouts() {
        let t = parse("\u{feff}\"a\",b_2\r\n\r\n 1 , 2e-3\r\n-4,+5\n\n").unwrap();
        assert_eq!(t.columns, ["a", "b_2"]);
        assert_eq!(t.values, [1.0, 2e-3, -4.0, 5.0]);
        assert_eq!(t.rows(), 2);
    }

    #[test]
    fn each_fault_is_located() {
        let cases: [(&str, usize, usize, &str); 8] = [
            ("", 1, 1, "empty"),
            ("x,y\n", 1, 1, "no rows"),
            ("x,y\n1,2\n3\n", 3, 2, "1 cells but the header has 2"),
            ("x,y\n1,2,3\n", 2, 5, "3 cells"),
            ("x,y\n1,abc\n", 2, 3, "`abc` in column `y` is not a number"),
            ("x,y\n1,inf\n", 2, 3, "not a finite number"),
            ("x,x\n1,2\n", 1, 3, "appears twice"),
            ("x,2y\n1,2\n", 1, 3, "not a name"),
        ];
        for (text, line, column, message) in cases {
            let e = parse(text).expect_err(text);
            assert_eq!((e.line, e.column), (line, column), "{text:?}: {e:?}");
            assert!(e.message.contains(message), "{text:?}: {}", e.message);
        }
        let e = parse("x,y\n1,\n").unwrap_err();
        assert!(e.message.contains("empty cell"), "{}", e.message);
    }

    /// Quotes follow RFC 4180 (a quoted cell may hold a comma or a doubled quote), and
    /// faults after blank lines, quoted cells or `\r\n` line ends are still located at
    /// their cell, a quoted cell's caret covering its quotes.
    #[test]
    fn quoted_cells_and_skipped_lines_keep_their_places() {
        let t = parse("\"x\",\"y\"\n\"1\", 2\n").unwrap();
        assert_eq!(
            (t.columns.clone(), t.values),
            (vec!["x".into(), "y".into()], vec![1.0, 2.0])
        );
        let cases: [(&str, usize, usize, usize, &str); 5] = [
            ("x,y\n\n\n1,2\n\n3,abc\n", 6, 3, 3, "`abc` in column `y`"),
            // A quote after a space is text, not a quote.
            ("x,y\n  \n1,2\n3, \"q\"\n", 4, 4, 3, "`\"q\"` in column `y`"),
            ("x,y\n\"1,5\",2\n", 2, 1, 5, "`1,5` in column `x`"),
            (
                "x\n\"a\"\"b\",zz\n",
                2,
                8,
                2,
                "2 cells but the header has 1",
            ),
            ("x,y\r\n1,2\r\n3,zz\r\n", 3, 3, 2, "`zz` in column `y`"),
        ];
        for (text, line, column, carets, message) in cases {
            let e = parse(text).expect_err(text);
            assert_eq!(
                (e.line, e.column, e.caret_len),
                (line, column, carets),
                "{text:?}: {e}"
            );
            assert!(e.message.contains(message), "{text:?}: {}", e.message);
        }
    }
}
