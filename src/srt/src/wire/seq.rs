//! Sequence and message number arithmetic (draft §3.1, Appendix A).
//!
//! Packet sequence numbers are 31 bits and wrap modulo 2^31; of two
//! numbers, the one reached from the other in fewer than 2^30 steps forward
//! is the later (UDT's and libsrt's `seqcmp`). Message numbers are 26 bits
//! and wrap from 2^26 − 1 back to 1 (libsrt `MsgNo::incmsg` skips 0).

/// The largest packet sequence number, 2^31 − 1.
pub const SEQ_MAX: u32 = 0x7FFF_FFFF;
/// Half the sequence space: distances of this size or more are ambiguous.
pub const SEQ_HALF: u32 = 0x4000_0000;
/// The largest message number, 2^26 − 1.
pub const MSGNO_MAX: u32 = 0x03FF_FFFF;

/// A 31-bit packet sequence number.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SeqNo(u32);

impl SeqNo {
    /// `v` modulo 2^31 (the F bit or anything above bit 30 is cut off).
    pub const fn new(v: u32) -> Self {
        SeqNo(v & SEQ_MAX)
    }

    /// The number, 0 ..= 2^31 − 1.
    pub const fn value(self) -> u32 {
        self.0
    }

    /// `self + n`, modulo 2^31.
    pub const fn add(self, n: u32) -> Self {
        SeqNo(self.0.wrapping_add(n) & SEQ_MAX)
    }

    /// `self − n`, modulo 2^31.
    pub const fn sub(self, n: u32) -> Self {
        SeqNo(self.0.wrapping_sub(n) & SEQ_MAX)
    }

    /// The next number.
    pub const fn next(self) -> Self {
        self.add(1)
    }

    /// The signed distance `self − other` in −2^30 ..= 2^30 − 1: positive
    /// when `self` comes after `other`.
    pub const fn offset_from(self, other: SeqNo) -> i32 {
        let d = self.0.wrapping_sub(other.0) & SEQ_MAX;
        if d >= SEQ_HALF {
            (d as i64 - (SEQ_MAX as i64 + 1)) as i32
        } else {
            d as i32
        }
    }

    /// Whether `self` comes strictly before `other`.
    pub const fn is_before(self, other: SeqNo) -> bool {
        self.offset_from(other) < 0
    }

    /// The extended (never wrapping) number of `self` nearest to the
    /// extended number `reference` (whose low 31 bits are a sequence
    /// number). Lets a machine keep ordered maps without modular keys.
    pub fn extend_near(self, reference: u64) -> u64 {
        let r = SeqNo::new((reference & u64::from(SEQ_MAX)) as u32);
        let off = i64::from(self.offset_from(r));
        let ext = reference as i64 + off;
        // Before the first lap there is nothing to go back to.
        if ext < 0 {
            ext.rem_euclid(i64::from(SEQ_MAX) + 1) as u64
        } else {
            ext as u64
        }
    }

    /// The sequence number of an extended number.
    pub const fn from_extended(ext: u64) -> Self {
        SeqNo((ext & SEQ_MAX as u64) as u32)
    }
}

impl std::fmt::Display for SeqNo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The message number after `m` (26 bits; 0 is skipped on wrap).
pub const fn next_msgno(m: u32) -> u32 {
    let n = (m & MSGNO_MAX).wrapping_add(1) & MSGNO_MAX;
    if n == 0 { 1 } else { n }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn wraps_at_two_to_the_31() {
        let last = SeqNo::new(SEQ_MAX);
        assert_eq!(last.next(), SeqNo::new(0));
        assert_eq!(SeqNo::new(0).sub(1), last);
        assert_eq!(SeqNo::new(0).offset_from(last), 1);
        assert_eq!(last.offset_from(SeqNo::new(0)), -1);
        assert!(last.is_before(SeqNo::new(5)));
        assert!(!SeqNo::new(5).is_before(last));
        assert_eq!(SeqNo::new(0x8000_0003), SeqNo::new(3));
        assert_eq!(SeqNo::new(10).offset_from(SeqNo::new(3)), 7);
        assert_eq!(
            SeqNo::new(0).offset_from(SeqNo::new(SEQ_HALF)),
            -(SEQ_HALF as i32)
        );
    }

    #[test]
    fn extends_across_the_wrap() {
        let r = u64::from(SEQ_MAX) - 1;
        assert_eq!(SeqNo::new(2).extend_near(r), u64::from(SEQ_MAX) + 3);
        assert_eq!(SeqNo::new(SEQ_MAX - 5).extend_near(r), r - 4);
        assert_eq!(SeqNo::new(SEQ_MAX).extend_near(3), u64::from(SEQ_MAX));
        assert_eq!(SeqNo::from_extended(u64::from(SEQ_MAX) + 3), SeqNo::new(2));
    }

    #[test]
    fn message_numbers_wrap_past_zero() {
        assert_eq!(next_msgno(1), 2);
        assert_eq!(next_msgno(MSGNO_MAX), 1);
        assert_eq!(next_msgno(0), 1);
    }

    proptest! {
        #[test]
        fn offset_inverts_add(a in 0u32..=SEQ_MAX, n in 0u32..SEQ_HALF) {
            let s = SeqNo::new(a);
            prop_assert_eq!(s.add(n).offset_from(s), n as i32);
            prop_assert_eq!(s.offset_from(s.add(n)), -(n as i32));
            prop_assert_eq!(s.add(n).sub(n), s);
            prop_assert_eq!(s.is_before(s.add(n)), n > 0);
        }

        #[test]
        fn extension_round_trips(r in 0u64..(1u64 << 40), d in -(1i64 << 29)..(1i64 << 29)) {
            let ext = r as i64 + d;
            prop_assume!(ext >= 0);
            let s = SeqNo::from_extended(ext as u64);
            prop_assert_eq!(s.extend_near(r), ext as u64);
        }

        #[test]
        fn msgno_stays_in_range(m in any::<u32>()) {
            let n = next_msgno(m);
            prop_assert!((1..=MSGNO_MAX).contains(&n));
        }
    }
}
