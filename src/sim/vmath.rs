//! Sine and cosine, and the models' `ℓ(p) = log(p)/(p − 1)`, of a block of lanes at
//! once, in arithmetic the compiler vectorises: the libm call per lane cost as much as
//! the rest of a batched evaluation.
//!
//! **Sine and cosine.** The method is fdlibm's: `x = n·π/2 + r` with `n` the nearest integer to `x·2/π`
//! and `r ∈ [−π/4, π/4]` from a three-part Cody–Waite reduction (the first two parts
//! have 33 significant bits, so `n` times them is exact while |n| < 2²⁰), then the
//! minimax polynomials of fdlibm's `__kernel_sin` / `__kernel_cos` on `r`, and the
//! quadrant `n mod 4` picks signs and roles. Against libm (the tests, on 600 000
//! points): within 1.5 ulps of the larger of the result and 2⁻⁵³ (worst seen 1.04).
//! Arguments with |x| > [`REDUCED`] (or not finite) go to libm, lane by lane.
//!
//! **ℓ** ([`ell`]). The logarithm is fdlibm's (as musl has it): `p = 2ᵏ m` with
//! `m ∈ [√2/2, √2)` read off the bits, `f = m − 1` (exact), `s = f/(2 + f)` and
//! `log m = f − f²/2 + s (f²/2 + R(s²))` with fdlibm's minimax `R`. For `k = 0` (`p`
//! within a factor √2 of 1, where `q = p − 1 = f` exactly) the quotient by `q` is
//! taken inside: `ℓ = 1 − f/2 + (f²/2 + R)/(2 + f)`, a sum of small corrections to 1
//! with no cancellation and no division by a small `q`; otherwise
//! `ℓ = (k ln 2 + log m)/q`. Against [`crate::models::ell`] (the tests, on 10⁶
//! points from 10⁻³⁰⁰ to 10³⁰⁰ and near 1): within 2 ulps. Zero, subnormal, infinite,
//! negative and NaN arguments go to `models::ell`, lane by lane.
//!
//! Only +, −, ×, ÷, comparisons and bit operations are used (no fused multiply-add, no
//! `round`, which baseline x86-64 lacks in vector form: rounding to an integer is the
//! add-and-subtract of 1.5·2⁵²), so every lane gets the same bits whatever the vector
//! width, the instruction set or the lane's position in the block.

/// Largest |x| reduced here: |n| ≤ 10⁵·2/π < 2²⁰ keeps `n·P1` and `n·P2` exact.
pub(crate) const REDUCED: f64 = 100000.0;

/// π/2 = P1 + P2 + P3 (fdlibm's `pio2_1`, `pio2_2`, `pio2_2t`).
const P1: f64 = 1.5707963267341256;
const P2: f64 = 6.077100506303966e-11;
const P3: f64 = 2.0222662487959506e-21;
/// 1.5·2⁵²: `(t + ROUND) − ROUND` is `t` rounded to the nearest integer (ties to
/// even) for |t| < 2⁵¹.
const ROUND: f64 = 6_755_399_441_055_744.0;

/// 2⁻²⁷.
const TINY: f64 = 7.450580596923828e-09;

const S1: f64 = -0.16666666666666632;
const S2: f64 = 0.00833333333332249;
const S3: f64 = -0.0001984126982985795;
const S4: f64 = 2.7557313707070068e-06;
const S5: f64 = -2.5050760253406863e-08;
const S6: f64 = 1.58969099521155e-10;

const C1: f64 = 0.0416666666666666;
const C2: f64 = -0.001388888888887411;
const C3: f64 = 2.480158728947673e-05;
const C4: f64 = -2.7557314351390663e-07;
const C5: f64 = 2.087572321298175e-09;
const C6: f64 = -1.1359647557788195e-11;

