//! The two ways an alert reaches an operator: a Slack-compatible webhook and SMTP mail.
//! Each delivery is bounded by the configured timeout, on top of the clients' own timeouts,
//! so that a server that accepts and never answers costs one timeout, not a stuck task.

use std::time::Duration;

use lettre::message::header::ContentType;
use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use secrecy::{ExposeSecret, SecretString};

use super::AlertError;
use crate::config::{EmailConfig, SmtpTls, WebhookConfig};

/// Why one delivery failed. Messages never contain the webhook URL (a secret).
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// The webhook answered with a status other than 2xx.
    #[error("webhook answered http status {status}")]
    WebhookStatus {
        /// The HTTP status.
        status: u16,
    },
    /// The webhook request failed: connection refused, TLS, reset.
    #[error("webhook request failed: {source}")]
    WebhookRequest {
        /// The client's error, with the URL removed.
        #[source]
        source: reqwest::Error,
    },
    /// The mail could not be put together (an address the config check let through).
    #[error("building the alert mail: {source}")]
    EmailMessage {
        /// The builder's error.
        #[source]
        source: lettre::error::Error,
    },
    /// The SMTP session failed: connection, TLS, authentication, a rejected recipient.
    #[error("smtp delivery via {host}:{port} failed: {source}")]
    Smtp {
        /// The SMTP server.
        host: String,
        /// Its port.
        port: u16,
        /// The transport's error.
        #[source]
        source: lettre::transport::smtp::Error,
    },
    /// No answer within the configured timeout.
    #[error("no answer within {seconds} s")]
    Timeout {
        /// The timeout in seconds.
        seconds: u64,
    },
}

/// Where alerts go.
pub(super) enum Channel {
    /// A Slack-compatible incoming webhook.
    Webhook(Webhook),
    /// SMTP mail; boxed, its transport is large, and there is one of each per alerter.
    Email(Box<Email>),
}

impl Channel {
    /// The channel's name in logs and in the `channel` label of the metric.
    pub(super) fn name(&self) -> &'static str {
        match self {
            Channel::Webhook(_) => "webhook",
            Channel::Email(_) => "email",
        }
    }

    /// Sends one alert, bounded by `timeout`.
    pub(super) async fn deliver(
        &self,
        subject: &str,
        text: &str,
        timeout: Duration,
    ) -> Result<(), DeliveryError> {
        let delivery = async {
            match self {
                Channel::Webhook(webhook) => webhook.post(text).await,
                Channel::Email(email) => email.send(subject, text).await,
            }
        };
        tokio::time::timeout(timeout, delivery)
            .await
            .unwrap_or(Err(DeliveryError::Timeout {
                seconds: timeout.as_secs(),
            }))
    }
}

/// A Slack-compatible incoming webhook: `POST {"text": ...}` as JSON.
pub(super) struct Webhook {
    client: reqwest::Client,
    url: SecretString,
}

impl Webhook {
    /// A client for the configured URL, with connect and request timeouts.
    pub(super) fn new(config: &WebhookConfig, timeout: Duration) -> Result<Webhook, AlertError> {
        let url = config.url.clone().ok_or(AlertError::MissingWebhookUrl)?;
        crate::codec::avro::registry::install_crypto_provider();
        let client = reqwest::Client::builder()
            .connect_timeout(timeout)
            .timeout(timeout)
            // A webhook that redirects is misconfigured; following it would post the
            // alert somewhere nobody chose.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| AlertError::HttpClient {
                source: e.without_url(),
            })?;
        Ok(Webhook { client, url })
    }

    async fn post(&self, text: &str) -> Result<(), DeliveryError> {
        let body = serde_json::json!({ "text": slack_escape(text) }).to_string();
        let response = self
            .client
            .post(self.url.expose_secret())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| DeliveryError::WebhookRequest {
                source: e.without_url(),
            })?;
        let status = response.status();
        if status.is_success() {
            Ok(())
        } else {
            Err(DeliveryError::WebhookStatus {
                status: status.as_u16(),
            })
        }
    }
}

/// Slack reads `&`, `<` and `>` as markup (links, mentions); a reason quoting a value must
/// show them as written.
fn slack_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Alert mail through one SMTP server.
pub(super) struct Email {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    host: String,
    port: u16,
    from: Mailbox,
    to: Vec<Mailbox>,
}

impl Email {
    /// A transport for the configured server (TLS mode, port, credentials, timeout).
    pub(super) fn new(config: &EmailConfig, timeout: Duration) -> Result<Email, AlertError> {
        let host = config.smtp_host.clone();
        let port = config.port();
        let smtp_error = |source| AlertError::SmtpTransport {
            host: host.clone(),
            source,
        };
        let builder = match config.tls {
            SmtpTls::None => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&host),
            SmtpTls::Starttls => {
                AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&host).map_err(smtp_error)?
            }
            SmtpTls::Tls => {
                AsyncSmtpTransport::<Tokio1Executor>::relay(&host).map_err(smtp_error)?
            }
        };
        let mut builder = builder.port(port).timeout(Some(timeout));
        if let (Some(user), Some(password)) = (&config.username, &config.password) {
            builder = builder.credentials(Credentials::new(
                user.clone(),
                password.expose_secret().to_owned(),
            ));
        }
        let parse = |path: String, value: &str| {
            value
                .parse::<Mailbox>()
                .map_err(|source| AlertError::Address {
                    path,
                    value: value.to_owned(),
                    source,
                })
        };
        let from = parse("alerts.email.from".to_owned(), &config.from)?;
        let to = config
            .to
            .iter()
            .enumerate()
            .map(|(i, to)| parse(format!("alerts.email.to[{i}]"), to))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Email {
            transport: builder.build(),
            host,
            port,
            from,
            to,
        })
    }

    async fn send(&self, subject: &str, text: &str) -> Result<(), DeliveryError> {
        let mut message = Message::builder()
            .from(self.from.clone())
            .subject(subject)
            .header(ContentType::TEXT_PLAIN);
        for to in &self.to {
            message = message.to(to.clone());
        }
        let message = message
            .body(text.to_owned())
            .map_err(|source| DeliveryError::EmailMessage { source })?;
        self.transport
            .send(message)
            .await
            .map(drop)
            .map_err(|source| DeliveryError::Smtp {
                host: self.host.clone(),
                port: self.port,
                source,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slack_markup_characters_are_escaped() {
        assert_eq!(
            slack_escape("a < b && c > <@here>"),
            "a &lt; b &amp;&amp; c &gt; &lt;@here&gt;"
        );
    }
}
