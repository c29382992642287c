//! A generated mesh configuration of mixed resources, for benchmarks: per ten resources, five
//! ServiceEntries, three VirtualServices (four HTTP routes each, with matches, weights, retries,
//! timeouts and header operations) and two DestinationRules (three subsets and a traffic policy).

use std::fmt::Write as _;

/// `n` resources as one multi-document YAML stream. Deterministic.
pub fn mixed_config(n: usize) -> String {
    let mut out = String::with_capacity(n * 700);
    for i in 0..n {
        let ns = format!("team-{}", i % 50);
        let svc = format!("svc-{}", i / 10);
        let _ = match i % 10 {
            0..=4 => writeln!(
                out,
                "---\napiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata:\n  name: se-{i}\n  namespace: {ns}\n\
                 spec:\n  hosts:\n  - api-{i}.example.com\n  location: MESH_EXTERNAL\n  resolution: DNS\n  ports:\n\
                 \x20 - number: 443\n    name: https\n    protocol: HTTPS\n  - number: 80\n    name: http\n    protocol: HTTP\n\
                 \x20 exportTo: [\".\", \"istio-system\"]"
            ),
            5..=7 => writeln!(
                out,
                "---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: vs-{i}\n  namespace: {ns}\n\
                 spec:\n  hosts:\n  - {svc}-{i}\n  http:\n\
                 \x20 - name: canary\n    match:\n    - headers:\n        end-user:\n          exact: jason\n      uri:\n        prefix: /api/v2\n\
                 \x20   route:\n    - destination:\n        host: {svc}\n        subset: v2\n\
                 \x20 - name: regex\n    match:\n    - uri:\n        regex: \"^/items/[0-9]+$\"\n    route:\n    - destination:\n        host: {svc}\n        subset: v3\n\
                 \x20   timeout: 2s\n    retries:\n      attempts: 3\n      perTryTimeout: 500ms\n      retryOn: gateway-error,connect-failure,refused-stream\n\
                 \x20 - name: legacy\n    match:\n    - uri:\n        exact: /old\n    redirect:\n      uri: /new\n      redirectCode: 301\n\
                 \x20 - name: default\n    route:\n    - destination:\n        host: {svc}\n        subset: v1\n      weight: 90\n\
                 \x20   - destination:\n        host: {svc}\n        subset: v2\n      weight: 10\n\
                 \x20   headers:\n      request:\n        set:\n          x-route: default\n    timeout: 10s"
            ),
            _ => writeln!(
                out,
                "---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: dr-{i}\n  namespace: {ns}\n\
                 spec:\n  host: {svc}-{i}\n  trafficPolicy:\n    loadBalancer:\n      simple: LEAST_REQUEST\n\
                 \x20   connectionPool:\n      tcp:\n        maxConnections: 100\n        connectTimeout: 30ms\n      http:\n        http1MaxPendingRequests: 64\n\
                 \x20   outlierDetection:\n      consecutive5xxErrors: 5\n      interval: 10s\n      baseEjectionTime: 30s\n\
                 \x20 subsets:\n  - name: v1\n    labels:\n      version: v1\n  - name: v2\n    labels:\n      version: v2\n\
                 \x20 - name: v3\n    labels:\n      version: v3\n    trafficPolicy:\n      loadBalancer:\n        consistentHash:\n          httpHeaderName: x-user"
            ),
        };
    }
    out
}
