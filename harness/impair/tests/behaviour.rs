//! One test per behaviour, driving a single link direction directly.

use proptest::prelude::*;
use streamlab_core::time::SimTime;
use streamlab_impair::{
    ConfigError, CopyFate, Corruption, DelayBreakdown, Delivery, DropReason, LinkConfig,
    LinkDirection, LossCause, PacketId, Preset, Verdict,
};

fn cfg(json: &str) -> LinkConfig {
    serde_json::from_str(json).unwrap_or_else(|e| panic!("{json}: {e}"))
}

fn link(json: &str, seed: u64) -> LinkDirection {
    LinkDirection::new("a->b", &cfg(json), seed).unwrap()
}

fn ms(v: u64) -> SimTime {
    SimTime::from_millis(v)
}

/// Sends `n` packets of `size` bytes every `interval_us`, collecting
/// verdicts and deliveries (polled at every send and timeout).
fn run(
    link: &mut LinkDirection,
    n: u64,
    interval_us: u64,
    size: usize,
) -> (Vec<Verdict>, Vec<Delivery>) {
    let mut verdicts = Vec::new();
    let mut out = Vec::new();
    for i in 0..n {
        let now = SimTime::from_micros(i * interval_us);
        while let Some(d) = link.poll_delivery(now) {
            out.push(d);
        }
        verdicts.push(link.send(now, PacketId(i), vec![i as u8; size]));
        while let Some(d) = link.poll_delivery(now) {
            out.push(d);
        }
    }
    while let Some(t) = link.poll_timeout() {
        while let Some(d) = link.poll_delivery(t) {
            out.push(d);
        }
    }
    (verdicts, out)
}

fn delivered_at(f: &CopyFate) -> Option<SimTime> {
    match f {
        CopyFate::Delivered { at, .. } => Some(*at),
        _ => None,
    }
}

fn is_loss(f: &CopyFate) -> bool {
    matches!(
        f,
        CopyFate::Dropped {
            reason: DropReason::Loss { .. }
        }
    )
}

