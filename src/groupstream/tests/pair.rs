//! The machines against each other over the discrete-event driver
//! (docs/groupstream.md §3–§5): the four-step handshake and its losses,
//! port conflicts on either side, registration, choice, paced streaming
//! and the end of the session.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use streamlab_core::time::SimTime;
use streamlab_groupstream::client::Role;
use streamlab_groupstream::config::{ClientConfig, ServerConfig};
use streamlab_groupstream::wire::{self, Message};
use support::*;

fn ms(v: u64) -> SimTime {
    SimTime::from_millis(v)
}

fn server_cfg() -> ServerConfig {
    ServerConfig {
        registration_window_ms: 200,
        movie_frames: 20,
        frame_bytes: 32,
        ..ServerConfig::default()
    }
}

fn client_cfg() -> ClientConfig {
    ClientConfig {
        resend_ms: 100,
        ..ClientConfig::default()
    }
}

/// A server (host 0), a leader (host 1) and `members` members.
fn group(members: usize) -> Net {
    group_with(members, |_| {})
}

/// [`group`], with `setup` (drop rules) applied before any client starts.
fn group_with(members: usize, setup: impl FnOnce(&mut Net)) -> Net {
    let mut n = Net::new();
    setup(&mut n);
    n.server(server_cfg());
    n.client(
        Role::Leader,
        ClientConfig {
            movie: 1,
            ..client_cfg()
        },
    );
    for _ in 0..members {
        n.client(Role::Member, client_cfg());
    }
    n
}

fn stream_to(n: &Net, host: usize) -> Vec<&Sent> {
    n.log
        .iter()
        .filter(|s| s.kind() == "STREAM" && s.to.ip() == ip(host))
        .collect()
}

#[test]
fn a_leader_and_three_members_watch_the_whole_movie() {
    let mut n = group(3);
    n.run_until(ms(10_000));
    for h in 1..=4 {
        assert_eq!(n.outcome(h), Some(Ok(())), "host {h}: {}", n.stats(h));
        assert_eq!(n.stat(h, "frames_received"), 20);
        assert_eq!(n.stat(h, "frames_lost"), 0);
        assert_eq!(n.stat(h, "payload_errors"), 0);
        assert_eq!(n.stat(h, "movie"), 1);
        assert_eq!(n.stat(h, "negotiated_port"), 5000);
        assert_eq!(n.stat(h, "frames_expected"), 20);
    }
    // The four steps, in order, on the standard port; then the standard
    // socket is gone and everything else uses port 5000.
    let hs: Vec<_> = n
        .log
        .iter()
        .filter(|s| s.msg().is_some_and(|m| m.is_handshake()))
        .map(|s| (s.kind(), s.from.port() == 12345 || s.to.port() == 12345))
        .collect();
    assert_eq!(
        hs,
        [
            ("PORT_REQUEST", true),
            ("PORT_ALLOCATED", true),
            ("PORT_OK", true),
            ("PORT_ACK", true)
        ]
    );
    assert!(
        n.log
            .iter()
            .filter(|s| !s.msg().unwrap().is_handshake())
            .all(|s| s.from.port() == 5000 && s.to.port() == 5000)
    );
    // Paced: the default interval (10 ms) between frames, from the window's end.
    let frames = stream_to(&n, 2);
    assert_eq!(frames.len(), 20);
    let port_ack_at = n.sent_of("PORT_ACK")[0].at;
    assert_eq!(frames[0].at, port_ack_at + Duration::from_millis(200));
    for w in frames.windows(2) {
        assert_eq!(w[1].at - w[0].at, Duration::from_millis(10));
    }
    // Only the leader gets the catalogue; the session closes at the end.
    assert_eq!(n.sent_of("MOVIES_AVAILABLE").len(), 1);
    assert_eq!(n.stat(0, "sessions_ended"), 1);
    assert_eq!(n.stat(0, "groups_open"), 0);
    assert_eq!(n.stat(0, "registrations"), 4);
    assert_eq!(n.stat(0, "stream_packets_sent"), 80);
}

