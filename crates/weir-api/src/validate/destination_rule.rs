//! DestinationRule: CRD rules (§1.4) and `ValidateDestinationRule` (validation.go:635).

use super::Meta;
use super::common::{self, ExportKind};
use crate::diag::Report;
use crate::path::Path;
use crate::types::OrEmpty;
use crate::types::networking::{
    ClientTlsMode, ClientTlsSettings, ConnectionPoolSettings, DestinationRule, H2UpgradePolicy,
    LoadBalancerSettings, LocalityLbSetting, OutlierDetection, TrafficPolicy,
};

/// CRD rules.
pub fn schema(r: &mut Report, spec: &Path<'_>, dr: &DestinationRule, _meta: &Meta<'_>) {
    if dr.host.is_none() {
        r.required(&spec.key("host"));
    }
    if let Some(sel) = &dr.workload_selector {
        common::match_labels_schema(r, &spec.key("workloadSelector"), sel);
    }
    if let Some(tp) = &dr.traffic_policy {
        traffic_policy_schema(r, &spec.key("trafficPolicy"), tp);
    }
    let sp = spec.key("subsets");
    for (i, s) in dr.subsets.or_empty().iter().enumerate() {
        let p = sp.index(i);
        if s.name.is_none() {
            r.required(&p.key("name"));
        }
        if let Some(tp) = &s.traffic_policy {
            traffic_policy_schema(r, &p.key("trafficPolicy"), tp);
        }
    }
}

fn traffic_policy_schema(r: &mut Report, p: &Path<'_>, tp: &TrafficPolicy) {
    if let Some(lb) = &tp.load_balancer {
        lb_schema(r, &p.key("loadBalancer"), lb);
    }
    if let Some(cp) = &tp.connection_pool {
        pool_schema(r, &p.key("connectionPool"), cp);
    }
    if let Some(od) = &tp.outlier_detection {
        let op = p.key("outlierDetection");
        for (field, d) in [
            ("interval", &od.interval),
            ("baseEjectionTime", &od.base_ejection_time),
        ] {
            if let Some(d) = d {
                common::duration_schema(r, &op.key(field), d);
            }
        }
        let cp = op.key("outlierDetectionHttpErrorCodes");
        for (i, code) in od
            .outlier_detection_http_error_codes
            .or_empty()
            .iter()
            .enumerate()
        {
            if !(100..=599).contains(code) {
                r.invalid(
                    &cp.index(i),
                    code,
                    "must be a valid HTTP status code between 100 and 599",
                );
            }
        }
    }
    if let Some(tunnel) = &tp.tunnel {
        let tp_path = p.key("tunnel");
        if tunnel.target_host.is_none() {
            r.required(&tp_path.key("targetHost"));
        }
        if tunnel.target_port.is_none() {
            r.required(&tp_path.key("targetPort"));
        }
    }
    if let Some(budget) = &tp.retry_budget {
        let bp = p.key("retryBudget");
        if let Some(pct) = budget.percent
            && !(0.0..=100.0).contains(&pct)
        {
            r.invalid(&bp.key("percent"), pct, "must be between 0 and 100");
        }
        if let Some(d) = &budget.budget_interval {
            common::duration_schema_any(r, &bp.key("budgetInterval"), d);
        }
    }
    let pp = p.key("portLevelSettings");
    let ports = tp.port_level_settings.or_empty();
    if ports.len() > 4096 {
        r.body(&pp, "should have at most 4096 items");
    }
    for (i, pl) in ports.iter().enumerate() {
        let ip = pp.index(i);
        if let Some(lb) = &pl.load_balancer {
            lb_schema(r, &ip.key("loadBalancer"), lb);
        }
        if let Some(cp) = &pl.connection_pool {
            pool_schema(r, &ip.key("connectionPool"), cp);
        }
    }
}

