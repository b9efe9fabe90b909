//! Real minibatch SGD for finite sums (docs/models.md §1): `x ← x − η (1/b) Σ_{i∈B} ∇F_i(x)`
//! with a minibatch `B` of `b` examples drawn at every step.
//!
//! **Random stream.** Step `k` of path `p` of a run with seed `S` draws its minibatch
//! from the ChaCha8 keystream with key `S` (little-endian in bytes 0–7) and byte 8 set
//! to 1 (the Brownian paths of [`super::BrownianPath`] use byte 8 = 0, so the two never share
//! a word), stream id `p`, starting at word `k · 2³⁶`. A draw is thus a function of
//! (seed, path, step) alone: nothing depends on the thread that runs the path, on how
//! paths are grouped or interleaved, or on earlier draws, so results are bit-identical on
//! any number of threads. The SDEs' Brownian paths are independent of these draws: SGD
//! and the models are uncoupled, and each difference combines two independent estimates.
//!
//! **Sampling.** With replacement: `b` independent uniform indices. Without replacement:
//! a partial Fisher–Yates shuffle of the identity permutation (the first `b` entries are
//! a uniformly random ordered `b`-subset), whose swaps are then undone in reverse order,
//! so each step costs O(b), not O(n). Uniform integers come from `rand`'s unbiased
//! `random_range`.

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::data::FiniteSum;
use crate::lang::ast::Sampling;
use crate::problem::Problem;
use crate::tape::{Jets, Workspace};

use super::terms::{Failure, finite_state};

/// Words of keystream reserved for each step: step `k` starts at `k · 2³⁶` (as the
/// Brownian paths do; a batch of b indices reads about b words).
const STEP_WORDS_LOG2: u32 = 36;

/// Draws the minibatch of any (path, step).
#[derive(Clone, Debug)]
pub struct MinibatchSampler {
    key: [u8; 32],
    rng: ChaCha8Rng,
    n: usize,
    batch: usize,
    sampling: Sampling,
    /// The identity permutation between draws.
    perm: Vec<usize>,
    swaps: Vec<usize>,
    drawn: Vec<usize>,
}

impl MinibatchSampler {
    /// The sampler of a run with this seed, for `n` examples and batches of `batch`.
    pub fn new(seed: u64, n: usize, batch: usize, sampling: Sampling) -> MinibatchSampler {
        let mut key = [0u8; 32];
        key[..8].copy_from_slice(&seed.to_le_bytes());
        key[8] = 1;
        MinibatchSampler {
            key,
            rng: ChaCha8Rng::from_seed(key),
            n,
            batch,
            sampling,
            perm: (0..n).collect(),
            swaps: Vec::with_capacity(batch),
            drawn: Vec::with_capacity(batch),
        }
    }

    /// The minibatch of step `k` of path `p` (indices 0..n; repeated indices only with
    /// replacement).
    pub fn draw(&mut self, p: u64, k: u64) -> &[usize] {
        // From a fresh generator: `set_stream` on a used one computes a block that
        // `set_word_pos` would discard.
        self.rng = ChaCha8Rng::from_seed(self.key);
        self.rng.set_stream(p);
        self.rng.set_word_pos(u128::from(k) << STEP_WORDS_LOG2);
        self.drawn.clear();
        match self.sampling {
            Sampling::WithReplacement => {
                for _ in 0..self.batch {
                    self.drawn.push(self.rng.random_range(0..self.n));
                }
            }
            Sampling::WithoutReplacement => {
                self.swaps.clear();
                for i in 0..self.batch {
                    let j = self.rng.random_range(i..self.n);
                    self.perm.swap(i, j);
                    self.swaps.push(j);
                }
                self.drawn.extend_from_slice(&self.perm[..self.batch]);
                // Back to the identity, in O(b).
                for (i, &j) in self.swaps.iter().enumerate().rev() {
                    self.perm.swap(i, j);
                }
            }
        }
        &self.drawn
    }
}

/// Minibatch SGD steps of one worker: the sampler and reusable derivative buffers.
#[derive(Debug)]
pub(crate) struct MinibatchSgd {
    sampler: MinibatchSampler,
    ws: Workspace,
    jets: Jets,
    grad: Vec<f64>,
}

impl MinibatchSgd {
    pub(crate) fn new(fs: &FiniteSum, seed: u64, dim: usize) -> MinibatchSgd {
        MinibatchSgd {
            sampler: MinibatchSampler::new(seed, fs.n, fs.batch, fs.sampling),
            ws: Workspace::default(),
            jets: Jets::default(),
            grad: vec![0.0; dim],
        }
    }

    /// Step `k` of path `p` in place: `x ← x − η (1/b) Σ_{i∈B} ∇F_i(x)`. A non-finite
    /// per-example gradient ends the path (a divergence), naming the expression, point
    /// and example.
    pub(crate) fn step(
        &mut self,
        problem: &Problem,
        eta: f64,
        x: &mut [f64],
        (p, k): (u64, u64),
    ) -> Result<(), Failure> {
        finite_state(x)?;
        self.grad.fill(0.0);
        let batch = self.sampler.draw(p, k);
        let b = batch.len() as f64;
        for &i in batch {
            problem
                .example_gradient_with(x, i, &mut self.ws, &mut self.jets)
                .map_err(|e| Failure::Diverged(e.to_string()))?;
            for (a, g) in self.grad.iter_mut().zip(self.jets.gradient(0)) {
                *a += g;
            }
        }
        for (xi, g) in x.iter_mut().zip(&self.grad) {
            *xi -= eta * g / b;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every index is drawn equally often and, without replacement, never twice in a
    /// batch; paths are reproducible and differ from each other.
    #[test]
    fn draws_are_uniform_distinct_and_reproducible() {
        let (n, b) = (5, 3);
        for sampling in [Sampling::WithReplacement, Sampling::WithoutReplacement] {
            let mut s = MinibatchSampler::new(7, n, b, sampling);
            let mut counts = vec![0u64; n];
            let steps = 20_000;
            for k in 0..steps {
                let batch = s.draw(0, k).to_vec();
                if sampling == Sampling::WithoutReplacement {
                    let mut sorted = batch.clone();
                    sorted.sort_unstable();
                    sorted.dedup();
                    assert_eq!(sorted.len(), b, "{batch:?}");
                }
                batch.iter().for_each(|&i| counts[i] += 1);
            }
            // Each count has mean steps·b/n = 12 000 and is Binomial(steps·b, 1/n) with
            // replacement (sd √(60 000·0.2·0.8) ≈ 98) or Binomial(steps, b/n) without
            // (sd √(20 000·0.6·0.4) ≈ 69): 5 × 98 is a < 1e-6 false alarm.
            let mean = (steps as usize * b) as f64 / n as f64;
            for c in counts {
                assert!(
                    (c as f64 - mean).abs() < 5.0 * 98.0,
                    "{sampling:?}: {c} vs {mean}"
                );
            }
            let a: Vec<usize> = (0..10).flat_map(|k| s.draw(3, k).to_vec()).collect();
            // Another order of calls (other paths and steps in between, steps
            // backwards) gives the same draws: a draw depends on (path, step) only.
            let mut again: Vec<Vec<usize>> = Vec::new();
            for k in (0..10).rev() {
                s.draw(5, k);
                again.push(s.draw(3, k).to_vec());
            }
            again.reverse();
            let other: Vec<usize> = (0..10).flat_map(|k| s.draw(4, k).to_vec()).collect();
            assert_eq!(a, again.concat());
            assert_ne!(a, other);
        }
    }
}
