//! One SRT socket, sans-IO: the caller or listener handshake, then a duplex
//! live-mode connection (sender with send buffer and retransmission,
//! receiver with loss list, ACK/ACKACK/NAK, TSBPD and too-late drop).
//! `docs/srt.md` is the specification; section numbers below are the
//! draft's.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::{IpAddr, SocketAddr};

use sha2::{Digest, Sha256};
use streamlab_core::machine::{Machine, Transmit};
use streamlab_core::time::SimTime;

use super::stats::EndpointStats;
use crate::wire::{
    self, Ack, AckInfo, ControlBody, ControlPacket, DataPacket, Handshake, LossRange, Packet,
    Position, SeqNo, SrtHs, flags, hs_type,
};

/// Timers and limits of docs/srt.md §4 (libsrt 1.5.1 values).
pub mod consts {
    /// Full ACK period (`COMM_SYN_INTERVAL_US`), µs.
    pub const ACK_PERIOD_US: u64 = 10_000;
    /// A light ACK after this many packets (`SELF_CLOCK_INTERVAL`).
    pub const LIGHT_ACK_PACKETS: u32 = 64;
    /// Floor of the periodic NAK interval (`m_iMinNakInterval_us`), µs.
    pub const MIN_NAK_INTERVAL_US: u64 = 20_000;
    /// KEEPALIVE after this long without sending (`COMM_KEEPALIVE_PERIOD_US`), µs.
    pub const KEEPALIVE_US: u64 = 1_000_000;
    /// Handshake requests at most this often (core.cpp "1 request per 250ms"), µs.
    pub const HS_REPEAT_US: u64 = 250_000;
    /// Initial RTT (`INITIAL_RTT`), µs.
    pub const INITIAL_RTT_US: u64 = 100_000;
    /// Initial RTT variance, µs.
    pub const INITIAL_RTT_VAR_US: u64 = 50_000;
    /// The sender keeps packets at least this long before a too-late drop
    /// (libsrt `sndDropTooLate`: max(peer latency + SNDDROPDELAY, 1 s) + 20 ms), µs.
    pub const SND_DROP_MIN_US: u64 = 1_000_000;
    /// Added to the sender's drop threshold, µs.
    pub const SND_DROP_EXTRA_US: u64 = 20_000;
    /// The SRT version this endpoint announces (1.5.1, what it was tested against).
    pub const SRT_VERSION: u32 = 0x01_05_01;
    /// The oldest peer SRT version accepted (libsrt: 1.3.0).
    pub const MIN_PEER_VERSION: u32 = 0x01_03_00;
    /// ACK numbers remembered for RTT measurement (bounded history).
    pub const ACK_HISTORY: usize = 64;
    /// Loss list entries in one NAK (fits a 1500-byte MTU).
    pub const MAX_NAK_WORDS: usize = 360;
    /// The live-mode payload limit (`SRT_LIVE_MAX_PLSIZE`).
    pub const MAX_PAYLOAD: usize = 1456;
}
use consts::*;

/// An endpoint's configuration (docs/srt.md §5; libsrt option names in brackets).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Receiver latency this side proposes, ms [SRTO_RCVLATENCY].
    pub latency_ms: u16,
    /// Latency this side proposes for what it sends, ms [SRTO_PEERLATENCY].
    pub peer_latency_ms: u16,
    /// Connection timeout, ms [SRTO_CONNTIMEO].
    pub connect_timeout_ms: u64,
    /// Peer idle timeout, ms [SRTO_PEERIDLETIMEO].
    pub peer_idle_timeout_ms: u64,
    /// Flow window, packets [SRTO_FC]; also bounds both buffers.
    pub flow_window: u32,
    /// MTU announced in the handshake [SRTO_MSS].
    pub mtu: u32,
    /// Too-late packet drop [SRTO_TLPKTDROP].
    pub tlpktdrop: bool,
    /// Extra delay before the sender drops, ms [SRTO_SNDDROPDELAY].
    pub snd_drop_delay_ms: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            latency_ms: 120,
            peer_latency_ms: 120,
            connect_timeout_ms: 3000,
            peer_idle_timeout_ms: 5000,
            flow_window: 8192,
            mtu: 1500,
            tlpktdrop: true,
            snd_drop_delay_ms: 0,
        }
    }
}

/// How an endpoint connects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Role {
    /// Caller: connects to `peer`.
    Caller {
        /// The listener's address.
        peer: SocketAddr,
        /// Initial sequence number of both directions.
        isn: SeqNo,
    },
    /// Listener: accepts one caller; SYN cookies from `secret`.
    Listener {
        /// Secret the cookies derive from.
        secret: [u8; 32],
    },
}

/// Where the endpoint is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Caller: sending INDUCTION.
    Induction,
    /// Caller: sending CONCLUSION.
    Conclusion,
    /// Listener: waiting for a caller.
    Listening,
    /// Connected.
    Connected,
    /// SHUTDOWN received; the receive buffer drains by TSBPD.
    Draining,
    /// Closed (SHUTDOWN sent or drained).
    Closed,
    /// Failed (see [`Endpoint::failure`]).
    Failed,
}

/// Why an endpoint failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Failure {
    /// No CONCLUSION response within the connect timeout.
    ConnectTimeout,
    /// The listener rejected (`SRT_REJ_*` reason), or the caller refused
    /// the listener's response for this reason.
    Rejected(u32),
    /// Nothing from the peer for the peer idle timeout.
    PeerIdleTimeout,
}

impl Failure {
    /// Stable name (`connect_timeout`, `rejected:VERSION`, `peer_idle_timeout`).
    pub fn name(&self) -> String {
        match self {
            Failure::ConnectTimeout => "connect_timeout".into(),
            Failure::Rejected(r) => format!("rejected:{}", reject_name(*r)),
            Failure::PeerIdleTimeout => "peer_idle_timeout".into(),
        }
    }
}

/// Name of an `SRT_REJ_*` reason (`UNKNOWN_<n>` past the table).
pub fn reject_name(r: u32) -> String {
    wire::REJECT_REASONS
        .get(r as usize)
        .map_or_else(|| format!("UNKNOWN_{r}"), |s| (*s).to_string())
}

