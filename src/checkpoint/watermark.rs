//! Transactions in flight and the highest LSN below which everything is acknowledged.
//!
//! The source opens each transaction at its Begin (pgoutput gives the commit LSN there, as
//! `final_lsn`), adds its events one by one as they are handed downstream, and closes it at
//! its Commit with the commit record's end LSN: only then is the event count final. The sink
//! acknowledges events in whatever order Kafka's delivery reports arrive (partitions and
//! retries reorder them). The watermark is the end LSN of the newest closed transaction
//! such that it and every transaction before it have no event outstanding.
//!
//! Acknowledgements are counted, not remembered one by one: the sink's contract is that
//! every record handed to it yields exactly one delivery report, and a dead-lettered event
//! is acknowledged once, when the dead-letter topic has it. Counting keeps memory at a few
//! words per open transaction whatever its size.

use std::collections::BTreeMap;

use crate::error::Disposition;
use crate::source::Lsn;

/// Where an event sits in the WAL: its transaction's commit LSN and its index among the
/// transaction's events. Unique per event, which also makes it the eventId's basis.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Position {
    /// Commit LSN of the transaction the event belongs to.
    pub commit_lsn: Lsn,
    /// Zero-based index of the event within its transaction.
    pub index: u32,
}

/// One transaction between its Begin and the acknowledgement of its last event.
#[derive(Debug, Clone)]
struct Transaction {
    /// Events added so far; final once `end_lsn` is set.
    event_count: u32,
    /// Events added and not yet acknowledged.
    outstanding: u32,
    /// End LSN of the commit record, set at Commit.
    end_lsn: Option<Lsn>,
}

/// A call that breaks the watermark's protocol: a bug upstream, never bad input. The
/// pipeline must stop without confirming anything further.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WatermarkError {
    /// Transactions must be opened in commit order.
    #[error("transaction {commit_lsn} opened after transaction {last}")]
    OutOfOrder {
        /// The transaction being opened.
        commit_lsn: Lsn,
        /// The newest transaction opened before it.
        last: Lsn,
    },
    /// The transaction is not open (never opened, or already fully acknowledged).
    #[error("transaction {commit_lsn} is not tracked")]
    UnknownTransaction {
        /// The commit LSN that was referenced.
        commit_lsn: Lsn,
    },
    /// Events were added to, or a second Commit was seen for, a closed transaction.
    #[error("transaction {commit_lsn} is already closed")]
    AlreadyClosed {
        /// The closed transaction.
        commit_lsn: Lsn,
    },
    /// The commit record cannot end before the commit LSN.
    #[error("transaction {commit_lsn} closed with end lsn {end_lsn} before its commit")]
    EndBeforeCommit {
        /// The transaction being closed.
        commit_lsn: Lsn,
        /// The end LSN given.
        end_lsn: Lsn,
    },
    /// An acknowledgement for an event that was never added, or one acknowledged twice.
    #[error("unexpected acknowledgement of event {index} of transaction {commit_lsn}")]
    UnexpectedAck {
        /// The transaction of the event.
        commit_lsn: Lsn,
        /// The event's index.
        index: u32,
    },
    /// More than `u32::MAX` events in one transaction: the index would wrap.
    #[error("transaction {commit_lsn} has more events than positions can number")]
    TooManyEvents {
        /// The transaction.
        commit_lsn: Lsn,
    },
}

impl WatermarkError {
    /// Always [`Disposition::Halt`]: the bookkeeping can no longer be trusted, so nothing
    /// more may be confirmed.
    pub fn disposition(&self) -> Disposition {
        Disposition::Halt
    }
}

/// Transactions still owed acknowledgements, in commit order, and the LSN that is safe to
/// confirm.
#[derive(Debug, Clone, Default)]
pub struct Watermark {
    /// Open or unacknowledged transactions by commit LSN; BTreeMap order is commit order.
    transactions: BTreeMap<Lsn, Transaction>,
    /// Commit LSN of the newest transaction ever opened, to reject out-of-order opens.
    last_opened: Option<Lsn>,
    /// Events added and not yet acknowledged, over all transactions.
    in_flight: u64,
    /// The confirmable LSN; never moves backwards.
    confirmed: Lsn,
}

impl Watermark {
    /// Starts at `confirmed`, typically the slot's `confirmed_flush_lsn`, so that the first
    /// status update never reports less than PostgreSQL already has.
    pub fn new(confirmed: Lsn) -> Self {
        Watermark {
            confirmed,
            ..Watermark::default()
        }
    }

