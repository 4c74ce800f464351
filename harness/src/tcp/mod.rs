//! Real TCP across the simulated network, with smoltcp as every host's TCP
//! stack.
//!
//! # How a segment crosses the network
//!
//! Each host gets, for each life (a restart starts a new one), a smoltcp
//! [`Interface`] on an IP-medium device with the host's IPv4 address. The
//! stack is created on first use: by [`SimTcpListener::bind`],
//! [`SimTcpStream::connect`], or the first TCP segment that arrives at the
//! host (a host without a listener answers a SYN with RST, as a real one
//! does).
//!
//! - **Out.** Every IPv4 packet the stack emits is offered to the network
//!   like a datagram: the link direction's impairment engine decides every
//!   copy's fate, the trace records a `Sent` event whose `bytes` are the
//!   TCP segment (header included) and whose `transport` carries its header
//!   fields, and the copies go on the destination host's wire. Scenario
//!   rewrite rules act on protocol datagrams and never match TCP.
//! - **In.** When a copy is due, the receiving host's interface task
//!   ([`crate::network::nic`]) decides its fate at arrival exactly as for a
//!   datagram (partition, hold, host down); there is no "socket bound"
//!   check, the stack answers for itself (RST to a closed port). A copy
//!   whose corruption the TCP checksum catches is dropped and counted
//!   `corrupt_checksum`; otherwise it is recorded `Arrived` and goes to the
//!   stack's receive queue (at most [`RX_QUEUE_LIMIT`] packets, beyond that
//!   `receive_buffer_full`), and the stack is polled.
//! - **Corruption not caught** (`corrupt.mode = deliver`): the network
//!   recomputes the TCP checksum over the corrupted segment (as a
//!   checksum-offload bug would), so the damaged bytes reach the stack; a
//!   flip inside the checksum field itself is thereby undone.
//! - **Timers.** The interface task polls the stack whenever a copy arrives,
//!   the application reads, writes or closes, and at the time smoltcp asks
//!   for ([`Interface::poll_at`]); simulated time maps to smoltcp's
//!   [`Instant`] in microseconds since the start of the run (timers fire at
//!   the simulation's 1 ms tick).
//!
//! # The application side
//!
//! [`SimTcpListener`] and [`SimTcpStream`] are the sockets host code uses;
//! the stream implements tokio's `AsyncRead` and `AsyncWrite`. Buffers are
//! bounded ([`TcpConfig`], 64 KiB each way by default), a listener's accept
//! queue holds at most `backlog` connections (handshaking or not yet
//! accepted; while it is full, new SYNs are answered with RST). Errors:
//! a reset connection reads and writes `ConnectionReset`, a refused connect
//! `ConnectionRefused`, and a connection whose peer acknowledges nothing
//! for the user timeout (default [`DEFAULT_USER_TIMEOUT`]) `TimedOut`.
//! Ephemeral ports are handed out from 49152 upwards, per host, separately
//! from UDP's.

mod wire;

#[cfg(test)]
pub(crate) mod sim;
#[cfg(test)]
mod tests;

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::future::poll_fn;
use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::phy::{self, DeviceCapabilities, Medium};
use smoltcp::socket::tcp;
use smoltcp::time::Instant;
use smoltcp::wire::{HardwareAddress, IpAddress, IpCidr, IpEndpoint};
use streamlab_core::time::SimTime;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;

use crate::network::Network;
use crate::trace::{TcpFlags, TcpHeader};

pub(crate) use wire::{fix_tcp_checksum, ipv4_packet, parse_ipv4_tcp};

/// The IP MTU of every host's interface (the stack's MSS is 1460).
pub const IP_MTU: usize = 1500;

/// Packets a host's stack queues on arrival before the next poll; past it,
/// arrivals are lost as `receive_buffer_full`.
pub const RX_QUEUE_LIMIT: usize = 4096;

/// Default user timeout: a connection whose peer acknowledges nothing for
/// this long while data is outstanding (or answers no SYN) is aborted.
pub const DEFAULT_USER_TIMEOUT: Duration = Duration::from_secs(10);

/// The first ephemeral TCP port a host hands out.
const EPHEMERAL_FIRST: u16 = 49_152;

