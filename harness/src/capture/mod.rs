//! Annotated packet captures of a run, written from the trace as it happens.
//!
//! [`CaptureWriter`] is a [`TraceSink`]: give it every [`TraceEvent`] and it
//! streams a pcapng file (or a classic pcap, see [`CaptureFormat`]) that
//! Wireshark and tshark open directly. Guarantees:
//!
//! - **Real frames.** Each datagram is an Ethernet II + IPv4 + UDP frame with
//!   correct lengths and checksums (each TCP segment an Ethernet II + IPv4 +
//!   TCP frame, see [below](#tcp-segments)). MACs are synthesised from the IPv4
//!   addresses (`02:00:<a.b.c.d>`), the IPv4 identification is the low 16
//!   bits of the packet id, TTL 64.
//! - **Capture points** (pcapng). One interface per host (`if_name` = host
//!   name, `if_description` with its IPv4 address, `if_tsresol` = 9). A
//!   datagram appears *outbound* on the sender's interface at send time
//!   (before any impairment: the bytes the sender wrote) and *inbound* on
//!   the receiver's interface once per copy that arrived, with the bytes as
//!   they arrived. A dropped or lost copy therefore shows as "sent, never
//!   received". Both records carry the packet id in `epb_packetid` (option
//!   5, tshark `frame.packet_id`) and in the comments (`pkt=17 copy=1`).
//! - **Checksums as a real receiver sees them.** A copy whose corruption the
//!   UDP checksum catches is written inbound with the checksum of the
//!   original bytes (tshark: Bad); a corruption delivered to the application
//!   is written with UDP checksum 0 (not present).
//! - **Annotations.** Every decision of the link and of the scenario is an
//!   `opt_comment` on the record it concerns. Comments are single lines
//!   starting with `streamlab: pkt=<id> `; the wording is listed in
//!   `captures/README.md`.
//! - **Time.** Timestamps are the caller's fixed epoch plus [`SimTime`], at
//!   full µs resolution. No clock is ever read.
//! - **Deterministic.** The same trace gives a byte-identical file (fixed
//!   little-endian byte order, ordered maps only).
//! - **Streamed, always valid.** Headers are written by [`CaptureWriter::new`];
//!   after that every block is encoded in memory and handed to the writer
//!   with a single `write_all`, and the writer is flushed at the first record
//!   of each simulated instant. The file on disk is a valid capture at every
//!   instant boundary, whether or not [`TraceSink::finish`] is ever called
//!   (dropping the writer finishes it, best effort); a process killed
//!   outright loses at most the records of its last instant.
//!
//! # Holding outbound records until their copies' outcomes are known
//!
//! A `Lost` event (partition in flight, host down) arrives after the send,
//! but belongs on the sender's record. The writer therefore holds each
//! outbound record until every copy the link scheduled for delivery has
//! either arrived or been lost, and holds everything recorded after it too,
//! so that file order stays trace (time) order. Memory is bounded by the
//! records inside the longest delivery delay (packets in flight and what
//! happened while they flew), never by run length. Two safety valves keep
//! that true for a trace that never reports an outcome: at most
//! [`DEFAULT_MAX_HELD`] records are held (see
//! [`CaptureWriter::with_max_held`]); past that, the oldest outbound record
//! is written with `unresolved` notes for the copies still in flight. If a
//! `Lost` then arrives for such a packet, it is written as its own outbound
//! record on the sender's interface (the same frame, a `lost` comment marked
//! as a late note). [`TraceSink::finish`] writes everything still held, with
//! `unresolved` notes.
//!
//! # TCP segments
//!
//! A trace event whose `transport` is TCP carries a whole segment; it is
//! written as Ethernet II + IPv4 (protocol 6, the same synthesised MACs,
//! identification and TTL) + the segment as the stack emitted it, checksum
//! included. A copy whose corruption the TCP checksum catches keeps the
//! checksum of the original bytes (tshark with `tcp.check_checksum`: Bad);
//! in `deliver` mode the network already recomputed it, so it validates.
//! The `sent` comment names the segment (`TCP ACK seq=… ack=… win=… len=…`)
//! and corruption notes name the TCP checksum. Wireshark's TCP analysis
//! does not separate capture interfaces: in the pcapng it sees every
//! segment outbound and again inbound, and marks the second sighting; the
//! classic pcap (inbound only) is the receivers' view, where a
//! `tcp.analysis.retransmission` is a real retransmission or a link
//! duplicate.
//!
//! # Classic pcap
//!
//! [`CaptureFormat::Pcap`] writes the receivers' view only: the inbound
//! copies, Ethernet link type, µs timestamps, no annotations, for tools that
//! do not read pcapng.

