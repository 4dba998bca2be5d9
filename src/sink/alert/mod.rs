//! Operator alerts about dead-lettered events: a Slack-compatible webhook and SMTP mail,
//! one alert per interval, never in the pipeline's way.
//!
//! ```text
//! dead-letter path ──dead_lettered(notice)──▶ bounded queue ──▶ alerter task
//!   (synchronous, never waits:               (full: counted,     one Digest per interval
//!    try_send, overflow counted)              not queued)         ──▶ webhook ──▶ chat
//!                                                                 ──▶ SMTP    ──▶ mail
//! ```
//!
//! The pipeline calls [`AlertHandle::dead_lettered`] on its dead-letter path. The call does
//! not wait for anything: it tries to queue the notice and, when the queue is full, only
//! increments a counter, so the alert's count stays exact even when the eventIds of a burst
//! cannot all be listed. The alerter task summarises each interval into a [`Digest`] and
//! sends it to every configured channel; an interval without dead letters sends nothing.
//!
//! A channel that fails (server down, 5xx, timeout) keeps its digest and merges the next
//! interval's into it, so the operator eventually gets one alert with the full count. The
//! digest has a fixed size, so waiting for a server costs no memory growth. Failures are
//! logged at WARN, once when a channel starts failing and then at most every
//! [`WARN_EVERY`], and at INFO when it recovers.
//!
//! Use: [`Alerter::for_config`] at startup (a disabled alerter without `alerts`), its
//! [`Alerter::handle`] on the dead-letter path, [`Alerter::close`] once the pipeline has
//! drained, so that the last dead letters are reported too.

mod channel;
mod digest;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use metrics::{counter, Counter};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

pub use channel::DeliveryError;

use self::channel::{Channel, Email, Webhook};
use self::digest::Digest;
use crate::config::{AlertsConfig, Config};
use crate::error::Disposition;
use crate::telemetry::metrics::{ALERTS_SENT, LABEL_CHANNEL, LABEL_OUTCOME};

/// Notices the queue holds between two drains. The alerter drains it continuously, except
/// while it delivers (up to the timeout); a burst larger than this in that time is counted,
/// not listed.
const QUEUE_CAPACITY: usize = 1024;

/// How often a channel that keeps failing is logged at WARN again.
const WARN_EVERY: Duration = Duration::from_secs(600);

/// One event sent to the dead-letter topic, as the alert reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetterNotice {
    /// The event's eventId (commit LSN and position), to find it on the dead-letter topic.
    pub event_id: String,
    /// The topic it was meant for.
    pub topic: String,
    /// Why it was dead-lettered.
    pub reason: String,
    /// Delivery attempts after the first before it was dead-lettered.
    pub retry_count: u32,
}

/// Why the alerter could not be started.
#[derive(Debug, thiserror::Error)]
pub enum AlertError {
    /// Started outside a tokio runtime: there is nowhere to run the alerter task.
    #[error("the alerter must be started within a tokio runtime")]
    NoRuntime,
    /// `alerts.webhook.url` is missing (the config check reports it first).
    #[error("alerts.webhook.url: required")]
    MissingWebhookUrl,
    /// The HTTP client could not be built (TLS roots).
    #[error("alerts.webhook: cannot build the http client: {source}")]
    HttpClient {
        /// The client's error.
        #[source]
        source: reqwest::Error,
    },
    /// The SMTP transport could not be built for the host.
    #[error("alerts.email.smtpHost: cannot set up smtp to {host}: {source}")]
    SmtpTransport {
        /// The SMTP server.
        host: String,
        /// The transport's error.
        #[source]
        source: lettre::transport::smtp::Error,
    },
    /// A mail address does not parse (the config check reports it first).
    #[error("{path}: invalid mail address {value:?}: {source}")]
    Address {
        /// The config path of the address.
        path: String,
        /// The address as written.
        value: String,
        /// The parser's error.
        #[source]
        source: lettre::address::AddressError,
    },
}

impl AlertError {
    /// Every start failure is a setup problem (config, TLS roots, runtime) that retrying
    /// cannot fix.
    pub fn disposition(&self) -> Disposition {
        Disposition::Halt
    }
}

