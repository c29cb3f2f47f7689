//! Live Prometheus view of this kernel's `emissions.csv` rows (opt-in), and its `file_sd` target.
//!
//! * `CARBON_METRICS_ADDR` (unset: off; `127.0.0.1:0` picks a free port; `0.0.0.0:9464` in a
//!   pod) serves `GET /metrics` in the OpenMetrics text format, encoded by `prometheus-client`,
//!   from a tokio task: a scrape reads atomic counters and never waits for a cell.
//! * Every metric is derived from the [`EmissionRecord`]s that were just written to the CSV
//!   ([`observe`], called by the one place rows are recorded), so the counters are the CSV's
//!   sums by construction: `emissions.csv` stays the record of truth, the metrics its live view.
//! * Labels: `user` (`JUPYTERHUB_USER`, else `CARBON_PROJECT`, else the notebook folder's name),
//!   `CARBON_PROJECT` and `CARBON_COURSE` from the environment or the notebook folder's `.env`,
//!   `kernel_id` (from the connection file name `kernel-<id>.json`), `course` (`CARBON_COURSE`,
//!   only when set), plus per-metric enumerations (language, status, kind, component, provider,
//!   model). Never the code, a prompt, an answer, a path or a key: only those fields of a row.
//! * `CARBON_METRICS_SD_DIR`: a Prometheus `file_sd` target file for this kernel, written
//!   atomically on start, removed on shutdown ([`MetricsHandle`]'s drop); on start the files of
//!   kernels whose pid no longer exists (a `kill -9`) are removed. The pid is in the file name.
//!
//! Faults never stop the kernel: a port in use or an unwritable folder is said once on the
//! kernel's log (stderr) and in `%carbon status`; metering and the CSV go on.

use carbon_magics::carbon::{EmissionRecord, RowKind};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};
use std::borrow::Cow;
use std::net::{IpAddr, SocketAddr, TcpListener as StdListener};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Environment variable: the address `/metrics` is served on.
pub const ADDR_VAR: &str = "CARBON_METRICS_ADDR";
/// Environment variable: the folder of Prometheus `file_sd` target files.
pub const SD_DIR_VAR: &str = "CARBON_METRICS_SD_DIR";
/// Environment variable: optional course label.
pub const COURSE_VAR: &str = "CARBON_COURSE";
/// Prefix of the target files this kernel writes (`carbon-kernel-<pid>-<kernel id>.json`).
const SD_PREFIX: &str = "carbon-kernel-";
/// A label value longer than this is cut (a model name is the only free-form one).
const MAX_LABEL: usize = 120;

/// The process-wide metrics, set once by [`start`] when `CARBON_METRICS_ADDR` is served.
static GLOBAL: OnceLock<Arc<Metrics>> = OnceLock::new();
/// What `%carbon status` says about the metrics (set by [`start`]).
static STATUS: Mutex<Option<String>> = Mutex::new(None);

/// Records rows that were just written to `emissions.csv`. A no-op when metrics are off.
pub fn observe(rows: &[EmissionRecord]) {
    if let Some(m) = GLOBAL.get() {
        m.observe(rows);
    }
}

/// One line for `%carbon status` (`  metrics     …\n`).
pub fn status_line() -> String {
    let s = STATUS.lock().unwrap_or_else(|e| e.into_inner()).clone();
    format!(
        "  metrics     {}\n",
        s.unwrap_or_else(|| format!("off ({ADDR_VAR} unset)"))
    )
}

fn set_status(s: String) {
    *STATUS.lock().unwrap_or_else(|e| e.into_inner()) = Some(s);
}

/// Who and what the metrics of this kernel belong to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// `JUPYTERHUB_USER`, else `CARBON_PROJECT`, else the notebook folder's name.
    pub user: String,
    /// The Jupyter kernel id (connection file `kernel-<id>.json`), else its file stem.
    pub kernel_id: String,
    /// `CARBON_COURSE`, when set.
    pub course: Option<String>,
}