mod comment;
mod frame;

use std::collections::{BTreeMap, VecDeque};
use std::io::{self, Write};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pcap_file::pcap::PcapHeader;
use pcap_file::pcapng::PcapNgWriter;
use pcap_file::pcapng::blocks::enhanced_packet::{EnhancedPacketBlock, EnhancedPacketOption};
use pcap_file::pcapng::blocks::interface_description::{
    InterfaceDescriptionBlock, InterfaceDescriptionOption,
};
use pcap_file::pcapng::blocks::name_resolution::{Ipv4Record, NameResolutionBlock, Record};
use pcap_file::pcapng::blocks::section_header::{SectionHeaderBlock, SectionHeaderOption};
use pcap_file::{DataLink, Endianness, PcapError, TsResolution};
use streamlab_core::time::SimTime;
use streamlab_impair::{CopyFate, Corruption, Verdict};

use crate::trace::{HostInfo, Origin, TraceEvent, TraceSink, Transport};
use frame::{UdpChecksum, tcp_frame, udp_frame};

/// Largest frame a record may hold (the tcpdump default snap length).
const SNAPLEN: u32 = 262_144;
/// pcapng `epb_flags` direction bits: inbound.
const DIR_INBOUND: u32 = 1;
/// pcapng `epb_flags` direction bits: outbound.
const DIR_OUTBOUND: u32 = 2;
/// pcapng EPB option `epb_packetid`.
const OPT_EPB_PACKETID: u16 = 5;
/// The application named in the section header.
const USER_APPLICATION: &str = "streamlab-harness capture writer";

/// How many records [`CaptureWriter`] holds at most while waiting for the
/// outcome of copies in flight, unless changed with
/// [`CaptureWriter::with_max_held`].
pub const DEFAULT_MAX_HELD: usize = 65_536;

/// The file format a [`CaptureWriter`] produces.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CaptureFormat {
    /// pcapng: one interface per host, both capture points, annotations.
    PcapNg,
    /// Classic pcap: inbound copies only, µs timestamps, no annotations.
    Pcap,
}

impl CaptureFormat {
    /// The file extension, without the dot.
    pub fn extension(self) -> &'static str {
        match self {
            CaptureFormat::PcapNg => "pcapng",
            CaptureFormat::Pcap => "pcap",
        }
    }

    /// `<scenario-name>-<first 12 hex digits of the id>-seed<seed>.<ext>`.
    /// Characters of the name other than ASCII letters, digits, `.`, `_` and
    /// `-` become `_`; the id is lower-cased.
    pub fn file_name(self, scenario_name: &str, scenario_id: &str, seed: u64) -> String {
        let name: String = scenario_name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let id: String = scenario_id
            .chars()
            .take(12)
            .map(|c| c.to_ascii_lowercase())
            .collect();
        format!("{name}-{id}-seed{seed}.{}", self.extension())
    }
}

/// The pcapng capture file name of a run:
/// `<scenario-name>-<scenario-id-first-12-hex>-seed<seed>.pcapng`.
///
/// # Examples
/// ```
/// use streamlab_harness::capture::capture_file_name;
/// assert_eq!(
///     capture_file_name("handshake loss", "9F86D081884C7D659A2FEAA0C55AD015", 7),
///     "handshake_loss-9f86d081884c-seed7.pcapng"
/// );
/// ```
pub fn capture_file_name(scenario_name: &str, scenario_id: &str, seed: u64) -> String {
    CaptureFormat::PcapNg.file_name(scenario_name, scenario_id, seed)
}

/// One capture interface (pcapng IDB), i.e. one host.
#[derive(Debug)]
struct Iface {
    name: String,
    addr: Ipv4Addr,
}

/// What became of one copy, as far as the writer knows.
#[derive(Clone, Debug)]
enum Outcome {
    /// Nothing to wait for (dropped by the link, or an unknown fate).
    Settled,
    /// Scheduled for delivery; no `Arrived`/`Lost` seen yet.
    InFlight,
    /// Arrived.
    Arrived,
    /// Lost after the link let it go.
    Lost { at: SimTime, cause: String },
}

