//! `smart-cctv alerts list`: stored alerts. While the service runs it owns
//! the database, so the list comes from its API; when it is stopped, the
//! file is read directly. The database is never opened twice.

use super::Cli;
use crate::store::{AlertQuery, AlertRecord, Store, StoreError};
use anyhow::Context;
use clap::Subcommand;
use std::io::{Read, Write};

#[derive(Debug, Subcommand)]
pub enum AlertsCommand {
    /// Counts per rule, camera, hour of day and day, and the busiest hours
    Analyze {
        /// Days back
        #[arg(long, default_value_t = 30)]
        days: u64,
        #[arg(long)]
        json: bool,
    },
    /// List stored alerts, oldest first
    List {
        /// How far back: 7d, 12h, 30m
        #[arg(long)]
        since: Option<String>,
        #[arg(long)]
        camera: Option<String>,
        #[arg(long)]
        rule: Option<String>,
        #[arg(long)]
        class: Option<String>,
        /// At most this many (the newest)
        #[arg(long)]
        limit: Option<usize>,
        /// One JSON object per line
        #[arg(long)]
        json: bool,
    },
}

pub fn run(cli: &Cli, command: &AlertsCommand) -> anyhow::Result<i32> {
    let config = crate::config::load(cli.config_path().as_deref())?.config;
    let data_dir = cli.data_dir.clone().unwrap_or(config.storage.data_dir.clone());
    let fetch = |since: &Option<String>, query: &AlertQuery| -> anyhow::Result<Vec<AlertRecord>> {
        match Store::open(&data_dir.join(crate::store::FILE)) {
            Ok(store) => Ok(store.alerts(query)?),
            Err(StoreError::InUse { .. }) => from_service(&config.http.listen, since, query),
            Err(e) => Err(e.into()),
        }
    };
    let (since, camera, rule, class, limit, json) = match command {
        AlertsCommand::Analyze { days, json } => {
            let since = Some(format!("{days}d"));
            let query = AlertQuery::default().since(Some(std::time::Duration::from_secs(days * 86_400)));
            let analysis = crate::store::analyze::analyze(&fetch(&since, &query)?, 10);
            if *json {
                println!("{}", serde_json::to_string_pretty(&analysis)?);
            } else {
                print!("{analysis}");
            }
            return Ok(0);
        }
        AlertsCommand::List { since, camera, rule, class, limit, json } => (since, camera, rule, class, limit, json),
    };
    let ago =
        since.as_deref().map(crate::base::duration::parse).transpose().map_err(|e| anyhow::anyhow!("--since: {e}"))?;
    let query =
        AlertQuery { camera: camera.clone(), rule: rule.clone(), class: class.clone(), limit: *limit, since_us: None }
            .since(ago);
    let alerts = fetch(since, &query)?;
    for a in &alerts {
        if *json {
            println!("{}", serde_json::to_string(a)?);
        } else {
            let time = chrono::DateTime::from_timestamp_micros(a.time_us).map(|t| t.with_timezone(&chrono::Local));
            let when = time.map_or_else(|| a.time_us.to_string(), |t| t.format("%Y-%m-%d %H:%M:%S").to_string());
            println!("{when}  {:<20} {:<12} {:<10} {:.2}  {}", a.rule, a.camera, a.class, a.confidence, a.snapshot);
        }
    }
    if !json {
        println!("{} alert(s)", alerts.len());
    }
    Ok(0)
}

/// Asks the running service (`GET /api/alerts`) on its loopback listener.
fn from_service(listen: &str, since: &Option<String>, q: &AlertQuery) -> anyhow::Result<Vec<AlertRecord>> {
    let mut params = Vec::new();
    for (k, v) in [
        ("since", since.clone()),
        ("camera", q.camera.clone()),
        ("rule", q.rule.clone()),
        ("class", q.class.clone()),
        ("limit", q.limit.map(|l| l.to_string())),
    ] {
        if let Some(v) = v {
            params.push(format!("{k}={}", url::form_urlencoded::byte_serialize(v.as_bytes()).collect::<String>()));
        }
    }
    let mut stream = std::net::TcpStream::connect(listen)
        .with_context(|| format!("the event store is in use, but the service does not answer on {listen}"))?;
    stream.set_read_timeout(Some(std::time::Duration::from_secs(15)))?;
    write!(stream, "GET /api/alerts?{} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n", params.join("&"))?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (head, body) = response.split_once("\r\n\r\n").context("bad response from the service")?;
    anyhow::ensure!(head.starts_with("HTTP/1.1 200"), "the service answered: {}", head.lines().next().unwrap_or(""));
    Ok(serde_json::from_str(body)?)
}