fn lb_schema(r: &mut Report, p: &Path<'_>, lb: &LoadBalancerSettings) {
    let policies = [
        lb.simple.is_some(),
        lb.consistent_hash.is_some(),
        lb.backend_utilization.is_some(),
    ];
    if policies.iter().filter(|b| **b).count() > 1 {
        r.invalid(
            p,
            "\"object\"",
            "only one of simple, consistentHash or backendUtilization can be set",
        );
    }
    if lb.warmup_duration_secs.is_some() && lb.warmup.is_some() {
        r.invalid(
            p,
            "\"object\"",
            "only one of warmupDurationSecs or warmup can be set",
        );
    }
    if let Some(d) = &lb.warmup_duration_secs {
        common::duration_schema(r, &p.key("warmupDurationSecs"), d);
    }
    if let Some(w) = &lb.warmup {
        let wp = p.key("warmup");
        match &w.duration {
            None => r.required(&wp.key("duration")),
            Some(d) => common::duration_schema(r, &wp.key("duration"), d),
        }
        if let Some(min) = w.minimum_percent
            && !(0.0..=100.0).contains(&min)
        {
            r.invalid(&wp.key("minimumPercent"), min, "must be between 0 and 100");
        }
        if let Some(a) = w.aggression
            && a < 1.0
        {
            r.invalid(&wp.key("aggression"), a, "must be greater than or equal to 1");
        }
    }
    if let Some(ch) = &lb.consistent_hash {
        let cp = p.key("consistentHash");
        let keys = [
            ch.http_header_name.is_some(),
            ch.http_cookie.is_some(),
            ch.use_source_ip.is_some(),
            ch.http_query_parameter_name.is_some(),
        ];
        if keys.iter().filter(|b| **b).count() > 1 {
            r.invalid(
                &cp,
                "\"object\"",
                "only one of httpHeaderName, httpCookie, useSourceIp or httpQueryParameterName can be set",
            );
        }
        if ch.ring_hash.is_some() && ch.maglev.is_some() {
            r.invalid(&cp, "\"object\"", "only one of ringHash or maglev can be set");
        }
        if let Some(cookie) = &ch.http_cookie {
            let kp = cp.key("httpCookie");
            if cookie.name.is_none() {
                r.required(&kp.key("name"));
            }
            if let Some(ttl) = &cookie.ttl {
                common::duration_schema_any(r, &kp.key("ttl"), ttl);
            }
        }
    }
    if let Some(z) = &lb.zone_aware_lb_setting
        && z.min_cluster_size == Some(0)
    {
        r.invalid(
            &p.key("zoneAwareLbSetting").key("minClusterSize"),
            0,
            "must be greater than or equal to 1",
        );
    }
}

/// CRD rules of connection pool settings (also used by Sidecar).
pub fn pool_schema(r: &mut Report, p: &Path<'_>, cp: &ConnectionPoolSettings) {
    if let Some(tcp) = &cp.tcp {
        let tp = p.key("tcp");
        for (field, d) in [
            ("connectTimeout", &tcp.connect_timeout),
            ("maxConnectionDuration", &tcp.max_connection_duration),
        ] {
            if let Some(d) = d {
                common::duration_schema(r, &tp.key(field), d);
            }
        }
        if let Some(d) = &tcp.idle_timeout {
            common::duration_schema_any(r, &tp.key("idleTimeout"), d);
        }
        if let Some(ka) = &tcp.tcp_keepalive {
            let kp = tp.key("tcpKeepalive");
            for (field, d) in [("time", &ka.time), ("interval", &ka.interval)] {
                if let Some(d) = d {
                    common::duration_schema(r, &kp.key(field), d);
                }
            }
        }
    }
    if let Some(http) = &cp.http {
        let hp = p.key("http");
        if let Some(d) = &http.idle_timeout {
            common::duration_schema(r, &hp.key("idleTimeout"), d);
        }
        if let Some(ka) = &http.http2_keep_alive {
            let kp = hp.key("http2KeepAlive");
            for (field, d) in [("interval", &ka.interval), ("timeout", &ka.timeout)] {
                if let Some(d) = d {
                    common::duration_schema(r, &kp.key(field), d);
                }
            }
        }
    }
}