    /// The highest LSN below which every event is acknowledged.
    pub fn confirmed(&self) -> Lsn {
        self.confirmed
    }

    /// Events added and not yet acknowledged.
    pub fn in_flight(&self) -> u64 {
        self.in_flight
    }

    /// Transactions opened and not yet closed and fully acknowledged.
    pub fn transaction_count(&self) -> usize {
        self.transactions.len()
    }

    /// Nothing open and nothing in flight: whatever the source has received is confirmed,
    /// so a keepalive's WAL end may be confirmed too (see [`Watermark::advance_idle`]).
    pub fn is_idle(&self) -> bool {
        self.transactions.is_empty()
    }

    /// Registers a transaction at its Begin. Commit LSNs must increase.
    pub fn open(&mut self, commit_lsn: Lsn) -> Result<(), WatermarkError> {
        if let Some(last) = self.last_opened {
            if commit_lsn <= last {
                return Err(WatermarkError::OutOfOrder { commit_lsn, last });
            }
        }
        self.last_opened = Some(commit_lsn);
        self.transactions.insert(
            commit_lsn,
            Transaction {
                event_count: 0,
                outstanding: 0,
                end_lsn: None,
            },
        );
        Ok(())
    }

    /// Adds one event to an open transaction and returns its position, to be carried with
    /// the record and handed back to [`Watermark::ack`].
    pub fn add_event(&mut self, commit_lsn: Lsn) -> Result<Position, WatermarkError> {
        let transaction = self
            .transactions
            .get_mut(&commit_lsn)
            .ok_or(WatermarkError::UnknownTransaction { commit_lsn })?;
        if transaction.end_lsn.is_some() {
            return Err(WatermarkError::AlreadyClosed { commit_lsn });
        }
        let index = transaction.event_count;
        transaction.event_count = index
            .checked_add(1)
            .ok_or(WatermarkError::TooManyEvents { commit_lsn })?;
        transaction.outstanding += 1;
        self.in_flight += 1;
        Ok(Position { commit_lsn, index })
    }

    /// Closes a transaction at its Commit: its event count is now final. Returns the new
    /// confirmable LSN if it moved (a transaction without events, or whose events were all
    /// acknowledged already, moves it at once).
    pub fn close(&mut self, commit_lsn: Lsn, end_lsn: Lsn) -> Result<Option<Lsn>, WatermarkError> {
        if end_lsn < commit_lsn {
            return Err(WatermarkError::EndBeforeCommit {
                commit_lsn,
                end_lsn,
            });
        }
        let transaction = self
            .transactions
            .get_mut(&commit_lsn)
            .ok_or(WatermarkError::UnknownTransaction { commit_lsn })?;
        if transaction.end_lsn.is_some() {
            return Err(WatermarkError::AlreadyClosed { commit_lsn });
        }
        transaction.end_lsn = Some(end_lsn);
        Ok(self.advance())
    }

    /// Acknowledges one event: Kafka or the dead-letter topic has it. Returns the new
    /// confirmable LSN if it moved.
    pub fn ack(&mut self, position: Position) -> Result<Option<Lsn>, WatermarkError> {
        let Position { commit_lsn, index } = position;
        let transaction = self
            .transactions
            .get_mut(&commit_lsn)
            .ok_or(WatermarkError::UnknownTransaction { commit_lsn })?;
        if index >= transaction.event_count || transaction.outstanding == 0 {
            return Err(WatermarkError::UnexpectedAck { commit_lsn, index });
        }
        transaction.outstanding -= 1;
        self.in_flight -= 1;
        Ok(self.advance())
    }

    /// Confirms the WAL end of a keepalive while idle. The walsender's keepalive carries
    /// the position it has sent so far, so when everything received is acknowledged and
    /// nothing is open, no unconfirmed change lies below it; confirming it lets PostgreSQL
    /// recycle WAL written by tables we do not publish (CASE-25). Returns the new
    /// confirmable LSN if it moved; does nothing when not idle.
    pub fn advance_idle(&mut self, wal_end: Lsn) -> Option<Lsn> {
        if self.is_idle() && wal_end > self.confirmed {
            self.confirmed = wal_end;
            Some(wal_end)
        } else {
            None
        }
    }

