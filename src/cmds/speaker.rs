//! `smart-cctv speaker test --speaker ID`, which replaces `test_audio.py`:
//! connects (Bluetooth) or opens (ALSA) the speaker and plays a chime.

use super::Cli;
use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum SpeakerCommand {
    /// Play the speaker's sound once and report success or the exact failure
    Test {
        #[arg(long)]
        speaker: String,
    },
}

pub fn run(cli: &Cli, command: &SpeakerCommand) -> anyhow::Result<i32> {
    let SpeakerCommand::Test { speaker } = command;
    let config = crate::config::load(cli.config_path().as_deref())?.config;
    let speaker = config
        .speakers
        .iter()
        .find(|s| &s.id == speaker)
        .ok_or_else(|| anyhow::anyhow!("--speaker: no speaker has id `{speaker}`"))?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let result = runtime.block_on(crate::speaker::test(speaker));
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    match result {
        Ok(length) => {
            println!("{}: played {} ({:.2} s) on {}", speaker.id, speaker.sound, length.as_secs_f64(), speaker.device);
            Ok(0)
        }
        Err(e) => {
            println!("{}: FAILED: {e}", speaker.id);
            Ok(1)
        }
    }
}
