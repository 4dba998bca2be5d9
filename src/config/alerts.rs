//! `alerts`: how an operator hears about dead-lettered events, by webhook (Slack-compatible)
//! and by mail. The types and their checks live here; the alerter that uses them is in
//! `sink::alert`.
//!
//! The webhook URL and the SMTP password are secrets: they are `SecretString`s, shown as
//! `[REDACTED]` in Debug output, and no validation message ever echoes them.

use std::num::{NonZeroU64, NonZeroUsize};
use std::time::Duration;

use lettre::message::Mailbox;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use super::error::index_path;
use super::scalar;

/// `alerts`: operator alerts about dead-lettered events, aggregated per interval.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AlertsConfig {
    /// Seconds of the aggregation window: at most one alert per channel per window.
    #[serde(
        default = "AlertsConfig::default_interval_seconds",
        deserialize_with = "scalar::int"
    )]
    pub interval_seconds: NonZeroU64,
    /// How many eventIds an alert lists (the first ones of its window), 1..=100.
    #[serde(
        default = "AlertsConfig::default_max_event_ids",
        deserialize_with = "scalar::int"
    )]
    pub max_event_ids: NonZeroUsize,
    /// Seconds one delivery (an HTTP POST, an SMTP session) may take before it counts as
    /// failed.
    #[serde(
        default = "AlertsConfig::default_timeout_seconds",
        deserialize_with = "scalar::int"
    )]
    pub timeout_seconds: NonZeroU64,
    /// A Slack-compatible incoming webhook.
    #[serde(default)]
    pub webhook: Option<WebhookConfig>,
    /// Mail through an SMTP server.
    #[serde(default)]
    pub email: Option<EmailConfig>,
}

impl AlertsConfig {
    /// A minute: an operator learns of a failure within one, and a burst of failures (a
    /// broker refusing a whole import) is one message, not a flood.
    const DEFAULT_INTERVAL_SECONDS: NonZeroU64 = NonZeroU64::new(60).unwrap();
    /// Enough ids to find the records in the dead-letter topic, few enough to read.
    const DEFAULT_MAX_EVENT_IDS: NonZeroUsize = NonZeroUsize::new(10).unwrap();
    /// Chat services and mail relays answer within seconds; longer means they are down.
    const DEFAULT_TIMEOUT_SECONDS: NonZeroU64 = NonZeroU64::new(10).unwrap();
    /// More ids than this make a chat message nobody reads to the end.
    pub const MAX_EVENT_IDS_LIMIT: usize = 100;

    const fn default_interval_seconds() -> NonZeroU64 {
        Self::DEFAULT_INTERVAL_SECONDS
    }

    const fn default_max_event_ids() -> NonZeroUsize {
        Self::DEFAULT_MAX_EVENT_IDS
    }

    const fn default_timeout_seconds() -> NonZeroU64 {
        Self::DEFAULT_TIMEOUT_SECONDS
    }

    /// The aggregation window.
    pub fn interval(&self) -> Duration {
        Duration::from_secs(self.interval_seconds.get())
    }

    /// The bound of one delivery.
    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_seconds.get())
    }

    /// The checks of the section, reported through `check(ok, path, message)`.
    pub(super) fn validate(&self, check: &mut impl FnMut(bool, &str, String)) {
        check(
            self.webhook.is_some() || self.email.is_some(),
            "alerts",
            "expected webhook or email (or both), got neither".into(),
        );
        check(
            self.max_event_ids.get() <= Self::MAX_EVENT_IDS_LIMIT,
            "alerts.maxEventIds",
            format!(
                "expected an integer 1..{}, got {}",
                Self::MAX_EVENT_IDS_LIMIT,
                self.max_event_ids
            ),
        );
        if let Some(webhook) = &self.webhook {
            match &webhook.url {
                None => check(
                    false,
                    "alerts.webhook.url",
                    "required: the webhook URL, e.g. ${ALERT_WEBHOOK_URL}".into(),
                ),
                Some(url) => {
                    if let Err(message) = check_webhook_url(url.expose_secret()) {
                        check(false, "alerts.webhook.url", message);
                    }
                }
            }
        }
        if let Some(email) = &self.email {
            email.validate(check);
        }
    }
}