/// Webhook rules.
pub fn webhook(r: &mut Report, spec: &Path<'_>, dr: &DestinationRule, meta: &Meta<'_>) {
    if let Err(e) = common::wildcard_domain(dr.host.as_deref().unwrap_or("")) {
        r.error(&spec.key("host"), e);
    }
    let sp = spec.key("subsets");
    let subsets = dr.subsets.or_empty();
    for (i, s) in subsets.iter().enumerate() {
        let p = sp.index(i);
        let name = s.name.as_deref().unwrap_or("");
        if subsets[..i].iter().any(|o| o.name.as_deref() == Some(name)) {
            r.error(&p.key("name"), format!("duplicate subset names: {name}"));
        }
        if name.is_empty() {
            r.error(&p.key("name"), "subset name cannot be empty");
        } else if !common::is_dns1123_label(name) {
            r.error(&p.key("name"), format!("subset name is invalid: {name}"));
        }
        common::labels(r, &p.key("labels"), s.labels.or_empty());
        if let Some(tp) = &s.traffic_policy {
            traffic_policy(r, &p.key("trafficPolicy"), tp, meta.namespace);
        }
    }
    if let Some(tp) = &dr.traffic_policy {
        traffic_policy(r, &spec.key("trafficPolicy"), tp, meta.namespace);
    }
    let kind = if dr.workload_selector.is_some() {
        ExportKind::SelectorDestinationRule
    } else {
        ExportKind::Other
    };
    common::export_to(
        r,
        &spec.key("exportTo"),
        meta.namespace,
        dr.export_to.or_empty(),
        kind,
    );
    if let Some(sel) = &dr.workload_selector {
        common::match_labels(r, &spec.key("workloadSelector"), sel);
    }
}

fn traffic_policy(r: &mut Report, p: &Path<'_>, tp: &TrafficPolicy, namespace: &str) {
    if *tp == TrafficPolicy::default() {
        r.error(p, "traffic policy must have at least one field");
        return;
    }
    if tp.tunnel.is_some() && tp.proxy_protocol.is_some() {
        r.error(p, "tunnel and proxyProtocol must not be set together");
    }
    let has_od = tp.outlier_detection.is_some();
    if let Some(od) = &tp.outlier_detection {
        outlier_detection(r, &p.key("outlierDetection"), od);
    }
    if let Some(cp) = &tp.connection_pool {
        connection_pool(r, &p.key("connectionPool"), cp);
    }
    if let Some(lb) = &tp.load_balancer {
        load_balancer(r, &p.key("loadBalancer"), lb, has_od);
    }
    if let Some(tls) = &tp.tls {
        client_tls(r, &p.key("tls"), tls, namespace);
    }
    if let Some(t) = &tp.tunnel {
        let tun = p.key("tunnel");
        let proto = t.protocol.as_deref().unwrap_or("");
        if !matches!(proto, "" | "CONNECT" | "POST") {
            r.error(
                &tun.key("protocol"),
                format!("tunnel protocol must be \"CONNECT\" or \"POST\", got {proto:?}"),
            );
        }
        let target = t.target_host.as_deref().unwrap_or("");
        if !common::is_ip(target) && common::fqdn(target).is_err() {
            r.error(
                &tun.key("targetHost"),
                format!("tunnel target host must be a valid FQDN or an IP address: {target}"),
            );
        }
        common::port(r, &tun.key("targetPort"), i64::from(t.target_port.unwrap_or(0)));
    }
    let pp = p.key("portLevelSettings");
    for (i, pl) in tp.port_level_settings.or_empty().iter().enumerate() {
        let ip = pp.index(i);
        let Some(port) = pl.port.as_ref().and_then(|p| p.number) else {
            r.error(&ip, "portTrafficPolicy must have valid port");
            continue;
        };
        common::port(r, &ip.key("port").key("number"), i64::from(port));
        if pl.load_balancer.is_none()
            && pl.connection_pool.is_none()
            && pl.outlier_detection.is_none()
            && pl.tls.is_none()
        {
            r.error(&ip, "port traffic policy must have at least one field");
        }
        let has_od = pl.outlier_detection.is_some() || has_od;
        if let Some(od) = &pl.outlier_detection {
            outlier_detection(r, &ip.key("outlierDetection"), od);
        }
        if let Some(cp) = &pl.connection_pool {
            connection_pool(r, &ip.key("connectionPool"), cp);
        }
        if let Some(lb) = &pl.load_balancer {
            load_balancer(r, &ip.key("loadBalancer"), lb, has_od);
        }
        if let Some(tls) = &pl.tls {
            client_tls(r, &ip.key("tls"), tls, namespace);
        }
    }
}

