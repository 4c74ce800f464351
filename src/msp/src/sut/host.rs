//! The host machine a scenario's MSP host runs: one endpoint on one socket,
//! with the seeded application workload on every connection and a checking
//! sink for what arrives (`docs/msp.md` §9).

use std::collections::{BTreeMap, VecDeque};
use std::io;
use std::net::{IpAddr, SocketAddr};

use serde::Serialize;
use streamlab_core::host::{HostMachine, HostReport, Input, Outcome, Output};
use streamlab_core::machine::Machine;
use streamlab_core::time::SimTime;

use crate::app::{End, MessageGen, Pattern, Sink, Workload};
use crate::proto::{CloseResult, Endpoint, Event, SendError, Stats};

/// Connection records a report keeps (the oldest are dropped beyond it).
pub const MAX_RECORDS: usize = 256;

/// A waited-for listener holding no connection gives up waiting for the
/// rest of its expected connections after this long without a packet (or
/// a connection ending), counted from its callers' latest start: a caller
/// that never got through has timed out long before.
pub const LISTENER_IDLE: std::time::Duration = std::time::Duration::from_secs(20);

/// What the host knows about a peer host: its name and workload.
#[derive(Clone, Debug)]
pub(crate) struct PeerInfo {
    pub(crate) name: String,
    pub(crate) workload: Workload,
}

/// One connection, as a report shows it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct ConnRecord {
    /// The peer's address.
    pub peer: String,
    /// The peer host's name (`?` when the address is no scenario host).
    pub peer_host: String,
    /// When the connection opened, ms.
    pub opened_at_ms: u64,
    /// When it ended, ms (absent while open).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub closed_at_ms: Option<u64>,
    /// How it ended (`closed`, `timeout`, `stopped`, `stopped_locally`;
    /// absent while open).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<String>,
    /// Messages the application queued.
    pub messages_sent: u64,
    /// Whether this side shut down its sending half.
    pub shutdown_sent: bool,
    /// Whether the peer's SHUTDOWN arrived in order.
    pub remote_shutdown: bool,
    /// Messages delivered.
    pub messages_delivered: u64,
    /// Their bytes.
    pub bytes_delivered: u64,
    /// SHA-256 over every delivered message (length u32 LE, bytes), hex.
    pub delivered_digest: String,
    /// The sink's first complaint, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_mismatch: Option<String>,
}

/// The application on one connection.
#[derive(Debug)]
struct ConnApp {
    source: MessageGen,
    workload: Workload,
    pending: Option<Vec<u8>>,
    next_at: SimTime,
    /// Set while a paced message waits for its time.
    timer: Option<SimTime>,
    ended: bool,
    remote_shutdown: bool,
    sink: Sink,
    record: ConnRecord,
}

impl ConnApp {
    fn finish_record(&mut self) -> ConnRecord {
        let mut r = self.record.clone();
        r.remote_shutdown = self.remote_shutdown;
        r.messages_delivered = self.sink.delivered();
        r.bytes_delivered = self.sink.bytes();
        r.delivered_digest = self.sink.digest();
        r.first_mismatch = self.sink.first_mismatch().map(str::to_string);
        r
    }
}

/// Which side a host is.
#[derive(Clone, Debug)]
pub(crate) enum Side {
    /// One connection to `remote`.
    Caller { remote: SocketAddr, peer: PeerInfo },
    /// Connections from callers, by IP; the run waits for `expect`
    /// connections to end (0: not waited for).
    Listener {
        peers: BTreeMap<IpAddr, PeerInfo>,
        expect: u32,
        /// Its callers' latest start (idle time counts from then).
        idle_from: SimTime,
    },
}

/// The MSP host machine.
#[derive(Debug)]
pub struct MspHost {
    ep: Endpoint,
    side: Side,
    port: u16,
    bound: Option<SocketAddr>,
    bind_error: Option<io::ErrorKind>,
    bind_asked: bool,
    seed: u64,
    me: String,
    workload: Workload,
    apps: BTreeMap<SocketAddr, ConnApp>,
    records: VecDeque<ConnRecord>,
    ended: u64,
    caller_started: bool,
    notes: VecDeque<String>,
    /// The latest time any call brought.
    last_now: SimTime,
    /// The last datagram or connection end.
    last_activity: SimTime,
}

impl MspHost {
    pub(crate) fn new(
        ep: Endpoint,
        side: Side,
        port: u16,
        seed: u64,
        me: String,
        workload: Workload,
    ) -> Self {
        MspHost {
            ep,
            side,
            port,
            bound: None,
            bind_error: None,
            bind_asked: false,
            seed,
            me,
            workload,
            apps: BTreeMap::new(),
            records: VecDeque::new(),
            ended: 0,
            caller_started: false,
            notes: VecDeque::new(),
            last_now: SimTime::ZERO,
            last_activity: SimTime::ZERO,
        }
    }