/// What an endpoint tells its owner.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// The handshake completed.
    Connected {
        /// Receive TSBPD delay, ms.
        recv_latency_ms: u16,
        /// Send TSBPD delay, ms.
        send_latency_ms: u16,
    },
    /// The peer sent SHUTDOWN.
    PeerShutdown,
    /// The connection failed.
    Failed(Failure),
    /// The receive buffer dropped `count` packets as too late.
    Dropped {
        /// How many.
        count: u64,
    },
}

/// A message released to the application at its TSBPD time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Released {
    /// Its sequence number.
    pub seq: SeqNo,
    /// When it was due (its TSBPD time).
    pub due: SimTime,
    /// The timestamp it carried (the sender's clock).
    pub timestamp: u32,
    /// The payload.
    pub payload: Vec<u8>,
}

#[derive(Clone, Debug)]
struct Sent {
    msgno: u32,
    timestamp: u32,
    origin: SimTime,
    payload: Vec<u8>,
}

#[derive(Clone, Debug)]
struct Received {
    ts_ext: u64,
    payload: Vec<u8>,
}

/// The connected state of both directions.
#[derive(Clone, Debug)]
struct Conn {
    peer: SocketAddr,
    peer_socket: u32,
    /// Our timestamps count from here.
    start: SimTime,
    recv_latency_us: u64,
    send_latency_us: u64,
    peer_tlpktdrop: bool,
    // Sender.
    next_seq: u64,
    next_msgno: u32,
    /// Unacknowledged packets, from `snd_ack` up.
    snd_buf: VecDeque<Sent>,
    snd_ack: u64,
    rexmit: BTreeSet<u64>,
    last_data_sent: SimTime,
    last_ack_progress: SimTime,
    // Receiver.
    /// TSBPD: a packet with extended timestamp `t` plays at `base + t + latency` (µs, may be negative before the add).
    tsbpd_base: i64,
    last_ts_ext: u64,
    /// Everything below was released or dropped.
    rcv_base: u64,
    /// Largest sequence received + 1.
    rcv_next: u64,
    rcv_buf: BTreeMap<u64, Received>,
    loss: BTreeSet<u64>,
    ack_no: u32,
    ack_history: VecDeque<(u32, SimTime)>,
    last_full_ack_seq: u64,
    last_full_ack_at: SimTime,
    ackacked_seq: u64,
    since_light_ack: u32,
    next_ack_at: SimTime,
    next_nak_at: SimTime,
    rtt_us: u64,
    rtt_var_us: u64,
    rtt_measured: bool,
    last_sent: SimTime,
    last_recv: SimTime,
}

/// One SRT endpoint (a caller or a listener with its one connection).
#[derive(Debug)]
pub struct Endpoint {
    cfg: Config,
    role: Role,
    socket_id: u32,
    state: State,
    failure: Option<Failure>,
    started: Option<SimTime>,
    isn: Option<SeqNo>,
    // Caller handshake.
    cookie: u32,
    next_hs_at: SimTime,
    // Listener: the accepted caller (address, socket id) and the response to repeat.
    accepted: Option<(SocketAddr, u32, Vec<u8>)>,
    conn: Option<Conn>,
    out: VecDeque<(SocketAddr, Vec<u8>)>,
    events: VecDeque<Event>,
    released: VecDeque<Released>,
    stats: EndpointStats,
}

/// Timestamps count from the host's own clock zero (libsrt counts from the
/// socket's start; any origin works, the peer derives its TSBPD base from
/// the handshake). A common origin lets an observer relate the timestamps
/// of one host's packets to each other and to its clock.
const TS_ZERO: SimTime = SimTime::ZERO;

fn ts_of(now: SimTime, start: SimTime) -> u32 {
    (now.as_micros().wrapping_sub(start.as_micros())) as u32
}

fn unwrap_ts(ts: u32, reference: u64) -> u64 {
    // The candidate on `reference`'s lap, or the next or previous one,
    // whichever is nearest.
    let lap = reference & !0xFFFF_FFFF;
    let cands = [
        lap.wrapping_sub(1 << 32) | u64::from(ts),
        lap | u64::from(ts),
        lap.wrapping_add(1 << 32) | u64::from(ts),
    ];
    cands
        .into_iter()
        .filter(|c| *c < (1 << 63))
        .min_by_key(|c| c.abs_diff(reference))
        .unwrap_or(u64::from(ts))
}

impl Endpoint {
    /// A new endpoint with socket id `socket_id`. Nothing happens until the
    /// first [`Machine::handle_timeout`] (the caller starts its handshake then).
    pub fn new(cfg: Config, role: Role, socket_id: u32) -> Self {
        let state = match role {
            Role::Caller { .. } => State::Induction,
            Role::Listener { .. } => State::Listening,
        };
        Endpoint {
            cfg,
            role,
            socket_id: socket_id & 0x7FFF_FFFF,
            state,
            failure: None,
            started: None,
            isn: None,
            cookie: 0,
            next_hs_at: SimTime::ZERO,
            accepted: None,
            conn: None,
            out: VecDeque::new(),
            events: VecDeque::new(),
            released: VecDeque::new(),
            stats: EndpointStats::default(),
        }
    }

    /// Its state.
    pub fn state(&self) -> State {
        self.state
    }

    /// Why it failed, if it did.
    pub fn failure(&self) -> Option<&Failure> {
        self.failure.as_ref()
    }

    /// Its counters.
    pub fn stats(&self) -> EndpointStats {
        let mut s = self.stats.clone();
        if let Some(c) = &self.conn {
            s.send.packets_in_buffer = c.snd_buf.len() as u64;
            s.send.ms_buf = match (c.snd_buf.front(), c.snd_buf.back()) {
                (Some(a), Some(b)) => (b.origin - a.origin).as_millis() as u64,
                _ => 0,
            };
            s.recv.packets_in_buffer = c.rcv_buf.len() as u64;
            s.recv.ms_buf = match (c.rcv_buf.first_key_value(), c.rcv_buf.last_key_value()) {
                (Some((_, a)), Some((_, b))) => b.ts_ext.saturating_sub(a.ts_ext) / 1000,
                _ => 0,
            };
            s.link.rtt = c.rtt_us as f64 / 1000.0;
            s.link.rtt_var = c.rtt_var_us as f64 / 1000.0;
        }
        s
    }

