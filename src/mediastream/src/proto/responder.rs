//! The responder: one endpoint serving many source tuples from one socket
//! (spec §3.2, §5.2).

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;

use tracing::{debug, trace};

use super::config::{ConfigError, ResponderConfig, backoff_us};
use super::error::{Outcome, StreamError};
use super::error_reason;
use super::stats::{ResponderStats, bump};
use super::stream::StreamPlan;
use super::timer::{TimerKind, TimerTable};
use crate::machine::{Machine, Transmit};
use crate::time::SimTime;
use crate::wire::{
    self, Control, DataHeader, ErrorCode, ErrorFrame, Flags, Frame, TlvArea, WireError, field,
};

/// A session's state (spec §3.2), named for what it waits for. `Listen` is
/// the state of a tuple without a session; it only appears as the `from` of
/// the first [`ResponderEvent::StateChanged`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionState {
    /// No session for the tuple.
    Listen,
    /// START_ACK sent; waiting for START_CONFIRM. Anti-amplification applies.
    ExpectStartConfirm,
    /// Sending media.
    Streaming,
    /// Ended; kept for `linger_ms` to absorb late datagrams.
    Closed(Outcome),
}

impl SessionState {
    /// The state's name as used in traces and the spec.
    pub fn name(&self) -> &'static str {
        match self {
            SessionState::Listen => "Listen",
            SessionState::ExpectStartConfirm => "ExpectStartConfirm",
            SessionState::Streaming => "Streaming",
            SessionState::Closed(_) => "Closed",
        }
    }
}

/// What a responder reports (spec §9.3). Every event names the tuple.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ResponderEvent {
    /// A session changed state.
    StateChanged {
        /// The initiator's address.
        peer: SocketAddr,
        /// The session's stream id.
        stream_id: u64,
        /// The old state.
        from: SessionState,
        /// The new state.
        to: SessionState,
    },
    /// START_CONFIRM received, or IMMEDIATE granted: streaming begins.
    HandshakeComplete {
        /// The initiator's address.
        peer: SocketAddr,
        /// The stream id.
        stream_id: u64,
        /// Streaming began without START_CONFIRM.
        immediate: bool,
    },
    /// A session ended (its last frame sent, or an error).
    SessionEnded {
        /// The initiator's address.
        peer: SocketAddr,
        /// The stream id.
        stream_id: u64,
        /// How it ended.
        outcome: Outcome,
    },
    /// An ERROR frame was queued.
    ErrorSent {
        /// The destination.
        peer: SocketAddr,
        /// The stream id it carries.
        stream_id: u64,
        /// Its code.
        code: ErrorCode,
    },
    /// An ERROR frame was not sent: it would exceed the tuple's
    /// anti-amplification budget (spec §3.4).
    ErrorSuppressed {
        /// The destination it would have had.
        peer: SocketAddr,
        /// Its code.
        code: ErrorCode,
    },
    /// An ERROR frame arrived.
    ErrorReceived {
        /// The sender.
        peer: SocketAddr,
        /// The stream id it carries.
        stream_id: u64,
        /// Its code.
        code: ErrorCode,
        /// `true` if it matched no session and was ignored.
        ignored: bool,
    },
}

/// A snapshot of one session, for tests and reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionInfo {
    /// The stream id.
    pub stream_id: u64,
    /// The state.
    pub state: SessionState,
    /// Bytes received from the tuple since the session was created.
    pub bytes_received: u64,
    /// Bytes sent to the tuple while the budget applied.
    pub bytes_sent_unconfirmed: u64,
    /// START_CONFIRM has been received.
    pub confirmed: bool,
    /// IMMEDIATE was granted.
    pub immediate: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SessionTimer {
    AckRetransmit,
    NextFrame,
    Linger,
}

impl TimerKind for SessionTimer {
    const ALL: &'static [Self] = &[
        SessionTimer::AckRetransmit,
        SessionTimer::NextFrame,
        SessionTimer::Linger,
    ];
    fn index(self) -> usize {
        self as usize
    }
}

#[derive(Clone, Debug)]
struct Session {
    stream_id: u64,
    state: SessionState,
    timers: TimerTable<SessionTimer, 3>,
    ack_attempts: u32,
    rx_bytes: u64,
    tx_unconfirmed: u64,
    confirmed: bool,
    immediate: bool,
    base: SimTime,
    /// Frames due so far (1..=due_upto may be sent).
    due_upto: u32,
    /// Next datagram to send: (sequence, index).
    cursor: (u32, u16),
}