/// How often one service of the stack polls it at most while smoltcp asks
/// to be polled again at once.
const POLLS_PER_SERVICE: usize = 8;

/// Options of a connection (or of the connections a listener accepts).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct TcpConfig {
    /// Abort the connection when the peer acknowledges nothing for this
    /// long (smoltcp `set_timeout`); `None`: never.
    pub user_timeout: Option<Duration>,
    /// Receive buffer, bytes (the largest window advertised).
    pub rx_buffer: usize,
    /// Send buffer, bytes.
    pub tx_buffer: usize,
    /// Connections a listener holds before they are accepted (handshaking
    /// ones included).
    pub backlog: usize,
    /// Nagle's algorithm (smoltcp's default: on).
    pub nagle: bool,
    /// Keep-alive interval; `None`: off.
    pub keep_alive: Option<Duration>,
    /// Congestion control (default Reno).
    pub congestion: Congestion,
}

/// smoltcp's congestion controllers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Congestion {
    /// None: the sender is limited by the peer's window only.
    None,
    /// Reno (RFC 5681).
    #[default]
    Reno,
    /// CUBIC (RFC 9438).
    Cubic,
}

impl Default for TcpConfig {
    fn default() -> Self {
        TcpConfig {
            user_timeout: Some(DEFAULT_USER_TIMEOUT),
            rx_buffer: 64 * 1024,
            tx_buffer: 64 * 1024,
            backlog: 16,
            nagle: true,
            keep_alive: None,
            congestion: Congestion::default(),
        }
    }
}

impl TcpConfig {
    /// This configuration with another user timeout.
    pub fn with_user_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.user_timeout = timeout;
        self
    }

    /// This configuration with other buffer sizes.
    pub fn with_buffers(mut self, rx: usize, tx: usize) -> Self {
        self.rx_buffer = rx.max(1);
        self.tx_buffer = tx.max(1);
        self
    }

    /// This configuration with another accept backlog.
    pub fn with_backlog(mut self, backlog: usize) -> Self {
        self.backlog = backlog.max(1);
        self
    }

    fn socket(&self) -> tcp::Socket<'static> {
        let mut s = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0; self.rx_buffer.max(1)]),
            tcp::SocketBuffer::new(vec![0; self.tx_buffer.max(1)]),
        );
        s.set_timeout(self.user_timeout.map(smol_duration));
        s.set_nagle_enabled(self.nagle);
        s.set_keep_alive(self.keep_alive.map(smol_duration));
        s.set_congestion_control(match self.congestion {
            Congestion::None => tcp::CongestionControl::None,
            Congestion::Reno => tcp::CongestionControl::Reno,
            Congestion::Cubic => tcp::CongestionControl::Cubic,
        });
        s
    }
}

fn smol_duration(d: Duration) -> smoltcp::time::Duration {
    smoltcp::time::Duration::from_micros(u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// Simulated time as smoltcp's clock: microseconds since the run started.
pub(crate) fn smol_instant(t: SimTime) -> Instant {
    Instant::from_micros(i64::try_from(t.as_micros()).unwrap_or(i64::MAX))
}

/// smoltcp's clock as simulated time.
pub(crate) fn sim_time(t: Instant) -> SimTime {
    SimTime::from_micros(u64::try_from(t.total_micros()).unwrap_or(0))
}

/// Why a connection ended abnormally.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Failure {
    /// An RST closed an established (or closing) connection.
    Reset,
    /// An RST answered our SYN.
    Refused,
    /// The user timeout expired.
    TimedOut {
        timeout: Option<Duration>,
        connecting: bool,
    },
}

/// The stack's view of one connection socket.
#[derive(Debug)]
struct Conn {
    state: tcp::State,
    local: SocketAddrV4,
    remote: SocketAddrV4,
    failure: Option<Failure>,
    timeout: Option<Duration>,
    /// The application dropped its handle: reaped once closed.
    orphan: bool,
}

impl Conn {
    fn error(&self, failure: Failure) -> io::Error {
        let (local, remote) = (self.local, self.remote);
        match failure {
            Failure::Reset => io::Error::new(
                io::ErrorKind::ConnectionReset,
                format!("TCP connection {local} -> {remote} reset by the peer (RST received)"),
            ),
            Failure::Refused => io::Error::new(
                io::ErrorKind::ConnectionRefused,
                format!("TCP connection {local} -> {remote} refused (RST in reply to SYN)"),
            ),
            Failure::TimedOut {
                timeout,
                connecting,
            } => {
                let t = timeout.map_or_else(|| "the user timeout".to_owned(), |t| format!("{t:?}"));
                let what = if connecting {
                    format!("no answer to SYN for {t}")
                } else {
                    format!("the peer acknowledged nothing for {t}")
                };
                io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "TCP connection {local} -> {remote} timed out: {what} (TCP user timeout)"
                    ),
                )
            }
        }
    }
}

