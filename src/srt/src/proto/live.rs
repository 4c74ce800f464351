//! The application around an endpoint in simulated runs: a live source
//! (fixed bitrate, packet size and duration) or a sink that checks what is
//! released to it. Each payload carries the source's message counter and
//! the time it was handed to SRT, so the sink can judge order, gaps and
//! TSBPD timing from the payload alone (bounded: counters and the first
//! violation).

use std::net::SocketAddr;
use std::time::Duration;

use serde::Serialize;
use streamlab_core::machine::{Machine, Transmit};
use streamlab_core::time::SimTime;

use super::endpoint::{Endpoint, Event, State};

/// Bytes of the payload header: message counter and origin time.
pub const PAYLOAD_HEADER: usize = 16;

/// A live source: `packet_size`-byte messages at `bitrate_bps` for `duration_ms`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SourceConfig {
    /// Payload bits per second.
    pub bitrate_bps: u64,
    /// Payload bytes per message (16 ..= 1456).
    pub packet_size: u32,
    /// How long it sends, ms.
    pub duration_ms: u64,
}

impl SourceConfig {
    /// Time between messages, µs (at least 1).
    pub fn interval_us(&self) -> u64 {
        (u64::from(self.packet_size) * 8 * 1_000_000 / self.bitrate_bps.max(1)).max(1)
    }

    /// How many messages it sends.
    pub fn messages(&self) -> u64 {
        self.duration_ms
            .saturating_mul(1000)
            .div_ceil(self.interval_us())
    }
}

/// What a source counted.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SourceStats {
    /// Messages handed to SRT.
    pub messages: u64,
    /// Messages SRT refused (not connected).
    pub refused: u64,
}

/// What a sink counted (bounded: counts and the first violation).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SinkStats {
    /// Messages released to the application.
    pub released: u64,
    /// Payload bytes released.
    pub bytes: u64,
    /// Messages missing between released ones (gaps in the source's counter).
    pub missing: u64,
    /// Releases whose counter did not exceed the previous one.
    pub out_of_order: u64,
    /// Payloads too short or with a wrong filler.
    pub payload_errors: u64,
    /// Messages whose SRT header does not match what the source wrote
    /// (sequence number ≠ ISN + counter or timestamp ≠ origin): changed on
    /// the way, which SRT without encryption cannot detect; left out of
    /// the order and timing figures.
    pub tampered: u64,
    /// Smallest release time − (origin + latency), µs, with the release
    /// time on the sink's clock and the origin on the source's: the true
    /// margin when both hosts' clocks started together (the oracle
    /// corrects for the difference).
    pub min_margin_us: Option<i64>,
    /// Largest release time − origin, ms (same clocks as `min_margin_us`).
    pub max_delay_ms: u64,
    /// The source's counter of the last release.
    pub last_counter: Option<u64>,
    /// The first violation seen, if any.
    pub first_violation: Option<String>,
}

/// The application side.
#[derive(Clone, Debug)]
pub enum App {
    /// Sends.
    Source {
        /// Its shape.
        config: SourceConfig,
        /// When the next message is due.
        next_at: Option<SimTime>,
        /// When the last one went.
        last_at: Option<SimTime>,
        /// Counters.
        stats: SourceStats,
    },
    /// Receives.
    Sink {
        /// Counters.
        stats: SinkStats,
    },
}

impl App {
    /// A source.
    pub fn source(config: SourceConfig) -> Self {
        App::Source {
            config,
            next_at: None,
            last_at: None,
            stats: SourceStats::default(),
        }
    }

    /// A sink.
    pub fn sink() -> Self {
        App::Sink {
            stats: SinkStats::default(),
        }
    }
}

/// The filler byte at offset `i` of a message: a mix of its counter and
/// origin, so that a changed bit anywhere in them shows.
fn filler(counter: u64, origin_us: u64, i: usize) -> u8 {
    let key = counter.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ origin_us.rotate_left(17);
    ((key >> ((i % 8) * 8)) as u8) ^ (i as u8)
}

/// Fill a payload: counter, origin, then a filler derived from both.
pub fn fill_payload(counter: u64, origin: SimTime, size: usize, out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(&counter.to_be_bytes());
    out.extend_from_slice(&origin.as_micros().to_be_bytes());
    for i in PAYLOAD_HEADER..size {
        out.push(filler(counter, origin.as_micros(), i));
    }
}

/// Read a payload: counter and origin, if the filler is right.
pub fn read_payload(p: &[u8]) -> Option<(u64, SimTime)> {
    let counter = u64::from_be_bytes(p.get(0..8)?.try_into().ok()?);
    let origin = u64::from_be_bytes(p.get(8..16)?.try_into().ok()?);
    let ok = p
        .iter()
        .enumerate()
        .skip(PAYLOAD_HEADER)
        .all(|(i, b)| *b == filler(counter, origin, i));
    ok.then_some((counter, SimTime::from_micros(origin)))
}

/// An endpoint with its application: the machine a simulated host runs.
#[derive(Debug)]
pub struct LiveHost {
    ep: Endpoint,
    app: App,
    done: bool,
    scratch: Vec<u8>,
}

impl LiveHost {
    /// `ep` driven by `app`.
    pub fn new(ep: Endpoint, app: App) -> Self {
        LiveHost {
            ep,
            app,
            done: false,
            scratch: Vec::new(),
        }
    }

