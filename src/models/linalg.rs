//! Allocation-free dense linear algebra on small slices, for coefficients computed at
//! every step of a simulation: products, the symmetric eigendecomposition by cyclic
//! Jacobi rotations, and the symmetric positive semidefinite square root (spec
//! docs/models.md §2 needs `H = U diag(λ) Uᵀ` and `σ = Γ^{1/2}` at each point).
//!
//! Why Jacobi: for the dimensions simulated step by step (d ≤ a few dozen) it needs no
//! workspace beyond the matrices, is simple enough to be obviously right, and is at
//! least as accurate as QR (it computes small eigenvalues to high relative accuracy);
//! a 2×2 matrix is diagonalised by one rotation. `nalgebra`'s `SymmetricEigen` (the
//! models' [`Arithmetic::Qr`](super::Arithmetic::Qr)) allocates on every call.

/// Above this dimension the simulator hands eigendecompositions to nalgebra (and
/// model coefficients to [`Model::coefficients`](super::Model::coefficients)): cyclic Jacobi costs about ten O(d³)
/// sweeps, which loses to tridiagonal QR once d is in the tens, where an allocation per
/// call no longer matters.
pub(crate) const JACOBI_MAX_DIM: usize = 16;

/// Sweeps over all pairs before giving up. Cyclic Jacobi converges quadratically once
/// the off-diagonal part is small; in practice 6–10 sweeps reach round-off for d ≤ 32.
const MAX_SWEEPS: usize = 60;

/// `out = a · v` for a row-major `d×d` matrix (SGD's noise factor times ξ).
#[inline]
pub(crate) fn mat_vec(d: usize, a: &[f64], v: &[f64], out: &mut [f64]) {
    for i in 0..d {
        let mut s = 0.0;
        for k in 0..d {
            s += a[i * d + k] * v[k];
        }
        out[i] = s;
    }
}

// Products of column-major `d×d` matrices (nalgebra's layout, entry (i, j) at
// `j·d + i`), each entry summed in the order k = 0, 1, … from zero: the model
// coefficients' sequential arithmetic (`models::Arithmetic::Jacobi`).

/// `out = a · b`.
#[inline(always)]
pub(crate) fn mul(d: usize, a: &[f64], b: &[f64], out: &mut [f64]) {
    for j in 0..d {
        for i in 0..d {
            let mut s = 0.0;
            for k in 0..d {
                s += a[k * d + i] * b[j * d + k];
            }
            out[j * d + i] = s;
        }
    }
}

/// `out = aᵀ · b`.
#[inline(always)]
pub(crate) fn tr_mul(d: usize, a: &[f64], b: &[f64], out: &mut [f64]) {
    for j in 0..d {
        for i in 0..d {
            let mut s = 0.0;
            for k in 0..d {
                s += a[i * d + k] * b[j * d + k];
            }
            out[j * d + i] = s;
        }
    }
}

/// `out = aᵀ · bᵀ`.
#[inline(always)]
pub(crate) fn tr_mul_tr(d: usize, a: &[f64], b: &[f64], out: &mut [f64]) {
    for j in 0..d {
        for i in 0..d {
            let mut s = 0.0;
            for k in 0..d {
                s += a[i * d + k] * b[k * d + j];
            }
            out[j * d + i] = s;
        }
    }
}

/// `out = a · v`.
#[inline(always)]
pub(crate) fn mul_vec(d: usize, a: &[f64], v: &[f64], out: &mut [f64]) {
    for (i, o) in out.iter_mut().enumerate().take(d) {
        let mut s = 0.0;
        for k in 0..d {
            s += a[k * d + i] * v[k];
        }
        *o = s;
    }
}

/// `out = aᵀ · v`.
#[inline(always)]
pub(crate) fn tr_mul_vec(d: usize, a: &[f64], v: &[f64], out: &mut [f64]) {
    for (i, o) in out.iter_mut().enumerate().take(d) {
        let mut s = 0.0;
        for k in 0..d {
            s += a[i * d + k] * v[k];
        }
        *o = s;
    }
}

/// Replaces `a` by `(a + aᵀ)/2`.
#[inline]
pub(crate) fn symmetrise(d: usize, a: &mut [f64]) {
    for i in 0..d {
        for j in 0..i {
            let s = 0.5 * a[i * d + j] + 0.5 * a[j * d + i];
            a[i * d + j] = s;
            a[j * d + i] = s;
        }
    }
}

