//! `link_stats` (the library behind `streamlab link-stats`) against
//! analytic values, and a throughput measurement.

use streamlab_impair::{LinkConfig, LinkStatsRun, Preset, link_stats};

fn cfg(json: &str) -> LinkConfig {
    LinkConfig::from_json(json, "").unwrap()
}

fn se(p: f64, n: f64) -> f64 {
    (p * (1.0 - p) / n).sqrt()
}

#[test]
fn loss_duplicate_and_fixed_delay() {
    let n = 200_000u64;
    let r = link_stats(
        &cfg(r#"{"loss":{"model":"random","probability":0.05},"duplicate":{"probability":0.1},"delay":{"base_ms":25.0}}"#),
        LinkStatsRun { packets: n, seed: 3, interval_us: 1000, size: 1200 },
    )
    .unwrap();
    assert_eq!(r.packets, n);
    // Duplicates: Bernoulli(0.1) per packet.
    assert!(
        (r.duplicate_rate - 0.1).abs() <= 5.0 * se(0.1, n as f64),
        "{}",
        r.duplicate_rate
    );
    // A packet is lost iff its original is lost and it was not duplicated:
    // when both fire netem keeps one copy, and when only duplication fires
    // the original gets through. P = 0.05·0.9 = 0.045, binomial.
    let want = 0.05 * 0.9;
    assert!(
        (r.loss_rate - want).abs() <= 5.0 * se(want, n as f64),
        "{}",
        r.loss_rate
    );
    // Fixed delay: every percentile is exactly 25 ms, no reordering.
    assert_eq!(
        (r.delay_ms.p50, r.delay_ms.p99, r.delay_ms.max),
        (25.0, 25.0, 25.0)
    );
    assert_eq!(r.reorder_rate, 0.0);
    assert_eq!(
        r.delivered,
        r.copies - r.dropped.get("loss").copied().unwrap_or(0)
    );
}

#[test]
fn lan_preset_delay_is_base_plus_serialisation() {
    // 0.1 ms + (1200 + 28) B at 125 MB/s = 9.824 µs → 109.824 µs, delivered
    // at the next whole µs: 0.110 ms, for every packet (the link is idle).
    let r = link_stats(
        &Preset::Lan.config(),
        LinkStatsRun {
            packets: 10_000,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(r.loss_rate, 0.0);
    assert_eq!((r.delay_ms.p50, r.delay_ms.max), (0.11, 0.11));
}

#[test]
fn saturated_dsl_preset_delivers_at_the_link_rate() {
    // 1228 B every 1 ms offered to a 1 000 000 B/s link: the link is busy
    // from the first packet, so payload throughput = 10^6·1200/1228 B/s
    // minus what the loss model takes (0.5 % of offered packets are lost
    // before the queue and do not use the link).
    let r = link_stats(
        &cfg(r#"{"preset":"dsl","loss":{"model":"random","probability":0.0}}"#),
        LinkStatsRun {
            packets: 100_000,
            ..Default::default()
        },
    )
    .unwrap();
    let want = 1e6 * 1200.0 / 1228.0;
    assert!(
        (r.throughput_bytes_per_second - want).abs() / want < 1e-3,
        "{}",
        r.throughput_bytes_per_second
    );
    assert!(r.dropped["queue_full"] > 10_000);
    assert_eq!(
        r.reorder_rate, 0.0,
        "rate keeps delivery in order despite jitter"
    );
}

/// Measures packets per second through `link_stats` (run with
/// `cargo test --release -p streamlab-impair --test link_stats -- --ignored --nocapture`).
/// A timing, printed, not asserted.
#[test]
#[ignore = "timing; run explicitly in release"]
#[allow(clippy::disallowed_methods)] // wall-clock timing of the test itself, not engine time
fn measure_packets_per_second() {
    for json in [
        r#"{}"#,
        r#"{"loss":{"model":"random","probability":0.01}}"#,
        r#"{"preset":"wifi"}"#,
        r#"{"loss":{"model":"gilbert_elliott","p":0.01,"r":0.3},"delay":{"base_ms":20,"jitter_ms":5,"distribution":"normal"},
            "duplicate":{"probability":0.01},"corrupt":{"probability":0.01},"reorder":{"probability":0.25,"gap":5}}"#,
    ] {
        let c = cfg(json);
        let start = std::time::Instant::now();
        let r = link_stats(
            &c,
            LinkStatsRun {
                packets: 1_000_000,
                ..Default::default()
            },
        )
        .unwrap();
        let secs = start.elapsed().as_secs_f64();
        println!(
            "{:>10.0} packets/s  ({} packets, loss {:.4})  {}",
            1e6 / secs,
            r.packets,
            r.loss_rate,
            json.replace(char::is_whitespace, "")
        );
    }
}
