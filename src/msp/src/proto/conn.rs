//! One connection's state: transmit queue, receive buffer, timers.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;

use streamlab_core::time::SimTime;

use super::{
    CONNECT_KICK, CloseResult, Event, KEEPALIVE, LINGER, RETRANSMIT, RX_AHEAD, SendError, Stats,
    TIMEOUT, TX_LIMIT, WINDOW,
};
use crate::wire::{FLAG_ACK, FLAG_FIRST, FLAG_SHUTDOWN, Packet, seq_cmp};

/// Where a connection is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnState {
    /// Exchanging data (either half may be shut down).
    Open,
    /// Closed cleanly; answering the peer's retransmissions with the final
    /// ACK until it falls silent for `LINGER`.
    Lingering,
    /// Stopped locally; the STOP is about to go out.
    Stopping,
    /// Ended; about to be forgotten.
    Gone,
}

#[derive(Debug)]
struct TxPacket {
    seq: u16,
    shutdown: bool,
    payload: Vec<u8>,
    sent: Option<SimTime>,
}

#[derive(Debug)]
struct RxPacket {
    flags: u8,
    payload: Vec<u8>,
}

#[derive(Debug)]
pub(super) struct Connection {
    peer: SocketAddr,
    state: ConnState,
    tx: VecDeque<TxPacket>,
    /// The sequence number of the next packet queued.
    tx_seq: u16,
    rx: BTreeMap<u16, RxPacket>,
    /// The next sequence number to consume.
    rx_next: u16,
    received_data: bool,
    received_packet: bool,
    shutdown_local: bool,
    /// Shut down while the queue was full: the SHUTDOWN packet waits for room.
    shutdown_pending: bool,
    shutdown_remote: bool,
    /// The ack value last sent.
    previous_ack: Option<u16>,
    /// When an ACK-only packet is due.
    next_ack: Option<SimTime>,
    /// When the connection times out (open) or stops lingering.
    deadline: SimTime,
    /// A send was refused: report Writable once one would be accepted.
    blocked: bool,
}

impl Connection {
    pub(super) fn new(peer: SocketAddr, now: SimTime) -> Self {
        Connection {
            peer,
            state: ConnState::Open,
            tx: VecDeque::new(),
            tx_seq: 0,
            rx: BTreeMap::new(),
            rx_next: 0,
            received_data: false,
            received_packet: false,
            shutdown_local: false,
            shutdown_pending: false,
            shutdown_remote: false,
            previous_ack: None,
            next_ack: None,
            deadline: now.saturating_add(TIMEOUT),
            blocked: false,
        }
    }

    pub(super) fn state(&self) -> ConnState {
        self.state
    }

    /// The caller's first packet goes out soon even without data.
    pub(super) fn kick(&mut self, now: SimTime) {
        self.next_ack = Some(now.saturating_add(CONNECT_KICK));
    }

    fn ack_value(&self) -> u16 {
        self.rx_next.wrapping_sub(1)
    }

    pub(super) fn writable(&self) -> bool {
        self.state == ConnState::Open && !self.shutdown_local && self.tx.len() <= WINDOW
    }

    pub(super) fn send(&mut self, message: &[u8]) -> Result<(), SendError> {
        if self.shutdown_local {
            return Err(SendError::ShutDown);
        }
        // serval-dna refuses only when the queue holds more than the window.
        if self.tx.len() > WINDOW {
            self.blocked = true;
            return Err(SendError::WouldBlock);
        }
        self.push(message.to_vec(), false);
        Ok(())
    }

    fn push(&mut self, payload: Vec<u8>, shutdown: bool) {
        self.tx.push_back(TxPacket {
            seq: self.tx_seq,
            shutdown,
            payload,
            sent: None,
        });
        self.tx_seq = self.tx_seq.wrapping_add(1);
    }

    pub(super) fn shutdown(&mut self) {
        if self.state != ConnState::Open || self.shutdown_local {
            return;
        }
        self.shutdown_local = true;
        let room = self.tx.len() < TX_LIMIT;
        match self.tx.back_mut() {
            Some(last) if last.sent.is_none() => last.shutdown = true,
            _ if room => self.push(Vec::new(), true),
            _ => self.shutdown_pending = true,
        }
    }

