//! A Kafka-protocol broker started by the tests themselves: tansu, in memory.
//!
//! tansu serves the Kafka protocol with in-memory storage, starts in well under a second
//! and goes away without a trace, so each test can have its own broker. It does not create
//! topics on first use: tests create them with [`KafkaBroker::create_topic`] (or through the
//! sink). `scripts/install-broker.sh` installs it. With `ENTITY_CDC_TEST_KAFKA` set to a
//! bootstrap address, that broker is used instead and nothing is started.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::message::{Headers, Message};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use crate::pg::free_port;

/// Environment variable naming an external broker (`host:port`) to use instead of tansu.
pub const KAFKA_ENV: &str = "ENTITY_CDC_TEST_KAFKA";

/// Environment variable naming the tansu binary, when it is neither on PATH nor in
/// `~/.cargo/bin`.
pub const TANSU_ENV: &str = "ENTITY_CDC_TANSU";

/// How long tansu may take to answer its first metadata request. It listens within
/// milliseconds; thirty seconds covers a machine busy compiling in parallel.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Timeout of one metadata request: a loopback broker answers in milliseconds.
const METADATA_TIMEOUT: Duration = Duration::from_secs(1);

/// A record as a consumer reads it back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumedRecord {
    /// Key bytes, if any.
    pub key: Option<Vec<u8>>,
    /// Value bytes, if any.
    pub payload: Option<Vec<u8>>,
    /// Headers in order; a header without a value has an empty one.
    pub headers: Vec<(String, Vec<u8>)>,
    /// Partition it was read from.
    pub partition: i32,
    /// Its offset there.
    pub offset: i64,
}

/// A running broker; a started tansu is killed when the handle is dropped, also when a
/// test panics (Drop runs while unwinding).
pub struct KafkaBroker {
    bootstrap: String,
    child: Option<Child>,
    /// tansu's output, for the error message if it does not come up.
    _log_dir: Option<tempfile::TempDir>,
}

impl KafkaBroker {
    /// Starts tansu on a free loopback port and waits until it answers a metadata request,
    /// or connects to the broker named by `ENTITY_CDC_TEST_KAFKA`.
    pub fn start() -> Result<KafkaBroker> {
        if let Ok(bootstrap) = std::env::var(KAFKA_ENV) {
            let broker = KafkaBroker {
                bootstrap,
                child: None,
                _log_dir: None,
            };
            broker.wait_ready(Instant::now() + START_TIMEOUT)?;
            return Ok(broker);
        }
        let tansu = tansu_binary()?;
        let port = free_port()?;
        let url = format!("tcp://127.0.0.1:{port}");
        let log_dir = tempfile::Builder::new()
            .prefix("entity-cdc-tansu-")
            .tempdir()
            .context("creating a folder for tansu's log")?;
        let log_path = log_dir.path().join("tansu.log");
        let log = std::fs::File::create(&log_path).context("creating tansu's log file")?;
        let log_err = log.try_clone().context("sharing tansu's log file")?;
        let child = Command::new(&tansu)
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", "memory://tansu/"])
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .with_context(|| format!("starting {}", tansu.display()))?;
        let mut broker = KafkaBroker {
            bootstrap: format!("127.0.0.1:{port}"),
            child: Some(child),
            _log_dir: Some(log_dir),
        };
        if let Err(error) = broker.wait_ready(Instant::now() + START_TIMEOUT) {
            let output = std::fs::read_to_string(&log_path).unwrap_or_default();
            broker.kill();
            return Err(error.context(format!("tansu on port {port} did not come up: {output}")));
        }
        Ok(broker)
    }

    /// A handle on a broker this process does not own (librdkafka's in-process mock
    /// cluster), for its consumer helpers; nothing is killed on drop.
    pub fn attach(bootstrap: impl Into<String>) -> KafkaBroker {
        KafkaBroker {
            bootstrap: bootstrap.into(),
            child: None,
            _log_dir: None,
        }
    }

    /// The bootstrap address, `127.0.0.1:PORT`.
    pub fn bootstrap(&self) -> &str {
        &self.bootstrap
    }

