//! `smart-cctv alerts list`: stored alerts. While the service runs it owns
//! the database, so the list comes from its API; when it is stopped, the
//! file is read directly. The database is never opened twice.

use super::Cli;
use super::service_api::{ListFilter, Listed, Source, call, json_line, query_string};
use crate::store::{AlertRecord, Query};
use clap::Subcommand;
use std::time::Duration;

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
        #[arg(long)]
        rule: Option<String>,
        #[command(flatten)]
        filter: ListFilter,
    },
}

pub fn run(cli: &Cli, command: &AlertsCommand) -> anyhow::Result<i32> {
    let config = crate::config::load(cli.config_path().as_deref())?.config;
    let data_dir = cli.data_dir.clone().unwrap_or(config.storage.data_dir.clone());
    let source = Source::open(&data_dir, &config.http.listen)?;
    // In a cluster the running service asks every edge and merges.
    let clustered = config.cluster.is_some();
    let fetch = |since: Option<&str>, query: &Query| -> anyhow::Result<Listed<AlertRecord>> {
        match &source {
            Source::File(store) => Ok(Listed::local(store.alerts(query)?)),
            Source::Service(listen) if clustered => {
                Listed::merged(&data_dir, listen, "alerts", &query_string(since, query))
            }
            Source::Service(listen) => {
                let path = format!("/api/alerts?{}", query_string(since, query));
                Ok(Listed::local(call(&data_dir, listen, "GET", &path, Duration::from_secs(15))?))
            }
        }
    };
    let list = match command {
        AlertsCommand::Analyze { days, json } => {
            let since = format!("{days}d");
            let query = Query::default().since(Some(Duration::from_secs(days * 86_400)));
            let listed = fetch(Some(&since), &query)?;
            listed.report_unreachable();
            let alerts: Vec<AlertRecord> = listed.records.into_iter().map(|(_, a)| a).collect();
            let analysis = crate::store::analyze::analyze(&alerts, 10);
            if *json {
                println!("{}", serde_json::to_string_pretty(&analysis)?);
            } else {
                print!("{analysis}");
            }
            return Ok(0);
        }
        AlertsCommand::List { rule, filter } => (rule, filter),
    };
    let (rule, filter) = list;
    let json = filter.json;
    let listed = fetch(filter.since.as_deref(), &filter.query(rule.clone())?)?;
    listed.report_unreachable();
    let alerts = &listed.records;
    for (node_name, a) in alerts {
        let node = node_name.as_deref().map(|n| format!("{n:<12} ")).unwrap_or_default();
        if json {
            println!("{}", json_line(node_name.as_deref(), a)?);
        } else {
            println!(
                "{}  {node}{:<20} {:<12} {:<10} {:.2}  {}",
                local_time(a.time_us),
                a.rule,
                a.camera,
                a.class,
                a.confidence,
                a.snapshot
            );
        }
    }
    if !json {
        println!("{} alert(s)", alerts.len());
    }
    Ok(0)
}

/// Unix microseconds as local time, to the second.
pub fn local_time(us: i64) -> String {
    chrono::DateTime::from_timestamp_micros(us)
        .map(|t| t.with_timezone(&chrono::Local).format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_else(|| us.to_string())
}