#[test]
fn each_lost_handshake_message_is_recovered_by_a_resend() {
    for kind in ["PORT_REQUEST", "PORT_ALLOCATED", "PORT_OK", "PORT_ACK"] {
        let mut n = group_with(1, |n| n.drop_nth(kind, 1));
        n.run_until(ms(10_000));
        assert_eq!(n.outcome(1), Some(Ok(())), "{kind}: {}", n.stats(1));
        assert_eq!(n.outcome(2), Some(Ok(())), "{kind}");
        assert_eq!(n.stat(1, "handshake_attempts"), 3, "{kind}");
        // One port only: a repeated request is answered with the same port.
        assert_eq!(n.stat(0, "ports_allocated"), 1, "{kind}");
        assert_eq!(n.stat(0, "groups_created"), 1, "{kind}");
        assert_eq!(n.stat(1, "frames_received"), 20, "{kind}");
        // The resend came one resend timeout later.
        assert_eq!(n.stat(1, "handshake_us"), 110_000 + 10_000, "{kind}");
    }
}

#[test]
fn a_requested_port_taken_on_the_server_gets_another_one() {
    let mut n = Net::new();
    n.server(ServerConfig {
        occupy_ports: vec![5000],
        ..server_cfg()
    });
    n.client(Role::Leader, client_cfg());
    n.client(
        Role::Member,
        ClientConfig {
            port: 5001,
            ..client_cfg()
        },
    );
    n.run_until(ms(10_000));
    assert_eq!(n.stat(0, "bind_failures"), 1);
    assert_eq!(n.stat(1, "negotiated_port"), 5001);
    assert_eq!(n.outcome(1), Some(Ok(())));
    assert_eq!(n.outcome(2), Some(Ok(())));
    assert_eq!(
        n.sent_of("PORT_ALLOCATED")[0].msg(),
        Some(Message::PortAllocated { seq: 1, port: 5001 })
    );
}

#[test]
fn a_port_taken_on_the_leader_is_refused_and_the_next_one_asked_for() {
    let mut n = Net::new();
    n.server(server_cfg());
    n.client(
        Role::Leader,
        ClientConfig {
            occupy_ports: vec![5000],
            ..client_cfg()
        },
    );
    n.run_until(ms(10_000));
    let kinds: Vec<_> = n
        .kinds(1)
        .into_iter()
        .filter(|k| k.starts_with("PORT"))
        .collect();
    assert_eq!(
        kinds,
        ["PORT_REQUEST", "PORT_NOK", "PORT_REQUEST", "PORT_OK"]
    );
    assert_eq!(
        n.sent_of("PORT_REQUEST")[1].msg(),
        Some(Message::PortRequest { seq: 3, port: 5001 })
    );
    assert_eq!(n.stat(0, "port_nok"), 1);
    assert_eq!(n.stat(1, "negotiated_port"), 5001);
    assert_eq!(n.outcome(1), Some(Ok(())));
    assert_eq!(n.stat(1, "frames_received"), 20);
}

#[test]
fn handshake_attempts_run_out_against_a_silent_server() {
    let mut n = Net::new();
    n.drop_all(|s| s.kind() == "PORT_REQUEST");
    n.server(server_cfg());
    n.client(
        Role::Leader,
        ClientConfig {
            handshake_attempts: 4,
            ..client_cfg()
        },
    );
    n.run_until(ms(10_000));
    assert_eq!(n.outcome(1), Some(Err("handshake_timeout".into())));
    assert_eq!(n.sent_of("PORT_REQUEST").len(), 4);
    assert_eq!(n.hosts[1].finished_at, Some(ms(400)));
}

