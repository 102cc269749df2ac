//! Fetching a sealed run's tarball from an aggregator (`buoy retrieve`): the status names the
//! tarball, its size and SHA-256; the bytes come from `GET /api/v1/tarball` in ranges, each
//! appended to `.<name>.partial` beside the destination, so a broken connection (or a stopped
//! command) costs at most one range. The file gets its name only once its SHA-256 matches.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::{HeaderMap, HeaderValue, StatusCode};
use sha2::{Digest, Sha256};

use crate::client::{Client, ClientError};

/// Bytes asked for in one request: small enough to hold, large enough to keep the link busy.
pub const RANGE_BYTES: u64 = 8 << 20;
/// Failed requests in a row before giving up; a range that arrives resets the count.
pub const MAX_FAILURES: u32 = 8;

#[derive(Debug, thiserror::Error)]
pub enum RetrieveError {
    #[error("cannot read the run's status: {0}")]
    Status(String),
    #[error("the tarball is not ready: the run is {0}")]
    NotReady(String),
    #[error("{0}")]
    Transfer(String),
    #[error("the tarball's SHA-256 is {got}, but the run's status says {want}; the download was removed")]
    Checksum { got: String, want: String },
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> RetrieveError {
    let context = context.into();
    move |source| RetrieveError::Io { context, source }
}

/// What a finished retrieval left, for the caller to print.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retrieved {
    pub path: PathBuf,
    pub bytes: u64,
    pub sha256: String,
    /// Bytes that were already in a `.partial` file from an earlier attempt.
    pub resumed_from: u64,
    /// Requests that failed and were tried again.
    pub retries: u32,
}

/// How the transfer is going, for a progress bar: (bytes so far, total).
pub type OnProgress<'a> = &'a mut dyn FnMut(u64, u64);

/// Downloads the sealed tarball of the aggregator behind `client` into `dir`, `range_bytes`
/// per request ([`RANGE_BYTES`] unless testing).
pub async fn retrieve(
    client: &Client,
    dir: &Path,
    range_bytes: u64,
    on_progress: OnProgress<'_>,
) -> Result<Retrieved, RetrieveError> {
    let range_bytes = range_bytes.max(1);
    let status = read_status(client).await?;
    if status.status != buoy_wire::status::COMPLETE || status.tar_info.name.is_empty() {
        return Err(RetrieveError::NotReady(status.status));
    }
    let info = status.tar_info;
    // The name comes from the server: keep only a plain file name.
    let name = Path::new(&info.name)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .ok_or_else(|| RetrieveError::Status(format!("unusable tarball name {:?}", info.name)))?;
    let size = u64::try_from(info.size)
        .map_err(|_| RetrieveError::Status(format!("tarball size {}", info.size)))?;
    std::fs::create_dir_all(dir).map_err(io(format!("cannot create {}", dir.display())))?;
    let dest = dir.join(&name);
    let partial = dir.join(format!(".{name}.partial"));
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&partial)
        .map_err(io(format!("cannot open {}", partial.display())))?;
    let mut have = file
        .metadata()
        .map_err(io(format!("cannot read {}", partial.display())))?
        .len();
    if have > size {
        // Not this tarball's beginning: start again.
        file.set_len(0)
            .map_err(io(format!("cannot truncate {}", partial.display())))?;
        have = 0;
    }
    let resumed_from = have;
    let (mut failures, mut retries) = (0u32, 0u32);
    on_progress(have, size);
    while have < size {
        let end = (have + range_bytes).min(size) - 1;
        match fetch_range(client, have, end, size, &info.sha256).await {
            Ok(bytes) => {
                file.write_all(&bytes)
                    .map_err(io(format!("cannot write {}", partial.display())))?;
                have += bytes.len() as u64;
                failures = 0;
                on_progress(have, size);
            }
            Err(Attempt::Fatal(e)) => return Err(e),
            Err(Attempt::Again(e)) => {
                failures += 1;
                retries += 1;
                if failures >= MAX_FAILURES {
                    return Err(RetrieveError::Transfer(format!(
                        "gave up after {failures} failed requests in a row, at byte {have} of {size}: {e}"
                    )));
                }
                tracing::warn!(error = %e, at = have, "tarball range failed; trying again");
                tokio::time::sleep(Duration::from_millis(200 * u64::from(failures))).await;
            }
        }
    }
    file.sync_all()
        .map_err(io(format!("cannot sync {}", partial.display())))?;
    drop(file);
    let got = sha256_of(&partial)?;
    if got != info.sha256 {
        let _ = std::fs::remove_file(&partial);
        return Err(RetrieveError::Checksum {
            got,
            want: info.sha256,
        });
    }
    std::fs::rename(&partial, &dest).map_err(io(format!("cannot name {}", dest.display())))?;
    Ok(Retrieved {
        path: dest,
        bytes: size,
        sha256: got,
        resumed_from,
        retries,
    })
}

