//! The payload pattern (spec §2.7): the payload bytes of one frame,
//! concatenated in index order, form a stream whose byte at offset `o` is the
//! little-endian `u16` counter `o / 2 mod 65536`.

/// The pattern byte at stream offset `offset`.
pub const fn pattern_byte(offset: u64) -> u8 {
    let counter = ((offset / 2) % 65_536) as u16;
    let [lo, hi] = counter.to_le_bytes();
    if offset.is_multiple_of(2) { lo } else { hi }
}

/// Fills `buf` with the pattern starting at stream offset `offset` (the sum
/// of the payload lengths of the frame's earlier datagrams).
pub fn fill_pattern(buf: &mut [u8], offset: u64) {
    for (o, b) in (offset..).zip(buf.iter_mut()) {
        *b = pattern_byte(o);
    }
}

/// The first byte of a payload that does not match the pattern.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("payload byte {position} is 0x{got:02x}, pattern expects 0x{expected:02x}")]
pub struct PatternMismatch {
    /// Position within the checked payload.
    pub position: usize,
    /// The byte the pattern expects.
    pub expected: u8,
    /// The byte received.
    pub got: u8,
}

/// Checks `payload` against the pattern starting at stream offset `offset`.
///
/// # Errors
///
/// The first mismatching byte.
pub fn verify_pattern(payload: &[u8], offset: u64) -> Result<(), PatternMismatch> {
    for ((position, &got), o) in payload.iter().enumerate().zip(offset..) {
        let expected = pattern_byte(o);
        if got != expected {
            return Err(PatternMismatch {
                position,
                expected,
                got,
            });
        }
    }
    Ok(())
}
