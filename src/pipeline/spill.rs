//! The spill: where the events that full lanes cannot take wait, on local disk.
//!
//! The WAL is read in commit order and the lanes reorder only what has been read. Without
//! the spill, a full BULK lane stops the source, and a CRITICAL change committed behind a
//! large import waits until the import's rows ahead of it are produced: seconds or minutes.
//! With it, the source reads on; the events a full lane cannot take are written to a file
//! and move back into their lane as it drains, and the CRITICAL change is read and
//! dispatched at once. Memory stays bounded; the disk holds the backlog (at most
//! `streaming.spill.maxBytes`, then the source stops reading as before).
//!
//! One FIFO for every lane, in arrival order. An event overflows to the spill when its lane
//! is full, or when its lane already has overflowed events in the spill (a lane's events
//! leave in the order they came, so the overflow never starves behind new arrivals). An
//! event also goes to the spill, without holding up its lane, when an earlier event of its
//! key may be there: the later one must not overtake it, whatever its priority. (It then
//! waits for that event to reach the spill's head: no promotion reaches into the spill.)
//! Keys are tracked by a count per 64-bit hash, in memory: a few percent of what the
//! spilled events take on disk. A false positive (two keys' hashes colliding) would only
//! send an event through the spill, later but never out of order. The head moves back into its lane as soon as that has room; from
//! there on the lanes' own per-key order applies.
//!
//! The files are anonymous segments (unlinked at creation): written at the tail in chunks,
//! read at the head, dropped once read. Nothing in them outlives the process or is needed
//! after a restart: every spilled event is still unconfirmed in the slot.

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::hash::{BuildHasherDefault, DefaultHasher, Hash, Hasher};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::dispatch::Outgoing;
use super::RecordTag;
use crate::checkpoint::Position;
use crate::config::{Priority, SpillConfig};
use crate::sink::Record;
use crate::source::Lsn;
use crate::telemetry::metrics::EventMetrics;

/// A segment file is closed for writing at this size: read segments are dropped whole,
/// so the disk in use follows the backlog, not everything ever spilled.
const SEGMENT_BYTES: u64 = 64 * 1024 * 1024;

/// Appended entries are written in chunks of about this size.
const WRITE_CHUNK: usize = 256 * 1024;

/// Reads at the head fetch this much at once.
const READ_CHUNK: usize = 256 * 1024;

/// After a write failed, an empty spill tries writing again after this long: the directory
/// may be back (space freed, a volume mounted), and a broken one is not retried (and
/// logged) for every event.
const WRITE_RETRY: Duration = Duration::from_secs(10);

/// What went wrong with the spill's files.
#[derive(Debug, thiserror::Error)]
pub enum SpillError {
    /// No spill file can be created in the configured directory (checked at start).
    #[error("streaming.spill.directory {directory}: cannot create a spill file there: {source}")]
    Directory {
        /// The spill's directory.
        directory: String,
        /// The cause.
        source: io::Error,
    },
    /// A spilled entry could not be read back: the events in the spill are not confirmed,
    /// so they are read again from the slot at the next start.
    #[error("spill in {directory}: reading the entry at offset {offset} failed: {source}")]
    Read {
        /// The spill's directory.
        directory: String,
        /// The entry's offset in its segment.
        offset: u64,
        /// The cause.
        source: io::Error,
    },
    /// A spilled entry does not parse (a bug, or the file was changed under us).
    #[error("spill in {directory}: the entry at offset {offset} is corrupt: {reason}")]
    Corrupt {
        /// The spill's directory.
        directory: String,
        /// The entry's offset in its segment.
        offset: u64,
        /// What was wrong.
        reason: &'static str,
    },
}

/// An event taken from the spill's head, for its lane.
pub(super) struct Unspilled {
    /// Its priority (which names its lane).
    pub priority: Priority,
    /// The event.
    pub outgoing: Outgoing,
}