/// Why a webhook URL is unusable. The URL itself is a secret (it carries the token), so the
/// message says what is wrong without repeating it.
fn check_webhook_url(url: &str) -> Result<(), String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| {
        format!("expected an http:// or https:// URL, got a value that is not one ({e}; value not shown: it is a secret)")
    })?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(format!(
            "expected an http:// or https:// URL, got scheme {:?}",
            parsed.scheme()
        ));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err("expected an http:// or https:// URL with a host, got none".into());
    }
    Ok(())
}

/// `alerts.webhook`: a Slack-compatible incoming webhook (`POST {"text": ...}`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct WebhookConfig {
    /// The webhook's URL, `http://` or `https://`; required. Never printed: it carries the
    /// token that lets anyone post.
    #[serde(default, deserialize_with = "scalar::opt_secret")]
    pub url: Option<SecretString>,
}

/// `alerts.email.tls`: how the SMTP connection is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTls {
    /// Plain text; only for a relay on the same host or network, and without credentials.
    None,
    /// Plain connection upgraded with STARTTLS, which the server must offer (port 587).
    #[default]
    Starttls,
    /// TLS from the first byte (SMTPS, port 465).
    Tls,
}

impl SmtpTls {
    /// The port of the usual submission service for this mode.
    pub const fn default_port(self) -> u16 {
        match self {
            Self::None => 25,
            Self::Starttls => 587,
            Self::Tls => 465,
        }
    }
}

/// `alerts.email`: alert mail through an SMTP server.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EmailConfig {
    /// The SMTP server's host name or IP address.
    pub smtp_host: String,
    /// The SMTP server's port; absent means 25, 587 or 465 after `tls`.
    #[serde(default, deserialize_with = "scalar::opt_port")]
    pub smtp_port: Option<u16>,
    /// Connection protection: none, starttls or tls.
    #[serde(default)]
    pub tls: SmtpTls,
    /// User for SMTP authentication; set together with `password`.
    #[serde(default)]
    pub username: Option<String>,
    /// Password for SMTP authentication; an empty string means none. Never printed.
    #[serde(default, deserialize_with = "scalar::opt_secret")]
    pub password: Option<SecretString>,
    /// The sender, `alerts@example.com` or `entity-cdc <alerts@example.com>`.
    pub from: String,
    /// The recipients, at least one.
    pub to: Vec<String>,
}

impl EmailConfig {
    /// The port to connect to, configured or the mode's usual one.
    pub fn port(&self) -> u16 {
        self.smtp_port.unwrap_or(self.tls.default_port())
    }