/// A sent datagram whose outbound record is held or whose copies are not
/// all accounted for.
#[derive(Debug)]
struct Sent {
    at: SimTime,
    packet: u64,
    src: SocketAddrV4,
    dst: SocketAddrV4,
    bytes: Vec<u8>,
    origin: Origin,
    notes: Vec<String>,
    verdict: Verdict,
    transport: Transport,
    outcomes: Vec<Outcome>,
    /// The outbound record has been written.
    released: bool,
}

impl Sent {
    fn settled(&self) -> bool {
        !self.outcomes.iter().any(|o| matches!(o, Outcome::InFlight))
    }
}

/// A record ready to be written.
#[derive(Debug)]
struct Epb {
    iface: u32,
    at: SimTime,
    direction: u32,
    packet: u64,
    frame: Vec<u8>,
    comments: Vec<String>,
}

/// An entry of the hold queue.
#[derive(Debug)]
enum Held {
    /// Written as soon as it reaches the front.
    Ready(Epb),
    /// The outbound record of `sent[key]`, written once its copies settle.
    Outbound(u64),
}

/// Streams an annotated capture of a run from its trace. See the
/// [module documentation](self) for what the file contains.
///
/// # Examples
/// ```
/// use std::time::{Duration, UNIX_EPOCH};
/// use streamlab_harness::capture::{CaptureFormat, CaptureWriter};
/// use streamlab_harness::trace::{HostInfo, TraceSink};
///
/// let hosts = [HostInfo { name: "server".into(), addr: "192.168.0.1".parse().unwrap() }];
/// let epoch = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
/// let mut w = CaptureWriter::new(Vec::new(), &hosts, epoch, CaptureFormat::PcapNg).unwrap();
/// // w.record(&event)? for every trace event, then:
/// w.finish().unwrap();
/// let bytes = w.into_inner().unwrap();
/// assert_eq!(&bytes[..4], &[0x0a, 0x0d, 0x0d, 0x0a]);
/// ```
pub struct CaptureWriter<W: Write> {
    out: Option<W>,
    format: CaptureFormat,
    epoch: Duration,
    ifaces: Vec<Iface>,
    by_addr: BTreeMap<Ipv4Addr, u32>,
    /// Held records, in trace order.
    queue: VecDeque<Held>,
    /// Sent datagrams not yet fully accounted for, by internal key.
    sent: BTreeMap<u64, Sent>,
    /// Latest internal key of each packet id.
    by_packet: BTreeMap<u64, u64>,
    next_key: u64,
    max_held: usize,
    /// pcapng block encoder writing into a scratch buffer.
    encoder: PcapNgWriter<Vec<u8>>,
    finished: bool,
    /// The simulated instant whose records were last flushed.
    flushed_at: Option<SimTime>,
}

impl<W: Write> std::fmt::Debug for CaptureWriter<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaptureWriter")
            .field("format", &self.format)
            .field("epoch", &self.epoch)
            .field("ifaces", &self.ifaces)
            .field("held", &self.queue.len())
            .field("in_flight", &self.sent.len())
            .field("finished", &self.finished)
            .finish_non_exhaustive()
    }
}

fn pcap_err(e: PcapError) -> io::Error {
    match e {
        PcapError::IoError(e) => e,
        other => io::Error::other(other),
    }
}

impl<W: Write> CaptureWriter<W> {
    /// Starts a capture on `out`, writing the file headers immediately: for
    /// pcapng the section header, one interface per host (in the order given)
    /// and a name resolution block mapping host addresses to names.
    ///
    /// `epoch` is the wall-clock instant the run's [`SimTime::ZERO`] maps to
    /// (the scenario's fixed epoch); instants before the Unix epoch count as
    /// the Unix epoch.
    ///
    /// # Errors
    /// I/O errors of `out`.
    pub fn new(
        out: W,
        hosts: &[HostInfo],
        epoch: SystemTime,
        format: CaptureFormat,
    ) -> io::Result<Self> {
        Self::with_comment(out, hosts, epoch, format, None)
    }