/// The spill of one pipeline.
pub(super) struct Spill {
    /// Where segment files are created.
    directory: PathBuf,
    /// Bytes the spill holds at most; 0 is off.
    max_bytes: u64,
    /// Segments, oldest (the head) first.
    segments: VecDeque<Segment>,
    /// Bytes of entries spilled and not yet taken.
    live: u64,
    /// Entries spilled and not yet taken.
    entries: usize,
    /// Overflowed entries per lane index (not those spilled only to follow their key).
    overflow: [usize; 4],
    /// Which keys may be in the spill.
    keys: KeyFilter,
    /// Tags are few (entity × change type × lane): entries name them by index.
    tags: TagTable,
    /// The head, decoded: what [`Spill::peek`] saw.
    head: Option<Decoded>,
    /// When a write failed: nothing more is taken until the spill is empty again and
    /// [`WRITE_RETRY`] has passed.
    write_failed: Option<Instant>,
    /// [`WRITE_RETRY`]; zero in tests.
    write_retry: Duration,
    /// [`SEGMENT_BYTES`]; smaller in tests.
    segment_bytes: u64,
    /// [`WRITE_CHUNK`]; smaller in tests.
    write_chunk: usize,
    /// The entry being written, reused from event to event.
    scratch: Vec<u8>,
}

/// An entry read from the head.
struct Decoded {
    priority: Priority,
    /// Counted in [`Spill::overflow`].
    overflow: bool,
    outgoing: Outgoing,
    /// Bytes the entry takes in its segment.
    len: u64,
}

/// One segment file.
struct Segment {
    file: File,
    /// Bytes written to the file.
    flushed: u64,
    /// Bytes appended and not yet written: they follow `flushed`.
    pending: Vec<u8>,
    /// Bytes of this segment already taken.
    read: u64,
    /// Bytes of the file read ahead, starting at `cache_at`.
    cache: Vec<u8>,
    cache_at: u64,
}

impl Segment {
    fn len(&self) -> u64 {
        self.flushed + self.pending.len() as u64
    }

    fn flush(&mut self) -> io::Result<()> {
        if !self.pending.is_empty() {
            self.file.write_all_at(&self.pending, self.flushed)?;
            self.flushed += self.pending.len() as u64;
            self.pending.clear();
        }
        Ok(())
    }

    /// `n` bytes at `at`, from the pending buffer or the file (through the read-ahead).
    /// An entry never straddles the two: a flush writes whole entries.
    fn bytes_at(&mut self, at: u64, n: usize) -> io::Result<&[u8]> {
        let end = at + n as u64;
        if at >= self.flushed {
            let from = usize::try_from(at - self.flushed).unwrap_or(usize::MAX);
            return self
                .pending
                .get(from..from.saturating_add(n))
                .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof));
        }
        if end > self.flushed {
            return Err(io::Error::from(io::ErrorKind::UnexpectedEof));
        }
        let cached_end = self.cache_at + self.cache.len() as u64;
        if at < self.cache_at || end > cached_end {
            let want = (self.flushed - at).min(n.max(READ_CHUNK) as u64);
            self.cache.resize(usize::try_from(want).unwrap_or(n), 0);
            self.file.read_exact_at(&mut self.cache, at)?;
            self.cache_at = at;
        }
        let from = usize::try_from(at - self.cache_at).unwrap_or(usize::MAX);
        self.cache
            .get(from..from.saturating_add(n))
            .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))
    }
}

/// What to do when [`probe`] fails.
pub const DIRECTORY_FIX: &str = "set streaming.spill.directory to a directory the connector may write to, or streaming.spill.maxBytes: 0";

/// Checks at start that a spill file can be created where `config` puts the spill (unless
/// the spill is off), so that a wrong directory is an error naming it, not a warning at the
/// first overflow of a busy day.
pub fn probe(config: &SpillConfig) -> Result<(), SpillError> {
    if config.max_bytes == 0 {
        return Ok(());
    }
    let directory = config.directory_path();
    tempfile::tempfile_in(&directory)
        .map(drop)
        .map_err(|source| SpillError::Directory {
            directory: directory.display().to_string(),
            source,
        })
}

