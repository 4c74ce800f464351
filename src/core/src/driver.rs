//! The one async driver: runs any [`Machine`] over any [`DatagramSocket`].
//!
//! The driver owns no protocol logic. It converts the runtime's clock into
//! [`SimTime`] (microseconds since the driver started), feeds the machine
//! datagrams and timeouts, and sends what the machine asks it to, following
//! the drive rule in [`crate::machine`]. It works on tokio's real clock in
//! the `mediastream` binary and on turmoil's simulated clock in the harness,
//! because both are `tokio::time`.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::time::Instant;

use std::task::{Context, Poll};

use crate::host::{HostMachine, Input, Output, SocketId};
use crate::machine::{MAX_DATAGRAM_SIZE, Machine};
use crate::time::{SimTime, duration_micros};

/// A datagram socket the driver can run a machine over.
///
/// Implemented here for [`tokio::net::UdpSocket`]; the harness implements it
/// for its impaired wrapper around turmoil's socket.
pub trait DatagramSocket {
    /// Send `buf` to `target`.
    fn send_to(&self, buf: &[u8], target: SocketAddr) -> impl Future<Output = io::Result<usize>>;
    /// Receive one datagram into `buf`. Must be cancel-safe: the driver
    /// drops a pending receive when a timer fires first.
    fn recv_from(&self, buf: &mut [u8]) -> impl Future<Output = io::Result<(usize, SocketAddr)>>;
    /// Poll for one datagram into `buf` (what a driver waiting on several
    /// sockets at once uses); registers `cx`'s waker when none is ready.
    fn poll_recv_from(
        &self,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<(usize, SocketAddr)>>;
    /// The socket's local address.
    fn local_addr(&self) -> io::Result<SocketAddr>;
}

impl DatagramSocket for tokio::net::UdpSocket {
    fn send_to(&self, buf: &[u8], target: SocketAddr) -> impl Future<Output = io::Result<usize>> {
        tokio::net::UdpSocket::send_to(self, buf, target)
    }

    fn recv_from(&self, buf: &mut [u8]) -> impl Future<Output = io::Result<(usize, SocketAddr)>> {
        tokio::net::UdpSocket::recv_from(self, buf)
    }

