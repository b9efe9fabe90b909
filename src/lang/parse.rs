//! Text → syntax tree.
//!
//! Three steps, none of which recurses on the input's size: `blank_bracketed` turns
//! newlines and comments inside brackets into spaces (continuation lines, docs/language.md)
//! and caps bracket nesting at [`MAX_NESTING`]; the pest grammar in
//! `grammar/hasme.pest` checks the syntax; and an operator-precedence pass (an explicit
//! operator stack, in the manner of shunting-yard) builds each expression's post-order
//! arena with the precedence of docs/language.md: `+ -` < `* /` < unary `-` < `^` (right).
//! The only recursion left is into brackets, which the nesting cap bounds.

use super::ast::*;
use super::source::{Diagnostic, Source, Span};
use super::words::{WordKind, words};
use pest::Parser;
use pest::iterators::Pair;
use std::sync::Once;

#[derive(pest_derive::Parser)]
#[grammar = "../grammar/hasme.pest"]
struct Grammar;

/// Deepest bracket nesting accepted. Real objectives stay far below; the cap keeps the
/// grammar's own recursion (a few stack frames per level) well inside a 2 MiB thread
/// stack even in debug builds.
pub const MAX_NESTING: usize = 64;

/// Parses a whole objective file.
///
/// ```
/// use hasme::lang::{parse, Source};
/// let src = Source::new("demo.hasme", "var x = 1\nminimize (x - 2)^2");
/// let program = parse(&src).unwrap();
/// assert_eq!(program.statements.len(), 2);
/// ```
pub fn parse(source: &Source) -> Result<Program, Box<Diagnostic>> {
    let blanked = blank_bracketed(source)?;
    let mut pairs = parse_rule(Rule::file, &blanked.text, source, &blanked.unclosed)?;
    let file = pairs.next().ok_or_else(|| internal(source))?;
    let mut statements = Vec::new();
    for pair in file.into_inner() {
        if pair.as_rule() == Rule::EOI {
            continue;
        }
        statements.push(build_statement(pair, source)?);
    }
    Ok(Program { statements })
}

/// Parses a single expression (used for `--at`-style inputs and tests).
///
/// ```
/// use hasme::lang::{parse_expr, print_expr, Source};
/// let e = parse_expr(&Source::new("expr", "-x^2 + 2*y")).unwrap();
/// assert_eq!(print_expr(&e), "-x^2 + 2*y");
/// ```
pub fn parse_expr(source: &Source) -> Result<Expr, Box<Diagnostic>> {
    let blanked = blank_bracketed(source)?;
    let mut pairs = parse_rule(Rule::expr_only, &blanked.text, source, &blanked.unclosed)?;
    let whole = pairs.next().ok_or_else(|| internal(source))?;
    let inner = whole.into_inner().next().ok_or_else(|| internal(source))?;
    build_expr(inner, source)
}

fn internal(source: &Source) -> Box<Diagnostic> {
    Box::new(source.diagnostic(
        Span::new(0, 0),
        "internal parser error: the grammar produced an unexpected tree",
        "please report this file",
    ))
}

struct Blanked {
    text: String,
    /// Offsets of brackets still open at the end of the text.
    unclosed: Vec<usize>,
}

/// Replaces newlines and comments inside `( )` / `[ ]` by spaces (byte offsets are
/// kept, so diagnostics point into the original text) and rejects nesting deeper than
/// [`MAX_NESTING`].
fn blank_bracketed(source: &Source) -> Result<Blanked, Box<Diagnostic>> {
    let mut bytes = source.text().as_bytes().to_vec();
    let mut open: Vec<usize> = Vec::new();
    let mut i = 0;
    let mut in_string = false;
    while i < bytes.len() {
        let b = bytes[i];
        if in_string {
            if b == b'"' || b == b'\n' {
                in_string = false;
            }
            i += 1;
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'#' => {
                // A comment ends at any newline the grammar knows, `\r` alone included.
                let depth = open.len();
                while i < bytes.len() && bytes[i] != b'\n' && bytes[i] != b'\r' {
                    if depth > 0 {
                        bytes[i] = b' ';
                    }
                    i += 1;
                }
                continue;
            }
            b'(' | b'[' => {
                open.push(i);
                if open.len() > MAX_NESTING {
                    return Err(Box::new(
                        source
                            .diagnostic(
                                Span::new(i, i + 1),
                                format!("brackets nested more than {MAX_NESTING} deep"),
                                "too deep",
                            )
                            .with_note("split the expression with `let` statements"),
                    ));
                }
            }
            b')' | b']' => {
                open.pop();
            }
            b'\n' if !open.is_empty() => bytes[i] = b' ',
            _ => {}
        }
        i += 1;
    }
    // Only ASCII bytes were replaced by ASCII spaces, and comment bytes (which may be
    // multi-byte characters) were replaced whole, so the text stays UTF-8.
    let text = String::from_utf8(bytes)
        .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
    Ok(Blanked {
        text,
        unclosed: open,
    })
}

