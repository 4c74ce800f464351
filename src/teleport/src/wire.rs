//! Teleport's bytes (`docs/teleport.md` §3–§4): the binary commands and
//! client messages (packed, little-endian, as `CommonNetworking.h` lays
//! them out), the JSON signals, and the UDP channel packet that models a
//! WebRTC data channel. Parsing never panics; every error says what was
//! wrong.

use serde_json::{Value, json};

/// Channel ids (`data_transfer.rst`): five channels, not six.
pub mod channel {
    /// Video, unreliable, server to client.
    pub const VIDEO: u8 = 20;
    /// Video tags, unreliable, server to client.
    pub const VIDEO_TAGS: u8 = 40;
    /// Geometry, reliable and ordered, server to client.
    pub const GEOMETRY: u8 = 80;
    /// Commands, acks, handshake: reliable and ordered, both ways.
    pub const RELIABLE: u8 = 100;
    /// Poses, input, latency: unreliable, both ways.
    pub const UNRELIABLE: u8 = 120;
    /// Every channel id.
    pub const ALL: [u8; 5] = [VIDEO, VIDEO_TAGS, GEOMETRY, RELIABLE, UNRELIABLE];

    /// Whether channel `id` has the ack/resend layer.
    pub fn is_reliable(id: u8) -> bool {
        id == GEOMETRY || id == RELIABLE
    }

    /// The channel's name.
    pub fn name(id: u8) -> &'static str {
        match id {
            VIDEO => "video",
            VIDEO_TAGS => "video_tags",
            GEOMETRY => "geometry",
            RELIABLE => "reliable",
            UNRELIABLE => "unreliable",
            _ => "unknown",
        }
    }
}

/// `CommandPayloadType` values used here.
pub mod command {
    /// ShutdownCommand.
    pub const SHUTDOWN: u8 = 1;
    /// SetupCommand.
    pub const SETUP: u8 = 2;
    /// AcknowledgeHandshakeCommand.
    pub const ACKNOWLEDGE_HANDSHAKE: u8 = 3;
    /// ReconfigureVideoCommand (acked).
    pub const RECONFIGURE_VIDEO: u8 = 4;
    /// SetupLightingCommand (acked).
    pub const SETUP_LIGHTING: u8 = 12;
    /// SetupInputsCommand (acked).
    pub const SETUP_INPUTS: u8 = 15;
}

/// `ClientMessagePayloadType` values used here.
pub mod client_message {
    /// Handshake.
    pub const HANDSHAKE: u8 = 1;
    /// ReceivedResources.
    pub const RECEIVED_RESOURCES: u8 = 3;
    /// AcknowledgementMessage.
    pub const ACKNOWLEDGEMENT: u8 = 12;
}

/// `sizeof(SetupCommand)`.
pub const SETUP_LEN: usize = 171;
/// `sizeof(Handshake)` without its uids.
pub const HANDSHAKE_BASE_LEN: usize = 58;
/// `AcknowledgeHandshakeCommand` without its uids.
pub const ACK_HANDSHAKE_BASE_LEN: usize = 9;
/// `ClientMessage` header length.
pub const CLIENT_HEADER_LEN: usize = 9;
/// `AcknowledgementMessage` length.
pub const ACKNOWLEDGEMENT_LEN: usize = 17;
/// An `AckedCommand` without its body.
pub const ACKED_BASE_LEN: usize = 9;
/// Most uids a Handshake or AcknowledgeHandshake may list (bounds memory).
pub const MAX_UIDS: usize = 1024;
/// Largest body of an AckedCommand.
pub const MAX_ACKED_BODY: usize = 1024;

/// Offset of `idle_connection_timeout` in SetupCommand.
pub const SETUP_IDLE_TIMEOUT_AT: usize = 13;
/// Offset of `session_id` in SetupCommand.
pub const SETUP_SESSION_ID_AT: usize = 17;
/// Offset of `resourceCount` in Handshake.
pub const HANDSHAKE_RESOURCE_COUNT_AT: usize = 40;