/// A listening port.
#[derive(Debug)]
struct Listener {
    config: TcpConfig,
    /// The socket currently in LISTEN (none while the backlog is full).
    listening: Option<SocketHandle>,
    /// Connections taken by the listening socket, not yet accepted, oldest
    /// first.
    pending: VecDeque<SocketHandle>,
    waker: Option<Waker>,
}

/// The IP-medium device between a stack and the simulated network.
#[derive(Debug, Default)]
struct SimDevice {
    rx: VecDeque<Vec<u8>>,
    tx: Vec<Vec<u8>>,
}

struct RxToken(Vec<u8>);
struct TxToken<'a>(&'a mut Vec<Vec<u8>>);

impl phy::RxToken for RxToken {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

impl phy::TxToken for TxToken<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut buf = vec![0; len];
        let r = f(&mut buf);
        self.0.push(buf);
        r
    }
}

impl phy::Device for SimDevice {
    type RxToken<'a> = RxToken;
    type TxToken<'a> = TxToken<'a>;

    fn receive(&mut self, _: Instant) -> Option<(RxToken, TxToken<'_>)> {
        let p = self.rx.pop_front()?;
        Some((RxToken(p), TxToken(&mut self.tx)))
    }

    fn transmit(&mut self, _: Instant) -> Option<TxToken<'_>> {
        Some(TxToken(&mut self.tx))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ip;
        caps.max_transmission_unit = IP_MTU;
        caps
    }
}

/// Everything of a stack that polling changes.
struct Inner {
    ip: Ipv4Addr,
    iface: Interface,
    device: SimDevice,
    sockets: SocketSet<'static>,
    /// Connection sockets (active, accepted, or waiting in a backlog).
    conns: BTreeMap<SocketHandle, Conn>,
    /// Listening ports.
    listeners: BTreeMap<u16, Listener>,
    /// Slots holding an empty placeholder socket (see [`Inner::add_conn_socket`]).
    spare: BTreeSet<SocketHandle>,
    /// (local, remote) of every RST that arrived since the last poll.
    rst_seen: BTreeSet<(SocketAddrV4, SocketAddrV4)>,
    next_port: u16,
}

/// One host's TCP stack for one life of the host. Shared by the network
/// (arrivals), the host's interface task (polling) and the host's sockets.
pub(crate) struct TcpStack {
    /// Arrived IPv4 packets waiting for the next poll.
    rx: RefCell<VecDeque<Vec<u8>>>,
    inner: RefCell<Inner>,
    /// Wakes the host's interface task, which polls the stack.
    wake: Rc<Notify>,
}

impl std::fmt::Debug for TcpStack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpStack").finish_non_exhaustive()
    }
}

impl TcpStack {
    /// A stack for `ip`, its randomness (initial sequence numbers) from
    /// `random_seed`.
    pub(crate) fn new(ip: Ipv4Addr, random_seed: u64, now: SimTime, wake: Rc<Notify>) -> Self {
        let mut device = SimDevice::default();
        let mut config = Config::new(HardwareAddress::Ip);
        config.random_seed = random_seed;
        let mut iface = Interface::new(config, &mut device, smol_instant(now));
        iface.update_ip_addrs(|addrs| {
            // One address: the vector has room for it.
            let _ = addrs.push(IpCidr::new(IpAddress::Ipv4(ip), 24));
        });
        // Every host is on-link: with an IP medium the gateway is never
        // resolved, any address will do.
        let _ = iface.routes_mut().add_default_ipv4_route(ip);
        TcpStack {
            rx: RefCell::new(VecDeque::new()),
            inner: RefCell::new(Inner {
                ip,
                iface,
                device,
                sockets: SocketSet::new(Vec::new()),
                conns: BTreeMap::new(),
                listeners: BTreeMap::new(),
                spare: BTreeSet::new(),
                rst_seen: BTreeSet::new(),
                next_port: EPHEMERAL_FIRST,
            }),
            wake,
        }
    }

