//! Camera and inference nodes as separate processes on loopback: frames
//! cross to the inference node, detections and alerts come back to the edge,
//! and the edge lives through the inference node's death and return.

use crate::support::*;
use std::time::Duration;

crate::tests![
    an_edge_detects_on_an_inference_node_and_lives_through_its_death needs [RealFixtures],
    a_peer_with_the_wrong_cookie_is_refused,
    an_all_node_shares_its_frames_with_an_inference_node needs [RealFixtures],
    a_cut_link_between_two_hosts_is_a_loss_and_its_repair_a_return needs [RealFixtures, NetNamespaces],
    alerts_and_events_are_listed_from_every_edge_and_a_silent_one_is_named needs [RealFixtures],
    nodes_with_tls_talk_and_a_node_without_it_is_kept_out needs [RealFixtures],
];

const WAIT: Duration = Duration::from_secs(90);
const COOKIE: &str = "a-cluster-cookie-of-some-length";

/// The sum of every series of `name` whose labels contain each of `labels`.
fn sum(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let rest = series.strip_prefix(name)?;
            (rest.is_empty() || rest.starts_with('{')).then_some(())?;
            labels.iter().all(|want| rest.contains(want)).then(|| value.parse::<f64>().ok())?
        })
        .sum()
}

/// `/metrics`, or nothing while the service does not answer yet.
fn metrics(service: &Service) -> String {
    http_get(service.addr, "/metrics").map(|(_, text)| text).unwrap_or_default()
}

/// `tls` is a `tls:` block (see [`make_certificates`]) or empty.
fn cluster_section(name: &str, port: u16, role: &str, peers: &[u16], cookie: &str, tls: &str) -> String {
    let peers: Vec<String> = peers.iter().map(|p| format!("\"127.0.0.1:{p}\"")).collect();
    format!(
        "cluster:\n  node_name: {name}\n  listen: \"127.0.0.1:{port}\"\n  peers: [{}]\n  cookie: \"{cookie}\"\n  role: {role}\n  inference_deadline: 5s\n{tls}",
        peers.join(", ")
    )
}

/// A CA and one certificate for 127.0.0.1 (server and client use) signed by
/// it, made with the openssl command; the `tls:` block that names them.
fn make_certificates(dir: &std::path::Path) -> String {
    let run = |args: &[&str]| {
        let out = std::process::Command::new("openssl").args(args).current_dir(dir).output().unwrap();
        assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=cluster-ca",
    ]);
    run(&["req", "-newkey", "rsa:2048", "-nodes", "-keyout", "node.key", "-out", "node.csr", "-subj", "/CN=node"]);
    std::fs::write(dir.join("ext"), "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n").unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "node.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "node.pem",
        "-days",
        "2",
        "-extfile",
        "ext",
    ]);
    let path = |name: &str| dir.join(name).display().to_string();
    format!(
        "  tls:\n    cert_file: {}\n    key_file: {}\n    ca_file: {}\n",
        path("node.pem"),
        path("node.key"),
        path("ca.pem")
    )
}

/// An inference node: no cameras, the model, one worker.
fn inference_node(model: &std::path::Path, port: u16, cookie: &str) -> Service {
    inference_node_with(model, port, cookie, "")
}

fn inference_node_with(model: &std::path::Path, port: u16, cookie: &str, tls: &str) -> Service {
    let config = format!(
        "cameras: []\nprocessing:\n  detection:\n    model: {}\n    size: 320\n    workers: 1\nhttp:\n  listen: \"{{listen}}\"\n{}",
        model.display(),
        cluster_section("infer-1", port, "inference", &[], cookie, tls)
    );
    Service::start(&config, &[])
}

/// A node with the walking clip, the motion gate off, and a person rule.
fn camera_node(name: &str, role: &str, port: u16, peers: &[u16], workers: usize) -> Service {
    camera_node_with(name, role, port, peers, workers, "")
}

