use std::process::ExitCode;

/// mimalloc: rebuilds allocate and free millions of small values per batch, which glibc's
/// allocator spent about 40 % of a rebuild's CPU on (ADR 0022).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    ordo::cli::run().await
}
