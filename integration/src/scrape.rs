//! One scrape of the connector's `/metrics`, for the load tests that watch the lanes, the
//! spill and the commit-to-ack histograms while a pipeline runs.

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The text of one `/metrics` response.
pub struct Scrape(pub String);

impl Scrape {
    /// Scrapes `127.0.0.1:port/metrics`.
    pub async fn take(port: u16) -> Scrape {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connecting to /metrics");
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .await
            .expect("request");
        let mut text = String::new();
        stream.read_to_string(&mut text).await.expect("response");
        Scrape(text)
    }

    /// The value of the sample whose name and labels start with `prefix`; 0 if absent.
    pub fn value(&self, prefix: &str) -> f64 {
        self.0
            .lines()
            .find(|line| line.starts_with(prefix))
            .and_then(|line| line.rsplit(' ').next())
            .map_or(0.0, |v| v.parse().expect("a number"))
    }

    /// Events waiting in the BULK lane.
    pub fn bulk_depth(&self) -> f64 {
        self.value("entity_cdc_lane_depth_events{priority=\"BULK\"} ")
    }

    /// Bytes waiting in the BULK lane.
    pub fn bulk_bytes(&self) -> f64 {
        self.value("entity_cdc_lane_bytes{priority=\"BULK\"} ")
    }

    /// Events in the spill.
    pub fn spilled(&self) -> f64 {
        self.value("entity_cdc_spill_events ")
    }

    /// (CRITICAL events acknowledged within 1 s of their commit, all CRITICAL events acked).
    pub fn critical_latency(&self) -> (f64, f64) {
        let within = ["le=\"1\"} ", "le=\"1.0\"} "]
            .iter()
            .map(|le| {
                self.value(&format!(
                    "entity_cdc_commit_to_ack_seconds_bucket{{priority=\"CRITICAL\",{le}"
                ))
            })
            .fold(0.0, f64::max);
        let count = self.value("entity_cdc_commit_to_ack_seconds_count{priority=\"CRITICAL\"} ");
        (within, count)
    }
}
