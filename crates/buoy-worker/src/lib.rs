//! Buoy's worker (compat §7, design "Worker"): reads the Sonobuoy worker env contract, waits
//! for the plugin's done file, uploads the named file (or a tarball of the named directory)
//! to the aggregator with retries that re-read the file each time, and relays the plugin's
//! progress updates from `http://localhost:$SONOBUOY_PROGRESS_PORT/progress`.

pub mod client;
pub mod relay;
pub mod retrieve;
pub mod upload;

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use client::{Client, ClientError};
pub use upload::{content_type_for, Delivery};

pub use buoy_wire::RESULT_DEADLINE_ENV;

/// How long a worker keeps trying when no deadline is given (Sonobuoy's default plugin
/// timeout is longer; an hour covers an aggregator's restarts without hiding a dead one).
pub const DEFAULT_RETRY_FOR: Duration = Duration::from_secs(3600);

/// Retries never stop sooner than this after the first attempt, even past the deadline: the
/// aggregator may still take the result (or answer 409, which counts as delivered).
const MIN_RETRY_FOR: Duration = Duration::from_secs(30);

/// How long to keep trying, given the deadline `d` (RFC 3339) and the time now.
fn retry_window(d: &str, now: std::time::SystemTime) -> Option<Duration> {
    let t = time::OffsetDateTime::parse(d.trim(), &time::format_description::well_known::Rfc3339)
        .ok()?;
    let until = std::time::SystemTime::from(t);
    Some(
        until
            .duration_since(now)
            .unwrap_or(Duration::ZERO)
            .max(MIN_RETRY_FOR),
    )
}

/// Whether the worker sends a Job's single result or one node's result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Global,
    SingleNode,
}

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("invalid worker configuration: {0}")]
    Config(String),
    #[error("TLS setup failed: {0}")]
    Tls(#[from] buoy_pki::PkiError),
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("result file {0} does not exist")]
    MissingResult(PathBuf),
    #[error("the aggregator refused the result ({status}): {body}")]
    Refused { status: u16, body: String },
    #[error("giving up after {attempts} attempts over {secs} s: {last}")]
    GaveUp {
        attempts: u32,
        secs: u64,
        last: String,
    },
}

/// Everything a worker needs; `from_env` reads it the way Sonobuoy's worker does.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub aggregator_url: String,
    pub node_name: String,
    pub results_dir: PathBuf,
    pub result_type: String,
    pub progress_port: u16,
    /// Where the relay listens; Sonobuoy listens on all interfaces.
    pub progress_bind: IpAddr,
    pub ca_cert: Option<String>,
    pub client_cert: Option<String>,
    pub client_key: Option<String>,
    /// `SONOBUOY_DONE_FILE_DELAY`: pause after the done file appears (v0.57 default 5 s).
    pub done_file_delay: Duration,
    pub poll_interval: Duration,
    /// How long after the first upload attempt to keep trying (5xx and transport errors),
    /// with a backoff doubling from `backoff` up to `max_backoff`, each wait jittered: an
    /// aggregator restarted within this window loses no result. `BUOY_RESULT_DEADLINE`
    /// (RFC 3339, the plugin's timeout, set by the aggregator) ends it at that time instead.
    pub retry_for: Duration,
    pub backoff: Duration,
    pub max_backoff: Duration,
    /// After SIGTERM, how long to keep waiting for the done file (Sonobuoy: 60 s).
    pub shutdown_grace: Duration,
}

impl WorkerConfig {
    /// Defaults for everything but the identity of the result and where to send it.
    pub fn new(
        aggregator_url: impl Into<String>,
        result_type: impl Into<String>,
        node_name: impl Into<String>,
        results_dir: impl Into<PathBuf>,
    ) -> Self {
        Self {
            aggregator_url: aggregator_url.into(),
            node_name: node_name.into(),
            results_dir: results_dir.into(),
            result_type: result_type.into(),
            progress_port: 8099,
            progress_bind: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            ca_cert: None,
            client_cert: None,
            client_key: None,
            done_file_delay: Duration::from_secs(5),
            poll_interval: Duration::from_secs(1),
            retry_for: DEFAULT_RETRY_FOR,
            backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(16),
            shutdown_grace: Duration::from_secs(60),
        }
    }

