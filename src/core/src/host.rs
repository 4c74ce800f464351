//! The sans-IO shape of a host's protocol software when it owns several
//! sockets and connections: inputs are datagrams on socket *k*, the outcome
//! of binding it, TCP connections opened (connected or accepted), their
//! bytes and their end; outputs are binds, transmits on socket *k*, TCP
//! listens, connects, writes, half-closes and closes. One [`HostMachine`] is
//! what a host runs, in the simulator and (through the host driver) over
//! tokio in real programs.
//!
//! Handles: the machine names its datagram sockets, listeners and the
//! connections it opens with its own numbers ([`SocketId`], below
//! [`ACCEPTED_BASE`]); the driver names the connections it accepts from
//! [`ACCEPTED_BASE`] upward.
//!
//! A single-socket [`Machine`] is a host machine through [`OneSocket`].
//!
//! # Drive rule
//!
//! After any input, the driver drains [`HostMachine::poll_output`] until
//! `None` (carrying out binds, transmits and closes in order, and feeding
//! back [`Input::Bound`] or [`Input::BindFailed`]), then reads
//! [`HostMachine::poll_timeout`], then drains [`HostMachine::poll_event`].

use std::io;
use std::net::SocketAddr;

use crate::machine::{Machine, Transmit};
use crate::time::SimTime;

/// A host machine's name for one of its sockets, listeners or connections.
pub type SocketId = u32;

/// The first handle the driver gives an accepted connection; the machine's
/// own handles stay below it.
pub const ACCEPTED_BASE: SocketId = 1 << 31;

/// Something that happened to a host machine.
#[derive(Debug)]
pub enum Input<'a> {
    /// A datagram arrived on `socket` from `from`.
    Datagram {
        /// The receiving socket.
        socket: SocketId,
        /// Its source.
        from: SocketAddr,
        /// Its bytes (any bytes: malformed input is handled, never a panic).
        data: &'a [u8],
    },
    /// A bind the machine asked for succeeded.
    Bound {
        /// The socket.
        socket: SocketId,
        /// Its local address (the port chosen when 0 was asked).
        local: SocketAddr,
    },
    /// A bind, listen or connect the machine asked for failed (the port is
    /// taken, the peer refused, no answer in time).
    BindFailed {
        /// The socket, listener or connection.
        socket: SocketId,
        /// Why.
        error: io::ErrorKind,
    },
    /// A TCP listen the machine asked for is in place.
    Listening {
        /// The listener.
        listener: SocketId,
        /// Its local address.
        local: SocketAddr,
    },
    /// A TCP connection is open: one the machine connected, or one a
    /// listener accepted (then `conn` is the driver's handle, from
    /// [`ACCEPTED_BASE`], and `listener` names the listener).
    Connected {
        /// The connection.
        conn: SocketId,
        /// The listener that accepted it, for accepted connections.
        listener: Option<SocketId>,
        /// The peer's address.
        peer: SocketAddr,
    },
    /// Bytes arrived on a TCP connection, in order.
    Received {
        /// The connection.
        conn: SocketId,
        /// The bytes.
        data: &'a [u8],
    },
    /// A TCP connection ended: the peer closed its side (`error: None`, no
    /// more bytes will come), or it failed (reset, user timeout).
    Closed {
        /// The connection.
        conn: SocketId,
        /// Why it failed, if it did.
        error: Option<io::ErrorKind>,
    },
}

/// What a host machine asks its driver to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use]
pub enum Output {
    /// Bind a datagram socket at `port` (0: an ephemeral one). The answer
    /// comes back as [`Input::Bound`] or [`Input::BindFailed`].
    Bind {
        /// The machine's name for it.
        socket: SocketId,
        /// The local port.
        port: u16,
    },
    /// Send the first `len` bytes of the buffer given to `poll_output` from
    /// `socket` to `destination`.
    Transmit {
        /// The sending socket.
        socket: SocketId,
        /// Where to.
        destination: SocketAddr,
        /// How many bytes of the buffer.
        len: usize,
    },
    /// Close `socket` (a datagram socket, a listener or a connection).
    Close {
        /// The socket.
        socket: SocketId,
    },
    /// Listen for TCP connections at `port` (0: an ephemeral one). The
    /// answer comes back as [`Input::Listening`] or [`Input::BindFailed`].
    Listen {
        /// The machine's name for the listener.
        listener: SocketId,
        /// The local port.
        port: u16,
    },
    /// Open a TCP connection to `destination`. The answer comes back as
    /// [`Input::Connected`] or [`Input::BindFailed`].
    Connect {
        /// The machine's name for the connection.
        conn: SocketId,
        /// Where to.
        destination: SocketAddr,
    },
    /// Write the first `len` bytes of the buffer given to `poll_output` to
    /// connection `conn` (all of them, in order).
    Write {
        /// The connection.
        conn: SocketId,
        /// How many bytes of the buffer.
        len: usize,
    },
    /// Close the sending side of connection `conn` (TCP FIN); bytes can
    /// still arrive.
    Shutdown {
        /// The connection.
        conn: SocketId,
    },
}

