//! The initiator: asks for a stream, completes the handshake, receives and
//! classifies media (spec §3.1, §5.3).

use std::collections::VecDeque;
use std::net::SocketAddr;

use rand::RngCore;
use tracing::{debug, trace};

use super::config::{ConfigError, InitiatorConfig, backoff_us};
use super::error::{CommandError, Outcome, StreamError};
use super::error_reason;
use super::receiver::{Receiver, Render};
use super::stats::{InitiatorStats, bump};
use super::stream::StreamPlan;
use super::timer::{TimerKind, TimerTable};
use crate::machine::{Machine, Transmit};
use crate::time::SimTime;
use crate::wire::{self, Control, ErrorCode, ErrorFrame, Flags, Frame, TlvArea};

/// The initiator's state (spec §3.1), named for what it waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InitiatorState {
    /// Not started.
    Idle,
    /// START sent; waiting for START_ACK.
    ExpectStartAck,
    /// START_CONFIRM sent; receiving and rendering media.
    Streaming,
    /// Finished, successfully or not.
    Closed(Outcome),
}

impl InitiatorState {
    /// The state's name as used in traces and the spec.
    pub fn name(&self) -> &'static str {
        match self {
            InitiatorState::Idle => "Idle",
            InitiatorState::ExpectStartAck => "ExpectStartAck",
            InitiatorState::Streaming => "Streaming",
            InitiatorState::Closed(_) => "Closed",
        }
    }
}

/// What an initiator reports (spec §9.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum InitiatorEvent {
    /// The state changed.
    StateChanged {
        /// The old state.
        from: InitiatorState,
        /// The new state.
        to: InitiatorState,
    },
    /// START_ACK accepted (or, with IMMEDIATE requested, the first DATA);
    /// START_CONFIRM queued.
    HandshakeComplete {
        /// The stream id.
        stream_id: u64,
        /// The responder granted IMMEDIATE.
        immediate: bool,
        /// First START → this moment, µs.
        handshake_us: u64,
    },
    /// An ERROR frame was queued.
    ErrorSent {
        /// Its code.
        code: ErrorCode,
    },
    /// An ERROR frame arrived from the peer.
    ErrorReceived {
        /// Its code.
        code: ErrorCode,
        /// `true` if it was ignored (another stream id, or after close).
        ignored: bool,
    },
    /// The stream ended; [`Initiator::outcome`] now returns the same value.
    Finished(Outcome),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Timer {
    /// Start at the first opportunity (armed at construction).
    Start,
    /// Retransmit START or give up.
    StartRetry,
    /// Render the head frame.
    Render,
}

impl TimerKind for Timer {
    const ALL: &'static [Self] = &[Timer::Start, Timer::StartRetry, Timer::Render];
    fn index(self) -> usize {
        self as usize
    }
}

#[derive(Clone, Copy, Debug)]
enum Tx {
    Start,
    StartConfirm,
    Error { code: ErrorCode, stream_id: u64 },
}

