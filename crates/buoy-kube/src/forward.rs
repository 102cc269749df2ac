//! A local port forwarded to a port of a pod through the API server (`pods/portforward`), as
//! `kubectl port-forward` does: every connection accepted on 127.0.0.1 gets its own forward,
//! so a client that reconnects after a broken transfer gets a fresh one. `buoy retrieve -n`
//! reaches the aggregator's status page this way, with no `exec` and no Service.

use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::api::KubeApi;
use crate::error::KubeError;

/// A listening local end; forwarding stops when it is dropped.
pub struct Forward {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Forward {
    /// Listens on an ephemeral loopback port and forwards each connection to `port` of `pod`.
    pub async fn start(api: &KubeApi, pod: &str, port: u16) -> Result<Self, KubeError> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|source| KubeError::Io {
                context: "cannot listen on a local port".into(),
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| KubeError::Io {
            context: "cannot read the local port".into(),
            source,
        })?;
        let (api, pod) = (api.clone(), pod.to_string());
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                tokio::spawn(forward_one(api.clone(), pod.clone(), port, tcp));
            }
        });
        Ok(Self { addr, task })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Forward {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn forward_one(api: KubeApi, pod: String, port: u16, mut tcp: TcpStream) {
    let mut pf = match api.port_forward(&pod, port).await {
        Ok(pf) => pf,
        Err(e) => {
            // The local client sees its connection close; the reason goes to the log.
            tracing::warn!(pod = %pod, port, error = %e, "port-forward failed");
            return;
        }
    };
    let error = pf.take_error(port);
    let Some(mut remote) = pf.take_stream(port) else {
        return;
    };
    if let Err(e) = tokio::io::copy_bidirectional(&mut tcp, &mut remote).await {
        tracing::debug!(pod = %pod, port, error = %e, "forwarded connection ended");
    }
    drop(remote);
    if let Some(error) = error {
        if let Ok(Some(msg)) =
            tokio::time::timeout(std::time::Duration::from_millis(100), error).await
        {
            tracing::warn!(pod = %pod, port, error = %msg, "port-forward: the pod said");
        }
    }
    pf.abort();
}