/// Why bytes are not a Teleport message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// Nothing at all.
    #[error("empty payload")]
    Empty,
    /// A length that does not match the type.
    #[error("{what}: {got} bytes, expected {expected}")]
    Length {
        /// The message.
        what: &'static str,
        /// Its length.
        got: usize,
        /// What the layout demands.
        expected: usize,
    },
    /// Too many uids.
    #[error("{what}: {count} uids, more than {MAX_UIDS}")]
    TooMany {
        /// The message.
        what: &'static str,
        /// The count field.
        count: u64,
    },
    /// An unknown type byte.
    #[error("unknown {what} type {ty}")]
    UnknownType {
        /// Command or client message.
        what: &'static str,
        /// The byte.
        ty: u8,
    },
    /// A channel packet that cannot be read.
    #[error("channel packet: {0}")]
    Channel(&'static str),
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    if let Some(s) = b.get(at..at + 4) {
        a.copy_from_slice(s);
    }
    u32::from_le_bytes(a)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    if let Some(s) = b.get(at..at + 8) {
        a.copy_from_slice(s);
    }
    u64::from_le_bytes(a)
}

/// The SetupCommand fields this model uses; the rest of the 171 bytes are
/// written as zeros (`draw_distance` and friends carry no behaviour here).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SetupCommand {
    /// Inactivity timeout of the data transport, ms (@13).
    pub idle_connection_timeout: u32,
    /// The server's session id (@17).
    pub session_id: u64,
}

impl SetupCommand {
    /// The 171 bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = vec![0u8; SETUP_LEN];
        b[0] = command::SETUP;
        b[SETUP_IDLE_TIMEOUT_AT..SETUP_IDLE_TIMEOUT_AT + 4]
            .copy_from_slice(&self.idle_connection_timeout.to_le_bytes());
        b[SETUP_SESSION_ID_AT..SETUP_SESSION_ID_AT + 8]
            .copy_from_slice(&self.session_id.to_le_bytes());
        b
    }
}

/// The Handshake fields this model uses (C→S); the display and render
/// fields are written as the reference client's defaults.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Handshake {
    /// `timestamp_session_us` of the ClientMessage header.
    pub timestamp_us: i64,
    /// Uids of resources the client still holds from the same session id.
    pub resources: Vec<u64>,
}

impl Handshake {
    /// `58 + 8·n` bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(HANDSHAKE_BASE_LEN + 8 * self.resources.len());
        b.push(client_message::HANDSHAKE);
        b.extend_from_slice(&self.timestamp_us.to_le_bytes());
        b.extend_from_slice(&1920u32.to_le_bytes()); // DisplayInfo.width
        b.extend_from_slice(&1080u32.to_le_bytes()); // DisplayInfo.height
        b.extend_from_slice(&60f32.to_le_bytes()); // DisplayInfo.framerate
        b.extend_from_slice(&1f32.to_le_bytes()); // MetresPerUnit
        b.extend_from_slice(&90f32.to_le_bytes()); // FOV
        b.extend_from_slice(&1024u32.to_le_bytes()); // udpBufferSize, KB
        b.extend_from_slice(&0u32.to_le_bytes()); // maxBandwidthKpS
        b.push(0); // axesStandard
        b.push(60); // framerate
        b.push(0); // isVR
        b.extend_from_slice(&(self.resources.len() as u64).to_le_bytes());
        b.extend_from_slice(&8u32.to_le_bytes()); // maxLightsSupported
        b.extend_from_slice(&0i32.to_le_bytes()); // minimumPriority
        b.extend_from_slice(&[0, 0]); // renderingFeatures
        for uid in &self.resources {
            b.extend_from_slice(&uid.to_le_bytes());
        }
        b
    }
}

/// AcknowledgeHandshakeCommand (S→C): the visible-node set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AcknowledgeHandshake {
    /// Visible node uids.
    pub nodes: Vec<u64>,
}

impl AcknowledgeHandshake {
    /// `9 + 8·n` bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(ACK_HANDSHAKE_BASE_LEN + 8 * self.nodes.len());
        b.push(command::ACKNOWLEDGE_HANDSHAKE);
        b.extend_from_slice(&(self.nodes.len() as u64).to_le_bytes());
        for n in &self.nodes {
            b.extend_from_slice(&n.to_le_bytes());
        }
        b
    }
}

/// A server-to-client command on the reliable path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// ShutdownCommand (1 byte).
    Shutdown,
    /// SetupCommand (171 bytes).
    Setup(SetupCommand),
    /// AcknowledgeHandshakeCommand.
    AcknowledgeHandshake(AcknowledgeHandshake),
    /// An AckedCommand (ReconfigureVideo, SetupLighting, SetupInputs):
    /// type, `ack_id`, body.
    Acked {
        /// Its CommandPayloadType.
        ty: u8,
        /// Monotonic per session.
        ack_id: u64,
        /// The body, opaque here.
        body: Vec<u8>,
    },
}

