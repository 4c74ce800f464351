//! Fuzz target `scenario`: the property `streamlab_harness::fuzzing::scenario_file`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| streamlab_harness::fuzzing::scenario_file(data));
