//! The objective-file language of docs/language.md: source text and diagnostics
//! ([`source`]), the syntax tree ([`ast`]), the parser ([`mod@parse`]), the printer
//! ([`mod@print`]) and the words of the language ([`words`]).
//!
//! Invariant: nothing here evaluates numbers beyond reading literals; meaning is
//! given to the tree by [`crate::problem`].

pub mod ast;
pub mod parse;
pub mod print;
pub mod source;
pub mod words;

pub use ast::{Expr, Program};
pub use parse::{parse, parse_expr};
pub use print::{print_expr, print_program};
pub use source::{Diagnostic, Source, Sources, Span};
