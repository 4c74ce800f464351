//! Fuzz target `link_config`: the property `streamlab_harness::fuzzing::link_config`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| streamlab_harness::fuzzing::link_config(data));