impl Identity {
    /// From the environment (`CARBON_PROJECT` and `CARBON_COURSE` also from the notebook
    /// folder's `.env`, like every `CARBON_*` setting), the connection file's name and the
    /// working folder.
    pub fn from_env(connection_file: &Path, workdir: &Path) -> Identity {
        let settings = carbon_magics::config::Settings::load(workdir);
        let var = |k: &str| {
            std::env::var(k)
                .ok()
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        let setting = |k: &str| settings.get(k).map(|v| v.trim().to_string());
        let user = var("JUPYTERHUB_USER")
            .or_else(|| setting("CARBON_PROJECT"))
            .or_else(|| {
                workdir
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
            })
            .unwrap_or_else(|| "unknown".into());
        let stem = connection_file
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let kernel_id = stem.strip_prefix("kernel-").unwrap_or(&stem).to_string();
        Identity {
            user: label_value(&user),
            kernel_id: label_value(&kernel_id),
            course: setting(COURSE_VAR).map(|c| label_value(&c)),
        }
    }
}

/// A label value: no control characters, bounded length (escaping is the encoder's job).
fn label_value(s: &str) -> String {
    s.chars()
        .filter(|c| !c.is_control())
        .take(MAX_LABEL)
        .collect()
}

type Labels = Vec<(&'static str, String)>;
type FloatCounter = Counter<f64, AtomicU64>;

/// The info metric's current values (sensor and method are known from the first metered cell).
#[derive(Debug, Default, Clone)]
struct InfoValues {
    sensor: String,
    ram_sensor: String,
    gpu_sensor: String,
    method: String,
}

/// Encodes `carbon_kernel_info` from the latest values at each scrape.
#[derive(Debug)]
struct InfoCollector {
    values: Arc<Mutex<InfoValues>>,
}

impl Collector for InfoCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let v = self
            .values
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        // The registry adds the identity labels (user, kernel_id, course) to a collector's too.
        let info = Info::new(vec![
            ("version", env!("CARGO_PKG_VERSION").to_string()),
            ("sensor", v.sensor),
            ("ram_sensor", v.ram_sensor),
            ("gpu_sensor", v.gpu_sensor),
            ("method", v.method),
        ]);
        let m = encoder.encode_descriptor(
            "carbon_kernel",
            "carbon-kernel version, and the sensors and method of its latest metered cell.",
            None,
            info.metric_type(),
        )?;
        info.encode(m)
    }
}

/// The counters of one kernel.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    energy: Family<Labels, FloatCounter>,
    emissions: Family<Labels, FloatCounter>,
    duration: Family<Labels, FloatCounter>,
    cells: Family<Labels, Counter>,
    llm_requests: Family<Labels, Counter>,
    llm_tokens: Family<Labels, Counter>,
    llm_emissions: Family<Labels, FloatCounter>,
    info: Arc<Mutex<InfoValues>>,
}

impl Metrics {
    /// An empty registry whose every series carries the identity labels.
    pub fn new(id: &Identity) -> Metrics {
        let mut base: Vec<(Cow<'static, str>, Cow<'static, str>)> = vec![
            ("user".into(), id.user.clone().into()),
            ("kernel_id".into(), id.kernel_id.clone().into()),
        ];
        if let Some(c) = &id.course {
            base.push(("course".into(), c.clone().into()));
        }
        let mut registry = Registry::with_labels(base.into_iter());
        let energy = Family::<Labels, FloatCounter>::default();
        registry.register_with_unit(
            "carbon_energy",
            "Energy of the emissions.csv rows (PUE included), by component (cpu, ram, gpu), kind (cell, llm) and language",
            Unit::Joules,
            energy.clone(),
        );
        let emissions = Family::<Labels, FloatCounter>::default();
        registry.register_with_unit(
            "carbon_emissions",
            "CO2-equivalent emissions of the emissions.csv rows, by kind (cell, llm) and language",
            Unit::Other("grams".into()),
            emissions.clone(),
        );
        let duration = Family::<Labels, FloatCounter>::default();
        registry.register_with_unit(
            "carbon_duration",
            "Duration of the metered cells, commands and LLM requests, by kind and language",
            Unit::Seconds,
            duration.clone(),
        );
        let cells = Family::<Labels, Counter>::default();
        registry.register(
            "carbon_cells",
            "Metered cells and commands (language \"command\"), by language and status",
            cells.clone(),
        );
        let llm_requests = Family::<Labels, Counter>::default();
        registry.register(
            "carbon_llm_requests",
            "LLM requests, by provider, model and status",
            llm_requests.clone(),
        );
        let llm_tokens = Family::<Labels, Counter>::default();
        registry.register(
            "carbon_llm_tokens",
            "LLM tokens, by provider, model and direction (in: prompt, out: completion)",
            llm_tokens.clone(),
        );
        let llm_emissions = Family::<Labels, FloatCounter>::default();
        registry.register_with_unit(
            "carbon_llm_emissions",
            "CO2-equivalent emissions of the LLM requests, by provider and model",
            Unit::Other("grams".into()),
            llm_emissions.clone(),
        );
        let info = Arc::new(Mutex::new(InfoValues::default()));
        registry.register_collector(Box::new(InfoCollector {
            values: info.clone(),
        }));
        // The energy and emission series exist from the start at zero, so that PromQL's
        // increase() over a window counts a kernel's first rows too (a series first seen with a
        // value > 0 loses that value to increase()).
        for (kind, language) in [
            ("cell", "python"),
            ("cell", "java"),
            ("cell", "rust"),
            ("cell", "command"),
            ("llm", ""),
        ] {
            let kl: Labels = vec![("kind", kind.into()), ("language", language.into())];
            drop(emissions.get_or_create(&kl));
            drop(duration.get_or_create(&kl));
            for component in ["cpu", "ram", "gpu"] {
                let mut l = vec![("component", component.to_string())];
                l.extend(kl.iter().cloned());
                drop(energy.get_or_create(&l));
            }
        }
        Metrics {
            registry,
            energy,
            emissions,
            duration,
            cells,
            llm_requests,
            llm_tokens,
            llm_emissions,
            info,
        }
    }

