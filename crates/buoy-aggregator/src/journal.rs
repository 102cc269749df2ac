//! The small-result journal: how a result held in memory (a plain body of at most 64 KiB) is
//! made durable without creating a directory and a file on the upload's path.
//!
//! Each such result is appended to one file in the staging directory as a record, and its 200
//! waits for the `fdatasync` of that file, which covers every record appended before it: one
//! sync for a whole batch, and no inode, directory entry or rename on the hot path. Creating
//! two inodes per result was where the time went (ext4's directory search and inode
//! allocation, about 90 µs of kernel time per result here; see docs/BENCHMARKS.md).
//!
//! A record is laid out as `plugins/<p>/results/<node>/<name>` later: whenever the committer
//! has been idle for a moment, all at once before post-processing, and on the next open after a
//! crash (replay). The journal is emptied only after a file-system sync covers what was laid
//! out, so at every moment each acknowledged result is durable in the journal, in the tree, or
//! both.
//!
//! The journal is written with direct I/O where the file system offers it (Linux `O_DIRECT`):
//! a batch goes from one aligned buffer to the disk without passing through the page cache,
//! and its `fdatasync` has no dirty pages to write back. Batches therefore start and end on a
//! 4 KiB boundary, the last one padded with zeros. It is read back through a second, buffered
//! descriptor.
//!
//! Record format (the header is text so that a trace shows whose record a write is):
//! `BUOYJ <crc32 hex8> <target len> <name len> <data len>\n<target><name><data>`, where the
//! target is the result directory relative to the run directory and the CRC covers target,
//! name and data. Zeros up to the next 4 KiB boundary may follow a record (a batch's
//! padding). A torn record at the end was never acknowledged; a damaged one before whole
//! records is skipped (replay goes on at the next whole record) and reported as lost.

use std::collections::{HashSet, VecDeque};
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Component, Path, PathBuf};

const MAGIC: &str = "BUOYJ";
/// A record longer than this is not one this aggregator wrote: replay stops there.
const MAX_HEADER: usize = 64;
const MAX_TARGET: usize = 4096;
const MAX_NAME: usize = 1024;
const MAX_DATA: usize = 16 << 20;

/// The header of a record: magic, checksum, lengths, then target and name.
pub(crate) fn header(target: &str, name: &str, data: &[u8]) -> Vec<u8> {
    let mut crc = crc32fast::Hasher::new();
    crc.update(target.as_bytes());
    crc.update(name.as_bytes());
    crc.update(data);
    let mut h = format!(
        "{MAGIC} {:08x} {} {} {}\n",
        crc.finalize(),
        target.len(),
        name.len(),
        data.len()
    )
    .into_bytes();
    h.extend_from_slice(target.as_bytes());
    h.extend_from_slice(name.as_bytes());
    h
}

/// A record that is durable in the journal and not yet laid out in the tree: where its
/// target, name and data lie in the file. 16 bytes, so 10,000 pending results cost 160 KB;
/// the names are read back with the data.
#[derive(Debug, Clone, Copy)]
struct Pending {
    at: u64,
    target_len: u16,
    name_len: u16,
    data_len: u32,
}

/// A target's hash: pending targets are kept as hashes only (a collision, at odds of one in
/// 2^64, would refuse one upload with a clear error; it cannot lose a stored one).
fn target_hash(target: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::hash::DefaultHasher::new();
    target.hash(&mut h);
    h.finish()
}

/// The open journal, owned by the committer thread.
#[derive(Debug)]
pub(crate) struct Journal {
    path: PathBuf,
    /// Written through, with direct I/O where the file system has it.
    file: Option<File>,
    /// The same file opened again for reading back: direct I/O would need aligned reads.
    reader: Option<File>,
    direct: bool,
    /// Allocated for a burst of writes and given back once the journal is emptied.
    buf: Option<WriteBuf>,
    /// Where the next batch goes: the end of the last one, always a multiple of `ALIGN`.
    len: u64,
    pending: VecDeque<Pending>,
    /// Hashes of the targets of `pending`, so a second write for one of them is refused as a
    /// stored one is.
    targets: HashSet<u64>,
    laid_out: u64,
}

