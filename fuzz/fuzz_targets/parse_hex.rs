//! Fuzz target `parse_hex`: the property `streamlab_harness::fuzzing::parse_hex`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| streamlab_harness::fuzzing::parse_hex(data));
