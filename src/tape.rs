//! Compiled expressions: a flat tape of instructions over slots, evaluated by one
//! generic loop over any num-dual number type (`D: DualNum<Primitive = f64>`), so
//! values, gradients and Hessians all come from the same code.
//!
//! Instruction `k` writes slot `k` and reads only earlier slots, so evaluation is a
//! single forward loop: no recursion, and no allocation per instruction (the slot
//! buffer is reserved once per call). Constant subexpressions are folded at compile
//! time with the same scalar code ([`Func::apply`] on `f64`), repeated subexpressions
//! share a slot (hash-consing), and instructions no output needs are dropped.
//!
//! Derivatives, chosen by size ([`HessianMethod`]): for small d one pass of
//! second-order forward mode with fixed-size [`Jet`]s (value, gradient and Hessian in
//! plain arrays, d ≤ [`STATIC_MAX_DIM`]); above that forward-over-reverse: per column j a forward pass in
//! `Dual64` with x_j's tangent set and a reverse sweep whose adjoints are `Dual64`,
//! giving ∇f and column j of ∇²f, so a Hessian costs about d tape passes. 8×8 blocks of
//! `HyperDualVec64<U8, U8>` are kept as an independent forward method for checks.
//! The same forward-over-reverse pass with any tangent v gives a Hessian-vector product
//! ∇²F·v without the matrix ([`Tape::hessian_vector_row`]), for Krylov methods at
//! large d.
//! Every path is allocation-free once its `Workspace` buffers have grown.

use crate::jet::Jet;
use crate::lang::Span;
use nalgebra::{DMatrix, DVector, U1, U8};
use num_dual::{Derivative, Dual64, DualNum, HyperDualVec};
use std::collections::HashMap;

mod rows;
pub(crate) use rows::RowsWorkspace;
pub use rows::{ROWS, ROWS_HESSIAN_MAX_DIM};

/// Built-in functions of docs/language.md (one argument each; `pow` is an instruction).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Func {
    /// `exp`
    Exp,
    /// `log` (natural)
    Log,
    /// `sqrt`
    Sqrt,
    /// `sin`
    Sin,
    /// `cos`
    Cos,
    /// `tan`
    Tan,
    /// `tanh`
    Tanh,
    /// `sinh`
    Sinh,
    /// `cosh`
    Cosh,
    /// `atan`
    Atan,
    /// `sigmoid(x) = 1/(1 + e^{-x})`
    Sigmoid,
    /// `softplus(x) = log(1 + e^x)`
    Softplus,
    /// `log1p(x) = log(1 + x)`
    Log1p,
    /// `expm1(x) = e^x − 1`
    Expm1,
    /// `abs` (not differentiable at 0; the derivative there is taken as +1)
    Abs,
    /// `relu(x) = max(x, 0)` (not differentiable at 0; the derivative there is taken
    /// as 0)
    Relu,
}

impl Func {
    /// Every unary function, for lookups and suggestions.
    pub const ALL: [Func; 16] = [
        Func::Exp,
        Func::Log,
        Func::Sqrt,
        Func::Sin,
        Func::Cos,
        Func::Tan,
        Func::Tanh,
        Func::Sinh,
        Func::Cosh,
        Func::Atan,
        Func::Sigmoid,
        Func::Softplus,
        Func::Log1p,
        Func::Expm1,
        Func::Abs,
        Func::Relu,
    ];

    /// The name used in objective files.
    pub fn name(self) -> &'static str {
        match self {
            Func::Exp => "exp",
            Func::Log => "log",
            Func::Sqrt => "sqrt",
            Func::Sin => "sin",
            Func::Cos => "cos",
            Func::Tan => "tan",
            Func::Tanh => "tanh",
            Func::Sinh => "sinh",
            Func::Cosh => "cosh",
            Func::Atan => "atan",
            Func::Sigmoid => "sigmoid",
            Func::Softplus => "softplus",
            Func::Log1p => "log1p",
            Func::Expm1 => "expm1",
            Func::Abs => "abs",
            Func::Relu => "relu",
        }
    }

    /// Looks a function up by name.
    pub fn from_name(name: &str) -> Option<Func> {
        Func::ALL.into_iter().find(|f| f.name() == name)
    }

    /// The derivative f'(x), given x and the value y = f(x) (used by reverse mode).
    #[inline]
    pub fn derivative<D: DualNum<Primitive = f64>>(self, x: &D, y: &D) -> D {
        match self {
            Func::Exp => y.clone(),
            Func::Log => x.recip(),
            Func::Sqrt => y.recip() * 0.5,
            Func::Sin => x.cos(),
            Func::Cos => -x.sin(),
            Func::Tan => y.clone() * y + 1.0,
            Func::Tanh => {
                // sech²(x) = 4e/(1 + e)², e = exp(−2|x|): exact where 1 − tanh² rounds to 0.
                let e = if x.re() >= 0.0 {
                    (x.clone() * -2.0).exp()
                } else {
                    (x.clone() * 2.0).exp()
                };
                let one_plus = e.clone() + 1.0;
                e * 4.0 / (one_plus.clone() * one_plus)
            }
            Func::Sinh => x.cosh(),
            Func::Cosh => x.sinh(),
            Func::Atan => (x.clone() * x + 1.0).recip(),
            Func::Sigmoid => y.clone() * (-y.clone() + 1.0),
            Func::Softplus => Func::Sigmoid.apply(x),
            Func::Log1p => (x.clone() + 1.0).recip(),
            Func::Expm1 => y.clone() + 1.0,
            Func::Abs => D::from(if x.re() >= 0.0 { 1.0 } else { -1.0 }),
            Func::Relu => D::from(if x.re() > 0.0 { 1.0 } else { 0.0 }),
        }
    }

    /// Applies the function to any number type. `sigmoid` and `softplus` branch on
    /// the sign so neither overflows (`softplus(x) = x + log1p(e^{−x})` for x > 0).
    #[inline]
    pub fn apply<D: DualNum<Primitive = f64>>(self, x: &D) -> D {
        match self {
            Func::Exp => x.exp(),
            Func::Log => x.ln(),
            Func::Sqrt => x.sqrt(),
            Func::Sin => x.sin(),
            Func::Cos => x.cos(),
            Func::Tan => x.tan(),
            Func::Tanh => {
                // tanh(x) = −m/(m + 2), m = expm1(−2|x|) carrying the sign: no overflow
                // and no cancellation, so the derivatives stay right for large |x|
                // (sinh/cosh would give ∞/∞) and the value for small |x|.
                if x.re() >= 0.0 {
                    let m = (x.clone() * -2.0).exp_m1();
                    -m.clone() / (m + 2.0)
                } else {
                    let m = (x.clone() * 2.0).exp_m1();
                    m.clone() / (m + 2.0)
                }
            }
            Func::Sinh => x.sinh(),
            Func::Cosh => x.cosh(),
            Func::Atan => x.atan(),
            Func::Sigmoid => {
                if x.re() >= 0.0 {
                    ((-x.clone()).exp() + 1.0).recip()
                } else {
                    let e = x.exp();
                    e.clone() / (e + 1.0)
                }
            }
            Func::Softplus => {
                if x.re() > 0.0 {
                    x.clone() + (-x.clone()).exp().ln_1p()
                } else {
                    x.exp().ln_1p()
                }
            }
            Func::Log1p => x.ln_1p(),
            Func::Expm1 => x.exp_m1(),
            Func::Abs => {
                if x.re() >= 0.0 {
                    x.clone()
                } else {
                    -x.clone()
                }
            }
            Func::Relu => {
                // A NaN operand stays NaN (an error at its instruction, not a silent 0).
                if x.re() > 0.0 || x.re().is_nan() {
                    x.clone()
                } else {
                    D::from(0.0)
                }
            }
        }
    }
}

/// Slot index.
pub type Slot = u32;

/// One instruction; it writes the slot with its own index.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Op {
    /// Coordinate `i` of the point.
    Var(u32),
    /// A constant (only when an output is constant; constants otherwise live inside
    /// the instructions that use them).
    Const(f64),
    /// `a + b`
    Add(Slot, Slot),
    /// `a − b`
    Sub(Slot, Slot),
    /// `a · b`
    Mul(Slot, Slot),
    /// `a / b`
    Div(Slot, Slot),
    /// `a^b` for a non-constant exponent: `exp(b log a)`, needs `a > 0`.
    Pow(Slot, Slot),
    /// `a + c·b` (fused from `a + b·c` and `a − b·c`: one instruction instead of two,
    /// with the same rounding)
    AddScaled(Slot, Slot, f64),
    /// `a + c`
    AddConst(Slot, f64),
    /// `c − a`
    ConstSub(f64, Slot),
    /// `c · a`
    MulConst(Slot, f64),
    /// `a / c`
    DivConst(Slot, f64),
    /// `c / a`
    ConstDiv(f64, Slot),
    /// `−a`
    Neg(Slot),
    /// `a^n`, an exact integer power (valid for negative `a`).
    PowI(Slot, i32),
    /// `a^c` for a constant non-integer `c`.
    PowF(Slot, f64),
    /// `c^a` for a constant base: `exp(a log c)`.
    ConstPow(f64, Slot),
    /// `f(a)`
    Func(Func, Slot),
    /// `max(a, b)`: the larger operand, value and derivatives alike; a tie takes `a`
    /// ([`max_takes_first`]).
    Max(Slot, Slot),
    /// `min(a, b)`: the smaller operand; a tie takes `a` ([`min_takes_first`]).
    Min(Slot, Slot),
}

/// Whether `max(a, b)` is its first operand: `a ≥ b` (a tie takes the first, so the
/// derivative at a kink is the first operand's), or `a` is NaN (a NaN operand is kept,
/// so evaluation reports it rather than dropping it).
#[inline(always)]
pub fn max_takes_first(a: f64, b: f64) -> bool {
    a >= b || a.is_nan()
}