    /// Packets waiting for the next poll.
    pub(crate) fn rx_len(&self) -> usize {
        self.rx.borrow().len()
    }

    /// Queue an arrived IPv4 packet for the next poll (the interface task
    /// that decided the arrival polls the stack right after).
    pub(crate) fn push_arrival(&self, packet: Vec<u8>) {
        self.rx.borrow_mut().push_back(packet);
    }

    fn kick(&self) {
        self.wake.notify_one();
    }

    /// Poll the stack at `now`: process what arrived, run its timers, and
    /// return the IPv4 packets it emitted and when it wants to be polled
    /// next (never `now` itself: at the earliest, one tick later).
    pub(crate) fn service(&self, now: SimTime) -> (Vec<Vec<u8>>, Option<SimTime>) {
        let arrived: Vec<Vec<u8>> = self.rx.borrow_mut().drain(..).collect();
        let mut guard = self.inner.borrow_mut();
        let inner = &mut *guard;
        for p in arrived {
            if let Some(seg) = parse_ipv4_tcp(&p)
                && TcpHeader::parse(seg.bytes).is_some_and(|h| h.flags.has(TcpFlags::RST))
            {
                inner.rst_seen.insert((seg.dst, seg.src));
            }
            inner.device.rx.push_back(p);
        }
        let ts = smol_instant(now);
        for _ in 0..POLLS_PER_SERVICE {
            inner.iface.poll(ts, &mut inner.device, &mut inner.sockets);
            inner.after_poll();
            match inner.iface.poll_at(ts, &inner.sockets) {
                Some(t) if t <= ts => {}
                _ => break,
            }
        }
        let tx = std::mem::take(&mut inner.device.tx);
        let tick = now.saturating_add(Duration::from_millis(1));
        let next = inner
            .iface
            .poll_at(ts, &inner.sockets)
            .map(|t| sim_time(t).max(tick));
        (tx, next)
    }
}

impl Inner {
    /// Add a connection socket (active open). It may take any free slot:
    /// its segments carry ACK (or are a SYN of its own), which no listening
    /// socket takes.
    fn add_conn_socket(&mut self, s: tcp::Socket<'static>) -> SocketHandle {
        if let Some(h) = self.spare.pop_first() {
            self.sockets.remove(h);
        }
        self.sockets.add(s)
    }

    /// Add a listening socket after every existing socket. smoltcp hands a
    /// segment to the first socket that accepts it, so a listening socket
    /// must come after the connections it made earlier: otherwise a
    /// retransmitted or duplicated SYN would open a second connection on the
    /// same 4-tuple. The set never has holes (retired slots hold
    /// placeholders), so `add` appends.
    fn add_listen_socket(&mut self, s: tcp::Socket<'static>) -> SocketHandle {
        self.sockets.add(s)
    }

    /// Free a socket's buffers, keeping its slot with a placeholder.
    fn retire(&mut self, h: SocketHandle) {
        self.conns.remove(&h);
        self.sockets.remove(h);
        let placeholder = tcp::Socket::new(
            tcp::SocketBuffer::new(Vec::new()),
            tcp::SocketBuffer::new(Vec::new()),
        );
        let again = self.sockets.add(placeholder);
        debug_assert_eq!(again, h, "the socket set has no other hole");
        self.spare.insert(again);
    }

    fn port_in_use(&self, port: u16) -> bool {
        self.listeners.contains_key(&port) || self.conns.values().any(|c| c.local.port() == port)
    }

