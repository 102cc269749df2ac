//! Waiting for the done file and sending the result (compat §7.3, v0.57 contract): the done
//! file names a file, or a directory that is tarred and gzipped first; the upload streams from
//! disk and is retried on 5xx, 408 and transport errors (a jittered backoff, doubling up to a
//! cap) for as long as the plugin's deadline allows, re-opening the file each time instead of
//! holding it in memory; 409 counts as delivered.

use std::fs::File;
use std::path::{Path, PathBuf};

use futures_util::TryStreamExt;
use http::{HeaderMap, HeaderValue, Method};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use tokio_util::io::ReaderStream;

use crate::client::{Body, Client};
use crate::{resolve_result_path, Mode, WorkerConfig, WorkerError};

/// How a worker run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// The aggregator stored the result (200).
    Stored { attempts: u32 },
    /// The aggregator already had a result for the key (409); counted as delivered.
    AlreadyReceived,
    /// Shutdown came before the plugin signalled a result.
    NotDelivered,
}

/// The content type a Go worker sends for a file name (Go's `mime.TypeByExtension` for the
/// types that matter; `.gz` is the one the aggregator acts on). Unknown extensions get none.
pub fn content_type_for(path: &Path) -> Option<&'static str> {
    let ext = path.extension()?.to_str()?.to_ascii_lowercase();
    Some(match ext.as_str() {
        "gz" => "application/gzip",
        "xml" => "text/xml; charset=utf-8",
        "json" => "application/json",
        "txt" => "text/plain; charset=utf-8",
        "html" | "htm" => "text/html; charset=utf-8",
        "tar" => "application/x-tar",
        "zip" => "application/zip",
        _ => return None,
    })
}

/// Tars and gzips `dir` into `dir/results.tar.gz` (excluding that file), returning its path.
/// Links are skipped: the aggregator accepts only files and directories.
pub fn tar_directory(dir: &Path) -> Result<PathBuf, WorkerError> {
    let out = dir.join("results.tar.gz");
    let io = |source| WorkerError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let f = File::create(&out).map_err(io)?;
    let gz = flate2::write::GzEncoder::new(f, flate2::Compression::default());
    let mut tar = tar::Builder::new(gz);
    for path in buoy_wire::archive::append_tree(&mut tar, dir, Some(&out)).map_err(io)? {
        tracing::warn!(path = %path.display(), "skipping a link or special file in the results directory");
    }
    let gz = tar.into_inner().map_err(io)?;
    gz.finish().map_err(io)?.sync_all().map_err(io)?;
    Ok(out)
}

async fn file_body(path: &Path) -> Result<Body, WorkerError> {
    let f = tokio::fs::File::open(path)
        .await
        .map_err(|source| WorkerError::Io {
            path: path.to_path_buf(),
            source,
        })?;
    let stream = ReaderStream::with_capacity(f, 64 * 1024).map_ok(Frame::data);
    Ok(StreamBody::new(stream).boxed())
}

/// Sends one file as the worker's result, retrying on 5xx, 408 and transport errors for as
/// long as `cfg.retry_for` allows.
pub async fn send_file(
    cfg: &WorkerConfig,
    mode: Mode,
    client: &Client,
    path: &Path,
) -> Result<Delivery, WorkerError> {
    let url_path = cfg.result_path(mode)?;
    let mut headers = HeaderMap::new();
    if let Some(ct) = content_type_for(path) {
        headers.insert(http::header::CONTENT_TYPE, HeaderValue::from_static(ct));
    }
    let filename = path.file_name().and_then(|n| n.to_str());
    let disposition = buoy_wire::disposition::header_for(filename);
    if let Ok(v) = HeaderValue::from_str(&disposition) {
        headers.insert(http::header::CONTENT_DISPOSITION, v);
    }
    let started = tokio::time::Instant::now();
    let until = started + cfg.retry_for;
    let mut delay = cfg.backoff;
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        let body = file_body(path).await?;
        let last = match client
            .send(Method::PUT, &url_path, headers.clone(), body)
            .await
        {
            Ok(r) if r.status == http::StatusCode::OK => {
                tracing::info!(path = %path.display(), attempt, "result delivered");
                return Ok(Delivery::Stored { attempts: attempt });
            }
            Ok(r) if r.status == http::StatusCode::CONFLICT => {
                tracing::info!(body = %r.text(), "the aggregator already has this result (409); counting it as delivered");
                return Ok(Delivery::AlreadyReceived);
            }
            Ok(r)
                if r.status.is_server_error() || r.status == http::StatusCode::REQUEST_TIMEOUT =>
            {
                format!("{}: {}", r.status, r.text())
            }
            Ok(r) => {
                return Err(WorkerError::Refused {
                    status: r.status.as_u16(),
                    body: r.text(),
                })
            }
            Err(e) if e.is_transport() => e.to_string(),
            Err(e) => return Err(e.into()),
        };
        // Jittered, so workers that lost the same aggregator do not all come back at once.
        let wait = delay.mul_f64(rand::random_range(0.5..1.5));
        if tokio::time::Instant::now() + wait > until {
            return Err(WorkerError::GaveUp {
                attempts: attempt,
                secs: started.elapsed().as_secs(),
                last,
            });
        }
        tracing::warn!(attempt, retry_in = ?wait, error = %last, "upload failed; will retry");
        tokio::time::sleep(wait).await;
        delay = (delay * 2).min(cfg.max_backoff);
    }
}

