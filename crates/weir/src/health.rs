//! Readiness probes for WorkloadEntries, as Istio runs them for VMs: a WorkloadEntry annotated
//! `proxy.istio.io/health-checks-enabled: "true"` takes traffic only while the probe of its
//! WorkloadGroup (`istio.io/autoRegistrationGroup`, else the group in its namespace whose
//! template labels it carries) succeeds. Probes follow Kubernetes' readiness semantics:
//! unhealthy until `successThreshold` successes, unhealthy again after `failureThreshold`
//! failures in a row; HTTP GET (a status in 200–399), TCP connect, or a local command (`exec`,
//! which on one machine runs here). A change of health updates the entry's endpoints, so the
//! proxies stop (or resume) sending it new requests while connections in flight finish.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::time::Instant;
use weir_api::Resource;
use weir_api::types::OrEmpty;
use weir_api::types::networking::{ReadinessProbe, WorkloadGroup};
use weir_model::{ConfigStore, ObjectKey};
use weir_xds::server::DiscoveryServer;

/// Istio's annotation linking an auto-registered WorkloadEntry to its group.
const GROUP_ANNOTATION: &str = "istio.io/autoRegistrationGroup";

/// What a probe checks.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Check {
    /// `GET http://host:port/path` with headers.
    Http {
        host: String,
        port: u16,
        path: String,
        headers: Vec<(String, String)>,
    },
    /// A TCP connection.
    Tcp { host: String, port: u16 },
    /// A local command; exit status 0 is success.
    Exec(Vec<String>),
}

/// A probe with its timing and thresholds (Kubernetes' defaults for what is not set).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Probe {
    check: Check,
    initial_delay: Duration,
    period: Duration,
    timeout: Duration,
    success_threshold: u32,
    failure_threshold: u32,
}

fn seconds(v: Option<i32>, default: u64) -> Duration {
    Duration::from_secs(
        v.and_then(|v| u64::try_from(v).ok())
            .filter(|v| *v > 0)
            .unwrap_or(default),
    )
}

fn threshold(v: Option<i32>, default: u32) -> u32 {
    v.and_then(|v| u32::try_from(v).ok())
        .filter(|v| *v > 0)
        .unwrap_or(default)
}

impl Probe {
    /// The probe of `p` for a workload at `address`; an error names what cannot be run.
    fn of(p: &ReadinessProbe, address: &str) -> Result<Probe, String> {
        let port = |n: Option<u32>| u16::try_from(n.unwrap_or(0)).ok().filter(|p| *p > 0);
        let check = if let Some(h) = &p.http_get {
            if h.scheme
                .as_deref()
                .is_some_and(|s| s.eq_ignore_ascii_case("https"))
            {
                return Err("HTTPS probes are not run by Weir".into());
            }
            Check::Http {
                host: h
                    .host
                    .clone()
                    .filter(|h| !h.is_empty())
                    .unwrap_or_else(|| address.to_string()),
                port: port(h.port).ok_or("httpGet.port is required")?,
                path: h
                    .path
                    .clone()
                    .filter(|p| !p.is_empty())
                    .unwrap_or_else(|| "/".into()),
                headers: h
                    .http_headers
                    .or_empty()
                    .iter()
                    .map(|h| {
                        (
                            h.name.clone().unwrap_or_default(),
                            h.value.clone().unwrap_or_default(),
                        )
                    })
                    .collect(),
            }
        } else if let Some(t) = &p.tcp_socket {
            Check::Tcp {
                host: t
                    .host
                    .clone()
                    .filter(|h| !h.is_empty())
                    .unwrap_or_else(|| address.to_string()),
                port: port(t.port).ok_or("tcpSocket.port is required")?,
            }
        } else if let Some(e) = &p.exec {
            let command = e.command.clone().unwrap_or_default();
            if command.is_empty() {
                return Err("exec.command is empty".into());
            }
            Check::Exec(command)
        } else if p.grpc.is_some() {
            return Err("gRPC probes are not run by Weir".into());
        } else {
            return Err("the probe has no check".into());
        };
        Ok(Probe {
            check,
            initial_delay: Duration::from_secs(
                p.initial_delay_seconds
                    .and_then(|v| u64::try_from(v).ok())
                    .unwrap_or(0),
            ),
            period: seconds(p.period_seconds, 10),
            timeout: seconds(p.timeout_seconds, 1),
            success_threshold: threshold(p.success_threshold, 1),
            failure_threshold: threshold(p.failure_threshold, 3),
        })
    }

