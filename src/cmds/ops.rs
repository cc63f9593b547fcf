//! `smart-cctv ops check [--repair]`

use super::Cli;
use super::service_api::{Source, call_ops};
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
    /// Rewrite the event store to reclaim free space (through the service
    /// while it runs)
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
        /// Archive the config with every password replaced by `***`
        #[arg(long)]
        exclude_secrets: bool,
        /// Archives to keep in the folder [default: backup.keep, 7]
        #[arg(long)]
        keep: Option<usize>,
    },
    /// Upgrade the event store's schema (with the service stopped)
    Migrate,
    /// Restore an archive made by `ops backup` (the service must be stopped);
    /// the current files are kept aside
    Restore {
        archive: std::path::PathBuf,
        /// Check the archive fully and change nothing
        #[arg(long)]
        verify: bool,
        /// Refuse an archive holding more bytes than this
        #[arg(long, default_value_t = crate::store::backup::RestoreLimits::default().max_bytes)]
        max_bytes: u64,
        /// Refuse an archive holding more entries than this
        #[arg(long, default_value_t = crate::store::backup::RestoreLimits::default().max_entries)]
        max_entries: usize,
    },
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
        OpsCommand::Backup { to, with_snapshots, exclude_secrets, keep } => {
            return backup(cli, &data_dir, to.as_deref(), *with_snapshots, *exclude_secrets, *keep);
        }
        OpsCommand::Restore { archive, verify, max_bytes, max_entries } => {
            // Config files go back where the service reads them: beside the
            // --config file, and the policy where --supervision names it.
            let targets = crate::store::backup::RestoreTargets {
                data_dir: data_dir.clone(),
                config: config_path.clone(),
                supervision: cli.supervision_path(),
            };
            let limits = crate::store::backup::RestoreLimits { max_bytes: *max_bytes, max_entries: *max_entries };
            match crate::store::backup::restore(archive, &targets, limits, *verify) {
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
            match Source::open(&data_dir, &listen(config_path.as_deref())?)? {
                Source::File(mut store) => {
                    store.compact()?;
                }
                Source::Service(_) => {
                    let _: serde_json::Value =
                        call_ops(&data_dir, "/api/ops/compact", std::time::Duration::from_secs(600))?;
                }
            }
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
    exclude_secrets: bool,
    keep: Option<usize>,
) -> anyhow::Result<i32> {
    use crate::store::backup;
    let config_path = cli.config_path();
    let config = crate::config::load(config_path.as_deref())?.config;
    let keep = keep.unwrap_or(config.backup.keep);
    // Snapshots are listed before the database is copied: the service moves
    // a snapshot into place only after its alert is committed, so every one
    // listed has its alert in the copy made after (the other way round, an
    // alert stored between the two steps left an orphan snapshot behind).
    let snapshots = if with_snapshots { backup::snapshot_files(data_dir) } else { Vec::new() };
    let copy = data_dir.join(backup::COPY_DIR).join("events-offline.redb");
    let copy = match Source::open(data_dir, &listen(config_path.as_deref())?)? {
        Source::File(store) => {
            std::fs::create_dir_all(copy.parent().unwrap_or(data_dir))?;
            store.copy_to(&copy)?;
            copy
        }
        Source::Service(_) => {
            let answered: std::path::PathBuf =
                call_ops(data_dir, "/api/ops/db-copy", std::time::Duration::from_secs(150))?;
            backup::check_copy(data_dir, &answered)?
        }
    };
    let mut files = backup::backup_files(&copy, config_path.as_deref(), cli.supervision_path().as_deref());
    // Without secrets: the config as the service understood it, every
    // password as `***` (JSON, which is YAML too), instead of the file.
    let redacted = data_dir.join(backup::COPY_DIR).join("config-redacted.yaml");
    if exclude_secrets && let Some(entry) = files.iter_mut().find(|(name, _)| name == "config/config.yaml") {
        std::fs::write(&redacted, serde_json::to_vec_pretty(&config)?)?;
        entry.1 = redacted.clone();
    }
    files.extend(snapshots);
    let out = to.map_or_else(|| data_dir.join("backups"), |p| p.to_owned());
    // A progress bar only on a terminal; scripts and cron get the one line below.
    let bar = if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        indicatif::ProgressBar::new(0).with_style(
            indicatif::ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {eta}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        )
    } else {
        indicatif::ProgressBar::hidden()
    };
    let archive = backup::write_archive(&out, &files, &|done, total| {
        bar.set_length(total);
        bar.set_position(done);
    });
    bar.finish_and_clear();
    let _ = std::fs::remove_file(&copy);
    let _ = std::fs::remove_file(&redacted);
    let archive = archive?;
    println!("wrote {} ({} files)", archive.display(), files.len());
    for old in backup::rotate(&out, keep) {
        println!("deleted {} (keeping the newest {keep})", old.display());
    }
    Ok(0)
}

/// The service's listen address, from the configuration.
fn listen(config_path: Option<&std::path::Path>) -> anyhow::Result<String> {
    Ok(crate::config::load(config_path)?.config.http.listen)
}