fn outlier_detection(r: &mut Report, p: &Path<'_>, od: &OutlierDetection) {
    if let Some(d) = &od.base_ejection_time {
        common::duration(r, &p.key("baseEjectionTime"), d);
    }
    if let Some(d) = &od.interval {
        common::duration(r, &p.key("interval"), d);
    }
    if od.consecutive_errors.is_some_and(|e| e != 0) {
        r.warn(
            &p.key("consecutiveErrors"),
            "outlier detection consecutive errors is deprecated, use consecutiveGatewayErrors or consecutive5xxErrors instead",
        );
    }
    if od.consecutive_local_origin_failures.is_some_and(|v| v > 0)
        && od.split_external_local_origin_errors != Some(true)
    {
        r.error(
            &p.key("consecutiveLocalOriginFailures"),
            "outlier detection consecutive local origin failures is specified, but split external local origin errors is set to false",
        );
    }
    if let Some(v) = od.max_ejection_percent {
        common::percentage_0_100(r, &p.key("maxEjectionPercent"), f64::from(v));
    }
    if let Some(v) = od.min_health_percent {
        common::percentage_0_100(r, &p.key("minHealthPercent"), f64::from(v));
    }
}

/// Webhook rules of connection pool settings (also used by Sidecar).
pub fn connection_pool(r: &mut Report, p: &Path<'_>, cp: &ConnectionPoolSettings) {
    if cp.tcp.is_none() && cp.http.is_none() {
        r.error(p, "connection pool must have at least one field");
    }
    if let Some(http) = &cp.http {
        let hp = p.key("http");
        for (field, label, v) in [
            (
                "http1MaxPendingRequests",
                "http1 max pending requests",
                http.http1_max_pending_requests,
            ),
            ("http2MaxRequests", "http2 max requests", http.http2_max_requests),
            (
                "maxRequestsPerConnection",
                "max requests per connection",
                http.max_requests_per_connection,
            ),
            ("maxRetries", "max retries", http.max_retries),
            (
                "maxConcurrentStreams",
                "max concurrent streams",
                http.max_concurrent_streams,
            ),
        ] {
            if v.is_some_and(|v| v < 0) {
                r.error(&hp.key(field), format!("{label} must be non-negative"));
            }
        }
        if let Some(d) = &http.idle_timeout {
            common::duration(r, &hp.key("idleTimeout"), d);
        }
        if http.h2_upgrade_policy == Some(H2UpgradePolicy::Upgrade) && http.use_client_protocol == Some(true)
        {
            r.error(
                &hp,
                "use client protocol must not be true when H2UpgradePolicy is UPGRADE",
            );
        }
        if let Some(ka) = &http.http2_keep_alive {
            let kp = hp.key("http2KeepAlive");
            match &ka.interval {
                None => r.error(&kp, "http2 keepalive interval is required"),
                Some(d) => common::duration(r, &kp.key("interval"), d),
            }
            match &ka.timeout {
                None => r.error(&kp, "http2 keepalive timeout is required"),
                Some(d) => common::duration(r, &kp.key("timeout"), d),
            }
        }
    }
    if let Some(tcp) = &cp.tcp {
        let tp = p.key("tcp");
        if tcp.max_connections.is_some_and(|v| v < 0) {
            r.error(&tp.key("maxConnections"), "max connections must be non-negative");
        }
        if let Some(d) = &tcp.connect_timeout {
            common::duration(r, &tp.key("connectTimeout"), d);
        }
        if let Some(d) = &tcp.max_connection_duration {
            common::duration(r, &tp.key("maxConnectionDuration"), d);
        }
        if let Some(d) = &tcp.idle_timeout
            && d.get() != Some(std::time::Duration::ZERO)
        {
            common::duration(r, &tp.key("idleTimeout"), d);
        }
        if let Some(ka) = &tcp.tcp_keepalive {
            let kp = tp.key("tcpKeepalive");
            for (field, d) in [("time", &ka.time), ("interval", &ka.interval)] {
                if let Some(d) = d {
                    common::duration(r, &kp.key(field), d);
                }
            }
        }
    }
}

