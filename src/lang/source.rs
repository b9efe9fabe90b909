//! Source text and diagnostics: every error the language reports names the file, the
//! line and column, shows the line with a caret under the place, and says what was
//! expected (docs/language.md "Errors").

use std::fmt;

/// A half-open byte range `[start, end)` into a source text.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Span {
    /// First byte.
    pub start: usize,
    /// One past the last byte.
    pub end: usize,
}

impl Span {
    /// The span from `start` to `end` (bytes).
    pub fn new(start: usize, end: usize) -> Span {
        Span { start, end }
    }

    /// The smallest span covering both.
    pub fn to(self, other: Span) -> Span {
        Span::new(self.start.min(other.start), self.end.max(other.end))
    }
}

/// A named source text (an objective file, or a string given to the library).
#[derive(Clone, Debug)]
pub struct Source {
    name: String,
    text: String,
}

/// A resolved position: 1-based line and column (columns count characters).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Position {
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
}

impl Source {
    /// A source with a display name (usually the file path).
    pub fn new(name: impl Into<String>, text: impl Into<String>) -> Source {
        Source {
            name: name.into(),
            text: text.into(),
        }
    }

    /// Reads bytes that must be UTF-8; a bad byte is a diagnostic at its position.
    pub fn from_bytes(name: impl Into<String>, bytes: Vec<u8>) -> Result<Source, Box<Diagnostic>> {
        let name = name.into();
        match String::from_utf8(bytes) {
            Ok(text) => Ok(Source { name, text }),
            Err(err) => {
                let good = err.utf8_error().valid_up_to();
                let bytes = err.into_bytes();
                let text = String::from_utf8_lossy(&bytes[..good]).into_owned();
                let source = Source { name, text };
                let at = good;
                Err(Box::new(source.diagnostic(
                    Span::new(at, at),
                    format!("the file is not valid UTF-8 (bad byte at offset {at})"),
                    "expected text encoded as UTF-8",
                )))
            }
        }
    }

    /// The display name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The whole text.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The text under a span (clamped to the text and to character boundaries).
    pub fn snippet(&self, span: Span) -> &str {
        let start = floor_char(&self.text, span.start);
        let end = floor_char(&self.text, span.end.max(start));
        &self.text[start..end]
    }

    /// Line and column of a byte offset.
    pub fn position(&self, offset: usize) -> Position {
        let offset = floor_char(&self.text, offset);
        let before = &self.text[..offset];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = self.text[line_start..offset].chars().count() + 1;
        Position { line, column }
    }

    /// Builds a diagnostic at a span, with the text shown under the caret.
    pub fn diagnostic(
        &self,
        span: Span,
        message: impl Into<String>,
        label: impl Into<String>,
    ) -> Diagnostic {
        let start = floor_char(&self.text, span.start);
        let end = floor_char(&self.text, span.end.max(start));
        let position = self.position(start);
        let line_start = self.text[..start].rfind('\n').map_or(0, |i| i + 1);
        let line_end = self.text[start..]
            .find('\n')
            .map_or(self.text.len(), |i| start + i);
        let line_text = self.text[line_start..line_end].trim_end_matches('\r');
        // Carets cover the span on its first line, at least one character.
        let caret_len = self.text[start..end.min(line_end).max(start)]
            .chars()
            .count()
            .max(1);
        let prefix = &self.text[line_start..start.min(line_start + line_text.len())];
        Diagnostic {
            file: self.name.clone(),
            line: position.line,
            column: position.column,
            message: message.into(),
            label: label.into(),
            line_text: expand_tabs(line_text),
            caret_offset: expand_tabs(prefix).chars().count(),
            caret_len,
            notes: Vec::new(),
        }
    }
}

/// The texts a compiled expression's spans point into: a file and, optionally, one
/// expression compiled later against the file's names (a command line's `--when`).
/// The expression's spans are shifted past the end of the file ([`Sources::base`]), so
/// a span alone says which text it points into, and the `let`s of the file compiled
/// into the same tape keep their places in the file.
#[derive(Clone, Copy, Debug)]
pub struct Sources<'a> {
    file: &'a Source,
    expression: Option<&'a Source>,
}

impl<'a> Sources<'a> {
    /// The file alone.
    pub fn file(file: &'a Source) -> Sources<'a> {
        Sources {
            file,
            expression: None,
        }
    }

    /// The file and an expression whose spans start at [`Sources::base`]`(file)`.
    pub fn with_expression(file: &'a Source, expression: &'a Source) -> Sources<'a> {
        Sources {
            file,
            expression: Some(expression),
        }
    }

    /// Where the spans of an expression compiled against `file` start: one past the
    /// file's end, so the empty span at the very end of the file stays the file's.
    pub fn base(file: &Source) -> usize {
        file.text.len() + 1
    }

