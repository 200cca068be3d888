//! `ordo-bench`: Ordo's benchmarks, a binary of their own so that load generators and log
//! seeders never ship in the production `ordo` binary. Each subcommand prints its report on
//! stdout; `scripts/bench.sh` wraps `place-order` around a fresh release server.

/// Print a line of a subcommand's report (`println!`'s arguments) with [`say`], in a
/// function that returns `anyhow::Result`.
macro_rules! say {
    ($($arg:tt)*) => {
        $crate::say(format_args!($($arg)*))?
    };
}

mod deliveries;
mod pipeline;
mod place_order;
mod rebuild;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "ordo-bench", version, about = "Ordo's benchmarks")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Drive a running server with concurrent clients placing orders; print throughput
    /// and latency percentiles.
    PlaceOrder(place_order::BenchArgs),
    /// Relay throughput and commit -> worker-handler latency at a steady rate (needs NATS).
    Pipeline(pipeline::PipelineBenchArgs),
    /// Seed a log (default 1,000,000 events) and time a rebuild of all three read models.
    Rebuild(rebuild::RebuildBenchArgs),
    /// Orders at a steady rate with three webhook endpoints on loopback (hanging, flaky,
    /// healthy): the healthy one's delivery latency and exactly-once, read-your-writes.
    Deliveries(deliveries::DeliveriesBenchArgs),
    /// Delete JetStream streams a benchmark run created (`scripts/bench.sh` runs Ordo on
    /// streams of its own, so that no run replays another's messages).
    DropStreams(DropStreamsArgs),
}

#[derive(Debug, clap::Args)]
struct DropStreamsArgs {
    #[arg(long, env = "NATS_URL", default_value = "nats://127.0.0.1:4222")]
    nats_url: String,
    /// The streams to delete; a stream that does not exist is skipped.
    #[arg(required = true)]
    streams: Vec<String>,
}

async fn drop_streams(args: DropStreamsArgs) -> anyhow::Result<()> {
    let js = async_nats::jetstream::new(async_nats::connect(args.nats_url.as_str()).await?);
    for stream in &args.streams {
        let _ = js.delete_stream(stream).await;
    }
    Ok(())
}

/// Print one line of a report on stdout. A reader that stopped reading (`ordo-bench … |
/// head`) is not an error: the rest of the report goes nowhere, and the benchmark's own
/// outcome decides the exit code (`println!` panicked on the closed pipe).
fn say(line: std::fmt::Arguments) -> std::io::Result<()> {
    use std::io::Write;
    match writeln!(std::io::stdout().lock(), "{line}") {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        written => written,
    }
}

/// mimalloc: rebuilds allocate and free millions of small values per batch, which glibc's
/// allocator spent about 40 % of a rebuild's CPU on (ADR 0022).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    ordo_runtime::telemetry::init();
    let result = match cli.command {
        Command::PlaceOrder(args) => place_order::run(args).await,
        Command::Pipeline(args) => pipeline::run_bench(args).await,
        Command::Rebuild(args) => rebuild::run_bench(args).await,
        Command::DropStreams(args) => drop_streams(args).await,
        Command::Deliveries(args) => deliveries::run(args).await,
    };
    let code = match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    };
    // The batch exporter blocks while it sends: not on a runtime worker.
    let _ = tokio::task::spawn_blocking(ordo_runtime::telemetry::shutdown).await;
    code
}