fn camera_node_with(name: &str, role: &str, port: u16, peers: &[u16], workers: usize, tls: &str) -> Service {
    let fixtures = crate::fixtures::real();
    let config = format!(
        "cameras:\n  - id: walk\n    url: file://{}\nprocessing:\n  detection:\n    model: {}\n    size: 320\n    workers: {workers}\n  motion:\n    enabled: false\n\
         alert_rules:\n  - name: person\n    conditions:\n      classes: [person]\n    cooldown: 5s\n\
         http:\n  listen: \"{{listen}}\"\n{}",
        fixtures.join("video/people_walking_640x480_15fps_10s.mp4").display(),
        fixtures.join("yolov8n/yolov8n.safetensors").display(),
        cluster_section(name, port, role, peers, COOKIE, tls)
    );
    Service::start(&config, &[])
}

fn status(service: &Service) -> serde_json::Value {
    http_get(service.addr, "/api/status")
        .ok()
        .and_then(|(_, body)| serde_json::from_str(&body).ok())
        .unwrap_or_default()
}

fn peer(service: &Service, name: &str) -> Option<serde_json::Value> {
    status(service)["cluster"]["peers"].as_array()?.iter().find(|p| p["name"] == name).cloned()
}

fn an_edge_detects_on_an_inference_node_and_lives_through_its_death() {
    let (inference_port, edge_port) = (free_port(), free_port());
    let weights = crate::fixtures::real().join("yolov8n/yolov8n.safetensors");
    let mut inference = inference_node(&weights, inference_port, COOKIE);
    inference.wait_healthy(WAIT);
    let edge = camera_node("edge-1", "edge", edge_port, &[inference_port], 1);

    // Detections are computed on the inference node and come back as alerts.
    wait_for("frames served for edge-1", WAIT, || {
        let served = sum(&metrics(&inference), "smart_cctv_cluster_frames_total", &["node=\"edge-1\"", "served"]);
        (served >= 10.0).then_some(())
    });
    wait_for("detections back on the edge", WAIT, || {
        let sent = sum(&metrics(&edge), "smart_cctv_cluster_frames_total", &["node=\"infer-1\"", "sent"]);
        (sent >= 10.0).then_some(())
    });
    wait_for("an alert on the edge", WAIT, || {
        let alerts: serde_json::Value = serde_json::from_str(&edge.get("/api/alerts").1).ok()?;
        alerts.as_array().is_some_and(|a| !a.is_empty()).then_some(())
    });
    let text = metrics(&edge);
    assert_eq!(sum(&text, "smart_cctv_inference_seconds_count", &[]), 0.0, "the edge ran the model itself");
    assert!(sum(&metrics(&inference), "smart_cctv_inference_seconds_count", &[]) >= 10.0);
    let seen = peer(&edge, "infer-1").expect("the edge lists infer-1");
    assert_eq!(seen["up"], true, "{seen}");
    assert_eq!(seen["role"], "inference", "{seen}");
    assert!(seen["rtt_ms"].as_f64().is_some(), "{seen}");
    assert_eq!(edge.get("/healthz").0, 200);
    // The web page's System page lists the nodes (no user yet: loopback is open).
    let page = edge.get("/system").1;
    assert!(page.contains("Cluster") && page.contains("infer-1") && page.contains("inference"), "{page}");

    // The inference node dies: the edge names it, counts what it cannot place,
    // and its camera keeps streaming.
    inference.kill_hard();
    wait_for("the edge to name infer-1 down", WAIT, || {
        let (code, body) = edge.get("/healthz");
        (code == 503 && body.contains("cluster/infer-1")).then_some(())
    });
    let lost = |edge: &Service| sum(&metrics(edge), "smart_cctv_frames_lost_total", &["reason=\"no_worker\""]);
    let before = lost(&edge);
    wait_for("frames counted as having no worker", WAIT, || (lost(&edge) >= before + 10.0).then_some(()));
    assert_eq!(status(&edge)["components"]["camera/walk"]["state"], "streaming");

    // It comes back: detections resume with no restart of the edge.
    let sent = |edge: &Service| sum(&metrics(edge), "smart_cctv_cluster_frames_total", &["node=\"infer-1\"", "sent"]);
    let sent_before = sent(&edge);
    inference.restart();
    wait_for("detections to resume through infer-1", WAIT, || (sent(&edge) >= sent_before + 10.0).then_some(()));
    wait_for("the edge to be healthy again", WAIT, || (edge.get("/healthz").0 == 200).then_some(()));
    assert!(peer(&edge, "infer-1").unwrap()["up"] == true);
}

