//! Tensor Chebyshev interpolation on a box in one or two dimensions.
//!
//! Each axis `[lo, hi]` carries the `n` Chebyshev–Lobatto points
//! `x_j = mid + half · cos(πj/(n − 1))`; a function sampled there is the polynomial
//! `p(x) = Σ_k c_k T_k(t)`, `t = (x − mid)/half`, with the coefficients of the discrete
//! cosine transform (`c_k = (2/(n−1)) Σ″_j f_j cos(πjk/(n−1))`, end terms halved, `c_0`
//! and `c_{n−1}` halved). In two dimensions the transform acts on each axis in turn.
//!
//! **Chopping.** Coefficients past the last one above [`CHOP`] × the largest are
//! dropped: they are round-off, and dropping them keeps the polynomial's continuation
//! outside the box (where an SGD or Euler step from a node near the edge may land)
//! free of amplified noise. The tail of the kept series tells how well the grid resolves
//! the function ([`Interpolant::tail`]).
//!
//! **Outside the box** the interpolant is evaluated as the polynomial it is, as far out
//! as its kept degree `m` allows — to `t = cosh(`[`REACH`]`/m)`, where the largest
//! Chebyshev polynomial kept has grown to `cosh(REACH) ≈ 7e11`, so that round-off at
//! the chopping level (1e−15 of the largest coefficient) stays below 1e−3 of it — and
//! clamped there: the continuation of a resolved analytic function converges a moderate
//! distance out (a low-degree one, such as the quadratic solutions of linear problems,
//! far out), and only points of small probability land beyond.

/// Coefficients below `CHOP` × the largest are round-off (4.5 ulp: the transform's
/// own error on values of that size is a few ulp).
pub const CHOP: f64 = 1e-15;

/// A series of kept degree `m` is continued out to `t = cosh(REACH/m)` half-widths
/// from the box's centre (at least [`MIN_REACH`]), where `T_m` has grown to
/// `cosh(REACH) ≈ 7e11`: round-off at the chopping level then stays below 1e−3 of the
/// series' size.
pub const REACH: f64 = 28.0;

/// Every series is continued at least this far (1.05 half-widths).
pub const MIN_REACH: f64 = 1.05;

/// The continuation's limit for a series of `m` kept coefficients.
fn reach(m: usize) -> f64 {
    if m <= 1 {
        f64::INFINITY
    } else {
        (REACH / (m - 1) as f64).cosh().clamp(MIN_REACH, 1e6)
    }
}

/// One axis of a tensor grid.
#[derive(Clone, Debug, PartialEq)]
pub struct Axis {
    /// Lower end.
    pub lo: f64,
    /// Upper end.
    pub hi: f64,
    /// The nodes, from `hi` down to `lo`.
    pub nodes: Vec<f64>,
    /// The transform from values to coefficients (row k: coefficient k), row-major n×n.
    transform: Vec<f64>,
}

impl Axis {
    /// `n ≥ 2` Chebyshev–Lobatto points on `[lo, hi]` (`lo < hi`).
    pub fn new(lo: f64, hi: f64, n: usize) -> Axis {
        let n = n.max(2);
        let (mid, half) = (0.5 * (lo + hi), 0.5 * (hi - lo));
        let m = (n - 1) as f64;
        let nodes = (0..n)
            .map(|j| {
                // cos(πj/m) by the sine of the complementary angle: symmetric nodes.
                let s = (std::f64::consts::PI * (m - 2.0 * j as f64) / (2.0 * m)).sin();
                mid + half * s
            })
            .collect();
        let mut transform = vec![0.0; n * n];
        for k in 0..n {
            for j in 0..n {
                // cos(πjk/m) from the exact integer jk mod 2m.
                let r = (j * k) % (2 * (n - 1));
                let mut v = (std::f64::consts::PI * r as f64 / m).cos() * 2.0 / m;
                if j == 0 || j == n - 1 {
                    v *= 0.5;
                }
                if k == 0 || k == n - 1 {
                    v *= 0.5;
                }
                transform[k * n + j] = v;
            }
        }
        Axis {
            lo,
            hi,
            nodes,
            transform,
        }
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the axis has no node (never).
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The point's coordinate, [−1, 1] on the box (the interpolant clamps it to its
    /// reach).
    #[inline]
    pub fn local(&self, x: f64) -> f64 {
        (2.0 * x - (self.lo + self.hi)) / (self.hi - self.lo)
    }
}

/// A tensor grid of one or two axes; node `(i, j)` has index `i · n_y + j`.
#[derive(Clone, Debug, PartialEq)]
pub struct Grid {
    /// The axes (1 or 2).
    pub axes: Vec<Axis>,
}

impl Grid {
    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.axes.iter().map(Axis::len).product()
    }

