//! Teleport's scenarios (`scenarios/teleport/`), run through the harness
//! from this crate: the protocol's own regression suite. The full suite,
//! with determinism and capture checks, is `streamlab-harness`'s `suite`
//! test.

// The suite reports its wall time.
#![allow(clippy::disallowed_methods)]

use std::path::Path;
use std::time::Instant;

use streamlab_harness::report::{RunReport, Verdict};
use streamlab_harness::runner::{RunOptions, run};
use streamlab_harness::scenario::load;

#[test]
fn every_teleport_scenario_passes() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scenarios/teleport");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("scenarios/teleport")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no scenarios");
    let started = Instant::now();
    let mut failures = Vec::new();
    for path in &files {
        let loaded = match load(path) {
            Ok(l) => l,
            Err(e) => {
                failures.push(format!("{}: {e:?}", path.display()));
                continue;
            }
        };
        let out = run(&loaded, &RunOptions::default());
        let report = RunReport::new(&loaded, &path.display().to_string(), out);
        if report.verdict != Verdict::Pass {
            failures.push(report.failure_text());
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    eprintln!(
        "{} Teleport scenarios passed in {:.1} s",
        files.len(),
        started.elapsed().as_secs_f64()
    );
}

/// Deliberately broken Teleport hosts, for the invariants that judge the
/// hosts' final reports (`Oracle::finish`): a scenario file cannot make the
/// real machines report an illegal phase move or a cache offered under
/// another session id (they never do), and UDP injections cannot reach
/// what the reports say about the WebSocket side. Each wraps the real
/// machines and breaks one thing.
mod broken {

    use serde_json::Value;
    use streamlab_core::host::{HostMachine, HostReport, Input, Output};
    use streamlab_core::sut::{Protocol, Rewrapped};
    use streamlab_core::time::SimTime;
    use streamlab_teleport::sut::Teleport;
    use streamlab_teleport::wire::{SETUP_LEN, SETUP_SESSION_ID_AT, command};

    /// What is broken.
    #[derive(Clone, Copy, Debug)]
    pub(crate) enum Flaw {
        /// The client has no Handshake phase: SetupCommand takes it from
        /// Signaling straight to Streaming (its phase history shows
        /// `Signaling -> Streaming`).
        ClientSkipsHandshake,
        /// The server likewise, in each session's history.
        ServerSkipsHandshake,
        /// The client compares each SetupCommand's `session_id` with the
        /// first one it ever received, not with the one its cache was
        /// filled under: after a server restart with a new `session_id`
        /// its Handshake still lists the old session's uids.
        CacheKeptAcrossSessionIds,
        /// The server's `offer` names no data-channel port: its SDP has no
        /// `m=application` line (the client sees `m=applicatioX`).
        OfferWithoutApplicationLine,
        /// The client sends its `answer` twice (the server sees every
        /// masked text frame carrying an answer a second time).
        AnswerSentTwice,
    }

    /// A broken Teleport.
    pub(crate) struct Broken(pub(crate) Flaw);

    pub(crate) static CLIENT_SKIPS_HANDSHAKE: Broken = Broken(Flaw::ClientSkipsHandshake);
    pub(crate) static SERVER_SKIPS_HANDSHAKE: Broken = Broken(Flaw::ServerSkipsHandshake);
    pub(crate) static CACHE_KEPT_ACROSS_SESSION_IDS: Broken =
        Broken(Flaw::CacheKeptAcrossSessionIds);
    pub(crate) static OFFER_WITHOUT_APPLICATION_LINE: Broken =
        Broken(Flaw::OfferWithoutApplicationLine);
    pub(crate) static ANSWER_SENT_TWICE: Broken = Broken(Flaw::AnswerSentTwice);

    /// `data` with every whole masked text frame whose payload names an
    /// `answer` repeated right after itself.
    fn repeat_answers(data: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(data.len() * 2);
        let mut i = 0;
        while i + 2 <= data.len() {
            let (b0, b1) = (data[i], data[i + 1]);
            let (mut len, mut head) = (usize::from(b1 & 0x7F), 2);
            if len == 126 && i + 4 <= data.len() {
                len = usize::from(u16::from_be_bytes([data[i + 2], data[i + 3]]));
                head = 4;
            } else if len >= 126 {
                break;
            }
            if b1 & 0x80 == 0 || i + head + 4 + len > data.len() {
                break;
            }
            let mask = &data[i + head..i + head + 4];
            let body = &data[i + head + 4..i + head + 4 + len];
            let text: Vec<u8> = body
                .iter()
                .enumerate()
                .map(|(k, b)| b ^ mask[k % 4])
                .collect();
            let frame = &data[i..i + head + 4 + len];
            out.extend_from_slice(frame);
            if b0 & 0x0F == 1 && text.windows(6).any(|w| w == b"answer") {
                out.extend_from_slice(frame);
            }
            i += frame.len();
        }
        out.extend_from_slice(&data[i..]);
        out
    }

    impl Broken {
        /// The real Teleport with every host machine flawed this way.
        pub(crate) fn protocol(&self) -> &'static dyn Protocol {
            let flaw = self.0;
            Rewrapped::new(
                &Teleport,
                "Teleport with one deliberate flaw",
                move |_, _, inner| -> Box<dyn HostMachine> {
                    Box::new(Flawed {
                        inner,
                        flaw,
                        first_session_id: None,
                        session_ids: Vec::new(),
                    })
                },
            )
            .leak()
        }
    }

    struct Flawed {
        inner: Box<dyn HostMachine>,
        flaw: Flaw,
        /// The first SetupCommand's session_id (CacheKeptAcrossSessionIds).
        first_session_id: Option<u64>,
        /// Every SetupCommand's real session_id, in order.
        session_ids: Vec<u64>,
    }

    impl Flawed {
        /// A SetupCommand at `at` in `b`: remember its session_id and show
        /// the inner client the first one instead.
        fn rewrite_setup(&mut self, b: &mut [u8], at: usize) {
            let Some(id) = b.get(at + SETUP_SESSION_ID_AT..at + SETUP_SESSION_ID_AT + 8) else {
                return;
            };
            let id = u64::from_le_bytes(id.try_into().unwrap_or_default());
            self.session_ids.push(id);
            let first = *self.first_session_id.get_or_insert(id);
            b[at + SETUP_SESSION_ID_AT..at + SETUP_SESSION_ID_AT + 8]
                .copy_from_slice(&first.to_le_bytes());
        }
    }

    /// Drop every `Handshake@…` entry of a phase history.
    fn skip_handshake(history: &mut Value) {
        if let Some(a) = history.as_array_mut() {
            a.retain(|e| !e.as_str().is_some_and(|s| s.starts_with("Handshake@")));
        }
    }

    impl HostMachine for Flawed {
        fn handle(&mut self, now: SimTime, input: Input<'_>) {
            if let (Flaw::OfferWithoutApplicationLine, Input::Received { conn, data }) =
                (self.flaw, &input)
            {
                // Server to client frames are unmasked: the SDP is plain
                // text inside the JSON signal.
                let mut b = data.to_vec();
                let line = b"m=application";
                if let Some(i) = b.windows(line.len()).position(|w| w == line) {
                    b[i + line.len() - 1] = b'X';
                }
                self.inner.handle(
                    now,
                    Input::Received {
                        conn: *conn,
                        data: &b,
                    },
                );
                return;
            }
            if let (Flaw::AnswerSentTwice, Input::Received { conn, data }) = (self.flaw, &input) {
                let b = repeat_answers(data);
                self.inner.handle(
                    now,
                    Input::Received {
                        conn: *conn,
                        data: &b,
                    },
                );
                return;
            }
            if !matches!(self.flaw, Flaw::CacheKeptAcrossSessionIds) {
                self.inner.handle(now, input);
                return;
            }
            match input {
                // SetupCommand on channel 100: an 8-byte channel header.
                Input::Datagram { socket, from, data }
                    if data.len() == 8 + SETUP_LEN
                        && data[1] == 100
                        && data[2] & 0x01 == 0
                        && data[8] == command::SETUP =>
                {
                    let mut b = data.to_vec();
                    self.rewrite_setup(&mut b, 8);
                    self.inner.handle(
                        now,
                        Input::Datagram {
                            socket,
                            from,
                            data: &b,
                        },
                    );
                }
                // SetupCommand in a binary WebSocket frame (unmasked,
                // 16-bit length 171).
                Input::Received { conn, data } => {
                    let mut b = data.to_vec();
                    let head = [0x82, 0x7E, 0x00, SETUP_LEN as u8, command::SETUP];
                    if let Some(i) = b.windows(head.len()).position(|w| w == head) {
                        self.rewrite_setup(&mut b, i + 4);
                    }
                    self.inner.handle(now, Input::Received { conn, data: &b });
                }
                other => self.inner.handle(now, other),
            }
        }
        fn handle_timeout(&mut self, now: SimTime) {
            self.inner.handle_timeout(now);
        }
        fn poll_output(&mut self, now: SimTime, buf: &mut [u8]) -> Option<Output> {
            self.inner.poll_output(now, buf)
        }
        fn poll_timeout(&self) -> Option<SimTime> {
            self.inner.poll_timeout()
        }
        fn poll_event(&mut self) -> Option<String> {
            self.inner.poll_event()
        }
        fn is_finished(&self) -> bool {
            self.inner.is_finished()
        }
        fn report(&self) -> HostReport {
            let mut r = self.inner.report();
            match self.flaw {
                Flaw::OfferWithoutApplicationLine | Flaw::AnswerSentTwice => {}
                Flaw::ClientSkipsHandshake => skip_handshake(&mut r.stats["phase_history"]),
                Flaw::ServerSkipsHandshake => {
                    if r.stats.get("phase_history").is_none()
                        && let Some(log) = r.stats["session_log"].as_array_mut()
                    {
                        for rec in log {
                            skip_handshake(&mut rec["history"]);
                        }
                    }
                }
                Flaw::CacheKeptAcrossSessionIds => {
                    // The session log names the session_id the SetupCommand
                    // carried, as a client records it.
                    if let Some(log) = r.stats["session_log"].as_array_mut() {
                        let mut ids = self.session_ids.iter();
                        for rec in log.iter_mut().filter(|rec| rec["session_id"] != 0) {
                            if let Some(id) = ids.next() {
                                rec["session_id"] = (*id).into();
                            }
                        }
                    }
                }
            }
            r
        }
    }
}

