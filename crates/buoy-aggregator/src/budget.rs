//! The run's disk budget: every byte an upload writes is charged here before it is written.
//! Two limits hold across all uploads at once: the run's total (`max_run_bytes`) and a reserve
//! of free space on the run directory's file system (`reserve_bytes`, checked when an upload
//! starts and every few MiB while it writes; a recent reading with room to spare answers for
//! the file system). Crossing either refuses the upload with 507 and
//! leaves its key open, so the same upload succeeds once space returns. A failed upload's bytes
//! are given back when its meter is dropped.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::extract::ExtractError;

/// How often (in bytes written) a running upload checks the free space again.
const CHECK_EVERY: u64 = 4 << 20;
/// How long a reading of the free space stands for the uploads that follow it, as long as
/// they write less than half the room it left above the reserve: a `statfs` for each of
/// thousands of small uploads a second told nothing new. Other processes' writes are noticed
/// within this time.
const PROBE_TTL: std::time::Duration = std::time::Duration::from_millis(250);

/// Reads the free bytes on the file system holding a path.
pub type FreeSpaceFn = dyn Fn(&Path) -> std::io::Result<u64> + Send + Sync;

/// Reads the free space available to us on the file system holding a path.
#[derive(Clone)]
pub struct FreeSpaceProbe(pub Arc<FreeSpaceFn>);

impl std::fmt::Debug for FreeSpaceProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FreeSpaceProbe")
    }
}

impl Default for FreeSpaceProbe {
    /// `statvfs`: the blocks available to an unprivileged user.
    fn default() -> Self {
        Self(Arc::new(|p: &Path| {
            let s = nix::sys::statvfs::statvfs(p).map_err(std::io::Error::from)?;
            Ok((s.blocks_available() as u64).saturating_mul(s.fragment_size() as u64))
        }))
    }
}

#[derive(Debug)]
pub struct DiskBudget {
    path: PathBuf,
    max_run_bytes: u64,
    reserve_bytes: u64,
    used: AtomicU64,
    /// Every byte ever charged (never given back): what was written since a reading.
    written: AtomicU64,
    last: std::sync::Mutex<LastProbe>,
    probe_ttl: std::time::Duration,
    probe: FreeSpaceProbe,
}

/// The last reading of the free space that was above the reserve.
#[derive(Debug, Default)]
struct LastProbe {
    at: Option<std::time::Instant>,
    /// `written` at that moment.
    written: u64,
    /// Free bytes above the reserve then.
    room: u64,
}

impl DiskBudget {
    /// A budget for results stored under `path`, `already_used` bytes of which are taken.
    pub fn new(
        path: &Path,
        max_run_bytes: u64,
        reserve_bytes: u64,
        already_used: u64,
        probe: FreeSpaceProbe,
    ) -> Self {
        Self {
            path: path.to_path_buf(),
            max_run_bytes,
            reserve_bytes,
            used: AtomicU64::new(already_used),
            written: AtomicU64::new(0),
            last: Default::default(),
            probe_ttl: PROBE_TTL,
            probe,
        }
    }

    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    fn check_free(&self) -> Result<(), ExtractError> {
        if self.reserve_bytes == 0 {
            return Ok(());
        }
        let written = self.written.load(Ordering::Relaxed);
        {
            let last = self.last.lock().unwrap_or_else(|e| e.into_inner());
            let fresh = last.at.is_some_and(|at| at.elapsed() < self.probe_ttl);
            if fresh && written.saturating_sub(last.written) < last.room / 2 {
                return Ok(());
            }
        }
        let reading = (self.probe.0)(&self.path);
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        match reading {
            Ok(free) if free < self.reserve_bytes => {
                // Below the reserve every upload looks again, so one finds the space return.
                *last = LastProbe::default();
                Err(ExtractError::NoSpace(format!(
                    "the aggregator's disk has {free} bytes free, below its reserve of {} bytes; \
                     try again once space is freed",
                    self.reserve_bytes
                )))
            }
            Ok(free) => {
                *last = LastProbe {
                    at: Some(std::time::Instant::now()),
                    written,
                    room: free - self.reserve_bytes,
                };
                Ok(())
            }
            // A file system that cannot say is not a reason to refuse results.
            Err(_) => Ok(()),
        }
    }

    /// Returns bytes an upload kept but could not store after all.
    pub fn give_back(&self, n: u64) {
        let _ = self
            .used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |u| {
                Some(u.saturating_sub(n))
            });
    }

    /// Starts metering one upload; refused at once when the disk is already below its reserve.
    pub fn meter(&self) -> Result<Meter<'_>, ExtractError> {
        self.check_free()?;
        Ok(Meter {
            budget: self,
            charged: 0,
            since_check: 0,
            kept: false,
        })
    }
}

/// One upload's charges. Dropped without `keep`, it gives them back.
pub struct Meter<'a> {
    budget: &'a DiskBudget,
    charged: u64,
    since_check: u64,
    kept: bool,
}

