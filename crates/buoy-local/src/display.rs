//! Live progress of a local run: a line per plugin instance with its status and latest
//! progress update, drawn as progress bars on a terminal or printed as plain lines otherwise.

use std::collections::HashMap;
use std::sync::Arc;

use buoy_aggregator::Aggregator;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

pub struct Display {
    task: tokio::task::JoinHandle<()>,
    bars: Option<(MultiProgress, Vec<ProgressBar>)>,
}

fn describe(p: &buoy_wire::PluginStatus) -> String {
    let mut s = p.status.clone();
    if let Some(pr) = &p.progress {
        if pr.total > 0 {
            s.push_str(&format!(" {}/{}", pr.completed, pr.total));
        }
        if !pr.failures.is_empty() {
            s.push_str(&format!(" ({} failing)", pr.failures.len()));
        }
        if !pr.msg.is_empty() {
            s.push_str(&format!(" {}", pr.msg));
        }
    }
    s
}

impl Display {
    pub fn new(agg: &Arc<Aggregator>, live: bool) -> Self {
        let status = agg.status();
        let entries = status.plugins.unwrap_or_default();
        let mut rx = agg.subscribe();
        let agg = agg.clone();
        if live {
            let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
            let style = ProgressStyle::with_template("{prefix:.bold} [{bar:20.cyan/blue}] {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> ");
            let width = entries
                .iter()
                .map(|p| p.plugin.len() + p.node.len() + 1)
                .max()
                .unwrap_or(0);
            let bars: Vec<ProgressBar> = entries
                .iter()
                .map(|p| {
                    let b = multi.add(ProgressBar::new(1));
                    b.set_style(style.clone());
                    b.set_prefix(format!("{:<width$}", format!("{}/{}", p.plugin, p.node)));
                    b.set_message("running");
                    b
                })
                .collect();
            let bars2 = bars.clone();
            let task = tokio::spawn(async move {
                loop {
                    for (b, p) in bars2.iter().zip(agg.status().plugins.unwrap_or_default()) {
                        let (done, total) = match &p.progress {
                            Some(pr) if pr.total > 0 => {
                                (pr.completed.max(0) as u64, pr.total as u64)
                            }
                            _ => (u64::from(p.status != "running"), 1),
                        };
                        b.set_length(total.max(1));
                        b.set_position(if p.status == "running" {
                            done
                        } else {
                            total.max(1)
                        });
                        b.set_message(describe(&p));
                    }
                    if rx.changed().await.is_err() {
                        return;
                    }
                }
            });
            Self {
                task,
                bars: Some((multi, bars)),
            }
        } else {
            let task = tokio::spawn(async move {
                let mut last: HashMap<String, String> = HashMap::new();
                loop {
                    for p in agg.status().plugins.unwrap_or_default() {
                        let key = format!("{}/{}", p.plugin, p.node);
                        let line = describe(&p);
                        if last.get(&key) != Some(&line) {
                            eprintln!("buoy: {key}: {line}");
                            last.insert(key, line);
                        }
                    }
                    if rx.changed().await.is_err() {
                        return;
                    }
                }
            });
            Self { task, bars: None }
        }
    }

    pub fn stop(self) {
        self.task.abort();
        if let Some((_m, bars)) = self.bars {
            for b in bars {
                b.finish();
            }
        }
    }
}
