//! What the pipeline does with a failure: retry it, dead-letter the one record, or halt.

/// The way a failure is handled, decided by the module that raised it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// Transient: reconnect or try again with backoff, nothing is confirmed meanwhile.
    Retry,
    /// Definite and bound to one record: it goes to the dead-letter topic with its reason.
    DeadLetter,
    /// Needs an operator: stop cleanly without confirming anything past the failure.
    Halt,
}