    /// As [`CaptureWriter::new`], with a comment on the section header
    /// (pcapng `shb_comment`, Wireshark's Statistics → Capture File
    /// Properties): the runner writes there how to decode the capture.
    ///
    /// # Errors
    /// I/O errors of `out`.
    pub fn with_comment(
        mut out: W,
        hosts: &[HostInfo],
        epoch: SystemTime,
        format: CaptureFormat,
        comment: Option<&str>,
    ) -> io::Result<Self> {
        let epoch = epoch.duration_since(UNIX_EPOCH).unwrap_or_default();
        let mut options = vec![SectionHeaderOption::UserApplication(
            USER_APPLICATION.into(),
        )];
        if let Some(c) = comment {
            options.push(SectionHeaderOption::Comment(c.to_string().into()));
        }
        let shb = SectionHeaderBlock {
            endianness: Endianness::Little,
            options,
            ..Default::default()
        };
        let encoder = PcapNgWriter::with_section_header(Vec::new(), shb).map_err(pcap_err)?;
        let mut w = CaptureWriter {
            out: None,
            format,
            epoch,
            ifaces: Vec::new(),
            by_addr: BTreeMap::new(),
            queue: VecDeque::new(),
            sent: BTreeMap::new(),
            by_packet: BTreeMap::new(),
            next_key: 0,
            max_held: DEFAULT_MAX_HELD,
            encoder,
            finished: false,
            flushed_at: None,
        };
        match format {
            CaptureFormat::Pcap => {
                let header = PcapHeader {
                    snaplen: SNAPLEN,
                    datalink: DataLink::ETHERNET,
                    ts_resolution: TsResolution::MicroSecond,
                    endianness: Endianness::Little,
                    ..Default::default()
                };
                let mut buf = Vec::with_capacity(24);
                header.write_to(&mut buf).map_err(pcap_err)?;
                out.write_all(&buf)?;
                w.out = Some(out);
                for h in hosts {
                    w.by_addr.entry(h.addr).or_insert(0);
                }
            }
            _ => {
                out.write_all(w.encoder.get_ref())?;
                w.out = Some(out);
                for h in hosts {
                    if !w.by_addr.contains_key(&h.addr) {
                        w.add_iface(&h.name, h.addr)?;
                    }
                }
                let records = w
                    .ifaces
                    .iter()
                    .map(|i| {
                        Record::Ipv4(Ipv4Record {
                            ip_addr: i.addr.octets().to_vec().into(),
                            names: vec![i.name.clone().into()],
                        })
                    })
                    .collect();
                w.write_block(NameResolutionBlock {
                    records,
                    options: vec![],
                })?;
            }
        }
        w.flush()?;
        Ok(w)
    }

    /// Changes how many records may be held waiting for the outcome of
    /// copies in flight (default [`DEFAULT_MAX_HELD`], minimum 1).
    pub fn with_max_held(mut self, max_held: usize) -> Self {
        self.max_held = max_held.max(1);
        self
    }

    /// Finishes the capture (see [`TraceSink::finish`]) and returns the
    /// underlying writer.
    ///
    /// # Errors
    /// I/O errors of the underlying writer.
    pub fn into_inner(mut self) -> io::Result<W> {
        self.finish()?;
        // The writer is only taken here, and `self` is consumed.
        Ok(self
            .out
            .take()
            .expect("the output is present until into_inner"))
    }

