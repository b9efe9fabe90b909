//! Brownian paths and the coupling of SGD with the SDEs (docs/models.md §4).
//!
//! **Random streams.** Path `p` of a run with seed `S` reads the ChaCha8 keystream with
//! key `S` (little-endian in the first 8 bytes, zeros after) and stream id `p`
//! (`ChaCha8Rng::set_stream`). Within it, SGD step `k` starts reading at word
//! `k · 2³⁶` (`set_word_pos`), so the numbers of step `k` do not depend on how many
//! were read at earlier steps. Nothing depends on the thread that runs the path or on
//! how paths are grouped: this is what makes results bit-identical on any number of
//! threads. Standard normals come from `rand_distr::StandardNormal` (Ziggurat).
//!
//! **One step.** Step `k` draws, in this order: `ξ_k ∈ R^d` (SGD's noise), then — in
//! the uncoupled mode only — an independent `ξ'_k` for the SDEs, then the bridge
//! normals. The SDE's Brownian path on `[kη, (k+1)η]` is sampled on a grid of `M`
//! points of spacing `h = η/M` (`M` = substeps × the scheme's increments per
//! substep) by the Lévy construction: the endpoint `W_M = √η ξ_k` first (coupled) or
//! `√η ξ'_k` (uncoupled), then breadth-first midpoints of grid intervals `[a, b]`,
//! `W_c = W_a + (c−a)/(b−a) (W_b − W_a) + √(h (c−a)(b−c)/(b−a)) Z`,
//! `c = ⌊(a+b)/2⌋`. The increments `ΔW_j = W_{j+1} − W_j` are exactly independent
//! `N(0, h I)` and sum to `√η ξ_k`: SGD step `k` uses `z_k = −Σ^{1/2} ξ_k`, so it moves by
//! `−η z_k = +η Σ^{1/2} ξ_k`, in the direction of the SDE's noise `σ ΔW` (docs/models.md §4:
//! with the opposite sign the two would be anti-correlated).
//!
//! Two consequences of this layout: SGD's numbers do not depend on the scheme or the
//! number of substeps (ξ_k is drawn first); and when `M` is a power of two the path at
//! resolution `M` is the path at resolution `2M` read at every other point (the first
//! log₂M levels of the breadth-first construction are the same draws), so halving `h`
//! refines the same Brownian path instead of drawing a new one.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

/// Words of keystream reserved for each SGD step: step `k` starts at `k · 2³⁶`.
/// A step of a d-dimensional problem with `M` grid points reads about `2(M + 1)d`
/// words (Ziggurat rarely needs more than one u64 per normal), far below 2³⁶; the
/// ChaCha8 counter (2⁶⁸ words per stream) leaves room for 2³² steps.
const STEP_WORDS_LOG2: u32 = 36;

/// The largest number of SGD steps a run may take (2³² steps of 2³⁶ words each fill
/// the 2⁶⁸-word ChaCha8 stream of a path).
pub const MAX_STEPS: u64 = 1 << 32;

/// How the SDEs' Brownian paths relate to SGD's noise.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Coupling {
    /// Common random numbers: the increments over SGD step `k` sum to `√η ξ_k`.
    #[default]
    Coupled,
    /// The SDEs are driven by Brownian paths independent of SGD's noise.
    Independent,
}

impl Coupling {
    /// The coupling a run of `problem` can have: a finite sum's minibatch SGD draws no
    /// Gaussian numbers to share with the SDEs, so its runs are always independent.
    pub fn possible(self, problem: &crate::Problem) -> Coupling {
        if problem.finite_sum().is_some() {
            Coupling::Independent
        } else {
            self
        }
    }
}

impl std::fmt::Display for Coupling {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Coupling::Coupled => "coupled",
            Coupling::Independent => "independent",
        })
    }
}

impl std::str::FromStr for Coupling {
    type Err = String;

    fn from_str(s: &str) -> Result<Coupling, String> {
        match s {
            "coupled" => Ok(Coupling::Coupled),
            "independent" => Ok(Coupling::Independent),
            _ => Err(format!(
                "unknown coupling `{s}`; expected `coupled` or `independent`"
            )),
        }
    }
}