/// Whether `min(a, b)` is its first operand: `a ≤ b` or `a` is NaN (see
/// [`max_takes_first`]).
#[inline(always)]
pub fn min_takes_first(a: f64, b: f64) -> bool {
    a <= b || a.is_nan()
}

impl Op {
    /// A hashable identity for hash-consing (floats by their bits).
    fn key(&self) -> (u8, u64, u64) {
        let b = |c: f64| c.to_bits();
        match *self {
            Op::Var(i) => (0, i as u64, 0),
            Op::Const(c) => (1, b(c), 0),
            Op::Add(a, c) => (2, a as u64, c as u64),
            Op::Sub(a, c) => (3, a as u64, c as u64),
            Op::Mul(a, c) => (4, a as u64, c as u64),
            Op::Div(a, c) => (5, a as u64, c as u64),
            Op::Pow(a, c) => (6, a as u64, c as u64),
            Op::AddConst(a, c) => (7, a as u64, b(c)),
            Op::ConstSub(c, a) => (8, a as u64, b(c)),
            Op::MulConst(a, c) => (9, a as u64, b(c)),
            Op::DivConst(a, c) => (10, a as u64, b(c)),
            Op::ConstDiv(c, a) => (11, a as u64, b(c)),
            Op::Neg(a) => (12, a as u64, 0),
            Op::PowI(a, n) => (13, a as u64, n as u64),
            Op::PowF(a, c) => (14, a as u64, b(c)),
            Op::ConstPow(c, a) => (15, a as u64, b(c)),
            Op::Func(f, a) => (16 + f as u8, a as u64, 0),
            Op::Max(a, c) => (64, a as u64, c as u64),
            Op::Min(a, c) => (65, a as u64, c as u64),
            // Two slots and a constant: slots packed in one word (each < 2³²).
            Op::AddScaled(a, s, c) => (255, ((a as u64) << 32) | s as u64, b(c)),
        }
    }

    fn operands(&self) -> [Option<Slot>; 2] {
        match *self {
            Op::Var(_) | Op::Const(_) => [None, None],
            Op::Add(a, b)
            | Op::Sub(a, b)
            | Op::Mul(a, b)
            | Op::Div(a, b)
            | Op::Pow(a, b)
            | Op::Max(a, b)
            | Op::Min(a, b)
            | Op::AddScaled(a, b, _) => [Some(a), Some(b)],
            Op::AddConst(a, _)
            | Op::ConstSub(_, a)
            | Op::MulConst(a, _)
            | Op::DivConst(a, _)
            | Op::ConstDiv(_, a)
            | Op::Neg(a)
            | Op::PowI(a, _)
            | Op::PowF(a, _)
            | Op::ConstPow(_, a)
            | Op::Func(_, a) => [Some(a), None],
        }
    }

    fn remap(&mut self, map: &[Slot]) {
        let m = |s: &mut Slot| *s = map[*s as usize];
        match self {
            Op::Var(_) | Op::Const(_) => {}
            Op::Add(a, b)
            | Op::Sub(a, b)
            | Op::Mul(a, b)
            | Op::Div(a, b)
            | Op::Pow(a, b)
            | Op::Max(a, b)
            | Op::Min(a, b)
            | Op::AddScaled(a, b, _) => {
                m(a);
                m(b);
            }
            Op::AddConst(a, _)
            | Op::ConstSub(_, a)
            | Op::MulConst(a, _)
            | Op::DivConst(a, _)
            | Op::ConstDiv(_, a)
            | Op::Neg(a)
            | Op::PowI(a, _)
            | Op::PowF(a, _)
            | Op::ConstPow(_, a)
            | Op::Func(_, a) => m(a),
        }
    }
}

/// Evaluates one instruction into `out`. `s` holds the slots written so far. Each arm
/// assigns its result straight into the slot, so no temporary is built and copied.
#[inline(always)]
fn step<D: DualNum<Primitive = f64>>(op: Op, s: &[D], x: &[D], out: &mut D) {
    let at = |i: Slot| &s[i as usize];
    match op {
        Op::Var(i) => *out = x[i as usize].clone(),
        Op::Const(c) => *out = D::from(c),
        Op::Add(a, b) => *out = at(a).clone() + at(b),
        Op::AddScaled(a, b, c) => *out = at(a).clone() + at(b).clone() * c,
        Op::Sub(a, b) => *out = at(a).clone() - at(b),
        Op::Mul(a, b) => *out = at(a).clone() * at(b),
        Op::Div(a, b) => *out = at(a).clone() / at(b),
        Op::Pow(a, b) => *out = at(a).powd(at(b).clone()),
        Op::AddConst(a, c) => *out = at(a).clone() + c,
        Op::ConstSub(c, a) => *out = -at(a).clone() + c,
        Op::MulConst(a, c) => *out = at(a).clone() * c,
        Op::DivConst(a, c) => *out = at(a).clone() / c,
        Op::ConstDiv(c, a) => *out = at(a).recip() * c,
        Op::Neg(a) => *out = -at(a).clone(),
        Op::PowI(a, n) => *out = at(a).powi(n),
        Op::PowF(a, c) => *out = powf(at(a), c),
        Op::ConstPow(c, a) => *out = (at(a).clone() * c.ln()).exp(),
        Op::Func(f, a) => *out = outlined(|| f.apply(at(a))),
        Op::Max(a, b) => {
            let first = max_takes_first(at(a).re(), at(b).re());
            *out = if first { at(a) } else { at(b) }.clone();
        }
        Op::Min(a, b) => {
            let first = min_takes_first(at(a).re(), at(b).re());
            *out = if first { at(a) } else { at(b) }.clone();
        }
    }
}

/// One instruction over [`Jet`]s, written in place (straight into the slot: building
/// a temporary and copying it costs a stack round trip per instruction, measured).
/// Variables `i < N` are seeded; data inputs (`i ≥ N`) are constants from `row`.
#[inline(always)]
fn jet_step<const N: usize>(op: Op, s: &[Jet<N>], x: &[f64], row: &[f64], out: &mut Jet<N>) {
    let at = |i: Slot| &s[i as usize];
    match op {
        Op::Var(i) if (i as usize) < N => out.set_variable(x[i as usize], i as usize),
        Op::Var(i) => out.set_constant(row[i as usize - N]),
        Op::Const(c) => out.set_constant(c),
        Op::Add(a, b) => out.set_add(at(a), at(b)),
        Op::Sub(a, b) => out.set_sub(at(a), at(b)),
        Op::AddScaled(a, b, c) => out.set_add_scaled(at(a), at(b), c),
        Op::Mul(a, b) => out.set_mul(at(a), at(b)),
        Op::AddConst(a, c) => out.set_add_const(at(a), c),
        Op::ConstSub(c, a) => {
            out.set_map(at(a), |v| -v);
            out.re += c;
        }
        Op::MulConst(a, c) => out.set_map(at(a), |v| v * c),
        Op::DivConst(a, c) => out.set_map(at(a), |v| v / c),
        Op::Neg(a) => out.set_map(at(a), |v| -v),
        Op::PowI(a, 2) => out.set_square(at(a)),
        Op::Max(a, b) => {
            *out = *if max_takes_first(at(a).re, at(b).re) {
                at(a)
            } else {
                at(b)
            }
        }
        Op::Min(a, b) => {
            *out = *if min_takes_first(at(a).re, at(b).re) {
                at(a)
            } else {
                at(b)
            }
        }
        Op::PowI(a, n) if n > 2 => {
            // f = aⁿ, f′ = n aⁿ⁻¹, f″ = n(n − 1) aⁿ⁻².
            let x = at(a).re;
            let p = x.powi(n - 2);
            let nf = f64::from(n);
            out.set_chain(at(a), p * x * x, nf * p * x, nf * (nf - 1.0) * p);
        }
        _ => *out = outlined(|| jet_rare(op, s)),
    }
}

/// The instructions of [`jet_step`] that go through a univariate function (out of
/// line: they are expensive anyway).
fn jet_rare<const N: usize>(op: Op, s: &[Jet<N>]) -> Jet<N> {
    let at = |i: Slot| &s[i as usize];
    match op {
        Op::Div(a, b) => Jet::mul(at(a), &Jet::apply(at(b), |d| d.recip())),
        Op::Pow(a, b) => {
            let ln = Jet::apply(at(a), |d| d.ln());
            Jet::apply(&Jet::mul(at(b), &ln), |d| d.exp())
        }
        Op::ConstDiv(c, a) => Jet::scale(&Jet::apply(at(a), |d| d.recip()), c),
        Op::PowI(a, n) => Jet::apply(at(a), |d| d.powi(n)),
        Op::PowF(a, c) => Jet::apply(at(a), |d| powf(d, c)),
        Op::ConstPow(c, a) => Jet::apply(at(a), |d| (*d * c.ln()).exp()),
        Op::Func(f, a) => Jet::apply(at(a), |d| f.apply(d)),
        // Handled in line by `jet_step`.
        _ => Jet::constant(f64::NAN),
    }
}

/// The transcendental functions run out of line: they are expensive anyway, and
/// keeping their code out of the dispatch loop keeps that loop's stack frame small
/// (measured: about 1.4× faster on small tapes).
#[inline(never)]
fn outlined<D>(f: impl FnOnce() -> D) -> D {
    f()
}

/// `a^c` for a constant non-integer `c`. num-dual forms `a^(c−3)·a³`, which is ∞·0 at
/// `a = 0`; there the j-th derivative of `a^c` is 0 when `c > j` and infinite when
/// `c < j`, so: when `c` exceeds every derivative order the type carries, the exact
/// result is zero in every part; otherwise some derivative is infinite, and `sqrt(a)`
/// (value 0, infinite derivative parts) carries exactly that, so the error reports a
/// non-differentiable point rather than a NaN value.
#[inline]
fn powf<D: DualNum<Primitive = f64>>(a: &D, c: f64) -> D {
    if a.re() == 0.0 && c > 0.0 {
        if c > D::NDERIV as f64 {
            D::from(0.0)
        } else {
            a.sqrt()
        }
    } else {
        a.powf(c)
    }
}