    async fn run(&self) -> bool {
        let attempt = async {
            match &self.check {
                Check::Tcp { host, port } => tokio::net::TcpStream::connect((host.as_str(), *port))
                    .await
                    .is_ok(),
                Check::Http {
                    host,
                    port,
                    path,
                    headers,
                } => http_get(host, *port, path, headers)
                    .await
                    .is_some_and(|s| (200..400).contains(&s)),
                Check::Exec(command) => exec_succeeds(command).await,
            }
        };
        tokio::time::timeout(self.timeout, attempt).await.unwrap_or(false)
    }
}

/// Runs an `exec` probe's command to its end: it passes on exit status 0. If the probe's
/// timeout drops this first, the command is killed (and reaped).
///
/// The child is polled with a short, growing sleep instead of through tokio's process driver:
/// that driver, once compiled in, checks its queue of orphaned children on every wake-up of
/// every runtime in the process, the proxies' data plane included, for the sake of a probe
/// that runs every few seconds.
async fn exec_succeeds(command: &[String]) -> bool {
    let Some((program, args)) = command.split_first() else {
        return false;
    };
    let spawned = std::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
    let Ok(child) = spawned else {
        return false;
    };
    let mut child = KilledOnDrop(Some(child));
    let mut pause = Duration::from_millis(1);
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return status.success(),
            Ok(None) => {}
            Err(_) => return false,
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

/// A probe's child process, killed and reaped if it is still running when dropped.
struct KilledOnDrop(Option<std::process::Child>);

impl KilledOnDrop {
    fn try_wait(&mut self) -> std::io::Result<Option<std::process::ExitStatus>> {
        match &mut self.0 {
            Some(child) => child.try_wait(),
            None => Err(std::io::Error::other("the probe's command was already reaped")),
        }
    }
}

impl Drop for KilledOnDrop {
    fn drop(&mut self) {
        let Some(mut child) = self.0.take() else {
            return;
        };
        if !matches!(child.try_wait(), Ok(None)) {
            return; // exited and reaped already
        }
        let _ = child.kill();
        if !matches!(child.try_wait(), Ok(Some(_))) {
            // Not gone the instant it was killed: reaped off the runtime's threads.
            std::thread::spawn(move || child.wait());
        }
    }
}

async fn http_get(host: &str, port: u16, path: &str, headers: &[(String, String)]) -> Option<u16> {
    use http_body_util::Empty;
    use hyper::body::Bytes;
    let stream = tokio::net::TcpStream::connect((host, port)).await.ok()?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
        .await
        .ok()?;
    tokio::spawn(conn);
    let authority = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let mut req = hyper::Request::get(path)
        .header(hyper::header::HOST, authority)
        .header(hyper::header::USER_AGENT, "weir-probe");
    for (k, v) in headers {
        req = req.header(k.as_str(), v.as_str());
    }
    let resp = sender
        .send_request(req.body(Empty::<Bytes>::new()).ok()?)
        .await
        .ok()?;
    Some(resp.status().as_u16())
}

/// The readiness of one workload: Kubernetes' thresholds, without I/O.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Readiness {
    healthy: bool,
    successes: u32,
    failures: u32,
}

impl Readiness {
    /// Records a result; the new health when it changes.
    fn observe(&mut self, ok: bool, probe: &Probe) -> Option<bool> {
        if ok {
            self.failures = 0;
            self.successes = self.successes.saturating_add(1);
            if !self.healthy && self.successes >= probe.success_threshold {
                self.healthy = true;
                return Some(true);
            }
        } else {
            self.successes = 0;
            self.failures = self.failures.saturating_add(1);
            if self.healthy && self.failures >= probe.failure_threshold {
                self.healthy = false;
                return Some(false);
            }
        }
        None
    }
}

