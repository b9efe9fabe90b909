//! A lane-batched forward evaluator of the objective's tape: value, gradient and
//! (optionally) Hessian of f at up to [`LANES`] points at once, in a
//! structure-of-arrays layout.
//!
//! The tape's own evaluator ([`crate::tape`]) runs one point at a time over second-order
//! jets ([`crate::jet::Jet`]): every instruction is dispatched, and its jet built and
//! stored, once per point. A simulator evaluates the same tape at thousands of points
//! per step (one per path), so here each instruction is dispatched once for a whole
//! block of points and applied by a plain loop over the lanes, which the compiler
//! vectorises. The derivative rules are the second-order forward rules num-dual
//! applies: for a unary instruction `y = u(a)` with `u`, `u'`, `u''` at `a`,
//!
//! ```text
//! y = u(a),   ∂ᵢy = u' ∂ᵢa,   ∂ᵢ∂ⱼy = u' ∂ᵢ∂ⱼa + u'' ∂ᵢa ∂ⱼa,
//! ```
//!
//! with `(u, u', u'')` obtained by running the instruction on a scalar second-order
//! dual `Dual2_64` seeded with `(a, 1, 0)` (so each function's value and derivatives
//! come from the very code the tape uses, [`crate::tape::Func::apply`]), and the
//! product rule `∂ᵢ∂ⱼ(ab) = b ∂ᵢ∂ⱼa + ∂ᵢa ∂ⱼb + ∂ⱼa ∂ᵢb + a ∂ᵢ∂ⱼb` for products.
//! Quotients are `a · (1/b)` and `a^b` is `exp(b ln a)`, as in num-dual.
//!
//! **Structural zeros.** Each slot carries a mask of the rows that can be nonzero (a
//! variable's gradient has one nonzero entry and no Hessian; `x²` does not depend on
//! `y`; …), found from the operands' masks as the tape runs. Rows outside the mask are
//! neither computed nor read: a rule sums only the terms whose factors can be nonzero,
//! in the order the full rule sums them, so the results are those of the full rules up
//! to the sign of a zero, except that an entry that is exactly zero by structure stays
//! zero when an unrelated entry is not finite (the full rules would give `0·∞ = NaN`).
//! A variable's constant rows and a constant's value are written once, when the
//! evaluator is built.
//!
//! Each lane's arithmetic depends on that lane's point only, so a lane's numbers do
//! not depend on which other points share its block (the simulator's reproducibility
//! rests on this). They may differ from the scalar tape's in the last bits (another
//! association of the same sums); the unit tests bound the difference at 1e−13
//! relative.
//!
//! With derivatives only single-output tapes are accepted (the objective); values alone
//! ([`Order::Value`]) may have several outputs (the entries of Σ(x)).

use num_dual::{Dual2_64, DualNum};

use super::vmath::sin_cos;
use crate::tape::{Func, Op, Tape, max_takes_first, min_takes_first};

/// Points evaluated per call. 64 lanes × (1 + d + d(d+1)/2) rows × the tape's slots
/// stays within the first-level caches for the small tapes simulated step by step.
pub(crate) const LANES: usize = 64;

/// Largest dimension batched; above it the Hessian's d(d+1)/2 rows per slot outgrow the
/// caches and the tape's own forward-over-reverse method is the faster one.
pub(crate) const LANES_MAX_DIM: usize = 4;

/// Which derivatives to carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Order {
    /// Values only (any number of outputs).
    Value,
    /// Value and gradient.
    Gradient,
    /// Value, gradient and Hessian.
    Hessian,
}

/// One row of a slot, or one coordinate of a block of points: a number per lane.
pub(crate) type Row = [f64; LANES];

/// The evaluator: the tape's instructions and the lane buffers.
#[derive(Clone, Debug)]
pub(crate) struct LaneTape {
    dim: usize,
    ops: Vec<Op>,
    /// The slot of each output.
    outputs: Vec<usize>,
    order: Order,
    /// Gradient rows per slot: d, or 0 for [`Order::Value`].
    tangents: usize,
    /// Rows per slot: 1 (value) + d (gradient) + d(d+1)/2 (Hessian, packed upper
    /// triangle, row-major) when carried.
    width: usize,
    /// `slots + 2` (two scratch slots), `width` rows each.
    buf: Vec<Row>,
    /// Per slot, bit `r` set when row `r` can be nonzero (bit 0, the value, always).
    mask: Vec<u32>,
    /// `(u, u', u'')` per lane for the unary instruction being applied.
    f: [Row; 3],
    /// `(i, j)`, `i ≤ j`, of each packed Hessian row.
    pairs: Vec<(usize, usize)>,
}

/// Number of Hessian rows for `d` variables.
fn hessian_rows(d: usize) -> usize {
    d * (d + 1) / 2
}

