//! The `streamlab` command line: see `streamlab --help`.

fn main() -> std::process::ExitCode {
    streamlab_harness::cli::main()
}
