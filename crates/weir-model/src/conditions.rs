//! Status conditions: where Istio's behaviour is undefined or silent, Weir applies one
//! deterministic rule and says so on the resource that lost.
//!
//! | situation | rule | condition on the loser |
//! |---|---|---|
//! | the same host from several namespaces or registries | a Kubernetes Service beats a ServiceEntry, then the oldest wins (proxies in a loser's own namespace still see it) | `Conflicted` |
//! | two TCP services on one port without distinct addresses | the oldest keeps the port | `Conflicted` |
//! | two mesh-bound VirtualServices for one host | the oldest keeps the host (IST0109) | `Conflicted` |
//! | two DestinationRules for one host in one namespace | merged: subsets of both, traffic policy of the oldest; a repeated subset name or a second traffic policy is ignored | `Conflicted` |
//! | a route to a host nothing defines, or to an undefined subset | — (IST0101) | `ResolvedRefs=False` |
//! | a Gateway whose selector matches no Pod or WorkloadEntry | — (IST0101) | `ResolvedRefs=False` |
//!
//! Every stored resource also carries `Accepted=True`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use weir_api::Resource;
use weir_api::host;
use weir_api::types::OrEmpty;
use weir_api::types::mesh::MeshDefaults;
use weir_api::types::networking::DestinationRule;

use crate::registry::workload::workloads;
use crate::registry::{RegistryKind, Service, ServiceRegistry};
use crate::store::{ConfigStore, ObjectKey, StoredObject};
use crate::view::{expanded_destination_rules, resolve_gateway};

/// The type of a condition.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ConditionType {
    /// The resource was read and validated.
    Accepted,
    /// Everything it refers to exists.
    ResolvedRefs,
    /// Part of it lost to another resource under a documented rule.
    Conflicted,
}

impl fmt::Display for ConditionType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ConditionType::Accepted => "Accepted",
            ConditionType::ResolvedRefs => "ResolvedRefs",
            ConditionType::Conflicted => "Conflicted",
        })
    }
}

/// One status condition.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Condition {
    /// Type.
    pub kind: ConditionType,
    /// True or false.
    pub status: bool,
    /// A CamelCase reason.
    pub reason: String,
    /// What happened, naming the winner and the rule.
    pub message: String,
    /// Istio's analysis code, where one exists (`IST0109`).
    pub code: Option<&'static str>,
}

impl fmt::Display for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}={} ({}): {}",
            self.kind,
            if self.status { "True" } else { "False" },
            self.reason,
            self.message
        )?;
        if let Some(code) = self.code {
            write!(f, " [{code}]")?;
        }
        Ok(())
    }
}

/// Conditions of every stored resource.
pub type Conditions = BTreeMap<ObjectKey, Vec<Condition>>;

fn add(
    out: &mut Conditions,
    key: &ObjectKey,
    kind: ConditionType,
    status: bool,
    reason: &str,
    message: String,
    code: Option<&'static str>,
) {
    let list = out.entry(key.clone()).or_default();
    let c = Condition {
        kind,
        status,
        reason: reason.into(),
        message,
        code,
    };
    if !list.contains(&c) {
        list.push(c);
    }
}

/// Computes the conditions of every resource of the store.
pub fn compute(
    store: &ConfigStore,
    registry: &ServiceRegistry,
    mesh: &MeshDefaults,
    domain_suffix: &str,
) -> Conditions {
    let mut out = Conditions::new();
    for o in store.objects() {
        add(
            &mut out,
            &o.key,
            ConditionType::Accepted,
            true,
            "Accepted",
            "the resource is valid".into(),
            None,
        );
    }
    duplicate_hosts(registry, &mut out);
    tcp_port_collisions(registry, &mut out);
    virtual_service_hosts(store, mesh, domain_suffix, &mut out);
    destination_rule_overlaps(store, domain_suffix, &mut out);
    dangling_references(store, registry, domain_suffix, &mut out);
    gateways_without_workloads(store, &mut out);
    for list in out.values_mut() {
        list.sort();
    }
    out
}

