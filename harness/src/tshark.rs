//! Reading captures back with the real tshark, for tests.
//!
//! [`tshark_rows`] runs tshark on a capture with the media-stream dissector
//! (`captures/mediastream.lua`) loaded and IPv4/UDP checksum validation on,
//! and returns one [`Row`] per frame. Tests call [`require_tshark`] first:
//! when tshark is missing it **fails** the test in CI (the `CI` environment
//! variable is set) and skips it loudly elsewhere.
//!
//! ```no_run
//! use std::path::Path;
//! use streamlab_harness::tshark::{require_tshark, tshark_rows, ChecksumStatus};
//!
//! if require_tshark("my_test").is_none() {
//!     return; // skipped (never in CI)
//! }
//! let rows = tshark_rows(Path::new("run.pcapng")).unwrap();
//! assert!(rows.iter().all(|r| !r.malformed));
//! assert!(rows.iter().all(|r| r.udp_checksum == Some(ChecksumStatus::Good)));
//! ```
//!
//! Set `TSHARK` to use a tshark that is not on `PATH`.

use std::ffi::OsString;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use streamlab_core::sut::{Dissector, Protocol};

/// The fields every [`Row`] is built from, in order.
pub const FIELDS: &[&str] = &[
    "frame.number",
    "frame.interface_name",
    "frame.packet_flags_direction",
    "frame.packet_id",
    "frame.comment",
    "udp.checksum.status",
    "ip.checksum.status",
    "mediastream.type",
    "mediastream.stream_id",
    "mediastream.seq",
    "mediastream.payload_ok",
    "_ws.malformed",
    "_ws.expert.group",
    "_ws.expert.message",
];

/// Separates the occurrences of a repeated field (e.g. several comments).
/// The ASCII unit separator cannot appear in a comment line.
const AGGREGATOR: &str = "\u{1f}";

/// The expert group "Malformed" (`PI_MALFORMED`).
const PI_MALFORMED: u32 = 0x0700_0000;

/// Why tshark could not be run or its output not understood.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TsharkError {
    /// No tshark on `PATH` (or at `$TSHARK`).
    #[error("tshark not found (install Wireshark's tshark, or set TSHARK to its path)")]
    NotFound,
    /// The process could not be started.
    #[error("could not run {program}: {source}")]
    Spawn {
        /// The program that was run.
        program: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// tshark exited with an error.
    #[error("tshark failed on {capture} ({status}): {stderr}")]
    Failed {
        /// The capture that was read.
        capture: PathBuf,
        /// Exit status.
        status: std::process::ExitStatus,
        /// What tshark printed on stderr.
        stderr: String,
    },
    /// A line of tshark's output did not have the expected shape.
    #[error("unexpected tshark output line {line:?}: {reason}")]
    Parse {
        /// The offending line.
        line: String,
        /// What was wrong with it.
        reason: String,
    },
}

/// Direction of a pcapng record (`frame.packet_flags_direction`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Direction {
    /// Received by the interface's host (flags value 1).
    Inbound,
    /// Sent by the interface's host (flags value 2).
    Outbound,
}

/// tshark's `udp.checksum.status` / `ip.checksum.status`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ChecksumStatus {
    /// 0: the checksum does not match.
    Bad,
    /// 1: the checksum matches.
    Good,
    /// 2: not verified.
    Unverified,
    /// 3: no checksum (UDP checksum 0).
    NotPresent,
    /// 4: illegal value.
    Illegal,
}

impl ChecksumStatus {
    fn from_code(code: u32) -> Option<Self> {
        Some(match code {
            0 => ChecksumStatus::Bad,
            1 => ChecksumStatus::Good,
            2 => ChecksumStatus::Unverified,
            3 => ChecksumStatus::NotPresent,
            4 => ChecksumStatus::Illegal,
            _ => return None,
        })
    }
}

