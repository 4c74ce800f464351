//! Seeded application workloads and the checking sink (`docs/msp.md` §9).
//!
//! A [`Workload`] says what one side's application sends on each
//! connection: how many messages, their sizes, bulk or paced, and whether
//! it ends with a shutdown or a STOP. [`MessageGen`] produces its messages
//! from a named seeded stream, so the peer (and the oracle) can regenerate
//! exactly what was sent. A [`Sink`] checks what arrives against the peer's
//! workload and keeps a digest of everything delivered.

use rand::{Rng, RngCore};
use rand_chacha::ChaCha20Rng;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use streamlab_core::seed::named_rng;

use crate::proto::MAX_MESSAGE;

/// How messages are handed to the endpoint.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Pattern {
    /// As fast as the window allows.
    #[default]
    Bulk,
    /// One message every `interval_ms` (later while the window is full).
    Paced {
        /// Milliseconds between messages (0: as bulk).
        interval_ms: u64,
    },
}

/// How a side ends its sending half.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum End {
    /// Shut down once every message was queued (the default).
    #[default]
    Shutdown,
    /// Shut down only after the peer shut down and every message was queued.
    ShutdownAfterPeer,
    /// Send STOP once `after_messages` messages were queued (the rest are
    /// never sent).
    Stop {
        /// Messages queued before the STOP.
        after_messages: u32,
    },
    /// Never shut down (the connection ends by the peer's STOP or a timeout).
    Never,
}

/// One side's application workload on each of its connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Workload {
    /// Messages to send (default 0).
    #[serde(default)]
    pub messages: u32,
    /// Smallest message, bytes (default 1, at least 1).
    #[serde(default = "one")]
    pub min_size: u32,
    /// Largest message, bytes (default 1024, at most 1024); sizes are drawn
    /// uniformly between the two.
    #[serde(default = "max_message")]
    pub max_size: u32,
    /// Bulk (default) or paced.
    #[serde(default)]
    pub pattern: Pattern,
    /// How the side ends its sending half (default: shutdown).
    #[serde(default)]
    pub end: End,
}

/// A compact, inlined schema: the scenario schema carries one copy per role,
/// and the scenario loader checks every value strictly with JSON paths.
impl JsonSchema for Workload {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "MspWorkload".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "object",
            "additionalProperties": false,
            "description": "Messages sent on each connection (docs/msp.md 9).",
            "properties": {
                "messages": { "type": "integer", "minimum": 0, "maximum": u32::MAX },
                "min_size": { "type": "integer", "minimum": 1, "maximum": MAX_MESSAGE },
                "max_size": { "type": "integer", "minimum": 1, "maximum": MAX_MESSAGE },
                "pattern": { "description": "\"bulk\" or {\"paced\": {\"interval_ms\": n}}" },
                "end": { "description": "\"shutdown\", \"shutdown_after_peer\", \"never\" or {\"stop\": {\"after_messages\": n}}" }
            }
        })
    }
}

fn one() -> u32 {
    1
}

fn max_message() -> u32 {
    MAX_MESSAGE as u32
}

impl Default for Workload {
    fn default() -> Self {
        Workload {
            messages: 0,
            min_size: 1,
            max_size: MAX_MESSAGE as u32,
            pattern: Pattern::Bulk,
            end: End::Shutdown,
        }
    }
}

impl Workload {
    /// Why the workload is invalid, if it is: (field, message).
    pub fn problem(&self) -> Option<(&'static str, String)> {
        if self.min_size == 0 {
            return Some((
                "min_size",
                "zero-length messages are not supported by MSP (docs/msp.md §7); the smallest is 1"
                    .into(),
            ));
        }
        if self.max_size as usize > MAX_MESSAGE {
            return Some((
                "max_size",
                format!(
                    "{} exceeds MSP's message limit of {MAX_MESSAGE} bytes (docs/msp.md §7)",
                    self.max_size
                ),
            ));
        }
        if self.min_size > self.max_size {
            return Some((
                "min_size",
                format!(
                    "min_size {} is greater than max_size {}",
                    self.min_size, self.max_size
                ),
            ));
        }
        if let End::Stop { after_messages } = self.end
            && after_messages > self.messages
        {
            return Some((
                "end",
                format!(
                    "stop after {after_messages} messages, but only {} are sent",
                    self.messages
                ),
            ));
        }
        None
    }

    /// Messages actually sent: all of them, or those before a STOP.
    pub fn sent_messages(&self) -> u32 {
        match self.end {
            End::Stop { after_messages } => after_messages,
            _ => self.messages,
        }
    }
}

/// The name of the seeded stream of host `host`'s messages.
pub fn stream_name(host: &str) -> String {
    format!("msp:workload:{host}")
}

/// The messages of one workload, in order.
#[derive(Clone, Debug)]
pub struct MessageGen {
    rng: ChaCha20Rng,
    workload: Workload,
    produced: u32,
}

impl MessageGen {
    /// The messages host `host` sends under `seed`.
    pub fn new(seed: u64, host: &str, workload: Workload) -> Self {
        MessageGen {
            rng: named_rng(seed, &stream_name(host)),
            workload,
            produced: 0,
        }
    }

    /// Messages produced so far.
    pub fn produced(&self) -> u32 {
        self.produced
    }

    /// The next message, or `None` after the workload's last.
    pub fn next_message(&mut self) -> Option<Vec<u8>> {
        if self.produced >= self.workload.sent_messages() {
            return None;
        }
        self.produced += 1;
        let lo = self.workload.min_size.max(1);
        let hi = self.workload.max_size.max(lo);
        let len = self.rng.random_range(lo..=hi) as usize;
        let mut m = vec![0u8; len];
        self.rng.fill_bytes(&mut m);
        Some(m)
    }
}

