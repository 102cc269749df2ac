//! Safe, streaming extraction of an uploaded `.tar.gz` (departure 5), and the verbatim write of
//! a plain body. Only regular files and directories are written; absolute names, `..`, links,
//! devices and sparse files refuse the whole upload. Everything a client controls is capped
//! before it costs memory or disk: entry count, per-file and total size, GNU long-name and PAX
//! header sizes (read whole only when under [`MAX_META_BYTES`]), name length, component length
//! and depth; mtimes out of range are refused instead of overflowing. Directories are created
//! one component at a time, never by recursion. Runs on a blocking thread over a reader that
//! streams the request body, so memory stays bounded whatever the upload size. Every byte
//! written is charged to the run's [`DiskBudget`]. The destination is a fresh staging
//! directory that the caller deletes on any error, so a refused upload leaves nothing behind.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::budget::{DiskBudget, Meter};

/// Caps on what one upload may contain.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Bytes of request body accepted for one upload.
    pub max_upload_bytes: u64,
    /// Bytes written to disk by one extracted tarball.
    pub max_extracted_bytes: u64,
    /// Entries in one tarball (metadata entries included).
    pub max_entries: u64,
    /// Bytes of one file inside a tarball.
    pub max_file_bytes: u64,
}

impl Default for Limits {
    /// Sized to real results (a conformance run's tarball is tens of MB, a node's logs rarely
    /// more than hundreds) with headroom, while a gzip bomb stops at 2 GiB.
    fn default() -> Self {
        Self {
            max_upload_bytes: 2 << 30,
            max_extracted_bytes: 2 << 30,
            max_entries: 100_000,
            max_file_bytes: 2 << 30,
        }
    }
}

/// Largest GNU long name, long link or PAX header accepted; these are read into memory.
pub const MAX_META_BYTES: u64 = 64 << 10;
/// Longest entry name, in bytes, relative to the result directory. Leaves room below Linux's
/// PATH_MAX (4096) for the run directory the result is moved into.
pub const MAX_NAME_BYTES: usize = 3072;
/// Longest single path component (NAME_MAX).
pub const MAX_COMPONENT_BYTES: usize = 255;
/// Deepest nesting of an entry name, in components.
pub const MAX_DEPTH: usize = 128;
/// How much of a client-supplied name goes into a message or a log line.
const SHOWN_BYTES: usize = 120;

#[derive(Debug, thiserror::Error)]
pub enum ExtractError {
    /// The archive is malformed or unsafe (400).
    #[error("{0}")]
    Refused(String),
    /// The archive exceeds a cap (413).
    #[error("{0}")]
    TooLarge(String),
    /// The disk reserve or the run's storage budget would be crossed (507); a retry may work.
    #[error("{0}")]
    NoSpace(String),
    /// Writing to our own disk failed (500).
    #[error("{context}: {source}")]
    Io { context: String, source: io::Error },
}

fn io_ctx(context: impl Into<String>) -> impl FnOnce(io::Error) -> ExtractError {
    let context = context.into();
    move |source| ExtractError::Io { context, source }
}

/// A client-supplied name as it may appear in a message: a short prefix, quoted, with the
/// full length when it was cut.
pub fn shown(name: &[u8]) -> String {
    if name.len() <= SHOWN_BYTES {
        return format!("{:?}", String::from_utf8_lossy(name));
    }
    let mut cut = SHOWN_BYTES;
    while cut > 0 && (name[cut] & 0xC0) == 0x80 {
        cut -= 1;
    }
    format!(
        "{:?}... ({} bytes)",
        String::from_utf8_lossy(&name[..cut]),
        name.len()
    )
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    pub files: u64,
    pub dirs: u64,
    pub bytes: u64,
}

/// Validates an entry name (raw bytes) and returns its normal components.
fn safe_components(name: &[u8]) -> Result<Vec<&[u8]>, ExtractError> {
    let refuse = |why: &str| {
        Err(ExtractError::Refused(format!(
            "tar entry {} {why}",
            shown(name)
        )))
    };
    if name.contains(&0) {
        return refuse("contains a NUL byte");
    }
    if name.len() > MAX_NAME_BYTES {
        return refuse(&format!("has a name longer than {MAX_NAME_BYTES} bytes"));
    }
    if name.first() == Some(&b'/') {
        return refuse("has an absolute path");
    }
    let mut out = Vec::new();
    for c in name.split(|b| *b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => return refuse("contains '..'"),
            c if c.len() > MAX_COMPONENT_BYTES => {
                return refuse(&format!(
                    "has a path component longer than {MAX_COMPONENT_BYTES} bytes"
                ))
            }
            c => out.push(c),
        }
        if out.len() > MAX_DEPTH {
            return refuse(&format!("is nested deeper than {MAX_DEPTH} levels"));
        }
    }
    Ok(out)
}