/// One frame as tshark decoded it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Row {
    /// `frame.number`, from 1.
    pub number: u64,
    /// `frame.interface_name`: the host name for streamlab captures (empty in
    /// classic pcap).
    pub interface_name: String,
    /// `frame.packet_flags_direction`, if the record has flags.
    pub direction: Option<Direction>,
    /// `frame.packet_id` (pcapng `epb_packetid`): the trace's packet id.
    pub packet_id: Option<u64>,
    /// Every `frame.comment`, in record order.
    pub comments: Vec<String>,
    /// `udp.checksum.status` (validation is on).
    pub udp_checksum: Option<ChecksumStatus>,
    /// `ip.checksum.status` (validation is on).
    pub ip_checksum: Option<ChecksumStatus>,
    /// `mediastream.type`: the frame type byte, if the dissector decoded it.
    pub ms_type: Option<u8>,
    /// `mediastream.stream_id`.
    pub stream_id: Option<u64>,
    /// `mediastream.seq` (DATA frames).
    pub seq: Option<u32>,
    /// `mediastream.payload_ok` (DATA frames whose payload offset is known).
    pub payload_ok: Option<bool>,
    /// Malformed: tshark's `_ws.malformed` (an exception in a dissector), or
    /// any expert item of group Malformed (the Lua dissector's
    /// `mediastream.malformed`).
    pub malformed: bool,
    /// Every `_ws.expert.message`.
    pub expert_messages: Vec<String>,
    /// Values of the extra fields asked for with [`TsharkQuery::field`], in
    /// order (occurrences joined with `,`).
    pub extra: Vec<String>,
}

impl Row {
    /// Whether any comment contains `needle`.
    pub fn comment_contains(&self, needle: &str) -> bool {
        self.comments.iter().any(|c| c.contains(needle))
    }
}

/// The tshark to run: `$TSHARK` if set, else `tshark` found on `PATH`.
pub fn find_tshark() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("TSHARK") {
        let p = PathBuf::from(p);
        return p.is_file().then_some(p);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("tshark"))
        .find(|p| p.is_file())
}

/// Whether the tests run in CI (`CI` is set to anything but `false`/empty).
pub fn in_ci() -> bool {
    std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "false" && v != "0")
}

/// The tshark to use in test `test`, or `None` to skip it.
///
/// # Panics
/// In CI ([`in_ci`]) when tshark is missing: a capture check that silently
/// skips there would check nothing.
pub fn require_tshark(test: &str) -> Option<PathBuf> {
    match find_tshark() {
        Some(p) => Some(p),
        None if in_ci() => panic!(
            "{test}: tshark is required in CI but was not found (set TSHARK or install tshark)"
        ),
        None => {
            // Written straight to stderr (not eprintln!) so that the test
            // harness's output capture does not swallow it.
            let banner = "!".repeat(78);
            let _ = writeln!(
                std::io::stderr(),
                "\n{banner}\n!! SKIPPED {test}: tshark not found. Install it (apt-get install tshark)\n\
                 !! or set TSHARK=/path/to/tshark. This test FAILS in CI without it.\n{banner}"
            );
            None
        }
    }
}

/// The media-stream Lua dissector shipped in the repository
/// (`captures/mediastream.lua`).
pub fn dissector_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("captures")
        .join("mediastream.lua")
}