/// `(sin x, cos x)` for one number, branch-free (valid for |x| ≤ [`REDUCED`]).
#[inline(always)]
fn sin_cos_reduced(x: f64) -> (f64, f64) {
    let n = (x * std::f64::consts::FRAC_2_PI + ROUND) - ROUND;
    let r = ((x - n * P1) - n * P2) - n * P3;
    let z = r * r;
    // fdlibm's __kernel_sin(r, 0, 0) and __kernel_cos(r, 0).
    let v = z * r;
    let sin_r = r + v * (S1 + z * (S2 + z * (S3 + z * (S4 + z * (S5 + z * S6)))));
    // Below 2⁻²⁷ the cubic term is under half an ulp: r itself, as fdlibm (this also
    // keeps the sign of −0).
    let sin_r = if r.abs() < TINY { r } else { sin_r };
    let p = z * (C1 + z * (C2 + z * (C3 + z * (C4 + z * (C5 + z * C6)))));
    let hz = 0.5 * z;
    let w = 1.0 - hz;
    let cos_r = w + (((1.0 - w) - hz) + z * p);
    // The quadrant n mod 4, as a float (exact for these integers).
    let q = n - 4.0 * ((n * 0.25 + ROUND) - ROUND);
    // (n·0.25 rounded to nearest) can exceed n/4 by ½: q ∈ {−2, −1, 0, 1}, i.e. n mod 4
    // with 2 ≡ −2 and 3 ≡ −1.
    let (s, c) = if q == 0.0 {
        (sin_r, cos_r)
    } else if q == 1.0 || q == -3.0 {
        (cos_r, -sin_r)
    } else if q == 2.0 || q == -2.0 {
        (-sin_r, -cos_r)
    } else {
        (-cos_r, sin_r)
    };
    (s, c)
}

multiversion! {
    /// `sin` and `cos` of `x[l]` into `s[l]`, `c[l]` for every lane `l`.
    pub(crate) fn sin_cos<const L: usize>(x: &[f64; L], s: &mut [f64; L], c: &mut [f64; L]) {
        for l in 0..L {
            (s[l], c[l]) = sin_cos_reduced(x[l]);
        }
        // The lanes past the reduction's range go to libm.
        patch_lanes(x, |v| v.abs() > REDUCED || v.is_nan(), |l| {
            (s[l], c[l]) = x[l].sin_cos();
        });
    }
    baseline sin_cos_base
}

/// Calls `fix(l)` for every lane whose argument is `special`, after counting them
/// across lanes first (a comparison per lane, which vectorises): a block without
/// special lanes pays no per-lane branch.
#[inline(always)]
fn patch_lanes<const L: usize>(
    x: &[f64; L],
    special: impl Fn(f64) -> bool,
    mut fix: impl FnMut(usize),
) {
    let mut count = 0u64;
    for v in x {
        count += u64::from(special(*v));
    }
    if count > 0 {
        for (l, v) in x.iter().enumerate() {
            if special(*v) {
                fix(l);
            }
        }
    }
}

/// fdlibm's `log` coefficients (`Lg1 … Lg7`) and ln 2 in two parts.
const LG1: f64 = 0.6666666666666735;
const LG2: f64 = 0.3999999999940942;
const LG3: f64 = 0.2857142874366239;
const LG4: f64 = 0.22222198432149784;
const LG5: f64 = 0.1818357216161805;
const LG6: f64 = 0.15313837699209373;
const LG7: f64 = 0.14798198605116586;
const LN2_HI: f64 = 0.6931471803691238;
const LN2_LO: f64 = 1.9082149292705877e-10;

/// The bits of √2/2 with the low word cleared (fdlibm's `0x3fe6a09e`).
const SQRT_HALF_BITS: u64 = 0x3fe6_a09e_0000_0000;
/// 2⁵², whose bits or-ed with a small integer `e` give `2⁵² + e` exactly.
const TWO_52: f64 = 4_503_599_627_370_496.0;

