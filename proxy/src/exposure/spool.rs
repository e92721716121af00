//! The reporter's on-disk spool: every report is written here before it is sent and removed
//! only once the collector acknowledged it, so a crash or a long outage loses nothing.
//!
//! One file per report, `{first:020}-{last:020}.json.gz` (the exact body sent), written to a
//! temporary name, synced, renamed, and the directory synced. A report whose delivery may have
//! reached the collector (the request went out but no answer came back) is renamed
//! `….sent.json.gz`: it is resent as is, never merged, since the collector may already hold it.
//! When the spool is over its bounds, the two oldest adjacent reports that never left are merged
//! into one; only when no pair can be merged is the oldest dropped, and the count of dropped
//! reports travels in the next report.

use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Read as _, Write as _};
use std::path::{Path, PathBuf};
use vigil_report::Report;

const STATE_FILE: &str = "state.json";
const SENT_MARK: &str = ".sent";
const SUFFIX: &str = ".json.gz";
/// Largest spooled file read back; a report cannot legitimately be larger.
const MAX_FILE_BYTES: u64 = 64 << 20;

/// Bounds of the spool.
#[derive(Clone, Copy, Debug)]
pub struct SpoolLimits {
    /// Most reports kept.
    pub max_reports: usize,
    /// Most bytes kept.
    pub max_bytes: u64,
}

/// A spooled report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Spooled {
    /// First sequence number it covers.
    pub first: u64,
    /// Last sequence number it covers.
    pub last: u64,
    /// Size on disk.
    pub bytes: u64,
    /// Whether a delivery attempt may have reached the collector.
    pub maybe_delivered: bool,
}

/// The spool directory and what it holds.
pub struct Spool {
    dir: PathBuf,
    limits: SpoolLimits,
    entries: BTreeMap<u64, Spooled>,
    state: State,
}

/// What survives restarts besides the reports themselves.
#[derive(Clone, Copy, Debug, Default, serde::Serialize, serde::Deserialize)]
struct State {
    next_sequence: u64,
    dropped_reports: u64,
}