/// Batches start and end on this boundary, which direct I/O needs of offsets, lengths and
/// memory (4 KiB covers disks of 512- and 4096-byte sectors alike).
const ALIGN: usize = 4096;
/// The most one write of a batch carries: the size of the journal's write buffer.
const CHUNK: usize = 256 << 10;

/// The journal's write buffer: `CHUNK` bytes aligned to `ALIGN`, as direct I/O requires of the
/// memory it reads. A `Vec` over-allocated by `ALIGN` holds it, so no unsafe code is needed.
#[derive(Debug)]
struct WriteBuf {
    raw: Vec<u8>,
    at: usize,
}

impl WriteBuf {
    fn new() -> Self {
        let raw = vec![0u8; CHUNK + ALIGN];
        let at = raw.as_ptr().align_offset(ALIGN);
        Self { raw, at }
    }

    fn bytes(&mut self) -> &mut [u8] {
        &mut self.raw[self.at..self.at + CHUNK]
    }

    fn as_slice(&self) -> &[u8] {
        &self.raw[self.at..self.at + CHUNK]
    }
}

/// Turns direct I/O on `f` on or off. On, writes go from our buffer to the disk, not
/// through the page cache. Measured here, that halved the journal's CPU per record (no copy
/// into fresh page-cache pages, no block reservation or writeback at the sync;
/// docs/BENCHMARKS.md). File systems without it refuse (tmpfs before Linux 6.6, for one), and
/// the journal stays buffered; off is for one that took the flag but refuses the writes.
fn set_direct(f: &File, on: bool) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        use nix::fcntl::{fcntl, FcntlArg, OFlag};
        let flags = OFlag::from_bits_truncate(fcntl(f, FcntlArg::F_GETFL)?);
        let flags = if on {
            flags | OFlag::O_DIRECT
        } else {
            flags - OFlag::O_DIRECT
        };
        fcntl(f, FcntlArg::F_SETFL(flags))?;
        Ok(())
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = f;
        match on {
            true => Err(io::ErrorKind::Unsupported.into()),
            false => Ok(()),
        }
    }
}

/// Writes `records` (header, data) back to back from `at` (a multiple of `ALIGN`), the last
/// write padded with zeros to the next multiple of `ALIGN`, through `buf` one `CHUNK` at a
/// time. Returns where the batch ends, padding included.
fn write_batch(
    f: &File,
    buf: &mut WriteBuf,
    at: u64,
    records: &[(Vec<u8>, &[u8])],
) -> io::Result<u64> {
    let chunk = buf.bytes();
    let (mut pos, mut fill) = (at, 0);
    for part in records.iter().flat_map(|(h, d)| [&h[..], *d]) {
        let mut part = part;
        while !part.is_empty() {
            let n = part.len().min(CHUNK - fill);
            chunk[fill..fill + n].copy_from_slice(&part[..n]);
            fill += n;
            part = &part[n..];
            if fill == CHUNK {
                f.write_all_at(chunk, pos)?;
                pos += CHUNK as u64;
                fill = 0;
            }
        }
    }
    if fill > 0 {
        let padded = fill.next_multiple_of(ALIGN);
        chunk[fill..padded].fill(0);
        f.write_all_at(&chunk[..padded], pos)?;
        pos += padded as u64;
    }
    Ok(pos)
}

/// Whether `target` is a result directory of the form `plugins/<p>/results/<node>`, nothing
/// that could climb out of the run directory.
fn valid_target(target: &str) -> bool {
    let parts: Vec<Component<'_>> = Path::new(target).components().collect();
    parts.len() == 4
        && parts.iter().all(|c| matches!(c, Component::Normal(_)))
        && parts[0].as_os_str() == "plugins"
        && parts[2].as_os_str() == "results"
}

fn valid_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains('/') && !name.contains('\0')
}

/// Whether replay would accept a record of these: the one rule for writing and reading.
fn replayable(target: &str, name: &str, data: &[u8]) -> bool {
    target.len() <= MAX_TARGET
        && name.len() <= MAX_NAME
        && data.len() <= MAX_DATA
        && valid_target(target)
        && valid_name(name)
}

