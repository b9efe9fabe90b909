//! hasme: stochastic gradient descent and its stochastic modified equations.
//!
//! The pipeline follows the data: text ([`lang`]) → checked problem ([`problem`]) →
//! compiled tape ([`tape`]) → derivatives → model coefficients ([`models`]).
//! See `ARCHITECTURE.md` for the code map and the invariants.

pub mod inspect;
pub mod lang;
pub mod models;
pub mod problem;
pub mod tape;

pub use problem::{Derivatives, Overrides, Problem, ProblemError};
