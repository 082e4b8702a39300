//! The `valv` binary: parse the command line, build the application, serve until
//! SIGINT or SIGTERM. Everything else lives in the library.

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use tokio::net::TcpListener;

use valv::app::{dev_key_notice, exposure_warning, App, KeySource};
#[cfg(feature = "dev-keyvault")]
use valv::cli::DevKeyvaultArgs;
use valv::cli::{Cli, Command, EncryptionCommand, HealthcheckArgs};
use valv::config::{Config, LogFormat};
use valv::tls::{reload::Reloader, ServerTls, Sources, TlsFiles};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("valv: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // The configuration comes before the log subscriber, as it picks the format; a
    // configuration error is therefore plain text on stderr, whatever the format.
    let mut format = LogFormat::Text;
    if !matches!(cli.command, Command::Serve(_)) {
        valv::logging::init(format, None);
    }
    let result = match cli.command {
        Command::Serve(args) => match Config::load(&args.overrides(), &|k| std::env::var(k).ok()) {
            Ok(config) => {
                format = config.log.format;
                match valv::telemetry::start(&config.telemetry) {
                    Ok((export, tracing)) => {
                        valv::logging::init(format, export);
                        if let Some(url) = valv::telemetry::on()
                            .then_some(config.telemetry.otlp_endpoint.as_deref())
                            .flatten()
                        {
                            tracing::info!(
                                endpoint = %valv::telemetry::traces_url(url),
                                service_name = %config.telemetry.service_name,
                                "traces: exporting spans by OTLP/HTTP"
                            );
                        }
                        let served = runtime.block_on(serve(config));
                        // After the server: the last requests' spans are queued.
                        tracing.shutdown();
                        served
                    }
                    Err(e) => {
                        valv::logging::init(format, None);
                        Err(e.into())
                    }
                }
            }
            Err(e) => Err(e.into()),
        },
        Command::Kek(command) => {
            valv::commands::kek::run(&command, &mut std::io::stdout().lock()).map_err(Into::into)
        }
        #[cfg(feature = "dev-keyvault")]
        Command::DevKeyvault(args) => runtime.block_on(dev_keyvault(args)),
        Command::Encryption(command) => runtime.block_on(encryption(command)),
        Command::Healthcheck(args) => runtime.block_on(healthcheck(args)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            match format {
                LogFormat::Text => eprintln!("valv: {e}"),
                // Every stderr line stays a JSON object.
                LogFormat::Json => tracing::error!(error = %e, "valv stopped"),
            }
            ExitCode::FAILURE
        }
    }
}

/// Tells the operator something that must not be missed: a banner in text, one
/// warning in JSON (where every stderr line is an object).
fn notice(format: LogFormat, banner: &str, line: &str) {
    match format {
        LogFormat::Text => eprintln!("{banner}"),
        LogFormat::Json => tracing::warn!("{line}"),
    }
}