    fn open_app(&mut self, now: SimTime, peer: SocketAddr) {
        let info = match &self.side {
            Side::Caller { peer: p, .. } => Some(p.clone()),
            Side::Listener { peers, .. } => peers.get(&peer.ip()).cloned(),
        };
        let (name, peer_workload) = match info {
            Some(p) => (p.name, p.workload),
            None => (
                "?".to_string(),
                Workload {
                    messages: 0,
                    ..Workload::default()
                },
            ),
        };
        let app = ConnApp {
            source: MessageGen::new(self.seed, &self.me, self.workload),
            workload: self.workload,
            pending: None,
            next_at: now,
            timer: None,
            ended: false,
            remote_shutdown: false,
            sink: Sink::new(MessageGen::new(self.seed, &name, peer_workload)),
            record: ConnRecord {
                peer: peer.to_string(),
                peer_host: name,
                opened_at_ms: now.as_millis(),
                ..ConnRecord::default()
            },
        };
        self.notes.push_back(format!("opened {peer}"));
        self.apps.insert(peer, app);
    }

    fn close_app(&mut self, now: SimTime, peer: SocketAddr, result: CloseResult) {
        let Some(mut app) = self.apps.remove(&peer) else {
            return;
        };
        let mut r = app.finish_record();
        r.closed_at_ms = Some(now.as_millis());
        r.result = Some(result.name().to_string());
        self.notes.push_back(format!("{peer}: {}", result.name()));
        self.ended += 1;
        self.last_activity = self.last_activity.max(now);
        if self.records.len() >= MAX_RECORDS {
            self.records.pop_front();
        }
        self.records.push_back(r);
    }

    /// Drain the endpoint's events and let every connection's application
    /// send what it can.
    fn run_app(&mut self, now: SimTime) {
        if let Side::Caller { remote, .. } = self.side
            && !self.caller_started
        {
            self.caller_started = true;
            self.ep.connect(now);
            self.open_app(now, remote);
        }
        while let Some(e) = self.ep.poll_event() {
            match e {
                Event::Opened { peer } => self.open_app(now, peer),
                Event::Message { peer, data } => {
                    if let Some(a) = self.apps.get_mut(&peer) {
                        a.sink.deliver(&data);
                    }
                }
                Event::RemoteShutdown { peer } => {
                    if let Some(a) = self.apps.get_mut(&peer) {
                        a.remote_shutdown = true;
                    }
                }
                Event::Writable { .. } => {}
                Event::Closed { peer, result } => self.close_app(now, peer, result),
            }
        }
        let peers: Vec<SocketAddr> = self.apps.keys().copied().collect();
        for peer in peers {
            self.feed(now, peer);
        }
        // Closing by STOP happens inside `feed`; record it.
        while let Some(e) = self.ep.poll_event() {
            if let Event::Closed { peer, result } = e {
                self.close_app(now, peer, result);
            }
        }
    }

    fn feed(&mut self, now: SimTime, peer: SocketAddr) {
        let Some(a) = self.apps.get_mut(&peer) else {
            return;
        };
        a.timer = None;
        while !a.ended {
            if let End::Stop { after_messages } = a.workload.end
                && a.record.messages_sent >= u64::from(after_messages)
            {
                a.ended = true;
                self.ep.stop(now, peer);
                return;
            }
            if a.pending.is_none() {
                a.pending = a.source.next_message();
            }
            let Some(m) = &a.pending else {
                match a.workload.end {
                    End::Shutdown => {}
                    End::ShutdownAfterPeer if a.remote_shutdown => {}
                    End::ShutdownAfterPeer => return,
                    End::Never | End::Stop { .. } => {
                        a.ended = true;
                        return;
                    }
                }
                a.ended = true;
                a.record.shutdown_sent = true;
                self.ep.shutdown(now, peer);
                return;
            };
            if now < a.next_at {
                a.timer = Some(a.next_at);
                return;
            }
            match self.ep.send(now, peer, m) {
                Ok(()) => {
                    a.pending = None;
                    a.record.messages_sent += 1;
                    if let Pattern::Paced { interval_ms } = a.workload.pattern {
                        a.next_at =
                            now.saturating_add(std::time::Duration::from_millis(interval_ms));
                    }
                }
                Err(SendError::WouldBlock) => return,
                Err(_) => {
                    a.ended = true;
                    return;
                }
            }
        }
    }

    fn outcome(&self) -> Option<Outcome> {
        let failure = |r: &ConnRecord| -> Option<Outcome> {
            let name = r.result.as_deref()?;
            let planned_stop = name == "stopped_locally";
            (name != "closed" && !planned_stop).then(|| Outcome::Failed {
                name: name.to_string(),
                message: format!(
                    "the connection with {} ({}) ended: {name}",
                    r.peer, r.peer_host
                ),
            })
        };
        match &self.side {
            Side::Caller { .. } => {
                if !self.ep.is_finished() {
                    return None;
                }
                let r = self.records.back()?;
                Some(failure(r).unwrap_or(Outcome::Completed))
            }
            Side::Listener { expect, .. } => {
                if *expect == 0 || !self.finished() {
                    return None;
                }
                if self.ended < u64::from(*expect) {
                    return Some(Outcome::Failed {
                        name: "missing_connections".into(),
                        message: format!(
                            "{} of the {expect} expected connections ended; nothing arrived for {} s",
                            self.ended,
                            LISTENER_IDLE.as_secs()
                        ),
                    });
                }
                Some(
                    self.records
                        .iter()
                        .find_map(failure)
                        .unwrap_or(Outcome::Completed),
                )
            }
        }
    }