/// One bridge point: `W_c` from `W_a` and `W_b`.
#[derive(Clone, Copy, Debug)]
struct BridgePoint {
    a: usize,
    c: usize,
    b: usize,
    /// `(c − a)/(b − a)`
    weight: f64,
    /// `√(h (c − a)(b − c)/(b − a))`
    sd: f64,
}

/// The noise of one path, one SGD step at a time: `ξ_k` for SGD and the Brownian
/// increments of the SDEs on the grid of `M` points per step.
#[derive(Clone, Debug)]
pub struct BrownianPath {
    key: [u8; 32],
    rng: ChaCha8Rng,
    dim: usize,
    grid: usize,
    sqrt_eta: f64,
    coupling: Coupling,
    plan: Vec<BridgePoint>,
    xi: Vec<f64>,
    /// `W` at the grid points, `(M + 1) × d`, row `j` is `W_j`.
    w: Vec<f64>,
    /// `ΔW_j = W_{j+1} − W_j`, `M × d`.
    increments: Vec<f64>,
}

impl BrownianPath {
    /// The noise source for a run with this seed, dimension `dim`, SGD step size `eta`
    /// and `grid` Brownian increments per SGD step (at least 1).
    pub fn new(seed: u64, dim: usize, eta: f64, grid: usize, coupling: Coupling) -> BrownianPath {
        let grid = grid.max(1);
        let mut key = [0u8; 32];
        key[..8].copy_from_slice(&seed.to_le_bytes());
        let h = eta / grid as f64;
        // Breadth-first bisection of [0, M]: the order of the draws.
        let mut plan = Vec::with_capacity(grid.saturating_sub(1));
        let mut queue = std::collections::VecDeque::from([(0usize, grid)]);
        while let Some((a, b)) = queue.pop_front() {
            if b - a < 2 {
                continue;
            }
            let c = (a + b) / 2;
            let (ca, bc, ba) = ((c - a) as f64, (b - c) as f64, (b - a) as f64);
            plan.push(BridgePoint {
                a,
                c,
                b,
                weight: ca / ba,
                sd: (h * ca * bc / ba).sqrt(),
            });
            queue.push_back((a, c));
            queue.push_back((c, b));
        }
        BrownianPath {
            key,
            rng: ChaCha8Rng::from_seed(key),
            dim,
            grid,
            sqrt_eta: eta.sqrt(),
            coupling,
            plan,
            xi: vec![0.0; dim],
            w: vec![0.0; (grid + 1) * dim],
            increments: vec![0.0; grid * dim],
        }
    }

    /// Switches to path `path` (its own ChaCha stream), at its first word.
    pub fn start_path(&mut self, path: u64) {
        // A fresh generator has no buffered block, so neither `set_stream` here nor
        // anything before the next read computes one: `set_stream` on a used generator
        // (and each `set_word_pos`) computes a block that `draw_step` would discard.
        self.rng = ChaCha8Rng::from_seed(self.key);
        self.rng.set_stream(path);
    }

    /// Draws the noise of SGD step `k` of the current path.
    pub fn draw_step(&mut self, k: u64) {
        let d = self.dim;
        self.rng.set_word_pos(u128::from(k) << STEP_WORDS_LOG2);
        for v in &mut self.xi {
            *v = StandardNormal.sample(&mut self.rng);
        }
        let m = self.grid;
        // Endpoint of the SDEs' path.
        for i in 0..d {
            self.w[i] = 0.0;
            let xi = match self.coupling {
                Coupling::Coupled => self.xi[i],
                Coupling::Independent => StandardNormal.sample(&mut self.rng),
            };
            self.w[m * d + i] = self.sqrt_eta * xi;
        }
        for p in &self.plan {
            for i in 0..d {
                let (wa, wb) = (self.w[p.a * d + i], self.w[p.b * d + i]);
                let z: f64 = StandardNormal.sample(&mut self.rng);
                self.w[p.c * d + i] = wa + p.weight * (wb - wa) + p.sd * z;
            }
        }
        for j in 0..m {
            for i in 0..d {
                self.increments[j * d + i] = self.w[(j + 1) * d + i] - self.w[j * d + i];
            }
        }
    }