impl Command {
    /// Its bytes.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Command::Shutdown => vec![command::SHUTDOWN],
            Command::Setup(s) => s.encode(),
            Command::AcknowledgeHandshake(a) => a.encode(),
            Command::Acked { ty, ack_id, body } => {
                let mut b = Vec::with_capacity(ACKED_BASE_LEN + body.len());
                b.push(*ty);
                b.extend_from_slice(&ack_id.to_le_bytes());
                b.extend_from_slice(body);
                b
            }
        }
    }

    /// Its name (a classifier kind).
    pub fn kind(&self) -> &'static str {
        match self {
            Command::Shutdown => "SHUTDOWN",
            Command::Setup(_) => "SETUP",
            Command::AcknowledgeHandshake(_) => "ACK_HANDSHAKE",
            Command::Acked { ty, .. } => acked_kind(*ty),
        }
    }

    /// Read a command.
    ///
    /// # Errors
    /// A length or type the layout does not allow.
    pub fn parse(b: &[u8]) -> Result<Command, WireError> {
        let ty = *b.first().ok_or(WireError::Empty)?;
        match ty {
            command::SHUTDOWN => exact("ShutdownCommand", b, 1).map(|()| Command::Shutdown),
            command::SETUP => {
                exact("SetupCommand", b, SETUP_LEN)?;
                Ok(Command::Setup(SetupCommand {
                    idle_connection_timeout: u32_at(b, SETUP_IDLE_TIMEOUT_AT),
                    session_id: u64_at(b, SETUP_SESSION_ID_AT),
                }))
            }
            command::ACKNOWLEDGE_HANDSHAKE => {
                let nodes = uids("AcknowledgeHandshake", b, 1, ACK_HANDSHAKE_BASE_LEN)?;
                Ok(Command::AcknowledgeHandshake(AcknowledgeHandshake {
                    nodes,
                }))
            }
            command::RECONFIGURE_VIDEO | command::SETUP_LIGHTING | command::SETUP_INPUTS => {
                if b.len() < ACKED_BASE_LEN || b.len() > ACKED_BASE_LEN + MAX_ACKED_BODY {
                    return Err(WireError::Length {
                        what: "AckedCommand",
                        got: b.len(),
                        expected: ACKED_BASE_LEN,
                    });
                }
                Ok(Command::Acked {
                    ty,
                    ack_id: u64_at(b, 1),
                    body: b[ACKED_BASE_LEN..].to_vec(),
                })
            }
            ty => Err(WireError::UnknownType {
                what: "command",
                ty,
            }),
        }
    }
}

/// The kind name of an acked command type.
pub fn acked_kind(ty: u8) -> &'static str {
    match ty {
        command::RECONFIGURE_VIDEO => "RECONFIGURE_VIDEO",
        command::SETUP_LIGHTING => "SETUP_LIGHTING",
        command::SETUP_INPUTS => "SETUP_INPUTS",
        _ => "ACKED_COMMAND",
    }
}

/// A client-to-server message on the reliable path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientMessage {
    /// Handshake.
    Handshake(Handshake),
    /// AcknowledgementMessage of an AckedCommand.
    Acknowledgement {
        /// Header timestamp.
        timestamp_us: i64,
        /// The acknowledged `ack_id`.
        ack_id: u64,
    },
    /// ReceivedResources: the uids the client now holds.
    ReceivedResources {
        /// Header timestamp.
        timestamp_us: i64,
        /// The uids.
        uids: Vec<u64>,
    },
}

