//! A sans-IO WebSocket (RFC 6455) endpoint over a byte stream.
//!
//! The opening handshake is tungstenite's own client and server handshake
//! machines, run over an in-memory stream that reads what the TCP
//! connection delivered and answers `WouldBlock` when it has nothing more.
//! After the handshake, frames are written and read with tungstenite's
//! frame codec ([`tungstenite::protocol::frame::Frame`],
//! [`tungstenite::protocol::frame::FrameHeader`]); the client's masking
//! keys come from the run's seeded stream instead of the thread RNG, so that
//! a run replays byte for byte. Fragmented messages are not sent by this
//! model and are refused when received; pings are answered.

use std::collections::VecDeque;
use std::io::{self, Cursor, Read, Write};

use rand::RngCore;
use rand_chacha::ChaCha20Rng;
use tungstenite::handshake::client::{ClientHandshake, Request};
use tungstenite::handshake::server::{self as hs_server, Callback, ServerHandshake};
use tungstenite::handshake::{HandshakeError, MidHandshake};
use tungstenite::protocol::frame::coding::{Control, Data, OpCode};
use tungstenite::protocol::frame::{Frame, FrameHeader};

/// Largest frame payload accepted.
pub const MAX_FRAME_PAYLOAD: usize = 16 * 1024;
/// Most bytes buffered from the peer before a frame completes.
pub const MAX_INBOX: usize = 64 * 1024;

/// The WebSocket subprotocol the client asks for and the server accepts
/// (`Sec-WebSocket-Protocol`): its text frames are JSON signals.
/// `captures/teleport.lua` hands this subprotocol to Wireshark's JSON
/// dissector.
pub const SUBPROTOCOL: &str = "teleport-json";

/// The server's answer to the upgrade: it accepts [`SUBPROTOCOL`] when
/// asked for it.
#[derive(Clone, Copy, Debug)]
struct Subprotocol;

impl Callback for Subprotocol {
    fn on_request(
        self,
        request: &hs_server::Request,
        mut response: hs_server::Response,
    ) -> Result<hs_server::Response, hs_server::ErrorResponse> {
        let asked = request
            .headers()
            .get_all("Sec-WebSocket-Protocol")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|p| p.trim() == SUBPROTOCOL);
        if asked {
            response.headers_mut().insert(
                "Sec-WebSocket-Protocol",
                tungstenite::http::HeaderValue::from_static(SUBPROTOCOL),
            );
        }
        Ok(response)
    }
}

/// The in-memory stream the handshake machines run over.
#[derive(Debug, Default)]
struct MemStream {
    inbox: VecDeque<u8>,
    outbox: Vec<u8>,
    eof: bool,
}

impl Read for MemStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.inbox.is_empty() {
            return if self.eof {
                Ok(0)
            } else {
                Err(io::ErrorKind::WouldBlock.into())
            };
        }
        // Never past the end of an HTTP head (`\r\n\r\n`), so that the
        // handshake does not swallow the first frame.
        let (a, b) = self.inbox.as_slices();
        let head_end = a
            .iter()
            .chain(b)
            .collect::<Vec<_>>()
            .windows(4)
            .position(|w| w == [&b'\r', &b'\n', &b'\r', &b'\n'])
            .map(|p| p + 4);
        let n = head_end
            .unwrap_or(self.inbox.len())
            .min(buf.len())
            .min(self.inbox.len());
        for (slot, byte) in buf.iter_mut().zip(self.inbox.drain(..n)) {
            *slot = byte;
        }
        Ok(n)
    }
}

impl Write for MemStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.outbox.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

enum State {
    ClientHandshake(MidHandshake<ClientHandshake<MemStream>>),
    ServerHandshake(MidHandshake<ServerHandshake<MemStream, Subprotocol>>),
    Open(MemStream),
    Failed,
    Swapping,
}

/// A message read from the WebSocket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WsEvent {
    /// The opening handshake completed.
    Open,
    /// A text frame.
    Text(String),
    /// A binary frame.
    Binary(Vec<u8>),
    /// The peer sent a Close frame.
    Close,
    /// The peer broke the protocol (the reason); the endpoint is failed.
    Error(String),
}

/// One side of a WebSocket, sans-IO: bytes from TCP in, bytes for TCP out.
pub struct WsEndpoint {
    state: State,
    /// `Some` for the client: its masking keys.
    mask_rng: Option<ChaCha20Rng>,
    events: VecDeque<WsEvent>,
    close_sent: bool,
}

impl std::fmt::Debug for WsEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WsEndpoint")
            .field("open", &self.is_open())
            .field("close_sent", &self.close_sent)
            .finish()
    }
}

