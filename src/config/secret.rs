//! Camera URLs carry passwords. They must never reach a log line, a metric, an
//! error or the API, so the URL is a type whose every printed form is redacted;
//! only [`CameraUrl::expose`] gives the real thing, to the code that connects.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// A camera URL such as `rtsp://admin:secret@10.0.0.5/stream1`.
#[derive(Clone, PartialEq, Eq)]
pub struct CameraUrl(String);

impl CameraUrl {
    pub fn new(url: impl Into<String>) -> Self {
        Self(url.into())
    }

    /// The URL with its password, for the code that opens the camera. Never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// `rtsp://admin:***@host/...`
    pub fn redacted(&self) -> String {
        redact_url(&self.0)
    }
}

impl fmt::Display for CameraUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl fmt::Debug for CameraUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CameraUrl({:?})", self.redacted())
    }
}

impl Serialize for CameraUrl {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.redacted())
    }
}

impl<'de> Deserialize<'de> for CameraUrl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Self)
    }
}

/// Replaces the password in `scheme://user:password@host...` with `***`.
/// Works on strings that are not valid URLs too, since those end up in error
/// messages.
pub fn redact_url(text: &str) -> String {
    let Some(scheme_end) = text.find("://") else {
        return text.to_owned();
    };
    let authority_start = scheme_end + 3;
    let rest = &text[authority_start..];
    // The userinfo ends at the last '@': a password may itself contain '@',
    // '/', spaces or quotes when users forget to percent-encode it.
    let redacted = match rest.rfind('@') {
        Some(at) => match rest[..at].find(':') {
            Some(colon) => format!("{}{}:***{}", &text[..authority_start], &rest[..colon], &rest[at..]),
            None => text.to_owned(),
        },
        None => text.to_owned(),
    };
    redact_query(&redacted)
}

/// Query parameters that carry credentials (`?user=admin&password=...`),
/// as some cameras take them.
const SECRET_PARAMS: [&str; 7] = ["user", "username", "password", "pass", "pwd", "token", "auth"];

/// Replaces the values of [`SECRET_PARAMS`] in a URL's query with `***`.
fn redact_query(url: &str) -> String {
    let Some(q) = url.find('?') else { return url.to_owned() };
    let (head, query) = url.split_at(q + 1);
    // The query ends at a fragment, or where the URL ends inside free text.
    let end = query.find(|c: char| c == '#' || c.is_whitespace() || "\"'`<>".contains(c)).unwrap_or(query.len());
    let (query, fragment) = query.split_at(end);
    let params: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((key, _)) if SECRET_PARAMS.iter().any(|s| key.eq_ignore_ascii_case(s)) => format!("{key}=***"),
            _ => pair.to_owned(),
        })
        .collect();
    format!("{head}{}{fragment}", params.join("&"))
}

/// A secret from the config (the SMTP password): it prints as `***` in
/// every form, and only [`Secret::expose`] gives it to the code that needs it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(secret: impl Into<String>) -> Self {
        Self(secret.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("***")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_print() {
        let url = CameraUrl::new("rtsp://admin:hunter2@192.168.1.5:554/stream1");
        assert_eq!(url.to_string(), "rtsp://admin:***@192.168.1.5:554/stream1");
        assert!(!format!("{url:?}").contains("hunter2"));
        assert!(!serde_json::to_string(&url).unwrap().contains("hunter2"));
        assert_eq!(url.expose(), "rtsp://admin:hunter2@192.168.1.5:554/stream1");
    }

    #[test]
    fn odd_urls_are_redacted_too() {
        assert_eq!(redact_url("rtsp://u:p@ss/w@rd@host/x"), "rtsp://u:***@host/x");
        assert_eq!(redact_url("rtsp://host/x"), "rtsp://host/x");
        assert_eq!(redact_url("rtsp://user@host/x"), "rtsp://user@host/x");
        assert_eq!(redact_url("not a url"), "not a url");
        assert_eq!(redact_url("rtsp://:pw@h"), "rtsp://:***@h");
        assert_eq!(redact_url("rtsp://u:p a,s\"s'@h/x"), "rtsp://u:***@h/x");
    }

    #[test]
    fn query_string_credentials_are_redacted() {
        assert_eq!(
            redact_url("http://cam/snap.cgi?user=admin&password=hunter2&res=hi#x"),
            "http://cam/snap.cgi?user=***&password=***&res=hi#x"
        );
        assert_eq!(redact_url("rtsp://h/live?channel=1&PWD=x&Token=y"), "rtsp://h/live?channel=1&PWD=***&Token=***");
        assert_eq!(redact_url("rtsp://h/live?channel=1"), "rtsp://h/live?channel=1");
    }

    #[test]
    fn a_secret_never_prints() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?}"), "Secret(***)");
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"***\"");
        assert_eq!(s.expose(), "hunter2");
    }
}