async fn serve(config: Config) -> Result<(), Box<dyn std::error::Error>> {
    let format = config.log.format;
    // TLS files first: a bad certificate should not wait behind creating a dev key.
    let (tls, reloader) = match TlsFiles::from_config(&config.server.tls) {
        Some(files) => {
            let (live, reloader) = start_tls(files)?;
            (Some(live), Some(reloader))
        }
        None => (None, None),
    };
    let (app, key) = App::build(&config).await?;
    match &key {
        KeySource::DevKey { id, created } => notice(
            format,
            &dev_key_notice(id, *created),
            &format!(
                "using the local development key-encryption key {id}: for development only, \
                 it lives on the same disk as the data it protects (see docs/OPERATIONS.md)"
            ),
        ),
        KeySource::Configured(id) => {
            tracing::info!(key = %id, "encrypting under the configured key")
        }
    }
    open_file_room(config.server.max_connections);
    let listener = TcpListener::bind(&config.server.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", config.server.listen))?;
    let addr = listener.local_addr()?;
    let metrics_listener = match &config.server.metrics_listen {
        Some(at) => Some(
            TcpListener::bind(at)
                .await
                .map_err(|e| format!("cannot listen on {at} (server.metrics_listen): {e}"))?,
        ),
        None => None,
    };
    if let Some(warning) = exposure_warning(addr, tls.is_some(), config.auth.enabled()) {
        // The banner's own lines, joined, say the same in one line.
        let line = warning
            .lines()
            .map(|l| l.trim_start_matches('*').trim())
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join(" ");
        notice(format, &warning, &line);
    }
    // SIGHUP is taken before the listener is announced: its default action is to exit.
    let reloads = reloader.map(|reloader| {
        use tokio::signal::unix::{signal, SignalKind};
        let hup = signal(SignalKind::hangup())
            .map_err(|e| {
                tracing::warn!(error = %e, "cannot install a SIGHUP handler; the TLS files reload by polling only")
            })
            .ok();
        tokio::spawn(reloader.run(valv::tls::reload_interval(&config.server.tls), hup))
    });
    {
        let scheme = if tls.is_some() { "https" } else { "http" };
        let mut out = std::io::stdout().lock();
        // Before the main line, which scripts and the tests wait for.
        if let Some(m) = &metrics_listener {
            writeln!(out, "metrics listening on http://{}", m.local_addr()?)?;
        }
        writeln!(out, "listening on {scheme}://{addr}")?;
        out.flush()?;
    }
    let app = Arc::new(app);
    // Crash cleanup of what an earlier process left, beside serving (it never touches
    // anything written within the grace period, so requests in flight are safe), then
    // the records of ended upload sessions, as they pass the grace period.
    let sweeper = app.clone();
    let sweeps = tokio::spawn(async move {
        let grace = sweeper.settings.orphan_grace;
        if let Err(e) = sweeper.store.sweep(grace).await {
            tracing::warn!(error = %e, "the crash cleanup at start failed; it runs again at the next start or on request");
        }
        let mut every = tokio::time::interval((grace / 4).max(std::time::Duration::from_secs(60)));
        every.tick().await;
        loop {
            every.tick().await;
            if let Err(e) = sweeper.store.sweep_sessions(grace).await {
                tracing::warn!(error = %e, "removing ended upload sessions failed; retried at the next interval");
            }
        }
    });
    // The htpasswd file is reloaded when it changes (a bad new file keeps the old).
    let htpasswd = tokio::spawn({
        let app = app.clone();
        async move { app.auth.watch_htpasswd().await }
    });
    let (stop_watcher, watcher_stopped) = tokio::sync::oneshot::channel::<()>();
    let watcher = tokio::spawn({
        let app = app.clone();
        async move {
            let kek = app.store.kek().clone();
            let watcher = valv::keys::Watcher {
                store: &app.store,
                status: &app.key_status,
                settings: app.watch,
                kek: kek.as_ref(),
                key_id: &app.key_id,
            };
            watcher
                .run(async {
                    let _ = watcher_stopped.await;
                })
                .await
        }
    });
    // The metrics listener stops with the process; a scrape has nothing to drain.
    let metrics = metrics_listener.map(|listener| {
        let app = app.clone();
        tokio::spawn(async move {
            if let Err(e) =
                valv::http::metrics::serve(listener, app, std::future::pending::<()>()).await
            {
                tracing::error!(error = %e, "the metrics listener failed");
            }
        })
    });
    let served = valv::http::server::run(listener, app, tls, shutdown_signal()).await;
    if let Some(metrics) = metrics {
        metrics.abort();
    }
    let _ = stop_watcher.send(());
    let _ = watcher.await;
    sweeps.abort();
    htpasswd.abort();
    if let Some(reloads) = reloads {
        reloads.abort();
    }
    served?;
    tracing::info!("stopped");
    Ok(())
}

/// Loads the TLS files (an error names the file) and logs the certificate; returns
/// the live configuration and the reloader that keeps it current.
fn start_tls(files: TlsFiles) -> Result<(Arc<ServerTls>, Reloader), valv::tls::TlsError> {
    let sources = Sources::read(&files)?;
    let loaded = valv::tls::build(&files, &sources)?;
    let c = &loaded.cert;
    tracing::info!(
        cert_file = %files.cert.display(),
        subject = %c.subject,
        serial = %c.serial,
        not_after = %c.not_after,
        sha256 = %c.sha256,
        chain = c.chain_len,
        client_ca = files.client_ca.as_ref().map(|p| p.display().to_string()),
        "TLS on: serving this certificate (HTTP/2 and HTTP/1.1)"
    );
    let live = Arc::new(ServerTls::new(loaded.config, files.client_ca.is_some()));
    let reloader = Reloader::new(files, live.clone(), sources.digest());
    Ok((live, reloader))
}

/// `valv encryption …`: one admin API call; the JSON on stdout, or the server's
/// message and exit status 1.
async fn encryption(command: EncryptionCommand) -> Result<(), Box<dyn std::error::Error>> {
    let json = valv::commands::admin_client::run(&command).await?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{json}")?;
    out.flush()?;
    Ok(())
}

/// Every connection is a file descriptor: raises the soft open-file limit to the hard
/// one (as Go's runtime does), and warns when even that leaves too little room for
/// `max_connections` besides the store's and the vault's own.
fn open_file_room(max_connections: usize) {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        let raised = rustix::process::Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        };
        match setrlimit(Resource::Nofile, raised) {
            Ok(()) => limit = getrlimit(Resource::Nofile),
            Err(e) => tracing::debug!(error = %e, "cannot raise the open-file limit"),
        }
    }
    // Room for the listeners, the store's files and connections, and the vault's.
    let needed = max_connections as u64 + 256;
    if let Some(current) = limit.current.filter(|&n| n < needed) {
        tracing::warn!(
            open_files = current,
            max_connections,
            "the open-file limit (ulimit -n) leaves too little room for server.max_connections: \
             raise it or lower server.max_connections"
        );
    }
}

