use gateway::cli::Args;
use gateway::daemon::build;
use gateway::reconcile::Reconciler;
use gateway::service::{Lifecycle, Shared};
use gateway::system::Runner;
use tracing_subscriber::EnvFilter;

#[rocket::main]
async fn main() -> std::process::ExitCode {
    bound_the_heap();
    let args = Args::parse_with_env();
    if args.openapi {
        return print_openapi();
    }
    init_logging(&args.log_format);
    let unknown = Args::unknown_variables(std::env::vars_os().filter_map(|(k, _)| k.into_string().ok()));
    if !unknown.is_empty() {
        tracing::warn!(variables = %unknown.join(", "), "unknown GATEWAY_* variables are ignored: no option reads them (`gateway --help` lists each option's)");
    }
    match run(args).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gateway: {}", one_line(&e));
            std::process::ExitCode::FAILURE
        }
    }
}

/// Gives freed memory back to the kernel. The daemon's large buffers are
/// short-lived (a status.json of 1,000 networks, ten of them at once; a
/// request body; a pass's observations): with glibc's sliding threshold,
/// once one such buffer is freed, buffers up to 32 MiB stop being mapped on
/// their own and land in the heaps, which are trimmed only past twice that,
/// so the resident size kept the peak of the busiest moment. A fixed
/// threshold maps each buffer of 256 KiB or more by itself (unmapped when
/// freed), heaps are trimmed past 1 MiB free, and at most four of them
/// exist (one per thread by default: each keeps its own free memory).
fn bound_the_heap() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only changes the allocator's tunables, which apply to
    // every later allocation; called first thing.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 * 1024);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1024 * 1024);
        libc::mallopt(libc::M_ARENA_MAX, 4);
    }
}

/// An error and its causes in one line, each cause once (a source's text is
/// often part of its wrapper's already).
fn one_line(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain().map(|c| c.to_string().replace('\n', " ")) {
        if !line.contains(&cause) {
            if !line.is_empty() {
                line.push_str(": ");
            }
            line.push_str(&cause);
        }
    }
    line
}

/// Text for people (no colours off a terminal) or one JSON object per line
/// for log collectors: timestamp, level, message, the event's fields and the
/// spans it happened in (pass, network).
fn init_logging(format: &str) {
    // Rocket's route code logs per-request notes (e.g. every failed auth
    // guard) under the target `gateway::api::_`: noise at info level.
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,rocket=error,gateway::api::_=error"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    if format == "json" {
        builder.json().flatten_event(true).with_current_span(false).with_span_list(true).init();
    } else {
        let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
        builder.with_target(false).with_ansi(ansi).init();
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
    let mut daemon = build(&args, Runner::new(args.command_timeout)).await?;
    let mut stop = termination_signals()?;
    reload_tokens_on_sighup(daemon.shared.clone())?;
    tracing::info!(
        backend = daemon.shared.system().backend.name(),
        version = env!("CARGO_PKG_VERSION"),
        address = %args.address,
        port = args.api_port().unwrap_or(8000),
        "gateway serving the API"
    );
    let shared = daemon.shared.clone();
    let front = open_api_socket(&args).await?;
    let mut reconciler = tokio::spawn(Reconciler::new(shared.clone()).await.run());
    tokio::spawn(gateway::checks::run(shared.clone()));
    if let Some(socket) = daemon.usage.take() {
        tokio::spawn(gateway::usage::socket::run(shared.clone(), socket));
    }
    let (listening, upstream) = tokio::sync::watch::channel(None);
    let peers = std::sync::Arc::new(gateway::api::gate::Peers::default());
    let rocket = gateway::api::rocket_behind_gate(daemon.shared, daemon.figment, peers.clone(), listening).ignite().await?;
    let shutdown = rocket.shutdown();
    // A POST that waits `--apply-wait` for its apply sends nothing meanwhile:
    // the idle limit must outlast it, or a 30-60 s apply gets no answer.
    let idle = args.api_timeout.max(args.apply_wait + std::time::Duration::from_secs(10));
    let limits = gateway::api::gate::Limits { timeout: args.api_timeout, idle, max_connections: args.api_max_connections as usize };
    let gate = tokio::spawn(gateway::api::gate::serve(front, upstream, limits, peers));
    let mut server = tokio::spawn(rocket.launch());
    let stopped = tokio::select! {
        signal = stop.recv() => {
            tracing::info!(signal, "stopping: the API takes no more writes; the running pass finishes first");
            finish_running_pass(&shared, reconciler).await
        }
        // The reconciler never returns unless stopped; if it dies, an API that
        // only stores states nobody applies would be worse than exiting for a restart.
        ended = &mut reconciler => Err(anyhow::anyhow!("the reconciler stopped ({ended:?}); exiting so the supervisor restarts the daemon")),
        launched = &mut server => {
            shared.close().await;
            return Err(match launched {
                Ok(Err(e)) => anyhow::Error::new(e).context("the API stopped"),
                other => anyhow::anyhow!("the API stopped ({other:?})"),
            });
        }
    };
    // In-flight requests get Rocket's grace period to be answered.
    gate.abort();
    shutdown.notify();
    let _ = server.await;
    // The last events are written before the database closes.
    shared.close().await;
    stopped?;
    tracing::info!("gateway stopped; networks and nginx stay as they are until the next start");
    Ok(())
}