impl Spill {
    /// The spill `config` describes; no file is created until an event is spilled.
    pub fn new(config: &SpillConfig) -> Spill {
        Spill {
            directory: config.directory_path(),
            max_bytes: config.max_bytes,
            segments: VecDeque::new(),
            live: 0,
            entries: 0,
            overflow: [0; 4],
            keys: KeyFilter::default(),
            tags: TagTable::default(),
            head: None,
            write_failed: None,
            write_retry: WRITE_RETRY,
            segment_bytes: SEGMENT_BYTES,
            write_chunk: WRITE_CHUNK,
            scratch: Vec::new(),
        }
    }

    /// Whether events of `lane` overflowed into the spill: a new one of that lane goes
    /// behind them.
    pub fn holds_lane(&self, lane: usize) -> bool {
        self.overflow.get(lane).is_some_and(|n| *n > 0)
    }

    /// Whether an event of `key` may be in the spill: a new one goes behind it.
    pub fn may_hold_key(&self, key: &[u8]) -> bool {
        self.entries > 0 && self.keys.may_contain(key)
    }

    /// Events in the spill.
    pub fn len(&self) -> usize {
        self.entries
    }

    /// Bytes of spilled events still to be read.
    pub fn bytes(&self) -> u64 {
        self.live
    }

    /// Appends `outgoing`, for the lane `lane`: an overflow of that lane, or (`overflow`
    /// false) an event that only follows its key. Hands it back (`Some`) when the spill is off, full,
    /// or cannot write (logged once; the source then waits for room in the lane, as without
    /// a spill).
    pub fn push(
        &mut self,
        priority: Priority,
        lane: usize,
        overflow: bool,
        outgoing: Outgoing,
    ) -> Option<Outgoing> {
        if self.max_bytes == 0 {
            return Some(outgoing);
        }
        if let Some(at) = self.write_failed {
            if self.entries > 0 || at.elapsed() < self.write_retry {
                return Some(outgoing);
            }
            self.write_failed = None;
        }
        let tag = outgoing.tag.as_ref().map(|t| self.tags.index(t, priority));
        let mut entry = std::mem::take(&mut self.scratch);
        encode(priority, overflow, tag, &outgoing, &mut entry);
        let len = entry.len() as u64;
        let appended = if self.live + len > self.max_bytes && self.entries > 0 {
            None
        } else {
            Some(self.append(&entry))
        };
        self.scratch = entry;
        match appended {
            None => return Some(outgoing),
            Some(Err(e)) => {
                self.write_failure(&e);
                return Some(outgoing);
            }
            Some(Ok(())) => {}
        }
        self.live += len;
        self.entries += 1;
        if overflow {
            if let Some(n) = self.overflow.get_mut(lane) {
                *n += 1;
            }
        }
        if let Some(key) = &outgoing.record.key {
            self.keys.add(key);
        }
        None
    }

    fn append(&mut self, entry: &[u8]) -> io::Result<()> {
        let needs_segment = self
            .segments
            .back()
            .is_none_or(|s| s.len() > 0 && s.len() + entry.len() as u64 > self.segment_bytes);
        if needs_segment {
            if let Some(last) = self.segments.back_mut() {
                last.flush()?;
            }
            let file = tempfile::tempfile_in(&self.directory)?;
            self.segments.push_back(Segment {
                file,
                flushed: 0,
                pending: Vec::with_capacity(self.write_chunk),
                read: 0,
                cache: Vec::new(),
                cache_at: 0,
            });
        }
        let Some(tail) = self.segments.back_mut() else {
            return Err(io::Error::other("no segment"));
        };
        tail.pending.extend_from_slice(entry);
        if tail.pending.len() >= self.write_chunk {
            if let Err(e) = tail.flush() {
                // The entry stays readable from the pending buffer; nothing is lost, and no
                // more is taken.
                self.write_failure(&e);
            }
        }
        Ok(())
    }

    /// A write failed: the spill takes nothing more until it is empty and [`WRITE_RETRY`]
    /// has passed.
    fn write_failure(&mut self, error: &io::Error) {
        tracing::warn!(directory = %self.directory.display(), error = %error,
            "cannot write to the spill; the source waits for room in the lanes, and the spill is tried again once it is empty (at most every 10 s)");
        self.write_failed = Some(Instant::now());
    }

