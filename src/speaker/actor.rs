//! The speaker actor: one per configured speaker.
//!
//! Parent: the dynamic `speakers` supervisor. Input: play requests from the
//! alerts actor (process group `speakers`). Output: sound, its state on the
//! health board and in metrics. It reconnects by itself with backoff when the
//! device is missing or the Bluetooth speaker drops, reacting to BlueZ events;
//! a missing device is a health problem, not a crash (no restart storm).

use super::chime;
use super::player::Player;
use super::policy::{PlayRequest, Policy};
use crate::config::SpeakerConfig;
use crate::health::HealthBoard;
use crate::rules::schedule::Schedule;
use crate::supervision::Backoff;
use chrono::Local;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use std::time::{Duration, Instant};

pub const SPEAKERS_GROUP: &str = "speakers";

/// Requests waiting to play, beyond which the least important are dropped.
const QUEUE: usize = 8;

pub struct SpeakerActor;

pub struct SpeakerArgs {
    pub config: SpeakerConfig,
    pub board: HealthBoard,
}

pub enum SpeakerMsg {
    Connect,
    /// The connection attempt with this generation finished.
    Connected(u64, Result<Player, String>),
    /// The device of this generation went away.
    Lost(u64, String),
    Play(PlayRequest),
    Played,
    /// Fail as asked: sent only by the test-only fault routes (`faults.rs`).
    Fault(crate::faults::Fault),
}

impl ractor::Message for SpeakerMsg {}

pub struct SpeakerState {
    config: SpeakerConfig,
    board: HealthBoard,
    player: Option<Player>,
    generation: u64,
    attempt: u32,
    policy: Policy,
    playing: bool,
    link_task: Option<tokio::task::JoinHandle<()>>,
}

impl SpeakerState {
    fn id(&self) -> String {
        self.config.id.clone()
    }

    fn set_up(&mut self, up: bool, error: Option<String>) {
        let id = self.id();
        metrics::gauge!("smart_cctv_speaker_up", "speaker" => id.clone()).set(if up { 1.0 } else { 0.0 });
        self.board.set_component(&format!("speaker/{id}"), up, if up { "ready" } else { "backoff" }, error);
    }

    fn connect(&mut self, myself: &ActorRef<SpeakerMsg>) {
        self.generation += 1;
        let generation = self.generation;
        let config = self.config.clone();
        let me = myself.clone();
        if let Some(task) = self.link_task.take() {
            task.abort();
        }
        self.link_task = Some(tokio::spawn(async move {
            match super::open(&config).await {
                Ok((player, link)) => {
                    let _ = me.cast(SpeakerMsg::Connected(generation, Ok(player)));
                    if let Some(link) = link {
                        let why = link.lost().await;
                        let _ = me.cast(SpeakerMsg::Lost(generation, why));
                    }
                }
                Err(e) => {
                    let _ = me.cast(SpeakerMsg::Connected(generation, Err(e)));
                }
            }
        }));
    }

    fn fail(&mut self, myself: &ActorRef<SpeakerMsg>, error: String) {
        self.player = None;
        self.playing = false;
        self.attempt += 1;
        metrics::counter!("smart_cctv_speaker_reconnects_total", "speaker" => self.id()).increment(1);
        let delay = Backoff::from(self.config.backoff).delay(self.attempt, fastrand::f64());
        tracing::warn!(speaker = %self.config.id, retry_in = %humantime::format_duration(Duration::from_secs(delay.as_secs().max(1))), "speaker down: {error}");
        self.set_up(false, Some(error));
        myself.send_after(delay, || SpeakerMsg::Connect);
    }

