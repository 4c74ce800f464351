//! The wire format (docs/groupstream.md §2): every integer big-endian,
//! every message one UDP datagram.
//!
//! | kind | type | layout | length |
//! |---|---|---|---|
//! | Port Request | 0x01 | Type u8, Seq u64, Port u16 | 11 |
//! | Port Allocated | 0x02 | Type u8, Seq u64, Port u16 | 11 |
//! | Port OK/NOK | 0x04 | Type u8, Seq u64, Port u16, F u8 (1 OK, 0 NOK) | 12 |
//! | Port ACK | 0x08 | Type u8, Seq u64 | 9 |
//! | ACK | 0x00 | Type u8, Seq u64 | 9 |
//! | Registration Request | 0x01 | Type u8, Seq u64, Interval u32 (ms) | 13 |
//! | Movies Available | 0x02 | Type u8, Seq u64, Count u8, Count × (Id u16, Len u8, Name) | 10 + Σ(3 + Len) |
//! | Movie Choice | 0x04 | Type u8, Seq u64, Movie u16 | 11 |
//! | Stream | 0x10 | Type u8, Seq u64 (frame index), Movie u16, Payload | ≥ 11 |
//! | End of Movie | 0x20 | Type u8, Seq u64 (frames in the movie), Movie u16 | 11 |
//!
//! The design reuses type values between its handshake and its stream
//! phase; each reused value has a distinct length, so a datagram names its
//! message by itself. [`parse`] never panics.

use std::fmt;

/// Type byte of Port Request and Registration Request.
pub const T_REQUEST: u8 = 0x01;
/// Type byte of Port Allocated and Movies Available.
pub const T_OFFER: u8 = 0x02;
/// Type byte of Port OK/NOK and Movie Choice.
pub const T_ANSWER: u8 = 0x04;
/// Type byte of Port ACK.
pub const T_PORT_ACK: u8 = 0x08;
/// Type byte of ACK (registration and movie choice).
pub const T_ACK: u8 = 0x00;
/// Type byte of Stream.
pub const T_STREAM: u8 = 0x10;
/// Type byte of End of Movie.
pub const T_END: u8 = 0x20;

/// Length of Port Request, Port Allocated, Movie Choice, End of Movie.
pub const LEN_PORT: usize = 11;
/// Length of Port OK/NOK.
pub const LEN_PORT_ANSWER: usize = 12;
/// Length of Port ACK and ACK.
pub const LEN_ACK: usize = 9;
/// Length of Registration Request.
pub const LEN_REGISTRATION: usize = 13;
/// Header length of Stream (payload follows).
pub const STREAM_HEADER: usize = 11;
/// Fixed part of Movies Available.
pub const MOVIES_HEADER: usize = 10;

/// Byte offsets of the fields.
pub mod field {
    use std::ops::Range;
    /// Type.
    pub const TYPE: Range<usize> = 0..1;
    /// Seq.
    pub const SEQ: Range<usize> = 1..9;
    /// Port (Port Request, Port Allocated, Port OK/NOK).
    pub const PORT: Range<usize> = 9..11;
    /// F (Port OK/NOK).
    pub const FLAG: Range<usize> = 11..12;
    /// Interval, ms (Registration Request).
    pub const INTERVAL: Range<usize> = 9..13;
    /// Movie id (Movie Choice, Stream, End of Movie).
    pub const MOVIE: Range<usize> = 9..11;
    /// Movie count (Movies Available).
    pub const COUNT: Range<usize> = 9..10;
}

/// One entry of Movies Available.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MovieEntry {
    /// Its id.
    pub id: u16,
    /// Its name (at most 255 bytes on the wire).
    pub name: String,
}

/// A message, by kind.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// 0x01, 11 bytes: a leader asks for `port` (0: any).
    PortRequest {
        /// Seq.
        seq: u64,
        /// The requested port.
        port: u16,
    },
    /// 0x02, 11 bytes: the server allocated `port`.
    PortAllocated {
        /// Seq of the request answered.
        seq: u64,
        /// The allocated port.
        port: u16,
    },
    /// 0x04, 12 bytes: the leader could (`ok`) or could not bind `port`.
    PortAnswer {
        /// Seq.
        seq: u64,
        /// The port answered about.
        port: u16,
        /// F: true = bound.
        ok: bool,
    },
    /// 0x08, 9 bytes: the server acknowledges a Port OK/NOK.
    PortAck {
        /// Seq of the answer acknowledged.
        seq: u64,
    },
    /// 0x00, 9 bytes: the server acknowledges a registration or a choice.
    Ack {
        /// Seq acknowledged.
        seq: u64,
    },
    /// 0x01, 13 bytes: a member registers, proposing an interval.
    Registration {
        /// Seq.
        seq: u64,
        /// Proposed interval between stream packets, ms (0: the server's default).
        interval_ms: u32,
    },
    /// 0x02, variable: the server's catalogue, to the leader.
    MoviesAvailable {
        /// Seq.
        seq: u64,
        /// The movies.
        movies: Vec<MovieEntry>,
    },
    /// 0x04, 11 bytes: the leader's choice.
    MovieChoice {
        /// Seq.
        seq: u64,
        /// The movie id.
        movie: u16,
    },
    /// 0x10: one frame of the movie.
    Stream {
        /// Frame index, from 0.
        seq: u64,
        /// The movie id.
        movie: u16,
        /// The payload.
        payload: Vec<u8>,
    },
    /// 0x20, 11 bytes: the movie ended after `frames` frames.
    End {
        /// Frames in the movie.
        frames: u64,
        /// The movie id.
        movie: u16,
    },
}

