//! Operability: logs (tracing), metrics (the `metrics` crate, rendered for Prometheus) and
//! the HTTP endpoint serving `/metrics`, `/healthz` and `/readyz` on `telemetry.listen`.

mod health;
mod logging;
pub mod metrics;
mod server;
pub mod slot;

pub(crate) use health::now_pg_micros;
pub use health::{Health, Readiness};
pub use logging::init_logging;
pub use server::{serve, ServeError, Telemetry};