    /// The head's priority and size in its lane, decoding it if needed.
    pub fn peek(&mut self) -> Result<Option<(Priority, u64)>, SpillError> {
        if self.head.is_none() && self.entries > 0 {
            self.head = Some(self.read_head()?);
        }
        Ok(self.head.as_ref().map(|d| {
            (
                d.priority,
                u64::try_from(d.outgoing.record.size()).unwrap_or(u64::MAX),
            )
        }))
    }

    /// Takes the head that [`Spill::peek`] returned, for `lane`.
    pub fn take(&mut self, lane: usize) -> Option<Unspilled> {
        let Decoded {
            priority,
            overflow,
            outgoing,
            len,
        } = self.head.take()?;
        if let Some(segment) = self.segments.front_mut() {
            segment.read += len;
        }
        self.live = self.live.saturating_sub(len);
        self.entries = self.entries.saturating_sub(1);
        if overflow {
            if let Some(n) = self.overflow.get_mut(lane) {
                *n = n.saturating_sub(1);
            }
        }
        if let Some(key) = &outgoing.record.key {
            self.keys.remove(key);
        }
        // Whole segments read are dropped (their files vanish with them); an empty spill
        // starts over, and may be written again after a write failure.
        while self
            .segments
            .front()
            .is_some_and(|s| s.read >= s.len() && self.segments.len() > 1)
        {
            self.segments.pop_front();
        }
        if self.entries == 0 {
            self.segments.clear();
            self.keys.clear();
        }
        Some(Unspilled { priority, outgoing })
    }

    fn read_head(&mut self) -> Result<Decoded, SpillError> {
        // The directory is named only in an error: not formatted for every event.
        let directory = &self.directory;
        let corrupt = |offset, reason| SpillError::Corrupt {
            directory: directory.display().to_string(),
            offset,
            reason,
        };
        let segment = loop {
            let Some(front) = self.segments.front() else {
                return Err(corrupt(0, "entries are counted but no segment holds them"));
            };
            if front.read < front.len() {
                break self
                    .segments
                    .front_mut()
                    .ok_or_else(|| corrupt(0, "no segment"))?;
            }
            self.segments.pop_front();
        };
        let offset = segment.read;
        let read_error = |source| SpillError::Read {
            directory: directory.display().to_string(),
            offset,
            source,
        };
        let header = segment.bytes_at(offset, 4).map_err(read_error)?;
        let body_len = header
            .try_into()
            .map(u32::from_le_bytes)
            .map_err(|_| corrupt(offset, "short length"))?;
        let body_len = usize::try_from(body_len).unwrap_or(usize::MAX);
        let body = segment.bytes_at(offset + 4, body_len).map_err(read_error)?;
        let (priority, overflow, outgoing) =
            decode(body, &self.tags).map_err(|reason| corrupt(offset, reason))?;
        Ok(Decoded {
            priority,
            overflow,
            outgoing,
            len: 4 + body_len as u64,
        })
    }
}

/// Writes the entry of one event into `entry` (cleared first): a length, then the entry.
fn encode(
    priority: Priority,
    overflow: bool,
    tag: Option<(u32, i64)>,
    outgoing: &Outgoing,
    entry: &mut Vec<u8>,
) {
    let record = &outgoing.record;
    entry.clear();
    entry.extend_from_slice(&[0; 4]);
    entry.push(crate::lanes::index(priority) as u8);
    entry.push(u8::from(overflow));
    match tag {
        Some((index, commit_ts)) => {
            entry.push(1);
            entry.extend_from_slice(&index.to_le_bytes());
            entry.extend_from_slice(&commit_ts.to_le_bytes());
        }
        None => entry.push(0),
    }
    entry.extend_from_slice(&record.position.commit_lsn.0.to_le_bytes());
    entry.extend_from_slice(&record.position.index.to_le_bytes());
    put_bytes(entry, record.topic.as_bytes());
    match &record.key {
        Some(key) => {
            entry.push(1);
            put_bytes(entry, key);
        }
        None => entry.push(0),
    }
    put_len(entry, record.headers.len());
    for (name, value) in &record.headers {
        put_bytes(entry, name.as_bytes());
        put_bytes(entry, value);
    }
    put_bytes(entry, &record.payload);
    let body_len = length_bytes(entry.len() - 4);
    if let Some(prefix) = entry.get_mut(..4) {
        prefix.copy_from_slice(&body_len);
    }
}