impl Spool {
    /// Opens (creating if needed) the spool in `dir`, removing leftovers of an interrupted write
    /// or merge.
    pub fn open(dir: &Path, limits: SpoolLimits) -> io::Result<Spool> {
        fs::create_dir_all(dir).map_err(|e| annotate(e, "cannot create the spool", dir))?;
        let state_path = dir.join(STATE_FILE);
        let state = match fs::read(&state_path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{}: not a spool state file: {e}", state_path.display()),
                )
            })?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => State::default(),
            Err(e) => return Err(annotate(e, "cannot read", &state_path)),
        };
        let mut spool = Spool {
            dir: dir.to_path_buf(),
            limits,
            entries: BTreeMap::new(),
            state,
        };
        let mut found = Vec::new();
        for item in fs::read_dir(dir).map_err(|e| annotate(e, "cannot list the spool", dir))? {
            let item = item?;
            let name = item.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.ends_with(".tmp") {
                let _ = fs::remove_file(item.path());
                continue;
            }
            if let Some(entry) = parse_name(name) {
                let bytes = item.metadata()?.len();
                found.push(Spooled { bytes, ..entry });
            }
        }
        spool.keep_widest(found)?;
        // Never reuse a sequence number a spooled report holds, even if the state file is old.
        let highest = spool
            .entries
            .values()
            .map(|e| e.last + 1)
            .max()
            .unwrap_or(0);
        spool.state.next_sequence = spool.state.next_sequence.max(highest).max(1);
        Ok(spool)
    }

    /// Allocates the next sequence number, persisted before it is used.
    pub fn next_sequence(&mut self) -> io::Result<u64> {
        let sequence = self.state.next_sequence;
        self.state.next_sequence += 1;
        self.save_state()?;
        Ok(sequence)
    }

    /// Reports dropped so far and not yet reported; the count is reset, to be carried by the
    /// report being made.
    pub fn take_dropped(&mut self) -> io::Result<u64> {
        let dropped = std::mem::take(&mut self.state.dropped_reports);
        if dropped > 0 {
            self.save_state()?;
        }
        Ok(dropped)
    }

    /// Writes a report durably, then brings the spool back within its bounds.
    pub fn push(&mut self, report: &Report) -> io::Result<()> {
        let body = encode(report)?;
        let entry = Spooled {
            first: report.sequence.first,
            last: report.sequence.last,
            bytes: body.len() as u64,
            maybe_delivered: false,
        };
        self.write_atomically(&file_name(&entry), &body)?;
        self.entries.insert(entry.first, entry);
        self.enforce_limits()
    }

    /// The oldest report, to be sent first.
    pub fn oldest(&self) -> Option<&Spooled> {
        self.entries.values().next()
    }

    /// Reports held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the spool is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Bytes held.
    pub fn bytes(&self) -> u64 {
        self.entries.values().map(|e| e.bytes).sum()
    }

    /// The body of a spooled report, exactly as it is sent (gzip JSON).
    pub fn body(&self, entry: &Spooled) -> io::Result<Vec<u8>> {
        let path = self.dir.join(file_name(entry));
        let mut body = Vec::with_capacity(entry.bytes as usize);
        File::open(&path)
            .map_err(|e| annotate(e, "cannot open", &path))?
            .take(MAX_FILE_BYTES)
            .read_to_end(&mut body)?;
        Ok(body)
    }

    /// Records that a delivery of `first` may have reached the collector.
    pub fn mark_maybe_delivered(&mut self, first: u64) -> io::Result<()> {
        let Some(entry) = self.entries.get(&first).cloned() else {
            return Ok(());
        };
        if entry.maybe_delivered {
            return Ok(());
        }
        let marked = Spooled {
            maybe_delivered: true,
            ..entry.clone()
        };
        fs::rename(
            self.dir.join(file_name(&entry)),
            self.dir.join(file_name(&marked)),
        )?;
        sync_dir(&self.dir)?;
        self.entries.insert(first, marked);
        Ok(())
    }

    /// Removes a report the collector acknowledged.
    pub fn remove(&mut self, first: u64) -> io::Result<()> {
        if let Some(entry) = self.entries.remove(&first) {
            remove_if_present(&self.dir.join(file_name(&entry)))?;
            sync_dir(&self.dir)?;
        }
        Ok(())
    }

    /// Moves a report the collector refused for good out of the queue, into `rejected/`, where
    /// it is kept for inspection (at most `max_reports` of them).
    pub fn reject(&mut self, first: u64) -> io::Result<PathBuf> {
        let entry = self
            .entries
            .remove(&first)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such spooled report"))?;
        let rejected = self.dir.join("rejected");
        fs::create_dir_all(&rejected)?;
        let target = rejected.join(file_name(&entry));
        fs::rename(self.dir.join(file_name(&entry)), &target)?;
        sync_dir(&self.dir)?;
        let mut kept: Vec<PathBuf> = fs::read_dir(&rejected)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        kept.sort();
        let excess = kept.len().saturating_sub(self.limits.max_reports);
        for old in &kept[..excess] {
            let _ = fs::remove_file(old);
        }
        Ok(target)
    }

    fn enforce_limits(&mut self) -> io::Result<()> {
        while self.entries.len() > self.limits.max_reports || self.bytes() > self.limits.max_bytes {
            if self.entries.len() <= 1 {
                // One report larger than the whole spool: keep it; dropping it would lose more
                // than the bound is worth.
                break;
            }
            match self.mergeable_pair() {
                Some((a, b)) => self.merge(a, b)?,
                None => {
                    let oldest = *self.entries.keys().next().expect("non-empty");
                    self.remove(oldest)?;
                    self.state.dropped_reports += 1;
                    self.save_state()?;
                    tracing::warn!(
                        spool = %self.dir.display(),
                        "spool full and nothing left to merge: dropped the oldest report"
                    );
                }
            }
        }
        Ok(())
    }

    /// The two oldest adjacent reports that never left the machine and cover consecutive
    /// ranges, so the merged range overlaps nothing the collector may hold.
    fn mergeable_pair(&self) -> Option<(u64, u64)> {
        let entries: Vec<&Spooled> = self.entries.values().collect();
        entries.windows(2).find_map(|pair| {
            let (a, b) = (pair[0], pair[1]);
            (!a.maybe_delivered && !b.maybe_delivered && a.last + 1 == b.first)
                .then_some((a.first, b.first))
        })
    }

    /// Writes the merged report before removing its parts: a crash in between leaves both, and
    /// `open` removes the parts the merged range covers.
    fn merge(&mut self, a: u64, b: u64) -> io::Result<()> {
        let mut merged = decode(&self.body(&self.entries[&a])?)?;
        merged.absorb(decode(&self.body(&self.entries[&b])?)?);
        let body = encode(&merged)?;
        let entry = Spooled {
            first: merged.sequence.first,
            last: merged.sequence.last,
            bytes: body.len() as u64,
            maybe_delivered: false,
        };
        self.write_atomically(&file_name(&entry), &body)?;
        let parts = [self.entries.remove(&a), self.entries.remove(&b)];
        for part in parts.into_iter().flatten() {
            remove_if_present(&self.dir.join(file_name(&part)))?;
        }
        sync_dir(&self.dir)?;
        self.entries.insert(entry.first, entry);
        Ok(())
    }

    /// Keeps the spooled reports no other one covers; a covered one is a part left behind by a
    /// merge that a crash interrupted, and its counts are already in the merged report.
    fn keep_widest(&mut self, found: Vec<Spooled>) -> io::Result<()> {
        for entry in &found {
            let covered = found.iter().any(|other| {
                other.first <= entry.first
                    && entry.last <= other.last
                    && (other.first, other.last) != (entry.first, entry.last)
            });
            if covered {
                remove_if_present(&self.dir.join(file_name(entry)))?;
            } else {
                self.entries.insert(entry.first, entry.clone());
            }
        }
        Ok(())
    }

    fn save_state(&self) -> io::Result<()> {
        let body = serde_json::to_vec(&self.state).map_err(io::Error::other)?;
        self.write_atomically(STATE_FILE, &body)
    }

    fn write_atomically(&self, name: &str, body: &[u8]) -> io::Result<()> {
        let target = self.dir.join(name);
        let temporary = self.dir.join(format!("{name}.tmp"));
        let mut file =
            File::create(&temporary).map_err(|e| annotate(e, "cannot write", &temporary))?;
        file.write_all(body)?;
        file.sync_all()?;
        drop(file);
        fs::rename(&temporary, &target).map_err(|e| annotate(e, "cannot rename into", &target))?;
        sync_dir(&self.dir)
    }
}