impl Journal {
    /// A journal at `path`, created by the first record (replay comes first: whatever is at
    /// `path` then is replaced).
    pub(crate) fn new(path: &Path) -> Self {
        Self {
            path: path.to_path_buf(),
            file: None,
            reader: None,
            direct: false,
            buf: None,
            len: 0,
            pending: VecDeque::new(),
            targets: HashSet::new(),
            laid_out: 0,
        }
    }

    /// The open journal file. Every write says where it goes: after `settle` cuts the file
    /// to nothing, the next batch lands at its start, where `len` says it is.
    fn file(&mut self) -> io::Result<&File> {
        if self.file.is_none() {
            match fs::remove_file(&self.path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
            let f = fs::OpenOptions::new()
                .create_new(true)
                .read(true)
                .write(true)
                .open(&self.path)?;
            self.reader = Some(File::open(&self.path)?);
            self.direct = set_direct(&f, true).is_ok();
            self.file = Some(f);
        }
        Ok(self.file.as_ref().expect("just opened"))
    }

    /// Writes a batch at `len`, falling back to buffered writes for good if the file system
    /// took direct I/O but refuses its writes.
    fn write(&mut self, records: &[(Vec<u8>, &[u8])]) -> io::Result<u64> {
        let at = self.len;
        self.file()?;
        let (file, buf) = (
            self.file.as_ref().expect("opened above"),
            self.buf.get_or_insert_with(WriteBuf::new),
        );
        match write_batch(file, buf, at, records) {
            Err(e) if self.direct && e.kind() == io::ErrorKind::InvalidInput => {
                tracing::warn!(journal = %self.path.display(), "the file system refuses direct writes; the journal is written through the page cache");
                set_direct(file, false)?;
                self.direct = false;
                write_batch(file, buf, at, records)
            }
            r => r,
        }
    }

    pub(crate) fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Appends one record per write, the batch padded to `ALIGN` and written a `CHUNK` at a
    /// time, and syncs them all with one `fdatasync`. Each answer is `Ok` only once its record
    /// is durable; a write for a target that is stored already (in the tree or pending here)
    /// is refused with `AlreadyExists`.
    pub(crate) fn append(
        &mut self,
        run_dir: &Path,
        writes: &[(&str, &str, &[u8])],
    ) -> Vec<io::Result<()>> {
        let start = self.len;
        let mut added: Vec<(u64, Pending)> = Vec::new();
        let mut answers: Vec<io::Result<()>> = Vec::with_capacity(writes.len());
        // Headers of the accepted records, each with its data, written together: a write per
        // record paid the file's locking, time stamps and block reservation again each time.
        let mut records: Vec<(Vec<u8>, &[u8])> = Vec::new();
        let mut end = start;
        for &(target, name, data) in writes {
            // Replay stops at the first record it would refuse, so none is ever written.
            if !replayable(target, name, data) {
                answers.push(Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{target}/{name} cannot be journaled"),
                )));
                continue;
            }
            let hash = target_hash(target);
            let taken = self.targets.contains(&hash) || added.iter().any(|(h, _)| *h == hash);
            if taken || run_dir.join(target).exists() {
                let e = io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("{} already exists", run_dir.join(target).display()),
                );
                answers.push(Err(e));
                continue;
            }
            let h = header(target, name, data);
            added.push((
                hash,
                Pending {
                    at: end + (h.len() - target.len() - name.len()) as u64,
                    target_len: target.len() as u16,
                    name_len: name.len() as u16,
                    data_len: data.len() as u32,
                },
            ));
            end += (h.len() + data.len()) as u64;
            records.push((h, data));
            answers.push(Ok(()));
        }
        if added.is_empty() {
            return answers;
        }
        let written = self
            .write(&records)
            .map_err(|e| io::Error::new(e.kind(), format!("cannot append to the journal: {e}")))
            .and_then(|end| {
                let f = self.file.as_ref().expect("written above");
                f.sync_data()
                    .map(|()| end)
                    .map_err(|e| io::Error::new(e.kind(), format!("cannot sync the journal: {e}")))
            });
        match written {
            Ok(end) => self.len = end,
            Err(e) => {
                // Nothing of this batch was acknowledged: cut it off, so it is neither laid
                // out nor replayed, and its keys stay open for a retry.
                if let Some(f) = &self.file {
                    let _ = f.set_len(start);
                }
                for a in answers.iter_mut().filter(|a| a.is_ok()) {
                    *a = Err(io::Error::new(e.kind(), e.to_string()));
                }
                return answers;
            }
        }
        for p in added {
            self.targets.insert(p.0);
            self.pending.push_back(p.1);
        }
        answers
    }

    /// Lays out up to `max` pending records (oldest first) in the tree, without syncing: the
    /// journal still holds them until [`Journal::settle`].
    pub(crate) fn lay_out(
        &mut self,
        max: usize,
        run_dir: &Path,
        staging: &Path,
        parents: &mut HashSet<PathBuf>,
    ) -> io::Result<usize> {
        if self.pending.is_empty() {
            return Ok(0);
        }
        // Records are read back a window at a time, through the journal's own buffer: one
        // read per 256 KiB instead of one per record (with direct I/O nothing of the journal
        // is in the page cache, and reads of a record's size ran at a third of the disk's
        // speed here).
        let mut window = self.buf.take().unwrap_or_else(WriteBuf::new);
        let laid = self.lay_out_through(&mut window, max, run_dir, staging, parents);
        self.buf = Some(window);
        let done = laid?;
        if self.pending.is_empty() {
            // A run's worth of entries is not kept once they are all laid out.
            self.pending.shrink_to_fit();
            self.targets.shrink_to_fit();
        }
        Ok(done)
    }

    /// [`Journal::lay_out`], reading through `window`. A record larger than a window is read
    /// on its own.
    fn lay_out_through(
        &mut self,
        window: &mut WriteBuf,
        max: usize,
        run_dir: &Path,
        staging: &Path,
        parents: &mut HashSet<PathBuf>,
    ) -> io::Result<usize> {
        let (mut win_at, mut win_len) = (0u64, 0usize);
        let mut single = Vec::new();
        let mut done = 0;
        while done < max {
            let Some(&p) = self.pending.front() else {
                break;
            };
            let (tl, nl) = (p.target_len as usize, p.name_len as usize);
            let need = tl + nl + p.data_len as usize;
            let inside = |at: u64, len: usize| p.at >= at && p.at + need as u64 <= at + len as u64;
            if !inside(win_at, win_len) {
                let start = p.at - p.at % ALIGN as u64;
                let file = self.file.as_ref().expect("pending records have a journal");
                // A window that cannot be read leaves the record to the buffered reader below.
                (win_at, win_len) = (start, file.read_at(window.bytes(), start).unwrap_or(0));
            }
            let record: &[u8] = if inside(win_at, win_len) {
                &window.as_slice()[(p.at - win_at) as usize..][..need]
            } else {
                single.resize(need, 0);
                let reader = self.reader.as_ref().expect("opened with the journal");
                reader.read_exact_at(&mut single, p.at)?;
                &single
            };
            let names = std::str::from_utf8(&record[..tl + nl]).map_err(io::Error::other)?;
            let (target, name) = (&names[..tl], &names[tl..]);
            self.laid_out += 1;
            let staged = staging.join(format!("journal-{}", self.laid_out));
            place_file(
                run_dir,
                &staged,
                target,
                name,
                &record[tl + nl..],
                false,
                parents,
            )?;
            self.targets.remove(&target_hash(target));
            self.pending.pop_front();
            done += 1;
        }
        Ok(done)
    }

    /// Once every record is laid out: syncs the file system (`sync_dir` is any open directory
    /// on it), then empties the journal, so the tree alone holds those results from then on.
    pub(crate) fn settle(&mut self, sync_dir: &File) -> io::Result<()> {
        let Some(file) = &self.file else {
            return Ok(());
        };
        if !self.pending.is_empty() || self.len == 0 {
            return Ok(());
        }
        crate::store::sync_fs(sync_dir)?;
        file.set_len(0)?;
        self.len = 0;
        self.buf = None;
        Ok(())
    }
}