fn parse_rule<'i>(
    rule: Rule,
    text: &'i str,
    source: &Source,
    unclosed: &[usize],
) -> Result<pest::iterators::Pairs<'i, Rule>, Box<Diagnostic>> {
    static DETAIL: Once = Once::new();
    DETAIL.call_once(|| pest::set_error_detail(true));
    Grammar::parse(rule, text).map_err(|err| {
        let mut d = syntax_error(&err, text, source);
        if let Some(&at) = unclosed.last() {
            let p = source.position(at);
            d = d.with_note(format!(
                "the bracket `{}` opened at {}:{} is never closed",
                &text[at..at + 1],
                p.line,
                p.column
            ));
        }
        Box::new(d)
    })
}

/// Describes a rule the way a user would name it.
fn describe(rule: Rule) -> Option<&'static str> {
    use Rule::*;
    Some(match rule {
        expr | number | name | call | reduce | reduce_kind | indexed | column | column_at
        | paren | neg => "an expression",
        add | sub | mul | div | pow => "an operator",
        EOI => "the end of the file",
        ident => "a name",
        list | matrix | size | header | table => "`[`",
        string | string_inner => "a quoted file name",
        sampling_mode => "`with-replacement` or `without-replacement`",
        kw_sd | kw_diag | kw_cov | noise_sd | noise_diag | noise_cov => "`sd`, `diag` or `cov`",
        file | kw_param | kw_var | kw_let | kw_minimize | kw_noise | kw_observe | kw_data
        | kw_batch | kw_sampling | kw_escape | param_stmt | var_stmt | let_stmt | minimize_stmt
        | noise_stmt | observe_stmt | data_stmt | batch_stmt | sampling_stmt | escape_stmt => {
            "a statement (`param`, `var`, `let`, `minimize`, `noise`, `observe`, …)"
        }
        var_decl => "a variable name",
        kw_when => "`when`",
        random_start => "`~`",
        distribution | kw_normal | kw_uniform => "`normal(M, S)` or `uniform(A, B)`",
        gt => "`>`",
        _ => return None,
    })
}