/// Why bytes are no message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ParseError {
    /// No bytes.
    Empty,
    /// A type byte no message has.
    UnknownType(u8),
    /// A known type with a length none of its messages has.
    BadLength {
        /// The type byte.
        ty: u8,
        /// The datagram's length.
        len: usize,
    },
    /// Port OK/NOK with F other than 0 or 1.
    BadFlag(u8),
    /// Movies Available whose entries do not exactly fill the datagram.
    BadCatalogue(&'static str),
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseError::Empty => f.write_str("empty datagram"),
            ParseError::UnknownType(t) => write!(f, "unknown type 0x{t:02x}"),
            ParseError::BadLength { ty, len } => {
                write!(
                    f,
                    "type 0x{ty:02x} with a length of {len} bytes, which no message of that type has"
                )
            }
            ParseError::BadFlag(v) => write!(f, "Port OK/NOK flag {v} (must be 0 or 1)"),
            ParseError::BadCatalogue(why) => write!(f, "Movies Available: {why}"),
        }
    }
}

impl std::error::Error for ParseError {}

fn u64_at(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    if let Some(s) = b.get(field::SEQ) {
        a.copy_from_slice(s);
    }
    u64::from_be_bytes(a)
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    match (b.get(at), b.get(at + 1)) {
        (Some(h), Some(l)) => u16::from_be_bytes([*h, *l]),
        _ => 0,
    }
}

/// Read one datagram.
///
/// # Errors
/// The bytes are no message of the spec (see [`ParseError`]).
pub fn parse(b: &[u8]) -> Result<Message, ParseError> {
    let Some(&ty) = b.first() else {
        return Err(ParseError::Empty);
    };
    let len = b.len();
    let bad = Err(ParseError::BadLength { ty, len });
    let seq = u64_at(b);
    match ty {
        T_ACK if len == LEN_ACK => Ok(Message::Ack { seq }),
        T_PORT_ACK if len == LEN_ACK => Ok(Message::PortAck { seq }),
        T_REQUEST if len == LEN_PORT => Ok(Message::PortRequest {
            seq,
            port: u16_at(b, 9),
        }),
        T_REQUEST if len == LEN_REGISTRATION => {
            let mut a = [0u8; 4];
            a.copy_from_slice(&b[field::INTERVAL]);
            Ok(Message::Registration {
                seq,
                interval_ms: u32::from_be_bytes(a),
            })
        }
        T_OFFER if len == LEN_PORT => Ok(Message::PortAllocated {
            seq,
            port: u16_at(b, 9),
        }),
        T_OFFER if len >= MOVIES_HEADER => parse_movies(b, seq),
        T_ANSWER if len == LEN_PORT_ANSWER => match b[11] {
            0 | 1 => Ok(Message::PortAnswer {
                seq,
                port: u16_at(b, 9),
                ok: b[11] == 1,
            }),
            v => Err(ParseError::BadFlag(v)),
        },
        T_ANSWER if len == LEN_PORT => Ok(Message::MovieChoice {
            seq,
            movie: u16_at(b, 9),
        }),
        T_STREAM if len >= STREAM_HEADER => Ok(Message::Stream {
            seq,
            movie: u16_at(b, 9),
            payload: b[STREAM_HEADER..].to_vec(),
        }),
        T_END if len == LEN_PORT => Ok(Message::End {
            frames: seq,
            movie: u16_at(b, 9),
        }),
        T_ACK | T_PORT_ACK | T_REQUEST | T_OFFER | T_ANSWER | T_STREAM | T_END => bad,
        _ => Err(ParseError::UnknownType(ty)),
    }
}

