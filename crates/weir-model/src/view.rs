//! The per-proxy view: for one proxy, the services it sees, the outbound policy in force, the
//! VirtualServices and DestinationRules that apply, and — for gateways — the Gateways that select
//! it (reference §4.2, Istio's `SidecarScope` and `PushContext`).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use weir_api::Resource;
use weir_api::host;
use weir_api::types::mesh::MeshDefaults;
use weir_api::types::networking::{Destination, DestinationRule, OutboundMode, Subset};
use weir_api::types::{Labels, OrEmpty};

use crate::registry::{RegistryKind, Service, ServiceRegistry};
use crate::store::{ConfigStore, ObjectKey, StoredObject};

/// The kind of proxy asking.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ProxyKind {
    /// A sidecar next to a workload.
    Sidecar,
    /// A gateway (Istio's "router").
    Router,
    /// A gRPC client configured by xDS without a proxy.
    Proxyless,
}

/// The proxy a view is computed for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Proxy {
    /// Sidecar, router or proxyless.
    pub kind: ProxyKind,
    /// Namespace of its workload.
    pub namespace: String,
    /// Name (pod or workload name).
    pub name: String,
    /// Labels of its workload.
    pub labels: Labels,
    /// Its IP addresses.
    pub ips: Vec<IpAddr>,
    /// Where it runs, `region/zone/subzone` (locality-aware load balancing).
    pub locality: Option<String>,
}

/// The locality a workload's labels give: `istio-locality` (`region.zone.subzone`), else the
/// Kubernetes topology labels (`topology.kubernetes.io/region`, `…/zone`,
/// `topology.istio.io/subzone`).
pub fn locality_from_labels(labels: &Labels) -> Option<String> {
    if let Some(l) = labels.get("istio-locality").filter(|l| !l.is_empty()) {
        return Some(l.replace('.', "/"));
    }
    let region = labels.get("topology.kubernetes.io/region")?;
    let zone = labels
        .get("topology.kubernetes.io/zone")
        .map_or("", String::as_str);
    let subzone = labels.get("topology.istio.io/subzone").map_or("", String::as_str);
    Some(
        format!("{region}/{zone}/{subzone}")
            .trim_end_matches('/')
            .to_string(),
    )
}

/// A bad `KIND:NAMESPACE/NAME[:label=value,…]` proxy description.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "invalid proxy {given:?}: {reason}; expected KIND:NAMESPACE/NAME[:label=value,…] with KIND sidecar, router or proxyless"
)]
pub struct ProxyParseError {
    given: String,
    reason: &'static str,
}

impl Proxy {
    /// Parses `KIND:NAMESPACE/NAME[:label=value,…]`, e.g. `sidecar:bookinfo/reviews-v1:app=reviews,version=v1`.
    pub fn parse(text: &str) -> Result<Proxy, ProxyParseError> {
        let err = |reason| ProxyParseError {
            given: text.to_string(),
            reason,
        };
        let mut parts = text.splitn(3, ':');
        let kind = match parts.next().unwrap_or("") {
            "sidecar" => ProxyKind::Sidecar,
            "router" | "gateway" => ProxyKind::Router,
            "proxyless" | "grpc" => ProxyKind::Proxyless,
            _ => return Err(err("unknown kind")),
        };
        let (namespace, name) = parts
            .next()
            .and_then(|p| p.split_once('/'))
            .ok_or_else(|| err("missing NAMESPACE/NAME"))?;
        if namespace.is_empty() || name.is_empty() {
            return Err(err("empty namespace or name"));
        }
        let mut labels = Labels::new();
        for pair in parts.next().unwrap_or("").split(',').filter(|p| !p.is_empty()) {
            let (k, v) = pair
                .split_once('=')
                .ok_or_else(|| err("labels must be label=value"))?;
            labels.insert(k.to_string(), v.to_string());
        }
        Ok(Proxy {
            kind,
            namespace: namespace.into(),
            name: name.into(),
            locality: locality_from_labels(&labels),
            labels,
            ips: Vec::new(),
        })
    }
}