/// Number types the tape can report non-finite parts of.
pub trait TapeScalar: DualNum<Primitive = f64> {
    /// Whether the value and every derivative part are finite.
    fn all_finite(&self) -> bool;
}

impl TapeScalar for f64 {
    fn all_finite(&self) -> bool {
        self.is_finite()
    }
}

fn derivative_finite<R: nalgebra::Dim, C: nalgebra::Dim>(d: &Derivative<f64, R, C>) -> bool
where
    nalgebra::DefaultAllocator: nalgebra::allocator::Allocator<R, C>,
{
    d.0.as_ref().is_none_or(|m| m.iter().all(|v| v.is_finite()))
}

impl TapeScalar for Dual64 {
    fn all_finite(&self) -> bool {
        self.re.is_finite() && self.eps.is_finite()
    }
}

type Block = HyperDualVec<f64, U8, U8>;

impl TapeScalar for Block {
    fn all_finite(&self) -> bool {
        self.re.is_finite()
            && derivative_finite(&self.eps1)
            && derivative_finite(&self.eps2)
            && derivative_finite(&self.eps1eps2)
    }
}

/// Value, gradient and Hessian of one output at one point.
#[derive(Clone, Debug, PartialEq)]
pub struct Derivs {
    /// f(x)
    pub value: f64,
    /// ∇f(x)
    pub gradient: DVector<f64>,
    /// ∇²f(x), symmetric
    pub hessian: DMatrix<f64>,
}

/// A non-finite number met while evaluating a tape.
#[derive(Clone, Debug, PartialEq)]
pub struct NonFinite {
    /// Which instruction first produced it.
    pub op: usize,
    /// Where that instruction comes from in the source.
    pub span: Span,
    /// Its value (the real part).
    pub value: f64,
    /// True when the value is finite but a derivative is not (e.g. `sqrt` at 0).
    pub in_derivative: bool,
}

/// A compiled multi-output expression over `dim` variables.
#[derive(Clone, Debug)]
pub struct Tape {
    dim: usize,
    /// Data inputs (columns of one row of a data table) after the `dim` variables:
    /// `Op::Var(i)` with `i ≥ dim` reads one. They are constants for differentiation.
    data: usize,
    ops: Vec<Op>,
    spans: Vec<Span>,
    outputs: Vec<Slot>,
    /// The instructions as the sweeps over blocks of rows run them (boxed: a tape
    /// stays small to move).
    block: Box<rows::BlockProgram>,
}

impl Tape {
    /// Number of variables.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Number of data inputs (columns of a row) read after the variables; 0 for a tape
    /// without data.
    pub fn data_inputs(&self) -> usize {
        self.data
    }

    /// Panics unless `x` has `dim` coordinates and `row` the tape's data inputs (a
    /// caller's programming error, never the user's input).
    fn check_inputs(&self, x: &[f64], row: &[f64]) {
        assert_eq!(x.len(), self.dim, "point dimension must match the tape");
        assert_eq!(
            row.len(),
            self.data,
            "row length must match the tape's data inputs"
        );
    }

    /// Number of outputs.
    pub fn outputs(&self) -> usize {
        self.outputs.len()
    }

    /// Number of instructions.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// Whether the tape has no instructions (every output would be absent).
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// The instructions, for inspection.
    pub fn ops(&self) -> &[Op] {
        &self.ops
    }

    /// The slot (instruction index) holding each output.
    pub fn output_slots(&self) -> &[Slot] {
        &self.outputs
    }

    /// For a tape with data inputs: an upper bound on the polynomial degree, in the
    /// variables, of the part of output `k` that depends on the data (`None`: no part
    /// does; `Some(None)`: not a polynomial). A forward pass over the instructions with
    /// the rules of polynomial degree, tracking for each slot its degree and the degree
    /// of its data-dependent part. When that part has degree ≤ 1, every example's
    /// gradient differs from every other's by a constant, so a finite sum's noise
    /// covariance does not depend on the point.
    pub fn data_part_degree(&self, k: usize) -> Option<Option<u32>> {
        // Per slot: (degree, degree of the data-dependent part); None = not polynomial.
        type Deg = Option<u32>;
        let add = |a: Deg, b: Deg| a.zip(b).map(|(a, b)| a + b);
        let max = |a: Deg, b: Deg| a.zip(b).map(|(a, b)| a.max(b));
        let join = |a: Option<Deg>, b: Option<Deg>| match (a, b) {
            (None, x) | (x, None) => x,
            (Some(a), Some(b)) => Some(max(a, b)),
        };
        let mut s: Vec<(Deg, Option<Deg>)> = Vec::with_capacity(self.ops.len());
        for &op in &self.ops {
            let at = |i: Slot| s[i as usize];
            // A smooth function of its operand: polynomial only when the operand is
            // constant in x (then it is a constant, or a function of the data alone).
            let smooth = |(d, c): (Deg, Option<Deg>)| {
                if d == Some(0) {
                    (Some(0), c.map(|_| Some(0)))
                } else {
                    (None, c.map(|_| None))
                }
            };
            let r = match op {
                Op::Var(i) if (i as usize) < self.dim => (Some(1), None),
                Op::Var(_) => (Some(0), Some(Some(0))),
                Op::Const(_) => (Some(0), None),
                Op::Add(a, b) | Op::Sub(a, b) | Op::AddScaled(a, b, _) => {
                    let ((da, ca), (db, cb)) = (at(a), at(b));
                    (max(da, db), join(ca, cb))
                }
                Op::AddConst(a, _)
                | Op::ConstSub(_, a)
                | Op::MulConst(a, _)
                | Op::DivConst(a, _)
                | Op::Neg(a) => at(a),
                Op::Mul(a, b) => {
                    let ((da, ca), (db, cb)) = (at(a), at(b));
                    // (a₀ + a_c)(b₀ + b_c): the data part is a_c·b + a₀·b_c.
                    let c = join(ca.map(|c| add(c, db)), cb.map(|c| add(da, c)));
                    (add(da, db), c)
                }
                Op::Div(a, b) => {
                    let ((da, ca), (db, cb)) = (at(a), at(b));
                    if db == Some(0) {
                        // Divided by a function of the data alone: all of it is data.
                        let c = if cb.is_some() { Some(da) } else { ca };
                        (da, c)
                    } else {
                        (None, join(ca, cb).map(|_| None))
                    }
                }
                Op::PowI(_, 0) => (Some(0), None),
                Op::PowI(a, n) if n > 0 => {
                    // (a₀ + a_c)ⁿ − a₀ⁿ: every term holds a_c once and a at most n − 1 times.
                    let (da, ca) = at(a);
                    let scale = |d: Deg, m: i32| d.map(|d| d * m as u32);
                    (scale(da, n), ca.map(|c| add(c, scale(da, n - 1))))
                }
                Op::PowI(a, _)
                | Op::PowF(a, _)
                | Op::ConstPow(_, a)
                | Op::ConstDiv(_, a)
                | Op::Func(_, a) => smooth(at(a)),
                // Piecewise: polynomial only when both operands are constant in x.
                Op::Pow(a, b) | Op::Max(a, b) | Op::Min(a, b) => {
                    let ((da, ca), (db, cb)) = (at(a), at(b));
                    smooth((max(da, db).filter(|&d| d == 0), join(ca, cb)))
                }
            };
            s.push(r);
        }
        s[self.outputs[k] as usize].1
    }

    /// Runs the tape over any number type into `slots` (cleared first; its capacity
    /// is reused across calls). `x` holds the variables, then the data inputs of one
    /// row (`dim + data_inputs` entries).
    pub fn eval_into<D: TapeScalar>(&self, x: &[D], slots: &mut Vec<D>) -> Result<(), NonFinite> {
        debug_assert_eq!(x.len(), self.dim + self.data);
        // Slots keep their length across calls: each result is written in place over
        // the previous call's value (a push would build it on the stack and copy it,
        // and reading that copy back stalls store forwarding on the hot path).
        if slots.len() != self.ops.len() {
            slots.clear();
            slots.resize(self.ops.len(), D::zero());
        }
        for (k, &op) in self.ops.iter().enumerate() {
            let (done, rest) = slots.split_at_mut(k);
            step(op, done, x, &mut rest[0]);
        }
        if self.outputs.iter().all(|&o| slots[o as usize].all_finite()) {
            Ok(())
        } else {
            Err(self.first_non_finite(slots))
        }
    }

    fn first_non_finite<D: TapeScalar>(&self, slots: &[D]) -> NonFinite {
        let at = |k: usize, in_derivative| NonFinite {
            op: k,
            span: self.spans[k],
            value: slots[k].re(),
            in_derivative,
        };
        // Prefer the first non-finite value; else the first non-finite derivative.
        if let Some(k) = slots.iter().position(|s| !s.re().is_finite()) {
            return at(k, false);
        }
        let k = slots.iter().position(|s| !s.all_finite()).unwrap_or(0);
        at(k, true)
    }

    /// Values of every output into `out`, reusing `slots`: no allocation once `slots`
    /// has grown.
    pub fn values_with(
        &self,
        x: &[f64],
        slots: &mut Vec<f64>,
        out: &mut [f64],
    ) -> Result<(), NonFinite> {
        self.eval_into(x, slots)?;
        for (o, &k) in out.iter_mut().zip(&self.outputs) {
            *o = slots[k as usize];
        }
        Ok(())
    }

    /// Values of every output.
    pub fn values(&self, x: &[f64]) -> Result<Vec<f64>, NonFinite> {
        let mut slots = Vec::new();
        self.eval_into(x, &mut slots)?;
        Ok(self.outputs.iter().map(|&o| slots[o as usize]).collect())
    }

