//! TCP through the impairment path: echo over a bad link, captures read by
//! tshark, timeouts, refusals, determinism.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::io;
use std::net::SocketAddrV4;
use std::rc::Rc;
use std::time::Duration;

use rand::RngCore;
use streamlab_core::seed::named_rng;
use streamlab_core::time::SimTime;
use streamlab_impair::{CopyFate, LinkConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::sim::{self, CLIENT, SERVER, Setup};
use super::{SimTcpListener, SimTcpStream, TcpConfig};
use crate::capture::CaptureFormat;
use crate::network::Network;
use crate::trace::{TcpFlags, TraceEvent, Transport};
use crate::tshark::{ChecksumStatus, TsharkQuery, require_tshark};

const PORT: u16 = 7;

fn link(json: &str) -> LinkConfig {
    serde_json::from_str(json).expect("link config")
}

/// 10 % loss, 5 % duplication, delay 20 ms ± 10 ms (reordering), 1 %
/// corruption caught by the checksum.
fn bad_link() -> LinkConfig {
    link(
        r#"{
            "delay": {"base_ms": 20, "jitter_ms": 10},
            "loss": {"model": "random", "probability": 0.10},
            "duplicate": {"probability": 0.05},
            "corrupt": {"probability": 0.01, "mode": "checksum"}
        }"#,
    )
}

fn payload(seed: u64, len: usize) -> Vec<u8> {
    let mut b = vec![0; len];
    named_rng(seed, "tcp-test-payload").fill_bytes(&mut b);
    b
}

/// The server: echo every connection's bytes back, then close.
async fn echo_server(net: Rc<RefCell<Network>>, host: usize) {
    {
        let config = TcpConfig::default().with_user_timeout(Some(Duration::from_secs(180)));
        let listener = SimTcpListener::bind_with(&net, host, PORT, config).expect("bind");
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let (mut r, mut w) = tokio::io::split(stream);
            if tokio::io::copy(&mut r, &mut w).await.is_ok() {
                let _ = w.shutdown().await;
            }
            // Keep the connection until the client has everything.
            let _ = r.read(&mut [0u8; 1]).await;
        }
    }
}

/// What the echo client saw.
#[derive(Debug, Default)]
struct Echo {
    echoed: Vec<u8>,
    error: Option<String>,
}

type Client = std::pin::Pin<Box<dyn std::future::Future<Output = ()>>>;

fn echo_client(
    data: Vec<u8>,
    out: Rc<RefCell<Echo>>,
) -> impl FnOnce(Rc<RefCell<Network>>, usize, SocketAddrV4) -> Client {
    move |net, host, server| {
        Box::pin(async move {
            let config = TcpConfig::default().with_user_timeout(Some(Duration::from_secs(180)));
            let addr = SocketAddrV4::new(*server.ip(), PORT);
            let stream = match SimTcpStream::connect_with(&net, host, addr, config).await {
                Ok(s) => s,
                Err(e) => {
                    out.borrow_mut().error = Some(e.to_string());
                    return;
                }
            };
            let (mut r, mut w) = tokio::io::split(stream);
            let writer = async {
                w.write_all(&data).await?;
                w.shutdown().await
            };
            let reader = async {
                let mut got = Vec::new();
                r.read_to_end(&mut got).await.map(|_| got)
            };
            let (wr, rd) = tokio::join!(writer, reader);
            let mut o = out.borrow_mut();
            match (wr, rd) {
                (Ok(()), Ok(got)) => o.echoed = got,
                (Err(e), _) | (_, Err(e)) => o.error = Some(e.to_string()),
            }
        })
    }
}

fn echo_run(setup: &Setup, len: usize) -> (sim::Outcome, Echo, Vec<u8>) {
    let data = payload(setup.seed, len);
    let out = Rc::new(RefCell::new(Echo::default()));
    let outcome = sim::run(setup, echo_server, echo_client(data.clone(), out.clone()));
    let echo = std::mem::take(&mut *out.borrow_mut());
    (outcome, echo, data)
}