impl fmt::Display for Proxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            ProxyKind::Sidecar => "sidecar",
            ProxyKind::Router => "router",
            ProxyKind::Proxyless => "proxyless",
        };
        write!(f, "{kind}:{}/{}", self.namespace, self.name)
    }
}

/// Whether an object with `export_to` (empty: `defaults`) in namespace `own` is visible from `viewer`.
pub fn exported_to(export_to: &[String], defaults: &[String], own: &str, viewer: &str) -> bool {
    let list = if export_to.is_empty() { defaults } else { export_to };
    list.iter().any(|e| match e.as_str() {
        "*" => true,
        "." => own == viewer,
        "~" => false,
        ns => ns == viewer,
    })
}

/// One `namespace/host` entry of a Sidecar's egress hosts.
#[derive(Clone, Debug, PartialEq, Eq)]
struct EgressHost {
    namespace: String,
    host: String,
}

impl EgressHost {
    fn parse(entry: &str, proxy_namespace: &str) -> Option<EgressHost> {
        let (ns, host) = entry.split_once('/')?;
        let namespace = if ns == "." {
            proxy_namespace.to_string()
        } else {
            ns.to_string()
        };
        Some(EgressHost {
            namespace,
            host: host.to_string(),
        })
    }

    fn admits(&self, namespace: &str, hostname: &str) -> bool {
        let ns_ok = match self.namespace.as_str() {
            "*" => true,
            "~" => false,
            ns => ns == namespace,
        };
        ns_ok && (self.host == "*" || host::matches(&self.host, hostname))
    }
}

/// An applicable VirtualService, with its hosts as full names.
#[derive(Clone, Debug)]
pub struct BoundVirtualService {
    /// The object.
    pub key: ObjectKey,
    /// Its resource.
    pub resource: Arc<Resource>,
    /// Hosts with short names expanded in the VirtualService's namespace.
    pub hosts: Vec<String>,
    /// Gateways as `namespace/name` (and `mesh`).
    pub gateways: Vec<String>,
}

/// The DestinationRule that applies to one host: the rules of one namespace merged.
#[derive(Clone, Debug)]
pub struct AppliedDestinationRule {
    /// The host of the rule (expanded).
    pub host: String,
    /// The namespace the rules come from.
    pub namespace: String,
    /// The merged rule: subsets of all, traffic policy of the oldest.
    pub rule: DestinationRule,
    /// The rules merged, oldest first.
    pub sources: Vec<ObjectKey>,
}

impl AppliedDestinationRule {
    /// The subset called `name`.
    pub fn subset(&self, name: &str) -> Option<&Subset> {
        self.rule
            .subsets
            .or_empty()
            .iter()
            .find(|s| s.name.as_deref() == Some(name))
    }
}

/// What applies to one proxy.
#[derive(Clone, Debug)]
pub struct ProxyView {
    /// The proxy.
    pub proxy: Proxy,
    /// The Sidecar resource selecting it, if any.
    pub sidecar: Option<ObjectKey>,
    /// ALLOW_ANY or REGISTRY_ONLY.
    pub outbound_mode: OutboundMode,
    /// Where ALLOW_ANY traffic goes instead of the original destination (Sidecar `egressProxy`).
    pub egress_proxy: Option<Destination>,
    /// Visible services, one namespace per host name, ordered by host.
    pub services: Vec<Arc<Service>>,
    /// VirtualServices that apply, oldest first; a host claimed twice goes to the oldest.
    pub virtual_services: Vec<BoundVirtualService>,
    /// Delegate VirtualServices referenced by the ones that apply, by `namespace/name`.
    pub delegates: BTreeMap<String, BoundVirtualService>,
    /// The DestinationRule for each visible service host that has one.
    pub destination_rules: BTreeMap<String, AppliedDestinationRule>,
    /// Gateways selecting a router proxy.
    pub gateways: Vec<ObjectKey>,
}