/// Envoy's `isPrime` for maglev table sizes.
fn is_prime(n: u64) -> bool {
    if n < 2 {
        return false;
    }
    if n.is_multiple_of(2) {
        return n == 2;
    }
    let mut i = 3;
    while i * i <= n {
        if n.is_multiple_of(i) {
            return false;
        }
        i += 2;
    }
    true
}

fn load_balancer(r: &mut Report, p: &Path<'_>, lb: &LoadBalancerSettings, has_outlier_detection: bool) {
    if let Some(ch) = &lb.consistent_hash {
        let cp = p.key("consistentHash");
        if let Some(cookie) = &ch.http_cookie {
            let kp = cp.key("httpCookie");
            if cookie.name.as_deref().is_none_or(str::is_empty) {
                r.error(&kp.key("name"), "name required for HttpCookie");
            }
            if let Some(ttl) = &cookie.ttl
                && ttl.get().is_none()
            {
                r.error(&kp.key("ttl"), format!("invalid duration {:?}", ttl.as_str()));
            }
            let attrs = cookie.attributes.or_empty();
            for (i, a) in attrs.iter().enumerate() {
                let name = a.name.as_deref().unwrap_or("");
                let ap = kp.key("attributes");
                let ap = ap.index(i);
                if name.is_empty() {
                    r.error(&ap, "cookie attribute name cannot be empty");
                } else if attrs[..i].iter().any(|o| o.name.as_deref() == Some(name)) {
                    r.error(&ap, format!("duplicate cookie attribute name: {name}"));
                }
            }
        }
        if ch.minimum_ring_size.is_some() {
            r.warn(&cp.key("minimumRingSize"), "consistent hash MinimumRingSize is deprecated, use ConsistentHashLB's RingHash configuration instead");
            if ch.ring_hash.is_some() || ch.maglev.is_some() {
                r.error(
                    &cp,
                    "only one of MinimumRingSize or Maglev/Ringhash can be specified",
                );
            }
        }
        if let Some(m) = &ch.maglev {
            let tp = cp.key("maglev");
            let tp = tp.key("tableSize");
            match m.table_size {
                None | Some(0) => r.error(&tp, "tableSize must be set for maglev"),
                Some(n) if n >= 5_000_011 => r.error(&tp, "tableSize must be less than 5000011 for maglev"),
                Some(n) if !is_prime(n) => r.error(&tp, "tableSize must be a prime number for maglev"),
                Some(_) => {}
            }
        }
    }
    if lb.locality_lb_setting.is_some() && lb.zone_aware_lb_setting.is_some() {
        r.error(
            p,
            "only one of localityLbSetting and zoneAwareLbSetting can be set",
        );
    }
    if let Some(l) = &lb.locality_lb_setting {
        locality_lb(r, &p.key("localityLbSetting"), l, has_outlier_detection);
    }
    if let Some(z) = &lb.zone_aware_lb_setting {
        let zp = p.key("zoneAwareLbSetting");
        for (i, label) in z.failover_priority.or_empty().iter().enumerate() {
            let bare = label.split('=').next().unwrap_or("");
            if TOPOLOGY_LABELS.contains(&bare) {
                r.error(
                    &zp.key("failoverPriority").index(i),
                    format!("'failover_priority' for zone aware lb must not use topology label '{bare}', as zone aware already takes locality into account"),
                );
            }
        }
    }
    if let Some(w) = &lb.warmup {
        let wp = p.key("warmup");
        match &w.duration {
            None => r.error(&wp.key("duration"), "duration is required"),
            Some(d) => common::duration(r, &wp.key("duration"), d),
        }
        if w.minimum_percent.is_some_and(|m| !(0.0..=100.0).contains(&m)) {
            r.error(
                &wp.key("minimumPercent"),
                "minimumPercent must be between 0 and 100",
            );
        }
        if w.aggression.is_some_and(|a| a <= 0.0) {
            r.error(&wp.key("aggression"), "aggression must be greater than 0");
        }
    }
}