    /// Writes one pcapng block with a single `write_all`.
    fn write_block<'a, B: pcap_file::pcapng::PcapNgBlock<'a>>(
        &mut self,
        block: B,
    ) -> io::Result<()> {
        self.encoder.get_mut().clear();
        self.encoder.write_pcapng_block(block).map_err(pcap_err)?;
        match self.out.as_mut() {
            Some(out) => out.write_all(self.encoder.get_ref()),
            None => Err(io::Error::other("capture writer already closed")),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self.out.as_mut() {
            Some(out) => out.flush(),
            None => Ok(()),
        }
    }

    fn add_iface(&mut self, name: &str, addr: Ipv4Addr) -> io::Result<u32> {
        let id = u32::try_from(self.ifaces.len()).map_err(io::Error::other)?;
        let mut ip_opt = addr.octets().to_vec();
        ip_opt.extend_from_slice(&[255, 255, 255, 255]);
        let idb = InterfaceDescriptionBlock {
            linktype: DataLink::ETHERNET,
            snaplen: SNAPLEN,
            options: vec![
                InterfaceDescriptionOption::IfName(name.to_owned().into()),
                InterfaceDescriptionOption::IfDescription(
                    format!("streamlab simulated host {name}, IPv4 {addr}").into(),
                ),
                InterfaceDescriptionOption::IfIpv4Addr(ip_opt.into()),
                InterfaceDescriptionOption::IfMacAddr(frame::mac_of(addr).to_vec().into()),
                InterfaceDescriptionOption::IfTsResol(9),
            ],
        };
        self.write_block(idb)?;
        self.ifaces.push(Iface {
            name: name.to_owned(),
            addr,
        });
        self.by_addr.insert(addr, id);
        Ok(id)
    }

    /// The interface of the host with `addr`; an address that is no host's
    /// (a spoofed injection) gets its own interface, named `unknown-<addr>`.
    fn iface_for(&mut self, addr: Ipv4Addr) -> io::Result<u32> {
        match self.by_addr.get(&addr) {
            Some(id) => Ok(*id),
            None => self.add_iface(&format!("unknown-{addr}"), addr),
        }
    }

    fn host_name(&self, addr: SocketAddrV4) -> String {
        match self
            .by_addr
            .get(addr.ip())
            .and_then(|id| self.ifaces.get(*id as usize))
        {
            Some(i) => format!("{}:{}", i.name, addr.port()),
            None => addr.to_string(),
        }
    }

    fn timestamp(&self, at: SimTime) -> Duration {
        self.epoch + at.since_start()
    }

    fn write_epb(&mut self, epb: Epb) -> io::Result<()> {
        let mut options = Vec::with_capacity(1 + epb.comments.len());
        options.push(EnhancedPacketOption::Flags(epb.direction));
        options.extend(
            epb.comments
                .into_iter()
                .map(|c| EnhancedPacketOption::Comment(c.into())),
        );
        let original_len = u32::try_from(epb.frame.len()).map_err(io::Error::other)?;
        let block = EnhancedPacketBlock {
            interface_id: epb.iface,
            timestamp: self.timestamp(epb.at),
            original_len,
            data: epb.frame.into(),
            options,
        };
        self.encoder.get_mut().clear();
        self.encoder.write_pcapng_block(block).map_err(pcap_err)?;
        insert_packet_id(self.encoder.get_mut(), epb.packet);
        match self.out.as_mut() {
            Some(out) => out.write_all(self.encoder.get_ref()),
            None => Err(io::Error::other("capture writer already closed")),
        }
    }

    fn write_pcap_record(&mut self, at: SimTime, frame: &[u8]) -> io::Result<()> {
        let ts = self.timestamp(at);
        let secs = u32::try_from(ts.as_secs()).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "timestamp beyond classic pcap's 2106 limit",
            )
        })?;
        let len = u32::try_from(frame.len()).map_err(io::Error::other)?;
        let mut buf = Vec::with_capacity(16 + frame.len());
        buf.extend_from_slice(&secs.to_le_bytes());
        buf.extend_from_slice(&ts.subsec_micros().to_le_bytes());
        buf.extend_from_slice(&len.to_le_bytes());
        buf.extend_from_slice(&len.to_le_bytes());
        buf.extend_from_slice(frame);
        match self.out.as_mut() {
            Some(out) => out.write_all(&buf),
            None => Err(io::Error::other("capture writer already closed")),
        }
    }

    /// The outbound record of a sent datagram, with the fate of every copy.
    fn outbound_epb(&mut self, key: u64) -> io::Result<Option<Epb>> {
        let Some(src) = self.sent.get(&key).map(|s| s.src) else {
            return Ok(None);
        };
        let iface = self.iface_for(*src.ip())?;
        let Some(s) = self.sent.get(&key) else {
            return Ok(None);
        };
        let pkt = s.packet;
        let mut comments = vec![format!(
            "streamlab: pkt={pkt} sent: {}->{}, {}{} bytes, copies={}",
            self.host_name(s.src),
            self.host_name(s.dst),
            comment::transport(&s.transport),
            s.bytes.len(),
            s.verdict.copies.len()
        )];
        comments.extend(comment::provenance(pkt, &s.origin, &s.notes));
        for (k, fate) in s.verdict.copies.iter().enumerate() {
            let copy = k as u32;
            comments.extend(comment::fate(pkt, copy, fate, &s.transport));
            match s.outcomes.get(k) {
                Some(Outcome::Lost { at, cause }) => comments.push(lost(pkt, copy, *at, cause)),
                Some(Outcome::InFlight) => comments.push(format!(
                    "streamlab: pkt={pkt} copy={copy} unresolved: still in flight when this record was written, no arrival or loss recorded by then"
                )),
                _ => {}
            }
        }
        let frame = frame_of(
            s.src,
            s.dst,
            pkt,
            &s.bytes,
            &s.transport,
            UdpChecksum::Correct,
        )?;
        let at = s.at;
        Ok(Some(Epb {
            iface,
            at,
            direction: DIR_OUTBOUND,
            packet: pkt,
            frame,
            comments,
        }))
    }

    /// Writes held records from the front of the queue while they are ready.
    /// With `all`, writes everything (the end of the capture).
    fn pump(&mut self, all: bool) -> io::Result<()> {
        while let Some(front) = self.queue.front() {
            match front {
                Held::Ready(_) => {
                    if let Some(Held::Ready(epb)) = self.queue.pop_front() {
                        self.write_epb(epb)?;
                    }
                }
                Held::Outbound(key) => {
                    let key = *key;
                    let settled = self.sent.get(&key).is_none_or(Sent::settled);
                    if !(settled || all || self.queue.len() > self.max_held) {
                        break;
                    }
                    self.queue.pop_front();
                    if let Some(epb) = self.outbound_epb(key)? {
                        self.write_epb(epb)?;
                    }
                    if let Some(s) = self.sent.get_mut(&key) {
                        s.released = true;
                    }
                    self.forget_if_settled(key);
                }
            }
        }
        Ok(())
    }

    fn forget_if_settled(&mut self, key: u64) {
        let Some(s) = self.sent.get(&key) else { return };
        if s.released && s.settled() {
            let pkt = s.packet;
            self.sent.remove(&key);
            if self.by_packet.get(&pkt) == Some(&key) {
                self.by_packet.remove(&pkt);
            }
        }
    }

    fn on_sent(&mut self, e: SentEvent<'_>) -> io::Result<()> {
        if self.format == CaptureFormat::Pcap {
            return Ok(());
        }
        // Make sure the sender's interface exists before anything refers to it.
        self.iface_for(*e.src.ip())?;
        let outcomes = e
            .verdict
            .copies
            .iter()
            .map(|f| match f {
                CopyFate::Delivered { .. } => Outcome::InFlight,
                _ => Outcome::Settled,
            })
            .collect();
        let key = self.next_key;
        self.next_key += 1;
        self.sent.insert(
            key,
            Sent {
                at: e.at,
                packet: e.packet,
                src: e.src,
                dst: e.dst,
                bytes: e.bytes.to_vec(),
                origin: e.origin.clone(),
                notes: e.notes.to_vec(),
                verdict: e.verdict.clone(),
                transport: *e.transport,
                outcomes,
                released: false,
            },
        );
        self.by_packet.insert(e.packet, key);
        self.queue.push_back(Held::Outbound(key));
        Ok(())
    }

    fn on_arrived(&mut self, e: ArrivedEvent<'_>) -> io::Result<()> {
        let pkt = e.packet;
        let checksum_original;
        let checksum = match e.corruption {
            Some(c) if c.caught_by_checksum => {
                checksum_original = uncorrupted(e.bytes, c);
                UdpChecksum::OverOriginal(&checksum_original)
            }
            Some(_) => UdpChecksum::Absent,
            None => UdpChecksum::Correct,
        };
        let frame = frame_of(e.src, e.dst, pkt, e.bytes, e.transport, checksum)?;
        if self.format == CaptureFormat::Pcap {
            return self.write_pcap_record(e.at, &frame);
        }
        let iface = self.iface_for(*e.dst.ip())?;
        let key = self.by_packet.get(&pkt).copied();
        let sent = key.and_then(|k| self.sent.get(&k));
        let copy = e.copy;
        let route = format!("{}->{}", self.host_name(e.src), self.host_name(e.dst));
        let mut comments = Vec::new();
        match sent.and_then(|s| s.verdict.copies.get(copy as usize).map(|f| (s, f))) {
            Some((s, CopyFate::Delivered { delay, .. })) => comments.push(format!(
                "streamlab: pkt={pkt} copy={copy} arrived: {route}, sent at {}, {}",
                comment::time(s.at),
                comment::delay(delay)
            )),
            Some((s, _)) => comments.push(format!(
                "streamlab: pkt={pkt} copy={copy} arrived: {route}, sent at {}, not scheduled for delivery by the link",
                comment::time(s.at)
            )),
            None => comments.push(format!("streamlab: pkt={pkt} copy={copy} arrived: {route}, no send record for this packet")),
        }
        comments.extend(comment::duplicate(pkt, copy));
        if let Some(c) = e.corruption {
            comments.push(comment::corruption(pkt, copy, c, e.transport));
        }
        if !e.delivered_to_app {
            let to = if e.transport.is_udp() {
                "the application"
            } else {
                "the TCP stack"
            };
            comments.push(format!(
                "streamlab: pkt={pkt} copy={copy} discarded: not delivered to {to}"
            ));
        }
        if let Some(s) = sent {
            comments.extend(comment::provenance(pkt, &s.origin, &s.notes));
        }
        if let Some(k) = key {
            if let Some(o) = self
                .sent
                .get_mut(&k)
                .and_then(|s| s.outcomes.get_mut(copy as usize))
            {
                *o = Outcome::Arrived;
            }
            self.forget_if_settled(k);
        }
        self.queue.push_back(Held::Ready(Epb {
            iface,
            at: e.at,
            direction: DIR_INBOUND,
            packet: pkt,
            frame,
            comments,
        }));
        Ok(())
    }

    fn on_lost(&mut self, at: SimTime, pkt: u64, copy: u32, cause: &str) -> io::Result<()> {
        if self.format == CaptureFormat::Pcap {
            return Ok(());
        }
        let Some(key) = self.by_packet.get(&pkt).copied() else {
            // No send record (never sent in this trace, or already fully
            // accounted for): there is no frame to attach the note to.
            return Ok(());
        };
        let Some(s) = self.sent.get_mut(&key) else {
            return Ok(());
        };
        if let Some(o) = s.outcomes.get_mut(copy as usize) {
            *o = Outcome::Lost {
                at,
                cause: comment::one_line(cause),
            };
        }
        if s.released {
            // The outbound record went out before the loss was known: write
            // the loss as its own outbound record of the same datagram.
            let frame = frame_of(
                s.src,
                s.dst,
                pkt,
                &s.bytes,
                &s.transport,
                UdpChecksum::Correct,
            )?;
            let src = s.src;
            let comments = vec![format!(
                "{} (late note: repeats the outbound datagram sent at {}, whose record was written before the loss was known)",
                lost(pkt, copy, at, cause),
                comment::time(s.at)
            )];
            let iface = self.iface_for(*src.ip())?;
            self.queue.push_back(Held::Ready(Epb {
                iface,
                at,
                direction: DIR_OUTBOUND,
                packet: pkt,
                frame,
                comments,
            }));
        }
        self.forget_if_settled(key);
        Ok(())
    }
}

