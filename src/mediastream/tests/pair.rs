//! Machine tests over the in-process pair driver (spec §3–§9).

mod support;

use proptest::prelude::*;
use rstest::rstest;
use streamlab_core::machine::Machine;
use streamlab_core::time::SimTime;
use streamlab_mediastream::proto::{
    InitiatorConfig, InitiatorEvent, InitiatorState, Outcome, ResponderConfig, ResponderEvent,
    SessionState,
};
use streamlab_mediastream::wire::{self, ErrorCode, FrameType, field};
use support::*;

const R: bool = true; // sent by the responder
const I: bool = false; // sent by an initiator

fn assert_completed(sim: &Sim, i: usize) {
    let (_, o) = sim.finished(i).expect("initiator finished");
    assert_eq!(o, Outcome::Completed, "{:?}", sim.inits[i].stats());
}

fn ms(v: u64) -> SimTime {
    SimTime::from_millis(v)
}

#[test]
fn happy_path() {
    let mut sim = Sim::pair();
    sim.run();
    assert_completed(&sim, 0);
    let st = sim.inits[0].stats();
    assert_eq!(
        (
            st.frames_completed,
            st.frames_dropped,
            st.frames_duplicate,
            st.frames_error
        ),
        (90, 0, 0, 0)
    );
    assert_eq!(st.payload_mismatches, 0);
    assert_eq!(st.start_attempts, 1);
    assert_eq!(st.start_confirm_sent, 1);
    assert_eq!(st.bytes_received, 14 + 90 * 4166);
    // START at 0 → START_ACK back at 1 RTT.
    assert_eq!(st.handshake_us, Some(20_000));
    // START_CONFIRM lands at 1.5 RTT; frame 1 is due one period later and
    // takes half an RTT: 30 ms + 33.333 ms + 10 ms.
    assert_eq!(st.time_to_stream_us, Some(73_333));
    assert_eq!((st.jitter_samples, st.jitter_max_us), (89, 0));
    let rs = sim.responder.stats();
    assert_eq!(
        (rs.start_ack_sent, rs.streams_completed, rs.frames_sent),
        (1, 1, 90)
    );
    assert_eq!(rs.data_datagrams_sent, 270);
    // No DATA before START_CONFIRM reached the responder.
    let confirm_at = sim
        .delivered_to_responder
        .iter()
        .find(|(_, _, b)| wire::peek_type(b) == Some(FrameType::StartConfirm))
        .unwrap()
        .0;
    assert_eq!(confirm_at, ms(30));
    assert!(
        sim.sent(R, FrameType::Data)
            .iter()
            .all(|s| s.at >= confirm_at)
    );
    assert_eq!(
        sim.sent(R, FrameType::Data)[0].at,
        SimTime::from_micros(63_333)
    );
    // The handshake sequence as the initiator saw it.
    let states: Vec<_> = sim.init_events[0]
        .iter()
        .filter_map(|(_, e)| match e {
            InitiatorEvent::StateChanged { to, .. } => Some(to.name()),
            _ => None,
        })
        .collect();
    assert_eq!(states, ["ExpectStartAck", "Streaming", "Closed"]);
    // Last render: base 20 ms + (30 + 90 − 1) frames.
    assert_eq!(
        sim.finished(0).unwrap().0,
        SimTime::from_micros(20_000 + 119 * 1_000_000 / 30)
    );
    assert!(sim.inits[0].is_finished());
    // The session lingers 1 s after its last frame, then is forgotten.
    assert_eq!(sim.responder.session_count(), 0);
}

#[test]
fn lost_start_is_retried() {
    let mut sim = Sim::pair();
    sim.fault(|s| s.is(I, FrameType::Start) && s.nth == 1, Fault::Drop);
    sim.run();
    assert_completed(&sim, 0);
    let st = sim.inits[0].stats();
    assert_eq!(st.start_attempts, 2);
    assert_eq!(st.handshake_us, Some(520_000));
    assert_eq!(st.frames_completed, 90);
}

#[test]
fn lost_start_ack_recovers() {
    let mut sim = Sim::pair();
    sim.fault(|s| s.is(R, FrameType::StartAck) && s.nth == 1, Fault::Drop);
    sim.run();
    assert_completed(&sim, 0);
    let rs = sim.responder.stats();
    // The retried START (sent at 500 ms) reaches the responder at 510 ms, the
    // same moment as its own retransmit timer: both answer.
    assert_eq!(rs.duplicate_start, 1);
    assert!(rs.start_ack_retransmits >= 1);
    assert_eq!(sim.inits[0].stats().frames_completed, 90);
}

