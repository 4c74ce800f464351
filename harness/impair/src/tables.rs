//! netem's delay distribution tables, generated exactly as iproute2's
//! `netem/{normal,pareto,paretonormal}.c` generate them (netem.md §3.2), and
//! `tabledist` with the kernel's integer arithmetic (`sch_netem.c`).
//!
//! Each table is a 4096-entry inverse CDF of a mean-0, σ-1 distribution,
//! scaled by [`DIST_SCALE`] and clipped to `i16` (so deviations are clipped
//! at about ±4σ). The normal generator evaluates `erf` through `libm` (a port
//! of musl's); glibc's `erf` may differ in the last ulp, which could move a
//! bucket boundary by one 5e-5 step (±0.4 in a table entry) in rare cases.

use std::sync::OnceLock;

/// `NETEM_DIST_SCALE`: table entries are σ-units × 8192.
pub(crate) const DIST_SCALE: i64 = 8192;

/// iproute2's generators bin into 16 384 buckets and keep every 4th.
const GEN_SIZE: usize = 16384;
/// Entries per shipped table.
#[cfg(test)]
pub(crate) const TABLE_LEN: usize = GEN_SIZE / 4;

/// Inverse normal CDF over `[-10, 10.05)`, as `normal.c`: the last `x` whose
/// `rint(16384 · Φ(x))` equals `i` is stored at `i`.
fn normal_buckets() -> Vec<f64> {
    let mut table = vec![0.0f64; GEN_SIZE + 1];
    let mut x = -10.0f64;
    // The C loop accumulates `x += .00005` in double; reproduce it exactly.
    while x < 10.05 {
        let phi = 0.5 + 0.5 * libm::erf(x / std::f64::consts::SQRT_2);
        let i = (GEN_SIZE as f64 * phi).round_ties_even() as usize;
        table[i] = x;
        x += 0.00005;
    }
    table
}

fn clip_i16(v: i32) -> i16 {
    v.clamp(i16::MIN as i32, i16::MAX as i32) as i16
}

/// `paretovalue(i)` of `paretonormal.c`; `pareto.c` yields the same values
/// for `i = 0, 4, 8, …` (it walks 65536 down in steps of 16).
fn pareto_value(i: usize) -> i32 {
    const A: f64 = 3.0;
    let j = 65536 - 4 * i as i64;
    let mut d = j as f64 / 65536.0;
    d = 1.0 / d.powf(1.0 / A);
    d -= 1.5;
    d *= (4.0 / 3.0) * DIST_SCALE as f64;
    if d > 32767.0 {
        d = 32767.0;
    }
    d.round_ties_even() as i32
}

fn build_normal() -> Vec<i16> {
    let t = normal_buckets();
    (0..GEN_SIZE)
        .step_by(4)
        .map(|i| clip_i16((t[i] * DIST_SCALE as f64).round_ties_even() as i32))
        .collect()
}

fn build_pareto() -> Vec<i16> {
    // pareto.c prints `(int)rint(dvalue)` with no lower clip; values stay
    // within i16 (the minimum is -1.5·4/3·8192 = -16384).
    (0..GEN_SIZE)
        .step_by(4)
        .map(|i| pareto_value(i) as i16)
        .collect()
}

fn build_paretonormal() -> Vec<i16> {
    let t = normal_buckets();
    (0..GEN_SIZE)
        .step_by(4)
        .map(|i| {
            let norm = (t[i] * DIST_SCALE as f64).round_ties_even() as i32;
            let par = pareto_value(i);
            // C integer division truncates toward zero, as Rust's does.
            clip_i16((norm + 3 * par) / 4)
        })
        .collect()
}

/// The shipped `normal` table.
pub(crate) fn normal() -> &'static [i16] {
    static T: OnceLock<Vec<i16>> = OnceLock::new();
    T.get_or_init(build_normal)
}

/// The shipped `pareto` table.
pub(crate) fn pareto() -> &'static [i16] {
    static T: OnceLock<Vec<i16>> = OnceLock::new();
    T.get_or_init(build_pareto)
}

/// The shipped `paretonormal` table.
pub(crate) fn paretonormal() -> &'static [i16] {
    static T: OnceLock<Vec<i16>> = OnceLock::new();
    T.get_or_init(build_paretonormal)
}

