//! hasme: stochastic gradient descent and its stochastic modified equations.
//!
//! The pipeline follows the data: text ([`lang`]) → checked problem ([`problem`]) →
//! compiled tape (over the rows of [`data`] tables for finite sums) → derivatives →
//! model coefficients ([`models`]) → exact Gaussian moments on quadratics
//! ([`moments`]); Monte Carlo of SGD beside the models ([`sim`]) with streaming
//! statistics ([`stats`]), the weak error and its order in η ([`experiment`]; in one or
//! two dimensions also without Monte Carlo noise, by [`quadrature`]), escape
//! times ([`escape`](mod@escape)); stationary points by Newton's method or gradient
//! descent ([`stationary`]); drawn by [`plot`], written by [`output`]; one command that runs
//! what fits a problem and writes an HTML page ([`report`]); runs split in shards,
//! checkpointed and merged ([`shard`]). See `ARCHITECTURE.md` for
//! the code map and the invariants.
//!
//! # Using the library
//!
//! Every command of the `hasme` binary is one call here, and the types a caller needs
//! are re-exported at the crate root:
//!
//! | command | call | settings | result | error |
//! |---|---|---|---|---|
//! | `check` | [`CheckSummary::new`] | | [`CheckSummary`] | [`ProblemError`] |
//! | `derive` | [`DeriveReport::new`], [`DeriveReport::add_models`] | [`ModelRequest`] | [`DeriveReport`] | [`ProblemError`] |
//! | `moments` | [`compare_moments`] | [`MomentsConfig`] | [`MomentsReport`] | [`MomentsError`] |
//! | `simulate` | [`simulate`] | [`SimConfig`] | [`SimResult`] | [`SimError`] |
//! | `weak-order` | [`weak_order`] | [`WeakOrderConfig`] | [`WeakOrderReport`] | [`WeakOrderError`] |
//! | `escape` | [`escape()`] | [`EscapeConfig`] | [`EscapeReport`] | [`EscapeError`] |
//! | `stationary` | [`find_stationary`] | [`StationaryConfig`] | [`StationaryReport`] | [`StationaryError`] |
//! | `report` | [`run_report`] | [`ReportConfig`] | [`Report`] | [`ReportError`] |
//! | `--shard`, `--checkpoint`, `merge` | the Monte Carlo calls above, with a [`shard::Ledger`] in their settings ([`shard::Ledger::replay`] for a merge) | the settings' `ledger` | [`shard::Part`] | [`shard::ShardError`] |
//!
//! Each analysis is a function named for what it does, taking the [`Problem`] and its
//! settings; the Monte Carlo ones also come as `*_with_progress`, which call back with
//! the number of paths done. Settings are built by checked constructors: a value out of
//! range is an error when it is set, not a surprise later. Every report has a text form
//! (`Display`) and a JSON form (`serde::Serialize`), the same bytes the command prints.
//! Every error says whether the caller's input was wrong or the run failed
//! ([`ErrorKind`]). The command line's own words for settings (a `--models` list,
//! `--coupling`, an escape region) and its `--json` text are library calls too
//! ([`options`]), shared by the binary and the Python package (`python/`).
//!
//! ```
//! use hasme::{ModelKind, Problem, SimConfig, simulate};
//!
//! let problem = Problem::from_str("var x = 1\nminimize 0.5*x^2\nnoise sd 0.5")?;
//! let config = SimConfig::builder(0.1, 1.0, 500)
//!     .models(vec![ModelKind::Sme1])
//!     .build()?;
//! let result = simulate(&problem, &config)?;
//! assert_eq!(result.processes, ["sgd", "sme1"]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#[macro_use]
mod multiversion;

mod config;
pub mod data;
pub mod escape;
pub mod experiment;
pub mod format;
pub mod inspect;
// Second-order jets, the tape's number type for small Hessians: not a stable
// interface, public only for the tape's benchmarks and tests.
#[doc(hidden)]
pub mod jet;
pub mod lang;
pub mod models;
pub mod moments;
pub mod options;
pub mod output;
pub mod plot;
pub mod problem;
pub mod quadrature;
pub mod report;
pub mod shard;
pub mod sim;
pub mod stationary;
pub mod stats;
// The compiled tape: not a stable interface ([`Problem`] is the way in). It stays
// reachable for the crate's own tests and benchmarks; the buffer types that
// `Problem`'s allocation-free methods take are re-exported at the root.
#[doc(hidden)]
pub mod tape;

pub use escape::{
    EscapeConfig, EscapeConfigBuilder, EscapeError, EscapeReport, Region, escape,
    escape_with_progress,
};
pub use experiment::{
    Sweep, WeakOrderConfig, WeakOrderConfigBuilder, WeakOrderError, WeakOrderReport, weak_order,
    weak_order_with_progress,
};
pub use inspect::{CheckSummary, DeriveReport, ModelRequest};
pub use models::{Coefficients, Local, Model, ModelError, ModelKind, ModelOptions, PsdPolicy};
pub use moments::{MomentsConfig, MomentsError, MomentsReport, compare as compare_moments};
pub use output::{OutputError, write_atomic};
pub use problem::{Derivatives, Overrides, Problem, ProblemError};
pub use report::{
    Progress, Report, ReportConfig, ReportConfigBuilder, ReportError, Silent, run_report,
};
pub use sim::{
    Coupling, SchemeKind, SimConfig, SimConfigBuilder, SimError, SimResult, simulate,
    simulate_with_progress,
};
pub use stationary::{
    StationaryConfig, StationaryConfigBuilder, StationaryError, StationaryReport, find_stationary,
};
pub use tape::{Derivs, Jets, Workspace};

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
