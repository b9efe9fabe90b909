//! A finite sum's rows in blocks: the per-example tape run over [`ROWS`] rows at once
//! in structure-of-arrays form, every instruction dispatched once per block and its
//! arithmetic done for all the block's rows in one loop (as the simulator's lanes do
//! over paths). A block of dual numbers holds the rows' values, then their tangents,
//! so each loop vectorises; the sweeps are compiled for AVX too and run so where the
//! processor has it. The tape's instructions run as a [`BlockProgram`]: a product read
//! only by the addition right after it is fused into that addition (half the
//! instructions of a dot product). The point's slots are written once for all the
//! blocks of a Hessian-vector product, and each variable's adjoint is read from its
//! slot after the sweep.
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
use num_dual::DualNum;
use std::ops::AddAssign;

/// Rows per block.
pub const ROWS: usize = 8;

/// Largest d for which a finite sum's dense Hessian is computed over blocks of rows:
/// each lane holds its own d×d Hessian, so the buffers are `ROWS·d²` numbers (16 MiB at
/// d = 512). Above it rows go one at a time.
pub const ROWS_HESSIAN_MAX_DIM: usize = 512;

/// One number per row of a block.
type Lane<D> = [D; ROWS];

/// A block of dual numbers in structure-of-arrays form: the rows' values, then their
/// tangents (so the arithmetic on either part is a loop over rows the compiler
/// vectorises).
#[derive(Clone, Copy, Debug, Default)]
struct DualLane {
    re: Lane<f64>,
    eps: Lane<f64>,
}

/// The buffers of the blocked evaluation, kept across calls (no allocation once grown).
#[derive(Clone, Debug, Default)]
pub struct RowsWorkspace {
    f: Vec<Lane<f64>>,
    f_adj: Vec<Lane<f64>>,
    vals: Vec<DualLane>,
    adj: Vec<DualLane>,
    /// Each lane's results, as [`Tape::derivatives_row`] and [`Tape::gradients_row`]
    /// write them.
    pub(crate) jets: Vec<Jets>,
}

/// An instruction of the blocked sweeps.
#[derive(Clone, Copy, Debug, PartialEq)]
enum BlockOp {
    /// A tape instruction (its slots renumbered).
    Tape(Op),
    /// `acc + a·b`: a product `a·b` read only by the addition right after it, fused
    /// into that addition. The same roundings in the same order: the product, then the
    /// sum (additions commute bit for bit); in the reverse sweep the addition's adjoint
    /// goes to `acc`, then through the product to `a` and `b`, the order in which the
    /// two instructions send it (the product's adjoint is the addition's exactly: it
    /// has no other reader, and `0 + v` is `v` for every adjoint `v`, which is never
    /// −0). So every lane keeps the scalar code's bits, with half the instructions of
    /// a dot product (a network layer's `sum(i = 1..p, W[j, i]*x[i])`).
    MulAdd(Slot, Slot, Slot),
}

/// The tape's instructions as the blocked sweeps run them: each product that feeds
/// only the addition right after it fused into that addition ([`BlockOp::MulAdd`]),
/// the slots renumbered to close the gaps.
#[derive(Clone, Debug, Default, PartialEq)]
pub(super) struct BlockProgram {
    /// The number of variables (`Op::Var(i)` with `i ≥ dim` reads a data input).
    dim: usize,
    ops: Vec<BlockOp>,
    outputs: Vec<Slot>,
    /// Each variable the program reads (`i < dim`), with its slot, in slot order.
    variables: Vec<(u32, Slot)>,
    /// Each data input the program reads (its column), with its slot.
    data: Vec<(u32, Slot)>,
    /// The slot of each variable, if the program reads it.
    variable_slot: Vec<Option<Slot>>,
}

impl BlockProgram {
    /// The program of a tape's instructions and output slots.
    pub(super) fn new(dim: usize, ops: &[Op], outputs: &[Slot]) -> BlockProgram {
        let n = ops.len();
        // Readers of each slot (an output counts as one).
        let mut readers = vec![0u32; n];
        for op in ops {
            for o in op.operands().into_iter().flatten() {
                readers[o as usize] += 1;
            }
        }
        for &o in outputs {
            readers[o as usize] += 1;
        }
        // The product slot `k − 1` fused into the addition at `k`.
        let fused_product = |k: usize| -> Option<(Slot, Slot, Slot)> {
            let t = k.checked_sub(1)? as Slot;
            let Op::Add(x, y) = ops[k] else { return None };
            let Op::Mul(a, b) = ops[t as usize] else {
                return None;
            };
            let acc = if y == t {
                x
            } else if x == t {
                y
            } else {
                return None;
            };
            (readers[t as usize] == 1).then_some((acc, a, b))
        };
        let mut map = vec![0 as Slot; n];
        let mut program = Vec::with_capacity(n);
        let mut k = 0;
        while k < n {
            if let Some((acc, a, b)) = (k + 1 < n).then(|| fused_product(k + 1)).flatten() {
                let m = |s: Slot| map[s as usize];
                let fused = BlockOp::MulAdd(m(acc), m(a), m(b));
                map[k + 1] = program.len() as Slot;
                program.push(fused);
                k += 2;
                continue;
            }
            let mut op = ops[k];
            op.remap(&map);
            map[k] = program.len() as Slot;
            program.push(BlockOp::Tape(op));
            k += 1;
        }
        let (mut variables, mut data) = (Vec::new(), Vec::new());
        let mut variable_slot = vec![None; dim];
        for (k, op) in program.iter().enumerate() {
            if let BlockOp::Tape(Op::Var(i)) = *op {
                if (i as usize) < dim {
                    variables.push((i, k as Slot));
                    variable_slot[i as usize] = Some(k as Slot);
                } else {
                    data.push((i - dim as u32, k as Slot));
                }
            }
        }
        BlockProgram {
            dim,
            ops: program,
            outputs: outputs.iter().map(|&o| map[o as usize]).collect(),
            variables,
            data,
            variable_slot,
        }
    }