fn a_peer_with_the_wrong_cookie_is_refused() {
    let (inference_port, edge_port) = (free_port(), free_port());
    let inference = inference_node(&crate::fixtures::random_model(), inference_port, "the-right-cookie-0123456789");
    inference.wait_healthy(WAIT);
    let config = format!(
        "cameras: []\nprocessing:\n  detection:\n    model: {}\nhttp:\n  listen: \"{{listen}}\"\n{}",
        crate::fixtures::random_model().display(),
        cluster_section("edge-1", edge_port, "edge", &[inference_port], "a-wrong-cookie-0123456789", "")
    );
    let edge = Service::start(&config, &[]);
    let address = format!("127.0.0.1:{inference_port}");
    wait_for("the inference node to log the refusal", WAIT, || {
        inference.output().contains("did not authenticate").then_some(())
    });
    wait_for("the edge to show the peer refused", WAIT, || {
        let seen = peer(&edge, &address)?;
        (seen["up"] == false && seen["reason"].as_str()?.contains("cookie")).then_some(())
    });
    let (code, body) = edge.get("/healthz");
    assert_eq!(code, 503);
    assert!(body.contains(&format!("cluster/{address}")), "{body}");
    assert!(sum(&metrics(&inference), "smart_cctv_cluster_refused_total", &[]) >= 1.0);
    let listed = status(&inference)["cluster"]["peers"].as_array().cloned().unwrap_or_default();
    assert!(listed.iter().all(|p| p["name"] != "edge-1"), "a refused node is not a peer: {listed:?}");
    assert!(!inference.output().contains("a-wrong-cookie") && !edge.output().contains("a-wrong-cookie"));
}

fn an_all_node_shares_its_frames_with_an_inference_node() {
    let (inference_port, all_port) = (free_port(), free_port());
    let weights = crate::fixtures::real().join("yolov8n/yolov8n.safetensors");
    let inference = inference_node(&weights, inference_port, COOKIE);
    inference.wait_healthy(WAIT);
    let all = camera_node("box-1", "all", all_port, &[inference_port], 1);
    all.wait_healthy(WAIT);
    // Both run frames: the local worker and the inference node each take the
    // next one when they are free.
    wait_for("frames run on both nodes", WAIT, || {
        let remote = sum(&metrics(&inference), "smart_cctv_cluster_frames_total", &["node=\"box-1\"", "served"]);
        let local = sum(&metrics(&all), "smart_cctv_inference_seconds_count", &[]);
        (remote >= 10.0 && local >= 10.0).then_some(())
    });
    let seen = peer(&all, "infer-1").unwrap();
    assert_eq!(seen["frames_failed"], 0, "{seen}");
    assert_eq!(all.get("/healthz").0, 200);
}

/// Two private hosts (network namespaces joined by a veth), torn down on drop.
struct HostPair {
    name: String,
    script: std::path::PathBuf,
}

impl HostPair {
    fn up() -> Self {
        let script = crate::fixtures::shared_testbed().join("netns-pair");
        let name = format!("sc{}", std::process::id() % 100_000);
        let pair = Self { name, script };
        pair.run("up");
        pair
    }