/// The eigensolver did not converge within its sweep budget (or met a non-finite
/// entry).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct NoConvergence;

/// Symmetric eigendecomposition `A = V diag(w) Vᵀ` by cyclic Jacobi rotations.
///
/// `a` (row-major, symmetric) is destroyed; on return `v` holds the eigenvectors as
/// columns (row-major storage, `v[i·d + k]` is component `i` of eigenvector `k`) and
/// `w` the eigenvalues, unsorted.
pub(crate) fn sym_eigen(
    d: usize,
    a: &mut [f64],
    v: &mut [f64],
    w: &mut [f64],
) -> Result<(), NoConvergence> {
    if a[..d * d].iter().any(|x| !x.is_finite()) {
        return Err(NoConvergence);
    }
    if d <= 2 {
        // One rotation diagonalises a 2×2 matrix: the loop below without its loop
        // overhead (the simulator's most common case).
        if d == 1 {
            (w[0], v[0]) = (a[0], 1.0);
            return Ok(());
        }
        let (app, apq, aqq) = (a[0], a[1], a[3]);
        if apq == 0.0 {
            w[..2].copy_from_slice(&[app, aqq]);
            v[..4].copy_from_slice(&[1.0, 0.0, 0.0, 1.0]);
            return Ok(());
        }
        let (h, g) = (aqq - app, 100.0 * apq.abs());
        let t = if h.abs() + g == h.abs() {
            apq / h
        } else {
            let theta = 0.5 * h / apq;
            let t = 1.0 / (theta.abs() + (1.0 + theta * theta).sqrt());
            if theta < 0.0 { -t } else { t }
        };
        let c = 1.0 / (1.0 + t * t).sqrt();
        let s = t * c;
        w[..2].copy_from_slice(&[app - t * apq, aqq + t * apq]);
        v[..4].copy_from_slice(&[c, s, -s, c]);
        return Ok(());
    }
    for i in 0..d {
        for j in 0..d {
            v[i * d + j] = if i == j { 1.0 } else { 0.0 };
        }
    }
    for sweep in 0..MAX_SWEEPS {
        let mut off = 0.0;
        for p in 0..d {
            for q in p + 1..d {
                off += a[p * d + q].abs();
            }
        }
        if off == 0.0 {
            for i in 0..d {
                w[i] = a[i * d + i];
            }
            return Ok(());
        }
        for p in 0..d {
            for q in p + 1..d {
                let apq = a[p * d + q];
                let (app, aqq) = (a[p * d + p], a[q * d + q]);
                let g = 100.0 * apq.abs();
                // After a few sweeps, an off-diagonal entry below the last bit of both
                // diagonal entries is round-off: set it to zero (Rutishauser's rule).
                if sweep > 3 && app.abs() + g == app.abs() && aqq.abs() + g == aqq.abs() {
                    a[p * d + q] = 0.0;
                    a[q * d + p] = 0.0;
                    continue;
                }
                if apq == 0.0 {
                    continue;
                }
                let h = aqq - app;
                let t = if h.abs() + g == h.abs() {
                    // θ² would overflow: t ≈ 1/(2θ).
                    apq / h
                } else {
                    let theta = 0.5 * h / apq;
                    let t = 1.0 / (theta.abs() + (1.0 + theta * theta).sqrt());
                    if theta < 0.0 { -t } else { t }
                };
                let c = 1.0 / (1.0 + t * t).sqrt();
                let s = t * c;
                let tau = s / (1.0 + c);
                a[p * d + p] = app - t * apq;
                a[q * d + q] = aqq + t * apq;
                a[p * d + q] = 0.0;
                a[q * d + p] = 0.0;
                for r in 0..d {
                    if r != p && r != q {
                        let (arp, arq) = (a[r * d + p], a[r * d + q]);
                        let np = arp - s * (arq + tau * arp);
                        let nq = arq + s * (arp - tau * arq);
                        a[r * d + p] = np;
                        a[p * d + r] = np;
                        a[r * d + q] = nq;
                        a[q * d + r] = nq;
                    }
                }
                for r in 0..d {
                    let (vrp, vrq) = (v[r * d + p], v[r * d + q]);
                    v[r * d + p] = vrp - s * (vrq + tau * vrp);
                    v[r * d + q] = vrq + s * (vrp - tau * vrq);
                }
            }
        }
    }
    Err(NoConvergence)
}