/// The receiving side of one stream.
///
/// # Drive rule
///
/// After any input (`handle_datagram`, `handle_timeout`, [`Initiator::start`],
/// [`Initiator::abort`]) drain `poll_transmit` until `None`, then read
/// `poll_timeout`, then drain `poll_event`.
///
/// A new initiator arms its start timer at [`SimTime::ZERO`], so a generic
/// driver starts it with its first `handle_timeout`; [`Initiator::start`]
/// does the same explicitly.
///
/// # Examples
///
/// ```
/// use streamlab_core::machine::{Machine, MAX_DATAGRAM_SIZE};
/// use streamlab_mediastream::proto::{Initiator, InitiatorConfig};
/// use streamlab_core::time::SimTime;
///
/// let mut rng = streamlab_core::seed::named_rng(1, "proto:client:stream_id");
/// let peer = "192.0.2.1:4444".parse().unwrap();
/// let mut init = Initiator::new(InitiatorConfig::default(), peer, &mut rng).unwrap();
/// let mut buf = vec![0u8; MAX_DATAGRAM_SIZE];
/// let now = init.poll_timeout().unwrap();
/// init.handle_timeout(now);
/// let t = init.poll_transmit(now, &mut buf).unwrap();
/// assert_eq!((t.destination, t.len), (peer, 64)); // a padded START
/// assert_eq!(init.poll_timeout(), Some(SimTime::from_millis(500)));
/// ```
#[derive(Debug)]
pub struct Initiator {
    config: InitiatorConfig,
    plan: StreamPlan,
    peer: SocketAddr,
    stream_id: u64,
    state: InitiatorState,
    timers: TimerTable<Timer, 3>,
    tx: VecDeque<Tx>,
    events: VecDeque<InitiatorEvent>,
    stats: InitiatorStats,
    padding: Vec<u8>,
    start_attempts: u32,
    started_at: Option<SimTime>,
    receiver: Option<Receiver>,
    last_now: SimTime,
}

impl Initiator {
    /// A new initiator for a stream from `peer`, with a stream id drawn from
    /// `rng` (use [`crate::seed::named_rng`]).
    ///
    /// # Errors
    ///
    /// The config does not validate.
    pub fn new(
        config: InitiatorConfig,
        peer: SocketAddr,
        rng: &mut impl RngCore,
    ) -> Result<Self, ConfigError> {
        Self::with_stream_id(config, peer, rng.next_u64())
    }

    /// A new initiator with an explicit stream id.
    ///
    /// # Errors
    ///
    /// The config does not validate.
    pub fn with_stream_id(
        config: InitiatorConfig,
        peer: SocketAddr,
        stream_id: u64,
    ) -> Result<Self, ConfigError> {
        let plan = config.validate()?;
        let pad =
            (config.start_padding_bytes as usize).saturating_sub(wire::field::CONTROL_MIN_LEN);
        let mut padding = vec![0u8; pad];
        if pad > 0 {
            // validate() guarantees 4 <= pad <= 65 493.
            let _ = wire::write_padding(&mut padding);
        }
        let mut timers = TimerTable::new();
        timers.set(Timer::Start, SimTime::ZERO);
        Ok(Initiator {
            config,
            plan,
            peer,
            stream_id,
            state: InitiatorState::Idle,
            timers,
            tx: VecDeque::new(),
            events: VecDeque::new(),
            stats: InitiatorStats::default(),
            padding,
            start_attempts: 0,
            started_at: None,
            receiver: None,
            last_now: SimTime::ZERO,
        })
    }

    /// The stream id.
    pub fn stream_id(&self) -> u64 {
        self.stream_id
    }

    /// The responder's address.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// The current state.
    pub fn state(&self) -> InitiatorState {
        self.state
    }

    /// The stream shape.
    pub fn plan(&self) -> &StreamPlan {
        &self.plan
    }

    /// The counters.
    pub fn stats(&self) -> &InitiatorStats {
        &self.stats
    }

    /// How the stream ended, once it has.
    pub fn outcome(&self) -> Option<Outcome> {
        match self.state {
            InitiatorState::Closed(o) => Some(o),
            _ => None,
        }
    }

    /// `true` if a datagram from `from` belongs to this machine: it comes
    /// from the peer and carries this stream id.
    pub fn accepts(&self, from: SocketAddr, datagram: &[u8]) -> bool {
        from == self.peer && wire::peek_stream_id(datagram) == Some(self.stream_id)
    }

    /// Sends the first START (spec §3.1).
    ///
    /// # Errors
    ///
    /// [`CommandError::AlreadyStarted`] unless the initiator is idle.
    pub fn start(&mut self, now: SimTime) -> Result<(), CommandError> {
        if self.state != InitiatorState::Idle {
            return Err(CommandError::AlreadyStarted);
        }
        self.advance(now);
        self.timers.stop(Timer::Start);
        self.started_at = Some(now);
        self.set_state(InitiatorState::ExpectStartAck);
        self.send_start(now);
        Ok(())
    }