fn join(dest: &Path, comps: &[&[u8]]) -> PathBuf {
    use std::os::unix::ffi::OsStrExt;
    let mut p = dest.to_path_buf();
    for c in comps {
        p.push(std::ffi::OsStr::from_bytes(c));
    }
    p
}

/// Reads a tar.gz stream and writes its files under `dest` (which must exist and be empty).
pub fn extract_tar_gz<R: Read>(
    reader: R,
    dest: &Path,
    limits: &Limits,
    budget: &DiskBudget,
) -> Result<Stats, ExtractError> {
    let mut counted = CountingReader {
        inner: reader,
        count: 0,
    };
    let stats = {
        let gz = flate2::read::MultiGzDecoder::new(&mut counted);
        let mut meter = budget.meter()?;
        let r = extract_tar(gz, dest, limits, &mut meter);
        if r.is_ok() {
            meter.keep();
        }
        r
    };
    match stats {
        // Go's gzip reader answers an empty body with EOF; say it plainly.
        Err(ExtractError::Refused(_)) if counted.count == 0 => Err(ExtractError::Refused(
            "empty body: expected a gzip-compressed tarball".into(),
        )),
        other => other,
    }
}

struct CountingReader<R> {
    inner: R,
    count: u64,
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count += n as u64;
        Ok(n)
    }
}

fn malformed(e: io::Error) -> ExtractError {
    ExtractError::Refused(format!("not a valid gzip-compressed tarball: {e}"))
}

/// What GNU long-name and PAX headers said about the next entry.
#[derive(Default)]
struct Pending {
    name: Option<Vec<u8>>,
    size: Option<u64>,
    mtime: Option<u64>,
    long_name: bool,
    pax: bool,
}

/// Reads a metadata entry's data, refusing one over [`MAX_META_BYTES`] before reading it.
fn read_meta<R: Read>(entry: &mut tar::Entry<R>, what: &str) -> Result<Vec<u8>, ExtractError> {
    let size = entry.header().entry_size().map_err(malformed)?;
    if size > MAX_META_BYTES {
        return Err(ExtractError::Refused(format!(
            "tarball has a {what} of {size} bytes; at most {MAX_META_BYTES} are accepted"
        )));
    }
    let mut buf = Vec::with_capacity(size as usize);
    entry.read_to_end(&mut buf).map_err(malformed)?;
    if buf.len() as u64 != size {
        return Err(ExtractError::Refused(format!(
            "tarball's {what} is truncated"
        )));
    }
    Ok(buf)
}

fn parse_pax(data: &[u8], pending: &mut Pending) -> Result<(), ExtractError> {
    let bad = |why: String| ExtractError::Refused(format!("tarball has a bad PAX header: {why}"));
    for ext in tar::PaxExtensions::new(data) {
        let ext = ext.map_err(|e| bad(e.to_string()))?;
        let value = ext.value_bytes();
        let number = || -> Result<u64, ExtractError> {
            // PAX times may carry a fraction; whole seconds are enough here.
            let whole = value.split(|b| *b == b'.').next().unwrap_or_default();
            std::str::from_utf8(whole)
                .ok()
                .and_then(|s| s.parse::<u64>().ok())
                .ok_or_else(|| bad(format!("{} is not a number", shown(ext.key_bytes()))))
        };
        match ext.key_bytes() {
            b"path" => pending.name = Some(value.to_vec()),
            b"size" => pending.size = Some(number()?),
            b"mtime" => pending.mtime = Some(number()?),
            k if k.starts_with(b"GNU.sparse.") => {
                return Err(ExtractError::Refused(
                    "tarball has a sparse file (PAX GNU.sparse); not accepted".into(),
                ))
            }
            _ => {}
        }
    }
    Ok(())
}