/// A report as it travels: gzip-compressed JSON.
pub fn encode(report: &Report) -> io::Result<Vec<u8>> {
    let mut encoder = GzEncoder::new(Vec::new(), flate2::Compression::default());
    serde_json::to_writer(&mut encoder, report).map_err(io::Error::other)?;
    encoder.finish()
}

/// Reads back what [`encode`] wrote.
pub fn decode(body: &[u8]) -> io::Result<Report> {
    let mut json = Vec::new();
    GzDecoder::new(body)
        .take(MAX_FILE_BYTES * 8)
        .read_to_end(&mut json)?;
    serde_json::from_slice(&json).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

fn file_name(entry: &Spooled) -> String {
    let mark = if entry.maybe_delivered { SENT_MARK } else { "" };
    format!("{:020}-{:020}{mark}{SUFFIX}", entry.first, entry.last)
}

fn parse_name(name: &str) -> Option<Spooled> {
    let stem = name.strip_suffix(SUFFIX)?;
    let (stem, maybe_delivered) = match stem.strip_suffix(SENT_MARK) {
        Some(stem) => (stem, true),
        None => (stem, false),
    };
    let (first, last) = stem.split_once('-')?;
    let (first, last) = (first.parse().ok()?, last.parse().ok()?);
    (first <= last).then_some(Spooled {
        first,
        last,
        bytes: 0,
        maybe_delivered,
    })
}

fn remove_if_present(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(annotate(e, "cannot remove", path)),
        _ => Ok(()),
    }
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

fn annotate(error: io::Error, what: &str, path: &Path) -> io::Error {
    io::Error::new(error.kind(), format!("{what} {}: {error}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use vigil_report::{Dropped, EndpointDelta, Period, SequenceRange, SCHEMA};

    fn report(sequence: u64, requests: u64) -> Report {
        Report {
            schema: SCHEMA,
            service: "shop".into(),
            instance: "shop-1".into(),
            sequence: SequenceRange {
                first: sequence,
                last: sequence,
            },
            period: Period {
                start_ms: sequence * 10,
                end_ms: sequence * 10 + 9,
            },
            endpoints: vec![EndpointDelta {
                method: "GET".into(),
                route: "/users/{id}".into(),
                requests,
                first_seen_ms: sequence * 10,
                last_seen_ms: sequence * 10 + 5,
                ..Default::default()
            }],
            findings: Vec::new(),
            documented: Vec::new(),
            dropped: Dropped::default(),
            version: None,
        }
    }

    fn limits(max_reports: usize) -> SpoolLimits {
        SpoolLimits {
            max_reports,
            max_bytes: 1 << 30,
        }
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("vigil-spool-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    fn total_requests(spool: &Spool) -> u64 {
        spool
            .entries
            .values()
            .map(|e| decode(&spool.body(e).unwrap()).unwrap())
            .flat_map(|r| r.endpoints)
            .map(|e| e.requests)
            .sum()
    }

    #[test]
    fn reports_and_sequence_survive_reopening() {
        let dir = temp_dir("reopen");
        let mut spool = Spool::open(&dir, limits(10)).unwrap();
        for _ in 0..3 {
            let sequence = spool.next_sequence().unwrap();
            spool.push(&report(sequence, 5)).unwrap();
        }
        let first = spool.oldest().unwrap().first;
        spool.remove(first).unwrap();
        drop(spool);
        // A write cut off by a crash leaves only a temporary file, which is discarded.
        fs::write(
            dir.join("00000000000000000009-00000000000000000009.json.gz.tmp"),
            b"torn",
        )
        .unwrap();
        let mut spool = Spool::open(&dir, limits(10)).unwrap();
        assert_eq!(spool.len(), 2);
        assert_eq!(total_requests(&spool), 10);
        assert_eq!(
            spool.next_sequence().unwrap(),
            4,
            "sequence numbers are never reused"
        );
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_full_spool_merges_rather_than_drops() {
        let dir = temp_dir("merge");
        let mut spool = Spool::open(&dir, limits(3)).unwrap();
        for _ in 0..10 {
            let sequence = spool.next_sequence().unwrap();
            spool.push(&report(sequence, 7)).unwrap();
        }
        assert!(spool.len() <= 3);
        assert_eq!(total_requests(&spool), 70, "merging keeps every count");
        assert_eq!(spool.take_dropped().unwrap(), 0);
        let oldest = decode(&spool.body(spool.oldest().unwrap()).unwrap()).unwrap();
        assert_eq!(oldest.sequence.first, 1);
        assert!(oldest.sequence.last > 1);
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn possibly_delivered_reports_are_never_merged_and_dropping_is_counted() {
        let dir = temp_dir("drop");
        let mut spool = Spool::open(&dir, limits(2)).unwrap();
        for _ in 0..2 {
            let sequence = spool.next_sequence().unwrap();
            spool.push(&report(sequence, 1)).unwrap();
            spool.mark_maybe_delivered(sequence).unwrap();
        }
        let sequence = spool.next_sequence().unwrap();
        spool.push(&report(sequence, 1)).unwrap();
        assert_eq!(spool.len(), 2);
        assert_eq!(spool.oldest().unwrap().first, 2, "the oldest was dropped");
        assert!(spool.oldest().unwrap().maybe_delivered);
        drop(spool);
        let mut spool = Spool::open(&dir, limits(2)).unwrap();
        assert!(
            spool.oldest().unwrap().maybe_delivered,
            "the mark survives reopening"
        );
        assert_eq!(spool.take_dropped().unwrap(), 1);
        assert_eq!(spool.take_dropped().unwrap(), 0);
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_merge_cut_off_by_a_crash_is_resolved_on_open() {
        let dir = temp_dir("crash-merge");
        let mut spool = Spool::open(&dir, limits(10)).unwrap();
        for sequence in 1..=2 {
            spool.push(&report(sequence, 3)).unwrap();
        }
        let mut merged = report(1, 3);
        merged.absorb(report(2, 3));
        let entry = Spooled {
            first: 1,
            last: 2,
            bytes: 0,
            maybe_delivered: false,
        };
        // The merged file is written but its parts were not yet removed.
        fs::write(dir.join(file_name(&entry)), encode(&merged).unwrap()).unwrap();
        drop(spool);
        let spool = Spool::open(&dir, limits(10)).unwrap();
        assert_eq!(spool.len(), 1);
        assert_eq!(spool.oldest().unwrap().last, 2);
        assert_eq!(total_requests(&spool), 6);
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn an_unwritable_spool_names_the_directory() {
        let file = temp_dir("not-a-dir");
        fs::write(&file, b"x").unwrap();
        let error = Spool::open(&file.join("spool"), limits(2))
            .err()
            .unwrap()
            .to_string();
        assert!(error.contains("not-a-dir"), "{error}");
        fs::remove_file(file).unwrap();
    }
}