/// `ℓ(p)` for a positive normal finite `p`, branch-free.
#[inline(always)]
fn ell_normal(p: f64) -> f64 {
    // p = 2ᵏ m, m ∈ [√2/2, √2): shifting the bits by 1 − √2/2's exponent-and-fraction
    // carries into the exponent exactly when m would reach √2.
    let hx = p
        .to_bits()
        .wrapping_add(0x3ff0_0000_0000_0000 - SQRT_HALF_BITS);
    let e = hx >> 52; // k + 1023
    let k = f64::from_bits(TWO_52.to_bits() | e) - (TWO_52 + 1023.0);
    let m = f64::from_bits((hx & 0x000f_ffff_ffff_ffff) + SQRT_HALF_BITS);
    let f = m - 1.0;
    let u = 1.0 / (2.0 + f);
    let s = f * u;
    let z = s * s;
    let w = z * z;
    let t1 = w * (LG2 + w * (LG4 + w * LG6));
    let t2 = z * (LG1 + w * (LG3 + w * (LG5 + w * LG7)));
    let r = t2 + t1;
    let hfsq = 0.5 * f * f;
    // k = 0: log(p)/f with the quotient taken inside (s/f = u).
    let near = (1.0 - 0.5 * f) + (hfsq + r) * u;
    let log = s * (hfsq + r) + k * LN2_LO - hfsq + f + k * LN2_HI;
    let far = log / (p - 1.0);
    if k == 0.0 { near } else { far }
}