    /// The number of instructions.
    fn len(&self) -> usize {
        self.ops.len()
    }
}

/// A block of one number type, one number per row: each operation is the number
/// type's own, lane by lane (the same roundings in the same order), written over the
/// whole block so that it vectorises.
trait Block: Copy + Default {
    /// The number type of a lane.
    type Scalar: TapeScalar + Copy + AddAssign;
    fn lane(&self, l: usize) -> Self::Scalar;
    fn set_lane(&mut self, l: usize, v: Self::Scalar);
    /// The lanes' values (the real parts).
    fn values(&self) -> Lane<f64>;
    /// Whether each lane vanishes (every part zero): the scalar sweeps skip those
    /// adjoints.
    fn vanishing(&self) -> Lane<bool>;
    fn add(&self, b: &Self) -> Self;
    fn sub(&self, b: &Self) -> Self;
    fn mul(&self, b: &Self) -> Self;
    fn neg(&self) -> Self;
    /// `self · c`
    fn scale(&self, c: f64) -> Self;
    /// `self / c`
    fn div_const(&self, c: f64) -> Self;
    /// `self + c`
    fn add_const(&self, c: f64) -> Self;
    /// `self += t` in every lane outside `skip` (with `MASKED` false, every lane).
    fn add_assign<const MASKED: bool>(&mut self, t: &Self, skip: &Lane<bool>);

    #[inline(always)]
    fn splat(v: Self::Scalar) -> Self {
        Self::from_fn(|_| v)
    }

    #[inline(always)]
    fn from_fn(f: impl Fn(usize) -> Self::Scalar) -> Self {
        let mut b = Self::default();
        for l in 0..ROWS {
            b.set_lane(l, f(l));
        }
        b
    }

    /// Whether the first `count` lanes are finite in every part.
    #[inline(always)]
    fn finite(&self, count: usize) -> bool {
        (0..count).all(|l| self.lane(l).all_finite())
    }
}

/// `out[l] = f(a[l], b[l])` for every lane.
#[inline(always)]
fn zip(a: &Lane<f64>, b: &Lane<f64>, f: impl Fn(f64, f64) -> f64) -> Lane<f64> {
    let mut out = [0.0; ROWS];
    for l in 0..ROWS {
        out[l] = f(a[l], b[l]);
    }
    out
}

/// `out[l] = f(a[l])` for every lane.
#[inline(always)]
fn map(a: &Lane<f64>, f: impl Fn(f64) -> f64) -> Lane<f64> {
    let mut out = [0.0; ROWS];
    for l in 0..ROWS {
        out[l] = f(a[l]);
    }
    out
}

/// `dst[l] += t[l]` outside `skip` (every lane without `MASKED`: a loop without
/// branches).
#[inline(always)]
fn add_assign_lanes<const MASKED: bool>(dst: &mut Lane<f64>, t: &Lane<f64>, skip: &Lane<bool>) {
    for l in 0..ROWS {
        if MASKED {
            // A select, not a branch: `+ 0` would turn a −0 into +0, so keep `dst`.
            dst[l] = if skip[l] { dst[l] } else { dst[l] + t[l] };
        } else {
            dst[l] += t[l];
        }
    }
}