/// The digest of a message sequence: SHA-256 over each message's length
/// (u32 LE) and bytes, hex.
#[derive(Clone, Debug, Default)]
pub struct SeqDigest(Sha256);

impl SeqDigest {
    /// Add one message.
    pub fn add(&mut self, m: &[u8]) {
        self.0.update((m.len() as u32).to_le_bytes());
        self.0.update(m);
    }

    /// The digest so far, hex.
    pub fn hex(&self) -> String {
        hex::encode(self.0.clone().finalize())
    }
}

/// The digest of the first `count` messages host `host` sends under `seed`.
pub fn expected_digest(seed: u64, host: &str, workload: Workload, count: u64) -> String {
    let mut g = MessageGen::new(seed, host, workload);
    let mut d = SeqDigest::default();
    for _ in 0..count {
        match g.next_message() {
            Some(m) => d.add(&m),
            None => break,
        }
    }
    d.hex()
}

/// What a side received on one connection, checked against the peer's
/// workload.
#[derive(Clone, Debug)]
pub struct Sink {
    expected: MessageGen,
    previous: Option<Vec<u8>>,
    delivered: u64,
    bytes: u64,
    digest: SeqDigest,
    first_mismatch: Option<String>,
}

impl Sink {
    /// A sink expecting `expected`'s messages.
    pub fn new(expected: MessageGen) -> Self {
        Sink {
            expected,
            previous: None,
            delivered: 0,
            bytes: 0,
            digest: SeqDigest::default(),
            first_mismatch: None,
        }
    }

    /// One delivered message.
    pub fn deliver(&mut self, m: &[u8]) {
        self.delivered += 1;
        self.bytes += m.len() as u64;
        self.digest.add(m);
        if self.first_mismatch.is_some() {
            return;
        }
        let n = self.delivered;
        let why = match self.expected.next_message() {
            None => Some(format!(
                "message {n} ({} bytes) is beyond the {} the peer sent",
                m.len(),
                self.expected.produced()
            )),
            Some(e) if e == m => {
                self.previous = Some(e);
                None
            }
            Some(e) => Some(if self.previous.as_deref() == Some(m) {
                format!("message {n} repeats message {} (a duplicate)", n - 1)
            } else if e.len() != m.len() {
                format!(
                    "message {n} has {} bytes, the peer sent {}",
                    m.len(),
                    e.len()
                )
            } else {
                let at = e.iter().zip(m).position(|(a, b)| a != b).unwrap_or(0);
                format!("message {n} differs from what the peer sent at byte {at}")
            }),
        };
        self.first_mismatch = why;
    }

    /// Messages delivered.
    pub fn delivered(&self) -> u64 {
        self.delivered
    }

    /// Bytes delivered.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The digest of everything delivered.
    pub fn digest(&self) -> String {
        self.digest.hex()
    }

    /// The first message that was not what the peer sent next, if any.
    pub fn first_mismatch(&self) -> Option<&str> {
        self.first_mismatch.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wl(n: u32) -> Workload {
        Workload {
            messages: n,
            min_size: 1,
            max_size: 40,
            ..Workload::default()
        }
    }

    #[test]
    fn generators_are_seeded_and_bounded() {
        let a: Vec<_> = std::iter::from_fn({
            let mut g = MessageGen::new(1, "caller", wl(5));
            move || g.next_message()
        })
        .collect();
        let mut g = MessageGen::new(1, "caller", wl(5));
        assert_eq!(a.len(), 5);
        assert_eq!(g.next_message().as_ref(), a.first());
        assert!(a.iter().all(|m| (1..=40).contains(&m.len())));
        assert_ne!(
            MessageGen::new(2, "caller", wl(5)).next_message(),
            a.first().cloned()
        );
    }

    #[test]
    fn sink_names_duplicates_damage_and_extras() {
        let mut g = MessageGen::new(3, "x", wl(3));
        let msgs: Vec<_> = (0..3).filter_map(|_| g.next_message()).collect();
        let mut s = Sink::new(MessageGen::new(3, "x", wl(3)));
        s.deliver(&msgs[0]);
        s.deliver(&msgs[0]);
        assert!(s.first_mismatch().unwrap().contains("duplicate"));
        let mut s = Sink::new(MessageGen::new(3, "x", wl(3)));
        let mut bad = msgs[0].clone();
        bad[0] ^= 1;
        s.deliver(&bad);
        assert!(s.first_mismatch().unwrap().contains("byte 0"));
        let mut s = Sink::new(MessageGen::new(3, "x", wl(3)));
        for m in &msgs {
            s.deliver(m);
        }
        assert_eq!(s.first_mismatch(), None);
        assert_eq!(s.digest(), expected_digest(3, "x", wl(3), 3));
        s.deliver(b"more");
        assert!(s.first_mismatch().unwrap().contains("beyond"));
    }

    #[test]
    fn problems_are_named() {
        let mut w = wl(3);
        w.min_size = 0;
        assert_eq!(w.problem().unwrap().0, "min_size");
        let mut w = wl(3);
        w.max_size = 1025;
        assert_eq!(w.problem().unwrap().0, "max_size");
        let mut w = wl(3);
        w.end = End::Stop { after_messages: 4 };
        assert_eq!(w.problem().unwrap().0, "end");
        assert_eq!(wl(3).problem(), None);
    }
}