/// `streamlab: pkt=17 copy=0 lost: in flight at 1.234567s: partition ...`.
fn lost(pkt: u64, copy: u32, at: SimTime, cause: &str) -> String {
    format!(
        "streamlab: pkt={pkt} copy={copy} lost: in flight at {}: {}",
        comment::time(at),
        comment::one_line(cause)
    )
}

/// Adds the `epb_packetid` option (code 5, u64) to an encoded
/// little-endian EPB that has at least one option. pcap-file 2.0 cannot build
/// an option of a code it does not know (its `UnknownOption` type is not
/// exported), so the option is spliced in before `opt_endofopt` and both
/// block length fields are updated.
fn insert_packet_id(block: &mut Vec<u8>, packet: u64) {
    let n = block.len();
    // [type 4][len 4] ... options ... [opt_endofopt 4][len 4]
    debug_assert!(
        n >= 40 && block[n - 8..n - 4] == [0, 0, 0, 0],
        "EPB must end with opt_endofopt"
    );
    let mut opt = [0u8; 12];
    opt[0..2].copy_from_slice(&OPT_EPB_PACKETID.to_le_bytes());
    opt[2..4].copy_from_slice(&8u16.to_le_bytes());
    opt[4..12].copy_from_slice(&packet.to_le_bytes());
    block.splice(n - 8..n - 8, opt);
    // Block lengths are far below 4 GiB: one frame of at most SNAPLEN plus
    // comments of at most 64 KiB each.
    let total = u32::try_from(block.len()).unwrap_or(u32::MAX).to_le_bytes();
    let end = block.len();
    block[4..8].copy_from_slice(&total);
    block[end - 4..end].copy_from_slice(&total);
}