#[test]
fn lost_start_confirm_is_reconfirmed() {
    let mut sim = Sim::pair();
    sim.fault(
        |s| s.is(I, FrameType::StartConfirm) && s.nth == 1,
        Fault::Drop,
    );
    sim.run();
    assert_completed(&sim, 0);
    let st = sim.inits[0].stats();
    assert_eq!((st.duplicate_start_ack, st.start_confirm_sent), (1, 2));
    assert_eq!(st.frames_completed, 90);
    let acks: Vec<_> = sim
        .sent(R, FrameType::StartAck)
        .iter()
        .map(|s| s.at)
        .collect();
    assert_eq!(acks, [ms(10), ms(510)]);
    assert_eq!(sim.responder.stats().start_ack_retransmits, 1);
}

#[rstest]
#[case(I, FrameType::Start)]
#[case(R, FrameType::StartAck)]
#[case(I, FrameType::StartConfirm)]
fn duplicated_handshake_frames_are_harmless(#[case] side: bool, #[case] t: FrameType) {
    let mut sim = Sim::pair();
    sim.fault(move |s| s.is(side, t) && s.nth == 1, Fault::Duplicate);
    sim.run();
    assert_completed(&sim, 0);
    let st = sim.inits[0].stats();
    let rs = sim.responder.stats();
    assert_eq!(st.frames_completed, 90);
    // Each duplicate ripples down the handshake and is counted on the way.
    match t {
        FrameType::Start => {
            assert_eq!((rs.duplicate_start, rs.start_ack_retransmits), (1, 1));
            assert_eq!((st.duplicate_start_ack, rs.duplicate_start_confirm), (1, 1));
        }
        FrameType::StartAck => {
            assert_eq!((st.duplicate_start_ack, rs.duplicate_start_confirm), (1, 1))
        }
        _ => assert_eq!((st.duplicate_start_ack, rs.duplicate_start_confirm), (0, 1)),
    }
    assert_eq!(rs.sessions_created, 1);
    assert_eq!(rs.streams_completed, 1);
}

#[test]
fn start_ack_with_other_stream_id_fails_typed() {
    let mut sim = Sim::pair();
    sim.fault(
        |s| s.is(R, FrameType::StartAck),
        Fault::Rewrite(Box::new(|b| b[field::STREAM_ID.end - 1] ^= 1)),
    );
    sim.run();
    let (_, o) = sim.finished(0).unwrap();
    assert_eq!(o.name(), "stream_id_mismatch");
    let st = sim.inits[0].stats();
    assert_eq!(st.errors_sent.get("STREAM_ID_MISMATCH"), Some(&1));
    let errs = sim.sent(I, FrameType::Error);
    assert_eq!(
        wire::peek_stream_id(&errs[0].bytes),
        Some(sim.inits[0].stream_id())
    );
    // The responder tears its session down and never streams.
    let rs = sim.responder.stats();
    assert_eq!(rs.errors_received.get("STREAM_ID_MISMATCH"), Some(&1));
    assert_eq!(rs.sessions_failed, 1);
    assert!(sim.sent(R, FrameType::Data).is_empty());
}

#[test]
fn wrong_version_start_gets_unsupported_version() {
    let mut sim = Sim::pair();
    sim.fault(
        |s| s.is(I, FrameType::Start),
        Fault::Rewrite(Box::new(|b| b[field::VERSION] = 2)),
    );
    sim.run();
    let (t, o) = sim.finished(0).unwrap();
    assert_eq!(o.name(), "peer_error:UNSUPPORTED_VERSION");
    assert_eq!(t, ms(20));
    let rs = sim.responder.stats();
    assert_eq!(rs.errors_sent.get("UNSUPPORTED_VERSION"), Some(&1));
    assert_eq!((rs.sessions_created, rs.malformed_received), (0, 1));
}