impl Session {
    /// spec §3.4: the budget applies until START_CONFIRM (or a granted
    /// IMMEDIATE).
    fn budget(&self) -> Option<u64> {
        if self.confirmed || self.immediate {
            None
        } else {
            Some(self.rx_bytes.saturating_sub(self.tx_unconfirmed))
        }
    }
}

#[derive(Clone, Copy, Debug)]
enum Tx {
    StartAck {
        stream_id: u64,
        flags: Flags,
    },
    Error {
        stream_id: u64,
        code: ErrorCode,
        reason: &'static str,
    },
}

#[derive(Debug)]
struct Ctx {
    config: ResponderConfig,
    plan: StreamPlan,
    tx: VecDeque<(SocketAddr, Tx)>,
    events: VecDeque<ResponderEvent>,
    stats: ResponderStats,
}

impl Ctx {
    fn set_state(&mut self, peer: SocketAddr, s: &mut Session, to: SessionState) {
        let from = s.state;
        debug!(role = "responder", stream_id = s.stream_id, %peer, "{} => {}", from.name(), to.name());
        s.state = to;
        self.events.push_back(ResponderEvent::StateChanged {
            peer,
            stream_id: s.stream_id,
            from,
            to,
        });
    }

    /// Queues an ERROR if the budget allows (spec §3.4): with a session, its
    /// budget; without one, the size of the datagram being answered. A
    /// reason that does not fit is dropped before the ERROR is.
    fn queue_error(
        &mut self,
        peer: SocketAddr,
        session: Option<&mut Session>,
        trigger_len: usize,
        stream_id: u64,
        code: ErrorCode,
    ) {
        let budget = match &session {
            Some(s) => s.budget(),
            None => Some(trigger_len as u64),
        };
        let full = error_reason(code);
        let reason = match budget {
            None => full,
            Some(b) if (field::ERROR_MIN_LEN + full.len()) as u64 <= b => full,
            Some(b) if field::ERROR_MIN_LEN as u64 <= b => "",
            Some(_) => {
                bump(&mut self.stats.errors_suppressed, &code.name());
                debug!(role = "responder", stream_id, %peer, %code, "ERROR suppressed by anti-amplification budget");
                self.events
                    .push_back(ResponderEvent::ErrorSuppressed { peer, code });
                return;
            }
        };
        if let Some(s) = session
            && s.budget().is_some()
        {
            s.tx_unconfirmed += (field::ERROR_MIN_LEN + reason.len()) as u64;
        }
        bump(&mut self.stats.errors_sent, &code.name());
        self.events.push_back(ResponderEvent::ErrorSent {
            peer,
            stream_id,
            code,
        });
        self.tx.push_back((
            peer,
            Tx::Error {
                stream_id,
                code,
                reason,
            },
        ));
    }

    /// Queues START_ACK within the budget (spec §3.4).
    fn queue_start_ack(&mut self, peer: SocketAddr, s: &mut Session, retransmit: bool) {
        let len = field::CONTROL_MIN_LEN as u64;
        if let Some(b) = s.budget() {
            if len > b {
                self.stats.start_ack_suppressed += 1;
                debug!(role = "responder", stream_id = s.stream_id, %peer, "START_ACK suppressed by anti-amplification budget");
                return;
            }
            s.tx_unconfirmed += len;
        }
        self.stats.start_ack_sent += 1;
        if retransmit {
            self.stats.start_ack_retransmits += 1;
        }
        let mut flags = Flags::ACK_REQUIRED;
        if s.immediate {
            flags = flags | Flags::IMMEDIATE;
        }
        self.tx.push_back((
            peer,
            Tx::StartAck {
                stream_id: s.stream_id,
                flags,
            },
        ));
    }

    fn begin_streaming(&mut self, now: SimTime, peer: SocketAddr, s: &mut Session) {
        self.stats.handshake_successes += 1;
        s.timers.stop(SessionTimer::AckRetransmit);
        s.base = now;
        s.due_upto = 0;
        s.cursor = (1, 0);
        // spec §5.2: frame k at base + k × 1e6 / frame_rate µs.
        s.timers.set(SessionTimer::NextFrame, self.frame_due(s, 1));
        self.set_state(peer, s, SessionState::Streaming);
        self.events.push_back(ResponderEvent::HandshakeComplete {
            peer,
            stream_id: s.stream_id,
            immediate: s.immediate,
        });
    }

