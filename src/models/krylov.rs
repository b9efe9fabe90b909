//! Krylov methods on a symmetric operator given only by its products `v ↦ Av` (a
//! Hessian-vector product, docs/models.md §7): no d×d matrix is formed.
//!
//! * [`Lanczos`]: the Lanczos process with full reorthogonalisation. After k steps from
//!   a start vector v, `A V_k = V_k T_k + β_k q_{k+1} e_kᵀ` with `V_k` orthonormal and
//!   `T_k` tridiagonal. Its Ritz values (the eigenvalues θ_i of `T_k`) come with the
//!   residual bounds `‖A y_i − θ_i y_i‖ = β_k |s_{k,i}|` (`s_{k,i}` the last entry of
//!   T_k's eigenvector): an eigenvalue of A lies within the bound of each θ_i (for a
//!   symmetric A), and the extreme ones converge first. `‖v‖ V_k f(T_k) e_1` approximates
//!   `f(A) v` ([`Lanczos::function_times_start`]), which the matrix-free model
//!   coefficients need.
//! * [`minres`]: MINRES (Paige and Saunders, 1975), the solution of `Ax = b` for a
//!   symmetric, possibly indefinite or singular A that minimises `‖b − Ax‖` over the
//!   growing Krylov space, by short recurrences.
//!
//! Both take the operator as a closure that may fail (a non-finite product is an error
//! of the caller's kind), and both work in plain slices.
//!
//! Full reorthogonalisation (classical Gram–Schmidt applied twice, against every
//! earlier vector) costs O(dk) per step but keeps `V_k` orthonormal to round-off, so
//! no Ritz value is found twice (a "ghost") and the bounds hold as stated.

use nalgebra::{DMatrix, SymmetricEigen};

/// The Krylov space is invariant (the next vector would be zero) when the new residual
/// is below this fraction of the largest coefficient seen: after reorthogonalisation its
/// round-off is a few ε·‖A‖·√k, far below 1e−12·‖A‖ for any k this code runs.
const BREAKDOWN: f64 = 1e-12;

/// A Ritz value of a Lanczos run: an approximate eigenvalue of A and the bound on its
/// distance to the nearest true eigenvalue.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Ritz {
    /// θ, an eigenvalue of T_k.
    pub value: f64,
    /// `β_k |s_{k,i}|` = ‖Ay − θy‖ for the Ritz vector y: some eigenvalue of A lies
    /// in `[θ − bound, θ + bound]`.
    pub bound: f64,
}

/// The Lanczos process on a symmetric operator, one product per [`Lanczos::step`].
///
/// ```
/// use hasme::models::krylov::Lanczos;
/// // A = diag(1, 2, …, 6): the Krylov space of a full start vector is the whole space.
/// let apply = |v: &[f64], out: &mut [f64]| {
///     for (i, (o, x)) in out.iter_mut().zip(v).enumerate() {
///         *o = (i + 1) as f64 * x;
///     }
///     Ok::<(), ()>(())
/// };
/// let mut l = Lanczos::new(&[1.0; 6]);
/// while l.step(apply)? {}
/// let ritz = l.ritz();
/// assert_eq!(l.steps(), 6);
/// assert!((ritz[0].value - 1.0).abs() < 1e-12 && (ritz[5].value - 6.0).abs() < 1e-12);
/// # Ok::<(), ()>(())
/// ```
#[derive(Clone, Debug)]
pub struct Lanczos {
    /// ‖v‖ of the start vector.
    norm: f64,
    /// The orthonormal basis q_1 … q_k.
    basis: Vec<Vec<f64>>,
    /// Diagonal α_1 … α_k of T_k.
    alpha: Vec<f64>,
    /// β_1 … β_k: β_j couples q_j and q_{j+1}; β_k is the last residual's norm.
    beta: Vec<f64>,
    /// The next vector q_{k+1} (normalised), when the space has not closed.
    next: Option<Vec<f64>>,
    /// Largest |α| or β seen: the scale of A for the breakdown test.
    scale: f64,
    /// Whether the last residual vanished (the Krylov space is invariant under A).
    invariant: bool,
}

impl Lanczos {
    /// A Lanczos run from `start` (any nonzero vector; a zero vector gives an empty,
    /// finished run).
    pub fn new(start: &[f64]) -> Lanczos {
        let norm = dot(start, start).sqrt();
        let next =
            (norm > 0.0 && norm.is_finite()).then(|| start.iter().map(|x| x / norm).collect());
        Lanczos {
            norm,
            basis: Vec::new(),
            alpha: Vec::new(),
            beta: Vec::new(),
            next,
            scale: 0.0,
            invariant: false,
        }
    }