    /// The endpoint.
    pub fn endpoint(&self) -> &Endpoint {
        &self.ep
    }

    /// The application.
    pub fn app(&self) -> &App {
        &self.app
    }

    /// Whether the application finished its part (source: all sent,
    /// acknowledged and SHUTDOWN sent; sink: SHUTDOWN received and drained).
    pub fn is_done(&self) -> bool {
        self.done
    }

    fn linger_at(&self, last: SimTime) -> SimTime {
        let lat = self.ep.recv_latency_us().unwrap_or(0);
        let send_lat = self.ep.stats().send.ms_tsb_pd_delay * 1000;
        last + Duration::from_micros(lat.max(send_lat) + self.ep.rtt_us() + 50_000)
    }

    fn step(&mut self, now: SimTime) {
        match &mut self.app {
            App::Source {
                config,
                next_at,
                last_at,
                stats,
            } => {
                if self.ep.is_connected() {
                    let next = *next_at.get_or_insert(now);
                    let mut next = next;
                    while stats.messages < config.messages() && now >= next {
                        fill_payload(
                            stats.messages,
                            now,
                            config.packet_size as usize,
                            &mut self.scratch,
                        );
                        if self.ep.send(now, &self.scratch) {
                            stats.messages += 1;
                            *last_at = Some(now);
                        } else {
                            stats.refused += 1;
                            break;
                        }
                        next += Duration::from_micros(config.interval_us());
                    }
                    *next_at = Some(next);
                    let all_sent = stats.messages >= config.messages();
                    if all_sent && self.ep.send_buffer_empty() {
                        let last = last_at.unwrap_or(now);
                        if now >= self.linger_at(last) {
                            self.ep.close(now);
                            self.done = true;
                        }
                    }
                }
            }
            App::Sink { stats } => {
                let lat = self.ep.recv_latency_us().unwrap_or(0) as i64;
                while let Some(r) = self.ep.poll_released() {
                    stats.released += 1;
                    stats.bytes += r.payload.len() as u64;
                    let Some((counter, origin)) = read_payload(&r.payload) else {
                        stats.payload_errors += 1;
                        continue;
                    };
                    let intact = self
                        .ep
                        .isn()
                        .is_some_and(|isn| r.seq == isn.add(counter as u32))
                        && r.timestamp == origin.as_micros() as u32;
                    if !intact {
                        stats.tampered += 1;
                        continue;
                    }
                    let margin = now.as_micros() as i64 - (origin.as_micros() as i64 + lat);
                    stats.min_margin_us =
                        Some(stats.min_margin_us.map_or(margin, |m| m.min(margin)));
                    stats.max_delay_ms = stats
                        .max_delay_ms
                        .max(now.as_micros().saturating_sub(origin.as_micros()) / 1000);
                    match stats.last_counter {
                        Some(last) if counter <= last => {
                            stats.out_of_order += 1;
                            stats.first_violation.get_or_insert_with(|| {
                                format!("message {counter} released after message {last}")
                            });
                        }
                        Some(last) => {
                            stats.missing = stats.missing.saturating_add(counter - last - 1);
                        }
                        None => stats.missing = stats.missing.saturating_add(counter),
                    }
                    stats.last_counter =
                        Some(stats.last_counter.map_or(counter, |l| l.max(counter)));
                }
                if self.ep.state() == State::Closed {
                    self.done = true;
                }
            }
        }
    }

    /// The counters as a JSON object: the endpoint's (`send`, `recv`,
    /// `link`, `control`, `connectTimeMs`) plus `source` and `sink`.
    pub fn stats_json(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(self.ep.stats()).unwrap_or_default();
        let (src, sink) = match &self.app {
            App::Source { stats, .. } => (stats.clone(), SinkStats::default()),
            App::Sink { stats } => (SourceStats::default(), stats.clone()),
        };
        if let serde_json::Value::Object(m) = &mut v {
            m.insert(
                "source".into(),
                serde_json::to_value(src).unwrap_or_default(),
            );
            m.insert(
                "sink".into(),
                serde_json::to_value(sink).unwrap_or_default(),
            );
        }
        v
    }
}

impl Machine for LiveHost {
    type Event = Event;

    fn handle_datagram(&mut self, now: SimTime, from: SocketAddr, datagram: &[u8]) {
        self.ep.handle_datagram(now, from, datagram);
        self.step(now);
    }

    fn handle_timeout(&mut self, now: SimTime) {
        self.ep.handle_timeout(now);
        self.step(now);
    }

    fn poll_transmit(&mut self, now: SimTime, buf: &mut [u8]) -> Option<Transmit> {
        self.ep.poll_transmit(now, buf)
    }

    fn poll_timeout(&self) -> Option<SimTime> {
        let ep = self.ep.poll_timeout();
        let app = match &self.app {
            App::Source {
                config,
                next_at,
                last_at,
                stats,
            } if self.ep.is_connected() && !self.done => {
                if stats.messages < config.messages() {
                    *next_at
                } else if self.ep.send_buffer_empty() {
                    last_at.map(|l| self.linger_at(l))
                } else {
                    None
                }
            }
            _ => None,
        };
        match (ep, app) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn poll_event(&mut self) -> Option<Event> {
        self.ep.poll_event()
    }

    fn is_finished(&self) -> bool {
        self.done || self.ep.is_finished()
    }
}