/// The group of a WorkloadEntry: the annotated one, else the first (by name) in its
/// namespace whose template labels it carries.
fn group_of<'a>(store: &'a ConfigStore, entry: &weir_model::StoredObject) -> Option<&'a WorkloadGroup> {
    let groups = || {
        store
            .of_kind("WorkloadGroup")
            .filter(move |g| g.key.namespace == entry.key.namespace)
            .filter_map(|g| match g.resource.as_ref() {
                Resource::WorkloadGroup(w) => w.spec.as_ref().map(|s| (g.key.name.as_str(), s)),
                _ => None,
            })
    };
    if let Some(name) = entry.annotations().get(GROUP_ANNOTATION) {
        return groups().find(|(n, _)| n == name).map(|(_, g)| g);
    }
    let labels = match entry.resource.as_ref() {
        Resource::WorkloadEntry(w) => {
            let mut l = w.spec.as_ref().and_then(|s| s.labels.clone()).unwrap_or_default();
            l.extend(entry.labels().clone());
            l
        }
        _ => return None,
    };
    groups()
        .find(|(_, g)| {
            let template = g.template.as_ref().and_then(|t| t.labels.as_ref());
            template.is_some_and(|t| !t.is_empty() && t.iter().all(|(k, v)| labels.get(k) == Some(v)))
        })
        .map(|(_, g)| g)
}

/// Every health-checked WorkloadEntry and its probe (or why it cannot be probed).
fn targets(store: &ConfigStore) -> BTreeMap<ObjectKey, Result<Probe, String>> {
    store
        .of_kind("WorkloadEntry")
        .filter(|e| e.health_checked())
        .map(|e| {
            let address = match e.resource.as_ref() {
                Resource::WorkloadEntry(w) => w
                    .spec
                    .as_ref()
                    .and_then(|s| s.address.clone())
                    .unwrap_or_default(),
                _ => String::new(),
            };
            let probe = match group_of(store, e).and_then(|g| g.probe.as_ref()) {
                Some(p) => Probe::of(p, &address),
                None => Err("no WorkloadGroup with a probe".into()),
            };
            (e.key.clone(), probe)
        })
        .collect()
}

struct Tracked {
    probe: Result<Probe, String>,
    readiness: Readiness,
    next: Instant,
}