    /// One step: one product with A, then full reorthogonalisation. Returns whether
    /// another step can follow (false once the Krylov space is invariant, or is the
    /// whole space).
    pub fn step<E>(
        &mut self,
        mut apply: impl FnMut(&[f64], &mut [f64]) -> Result<(), E>,
    ) -> Result<bool, E> {
        let Some(q) = self.next.take() else {
            return Ok(false);
        };
        let d = q.len();
        let mut w = vec![0.0; d];
        apply(&q, &mut w)?;
        let alpha = dot(&q, &w);
        // w ← w − α q − β_{k−1} q_{k−1}, then twice against every basis vector: the
        // second pass removes what the first left to round-off.
        axpy(-alpha, &q, &mut w);
        if let (Some(prev), Some(&b)) = (self.basis.last(), self.beta.last()) {
            axpy(-b, prev, &mut w);
        }
        self.basis.push(q);
        for _ in 0..2 {
            for v in &self.basis {
                let c = dot(v, &w);
                axpy(-c, v, &mut w);
            }
        }
        let beta = dot(&w, &w).sqrt();
        self.alpha.push(alpha);
        self.beta.push(beta);
        self.scale = self.scale.max(alpha.abs()).max(beta);
        self.invariant = beta <= BREAKDOWN * self.scale;
        let more = !self.invariant && self.basis.len() < d;
        if more {
            w.iter_mut().for_each(|x| *x /= beta);
            self.next = Some(w);
        }
        Ok(more)
    }

    /// Steps taken, k.
    pub fn steps(&self) -> usize {
        self.basis.len()
    }

    /// Whether no further step can be taken (the space is invariant or whole).
    pub fn finished(&self) -> bool {
        self.next.is_none()
    }

    /// The orthonormal basis q_1 … q_k.
    pub fn basis(&self) -> &[Vec<f64>] {
        &self.basis
    }

    /// T_k: its diagonal α_1 … α_k and off-diagonal β_1 … β_{k−1}.
    pub fn tridiagonal(&self) -> (&[f64], &[f64]) {
        let k = self.steps();
        (&self.alpha, &self.beta[..k.saturating_sub(1)])
    }

    /// β_k, the norm of the last residual (0 when the space is invariant).
    pub fn residual_norm(&self) -> f64 {
        if self.invariant {
            0.0
        } else {
            self.beta.last().copied().unwrap_or(0.0)
        }
    }

    /// T_k's eigendecomposition (ascending eigenvalues with their eigenvectors).
    fn eigen(&self) -> (Vec<f64>, DMatrix<f64>) {
        let k = self.steps();
        let mut t = DMatrix::zeros(k, k);
        for i in 0..k {
            t[(i, i)] = self.alpha[i];
            if i + 1 < k {
                t[(i, i + 1)] = self.beta[i];
                t[(i + 1, i)] = self.beta[i];
            }
        }
        let e = SymmetricEigen::new(t);
        let mut order: Vec<usize> = (0..k).collect();
        order.sort_by(|&a, &b| e.eigenvalues[a].total_cmp(&e.eigenvalues[b]));
        let values = order.iter().map(|&i| e.eigenvalues[i]).collect();
        let vectors = DMatrix::from_fn(k, k, |r, c| e.eigenvectors[(r, order[c])]);
        (values, vectors)
    }

    /// The Ritz values, ascending, each with its residual bound. With the space whole
    /// or invariant the bounds are 0: the values are eigenvalues of A (to round-off).
    pub fn ritz(&self) -> Vec<Ritz> {
        let k = self.steps();
        if k == 0 {
            return Vec::new();
        }
        let (values, vectors) = self.eigen();
        let beta = self.residual_norm();
        values
            .iter()
            .enumerate()
            .map(|(i, &value)| Ritz {
                value,
                bound: beta * vectors[(k - 1, i)].abs(),
            })
            .collect()
    }

