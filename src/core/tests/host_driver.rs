//! The host driver over real sockets: a sans-IO host machine that listens,
//! accepts, connects, writes, reads and closes TCP connections (and binds a
//! datagram socket) runs over tokio on loopback exactly as it does in the
//! simulator.

use std::net::{IpAddr, Ipv4Addr};

use streamlab_core::driver::{DriverError, HostDriver, TokioNet};
use streamlab_core::host::{HostMachine, HostReport, Input, Outcome, Output, SocketId};
use streamlab_core::time::SimTime;

const LISTENER: SocketId = 1;
const CLIENT_CONN: SocketId = 2;
const UDP: SocketId = 3;
const SIZE: usize = 200_000;

/// Both ends in one host: a listener that echoes every byte back and
/// half-closes when its peer does, and a client that sends `SIZE` bytes,
/// half-closes, and checks what comes back.
#[derive(Default)]
struct Echo {
    queue: Vec<Output>,
    pending_writes: Vec<(SocketId, Vec<u8>)>,
    sent: usize,
    received: Vec<u8>,
    outcome: Option<Outcome>,
    events: Vec<String>,
    udp_bound: bool,
}

fn pattern(i: usize) -> u8 {
    (i * 7 % 251) as u8
}

impl HostMachine for Echo {
    fn handle(&mut self, _now: SimTime, input: Input<'_>) {
        self.events
            .push(format!("{input:?}").chars().take(60).collect());
        match input {
            Input::Bound { socket: UDP, .. } => self.udp_bound = true,
            Input::Listening { local, .. } => self.queue.push(Output::Connect {
                conn: CLIENT_CONN,
                destination: local,
            }),
            Input::Connected {
                conn: CLIENT_CONN, ..
            } => {
                let data: Vec<u8> = (0..SIZE).map(pattern).collect();
                for chunk in data.chunks(16_384) {
                    self.pending_writes.push((CLIENT_CONN, chunk.to_vec()));
                }
                self.sent = SIZE;
                self.queue.push(Output::Shutdown { conn: CLIENT_CONN });
            }
            Input::Connected { .. } => {}
            Input::Received {
                conn: CLIENT_CONN,
                data,
            } => self.received.extend_from_slice(data),
            Input::Received { conn, data } => self.pending_writes.push((conn, data.to_vec())),
            Input::Closed {
                conn: CLIENT_CONN,
                error,
            } => {
                let ok = error.is_none()
                    && self.received.len() == self.sent
                    && self
                        .received
                        .iter()
                        .enumerate()
                        .all(|(i, b)| *b == pattern(i));
                self.outcome = Some(if ok {
                    Outcome::Completed
                } else {
                    Outcome::Failed {
                        name: "echo_mismatch".into(),
                        message: format!(
                            "{} of {} bytes back, error {error:?}",
                            self.received.len(),
                            self.sent
                        ),
                    }
                });
            }
            Input::Closed { conn, .. } => self.queue.push(Output::Shutdown { conn }),
            Input::BindFailed { socket, error } => {
                self.outcome = Some(Outcome::Failed {
                    name: "bind_failed".into(),
                    message: format!("{socket}: {error}"),
                });
            }
            _ => {}
        }
    }

    fn handle_timeout(&mut self, _now: SimTime) {}

    fn poll_output(&mut self, _now: SimTime, buf: &mut [u8]) -> Option<Output> {
        if !self.pending_writes.is_empty() {
            let (conn, data) = self.pending_writes.remove(0);
            buf[..data.len()].copy_from_slice(&data);
            return Some(Output::Write {
                conn,
                len: data.len(),
            });
        }
        if self.queue.is_empty() {
            return None;
        }
        Some(self.queue.remove(0))
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

#[tokio::test]
async fn a_host_machine_echoes_over_real_tcp_and_binds_udp() {
    let mut echo = Echo::default();
    echo.queue.push(Output::Bind {
        socket: UDP,
        port: 0,
    });
    echo.queue.push(Output::Listen {
        listener: LISTENER,
        port: 0,
    });
    let net = TokioNet {
        ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
    };
    let mut driver = HostDriver::new(echo, net);
    tokio::time::timeout(std::time::Duration::from_secs(20), driver.run(|_, _| {}))
        .await
        .expect("the echo finishes")
        .expect("no socket error");
    let m = driver.machine();
    assert!(m.udp_bound);
    assert_eq!(m.outcome, Some(Outcome::Completed), "{:?}", m.events);
    assert_eq!(m.received.len(), SIZE);
}

/// A broken machine: its timer at 5 ms stays due whatever it is told, and
/// it never finishes. Handling that timer sends nothing and changes nothing.
struct StaleTimer {
    fired: u32,
}

impl HostMachine for StaleTimer {
    fn handle(&mut self, _now: SimTime, _input: Input<'_>) {}
    fn handle_timeout(&mut self, _now: SimTime) {
        self.fired += 1;
    }
    fn poll_output(&mut self, _now: SimTime, _buf: &mut [u8]) -> Option<Output> {
        None
    }
    fn poll_timeout(&self) -> Option<SimTime> {
        Some(SimTime::from_millis(5))
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

#[tokio::test]
async fn a_machine_stuck_on_a_due_timer_stops_the_driver_with_an_error() {
    let net = TokioNet {
        ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
    };
    let mut driver = HostDriver::new(StaleTimer { fired: 0 }, net);
    let err = tokio::time::timeout(std::time::Duration::from_secs(20), driver.run(|_, _| {}))
        .await
        .expect("the driver gives up instead of spinning")
        .expect_err("a stuck machine is an error");
    let text = err.to_string();
    assert!(
        matches!(err, DriverError::Stuck { timer, times, .. } if timer == SimTime::from_millis(5) && times == 10_000),
        "{text}"
    );
    assert!(text.contains("stuck"), "{text}");
    assert_eq!(driver.machine().fired, 10_000);
}
