//! Safe, streaming extraction of an uploaded `.tar.gz` (departure 5). Only regular files and
//! directories are written; absolute names, `..`, links, devices and sparse files refuse the
//! whole upload; entry count, per-file size and total size are capped; multi-member gzip is
//! accepted. Runs on a blocking thread over a reader that streams the request body, so memory
//! stays bounded whatever the upload size. The destination is a fresh staging directory that
//! the caller deletes on any error, so a refused upload leaves nothing behind.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, SystemTime};

/// Caps on what one upload may contain.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Bytes of request body accepted for one upload.
    pub max_upload_bytes: u64,
    /// Bytes written to disk by one extracted tarball.
    pub max_extracted_bytes: u64,
    /// Entries in one tarball.
    pub max_entries: u64,
    /// Bytes of one file inside a tarball.
    pub max_file_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_upload_bytes: 16 << 30,
            max_extracted_bytes: 64 << 30,
            max_entries: 200_000,
            max_file_bytes: 16 << 30,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ExtractError {
    /// The archive is malformed or unsafe (400).
    #[error("{0}")]
    Refused(String),
    /// The archive exceeds a cap (413).
    #[error("{0}")]
    TooLarge(String),
    /// Writing to our own disk failed (500).
    #[error("{context}: {source}")]
    Io { context: String, source: io::Error },
}

fn io_ctx(context: impl Into<String>) -> impl FnOnce(io::Error) -> ExtractError {
    let context = context.into();
    move |source| ExtractError::Io { context, source }
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    pub files: u64,
    pub dirs: u64,
    pub bytes: u64,
}

/// Validates an entry name and turns it into a relative path of normal components.
fn safe_relative(name: &Path) -> Result<PathBuf, ExtractError> {
    let mut out = PathBuf::new();
    for c in name.components() {
        match c {
            Component::Normal(p) => out.push(p),
            Component::CurDir => {}
            Component::ParentDir => {
                return Err(ExtractError::Refused(format!(
                    "tar entry {:?} contains '..'",
                    name.display().to_string()
                )))
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err(ExtractError::Refused(format!(
                    "tar entry {:?} has an absolute path",
                    name.display().to_string()
                )))
            }
        }
    }
    Ok(out)
}

/// Reads a tar.gz stream and writes its files under `dest` (which must exist and be empty).
pub fn extract_tar_gz<R: Read>(
    reader: R,
    dest: &Path,
    limits: &Limits,
) -> Result<Stats, ExtractError> {
    let mut counted = CountingReader {
        inner: reader,
        count: 0,
    };
    let stats = {
        let gz = flate2::read::MultiGzDecoder::new(&mut counted);
        extract_tar(gz, dest, limits)
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

fn extract_tar<R: Read>(reader: R, dest: &Path, limits: &Limits) -> Result<Stats, ExtractError> {
    let mut archive = tar::Archive::new(reader);
    let mut stats = Stats::default();
    let mut entries = archive.entries().map_err(malformed)?;
    loop {
        let mut entry = match entries.next() {
            None => break,
            Some(Ok(e)) => e,
            Some(Err(e)) => return Err(malformed(e)),
        };
        if stats.files + stats.dirs >= limits.max_entries {
            return Err(ExtractError::TooLarge(format!(
                "tarball has more than {} entries",
                limits.max_entries
            )));
        }
        let kind = entry.header().entry_type();
        let raw_name = entry.path().map_err(malformed)?.into_owned();
        let shown = raw_name.display().to_string();
        let rel = safe_relative(&raw_name)?;
        use tar::EntryType as T;
        match kind {
            T::XGlobalHeader | T::XHeader | T::GNULongName | T::GNULongLink => continue,
            T::Directory => {
                if !rel.as_os_str().is_empty() {
                    let p = dest.join(&rel);
                    ensure_dir(dest, &p, &shown)?;
                }
                stats.dirs += 1;
            }
            T::Regular | T::Continuous => {
                if rel.as_os_str().is_empty() {
                    return Err(ExtractError::Refused(format!(
                        "tar entry {shown:?} is a file without a name"
                    )));
                }
                let size = entry.header().size().map_err(malformed)?;
                if size > limits.max_file_bytes {
                    return Err(ExtractError::TooLarge(format!(
                        "tar entry {shown:?} is {size} bytes, over the per-file cap of {}",
                        limits.max_file_bytes
                    )));
                }
                if stats.bytes + size > limits.max_extracted_bytes {
                    return Err(ExtractError::TooLarge(format!(
                        "tarball expands to more than {} bytes",
                        limits.max_extracted_bytes
                    )));
                }
                let p = dest.join(&rel);
                if let Some(parent) = p.parent() {
                    ensure_dir(dest, parent, &shown)?;
                }
                if p.is_dir() {
                    return Err(ExtractError::Refused(format!(
                        "tar entry {shown:?} is a file where a directory was"
                    )));
                }
                let executable = entry
                    .header()
                    .mode()
                    .map(|m| m & 0o111 != 0)
                    .unwrap_or(false);
                let mtime = entry.header().mtime().ok();
                let mut f = open_new_file(&p, executable)
                    .map_err(io_ctx(format!("cannot create {}", p.display())))?;
                let written = copy_into(&mut entry, &mut f, &p, malformed)?;
                if written != size {
                    return Err(ExtractError::Refused(format!(
                        "tar entry {shown:?} is truncated"
                    )));
                }
                f.sync_all()
                    .map_err(io_ctx(format!("cannot sync {}", p.display())))?;
                if let Some(m) = mtime {
                    let _ = f.set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(m));
                }
                stats.files += 1;
                stats.bytes += written;
            }
            T::Symlink => {
                return Err(ExtractError::Refused(format!(
                    "tar entry {shown:?} is a symbolic link; links are not accepted"
                )))
            }
            T::Link => {
                return Err(ExtractError::Refused(format!(
                    "tar entry {shown:?} is a hard link; links are not accepted"
                )))
            }
            T::Char | T::Block | T::Fifo => {
                return Err(ExtractError::Refused(format!(
                "tar entry {shown:?} is a device or fifo; only files and directories are accepted"
            )))
            }
            T::GNUSparse => {
                return Err(ExtractError::Refused(format!(
                    "tar entry {shown:?} is a sparse file; not accepted"
                )))
            }
            other => {
                return Err(ExtractError::Refused(format!(
                    "tar entry {shown:?} has unsupported type {:?}",
                    other.as_byte() as char
                )))
            }
        }
    }
    // An archive with no entries is accepted as an empty result directory, as in Go.
    Ok(stats)
}

fn ensure_dir(root: &Path, dir: &Path, shown: &str) -> Result<(), ExtractError> {
    match fs::symlink_metadata(dir) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(ExtractError::Refused(format!(
            "tar entry {shown:?} needs a directory where a file was"
        ))),
        Err(_) => {
            if let Some(parent) = dir.parent() {
                if parent != root && parent.starts_with(root) {
                    ensure_dir(root, parent, shown)?;
                }
            }
            match fs::create_dir(dir) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(()),
                Err(e) => Err(ExtractError::Io {
                    context: format!("cannot create {}", dir.display()),
                    source: e,
                }),
            }
        }
    }
}

