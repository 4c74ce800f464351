//! Statistical tests over 10^6 packets. Every tolerance is derived from the
//! model (the derivation is next to each test); "5σ" means five standard
//! errors of the estimate, so a correct engine fails with probability
//! below 1e-6 per check, and the seeds are fixed anyway.
//!
//! The crate is built with opt-level 3 even in test builds (root
//! `Cargo.toml`), which keeps these fast under a plain `cargo test`.

use streamlab_core::time::SimTime;
use streamlab_impair::{
    CopyFate, Distribution, LinkConfig, LinkDirection, LinkStatsReport, LinkStatsRun, PacketId,
    link_stats,
};

const N: u64 = 1_000_000;

fn cfg(json: &str) -> LinkConfig {
    serde_json::from_str(json).unwrap_or_else(|e| panic!("{json}: {e}"))
}

fn stats(json: &str, packets: u64, seed: u64) -> LinkStatsReport {
    link_stats(
        &cfg(json),
        LinkStatsRun {
            packets,
            seed,
            interval_us: 1000,
            size: 100,
        },
    )
    .unwrap()
}

fn assert_within(what: &str, got: f64, want: f64, tol: f64) {
    assert!(
        (got - want).abs() <= tol,
        "{what}: got {got}, want {want} ± {tol}"
    );
}

/// Standard error of a binomial proportion `p` over `n` trials.
fn binom_se(p: f64, n: f64) -> f64 {
    (p * (1.0 - p) / n).sqrt()
}

/// Stationary distribution and asymptotic variance for a finite Markov chain
/// observed through `f(state)` plus independent Bernoulli noise: the packet
/// arriving in state `s` is lost with probability `f[s]`.
///
/// Var(mean of N losses) ≈ σ²/N with
///   σ² = Σ_s π_s f_s(1 − f_s)                      (Bernoulli noise)
///      + 2 Σ_s π_s f̄_s g_s − Σ_s π_s f̄_s²          (chain part)
/// where f̄ = f − πf and g = Σ_{k≥0} P^k f̄ (the Poisson equation's solution;
/// the standard CLT for ergodic chains). The noise is independent of the
/// chain in netem's GE (separate draws), so there are no cross terms.
fn chain(p: &[Vec<f64>], f: &[f64]) -> (f64, f64) {
    let n = f.len();
    let mut pi = vec![1.0 / n as f64; n];
    for _ in 0..200_000 {
        let mut next = vec![0.0; n];
        for i in 0..n {
            for j in 0..n {
                next[j] += pi[i] * p[i][j];
            }
        }
        pi = next;
    }
    let mean: f64 = (0..n).map(|s| pi[s] * f[s]).sum();
    let fbar: Vec<f64> = f.iter().map(|v| v - mean).collect();
    let mut term = fbar.clone();
    let mut g = vec![0.0; n];
    for _ in 0..200_000 {
        for s in 0..n {
            g[s] += term[s];
        }
        term = (0..n)
            .map(|i| (0..n).map(|j| p[i][j] * term[j]).sum())
            .collect();
    }
    let noise: f64 = (0..n).map(|s| pi[s] * f[s] * (1.0 - f[s])).sum();
    let chain_var: f64 = (0..n)
        .map(|s| 2.0 * pi[s] * fbar[s] * g[s] - pi[s] * fbar[s] * fbar[s])
        .sum();
    (mean, noise + chain_var)
}

