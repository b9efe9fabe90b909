//! A finite sum's rows in blocks: the per-example tape run over [`ROWS`] rows at once
//! in structure-of-arrays form, every instruction dispatched once per block and its
//! arithmetic done for all the block's rows in one loop (as the simulator's lanes do
//! over paths).
//!
//! Each lane computes exactly what the scalar code of [`Tape::gradients_row`],
//! [`Tape::hessian_vector_row`] and the forward-over-reverse Hessian computes (the
//! same operations of the same number type in the same order, instruction by
//! instruction, and the same skipped adjoints), so every row's result is bit for bit
//! the scalar one and callers that add rows in row order get the same sums. A block
//! shorter than [`ROWS`] repeats its last row in the spare lanes, whose adjoints are
//! never seeded. A block with a non-finite value anywhere reports failure and the
//! caller reruns its rows one by one with the scalar code, which names the row and the
//! instruction.

use super::{
    Dual64, Jets, Op, STATIC_MAX_DIM, Slot, Tape, TapeScalar, max_takes_first, min_takes_first,
    outlined, powf,
};
use std::ops::AddAssign;

/// Rows per block.
pub const ROWS: usize = 8;

/// Largest d for which a finite sum's dense Hessian is computed over blocks of rows:
/// each lane holds its own d×d Hessian, so the buffers are `ROWS·d²` numbers (16 MiB at
/// d = 512). Above it rows go one at a time.
pub const ROWS_HESSIAN_MAX_DIM: usize = 512;

/// One number per row of a block.
type Lane<D> = [D; ROWS];

/// The buffers of the blocked evaluation, kept across calls (no allocation once grown).
#[derive(Clone, Debug, Default)]
pub struct RowsWorkspace {
    fx: Vec<Lane<f64>>,
    f: Vec<Lane<f64>>,
    f_adj: Vec<Lane<f64>>,
    x: Vec<Lane<Dual64>>,
    vals: Vec<Lane<Dual64>>,
    adj: Vec<Lane<Dual64>>,
    /// Each lane's results, as [`Tape::derivatives_row`] and [`Tape::gradients_row`]
    /// write them.
    pub(crate) jets: Vec<Jets>,
    /// Each lane's ∇F and ∇²F·v (`lane·d + i`) of [`Tape::hessian_vector_rows`].
    pub(crate) grad: Vec<f64>,
    pub(crate) hv: Vec<f64>,
    /// Each lane's F of [`Tape::hessian_vector_rows`].
    pub(crate) values: Vec<f64>,
}

/// A number type of the blocked sweeps: the scalar sweeps skip exactly the adjoints
/// that vanish.
trait RowScalar: TapeScalar + Copy + AddAssign {
    fn vanishes(&self) -> bool;
}

impl RowScalar for f64 {
    fn vanishes(&self) -> bool {
        *self == 0.0
    }
}

impl RowScalar for Dual64 {
    fn vanishes(&self) -> bool {
        self.re == 0.0 && self.eps == 0.0
    }
}

/// `out[l] = f(l)` for every lane.
#[inline(always)]
fn each<D: Copy>(out: &mut Lane<D>, f: impl Fn(usize) -> D) {
    for (l, o) in out.iter_mut().enumerate() {
        *o = f(l);
    }
}

/// [`super::step`] over a block: the same expression in every lane.
#[inline(always)]
fn step_rows<D: RowScalar>(op: Op, s: &[Lane<D>], x: &[Lane<D>], out: &mut Lane<D>) {
    let at = |i: Slot| &s[i as usize];
    match op {
        Op::Var(i) => *out = x[i as usize],
        Op::Const(c) => *out = [D::from(c); ROWS],
        Op::Add(a, b) => {
            let (a, b) = (at(a), at(b));
            each(out, |l| a[l] + b[l]);
        }
        Op::AddScaled(a, b, c) => {
            let (a, b) = (at(a), at(b));
            each(out, |l| a[l] + b[l] * c);
        }
        Op::Sub(a, b) => {
            let (a, b) = (at(a), at(b));
            each(out, |l| a[l] - b[l]);
        }
        Op::Mul(a, b) => {
            let (a, b) = (at(a), at(b));
            each(out, |l| a[l] * b[l]);
        }
        Op::Div(a, b) => {
            let (a, b) = (at(a), at(b));
            each(out, |l| a[l] / b[l]);
        }
        Op::AddConst(a, c) => {
            let a = at(a);
            each(out, |l| a[l] + c);
        }
        Op::ConstSub(c, a) => {
            let a = at(a);
            each(out, |l| -a[l] + c);
        }
        Op::MulConst(a, c) => {
            let a = at(a);
            each(out, |l| a[l] * c);
        }
        Op::DivConst(a, c) => {
            let a = at(a);
            each(out, |l| a[l] / c);
        }
        Op::Neg(a) => {
            let a = at(a);
            each(out, |l| -a[l]);
        }
        Op::Max(a, b) => {
            let (a, b) = (at(a), at(b));
            each(out, |l| {
                if max_takes_first(a[l].re(), b[l].re()) {
                    a[l]
                } else {
                    b[l]
                }
            });
        }
        Op::Min(a, b) => {
            let (a, b) = (at(a), at(b));
            each(out, |l| {
                if min_takes_first(a[l].re(), b[l].re()) {
                    a[l]
                } else {
                    b[l]
                }
            });
        }
        _ => *out = outlined(|| rare_rows(op, s)),
    }
}

