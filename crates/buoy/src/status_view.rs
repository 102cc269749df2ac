//! How `buoy status` prints a run's status, in the spirit of `sonobuoy status` (compat §5.6):
//! a pivot table per (plugin, status, result), or a row per node with `--show-all`, each with a
//! progress column, then one line about the overall status.

use buoy_wire::status::{PluginStatus, Status, COMPLETE, FAILED, POST_PROCESSING, RUNNING};

fn progress_cell(p: &PluginStatus) -> String {
    let Some(pr) = &p.progress else {
        return String::new();
    };
    let failed = pr.failures.len() as i64;
    let mut s = format!("Passed:{:3}, Failed:{:3}", pr.completed, failed);
    let remaining = pr.total - pr.completed - failed;
    if remaining >= 0 && pr.total > 0 {
        s.push_str(&format!(", Remaining:{remaining:3}"));
    }
    s
}

fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.len());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}   ", w = widths[i]));
            }
        }
        s.trim_end().to_string() + "\n"
    };
    let mut out = line(header.to_vec());
    for r in rows {
        out.push_str(&line(r.iter().map(String::as_str).collect()));
    }
    out
}

/// The table (`show_all`: one row per entry) followed by the overall-status line.
pub fn render(s: &Status, show_all: bool) -> String {
    let entries: &[PluginStatus] = s.plugins.as_deref().unwrap_or_default();
    let mut out = if show_all {
        let rows: Vec<Vec<String>> = entries
            .iter()
            .map(|p| {
                vec![
                    p.plugin.clone(),
                    p.node.clone(),
                    p.status.clone(),
                    p.result_status.clone(),
                    progress_cell(p),
                ]
            })
            .collect();
        table(&["PLUGIN", "NODE", "STATUS", "RESULT", "PROGRESS"], &rows)
    } else {
        // COUNT is of nodes: a rolled-up row (`2952 nodes`) stands for many.
        let mut groups: Vec<(&PluginStatus, u64)> = Vec::new();
        for p in entries {
            match groups.iter_mut().find(|(g, _)| {
                g.plugin == p.plugin && g.status == p.status && g.result_status == p.result_status
            }) {
                Some(g) => g.1 += p.nodes(),
                None => groups.push((p, p.nodes())),
            }
        }
        let rows: Vec<Vec<String>> = groups
            .iter()
            .map(|(p, n)| {
                let single = entries
                    .iter()
                    .filter(|e| e.plugin == p.plugin)
                    .map(PluginStatus::nodes)
                    .sum::<u64>()
                    == 1;
                vec![
                    p.plugin.clone(),
                    p.status.clone(),
                    p.result_status.clone(),
                    n.to_string(),
                    if single {
                        progress_cell(p)
                    } else {
                        String::new()
                    },
                ]
            })
            .collect();
        table(&["PLUGIN", "STATUS", "RESULT", "COUNT", "PROGRESS"], &rows)
    };
    out.push('\n');
    let interrupted = s.interrupted.as_ref().map(|why| {
        format!(
            "The run was interrupted before every result arrived: {why}. What it stored is kept."
        )
    });
    let interrupted = interrupted.or_else(|| {
        s.seal_error.as_ref().map(|why| {
            format!("Every plugin has finished, but sealing the results failed: {why}. The aggregator keeps trying; every result is kept.")
        })
    });
    out.push_str(match (s.status.as_str(), &interrupted) {
        (_, Some(text)) => text,
        (RUNNING, _) => "The run is in progress; plugins are still delivering results.",
        (POST_PROCESSING, _) => "Every plugin has finished; the results are being prepared.",
        (COMPLETE, _) => "The run is complete; its results tarball is ready to retrieve.",
        (FAILED, _) => "The aggregator failed; see its logs.",
        _ => "The run's status is unknown.",
    });
    if s.status == COMPLETE && !s.tar_info.name.is_empty() {
        out.push_str(&format!(
            "\nTarball: {} ({} bytes, sha256 {})",
            s.tar_info.name, s.tar_info.size, s.tar_info.sha256
        ));
    }
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use buoy_wire::ProgressUpdate;

    fn entry(plugin: &str, node: &str, status: &str) -> PluginStatus {
        PluginStatus::new(plugin, node, status)
    }

    #[test]
    fn the_default_view_pivots_and_shows_progress_for_single_entry_plugins() {
        let mut e2e = entry("e2e", "global", RUNNING);
        e2e.progress = Some(ProgressUpdate {
            total: 10,
            completed: 4,
            failures: vec!["t1".into()],
            ..Default::default()
        });
        let s = Status {
            plugins: Some(vec![
                e2e,
                entry("logs", "a", COMPLETE),
                entry("logs", "b", COMPLETE),
                entry("logs", "c", FAILED),
            ]),
            status: RUNNING.into(),
            tar_info: Default::default(),
            interrupted: None,
            seal_error: None,
        };
        let out = render(&s, false);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], "PLUGIN   STATUS     RESULT   COUNT   PROGRESS");
        assert_eq!(
            lines[1],
            "e2e      running             1       Passed:  4, Failed:  1, Remaining:  5"
        );
        assert_eq!(lines[2], "logs     complete            2");
        assert_eq!(lines[3], "logs     failed              1");
        assert!(out.contains("in progress"));
        let all = render(&s, true);
        assert!(!all.contains("COUNT"));
        assert!(
            all.lines()
                .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["logs", "c", "failed"]),
            "{all}"
        );
    }

    #[test]
    fn rolled_up_rows_count_the_nodes_they_stand_for() {
        let mut rolled = entry("logs", "2952 nodes", COMPLETE);
        rolled.progress = Some(ProgressUpdate {
            total: 2952,
            completed: 2952,
            ..Default::default()
        });
        let s = Status {
            plugins: Some(vec![
                rolled,
                entry("logs", "n-bad", FAILED),
                entry("logs", "48 nodes", RUNNING),
                entry("e2e", "global", RUNNING),
            ]),
            status: RUNNING.into(),
            tar_info: Default::default(),
            interrupted: None,
            seal_error: None,
        };
        let out = render(&s, false);
        let rows: Vec<Vec<&str>> = out
            .lines()
            .skip(1)
            .take(4)
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert_eq!(rows[0], ["logs", "complete", "2952"], "{out}");
        assert_eq!(rows[1], ["logs", "failed", "1"], "{out}");
        assert_eq!(rows[2], ["logs", "running", "48"], "{out}");
        assert_eq!(rows[3], ["e2e", "running", "1"], "{out}");
    }

    #[test]
    fn an_interrupted_run_says_so_and_why() {
        let s = Status {
            plugins: Some(vec![entry("e2e", "global", RUNNING)]),
            status: FAILED.into(),
            tar_info: Default::default(),
            interrupted: Some("asked to stop".into()),
            seal_error: None,
        };
        let out = render(&s, false);
        assert!(
            out.trim_end().ends_with("The run was interrupted before every result arrived: asked to stop. What it stored is kept."),
            "{out}"
        );
    }

    #[test]
    fn a_failing_seal_says_why_and_that_it_is_retried() {
        let s = Status {
            plugins: Some(vec![entry("e2e", "global", "complete")]),
            status: POST_PROCESSING.into(),
            tar_info: Default::default(),
            interrupted: None,
            seal_error: Some("cannot write the results tarball: No space left on device".into()),
        };
        let out = render(&s, false);
        assert!(
            out.contains("sealing the results failed: cannot write the results tarball: No space left on device. The aggregator keeps trying"),
            "{out}"
        );
    }
}