/// The frame of a datagram (UDP, with the checksum asked for) or of a TCP
/// segment (its checksum is part of the bytes: as the stack computed it, or
/// stale after a corruption the receiver catches).
fn frame_of(
    src: SocketAddrV4,
    dst: SocketAddrV4,
    pkt: u64,
    bytes: &[u8],
    transport: &Transport,
    checksum: UdpChecksum<'_>,
) -> io::Result<Vec<u8>> {
    match transport {
        Transport::Udp => udp_frame(src, dst, ident(pkt), bytes, checksum),
        _ => tcp_frame(src, dst, ident(pkt), bytes),
    }
}

/// The IPv4 identification of a packet: the low 16 bits of its id.
fn ident(pkt: u64) -> u16 {
    (pkt & 0xffff) as u16
}

/// `bytes` with the corruption's bit flip undone.
fn uncorrupted(bytes: &[u8], c: &Corruption) -> Vec<u8> {
    let mut original = bytes.to_vec();
    if let Some(b) = original.get_mut(c.offset) {
        *b = c.old;
    }
    original
}

/// The fields of a `Sent` event the writer uses.
struct SentEvent<'a> {
    at: SimTime,
    packet: u64,
    src: SocketAddrV4,
    dst: SocketAddrV4,
    bytes: &'a [u8],
    origin: &'a Origin,
    notes: &'a [String],
    verdict: &'a Verdict,
    transport: &'a Transport,
}