fn syntax_error(err: &pest::error::Error<Rule>, text: &str, source: &Source) -> Diagnostic {
    use pest::error::{ErrorVariant, InputLocation};
    let pos = match err.location {
        InputLocation::Pos(p) => p,
        InputLocation::Span((s, _)) => s,
    };
    let mut expected: Vec<String> = Vec::new();
    fn push(expected: &mut Vec<String>, s: String) {
        if !expected.contains(&s) {
            expected.push(s);
        }
    }
    if let ErrorVariant::ParsingError { positives, .. } = &err.variant {
        for r in positives {
            if let Some(d) = describe(*r) {
                push(&mut expected, d.to_string());
            }
        }
    }
    if let Some(attempts) = err.parse_attempts() {
        for tok in attempts.expected_tokens() {
            let t = tok.to_string();
            let t = t.trim_matches('\'').trim_matches('"').to_string();
            if ["(", ")", "[", "]", "=", ",", "..", "~"].contains(&t.as_str()) {
                push(&mut expected, format!("`{t}`"));
            }
        }
    }
    if expected.iter().any(|e| e == "an expression") {
        // A name or a bracket is an expression too: don't list them twice.
        expected.retain(|e| e != "a name" && e != "`(`");
    }
    let rest = &text[pos.min(text.len())..];
    let at_line_end = rest.starts_with('\n') || rest.starts_with("\r\n") || rest.starts_with(';');
    // A statement may end where an operator was also possible: say "a new line" too.
    if expected.iter().any(|e| e == "an operator") && !at_line_end {
        push(&mut expected, "the end of the line".to_string());
    }
    let mut found = describe_found(rest);
    // A misspelt statement keyword: suggest the keyword.
    if expected.iter().any(|e| e.starts_with("a statement")) {
        let word = &rest[..found_len(rest)];
        if let Some(k) = super::source::suggest(word, words(WordKind::Statement)) {
            found = format!("{found}; did you mean `{k}`?");
        }
    }
    let before = text[..pos.min(text.len())].trim_end_matches([' ', '\t', '\r']);
    let prev = before.chars().last();
    let wants_expr = expected.iter().any(|e| e == "an expression");
    let message = match prev {
        Some(c) if wants_expr && "+-*/^=,([".contains(c) => {
            format!("expected an expression after `{c}`, found {found}")
        }
        _ => format!("expected {}, found {found}", join_or(&expected)),
    };
    let len = if rest.is_empty() || at_line_end {
        0
    } else {
        found_len(rest)
    };
    source.diagnostic(
        Span::new(pos, pos + len),
        message,
        format!("expected {}", join_or(&expected)),
    )
}