/// Writes `name` with `data` in a fresh staging directory and renames that directory to
/// `run_dir/target`. With `replace`, whatever is at the target goes first (replay: the journal
/// is the truth for its records, and an earlier lay-out may not have been synced).
fn place_file(
    run_dir: &Path,
    staged: &Path,
    target: &str,
    name: &str,
    data: &[u8],
    replace: bool,
    parents: &mut HashSet<PathBuf>,
) -> io::Result<()> {
    if staged.exists() {
        fs::remove_dir_all(staged)?;
    }
    fs::create_dir(staged)?;
    let written = crate::extract::open_new_file(&staged.join(name), false)
        .and_then(|mut f| f.write_all(data));
    if let Err(e) = written {
        let _ = fs::remove_dir_all(staged);
        return Err(e);
    }
    let to = run_dir.join(target);
    if replace && to.exists() {
        fs::remove_dir_all(&to)?;
    }
    let placed = crate::store::place(staged, &to, parents);
    if placed.is_err() {
        let _ = fs::remove_dir_all(staged);
    }
    placed
}

/// One record read back: target, name, data, and how many bytes of the journal it took.
type Record = (String, String, Vec<u8>, u64);

/// Skips the zeros that pad a batch from `pos` to the next multiple of `ALIGN`. `Ok(false)`
/// when `r` holds no more records: its end, or zeros where no batch could end (an offset
/// already aligned: space a torn write left, never acknowledged).
fn skip_padding<R: BufRead>(r: &mut R, pos: &mut u64) -> io::Result<bool> {
    let left = (ALIGN as u64 - *pos % ALIGN as u64) % ALIGN as u64;
    if left == 0 {
        return Ok(false);
    }
    let mut pad = Vec::new();
    r.by_ref().take(left).read_to_end(&mut pad)?;
    if pad.len() as u64 != left {
        return Ok(false);
    }
    if pad.iter().any(|b| *b != 0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "a batch's padding that is not zeros",
        ));
    }
    *pos += left;
    Ok(true)
}

