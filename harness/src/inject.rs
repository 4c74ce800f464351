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
use crate::scenario::InjectDatagram;

pub use crate::scenario::INJECT_BASE_PORT;

fn sim_now() -> SimTime {
    turmoil::sim_elapsed().map_or(SimTime::ZERO, |d| SimTime::from_micros(duration_micros(d)))
}

/// A scenario's injections, compiled.
#[derive(Clone, Copy)]
pub(crate) struct Injections<'a> {
    /// The entries as written.
    pub(crate) all: &'a [InjectDatagram],
    /// Each entry's bytes.
    pub(crate) built: &'a [Vec<u8>],
    /// The protocol (to locate fields a flood varies).
    pub(crate) protocol: &'a dyn streamlab_core::sut::Protocol,
}

/// Send every injection whose `from` is host `me`, each at its time.
/// Entries whose time has passed (after a restart) are skipped.
pub(crate) async fn run_injector(
    net: &Rc<RefCell<Network>>,
    me: usize,
    seed: u64,
    names: &[String],
    ips: &[Ipv4Addr],
    plan: Injections<'_>,
) -> io::Result<()> {
    let Injections {
        all,
        built,
        protocol,
    } = plan;
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
        let Some(template) = built.get(index) else {
            continue;
        };
        let (count, sources, gap, distinct) = match &d.flood {
            Some(f) => (
                f.count,
                f.sources.max(1),
                f.interval_us,
                f.distinct_field.as_deref(),
            ),
            None => (1, 1, 0, None),
        };
        let distinct = distinct.and_then(|field| protocol.locate_field(field, template));
        let mut rng = named_rng(seed, &format!("inject:datagrams[{index}]"));
        for k in 0..count {
            let port = base_port.wrapping_add((k % sources) as u16);
            let src = SocketAddrV4::new(ips[me], port);
            let mut bytes = template.clone();
            if let Some(slot) = distinct.clone().and_then(|r| bytes.get_mut(r)) {
                let v = rng.next_u64().to_be_bytes();
                let w = slot.len().min(8);
                slot[..w].copy_from_slice(&v[8 - w..]);
            }
            let origin = if d.impersonate {
                crate::trace::Origin::impersonated(index)
            } else {
                crate::trace::Origin::injected(index)
            };
            sock.send_as(&bytes, src, dst, origin);
            if gap > 0 && k + 1 < count {
                tokio::time::sleep(Duration::from_micros(gap)).await;
            }
        }
    }
    Ok(())
}