impl Block for Lane<f64> {
    type Scalar = f64;
    #[inline(always)]
    fn lane(&self, l: usize) -> f64 {
        self[l]
    }
    #[inline(always)]
    fn set_lane(&mut self, l: usize, v: f64) {
        self[l] = v;
    }
    #[inline(always)]
    fn values(&self) -> Lane<f64> {
        *self
    }
    #[inline(always)]
    fn vanishing(&self) -> Lane<bool> {
        std::array::from_fn(|l| self[l] == 0.0)
    }
    #[inline(always)]
    fn add(&self, b: &Self) -> Self {
        zip(self, b, |x, y| x + y)
    }
    #[inline(always)]
    fn sub(&self, b: &Self) -> Self {
        zip(self, b, |x, y| x - y)
    }
    #[inline(always)]
    fn mul(&self, b: &Self) -> Self {
        zip(self, b, |x, y| x * y)
    }
    #[inline(always)]
    fn neg(&self) -> Self {
        map(self, |x| -x)
    }
    #[inline(always)]
    fn scale(&self, c: f64) -> Self {
        map(self, |x| x * c)
    }
    #[inline(always)]
    fn div_const(&self, c: f64) -> Self {
        map(self, |x| x / c)
    }
    #[inline(always)]
    fn add_const(&self, c: f64) -> Self {
        map(self, |x| x + c)
    }
    #[inline(always)]
    fn add_assign<const MASKED: bool>(&mut self, t: &Self, skip: &Lane<bool>) {
        add_assign_lanes::<MASKED>(self, t, skip);
    }
}

/// num-dual's `Dual64` arithmetic, part by part: `(a + bε)(c + dε) = ac + (bc + da)ε`,
/// a scalar multiplies and divides both parts and adds to the value.
impl Block for DualLane {
    type Scalar = Dual64;
    #[inline(always)]
    fn lane(&self, l: usize) -> Dual64 {
        Dual64::new(self.re[l], self.eps[l])
    }
    #[inline(always)]
    fn set_lane(&mut self, l: usize, v: Dual64) {
        self.re[l] = v.re;
        self.eps[l] = v.eps;
    }
    #[inline(always)]
    fn values(&self) -> Lane<f64> {
        self.re
    }
    #[inline(always)]
    fn vanishing(&self) -> Lane<bool> {
        std::array::from_fn(|l| self.re[l] == 0.0 && self.eps[l] == 0.0)
    }
    #[inline(always)]
    fn add(&self, b: &Self) -> Self {
        DualLane {
            re: zip(&self.re, &b.re, |x, y| x + y),
            eps: zip(&self.eps, &b.eps, |x, y| x + y),
        }
    }
    #[inline(always)]
    fn sub(&self, b: &Self) -> Self {
        DualLane {
            re: zip(&self.re, &b.re, |x, y| x - y),
            eps: zip(&self.eps, &b.eps, |x, y| x - y),
        }
    }
    #[inline(always)]
    fn mul(&self, b: &Self) -> Self {
        let eps = std::array::from_fn(|l| self.eps[l] * b.re[l] + b.eps[l] * self.re[l]);
        DualLane {
            re: zip(&self.re, &b.re, |x, y| x * y),
            eps,
        }
    }
    #[inline(always)]
    fn neg(&self) -> Self {
        DualLane {
            re: map(&self.re, |x| -x),
            eps: map(&self.eps, |x| -x),
        }
    }
    #[inline(always)]
    fn scale(&self, c: f64) -> Self {
        DualLane {
            re: map(&self.re, |x| x * c),
            eps: map(&self.eps, |x| x * c),
        }
    }
    #[inline(always)]
    fn div_const(&self, c: f64) -> Self {
        DualLane {
            re: map(&self.re, |x| x / c),
            eps: map(&self.eps, |x| x / c),
        }
    }
    #[inline(always)]
    fn add_const(&self, c: f64) -> Self {
        DualLane {
            re: map(&self.re, |x| x + c),
            eps: self.eps,
        }
    }
    #[inline(always)]
    fn add_assign<const MASKED: bool>(&mut self, t: &Self, skip: &Lane<bool>) {
        add_assign_lanes::<MASKED>(&mut self.re, &t.re, skip);
        add_assign_lanes::<MASKED>(&mut self.eps, &t.eps, skip);
    }
}

/// [`super::step`] over a block: the same expression in every lane.
#[inline(always)]
fn step_rows<B: Block>(op: BlockOp, s: &[B], out: &mut B) {
    let at = |i: Slot| &s[i as usize];
    let op = match op {
        BlockOp::Tape(op) => op,
        BlockOp::MulAdd(acc, a, b) => {
            *out = at(acc).add(&at(a).mul(at(b)));
            return;
        }
    };
    *out = match op {
        // Written before the pass (`Tape::set_variables`, `Tape::set_data`).
        Op::Var(_) => return,
        Op::Const(c) => B::splat(B::Scalar::from(c)),
        Op::Add(a, b) => at(a).add(at(b)),
        Op::AddScaled(a, b, c) => at(a).add(&at(b).scale(c)),
        Op::Sub(a, b) => at(a).sub(at(b)),
        Op::Mul(a, b) => at(a).mul(at(b)),
        Op::AddConst(a, c) => at(a).add_const(c),
        Op::ConstSub(c, a) => at(a).neg().add_const(c),
        Op::MulConst(a, c) => at(a).scale(c),
        Op::DivConst(a, c) => at(a).div_const(c),
        Op::Neg(a) => at(a).neg(),
        Op::Max(a, b) | Op::Min(a, b) => {
            let (a, b) = (at(a), at(b));
            let (va, vb) = (a.values(), b.values());
            B::from_fn(|l| {
                if takes_first(op, va[l], vb[l]) {
                    a.lane(l)
                } else {
                    b.lane(l)
                }
            })
        }
        _ => outlined(|| rare_rows(op, s)),
    };
}