/// Reads one record from `r`: `Ok(None)` at a clean end, `Err` for a torn or damaged one.
fn read_record<R: BufRead>(r: &mut R) -> io::Result<Option<Record>> {
    let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_string());
    let mut line = Vec::new();
    let n = r
        .by_ref()
        .take(MAX_HEADER as u64)
        .read_until(b'\n', &mut line)?;
    if n == 0 {
        return Ok(None);
    }
    let line = line
        .strip_suffix(b"\n")
        .ok_or_else(|| bad("a record header without its end (a torn write)"))?;
    let line = std::str::from_utf8(line).map_err(|_| bad("a header that is not text"))?;
    let f: Vec<&str> = line.split(' ').collect();
    let num = |s: &str, max: usize| s.parse::<usize>().ok().filter(|n| *n <= max);
    let (Some(crc), Some(tl), Some(nl), Some(dl)) = (
        f.get(1).and_then(|s| u32::from_str_radix(s, 16).ok()),
        f.get(2).and_then(|s| num(s, MAX_TARGET)),
        f.get(3).and_then(|s| num(s, MAX_NAME)),
        f.get(4).and_then(|s| num(s, MAX_DATA)),
    ) else {
        return Err(bad("a malformed record header"));
    };
    if f.len() != 5 || f[0] != MAGIC {
        return Err(bad("a malformed record header"));
    }
    let mut body = vec![0u8; tl + nl + dl];
    r.read_exact(&mut body)
        .map_err(|_| bad("a record cut short (a torn write)"))?;
    if crc32fast::hash(&body) != crc {
        return Err(bad("a record whose checksum does not match"));
    }
    let data = body.split_off(tl + nl);
    let name = body.split_off(tl);
    let (Ok(target), Ok(name)) = (String::from_utf8(body), String::from_utf8(name)) else {
        return Err(bad("a record whose names are not text"));
    };
    if !replayable(&target, &name, &data) {
        return Err(bad("a record whose target is not a result directory"));
    }
    let took = (n + tl + nl + dl) as u64;
    Ok(Some((target, name, data, took)))
}

/// What a replay found in a journal.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Replayed {
    /// Whole records laid out.
    pub records: usize,
    /// Damaged stretches with whole records after them.
    pub damaged: usize,
    /// Records those stretches held (their headers, or one for a stretch that is not zeros):
    /// acknowledged results that are lost.
    pub damaged_records: usize,
    /// A damaged or cut stretch at the end, with no whole record after it: a write that was
    /// never acknowledged (a crash mid-batch).
    pub torn_tail: bool,
}