/// The kernel's `tabledist(mu, sigma, …)` for one uniform draw `rnd`, in ns.
/// `table = None` is the default uniform jitter on `[mu − sigma, mu + sigma)`.
pub(crate) fn tabledist(mu: i64, sigma: i32, rnd: u32, table: Option<&[i16]>) -> i64 {
    if sigma == 0 {
        return mu;
    }
    let Some(table) = table else {
        // ((rnd % (2 * (u32)sigma)) + mu) - sigma
        let two_sigma = 2 * sigma as u32;
        return (rnd % two_sigma) as i64 + mu - sigma as i64;
    };
    let t = table[rnd as usize % table.len()] as i64;
    let sigma = sigma as i64;
    let mut x = (sigma % DIST_SCALE) * t;
    if x >= 0 {
        x += DIST_SCALE / 2;
    } else {
        x -= DIST_SCALE / 2;
    }
    // C's `/` truncates toward zero, as Rust's does.
    x / DIST_SCALE + (sigma / DIST_SCALE) * t + mu
}

#[cfg(test)]
mod tests {
    use super::*;

    fn moments(t: &[i16]) -> (f64, f64) {
        let n = t.len() as f64;
        let mean = t.iter().map(|&v| v as f64).sum::<f64>() / n;
        let var = t.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
        (mean / DIST_SCALE as f64, var.sqrt() / DIST_SCALE as f64)
    }

    #[test]
    fn tables_have_netem_shape() {
        for t in [normal(), pareto(), paretonormal()] {
            assert_eq!(t.len(), TABLE_LEN);
            assert!(
                t.windows(2).all(|w| w[0] <= w[1]),
                "inverse CDF must be sorted"
            );
        }
        // Entries that follow from the generators by hand. Bucket 0 keeps
        // the last x with 16384·Φ(x) < 0.5, x ≈ -4.01σ, which clips to
        // i16::MIN. The last bucket kept is 16380 (every 4th of 16384): the
        // last x with 16384·Φ(x) < 16380.5 is ≈ 3.523σ → 28858, so the
        // shipped normal table tops out at +3.52σ, not +4σ. Pareto's first
        // entry is (1 − 1.5)·4/3·8192 = −5461.3; its last, 14.5·10922.7,
        // clips to i16::MAX.
        assert_eq!(normal()[0], i16::MIN);
        assert_eq!(normal()[TABLE_LEN - 1], 28858);
        assert_eq!(pareto()[0], -5461);
        assert_eq!(pareto()[TABLE_LEN - 1], i16::MAX);
        // paretonormal = (normal + 3·pareto) / 4, truncated toward zero,
        // with the *unclipped* normal value (≈ −4.01σ·8192 ≈ −32 840).
        assert_eq!(paretonormal()[0], -12305);
        assert!(((-32_840 + 3 * -5461) / 4 - -12305i32).abs() <= 1);
    }

    #[test]
    fn table_moments_are_close_to_unit() {
        let (m, s) = moments(normal());
        assert!(m.abs() < 0.01 && (s - 1.0).abs() < 0.02, "normal {m} {s}");
    }

    #[test]
    fn uniform_tabledist_covers_half_open_range() {
        assert_eq!(tabledist(100, 10, 0, None), 90);
        assert_eq!(tabledist(100, 10, 19, None), 109);
        assert_eq!(tabledist(100, 10, 20, None), 90);
        assert_eq!(tabledist(100, 0, 12345, None), 100);
    }

    #[test]
    fn table_tabledist_rounds_like_the_kernel() {
        let table = [-8192i16, 4096, 8191];
        // sigma 10000 ns: 10000 % 8192 = 1808; 10000 / 8192 = 1
        assert_eq!(tabledist(0, 10_000, 0, Some(&table)), -10_000);
        assert_eq!(tabledist(0, 10_000, 1, Some(&table)), 5_000);
        // 1808*8191 = 14809328 (+4096) / 8192 = 1808 (trunc) ; + 8191
        assert_eq!(tabledist(0, 10_000, 2, Some(&table)), 1808 + 8191);
    }
}
