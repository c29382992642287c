//! The examples' READMEs, as written: `examples/<name>/up.sh` brings up the demo backends and
//! `weir run`, and curl (through `http_proxy`) sees what the README says — weighted routing,
//! header routing and a ServiceEntry outside the mesh (quickstart); outlier detection, faults,
//! mirroring and circuit breaking (resilience). Ctrl-C stops everything.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a panic in a test is a failed test

mod support;

use support::free_port;

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn curl(proxy: &str, args: &[&str]) -> String {
    let out = Command::new("curl")
        .args(["-s", "--max-time", "10"])
        .args(args)
        .env("http_proxy", proxy)
        .env("no_proxy", "127.0.0.1")
        .output()
        .expect("curl runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// An example brought up by its `up.sh` on free ports, in its own process group.
struct Example {
    up: Child,
    proxy: String,
    admin: String,
}

impl Example {
    fn up(name: &str) -> Example {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let (http, admin, discovery) = (free_port(), free_port(), free_port());
        let up = Command::new(root.join(format!("examples/{name}/up.sh")))
            .env("WEIR", env!("CARGO_BIN_EXE_weir"))
            .env("WEIR_HTTP_PROXY", format!("127.0.0.1:{http}"))
            .env("WEIR_ADMIN", format!("127.0.0.1:{admin}"))
            .env("WEIR_DISCOVERY", format!("127.0.0.1:{discovery}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap();
        Example {
            up,
            proxy: format!("http://127.0.0.1:{http}"),
            admin: format!("http://127.0.0.1:{admin}"),
        }
    }

    fn curl(&self, args: &[&str]) -> String {
        curl(&self.proxy, args)
    }

    /// Ctrl-C to the process group; whether everything stopped within 10 s.
    fn stop(&mut self) -> bool {
        let group = format!("-{}", self.up.id());
        let _ = Command::new("kill").args(["-INT", "--", &group]).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.up.try_wait().unwrap().is_some() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        false
    }
}

impl Drop for Example {
    fn drop(&mut self) {
        if self.up.try_wait().ok().flatten().is_none() {
            self.stop();
        }
    }
}

#[test]
fn the_quickstart_works_as_the_readme_says() {
    let mut ex = Example::up("quickstart");
    let url = "http://hello.default.svc.cluster.local/";
    support::eventually("the quickstart answers", Duration::from_secs(30), &mut || {
        ex.curl(&[url]).contains("\"server\"")
    });
    let v1 = (0..200)
        .filter(|_| ex.curl(&[url]).contains("\"server\": \"hello-v1\""))
        .count();
    let jason = ex.curl(&["-H", "end-user: jason", url]);
    let weather = ex.curl(&["http://api.weather.example/forecast"]);
    let stopped = ex.stop();
    assert!(
        (130..=185).contains(&v1),
        "hello-v1 answered {v1} of 200 (80% expected)"
    );
    assert!(jason.contains("\"server\": \"hello-v2\""), "{jason}");
    assert!(weather.contains("\"server\": \"weather-api\""), "{weather}");
    assert!(stopped, "Ctrl-C stops the quickstart");
}

#[test]
fn the_resilience_example_works_as_the_readme_says() {
    let mut ex = Example::up("resilience");
    let ratings = "http://ratings.default.svc.cluster.local/";
    let status = |args: &[&str]| {
        let mut all = vec!["-o", "/dev/null", "-w", "%{http_code}"];
        all.extend_from_slice(args);
        ex.curl(&all)
    };
    support::eventually("the example answers", Duration::from_secs(30), &mut || {
        ex.curl(&["http://orders.default.svc.cluster.local/"])
            .contains("\"server\"")
    });
    let codes: Vec<String> = (0..12).map(|_| status(&[ratings])).collect();
    let failures: Vec<usize> = (0..codes.len()).filter(|&i| codes[i] == "500").collect();
    assert_eq!(
        failures.len(),
        3,
        "the broken instance is ejected after three 5xx: {codes:?}"
    );
    // Round robin over three instances: the third 500 comes by the ninth request.
    assert!(failures[2] <= 8, "{codes:?}");
    assert!(codes[failures[2] + 1..].iter().all(|c| c == "200"), "{codes:?}");
    let clusters = ex.curl(&[&format!("{}/clusters", ex.admin)]);
    assert!(
        clusters.contains("::127.0.0.1:9103::health_flags::/failed_outlier_check"),
        "{clusters}"
    );

    let started = Instant::now();
    assert_eq!(status(&["-H", "end-user: jason", ratings]), "200");
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "the tester waits 2 s"
    );
    let flaky = format!("{ratings}flaky");
    let aborted = (0..40).filter(|_| status(&[&flaky]) == "500").count();
    // binomial(40, 0.5): within ±3.8 standard deviations.
    assert!((8..=32).contains(&aborted), "{aborted} of 40 aborted");

    let order = ex.curl(&[
        "-X",
        "POST",
        "-d",
        "order",
        "http://orders.default.svc.cluster.local/orders",
    ]);
    assert!(order.contains("\"server\": \"orders-v1\""), "{order}");
    support::eventually("v2 saw the copy", Duration::from_secs(10), &mut || {
        ex.curl(&["http://127.0.0.1:9105/__requests"])
            .contains("\"authority\":\"orders.default.svc.cluster.local-shadow\"")
    });

    let proxy = ex.proxy.clone();
    let slow: Vec<_> = (0..6)
        .map(|i| {
            let proxy = proxy.clone();
            // The first request takes the connection before the others arrive.
            std::thread::sleep(Duration::from_millis(if i == 1 { 200 } else { 0 }));
            std::thread::spawn(move || {
                curl(
                    &proxy,
                    &[
                        "-o",
                        "/dev/null",
                        "-w",
                        "%{http_code}",
                        "-H",
                        "x-echo-delay-ms: 600",
                        "http://httpbin.default.svc.cluster.local/",
                    ],
                )
            })
        })
        .collect();
    let codes: Vec<String> = slow.into_iter().map(|t| t.join().unwrap()).collect();
    assert_eq!(codes.iter().filter(|c| *c == "503").count(), 4, "{codes:?}");
    assert!(ex.stop(), "Ctrl-C stops the example");
}
