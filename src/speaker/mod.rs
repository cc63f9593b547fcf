//! Speakers: audible alerts over ALSA (rodio) and Bluetooth (bluer/BlueZ),
//! one actor per configured speaker, each reconnecting by itself.
//!
//! - `chime.rs`: built-in sounds and sound files;
//! - `policy.rs`: priority queue, coalescing, quiet hours;
//! - `player.rs`: the playback thread;
//! - `bluetooth.rs`: BlueZ connection and its events;
//! - `actor.rs`: the speaker actor.

pub mod actor;
pub mod bluetooth;
pub mod chime;
pub mod player;
pub mod policy;

pub use actor::{SPEAKERS_GROUP, SpeakerActor, SpeakerArgs, SpeakerMsg};

use crate::config::{SpeakerConfig, SpeakerKind};
use std::time::Duration;

/// Connects (Bluetooth) and opens the audio device: what `speaker test` and
/// the actor both do before playing.
pub async fn open(config: &SpeakerConfig) -> Result<(player::Player, Option<bluetooth::Link>), String> {
    let link = match (config.kind, &config.address) {
        (SpeakerKind::Bluetooth, Some(address)) => Some(bluetooth::connect(address).await?),
        (SpeakerKind::Bluetooth, None) => return Err("a bluetooth speaker needs its address".into()),
        (SpeakerKind::Alsa, _) => None,
    };
    let device = config.device.clone();
    let player = tokio::task::spawn_blocking(move || player::open(&device))
        .await
        .map_err(|e| format!("audio thread: {e}"))??;
    Ok((player, link))
}

/// Plays the built-in chime once and waits for it: `smart-cctv speaker test`.
pub async fn test(config: &SpeakerConfig) -> Result<Duration, String> {
    let (player, _link) = open(config).await?;
    let sound = chime::load(&config.sound).or_else(|e| {
        // The CLI has no log; say it where the user looks.
        eprintln!("{}: {e}; playing the built-in chime instead", config.id);
        chime::load("chime")
    })?;
    let length = sound.duration();
    let done = player.play(sound, config.volume as f32)?;
    tokio::time::timeout(length + Duration::from_secs(5), done)
        .await
        .map_err(|_| "playback did not finish".to_owned())?
        .map_err(|_| "the audio thread stopped".to_owned())?;
    Ok(length)
}
