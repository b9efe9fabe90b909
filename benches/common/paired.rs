//! Paired timing of two functions, shared by the benches that report a ratio against a
//! hand-written baseline (included with `#[path]`).

use std::hint::black_box;
use std::time::Instant;

/// The median over `rounds` of the per-round time ratio `a / b`, each round timing
/// `reps` calls of `a` then `reps` calls of `b` back to back (the order alternating
/// between rounds), with the first and third quartiles. Criterion measures one function
/// after the other, seconds apart, so on a shared machine a slow spell can land on one
/// side only; pairing the two within each round keeps such spells out of the ratio.
pub fn paired_ratio<A, B>(
    rounds: usize,
    reps: usize,
    mut a: impl FnMut() -> A,
    mut b: impl FnMut() -> B,
) -> Paired {
    let (mut per_a, mut per_b) = (vec![], vec![]);
    let mut ratios: Vec<f64> = (0..rounds)
        .map(|r| {
            let (ta, tb) = if r % 2 == 0 {
                let ta = time(&mut a, reps);
                (ta, time(&mut b, reps))
            } else {
                let tb = time(&mut b, reps);
                (time(&mut a, reps), tb)
            };
            per_a.push(ta / reps as f64);
            per_b.push(tb / reps as f64);
            ta / tb
        })
        .collect();
    for v in [&mut ratios, &mut per_a, &mut per_b] {
        v.sort_by(f64::total_cmp);
    }
    Paired {
        ratio: [
            ratios[rounds / 4],
            ratios[rounds / 2],
            ratios[3 * rounds / 4],
        ],
        a: per_a[rounds / 2],
        b: per_b[rounds / 2],
    }
}

/// What [`paired_ratio`] measured.
pub struct Paired {
    /// First quartile, median and third quartile of the per-round ratios `a / b`.
    pub ratio: [f64; 3],
    /// Median seconds per call of `a` and of `b`.
    pub a: f64,
    pub b: f64,
}

/// Seconds for `reps` calls of `f` (generic, so `f` is inlined into its loop as in
/// criterion's own).
fn time<R, F: FnMut() -> R>(f: &mut F, reps: usize) -> f64 {
    let start = Instant::now();
    for _ in 0..reps {
        black_box(f());
    }
    start.elapsed().as_secs_f64()
}

impl Paired {
    /// "in paired rounds: median r (quartiles q1–q3); per call a vs b" with times in
    /// `unit` (`scale` per second).
    pub fn describe(&self, scale: f64, unit: &str) -> String {
        let [q1, median, q3] = self.ratio;
        format!(
            "in paired rounds: median {median:.2} (quartiles {q1:.2}–{q3:.2}); per call {:.1} {unit} vs {:.1} {unit}",
            self.a * scale,
            self.b * scale
        )
    }
}
