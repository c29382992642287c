//! `weir describe`: what Weir's model makes of a folder of configuration — services, endpoints,
//! allocated addresses, every resource's conditions — and, for one proxy, what applies to it.

use std::fmt::Write as _;
use std::process::ExitCode;

use serde_json::{Value, json};
use weir_model::conditions::{self, Condition, ConditionType, Conditions};
use weir_model::registry::{Endpoint, Service};
use weir_model::{ConfigStore, Proxy, ProxyView, ServiceRegistry};

use crate::load::{FolderArgs, load};
use crate::validate::Format;

/// `weir describe` arguments.
#[derive(clap::Args)]
pub struct Args {
    /// The configuration folder (searched recursively; `mesh.yaml` at its top is the MeshConfig).
    #[arg(short = 'f', long = "filename", value_name = "DIR")]
    folder: String,
    /// Show what applies to one proxy: KIND:NAMESPACE/NAME[:label=value,…], KIND one of
    /// sidecar, router (gateway), proxyless.
    #[arg(long, value_name = "PROXY")]
    proxy: Option<String>,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value = "text")]
    format: Format,
    #[command(flatten)]
    source: FolderArgs,
}

/// Runs the command.
pub fn run(args: &Args) -> ExitCode {
    let proxy = match args.proxy.as_deref().map(Proxy::parse).transpose() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("weir describe: {e}");
            return ExitCode::from(2);
        }
    };
    let model = match load(&args.folder, &args.source) {
        Ok((_, model)) => model,
        Err(e) => {
            eprintln!("weir describe: {e}");
            return ExitCode::from(2);
        }
    };
    let (store, registry, mesh) = (&model.store, &model.registry, &model.mesh);
    let options = &model.options;
    let conditions = conditions::compute(store, registry, mesh, &options.domain_suffix);
    let view = proxy.as_ref().map(|p| model.view(p));
    let out = match args.format {
        Format::Text => text(store, registry, &conditions, view.as_ref()),
        Format::Json => {
            let mut s = serde_json::to_string_pretty(&to_json(store, registry, &conditions, view.as_ref()))
                .unwrap_or_default();
            s.push('\n');
            s
        }
    };
    print!("{out}");
    if store.rejected().next().is_some() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

fn address(s: &Service) -> String {
    match (&s.address, s.auto_address) {
        (Some(a), _) => a.to_string(),
        (None, Some(ip)) => format!("{ip} (allocated)"),
        (None, None) => "-".into(),
    }
}

fn ports(s: &Service) -> String {
    s.ports
        .iter()
        .map(|p| format!("{}/{}:{}", p.number, p.protocol, p.name))
        .collect::<Vec<_>>()
        .join(" ")
}

fn endpoint_line(e: &Endpoint) -> String {
    let mut line = format!("{}:{}", e.address, e.port);
    if !e.healthy {
        line.push_str(" (unhealthy)");
    }
    if let Some(l) = &e.locality {
        let _ = write!(line, " locality={l}");
    }
    if let Some(w) = &e.workload {
        let _ = write!(line, " <- {w}");
    }
    line
}

fn condition_is_news(c: &Condition) -> bool {
    !(c.kind == ConditionType::Accepted && c.status)
}

fn text(
    store: &ConfigStore,
    registry: &ServiceRegistry,
    conditions: &Conditions,
    view: Option<&ProxyView>,
) -> String {
    let mut out = String::new();
    let mesh_from = store
        .mesh_origin()
        .map_or("Istio's defaults".to_string(), |o| o.file.display().to_string());
    let _ = writeln!(out, "MeshConfig: {mesh_from}");
    let _ = writeln!(out, "\nServices ({}):", registry.len());
    for s in registry.services() {
        let _ = writeln!(
            out,
            "  {}/{}  {:?}  {}  {}  from {}",
            s.namespace,
            s.hostname,
            s.resolution,
            address(s),
            ports(s),
            s.origin
        );
        let key = s.key();
        for e in registry.endpoints(&key) {
            let port = if s.ports.len() > 1 {
                format!("  [{}]", e.service_port)
            } else {
                String::new()
            };
            let _ = writeln!(out, "      {}{port}", endpoint_line(e));
        }
    }
    let news: Vec<_> = conditions
        .iter()
        .flat_map(|(k, list)| list.iter().filter(|c| condition_is_news(c)).map(move |c| (k, c)))
        .collect();
    let _ = writeln!(
        out,
        "\nConditions ({} resources accepted, {} other conditions):",
        conditions.len(),
        news.len()
    );
    for (key, c) in news {
        let origin = store.get(key).map(|o| o.origin.to_string()).unwrap_or_default();
        let _ = writeln!(out, "  {key} ({origin}): {c}");
    }
    let rejected: Vec<_> = store.rejected().collect();
    if !rejected.is_empty() {
        let _ = writeln!(out, "\nRejected ({}):", rejected.len());
        for r in rejected {
            for f in &r.findings {
                let pos = f.pos.map_or(r.origin.line.to_string(), |p| p.to_string());
                let _ = writeln!(
                    out,
                    "  {}:{pos}: {}: {}",
                    r.origin.file.display(),
                    r.subject,
                    f.text()
                );
            }
        }
    }
    for d in store.duplicates() {
        let _ = writeln!(
            out,
            "\n{} is defined again at {}; the definition at {} is used",
            d.key, d.ignored, d.active
        );
    }
    if let Some(v) = view {
        out.push_str(&view_text(v));
    }
    out
}

