//! `srt-live`: srt-live-transmit's common case over this crate's sans-IO
//! endpoint and tokio's UDP sockets.
//!
//! ```text
//! srt-live [options] SOURCE TARGET
//!   udp://[HOST]:PORT                      plain UDP datagrams (one message each)
//!   srt://[HOST]:PORT?mode=caller|listener&latency=MS
//!                                          SRT; no host means listener
//! options (srt-live-transmit's -opt:value shape; `-opt value` works too):
//!   -s:MS, -stats:MS         a JSON stats line every MS milliseconds
//!   -statsout:FILE           stats to FILE instead of stderr
//!   -pf:json                 stats format (json is the only one)
//!   -t:SEC, -timeout:SEC     udp → srt: close (SHUTDOWN) after SEC s without input
//!   -a:no                    no auto-reconnect (the only mode)
//!   -q                       quiet
//! ```
//!
//! Exactly one of SOURCE and TARGET is `srt://`. Exit status: 0 when the
//! stream ended (SHUTDOWN sent or received), 1 when the connection failed,
//! 2 on bad arguments (with a message saying which).

use std::io::Write;
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use streamlab_core::machine::Machine;
use streamlab_core::seed::named_rng;
use streamlab_core::time::SimTime;
use streamlab_srt::proto::{Config, Endpoint, Event, Role, State};
use streamlab_srt::wire::SeqNo;
use tokio::net::UdpSocket;

#[derive(Debug, Clone, PartialEq)]
enum Uri {
    Udp {
        host: Option<String>,
        port: u16,
    },
    Srt {
        host: Option<String>,
        port: u16,
        listener: bool,
        config: Config,
    },
}

#[derive(Debug)]
struct Args {
    source: Uri,
    target: Uri,
    stats_ms: u64,
    stats_out: Option<String>,
    timeout_s: u64,
    quiet: bool,
}

fn usage_exit(msg: &str) -> ! {
    eprintln!("srt-live: {msg}");
    eprintln!(
        "usage: srt-live [-s:MS] [-statsout:FILE] [-pf:json] [-t:SEC] [-a:no] [-q] SOURCE TARGET"
    );
    eprintln!(
        "  one of SOURCE/TARGET is srt://[HOST]:PORT?mode=caller|listener&latency=MS, the other udp://[HOST]:PORT"
    );
    std::process::exit(2);
}

fn parse_uri(s: &str) -> Result<Uri, String> {
    let (scheme, rest) = s
        .split_once("://")
        .ok_or_else(|| format!("{s:?} is no URI (expected udp://… or srt://…)"))?;
    let (hostport, query) = match rest.split_once('?') {
        Some((a, b)) => (a, Some(b)),
        None => (rest, None),
    };
    let hostport = hostport.trim_end_matches('/');
    let (host, port) = hostport
        .rsplit_once(':')
        .ok_or_else(|| format!("{s:?} has no :PORT"))?;
    let port: u16 = port
        .parse()
        .map_err(|_| format!("{s:?}: port {port:?} is not a number 1..65535"))?;
    let host = (!host.is_empty()).then(|| host.trim_matches(['[', ']']).to_string());
    match scheme {
        "udp" => {
            if let Some(q) = query {
                return Err(format!("{s:?}: udp URIs take no parameters (got {q:?})"));
            }
            if port == 0 {
                return Err(format!("{s:?}: port 0"));
            }
            Ok(Uri::Udp { host, port })
        }
        "srt" => {
            let mut config = Config::default();
            let mut listener = host.is_none();
            for kv in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
                let (k, v) = kv
                    .split_once('=')
                    .ok_or_else(|| format!("{s:?}: parameter {kv:?} has no value"))?;
                let num = |what: &str| -> Result<u64, String> {
                    v.parse::<u64>()
                        .map_err(|_| format!("{s:?}: {what} {v:?} is not a number"))
                };
                match k {
                    "mode" => {
                        listener = match v {
                            "caller" | "client" => false,
                            "listener" | "server" => true,
                            "rendezvous" => {
                                return Err(format!("{s:?}: rendezvous mode is not supported"));
                            }
                            other => {
                                return Err(format!(
                                    "{s:?}: unknown mode {other:?} (caller or listener)"
                                ));
                            }
                        }
                    }
                    "latency" => {
                        let ms = u16::try_from(num("latency")?)
                            .map_err(|_| format!("{s:?}: latency {v} ms is too large"))?;
                        config.latency_ms = ms;
                        config.peer_latency_ms = ms;
                    }
                    "rcvlatency" => {
                        config.latency_ms = u16::try_from(num("rcvlatency")?)
                            .map_err(|_| format!("{s:?}: rcvlatency {v} ms is too large"))?;
                    }
                    "peerlatency" => {
                        config.peer_latency_ms = u16::try_from(num("peerlatency")?)
                            .map_err(|_| format!("{s:?}: peerlatency {v} ms is too large"))?;
                    }
                    "conntimeo" => config.connect_timeout_ms = num("conntimeo")?.max(1),
                    "peeridletimeo" => config.peer_idle_timeout_ms = num("peeridletimeo")?.max(1),
                    "tlpktdrop" => {
                        config.tlpktdrop = match v {
                            "1" | "true" | "yes" | "on" => true,
                            "0" | "false" | "no" | "off" => false,
                            _ => return Err(format!("{s:?}: tlpktdrop {v:?} is not a boolean")),
                        }
                    }
                    "transtype" if v == "live" => {}
                    "transtype" => return Err(format!("{s:?}: only transtype=live is supported")),
                    "passphrase" | "pbkeylen" => {
                        return Err(format!("{s:?}: encryption ({k}) is not supported"));
                    }
                    other => return Err(format!("{s:?}: unknown srt parameter {other:?}")),
                }
            }
            if !listener && host.is_none() {
                return Err(format!("{s:?}: caller mode needs a host"));
            }
            if port == 0 {
                return Err(format!("{s:?}: port 0"));
            }
            Ok(Uri::Srt {
                host,
                port,
                listener,
                config,
            })
        }
        other => Err(format!(
            "{s:?}: scheme {other:?} is not supported (udp or srt)"
        )),
    }
}

