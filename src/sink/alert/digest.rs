//! The summary of the dead-lettered events of one or more aggregation windows, and its text.
//!
//! A digest has a fixed size whatever it summarises: the count is a number, the eventIds
//! stop at `maxEventIds`, topics and reasons stop at [`MAX_DISTINCT`] distinct values (the
//! rest are counted as "other"), and a reason is cut at [`MAX_REASON_CHARS`]. So a digest
//! that cannot be delivered can be kept and merged with the next one for as long as the
//! webhook or mail server is down, without memory growing.

use super::DeadLetterNotice;

/// Distinct topics or reasons a digest names; more are counted together as "other".
pub(super) const MAX_DISTINCT: usize = 10;

/// Characters of a reason kept: enough for any of the connector's error messages with the
/// entity, column and LSN they name.
pub(super) const MAX_REASON_CHARS: usize = 200;

/// Counts per distinct value, in first-seen order, with at most [`MAX_DISTINCT`] values.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Tally {
    entries: Vec<(String, u64)>,
    other: u64,
}

impl Tally {
    fn add(&mut self, value: &str, count: u64) {
        if let Some(entry) = self.entries.iter_mut().find(|(v, _)| v == value) {
            entry.1 += count;
        } else if self.entries.len() < MAX_DISTINCT {
            self.entries.push((value.to_owned(), count));
        } else {
            self.other += count;
        }
    }

    fn merge(&mut self, newer: &Tally) {
        for (value, count) in &newer.entries {
            self.add(value, *count);
        }
        self.other += newer.other;
    }

    /// The lines `  value: count`, most frequent first (ties in first-seen order).
    fn render(&self, out: &mut String, other_label: &str) {
        let mut sorted: Vec<&(String, u64)> = self.entries.iter().collect();
        // Stable: ties stay in first-seen order.
        sorted.sort_by_key(|entry| std::cmp::Reverse(entry.1));
        for (value, count) in sorted {
            out.push_str(&format!("  {value}: {count}\n"));
        }
        if self.other > 0 {
            out.push_str(&format!("  ({other_label}): {}\n", self.other));
        }
    }
}

/// What an alert says: how many events were dead-lettered, the first eventIds, the topics
/// and reasons.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Digest {
    /// Every dead-lettered event, listed or not.
    count: u64,
    /// Events counted but not summarised: they arrived while the alerter's queue was full.
    unlisted: u64,
    /// The first eventIds, at most `max_event_ids`.
    event_ids: Vec<String>,
    max_event_ids: usize,
    /// The events' original topics.
    topics: Tally,
    /// Why they were dead-lettered.
    reasons: Tally,
    /// The most delivery attempts after the first that any of them had.
    max_retry_count: u32,
}

impl Digest {
    /// An empty digest listing at most `max_event_ids` eventIds.
    pub(super) fn new(max_event_ids: usize) -> Digest {
        Digest {
            count: 0,
            unlisted: 0,
            event_ids: Vec::new(),
            max_event_ids,
            topics: Tally::default(),
            reasons: Tally::default(),
            max_retry_count: 0,
        }
    }

    /// Whether nothing was dead-lettered: no alert is sent for it.
    pub(super) fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// How many events it counts.
    pub(super) fn count(&self) -> u64 {
        self.count
    }

    /// Adds one dead-lettered event.
    pub(super) fn add(&mut self, notice: &DeadLetterNotice) {
        self.count += 1;
        if self.event_ids.len() < self.max_event_ids {
            self.event_ids.push(notice.event_id.clone());
        }
        self.topics.add(&notice.topic, 1);
        self.reasons.add(&cut(&notice.reason), 1);
        self.max_retry_count = self.max_retry_count.max(notice.retry_count);
    }

    /// Adds events that were counted but could not be queued for summarising.
    pub(super) fn add_unlisted(&mut self, count: u64) {
        self.count += count;
        self.unlisted += count;
    }

    /// Folds a later digest into this older one: counts add up, and the eventIds listed stay
    /// the earliest ones.
    pub(super) fn merge(&mut self, newer: &Digest) {
        self.count += newer.count;
        self.unlisted += newer.unlisted;
        for id in &newer.event_ids {
            if self.event_ids.len() >= self.max_event_ids {
                break;
            }
            self.event_ids.push(id.clone());
        }
        self.topics.merge(&newer.topics);
        self.reasons.merge(&newer.reasons);
        self.max_retry_count = self.max_retry_count.max(newer.max_retry_count);
    }

    /// The one-line summary: a mail subject, the first line of a chat message.
    pub(super) fn subject(&self, connector: &str) -> String {
        let noun = if self.count == 1 { "event" } else { "events" };
        format!("{connector}: {} {noun} dead-lettered", self.count)
    }