/// SIGTERM (supervisors) and SIGINT (a terminal), as one stream.
fn termination_signals() -> anyhow::Result<tokio::sync::mpsc::Receiver<&'static str>> {
    use tokio::signal::unix::{SignalKind, signal};
    let (tx, rx) = tokio::sync::mpsc::channel(2);
    for (kind, name) in [(SignalKind::terminate(), "SIGTERM"), (SignalKind::interrupt(), "SIGINT")] {
        let mut s = signal(kind)?;
        let tx = tx.clone();
        tokio::spawn(async move {
            while s.recv().await.is_some() {
                let _ = tx.send(name).await;
            }
        });
    }
    Ok(rx)
}

/// The API's public socket (TLS with `--api-tls-cert`), bound before
/// anything runs so a port in use or a bad certificate stops the start.
/// A socket beyond loopback without TLS gets one warning: the token would
/// cross the network in clear text.
async fn open_api_socket(args: &gateway::cli::Args) -> anyhow::Result<gateway::api::gate::Front> {
    raise_open_files_limit();
    let port = args.api_port().map_err(anyhow::Error::msg)?;
    let tls = match (&args.api_tls_cert, &args.api_tls_key) {
        (Some(cert), Some(key)) => {
            Some(gateway::api::gate::TlsFiles { cert: cert.clone(), key: key.clone(), client_ca: args.api_client_ca.clone() })
        }
        _ => None,
    };
    if tls.is_none() && !args.address.is_loopback() {
        tracing::warn!(address = %args.address, "the API listens beyond loopback without TLS: tokens and private keys cross the network in clear text; set --api-tls-cert and --api-tls-key");
    }
    gateway::api::gate::bind(std::net::SocketAddr::new(args.address, port), tls.as_ref()).await
}

/// Each API connection holds up to three descriptors (client, and both
/// ends of the private hop): lift the soft limit to the hard one, as the
/// systemd unit's LimitNOFILE does.
fn raise_open_files_limit() {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit write and read only the struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

/// SIGHUP reads the token files again (a rotation needs no restart).
fn reload_tokens_on_sighup(shared: std::sync::Arc<Shared>) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangups = signal(SignalKind::hangup())?;
    tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            shared.reload_tokens();
        }
    });
    Ok(())
}

/// Refuses writes, lets the running pass finish and be recorded (within
/// `--shutdown-timeout`), then lets waiting requests answer.
async fn finish_running_pass(shared: &Shared, reconciler: tokio::task::JoinHandle<()>) -> anyhow::Result<()> {
    shared.move_to(Lifecycle::Stopping);
    let limit = shared.settings().shutdown_timeout;
    let ended = tokio::time::timeout(limit, reconciler).await;
    shared.move_to(Lifecycle::Stopped);
    match ended {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => anyhow::bail!("the reconciler failed while stopping: {e}"),
        Err(_) => anyhow::bail!(
            "the running pass did not finish within --shutdown-timeout ({} s); exiting without its result (the next start looks again)",
            limit.as_secs_f64()
        ),
    }
}