/// What the handle shares with the alerter task.
#[derive(Debug)]
struct Shared {
    notices: mpsc::Sender<DeadLetterNotice>,
    /// Notices that found the queue full: counted into the next digest. The task holds it
    /// too, but not the sender: when every handle is gone the queue closes and the task
    /// sends what it has and ends.
    overflow: Arc<AtomicU64>,
}

/// The pipeline's side of the alerter: cheap to clone, and [`AlertHandle::dead_lettered`]
/// never waits. Without `alerts` in the config it holds nothing and does nothing.
#[derive(Debug, Clone, Default)]
pub struct AlertHandle {
    shared: Option<Arc<Shared>>,
}

impl AlertHandle {
    /// A handle that sends no alerts, for a connector without `alerts`.
    pub fn disabled() -> AlertHandle {
        AlertHandle { shared: None }
    }

    /// Whether alerts are configured.
    pub fn is_enabled(&self) -> bool {
        self.shared.is_some()
    }

    /// Reports one dead-lettered event. Never blocks and never fails: when the alerter's
    /// queue is full the event is only counted, and after the alerter stopped it is dropped.
    pub fn dead_lettered(&self, notice: DeadLetterNotice) {
        let Some(shared) = &self.shared else {
            return;
        };
        match shared.notices.try_send(notice) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                shared.overflow.fetch_add(1, Ordering::Relaxed);
            }
            // The alerter has stopped (shutdown): there is nobody left to tell.
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }
}

/// The running alerter: its handle for the pipeline and its task.
#[derive(Debug)]
pub struct Alerter {
    handle: AlertHandle,
    task: Option<AlerterTask>,
}

/// The spawned task and how to stop it.
#[derive(Debug)]
struct AlerterTask {
    join: JoinHandle<()>,
    shutdown: CancellationToken,
    /// How long the final flush may take.
    flush_bound: Duration,
}

impl Alerter {
    /// The alerter for `config.alerts`, or a disabled one when the section is absent. The
    /// connector is named in alerts by its application name, database and slot
    /// (`entity-cdc on app, slot entity_cdc`).
    pub fn for_config(config: &Config) -> Result<Alerter, AlertError> {
        match &config.alerts {
            None => Ok(Alerter::disabled()),
            Some(alerts) => {
                let source = &config.source;
                let connector = format!(
                    "{} on {}, slot {}",
                    source.application_name, source.database, source.slot
                );
                Alerter::start(alerts, connector)
            }
        }
    }

    /// An alerter that sends nothing.
    pub fn disabled() -> Alerter {
        Alerter {
            handle: AlertHandle::disabled(),
            task: None,
        }
    }

    /// Builds the configured channels and spawns the alerter task; `connector` names this
    /// connector in every alert. Fails outside a tokio runtime. The metric handles are
    /// resolved here, with the recorder current at this call.
    pub fn start(
        config: &AlertsConfig,
        connector: impl Into<String>,
    ) -> Result<Alerter, AlertError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| AlertError::NoRuntime)?;
        let webhook = match &config.webhook {
            Some(webhook) => Some(ChannelState::new(Channel::Webhook(Webhook::new(
                webhook,
                config.timeout(),
            )?))),
            None => None,
        };
        let email = match &config.email {
            Some(email) => Some(ChannelState::new(Channel::Email(Box::new(Email::new(
                email,
                config.timeout(),
            )?)))),
            None => None,
        };
        let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
        let overflow = Arc::new(AtomicU64::new(0));
        let shared = Arc::new(Shared {
            notices: tx,
            overflow: Arc::clone(&overflow),
        });
        let shutdown = CancellationToken::new();
        let task = Task {
            connector: connector.into(),
            interval: config.interval(),
            timeout: config.timeout(),
            max_event_ids: config.max_event_ids.get(),
            notices: rx,
            overflow,
            window: Digest::new(config.max_event_ids.get()),
            webhook,
            email,
            shutdown: shutdown.clone(),
        };
        let join = runtime.spawn(task.run());
        Ok(Alerter {
            handle: AlertHandle {
                shared: Some(shared),
            },
            task: Some(AlerterTask {
                join,
                shutdown,
                flush_bound: config.timeout(),
            }),
        })
    }

    /// A handle for the pipeline; clone it freely. Dropping the alerter and every handle
    /// also ends the task after a last delivery, like [`Alerter::close`] without the wait.
    pub fn handle(&self) -> AlertHandle {
        self.handle.clone()
    }

    /// Stops the alerter: what was reported so far is sent once more, best effort, within
    /// the delivery timeout, then the task ends. Returns at the latest a second after that
    /// bound, whatever the servers do.
    pub async fn close(self) {
        let Some(task) = self.task else {
            return;
        };
        task.shutdown.cancel();
        let mut join = task.join;
        let bound = task.flush_bound + Duration::from_secs(1);
        if tokio::time::timeout(bound, &mut join).await.is_err() {
            warn!(
                seconds = bound.as_secs(),
                "alerter did not finish its last delivery in time; abandoned"
            );
            join.abort();
        }
    }
}

