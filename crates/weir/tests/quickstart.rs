//! The README's quickstart, as written: `examples/quickstart/up.sh` brings up the demo backends
//! and `weir run`, and curl (through `http_proxy`) sees weighted routing, header routing and the
//! ServiceEntry outside the mesh; Ctrl-C stops everything.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a panic in a test is a failed test

mod support;

use support::free_port;

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn curl(proxy: &str, args: &[&str]) -> String {
    let out = Command::new("curl")
        .args(["-s", "--max-time", "10"])
        .args(args)
        .env("http_proxy", proxy)
        .output()
        .expect("curl runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_quickstart_works_as_the_readme_says() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let (http, admin, discovery) = (free_port(), free_port(), free_port());
    let proxy = format!("http://127.0.0.1:{http}");
    let mut up = Command::new(root.join("examples/quickstart/up.sh"))
        .env("WEIR", env!("CARGO_BIN_EXE_weir"))
        .env("WEIR_HTTP_PROXY", format!("127.0.0.1:{http}"))
        .env("WEIR_ADMIN", format!("127.0.0.1:{admin}"))
        .env("WEIR_DISCOVERY", format!("127.0.0.1:{discovery}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .unwrap();
    let group = up.id().to_string();
    let stop = |up: &mut std::process::Child| {
        let _ = Command::new("kill")
            .args(["-INT", "--", &format!("-{group}")])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if up.try_wait().unwrap().is_some() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{group}")])
            .status();
        false
    };
    let url = "http://hello.default.svc.cluster.local/";
    support::eventually("the quickstart answers", Duration::from_secs(30), &mut || {
        curl(&proxy, &[url]).contains("\"server\"")
    });
    let v1 = (0..200)
        .filter(|_| curl(&proxy, &[url]).contains("\"server\": \"hello-v1\""))
        .count();
    let jason = curl(&proxy, &["-H", "end-user: jason", url]);
    let weather = curl(&proxy, &["http://api.weather.example/forecast"]);
    let stopped = stop(&mut up);
    assert!(
        (130..=185).contains(&v1),
        "hello-v1 answered {v1} of 200 (80% expected)"
    );
    assert!(jason.contains("\"server\": \"hello-v2\""), "{jason}");
    assert!(weather.contains("\"server\": \"weather-api\""), "{weather}");
    assert!(stopped, "Ctrl-C stops the quickstart");
}