/// Runs `text` with `protocol` (the scenario demands one invariant fire, so
/// a pass means it fired and every other invariant held).
fn run_broken(text: &str, origin: &str, protocol: &'static broken::Broken) -> RunReport {
    let protocol = protocol.protocol();
    let loaded = streamlab_harness::scenario::parse_with(text, origin, &[protocol])
        .unwrap_or_else(|e| panic!("{origin}: {e:?}"));
    let out = run(&loaded, &RunOptions::default());
    RunReport::new(&loaded, origin, out)
}

fn observed(report: &RunReport, check: &str) -> String {
    report
        .checks
        .iter()
        .find(|c| c.name == check)
        .map(|c| c.observed.clone())
        .unwrap_or_default()
}

/// A short streaming session that demands `invariant` fire.
fn short_session(invariant: &str) -> String {
    format!(
        r#"{{
  "name": "teleport_broken_{invariant}",
  "seed": 1, "duration_ms": 2000, "protocol": "teleport",
  "hosts": [
    {{ "name": "server", "role": {{ "server": {{}} }} }},
    {{ "name": "client", "role": {{ "client": {{ "target": "server", "disconnect_after_ms": 300 }} }} }}
  ],
  "default_link": {{ "delay": {{ "base_ms": 10 }} }},
  "expect": {{
    "invariants": {{ "{invariant}": "fails" }},
    "hosts": {{ "client": {{ "outcome": "completed", "session_ends": ["disconnect"] }} }}
  }}
}}"#
    )
}

