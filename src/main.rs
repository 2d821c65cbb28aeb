use clap::Parser;
use gateway::cli::{Args, build};
use gateway::reconcile::Reconciler;
use gateway::runner::Runner;
use tracing_subscriber::EnvFilter;

#[rocket::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    if args.openapi {
        return match serde_json::to_string_pretty(&gateway::api::openapi_spec()) {
            Ok(s) => {
                println!("{s}");
                std::process::ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("gateway: cannot print the OpenAPI spec: {e}");
                std::process::ExitCode::FAILURE
            }
        };
    }
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,rocket=error"));
    tracing_subscriber::fmt().with_env_filter(filter).with_target(false).init();
    match run(args).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("gateway: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let daemon = build(&args, Runner::new(args.command_timeout)).await?;
    tracing::info!(
        backend = daemon.shared.backend.name(),
        "gateway {} serving the API on http://{}:{}",
        env!("CARGO_PKG_VERSION"),
        args.address,
        args.api_port().unwrap_or(8000)
    );
    let reconciler = Reconciler::new(daemon.shared.clone()).await;
    tokio::spawn(reconciler.run());
    gateway::api::rocket(daemon.api, daemon.figment).launch().await?;
    tracing::info!("gateway stopped; networks stay as they are until the next start");
    Ok(())
}
