//! Configuration of the server and the clients (docs/groupstream.md §6).
//! Defaults marked "code" come from the reference implementation's code
//! (nico-ig/UDP-Video-Streaming, see the spec); the design itself gives
//! no numbers.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The standard (server) port of the reference code (`127.0.0.1:12345`).
pub const STANDARD_PORT: u16 = 12345;

/// The server's configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// The standard port the handshake uses (code: 12345).
    pub port: u16,
    /// First port of the range the server allocates from when the
    /// requested one is taken (or 0 was asked).
    pub alloc_first: u16,
    /// Last port of that range.
    pub alloc_last: u16,
    /// Registration window from the Port ACK, ms (code: 30 s).
    pub registration_window_ms: u64,
    /// The server's default stream interval, ms (code: 10 ms).
    pub default_interval_ms: u32,
    /// Minimum stream interval, ms (the design names the threshold, no
    /// number exists: streamlab's choice 1 ms).
    pub min_interval_ms: u32,
    /// Maximum stream interval, ms (streamlab's choice 1000 ms).
    pub max_interval_ms: u32,
    /// A half-done handshake is forgotten and its port released after
    /// this long without a Port OK/NOK, ms (code: HANDSHAKE_TIMEOUT 30 s).
    pub pending_timeout_ms: u64,
    /// Movies in the catalogue (ids 0..movies).
    pub movies: u16,
    /// Frames in every movie.
    pub movie_frames: u64,
    /// Payload bytes of every frame.
    pub frame_bytes: u16,
    /// End of Movie copies sent, one interval apart.
    pub end_repeats: u8,
    /// At most this many handshakes in progress (bounded memory).
    pub max_pending: usize,
    /// At most this many groups at once (bounded memory).
    pub max_groups: usize,
    /// At most this many members per group (bounded memory).
    pub max_members: usize,
    /// Ports another program on this host holds (the server cannot bind
    /// them).
    pub occupy_ports: Vec<u16>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            port: STANDARD_PORT,
            alloc_first: 5000,
            alloc_last: 5015,
            registration_window_ms: 30_000,
            default_interval_ms: 10,
            min_interval_ms: 1,
            max_interval_ms: 1000,
            pending_timeout_ms: 30_000,
            movies: 3,
            movie_frames: 100,
            frame_bytes: 64,
            end_repeats: 3,
            max_pending: 32,
            max_groups: 8,
            max_members: 16,
            occupy_ports: Vec::new(),
        }
    }
}

impl ServerConfig {
    /// Why the configuration cannot work, if it cannot: (field, message).
    pub fn problem(&self) -> Option<(&'static str, String)> {
        if self.port == 0 {
            return Some(("port", "the standard port must be 1-65535".into()));
        }
        if self.alloc_first == 0 || self.alloc_first > self.alloc_last {
            return Some((
                "alloc_first",
                format!(
                    "the allocation range {}..={} is empty or starts at 0",
                    self.alloc_first, self.alloc_last
                ),
            ));
        }
        if self.min_interval_ms == 0 || self.min_interval_ms > self.max_interval_ms {
            return Some((
                "min_interval_ms",
                format!(
                    "thresholds {}..={} ms: min must be at least 1 and not above max",
                    self.min_interval_ms, self.max_interval_ms
                ),
            ));
        }
        if self.default_interval_ms < self.min_interval_ms
            || self.default_interval_ms > self.max_interval_ms
        {
            return Some((
                "default_interval_ms",
                format!(
                    "{} ms is outside the thresholds {}..={} ms",
                    self.default_interval_ms, self.min_interval_ms, self.max_interval_ms
                ),
            ));
        }
        if self.movies == 0 || self.movies > 255 {
            return Some(("movies", "the catalogue holds 1 to 255 movies".into()));
        }
        if self.movie_frames == 0 || self.movie_frames > 1_000_000 {
            return Some(("movie_frames", "1 to 1000000 frames".into()));
        }
        if usize::from(self.frame_bytes) > 65_507 - crate::wire::STREAM_HEADER {
            return Some(("frame_bytes", "a frame must fit one UDP datagram".into()));
        }
        if self.end_repeats == 0 {
            return Some(("end_repeats", "at least one End of Movie".into()));
        }
        if self.max_pending == 0 || self.max_pending > 4096 {
            return Some(("max_pending", "1 to 4096".into()));
        }
        if self.max_groups == 0 || self.max_groups > 1024 {
            return Some(("max_groups", "1 to 1024".into()));
        }
        if self.max_members == 0 || self.max_members > 1024 {
            return Some(("max_members", "1 to 1024".into()));
        }
        if self.registration_window_ms == 0 || self.pending_timeout_ms == 0 {
            return Some(("registration_window_ms", "timers must be positive".into()));
        }
        if self.occupy_ports.contains(&0) || self.occupy_ports.len() > 64 {
            return Some(("occupy_ports", "1 to 64 ports, none 0".into()));
        }
        None
    }