const TOPOLOGY_LABELS: &[&str] = &[
    "topology.kubernetes.io/region",
    "topology.kubernetes.io/zone",
    "topology.istio.io/subzone",
];

/// `ValidateLocalityLbSetting`.
pub fn locality_lb(r: &mut Report, p: &Path<'_>, l: &LocalityLbSetting, has_outlier_detection: bool) {
    let distribute = l.distribute.or_empty();
    let failover = l.failover.or_empty();
    if !distribute.is_empty() && !failover.is_empty() {
        r.error(p, "can not simultaneously specify 'distribute' and 'failover'");
    }
    if !failover.is_empty() {
        for (i, label) in l.failover_priority.or_empty().iter().enumerate() {
            let bare = label.split('=').next().unwrap_or("");
            if TOPOLOGY_LABELS.contains(&bare) {
                r.error(
                    &p.key("failoverPriority").index(i),
                    format!("can not simultaneously set 'failover' and topology label '{bare}' in 'failover_priority'"),
                );
            }
        }
    }
    let dp = p.key("distribute");
    let mut froms: Vec<&str> = Vec::new();
    for (i, d) in distribute.iter().enumerate() {
        let ip = dp.index(i);
        let from = d.from.as_deref().unwrap_or("");
        if let Err(e) = locality_pattern(from) {
            r.error(&ip.key("from"), e);
        }
        if froms.iter().any(|f| localities_overlap(f, from)) {
            r.error(
                &ip.key("from"),
                format!("locality {from} overlap with previous specified ones"),
            );
        }
        froms.push(from);
        let mut total: u64 = 0;
        for (to, weight) in d.to.iter().flatten() {
            let tp = ip.key("to");
            let tp = tp.key(to);
            if let Err(e) = locality_pattern(to) {
                r.error(&tp, e);
            }
            if *weight == 0 || *weight > 100 {
                r.error(
                    &tp,
                    format!("locality weight must be in range [1, 100], got {weight}"),
                );
            }
            total += u64::from(*weight);
        }
        if total != 100 {
            r.error(&ip.key("to"), format!("total locality weight {total} != 100"));
        }
    }
    let fp = p.key("failover");
    for (i, f) in failover.iter().enumerate() {
        let ip = fp.index(i);
        let (from, to) = (f.from.as_deref().unwrap_or(""), f.to.as_deref().unwrap_or(""));
        if from == to {
            r.error(&ip, "failover 'from' and 'to' can not be the same");
        }
        if from.contains('/') || to.contains('/') || from.contains('*') || to.contains('*') {
            r.error(&ip, "failover only specified for region");
        }
    }
    if (!failover.is_empty() || !l.failover_priority.or_empty().is_empty()) && !has_outlier_detection {
        r.warn(p, "outlier detection policy must be provided for failover");
    }
}

