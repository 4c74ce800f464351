//! The `streamlab` command line.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use streamlab_impair::{LinkConfig, LinkStatsRun, link_stats};

/// streamlab: protocol test harness and network-impairment simulator.
#[derive(Parser)]
#[command(name = "streamlab", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Push synthetic datagrams through one link direction and print the
    /// realised statistics as one JSON object.
    LinkStats {
        /// Link-direction config (JSON), or `-` for stdin.
        config: PathBuf,
        /// Datagrams to send.
        #[arg(long, default_value_t = 100_000)]
        packets: u64,
        /// Seed of the link's random streams.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Gap between sends, µs.
        #[arg(long, default_value_t = 1000)]
        interval_us: u64,
        /// Payload bytes per datagram.
        #[arg(long, default_value_t = 1200)]
        size: usize,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::LinkStats {
            config,
            packets,
            seed,
            interval_us,
            size,
        } => {
            match run_link_stats(
                &config,
                LinkStatsRun {
                    packets,
                    seed,
                    interval_us,
                    size,
                },
            ) {
                Ok(json) => {
                    println!("{json}");
                    ExitCode::SUCCESS
                }
                Err(msg) => {
                    for line in msg.lines() {
                        eprintln!("streamlab link-stats: {line}");
                    }
                    ExitCode::from(2)
                }
            }
        }
    }
}

fn run_link_stats(path: &PathBuf, run: LinkStatsRun) -> Result<String, String> {
    let source = path.display().to_string();
    let text = if source == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .map_err(|e| format!("reading stdin: {e}"))?;
        s
    } else {
        std::fs::read_to_string(path).map_err(|e| format!("reading {source}: {e}"))?
    };
    let config = LinkConfig::from_json(&text, "").map_err(|e| format!("{source}: {e}"))?;
    if let Err(errs) = config.validate("") {
        let lines: Vec<String> = errs.iter().map(|e| format!("{source}: {e}")).collect();
        return Err(lines.join("\n"));
    }
    let report = link_stats(&config, run).map_err(|e| format!("{source}: {e}"))?;
    let mut out = serde_json::Map::new();
    out.insert("seed".into(), run.seed.into());
    out.insert("interval_us".into(), run.interval_us.into());
    out.insert("size".into(), run.size.into());
    let report =
        serde_json::to_value(&report).map_err(|e| format!("serialising the report: {e}"))?;
    if let serde_json::Value::Object(fields) = report {
        out.extend(fields);
    }
    out.insert("warnings".into(), config.warnings().into());
    out.insert(
        "config".into(),
        serde_json::to_value(config.resolved())
            .map_err(|e| format!("serialising the config: {e}"))?,
    );
    Ok(serde_json::Value::Object(out).to_string())
}
