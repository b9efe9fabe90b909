//! Integrators of `dX = b(X) dt + σ(X) dW` over one substep of length `h`, driven by
//! given Brownian increments (docs/models.md §4, "integrate the SDE accurately").
//!
//! * [`EulerMaruyama`]: `X ← X + b(X) h + σ(X) ΔW`; weak order 1.
//! * [`TalayTubaro`]: Euler–Maruyama run twice on the *same* Brownian path, with step
//!   `h` and with step `h/2`, and the estimate `2 φ(X^{h/2}) − φ(X^h)` of `E φ(X_T)`
//!   (Richardson extrapolation in the weak sense, Talay & Tubaro 1990): the leading
//!   `C h` terms of the two weak errors cancel, leaving `O(h²)`; weak order 2.
//!   Extrapolating per path (not the two estimated means afterwards) gives the
//!   estimate's standard error directly, and because the two runs share their noise
//!   the extrapolated estimator has about the variance of plain Euler–Maruyama's.
//!
//! Why Talay–Tubaro is the default. It needs only the drift and the diffusion factor
//! (no derivatives of the coefficients, which for `hasme` would mean differentiating an
//! eigendecomposition), costs 3 coefficient evaluations per substep `h` for any d
//! (a derivative-free weak order-2 Runge–Kutta scheme for d-dimensional,
//! non-commutative noise costs about 2d + 1 plus extra random variables), and its
//! order rests only on the smoothness of the coefficients and of φ — which the
//! weak-order analysis of the models assumes anyway. The spec notes that plain
//! Euler–Maruyama with 32 substeps still carries a bias of half the `hasme` weak
//! error at η = 0.025; extrapolation removes it.

use super::terms::{Coefficients, Failure, Term};

/// An SDE integrator: one substep at a time, reading given Brownian increments.
pub trait Scheme: Sync {
    /// The name as the CLI spells it.
    fn name(&self) -> &'static str;

    /// The weak order in the substep `h`.
    fn weak_order(&self) -> u32;

    /// Brownian increments (each a vector of `d` numbers) read per substep.
    fn increments_per_substep(&self) -> usize;

    /// Copies of the state the scheme carries (`d` numbers each).
    fn copies(&self) -> usize;

    /// Advances `state` (`copies() × d` numbers) over one substep of length `h`, reading
    /// `increments_per_substep()` increments from `dw` (each of variance `h` divided
    /// by `increments_per_substep()`).
    fn step<T: Term + ?Sized>(
        &self,
        term: &mut T,
        state: &mut [f64],
        h: f64,
        dw: &[f64],
    ) -> Result<(), Failure>;

    /// The estimate of `φ(X_t)` from `φ` at each copy.
    fn combine(&self, values: &[f64]) -> f64;

    /// [`Scheme::step`] as a sequence of Euler–Maruyama moves, in order, for the
    /// simulator's lane-batched stepping (each move evaluates the coefficients at one
    /// copy of every path of a block at once). Stepping by the moves gives exactly the
    /// numbers of [`Scheme::step`] from the same coefficients.
    fn moves(&self) -> &'static [Move];
}

/// One Euler–Maruyama move within a substep: copy `copy` of the state advances by
/// `b(X) · fraction · h + σ(X) ΔW`, `ΔW` the sum of the substep's increments listed.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Move {
    /// Which copy of the state moves.
    pub copy: usize,
    /// The move's time step as a fraction of `h`.
    pub fraction: f64,
    /// The substep's increments it reads (one or two), summed.
    pub increments: &'static [usize],
}

/// `X ← X + b(X) h + σ(X) ΔW` for one copy.
#[inline]
fn euler<T: Term + ?Sized>(
    term: &mut T,
    x: &mut [f64],
    h: f64,
    dw: &[f64],
    dw2: Option<&[f64]>,
) -> Result<(), Failure> {
    let d = x.len();
    let (drift, factor) = match term.eval(x, dw, dw2)? {
        Coefficients::Factor(drift, factor) => (drift, factor),
        Coefficients::Increment(drift, increment) => {
            match increment {
                Some(inc) => {
                    for i in 0..d {
                        x[i] += drift[i] * h + inc[i];
                    }
                }
                None => {
                    for i in 0..d {
                        x[i] += drift[i] * h;
                    }
                }
            }
            return Ok(());
        }
    };
    match (factor, dw2) {
        (None, _) => {
            for i in 0..d {
                x[i] += drift[i] * h;
            }
        }
        (Some(sigma), None) => {
            for i in 0..d {
                let mut s = drift[i] * h;
                for j in 0..d {
                    s += sigma[i * d + j] * dw[j];
                }
                x[i] += s;
            }
        }
        (Some(sigma), Some(dw2)) => {
            for i in 0..d {
                let mut s = drift[i] * h;
                for j in 0..d {
                    s += sigma[i * d + j] * (dw[j] + dw2[j]);
                }
                x[i] += s;
            }
        }
    }
    Ok(())
}

/// Euler–Maruyama, weak order 1.
#[derive(Clone, Copy, Debug, Default)]
pub struct EulerMaruyama;

