//! Deliberately broken protocol machines, built only in tests: each wraps
//! the real media-stream machines and plants one mistake of the kind a
//! scenario suite misses.

use std::collections::{BTreeSet, VecDeque};
use std::net::SocketAddr;

use streamlab_core::host::{HostMachine, HostReport, Input, Output, SocketId};
use streamlab_core::sut::{Protocol, Rewrapped};
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

impl Broken {
    /// The media stream with this mistake planted in every host machine.
    pub fn protocol(&self) -> &'static dyn Protocol {
        let bug = self.0;
        Rewrapped::new(
            &MediaStream,
            "the media stream with a planted mistake",
            move |_, _, inner| -> Box<dyn HostMachine> {
                Box::new(BugMachine {
                    inner,
                    bug,
                    starts_seen: BTreeSet::new(),
                    starts_sent: 0,
                    extra: VecDeque::new(),
                })
            },
        )
        .leak()
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
