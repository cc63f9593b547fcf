//! The model manager's download path, for real: a loopback HTTP server serves
//! a model in the hub's layout and `HF_ENDPOINT` points at it.

use crate::support::*;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

crate::tests![
    named_model_is_downloaded_from_the_mirror_once,
    checksum_mismatch_is_refused,
    unreachable_hub_says_what_to_do,
    a_token_in_hf_endpoint_is_never_printed,
];

fn a_token_in_hf_endpoint_is_never_printed() {
    let models = tempfile::tempdir().unwrap();
    let image = crate::fixtures::any_image(models.path());
    let dead = format!("http://mirror-user:tok3n-secret@127.0.0.1:{}/hub?token=tok3n-secret", free_port());
    let output = detect_with_models_dir(models.path(), &dead, &image);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("HF_ENDPOINT"), "{stderr}");
    assert!(!stderr.contains("tok3n-secret"), "{stderr}");
}

/// Serves `GET /{repo}/resolve/main/{file}` with ranges, as the hub does.
/// Returns the endpoint and a counter of requests for the file.
fn serve_hub(repo: &'static str, file: &'static str, body: Vec<u8>) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(64) {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request = String::new();
            let _ = reader.read_line(&mut request);
            let mut range_start = 0usize;
            let mut range_end = body.len().saturating_sub(1);
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(spec) = line.to_ascii_lowercase().strip_prefix("range: bytes=") {
                    let (start, end) = spec.trim().split_once('-').unwrap_or(("0", ""));
                    range_start = start.parse().unwrap_or(0);
                    if let Ok(end) = end.parse() {
                        range_end = end;
                    }
                }
            }
            let path = request.split_whitespace().nth(1).unwrap_or("");
            if path != format!("/{repo}/resolve/main/{file}") {
                let _ = stream.write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
                continue;
            }
            counter.fetch_add(1, Ordering::SeqCst);
            let chunk = &body[range_start..=range_end.min(body.len() - 1)];
            let head = format!(
                "HTTP/1.1 206 Partial Content\r\ncontent-length: {}\r\ncontent-range: bytes {range_start}-{}/{}\r\n\
                 etag: \"fixture-etag\"\r\nx-repo-commit: 0123456789abcdef0123456789abcdef01234567\r\nconnection: close\r\n\r\n",
                chunk.len(),
                range_start + chunk.len() - 1,
                body.len()
            );
            let _ = stream.write_all(head.as_bytes()).and_then(|_| stream.write_all(chunk));
        }
    });
    (endpoint, hits)
}

fn detect_with_models_dir(models: &Path, endpoint: &str, image: &Path) -> std::process::Output {
    Command::new(BIN)
        .args(["detect", "--json", "--model", "yolov8n"])
        .arg(image)
        .env("SMART_CCTV_MODELS_DIR", models)
        .env("HF_ENDPOINT", endpoint)
        .env_remove("HF_HOME")
        .output()
        .unwrap()
}

fn named_model_is_downloaded_from_the_mirror_once() {
    // A model with random weights downloads, loads and runs like the real one.
    let weights = std::fs::read(crate::fixtures::random_model()).unwrap();
    let (endpoint, hits) = serve_hub("lmz/candle-yolo-v8", "yolov8n.safetensors", weights.clone());
    let models = tempfile::tempdir().unwrap();
    // The embedded manifest pins the published file; this one pins the test's.
    let sha256 = smart_cctv::detect::weights::sha256_file(&crate::fixtures::random_model()).unwrap();
    std::fs::write(
        models.path().join("manifest.toml"),
        format!("[yolov8n]\nrepo = \"lmz/candle-yolo-v8\"\nfile = \"yolov8n.safetensors\"\nsha256 = \"{sha256}\"\n"),
    )
    .unwrap();
    let image = crate::fixtures::any_image(models.path());

    let output = detect_with_models_dir(models.path(), &endpoint, &image);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let line: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert!(line["detections"].is_array(), "{line}");
    assert_eq!(std::fs::read(models.path().join("yolov8n.safetensors")).unwrap(), weights);
    let downloads = hits.load(Ordering::SeqCst);
    assert!(downloads >= 1);

    // The second run finds the file in models/ and does not touch the network.
    let output = detect_with_models_dir(models.path(), &endpoint, &image);
    assert!(output.status.success());
    assert_eq!(hits.load(Ordering::SeqCst), downloads);
}

/// A mirror serving other weights than the published ones (here: the random
/// model under the real name) is refused by the pin in the embedded manifest.
fn checksum_mismatch_is_refused() {
    let weights = std::fs::read(crate::fixtures::random_model()).unwrap();
    let (endpoint, hits) = serve_hub("lmz/candle-yolo-v8", "yolov8n.safetensors", weights);
    let models = tempfile::tempdir().unwrap();
    let output = detect_with_models_dir(models.path(), &endpoint, &crate::fixtures::any_image(models.path()));
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(hits.load(Ordering::SeqCst) >= 1, "the mirror was never asked");
    assert!(stderr.contains("sha256 mismatch: expected 5788ff52"), "{stderr}");
    assert!(!models.path().join("yolov8n.safetensors").exists());
}

fn unreachable_hub_says_what_to_do() {
    let models = tempfile::tempdir().unwrap();
    let image = crate::fixtures::any_image(models.path());
    let dead = format!("http://127.0.0.1:{}", free_port());
    let output = detect_with_models_dir(models.path(), &dead, &image);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("model `yolov8n`") && stderr.contains("HF_ENDPOINT") && stderr.contains(".safetensors path"),
        "{stderr}"
    );
}
