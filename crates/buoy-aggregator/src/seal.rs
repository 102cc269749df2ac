//! Sealing a run (compat §6.3 steps 12-15): writing `meta/config.json` and `meta/info.json`,
//! then the tarball `<YYYYMMDDHHMM>_sonobuoy_<UUID>.tar.gz` beside the run directory. Entry
//! names are relative to the run directory with no `./` prefix. Gzip blocks are compressed on
//! every core; the SHA-256 is computed while the file is written (one pass), and the file
//! appears under its final name only once complete.

use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use buoy_wire::TarInfo;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

/// The tarball's file name for a run started at `started`.
pub fn tarball_name(started: OffsetDateTime, uuid: &str) -> String {
    let t = started.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}{:02}{:02}{:02}{:02}_sonobuoy_{uuid}.tar.gz",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute()
    )
}

/// Writes `value` as JSON to `path` through a temporary file in `tmp_dir` (same file system,
/// outside the run directory, so no temporary name is ever seen beside the results).
pub fn write_json_atomic(path: &Path, value: &serde_json::Value, tmp_dir: &Path) -> io::Result<()> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent)?;
    }
    let base = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = tmp_dir.join(format!("{base}.tmp"));
    let mut f = File::create(&tmp)?;
    serde_json::to_writer(&mut f, value)?;
    f.sync_all()?;
    fs::rename(&tmp, path)
}

struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    bytes: u64,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Writes `run_dir` into `dest_dir/name` and returns its tar-info.
pub fn write_tarball(
    run_dir: &Path,
    dest_dir: &Path,
    name: &str,
) -> io::Result<(PathBuf, TarInfo)> {
    use gzp::ZWriter;
    let final_path = dest_dir.join(name);
    let tmp = dest_dir.join(format!(".{name}.partial"));
    let file = File::create(&tmp)?;
    let hashing = HashingWriter {
        inner: BufWriter::new(file),
        hasher: Sha256::new(),
        bytes: 0,
    };
    // Blocks are compressed on every core (as pigz does) into one gzip stream, which a
    // separate thread writes and hashes in order: the walk, the compression and the hash
    // overlap.
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let gz: gzp::par::compress::ParCompress<'static, gzp::deflate::Gzip, _> =
        gzp::par::compress::ParCompressBuilder::new()
            .num_threads(threads)
            .map_err(io::Error::other)?
            .compression_level(gzp::Compression::default())
            .from_writer(hashing);
    let mut tar = tar::Builder::new(gz);
    tar.mode(tar::HeaderMode::Complete);
    // Buoy never writes links or special files into a run directory; none can be skipped.
    buoy_wire::archive::append_tree(&mut tar, run_dir, None)?;
    let mut gz = tar.into_inner()?;
    let mut hashing = gz.finish().map_err(io::Error::other)?;
    hashing.flush()?;
    let file = hashing.inner.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    let sha256 = hex::encode(hashing.hasher.finalize());
    fs::rename(&tmp, &final_path)?;
    if let Ok(d) = File::open(dest_dir) {
        let _ = d.sync_all();
    }
    let info = TarInfo {
        name: name.to_string(),
        created: buoy_wire::timefmt::now_rfc3339_nano(),
        sha256,
        size: hashing.bytes as i64,
    };
    Ok((final_path, info))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use time::macros::datetime;

    #[test]
    fn name_follows_sonobuoy() {
        assert_eq!(
            tarball_name(datetime!(2026-11-24 09:05:59 UTC), "abc"),
            "202611240905_sonobuoy_abc.tar.gz"
        );
    }

    #[test]
    fn tarball_has_relative_names_and_matching_sha() {
        let d = tempfile::tempdir().unwrap();
        let run = d.path().join("uuid");
        fs::create_dir_all(run.join("meta")).unwrap();
        fs::create_dir_all(run.join("plugins/p/results/n1")).unwrap();
        fs::write(run.join("meta/config.json"), b"{}").unwrap();
        fs::write(run.join("plugins/p/results/n1/result"), b"data").unwrap();
        let (path, info) = write_tarball(&run, d.path(), "x.tar.gz").unwrap();
        let bytes = fs::read(&path).unwrap();
        assert_eq!(info.sha256, hex::encode(Sha256::digest(&bytes)));
        assert_eq!(info.size as usize, bytes.len());
        let mut names = Vec::new();
        let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(&bytes[..]));
        for e in ar.entries().unwrap() {
            let mut e = e.unwrap();
            let name = e.path().unwrap().to_string_lossy().into_owned();
            if name == "meta/config.json" {
                let mut s = String::new();
                e.read_to_string(&mut s).unwrap();
                assert_eq!(s, "{}");
            }
            names.push(name);
        }
        assert!(names.contains(&"meta/config.json".to_string()), "{names:?}");
        assert!(
            names.contains(&"plugins/p/results/n1/result".to_string()),
            "{names:?}"
        );
        assert!(names
            .iter()
            .all(|n| !n.starts_with("./") && !n.starts_with('/')));
        assert!(!d.path().join(".x.tar.gz.partial").exists());
    }

    /// A tarball of many compression blocks (compressed in parallel) is one gzip stream that a
    /// single-member reader (Go's and ours), GNU tar and Python's tarfile all read whole.
    #[test]
    fn a_parallel_gzip_tarball_reads_whole_everywhere() {
        let d = tempfile::tempdir().unwrap();
        let run = d.path().join("uuid");
        let mut want = std::collections::BTreeMap::new();
        let mut x: u64 = 7;
        for i in 0..40 {
            let dir = run.join(format!("plugins/p/results/n{i:02}"));
            fs::create_dir_all(&dir).unwrap();
            // 200 KiB of half-random bytes per file: 8 MB in all, many blocks.
            let data: Vec<u8> = (0..200 << 10)
                .map(|j| {
                    x = x
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    if j % 2 == 0 {
                        (x >> 56) as u8
                    } else {
                        b'a'
                    }
                })
                .collect();
            fs::write(dir.join("r.bin"), &data).unwrap();
            want.insert(
                format!("plugins/p/results/n{i:02}/r.bin"),
                hex::encode(Sha256::digest(&data)),
            );
        }
        let (path, info) = write_tarball(&run, d.path(), "big.tar.gz").unwrap();
        assert_eq!(
            info.sha256,
            hex::encode(Sha256::digest(fs::read(&path).unwrap()))
        );

        let mut got = std::collections::BTreeMap::new();
        let f = File::open(&path).unwrap();
        let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(f));
        for e in ar.entries().unwrap() {
            let mut e = e.unwrap();
            let name = e.path().unwrap().to_string_lossy().into_owned();
            if name.ends_with("r.bin") {
                let mut b = Vec::new();
                e.read_to_end(&mut b).unwrap();
                got.insert(name, hex::encode(Sha256::digest(&b)));
            }
        }
        assert_eq!(
            got, want,
            "a single-member gzip reader saw a different tree"
        );

        let tar = std::process::Command::new("tar")
            .arg("-tzf")
            .arg(&path)
            .output();
        if let Ok(o) = tar {
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
            let listed = String::from_utf8_lossy(&o.stdout);
            assert_eq!(listed.lines().filter(|l| l.ends_with("r.bin")).count(), 40);
        }
        let py = std::process::Command::new("python3")
            .arg("-c")
            .arg("import sys,tarfile; t=tarfile.open(sys.argv[1]); print(sum(1 for m in t if m.name.endswith('r.bin') and len(t.extractfile(m).read()) == 204800))")
            .arg(&path)
            .output();
        if let Ok(o) = py {
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
            assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "40");
        }
    }
}