    /// Adds rows that were written to `emissions.csv`.
    pub fn observe(&self, rows: &[EmissionRecord]) {
        for r in rows {
            let kind = label_value(r.kind.as_str());
            let language = label_value(r.language.as_str());
            for (component, kwh) in [
                ("cpu", r.cpu_energy),
                ("ram", r.ram_energy),
                ("gpu", r.gpu_energy),
            ] {
                self.energy
                    .get_or_create(&vec![
                        ("component", component.to_string()),
                        ("kind", kind.clone()),
                        ("language", language.clone()),
                    ])
                    .inc_by(finite(kwh) * 3.6e6);
            }
            let kl: Labels = vec![("kind", kind.clone()), ("language", language.clone())];
            // The CSV holds kg; grams read better on a dashboard of student-sized numbers.
            self.emissions
                .get_or_create(&kl)
                .inc_by(finite(r.emissions) * 1000.0);
            self.duration.get_or_create(&kl).inc_by(finite(r.duration));
            let status = label_value(r.status.as_str());
            if r.kind == RowKind::Llm {
                let provider = label_value(&r.llm_provider);
                let model = label_value(&r.llm_model);
                self.llm_requests
                    .get_or_create(&vec![
                        ("provider", provider.clone()),
                        ("model", model.clone()),
                        ("status", status),
                    ])
                    .inc();
                self.llm_emissions
                    .get_or_create(&vec![
                        ("provider", provider.clone()),
                        ("model", model.clone()),
                    ])
                    .inc_by(finite(r.emissions) * 1000.0);
                for (direction, n) in [("in", r.prompt_tokens), ("out", r.completion_tokens)] {
                    self.llm_tokens
                        .get_or_create(&vec![
                            ("provider", provider.clone()),
                            ("model", model.clone()),
                            ("direction", direction.to_string()),
                        ])
                        .inc_by(n.unwrap_or(0));
                }
            } else {
                // A runtime's start-up is not a cell (its energy is counted, under kind="startup").
                if r.kind != RowKind::Startup {
                    self.cells
                        .get_or_create(&vec![("language", language), ("status", status)])
                        .inc();
                }
                let mut info = self.info.lock().unwrap_or_else(|e| e.into_inner());
                *info = InfoValues {
                    sensor: label_value(&r.cpu_method),
                    ram_sensor: label_value(&r.ram_method),
                    gpu_sensor: label_value(&r.gpu_method),
                    method: label_value(&r.method),
                };
            }
        }
    }

    /// The OpenMetrics text exposition (ends with `# EOF`).
    pub fn encode(&self) -> String {
        let mut s = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut s, &self.registry) {
            log::warn!("metrics: cannot encode: {e}");
        }
        s
    }
}

fn finite(x: f64) -> f64 {
    if x.is_finite() && x > 0.0 { x } else { 0.0 }
}

