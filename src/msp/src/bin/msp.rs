//! `msp`: transfer a file or stdin over Serval MSP on real UDP.
//!
//! ```text
//! msp listen --port P [--bind ADDR] [--output FILE|-] [--json]
//! msp send --target HOST --port P [FILE|-] [--chunk-size N] [--json]
//! ```
//!
//! The sender reads its input, sends it as messages of at most
//! `--chunk-size` bytes (1..=1024, default 1024), shuts down and waits for
//! the listener's shutdown; the listener writes every message, in order, to
//! its output, shuts down when the sender has, and exits when the
//! connection closes. Both print progress on stderr once a second and a
//! summary at the end; with `--json` the summary is one JSON object on the
//! last line of stdout (stderr when the output is stdout): `role`, `bytes`,
//! `messages`, `retransmissions`, `duration_s`, `result`.
//!
//! Exit codes: 0 the whole stream was delivered and the connection closed
//! cleanly; 1 it failed (`timeout`, `stopped`); 2 bad usage or options; 3 a
//! socket or file error.

// The binary is the edge where wall-clock time enters: it converts it to
// SimTime for the sans-IO endpoint.
#![allow(clippy::disallowed_methods)]

use std::io::{Read, Write};
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use streamlab_core::machine::{MAX_DATAGRAM_SIZE, Machine};
use streamlab_core::time::SimTime;
use streamlab_msp::proto::{CloseResult, Config, Endpoint, Event, MAX_MESSAGE, SendError};
use tokio::net::UdpSocket;

#[derive(Parser, Debug)]
#[command(
    name = "msp",
    version,
    about = "Transfer a file or stdin over Serval MSP (UDP)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Receive one stream on --port and write it to --output.
    Listen {
        /// UDP port to listen on (1-65535).
        #[arg(long)]
        port: u16,
        /// Local address to bind.
        #[arg(long, default_value = "0.0.0.0")]
        bind: String,
        /// Where the received bytes go (`-`: stdout).
        #[arg(long, default_value = "-")]
        output: String,
        /// Print the summary as one JSON object on the last line.
        #[arg(long)]
        json: bool,
        /// After a clean close, keep answering the peer's retransmissions
        /// this long at most (docs/msp.md §6.4).
        #[arg(long, default_value_t = 2000)]
        linger_ms: u64,
    },
    /// Send FILE (or stdin) to --target:--port.
    Send {
        /// The listener's host name or address.
        #[arg(long)]
        target: String,
        /// The listener's UDP port (1-65535).
        #[arg(long)]
        port: u16,
        /// The file to send (`-` or absent: stdin).
        file: Option<PathBuf>,
        /// Bytes per message, 1-1024.
        #[arg(long, default_value_t = MAX_MESSAGE)]
        chunk_size: usize,
        /// Print the summary as one JSON object on the last line.
        #[arg(long)]
        json: bool,
        /// After a clean close, keep answering the peer's retransmissions
        /// this long at most (docs/msp.md §6.4).
        #[arg(long, default_value_t = 2000)]
        linger_ms: u64,
    },
}

/// A failure and its exit code.
struct Fail {
    code: u8,
    message: String,
}

fn usage(message: impl Into<String>) -> Fail {
    Fail {
        code: 2,
        message: message.into(),
    }
}

fn io_fail(message: impl Into<String>) -> Fail {
    Fail {
        code: 3,
        message: message.into(),
    }
}

/// What a run did.
struct Summary {
    role: &'static str,
    bytes: u64,
    messages: u64,
    retransmissions: u64,
    started: Instant,
    /// When the connection ended (the linger afterwards does not count).
    ended: Option<Instant>,
    result: String,
}

impl Summary {
    fn seconds(&self) -> f64 {
        self.ended
            .unwrap_or_else(Instant::now)
            .saturating_duration_since(self.started)
            .as_secs_f64()
    }

    fn print(&self, json: bool, to_stderr: bool) {
        let line = if json {
            serde_json::json!({
                "role": self.role,
                "bytes": self.bytes,
                "messages": self.messages,
                "retransmissions": self.retransmissions,
                "duration_s": self.seconds(),
                "result": self.result,
            })
            .to_string()
        } else {
            format!(
                "{}: {} bytes in {} messages, {} retransmissions, {:.3} s: {}",
                self.role,
                self.bytes,
                self.messages,
                self.retransmissions,
                self.seconds(),
                self.result
            )
        };
        if to_stderr {
            eprintln!("{line}");
        } else {
            println!("{line}");
        }
    }
}

/// The endpoint on a real socket: time from a monotonic clock.
struct Io {
    sock: UdpSocket,
    ep: Endpoint,
    start: Instant,
    buf: Vec<u8>,
}