/// Largest full status read (about 95 bytes a key: 19 MB at 200,000 keys).
pub const MAX_STATUS_BYTES: usize = 256 << 20;

async fn read_status(client: &Client) -> Result<buoy_wire::Status, RetrieveError> {
    let reply = client
        .get_whole(
            buoy_wire::routes::STATUS,
            HeaderMap::new(),
            MAX_STATUS_BYTES,
        )
        .await
        .map_err(|e| RetrieveError::Status(e.to_string()))?;
    if !reply.status.is_success() {
        return Err(RetrieveError::Status(format!(
            "answered {}: {}",
            reply.status,
            reply.text()
        )));
    }
    serde_json::from_slice(&reply.body)
        .map_err(|e| RetrieveError::Status(format!("the status does not decode: {e}")))
}

enum Attempt {
    /// Worth another try (the connection broke, the server was briefly unavailable).
    Again(String),
    Fatal(RetrieveError),
}

async fn fetch_range(
    client: &Client,
    start: u64,
    end: u64,
    size: u64,
    sha256: &str,
) -> Result<bytes::Bytes, Attempt> {
    let mut headers = HeaderMap::new();
    let range = HeaderValue::from_str(&format!("bytes={start}-{end}")).expect("ascii");
    headers.insert(http::header::RANGE, range);
    let want = (end - start + 1) as usize;
    let reply = match client
        .get_whole(buoy_wire::routes::TARBALL, headers, want)
        .await
    {
        Ok(r) => r,
        Err(e @ ClientError::Url(..)) | Err(e @ ClientError::Other(_)) => {
            return Err(Attempt::Fatal(RetrieveError::Transfer(e.to_string())))
        }
        Err(e) => return Err(Attempt::Again(e.to_string())),
    };
    match reply.status {
        StatusCode::PARTIAL_CONTENT => {}
        s if s.is_server_error() => return Err(Attempt::Again(format!("answered {s}"))),
        s => {
            return Err(Attempt::Fatal(RetrieveError::Transfer(format!(
                "asked for bytes {start}-{end}, answered {s}: {}",
                reply.text()
            ))))
        }
    }
    let header = |name: &str| {
        reply
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    };
    // A tarball sealed again under the same name would not be this one.
    if header("x-buoy-tarball-sha256") != sha256 {
        return Err(Attempt::Fatal(RetrieveError::Transfer(format!(
            "the server's tarball changed during the download (SHA-256 {:?}, expected {sha256})",
            header("x-buoy-tarball-sha256")
        ))));
    }
    let expected_range = format!("bytes {start}-{end}/{size}");
    if header("content-range") != expected_range || reply.body.len() != want {
        return Err(Attempt::Again(format!(
            "short range: {} bytes of {want}, content-range {:?}",
            reply.body.len(),
            header("content-range")
        )));
    }
    Ok(reply.body)
}

fn sha256_of(path: &Path) -> Result<String, RetrieveError> {
    let mut f = std::fs::File::open(path).map_err(io(format!("cannot read {}", path.display())))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f
            .read(&mut buf)
            .map_err(io(format!("cannot read {}", path.display())))?;
        if n == 0 {
            return Ok(hex::encode(h.finalize()));
        }
        h.update(&buf[..n]);
    }
}
