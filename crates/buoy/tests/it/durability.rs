//! Every 200 is durable, proven from the system calls: a real `buoy aggregator` runs under
//! strace while `buoy bench` uploads plain and tarball results, and for every acknowledged
//! result the trace must show either its journal record written and that file synced before
//! the 200 was written to its connection (small plain results), or its data synced before its
//! rename and the rename synced before the 200 (streamed ones). (A `kill -9` test cannot show
//! this: the page cache outlives the process.) Linux with strace; CI installs it and sets
//! `BUOY_REQUIRE_STRACE`.

use std::collections::HashMap;
use std::process::Stdio;

use buoy_bench::{node_name, BenchConfig};
use tokio::io::AsyncBufReadExt;

use crate::*;

fn strace() -> Option<&'static str> {
    let found = std::process::Command::new("strace")
        .arg("-V")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    match found {
        true => Some("strace"),
        false if std::env::var_os("BUOY_REQUIRE_STRACE").is_some() => {
            panic!("BUOY_REQUIRE_STRACE is set but strace cannot run")
        }
        false => None,
    }
}

/// One finished system call: its name, argument text, return value, and the trace lines where
/// it started and ended (strace writes lines in the order it sees events).
#[derive(Debug, Clone)]
struct Call {
    name: String,
    args: String,
    ret: String,
    start: usize,
    end: usize,
}

fn parse(trace: &str) -> Vec<Call> {
    let mut pending: HashMap<String, (String, String, usize)> = HashMap::new();
    let mut calls = Vec::new();
    for (i, line) in trace.lines().enumerate() {
        let Some((pid, rest)) = line.trim_start().split_once(char::is_whitespace) else {
            continue;
        };
        let rest = rest.trim_start();
        if let Some(r) = rest.strip_prefix("<... ") {
            let Some((name, tail)) = r.split_once(" resumed>") else {
                continue;
            };
            let Some((pname, args, start)) = pending.remove(pid) else {
                continue;
            };
            debug_assert_eq!(pname, name);
            let (more, ret) = tail.rsplit_once(" = ").unwrap_or((tail, ""));
            calls.push(Call {
                name: pname,
                args: args + more,
                ret: ret.trim().into(),
                start,
                end: i,
            });
            continue;
        }
        let Some((name, args)) = rest.split_once('(') else {
            continue;
        };
        if let Some(args) = args.strip_suffix(" <unfinished ...>") {
            pending.insert(pid.to_string(), (name.to_string(), args.to_string(), i));
            continue;
        }
        let (args, ret) = args.rsplit_once(" = ").unwrap_or((args, ""));
        calls.push(Call {
            name: name.into(),
            args: args.into(),
            ret: ret.trim().into(),
            start: i,
            end: i,
        });
    }
    calls.sort_by_key(|c| c.end);
    calls
}

/// The first argument as a file descriptor (`fdatasync(13)`'s argument text is `13)`).
fn fd_of(c: &Call) -> Option<i64> {
    let first = c.args.split(',').next()?.trim();
    first.split(')').next()?.trim().parse().ok()
}

/// The quoted strings of a call's arguments, in order.
fn strings(c: &Call) -> Vec<&str> {
    c.args.split('"').skip(1).step_by(2).collect()
}

/// `.../upload-N` of a path inside a staging directory.
fn upload_dir(path: &str) -> Option<&str> {
    let i = path.find("/upload-")?;
    let end = path[i + 1..]
        .find('/')
        .map(|j| i + 1 + j)
        .unwrap_or(path.len());
    Some(&path[..end])
}

/// The key (`plugin/node`) of a journal record whose header starts `s`:
/// `BUOYJ <crc> <target len> <name len> <data len>\n<target>...`, target
/// `plugins/<p>/results/<node>`.
fn journal_key(s: &str) -> Option<String> {
    let (head, rest) = s.strip_prefix("BUOYJ ")?.split_once("\\n")?;
    let target_len: usize = head.split(' ').nth(1)?.parse().ok()?;
    let parts: Vec<&str> = rest.get(..target_len)?.split('/').collect();
    match parts[..] {
        ["plugins", p, "results", node] => Some(format!("{p}/{node}")),
        _ => None,
    }
}

#[derive(Debug)]
struct Renamed {
    from: String,
    to: String,
    start: usize,
    end: usize,
}

