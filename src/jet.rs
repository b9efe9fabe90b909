//! Second-order forward jets of fixed dimension: a value, its gradient and its Hessian
//! in plain arrays (`Jet<N>`), the number type of the tape's small-dimension Hessian
//! path.
//!
//! num-dual's `Dual2SVec64<N>` carries the same parts, but as `Option`al matrices (a
//! constant has none), so every operation branches on them and the parts travel through
//! memory; here every part is always present and fixed-size, so the compiler unrolls
//! and vectorises each rule and keeps the arithmetic branch-free. Univariate functions
//! go through one rule, the chain rule with `(f, f′, f″)` at the operand's value, and
//! those three numbers come from num-dual's scalar `Dual2_64` applied to the same
//! generic code as every other number type ([`crate::tape::Func::apply`]), so every
//! function has one definition.
//!
//! The Hessian is stored full (both triangles) and built symmetric: every rule is
//! symmetric in its indices, so `h[i][j] == h[j][i]` bit for bit.

use num_dual::Dual2_64;

/// Value, gradient and Hessian of a quantity with respect to `N` variables.
///
/// Laid out as `re`, a pad, then the arrays, 16-byte aligned: every part the rules read
/// as a pair of f64 was written as that same pair. (Without the pad the compiler packed
/// the value with the Hessian's last entry and read them in one load, which cannot be
/// forwarded from the two separate stores that wrote them: measured 1.3× slower on
/// the saddle of `benches/derivatives.rs`.)
#[derive(Clone, Copy, Debug, PartialEq)]
#[repr(C, align(16))]
pub struct Jet<const N: usize> {
    /// The value.
    pub re: f64,
    /// Never read: keeps `g` and `h` on 16-byte boundaries.
    pad: f64,
    /// The gradient.
    pub g: [f64; N],
    /// The Hessian, row-major (symmetric).
    pub h: [[f64; N]; N],
}

impl<const N: usize> Default for Jet<N> {
    fn default() -> Self {
        Jet::constant(0.0)
    }
}

impl<const N: usize> Jet<N> {
    /// A constant.
    #[inline]
    pub fn constant(c: f64) -> Self {
        Jet {
            re: c,
            pad: 0.0,
            g: [0.0; N],
            h: [[0.0; N]; N],
        }
    }

    /// Variable `i` at the value `x`.
    #[inline]
    pub fn variable(x: f64, i: usize) -> Self {
        let mut j = Jet::constant(x);
        j.g[i] = 1.0;
        j
    }

    /// Whether every part is finite.
    pub fn all_finite(&self) -> bool {
        self.re.is_finite()
            && self.g.iter().all(|v| v.is_finite())
            && self.h.iter().flatten().all(|v| v.is_finite())
    }

    /// Applies `op` to every part of `a` and `b` (linear operations).
    #[inline(always)]
    fn zip(a: &Self, b: &Self, op: impl Fn(f64, f64) -> f64) -> Self {
        let mut r = Jet::constant(op(a.re, b.re));
        for i in 0..N {
            r.g[i] = op(a.g[i], b.g[i]);
            for k in 0..N {
                r.h[i][k] = op(a.h[i][k], b.h[i][k]);
            }
        }
        r
    }

    /// Applies `op` to every part of `a`.
    #[inline(always)]
    fn map(a: &Self, op: impl Fn(f64) -> f64) -> Self {
        let mut r = Jet::constant(op(a.re));
        for i in 0..N {
            r.g[i] = op(a.g[i]);
            for k in 0..N {
                r.h[i][k] = op(a.h[i][k]);
            }
        }
        r
    }

    /// Writes `op` of every part of `a` and `b` into `self` (no temporary: the caller's
    /// slot is written in place, which keeps results out of the stack).
    #[inline(always)]
    fn zip_into(&mut self, a: &Self, b: &Self, op: impl Fn(f64, f64) -> f64) {
        self.re = op(a.re, b.re);
        for i in 0..N {
            self.g[i] = op(a.g[i], b.g[i]);
            for k in 0..N {
                self.h[i][k] = op(a.h[i][k], b.h[i][k]);
            }
        }
    }

    /// Writes `op` of every part of `a` into `self`.
    #[inline(always)]
    fn map_into(&mut self, a: &Self, op: impl Fn(f64) -> f64) {
        self.re = op(a.re);
        for i in 0..N {
            self.g[i] = op(a.g[i]);
            for k in 0..N {
                self.h[i][k] = op(a.h[i][k]);
            }
        }
    }