/// Segments a stack sent again with payload it had sent before (same
/// direction, same sequence number): real retransmissions, not the link's
/// duplicates.
fn retransmissions(trace: &[TraceEvent]) -> usize {
    let mut seen = BTreeSet::new();
    let mut n = 0;
    for e in trace {
        if let TraceEvent::Sent {
            src,
            dst,
            transport: Transport::Tcp(h),
            ..
        } = e
            && h.payload_len > 0
            && !seen.insert((*src, *dst, h.seq))
        {
            n += 1;
        }
    }
    n
}

fn assert_balanced(o: &sim::Outcome) {
    assert!(!o.fates.is_empty());
    for ((a, b), f) in &o.fates {
        let dropped: u64 = f.dropped.values().sum();
        assert_eq!(f.in_flight, 0, "{a}->{b}: {f:?}");
        assert_eq!(f.sent, f.delivered + dropped, "{a}->{b}: {f:?}");
        assert!(f.balanced());
    }
}

#[test]
fn echo_of_1_mb_survives_loss_duplication_reordering_and_corruption() {
    let setup = Setup::new(11, bad_link());
    let (o, echo, data) = echo_run(&setup, 1 << 20);
    assert!(o.client_finished, "client did not finish by {}", o.ended_at);
    assert_eq!(echo.error, None);
    assert_eq!(echo.echoed.len(), data.len());
    assert!(echo.echoed == data, "echoed bytes differ");
    assert!(o.violations.is_empty(), "{:?}", o.violations);
    assert_balanced(&o);
    // The impairments really happened, and TCP repaired them.
    let up = &o.fates[&(CLIENT, SERVER)];
    let down = &o.fates[&(SERVER, CLIENT)];
    for f in [up, down] {
        assert!(f.dropped.get("loss").copied().unwrap_or(0) > 0, "{f:?}");
        assert!(f.sent > f.datagrams, "duplicates: {f:?}");
    }
    let corrupt: u64 = [up, down]
        .iter()
        .map(|f| f.dropped.get("corrupt_checksum").copied().unwrap_or(0))
        .sum();
    assert!(corrupt > 0, "no corruption caught: {up:?} {down:?}");
    let rtx = retransmissions(&o.trace);
    assert!(rtx > 0);
    eprintln!(
        "1 MiB echoed in {} simulated; {rtx} retransmitted segments; client->server {:?}; server->client {:?}",
        o.ended_at, up, down
    );
}

#[test]
fn corruption_in_deliver_mode_reaches_the_stack_with_a_fixed_checksum() {
    let setup = Setup::new(
        5,
        link(
            r#"{"delay": {"base_ms": 5, "jitter_ms": 0}, "corrupt": {"probability": 0.2, "mode": "deliver"}}"#,
        ),
    );
    let (o, _echo, _) = echo_run(&setup, 20_000);
    assert_balanced(&o);
    let mut delivered_corrupt = 0;
    for e in &o.trace {
        if let TraceEvent::Arrived {
            src,
            dst,
            bytes,
            corruption: Some(c),
            delivered_to_app,
            transport: Transport::Tcp(_),
            ..
        } = e
        {
            assert!(!c.caught_by_checksum);
            assert!(delivered_to_app);
            assert!(super::wire::tcp_checksum_ok(*src.ip(), *dst.ip(), bytes));
            delivered_corrupt += 1;
        }
    }
    assert!(delivered_corrupt > 0);
}