fn join_or(items: &[String]) -> String {
    match items {
        [] => "something else".to_string(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
    }
}

fn found_len(rest: &str) -> usize {
    let word: usize = rest
        .char_indices()
        .take_while(|(_, c)| c.is_ascii_alphanumeric() || *c == '_' || *c == '.')
        .map(|(i, c)| i + c.len_utf8())
        .last()
        .unwrap_or(0);
    if word > 0 {
        word
    } else {
        rest.chars().next().map_or(0, char::len_utf8)
    }
}

fn describe_found(rest: &str) -> String {
    if rest.is_empty() {
        return "the end of the file".to_string();
    }
    if rest.starts_with('\n') || rest.starts_with("\r\n") {
        return "the end of the line".to_string();
    }
    let tok = &rest[..found_len(rest)];
    if tok.chars().all(|c| c.is_control() || c == '\u{FFFD}') {
        format!("the character {:?}", tok)
    } else {
        format!("`{tok}`")
    }
}

// ---- building the tree ------------------------------------------------------------

fn span_of(pair: &Pair<Rule>) -> Span {
    let s = pair.as_span();
    Span::new(s.start(), s.end())
}

fn ident_of(pair: Pair<Rule>) -> Ident {
    Ident {
        name: pair.as_str().to_string(),
        span: span_of(&pair),
    }
}

fn build_statement(pair: Pair<Rule>, source: &Source) -> Result<Statement, Box<Diagnostic>> {
    let span = span_of(&pair);
    let rule = pair.as_rule();
    // Skip the keyword token that starts every statement.
    let mut inner = pair
        .into_inner()
        .filter(|p| !is_keyword(p.as_rule()))
        .peekable();
    let mut next = || inner.next().ok_or_else(|| internal(source));
    let kind = match rule {
        Rule::param_stmt => {
            let name = ident_of(next()?);
            let mut p = next()?;
            let size = if p.as_rule() == Rule::size {
                let s = build_size(p, source)?;
                p = next()?;
                Some(s)
            } else {
                None
            };
            let value = match p.as_rule() {
                Rule::random_start => {
                    let at = p.as_span().start();
                    return Err(Box::new(
                        source
                            .diagnostic(
                                Span::new(at, at + 1),
                                format!(
                                    "a param is a constant, so it cannot be drawn at random: `~` draws the start values of variables (`var {} ~ …`)",
                                    name.name
                                ),
                                "expected `=` and a value",
                            )
                            .with_note("a random start is drawn from the stream set by `--init-seed`"),
                    ));
                }
                Rule::matrix => {
                    let span = span_of(&p);
                    let rows = p
                        .into_inner()
                        .map(|r| build_list(r, source))
                        .collect::<Result<Vec<_>, _>>()?;
                    ParamValue::Matrix { rows, span }
                }
                Rule::list => ParamValue::List(build_list(p, source)?),
                _ => ParamValue::Scalar(build_expr(p, source)?),
            };
            StatementKind::Param { name, size, value }
        }
        Rule::var_stmt => {
            let mut decls = Vec::new();
            for d in inner {
                let mut parts = d.into_inner();
                let name = ident_of(parts.next().ok_or_else(|| internal(source))?);
                let mut size = None;
                let mut init = None;
                for p in parts {
                    match p.as_rule() {
                        Rule::size => size = Some(build_size(p, source)?),
                        Rule::random_start => {
                            let dist = p.into_inner().next().ok_or_else(|| internal(source))?;
                            init = Some(Start::Random(build_distribution(dist, source)?));
                        }
                        _ => init = Some(Start::Value(build_expr(p, source)?)),
                    }
                }
                decls.push(VarDecl { name, size, init });
            }
            StatementKind::Var(decls)
        }
        Rule::let_stmt => {
            let name = ident_of(next()?);
            StatementKind::Let {
                name,
                value: build_expr(next()?, source)?,
            }
        }
        Rule::minimize_stmt => StatementKind::Minimize(build_expr(next()?, source)?),
        Rule::noise_stmt => {
            let n = next()?;
            let nrule = n.as_rule();
            let body = n
                .into_inner()
                .find(|p| !is_keyword(p.as_rule()))
                .ok_or_else(|| internal(source))?;
            StatementKind::Noise(match nrule {
                Rule::noise_sd => Noise::Sd(build_expr(body, source)?),
                Rule::noise_diag => Noise::Diag(build_list(body, source)?),
                _ => {
                    let mspan = span_of(&body);
                    let rows = body
                        .into_inner()
                        .map(|r| build_list(r, source))
                        .collect::<Result<Vec<_>, _>>()?;
                    Noise::Cov { rows, span: mspan }
                }
            })
        }
        Rule::observe_stmt => {
            let name = ident_of(next()?);
            StatementKind::Observe {
                name,
                value: build_expr(next()?, source)?,
            }
        }
        Rule::data_stmt => {
            let name = ident_of(next()?);
            let body = next()?;
            let source_kind = if body.as_rule() == Rule::string {
                let span = span_of(&body);
                let path = body
                    .into_inner()
                    .next()
                    .map_or(String::new(), |p| p.as_str().to_string());
                DataSource::File { path, span }
            } else {
                let mut parts = body.into_inner();
                let header = parts
                    .next()
                    .ok_or_else(|| internal(source))?
                    .into_inner()
                    .map(ident_of)
                    .collect();
                let rows = parts
                    .map(|r| build_list(r, source))
                    .collect::<Result<Vec<_>, _>>()?;
                DataSource::Inline { header, rows }
            };
            StatementKind::Data {
                name,
                source: source_kind,
            }
        }
        Rule::batch_stmt => StatementKind::Batch(build_expr(next()?, source)?),
        Rule::escape_stmt => {
            let lhs = build_expr(next()?, source)?;
            let _gt = next()?;
            let rhs = build_expr(next()?, source)?;
            StatementKind::Escape { lhs, rhs }
        }
        Rule::sampling_stmt => {
            let mode = next()?;
            StatementKind::Sampling(if mode.as_str() == "with-replacement" {
                Sampling::WithReplacement
            } else {
                Sampling::WithoutReplacement
            })
        }
        _ => return Err(internal(source)),
    };
    Ok(Statement { kind, span })
}

fn is_keyword(rule: Rule) -> bool {
    use Rule::*;
    matches!(
        rule,
        kw_param
            | kw_var
            | kw_let
            | kw_minimize
            | kw_noise
            | kw_sd
            | kw_diag
            | kw_cov
            | kw_observe
            | kw_data
            | kw_batch
            | kw_sampling
            | kw_escape
            | kw_when
            | kw_normal
            | kw_uniform
    )
}

/// The expressions inside a bracketed pair (`[h, p]`, `[a, b, …]`) and its span.
fn build_exprs(pair: Pair<Rule>, source: &Source) -> Result<(Vec<Expr>, Span), Box<Diagnostic>> {
    let span = span_of(&pair);
    let exprs = pair
        .into_inner()
        .map(|e| build_expr(e, source))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((exprs, span))
}

fn build_size(pair: Pair<Rule>, source: &Source) -> Result<Size, Box<Diagnostic>> {
    let (dims, span) = build_exprs(pair, source)?;
    Ok(Size { dims, span })
}

/// `normal(M, S)` or `uniform(A, B)`.
fn build_distribution(pair: Pair<Rule>, source: &Source) -> Result<Distribution, Box<Diagnostic>> {
    let span = span_of(&pair);
    let mut parts = pair.into_inner();
    let mut next = || parts.next().ok_or_else(|| internal(source));
    let kind = match next()?.as_rule() {
        Rule::kw_normal => DistributionKind::Normal,
        _ => DistributionKind::Uniform,
    };
    let first = build_expr(next()?, source)?;
    let second = build_expr(next()?, source)?;
    Ok(Distribution {
        kind,
        args: [first, second],
        span,
    })
}

fn build_list(pair: Pair<Rule>, source: &Source) -> Result<List, Box<Diagnostic>> {
    let (items, span) = build_exprs(pair, source)?;
    Ok(List { items, span })
}

/// Builds one expression from its `expr` pair.
fn build_expr(pair: Pair<Rule>, source: &Source) -> Result<Expr, Box<Diagnostic>> {
    let mut b = Builder {
        nodes: Vec::new(),
        source,
    };
    b.expr(pair)?;
    Ok(Expr { nodes: b.nodes })
}

struct Builder<'s> {
    nodes: Vec<Node>,
    source: &'s Source,
}