    /// `self = a + b`
    #[inline(always)]
    pub fn set_add(&mut self, a: &Self, b: &Self) {
        self.zip_into(a, b, |x, y| x + y)
    }

    /// `self = a − b`
    #[inline(always)]
    pub fn set_sub(&mut self, a: &Self, b: &Self) {
        self.zip_into(a, b, |x, y| x - y)
    }

    /// `self = a + c·b`
    #[inline(always)]
    pub fn set_add_scaled(&mut self, a: &Self, b: &Self, c: f64) {
        self.zip_into(a, b, |x, y| x + c * y)
    }

    /// `self = f(a)` for an elementwise linear `f` (negation, scaling, division by a
    /// constant).
    #[inline(always)]
    pub fn set_map(&mut self, a: &Self, f: impl Fn(f64) -> f64) {
        self.map_into(a, f)
    }

    /// `self = a + c`
    #[inline(always)]
    pub fn set_add_const(&mut self, a: &Self, c: f64) {
        *self = *a;
        self.re += c;
    }

    /// `self = a · b`
    #[inline(always)]
    pub fn set_mul(&mut self, a: &Self, b: &Self) {
        self.re = a.re * b.re;
        for i in 0..N {
            self.g[i] = a.re * b.g[i] + b.re * a.g[i];
            for k in 0..N {
                self.h[i][k] =
                    a.re * b.h[i][k] + b.re * a.h[i][k] + (a.g[i] * b.g[k] + b.g[i] * a.g[k]);
            }
        }
    }

    /// `self = a²`: bit for bit [`Jet::set_mul`]`(a, a)` (each doubled product there is
    /// `t + t`, exact), with half the products.
    #[inline(always)]
    pub fn set_square(&mut self, a: &Self) {
        self.re = a.re * a.re;
        for i in 0..N {
            let t = a.re * a.g[i];
            self.g[i] = t + t;
            for k in 0..N {
                let (p, q) = (a.re * a.h[i][k], a.g[i] * a.g[k]);
                self.h[i][k] = (p + p) + (q + q);
            }
        }
    }

    /// `self = f(a)` given `f(a), f′(a), f″(a)`.
    #[inline(always)]
    pub fn set_chain(&mut self, a: &Self, f0: f64, f1: f64, f2: f64) {
        self.re = f0;
        for i in 0..N {
            self.g[i] = f1 * a.g[i];
            for k in 0..N {
                self.h[i][k] = f1 * a.h[i][k] + f2 * (a.g[i] * a.g[k]);
            }
        }
    }

    /// `self = variable i at x`.
    #[inline(always)]
    pub fn set_variable(&mut self, x: f64, i: usize) {
        self.set_constant(x);
        // Whole-array store: writing g[i] after the zeros would leave a store that the
        // next instruction's wide load cannot forward from.
        self.g = std::array::from_fn(|k| if k == i { 1.0 } else { 0.0 });
    }

    /// `self = c`.
    #[inline(always)]
    pub fn set_constant(&mut self, c: f64) {
        self.re = c;
        self.g = [0.0; N];
        self.h = [[0.0; N]; N];
    }

    /// `a + b`
    #[inline]
    pub fn add(a: &Self, b: &Self) -> Self {
        Jet::zip(a, b, |x, y| x + y)
    }

    /// `a − b`
    #[inline]
    pub fn sub(a: &Self, b: &Self) -> Self {
        Jet::zip(a, b, |x, y| x - y)
    }

    /// `−a`
    #[inline]
    pub fn neg(a: &Self) -> Self {
        Jet::map(a, |x| -x)
    }

    /// `a · c`
    #[inline]
    pub fn scale(a: &Self, c: f64) -> Self {
        Jet::map(a, |x| x * c)
    }

    /// `a / c`
    #[inline]
    pub fn div_const(a: &Self, c: f64) -> Self {
        Jet::map(a, |x| x / c)
    }

    /// `a + c`
    #[inline]
    pub fn add_const(a: &Self, c: f64) -> Self {
        let mut r = *a;
        r.re += c;
        r
    }