    /// `‖v‖ V_k f(T_k) e_1`, the Lanczos approximation of `f(A) v` for the start vector
    /// v (exact when the space is invariant and f is applied to its eigenvalues).
    pub fn function_times_start(&self, f: impl Fn(f64) -> f64) -> Vec<f64> {
        let k = self.steps();
        let d = self.basis.first().map_or(0, Vec::len);
        let mut out = vec![0.0; d];
        if k == 0 {
            return out;
        }
        let (values, s) = self.eigen();
        // f(T) e_1 = S f(Λ) Sᵀ e_1.
        let coefficients: Vec<f64> = (0..k)
            .map(|r| {
                (0..k)
                    .map(|i| s[(r, i)] * f(values[i]) * s[(0, i)])
                    .sum::<f64>()
            })
            .collect();
        for (c, q) in coefficients.iter().zip(&self.basis) {
            axpy(self.norm * c, q, &mut out);
        }
        out
    }
}

/// The result of [`minres`].
#[derive(Clone, Debug, PartialEq)]
pub struct Minres {
    /// The approximate solution x.
    pub solution: Vec<f64>,
    /// Products with A taken.
    pub iterations: usize,
    /// ‖b − Ax‖ as the recurrence tracks it.
    pub residual_norm: f64,
    /// Whether `‖b − Ax‖ ≤ rtol·‖b‖`, or x is a least-squares solution to the same
    /// tolerance (`‖A(b − Ax)‖ ≤ rtol·‖A‖‖b − Ax‖`, for a singular A and a b outside
    /// its range), or the Krylov space closed.
    pub converged: bool,
}