/// Runs the probes of every health-checked WorkloadEntry while the process lives, following
/// configuration changes (new entries, new probes).
pub async fn run(server: DiscoveryServer) {
    let mut tracked: BTreeMap<ObjectKey, Tracked> = BTreeMap::new();
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    loop {
        tick.tick().await;
        let now = Instant::now();
        let wanted = server.with_model(|m| targets(&m.store));
        tracked.retain(|k, _| wanted.contains_key(k));
        for (key, probe) in wanted {
            let same = tracked.get(&key).is_some_and(|t| t.probe == probe);
            if !same {
                match &probe {
                    Ok(p) => tracing::info!(entry = %key, ?p, "probing"),
                    Err(e) => tracing::warn!(entry = %key, "not probed, so it takes no traffic: {e}"),
                }
                let delay = probe.as_ref().map_or(Duration::ZERO, |p| p.initial_delay);
                tracked.insert(
                    key.clone(),
                    Tracked {
                        probe,
                        readiness: Readiness::default(),
                        next: now + delay,
                    },
                );
            }
        }
        let due: Vec<(ObjectKey, Probe)> = tracked
            .iter_mut()
            .filter(|(_, t)| t.next <= now)
            .filter_map(|(k, t)| {
                let p = t.probe.as_ref().ok()?;
                t.next = now + p.period;
                Some((k.clone(), p.clone()))
            })
            .collect();
        let mut running = tokio::task::JoinSet::new();
        for (k, p) in due {
            running.spawn(async move {
                let ok = p.run().await;
                (k, p, ok)
            });
        }
        while let Some(Ok((key, probe, ok))) = running.join_next().await {
            let Some(t) = tracked.get_mut(&key) else { continue };
            if let Some(healthy) = t.readiness.observe(ok, &probe) {
                tracing::info!(entry = %key, healthy, "readiness changed");
                server.apply(|store| store.set_health(&key, healthy));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(success: u32, failure: u32) -> Probe {
        Probe {
            check: Check::Tcp {
                host: "127.0.0.1".into(),
                port: 1,
            },
            initial_delay: Duration::ZERO,
            period: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            success_threshold: success,
            failure_threshold: failure,
        }
    }

    #[test]
    fn readiness_follows_kubernetes_thresholds() {
        let p = probe(2, 3);
        let mut r = Readiness::default();
        assert_eq!(r.observe(true, &p), None, "one success of two");
        assert_eq!(r.observe(false, &p), None, "still not ready");
        assert_eq!(r.observe(true, &p), None);
        assert_eq!(r.observe(true, &p), Some(true));
        assert_eq!(r.observe(false, &p), None);
        assert_eq!(r.observe(false, &p), None);
        assert_eq!(r.observe(true, &p), None, "a success resets the failures");
        for _ in 0..2 {
            assert_eq!(r.observe(false, &p), None);
        }
        assert_eq!(r.observe(false, &p), Some(false));
    }

    #[tokio::test]
    async fn exec_probes_pass_on_exit_status_zero_only() {
        let command = |args: &[&str]| args.iter().map(|a| a.to_string()).collect::<Vec<_>>();
        assert!(exec_succeeds(&command(&["true"])).await);
        assert!(!exec_succeeds(&command(&["false"])).await);
        assert!(!exec_succeeds(&command(&["sh", "-c", "sleep 0.05; exit 3"])).await);
        assert!(!exec_succeeds(&command(&["/no/such/weir-probe-command"])).await);
        assert!(!exec_succeeds(&[]).await);
    }

    #[tokio::test]
    async fn an_exec_probe_past_its_timeout_fails_and_its_command_is_killed() {
        let dir = std::env::temp_dir().join(format!("weir-probe-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let pid_file = dir.join("pid");
        let script = format!("echo $$ > {}; exec sleep 30", pid_file.display());
        let probe = Probe {
            check: Check::Exec(vec!["sh".into(), "-c".into(), script]),
            timeout: Duration::from_millis(300),
            ..probe(1, 1)
        };
        let started = std::time::Instant::now();
        assert!(
            !probe.run().await,
            "a command still running at the timeout fails the probe"
        );
        assert!(started.elapsed() < Duration::from_secs(10));
        let pid = std::fs::read_to_string(&pid_file).unwrap();
        let proc_dir = std::path::PathBuf::from(format!("/proc/{}", pid.trim()));
        // Killed and reaped: no process, not even a zombie, under that pid (a new process
        // could reuse it only after many thousands of others).
        let mut gone = false;
        for _ in 0..200 {
            if !proc_dir.exists() {
                gone = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(gone, "the probe's command {} is still there", pid.trim());
    }

    #[test]
    fn probes_take_kubernetes_defaults_and_name_what_cannot_run() {
        let p: ReadinessProbe =
            serde_json::from_str(r#"{"httpGet": {"path": "/ready", "port": 8080}}"#).unwrap();
        let probe = Probe::of(&p, "10.0.0.1").unwrap();
        assert_eq!(
            probe.check,
            Check::Http {
                host: "10.0.0.1".into(),
                port: 8080,
                path: "/ready".into(),
                headers: vec![]
            }
        );
        assert_eq!(
            (probe.period, probe.timeout),
            (Duration::from_secs(10), Duration::from_secs(1))
        );
        assert_eq!((probe.success_threshold, probe.failure_threshold), (1, 3));
        let grpc: ReadinessProbe = serde_json::from_str(r#"{"grpc": {"port": 9000}}"#).unwrap();
        assert!(Probe::of(&grpc, "10.0.0.1").unwrap_err().contains("gRPC"));
    }
}
