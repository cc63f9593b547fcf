//! Reading `config.yaml`: the file, then environment overrides, then types,
//! then validation. Every problem comes back with its key path.

use super::model::Config;
use super::secret::redact_url;
use super::validate::validate;
use serde::Serialize;
use std::fmt;
use std::path::Path;

/// The configuration the service runs on when no file is given: the demo
/// camera and the default rules.
pub const EMBEDDED: &str = include_str!("../../config/config.yaml");

/// Environment overrides look like `SMART_CCTV__HTTP__LISTEN=127.0.0.1:9191`.
pub const ENV_PREFIX: &str = "SMART_CCTV";

/// One thing wrong with a configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// `cameras[1].url`, or `(file)` for problems with the file itself.
    pub key: String,
    pub message: String,
}

impl Problem {
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self { key: key.into(), message: redact_text(&message.into()) }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {file}: {source}")]
    Read { file: String, source: std::io::Error },
    #[error("{file}: {} problem(s):\n{}", problems.len(), problems.iter().map(|p| format!("  {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid { file: String, problems: Vec<Problem> },
}

impl ConfigError {
    pub fn problems(&self) -> Vec<Problem> {
        match self {
            Self::Read { source, .. } => vec![Problem::new("(file)", source.to_string())],
            Self::Invalid { problems, .. } => problems.clone(),
        }
    }
}

/// A configuration that passed validation, and where it came from.
#[derive(Debug, Clone)]
pub struct LoadedConfig {
    pub config: Config,
    /// The file, or `<embedded default>`.
    pub source: String,
    /// Things worth saying that do not stop the service.
    pub warnings: Vec<String>,
}

/// Loads `path`, or the embedded default when `path` is `None`, with
/// environment overrides applied on top.
pub fn load(path: Option<&Path>) -> Result<LoadedConfig, ConfigError> {
    let (text, source) = match path {
        Some(path) => {
            let file = path.display().to_string();
            let text = super::limits::read(path).map_err(|e| match e {
                super::limits::ReadError::Io(source) => ConfigError::Read { file: file.clone(), source },
                super::limits::ReadError::Refused(problem) => {
                    ConfigError::Invalid { file: file.clone(), problems: vec![problem] }
                }
            })?;
            (text, file)
        }
        None => (EMBEDDED.to_owned(), "<embedded default>".to_owned()),
    };
    let invalid = |problems| ConfigError::Invalid { file: source.clone(), problems };
    let config = parse(&text).map_err(|p| invalid(vec![p]))?;
    let mut problems = validate(&config);
    if problems.is_empty() {
        problems.extend(check_calibrations(&config, &calibration_dir(path), path.is_none()));
    }
    if !problems.is_empty() {
        return Err(invalid(problems));
    }
    let mut warnings = Vec::new();
    if let Some(path) = path
        && holds_secrets(&config)
        && readable_by_others(path)
    {
        warnings.push(format!(
            "{} is readable by other users and holds passwords; run `chmod 600 {}`",
            path.display(),
            path.display()
        ));
    }
    Ok(LoadedConfig { config, source, warnings })
}

/// The stack of the thread that parses: the YAML loader recurses once per
/// nesting level, and [`super::limits::MAX_DEPTH`] keeps it far below this.
const PARSE_STACK_BYTES: usize = 16 << 20;

/// Checks the text's shape, then parses it on a thread of its own with a
/// known stack, so that whatever the parser does with hostile input, the
/// caller (the main thread on SIGHUP) gets an error, not a crash.
fn parse(text: &str) -> Result<Config, Problem> {
    super::limits::check_shape(text)?;
    let text = text.to_owned();
    let parser = std::thread::Builder::new()
        .name("config-parse".into())
        .stack_size(PARSE_STACK_BYTES)
        .spawn(move || std::panic::catch_unwind(|| parse_layered(&text)))
        .map_err(|e| Problem::new("(file)", format!("cannot start the parser thread: {e}")))?;
    match parser.join() {
        Ok(Ok(result)) => result,
        Ok(Err(_)) | Err(_) => Err(Problem::new("(syntax)", "the parser failed on this input; check its syntax")),
    }
}

/// Layers the YAML text and the environment, then deserialises into the
/// typed config, naming the key path of the first structural problem.
fn parse_layered(text: &str) -> Result<Config, Problem> {
    let layered = config::Config::builder()
        .add_source(config::File::from_str(text, config::FileFormat::Yaml))
        .add_source(
            config::Environment::with_prefix(ENV_PREFIX).prefix_separator("__").separator("__").try_parsing(true),
        )
        .build()
        .map_err(|e| Problem::new("(syntax)", e.to_string()))?;
    let tree: serde_json::Value = layered.try_deserialize().map_err(|e| Problem::new("(syntax)", e.to_string()))?;
    serde_path_to_error::deserialize(tree).map_err(|e| {
        let key = e.path().to_string();
        let key = if key == "." { "(top level)".to_owned() } else { key };
        Problem::new(key, e.into_inner().to_string())
    })
}

/// Calibration files live in `calibration/` beside the config file
/// (`config/calibration/` for the embedded default).
pub fn calibration_dir(config_path: Option<&Path>) -> std::path::PathBuf {
    match config_path.and_then(Path::parent) {
        Some(dir) => dir.join("calibration"),
        None => std::path::PathBuf::from("config/calibration"),
    }
}