    /// The connection's initial sequence number (both directions), once
    /// connected.
    pub fn isn(&self) -> Option<SeqNo> {
        self.isn
    }

    /// Its socket id.
    pub fn socket_id(&self) -> u32 {
        self.socket_id
    }

    /// Whether it can send and receive data.
    pub fn is_connected(&self) -> bool {
        self.state == State::Connected
    }

    /// The negotiated receive latency, µs (once connected).
    pub fn recv_latency_us(&self) -> Option<u64> {
        self.conn.as_ref().map(|c| c.recv_latency_us)
    }

    /// Whether every packet sent so far was acknowledged (or dropped).
    pub fn send_buffer_empty(&self) -> bool {
        self.conn.as_ref().is_none_or(|c| c.snd_buf.is_empty())
    }

    /// The smoothed RTT, µs.
    pub fn rtt_us(&self) -> u64 {
        self.conn.as_ref().map_or(INITIAL_RTT_US, |c| c.rtt_us)
    }

    /// Whether the receive buffer holds nothing.
    pub fn receive_buffer_empty(&self) -> bool {
        self.conn.as_ref().is_none_or(|c| c.rcv_buf.is_empty())
    }

    /// The next message released to the application.
    pub fn poll_released(&mut self) -> Option<Released> {
        self.released.pop_front()
    }

    /// Send one message (one packet, live mode). Returns `false` (and sends
    /// nothing) unless connected or if the payload exceeds 1456 bytes.
    pub fn send(&mut self, now: SimTime, payload: &[u8]) -> bool {
        if self.state != State::Connected || payload.len() > MAX_PAYLOAD {
            return false;
        }
        let window = self.cfg.flow_window as usize;
        let Some(c) = self.conn.as_mut() else {
            return false;
        };
        // A full send buffer in live mode loses its oldest packet.
        if c.snd_buf.len() >= window {
            c.snd_buf.pop_front();
            c.rexmit.remove(&c.snd_ack);
            c.snd_ack += 1;
            self.stats.send.packets_dropped += 1;
        }
        let seq = c.next_seq;
        c.next_seq += 1;
        let msgno = c.next_msgno;
        c.next_msgno = wire::next_msgno(msgno);
        let timestamp = ts_of(now, c.start);
        c.snd_buf.push_back(Sent {
            msgno,
            timestamp,
            origin: now,
            payload: payload.to_vec(),
        });
        c.last_data_sent = now;
        c.last_sent = now;
        let bytes = Packet::Data(DataPacket {
            seq: SeqNo::from_extended(seq),
            position: Position::Solo,
            in_order: false,
            key: 0,
            retransmitted: false,
            msgno,
            timestamp,
            dst_socket: c.peer_socket,
            payload,
        })
        .to_bytes();
        self.out.push_back((c.peer, bytes));
        self.stats.send.packets += 1;
        self.stats.send.packets_unique += 1;
        self.stats.send.bytes += payload.len() as u64;
        self.stats.send.bytes_unique += payload.len() as u64;
        true
    }

    /// Close: send SHUTDOWN (if connected) and stop.
    pub fn close(&mut self, now: SimTime) {
        if let Some(c) = &self.conn
            && matches!(self.state, State::Connected | State::Draining)
        {
            let (peer, dst, start) = (c.peer, c.peer_socket, c.start);
            self.push_control(
                now,
                peer,
                dst,
                start,
                0,
                ControlBody::Shutdown { cif: vec![0; 4] },
            );
            self.stats.control.shutdowns_sent += 1;
        }
        if self.state != State::Failed {
            self.state = State::Closed;
        }
    }

    fn fail(&mut self, f: Failure) {
        if matches!(self.state, State::Failed | State::Closed) {
            return;
        }
        self.state = State::Failed;
        self.failure = Some(f.clone());
        self.events.push_back(Event::Failed(f));
    }

    fn push_control(
        &mut self,
        now: SimTime,
        to: SocketAddr,
        dst_socket: u32,
        start: SimTime,
        info: u32,
        body: ControlBody,
    ) {
        let p = Packet::Control(ControlPacket {
            subtype: 0,
            info,
            timestamp: ts_of(now, start),
            dst_socket,
            body,
        });
        if let Some(c) = self.conn.as_mut() {
            c.last_sent = now;
        }
        self.out.push_back((to, p.to_bytes()));
    }

    fn start_time(&self) -> SimTime {
        self.started.unwrap_or(SimTime::ZERO)
    }

    fn base_handshake(&self, isn: SeqNo, peer: SocketAddr) -> Handshake {
        let peer_ip = match peer.ip() {
            IpAddr::V4(v4) => wire::peer_ip_v4(v4),
            IpAddr::V6(v6) => v6.octets(),
        };
        Handshake {
            version: 5,
            encryption: 0,
            extension: 0,
            isn: isn.value(),
            mtu: self.cfg.mtu,
            flow_window: self.cfg.flow_window,
            hs_type: hs_type::CONCLUSION,
            socket_id: self.socket_id,
            cookie: 0,
            peer_ip,
            extensions: Vec::new(),
        }
    }

    fn our_flags(&self) -> u32 {
        let mut f = flags::TSBPDSND
            | flags::TSBPDRCV
            | flags::CRYPT
            | flags::PERIODICNAK
            | flags::REXMITFLG;
        if self.cfg.tlpktdrop {
            f |= flags::TLPKTDROP;
        }
        f
    }

    // ---- caller handshake ----

    fn caller_send_request(&mut self, now: SimTime) {
        let Role::Caller { peer, isn } = self.role.clone() else {
            return;
        };
        let mut h = self.base_handshake(isn, peer);
        let start = TS_ZERO;
        if self.state == State::Induction {
            h.version = 4;
            h.extension = wire::UDT_DGRAM;
            h.hs_type = hs_type::INDUCTION;
        } else {
            h.extension = wire::HS_EXT_HSREQ;
            h.cookie = self.cookie;
            h.extensions.push(
                SrtHs {
                    version: SRT_VERSION,
                    flags: self.our_flags(),
                    recv_delay_ms: self.cfg.latency_ms,
                    send_delay_ms: self.cfg.peer_latency_ms,
                }
                .to_extension(wire::EXT_HSREQ),
            );
        }
        self.push_control(now, peer, 0, start, 0, ControlBody::Handshake(h));
        self.stats.control.handshakes_sent += 1;
        self.next_hs_at = now + std::time::Duration::from_micros(HS_REPEAT_US);
    }