    fn validate(&self, check: &mut impl FnMut(bool, &str, String)) {
        check(
            !self.smtp_host.trim().is_empty(),
            "alerts.email.smtpHost",
            "expected a host name, got an empty string".into(),
        );
        check(
            self.from.parse::<Mailbox>().is_ok(),
            "alerts.email.from",
            format!(
                "expected a mail address like alerts@example.com or \"entity-cdc <alerts@example.com>\", got {:?}",
                self.from
            ),
        );
        check(
            !self.to.is_empty(),
            "alerts.email.to",
            "expected at least one recipient".into(),
        );
        for (i, to) in self.to.iter().enumerate() {
            check(
                to.parse::<Mailbox>().is_ok(),
                &index_path("alerts.email.to", i),
                format!("expected a mail address like ops@example.com, got {to:?}"),
            );
        }
        match (&self.username, &self.password) {
            (Some(_), None) => check(
                false,
                "alerts.email.password",
                "required when alerts.email.username is set".into(),
            ),
            (None, Some(_)) => check(
                false,
                "alerts.email.username",
                "required when alerts.email.password is set".into(),
            ),
            (Some(user), Some(_)) => {
                check(
                    !user.is_empty(),
                    "alerts.email.username",
                    "expected a user name, got an empty string".into(),
                );
                check(
                    self.tls != SmtpTls::None,
                    "alerts.email.tls",
                    "none would send the SMTP password unencrypted; use starttls or tls".into(),
                );
            }
            (None, None) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;

    use super::*;
    use crate::config::{Config, ConfigError};

    /// A valid config without alerts; the tests append an `alerts:` section.
    const BASE: &str = "
source: { host: db, database: app, user: cdc, slot: entity_cdc, publication: entity_cdc }
kafka: { bootstrapServers: 'k:9092' }
entities:
  - { name: Order, table: public.orders, tenantColumn: tenant_id, streaming: { topicPrefix: core.orders } }
";

    const WEBHOOK_URL: &str = "https://hooks.example.com/services/T000/B000/XXXXSECRETXXXX";
    const SMTP_PASSWORD: &str = "smtp-s3cr3t";

    fn env(name: &str) -> Option<String> {
        match name {
            "ALERT_WEBHOOK_URL" => Some(WEBHOOK_URL.to_owned()),
            "ALERT_SMTP_PASSWORD" => Some(SMTP_PASSWORD.to_owned()),
            "FTP_URL" => Some("ftp://files.example.com/x".to_owned()),
            "BAD_URL" => Some("not a url, token=SECRET".to_owned()),
            _ => None,
        }
    }

    fn load(alerts: &str) -> Result<Config, ConfigError> {
        Config::from_yaml_str_with_env(&format!("{BASE}{alerts}"), "connector.yaml", &env)
    }

    fn err(alerts: &str) -> String {
        match load(alerts) {
            Ok(config) => panic!("should be rejected: {:?}\n{alerts}", config.alerts),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn a_full_section_loads_with_secrets_from_the_environment() {
        let config = load(
            "alerts:
  intervalSeconds: 30
  maxEventIds: 5
  timeoutSeconds: 3
  webhook: { url: '${ALERT_WEBHOOK_URL}' }
  email:
    smtpHost: smtp.example.com
    smtpPort: '2525'
    tls: tls
    username: cdc
    password: ${ALERT_SMTP_PASSWORD}
    from: entity-cdc <alerts@example.com>
    to: [ops@example.com, 'On Call <oncall@example.com>']
",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let alerts = config.alerts.as_ref().expect("alerts section");
        assert_eq!(alerts.interval(), Duration::from_secs(30));
        assert_eq!(alerts.max_event_ids.get(), 5);
        assert_eq!(alerts.timeout(), Duration::from_secs(3));
        let url = alerts.webhook.as_ref().and_then(|w| w.url.as_ref());
        assert_eq!(url.map(|u| u.expose_secret()), Some(WEBHOOK_URL));
        let email = alerts.email.as_ref().expect("email");
        assert_eq!(email.port(), 2525);
        assert_eq!(email.tls, SmtpTls::Tls);
        assert_eq!(
            email.password.as_ref().map(|p| p.expose_secret()),
            Some(SMTP_PASSWORD)
        );
        assert_eq!(
            email.to,
            ["ops@example.com", "On Call <oncall@example.com>"]
        );
        // Secrets never show in debug output of the config.
        let shown = format!("{config:?}");
        assert!(!shown.contains("XXXXSECRETXXXX"), "{shown}");
        assert!(!shown.contains(SMTP_PASSWORD), "{shown}");
    }

    #[test]
    fn the_commented_example_in_the_sample_loads() {
        const SAMPLE: &str = include_str!("../../connector.yaml");
        let example: String = SAMPLE
            .lines()
            .skip_while(|line| *line != "# alerts:")
            .take_while(|line| line.starts_with('#'))
            .map(|line| format!("{}\n", line.strip_prefix("# ").unwrap_or(line)))
            .collect();
        assert!(example.starts_with("alerts:\n"), "{example}");
        let config = load(&example).unwrap_or_else(|e| panic!("{e}\n{example}"));
        let alerts = config.alerts.expect("alerts section");
        assert!(alerts.webhook.is_some());
        assert_eq!(
            alerts.email.map(|e| (e.port(), e.to)),
            Some((587, vec!["ops@example.com".to_owned()]))
        );
    }

    #[test]
    fn defaults_and_ports_follow_the_tls_mode() {
        let config = load(
            "alerts:
  email: { smtpHost: relay, tls: none, from: a@example.com, to: [b@example.com] }
",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let alerts = config.alerts.as_ref().expect("alerts section");
        assert_eq!(alerts.interval_seconds.get(), 60);
        assert_eq!(alerts.max_event_ids.get(), 10);
        assert_eq!(alerts.timeout_seconds.get(), 10);
        assert!(alerts.webhook.is_none());
        assert_eq!(alerts.email.as_ref().map(EmailConfig::port), Some(25));
        assert_eq!(SmtpTls::default().default_port(), 587);
        assert_eq!(SmtpTls::Tls.default_port(), 465);
    }

    #[test]
    fn an_empty_section_names_what_is_missing() {
        assert_eq!(
            err("alerts: { intervalSeconds: 5 }\n"),
            "connector.yaml: alerts: expected webhook or email (or both), got neither"
        );
    }

    #[test]
    fn bad_webhook_urls_are_rejected_without_showing_them() {
        assert_eq!(
            err("alerts: { webhook: { url: '${FTP_URL}' } }\n"),
            "connector.yaml: alerts.webhook.url: expected an http:// or https:// URL, got \
             scheme \"ftp\""
        );
        let message = err("alerts: { webhook: { url: '${BAD_URL}' } }\n");
        assert!(
            message.starts_with(
                "connector.yaml: alerts.webhook.url: expected an http:// or https:// URL, got a \
                 value that is not one"
            ),
            "{message}"
        );
        assert!(!message.contains("SECRET"), "{message}");
        assert_eq!(
            err("alerts: { webhook: {} }\n"),
            "connector.yaml: alerts.webhook.url: required: the webhook URL, e.g. \
             ${ALERT_WEBHOOK_URL}"
        );
    }

    #[test]
    fn bad_mail_settings_name_their_paths() {
        assert_eq!(
            err("alerts:
  maxEventIds: 101
  email: { smtpHost: ' ', from: 'not an address', to: [ok@example.com, 'bad@'] }
"),
            "connector.yaml: alerts.maxEventIds: expected an integer 1..100, got 101\n\
             connector.yaml: alerts.email.smtpHost: expected a host name, got an empty string\n\
             connector.yaml: alerts.email.from: expected a mail address like alerts@example.com \
             or \"entity-cdc <alerts@example.com>\", got \"not an address\"\n\
             connector.yaml: alerts.email.to[1]: expected a mail address like ops@example.com, \
             got \"bad@\""
        );
        assert_eq!(
            err("alerts: { email: { smtpHost: h, from: a@example.com, to: [] } }\n"),
            "connector.yaml: alerts.email.to: expected at least one recipient"
        );
        assert_eq!(
            err(
                "alerts: { email: { smtpHost: h, from: a@example.com, to: [b@example.com], \
                 tls: none, username: u, password: '${ALERT_SMTP_PASSWORD}' } }\n"
            ),
            "connector.yaml: alerts.email.tls: none would send the SMTP password unencrypted; \
             use starttls or tls"
        );
        assert_eq!(
            err(
                "alerts: { email: { smtpHost: h, from: a@example.com, to: [b@example.com], \
                 username: u } }\n"
            ),
            "connector.yaml: alerts.email.password: required when alerts.email.username is set"
        );
        assert_eq!(
            err(
                "alerts: { email: { smtpHost: h, from: a@example.com, to: [b@example.com], \
                 tls: ssl } }\n"
            ),
            "connector.yaml: alerts.email.tls: expected one of none, starttls, tls, got \"ssl\""
        );
        assert_eq!(
            err(
                "alerts: { intervalSeconds: 0, email: { smtpHost: h, from: a@example.com, \
                 to: [b@example.com] } }\n"
            ),
            "connector.yaml: alerts.intervalSeconds: expected a positive integer, got 0"
        );
    }
}