    fn run(&self, verb: &str) {
        let status = std::process::Command::new(&self.script).args([verb, &self.name]).output().unwrap();
        assert!(status.status.success(), "netns-pair {verb}: {}", String::from_utf8_lossy(&status.stderr));
    }

    fn namespace(&self, side: &str) -> String {
        format!("{}-{side}", self.name)
    }
}

impl Drop for HostPair {
    fn drop(&mut self) {
        let _ = std::process::Command::new(&self.script).args(["down", &self.name]).status();
    }
}

/// `/api/status` through the ops socket: the service's HTTP port is on the
/// loopback of its own namespace, its data directory is on the shared disk.
fn status_via_socket(service: &Service) -> Option<serde_json::Value> {
    // The socket answers first; the TCP address is never tried while it does.
    let unreachable = "127.0.0.1:1";
    smart_cctv::cmds::service_api::call(&service.data_dir(), unreachable, "GET", "/api/status", Duration::from_secs(5))
        .ok()
}

fn peer_via_socket(service: &Service, name: &str) -> Option<serde_json::Value> {
    status_via_socket(service)?["cluster"]["peers"].as_array()?.iter().find(|p| p["name"] == name).cloned()
}

fn a_cut_link_between_two_hosts_is_a_loss_and_its_repair_a_return() {
    let pair = HostPair::up();
    let fixtures = crate::fixtures::real();
    let weights = fixtures.join("yolov8n/yolov8n.safetensors");
    let (a, b) = (pair.namespace("a"), pair.namespace("b"));
    let inference_config = format!(
        "cameras: []\nprocessing:\n  detection:\n    model: {}\n    size: 320\nhttp:\n  listen: \"{{listen}}\"\n\
         cluster:\n  node_name: infer-1\n  listen: \"10.77.0.2:9820\"\n  cookie: \"{COOKIE}\"\n  role: inference\n",
        weights.display()
    );
    let inference = Service::start_wrapped(&["ip", "netns", "exec", &b], &inference_config, &[]);
    let edge_config = format!(
        "cameras:\n  - id: walk\n    url: file://{}\nprocessing:\n  detection:\n    model: {}\n    size: 320\n  motion:\n    enabled: false\n\
         http:\n  listen: \"{{listen}}\"\n\
         cluster:\n  node_name: edge-1\n  listen: \"10.77.0.1:9820\"\n  peers: [\"10.77.0.2:9820\"]\n  cookie: \"{COOKIE}\"\n  role: edge\n",
        fixtures.join("video/people_walking_640x480_15fps_10s.mp4").display(),
        weights.display()
    );
    let edge = Service::start_wrapped(&["ip", "netns", "exec", &a], &edge_config, &[]);
    let received = |edge: &Service| peer_via_socket(edge, "infer-1").and_then(|p| p["frames_received"].as_u64());
    wait_for("detections across the link", WAIT, || received(&edge).filter(|n| *n >= 10));
    assert!(status_via_socket(&inference).unwrap()["cluster"]["frames_served"].as_u64().unwrap() >= 10);

    // Cut: no packet passes, no socket closes. The heartbeat notices.
    pair.run("cut");
    wait_for("the edge to see infer-1 down", WAIT, || {
        let status = status_via_socket(&edge)?;
        (status["down"].get("cluster/infer-1").is_some()).then_some(())
    });
    let status = status_via_socket(&edge).unwrap();
    assert_eq!(status["components"]["camera/walk"]["state"], "streaming", "{status}");
    assert_eq!(peer_via_socket(&edge, "infer-1").unwrap()["up"], false);

    // Restore: the edge dials again and detections resume.
    let before = received(&edge).unwrap_or(0);
    pair.run("restore");
    wait_for("detections to resume across the link", WAIT, || received(&edge).filter(|n| *n >= before + 10));
    wait_for("infer-1 up again", WAIT, || {
        let status = status_via_socket(&edge)?;
        (status["down"].get("cluster/infer-1").is_none()).then_some(())
    });
    drop(edge);
    drop(inference);
}

