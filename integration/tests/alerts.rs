//! Operator alerts over real loopback network: a webhook receiver (hyper) and an SMTP sink
//! started by each test receive what the alerter sends.
//!
//! Each test resolves the alerter's metric handles under its own Prometheus recorder
//! (`metrics::with_local_recorder` around `Alerter::start`), so the counts it asserts are
//! its own, whatever the other tests do at the same time. Logs go to one process-wide
//! buffer; each test finds its lines by its connector name.

use std::net::{SocketAddr, TcpListener};
use std::num::{NonZeroU64, NonZeroUsize};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use entity_cdc::config::{AlertsConfig, Config, WebhookConfig};
use entity_cdc::sink::alert::{AlertHandle, Alerter, DeadLetterNotice};
use entity_cdc_integration::{SmtpSink, WebhookReceiver};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};
use secrecy::SecretString;

/// Long enough for anything the tests wait for on a loaded machine; short enough to fail.
const WAIT: Duration = Duration::from_secs(20);

/// Every log line of this test binary, as the fmt subscriber writes them (no colours).
fn logs() -> &'static Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let writer = Arc::clone(&buffer);
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .with_writer(move || LogWriter(Arc::clone(&writer)))
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("one global subscriber");
        buffer
    })
}

/// Appends to the shared log buffer.
struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The log lines that mention `needle`.
fn log_lines(needle: &str) -> Vec<String> {
    let bytes = logs().lock().unwrap_or_else(|e| e.into_inner()).clone();
    String::from_utf8_lossy(&bytes)
        .lines()
        .filter(|line| line.contains(needle))
        .map(str::to_owned)
        .collect()
}

/// An alerts section posting to `url` every `interval_seconds`, each delivery bounded by
/// `timeout_seconds`.
fn webhook_alerts(url: &str, interval_seconds: u64, timeout_seconds: u64) -> AlertsConfig {
    AlertsConfig {
        interval_seconds: NonZeroU64::new(interval_seconds).expect("interval > 0"),
        max_event_ids: NonZeroUsize::new(10).expect("10 > 0"),
        timeout_seconds: NonZeroU64::new(timeout_seconds).expect("timeout > 0"),
        webhook: Some(WebhookConfig {
            url: Some(SecretString::from(url)),
        }),
        email: None,
    }
}

/// Starts `config`'s alerter with its metrics recorded by a recorder of the test's own.
fn start(config: &AlertsConfig, connector: &str) -> (Alerter, PrometheusRecorder) {
    logs();
    let recorder = PrometheusBuilder::new().build_recorder();
    let alerter = metrics::with_local_recorder(&recorder, || Alerter::start(config, connector))
        .unwrap_or_else(|e| panic!("starting the alerter: {e}"));
    (alerter, recorder)
}

/// The value of the sample `line` (a metric name with its labels) in `handle`'s text.
fn sample(handle: &PrometheusHandle, line: &str) -> Option<f64> {
    handle.render().lines().find_map(|l| {
        l.strip_prefix(line)?
            .strip_prefix(' ')
            .and_then(|v| v.parse().ok())
    })
}

const DELIVERED: &str = "entity_cdc_alerts_sent_total{channel=\"webhook\",outcome=\"delivered\"}";
const FAILED: &str = "entity_cdc_alerts_sent_total{channel=\"webhook\",outcome=\"failed\"}";

fn notice(event_id: &str, topic: &str, reason: &str, retry_count: u32) -> DeadLetterNotice {
    DeadLetterNotice {
        event_id: event_id.to_owned(),
        topic: topic.to_owned(),
        reason: reason.to_owned(),
        retry_count,
    }
}

/// The JSON body a Slack-compatible webhook gets for `text` (already escaped).
fn slack_body(text: &str) -> String {
    serde_json::json!({ "text": text }).to_string()
}

/// A loopback address nobody listens on right now.
fn closed_addr() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("binding an ephemeral port");
    listener.local_addr().expect("local address")
}