impl LaneTape {
    /// The evaluator for `tape`, or `None` when the tape has no instruction, more than
    /// [`LANES_MAX_DIM`] variables, data inputs (a finite sum's per-example loss: f is
    /// then a mean over rows, evaluated by the problem), or more than one output with
    /// derivatives.
    pub(crate) fn new(tape: &Tape, order: Order) -> Option<LaneTape> {
        let d = tape.dim();
        if (tape.outputs() != 1 && order != Order::Value)
            || tape.is_empty()
            || d == 0
            || d > LANES_MAX_DIM
            || tape.data_inputs() > 0
        {
            return None;
        }
        let (tangents, hessian) = match order {
            Order::Value => (0, 0),
            Order::Gradient => (d, 0),
            Order::Hessian => (d, hessian_rows(d)),
        };
        let width = 1 + tangents + hessian;
        let mut pairs = Vec::new();
        for i in 0..d {
            for j in i..d {
                pairs.push((i, j));
            }
        }
        let mut buf = vec![[0.0; LANES]; (tape.len() + 2) * width];
        let mut mask = vec![1; tape.len() + 2];
        // The rows no evaluation changes: a variable's gradient, a constant's value.
        for (k, op) in tape.ops().iter().enumerate() {
            match *op {
                Op::Var(i) if tangents > 0 => {
                    buf[k * width + 1 + i as usize] = [1.0; LANES];
                    mask[k] = 1 | 1 << (1 + i);
                }
                Op::Const(c) => buf[k * width] = [c; LANES],
                _ => {}
            }
        }
        Some(LaneTape {
            dim: d,
            ops: tape.ops().to_vec(),
            outputs: tape.output_slots().iter().map(|&o| o as usize).collect(),
            order,
            tangents,
            width,
            buf,
            mask,
            f: [[0.0; LANES]; 3],
            pairs,
        })
    }

    /// Whether row `r` of slot `k` can be nonzero.
    #[inline(always)]
    fn has(&self, k: usize, r: usize) -> bool {
        self.mask[k] >> r & 1 == 1
    }

    /// The mask of `u(a)` (the chain rule) and of `a²`: gradient entries where `a` has
    /// them, Hessian entries where `a` has them or has both gradient entries.
    fn chain_mask(&self, a: usize) -> u32 {
        let (d, ma) = (self.tangents, self.mask[a]);
        let mut m = ma & ((1 << (1 + d)) - 1);
        for (p, &(i, j)) in self.pairs.iter().enumerate().take(self.hessian_pairs()) {
            let r = 1 + d + p;
            if ma >> r & 1 == 1 || (ma >> (1 + i) & 1 == 1 && ma >> (1 + j) & 1 == 1) {
                m |= 1 << r;
            }
        }
        m
    }

    /// Rows carried per slot beyond value and gradient.
    #[inline]
    fn hessian_pairs(&self) -> usize {
        self.width - 1 - self.tangents
    }

    /// Evaluates the tape at the block of points `x` (structure of arrays: `x[i][l]` is
    /// coordinate `i` of lane `l`'s point, `d` rows). Every lane is evaluated; the
    /// caller reads the lanes it filled (the others' results are meaningless, and
    /// harmless: floating-point arithmetic does not trap).
    pub(crate) fn eval(&mut self, x: &[Row]) {
        eval_block(self, x)
    }