/// Expands a VirtualService `gateways` entry to `namespace/name` (or `mesh`).
pub fn resolve_gateway(entry: &str, vs_namespace: &str) -> String {
    if entry == "mesh" || entry.contains('/') {
        return entry.to_string();
    }
    match entry.split_once('.') {
        // Legacy `name.namespace[.svc.cluster.local]`.
        Some((name, rest)) => format!("{}/{name}", rest.split('.').next().unwrap_or(vs_namespace)),
        None => format!("{vs_namespace}/{entry}"),
    }
}

fn selector_matches(selector: &Labels, labels: &Labels) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

fn oldest_first(mut objects: Vec<&StoredObject>) -> Vec<&StoredObject> {
    objects.sort_by(|a, b| (a.creation_time, &a.key).cmp(&(b.creation_time, &b.key)));
    objects
}

impl ProxyView {
    /// Computes the view of `proxy`.
    pub fn build(
        store: &ConfigStore,
        registry: &ServiceRegistry,
        mesh: &MeshDefaults,
        domain_suffix: &str,
        proxy: &Proxy,
    ) -> ProxyView {
        let sidecar = select_sidecar(store, proxy, &mesh.root_namespace);
        let sidecar_spec = sidecar.and_then(|s| match s.resource.as_ref() {
            Resource::Sidecar(o) => o.spec.clone(),
            _ => None,
        });
        let (outbound_mode, egress_proxy) = match sidecar_spec
            .as_ref()
            .and_then(|s| s.outbound_traffic_policy.as_ref())
        {
            Some(policy) => (policy.mode.unwrap_or_default(), policy.egress_proxy.clone()),
            None => (mesh.outbound_traffic_policy, None),
        };
        let egress: Option<Vec<EgressHost>> = sidecar_spec.as_ref().filter(|s| s.egress.is_some()).map(|s| {
            s.egress
                .or_empty()
                .iter()
                .flat_map(|l| l.hosts.or_empty())
                .filter_map(|h| EgressHost::parse(h, &proxy.namespace))
                .collect()
        });
        let admits = |ns: &str, hostname: &str| {
            egress
                .as_ref()
                .is_none_or(|e| e.iter().any(|h| h.admits(ns, hostname)))
        };

        let services = visible_services(registry, mesh, proxy, &admits);
        let gateways = if proxy.kind == ProxyKind::Router {
            selecting_gateways(store, proxy)
        } else {
            Vec::new()
        };
        let gateway_names: BTreeSet<String> = gateways
            .iter()
            .map(|k| format!("{}/{}", k.namespace, k.name))
            .collect();
        let (virtual_services, delegates) =
            applicable_virtual_services(store, mesh, domain_suffix, proxy, &gateway_names, &admits);
        let rules = DestinationRules::new(store, domain_suffix);
        let destination_rules = services
            .iter()
            .filter_map(|s| {
                rules
                    .lookup(mesh, proxy, &s.hostname, &s.namespace)
                    .map(|dr| (s.hostname.clone(), dr))
            })
            .collect();
        ProxyView {
            proxy: proxy.clone(),
            sidecar: sidecar.map(|s| s.key.clone()),
            outbound_mode,
            egress_proxy,
            services,
            virtual_services,
            delegates,
            destination_rules,
            gateways,
        }
    }

    /// The visible service for a host.
    pub fn service(&self, hostname: &str) -> Option<&Arc<Service>> {
        // `services` is ordered by host name.
        let at = self.services.partition_point(|s| s.hostname.as_str() < hostname);
        self.services.get(at).filter(|s| s.hostname == hostname)
    }
}