/// Scratch space for [`sym_sqrt`]: three `d×d` matrices and a vector.
#[derive(Clone, Debug, Default)]
pub(crate) struct EigenScratch {
    pub a: Vec<f64>,
    pub v: Vec<f64>,
    pub w: Vec<f64>,
    pub t: Vec<f64>,
}

impl EigenScratch {
    pub(crate) fn new(d: usize) -> EigenScratch {
        EigenScratch {
            a: vec![0.0; d * d],
            v: vec![0.0; d * d],
            w: vec![0.0; d],
            t: vec![0.0; d * d],
        }
    }
}

/// The spectrum of a matrix that should be positive semidefinite.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Spread {
    /// Smallest eigenvalue.
    pub min: f64,
    /// Largest |eigenvalue|.
    pub scale: f64,
}

/// `out = V diag(√μ_k) Vᵀ`, the symmetric square root of the symmetric `m`, where
/// eigenvalues at or below `tolerance · max|μ|` count as 0 (the same rule as the
/// models' `factor`, see `models::PSD_TOLERANCE`). Returns the spectrum's spread so the
/// caller can decide whether a negative eigenvalue is round-off or an error.
pub(crate) fn sym_sqrt(
    d: usize,
    m: &[f64],
    tolerance: f64,
    scratch: &mut EigenScratch,
    out: &mut [f64],
) -> Result<Spread, NoConvergence> {
    // A diagonal matrix (isotropic or diagonal noise) needs no rotation.
    let diagonal = (0..d).all(|i| (0..d).all(|j| i == j || m[i * d + j] == 0.0));
    if diagonal {
        let (mut min, mut scale) = (f64::INFINITY, 0.0f64);
        for i in 0..d {
            let mu = m[i * d + i];
            min = min.min(mu);
            scale = scale.max(mu.abs());
        }
        let floor = tolerance * scale;
        for i in 0..d {
            for j in 0..d {
                let mu = m[i * d + i];
                out[i * d + j] = if i == j && mu > floor { mu.sqrt() } else { 0.0 };
            }
        }
        return Ok(Spread { min, scale });
    }
    if d == 2 {
        // Closed form for a 2×2 matrix with both eigenvalues above the floor:
        // √M = (M + √det I)/√(tr M + 2√det) (Cayley–Hamilton), no rotation needed.
        let (a, b, c) = (m[0], 0.5 * (m[1] + m[2]), m[3]);
        let (half_tr, half_gap) = (0.5 * (a + c), (0.5 * (a - c)).hypot(b));
        let (min, max) = (half_tr - half_gap, half_tr + half_gap);
        let scale = min.abs().max(max.abs());
        if min > tolerance * scale {
            let root_det = min.sqrt() * max.sqrt();
            let n = (a + c + 2.0 * root_det).sqrt();
            out[..4].copy_from_slice(&[(a + root_det) / n, b / n, b / n, (c + root_det) / n]);
            return Ok(Spread { min, scale });
        }
    }
    if d > JACOBI_MAX_DIM {
        // Large matrices: nalgebra's tridiagonal QR (allocating, but then the O(d³)
        // work dwarfs an allocation).
        let e = nalgebra::SymmetricEigen::try_new(
            nalgebra::DMatrix::from_row_slice(d, d, &m[..d * d]),
            f64::EPSILON,
            100 * d,
        )
        .ok_or(NoConvergence)?;
        for i in 0..d {
            scratch.w[i] = e.eigenvalues[i];
            for k in 0..d {
                scratch.v[i * d + k] = e.eigenvectors[(i, k)];
            }
        }
    } else {
        scratch.a[..d * d].copy_from_slice(&m[..d * d]);
        sym_eigen(d, &mut scratch.a, &mut scratch.v, &mut scratch.w)?;
    }
    if !scratch.w[..d]
        .iter()
        .chain(&scratch.v[..d * d])
        .all(|x| x.is_finite())
    {
        return Err(NoConvergence);
    }
    let (mut min, mut scale) = (f64::INFINITY, 0.0f64);
    for &mu in &scratch.w[..d] {
        min = min.min(mu);
        scale = scale.max(mu.abs());
    }
    let floor = tolerance * scale;
    // t = V diag(√μ₊), then out = t Vᵀ.
    for i in 0..d {
        for k in 0..d {
            let mu = scratch.w[k];
            scratch.t[i * d + k] = scratch.v[i * d + k] * if mu > floor { mu.sqrt() } else { 0.0 };
        }
    }
    for i in 0..d {
        for j in 0..d {
            let mut s = 0.0;
            for k in 0..d {
                s += scratch.t[i * d + k] * scratch.v[j * d + k];
            }
            out[i * d + j] = s;
        }
    }
    symmetrise(d, out);
    Ok(Spread { min, scale })
}