#[derive(Clone, Copy)]
enum Pending {
    Neg(usize),
    Bin(BinOp),
}

impl Pending {
    fn precedence(self) -> u8 {
        match self {
            Pending::Neg(_) => NEG_PRECEDENCE,
            Pending::Bin(op) => op.precedence(),
        }
    }
}

impl Builder<'_> {
    fn push(&mut self, kind: NodeKind, span: Span) -> NodeId {
        self.nodes.push(Node { kind, span });
        (self.nodes.len() - 1) as NodeId
    }

    fn span(&self, id: NodeId) -> Span {
        self.nodes[id as usize].span
    }

    /// Operator precedence with explicit stacks: iterative in the chain length.
    fn expr(&mut self, pair: Pair<Rule>) -> Result<NodeId, Box<Diagnostic>> {
        let mut operands: Vec<NodeId> = Vec::new();
        let mut pending: Vec<Pending> = Vec::new();
        for p in pair.into_inner() {
            let op = match p.as_rule() {
                Rule::neg => {
                    pending.push(Pending::Neg(p.as_span().start()));
                    continue;
                }
                Rule::add => BinOp::Add,
                Rule::sub => BinOp::Sub,
                Rule::mul => BinOp::Mul,
                Rule::div => BinOp::Div,
                Rule::pow => BinOp::Pow,
                _ => {
                    let id = self.primary(p)?;
                    operands.push(id);
                    continue;
                }
            };
            while let Some(&top) = pending.last() {
                let tp = top.precedence();
                if tp > op.precedence() || (tp == op.precedence() && !op.right_associative()) {
                    pending.pop();
                    self.reduce(top, &mut operands)?;
                } else {
                    break;
                }
            }
            pending.push(Pending::Bin(op));
        }
        while let Some(top) = pending.pop() {
            self.reduce(top, &mut operands)?;
        }
        match (operands.pop(), operands.is_empty()) {
            (Some(id), true) => Ok(id),
            _ => Err(internal(self.source)),
        }
    }

    fn reduce(&mut self, op: Pending, operands: &mut Vec<NodeId>) -> Result<(), Box<Diagnostic>> {
        match op {
            Pending::Neg(start) => {
                let a = operands.pop().ok_or_else(|| internal(self.source))?;
                let span = Span::new(start, self.span(a).end);
                let id = self.push(NodeKind::Neg(a), span);
                operands.push(id);
            }
            Pending::Bin(op) => {
                let rhs = operands.pop().ok_or_else(|| internal(self.source))?;
                let lhs = operands.pop().ok_or_else(|| internal(self.source))?;
                let span = self.span(lhs).to(self.span(rhs));
                let id = self.push(NodeKind::Binary { op, lhs, rhs }, span);
                operands.push(id);
            }
        }
        Ok(())
    }

    fn primary(&mut self, p: Pair<Rule>) -> Result<NodeId, Box<Diagnostic>> {
        let span = span_of(&p);
        match p.as_rule() {
            Rule::number => {
                let text = p.as_str().to_string();
                let value: f64 = text.parse().map_err(|_| internal(self.source))?;
                if !value.is_finite() {
                    return Err(Box::new(self.source.diagnostic(
                        span,
                        format!("the number `{text}` is too large for a 64-bit float"),
                        "expected a finite number",
                    )));
                }
                Ok(self.push(NodeKind::Num { value, text }, span))
            }
            Rule::name => Ok(self.push(NodeKind::Name(p.as_str().to_string()), span)),
            Rule::paren => {
                let inner = p.into_inner().next().ok_or_else(|| internal(self.source))?;
                let id = self.expr(inner)?;
                // The parenthesised expression spans its brackets, so diagnostics
                // quote `(x + 1)^0.5` whole rather than `x + 1)^0.5`.
                self.nodes[id as usize].span = span;
                Ok(id)
            }
            Rule::call => {
                let mut parts = p.into_inner();
                let func = ident_of(parts.next().ok_or_else(|| internal(self.source))?);
                let mut args = Vec::new();
                for a in parts {
                    args.push(self.expr(a)?);
                }
                Ok(self.push(NodeKind::Call { func, args }, span))
            }
            Rule::reduce => {
                let mut parts = p.into_inner();
                let mut next = || parts.next().ok_or_else(|| internal(self.source));
                let word = next()?.as_str();
                let kind = ReduceKind::ALL
                    .into_iter()
                    .find(|k| k.name() == word)
                    .ok_or_else(|| internal(self.source))?;
                let index = ident_of(next()?);
                let (lo_p, hi_p, body_p) = (next()?, next()?, next()?);
                let lo = self.expr(lo_p)?;
                let hi = self.expr(hi_p)?;
                let body = self.expr(body_p)?;
                Ok(self.push(
                    NodeKind::Reduce {
                        kind,
                        index,
                        lo,
                        hi,
                        body,
                    },
                    span,
                ))
            }
            Rule::indexed => {
                let mut parts = p.into_inner();
                let name = ident_of(parts.next().ok_or_else(|| internal(self.source))?);
                let mut indices = Vec::new();
                for index_p in parts {
                    indices.push(self.expr(index_p)?);
                }
                Ok(self.push(NodeKind::Index { name, indices }, span))
            }
            Rule::column => {
                let (data, column) = self.column_names(p)?;
                Ok(self.push(
                    NodeKind::Column {
                        data,
                        column,
                        index: None,
                    },
                    span,
                ))
            }
            Rule::column_at => {
                let mut parts = p.into_inner();
                let (data, column) =
                    self.column_names(parts.next().ok_or_else(|| internal(self.source))?)?;
                let index = self.expr(parts.next().ok_or_else(|| internal(self.source))?)?;
                if let Some(extra) = parts.next() {
                    return Err(Box::new(self.source.diagnostic(
                        span_of(&extra),
                        format!(
                            "a column takes one index: `{}.{}[i]` reads the column `{}` followed by the digits of i",
                            data.name, column.name, column.name
                        ),
                        "a second index",
                    )));
                }
                Ok(self.push(
                    NodeKind::Column {
                        data,
                        column,
                        index: Some(index),
                    },
                    span,
                ))
            }
            _ => Err(internal(self.source)),
        }
    }

    /// The table and column of a `column` pair (`DATA.NAME`).
    fn column_names(&self, p: Pair<Rule>) -> Result<(Ident, Ident), Box<Diagnostic>> {
        let mut parts = p.into_inner();
        let data = ident_of(parts.next().ok_or_else(|| internal(self.source))?);
        let column = ident_of(parts.next().ok_or_else(|| internal(self.source))?);
        Ok((data, column))
    }
}
