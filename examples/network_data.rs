//! Writes the data of the bundled network examples, from fixed seeds:
//!
//! * `examples/teacher.csv` (for `teacher.hasme`): 500 rows of inputs `x1 … x5 ~ N(0, 1)`
//!   and a label `y = Σ_j v_j tanh(Σ_i W_ji x_i) + 0.1 ε` from a random teacher network
//!   with 3 hidden units (`W_ji ~ N(0, 1/5)`, `v_j ~ N(0, 1)`, `ε ~ N(0, 1)`);
//! * `examples/classes.csv` (for `softmax.hasme`): 150 points `x1, x2` in three Gaussian
//!   clusters (50 each, centres on a circle of radius 2, unit spread) with one-hot labels
//!   `y1, y2, y3`.
//!
//! Run `cargo run --release --example network_data` to rewrite both files; the test
//! `bundled_network_data_is_what_its_script_writes` (tests/networks_data.rs) holds the
//! committed files to this script.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use std::fmt::Write as _;

/// The seed of the teacher network and its data.
pub const TEACHER_SEED: u64 = 2024;
/// The seed of the classification data.
pub const CLASSES_SEED: u64 = 7;

/// A number as written in the CSV files: 10 significant digits, enough for the data and
/// short enough that the last digit does not depend on the platform's `tanh`.
fn num(v: f64) -> String {
    format!("{v:.9e}")
}

/// The text of `teacher.csv`.
pub fn teacher_csv() -> String {
    const P: usize = 5;
    const HIDDEN: usize = 3;
    const ROWS: usize = 500;
    let mut rng = ChaCha8Rng::seed_from_u64(TEACHER_SEED);
    let mut normal = || -> f64 { StandardNormal.sample(&mut rng) };
    let w: Vec<f64> = (0..HIDDEN * P)
        .map(|_| normal() / (P as f64).sqrt())
        .collect();
    let v: Vec<f64> = (0..HIDDEN).map(|_| normal()).collect();
    let mut out = String::new();
    let header: Vec<String> = (1..=P).map(|i| format!("x{i}")).collect();
    writeln!(out, "{},y", header.join(",")).unwrap();
    for _ in 0..ROWS {
        let x: Vec<f64> = (0..P).map(|_| normal()).collect();
        let y: f64 = (0..HIDDEN)
            .map(|j| v[j] * (0..P).map(|i| w[j * P + i] * x[i]).sum::<f64>().tanh())
            .sum::<f64>()
            + 0.1 * normal();
        let cells: Vec<String> = x.iter().map(|&c| num(c)).collect();
        writeln!(out, "{},{}", cells.join(","), num(y)).unwrap();
    }
    out
}

/// The text of `classes.csv`.
pub fn classes_csv() -> String {
    const CLASSES: usize = 3;
    const PER_CLASS: usize = 50;
    let mut rng = ChaCha8Rng::seed_from_u64(CLASSES_SEED);
    let mut out = String::from("x1,x2,y1,y2,y3\n");
    for _ in 0..PER_CLASS {
        for k in 0..CLASSES {
            let angle = 2.0 * std::f64::consts::PI * k as f64 / CLASSES as f64;
            let a: f64 = StandardNormal.sample(&mut rng);
            let b: f64 = StandardNormal.sample(&mut rng);
            let x1 = 2.0 * angle.cos() + a;
            let x2 = 2.0 * angle.sin() + b;
            let onehot: Vec<&str> = (0..CLASSES)
                .map(|c| if c == k { "1" } else { "0" })
                .collect();
            writeln!(out, "{},{},{}", num(x1), num(x2), onehot.join(",")).unwrap();
        }
    }
    out
}

#[allow(dead_code)]
fn main() -> std::io::Result<()> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/examples");
    std::fs::write(format!("{dir}/teacher.csv"), teacher_csv())?;
    std::fs::write(format!("{dir}/classes.csv"), classes_csv())?;
    println!("wrote {dir}/teacher.csv and {dir}/classes.csv");
    Ok(())
}