    /// Gives up: sends ERROR ABORTED (if started) and closes (spec §3.1).
    ///
    /// # Errors
    ///
    /// [`CommandError::Closed`] if already closed.
    pub fn abort(&mut self, now: SimTime) -> Result<(), CommandError> {
        match self.state {
            InitiatorState::Closed(_) => Err(CommandError::Closed),
            InitiatorState::Idle => {
                self.close(Outcome::Failed(StreamError::Aborted));
                Ok(())
            }
            _ => {
                self.advance(now);
                self.fail(StreamError::Aborted, self.stream_id);
                Ok(())
            }
        }
    }

    fn advance(&mut self, now: SimTime) {
        debug_assert!(
            now >= self.last_now,
            "time went backwards: {now} < {}",
            self.last_now
        );
        self.last_now = self.last_now.max(now);
    }

    fn set_state(&mut self, to: InitiatorState) {
        let from = self.state;
        debug!(role = "initiator", stream_id = self.stream_id, peer = %self.peer, "{} => {}", from.name(), to.name());
        self.state = to;
        self.events
            .push_back(InitiatorEvent::StateChanged { from, to });
    }

    fn send_start(&mut self, at: SimTime) {
        self.start_attempts += 1;
        self.tx.push_back(Tx::Start);
        // spec §6.1: wait min(first × 2^(n−1), max) after the n-th send.
        let wait = backoff_us(
            self.config.start_timeout_ms,
            self.config.start_backoff_max_ms,
            self.start_attempts,
        );
        self.timers.set(
            Timer::StartRetry,
            SimTime::from_micros(at.as_micros().saturating_add(wait)),
        );
    }

    fn close(&mut self, outcome: Outcome) {
        self.timers.stop_all();
        if let Outcome::Failed(_) = outcome
            && !matches!(self.state, InitiatorState::Streaming)
        {
            self.stats.handshake_failures = 1;
        }
        self.set_state(InitiatorState::Closed(outcome));
        self.events.push_back(InitiatorEvent::Finished(outcome));
    }

    /// Closes with `err`, first queueing the ERROR the spec prescribes for
    /// it (spec §8.1), addressed to `echo_id`.
    fn fail(&mut self, err: StreamError, echo_id: u64) {
        if let Some(code) = err.code_to_send() {
            self.tx.push_back(Tx::Error {
                code,
                stream_id: echo_id,
            });
            bump(&mut self.stats.errors_sent, &code.name());
            self.events.push_back(InitiatorEvent::ErrorSent { code });
        }
        debug!(role = "initiator", stream_id = self.stream_id, error = %err, name = %err.name(), "stream failed");
        self.close(Outcome::Failed(err));
    }

    fn enter_streaming(&mut self, now: SimTime, immediate: bool) {
        let started = self.started_at.unwrap_or(now);
        let handshake_us = (now - started).as_micros() as u64;
        self.stats.handshake_successes = 1;
        self.stats.handshake_us = Some(handshake_us);
        self.stats.immediate_granted = immediate;
        self.timers.stop(Timer::StartRetry);
        self.tx.push_back(Tx::StartConfirm);
        // spec §5.3: the render base is the moment of entering Streaming.
        let receiver = Receiver::new(self.plan.clone(), self.config.buffer_depth_s, now);
        self.timers.set(Timer::Render, receiver.next_render_at());
        self.receiver = Some(receiver);
        self.set_state(InitiatorState::Streaming);
        self.events.push_back(InitiatorEvent::HandshakeComplete {
            stream_id: self.stream_id,
            immediate,
            handshake_us,
        });
    }