#[test]
fn the_trace_records_tcp_segments_with_their_header_fields() {
    let setup = Setup::new(1, LinkConfig::default());
    let (o, echo, data) = echo_run(&setup, 5000);
    assert!(
        echo.echoed == data,
        "echoed {} of {} bytes, error {:?}",
        echo.echoed.len(),
        data.len(),
        echo.error
    );
    let sent: Vec<_> = o
        .trace
        .iter()
        .filter_map(|e| match e {
            TraceEvent::Sent {
                src,
                dst,
                transport: Transport::Tcp(h),
                bytes,
                ..
            } => Some((*src, *dst, *h, bytes.len())),
            _ => None,
        })
        .collect();
    let (src, dst, syn, len) = sent[0];
    assert_eq!(src.ip(), &sim::hosts()[CLIENT].addr);
    assert!(src.port() >= 49_152);
    assert_eq!(dst, SocketAddrV4::new(sim::hosts()[SERVER].addr, PORT));
    assert!(syn.flags.has(TcpFlags::SYN) && !syn.flags.has(TcpFlags::ACK));
    assert_eq!(len, usize::from(syn.header_len));
    assert_eq!(syn.flags.to_string(), "SYN");
    let synack = sent[1].2;
    assert!(synack.flags.has(TcpFlags::SYN | TcpFlags::ACK));
    assert_eq!(synack.ack, syn.seq.wrapping_add(1));
    let json = serde_json::to_value(&o.trace[0]).expect("json");
    assert_eq!(json["transport"]["protocol"], "tcp");
    assert_eq!(json["transport"]["flags"], "SYN");
    assert!(sent.iter().any(|s| s.2.flags.has(TcpFlags::FIN)));
}