/// The instructions of [`step_rows`] that go through a univariate function, out of
/// line as in the scalar code.
fn rare_rows<D: RowScalar>(op: Op, s: &[Lane<D>]) -> Lane<D> {
    let at = |i: Slot| &s[i as usize];
    let mut out = [D::zero(); ROWS];
    match op {
        Op::Pow(a, b) => {
            let (a, b) = (at(a), at(b));
            each(&mut out, |l| a[l].powd(b[l]));
        }
        Op::ConstDiv(c, a) => {
            let a = at(a);
            each(&mut out, |l| a[l].recip() * c);
        }
        Op::PowI(a, n) => {
            let a = at(a);
            each(&mut out, |l| a[l].powi(n));
        }
        Op::PowF(a, c) => {
            let a = at(a);
            each(&mut out, |l| powf(&a[l], c));
        }
        Op::ConstPow(c, a) => {
            let a = at(a);
            each(&mut out, |l| (a[l] * c.ln()).exp());
        }
        Op::Func(f, a) => {
            let a = at(a);
            each(&mut out, |l| f.apply(&a[l]));
        }
        // Handled in line by `step_rows`.
        _ => out = [D::from(f64::NAN); ROWS],
    }
    out
}

/// `dst[l] += term(l)` in every lane whose adjoint does not vanish (with `MASKED`
/// false, no lane does: a loop without branches). The scalar code's `a -= t` is
/// `add_to` of `−t`: IEEE subtraction is the addition of the negation, bit for bit.
#[inline(always)]
fn add_to<D: RowScalar, const MASKED: bool>(
    dst: &mut Lane<D>,
    skip: &Lane<bool>,
    term: impl Fn(usize) -> D,
) {
    for l in 0..ROWS {
        if !MASKED || !skip[l] {
            dst[l] += term(l);
        }
    }
}