/// Whether `max` or `min` (`op`) of values `a` and `b` is its first operand.
#[inline(always)]
fn takes_first(op: Op, a: f64, b: f64) -> bool {
    if matches!(op, Op::Max(..)) {
        max_takes_first(a, b)
    } else {
        min_takes_first(a, b)
    }
}

/// The instructions of [`step_rows`] that go through a univariate function (or a
/// division), lane by lane in the number type, out of line as in the scalar code.
fn rare_rows<B: Block>(op: Op, s: &[B]) -> B {
    let at = |i: Slot| &s[i as usize];
    #[inline(always)]
    fn un<B: Block>(a: &B, f: impl Fn(B::Scalar) -> B::Scalar) -> B {
        B::from_fn(|l| f(a.lane(l)))
    }
    match op {
        Op::Div(a, b) => {
            let (a, b) = (at(a), at(b));
            B::from_fn(|l| a.lane(l) / b.lane(l))
        }
        Op::Pow(a, b) => {
            let (a, b) = (at(a), at(b));
            B::from_fn(|l| a.lane(l).powd(b.lane(l)))
        }
        Op::ConstDiv(c, a) => un(at(a), |v| v.recip() * c),
        Op::PowI(a, n) => un(at(a), |v| v.powi(n)),
        Op::PowF(a, c) => un(at(a), |v| powf(&v, c)),
        Op::ConstPow(c, a) => un(at(a), |v| (v * c.ln()).exp()),
        Op::Func(f, a) => un(at(a), |v| f.apply(&v)),
        // Handled in line by `step_rows`.
        _ => B::splat(B::Scalar::from(f64::NAN)),
    }
}

/// `dst[l] += term(l)` lane by lane in the number type, in every lane outside `skip`
/// (every lane without `MASKED`). The scalar code's `a -= t` is `add_to` of `−t`: IEEE
/// subtraction is the addition of the negation, bit for bit.
#[inline(always)]
fn add_to<B: Block, const MASKED: bool>(
    dst: &mut B,
    skip: &Lane<bool>,
    term: impl Fn(usize) -> B::Scalar,
) {
    for (l, &skipped) in skip.iter().enumerate() {
        if !MASKED || !skipped {
            let mut v = dst.lane(l);
            v += term(l);
            dst.set_lane(l, v);
        }
    }
}

/// [`super::adjoint`] over a block: instruction `slot`'s adjoints `vbar` (lanes in
/// `skip` left out, when `MASKED`) into its operands' adjoints, the same expressions in
/// every lane.
#[inline(always)]
fn adjoint_rows<B: Block, const MASKED: bool>(
    op: BlockOp,
    v: &[B],
    slot: usize,
    vbar: &B,
    skip: &Lane<bool>,
    adj: &mut [B],
) {
    let at = |i: Slot| &v[i as usize];
    let op = match op {
        BlockOp::Tape(op) => op,
        BlockOp::MulAdd(acc, a, b) => {
            adj[acc as usize].add_assign::<MASKED>(vbar, skip);
            let (xa, xb) = (at(a), at(b));
            adj[a as usize].add_assign::<MASKED>(&vbar.mul(xb), skip);
            adj[b as usize].add_assign::<MASKED>(&vbar.mul(xa), skip);
            return;
        }
    };
    match op {
        Op::Var(_) | Op::Const(_) => {}
        Op::Add(a, b) => {
            adj[a as usize].add_assign::<MASKED>(vbar, skip);
            adj[b as usize].add_assign::<MASKED>(vbar, skip);
        }
        Op::Sub(a, b) => {
            adj[a as usize].add_assign::<MASKED>(vbar, skip);
            adj[b as usize].add_assign::<MASKED>(&vbar.neg(), skip);
        }
        Op::AddScaled(a, b, c) => {
            adj[a as usize].add_assign::<MASKED>(vbar, skip);
            adj[b as usize].add_assign::<MASKED>(&vbar.scale(c), skip);
        }
        Op::Mul(a, b) => {
            let (xa, xb) = (at(a), at(b));
            adj[a as usize].add_assign::<MASKED>(&vbar.mul(xb), skip);
            adj[b as usize].add_assign::<MASKED>(&vbar.mul(xa), skip);
        }
        Op::AddConst(a, _) => adj[a as usize].add_assign::<MASKED>(vbar, skip),
        Op::ConstSub(_, a) | Op::Neg(a) => adj[a as usize].add_assign::<MASKED>(&vbar.neg(), skip),
        Op::MulConst(a, c) => adj[a as usize].add_assign::<MASKED>(&vbar.scale(c), skip),
        Op::DivConst(a, c) => adj[a as usize].add_assign::<MASKED>(&vbar.div_const(c), skip),
        _ => outlined(|| rare_adjoint::<B, MASKED>(op, v, slot, vbar, skip, adj)),
    }
}

