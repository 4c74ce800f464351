//! A deliberately broken SRT sender, built only in tests: it wraps the real
//! SRT machines and clears the R (retransmitted) flag of every DATA packet
//! it sends again, so a receiver cannot tell a retransmission from an
//! original (libsrt relies on the flag for its belated/duplicate
//! accounting). Nothing shows on a clean network: only a loss makes the
//! sender retransmit.

use std::collections::BTreeSet;

use streamlab_core::host::{HostMachine, HostReport, Input, Output};
use streamlab_core::sut::{Protocol, Rewrapped};
use streamlab_core::time::SimTime;
use streamlab_srt::sut::Srt;

/// The broken SRT.
pub fn unflagged_retransmissions() -> &'static dyn Protocol {
    Rewrapped::new(
        &Srt,
        "SRT whose retransmissions lose their R flag",
        |_, _, inner| -> Box<dyn HostMachine> {
            Box::new(Unflag {
                inner,
                sent: BTreeSet::new(),
            })
        },
    )
    .leak()
}

struct Unflag {
    inner: Box<dyn HostMachine>,
    sent: BTreeSet<u64>,
}

impl HostMachine for Unflag {
    fn handle(&mut self, now: SimTime, input: Input<'_>) {
        self.inner.handle(now, input);
    }
    fn handle_timeout(&mut self, now: SimTime) {
        self.inner.handle_timeout(now);
    }
    fn poll_output(&mut self, now: SimTime, buf: &mut [u8]) -> Option<Output> {
        let out = self.inner.poll_output(now, buf)?;
        if let Output::Transmit { len, .. } = out {
            let c = Srt.classify(&buf[..len]);
            if c.kind == Some("DATA")
                && let Some(seq) = c.seq
                && !self.sent.insert(seq)
                && len > 4
            {
                // Word 1, bit 26: the R flag.
                buf[4] &= !0x04;
            }
        }
        Some(out)
    }
    fn poll_timeout(&self) -> Option<SimTime> {
        self.inner.poll_timeout()
    }
    fn poll_event(&mut self) -> Option<String> {
        self.inner.poll_event()
    }
    fn is_finished(&self) -> bool {
        self.inner.is_finished()
    }
    fn report(&self) -> HostReport {
        self.inner.report()
    }
}