    /// Returns whether the connection was open (and now stops).
    pub(super) fn stop(&mut self) -> bool {
        if self.state != ConnState::Open {
            return false;
        }
        self.state = ConnState::Stopping;
        self.tx.clear();
        self.rx.clear();
        true
    }

    pub(super) fn on_packet(
        &mut self,
        now: SimTime,
        packet: &Packet<'_>,
        stats: &mut Stats,
        events: &mut VecDeque<Event>,
    ) {
        match self.state {
            ConnState::Stopping | ConnState::Gone => return,
            ConnState::Lingering => {
                match packet {
                    Packet::Stop { .. } => self.state = ConnState::Gone,
                    Packet::Data { .. } => {
                        // A retransmission: our final ACK was lost.
                        stats.duplicates_received += 1;
                        self.next_ack = Some(now);
                        self.deadline = now.saturating_add(LINGER);
                    }
                    Packet::Ack { .. } => self.deadline = now.saturating_add(LINGER),
                }
                return;
            }
            ConnState::Open => {}
        }
        if let Packet::Stop { .. } = packet {
            self.tx.clear();
            self.rx.clear();
            self.state = ConnState::Gone;
            stats.connections_failed += 1;
            events.push_back(Event::Closed {
                peer: self.peer,
                result: CloseResult::Stopped,
            });
            return;
        }
        self.received_packet = true;
        self.deadline = now.saturating_add(TIMEOUT);
        if packet.flags() & FLAG_ACK != 0
            && let Some(ack) = packet.ack_seq()
        {
            self.on_ack(ack, stats, events);
        }
        if let Packet::Data {
            flags,
            seq,
            payload,
            ..
        } = packet
        {
            self.on_data(now, *flags, *seq, payload, stats);
            self.consume(stats, events);
        }
        self.check_close(now, stats, events);
    }

    fn on_ack(&mut self, ack: u16, stats: &mut Stats, events: &mut VecDeque<Event>) {
        let Some(last_sent) = self
            .tx
            .iter()
            .rev()
            .find(|p| p.sent.is_some())
            .map(|p| p.seq)
        else {
            return;
        };
        if seq_cmp(ack, last_sent) > 0 {
            // Acknowledges a packet never sent: corrupt or forged.
            stats.invalid_acks += 1;
            return;
        }
        while self.tx.front().is_some_and(|p| seq_cmp(p.seq, ack) <= 0) {
            self.tx.pop_front();
        }
        if self.shutdown_pending && self.tx.len() < TX_LIMIT {
            self.shutdown_pending = false;
            self.push(Vec::new(), true);
        }
        if self.blocked && self.tx.len() <= WINDOW {
            self.blocked = false;
            if !self.shutdown_local {
                events.push_back(Event::Writable { peer: self.peer });
            }
        }
    }

    fn on_data(&mut self, now: SimTime, flags: u8, seq: u16, payload: &[u8], stats: &mut Stats) {
        self.received_data = true;
        let ahead = seq_cmp(seq, self.rx_next);
        if ahead < 0 || self.rx.contains_key(&seq) {
            // Already consumed or buffered: our ACK may have been lost.
            stats.duplicates_received += 1;
            self.next_ack = Some(now);
            return;
        }
        if ahead >= RX_AHEAD as i16 || self.shutdown_remote {
            stats.out_of_window_received += 1;
            return;
        }
        self.rx.insert(
            seq,
            RxPacket {
                flags,
                payload: payload.to_vec(),
            },
        );
        self.next_ack = Some(now);
    }

    fn consume(&mut self, stats: &mut Stats, events: &mut VecDeque<Event>) {
        while let Some(p) = self.rx.remove(&self.rx_next) {
            self.rx_next = self.rx_next.wrapping_add(1);
            if !p.payload.is_empty() {
                stats.messages_delivered += 1;
                stats.bytes_delivered += p.payload.len() as u64;
                events.push_back(Event::Message {
                    peer: self.peer,
                    data: p.payload,
                });
            }
            if p.flags & FLAG_SHUTDOWN != 0 {
                self.shutdown_remote = true;
                self.rx.clear();
                events.push_back(Event::RemoteShutdown { peer: self.peer });
                break;
            }
        }
    }