#[test]
fn malformed_starts_create_no_session_and_spare_others() {
    let mut sim = Sim::pair();
    let mut start = vec![0u8; 64];
    let n = {
        let mut rng = streamlab_core::seed::named_rng(1, "x");
        let mut m = streamlab_mediastream::proto::Initiator::new(
            InitiatorConfig::default(),
            resp_addr(),
            &mut rng,
        )
        .unwrap();
        m.handle_timeout(SimTime::ZERO);
        m.poll_transmit(SimTime::ZERO, &mut vec![0; 65_535])
            .map(|t| t.len)
            .unwrap()
    };
    assert_eq!(n, 64);
    start[0] = 1;
    start[1] = 1;
    start[12..14].copy_from_slice(&50u16.to_be_bytes()); // ext_len 50 → 64 bytes
    start[14..18].copy_from_slice(&[0, 1, 0, 46]);
    assert!(wire::parse(&start).is_ok());
    let evil = init_addr(9);
    // Truncated START, 40 bytes: ERROR fits (32 ≤ 40).
    sim.inject(ms(1), evil, resp_addr(), start[..40].to_vec());
    // ctsTraffic's legacy START: unknown type, 5 bytes: ERROR suppressed.
    sim.inject(ms(2), evil, resp_addr(), b"START".to_vec());
    // Garbage with an unknown type, 100 bytes.
    sim.inject(ms(3), evil, resp_addr(), vec![0x63; 100]);
    // Empty datagram.
    sim.inject(ms(4), evil, resp_addr(), Vec::new());
    sim.run();
    assert_completed(&sim, 0);
    assert_eq!(sim.inits[0].stats().frames_completed, 90);
    let rs = sim.responder.stats();
    assert_eq!(rs.malformed_received, 4);
    assert_eq!(rs.errors_sent.get("MALFORMED_FRAME"), Some(&2));
    assert_eq!(rs.errors_suppressed.get("MALFORMED_FRAME"), Some(&2));
    assert_eq!(rs.sessions_created, 1);
    assert!(sim.responder.session(evil).is_none());
}

#[test]
fn start_retries_exhausted_at_documented_time() {
    let mut sim = Sim::pair();
    sim.fault(|s| s.is(I, FrameType::Start), Fault::Drop);
    sim.run();
    let (t, o) = sim.finished(0).unwrap();
    assert_eq!(o.name(), "handshake_timeout");
    assert_eq!(t, ms(3_500));
    let starts: Vec<_> = sim.sent(I, FrameType::Start).iter().map(|s| s.at).collect();
    assert_eq!(starts, [ms(0), ms(500), ms(1_500)]);
    assert_eq!(sim.inits[0].stats().handshake_failures, 1);
    assert!(sim.inits[0].is_finished());
}

#[test]
fn busy_when_pending_table_is_full() {
    let rc = ResponderConfig {
        max_pending: 2,
        ..Default::default()
    };
    let mut sim = Sim::new(rc, vec![InitiatorConfig::default(); 3]);
    // Hold the first two handshakes open: their START_CONFIRMs arrive late.
    sim.fault(
        |s| s.is(I, FrameType::StartConfirm) && s.from != init_addr(2),
        Fault::DelayUs(5_000),
    );
    // The third starts a little later, while two are pending.
    sim.fault(
        |s| s.is(I, FrameType::Start) && s.from == init_addr(2),
        Fault::DelayUs(1_000),
    );
    sim.run();
    assert_completed(&sim, 0);
    assert_completed(&sim, 1);
    assert_eq!(sim.finished(2).unwrap().1.name(), "peer_error:BUSY");
    let rs = sim.responder.stats();
    assert_eq!(
        (
            rs.starts_received,
            rs.busy_rejections,
            rs.sessions_created,
            rs.streams_completed
        ),
        (3, 1, 2, 2),
        "every well-formed START counts as received, the BUSY-rejected one too"
    );
    assert_eq!(rs.errors_sent.get("BUSY"), Some(&1));
}

#[rstest]
#[case::granted(true, 43_333, 1)]
#[case::refused(false, 63_333, 0)]
fn immediate(#[case] allow: bool, #[case] first_data_us: u64, #[case] granted: u64) {
    let rc = ResponderConfig {
        allow_immediate: allow,
        ..Default::default()
    };
    let ic = InitiatorConfig {
        request_immediate: true,
        ..Default::default()
    };
    let mut sim = Sim::new(rc, vec![ic]);
    sim.run();
    assert_completed(&sim, 0);
    assert_eq!(sim.inits[0].stats().frames_completed, 90);
    assert_eq!(sim.inits[0].stats().immediate_granted, allow);
    assert_eq!(
        sim.sent(R, FrameType::Data)[0].at,
        SimTime::from_micros(first_data_us)
    );
    let rs = sim.responder.stats();
    assert_eq!(
        (rs.immediate_granted, rs.immediate_refused),
        (granted, 1 - granted)
    );
    let ack = &sim.sent(R, FrameType::StartAck)[0].bytes;
    let flags = u16::from_be_bytes([ack[2], ack[3]]);
    assert_eq!(flags & 2 != 0, allow);
    assert!(sim.resp_events.iter().any(|(_, e)| matches!(e, ResponderEvent::HandshakeComplete { immediate, .. } if *immediate == allow)));
}

