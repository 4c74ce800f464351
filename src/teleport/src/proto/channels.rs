//! The data channels of one session, one side: sequence numbers per
//! channel, and on the reliable channels (80, 100) acks, in-order delivery
//! and resends after [`RTO`]. Memory is bounded: at most [`MAX_UNACKED`]
//! packets in flight, [`MAX_OUT_OF_ORDER`] held per channel.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use streamlab_core::time::SimTime;

use crate::wire::{self, ChannelPacket, FLAG_ACK, FLAG_FROM_SERVER, FLAG_OPEN, channel};

/// Resend interval of an unacknowledged reliable packet.
pub const RTO: Duration = Duration::from_millis(200);
/// Most unacknowledged reliable packets (later sends wait in the queue).
pub const MAX_UNACKED: usize = 64;
/// Most packets waiting to be sent on the reliable channels.
pub const MAX_QUEUED: usize = 256;
/// Most out-of-order packets held per reliable channel.
pub const MAX_OUT_OF_ORDER: usize = 64;

/// The channel state of one side of a session.
#[derive(Debug)]
pub struct Channels {
    from_server: bool,
    next_seq: BTreeMap<u8, u32>,
    unacked: BTreeMap<(u8, u32), (Vec<u8>, SimTime)>,
    queued: VecDeque<(u8, Vec<u8>)>,
    recv_next: BTreeMap<u8, u32>,
    held: BTreeMap<(u8, u32), Vec<u8>>,
    out: VecDeque<Vec<u8>>,
    /// Packets sent per channel (first sends and resends).
    pub packets_sent: BTreeMap<u8, u64>,
    /// Bytes sent per channel.
    pub bytes_sent: BTreeMap<u8, u64>,
    /// Bytes received per channel.
    pub bytes_received: BTreeMap<u8, u64>,
    /// Reliable resends.
    pub resends: u64,
    /// Packets the parser refused.
    pub malformed: u64,
}

/// What a received datagram meant for the session.
#[derive(Debug, PartialEq, Eq)]
pub enum Received {
    /// The channel-open request (server side).
    Open,
    /// The answer to our open request (client side).
    OpenAck,
    /// Payloads delivered, in order, on `channel`.
    Data {
        /// The channel.
        channel: u8,
        /// The payloads.
        payloads: Vec<Vec<u8>>,
    },
    /// An ack or a duplicate: nothing for the application.
    Nothing,
    /// Unreadable.
    Malformed,
}

impl Channels {
    /// Channels of the server's side (`from_server`) or the client's.
    pub fn new(from_server: bool) -> Self {
        Channels {
            from_server,
            next_seq: BTreeMap::new(),
            unacked: BTreeMap::new(),
            queued: VecDeque::new(),
            recv_next: BTreeMap::new(),
            held: BTreeMap::new(),
            out: VecDeque::new(),
            packets_sent: BTreeMap::new(),
            bytes_sent: BTreeMap::new(),
            bytes_received: BTreeMap::new(),
            resends: 0,
            malformed: 0,
        }
    }

    fn flags(&self, extra: u8) -> u8 {
        extra
            | if self.from_server {
                FLAG_FROM_SERVER
            } else {
                0
            }
    }

    fn emit(&mut self, channel: u8, flags: u8, seq: u32, payload: &[u8]) {
        let p = ChannelPacket {
            channel,
            flags: self.flags(flags),
            seq,
            payload,
        };
        let v = p.to_vec();
        *self.packets_sent.entry(channel).or_default() += 1;
        *self.bytes_sent.entry(channel).or_default() += v.len() as u64;
        self.out.push_back(v);
    }

    /// Send the channel-open request (or its answer) on channel 100. The
    /// request carries the sender's clock (`now`, µs since it started, u64
    /// LE) as its payload, as the reference's messages carry
    /// `timestamp_session_us`; the answer is empty.
    pub fn send_open(&mut self, ack: bool, now: SimTime) {
        let f = FLAG_OPEN | if ack { FLAG_ACK } else { 0 };
        if ack {
            self.emit(channel::RELIABLE, f, 0, &[]);
        } else {
            self.emit(channel::RELIABLE, f, 0, &now.as_micros().to_le_bytes());
        }
    }

    /// Send `payload` on `channel` (reliable channels queue it when the
    /// window is full; a full queue drops it and says so).
    pub fn send(&mut self, now: SimTime, channel: u8, payload: &[u8]) -> bool {
        let payload = &payload[..payload.len().min(wire::MAX_CHANNEL_PAYLOAD)];
        if channel::is_reliable(channel) {
            if self.unacked.len() >= MAX_UNACKED {
                if self.queued.len() >= MAX_QUEUED {
                    return false;
                }
                self.queued.push_back((channel, payload.to_vec()));
                return true;
            }
            let seq = self.take_seq(channel);
            self.unacked.insert((channel, seq), (payload.to_vec(), now));
            self.emit(channel, 0, seq, payload);
        } else {
            let seq = self.take_seq(channel);
            self.emit(channel, 0, seq, payload);
        }
        true
    }

    fn take_seq(&mut self, channel: u8) -> u32 {
        let s = self.next_seq.entry(channel).or_default();
        let seq = *s;
        *s = s.wrapping_add(1);
        seq
    }

