//! Reading the API server's audit log: who asked what, when. Each request counts once
//! (a watch is logged when its response starts and again when it ends).

use std::collections::HashSet;
use std::io::BufRead;
use std::path::Path;

use serde_json::Value;
use time::OffsetDateTime;

#[derive(Debug, Clone)]
pub struct Request {
    pub user_agent: String,
    pub verb: String,
    pub uri: String,
    pub code: u16,
    pub at: OffsetDateTime,
}

/// Every request in `log` whose user agent starts with `agent`, in the order received.
pub fn requests(log: &Path, agent: &str) -> Vec<Request> {
    let Ok(f) = std::fs::File::open(log) else {
        return Vec::new();
    };
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for line in std::io::BufReader::new(f).lines().map_while(Result::ok) {
        let Ok(v) = serde_json::from_str::<Value>(&line) else {
            continue;
        };
        let ua = v["userAgent"].as_str().unwrap_or_default();
        if !ua.starts_with(agent)
            || !seen.insert(v["auditID"].as_str().unwrap_or_default().to_string())
        {
            continue;
        }
        let at = v["requestReceivedTimestamp"]
            .as_str()
            .and_then(|t| {
                OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok()
            })
            .unwrap_or(OffsetDateTime::UNIX_EPOCH);
        out.push(Request {
            user_agent: ua.to_string(),
            verb: v["verb"].as_str().unwrap_or_default().to_string(),
            uri: v["requestURI"].as_str().unwrap_or_default().to_string(),
            code: v["responseStatus"]["code"].as_u64().unwrap_or_default() as u16,
            at,
        });
    }
    out.sort_by_key(|r| r.at);
    out
}