fn extract_tar<R: Read>(
    reader: R,
    dest: &Path,
    limits: &Limits,
    meter: &mut Meter<'_>,
) -> Result<Stats, ExtractError> {
    let mut archive = tar::Archive::new(reader);
    let mut stats = Stats::default();
    // Raw entries: GNU long names and PAX headers come to us as entries, so their size is
    // checked before a byte of them is read into memory (the tar crate would read them whole).
    let mut entries = archive.entries().map_err(malformed)?.raw(true);
    let mut pending = Pending::default();
    let mut seen = 0u64;
    // The last directory known to exist, to spare a syscall per file of the same directory.
    let mut last_dir: Option<PathBuf> = None;
    loop {
        let mut entry = match entries.next() {
            None => break,
            Some(Ok(e)) => e,
            Some(Err(e)) => return Err(malformed(e)),
        };
        seen += 1;
        if seen > limits.max_entries {
            return Err(ExtractError::TooLarge(format!(
                "tarball has more than {} entries",
                limits.max_entries
            )));
        }
        use tar::EntryType as T;
        let kind = entry.header().entry_type();
        match kind {
            T::GNULongName => {
                if pending.long_name {
                    return Err(ExtractError::Refused(
                        "tarball has two long names for one entry".into(),
                    ));
                }
                let mut name = read_meta(&mut entry, "GNU long name")?;
                while name.last() == Some(&0) {
                    name.pop();
                }
                pending.long_name = true;
                // A PAX path, if any, wins (as in GNU tar and Go).
                if !pending.pax || pending.name.is_none() {
                    pending.name = Some(name);
                }
                continue;
            }
            T::XHeader => {
                if pending.pax {
                    return Err(ExtractError::Refused(
                        "tarball has two PAX headers for one entry".into(),
                    ));
                }
                let data = read_meta(&mut entry, "PAX header")?;
                pending.pax = true;
                parse_pax(&data, &mut pending)?;
                continue;
            }
            T::GNULongLink | T::XGlobalHeader => {
                // Link targets are never used (links are refused), and global PAX headers
                // are ignored; both are still capped, and skipped without being read.
                let size = entry.header().entry_size().map_err(malformed)?;
                if size > MAX_META_BYTES {
                    return Err(ExtractError::Refused(format!(
                        "tarball has a {} entry of {size} bytes; at most {MAX_META_BYTES} are accepted",
                        if kind == T::GNULongLink { "GNU long link" } else { "global PAX header" }
                    )));
                }
                continue;
            }
            _ => {}
        }
        let meta = std::mem::take(&mut pending);
        let name_bytes: Vec<u8> = match meta.name {
            Some(n) => n,
            None => entry.header().path_bytes().into_owned(),
        };
        let comps = safe_components(&name_bytes)?;
        let shown_name = shown(&name_bytes);
        match kind {
            T::Directory => {
                if !comps.is_empty() {
                    ensure_dirs(dest, &comps, &shown_name)?;
                }
                stats.dirs += 1;
            }
            T::Regular | T::Continuous => {
                let Some((_, parents)) = comps.split_last() else {
                    return Err(ExtractError::Refused(format!(
                        "tar entry {shown_name} is a file without a name"
                    )));
                };
                let size = entry.header().entry_size().map_err(malformed)?;
                if let Some(pax_size) = meta.size {
                    if pax_size > limits.max_file_bytes {
                        return Err(too_big_file(&shown_name, pax_size, limits));
                    }
                    if pax_size != size {
                        return Err(ExtractError::Refused(format!(
                            "tar entry {shown_name}: its PAX size ({pax_size}) disagrees with its header ({size})"
                        )));
                    }
                }
                if size > limits.max_file_bytes {
                    return Err(too_big_file(&shown_name, size, limits));
                }
                if stats.bytes.saturating_add(size) > limits.max_extracted_bytes {
                    return Err(ExtractError::TooLarge(format!(
                        "tarball expands to more than {} bytes",
                        limits.max_extracted_bytes
                    )));
                }
                let mtime = match meta.mtime {
                    Some(m) => Some(m),
                    None => entry.header().mtime().ok(),
                };
                let modified = match mtime {
                    None => None,
                    Some(m) => Some(mtime_of(m).ok_or_else(|| {
                        ExtractError::Refused(format!(
                            "tar entry {shown_name} has an mtime out of range ({m})"
                        ))
                    })?),
                };
                let parent = join(dest, parents);
                if last_dir.as_deref() != Some(parent.as_path()) {
                    ensure_dirs(dest, parents, &shown_name)?;
                    last_dir = Some(parent);
                }
                let p = join(dest, &comps);
                let executable = entry
                    .header()
                    .mode()
                    .map(|m| m & 0o111 != 0)
                    .unwrap_or(false);
                // The open creates only a new name, so an existing one is refused here.
                let mut f = open_new_file(&p, executable).map_err(|e| {
                    if e.kind() == io::ErrorKind::AlreadyExists {
                        ExtractError::Refused(format!(
                            "tar entry {shown_name} appears twice, or is a file where a directory was"
                        ))
                    } else {
                        our_or_their(e, &shown_name, "cannot create")
                    }
                })?;
                let written = copy_into(&mut entry, &mut f, meter, malformed)?;
                if written != size {
                    return Err(ExtractError::Refused(format!(
                        "tar entry {shown_name} is truncated"
                    )));
                }
                // Made durable with the whole upload by the store's group commit.
                if let Some(t) = modified {
                    let _ = f.set_modified(t);
                }
                stats.files += 1;
                stats.bytes += written;
            }
            T::Symlink => {
                return Err(ExtractError::Refused(format!(
                    "tar entry {shown_name} is a symbolic link; links are not accepted"
                )))
            }
            T::Link => {
                return Err(ExtractError::Refused(format!(
                    "tar entry {shown_name} is a hard link; links are not accepted"
                )))
            }
            T::Char | T::Block | T::Fifo => {
                return Err(ExtractError::Refused(format!(
                    "tar entry {shown_name} is a device or fifo; only files and directories are accepted"
                )))
            }
            T::GNUSparse => {
                return Err(ExtractError::Refused(format!(
                    "tar entry {shown_name} is a sparse file; not accepted"
                )))
            }
            other => {
                return Err(ExtractError::Refused(format!(
                    "tar entry {shown_name} has unsupported type {:?}",
                    other.as_byte() as char
                )))
            }
        }
    }
    if pending.long_name || pending.pax {
        return Err(ExtractError::Refused(
            "tarball ends with a long name or PAX header that describes no entry".into(),
        ));
    }
    // An archive with no entries is accepted as an empty result directory, as in Go.
    Ok(stats)
}