/// `tshark --version`'s first line.
///
/// # Errors
/// [`TsharkError::NotFound`], [`TsharkError::Spawn`], [`TsharkError::Failed`].
pub fn tshark_version() -> Result<String, TsharkError> {
    let program = find_tshark().ok_or(TsharkError::NotFound)?;
    let out = Command::new(&program)
        .arg("--version")
        .output()
        .map_err(|source| TsharkError::Spawn {
            program: program.clone(),
            source,
        })?;
    if !out.status.success() {
        return Err(TsharkError::Failed {
            capture: PathBuf::new(),
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned())
}

/// Every frame of `capture`, decoded with the media-stream dissector and
/// checksum validation on. Same as `TsharkQuery::default().rows(capture)`.
///
/// # Errors
/// See [`TsharkQuery::rows`].
pub fn tshark_rows(capture: &Path) -> Result<Vec<Row>, TsharkError> {
    TsharkQuery::default().rows(capture)
}

/// A tshark run with options beyond [`tshark_rows`]'s.
#[derive(Clone, Debug, Default)]
pub struct TsharkQuery {
    display_filter: Option<String>,
    fields: Vec<String>,
    args: Vec<OsString>,
}

impl TsharkQuery {
    /// Only frames matching this display filter (`-Y`).
    pub fn filter(mut self, display_filter: impl Into<String>) -> Self {
        self.display_filter = Some(display_filter.into());
        self
    }

    /// Also extract this field into [`Row::extra`].
    pub fn field(mut self, field: impl Into<String>) -> Self {
        self.fields.push(field.into());
        self
    }

    /// Extra command-line arguments (e.g. `-d udp.port==5000,mediastream`).
    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Runs tshark on `capture` and parses its rows.
    ///
    /// # Errors
    /// [`TsharkError::NotFound`] without tshark; [`TsharkError::Failed`] if
    /// tshark exits non-zero (unreadable or cut-short file, unknown field,
    /// bad filter); [`TsharkError::Parse`] on unexpected output.
    pub fn rows(&self, capture: &Path) -> Result<Vec<Row>, TsharkError> {
        let program = find_tshark().ok_or(TsharkError::NotFound)?;
        let mut cmd = Command::new(&program);
        cmd.arg("-n")
            .arg("-r")
            .arg(capture)
            .arg("-X")
            .arg(format!("lua_script:{}", dissector_path().display()))
            .args([
                "-o",
                "udp.check_checksum:TRUE",
                "-o",
                "ip.check_checksum:TRUE",
                // Every datagram of a media-stream capture is the media
                // stream's, whatever its ports.
                "-o",
                "mediastream.heuristic:TRUE",
            ])
            .args([
                "-T",
                "fields",
                "-E",
                "separator=/t",
                "-E",
                "quote=n",
                "-E",
                "occurrence=a",
            ])
            .arg(format!("-Eaggregator={AGGREGATOR}"));
        if let Some(f) = &self.display_filter {
            cmd.arg("-Y").arg(f);
        }
        for f in FIELDS
            .iter()
            .copied()
            .chain(self.fields.iter().map(String::as_str))
        {
            cmd.arg("-e").arg(f);
        }
        cmd.args(&self.args);
        // Keep tshark away from the user's preferences and plugins folder, so
        // that results do not depend on the machine.
        cmd.env(
            "WIRESHARK_CONFIG_DIR",
            std::env::temp_dir().join("streamlab-tshark-empty-config"),
        );
        let out = cmd.output().map_err(|source| TsharkError::Spawn {
            program: program.clone(),
            source,
        })?;
        if !out.status.success() {
            return Err(TsharkError::Failed {
                capture: capture.to_owned(),
                status: out.status,
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            });
        }
        let stdout = String::from_utf8_lossy(&out.stdout);
        stdout
            .lines()
            .filter(|l| !l.is_empty())
            .map(|l| parse_row(l, self.fields.len()))
            .collect()
    }
}

pub(crate) fn parse_row(line: &str, extra: usize) -> Result<Row, TsharkError> {
    let cols: Vec<&str> = line.split('\t').collect();
    let perr = |reason: String| TsharkError::Parse {
        line: line.to_owned(),
        reason,
    };
    if cols.len() != FIELDS.len() + extra {
        return Err(perr(format!(
            "{} columns, expected {}",
            cols.len(),
            FIELDS.len() + extra
        )));
    }
    let list = |s: &str| -> Vec<String> {
        if s.is_empty() {
            Vec::new()
        } else {
            s.split(AGGREGATOR).map(str::to_owned).collect()
        }
    };
    let first = |s: &str| s.split(AGGREGATOR).next().unwrap_or_default().to_owned();
    let num = |s: &str, what: &str| -> Result<Option<u64>, TsharkError> {
        let s = first(s);
        if s.is_empty() {
            return Ok(None);
        }
        let parsed = match s.strip_prefix("0x") {
            Some(hex) => u64::from_str_radix(hex, 16),
            None => s.parse(),
        };
        parsed
            .map(Some)
            .map_err(|e| perr(format!("{what}: {s:?}: {e}")))
    };
    let status = |s: &str, what: &str| -> Result<Option<ChecksumStatus>, TsharkError> {
        num(s, what)?
            .map(|c| {
                u32::try_from(c)
                    .ok()
                    .and_then(ChecksumStatus::from_code)
                    .ok_or_else(|| perr(format!("{what}: {c}")))
            })
            .transpose()
    };
    let direction = match num(cols[2], "direction")? {
        None | Some(0) => None,
        Some(1) => Some(Direction::Inbound),
        Some(2) => Some(Direction::Outbound),
        Some(d) => return Err(perr(format!("direction {d}"))),
    };
    let mut groups = Vec::new();
    for g in list(cols[12]) {
        groups.push(num(&g, "expert group")?.unwrap_or_default());
    }
    let payload_ok = match first(cols[10]).as_str() {
        "" => None,
        "1" | "True" | "TRUE" | "true" => Some(true),
        "0" | "False" | "FALSE" | "false" => Some(false),
        other => return Err(perr(format!("payload_ok {other:?}"))),
    };
    Ok(Row {
        number: num(cols[0], "frame.number")?.ok_or_else(|| perr("no frame number".into()))?,
        interface_name: first(cols[1]),
        direction,
        packet_id: num(cols[3], "packet id")?,
        comments: list(cols[4]),
        udp_checksum: status(cols[5], "udp.checksum.status")?,
        ip_checksum: status(cols[6], "ip.checksum.status")?,
        ms_type: num(cols[7], "mediastream.type")?.map(|t| t as u8),
        stream_id: num(cols[8], "mediastream.stream_id")?,
        seq: num(cols[9], "mediastream.seq")?.map(|s| s as u32),
        payload_ok,
        malformed: !cols[11].is_empty() || groups.contains(&u64::from(PI_MALFORMED)),
        expert_messages: list(cols[13]),
        extra: cols[FIELDS.len()..]
            .iter()
            .map(|s| s.replace(AGGREGATOR, ","))
            .collect(),
    })
}

/// One frame of a run's capture as tshark decoded it with the run's
/// protocol's own dissector ([`decode_capture`]).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Decoded {
    /// `frame.number`, from 1.
    pub number: u64,
    /// `frame.interface_name`: the host name.
    pub interface_name: String,
    /// `frame.packet_id`: the trace's packet id.
    pub packet_id: Option<u64>,
    /// `frame.packet_flags_direction`, if the record has flags.
    pub direction: Option<Direction>,
    /// Every `frame.comment`, in record order.
    pub comments: Vec<String>,
    /// `udp.checksum.status` (validation is on).
    pub udp_checksum: Option<ChecksumStatus>,
    /// `frame.protocols`, split at `:` (e.g. `eth`, `ip`, `udp`, `msp`).
    pub protocols: Vec<String>,
    /// The protocol's kind field ([`TsharkFields::kind`]) as tshark printed
    /// it (first occurrence), if the dissector decoded one.
    ///
    /// [`TsharkFields::kind`]: streamlab_core::sut::TsharkFields::kind
    pub kind: Option<String>,
    /// Malformed: `_ws.malformed`, an expert item of group Malformed, or the
    /// protocol's own malformed field.
    pub malformed: bool,
    /// Every `_ws.expert.message`.
    pub expert_messages: Vec<String>,
}

impl Decoded {
    /// The kind as a number (tshark prints decimal or `0x` hex), if it is one.
    pub fn kind_number(&self) -> Option<u64> {
        let k = self.kind.as_deref()?;
        match k.strip_prefix("0x") {
            Some(hex) => u64::from_str_radix(hex, 16).ok(),
            None => k.parse().ok(),
        }
    }

    /// Whether the protocol's dissector claimed the frame (its name, as the
    /// dissector registers it, is in `frame.protocols`).
    pub fn decoded_as(&self, proto: &str) -> bool {
        self.protocols.iter().any(|p| p.eq_ignore_ascii_case(proto))
    }
}

/// The protocol name a dissector registers (what `frame.protocols` shows).
pub fn dissector_proto(protocol: &dyn Protocol) -> &'static str {
    match protocol.dissector() {
        Dissector::Lua { proto, .. } | Dissector::Builtin { proto } => proto,
    }
}