    fn ephemeral_port(&mut self) -> io::Result<u16> {
        let start = self.next_port.max(EPHEMERAL_FIRST);
        let candidates = (start..=u16::MAX).chain(EPHEMERAL_FIRST..start);
        for p in candidates {
            if !self.port_in_use(p) {
                self.next_port = p.checked_add(1).unwrap_or(EPHEMERAL_FIRST);
                return Ok(p);
            }
        }
        Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            "no free ephemeral TCP port",
        ))
    }

    fn endpoints(&self, h: SocketHandle) -> Option<(SocketAddrV4, SocketAddrV4)> {
        let s = self.sockets.get::<tcp::Socket>(h);
        let v4 = |e: IpEndpoint| match e.addr {
            IpAddress::Ipv4(a) => Some(SocketAddrV4::new(a, e.port)),
            #[allow(unreachable_patterns)]
            _ => None,
        };
        Some((v4(s.local_endpoint()?)?, v4(s.remote_endpoint()?)?))
    }

    /// Bookkeeping after every poll: listeners' queues, how connections
    /// ended, and sockets nobody will read any more.
    fn after_poll(&mut self) {
        // Listeners: a listening socket that left LISTEN joins the queue.
        let ports: Vec<u16> = self.listeners.keys().copied().collect();
        for port in ports {
            let Some(l) = self.listeners.get_mut(&port) else {
                continue;
            };
            let mut changed = false;
            if let Some(h) = l.listening {
                let state = self.sockets.get::<tcp::Socket>(h).state();
                if state != tcp::State::Listen {
                    l.listening = None;
                    l.pending.push_back(h);
                    changed = true;
                    let timeout = l.config.user_timeout;
                    if let Some((local, remote)) = self.endpoints(h) {
                        self.conns.insert(
                            h,
                            Conn {
                                state,
                                local,
                                remote,
                                failure: None,
                                timeout,
                                orphan: false,
                            },
                        );
                    }
                }
            }
            let Some(l) = self.listeners.get_mut(&port) else {
                continue;
            };
            // Queued connections that failed before being accepted go away
            // (an RST in SYN-RECEIVED puts smoltcp's socket back in LISTEN).
            let mut dead = Vec::new();
            l.pending.retain(|h| {
                let state = self.sockets.get::<tcp::Socket>(*h).state();
                let gone = matches!(state, tcp::State::Listen | tcp::State::Closed)
                    || !self.conns.contains_key(h);
                if gone {
                    dead.push(*h);
                }
                !gone
            });
            changed |= !dead.is_empty();
            let refill = l.listening.is_none() && l.pending.len() < l.config.backlog;
            let config = l.config.clone();
            if changed && let Some(w) = l.waker.take() {
                w.wake();
            }
            for h in dead {
                let s = self.sockets.get_mut::<tcp::Socket>(h);
                s.abort();
                self.retire(h);
            }
            if refill {
                self.relisten(port, &config);
            }
        }
        // Connections: how each one that closed ended.
        let handles: Vec<SocketHandle> = self.conns.keys().copied().collect();
        for h in handles {
            let state = self.sockets.get::<tcp::Socket>(h).state();
            let Some(c) = self.conns.get_mut(&h) else {
                continue;
            };
            let before = c.state;
            c.state = state;
            if state == tcp::State::Closed && c.failure.is_none() && abnormal_end(before) {
                let rst = self.rst_seen.contains(&(c.local, c.remote));
                c.failure = Some(match (rst, before) {
                    (true, tcp::State::SynSent) => Failure::Refused,
                    (true, _) => Failure::Reset,
                    (false, b) => Failure::TimedOut {
                        timeout: c.timeout,
                        connecting: matches!(b, tcp::State::SynSent | tcp::State::SynReceived),
                    },
                });
            }
            if c.orphan && state == tcp::State::Closed {
                self.retire(h);
            }
        }
        self.rst_seen.clear();
    }

    /// Put a fresh listening socket on `port`, after every other socket.
    fn relisten(&mut self, port: u16, config: &TcpConfig) {
        let mut s = config.socket();
        let ip = self.ip;
        if s.listen(SocketAddrV4::new(ip, port)).is_err() {
            return;
        }
        let h = self.add_listen_socket(s);
        if let Some(l) = self.listeners.get_mut(&port) {
            l.listening = Some(h);
        }
    }
}