fn too_big_file(shown_name: &str, size: u64, limits: &Limits) -> ExtractError {
    ExtractError::TooLarge(format!(
        "tar entry {shown_name} is {size} bytes, over the per-file cap of {}",
        limits.max_file_bytes
    ))
}

/// An mtime a file can carry; `None` past what `SystemTime` or a file system can represent.
fn mtime_of(secs: u64) -> Option<SystemTime> {
    if secs > i64::MAX as u64 {
        return None;
    }
    SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(secs))
}

/// A file-system error caused by the shape of a client's name is theirs (400), not ours.
fn our_or_their(e: io::Error, shown_name: &str, what: &str) -> ExtractError {
    match e.raw_os_error() {
        Some(code) if code == nix::errno::Errno::ENAMETOOLONG as i32 => ExtractError::Refused(
            format!("tar entry {shown_name}: name too long for the file system"),
        ),
        _ => ExtractError::Io {
            context: format!("{what} {shown_name}"),
            source: e,
        },
    }
}

/// Creates `dest/comps...` one component at a time (no recursion, whatever the depth).
fn ensure_dirs(dest: &Path, comps: &[&[u8]], shown_name: &str) -> Result<(), ExtractError> {
    let mut p = dest.to_path_buf();
    for c in comps {
        use std::os::unix::ffi::OsStrExt;
        p.push(std::ffi::OsStr::from_bytes(c));
        match fs::create_dir(&p) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                if !fs::symlink_metadata(&p)
                    .map(|m| m.is_dir())
                    .unwrap_or(false)
                {
                    return Err(ExtractError::Refused(format!(
                        "tar entry {shown_name} needs a directory where a file was"
                    )));
                }
            }
            Err(e) => return Err(our_or_their(e, shown_name, "cannot create a directory for")),
        }
    }
    Ok(())
}

pub(crate) fn open_new_file(p: &Path, executable: bool) -> io::Result<File> {
    let mut o = OpenOptions::new();
    // create_new: a name that already exists (a duplicate entry) is never overwritten.
    o.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(if executable { 0o755 } else { 0o644 });
    }
    // Staging directories are fresh and links are never written, so no path component can
    // redirect this open outside `dest`.
    o.open(p)
}

/// Copies `src` into `dst`, charging every byte to `meter`, telling read errors (the
/// client's: `on_read`) from write errors (ours: `Io`).
fn copy_into<R: Read>(
    src: &mut R,
    dst: &mut File,
    meter: &mut Meter<'_>,
    on_read: fn(io::Error) -> ExtractError,
) -> Result<u64, ExtractError> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0u64;
    loop {
        let n = match src.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(on_read(e)),
        };
        meter.charge(n as u64)?;
        dst.write_all(&buf[..n])
            .map_err(|e| match e.raw_os_error() {
                Some(c) if c == nix::errno::Errno::ENOSPC as i32 => {
                    ExtractError::NoSpace("the aggregator's disk is full".into())
                }
                _ => ExtractError::Io {
                    context: "cannot write a result file".into(),
                    source: e,
                },
            })?;
        total += n as u64;
    }
}

/// Writes a non-gzip body verbatim as `dest/filename`.
pub fn write_plain<R: Read>(
    mut reader: R,
    dest: &Path,
    filename: &str,
    budget: &DiskBudget,
) -> Result<Stats, ExtractError> {
    let p = dest.join(filename);
    let mut meter = budget.meter()?;
    let mut f =
        open_new_file(&p, false).map_err(io_ctx(format!("cannot create {}", p.display())))?;
    let total = copy_into(&mut reader, &mut f, &mut meter, |e| {
        ExtractError::Refused(format!("error reading request body: {e}"))
    })?;
    // Made durable by the store's group commit before the upload is answered.
    meter.keep();
    Ok(Stats {
        files: 1,
        dirs: 0,
        bytes: total,
    })
}

#[cfg(test)]
mod tests;
