//! `smart-cctv config validate [PATH]`, which replaces `validate_config.py`.

use super::Cli;
use crate::config;
use crate::supervision::SupervisionPolicy;
use clap::Subcommand;
use std::path::PathBuf;

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Check a configuration file (and the supervision policy): every problem
    /// with its key path; exit 0 when valid, 2 when not
    Validate {
        /// The file to check [default: --config, config/config.yaml, else the embedded default]
        path: Option<PathBuf>,
    },
}

pub fn run(cli: &Cli, command: &ConfigCommand) -> anyhow::Result<i32> {
    match command {
        ConfigCommand::Validate { path } => Ok(validate(path.clone().or_else(|| cli.config_path()), cli)),
    }
}

fn validate(path: Option<PathBuf>, cli: &Cli) -> i32 {
    let mut failed = false;
    match config::load(path.as_deref()) {
        Ok(loaded) => {
            for warning in &loaded.warnings {
                println!("warning: {warning}");
            }
            let c = &loaded.config;
            println!(
                "ok: {}: {} camera(s), {} alert rule(s), {} speaker(s)",
                loaded.source,
                c.cameras.len(),
                c.alert_rules.len(),
                c.speakers.len()
            );
        }
        Err(e) => {
            failed = true;
            let source = path.as_ref().map_or("<embedded default>".to_owned(), |p| p.display().to_string());
            let problems = e.problems();
            for p in &problems {
                println!("error: {source}: {p}");
            }
            println!("{} problem(s) in {source}", problems.len());
        }
    }
    match SupervisionPolicy::load(cli.supervision_path().as_deref()).and_then(|p| {
        p.check_components(crate::service::topology::COMPONENTS, crate::service::topology::DYNAMIC).map(|()| p)
    }) {
        Ok(policy) => println!("ok: {}", policy.source),
        Err(errors) => {
            failed = true;
            for e in &errors {
                println!("error: {e}");
            }
        }
    }
    if failed { 2 } else { 0 }
}
