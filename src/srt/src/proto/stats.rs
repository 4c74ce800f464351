//! Counters an endpoint reports, named like libsrt's statistics
//! (`srt_bstats`, srt-live-transmit's JSON: `send.packets`,
//! `recv.packetsLost`, `link.rtt`, …).

use serde::Serialize;

/// The sending side (libsrt `send.*`).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SendStats {
    /// DATA packets sent, retransmissions included.
    pub packets: u64,
    /// DATA packets sent for the first time.
    pub packets_unique: u64,
    /// Sequence numbers the peer reported lost (NAK entries, counted per packet).
    pub packets_lost: u64,
    /// Retransmitted DATA packets (R flag set).
    pub packets_retransmitted: u64,
    /// Packets dropped from the send buffer as too late (libsrt `sndDropTooLate`).
    pub packets_dropped: u64,
    /// Payload bytes sent, retransmissions included.
    pub bytes: u64,
    /// Payload bytes sent for the first time.
    pub bytes_unique: u64,
    /// Packets in the send buffer now (sent, not yet acknowledged).
    pub packets_in_buffer: u64,
    /// Span of the send buffer now, ms (first to last packet's origin).
    pub ms_buf: u64,
    /// Negotiated TSBPD delay of this direction, ms.
    pub ms_tsb_pd_delay: u64,
    /// NAK entries ignored because they named sequence numbers never sent
    /// or no longer buffered.
    pub nak_entries_ignored: u64,
}

/// The receiving side (libsrt `recv.*`).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RecvStats {
    /// DATA packets received from the peer, duplicates and belated ones included.
    pub packets: u64,
    /// Distinct DATA packets accepted into the receive buffer.
    pub packets_unique: u64,
    /// Sequence numbers found missing (a gap in arrivals).
    pub packets_lost: u64,
    /// Packets dropped as too late for TSBPD (never released).
    pub packets_dropped: u64,
    /// Received packets with the R flag.
    pub packets_retransmitted: u64,
    /// Packets that arrived after their sequence number was released or dropped.
    pub packets_belated: u64,
    /// Payload bytes received.
    pub bytes: u64,
    /// Packets released to the application.
    pub packets_released: u64,
    /// Packets in the receive buffer now.
    pub packets_in_buffer: u64,
    /// Span of the receive buffer now, ms.
    pub ms_buf: u64,
    /// Negotiated TSBPD delay of this direction, ms.
    pub ms_tsb_pd_delay: u64,
}

/// Round-trip time as this endpoint estimates it (libsrt `link.*`).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LinkStats {
    /// Smoothed RTT, ms.
    pub rtt: f64,
    /// RTT variance, ms.
    pub rtt_var: f64,
}

/// Control traffic and handshake counters.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ControlStats {
    /// Handshake packets sent (requests, responses, rejections).
    pub handshakes_sent: u64,
    /// Handshake packets received.
    pub handshakes_received: u64,
    /// CONCLUSION requests ignored for a wrong SYN cookie.
    pub wrong_cookies: u64,
    /// Rejections sent.
    pub rejections_sent: u64,
    /// CONCLUSION responses accepted without an HSRSP block (libsrt's
    /// answer to a repeated request, issue #1648).
    pub responses_without_hsrsp: u64,
    /// Full ACKs sent.
    pub acks_sent: u64,
    /// Light ACKs sent.
    pub light_acks_sent: u64,
    /// ACKs received.
    pub acks_received: u64,
    /// ACKACKs sent.
    pub ackacks_sent: u64,
    /// ACKACKs received.
    pub ackacks_received: u64,
    /// NAKs sent.
    pub naks_sent: u64,
    /// NAKs received.
    pub naks_received: u64,
    /// KEEPALIVEs sent.
    pub keepalives_sent: u64,
    /// SHUTDOWNs sent.
    pub shutdowns_sent: u64,
    /// SHUTDOWNs received.
    pub shutdowns_received: u64,
    /// Datagrams that were no SRT packet.
    pub malformed_received: u64,
    /// Packets from unknown peers or for other sockets, ignored.
    pub foreign_received: u64,
}

/// Everything an endpoint counts.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct EndpointStats {
    /// The sending side.
    pub send: SendStats,
    /// The receiving side.
    pub recv: RecvStats,
    /// RTT.
    pub link: LinkStats,
    /// Control traffic.
    pub control: ControlStats,
    /// Time from the first handshake packet to the connection, ms, once connected.
    #[serde(rename = "connectTimeMs")]
    pub connect_time_ms: Option<u64>,
}