/// Whether reaching CLOSED from `state` means the connection failed (reset
/// or timed out) rather than finished (LAST-ACK and TIME-WAIT end there).
fn abnormal_end(state: tcp::State) -> bool {
    !matches!(
        state,
        tcp::State::Closed | tcp::State::Listen | tcp::State::LastAck | tcp::State::TimeWait
    )
}

/// A TCP listening socket on a simulated host.
pub struct SimTcpListener {
    stack: Rc<TcpStack>,
    local: SocketAddrV4,
}

impl std::fmt::Debug for SimTcpListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimTcpListener")
            .field("local", &self.local)
            .finish_non_exhaustive()
    }
}

// Host software that the runner starts gets its sockets here; within this
// crate only the tests do so far.
#[cfg_attr(not(test), allow(dead_code))]
impl SimTcpListener {
    /// Listen on `host` at `port` (0: an ephemeral port), with the default
    /// [`TcpConfig`] for the connections it accepts.
    ///
    /// # Errors
    /// `AddrInUse` if the port is taken on this host.
    pub(crate) fn bind(net: &Rc<RefCell<Network>>, host: usize, port: u16) -> io::Result<Self> {
        Self::bind_with(net, host, port, TcpConfig::default())
    }

    /// [`SimTcpListener::bind`] with a configuration.
    ///
    /// # Errors
    /// `AddrInUse` if the port is taken on this host.
    pub(crate) fn bind_with(
        net: &Rc<RefCell<Network>>,
        host: usize,
        port: u16,
        config: TcpConfig,
    ) -> io::Result<Self> {
        let stack = net.borrow_mut().tcp_stack(host);
        let local = {
            let mut inner = stack.inner.borrow_mut();
            let port = if port == 0 {
                inner.ephemeral_port()?
            } else if inner.port_in_use(port) {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!("TCP port {port} is already in use on {}", inner.ip),
                ));
            } else {
                port
            };
            inner.listeners.insert(
                port,
                Listener {
                    config: config.clone(),
                    listening: None,
                    pending: VecDeque::new(),
                    waker: None,
                },
            );
            inner.relisten(port, &config);
            SocketAddrV4::new(inner.ip, port)
        };
        Ok(SimTcpListener { stack, local })
    }

    /// The listening address (the host's IP, not `0.0.0.0`).
    pub fn local_addr(&self) -> SocketAddrV4 {
        self.local
    }

    /// The next connection whose handshake completed, oldest first, and its
    /// peer's address.
    ///
    /// # Errors
    /// None at present (the signature leaves room for them).
    pub async fn accept(&self) -> io::Result<(SimTcpStream, SocketAddrV4)> {
        let port = self.local.port();
        let h = poll_fn(|cx| {
            let mut guard = self.stack.inner.borrow_mut();
            let inner = &mut *guard;
            let Some(l) = inner.listeners.get_mut(&port) else {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::NotConnected,
                    "the listener is closed",
                )));
            };
            let ready = l.pending.iter().position(|h| {
                let state = inner.sockets.get::<tcp::Socket>(*h).state();
                !matches!(
                    state,
                    tcp::State::SynReceived | tcp::State::Listen | tcp::State::Closed
                )
            });
            match ready {
                Some(i) => {
                    let Some(h) = l.pending.remove(i) else {
                        return Poll::Pending;
                    };
                    let refill = l.listening.is_none();
                    let config = l.config.clone();
                    if refill {
                        inner.relisten(port, &config);
                    }
                    Poll::Ready(Ok(h))
                }
                None => {
                    l.waker = Some(cx.waker().clone());
                    Poll::Pending
                }
            }
        })
        .await?;
        let remote = self
            .stack
            .inner
            .borrow()
            .conns
            .get(&h)
            .map_or(self.local, |c| c.remote);
        Ok((
            SimTcpStream {
                stack: self.stack.clone(),
                handle: h,
                local: self.local,
                remote,
            },
            remote,
        ))
    }
}

