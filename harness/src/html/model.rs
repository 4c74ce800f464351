//! What a run page shows, computed from the trace: one message per datagram
//! (or TCP segment) with the fate of each copy, bands that summarize bulk
//! traffic, protocol events, and the failing checks' positions.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use streamlab_core::sut::Protocol;
use streamlab_core::time::SimTime;
use streamlab_impair::{CopyFate, DropReason};

use crate::report::RunReport;
use crate::trace::{Origin, TraceEvent};

/// Most messages drawn one by one; beyond it every kind is banded.
pub const MAX_ARROWS: usize = 1500;
/// A kind with more datagrams than this (in a run with more than
/// [`BULK_RUN`] datagrams) is bulk traffic: drawn as bands.
pub const BULK_KIND: usize = 40;
/// Runs with at most this many datagrams draw every one.
pub const BULK_RUN: usize = 150;
/// Most protocol events shown.
pub const MAX_EVENTS: usize = 400;

/// What happened to one copy.
#[derive(Clone, Debug, PartialEq)]
pub enum Fate {
    /// Reached the receiving application at this time.
    Arrived(SimTime),
    /// Lost at this time, for this reason (a stable cause name) and detail.
    Dropped(SimTime, String, String),
    /// Still unknown when the trace ended.
    Open,
}

/// One copy of a message.
#[derive(Clone, Debug, PartialEq)]
pub struct Copy {
    /// 0 = the original.
    pub index: u32,
    /// Its fate.
    pub fate: Fate,
    /// A flipped bit: offset, and whether the checksum caught it.
    pub corrupted: Option<(usize, bool)>,
    /// netem reordered it.
    pub reordered: bool,
}

/// One datagram or segment.
#[derive(Clone, Debug, PartialEq)]
pub struct Message {
    /// The trace event index of its `Sent`.
    pub event: u64,
    /// Send time.
    pub at: SimTime,
    /// Sending host index (`None`: an address outside the scenario).
    pub from: Option<usize>,
    /// Receiving host index.
    pub to: Option<usize>,
    /// The classifier's kind (or a TCP flags summary, or `?`).
    pub kind: String,
    /// Kind and key fields, for the arrow label.
    pub label: String,
    /// Sent by a scenario `inject` entry (its name), not the protocol.
    pub injected: Option<String>,
    /// Rules that acted on it.
    pub notes: Vec<String>,
    /// Its copies.
    pub copies: Vec<Copy>,
    /// Drawn inside a band.
    pub bulk: bool,
}

/// Bulk traffic between two control messages, summarized.
#[derive(Clone, Debug, PartialEq)]
pub struct Band {
    /// First send.
    pub from: SimTime,
    /// Last send.
    pub until: SimTime,
    /// Per (kind, sender, receiver): datagrams, copies lost.
    pub counts: BTreeMap<(String, usize, usize), (u64, u64)>,
}

impl Band {
    /// "DATA ×2,700 server→client, 12 lost; ACK ×…".
    pub fn summary(&self, names: &[String]) -> String {
        self.lines(names).join("; ")
    }

    /// One line per flow: "DATA ×2,700 server→client, 12 lost".
    pub fn lines(&self, names: &[String]) -> Vec<String> {
        self.counts
            .iter()
            .map(|((kind, a, b), (n, lost))| {
                let mut s = format!(
                    "{kind} ×{} {}→{}",
                    thousands(*n),
                    names.get(*a).map_or("?", String::as_str),
                    names.get(*b).map_or("?", String::as_str)
                );
                if *lost > 0 {
                    s.push_str(&format!(", {} lost", thousands(*lost)));
                }
                s
            })
            .collect()
    }
}

/// `2700` → `2,700`.
pub fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A protocol event on a host's lifeline.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    /// When.
    pub at: SimTime,
    /// The host.
    pub host: usize,
    /// What (the machine's rendering).
    pub text: String,
}

/// A failed check pinned to the trace.
#[derive(Clone, Debug, PartialEq)]
pub struct Marker {
    /// The check.
    pub check: String,
    /// What it observed.
    pub observed: String,
    /// Its time.
    pub at: SimTime,
    /// Its trace event index.
    pub event: u64,
}

/// Everything the ladder shows.
#[derive(Clone, Debug, Default)]
pub struct Ladder {
    /// Host names, by index.
    pub hosts: Vec<String>,
    /// Every message, in send order.
    pub messages: Vec<Message>,
    /// The bands, in time order.
    pub bands: Vec<Band>,
    /// Protocol events, in time order (at most [`MAX_EVENTS`]).
    pub events: Vec<Event>,
    /// Events left out.
    pub events_left_out: usize,
    /// Failed checks with a position.
    pub markers: Vec<Marker>,
    /// When the run ended.
    pub ended: SimTime,
}