    /// The alert's text: subject line, eventIds, topics, reasons and what to do. Plain text
    /// with short lines, so that mail sends it as is (7bit) and chat shows it as written.
    pub(super) fn render(&self, connector: &str) -> String {
        let mut out = self.subject(connector);
        out.push_str(" since the last alert\n");
        out.push_str(&format!(
            "event ids (first {} of {}):\n",
            self.event_ids.len(),
            self.count
        ));
        for id in &self.event_ids {
            out.push_str(&format!("  {id}\n"));
        }
        out.push_str("topics:\n");
        self.topics.render(&mut out, "other topics");
        out.push_str("reasons:\n");
        self.reasons.render(&mut out, "other reasons");
        if self.unlisted > 0 {
            out.push_str(&format!(
                "{} of them came faster than the alerter could list them: counted, not listed\n",
                self.unlisted
            ));
        }
        out.push_str(&format!(
            "retries before dead-lettering: at most {}\n",
            self.max_retry_count
        ));
        out.push_str(
            "the records are on the dead-letter topic; see docs/operations.md, \"Alerts\"\n",
        );
        out
    }
}

/// The reason cut at [`MAX_REASON_CHARS`] characters, with `...` when cut.
fn cut(reason: &str) -> String {
    match reason.char_indices().nth(MAX_REASON_CHARS) {
        None => reason.to_owned(),
        Some((end, _)) => format!("{}...", &reason[..end]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notice(id: &str, topic: &str, reason: &str, retries: u32) -> DeadLetterNotice {
        DeadLetterNotice {
            event_id: id.to_owned(),
            topic: topic.to_owned(),
            reason: reason.to_owned(),
            retry_count: retries,
        }
    }

    #[test]
    fn renders_count_ids_topics_and_reasons() {
        let mut digest = Digest::new(2);
        digest.add(&notice("0/10:0", "t.created", "record too large", 0));
        digest.add(&notice("0/10:1", "t.updated", "no tenant", 0));
        digest.add(&notice("0/20:0", "t.updated", "no tenant", 3));
        assert_eq!(
            digest.render("app on db, slot s"),
            "app on db, slot s: 3 events dead-lettered since the last alert\n\
             event ids (first 2 of 3):\n  0/10:0\n  0/10:1\n\
             topics:\n  t.updated: 2\n  t.created: 1\n\
             reasons:\n  no tenant: 2\n  record too large: 1\n\
             retries before dead-lettering: at most 3\n\
             the records are on the dead-letter topic; see docs/operations.md, \"Alerts\"\n"
        );
        assert_eq!(digest.subject("c"), "c: 3 events dead-lettered");
    }

    #[test]
    fn one_event_is_singular() {
        let mut digest = Digest::new(10);
        digest.add(&notice("0/10:0", "t", "r", 0));
        assert_eq!(digest.subject("c"), "c: 1 event dead-lettered");
    }

    #[test]
    fn distinct_values_are_bounded_and_the_rest_counted() {
        let mut digest = Digest::new(10);
        for i in 0..(MAX_DISTINCT + 5) {
            digest.add(&notice(&format!("0/1:{i}"), &format!("topic{i}"), "r", 0));
        }
        assert_eq!(digest.topics.entries.len(), MAX_DISTINCT);
        assert_eq!(digest.topics.other, 5);
        assert_eq!(digest.event_ids.len(), 10);
        assert!(digest.render("c").contains("topics:\n  topic0: 1\n"));
        assert!(digest.render("c").contains("  (other topics): 5\n"));
    }

    #[test]
    fn long_reasons_are_cut_on_a_character_boundary() {
        let reason = "é".repeat(MAX_REASON_CHARS + 1);
        let mut digest = Digest::new(1);
        digest.add(&notice("0/1:0", "t", &reason, 0));
        let kept = &digest.reasons.entries[0].0;
        assert_eq!(kept, &format!("{}...", "é".repeat(MAX_REASON_CHARS)));
    }

    #[test]
    fn merging_keeps_the_earliest_ids_and_adds_counts() {
        let mut older = Digest::new(3);
        older.add(&notice("0/1:0", "t", "a", 1));
        older.add(&notice("0/1:1", "t", "a", 1));
        let mut newer = Digest::new(3);
        newer.add(&notice("0/2:0", "u", "b", 3));
        newer.add(&notice("0/2:1", "u", "b", 3));
        newer.add_unlisted(4);
        older.merge(&newer);
        assert_eq!(older.count(), 8);
        assert_eq!(older.unlisted, 4);
        assert_eq!(older.event_ids, ["0/1:0", "0/1:1", "0/2:0"]);
        assert_eq!(
            older.topics.entries,
            [("t".to_owned(), 2), ("u".to_owned(), 2)]
        );
        assert_eq!(older.max_retry_count, 3);
        assert!(older.render("c").contains(
            "4 of them came faster than the alerter could list them: counted, not listed\n"
        ));
    }

    #[test]
    fn an_empty_digest_is_empty() {
        let mut digest = Digest::new(10);
        assert!(digest.is_empty());
        digest.add_unlisted(1);
        assert!(!digest.is_empty());
    }
}
