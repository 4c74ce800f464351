//! Teleport's sans-IO client and server (`docs/teleport.md` §5–§7), each a
//! [`streamlab_core::host::HostMachine`]: a TCP connection carrying the
//! WebSocket signaling, and one UDP socket carrying the five data channels.

pub mod channels;
pub mod client;
pub mod server;

pub use channels::{Channels, RTO};
pub use client::{CLIENT_STATS, Client, ClientConfig, SessionRecord};
pub use server::{SERVER_STATS, Server, ServerConfig, ServerSessionRecord};

use serde::Serialize;
use streamlab_core::time::SimTime;

/// The phases of the seed's state diagram; `Ended` is its final state
/// (`[*]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum Phase {
    /// Locating and connecting to the server (TCP connect, WebSocket
    /// upgrade).
    Discovery,
    /// The WebSocket is open: `connect`, `offer`/`answer`/`candidate`.
    Signaling,
    /// SetupCommand received (client) or sent (server): Handshake and
    /// AcknowledgeHandshake.
    Handshake,
    /// AcknowledgeHandshake received (client) or sent (server).
    Streaming,
    /// ShutdownCommand, `disconnect`, idle timeout or transport loss.
    Disconnecting,
    /// The session is over (`[*]`).
    Ended,
}

impl Phase {
    /// Its name.
    pub fn name(self) -> &'static str {
        match self {
            Phase::Discovery => "Discovery",
            Phase::Signaling => "Signaling",
            Phase::Handshake => "Handshake",
            Phase::Streaming => "Streaming",
            Phase::Disconnecting => "Disconnecting",
            Phase::Ended => "Ended",
        }
    }

    /// Its phase by name.
    pub fn from_name(s: &str) -> Option<Phase> {
        [
            Phase::Discovery,
            Phase::Signaling,
            Phase::Handshake,
            Phase::Streaming,
            Phase::Disconnecting,
            Phase::Ended,
        ]
        .into_iter()
        .find(|p| p.name() == s)
    }
}

/// Whether `from → to` is an edge of the seed's diagram. `Ended →
/// Discovery` is a new session (a reconnect, "return to Discovery");
/// `Discovery → Ended` is a client that could not reach its server, which
/// the seed leaves implicit (`docs/teleport.md` §5).
pub fn allowed_transition(from: Phase, to: Phase) -> bool {
    use Phase::*;
    matches!(
        (from, to),
        (Discovery, Signaling)
            | (Signaling, Handshake)
            | (Handshake, Streaming)
            | (Streaming, Disconnecting)
            | (Streaming, Streaming)
            | (Disconnecting, Ended)
            | (Signaling, Ended)
            | (Handshake, Ended)
            | (Discovery, Ended)
            | (Ended, Discovery)
    )
}

/// `avs::StreamingConnectionState`, reported as a stat.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[allow(non_camel_case_types, clippy::upper_case_acronyms)]
pub enum ConnectionState {
    /// Not configured yet.
    UNINITIALIZED,
    /// WebSocket open, awaiting WebRTC negotiation.
    NEW_UNCONNECTED,
    /// SDP/ICE exchange.
    CONNECTING,
    /// The data channels are open.
    CONNECTED,
    /// Clean shutdown.
    DISCONNECTED,
    /// Unrecoverable transport error.
    FAILED,
    /// The WebSocket was closed by the peer.
    CLOSED,
    /// Internal error.
    ERROR_STATE,
}

/// Most phase-history entries a host keeps per report (the first ones;
/// later ones are counted).
pub const MAX_HISTORY: usize = 64;

/// A bounded phase history: `(phase, at_ms)`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct History {
    /// The entries, oldest first.
    pub entries: Vec<(Phase, u64)>,
    /// Entries not kept.
    pub dropped: u64,
}

impl History {
    /// Record entering `p` at `now`.
    pub fn push(&mut self, p: Phase, now: SimTime) {
        if self.entries.len() < MAX_HISTORY {
            self.entries.push((p, now.as_millis()));
        } else {
            self.dropped += 1;
        }
    }

    /// As JSON: `["Discovery@0", …]`.
    pub fn to_json(&self) -> serde_json::Value {
        self.entries
            .iter()
            .map(|(p, t)| serde_json::Value::String(format!("{}@{t}", p.name())))
            .collect()
    }
}

/// The reconnect backoff before attempt `n` (1-based): 500 ms doubling,
/// clamped to 4000 ms.
pub fn backoff_ms(n: u32) -> u64 {
    500u64
        .saturating_mul(1u64 << n.saturating_sub(1).min(16))
        .min(4000)
}

/// Most resource uids a client caches.
pub const MAX_CACHE: usize = 256;
/// The connect resend interval.
pub const CONNECT_RESEND_MS: u64 = 5000;
/// The AckedCommand resend interval.
pub const ACKED_RESEND_MS: u64 = 3000;
/// The default idle timeout.
pub const DEFAULT_IDLE_TIMEOUT_MS: u32 = 5000;

/// The uid of resource `i` of session `session_id` (stable per session).
pub fn resource_uid(session_id: u64, i: u32) -> u64 {
    session_id
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(u64::from(i) + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_clamps() {
        assert_eq!(
            (1..=6).map(backoff_ms).collect::<Vec<_>>(),
            vec![500, 1000, 2000, 4000, 4000, 4000]
        );
    }

    #[test]
    fn only_the_diagrams_edges_are_allowed() {
        assert!(allowed_transition(Phase::Signaling, Phase::Handshake));
        assert!(!allowed_transition(Phase::Signaling, Phase::Streaming));
        assert!(!allowed_transition(Phase::Streaming, Phase::Handshake));
        assert!(!allowed_transition(Phase::Handshake, Phase::Disconnecting));
        assert!(!allowed_transition(Phase::Disconnecting, Phase::Streaming));
        assert_eq!(Phase::from_name("Streaming"), Some(Phase::Streaming));
    }
}
