//! Streaming statistics: the running mean and variance of a stream of numbers in
//! constant memory (Welford's update), and the exact merge of two such summaries (Chan,
//! Golub and LeVeque's pairwise formula), so that Monte Carlo paths can be summarised in
//! chunks, on any number of threads, and the chunks combined afterwards.
//!
//! For a stream `x_1, …, x_n` a [`Welford`] keeps `n`, the mean `x̄` and
//! `M2 = Σ (x_i − x̄)²`. Pushing `x`: `δ = x − x̄`, `x̄ += δ/n`, `M2 += δ (x − x̄)`.
//! Merging `A` and `B`: `δ = x̄_B − x̄_A`, `x̄ = x̄_A + δ n_B/n`,
//! `M2 = M2_A + M2_B + δ² n_A n_B/n`. Both are numerically stable (no `Σx² − n x̄²`
//! cancellation).
//!
//! Floating-point addition is not associative, so the *order* of pushes and merges
//! decides the last bits. Invariant: callers that promise reproducible numbers
//! ([`crate::sim`]) push in a fixed order within fixed-size chunks and merge the chunks
//! in chunk order, whatever the number of threads.
//!
//! ```
//! use hasme::stats::Welford;
//!
//! let (mut left, mut right, mut all) = (Welford::new(), Welford::new(), Welford::new());
//! for (i, x) in [1.0, 2.0, 4.0, 8.0].into_iter().enumerate() {
//!     all.push(x);
//!     if i < 2 { left.push(x) } else { right.push(x) }
//! }
//! left.merge(&right);
//! assert_eq!(left.count(), 4);
//! assert_eq!(left.mean(), Some(3.75));
//! // Sample variance (n − 1 in the denominator): Σ(x − 3.75)²/3 = 28.75/3.
//! assert!((left.variance().unwrap() - 28.75 / 3.0).abs() < 1e-12);
//! assert!((left.stderr().unwrap() - (28.75f64 / 12.0).sqrt()).abs() < 1e-12);
//! assert!((all.mean().unwrap() - 3.75).abs() < 1e-15);
//! ```

/// Count, mean and sum of squared deviations of a stream of numbers.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Welford {
    n: u64,
    mean: f64,
    m2: f64,
}

impl Welford {
    /// An empty summary.
    pub const fn new() -> Welford {
        Welford {
            n: 0,
            mean: 0.0,
            m2: 0.0,
        }
    }

    /// Adds one number.
    #[inline]
    pub fn push(&mut self, x: f64) {
        self.n += 1;
        let delta = x - self.mean;
        self.mean += delta / self.n as f64;
        self.m2 += delta * (x - self.mean);
    }

    /// Adds every number summarised by `other`, as if they had been pushed after this
    /// summary's own (exact in exact arithmetic; the last bits depend on the order).
    pub fn merge(&mut self, other: &Welford) {
        if other.n == 0 {
            return;
        }
        if self.n == 0 {
            *self = *other;
            return;
        }
        let (na, nb) = (self.n as f64, other.n as f64);
        let n = self.n + other.n;
        let delta = other.mean - self.mean;
        self.mean += delta * (nb / n as f64);
        self.m2 += other.m2 + delta * delta * (na * nb / n as f64);
        self.n = n;
    }

    /// The summary with count `n`, mean and `M2` as given: the inverse of
    /// [`parts`](Welford::parts), for summaries stored and read back exactly.
    pub fn from_parts(n: u64, mean: f64, m2: f64) -> Welford {
        Welford { n, mean, m2 }
    }

    /// The count, the mean and `M2` as kept (the mean of an empty summary is 0).
    pub fn parts(&self) -> (u64, f64, f64) {
        (self.n, self.mean, self.m2)
    }

    /// How many numbers were pushed.
    pub fn count(&self) -> u64 {
        self.n
    }

    /// The mean; `None` for an empty summary.
    pub fn mean(&self) -> Option<f64> {
        (self.n > 0).then_some(self.mean)
    }

    /// The sample variance `M2/(n − 1)`; `None` with fewer than two numbers.
    pub fn variance(&self) -> Option<f64> {
        (self.n > 1).then(|| self.m2.max(0.0) / (self.n - 1) as f64)
    }

    /// The standard error of the mean, `√(variance/n)`; `None` with fewer than two
    /// numbers.
    pub fn stderr(&self) -> Option<f64> {
        self.variance().map(|v| (v / self.n as f64).sqrt())
    }
}