    fn on_data(&mut self, now: SimTime, len: usize, d: &wire::Data<'_>) {
        self.stats.data_datagrams_received += 1;
        if self.stats.time_to_stream_us.is_none() {
            let started = self.started_at.unwrap_or(now);
            self.stats.time_to_stream_us = Some((now - started).as_micros() as u64);
        }
        if let Some(r) = self.receiver.as_mut() {
            r.on_data(now, len, d, &mut self.stats);
        }
    }

    fn on_frame(&mut self, now: SimTime, len: usize, frame: Frame<'_>) {
        let sid = frame.stream_id();
        let state = self.state;
        if sid != self.stream_id {
            match (state, frame) {
                (_, Frame::Error(e)) => {
                    // spec §8.3: a forged or stale ERROR never kills a stream.
                    self.stats.errors_ignored += 1;
                    self.events.push_back(InitiatorEvent::ErrorReceived {
                        code: e.code,
                        ignored: true,
                    });
                }
                (InitiatorState::ExpectStartAck, Frame::StartAck(_)) => {
                    // spec §3.1: the echoed id must match. The ERROR carries
                    // our own id, the one the responder's session was
                    // created with.
                    self.fail(
                        StreamError::StreamIdMismatch {
                            expected: self.stream_id,
                            got: sid,
                        },
                        self.stream_id,
                    );
                }
                _ => self.stats.ignored_datagrams += 1,
            }
            return;
        }
        match (state, frame) {
            (_, Frame::Error(e)) => {
                bump(&mut self.stats.errors_received, &e.code.name());
                self.events.push_back(InitiatorEvent::ErrorReceived {
                    code: e.code,
                    ignored: false,
                });
                self.fail(StreamError::PeerError { code: e.code }, sid);
            }
            (InitiatorState::ExpectStartAck, Frame::StartAck(c)) => {
                let immediate = self.config.request_immediate && c.flags.contains(Flags::IMMEDIATE);
                self.enter_streaming(now, immediate);
            }
            (InitiatorState::Streaming, Frame::StartAck(_)) => {
                // spec §3.1: the responder did not see START_CONFIRM.
                self.stats.duplicate_start_ack += 1;
                self.tx.push_back(Tx::StartConfirm);
            }
            (InitiatorState::ExpectStartAck, Frame::Data(d)) if self.config.request_immediate => {
                // spec §3.3: with IMMEDIATE requested, DATA for our stream id
                // proves the START_ACK (lost or late) granted it.
                self.enter_streaming(now, true);
                self.on_data(now, len, &d);
            }
            (InitiatorState::Streaming, Frame::Data(d)) => self.on_data(now, len, &d),
            (_, other) => self.fail(
                StreamError::UnexpectedFrame {
                    state: state.name(),
                    frame_type: other.frame_type(),
                },
                sid,
            ),
        }
    }
}

impl Machine for Initiator {
    type Event = InitiatorEvent;

    fn handle_datagram(&mut self, now: SimTime, from: SocketAddr, datagram: &[u8]) {
        self.advance(now);
        if from != self.peer {
            // spec §3.1: only the peer's datagrams count.
            self.stats.foreign_datagrams += 1;
            trace!(role = "initiator", stream_id = self.stream_id, %from, len = datagram.len(), "foreign datagram ignored");
            return;
        }
        self.stats.datagrams_received += 1;
        self.stats.bytes_received += datagram.len() as u64;
        let parsed = wire::parse(datagram);
        match &parsed {
            Ok(f) => {
                trace!(role = "initiator", stream_id = f.stream_id(), peer = %from, frame = %f.frame_type(), len = datagram.len(), "recv")
            }
            Err(e) => {
                debug!(role = "initiator", stream_id = self.stream_id, peer = %from, len = datagram.len(), error = %e, "recv malformed")
            }
        }
        match self.state {
            InitiatorState::Idle | InitiatorState::Closed(_) => {
                if let Ok(Frame::Error(e)) = parsed {
                    self.stats.errors_ignored += 1;
                    self.events.push_back(InitiatorEvent::ErrorReceived {
                        code: e.code,
                        ignored: true,
                    });
                } else {
                    self.stats.ignored_datagrams += 1;
                }
            }
            InitiatorState::ExpectStartAck | InitiatorState::Streaming => match parsed {
                Ok(frame) => self.on_frame(now, datagram.len(), frame),
                Err(e) => {
                    self.stats.malformed_received += 1;
                    // spec §8.1: fatal during the handshake; counted only
                    // while streaming (a damaged DATA datagram is a dropped
                    // or errored frame, not a dead stream).
                    if self.state == InitiatorState::ExpectStartAck {
                        self.fail(e.into(), self.stream_id);
                    }
                }
            },
        }
    }

