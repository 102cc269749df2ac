//! etcd and the three control-plane components as child processes, on free loopback ports,
//! with certificates made for them, an audit log of every request, and an admin kubeconfig.
//! Everything lives in one directory (on tmpfs when there is one, so etcd's syncs are cheap)
//! that is removed when the control plane is dropped; a directory left by a test process that
//! died is removed by the next start. Every child gets SIGKILL if the thread that started it
//! ends, so nothing outlives a killed test binary.

use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;

use crate::certs::{self, Authority, Pair};
use crate::ports::free_port;
use crate::EnvError;

/// Where the binaries are: `BUOY_TEST_K8S_BIN`, else envtest's default place. etcd may also
/// come from `PATH` (Debian's `etcd-server` package).
#[derive(Debug, Clone)]
pub struct Binaries {
    pub apiserver: PathBuf,
    pub controller_manager: PathBuf,
    pub scheduler: PathBuf,
    pub etcd: PathBuf,
}

pub const DEFAULT_BIN_DIR: &str = "/usr/local/kubebuilder/bin";

impl Binaries {
    /// The binaries, or why they cannot be used (the sentence a skipped test prints).
    pub fn find() -> Result<Self, String> {
        let dir = std::env::var_os("BUOY_TEST_K8S_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_BIN_DIR));
        let need = |name: &str| {
            let p = dir.join(name);
            if p.is_file() {
                Ok(p)
            } else {
                Err(format!(
                    "no {name} in {} (set BUOY_TEST_K8S_BIN to a directory holding kube-apiserver, kube-controller-manager, kube-scheduler and etcd)",
                    dir.display()
                ))
            }
        };
        let etcd = need("etcd").or_else(|e| {
            std::env::var_os("PATH")
                .and_then(|path| {
                    std::env::split_paths(&path)
                        .map(|d| d.join("etcd"))
                        .find(|p| p.is_file())
                })
                .ok_or(e)
        })?;
        Ok(Self {
            apiserver: need("kube-apiserver")?,
            controller_manager: need("kube-controller-manager")?,
            scheduler: need("kube-scheduler")?,
            etcd,
        })
    }
}

/// What a test may change about the control plane.
#[derive(Debug, Clone)]
pub struct ControlPlaneOptions {
    /// Client QPS of the controller manager and the scheduler (a DaemonSet over thousands of
    /// nodes needs more than their default 20).
    pub component_qps: u32,
}

impl Default for ControlPlaneOptions {
    fn default() -> Self {
        Self { component_qps: 200 }
    }
}

pub struct ControlPlane {
    pub dir: PathBuf,
    /// An admin kubeconfig (client certificate in `system:masters`).
    pub kubeconfig: PathBuf,
    /// `https://127.0.0.1:<port>`.
    pub server: String,
    pub port: u16,
    pub ca_pem: String,
    /// One JSON line per request (level Metadata), for counting a client's requests.
    pub audit_log: PathBuf,
    /// The certificate the stand-in kubelet serves container logs with (signed by the CA the
    /// API server is told to trust for kubelets).
    pub kubelet_serving: Pair,
    procs: Vec<(&'static str, Child)>,
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> EnvError {
    let context = context.into();
    move |source| EnvError::Io { context, source }
}

/// Removes the directories of control planes whose test process is gone.
fn remove_stale(parent: &Path) {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix("buoy-testenv-")
            .and_then(|r| r.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

fn spawn(name: &'static str, dir: &Path, cmd: &mut Command) -> Result<Child, EnvError> {
    let log = std::fs::File::create(dir.join(format!("{name}.log")))
        .map_err(io(format!("cannot create {name}.log")))?;
    let err = log.try_clone().map_err(io("cannot clone a log file"))?;
    cmd.stdin(Stdio::null()).stdout(log).stderr(err);
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    cmd.spawn().map_err(io(format!(
        "cannot start {}",
        cmd.get_program().to_string_lossy()
    )))
}

/// The last lines of a component's log, for an error that says why it did not start.
pub fn log_tail(dir: &Path, name: &str) -> String {
    let text = std::fs::read_to_string(dir.join(format!("{name}.log"))).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

/// An HTTP GET over plain TCP (etcd's health), the status line and body.
fn plain_get(port: u16, path: &str) -> Option<String> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// A kubeconfig for `server` with a client certificate.
pub fn kubeconfig(server: &str, ca_pem: &str, user: &Pair) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: buoy-testenv\n  cluster:\n    server: {server}\n    certificate-authority-data: {}\nusers:\n- name: admin\n  user:\n    client-certificate-data: {}\n    client-key-data: {}\ncontexts:\n- name: buoy-testenv\n  context:\n    cluster: buoy-testenv\n    user: admin\ncurrent-context: buoy-testenv\n",
        b64(ca_pem),
        b64(&user.cert_pem),
        b64(&user.key_pem)
    )
}

const AUDIT_POLICY: &str = "apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [RequestReceived]\nrules:\n- level: Metadata\n";

impl ControlPlane {
    /// Starts etcd, then the API server, then the controller manager (every controller but
    /// node lifecycle, which would taint the stand-in kubelet's nodes for missing heartbeats)
    /// and the scheduler, and returns once the API server is ready and both components hold
    /// their leader leases.
    pub async fn start(bins: &Binaries, opts: &ControlPlaneOptions) -> Result<Self, EnvError> {
        let parent = if Path::new("/dev/shm").is_dir() {
            PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        };
        remove_stale(&parent);
        let dir = tempfile::Builder::new()
            .prefix(&format!("buoy-testenv-{}-", std::process::id()))
            .tempdir_in(&parent)
            .map_err(io("cannot make the control plane's directory"))?
            .keep();
        let mut cp = Self {
            kubeconfig: dir.join("admin.kubeconfig"),
            audit_log: dir.join("audit.log"),
            dir: dir.clone(),
            server: String::new(),
            port: 0,
            ca_pem: String::new(),
            kubelet_serving: Pair {
                cert_pem: String::new(),
                key_pem: String::new(),
            },
            procs: Vec::new(),
        };
        // On any error below, dropping `cp` stops what was started and removes the directory.
        cp.start_all(bins, opts).await?;
        Ok(cp)
    }

    async fn start_all(
        &mut self,
        bins: &Binaries,
        opts: &ControlPlaneOptions,
    ) -> Result<(), EnvError> {
        let dir = self.dir.clone();
        let write = |name: &str, text: &str| -> Result<PathBuf, EnvError> {
            let p = dir.join(name);
            std::fs::write(&p, text).map_err(io(format!("cannot write {name}")))?;
            Ok(p)
        };
        let ca = Authority::new()?;
        let serving = ca.leaf(
            "kube-apiserver",
            None,
            &[
                "127.0.0.1",
                "localhost",
                "10.0.0.1",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
            ],
            true,
            false,
        )?;
        let admin = ca.leaf("admin", Some("system:masters"), &[], false, true)?;
        let to_kubelet = ca.leaf(
            "kube-apiserver-kubelet-client",
            Some("system:masters"),
            &[],
            false,
            true,
        )?;
        self.kubelet_serving = ca.leaf(
            "buoy-testenv-kubelet",
            None,
            &["127.0.0.1", "localhost"],
            true,
            false,
        )?;
        let (sa_key, sa_pub) = certs::signing_key()?;
        let ca_file = write("ca.crt", &ca.cert_pem)?;
        let tls_crt = write("apiserver.crt", &serving.cert_pem)?;
        let tls_key = write("apiserver.key", &serving.key_pem)?;
        let kc_crt = write("kubelet-client.crt", &to_kubelet.cert_pem)?;
        let kc_key = write("kubelet-client.key", &to_kubelet.key_pem)?;
        let sa = write("sa.key", &sa_key)?;
        let sa_pub = write("sa.pub", &sa_pub)?;
        let policy = write("audit-policy.yaml", AUDIT_POLICY)?;
        self.ca_pem = ca.cert_pem.clone();

        // etcd, its data on the same (tmpfs) directory.
        let (client, peer) = (free_port(), free_port());
        let etcd = spawn(
            "etcd",
            &dir,
            Command::new(&bins.etcd)
                .arg("--data-dir")
                .arg(dir.join("etcd"))
                .arg(format!("--listen-client-urls=http://127.0.0.1:{client}"))
                .arg(format!("--advertise-client-urls=http://127.0.0.1:{client}"))
                .arg(format!("--listen-peer-urls=http://127.0.0.1:{peer}"))
                .arg(format!(
                    "--initial-advertise-peer-urls=http://127.0.0.1:{peer}"
                ))
                .arg(format!("--initial-cluster=default=http://127.0.0.1:{peer}"))
                .arg("--quota-backend-bytes=8589934592")
                .arg("--log-level=warn"),
        )?;
        self.procs.push(("etcd", etcd));
        self.wait_for("etcd", Duration::from_secs(30), || async {
            plain_get(client, "/health").is_some_and(|r| r.contains("\"health\":\"true\""))
        })
        .await?;

        self.port = free_port();
        self.server = format!("https://127.0.0.1:{}", self.port);
        let apiserver = spawn(
            "kube-apiserver",
            &dir,
            Command::new(&bins.apiserver)
                .arg(format!("--etcd-servers=http://127.0.0.1:{client}"))
                .arg("--bind-address=127.0.0.1")
                .arg("--advertise-address=127.0.0.1")
                .arg(format!("--secure-port={}", self.port))
                .arg(format!("--cert-dir={}", dir.join("certs").display()))
                .arg(format!("--tls-cert-file={}", tls_crt.display()))
                .arg(format!("--tls-private-key-file={}", tls_key.display()))
                .arg(format!("--client-ca-file={}", ca_file.display()))
                .arg(format!("--kubelet-client-certificate={}", kc_crt.display()))
                .arg(format!("--kubelet-client-key={}", kc_key.display()))
                .arg(format!(
                    "--kubelet-certificate-authority={}",
                    ca_file.display()
                ))
                .arg("--kubelet-preferred-address-types=InternalIP")
                .arg(format!("--service-account-key-file={}", sa_pub.display()))
                .arg(format!(
                    "--service-account-signing-key-file={}",
                    sa.display()
                ))
                .arg("--service-account-issuer=https://kubernetes.default.svc.cluster.local")
                .arg("--service-cluster-ip-range=10.0.0.0/24")
                .arg("--authorization-mode=Node,RBAC")
                .arg("--allow-privileged=true")
                .arg("--disable-admission-plugins=TaintNodesByCondition")
                .arg(format!("--audit-policy-file={}", policy.display()))
                .arg(format!("--audit-log-path={}", self.audit_log.display()))
                .arg("--audit-log-maxsize=0")
                .arg("--audit-log-mode=batch")
                .arg("--audit-log-batch-max-wait=1s")
                .arg("--max-requests-inflight=1000")
                .arg("--max-mutating-requests-inflight=500")
                .arg("--enable-priority-and-fairness=false"),
        )?;
        self.procs.push(("kube-apiserver", apiserver));
        std::fs::write(
            &self.kubeconfig,
            kubeconfig(&self.server, &ca.cert_pem, &admin),
        )
        .map_err(io("cannot write the admin kubeconfig"))?;
        let client = self.client().await?;
        self.wait_for("kube-apiserver", Duration::from_secs(120), || {
            let client = client.clone();
            async move {
                let req = http::Request::get("/readyz")
                    .body(Vec::new())
                    .expect("a request");
                client
                    .request_text(req)
                    .await
                    .is_ok_and(|t| t.trim() == "ok")
            }
        })
        .await?;

        // Both components: the admin kubeconfig, a private serving port, the client rate, and
        // leader election (whose leases say they are up).
        let common = |port: u16| {
            vec![
                format!("--kubeconfig={}", self.kubeconfig.display()),
                "--bind-address=127.0.0.1".to_string(),
                format!("--secure-port={port}"),
                format!("--kube-api-qps={}", opts.component_qps),
                format!("--kube-api-burst={}", opts.component_qps * 2),
                "--leader-elect=true".to_string(),
            ]
        };
        let cm = spawn(
            "kube-controller-manager",
            &dir,
            Command::new(&bins.controller_manager)
                .args(common(free_port()))
                .arg("--controllers=*,-nodelifecycle")
                .arg(format!(
                    "--service-account-private-key-file={}",
                    sa.display()
                ))
                .arg(format!("--root-ca-file={}", ca_file.display()))
                .arg("--use-service-account-credentials=false"),
        )?;
        self.procs.push(("kube-controller-manager", cm));
        let scheduler = spawn(
            "kube-scheduler",
            &dir,
            Command::new(&bins.scheduler)
                .args(common(free_port()))
                .arg(format!(
                    "--authentication-kubeconfig={}",
                    self.kubeconfig.display()
                ))
                .arg(format!(
                    "--authorization-kubeconfig={}",
                    self.kubeconfig.display()
                )),
        )?;
        self.procs.push(("kube-scheduler", scheduler));
        for lease in ["kube-controller-manager", "kube-scheduler"] {
            let client = client.clone();
            self.wait_for(lease, Duration::from_secs(120), || {
                let client = client.clone();
                async move {
                    let leases: kube::Api<k8s_openapi::api::coordination::v1::Lease> =
                        kube::Api::namespaced(client, "kube-system");
                    leases
                        .get_opt(lease)
                        .await
                        .ok()
                        .flatten()
                        .and_then(|l| l.spec?.holder_identity)
                        .is_some()
                }
            })
            .await?;
        }
        // The service-account controller runs: namespaces get their `default` account.
        let client2 = client.clone();
        self.wait_for("kube-controller-manager", Duration::from_secs(60), || {
            let client = client2.clone();
            async move {
                let sas: kube::Api<k8s_openapi::api::core::v1::ServiceAccount> =
                    kube::Api::namespaced(client, "default");
                sas.get_opt("default").await.ok().flatten().is_some()
            }
        })
        .await?;
        Ok(())
    }

    /// Polls `ready` until it holds, failing early when the component (or one started before
    /// it) exits, and at `limit`.
    async fn wait_for<F, Fut>(
        &mut self,
        name: &str,
        limit: Duration,
        mut ready: F,
    ) -> Result<(), EnvError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let started = Instant::now();
        loop {
            if ready().await {
                return Ok(());
            }
            for (n, child) in &mut self.procs {
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(EnvError::Start {
                        what: (*n).to_string(),
                        reason: format!("exited ({status}):\n{}", log_tail(&self.dir, n)),
                    });
                }
            }
            if started.elapsed() > limit {
                return Err(EnvError::Start {
                    what: name.to_string(),
                    reason: format!("not ready after {limit:?}:\n{}", log_tail(&self.dir, name)),
                });
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// An admin client.
    pub async fn client(&self) -> Result<kube::Client, EnvError> {
        client_for(&self.kubeconfig).await
    }
}

/// A client from a kubeconfig file.
pub async fn client_for(kubeconfig: &Path) -> Result<kube::Client, EnvError> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let kc = kube::config::Kubeconfig::read_from(kubeconfig)
        .map_err(|e| EnvError::Kube(e.to_string()))?;
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .map_err(|e| EnvError::Kube(e.to_string()))?;
    kube::Client::try_from(cfg).map_err(|e| EnvError::Kube(e.to_string()))
}

impl Drop for ControlPlane {
    /// Stops the components in the reverse order (SIGTERM, then SIGKILL after 10 s) and
    /// removes the directory.
    fn drop(&mut self) {
        while let Some((_, mut child)) = self.procs.pop() {
            // SAFETY: kill(2) on our own child's pid.
            unsafe {
                libc::kill(child.id() as i32, libc::SIGTERM);
            }
            let until = Instant::now() + Duration::from_secs(10);
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
