//! The people who may use the web page and the API: `data/users.json`,
//! mode 0600, with argon2id password hashes and the SHA-256 of each API
//! token (a token is shown once, when it is made, and never stored).
//!
//! The CLI writes the file (`smart-cctv user ...`); the running service
//! reads it again whenever it changes, so a removed user is out at once.

use argon2::password_hash::rand_core::{OsRng, RngCore};
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use serde::{Deserialize, Serialize};
use sha2::Digest;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

/// The users file's name in the data directory.
pub const FILE: &str = "users.json";
/// The shortest password `user add` and `user passwd` accept.
pub const MIN_PASSWORD_CHARS: usize = 8;
/// The longest: argon2 hashes whatever it is given, and a megabyte form field
/// should not cost a megabyte of hashing.
pub const MAX_PASSWORD_BYTES: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum UserError {
    #[error("user name {0:?}: use 1 to 32 letters, digits, '.', '_' or '-'")]
    BadName(String),
    #[error("the password is shorter than {MIN_PASSWORD_CHARS} characters")]
    ShortPassword,
    #[error("the password is longer than {MAX_PASSWORD_BYTES} bytes")]
    LongPassword,
    #[error("user {0} already exists (change the password with `user passwd {0}`)")]
    Exists(String),
    #[error("no user {0}")]
    NoSuchUser(String),
    #[error("{path}: {reason}")]
    File { path: String, reason: String },
    #[error("hashing the password: {0}")]
    Hash(String),
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct UsersFile {
    pub users: Vec<User>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct User {
    pub name: String,
    /// A PHC string, `$argon2id$v=19$...`.
    pub password: String,
    /// SHA-256 (hex) of each API token.
    #[serde(default)]
    pub tokens: Vec<String>,
    /// When the user was added, Unix seconds.
    #[serde(default)]
    pub created: u64,
}

pub fn check_name(name: &str) -> Result<(), UserError> {
    let ok = (1..=32).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok { Ok(()) } else { Err(UserError::BadName(name.to_owned())) }
}

fn check_password(password: &str) -> Result<(), UserError> {
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(UserError::LongPassword);
    }
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(UserError::ShortPassword);
    }
    Ok(())
}

fn hash_password(password: &str) -> Result<String, UserError> {
    let salt = SaltString::generate(&mut OsRng);
    argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| UserError::Hash(e.to_string()))
}

/// A fixed hash that no password matches, verified when the user does not
/// exist, so a login takes as long for a wrong name as for a wrong password.
fn decoy_hash() -> &'static str {
    static DECOY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DECOY.get_or_init(|| hash_password("not a password of anyone").unwrap_or_default())
}

fn token_digest(token: &str) -> String {
    hex(&sha2::Sha256::digest(token.as_bytes()))
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// 32 random bytes from the OS, as hex: session ids and API tokens.
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    OsRng.fill_bytes(&mut bytes);
    hex(&bytes)
}

impl UsersFile {
    pub fn path(data_dir: &Path) -> PathBuf {
        data_dir.join(FILE)
    }

