//! The wording of capture comments. Every comment is one line that starts
//! with `streamlab: pkt=<id> ` (note the space after the id, so that
//! `frame.comment contains "pkt=17 "` does not match packet 170). The word
//! after the id (or after `copy=<k> `) is the kind: `sent`, `arrived`,
//! `origin`, `rule`, `dropped`, `delivered`, `duplicate`, `corrupted`,
//! `lost`, `discarded`, `unresolved`. Changing the wording is an interface
//! change: tests, the README and downstream filters grep for it.

use std::fmt::Write as _;

use streamlab_core::time::SimTime;
use streamlab_impair::{CopyFate, Corruption, DelayBreakdown};

use crate::trace::{Origin, Transport};

/// `1.234567s`: a simulated time at full µs resolution.
pub(crate) fn time(t: SimTime) -> String {
    let us = t.as_micros();
    format!("{}.{:06}s", us / 1_000_000, us % 1_000_000)
}

/// `52.300ms`: a non-negative duration in µs.
pub(crate) fn ms(us: u64) -> String {
    format!("{}.{:03}ms", us / 1000, us % 1000)
}

/// `+2.000ms` / `-1.500ms`: a signed duration in µs.
fn signed_ms(us: i64) -> String {
    let sign = if us < 0 { '-' } else { '+' };
    format!("{sign}{}", ms(us.unsigned_abs()))
}

/// `delay 52.300ms = base 50.000ms + jitter +2.000ms + queue 0.300ms`, or
/// for a reordered copy `delay 0.300ms = reordered (sent immediately,
/// base 50.000ms skipped) + queue 0.300ms`.
pub(crate) fn delay(d: &DelayBreakdown) -> String {
    let total = streamlab_core::time::duration_micros(d.total());
    if d.reordered {
        format!(
            "delay {} = reordered (sent immediately, base {} skipped) + queue {}",
            ms(total),
            ms(d.base_us),
            ms(d.queue_us)
        )
    } else {
        format!(
            "delay {} = base {} + jitter {} + queue {}",
            ms(total),
            ms(d.base_us),
            signed_ms(d.jitter_us),
            ms(d.queue_us)
        )
    }
}

/// `corrupted: byte 13 bit 2 0x01->0x05, caught by UDP checksum (...)`.
/// For TCP the byte offset counts from the start of the segment's header.
pub(crate) fn corruption(pkt: u64, copy: u32, c: &Corruption, transport: &Transport) -> String {
    let mut s = format!(
        "streamlab: pkt={pkt} copy={copy} corrupted: byte {} bit {} 0x{:02x}->0x{:02x}, ",
        c.offset, c.bit, c.old, c.new
    );
    match (transport, c.caught_by_checksum) {
        (Transport::Udp, true) => s.push_str("caught by UDP checksum (receiver discards it; inbound copy carries the checksum of the original bytes)"),
        (Transport::Udp, false) => s.push_str("not caught by UDP checksum (delivered to the application; inbound copy has no UDP checksum)"),
        (_, true) => s.push_str("caught by TCP checksum (receiver discards it; inbound copy carries the checksum of the original bytes)"),
        (_, false) => s.push_str("not caught by TCP checksum (delivered to the TCP stack; the checksum was recomputed over the corrupted segment)"),
    }
    s
}

/// What a `sent` comment says about the transport: nothing for UDP;
/// `TCP SYN|ACK seq=1 ack=2 win=512 len=0, ` for a TCP segment.
pub(crate) fn transport(t: &Transport) -> String {
    match t.tcp() {
        None => String::new(),
        Some(h) => format!(
            "TCP {} seq={} ack={} win={} len={}, ",
            h.flags, h.seq, h.ack, h.window, h.payload_len
        ),
    }
}

/// `streamlab: pkt=17 copy=1 duplicate: copy 1 of pkt=17`, for k ≥ 1.
pub(crate) fn duplicate(pkt: u64, copy: u32) -> Option<String> {
    (copy > 0)
        .then(|| format!("streamlab: pkt={pkt} copy={copy} duplicate: copy {copy} of pkt={pkt}"))
}

/// The lines describing who produced a datagram and which scenario rules
/// acted on it.
pub(crate) fn provenance(pkt: u64, origin: &Origin, notes: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    match origin {
        Origin::Application => {}
        Origin::Injected { rule } => out.push(format!(
            "streamlab: pkt={pkt} origin: injected by scenario {rule}"
        )),
        Origin::Impersonated { rule } => out.push(format!(
            "streamlab: pkt={pkt} origin: injected by scenario {rule}, impersonating the host's software"
        )),
        // Origins added to the trace later: named by their debug form.
        #[allow(unreachable_patterns)]
        other => out.push(format!(
            "streamlab: pkt={pkt} origin: {}",
            one_line(&format!("{other:?}"))
        )),
    }
    for note in notes {
        out.push(format!("streamlab: pkt={pkt} rule: {}", one_line(note)));
    }
    out
}

/// The sender-side line for one copy's fate, as decided by the link.
pub(crate) fn fate(pkt: u64, copy: u32, fate: &CopyFate, transport: &Transport) -> Vec<String> {
    let mut out = Vec::new();
    out.extend(duplicate(pkt, copy));
    match fate {
        CopyFate::Dropped { reason } => {
            out.push(format!(
                "streamlab: pkt={pkt} copy={copy} dropped: {}",
                one_line(&reason.to_string())
            ));
        }
        CopyFate::Delivered {
            at,
            delay: d,
            corruption: c,
        } => {
            out.push(format!(
                "streamlab: pkt={pkt} copy={copy} delivered: leaves link at {}, {}",
                time(*at),
                delay(d)
            ));
            if let Some(c) = c {
                out.push(corruption(pkt, copy, c, transport));
            }
        }
        other => out.push(format!(
            "streamlab: pkt={pkt} copy={copy} fate: {}",
            one_line(&format!("{other:?}"))
        )),
    }
    out
}

/// Replaces line breaks so that every comment stays one line.
pub(crate) fn one_line(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '\n' | '\r' | '\t' => out.push(' '),
            c => {
                let _ = out.write_char(c);
            }
        }
    }
    out
}
