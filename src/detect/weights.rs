//! Finding weights: a local path if given, else `models/<file>` by name from
//! the manifest, else a download from the Hugging Face hub with `hf-hub`
//! (honouring `HF_ENDPOINT`, so a mirror or a local server works), checked
//! against its sha256 when the manifest knows it.

use super::DetectError;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};

/// The manifest used when `models/manifest.toml` is absent.
pub const EMBEDDED_MANIFEST: &str = include_str!("../../models/manifest.toml");

/// Where `processing.detection.model` names are looked up, unless overridden
/// by `SMART_CCTV_MODELS_DIR`.
pub const DEFAULT_MODELS_DIR: &str = "models";

const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelEntry {
    /// Hub repository, `owner/name`.
    pub repo: String,
    pub file: String,
    /// Hex sha256 of the file; required, so every named model is pinned.
    pub sha256: String,
}

/// The models directory and its manifest.
#[derive(Debug, Clone)]
pub struct ModelStore {
    dir: PathBuf,
    entries: BTreeMap<String, ModelEntry>,
}

impl ModelStore {
    /// `dir/manifest.toml`, or the embedded manifest when it has none.
    pub fn open(dir: &Path) -> Result<Self, DetectError> {
        let path = dir.join("manifest.toml");
        let (text, source) = match std::fs::read_to_string(&path) {
            Ok(text) => (text, path.display().to_string()),
            Err(_) => (EMBEDDED_MANIFEST.to_owned(), "<embedded manifest>".to_owned()),
        };
        let entries: BTreeMap<String, ModelEntry> = toml::from_str(&text)
            .map_err(|e| DetectError::Model { name: source.clone(), reason: format!("invalid manifest: {e}") })?;
        if let Some((name, _)) = entries.iter().find(|(_, entry)| !is_sha256_hex(&entry.sha256)) {
            return Err(DetectError::Model {
                name: source,
                reason: format!("invalid manifest: [{name}] sha256 must be 64 hex digits"),
            });
        }
        Ok(Self { dir: dir.to_owned(), entries })
    }

    /// The models directory from the environment, or `models`.
    pub fn default_dir() -> PathBuf {
        std::env::var_os("SMART_CCTV_MODELS_DIR").map_or_else(|| PathBuf::from(DEFAULT_MODELS_DIR), PathBuf::from)
    }

    pub fn names(&self) -> Vec<&str> {
        self.entries.keys().map(String::as_str).collect()
    }

    /// The weights file for `model`: a path, or a manifest name.
    pub fn resolve(&self, model: &str) -> Result<PathBuf, DetectError> {
        if model.contains('/') || model.ends_with(".safetensors") {
            let path = PathBuf::from(model);
            return if path.is_file() {
                Ok(path)
            } else {
                Err(DetectError::Weights { path: model.to_owned(), reason: "not found".into() })
            };
        }
        let entry = self.entries.get(model).ok_or_else(|| DetectError::Model {
            name: model.to_owned(),
            reason: format!("unknown model; known: {}, or give a path to a .safetensors file", self.names().join(", ")),
        })?;
        let local = self.dir.join(&entry.file);
        if local.is_file() {
            return Ok(local);
        }
        self.download(model, entry, &local).map_err(|reason| DetectError::Model {
            name: model.to_owned(),
            reason: format!(
                "not found at {} and the download failed: {reason}. Put the weights there, set \
                 processing.detection.model to a local .safetensors path, or set HF_ENDPOINT to a reachable mirror",
                local.display()
            ),
        })?;
        Ok(local)
    }

    fn download(&self, name: &str, entry: &ModelEntry, dest: &Path) -> Result<(), String> {
        // A mirror's address may carry a token: only scheme, host and path are shown.
        let endpoint = shown_endpoint(&std::env::var("HF_ENDPOINT").unwrap_or_else(|_| DEFAULT_ENDPOINT.to_owned()));
        tracing::info!(model = name, repo = %entry.repo, file = %entry.file, %endpoint, "downloading weights");
        std::fs::create_dir_all(&self.dir).map_err(|e| format!("cannot create {}: {e}", self.dir.display()))?;
        let cache = self.dir.join(".hf-cache");
        let api = hf_hub::api::sync::ApiBuilder::from_env()
            .with_cache_dir(cache.clone())
            .with_progress(std::io::stderr().is_terminal())
            .build()
            .map_err(|e| e.to_string())?;
        let fetched = api
            .model(entry.repo.clone())
            .get(&entry.file)
            .map_err(|e| format!("{endpoint}: {}", crate::config::load::redact_text(&e.to_string())))?;
        let actual = sha256_file(&fetched).map_err(|e| e.to_string())?;
        if !actual.eq_ignore_ascii_case(&entry.sha256) {
            let _ = std::fs::remove_dir_all(&cache);
            return Err(format!("sha256 mismatch: expected {}, got {actual}", entry.sha256));
        }
        // Copy out of the hub cache layout so `models/` holds plain files.
        let partial = dest.with_extension("part");
        std::fs::copy(&fetched, &partial)
            .and_then(|_| std::fs::rename(&partial, dest))
            .map_err(|e| format!("cannot write {}: {e}", dest.display()))?;
        let _ = std::fs::remove_dir_all(&cache);
        tracing::info!(model = name, path = %dest.display(), "weights downloaded");
        Ok(())
    }
}

/// `HF_ENDPOINT` without user, password, query or fragment, for messages.
fn shown_endpoint(endpoint: &str) -> String {
    match url::Url::parse(endpoint) {
        Ok(mut url) => {
            let _ = url.set_username("");
            let _ = url.set_password(None);
            url.set_query(None);
            url.set_fragment(None);
            url.to_string()
        }
        Err(_) => "(an unparsable HF_ENDPOINT)".to_owned(),
    }
}

fn is_sha256_hex(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Hex sha256 of a file.
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut hasher = Sha256::new();
    let mut file = std::fs::File::open(path)?;
    std::io::copy(&mut file, &mut hasher)?;
    Ok(hasher.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_manifest_pins_every_model() {
        let store = ModelStore::open(Path::new("/nonexistent-models-dir")).unwrap();
        assert!(store.names().contains(&"yolov8n"));
        for entry in store.entries.values() {
            assert!(is_sha256_hex(&entry.sha256), "{entry:?}");
        }
    }

    #[test]
    fn a_manifest_without_a_pin_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("manifest.toml"), "[m]\nrepo = \"a/b\"\nfile = \"m.safetensors\"\n").unwrap();
        let error = ModelStore::open(dir.path()).unwrap_err().to_string();
        assert!(error.contains("sha256"), "{error}");
        std::fs::write(
            dir.path().join("manifest.toml"),
            "[m]\nrepo = \"a/b\"\nfile = \"m.safetensors\"\nsha256 = \"00\"\n",
        )
        .unwrap();
        let error = ModelStore::open(dir.path()).unwrap_err().to_string();
        assert!(error.contains("[m] sha256 must be 64 hex digits"), "{error}");
    }
}