#[test]
fn iid_loss_rate() {
    // Binomial: se = sqrt(p(1−p)/N) = 3e-4 at p = 0.1.
    let r = stats(r#"{"loss":{"model":"random","probability":0.1}}"#, N, 1);
    assert_within("loss_rate", r.loss_rate, 0.1, 5.0 * binom_se(0.1, N as f64));
    // Runs of i.i.d. losses are geometric: mean 1/(1−p), variance p/(1−p)²,
    // over ≈ N·p·(1−p) runs.
    let runs = N as f64 * 0.1 * 0.9;
    assert_within(
        "mean_loss_burst",
        r.mean_loss_burst,
        1.0 / 0.9,
        5.0 * (0.1f64 / 0.81 / runs).sqrt(),
    );
}

#[test]
fn gilbert_elliott_stationary_rate() {
    let (p, r, one_minus_h, one_minus_k) = (0.01, 0.3, 0.8, 0.01);
    let rep = stats(
        &format!(
            r#"{{"loss":{{"model":"gilbert_elliott","p":{p},"r":{r},"one_minus_h":{one_minus_h},"one_minus_k":{one_minus_k}}}}}"#
        ),
        N,
        2,
    );
    // π_B = p/(p+r); loss = π_B(1−h) + π_G(1−k).
    let pi_b = p / (p + r);
    let want = pi_b * one_minus_h + (1.0 - pi_b) * one_minus_k;
    let (mean, var) = chain(
        &[vec![1.0 - p, p], vec![r, 1.0 - r]],
        &[one_minus_k, one_minus_h],
    );
    assert!((mean - want).abs() < 1e-12);
    assert_within(
        "GE loss_rate",
        rep.loss_rate,
        want,
        5.0 * (var / N as f64).sqrt(),
    );
}

#[test]
fn simple_gilbert_elliott_mean_burst_is_one_over_r() {
    let (p, r) = (0.02, 0.25);
    let rep = stats(
        &format!(r#"{{"loss":{{"model":"gilbert_elliott","p":{p},"r":{r},"one_minus_h":1.0}}}}"#),
        N,
        3,
    );
    let (mean, var) = chain(&[vec![1.0 - p, p], vec![r, 1.0 - r]], &[0.0, 1.0]);
    assert_within(
        "loss_rate",
        rep.loss_rate,
        p / (p + r),
        5.0 * (var / N as f64).sqrt(),
    );
    assert!((mean - p / (p + r)).abs() < 1e-12);
    // With 1−h = 1 and 1−k = 0 a burst is a stay in Bad: geometric with mean
    // 1/r and variance (1−r)/r², over B observed bursts.
    let bursts: u64 = rep.loss_bursts.values().sum();
    let se = ((1.0 - r) / (r * r) / bursts as f64).sqrt();
    assert_within("mean_loss_burst", rep.mean_loss_burst, 1.0 / r, 5.0 * se);
}

#[test]
fn burst_model_realises_rate_and_mean_burst() {
    for (rate, len) in [(0.05, 4.0), (0.01, 1.5), (0.3, 2.0)] {
        let rep = stats(
            &format!(r#"{{"loss":{{"model":"burst","loss_rate":{rate},"mean_burst_len":{len}}}}}"#),
            N,
            4,
        );
        let r = 1.0 / len;
        let p = r * rate / (1.0 - rate);
        let (mean, var) = chain(&[vec![1.0 - p, p], vec![r, 1.0 - r]], &[0.0, 1.0]);
        assert!(
            (mean - rate).abs() < 1e-9,
            "the mapping gives π_B = loss_rate"
        );
        assert_within(
            "burst loss_rate",
            rep.loss_rate,
            rate,
            5.0 * (var / N as f64).sqrt(),
        );
        let bursts: u64 = rep.loss_bursts.values().sum();
        assert_within(
            "burst mean",
            rep.mean_loss_burst,
            len,
            5.0 * ((1.0 - r) / (r * r) / bursts as f64).sqrt(),
        );
    }
}

#[test]
fn four_state_stationary_rate() {
    let (p13, p31, p32, p23, p14) = (0.02, 0.6, 0.3, 0.2, 0.01);
    let rep = stats(
        &format!(
            r#"{{"loss":{{"model":"four_state","p13":{p13},"p31":{p31},"p32":{p32},"p23":{p23},"p14":{p14}}}}}"#
        ),
        N,
        5,
    );
    // States 1..4 as in netem.md §3.4; a packet is lost iff the new state is
    // 3 or 4, so the loss indicator is f(state after the packet).
    let m = vec![
        vec![1.0 - p13 - p14, 0.0, p13, p14],
        vec![0.0, 1.0 - p23, p23, 0.0],
        vec![p31, p32, 1.0 - p31 - p32, 0.0],
        vec![1.0, 0.0, 0.0, 0.0],
    ];
    let (want, var) = chain(&m, &[0.0, 0.0, 1.0, 1.0]);
    assert_within(
        "4-state loss_rate",
        rep.loss_rate,
        want,
        5.0 * (var / N as f64).sqrt(),
    );
}

#[test]
fn four_state_with_only_p13_is_bernoulli() {
    let p = 0.07;
    let rep = stats(
        &format!(r#"{{"loss":{{"model":"four_state","p13":{p}}}}}"#),
        N,
        6,
    );
    assert_within("loss_rate", rep.loss_rate, p, 5.0 * binom_se(p, N as f64));
    let runs = N as f64 * p * (1.0 - p);
    assert_within(
        "mean burst",
        rep.mean_loss_burst,
        1.0 / (1.0 - p),
        5.0 * (p / (1.0 - p).powi(2) / runs).sqrt(),
    );
    // Independence: run lengths are geometric, P(L = k) = p^(k−1)(1 − p),
    // so (#runs of 2)/(#runs of 1) estimates p; given c1 + c2 runs of length
    // ≤ 2 it is binomial, se ≈ sqrt(p(1−p)/c1)·(1 + p).
    let c1 = rep.loss_bursts[&1] as f64;
    let c2 = rep.loss_bursts[&2] as f64;
    let ratio_se = (p * (1.0 - p) / c1).sqrt() * (1.0 + p);
    assert_within("runs(2)/runs(1) ≈ p", c2 / c1, p, 5.0 * ratio_se);
}

/// Delays of delivered copies, µs, for `n` packets 1 ms apart.
fn delays_us(json: &str, n: u64, seed: u64) -> Vec<i64> {
    let mut link = LinkDirection::new("delay", &cfg(json), seed).unwrap();
    let mut d = Vec::with_capacity(n as usize);
    for i in 0..n {
        let now = SimTime::from_micros(i * 1000);
        let v = link.send(now, PacketId(i), vec![0; 10]);
        if let CopyFate::Delivered { at, .. } = v.copies[0] {
            d.push((at.as_micros() - now.as_micros()) as i64);
        }
        // Keep the queue short: everything due is taken out.
        while link.poll_delivery(now).is_some() {}
    }
    d
}

/// Nearest-rank percentile.
fn pct(sorted: &[i64], q: f64) -> i64 {
    sorted[((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1]
}

#[test]
fn uniform_delay_mean_and_percentiles() {
    // netem: delay = (rnd % 2J) + T − J ns, rnd uniform on [0, 2^32); then
    // rounded up to µs. With m = 2J, q = ⌊2^32/m⌋, r = 2^32 mod m, the value
    // x has probability (q + [x < r])/2^32 (netem's modulo bias, kept).
    let (t_us, j_us) = (100_000i64, 10_000i64);
    let m = (2 * j_us * 1000) as u64;
    let (q, r) = ((1u64 << 32) / m, (1u64 << 32) % m);
    let two32 = (1u64 << 32) as f64;
    let mean_x = (q as f64 * (m as f64) * (m as f64 - 1.0) / 2.0
        + r as f64 * (r as f64 - 1.0) / 2.0)
        / two32;
    let want_mean_us = t_us as f64 - j_us as f64 + mean_x / 1000.0;
    let sd_us = (2 * j_us) as f64 / 12f64.sqrt();
    let mut d = delays_us(r#"{"delay":{"base_ms":100.0,"jitter_ms":10.0}}"#, N, 7);
    let mean = d.iter().sum::<i64>() as f64 / d.len() as f64;
    // se of the mean = sd/√N; +1 µs for the round-up to whole µs.
    assert_within(
        "uniform mean µs",
        mean,
        want_mean_us,
        5.0 * sd_us / (N as f64).sqrt() + 1.0,
    );
    d.sort_unstable();
    // Quantile x_q of X: count(x)/2^32 = (q·x + min(x, r))/2^32 = q. The
    // sample quantile's rank is within 5·sqrt(q(1−q)N) of q·N.
    let inv = |p: f64| {
        let (mut lo, mut hi) = (0u64, m);
        while lo < hi {
            let mid = (lo + hi) / 2;
            if (q * mid + mid.min(r)) as f64 / two32 < p {
                lo = mid + 1
            } else {
                hi = mid
            }
        }
        t_us - j_us + (lo as i64) / 1000
    };
    for qq in [0.5, 0.9, 0.99] {
        let s = 5.0 * binom_se(qq, N as f64);
        let (lo, hi) = (inv(qq - s) - 1, inv(qq + s) + 1);
        let got = pct(&d, qq);
        assert!(
            (lo..=hi).contains(&got),
            "p{}: {got} not in [{lo}, {hi}]",
            qq * 100.0
        );
    }
    assert!(*d.first().unwrap() >= t_us - j_us && *d.last().unwrap() <= t_us + j_us);
    assert!(
        *d.last().unwrap() >= t_us + j_us - 10,
        "the top of the range is reached"
    );
}

#[test]
fn table_delays_match_the_tables_own_moments() {
    for dist in [
        Distribution::Normal,
        Distribution::Pareto,
        Distribution::Paretonormal,
    ] {
        let table = dist.table().unwrap();
        let name = serde_json::to_value(dist).unwrap();
        let (t_us, j_us) = (100_000f64, 10_000f64);
        // delay = T + J·t/8192 with t uniform over the table (rnd % 4096 is
        // exactly uniform: 4096 divides 2^32).
        let tm = table.iter().map(|&v| v as f64).sum::<f64>() / table.len() as f64;
        let tv = table.iter().map(|&v| (v as f64 - tm).powi(2)).sum::<f64>() / table.len() as f64;
        let want_mean = t_us + j_us * tm / 8192.0;
        let sd = j_us * tv.sqrt() / 8192.0;
        let json =
            format!(r#"{{"delay":{{"base_ms":100.0,"jitter_ms":10.0,"distribution":{name}}}}}"#);
        let mut d = delays_us(&json, N, 8);
        let mean = d.iter().sum::<i64>() as f64 / d.len() as f64;
        assert_within(
            &format!("{name} mean µs"),
            mean,
            want_mean,
            5.0 * sd / (N as f64).sqrt() + 1.0,
        );
        d.sort_unstable();
        let at = |i: usize| t_us + j_us * table[i.min(table.len() - 1)] as f64 / 8192.0;
        for qq in [0.5, 0.9, 0.99] {
            let s = 5.0 * binom_se(qq, N as f64);
            let lo = at(((qq - s) * 4096.0).floor() as usize) - 1.0;
            let hi = at(((qq + s) * 4096.0).ceil() as usize) + 1.0;
            let got = pct(&d, qq) as f64;
            assert!(
                got >= lo && got <= hi,
                "{name} p{}: {got} not in [{lo}, {hi}]",
                qq * 100.0
            );
        }
        // Every one of the 4096 entries is drawn w.p. 1 − (1 − 1/4096)^N ≈ 1.
        assert_within(
            &format!("{name} max"),
            *d.last().unwrap() as f64,
            at(4095),
            1.0,
        );
        assert_within(&format!("{name} min"), d[0] as f64, at(0), 1.0);
    }
}

#[test]
fn rate_limited_throughput_is_the_link_rate() {
    // 100 + 28 bytes at 12 800 B/s = 10 ms per packet; packets offered every
    // 1 ms, so the queue fills and the link is busy from the first send: k
    // packets delivered by 10·k ms, exactly.
    let rep = stats(r#"{"rate":{"bytes_per_second":12800}}"#, 200_000, 9);
    assert_within(
        "throughput B/s",
        rep.throughput_bytes_per_second,
        10_000.0,
        1e-6,
    );
    assert!(rep.dropped["queue_full"] > 150_000);
    assert_eq!(rep.reorder_rate, 0.0);
}

#[test]
fn duplicate_corrupt_and_reorder_rates() {
    let rep = stats(
        r#"{"delay":{"base_ms":10.0},"duplicate":{"probability":0.05},"corrupt":{"probability":0.02},
            "reorder":{"probability":0.25}}"#,
        N,
        10,
    );
    assert_within(
        "duplicate_rate",
        rep.duplicate_rate,
        0.05,
        5.0 * binom_se(0.05, N as f64),
    );
    assert_within(
        "corrupt_rate",
        rep.corrupt_rate,
        0.02,
        5.0 * binom_se(0.02, rep.delivered as f64),
    );
    // netem's reorder path is taken by a fraction 0.25 of delivered copies
    // (gap 1: every copy is eligible). Each such copy leaves at once, ahead
    // of the ~10 earlier packets still in their 10 ms delay, so it is an
    // overtaker, and only those are: reorder_rate ≈ 0.25 (it misses only
    // when the ~10 previous copies all skipped the delay: 0.25^10).
    let n = rep.delivered as f64;
    assert_within(
        "reordered_by_netem",
        rep.reordered_by_netem as f64 / n,
        0.25,
        5.0 * binom_se(0.25, n),
    );
    assert_within(
        "reorder_rate",
        rep.reorder_rate,
        0.25,
        5.0 * binom_se(0.25, n),
    );
}

#[test]
fn netem_compat_matches_the_kernel_arithmetic_table() {
    // netem.md §5: effective loss for `loss P C`, each computed over 2–4 M
    // packets and printed to 2–3 significant digits. The process is a
    // clustered point process (mean burst b); the variance of the count is
    // ≈ (N·rate/b)·E[L²] ≤ N·rate·b·2, so se ≈ sqrt(2·rate·b/N). We allow
    // 5 se for our 10^6 packets plus 5 se for the table's (≥ 2 M) plus half
    // a unit of the table's last printed digit.
    for (p, c, rate, burst, digit) in [
        (0.01, 0.0, 0.0100, 1.01, 0.0001),
        (0.05, 0.25, 0.0019, 1.06, 0.0001),
        (0.10, 0.25, 0.0176, 1.12, 0.0001),
        (0.10, 0.50, 0.0011, 1.14, 0.0001),
        (0.20, 0.75, 0.0012, 1.37, 0.0001),
        (0.30, 0.50, 0.130, 1.57, 0.001),
    ] {
        let rep = stats(
            &format!(
                r#"{{"loss":{{"model":"netem_compat","probability":{p},"correlation":{c}}}}}"#
            ),
            N,
            11,
        );
        let se = |n: f64| (2.0 * rate * burst / n).sqrt();
        let tol = 5.0 * se(N as f64) + 5.0 * se(2e6) + digit / 2.0;
        eprintln!(
            "loss {p} {c}: realised {:.5} % (table {:.4} %), mean burst {:.3}",
            rep.loss_rate * 100.0,
            rate * 100.0,
            rep.mean_loss_burst
        );
        assert_within(&format!("loss {p} {c}"), rep.loss_rate, rate, tol);
        // The warning's own estimate (2^22 packets) agrees too.
        let (w, _) = warn_rate(p, c);
        assert_within(
            &format!("warning {p} {c}"),
            w,
            rate,
            5.0 * se(4.2e6) + 5.0 * se(2e6) + digit / 2.0,
        );
    }
    // `loss 1% 25%` → 0.00015 %: 1.5 expected events in 10^6.
    let rep = stats(
        r#"{"loss":{"model":"netem_compat","probability":0.01,"correlation":0.25}}"#,
        N,
        12,
    );
    assert!(rep.loss_rate < 1e-5, "{}", rep.loss_rate);
}

/// Parses the effective rate back out of the warning text.
fn warn_rate(p: f64, c: f64) -> (f64, String) {
    let w = cfg(&format!(
        r#"{{"loss":{{"model":"netem_compat","probability":{p},"correlation":{c}}}}}"#
    ))
    .warnings();
    let text = w[0].clone();
    let num = text
        .split("behaves as about ")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap();
    (num.parse::<f64>().unwrap() / 100.0, text)
}