/// The Sidecar that configures `proxy`: one in its namespace whose selector matches its labels
/// (the oldest, if several), else its namespace's selector-less one, else the root namespace's.
pub fn select_sidecar<'a>(
    store: &'a ConfigStore,
    proxy: &Proxy,
    root_namespace: &str,
) -> Option<&'a StoredObject> {
    let sidecars: Vec<&StoredObject> = store.of_kind("Sidecar").collect();
    let selector = |o: &StoredObject| match o.resource.as_ref() {
        Resource::Sidecar(s) => s
            .spec
            .as_ref()
            .and_then(|s| s.workload_selector.as_ref())
            .map(|w| w.labels.or_empty().clone()),
        _ => None,
    };
    let in_ns = |ns: &str| {
        oldest_first(
            sidecars
                .iter()
                .copied()
                .filter(|o| o.key.namespace == ns)
                .collect(),
        )
    };
    let own = in_ns(&proxy.namespace);
    own.iter()
        .copied()
        .find(|o| selector(o).is_some_and(|sel| !sel.is_empty() && selector_matches(&sel, &proxy.labels)))
        .or_else(|| own.iter().copied().find(|o| selector(o).is_none()))
        .or_else(|| in_ns(root_namespace).into_iter().find(|o| selector(o).is_none()))
}

/// Services exported to the proxy's namespace and admitted by its Sidecar, one namespace per
/// host: the proxy's own namespace wins, then a Kubernetes Service over a ServiceEntry, then the
/// oldest. Several services of the chosen namespace (several ServiceEntries) are all kept.
fn visible_services(
    registry: &ServiceRegistry,
    mesh: &MeshDefaults,
    proxy: &Proxy,
    admits: &dyn Fn(&str, &str) -> bool,
) -> Vec<Arc<Service>> {
    let mut by_host: BTreeMap<&str, Vec<&Arc<Service>>> = BTreeMap::new();
    for s in registry.services() {
        if exported_to(
            &s.export_to,
            &mesh.default_service_export_to,
            &s.namespace,
            &proxy.namespace,
        ) && admits(&s.namespace, &s.hostname)
        {
            by_host.entry(&s.hostname).or_default().push(s);
        }
    }
    let mut out = Vec::new();
    for candidates in by_host.into_values() {
        let rank = |s: &Service| {
            (
                s.namespace != proxy.namespace,
                s.registry != RegistryKind::Kubernetes,
                s.creation_time,
            )
        };
        let Some(winner) = candidates
            .iter()
            .min_by(|a, b| rank(a).cmp(&rank(b)).then_with(|| a.namespace.cmp(&b.namespace)))
        else {
            continue;
        };
        let ns = winner.namespace.clone();
        out.extend(candidates.into_iter().filter(|s| s.namespace == ns).cloned());
    }
    out
}

fn selecting_gateways(store: &ConfigStore, proxy: &Proxy) -> Vec<ObjectKey> {
    store
        .of_kind("Gateway")
        .filter(|o| match o.resource.as_ref() {
            Resource::Gateway(g) => {
                let selector = g
                    .spec
                    .as_ref()
                    .map(|s| s.selector.or_empty().clone())
                    .unwrap_or_default();
                selector_matches(&selector, &proxy.labels)
            }
            _ => false,
        })
        .map(|o| o.key.clone())
        .collect()
}

fn bind(o: &StoredObject, domain_suffix: &str) -> Option<BoundVirtualService> {
    let Resource::VirtualService(vs) = o.resource.as_ref() else {
        return None;
    };
    let spec = vs.spec.as_ref()?;
    Some(BoundVirtualService {
        key: o.key.clone(),
        resource: o.resource.clone(),
        hosts: spec
            .hosts
            .or_empty()
            .iter()
            .map(|h| host::resolve_short_name(h, &o.key.namespace, domain_suffix))
            .collect(),
        gateways: spec
            .gateways
            .or_empty()
            .iter()
            .map(|g| resolve_gateway(g, &o.key.namespace))
            .collect(),
    })
}