    /// `a · b`: ∇ = a∇b + b∇a, ∇² = a∇²b + b∇²a + ∇a∇bᵀ + ∇b∇aᵀ.
    #[inline]
    pub fn mul(a: &Self, b: &Self) -> Self {
        let mut r = Jet::constant(a.re * b.re);
        for i in 0..N {
            r.g[i] = a.re * b.g[i] + b.re * a.g[i];
            for k in 0..N {
                r.h[i][k] =
                    a.re * b.h[i][k] + b.re * a.h[i][k] + (a.g[i] * b.g[k] + b.g[i] * a.g[k]);
            }
        }
        r
    }

    /// `f(a)` given `f(a), f′(a), f″(a)`: ∇ = f′∇a, ∇² = f′∇²a + f″∇a∇aᵀ.
    #[inline]
    pub fn chain(a: &Self, f0: f64, f1: f64, f2: f64) -> Self {
        let mut r = Jet::constant(f0);
        for i in 0..N {
            r.g[i] = f1 * a.g[i];
            for k in 0..N {
                r.h[i][k] = f1 * a.h[i][k] + f2 * (a.g[i] * a.g[k]);
            }
        }
        r
    }

    /// `f(a)` for a univariate `f` written over any number type: `f` runs once on
    /// a scalar second-order dual at `a`'s value.
    #[inline]
    pub fn apply(a: &Self, f: impl FnOnce(&Dual2_64) -> Dual2_64) -> Self {
        let d = f(&Dual2_64::new(a.re, 1.0, 0.0));
        Jet::chain(a, d.re, d.v1, d.v2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use num_dual::{Dual2SVec64, DualNum};

    /// Every rule against num-dual's `Dual2SVec64` on the same expression.
    #[test]
    fn rules_agree_with_num_dual() {
        let (x, y) = (0.7, -1.3);
        let jx = Jet::<2>::variable(x, 0);
        let jy = Jet::<2>::variable(y, 1);
        // f = (x·y + 3) / (y − 2) − exp(x)·sin(y) + x²
        let num = Jet::add_const(&Jet::mul(&jx, &jy), 3.0);
        let den = Jet::add_const(&jy, -2.0);
        let recip = Jet::apply(&den, |d| d.recip());
        let f = Jet::add(
            &Jet::sub(
                &Jet::mul(&num, &recip),
                &Jet::mul(&Jet::apply(&jx, |d| d.exp()), &Jet::apply(&jy, |d| d.sin())),
            ),
            &Jet::apply(&jx, |d| d.powi(2)),
        );
        let dx = Dual2SVec64::<2>::from_re(x).derivative(0);
        let dy = Dual2SVec64::<2>::from_re(y).derivative(1);
        let want = (dx * dy + 3.0) / (dy - 2.0) - dx.exp() * dy.sin() + dx.powi(2);
        assert!((f.re - want.re).abs() < 1e-14);
        let g = want.v1.0.unwrap();
        let h = want.v2.0.unwrap();
        for i in 0..2 {
            assert!((f.g[i] - g[i]).abs() < 1e-13, "g[{i}]");
            for k in 0..2 {
                assert!((f.h[i][k] - h[(i, k)]).abs() < 1e-13, "h[{i}][{k}]");
                assert_eq!(f.h[i][k], f.h[k][i], "symmetric bit for bit");
            }
        }
    }

    /// `set_square(a)` is `set_mul(a, a)` bit for bit, and a variable has a unit
    /// gradient in its own direction only.
    #[test]
    fn square_is_mul_by_itself_and_variables_are_unit() {
        let jx = Jet::<3>::variable(0.37, 0);
        let jy = Jet::<3>::variable(-1.9, 2);
        assert_eq!(jy.g, [0.0, 0.0, 1.0]);
        let mut a = Jet::<3>::default();
        a.set_mul(&Jet::apply(&jx, |d| d.sin()), &Jet::add_const(&jy, 0.3));
        let (mut sq, mut mul) = (Jet::<3>::default(), Jet::<3>::default());
        sq.set_square(&a);
        mul.set_mul(&a, &a);
        let bits = |j: &Jet<3>| {
            let mut v = vec![j.re.to_bits()];
            v.extend(j.g.iter().map(|x| x.to_bits()));
            v.extend(j.h.iter().flatten().map(|x| x.to_bits()));
            v
        };
        assert_eq!(bits(&sq), bits(&mul));
    }
}
