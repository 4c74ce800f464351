//! A deliberately broken SRT sender, built only in tests: it wraps the real
//! SRT machines and clears the R (retransmitted) flag of every DATA packet
//! it sends again, so a receiver cannot tell a retransmission from an
//! original (libsrt relies on the flag for its belated/duplicate
//! accounting). Nothing shows on a clean network: only a loss makes the
//! sender retransmit.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::ops::Range;

use streamlab_core::host::{HostMachine, HostReport, Input, Output};
use streamlab_core::sut::{
    Classified, Dissector, HostCtx, Metric, Oracle, Plan, Protocol, ProtocolSchema, RoleInfo,
    ScenarioDecl, SpecError, TsharkFields,
};
use streamlab_core::time::SimTime;
use streamlab_srt::sut::Srt;

/// The broken SRT.
pub struct UnflaggedRetransmissions;

/// The instance the tests register.
pub static UNFLAGGED_RETRANSMISSIONS: UnflaggedRetransmissions = UnflaggedRetransmissions;

impl Protocol for UnflaggedRetransmissions {
    fn name(&self) -> &'static str {
        Srt.name()
    }
    fn summary(&self) -> &'static str {
        "SRT whose retransmissions lose their R flag"
    }
    fn roles(&self) -> &'static [RoleInfo] {
        Srt.roles()
    }
    fn kinds(&self) -> &'static [&'static str] {
        Srt.kinds()
    }
    fn codes(&self) -> &'static [(u32, &'static str)] {
        Srt.codes()
    }
    fn fields(&self) -> &'static [(&'static str, &'static str)] {
        Srt.fields()
    }
    fn locate_field(&self, field: &str, bytes: &[u8]) -> Option<Range<usize>> {
        Srt.locate_field(field, bytes)
    }
    fn classify(&self, bytes: &[u8]) -> Classified {
        Srt.classify(bytes)
    }
    fn build_frame(&self, frame: &serde_json::Value, path: &str) -> Result<Vec<u8>, SpecError> {
        Srt.build_frame(frame, path)
    }
    fn schema(&self) -> ProtocolSchema {
        Srt.schema()
    }
    fn compile(&self, scenario: &ScenarioDecl<'_>) -> Result<Box<dyn Plan>, Vec<SpecError>> {
        Ok(Box::new(BrokenPlan(Srt.compile(scenario)?)))
    }
    fn stat_names(&self, role: &str) -> Vec<String> {
        Srt.stat_names(role)
    }
    fn error_names(&self, role: &str) -> Vec<String> {
        Srt.error_names(role)
    }
    fn dissector(&self) -> Dissector {
        Srt.dissector()
    }
    fn tshark_fields(&self) -> TsharkFields {
        Srt.tshark_fields()
    }
    fn metrics(&self) -> &'static [Metric] {
        Srt.metrics()
    }
    fn outside_fault_model(&self) -> &'static [(&'static str, &'static str)] {
        Srt.outside_fault_model()
    }
}

struct BrokenPlan(Box<dyn Plan>);

impl Plan for BrokenPlan {
    fn host_machine(&self, host: usize, ctx: &HostCtx<'_>) -> Option<Box<dyn HostMachine>> {
        Some(Box::new(Unflag {
            inner: self.0.host_machine(host, ctx)?,
            sent: BTreeSet::new(),
        }))
    }
    fn start_at(&self, host: usize) -> Option<SimTime> {
        self.0.start_at(host)
    }
    fn waited_for(&self, host: usize) -> bool {
        self.0.waited_for(host)
    }
    fn oracle(&self, addrs: &[Ipv4Addr]) -> Box<dyn Oracle> {
        self.0.oracle(addrs)
    }
    fn ports(&self) -> Vec<u16> {
        self.0.ports()
    }
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