#[test]
fn a_partition_longer_than_the_user_timeout_times_the_writer_out() {
    let mut setup = Setup::new(3, link(r#"{"delay": {"base_ms": 10, "jitter_ms": 0}}"#));
    let cut_at = SimTime::from_millis(2000);
    setup.partition = Some((cut_at, None));
    setup.limit = Duration::from_secs(60);
    let result: Rc<RefCell<Option<(io::Error, SimTime, usize)>>> = Rc::default();
    let r = result.clone();
    let o = sim::run(
        &setup,
        |net, host| async move {
            let listener = SimTcpListener::bind(&net, host, PORT).expect("bind");
            let mut kept = Vec::new();
            while let Ok((mut s, _)) = listener.accept().await {
                // Read a little, then stop reading: the writer keeps data
                // outstanding, as the user timeout requires.
                let mut buf = vec![0; 10_000];
                let _ = s.read_exact(&mut buf).await;
                kept.push(s);
            }
        },
        move |net, host, server| async move {
            let addr = SocketAddrV4::new(*server.ip(), PORT);
            let config = TcpConfig::default().with_user_timeout(Some(Duration::from_secs(10)));
            let mut s = SimTcpStream::connect_with(&net, host, addr, config)
                .await
                .expect("connect before the partition");
            let chunk = vec![7u8; 1000];
            let mut written = 0;
            let err = loop {
                match s.write_all(&chunk).await {
                    Ok(()) => written += chunk.len(),
                    Err(e) => break e,
                }
            };
            *r.borrow_mut() = Some((err, sim::now(), written));
        },
    );
    assert!(
        o.client_finished,
        "the writer never failed (ran until {})",
        o.ended_at
    );
    let (err, at, written) = result.borrow_mut().take().expect("an error");
    assert_eq!(err.kind(), io::ErrorKind::TimedOut, "{err}");
    let msg = err.to_string();
    assert!(msg.contains("timed out") && msg.contains("10s"), "{msg}");
    assert!(msg.contains("user timeout"), "{msg}");
    // The timeout runs from the last segment heard before the cut.
    assert!(at >= cut_at + Duration::from_secs(9), "failed at {at}");
    assert!(at <= cut_at + Duration::from_secs(11), "failed at {at}");
    assert!(written > 10_000);
    assert_balanced(&o);
    let partition_losses: u64 = o
        .fates
        .values()
        .map(|f| f.dropped.get("partition").copied().unwrap_or(0))
        .sum();
    assert!(partition_losses > 0);
}

#[test]
fn connecting_to_a_closed_port_is_refused_by_the_peers_stack() {
    let setup = Setup::new(4, link(r#"{"delay": {"base_ms": 3, "jitter_ms": 0}}"#));
    let result: Rc<RefCell<Option<io::Error>>> = Rc::default();
    let r = result.clone();
    let o = sim::run(
        &setup,
        |net, host| async move {
            // A stack, but nothing listening on the port the client tries.
            let _l = SimTcpListener::bind(&net, host, PORT + 1).expect("bind");
            std::future::pending::<()>().await;
        },
        move |net, host, server| async move {
            let addr = SocketAddrV4::new(*server.ip(), PORT);
            *r.borrow_mut() = SimTcpStream::connect(&net, host, addr).await.err();
        },
    );
    let err = result.borrow_mut().take().expect("refused");
    assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused, "{err}");
    assert_balanced(&o);
    let rst = o.trace.iter().any(|e| {
        matches!(e, TraceEvent::Sent { transport: Transport::Tcp(h), .. } if h.flags.has(TcpFlags::RST))
    });
    assert!(rst);
}

#[test]
fn the_same_seed_gives_the_same_trace_and_captures() {
    let mut setup = Setup::new(21, bad_link());
    setup.captures = vec![CaptureFormat::PcapNg, CaptureFormat::Pcap];
    let (a, ea, _) = echo_run(&setup, 50_000);
    let (b, eb, _) = echo_run(&setup, 50_000);
    assert!(ea.echoed == eb.echoed);
    assert_eq!(a.trace_sha256, b.trace_sha256);
    assert_eq!(a.trace.len(), b.trace.len());
    assert!(a.captures[0] == b.captures[0], "pcapng differs");
    assert!(a.captures[1] == b.captures[1], "pcap differs");
    setup.seed = 22;
    let (c, _, _) = echo_run(&setup, 50_000);
    assert_ne!(a.trace_sha256, c.trace_sha256);
}

#[test]
fn tshark_reads_tcp_captures_and_marks_retransmissions() {
    let Some(_) = require_tshark("tshark_reads_tcp_captures_and_marks_retransmissions") else {
        return;
    };
    let mut setup = Setup::new(31, bad_link());
    setup.captures = vec![CaptureFormat::PcapNg, CaptureFormat::Pcap];
    let (o, echo, data) = echo_run(&setup, 100_000);
    assert!(
        echo.echoed == data,
        "echoed {} of {} bytes, error {:?}",
        echo.echoed.len(),
        data.len(),
        echo.error
    );
    let dir = std::env::temp_dir().join(format!("streamlab-tcp-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let pcapng = dir.join("echo.pcapng");
    let pcap = dir.join("echo.pcap");
    std::fs::write(&pcapng, &o.captures[0]).expect("write");
    std::fs::write(&pcap, &o.captures[1]).expect("write");

    let tcp_query = || {
        TsharkQuery::default()
            .arg("-o")
            .arg("tcp.check_checksum:TRUE")
            .field("tcp.checksum.status")
            .field("tcp.stream")
    };
    for file in [&pcapng, &pcap] {
        let rows = tcp_query().rows(file).expect("tshark");
        assert!(!rows.is_empty());
        for r in &rows {
            assert!(!r.malformed, "{}: malformed frame {r:?}", file.display());
            assert_eq!(r.ip_checksum, Some(ChecksumStatus::Good), "{r:?}");
            assert_eq!(r.extra[1], "0", "one TCP stream: {r:?}");
        }
        let bad_tcp = rows.iter().filter(|r| r.extra[0] == "0").count();
        let good_tcp = rows.iter().filter(|r| r.extra[0] == "1").count();
        assert!(
            good_tcp > 0,
            "no validated TCP checksum in {}",
            file.display()
        );
        // Exactly the copies whose corruption the checksum caught.
        let caught = o
            .trace
            .iter()
            .filter(|e| matches!(e, TraceEvent::Arrived { corruption: Some(c), .. } if c.caught_by_checksum))
            .count();
        assert_eq!(bad_tcp, caught, "{}", file.display());
        let rtx = TsharkQuery::default()
            .filter("tcp.analysis.retransmission")
            .rows(file)
            .expect("tshark");
        assert!(
            !rtx.is_empty(),
            "no retransmission marked in {}",
            file.display()
        );
        eprintln!(
            "{}: {} frames, {} marked as retransmissions, {bad_tcp} with a bad TCP checksum",
            file.display(),
            rows.len(),
            rtx.len()
        );
    }
    // The comments say what happened to each segment.
    let rows = tcp_query().rows(&pcapng).expect("tshark");
    assert!(
        rows.iter()
            .any(|r| r.comment_contains("sent: client:") && r.comment_contains("TCP SYN seq="))
    );
    assert!(
        rows.iter()
            .any(|r| r.comment_contains("caught by TCP checksum"))
    );
    assert!(rows.iter().any(|r| r.comment_contains("dropped: ")));
    let _ = std::fs::remove_dir_all(&dir);
    // Copies the link dropped show only as sent: every inbound record is an
    // arrival.
    let arrivals = o
        .trace
        .iter()
        .filter(|e| matches!(e, TraceEvent::Arrived { .. }))
        .count();
    let lost_by_link: usize = o
        .trace
        .iter()
        .map(|e| match e {
            TraceEvent::Sent { verdict, .. } => verdict
                .copies
                .iter()
                .filter(|c| matches!(c, CopyFate::Dropped { .. }))
                .count(),
            _ => 0,
        })
        .sum();
    assert!(lost_by_link > 0);
    assert_eq!(
        rows.iter()
            .filter(|r| r.direction == Some(crate::tshark::Direction::Inbound))
            .count(),
        arrivals
    );
}

#[test]
fn an_aborted_connection_resets_the_peer() {
    let setup = Setup::new(6, link(r#"{"delay": {"base_ms": 5, "jitter_ms": 0}}"#));
    let result: Rc<RefCell<Option<io::Error>>> = Rc::default();
    let r = result.clone();
    let o = sim::run(
        &setup,
        |net, host| async move {
            let listener = SimTcpListener::bind(&net, host, PORT).expect("bind");
            let mut kept = Vec::new();
            while let Ok((mut s, _)) = listener.accept().await {
                let mut buf = [0u8; 100];
                let _ = s.read_exact(&mut buf).await;
                s.abort();
                kept.push(s);
            }
        },
        move |net, host, server| async move {
            let addr = SocketAddrV4::new(*server.ip(), PORT);
            let mut s = SimTcpStream::connect(&net, host, addr)
                .await
                .expect("connect");
            s.write_all(&[1u8; 100]).await.expect("write");
            let mut buf = [0u8; 10];
            *r.borrow_mut() = s.read(&mut buf).await.err();
        },
    );
    let err = result.borrow_mut().take().expect("reset");
    assert_eq!(err.kind(), io::ErrorKind::ConnectionReset, "{err}");
    assert!(err.to_string().contains("reset by the peer"), "{err}");
    assert_balanced(&o);
}

/// Sans-IO host machines with TCP, driven by the same `HostDriver` as in
/// real programs, over the simulated network's TCP.
mod host_machines {
    use super::*;
    use crate::runner::SimNet;
    use streamlab_core::driver::HostDriver;
    use streamlab_core::host::{HostMachine, HostReport, Input, Outcome, Output, SocketId};

    /// Listens and echoes every byte back; half-closes when its peer does.
    #[derive(Default)]
    struct EchoServer {
        queue: std::collections::VecDeque<(Output, Vec<u8>)>,
        started: bool,
    }

    impl HostMachine for EchoServer {
        fn handle(&mut self, _now: SimTime, input: Input<'_>) {
            match input {
                Input::Received { conn, data } => self.queue.push_back((
                    Output::Write {
                        conn,
                        len: data.len(),
                    },
                    data.to_vec(),
                )),
                Input::Closed { conn, .. } => {
                    self.queue
                        .push_back((Output::Shutdown { conn }, Vec::new()));
                }
                _ => {}
            }
        }
        fn handle_timeout(&mut self, _now: SimTime) {}
        fn poll_output(&mut self, _now: SimTime, buf: &mut [u8]) -> Option<Output> {
            if !self.started {
                self.started = true;
                return Some(Output::Listen {
                    listener: 1,
                    port: PORT,
                });
            }
            let (out, data) = self.queue.pop_front()?;
            buf[..data.len()].copy_from_slice(&data);
            Some(out)
        }
        fn poll_timeout(&self) -> Option<SimTime> {
            None
        }
        fn poll_event(&mut self) -> Option<String> {
            None
        }
        fn is_finished(&self) -> bool {
            false
        }
        fn report(&self) -> HostReport {
            HostReport::default()
        }
    }

    const CONN: SocketId = 7;

    /// Connects, sends its data in chunks, half-closes, and checks what
    /// comes back.
    struct EchoClient {
        data: Vec<u8>,
        server: std::net::SocketAddr,
        queue: std::collections::VecDeque<(Output, Vec<u8>)>,
        started: bool,
        received: Vec<u8>,
        outcome: Option<Outcome>,
    }

    impl HostMachine for EchoClient {
        fn handle(&mut self, _now: SimTime, input: Input<'_>) {
            match input {
                Input::Connected { conn: CONN, .. } => {
                    for chunk in self.data.chunks(8192) {
                        self.queue.push_back((
                            Output::Write {
                                conn: CONN,
                                len: chunk.len(),
                            },
                            chunk.to_vec(),
                        ));
                    }
                    self.queue
                        .push_back((Output::Shutdown { conn: CONN }, Vec::new()));
                }
                Input::Received { data, .. } => self.received.extend_from_slice(data),
                Input::Closed { error, .. } => {
                    self.outcome = Some(if error.is_none() && self.received == self.data {
                        Outcome::Completed
                    } else {
                        Outcome::Failed {
                            name: "echo".into(),
                            message: format!(
                                "{} of {} bytes back, error {error:?}",
                                self.received.len(),
                                self.data.len()
                            ),
                        }
                    });
                }
                Input::BindFailed { error, .. } => {
                    self.outcome = Some(Outcome::Failed {
                        name: "connect".into(),
                        message: error.to_string(),
                    });
                }
                _ => {}
            }
        }
        fn handle_timeout(&mut self, _now: SimTime) {}
        fn poll_output(&mut self, _now: SimTime, buf: &mut [u8]) -> Option<Output> {
            if !self.started {
                self.started = true;
                return Some(Output::Connect {
                    conn: CONN,
                    destination: self.server,
                });
            }
            let (out, data) = self.queue.pop_front()?;
            buf[..data.len()].copy_from_slice(&data);
            Some(out)
        }
        fn poll_timeout(&self) -> Option<SimTime> {
            None
        }
        fn poll_event(&mut self) -> Option<String> {
            None
        }
        fn is_finished(&self) -> bool {
            self.outcome.is_some()
        }
        fn report(&self) -> HostReport {
            HostReport {
                outcome: self.outcome.clone(),
                ..HostReport::default()
            }
        }
    }

    #[test]
    fn a_sans_io_echo_over_simulated_tcp_survives_an_impaired_link() {
        // Loss, duplication, reordering and corruption, gentle enough for
        // the default 10 s user timeout (heavier loss needs a longer one:
        // smoltcp backs its retransmissions off without SACK).
        let setup = Setup::new(
            21,
            link(
                r#"{
                    "delay": {"base_ms": 20, "jitter_ms": 10},
                    "loss": {"model": "random", "probability": 0.02},
                    "duplicate": {"probability": 0.02},
                    "corrupt": {"probability": 0.005, "mode": "checksum"}
                }"#,
            ),
        );
        let d = payload(21, 100_000);
        let result = Rc::new(RefCell::new(None));
        let r = result.clone();
        let o = sim::run(
            &setup,
            |net, host| async move {
                let mut drv = HostDriver::new(EchoServer::default(), SimNet { net, host });
                let _ = drv.run(|_, _| {}).await;
            },
            move |net, host, server| async move {
                let client = EchoClient {
                    data: d,
                    server: std::net::SocketAddr::V4(SocketAddrV4::new(*server.ip(), PORT)),
                    queue: Default::default(),
                    started: false,
                    received: Vec::new(),
                    outcome: None,
                };
                let mut drv = HostDriver::new(client, SimNet { net, host });
                let res = drv.run(|_, _| {}).await;
                *r.borrow_mut() = Some((res.map_err(|e| e.to_string()), drv.machine().report()));
            },
        );
        assert!(o.client_finished, "the client finished");
        let (res, report) = result.borrow_mut().take().expect("client ran");
        assert_eq!(res, Ok(()));
        assert_eq!(report.outcome, Some(Outcome::Completed), "{report:?}");
        assert!(
            retransmissions(&o.trace) > 0,
            "the link forced retransmissions"
        );
    }
}