    #[inline(always)]
    fn eval_body(&mut self, x: &[Row]) {
        debug_assert!(x.len() >= self.dim);
        let w = self.width;
        let tmp = self.ops.len();
        for k in 0..self.ops.len() {
            let op = self.ops[k];
            match op {
                // Their other rows were written when the evaluator was built.
                Op::Var(i) => self.buf[k * w] = x[i as usize],
                Op::Const(_) => {}
                Op::Add(a, b) => self.zip(k, a as usize, b as usize, |p, q| p + q),
                Op::Sub(a, b) => self.zip(k, a as usize, b as usize, |p, q| p - q),
                Op::AddScaled(a, b, c) => self.zip(k, a as usize, b as usize, |p, q| p + c * q),
                Op::Mul(a, b) => self.mul(k, a as usize, b as usize),
                Op::Div(a, b) => {
                    self.unary(tmp, b as usize, |v| v.recip());
                    self.mul(tmp + 1, a as usize, tmp);
                    let (src, dst) = pair(&mut self.buf, w, k, tmp + 1);
                    dst.copy_from_slice(src);
                    self.mask[k] = self.mask[tmp + 1];
                }
                Op::Pow(a, b) => {
                    self.unary(tmp, a as usize, |v| v.ln());
                    self.mul(tmp + 1, tmp, b as usize);
                    self.unary(k, tmp + 1, |v| v.exp());
                }
                Op::AddConst(a, c) => {
                    self.map(k, a as usize, |v| v);
                    self.buf[k * w].iter_mut().for_each(|v| *v += c);
                }
                Op::ConstSub(c, a) => {
                    self.map(k, a as usize, |v| -v);
                    self.buf[k * w].iter_mut().for_each(|v| *v += c);
                }
                Op::MulConst(a, c) => self.map(k, a as usize, |v| v * c),
                Op::DivConst(a, c) => self.map(k, a as usize, |v| v / c),
                Op::Neg(a) => self.map(k, a as usize, |v| -v),
                Op::ConstDiv(c, a) => self.unary(k, a as usize, |v| v.recip() * c),
                Op::PowI(a, 2) => self.square(k, a as usize),
                Op::PowI(a, e) => self.unary(k, a as usize, |v| v.powi(e)),
                Op::PowF(a, c) => self.unary(k, a as usize, |v| {
                    // The tape's rule at 0 (see `tape::powf`): zero when c exceeds the
                    // derivative order carried (2), else `sqrt`'s infinite derivative.
                    if v.re == 0.0 && c > 0.0 {
                        if c > 2.0 {
                            Dual2_64::from(0.0)
                        } else {
                            v.sqrt()
                        }
                    } else {
                        v.powf(c)
                    }
                }),
                Op::ConstPow(c, a) => self.unary(k, a as usize, |v| (v * c.ln()).exp()),
                // The commonest functions straight from f64 (the values num-dual's
                // rules produce), the others through `Func::apply` on `Dual2_64`.
                Op::Func(f @ (Func::Cos | Func::Sin), a) => {
                    let a = a as usize;
                    let [f0, f1, f2] = &mut self.f;
                    sin_cos(&self.buf[a * w], f1, f0);
                    // (f0, f1) = (cos, sin) now; the cosine's derivatives are
                    // (−sin, −cos), the sine's (cos, −sin).
                    for l in 0..LANES {
                        let (c, s) = (f0[l], f1[l]);
                        (f0[l], f1[l], f2[l]) = if f == Func::Cos {
                            (c, -s, -c)
                        } else {
                            (s, c, -s)
                        };
                    }
                    self.chain(k, a);
                }
                Op::Func(Func::Exp, a) => self.unary_f64(k, a as usize, |v| {
                    let e = v.exp();
                    (e, e, e)
                }),
                Op::Func(f, a) => self.unary(k, a as usize, |v| f.apply(&v)),
                Op::Max(a, b) => self.select(k, a as usize, b as usize, max_takes_first),
                Op::Min(a, b) => self.select(k, a as usize, b as usize, min_takes_first),
            }
        }
    }

    /// The rows of slots `a` and `b` (read) and of `out` (written), `out` after both.
    #[inline(always)]
    fn three(&mut self, out: usize, a: usize, b: usize) -> (&[Row], &[Row], &mut [Row]) {
        debug_assert!(a < out && b < out);
        let w = self.width;
        let (done, rest) = self.buf.split_at_mut(out * w);
        (
            &done[a * w..(a + 1) * w],
            &done[b * w..(b + 1) * w],
            &mut rest[..w],
        )
    }

    /// `out = a ∘ b` row by row (for `+` and `−`), a row one operand lacks read as 0.
    #[inline(always)]
    fn zip(&mut self, out: usize, a: usize, b: usize, f: impl Fn(f64, f64) -> f64) {
        let (ma, mb) = (self.mask[a], self.mask[b]);
        self.mask[out] = ma | mb;
        let (a, b, y) = self.three(out, a, b);
        for (r, ((y, a), b)) in y.iter_mut().zip(a).zip(b).enumerate() {
            match (ma >> r & 1 == 1, mb >> r & 1 == 1) {
                (true, true) => {
                    for l in 0..LANES {
                        y[l] = f(a[l], b[l]);
                    }
                }
                (true, false) => {
                    for l in 0..LANES {
                        y[l] = f(a[l], 0.0);
                    }
                }
                (false, true) => {
                    for l in 0..LANES {
                        y[l] = f(0.0, b[l]);
                    }
                }
                (false, false) => {}
            }
        }
    }

    /// `out = a` in the lanes where `first(a, b)` holds on the values, `b` elsewhere,
    /// every row alike (`max` and `min`: the chosen operand's derivatives are the
    /// result's), a row one operand lacks read as 0.
    #[inline(always)]
    fn select(&mut self, out: usize, a: usize, b: usize, first: fn(f64, f64) -> bool) {
        let (ma, mb) = (self.mask[a], self.mask[b]);
        self.mask[out] = ma | mb;
        let (a, b, y) = self.three(out, a, b);
        let mut take = [false; LANES];
        for l in 0..LANES {
            take[l] = first(a[0][l], b[0][l]);
        }
        for (r, ((y, a), b)) in y.iter_mut().zip(a).zip(b).enumerate() {
            let (on_a, on_b) = (ma >> r & 1 == 1, mb >> r & 1 == 1);
            if !on_a && !on_b {
                continue;
            }
            let (a, b) = (if on_a { a } else { &ZERO }, if on_b { b } else { &ZERO });
            for l in 0..LANES {
                y[l] = if take[l] { a[l] } else { b[l] };
            }
        }
    }

