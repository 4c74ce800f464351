//! The driver over real loopback UDP, with a toy machine (no protocol logic):
//! a pinger that sends N numbered pings, one every 10 ms (a timer), and
//! finishes when it has seen N echoes; an echoer that returns what it gets.

use std::net::SocketAddr;
use std::time::Duration;

use streamlab::driver::{Driver, Observation};
use streamlab::machine::{Machine, Transmit};
use streamlab::time::SimTime;
use tokio::net::UdpSocket;

struct Pinger {
    peer: SocketAddr,
    total: u8,
    sent: u8,
    echoed: Vec<u8>,
    next_at: Option<SimTime>,
    due: bool,
    events: Vec<String>,
}

impl Machine for Pinger {
    type Event = String;
    fn handle_datagram(&mut self, _now: SimTime, _from: SocketAddr, d: &[u8]) {
        if let [n] = d {
            self.echoed.push(*n);
            if self.echoed.len() == usize::from(self.total) {
                self.events.push("done".into());
            }
        }
    }
    fn handle_timeout(&mut self, now: SimTime) {
        if self.next_at.is_some_and(|t| now >= t) {
            self.due = true;
            self.next_at = (self.sent + 1 < self.total).then(|| now + Duration::from_millis(10));
        }
    }
    fn poll_transmit(&mut self, _now: SimTime, buf: &mut [u8]) -> Option<Transmit> {
        if !self.due {
            return None;
        }
        self.due = false;
        buf[0] = self.sent;
        self.sent += 1;
        Some(Transmit {
            destination: self.peer,
            len: 1,
        })
    }
    fn poll_timeout(&self) -> Option<SimTime> {
        self.next_at
    }
    fn poll_event(&mut self) -> Option<String> {
        self.events.pop()
    }
    fn is_finished(&self) -> bool {
        self.echoed.len() == usize::from(self.total)
    }
}

struct Echo {
    pending: Vec<(SocketAddr, u8)>,
}

impl Machine for Echo {
    type Event = ();
    fn handle_datagram(&mut self, _now: SimTime, from: SocketAddr, d: &[u8]) {
        if let [n] = d {
            self.pending.push((from, *n));
        }
    }
    fn handle_timeout(&mut self, _now: SimTime) {}
    fn poll_transmit(&mut self, _now: SimTime, buf: &mut [u8]) -> Option<Transmit> {
        let (to, n) = self.pending.pop()?;
        buf[0] = n;
        Some(Transmit {
            destination: to,
            len: 1,
        })
    }
    fn poll_timeout(&self) -> Option<SimTime> {
        None
    }
    fn poll_event(&mut self) -> Option<()> {
        None
    }
    fn is_finished(&self) -> bool {
        false
    }
}

#[tokio::test]
async fn drives_timers_transmits_and_events_over_loopback() {
    let a = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let b = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let b_addr = b.local_addr().unwrap();
    let echo = tokio::spawn(async move {
        let mut d = Driver::new(
            Echo {
                pending: Vec::new(),
            },
            b,
        );
        let _ = d.run(|_| {}).await;
    });
    let pinger = Pinger {
        peer: b_addr,
        total: 5,
        sent: 0,
        echoed: Vec::new(),
        next_at: Some(SimTime::ZERO),
        due: false,
        events: Vec::new(),
    };
    let mut d = Driver::new(pinger, a).with_status_interval(Duration::from_millis(15));
    let mut events = Vec::new();
    let mut statuses = 0;
    tokio::time::timeout(
        Duration::from_secs(5),
        d.run(|o| match o {
            Observation::Event(_, e) => events.push(e),
            Observation::Status(_, m) => {
                statuses += 1;
                assert!(m.sent <= m.total);
            }
        }),
    )
    .await
    .expect("driver hung")
    .expect("driver failed");
    echo.abort();
    let mut echoed = d.machine().echoed.clone();
    echoed.sort_unstable();
    assert_eq!(echoed, vec![0, 1, 2, 3, 4]);
    assert_eq!(events, vec!["done".to_string()]);
    // 4 gaps of 10 ms = at least 40 ms of run time, so at least two 15 ms ticks.
    assert!(statuses >= 2, "status ticks: {statuses}");
    assert!(d.now() >= SimTime::from_millis(40));
}
