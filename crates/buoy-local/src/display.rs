//! Live progress in the terminal, one bar per plugin (results received of expected, the
//! plugin's test progress and its newest message), or a plain line per change when stderr is
//! not a terminal or bars are turned off. `buoy run` and `buoy status --watch` both draw
//! through [`PluginBars`] and [`plain_line`].

use std::collections::HashMap;
use std::sync::Arc;

use buoy_aggregator::Aggregator;
use buoy_wire::overview::{Overview, PluginOverview};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// What a plugin's bar or line says after its counts.
fn describe(p: &PluginOverview) -> String {
    let mut parts = Vec::new();
    if p.remaining == 0 {
        parts.push(if p.failed > 0 {
            format!("✗ {} failed", p.failed)
        } else {
            "✓ complete".to_string()
        });
    } else if p.failed > 0 {
        parts.push(format!("{} failed", p.failed));
    }
    if let Some(g) = &p.progress {
        if g.total > 0 {
            parts.push(format!("tests {}/{}", g.completed, g.total));
        } else if g.completed > 0 || g.failures > 0 {
            // Ginkgo's reporter (Kubernetes e2e) sends no total: what ran, passed and failed.
            parts.push(format!(
                "{} run, {} passed",
                g.completed.saturating_add(g.failures as i64),
                g.completed
            ));
        }
        if g.failures > 0 {
            let mut s = format!("{} failing", g.failures);
            if let Some(first) = g.failing.first() {
                s.push_str(&format!(": {first}"));
                let more = g.failures.saturating_sub(1);
                if more > 0 {
                    s.push_str(&format!(" (+{more})"));
                }
            }
            parts.push(s);
        }
        if !g.msg.is_empty() {
            parts.push(g.msg.clone());
        }
    }
    parts.join(" · ")
}

/// One plain line for a plugin: `hello-e2e: 0/1 results · tests 2/4 · ran: x`.
pub fn plain_line(p: &PluginOverview) -> String {
    let d = describe(p);
    let counts = format!(
        "{}: {}/{} results",
        p.plugin,
        p.complete + p.failed,
        p.expected
    );
    if d.is_empty() {
        counts
    } else {
        format!("{counts} · {d}")
    }
}

/// A bar per plugin on stderr, added as plugins first appear.
pub struct PluginBars {
    multi: MultiProgress,
    style: ProgressStyle,
    bars: Vec<(String, ProgressBar)>,
}

impl Default for PluginBars {
    fn default() -> Self {
        Self::new()
    }
}

impl PluginBars {
    pub fn new() -> Self {
        let style = ProgressStyle::with_template(
            "{prefix:.bold} [{bar:24.green/blue}] {pos:>4}/{len:<4} {wide_msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
        Self {
            multi: MultiProgress::with_draw_target(ProgressDrawTarget::stderr()),
            style,
            bars: Vec::new(),
        }
    }

    pub fn update(&mut self, o: &Overview) {
        let width = o.plugins.iter().map(|p| p.plugin.len()).max().unwrap_or(0);
        for p in &o.plugins {
            let bar = match self.bars.iter().find(|(n, _)| *n == p.plugin) {
                Some((_, b)) => b.clone(),
                None => {
                    let b = self.multi.add(ProgressBar::new(p.expected.max(1)));
                    b.set_style(self.style.clone());
                    self.bars.push((p.plugin.clone(), b.clone()));
                    b
                }
            };
            bar.set_prefix(format!("{:<width$}", p.plugin));
            bar.set_length(p.expected.max(1));
            bar.set_position(p.complete + p.failed);
            bar.set_message(describe(p));
        }
    }

    /// Leaves the bars drawn as they last were.
    pub fn finish(&self) {
        for (_, b) in &self.bars {
            b.finish();
        }
    }
}

/// Prints, as `buoy: <line>`, each plugin whose line changed since the last call.
#[derive(Default)]
pub struct PlainLines {
    last: HashMap<String, String>,
}

impl PlainLines {
    pub fn update(&mut self, o: &Overview) {
        for p in &o.plugins {
            let line = plain_line(p);
            if self.last.get(&p.plugin) != Some(&line) {
                eprintln!("buoy: {line}");
                self.last.insert(p.plugin.clone(), line);
            }
        }
    }
}

/// Follows a local run's aggregator until stopped.
pub struct Display {
    task: tokio::task::JoinHandle<()>,
    bars: Option<Arc<std::sync::Mutex<PluginBars>>>,
    agg: Arc<Aggregator>,
}

impl Display {
    pub fn new(agg: &Arc<Aggregator>, live: bool) -> Self {
        let mut rx = agg.subscribe();
        let agg2 = agg.clone();
        let bars = live.then(|| Arc::new(std::sync::Mutex::new(PluginBars::new())));
        let bars2 = bars.clone();
        let task = tokio::spawn(async move {
            let mut lines = PlainLines::default();
            loop {
                let o = agg2.overview();
                match &bars2 {
                    Some(b) => b.lock().expect("bars").update(&o),
                    None => lines.update(&o),
                }
                if rx.changed().await.is_err() {
                    return;
                }
            }
        });
        Self {
            task,
            bars,
            agg: agg.clone(),
        }
    }

    /// Draws the final state once more and leaves it on screen.
    pub fn stop(self) {
        self.task.abort();
        if let Some(b) = self.bars {
            let mut b = b.lock().expect("bars");
            b.update(&self.agg.overview());
            b.finish();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use buoy_wire::overview::ProgressSummary;

    fn e2e(progress: ProgressSummary) -> PluginOverview {
        PluginOverview {
            plugin: "e2e".into(),
            expected: 1,
            remaining: 1,
            progress: Some(progress),
            ..Default::default()
        }
    }

    #[test]
    fn ginkgo_progress_without_a_total_shows_what_ran_passed_and_failed_by_name() {
        let line = plain_line(&e2e(ProgressSummary {
            completed: 40,
            failures: 2,
            failing: vec!["[sig-x] breaks".into(), "[sig-y] too".into()],
            msg: "PASSED [sig-z] fine".into(),
            ..Default::default()
        }));
        assert_eq!(
            line,
            "e2e: 0/1 results · 42 run, 40 passed · 2 failing: [sig-x] breaks (+1) · PASSED [sig-z] fine"
        );
        let line = plain_line(&e2e(ProgressSummary {
            completed: 3,
            total: 10,
            ..Default::default()
        }));
        assert_eq!(line, "e2e: 0/1 results · tests 3/10");
    }
}