fn parse_args(argv: &[String]) -> Result<Args, String> {
    let mut pos = Vec::new();
    let mut stats_ms = 0;
    let mut stats_out = None;
    let mut timeout_s = 0;
    let mut quiet = false;
    let mut i = 0;
    while i < argv.len() {
        let a = &argv[i];
        i += 1;
        if !a.starts_with('-') || a == "-" {
            pos.push(a.clone());
            continue;
        }
        let body = a.trim_start_matches('-');
        let (name, inline) = match body.split_once(':') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (body, None),
        };
        let takes_value = matches!(
            name,
            "s" | "stats"
                | "stats-report-frequency"
                | "statsout"
                | "pf"
                | "statspf"
                | "t"
                | "timeout"
                | "to"
                | "a"
                | "auto"
                | "autoreconnect"
        );
        let value = if takes_value {
            match inline {
                Some(v) => Some(v),
                None => {
                    let v = argv
                        .get(i)
                        .cloned()
                        .ok_or_else(|| format!("option {a} needs a value"))?;
                    i += 1;
                    Some(v)
                }
            }
        } else {
            None
        };
        let v = value.unwrap_or_default();
        match name {
            "s" | "stats" | "stats-report-frequency" => {
                stats_ms = v
                    .parse()
                    .map_err(|_| format!("option {a}: {v:?} is not a number of milliseconds"))?;
            }
            "statsout" => stats_out = Some(v),
            "pf" | "statspf" => {
                if v != "json" {
                    return Err(format!(
                        "option {a}: only the json stats format is supported"
                    ));
                }
            }
            "t" | "timeout" | "to" => {
                timeout_s = v
                    .parse()
                    .map_err(|_| format!("option {a}: {v:?} is not a number of seconds"))?;
            }
            "a" | "auto" | "autoreconnect" => {
                if !matches!(v.as_str(), "no" | "off" | "0" | "false") {
                    return Err(format!(
                        "option {a}: auto-reconnect is not supported (use -a:no)"
                    ));
                }
            }
            "q" | "quiet" => quiet = true,
            _ => return Err(format!("unknown option {a}")),
        }
    }
    if pos.len() != 2 {
        return Err(format!(
            "expected SOURCE and TARGET, got {} argument(s)",
            pos.len()
        ));
    }
    let source = parse_uri(&pos[0])?;
    let target = parse_uri(&pos[1])?;
    match (&source, &target) {
        (Uri::Udp { .. }, Uri::Srt { .. }) | (Uri::Srt { .. }, Uri::Udp { .. }) => {}
        _ => return Err("one of SOURCE and TARGET must be srt:// and the other udp://".into()),
    }
    if let Uri::Udp { host: Some(_), .. } = &source {
        // A UDP source binds; a host there is the local address, fine.
    }
    if let Uri::Udp { host: None, .. } = &target {
        return Err("the udp:// TARGET needs a host to send to".into());
    }
    Ok(Args {
        source,
        target,
        stats_ms,
        stats_out,
        timeout_s,
        quiet,
    })
}

fn resolve(host: Option<&str>, port: u16) -> Result<SocketAddr, String> {
    let h = host.unwrap_or("0.0.0.0");
    (h, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {h}:{port}: {e}"))?
        .find(SocketAddr::is_ipv4)
        .ok_or_else(|| format!("{h}:{port} has no IPv4 address"))
}

#[allow(clippy::disallowed_methods)] // the binary reads the clock at the edge
fn seed() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    t ^ u64::from(std::process::id()).rotate_left(32)
}

