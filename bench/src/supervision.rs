//! The benchmark's child processes and its reaction to SIGINT and SIGTERM.
//!
//! Every program the benchmark starts for a pass (psql, pgbench, pg_recvlogical,
//! entity-cdc) is registered here. On SIGINT or SIGTERM the signal task kills them all at
//! once and raises the cancellation flag; every wait loop of the benchmark checks that flag
//! and returns [`Interrupted`], so the stack unwinds normally and the Drop of each resource
//! runs: slots and the publication are dropped, PostgreSQL and the broker are stopped and
//! their temporary folders removed. Nothing is killed by name: only the pids registered.

use std::collections::BTreeSet;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Context, Result};

/// Raised once SIGINT or SIGTERM arrived.
static CANCELLED: AtomicBool = AtomicBool::new(false);

/// Pids of the running children the benchmark started.
static CHILDREN: Mutex<BTreeSet<u32>> = Mutex::new(BTreeSet::new());

/// How often wait loops look at a child, the metrics or the flag. 5 ms is well below the
/// shortest measured pass (about a second) and costs little CPU on a 2-core machine.
pub const POLL: Duration = Duration::from_millis(5);

/// The benchmark was interrupted by SIGINT or SIGTERM.
#[derive(Debug, thiserror::Error)]
#[error("interrupted by a signal")]
pub struct Interrupted;

/// Installs the SIGINT/SIGTERM handler (on the runtime this is called from).
pub fn install_signal_handler() -> Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut interrupt = signal(SignalKind::interrupt()).context("installing a SIGINT handler")?;
    let mut terminate = signal(SignalKind::terminate()).context("installing a SIGTERM handler")?;
    tokio::spawn(async move {
        let name = tokio::select! {
            _ = interrupt.recv() => "SIGINT",
            _ = terminate.recv() => "SIGTERM",
        };
        eprintln!("bench: {name} received: stopping the children, then cleaning up");
        CANCELLED.store(true, Ordering::SeqCst);
        kill_all();
    });
    Ok(())
}

/// Whether the benchmark must stop.
pub fn cancelled() -> bool {
    CANCELLED.load(Ordering::SeqCst)
}

/// Fails with [`Interrupted`] once a signal arrived.
pub fn check_cancelled() -> Result<()> {
    if cancelled() {
        return Err(Interrupted.into());
    }
    Ok(())
}

/// SIGKILLs every registered child. They are the benchmark's own short-lived clients:
/// nothing they hold needs a graceful stop, since the slots are dropped afterwards.
fn kill_all() {
    let pids: Vec<u32> = lock().iter().copied().collect();
    for pid in pids {
        if let Ok(pid) = libc::pid_t::try_from(pid) {
            // SAFETY: kill(2) with a pid this process started and has not reaped yet.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
    }
}

fn lock() -> std::sync::MutexGuard<'static, BTreeSet<u32>> {
    CHILDREN
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// What a child used, from wait4(2).
#[derive(Debug, Clone, Copy, Default)]
pub struct Usage {
    /// User plus system CPU seconds.
    pub cpu_seconds: f64,
    /// Peak resident set size in bytes (ru_maxrss).
    pub peak_rss_bytes: u64,
}

/// A registered child: killed and reaped on drop, unless it was reaped already.
pub struct Supervised {
    child: Child,
    what: String,
    reaped: Option<(i32, Usage)>,
}

impl Supervised {
    /// Spawns `cmd` and registers it; `what` names it in errors.
    pub fn spawn(mut cmd: Command, what: &str) -> Result<Supervised> {
        check_cancelled()?;
        let child = cmd.spawn().with_context(|| format!("starting {what}"))?;
        lock().insert(child.id());
        // A signal that came between the check and the registration must still stop it.
        if cancelled() {
            kill_all();
        }
        Ok(Supervised {
            child,
            what: what.to_owned(),
            reaped: None,
        })
    }

    /// Process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Reaps the child if it exited: its exit code (128+signal when killed) and usage.
    pub fn try_reap(&mut self) -> Result<Option<(i32, Usage)>> {
        if let Some(done) = self.reaped {
            return Ok(Some(done));
        }
        let pid = libc::pid_t::try_from(self.child.id()).context("child pid")?;
        let mut status: libc::c_int = 0;
        // SAFETY: an all-zero rusage is a valid value of this plain C struct.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: wait4(2) on our own child with valid pointers to locals.
        let got = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut usage) };
        if got == 0 {
            return Ok(None);
        }
        if got < 0 {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("waiting for {}", self.what));
        }
        lock().remove(&self.child.id());
        let code = if libc::WIFEXITED(status) {
            libc::WEXITSTATUS(status)
        } else {
            128 + libc::WTERMSIG(status)
        };
        let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
        let used = Usage {
            cpu_seconds: seconds(usage.ru_utime) + seconds(usage.ru_stime),
            peak_rss_bytes: u64::try_from(usage.ru_maxrss).unwrap_or(0) * 1024,
        };
        self.reaped = Some((code, used));
        Ok(self.reaped)
    }

    /// Waits for the exit, polling the cancellation flag; fails naming the child when it
    /// exits non-zero, with `stderr` (its captured output, read after the exit) appended.
    pub async fn wait_success(&mut self, stderr: impl Fn() -> String) -> Result<Usage> {
        loop {
            if let Some((code, usage)) = self.try_reap()? {
                if code != 0 {
                    anyhow::bail!("{} exited with {code}: {}", self.what, stderr());
                }
                return Ok(usage);
            }
            check_cancelled()?;
            tokio::time::sleep(POLL).await;
        }
    }

    /// Sends `signal` (e.g. SIGTERM) to the child if it still runs.
    pub fn signal(&self, signal: libc::c_int) {
        if self.reaped.is_none() {
            if let Ok(pid) = libc::pid_t::try_from(self.child.id()) {
                // SAFETY: kill(2) on our own child, not reaped yet.
                unsafe {
                    libc::kill(pid, signal);
                }
            }
        }
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        if self.reaped.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
            lock().remove(&self.child.id());
        }
    }
}