/// What [`start`] set up; dropping it removes this kernel's `file_sd` target.
#[derive(Debug, Default)]
pub struct MetricsHandle {
    /// The address `/metrics` is served on.
    pub addr: Option<SocketAddr>,
    /// The target file written for Prometheus.
    pub sd_file: Option<PathBuf>,
}

impl Drop for MetricsHandle {
    fn drop(&mut self) {
        if let Some(f) = self.sd_file.take()
            && let Err(e) = std::fs::remove_file(&f)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            log::warn!("metrics: cannot remove {}: {e}", f.display());
        }
    }
}

/// Reads `CARBON_METRICS_ADDR` / `CARBON_METRICS_SD_DIR` and starts serving (on `rt`). Never
/// fails: a problem is logged once, put in `%carbon status`, and the kernel goes on without it.
pub fn start(rt: &tokio::runtime::Handle, connection_file: &Path, workdir: &Path) -> MetricsHandle {
    let Some(addr) = std::env::var(ADDR_VAR)
        .ok()
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
    else {
        return MetricsHandle::default();
    };
    let id = Identity::from_env(connection_file, workdir);
    let sd_dir = std::env::var_os(SD_DIR_VAR)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from);
    start_with(rt, &addr, sd_dir.as_deref(), &id)
}

/// [`start`] with explicit settings.
pub fn start_with(
    rt: &tokio::runtime::Handle,
    addr: &str,
    sd_dir: Option<&Path>,
    id: &Identity,
) -> MetricsHandle {
    let listener = match parse_addr(addr).and_then(|a| {
        StdListener::bind(a).map_err(|e| {
            if e.kind() == std::io::ErrorKind::AddrInUse {
                format!("{a} is already in use")
            } else {
                format!("cannot listen on {a}: {e}")
            }
        })
    }) {
        Ok(l) => l,
        Err(why) => {
            let msg = format!(
                "{ADDR_VAR}={addr}: /metrics is not served: {why}; metering goes on and emissions.csv is still written"
            );
            log::error!("{msg}");
            set_status(format!("not served: {why}"));
            return MetricsHandle::default();
        }
    };
    let local = match listener.local_addr() {
        Ok(a) => a,
        Err(e) => {
            log::error!("{ADDR_VAR}={addr}: /metrics is not served: {e}");
            set_status(format!("not served: {e}"));
            return MetricsHandle::default();
        }
    };
    let metrics = Arc::new(Metrics::new(id));
    let served = {
        let _guard = rt.enter();
        listener
            .set_nonblocking(true)
            .and_then(|()| tokio::net::TcpListener::from_std(listener))
    };
    match served {
        Ok(l) => {
            rt.spawn(serve(l, metrics.clone()));
        }
        Err(e) => {
            log::error!("{ADDR_VAR}={addr}: /metrics is not served: {e}");
            set_status(format!("not served: {e}"));
            return MetricsHandle::default();
        }
    }
    let _ = GLOBAL.set(metrics);
    log::info!("metrics: serving http://{local}/metrics");
    set_status(format!("http://{local}/metrics"));
    let sd_file = sd_dir.and_then(|d| write_target(d, local, &id.kernel_id));
    MetricsHandle {
        addr: Some(local),
        sd_file,
    }
}

/// `HOST:PORT`, `[V6]:PORT`, or `:PORT` (every interface).
fn parse_addr(s: &str) -> Result<SocketAddr, String> {
    let s = s.trim();
    let full = if s.starts_with(':') {
        format!("0.0.0.0{s}")
    } else {
        s.to_string()
    };
    full.parse::<SocketAddr>()
        .map_err(|_| format!("{s:?} is not an address (use 127.0.0.1:0, or 0.0.0.0:9464 in a pod)"))
}