multiversion! {
    /// [`crate::models::ell`] of `p[l]` into `out[l]` for every lane `l`.
    pub(crate) fn ell<const L: usize>(p: &[f64; L], out: &mut [f64; L]) {
        for l in 0..L {
            out[l] = ell_normal(p[l]);
        }
        // Lanes outside the positive normal numbers go to `models::ell`.
        let special = |v: f64| !(f64::MIN_POSITIVE..f64::INFINITY).contains(&v);
        patch_lanes(p, special, |l| out[l] = crate::models::ell(p[l]));
    }
    baseline ell_base
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The distance from libm's value, in units of 2⁻⁵² times the larger of |libm|
    /// and 2⁻⁵³ (so near a zero of the function an absolute error of one ulp of 1/2
    /// is one unit).
    fn units(ours: f64, libm: f64) -> f64 {
        (ours - libm).abs() / (f64::EPSILON * libm.abs().max(0.5f64.powi(53)).max(1e-300))
    }

    fn check(points: &[f64]) {
        for chunk in points.chunks(8) {
            let mut x = [0.0; 8];
            x[..chunk.len()].copy_from_slice(chunk);
            let (mut s, mut c) = ([0.0; 8], [0.0; 8]);
            sin_cos(&x, &mut s, &mut c);
            for l in 0..chunk.len() {
                let (ws, wc) = x[l].sin_cos();
                let u = units(s[l], ws).max(units(c[l], wc));
                assert!(
                    u <= 1.5,
                    "x = {:e}: ({}, {}) vs libm ({ws}, {wc})",
                    x[l],
                    s[l],
                    c[l]
                );
            }
        }
    }

    /// Within 1.5 units (defined in `units`; the worst measured is 1.04) of libm on a dense grid, on random points up
    /// to the reduction limit, near multiples of π/2 (where the reduction cancels), on
    /// tiny and subnormal arguments, and past the limit (where it is libm itself).
    #[test]
    fn agrees_with_libm() {
        let grid: Vec<f64> = (-200_000..=200_000).map(|i| i as f64 * 5e-5).collect();
        check(&grid);
        // A fixed-seed linear congruential sequence over [−1e5, 1e5].
        let mut u = 0x2545_f491_4f6c_dd1du64;
        let random: Vec<f64> = (0..200_000)
            .map(|_| {
                u = u.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                ((u >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0) * REDUCED
            })
            .collect();
        check(&random);
        let near: Vec<f64> = (-5000..5000)
            .flat_map(|k| {
                let m = k as f64 * std::f64::consts::FRAC_PI_2;
                [m, m.next_up(), m.next_down(), m + 1e-9, m - 1e-12]
            })
            .collect();
        check(&near);
        let tiny = [
            0.0,
            -0.0,
            1e-300,
            -1e-300,
            5e-324,
            1e-10,
            -3e-8,
            f64::MIN_POSITIVE,
        ];
        check(&tiny);
        check(&[REDUCED, -REDUCED, 1.5e5, -7e8, 1e300]);
    }

    /// The same bits whether run with AVX (when the processor has it) or as compiled
    /// for the baseline.
    #[test]
    fn same_bits_with_and_without_avx() {
        let mut x = [0.0; 64];
        for k in 0..2000i32 {
            for (l, v) in x.iter_mut().enumerate() {
                let i = f64::from(k) * 64.0 + l as f64;
                *v = (i * 0.7548776662466927).sin() * 10f64.powi(k % 7 - 2);
            }
            let (mut s1, mut c1, mut s2, mut c2) = ([0.0; 64], [0.0; 64], [0.0; 64], [0.0; 64]);
            sin_cos_base(&x, &mut s1, &mut c1);
            sin_cos(&x, &mut s2, &mut c2);
            for l in 0..64 {
                assert_eq!(s1[l].to_bits(), s2[l].to_bits(), "sin {:e}", x[l]);
                assert_eq!(c1[l].to_bits(), c2[l].to_bits(), "cos {:e}", x[l]);
            }
        }
    }

    /// ℓ within 2 ulps of `models::ell` from 1e−300 to 1e300, densely near 1 (where
    /// `models::ell` switches to its series) and across the reduction's boundary at
    /// √2/2 and √2; the special arguments exactly as `models::ell`.
    #[test]
    fn ell_agrees_with_the_models() {
        let mut u = 0x9e37_79b9_7f4a_7c15u64;
        let mut uniform = move || {
            u = u.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            (u >> 11) as f64 / (1u64 << 53) as f64
        };
        let mut points: Vec<f64> = (0..400_000)
            .map(|_| 10f64.powf(600.0 * uniform() - 300.0))
            .collect();
        points
            .extend((0..400_000).map(|_| 1.0 + (uniform() - 0.5) * 10f64.powf(-16.0 * uniform())));
        points.extend((0..200_000).map(|_| 0.2 + 1.8 * uniform()));
        for c in [
            std::f64::consts::FRAC_1_SQRT_2,
            std::f64::consts::SQRT_2,
            1.0,
            0.5,
            2.0,
        ] {
            let mut x = c;
            for _ in 0..50 {
                points.extend([x, c + (c - x)]);
                x = x.next_up();
            }
        }
        points.extend([
            0.0,
            -0.0,
            5e-324,
            1e-310,
            f64::MIN_POSITIVE,
            f64::MAX,
            f64::INFINITY,
            -1.0,
            f64::NAN,
            1.0 + 1e-4,
            1.0 - 1e-4,
        ]);
        let mut worst = 0.0f64;
        for chunk in points.chunks(64) {
            let mut p = [1.0; 64];
            p[..chunk.len()].copy_from_slice(chunk);
            let (mut a, mut b) = ([0.0; 64], [0.0; 64]);
            ell_base(&p, &mut a);
            ell(&p, &mut b);
            for l in 0..chunk.len() {
                let want = crate::models::ell(p[l]);
                assert_eq!(a[l].to_bits(), b[l].to_bits(), "AVX bits at {:e}", p[l]);
                if !want.is_finite() || want == 0.0 || p[l].is_nan() || p[l] < f64::MIN_POSITIVE {
                    assert_eq!(a[l].to_bits(), want.to_bits(), "ℓ({:e})", p[l]);
                    continue;
                }
                let ulps = (a[l] - want).abs() / (f64::EPSILON * want.abs());
                worst = worst.max(ulps);
                assert!(
                    ulps <= 2.0,
                    "ℓ({:e}) = {} vs {want}: {ulps} ulps",
                    p[l],
                    a[l]
                );
            }
        }
        assert!(worst > 0.0, "a vacuous comparison");
    }

    /// Signs of zero, and non-finite arguments as libm has them.
    #[test]
    fn zeros_and_non_finite() {
        let x = [0.0, -0.0, f64::INFINITY, f64::NAN];
        let (mut s, mut c) = ([1.0; 4], [1.0; 4]);
        sin_cos(&x, &mut s, &mut c);
        assert_eq!(s[0].to_bits(), 0.0f64.to_bits());
        assert_eq!(s[1].to_bits(), (-0.0f64).to_bits());
        assert_eq!((c[0], c[1]), (1.0, 1.0));
        assert!(s[2].is_nan() && c[2].is_nan() && s[3].is_nan() && c[3].is_nan());
    }
}
