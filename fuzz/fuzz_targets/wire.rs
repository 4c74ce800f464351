//! Fuzz target `wire`: the property `streamlab_harness::fuzzing::wire`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| streamlab_harness::fuzzing::wire(data));