    /// Value, gradient and Hessian of every output (allocating; see
    /// [`Tape::derivatives_with`] for the allocation-free form).
    pub fn derivatives(&self, x: &[f64]) -> Result<Vec<Derivs>, NonFinite> {
        let mut ws = Workspace::default();
        let mut jets = Jets::default();
        self.derivatives_with(x, &mut ws, &mut jets)?;
        Ok((0..self.outputs.len()).map(|k| jets.derivs(k)).collect())
    }

    /// Value, gradient and Hessian of every output into `jets`, reusing the buffers
    /// of `ws` and `jets`: after the first call at a given size, no allocation.
    pub fn derivatives_with(
        &self,
        x: &[f64],
        ws: &mut Workspace,
        jets: &mut Jets,
    ) -> Result<(), NonFinite> {
        self.derivatives_by(HessianMethod::Auto, x, ws, jets)
    }

    /// [`Tape::derivatives_with`] with a chosen method (for tests and benchmarks; the
    /// methods agree to round-off). `Static` falls back to `Auto` above d = 8.
    pub fn derivatives_by(
        &self,
        method: HessianMethod,
        x: &[f64],
        ws: &mut Workspace,
        jets: &mut Jets,
    ) -> Result<(), NonFinite> {
        self.derivatives_row_by(method, x, &[], ws, jets)
    }