fn applicable_virtual_services(
    store: &ConfigStore,
    mesh: &MeshDefaults,
    domain_suffix: &str,
    proxy: &Proxy,
    gateways: &BTreeSet<String>,
    admits: &dyn Fn(&str, &str) -> bool,
) -> (Vec<BoundVirtualService>, BTreeMap<String, BoundVirtualService>) {
    let all: Vec<BoundVirtualService> = oldest_first(store.of_kind("VirtualService").collect())
        .into_iter()
        .filter_map(|o| bind(o, domain_suffix))
        .collect();
    let mut claimed: BTreeSet<String> = BTreeSet::new();
    let mut applied = Vec::new();
    for vs in all.iter().filter(|vs| !vs.hosts.is_empty()) {
        let Resource::VirtualService(obj) = vs.resource.as_ref() else {
            continue;
        };
        let export = obj
            .spec
            .as_ref()
            .map(|s| s.export_to.or_empty().to_vec())
            .unwrap_or_default();
        if !exported_to(
            &export,
            &mesh.default_virtual_service_export_to,
            &vs.key.namespace,
            &proxy.namespace,
        ) {
            continue;
        }
        let bound = match proxy.kind {
            ProxyKind::Router => vs.gateways.iter().any(|g| gateways.contains(g)),
            ProxyKind::Sidecar | ProxyKind::Proxyless => {
                (vs.gateways.is_empty() || vs.gateways.iter().any(|g| g == "mesh"))
                    && vs.hosts.iter().any(|h| admits(&vs.key.namespace, h))
            }
        };
        // A host already claimed by an older VirtualService stays with it (on gateways, Istio
        // merges; the xDS generator does that from this ordered list).
        let hosts: Vec<String> = vs
            .hosts
            .iter()
            .filter(|h| proxy.kind == ProxyKind::Router || !claimed.contains(*h))
            .cloned()
            .collect();
        if bound && !hosts.is_empty() {
            claimed.extend(hosts.iter().cloned());
            applied.push(BoundVirtualService { hosts, ..vs.clone() });
        }
    }
    let mut delegates = BTreeMap::new();
    for vs in &applied {
        let Resource::VirtualService(obj) = vs.resource.as_ref() else {
            continue;
        };
        for route in obj.spec.as_ref().map(|s| s.http.or_empty()).unwrap_or_default() {
            let Some(d) = &route.delegate else { continue };
            let ns = d
                .namespace
                .clone()
                .filter(|n| !n.is_empty())
                .unwrap_or_else(|| vs.key.namespace.clone());
            let name = d.name.clone().unwrap_or_default();
            if let Some(found) = all
                .iter()
                .find(|c| c.key.namespace == ns && c.key.name == name && c.hosts.is_empty())
            {
                delegates.insert(format!("{ns}/{name}"), found.clone());
            }
        }
    }
    (applied, delegates)
}

fn dr_spec(o: &StoredObject) -> Option<&DestinationRule> {
    match o.resource.as_ref() {
        Resource::DestinationRule(dr) => dr.spec.as_ref(),
        _ => None,
    }
}

/// One DestinationRule with its host expanded in its namespace.
pub type ExpandedRule<'a> = (&'a StoredObject, &'a DestinationRule, String);

/// Every DestinationRule of the store with its host expanded (`reviews` →
/// `reviews.<ns>.svc.<domain>`), in key order.
pub fn expanded_destination_rules<'a>(
    store: &'a ConfigStore,
    domain_suffix: &'a str,
) -> impl Iterator<Item = ExpandedRule<'a>> + 'a {
    store.of_kind("DestinationRule").filter_map(move |o| {
        let spec = dr_spec(o)?;
        let fqdn = host::resolve_short_name(
            spec.host.as_deref().unwrap_or(""),
            &o.key.namespace,
            domain_suffix,
        );
        Some((o, spec, fqdn))
    })
}

/// The DestinationRules of the store, oldest first and grouped by namespace, with hosts
/// expanded: built once per view, so that looking up every visible host does not sort and
/// expand every rule again.
pub struct DestinationRules<'a> {
    by_namespace: BTreeMap<&'a str, Vec<ExpandedRule<'a>>>,
}