/// Answers `GET /metrics`; one small task per connection, each bounded in time and size.
async fn serve(listener: tokio::net::TcpListener, metrics: Arc<Metrics>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let m = metrics.clone();
                tokio::spawn(async move {
                    let _ = tokio::time::timeout(Duration::from_secs(10), answer(stream, m)).await;
                });
            }
            Err(e) => {
                log::warn!("metrics: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn answer(mut stream: tokio::net::TcpStream, metrics: Arc<Metrics>) -> std::io::Result<()> {
    // The request head only (a scrape has no body); 8 KiB is plenty for Prometheus' headers.
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 8192 {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = String::from_utf8_lossy(&head);
    let mut parts = line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    let (status, ctype, body) = match (method, path) {
        ("GET" | "HEAD", "/metrics") => (
            "200 OK",
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            metrics.encode(),
        ),
        ("GET" | "HEAD", _) => (
            "404 Not Found",
            "text/plain; charset=utf-8",
            "carbon-kernel serves /metrics only\n".to_string(),
        ),
        _ => (
            "405 Method Not Allowed",
            "text/plain; charset=utf-8",
            "GET /metrics\n".to_string(),
        ),
    };
    let mut resp = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if method != "HEAD" {
        resp.extend_from_slice(body.as_bytes());
    }
    stream.write_all(&resp).await?;
    stream.shutdown().await
}

/// The host Prometheus should scrape: the bound address, or this host's name for `0.0.0.0`.
fn target_host(a: SocketAddr) -> String {
    let ip = a.ip();
    if ip.is_unspecified() {
        return hostname().unwrap_or_else(|| "127.0.0.1".into());
    }
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("[{v6}]"),
    }
}

/// The machine's host name, as the kernel reports it (`/proc/sys/kernel/hostname`, the value
/// gethostname(2) returns on Linux; read as a file so no `unsafe` is needed here).
fn hostname() -> Option<String> {
    let s = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let s = s.trim().to_string();
    (!s.is_empty()).then_some(s)
}

/// A kernel id as a file name part (the id is a UUID from Jupyter; anything else is reduced).
fn file_part(s: &str) -> String {
    let p: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    if p.is_empty() { "kernel".into() } else { p }
}

/// The pid in a target file name `carbon-kernel-<pid>-<id>.json`.
pub fn pid_of_target(name: &str) -> Option<u32> {
    let rest = name.strip_prefix(SD_PREFIX)?.strip_suffix(".json")?;
    rest.split('-').next()?.parse().ok()
}

/// Whether a process runs (a process of another user counts; a zombie, killed and not yet reaped
/// by its parent, does not).
fn pid_alive(pid: u32) -> bool {
    crate::runtime::child::process_exists(pid) && !is_zombie(pid)
}

/// `Z` in `/proc/PID/stat` (the state follows the `)` closing the command name).
fn is_zombie(pid: u32) -> bool {
    carbon_magics::carbon::procfs::ProcReader::new("/proc")
        .stat_line(pid, |l| l.state == 'Z')
        .unwrap_or(false)
}

/// Removes the target files of kernels whose process is gone; returns how many.
pub fn remove_stale_targets(dir: &Path) -> usize {
    let me = std::process::id();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut n = 0;
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        // `.NAME.tmp`: a temporary file left by a kernel killed mid-write.
        let tmp_pid = name
            .strip_prefix('.')
            .and_then(|n| n.strip_suffix(".tmp"))
            .and_then(pid_of_target);
        let Some(pid) = pid_of_target(&name).or(tmp_pid) else {
            continue;
        };
        if pid != me && !pid_alive(pid) && std::fs::remove_file(e.path()).is_ok() {
            log::info!("metrics: removed the target of kernel pid {pid}, which no longer runs");
            n += 1;
        }
    }
    n
}

