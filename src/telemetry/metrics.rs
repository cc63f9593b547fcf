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
    use metrics::{describe_counter, describe_gauge, describe_histogram};
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
    describe_gauge!("smart_cctv_camera_up", "1 while a camera is streaming");
    describe_gauge!(
        "smart_cctv_camera_state",
        "1 for the camera's current state: connecting, streaming, backoff, auth_failed"
    );
    describe_counter!("smart_cctv_camera_frames_decoded_total", "Frames decoded and handed to the pipeline");
    describe_counter!(
        "smart_cctv_camera_frames_dropped_total",
        "Frames dropped, by reason: decoder_behind, inference_queue_full"
    );
    describe_counter!("smart_cctv_camera_decode_errors_total", "Packets the decoder rejected");
    describe_counter!("smart_cctv_camera_reconnects_total", "Camera failures followed by a reconnect");
    describe_gauge!("smart_cctv_camera_last_frame_age_seconds", "Seconds since the camera's last frame");
    describe_histogram!("smart_cctv_camera_decode_seconds", "Decode and scale time per frame");
    describe_counter!("smart_cctv_frames_skipped_no_motion_total", "Frames the motion gate kept from detection");
    describe_histogram!("smart_cctv_motion_gate_seconds", "Motion gate time per frame");
    describe_gauge!("smart_cctv_inference_queue_depth", "Frames waiting for an inference worker");
    describe_histogram!("smart_cctv_inference_seconds", "Detector time per frame, by model and input size");
    describe_histogram!("smart_cctv_detection_latency_seconds", "From frame capture to detections");
    describe_counter!("smart_cctv_frames_lost_total", "Frames lost to an inference failure, by reason");
    describe_counter!("smart_cctv_detections_total", "Objects detected, by camera and class");
}