/// [`super::adjoint`] over a block: instruction `slot`'s adjoints `vbar` (lanes in
/// `skip` left out, when `MASKED`) into its operands' adjoints, the same expressions in
/// every lane.
#[inline(always)]
fn adjoint_rows<D: RowScalar, const MASKED: bool>(
    op: Op,
    v: &[Lane<D>],
    slot: usize,
    vbar: &Lane<D>,
    skip: &Lane<bool>,
    adj: &mut [Lane<D>],
) {
    let out = &v[slot];
    let at = |i: Slot| &v[i as usize];
    match op {
        Op::Var(_) | Op::Const(_) => {}
        Op::Add(a, b) => {
            add_to::<D, MASKED>(&mut adj[a as usize], skip, |l| vbar[l]);
            add_to::<D, MASKED>(&mut adj[b as usize], skip, |l| vbar[l]);
        }
        Op::Sub(a, b) => {
            add_to::<D, MASKED>(&mut adj[a as usize], skip, |l| vbar[l]);
            add_to::<D, MASKED>(&mut adj[b as usize], skip, |l| -vbar[l]);
        }
        Op::AddScaled(a, b, c) => {
            add_to::<D, MASKED>(&mut adj[a as usize], skip, |l| vbar[l]);
            add_to::<D, MASKED>(&mut adj[b as usize], skip, |l| vbar[l] * c);
        }
        Op::Mul(a, b) => {
            let (xa, xb) = (at(a), at(b));
            add_to::<D, MASKED>(&mut adj[a as usize], skip, |l| vbar[l] * xb[l]);
            add_to::<D, MASKED>(&mut adj[b as usize], skip, |l| vbar[l] * xa[l]);
        }
        Op::Div(a, b) => {
            let xb = at(b);
            add_to::<D, MASKED>(&mut adj[a as usize], skip, |l| vbar[l] / xb[l]);
            add_to::<D, MASKED>(&mut adj[b as usize], skip, |l| -(vbar[l] * out[l] / xb[l]));
        }
        Op::Pow(a, b) => {
            let (xa, xb) = (at(a), at(b));
            add_to::<D, MASKED>(&mut adj[a as usize], skip, |l| {
                vbar[l] * xb[l] * out[l] / xa[l]
            });
            add_to::<D, MASKED>(&mut adj[b as usize], skip, |l| {
                vbar[l] * out[l] * xa[l].ln()
            });
        }
        Op::AddConst(a, _) => add_to::<D, MASKED>(&mut adj[a as usize], skip, |l| vbar[l]),
        Op::ConstSub(_, a) | Op::Neg(a) => {
            add_to::<D, MASKED>(&mut adj[a as usize], skip, |l| -vbar[l])
        }
        Op::MulConst(a, c) => add_to::<D, MASKED>(&mut adj[a as usize], skip, |l| vbar[l] * c),
        Op::DivConst(a, c) => add_to::<D, MASKED>(&mut adj[a as usize], skip, |l| vbar[l] / c),
        Op::ConstDiv(_, a) => {
            let xa = at(a);
            add_to::<D, MASKED>(&mut adj[a as usize], skip, |l| -(vbar[l] * out[l] / xa[l]));
        }
        Op::PowI(a, n) => {
            if n != 0 {
                let xa = at(a);
                add_to::<D, MASKED>(&mut adj[a as usize], skip, |l| {
                    vbar[l] * xa[l].powi(n - 1) * f64::from(n)
                });
            }
        }
        Op::PowF(a, c) => {
            let xa = at(a);
            add_to::<D, MASKED>(&mut adj[a as usize], skip, |l| {
                vbar[l] * powf(&xa[l], c - 1.0) * c
            });
        }
        Op::ConstPow(c, a) => {
            add_to::<D, MASKED>(&mut adj[a as usize], skip, |l| vbar[l] * out[l] * c.ln())
        }
        Op::Func(f, a) => {
            let xa = at(a);
            add_to::<D, MASKED>(&mut adj[a as usize], skip, |l| {
                vbar[l] * f.derivative(&xa[l], &out[l])
            });
        }
        Op::Max(a, b) | Op::Min(a, b) => {
            let (xa, xb) = (at(a), at(b));
            for l in 0..ROWS {
                if MASKED && skip[l] {
                    continue;
                }
                let first = if matches!(op, Op::Max(..)) {
                    max_takes_first(xa[l].re(), xb[l].re())
                } else {
                    min_takes_first(xa[l].re(), xb[l].re())
                };
                adj[if first { a } else { b } as usize][l] += vbar[l];
            }
        }
    }
}

impl Tape {
    /// Whether a finite sum's dense derivatives go over blocks of rows: where the
    /// Hessian is forward-over-reverse (d above the static jets) and the lane
    /// Hessians stay small.
    pub(crate) fn rows_for_hessians(&self) -> bool {
        self.dim > STATIC_MAX_DIM && self.dim <= ROWS_HESSIAN_MAX_DIM && self.data > 0
    }

    /// The inputs of a block: `x` (through `var`, which may seed a tangent) in every
    /// lane, then each row's data inputs; lanes past `count` repeat the last row.
    fn block_inputs<D: RowScalar>(
        &self,
        x: &[f64],
        rows: &[f64],
        count: usize,
        var: impl Fn(usize, f64) -> D,
        xs: &mut Vec<Lane<D>>,
    ) {
        assert!(
            x.len() == self.dim && rows.len() == count * self.data && (1..=ROWS).contains(&count),
            "a block is 1 to {ROWS} whole rows at a point of the tape's dimension"
        );
        let c = self.data;
        xs.clear();
        xs.extend(x.iter().enumerate().map(|(i, &xi)| [var(i, xi); ROWS]));
        for j in 0..c {
            xs.push(std::array::from_fn(|l| {
                D::from(rows[l.min(count - 1) * c + j])
            }));
        }
    }

