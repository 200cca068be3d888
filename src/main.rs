use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    ordo::cli::run().await
}