/// `valv healthcheck`: the answer's first line on stdout when ready; otherwise the
/// reason (and exit status 1), which docker keeps in the container's health log.
async fn healthcheck(args: HealthcheckArgs) -> Result<(), Box<dyn std::error::Error>> {
    use valv::commands::healthcheck::{probe, run};
    let probe = probe(&args, &|k| std::env::var(k).ok())?;
    let timeout = std::time::Duration::from_secs(args.timeout.max(1));
    let line = run(&probe, timeout).await?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}: {line}", probe.url)?;
    out.flush()?;
    Ok(())
}

/// `valv dev-keyvault`: the fake Key Vault until SIGINT or SIGTERM.
#[cfg(feature = "dev-keyvault")]
async fn dev_keyvault(args: DevKeyvaultArgs) -> Result<(), Box<dyn std::error::Error>> {
    if !args.listen.ip().is_loopback() {
        return Err(format!(
            "refusing to listen on {}: the fake Key Vault's control API has no authentication; use 127.0.0.1",
            args.listen
        )
        .into());
    }
    let mut config = fake_keyvault::Config {
        addr: args.listen,
        state_dir: args.state,
        token_lifetime: std::time::Duration::from_secs(args.token_lifetime.max(1)),
        ..fake_keyvault::Config::default()
    };
    if let Some(tenant) = args.tenant {
        config.tenant_id = tenant;
    }
    let vault = fake_keyvault::FakeVault::start(config)
        .await
        .map_err(|e| format!("cannot start the fake Key Vault: {e}"))?;
    eprintln!(
        "valv dev-keyvault: a FAKE Azure Key Vault for development and tests (tenant {}); \
         its keys are plain files and /_fake needs no credentials",
        vault.tenant_id()
    );
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening on {}", vault.url())?;
        out.flush()?;
    }
    shutdown_signal().await;
    vault.shutdown().await;
    Ok(())
}

/// Completes on the first SIGINT or SIGTERM. If the handlers cannot be installed the
/// registry still runs (and dies on the default signal action, which is also safe).
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        tracing::warn!("cannot install signal handlers; graceful shutdown is unavailable");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = int.recv() => tracing::info!("SIGINT received: shutting down"),
        _ = term.recv() => tracing::info!("SIGTERM received: shutting down"),
    }
}