fn view_text(v: &ProxyView) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "\nProxy {}:", v.proxy);
    let _ = writeln!(
        out,
        "  Sidecar: {}",
        v.sidecar
            .as_ref()
            .map_or("none (every exported service is visible)".into(), |k| k
                .to_string())
    );
    let _ = writeln!(out, "  Outbound traffic policy: {}", v.outbound_mode);
    if !v.gateways.is_empty() {
        let _ = writeln!(
            out,
            "  Gateways: {}",
            v.gateways
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let _ = writeln!(out, "  Services ({}):", v.services.len());
    for s in &v.services {
        let dr = v.destination_rules.get(&s.hostname).map(|d| {
            let names: Vec<String> = d
                .sources
                .iter()
                .map(|k| format!("{}/{}", k.namespace, k.name))
                .collect();
            format!("  DestinationRule {}", names.join(" + "))
        });
        let _ = writeln!(
            out,
            "    {}/{}{}",
            s.namespace,
            s.hostname,
            dr.unwrap_or_default()
        );
    }
    let _ = writeln!(out, "  VirtualServices ({}):", v.virtual_services.len());
    for vs in &v.virtual_services {
        let _ = writeln!(out, "    {} hosts: {}", vs.key, vs.hosts.join(", "));
    }
    for (name, d) in &v.delegates {
        let _ = writeln!(out, "    delegate {name} ({})", d.key);
    }
    out
}

fn conditions_json(list: &[Condition]) -> Vec<Value> {
    list.iter()
        .map(|c| {
            json!({
                "type": c.kind.to_string(),
                "status": if c.status { "True" } else { "False" },
                "reason": c.reason,
                "message": c.message,
                "code": c.code,
            })
        })
        .collect()
}

fn to_json(
    store: &ConfigStore,
    registry: &ServiceRegistry,
    conditions: &Conditions,
    view: Option<&ProxyView>,
) -> Value {
    let services: Vec<Value> = registry.services()
        .map(|s| {
            json!({
                "hostname": s.hostname,
                "namespace": s.namespace,
                "registry": format!("{:?}", s.registry),
                "origin": s.origin.to_string(),
                "address": s.address.as_ref().map(ToString::to_string),
                "allocatedAddress": s.auto_address.map(|ip| ip.to_string()),
                "resolution": format!("{:?}", s.resolution),
                "meshExternal": s.mesh_external,
                "exportTo": s.export_to,
                "ports": s.ports.iter().map(|p| json!({"name": p.name, "number": p.number, "protocol": p.protocol.as_str(), "targetPort": p.target_port})).collect::<Vec<_>>(),
                "endpoints": registry.endpoints(&s.key()).iter().map(|e| json!({
                    "address": e.address.to_string(),
                    "port": e.port,
                    "servicePort": e.service_port,
                    "healthy": e.healthy,
                    "locality": e.locality,
                    "labels": e.labels,
                    "workload": e.workload.as_ref().map(ToString::to_string),
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    let resources: Vec<Value> = conditions
        .iter()
        .map(|(key, list)| {
            json!({
                "kind": key.kind, "namespace": key.namespace, "name": key.name,
                "origin": store.get(key).map(|o| o.origin.to_string()),
                "conditions": conditions_json(list),
            })
        })
        .collect();
    let rejected: Vec<Value> = store
        .rejected()
        .map(|r| json!({"file": r.origin.file.display().to_string(), "line": r.origin.line, "subject": r.subject, "errors": r.findings.iter().map(|f| f.text()).collect::<Vec<_>>()}))
        .collect();
    let mut doc = json!({
        "meshConfig": store.mesh_origin().map(|o| o.file.display().to_string()),
        "services": services,
        "resources": resources,
        "rejected": rejected,
        "duplicates": store.duplicates().iter().map(|d| json!({"object": d.key.to_string(), "used": d.active.to_string(), "ignored": d.ignored.to_string()})).collect::<Vec<_>>(),
    });
    if let Some(v) = view {
        doc["proxy"] = json!({
            "proxy": v.proxy.to_string(),
            "sidecar": v.sidecar.as_ref().map(ToString::to_string),
            "outboundTrafficPolicy": v.outbound_mode.as_str(),
            "gateways": v.gateways.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "services": v.services.iter().map(|s| format!("{}/{}", s.namespace, s.hostname)).collect::<Vec<_>>(),
            "virtualServices": v.virtual_services.iter().map(|vs| json!({"name": vs.key.to_string(), "hosts": vs.hosts, "gateways": vs.gateways})).collect::<Vec<_>>(),
            "delegates": v.delegates.iter().map(|(k, d)| json!({"ref": k, "name": d.key.to_string()})).collect::<Vec<_>>(),
            "destinationRules": v.destination_rules.iter().map(|(h, d)| json!({"host": h, "namespace": d.namespace, "sources": d.sources.iter().map(ToString::to_string).collect::<Vec<_>>()})).collect::<Vec<_>>(),
        });
    }
    doc
}
