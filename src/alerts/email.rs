//! Alert emails over SMTP (lettre), with STARTTLS and auth as the old
//! `monitoring` section configured them. Sent off the async runtime.

use crate::config::MonitoringConfig;
use lettre::transport::smtp::authentication::Credentials;
use lettre::{Message, SmtpTransport, Transport};
use std::time::Duration;

pub fn send(m: &MonitoringConfig, subject: &str, body: &str) -> Result<(), String> {
    let field = |v: &Option<String>, name: &str| v.clone().ok_or_else(|| format!("monitoring.{name} is not set"));
    let server = field(&m.smtp_server, "smtp_server")?;
    let message = Message::builder()
        .from(field(&m.email_from, "email_from")?.parse().map_err(|e| format!("monitoring.email_from: {e}"))?)
        .to(field(&m.email_to, "email_to")?.parse().map_err(|e| format!("monitoring.email_to: {e}"))?)
        .subject(subject)
        .body(body.to_owned())
        .map_err(|e| e.to_string())?;
    let builder = if m.smtp_tls {
        SmtpTransport::relay(&server).map_err(|e| format!("{server}: {e}"))?
    } else if m.smtp_starttls {
        SmtpTransport::starttls_relay(&server).map_err(|e| format!("{server}: {e}"))?
    } else {
        SmtpTransport::builder_dangerous(&server)
    };
    let mut builder = builder.port(m.smtp_port).timeout(Some(Duration::from_secs(15)));
    if let (Some(user), Some(password)) = (&m.smtp_username, &m.smtp_password) {
        // Validation refused a password over plain text unless allowed.
        builder = builder.credentials(Credentials::new(user.clone(), password.expose().to_owned()));
    }
    builder.build().send(&message).map(|_| ()).map_err(|e| format!("{server}:{}: {e}", m.smtp_port))
}