/// A fixed-size array of [`Welford`] summaries (one per time, observable and process
/// in a simulation), merged cell by cell. Memory depends on the number of cells only,
/// never on how many samples were pushed.
///
/// ```
/// use hasme::stats::WelfordGrid;
///
/// let mut a = WelfordGrid::new(2);
/// let mut b = WelfordGrid::new(2);
/// a.push(0, 1.0);
/// b.push(0, 3.0);
/// b.push(1, 5.0);
/// a.merge(&b);
/// assert_eq!(a.cell(0).mean(), Some(2.0));
/// assert_eq!(a.cell(1).count(), 1);
/// ```
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WelfordGrid {
    cells: Vec<Welford>,
}

impl WelfordGrid {
    /// `len` empty summaries.
    pub fn new(len: usize) -> WelfordGrid {
        WelfordGrid {
            cells: vec![Welford::new(); len],
        }
    }

    /// The grid of the summaries `cells`.
    pub fn from_cells(cells: Vec<Welford>) -> WelfordGrid {
        WelfordGrid { cells }
    }

    /// Every cell, in order.
    pub fn cells(&self) -> &[Welford] {
        &self.cells
    }

    /// Number of cells.
    pub fn len(&self) -> usize {
        self.cells.len()
    }

    /// Whether the grid has no cells.
    pub fn is_empty(&self) -> bool {
        self.cells.is_empty()
    }

    /// Pushes `x` into cell `i`.
    #[inline]
    pub fn push(&mut self, i: usize, x: f64) {
        self.cells[i].push(x);
    }

    /// Cell `i`.
    pub fn cell(&self, i: usize) -> &Welford {
        &self.cells[i]
    }

    /// Merges `other` into `self` cell by cell (the grids must have the same length).
    pub fn merge(&mut self, other: &WelfordGrid) {
        assert_eq!(self.cells.len(), other.cells.len(), "grids of equal size");
        for (a, b) in self.cells.iter_mut().zip(&other.cells) {
            a.merge(b);
        }
    }

    /// Empties every cell, keeping the allocation.
    pub fn clear(&mut self) {
        self.cells.fill(Welford::new());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn two_pass(xs: &[f64]) -> (f64, f64) {
        let n = xs.len() as f64;
        let mean = xs.iter().sum::<f64>() / n;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
        (mean, var)
    }

    #[test]
    fn empty_and_single_summaries_have_no_spread() {
        let mut w = Welford::new();
        assert_eq!((w.mean(), w.variance(), w.stderr()), (None, None, None));
        w.push(2.5);
        assert_eq!(w.mean(), Some(2.5));
        assert_eq!(w.variance(), None);
        let mut e = Welford::new();
        e.merge(&w);
        assert_eq!(e, w);
        w.merge(&Welford::new());
        assert_eq!(e, w);
    }

    #[test]
    fn large_offset_does_not_cancel() {
        // Σx² − n x̄² would lose every digit here: the values are 1e9 ± 1.
        let mut w = Welford::new();
        for x in [1e9 + 1.0, 1e9 - 1.0, 1e9 + 1.0, 1e9 - 1.0] {
            w.push(x);
        }
        // Exact: variance 4/3. 1e-6: the mean carries ε·1e9 ≈ 2e-7 of round-off.
        assert!((w.variance().unwrap() - 4.0 / 3.0).abs() < 1e-6);
    }

    proptest! {
        /// Streaming and merged summaries agree with the two-pass formulas (tolerance:
        /// a few hundred ulps of the data's scale, the round-off of n ≤ 200 updates).
        #[test]
        fn merge_matches_two_pass(
            xs in prop::collection::vec(-1e3f64..1e3, 2..200),
            split in 0usize..200,
        ) {
            let split = split % xs.len();
            let (mut a, mut b, mut all) = (Welford::new(), Welford::new(), Welford::new());
            for (i, &x) in xs.iter().enumerate() {
                all.push(x);
                if i < split { a.push(x) } else { b.push(x) }
            }
            a.merge(&b);
            let (mean, var) = two_pass(&xs);
            let tol = 1e-10 * (1.0 + var);
            prop_assert_eq!(a.count(), xs.len() as u64);
            prop_assert!((a.mean().unwrap() - mean).abs() < 1e-10 * 1e3);
            prop_assert!((a.variance().unwrap() - var).abs() < tol);
            prop_assert!((all.variance().unwrap() - var).abs() < tol);
        }

        /// The same pushes and merges in the same order give the same bits.
        #[test]
        fn fixed_order_is_bit_reproducible(xs in prop::collection::vec(-1.0f64..1.0, 1..100)) {
            let run = || {
                let mut total = Welford::new();
                for chunk in xs.chunks(7) {
                    let mut c = Welford::new();
                    chunk.iter().for_each(|&x| c.push(x));
                    total.merge(&c);
                }
                total
            };
            prop_assert_eq!(run(), run());
        }
    }
}
