//! Logged-in sessions (in memory: a restart logs everyone out) and the
//! per-source limit on login attempts. Plain code with the time passed in,
//! so tests need no clock.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A session unused this long is over.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// Sessions kept at once; past this the least recently used goes.
pub const MAX_SESSIONS: usize = 1000;
/// The session cookie's name.
pub const COOKIE: &str = "smart_cctv_session";

struct Session {
    user: String,
    last_seen: Instant,
}

pub struct Sessions {
    idle: Duration,
    by_id: Mutex<HashMap<String, Session>>,
}

impl Sessions {
    pub fn new(idle: Duration) -> Self {
        Self { idle, by_id: Mutex::new(HashMap::new()) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        self.by_id.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts a session for `user`; answers its id (the cookie's value).
    pub fn start(&self, user: &str, now: Instant) -> String {
        let id = super::users::random_token();
        let mut sessions = self.lock();
        sessions.retain(|_, s| now.duration_since(s.last_seen) < self.idle);
        if sessions.len() >= MAX_SESSIONS
            && let Some(oldest) = sessions.iter().min_by_key(|(_, s)| s.last_seen).map(|(k, _)| k.clone())
        {
            sessions.remove(&oldest);
        }
        sessions.insert(id.clone(), Session { user: user.to_owned(), last_seen: now });
        id
    }

    /// The session's user, when it is live; using it keeps it live.
    pub fn touch(&self, id: &str, now: Instant) -> Option<String> {
        let mut sessions = self.lock();
        let session = sessions.get_mut(id)?;
        if now.duration_since(session.last_seen) >= self.idle {
            sessions.remove(id);
            return None;
        }
        session.last_seen = now;
        Some(session.user.clone())
    }

    pub fn end(&self, id: &str) {
        self.lock().remove(id);
    }

    /// Ends every session of `user` (removed, or a new password).
    pub fn end_user(&self, user: &str) {
        self.lock().retain(|_, s| s.user != user);
    }
}

/// Failed logins allowed per source within [`LoginLimiter::window`].
pub const MAX_FAILURES: usize = 5;

/// Counts failed logins per source address; a source with
/// [`MAX_FAILURES`] failures in the window is refused until they age out.
pub struct LoginLimiter {
    window: Duration,
    failures: Mutex<HashMap<IpAddr, Vec<Instant>>>,
}

/// Sources remembered at once: a flood from many addresses cannot grow
/// the map without bound.
const MAX_SOURCES: usize = 10_000;

impl LoginLimiter {
    pub fn new(window: Duration) -> Self {
        Self { window, failures: Mutex::new(HashMap::new()) }
    }

    /// How long `source` must wait before trying again, if it must.
    pub fn wait(&self, source: IpAddr, now: Instant) -> Option<Duration> {
        let failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let recent: Vec<&Instant> =
            failures.get(&source)?.iter().filter(|t| now.duration_since(**t) < self.window).collect();
        if recent.len() < MAX_FAILURES {
            return None;
        }
        let oldest = recent.iter().min()?;
        Some(self.window.saturating_sub(now.duration_since(**oldest)))
    }

    pub fn failed(&self, source: IpAddr, now: Instant) {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        if failures.len() >= MAX_SOURCES {
            failures.retain(|_, times| times.iter().any(|t| now.duration_since(*t) < self.window));
        }
        if failures.len() >= MAX_SOURCES && !failures.contains_key(&source) {
            return;
        }
        let times = failures.entry(source).or_default();
        times.retain(|t| now.duration_since(*t) < self.window);
        times.push(now);
    }

    pub fn succeeded(&self, source: IpAddr) {
        self.failures.lock().unwrap_or_else(|e| e.into_inner()).remove(&source);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_lives_while_used_and_ends_when_idle_or_logged_out() {
        let sessions = Sessions::new(Duration::from_secs(60));
        let t0 = Instant::now();
        let id = sessions.start("ann", t0);
        assert_eq!(sessions.touch(&id, t0 + Duration::from_secs(50)).as_deref(), Some("ann"));
        assert_eq!(sessions.touch(&id, t0 + Duration::from_secs(100)).as_deref(), Some("ann"), "use keeps it");
        assert_eq!(sessions.touch(&id, t0 + Duration::from_secs(161)), None, "idle past the timeout");
        let id = sessions.start("ann", t0);
        sessions.end(&id);
        assert_eq!(sessions.touch(&id, t0), None);
        assert_eq!(sessions.touch("made-up", t0), None);
        let id = sessions.start("bob", t0);
        sessions.end_user("bob");
        assert_eq!(sessions.touch(&id, t0), None);
    }

    #[test]
    fn a_source_is_refused_after_repeated_failures_until_they_age() {
        let limiter = LoginLimiter::new(Duration::from_secs(60));
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let t0 = Instant::now();
        for i in 0..MAX_FAILURES as u64 {
            assert_eq!(limiter.wait(a, t0), None);
            limiter.failed(a, t0 + Duration::from_secs(i));
        }
        let wait = limiter.wait(a, t0 + Duration::from_secs(10)).unwrap();
        assert_eq!(wait, Duration::from_secs(50));
        assert_eq!(limiter.wait(b, t0 + Duration::from_secs(10)), None, "another source is not affected");
        assert_eq!(limiter.wait(a, t0 + Duration::from_secs(61)), None, "the first failure aged out");
        limiter.succeeded(a);
        assert_eq!(limiter.wait(a, t0 + Duration::from_secs(10)), None);
    }
}
