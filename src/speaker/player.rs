//! The playback thread: owns the audio device (rodio's sink is not `Send`),
//! plays one sound at a time, and reports back when each finishes, so long
//! sounds never block the speaker actor's mailbox.

use super::chime::Sound;
use rodio::DeviceSinkBuilder;
use rodio::buffer::SamplesBuffer;
use std::num::NonZero;
use std::sync::mpsc;
use std::time::Duration;

/// Tail after the last sample before a sound counts as played: the device
/// buffers a little.
const DRAIN: Duration = Duration::from_millis(100);

pub enum PlayerCommand {
    Play { sound: Sound, volume: f32, done: tokio::sync::oneshot::Sender<()> },
}

/// A handle to the playback thread; dropping it closes the device.
pub struct Player {
    tx: mpsc::Sender<PlayerCommand>,
}

/// Opens `device` (`default`, or an ALSA/PipeWire device id or name) on its
/// own thread. Fails with the device's own error when it cannot be opened.
pub fn open(device: &str) -> Result<Player, String> {
    let (tx, rx) = mpsc::channel::<PlayerCommand>();
    let (ready_tx, ready_rx) = mpsc::channel::<Result<(), String>>();
    let name = device.to_owned();
    let device = device.to_owned();
    std::thread::Builder::new()
        .name(format!("audio-{device}"))
        .spawn(move || {
            let sink = match open_sink(&device) {
                Ok(sink) => {
                    let _ = ready_tx.send(Ok(()));
                    sink
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            for command in rx {
                match command {
                    PlayerCommand::Play { sound, volume, done } => {
                        let (Some(channels), Some(rate)) = (NonZero::new(sound.channels), NonZero::new(sound.rate))
                        else {
                            let _ = done.send(());
                            continue;
                        };
                        // Wait until the device has taken every sample, not
                        // for the nominal length: under load the audio
                        // callback runs late, and closing early cuts the end.
                        let player = rodio::Player::connect_new(sink.mixer());
                        player.set_volume(volume);
                        player.append(SamplesBuffer::new(channels, rate, sound.samples));
                        player.sleep_until_end();
                        std::thread::sleep(DRAIN);
                        let _ = done.send(());
                    }
                }
            }
        })
        .map_err(|e| format!("cannot start the audio thread: {e}"))?;
    match ready_rx.recv_timeout(Duration::from_secs(10)) {
        Ok(Ok(())) => Ok(Player { tx }),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(format!("audio device `{name}` did not open within 10 s")),
    }
}

fn open_sink(device: &str) -> Result<rodio::MixerDeviceSink, String> {
    let mut sink = if device == "default" {
        DeviceSinkBuilder::open_default_sink().map_err(|e| format!("audio device `default`: {e}"))?
    } else {
        use rodio::cpal::traits::{DeviceTrait, HostTrait};
        let host = rodio::cpal::default_host();
        let found = host
            .output_devices()
            .map_err(|e| format!("cannot list audio devices: {e}"))?
            .find(|d| d.to_string() == device || d.id().is_ok_and(|id| id.to_string() == device))
            .ok_or_else(|| format!("audio device `{device}` not found"))?;
        DeviceSinkBuilder::from_device(found)
            .and_then(|b| b.open_stream())
            .map_err(|e| format!("audio device `{device}`: {e}"))?
    };
    sink.log_on_drop(false);
    Ok(sink)
}

impl Player {
    /// Queues `sound`; the returned receiver fires when it has played.
    pub fn play(&self, sound: Sound, volume: f32) -> Result<tokio::sync::oneshot::Receiver<()>, String> {
        let (done, rx) = tokio::sync::oneshot::channel();
        self.tx.send(PlayerCommand::Play { sound, volume, done }).map_err(|_| "the audio thread stopped".to_owned())?;
        Ok(rx)
    }
}