/// The adjoints of [`adjoint_rows`] through a univariate function, a division or a
/// selection, lane by lane in the number type.
fn rare_adjoint<B: Block, const MASKED: bool>(
    op: Op,
    v: &[B],
    slot: usize,
    vbar: &B,
    skip: &Lane<bool>,
    adj: &mut [B],
) {
    let out = &v[slot];
    let at = |i: Slot| &v[i as usize];
    let vb = |l: usize| vbar.lane(l);
    match op {
        Op::Div(a, b) => {
            let xb = at(b);
            add_to::<B, MASKED>(&mut adj[a as usize], skip, |l| vb(l) / xb.lane(l));
            add_to::<B, MASKED>(&mut adj[b as usize], skip, |l| {
                -(vb(l) * out.lane(l) / xb.lane(l))
            });
        }
        Op::Pow(a, b) => {
            let (xa, xb) = (at(a), at(b));
            add_to::<B, MASKED>(&mut adj[a as usize], skip, |l| {
                vb(l) * xb.lane(l) * out.lane(l) / xa.lane(l)
            });
            add_to::<B, MASKED>(&mut adj[b as usize], skip, |l| {
                vb(l) * out.lane(l) * xa.lane(l).ln()
            });
        }
        Op::ConstDiv(_, a) => {
            let xa = at(a);
            add_to::<B, MASKED>(&mut adj[a as usize], skip, |l| {
                -(vb(l) * out.lane(l) / xa.lane(l))
            });
        }
        Op::PowI(a, n) if n != 0 => {
            let xa = at(a);
            add_to::<B, MASKED>(&mut adj[a as usize], skip, |l| {
                vb(l) * xa.lane(l).powi(n - 1) * f64::from(n)
            });
        }
        Op::PowF(a, c) => {
            let xa = at(a);
            add_to::<B, MASKED>(&mut adj[a as usize], skip, |l| {
                vb(l) * powf(&xa.lane(l), c - 1.0) * c
            });
        }
        Op::ConstPow(c, a) => {
            add_to::<B, MASKED>(&mut adj[a as usize], skip, |l| vb(l) * out.lane(l) * c.ln())
        }
        Op::Func(f, a) => {
            let xa = at(a);
            add_to::<B, MASKED>(&mut adj[a as usize], skip, |l| {
                vb(l) * f.derivative(&xa.lane(l), &out.lane(l))
            });
        }
        Op::Max(a, b) | Op::Min(a, b) => {
            let (va, vbv) = (at(a).values(), at(b).values());
            for l in 0..ROWS {
                if MASKED && skip[l] {
                    continue;
                }
                let first = takes_first(op, va[l], vbv[l]);
                let dst = &mut adj[if first { a } else { b } as usize];
                let mut x = dst.lane(l);
                x += vb(l);
                dst.set_lane(l, x);
            }
        }
        // Handled in line by `adjoint_rows`.
        _ => {}
    }
}

multiversion! {
    /// The forward pass of `program` over a block into `slots` (one per instruction;
    /// the inputs' slots already written). Compiled for AVX too (wider vectors for the
    /// same operations: the same bits).
    fn forward<B: Block>(program: &BlockProgram, slots: &mut [B]) {
        for (k, &op) in program.ops.iter().enumerate() {
            let (done, rest) = slots.split_at_mut(k);
            step_rows(op, done, &mut rest[0]);
        }
    }
    baseline forward_base
}

multiversion! {
    /// The reverse sweep of `program` from slot `o` (its adjoints seeded in `adj[o]`,
    /// the slots below it zero): every instruction's adjoint into its operands',
    /// skipping the lanes whose adjoint vanishes as the scalar sweeps do. Each adjoint
    /// is taken as it is read, so every slot but the variables' is left zero; a
    /// variable's adjoint is left in its slot. Compiled for AVX too, as [`forward`].
    fn reverse<B: Block>(program: &BlockProgram, o: Slot, vals: &[B], adj: &mut [B]) {
        for (slot, &op) in program.ops.iter().enumerate().take(o as usize + 1).rev() {
            match op {
                // The caller takes a variable's adjoint.
                BlockOp::Tape(Op::Var(i)) if (i as usize) < program.dim => continue,
                BlockOp::Tape(Op::Var(_) | Op::Const(_)) => {
                    adj[slot] = B::default();
                    continue;
                }
                _ => {}
            }
            // Taken: the slot is left zero for the next sweep.
            let vbar = std::mem::take(&mut adj[slot]);
            let skip = vbar.vanishing();
            if skip.iter().all(|&s| s) {
                continue;
            }
            if skip.iter().any(|&s| s) {
                adjoint_rows::<B, true>(op, vals, slot, &vbar, &skip, adj);
            } else {
                adjoint_rows::<B, false>(op, vals, slot, &vbar, &skip, adj);
            }
        }
    }
    baseline reverse_base
}

