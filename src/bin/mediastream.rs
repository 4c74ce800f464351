//! The `mediastream` binary: a real UDP client and server.

fn main() {
    eprintln!("mediastream: not built yet");
    std::process::exit(2);
}