/// Every frame of a run's `capture`, decoded by tshark with `protocol`'s
/// own dissector (its Lua script from `captures/`, or Wireshark's built-in
/// one) on `ports` (the plan's ports, as the capture's decode hint says),
/// with checksum validation on. Works for every registered protocol.
///
/// # Errors
/// [`TsharkError::NotFound`] without tshark; [`TsharkError::Failed`] if
/// tshark exits non-zero or its stderr reports a Lua error (a dissector
/// that throws is a broken dissector); [`TsharkError::Parse`] on
/// unexpected output.
pub fn decode_capture(
    protocol: &dyn Protocol,
    ports: &[u16],
    capture: &Path,
) -> Result<Vec<Decoded>, TsharkError> {
    decode_capture_with(protocol, ports, &[], capture)
}

/// [`decode_capture`], also decoding TCP ports as the plan's
/// `tcp_decode_as` says (e.g. `(8080, "http")`: Wireshark follows a
/// WebSocket upgrade into its WebSocket and JSON dissectors).
///
/// # Errors
/// As [`decode_capture`].
pub fn decode_capture_with(
    protocol: &dyn Protocol,
    ports: &[u16],
    tcp: &[(u16, &str)],
    capture: &Path,
) -> Result<Vec<Decoded>, TsharkError> {
    let program = find_tshark().ok_or(TsharkError::NotFound)?;
    let fields = protocol.tshark_fields();
    let proto = dissector_proto(protocol);
    let mut cmd = Command::new(&program);
    cmd.arg("-n").arg("-r").arg(capture);
    if let Dissector::Lua { file, .. } = protocol.dissector() {
        let script = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join("captures")
            .join(file);
        cmd.arg("-X")
            .arg(format!("lua_script:{}", script.display()));
    }
    for p in ports {
        cmd.arg("-d").arg(format!("udp.port=={p},{proto}"));
    }
    for (p, as_) in tcp {
        cmd.arg("-d").arg(format!("tcp.port=={p},{as_}"));
    }
    cmd.args([
        "-o",
        "udp.check_checksum:TRUE",
        "-o",
        "ip.check_checksum:TRUE",
        "-T",
        "fields",
        "-E",
        "separator=/t",
        "-E",
        "quote=n",
        "-E",
        "occurrence=a",
    ])
    .arg(format!("-Eaggregator={AGGREGATOR}"));
    let mut wanted = vec![
        "frame.number",
        "frame.interface_name",
        "frame.packet_id",
        "frame.comment",
        "udp.checksum.status",
        "frame.protocols",
        fields.kind,
        "_ws.malformed",
        "_ws.expert.group",
        "_ws.expert.message",
        "frame.packet_flags_direction",
    ];
    if let Some(m) = fields.malformed {
        wanted.push(m);
    }
    for f in &wanted {
        cmd.arg("-e").arg(f);
    }
    cmd.env(
        "WIRESHARK_CONFIG_DIR",
        std::env::temp_dir().join("streamlab-tshark-empty-config"),
    );
    let out = cmd.output().map_err(|source| TsharkError::Spawn {
        program: program.clone(),
        source,
    })?;
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if !out.status.success() || stderr.contains("Lua") {
        return Err(TsharkError::Failed {
            capture: capture.to_owned(),
            status: out.status,
            stderr,
        });
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    stdout
        .lines()
        .filter(|l| !l.is_empty())
        .map(|line| parse_decoded(line, wanted.len()))
        .collect()
}

fn parse_decoded(line: &str, columns: usize) -> Result<Decoded, TsharkError> {
    let cols: Vec<&str> = line.split('\t').collect();
    let perr = |reason: String| TsharkError::Parse {
        line: line.to_owned(),
        reason,
    };
    if cols.len() != columns {
        return Err(perr(format!("{} columns, expected {columns}", cols.len())));
    }
    let list = |s: &str| -> Vec<String> {
        if s.is_empty() {
            Vec::new()
        } else {
            s.split(AGGREGATOR).map(str::to_owned).collect()
        }
    };
    let first = |s: &str| s.split(AGGREGATOR).next().unwrap_or_default().to_owned();
    let num = |s: &str, what: &str| -> Result<Option<u64>, TsharkError> {
        let s = first(s);
        if s.is_empty() {
            return Ok(None);
        }
        let parsed = match s.strip_prefix("0x") {
            Some(hex) => u64::from_str_radix(hex, 16),
            None => s.parse(),
        };
        parsed
            .map(Some)
            .map_err(|e| perr(format!("{what}: {s:?}: {e}")))
    };
    let udp_checksum = num(cols[4], "udp.checksum.status")?
        .map(|c| {
            u32::try_from(c)
                .ok()
                .and_then(ChecksumStatus::from_code)
                .ok_or_else(|| perr(format!("udp.checksum.status: {c}")))
        })
        .transpose()?;
    let mut groups = Vec::new();
    for g in list(cols[8]) {
        groups.push(num(&g, "expert group")?.unwrap_or_default());
    }
    let direction = match num(cols[10], "direction")? {
        None | Some(0) => None,
        Some(1) => Some(Direction::Inbound),
        Some(2) => Some(Direction::Outbound),
        Some(d) => return Err(perr(format!("direction {d}"))),
    };
    let own_malformed = cols.get(11).is_some_and(|s| {
        let v = first(s);
        !v.is_empty() && v != "0" && !v.eq_ignore_ascii_case("false")
    });
    let kind = first(cols[6]);
    Ok(Decoded {
        number: num(cols[0], "frame.number")?.ok_or_else(|| perr("no frame number".into()))?,
        interface_name: first(cols[1]),
        packet_id: num(cols[2], "packet id")?,
        direction,
        comments: list(cols[3]),
        udp_checksum,
        protocols: first(cols[5]).split(':').map(str::to_owned).collect(),
        kind: (!kind.is_empty()).then_some(kind),
        malformed: !cols[7].is_empty()
            || groups.contains(&u64::from(PI_MALFORMED))
            || own_malformed,
        expert_messages: list(cols[9]),
    })
}