impl Tape {
    /// Whether a finite sum's dense derivatives go over blocks of rows: where the
    /// Hessian is forward-over-reverse (d above the static jets) and the lane
    /// Hessians stay small.
    pub(crate) fn rows_for_hessians(&self) -> bool {
        self.dim > STATIC_MAX_DIM && self.dim <= ROWS_HESSIAN_MAX_DIM && self.data > 0
    }

    /// Sizes `slots` for the blocked program and writes the variables' slots: `x`
    /// through `var` (which may seed a tangent), the same in every lane.
    fn set_variables<B: Block>(
        &self,
        x: &[f64],
        var: impl Fn(usize, f64) -> B::Scalar,
        slots: &mut Vec<B>,
    ) {
        assert_eq!(x.len(), self.dim, "a point of the tape's dimension");
        if slots.len() != self.block.len() {
            slots.clear();
            slots.resize(self.block.len(), B::default());
        }
        for &(i, slot) in &self.block.variables {
            slots[slot as usize] = B::splat(var(i as usize, x[i as usize]));
        }
    }

    /// Writes the data inputs' slots: each of the `count` rows in `rows` in its lane,
    /// lanes past `count` repeating the last row.
    fn set_data<B: Block>(&self, rows: &[f64], count: usize, slots: &mut [B]) {
        assert!(
            rows.len() == count * self.data && (1..=ROWS).contains(&count),
            "a block is 1 to {ROWS} whole rows"
        );
        let c = self.data;
        for &(j, slot) in &self.block.data {
            slots[slot as usize] =
                B::from_fn(|l| B::Scalar::from(rows[l.min(count - 1) * c + j as usize]));
        }
    }

    /// The forward pass over a block whose inputs are written. Whether every output
    /// of the first `count` lanes is finite.
    fn eval_rows<B: Block>(&self, count: usize, slots: &mut [B]) -> bool {
        let program = &self.block;
        forward(program, slots);
        program
            .outputs
            .iter()
            .all(|&o| slots[o as usize].finite(count))
    }

    /// The reverse sweep of output slot `o` over the first `count` lanes of a block,
    /// each as the scalar sweeps do it; each variable's adjoint is left in its slot of
    /// `adj`. A variable has one slot, so that is the lane's whole derivative (where
    /// the scalar sweep skips a vanishing adjoint, this one leaves its zero, and adding
    /// a zero to a sum that started at +0 changes no bit).
    ///
    /// `adj` is all zero on entry (every sweep leaves it so, once the caller has taken
    /// the variables' adjoints with [`Tape::take_variable_adjoints`]): no pass to clear
    /// it.
    fn sweep_rows<B: Block>(&self, o: Slot, count: usize, vals: &[B], adj: &mut Vec<B>) {
        let program = &self.block;
        if adj.len() != program.len() {
            adj.clear();
            adj.resize(program.len(), B::default());
        }
        adj[o as usize] = B::from_fn(|l| B::Scalar::from(if l < count { 1.0 } else { 0.0 }));
        reverse(program, o, vals, adj);
    }

    /// `each(i, adjoint)` for each variable read up to slot `o`, after
    /// [`Tape::sweep_rows`] from `o`; each adjoint is taken (its slot left zero, as the
    /// next sweep needs it).
    fn take_variable_adjoints<B: Block>(
        &self,
        o: Slot,
        adj: &mut [B],
        mut each: impl FnMut(usize, &B),
    ) {
        for &(i, slot) in &self.block.variables {
            if slot <= o {
                each(i as usize, &std::mem::take(&mut adj[slot as usize]));
            }
        }
    }

    /// The first `count` lanes' jets sized for this tape: with Hessians
    /// (`Jets::ensure`), or values and gradients only, zeroed (`Jets::reset_gradients`).
    fn lane_jets(&self, lanes: &mut Vec<Jets>, count: usize, hessians: bool) {
        if lanes.len() < ROWS {
            lanes.resize_with(ROWS, Jets::default);
        }
        for jets in &mut lanes[..count] {
            if hessians {
                jets.ensure(self.dim, self.outputs.len());
            } else {
                jets.reset_gradients(self.dim, self.outputs.len());
            }
        }
    }