impl Scheme for EulerMaruyama {
    fn name(&self) -> &'static str {
        "em"
    }

    fn weak_order(&self) -> u32 {
        1
    }

    fn increments_per_substep(&self) -> usize {
        1
    }

    fn copies(&self) -> usize {
        1
    }

    #[inline]
    fn step<T: Term + ?Sized>(
        &self,
        term: &mut T,
        state: &mut [f64],
        h: f64,
        dw: &[f64],
    ) -> Result<(), Failure> {
        euler(term, state, h, dw, None)
    }

    fn combine(&self, values: &[f64]) -> f64 {
        values[0]
    }

    fn moves(&self) -> &'static [Move] {
        &[Move {
            copy: 0,
            fraction: 1.0,
            increments: &[0],
        }]
    }
}

/// Talay–Tubaro extrapolation of Euler–Maruyama at `h` and `h/2` on one Brownian path,
/// weak order 2. Copy 0 steps with `h`, copy 1 with `h/2`.
#[derive(Clone, Copy, Debug, Default)]
pub struct TalayTubaro;

impl Scheme for TalayTubaro {
    fn name(&self) -> &'static str {
        "talay-tubaro"
    }

    fn weak_order(&self) -> u32 {
        2
    }

    fn increments_per_substep(&self) -> usize {
        2
    }

    fn copies(&self) -> usize {
        2
    }

    #[inline]
    fn step<T: Term + ?Sized>(
        &self,
        term: &mut T,
        state: &mut [f64],
        h: f64,
        dw: &[f64],
    ) -> Result<(), Failure> {
        let d = state.len() / 2;
        let (coarse, fine) = state.split_at_mut(d);
        let (dw1, dw2) = dw.split_at(dw.len() / 2);
        euler(term, coarse, h, dw1, Some(dw2))?;
        euler(term, fine, 0.5 * h, dw1, None)?;
        euler(term, fine, 0.5 * h, dw2, None)
    }

    fn combine(&self, values: &[f64]) -> f64 {
        2.0 * values[1] - values[0]
    }

    fn moves(&self) -> &'static [Move] {
        &[
            Move {
                copy: 0,
                fraction: 1.0,
                increments: &[0, 1],
            },
            Move {
                copy: 1,
                fraction: 0.5,
                increments: &[0],
            },
            Move {
                copy: 1,
                fraction: 0.5,
                increments: &[1],
            },
        ]
    }
}

/// The schemes by name, for configuration.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum SchemeKind {
    /// [`EulerMaruyama`].
    EulerMaruyama,
    /// [`TalayTubaro`] (the default).
    #[default]
    TalayTubaro,
}

impl SchemeKind {
    /// The weak order of the scheme.
    pub fn weak_order(self) -> u32 {
        match self {
            SchemeKind::EulerMaruyama => EulerMaruyama.weak_order(),
            SchemeKind::TalayTubaro => TalayTubaro.weak_order(),
        }
    }
}

impl std::fmt::Display for SchemeKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SchemeKind::EulerMaruyama => EulerMaruyama.name(),
            SchemeKind::TalayTubaro => TalayTubaro.name(),
        })
    }
}

impl std::str::FromStr for SchemeKind {
    type Err = String;

    fn from_str(s: &str) -> Result<SchemeKind, String> {
        match s {
            "em" | "euler-maruyama" => Ok(SchemeKind::EulerMaruyama),
            "talay-tubaro" | "tt" => Ok(SchemeKind::TalayTubaro),
            _ => Err(format!(
                "unknown scheme `{s}`; expected `talay-tubaro` (weak order 2, the default) or `em` \
                 (Euler–Maruyama, weak order 1)"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// dX = −X dt + 0 dW, a linear ODE: EM's error after T = 1 is O(h), the
    /// extrapolated one O(h²).
    struct Decay(Vec<f64>);

    impl Term for Decay {
        fn eval(
            &mut self,
            x: &[f64],
            _dw: &[f64],
            _dw2: Option<&[f64]>,
        ) -> Result<Coefficients<'_>, Failure> {
            self.0[0] = -x[0];
            Ok(Coefficients::Factor(&self.0, None))
        }
    }

    fn run<S: Scheme>(s: S, n: usize) -> f64 {
        let mut t = Decay(vec![0.0]);
        let mut state = vec![1.0; s.copies()];
        let dw = vec![0.0; s.increments_per_substep()];
        for _ in 0..n {
            s.step(&mut t, &mut state, 1.0 / n as f64, &dw).unwrap();
        }
        s.combine(&state)
    }

    #[test]
    fn declared_orders_are_observed_on_a_linear_ode() {
        let exact = (-1.0f64).exp();
        for (order, err) in [
            (1, |n| (run(EulerMaruyama, n) - (-1.0f64).exp()).abs()),
            (2, |n| (run(TalayTubaro, n) - (-1.0f64).exp()).abs()),
        ] as [(u32, fn(usize) -> f64); 2]
        {
            let ratio = err(32) / err(64);
            // Asymptotic ratio 2^order; 5% covers the next term at h = 1/64.
            assert!(
                (ratio / 2f64.powi(order as i32) - 1.0).abs() < 0.05,
                "order {order}: ratio {ratio}, exact {exact}"
            );
        }
    }

    #[test]
    fn names_parse_back() {
        for k in [SchemeKind::EulerMaruyama, SchemeKind::TalayTubaro] {
            assert_eq!(k.to_string().parse::<SchemeKind>(), Ok(k));
        }
        assert!("rk4".parse::<SchemeKind>().is_err());
    }
}