    /// The forward pass over a block. Whether every output of the first `count` lanes
    /// is finite.
    fn eval_rows<D: RowScalar>(
        &self,
        xs: &[Lane<D>],
        count: usize,
        slots: &mut Vec<Lane<D>>,
    ) -> bool {
        debug_assert_eq!(xs.len(), self.dim + self.data);
        if slots.len() != self.ops.len() {
            slots.clear();
            slots.resize(self.ops.len(), [D::zero(); ROWS]);
        }
        for (k, &op) in self.ops.iter().enumerate() {
            let (done, rest) = slots.split_at_mut(k);
            step_rows(op, done, xs, &mut rest[0]);
        }
        self.outputs
            .iter()
            .all(|&o| slots[o as usize][..count].iter().all(|v| v.all_finite()))
    }

    /// The reverse sweep of output slot `o` over the first `count` lanes of a block,
    /// each as the scalar sweeps do it: `var(lane, i, adjoint)` receives each
    /// variable's contribution.
    fn sweep_rows<D: RowScalar>(
        &self,
        o: Slot,
        count: usize,
        vals: &[Lane<D>],
        adj: &mut Vec<Lane<D>>,
        mut var: impl FnMut(usize, usize, D),
    ) {
        if adj.len() != self.ops.len() {
            adj.clear();
            adj.resize(self.ops.len(), [D::zero(); ROWS]);
        } else {
            adj[..=o as usize].fill([D::zero(); ROWS]);
        }
        adj[o as usize] = std::array::from_fn(|l| if l < count { D::one() } else { D::zero() });
        for (slot, &op) in self.ops.iter().enumerate().take(o as usize + 1).rev() {
            let vbar = adj[slot];
            let skip: Lane<bool> = std::array::from_fn(|l| vbar[l].vanishes());
            if skip.iter().all(|&s| s) {
                continue;
            }
            if let Op::Var(i) = op {
                if (i as usize) < self.dim {
                    for l in (0..count).filter(|&l| !skip[l]) {
                        var(l, i as usize, vbar[l]);
                    }
                }
                continue;
            }
            if skip.iter().any(|&s| s) {
                adjoint_rows::<D, true>(op, vals, slot, &vbar, &skip, adj);
            } else {
                adjoint_rows::<D, false>(op, vals, slot, &vbar, &skip, adj);
            }
        }
    }

    /// The first `count` lanes' jets sized for this tape: with Hessians
    /// (`Jets::ensure`), or values and gradients only, zeroed (`Jets::reset_gradients`).
    fn lane_jets(&self, rw: &mut RowsWorkspace, count: usize, hessians: bool) {
        if rw.jets.len() < ROWS {
            rw.jets.resize_with(ROWS, Jets::default);
        }
        for jets in &mut rw.jets[..count] {
            if hessians {
                jets.ensure(self.dim, self.outputs.len());
            } else {
                jets.reset_gradients(self.dim, self.outputs.len());
            }
        }
    }

    /// [`Tape::gradients_row`] for the `count` rows in `rows` (`count` whole rows),
    /// into `rw.jets[..count]` (values and gradients; no Hessians). `false` when a
    /// value or gradient is not finite in some lane: rerun those rows one by one.
    pub(crate) fn gradients_rows(
        &self,
        x: &[f64],
        rows: &[f64],
        count: usize,
        rw: &mut RowsWorkspace,
    ) -> bool {
        let d = self.dim;
        self.lane_jets(rw, count, false);
        let RowsWorkspace {
            fx, f, f_adj, jets, ..
        } = rw;
        self.block_inputs(x, rows, count, |_, xi| xi, fx);
        if !self.eval_rows(fx, count, f) {
            return false;
        }
        for (k, &o) in self.outputs.iter().enumerate() {
            self.sweep_rows(o, count, f, f_adj, |l, i, vbar| {
                jets[l].gradients[k * d + i] += vbar;
            });
            for (l, lane) in jets[..count].iter_mut().enumerate() {
                lane.values[k] = f[o as usize][l];
            }
        }
        jets[..count]
            .iter()
            .all(|j| j.gradients.iter().all(|v| v.is_finite()))
    }