#[test]
fn immediate_survives_lost_start_ack() {
    let rc = ResponderConfig {
        allow_immediate: true,
        ..Default::default()
    };
    let ic = InitiatorConfig {
        request_immediate: true,
        ..Default::default()
    };
    let mut sim = Sim::new(rc, vec![ic]);
    sim.fault(|s| s.is(R, FrameType::StartAck), Fault::Drop);
    sim.run();
    assert_completed(&sim, 0);
    // The first DATA stood in for the lost START_ACK.
    assert!(sim.inits[0].stats().immediate_granted);
    assert!(sim.inits[0].stats().frames_completed >= 89);
}

#[test]
fn forged_error_with_other_stream_id_is_ignored() {
    let mut sim = Sim::pair();
    let sid = sim.inits[0].stream_id();
    let mut buf = vec![0u8; 64];
    let f = wire::Frame::Error(wire::ErrorFrame {
        flags: wire::Flags::EMPTY,
        stream_id: sid.wrapping_add(1),
        code: ErrorCode::Aborted,
        reason: "forged",
        ext: wire::TlvArea::EMPTY,
    });
    let n = f.emit(&mut buf).unwrap();
    sim.inject(ms(500), resp_addr(), init_addr(0), buf[..n].to_vec());
    // And a datagram from a stranger.
    sim.inject(ms(600), init_addr(7), init_addr(0), buf[..n].to_vec());
    sim.run();
    assert_completed(&sim, 0);
    let st = sim.inits[0].stats();
    assert_eq!((st.errors_ignored, st.foreign_datagrams), (1, 1));
    assert_eq!(st.frames_completed, 90);
}

#[test]
fn lost_data_gives_dropped_frames() {
    let mut sim = Sim::pair();
    sim.fault(
        |s| matches!(s.data(), Some((5, 1)) | Some((6, _))),
        Fault::Drop,
    );
    sim.run();
    assert_completed(&sim, 0);
    let st = sim.inits[0].stats();
    assert_eq!((st.frames_completed, st.frames_dropped), (88, 2));
}

#[test]
fn duplicated_data_gives_duplicate_frames() {
    let mut sim = Sim::pair();
    sim.fault(|s| s.data() == Some((7, 0)), Fault::Duplicate);
    sim.run();
    assert_completed(&sim, 0);
    let st = sim.inits[0].stats();
    assert_eq!((st.frames_completed, st.frames_duplicate), (89, 1));
}

#[test]
fn corrupted_payload_counts_mismatch_not_death() {
    let mut sim = Sim::pair();
    sim.fault(
        |s| s.data() == Some((9, 2)),
        Fault::Rewrite(Box::new(|b| b[field::PAYLOAD + 100] ^= 0x10)),
    );
    sim.run();
    assert_completed(&sim, 0);
    let st = sim.inits[0].stats();
    assert_eq!(
        (st.payload_mismatches, st.frames_error, st.frames_completed),
        (1, 1, 89)
    );
}

#[test]
fn reordered_data_within_a_frame_still_completes() {
    let mut sim = Sim::pair();
    sim.fault(|s| matches!(s.data(), Some((_, 0))), Fault::DelayUs(1_000));
    sim.run();
    assert_completed(&sim, 0);
    assert_eq!(sim.inits[0].stats().frames_completed, 90);
}

#[test]
fn no_data_fails_at_first_render() {
    let mut sim = Sim::pair();
    sim.fault(|s| s.is(R, FrameType::Data), Fault::Drop);
    sim.run();
    let (t, o) = sim.finished(0).unwrap();
    assert_eq!(o.name(), "no_data");
    assert_eq!(t, ms(1_020));
    assert_eq!(sim.inits[0].stats().frames_dropped, 90);
}

#[test]
fn all_confirms_lost_half_open_is_dropped_with_error() {
    let mut sim = Sim::pair();
    sim.fault(|s| s.is(I, FrameType::StartConfirm), Fault::Drop);
    sim.run();
    let acks: Vec<_> = sim
        .sent(R, FrameType::StartAck)
        .iter()
        .map(|s| s.at)
        .collect();
    assert_eq!(acks, [ms(10), ms(510), ms(1_510)]);
    let rs = sim.responder.stats();
    assert_eq!(rs.handshake_timeouts, 1);
    // Budget: 64 received, 3 × 14 sent, 22 left: ERROR goes out without its reason.
    assert_eq!(rs.errors_sent.get("HANDSHAKE_TIMEOUT"), Some(&1));
    assert_eq!(sim.sent(R, FrameType::Error)[0].bytes.len(), 17);
    assert_eq!(sim.sent(R, FrameType::Error)[0].at, ms(3_510));
    // The initiator had already given up at its first render tick (base
    // 20 ms + 1 s); the late ERROR finds it closed and is ignored.
    let (t, o) = sim.finished(0).unwrap();
    assert_eq!((t, o.name().as_ref()), (ms(1_020), "no_data"));
    assert_eq!(sim.inits[0].stats().errors_ignored, 1);
    assert!(sim.sent(R, FrameType::Data).is_empty());
}