impl Drop for SimTcpListener {
    fn drop(&mut self) {
        let Ok(mut guard) = self.stack.inner.try_borrow_mut() else {
            return;
        };
        let inner = &mut *guard;
        let Some(l) = inner.listeners.remove(&self.local.port()) else {
            return;
        };
        // Not-yet-accepted connections are reset, the listening socket closed.
        for h in l.pending.into_iter().chain(l.listening) {
            inner.sockets.get_mut::<tcp::Socket>(h).abort();
            match inner.conns.get_mut(&h) {
                Some(c) => c.orphan = true,
                None => inner.retire(h),
            }
        }
        drop(guard);
        self.stack.kick();
    }
}

/// A TCP connection on a simulated host. Reads and writes go through the
/// host's smoltcp stack; every segment crosses the simulated network.
pub struct SimTcpStream {
    stack: Rc<TcpStack>,
    handle: SocketHandle,
    local: SocketAddrV4,
    remote: SocketAddrV4,
}

impl std::fmt::Debug for SimTcpStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimTcpStream")
            .field("local", &self.local)
            .field("remote", &self.remote)
            .finish_non_exhaustive()
    }
}

#[cfg_attr(not(test), allow(dead_code))]
impl SimTcpStream {
    /// Connect from `host` to `addr` with the default [`TcpConfig`].
    ///
    /// # Errors
    /// `ConnectionRefused` (RST in reply to the SYN), `TimedOut` (no answer
    /// within the user timeout), `AddrInUse` (no ephemeral port free).
    pub(crate) async fn connect(
        net: &Rc<RefCell<Network>>,
        host: usize,
        addr: SocketAddrV4,
    ) -> io::Result<SimTcpStream> {
        Self::connect_with(net, host, addr, TcpConfig::default()).await
    }

    /// [`SimTcpStream::connect`] with a configuration.
    ///
    /// # Errors
    /// As [`SimTcpStream::connect`].
    pub(crate) async fn connect_with(
        net: &Rc<RefCell<Network>>,
        host: usize,
        addr: SocketAddrV4,
        config: TcpConfig,
    ) -> io::Result<SimTcpStream> {
        let stack = net.borrow_mut().tcp_stack(host);
        let (handle, local) = {
            let mut guard = stack.inner.borrow_mut();
            let inner = &mut *guard;
            let port = inner.ephemeral_port()?;
            let local = SocketAddrV4::new(inner.ip, port);
            let mut s = config.socket();
            s.connect(inner.iface.context(), addr, local)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
            let h = inner.add_conn_socket(s);
            inner.conns.insert(
                h,
                Conn {
                    state: tcp::State::SynSent,
                    local,
                    remote: addr,
                    failure: None,
                    timeout: config.user_timeout,
                    orphan: false,
                },
            );
            (h, local)
        };
        stack.kick();
        let stream = SimTcpStream {
            stack,
            handle,
            local,
            remote: addr,
        };
        poll_fn(|cx| {
            let mut guard = stream.stack.inner.borrow_mut();
            let inner = &mut *guard;
            if let Some(f) = inner
                .conns
                .get(&handle)
                .and_then(|c| c.failure.map(|f| c.error(f)))
            {
                return Poll::Ready(Err(f));
            }
            let s = inner.sockets.get_mut::<tcp::Socket>(handle);
            match s.state() {
                tcp::State::SynSent | tcp::State::SynReceived => {
                    s.register_recv_waker(cx.waker());
                    Poll::Pending
                }
                tcp::State::Closed => Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::ConnectionAborted,
                    format!("TCP connection {local} -> {addr} closed while connecting"),
                ))),
                _ => Poll::Ready(Ok(())),
            }
        })
        .await?;
        Ok(stream)
    }

    /// This end's address.
    pub fn local_addr(&self) -> SocketAddrV4 {
        self.local
    }

    /// The peer's address.
    pub fn peer_addr(&self) -> SocketAddrV4 {
        self.remote
    }

    /// Change the user timeout of this connection.
    pub fn set_user_timeout(&self, timeout: Option<Duration>) {
        let mut inner = self.stack.inner.borrow_mut();
        if let Some(c) = inner.conns.get_mut(&self.handle) {
            c.timeout = timeout;
        }
        inner
            .sockets
            .get_mut::<tcp::Socket>(self.handle)
            .set_timeout(timeout.map(smol_duration));
    }

    /// Abort the connection: the peer gets an RST (its reads and writes fail
    /// with `ConnectionReset`), unsent and unread data is discarded.
    pub fn abort(&self) {
        let mut inner = self.stack.inner.borrow_mut();
        inner.sockets.get_mut::<tcp::Socket>(self.handle).abort();
        drop(inner);
        self.stack.kick();
    }

    /// Bytes written but not yet acknowledged by the peer (or not yet sent).
    pub fn unacknowledged(&self) -> usize {
        self.stack
            .inner
            .borrow()
            .sockets
            .get::<tcp::Socket>(self.handle)
            .send_queue()
    }

    /// The error that ended the connection, if it failed.
    fn failure(&self, inner: &Inner) -> Option<io::Error> {
        inner
            .conns
            .get(&self.handle)
            .and_then(|c| c.failure.map(|f| c.error(f)))
    }
}

