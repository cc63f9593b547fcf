//! Built-in sounds, synthesised in code so no foreign audio ships with the
//! service; and loading of WAV/OGG/MP3 files with the chime as the fallback.

use std::path::Path;
use std::time::Duration;

/// Samples at this rate, mono.
pub const RATE: u32 = 48_000;

/// Decoded audio, interleaved f32.
#[derive(Debug, Clone, PartialEq)]
pub struct Sound {
    pub samples: Vec<f32>,
    pub channels: u16,
    pub rate: u32,
}

impl Sound {
    pub fn duration(&self) -> Duration {
        Duration::from_secs_f64(self.samples.len() as f64 / (self.channels.max(1) as f64 * self.rate.max(1) as f64))
    }
}

/// A tone with a short attack and an exponential decay, like a bell.
fn bell(freq: f32, seconds: f32, out: &mut Vec<f32>) {
    let n = (seconds * RATE as f32) as usize;
    for i in 0..n {
        let t = i as f32 / RATE as f32;
        let attack = (t / 0.01).min(1.0);
        let decay = (-3.0 * t / seconds).exp();
        let partials =
            (2.0 * std::f32::consts::PI * freq * t).sin() + 0.3 * (4.0 * std::f32::consts::PI * freq * t).sin();
        out.push(0.5 * attack * decay * partials / 1.3);
    }
}

/// The built-in sounds by name: `chime` (ding-dong, 0.9 s), `alarm` (1.2 s of
/// alternating tones), `beep` (0.2 s).
pub fn builtin(name: &str) -> Option<Sound> {
    let mut samples = Vec::new();
    match name {
        "chime" => {
            bell(880.0, 0.4, &mut samples);
            bell(660.0, 0.5, &mut samples);
        }
        "alarm" => {
            for i in 0..6 {
                bell(if i % 2 == 0 { 988.0 } else { 740.0 }, 0.2, &mut samples);
            }
        }
        "beep" => bell(1000.0, 0.2, &mut samples),
        _ => return None,
    }
    Some(Sound { samples, channels: 1, rate: RATE })
}

pub const BUILTIN: [&str; 3] = ["chime", "alarm", "beep"];

/// A built-in name, or a WAV/OGG/MP3 file.
pub fn load(spec: &str) -> Result<Sound, String> {
    if let Some(sound) = builtin(spec) {
        return Ok(sound);
    }
    let path = Path::new(spec);
    let file = std::fs::File::open(path).map_err(|e| format!("sound file {}: {e}", path.display()))?;
    let decoder =
        rodio::Decoder::try_from(file).map_err(|e| format!("sound file {}: cannot decode: {e}", path.display()))?;
    use rodio::Source;
    let (channels, rate) = (decoder.channels().get(), decoder.sample_rate().get());
    let samples: Vec<f32> = decoder.take_duration(Duration::from_secs(30)).collect();
    if samples.is_empty() {
        return Err(format!("sound file {}: no audio in it", path.display()));
    }
    Ok(Sound { samples, channels, rate })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtins_have_their_stated_length_and_are_not_silent() {
        let chime = builtin("chime").unwrap();
        assert!((chime.duration().as_secs_f64() - 0.9).abs() < 0.01);
        assert!(chime.samples.iter().any(|s| s.abs() > 0.3));
        assert!(chime.samples.iter().all(|s| s.abs() <= 1.0));
        assert!(builtin("gong").is_none());
    }

    #[test]
    fn bad_files_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let junk = dir.path().join("junk.wav");
        std::fs::write(&junk, b"RIFF not really").unwrap();
        assert!(load(junk.to_str().unwrap()).unwrap_err().contains("cannot decode"));
        assert!(load("/no/such/file.ogg").unwrap_err().contains("/no/such/file.ogg"));
    }
}