fn open_new_file(p: &Path, executable: bool) -> io::Result<File> {
    let mut o = OpenOptions::new();
    o.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(if executable { 0o755 } else { 0o644 });
    }
    // Staging directories are fresh and links are never written, so no path component can
    // redirect this open outside `dest`.
    o.open(p)
}

/// Copies `src` into `dst` (the file at `p`), telling read errors (the client's: `on_read`)
/// from write errors (ours: `Io`).
fn copy_into<R: Read>(
    src: &mut R,
    dst: &mut File,
    p: &Path,
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
        dst.write_all(&buf[..n])
            .map_err(io_ctx(format!("cannot write {}", p.display())))?;
        total += n as u64;
    }
}

/// Writes a non-gzip body verbatim as `dest/filename`.
pub fn write_plain<R: Read>(
    mut reader: R,
    dest: &Path,
    filename: &str,
) -> Result<Stats, ExtractError> {
    let p = dest.join(filename);
    let mut f =
        open_new_file(&p, false).map_err(io_ctx(format!("cannot create {}", p.display())))?;
    let total = copy_into(&mut reader, &mut f, &p, |e| {
        ExtractError::Refused(format!("error reading request body: {e}"))
    })?;
    f.sync_all()
        .map_err(io_ctx(format!("cannot sync {}", p.display())))?;
    Ok(Stats {
        files: 1,
        dirs: 0,
        bytes: total,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::{write::GzEncoder, Compression};

    fn gz(data: &[u8]) -> Vec<u8> {
        let mut e = GzEncoder::new(Vec::new(), Compression::fast());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn tar_with(build: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        build(&mut b);
        b.into_inner().unwrap()
    }

    fn file(b: &mut tar::Builder<Vec<u8>>, name: &str, data: &[u8]) {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_cksum();
        b.append_data(&mut h, name, data).unwrap();
    }

    /// Writes a raw header with any name, bypassing the tar crate's own path checks.
    fn raw_entry(
        b: &mut tar::Builder<Vec<u8>>,
        name: &str,
        kind: tar::EntryType,
        link: Option<&str>,
        data: &[u8],
    ) {
        let mut h = tar::Header::new_old();
        {
            let bytes = h.as_old_mut();
            bytes.name[..name.len()].copy_from_slice(name.as_bytes());
            if let Some(l) = link {
                bytes.linkname[..l.len()].copy_from_slice(l.as_bytes());
            }
        }
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(kind);
        h.set_cksum();
        b.append(&h, data).unwrap();
    }

    fn extract(bytes: &[u8]) -> (tempfile::TempDir, Result<Stats, ExtractError>) {
        let dir = tempfile::tempdir().unwrap();
        let r = extract_tar_gz(bytes, dir.path(), &Limits::default());
        (dir, r)
    }

    #[test]
    fn extracts_files_and_directories() {
        let t = tar_with(|b| {
            raw_entry(b, "dir/", tar::EntryType::Directory, None, b"");
            file(b, "dir/inside_tar.txt", b"hello");
            file(b, "./top.txt", b"top");
        });
        let (dir, r) = extract(&gz(&t));
        let s = r.unwrap();
        assert_eq!((s.files, s.bytes), (2, 8));
        assert_eq!(
            fs::read(dir.path().join("dir/inside_tar.txt")).unwrap(),
            b"hello"
        );
        assert_eq!(fs::read(dir.path().join("top.txt")).unwrap(), b"top");
    }

    #[test]
    fn multi_member_gzip_is_accepted() {
        // Two gzip members whose concatenation is one tar stream.
        let t = tar_with(|b| file(b, "a.txt", b"a"));
        let (head, tail) = t.split_at(512);
        let mut body = gz(head);
        body.extend(gz(tail));
        let (dir, r) = extract(&body);
        r.unwrap();
        assert_eq!(fs::read(dir.path().join("a.txt")).unwrap(), b"a");
    }

    #[test]
    fn parent_traversal_is_refused() {
        let t = tar_with(|b| raw_entry(b, "../evil.txt", tar::EntryType::Regular, None, b"x"));
        let (dir, r) = extract(&gz(&t));
        assert!(
            matches!(r, Err(ExtractError::Refused(ref m)) if m.contains("..")),
            "{r:?}"
        );
        assert!(!dir.path().parent().unwrap().join("evil.txt").exists());
    }

    #[test]
    fn absolute_path_is_refused() {
        let t = tar_with(|b| raw_entry(b, "/tmp/evil.txt", tar::EntryType::Regular, None, b"x"));
        let (_d, r) = extract(&gz(&t));
        assert!(
            matches!(r, Err(ExtractError::Refused(ref m)) if m.contains("absolute")),
            "{r:?}"
        );
    }

    #[test]
    fn links_and_devices_are_refused() {
        for (kind, link) in [
            (tar::EntryType::Symlink, Some("/etc/passwd")),
            (tar::EntryType::Link, Some("a")),
            (tar::EntryType::Char, None),
            (tar::EntryType::Fifo, None),
        ] {
            let t = tar_with(|b| raw_entry(b, "x", kind, link, b""));
            let (dir, r) = extract(&gz(&t));
            assert!(
                matches!(r, Err(ExtractError::Refused(_))),
                "{kind:?}: {r:?}"
            );
            assert!(
                fs::symlink_metadata(dir.path().join("x")).is_err(),
                "{kind:?} left a file"
            );
        }
    }

    #[test]
    fn bad_gzip_and_empty_body_are_refused() {
        let (_d, r) = extract(b"{\"error\":\"open /tmp/results/x.tar.gz: no such file\"}");
        assert!(
            matches!(r, Err(ExtractError::Refused(ref m)) if m.contains("gzip")),
            "{r:?}"
        );
        let (_d, r) = extract(b"");
        assert!(
            matches!(r, Err(ExtractError::Refused(ref m)) if m.contains("empty body")),
            "{r:?}"
        );
    }

    #[test]
    fn caps_are_enforced() {
        let t = tar_with(|b| {
            file(b, "a", &[0u8; 100]);
            file(b, "b", &[0u8; 100]);
        });
        let dir = tempfile::tempdir().unwrap();
        let small = Limits {
            max_file_bytes: 50,
            ..Limits::default()
        };
        assert!(matches!(
            extract_tar_gz(&gz(&t)[..], dir.path(), &small),
            Err(ExtractError::TooLarge(_))
        ));
        let dir = tempfile::tempdir().unwrap();
        let few = Limits {
            max_entries: 1,
            ..Limits::default()
        };
        assert!(matches!(
            extract_tar_gz(&gz(&t)[..], dir.path(), &few),
            Err(ExtractError::TooLarge(_))
        ));
        let dir = tempfile::tempdir().unwrap();
        let total = Limits {
            max_extracted_bytes: 150,
            ..Limits::default()
        };
        assert!(matches!(
            extract_tar_gz(&gz(&t)[..], dir.path(), &total),
            Err(ExtractError::TooLarge(_))
        ));
    }

    #[test]
    fn truncated_archive_is_refused() {
        let t = tar_with(|b| file(b, "a", &[7u8; 4096]));
        let body = gz(&t[..1024]);
        let (_d, r) = extract(&body);
        assert!(matches!(r, Err(ExtractError::Refused(_))), "{r:?}");
    }
}
