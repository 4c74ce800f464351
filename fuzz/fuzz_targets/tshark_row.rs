//! Fuzz target `tshark_row`: the property `streamlab_harness::fuzzing::tshark_row`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| streamlab_harness::fuzzing::tshark_row(data));