/// One channel, the digest it still owes and how its failures were logged.
struct ChannelState {
    channel: Channel,
    /// What could not be delivered yet, merged with each later interval's digest.
    pending: Option<Digest>,
    /// While deliveries fail: when the last WARN was logged and what failed since.
    failing: Option<Failing>,
    delivered: Counter,
    failed: Counter,
}

/// A run of failures of one channel.
struct Failing {
    last_warned: Instant,
    /// Failed attempts since the last WARN.
    since_warned: u64,
}

impl ChannelState {
    fn new(channel: Channel) -> ChannelState {
        let name = channel.name();
        ChannelState {
            delivered: counter!(ALERTS_SENT, LABEL_CHANNEL => name, LABEL_OUTCOME => "delivered"),
            failed: counter!(ALERTS_SENT, LABEL_CHANNEL => name, LABEL_OUTCOME => "failed"),
            channel,
            pending: None,
            failing: None,
        }
    }

    /// Adds `digest` to what the channel owes and tries to deliver it all.
    async fn deliver(&mut self, digest: &Digest, connector: &str, timeout: Duration) {
        let owed = match self.pending.take() {
            Some(mut pending) => {
                pending.merge(digest);
                pending
            }
            None => digest.clone(),
        };
        if owed.is_empty() {
            return;
        }
        let subject = owed.subject(connector);
        let text = owed.render(connector);
        let name = self.channel.name();
        match self.channel.deliver(&subject, &text, timeout).await {
            Ok(()) => {
                // Delivered means the operator has it: the pending digest is gone. Logged
                // before counted, so that whoever sees the count finds the log line.
                if self.failing.take().is_some() {
                    info!(channel = name, %connector, count = owed.count(), "alert delivery recovered");
                }
                self.delivered.increment(1);
            }
            Err(error) => {
                let now = Instant::now();
                match &mut self.failing {
                    Some(failing) if now.duration_since(failing.last_warned) < WARN_EVERY => {
                        failing.since_warned += 1;
                    }
                    Some(failing) => {
                        warn!(channel = name, %connector, error = %error, pending = owed.count(),
                            attempts = failing.since_warned + 1,
                            "alert delivery still failing; retried at the next interval");
                        failing.last_warned = now;
                        failing.since_warned = 0;
                    }
                    None => {
                        warn!(channel = name, %connector, error = %error, pending = owed.count(),
                            "alert delivery failed; retried at the next interval");
                        self.failing = Some(Failing {
                            last_warned: now,
                            since_warned: 0,
                        });
                    }
                }
                self.pending = Some(owed);
                self.failed.increment(1);
            }
        }
    }
}

/// The alerter task's state.
struct Task {
    connector: String,
    interval: Duration,
    timeout: Duration,
    max_event_ids: usize,
    notices: mpsc::Receiver<DeadLetterNotice>,
    /// Notices that found the queue full, shared with the handles.
    overflow: Arc<AtomicU64>,
    /// The current interval's digest.
    window: Digest,
    webhook: Option<ChannelState>,
    email: Option<ChannelState>,
    shutdown: CancellationToken,
}

