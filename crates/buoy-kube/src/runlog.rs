//! `meta/run.log` (compat §6.3 step 3): every log line of an in-cluster run, as logrus's JSON
//! formatter writes it (`{"level":"info","msg":"…","time":"…"}` plus the event's fields, keys
//! sorted). The binary adds [`RunLog::layer`] to its subscriber once; the run opens the file
//! beside its run directory at start and moves it into `meta/` just before sealing, so lines
//! logged after that appear on stderr only (as in Sonobuoy).

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::Value;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::Context;

#[derive(Default)]
struct Inner {
    open: AtomicBool,
    file: Mutex<Option<(File, PathBuf)>>,
}

/// Where the run's log lines go while a run is open; cheap to clone.
#[derive(Clone, Default)]
pub struct RunLog(Arc<Inner>);

impl RunLog {
    /// The layer that copies every event into the open run log.
    pub fn layer(&self) -> RunLogLayer {
        RunLogLayer(self.clone())
    }

    /// Starts (or, after a restart, continues) the log at `path`.
    pub fn open(&self, path: &Path) -> io::Result<()> {
        let f = OpenOptions::new().create(true).append(true).open(path)?;
        *self.0.file.lock().expect("run log") = Some((f, path.to_path_buf()));
        self.0.open.store(true, Ordering::Release);
        Ok(())
    }

    /// Stops logging to the file and moves it to `dest`.
    pub fn close_into(&self, dest: &Path) -> io::Result<()> {
        self.0.open.store(false, Ordering::Release);
        let Some((f, path)) = self.0.file.lock().expect("run log").take() else {
            return Ok(());
        };
        drop(f);
        if let Some(parent) = dest.parent() {
            fs::create_dir_all(parent)?;
        }
        fs::rename(path, dest)
    }

    fn write_line(&self, line: &[u8]) {
        if let Some((f, _)) = self.0.file.lock().expect("run log").as_mut() {
            // One write per line, so a crash loses no line already logged.
            let _ = f.write_all(line);
        }
    }
}

/// The `tracing` layer of a [`RunLog`].
pub struct RunLogLayer(RunLog);

struct Fields(BTreeMap<String, Value>);

impl Fields {
    fn put(&mut self, field: &Field, v: Value) {
        let name = match field.name() {
            "message" => "msg".to_string(),
            // logrus keeps its own keys and moves a clashing field aside.
            n @ ("msg" | "level" | "time") => format!("fields.{n}"),
            n => n.to_string(),
        };
        self.0.insert(name, v);
    }
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.put(field, Value::String(format!("{value:?}")));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, Value::String(value.to_string()));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, value.into());
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, value.into());
    }
}

/// logrus's level names.
fn level(l: &Level) -> &'static str {
    match *l {
        Level::ERROR => "error",
        Level::WARN => "warning",
        Level::INFO => "info",
        Level::DEBUG => "debug",
        Level::TRACE => "trace",
    }
}

/// One event as a logrus JSON line, newline included.
fn format_event(event: &Event<'_>, now: time::OffsetDateTime) -> Vec<u8> {
    let mut fields = Fields(BTreeMap::new());
    event.record(&mut fields);
    let mut map = fields.0;
    map.entry("msg".into()).or_insert_with(|| "".into());
    map.insert("level".into(), level(event.metadata().level()).into());
    let t = now.replace_nanosecond(0).unwrap_or(now);
    map.insert("time".into(), buoy_wire::timefmt::rfc3339_nano(t).into());
    let mut line = serde_json::to_vec(&map).expect("JSON");
    line.push(b'\n');
    line
}

impl<S: Subscriber> tracing_subscriber::Layer<S> for RunLogLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        if self.0 .0.open.load(Ordering::Acquire) {
            self.0
                .write_line(&format_event(event, time::OffsetDateTime::now_utc()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt;

    #[test]
    fn events_become_logrus_json_lines_only_while_open_and_the_file_moves_into_meta() {
        let dir = tempfile::tempdir().unwrap();
        let log = RunLog::default();
        let subscriber = tracing_subscriber::registry().with(log.layer());
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!("before the run");
            log.open(&dir.path().join(".run.log")).unwrap();
            tracing::info!(plugin = "e2e", nodes = 3_u64, "plugin launched");
            tracing::warn!(msg = "clash", "careful");
            log.close_into(&dir.path().join("run/meta/run.log"))
                .unwrap();
            tracing::error!("after the seal");
        });
        let text = fs::read_to_string(dir.path().join("run/meta/run.log")).unwrap();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert_eq!(lines[0]["level"], "info");
        assert_eq!(lines[0]["msg"], "plugin launched");
        assert_eq!(lines[0]["plugin"], "e2e");
        assert_eq!(lines[0]["nodes"], 3);
        assert!(buoy_wire::timefmt::parse_rfc3339(lines[0]["time"].as_str().unwrap()).is_some());
        assert_eq!(lines[1]["level"], "warning");
        assert_eq!(lines[1]["msg"], "careful");
        assert_eq!(lines[1]["fields.msg"], "clash");
        // Keys sorted, as Go's encoding of a map writes them.
        let first = text.lines().next().unwrap();
        assert!(first.starts_with("{\"level\":"), "{first}");
        assert!(!dir.path().join(".run.log").exists());
    }
}
