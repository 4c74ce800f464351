//! The sans-IO MSP endpoint (`docs/msp.md` §3–§6): datagrams and time in;
//! transmits, a wake-up time and events out. It never reads a clock and
//! never touches a socket.
//!
//! One [`Endpoint`] owns one UDP socket. A *caller* has exactly one
//! connection, to the address it was given; a *listener* accepts any number
//! of connections (up to [`Config::max_connections`]) on its one socket, one
//! per remote address, created only by packets carrying `FLAG_FIRST`.
//!
//! Application API per connection (named by the peer's address):
//! [`Endpoint::send`] (one message, `Err(SendError::WouldBlock)` when the
//! window is full), [`Endpoint::shutdown`] (half-close), [`Endpoint::stop`]
//! (abort). Events: [`Event::Message`], [`Event::Writable`],
//! [`Event::RemoteShutdown`], [`Event::Closed`] with the result.
//!
//! Memory is bounded: at most `max_connections` connections, each with at
//! most [`TX_LIMIT`] queued packets and [`RX_AHEAD`] buffered ones, and at
//! most [`MAX_STOP_REPLIES`] pending STOP replies.

mod conn;

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::time::Duration;

use streamlab_core::machine::{Machine, Transmit};
use streamlab_core::time::SimTime;

use crate::wire::{self, FLAG_FIRST, Packet};

pub use conn::ConnState;
use conn::Connection;

/// `MAX_WINDOW_SIZE`: a send is refused once the transmit queue holds more
/// than this many packets, and the connection stops being writable once it
/// holds this many.
pub const WINDOW: usize = 4;
/// The most data packets a connection ever has queued and unacknowledged:
/// `WINDOW + 1`, because a send is accepted while the queue holds `WINDOW`
/// (serval-dna refuses only when the count *exceeds* the window).
pub const TX_LIMIT: usize = WINDOW + 1;
/// How far ahead of the next expected sequence number received packets are
/// buffered; later ones are dropped (a conforming sender is never more than
/// [`TX_LIMIT`] ahead).
pub const RX_AHEAD: u16 = 16;
/// `RETRANSMIT_TIME`: an unacknowledged packet is sent again this long after
/// its previous transmission (fixed, no backoff, RTT not used).
pub const RETRANSMIT: Duration = Duration::from_millis(1500);
/// An ACK / keepalive goes out this long after the last transmission.
pub const KEEPALIVE: Duration = Duration::from_millis(1500);
/// `MSP_TIMEOUT`: a connection that receives nothing for this long closes
/// with an error.
pub const TIMEOUT: Duration = Duration::from_millis(10_000);
/// `msp_connect`: the caller's first packet goes out this soon even with no
/// data.
pub const CONNECT_KICK: Duration = Duration::from_millis(10);
/// After a clean close, the connection keeps answering the peer's
/// retransmissions with its final ACK until it has heard nothing for this
/// long (this implementation's addition, see `docs/msp.md` §6.4).
pub const LINGER: Duration = TIMEOUT;
/// `MSP_MESSAGE_SIZE`: the largest message [`Endpoint::send`] accepts.
pub const MAX_MESSAGE: usize = 1024;
/// STOP replies to unknown connections waiting to be sent; more are dropped.
pub const MAX_STOP_REPLIES: usize = 64;

/// An endpoint's configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// A listener's limit on simultaneous connections (lingering ones
    /// included); a FIRST packet beyond it is answered with STOP.
    pub max_connections: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_connections: 64,
        }
    }
}

/// Why a message was not queued.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The window is full; wait for [`Event::Writable`].
    #[error("the window is full; wait for Writable")]
    WouldBlock,
    /// Zero-length messages are not supported (`docs/msp.md` §7).
    #[error("zero-length messages are not supported")]
    Empty,
    /// Longer than [`MAX_MESSAGE`].
    #[error("a message of {0} bytes exceeds the {MAX_MESSAGE}-byte limit")]
    TooLarge(usize),
    /// This side has already shut down its sending half.
    #[error("the connection is shut down for sending")]
    ShutDown,
    /// No open connection to that peer.
    #[error("no open connection to that peer")]
    NotConnected,
}

/// How a connection ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum CloseResult {
    /// Both sides shut down and every packet was acknowledged.
    Closed,
    /// Nothing arrived for [`TIMEOUT`] (`CLOSED|ERROR`).
    Timeout,
    /// The peer sent STOP (`CLOSED|STOPPED`).
    Stopped,
    /// This side called [`Endpoint::stop`].
    StoppedLocally,
}

impl CloseResult {
    /// The stable name in reports.
    pub fn name(self) -> &'static str {
        match self {
            CloseResult::Closed => "closed",
            CloseResult::Timeout => "timeout",
            CloseResult::Stopped => "stopped",
            CloseResult::StoppedLocally => "stopped_locally",
        }
    }

    /// Every name.
    pub const NAMES: &'static [&'static str] = &["closed", "timeout", "stopped", "stopped_locally"];
}