impl Meter<'_> {
    /// Charges `n` bytes about to be written.
    pub fn charge(&mut self, n: u64) -> Result<(), ExtractError> {
        let b = self.budget;
        let before = b.used.fetch_add(n, Ordering::Relaxed);
        b.written.fetch_add(n, Ordering::Relaxed);
        self.charged += n;
        if before.saturating_add(n) > b.max_run_bytes {
            return Err(ExtractError::NoSpace(format!(
                "the run's storage budget of {} bytes is used up",
                b.max_run_bytes
            )));
        }
        self.since_check += n;
        if self.since_check >= CHECK_EVERY {
            self.since_check = 0;
            b.check_free()?;
        }
        Ok(())
    }

    /// The upload is stored: its bytes stay charged.
    pub fn keep(mut self) {
        self.kept = true;
    }
}

impl Drop for Meter<'_> {
    fn drop(&mut self) {
        if !self.kept {
            self.budget.used.fetch_sub(self.charged, Ordering::Relaxed);
        }
    }
}

/// Bytes of regular files under `dir` (results an earlier aggregator stored), walked without
/// recursion.
pub fn bytes_under(dir: &Path) -> u64 {
    let mut total = 0u64;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(e.path()),
                Ok(t) if t.is_file() => total += e.metadata().map(|m| m.len()).unwrap_or(0),
                _ => {}
            }
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixed(free: u64) -> FreeSpaceProbe {
        FreeSpaceProbe(Arc::new(move |_| Ok(free)))
    }

    #[test]
    fn the_run_budget_is_shared_and_a_failed_upload_gives_its_bytes_back() {
        let b = DiskBudget::new(Path::new("/"), 100, 0, 10, fixed(0));
        let mut m1 = b.meter().unwrap();
        m1.charge(50).unwrap();
        let mut m2 = b.meter().unwrap();
        assert!(matches!(m2.charge(50), Err(ExtractError::NoSpace(_))));
        drop(m2);
        assert_eq!(b.used(), 60);
        m1.keep();
        let mut m3 = b.meter().unwrap();
        m3.charge(40).unwrap();
        m3.keep();
        assert_eq!(b.used(), 100);
    }

    #[test]
    fn below_the_reserve_an_upload_is_refused_before_and_while_writing() {
        let b = DiskBudget::new(Path::new("/"), u64::MAX, 1000, 0, fixed(999));
        assert!(matches!(b.meter(), Err(ExtractError::NoSpace(_))));
        let free = Arc::new(AtomicU64::new(10_000));
        let f2 = free.clone();
        let probe = FreeSpaceProbe(Arc::new(move |_| Ok(f2.load(Ordering::Relaxed))));
        let b = DiskBudget::new(Path::new("/"), u64::MAX, 1000, 0, probe);
        let mut m = b.meter().unwrap();
        free.store(10, Ordering::Relaxed);
        assert!(matches!(
            m.charge(CHECK_EVERY),
            Err(ExtractError::NoSpace(_))
        ));
    }

    #[test]
    fn a_reading_stands_only_while_little_is_written_and_never_below_the_reserve() {
        let probes = Arc::new(AtomicU64::new(0));
        let free = Arc::new(AtomicU64::new(1_000_000));
        let (p2, f2) = (probes.clone(), free.clone());
        let probe = FreeSpaceProbe(Arc::new(move |_| {
            p2.fetch_add(1, Ordering::Relaxed);
            Ok(f2.load(Ordering::Relaxed))
        }));
        // 999,000 bytes of room above the reserve: a reading stands for 499,499 written.
        let mut b = DiskBudget::new(Path::new("/"), u64::MAX, 1000, 0, probe);
        // However slow this machine is today, time alone does not expire the reading here.
        b.probe_ttl = std::time::Duration::from_secs(3600);
        for _ in 0..10 {
            let mut m = b.meter().unwrap();
            m.charge(10_000).unwrap();
            m.keep();
        }
        assert_eq!(
            probes.load(Ordering::Relaxed),
            1,
            "small uploads share one reading"
        );
        let mut m = b.meter().unwrap();
        m.charge(500_000).unwrap();
        m.keep();
        free.store(10, Ordering::Relaxed);
        assert!(matches!(b.meter(), Err(ExtractError::NoSpace(_))));
        assert_eq!(
            probes.load(Ordering::Relaxed),
            2,
            "half the room written: read again"
        );
        assert!(b.meter().is_err());
        assert_eq!(
            probes.load(Ordering::Relaxed),
            3,
            "below the reserve, every upload reads"
        );
        free.store(1_000_000, Ordering::Relaxed);
        assert!(b.meter().is_ok(), "space that returned is seen at once");
    }

    #[test]
    fn statvfs_reads_some_free_space() {
        let d = tempfile::tempdir().unwrap();
        assert!((FreeSpaceProbe::default().0)(d.path()).unwrap() > 0);
    }
}
