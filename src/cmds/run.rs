//! `smart-cctv run`

use super::Cli;
use crate::service::{self, ServiceOptions};

pub fn run(cli: &Cli) -> anyhow::Result<i32> {
    let opts = ServiceOptions {
        config_path: cli.config_path(),
        supervision_path: cli.supervision_path(),
        data_dir: cli.data_dir.clone(),
        log_format: cli.log_format,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().thread_name("smart-cctv").build()?;
    match runtime.block_on(service::run(opts)) {
        Ok(code) => {
            // Don't wait for stray blocking tasks (a hung device read) on the way out.
            runtime.shutdown_timeout(std::time::Duration::from_secs(1));
            Ok(code)
        }
        Err(e) => {
            eprintln!("smart-cctv: {e}");
            Ok(e.exit_code())
        }
    }
}