impl WsEndpoint {
    /// A client that asks for `ws://{host}/{path}`, its `Sec-WebSocket-Key`
    /// and masks drawn from `rng`.
    pub fn client(host: &str, path: &str, mut rng: ChaCha20Rng) -> Self {
        let mut key = [0u8; 16];
        rng.fill_bytes(&mut key);
        let key = base64(&key);
        let request = Request::builder()
            .method("GET")
            .uri(format!("ws://{host}/{path}"))
            .header("Host", host)
            .header("Connection", "Upgrade")
            .header("Upgrade", "websocket")
            .header("Sec-WebSocket-Version", "13")
            .header("Sec-WebSocket-Key", key)
            .header("Sec-WebSocket-Protocol", SUBPROTOCOL)
            .body(());
        let state = match request.map_err(|e| e.to_string()).and_then(|r| {
            ClientHandshake::start(MemStream::default(), r, None).map_err(|e| e.to_string())
        }) {
            Ok(mid) => State::ClientHandshake(mid),
            Err(_) => State::Failed,
        };
        let mut ep = WsEndpoint {
            state,
            mask_rng: Some(rng),
            events: VecDeque::new(),
            close_sent: false,
        };
        ep.drive();
        ep
    }

    /// A server waiting for the client's upgrade request.
    pub fn server() -> Self {
        WsEndpoint {
            state: State::ServerHandshake(ServerHandshake::start(
                MemStream::default(),
                Subprotocol,
                None,
            )),
            mask_rng: None,
            events: VecDeque::new(),
            close_sent: false,
        }
    }

    /// Whether the opening handshake completed (and nothing failed).
    pub fn is_open(&self) -> bool {
        matches!(self.state, State::Open(_))
    }

    fn stream(&mut self) -> Option<&mut MemStream> {
        match &mut self.state {
            State::ClientHandshake(m) => Some(m.get_mut().get_mut()),
            State::ServerHandshake(m) => Some(m.get_mut().get_mut()),
            State::Open(s) => Some(s),
            State::Failed | State::Swapping => None,
        }
    }

    /// Bytes the TCP connection delivered.
    pub fn receive(&mut self, data: &[u8]) {
        let Some(s) = self.stream() else { return };
        if s.inbox.len() + data.len() > MAX_INBOX {
            self.fail("more than 64 KiB buffered without a complete frame".into());
            return;
        }
        s.inbox.extend(data);
        self.drive();
    }

    /// The peer closed its sending side.
    pub fn receive_eof(&mut self) {
        if let Some(s) = self.stream() {
            s.eof = true;
        }
        self.drive();
    }

    fn fail(&mut self, why: String) {
        self.state = State::Failed;
        self.events.push_back(WsEvent::Error(why));
    }

    fn drive(&mut self) {
        match std::mem::replace(&mut self.state, State::Swapping) {
            State::ClientHandshake(mid) => match mid.handshake() {
                Ok((ws, _response)) => {
                    let mut ws = ws;
                    let s = std::mem::take(ws.get_mut());
                    self.state = State::Open(s);
                    self.events.push_back(WsEvent::Open);
                    self.read_frames();
                }
                Err(HandshakeError::Interrupted(mid)) => self.state = State::ClientHandshake(mid),
                Err(HandshakeError::Failure(e)) => self.fail(format!("handshake: {e}")),
            },
            State::ServerHandshake(mid) => match mid.handshake() {
                Ok(mut ws) => {
                    let s = std::mem::take(ws.get_mut());
                    self.state = State::Open(s);
                    self.events.push_back(WsEvent::Open);
                    self.read_frames();
                }
                Err(HandshakeError::Interrupted(mid)) => self.state = State::ServerHandshake(mid),
                Err(HandshakeError::Failure(e)) => self.fail(format!("handshake: {e}")),
            },
            State::Open(s) => {
                self.state = State::Open(s);
                self.read_frames();
            }
            other => self.state = other,
        }
    }

    fn read_frames(&mut self) {
        loop {
            let State::Open(s) = &mut self.state else {
                return;
            };
            let bytes: Vec<u8> = s.inbox.iter().copied().collect();
            let mut cur = Cursor::new(&bytes[..]);
            let (header, len) = match FrameHeader::parse(&mut cur) {
                Ok(Some(h)) => h,
                Ok(None) => return,
                Err(e) => return self.fail(format!("frame header: {e}")),
            };
            if len > MAX_FRAME_PAYLOAD as u64 {
                return self.fail(format!(
                    "frame of {len} bytes, more than {MAX_FRAME_PAYLOAD}"
                ));
            }
            let start = cur.position() as usize;
            let end = start + len as usize;
            if bytes.len() < end {
                return;
            }
            s.inbox.drain(..end);
            let mut payload = bytes[start..end].to_vec();
            let client_side = self.mask_rng.is_some();
            match header.mask {
                Some(m) => {
                    if client_side {
                        return self.fail("a masked frame from the server".into());
                    }
                    for (i, b) in payload.iter_mut().enumerate() {
                        *b ^= m[i % 4];
                    }
                }
                None if !client_side => {
                    return self.fail("an unmasked frame from the client".into());
                }
                None => {}
            }
            if !header.is_final {
                return self.fail("fragmented message (not used by this model)".into());
            }
            match header.opcode {
                OpCode::Data(Data::Text) => match String::from_utf8(payload) {
                    Ok(t) => self.events.push_back(WsEvent::Text(t)),
                    Err(_) => return self.fail("text frame is not UTF-8".into()),
                },
                OpCode::Data(Data::Binary) => self.events.push_back(WsEvent::Binary(payload)),
                OpCode::Control(Control::Close) => {
                    self.events.push_back(WsEvent::Close);
                    self.send_close();
                }
                OpCode::Control(Control::Ping) => self.send_frame(Frame::pong(payload)),
                OpCode::Control(Control::Pong) => {}
                op => return self.fail(format!("unexpected opcode {op}")),
            }
        }
    }