#[test]
fn a_member_registering_after_the_window_is_never_answered() {
    // The window closes 200 ms after the Port ACK (15 ms): a member that
    // starts at 250 ms is too late.
    let mut n = group(1);
    n.run_until(ms(250));
    let late = n.client(
        Role::Member,
        ClientConfig {
            registration_attempts: 3,
            ..client_cfg()
        },
    );
    n.run_until(ms(10_000));
    assert_eq!(n.outcome(late), Some(Err("registration_timeout".into())));
    // Two reach the closed window; the third finds the group gone (the
    // movie ended at 435 ms and its socket closed).
    assert_eq!(n.stat(0, "late_registrations"), 2);
    assert_eq!(n.stat(late, "registration_attempts"), 3);
    assert!(stream_to(&n, late).is_empty());
    assert_eq!(n.outcome(2), Some(Ok(())));
}

#[test]
fn two_groups_stream_different_movies_at_once() {
    let mut n = Net::new();
    n.server(server_cfg());
    n.client(
        Role::Leader,
        ClientConfig {
            movie: 0,
            ..client_cfg()
        },
    );
    n.client(
        Role::Leader,
        ClientConfig {
            movie: 2,
            port: 6000,
            ..client_cfg()
        },
    );
    n.client(Role::Member, client_cfg());
    n.client(
        Role::Member,
        ClientConfig {
            port: 6000,
            ..client_cfg()
        },
    );
    n.run_until(ms(10_000));
    for h in 1..=4 {
        assert_eq!(n.outcome(h), Some(Ok(())), "host {h}");
        assert_eq!(n.stat(h, "frames_received"), 20);
        assert_eq!(n.stat(h, "wrong_movie"), 0);
    }
    assert_eq!((n.stat(1, "movie"), n.stat(3, "movie")), (0, 0));
    assert_eq!((n.stat(2, "movie"), n.stat(4, "movie")), (2, 2));
    assert_eq!(n.stat(2, "negotiated_port"), 6000);
    assert_eq!(n.stat(0, "groups_created"), 2);
}

#[test]
fn the_interval_is_the_largest_proposal_within_the_thresholds() {
    for (proposals, want) in [([0, 0], 10), ([30, 20], 30), ([5000, 1], 1000)] {
        let mut n = Net::new();
        n.server(server_cfg());
        n.client(
            Role::Leader,
            ClientConfig {
                interval_ms: proposals[0],
                ..client_cfg()
            },
        );
        n.client(
            Role::Member,
            ClientConfig {
                interval_ms: proposals[1],
                ..client_cfg()
            },
        );
        n.run_until(ms(60_000));
        assert_eq!(n.stat(0, "last_interval_ms"), want, "{proposals:?}");
        let f = stream_to(&n, 2);
        assert_eq!(
            f[1].at - f[0].at,
            Duration::from_millis(want),
            "{proposals:?}"
        );
        assert_eq!(n.outcome(2), Some(Ok(())), "{proposals:?}");
    }
}

#[test]
fn a_member_whose_port_is_taken_cannot_watch() {
    let mut n = Net::new();
    n.server(server_cfg());
    n.client(Role::Leader, client_cfg());
    let busy = n.client(
        Role::Member,
        ClientConfig {
            occupy_ports: vec![5000],
            ..client_cfg()
        },
    );
    n.client(Role::Member, client_cfg());
    n.run_until(ms(10_000));
    assert_eq!(n.outcome(busy), Some(Err("port_busy".into())));
    assert_eq!(n.outcome(3), Some(Ok(())));
    assert_eq!(n.stat(0, "registrations"), 2);
}

#[test]
fn a_crashed_member_is_streamed_to_and_nobody_hears_of_it() {
    let mut n = group(2);
    n.run_until(ms(300));
    n.crash(2);
    n.run_until(ms(10_000));
    assert_eq!(n.outcome(3), Some(Ok(())));
    assert_eq!(n.stat(3, "frames_received"), 20);
    // The server kept streaming to the crashed member to the end.
    assert_eq!(stream_to(&n, 2).len(), 20);
    assert_eq!(n.stat(0, "sessions_ended"), 1);
}