    fn handle_timeout(&mut self, now: SimTime) {
        self.advance(now);
        while let Some((kind, at)) = self.timers.pop_expired(now) {
            trace!(role = "initiator", stream_id = self.stream_id, timer = ?kind, %at, "timer");
            match kind {
                Timer::Start => {
                    let _ = self.start(now);
                }
                Timer::StartRetry => {
                    if self.start_attempts >= self.config.start_attempts {
                        let attempts = self.start_attempts;
                        self.fail(StreamError::HandshakeTimeout { attempts }, self.stream_id);
                    } else {
                        self.send_start(at);
                    }
                }
                Timer::Render => {
                    let Some(r) = self.receiver.as_mut() else {
                        continue;
                    };
                    match r.render(&mut self.stats) {
                        Render::More => {
                            let next = r.next_render_at();
                            self.timers.set(Timer::Render, next);
                        }
                        Render::Finished => self.close(Outcome::Completed),
                        Render::NoData => self.fail(StreamError::NoData, self.stream_id),
                    }
                }
            }
        }
    }

    fn poll_transmit(&mut self, now: SimTime, buf: &mut [u8]) -> Option<Transmit> {
        let tx = self.tx.pop_front()?;
        let frame = match tx {
            Tx::Start => {
                let mut flags = Flags::ACK_REQUIRED;
                if self.config.request_immediate {
                    flags = flags | Flags::IMMEDIATE;
                }
                Frame::Start(Control {
                    flags,
                    stream_id: self.stream_id,
                    // Built by write_padding in the constructor.
                    ext: TlvArea::new(&self.padding).unwrap_or_default(),
                })
            }
            Tx::StartConfirm => {
                self.stats.start_confirm_sent += 1;
                Frame::StartConfirm(Control {
                    flags: Flags::EMPTY,
                    stream_id: self.stream_id,
                    ext: TlvArea::EMPTY,
                })
            }
            Tx::Error { code, stream_id } => Frame::Error(ErrorFrame {
                flags: Flags::EMPTY,
                stream_id,
                code,
                reason: error_reason(code),
                ext: TlvArea::EMPTY,
            }),
        };
        if matches!(tx, Tx::Start) {
            self.stats.start_attempts += 1;
        }
        let len = match frame.emit(buf) {
            Ok(len) => len,
            Err(e) => {
                // The Machine contract gives a MAX_DATAGRAM_SIZE buffer.
                debug_assert!(false, "emit failed: {e}");
                return None;
            }
        };
        self.stats.datagrams_sent += 1;
        self.stats.bytes_sent += len as u64;
        debug!(role = "initiator", stream_id = frame.stream_id(), peer = %self.peer, frame = %frame.frame_type(), len, %now, "send");
        Some(Transmit {
            destination: self.peer,
            len,
        })
    }

    fn poll_timeout(&self) -> Option<SimTime> {
        self.timers.next().map(|(_, at)| at)
    }

    fn poll_event(&mut self) -> Option<InitiatorEvent> {
        self.events.pop_front()
    }

    fn is_finished(&self) -> bool {
        matches!(self.state, InitiatorState::Closed(_)) && self.tx.is_empty()
    }
}