/// Whether the journal holds only zeros from `from` to `to`.
fn all_zeros(file: &File, from: u64, to: u64) -> io::Result<bool> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut at = from;
    while at < to {
        let want = buf.len().min((to - at) as usize);
        let n = file.read_at(&mut buf[..want], at)?;
        if n == 0 {
            break;
        }
        if buf[..n].iter().any(|b| *b != 0) {
            return Ok(false);
        }
        at += n as u64;
    }
    Ok(true)
}

/// Where the next whole record starts at or after `from`, if any: the next `BUOYJ ` header
/// that reads as a record whose checksum matches. Also counts the headers passed over.
fn next_record(file: &File, from: u64, passed: &mut usize) -> io::Result<Option<u64>> {
    let len = file.metadata()?.len();
    let magic = format!("{MAGIC} ");
    let mut buf = vec![0u8; 64 * 1024];
    let mut at = from;
    while at < len {
        let n = file.read_at(&mut buf, at)?;
        if n == 0 {
            break;
        }
        let window = &buf[..n];
        let mut i = 0;
        while let Some(k) = window[i..]
            .windows(magic.len())
            .position(|w| w == magic.as_bytes())
        {
            let cand = at + (i + k) as u64;
            let mut r = BufReader::new(file.try_clone()?);
            std::io::Seek::seek(&mut r, io::SeekFrom::Start(cand))?;
            match read_record(&mut r) {
                Ok(Some(_)) => return Ok(Some(cand)),
                _ => *passed += 1,
            }
            i += k + 1;
        }
        // Overlap by the magic's length, so a header across two reads is not missed.
        at += (n.saturating_sub(magic.len() - 1)).max(1) as u64;
    }
    Ok(None)
}

/// Lays out every whole record of the journal at `path` (left by an aggregator that stopped
/// before it laid them out) and syncs the file system. A damaged record does not end it: the
/// next whole record is searched for and replay goes on from there, so one bad stretch loses
/// only what it holds. The journal itself is left for the caller (to remove, or to keep aside
/// when records were lost).
pub(crate) fn replay(path: &Path, run_dir: &Path, staging: &Path) -> io::Result<Replayed> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Replayed::default()),
        Err(e) => return Err(e),
    };
    let mut r = BufReader::new(file.try_clone()?);
    let mut parents = HashSet::new();
    let mut out = Replayed::default();
    let mut pos = 0;
    loop {
        let start = pos;
        // A batch ends in zeros up to the next multiple of `ALIGN`; a record starts with text.
        let step = if r.fill_buf()?.first() == Some(&0) {
            match skip_padding(&mut r, &mut pos) {
                Ok(true) => continue,
                Ok(false) => Ok(None),
                Err(e) => Err(e),
            }
        } else {
            read_record(&mut r)
        };
        match step {
            Ok(Some((target, name, data, took))) => {
                let staged = staging.join(format!("replay-{}", out.records));
                place_file(run_dir, &staged, &target, &name, &data, true, &mut parents)?;
                out.records += 1;
                pos += took;
            }
            Ok(None) if r.fill_buf()?.is_empty() => break,
            Ok(None) | Err(_) => {
                if let Err(e) = &step {
                    if e.kind() != io::ErrorKind::InvalidData {
                        return Err(io::Error::new(e.kind(), e.to_string()));
                    }
                }
                // Damage (or zeros where no batch could end): go on at the next whole record.
                let mut passed = 0;
                match next_record(&file, start + 1, &mut passed)? {
                    Some(next) => {
                        out.damaged += 1;
                        // Padding is zeros; anything else held a record, even one whose
                        // header is too damaged to be counted.
                        let lost = if passed == 0 && !all_zeros(&file, start, next)? {
                            1
                        } else {
                            passed
                        };
                        out.damaged_records += lost;
                        std::io::Seek::seek(&mut r, io::SeekFrom::Start(next))?;
                        pos = next;
                    }
                    None => {
                        out.torn_tail = true;
                        break;
                    }
                }
            }
        }
    }
    if out.records > 0 {
        crate::store::sync_fs(&File::open(run_dir)?)?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