    /// The mean over the rows of a data table (`rows`: row-major, `data_inputs`
    /// columns) of every output's value, gradient and Hessian at `x`: a finite sum
    /// `(1/n) Σ_i F_i(x)` evaluated one row at a time over the same tape. On a
    /// non-finite value, the error carries the row index (0-based). `each` sees every
    /// row's own derivatives as they are computed (e.g. to accumulate the covariance of
    /// the per-example gradients in the same pass).
    pub fn mean_derivatives_with(
        &self,
        x: &[f64],
        rows: &[f64],
        ws: &mut Workspace,
        jets: &mut Jets,
        mut each: impl FnMut(&Jets),
    ) -> Result<(), (usize, NonFinite)> {
        let c = self.data;
        assert!(
            c > 0 && rows.len().is_multiple_of(c),
            "rows must hold whole rows"
        );
        let n = rows.len() / c;
        assert!(n > 0, "a mean needs at least one row");
        let mut acc = ws.acc.take().unwrap_or_default();
        acc.reset(self.dim, self.outputs.len());
        let mut take = |acc: &mut Jets, jets: &Jets| {
            each(jets);
            let add = |a: &mut [f64], b: &[f64]| a.iter_mut().zip(b).for_each(|(a, b)| *a += b);
            add(&mut acc.values, &jets.values);
            add(&mut acc.gradients, &jets.gradients);
            add(&mut acc.hessians, &jets.hessians);
        };
        let mut result = Ok(());
        let blocked = self.rows_for_hessians();
        let mut i = 0;
        'rows: while i < n {
            // A block of rows at once when it can (every lane's results are the
            // scalar ones, taken in row order); otherwise, or when something in the
            // block is not finite, its rows one by one.
            let count = if blocked { (n - i).min(ROWS) } else { 1 };
            let block = &rows[i * c..(i + count) * c];
            if count > 1 && self.derivatives_rows(x, block, count, &mut ws.rows) {
                for lane in &ws.rows.jets[..count] {
                    take(&mut acc, lane);
                }
                i += count;
                continue;
            }
            for (r, row) in block.chunks_exact(c).enumerate() {
                if let Err(nf) = self.derivatives_row(x, row, ws, jets) {
                    result = Err((i + r, nf));
                    break 'rows;
                }
                take(&mut acc, jets);
            }
            i += count;
        }
        if result.is_ok() {
            let scale = 1.0 / n as f64;
            jets.reset(self.dim, self.outputs.len());
            let mean =
                |a: &mut [f64], b: &[f64]| a.iter_mut().zip(b).for_each(|(a, b)| *a = b * scale);
            mean(&mut jets.values, &acc.values);
            mean(&mut jets.gradients, &acc.gradients);
            mean(&mut jets.hessians, &acc.hessians);
        }
        ws.acc = Some(acc);
        result
    }

    /// Value, gradient and Hessian (with respect to the variables only) of every
    /// output at `x`, with the data inputs set to `row`: one example of a finite sum.
    pub fn derivatives_row(
        &self,
        x: &[f64],
        row: &[f64],
        ws: &mut Workspace,
        jets: &mut Jets,
    ) -> Result<(), NonFinite> {
        self.derivatives_row_by(HessianMethod::Auto, x, row, ws, jets)
    }

    /// [`Tape::derivatives_row`] with a chosen method.
    pub fn derivatives_row_by(
        &self,
        method: HessianMethod,
        x: &[f64],
        row: &[f64],
        ws: &mut Workspace,
        jets: &mut Jets,
    ) -> Result<(), NonFinite> {
        self.check_inputs(x, row);
        // Every method below writes every entry it reports, so the buffers need the
        // right sizes, not zeros.
        jets.ensure(self.dim, self.outputs.len());
        if self.dim == 0 {
            return self.derivatives_blocked(x, row, ws, jets);
        }
        let method = match method {
            HessianMethod::Auto if self.dim <= STATIC_MAX_DIM => HessianMethod::Static,
            HessianMethod::Auto => HessianMethod::Reverse,
            HessianMethod::Static if self.dim > 8 => HessianMethod::Reverse,
            m => m,
        };
        macro_rules! fixed {
            ($($n:literal => $field:ident),*) => {
                match self.dim {
                    $($n => self.derivatives_static::<$n>(x, row, &mut ws.$field, jets),)*
                    _ => unreachable!("static jets are only chosen for d ≤ 8"),
                }
            };
        }
        match method {
            HessianMethod::Static => {
                let r =
                    fixed!(1 => s1, 2 => s2, 3 => s3, 4 => s4, 5 => s5, 6 => s6, 7 => s7, 8 => s8);
                match r {
                    Ok(()) => Ok(()),
                    // Not finite somewhere: forward mode by blocks names the first
                    // instruction whose value or derivative is not finite.
                    Err(()) => match self.derivatives_blocked(x, row, ws, jets) {
                        Err(nf) => Err(nf),
                        Ok(()) => Err(NonFinite {
                            op: self.ops.len() - 1,
                            span: self.spans[self.ops.len() - 1],
                            value: f64::NAN,
                            in_derivative: true,
                        }),
                    },
                }
            }
            HessianMethod::Blocked => self.derivatives_blocked(x, row, ws, jets),
            _ => self.derivatives_reverse(x, row, ws, jets),
        }
    }

    /// Forward-over-reverse: for each column j, one forward pass in `Dual64` with
    /// x_j's tangent set, then one reverse sweep per output whose adjoints are `Dual64`
    /// too: the real parts give ∇f, the tangents give column j of ∇²f. Cost ≈ d × (a
    /// few tape passes), against d² for forward second-order duals.
    fn derivatives_reverse(
        &self,
        x: &[f64],
        row: &[f64],
        ws: &mut Workspace,
        jets: &mut Jets,
    ) -> Result<(), NonFinite> {
        let d = self.dim;
        let n = self.ops.len();
        let Workspace {
            rev_x,
            rev_vals,
            rev_adj,
            ..
        } = ws;
        rev_adj.clear();
        rev_adj.resize(n, Dual64::from(0.0));
        for j in 0..d {
            rev_x.clear();
            rev_x.extend(x.iter().chain(row).map(|&v| Dual64::from(v)));
            rev_x[j] = Dual64::new(x[j], 1.0);
            self.eval_into(rev_x, rev_vals)?;
            for (k, &o) in self.outputs.iter().enumerate() {
                let grad = &mut jets.gradients[k * d..(k + 1) * d];
                let hess = &mut jets.hessians[k * d * d..(k + 1) * d * d];
                grad.fill(0.0);
                for i in 0..d {
                    hess[i * d + j] = 0.0;
                }
                self.sweep_dual(o, rev_vals, rev_adj, |i, vbar| {
                    grad[i] += vbar.re;
                    hess[i * d + j] += vbar.eps;
                });
                jets.values[k] = rev_vals[o as usize].re;
            }
        }
        // The Hessian is assembled column by column; symmetrise away round-off.
        jets.symmetrise_hessians();
        let finite = jets
            .gradients
            .iter()
            .chain(&jets.hessians)
            .all(|v| v.is_finite());
        if finite {
            Ok(())
        } else {
            // Locate the culprit with forward mode, which names the first instruction
            // whose value or derivative is not finite.
            match self.derivatives_blocked(x, row, ws, jets) {
                Err(nf) => Err(nf),
                Ok(()) => Err(NonFinite {
                    op: n - 1,
                    span: self.spans[n - 1],
                    value: f64::NAN,
                    in_derivative: true,
                }),
            }
        }
    }

    /// The reverse sweep of output slot `o` with `Dual64` adjoints over the forward
    /// values `vals`: `var(i, adjoint)` receives each variable's adjoint contribution
    /// (real part: ∂F/∂x_i; tangent: (∇²F·v)_i for the tangent v of the forward pass).
    /// Data inputs (i ≥ d) are constants: their adjoints are dropped.
    fn sweep_dual(
        &self,
        o: Slot,
        vals: &[Dual64],
        adj: &mut [Dual64],
        mut var: impl FnMut(usize, Dual64),
    ) {
        adj.iter_mut().for_each(|a| *a = Dual64::from(0.0));
        adj[o as usize] = Dual64::from(1.0);
        for (slot, &op) in self.ops.iter().enumerate().take(o as usize + 1).rev() {
            let vbar = adj[slot];
            if vbar.re == 0.0 && vbar.eps == 0.0 {
                continue;
            }
            if let Op::Var(i) = op {
                let i = i as usize;
                if i < self.dim {
                    var(i, vbar);
                }
                continue;
            }
            adjoint(op, vals, slot, vbar, adj);
        }
    }

    /// A Hessian-vector product by forward-over-reverse: one forward pass in `Dual64`
    /// with the tangent `v` on the variables, then one reverse sweep of output `k` whose
    /// adjoints are `Dual64`. Adds ∇F (the real parts) into `grad` and ∇²F·v (the
    /// tangents) into `hv`, and returns F, for output `k` at `x` with the data inputs
    /// set to `row`. Adding lets a caller sum a finite sum's rows in place. The cost is
    /// a few tape passes, whatever d: the matrix-free form of one column of
    /// [`HessianMethod::Reverse`] (which is this with v = e_j).
    #[allow(clippy::too_many_arguments)]
    pub fn hessian_vector_row(
        &self,
        k: usize,
        x: &[f64],
        row: &[f64],
        v: &[f64],
        ws: &mut Workspace,
        grad: &mut [f64],
        hv: &mut [f64],
    ) -> Result<f64, NonFinite> {
        self.check_inputs(x, row);
        let d = self.dim;
        assert!(
            v.len() == d && grad.len() == d && hv.len() == d,
            "the direction and the outputs have d entries"
        );
        let Workspace {
            rev_x,
            rev_vals,
            rev_adj,
            ..
        } = ws;
        rev_x.clear();
        rev_x.extend(x.iter().zip(v).map(|(&xi, &vi)| Dual64::new(xi, vi)));
        rev_x.extend(row.iter().map(|&c| Dual64::from(c)));
        self.eval_into(rev_x, rev_vals)?;
        rev_adj.clear();
        rev_adj.resize(self.ops.len(), Dual64::from(0.0));
        let o = self.outputs[k];
        let mut finite = true;
        self.sweep_dual(o, rev_vals, rev_adj, |i, vbar| {
            grad[i] += vbar.re;
            hv[i] += vbar.eps;
            finite &= vbar.re.is_finite() && vbar.eps.is_finite();
        });
        if finite {
            Ok(rev_vals[o as usize].re)
        } else {
            // The dense derivatives name the first instruction whose value or
            // derivative is not finite.
            match self.derivatives_row(x, row, &mut Workspace::default(), &mut Jets::default()) {
                Err(nf) => Err(nf),
                Ok(()) => Err(NonFinite {
                    op: self.ops.len() - 1,
                    span: self.spans[self.ops.len() - 1],
                    value: f64::NAN,
                    in_derivative: true,
                }),
            }
        }
    }

    /// Gradients of every output by reverse mode (one forward pass in `f64`, one reverse
    /// sweep per output): values into `jets.values`, gradients into `jets.gradients`;
    /// Hessians are left empty.
    pub fn gradients_with(
        &self,
        x: &[f64],
        ws: &mut Workspace,
        jets: &mut Jets,
    ) -> Result<(), NonFinite> {
        self.gradients_row(x, &[], ws, jets)
    }

    /// [`Tape::gradients_with`] with the data inputs set to `row` (gradients with
    /// respect to the variables only).
    pub fn gradients_row(
        &self,
        x: &[f64],
        row: &[f64],
        ws: &mut Workspace,
        jets: &mut Jets,
    ) -> Result<(), NonFinite> {
        self.check_inputs(x, row);
        let d = self.dim;
        jets.reset_gradients(d, self.outputs.len());
        let Workspace { f, f_adj, f_x, .. } = ws;
        let input: &[f64] = if row.is_empty() {
            x
        } else {
            f_x.clear();
            f_x.extend_from_slice(x);
            f_x.extend_from_slice(row);
            f_x
        };
        self.eval_into(input, f)?;
        f_adj.clear();
        f_adj.resize(self.ops.len(), 0.0);
        for (k, &o) in self.outputs.iter().enumerate() {
            f_adj.iter_mut().for_each(|a| *a = 0.0);
            f_adj[o as usize] = 1.0;
            let grad = &mut jets.gradients[k * d..(k + 1) * d];
            for (slot, &op) in self.ops.iter().enumerate().take(o as usize + 1).rev() {
                let vbar = f_adj[slot];
                if vbar == 0.0 {
                    continue;
                }
                if let Op::Var(i) = op {
                    if (i as usize) < d {
                        grad[i as usize] += vbar;
                    }
                    continue;
                }
                adjoint(op, f, slot, vbar, f_adj);
            }
            jets.values[k] = f[o as usize];
        }
        if jets.gradients.iter().all(|v| v.is_finite()) {
            Ok(())
        } else {
            let mut ws2 = Workspace::default();
            let mut jets2 = Jets::default();
            match self.derivatives_row(x, row, &mut ws2, &mut jets2) {
                Err(nf) => Err(nf),
                Ok(()) => Err(NonFinite {
                    op: self.ops.len() - 1,
                    span: self.spans[self.ops.len() - 1],
                    value: f64::NAN,
                    in_derivative: true,
                }),
            }
        }
    }

    /// Second-order forward mode in one pass with [`Jet<N>`] (all parts in plain
    /// arrays). `Err(())` when an output is not finite: the caller locates the
    /// culprit with a method that names it. Not inlined: a function of its own per
    /// `N` keeps the dispatch loop's registers out of the stack.
    #[inline(never)]
    fn derivatives_static<const N: usize>(
        &self,
        x: &[f64],
        row: &[f64],
        slots: &mut Vec<Jet<N>>,
        jets: &mut Jets,
    ) -> Result<(), ()> {
        if slots.len() != self.ops.len() {
            slots.clear();
            slots.resize(self.ops.len(), Jet::constant(0.0));
        }
        for (k, &op) in self.ops.iter().enumerate() {
            let (done, rest) = slots.split_at_mut(k);
            jet_step(op, done, x, row, &mut rest[0]);
        }
        for (k, &o) in self.outputs.iter().enumerate() {
            let s = &slots[o as usize];
            if !s.all_finite() {
                return Err(());
            }
            jets.values[k] = s.re;
            jets.gradients[k * N..(k + 1) * N].copy_from_slice(&s.g);
            let hess = &mut jets.hessians[k * N * N..(k + 1) * N * N];
            for (i, r) in s.h.iter().enumerate() {
                hess[i * N..(i + 1) * N].copy_from_slice(r);
            }
        }
        Ok(())
    }

    /// Hessian by 8×8 blocks: directions of block `I` in `eps1`, of block `J` in
    /// `eps2`; `eps1eps2` is the block `H[I, J]`. Blocks on or above the diagonal only.
    fn derivatives_blocked(
        &self,
        x: &[f64],
        row: &[f64],
        ws: &mut Workspace,
        jets: &mut Jets,
    ) -> Result<(), NonFinite> {
        let d = self.dim;
        if d == 0 {
            let mut slots = std::mem::take(&mut ws.f);
            let r = self.eval_into(row, &mut slots);
            for (k, &o) in self.outputs.iter().enumerate() {
                if r.is_ok() {
                    jets.values[k] = slots[o as usize];
                }
            }
            ws.f = slots;
            return r;
        }
        // Parts that are absent (a constant output) are zeros.
        jets.gradients.fill(0.0);
        jets.hessians.fill(0.0);
        let blocks = d.div_ceil(8);
        let (xs, slots) = (&mut ws.block_x, &mut ws.block);
        for bi in 0..blocks {
            for bj in bi..blocks {
                xs.clear();
                for (k, &xk) in x.iter().enumerate() {
                    let mut v = Block::from_re(xk);
                    if k / 8 == bi {
                        v.eps1 = Derivative::derivative_generic(U8, U1, k % 8);
                    }
                    if k / 8 == bj {
                        v.eps2 = Derivative::derivative_generic(U1, U8, k % 8);
                    }
                    xs.push(v);
                }
                xs.extend(row.iter().map(|&c| Block::from_re(c)));
                self.eval_into(xs, slots)?;
                for (k, &o) in self.outputs.iter().enumerate() {
                    let s = &slots[o as usize];
                    jets.values[k] = s.re;
                    let grad = &mut jets.gradients[k * d..(k + 1) * d];
                    if let Some(e1) = &s.eps1.0 {
                        for a in 0..8.min(d - bi * 8) {
                            grad[bi * 8 + a] = e1[a];
                        }
                    }
                    if let Some(e2) = &s.eps2.0 {
                        for a in 0..8.min(d - bj * 8) {
                            grad[bj * 8 + a] = e2[a];
                        }
                    }
                    if let Some(h) = &s.eps1eps2.0 {
                        let hess = &mut jets.hessians[k * d * d..(k + 1) * d * d];
                        for a in 0..8.min(d - bi * 8) {
                            for b in 0..8.min(d - bj * 8) {
                                let (i, j) = (bi * 8 + a, bj * 8 + b);
                                hess[i * d + j] = h[(a, b)];
                                hess[j * d + i] = h[(a, b)];
                            }
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

/// Reusable evaluation buffers, one per number type, so repeated derivative calls
/// allocate nothing.
#[derive(Clone, Debug, Default)]
pub struct Workspace {
    // Slots of the one-pass second-order forward mode, per static size.
    s1: Vec<Jet<1>>,
    s2: Vec<Jet<2>>,
    s3: Vec<Jet<3>>,
    s4: Vec<Jet<4>>,
    s5: Vec<Jet<5>>,
    s6: Vec<Jet<6>>,
    s7: Vec<Jet<7>>,
    s8: Vec<Jet<8>>,
    block: Vec<Block>,
    block_x: Vec<Block>,
    f: Vec<f64>,
    f_adj: Vec<f64>,
    f_x: Vec<f64>,
    /// Running sums of [`Tape::mean_derivatives_with`].
    acc: Option<Box<Jets>>,
    /// Scratch for callers that accumulate over rows (e.g. a finite sum's gradient).
    pub(crate) scratch: Vec<f64>,
    rev_x: Vec<Dual64>,
    rev_vals: Vec<Dual64>,
    rev_adj: Vec<Dual64>,
    /// Buffers of the evaluation over blocks of rows.
    pub(crate) rows: RowsWorkspace,
}

/// Largest dimension for which `Auto` uses one pass of fixed-size [`Jet`]s (the
/// largest compiled). Measured (`cargo bench --bench derivatives`): jets are 4.5×
/// faster than forward-over-reverse on the 2-variable saddle and 3.2× faster on the
/// 8-variable chained Rosenbrock (1.8 µs against 5.8 µs).
pub const STATIC_MAX_DIM: usize = 8;

/// How [`Tape::derivatives_by`] computes Hessians.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HessianMethod {
    /// One pass of [`Jet`]s for d ≤ [`STATIC_MAX_DIM`], forward-over-reverse above.
    Auto,
    /// One pass of second-order forward mode with [`Jet<d>`] (d ≤ 8).
    Static,
    /// 8×8 blocks with `HyperDualVec64<U8, U8>`: (d/8)(d/8 + 1)/2 passes.
    Blocked,
    /// Forward-over-reverse with `Dual64`: d forward passes and d reverse sweeps.
    Reverse,
}

/// Accumulates the adjoint `vbar` of instruction `slot` into its operands' adjoints.
/// `v` holds the forward values. The local partial derivatives are written from the
/// forward results where that is cheaper (`exp` reuses its value, `tanh` uses 1 − v²).
#[inline]
fn adjoint<D: DualNum<Primitive = f64> + Copy>(
    op: Op,
    v: &[D],
    slot: usize,
    vbar: D,
    adj: &mut [D],
) {
    let out = v[slot];
    let at = |i: Slot| v[i as usize];
    match op {
        Op::Var(_) | Op::Const(_) => {}
        Op::Add(a, b) => {
            adj[a as usize] += vbar;
            adj[b as usize] += vbar;
        }
        Op::Sub(a, b) => {
            adj[a as usize] += vbar;
            adj[b as usize] -= vbar;
        }
        Op::AddScaled(a, b, c) => {
            adj[a as usize] += vbar;
            adj[b as usize] += vbar * c;
        }
        Op::Mul(a, b) => {
            let (xa, xb) = (at(a), at(b));
            adj[a as usize] += vbar * xb;
            adj[b as usize] += vbar * xa;
        }
        Op::Div(a, b) => {
            let xb = at(b);
            adj[a as usize] += vbar / xb;
            adj[b as usize] -= vbar * out / xb;
        }
        Op::Pow(a, b) => {
            let (xa, xb) = (at(a), at(b));
            adj[a as usize] += vbar * xb * out / xa;
            adj[b as usize] += vbar * out * xa.ln();
        }
        Op::AddConst(a, _) => adj[a as usize] += vbar,
        Op::ConstSub(_, a) | Op::Neg(a) => adj[a as usize] -= vbar,
        Op::MulConst(a, c) => adj[a as usize] += vbar * c,
        Op::DivConst(a, c) => adj[a as usize] += vbar / c,
        Op::ConstDiv(_, a) => adj[a as usize] -= vbar * out / at(a),
        Op::PowI(a, n) => {
            if n != 0 {
                adj[a as usize] += vbar * at(a).powi(n - 1) * f64::from(n);
            }
        }
        Op::PowF(a, c) => adj[a as usize] += vbar * powf(&at(a), c - 1.0) * c,
        Op::ConstPow(c, a) => adj[a as usize] += vbar * out * c.ln(),
        Op::Func(f, a) => adj[a as usize] += vbar * f.derivative(&at(a), &out),
        Op::Max(a, b) => {
            let first = max_takes_first(at(a).re(), at(b).re());
            adj[if first { a } else { b } as usize] += vbar;
        }
        Op::Min(a, b) => {
            let first = min_takes_first(at(a).re(), at(b).re());
            adj[if first { a } else { b } as usize] += vbar;
        }
    }
}

/// Values, gradients and Hessians of every output of a tape at one point, in flat
/// buffers (gradients `k·d + i`, Hessians row-major `k·d² + i·d + j`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Jets {
    dim: usize,
    /// Output values.
    pub values: Vec<f64>,
    /// Gradients, output after output.
    pub gradients: Vec<f64>,
    /// Hessians, output after output, each row-major.
    pub hessians: Vec<f64>,
}

impl Jets {
    /// Values and gradients of `outputs` outputs over `dim` variables, zeroed, and no
    /// Hessians: what the reverse-mode gradients fill.
    pub(crate) fn reset_gradients(&mut self, dim: usize, outputs: usize) {
        self.dim = dim;
        self.values.clear();
        self.values.resize(outputs, 0.0);
        self.gradients.clear();
        self.gradients.resize(outputs * dim, 0.0);
        self.hessians.clear();
    }

    /// Each Hessian replaced by the mean of itself and its transpose: a Hessian
    /// assembled column by column, symmetric up to round-off, made exactly symmetric.
    fn symmetrise_hessians(&mut self) {
        let d = self.dim;
        if d == 0 {
            return;
        }
        for hess in self.hessians.chunks_exact_mut(d * d) {
            for i in 0..d {
                for j in i + 1..d {
                    let m = 0.5 * (hess[i * d + j] + hess[j * d + i]);
                    hess[i * d + j] = m;
                    hess[j * d + i] = m;
                }
            }
        }
    }

    /// Sizes the buffers for `outputs` outputs over `dim` variables, keeping their
    /// contents when the sizes are already right.
    fn ensure(&mut self, dim: usize, outputs: usize) {
        if self.dim != dim
            || self.values.len() != outputs
            || self.gradients.len() != outputs * dim
            || self.hessians.len() != outputs * dim * dim
        {
            self.reset(dim, outputs);
        }
    }

    fn reset(&mut self, dim: usize, outputs: usize) {
        self.dim = dim;
        self.values.clear();
        self.values.resize(outputs, 0.0);
        self.gradients.clear();
        self.gradients.resize(outputs * dim, 0.0);
        self.hessians.clear();
        self.hessians.resize(outputs * dim * dim, 0.0);
    }

    /// Gradient of output `k`.
    pub fn gradient(&self, k: usize) -> &[f64] {
        &self.gradients[k * self.dim..(k + 1) * self.dim]
    }

    /// Hessian of output `k`, row-major.
    pub fn hessian(&self, k: usize) -> &[f64] {
        let d2 = self.dim * self.dim;
        &self.hessians[k * d2..(k + 1) * d2]
    }

    /// Output `k` as owned matrices.
    pub fn derivs(&self, k: usize) -> Derivs {
        Derivs {
            value: self.values[k],
            gradient: DVector::from_column_slice(self.gradient(k)),
            hessian: DMatrix::from_row_slice(self.dim, self.dim, self.hessian(k)),
        }
    }
}

/// A compile-time value: a folded constant or a slot.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Val {
    /// Known at compile time.
    Const(f64),
    /// Computed at evaluation time.
    Slot(Slot),
}

impl Val {
    /// The constant, if it is one.
    pub fn as_const(self) -> Option<f64> {
        match self {
            Val::Const(c) => Some(c),
            Val::Slot(_) => None,
        }
    }
}

/// Builds a [`Tape`]: constant folding, hash-consing, dead-code elimination.
///
/// Every constructor returns `Err(value)` when a folded constant is not finite, so the
/// caller can point at the expression at fault.
#[derive(Debug)]
pub struct TapeBuilder {
    dim: usize,
    data: usize,
    ops: Vec<Op>,
    spans: Vec<Span>,
    cache: HashMap<(u8, u64, u64), Slot>,
}

impl TapeBuilder {
    /// A builder over `dim` variables.
    pub fn new(dim: usize) -> TapeBuilder {
        TapeBuilder::with_data(dim, 0)
    }

    /// A builder over `dim` variables and `data` data inputs (the columns of one row of
    /// a data table, read by [`TapeBuilder::column`]).
    pub fn with_data(dim: usize, data: usize) -> TapeBuilder {
        TapeBuilder {
            dim,
            data,
            ops: Vec::new(),
            spans: Vec::new(),
            cache: HashMap::new(),
        }
    }

    fn emit(&mut self, op: Op, span: Span) -> Val {
        Val::Slot(self.emit_slot(op, span))
    }

    fn emit_slot(&mut self, op: Op, span: Span) -> Slot {
        let key = op.key();
        if let Some(&s) = self.cache.get(&key) {
            return s;
        }
        let s = self.ops.len() as Slot;
        self.ops.push(op);
        self.spans.push(span);
        self.cache.insert(key, s);
        s
    }

    /// The slot holding `v` (a constant gets an `Op::Const` slot).
    fn slot_of(&mut self, v: Val, span: Span) -> Slot {
        match v {
            Val::Slot(s) => s,
            Val::Const(c) => self.emit_slot(Op::Const(c), span),
        }
    }

    fn fold(c: f64) -> Result<Val, f64> {
        if c.is_finite() {
            Ok(Val::Const(c))
        } else {
            Err(c)
        }
    }

    /// Coordinate `i`.
    pub fn var(&mut self, i: usize, span: Span) -> Val {
        self.emit(Op::Var(i as u32), span)
    }

    /// Data input `j` (a column of the current row); the tape's data inputs grow to
    /// hold it (a column first read while compiling, e.g. `d.x[i]` in a loop).
    pub fn column(&mut self, j: usize, span: Span) -> Val {
        self.data = self.data.max(j + 1);
        self.emit(Op::Var((self.dim + j) as u32), span)
    }

    /// `a + b`
    pub fn add(&mut self, a: Val, b: Val, span: Span) -> Result<Val, f64> {
        Ok(match (a, b) {
            (Val::Const(x), Val::Const(y)) => return Self::fold(x + y),
            (Val::Slot(s), Val::Const(c)) | (Val::Const(c), Val::Slot(s)) => {
                if c == 0.0 {
                    Val::Slot(s)
                } else {
                    self.emit(Op::AddConst(s, c), span)
                }
            }
            (Val::Slot(x), Val::Slot(y)) => match (self.scaled(x), self.scaled(y)) {
                (_, Some((y0, c))) => self.emit(Op::AddScaled(x, y0, c), span),
                (Some((x0, c)), None) => self.emit(Op::AddScaled(y, x0, c), span),
                (None, None) => self.emit(Op::Add(x, y), span),
            },
        })
    }

    /// `(b, c)` when slot `s` is `b·c` for a constant `c`: fused into a following
    /// addition or subtraction.
    fn scaled(&self, s: Slot) -> Option<(Slot, f64)> {
        match self.ops[s as usize] {
            Op::MulConst(b, c) => Some((b, c)),
            _ => None,
        }
    }

    /// `a − b`
    pub fn sub(&mut self, a: Val, b: Val, span: Span) -> Result<Val, f64> {
        Ok(match (a, b) {
            (Val::Const(x), Val::Const(y)) => return Self::fold(x - y),
            (Val::Slot(s), Val::Const(c)) => {
                if c == 0.0 {
                    Val::Slot(s)
                } else {
                    self.emit(Op::AddConst(s, -c), span)
                }
            }
            (Val::Const(c), Val::Slot(s)) => self.emit(Op::ConstSub(c, s), span),
            (Val::Slot(x), Val::Slot(y)) => match self.scaled(y) {
                Some((y0, c)) => self.emit(Op::AddScaled(x, y0, -c), span),
                None => self.emit(Op::Sub(x, y), span),
            },
        })
    }

    /// `a · b`
    pub fn mul(&mut self, a: Val, b: Val, span: Span) -> Result<Val, f64> {
        Ok(match (a, b) {
            (Val::Const(x), Val::Const(y)) => return Self::fold(x * y),
            (Val::Slot(s), Val::Const(c)) | (Val::Const(c), Val::Slot(s)) => {
                if c == 1.0 {
                    Val::Slot(s)
                } else {
                    self.emit(Op::MulConst(s, c), span)
                }
            }
            (Val::Slot(x), Val::Slot(y)) => self.emit(Op::Mul(x, y), span),
        })
    }

    /// `a / b`
    pub fn div(&mut self, a: Val, b: Val, span: Span) -> Result<Val, f64> {
        Ok(match (a, b) {
            (Val::Const(x), Val::Const(y)) => return Self::fold(x / y),
            (Val::Slot(s), Val::Const(c)) => {
                if c == 0.0 {
                    return Err(f64::INFINITY);
                }
                if c == 1.0 {
                    Val::Slot(s)
                } else {
                    self.emit(Op::DivConst(s, c), span)
                }
            }
            (Val::Const(c), Val::Slot(s)) => self.emit(Op::ConstDiv(c, s), span),
            (Val::Slot(x), Val::Slot(y)) => self.emit(Op::Div(x, y), span),
        })
    }

    /// `−a`
    pub fn neg(&mut self, a: Val, span: Span) -> Result<Val, f64> {
        Ok(match a {
            Val::Const(c) => Val::Const(-c),
            Val::Slot(s) => self.emit(Op::Neg(s), span),
        })
    }

    /// `a^b`. A constant exponent with an integer value is an exact integer power.
    pub fn pow(&mut self, a: Val, b: Val, span: Span) -> Result<Val, f64> {
        Ok(match (a, b) {
            (Val::Const(x), Val::Const(y)) => {
                return Self::fold(match integer_exponent(y) {
                    Some(n) => x.powi(n),
                    None => x.powf(y),
                });
            }
            (Val::Slot(s), Val::Const(c)) => match integer_exponent(c) {
                Some(1) => Val::Slot(s),
                Some(n) => self.emit(Op::PowI(s, n), span),
                None => self.emit(Op::PowF(s, c), span),
            },
            (Val::Const(c), Val::Slot(s)) => {
                if c <= 0.0 {
                    // c^x for c ≤ 0 is undefined for most x: say so now, not at run time.
                    return Err(f64::NAN);
                }
                self.emit(Op::ConstPow(c, s), span)
            }
            (Val::Slot(x), Val::Slot(y)) => self.emit(Op::Pow(x, y), span),
        })
    }

    /// `f(a)`
    pub fn func(&mut self, f: Func, a: Val, span: Span) -> Result<Val, f64> {
        Ok(match a {
            Val::Const(c) => return Self::fold(f.apply(&c)),
            Val::Slot(s) => self.emit(Op::Func(f, s), span),
        })
    }

    /// `max(a, b)`; a tie takes `a` ([`max_takes_first`]). A constant operand beside a
    /// slot gets a slot of its own.
    pub fn max(&mut self, a: Val, b: Val, span: Span) -> Result<Val, f64> {
        self.select(a, b, span, max_takes_first, Op::Max)
    }

    /// `min(a, b)`; a tie takes `a` ([`min_takes_first`]).
    pub fn min(&mut self, a: Val, b: Val, span: Span) -> Result<Val, f64> {
        self.select(a, b, span, min_takes_first, Op::Min)
    }

    fn select(
        &mut self,
        a: Val,
        b: Val,
        span: Span,
        first: fn(f64, f64) -> bool,
        op: fn(Slot, Slot) -> Op,
    ) -> Result<Val, f64> {
        if let (Val::Const(x), Val::Const(y)) = (a, b) {
            return Self::fold(if first(x, y) { x } else { y });
        }
        let (x, y) = (self.slot_of(a, span), self.slot_of(b, span));
        Ok(self.emit(op(x, y), span))
    }

    /// Finishes with the given outputs, keeping only the instructions they need.
    pub fn finish(mut self, outputs: &[(Val, Span)]) -> Tape {
        let mut out_slots = Vec::with_capacity(outputs.len());
        for &(v, span) in outputs {
            let s = self.slot_of(v, span);
            out_slots.push(s);
        }
        // Dead-code elimination: operands always precede users, so one backward pass.
        let n = self.ops.len();
        let mut live = vec![false; n];
        for &s in &out_slots {
            live[s as usize] = true;
        }
        for k in (0..n).rev() {
            if live[k] {
                for o in self.ops[k].operands().into_iter().flatten() {
                    live[o as usize] = true;
                }
            }
        }
        let mut map = vec![0; n];
        let mut ops = Vec::new();
        let mut spans = Vec::new();
        for k in 0..n {
            if live[k] {
                map[k] = ops.len() as Slot;
                let mut op = self.ops[k];
                op.remap(&map);
                ops.push(op);
                spans.push(self.spans[k]);
            }
        }
        let outputs: Vec<Slot> = out_slots.iter().map(|&s| map[s as usize]).collect();
        Tape {
            dim: self.dim,
            data: self.data,
            block: Box::new(rows::BlockProgram::new(self.dim, &ops, &outputs)),
            ops,
            spans,
            outputs,
        }
    }
}

/// The exponent as an `i32` when it is an integer in range (exact integer power).
pub fn integer_exponent(c: f64) -> Option<i32> {
    (c.fract() == 0.0 && c.abs() <= 1024.0).then_some(c as i32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sp() -> Span {
        Span::default()
    }

    #[test]
    fn folds_constants_and_shares_repeats() {
        let mut b = TapeBuilder::new(1);
        let x = b.var(0, sp());
        let two = b.add(Val::Const(1.0), Val::Const(1.0), sp()).unwrap();
        assert_eq!(two, Val::Const(2.0));
        let a = b.pow(x, two, sp()).unwrap();
        let a2 = b.pow(x, two, sp()).unwrap();
        assert_eq!(a, a2);
        let sum = b.add(a, a2, sp()).unwrap();
        let tape = b.finish(&[(sum, sp())]);
        assert_eq!(tape.len(), 3); // x, x^2, x^2 + x^2
        let d = tape.derivatives(&[3.0]).unwrap();
        assert_eq!(d[0].value, 18.0);
        assert_eq!(d[0].gradient[0], 12.0);
        assert_eq!(d[0].hessian[(0, 0)], 4.0);
    }

    #[test]
    fn drops_dead_code() {
        let mut b = TapeBuilder::new(2);
        let x = b.var(0, sp());
        let y = b.var(1, sp());
        let _unused = b.func(Func::Exp, y, sp()).unwrap();
        let t = b.finish(&[(x, sp())]);
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn non_finite_constant_is_refused() {
        let mut b = TapeBuilder::new(0);
        assert!(b.func(Func::Log, Val::Const(-1.0), sp()).is_err());
        assert!(b.div(Val::Const(1.0), Val::Const(0.0), sp()).is_err());
    }

    #[test]
    fn blocked_hessian_matches_static() {
        // f = Σ_i x_i^2 x_{i+1} + exp(x_0 x_{n-1}), dimension 3 and 11 (blocked path).
        for d in [3usize, 11] {
            let mut b = TapeBuilder::new(d);
            let xs: Vec<Val> = (0..d).map(|i| b.var(i, sp())).collect();
            let mut acc = Val::Const(0.0);
            for i in 0..d - 1 {
                let sq = b.pow(xs[i], Val::Const(2.0), sp()).unwrap();
                let t = b.mul(sq, xs[i + 1], sp()).unwrap();
                acc = b.add(acc, t, sp()).unwrap();
            }
            let p = b.mul(xs[0], xs[d - 1], sp()).unwrap();
            let e = b.func(Func::Exp, p, sp()).unwrap();
            acc = b.add(acc, e, sp()).unwrap();
            let tape = b.finish(&[(acc, sp())]);
            let x: Vec<f64> = (0..d).map(|i| 0.1 * (i as f64) - 0.3).collect();
            let got = &tape.derivatives(&x).unwrap()[0];
            // Hand-derived Hessian.
            let mut h = DMatrix::zeros(d, d);
            for i in 0..d - 1 {
                h[(i, i)] += 2.0 * x[i + 1];
                h[(i, i + 1)] += 2.0 * x[i];
                h[(i + 1, i)] += 2.0 * x[i];
            }
            let ex = (x[0] * x[d - 1]).exp();
            h[(0, 0)] += x[d - 1] * x[d - 1] * ex;
            h[(d - 1, d - 1)] += x[0] * x[0] * ex;
            h[(0, d - 1)] += ex + x[0] * x[d - 1] * ex;
            h[(d - 1, 0)] += ex + x[0] * x[d - 1] * ex;
            // 1e-14: a few roundings of O(1) quantities.
            assert!((&got.hessian - &h).abs().max() < 1e-14, "d = {d}");
        }
    }

    /// Every instruction kind and every function, so each adjoint rule is checked
    /// against forward-mode duals.
    const EVERY_OP: &str = "exp(0.3*x1) + log(2 + x2) + sqrt(1 + x3^2) + sin(x1*x2) + cos(x3) \
        + tan(0.2*x1) + tanh(x2) + sinh(0.5*x3) + cosh(0.5*x1) + atan(x2*x3) + sigmoid(x1 - x3) \
        + softplus(x2) + log1p(x3^2) + expm1(0.1*x1) + abs(x2 - 3) + (1 + x1^2)^x2 \
        + (2 + x3)^0.7 + 3^x1 + x1/(2 + x2^2) + 1/(3 + x3) + x2/4 - x1 - (5 - x3) + x1^-2 * 0.01 \
        + pow(2 + x2, 1.5) + max(x1, x2^2) + min(x3, 0.5*x1) + relu(x2 - 0.1) \
        + logsumexp(k = 1..3, k*x1 - x3^2)";

    fn all_methods_agree(text: &str, x: &[f64]) {
        let p = crate::Problem::from_str(text).unwrap();
        let tape = p.objective_tape();
        let mut ws = Workspace::default();
        let mut reference = Jets::default();
        let first = if x.len() <= 8 {
            HessianMethod::Static
        } else {
            HessianMethod::Blocked
        };
        tape.derivatives_by(first, x, &mut ws, &mut reference)
            .unwrap();
        for method in [HessianMethod::Blocked, HessianMethod::Reverse] {
            let mut jets = Jets::default();
            tape.derivatives_by(method, x, &mut ws, &mut jets).unwrap();
            let scale = reference
                .hessians
                .iter()
                .fold(1.0f64, |m, v| m.max(v.abs()));
            // 1e-12 relative: the methods apply the same chain rule in different orders.
            for (a, b) in jets.gradients.iter().zip(&reference.gradients) {
                assert!((a - b).abs() <= 1e-12 * scale, "{method:?}: {a} vs {b}");
            }
            for (a, b) in jets.hessians.iter().zip(&reference.hessians) {
                assert!((a - b).abs() <= 1e-12 * scale, "{method:?}: {a} vs {b}");
            }
            assert_eq!(jets.values, reference.values);
        }
        let mut g = Jets::default();
        tape.gradients_with(x, &mut ws, &mut g).unwrap();
        for (a, b) in g.gradients.iter().zip(&reference.gradients) {
            assert!(
                (a - b).abs() <= 1e-12 * (1.0 + b.abs()),
                "gradient: {a} vs {b}"
            );
        }
    }

    #[test]
    fn reverse_blocked_and_static_agree_on_every_op() {
        let text = format!("var x1, x2, x3\nminimize {EVERY_OP}");
        let p = crate::Problem::from_str(&text).unwrap();
        let ops = p.objective_tape().ops();
        assert!(
            ops.iter().any(|op| matches!(op, Op::AddScaled(..))),
            "`… + x1^-2 * 0.01` fuses into a scaled addition"
        );
        all_methods_agree(&text, &[0.3, -0.4, 0.8]);
        all_methods_agree(&text, &[-1.1, 0.9, -0.2]);
    }

    #[test]
    fn reverse_and_blocked_agree_above_eight_variables() {
        // Eleven variables: the three of EVERY_OP coupled to a chain of eight more.
        let chain: Vec<String> = (4..=11)
            .map(|i| format!("x{i}^2*x{} + sin(x{i})", i - 1))
            .collect();
        let vars: Vec<String> = (1..=11).map(|i| format!("x{i}")).collect();
        let text = format!(
            "var {}\nminimize {EVERY_OP} + {}",
            vars.join(", "),
            chain.join(" + ")
        );
        let x: Vec<f64> = (0..11).map(|i| 0.1 * i as f64 - 0.45).collect();
        all_methods_agree(&text, &x);
    }

    /// A Hessian-vector product equals the dense Hessian (forward-over-reverse, column
    /// by column) times the vector, on every op at 3 and 11 variables.
    #[test]
    fn hessian_vector_products_match_the_dense_hessian() {
        let chain: Vec<String> = (4..=11)
            .map(|i| format!("x{i}^2*x{} + sin(x{i})", i - 1))
            .collect();
        let vars: Vec<String> = (1..=11).map(|i| format!("x{i}")).collect();
        let texts = [
            format!("var x1, x2, x3\nminimize {EVERY_OP}"),
            format!(
                "var {}\nminimize {EVERY_OP} + {}",
                vars.join(", "),
                chain.join(" + ")
            ),
        ];
        for text in &texts {
            let p = crate::Problem::from_str(text).unwrap();
            let tape = p.objective_tape();
            let d = tape.dim();
            let x: Vec<f64> = (0..d).map(|i| 0.1 * i as f64 - 0.45).collect();
            let mut ws = Workspace::default();
            let mut dense = Jets::default();
            tape.derivatives_by(HessianMethod::Reverse, &x, &mut ws, &mut dense)
                .unwrap();
            let h = dense.hessian(0);
            for seed in 0..4 {
                let v: Vec<f64> = (0..d)
                    .map(|i| ((i * 7 + seed * 3) as f64 * 0.37).sin())
                    .collect();
                let (mut g, mut hv) = (vec![0.0; d], vec![0.0; d]);
                let f = tape
                    .hessian_vector_row(0, &x, &[], &v, &mut ws, &mut g, &mut hv)
                    .unwrap();
                assert_eq!(f, dense.values[0]);
                let scale = h.iter().fold(1.0f64, |m, a| m.max(a.abs()));
                for i in 0..d {
                    let want: f64 = (0..d).map(|j| h[i * d + j] * v[j]).sum();
                    // 1e-12 relative: the same chain rule, summed in another order.
                    assert!((hv[i] - want).abs() <= 1e-12 * scale * d as f64, "{hv:?}");
                    assert!((g[i] - dense.gradient(0)[i]).abs() <= 1e-12 * scale);
                }
            }
        }
    }

    /// `max` and `min` pass the chosen operand through whole, a tie taking the first,
    /// in every method; `relu` has derivative 0 at 0.
    #[test]
    fn max_min_and_relu_take_the_documented_side_at_kinks() {
        // At x = y = 1: max(x, 2y − 1) and min(x, 2y − 1) tie and take x; the swapped
        // max takes 2y − 1; relu(x − 1) sits at its kink.
        let text = "var x, y\nminimize max(x, 2*y - 1) + 10*min(x, 2*y - 1) \
            + 100*max(2*y - 1, x) + 1000*relu(x - 1) + max(x^2, 0)*y";
        let p = crate::Problem::from_str(text).unwrap();
        let tape = p.objective_tape();
        let want_gradient = [1.0 + 10.0 + 2.0, 200.0 + 1.0];
        for method in [
            HessianMethod::Static,
            HessianMethod::Blocked,
            HessianMethod::Reverse,
        ] {
            let mut jets = Jets::default();
            tape.derivatives_by(method, &[1.0, 1.0], &mut Workspace::default(), &mut jets)
                .unwrap();
            assert_eq!(jets.values[0], 1.0 + 10.0 + 100.0 + 0.0 + 1.0, "{method:?}");
            assert_eq!(jets.gradient(0), want_gradient, "{method:?}");
            // ∂²(x²y) only: 2y, 2x, 2x, 0.
            assert_eq!(jets.hessian(0), [2.0, 2.0, 2.0, 0.0], "{method:?}");
        }
        let mut g = Jets::default();
        tape.gradients_with(&[1.0, 1.0], &mut Workspace::default(), &mut g)
            .unwrap();
        assert_eq!(g.gradient(0), want_gradient);
        // Away from the kinks each is the smooth piece it picks.
        let d = &tape.derivatives(&[2.0, 0.5]).unwrap()[0];
        assert_eq!(
            d.gradient.as_slice(),
            [1.0 + 0.0 + 100.0 + 1000.0 + 4.0 * 0.5, 20.0 + 4.0]
        );
    }

    #[test]
    fn max_and_min_fold_constants_and_keep_a_nan() {
        let mut b = TapeBuilder::new(1);
        assert_eq!(
            b.max(Val::Const(2.0), Val::Const(3.0), sp()),
            Ok(Val::Const(3.0))
        );
        assert_eq!(
            b.min(Val::Const(2.0), Val::Const(3.0), sp()),
            Ok(Val::Const(2.0))
        );
        assert!(max_takes_first(f64::NAN, 1.0) && !max_takes_first(1.0, f64::NAN));
        assert!(min_takes_first(f64::NAN, 1.0) && !min_takes_first(1.0, f64::NAN));
        // A NaN operand reaches the output, so evaluation reports it.
        let x = b.var(0, sp());
        let l = b.func(Func::Log, x, sp()).unwrap();
        let m = b.max(Val::Const(0.0), l, sp()).unwrap();
        let tape = b.finish(&[(m, sp())]);
        assert!(tape.values(&[-1.0]).is_err());
        assert_eq!(tape.values(&[1.0]).unwrap(), [0.0]);
    }

    #[test]
    fn reverse_mode_reports_non_finite_derivatives() {
        let p = crate::Problem::from_str(
            "var x1, x2, x3, x4, x5, x6, x7, x8, x9\nminimize sqrt(x1) + x9^2",
        )
        .unwrap();
        let err = p
            .objective_tape()
            .derivatives_by(
                HessianMethod::Reverse,
                &[0.0; 9],
                &mut Workspace::default(),
                &mut Jets::default(),
            )
            .unwrap_err();
        assert!(err.in_derivative);
    }
}