/// A client whose phase machine has no Handshake state (SetupCommand takes
/// it from Signaling to Streaming) reports `Signaling -> Streaming`, which
/// is not an edge of the seed's diagram (docs/teleport.md §5):
/// transitions_follow_the_diagram names it, and nothing else fires.
#[test]
fn a_client_skipping_handshake_breaks_the_diagram() {
    let text = short_session("transitions_follow_the_diagram");
    let report = run_broken(
        &text,
        "client_skips_handshake",
        &broken::CLIENT_SKIPS_HANDSHAKE,
    );
    assert_eq!(report.verdict, Verdict::Pass, "{}", report.failure_text());
    let seen = observed(&report, "invariant.transitions_follow_the_diagram");
    assert!(
        seen.contains("client host 1: Signaling -> Streaming"),
        "{seen}"
    );
    assert!(!seen.contains("server"), "{seen}");
}

/// The same flaw in the server's per-session histories.
#[test]
fn a_server_skipping_handshake_breaks_the_diagram() {
    let text = short_session("transitions_follow_the_diagram");
    let report = run_broken(
        &text,
        "server_skips_handshake",
        &broken::SERVER_SKIPS_HANDSHAKE,
    );
    assert_eq!(report.verdict, Verdict::Pass, "{}", report.failure_text());
    let seen = observed(&report, "invariant.transitions_follow_the_diagram");
    assert!(
        seen.contains("server host 0: Signaling -> Streaming"),
        "{seen}"
    );
    assert!(!seen.contains("client"), "{seen}");
}