fn parse_movies(b: &[u8], seq: u64) -> Result<Message, ParseError> {
    let count = usize::from(b[9]);
    let mut at = MOVIES_HEADER;
    let mut movies = Vec::with_capacity(count);
    for _ in 0..count {
        let Some(head) = b.get(at..at + 3) else {
            return Err(ParseError::BadCatalogue("an entry runs past the datagram"));
        };
        let id = u16::from_be_bytes([head[0], head[1]]);
        let n = usize::from(head[2]);
        let Some(name) = b.get(at + 3..at + 3 + n) else {
            return Err(ParseError::BadCatalogue("a name runs past the datagram"));
        };
        movies.push(MovieEntry {
            id,
            name: String::from_utf8_lossy(name).into_owned(),
        });
        at += 3 + n;
    }
    if at != b.len() {
        return Err(ParseError::BadCatalogue(
            "bytes left over after the last entry",
        ));
    }
    Ok(Message::MoviesAvailable { seq, movies })
}

impl Message {
    /// The classifier's kind name.
    pub fn kind(&self) -> &'static str {
        match self {
            Message::PortRequest { .. } => "PORT_REQUEST",
            Message::PortAllocated { .. } => "PORT_ALLOCATED",
            Message::PortAnswer { ok: true, .. } => "PORT_OK",
            Message::PortAnswer { ok: false, .. } => "PORT_NOK",
            Message::PortAck { .. } => "PORT_ACK",
            Message::Ack { .. } => "ACK",
            Message::Registration { .. } => "REGISTRATION_REQUEST",
            Message::MoviesAvailable { .. } => "MOVIES_AVAILABLE",
            Message::MovieChoice { .. } => "MOVIE_CHOICE",
            Message::Stream { .. } => "STREAM",
            Message::End { .. } => "END_OF_MOVIE",
        }
    }

    /// Whether it belongs to the handshake (standard port).
    pub fn is_handshake(&self) -> bool {
        matches!(
            self,
            Message::PortRequest { .. }
                | Message::PortAllocated { .. }
                | Message::PortAnswer { .. }
                | Message::PortAck { .. }
        )
    }

    /// Write it into `buf`; returns the length, or `None` if `buf` is too
    /// small.
    pub fn encode(&self, buf: &mut [u8]) -> Option<usize> {
        let v = self.to_vec();
        buf.get_mut(..v.len())?.copy_from_slice(&v);
        Some(v.len())
    }

    /// Its bytes.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(16);
        let head = |b: &mut Vec<u8>, ty: u8, seq: u64| {
            b.push(ty);
            b.extend_from_slice(&seq.to_be_bytes());
        };
        match self {
            Message::PortRequest { seq, port } => {
                head(&mut b, T_REQUEST, *seq);
                b.extend_from_slice(&port.to_be_bytes());
            }
            Message::PortAllocated { seq, port } => {
                head(&mut b, T_OFFER, *seq);
                b.extend_from_slice(&port.to_be_bytes());
            }
            Message::PortAnswer { seq, port, ok } => {
                head(&mut b, T_ANSWER, *seq);
                b.extend_from_slice(&port.to_be_bytes());
                b.push(u8::from(*ok));
            }
            Message::PortAck { seq } => head(&mut b, T_PORT_ACK, *seq),
            Message::Ack { seq } => head(&mut b, T_ACK, *seq),
            Message::Registration { seq, interval_ms } => {
                head(&mut b, T_REQUEST, *seq);
                b.extend_from_slice(&interval_ms.to_be_bytes());
            }
            Message::MoviesAvailable { seq, movies } => {
                head(&mut b, T_OFFER, *seq);
                let movies = &movies[..movies.len().min(255)];
                b.push(movies.len() as u8);
                for m in movies {
                    let name = m.name.as_bytes();
                    let name = &name[..name.len().min(255)];
                    b.extend_from_slice(&m.id.to_be_bytes());
                    b.push(name.len() as u8);
                    b.extend_from_slice(name);
                }
            }
            Message::MovieChoice { seq, movie } => {
                head(&mut b, T_ANSWER, *seq);
                b.extend_from_slice(&movie.to_be_bytes());
            }
            Message::Stream {
                seq,
                movie,
                payload,
            } => {
                head(&mut b, T_STREAM, *seq);
                b.extend_from_slice(&movie.to_be_bytes());
                b.extend_from_slice(payload);
            }
            Message::End { frames, movie } => {
                head(&mut b, T_END, *frames);
                b.extend_from_slice(&movie.to_be_bytes());
            }
        }
        b
    }
}

/// Byte `i` of frame `seq`'s payload in movie `movie`: a checkable
/// function of the three (spec §5.3), so a member verifies every byte.
pub fn payload_byte(movie: u16, seq: u64, i: usize) -> u8 {
    let mut x = (u64::from(movie) << 48) ^ seq.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (i as u64);
    x ^= x >> 29;
    x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x ^= x >> 32;
    (x >> 24) as u8
}

/// The payload of frame `seq` of movie `movie`, `len` bytes.
pub fn payload(movie: u16, seq: u64, len: usize) -> Vec<u8> {
    (0..len).map(|i| payload_byte(movie, seq, i)).collect()
}

