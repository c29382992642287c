//! Shared by the end-to-end tests: real `weir` processes (`run`, `proxy`, `discovery`, `echo`)
//! on real sockets, and an HTTP client (hyper's) that talks through the forward proxy.

#![allow(dead_code)] // each test file uses part of this

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;

/// A child process, killed when dropped, whose output is collected.
pub struct Proc {
    child: Child,
    output: Arc<(Mutex<Vec<String>>, Condvar)>,
    pub label: String,
}

impl Proc {
    /// Starts `weir` with these arguments.
    pub fn weir(label: &str, args: &[&str]) -> Proc {
        let mut command = Command::new(env!("CARGO_BIN_EXE_weir"));
        command.args(args);
        Proc::start(label, command)
    }

    /// Starts `weir` with these arguments inside a network namespace.
    pub fn weir_in(ns: &Netns, label: &str, args: &[&str]) -> Proc {
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", &ns.name, env!("CARGO_BIN_EXE_weir")])
            .args(args);
        Proc::start(label, command)
    }

    fn start(label: &str, mut command: Command) -> Proc {
        let mut child = command
            .env("WEIR_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("weir starts");
        let output = Arc::new((Mutex::new(Vec::new()), Condvar::new()));
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let output = output.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines() {
                    let Ok(line) = line else { break };
                    let (lines, cv) = &*output;
                    lines.lock().unwrap().push(line);
                    cv.notify_all();
                }
            });
        }
        Proc {
            child,
            output,
            label: label.to_string(),
        }
    }

    /// Waits for an output line containing `needle`; returns it.
    pub fn wait_line(&self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        let (lines, cv) = &*self.output;
        let mut guard = lines.lock().unwrap();
        loop {
            if let Some(l) = guard.iter().find(|l| l.contains(needle)) {
                return l.clone();
            }
            let now = Instant::now();
            assert!(
                now < deadline,
                "{}: no line with {needle:?} within {timeout:?}; output:\n{}",
                self.label,
                guard.join("\n")
            );
            guard = cv.wait_timeout(guard, deadline - now).unwrap().0;
        }
    }

    /// Everything printed so far.
    pub fn output(&self) -> String {
        self.output.0.lock().unwrap().join("\n")
    }

    /// Stops the process (SIGKILL).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Stops the process with Ctrl-C (SIGINT) and returns its exit code.
    pub fn interrupt(&mut self) -> Option<i32> {
        let _ = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The address at the end of a line such as `weir echo: v1 listening on 127.0.0.1:1234`.
pub fn address_in(line: &str, after: &str) -> SocketAddr {
    let rest = &line[line.find(after).expect("marker") + after.len()..];
    let token = rest
        .split_whitespace()
        .next()
        .unwrap()
        .trim_start_matches("http://");
    let token = token.split('/').next().unwrap();
    token
        .parse()
        .unwrap_or_else(|e| panic!("{token:?} in {line:?}: {e}"))
}

/// A `weir echo` backend.
pub fn echo(name: &str) -> (Proc, SocketAddr) {
    echo_with(name, &[])
}

/// A `weir echo` backend with more arguments (`--status 500`, `--tls-cert …`).
pub fn echo_with(name: &str, extra: &[&str]) -> (Proc, SocketAddr) {
    let mut args = vec!["echo", "--listen", "127.0.0.1:0", "--name", name];
    args.extend_from_slice(extra);
    let p = Proc::weir(&format!("echo {name}"), &args);
    let line = p.wait_line("listening on", Duration::from_secs(10));
    let address = address_in(&line, "listening on ");
    (p, address)
}

/// `weir discovery` on a folder, serving ADS on `port`; returns it and its monitoring address.
pub fn discovery(dir: &str, port: u16) -> (Proc, SocketAddr) {
    let listen = format!("127.0.0.1:{port}");
    let p = Proc::weir(
        "discovery",
        &[
            "discovery",
            "--config",
            dir,
            "--listen",
            &listen,
            "--monitoring",
            "127.0.0.1:0",
        ],
    );
    let line = p.wait_line("serving ADS on", Duration::from_secs(20));
    let monitoring = address_in(&p.wait_line("metrics on", Duration::from_secs(20)), "metrics on ");
    assert!(line.contains(&listen), "{line}");
    (p, monitoring)
}

/// `weir discovery` on a folder and `weir proxy --local` against it.
pub struct Standalone {
    /// The control plane.
    pub control_plane: Proc,
    /// Its ADS port.
    pub port: u16,
    /// Its monitoring address.
    pub monitoring: SocketAddr,
    /// The proxy.
    pub proxy: Proc,
    /// The proxy's admin address.
    pub admin: SocketAddr,
    /// The proxy's HTTP proxy address.
    pub http: SocketAddr,
    /// A client.
    pub client: Client,
}

/// Starts `weir discovery` on `dir` and the proxy against it, with `extra` proxy arguments.
pub fn standalone(dir: &Path, extra: &[&str]) -> Standalone {
    let port = free_port();
    let (control_plane, monitoring) = discovery(dir.to_str().unwrap(), port);
    let (proxy, admin, http) = standalone_proxy(port, extra);
    Standalone {
        control_plane,
        port,
        monitoring,
        proxy,
        admin,
        http,
        client: Client::new(),
    }
}

/// `weir proxy --local` against the control plane on `discovery` (with `extra` arguments);
/// returns it, its admin address and its HTTP proxy address.
pub fn standalone_proxy(discovery: u16, extra: &[&str]) -> (Proc, SocketAddr, SocketAddr) {
    let d = format!("127.0.0.1:{discovery}");
    let mut args = vec![
        "proxy",
        "--local",
        "--discovery",
        &d,
        "--node",
        "sidecar~192.0.2.10~client.default~default.svc.cluster.local",
        "--admin",
        "127.0.0.1:0",
        "--http-proxy",
        "127.0.0.1:0",
    ];
    args.extend_from_slice(extra);
    let p = Proc::weir("proxy", &args);
    let admin = address_in(&p.wait_line("admin on", Duration::from_secs(20)), "admin on ");
    let http = address_in(
        &p.wait_line("HTTP proxy on", Duration::from_secs(20)),
        "HTTP proxy on ",
    );
    (p, admin, http)
}

/// A fresh folder under the target directory.
pub fn folder(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("e2e").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `weir run` on a folder, with its ports.
pub struct Mesh {
    pub run: Proc,
    pub proxy: SocketAddr,
    pub admin: SocketAddr,
    pub discovery: SocketAddr,
    pub dir: PathBuf,
    pub client: Client,
}

impl Mesh {
    /// Writes the files and starts `weir run` with free ports (and service addresses outside
    /// the loopback range unless `extra` says otherwise).
    pub fn start(name: &str, files: &[(&str, &str)], extra: &[&str]) -> Mesh {
        let dir = folder(name);
        for (file, content) in files {
            std::fs::write(dir.join(file), content).unwrap();
        }
        let mut args = vec![
            "run",
            dir.to_str().unwrap(),
            "--http-proxy",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
            "--discovery",
            "127.0.0.1:0",
        ];
        if !extra.contains(&"--allocation-range") {
            args.extend(["--allocation-range", "240.240.0.0/16"]);
        }
        args.extend_from_slice(extra);
        let run = Proc::weir(&format!("run {name}"), &args);
        let discovery = address_in(
            &run.wait_line("control plane (ADS) on", Duration::from_secs(20)),
            "(ADS) on ",
        );
        let proxy = address_in(
            &run.wait_line("HTTP proxy on", Duration::from_secs(20)),
            "HTTP proxy on ",
        );
        let admin = address_in(&run.wait_line("admin on", Duration::from_secs(20)), "admin on ");
        run.wait_line("weir run: ready", Duration::from_secs(20));
        Mesh {
            run,
            proxy,
            admin,
            discovery,
            dir,
            client: Client::new(),
        }
    }

    /// Replaces a file of the folder.
    pub fn write(&self, file: &str, content: &str) {
        std::fs::write(self.dir.join(file), content).unwrap();
    }

    /// A request through the forward proxy.
    pub fn get(&self, url: &str, headers: &[(&str, &str)]) -> Reply {
        self.client.via_proxy(self.proxy, "GET", url, headers, "")
    }

    /// An admin endpoint's body.
    pub fn admin(&self, path: &str) -> Reply {
        self.client.direct(self.admin, "GET", path, &[], "")
    }

    /// Retries `check` until it holds (configuration changes propagate asynchronously).
    pub fn eventually(&self, what: &str, mut check: impl FnMut() -> bool) {
        eventually(what, Duration::from_secs(15), &mut check);
    }
}

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits until a proxy's admin endpoint says it is ready.
pub fn wait_ready(client: &Client, admin: SocketAddr) {
    eventually("proxy ready", Duration::from_secs(15), &mut || {
        client.direct(admin, "GET", "/ready", &[], "").status == 200
    });
}

/// Waits until `check` holds.
pub fn eventually(what: &str, timeout: Duration, check: &mut dyn FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if check() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("not within {timeout:?}: {what}");
}

/// A response.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
    pub elapsed: Duration,
}

impl Reply {
    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The backend that answered (`x-echo-server`).
    pub fn server(&self) -> Option<&str> {
        self.header("x-echo-server")
    }

    /// The body as JSON (what `weir echo` returns).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// hyper's HTTP/1.1 client on a private runtime.
pub struct Client {
    rt: tokio::runtime::Runtime,
}

impl Client {
    pub fn new() -> Client {
        Client {
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap(),
        }
    }

    /// Sends `method target` to `address` (absolute-form when `target` is a URL).
    pub fn send(
        &self,
        address: SocketAddr,
        method: &str,
        target: &str,
        host: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Reply {
        self.rt.block_on(async {
            let started = Instant::now();
            let stream = tokio::net::TcpStream::connect(address).await.expect("connect");
            let (mut sender, conn) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                    .await
                    .expect("handshake");
            tokio::spawn(conn);
            let mut req = hyper::Request::builder()
                .method(method)
                .uri(target)
                .header("host", host);
            for (k, v) in headers {
                req = req.header(*k, *v);
            }
            let req = req.body(Full::new(Bytes::from(body.to_string()))).unwrap();
            let resp = tokio::time::timeout(Duration::from_secs(30), sender.send_request(req))
                .await
                .expect("response within 30 s")
                .expect("response");
            let status = resp.status().as_u16();
            let headers = resp
                .headers()
                .iter()
                .map(|(k, v)| (k.to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
                .collect();
            let body = resp
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            Reply {
                status,
                headers,
                body: String::from_utf8_lossy(&body).into_owned(),
                elapsed: started.elapsed(),
            }
        })
    }

    /// Through a forward proxy: `GET http://host/path`.
    pub fn via_proxy(
        &self,
        proxy: SocketAddr,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Reply {
        let host = url
            .trim_start_matches("http://")
            .split('/')
            .next()
            .unwrap()
            .to_string();
        self.send(proxy, method, url, &host, headers, body)
    }

    /// Straight to a server: `GET /path`.
    pub fn direct(
        &self,
        address: SocketAddr,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Reply {
        self.send(address, method, path, &address.to_string(), headers, body)
    }
}

/// The error output of `weir proxy` run from the bootstrap `text` (its folder named after
/// `label`), which it must refuse (exit 2).
pub fn refused_bootstrap(label: &str, text: &str) -> String {
    let file = folder(label).join("envoy.yaml");
    std::fs::write(&file, text).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_weir"))
        .args([
            "proxy",
            "--bootstrap",
            file.to_str().unwrap(),
            "--admin",
            "127.0.0.1:0",
        ])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `weir proxy` run from the bootstrap `text` (its folder named after `label`), once its
/// `listener` accepts connections.
pub fn proxy_on(label: &str, listener: SocketAddr, text: &str) -> Proc {
    let file = folder(label).join("envoy.yaml");
    std::fs::write(&file, text).unwrap();
    let proxy = Proc::weir(
        label,
        &[
            "proxy",
            "--bootstrap",
            file.to_str().unwrap(),
            "--admin",
            "127.0.0.1:0",
        ],
    );
    eventually("the listener accepts", Duration::from_secs(20), &mut || {
        std::net::TcpStream::connect(listener).is_ok()
    });
    proxy
}

/// The fields of an Envoy `socket_address` for `a`.
pub fn socket_address(a: SocketAddr) -> String {
    format!("address: '{}', port_value: {}", a.ip(), a.port())
}

/// `static_resources` with one listener `name` on the `socket_address` fields `listen` (an HTTP
/// connection manager with the extra `manager` lines, the `routes` before a catch-all route to
/// `backend`) and the cluster `backend`.
pub fn static_bootstrap(
    name: &str,
    listen: &str,
    backend: SocketAddr,
    manager: &str,
    routes: &str,
) -> String {
    format!(
        r#"static_resources:
  listeners:
  - name: {name}
    address: {{socket_address: {{{listen}}}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: {name}
{manager}          route_config:
            name: local
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
{routes}              - match: {{prefix: /}}
                route: {{cluster: backend, timeout: 5s}}
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
  - name: backend
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: backend
      endpoints:
      - lb_endpoints:
        - endpoint: {{address: {{socket_address: {{address: {ip}, port_value: {bport}}}}}}}
"#,
        ip = backend.ip(),
        bport = backend.port()
    )
}

/// An h2c connection as [`h2c_get`] leaves it: the sender (the client closes the connection
/// once it is dropped) and the connection's task, which ends when the connection closes.
pub struct H2c {
    /// Sends more requests on the connection; keeps it open from the client's side.
    pub sender: hyper::client::conn::http2::SendRequest<http_body_util::Empty<Bytes>>,
    /// The connection's task.
    pub conn: tokio::task::JoinHandle<Result<(), hyper::Error>>,
}

/// One GET of `path` over a new h2c (HTTP/2 prior knowledge) connection to `at`, with hyper's
/// client: the status, the body, and the connection.
pub async fn h2c_get(at: SocketAddr, path: &str) -> (u16, Bytes, H2c) {
    let stream = tokio::net::TcpStream::connect(at).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    let conn = tokio::spawn(conn);
    let req = hyper::Request::builder()
        .uri(format!("http://{at}{path}"))
        .body(http_body_util::Empty::<Bytes>::new())
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, body, H2c { sender, conn })
}

/// A ServiceEntry for `host` on `port` (protocol HTTP) with STATIC endpoints selected by
/// `app: <app>`, plus one WorkloadEntry per (version, address).
pub fn http_service(host: &str, port: u16, app: &str, backends: &[(&str, SocketAddr)]) -> String {
    let mut out = format!(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: {app}}}\nspec:\n  hosts: [{host}]\n  location: MESH_INTERNAL\n  ports:\n  - {{number: {port}, name: http, protocol: HTTP}}\n  resolution: STATIC\n  workloadSelector:\n    labels: {{app: {app}}}\n"
    );
    for (version, address) in backends {
        out.push_str(&format!(
            "---\napiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {{name: {app}-{version}}}\nspec:\n  address: {ip}\n  ports: {{http: {p}}}\n  labels: {{app: {app}, version: {version}}}\n",
            ip = address.ip(),
            p = address.port()
        ));
    }
    out
}

/// A DestinationRule with one subset per version.
pub fn subsets(host: &str, name: &str, versions: &[&str]) -> String {
    let mut out = format!(
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: {name}}}\nspec:\n  host: {host}\n  subsets:\n"
    );
    for v in versions {
        out.push_str(&format!("  - name: {v}\n    labels: {{version: {v}}}\n"));
    }
    out
}

/// A network namespace of the test's own (loopback up), deleted when dropped. Needs root and
/// iproute2; `scripts/test-deps.sh` (run by `make test`) installs what the tests need.
pub struct Netns {
    pub name: String,
}

impl Netns {
    /// Creates `weir-<pid>-<name>`.
    pub fn new(name: &str) -> Netns {
        let ns = Netns {
            name: format!("weir-{}-{name}", std::process::id()),
        };
        let _ = Command::new("ip").args(["netns", "del", &ns.name]).output();
        run_ok("ip", &["netns", "add", &ns.name]);
        ns.exec(&["ip", "link", "set", "lo", "up"]);
        ns
    }

    /// Runs a command inside the namespace; panics with its output if it fails.
    pub fn exec(&self, command: &[&str]) -> String {
        let mut args = vec!["netns", "exec", &self.name];
        args.extend_from_slice(command);
        run_ok("ip", &args)
    }

    /// Runs a command inside the namespace, however it ends: its exit code (`None` if a signal
    /// ended it).
    pub fn status(&self, command: &[&str]) -> Option<i32> {
        Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(command)
            .output()
            .unwrap_or_else(|e| panic!("ip cannot start ({e}): run scripts/test-deps.sh as root"))
            .status
            .code()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).output();
    }
}

fn run_ok(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program} cannot start ({e}): run scripts/test-deps.sh as root"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