    fn finished(&self) -> bool {
        if self.bind_error.is_some() {
            return true;
        }
        match &self.side {
            Side::Caller { .. } => self.caller_started && self.ep.is_finished(),
            Side::Listener { expect, .. } => {
                *expect > 0
                    && self.ep.connections() == 0
                    && (self.ended >= u64::from(*expect)
                        || self.idle_deadline().is_some_and(|t| self.last_now >= t))
            }
        }
    }

    /// When a waited-for listener holding no connection stops waiting.
    fn idle_deadline(&self) -> Option<SimTime> {
        match &self.side {
            Side::Listener {
                expect, idle_from, ..
            } if *expect > 0 && self.ep.connections() == 0 => Some(
                self.last_activity
                    .max(*idle_from)
                    .saturating_add(LISTENER_IDLE),
            ),
            _ => None,
        }
    }

    fn app_timer(&self) -> Option<SimTime> {
        self.apps.values().filter_map(|a| a.timer).min()
    }
}

/// The report's stats: the endpoint's counters, the connections and the
/// run seed the workloads were drawn under.
#[derive(Serialize)]
struct ReportStats<'a> {
    #[serde(flatten)]
    counters: &'a Stats,
    /// The caller's local address, once bound.
    #[serde(skip_serializing_if = "Option::is_none")]
    local: Option<String>,
    seed: u64,
    connections_ended: u64,
    connections: Vec<ConnRecord>,
}

impl HostMachine for MspHost {
    fn handle(&mut self, now: SimTime, input: Input<'_>) {
        self.last_now = self.last_now.max(now);
        match input {
            Input::Datagram {
                socket: 0,
                from,
                data,
            } if self.bound.is_some() => {
                self.last_activity = self.last_activity.max(now);
                self.ep.handle_datagram(now, from, data);
                self.run_app(now);
            }
            Input::Bound { socket: 0, local } => {
                self.bound = Some(local);
                self.run_app(now);
            }
            Input::BindFailed { socket: 0, error } => {
                self.bind_error = Some(error);
            }
            _ => {}
        }
    }

    fn handle_timeout(&mut self, now: SimTime) {
        self.last_now = self.last_now.max(now);
        if self.bound.is_some() {
            self.ep.handle_timeout(now);
            self.run_app(now);
        }
    }

    fn poll_output(&mut self, now: SimTime, buf: &mut [u8]) -> Option<Output> {
        self.last_now = self.last_now.max(now);
        if !self.bind_asked {
            self.bind_asked = true;
            return Some(Output::Bind {
                socket: 0,
                port: self.port,
            });
        }
        self.bound?;
        self.run_app(now);
        let t = self.ep.poll_transmit(now, buf)?;
        Some(Output::Transmit {
            socket: 0,
            destination: t.destination,
            len: t.len,
        })
    }

    fn poll_timeout(&self) -> Option<SimTime> {
        self.bound?;
        let t = [
            self.ep.poll_timeout(),
            self.app_timer(),
            self.idle_deadline(),
        ]
        .into_iter()
        .flatten()
        .min()?;
        // Outputs are drained before this is read, so a timer at or before
        // the latest time seen did nothing when it fired: retry it a tick
        // later rather than spin at one instant (a defect in the endpoint
        // then shows as a failed invariant, not a hung run).
        Some(if t <= self.last_now {
            self.last_now
                .saturating_add(std::time::Duration::from_millis(1))
        } else {
            t
        })
    }

    fn poll_event(&mut self) -> Option<String> {
        self.notes.pop_front()
    }

    fn is_finished(&self) -> bool {
        self.finished()
    }

    fn report(&self) -> HostReport {
        let mut connections: Vec<ConnRecord> = self.records.iter().cloned().collect();
        for a in self.apps.values() {
            let mut a_rec = a.record.clone();
            a_rec.remote_shutdown = a.remote_shutdown;
            a_rec.messages_delivered = a.sink.delivered();
            a_rec.bytes_delivered = a.sink.bytes();
            a_rec.delivered_digest = a.sink.digest();
            a_rec.first_mismatch = a.sink.first_mismatch().map(str::to_string);
            connections.push(a_rec);
        }
        let outcome = match self.bind_error {
            Some(e) => Some(Outcome::Failed {
                name: "bind_failed".into(),
                message: format!("binding port {} failed: {e}", self.port),
            }),
            None => self.outcome(),
        };
        let stats = ReportStats {
            counters: self.ep.stats(),
            local: self.bound.map(|b| b.to_string()),
            seed: self.seed,
            connections_ended: self.ended,
            connections,
        };
        HostReport {
            outcome,
            state: Some(format!(
                "{} connection(s) open, {} ended",
                self.apps.len(),
                self.ended
            )),
            stats: serde_json::to_value(stats).unwrap_or_default(),
        }
    }
}