/// Writes `[{"targets": ["HOST:PORT"], "labels": {}}]` atomically (temp file + rename), after
/// removing stale targets. `None` (said once) when the folder cannot be written.
fn write_target(dir: &Path, addr: SocketAddr, kernel_id: &str) -> Option<PathBuf> {
    let pid = std::process::id();
    let name = format!("{SD_PREFIX}{pid}-{}.json", file_part(kernel_id));
    let path = dir.join(&name);
    let tmp = dir.join(format!(".{name}.tmp"));
    let body = serde_json::json!([{
        "targets": [format!("{}:{}", target_host(addr), addr.port())],
        "labels": {},
    }]);
    let res = std::fs::create_dir_all(dir)
        .map(|()| remove_stale_targets(dir))
        .and_then(|_| std::fs::write(&tmp, format!("{body}\n")))
        .and_then(|()| std::fs::rename(&tmp, &path));
    match res {
        Ok(()) => {
            log::info!("metrics: Prometheus target written to {}", path.display());
            Some(path)
        }
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            log::error!(
                "{SD_DIR_VAR}={}: cannot write this kernel's Prometheus target: {e}; /metrics is still served",
                dir.display()
            );
            set_status(format!(
                "http://{addr}/metrics (no file_sd target: {SD_DIR_VAR} is not writable)"
            ));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(kind: &str, language: &str) -> EmissionRecord {
        let zone = carbon_magics::carbon::intensity::zone(None).unwrap();
        let mut r = EmissionRecord::base("proj", "session", &zone, 1.0);
        r.kind = kind.into();
        r.language = language.into();
        r.status = "ok".into();
        r.cpu_energy = 1e-6;
        r.ram_energy = 2e-6;
        r.gpu_energy = 0.0;
        r.emissions = 3e-7;
        r.duration = 0.5;
        r.label = "SECRET_LABEL print('code')".into();
        r
    }

    fn id() -> Identity {
        Identity {
            user: "alice".into(),
            kernel_id: "k1".into(),
            course: Some("ml101".into()),
        }
    }

    #[test]
    fn counters_are_the_rows_sums_and_never_carry_labels_text() {
        let m = Metrics::new(&id());
        let mut llm = row("llm", "");
        llm.llm_provider = "openai".into();
        llm.llm_model = "gpt-4o-mini".into();
        llm.prompt_tokens = Some(12);
        llm.completion_tokens = Some(34);
        llm.label = "openai:gpt-4o-mini sk-SECRETKEY".into();
        m.observe(&[row("cell", "python"), row("cell", "python"), llm]);
        let text = m.encode();
        assert!(text.ends_with("# EOF\n"), "{text}");
        assert!(text.contains(
            "carbon_cells_total{user=\"alice\",kernel_id=\"k1\",course=\"ml101\",language=\"python\",status=\"ok\"} 2"
        ), "{text}");
        assert!(text.contains("carbon_llm_tokens_total{user=\"alice\",kernel_id=\"k1\",course=\"ml101\",provider=\"openai\",model=\"gpt-4o-mini\",direction=\"in\"} 12"), "{text}");
        assert!(
            text.contains(
                "carbon_kernel_info{user=\"alice\",kernel_id=\"k1\",course=\"ml101\",version="
            ),
            "{text}"
        );
        for secret in ["SECRET", "print(", "sk-", "/"] {
            let bad: Vec<&str> = text
                .lines()
                .filter(|l| !l.starts_with('#') && l.contains(secret))
                .collect();
            assert!(bad.is_empty(), "{secret} in {bad:?}");
        }
        // 2 rows × 1e-6 kWh of CPU = 7.2 J
        let cpu = text
            .lines()
            .find(|l| {
                l.starts_with("carbon_energy_joules_total")
                    && l.contains("component=\"cpu\"")
                    && l.contains("python")
            })
            .unwrap();
        let v: f64 = cpu.rsplit(' ').next().unwrap().parse().unwrap();
        assert!((v - 7.2).abs() < 1e-9, "{cpu}");
    }

    #[test]
    fn identity_from_the_connection_file_name() {
        let i = Identity::from_env(
            Path::new("/run/jupyter/kernel-1234-abcd.json"),
            Path::new("/home/x/nb"),
        );
        assert_eq!(i.kernel_id, "1234-abcd");
    }

    #[test]
    fn stale_targets_are_found_by_pid() {
        assert_eq!(pid_of_target("carbon-kernel-42-abc.json"), Some(42));
        assert_eq!(pid_of_target("carbon-kernel-x.json"), None);
        assert_eq!(pid_of_target("other.json"), None);
        let d = tempfile::tempdir().unwrap();
        // pid 0x7fff_fff0 does not exist (above pid_max).
        let dead = d.path().join("carbon-kernel-2147483632-dead.json");
        let mine = d
            .path()
            .join(format!("carbon-kernel-{}-me.json", std::process::id()));
        let other = d.path().join("prometheus.json");
        for p in [&dead, &mine, &other] {
            std::fs::write(p, "[]").unwrap();
        }
        assert_eq!(remove_stale_targets(d.path()), 1);
        assert!(!dead.exists() && mine.exists() && other.exists());
    }

    #[test]
    fn addresses() {
        assert!(parse_addr("127.0.0.1:0").is_ok());
        assert_eq!(parse_addr(":9464").unwrap().port(), 9464);
        assert!(parse_addr("[::1]:9464").is_ok());
        assert!(parse_addr("localhost").is_err());
    }
}
