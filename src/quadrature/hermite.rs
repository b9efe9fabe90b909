//! Gauss–Hermite rules for the standard normal law: `E g(ξ) ≈ Σ_q w_q g(ξ_q)`,
//! `ξ ~ N(0, 1)`, exact for polynomials of degree `2Q − 1`.
//!
//! Nodes and weights by Golub–Welsch: the nodes are the eigenvalues of the symmetric
//! tridiagonal Jacobi matrix of the probabilists' Hermite polynomials
//! (`ξ He_k = He_{k+1} + k He_{k−1}`, off-diagonal `√k`), the weights the squared first
//! components of its unit eigenvectors (they sum to 1, the normal law's mass).

use nalgebra::{DMatrix, SymmetricEigen};

/// Weights below this are dropped: a node so far out (beyond ±9 for Q ≥ 40) moves no
/// expectation of a function of moderate growth by more than round-off, and its image
/// would be the farthest extrapolation of the interpolant.
const WEIGHT_FLOOR: f64 = 1e-18;

/// A Gauss–Hermite rule for `N(0, 1)`, nodes ascending.
#[derive(Clone, Debug, PartialEq)]
pub struct Rule {
    /// The nodes `ξ_q`.
    pub nodes: Vec<f64>,
    /// The weights `w_q` (sum 1).
    pub weights: Vec<f64>,
}

impl Rule {
    /// The Q-point rule (Q ≥ 1), symmetrised (nodes ±, equal weights) and without the
    /// nodes of negligible weight (weights below 1e−18 of the total).
    pub fn new(q: usize) -> Rule {
        let q = q.max(1);
        if q == 1 {
            return Rule::point();
        }
        let mut jacobi = DMatrix::zeros(q, q);
        for k in 1..q {
            let b = (k as f64).sqrt();
            jacobi[(k - 1, k)] = b;
            jacobi[(k, k - 1)] = b;
        }
        let eig = SymmetricEigen::new(jacobi);
        let mut pairs: Vec<(f64, f64)> = (0..q)
            .map(|i| (eig.eigenvalues[i], eig.eigenvectors[(0, i)].powi(2)))
            .collect();
        pairs.sort_by(|a, b| a.0.total_cmp(&b.0));
        // Symmetrise: the rule is exactly symmetric; averaging removes the eigensolver's
        // round-off (odd moments then vanish exactly).
        for i in 0..q / 2 {
            let j = q - 1 - i;
            let node = 0.5 * (pairs[j].0 - pairs[i].0);
            let weight = 0.5 * (pairs[i].1 + pairs[j].1);
            pairs[i] = (-node, weight);
            pairs[j] = (node, weight);
        }
        if q % 2 == 1 {
            pairs[q / 2].0 = 0.0;
        }
        let total: f64 = pairs.iter().map(|p| p.1).sum();
        let kept: Vec<(f64, f64)> = pairs
            .into_iter()
            .filter(|p| p.1 / total >= WEIGHT_FLOOR)
            .collect();
        let total: f64 = kept.iter().map(|p| p.1).sum();
        Rule {
            nodes: kept.iter().map(|p| p.0).collect(),
            weights: kept.iter().map(|p| p.1 / total).collect(),
        }
    }

    /// The one-point rule (ξ = 0, weight 1): a direction without noise.
    pub fn point() -> Rule {
        Rule {
            nodes: vec![0.0],
            weights: vec![1.0],
        }
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the rule has no node (never: at least one).
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Even moments of N(0, 1) are (2k − 1)!!, odd ones 0, exactly up to degree 2Q − 1.
    #[test]
    fn rules_integrate_polynomials_exactly() {
        for q in [2, 3, 5, 8, 12, 20] {
            let r = Rule::new(q);
            // Up to degree 24: beyond, the dropped nodes of weight < 1e−18 matter to
            // moments that large.
            for degree in 0..(2 * q).min(25) {
                let m: f64 = r
                    .nodes
                    .iter()
                    .zip(&r.weights)
                    .map(|(x, w)| w * x.powi(degree as i32))
                    .sum();
                let exact = if degree % 2 == 1 {
                    0.0
                } else {
                    (1..degree).step_by(2).map(|k| k as f64).product()
                };
                // 1e-12 relative to the size of the terms, ~(degree)!!: Golub–Welsch
                // round-off (odd moments cancel in the sum, not term by term).
                let size: f64 = (1..=degree).step_by(2).map(|k| k as f64).product();
                assert!(
                    (m - exact).abs() <= 1e-12 * size.max(1.0),
                    "Q = {q}, degree {degree}: {m} vs {exact}"
                );
            }
        }
    }

    #[test]
    fn a_gaussian_expectation_converges() {
        // E cos(aξ) = exp(−a²/2).
        let a: f64 = 1.3;
        let r = Rule::new(24);
        let m: f64 = r
            .nodes
            .iter()
            .zip(&r.weights)
            .map(|(x, w)| w * (a * x).cos())
            .sum();
        assert!((m - (-a * a / 2.0).exp()).abs() < 1e-14);
    }
}