impl ClientMessage {
    /// Its bytes.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            ClientMessage::Handshake(h) => h.encode(),
            ClientMessage::Acknowledgement {
                timestamp_us,
                ack_id,
            } => {
                let mut b = Vec::with_capacity(ACKNOWLEDGEMENT_LEN);
                b.push(client_message::ACKNOWLEDGEMENT);
                b.extend_from_slice(&timestamp_us.to_le_bytes());
                b.extend_from_slice(&ack_id.to_le_bytes());
                b
            }
            ClientMessage::ReceivedResources { timestamp_us, uids } => {
                let mut b = Vec::with_capacity(CLIENT_HEADER_LEN + 8 + 8 * uids.len());
                b.push(client_message::RECEIVED_RESOURCES);
                b.extend_from_slice(&timestamp_us.to_le_bytes());
                b.extend_from_slice(&(uids.len() as u64).to_le_bytes());
                for u in uids {
                    b.extend_from_slice(&u.to_le_bytes());
                }
                b
            }
        }
    }

    /// Its name (a classifier kind).
    pub fn kind(&self) -> &'static str {
        match self {
            ClientMessage::Handshake(_) => "HANDSHAKE",
            ClientMessage::Acknowledgement { .. } => "ACKNOWLEDGEMENT",
            ClientMessage::ReceivedResources { .. } => "RECEIVED_RESOURCES",
        }
    }

    /// Read a client message.
    ///
    /// # Errors
    /// A length or type the layout does not allow.
    pub fn parse(b: &[u8]) -> Result<ClientMessage, WireError> {
        let ty = *b.first().ok_or(WireError::Empty)?;
        let ts = u64_at(b, 1) as i64;
        match ty {
            client_message::HANDSHAKE => {
                let resources = uids(
                    "Handshake",
                    b,
                    HANDSHAKE_RESOURCE_COUNT_AT,
                    HANDSHAKE_BASE_LEN,
                )?;
                Ok(ClientMessage::Handshake(Handshake {
                    timestamp_us: ts,
                    resources,
                }))
            }
            client_message::ACKNOWLEDGEMENT => {
                exact("AcknowledgementMessage", b, ACKNOWLEDGEMENT_LEN)?;
                Ok(ClientMessage::Acknowledgement {
                    timestamp_us: ts,
                    ack_id: u64_at(b, CLIENT_HEADER_LEN),
                })
            }
            client_message::RECEIVED_RESOURCES => {
                let uids = uids(
                    "ReceivedResources",
                    b,
                    CLIENT_HEADER_LEN,
                    CLIENT_HEADER_LEN + 8,
                )?;
                Ok(ClientMessage::ReceivedResources {
                    timestamp_us: ts,
                    uids,
                })
            }
            ty => Err(WireError::UnknownType {
                what: "client message",
                ty,
            }),
        }
    }
}

fn exact(what: &'static str, b: &[u8], expected: usize) -> Result<(), WireError> {
    if b.len() == expected {
        Ok(())
    } else {
        Err(WireError::Length {
            what,
            got: b.len(),
            expected,
        })
    }
}

/// The uids of a message whose count (u64) is at `count_at` and whose
/// fixed part is `base` bytes: the length must be `base + 8·count`.
fn uids(what: &'static str, b: &[u8], count_at: usize, base: usize) -> Result<Vec<u64>, WireError> {
    if b.len() < base {
        return Err(WireError::Length {
            what,
            got: b.len(),
            expected: base,
        });
    }
    let count = u64_at(b, count_at);
    if count > MAX_UIDS as u64 {
        return Err(WireError::TooMany { what, count });
    }
    let n = count as usize;
    exact(what, b, base + 8 * n)?;
    Ok((0..n).map(|i| u64_at(b, base + 8 * i)).collect())
}

/// Which way a reliable-path payload goes decides how it is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Server to client: a [`Command`].
    ToClient,
    /// Client to server: a [`ClientMessage`].
    ToServer,
}

/// The kind of a reliable-path payload, or why it is malformed.
pub fn payload_kind(dir: Direction, b: &[u8]) -> Result<&'static str, WireError> {
    match dir {
        Direction::ToClient => Command::parse(b).map(|c| c.kind()),
        Direction::ToServer => ClientMessage::parse(b).map(|c| c.kind()),
    }
}

// ---------------------------------------------------------------------------
// Channel packets (UDP)

/// First byte of every channel packet.
pub const CHANNEL_MAGIC: u8 = 0x54;
/// Channel packet header length.
pub const CHANNEL_HEADER_LEN: usize = 8;
/// Flag: the packet acknowledges `seq` on a reliable channel.
pub const FLAG_ACK: u8 = 0x01;
/// Flag: sent by the server.
pub const FLAG_FROM_SERVER: u8 = 0x02;
/// Flag: the channel-open request (DCEP DATA_CHANNEL_OPEN in WebRTC), on
/// channel 100 before anything else.
pub const FLAG_OPEN: u8 = 0x04;
/// Largest channel payload.
pub const MAX_CHANNEL_PAYLOAD: usize = 1400;