    fn poll_recv_from(
        &self,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<(usize, SocketAddr)>> {
        let mut rb = tokio::io::ReadBuf::new(buf);
        match tokio::net::UdpSocket::poll_recv_from(self, cx, &mut rb) {
            Poll::Ready(Ok(from)) => Poll::Ready(Ok((rb.filled().len(), from))),
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        tokio::net::UdpSocket::local_addr(self)
    }
}

/// Where a host driver gets its sockets: tokio's in real programs, the
/// simulated network's in the harness.
pub trait Net {
    /// The sockets it makes.
    type Socket: DatagramSocket;
    /// Bind a datagram socket at `port` (0: ephemeral).
    fn bind(&self, port: u16) -> impl Future<Output = io::Result<Self::Socket>>;
}

/// Real UDP sockets on one local IP address.
#[derive(Clone, Copy, Debug)]
pub struct TokioNet {
    /// The local address to bind on.
    pub ip: std::net::IpAddr,
}

impl Net for TokioNet {
    type Socket = tokio::net::UdpSocket;
    fn bind(&self, port: u16) -> impl Future<Output = io::Result<Self::Socket>> {
        tokio::net::UdpSocket::bind(SocketAddr::new(self.ip, port))
    }
}

/// Runs one [`HostMachine`] over the sockets it asks for, following the
/// drive rule in [`crate::host`].
#[derive(Debug)]
pub struct HostDriver<H, N: Net> {
    machine: H,
    net: N,
    sockets: std::collections::BTreeMap<SocketId, N::Socket>,
    start: Instant,
    tx_buf: Vec<u8>,
    rx_buf: Vec<u8>,
    /// Where the round-robin receive poll starts (fairness between sockets).
    next_poll: usize,
}

impl<H: HostMachine, N: Net> HostDriver<H, N> {
    /// A driver whose time zero is now (the runtime's clock).
    pub fn new(machine: H, net: N) -> Self {
        HostDriver {
            machine,
            net,
            sockets: std::collections::BTreeMap::new(),
            start: Instant::now(),
            tx_buf: vec![0; MAX_DATAGRAM_SIZE],
            rx_buf: vec![0; MAX_DATAGRAM_SIZE],
            next_poll: 0,
        }
    }

    /// The machine.
    pub fn machine(&self) -> &H {
        &self.machine
    }

    /// Time since the driver started, as the machine sees it.
    pub fn now(&self) -> SimTime {
        SimTime::from_micros(duration_micros(self.start.elapsed()))
    }

    /// Run until the machine is finished. Events go to `observe`.
    ///
    /// # Errors
    /// A socket error while sending or receiving.
    pub async fn run(
        &mut self,
        mut observe: impl FnMut(SimTime, String),
    ) -> Result<(), DriverError> {
        let mut fired_without_waiting = false;
        loop {
            let now = self.now();
            self.flush(now, &mut observe).await?;
            if self.machine.is_finished() {
                return Ok(());
            }
            if !fired_without_waiting && self.machine.poll_timeout().is_some_and(|t| t <= now) {
                fired_without_waiting = true;
                self.machine.handle_timeout(now);
                continue;
            }
            fired_without_waiting = false;
            let deadline = self
                .machine
                .poll_timeout()
                .map(|t| self.start + t.since_start());
            let received = {
                let sockets = &self.sockets;
                let buf = &mut self.rx_buf;
                let start = self.next_poll;
                let recv = std::future::poll_fn(|cx| {
                    let n = sockets.len();
                    for k in 0..n {
                        let i = (start + k) % n;
                        let Some((id, s)) = sockets.iter().nth(i) else {
                            continue;
                        };
                        if let Poll::Ready(r) = s.poll_recv_from(cx, buf) {
                            return Poll::Ready((i, *id, r));
                        }
                    }
                    Poll::Pending
                });
                tokio::select! {
                    biased;
                    r = recv => Some(r),
                    () = sleep_until_opt(deadline) => None,
                }
            };
            let now = self.now();
            match received {
                Some((i, socket, Ok((len, from)))) => {
                    self.next_poll = i + 1;
                    let len = len.min(self.rx_buf.len());
                    self.machine.handle(
                        now,
                        Input::Datagram {
                            socket,
                            from,
                            data: &self.rx_buf[..len],
                        },
                    );
                }
                Some((_, _, Err(e))) => return Err(DriverError::Recv(e)),
                None => {
                    if deadline.is_some_and(|d| Instant::now() >= d) {
                        self.machine.handle_timeout(now);
                    }
                }
            }
        }
    }

    /// Carry out outputs (binds answered at once), then drain events.
    async fn flush(
        &mut self,
        now: SimTime,
        observe: &mut impl FnMut(SimTime, String),
    ) -> Result<(), DriverError> {
        while let Some(out) = self.machine.poll_output(now, &mut self.tx_buf) {
            match out {
                Output::Bind { socket, port } => match self.net.bind(port).await {
                    Ok(s) => {
                        let local = s.local_addr();
                        self.sockets.insert(socket, s);
                        match local {
                            Ok(local) => self.machine.handle(now, Input::Bound { socket, local }),
                            Err(e) => self.machine.handle(
                                now,
                                Input::BindFailed {
                                    socket,
                                    error: e.kind(),
                                },
                            ),
                        }
                    }
                    Err(e) => self.machine.handle(
                        now,
                        Input::BindFailed {
                            socket,
                            error: e.kind(),
                        },
                    ),
                },
                Output::Transmit {
                    socket,
                    destination,
                    len,
                } => {
                    let len = len.min(self.tx_buf.len());
                    let Some(s) = self.sockets.get(&socket) else {
                        continue;
                    };
                    if let Err(source) = s.send_to(&self.tx_buf[..len], destination).await {
                        return Err(DriverError::Send {
                            destination,
                            len,
                            source,
                        });
                    }
                }
                Output::Close { socket } => {
                    self.sockets.remove(&socket);
                }
            }
        }
        while let Some(event) = self.machine.poll_event() {
            observe(now, event);
        }
        Ok(())
    }
}

/// What the driver reports to its owner while it runs.
#[derive(Debug)]
pub enum Observation<'a, M: Machine> {
    /// The machine emitted an event at `now`.
    Event(SimTime, M::Event),
    /// A periodic status tick (see [`Driver::with_status_interval`]).
    Status(SimTime, &'a M),
}

/// Why a driver stopped before its machine finished.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DriverError {
    /// Sending a datagram failed (e.g. the OS reported the destination
    /// unreachable or refused).
    #[error("sending {len} bytes to {destination} failed: {source}")]
    Send {
        /// Where the datagram was going.
        destination: SocketAddr,
        /// Its size.
        len: usize,
        /// The OS error.
        source: io::Error,
    },
    /// Receiving failed (on Linux a connected UDP socket reports an earlier
    /// ICMP port-unreachable here as `ConnectionRefused`).
    #[error("receiving failed: {0}")]
    Recv(#[source] io::Error),
}

/// Runs one machine over one socket.
#[derive(Debug)]
pub struct Driver<M, S> {
    machine: M,
    socket: S,
    start: Instant,
    status_every: Option<Duration>,
    tx_buf: Vec<u8>,
    rx_buf: Vec<u8>,
}

impl<M: Machine, S: DatagramSocket> Driver<M, S> {
    /// A driver whose time zero is now (the runtime's clock).
    pub fn new(machine: M, socket: S) -> Self {
        Driver {
            machine,
            socket,
            start: Instant::now(),
            status_every: None,
            tx_buf: vec![0; MAX_DATAGRAM_SIZE],
            rx_buf: vec![0; MAX_DATAGRAM_SIZE],
        }
    }

    /// Report [`Observation::Status`] every `every` while running.
    pub fn with_status_interval(mut self, every: Duration) -> Self {
        self.status_every = Some(every);
        self
    }

    /// The machine.
    pub fn machine(&self) -> &M {
        &self.machine
    }

    /// The machine, mutably (to issue commands between runs).
    pub fn machine_mut(&mut self) -> &mut M {
        &mut self.machine
    }

    /// The socket.
    pub fn socket(&self) -> &S {
        &self.socket
    }

    /// Take the machine back.
    pub fn into_machine(self) -> M {
        self.machine
    }

    /// Time since the driver started, as the machine sees it.
    pub fn now(&self) -> SimTime {
        SimTime::from_micros(duration_micros(self.start.elapsed()))
    }

    fn instant_of(&self, t: SimTime) -> Instant {
        self.start + t.since_start()
    }

    /// Run until the machine is finished.
    ///
    /// # Errors
    /// Socket errors, as [`DriverError`]. The machine is left as it was at the
    /// failure, so its state and stats can still be read.
    pub async fn run(
        &mut self,
        mut observe: impl FnMut(Observation<'_, M>),
    ) -> Result<(), DriverError> {
        let mut next_status = self.status_every.map(|every| self.start + every);
        let mut fired_without_waiting = false;
        loop {
            let now = self.now();
            self.flush(now, &mut observe).await?;
            if self.machine.is_finished() {
                return Ok(());
            }
            // Due timers go first: a socket that always has a datagram ready
            // (a flood) must not starve pacing and retransmission. Once per
            // turn, so a timer that stays due still lets the runtime breathe.
            if !fired_without_waiting && self.machine.poll_timeout().is_some_and(|t| t <= now) {
                fired_without_waiting = true;
                self.machine.handle_timeout(now);
                continue;
            }
            fired_without_waiting = false;
            let deadline = self.machine.poll_timeout().map(|t| self.instant_of(t));
            let wake = match (deadline, next_status) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let received = tokio::select! {
                biased;
                r = self.socket.recv_from(&mut self.rx_buf) => Some(r),
                () = sleep_until_opt(wake) => None,
            };
            let now = self.now();
            match received {
                Some(Ok((len, from))) => {
                    let len = len.min(self.rx_buf.len());
                    self.machine.handle_datagram(now, from, &self.rx_buf[..len]);
                }
                Some(Err(e)) => return Err(DriverError::Recv(e)),
                None => {
                    if deadline.is_some_and(|d| Instant::now() >= d) {
                        self.machine.handle_timeout(now);
                    }
                    if let (Some(at), Some(every)) = (next_status, self.status_every)
                        && Instant::now() >= at
                    {
                        observe(Observation::Status(now, &self.machine));
                        next_status = Some(at + every);
                    }
                }
            }
        }
    }

    /// Drain transmits, then events (the drive rule).
    async fn flush(
        &mut self,
        now: SimTime,
        observe: &mut impl FnMut(Observation<'_, M>),
    ) -> Result<(), DriverError> {
        while let Some(tx) = self.machine.poll_transmit(now, &mut self.tx_buf) {
            let len = tx.len.min(self.tx_buf.len());
            if let Err(source) = self
                .socket
                .send_to(&self.tx_buf[..len], tx.destination)
                .await
            {
                return Err(DriverError::Send {
                    destination: tx.destination,
                    len,
                    source,
                });
            }
        }
        while let Some(event) = self.machine.poll_event() {
            observe(Observation::Event(now, event));
        }
        Ok(())
    }
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