fn locality_pattern(locality: &str) -> Result<(), String> {
    if locality.is_empty() {
        return Err("locality must not be empty".into());
    }
    let parts: Vec<&str> = locality.split('/').collect();
    if parts.len() > 3 {
        return Err(format!("locality {locality} must be region/zone/subzone"));
    }
    for (i, part) in parts.iter().enumerate() {
        if part.contains('*') && (*part != "*" || i != parts.len() - 1) {
            return Err(format!(
                "locality {locality} may only have a trailing '*' wildcard"
            ));
        }
        if part.is_empty() {
            return Err(format!("locality {locality} has an empty part"));
        }
    }
    Ok(())
}

fn localities_overlap(a: &str, b: &str) -> bool {
    let prefix = |s: &str| s.trim_end_matches('*').trim_end_matches('/').to_string();
    let (pa, pb) = (prefix(a), prefix(b));
    let covers = |wild: &str, p: &str, other: &str| {
        wild.ends_with('*') && (other == p || other.starts_with(&format!("{p}/")) || p.is_empty())
    };
    a == b || covers(a, &pa, b) || covers(b, &pb, a)
}

/// `agent.ValidateTLS` for upstream TLS settings.
pub fn client_tls(r: &mut Report, p: &Path<'_>, tls: &ClientTlsSettings, namespace: &str) {
    let mode = tls.mode.unwrap_or_default();
    let set = |s: &Option<String>| s.as_deref().is_some_and(|v| !v.is_empty());
    let credential = tls.credential_name.as_deref().unwrap_or("");
    if let Some(cm) = credential.strip_prefix("configmap://")
        && cm.contains('/')
        && !cm.starts_with(&format!("{namespace}/"))
    {
        r.error(
            &p.key("credentialName"),
            "configmap:// credentialName must be in the same namespace as the DestinationRule",
        );
    }
    if tls.insecure_skip_verify == Some(true) {
        let conflict = match mode {
            ClientTlsMode::Simple => {
                set(&tls.ca_certificates)
                    || !credential.is_empty()
                    || !tls.subject_alt_names.or_empty().is_empty()
            }
            ClientTlsMode::Mutual => {
                set(&tls.ca_certificates) || !tls.subject_alt_names.or_empty().is_empty()
            }
            _ => false,
        };
        if conflict {
            r.error(p, "cannot set caCertificates, credentialName or subjectAltNames when insecureSkipVerify is set true");
        }
    }
    if matches!(mode, ClientTlsMode::Simple | ClientTlsMode::Mutual) {
        if !credential.is_empty()
            && (set(&tls.client_certificate)
                || set(&tls.ca_certificates)
                || set(&tls.private_key)
                || set(&tls.ca_crl))
        {
            r.error(
                p,
                "cannot specify client certificates or CA certificate or CA CRL If credentialName is set",
            );
        }
        if mode == ClientTlsMode::Mutual && credential.is_empty() {
            if !set(&tls.client_certificate) {
                r.error(
                    &p.key("clientCertificate"),
                    "client certificate required for mutual tls",
                );
            }
            if !set(&tls.private_key) {
                r.error(&p.key("privateKey"), "private key required for mutual tls");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn primes() {
        assert!(is_prime(65537));
        assert!(!is_prime(65536));
        assert!(is_prime(2));
        assert!(!is_prime(1));
    }

    #[test]
    fn localities() {
        assert!(locality_pattern("us-east/*").is_ok());
        assert!(locality_pattern("*/zone").is_err());
        assert!(localities_overlap("us/*", "us/zone1"));
        assert!(!localities_overlap("us/zone1", "us/zone2"));
    }
}