    fn frame_due(&self, s: &Session, k: u32) -> SimTime {
        SimTime::from_micros(
            s.base
                .as_micros()
                .saturating_add(self.plan.frame_offset_us(k.into())),
        )
    }

    fn close(&mut self, now: SimTime, peer: SocketAddr, s: &mut Session, outcome: Outcome) {
        s.timers.stop_all();
        // spec §5.4: linger to absorb late datagrams, then forget the tuple.
        s.timers.set(
            SessionTimer::Linger,
            now + std::time::Duration::from_millis(self.config.linger_ms),
        );
        match outcome {
            Outcome::Completed => self.stats.streams_completed += 1,
            Outcome::Failed(e) => {
                self.stats.sessions_failed += 1;
                debug!(role = "responder", stream_id = s.stream_id, %peer, error = %e, name = %e.name(), "session failed");
            }
        }
        self.set_state(peer, s, SessionState::Closed(outcome));
        self.events.push_back(ResponderEvent::SessionEnded {
            peer,
            stream_id: s.stream_id,
            outcome,
        });
    }

    /// Sends the ERROR prescribed for `err` (if any) and tears the session down.
    fn fail(
        &mut self,
        now: SimTime,
        peer: SocketAddr,
        s: &mut Session,
        len: usize,
        err: StreamError,
    ) {
        if let Some(code) = err.code_to_send() {
            let sid = s.stream_id;
            self.queue_error(peer, Some(s), len, sid, code);
        }
        self.close(now, peer, s, Outcome::Failed(err));
    }
}

/// The sending side: one endpoint, many sessions keyed by source tuple.
///
/// # Drive rule
///
/// After any input drain `poll_transmit` until `None`, then read
/// `poll_timeout`, then drain `poll_event`. A responder never finishes
/// ([`Machine::is_finished`] is always `false`); its owner stops it.
#[derive(Debug)]
pub struct Responder {
    sessions: BTreeMap<SocketAddr, Session>,
    ctx: Ctx,
    last_now: SimTime,
}

impl Responder {
    /// A new responder.
    ///
    /// # Errors
    ///
    /// The config does not validate.
    pub fn new(config: ResponderConfig) -> Result<Self, ConfigError> {
        let plan = config.validate()?;
        Ok(Responder {
            sessions: BTreeMap::new(),
            ctx: Ctx {
                config,
                plan,
                tx: VecDeque::new(),
                events: VecDeque::new(),
                stats: ResponderStats::default(),
            },
            last_now: SimTime::ZERO,
        })
    }

    /// The counters.
    pub fn stats(&self) -> &ResponderStats {
        &self.ctx.stats
    }

    /// The stream shape.
    pub fn plan(&self) -> &StreamPlan {
        &self.ctx.plan
    }

    /// The session for `peer`, if one exists (lingering ones included).
    pub fn session(&self, peer: SocketAddr) -> Option<SessionInfo> {
        self.sessions.get(&peer).map(|s| SessionInfo {
            stream_id: s.stream_id,
            state: s.state,
            bytes_received: s.rx_bytes,
            bytes_sent_unconfirmed: s.tx_unconfirmed,
            confirmed: s.confirmed,
            immediate: s.immediate,
        })
    }

    /// Number of sessions (lingering ones included).
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// Sessions waiting for START_CONFIRM.
    pub fn pending_count(&self) -> usize {
        self.sessions
            .values()
            .filter(|s| s.state == SessionState::ExpectStartConfirm)
            .count()
    }

    fn advance(&mut self, now: SimTime) {
        debug_assert!(
            now >= self.last_now,
            "time went backwards: {now} < {}",
            self.last_now
        );
        self.last_now = self.last_now.max(now);
    }

