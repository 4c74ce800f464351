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

use std::collections::BTreeMap;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::host::{ACCEPTED_BASE, HostMachine, Input, Output, SocketId};
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
    /// Its TCP connections.
    type Stream: AsyncRead + AsyncWrite + Unpin;
    /// Its TCP listeners.
    type Listener;
    /// Bind a datagram socket at `port` (0: ephemeral).
    fn bind(&self, port: u16) -> impl Future<Output = io::Result<Self::Socket>>;
    /// Listen for TCP connections at `port` (0: ephemeral).
    fn listen(&self, port: u16) -> impl Future<Output = io::Result<Self::Listener>>;
    /// A listener's local address.
    ///
    /// # Errors
    /// As the platform reports.
    fn listener_addr(listener: &Self::Listener) -> io::Result<SocketAddr>;
    /// The next connection `listener` accepts, and its peer.
    fn accept(
        &self,
        listener: Rc<Self::Listener>,
    ) -> BoxFuture<io::Result<(Self::Stream, SocketAddr)>>;
    /// Open a TCP connection to `to`.
    fn connect(&self, to: SocketAddr) -> BoxFuture<io::Result<Self::Stream>>;
    /// A connection's peer.
    fn peer_of(stream: &Self::Stream) -> Option<SocketAddr>;
}

/// A future a driver keeps across turns.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T>>>;

/// Real UDP sockets on one local IP address.
#[derive(Clone, Copy, Debug)]
pub struct TokioNet {
    /// The local address to bind on.
    pub ip: std::net::IpAddr,
}

impl Net for TokioNet {
    type Socket = tokio::net::UdpSocket;
    type Stream = tokio::net::TcpStream;
    type Listener = tokio::net::TcpListener;
    fn bind(&self, port: u16) -> impl Future<Output = io::Result<Self::Socket>> {
        tokio::net::UdpSocket::bind(SocketAddr::new(self.ip, port))
    }
    fn listen(&self, port: u16) -> impl Future<Output = io::Result<Self::Listener>> {
        tokio::net::TcpListener::bind(SocketAddr::new(self.ip, port))
    }
    fn listener_addr(listener: &Self::Listener) -> io::Result<SocketAddr> {
        listener.local_addr()
    }
    fn accept(
        &self,
        listener: Rc<Self::Listener>,
    ) -> BoxFuture<io::Result<(Self::Stream, SocketAddr)>> {
        Box::pin(async move { listener.accept().await })
    }
    fn connect(&self, to: SocketAddr) -> BoxFuture<io::Result<Self::Stream>> {
        Box::pin(tokio::net::TcpStream::connect(to))
    }
    fn peer_of(stream: &Self::Stream) -> Option<SocketAddr> {
        stream.peer_addr().ok()
    }
}

/// One open TCP connection of a host driver.
struct Conn<S> {
    stream: S,
    /// The peer closed its side (or the connection failed): stop reading.
    read_closed: bool,
    /// Bytes the machine wrote that the stream has not taken yet (writes
    /// never block the driver: it keeps reading while they drain).
    out: std::collections::VecDeque<u8>,
    /// The machine asked to half-close once `out` is drained.
    shutdown: bool,
}

impl<S> Conn<S> {
    fn new(stream: S) -> Self {
        Conn {
            stream,
            read_closed: false,
            out: std::collections::VecDeque::new(),
            shutdown: false,
        }
    }
}

/// What woke a host driver.
enum Wake {
    Datagram(usize, SocketId, io::Result<(usize, SocketAddr)>),
    Accepted(SocketId),
    Connected,
    Read(SocketId, io::Result<usize>),
    WriteFailed(SocketId, io::Error),
}

/// What accepting a connection gives: the stream and its peer.
type Accept<N> = io::Result<(<N as Net>::Stream, SocketAddr)>;
/// A listener's pending accept.
type Accepting<N> = BoxFuture<Accept<N>>;