#[tokio::test]
async fn every_acknowledged_result_is_synced_before_its_200() {
    let Some(strace) = strace() else {
        eprintln!("note: durability test skipped: no strace (apt-get install strace)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let trace_file = dir.path().join("trace.txt");
    let (plain, tarred) = (120, 40);
    let p_nodes: Vec<String> = (0..plain).map(node_name).collect();
    let t_nodes: Vec<String> = (0..tarred).map(node_name).collect();
    let mut child = tokio::process::Command::new(strace)
        // Strings long enough to show every record header of a journal write (one write of
        // the journal's buffer at most: 256 KiB).
        .args(["-f", "-qq", "-s", "300000", "-o"])
        .arg(&trace_file)
        .arg("-e")
        .arg("trace=accept4,openat,close,read,recvfrom,write,writev,pwrite64,sendto,sendmsg,rename,renameat,renameat2,syncfs,sync,fsync,fdatasync")
        .arg(env!("CARGO_BIN_EXE_buoy"))
        .args(["aggregator", "--insecure-http", "--bind", "127.0.0.1:0", "--output"])
        .arg(dir.path().join("out"))
        .arg(format!("--expect=p={}", p_nodes.join(",")))
        .arg(format!("--expect=t={}", t_nodes.join(",")))
        .env("BUOY_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let addr = within(async {
        loop {
            let l = lines
                .next_line()
                .await
                .unwrap()
                .expect("the aggregator exited");
            if let Some(rest) = l.split(" listening on ").nth(1) {
                return rest.split(';').next().unwrap().to_string();
            }
        }
    })
    .await;
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let url = format!("http://{addr}");
    let bench = |plugin: &str, nodes: usize, tar_files: usize| BenchConfig {
        url: url.clone(),
        nodes,
        node_plugins: vec![plugin.into()],
        size: 8 << 10,
        concurrency: 16,
        tar_files,
        ..Default::default()
    };
    let (a, b) = tokio::join!(
        buoy_bench::run(bench("p", plain, 0), |_, _| {}),
        buoy_bench::run(bench("t", tarred, 2), |_, _| {}),
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert!(a.all_ok() && b.all_ok(), "{a:?}\n{b:?}");
    // The run completes, seals and exits; the trace is whole once strace ends.
    let status = within(child.wait()).await.unwrap();
    assert!(status.success(), "{status:?}");

    let trace = std::fs::read_to_string(&trace_file).unwrap();
    let calls = parse(&trace);
    let mut sockets: std::collections::HashSet<i64> = Default::default();
    let mut paths: HashMap<i64, String> = HashMap::new();
    let mut last_write: HashMap<String, usize> = HashMap::new();
    let mut request: HashMap<i64, String> = HashMap::new();
    let mut acked: Vec<(String, usize)> = Vec::new();
    let mut renamed: HashMap<String, Renamed> = HashMap::new();
    // key -> (journal path, end of the write of its record)
    let mut journaled: HashMap<String, (String, usize)> = HashMap::new();
    // (path synced or None for the whole file system, start, end)
    let mut syncs: Vec<(Option<String>, usize, usize)> = Vec::new();
    for c in &calls {
        let ret: i64 = c
            .ret
            .split_whitespace()
            .next()
            .and_then(|r| r.parse().ok())
            .unwrap_or(-1);
        match c.name.as_str() {
            "accept4" if ret >= 0 => {
                sockets.insert(ret);
            }
            "openat" if ret >= 0 => {
                sockets.remove(&ret);
                if let Some(p) = strings(c).first() {
                    paths.insert(ret, p.to_string());
                }
            }
            "close" => {
                if let Some(fd) = fd_of(c) {
                    sockets.remove(&fd);
                    paths.remove(&fd);
                }
            }
            "read" | "recvfrom" => {
                let (Some(fd), Some(s)) = (fd_of(c), strings(c).first().copied()) else {
                    continue;
                };
                if let Some(rest) = s.strip_prefix("PUT /api/v1/results/by-node/") {
                    let mut it = rest.split([' ', '/']);
                    let (node, plugin) = (it.next().unwrap(), it.next().unwrap());
                    request.insert(fd, format!("{plugin}/{node}"));
                }
            }
            "write" | "writev" | "pwrite64" | "sendto" | "sendmsg" => {
                let Some(fd) = fd_of(c) else { continue };
                if sockets.contains(&fd) {
                    if c.args.contains("HTTP/1.1 200") {
                        if let Some(key) = request.remove(&fd) {
                            acked.push((key, c.start));
                        }
                    }
                } else if let Some(u) = paths.get(&fd).and_then(|p| upload_dir(p)) {
                    last_write.insert(u.to_string(), c.end);
                } else {
                    // One write carries a whole batch of records: every header in it counts.
                    let path = paths.get(&fd).cloned().unwrap_or_default();
                    for key in c
                        .args
                        .match_indices("BUOYJ ")
                        .filter_map(|(i, _)| journal_key(&c.args[i..]))
                    {
                        journaled.insert(key, (path.clone(), c.end));
                    }
                }
            }
            "rename" | "renameat" | "renameat2" if ret == 0 => {
                let s = strings(c);
                let (from, to) = (s[0].to_string(), s[1].to_string());
                if let Some(i) = to.find("/plugins/") {
                    let parts: Vec<&str> = to[i + 9..].split('/').collect();
                    if parts.len() == 3 && parts[1] == "results" {
                        let key = format!("{}/{}", parts[0], parts[2]);
                        renamed.insert(
                            key,
                            Renamed {
                                from,
                                to,
                                start: c.start,
                                end: c.end,
                            },
                        );
                    }
                }
            }
            "syncfs" | "sync" if ret == 0 => syncs.push((None, c.start, c.end)),
            "fsync" | "fdatasync" if ret == 0 => {
                let p = fd_of(c).and_then(|fd| paths.get(&fd).cloned());
                syncs.push((Some(p.unwrap_or_default()), c.start, c.end));
            }
            _ => {}
        }
    }
    assert_eq!(acked.len(), plain + tarred, "200s seen in the trace");
    let synced_between = |covers: &dyn Fn(&Option<String>) -> bool, after: usize, before: usize| {
        syncs
            .iter()
            .any(|(p, s, e)| covers(p) && *s > after && *e < before)
    };
    let mut by_journal = 0;
    for (key, answered) in &acked {
        if let Some((journal, wrote)) = journaled.get(key) {
            assert!(journal.ends_with("/journal"), "{key}: written to {journal}");
            assert!(
                // The journal's own sync, not a file-system sync that a concurrent tarball's
                // commit happens to run in between: that one the committer does not wait for.
                synced_between(
                    &|p| p.as_deref() == Some(journal.as_str()),
                    *wrote,
                    *answered
                ),
                "{key}: its journal record was not synced before the 200"
            );
            by_journal += 1;
            continue;
        }
        let r = renamed
            .get(key)
            .unwrap_or_else(|| panic!("{key} was acknowledged but never renamed into place"));
        assert!(
            r.end < *answered,
            "{key}: the 200 left before its rename finished"
        );
        let parent = r.to.rsplit_once('/').unwrap().0.to_string();
        assert!(
            synced_between(
                &|p| p.is_none() || p.as_deref() == Some(parent.as_str()),
                r.end,
                *answered
            ),
            "{key}: no sync of its rename before the 200"
        );
        let wrote = *last_write
            .get(&r.from)
            .unwrap_or_else(|| panic!("{key}: no data written under {}", r.from));
        // A file-system sync covers every file of the upload; per-file fsyncs would need each
        // file checked, which this aggregator does not do.
        assert!(
            synced_between(&|p| p.is_none(), wrote, r.start),
            "{key}: its data was not synced before its rename"
        );
    }
    assert_eq!(
        by_journal, plain,
        "every small plain result went through the journal"
    );
    // And each was laid out in the tree by the time the run was sealed.
    let run_dir = std::fs::read_dir(dir.path().join("out"))
        .unwrap()
        .flatten()
        .find(|e| {
            e.file_type().unwrap().is_dir() && !e.file_name().to_string_lossy().starts_with('.')
        })
        .unwrap()
        .path();
    for node in &p_nodes {
        let files: Vec<_> = std::fs::read_dir(run_dir.join("plugins/p/results").join(node))
            .unwrap_or_else(|e| panic!("p/{node} was not laid out: {e}"))
            .flatten()
            .map(|e| e.metadata().unwrap().len())
            .collect();
        assert_eq!(files, [8 << 10], "p/{node}");
    }
}
