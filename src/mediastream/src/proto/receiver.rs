//! The initiator's frame ring, render schedule and classification (spec §5.3).

use std::collections::BTreeMap;

use super::stats::InitiatorStats;
use super::stream::StreamPlan;
use crate::time::SimTime;
use crate::wire::{Data, verify_pattern};

#[derive(Clone, Copy, Debug, Default)]
struct Slot {
    bytes: u64,
    mismatch: bool,
    sender_us: u64,
    recv_us: u64,
}

/// What a render tick found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Render {
    /// More frames to render.
    More,
    /// The final frame was rendered.
    Finished,
    /// Nothing at all had arrived by the first tick.
    NoData,
}

#[derive(Clone, Debug)]
pub(crate) struct Receiver {
    plan: StreamPlan,
    /// The frames of the receive window (`head_seq .. head_seq + 2 × IBF`)
    /// that something has arrived for, by sequence number. The window is
    /// not preallocated: memory follows what actually arrived, so a deep
    /// buffer at a high frame rate costs nothing until frames come.
    ring: BTreeMap<u32, Slot>,
    /// Window length, frames: 2 × IBF.
    ring_len: u32,
    /// Initial buffered frames: min(frames, buffer_depth_s × frame_rate).
    ibf: u32,
    /// Sequence number of the next frame to render.
    head_seq: u32,
    base: SimTime,
    any_data: bool,
    /// (sender µs, receive µs) of the first completed frame.
    first: Option<(u64, u64)>,
    prev_rel: Option<i64>,
    jitter_sum: u64,
}

impl Receiver {
    pub(crate) fn new(plan: StreamPlan, buffer_depth_s: u32, base: SimTime) -> Self {
        let ibf = plan
            .frames()
            .min(buffer_depth_s.saturating_mul(plan.frame_rate()))
            .max(1);
        let ring_len = ibf.saturating_mul(2);
        Receiver {
            plan,
            ring: BTreeMap::new(),
            ring_len,
            ibf,
            head_seq: 1,
            base,
            any_data: false,
            first: None,
            prev_rel: None,
            jitter_sum: 0,
        }
    }

    /// When the next render tick is due: frame k at
    /// `base + (IBF + k − 1) × 1e6 / frame_rate` µs (spec §5.3).
    pub(crate) fn next_render_at(&self) -> SimTime {
        let k = u64::from(self.ibf) + u64::from(self.head_seq) - 1;
        SimTime::from_micros(
            self.base
                .as_micros()
                .saturating_add(self.plan.frame_offset_us(k)),
        )
    }

    /// Accounts one DATA datagram of `len` bytes for this stream (spec §5.3).
    pub(crate) fn on_data(
        &mut self,
        now: SimTime,
        len: usize,
        d: &Data<'_>,
        stats: &mut InitiatorStats,
    ) {
        let seq = d.header.sequence;
        let window_end = u64::from(self.head_seq) + u64::from(self.ring_len);
        if seq == 0
            || seq > self.plan.frames()
            || seq < self.head_seq
            || u64::from(seq) >= window_end
        {
            stats.frames_error += 1;
            return;
        }
        let slot = self.ring.entry(seq).or_default();
        self.any_data = true;
        slot.bytes += len as u64;
        slot.sender_us = d.header.timestamp_us;
        slot.recv_us = now.as_micros();
        let intact = d.header.count == self.plan.datagrams_per_frame()
            && self.plan.datagram_len(d.header.index) == Some(len)
            && self
                .plan
                .payload_offset(d.header.index)
                .is_some_and(|o| verify_pattern(d.payload, o).is_ok());
        if !intact {
            stats.payload_mismatches += 1;
            slot.mismatch = true;
        }
    }

    /// Renders the head frame (spec §5.3).
    pub(crate) fn render(&mut self, stats: &mut InitiatorStats) -> Render {
        if self.head_seq == 1 && !self.any_data {
            stats.frames_dropped += u64::from(self.plan.frames());
            return Render::NoData;
        }
        let frame_size = u64::from(self.plan.frame_size());
        let slot = self.ring.remove(&self.head_seq).unwrap_or_default();
        if slot.mismatch {
            stats.frames_error += 1;
        } else if slot.bytes == frame_size {
            stats.frames_completed += 1;
            // Relative in-flight time, measured from the first completed
            // frame (ctsTraffic's jitter CSV), and |Δ| to the previous one.
            let (s0, r0) = *self.first.get_or_insert((slot.sender_us, slot.recv_us));
            let rel = (slot.recv_us as i64 - r0 as i64) - (slot.sender_us as i64 - s0 as i64);
            if let Some(prev) = self.prev_rel {
                let j = prev.abs_diff(rel);
                stats.jitter_samples += 1;
                self.jitter_sum += j;
                stats.jitter_max_us = stats.jitter_max_us.max(j);
                stats.jitter_mean_us = self.jitter_sum / stats.jitter_samples;
            }
            self.prev_rel = Some(rel);
        } else if slot.bytes < frame_size {
            stats.frames_dropped += 1;
        } else {
            stats.frames_duplicate += 1;
        }
        if self.head_seq >= self.plan.frames() {
            return Render::Finished;
        }
        self.head_seq += 1;
        Render::More
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deep_window_costs_nothing_until_frames_arrive() {
        // 4 294 000 000 frames, all of them within a 3600 s buffer: the
        // window once was preallocated (2^32 slots, 137 GB) and aborted.
        let plan = StreamPlan::new(320_000_000_000, 1_000_000, 4294, 65_507).unwrap();
        let mut r = Receiver::new(plan, 3600, SimTime::ZERO);
        assert_eq!(r.ring_len, u32::MAX);
        assert!(r.ring.is_empty());
        let mut stats = InitiatorStats::default();
        assert_eq!(r.render(&mut stats), Render::NoData);
    }
}