    /// A datagram from a tuple with no live session (spec §3.2, §8.4).
    fn on_no_session(
        &mut self,
        now: SimTime,
        from: SocketAddr,
        datagram: &[u8],
        parsed: Result<Frame<'_>, WireError>,
    ) {
        let ctx = &mut self.ctx;
        let len = datagram.len();
        let frame = match parsed {
            Ok(f) => f,
            Err(e) => {
                ctx.stats.malformed_received += 1;
                let code = malformed_code(e);
                // spec §8.4: echo the stream id if the datagram has one.
                let sid = wire::peek_stream_id(datagram).unwrap_or(0);
                ctx.queue_error(from, None, len, sid, code);
                return;
            }
        };
        let sid = frame.stream_id();
        match frame {
            Frame::Start(c) => {
                ctx.stats.starts_received += 1;
                if self
                    .sessions
                    .values()
                    .filter(|s| s.state == SessionState::ExpectStartConfirm)
                    .count()
                    >= ctx.config.max_pending as usize
                {
                    // spec §3.5: nothing is allocated.
                    ctx.stats.busy_rejections += 1;
                    ctx.queue_error(from, None, len, sid, ErrorCode::Busy);
                    return;
                }
                ctx.stats.sessions_created += 1;
                let requested = c.flags.contains(Flags::IMMEDIATE);
                let immediate = requested && ctx.config.allow_immediate;
                if immediate {
                    ctx.stats.immediate_granted += 1;
                } else if requested {
                    ctx.stats.immediate_refused += 1;
                }
                let mut s = Session {
                    stream_id: sid,
                    state: SessionState::Listen,
                    timers: TimerTable::new(),
                    ack_attempts: 1,
                    rx_bytes: len as u64,
                    tx_unconfirmed: 0,
                    confirmed: false,
                    immediate,
                    base: now,
                    due_upto: 0,
                    cursor: (1, 0),
                };
                ctx.queue_start_ack(from, &mut s, false);
                if immediate {
                    ctx.begin_streaming(now, from, &mut s);
                } else {
                    ctx.set_state(from, &mut s, SessionState::ExpectStartConfirm);
                    let wait = backoff_us(
                        ctx.config.start_ack_timeout_ms,
                        ctx.config.start_ack_backoff_max_ms,
                        1,
                    );
                    s.timers.set(
                        SessionTimer::AckRetransmit,
                        SimTime::from_micros(now.as_micros().saturating_add(wait)),
                    );
                }
                self.sessions.insert(from, s);
            }
            Frame::Error(e) => {
                ctx.stats.errors_ignored += 1;
                ctx.events.push_back(ResponderEvent::ErrorReceived {
                    peer: from,
                    stream_id: sid,
                    code: e.code,
                    ignored: true,
                });
            }
            Frame::StartConfirm(_) => ctx.queue_error(from, None, len, sid, ErrorCode::NoSession),
            Frame::StartAck(_) | Frame::Data(_) => {
                ctx.queue_error(from, None, len, sid, ErrorCode::UnexpectedFrame)
            }
        }
    }

    /// A datagram from a tuple with a live session (spec §3.2, §8.4).
    fn on_session(
        &mut self,
        now: SimTime,
        from: SocketAddr,
        len: usize,
        parsed: Result<Frame<'_>, WireError>,
    ) {
        let Some(s) = self.sessions.get_mut(&from) else {
            return;
        };
        let ctx = &mut self.ctx;
        let frame = match parsed {
            Ok(f) => f,
            Err(e) => {
                ctx.stats.malformed_received += 1;
                if s.state == SessionState::ExpectStartConfirm {
                    ctx.fail(now, from, s, len, e.into());
                }
                return;
            }
        };
        let sid = frame.stream_id();
        let state = s.state;
        if matches!(frame, Frame::Start(_)) {
            ctx.stats.starts_received += 1;
        }
        if sid != s.stream_id {
            match frame {
                Frame::Start(_) => {
                    // spec §3.2: a live session is never replaced; the new
                    // initiator learns why under its own id.
                    ctx.stats.start_conflicts += 1;
                    ctx.queue_error(from, Some(s), len, sid, ErrorCode::StreamIdMismatch);
                }
                Frame::Error(e) => {
                    ctx.stats.errors_ignored += 1;
                    ctx.events.push_back(ResponderEvent::ErrorReceived {
                        peer: from,
                        stream_id: sid,
                        code: e.code,
                        ignored: true,
                    });
                }
                Frame::StartConfirm(_) if state == SessionState::ExpectStartConfirm => {
                    let expected = s.stream_id;
                    ctx.fail(
                        now,
                        from,
                        s,
                        len,
                        StreamError::StreamIdMismatch { expected, got: sid },
                    );
                }
                _ => ctx.stats.ignored_datagrams += 1,
            }
            return;
        }
        match frame {
            Frame::Start(_) => {
                ctx.stats.duplicate_start += 1;
                // spec §3.2: a repeated START means START_ACK was lost.
                if state == SessionState::ExpectStartConfirm || (s.immediate && !s.confirmed) {
                    ctx.queue_start_ack(from, s, true);
                }
            }
            Frame::StartConfirm(_) => {
                if s.confirmed {
                    ctx.stats.duplicate_start_confirm += 1;
                } else {
                    s.confirmed = true;
                    if state == SessionState::ExpectStartConfirm {
                        ctx.begin_streaming(now, from, s);
                    }
                }
            }
            Frame::Error(e) => {
                bump(&mut ctx.stats.errors_received, &e.code.name());
                ctx.events.push_back(ResponderEvent::ErrorReceived {
                    peer: from,
                    stream_id: sid,
                    code: e.code,
                    ignored: false,
                });
                ctx.close(
                    now,
                    from,
                    s,
                    Outcome::Failed(StreamError::PeerError { code: e.code }),
                );
            }
            Frame::StartAck(_) | Frame::Data(_) => {
                let err = StreamError::UnexpectedFrame {
                    state: state.name(),
                    frame_type: frame.frame_type(),
                };
                ctx.fail(now, from, s, len, err);
            }
        }
    }