#[allow(clippy::disallowed_methods)] // the binary reads the clock at the edge
fn clock() -> impl Fn() -> SimTime {
    let start = tokio::time::Instant::now();
    move || SimTime::from_micros(start.elapsed().as_micros() as u64)
}

fn main() {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let args = match parse_args(&argv) {
        Ok(a) => a,
        Err(e) => usage_exit(&e),
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("srt-live: cannot start the runtime: {e}");
            std::process::exit(1);
        }
    };
    let code = rt.block_on(run(args));
    std::process::exit(code);
}

async fn run(args: Args) -> i32 {
    match run_inner(args).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("srt-live: {e}");
            1
        }
    }
}

async fn run_inner(args: Args) -> Result<i32, String> {
    use rand::RngCore;
    let (srt_uri, udp_uri, srt_is_target) = match (&args.source, &args.target) {
        (Uri::Udp { .. }, s @ Uri::Srt { .. }) => (s.clone(), args.source.clone(), true),
        (s @ Uri::Srt { .. }, u) => (s.clone(), u.clone(), false),
        _ => return Err("one of SOURCE and TARGET must be srt://".into()),
    };
    let Uri::Srt {
        host,
        port,
        listener,
        config,
    } = srt_uri
    else {
        return Err("no srt URI".into());
    };
    let Uri::Udp {
        host: uhost,
        port: uport,
    } = udp_uri
    else {
        return Err("no udp URI".into());
    };
    let mut rng = named_rng(seed(), "srt-live");
    let socket_id = (rng.next_u32() & 0x7FFF_FFFF).max(1);
    let latency_ms = u64::from(config.latency_ms.max(config.peer_latency_ms));
    let (srt_sock, role) = if listener {
        let local = resolve(host.as_deref(), port)?;
        let mut secret = [0u8; 32];
        rng.fill_bytes(&mut secret);
        let s = UdpSocket::bind(local)
            .await
            .map_err(|e| format!("cannot bind {local}: {e}"))?;
        (s, Role::Listener { secret })
    } else {
        let peer = resolve(host.as_deref(), port)?;
        let s = UdpSocket::bind("0.0.0.0:0")
            .await
            .map_err(|e| format!("cannot bind a UDP socket: {e}"))?;
        (
            s,
            Role::Caller {
                peer,
                isn: SeqNo::new(rng.next_u32()),
            },
        )
    };
    let (udp_in, udp_out) = if srt_is_target {
        let local = resolve(uhost.as_deref(), uport)?;
        let s = UdpSocket::bind(local)
            .await
            .map_err(|e| format!("cannot bind {local}: {e}"))?;
        (Some(s), None)
    } else {
        let to = resolve(uhost.as_deref(), uport)?;
        let s = UdpSocket::bind("0.0.0.0:0")
            .await
            .map_err(|e| format!("cannot bind a UDP socket: {e}"))?;
        (None, Some((s, to)))
    };
    let mut stats_out: Box<dyn Write> = match &args.stats_out {
        Some(f) => {
            Box::new(std::fs::File::create(f).map_err(|e| format!("cannot create {f}: {e}"))?)
        }
        None => Box::new(std::io::stderr()),
    };
    let now = clock();
    let mut ep = Endpoint::new(config, role, socket_id);
    ep.handle_timeout(now());
    let mut buf = vec![0u8; 65_535];
    let mut rbuf = vec![0u8; 65_535];
    let mut ibuf = vec![0u8; 65_535];
    let mut last_input: Option<SimTime> = None;
    let mut closing_since: Option<SimTime> = None;
    let mut next_stats = (args.stats_ms > 0).then(|| now() + Duration::from_millis(args.stats_ms));
    let mut input_dropped = 0u64;
    let mut code = 0;
    loop {
        let t = now();
        while let Some(tx) = ep.poll_transmit(t, &mut buf) {
            // A send error (e.g. ICMP unreachable) is like a lost datagram.
            let _ = srt_sock.send_to(&buf[..tx.len], tx.destination).await;
        }
        while let Some(ev) = ep.poll_event() {
            match ev {
                Event::Connected {
                    recv_latency_ms,
                    send_latency_ms,
                } if !args.quiet => eprintln!(
                    "srt-live: connected (latency: receive {recv_latency_ms} ms, send {send_latency_ms} ms)"
                ),
                Event::Failed(f) => {
                    eprintln!("srt-live: connection failed: {}", f.name());
                    code = 1;
                }
                Event::PeerShutdown if !args.quiet => {
                    eprintln!("srt-live: peer closed the connection")
                }
                _ => {}
            }
        }
        while let Some(r) = ep.poll_released() {
            if let Some((s, to)) = &udp_out {
                let _ = s.send_to(&r.payload, *to).await;
            }
        }
        if let Some(at) = next_stats
            && t >= at
        {
            let mut v = serde_json::to_value(ep.stats()).unwrap_or_default();
            if let serde_json::Value::Object(m) = &mut v {
                m.insert("sid".into(), socket_id.into());
                m.insert("time".into(), (t.as_micros() / 1000).into());
                m.insert("inputDropped".into(), input_dropped.into());
            }
            let _ = writeln!(stats_out, "{v}");
            let _ = stats_out.flush();
            next_stats = Some(at + Duration::from_millis(args.stats_ms));
        }
        if ep.is_finished() {
            break;
        }
        // udp → srt: after `-t` seconds without input, close once
        // everything is acknowledged (or the sender gave it up) and the
        // receiver had one latency to release it.
        if srt_is_target
            && args.timeout_s > 0
            && let Some(li) = last_input
            && t >= li + Duration::from_secs(args.timeout_s)
        {
            let since = *closing_since.get_or_insert(t);
            if (ep.send_buffer_empty() && t >= since + Duration::from_millis(latency_ms))
                || t >= since + Duration::from_secs(3)
            {
                ep.close(t);
                continue;
            }
        }
        let mut deadline = ep.poll_timeout().unwrap_or(t + Duration::from_secs(1));
        if let Some(at) = next_stats {
            deadline = deadline.min(at);
        }
        if let Some(li) = last_input
            && args.timeout_s > 0
        {
            deadline = deadline.min(li + Duration::from_secs(args.timeout_s));
        }
        if closing_since.is_some() {
            deadline = deadline.min(t + Duration::from_millis(10));
        }
        let wait = Duration::from_micros(deadline.as_micros().saturating_sub(t.as_micros()));
        let input = async {
            match &udp_in {
                Some(s) if closing_since.is_none() => s.recv_from(&mut ibuf).await,
                _ => std::future::pending().await,
            }
        };
        tokio::select! {
            r = srt_sock.recv_from(&mut rbuf) => {
                if let Ok((n, from)) = r {
                    ep.handle_datagram(now(), from, &rbuf[..n]);
                }
            }
            r = input => {
                if let Ok((n, _)) = r {
                    let t = now();
                    last_input = Some(t);
                    if !ep.send(t, &ibuf[..n]) {
                        input_dropped += 1;
                    }
                }
            }
            _ = tokio::time::sleep(wait) => {
                ep.handle_timeout(now());
            }
        }
    }
    if ep.state() == State::Failed {
        code = 1;
    }
    Ok(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(v: &[&str]) -> Result<Args, String> {
        parse_args(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn parses_srt_live_transmit_shapes() {
        let a = args(&[
            "udp://:5000",
            "srt://127.0.0.1:6000?mode=caller&latency=200",
            "-s:1000",
            "-pf:json",
            "-a:no",
            "-t",
            "2",
        ])
        .unwrap();
        assert_eq!(a.stats_ms, 1000);
        assert_eq!(a.timeout_s, 2);
        let Uri::Srt {
            listener, config, ..
        } = a.target
        else {
            panic!()
        };
        assert!(!listener);
        assert_eq!((config.latency_ms, config.peer_latency_ms), (200, 200));
        let b = args(&["srt://:6000", "udp://127.0.0.1:5001"]).unwrap();
        assert!(matches!(b.source, Uri::Srt { listener: true, .. }));
    }

    #[test]
    fn bad_arguments_say_what_is_wrong() {
        let e = |v: &[&str]| args(v).unwrap_err();
        assert!(e(&["udp://:5000"]).contains("expected SOURCE and TARGET"));
        assert!(e(&["udp://:5000", "udp://h:1"]).contains("one of SOURCE and TARGET"));
        assert!(e(&["udp://:5000", "srt://h:x"]).contains("port"));
        assert!(e(&["udp://:5000", "srt://h:1?mode=rendezvous"]).contains("rendezvous"));
        assert!(e(&["udp://:5000", "srt://h:1?passphrase=x"]).contains("encryption"));
        assert!(e(&["udp://:5000", "srt://h:1?foo=1"]).contains("unknown srt parameter"));
        assert!(e(&["udp://:5000", "srt://:1?mode=caller"]).contains("needs a host"));
        assert!(e(&["udp://:5000", "srt://h:1", "-pf:csv"]).contains("json"));
        assert!(e(&["udp://:5000", "srt://h:1", "-x"]).contains("unknown option"));
        assert!(e(&["udp://:5000", "srt://h:1", "-a:yes"]).contains("auto-reconnect"));
        assert!(e(&["srt://:1", "udp://:5"]).contains("needs a host"));
        assert!(e(&["tcp://:1", "udp://h:5"]).contains("scheme"));
    }
}
