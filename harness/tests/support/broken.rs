//! Deliberately broken protocol machines, built only in tests: each wraps
//! the real media-stream machines and plants one mistake of the kind a
//! scenario suite misses.

use std::collections::{BTreeSet, VecDeque};
use std::net::{Ipv4Addr, SocketAddr};
use std::ops::Range;

use streamlab_core::host::{HostMachine, HostReport, Input, Output, SocketId};
use streamlab_core::sut::{
    Classified, Dissector, HostCtx, Oracle, Plan, Protocol, ProtocolSchema, RoleInfo, ScenarioDecl,
    SpecError, TsharkFields,
};
use streamlab_core::time::SimTime;
use streamlab_mediastream::sut::MediaStream;

/// The planted mistakes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bug {
    /// The responder takes a retransmitted START for a stream it already
    /// acknowledged as the START_CONFIRM, and starts streaming.
    RetryStartConfirms,
    /// The responder pads its ERROR replies to 256 bytes (a "reason" too
    /// long), so a short malformed START draws more bytes than it carried.
    PaddedErrors,
    /// The initiator, when it retransmits START, also sends START_CONFIRM
    /// for the stream "to save a round trip".
    ConfirmWithRetry,
    /// The responder treats every START as confirmed and streams at once
    /// (fails on the happy path: for pages of failing runs).
    EagerStream,
}

pub struct Broken(pub Bug);

pub static RETRY_START_CONFIRMS: Broken = Broken(Bug::RetryStartConfirms);
pub static PADDED_ERRORS: Broken = Broken(Bug::PaddedErrors);
pub static CONFIRM_WITH_RETRY: Broken = Broken(Bug::ConfirmWithRetry);
pub static EAGER_STREAM: Broken = Broken(Bug::EagerStream);

impl Protocol for Broken {
    fn name(&self) -> &'static str {
        MediaStream.name()
    }
    fn summary(&self) -> &'static str {
        "the media stream with a planted mistake"
    }
    fn roles(&self) -> &'static [RoleInfo] {
        MediaStream.roles()
    }
    fn kinds(&self) -> &'static [&'static str] {
        MediaStream.kinds()
    }
    fn codes(&self) -> &'static [(u32, &'static str)] {
        MediaStream.codes()
    }
    fn fields(&self) -> &'static [(&'static str, &'static str)] {
        MediaStream.fields()
    }
    fn locate_field(&self, field: &str, bytes: &[u8]) -> Option<Range<usize>> {
        MediaStream.locate_field(field, bytes)
    }
    fn classify(&self, bytes: &[u8]) -> Classified {
        MediaStream.classify(bytes)
    }
    fn build_frame(&self, frame: &serde_json::Value, path: &str) -> Result<Vec<u8>, SpecError> {
        MediaStream.build_frame(frame, path)
    }
    fn schema(&self) -> ProtocolSchema {
        MediaStream.schema()
    }
    fn compile(&self, scenario: &ScenarioDecl<'_>) -> Result<Box<dyn Plan>, Vec<SpecError>> {
        Ok(Box::new(BrokenPlan {
            inner: MediaStream.compile(scenario)?,
            bug: self.0,
        }))
    }
    fn stat_names(&self, role: &str) -> Vec<String> {
        MediaStream.stat_names(role)
    }
    fn error_names(&self, role: &str) -> Vec<String> {
        MediaStream.error_names(role)
    }
    fn dissector(&self) -> Dissector {
        MediaStream.dissector()
    }
    fn tshark_fields(&self) -> TsharkFields {
        MediaStream.tshark_fields()
    }
}

struct BrokenPlan {
    inner: Box<dyn Plan>,
    bug: Bug,
}

impl Plan for BrokenPlan {
    fn host_machine(&self, host: usize, ctx: &HostCtx<'_>) -> Option<Box<dyn HostMachine>> {
        let inner = self.inner.host_machine(host, ctx)?;
        Some(Box::new(BugMachine {
            inner,
            bug: self.bug,
            starts_seen: BTreeSet::new(),
            starts_sent: 0,
            extra: VecDeque::new(),
        }))
    }
    fn start_at(&self, host: usize) -> Option<SimTime> {
        self.inner.start_at(host)
    }
    fn waited_for(&self, host: usize) -> bool {
        self.inner.waited_for(host)
    }
    fn oracle(&self, addrs: &[Ipv4Addr]) -> Box<dyn Oracle> {
        self.inner.oracle(addrs)
    }
    fn ports(&self) -> Vec<u16> {
        self.inner.ports()
    }
}

struct BugMachine {
    inner: Box<dyn HostMachine>,
    bug: Bug,
    starts_seen: BTreeSet<(SocketAddr, u64)>,
    starts_sent: u32,
    extra: VecDeque<(SocketId, SocketAddr, Vec<u8>)>,
}

fn frame(kind: &str, stream_id: u64) -> Vec<u8> {
    MediaStream
        .build_frame(
            &serde_json::json!({"kind": kind, "stream_id": stream_id}),
            "$",
        )
        .expect("a valid frame")
}

impl HostMachine for BugMachine {
    fn handle(&mut self, now: SimTime, input: Input<'_>) {
        if let Input::Datagram { socket, from, data } = input
            && matches!(self.bug, Bug::RetryStartConfirms | Bug::EagerStream)
        {
            let c = MediaStream.classify(data);
            if c.kind == Some("START")
                && let Some(sid) = c.conn
                && (!self.starts_seen.insert((from, sid)) || self.bug == Bug::EagerStream)
            {
                self.inner.handle(now, input);
                let confirm = frame("START_CONFIRM", sid);
                self.inner.handle(
                    now,
                    Input::Datagram {
                        socket,
                        from,
                        data: &confirm,
                    },
                );
                return;
            }
        }
        self.inner.handle(now, input);
    }

    fn handle_timeout(&mut self, now: SimTime) {
        self.inner.handle_timeout(now);
    }

    fn poll_output(&mut self, now: SimTime, buf: &mut [u8]) -> Option<Output> {
        if let Some((socket, destination, bytes)) = self.extra.pop_front() {
            buf[..bytes.len()].copy_from_slice(&bytes);
            return Some(Output::Transmit {
                socket,
                destination,
                len: bytes.len(),
            });
        }
        let out = self.inner.poll_output(now, buf)?;
        let Output::Transmit {
            socket,
            destination,
            len,
        } = out
        else {
            return Some(out);
        };
        let c = MediaStream.classify(&buf[..len]);
        match (self.bug, c.kind) {
            (Bug::PaddedErrors, Some("ERROR")) if len < 256 => {
                buf[len..256].fill(0);
                return Some(Output::Transmit {
                    socket,
                    destination,
                    len: 256,
                });
            }
            (Bug::ConfirmWithRetry, Some("START")) => {
                self.starts_sent += 1;
                if self.starts_sent >= 2
                    && let Some(sid) = c.conn
                {
                    self.extra
                        .push_back((socket, destination, frame("START_CONFIRM", sid)));
                }
            }
            _ => {}
        }
        Some(out)
    }

    fn poll_timeout(&self) -> Option<SimTime> {
        if self.extra.is_empty() {
            self.inner.poll_timeout()
        } else {
            Some(SimTime::ZERO)
        }
    }

    fn poll_event(&mut self) -> Option<String> {
        self.inner.poll_event()
    }

    fn is_finished(&self) -> bool {
        self.extra.is_empty() && self.inner.is_finished()
    }

    fn report(&self) -> HostReport {
        self.inner.report()
    }
}