    /// `out = f(a)` row by row, for `f` linear (negation, scaling).
    #[inline(always)]
    fn map(&mut self, out: usize, a: usize, f: impl Fn(f64) -> f64) {
        let ma = self.mask[a];
        self.mask[out] = ma;
        let (a, _, y) = self.three(out, a, a);
        for (r, (y, a)) in y.iter_mut().zip(a).enumerate() {
            if ma >> r & 1 == 1 {
                for l in 0..LANES {
                    y[l] = f(a[l]);
                }
            }
        }
    }

    /// The product rule (`out` after both operands), terms whose factors are zero by
    /// structure left out.
    #[inline(always)]
    fn mul(&mut self, out: usize, a: usize, b: usize) {
        let (d, np) = (self.tangents, self.hessian_pairs());
        let (ma, mb) = (self.mask[a], self.mask[b]);
        let on = |m: u32, r: usize| m >> r & 1 == 1;
        let pairs = std::mem::take(&mut self.pairs);
        let mut m = 1;
        let (a, b, y) = self.three(out, a, b);
        let (av, bv) = (&a[0], &b[0]);
        for i in 0..d {
            let r = 1 + i;
            let n = sum_of_products(&mut y[r], [(on(ma, r), &a[r], bv), (on(mb, r), av, &b[r])]);
            m |= u32::from(n) << r;
        }
        for (p, &(i, j)) in pairs.iter().enumerate().take(np) {
            let r = 1 + d + p;
            let (gi, gj) = (1 + i, 1 + j);
            let n = sum_of_products(
                &mut y[r],
                [
                    (on(ma, r), &a[r], bv),
                    (on(ma, gi) && on(mb, gj), &a[gi], &b[gj]),
                    (on(ma, gj) && on(mb, gi), &a[gj], &b[gi]),
                    (on(mb, r), av, &b[r]),
                ],
            );
            m |= u32::from(n) << r;
        }
        let yv = &mut y[0];
        for l in 0..LANES {
            yv[l] = av[l] * bv[l];
        }
        self.pairs = pairs;
        self.mask[out] = m;
    }

    /// `a²` (the commonest power): the product rule with `b = a`.
    #[inline(always)]
    fn square(&mut self, out: usize, a: usize) {
        let (d, np) = (self.tangents, self.hessian_pairs());
        let ma = self.mask[a];
        let m = self.chain_mask(a);
        let on = |r: usize| ma >> r & 1 == 1;
        let pairs = std::mem::take(&mut self.pairs);
        let (a, _, y) = self.three(out, a, a);
        let av = &a[0];
        for i in 0..d {
            let (ag, yg) = (&a[1 + i], &mut y[1 + i]);
            if on(1 + i) {
                for l in 0..LANES {
                    yg[l] = 2.0 * av[l] * ag[l];
                }
            }
        }
        for (p, &(i, j)) in pairs.iter().enumerate().take(np) {
            let r = 1 + d + p;
            let (ah, agi, agj) = (&a[r], &a[1 + i], &a[1 + j]);
            let yh = &mut y[r];
            match (on(r), on(1 + i) && on(1 + j)) {
                (true, true) => {
                    for l in 0..LANES {
                        yh[l] = 2.0 * (av[l] * ah[l] + agi[l] * agj[l]);
                    }
                }
                (true, false) => {
                    for l in 0..LANES {
                        yh[l] = 2.0 * (av[l] * ah[l]);
                    }
                }
                (false, true) => {
                    for l in 0..LANES {
                        yh[l] = 2.0 * (agi[l] * agj[l]);
                    }
                }
                (false, false) => {}
            }
        }
        let yv = &mut y[0];
        for l in 0..LANES {
            yv[l] = av[l] * av[l];
        }
        self.pairs = pairs;
        self.mask[out] = m;
    }

    /// `out = u(a)` by the chain rule, `u` giving `(u, u', u'')` at a point.
    fn unary_f64(&mut self, out: usize, a: usize, u: impl Fn(f64) -> (f64, f64, f64)) {
        let v = &self.buf[a * self.width];
        for (l, &x) in v.iter().enumerate() {
            (self.f[0][l], self.f[1][l], self.f[2][l]) = u(x);
        }
        self.chain(out, a);
    }

    /// `out = u(a)` by the chain rule, with `(u, u', u'')` from `u` on `Dual2_64`.
    fn unary(&mut self, out: usize, a: usize, u: impl Fn(Dual2_64) -> Dual2_64) {
        let v = &self.buf[a * self.width];
        for (l, &x) in v.iter().enumerate() {
            let y = u(Dual2_64::new(x, 1.0, 0.0));
            self.f[0][l] = y.re;
            self.f[1][l] = y.v1;
            self.f[2][l] = y.v2;
        }
        self.chain(out, a);
    }