#[test]
fn total_loss_drops_everything() {
    let mut l = link(r#"{"loss":{"model":"random","probability":1.0}}"#, 1);
    let (v, d) = run(&mut l, 1000, 1000, 100);
    assert!(d.is_empty());
    for v in &v {
        assert_eq!(
            v.copies,
            vec![CopyFate::Dropped {
                reason: DropReason::Loss {
                    cause: LossCause::Random
                }
            }]
        );
    }
}

#[test]
fn zero_loss_delivers_everything_in_order_without_delay() {
    let mut l = link(r#"{"loss":{"model":"random","probability":0.0}}"#, 1);
    let (v, d) = run(&mut l, 1000, 1000, 100);
    assert_eq!(d.len(), 1000);
    for (i, (v, d)) in v.iter().zip(&d).enumerate() {
        assert_eq!(d.packet, PacketId(i as u64));
        assert_eq!(d.at, v.sent_at);
        assert_eq!(delivered_at(&v.copies[0]), Some(v.sent_at));
    }
}

#[test]
fn four_state_with_only_p13_one_loses_everything_and_zero_nothing() {
    let mut l = link(r#"{"loss":{"model":"four_state","p13":1.0}}"#, 3);
    let (v, _) = run(&mut l, 1000, 1000, 10);
    assert!(v.iter().all(|v| is_loss(&v.copies[0])));
    let mut l = link(r#"{"loss":{"model":"four_state","p13":0.0}}"#, 3);
    let (v, _) = run(&mut l, 1000, 1000, 10);
    assert!(v.iter().all(|v| !is_loss(&v.copies[0])));
}

#[test]
fn gilbert_elliott_loss_uses_the_state_the_packet_arrived_in() {
    // p = 1, r = 1: the chain alternates Good, Bad, Good, … and a packet is
    // lost iff it *arrived* in Bad: packets 1, 3, 5, … (packet 0 arrives in
    // Good and moves the chain to Bad).
    let mut l = link(r#"{"loss":{"model":"gilbert_elliott","p":1.0,"r":1.0}}"#, 4);
    let (v, _) = run(&mut l, 100, 1000, 10);
    for (i, v) in v.iter().enumerate() {
        let want = i % 2 == 1;
        assert_eq!(is_loss(&v.copies[0]), want, "packet {i}");
        if want {
            assert_eq!(
                v.copies[0],
                CopyFate::Dropped {
                    reason: DropReason::Loss {
                        cause: LossCause::GilbertElliott { bad: true }
                    }
                }
            );
        }
    }
}

#[test]
fn reorder_100_gap_5_sends_every_5th_immediately() {
    let mut l = link(
        r#"{"delay":{"base_ms":10.0},"reorder":{"probability":1.0,"gap":5}}"#,
        5,
    );
    let (v, d) = run(&mut l, 50, 1000, 10);
    for (i, v) in v.iter().enumerate() {
        let CopyFate::Delivered { at, delay, .. } = &v.copies[0] else {
            panic!("lost")
        };
        if i % 5 == 4 {
            assert_eq!(*at, v.sent_at, "packet {i} should skip the delay");
            assert!(delay.reordered);
        } else {
            assert_eq!(
                *at,
                v.sent_at + std::time::Duration::from_millis(10),
                "packet {i}"
            );
            assert!(!delay.reordered);
        }
    }
    // Packet 4 (sent at 4 ms) arrives before 0..=3 (due at 10..=13 ms).
    let order: Vec<u64> = d.iter().map(|d| d.packet.0).take(5).collect();
    assert_eq!(order, vec![4, 9, 0, 1, 2]);
}

#[test]
fn duplicate_100_sends_two_copies_of_everything() {
    let mut l = link(
        r#"{"duplicate":{"probability":1.0},"delay":{"base_ms":1.0}}"#,
        6,
    );
    let (v, d) = run(&mut l, 500, 1000, 10);
    assert!(
        v.iter()
            .all(|v| v.copies.len() == 2 && v.copies.iter().all(|c| delivered_at(c).is_some()))
    );
    assert_eq!(d.len(), 1000);
    for p in 0..500u64 {
        let copies: Vec<u32> = d
            .iter()
            .filter(|d| d.packet.0 == p)
            .map(|d| d.copy)
            .collect();
        assert_eq!(
            copies,
            vec![0, 1],
            "packet {p}: original then duplicate (tie by copy index)"
        );
    }
}

#[test]
fn duplicate_and_loss_keep_one_copy_as_netem_does() {
    // netem: duplicate fires (count 2), loss fires (count 1): one copy goes
    // out and no clone is made. Recorded as copy 0 lost, copy 1 delivered.
    let mut l = link(
        r#"{"duplicate":{"probability":1.0},"loss":{"model":"random","probability":1.0}}"#,
        6,
    );
    let (v, d) = run(&mut l, 100, 1000, 10);
    assert_eq!(d.len(), 100);
    for v in &v {
        assert!(is_loss(&v.copies[0]));
        assert!(delivered_at(&v.copies[1]).is_some());
    }
    assert!(d.iter().all(|d| d.copy == 1));
}

#[test]
fn rate_limits_back_to_back_packets_exactly() {
    // 1222 + 28 bytes at 125 000 B/s = 10 ms each.
    let mut l = link(
        r#"{"rate":{"bytes_per_second":125000,"packet_overhead_bytes":28}}"#,
        7,
    );
    let v: Vec<Verdict> = (0..5)
        .map(|i| l.send(SimTime::ZERO, PacketId(i), vec![0; 1222]))
        .collect();
    let at: Vec<SimTime> = v
        .iter()
        .map(|v| delivered_at(&v.copies[0]).unwrap())
        .collect();
    assert_eq!(at, vec![ms(10), ms(20), ms(30), ms(40), ms(50)]);
    let CopyFate::Delivered { delay, .. } = &v[2].copies[0] else {
        unreachable!()
    };
    assert_eq!(
        *delay,
        DelayBreakdown {
            base_us: 0,
            jitter_us: 0,
            queue_us: 30_000,
            reordered: false
        }
    );
    // A packet sent once the link is idle again starts at its send time.
    let late = l.send(ms(100), PacketId(9), vec![0; 1222]);
    assert_eq!(delivered_at(&late.copies[0]), Some(ms(110)));
}

#[test]
fn rate_composes_with_delay_like_netem() {
    // First packet: 5 ms delay + 10 ms transmit = 15 ms. Later ones are
    // anchored at the last time_to_send; the 5 ms delay is absorbed by the
    // "time bonus", so they follow every 10 ms.
    let mut l = link(
        r#"{"delay":{"base_ms":5.0},"rate":{"bytes_per_second":125000}}"#,
        7,
    );
    let at: Vec<SimTime> = (0..4)
        .map(|i| {
            delivered_at(&l.send(SimTime::ZERO, PacketId(i), vec![0; 1222]).copies[0]).unwrap()
        })
        .collect();
    assert_eq!(at, vec![ms(15), ms(25), ms(35), ms(45)]);
}

#[test]
fn queue_overflow_tail_drops_and_counts_only_packets_still_queued() {
    let mut l = link(
        r#"{"rate":{"bytes_per_second":125000},"queue_limit_packets":3}"#,
        8,
    );
    let v: Vec<Verdict> = (0..5)
        .map(|i| l.send(SimTime::ZERO, PacketId(i), vec![0; 1222]))
        .collect();
    for v in &v[..3] {
        assert!(delivered_at(&v.copies[0]).is_some());
    }
    for v in &v[3..] {
        assert_eq!(
            v.copies,
            vec![CopyFate::Dropped {
                reason: DropReason::QueueFull { limit: 3 }
            }]
        );
    }
    // At 10 ms packet 0 has left (even if not yet polled): room for one.
    let ok = l.send(ms(10), PacketId(5), vec![0; 1222]);
    assert_eq!(delivered_at(&ok.copies[0]), Some(ms(40)));
    let full = l.send(ms(10), PacketId(6), vec![0; 1222]);
    assert!(matches!(
        full.copies[0],
        CopyFate::Dropped {
            reason: DropReason::QueueFull { .. }
        }
    ));
}

#[test]
fn mtu_drops_larger_datagrams_and_records_sizes() {
    let mut l = link(r#"{"mtu_bytes":1500}"#, 9);
    let ok = l.send(SimTime::ZERO, PacketId(0), vec![0; 1472]);
    assert!(delivered_at(&ok.copies[0]).is_some());
    let big = l.send(SimTime::ZERO, PacketId(1), vec![0; 1473]);
    assert_eq!(
        big.copies,
        vec![CopyFate::Dropped {
            reason: DropReason::Mtu {
                size: 1501,
                mtu: 1500
            }
        }]
    );
}

#[test]
fn corruption_is_recorded_and_applied_to_the_delivered_bytes() {
    for (mode, caught) in [("checksum", true), ("deliver", false)] {
        let mut l = link(
            &format!(r#"{{"corrupt":{{"probability":1.0,"mode":"{mode}"}}}}"#),
            10,
        );
        let (v, d) = run(&mut l, 200, 1000, 64);
        let mut offsets = std::collections::BTreeSet::new();
        for (v, d) in v.iter().zip(&d) {
            let CopyFate::Delivered {
                corruption: Some(c),
                ..
            } = v.copies[0]
            else {
                panic!("not corrupted")
            };
            assert_eq!(d.corruption, Some(c));
            let orig = vec![v.packet.0 as u8; 64];
            let Corruption {
                offset,
                bit,
                old,
                new,
                caught_by_checksum,
            } = c;
            assert_eq!(caught_by_checksum, caught);
            assert_eq!(old, orig[offset]);
            assert_eq!(new, old ^ (1 << bit));
            let mut want = orig.clone();
            want[offset] = new;
            assert_eq!(d.bytes, want, "exactly one bit differs");
            offsets.insert(offset);
        }
        assert!(
            offsets.len() > 40,
            "offsets spread over the payload: {}",
            offsets.len()
        );
    }
}

const BUSY: &str = r#"{"delay":{"base_ms":20.0,"jitter_ms":5.0,"distribution":"paretonormal"},
    "loss":{"model":"gilbert_elliott","p":0.05,"r":0.3,"one_minus_h":0.9,"one_minus_k":0.01},
    "duplicate":{"probability":0.05},"corrupt":{"probability":0.05},"reorder":{"probability":0.1,"gap":3}}"#;

#[test]
fn same_seed_same_decisions_different_seed_different_decisions() {
    let a = run(&mut link(BUSY, 42), 2000, 1000, 32);
    let b = run(&mut link(BUSY, 42), 2000, 1000, 32);
    let c = run(&mut link(BUSY, 43), 2000, 1000, 32);
    assert_eq!(a, b);
    assert_ne!(a.0, c.0);
}

#[test]
fn different_link_names_draw_independent_streams() {
    let c = cfg(r#"{"loss":{"model":"random","probability":0.5}}"#);
    let mut ab = LinkDirection::new("a->b", &c, 1).unwrap();
    let mut ba = LinkDirection::new("b->a", &c, 1).unwrap();
    let la: Vec<bool> = run(&mut ab, 256, 1000, 8)
        .0
        .iter()
        .map(|v| is_loss(&v.copies[0]))
        .collect();
    let lb: Vec<bool> = run(&mut ba, 256, 1000, 8)
        .0
        .iter()
        .map(|v| is_loss(&v.copies[0]))
        .collect();
    let same = la.iter().zip(&lb).filter(|(a, b)| a == b).count();
    // Independent fair coins agree on 128 ± 8 of 256; identical streams on all.
    assert!((80..=176).contains(&same), "{same} of 256 agree");
}

#[test]
fn adding_duplication_does_not_change_the_originals_loss_or_delay() {
    for loss in [
        r#"{"model":"random","probability":0.3}"#,
        r#"{"model":"gilbert_elliott","p":0.1,"r":0.3,"one_minus_h":0.8,"one_minus_k":0.05}"#,
        r#"{"model":"four_state","p13":0.1,"p31":0.5,"p32":0.2,"p23":0.3,"p14":0.05}"#,
        r#"{"model":"netem_compat","probability":0.3,"correlation":0.5}"#,
    ] {
        let base = format!(r#"{{"loss":{loss},"delay":{{"base_ms":10.0,"jitter_ms":3.0}}}}"#);
        let dup = format!(
            r#"{{"loss":{loss},"delay":{{"base_ms":10.0,"jitter_ms":3.0}},"duplicate":{{"probability":0.5}}}}"#
        );
        let (a, _) = run(&mut link(&base, 9), 5000, 1000, 8);
        let (b, _) = run(&mut link(&dup, 9), 5000, 1000, 8);
        assert!(
            b.iter().filter(|v| v.copies.len() == 2).count() > 2000,
            "duplicates happen"
        );
        for (a, b) in a.iter().zip(&b) {
            assert_eq!(a.copies[0], b.copies[0], "{loss}: packet {}", a.packet);
        }
    }
}

#[test]
fn tfifo_lets_jitter_reorder_and_breaks_ties_by_packet_id() {
    // Equal time_to_send: lower packet id first, whatever the send order.
    let mut l = link(r#"{"delay":{"base_ms":10.0}}"#, 11);
    l.send(SimTime::ZERO, PacketId(5), vec![5]);
    l.send(SimTime::ZERO, PacketId(3), vec![3]);
    l.send(SimTime::ZERO, PacketId(4), vec![4]);
    assert!(l.poll_delivery(ms(9)).is_none());
    let ids: Vec<u64> = std::iter::from_fn(|| l.poll_delivery(ms(10)))
        .map(|d| d.packet.0)
        .collect();
    assert_eq!(ids, vec![3, 4, 5]);

    // Jitter larger than the send interval: packets overtake each other,
    // and deliveries come out in time order.
    let mut l = link(r#"{"delay":{"base_ms":50.0,"jitter_ms":20.0}}"#, 11);
    let (v, d) = run(&mut l, 2000, 1000, 8);
    assert!(d.windows(2).all(|w| w[0].at <= w[1].at));
    let overtaken = d.windows(2).filter(|w| w[0].packet > w[1].packet).count();
    assert!(overtaken > 500, "{overtaken}");
    for d in &d {
        assert_eq!(delivered_at(&v[d.packet.0 as usize].copies[0]), Some(d.at));
    }
}

#[test]
fn reconfigure_keeps_queued_times_and_continues_streams() {
    let mut l = link(r#"{"delay":{"base_ms":100.0}}"#, 12);
    l.send(SimTime::ZERO, PacketId(0), vec![0]);
    l.reconfigure(ms(10), &cfg(r#"{"delay":{"base_ms":10.0}}"#))
        .unwrap();
    l.send(ms(10), PacketId(1), vec![1]);
    let got: Vec<(u64, SimTime)> = std::iter::from_fn(|| {
        let t = l.poll_timeout()?;
        l.poll_delivery(t)
    })
    .map(|d| (d.packet.0, d.at))
    .collect();
    assert_eq!(got, vec![(1, ms(20)), (0, ms(100))]);

    // Reconfiguring to the same config mid-stream changes no decision.
    let c = cfg(BUSY);
    let mut a = LinkDirection::new("x", &c, 5).unwrap();
    let mut b = LinkDirection::new("x", &c, 5).unwrap();
    let (va, _) = run(&mut a, 1000, 1000, 16);
    let (vb1, _) = run(&mut b, 1000, 1000, 16);
    assert_eq!(va, vb1);
    let c2 = cfg(r#"{"loss":{"model":"random","probability":0.5}}"#);
    b.reconfigure(ms(1000), &c2).unwrap();
    a.reconfigure(ms(1000), &c2).unwrap();
    let after_a: Vec<Verdict> = (0..100)
        .map(|i| a.send(ms(1000 + i), PacketId(1000 + i), vec![0]))
        .collect();
    let after_b: Vec<Verdict> = (0..100)
        .map(|i| b.send(ms(1000 + i), PacketId(1000 + i), vec![0]))
        .collect();
    assert_eq!(after_a, after_b);
    // A bad config is rejected and leaves the link as it was.
    assert!(
        a.reconfigure(ms(2000), &cfg(r#"{"duplicate":{"probability":2.0}}"#))
            .is_err()
    );
}

#[test]
fn drain_discards_in_flight_copies_and_resets_the_rate_anchor() {
    let mut l = link(r#"{"rate":{"bytes_per_second":125000}}"#, 13);
    for i in 0..3 {
        l.send(SimTime::ZERO, PacketId(i), vec![0; 1222]);
    }
    let gone = l.drain();
    assert_eq!(
        gone.iter().map(|d| d.at).collect::<Vec<_>>(),
        vec![ms(10), ms(20), ms(30)]
    );
    assert_eq!(l.poll_timeout(), None);
    let v = l.send(ms(1), PacketId(3), vec![0; 1222]);
    assert_eq!(delivered_at(&v.copies[0]), Some(ms(11)));
}

#[test]
fn validation_names_json_paths() {
    let c = cfg(
        r#"{"loss":{"model":"gilbert_elliott","p":1.5},"delay":{"base_ms":-1.0},
        "reorder":{"probability":0.5,"gap":0},"rate":{"bytes_per_second":0},"mtu_bytes":0}"#,
    );
    let errs: Vec<String> = c
        .validate("links[0].a_to_b")
        .unwrap_err()
        .iter()
        .map(|e| e.to_string())
        .collect();
    assert_eq!(
        errs,
        vec![
            "links[0].a_to_b.delay.base_ms: -1 is outside the allowed range 0 to 3600000",
            "links[0].a_to_b.loss.p: probability 1.5 is outside [0, 1]",
            "links[0].a_to_b.reorder.gap: 0 is outside the allowed range 1 to 1000000",
            "links[0].a_to_b.reorder: reordering requires a delay (delay.base_ms > 0)",
            "links[0].a_to_b.rate.bytes_per_second: 0 is outside the allowed range 1 to 1000000000000",
            "links[0].a_to_b.mtu_bytes: 0 is outside the allowed range 1 to 65535",
        ]
    );
    let e = cfg(r#"{"loss":{"model":"burst","loss_rate":0.6,"mean_burst_len":1.0}}"#)
        .validate("l")
        .unwrap_err();
    assert!(matches!(e[0], ConfigError::BurstInfeasible { .. }), "{e:?}");
    assert_eq!(
        e[0].to_string(),
        "l.loss: loss_rate 0.6 with mean_burst_len 1 is infeasible: at that burst length the loss rate can be at \
         most L/(1+L) = 0.5"
    );
    let e = cfg(r#"{"loss":{"model":"four_state","p13":0.7,"p14":0.5}}"#)
        .validate("")
        .unwrap_err();
    assert_eq!(e[0].to_string(), "loss: p13 + p14 = 1.2 exceeds 1");
    assert!(LinkDirection::new("x", &cfg(r#"{"corrupt":{"probability":-0.1}}"#), 0).is_err());
}

#[test]
fn unknown_names_and_fields_are_rejected_by_serde() {
    for (json, needle) in [
        (
            r#"{"delay":{"base_ms":1.0,"distribution":"gaussian"}}"#,
            "unknown variant `gaussian`",
        ),
        (
            r#"{"loss":{"model":"bernoulli","probability":0.1}}"#,
            "unknown variant `bernoulli`",
        ),
        (r#"{"preset":"wifi6"}"#, "unknown variant `wifi6`"),
        (
            r#"{"loss":{"model":"random","probability":0.1,"correlation":0.2}}"#,
            "unknown field `correlation`",
        ),
        (r#"{"delay":{"base":1.0}}"#, "unknown field `base`"),
        (r#"{"queue_limit":10}"#, "unknown field `queue_limit`"),
    ] {
        let e = serde_json::from_str::<LinkConfig>(json)
            .unwrap_err()
            .to_string();
        assert!(e.contains(needle), "{json}: {e}");
    }
}

#[test]
fn from_json_reports_the_path_of_type_errors() {
    let e = LinkConfig::from_json(r#"{"delay":{"base_ms":"20"}}"#, "links[1].b_to_a").unwrap_err();
    assert_eq!(e.path, "links[1].b_to_a.delay.base_ms");
    assert!(
        e.to_string()
            .starts_with("links[1].b_to_a.delay.base_ms: invalid type: string \"20\""),
        "{e}"
    );
    let e = LinkConfig::from_json(r#"{"rate":{"bytes_per_second":1}} x"#, "").unwrap_err();
    assert!(e.to_string().contains("trailing characters"), "{e}");
    assert_eq!(
        LinkConfig::from_json(r#"{"preset":"lan"}"#, "")
            .unwrap()
            .preset,
        Some(Preset::Lan)
    );
}

#[test]
fn presets_resolve_validate_and_can_be_overridden() {
    for p in Preset::ALL {
        let c = cfg(&format!(r#"{{"preset":"{}"}}"#, p.name()));
        c.validate("")
            .unwrap_or_else(|e| panic!("{}: {e:?}", p.name()));
        assert_eq!(c.resolved(), p.config());
    }
    let c = cfg(r#"{"preset":"wifi","delay":{"base_ms":5.0}}"#).resolved();
    assert_eq!(c.delay.unwrap().base_ms, 5.0);
    assert_eq!(c.rate, Preset::Wifi.config().rate);
}

#[test]
fn netem_compat_warning_states_the_effective_rate() {
    let w =
        cfg(r#"{"loss":{"model":"netem_compat","probability":0.1,"correlation":0.25}}"#).warnings();
    assert_eq!(w.len(), 1);
    assert!(
        w[0].starts_with("loss.netem_compat: `loss 10% 25%` behaves as about 1.7"),
        "{}",
        w[0]
    );
    assert!(cfg(r#"{"preset":"wifi"}"#).warnings().is_empty());
}

#[test]
fn schema_is_generated() {
    let s = serde_json::to_string(&schemars::schema_for!(LinkConfig)).unwrap();
    for key in [
        "gilbert_elliott",
        "paretonormal",
        "queue_limit_packets",
        "lossy_dsl",
        "3g",
    ] {
        assert!(s.contains(key), "{key}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    /// For any mix of knobs: every delivered copy of a verdict comes out of
    /// the link exactly once, at the verdict's time, in time order, and the
    /// delay breakdown adds up.
    #[test]
    fn verdicts_and_deliveries_agree(
        seed in any::<u64>(),
        base in 0u32..50, jitter in 0u32..30, dist in 0usize..4,
        loss in 0.0f64..0.5, dup in 0.0f64..0.5, reorder in 0.0f64..0.5, gap in 1u32..4,
        rate in prop::option::of(20_000u64..2_000_000), limit in 1u32..50, interval in 100u64..3000,
    ) {
        let dist = ["uniform", "normal", "pareto", "paretonormal"][dist];
        let base = base + 1;
        let mut json = format!(
            r#"{{"delay":{{"base_ms":{base},"jitter_ms":{jitter},"distribution":"{dist}"}},
            "loss":{{"model":"random","probability":{loss}}},"duplicate":{{"probability":{dup}}},
            "reorder":{{"probability":{reorder},"gap":{gap}}},"corrupt":{{"probability":0.1}},
            "queue_limit_packets":{limit}"#
        );
        if let Some(r) = rate {
            json += &format!(r#","rate":{{"bytes_per_second":{r}}}"#);
        }
        json += "}";
        let mut l = link(&json, seed);
        let (v, d) = run(&mut l, 300, interval, 200);
        prop_assert!(d.windows(2).all(|w| w[0].at <= w[1].at));
        let mut expected = Vec::new();
        for v in &v {
            for (i, c) in v.copies.iter().enumerate() {
                if let CopyFate::Delivered { at, delay, .. } = c {
                    prop_assert_eq!(v.sent_at.saturating_add(delay.total()), *at);
                    expected.push((v.packet, i as u32, *at));
                }
            }
        }
        let mut got: Vec<_> = d.iter().map(|d| (d.packet, d.copy, d.at)).collect();
        expected.sort();
        got.sort();
        prop_assert_eq!(expected, got);
    }
}

#[test]
fn ranges_refuse_what_the_arithmetic_cannot_hold_and_the_bounds_run() {
    // Just past the jitter cap once validated (2147.4836 ms rounds to
    // 2147484 µs, past INT_MAX ns) and then panicked in the engine.
    let e = cfg(r#"{"delay":{"base_ms":10,"jitter_ms":2147.4836}}"#)
        .validate("l")
        .unwrap_err();
    assert_eq!(
        e[0].to_string(),
        "l.delay.jitter_ms: 2147.4836 is outside the allowed range 0 to 2147.483"
    );
    for json in [
        r#"{"rate":{"bytes_per_second":1,"packet_overhead_bytes":9223372036854775807}}"#,
        r#"{"rate":{"bytes_per_second":1,"cell_size_bytes":1,"cell_overhead_bytes":-9223372036854775808}}"#,
        r#"{"queue_limit_packets":4294967295}"#,
        r#"{"delay":{"base_ms":1e300}}"#,
    ] {
        assert!(cfg(json).validate("").is_err(), "{json}");
        assert!(LinkDirection::new("x", &cfg(json), 0).is_err(), "{json}");
    }
    // Every knob at its bound: the engine runs without overflow.
    let mut l = link(
        r#"{"delay":{"base_ms":3600000,"jitter_ms":2147.483,"distribution":"pareto"},
            "rate":{"bytes_per_second":1,"packet_overhead_bytes":65535,"cell_size_bytes":65535,"cell_overhead_bytes":65535},
            "reorder":{"probability":1,"gap":1000000},"queue_limit_packets":1000000,"mtu_bytes":65535}"#,
        3,
    );
    for i in 0..2000 {
        let now = SimTime::from_micros(i * 1000);
        let v = l.send(now, PacketId(i), vec![0; 65_507]);
        assert_eq!(v.copies.len(), 1);
        while l.poll_delivery(now).is_some() {}
    }
    // Send times far past the engine's horizon are taken as the horizon.
    let v = l.send(SimTime::from_micros(u64::MAX), PacketId(9999), vec![1]);
    assert_eq!(v.copies.len(), 1);
    while let Some(t) = l.poll_timeout() {
        while l.poll_delivery(t).is_some() {}
    }
}