/// Whether `p` is the payload of frame `seq` of movie `movie`.
pub fn payload_ok(movie: u16, seq: u64, p: &[u8]) -> bool {
    p.iter()
        .enumerate()
        .all(|(i, b)| *b == payload_byte(movie, seq, i))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn all() -> Vec<Message> {
        vec![
            Message::PortRequest { seq: 1, port: 5000 },
            Message::PortAllocated { seq: 1, port: 5001 },
            Message::PortAnswer {
                seq: 2,
                port: 5001,
                ok: true,
            },
            Message::PortAnswer {
                seq: 2,
                port: 5001,
                ok: false,
            },
            Message::PortAck { seq: 2 },
            Message::Ack { seq: 3 },
            Message::Registration {
                seq: 3,
                interval_ms: 40,
            },
            Message::MoviesAvailable {
                seq: 9,
                movies: vec![
                    MovieEntry {
                        id: 0,
                        name: "movie-0".into(),
                    },
                    MovieEntry {
                        id: 1,
                        name: "m".into(),
                    },
                ],
            },
            Message::MoviesAvailable {
                seq: 9,
                movies: vec![],
            },
            Message::MovieChoice { seq: 4, movie: 1 },
            Message::Stream {
                seq: 7,
                movie: 1,
                payload: payload(1, 7, 16),
            },
            Message::Stream {
                seq: 7,
                movie: 1,
                payload: vec![],
            },
            Message::End {
                frames: 50,
                movie: 1,
            },
        ]
    }

    #[test]
    fn every_message_round_trips_with_the_documented_layout() {
        for m in all() {
            assert_eq!(parse(&m.to_vec()), Ok(m.clone()), "{m:?}");
        }
        assert_eq!(
            Message::PortRequest {
                seq: 0x0102,
                port: 5000
            }
            .to_vec(),
            [1, 0, 0, 0, 0, 0, 0, 1, 2, 0x13, 0x88]
        );
        assert_eq!(
            Message::PortAnswer {
                seq: 1,
                port: 5000,
                ok: false
            }
            .to_vec(),
            [4, 0, 0, 0, 0, 0, 0, 0, 1, 0x13, 0x88, 0]
        );
        assert_eq!(
            Message::Registration {
                seq: 1,
                interval_ms: 300
            }
            .to_vec()
            .len(),
            13
        );
        assert_eq!(Message::PortAck { seq: 1 }.to_vec()[0], 0x08);
    }

    #[test]
    fn shared_type_values_are_told_apart_by_length() {
        assert_eq!(
            parse(&Message::PortRequest { seq: 1, port: 1 }.to_vec())
                .unwrap()
                .kind(),
            "PORT_REQUEST"
        );
        assert_eq!(
            parse(
                &Message::Registration {
                    seq: 1,
                    interval_ms: 1
                }
                .to_vec()
            )
            .unwrap()
            .kind(),
            "REGISTRATION_REQUEST"
        );
        assert_eq!(
            parse(&Message::MovieChoice { seq: 1, movie: 1 }.to_vec())
                .unwrap()
                .kind(),
            "MOVIE_CHOICE"
        );
        assert_eq!(
            parse(&[1; 12]),
            Err(ParseError::BadLength { ty: 1, len: 12 })
        );
        assert_eq!(
            parse(&[4, 0, 0, 0, 0, 0, 0, 0, 1, 0, 1, 2]),
            Err(ParseError::BadFlag(2))
        );
        assert_eq!(parse(&[]), Err(ParseError::Empty));
        assert_eq!(parse(&[3]), Err(ParseError::UnknownType(3)));
        // A catalogue whose entry overruns, or leaves bytes over.
        assert!(matches!(
            parse(&[2, 0, 0, 0, 0, 0, 0, 0, 1, 1, 0, 1, 5, b'a']),
            Err(ParseError::BadCatalogue(_))
        ));
        assert!(matches!(
            parse(&[2, 0, 0, 0, 0, 0, 0, 0, 1, 0, 9, 9, 9]),
            Err(ParseError::BadCatalogue(_))
        ));
    }

    #[test]
    fn payloads_are_checkable() {
        let p = payload(3, 11, 64);
        assert!(payload_ok(3, 11, &p));
        assert!(!payload_ok(3, 12, &p));
        assert!(!payload_ok(4, 11, &p));
        let mut q = p.clone();
        q[5] ^= 1;
        assert!(!payload_ok(3, 11, &q));
    }

    proptest! {
        #[test]
        fn parse_never_panics_and_reencodes_what_it_accepts(b in proptest::collection::vec(any::<u8>(), 0..80)) {
            if let Ok(m) = parse(&b) {
                // Names are read lossily; everything else re-encodes exactly.
                if !matches!(m, Message::MoviesAvailable { .. }) {
                    prop_assert_eq!(m.to_vec(), b);
                }
            }
        }
    }
}