    fn caller_handshake(
        &mut self,
        now: SimTime,
        from: SocketAddr,
        c: &ControlPacket,
        h: &Handshake,
    ) {
        let Role::Caller { peer, isn } = self.role.clone() else {
            return;
        };
        if from != peer || c.dst_socket != self.socket_id {
            self.stats.control.foreign_received += 1;
            return;
        }
        if let Some(r) = h.rejection()
            && matches!(self.state, State::Induction | State::Conclusion)
        {
            self.fail(Failure::Rejected(r));
            return;
        }
        match (self.state, h.hs_type) {
            (State::Induction, hs_type::INDUCTION) => {
                if h.version != 5 {
                    self.fail(Failure::Rejected(wire::REJ_VERSION));
                } else if h.extension != wire::SRT_MAGIC {
                    self.fail(Failure::Rejected(wire::REJ_ROGUE));
                } else {
                    self.cookie = h.cookie;
                    self.state = State::Conclusion;
                    self.caller_send_request(now);
                }
            }
            (State::Conclusion, hs_type::CONCLUSION) => {
                let (recv_lat, send_lat, peer_flags) = match h.srt_hs() {
                    // The listener's HSRSP: its send delay is our receive
                    // delay and its receive delay our send delay, both
                    // already the maxima (draft §4.4).
                    Some(rsp) => (
                        rsp.send_delay_ms.max(self.cfg.latency_ms),
                        rsp.recv_delay_ms.max(self.cfg.peer_latency_ms),
                        rsp.flags,
                    ),
                    None => {
                        // libsrt answers a repeated CONCLUSION without
                        // extensions (issue #1648); keep our proposals.
                        self.stats.control.responses_without_hsrsp += 1;
                        (
                            self.cfg.latency_ms,
                            self.cfg.peer_latency_ms,
                            self.our_flags(),
                        )
                    }
                };
                let start = TS_ZERO;
                self.establish(
                    now,
                    peer,
                    h.socket_id,
                    isn,
                    start,
                    c.timestamp,
                    recv_lat,
                    send_lat,
                    peer_flags,
                );
            }
            _ => {}
        }
    }

    // ---- listener handshake ----

    fn cookie_for(&self, peer: SocketAddr, minute: u64) -> u32 {
        let Role::Listener { secret } = &self.role else {
            return 0;
        };
        let mut d = Sha256::new();
        d.update(secret);
        d.update(peer.to_string().as_bytes());
        d.update(minute.to_be_bytes());
        let h = d.finalize();
        u32::from_be_bytes([h[0], h[1], h[2], h[3]])
    }

    fn reject(&mut self, now: SimTime, to: SocketAddr, h: &Handshake, reason: u32) {
        let mut r = self.base_handshake(SeqNo::new(h.isn), to);
        r.hs_type = hs_type::REJECT_BASE + reason as i32;
        r.cookie = h.cookie;
        let start = TS_ZERO;
        self.push_control(now, to, h.socket_id, start, 0, ControlBody::Handshake(r));
        self.stats.control.handshakes_sent += 1;
        self.stats.control.rejections_sent += 1;
    }

    fn listener_handshake(
        &mut self,
        now: SimTime,
        from: SocketAddr,
        c: &ControlPacket,
        h: &Handshake,
    ) {
        let minute = now.as_micros() / 60_000_000;
        if h.hs_type == hs_type::INDUCTION {
            // Stateless: the cookie carries what the conclusion needs.
            let mut r = self.base_handshake(SeqNo::new(h.isn), from);
            r.version = 5;
            r.extension = wire::SRT_MAGIC;
            r.hs_type = hs_type::INDUCTION;
            r.socket_id = h.socket_id;
            r.cookie = self.cookie_for(from, minute);
            let start = TS_ZERO;
            self.push_control(now, from, h.socket_id, start, 0, ControlBody::Handshake(r));
            self.stats.control.handshakes_sent += 1;
            return;
        }
        if h.hs_type != hs_type::CONCLUSION {
            self.stats.control.foreign_received += 1;
            return;
        }
        let ok_cookie = h.cookie == self.cookie_for(from, minute)
            || (minute > 0 && h.cookie == self.cookie_for(from, minute - 1));
        if !ok_cookie {
            // libsrt sends nothing back.
            self.stats.control.wrong_cookies += 1;
            return;
        }
        if let Some((addr, sid, rsp)) = &self.accepted {
            if *addr == from && *sid == h.socket_id {
                // A repeated CONCLUSION: the same full response again.
                let rsp = rsp.clone();
                self.out.push_back((from, rsp));
                self.stats.control.handshakes_sent += 1;
            } else {
                self.reject(now, from, h, wire::REJ_BACKLOG);
            }
            return;
        }
        if h.version != 5 {
            return self.reject(now, from, h, wire::REJ_VERSION);
        }
        if h.encryption != 0 || h.extension & wire::HS_EXT_KMREQ != 0 {
            return self.reject(now, from, h, 11); // UNSECURE: no encryption here
        }
        let Some(req) = h
            .extensions
            .iter()
            .find(|e| e.kind == wire::EXT_HSREQ)
            .and_then(|e| SrtHs::from_contents(&e.contents).map(|s| (s, e.contents.len())))
        else {
            return self.reject(now, from, h, wire::REJ_ROGUE);
        };
        let (req, len) = req;
        if req.version < MIN_PEER_VERSION || len < 8 {
            return self.reject(now, from, h, wire::REJ_ROGUE);
        }
        if req.flags & flags::STREAM != 0 {
            return self.reject(now, from, h, wire::REJ_MESSAGEAPI);
        }
        if len < 12 && req.flags & (flags::TSBPDSND | flags::TSBPDRCV) != 0 {
            return self.reject(now, from, h, wire::REJ_ROGUE);
        }
        // Latency per direction = max of both proposals (draft §4.4).
        let recv_lat = self.cfg.latency_ms.max(req.send_delay_ms);
        let send_lat = self.cfg.peer_latency_ms.max(req.recv_delay_ms);
        let start = TS_ZERO;
        self.started = Some(now);
        let mut r = self.base_handshake(SeqNo::new(h.isn), from);
        r.extension = wire::HS_EXT_HSREQ;
        r.cookie = h.cookie;
        r.extensions.push(
            SrtHs {
                version: SRT_VERSION,
                flags: self.our_flags(),
                recv_delay_ms: recv_lat,
                send_delay_ms: send_lat,
            }
            .to_extension(wire::EXT_HSRSP),
        );
        let rsp = Packet::Control(ControlPacket {
            subtype: 0,
            info: 0,
            timestamp: ts_of(now, TS_ZERO),
            dst_socket: h.socket_id,
            body: ControlBody::Handshake(r),
        })
        .to_bytes();
        self.accepted = Some((from, h.socket_id, rsp.clone()));
        self.establish(
            now,
            from,
            h.socket_id,
            SeqNo::new(h.isn),
            start,
            c.timestamp,
            recv_lat,
            send_lat,
            req.flags,
        );
        self.out.push_back((from, rsp));
        self.stats.control.handshakes_sent += 1;
    }