fn describe(o: &ObjectKey) -> String {
    o.to_string()
}

/// The global winner for a host: a Kubernetes Service over a ServiceEntry, then the oldest.
fn host_winner<'a>(candidates: &[&'a Service]) -> Option<&'a Service> {
    candidates.iter().copied().min_by(|a, b| {
        (a.registry != RegistryKind::Kubernetes, a.creation_time, &a.origin).cmp(&(
            b.registry != RegistryKind::Kubernetes,
            b.creation_time,
            &b.origin,
        ))
    })
}

fn duplicate_hosts(registry: &ServiceRegistry, out: &mut Conditions) {
    let mut by_host: BTreeMap<&str, Vec<&Service>> = BTreeMap::new();
    for s in registry.services() {
        by_host.entry(&s.hostname).or_default().push(s);
    }
    for (hostname, candidates) in by_host {
        let namespaces: BTreeSet<&str> = candidates.iter().map(|s| s.namespace.as_str()).collect();
        if namespaces.len() < 2 {
            continue;
        }
        let Some(winner) = host_winner(&candidates) else {
            continue;
        };
        for s in candidates.iter().filter(|s| s.namespace != winner.namespace) {
            let rule =
                if winner.registry == RegistryKind::Kubernetes && s.registry != RegistryKind::Kubernetes {
                    "a Kubernetes Service beats a ServiceEntry"
                } else {
                    "the oldest definition wins"
                };
            add(
                out,
                &s.origin,
                ConditionType::Conflicted,
                true,
                "DuplicateHost",
                format!(
                    "host {hostname} is also defined by {}, which wins ({rule}); only proxies in namespace {} use this definition",
                    describe(&winner.origin),
                    s.namespace
                ),
                None,
            );
        }
    }
}

fn tcp_port_collisions(registry: &ServiceRegistry, out: &mut Conditions) {
    // Services listening on 0.0.0.0: no address of their own and none allocated.
    let mut claims: BTreeMap<u32, Vec<(&Service, &str)>> = BTreeMap::new();
    for s in registry.services() {
        if s.address.is_some() || s.auto_address.is_some() {
            continue;
        }
        for p in s.ports.iter().filter(|p| p.protocol.is_tcp()) {
            claims.entry(p.number).or_default().push((s, &p.name));
        }
    }
    for (port, mut claimants) in claims {
        claimants.sort_by(|(a, _), (b, _)| (a.creation_time, &a.origin).cmp(&(b.creation_time, &b.origin)));
        let Some((winner, _)) = claimants.first().copied() else {
            continue;
        };
        for (s, _) in claimants
            .iter()
            .skip(1)
            .filter(|(s, _)| s.hostname != winner.hostname)
        {
            add(
                out,
                &s.origin,
                ConditionType::Conflicted,
                true,
                "TcpPortConflict",
                format!(
                    "TCP port {port} of {} has no address of its own, and {} ({}) already claims that port on every address; the oldest keeps it. Give this service `addresses`, or use an HTTP/TLS protocol",
                    s.hostname,
                    winner.hostname,
                    describe(&winner.origin)
                ),
                None,
            );
        }
    }
}

fn vs_objects(store: &ConfigStore) -> Vec<&StoredObject> {
    let mut list: Vec<&StoredObject> = store.of_kind("VirtualService").collect();
    list.sort_by(|a, b| (a.creation_time, &a.key).cmp(&(b.creation_time, &b.key)));
    list
}