    fn on_session_timer(&mut self, now: SimTime, peer: SocketAddr) {
        let Some(s) = self.sessions.get_mut(&peer) else {
            return;
        };
        let ctx = &mut self.ctx;
        let mut remove = false;
        while let Some((kind, at)) = s.timers.pop_expired(now) {
            trace!(role = "responder", stream_id = s.stream_id, %peer, timer = ?kind, %at, "timer");
            match kind {
                SessionTimer::AckRetransmit => {
                    if s.ack_attempts >= ctx.config.start_ack_attempts {
                        // spec §3.2: drop the half-open session.
                        ctx.stats.handshake_timeouts += 1;
                        let attempts = s.ack_attempts;
                        if ctx.config.send_handshake_timeout_error {
                            let sid = s.stream_id;
                            ctx.queue_error(peer, Some(s), 0, sid, ErrorCode::HandshakeTimeout);
                        }
                        ctx.close(
                            now,
                            peer,
                            s,
                            Outcome::Failed(StreamError::HandshakeTimeout { attempts }),
                        );
                    } else {
                        s.ack_attempts += 1;
                        ctx.queue_start_ack(peer, s, true);
                        let wait = backoff_us(
                            ctx.config.start_ack_timeout_ms,
                            ctx.config.start_ack_backoff_max_ms,
                            s.ack_attempts,
                        );
                        s.timers.set(
                            SessionTimer::AckRetransmit,
                            SimTime::from_micros(at.as_micros().saturating_add(wait)),
                        );
                    }
                }
                SessionTimer::NextFrame => {
                    let frames = ctx.plan.frames();
                    while s.due_upto < frames && ctx.frame_due(s, s.due_upto + 1) <= now {
                        s.due_upto += 1;
                    }
                    if s.due_upto < frames {
                        let next = ctx.frame_due(s, s.due_upto + 1);
                        s.timers.set(SessionTimer::NextFrame, next);
                    }
                }
                SessionTimer::Linger => remove = true,
            }
        }
        if remove {
            trace!(role = "responder", %peer, "session forgotten");
            self.sessions.remove(&peer);
        }
    }
}

fn malformed_code(e: WireError) -> ErrorCode {
    match e {
        WireError::UnsupportedVersion { .. } => ErrorCode::UnsupportedVersion,
        _ => ErrorCode::MalformedFrame,
    }
}

impl Machine for Responder {
    type Event = ResponderEvent;