/// Rules that measure on the ground need each of their cameras calibrated,
/// with the references they name.
fn check_calibrations(config: &Config, dir: &Path, embedded_default: bool) -> Vec<Problem> {
    let mut problems = Vec::new();
    for (i, rule) in config.alert_rules.iter().enumerate() {
        let c = &rule.conditions;
        let ground_zone = c.zones.iter().position(|z| z.space == crate::config::ZoneSpace::Ground);
        if c.distance_to_reference.is_none() && ground_zone.is_none() {
            continue;
        }
        let key = match (&c.distance_to_reference, ground_zone) {
            (Some(_), _) => format!("alert_rules[{i}].conditions.distance_to_reference"),
            (None, Some(j)) => format!("alert_rules[{i}].conditions.zones[{j}]"),
            (None, None) => continue,
        };
        let cameras: Vec<&str> = if rule.cameras.is_empty() {
            config.cameras.iter().map(|c| c.id.as_str()).collect()
        } else {
            rule.cameras.iter().map(String::as_str).collect()
        };
        for camera in cameras {
            let path = crate::calibration::path_for(dir, camera);
            match crate::calibration::load_camera(dir, camera, embedded_default) {
                Err(e) => problems.push(Problem::new(
                    key.clone(),
                    format!("camera `{camera}` needs a calibration for ground measurements: {e} (run `smart-cctv calibrate --camera {camera}`)"),
                )),
                Ok(cal) => {
                    if let Some(name) = c.distance_to_reference.as_ref().and_then(|d| d.reference.as_ref())
                        && !cal.references.contains_key(name)
                    {
                        problems.push(Problem::new(
                            format!("alert_rules[{i}].conditions.distance_to_reference.reference"),
                            format!("`{name}` is not a reference in {}", path.display()),
                        ));
                    }
                }
            }
        }
    }
    problems
}

fn holds_secrets(config: &Config) -> bool {
    config.cameras.iter().any(|c| c.url.redacted() != c.url.expose())
        || config.monitoring.smtp_password.is_some()
        || config.mqtt.as_ref().is_some_and(|m| m.password.is_some())
}

fn readable_by_others(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o004 != 0)
}

/// Redacts every `scheme://user:password@` inside free text, such as an error
/// message that quotes a value.
pub fn redact_text(text: &str) -> String {
    text.split_inclusive('\n').map(redact_line).collect()
}

/// Each URL in a line runs to the next URL or the end of the line, so a
/// password holding a space, a comma or a quote is redacted whole; at worst
/// some text after it is hidden too.
fn redact_line(line: &str) -> String {
    let is_scheme = |c: char| c.is_ascii_alphanumeric() || "+-.".contains(c);
    let mut starts = Vec::new();
    let mut from = 0;
    while let Some(pos) = line[from..].find("://") {
        let at = from + pos;
        let start = line[..at].char_indices().rev().find(|(_, c)| !is_scheme(*c)).map_or(0, |(i, c)| i + c.len_utf8());
        starts.push(start);
        from = at + 3;
    }
    let Some(first) = starts.first() else { return line.to_owned() };
    let mut out = line[..*first].to_owned();
    for (i, start) in starts.iter().enumerate() {
        let end = starts.get(i + 1).copied().unwrap_or(line.len());
        out.push_str(&redact_url(&line[*start..end]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_default_is_valid() {
        let loaded = load(None).unwrap();
        assert!(loaded.warnings.is_empty());
    }

    #[test]
    fn redacts_urls_inside_messages() {
        assert_eq!(
            redact_text("invalid value \"rtsp://a:b@h/x\", expected u32 (see rtsp://c:d@e)"),
            "invalid value \"rtsp://a:***@h/x\", expected u32 (see rtsp://c:***@e)"
        );
    }

    #[test]
    fn passwords_with_any_character_are_redacted_in_messages() {
        for password in ["p a ss", "p,ass", "p\"ass", "p'ass", "p`ass", "p)ass", "pa@ss", "p/ass"] {
            let text = format!("cannot connect to rtsp://admin:{password}@10.0.0.5/live: timed out, see rtsp://u:x@h");
            let redacted = redact_text(&text);
            assert!(!redacted.contains(password), "{password}: {redacted}");
            assert!(redacted.starts_with("cannot connect to rtsp://admin:***@"), "{redacted}");
            assert!(!redacted.contains("u:x@"), "{redacted}");
        }
        assert_eq!(
            redact_text("GET http://cam/a?user=admin&pwd=x ok\nnext"),
            "GET http://cam/a?user=***&pwd=*** ok\nnext"
        );
    }

    #[test]
    fn world_readable_file_with_passwords_warns() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.yaml");
        std::fs::write(&path, "cameras:\n  - id: a\n    url: rtsp://u:pw@127.0.0.1/x\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let warnings = load(Some(&path)).unwrap().warnings;
        assert!(warnings[0].contains("chmod 600"), "{warnings:?}");
        assert!(!warnings[0].contains("pw@"));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(load(Some(&path)).unwrap().warnings.is_empty());
    }
}
