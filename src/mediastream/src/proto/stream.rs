//! Stream shape (spec §4): frame size from rate, frame rate and length
//! (ctsTraffic's derivation), and the frame → datagram split.

use super::config::ConfigError;
use crate::wire::field::DATA_HEADER_LEN;

/// Smallest frame size (spec §4.1).
pub const MIN_FRAME_SIZE: u32 = 40;
/// Smallest `datagram_size` (spec §4.2).
pub const MIN_DATAGRAM_SIZE: u32 = 64;
/// Largest `datagram_size`: the largest UDP payload over IPv4.
pub const MAX_DATAGRAM_SIZE: u32 = 65_507;

/// Everything both ends derive from the stream fields: frame count, frame
/// size, and the size and pattern offset of every datagram in a frame (all
/// frames split the same way).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamPlan {
    frame_rate: u32,
    frames: u32,
    frame_size: u32,
    /// Datagram sizes (header included) in index order.
    sizes: Vec<u32>,
    /// Pattern offset of each datagram's payload.
    offsets: Vec<u64>,
}

impl StreamPlan {
    /// Derives the plan (spec §4.1, §4.2).
    ///
    /// # Errors
    ///
    /// `datagram_size` or `frame_rate` out of range, zero frames, more than
    /// `u32::MAX` frames, a frame smaller than 40 bytes, or more than 65 535
    /// datagrams per frame.
    pub fn new(
        bits_per_second: u64,
        frame_rate: u32,
        stream_length_s: u32,
        datagram_size: u32,
    ) -> Result<Self, ConfigError> {
        if !(MIN_DATAGRAM_SIZE..=MAX_DATAGRAM_SIZE).contains(&datagram_size) {
            return Err(ConfigError::OutOfRange {
                field: "datagram_size",
                value: datagram_size.into(),
                reason: "must be 64..=65507",
            });
        }
        if frame_rate == 0 || frame_rate > 1_000_000 {
            return Err(ConfigError::OutOfRange {
                field: "frame_rate",
                value: frame_rate.into(),
                reason: "must be 1..=1000000",
            });
        }
        let err = |reason, detail| ConfigError::Stream {
            reason,
            bits_per_second,
            frame_rate,
            stream_length_s,
            detail,
        };
        let bps = bits_per_second - bits_per_second % 8;
        let frames64 = u64::from(stream_length_s) * u64::from(frame_rate);
        let frames =
            u32::try_from(frames64).map_err(|_| err("frame count does not fit u32", frames64))?;
        if frames == 0 {
            return Err(err("zero frames", 0));
        }
        let total = (bps / 8).saturating_mul(u64::from(stream_length_s));
        let total = total - total % frames64;
        let frame_size64 = total / frames64;
        if frame_size64 < u64::from(MIN_FRAME_SIZE) {
            return Err(err("frame size below 40 bytes", frame_size64));
        }
        let frame_size = u32::try_from(frame_size64)
            .map_err(|_| err("frame size does not fit u32", frame_size64))?;
        let count_estimate = frame_size.div_ceil(datagram_size);
        if count_estimate > u32::from(u16::MAX) {
            return Err(err(
                "more than 65535 datagrams per frame",
                count_estimate.into(),
            ));
        }
        let sizes = split(frame_size, datagram_size);
        if sizes.len() > usize::from(u16::MAX) {
            return Err(err(
                "more than 65535 datagrams per frame",
                sizes.len() as u64,
            ));
        }
        let mut offsets = Vec::with_capacity(sizes.len());
        let mut o = 0u64;
        for &s in &sizes {
            offsets.push(o);
            o += u64::from(s) - DATA_HEADER_LEN as u64;
        }
        Ok(StreamPlan {
            frame_rate,
            frames,
            frame_size,
            sizes,
            offsets,
        })
    }

    /// Frames in the stream (the final sequence number).
    pub fn frames(&self) -> u32 {
        self.frames
    }

    /// Frames per second.
    pub fn frame_rate(&self) -> u32 {
        self.frame_rate
    }

    /// Bytes per frame, every datagram's header included.
    pub fn frame_size(&self) -> u32 {
        self.frame_size
    }

    /// Datagrams per frame.
    pub fn datagrams_per_frame(&self) -> u16 {
        // Checked in `new`.
        u16::try_from(self.sizes.len()).unwrap_or(u16::MAX)
    }

    /// Size (header included) of datagram `index`, if it exists.
    pub fn datagram_len(&self, index: u16) -> Option<usize> {
        self.sizes.get(usize::from(index)).map(|&s| s as usize)
    }

    /// Pattern offset of datagram `index`'s payload (spec §2.7).
    pub fn payload_offset(&self, index: u16) -> Option<u64> {
        self.offsets.get(usize::from(index)).copied()
    }

    /// Offset of frame `k` (from 1) from the stream base in µs:
    /// `k × 1 000 000 / frame_rate` (spec §5.2).
    pub fn frame_offset_us(&self, k: u64) -> u64 {
        k.saturating_mul(1_000_000) / u64::from(self.frame_rate)
    }
}

/// Splits one frame (spec §4.2, ctsTraffic §3 with a 28-byte header).
fn split(frame_size: u32, max: u32) -> Vec<u32> {
    let h = DATA_HEADER_LEN as u32;
    let mut out = Vec::new();
    let mut remaining = frame_size;
    while remaining > 0 {
        let mut d = remaining.min(max);
        if (1..=h).contains(&(remaining - d)) {
            d = remaining - (h + 1);
        }
        out.push(d);
        remaining -= d;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[test]
    fn spec_example() {
        let p = StreamPlan::new(1_000_000, 30, 3, 1400).unwrap();
        assert_eq!((p.frames(), p.frame_size()), (90, 4166));
        assert_eq!(p.sizes, vec![1400, 1400, 1366]);
        assert_eq!(p.offsets, vec![0, 1372, 2744]);
        assert_eq!(p.frame_offset_us(1), 33_333);
        let p = StreamPlan::new(25_000_000, 60, 60, 1400).unwrap();
        assert_eq!(
            (p.frames(), p.frame_size(), p.sizes.len()),
            (3600, 52_083, 38)
        );
        assert_eq!(p.sizes[37], 283);
    }

    #[rstest]
    #[case(1401, vec![1372, 29])]
    #[case(1428, vec![1399, 29])]
    #[case(1429, vec![1400, 29])]
    #[case(2800, vec![1400, 1400])]
    #[case(40, vec![40])]
    fn split_rule(#[case] frame: u32, #[case] expected: Vec<u32>) {
        assert_eq!(split(frame, 1400), expected);
    }

    #[test]
    fn rejects() {
        assert!(StreamPlan::new(8 * 39 * 30, 30, 1, 1400).is_err());
        assert!(StreamPlan::new(8 * 40 * 30, 30, 1, 1400).is_ok());
        assert!(StreamPlan::new(1_000_000, 30, 0, 1400).is_err());
        assert!(StreamPlan::new(1_000_000, 30, 3, 65_508).is_err());
    }
}