fn length_bytes(len: usize) -> [u8; 4] {
    // Records are far below 4 GiB (Kafka refuses them long before); saturating keeps the
    // entry parseable, and the decoder then reports it as corrupt.
    u32::try_from(len).unwrap_or(u32::MAX).to_le_bytes()
}

fn put_len(out: &mut Vec<u8>, len: usize) {
    out.extend_from_slice(&length_bytes(len));
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put_len(out, bytes.len());
    out.extend_from_slice(bytes);
}

/// Reads an entry's body back.
struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], &'static str> {
        if self.0.len() < n {
            return Err("truncated");
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], &'static str> {
        self.take(N)?.try_into().map_err(|_| "truncated")
    }

    fn u8(&mut self) -> Result<u8, &'static str> {
        Ok(self.array::<1>()?[0])
    }

    fn len(&mut self) -> Result<usize, &'static str> {
        usize::try_from(u32::from_le_bytes(self.array()?)).map_err(|_| "length")
    }

    fn bytes(&mut self) -> Result<&'a [u8], &'static str> {
        let n = self.len()?;
        self.take(n)
    }
}

fn decode(body: &[u8], tags: &TagTable) -> Result<(Priority, bool, Outgoing), &'static str> {
    let mut c = Cursor(body);
    let priority = *Priority::ALL
        .get(usize::from(c.u8()?))
        .ok_or("unknown priority")?;
    let overflow = match c.u8()? {
        0 => false,
        1 => true,
        _ => return Err("overflow flag"),
    };
    let tag = match c.u8()? {
        0 => None,
        1 => {
            let index = u32::from_le_bytes(c.array()?);
            let commit_ts = i64::from_le_bytes(c.array()?);
            Some((index, commit_ts))
        }
        _ => return Err("tag flag"),
    };
    let commit_lsn = Lsn(u64::from_le_bytes(c.array()?));
    let index = u32::from_le_bytes(c.array()?);
    let topic = String::from_utf8(c.bytes()?.to_vec()).map_err(|_| "topic is not UTF-8")?;
    let key = match c.u8()? {
        0 => None,
        1 => Some(Bytes::copy_from_slice(c.bytes()?)),
        _ => return Err("key flag"),
    };
    let count = c.len()?;
    let mut headers = Vec::with_capacity(count.min(64));
    for _ in 0..count {
        let name = String::from_utf8(c.bytes()?.to_vec()).map_err(|_| "header is not UTF-8")?;
        headers.push((name, Bytes::copy_from_slice(c.bytes()?)));
    }
    let payload = Bytes::copy_from_slice(c.bytes()?);
    if !c.0.is_empty() {
        return Err("trailing bytes");
    }
    let tag = match tag {
        Some((i, commit_ts)) => Some(tags.tag(i, commit_ts).ok_or("unknown tag")?),
        None => None,
    };
    let outgoing = Outgoing {
        record: Record {
            topic,
            key,
            headers,
            payload,
            position: Position { commit_lsn, index },
        },
        tag,
    };
    Ok((priority, overflow, outgoing))
}

/// The distinct (entity metrics, latency histogram) pairs of spilled tags; an entry keeps
/// an index and its commit time.
#[derive(Default)]
struct TagTable {
    tags: Vec<(Option<Arc<EventMetrics>>, metrics::Histogram)>,
    /// (entity metrics pointer or 0, lane) to index.
    index: HashMap<(usize, usize), u32>,
}

