//! `smart-cctv ops check [--repair]`

use super::Cli;
use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum OpsCommand {
    /// Check the event store (integrity, schema), the configuration, and
    /// alerts against snapshot files; exit 0 when clean, 1 with the problems
    Check {
        /// Fix what is safe: move orphan snapshots to trash/
        #[arg(long)]
        repair: bool,
    },
    /// Rewrite the event store to reclaim free space (with the service stopped)
    Compact,
}

pub fn run(cli: &Cli, command: &OpsCommand) -> anyhow::Result<i32> {
    let config_path = cli.config_path();
    let data_dir = match (&cli.data_dir, crate::config::load(config_path.as_deref())) {
        (Some(dir), _) => dir.clone(),
        (None, Ok(loaded)) => loaded.config.storage.data_dir,
        (None, Err(_)) => std::path::PathBuf::from("data"),
    };
    let repair = match command {
        OpsCommand::Check { repair } => repair,
        OpsCommand::Compact => {
            let path = data_dir.join(crate::store::FILE);
            let before = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            let mut store = crate::store::Store::open(&path)?;
            store.compact()?;
            drop(store);
            let after = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            println!("compacted {}: {before} -> {after} bytes", path.display());
            return Ok(0);
        }
    };
    let report = crate::store::check::check(&data_dir, config_path.as_deref(), *repair);
    for line in &report.repaired {
        println!("repaired: {line}");
    }
    for line in &report.problems {
        println!("problem: {line}");
    }
    if report.clean() {
        println!("ok: {}", data_dir.display());
        Ok(0)
    } else {
        println!("{} problem(s)", report.problems.len());
        Ok(1)
    }
}