/// MINRES for `Ax = b`, A symmetric (possibly indefinite or singular), from x = 0: at
/// step k, x minimises `‖b − Ax‖` over the Krylov space `K_k(A, b)`, so the residual
/// never grows and `bᵀAx = ‖Ax‖²`-type identities hold (for `b = −g`, x is a descent
/// direction of `½‖g‖²`). Stops when `‖b − Ax‖ ≤ rtol·‖b‖`, at a least-squares
/// solution, when the space closes, or after `max_iter` products.
///
/// ```
/// use hasme::models::krylov::minres;
/// // An indefinite 2×2 system: [[1, 2], [2, −1]] x = [3, 1] has x = (1, 1).
/// let apply = |v: &[f64], out: &mut [f64]| {
///     out[0] = v[0] + 2.0 * v[1];
///     out[1] = 2.0 * v[0] - v[1];
///     Ok::<(), ()>(())
/// };
/// let r = minres(&[3.0, 1.0], apply, 1e-12, 10)?;
/// assert!(r.converged && (r.solution[0] - 1.0).abs() < 1e-12 && (r.solution[1] - 1.0).abs() < 1e-12);
/// # Ok::<(), ()>(())
/// ```
pub fn minres<E>(
    b: &[f64],
    mut apply: impl FnMut(&[f64], &mut [f64]) -> Result<(), E>,
    rtol: f64,
    max_iter: usize,
) -> Result<Minres, E> {
    // Paige and Saunders' recurrences without a preconditioner, as in SciPy's `minres`:
    // the Lanczos vectors (r1, r2, v), the QR factorisation of T_k by Givens rotations
    // (cs, sn), and the search directions w that update x.
    let d = b.len();
    let mut x = vec![0.0; d];
    let beta1 = dot(b, b).sqrt();
    if beta1 == 0.0 || !beta1.is_finite() {
        return Ok(Minres {
            solution: x,
            iterations: 0,
            residual_norm: beta1,
            converged: beta1 == 0.0,
        });
    }
    let (mut r1, mut r2, mut y) = (b.to_vec(), b.to_vec(), b.to_vec());
    let (mut w, mut w1, mut w2) = (vec![0.0; d], vec![0.0; d], vec![0.0; d]);
    let mut v = vec![0.0; d];
    let (mut oldb, mut beta) = (0.0, beta1);
    let (mut dbar, mut epsln, mut phibar) = (0.0, 0.0, beta1);
    let (mut cs, mut sn) = (-1.0f64, 0.0f64);
    let mut tnorm2 = 0.0;
    let mut iterations = 0;
    let mut rnorm = beta1;
    let mut converged = false;
    while iterations < max_iter {
        iterations += 1;
        for (vi, yi) in v.iter_mut().zip(&y) {
            *vi = yi / beta;
        }
        apply(&v, &mut y)?;
        if iterations >= 2 {
            axpy(-beta / oldb, &r1, &mut y);
        }
        let alpha = dot(&v, &y);
        axpy(-alpha / beta, &r2, &mut y);
        std::mem::swap(&mut r1, &mut r2);
        r2.copy_from_slice(&y);
        oldb = beta;
        beta = dot(&r2, &r2).sqrt();
        tnorm2 += alpha * alpha + oldb * oldb + beta * beta;
        // Apply the previous rotation, then form the new one.
        let oldeps = epsln;
        let delta = cs * dbar + sn * alpha;
        let gbar = sn * dbar - cs * alpha;
        epsln = sn * beta;
        dbar = -cs * beta;
        let root = gbar.hypot(dbar);
        // ‖A r_{k−1}‖ = φ̄_{k−1}·root: a least-squares solution has ‖A r‖ ≪ ‖A‖ ‖r‖.
        let ar_previous = phibar * root;
        let anorm = tnorm2.sqrt();
        let gamma = gbar.hypot(beta);
        if gamma <= BREAKDOWN * anorm {
            // T_k is singular: x_{k−1} is already a least-squares solution (Choi, Paige
            // and Saunders 2011, MINRES-QLP), and the update would divide by zero.
            converged = true;
            break;
        }
        cs = gbar / gamma;
        sn = beta / gamma;
        let phi = cs * phibar;
        phibar *= sn;
        // x ← x + φ w, w the next search direction.
        std::mem::swap(&mut w1, &mut w2);
        std::mem::swap(&mut w2, &mut w);
        for i in 0..d {
            w[i] = (v[i] - oldeps * w1[i] - delta * w2[i]) / gamma;
            x[i] += phi * w[i];
        }
        let least_squares = ar_previous <= rtol * anorm * rnorm;
        rnorm = phibar;
        let invariant = beta <= BREAKDOWN * anorm;
        if rnorm <= rtol * beta1 || least_squares || invariant {
            converged = true;
            break;
        }
    }
    Ok(Minres {
        solution: x,
        iterations,
        residual_norm: rnorm,
        converged,
    })
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// `y ← y + a x`.
fn axpy(a: f64, x: &[f64], y: &mut [f64]) {
    y.iter_mut().zip(x).for_each(|(y, x)| *y += a * x);
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use nalgebra::DVector;

    /// Q diag(s) Qᵀ with Q orthogonal from the QR factorisation of a fixed mixing
    /// matrix: a symmetric matrix with spectrum exactly `s` (to round-off).
    pub(crate) fn with_spectrum(s: &[f64]) -> DMatrix<f64> {
        let d = s.len();
        let m = DMatrix::from_fn(d, d, |i, j| ((i * d + j) as f64 * 0.731 + 0.2).sin());
        let q = m.qr().q();
        let a = &q * DMatrix::from_diagonal(&DVector::from_column_slice(s)) * q.transpose();
        (&a + a.transpose()) * 0.5
    }

    fn operator(a: &DMatrix<f64>) -> impl FnMut(&[f64], &mut [f64]) -> Result<(), ()> + '_ {
        move |v, out| {
            let y = a * DVector::from_column_slice(v);
            out.copy_from_slice(y.as_slice());
            Ok(())
        }
    }

    fn start(d: usize) -> Vec<f64> {
        (0..d).map(|i| 1.0 + 0.5 * (i as f64 * 1.7).cos()).collect()
    }

    #[test]
    fn lanczos_extremes_match_the_dense_eigenvalues_within_their_bounds() {
        // 80 eigenvalues: 4 well separated at each end, a dense cluster inside.
        let d = 80;
        let mut s: Vec<f64> = (0..d).map(|i| -1.0 + 2.0 * i as f64 / d as f64).collect();
        s[..4].copy_from_slice(&[-9.0, -7.0, -5.5, -4.0]);
        s[d - 4..].copy_from_slice(&[3.0, 4.5, 6.0, 10.0]);
        let a = with_spectrum(&s);
        let mut l = Lanczos::new(&start(d));
        for _ in 0..40 {
            assert!(l.step(operator(&a)).unwrap());
        }
        let ritz = l.ritz();
        let mut exact = a.clone().symmetric_eigenvalues().as_slice().to_vec();
        exact.sort_by(f64::total_cmp);
        for (r, &e) in ritz.iter().take(3).zip(&exact) {
            // The extremes have converged far below their spacing.
            assert!((r.value - e).abs() < 1e-9, "{r:?} vs {e}");
        }
        for (r, &e) in ritz.iter().rev().take(3).zip(exact.iter().rev()) {
            assert!((r.value - e).abs() < 1e-9, "{r:?} vs {e}");
        }
        // Every Ritz value has an eigenvalue within its bound (plus round-off).
        for r in &ritz {
            let nearest = exact
                .iter()
                .map(|e| (e - r.value).abs())
                .fold(f64::INFINITY, f64::min);
            assert!(nearest <= r.bound + 1e-12 * 10.0, "{r:?}: {nearest}");
        }
        // The basis stays orthonormal (full reorthogonalisation).
        let q = l.basis();
        for i in 0..q.len() {
            for j in 0..=i {
                let want = if i == j { 1.0 } else { 0.0 };
                assert!((dot(&q[i], &q[j]) - want).abs() < 1e-13);
            }
        }
    }

    #[test]
    fn lanczos_to_the_end_gives_every_eigenvalue_and_functions_of_a() {
        let s = [-2.0, -0.5, 0.0, 0.25, 1.0, 3.0, 7.0];
        let a = with_spectrum(&s);
        let v = start(7);
        let mut l = Lanczos::new(&v);
        while l.step(operator(&a)).unwrap() {}
        assert_eq!(l.steps(), 7);
        for (r, e) in l.ritz().iter().zip(s) {
            assert!((r.value - e).abs() < 1e-12 && r.bound < 1e-12, "{r:?}");
        }
        // f(x) = x gives Av; f(x) = exp(x/4) agrees with the dense matrix function.
        let av = &a * DVector::from_column_slice(&v);
        for (x, y) in l.function_times_start(|x| x).iter().zip(av.iter()) {
            assert!((x - y).abs() < 1e-12);
        }
        let e = a.clone().symmetric_eigen();
        let f = &e.eigenvectors
            * DMatrix::from_diagonal(&e.eigenvalues.map(|x| (x / 4.0).exp()))
            * e.eigenvectors.transpose();
        let fv = f * DVector::from_column_slice(&v);
        for (x, y) in l
            .function_times_start(|x| (x / 4.0).exp())
            .iter()
            .zip(fv.iter())
        {
            assert!((x - y).abs() < 1e-12);
        }
    }

    #[test]
    fn lanczos_stops_on_an_invariant_space() {
        // A start vector in a 2-dimensional eigenspace: two steps, zero residual.
        let a = DMatrix::from_diagonal(&DVector::from_column_slice(&[1.0, 2.0, 3.0, 4.0]));
        let mut l = Lanczos::new(&[1.0, 0.0, 1.0, 0.0]);
        let mut steps = 0;
        while l.step(operator(&a)).unwrap() {
            steps += 1;
        }
        assert_eq!((steps + 1, l.steps()), (2, 2));
        assert!(l.finished() && l.residual_norm() == 0.0);
        let r = l.ritz();
        assert!((r[0].value - 1.0).abs() < 1e-14 && (r[1].value - 3.0).abs() < 1e-14);
        // A zero start vector: nothing to do.
        let mut z = Lanczos::new(&[0.0; 4]);
        assert!(!z.step(operator(&a)).unwrap() && z.ritz().is_empty());
    }

    #[test]
    fn minres_solves_indefinite_and_singular_systems() {
        let s = [-3.0, -1.0, -0.2, 0.5, 1.0, 2.0, 4.0, 8.0];
        let a = with_spectrum(&s);
        let b: Vec<f64> = (0..8).map(|i| (i as f64 * 0.9).sin()).collect();
        let r = minres(&b, operator(&a), 1e-12, 100).unwrap();
        assert!(r.converged && r.iterations <= 9, "{r:?}");
        let ax = &a * DVector::from_column_slice(&r.solution);
        let res = (DVector::from_column_slice(&b) - ax).norm();
        assert!(
            res <= 1e-11 * DVector::from_column_slice(&b).norm(),
            "{res}"
        );
        // Singular A with b outside its range: the least-squares solution, whose
        // residual is orthogonal to A's range (A r = 0).
        let s = [-2.0, 0.0, 0.0, 1.0, 3.0];
        let a = with_spectrum(&s);
        let b: Vec<f64> = (0..5).map(|i| 1.0 + i as f64).collect();
        let r = minres(&b, operator(&a), 1e-10, 100).unwrap();
        assert!(r.converged, "{r:?}");
        let res = DVector::from_column_slice(&b) - &a * DVector::from_column_slice(&r.solution);
        assert!(
            (&a * &res).norm() <= 1e-8 * res.norm(),
            "{}",
            (&a * &res).norm()
        );
        // The step is a descent direction of ½‖b − Ax‖² at 0: bᵀAx > 0.
        let ax = &a * DVector::from_column_slice(&r.solution);
        assert!(DVector::from_column_slice(&b).dot(&ax) > 0.0);
    }
}