    /// The forward-over-reverse Hessian of [`Tape::derivatives_row`] (values,
    /// gradients, Hessians of every output) for the `count` rows in `rows`, into
    /// `rw.jets[..count]`. `false` when something is not finite in some lane.
    pub(crate) fn derivatives_rows(
        &self,
        x: &[f64],
        rows: &[f64],
        count: usize,
        rw: &mut RowsWorkspace,
    ) -> bool {
        let d = self.dim;
        self.lane_jets(rw, count, true);
        let RowsWorkspace {
            x: xs,
            vals,
            adj,
            jets,
            ..
        } = rw;
        self.block_inputs(x, rows, count, |_, xi| Dual64::from(xi), xs);
        for j in 0..d {
            xs[j] = [Dual64::new(x[j], 1.0); ROWS];
            if j > 0 {
                xs[j - 1] = [Dual64::from(x[j - 1]); ROWS];
            }
            if !self.eval_rows(xs, count, vals) {
                return false;
            }
            for (k, &o) in self.outputs.iter().enumerate() {
                for lane in &mut jets[..count] {
                    lane.gradients[k * d..(k + 1) * d].fill(0.0);
                    let hess = &mut lane.hessians[k * d * d..(k + 1) * d * d];
                    for i in 0..d {
                        hess[i * d + j] = 0.0;
                    }
                }
                self.sweep_rows(o, count, vals, adj, |l, i, vbar| {
                    jets[l].gradients[k * d + i] += vbar.re;
                    jets[l].hessians[k * d * d + i * d + j] += vbar.eps;
                });
                for (l, lane) in jets[..count].iter_mut().enumerate() {
                    lane.values[k] = vals[o as usize][l].re;
                }
            }
        }
        // Symmetrised as the scalar Hessian is.
        for lane in &mut jets[..count] {
            lane.symmetrise_hessians();
        }
        jets[..count]
            .iter()
            .all(|j| j.gradients.iter().chain(&j.hessians).all(|v| v.is_finite()))
    }

