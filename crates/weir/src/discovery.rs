//! `weir discovery`: the control plane alone, serving ADS on a watched folder.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use weir_model::FolderSource;
use weir_xds::server::DiscoveryServer;

use crate::load::{FolderArgs, load, warn_rejected};

/// Quiet time after a change before it is applied, so a burst of edits becomes one push.
pub const DEBOUNCE: Duration = Duration::from_millis(100);
/// Longest a burst of changes may delay a push.
pub const DEBOUNCE_CAP: Duration = Duration::from_secs(1);

/// `weir discovery` arguments.
#[derive(clap::Args)]
pub struct Args {
    /// The configuration folder, watched for changes.
    #[arg(long = "config", value_name = "DIR")]
    config: String,
    /// Where to serve ADS (gRPC, plaintext).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:15010")]
    listen: SocketAddr,
    /// Where to serve `/metrics` (Prometheus) and `/debug/rejections` (standing NACKs).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:15014")]
    monitoring: Option<SocketAddr>,
    #[command(flatten)]
    folder: FolderArgs,
}

/// Runs the command.
pub fn run(args: &Args) -> ExitCode {
    crate::logging::init();
    let (source, model) = match load(&args.config, &args.folder) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("weir discovery: {e}");
            return ExitCode::from(2);
        }
    };
    warn_rejected(&args.config, &model);
    let watch = match source.watch() {
        Ok(w) => w,
        Err(e) => {
            eprintln!("weir discovery: {e}");
            return ExitCode::from(2);
        }
    };
    let server = DiscoveryServer::new(model);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("weir discovery: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    {
        let server = server.clone();
        std::thread::spawn(move || watch_loop(&source, &watch, &server, &|| {}));
    }
    runtime.block_on(async move {
        // Readiness probes of health-checked WorkloadEntries.
        tokio::spawn(crate::health::run(server.clone()));
        let listener = match tokio::net::TcpListener::bind(args.listen).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("weir discovery: cannot listen on {}: {e}", args.listen);
                return ExitCode::from(2);
            }
        };
        let local = listener.local_addr().map_or(args.listen, |a| a);
        if let Some(addr) = args.monitoring {
            match crate::monitoring::serve(addr, server.clone()).await {
                Ok(bound) => println!("weir discovery: metrics on http://{bound}/metrics"),
                Err(e) => {
                    eprintln!("weir discovery: cannot serve metrics on {addr}: {e}");
                    return ExitCode::from(2);
                }
            }
        }
        println!("weir discovery: serving ADS on {local} for {}", args.config);
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
        let result = tonic::transport::Server::builder()
            .add_service(server.service())
            .serve_with_incoming_shutdown(incoming, async {
                let _ = tokio::signal::ctrl_c().await;
            })
            .await;
        match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("weir discovery: {e}");
                ExitCode::FAILURE
            }
        }
    })
}

/// Applies folder changes to the server: waits for a change, then keeps collecting until the
/// folder has been quiet for [`DEBOUNCE`] (or [`DEBOUNCE_CAP`] has passed), then applies the batch.
pub fn watch_loop(
    source: &FolderSource,
    watch: &weir_model::FolderWatch,
    server: &DiscoveryServer,
    changed: &dyn Fn(),
) {
    loop {
        let Some(first) = watch.next_batch(Duration::from_secs(3600)) else {
            continue;
        };
        let started = Instant::now();
        let mut rescan = false;
        let mut paths: Vec<PathBuf> = Vec::new();
        let mut next = Some(first);
        while let Some(batch) = next.take() {
            match batch {
                Ok(p) => paths.extend(p),
                Err(e) => {
                    tracing::warn!("folder watch lost events ({e}); rescanning");
                    rescan = true;
                }
            }
            if started.elapsed() < DEBOUNCE_CAP {
                next = watch.next_batch(DEBOUNCE);
            }
        }
        let summary = server.apply(|store| {
            if rescan {
                // The watcher lost events: read every known file and the folder again.
                paths = store.files().map(std::path::Path::to_path_buf).collect();
                paths.push(source.root().to_path_buf());
            }
            source.refresh(store, &paths)
        });
        if !summary.is_empty() {
            changed();
            tracing::info!(
                kinds = ?summary.kinds,
                endpoints_only = summary.endpoints_only,
                "configuration changed; pushing"
            );
        }
    }
}