/// How a host's protocol run ended, as the harness reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// It did all it set out to do.
    Completed,
    /// It failed: a stable name (e.g. `handshake_timeout`) and a message.
    Failed {
        /// Stable, documented name.
        name: String,
        /// Human-readable detail.
        message: String,
    },
}

/// What a host machine reports about itself at any time.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HostReport {
    /// `None` while it runs (or for roles that never finish, e.g. servers).
    pub outcome: Option<Outcome>,
    /// Its state, for reports and stall messages.
    pub state: Option<String>,
    /// Its counters, as a JSON object (dotted paths address them).
    pub stats: serde_json::Value,
}

/// A host's protocol software over any number of datagram sockets,
/// sans-IO: it never reads a clock and never touches a socket.
pub trait HostMachine {
    /// An input at `now`.
    fn handle(&mut self, now: SimTime, input: Input<'_>);

    /// Time has reached `now`; fire every timer that has expired.
    fn handle_timeout(&mut self, now: SimTime);

    /// The next thing to do; a transmit writes its datagram into `buf`
    /// (at least [`crate::machine::MAX_DATAGRAM_SIZE`] bytes).
    fn poll_output(&mut self, now: SimTime, buf: &mut [u8]) -> Option<Output>;

    /// When the machine next needs [`HostMachine::handle_timeout`]. Handling
    /// a due timer must move or clear it: a timer that stays due, unchanged,
    /// through 10,000 firings in a row stops the driver with
    /// [`crate::driver::DriverError::Stuck`] instead of spinning.
    fn poll_timeout(&self) -> Option<SimTime>;

    /// The next event, rendered for logs and reports.
    fn poll_event(&mut self) -> Option<String>;

    /// `true` once it has nothing more to do; the driver then stops.
    fn is_finished(&self) -> bool;

    /// Its outcome, state and counters now.
    fn report(&self) -> HostReport;
}

/// Reports a single-socket machine's outcome, state and counters.
pub trait Reporting {
    /// Its outcome, state and counters now.
    fn report(&self) -> HostReport;
}

/// A single-socket [`Machine`] as a [`HostMachine`]: socket 0, bound at
/// `port` (0: ephemeral) before anything else happens.
#[derive(Debug)]
pub struct OneSocket<M> {
    machine: M,
    port: u16,
    state: OneState,
    bind_error: Option<io::ErrorKind>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum OneState {
    Unbound,
    Binding,
    Bound,
    Failed,
}

impl<M> OneSocket<M> {
    /// Wrap `machine`, to be bound at `port`.
    pub fn new(machine: M, port: u16) -> Self {
        OneSocket {
            machine,
            port,
            state: OneState::Unbound,
            bind_error: None,
        }
    }

    /// The machine.
    pub fn machine(&self) -> &M {
        &self.machine
    }

    /// Why binding its socket failed, if it did.
    pub fn bind_error(&self) -> Option<io::ErrorKind> {
        self.bind_error
    }
}

impl<M: Machine + Reporting> HostMachine for OneSocket<M> {
    fn handle(&mut self, now: SimTime, input: Input<'_>) {
        match input {
            Input::Datagram {
                socket: 0,
                from,
                data,
            } if self.state == OneState::Bound => {
                self.machine.handle_datagram(now, from, data);
            }
            Input::Bound { socket: 0, .. } => self.state = OneState::Bound,
            Input::BindFailed { socket: 0, error } => {
                self.state = OneState::Failed;
                self.bind_error = Some(error);
            }
            _ => {}
        }
    }

    fn handle_timeout(&mut self, now: SimTime) {
        if self.state == OneState::Bound {
            self.machine.handle_timeout(now);
        }
    }

    fn poll_output(&mut self, now: SimTime, buf: &mut [u8]) -> Option<Output> {
        match self.state {
            OneState::Unbound => {
                self.state = OneState::Binding;
                Some(Output::Bind {
                    socket: 0,
                    port: self.port,
                })
            }
            OneState::Bound => {
                let Transmit { destination, len } = self.machine.poll_transmit(now, buf)?;
                Some(Output::Transmit {
                    socket: 0,
                    destination,
                    len,
                })
            }
            OneState::Binding | OneState::Failed => None,
        }
    }

    fn poll_timeout(&self) -> Option<SimTime> {
        match self.state {
            OneState::Bound => self.machine.poll_timeout(),
            _ => None,
        }
    }

    fn poll_event(&mut self) -> Option<String> {
        self.machine.poll_event().map(|e| format!("{e:?}"))
    }

    fn is_finished(&self) -> bool {
        self.state == OneState::Failed || self.machine.is_finished()
    }

    fn report(&self) -> HostReport {
        let mut r = self.machine.report();
        if let (Some(e), None) = (self.bind_error, &r.outcome) {
            r.outcome = Some(Outcome::Failed {
                name: "bind_failed".into(),
                message: format!("binding port {} failed: {e}", self.port),
            });
        }
        r
    }
}