#[test]
fn lost_stream_frames_are_counted_and_late_ones_too() {
    let mut n = group_with(1, |n| {
        n.drop_all(|s| {
            matches!(s.msg(), Some(Message::Stream { seq: 3 | 4, .. })) && s.to.ip() == ip(2)
        })
    });
    n.run_until(ms(10_000));
    assert_eq!(n.outcome(2), Some(Ok(())));
    assert_eq!(
        (n.stat(2, "frames_received"), n.stat(2, "frames_lost")),
        (18, 2)
    );
    assert_eq!(n.stat(1, "frames_lost"), 0);
}

#[test]
fn a_member_without_end_of_movie_stops_on_its_watchdog() {
    let mut n = group_with(1, |n| n.drop_all(|s| s.kind() == "END_OF_MOVIE"));
    n.run_until(ms(10_000));
    assert_eq!(n.outcome(2), Some(Err("stream_timeout".into())));
    assert_eq!(n.stat(2, "frames_received"), 20);
    // 20 intervals of 10 ms after the last frame.
    let last = stream_to(&n, 2).last().unwrap().at;
    assert_eq!(
        n.hosts[2].finished_at,
        Some(last + Duration::from_millis(205))
    );
}

#[test]
fn malformed_and_unexpected_datagrams_change_nothing() {
    let mut n = group(1);
    let attacker: SocketAddr = "10.0.0.9:40000".parse().unwrap();
    let std: SocketAddr = SocketAddr::new(ip(0), 12345);
    let grp: SocketAddr = SocketAddr::new(ip(0), 5000);
    for (i, b) in [
        vec![],
        vec![3],
        vec![1; 12],
        vec![4, 0, 0, 0, 0, 0, 0, 0, 1, 0, 1, 7],
    ]
    .into_iter()
    .enumerate()
    {
        n.inject(ms(1 + i as u64), attacker, std, b.clone());
        n.inject(ms(100 + i as u64), attacker, grp, b);
    }
    // Well-formed but out of place: a stream packet to the standard port,
    // an OK for a port nobody offered, a choice from a non-leader.
    n.inject(
        ms(5),
        attacker,
        std,
        Message::Stream {
            seq: 0,
            movie: 0,
            payload: vec![],
        }
        .to_vec(),
    );
    n.inject(
        ms(6),
        attacker,
        std,
        Message::PortAnswer {
            seq: 1,
            port: 5000,
            ok: true,
        }
        .to_vec(),
    );
    n.inject(
        ms(105),
        attacker,
        grp,
        Message::MovieChoice { seq: 1, movie: 2 }.to_vec(),
    );
    n.run_until(ms(10_000));
    assert_eq!(n.outcome(1), Some(Ok(())));
    assert_eq!(n.outcome(2), Some(Ok(())));
    assert_eq!(n.stat(1, "movie"), 1);
    assert_eq!(n.stat(0, "malformed"), 8);
    assert_eq!(n.stat(0, "unexpected"), 3);
    assert!(n.log.iter().all(|s| s.to != attacker));
}

#[test]
fn a_flood_of_requests_fills_the_server_and_the_leader_gets_nothing() {
    let mut n = Net::new();
    n.server(ServerConfig {
        alloc_first: 5000,
        alloc_last: 5003,
        ..server_cfg()
    });
    for k in 0..10u16 {
        let from: SocketAddr = SocketAddr::new("10.0.0.9".parse().unwrap(), 40000 + k);
        n.inject(
            ms(1),
            from,
            SocketAddr::new(ip(0), 12345),
            Message::PortRequest { seq: 1, port: 0 }.to_vec(),
        );
    }
    n.client(
        Role::Leader,
        ClientConfig {
            handshake_attempts: 3,
            ..client_cfg()
        },
    );
    n.run_until(ms(10_000));
    // The four ports of the range went to the flood's first four requests.
    assert_eq!(n.stat(0, "ports_allocated"), 4);
    // Six flood requests found no port, nor did the leader's three attempts.
    assert_eq!(n.stat(0, "allocation_failures"), 6 + 3);
    assert_eq!(n.outcome(1), Some(Err("handshake_timeout".into())));
}