    /// [`Tape::hessian_vector_row`] of output `k` for the `count` rows in `rows`: lane
    /// `l`'s F into `rw.values[l]`, its ∇F and ∇²F·v into `rw.grad` and `rw.hv` at
    /// `l·d..(l+1)·d` (each from zero). `false` when something is not finite.
    pub(crate) fn hessian_vector_rows(
        &self,
        k: usize,
        x: &[f64],
        rows: &[f64],
        count: usize,
        v: &[f64],
        rw: &mut RowsWorkspace,
    ) -> bool {
        let d = self.dim;
        assert_eq!(v.len(), d, "a direction of the tape's dimension");
        let RowsWorkspace {
            x: xs,
            vals,
            adj,
            grad,
            hv,
            values,
            ..
        } = rw;
        self.block_inputs(x, rows, count, |i, xi| Dual64::new(xi, v[i]), xs);
        if !self.eval_rows(xs, count, vals) {
            return false;
        }
        for buf in [&mut *grad, &mut *hv] {
            buf.clear();
            buf.resize(count * d, 0.0);
        }
        let o = self.outputs[k];
        let mut finite = true;
        self.sweep_rows(o, count, vals, adj, |l, i, vbar| {
            grad[l * d + i] += vbar.re;
            hv[l * d + i] += vbar.eps;
            finite &= vbar.re.is_finite() && vbar.eps.is_finite();
        });
        values.clear();
        values.extend((0..count).map(|l| vals[o as usize][l].re));
        finite
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Problem;
    use crate::tape::Workspace;

    /// A finite sum whose per-example tape holds every instruction and every function
    /// (each operand kept in its domain on every row), over d = 10 variables so the
    /// blocked Hessian is the one the finite sums use.
    fn every_instruction(n: usize) -> Problem {
        let rows: Vec<String> = (0..n)
            .map(|i| {
                let t = i as f64 / n as f64;
                format!(
                    "[{}, {}, {}]",
                    0.5 + t,
                    -0.3 + 0.7 * t,
                    (i % 3) as f64 - 1.0
                )
            })
            .collect();
        Problem::from_str(&format!(
            "data s = [[a, b, c], {}]\nvar w[10] = 0.1\n\
             minimize mean(s, exp(w[1]*s.a) + log(1 + w[2]^2 + s.a) + sqrt(2 + w[3]*s.b) \
             + sin(w[4]) * cos(w[5]*s.a) + tan(0.3*w[6]) + tanh(w[7] - s.b) + sinh(w[8]) \
             + cosh(w[9]*s.c) + atan(w[10]) + sigmoid(w[1] - s.c) + softplus(w[2]*s.b) \
             + log1p(w[3]^2) + expm1(0.5*w[4]) + abs(w[5] - s.b) + relu(w[6] + s.b) \
             + max(w[7], s.b) + min(w[8]*s.a, s.c) + (1 + s.a)^w[9] + 2^(w[10]*s.b) \
             + (1.5 + w[1])^2.5 + w[2]^3 + s.a/(2 + w[3]) + 3/(1.5 + w[4]*s.b) \
             - w[5]/4 + 2 - w[6]*s.a + w[7]*w[8]*s.c)",
            rows.join(", ")
        ))
        .expect("valid")
    }

    fn point(d: usize) -> Vec<f64> {
        (0..d).map(|i| 0.2 + 0.05 * i as f64).collect()
    }

    #[test]
    fn every_lane_is_the_scalar_row_bit_for_bit() {
        let p = every_instruction(8);
        let (tape, fs) = (p.objective_tape(), p.finite_sum().unwrap());
        let (d, c) = (p.dim(), fs.columns.len());
        let x = point(d);
        let v: Vec<f64> = (0..d).map(|i| 1.0 - 0.3 * i as f64).collect();
        let mut rw = RowsWorkspace::default();
        let (mut ws, mut jets) = (Workspace::default(), Jets::default());
        for count in 1..=ROWS {
            let block = &fs.rows[..count * c];
            assert!(tape.gradients_rows(&x, block, count, &mut rw));
            for l in 0..count {
                tape.gradients_row(&x, fs.row(l), &mut ws, &mut jets)
                    .unwrap();
                assert_eq!(rw.jets[l].values, jets.values, "count {count}, lane {l}");
                assert_eq!(rw.jets[l].gradients, jets.gradients);
            }
            assert!(tape.derivatives_rows(&x, block, count, &mut rw));
            for l in 0..count {
                tape.derivatives_row(&x, fs.row(l), &mut ws, &mut jets)
                    .unwrap();
                assert_eq!(rw.jets[l], jets, "count {count}, lane {l}");
            }
            assert!(tape.hessian_vector_rows(0, &x, block, count, &v, &mut rw));
            for l in 0..count {
                let (mut g, mut hv) = (vec![0.0; d], vec![0.0; d]);
                let f = tape
                    .hessian_vector_row(0, &x, fs.row(l), &v, &mut ws, &mut g, &mut hv)
                    .unwrap();
                assert_eq!(rw.values[l].to_bits(), f.to_bits());
                assert_eq!(&rw.grad[l * d..(l + 1) * d], &g[..]);
                assert_eq!(&rw.hv[l * d..(l + 1) * d], &hv[..]);
            }
        }
    }

    /// The sums over the rows the problem takes in blocks equal the row-by-row sums of
    /// the scalar code (n = 21: two full blocks and a short one).
    #[test]
    fn blocked_sums_are_the_row_by_row_sums() {
        let p = every_instruction(21);
        let (tape, fs) = (p.objective_tape(), p.finite_sum().unwrap());
        let d = p.dim();
        let x = point(d);
        let v: Vec<f64> = (0..d).map(|i| (i as f64).sin()).collect();
        let (mut ws, mut jets) = (Workspace::default(), Jets::default());
        let (mut g, mut hv, mut f) = (vec![0.0; d], vec![0.0; d], 0.0);
        let mut value = 0.0;
        let mut h = vec![0.0; d * d];
        let mut gd = vec![0.0; d];
        for i in 0..fs.n {
            f += tape
                .hessian_vector_row(0, &x, fs.row(i), &v, &mut ws, &mut g, &mut hv)
                .unwrap();
            tape.derivatives_row(&x, fs.row(i), &mut ws, &mut jets)
                .unwrap();
            value += jets.values[0];
            gd.iter_mut()
                .zip(jets.gradient(0))
                .for_each(|(a, b)| *a += b);
            h.iter_mut().zip(jets.hessian(0)).for_each(|(a, b)| *a += b);
        }
        let scale = 1.0 / fs.n as f64;
        let (mut g2, mut hv2) = (vec![0.0; d], vec![0.0; d]);
        let f2 = p
            .hessian_vector_with(&x, &v, &mut ws, &mut g2, &mut hv2)
            .unwrap();
        assert_eq!(f2.to_bits(), (f * scale).to_bits());
        assert_eq!(g2, g.iter().map(|a| a * scale).collect::<Vec<_>>());
        assert_eq!(hv2, hv.iter().map(|a| a * scale).collect::<Vec<_>>());
        p.objective_derivatives_with(&x, &mut ws, &mut jets)
            .unwrap();
        assert_eq!(jets.values[0].to_bits(), (value * scale).to_bits());
        assert_eq!(
            jets.gradient(0),
            &gd.iter().map(|a| a * scale).collect::<Vec<_>>()[..]
        );
        assert_eq!(
            jets.hessian(0),
            &h.iter().map(|a| a * scale).collect::<Vec<_>>()[..]
        );
        p.gradient_with(&x, &mut ws, &mut jets).unwrap();
        assert_eq!(jets.values[0], value / fs.n as f64);
        assert_eq!(
            jets.gradient(0),
            &gd.iter().map(|a| a / fs.n as f64).collect::<Vec<_>>()[..]
        );
    }

    /// Over more rows than one parallel chunk (256), a Hessian-vector product is the
    /// same on one and two threads, and equals the chunks' row-by-row sums added in
    /// chunk order.
    #[test]
    fn a_long_hessian_vector_product_is_the_same_on_any_number_of_threads() {
        let p = every_instruction(600);
        let (tape, fs) = (p.objective_tape(), p.finite_sum().unwrap());
        let d = p.dim();
        let x = point(d);
        let v: Vec<f64> = (0..d).map(|i| (0.7 * i as f64).cos()).collect();
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(|| {
                let (mut g, mut hv) = (vec![0.0; d], vec![0.0; d]);
                let f = p
                    .hessian_vector_with(&x, &v, &mut Workspace::default(), &mut g, &mut hv)
                    .unwrap();
                (f, g, hv)
            })
        };
        let one = run(1);
        assert_eq!(one, run(2));
        let mut ws = Workspace::default();
        let (mut f, mut g, mut hv) = (0.0, vec![0.0; d], vec![0.0; d]);
        for start in (0..fs.n).step_by(256) {
            let (mut cf, mut cg, mut ch) = (0.0, vec![0.0; d], vec![0.0; d]);
            for i in start..(start + 256).min(fs.n) {
                cf += tape
                    .hessian_vector_row(0, &x, fs.row(i), &v, &mut ws, &mut cg, &mut ch)
                    .unwrap();
            }
            f += cf;
            g.iter_mut().zip(&cg).for_each(|(a, b)| *a += b);
            hv.iter_mut().zip(&ch).for_each(|(a, b)| *a += b);
        }
        let scale = 1.0 / fs.n as f64;
        assert_eq!(one.0.to_bits(), (f * scale).to_bits());
        assert_eq!(one.1, g.iter().map(|a| a * scale).collect::<Vec<_>>());
        assert_eq!(one.2, hv.iter().map(|a| a * scale).collect::<Vec<_>>());
    }