    #[allow(clippy::too_many_arguments)]
    fn establish(
        &mut self,
        now: SimTime,
        peer: SocketAddr,
        peer_socket: u32,
        isn: SeqNo,
        start: SimTime,
        peer_ts: u32,
        recv_lat: u16,
        send_lat: u16,
        peer_flags: u32,
    ) {
        let isn_ext = u64::from(isn.value());
        self.isn = Some(isn);
        self.conn = Some(Conn {
            peer,
            peer_socket,
            start,
            recv_latency_us: u64::from(recv_lat) * 1000,
            send_latency_us: u64::from(send_lat) * 1000,
            peer_tlpktdrop: peer_flags & flags::TLPKTDROP != 0,
            next_seq: isn_ext,
            next_msgno: 1,
            snd_buf: VecDeque::new(),
            snd_ack: isn_ext,
            rexmit: BTreeSet::new(),
            last_data_sent: now,
            last_ack_progress: now,
            tsbpd_base: now.as_micros() as i64 - i64::from(peer_ts),
            last_ts_ext: u64::from(peer_ts),
            rcv_base: isn_ext,
            rcv_next: isn_ext,
            rcv_buf: BTreeMap::new(),
            loss: BTreeSet::new(),
            ack_no: 0,
            ack_history: VecDeque::new(),
            last_full_ack_seq: isn_ext,
            last_full_ack_at: now,
            ackacked_seq: isn_ext,
            since_light_ack: 0,
            next_ack_at: now + std::time::Duration::from_micros(ACK_PERIOD_US),
            next_nak_at: now,
            rtt_us: INITIAL_RTT_US,
            rtt_var_us: INITIAL_RTT_VAR_US,
            rtt_measured: false,
            last_sent: now,
            last_recv: now,
        });
        self.state = State::Connected;
        self.stats.send.ms_tsb_pd_delay = u64::from(send_lat);
        self.stats.recv.ms_tsb_pd_delay = u64::from(recv_lat);
        self.stats.connect_time_ms = Some((now - self.start_time()).as_millis() as u64);
        self.events.push_back(Event::Connected {
            recv_latency_ms: recv_lat,
            send_latency_ms: send_lat,
        });
    }

    // ---- connected ----

    fn ack_seq(c: &Conn) -> u64 {
        c.loss
            .first()
            .copied()
            .unwrap_or(c.rcv_next)
            .max(c.rcv_base)
    }

    fn nak_interval(c: &Conn) -> u64 {
        ((c.rtt_us + 4 * c.rtt_var_us) / 2).max(MIN_NAK_INTERVAL_US)
    }

    fn send_nak(&mut self, now: SimTime, ranges: Vec<LossRange>) {
        let Some(c) = &self.conn else { return };
        let (peer, dst, start) = (c.peer, c.peer_socket, c.start);
        self.push_control(now, peer, dst, start, 0, ControlBody::Nak(ranges));
        self.stats.control.naks_sent += 1;
    }

    fn loss_ranges(c: &Conn) -> Vec<LossRange> {
        let mut out: Vec<LossRange> = Vec::new();
        let mut words = 0;
        let mut cur: Option<(u64, u64)> = None;
        for &s in &c.loss {
            match cur {
                Some((a, b)) if s == b + 1 => cur = Some((a, s)),
                _ => {
                    if let Some((a, b)) = cur.take() {
                        words += if a == b { 1 } else { 2 };
                        out.push(LossRange {
                            first: SeqNo::from_extended(a),
                            last: SeqNo::from_extended(b),
                        });
                        if words + 2 > MAX_NAK_WORDS {
                            return out;
                        }
                    }
                    cur = Some((s, s));
                }
            }
        }
        if let Some((a, b)) = cur {
            out.push(LossRange {
                first: SeqNo::from_extended(a),
                last: SeqNo::from_extended(b),
            });
        }
        out
    }