    /// `out = u(a)` from `self.f = (u, u', u'')` at `a`.
    #[inline(always)]
    fn chain(&mut self, out: usize, a: usize) {
        let (d, np) = (self.tangents, self.hessian_pairs());
        let ma = self.mask[a];
        self.mask[out] = self.chain_mask(a);
        let on = |r: usize| ma >> r & 1 == 1;
        let f = &self.f;
        let (src, dst) = pair(&mut self.buf, self.width, out, a);
        for i in 0..d {
            let (ag, y) = (&src[1 + i], &mut dst[1 + i]);
            if on(1 + i) {
                for l in 0..LANES {
                    y[l] = f[1][l] * ag[l];
                }
            }
        }
        for (p, &(i, j)) in self.pairs.iter().enumerate().take(np) {
            let r = 1 + d + p;
            let (ah, agi, agj) = (&src[r], &src[1 + i], &src[1 + j]);
            let y = &mut dst[r];
            match (on(r), on(1 + i) && on(1 + j)) {
                (true, true) => {
                    for l in 0..LANES {
                        y[l] = f[1][l] * ah[l] + f[2][l] * (agi[l] * agj[l]);
                    }
                }
                (true, false) => {
                    for l in 0..LANES {
                        y[l] = f[1][l] * ah[l];
                    }
                }
                (false, true) => {
                    for l in 0..LANES {
                        y[l] = f[2][l] * (agi[l] * agj[l]);
                    }
                }
                (false, false) => {}
            }
        }
        dst[0] = f[0];
    }

    /// The (first) output slot's rows.
    #[inline]
    fn out(&self) -> &[Row] {
        let k = self.outputs[0];
        &self.buf[k * self.width..(k + 1) * self.width]
    }

    /// Output `o`'s value for every lane.
    pub(crate) fn output_value(&self, o: usize) -> &Row {
        &self.buf[self.outputs[o] * self.width]
    }

    /// Row `r` of the output for every lane: 0 the value, `1 + i` the gradient's
    /// `i`-th entry, then the Hessian's upper triangle row by row (`(0,0), (0,1), …`).
    pub(crate) fn row(&self, r: usize) -> &Row {
        if self.has(self.outputs[0], r) {
            &self.out()[r]
        } else {
            &ZERO
        }
    }

    /// The output's rows that can be nonzero.
    fn live_rows(&self) -> impl Iterator<Item = &Row> {
        let k = self.outputs[0];
        self.out()
            .iter()
            .enumerate()
            .filter(move |&(r, _)| self.has(k, r))
            .map(|(_, row)| row)
    }

    /// Whether lane `l`'s value and every derivative carried are finite.
    pub(crate) fn finite(&self, l: usize) -> bool {
        self.live_rows().all(|r| r[l].is_finite())
    }

    /// [`LaneTape::finite`] for every lane at once, into `ok` (row by row, so the
    /// checks run across lanes).
    pub(crate) fn all_finite(&self, ok: &mut [bool; LANES]) {
        let k = self.outputs[0];
        finite_rows(self.out(), self.mask[k], ok);
    }

    /// f at lane `l`.
    #[cfg(test)]
    pub(crate) fn value(&self, l: usize) -> f64 {
        self.row(0)[l]
    }

    /// ∇f at lane `l` into `g`.
    pub(crate) fn gradient(&self, l: usize, g: &mut [f64]) {
        for (i, gi) in g.iter_mut().enumerate().take(self.dim) {
            *gi = self.row(1 + i)[l];
        }
    }

    /// ∇²f at lane `l` into `h` (row-major d×d, symmetric). Zero without
    /// [`Order::Hessian`].
    pub(crate) fn hessian(&self, l: usize, h: &mut [f64]) {
        let d = self.dim;
        if self.order != Order::Hessian {
            h[..d * d].fill(0.0);
            return;
        }
        for (p, &(i, j)) in self.pairs.iter().enumerate() {
            let v = self.row(1 + d + p)[l];
            h[i * d + j] = v;
            h[j * d + i] = v;
        }
    }
}

multiversion! {
    /// `ok[l]`: whether lane `l` is finite in every row of `rows` that `mask` marks. A
    /// finite `v` has `v·0 = ±0` and any other NaN, so a sum of them is 0 exactly when
    /// every term is: arithmetic across lanes, one comparison per lane at the end.
    fn finite_rows(rows: &[Row], mask: u32, ok: &mut [bool; LANES]) {
        let mut acc = [0.0; LANES];
        for (r, row) in rows.iter().enumerate() {
            if mask >> r & 1 == 1 {
                for l in 0..LANES {
                    acc[l] += row[l] * 0.0;
                }
            }
        }
        for l in 0..LANES {
            ok[l] = acc[l] == 0.0;
        }
    }
    baseline finite_rows_base
}