#[test]
fn unpadded_start_leaves_no_budget_for_retransmits() {
    let ic = InitiatorConfig {
        start_padding_bytes: 14,
        ..Default::default()
    };
    let mut sim = Sim::new(ResponderConfig::default(), vec![ic]);
    sim.fault(|s| s.is(I, FrameType::StartConfirm), Fault::Drop);
    sim.run();
    let rs = sim.responder.stats();
    assert_eq!(sim.sent(R, FrameType::StartAck).len(), 1);
    assert_eq!(rs.start_ack_suppressed, 2);
    assert_eq!(rs.errors_suppressed.get("HANDSHAKE_TIMEOUT"), Some(&1));
    assert_eq!(sim.finished(0).unwrap().1.name(), "no_data");
}

#[test]
fn new_start_from_busy_tuple_is_refused_without_harm() {
    let mut sim = Sim::pair();
    let sid = sim.inits[0].stream_id();
    let mut buf = vec![0u8; 64];
    let f = wire::Frame::Start(wire::Control {
        flags: wire::Flags::ACK_REQUIRED,
        stream_id: sid ^ 0xff,
        ext: wire::TlvArea::new(&[
            0, 1, 0, 46, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
            0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        ])
        .unwrap(),
    });
    let n = f.emit(&mut buf).unwrap();
    sim.inject(ms(200), init_addr(0), resp_addr(), buf[..n].to_vec());
    sim.run();
    assert_completed(&sim, 0);
    let rs = sim.responder.stats();
    assert_eq!((rs.start_conflicts, rs.sessions_created), (1, 1));
    assert_eq!(rs.errors_sent.get("STREAM_ID_MISMATCH"), Some(&1));
    // The ERROR carried the new START's id, so the running stream ignored it.
    assert_eq!(sim.inits[0].stats().errors_ignored, 1);
    assert_eq!(sim.inits[0].stats().frames_completed, 90);
}

#[test]
fn abort_tears_down_the_responder_session() {
    let mut sim = Sim::pair();
    sim.run_until(ms(300));
    assert_eq!(sim.inits[0].state(), InitiatorState::Streaming);
    sim.inits[0].abort(ms(300)).unwrap();
    let mut buf = vec![0u8; 65_535];
    let t = sim.inits[0].poll_transmit(ms(300), &mut buf).unwrap();
    sim.inject(ms(310), init_addr(0), resp_addr(), buf[..t.len].to_vec());
    sim.run();
    assert_eq!(sim.inits[0].outcome().unwrap().name(), "aborted");
    let rs = sim.responder.stats();
    assert_eq!(rs.errors_received.get("ABORTED"), Some(&1));
    assert_eq!(rs.streams_completed, 0);
    assert!(sim.resp_events.iter().any(|(_, e)| matches!(
        e,
        ResponderEvent::StateChanged {
            to: SessionState::Closed(Outcome::Failed(_)),
            ..
        }
    )));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    /// Random datagrams and time jumps into both machines: no panic, and the
    /// responder never breaks the budget (checked by the driver).
    #[test]
    fn random_input_never_panics(
        inputs in prop::collection::vec(
            (0u64..50_000, any::<bool>(), prop::sample::select(vec![1u8, 2, 3, 4, 16, 0x63]), prop::collection::vec(any::<u8>(), 0..80)),
            0..40,
        )
    ) {
        let mut sim = Sim::pair();
        let sid = sim.inits[0].stream_id();
        let mut at = 0u64;
        for (dt, to_resp, t, mut bytes) in inputs {
            at += dt;
            // Bias towards plausible frames.
            if bytes.len() >= 12 {
                bytes[0] = t;
                bytes[1] = 1;
                bytes[4..12].copy_from_slice(&sid.to_be_bytes());
            }
            let (from, to) = if to_resp { (init_addr(0), resp_addr()) } else { (resp_addr(), init_addr(0)) };
            sim.inject(SimTime::from_micros(at), from, to, bytes);
        }
        sim.run();
        prop_assert!(sim.inits[0].outcome().is_some());
    }
}
