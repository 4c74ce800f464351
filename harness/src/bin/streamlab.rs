//! The `streamlab` command line.

fn main() {
    eprintln!("streamlab: no subcommands yet");
    std::process::exit(2);
}
