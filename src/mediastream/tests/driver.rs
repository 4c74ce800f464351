//! The driver over real loopback UDP, with a toy machine (no protocol logic):
//! a pinger that sends N numbered pings, one every 10 ms (a timer), and
//! finishes when it has seen N echoes; an echoer that returns what it gets.

use std::net::SocketAddr;
use std::time::Duration;

use streamlab_core::driver::{Driver, Observation};
use streamlab_core::machine::{Machine, Transmit};
use streamlab_core::time::SimTime;
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

/// Counts timer fires every 5 ms and finishes after 20; datagrams are
/// counted and otherwise ignored.
struct Ticker {
    next: SimTime,
    fires: u32,
    datagrams: u64,
}

impl Machine for Ticker {
    type Event = ();
    fn handle_datagram(&mut self, _now: SimTime, _from: SocketAddr, _d: &[u8]) {
        self.datagrams += 1;
    }
    fn handle_timeout(&mut self, now: SimTime) {
        if now >= self.next {
            self.fires += 1;
            self.next = now + Duration::from_millis(5);
        }
    }
    fn poll_transmit(&mut self, _now: SimTime, _buf: &mut [u8]) -> Option<Transmit> {
        None
    }
    fn poll_timeout(&self) -> Option<SimTime> {
        (self.fires < 20).then_some(self.next)
    }
    fn poll_event(&mut self) -> Option<()> {
        None
    }
    fn is_finished(&self) -> bool {
        self.fires >= 20
    }
}

/// The property the driver guarantees: timers keep firing while datagrams
/// pour in. (The driver fires due timers before waiting; tokio's cooperative
/// budget also protects this case, so this test guards the property rather
/// than that one line.)
#[tokio::test]
async fn timers_fire_while_the_socket_is_flooded() {
    let a = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let target = a.local_addr().unwrap();
    // A flood from an OS thread, so the socket always has a datagram ready.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flood = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = s.send_to(&[0u8; 32], target);
            }
        })
    };
    let ticker = Ticker {
        next: SimTime::ZERO,
        fires: 0,
        datagrams: 0,
    };
    let mut d = Driver::new(ticker, a);
    let res = tokio::time::timeout(Duration::from_secs(3), d.run(|_| {})).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    flood.join().unwrap();
    res.expect("timers starved by the flood")
        .expect("driver failed");
    assert_eq!(d.machine().fires, 20);
    assert!(d.machine().datagrams > 0, "the flood never arrived");
}