    /// Reads the v0.57 env contract (with the v0.18 fallbacks): `AGGREGATOR_URL`,
    /// `NODE_NAME`, `SONOBUOY_RESULTS_DIR` (else `RESULTS_DIR`, else `/tmp/sonobuoy/results`),
    /// `RESULT_TYPE`, `CA_CERT`, `CLIENT_CERT`, `CLIENT_KEY`, `SONOBUOY_PROGRESS_PORT`,
    /// `SONOBUOY_DONE_FILE_DELAY`.
    pub fn from_env() -> Result<Self, WorkerError> {
        Self::from_lookup(|k| std::env::var(k).ok().filter(|v| !v.is_empty()))
    }

    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, WorkerError> {
        let url = get("AGGREGATOR_URL").or_else(|| get("MASTER_URL"));
        let results_dir = get("SONOBUOY_RESULTS_DIR")
            .or_else(|| get("RESULTS_DIR"))
            .unwrap_or_else(|| "/tmp/sonobuoy/results".into());
        let result_type = get("RESULT_TYPE");
        let mut missing = Vec::new();
        if url.is_none() {
            missing.push("AGGREGATOR_URL");
        }
        if result_type.is_none() {
            missing.push("RESULT_TYPE");
        }
        if !missing.is_empty() {
            return Err(WorkerError::Config(format!(
                "missing environment variables: {}",
                missing.join(", ")
            )));
        }
        let mut cfg = Self::new(
            url.unwrap_or_default(),
            result_type.unwrap_or_default(),
            get("NODE_NAME").unwrap_or_default(),
            results_dir,
        );
        if let Some(p) = get("SONOBUOY_PROGRESS_PORT") {
            cfg.progress_port = p.parse().map_err(|_| {
                WorkerError::Config(format!("SONOBUOY_PROGRESS_PORT={p:?} is not a port"))
            })?;
        }
        if let Some(d) = get("SONOBUOY_DONE_FILE_DELAY") {
            cfg.done_file_delay = parse_go_duration(&d).ok_or_else(|| {
                WorkerError::Config(format!(
                    "SONOBUOY_DONE_FILE_DELAY={d:?} is not a duration like 5s"
                ))
            })?;
        }
        cfg.ca_cert = get("CA_CERT");
        cfg.client_cert = get("CLIENT_CERT");
        cfg.client_key = get("CLIENT_KEY");
        if let Some(d) = get(RESULT_DEADLINE_ENV) {
            cfg.retry_for = retry_window(&d, std::time::SystemTime::now()).ok_or_else(|| {
                WorkerError::Config(format!(
                    "{RESULT_DEADLINE_ENV}={d:?} is not an RFC 3339 time"
                ))
            })?;
        }
        Ok(cfg)
    }

    /// The HTTP client this configuration describes (mTLS when the URL is https).
    pub fn client(&self) -> Result<Client, WorkerError> {
        let tls = if self.aggregator_url.starts_with("https://") {
            match (&self.ca_cert, &self.client_cert, &self.client_key) {
                (Some(ca), Some(c), Some(k)) => Some(buoy_pki::client_config(ca, c, k)?),
                _ => {
                    return Err(WorkerError::Config(
                        "an https AGGREGATOR_URL needs CA_CERT, CLIENT_CERT and CLIENT_KEY".into(),
                    ))
                }
            }
        } else {
            None
        };
        Ok(Client::new(&self.aggregator_url, tls)?)
    }

    fn node_for(&self, mode: Mode) -> Result<Option<&str>, WorkerError> {
        match mode {
            Mode::Global => Ok(None),
            Mode::SingleNode if self.node_name.is_empty() => Err(WorkerError::Config(
                "single-node mode needs NODE_NAME".into(),
            )),
            Mode::SingleNode => Ok(Some(&self.node_name)),
        }
    }

    pub fn result_path(&self, mode: Mode) -> Result<String, WorkerError> {
        Ok(buoy_wire::routes::result_path(
            &self.result_type,
            self.node_for(mode)?,
        ))
    }

    pub fn progress_path(&self, mode: Mode) -> Result<String, WorkerError> {
        Ok(buoy_wire::routes::progress_path(
            &self.result_type,
            self.node_for(mode)?,
        ))
    }
}

/// Parses the Go durations plugins set in `SONOBUOY_DONE_FILE_DELAY` (`5s`, `500ms`, `1m30s`, `0`).
pub fn parse_go_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    if s == "0" {
        return Some(Duration::ZERO);
    }
    let mut total = 0f64;
    let mut rest = s;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_end == 0 {
            return None;
        }
        let n: f64 = rest[..num_end].parse().ok()?;
        rest = &rest[num_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let mult = match &rest[..unit_end] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        total += n * mult;
        rest = &rest[unit_end..];
    }
    Some(Duration::from_secs_f64(total))
}

