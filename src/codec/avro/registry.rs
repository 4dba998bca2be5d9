//! Registering schemas in the Confluent Schema Registry through schema_registry_converter,
//! with the ids cached per subject and schema text, so that the registry is asked once per
//! schema and subject, not once per event.

use std::collections::HashMap;
use std::time::Duration;

use schema_registry_converter::async_impl::schema_registry::{post_schema, SrSettings};
use schema_registry_converter::error::SRCError;
use schema_registry_converter::schema_registry_common::{RawError, SchemaType, SuppliedSchema};
use secrecy::ExposeSecret;

use crate::config::SchemaRegistryConfig;

/// How long one registry request may take before it counts as the registry being down.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// What the registry answered when a schema could not be registered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    /// The registry could not be reached or answered 5xx: worth retrying.
    #[error("schema registry unavailable for subject {subject}: {reason}")]
    Unavailable {
        /// The subject.
        subject: String,
        /// What failed.
        reason: String,
    },
    /// The registry refused the schema as incompatible with the subject's history (409).
    #[error("schema registry refused the schema of subject {subject} as incompatible: {message}")]
    Incompatible {
        /// The subject.
        subject: String,
        /// The registry's message.
        message: String,
    },
    /// Any other refusal (invalid schema 422, authentication 401/403, …).
    #[error("schema registry refused subject {subject}: {message}")]
    Refused {
        /// The subject.
        subject: String,
        /// The registry's message.
        message: String,
    },
    /// The client could not be set up (e.g. TLS).
    #[error("schema registry client: {0}")]
    Client(String),
}

/// Installs rustls' ring provider as the process default, once. reqwest is built without a
/// crypto provider of its own (its `rustls` feature would bring aws-lc-rs and its C build),
/// and panics when it builds a client without one. Installing fails only when a provider
/// is installed already, which is just as good.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A registry client with its id cache.
pub struct Registry {
    settings: SrSettings,
    /// (subject, schema text) → id.
    ids: HashMap<(String, String), u32>,
}

impl Registry {
    /// A client for the configured registry.
    pub fn new(config: &SchemaRegistryConfig) -> Result<Registry, RegistryError> {
        install_crypto_provider();
        let url = config.url.trim_end_matches('/').to_owned();
        let mut builder = SrSettings::new_builder(url);
        builder.set_timeout(REQUEST_TIMEOUT);
        if let Some(user) = config.username.as_ref().filter(|u| !u.is_empty()) {
            let password = config
                .password
                .as_ref()
                .map(|p| p.expose_secret().to_owned())
                .filter(|p| !p.is_empty());
            builder.set_basic_authorization(user, password.as_deref());
        }
        let settings = builder
            .build()
            .map_err(|e| RegistryError::Client(e.to_string()))?;
        Ok(Registry {
            settings,
            ids: HashMap::new(),
        })
    }

    /// The id of `schema` under `subject`: from the cache, else registered (the registry
    /// answers the existing id for a schema it already has).
    pub async fn register(&mut self, subject: &str, schema: &str) -> Result<Cached, RegistryError> {
        let cache_key = (subject.to_owned(), schema.to_owned());
        if let Some(&id) = self.ids.get(&cache_key) {
            return Ok(Cached::Hit(id));
        }
        let supplied = SuppliedSchema::new(None, SchemaType::Avro, schema.to_owned());
        let registered = post_schema(&self.settings, subject.to_owned(), supplied)
            .await
            .map_err(|e| classify(subject, &e))?;
        self.ids.insert(cache_key, registered.id);
        Ok(Cached::Registered(registered.id))
    }
}

/// Whether an id came from the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cached {
    /// Known already.
    Hit(u32),
    /// Asked the registry now.
    Registered(u32),
}

impl Cached {
    /// The schema id.
    pub fn id(self) -> u32 {
        match self {
            Cached::Hit(id) | Cached::Registered(id) => id,
        }
    }
}

/// Sorts a converter error: an HTTP answer carries the registry's error JSON (a
/// [`RawError`] source); anything else is the registry being unreachable.
fn classify(subject: &str, error: &SRCError) -> RegistryError {
    let raw = std::error::Error::source(error).and_then(|s| s.downcast_ref::<RawError>());
    match raw {
        Some(raw) if raw.error_code == 409 || error.error.contains("409") => {
            RegistryError::Incompatible {
                subject: subject.to_owned(),
                message: raw.message.clone(),
            }
        }
        // 5xx, and Confluent's 500xx codes: the registry (or its backing Kafka) is unwell.
        Some(raw)
            if error.retriable
                || (500..600).contains(&raw.error_code)
                || (50000..60000).contains(&raw.error_code) =>
        {
            RegistryError::Unavailable {
                subject: subject.to_owned(),
                reason: raw.message.clone(),
            }
        }
        Some(raw) => RegistryError::Refused {
            subject: subject.to_owned(),
            message: format!("{} ({})", raw.message, error.error),
        },
        None => RegistryError::Unavailable {
            subject: subject.to_owned(),
            reason: error.cause.clone().unwrap_or_else(|| error.error.clone()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answered(status: &str, body: &str) -> SRCError {
        let raw: RawError =
            serde_json::from_str(body).unwrap_or_else(|e| panic!("raw error {body}: {e}"));
        let retriable = status.starts_with("502") || status.starts_with("503");
        let message = format!("HTTP request to schema registry failed with status {status}");
        if retriable {
            SRCError::retryable_with_cause(raw, &message)
        } else {
            SRCError::non_retryable_with_cause(raw, &message)
        }
    }

    #[test]
    fn registry_answers_are_sorted_by_what_to_do() {
        assert_eq!(
            classify(
                "t-value",
                &answered(
                    "409 Conflict",
                    r#"{"error_code":409,"message":"incompatible"}"#
                )
            ),
            RegistryError::Incompatible {
                subject: "t-value".to_owned(),
                message: "incompatible".to_owned()
            }
        );
        assert!(matches!(
            classify(
                "t-value",
                &answered(
                    "503 Service Unavailable",
                    r#"{"error_code":50003,"message":"x"}"#
                )
            ),
            RegistryError::Unavailable { .. }
        ));
        assert!(matches!(
            classify(
                "t-value",
                &answered(
                    "500 Internal Server Error",
                    r#"{"error_code":50001,"message":"x"}"#
                )
            ),
            RegistryError::Unavailable { .. }
        ));
        assert!(matches!(
            classify(
                "t-value",
                &answered(
                    "422 Unprocessable Entity",
                    r#"{"error_code":42201,"message":"bad"}"#
                )
            ),
            RegistryError::Refused { .. }
        ));
        let unreachable = SRCError::retryable_with_cause(
            std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connection refused"),
            "error sending request",
        );
        assert_eq!(
            classify("t-value", &unreachable),
            RegistryError::Unavailable {
                subject: "t-value".to_owned(),
                reason: "connection refused".to_owned()
            }
        );
    }
}