    /// The file.
    pub fn file_source(&self) -> &'a Source {
        self.file
    }

    /// The file's display name.
    pub fn name(&self) -> &'a str {
        self.file.name()
    }

    /// The file's text.
    pub fn text(&self) -> &'a str {
        self.file.text()
    }

    /// The text a span points into, and the span within it.
    fn locate(&self, span: Span) -> (&'a Source, Span) {
        let base = Sources::base(self.file);
        match self.expression {
            Some(e) if span.start >= base => (e, Span::new(span.start - base, span.end - base)),
            _ => (self.file, span),
        }
    }

    /// [`Source::snippet`] in the text the span points into.
    pub fn snippet(&self, span: Span) -> &'a str {
        let (source, span) = self.locate(span);
        source.snippet(span)
    }

    /// [`Source::position`] of a span's start, in the text it points into.
    pub fn position(&self, span: Span) -> Position {
        let (source, span) = self.locate(span);
        source.position(span.start)
    }

    /// [`Source::diagnostic`] in the text the span points into.
    pub fn diagnostic(
        &self,
        span: Span,
        message: impl Into<String>,
        label: impl Into<String>,
    ) -> Diagnostic {
        let (source, span) = self.locate(span);
        source.diagnostic(span, message, label)
    }
}

fn floor_char(text: &str, offset: usize) -> usize {
    let mut i = offset.min(text.len());
    while !text.is_char_boundary(i) {
        i -= 1;
    }
    i
}

fn expand_tabs(s: &str) -> String {
    s.replace('\t', "    ")
}

/// One error (or warning) at a place in a source text, ready to print.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    /// File name as given.
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column (characters).
    pub column: usize,
    /// What is wrong.
    pub message: String,
    /// What was expected, shown under the caret.
    pub label: String,
    /// The offending line (tabs expanded).
    pub line_text: String,
    /// Characters before the caret on the shown line.
    pub caret_offset: usize,
    /// Number of carets.
    pub caret_len: usize,
    /// Extra lines (e.g. "first defined at 3:5").
    pub notes: Vec<String>,
}

impl Diagnostic {
    /// Adds a note line.
    pub fn with_note(mut self, note: impl Into<String>) -> Diagnostic {
        self.notes.push(note.into());
        self
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let gutter = self.line.to_string().len();
        let pad = " ".repeat(gutter);
        writeln!(
            f,
            "{}:{}:{}: error: {}",
            self.file, self.line, self.column, self.message
        )?;
        writeln!(f, "{pad} |")?;
        writeln!(f, "{} | {}", self.line, self.line_text)?;
        write!(
            f,
            "{pad} | {}{}",
            " ".repeat(self.caret_offset),
            "^".repeat(self.caret_len)
        )?;
        if !self.label.is_empty() {
            write!(f, " {}", self.label)?;
        }
        for note in &self.notes {
            write!(f, "\n{pad} = note: {note}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostic {}

/// The closest candidate to `name` by edit distance, if close enough to suggest.
pub fn suggest<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    // Edit distance is quadratic in the lengths: names longer than any sensible
    // identifier get no suggestion rather than a slow one.
    const LONGEST: usize = 64;
    if name.len() > LONGEST {
        return None;
    }
    let limit = (name.chars().count() / 3).max(1);
    candidates
        .into_iter()
        .filter(|c| c.len() <= LONGEST)
        .map(|c| (edit_distance(name, c), c))
        .filter(|&(d, c)| d <= limit && c != name)
        .min_by_key(|&(d, _)| d)
        .map(|(_, c)| c)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for i in 1..=a.len() {
        cur[0] = i;
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            cur[j] = (prev[j] + 1).min(cur[j - 1] + 1).min(prev[j - 1] + cost);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_count_lines_and_characters() {
        let s = Source::new("f", "ab\nçd e\n");
        assert_eq!(s.position(0), Position { line: 1, column: 1 });
        assert_eq!(s.position(3), Position { line: 2, column: 1 });
        // `ç` is two bytes but one column.
        assert_eq!(s.position(6), Position { line: 2, column: 3 });
    }

    #[test]
    fn caret_sits_under_the_span() {
        let s = Source::new("f.hasme", "minimize lamda*x");
        let d = s.diagnostic(Span::new(9, 14), "unknown name `lamda`", "not defined");
        let text = d.to_string();
        assert!(
            text.starts_with("f.hasme:1:10: error: unknown name `lamda`"),
            "{text}"
        );
        assert!(
            text.contains("1 | minimize lamda*x\n  |          ^^^^^ not defined"),
            "{text}"
        );
    }

    #[test]
    fn suggestions_are_close_names() {
        assert_eq!(suggest("lamda", ["lambda", "mu"]), Some("lambda"));
        assert_eq!(suggest("zzz", ["lambda", "mu"]), None);
    }

    #[test]
    fn invalid_utf8_is_a_diagnostic() {
        let err = Source::from_bytes("f", vec![b'a', b'\n', 0xff]).unwrap_err();
        assert_eq!((err.line, err.column), (2, 1));
    }
}
