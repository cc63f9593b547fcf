//! `smart-cctv events list`: one line per tracked object (its track's
//! summary), from the store file or, while the service runs, its API.

use super::Cli;
use super::alerts::local_time;
use super::service_api::{ListFilter, Listed, Source, call, json_line, query_string};
use crate::store::EventRecord;
use clap::Subcommand;
use std::time::Duration;

#[derive(Debug, Subcommand)]
pub enum EventsCommand {
    /// List tracked objects, oldest first
    List(ListFilter),
}

pub fn run(cli: &Cli, command: &EventsCommand) -> anyhow::Result<i32> {
    let EventsCommand::List(filter) = command;
    let (since, json) = (&filter.since, &filter.json);
    let config = crate::config::load(cli.config_path().as_deref())?.config;
    let data_dir = cli.data_dir.clone().unwrap_or(config.storage.data_dir.clone());
    let query = filter.query(None)?;
    let listed: Listed<EventRecord> = match Source::open(&data_dir, &config.http.listen)? {
        Source::File(store) => Listed::local(store.events(&query)?),
        // In a cluster the running service asks every edge and merges.
        Source::Service(listen) if config.cluster.is_some() => {
            Listed::merged(&data_dir, &listen, "events", &query_string(since.as_deref(), &query))?
        }
        Source::Service(listen) => Listed::local(call(
            &data_dir,
            &listen,
            "GET",
            &format!("/api/events?{}", query_string(since.as_deref(), &query)),
            Duration::from_secs(15),
        )?),
    };
    listed.report_unreachable();
    let events = &listed.records;
    for (node_name, e) in events {
        let node = node_name.as_deref().map(|n| format!("{n:<12} ")).unwrap_or_default();
        if *json {
            println!("{}", json_line(node_name.as_deref(), e)?);
        } else {
            let seconds = (e.last_seen_us - e.first_seen_us) as f64 / 1e6;
            println!(
                "{}  {node}{:<12} {:<10} track {:<6} {:>7.1}s  best {:.2}",
                local_time(e.first_seen_us),
                e.camera,
                e.class,
                e.track_id,
                seconds,
                e.best_confidence
            );
        }
    }
    if !json {
        println!("{} event(s)", events.len());
    }
    Ok(0)
}