    /// Whether the grid has no node (never).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Node `index` into `out` (length d).
    pub fn node(&self, index: usize, out: &mut [f64]) {
        match self.axes.as_slice() {
            [x] => out[0] = x.nodes[index],
            [x, y] => {
                out[0] = x.nodes[index / y.len()];
                out[1] = y.nodes[index % y.len()];
            }
            _ => unreachable!("grids have one or two axes"),
        }
    }

    /// The chopped interpolant of the values at the nodes.
    pub fn interpolate(&self, values: &[f64]) -> Interpolant {
        match self.axes.as_slice() {
            [x] => {
                let n = x.len();
                let c: Vec<f64> = (0..n)
                    .map(|k| dot(&x.transform[k * n..(k + 1) * n], values))
                    .collect();
                let scale = c.iter().fold(0.0f64, |m, v| m.max(v.abs()));
                let m = c
                    .iter()
                    .rposition(|v| v.abs() > CHOP * scale)
                    .map_or(1, |k| k + 1);
                let tail = tail_of(&c, scale);
                Interpolant {
                    coeffs: c[..m].to_vec(),
                    mx: m,
                    my: 1,
                    reach_x: reach(m),
                    reach_y: f64::INFINITY,
                    scale,
                    tail,
                }
            }
            [x, y] => {
                let (nx, ny) = (x.len(), y.len());
                // Along y (rows of values), then along x.
                let mut half = vec![0.0; nx * ny];
                for i in 0..nx {
                    let row = &values[i * ny..(i + 1) * ny];
                    for l in 0..ny {
                        half[i * ny + l] = dot(&y.transform[l * ny..(l + 1) * ny], row);
                    }
                }
                let mut c = vec![0.0; nx * ny];
                for k in 0..nx {
                    let tk = &x.transform[k * nx..(k + 1) * nx];
                    let out = &mut c[k * ny..(k + 1) * ny];
                    for (i, &w) in tk.iter().enumerate() {
                        if w != 0.0 {
                            axpy(w, &half[i * ny..(i + 1) * ny], out);
                        }
                    }
                }
                let scale = c.iter().fold(0.0f64, |m, v| m.max(v.abs()));
                let big = |v: &f64| v.abs() > CHOP * scale;
                let mx = (0..nx)
                    .rev()
                    .find(|&k| c[k * ny..(k + 1) * ny].iter().any(big))
                    .map_or(1, |k| k + 1);
                let my = (0..ny)
                    .rev()
                    .find(|&l| (0..nx).any(|k| big(&c[k * ny + l])))
                    .map_or(1, |l| l + 1);
                // The tail: the largest coefficient in the last quarter of either degree.
                let qx = nx - nx / 4;
                let qy = ny - ny / 4;
                let mut tail = 0.0f64;
                for k in 0..nx {
                    for l in 0..ny {
                        if k >= qx || l >= qy {
                            tail = tail.max(c[k * ny + l].abs());
                        }
                    }
                }
                let mut coeffs = vec![0.0; mx * my];
                for k in 0..mx {
                    coeffs[k * my..(k + 1) * my].copy_from_slice(&c[k * ny..k * ny + my]);
                }
                Interpolant {
                    coeffs,
                    mx,
                    my,
                    reach_x: reach(mx),
                    reach_y: reach(my),
                    scale,
                    tail,
                }
            }
            _ => unreachable!("grids have one or two axes"),
        }
    }
}

/// The largest coefficient in the last quarter of the series.
fn tail_of(c: &[f64], _scale: f64) -> f64 {
    let n = c.len();
    c[n - n / 4..].iter().fold(0.0f64, |m, v| m.max(v.abs()))
}