    /// The interval the server streams at, given the proposals it
    /// received (spec §5.2): the largest of its default and the
    /// proposals (0 = the default), within its thresholds.
    pub fn interval_for(&self, proposals: impl IntoIterator<Item = u32>) -> u32 {
        proposals
            .into_iter()
            .fold(self.default_interval_ms, u32::max)
            .clamp(self.min_interval_ms, self.max_interval_ms)
    }

    /// The catalogue's name of movie `id`.
    pub fn movie_name(id: u16) -> String {
        format!("movie-{id}")
    }
}

/// A client's configuration (leader or member).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ClientConfig {
    /// The port the leader requests (members: the group's port, learnt
    /// out of band).
    pub port: u16,
    /// Interval proposed in the Registration Request, ms (0: the server's
    /// default).
    pub interval_ms: u32,
    /// The leader's movie choice.
    pub movie: u16,
    /// Handshake datagrams (Port Request, Port OK/NOK) the leader sends
    /// before giving up (code: retries_limit 10).
    pub handshake_attempts: u32,
    /// Resend timeout of every request, ms (code: RETRANSMIT_TIMEOUT 3 s).
    pub resend_ms: u64,
    /// Registration Requests (and Movie Choices) sent before giving up.
    pub registration_attempts: u32,
    /// How long a registered client waits for the first Stream packet,
    /// ms (streamlab's choice: the code's 30 s registration window plus 10 s).
    pub stream_wait_ms: u64,
    /// The stream watchdog: this many intervals without a Stream packet
    /// end the session (code: STREAM_TIMEOUT 20).
    pub stream_timeout_intervals: u32,
    /// Ports another program on this host holds.
    pub occupy_ports: Vec<u16>,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            port: 5000,
            interval_ms: 0,
            movie: 0,
            handshake_attempts: 10,
            resend_ms: 3000,
            registration_attempts: 10,
            stream_wait_ms: 40_000,
            stream_timeout_intervals: 20,
            occupy_ports: Vec::new(),
        }
    }
}

impl ClientConfig {
    /// Why the configuration cannot work, if it cannot: (field, message).
    pub fn problem(&self) -> Option<(&'static str, String)> {
        if self.handshake_attempts == 0 || self.handshake_attempts > 1000 {
            return Some(("handshake_attempts", "1 to 1000".into()));
        }
        if self.registration_attempts == 0 || self.registration_attempts > 1000 {
            return Some(("registration_attempts", "1 to 1000".into()));
        }
        if self.resend_ms == 0 || self.resend_ms > 3_600_000 {
            return Some(("resend_ms", "1 ms to one hour".into()));
        }
        if self.stream_wait_ms == 0 || self.stream_timeout_intervals == 0 {
            return Some(("stream_wait_ms", "watchdogs must be positive".into()));
        }
        if self.occupy_ports.contains(&0) || self.occupy_ports.len() > 64 {
            return Some(("occupy_ports", "1 to 64 ports, none 0".into()));
        }
        None
    }
}