    /// `ξ_k`: SGD's standard normal of the step just drawn.
    pub fn xi(&self) -> &[f64] {
        &self.xi
    }

    /// The `M` increments of the step just drawn, increment `j` at `[j·d, (j+1)·d)`.
    pub fn increments(&self) -> &[f64] {
        &self.increments
    }

    /// `M`, the number of increments per SGD step.
    pub fn grid(&self) -> usize {
        self.grid
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coupled_increments_sum_to_sqrt_eta_xi() {
        let eta = 0.05;
        let mut b = BrownianPath::new(7, 2, eta, 12, Coupling::Coupled);
        b.start_path(3);
        b.draw_step(5);
        for i in 0..2 {
            let sum: f64 = (0..12).map(|j| b.increments()[j * 2 + i]).sum();
            // Round-off of a 12-term telescoping sum of O(0.1) numbers.
            assert!((sum - eta.sqrt() * b.xi()[i]).abs() < 1e-15);
        }
    }

    #[test]
    fn steps_are_random_access_and_paths_differ() {
        let mut b = BrownianPath::new(1, 3, 0.1, 4, Coupling::Coupled);
        b.start_path(0);
        b.draw_step(0);
        b.draw_step(9);
        let ninth = b.increments().to_vec();
        let mut c = BrownianPath::new(1, 3, 0.1, 4, Coupling::Coupled);
        c.start_path(0);
        c.draw_step(9);
        assert_eq!(ninth, c.increments());
        c.start_path(1);
        c.draw_step(9);
        assert_ne!(ninth, c.increments());
    }

    #[test]
    fn sgd_noise_does_not_depend_on_grid_or_coupling() {
        let mut a = BrownianPath::new(4, 2, 0.1, 3, Coupling::Coupled);
        let mut b = BrownianPath::new(4, 2, 0.1, 16, Coupling::Independent);
        a.start_path(8);
        b.start_path(8);
        a.draw_step(2);
        b.draw_step(2);
        assert_eq!(a.xi(), b.xi());
        let sum: f64 = (0..16).map(|j| b.increments()[j * 2]).sum();
        assert!((sum - 0.1f64.sqrt() * b.xi()[0]).abs() > 1e-6);
    }

    #[test]
    fn power_of_two_grids_are_nested() {
        let mut coarse = BrownianPath::new(11, 2, 0.2, 4, Coupling::Coupled);
        let mut fine = BrownianPath::new(11, 2, 0.2, 8, Coupling::Coupled);
        coarse.start_path(5);
        fine.start_path(5);
        coarse.draw_step(3);
        fine.draw_step(3);
        for j in 0..4 {
            for i in 0..2 {
                let pair =
                    fine.increments()[2 * j * 2 + i] + fine.increments()[(2 * j + 1) * 2 + i];
                // Same draws, different rounding of the bridge arithmetic.
                assert!((pair - coarse.increments()[j * 2 + i]).abs() < 1e-14);
            }
        }
    }

    /// Increments are N(0, h): sample mean and variance over many steps within 5
    /// standard errors (40 000 draws: se of the variance ≈ h√(2/40000) = 0.007h).
    #[test]
    fn increments_have_the_brownian_variance() {
        let (eta, m) = (0.3, 5);
        let h = eta / m as f64;
        let mut b = BrownianPath::new(2, 1, eta, m, Coupling::Coupled);
        let mut w = crate::stats::Welford::new();
        for p in 0..400u64 {
            b.start_path(p);
            for k in 0..20 {
                b.draw_step(k);
                b.increments().iter().for_each(|&x| w.push(x));
            }
        }
        let n = w.count() as f64;
        assert!(w.mean().unwrap().abs() < 5.0 * (h / n).sqrt());
        assert!((w.variance().unwrap() - h).abs() < 5.0 * h * (2.0 / n).sqrt());
    }
}