    /// A row whose value is not finite, inside a block: the block falls back to the
    /// rows one by one and the error names that row, for every blocked evaluation.
    #[test]
    fn a_non_finite_row_inside_a_block_is_named() {
        let rows: Vec<String> = (0..20)
            .map(|i| format!("[{}]", if i == 12 { -1.0 } else { 1.0 + i as f64 }))
            .collect();
        let p = Problem::from_str(&format!(
            "data s = [[a], {}]\nvar w[10] = 0.5\nminimize mean(s, log(s.a) * sum(j = 1..10, w[j]^2))",
            rows.join(", ")
        ))
        .unwrap();
        let x = vec![0.5; 10];
        let (mut ws, mut jets) = (Workspace::default(), Jets::default());
        let (mut g, mut hv) = (vec![0.0; 10], vec![0.0; 10]);
        let errors = [
            p.gradient_with(&x, &mut ws, &mut jets).unwrap_err(),
            p.objective_derivatives_with(&x, &mut ws, &mut jets)
                .unwrap_err(),
            p.hessian_vector_with(&x, &x, &mut ws, &mut g, &mut hv)
                .unwrap_err(),
            p.noise_cov(&x).unwrap_err(),
        ];
        for e in errors {
            let text = e.to_string() + &format!("{e:?}");
            assert!(text.contains("in example 13 of `s`"), "{text}");
        }
    }
}
