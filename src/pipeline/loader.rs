//! The detector actor: resolves and loads the model named in the config,
//! retrying with backoff while it cannot (weights missing, hub unreachable),
//! and publishes it to the inference workers. A missing model makes the
//! detector "down" on `/healthz` with the reason; it does not bring the
//! service down, and it recovers by itself once the weights appear.

use crate::config::{DetectionConfig, Precision};
use crate::detect::weights::ModelStore;
use crate::detect::{DecodeOptions, Detector, DetectorOptions, device_from_config};
use crate::health::HealthBoard;
use crate::supervision::Backoff;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use std::time::Duration;
use tokio::sync::watch;

pub struct DetectorLoader;

pub struct LoaderArgs {
    pub config: DetectionConfig,
    pub size: usize,
    pub models_dir: std::path::PathBuf,
    pub board: HealthBoard,
    /// Workers wait on this.
    pub publish: std::sync::Arc<watch::Sender<super::SharedDetector>>,
}

pub struct LoaderState {
    args: LoaderArgs,
    attempt: u32,
}

pub enum LoaderMsg {
    Load,
    /// Fail as asked: sent only by the test-only fault routes (`faults.rs`).
    Fault(crate::faults::Fault),
}

impl ractor::Message for LoaderMsg {}

const RETRY: Backoff =
    Backoff { initial: Duration::from_secs(5), max: Duration::from_secs(300), multiplier: 2.0, jitter: 0.2 };

impl Actor for DetectorLoader {
    type Msg = LoaderMsg;
    type State = LoaderState;
    type Arguments = LoaderArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<LoaderMsg>,
        args: LoaderArgs,
    ) -> Result<LoaderState, ActorProcessingErr> {
        crate::faults::register("detector", &myself, LoaderMsg::Fault);
        args.board.set_component("detector", false, "loading", None);
        myself.cast(LoaderMsg::Load)?;
        Ok(LoaderState { args, attempt: 0 })
    }

    async fn handle(
        &self,
        myself: ActorRef<LoaderMsg>,
        msg: LoaderMsg,
        state: &mut LoaderState,
    ) -> Result<(), ActorProcessingErr> {
        if let LoaderMsg::Fault(fault) = msg {
            return fault.strike("detector");
        }
        let config = state.args.config.clone();
        let size = state.args.size;
        let dir = state.args.models_dir.clone();
        let loaded = tokio::task::spawn_blocking(move || {
            let store = ModelStore::open(&dir)?;
            let weights = store.resolve(&config.model)?;
            let device = device_from_config(&config.device)?;
            let options = DetectorOptions {
                size,
                decode: DecodeOptions { confidence: config.confidence_threshold as f32, ..DecodeOptions::default() },
                ..DetectorOptions::default()
            };
            let detector = Detector::load(&weights, &device, options)?;
            let detector = match config.precision {
                Precision::F32 => detector,
                Precision::Int8 => in_int8(detector, &weights),
            };
            Ok::<_, crate::detect::DetectError>((detector, weights))
        })
        .await?;
        match loaded {
            Ok((detector, weights)) => {
                let precision = if detector.is_int8() { "int8" } else { "f32" };
                tracing::info!(model = %state.args.config.model, weights = %weights.display(), variant = %detector.variant, size, precision, "detector ready");
                state.args.board.set_component("detector", true, "ready", None);
                state.args.publish.send_replace(Some(std::sync::Arc::new(detector)));
                state.attempt = 0;
            }
            Err(e) => {
                state.attempt += 1;
                let delay = RETRY.delay(state.attempt, fastrand::f64());
                tracing::error!(retry_in = %humantime::format_duration(Duration::from_secs(delay.as_secs())), "detector unavailable: {e}");
                state.args.board.set_component("detector", false, "unavailable", Some(e.to_string()));
                myself.send_after(delay, || LoaderMsg::Load);
            }
        }
        Ok(())
    }

    async fn post_stop(&self, _: ActorRef<LoaderMsg>, state: &mut LoaderState) -> Result<(), ActorProcessingErr> {
        state.args.board.remove_component("detector");
        Ok(())
    }
}

/// `precision: int8`: the detector in int8 where the CPU has VNNI and a
/// calibration can be had; else in f32, with the reason in the log. int8 is
/// a speed option: without it the detector is slower, not down.
fn in_int8(detector: Detector, weights: &std::path::Path) -> Detector {
    use crate::detect::int8::{Calibrated, DEMO_CLIP, int8_detector};
    if !crate::detect::fastconv::nchwc::int8::vnni() {
        tracing::warn!("precision int8 needs a CPU with AVX-512 VNNI; this one has none, so the detector runs in f32");
        return detector;
    }
    let (int8, how) = match int8_detector(&detector, weights, std::path::Path::new(DEMO_CLIP)) {
        Ok(done) => done,
        Err(e) => {
            tracing::error!(
                "precision int8 unavailable, the detector runs in f32: {e}; calibrate with `smart-cctv model quantize --clip CLIP`"
            );
            return detector;
        }
    };
    match how {
        Calibrated::Read(path) => tracing::info!(calibration = %path.display(), "int8 calibration read"),
        Calibrated::Taken { clip, frames, saved: Ok(path) } => {
            tracing::info!(clip = %clip.display(), frames, saved = %path.display(), "int8 calibrated")
        }
        Calibrated::Taken { clip, frames, saved: Err(e) } => {
            tracing::warn!(clip = %clip.display(), frames, "int8 calibrated, but not saved ({e}): it will be taken again at the next load")
        }
    }
    int8
}