impl<'a> DestinationRules<'a> {
    /// Indexes the rules of `store`.
    pub fn new(store: &'a ConfigStore, domain_suffix: &'a str) -> Self {
        let mut by_namespace: BTreeMap<&'a str, Vec<ExpandedRule<'a>>> = BTreeMap::new();
        for rule in expanded_destination_rules(store, domain_suffix) {
            by_namespace
                .entry(rule.0.key.namespace.as_str())
                .or_default()
                .push(rule);
        }
        for rules in by_namespace.values_mut() {
            rules.sort_by(|(a, _, _), (b, _, _)| (a.creation_time, &a.key).cmp(&(b.creation_time, &b.key)));
        }
        DestinationRules { by_namespace }
    }

    /// The DestinationRule for `hostname` as seen from `proxy`: looked up in the proxy's
    /// namespace, then the service's, then the root namespace; in the first that has a matching
    /// rule, the rules for the most specific matching host are merged (oldest first). Rules with a
    /// workload selector apply only to the workloads they select in their own namespace, and take
    /// precedence there.
    pub fn lookup(
        &self,
        mesh: &MeshDefaults,
        proxy: &Proxy,
        hostname: &str,
        service_namespace: &str,
    ) -> Option<AppliedDestinationRule> {
        for ns in [
            proxy.namespace.as_str(),
            service_namespace,
            mesh.root_namespace.as_str(),
        ] {
            let Some(rules) = self.by_namespace.get(ns) else {
                continue;
            };
            let candidates: Vec<(&StoredObject, &String, bool)> = rules
                .iter()
                .filter_map(|(o, spec, rule_host)| {
                    let exported = exported_to(
                        spec.export_to.or_empty(),
                        &mesh.default_destination_rule_export_to,
                        ns,
                        &proxy.namespace,
                    );
                    let selected = match &spec.workload_selector {
                        Some(sel) => {
                            ns == proxy.namespace
                                && selector_matches(sel.match_labels.or_empty(), &proxy.labels)
                        }
                        None => true,
                    };
                    (exported && selected && host::subset_of(hostname, rule_host)).then_some((
                        *o,
                        rule_host,
                        spec.workload_selector.is_some(),
                    ))
                })
                .collect();
            // The most specific host: exact beats wildcard, longer wildcard beats shorter.
            let Some(best) = candidates
                .iter()
                .map(|(_, h, _)| *h)
                .max_by_key(|h| (!host::is_wildcard(h), h.len()))
            else {
                continue;
            };
            let mut chosen: Vec<&(&StoredObject, &String, bool)> =
                candidates.iter().filter(|(_, h, _)| *h == best).collect();
            if chosen.iter().any(|(_, _, selected)| *selected) {
                chosen.retain(|(_, _, selected)| *selected);
            }
            return Some(merge_rules(
                best,
                ns,
                &chosen.iter().map(|(o, _, _)| *o).collect::<Vec<_>>(),
            ));
        }
        None
    }
}

/// Istio's `mergeDestinationRule`: subsets of every rule (first wins a name), the traffic policy
/// and exportTo of the oldest.
fn merge_rules(host: &str, namespace: &str, rules: &[&StoredObject]) -> AppliedDestinationRule {
    let mut merged: Option<DestinationRule> = None;
    for o in rules {
        let Some(spec) = dr_spec(o) else { continue };
        match merged.as_mut() {
            None => merged = Some(spec.clone()),
            Some(m) => {
                let subsets = m.subsets.get_or_insert_with(Vec::new);
                for s in spec.subsets.or_empty() {
                    if !subsets.iter().any(|e| e.name == s.name) {
                        subsets.push(s.clone());
                    }
                }
                if m.traffic_policy.is_none() {
                    m.traffic_policy = spec.traffic_policy.clone();
                }
            }
        }
    }
    AppliedDestinationRule {
        host: host.to_string(),
        namespace: namespace.to_string(),
        rule: merged.unwrap_or_default(),
        sources: rules.iter().map(|o| o.key.clone()).collect(),
    }
}