/// `smart-cctv ARGS` on `service`'s config and data: success, stdout, stderr.
fn cli(service: &Service, args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(BIN)
        .arg("--config")
        .arg(service.config_path())
        .arg("--data-dir")
        .arg(service.data_dir())
        .args(args)
        .output()
        .unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

fn alerts_and_events_are_listed_from_every_edge_and_a_silent_one_is_named() {
    let (port_a, port_b) = (free_port(), free_port());
    let a = camera_node("box-a", "all", port_a, &[port_b], 1);
    let mut b = camera_node("box-b", "all", port_b, &[port_a], 1);
    a.wait_healthy(WAIT);
    b.wait_healthy(WAIT);
    // Each edge keeps its own alerts; a list on either shows both.
    wait_for("alerts on both edges", WAIT, || {
        let own = |s: &Service| serde_json::from_str::<Vec<serde_json::Value>>(&s.get("/api/alerts").1).ok();
        (!own(&a)?.is_empty() && !own(&b)?.is_empty()).then_some(())
    });
    let listed = wait_for("a merged list from box-a", WAIT, || {
        let (ok, out, err) = cli(&a, &["alerts", "list", "--json"]);
        assert!(ok, "{err}");
        let nodes: std::collections::BTreeSet<String> = out
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()?["node"].as_str().map(str::to_owned))
            .collect();
        (nodes.len() == 2).then_some(nodes)
    });
    assert_eq!(listed.into_iter().collect::<Vec<_>>(), ["box-a", "box-b"]);
    // Both dialled each other; the second session is dropped quietly.
    assert!(!a.output().contains("cookie") && !b.output().contains("cookie"), "{}\n{}", a.output(), b.output());
    let (ok, out, _) = cli(&b, &["events", "list", "--since", "1h"]);
    assert!(ok && out.contains("event(s)"), "{out}");

    // box-b stops: box-a still lists its own and names box-b.
    b.kill_hard();
    wait_for("box-a to see box-b down", WAIT, || (peer(&a, "box-b")?["up"] == false).then_some(()));
    let (ok, out, err) = cli(&a, &["alerts", "list"]);
    assert!(ok, "{err}");
    assert!(out.contains("box-a") && !out.contains("box-b"), "{out}");
    assert!(err.contains("box-b: unreachable"), "{err}");
    let (ok, out, err) = cli(&a, &["alerts", "analyze"]);
    assert!(ok && err.contains("box-b: unreachable"), "{out}{err}");
}

fn nodes_with_tls_talk_and_a_node_without_it_is_kept_out() {
    let certificates = tempfile::tempdir().unwrap();
    let tls = make_certificates(certificates.path());
    let (inference_port, edge_port, plain_port) = (free_port(), free_port(), free_port());
    let weights = crate::fixtures::real().join("yolov8n/yolov8n.safetensors");
    let inference = inference_node_with(&weights, inference_port, COOKIE, &tls);
    inference.wait_healthy(WAIT);
    let edge = camera_node_with("edge-1", "edge", edge_port, &[inference_port], 1, &tls);
    let plain = camera_node("edge-2", "edge", plain_port, &[inference_port], 1);
    wait_for("detections over TLS", WAIT, || {
        let sent = sum(&metrics(&edge), "smart_cctv_cluster_frames_total", &["node=\"infer-1\"", "sent"]);
        (sent >= 5.0).then_some(())
    });
    // The right cookie without a certificate does not get in.
    wait_for("the plain node to have tried", WAIT, || {
        let seen = peer(&plain, &format!("127.0.0.1:{inference_port}"))?;
        (seen["up"] == false && seen["reason"].as_str().is_some()).then_some(())
    });
    let served = sum(&metrics(&inference), "smart_cctv_cluster_frames_total", &["node=\"edge-2\""]);
    assert_eq!(served, 0.0);
    assert!(peer(&inference, "edge-2").is_none());
}