impl TagTable {
    /// The index of `tag`'s metric handles (its latency histogram is its lane's), and its
    /// commit time.
    fn index(&mut self, tag: &RecordTag, priority: Priority) -> (u32, i64) {
        let pointer = tag.events.as_ref().map_or(0, |e| Arc::as_ptr(e) as usize);
        let key = (pointer, crate::lanes::index(priority));
        let next = u32::try_from(self.tags.len()).unwrap_or(u32::MAX);
        let index = *self.index.entry(key).or_insert_with(|| {
            self.tags.push((tag.events.clone(), tag.latency.clone()));
            next
        });
        (index, tag.commit_ts)
    }

    fn tag(&self, index: u32, commit_ts: i64) -> Option<RecordTag> {
        let (events, latency) = self.tags.get(usize::try_from(index).ok()?)?;
        Some(RecordTag {
            events: events.clone(),
            latency: latency.clone(),
            commit_ts,
        })
    }
}

/// The keys in the spill, as a count per 64-bit hash of the key. Exact but for a collision
/// of two keys' hashes (about one in 2^64 / backlog per lookup), where a probabilistic
/// filter of fixed size was not: with a few hundred thousand keys spilled it answered yes
/// for a large share of new keys, and each of those went through the spill behind the
/// whole backlog. Memory follows the distinct keys in the spill (about 20 to 40 bytes
/// each, a few percent of what their events take on disk) and is released when the spill
/// empties.
#[derive(Default)]
struct KeyFilter {
    counts: HashMap<u64, u32, BuildHasherDefault<KeyHashHasher>>,
}

impl KeyFilter {
    fn hash(key: &[u8]) -> u64 {
        let mut hasher = DefaultHasher::new();
        key.hash(&mut hasher);
        hasher.finish()
    }

    fn add(&mut self, key: &[u8]) {
        let count = self.counts.entry(Self::hash(key)).or_insert(0);
        *count = count.saturating_add(1);
    }

    fn remove(&mut self, key: &[u8]) {
        let hash = Self::hash(key);
        if let Some(count) = self.counts.get_mut(&hash) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                self.counts.remove(&hash);
            }
        }
    }

    fn may_contain(&self, key: &[u8]) -> bool {
        !self.counts.is_empty() && self.counts.contains_key(&Self::hash(key))
    }

    /// Called when the spill is empty: gives the table's memory back.
    fn clear(&mut self) {
        self.counts = HashMap::default();
    }
}

/// The map's hasher: its keys are already SipHash values, so they are used as they are.
#[derive(Default)]
struct KeyHashHasher(u64);