/// The row of a structurally zero entry.
static ZERO: Row = [0.0; LANES];

/// `y = Σ aₖ bₖ` over the terms marked present, summed in the order given (the full
/// rule's order, so the same result up to the sign of a zero); returns whether any
/// term was present (if not, `y` is left alone: the entry is zero by structure).
#[inline(always)]
fn sum_of_products<const N: usize>(y: &mut Row, terms: [(bool, &Row, &Row); N]) -> bool {
    let mut present = [(&ZERO, &ZERO); N];
    let mut n = 0;
    for (on, a, b) in terms {
        if on {
            present[n] = (a, b);
            n += 1;
        }
    }
    match present[..n] {
        [] => return false,
        [(a, b)] => {
            for l in 0..LANES {
                y[l] = a[l] * b[l];
            }
        }
        [(a, b), (c, e)] => {
            for l in 0..LANES {
                y[l] = a[l] * b[l] + c[l] * e[l];
            }
        }
        [(a, b), (c, e), (g, h)] => {
            for l in 0..LANES {
                y[l] = a[l] * b[l] + c[l] * e[l] + g[l] * h[l];
            }
        }
        [(a, b), (c, e), (g, h), (i, j)] => {
            for l in 0..LANES {
                y[l] = a[l] * b[l] + c[l] * e[l] + g[l] * h[l] + i[l] * j[l];
            }
        }
        _ => unreachable!("at most four terms"),
    }
    true
}

multiversion! {
    /// [`LaneTape::eval`]'s body as a function, compiled twice by `multiversion!`: the rules' loops are
    /// vectorised twice as wide, with the same bits (+, −, ×, ÷ only).
    fn eval_block(tape: &mut LaneTape, x: &[Row]) {
        tape.eval_body(x)
    }
    baseline eval_block_base
}

#[cfg(test)]
/// Points given one after another (`d` numbers each, at most [`LANES`] points) as a
/// block's rows ([`LaneTape::eval`]'s layout); lanes past the last point are zero.
pub(crate) fn rows_of(points: &[f64], d: usize) -> Vec<Row> {
    let mut rows = vec![[0.0; LANES]; d];
    for (l, x) in points.chunks_exact(d).enumerate() {
        for (row, &v) in rows.iter_mut().zip(x) {
            row[l] = v;
        }
    }
    rows
}

