//! `weir config-dump`: the xDS resources one proxy would receive, as Envoy-style JSON.

use std::process::ExitCode;

use serde_json::{Map, Value};
use weir_model::Proxy;
use weir_xds::generator::{CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, ROUTE_TYPE};

use crate::load::{FolderArgs, load, warn_rejected};

/// Which resources to print.
#[derive(Clone, Copy, clap::ValueEnum)]
enum Kind {
    Clusters,
    Listeners,
    Routes,
    Endpoints,
    All,
}

/// The output key of each type, in output order.
const KEYS: [(&str, &str); 4] = [
    (CLUSTER_TYPE, "clusters"),
    (ENDPOINT_TYPE, "endpoints"),
    (LISTENER_TYPE, "listeners"),
    (ROUTE_TYPE, "routes"),
];

impl Kind {
    /// The one type asked for; `None` for all.
    fn type_url(self) -> Option<&'static str> {
        match self {
            Kind::All => None,
            Kind::Clusters => Some(CLUSTER_TYPE),
            Kind::Listeners => Some(LISTENER_TYPE),
            Kind::Routes => Some(ROUTE_TYPE),
            Kind::Endpoints => Some(ENDPOINT_TYPE),
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
    warn_rejected(&args.config, &model);
    let (_, resources) = model.generate(&proxy);
    for problem in &resources.problems {
        eprintln!("weir config-dump: warning: {problem}");
    }
    // The proxy's own compiler, run before anything is pushed (gRPC clients are not Weir's
    // proxy, so their resources are not checked against it).
    if proxy.kind != weir_model::ProxyKind::Proxyless {
        for refusal in weir_proxy::resources::refusals(&resources) {
            eprintln!("weir config-dump: warning: Weir's proxy would refuse {refusal}");
        }
    }
    let rendered = match resources.to_json() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("weir config-dump: {e}");
            return ExitCode::FAILURE;
        }
    };
    let list_of = |type_url: &str| -> Value {
        Value::Array(
            rendered
                .iter()
                .filter(|(t, _, _)| *t == type_url)
                .map(|(_, _, json)| json.clone())
                .collect(),
        )
    };
    let out = match args.kind.type_url() {
        Some(one) => list_of(one),
        None => Value::Object(
            KEYS.iter()
                .map(|(t, key)| ((*key).to_string(), list_of(t)))
                .collect::<Map<_, _>>(),
        ),
    };
    println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
    ExitCode::SUCCESS
}