/// reconnect_new_session_id's run with a client that keeps its cache across
/// session ids: after the server's restart the SetupCommand carries a new
/// session_id, yet the Handshake lists the 8 uids of the old session
/// (docs/teleport.md §7: a different session_id clears the cache).
/// cache_only_under_equal_session_id names it, and nothing else fires.
#[test]
fn a_cache_offered_under_another_session_id_is_caught() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../scenarios/teleport/reconnect_new_session_id.json");
    let mut sc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("scenario")).expect("json");
    sc["expect"] = serde_json::json!({
        "invariants": { "cache_only_under_equal_session_id": "fails" },
        "hosts": {
            "client": {
                "outcome": "completed",
                "session_ends": ["transport_lost", "disconnect"],
                "cached_offered": [0, 8]
            }
        }
    });
    let report = run_broken(
        &sc.to_string(),
        "cache_kept_across_session_ids",
        &broken::CACHE_KEPT_ACROSS_SESSION_IDS,
    );
    assert_eq!(report.verdict, Verdict::Pass, "{}", report.failure_text());
    let seen = observed(&report, "invariant.cache_only_under_equal_session_id");
    assert!(
        seen.contains("client host 1, session 2: its Handshake listed 8 cached uids"),
        "{seen}"
    );
}

/// A server whose `offer` carries no `m=application` line gives the client
/// no data-channel port: the client counts the offer malformed, sends no
/// answer and no channel-open request, and its Signaling ends at its
/// connection timeout (docs/teleport.md §6: it bounds Signaling until
/// SetupCommand) without a reconnect (no session reached Streaming).
#[test]
fn an_offer_without_a_data_channel_port_is_malformed() {
    let text = r#"{
  "name": "teleport_broken_offer",
  "seed": 1, "duration_ms": 5000, "protocol": "teleport",
  "hosts": [
    { "name": "server", "role": { "server": {} } },
    { "name": "client", "role": { "client": { "target": "server", "connection_timeout_ms": 1000 } } }
  ],
  "default_link": { "delay": { "base_ms": 10 } },
  "expect": {
    "hosts": {
      "client": {
        "outcome": "failed",
        "error": "signaling_timeout",
        "phases": ["Discovery", "Signaling", "Ended"],
        "session_ends": ["signaling_timeout"],
        "stats": { "malformed": { "eq": 1 }, "reconnect_attempts": { "eq": 0 }, "bytes_sent.reliable": { "eq": 0 } }
      }
    },
    "frames": [ { "from": "client", "to": "server", "kind": "CHANNEL_OPEN", "count": { "eq": 0 } } ]
  }
}"#;
    let report = run_broken(
        text,
        "offer_without_application_line",
        &broken::OFFER_WITHOUT_APPLICATION_LINE,
    );
    assert_eq!(report.verdict, Verdict::Pass, "{}", report.failure_text());
}

/// A client that sends its `answer` twice: the server takes the first, in
/// Signaling, and ignores the second, in Handshake (an answer moves only
/// Signaling -> Handshake, docs/teleport.md §5): one SetupCommand, one
/// session, and every invariant holds.
#[test]
fn a_repeated_answer_is_ignored() {
    let text = r#"{
  "name": "teleport_broken_answer_twice",
  "seed": 1, "duration_ms": 2000, "protocol": "teleport",
  "hosts": [
    { "name": "server", "role": { "server": {} } },
    { "name": "client", "role": { "client": { "target": "server", "disconnect_after_ms": 300 } } }
  ],
  "default_link": { "delay": { "base_ms": 10 } },
  "expect": {
    "hosts": {
      "client": {
        "outcome": "completed",
        "phases": ["Discovery", "Signaling", "Handshake", "Streaming", "Disconnecting", "Ended"],
        "session_ends": ["disconnect"]
      },
      "server": { "session_ends": ["disconnect"], "stats": { "setups_sent": { "eq": 1 }, "streaming_sessions": { "eq": 1 } } }
    },
    "frames": [ { "from": "server", "to": "client", "kind": "ACK_HANDSHAKE", "count": { "eq": 1 } } ]
  }
}"#;
    let report = run_broken(text, "answer_sent_twice", &broken::ANSWER_SENT_TWICE);
    assert_eq!(report.verdict, Verdict::Pass, "{}", report.failure_text());
}
