//! Start values: `var NAME = E` (one constant for every coordinate) or drawn,
//! `var NAME ~ normal(M, S)` / `~ uniform(A, B)` (docs/language.md, "Random starts").
//!
//! **The stream.** Every draw of a file comes from one ChaCha8 keystream: key = the
//! init seed (`--init-seed`, little-endian in bytes 0–7) with byte 8 set to 2 (the
//! simulator's Brownian paths use 0 and its minibatches 1, so a run whose seed equals
//! the init seed shares no word with the start), stream 0, read from its first word.
//! Variables draw in declaration order, the coordinates of one variable row-major, so
//! the start is a function of the file and the init seed alone: the same on every
//! machine and thread count. Normals are `M + S·z` with `z` from
//! `rand_distr::StandardNormal` (Ziggurat), as the simulator draws its noise; uniforms
//! are `A + (B − A)·u` with `u` from `rand`'s standard `f64` in [0, 1) (53 random bits).

use super::{CheckResult, Checker};
use crate::lang::Span;
use crate::lang::ast::*;
use crate::problem::RandomStart;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution as _, StandardNormal};

/// The random stream of a file's start values.
#[derive(Clone, Debug)]
pub(crate) struct StartStream {
    rng: ChaCha8Rng,
}

impl StartStream {
    /// The stream of init seed `seed`, at its first word.
    pub(crate) fn new(seed: u64) -> StartStream {
        let mut key = [0u8; 32];
        key[..8].copy_from_slice(&seed.to_le_bytes());
        key[8] = 2;
        StartStream {
            rng: ChaCha8Rng::from_seed(key),
        }
    }

    /// `n` draws of `kind` with parameters `p` (checked: S ≥ 0, A < B).
    fn draw(&mut self, kind: DistributionKind, p: [f64; 2], n: usize) -> Vec<f64> {
        (0..n)
            .map(|_| match kind {
                DistributionKind::Normal => {
                    let z: f64 = StandardNormal.sample(&mut self.rng);
                    p[0] + p[1] * z
                }
                DistributionKind::Uniform => {
                    let u: f64 = self.rng.random();
                    p[0] + (p[1] - p[0]) * u
                }
            })
            .collect()
    }
}

/// A start, its parameters evaluated and checked, before its coordinates are known.
pub(crate) enum StartSpec {
    Constant(f64),
    /// The distribution, its parameters, and where it is written.
    Random(DistributionKind, [f64; 2], Span),
}

impl Checker<'_> {
    /// Evaluates and checks a declaration's start: a constant, or a distribution whose
    /// parameters are constants with S ≥ 0 (normal) or A < B (uniform).
    pub(crate) fn start_spec(
        &mut self,
        init: Option<&Start>,
        stmt: usize,
    ) -> CheckResult<StartSpec> {
        let dist = match init {
            None => return Ok(StartSpec::Constant(0.0)),
            Some(Start::Value(e)) => {
                return Ok(StartSpec::Constant(self.constant_of(
                    e,
                    stmt,
                    "a start value",
                )?));
            }
            Some(Start::Random(d)) => d,
        };
        let what = match dist.kind {
            DistributionKind::Normal => {
                ["the mean of `normal`", "the standard deviation of `normal`"]
            }
            DistributionKind::Uniform => ["the low end of `uniform`", "the high end of `uniform`"],
        };
        let p = [
            self.constant_of(&dist.args[0], stmt, what[0])?,
            self.constant_of(&dist.args[1], stmt, what[1])?,
        ];
        match dist.kind {
            DistributionKind::Normal if p[1] < 0.0 => Err(self.err(
                dist.args[1].span(),
                format!(
                    "the standard deviation of `normal(M, S)` must be ≥ 0, found {}",
                    p[1]
                ),
                "negative standard deviation",
            )),
            DistributionKind::Uniform if p[0] >= p[1] => Err(self.err(
                dist.span,
                format!(
                    "`uniform(A, B)` needs A < B, found A = {} and B = {}",
                    p[0], p[1]
                ),
                "an empty interval",
            )),
            kind => Ok(StartSpec::Random(kind, p, dist.span)),
        }
    }

    /// The start values of `n` coordinates of the variable `name` (the first at
    /// coordinate `start`): the constant, or `n` draws from the file's stream, recorded
    /// for `check`.
    pub(crate) fn start_values(
        &mut self,
        spec: &StartSpec,
        name: &str,
        start: usize,
        n: usize,
    ) -> CheckResult<Vec<f64>> {
        match *spec {
            StartSpec::Constant(c) => Ok(vec![c; n]),
            StartSpec::Random(kind, p, span) => {
                let draws = self.starts.draw(kind, p, n);
                // Only parameters near the largest float overflow (M + S·z, B − A).
                if let Some(v) = draws.iter().find(|v| !v.is_finite()) {
                    return Err(self.err(
                        span,
                        format!(
                            "a draw of `{}` is {v}: its parameters are too large",
                            kind.name()
                        ),
                        "not a finite start",
                    ));
                }
                let count = draws.len() as f64;
                let mean = draws.iter().sum::<f64>() / count;
                let sd = (n > 1).then(|| {
                    let ss: f64 = draws.iter().map(|v| (v - mean) * (v - mean)).sum();
                    (ss / (count - 1.0)).sqrt()
                });
                self.random_starts.push(RandomStart {
                    name: name.to_string(),
                    distribution: kind.name(),
                    parameters: p,
                    start,
                    count: n,
                    mean,
                    sd,
                });
                Ok(draws)
            }
        }
    }
}
