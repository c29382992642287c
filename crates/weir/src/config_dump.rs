//! `weir config-dump`: the xDS resources one proxy would receive, as Envoy-style JSON.

use std::process::ExitCode;

use serde_json::{Map, Value};
use weir_model::Proxy;
use weir_xds::generator::{CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, ROUTE_TYPE};

use crate::load::{FolderArgs, load};

/// Which resources to print.
#[derive(Clone, Copy, clap::ValueEnum)]
enum Kind {
    Clusters,
    Listeners,
    Routes,
    Endpoints,
    All,
}

impl Kind {
    fn key(type_url: &str) -> &'static str {
        match type_url {
            CLUSTER_TYPE => "clusters",
            LISTENER_TYPE => "listeners",
            ROUTE_TYPE => "routes",
            ENDPOINT_TYPE => "endpoints",
            _ => "other",
        }
    }

    fn wants(self, type_url: &str) -> bool {
        match self {
            Kind::All => true,
            Kind::Clusters => type_url == CLUSTER_TYPE,
            Kind::Listeners => type_url == LISTENER_TYPE,
            Kind::Routes => type_url == ROUTE_TYPE,
            Kind::Endpoints => type_url == ENDPOINT_TYPE,
        }
    }
}

/// `weir config-dump` arguments.
#[derive(clap::Args)]
pub struct Args {
    /// The configuration folder.
    #[arg(long = "config", value_name = "DIR")]
    config: String,
    /// The proxy: KIND:NAMESPACE/NAME[:label=value,…], KIND one of sidecar, router (gateway),
    /// proxyless.
    #[arg(long, value_name = "PROXY")]
    proxy: String,
    /// Which resources to print: one type as a JSON array (like `istioctl proxy-config … -o
    /// json`), or all as an object keyed by type.
    #[arg(long = "type", value_enum, default_value = "all")]
    kind: Kind,
    #[command(flatten)]
    folder: FolderArgs,
}

/// Runs the command.
pub fn run(args: &Args) -> ExitCode {
    let proxy = match Proxy::parse(&args.proxy) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("weir config-dump: {e}");
            return ExitCode::from(2);
        }
    };
    let (_, model) = match load(&args.config, &args.folder) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("weir config-dump: {e}");
            return ExitCode::from(2);
        }
    };
    let (_, resources) = model.generate(&proxy);
    for problem in &resources.problems {
        eprintln!("weir config-dump: warning: {problem}");
    }
    let rendered = match resources.to_json() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("weir config-dump: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut by_type: Map<String, Value> = Map::new();
    for key in ["clusters", "endpoints", "listeners", "routes"] {
        by_type.insert(key.into(), Value::Array(Vec::new()));
    }
    for (type_url, _, json) in rendered.into_iter().filter(|(t, _, _)| args.kind.wants(t)) {
        if let Some(Value::Array(list)) = by_type.get_mut(Kind::key(type_url)) {
            list.push(json);
        }
    }
    let out = match args.kind {
        Kind::All => Value::Object(by_type),
        one => by_type
            .into_iter()
            .find(|(k, _)| {
                one.wants(match k.as_str() {
                    "clusters" => CLUSTER_TYPE,
                    "listeners" => LISTENER_TYPE,
                    "routes" => ROUTE_TYPE,
                    _ => ENDPOINT_TYPE,
                })
            })
            .map_or(Value::Null, |(_, v)| v),
    };
    println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
    ExitCode::SUCCESS
}
