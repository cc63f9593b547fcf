//! Decode cost per second of video: our camera path (FFmpeg through
//! ffmpeg-next, one thread) against the FFmpeg CLI itself,
//! `ffmpeg -threads 1 -i CLIP -f null -`, on the same files in the same run.
//!
//! Clips: the demo clip (640×480 H.264, 10 s) and a 1080p H.264 clip made
//! here with ffmpeg (testsrc2, 10 s, 15 fps), cached in `target/`.

use criterion::{Criterion, criterion_group, criterion_main};
use ffmpeg_next as ffmpeg;
use smart_cctv::camera::decode::Decoder;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

fn clip_1080p() -> Option<PathBuf> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench-1080p-15fps-10s.mp4");
    if !path.is_file() {
        let status = Command::new("ffmpeg")
            .args(["-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i", "testsrc2=s=1920x1080:r=15:d=10"])
            .args(["-c:v", "libx264", "-profile:v", "main", "-g", "15", "-pix_fmt", "yuv420p"])
            .arg(&path)
            .status()
            .ok()?;
        if !status.success() {
            return None;
        }
    }
    Some(path)
}

/// Decodes every frame of `path`; with `scale`, also makes the detector's RGB
/// and the motion gate's grayscale images, as the camera path does.
fn decode_all(path: &Path, scale: bool) -> usize {
    let mut input = ffmpeg::format::input(path).unwrap();
    let stream = input.streams().best(ffmpeg::media::Type::Video).unwrap();
    let index = stream.index();
    let mut decoder = Decoder::from_parameters(stream.parameters(), 640).unwrap();
    let mut frames = 0;
    for (stream, packet) in input.packets() {
        if stream.index() == index {
            frames += decoder.decode_packet(&packet, &mut || scale).unwrap().len();
        }
    }
    frames
}

fn ffmpeg_cli(path: &Path) {
    let status = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-threads", "1", "-i"])
        .arg(path)
        .args(["-f", "null", "-"])
        .status()
        .unwrap();
    assert!(status.success());
}

fn decode(c: &mut Criterion) {
    smart_cctv::camera::decode::init();
    let demo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("config/demo/people_walking.mp4");
    let mut clips = vec![("640x480", demo)];
    clips.extend(clip_1080p().map(|p| ("1920x1080", p)));
    let mut group = c.benchmark_group("decode_10s_clip");
    group.sample_size(10).measurement_time(Duration::from_secs(15));
    for (name, path) in &clips {
        group.bench_function(format!("ffmpeg_cli_{name}"), |b| b.iter(|| ffmpeg_cli(path)));
        group.bench_function(format!("ours_{name}"), |b| b.iter(|| decode_all(path, false)));
        group.bench_function(format!("ours_scaled_{name}"), |b| b.iter(|| decode_all(path, true)));
    }
    group.finish();
}

criterion_group!(benches, decode);
criterion_main!(benches);