fn virtual_service_hosts(
    store: &ConfigStore,
    mesh: &MeshDefaults,
    domain_suffix: &str,
    out: &mut Conditions,
) {
    // Mesh-bound VirtualServices, grouped by (namespaces they are exported to, host): Istio's
    // ConflictingMeshGatewayHostsAnalyzer.
    let mut owners: BTreeMap<String, &StoredObject> = BTreeMap::new();
    for o in vs_objects(store) {
        let Resource::VirtualService(vs) = o.resource.as_ref() else {
            continue;
        };
        let Some(spec) = &vs.spec else { continue };
        let gateways = spec.gateways.or_empty();
        if !(gateways.is_empty() || gateways.iter().any(|g| g == "mesh")) {
            continue;
        }
        let export = spec.export_to.or_empty();
        let export = if export.is_empty() {
            mesh.default_virtual_service_export_to.as_slice()
        } else {
            export
        };
        let scope = if export.iter().any(|e| e == "*") {
            "*".to_string()
        } else {
            o.key.namespace.clone()
        };
        for h in spec.hosts.or_empty() {
            let fqdn = host::resolve_short_name(h, &o.key.namespace, domain_suffix);
            match owners
                .get(&format!("{scope} {fqdn}"))
                .or_else(|| owners.get(&format!("* {fqdn}")))
            {
                Some(winner) => add(
                    out,
                    &o.key,
                    ConditionType::Conflicted,
                    true,
                    "DuplicateVirtualServiceHost",
                    format!(
                        "host {fqdn} is also routed by {}, which is older and keeps it; this VirtualService's rules for it are not used",
                        describe(&winner.key)
                    ),
                    Some("IST0109"),
                ),
                None => {
                    owners.insert(format!("{scope} {fqdn}"), o);
                }
            }
        }
    }
}

fn destination_rule_overlaps(store: &ConfigStore, domain_suffix: &str, out: &mut Conditions) {
    let mut rules: Vec<(&StoredObject, &DestinationRule, String)> =
        expanded_destination_rules(store, domain_suffix).collect();
    rules.sort_by(|(a, _, _), (b, _, _)| (a.creation_time, &a.key).cmp(&(b.creation_time, &b.key)));
    let mut seen: BTreeMap<(String, String, String), FirstRule<'_>> = BTreeMap::new();
    for (o, spec, fqdn) in rules {
        let selector = spec
            .workload_selector
            .as_ref()
            .map(|s| format!("{:?}", s.match_labels.or_empty()))
            .unwrap_or_default();
        let subsets: BTreeSet<String> = spec
            .subsets
            .or_empty()
            .iter()
            .filter_map(|s| s.name.clone())
            .collect();
        let key = (o.key.namespace.clone(), fqdn.clone(), selector);
        let Some(first) = seen.get_mut(&key) else {
            seen.insert(
                key,
                FirstRule {
                    rule: o,
                    has_policy: spec.traffic_policy.is_some(),
                    subsets,
                },
            );
            continue;
        };
        let mut ignored = Vec::new();
        if first.has_policy && spec.traffic_policy.is_some() {
            ignored.push("its trafficPolicy".to_string());
        }
        let repeated: Vec<String> = subsets.intersection(&first.subsets).cloned().collect();
        if !repeated.is_empty() {
            ignored.push(format!("subsets {}", repeated.join(", ")));
        }
        let message = if ignored.is_empty() {
            format!(
                "merged with {} (same host {fqdn}, same namespace)",
                describe(&first.rule.key)
            )
        } else {
            format!(
                "merged with the older {} for host {fqdn}; {} of this rule are ignored (the oldest rule wins)",
                describe(&first.rule.key),
                ignored.join(" and ")
            )
        };
        add(
            out,
            &o.key,
            ConditionType::Conflicted,
            !ignored.is_empty(),
            "MergedDestinationRule",
            message,
            None,
        );
        first.has_policy |= spec.traffic_policy.is_some();
        first.subsets.extend(subsets);
    }
}

/// The oldest DestinationRule for a (namespace, host, selector), and what the rules so far set.
struct FirstRule<'a> {
    rule: &'a StoredObject,
    has_policy: bool,
    subsets: BTreeSet<String>,
}

