use std::{process::ExitCode, time::Duration};

use clap::Parser;
use latchkey::{
    cli::{self, Cli},
    telemetry,
};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let telemetry = telemetry::init(&cli.settings.log, cli.settings.log_format);
    if let Err(e) = cli.settings.validate() {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    let result = cli::run(cli).await;
    // Spans still buffered go out, within a bound.
    telemetry.shutdown(Duration::from_secs(5)).await;
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
