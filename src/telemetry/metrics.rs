//! The Prometheus recorder. Metrics are recorded with the `metrics` macros
//! anywhere in the code and rendered by `/metrics` from the handle.

use metrics_exporter_prometheus::{BuildError, PrometheusBuilder, PrometheusHandle};
use std::time::Duration;

/// Installs the global recorder, describes the process-level metrics and
/// starts the upkeep task that keeps histograms bounded.
pub fn install() -> Result<PrometheusHandle, BuildError> {
    let handle = PrometheusBuilder::new().install_recorder()?;
    describe();
    metrics::gauge!("smart_cctv_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    let upkeep = handle.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tick.tick().await;
            upkeep.run_upkeep();
        }
    });
    Ok(handle)
}

fn describe() {
    use metrics::{describe_counter, describe_gauge};
    describe_gauge!("smart_cctv_up", "1 while the service runs and its supervision tree is up");
    describe_gauge!("smart_cctv_build_info", "Always 1; the version is a label");
    describe_gauge!("smart_cctv_child_up", "1 when a supervised child is running, by tree path");
    describe_counter!("smart_cctv_child_restarts_total", "Restarts of a supervised child, by tree path");
    describe_counter!("smart_cctv_config_reloads_total", "Configuration reloads that were applied");
    describe_counter!(
        "smart_cctv_config_reload_failures_total",
        "Configuration reloads rejected; the running configuration was kept"
    );
    describe_gauge!("smart_cctv_config_generation", "Increments with every applied configuration");
    describe_counter!("smart_cctv_watchdog_pets_total", "WATCHDOG=1 notifications sent to systemd");
}