/// What an endpoint tells its application.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A listener accepted a connection from `peer`.
    Opened {
        /// The peer.
        peer: SocketAddr,
    },
    /// A message arrived, in order, exactly as sent.
    Message {
        /// The peer.
        peer: SocketAddr,
        /// Its bytes.
        data: Vec<u8>,
    },
    /// A send refused with `WouldBlock` would now succeed.
    Writable {
        /// The peer.
        peer: SocketAddr,
    },
    /// The peer shut down its sending half; no more messages will come.
    RemoteShutdown {
        /// The peer.
        peer: SocketAddr,
    },
    /// The connection ended.
    Closed {
        /// The peer.
        peer: SocketAddr,
        /// How.
        result: CloseResult,
    },
}

/// An endpoint's counters.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Stats {
    /// Datagrams handed to the endpoint.
    pub datagrams_received: u64,
    /// Of those, not MSP packets (empty, truncated, too long).
    pub malformed_received: u64,
    /// Data packets sent, first transmissions and retransmissions.
    pub data_packets_sent: u64,
    /// Of those, retransmissions.
    pub retransmissions: u64,
    /// ACK-only packets (ACKs and keepalives) sent.
    pub acks_sent: u64,
    /// STOP packets sent (by `stop` and in reply to unknown connections).
    pub stops_sent: u64,
    /// Of those, replies to packets for unknown connections.
    pub stops_for_unknown: u64,
    /// STOP packets received.
    pub stops_received: u64,
    /// Data packets received that were already consumed or buffered.
    pub duplicates_received: u64,
    /// Data packets received too far ahead of the next expected one.
    pub out_of_window_received: u64,
    /// Acks ignored because they acknowledged a packet never sent.
    pub invalid_acks: u64,
    /// Messages accepted by `send`.
    pub messages_sent: u64,
    /// Their bytes.
    pub bytes_sent: u64,
    /// Messages delivered to the application.
    pub messages_delivered: u64,
    /// Their bytes.
    pub bytes_delivered: u64,
    /// Connections opened (a caller's own, or accepted by a listener).
    pub connections_opened: u64,
    /// FIRST packets refused because the listener was full.
    pub connections_refused: u64,
    /// Connections closed cleanly.
    pub connections_closed: u64,
    /// Connections ended by a timeout or a STOP (either side's).
    pub connections_failed: u64,
}

/// The endpoint's mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Caller { remote: SocketAddr, opened: bool },
    Listener,
}

/// One MSP socket: a caller's one connection, or a listener's many.
#[derive(Debug)]
pub struct Endpoint {
    mode: Mode,
    config: Config,
    conns: BTreeMap<SocketAddr, Connection>,
    stop_replies: VecDeque<SocketAddr>,
    events: VecDeque<Event>,
    stats: Stats,
}

impl Endpoint {
    /// A caller to `remote`. Its connection opens at the first input (any
    /// call taking `now`), or at [`Endpoint::connect`].
    pub fn caller(remote: SocketAddr) -> Self {
        Endpoint {
            mode: Mode::Caller {
                remote,
                opened: false,
            },
            config: Config::default(),
            conns: BTreeMap::new(),
            stop_replies: VecDeque::new(),
            events: VecDeque::new(),
            stats: Stats::default(),
        }
    }

    /// A listener.
    pub fn listener(config: Config) -> Self {
        Endpoint {
            mode: Mode::Listener,
            config,
            conns: BTreeMap::new(),
            stop_replies: VecDeque::new(),
            events: VecDeque::new(),
            stats: Stats::default(),
        }
    }

    /// Open the caller's connection at `now` (the first packet goes out
    /// within [`CONNECT_KICK`]). No effect on a listener or once opened.
    pub fn connect(&mut self, now: SimTime) {
        if let Mode::Caller { remote, opened } = &mut self.mode
            && !*opened
        {
            *opened = true;
            let mut c = Connection::new(*remote, now);
            c.kick(now);
            self.conns.insert(*remote, c);
            self.stats.connections_opened += 1;
        }
    }

    /// The caller's peer, if this is a caller.
    pub fn remote(&self) -> Option<SocketAddr> {
        match self.mode {
            Mode::Caller { remote, .. } => Some(remote),
            Mode::Listener => None,
        }
    }

    /// Its counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The connection to `peer`'s state, if it exists.
    pub fn state(&self, peer: SocketAddr) -> Option<ConnState> {
        self.conns.get(&peer).map(Connection::state)
    }

    /// Connections held (open or lingering).
    pub fn connections(&self) -> usize {
        self.conns.len()
    }