#[cfg(test)]
mod tests {
    use super::*;
    use nalgebra::DMatrix;
    use proptest::prelude::*;

    fn symmetric(d: usize, entries: &[f64]) -> Vec<f64> {
        let mut a = vec![0.0; d * d];
        for i in 0..d {
            for j in 0..=i {
                let x = entries[i * d + j];
                a[i * d + j] = x;
                a[j * d + i] = x;
            }
        }
        a
    }

    proptest! {
        /// `V diag(w) Vᵀ` reproduces `A`, `V` is orthogonal, and the eigenvalues agree
        /// with nalgebra's. Tolerance 1e-12 relative to ‖A‖: backward-stable solvers
        /// at d ≤ 8 are within a few hundred ulps.
        #[test]
        fn jacobi_reconstructs_and_agrees_with_nalgebra(
            d in 1usize..9,
            entries in prop::collection::vec(-10.0f64..10.0, 64),
        ) {
            let a0 = symmetric(d, &entries);
            let (mut a, mut v, mut w) = (a0.clone(), vec![0.0; d * d], vec![0.0; d]);
            sym_eigen(d, &mut a, &mut v, &mut w).expect("converges");
            let norm = a0.iter().map(|x| x * x).sum::<f64>().sqrt().max(1.0);
            for i in 0..d {
                for j in 0..d {
                    let r: f64 = (0..d).map(|k| v[i * d + k] * w[k] * v[j * d + k]).sum();
                    prop_assert!((r - a0[i * d + j]).abs() < 1e-12 * norm);
                    let o: f64 = (0..d).map(|k| v[k * d + i] * v[k * d + j]).sum();
                    let delta = if i == j { 1.0 } else { 0.0 };
                    prop_assert!((o - delta).abs() < 1e-12);
                }
            }
            let mut ours = w.clone();
            ours.sort_by(f64::total_cmp);
            let mut theirs: Vec<f64> = DMatrix::from_row_slice(d, d, &a0)
                .symmetric_eigenvalues()
                .iter()
                .copied()
                .collect();
            theirs.sort_by(f64::total_cmp);
            for (x, y) in ours.iter().zip(&theirs) {
                prop_assert!((x - y).abs() < 1e-12 * norm);
            }
        }

        /// The square root of `BBᵀ` squares back to it.
        #[test]
        fn sqrt_squares_back(
            d in 1usize..9,
            entries in prop::collection::vec(-2.0f64..2.0, 64),
        ) {
            let b = &entries[..d * d];
            let mut m = vec![0.0; d * d];
            for i in 0..d {
                for j in 0..d {
                    m[i * d + j] = (0..d).map(|k| b[i * d + k] * b[j * d + k]).sum();
                }
            }
            symmetrise(d, &mut m);
            let mut s = vec![0.0; d * d];
            let mut scratch = EigenScratch::new(d);
            let spread = sym_sqrt(d, &m, 1e-12, &mut scratch, &mut s).expect("converges");
            let mut ss = vec![0.0; d * d];
            mul(d, &s, &s, &mut ss);
            let norm = m.iter().map(|x| x.abs()).fold(0.0, f64::max).max(1e-300);
            // 1e-10: eigenvalues floored at 1e-12·scale move the square by that much.
            for (x, y) in ss.iter().zip(&m) {
                prop_assert!((x - y).abs() < 1e-10 * norm.max(1.0));
            }
            prop_assert!(spread.min >= -1e-12 * spread.scale.max(1e-300));
        }
    }

    #[test]
    fn non_finite_input_is_refused() {
        let mut a = vec![1.0, f64::NAN, f64::NAN, 1.0];
        let (mut v, mut w) = (vec![0.0; 4], vec![0.0; 2]);
        assert_eq!(sym_eigen(2, &mut a, &mut v, &mut w), Err(NoConvergence));
    }

    #[test]
    fn diagonal_sqrt_is_elementwise() {
        let mut out = vec![9.0; 4];
        let mut scratch = EigenScratch::new(2);
        let s = sym_sqrt(2, &[4.0, 0.0, 0.0, 0.25], 1e-12, &mut scratch, &mut out).unwrap();
        assert_eq!(out, vec![2.0, 0.0, 0.0, 0.5]);
        assert_eq!((s.min, s.scale), (0.25, 4.0));
    }
}