/// One UDP datagram of a data channel: magic, channel id, flags, reserved
/// byte, `seq` u32 LE, payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChannelPacket<'a> {
    /// The channel id.
    pub channel: u8,
    /// Flags.
    pub flags: u8,
    /// Per channel and direction; for an ACK, the acknowledged seq.
    pub seq: u32,
    /// The payload.
    pub payload: &'a [u8],
}

impl<'a> ChannelPacket<'a> {
    /// Read a datagram.
    ///
    /// # Errors
    /// Wrong magic, unknown channel, a length out of bounds.
    pub fn parse(b: &'a [u8]) -> Result<Self, WireError> {
        if b.len() < CHANNEL_HEADER_LEN {
            return Err(WireError::Channel("shorter than the 8-byte header"));
        }
        if b[0] != CHANNEL_MAGIC {
            return Err(WireError::Channel("bad magic"));
        }
        if !channel::ALL.contains(&b[1]) {
            return Err(WireError::Channel("unknown channel id"));
        }
        if b[2] & !(FLAG_ACK | FLAG_FROM_SERVER | FLAG_OPEN) != 0 {
            return Err(WireError::Channel("unknown flag"));
        }
        if b.len() - CHANNEL_HEADER_LEN > MAX_CHANNEL_PAYLOAD {
            return Err(WireError::Channel("payload too long"));
        }
        Ok(ChannelPacket {
            channel: b[1],
            flags: b[2],
            seq: u32_at(b, 4),
            payload: &b[CHANNEL_HEADER_LEN..],
        })
    }

    /// Write it into `buf`; returns its length, or `None` if it does not fit.
    pub fn emit(&self, buf: &mut [u8]) -> Option<usize> {
        let len = CHANNEL_HEADER_LEN + self.payload.len();
        let out = buf.get_mut(..len)?;
        out[0] = CHANNEL_MAGIC;
        out[1] = self.channel;
        out[2] = self.flags;
        out[3] = 0;
        out[4..8].copy_from_slice(&self.seq.to_le_bytes());
        out[8..].copy_from_slice(self.payload);
        Some(len)
    }

    /// Its bytes.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = vec![0u8; CHANNEL_HEADER_LEN + self.payload.len()];
        let _ = self.emit(&mut v);
        v
    }

    /// Which way it goes.
    pub fn direction(&self) -> Direction {
        if self.flags & FLAG_FROM_SERVER != 0 {
            Direction::ToClient
        } else {
            Direction::ToServer
        }
    }

    /// Its classifier kind.
    pub fn kind(&self) -> &'static str {
        if self.flags & FLAG_OPEN != 0 {
            return if self.flags & FLAG_ACK != 0 {
                "CHANNEL_OPEN_ACK"
            } else {
                "CHANNEL_OPEN"
            };
        }
        if self.flags & FLAG_ACK != 0 {
            return "CHANNEL_ACK";
        }
        match self.channel {
            channel::VIDEO => "VIDEO",
            channel::VIDEO_TAGS => "VIDEO_TAGS",
            channel::GEOMETRY => "GEOMETRY",
            channel::UNRELIABLE => "UNRELIABLE",
            _ => payload_kind(self.direction(), self.payload).unwrap_or("RELIABLE"),
        }
    }
}

// ---------------------------------------------------------------------------
// JSON signals

/// The signals this model exchanges on the WebSocket's text frames.
#[derive(Clone, Debug, PartialEq)]
pub enum Signal {
    /// C→S, repeated until answered.
    Connect {
        /// 0 = new, else the clientID of a reconnect.
        client_id: u64,
        /// Who the client says it is.
        identity: String,
    },
    /// S→C.
    ConnectResponse {
        /// The client's id.
        client_id: u64,
        /// The server's id.
        server_id: u64,
    },
    /// S→C, SDP (opaque).
    Offer {
        /// The SDP.
        sdp: String,
    },
    /// C→S, SDP (opaque).
    Answer {
        /// The SDP.
        sdp: String,
    },
    /// Both ways, ICE (opaque).
    Candidate {
        /// The candidate line.
        candidate: String,
    },
    /// C→S.
    Disconnect,
}

/// Largest JSON text accepted.
pub const MAX_SIGNAL_LEN: usize = 4096;