    /// Queue one message to `peer`.
    ///
    /// # Errors
    /// [`SendError`]: the window is full, the message is empty or too
    /// large, the side has shut down, or there is no open connection.
    pub fn send(
        &mut self,
        now: SimTime,
        peer: SocketAddr,
        message: &[u8],
    ) -> Result<(), SendError> {
        self.connect(now);
        if message.is_empty() {
            return Err(SendError::Empty);
        }
        if message.len() > MAX_MESSAGE {
            return Err(SendError::TooLarge(message.len()));
        }
        let c = self
            .conns
            .get_mut(&peer)
            .filter(|c| c.state() == ConnState::Open)
            .ok_or(SendError::NotConnected)?;
        c.send(message)?;
        self.stats.messages_sent += 1;
        self.stats.bytes_sent += message.len() as u64;
        Ok(())
    }

    /// Whether a send to `peer` would be accepted now.
    pub fn writable(&self, peer: SocketAddr) -> bool {
        self.conns.get(&peer).is_some_and(Connection::writable)
    }

    /// Shut down the sending half of the connection to `peer` (no effect if
    /// there is none or it already is).
    pub fn shutdown(&mut self, now: SimTime, peer: SocketAddr) {
        self.connect(now);
        if let Some(c) = self.conns.get_mut(&peer) {
            c.shutdown();
        }
    }

    /// Abort the connection to `peer`: one STOP goes out, the connection
    /// closes with [`CloseResult::StoppedLocally`].
    pub fn stop(&mut self, now: SimTime, peer: SocketAddr) {
        self.connect(now);
        if let Some(c) = self.conns.get_mut(&peer)
            && c.stop()
        {
            self.stats.connections_failed += 1;
            self.events.push_back(Event::Closed {
                peer,
                result: CloseResult::StoppedLocally,
            });
        }
    }

    fn queue_stop_reply(&mut self, to: SocketAddr) {
        if self.stop_replies.len() < MAX_STOP_REPLIES {
            self.stop_replies.push_back(to);
        }
    }

    fn reap(&mut self) {
        self.conns.retain(|_, c| c.state() != ConnState::Gone);
    }
}

impl Machine for Endpoint {
    type Event = Event;

    fn handle_datagram(&mut self, now: SimTime, from: SocketAddr, datagram: &[u8]) {
        self.connect(now);
        self.stats.datagrams_received += 1;
        let packet = match wire::parse(datagram) {
            Ok(p) => p,
            Err(_) => {
                self.stats.malformed_received += 1;
                return;
            }
        };
        let is_stop = matches!(packet, Packet::Stop { .. });
        if is_stop {
            self.stats.stops_received += 1;
        }
        if !self.conns.contains_key(&from) {
            let accept =
                self.mode == Mode::Listener && !is_stop && packet.flags() & FLAG_FIRST != 0;
            if !accept {
                if !is_stop {
                    self.stats.stops_for_unknown += 1;
                    self.queue_stop_reply(from);
                }
                return;
            }
            if self.conns.len() >= self.config.max_connections {
                self.stats.connections_refused += 1;
                self.stats.stops_for_unknown += 1;
                self.queue_stop_reply(from);
                return;
            }
            self.conns.insert(from, Connection::new(from, now));
            self.stats.connections_opened += 1;
            self.events.push_back(Event::Opened { peer: from });
        }
        if let Some(c) = self.conns.get_mut(&from) {
            c.on_packet(now, &packet, &mut self.stats, &mut self.events);
        }
        self.reap();
    }

    fn handle_timeout(&mut self, now: SimTime) {
        self.connect(now);
        for c in self.conns.values_mut() {
            c.on_timeout(now, &mut self.stats, &mut self.events);
        }
        self.reap();
    }

    fn poll_transmit(&mut self, now: SimTime, buf: &mut [u8]) -> Option<Transmit> {
        self.connect(now);
        if let Some(to) = self.stop_replies.pop_front() {
            let len = Packet::STOP.emit(buf).ok()?;
            self.stats.stops_sent += 1;
            return Some(Transmit {
                destination: to,
                len,
            });
        }
        let mut out = None;
        for (peer, c) in &mut self.conns {
            if let Some(len) = c.poll_transmit(now, buf, &mut self.stats, &mut self.events) {
                out = Some(Transmit {
                    destination: *peer,
                    len,
                });
                break;
            }
        }
        self.reap();
        out
    }

    fn poll_timeout(&self) -> Option<SimTime> {
        let pending = !self.stop_replies.is_empty()
            || matches!(self.mode, Mode::Caller { opened: false, .. });
        if pending {
            return Some(SimTime::ZERO);
        }
        self.conns.values().filter_map(Connection::next_timer).min()
    }

    fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    fn is_finished(&self) -> bool {
        matches!(self.mode, Mode::Caller { opened: true, .. })
            && self.conns.is_empty()
            && self.stop_replies.is_empty()
    }
}