    fn on_data(&mut self, now: SimTime, d: &DataPacket<'_>) {
        self.stats.recv.packets += 1;
        self.stats.recv.bytes += d.payload.len() as u64;
        if d.retransmitted {
            self.stats.recv.packets_retransmitted += 1;
        }
        if self.state != State::Connected {
            return;
        }
        let window = u64::from(self.cfg.flow_window);
        let Some(c) = self.conn.as_mut() else { return };
        let ext = d.seq.extend_near(c.rcv_next);
        if ext < c.rcv_base {
            self.stats.recv.packets_belated += 1;
            return;
        }
        if ext >= c.rcv_base + window {
            // Beyond the receive window: cannot be buffered.
            self.stats.recv.packets_belated += 1;
            return;
        }
        if c.rcv_buf.contains_key(&ext) {
            return;
        }
        let mut gap = None;
        if ext >= c.rcv_next {
            if ext > c.rcv_next {
                for s in c.rcv_next..ext {
                    c.loss.insert(s);
                }
                self.stats.recv.packets_lost += ext - c.rcv_next;
                gap = Some(LossRange {
                    first: SeqNo::from_extended(c.rcv_next),
                    last: SeqNo::from_extended(ext - 1),
                });
            }
            c.rcv_next = ext + 1;
        } else {
            c.loss.remove(&ext);
        }
        let ts_ext = unwrap_ts(d.timestamp, c.last_ts_ext);
        c.last_ts_ext = c.last_ts_ext.max(ts_ext);
        c.rcv_buf.insert(
            ext,
            Received {
                ts_ext,
                payload: d.payload.to_vec(),
            },
        );
        self.stats.recv.packets_unique += 1;
        c.since_light_ack += 1;
        let light = if c.since_light_ack >= LIGHT_ACK_PACKETS {
            c.since_light_ack = 0;
            Some(Self::ack_seq(c))
        } else {
            None
        };
        if let Some(g) = gap {
            // An immediate NAK on a gap (draft §4.8.2); the periodic one
            // follows an interval later.
            if let Some(c) = self.conn.as_mut() {
                c.next_nak_at = now + std::time::Duration::from_micros(Self::nak_interval(c));
            }
            self.send_nak(now, vec![g]);
        }
        if let Some(seq) = light {
            let Some(c) = &self.conn else { return };
            let (peer, dst, start) = (c.peer, c.peer_socket, c.start);
            self.push_control(
                now,
                peer,
                dst,
                start,
                0,
                ControlBody::Ack(Ack {
                    seq: SeqNo::from_extended(seq),
                    info: AckInfo::Light,
                }),
            );
            self.stats.control.light_acks_sent += 1;
        }
    }

    fn on_ack(&mut self, now: SimTime, number: u32, a: &Ack) {
        self.stats.control.acks_received += 1;
        let Some(c) = self.conn.as_mut() else { return };
        let ext = a.seq.extend_near(c.snd_ack);
        if ext > c.snd_ack && ext <= c.next_seq {
            while c.snd_ack < ext {
                c.snd_buf.pop_front();
                c.rexmit.remove(&c.snd_ack);
                c.snd_ack += 1;
            }
            c.last_ack_progress = now;
        }
        let full = match a.info {
            AckInfo::Full {
                rtt_us, rtt_var_us, ..
            }
            | AckInfo::Small {
                rtt_us, rtt_var_us, ..
            } => Some((rtt_us, rtt_var_us)),
            AckInfo::Light => None,
        };
        if let Some((rtt, var)) = full
            && number != 0
        {
            // The sender takes the receiver's estimate, smoothed; the
            // first measured one replaces the initial values (libsrt
            // `processCtrlAck`).
            if c.rtt_measured {
                c.rtt_us = (7 * c.rtt_us + u64::from(rtt)) / 8;
                c.rtt_var_us = (3 * c.rtt_var_us + u64::from(var)) / 4;
            } else if u64::from(rtt) != INITIAL_RTT_US {
                c.rtt_us = u64::from(rtt);
                c.rtt_var_us = u64::from(var);
                c.rtt_measured = true;
            }
            let (peer, dst, start) = (c.peer, c.peer_socket, c.start);
            self.push_control(
                now,
                peer,
                dst,
                start,
                number,
                ControlBody::AckAck { cif: vec![0; 4] },
            );
            self.stats.control.ackacks_sent += 1;
        }
    }

    fn on_ackack(&mut self, now: SimTime, number: u32) {
        self.stats.control.ackacks_received += 1;
        let Some(c) = self.conn.as_mut() else { return };
        let Some(&(_, sent_at)) = c.ack_history.iter().find(|(n, _)| *n == number) else {
            return;
        };
        // RTT smoothing (draft §4.10); the first sample replaces the
        // initial estimate (libsrt `processCtrlAckAck`: RTT = sample,
        // RTTVar = sample / 2).
        let sample = (now - sent_at).as_micros() as u64;
        if c.rtt_measured {
            c.rtt_var_us = (3 * c.rtt_var_us + c.rtt_us.abs_diff(sample)) / 4;
            c.rtt_us = (7 * c.rtt_us + sample) / 8;
        } else {
            c.rtt_us = sample;
            c.rtt_var_us = sample / 2;
            c.rtt_measured = true;
        }
        c.ackacked_seq = c.ackacked_seq.max(c.last_full_ack_seq);
    }

    fn on_nak(&mut self, list: &[LossRange]) {
        self.stats.control.naks_received += 1;
        let Some(c) = self.conn.as_mut() else { return };
        for r in list {
            let first = r.first.extend_near(c.snd_ack);
            let last = r.last.extend_near(first);
            if last < first
                || last >= c.next_seq
                || last + 1 - first > u64::from(self.cfg.flow_window)
            {
                self.stats.send.nak_entries_ignored += 1;
                continue;
            }
            self.stats.send.packets_lost += last + 1 - first;
            for s in first.max(c.snd_ack)..=last {
                c.rexmit.insert(s);
            }
            if first < c.snd_ack {
                self.stats.send.nak_entries_ignored += 1;
            }
        }
    }

