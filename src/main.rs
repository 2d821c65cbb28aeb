use clap::Parser;
use gateway::cli::Args;
use gateway::daemon::build;
use gateway::reconcile::Reconciler;
use gateway::system::Runner;
use tracing_subscriber::EnvFilter;

#[rocket::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    if args.openapi {
        return print_openapi();
    }
    // Rocket's route code logs per-request notes (e.g. every failed auth
    // guard) under the target `gateway::api::_`: noise at info level.
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,rocket=error,gateway::api::_=error"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    tracing_subscriber::fmt().with_env_filter(filter).with_target(false).with_ansi(ansi).init();
    match run(args).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gateway: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(feature = "openapi")]
fn print_openapi() -> std::process::ExitCode {
    match serde_json::to_string_pretty(&gateway::api::openapi_spec()) {
        Ok(s) => {
            println!("{s}");
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("gateway: cannot print the OpenAPI spec: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(not(feature = "openapi"))]
fn print_openapi() -> std::process::ExitCode {
    eprintln!("gateway: built without the `openapi` cargo feature; rebuild with it to print the spec");
    std::process::ExitCode::FAILURE
}

async fn run(args: Args) -> anyhow::Result<()> {
    let daemon = build(&args, Runner::new(args.command_timeout)).await?;
    tracing::info!(
        backend = daemon.shared.system.backend.name(),
        version = env!("CARGO_PKG_VERSION"),
        address = %args.address,
        port = args.api_port().unwrap_or(8000),
        "gateway serving the API"
    );
    let reconciler = tokio::spawn(Reconciler::new(daemon.shared.clone()).await.run());
    let rocket = gateway::api::rocket(daemon.shared, daemon.figment).ignite().await?;
    let shutdown = rocket.shutdown();
    tokio::select! {
        launched = rocket.launch() => {
            launched?;
        }
        // The reconciler never returns; if it dies, an API that only stores
        // states nobody applies would be worse than exiting for a restart.
        ended = reconciler => {
            shutdown.notify();
            anyhow::bail!("the reconciler stopped ({ended:?}); exiting so the supervisor restarts the daemon");
        }
    }
    tracing::info!("gateway stopped; networks stay as they are until the next start");
    Ok(())
}