/// Resolves the path a done file names. Sonobuoy's worker runs in `/` so a relative path means
/// `/path`; Buoy first tries it relative to the results directory, where plugins write.
pub fn resolve_result_path(results_dir: &Path, named: &str) -> PathBuf {
    let p = Path::new(named);
    if p.is_absolute() {
        return p.to_path_buf();
    }
    let in_results = results_dir.join(p);
    if in_results.exists() {
        in_results
    } else {
        Path::new("/").join(p)
    }
}

/// Runs the worker: relay up, wait for the done file, deliver. `shutdown` starts the grace
/// period after which waiting stops without a delivery.
pub async fn run(
    cfg: &WorkerConfig,
    mode: Mode,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<Delivery, WorkerError> {
    run_with_relay(cfg, mode, None, shutdown).await
}

/// [`run`], with the relay served on `relay` when given (bound by the caller before the plugin
/// started) instead of on `progress_bind:progress_port`.
pub async fn run_with_relay(
    cfg: &WorkerConfig,
    mode: Mode,
    relay: Option<tokio::net::TcpListener>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<Delivery, WorkerError> {
    let client = cfg.client()?;
    let path = cfg.progress_path(mode)?;
    let relay = match relay {
        Some(listener) => Some(relay::serve(listener, client.clone(), path)),
        None => relay::start(cfg.progress_bind, cfg.progress_port, client.clone(), path).await,
    };
    let result = upload::wait_and_send(cfg, mode, &client, shutdown).await;
    if let Some(r) = relay {
        r.abort();
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_contract_with_fallbacks() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        let c = WorkerConfig::from_lookup(env(&[
            ("AGGREGATOR_URL", "http://a:8080"),
            ("RESULT_TYPE", "e2e"),
        ]))
        .unwrap();
        assert_eq!(c.results_dir, PathBuf::from("/tmp/sonobuoy/results"));
        assert_eq!(c.progress_port, 8099);
        let c = WorkerConfig::from_lookup(env(&[
            ("MASTER_URL", "http://m"),
            ("RESULT_TYPE", "e2e"),
            ("RESULTS_DIR", "/r"),
        ]))
        .unwrap();
        assert_eq!(
            (c.aggregator_url.as_str(), c.results_dir.to_str().unwrap()),
            ("http://m", "/r")
        );
        let c = WorkerConfig::from_lookup(env(&[
            ("AGGREGATOR_URL", "http://new"),
            ("MASTER_URL", "http://old"),
            ("RESULT_TYPE", "e2e"),
            ("RESULTS_DIR", "/old"),
            ("SONOBUOY_RESULTS_DIR", "/new"),
            ("SONOBUOY_DONE_FILE_DELAY", "250ms"),
        ]))
        .unwrap();
        assert_eq!(
            (c.aggregator_url.as_str(), c.results_dir.to_str().unwrap()),
            ("http://new", "/new")
        );
        assert_eq!(c.done_file_delay, Duration::from_millis(250));
        let e = WorkerConfig::from_lookup(env(&[("RESULT_TYPE", "e2e")])).unwrap_err();
        assert!(e.to_string().contains("AGGREGATOR_URL"), "{e}");
    }

    #[test]
    fn the_deadline_sets_how_long_uploads_are_retried() {
        let now = std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        assert_eq!(
            retry_window("2027-01-15T08:10:00Z", now),
            Some(Duration::from_secs(600))
        );
        // Past (or nearly past) the deadline: a short window still, for a 409 or a late 200.
        assert_eq!(
            retry_window("2027-01-15T08:00:00Z", now),
            Some(MIN_RETRY_FOR)
        );
        assert_eq!(retry_window("soon", now), None);
        let get = |k: &str| match k {
            "AGGREGATOR_URL" => Some("http://a".to_string()),
            "RESULT_TYPE" => Some("e2e".to_string()),
            RESULT_DEADLINE_ENV => Some("not a time".to_string()),
            _ => None,
        };
        let e = WorkerConfig::from_lookup(get).unwrap_err();
        assert!(e.to_string().contains(RESULT_DEADLINE_ENV), "{e}");
    }

    #[test]
    fn go_durations() {
        assert_eq!(parse_go_duration("5s"), Some(Duration::from_secs(5)));
        assert_eq!(parse_go_duration("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_go_duration("0"), Some(Duration::ZERO));
        assert_eq!(parse_go_duration("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_go_duration("five"), None);
        assert_eq!(parse_go_duration("5"), None);
    }

    #[test]
    fn single_node_needs_a_node_name() {
        let c = WorkerConfig::new("http://a", "p", "", "/r");
        assert!(c.result_path(Mode::SingleNode).is_err());
        assert_eq!(
            c.result_path(Mode::Global).unwrap(),
            "/api/v1/results/global/p"
        );
    }
}