/// A chopped Chebyshev series in one or two variables.
#[derive(Clone, Debug, PartialEq)]
pub struct Interpolant {
    /// Coefficients, row-major `mx × my` (`my = 1` in one dimension).
    pub coeffs: Vec<f64>,
    /// Kept degree + 1 along x.
    pub mx: usize,
    /// Kept degree + 1 along y.
    pub my: usize,
    /// How far out along x the series is continued (local coordinate).
    pub reach_x: f64,
    /// The same along y.
    pub reach_y: f64,
    /// The largest coefficient.
    pub scale: f64,
    /// The largest coefficient in the last quarter of the full series along either
    /// axis: how far the grid is from resolving the function.
    pub tail: f64,
}

impl Interpolant {
    /// The 1-D series at `t` (a local coordinate).
    #[inline]
    pub fn eval1(&self, t: f64) -> f64 {
        clenshaw(&self.coeffs, t.clamp(-self.reach_x, self.reach_x))
    }

    /// A row of [`Interpolant::contract_x`] at local `ty`.
    #[inline]
    pub fn eval_row(&self, row: &[f64], ty: f64) -> f64 {
        clenshaw(row, ty.clamp(-self.reach_y, self.reach_y))
    }

    /// Contracts the x-axis at local `tx`: `v_l = Σ_k T_k(tx) c_{kl}`, into `v` (len my).
    #[inline]
    pub fn contract_x(&self, tx: f64, v: &mut [f64]) {
        let my = self.my;
        let tx = tx.clamp(-self.reach_x, self.reach_x);
        v.fill(0.0);
        let (mut t0, mut t1) = (1.0, tx);
        for k in 0..self.mx {
            let tk = match k {
                0 => 1.0,
                1 => tx,
                _ => {
                    let t2 = 2.0 * tx * t1 - t0;
                    t0 = t1;
                    t1 = t2;
                    t2
                }
            };
            axpy(tk, &self.coeffs[k * my..(k + 1) * my], v);
        }
    }
}

/// `Σ_k c_k T_k(t)` by Clenshaw's recurrence.
#[inline]
pub fn clenshaw(c: &[f64], t: f64) -> f64 {
    let (mut b1, mut b2) = (0.0, 0.0);
    let t2 = 2.0 * t;
    for &ck in c[1..].iter().rev() {
        let b0 = ck + t2 * b1 - b2;
        b2 = b1;
        b1 = b0;
    }
    c[0] + t * b1 - b2
}

#[inline]
fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

#[inline]
fn axpy(a: f64, x: &[f64], y: &mut [f64]) {
    for (yi, xi) in y.iter_mut().zip(x) {
        *yi += a * xi;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn polynomials_are_reproduced_inside_and_outside() {
        let g = Grid {
            axes: vec![Axis::new(-1.0, 3.0, 12)],
        };
        let p = |x: f64| 1.0 - 2.0 * x + 0.5 * x.powi(3);
        let v: Vec<f64> = g.axes[0].nodes.iter().map(|&x| p(x)).collect();
        let it = g.interpolate(&v);
        assert_eq!(it.mx, 4, "a cubic keeps four coefficients");
        for x in [-1.0, 0.3, 2.9, 3.5, -1.8] {
            let t = g.axes[0].local(x);
            // 1e-13: a cubic of size ~15 on the box, evaluated from four coefficients.
            assert!((it.eval1(t) - p(x)).abs() < 1e-13, "{x}");
        }
    }

    #[test]
    fn two_dimensional_series_match_the_function() {
        let g = Grid {
            axes: vec![Axis::new(-1.0, 2.0, 24), Axis::new(0.0, 1.5, 20)],
        };
        let f = |x: f64, y: f64| (x * y).cos() + x * x - y;
        let mut v = vec![0.0; g.len()];
        let mut p = [0.0; 2];
        for (i, vi) in v.iter_mut().enumerate() {
            g.node(i, &mut p);
            *vi = f(p[0], p[1]);
        }
        let it = g.interpolate(&v);
        assert!(it.tail < 1e-13, "{}", it.tail);
        let mut row = vec![0.0; it.my];
        for (x, y) in [(0.1, 0.2), (1.9, 1.4), (-0.7, 0.9)] {
            it.contract_x(g.axes[0].local(x), &mut row);
            let value = it.eval_row(&row, g.axes[1].local(y));
            assert!((value - f(x, y)).abs() < 1e-13, "({x}, {y})");
        }
    }
}
