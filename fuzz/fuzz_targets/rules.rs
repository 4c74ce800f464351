//! Fuzz target `rules`: the property `streamlab_harness::fuzzing::rules`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| streamlab_harness::fuzzing::rules(data));
