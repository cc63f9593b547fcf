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
    // The userinfo ends at the last '@' before the path; a password may itself
    // contain '@' or '/' when users forget to percent-encode it, so look for
    // the last '@' anywhere before the first '/' that follows an '@'.
    let Some(at) = rest.rfind('@') else {
        return text.to_owned();
    };
    let userinfo = &rest[..at];
    match userinfo.find(':') {
        Some(colon) => format!("{}{}:***{}", &text[..authority_start], &userinfo[..colon], &rest[at..]),
        None => text.to_owned(),
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
    }
}
