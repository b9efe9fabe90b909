//! hasme: stochastic gradient descent and its stochastic modified equations.
//!
//! The pipeline follows the data: text ([`lang`]) → checked problem ([`problem`]) →
//! compiled tape ([`tape`], over the rows of [`data`] tables for finite sums) → derivatives → model coefficients ([`models`]) → exact
//! Gaussian moments on quadratics ([`moments`]), drawn by [`plot`], written by
//! [`output`]; Monte Carlo of SGD beside the models ([`sim`]) with streaming
//! statistics ([`stats`]); one command that runs what fits a problem and writes an HTML
//! page ([`report`]). See `ARCHITECTURE.md` for the code map and the invariants.

pub mod data;
pub mod escape;
pub mod experiment;
pub mod inspect;
pub mod jet;
pub mod lang;
pub mod models;
pub mod moments;
pub mod output;
pub mod plot;
pub mod problem;
pub mod report;
pub mod sim;
pub mod stats;
pub mod tape;

pub use problem::{Derivatives, Overrides, Problem, ProblemError};

/// What kind of failure a library error is. The library does not know about exit
/// statuses; the command line maps these to its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The caller's input is wrong: a file, an expression, a setting, an output path.
    Input,
    /// The input was accepted, but the computation failed while running (a non-finite
    /// value, a model outside its domain, a file the system refused to write).
    Run,
}

/// The kind of a [`ProblemError`], read from its exit status until the problem module
/// says its kind itself.
pub(crate) fn problem_error_kind(e: &ProblemError) -> ErrorKind {
    if e.exit_code() == 2 {
        ErrorKind::Input
    } else {
        ErrorKind::Run
    }
}
