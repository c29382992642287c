//! The `weir` command.

mod config_dump;
mod describe;
mod discovery;
mod echo;
mod files;
mod health;
mod load;
mod logging;
mod monitoring;
mod proxy;
mod run;
mod validate;

use std::process::ExitCode;

/// mimalloc instead of the system allocator: the proxy allocates and frees small objects
/// (header maps, bodies' buffers, futures) for every request, and glibc's malloc was the largest
/// single cost of Weir's own CPU at saturation (docs/performance.md). `weir_alloc` asks mimalloc
/// for plain allocations wherever the alignment allows (see its documentation for why).
#[global_allocator]
static ALLOCATOR: weir_alloc::Allocator = weir_alloc::Allocator;

use clap::{Parser, Subcommand};

/// Weir: a service mesh that speaks the Istio configuration API.
#[derive(Parser)]
#[command(name = "weir", version, about, long_about = None, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Validate Istio configuration like Istio's admission webhook does.
    ///
    /// Exit status: 0 when every Istio resource is valid (warnings allowed), 1 when any is
    /// invalid, 2 on usage or I/O errors.
    Validate(validate::Args),
    /// Show what Weir makes of a folder: services, endpoints, allocated addresses, each
    /// resource's conditions, and (with --proxy) what applies to one proxy.
    ///
    /// Exit status: 0, or 1 when some documents were rejected, 2 on usage or I/O errors.
    Describe(describe::Args),
    /// Run the control plane alone: serve ADS (state of the world and delta) for a watched
    /// configuration folder.
    Discovery(discovery::Args),
    /// Print the xDS resources one proxy would receive, as Envoy-style JSON.
    ///
    /// Exit status: 0, 2 on usage or I/O errors.
    ConfigDump(config_dump::Args),
    /// Run the control plane, a local sidecar proxy and the gateways on a watched folder, in
    /// one process: the embedded default for one machine.
    Run(run::Args),
    /// Run the proxy alone, against a control plane or from an Envoy v3 bootstrap.
    Proxy(proxy::Args),
    /// A small HTTP backend that answers with what it received (for demos and tests).
    Echo(echo::Args),
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // clap prints help/version to stdout (exit 0) and usage errors to stderr (exit 2).
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    match cli.command {
        Command::Validate(args) => validate::run(&args),
        Command::Describe(args) => describe::run(&args),
        Command::Discovery(args) => discovery::run(&args),
        Command::ConfigDump(args) => config_dump::run(&args),
        Command::Run(args) => run::run(&args),
        Command::Proxy(args) => proxy::run(&args),
        Command::Echo(args) => echo::run(&args),
    }
}