/// The stable cause name of a link drop.
pub fn drop_cause(r: &DropReason) -> String {
    match r {
        DropReason::Loss { .. } => "loss".into(),
        DropReason::QueueFull { .. } => "queue_full".into(),
        DropReason::Mtu { .. } => "mtu".into(),
        DropReason::External { cause } if cause.starts_with("dropped by rule") => "rule".into(),
        DropReason::External { .. } => "no_route".into(),
        _ => "other".into(),
    }
}

impl Ladder {
    /// Build the ladder of a run.
    pub fn build(protocol: &dyn Protocol, report: &RunReport, trace: &[TraceEvent]) -> Ladder {
        let hosts: Vec<String> = report.hosts.values().map(|h| h.name.clone()).collect();
        // Report hosts are keyed by name; keep scenario order by address.
        let mut by_addr: Vec<(Ipv4Addr, String)> = report
            .hosts
            .values()
            .map(|h| (h.address, h.name.clone()))
            .collect();
        by_addr.sort();
        let hosts: Vec<String> = if by_addr.len() == hosts.len() {
            by_addr.iter().map(|(_, n)| n.clone()).collect()
        } else {
            hosts
        };
        let index_of = |ip: &Ipv4Addr| by_addr.iter().position(|(a, _)| a == ip);
        let mut messages: Vec<Message> = Vec::new();
        let mut by_packet: BTreeMap<u64, usize> = BTreeMap::new();
        for (i, e) in trace.iter().enumerate() {
            match e {
                TraceEvent::Sent {
                    at,
                    packet,
                    src,
                    dst,
                    bytes,
                    origin,
                    notes,
                    verdict,
                    transport,
                } => {
                    let (kind, label) = match transport.tcp() {
                        Some(h) => {
                            let k = format!("TCP {}", h.flags);
                            let l = if h.payload_len > 0 {
                                format!("{k} {} B", h.payload_len)
                            } else {
                                k.clone()
                            };
                            (k, l)
                        }
                        None => {
                            let c = protocol.classify(bytes);
                            let kind = c.kind.unwrap_or("?").to_string();
                            let mut label = kind.clone();
                            if let Some(conn) = c.conn {
                                label.push_str(&format!(" id={conn}"));
                            }
                            if let Some(seq) = c.seq {
                                label.push_str(&format!(" seq={seq}"));
                            }
                            if let Some(code) = c.code {
                                let name = protocol
                                    .codes()
                                    .iter()
                                    .find(|(n, _)| *n == code)
                                    .map_or_else(|| code.to_string(), |(_, s)| (*s).to_string());
                                label.push_str(&format!(" {name}"));
                            }
                            if c.malformed.is_some() {
                                label.push_str(" (malformed)");
                            }
                            (kind, label)
                        }
                    };
                    let copies = verdict
                        .copies
                        .iter()
                        .enumerate()
                        .map(|(ci, f)| match f {
                            CopyFate::Delivered {
                                delay, corruption, ..
                            } => Copy {
                                index: ci as u32,
                                fate: Fate::Open,
                                corrupted: corruption.map(|c| (c.offset, c.caught_by_checksum)),
                                reordered: delay.reordered,
                            },
                            CopyFate::Dropped { reason } => Copy {
                                index: ci as u32,
                                fate: Fate::Dropped(*at, drop_cause(reason), reason.to_string()),
                                corrupted: None,
                                reordered: false,
                            },
                            _ => Copy {
                                index: ci as u32,
                                fate: Fate::Open,
                                corrupted: None,
                                reordered: false,
                            },
                        })
                        .collect();
                    by_packet.insert(packet.0, messages.len());
                    messages.push(Message {
                        event: i as u64,
                        at: *at,
                        from: index_of(src.ip()),
                        to: index_of(dst.ip()),
                        kind,
                        label,
                        injected: match origin {
                            Origin::Injected { rule } | Origin::Impersonated { rule } => {
                                Some(rule.clone())
                            }
                            _ => None,
                        },
                        notes: notes.clone(),
                        copies,
                        bulk: false,
                    });
                }
                TraceEvent::Arrived {
                    at,
                    packet,
                    copy,
                    delivered_to_app,
                    ..
                } => {
                    if let Some(c) = by_packet
                        .get(&packet.0)
                        .and_then(|&m| messages[m].copies.get_mut(*copy as usize))
                    {
                        c.fate = if *delivered_to_app {
                            Fate::Arrived(*at)
                        } else {
                            Fate::Dropped(
                                *at,
                                "corrupt_checksum".into(),
                                "the UDP checksum caught a flipped bit".into(),
                            )
                        };
                    }
                }
                TraceEvent::Lost {
                    at,
                    packet,
                    copy,
                    reason,
                    cause,
                } => {
                    if let Some(c) = by_packet
                        .get(&packet.0)
                        .and_then(|&m| messages[m].copies.get_mut(*copy as usize))
                    {
                        c.fate = Fate::Dropped(*at, reason.name().to_string(), cause.clone());
                    }
                }
            }
        }
        // Bulk flows: a kind from one host to another with many datagrams
        // (injected ones apart) is banded.
        let flow = |m: &Message| (m.kind.clone(), m.from, m.to, m.injected.is_some());
        let mut per_flow: BTreeMap<(String, Option<usize>, Option<usize>, bool), usize> =
            BTreeMap::new();
        for m in &messages {
            *per_flow.entry(flow(m)).or_default() += 1;
        }
        let busy = messages.len() > BULK_RUN;
        let marked: Vec<u64> = report
            .checks
            .iter()
            .filter(|c| !c.passed)
            .filter_map(|c| c.position.map(|p| p.event))
            .collect();
        let mut drawn = 0usize;
        for m in &mut messages {
            let involved = marked.contains(&m.event);
            let bulk_flow = busy && per_flow.get(&flow(m)).is_some_and(|n| *n > BULK_KIND);
            m.bulk = !involved && (bulk_flow || drawn >= MAX_ARROWS);
            if !m.bulk {
                drawn += 1;
            }
        }
        let mut bands: Vec<Band> = Vec::new();
        let mut open = false;
        for m in &messages {
            if !m.bulk {
                open = false;
                continue;
            }
            if !open {
                bands.push(Band {
                    from: m.at,
                    until: m.at,
                    counts: BTreeMap::new(),
                });
                open = true;
            }
            if let Some(b) = bands.last_mut() {
                b.until = m.at;
                let lost = m
                    .copies
                    .iter()
                    .filter(|c| matches!(c.fate, Fate::Dropped(..)))
                    .count() as u64;
                let kind = if m.injected.is_some() {
                    format!("{} (injected)", m.kind)
                } else {
                    m.kind.clone()
                };
                let e = b
                    .counts
                    .entry((
                        kind,
                        m.from.unwrap_or(usize::MAX),
                        m.to.unwrap_or(usize::MAX),
                    ))
                    .or_default();
                e.0 += 1;
                e.1 += lost;
            }
        }
        // Protocol events, outside bands.
        let mut events = Vec::new();
        let mut events_left_out = 0;
        for (hi, name) in hosts.iter().enumerate() {
            let Some(h) = report.hosts.get(name) else {
                continue;
            };
            for e in &h.events {
                let Some((t, text)) = parse_event(e) else {
                    continue;
                };
                if bands.iter().any(|b| t >= b.from && t <= b.until) {
                    events_left_out += 1;
                    continue;
                }
                events.push(Event {
                    at: t,
                    host: hi,
                    text,
                });
            }
            events_left_out += h.events_dropped as usize;
        }
        events.sort_by_key(|e| (e.at, e.host));
        if events.len() > MAX_EVENTS {
            events_left_out += events.len() - MAX_EVENTS;
            events.truncate(MAX_EVENTS);
        }
        let markers = report
            .checks
            .iter()
            .filter(|c| !c.passed)
            .filter_map(|c| {
                c.position.map(|p| Marker {
                    check: c.name.clone(),
                    observed: c.observed.clone(),
                    at: SimTime::from_micros(p.at_us),
                    event: p.event,
                })
            })
            .collect();
        Ladder {
            hosts,
            messages,
            bands,
            events,
            events_left_out,
            markers,
            ended: SimTime::from_micros((report.simulation.ended_at_ms * 1000.0).round() as u64),
        }
    }
}

/// `"1.234567s Event…"` → time and text.
fn parse_event(e: &str) -> Option<(SimTime, String)> {
    let (t, rest) = e.split_once(' ')?;
    let t = t.strip_suffix('s')?;
    let (secs, micros) = t.split_once('.')?;
    let us = secs.parse::<u64>().ok()?.checked_mul(1_000_000)? + micros.parse::<u64>().ok()?;
    // A machine event rendered with `{:?}` of a string keeps its quotes.
    let rest = rest
        .strip_prefix('"')
        .and_then(|r| r.strip_suffix('"'))
        .map_or_else(|| rest.to_string(), |r| r.replace("\\\"", "\""));
    Some((SimTime::from_micros(us), rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_parse_and_numbers_group() {
        assert_eq!(
            parse_event("1.000250s Connected"),
            Some((SimTime::from_micros(1_000_250), "Connected".to_string()))
        );
        assert_eq!(parse_event("garbage"), None);
        assert_eq!(thousands(2700), "2,700");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_000_000), "1,000,000");
    }
}