/// Runs one [`HostMachine`] over the sockets it asks for, following the
/// drive rule in [`crate::host`].
pub struct HostDriver<H, N: Net> {
    machine: H,
    net: N,
    sockets: std::collections::BTreeMap<SocketId, N::Socket>,
    listeners: BTreeMap<SocketId, (Rc<N::Listener>, Accepting<N>)>,
    connecting: BTreeMap<SocketId, BoxFuture<io::Result<N::Stream>>>,
    conns: BTreeMap<SocketId, Conn<N::Stream>>,
    /// Results that arrived while polling, handled next.
    accepted: Vec<(SocketId, Accept<N>)>,
    connected: Vec<(SocketId, io::Result<N::Stream>)>,
    next_accepted: SocketId,
    start: Instant,
    tx_buf: Vec<u8>,
    rx_buf: Vec<u8>,
    /// Where the round-robin receive poll starts (fairness between sockets).
    next_poll: usize,
}

impl<H, N: Net> std::fmt::Debug for HostDriver<H, N> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostDriver")
            .field("sockets", &self.sockets.keys().collect::<Vec<_>>())
            .field("listeners", &self.listeners.keys().collect::<Vec<_>>())
            .field("connections", &self.conns.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl<H: HostMachine, N: Net> HostDriver<H, N> {
    /// A driver whose time zero is now (the runtime's clock).
    pub fn new(machine: H, net: N) -> Self {
        HostDriver {
            machine,
            net,
            sockets: std::collections::BTreeMap::new(),
            listeners: BTreeMap::new(),
            connecting: BTreeMap::new(),
            conns: BTreeMap::new(),
            accepted: Vec::new(),
            connected: Vec::new(),
            next_accepted: ACCEPTED_BASE,
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
        let mut guard = SpinGuard::default();
        loop {
            let now = self.now();
            self.flush(now, &mut observe).await?;
            if self.machine.is_finished() {
                return Ok(());
            }
            if !fired_without_waiting
                && let Some(due) = self.machine.poll_timeout().filter(|t| *t <= now)
            {
                fired_without_waiting = true;
                self.machine.handle_timeout(now);
                guard.fired(due, self.machine.poll_timeout(), now)?;
                continue;
            }
            fired_without_waiting = false;
            let deadline = self
                .machine
                .poll_timeout()
                .map(|t| self.start + t.since_start());
            let woke = {
                let sockets = &self.sockets;
                let listeners = &mut self.listeners;
                let connecting = &mut self.connecting;
                let conns = &mut self.conns;
                let accepted = &mut self.accepted;
                let connected = &mut self.connected;
                let buf = &mut self.rx_buf;
                let start = self.next_poll;
                let ready = std::future::poll_fn(|cx| {
                    let n = sockets.len();
                    for k in 0..n {
                        let i = (start + k) % n;
                        let Some((id, s)) = sockets.iter().nth(i) else {
                            continue;
                        };
                        if let Poll::Ready(r) = s.poll_recv_from(cx, buf) {
                            return Poll::Ready(Wake::Datagram(i, *id, r));
                        }
                    }
                    for (id, (_, fut)) in listeners.iter_mut() {
                        if let Poll::Ready(r) = fut.as_mut().poll(cx) {
                            accepted.push((*id, r));
                            return Poll::Ready(Wake::Accepted(*id));
                        }
                    }
                    let mut done = None;
                    for (id, fut) in connecting.iter_mut() {
                        if let Poll::Ready(r) = fut.as_mut().poll(cx) {
                            done = Some((*id, r));
                            break;
                        }
                    }
                    if let Some((id, r)) = done {
                        connecting.remove(&id);
                        connected.push((id, r));
                        let _ = id;
                        return Poll::Ready(Wake::Connected);
                    }
                    for (id, c) in conns.iter_mut() {
                        // Drain what the machine wrote, then half-close if asked.
                        while !c.out.is_empty() {
                            let (front, _) = c.out.as_slices();
                            match Pin::new(&mut c.stream).poll_write(cx, front) {
                                Poll::Ready(Ok(0)) => {
                                    return Poll::Ready(Wake::WriteFailed(
                                        *id,
                                        io::Error::from(io::ErrorKind::WriteZero),
                                    ));
                                }
                                Poll::Ready(Ok(n)) => {
                                    c.out.drain(..n);
                                }
                                Poll::Ready(Err(e)) => {
                                    return Poll::Ready(Wake::WriteFailed(*id, e));
                                }
                                Poll::Pending => break,
                            }
                        }
                        if c.out.is_empty() && c.shutdown {
                            match Pin::new(&mut c.stream).poll_shutdown(cx) {
                                Poll::Ready(Ok(())) => c.shutdown = false,
                                Poll::Ready(Err(e)) => {
                                    return Poll::Ready(Wake::WriteFailed(*id, e));
                                }
                                Poll::Pending => {}
                            }
                        }
                        if c.read_closed {
                            continue;
                        }
                        let mut rb = ReadBuf::new(buf);
                        match Pin::new(&mut c.stream).poll_read(cx, &mut rb) {
                            Poll::Ready(Ok(())) => {
                                return Poll::Ready(Wake::Read(*id, Ok(rb.filled().len())));
                            }
                            Poll::Ready(Err(e)) => return Poll::Ready(Wake::Read(*id, Err(e))),
                            Poll::Pending => {}
                        }
                    }
                    Poll::Pending
                });
                tokio::select! {
                    biased;
                    w = ready => Some(w),
                    () = sleep_until_opt(deadline) => None,
                }
            };
            let now = self.now();
            match woke {
                Some(Wake::Datagram(i, socket, Ok((len, from)))) => {
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
                Some(Wake::Datagram(_, _, Err(e))) => return Err(DriverError::Recv(e)),
                Some(Wake::Accepted(listener)) => self.on_accepted(now, listener),
                Some(Wake::Connected) => self.on_connected(now),
                Some(Wake::Read(conn, Ok(0))) => {
                    if let Some(c) = self.conns.get_mut(&conn) {
                        c.read_closed = true;
                    }
                    self.machine
                        .handle(now, Input::Closed { conn, error: None });
                }
                Some(Wake::Read(conn, Ok(n))) => {
                    let n = n.min(self.rx_buf.len());
                    self.machine.handle(
                        now,
                        Input::Received {
                            conn,
                            data: &self.rx_buf[..n],
                        },
                    );
                }
                Some(Wake::WriteFailed(conn, e)) => {
                    self.conns.remove(&conn);
                    self.machine.handle(
                        now,
                        Input::Closed {
                            conn,
                            error: Some(e.kind()),
                        },
                    );
                }
                Some(Wake::Read(conn, Err(e))) => {
                    self.conns.remove(&conn);
                    self.machine.handle(
                        now,
                        Input::Closed {
                            conn,
                            error: Some(e.kind()),
                        },
                    );
                }
                None => {
                    if deadline.is_some_and(|d| Instant::now() >= d) {
                        let due = self.machine.poll_timeout();
                        self.machine.handle_timeout(now);
                        if let Some(due) = due {
                            guard.fired(due, self.machine.poll_timeout(), now)?;
                        }
                    }
                }
            }
        }
    }

    fn on_accepted(&mut self, now: SimTime, listener: SocketId) {
        for (l, r) in std::mem::take(&mut self.accepted) {
            // The listener takes the next connection.
            if let Some((rc, fut)) = self.listeners.get_mut(&l) {
                *fut = self.net.accept(rc.clone());
            }
            match r {
                Ok((stream, peer)) => {
                    let conn = self.next_accepted;
                    self.next_accepted = self.next_accepted.wrapping_add(1).max(ACCEPTED_BASE);
                    self.conns.insert(conn, Conn::new(stream));
                    self.machine.handle(
                        now,
                        Input::Connected {
                            conn,
                            listener: Some(l),
                            peer,
                        },
                    );
                }
                Err(e) => self.machine.handle(
                    now,
                    Input::BindFailed {
                        socket: listener,
                        error: e.kind(),
                    },
                ),
            }
        }
    }

    fn on_connected(&mut self, now: SimTime) {
        for (conn, r) in std::mem::take(&mut self.connected) {
            match r {
                Ok(stream) => {
                    let peer = N::peer_of(&stream);
                    self.conns.insert(conn, Conn::new(stream));
                    match peer {
                        Some(peer) => self.machine.handle(
                            now,
                            Input::Connected {
                                conn,
                                listener: None,
                                peer,
                            },
                        ),
                        None => self.machine.handle(
                            now,
                            Input::BindFailed {
                                socket: conn,
                                error: io::ErrorKind::NotConnected,
                            },
                        ),
                    }
                }
                Err(e) => self.machine.handle(
                    now,
                    Input::BindFailed {
                        socket: conn,
                        error: e.kind(),
                    },
                ),
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
                    self.listeners.remove(&socket);
                    self.connecting.remove(&socket);
                    self.conns.remove(&socket);
                }
                Output::Listen { listener, port } => match self.net.listen(port).await {
                    Ok(l) => {
                        let local = N::listener_addr(&l);
                        let l = Rc::new(l);
                        let fut = self.net.accept(l.clone());
                        self.listeners.insert(listener, (l, fut));
                        match local {
                            Ok(local) => self
                                .machine
                                .handle(now, Input::Listening { listener, local }),
                            Err(e) => self.machine.handle(
                                now,
                                Input::BindFailed {
                                    socket: listener,
                                    error: e.kind(),
                                },
                            ),
                        }
                    }
                    Err(e) => self.machine.handle(
                        now,
                        Input::BindFailed {
                            socket: listener,
                            error: e.kind(),
                        },
                    ),
                },
                Output::Connect { conn, destination } => {
                    let fut = self.net.connect(destination);
                    self.connecting.insert(conn, fut);
                }
                Output::Write { conn, len } => {
                    let len = len.min(self.tx_buf.len());
                    if let Some(c) = self.conns.get_mut(&conn) {
                        c.out.extend(&self.tx_buf[..len]);
                    }
                }
                Output::Shutdown { conn } => {
                    if let Some(c) = self.conns.get_mut(&conn) {
                        c.shutdown = true;
                    }
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
    /// The machine kept reporting the same timer as due and handling it
    /// changed nothing: driving it further would spin without end.
    #[error(
        "the machine is stuck: its timer at {timer} stayed due after {times} consecutive handle_timeout calls at {now}"
    )]
    Stuck {
        /// The timer the machine keeps reporting.
        timer: SimTime,
        /// When the driver gave up.
        now: SimTime,
        /// How many times in a row it was handled without moving.
        times: u32,
    },
}

/// Catches a machine that reports a timer as due, is told it fired, and
/// reports the very same due timer again, forever: the drivers would spin
/// inside one instant (in a simulation, without time ever advancing).
#[derive(Debug, Default)]
struct SpinGuard {
    /// The due timer of the last firing that left it in place, and how many
    /// firings in a row did so.
    stuck: Option<(SimTime, u32)>,
}

impl SpinGuard {
    /// Consecutive firings that leave the same due timer in place before
    /// the driver gives up. A machine that acts on its timer moves it (or
    /// clears it); one that needs a few rounds to drain work does so long
    /// before this.
    const LIMIT: u32 = 10_000;

    /// `before` was due at `now` and was handled; `after` is what the
    /// machine reports now.
    fn fired(
        &mut self,
        before: SimTime,
        after: Option<SimTime>,
        now: SimTime,
    ) -> Result<(), DriverError> {
        if after != Some(before) || before > now {
            self.stuck = None;
            return Ok(());
        }
        let times = match self.stuck {
            Some((t, n)) if t == before => n + 1,
            _ => 1,
        };
        self.stuck = Some((before, times));
        if times >= Self::LIMIT {
            return Err(DriverError::Stuck {
                timer: before,
                now,
                times,
            });
        }
        Ok(())
    }
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
        let mut guard = SpinGuard::default();
        loop {
            let now = self.now();
            self.flush(now, &mut observe).await?;
            if self.machine.is_finished() {
                return Ok(());
            }
            // Due timers go first: a socket that always has a datagram ready
            // (a flood) must not starve pacing and retransmission. Once per
            // turn, so a timer that stays due still lets the runtime breathe.
            if !fired_without_waiting
                && let Some(due) = self.machine.poll_timeout().filter(|t| *t <= now)
            {
                fired_without_waiting = true;
                self.machine.handle_timeout(now);
                guard.fired(due, self.machine.poll_timeout(), now)?;
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
                        let due = self.machine.poll_timeout();
                        self.machine.handle_timeout(now);
                        if let Some(due) = due {
                            guard.fired(due, self.machine.poll_timeout(), now)?;
                        }
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
