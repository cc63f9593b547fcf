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
    /// Archive the database (consistent, even while the service writes),
    /// config, calibration and supervision policy, with a sha256 manifest
    Backup {
        /// Directory for the archive [default: DATA_DIR/backups]
        #[arg(long)]
        to: Option<std::path::PathBuf>,
        /// Include the snapshots
        #[arg(long)]
        with_snapshots: bool,
    },
    /// Upgrade the event store's schema (with the service stopped)
    Migrate,
    /// Restore an archive made by `ops backup` (the service must be stopped);
    /// the current files are kept aside
    Restore { archive: std::path::PathBuf },
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
        OpsCommand::Migrate => {
            let path = data_dir.join(crate::store::FILE);
            let steps = crate::store::Store::migrate(&path)?;
            if steps.is_empty() {
                println!("{}: already at schema v{}", path.display(), crate::store::SCHEMA_VERSION);
            } else {
                for v in steps {
                    println!("{}: upgraded to schema v{v}", path.display());
                }
            }
            return Ok(0);
        }
        OpsCommand::Backup { to, with_snapshots } => return backup(cli, &data_dir, to.as_deref(), *with_snapshots),
        OpsCommand::Restore { archive } => {
            let config_dir = config_path
                .as_deref()
                .and_then(|p| p.parent())
                .map_or_else(|| std::path::PathBuf::from("config"), |p| p.to_owned());
            match crate::store::backup::restore(archive, &data_dir, &config_dir) {
                Ok(done) => {
                    for line in done {
                        println!("{line}");
                    }
                    return Ok(0);
                }
                Err(e) => {
                    eprintln!("ops restore: {e}");
                    return Ok(1);
                }
            }
        }
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

fn backup(
    cli: &Cli,
    data_dir: &std::path::Path,
    to: Option<&std::path::Path>,
    with_snapshots: bool,
) -> anyhow::Result<i32> {
    use crate::store::{Store, StoreError, backup};
    let config_path = cli.config_path();
    let db = data_dir.join(crate::store::FILE);
    let copy = data_dir.join("backup-tmp").join("events-offline.redb");
    let copy = match Store::open(&db) {
        Ok(store) => {
            std::fs::create_dir_all(copy.parent().unwrap_or(data_dir))?;
            backup::copy_database(&store, &copy)?;
            copy
        }
        Err(StoreError::InUse { .. }) => {
            let listen = crate::config::load(config_path.as_deref())?.config.http.listen;
            online_copy(&listen)?
        }
        Err(e) => return Err(e.into()),
    };
    let calibration_dir = crate::config::load::calibration_dir(config_path.as_deref());
    let mut files = vec![("data/events.redb".to_owned(), copy.clone())];
    files.extend(backup::config_files(config_path.as_deref(), cli.supervision_path().as_deref(), &calibration_dir));
    if with_snapshots {
        files.extend(backup::snapshot_files(data_dir));
    }
    let out = to.map_or_else(|| data_dir.join("backups"), |p| p.to_owned());
    let archive = backup::write_archive(&out, &files);
    let _ = std::fs::remove_file(&copy);
    let archive = archive?;
    println!("wrote {} ({} files)", archive.display(), files.len());
    Ok(0)
}

/// Asks the running service for a consistent database copy.
fn online_copy(listen: &str) -> anyhow::Result<std::path::PathBuf> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(listen)
        .map_err(|e| anyhow::anyhow!("the event store is in use, but the service does not answer on {listen}: {e}"))?;
    stream.set_read_timeout(Some(std::time::Duration::from_secs(150)))?;
    write!(
        stream,
        "POST /api/ops/db-copy HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (head, body) =
        response.split_once("\r\n\r\n").ok_or_else(|| anyhow::anyhow!("bad response from the service"))?;
    let json: serde_json::Value = serde_json::from_str(body)?;
    anyhow::ensure!(head.starts_with("HTTP/1.1 200"), "the service could not copy the database: {}", json["error"]);
    Ok(std::path::PathBuf::from(json["path"].as_str().unwrap_or_default()))
}