fn dangling_references(
    store: &ConfigStore,
    registry: &ServiceRegistry,
    domain_suffix: &str,
    out: &mut Conditions,
) {
    // Subsets defined per host (by any DestinationRule).
    let mut subsets: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (_, spec, fqdn) in expanded_destination_rules(store, domain_suffix) {
        subsets
            .entry(fqdn)
            .or_default()
            .extend(spec.subsets.or_empty().iter().filter_map(|s| s.name.clone()));
    }
    let known_host = |h: &str| registry.services().any(|s| host::subset_of(h, &s.hostname));
    let subset_defined = |h: &str, subset: &str| {
        subsets
            .iter()
            .any(|(rule_host, names)| host::subset_of(h, rule_host) && names.contains(subset))
    };
    for o in store.of_kind("VirtualService") {
        let Resource::VirtualService(vs) = o.resource.as_ref() else {
            continue;
        };
        let Some(spec) = &vs.spec else { continue };
        let mut missing_hosts: BTreeSet<String> = BTreeSet::new();
        let mut missing_subsets: BTreeSet<String> = BTreeSet::new();
        let mut check = |d: &weir_api::types::networking::Destination| {
            let h =
                host::resolve_short_name(d.host.as_deref().unwrap_or(""), &o.key.namespace, domain_suffix);
            if !known_host(&h) {
                missing_hosts.insert(h.clone());
            }
            if let Some(subset) = d.subset.as_deref().filter(|s| !s.is_empty())
                && !subset_defined(&h, subset)
            {
                missing_subsets.insert(format!("{h}+{subset}"));
            }
        };
        for r in spec.http.or_empty() {
            r.route
                .or_empty()
                .iter()
                .filter_map(|d| d.destination.as_ref())
                .for_each(&mut check);
            r.mirror.iter().for_each(&mut check);
            r.mirrors
                .or_empty()
                .iter()
                .filter_map(|m| m.destination.as_ref())
                .for_each(&mut check);
        }
        for d in spec
            .tcp
            .or_empty()
            .iter()
            .flat_map(|r| r.route.or_empty())
            .chain(spec.tls.or_empty().iter().flat_map(|r| r.route.or_empty()))
        {
            if let Some(d) = &d.destination {
                check(d);
            }
        }
        for h in missing_hosts {
            add(
                out,
                &o.key,
                ConditionType::ResolvedRefs,
                false,
                "HostNotFound",
                format!("Referenced host not found: {h:?}"),
                Some("IST0101"),
            );
        }
        for hs in missing_subsets {
            add(
                out,
                &o.key,
                ConditionType::ResolvedRefs,
                false,
                "SubsetNotFound",
                format!("Referenced host+subset in destinationrule not found: {hs:?}"),
                Some("IST0101"),
            );
        }
    }
    // Gateway references.
    let gateways: BTreeSet<String> = store
        .of_kind("Gateway")
        .map(|g| format!("{}/{}", g.key.namespace, g.key.name))
        .collect();
    for o in store.of_kind("VirtualService") {
        let Resource::VirtualService(vs) = o.resource.as_ref() else {
            continue;
        };
        for g in vs
            .spec
            .as_ref()
            .map(|s| s.gateways.or_empty())
            .unwrap_or_default()
        {
            let resolved = resolve_gateway(g, &o.key.namespace);
            if resolved != "mesh" && !gateways.contains(&resolved) {
                add(
                    out,
                    &o.key,
                    ConditionType::ResolvedRefs,
                    false,
                    "GatewayNotFound",
                    format!("Referenced gateway not found: {resolved:?}"),
                    Some("IST0101"),
                );
            }
        }
    }
}

fn gateways_without_workloads(store: &ConfigStore, out: &mut Conditions) {
    let all = workloads(store);
    for o in store.of_kind("Gateway") {
        let Resource::Gateway(gw) = o.resource.as_ref() else {
            continue;
        };
        let selector = gw
            .spec
            .as_ref()
            .map(|s| s.selector.or_empty().clone())
            .unwrap_or_default();
        if selector.is_empty() || all.iter().any(|w| w.matches(&selector)) {
            continue;
        }
        let labels: Vec<String> = selector.iter().map(|(k, v)| format!("{k}={v}")).collect();
        add(
            out,
            &o.key,
            ConditionType::ResolvedRefs,
            false,
            "NoMatchingWorkload",
            format!(
                "Referenced selector not found: {:?}: no Pod or WorkloadEntry has these labels (`weir run` starts a gateway proxy for it)",
                labels.join(",")
            ),
            Some("IST0101"),
        );
    }
}
