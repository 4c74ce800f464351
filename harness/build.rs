//! The regression suite test (`tests/suite.rs`) lists `scenarios/*/*.json` at
//! compile time; re-run when that folder changes so that a new scenario file
//! becomes a test case without touching any source.

fn main() {
    println!("cargo:rerun-if-changed=../scenarios");
    println!("cargo:rerun-if-changed=build.rs");
}