    /// [`Tape::gradients_row`] for the `n` rows in `rows`, in blocks of [`ROWS`] (the
    /// point written once for all of them): `each(r, jets)` for each row `r` in order,
    /// with its values and gradients (no Hessians). `Err(r)` when a value or gradient
    /// is not finite in the block that starts at row `r`: the rows before it went to
    /// `each`, none of the block's; the caller takes those one by one.
    pub(crate) fn gradients_rows(
        &self,
        x: &[f64],
        rows: &[f64],
        n: usize,
        rw: &mut RowsWorkspace,
        mut each: impl FnMut(usize, &Jets),
    ) -> Result<(), usize> {
        let (d, c) = (self.dim, self.data);
        assert_eq!(rows.len(), n * c, "whole rows");
        let RowsWorkspace { f, f_adj, jets, .. } = rw;
        self.set_variables(x, |_, xi| xi, f);
        for start in (0..n).step_by(ROWS) {
            let count = (n - start).min(ROWS);
            self.lane_jets(jets, count, false);
            self.set_data(&rows[start * c..(start + count) * c], count, f);
            if !self.eval_rows(count, f) {
                return Err(start);
            }
            for (k, &o) in self.block.outputs.iter().enumerate() {
                self.sweep_rows(o, count, f, f_adj);
                self.take_variable_adjoints(o, f_adj, |i, a| {
                    for (l, lane) in jets[..count].iter_mut().enumerate() {
                        lane.gradients[k * d + i] += a[l];
                    }
                });
                for (l, lane) in jets[..count].iter_mut().enumerate() {
                    lane.values[k] = f[o as usize][l];
                }
            }
            let lanes = &jets[..count];
            if !lanes
                .iter()
                .all(|j| j.gradients.iter().all(|v| v.is_finite()))
            {
                return Err(start);
            }
            for (l, lane) in lanes.iter().enumerate() {
                each(start + l, lane);
            }
        }
        Ok(())
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
        let RowsWorkspace {
            vals, adj, jets, ..
        } = rw;
        self.lane_jets(jets, count, true);
        self.set_variables(x, |_, xi| Dual64::from(xi), vals);
        self.set_data(rows, count, vals);
        let seed = |vals: &mut [DualLane], j: usize, tangent: f64| {
            if let Some(slot) = self.block.variable_slot[j] {
                vals[slot as usize] = DualLane::splat(Dual64::new(x[j], tangent));
            }
        };
        for j in 0..d {
            seed(vals, j, 1.0);
            if j > 0 {
                seed(vals, j - 1, 0.0);
            }
            if !self.eval_rows(count, vals) {
                return false;
            }
            for (k, &o) in self.block.outputs.iter().enumerate() {
                for lane in &mut jets[..count] {
                    lane.gradients[k * d..(k + 1) * d].fill(0.0);
                    let hess = &mut lane.hessians[k * d * d..(k + 1) * d * d];
                    for i in 0..d {
                        hess[i * d + j] = 0.0;
                    }
                }
                self.sweep_rows(o, count, vals, adj);
                self.take_variable_adjoints(o, adj, |i, a| {
                    for (l, lane) in jets[..count].iter_mut().enumerate() {
                        lane.gradients[k * d + i] += a.re[l];
                        lane.hessians[k * d * d + i * d + j] += a.eps[l];
                    }
                });
                for (l, lane) in jets[..count].iter_mut().enumerate() {
                    lane.values[k] = vals[o as usize].re[l];
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

    /// [`Tape::hessian_vector_row`] of output `k` over the `n` rows in `rows`, in blocks
    /// of [`ROWS`]: each row's ∇F and ∇²F·v added into `grad` and `hv` and its F into
    /// the returned sum, row after row (so the same bits as `n` calls of the scalar
    /// code, which adds a row's terms into the same sums). `None` when something is
    /// not finite in some row (or a sum overflows); `grad` and `hv` then hold part of
    /// the sums, and the caller starts again row by row, which names the row.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn hessian_vector_rows(
        &self,
        k: usize,
        x: &[f64],
        v: &[f64],
        rows: &[f64],
        n: usize,
        rw: &mut RowsWorkspace,
        grad: &mut [f64],
        hv: &mut [f64],
    ) -> Option<f64> {
        let (d, c) = (self.dim, self.data);
        assert!(
            v.len() == d && grad.len() == d && hv.len() == d && rows.len() == n * c,
            "a direction and sums of the tape's dimension, and whole rows"
        );
        let RowsWorkspace { vals, adj, .. } = rw;
        // The point and the direction are the same in every block: written once.
        self.set_variables(x, |i, xi| Dual64::new(xi, v[i]), vals);
        let o = self.block.outputs[k];
        let mut sum = 0.0;
        for start in (0..n).step_by(ROWS) {
            let count = (n - start).min(ROWS);
            self.set_data(&rows[start * c..(start + count) * c], count, vals);
            if !self.eval_rows(count, vals) {
                return None;
            }
            self.sweep_rows(o, count, vals, adj);
            self.take_variable_adjoints(o, adj, |i, a| {
                let (mut g, mut h) = (grad[i], hv[i]);
                for l in 0..count {
                    g += a.re[l];
                    h += a.eps[l];
                }
                (grad[i], hv[i]) = (g, h);
            });
            for &value in &vals[o as usize].re[..count] {
                sum += value;
            }
        }
        // A term that is not finite leaves its sum not finite (∞ stays ∞ or becomes
        // NaN, NaN stays), so one look at the sums finds it; a sum that overflows from
        // finite terms sends the caller row by row too, which gives the same sums.
        grad.iter()
            .chain(hv.iter())
            .all(|v| v.is_finite())
            .then_some(sum)
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

    /// Each row's jets from [`Tape::gradients_rows`] over the `n` rows in `rows`.
    fn blocked_gradients(
        tape: &Tape,
        x: &[f64],
        rows: &[f64],
        n: usize,
        rw: &mut RowsWorkspace,
    ) -> Vec<Jets> {
        let mut out = Vec::new();
        tape.gradients_rows(x, rows, n, rw, |r, jets| {
            assert_eq!(r, out.len(), "rows in order");
            out.push(jets.clone());
        })
        .expect("finite");
        out
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
            let blocked = blocked_gradients(tape, &x, block, count, &mut rw);
            assert_eq!(blocked.len(), count);
            for (l, lane) in blocked.iter().enumerate() {
                tape.gradients_row(&x, fs.row(l), &mut ws, &mut jets)
                    .unwrap();
                assert_eq!(lane.values, jets.values, "count {count}, lane {l}");
                assert_eq!(lane.gradients, jets.gradients);
            }
            assert!(tape.derivatives_rows(&x, block, count, &mut rw));
            for l in 0..count {
                tape.derivatives_row(&x, fs.row(l), &mut ws, &mut jets)
                    .unwrap();
                assert_eq!(rw.jets[l], jets, "count {count}, lane {l}");
            }
            // Sums from a nonzero start, as a chunk's running sums are.
            let start: Vec<f64> = (0..d).map(|i| 0.1 * i as f64 - 0.3).collect();
            let (mut bg, mut bhv) = (start.clone(), start.clone());
            let sum = tape
                .hessian_vector_rows(0, &x, &v, block, count, &mut rw, &mut bg, &mut bhv)
                .unwrap();
            let (mut g, mut hv, mut f) = (start.clone(), start.clone(), 0.0);
            for l in 0..count {
                f += tape
                    .hessian_vector_row(0, &x, fs.row(l), &v, &mut ws, &mut g, &mut hv)
                    .unwrap();
            }
            assert_eq!(sum.to_bits(), f.to_bits());
            assert_eq!(bg, g, "count {count}");
            assert_eq!(bhv, hv);
        }
    }

    /// A product read only by the addition right after it runs fused into that
    /// addition (a dot product's products all do); one read twice stays a product;
    /// and either way every lane keeps the scalar code's bits.
    #[test]
    fn a_product_read_only_by_the_next_addition_is_fused() {
        let p = Problem::from_str(
            "data s = [[a, b], [1, 2], [3, -1], [0.5, 4]]\nvar w[3] = 0.2\n\
             minimize mean(s, w[1]*s.a + w[2]*s.b + w[3]*w[1] + tanh(w[2]*w[3] + (w[2]*w[3])^2))",
        )
        .unwrap();
        let (tape, fs) = (p.objective_tape(), p.finite_sum().unwrap());
        let fused = |op: &BlockOp| matches!(op, BlockOp::MulAdd(..));
        assert_eq!(tape.block.ops.iter().filter(|op| fused(op)).count(), 2);
        assert_eq!(tape.block.len(), tape.ops().len() - 2);
        // w[2]*w[3] has two readers: kept, and read by the addition as a slot.
        let products = (tape.block.ops.iter())
            .filter(|op| matches!(op, BlockOp::Tape(Op::Mul(..))))
            .count();
        assert_eq!(
            products, 2,
            "w[1]*s.a opens the sum; w[2]*w[3] is read twice"
        );
        let (x, v) = ([0.3, -0.7, 1.1], [1.0, 0.5, -2.0]);
        let mut rw = RowsWorkspace::default();
        let (mut ws, mut jets) = (Workspace::default(), Jets::default());
        let (mut bg, mut bhv) = (vec![0.0; 3], vec![0.0; 3]);
        let sum = tape
            .hessian_vector_rows(0, &x, &v, &fs.rows, 3, &mut rw, &mut bg, &mut bhv)
            .unwrap();
        let (mut g, mut hv, mut f) = (vec![0.0; 3], vec![0.0; 3], 0.0);
        for r in 0..3 {
            f += tape
                .hessian_vector_row(0, &x, fs.row(r), &v, &mut ws, &mut g, &mut hv)
                .unwrap();
        }
        assert_eq!((sum.to_bits(), bg, bhv), (f.to_bits(), g, hv));
        let blocked = blocked_gradients(tape, &x, &fs.rows, 3, &mut rw);
        assert_eq!(blocked.len(), 3);
        for (r, row) in blocked.iter().enumerate() {
            tape.gradients_row(&x, fs.row(r), &mut ws, &mut jets)
                .unwrap();
            assert_eq!(row.gradients, jets.gradients, "row {r}");
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