/// The fields of an `Arrived` event the writer uses.
struct ArrivedEvent<'a> {
    at: SimTime,
    packet: u64,
    copy: u32,
    src: SocketAddrV4,
    dst: SocketAddrV4,
    bytes: &'a [u8],
    corruption: Option<&'a Corruption>,
    delivered_to_app: bool,
    transport: &'a Transport,
}

impl<W: Write> TraceSink for CaptureWriter<W> {
    fn record(&mut self, event: &TraceEvent) -> io::Result<()> {
        if self.finished {
            return Err(io::Error::other("capture already finished"));
        }
        match event {
            TraceEvent::Sent {
                at,
                packet,
                src,
                dst,
                bytes,
                origin,
                notes,
                verdict,
                transport,
            } => self.on_sent(SentEvent {
                at: *at,
                packet: packet.0,
                src: *src,
                dst: *dst,
                bytes,
                origin,
                notes,
                verdict,
                transport,
            })?,
            TraceEvent::Arrived {
                at,
                packet,
                copy,
                src,
                dst,
                bytes,
                corruption,
                delivered_to_app,
                transport,
            } => self.on_arrived(ArrivedEvent {
                at: *at,
                packet: packet.0,
                copy: *copy,
                src: *src,
                dst: *dst,
                bytes,
                corruption: corruption.as_ref(),
                delivered_to_app: *delivered_to_app,
                transport,
            })?,
            TraceEvent::Lost {
                at,
                packet,
                copy,
                cause,
                ..
            } => self.on_lost(*at, packet.0, *copy, cause)?,
            // Events added to the trace later are not (yet) part of the capture.
            #[allow(unreachable_patterns)]
            _ => {}
        }
        self.pump(false)?;
        // Flush once per simulated instant: the file is a complete capture
        // at every instant boundary, for one write per instant, not per record.
        let at = event.at();
        if self.flushed_at != Some(at) {
            self.flushed_at = Some(at);
            self.flush()?;
        }
        Ok(())
    }

    fn finish(&mut self) -> io::Result<()> {
        if self.finished {
            return Ok(());
        }
        self.finished = true;
        self.pump(true)?;
        self.sent.clear();
        self.by_packet.clear();
        self.flush()
    }
}

impl<W: Write> Drop for CaptureWriter<W> {
    fn drop(&mut self) {
        if self.out.is_some() && !self.finished {
            // Best effort: errors cannot be reported from drop; what was
            // already written is a valid file either way.
            let _ = self.finish();
        }
    }
}

#[cfg(test)]
mod tests;