/// Polls `check` every 20 ms until it holds, at most [`WAIT`].
async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not within {WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn send_story_burst(handle: &AlertHandle) {
    for i in 0..25 {
        let (topic, reason, retries) = if i < 20 {
            (
                "core.sales.order.created",
                "record too large: 1200000 bytes > message.max.bytes",
                3,
            )
        } else {
            (
                "core.sales.order.updated",
                "no tenant: column tenant_id is NULL",
                0,
            )
        };
        handle.dead_lettered(notice(&format!("0/16B3F28:{i}"), topic, reason, retries));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_five_dead_letters_in_one_interval_make_one_webhook_post() {
    let receiver = WebhookReceiver::start().await.expect("webhook receiver");
    let config = webhook_alerts(&receiver.url(), 2, 5);
    let (alerter, recorder) = start(&config, "burst on app, slot s");
    send_story_burst(&alerter.handle());

    let requests = receiver.wait_for(1, WAIT).await.expect("the alert");
    let request = &requests[0];
    assert_eq!(request.method, "POST");
    assert_eq!(request.path, "/hook");
    assert_eq!(request.content_type.as_deref(), Some("application/json"));
    let text = "burst on app, slot s: 25 events dead-lettered since the last alert\n\
                event ids (first 10 of 25):\n  0/16B3F28:0\n  0/16B3F28:1\n  0/16B3F28:2\n  \
                0/16B3F28:3\n  0/16B3F28:4\n  0/16B3F28:5\n  0/16B3F28:6\n  0/16B3F28:7\n  \
                0/16B3F28:8\n  0/16B3F28:9\n\
                topics:\n  core.sales.order.created: 20\n  core.sales.order.updated: 5\n\
                reasons:\n  record too large: 1200000 bytes &gt; message.max.bytes: 20\n  \
                no tenant: column tenant_id is NULL: 5\n\
                retries before dead-lettering: at most 3\n\
                the records are on the dead-letter topic; see docs/operations.md, \"Alerts\"\n";
    assert_eq!(request.body, slack_body(text));

    // Two more intervals pass without dead letters: nothing more is sent.
    tokio::time::sleep(Duration::from_millis(4500)).await;
    assert_eq!(receiver.requests().len(), 1, "{:?}", receiver.requests());
    let metrics = recorder.handle();
    assert_eq!(sample(&metrics, DELIVERED), Some(1.0));
    assert_eq!(sample(&metrics, FAILED), Some(0.0));
    alerter.close().await;
    assert_eq!(receiver.requests().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alert_mail_reaches_the_smtp_server() {
    let smtp = SmtpSink::start().await.expect("smtp sink");
    let yaml = format!(
        "
source: {{ host: db, database: app, user: cdc, slot: entity_cdc, publication: entity_cdc }}
kafka: {{ bootstrapServers: 'k:9092' }}
alerts:
  intervalSeconds: 1
  email:
    smtpHost: 127.0.0.1
    smtpPort: {}
    tls: none
    from: entity-cdc <alerts@example.com>
    to: [ops@example.com, On Call <oncall@example.com>]
entities:
  - {{ name: Order, table: public.orders, tenantColumn: tenant_id, streaming: {{ topicPrefix: core.orders }} }}
",
        smtp.addr.port()
    );
    let config = Config::from_yaml_str(&yaml, "test connector.yaml")
        .unwrap_or_else(|e| panic!("config invalid: {e}\n{yaml}"));
    logs();
    let recorder = PrometheusBuilder::new().build_recorder();
    let alerter = metrics::with_local_recorder(&recorder, || Alerter::for_config(&config))
        .unwrap_or_else(|e| panic!("starting the alerter: {e}"));
    let handle = alerter.handle();
    handle.dead_lettered(notice(
        "0/1A2B3C4:0",
        "core.orders.order.created",
        "no tenant",
        0,
    ));
    handle.dead_lettered(notice(
        "0/1A2B3C4:1",
        "core.orders.order.created",
        "no tenant",
        0,
    ));
    handle.dead_lettered(notice(
        "0/1A2B400:0",
        "core.orders.order.updated",
        "unsupported type oid 600 in column shape",
        2,
    ));

    let mails = smtp.wait_for(1, WAIT).await.expect("the alert mail");
    let mail = &mails[0];
    assert_eq!(mail.mail_from, "alerts@example.com");
    assert_eq!(mail.rcpt_to, ["ops@example.com", "oncall@example.com"]);
    assert_eq!(
        mail.header("From").as_deref(),
        Some("entity-cdc <alerts@example.com>")
    );
    assert_eq!(
        mail.header("To").as_deref(),
        Some("ops@example.com, \"On Call\" <oncall@example.com>")
    );
    assert_eq!(
        mail.header("Subject").as_deref(),
        Some("entity-cdc on app, slot entity_cdc: 3 events dead-lettered")
    );
    assert_eq!(
        mail.header("Content-Type").as_deref(),
        Some("text/plain; charset=utf-8")
    );
    // The first line is longer than 76 characters, so the body travels quoted-printable.
    assert_eq!(
        mail.header("Content-Transfer-Encoding").as_deref(),
        Some("quoted-printable")
    );
    let body = "entity-cdc on app, slot entity_cdc: 3 events dead-lettered since the last alert\n\
                event ids (first 3 of 3):\n  0/1A2B3C4:0\n  0/1A2B3C4:1\n  0/1A2B400:0\n\
                topics:\n  core.orders.order.created: 2\n  core.orders.order.updated: 1\n\
                reasons:\n  no tenant: 2\n  unsupported type oid 600 in column shape: 1\n\
                retries before dead-lettering: at most 2\n\
                the records are on the dead-letter topic; see docs/operations.md, \"Alerts\"\n";
    assert_eq!(
        mail.decoded_body()
            .expect("decodable body")
            .trim_end_matches("\r\n"),
        body.replace('\n', "\r\n").trim_end_matches("\r\n")
    );
    // Counted once the SMTP session is over, just after the sink has the mail.
    let metrics = recorder.handle();
    eventually("the delivery counted", || {
        sample(
            &metrics,
            "entity_cdc_alerts_sent_total{channel=\"email\",outcome=\"delivered\"}",
        ) == Some(1.0)
    })
    .await;
    assert_eq!(
        sample(
            &metrics,
            "entity_cdc_alerts_sent_total{channel=\"email\",outcome=\"failed\"}"
        ),
        Some(0.0)
    );
    alerter.close().await;
    assert_eq!(smtp.mails().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starttls_is_required_when_configured() {
    // The sink offers no STARTTLS: with `tls: starttls` nothing may go out in clear text.
    let smtp = SmtpSink::start().await.expect("smtp sink");
    let config: AlertsConfig = serde_norway::from_str(&format!(
        "intervalSeconds: 1
timeoutSeconds: 5
email:
  smtpHost: 127.0.0.1
  smtpPort: {}
  tls: starttls
  from: alerts@example.com
  to: [ops@example.com]
",
        smtp.addr.port()
    ))
    .expect("alerts section");
    let connector = "starttls on app, slot s";
    let (alerter, recorder) = start(&config, connector);
    alerter.handle().dead_lettered(notice("0/A:0", "t", "r", 0));
    let metrics = recorder.handle();
    eventually("a failed delivery", || {
        sample(
            &metrics,
            "entity_cdc_alerts_sent_total{channel=\"email\",outcome=\"failed\"}",
        ) == Some(1.0)
    })
    .await;
    let lines = log_lines(connector);
    assert!(
        lines.iter().any(|l| l.contains(" WARN ")
            && l.contains("channel=\"email\"")
            && l.contains("smtp delivery via 127.0.0.1:")),
        "{lines:#?}"
    );
    assert!(smtp.mails().is_empty(), "{:?}", smtp.mails());
    alerter.close().await;
    assert!(smtp.mails().is_empty(), "{:?}", smtp.mails());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_that_is_down_gets_the_alert_once_it_is_up() {
    let addr = closed_addr();
    // The token in the path stands for the secret part of a real webhook URL.
    let url = format!("http://{addr}/hook/T000/SECRET-TOKEN");
    let config = webhook_alerts(&url, 1, 2);
    let connector = "down-then-up on app, slot s";
    let (alerter, recorder) = start(&config, connector);
    let metrics = recorder.handle();
    let handle = alerter.handle();
    handle.dead_lettered(notice("0/5000:0", "t.created", "record too large", 3));
    handle.dead_lettered(notice("0/5000:1", "t.created", "record too large", 3));

    // Connection refused: a failed delivery, logged at WARN with the URL left out.
    eventually("a failed delivery", || {
        sample(&metrics, FAILED).is_some_and(|n| n >= 1.0)
    })
    .await;
    let warnings = log_lines(connector);
    assert!(
        warnings.iter().any(|l| l.contains(" WARN ")
            && l.contains("alert delivery failed; retried at the next interval")
            && l.contains("channel=\"webhook\"")
            && l.contains("webhook request failed")),
        "{warnings:#?}"
    );
    assert!(
        log_lines("SECRET-TOKEN").is_empty(),
        "the webhook URL was logged: {:#?}",
        log_lines("SECRET-TOKEN")
    );
    assert_eq!(sample(&metrics, DELIVERED), Some(0.0));

    // One more dead letter while it is down, then the server comes up.
    handle.dead_lettered(notice("0/6000:0", "t.updated", "no tenant", 0));
    let receiver = WebhookReceiver::start_on(addr)
        .await
        .expect("webhook receiver");
    let requests = receiver.wait_for(1, WAIT).await.expect("the delayed alert");
    assert_eq!(requests[0].path, "/hook/T000/SECRET-TOKEN");
    let text = "down-then-up on app, slot s: 3 events dead-lettered since the last alert\n\
                event ids (first 3 of 3):\n  0/5000:0\n  0/5000:1\n  0/6000:0\n\
                topics:\n  t.created: 2\n  t.updated: 1\n\
                reasons:\n  record too large: 2\n  no tenant: 1\n\
                retries before dead-lettering: at most 3\n\
                the records are on the dead-letter topic; see docs/operations.md, \"Alerts\"\n";
    assert_eq!(requests[0].body, slack_body(text));
    eventually("the delivery counted", || {
        sample(&metrics, DELIVERED) == Some(1.0)
    })
    .await;
    // Logged once when the failures began; the recovery at INFO.
    let lines = log_lines(connector);
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.contains("alert delivery failed"))
            .count(),
        1,
        "{lines:#?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains(" INFO ") && l.contains("alert delivery recovered")),
        "{lines:#?}"
    );
    alerter.close().await;
    assert_eq!(receiver.requests().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_answering_5xx_gets_the_alert_again_with_what_came_since() {
    let receiver = WebhookReceiver::start().await.expect("webhook receiver");
    receiver.answer_with(503);
    let config = webhook_alerts(&receiver.url(), 1, 5);
    let connector = "unavailable on app, slot s";
    let (alerter, recorder) = start(&config, connector);
    let metrics = recorder.handle();
    let handle = alerter.handle();
    handle.dead_lettered(notice("0/9:0", "t", "r", 0));
    let first = receiver.wait_for(1, WAIT).await.expect("the first attempt");
    let text = |count: usize, ids: &str| {
        format!(
            "unavailable on app, slot s: {count} {} dead-lettered since the last alert\n\
             event ids (first {count} of {count}):\n{ids}\
             topics:\n  t: {count}\nreasons:\n  r: {count}\n\
             retries before dead-lettering: at most 0\n\
             the records are on the dead-letter topic; see docs/operations.md, \"Alerts\"\n",
            if count == 1 { "event" } else { "events" }
        )
    };
    assert_eq!(first[0].body, slack_body(&text(1, "  0/9:0\n")));
    eventually("the failure counted", || {
        sample(&metrics, FAILED) == Some(1.0)
    })
    .await;
    let lines = log_lines(connector);
    assert!(
        lines
            .iter()
            .any(|l| l.contains(" WARN ") && l.contains("error=webhook answered http status 503")),
        "{lines:#?}"
    );

    // The service is back; the alert still owed goes out with the event that came since.
    receiver.answer_with(200);
    handle.dead_lettered(notice("0/9:1", "t", "r", 0));
    let requests = receiver
        .wait_for(2, WAIT)
        .await
        .expect("the second attempt");
    assert_eq!(requests[1].body, slack_body(&text(2, "  0/9:0\n  0/9:1\n")));
    eventually("the delivery counted", || {
        sample(&metrics, DELIVERED) == Some(1.0)
    })
    .await;
    assert_eq!(sample(&metrics, FAILED), Some(1.0));
    alerter.close().await;
    assert_eq!(receiver.requests().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_lettered_never_waits_for_a_hung_webhook() {
    let receiver = WebhookReceiver::start().await.expect("webhook receiver");
    receiver.hang_next(1);
    let config = webhook_alerts(&receiver.url(), 1, 1);
    let (alerter, recorder) = start(&config, "hung on app, slot s");
    let handle = alerter.handle();
    handle.dead_lettered(notice("0/1:0", "t", "r", 0));
    // The alerter is now inside a delivery the server never answers.
    eventually("the hung request", || receiver.hung() == 1).await;

    // 5000 notices while the alerter is stuck: each call returns at once (it cannot wait:
    // it is synchronous and only tries the bounded queue), and the queue cannot take them
    // all, so some are only counted.
    for i in 0..5000 {
        handle.dead_lettered(notice(&format!("0/2:{i}"), "t", "r", 0));
    }

    // The hung delivery times out; the next interval delivers everything.
    let requests = receiver.wait_for(1, WAIT).await.expect("the alert");
    let body: serde_json::Value = serde_json::from_str(&requests[0].body).expect("json body");
    let text = body["text"].as_str().expect("text").to_owned();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0],
        "hung on app, slot s: 5001 events dead-lettered since the last alert"
    );
    assert_eq!(
        lines[1..12],
        [
            "event ids (first 10 of 5001):",
            "  0/1:0",
            "  0/2:0",
            "  0/2:1",
            "  0/2:2",
            "  0/2:3",
            "  0/2:4",
            "  0/2:5",
            "  0/2:6",
            "  0/2:7",
            "  0/2:8"
        ]
    );
    // Listed plus counted-only is exactly every call.
    let unlisted: u64 = lines
        .iter()
        .find_map(|l| {
            l.strip_suffix(
                " of them came faster than the alerter could list them: counted, not listed",
            )
        })
        .unwrap_or_else(|| panic!("no overflow line in {text}"))
        .parse()
        .expect("overflow count");
    assert!(unlisted > 0, "{text}");
    let listed = 5001 - unlisted;
    assert_eq!(lines[12], "topics:");
    assert_eq!(lines[13], format!("  t: {listed}"));
    assert_eq!(lines[14], "reasons:");
    assert_eq!(lines[15], format!("  r: {listed}"));
    let metrics = recorder.handle();
    assert_eq!(sample(&metrics, FAILED), Some(1.0));
    eventually("the delivery counted", || {
        sample(&metrics, DELIVERED) == Some(1.0)
    })
    .await;
    alerter.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_sends_what_is_pending() {
    let receiver = WebhookReceiver::start().await.expect("webhook receiver");
    // An interval far longer than the test: only the shutdown can send the alert.
    let config = webhook_alerts(&receiver.url(), 3600, 5);
    let (alerter, _recorder) = start(&config, "closing on app, slot s");
    alerter.handle().dead_lettered(notice("0/7:0", "t", "r", 1));
    alerter.close().await;
    let requests = receiver.requests();
    assert_eq!(requests.len(), 1, "{requests:?}");
    let text = "closing on app, slot s: 1 event dead-lettered since the last alert\n\
                event ids (first 1 of 1):\n  0/7:0\n\
                topics:\n  t: 1\n\
                reasons:\n  r: 1\n\
                retries before dead-lettering: at most 1\n\
                the records are on the dead-letter topic; see docs/operations.md, \"Alerts\"\n";
    assert_eq!(requests[0].body, slack_body(text));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_every_handle_sends_what_is_pending() {
    let receiver = WebhookReceiver::start().await.expect("webhook receiver");
    let config = webhook_alerts(&receiver.url(), 3600, 5);
    let (alerter, _recorder) = start(&config, "dropped on app, slot s");
    let handle = alerter.handle();
    drop(alerter);
    handle.dead_lettered(notice("0/8:0", "t", "r", 0));
    drop(handle);
    let requests = receiver.wait_for(1, WAIT).await.expect("the last alert");
    let text = "dropped on app, slot s: 1 event dead-lettered since the last alert\n\
                event ids (first 1 of 1):\n  0/8:0\n\
                topics:\n  t: 1\n\
                reasons:\n  r: 1\n\
                retries before dead-lettering: at most 0\n\
                the records are on the dead-letter topic; see docs/operations.md, \"Alerts\"\n";
    assert_eq!(requests[0].body, slack_body(text));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_alerts_the_handle_does_nothing() {
    let alerter = Alerter::disabled();
    let handle = alerter.handle();
    assert!(!handle.is_enabled());
    handle.dead_lettered(notice("0/1:0", "t", "r", 0));
    alerter.close().await;
}