impl Task {
    async fn run(mut self) {
        let mut ticker = tokio::time::interval_at(Instant::now() + self.interval, self.interval);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                () = self.shutdown.cancelled() => break,
                _ = ticker.tick() => {
                    self.flush().await;
                    // After a slow delivery (a server timing out), a full interval again
                    // rather than an immediate second attempt.
                    ticker.reset();
                }
                notice = self.notices.recv() => match notice {
                    Some(notice) => self.window.add(&notice),
                    None => break,
                },
            }
        }
        // Best effort: what was reported before the shutdown, and what is still owed, once
        // more within the delivery timeout (the flush delivers to all channels at once).
        self.flush().await;
    }

    /// Ends the window and sends its digest (with what each channel still owes) to every
    /// channel, all at once.
    async fn flush(&mut self) {
        // Queued notices first: they came before the ones that found the queue full.
        while let Ok(notice) = self.notices.try_recv() {
            self.window.add(&notice);
        }
        let overflow = self.overflow.swap(0, Ordering::Relaxed);
        self.window.add_unlisted(overflow);
        let digest = std::mem::replace(&mut self.window, Digest::new(self.max_event_ids));
        let connector = &self.connector;
        let timeout = self.timeout;
        let (webhook, email) = (&mut self.webhook, &mut self.email);
        let to_webhook = async {
            if let Some(channel) = webhook {
                channel.deliver(&digest, connector, timeout).await;
            }
        };
        let to_email = async {
            if let Some(channel) = email {
                channel.deliver(&digest, connector, timeout).await;
            }
        };
        tokio::join!(to_webhook, to_email);
    }
}

#[cfg(test)]
mod tests {
    use std::num::{NonZeroU64, NonZeroUsize};

    use secrecy::SecretString;

    use super::*;
    use crate::config::WebhookConfig;

    fn notice(id: &str) -> DeadLetterNotice {
        DeadLetterNotice {
            event_id: id.to_owned(),
            topic: "t".to_owned(),
            reason: "r".to_owned(),
            retry_count: 0,
        }
    }

    #[test]
    fn a_full_queue_counts_instead_of_waiting() {
        let (tx, mut rx) = mpsc::channel(2);
        let overflow = Arc::new(AtomicU64::new(0));
        let handle = AlertHandle {
            shared: Some(Arc::new(Shared {
                notices: tx,
                overflow: Arc::clone(&overflow),
            })),
        };
        for i in 0..5 {
            handle.clone().dead_lettered(notice(&format!("0/1:{i}")));
        }
        assert_eq!(overflow.load(Ordering::Relaxed), 3);
        assert_eq!(
            rx.try_recv().map(|n| n.event_id).ok().as_deref(),
            Some("0/1:0")
        );
        assert_eq!(
            rx.try_recv().map(|n| n.event_id).ok().as_deref(),
            Some("0/1:1")
        );
        assert!(rx.try_recv().is_err());
        // After the alerter is gone the call still returns, and nothing is counted.
        drop(rx);
        handle.dead_lettered(notice("0/2:0"));
        assert_eq!(overflow.load(Ordering::Relaxed), 3);
    }

    #[test]
    fn a_disabled_handle_holds_nothing() {
        let handle = AlertHandle::disabled();
        assert!(!handle.is_enabled());
        handle.dead_lettered(notice("0/1:0"));
        assert!(handle.shared.is_none());
    }

    #[test]
    fn starting_outside_a_runtime_is_an_error() {
        let config = AlertsConfig {
            interval_seconds: NonZeroU64::MIN,
            max_event_ids: NonZeroUsize::MIN,
            timeout_seconds: NonZeroU64::MIN,
            webhook: Some(WebhookConfig {
                url: Some(SecretString::from("http://127.0.0.1:9/hook")),
            }),
            email: None,
        };
        assert!(matches!(
            Alerter::start(&config, "c"),
            Err(AlertError::NoRuntime)
        ));
    }
}