    /// Read a datagram from the peer.
    pub fn receive(&mut self, now: SimTime, data: &[u8]) -> Received {
        let Ok(p) = ChannelPacket::parse(data) else {
            self.malformed += 1;
            return Received::Malformed;
        };
        // Our own direction coming back is not the peer's.
        if (p.flags & FLAG_FROM_SERVER != 0) == self.from_server {
            self.malformed += 1;
            return Received::Malformed;
        }
        *self.bytes_received.entry(p.channel).or_default() += data.len() as u64;
        if p.flags & FLAG_OPEN != 0 {
            return if p.flags & FLAG_ACK != 0 {
                Received::OpenAck
            } else {
                Received::Open
            };
        }
        if p.flags & FLAG_ACK != 0 {
            if self.unacked.remove(&(p.channel, p.seq)).is_some() {
                self.refill(now);
            }
            return Received::Nothing;
        }
        if !channel::is_reliable(p.channel) {
            return Received::Data {
                channel: p.channel,
                payloads: vec![p.payload.to_vec()],
            };
        }
        self.emit(p.channel, FLAG_ACK, p.seq, &[]);
        let next = self.recv_next.entry(p.channel).or_default();
        let ahead = p.seq.wrapping_sub(*next);
        if ahead >= 1 << 31 {
            return Received::Nothing; // a duplicate of something delivered
        }
        if ahead > 0 {
            let held_here = self
                .held
                .range((p.channel, 0)..=(p.channel, u32::MAX))
                .count();
            if held_here < MAX_OUT_OF_ORDER {
                self.held.insert((p.channel, p.seq), p.payload.to_vec());
            }
            return Received::Nothing;
        }
        let mut payloads = vec![p.payload.to_vec()];
        *next = next.wrapping_add(1);
        let mut n = *next;
        while let Some(b) = self.held.remove(&(p.channel, n)) {
            payloads.push(b);
            n = n.wrapping_add(1);
        }
        self.recv_next.insert(p.channel, n);
        Received::Data {
            channel: p.channel,
            payloads,
        }
    }

    fn refill(&mut self, now: SimTime) {
        while self.unacked.len() < MAX_UNACKED {
            let Some((c, b)) = self.queued.pop_front() else {
                break;
            };
            self.send(now, c, &b);
        }
    }

    /// Resend what is due.
    pub fn on_timeout(&mut self, now: SimTime) {
        let due: Vec<(u8, u32)> = self
            .unacked
            .iter()
            .filter(|(_, (_, t))| *t + RTO <= now)
            .map(|(k, _)| *k)
            .collect();
        for (c, s) in due {
            if let Some((b, t)) = self.unacked.get_mut(&(c, s)) {
                *t = now;
                let b = b.clone();
                self.resends += 1;
                self.emit(c, 0, s, &b);
            }
        }
    }

    /// When a resend is next due.
    pub fn next_timeout(&self) -> Option<SimTime> {
        self.unacked.values().map(|(_, t)| *t + RTO).min()
    }

    /// Whether reliable packets are still unacknowledged.
    pub fn has_unacked(&self) -> bool {
        !self.unacked.is_empty() || !self.queued.is_empty()
    }

    /// The next datagram to send.
    pub fn poll(&mut self) -> Option<Vec<u8>> {
        self.out.pop_front()
    }

    /// A new session: sequence numbers start again; counters stay.
    pub fn reset(&mut self) {
        self.stop();
        self.next_seq.clear();
        self.recv_next.clear();
    }

    /// Forget everything unsent and unacknowledged (the session ended).
    pub fn stop(&mut self) {
        self.out.clear();
        self.unacked.clear();
        self.queued.clear();
        self.held.clear();
    }

    /// Per-channel byte counters as JSON, by channel name.
    pub fn bytes_json(map: &BTreeMap<u8, u64>) -> serde_json::Value {
        let mut m = serde_json::Map::new();
        for id in channel::ALL {
            m.insert(
                channel::name(id).into(),
                map.get(&id).copied().unwrap_or(0).into(),
            );
        }
        serde_json::Value::Object(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reliable_packets_are_acked_resent_and_delivered_in_order() {
        let t0 = SimTime::ZERO;
        let mut s = Channels::new(true);
        let mut c = Channels::new(false);
        s.send(t0, channel::GEOMETRY, b"a");
        s.send(t0, channel::GEOMETRY, b"b");
        let a = s.poll().unwrap();
        let b = s.poll().unwrap();
        // `a` is lost; `b` is held until `a` arrives.
        assert_eq!(c.receive(t0, &b), Received::Nothing);
        let ack_b = c.poll().unwrap();
        assert_eq!(s.receive(t0, &ack_b), Received::Nothing);
        assert_eq!(s.next_timeout(), Some(t0 + RTO));
        s.on_timeout(t0 + RTO);
        let a2 = s.poll().unwrap();
        assert_eq!(a2, a, "the resend is the same packet");
        assert_eq!(s.resends, 1);
        assert_eq!(
            c.receive(t0, &a2),
            Received::Data {
                channel: channel::GEOMETRY,
                payloads: vec![b"a".to_vec(), b"b".to_vec()]
            }
        );
        assert_eq!(c.receive(t0, &a2), Received::Nothing, "a duplicate");
        while let Some(ack) = c.poll() {
            s.receive(t0, &ack);
        }
        assert!(!s.has_unacked());
        assert_eq!(s.next_timeout(), None);
    }

    #[test]
    fn unreliable_packets_are_not_acked() {
        let mut s = Channels::new(true);
        let mut c = Channels::new(false);
        s.send(SimTime::ZERO, channel::VIDEO, b"v");
        let v = s.poll().unwrap();
        assert!(matches!(
            c.receive(SimTime::ZERO, &v),
            Received::Data { .. }
        ));
        assert!(c.poll().is_none());
        assert_eq!(s.next_timeout(), None);
        assert_eq!(c.receive(SimTime::ZERO, &[1, 2]), Received::Malformed);
        assert_eq!(
            s.receive(SimTime::ZERO, &v),
            Received::Malformed,
            "own direction"
        );
    }
}