    /// Drops fully acknowledged closed transactions from the front and moves `confirmed`.
    fn advance(&mut self) -> Option<Lsn> {
        let before = self.confirmed;
        while let Some(entry) = self.transactions.first_entry() {
            let transaction = entry.get();
            match transaction.end_lsn {
                Some(end_lsn) if transaction.outstanding == 0 => {
                    self.confirmed = self.confirmed.max(end_lsn);
                    entry.remove();
                }
                _ => break,
            }
        }
        (self.confirmed != before).then_some(self.confirmed)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn lsn(v: u64) -> Lsn {
        Lsn(v)
    }

    #[test]
    fn empty_transaction_moves_the_watermark_at_once() {
        let mut w = Watermark::new(lsn(10));
        w.open(lsn(100)).expect("watermark accepts the step");
        assert!(!w.is_idle());
        assert_eq!(
            w.close(lsn(100), lsn(108))
                .expect("watermark accepts the step"),
            Some(lsn(108))
        );
        assert_eq!(w.confirmed(), lsn(108));
        assert!(w.is_idle());
    }

    #[test]
    fn waits_for_every_event_and_every_earlier_transaction() {
        let mut w = Watermark::new(Lsn::ZERO);
        w.open(lsn(100)).expect("watermark accepts the step");
        let a0 = w.add_event(lsn(100)).expect("watermark accepts the step");
        let a1 = w.add_event(lsn(100)).expect("watermark accepts the step");
        assert_eq!(
            a1,
            Position {
                commit_lsn: lsn(100),
                index: 1
            }
        );
        assert_eq!(
            w.close(lsn(100), lsn(110))
                .expect("watermark accepts the step"),
            None
        );
        w.open(lsn(200)).expect("watermark accepts the step");
        let b0 = w.add_event(lsn(200)).expect("watermark accepts the step");
        assert_eq!(
            w.close(lsn(200), lsn(210))
                .expect("watermark accepts the step"),
            None
        );

        // The later transaction is fully acknowledged first: nothing moves.
        assert_eq!(w.ack(b0).expect("watermark accepts the step"), None);
        assert_eq!(w.ack(a1).expect("watermark accepts the step"), None);
        assert_eq!(w.confirmed(), Lsn::ZERO);
        assert_eq!(w.in_flight(), 1);
        // The last outstanding event releases both transactions.
        assert_eq!(
            w.ack(a0).expect("watermark accepts the step"),
            Some(lsn(210))
        );
        assert!(w.is_idle());
    }

    #[test]
    fn acks_before_commit_do_not_confirm_an_open_transaction() {
        let mut w = Watermark::new(Lsn::ZERO);
        w.open(lsn(100)).expect("watermark accepts the step");
        let a0 = w.add_event(lsn(100)).expect("watermark accepts the step");
        assert_eq!(w.ack(a0).expect("watermark accepts the step"), None);
        assert!(!w.is_idle(), "an open transaction is not idle");
        let a1 = w.add_event(lsn(100)).expect("watermark accepts the step");
        assert_eq!(
            w.close(lsn(100), lsn(120))
                .expect("watermark accepts the step"),
            None
        );
        assert_eq!(
            w.ack(a1).expect("watermark accepts the step"),
            Some(lsn(120))
        );
    }

    #[test]
    fn idle_keepalive_moves_the_watermark_only_when_idle() {
        let mut w = Watermark::new(lsn(50));
        assert_eq!(w.advance_idle(lsn(40)), None, "never backwards");
        assert_eq!(w.advance_idle(lsn(500)), Some(lsn(500)));
        w.open(lsn(600)).expect("watermark accepts the step");
        assert_eq!(w.advance_idle(lsn(900)), None);
        let e = w.add_event(lsn(600)).expect("watermark accepts the step");
        w.close(lsn(600), lsn(610))
            .expect("watermark accepts the step");
        assert_eq!(w.advance_idle(lsn(900)), None, "an event is in flight");
        assert_eq!(
            w.ack(e).expect("watermark accepts the step"),
            Some(lsn(610))
        );
        assert_eq!(w.advance_idle(lsn(900)), Some(lsn(900)));
    }

    #[test]
    fn protocol_violations_are_errors() {
        let mut w = Watermark::new(Lsn::ZERO);
        w.open(lsn(100)).expect("watermark accepts the step");
        assert!(matches!(
            w.open(lsn(100)),
            Err(WatermarkError::OutOfOrder { .. })
        ));
        assert!(matches!(
            w.open(lsn(90)),
            Err(WatermarkError::OutOfOrder { .. })
        ));
        assert!(matches!(
            w.add_event(lsn(7)),
            Err(WatermarkError::UnknownTransaction { .. })
        ));
        let e = w.add_event(lsn(100)).expect("watermark accepts the step");
        assert!(matches!(
            w.ack(Position {
                commit_lsn: lsn(100),
                index: 1
            }),
            Err(WatermarkError::UnexpectedAck { .. })
        ));
        assert!(matches!(
            w.close(lsn(100), lsn(99)),
            Err(WatermarkError::EndBeforeCommit { .. })
        ));
        w.close(lsn(100), lsn(101))
            .expect("watermark accepts the step");
        assert!(matches!(
            w.close(lsn(100), lsn(101)),
            Err(WatermarkError::AlreadyClosed { .. })
        ));
        assert!(matches!(
            w.add_event(lsn(100)),
            Err(WatermarkError::AlreadyClosed { .. })
        ));
        w.ack(e).expect("watermark accepts the step");
        // Fully acknowledged and dropped: a second ack is caught.
        assert!(matches!(
            w.ack(e),
            Err(WatermarkError::UnknownTransaction { .. })
        ));
        assert_eq!(
            w.ack(e)
                .expect_err("a second ack is an error")
                .disposition(),
            Disposition::Halt
        );
    }

    /// A stream of transactions (event counts) and a shuffled order of acknowledgements,
    /// interleaved with the source's opens and closes.
    fn scenario() -> impl Strategy<Value = (Vec<u32>, Vec<usize>, Vec<u8>)> {
        prop::collection::vec(0u32..5, 1..12).prop_flat_map(|counts| {
            let total: usize = counts.iter().map(|c| *c as usize).sum();
            let order = Just((0..total).collect::<Vec<_>>()).prop_shuffle();
            let interleave = prop::collection::vec(any::<u8>(), total + counts.len() * 3);
            (Just(counts), order, interleave)
        })
    }

    proptest! {
        /// Random interleavings of source steps and out-of-order acknowledgements: the
        /// confirmable LSN never passes a transaction with an unacknowledged event, never
        /// moves backwards, and ends at the last transaction's end LSN.
        #[test]
        fn never_confirms_past_an_unacked_event((counts, ack_order, coin) in scenario()) {
            let mut w = Watermark::new(Lsn::ZERO);
            // Transaction i: commit LSN 100*(i+1), end LSN 100*(i+1)+10.
            let commit = |i: usize| lsn(100 * (i as u64 + 1));
            let end = |i: usize| lsn(100 * (i as u64 + 1) + 10);
            // Source steps, in order: open i, add its events, close i.
            let mut steps = Vec::new();
            for (i, count) in counts.iter().enumerate() {
                steps.push((i, None));
                for _ in 0..*count {
                    steps.push((i, Some(())));
                }
                steps.push((i, None));
            }
            let mut step = 0;
            let mut opened = vec![false; counts.len()];
            let mut positions: Vec<Position> = Vec::new(); // indexed by event number
            let mut acked: Vec<Position> = Vec::new();
            let mut next_ack = 0;
            let mut coins = coin.into_iter().cycle();
            let mut last = Lsn::ZERO;
            let total = ack_order.len();
            while step < steps.len() || next_ack < total {
                let source_turn = coins.next().unwrap_or(0) % 2 == 0;
                // An ack is possible only for an event already added.
                let ackable = next_ack < total && ack_order[next_ack] < positions.len();
                if step < steps.len() && (source_turn || !ackable) {
                    let (i, event) = steps[step];
                    step += 1;
                    match (event, opened[i]) {
                        (Some(()), _) => positions.push(w.add_event(commit(i)).expect("watermark accepts the step")),
                        (None, false) => { w.open(commit(i)).expect("watermark accepts the step"); opened[i] = true; }
                        (None, true) => { w.close(commit(i), end(i)).expect("watermark accepts the step"); }
                    }
                } else if ackable {
                    let position = positions[ack_order[next_ack]];
                    next_ack += 1;
                    w.ack(position).expect("watermark accepts the step");
                    acked.push(position);
                } else {
                    // Acks waiting for events that the source has not added yet.
                    continue;
                }
                let confirmed = w.confirmed();
                prop_assert!(confirmed >= last, "moved backwards");
                last = confirmed;
                for position in &positions {
                    if !acked.contains(position) {
                        prop_assert!(confirmed < position.commit_lsn,
                            "confirmed {} passes unacked {:?}", confirmed, position);
                    }
                }
            }
            prop_assert_eq!(w.confirmed(), end(counts.len() - 1));
            prop_assert!(w.is_idle());
            prop_assert_eq!(w.in_flight(), 0);
        }
    }
}