    /// The file, or no users when it does not exist.
    pub fn load(path: &Path) -> Result<Self, UserError> {
        let file_error = |reason: String| UserError::File { path: path.display().to_string(), reason };
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| file_error(format!("not a users file: {e}"))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(file_error(e.to_string())),
        }
    }

    /// Writes the whole file anew (0600, then renamed over the old one), so
    /// a crash leaves the old file or the new one, never half of one.
    pub fn save(&self, path: &Path) -> Result<(), UserError> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let file_error =
            |e: std::io::Error| UserError::File { path: path.display().to_string(), reason: e.to_string() };
        let dir = path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(file_error)?;
        let temporary = dir.join(format!(".{FILE}.{}", std::process::id()));
        let bytes = serde_json::to_vec_pretty(self).map_err(|e| UserError::Hash(e.to_string()))?;
        let written = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&temporary)
            .and_then(|mut f| f.write_all(&bytes).and_then(|()| f.sync_all()));
        if let Err(e) = written.and_then(|()| std::fs::rename(&temporary, path)) {
            let _ = std::fs::remove_file(&temporary);
            return Err(file_error(e));
        }
        Ok(())
    }

    pub fn add(&mut self, name: &str, password: &str) -> Result<(), UserError> {
        check_name(name)?;
        check_password(password)?;
        if self.users.iter().any(|u| u.name == name) {
            return Err(UserError::Exists(name.to_owned()));
        }
        let created = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        self.users.push(User {
            name: name.to_owned(),
            password: hash_password(password)?,
            tokens: Vec::new(),
            created,
        });
        Ok(())
    }

    fn user_mut(&mut self, name: &str) -> Result<&mut User, UserError> {
        self.users.iter_mut().find(|u| u.name == name).ok_or_else(|| UserError::NoSuchUser(name.to_owned()))
    }

    /// A new password; the user's API tokens stay.
    pub fn set_password(&mut self, name: &str, password: &str) -> Result<(), UserError> {
        check_password(password)?;
        let hash = hash_password(password)?;
        self.user_mut(name)?.password = hash;
        Ok(())
    }

    pub fn remove(&mut self, name: &str) -> Result<(), UserError> {
        let before = self.users.len();
        self.users.retain(|u| u.name != name);
        if self.users.len() == before { Err(UserError::NoSuchUser(name.to_owned())) } else { Ok(()) }
    }

    /// Makes an API token for `name`; answers the token (only its digest is kept).
    pub fn new_token(&mut self, name: &str) -> Result<String, UserError> {
        let token = random_token();
        self.user_mut(name)?.tokens.push(token_digest(&token));
        Ok(token)
    }

    /// Whether `password` is `name`'s. Costs one argon2 verification whether
    /// or not the user exists.
    pub fn verify_password(&self, name: &str, password: &str) -> bool {
        let user = self.users.iter().find(|u| u.name == name);
        let stored = user.map_or(decoy_hash(), |u| u.password.as_str());
        let Ok(hash) = PasswordHash::new(stored) else { return false };
        let matches = password.len() <= MAX_PASSWORD_BYTES
            && argon2::Argon2::default().verify_password(password.as_bytes(), &hash).is_ok();
        matches && user.is_some()
    }

    /// The user whose API token this is.
    pub fn token_user(&self, token: &str) -> Option<&str> {
        let digest = token_digest(token);
        self.users.iter().find(|u| u.tokens.contains(&digest)).map(|u| u.name.as_str())
    }

    pub fn exists(&self, name: &str) -> bool {
        self.users.iter().any(|u| u.name == name)
    }
}

/// The file's modification time and size when read, and what it held.
type Cached = (Option<(SystemTime, u64)>, std::sync::Arc<UsersFile>);

/// The users file as the service sees it: read again when its size or
/// modification time changes (the CLI edits it while the service runs).
pub struct Users {
    path: PathBuf,
    cached: Mutex<Cached>,
}

impl Users {
    pub fn new(data_dir: &Path) -> Self {
        Self { path: UsersFile::path(data_dir), cached: Mutex::new((None, std::sync::Arc::default())) }
    }

    /// The current users. A file that cannot be read or parsed counts as no
    /// change (the last good list stays) and is logged.
    pub fn current(&self) -> std::sync::Arc<UsersFile> {
        let stamp =
            std::fs::metadata(&self.path).ok().map(|m| (m.modified().unwrap_or(SystemTime::UNIX_EPOCH), m.len()));
        let mut cached = self.cached.lock().unwrap_or_else(|e| e.into_inner());
        if cached.0 != stamp {
            match stamp.map_or(Ok(UsersFile::default()), |_| UsersFile::load(&self.path)) {
                Ok(file) => *cached = (stamp, std::sync::Arc::new(file)),
                Err(e) => {
                    tracing::error!("{e}; keeping the users read before");
                    cached.0 = stamp;
                }
            }
        }
        cached.1.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn users_are_kept_hashed_in_a_private_file_and_verified() {
        let dir = tempfile::tempdir().unwrap();
        let path = UsersFile::path(dir.path());
        let mut file = UsersFile::load(&path).unwrap();
        assert!(file.users.is_empty());
        file.add("ann", "correct horse").unwrap();
        assert!(matches!(file.add("ann", "another one"), Err(UserError::Exists(_))));
        assert!(matches!(file.add("bo b", "long enough"), Err(UserError::BadName(_))));
        assert!(matches!(file.add("bob", "short"), Err(UserError::ShortPassword)));
        let token = file.new_token("ann").unwrap();
        file.save(&path).unwrap();

        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("$argon2id$"), "{text}");
        assert!(!text.contains("correct horse") && !text.contains(&token));

        let users = Users::new(dir.path());
        let current = users.current();
        assert!(current.verify_password("ann", "correct horse"));
        assert!(!current.verify_password("ann", "wrong horse"));
        assert!(!current.verify_password("nobody", "correct horse"));
        assert_eq!(current.token_user(&token), Some("ann"));
        assert_eq!(current.token_user("0000"), None);

        // The CLI removes her while the service runs: seen at once.
        let mut file = UsersFile::load(&path).unwrap();
        file.remove("ann").unwrap();
        file.save(&path).unwrap();
        assert!(!users.current().exists("ann"));
        assert_eq!(users.current().token_user(&token), None);
    }
}