/// Slot `a`'s rows (read) and slot `out`'s rows (written), `a ≠ out`, in either order
/// (the scratch slots come after the tape's).
fn pair(buf: &mut [Row], width: usize, out: usize, a: usize) -> (&[Row], &mut [Row]) {
    debug_assert_ne!(out, a);
    let (oa, oo) = (a * width, out * width);
    if oa < oo {
        let (first, second) = buf.split_at_mut(oo);
        (&first[oa..oa + width], &mut second[..width])
    } else {
        let (first, second) = buf.split_at_mut(oa);
        (&second[..width], &mut first[oo..oo + width])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Problem;
    use proptest::prelude::*;

    fn check(text: &str, points: &[Vec<f64>]) {
        let p = Problem::from_str(text).expect("valid");
        let d = p.dim();
        let mut lt = LaneTape::new(p.objective_tape(), Order::Hessian).expect("batchable");
        let mut lg = LaneTape::new(p.objective_tape(), Order::Gradient).expect("batchable");
        let x: Vec<f64> = points.iter().flatten().copied().collect();
        let rows = rows_of(&x, d);
        lt.eval(&rows);
        lg.eval(&rows);
        let (mut g, mut h, mut g1) = (vec![0.0; d], vec![0.0; d * d], vec![0.0; d]);
        for (l, pt) in points.iter().enumerate() {
            let want = p.objective_derivatives(pt);
            let Ok(want) = want else {
                assert!(
                    !lt.finite(l),
                    "{text} at {pt:?}: the tape fails, lanes do not"
                );
                continue;
            };
            assert!(lt.finite(l) && lg.finite(l), "{text} at {pt:?}");
            lt.gradient(l, &mut g);
            lt.hessian(l, &mut h);
            lg.gradient(l, &mut g1);
            let scale = want
                .gradient
                .iter()
                .chain(want.hessian.iter())
                .fold(want.value.abs().max(1.0), |m, v| m.max(v.abs()));
            // 1e-13 relative: the same rules, sums associated differently.
            let close = |a: f64, b: f64| (a - b).abs() <= 1e-13 * scale;
            assert!(close(lt.value(l), want.value), "{text}: value at {pt:?}");
            assert!(close(lg.value(l), want.value), "{text}: value at {pt:?}");
            for i in 0..d {
                assert!(close(g[i], want.gradient[i]), "{text}: gradient at {pt:?}");
                assert!(close(g1[i], want.gradient[i]), "{text}: gradient at {pt:?}");
                for j in 0..d {
                    assert!(
                        close(h[i * d + j], want.hessian[(i, j)]),
                        "{text}: Hessian at {pt:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn every_instruction_matches_the_tape() {
        let pts = [vec![0.3, -0.7], vec![1.2, 0.4], vec![-0.9, 2.0]];
        for text in [
            "var x, y\nminimize 0.5*x^2 + 0.5*cos(x) + 0.25*y^2 + 0.1*x*y",
            "var x, y\nminimize x/y + 2/x - y/3 + 1 - x",
            "var x, y\nminimize (x^2 + 1)^y + 2^x + abs(x)^1.5 + y^3 + x^-2",
            "var x, y\nminimize exp(x)*sin(y) + tan(x) + tanh(x*y) + sinh(y) + cosh(x)",
            "var x, y\nminimize atan(x) + sigmoid(y) + softplus(x - y) + log1p(x^2) + expm1(y)",
            "var x, y\nminimize log(x^2 + y^2) + sqrt(1 + x^2) + -x*y",
            "var x\nminimize 3",
            "var x, y, z, w\nminimize x*y*z*w + (x - w)^2*cos(y + z)",
            "var x, y\nminimize max(x, y)*x + min(x^2, y) + relu(x - 0.5)*y + max(1, x*y)",
            "var x, y\nminimize logsumexp(k = 1..3, k*x - y^2 + sin(k*y))",
        ] {
            let d = Problem::from_str(text).unwrap().dim();
            let pts: Vec<Vec<f64>> = pts
                .iter()
                .map(|p| (0..d).map(|i| p[i % 2] + 0.1 * i as f64).collect())
                .collect();
            check(text, &pts);
        }
    }

    /// Values alone, several outputs (the entries of Σ(x)): each lane equals the
    /// tape's own evaluation at its point.
    #[test]
    fn values_of_every_output_match_the_tape() {
        let p = Problem::from_str(
            "var x, y\nminimize x^2 + y^2\n\
             noise cov [[0.02 + x^2, 0.1*sin(x*y)], [0.1*sin(x*y), exp(-y)*(1 + x^3)]]",
        )
        .unwrap();
        let tape = p.noise_tape();
        assert_eq!(tape.outputs(), 4);
        let mut lv = LaneTape::new(tape, Order::Value).expect("batchable");
        let pts: Vec<f64> = (0..2 * LANES)
            .map(|i| ((i * 37 % 101) as f64 - 50.0) / 17.0)
            .collect();
        lv.eval(&rows_of(&pts, 2));
        for l in 0..LANES {
            let want = tape.values(&pts[2 * l..2 * l + 2]).unwrap();
            for (o, w) in want.iter().enumerate() {
                let got = lv.output_value(o)[l];
                // 1e-15 relative: the same operations on values (a power may come
                // from another routine).
                assert!((got - w).abs() <= 1e-15 * w.abs().max(1.0), "{o} at {l}");
            }
        }
    }

    /// The block evaluation gives the same bits run with AVX (when the processor has
    /// it, through `eval`) as compiled for the baseline (`eval_body`).
    #[test]
    fn same_bits_with_and_without_avx() {
        let p = Problem::from_str(
            "var x, y\nminimize 0.5*x^2 + 0.5*cos(x) + x*y/(1 + y^2) + exp(0.1*x*y) + sin(y)^3",
        )
        .unwrap();
        let mut a = LaneTape::new(p.objective_tape(), Order::Hessian).unwrap();
        let mut b = a.clone();
        let pts: Vec<f64> = (0..2 * LANES)
            .map(|i| (i as f64 * 0.618).sin() * 3.0)
            .collect();
        let rows = rows_of(&pts, 2);
        a.eval(&rows);
        b.eval_body(&rows);
        let bits = |t: &LaneTape| -> Vec<u64> {
            (0..t.width)
                .flat_map(|r| t.row(r).map(f64::to_bits))
                .collect()
        };
        assert_eq!(bits(&a), bits(&b));
    }

    /// At a tie `max` and `min` take their first operand in every lane, as the tape
    /// does, and `relu` has derivative 0 at 0.
    #[test]
    fn kinks_take_the_tapes_side() {
        check(
            "var x, y\nminimize max(x, y)*y + 3*min(y, x) + 5*relu(x - y) + max(x^2, y)",
            &[
                vec![1.0, 1.0],
                vec![-0.5, -0.5],
                vec![0.0, 0.0],
                vec![2.0, -1.0],
            ],
        );
    }

    #[test]
    fn non_finite_lanes_are_flagged_alone() {
        check(
            "var x, y\nminimize sqrt(x) + log(y)",
            &[
                vec![1.0, 1.0],
                vec![0.0, 1.0],
                vec![2.0, -1.0],
                vec![4.0, 2.0],
            ],
        );
    }

    /// Entries that are zero by structure are exact zeros, never computed: at x = 0
    /// the square root's derivative is NaN (num-dual's rule, as in the scalar tape), and
    /// the full chain rule would spread it into `∂²/∂y²` of `sqrt(x)` as `NaN·0`; here
    /// `∂²f/∂y²` of `sqrt(x)·y + y² + 3xy` is read from `y²` alone. The masks follow
    /// the rules: a variable has its own gradient entry only, `x·y` no diagonal
    /// Hessian entries.
    #[test]
    fn structural_zeros_are_exact_and_not_computed() {
        let p = Problem::from_str("var x, y\nminimize sqrt(x)*y + y^2 + 3*x*y").unwrap();
        let mut lt = LaneTape::new(p.objective_tape(), Order::Hessian).unwrap();
        lt.eval(&rows_of(&[0.0, 2.0, 4.0, 1.0], 2));
        // Lane 0: f = 4, ∂f/∂x not finite.
        assert_eq!(lt.row(0)[0], 4.0);
        assert!(!lt.row(1)[0].is_finite());
        assert!(!lt.finite(0) && lt.finite(1));
        let mut h = [0.0; 4];
        lt.hessian(1, &mut h);
        // At (4, 1): ∂²f/∂x² = −y/(4 x^{3/2}) = −1/32, ∂²f/∂x∂y = 1/(2√x) + 3, ∂²f/∂y² = 2.
        let want = [-1.0 / 32.0, 3.25, 3.25, 2.0];
        for (a, b) in h.iter().zip(want) {
            assert!((a - b).abs() < 1e-15, "{h:?}");
        }
        lt.hessian(0, &mut h);
        assert_eq!(h[3], 2.0, "∂²f/∂y² at x = 0 reads y² only");
        let slot = |var: u32| {
            let ops = p.objective_tape().ops();
            ops.iter().position(|o| *o == Op::Var(var)).unwrap()
        };
        let (x, y) = (slot(0), slot(1));
        assert_eq!(lt.mask[x], 0b11);
        assert_eq!(lt.mask[y], 0b101);
        let xy = p
            .objective_tape()
            .ops()
            .iter()
            .position(|o| matches!(*o, Op::Mul(a, b) if (a as usize, b as usize) == (x, y)));
        if let Some(k) = xy {
            // value, both gradient entries, ∂²/∂x∂y only (rows 0, 1, 2, 4).
            assert_eq!(lt.mask[k], 0b10111);
        }
    }

    /// `finite_rows` flags a lane exactly when a marked row is not finite there, the
    /// same with and without AVX; unmarked rows are not read.
    #[test]
    fn finite_rows_reads_the_marked_rows() {
        let mut rows = vec![[1.0; LANES]; 3];
        rows[0][3] = f64::INFINITY;
        rows[1][5] = f64::NAN;
        rows[1][6] = f64::NEG_INFINITY;
        rows[2][7] = f64::NAN; // row 2 unmarked below
        rows[0][8] = f64::MAX;
        rows[1][9] = -0.0;
        let (mut a, mut b) = ([false; LANES], [false; LANES]);
        finite_rows(&rows, 0b011, &mut a);
        finite_rows_base(&rows, 0b011, &mut b);
        assert_eq!(a, b);
        for (l, ok) in a.iter().enumerate() {
            assert_eq!(*ok, ![3, 5, 6].contains(&l), "lane {l}");
        }
    }

    #[test]
    fn only_small_single_output_tapes_are_batched() {
        let p = Problem::from_str("var w[5] = 0\nminimize sum(i = 1..5, w[i]^2)").unwrap();
        assert!(LaneTape::new(p.objective_tape(), Order::Hessian).is_none());
        // A finite sum's per-example tape reads data: f is a mean over rows.
        let p = Problem::from_str("data t = [[a], [1], [2]]\nvar x\nminimize mean(t, (x - t.a)^2)")
            .unwrap();
        assert!(LaneTape::new(p.objective_tape(), Order::Hessian).is_none());
    }

    proptest! {
        /// A full block of random points on the reference objective and the saddle.
        #[test]
        fn blocks_of_random_points_match(xs in prop::collection::vec(-3.0f64..3.0, 2 * LANES)) {
            let pts: Vec<Vec<f64>> = xs.chunks(2).map(|c| c.to_vec()).collect();
            check("var x, y\nminimize 0.5*x^2 + 0.5*cos(x) + 0.25*y^2 + 0.1*x*y", &pts);
            check("var x, y\nlet r2 = x^2 + y^2\nminimize x^2 - 0.5*y^2 + 0.125*r2^2", &pts);
        }
    }
}