    fn play_next(&mut self, myself: &ActorRef<SpeakerMsg>) {
        if self.playing {
            return;
        }
        let Some(player) = &self.player else { return };
        let Some(request) = self.policy.take_next() else { return };
        let spec = if request.sound.is_empty() { self.config.sound.clone() } else { request.sound.clone() };
        let sound = match chime::load(&spec) {
            Ok(sound) => sound,
            Err(e) => {
                tracing::error!(speaker = %self.config.id, rule = %request.rule, "{e}; playing the built-in chime instead");
                metrics::counter!("smart_cctv_sound_file_errors_total", "speaker" => self.id()).increment(1);
                match chime::builtin("chime") {
                    Some(sound) => sound,
                    None => return,
                }
            }
        };
        match player.play(sound, self.config.volume as f32) {
            Ok(done) => {
                self.playing = true;
                let me = myself.clone();
                tokio::spawn(async move {
                    let _ = done.await;
                    let _ = me.cast(SpeakerMsg::Played);
                });
            }
            Err(e) => {
                let generation = self.generation;
                let _ = myself.cast(SpeakerMsg::Lost(generation, e));
            }
        }
    }
}

impl Actor for SpeakerActor {
    type Msg = SpeakerMsg;
    type State = SpeakerState;
    type Arguments = SpeakerArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<SpeakerMsg>,
        args: SpeakerArgs,
    ) -> Result<SpeakerState, ActorProcessingErr> {
        ractor::pg::join(SPEAKERS_GROUP.to_owned(), vec![myself.get_cell()]);
        crate::faults::register(&format!("speaker/{}", args.config.id), &myself, SpeakerMsg::Fault);
        let quiet =
            args.config.quiet_hours.as_ref().map(|h| {
                Schedule::from_config(&crate::config::ScheduleConfig { days: vec![], hours: Some(h.clone()) })
            });
        let policy = Policy::new(args.config.coalesce, quiet, QUEUE);
        myself.cast(SpeakerMsg::Connect)?;
        let state = SpeakerState {
            config: args.config,
            board: args.board,
            player: None,
            generation: 0,
            attempt: 0,
            policy,
            playing: false,
            link_task: None,
        };
        state.board.set_component(&format!("speaker/{}", state.config.id), false, "connecting", None);
        Ok(state)
    }

    async fn handle(
        &self,
        myself: ActorRef<SpeakerMsg>,
        msg: SpeakerMsg,
        state: &mut SpeakerState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            SpeakerMsg::Fault(fault) => return fault.strike("speaker"),
            SpeakerMsg::Connect => state.connect(&myself),
            SpeakerMsg::Connected(generation, result) if generation == state.generation => match result {
                Ok(player) => {
                    tracing::info!(speaker = %state.config.id, "speaker ready");
                    state.player = Some(player);
                    state.attempt = 0;
                    state.set_up(true, None);
                    state.play_next(&myself);
                }
                Err(e) => state.fail(&myself, e),
            },
            SpeakerMsg::Lost(generation, why) if generation == state.generation => state.fail(&myself, why),
            SpeakerMsg::Connected(..) | SpeakerMsg::Lost(..) => {}
            SpeakerMsg::Play(request) => {
                if !state.config.rules.is_empty() && !state.config.rules.contains(&request.rule) {
                    return Ok(());
                }
                let offer = state.policy.offer(request, Instant::now(), Local::now().naive_local());
                if let Some(reason) = offer.drop_reason() {
                    metrics::counter!("smart_cctv_sounds_dropped_total", "speaker" => state.id(), "reason" => reason)
                        .increment(1);
                } else if state.player.is_none() {
                    // Kept queued: it plays when the speaker is back.
                    tracing::debug!(speaker = %state.config.id, "speaker down; sound queued");
                }
                state.play_next(&myself);
            }
            SpeakerMsg::Played => {
                state.playing = false;
                metrics::counter!("smart_cctv_sounds_played_total", "speaker" => state.id()).increment(1);
                state.play_next(&myself);
            }
        }
        Ok(())
    }

    async fn post_stop(&self, _: ActorRef<SpeakerMsg>, state: &mut SpeakerState) -> Result<(), ActorProcessingErr> {
        if let Some(task) = state.link_task.take() {
            task.abort();
        }
        state.board.remove_component(&format!("speaker/{}", state.config.id));
        Ok(())
    }
}
