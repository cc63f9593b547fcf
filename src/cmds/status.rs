//! `smart-cctv status [--watch]`: one table of cameras, detector, speakers,
//! store, disk and the process, from the running service's `/api/status`.

use super::Cli;
use super::service_api::call;
use clap::Args;
use serde_json::Value;
use std::fmt::Write as _;
use std::time::Duration;

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Refresh every N seconds until interrupted
    #[arg(long, value_name = "SECONDS", num_args = 0..=1, default_missing_value = "2")]
    pub watch: Option<u64>,
    /// The raw `/api/status` JSON
    #[arg(long)]
    pub json: bool,
}

pub fn run(cli: &Cli, args: &StatusArgs) -> anyhow::Result<i32> {
    let config = crate::config::load(cli.config_path().as_deref())?.config;
    let data_dir = cli.data_dir.clone().unwrap_or(config.storage.data_dir.clone());
    let listen = config.http.listen;
    loop {
        let status: Value = call(&data_dir, &listen, "GET", "/api/status", Duration::from_secs(10))
            .map_err(|e| anyhow::anyhow!("is the service running? {e}"))?;
        let text = if args.json { serde_json::to_string_pretty(&status)? } else { render(&status) };
        match args.watch {
            Some(seconds) => {
                // Clear the screen and go home, as `watch` does.
                print!("\x1b[2J\x1b[H{text}");
                std::thread::sleep(Duration::from_secs(seconds.max(1)));
            }
            None => {
                print!("{text}");
                return Ok(if status["healthy"].as_bool() == Some(true) { 0 } else { 1 });
            }
        }
    }
}

/// The table, from `/api/status` JSON.
pub fn render(status: &Value) -> String {
    let mut out = String::new();
    let components = status["components"].as_object().cloned().unwrap_or_default();
    let details = status["details"].as_object().cloned().unwrap_or_default();
    let healthy = status["healthy"].as_bool() == Some(true);
    let down: Vec<&String> = status["down"].as_object().map(|d| d.keys().collect()).unwrap_or_default();
    let _ = writeln!(
        out,
        "smart-cctv: {}",
        if healthy {
            "healthy".to_owned()
        } else {
            format!("UNHEALTHY ({})", down.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", "))
        }
    );
    let state = |c: &Value| c["state"].as_str().unwrap_or("?").to_owned();
    let error = |c: &Value| c["error"].as_str().map(|e| format!("  {e}")).unwrap_or_default();

    let _ =
        writeln!(out, "\n{:<22} {:<13} {:>9} {:>11} {:>10}", "CAMERA", "STATE", "FRAMES", "LAST FRAME", "RECONNECTS");
    for (path, c) in components.iter().filter(|(k, _)| k.starts_with("camera/")) {
        let d = details.get(path).cloned().unwrap_or_default();
        let age = d["last_frame_age_seconds"].as_f64().map_or("-".to_owned(), |a| format!("{a:.1}s ago"));
        let _ = writeln!(
            out,
            "{:<22} {:<13} {:>9} {:>11} {:>10}{}",
            &path["camera/".len()..],
            state(c),
            d["frames"].as_u64().unwrap_or(0),
            age,
            d["reconnects"].as_u64().unwrap_or(0),
            error(c)
        );
    }
    let _ = writeln!(out, "\n{:<22} {:<13}", "COMPONENT", "STATE");
    let store = &details.get("store").cloned().unwrap_or_default();
    for (path, c) in components.iter().filter(|(k, _)| !k.starts_with("camera/")) {
        let extra = match path.as_str() {
            "store" => store["last_commit_ms"]
                .as_f64()
                .map(|ms| format!("  {} commits, last {ms:.1} ms", store["commits"].as_u64().unwrap_or(0)))
                .unwrap_or_default(),
            "detector" => details
                .get("inference")
                .map_or(String::new(), |i| format!("  queue {}", i["queue_depth"].as_u64().unwrap_or(0))),
            "disk" => details.get("disk").map_or(String::new(), |d| {
                let free = d["available_bytes"].as_f64().unwrap_or(0.0) / 1e9;
                format!("  {:.1}% used, {free:.1} GB free", d["used_percent"].as_f64().unwrap_or(0.0))
            }),
            _ => String::new(),
        };
        let _ = writeln!(out, "{:<22} {:<13}{extra}{}", path, state(c), error(c));
    }
    if let Some(cluster) = status.get("cluster").filter(|c| c.is_object()) {
        render_cluster(cluster, &mut out);
    }
    if let Some(p) = details.get("process") {
        let _ = writeln!(
            out,
            "\nprocess: cpu {:.0}%, rss {:.0} MB, {} threads, {} open files",
            p["cpu_percent"].as_f64().unwrap_or(0.0),
            p["rss_bytes"].as_f64().unwrap_or(0.0) / (1024.0 * 1024.0),
            p["threads"].as_u64().unwrap_or(0),
            p["open_files"].as_u64().unwrap_or(0)
        );
    }
    let restarts: u64 =
        status["children"].as_object().map(|c| c.values().filter_map(|v| v["restarts"].as_u64()).sum()).unwrap_or(0);
    let _ = writeln!(
        out,
        "supervised children: {} ({restarts} restarts)",
        status["children"].as_object().map_or(0, |c| c.len())
    );
    out
}

/// The cluster's nodes as this node sees them.
fn render_cluster(cluster: &Value, out: &mut String) {
    let _ = writeln!(
        out,
        "\nnode {} ({}), listening on {}, {} frames served for other nodes",
        cluster["node"].as_str().unwrap_or("?"),
        cluster["role"].as_str().unwrap_or("?"),
        cluster["listen"].as_str().unwrap_or("?"),
        cluster["frames_served"].as_u64().unwrap_or(0)
    );
    let _ = writeln!(
        out,
        "{:<22} {:<10} {:<6} {:>8} {:>8} {:>9} {:>9} {:>7} {:>7}",
        "NODE", "ROLE", "STATE", "RTT", "WORKERS", "SENT", "RECEIVED", "FAILED", "SERVED"
    );
    for peer in cluster["peers"].as_array().into_iter().flatten() {
        let rtt = peer["rtt_ms"].as_f64().map_or("-".to_owned(), |ms| format!("{ms:.1} ms"));
        let reason = peer["reason"].as_str().map(|r| format!("  {r}")).unwrap_or_default();
        let _ = writeln!(
            out,
            "{:<22} {:<10} {:<6} {:>8} {:>8} {:>9} {:>9} {:>7} {:>7}{reason}",
            peer["name"].as_str().unwrap_or("?"),
            peer["role"].as_str().unwrap_or("?"),
            if peer["up"].as_bool() == Some(true) { "up" } else { "DOWN" },
            rtt,
            peer["workers"].as_u64().unwrap_or(0),
            peer["frames_sent"].as_u64().unwrap_or(0),
            peer["frames_received"].as_u64().unwrap_or(0),
            peer["frames_failed"].as_u64().unwrap_or(0),
            peer["frames_served"].as_u64().unwrap_or(0),
        );
    }
}