#[test]
fn payloads_are_checked() {
    let mut n = group(1);
    let grp: SocketAddr = SocketAddr::new(ip(0), 5000);
    let member: SocketAddr = SocketAddr::new(ip(2), 5000);
    // A forged frame from the server's group address with a wrong payload.
    n.inject(
        ms(205),
        grp,
        member,
        Message::Stream {
            seq: 50,
            movie: 1,
            payload: vec![0; 32],
        }
        .to_vec(),
    );
    n.run_until(ms(10_000));
    assert_eq!(n.stat(2, "payload_errors"), 1);
    assert_eq!(n.stat(2, "frames_received"), 20);
    assert!(wire::payload_ok(1, 0, &wire::payload(1, 0, 8)));
}

mod properties {
    use super::*;
    use proptest::prelude::*;
    use streamlab_core::host::{HostMachine, Input};
    use streamlab_groupstream::client::Client;
    use streamlab_groupstream::server::Server;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Whatever the network drops, every client ends (no stall), never
        /// counts more frames than the movie has nor a frame of another
        /// payload, and the server never makes more than one group.
        #[test]
        fn under_any_drop_pattern_clients_end_and_count_truly(pattern in proptest::collection::vec(any::<bool>(), 64)) {
            let mut n = group_with(2, |n| {
                let k = std::cell::Cell::new(0usize);
                n.drop_all(move |_| {
                    let i = k.get();
                    k.set(i + 1);
                    // The pattern drops among the first 64 datagrams; the
                    // rest pass.
                    pattern.get(i).copied().unwrap_or(false)
                });
            });
            n.run_until(ms(120_000));
            for h in 1..=3 {
                prop_assert!(n.outcome(h).is_some(), "host {h} never ended: {}", n.stats(h));
                prop_assert!(n.stat(h, "frames_received") <= 20);
                prop_assert_eq!(n.stat(h, "payload_errors"), 0);
            }
            prop_assert!(n.stat(0, "groups_created") <= 1);
        }

        /// Arbitrary bytes on any socket never panic a machine, and a
        /// client never counts a frame from anywhere but the group's port
        /// on the server (these come from other ports).
        #[test]
        fn arbitrary_datagrams_never_panic(datagrams in proptest::collection::vec((0u32..3, 1u16..5000, proptest::collection::vec(any::<u8>(), 0..40)), 0..40)) {
            let server_addr = SocketAddr::new(ip(0), 12345);
            let mut machines: Vec<Box<dyn HostMachine>> = vec![
                Box::new(Server::new(server_cfg())),
                Box::new(Client::new(Role::Leader, client_cfg(), server_addr)),
                Box::new(Client::new(Role::Member, client_cfg(), server_addr)),
            ];
            let mut buf = vec![0u8; 65_535];
            let mut t = 0;
            for m in &mut machines {
                while m.poll_output(ms(0), &mut buf).is_some() {}
            }
            for (socket, port, data) in &datagrams {
                t += 1;
                for m in &mut machines {
                    m.handle(ms(t), Input::Datagram { socket: *socket, from: SocketAddr::new(ip(0), *port), data });
                    m.handle_timeout(ms(t));
                    while m.poll_output(ms(t), &mut buf).is_some() {}
                    while m.poll_event().is_some() {}
                    let _ = m.report();
                }
            }
            prop_assert_eq!(machines[2].report().stats["frames_received"].as_u64(), Some(0));
        }
    }
}