impl Io {
    fn now(&self) -> SimTime {
        SimTime::from_micros(self.start.elapsed().as_micros() as u64)
    }

    /// Send everything due.
    async fn flush(&mut self) -> Result<(), Fail> {
        let now = self.now();
        while let Some(t) = self.ep.poll_transmit(now, &mut self.buf) {
            if let Err(e) = self.sock.send_to(&self.buf[..t.len], t.destination).await {
                // An unreachable peer is MSP's business (it retransmits or
                // times out), not a reason to stop.
                if e.kind() != std::io::ErrorKind::ConnectionRefused {
                    return Err(io_fail(format!("sending to {}: {e}", t.destination)));
                }
            }
        }
        Ok(())
    }

    /// Wait for a datagram or the next timer (or `cap`), and feed it.
    async fn wait(&mut self, cap: Duration) -> Result<(), Fail> {
        let now = self.now();
        let deadline = match self.ep.poll_timeout() {
            Some(t) => t.saturating_duration_since(now).min(cap),
            None => cap,
        };
        let mut rbuf = [0u8; 2048];
        tokio::select! {
            r = self.sock.recv_from(&mut rbuf) => match r {
                Ok((n, from)) => {
                    let now = self.now();
                    self.ep.handle_datagram(now, from, &rbuf[..n]);
                    // Take whatever else is already waiting.
                    while let Ok((n, from)) = self.sock.try_recv_from(&mut rbuf) {
                        let now = self.now();
                        self.ep.handle_datagram(now, from, &rbuf[..n]);
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {}
                Err(e) => return Err(io_fail(format!("receiving: {e}"))),
            },
            () = tokio::time::sleep(deadline) => {
                let now = self.now();
                self.ep.handle_timeout(now);
            }
        }
        Ok(())
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("msp: cannot start the runtime: {e}");
            return ExitCode::from(3);
        }
    };
    let r = rt.block_on(async {
        match cli.command {
            Command::Listen {
                port,
                bind,
                output,
                json,
                linger_ms,
            } => listen(port, &bind, &output, json, linger_ms).await,
            Command::Send {
                target,
                port,
                file,
                chunk_size,
                json,
                linger_ms,
            } => send(&target, port, file, chunk_size, json, linger_ms).await,
        }
    });
    match r {
        Ok(code) => ExitCode::from(code),
        Err(f) => {
            eprintln!("msp: {}", f.message);
            ExitCode::from(f.code)
        }
    }
}

/// Keep running a closed endpoint until it has nothing left or `linger`
/// has passed.
async fn linger(io: &mut Io, linger: Duration) -> Result<(), Fail> {
    let until = Instant::now() + linger;
    while io.ep.connections() > 0 {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        io.wait(left).await?;
        io.flush().await?;
        while io.ep.poll_event().is_some() {}
    }
    Ok(())
}

async fn listen(
    port: u16,
    bind: &str,
    output: &str,
    json: bool,
    linger_ms: u64,
) -> Result<u8, Fail> {
    if port == 0 {
        return Err(usage(
            "--port must be 1-65535 (0 would pick an ephemeral port)",
        ));
    }
    let ip: std::net::IpAddr = bind
        .parse()
        .map_err(|_| usage(format!("--bind {bind:?} is not an IP address")))?;
    let to_stdout = output == "-";
    let mut out: Box<dyn Write> = if to_stdout {
        Box::new(std::io::BufWriter::new(std::io::stdout()))
    } else {
        let f = std::fs::File::create(output)
            .map_err(|e| usage(format!("cannot create --output {output:?}: {e}")))?;
        Box::new(std::io::BufWriter::new(f))
    };
    let sock = UdpSocket::bind(SocketAddr::new(ip, port))
        .await
        .map_err(|e| io_fail(format!("cannot bind {ip}:{port}: {e}")))?;
    eprintln!("msp: listening on {ip}:{port}");
    let mut io = Io {
        sock,
        ep: Endpoint::listener(Config { max_connections: 1 }),
        start: Instant::now(),
        buf: vec![0; MAX_DATAGRAM_SIZE],
    };
    let mut s = Summary {
        role: "listen",
        bytes: 0,
        messages: 0,
        retransmissions: 0,
        started: Instant::now(),
        ended: None,
        result: "open".into(),
    };
    let mut peer = None;
    let mut last_progress = Instant::now();
    let result = loop {
        io.flush().await?;
        let mut ended = None;
        while let Some(e) = io.ep.poll_event() {
            match e {
                Event::Opened { peer: p } => {
                    if peer.is_none() {
                        eprintln!("msp: connection from {p}");
                        peer = Some(p);
                        s.started = Instant::now();
                    }
                }
                Event::Message { data, .. } => {
                    out.write_all(&data)
                        .map_err(|e| io_fail(format!("writing the output: {e}")))?;
                    s.bytes += data.len() as u64;
                    s.messages += 1;
                }
                Event::RemoteShutdown { peer: p } => {
                    let now = io.now();
                    io.ep.shutdown(now, p);
                }
                Event::Writable { .. } => {}
                Event::Closed { result, .. } => ended = Some(result),
            }
        }
        if let Some(r) = ended {
            break r;
        }
        if last_progress.elapsed() >= Duration::from_secs(1) && peer.is_some() {
            last_progress = Instant::now();
            eprintln!("msp: received {} bytes, {} messages", s.bytes, s.messages);
        }
        io.wait(Duration::from_secs(1)).await?;
    };
    s.ended = Some(Instant::now());
    out.flush()
        .map_err(|e| io_fail(format!("writing the output: {e}")))?;
    io.flush().await?;
    linger(&mut io, Duration::from_millis(linger_ms)).await?;
    s.retransmissions = io.ep.stats().retransmissions;
    s.result = result.name().into();
    s.print(json, to_stdout);
    Ok(if result == CloseResult::Closed { 0 } else { 1 })
}

fn resolve(target: &str, port: u16) -> Result<SocketAddr, Fail> {
    (target, port)
        .to_socket_addrs()
        .map_err(|e| usage(format!("cannot resolve --target {target:?}: {e}")))?
        .find(SocketAddr::is_ipv4)
        .ok_or_else(|| usage(format!("--target {target:?} has no IPv4 address")))
}

async fn send(
    target: &str,
    port: u16,
    file: Option<PathBuf>,
    chunk_size: usize,
    json: bool,
    linger_ms: u64,
) -> Result<u8, Fail> {
    if port == 0 {
        return Err(usage("--port must be 1-65535"));
    }
    if !(1..=MAX_MESSAGE).contains(&chunk_size) {
        return Err(usage(format!(
            "--chunk-size {chunk_size} is outside 1-{MAX_MESSAGE} (MSP's message limit)"
        )));
    }
    let remote = resolve(target, port)?;
    let mut data = Vec::new();
    match file.as_deref() {
        Some(p) if p.as_os_str() != "-" => {
            std::fs::File::open(p)
                .and_then(|mut f| f.read_to_end(&mut data))
                .map_err(|e| usage(format!("cannot read {}: {e}", p.display())))?;
        }
        _ => {
            std::io::stdin()
                .read_to_end(&mut data)
                .map_err(|e| io_fail(format!("reading stdin: {e}")))?;
        }
    }
    let sock = UdpSocket::bind("0.0.0.0:0")
        .await
        .map_err(|e| io_fail(format!("cannot bind a UDP socket: {e}")))?;
    let mut io = Io {
        sock,
        ep: Endpoint::caller(remote),
        start: Instant::now(),
        buf: vec![0; MAX_DATAGRAM_SIZE],
    };
    let mut s = Summary {
        role: "send",
        bytes: 0,
        messages: 0,
        retransmissions: 0,
        started: Instant::now(),
        ended: None,
        result: "open".into(),
    };
    eprintln!("msp: sending {} bytes to {remote}", data.len());
    let mut chunks = data.chunks(chunk_size);
    let mut pending = chunks.next();
    let mut shut = false;
    let mut last_progress = Instant::now();
    let now = io.now();
    io.ep.connect(now);
    let result = loop {
        let now = io.now();
        while let Some(c) = pending {
            match io.ep.send(now, remote, c) {
                Ok(()) => {
                    s.bytes += c.len() as u64;
                    s.messages += 1;
                    pending = chunks.next();
                }
                Err(SendError::WouldBlock) => break,
                Err(e) => return Err(io_fail(format!("sending a message: {e}"))),
            }
        }
        if pending.is_none() && !shut {
            shut = true;
            io.ep.shutdown(now, remote);
        }
        io.flush().await?;
        let mut ended = None;
        while let Some(e) = io.ep.poll_event() {
            if let Event::Closed { result, .. } = e {
                ended = Some(result);
            }
        }
        if let Some(r) = ended {
            break r;
        }
        if last_progress.elapsed() >= Duration::from_secs(1) {
            last_progress = Instant::now();
            eprintln!(
                "msp: sent {} bytes, {} messages, {} retransmissions",
                s.bytes,
                s.messages,
                io.ep.stats().retransmissions
            );
        }
        io.wait(Duration::from_secs(1)).await?;
    };
    s.ended = Some(Instant::now());
    linger(&mut io, Duration::from_millis(linger_ms)).await?;
    s.retransmissions = io.ep.stats().retransmissions;
    s.result = result.name().into();
    s.print(json, false);
    Ok(if result == CloseResult::Closed { 0 } else { 1 })
}