    fn send_frame(&mut self, mut frame: Frame) {
        if let Some(rng) = &mut self.mask_rng {
            let mut m = [0u8; 4];
            rng.fill_bytes(&mut m);
            frame.header_mut().mask = Some(m);
        }
        if let State::Open(s) = &mut self.state {
            let _ = frame.format(&mut s.outbox);
        }
    }

    /// Send a text frame (once open and before the close).
    pub fn send_text(&mut self, text: &str) {
        if !self.close_sent {
            self.send_frame(Frame::message(
                text.to_owned(),
                OpCode::Data(Data::Text),
                true,
            ));
        }
    }

    /// Send a binary frame (once open and before the close).
    pub fn send_binary(&mut self, data: &[u8]) {
        if !self.close_sent {
            self.send_frame(Frame::message(
                data.to_vec(),
                OpCode::Data(Data::Binary),
                true,
            ));
        }
    }

    /// Send a Ping frame (a keepalive; the peer answers with a Pong).
    pub fn send_ping(&mut self) {
        if !self.close_sent {
            self.send_frame(Frame::ping(Vec::new()));
        }
    }

    /// Send a Close frame (once).
    pub fn send_close(&mut self) {
        if !self.close_sent && self.is_open() {
            self.close_sent = true;
            self.send_frame(Frame::close(None));
        }
    }

    /// Bytes to write to the TCP connection.
    pub fn take_output(&mut self) -> Vec<u8> {
        self.stream()
            .map(|s| std::mem::take(&mut s.outbox))
            .unwrap_or_default()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<WsEvent> {
        self.events.pop_front()
    }
}

fn base64(b: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in b.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn pump(a: &mut WsEndpoint, b: &mut WsEndpoint) {
        for _ in 0..4 {
            let x = a.take_output();
            b.receive(&x);
            let y = b.take_output();
            a.receive(&y);
        }
    }

    #[test]
    fn handshake_then_frames_both_ways() {
        let mut c = WsEndpoint::client("server:8080", "session", ChaCha20Rng::seed_from_u64(1));
        let mut s = WsEndpoint::server();
        let req = c.take_output();
        assert!(String::from_utf8_lossy(&req).starts_with("GET /session HTTP/1.1\r\n"));
        s.receive(&req);
        let resp = s.take_output();
        assert!(String::from_utf8_lossy(&resp).starts_with("HTTP/1.1 101"));
        assert_eq!(s.poll_event(), Some(WsEvent::Open));
        c.receive(&resp);
        assert_eq!(c.poll_event(), Some(WsEvent::Open));
        c.send_text("hello");
        let f = c.take_output();
        assert_eq!(f[0], 0x81);
        assert_eq!(f[1], 0x80 | 5, "masked, 5 bytes");
        // Byte by byte: frames complete across segments.
        for b in &f {
            s.receive(std::slice::from_ref(b));
        }
        assert_eq!(s.poll_event(), Some(WsEvent::Text("hello".into())));
        s.send_binary(&[1, 2, 3]);
        pump(&mut s, &mut c);
        assert_eq!(c.poll_event(), Some(WsEvent::Binary(vec![1, 2, 3])));
        s.send_close();
        pump(&mut s, &mut c);
        assert_eq!(c.poll_event(), Some(WsEvent::Close));
        assert_eq!(
            s.poll_event(),
            Some(WsEvent::Close),
            "the client echoed the close"
        );
    }

    #[test]
    fn the_same_seed_gives_the_same_bytes() {
        let run = || {
            let mut c = WsEndpoint::client("h", "p", ChaCha20Rng::seed_from_u64(9));
            let mut out = c.take_output();
            let mut s = WsEndpoint::server();
            s.receive(&out);
            c.receive(&s.take_output());
            c.send_text("x");
            out.extend(c.take_output());
            out
        };
        assert_eq!(run(), run());
    }

    #[test]
    fn garbage_fails_without_panicking() {
        let mut s = WsEndpoint::server();
        s.receive(b"NOT HTTP AT ALL\r\n\r\n");
        assert!(matches!(s.poll_event(), Some(WsEvent::Error(_))));
        let mut c = WsEndpoint::client("h", "p", ChaCha20Rng::seed_from_u64(1));
        let mut s = WsEndpoint::server();
        s.receive(&c.take_output());
        c.receive(&s.take_output());
        let _ = (c.poll_event(), s.poll_event());
        s.receive(&[0x81, 0x05, 1, 2, 3, 4, 5]); // unmasked from a client
        assert!(matches!(s.poll_event(), Some(WsEvent::Error(_))));
    }

    #[test]
    fn base64_matches_rfc4648() {
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(&[0u8; 16]).len(), 24);
    }
}