impl Hasher for KeyHashHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only u64 keys are hashed (write_u64); any other input is folded in.
        for byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*byte);
        }
    }

    fn write_u64(&mut self, value: u64) {
        self.0 = value;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(i: u32, key: Option<&str>) -> Outgoing {
        Outgoing {
            record: Record {
                topic: format!("topic.{}", i % 3),
                key: key.map(|k| Bytes::copy_from_slice(k.as_bytes())),
                headers: vec![
                    ("eventId".to_owned(), Bytes::from(format!("0/{i}:0"))),
                    ("empty".to_owned(), Bytes::new()),
                ],
                payload: Bytes::from(vec![
                    u8::try_from(i % 251).unwrap_or(0);
                    (i as usize * 37) % 900
                ]),
                position: Position {
                    commit_lsn: Lsn(1000 + u64::from(i)),
                    index: i,
                },
            },
            tag: (i % 2 == 0).then(|| RecordTag {
                events: None,
                latency: metrics::Histogram::noop(),
                commit_ts: -i64::from(i),
            }),
        }
    }

    fn small(directory: &std::path::Path, max_bytes: u64) -> Spill {
        let mut spill = Spill::new(&SpillConfig {
            directory: Some(directory.to_owned()),
            max_bytes,
        });
        spill.segment_bytes = 4096;
        spill.write_chunk = 700;
        spill
    }

    fn take_all(spill: &mut Spill) -> Vec<(Priority, Record, Option<i64>)> {
        let mut out = Vec::new();
        while let Some((priority, size)) = spill.peek().expect("peek") {
            let lane = crate::lanes::index(priority);
            let taken = spill.take(lane).expect("the peeked head");
            assert_eq!(size, taken.outgoing.record.size() as u64);
            out.push((
                taken.priority,
                taken.outgoing.record,
                taken.outgoing.tag.map(|t| t.commit_ts),
            ));
        }
        out
    }

    /// Entries come back byte for byte, in order, across write chunks (file and pending
    /// buffer) and segments; read segments are dropped, and no file is visible.
    #[test]
    fn entries_come_back_in_order_across_chunks_and_segments() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut spill = small(dir.path(), u64::MAX);
        let mut expected = Vec::new();
        for i in 0..200 {
            let priority = Priority::ALL[i as usize % 4];
            let key = format!("7:{i}");
            let outgoing = record(i, (i % 5 != 0).then_some(key.as_str()));
            expected.push((
                priority,
                outgoing.record.clone(),
                outgoing.tag.as_ref().map(|t| t.commit_ts),
            ));
            assert!(spill
                .push(
                    priority,
                    crate::lanes::index(priority),
                    i % 7 != 0,
                    outgoing
                )
                .is_none());
        }
        assert_eq!(spill.len(), 200);
        let segments = spill.segments.len();
        assert!(segments > 5, "{segments} segments");
        assert!(spill.holds_lane(3));
        assert!(spill.may_hold_key(b"7:1"));
        assert_eq!(
            std::fs::read_dir(dir.path()).expect("dir").count(),
            0,
            "segment files are anonymous"
        );
        // Half, then more pushes, then the rest: a reader and a writer on one spill.
        let first: Vec<_> = (0..100)
            .map(|_| {
                let (priority, _) = spill.peek().expect("peek").expect("head");
                let taken = spill.take(crate::lanes::index(priority)).expect("head");
                (
                    taken.priority,
                    taken.outgoing.record,
                    taken.outgoing.tag.map(|t| t.commit_ts),
                )
            })
            .collect();
        assert!(
            spill.segments.len() <= segments / 2 + 1,
            "read segments are dropped: {} of {segments} left",
            spill.segments.len()
        );
        for i in 200..210 {
            let outgoing = record(i, Some("late"));
            expected.push((
                Priority::Bulk,
                outgoing.record.clone(),
                outgoing.tag.as_ref().map(|t| t.commit_ts),
            ));
            assert!(spill.push(Priority::Bulk, 3, true, outgoing).is_none());
        }
        let mut got = first;
        got.extend(take_all(&mut spill));
        assert_eq!(got, expected);
        assert_eq!((spill.len(), spill.bytes()), (0, 0));
        assert!(spill.segments.is_empty());
        assert!(!spill.holds_lane(3));
        assert!(!spill.may_hold_key(b"7:1"));
        assert!(!spill.may_hold_key(b"late"));
    }

    /// A key is in the filter while one of its events is in the spill, and a lane is held
    /// while one of its events is.
    #[test]
    fn keys_and_lanes_are_tracked_until_their_last_event_leaves() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut spill = small(dir.path(), u64::MAX);
        assert!(!spill.may_hold_key(b"a"));
        assert!(spill
            .push(Priority::Bulk, 3, true, record(1, Some("a")))
            .is_none());
        // Following its key only: the CRITICAL lane is not held up.
        assert!(spill
            .push(Priority::Critical, 0, false, record(2, Some("a")))
            .is_none());
        assert!(spill
            .push(Priority::High, 1, true, record(3, Some("b")))
            .is_none());
        assert!(spill.may_hold_key(b"a") && spill.may_hold_key(b"b"));
        assert!(!spill.holds_lane(0) && spill.holds_lane(1) && spill.holds_lane(3));
        spill.peek().expect("peek");
        spill.take(3);
        assert!(!spill.holds_lane(3));
        assert!(
            spill.may_hold_key(b"a"),
            "the second event of a is still there"
        );
        spill.peek().expect("peek");
        spill.take(0);
        assert!(spill.holds_lane(1));
        assert!(spill.may_hold_key(b"b"));
    }

    /// With the keys of a large import in the spill, the key of a CRITICAL change that is
    /// not among them is not taken for one: a false positive would send the change through
    /// the spill, behind the whole import (the benchmark's 350,000 spilled events made a
    /// two-counter filter of 2^20 slots answer yes for about a quarter of new keys).
    #[test]
    fn keys_not_in_a_large_spill_are_told_apart() {
        let mut keys = KeyFilter::default();
        for i in 0..350_000u32 {
            keys.add(format!("7:{i}").as_bytes());
        }
        let mistaken = (0..10_000u32)
            .filter(|i| keys.may_contain(format!("8:{}", 1_000_000_000 + i).as_bytes()))
            .count();
        assert_eq!(mistaken, 0);
        for i in 0..350_000u32 {
            assert!(keys.may_contain(format!("7:{i}").as_bytes()));
        }
        for i in 0..350_000u32 {
            keys.remove(format!("7:{i}").as_bytes());
        }
        assert!(!keys.may_contain(b"7:1"));
    }

    /// The spill takes at most maxBytes (an event alone always fits); 0 turns it off; what
    /// it refuses is handed back, never dropped.
    #[test]
    fn a_full_or_disabled_spill_hands_the_event_back() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut off = small(dir.path(), 0);
        let back = off
            .push(Priority::Bulk, 3, true, record(4, Some("k")))
            .expect("off");
        assert_eq!(back.record.position.index, 4);

        let mut entry = Vec::new();
        encode(
            Priority::Bulk,
            true,
            None,
            &record(1, Some("k")),
            &mut entry,
        );
        let one = entry.len() as u64;
        let mut spill = small(dir.path(), one + 10);
        assert!(spill
            .push(Priority::Bulk, 3, true, record(1, Some("k")))
            .is_none());
        let back = spill
            .push(Priority::Bulk, 3, true, record(1, Some("k")))
            .expect("full");
        assert_eq!(back.record.position.index, 1);
        spill.peek().expect("peek");
        spill.take(3);
        assert!(spill
            .push(Priority::Bulk, 3, true, record(1, Some("k")))
            .is_none());
    }

    /// A directory that cannot hold files: the event is handed back (the source waits for
    /// room as without a spill), and nothing that was spilled is lost.
    #[test]
    fn a_spill_that_cannot_write_hands_the_event_back() {
        let dir = tempfile::tempdir().expect("temp dir");
        let missing = dir.path().join("missing");
        let mut spill = small(&missing, u64::MAX);
        let back = spill
            .push(Priority::Bulk, 3, true, record(9, Some("k")))
            .expect("no directory");
        assert_eq!(back.record.position.index, 9);
        assert_eq!(spill.len(), 0);
    }

    /// A write that failed on an empty spill is tried again after the retry interval:
    /// the spill is not off for the rest of the process once the directory is back.
    #[test]
    fn an_empty_spill_tries_writing_again_after_a_failure() {
        let dir = tempfile::tempdir().expect("temp dir");
        let missing = dir.path().join("later");
        let mut spill = small(&missing, u64::MAX);
        spill.write_retry = Duration::ZERO;
        assert!(spill
            .push(Priority::Bulk, 3, true, record(1, Some("k")))
            .is_some());
        std::fs::create_dir(&missing).expect("create the directory");
        assert!(spill
            .push(Priority::Bulk, 3, true, record(2, Some("k")))
            .is_none());
        let taken = take_all(&mut spill);
        assert_eq!(taken.len(), 1);
        assert_eq!(taken[0].1.position.index, 2);
    }

    /// `probe` names the configured directory when no spill file can be created there,
    /// and accepts a writable one or a spill turned off.
    #[test]
    fn probe_names_a_directory_it_cannot_write() {
        let dir = tempfile::tempdir().expect("temp dir");
        let missing = dir.path().join("missing");
        let config = |directory: &std::path::Path, max_bytes| SpillConfig {
            directory: Some(directory.to_owned()),
            max_bytes,
        };
        let error = probe(&config(&missing, 1)).expect_err("missing");
        assert_eq!(
            error.to_string(),
            format!(
                "streaming.spill.directory {}: cannot create a spill file there: \
                 No such file or directory (os error 2)",
                missing.display()
            )
        );
        assert!(probe(&config(&missing, 0)).is_ok());
        assert!(probe(&config(dir.path(), 1)).is_ok());
    }
}