/// Reads the done file if it is there: `Some(named path)`.
fn read_done(done: &Path) -> Option<String> {
    std::fs::read_to_string(done)
        .ok()
        .map(|s| s.trim().to_string())
}

/// Waits for `<results_dir>/done`, then sends what it names.
pub async fn wait_and_send(
    cfg: &WorkerConfig,
    mode: Mode,
    client: &Client,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<Delivery, WorkerError> {
    let done = cfg.results_dir.join("done");
    tracing::info!(done = %done.display(), "waiting for the plugin's done file");
    tokio::pin!(shutdown);
    let mut stop_at: Option<tokio::time::Instant> = None;
    let named = loop {
        if done.exists() {
            if !cfg.done_file_delay.is_zero() {
                tokio::time::sleep(cfg.done_file_delay).await;
            }
            // A sidecar may have removed it meanwhile: then keep waiting.
            if let Some(n) = read_done(&done) {
                break n;
            }
        }
        if stop_at.is_some_and(|t| tokio::time::Instant::now() >= t) {
            tracing::warn!("did not receive plugin results in time; stopping");
            return Ok(Delivery::NotDelivered);
        }
        tokio::select! {
            _ = tokio::time::sleep(cfg.poll_interval) => {}
            _ = &mut shutdown, if stop_at.is_none() => {
                tracing::info!(grace = ?cfg.shutdown_grace, "shutdown requested; still waiting for the done file during the grace period");
                stop_at = Some(tokio::time::Instant::now() + cfg.shutdown_grace);
            }
        }
    };
    let path = resolve_result_path(&cfg.results_dir, &named);
    let meta = std::fs::metadata(&path).map_err(|_| WorkerError::MissingResult(path.clone()))?;
    let to_send = if meta.is_dir() {
        let p = path.clone();
        tokio::task::spawn_blocking(move || tar_directory(&p))
            .await
            .map_err(|e| WorkerError::Io {
                path: path.clone(),
                source: std::io::Error::other(e),
            })??
    } else {
        path
    };
    send_file(cfg, mode, client, &to_send).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types_follow_go() {
        assert_eq!(
            content_type_for(Path::new("r.tar.gz")),
            Some("application/gzip")
        );
        assert_eq!(
            content_type_for(Path::new("junit.xml")),
            Some("text/xml; charset=utf-8")
        );
        assert_eq!(
            content_type_for(Path::new("x.json")),
            Some("application/json")
        );
        assert_eq!(content_type_for(Path::new("noext")), None);
    }

    #[test]
    fn directory_is_tarred_without_its_own_archive() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("sub")).unwrap();
        std::fs::write(d.path().join("sub/a.txt"), b"a").unwrap();
        std::fs::write(d.path().join("b.xml"), b"<x/>").unwrap();
        let out = tar_directory(d.path()).unwrap();
        let out2 = tar_directory(d.path()).unwrap();
        assert_eq!(out, out2);
        let f = File::open(&out).unwrap();
        let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(f));
        let names: Vec<String> = ar
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["b.xml", "sub", "sub/a.txt"]);
    }

    #[test]
    fn relative_done_paths_prefer_the_results_dir() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("r.txt"), b"").unwrap();
        assert_eq!(
            resolve_result_path(d.path(), "r.txt"),
            d.path().join("r.txt")
        );
        assert_eq!(
            resolve_result_path(d.path(), "nope"),
            PathBuf::from("/nope")
        );
        assert_eq!(resolve_result_path(d.path(), "/abs"), PathBuf::from("/abs"));
    }
}