impl Signal {
    /// Its `teleport-signal-type`.
    pub fn kind(&self) -> &'static str {
        match self {
            Signal::Connect { .. } => "connect",
            Signal::ConnectResponse { .. } => "connect-response",
            Signal::Offer { .. } => "offer",
            Signal::Answer { .. } => "answer",
            Signal::Candidate { .. } => "candidate",
            Signal::Disconnect => "disconnect",
        }
    }

    /// Its JSON text.
    pub fn to_json(&self) -> String {
        let v = match self {
            Signal::Connect {
                client_id,
                identity,
            } => json!({"teleport-signal-type":"connect","content":{
                "clientID": client_id, "teleport":"0.9",
                "identity": {"provider":"streamlab","subject": identity,"displayName": identity},
                "capabilities":{}}}),
            Signal::ConnectResponse {
                client_id,
                server_id,
            } => json!({"teleport-signal-type":"connect-response","content":{
                "clientID": client_id, "serverID": server_id}}),
            Signal::Offer { sdp } => json!({"teleport-signal-type":"offer","sdp": sdp}),
            Signal::Answer { sdp } => json!({"teleport-signal-type":"answer","id":"1","sdp": sdp}),
            Signal::Candidate { candidate } => json!({"teleport-signal-type":"candidate",
                "candidate": candidate, "id":"1","mid":"0","mlineindex":0}),
            Signal::Disconnect => json!({"teleport-signal-type":"disconnect"}),
        };
        v.to_string()
    }

    /// Read a JSON text; unknown members are ignored.
    ///
    /// # Errors
    /// Not JSON, too long, no or an unknown `teleport-signal-type`, a
    /// missing member.
    pub fn parse(text: &str) -> Result<Signal, String> {
        if text.len() > MAX_SIGNAL_LEN {
            return Err(format!(
                "signal of {} bytes, more than {MAX_SIGNAL_LEN}",
                text.len()
            ));
        }
        let v: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
        let ty = v
            .get("teleport-signal-type")
            .and_then(Value::as_str)
            .ok_or("no teleport-signal-type")?;
        let s = |k: &str| -> Result<String, String> {
            v.get(k)
                .and_then(Value::as_str)
                .map(str::to_string)
                .ok_or_else(|| format!("{ty}: no string {k}"))
        };
        let content = v.get("content");
        let num = |k: &str| content.and_then(|c| c.get(k)).and_then(Value::as_u64);
        match ty {
            "connect" => Ok(Signal::Connect {
                client_id: num("clientID").ok_or("connect: no content.clientID")?,
                identity: content
                    .and_then(|c| c.get("identity"))
                    .and_then(|i| i.get("subject"))
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
            }),
            "connect-response" => Ok(Signal::ConnectResponse {
                client_id: num("clientID").ok_or("connect-response: no content.clientID")?,
                server_id: num("serverID").ok_or("connect-response: no content.serverID")?,
            }),
            "offer" => Ok(Signal::Offer { sdp: s("sdp")? }),
            "answer" => Ok(Signal::Answer { sdp: s("sdp")? }),
            "candidate" => Ok(Signal::Candidate {
                candidate: s("candidate")?,
            }),
            "disconnect" => Ok(Signal::Disconnect),
            other => Err(format!("unknown teleport-signal-type {other:?}")),
        }
    }
}

/// The UDP port an SDP of this model announces (`m=application <port>`).
pub fn sdp_port(sdp: &str) -> Option<u16> {
    sdp.lines()
        .find_map(|l| l.trim().strip_prefix("m=application "))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|p| p.parse().ok())
}