impl Drop for SimTcpStream {
    fn drop(&mut self) {
        let Ok(mut guard) = self.stack.inner.try_borrow_mut() else {
            return;
        };
        let inner = &mut *guard;
        let s = inner.sockets.get_mut::<tcp::Socket>(self.handle);
        s.close();
        let closed = s.state() == tcp::State::Closed;
        if closed {
            inner.retire(self.handle);
        } else if let Some(c) = inner.conns.get_mut(&self.handle) {
            // The stack finishes the close (FIN, retransmissions, TIME-WAIT)
            // on its own, as a kernel does.
            c.orphan = true;
        }
        drop(guard);
        self.stack.kick();
    }
}

impl AsyncRead for SimTcpStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let mut guard = this.stack.inner.borrow_mut();
        let failure = this.failure(&guard);
        let s = guard.sockets.get_mut::<tcp::Socket>(this.handle);
        if s.can_recv() {
            let n = match s.recv_slice(buf.initialize_unfilled()) {
                Ok(n) => n,
                Err(tcp::RecvError::Finished) => 0,
                Err(tcp::RecvError::InvalidState) => {
                    return Poll::Ready(Err(failure.unwrap_or_else(|| {
                        io::Error::new(io::ErrorKind::NotConnected, "TCP connection is closed")
                    })));
                }
            };
            buf.advance(n);
            drop(guard);
            // The window opened: let the stack tell the peer.
            this.stack.kick();
            return Poll::Ready(Ok(()));
        }
        if let Some(e) = failure {
            return Poll::Ready(Err(e));
        }
        if !s.may_recv() {
            // The peer closed its half (or the connection is gone): EOF.
            return Poll::Ready(Ok(()));
        }
        s.register_recv_waker(cx.waker());
        Poll::Pending
    }
}

impl AsyncWrite for SimTcpStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let mut guard = this.stack.inner.borrow_mut();
        if let Some(e) = this.failure(&guard) {
            return Poll::Ready(Err(e));
        }
        let s = guard.sockets.get_mut::<tcp::Socket>(this.handle);
        if !s.may_send() {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                format!(
                    "TCP connection {} -> {} can no longer send (state {})",
                    this.local,
                    this.remote,
                    s.state()
                ),
            )));
        }
        if data.is_empty() {
            return Poll::Ready(Ok(0));
        }
        if !s.can_send() {
            s.register_send_waker(cx.waker());
            return Poll::Pending;
        }
        let n = s.send_slice(data).unwrap_or(0);
        drop(guard);
        this.stack.kick();
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let guard = this.stack.inner.borrow();
        match this.failure(&guard) {
            Some(e) => Poll::Ready(Err(e)),
            None => Poll::Ready(Ok(())),
        }
    }

    /// Sends FIN once everything written before has been sent; reading goes
    /// on until the peer closes its half.
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let mut guard = this.stack.inner.borrow_mut();
        if let Some(e) = this.failure(&guard) {
            return Poll::Ready(Err(e));
        }
        guard.sockets.get_mut::<tcp::Socket>(this.handle).close();
        drop(guard);
        this.stack.kick();
        Poll::Ready(Ok(()))
    }
}
