//! The `weir` command.

mod describe;
mod files;
mod validate;

use std::process::ExitCode;

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
    }
}