    fn on_timers(&mut self, now: SimTime) {
        let idle_us = self.cfg.peer_idle_timeout_ms.saturating_mul(1000);
        let tlpktdrop = self.cfg.tlpktdrop;
        let drop_delay = self.cfg.snd_drop_delay_ms.saturating_mul(1000);
        let Some(c) = self.conn.as_mut() else { return };
        if (now - c.last_recv).as_micros() as u64 >= idle_us {
            self.fail(Failure::PeerIdleTimeout);
            return;
        }
        // TSBPD release and too-late drop (draft §4.5, §4.6).
        let mut dropped = 0u64;
        while let Some((&seq, p)) = c.rcv_buf.first_key_value() {
            let due = c.tsbpd_base + p.ts_ext as i64 + c.recv_latency_us as i64;
            if due > now.as_micros() as i64 {
                break;
            }
            if seq > c.rcv_base {
                if !tlpktdrop {
                    break;
                }
                dropped += seq - c.rcv_base;
                let gone: Vec<u64> = c.loss.range(..seq).copied().collect();
                for s in gone {
                    c.loss.remove(&s);
                }
            }
            let Some(p) = c.rcv_buf.remove(&seq) else {
                break;
            };
            c.rcv_base = seq + 1;
            self.released.push_back(Released {
                seq: SeqNo::from_extended(seq),
                due: SimTime::from_micros(due.max(0) as u64),
                timestamp: p.ts_ext as u32,
                payload: p.payload,
            });
            self.stats.recv.packets_released += 1;
        }
        if dropped > 0 {
            self.stats.recv.packets_dropped += dropped;
            self.events.push_back(Event::Dropped { count: dropped });
        }
        // Sender too-late drop (libsrt sndDropTooLate), only if the peer drops too.
        if c.peer_tlpktdrop {
            let threshold = (c.send_latency_us.saturating_add(drop_delay)).max(SND_DROP_MIN_US)
                + SND_DROP_EXTRA_US;
            while let Some(f) = c.snd_buf.front() {
                if ((now - f.origin).as_micros() as u64) < threshold {
                    break;
                }
                c.snd_buf.pop_front();
                c.rexmit.remove(&c.snd_ack);
                c.snd_ack += 1;
                self.stats.send.packets_dropped += 1;
            }
        }
        // Tail loss: nothing new sent and no ACK progress for an RTO
        // (SRTT + 4·RTTVar + 20 ms, libsrt's live-mode expression):
        // resend what is unacknowledged, since no later packet can reveal
        // the gap to the receiver.
        let rto = c.rtt_us + 4 * c.rtt_var_us + 20_000;
        if !c.snd_buf.is_empty()
            && c.rexmit.is_empty()
            && ((now - c.last_ack_progress).as_micros() as u64) >= rto
            && ((now - c.last_data_sent).as_micros() as u64) >= rto
        {
            for s in c.snd_ack..c.next_seq {
                c.rexmit.insert(s);
            }
            c.last_ack_progress = now;
        }
        // Full ACK every 10 ms when there is something new to acknowledge,
        // or again after 2·RTT while it is not confirmed by ACKACK.
        if now >= c.next_ack_at {
            c.next_ack_at = now + std::time::Duration::from_micros(ACK_PERIOD_US);
            let seq = Self::ack_seq(c);
            let unconfirmed = seq > c.ackacked_seq
                && (now - c.last_full_ack_at).as_micros() as u64 >= 2 * c.rtt_us;
            // Until an ACKACK measured the RTT, acknowledge every period
            // anyway: the periodic NAK interval depends on it, and the
            // initial 100 ms ± 50 ms would space NAKs beyond the latency.
            let probe = !c.rtt_measured && self.stats.recv.packets_unique > 0;
            if seq > c.last_full_ack_seq || unconfirmed || probe {
                c.ack_no = c.ack_no.wrapping_add(1).max(1);
                let number = c.ack_no;
                c.ack_history.push_back((number, now));
                if c.ack_history.len() > ACK_HISTORY {
                    c.ack_history.pop_front();
                }
                c.last_full_ack_seq = seq;
                c.last_full_ack_at = now;
                c.since_light_ack = 0;
                let avail =
                    (u64::from(self.cfg.flow_window)).saturating_sub(c.rcv_buf.len() as u64);
                let info = AckInfo::Full {
                    rtt_us: c.rtt_us as u32,
                    rtt_var_us: c.rtt_var_us as u32,
                    avail_buf: avail as u32,
                    packet_rate: 0,
                    capacity: 0,
                    byte_rate: Some(0),
                };
                let (peer, dst, start) = (c.peer, c.peer_socket, c.start);
                self.push_control(
                    now,
                    peer,
                    dst,
                    start,
                    number,
                    ControlBody::Ack(Ack {
                        seq: SeqNo::from_extended(seq),
                        info,
                    }),
                );
                self.stats.control.acks_sent += 1;
            }
        }
        let Some(c) = self.conn.as_mut() else { return };
        // Periodic NAK (draft §4.8.2).
        if !c.loss.is_empty() && now >= c.next_nak_at {
            c.next_nak_at = now + std::time::Duration::from_micros(Self::nak_interval(c));
            let ranges = Self::loss_ranges(c);
            self.send_nak(now, ranges);
        }
        let Some(c) = self.conn.as_mut() else { return };
        // KEEPALIVE after 1 s without sending.
        if (now - c.last_sent).as_micros() as u64 >= KEEPALIVE_US {
            let (peer, dst, start) = (c.peer, c.peer_socket, c.start);
            self.push_control(
                now,
                peer,
                dst,
                start,
                0,
                ControlBody::KeepAlive { cif: vec![0; 4] },
            );
            self.stats.control.keepalives_sent += 1;
        }
    }

    fn next_retransmission(&mut self, now: SimTime) -> Option<(SocketAddr, Vec<u8>)> {
        let c = self.conn.as_mut()?;
        let (seq, p) = loop {
            let seq = c.rexmit.pop_first()?;
            let Some(idx) = seq.checked_sub(c.snd_ack) else {
                continue;
            };
            if let Some(p) = usize::try_from(idx).ok().and_then(|i| c.snd_buf.get(i)) {
                break (seq, p);
            }
        };
        let bytes = Packet::Data(DataPacket {
            seq: SeqNo::from_extended(seq),
            position: Position::Solo,
            in_order: false,
            key: 0,
            retransmitted: true,
            msgno: p.msgno,
            timestamp: p.timestamp,
            dst_socket: c.peer_socket,
            payload: &p.payload,
        })
        .to_bytes();
        self.stats.send.packets += 1;
        self.stats.send.packets_retransmitted += 1;
        self.stats.send.bytes += p.payload.len() as u64;
        c.last_sent = now;
        Some((c.peer, bytes))
    }
}

impl Machine for Endpoint {
    type Event = Event;

