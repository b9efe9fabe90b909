//! Syntax tree → text, with the fewest parentheses that parse back to the same tree
//! (the round-trip law `parse(print(e)) == e`, checked by property tests).
//!
//! Printing walks the post-order arena once, bottom-up, so it never recurses.

use super::ast::*;

/// Precedence of atoms (numbers, names, calls): never parenthesised.
const ATOM: u8 = 5;

/// Prints an expression.
pub fn print_expr(expr: &Expr) -> String {
    let mut done: Vec<Option<(String, u8)>> = Vec::with_capacity(expr.nodes.len());
    for node in &expr.nodes {
        let mut take = |id: NodeId| done[id as usize].take().unwrap_or_default();
        let printed = match &node.kind {
            NodeKind::Num { text, .. } => (text.clone(), ATOM),
            NodeKind::Name(n) => (n.clone(), ATOM),
            NodeKind::Column {
                data,
                column,
                index,
            } => {
                let at = index.map_or(String::new(), |i| format!("[{}]", take(i).0));
                (format!("{}.{}{at}", data.name, column.name), ATOM)
            }
            NodeKind::Index { name, indices } => {
                let indices: Vec<String> = indices.iter().map(|i| take(*i).0).collect();
                (format!("{}[{}]", name.name, indices.join(", ")), ATOM)
            }
            NodeKind::Call { func, args } => {
                let args: Vec<String> = args.iter().map(|a| take(*a).0).collect();
                (format!("{}({})", func.name, args.join(", ")), ATOM)
            }
            NodeKind::Reduce {
                kind,
                index,
                lo,
                hi,
                body,
            } => {
                let (lo, hi, body) = (take(*lo).0, take(*hi).0, take(*body).0);
                let k = kind.name();
                (format!("{k}({} = {lo}..{hi}, {body})", index.name), ATOM)
            }
            NodeKind::Neg(a) => {
                let (s, p) = take(*a);
                let s = if p < NEG_PRECEDENCE {
                    format!("({s})")
                } else {
                    s
                };
                (format!("-{s}"), NEG_PRECEDENCE)
            }
            NodeKind::Binary { op, lhs, rhs } => {
                let p = op.precedence();
                let (ls, lp) = take(*lhs);
                let rhs_is_neg = matches!(expr.node(*rhs).kind, NodeKind::Neg(_));
                let (rs, rp) = take(*rhs);
                let lparen = lp < p || (lp == p && op.right_associative());
                // A negation may follow any operator (`x^-1`, `a*-b`), so it needs none.
                let rparen = !rhs_is_neg && (rp < p || (rp == p && !op.right_associative()));
                let ls = if lparen { format!("({ls})") } else { ls };
                let rs = if rparen { format!("({rs})") } else { rs };
                let text = match op {
                    BinOp::Add | BinOp::Sub => format!("{ls} {} {rs}", op.symbol()),
                    _ => format!("{ls}{}{rs}", op.symbol()),
                };
                (text, p)
            }
        };
        done.push(Some(printed));
    }
    done.pop().flatten().map(|(s, _)| s).unwrap_or_default()
}

fn print_list(list: &List) -> String {
    let items: Vec<String> = list.items.iter().map(print_expr).collect();
    format!("[{}]", items.join(", "))
}

fn print_rows(rows: &[List]) -> String {
    let rows: Vec<String> = rows.iter().map(print_list).collect();
    format!("[{}]", rows.join(", "))
}

fn print_size(size: Option<&Size>) -> String {
    size.map_or(String::new(), |s| {
        let dims: Vec<String> = s.dims.iter().map(print_expr).collect();
        format!("[{}]", dims.join(", "))
    })
}

/// Prints a whole program, one statement per line.
pub fn print_program(program: &Program) -> String {
    let mut out = String::new();
    for st in &program.statements {
        let line = match &st.kind {
            StatementKind::Param { name, size, value } => {
                let size = print_size(size.as_ref());
                let value = match value {
                    ParamValue::Scalar(e) => print_expr(e),
                    ParamValue::List(l) => print_list(l),
                    ParamValue::Matrix { rows, .. } => print_rows(rows),
                };
                format!("param {}{size} = {value}", name.name)
            }
            StatementKind::Var(decls) => {
                let parts: Vec<String> = decls
                    .iter()
                    .map(|d| {
                        let size = print_size(d.size.as_ref());
                        let init = match &d.init {
                            None => String::new(),
                            Some(Start::Value(e)) => format!(" = {}", print_expr(e)),
                            Some(Start::Random(dist)) => format!(
                                " ~ {}({}, {})",
                                dist.kind.name(),
                                print_expr(&dist.args[0]),
                                print_expr(&dist.args[1])
                            ),
                        };
                        format!("{}{size}{init}", d.name.name)
                    })
                    .collect();
                format!("var {}", parts.join(", "))
            }
            StatementKind::Let { name, value } => {
                format!("let {} = {}", name.name, print_expr(value))
            }
            StatementKind::Minimize(e) => format!("minimize {}", print_expr(e)),
            StatementKind::Noise(Noise::Sd(e)) => format!("noise sd {}", print_expr(e)),
            StatementKind::Noise(Noise::Diag(l)) => format!("noise diag {}", print_list(l)),
            StatementKind::Noise(Noise::Cov { rows, .. }) => {
                format!("noise cov {}", print_rows(rows))
            }
            StatementKind::Observe { name, value } => {
                format!("observe {} = {}", name.name, print_expr(value))
            }
            StatementKind::Data { name, source } => match source {
                DataSource::File { path, .. } => format!("data {} = \"{path}\"", name.name),
                DataSource::Inline { header, rows } => {
                    let head: Vec<&str> = header.iter().map(|h| h.name.as_str()).collect();
                    let mut parts = vec![format!("[{}]", head.join(", "))];
                    parts.extend(rows.iter().map(print_list));
                    format!("data {} = [{}]", name.name, parts.join(", "))
                }
            },
            StatementKind::Batch(e) => format!("batch {}", print_expr(e)),
            StatementKind::Escape { lhs, rhs } => {
                format!("escape when {} > {}", print_expr(lhs), print_expr(rhs))
            }
            StatementKind::Sampling(Sampling::WithReplacement) => {
                "sampling with-replacement".into()
            }
            StatementKind::Sampling(Sampling::WithoutReplacement) => {
                "sampling without-replacement".into()
            }
        };
        out.push_str(&line);
        out.push('\n');
    }
    out
}