    fn check_close(&mut self, now: SimTime, stats: &mut Stats, events: &mut VecDeque<Event>) {
        if self.state == ConnState::Open
            && self.shutdown_local
            && !self.shutdown_pending
            && self.shutdown_remote
            && self.tx.is_empty()
            && self.rx.is_empty()
            && self.previous_ack == Some(self.ack_value())
        {
            self.state = ConnState::Lingering;
            self.deadline = now.saturating_add(LINGER);
            self.next_ack = None;
            stats.connections_closed += 1;
            events.push_back(Event::Closed {
                peer: self.peer,
                result: CloseResult::Closed,
            });
        }
    }

    pub(super) fn on_timeout(
        &mut self,
        now: SimTime,
        stats: &mut Stats,
        events: &mut VecDeque<Event>,
    ) {
        if now < self.deadline {
            return;
        }
        match self.state {
            ConnState::Open => {
                self.state = ConnState::Gone;
                self.tx.clear();
                self.rx.clear();
                stats.connections_failed += 1;
                events.push_back(Event::Closed {
                    peer: self.peer,
                    result: CloseResult::Timeout,
                });
            }
            ConnState::Lingering => self.state = ConnState::Gone,
            ConnState::Stopping | ConnState::Gone => {}
        }
    }

    fn flags(&self) -> u8 {
        let mut f = 0;
        if !self.received_packet {
            f |= FLAG_FIRST;
        }
        if self.received_data {
            f |= FLAG_ACK;
        }
        f
    }

    pub(super) fn poll_transmit(
        &mut self,
        now: SimTime,
        buf: &mut [u8],
        stats: &mut Stats,
        events: &mut VecDeque<Event>,
    ) -> Option<usize> {
        match self.state {
            ConnState::Gone => return None,
            ConnState::Stopping => {
                self.state = ConnState::Gone;
                stats.stops_sent += 1;
                return Packet::STOP.emit(buf).ok();
            }
            ConnState::Lingering | ConnState::Open => {}
        }
        let ack_seq = self.ack_value();
        let flags = self.flags();
        let due = self
            .tx
            .iter_mut()
            .find(|p| p.sent.is_none_or(|s| now >= s.saturating_add(RETRANSMIT)));
        let len = if let Some(p) = due {
            let shutdown = if p.shutdown { FLAG_SHUTDOWN } else { 0 };
            let len = Packet::Data {
                flags: flags | shutdown,
                ack_seq,
                seq: p.seq,
                payload: &p.payload,
            }
            .emit(buf)
            .ok()?;
            if p.sent.is_some() {
                stats.retransmissions += 1;
            }
            p.sent = Some(now);
            stats.data_packets_sent += 1;
            len
        } else if self.next_ack.is_some_and(|t| now >= t) {
            let len = Packet::Ack { flags, ack_seq }.emit(buf).ok()?;
            stats.acks_sent += 1;
            len
        } else {
            return None;
        };
        self.previous_ack = Some(ack_seq);
        self.next_ack = match self.state {
            ConnState::Open => Some(now.saturating_add(KEEPALIVE)),
            _ => None,
        };
        self.check_close(now, stats, events);
        Some(len)
    }

    pub(super) fn next_timer(&self) -> Option<SimTime> {
        match self.state {
            ConnState::Stopping => Some(SimTime::ZERO),
            ConnState::Gone => None,
            ConnState::Lingering => Some(
                self.next_ack
                    .map_or(self.deadline, |a| a.min(self.deadline)),
            ),
            ConnState::Open => {
                let retransmit = self
                    .tx
                    .iter()
                    .map(|p| {
                        p.sent
                            .map_or(SimTime::ZERO, |s| s.saturating_add(RETRANSMIT))
                    })
                    .min();
                [Some(self.deadline), self.next_ack, retransmit]
                    .into_iter()
                    .flatten()
                    .min()
            }
        }
    }
}
