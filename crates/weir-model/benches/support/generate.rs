//! A generated mesh for model benchmarks: ServiceEntries across 100 namespaces (half DNS, half
//! STATIC with two endpoints), VirtualServices splitting traffic between subsets of those hosts,
//! and DestinationRules defining the subsets. One object per file, as in a config folder.

/// `(file name, YAML)` for `services` ServiceEntries, `routes` VirtualServices and `rules`
/// DestinationRules. Deterministic.
pub fn mesh(services: usize, routes: usize, rules: usize) -> Vec<(String, String)> {
    let mut out = Vec::with_capacity(services + routes + rules);
    for i in 0..services {
        out.push((format!("se/{i:05}.yaml"), service_entry(i, 0)));
    }
    for i in 0..routes {
        let ns = i % 100;
        let host = format!("svc-{i}.team-{ns}.example.com");
        out.push((
            format!("vs/{i:05}.yaml"),
            format!(
                "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: vs-{i}, namespace: team-{ns}}}\n\
                 spec:\n  hosts: [{host}]\n  http:\n  - match: [{{headers: {{end-user: {{exact: jason}}}}}}]\n    route: [{{destination: {{host: {host}, subset: v2}}}}]\n\
                 \x20 - route:\n    - {{destination: {{host: {host}, subset: v1}}, weight: 90}}\n    - {{destination: {{host: {host}, subset: v2}}, weight: 10}}\n    timeout: 5s\n"
            ),
        ));
    }
    for i in 0..rules {
        let ns = i % 100;
        out.push((
            format!("dr/{i:05}.yaml"),
            format!(
                "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: dr-{i}, namespace: team-{ns}}}\n\
                 spec:\n  host: svc-{i}.team-{ns}.example.com\n  trafficPolicy: {{connectionPool: {{tcp: {{maxConnections: 100}}}}}}\n\
                 \x20 subsets: [{{name: v1, labels: {{version: v1}}}}, {{name: v2, labels: {{version: v2}}}}]\n"
            ),
        ));
    }
    out
}

/// ServiceEntry number `i`; `generation` changes its port so that edits can be simulated.
pub fn service_entry(i: usize, generation: u32) -> String {
    let ns = i % 100;
    let port = 8000 + generation % 50_000;
    if i.is_multiple_of(2) {
        format!(
            "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: se-{i}, namespace: team-{ns}}}\n\
             spec: {{hosts: [svc-{i}.team-{ns}.example.com], ports: [{{number: 443, name: https, protocol: HTTPS, targetPort: {port}}}], resolution: DNS}}\n"
        )
    } else {
        format!(
            "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: se-{i}, namespace: team-{ns}}}\n\
             spec:\n  hosts: [svc-{i}.team-{ns}.example.com]\n  ports: [{{number: 80, name: http, protocol: HTTP, targetPort: {port}}}]\n  resolution: STATIC\n\
             \x20 endpoints: [{{address: 10.{}.{}.1, labels: {{version: v1}}}}, {{address: 10.{}.{}.2, labels: {{version: v2}}}}]\n",
            i / 256 % 256,
            i % 256,
            i / 256 % 256,
            i % 256
        )
    }
}