/// An SDP announcing UDP port `port` (opaque to everyone but this model).
pub fn make_sdp(port: u16) -> String {
    format!(
        "v=0\r\no=- 0 0 IN IP4 0.0.0.0\r\ns=-\r\nm=application {port} UDP/DTLS/SCTP webrtc-datachannel\r\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn layouts_have_the_documented_sizes_and_offsets() {
        let s = SetupCommand {
            idle_connection_timeout: 5000,
            session_id: 0x0102_0304_0506_0708,
        };
        let b = s.encode();
        assert_eq!(b.len(), 171);
        assert_eq!(&b[13..17], &5000u32.to_le_bytes());
        assert_eq!(&b[17..25], &[8, 7, 6, 5, 4, 3, 2, 1]);
        assert_eq!(Command::parse(&b), Ok(Command::Setup(s)));
        let h = Handshake {
            timestamp_us: 7,
            resources: vec![1, 2, 3],
        };
        let hb = h.encode();
        assert_eq!(hb.len(), 58 + 24);
        assert_eq!(&hb[40..48], &3u64.to_le_bytes());
        assert_eq!(ClientMessage::parse(&hb), Ok(ClientMessage::Handshake(h)));
        let a = AcknowledgeHandshake { nodes: vec![9] };
        assert_eq!(a.encode().len(), 17);
        assert_eq!(
            Command::parse(&a.encode()),
            Ok(Command::AcknowledgeHandshake(a))
        );
        let ack = ClientMessage::Acknowledgement {
            timestamp_us: 1,
            ack_id: 42,
        };
        assert_eq!(ack.encode().len(), 17);
        assert_eq!(ClientMessage::parse(&ack.encode()), Ok(ack));
        assert_eq!(Command::parse(&[1]), Ok(Command::Shutdown));
        let rc = Command::Acked {
            ty: command::RECONFIGURE_VIDEO,
            ack_id: 3,
            body: vec![1, 2],
        };
        assert_eq!(rc.encode().len(), 11);
        assert_eq!(Command::parse(&rc.encode()), Ok(rc));
    }

    #[test]
    fn wrong_lengths_are_refused() {
        let mut b = SetupCommand {
            idle_connection_timeout: 1,
            session_id: 1,
        }
        .encode();
        b.push(0);
        assert!(matches!(
            Command::parse(&b),
            Err(WireError::Length { got: 172, .. })
        ));
        let mut h = Handshake {
            timestamp_us: 0,
            resources: vec![1],
        }
        .encode();
        h.truncate(60);
        assert!(ClientMessage::parse(&h).is_err());
        let mut big = Handshake {
            timestamp_us: 0,
            resources: vec![],
        }
        .encode();
        big[40..48].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(matches!(
            ClientMessage::parse(&big),
            Err(WireError::TooMany { .. })
        ));
        assert_eq!(Command::parse(&[]), Err(WireError::Empty));
        assert!(Command::parse(&[1, 0]).is_err());
        assert!(Command::parse(&[99]).is_err());
    }

    #[test]
    fn signals_round_trip_and_ignore_unknown_members() {
        for s in [
            Signal::Connect {
                client_id: 0,
                identity: "alice".into(),
            },
            Signal::ConnectResponse {
                client_id: 5,
                server_id: 6,
            },
            Signal::Offer {
                sdp: make_sdp(9000),
            },
            Signal::Answer {
                sdp: make_sdp(49152),
            },
            Signal::Candidate {
                candidate: "candidate:1 1 UDP 1 10.0.0.1 9 typ host".into(),
            },
            Signal::Disconnect,
        ] {
            assert_eq!(
                Signal::parse(&s.to_json()),
                Ok(s.clone()),
                "{}",
                s.to_json()
            );
        }
        let extra = r#"{"teleport-signal-type":"connect","content":{"clientID":3,"new":1},"x":2}"#;
        assert!(matches!(
            Signal::parse(extra),
            Ok(Signal::Connect { client_id: 3, .. })
        ));
        assert!(Signal::parse("{}").is_err());
        assert!(Signal::parse("[").is_err());
        assert!(Signal::parse(r#"{"teleport-signal-type":"nope"}"#).is_err());
        assert_eq!(sdp_port(&make_sdp(1234)), Some(1234));
    }

    #[test]
    fn channel_packets_round_trip() {
        let p = ChannelPacket {
            channel: channel::RELIABLE,
            flags: FLAG_FROM_SERVER,
            seq: 7,
            payload: &[1],
        };
        let v = p.to_vec();
        assert_eq!(v, vec![0x54, 100, 2, 0, 7, 0, 0, 0, 1]);
        assert_eq!(ChannelPacket::parse(&v), Ok(p));
        assert_eq!(p.kind(), "SHUTDOWN");
        assert!(ChannelPacket::parse(&[0x54, 21, 0, 0, 0, 0, 0, 0]).is_err());
        assert!(ChannelPacket::parse(&[0x55, 20, 0, 0, 0, 0, 0, 0]).is_err());
        assert!(ChannelPacket::parse(&[0x54, 20, 0x80, 0, 0, 0, 0, 0]).is_err());
    }

    proptest! {
        #[test]
        fn parsers_never_panic(b in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = Command::parse(&b);
            let _ = ClientMessage::parse(&b);
            if let Ok(p) = ChannelPacket::parse(&b) {
                let _ = p.kind();
                prop_assert_eq!(p.to_vec(), b.clone());
            }
            let _ = Signal::parse(&String::from_utf8_lossy(&b));
        }
    }
}
