//! The one API shape every protocol machine in streamlab has, so that one
//! driver can run any of them.
//!
//! # Drive rule
//!
//! After any input (`handle_datagram`, `handle_timeout`, a command), the
//! driver drains [`Machine::poll_transmit`] until `None`, then reads
//! [`Machine::poll_timeout`], then drains [`Machine::poll_event`]. Feeding a
//! machine a spurious timeout (before its deadline) is harmless.

use std::net::SocketAddr;

use crate::time::SimTime;

/// The largest datagram a machine is ever asked to write or read.
pub const MAX_DATAGRAM_SIZE: usize = 65_535;

/// A datagram the machine wants sent: it has written `len` bytes at the start
/// of the buffer it was given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use]
pub struct Transmit {
    /// Where to send it.
    pub destination: SocketAddr,
    /// How many bytes of the caller's buffer it occupies.
    pub len: usize,
}

/// A sans-IO protocol machine: time and datagrams in; transmits, a wake-up
/// time and events out. Implementations never read a clock and never touch a
/// socket.
pub trait Machine {
    /// What the machine reports to its owner (state changes, outcomes).
    type Event: std::fmt::Debug;

    /// A datagram arrived from `from` at `now`. Any bytes are acceptable:
    /// malformed input is handled inside, never by panicking.
    fn handle_datagram(&mut self, now: SimTime, from: SocketAddr, datagram: &[u8]);

    /// Time has reached `now`; fire every timer that has expired.
    fn handle_timeout(&mut self, now: SimTime);

    /// The next datagram to send, written into `buf` (at least
    /// [`MAX_DATAGRAM_SIZE`] bytes long), or `None` when nothing is queued.
    #[must_use]
    fn poll_transmit(&mut self, now: SimTime, buf: &mut [u8]) -> Option<Transmit>;

    /// When the machine next needs [`Machine::handle_timeout`]; `None` when no
    /// timer is armed. Handling a due timer must move or clear it (see
    /// [`crate::driver::DriverError::Stuck`]).
    #[must_use]
    fn poll_timeout(&self) -> Option<SimTime>;

    /// The next event for the owner, if any.
    #[must_use]
    fn poll_event(&mut self) -> Option<Self::Event>;

    /// `true` once the machine has nothing more to do (its stream ended,
    /// successfully or not). The driver then stops.
    fn is_finished(&self) -> bool;
}
