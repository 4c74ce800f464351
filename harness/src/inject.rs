//! Raw injection: datagrams (and floods) a host sends at a given time,
//! outside any protocol code, possibly from spoofed source tuples.

use std::cell::RefCell;
use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::rc::Rc;
use std::time::Duration;

use rand::RngCore;
use streamlab_core::seed::named_rng;
use streamlab_core::time::{SimTime, duration_micros};

use crate::network::{Network, SimSocket};
use crate::scenario::{FrameKind, FrameSpec, InjectDatagram, parse_hex};

/// The first source port injected datagrams claim unless `from_port` says.
pub const INJECT_BASE_PORT: u16 = 40_000;

/// Build the bytes of a structured frame, byte for byte as docs/protocol.md
/// lays them out, but without refusing odd values: scenario authors use this
/// to make frames a correct sender never would (bad versions, stray flags).
pub fn build_frame(f: &FrameSpec) -> Vec<u8> {
    let mut b = vec![f.kind.type_byte(), f.version];
    b.extend_from_slice(&f.flags.to_be_bytes());
    b.extend_from_slice(&f.stream_id.to_be_bytes());
    match f.kind {
        FrameKind::Start | FrameKind::StartAck | FrameKind::StartConfirm => {
            let base = 14;
            let pad = f.pad_to.unwrap_or(base).saturating_sub(base);
            if pad >= 4 {
                b.extend_from_slice(&(pad as u16).to_be_bytes());
                b.extend_from_slice(&1u16.to_be_bytes()); // PADDING
                b.extend_from_slice(&((pad - 4) as u16).to_be_bytes());
                b.resize(base + pad, 0);
            } else {
                b.extend_from_slice(&0u16.to_be_bytes());
            }
        }
        FrameKind::Error => {
            let reason = f.reason.as_deref().unwrap_or("").as_bytes();
            let reason = &reason[..reason.len().min(255)];
            b.extend_from_slice(&f.code.unwrap_or(0).to_be_bytes());
            b.push(reason.len() as u8);
            b.extend_from_slice(reason);
            b.extend_from_slice(&0u16.to_be_bytes());
        }
        FrameKind::Data => {
            b.extend_from_slice(&f.sequence.unwrap_or(1).to_be_bytes());
            b.extend_from_slice(&0u16.to_be_bytes()); // index
            b.extend_from_slice(&1u16.to_be_bytes()); // count
            b.extend_from_slice(&0u64.to_be_bytes()); // timestamp
            b.push(0); // one payload byte: pattern offset 0 is 0x00
        }
    }
    b
}

fn sim_now() -> SimTime {
    turmoil::sim_elapsed().map_or(SimTime::ZERO, |d| SimTime::from_micros(duration_micros(d)))
}

/// Send every injection whose `from` is host `me`, each at its time.
/// Entries whose time has passed (after a restart) are skipped.
pub(crate) async fn run_injector(
    net: &Rc<RefCell<Network>>,
    me: usize,
    seed: u64,
    names: &[String],
    ips: &[Ipv4Addr],
    all: &[InjectDatagram],
) -> io::Result<()> {
    let mine: Vec<(usize, &InjectDatagram)> = all
        .iter()
        .enumerate()
        .filter(|(_, d)| d.from == names[me])
        .collect();
    if mine.is_empty() {
        return Ok(());
    }
    let start = sim_now();
    let sock = SimSocket::bind(net.clone(), me, 0, false)?;
    let mut order = mine;
    order.sort_by_key(|(i, d)| (d.at_ms, *i));
    for (index, d) in order {
        let at = SimTime::from_millis(d.at_ms);
        if at < start {
            continue;
        }
        let now = sim_now();
        if at > now {
            tokio::time::sleep(at - now).await;
        }
        let Some(to) = names.iter().position(|n| *n == d.to) else {
            continue;
        };
        let dst = SocketAddrV4::new(ips[to], d.to_port);
        let base_port = d.from_port.unwrap_or(INJECT_BASE_PORT);
        let template = match (&d.hex, &d.frame) {
            (Some(h), _) => parse_hex(h).unwrap_or_default(),
            (None, Some(f)) => build_frame(f),
            (None, None) => continue,
        };
        let (count, sources, gap, distinct) = match &d.flood {
            Some(f) => (
                f.count,
                f.sources.max(1),
                f.interval_us,
                f.distinct_stream_ids,
            ),
            None => (1, 1, 0, false),
        };
        let mut rng = named_rng(seed, &format!("inject:datagrams[{index}]"));
        for k in 0..count {
            let port = base_port.wrapping_add((k % sources) as u16);
            let src = SocketAddrV4::new(ips[me], port);
            let mut bytes = template.clone();
            if distinct && d.frame.is_some() {
                if let Some(slot) = bytes.get_mut(4..12) {
                    slot.copy_from_slice(&rng.next_u64().to_be_bytes());
                }
            }
            sock.send_as(&bytes, src, dst, crate::runner::injected(index));
            if gap > 0 && k + 1 < count {
                tokio::time::sleep(Duration::from_micros(gap)).await;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(kind: FrameKind) -> FrameSpec {
        FrameSpec {
            kind,
            version: 1,
            flags: 1,
            stream_id: 0x1122_3344_5566_7788,
            code: None,
            reason: None,
            sequence: None,
            pad_to: None,
        }
    }

    #[test]
    fn builds_frames_per_the_wire_layout() {
        assert_eq!(
            hex::encode(build_frame(&spec(FrameKind::Start))),
            "0101000111223344556677880000"
        );
        let mut padded = spec(FrameKind::Start);
        padded.pad_to = Some(64);
        let b = build_frame(&padded);
        assert_eq!(b.len(), 64);
        assert_eq!(&b[12..18], &[0, 50, 0, 1, 0, 46]);
        let mut err = spec(FrameKind::Error);
        err.code = Some(5);
        err.reason = Some("busy".into());
        assert_eq!(
            hex::encode(build_frame(&err)),
            "04010001112233445566778800050462757379".to_string() + "0000"
        );
        let data = build_frame(&spec(FrameKind::Data));
        assert_eq!(data.len(), 29);
        assert_eq!(&data[12..16], &[0, 0, 0, 1]);
    }
}