    /// Process id of the tansu this handle started; `None` for an external broker.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Polls with metadata requests until one succeeds (and tansu is still running).
    fn wait_ready(&self, deadline: Instant) -> Result<()> {
        let consumer = self.consumer_config("ready").create::<BaseConsumer>()?;
        loop {
            let error = match consumer.fetch_metadata(None, METADATA_TIMEOUT) {
                Ok(metadata) if !metadata.brokers().is_empty() => return Ok(()),
                Ok(_) => anyhow!("metadata without brokers"),
                Err(error) => anyhow!(error),
            };
            if Instant::now() > deadline {
                return Err(error.context(format!("no broker answered at {}", self.bootstrap)));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Creates a topic with replication factor 1; one that exists already is fine.
    pub async fn create_topic(&self, name: &str, partitions: i32) -> Result<()> {
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", &self.bootstrap)
            .create()
            .context("creating an admin client")?;
        let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
        let results = admin
            .create_topics([&topic], &AdminOptions::new())
            .await
            .with_context(|| format!("creating topic {name}"))?;
        for result in results {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((topic, code)) => bail!("creating topic {topic}: {code:?}"),
            }
        }
        Ok(())
    }

    /// Partitions of `topic` according to the broker's metadata.
    pub fn partition_count(&self, topic: &str) -> Result<usize> {
        let consumer = self.consumer_config("metadata").create::<BaseConsumer>()?;
        let metadata = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(5))
            .with_context(|| format!("metadata of {topic}"))?;
        let topic_metadata = metadata
            .topics()
            .iter()
            .find(|t| t.name() == topic)
            .with_context(|| format!("{topic} missing from metadata"))?;
        if let Some(error) = topic_metadata.error() {
            bail!("metadata of {topic}: {error:?}");
        }
        Ok(topic_metadata.partitions().len())
    }

    /// Reads `n` records of `topic` from the beginning of every partition, with a fresh
    /// consumer group; fails naming the topic and the count if they do not arrive within
    /// `timeout`. Records come in offset order within each partition.
    pub async fn consume(
        &self,
        topic: &str,
        n: usize,
        timeout: Duration,
    ) -> Result<Vec<ConsumedRecord>> {
        let config = self.consumer_config("consume");
        let topic = topic.to_owned();
        tokio::task::spawn_blocking(move || consume_blocking(config, &topic, n, timeout))
            .await
            .context("consumer task")?
    }

    /// A consumer configuration with a group of its own, reading from the beginning.
    fn consumer_config(&self, purpose: &str) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.bootstrap)
            .set("group.id", unique_group(purpose))
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest");
        config
    }

    /// Kills and reaps tansu, if this handle started it.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for KafkaBroker {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The consuming loop of [`KafkaBroker::consume`], on a blocking thread.
fn consume_blocking(
    config: ClientConfig,
    topic: &str,
    n: usize,
    timeout: Duration,
) -> Result<Vec<ConsumedRecord>> {
    let deadline = Instant::now() + timeout;
    let consumer: BaseConsumer = config.create().context("creating a consumer")?;
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(5))
        .with_context(|| format!("metadata of {topic}"))?;
    let partitions = metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .map(|t| t.partitions().len())
        .unwrap_or(0);
    if partitions == 0 {
        bail!("topic {topic} has no partitions");
    }
    let mut assignment = TopicPartitionList::new();
    for partition in 0..partitions {
        let partition = i32::try_from(partition).context("partition number")?;
        assignment.add_partition_offset(topic, partition, Offset::Beginning)?;
    }
    consumer.assign(&assignment)?;
    let mut records = Vec::with_capacity(n);
    while records.len() < n {
        if Instant::now() > deadline {
            bail!(
                "consumed {} of {n} records from {topic} within {timeout:?}",
                records.len()
            );
        }
        let message = match consumer.poll(Duration::from_millis(100)) {
            None => continue,
            Some(Err(error)) => bail!("consuming {topic}: {error}"),
            Some(Ok(message)) => message,
        };
        let headers = message
            .headers()
            .map(|headers| {
                headers
                    .iter()
                    .map(|h| (h.key.to_owned(), h.value.unwrap_or_default().to_vec()))
                    .collect()
            })
            .unwrap_or_default();
        records.push(ConsumedRecord {
            key: message.key().map(<[u8]>::to_vec),
            payload: message.payload().map(<[u8]>::to_vec),
            headers,
            partition: message.partition(),
            offset: message.offset(),
        });
    }
    Ok(records)
}

/// A topic name no other test or run uses: `<base>.<pid>-<nanos>-<n>`. Needed against an
/// external broker (`ENTITY_CDC_TEST_KAFKA`), where topics outlive the test and reading from
/// the beginning would otherwise see an earlier run's records.
pub fn unique_topic(base: &str) -> String {
    format!("{base}.{}", unique_suffix())
}

/// A consumer group name no other test uses.
fn unique_group(purpose: &str) -> String {
    format!("entity-cdc-test-{purpose}-{}", unique_suffix())
}

/// Process id, wall-clock nanoseconds and a counter: unique across runs and within one.
fn unique_suffix() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{}-{nanos}-{n}", std::process::id())
}

/// tansu: `ENTITY_CDC_TANSU`, then PATH, then `~/.cargo/bin`.
fn tansu_binary() -> Result<PathBuf> {
    if let Ok(path) = std::env::var(TANSU_ENV) {
        return Ok(PathBuf::from(path));
    }
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("tansu"))
            .find(|candidate| candidate.is_file())
    });
    if let Some(path) = on_path {
        return Ok(path);
    }
    if let Some(home) = std::env::var_os("HOME") {
        let path = PathBuf::from(home).join(".cargo/bin/tansu");
        if path.is_file() {
            return Ok(path);
        }
    }
    bail!("tansu not found (PATH, ~/.cargo/bin, {TANSU_ENV}): run scripts/install-broker.sh")
}