    fn handle_datagram(&mut self, now: SimTime, from: SocketAddr, datagram: &[u8]) {
        let Ok(p) = wire::parse(datagram) else {
            self.stats.control.malformed_received += 1;
            return;
        };
        if matches!(self.state, State::Closed | State::Failed) {
            return;
        }
        // Listener before any connection: only handshakes matter.
        let from_peer = self.conn.as_ref().is_some_and(|c| c.peer == from);
        if let Some(c) = self.conn.as_mut()
            && from_peer
        {
            c.last_recv = now;
        }
        match p {
            Packet::Data(d) => {
                let peer_known = match &self.role {
                    Role::Caller { peer, .. } => *peer == from,
                    Role::Listener { .. } => from_peer,
                };
                if !peer_known || d.dst_socket != self.socket_id {
                    self.stats.control.foreign_received += 1;
                    return;
                }
                match self.state {
                    State::Connected => self.on_data(now, &d),
                    // Counted, not processed (a caller still connecting).
                    State::Induction | State::Conclusion => self.stats.recv.packets += 1,
                    // After the peer's SHUTDOWN nothing new is taken.
                    _ => {}
                }
            }
            Packet::Control(c) => {
                if let ControlBody::Handshake(h) = &c.body {
                    self.stats.control.handshakes_received += 1;
                    match self.role {
                        Role::Caller { .. } => self.caller_handshake(now, from, &c, h),
                        Role::Listener { .. } => self.listener_handshake(now, from, &c, h),
                    }
                    return;
                }
                if !from_peer || c.dst_socket != self.socket_id {
                    self.stats.control.foreign_received += 1;
                    return;
                }
                match &c.body {
                    ControlBody::Ack(a) => self.on_ack(now, c.info, a),
                    ControlBody::AckAck { .. } => self.on_ackack(now, c.info),
                    ControlBody::Nak(list) => self.on_nak(list),
                    ControlBody::Shutdown { .. } => {
                        self.stats.control.shutdowns_received += 1;
                        if self.state == State::Connected {
                            self.state = if self.receive_buffer_empty() {
                                State::Closed
                            } else {
                                State::Draining
                            };
                            self.events.push_back(Event::PeerShutdown);
                        }
                    }
                    ControlBody::DropReq { first, last } => {
                        // The sender gave these up: stop asking for them.
                        if let Some(cn) = self.conn.as_mut() {
                            let a = first.extend_near(cn.rcv_next);
                            let b = last.extend_near(a);
                            let gone: Vec<u64> = cn.loss.range(a..=b).copied().collect();
                            for s in gone {
                                cn.loss.remove(&s);
                            }
                        }
                    }
                    _ => {}
                }
            }
        }
    }

    fn handle_timeout(&mut self, now: SimTime) {
        if self.started.is_none() {
            self.started = Some(now);
            if matches!(self.role, Role::Caller { .. }) {
                self.next_hs_at = now;
            }
        }
        match self.state {
            State::Induction | State::Conclusion => {
                let limit = self.start_time()
                    + std::time::Duration::from_millis(self.cfg.connect_timeout_ms);
                if now >= limit {
                    self.fail(Failure::ConnectTimeout);
                } else if now >= self.next_hs_at {
                    self.caller_send_request(now);
                }
            }
            State::Connected => self.on_timers(now),
            State::Draining => {
                self.on_timers(now);
                if self.state == State::Draining && self.receive_buffer_empty() {
                    self.state = State::Closed;
                }
            }
            _ => {}
        }
    }

    fn poll_transmit(&mut self, now: SimTime, buf: &mut [u8]) -> Option<Transmit> {
        let (to, bytes) = match self.out.pop_front() {
            Some(x) => x,
            None => self.next_retransmission(now)?,
        };
        let len = bytes.len().min(buf.len());
        buf[..len].copy_from_slice(&bytes[..len]);
        Some(Transmit {
            destination: to,
            len,
        })
    }

    fn poll_timeout(&self) -> Option<SimTime> {
        match self.state {
            State::Induction | State::Conclusion => {
                let Some(start) = self.started else {
                    return Some(SimTime::ZERO);
                };
                let limit = start + std::time::Duration::from_millis(self.cfg.connect_timeout_ms);
                Some(self.next_hs_at.min(limit))
            }
            State::Listening => self.started.is_none().then_some(SimTime::ZERO),
            State::Connected | State::Draining => {
                let c = self.conn.as_ref()?;
                let mut t = c.next_ack_at;
                t = t.min(
                    c.last_recv + std::time::Duration::from_millis(self.cfg.peer_idle_timeout_ms),
                );
                t = t.min(c.last_sent + std::time::Duration::from_micros(KEEPALIVE_US));
                if !c.loss.is_empty() {
                    t = t.min(c.next_nak_at);
                }
                // Without too-late drop a packet behind a gap waits for the
                // gap to fill (a datagram moves it, not a timer): its play
                // time, once past, would wake the receiver at that same past
                // time forever.
                if let Some((&seq, p)) = c.rcv_buf.first_key_value()
                    && (seq == c.rcv_base || self.cfg.tlpktdrop)
                {
                    let due = c.tsbpd_base + p.ts_ext as i64 + c.recv_latency_us as i64;
                    t = t.min(SimTime::from_micros(due.max(0) as u64));
                }
                if let Some(f) = c.snd_buf.front() {
                    if c.peer_tlpktdrop {
                        // The threshold `on_timers` drops at, or the same
                        // past wake-up repeats.
                        let drop_delay = self.cfg.snd_drop_delay_ms.saturating_mul(1000);
                        let th = c
                            .send_latency_us
                            .saturating_add(drop_delay)
                            .max(SND_DROP_MIN_US)
                            + SND_DROP_EXTRA_US;
                        t = t.min(f.origin + std::time::Duration::from_micros(th));
                    }
                    let rto = c.rtt_us + 4 * c.rtt_var_us + 20_000;
                    let at = c.last_ack_progress.max(c.last_data_sent)
                        + std::time::Duration::from_micros(rto);
                    t = t.min(at);
                }
                Some(t)
            }
            State::Closed | State::Failed => None,
        }
    }

    fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    fn is_finished(&self) -> bool {
        matches!(self.state, State::Closed | State::Failed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_unwrap_across_laps() {
        assert_eq!(unwrap_ts(5, 10), 5);
        assert_eq!(unwrap_ts(3, u64::from(u32::MAX) - 2), (1 << 32) + 3);
        assert_eq!(
            unwrap_ts(u32::MAX - 1, (1 << 32) + 3),
            u64::from(u32::MAX) - 1
        );
        assert_eq!(unwrap_ts(7, (5 << 32) + 100), (5 << 32) + 7);
    }
}
