//! The scalar function behind every model, `ℓ(p) = log(p)/(p − 1)` with `ℓ(1) = 1`,
//! equivalently `ℓ(1 + q) = ln(1 + q)/q = 1 − q/2 + q²/3 − q³/4 + …`; see spec
//! docs/models.md §2. `φ(ηH)` has eigenvalues `ℓ(1 − ηλ_i)`, `ψ(ηH)` has `ℓ((1 − ηλ_i)²)` and
//! the `hasme-exact` weights are `ℓ((1 − ηλ_i)(1 − ηλ_j))`.
//!
//! Accuracy. The naive `−log(1 − x)/x` (x = ηλ) loses `ε/x` relative accuracy because
//! `1 − x` is rounded before the logarithm sees it while `x` is not: numerator and
//! denominator describe different points. Here `ℓ` is always evaluated from one
//! consistent `q = p − 1`: by its Taylor series for `|q| < 1e−4`, as `ln_1p(q)/q` for
//! `p ≥ 1/2`, and as `ln(p)/q` for `p < 1/2`, where `p` carries the relative accuracy
//! that `q ≈ −1` cannot. Near `q = 0` the sensitivity of `ℓ` to `q` is only `−1/2`, so
//! an absolute error of an ulp in `q` costs an ulp in `ℓ`.

/// Below this `|q|` the Taylor series through `q⁴` is used. Why 1e−4: the first omitted
/// term, `q⁵/6`, is then below 2e−21 relative, far under ε; and the series avoids
/// trusting `ln_1p` on subnormal `q`. Above it `ln_1p(q)/q` is accurate to a few ulps.
const SERIES_BELOW: f64 = 1e-4;

/// `ℓ(p) = log(p)/(p − 1)`, `ℓ(1) = 1`: the function whose matrix versions are every
/// model's drift and diffusion multipliers (docs/models.md §2).
///
/// Accurate to a few ulps (relative) for every `p > 0`, including `p → 1` where the
/// naive quotient cancels. Limits: `ℓ(0) = +∞`, `ℓ(+∞) = 0`. Like `f64::ln`, it returns
/// NaN for `p < 0` or NaN `p`: the models never call it there, they check `p_i > 0`
/// (`ηλ_max < 1`) first and report [`ModelError::StepSizeTooLarge`](super::ModelError).
///
/// ```
/// use hasme::models::ell;
/// assert_eq!(ell(1.0), 1.0);
/// assert!((ell(0.5) - 2.0 * std::f64::consts::LN_2).abs() < 1e-15);
/// // Near 1 the result keeps full relative accuracy: ℓ(1 + q) ≈ 1 − q/2.
/// assert!((ell(1.0 + 1e-12) - (1.0 - 0.5e-12)).abs() < 1e-16);
/// ```
pub fn ell(p: f64) -> f64 {
    // p − 1 is exact for p in [0.5, 2] (Sterbenz); outside it ell_pq reads p, not q.
    ell_pq(p, p - 1.0)
}

/// `ℓ(p)` given both `p` and `q = p − 1`, each as accurate as the caller can form it
/// (e.g. `q = −ηλ` exactly while `p = 1 − ηλ` is rounded).
pub(crate) fn ell_pq(p: f64, q: f64) -> f64 {
    if q.abs() < SERIES_BELOW {
        // 1 − q/2 + q²/3 − q³/4 + q⁴/5 in Horner form.
        1.0 + q * (-0.5 + q * (1.0 / 3.0 + q * (-0.25 + q * 0.2)))
    } else if q == f64::INFINITY {
        0.0
    } else if p < 0.5 {
        // q ∈ (−1, −1/2]: no cancellation in q, and ln(p) keeps p's relative accuracy
        // down to subnormal p, which ln_1p(q) would lose once p < ε.
        p.ln() / q
    } else {
        q.ln_1p() / q
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `Σ_{k<n} (−1)^k q^k/(k+1)`, summed from the small end so the reference itself is
    /// accurate to an ulp for |q| ≤ 1e−2.
    fn series(q: f64, n: i32) -> f64 {
        (0..n)
            .rev()
            .fold(0.0, |acc, k| acc + (-q).powi(k) / f64::from(k + 1))
    }

    #[test]
    fn one_is_exactly_one() {
        assert_eq!(ell(1.0), 1.0);
        assert_eq!(ell_pq(1.0, 0.0), 1.0);
    }

    #[test]
    fn matches_its_series_near_one() {
        // 30 terms: for |q| ≤ 1e−2 the remainder is below 1e−60.
        for &q in &[
            1e-300, -1e-300, 1e-12, -1e-12, 1e-8, -3e-7, 9.9e-5, -9.9e-5, 1e-4, -1e-4, 1.01e-4,
            5e-4, -7e-4, 1e-3, -1e-3, 1e-2, -1e-2,
        ] {
            let reference = series(q, 30);
            let rel = (ell(1.0 + q) - reference).abs() / reference;
            let rel_q = (ell_pq(1.0 + q, q) - reference).abs() / reference;
            // 1e−15: a few ulps; p = 1 + q is itself rounded for tiny q, but ℓ's
            // sensitivity to q there is q/2, so that rounding is invisible.
            assert!(rel <= 1e-15, "q = {q}: relative error {rel}");
            assert!(rel_q <= 1e-15, "q = {q}: relative error {rel_q}");
        }
    }

    #[test]
    fn matches_the_quotient_far_from_one() {
        for &p in &[
            1e-300_f64, 1e-10, 0.01, 0.3, 0.5, 0.9, 1.1, 2.0, 7.5, 1e6, 1e300,
        ] {
            let naive = p.ln() / (p - 1.0);
            // 1e−14: away from p = 1 the quotient does not cancel; ln is within an ulp.
            assert!((ell(p) - naive).abs() <= 1e-14 * naive, "p = {p}");
        }
    }

    #[test]
    fn limits_and_outside_domain() {
        assert_eq!(ell(0.0), f64::INFINITY);
        assert_eq!(ell(f64::INFINITY), 0.0);
        assert!(ell(-0.5).is_nan());
        assert!(ell(f64::NAN).is_nan());
    }

    #[test]
    fn continuous_across_the_log_switch_at_one_half() {
        let below = ell(0.5 * (1.0 - 1e-15));
        let above = ell(0.5);
        // 1e−15: ln(p)/q and ln_1p(q)/q agree to an ulp; ℓ moves by ~1e−15·|ℓ'| ≈ 1e−15.
        assert!((below - above).abs() < 2e-15 * above);
        assert!((above - 2.0 * std::f64::consts::LN_2).abs() < 1e-15);
    }

    #[test]
    fn continuous_across_the_series_switch() {
        for &q in &[SERIES_BELOW, -SERIES_BELOW] {
            let below = ell_pq(1.0 + q, q * (1.0 - 1e-12));
            let above = ell_pq(1.0 + q, q * (1.0 + 1e-12));
            // 1e−15: the two branches agree to round-off; ℓ moves by only ~q·1e−12/2.
            assert!((below - above).abs() < 1e-15, "q = {q}");
        }
    }
}