    fn handle_datagram(&mut self, now: SimTime, from: SocketAddr, datagram: &[u8]) {
        self.advance(now);
        let len = datagram.len();
        self.ctx.stats.datagrams_received += 1;
        self.ctx.stats.bytes_received += len as u64;
        let parsed = wire::parse(datagram);
        match &parsed {
            Ok(f) => {
                trace!(role = "responder", stream_id = f.stream_id(), peer = %from, frame = %f.frame_type(), len, "recv")
            }
            Err(e) => debug!(role = "responder", peer = %from, len, error = %e, "recv malformed"),
        }
        if let Some(s) = self.sessions.get_mut(&from) {
            // spec §3.4: every byte from the tuple counts, malformed included.
            s.rx_bytes += len as u64;
            if let SessionState::Closed(_) = s.state {
                if wire::peek_stream_id(datagram) == Some(s.stream_id) {
                    self.ctx.stats.late_datagrams += 1;
                    return;
                }
                // spec §5.4: anything else from a lingering tuple is handled
                // as if it had no session.
                self.sessions.remove(&from);
            } else {
                self.on_session(now, from, len, parsed);
                return;
            }
        }
        self.on_no_session(now, from, datagram, parsed);
    }

    fn handle_timeout(&mut self, now: SimTime) {
        self.advance(now);
        let due: Vec<SocketAddr> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.timers.next().is_some_and(|(_, at)| at <= now))
            .map(|(&p, _)| p)
            .collect();
        for peer in due {
            self.on_session_timer(now, peer);
        }
    }

    fn poll_transmit(&mut self, now: SimTime, buf: &mut [u8]) -> Option<Transmit> {
        let ctx = &mut self.ctx;
        if let Some((peer, tx)) = ctx.tx.pop_front() {
            let frame = match tx {
                Tx::StartAck { stream_id, flags } => Frame::StartAck(Control {
                    flags,
                    stream_id,
                    ext: TlvArea::EMPTY,
                }),
                Tx::Error {
                    stream_id,
                    code,
                    reason,
                } => Frame::Error(ErrorFrame {
                    flags: Flags::EMPTY,
                    stream_id,
                    code,
                    reason,
                    ext: TlvArea::EMPTY,
                }),
            };
            let Ok(len) = frame.emit(buf) else {
                debug_assert!(false, "buffer below MAX_DATAGRAM_SIZE");
                return None;
            };
            ctx.stats.datagrams_sent += 1;
            ctx.stats.bytes_sent += len as u64;
            debug!(role = "responder", stream_id = frame.stream_id(), %peer, frame = %frame.frame_type(), len, %now, "send");
            return Some(Transmit {
                destination: peer,
                len,
            });
        }
        // spec §5.2: all datagrams of a due frame go out back to back.
        let (&peer, s) = self
            .sessions
            .iter_mut()
            .find(|(_, s)| s.state == SessionState::Streaming && s.cursor.0 <= s.due_upto)?;
        let (seq, index) = s.cursor;
        let count = ctx.plan.datagrams_per_frame();
        let len = ctx.plan.datagram_len(index)?;
        let offset = ctx.plan.payload_offset(index)?;
        let header = DataHeader {
            flags: Flags::EMPTY,
            stream_id: s.stream_id,
            sequence: seq,
            index,
            count,
            timestamp_us: (now - s.base).as_micros() as u64,
        };
        let Some(out) = buf.get_mut(..len) else {
            debug_assert!(false, "buffer below MAX_DATAGRAM_SIZE");
            return None;
        };
        header.emit(out).ok()?;
        wire::fill_pattern(out.get_mut(field::PAYLOAD..)?, offset);
        if s.budget().is_some() {
            s.tx_unconfirmed += len as u64;
        }
        ctx.stats.datagrams_sent += 1;
        ctx.stats.data_datagrams_sent += 1;
        ctx.stats.bytes_sent += len as u64;
        trace!(role = "responder", stream_id = s.stream_id, %peer, frame = "DATA", seq, index, len, %now, "send");
        if index + 1 < count {
            s.cursor = (seq, index + 1);
        } else {
            ctx.stats.frames_sent += 1;
            s.cursor = (seq + 1, 0);
            if seq >= ctx.plan.frames() {
                ctx.close(now, peer, s, Outcome::Completed);
            }
        }
        Some(Transmit {
            destination: peer,
            len,
        })
    }

    fn poll_timeout(&self) -> Option<SimTime> {
        self.sessions
            .values()
            .filter_map(|s| s.timers.next().map(|(_, at)| at))
            .min()
    }

    fn poll_event(&mut self) -> Option<ResponderEvent> {
        self.ctx.events.pop_front()
    }

    fn is_finished(&self) -> bool {
        false
    }
}
