//! Measured energy of a request to a server on this machine (`local` or `ollama` on a loopback
//! address): the process that owns the listening socket is found through `/proc` (the TCP tables
//! `net/tcp` and `net/tcp6` give the socket's inode, the `fd` links of each process give its
//! owner), its process tree is metered for the request's duration with the sensors of `%%carbon`
//! ([`Meter`]: RAPL where readable, else CPU time × TDP; RAM; NVML), and the server's connections
//! are checked during the request: when another client was connected, or the owner cannot be
//! found (another user's process, a container, another network namespace), the report says so and
//! shows no figure rather than a guess.
//!
//! The `/proc` root is injectable (`CARBON_PROC_ROOT`, like the meter's), so tests lay out
//! real-shaped files.

use super::providers::{LlmConfig, ModelSpec, ProviderKind};
use crate::carbon::intensity::Zone;
use crate::carbon::meter::{Measurement, Meter, MeterConfig};
use crate::carbon::sensor::Scope;
use crate::units::{Joules, KgCo2};
use std::collections::{BTreeSet, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// TCP state `ESTABLISHED` in `/proc/net/tcp` (`TCP_ESTABLISHED` = 1, include/net/tcp_states.h).
const TCP_ESTABLISHED: u8 = 0x01;
/// TCP state `LISTEN` (`TCP_LISTEN` = 10, include/net/tcp_states.h).
const TCP_LISTEN: u8 = 0x0A;
/// How often the server's connections are checked while a request runs: often enough to see a
/// second client's request of a few hundred milliseconds, and cheap (two small files).
const CHECK_EVERY: Duration = Duration::from_millis(200);
/// How often the meter accumulates during a long request (counters read in between, so a RAPL
/// counter cannot wrap twice unseen).
const SAMPLE_EVERY: Duration = Duration::from_secs(1);

/// Programs that listen on a port only to forward its connections elsewhere (a container, a VM,
/// another machine): metering them would measure the forwarder, not the model. Their process
/// names (`/proc/<pid>/stat` field 2, at most 15 bytes): Docker's and rootless Podman's port
/// proxies, the user-mode network stacks of rootless containers and VMs, Docker Desktop's and
/// Podman machine's proxies, `kubectl port-forward`, `ssh -L` tunnels and socat relays.
const FORWARDERS: &[&str] = &[
    "docker-proxy",
    "rootlessport",
    "rootlesskit",
    "slirp4netns",
    "pasta",
    "passt",
    "vpnkit",
    "gvproxy",
    "kubectl",
    "ssh",
    "socat",
];

/// One socket of `/proc/net/tcp` or `/proc/net/tcp6`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpSocket {
    /// Local address.
    pub local: SocketAddr,
    /// Remote address.
    pub remote: SocketAddr,
    /// State (`0A` listen, `01` established, …, include/net/tcp_states.h).
    pub state: u8,
    /// Owner's user id.
    pub uid: u32,
    /// Socket inode (0 for sockets no process holds, e.g. `TIME_WAIT`).
    pub inode: u64,
}

/// An address of the tables: `0100007F:1F40` (IPv4) or 32 hex digits (IPv6), then the port. The
/// kernel prints each 32-bit word of the address as a number in the machine's byte order
/// (`%08X` of the raw word, net/ipv4/tcp_ipv4.c and net/ipv6/tcp_ipv6.c), the port in host order.
fn parse_addr(s: &str) -> Option<SocketAddr> {
    let (ip, port) = s.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let word = |h: &str| u32::from_str_radix(h, 16).ok().map(u32::to_ne_bytes);
    let ip = match ip.len() {
        8 => IpAddr::V4(Ipv4Addr::from(word(ip)?)),
        32 => {
            let mut b = [0u8; 16];
            for (i, chunk) in b.chunks_mut(4).enumerate() {
                chunk.copy_from_slice(&word(ip.get(i * 8..i * 8 + 8)?)?);
            }
            IpAddr::V6(Ipv6Addr::from(b))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// Parses one TCP table (`/proc/net/tcp` or `tcp6`); malformed lines are skipped.
pub fn parse_tcp_table(text: &str) -> Vec<TcpSocket> {
    text.lines()
        .skip(1)
        .filter_map(|l| {
            // sl local rem st tx:rx tr:when retrnsmt uid timeout inode …
            let f: Vec<&str> = l.split_whitespace().collect();
            Some(TcpSocket {
                local: parse_addr(f.get(1)?)?,
                remote: parse_addr(f.get(2)?)?,
                state: u8::from_str_radix(f.get(3)?, 16).ok()?,
                uid: f.get(7)?.parse().ok()?,
                inode: f.get(9)?.parse().ok()?,
            })
        })
        .collect()
}

/// The loopback address a base URL points at (`http://127.0.0.1:8000/v1`, `http://localhost:…`,
/// `http://[::1]:…`), as the host's addresses and the port; `None` for any other host.
pub fn loopback_target(base_url: &str) -> Option<(Vec<IpAddr>, u16)> {
    let url = reqwest::Url::parse(base_url).ok()?;
    let port = url.port_or_known_default()?;
    let host = url
        .host_str()?
        .trim_start_matches('[')
        .trim_end_matches(']');
    let host = host.trim_end_matches('.');
    if host.eq_ignore_ascii_case("localhost") {
        // what `localhost` resolves to (RFC 6761 §6.3: always loopback)
        return Some((
            vec![Ipv4Addr::LOCALHOST.into(), Ipv6Addr::LOCALHOST.into()],
            port,
        ));
    }
    let ip: IpAddr = host.parse().ok()?;
    is_loopback(ip).then(|| (vec![ip], port))
}

fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

/// The IPv4 form of an IPv4-mapped IPv6 address (`::ffff:127.0.0.1`), else the address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Whether a socket listening on `listen` accepts connections to `target`.
fn accepts(listen: IpAddr, target: IpAddr) -> bool {
    let (l, t) = (canonical(listen), canonical(target));
    l == t
        || match listen {
            IpAddr::V4(v4) => v4.is_unspecified() && t.is_ipv4(),
            // `::` takes IPv6 and, unless the socket is IPV6_V6ONLY, IPv4 too
            IpAddr::V6(v6) => v6.is_unspecified(),
        }
}

/// The process(es) serving a port, found through `/proc`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerProcess {
    /// The topmost processes holding the listening socket (a forking server shares it with its
    /// workers, who are then metered as their descendants).
    pub pids: Vec<u32>,
    /// The first one's name (`/proc/<pid>/stat` field 2), e.g. `python3` or `ollama`.
    pub name: String,
    /// The listening address.
    pub listen: SocketAddr,
    /// The listening socket's inode.
    pub inode: u64,
}

impl ServerProcess {
    /// `python3 (pid 1234) listening on 127.0.0.1:8000`.
    pub fn describe(&self) -> String {
        let pids = self
            .pids
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        let s = if self.pids.len() == 1 { "" } else { "s" };
        format!("{} (pid{s} {pids}) listening on {}", self.name, self.listen)
    }
}

/// Reads the TCP tables and the processes' descriptors under a `/proc` root.
#[derive(Debug, Clone)]
pub struct ProcNet {
    root: PathBuf,
}

impl ProcNet {
    /// A reader of `root` (normally `/proc`).
    pub fn new(root: impl Into<PathBuf>) -> ProcNet {
        ProcNet { root: root.into() }
    }

    /// Every TCP socket of this network namespace, IPv4 and IPv6 (a missing table is empty).
    pub fn sockets(&self) -> Vec<TcpSocket> {
        ["net/tcp", "net/tcp6"]
            .iter()
            .flat_map(|t| {
                std::fs::read_to_string(self.root.join(t))
                    .map(|s| parse_tcp_table(&s))
                    .unwrap_or_default()
            })
            .collect()
    }

    /// The socket inodes `pid` holds (`fd/*` links `socket:[N]`); `Err` when its descriptors
    /// cannot be read (another user's process, or it exited).
    pub fn socket_inodes(&self, pid: u32) -> std::io::Result<HashSet<u64>> {
        let mut out = HashSet::new();
        for e in std::fs::read_dir(self.root.join(pid.to_string()).join("fd"))?.flatten() {
            if let Ok(target) = std::fs::read_link(e.path())
                && let Some(n) = socket_inode(&target)
            {
                out.insert(n);
            }
        }
        Ok(out)
    }

    fn pids(&self) -> Vec<u32> {
        let Ok(dir) = std::fs::read_dir(&self.root) else {
            return Vec::new();
        };
        let mut v: Vec<u32> = dir
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse().ok())
            .collect();
        v.sort_unstable();
        v
    }

    fn stat_fields(&self, pid: u32) -> Option<(String, u32)> {
        let text = std::fs::read_to_string(self.root.join(pid.to_string()).join("stat")).ok()?;
        let l = crate::carbon::procfs::parse_stat_line(&text)?;
        Some((l.comm.to_string(), l.stat.ppid))
    }

    /// The owner of `pid`'s `/proc` entry (its real user), if readable.
    fn uid_of(&self, pid: u32) -> Option<u32> {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(self.root.join(pid.to_string()))
            .ok()
            .map(|m| m.uid())
    }

    /// Finds the process listening on `port` at one of `hosts`; `me` is the caller's pid (its user
    /// tells whether an unreadable owner is another user's).
    pub fn find_server(
        &self,
        hosts: &[IpAddr],
        port: u16,
        me: u32,
    ) -> Result<ServerProcess, String> {
        let where_ = hosts
            .first()
            .map(|h| SocketAddr::new(*h, port).to_string())
            .unwrap_or_else(|| format!("port {port}"));
        let sockets = self.sockets();
        let Some(listener) = sockets.iter().find(|s| {
            s.state == TCP_LISTEN
                && s.local.port() == port
                && hosts.iter().any(|h| accepts(s.local.ip(), *h))
        }) else {
            return Err(format!(
                "no process on this machine listens on {where_} in this network namespace (a server in a container, a VM or behind a port forward cannot be metered)"
            ));
        };
        let mut holders = Vec::new();
        let mut unreadable = 0usize;
        for pid in self.pids() {
            match self.socket_inodes(pid) {
                Ok(inodes) if inodes.contains(&listener.inode) => holders.push(pid),
                Ok(_) => {}
                Err(_) => unreadable += 1,
            }
        }
        if holders.is_empty() {
            let mine = self.uid_of(me);
            return Err(if mine.is_some_and(|u| u != listener.uid) {
                format!(
                    "the server on {} belongs to another user (uid {}): its process's descriptors (/proc/<pid>/fd) cannot be read, so its energy cannot be metered",
                    listener.local, listener.uid
                )
            } else if unreadable > 0 {
                format!(
                    "the process listening on {} was not found ({unreadable} process(es) whose descriptors cannot be read)",
                    listener.local
                )
            } else {
                format!(
                    "no process holding the socket listening on {} was found (it may run in another PID namespace, e.g. a container)",
                    listener.local
                )
            });
        }
        // A forking server's workers share the socket: keep the topmost holders, whose trees
        // contain the others.
        let parents: Vec<(u32, Option<(String, u32)>)> =
            holders.iter().map(|p| (*p, self.stat_fields(*p))).collect();
        let set: BTreeSet<u32> = holders.iter().copied().collect();
        let top: Vec<u32> = parents
            .iter()
            .filter(|(_, st)| !st.as_ref().is_some_and(|(_, ppid)| set.contains(ppid)))
            .map(|(p, _)| *p)
            .collect();
        let name = parents
            .iter()
            .find(|(p, _)| top.first() == Some(p))
            .and_then(|(_, st)| st.as_ref().map(|(c, _)| c.clone()))
            .unwrap_or_else(|| "?".into());
        if FORWARDERS.contains(&name.as_str()) {
            return Err(format!(
                "{} listening on {} forwards the connections elsewhere (a container, a VM or another machine): the server itself cannot be metered from here",
                name, listener.local
            ));
        }
        Ok(ServerProcess {
            pids: top,
            name,
            listen: listener.local,
            inode: listener.inode,
        })
    }

    /// The server's established connections whose client end another process holds: other
    /// clients (another program, another kernel, a browser). Connections from another machine
    /// count as other clients too.
    pub fn other_clients(&self, server: &ServerProcess, me: u32) -> usize {
        let sockets = self.sockets();
        let mine = self.socket_inodes(me).unwrap_or_default();
        let port = server.listen.port();
        let listen_ip = server.listen.ip();
        sockets
            .iter()
            .filter(|s| {
                s.state == TCP_ESTABLISHED
                    && s.local.port() == port
                    && accepts(listen_ip, s.local.ip())
            })
            .filter(|srv_end| {
                if !is_loopback(srv_end.remote.ip()) {
                    // a client on another machine
                    return true;
                }
                // the same connection seen from the client: local = the server end's remote. A
                // client end in any state counts (it may already be closing its side); one no
                // process holds (inode 0) or that is gone is a connection being closed.
                sockets
                    .iter()
                    .find(|c| same(c.local, srv_end.remote) && same(c.remote, srv_end.local))
                    .is_some_and(|c| {
                        c.inode != 0 && !mine.contains(&c.inode) && self.held_elsewhere(c, me)
                    })
            })
            .count()
    }

    /// Whether a client end that `me` does not hold belongs to another program: another
    /// process holds it, or another user's (whose descriptors may be unreadable). One that no
    /// process holds any more is ours being closed (its descriptor is gone before the socket).
    fn held_elsewhere(&self, client: &TcpSocket, me: u32) -> bool {
        if self.uid_of(me).is_some_and(|u| u != client.uid) {
            return true;
        }
        self.pids().into_iter().filter(|p| *p != me).any(|p| {
            self.socket_inodes(p)
                .is_ok_and(|inodes| inodes.contains(&client.inode))
        })
    }
}

fn same(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() == b.port() && canonical(a.ip()) == canonical(b.ip())
}

/// `socket:[12345]` → 12345.
fn socket_inode(link: &Path) -> Option<u64> {
    link.to_str()?
        .strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// The third figure of a request to a server on this machine.
#[derive(Debug, Clone, PartialEq)]
pub enum Measured {
    /// The server's process tree, metered while it served this request alone.
    Metered(Box<LocalMeasurement>),
    /// No figure, and why (the report says so instead of guessing).
    Unavailable {
        /// The server, when it was found.
        server: Option<ServerProcess>,
        /// Why there is no figure.
        reason: String,
    },
}

impl Measured {
    /// The measurement, when there is one.
    pub fn metered(&self) -> Option<&LocalMeasurement> {
        match self {
            Measured::Metered(m) => Some(m),
            Measured::Unavailable { .. } => None,
        }
    }
}

/// A server's process tree metered for one request.
#[derive(Debug, Clone, PartialEq)]
pub struct LocalMeasurement {
    /// The server.
    pub server: ServerProcess,
    /// What the meter read (energy without PUE, CPU seconds, sensors).
    pub measurement: Measurement,
    /// The zone of this machine (`CARBON_COUNTRY`), as for `%%carbon`.
    pub zone: Zone,
    /// This machine's PUE (`CARBON_PUE`).
    pub pue: f64,
    /// How many times the server's connections were checked during the request.
    pub checks: usize,
}

impl LocalMeasurement {
    /// Energy, PUE included.
    pub fn energy(&self) -> Joules {
        self.measurement.energy.total() * self.pue
    }

    /// Energy, PUE included, kWh.
    pub fn energy_kwh(&self) -> f64 {
        self.energy().kwh()
    }

    /// Emissions with this machine's zone.
    pub fn emissions(&self) -> KgCo2 {
        KgCo2::of(self.energy(), self.zone.g_per_kwh)
    }

    /// Joules per CPU second of the CPU model (TDP ÷ logical CPUs), when the CPU figure comes
    /// from the CPU-time × TDP model.
    pub fn tdp_watts_per_cpu(&self) -> Option<f64> {
        match &self.measurement.setup.cpu.kind {
            crate::carbon::sensor::SensorKind::TdpModel { tdp_w, .. } => {
                Some(tdp_w / (self.measurement.setup.machine.logical_cpus.max(1) as f64))
            }
            _ => None,
        }
    }

    /// `measured` when the CPU figure comes from a counter (RAPL), `estimated from measured CPU
    /// time` for the CPU-time × TDP model.
    pub fn method_word(&self) -> &'static str {
        if self.measurement.setup.cpu.kind.measured() {
            "measured (RAPL)"
        } else {
            "measured CPU time × TDP model"
        }
    }
}

struct ServerRun {
    server: ServerProcess,
    meter: Meter,
    /// Indices of the requests sent to it.
    users: Vec<usize>,
    done: Vec<usize>,
    others_max: usize,
    checks: usize,
    last_check: Instant,
    last_sample: Instant,
    result: Option<Measurement>,
}

/// The local servers of one `%llm`'s requests, metered while they answer. Built before the
/// requests start; [`LocalMeters::tick`] from the waiting loop; [`LocalMeters::finish`] when a
/// request ends; [`LocalMeters::take`] for its figure.
pub struct LocalMeters {
    net: ProcNet,
    me: u32,
    zone: Zone,
    pue: f64,
    /// Per request: `None` (not a local server), the index of its server, or why not.
    slots: Vec<Option<Result<usize, String>>>,
    runs: Vec<ServerRun>,
}

/// Whether requests of `spec` go to a server on this machine (`local` or `ollama` provider with a
/// loopback base URL), as the host's addresses and port.
pub fn local_target(cfg: &LlmConfig, spec: &ModelSpec) -> Option<(Vec<IpAddr>, u16)> {
    matches!(spec.provider, ProviderKind::Local | ProviderKind::Ollama)
        .then(|| loopback_target(&cfg.get(spec.provider).base_url))
        .flatten()
}

impl LocalMeters {
    /// Finds the server of each request to a local server and starts metering it. `meter` is the
    /// `%%carbon` configuration (sensors, TDP, roots; the scope is always the server's process
    /// tree), `zone` and `pue` this machine's.
    pub fn start(
        models: &[ModelSpec],
        cfg: &LlmConfig,
        meter: &MeterConfig,
        zone: Zone,
        pue: f64,
    ) -> LocalMeters {
        let mut m = LocalMeters {
            net: ProcNet::new(&meter.proc_root),
            me: std::process::id(),
            zone,
            pue,
            slots: Vec::with_capacity(models.len()),
            runs: Vec::new(),
        };
        for (idx, spec) in models.iter().enumerate() {
            let slot = local_target(cfg, spec).map(|(hosts, port)| {
                let server = m.net.find_server(&hosts, port, m.me)?;
                if let Some(i) = m.runs.iter().position(|r| r.server.inode == server.inode) {
                    m.runs[i].users.push(idx);
                    return Ok(i);
                }
                let mc = MeterConfig {
                    scope: Scope::Process,
                    ..meter.clone()
                };
                let others = m.net.other_clients(&server, m.me);
                let meter = Meter::new(mc);
                meter.start(&server.pids);
                let now = Instant::now();
                m.runs.push(ServerRun {
                    server,
                    meter,
                    users: vec![idx],
                    done: Vec::new(),
                    others_max: others,
                    checks: 1,
                    last_check: now,
                    last_sample: now,
                    result: None,
                });
                Ok(m.runs.len() - 1)
            });
            m.slots.push(slot);
        }
        m
    }

    /// [`LocalMeters::start`] with the `%%carbon` settings of `carbon`: its meter configuration,
    /// zone (`CARBON_COUNTRY`, else the world average) and PUE.
    pub fn for_session(
        models: &[ModelSpec],
        cfg: &LlmConfig,
        carbon: &crate::carbon::session::CarbonSession,
    ) -> LocalMeters {
        let c = carbon.config();
        let zone = crate::carbon::intensity::zone(c.country.as_deref())
            .or_else(|_| crate::carbon::intensity::zone(None))
            .unwrap_or_else(|_| unreachable!("the world average always resolves"));
        LocalMeters::start(models, cfg, &c.meter, zone, c.pue)
    }

    /// True when no request goes to a local server.
    pub fn is_empty(&self) -> bool {
        self.slots.iter().all(Option::is_none)
    }

    fn check(&mut self, i: usize) {
        let (net, me) = (&self.net, self.me);
        let r = &mut self.runs[i];
        r.others_max = r.others_max.max(net.other_clients(&r.server, me));
        r.checks += 1;
        r.last_check = Instant::now();
    }

    /// Checks the running servers' connections (at most every 200 ms) and reads the meters
    /// (every second); call it from the waiting loop.
    pub fn tick(&mut self) {
        for i in 0..self.runs.len() {
            if self.runs[i].result.is_some() {
                continue;
            }
            if self.runs[i].last_check.elapsed() >= CHECK_EVERY {
                self.check(i);
            }
            let r = &mut self.runs[i];
            if r.last_sample.elapsed() >= SAMPLE_EVERY {
                r.meter.sample();
                r.last_sample = Instant::now();
            }
        }
    }

    /// How long until [`LocalMeters::tick`] has something to do; `None` when nothing is metered.
    pub fn due_in(&self) -> Option<Duration> {
        self.runs
            .iter()
            .filter(|r| r.result.is_none())
            .map(|r| {
                CHECK_EVERY
                    .saturating_sub(r.last_check.elapsed())
                    .min(SAMPLE_EVERY.saturating_sub(r.last_sample.elapsed()))
            })
            .min()
    }

    /// Request `idx` has ended: its server's meter stops once every request sent to it has.
    pub fn finish(&mut self, idx: usize) {
        let Some(Some(Ok(i))) = self.slots.get(idx).cloned() else {
            return;
        };
        if self.runs[i].result.is_some() {
            return;
        }
        self.check(i);
        let r = &mut self.runs[i];
        if !r.done.contains(&idx) {
            r.done.push(idx);
        }
        if r.done.len() == r.users.len() {
            r.result = r.meter.stop();
        }
    }

    /// Request `idx`'s third figure; `None` when it did not go to a local server. Stops a meter
    /// still running (an abandoned request).
    pub fn take(&mut self, idx: usize) -> Option<Measured> {
        let slot = self.slots.get(idx).cloned().flatten()?;
        let i = match slot {
            Ok(i) => i,
            Err(reason) => {
                return Some(Measured::Unavailable {
                    server: None,
                    reason,
                });
            }
        };
        self.finish(idx);
        let r = &mut self.runs[i];
        if r.result.is_none() {
            r.result = r.meter.stop();
        }
        let unavailable = |reason: String| Measured::Unavailable {
            server: Some(r.server.clone()),
            reason,
        };
        if r.users.len() > 1 {
            return Some(unavailable(format!(
                "{} requests of this cell went to the same server at once ({}): its energy cannot be split between them",
                r.users.len(),
                r.server.describe()
            )));
        }
        if r.others_max > 0 {
            return Some(unavailable(format!(
                "the server ({}) also served {} other client connection(s) during the request: its energy is not this request's alone",
                r.server.describe(),
                r.others_max
            )));
        }
        Some(match &r.result {
            Some(m) => Measured::Metered(Box::new(LocalMeasurement {
                server: r.server.clone(),
                measurement: m.clone(),
                zone: self.zone.clone(),
                pue: self.pue,
                checks: r.checks,
            })),
            None => unavailable("the meter was not running".into()),
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    // Real lines of this machine's tables (x86-64, little-endian words).
    const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F40 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 546984 1 0000000043273584 100 0 0 10 0
   1: 00000000:07E8 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1062 1 0000000096b2d397 100 0 0 10 0
   2: 0100007F:1F40 0100007F:D0F2 01 00000000:00000000 00:00000000 00000000  1000        0 600001 1 0000000000000000 20 4 30 10 -1
   3: 0100007F:D0F2 0100007F:1F40 01 00000000:00000000 00:00000000 00000000  1000        0 600002 1 0000000000000000 20 4 30 10 -1
   4: 0100007F:D0F4 0100007F:1F40 06 00000000:00000000 03:00001186 00000000     0        0 0 3 0000000000000000
";
    const TCP6: &str = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000001000000:2BB3 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 700001 1 0000000000000000 100 0 0 10 0
   1: 0000000000000000FFFF00000100007F:0BB8 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 700002 1 0000000000000000 100 0 0 10 0
";

    #[cfg(target_endian = "little")]
    #[test]
    fn tables_parse_as_the_kernel_prints_them() {
        let v = parse_tcp_table(TCP);
        assert_eq!(v.len(), 5);
        assert_eq!(v[0].local, "127.0.0.1:8000".parse().unwrap());
        assert_eq!(v[0].state, TCP_LISTEN);
        assert_eq!((v[0].uid, v[0].inode), (1000, 546984));
        assert_eq!(v[1].local, "0.0.0.0:2024".parse().unwrap());
        assert_eq!(v[2].remote, "127.0.0.1:53490".parse().unwrap());
        assert_eq!(v[4].inode, 0);
        let v6 = parse_tcp_table(TCP6);
        assert_eq!(v6[0].local, "[::1]:11187".parse().unwrap());
        assert_eq!(v6[1].local, "[::ffff:127.0.0.1]:3000".parse().unwrap());
        assert!(parse_tcp_table("header\n  0: zz:1 00:0 0A").is_empty());
    }

    #[test]
    fn only_loopback_urls_are_local() {
        let t = |u: &str| loopback_target(u).map(|(h, p)| (h.len(), p));
        assert_eq!(t("http://127.0.0.1:8000/v1"), Some((1, 8000)));
        assert_eq!(t("http://LOCALHOST:11434/v1"), Some((2, 11434)));
        assert_eq!(t("http://[::1]:8080"), Some((1, 8080)));
        assert_eq!(t("http://127.1.2.3/v1"), Some((1, 80)));
        assert_eq!(t("http://[::ffff:127.0.0.1]:9/v1"), Some((1, 9)));
        assert_eq!(t("https://api.openai.com/v1"), None);
        assert_eq!(t("http://192.168.1.10:8000/v1"), None);
        assert_eq!(t("not a url"), None);
        assert!(accepts(
            "0.0.0.0".parse().unwrap(),
            "127.0.0.1".parse().unwrap()
        ));
        assert!(accepts("::".parse().unwrap(), "127.0.0.1".parse().unwrap()));
        assert!(!accepts("0.0.0.0".parse().unwrap(), "::1".parse().unwrap()));
        assert!(accepts(
            "::ffff:127.0.0.1".parse().unwrap(),
            "127.0.0.1".parse().unwrap()
        ));
    }

    /// A fake `/proc`: the tables above, and processes with `fd` links to sockets.
    pub(crate) struct FakeProc {
        pub(crate) dir: tempfile::TempDir,
    }

    impl FakeProc {
        pub(crate) fn new(tcp: &str, tcp6: &str) -> FakeProc {
            let f = FakeProc {
                dir: tempfile::tempdir().unwrap(),
            };
            std::fs::create_dir_all(f.root().join("net")).unwrap();
            std::fs::write(f.root().join("net/tcp"), tcp).unwrap();
            std::fs::write(f.root().join("net/tcp6"), tcp6).unwrap();
            std::fs::write(f.root().join("stat"), "cpu  100 0 0 900 0 0 0 0 0 0\n").unwrap();
            std::fs::write(f.root().join("meminfo"), "MemTotal:  16777216 kB\n").unwrap();
            f
        }
        pub(crate) fn root(&self) -> PathBuf {
            self.dir.path().to_path_buf()
        }
        pub(crate) fn process(&self, pid: u32, ppid: u32, name: &str, sockets: &[u64]) {
            let d = self.root().join(pid.to_string());
            std::fs::create_dir_all(d.join("fd")).unwrap();
            std::fs::write(
                d.join("stat"),
                crate::carbon::procfs::tests::stat_line(pid, name, ppid, [10, 5, 0, 0], 100),
            )
            .unwrap();
            for (i, s) in sockets.iter().enumerate() {
                std::os::unix::fs::symlink(
                    format!("socket:[{s}]"),
                    d.join("fd").join((i + 3).to_string()),
                )
                .unwrap();
            }
            std::os::unix::fs::symlink("/dev/null", d.join("fd/0")).unwrap();
        }
    }

    #[cfg(target_endian = "little")]
    #[test]
    fn the_owner_is_found_through_the_fd_links() {
        let f = FakeProc::new(TCP, TCP6);
        let net = ProcNet::new(f.root());
        // a forking server: 40 listens, its worker 41 shares the socket; 50 is the client
        f.process(40, 1, "llama-server", &[546984]);
        f.process(41, 40, "llama-server", &[546984, 600001]);
        f.process(50, 1, "carbon-kernel", &[600002]);
        let lo: Vec<IpAddr> = vec!["127.0.0.1".parse().unwrap()];
        let s = net.find_server(&lo, 8000, 50).unwrap();
        assert_eq!(s.pids, vec![40]);
        assert_eq!(s.name, "llama-server");
        assert_eq!(
            s.describe(),
            "llama-server (pid 40) listening on 127.0.0.1:8000"
        );
        // the one established connection is the kernel's own
        assert_eq!(net.other_clients(&s, 50), 0);
        // seen from another process, it is another client's
        assert_eq!(net.other_clients(&s, 41), 1);
        // a container's port, published by Docker's proxy: not the server itself
        let f2 = FakeProc::new(TCP, TCP6);
        f2.process(60, 1, "docker-proxy", &[546984]);
        let e = ProcNet::new(f2.root())
            .find_server(&lo, 8000, 50)
            .unwrap_err();
        assert!(
            e.contains("docker-proxy listening on 127.0.0.1:8000 forwards"),
            "{e}"
        );
        // a ::ffff:127.0.0.1 listener accepts 127.0.0.1, but no process here holds it
        let e = net.find_server(&lo, 3000, 50).unwrap_err();
        assert!(e.contains("[::ffff:127.0.0.1]:3000"), "{e}");
        // a wildcard listener accepts 127.0.0.1 too
        let e = net.find_server(&lo, 2024, 50).unwrap_err();
        assert!(e.contains("0.0.0.0:2024"), "{e}");
        let e = net.find_server(&lo, 9999, 50).unwrap_err();
        assert!(
            e.contains("no process on this machine listens on 127.0.0.1:9999"),
            "{e}"
        );
    }

    #[cfg(target_endian = "little")]
    #[test]
    fn another_users_server_is_not_guessed() {
        let f = FakeProc::new(TCP, TCP6);
        // the owner's fd folder cannot be read: it is absent from this root; the socket's
        // uid (1000) differs from the fake root's owner only when the test does not run as 1000
        f.process(50, 1, "carbon-kernel", &[600002]);
        let me_uid = {
            use std::os::unix::fs::MetadataExt;
            std::fs::metadata(f.root().join("50")).unwrap().uid()
        };
        let lo: Vec<IpAddr> = vec!["::1".parse().unwrap()];
        let e = ProcNet::new(f.root())
            .find_server(&lo, 11187, 50)
            .unwrap_err();
        if me_uid != 1000 {
            assert!(e.contains("another user (uid 1000)"), "{e}");
        } else {
            assert!(
                e.contains("was not found") || e.contains("was found"),
                "{e}"
            );
        }
    }

    /// The loopback test server runs in this process: its owner is this process, and this
    /// process's own connection to it is not another client's; a second program's is.
    #[test]
    fn the_in_process_test_server_is_owned_by_this_process() {
        use crate::testing::llm_server::{Reply, Server};
        let srv = Server::start(|_, _| Reply::raw(200, "ok"));
        let url = srv.url("/v1");
        let (hosts, port) = loopback_target(&url).unwrap();
        let net = ProcNet::new("/proc");
        let me = std::process::id();
        let s = net.find_server(&hosts, port, me).unwrap();
        assert_eq!(s.pids, vec![me], "{s:?}");
        let before = net.other_clients(&s, me);
        let _mine = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(net.other_clients(&s, me), before);
        // another program connects and holds the connection
        let mut other = std::process::Command::new("bash")
            .arg("-c")
            .arg(format!("exec 3<>/dev/tcp/127.0.0.1/{port}; sleep 5"))
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while net.other_clients(&s, me) == before && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let seen = net.other_clients(&s, me);
        let _ = other.kill();
        let _ = other.wait();
        assert_eq!(seen, before + 1);
    }

    fn meters_on(f: &FakeProc, models: &[&str]) -> LocalMeters {
        let mut st = crate::config::Settings::empty();
        st.set("LLM_LOCAL_BASE_URL", "http://127.0.0.1:8000/v1");
        st.set("OLLAMA_BASE_URL", "http://localhost:9999/v1");
        let cfg = LlmConfig::from_settings(&st);
        let specs: Vec<ModelSpec> = models.iter().map(|m| cfg.resolve(m).unwrap()).collect();
        let mc = MeterConfig {
            scope: Scope::Machine, // replaced: a server is always metered as its process tree
            tdp_w: Some(100.0),
            powercap_root: f.root().join("no-powercap"),
            proc_root: f.root(),
            nvml: crate::carbon::gpu::NvmlChoice::Disabled,
        };
        let zone = crate::carbon::intensity::zone(Some("FRA")).unwrap();
        LocalMeters::start(&specs, &cfg, &mc, zone, 1.5)
    }

    /// A metered request (2.5 CPU s of the server at 100 W TDP), and one whose server had
    /// another client, for the report's and the row's tests.
    #[cfg(target_endian = "little")]
    pub(crate) fn examples() -> (Measured, Measured) {
        let f = FakeProc::new(TCP, TCP6);
        f.process(40, 1, "llama-server", &[546984, 600001]);
        f.process(std::process::id(), 1, "carbon-kernel", &[600002]);
        let mut m = meters_on(&f, &["local:smollm2"]);
        std::fs::write(
            f.root().join("40/stat"),
            crate::carbon::procfs::tests::stat_line(40, "llama-server", 1, [210, 55, 0, 0], 100),
        )
        .unwrap();
        let metered = m.take(0).unwrap();
        let g = FakeProc::new(TCP, TCP6);
        g.process(40, 1, "llama-server", &[546984, 600001]);
        g.process(77, 1, "curl", &[600002]);
        g.process(std::process::id(), 1, "carbon-kernel", &[]);
        let shared = meters_on(&g, &["local:smollm2"]).take(0).unwrap();
        (metered, shared)
    }

    #[cfg(target_endian = "little")]
    #[test]
    fn a_local_request_is_metered_as_the_servers_cpu_time_times_the_tdp_share() {
        let f = FakeProc::new(TCP, TCP6);
        f.process(40, 1, "llama-server", &[546984, 600001]);
        // this process holds the client end (600002): the connection is the request's own
        f.process(std::process::id(), 1, "carbon-kernel", &[600002]);
        let mut m = meters_on(&f, &["local:smollm2", "openai:gpt-4o", "ollama:llama3"]);
        assert!(!m.is_empty());
        // the server works 2.5 s of CPU (250 ticks) during the request
        std::fs::write(
            f.root().join("40/stat"),
            crate::carbon::procfs::tests::stat_line(40, "llama-server", 1, [210, 55, 0, 0], 100),
        )
        .unwrap();
        m.tick();
        m.finish(0);
        let got = m.take(0).unwrap();
        let lm = got.metered().unwrap_or_else(|| panic!("{got:?}"));
        assert_eq!(lm.server.pids, vec![40]);
        let n = lm.measurement.setup.machine.logical_cpus as f64;
        let cpu_s = 250.0 * lm.measurement.setup.tick_secs;
        assert!((lm.measurement.cpu_seconds - cpu_s).abs() < 1e-9);
        assert_eq!(lm.tdp_watts_per_cpu(), Some(100.0 / n));
        assert!((lm.measurement.energy.cpu.0 - 100.0 * cpu_s / n).abs() < 1e-9);
        // PUE and this machine's zone (France) apply
        assert!((lm.energy().0 - lm.measurement.energy.total().0 * 1.5).abs() < 1e-9);
        assert!(lm.emissions().0 > 0.0);
        assert_eq!(lm.zone.iso3, "FRA");
        // a cloud provider gets no third figure; ollama on localhost:9999 has no listener
        assert_eq!(m.take(1), None);
        match m.take(2) {
            Some(Measured::Unavailable {
                server: None,
                reason,
            }) => {
                assert!(reason.contains("listens on 127.0.0.1:9999"), "{reason}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[cfg(target_endian = "little")]
    #[test]
    fn a_server_with_another_client_or_two_requests_gets_no_figure() {
        let f = FakeProc::new(TCP, TCP6);
        f.process(40, 1, "llama-server", &[546984, 600001]);
        // the client end (600002) belongs to another program, not this process
        f.process(77, 1, "curl", &[600002]);
        f.process(std::process::id(), 1, "carbon-kernel", &[]);
        let mut m = meters_on(&f, &["local:smollm2"]);
        m.finish(0);
        match m.take(0) {
            Some(Measured::Unavailable {
                server: Some(s),
                reason,
            }) => {
                assert_eq!(s.pids, vec![40]);
                assert!(reason.contains("1 other client connection"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        // two requests of one cell to the same server at once
        let f = FakeProc::new(TCP, TCP6);
        f.process(40, 1, "llama-server", &[546984]);
        f.process(std::process::id(), 1, "carbon-kernel", &[]);
        let mut m = meters_on(&f, &["local:a", "local:b"]);
        for i in 0..2 {
            let r = m.take(i).unwrap();
            assert!(
                matches!(&r, Measured::Unavailable { reason, .. } if reason.contains("2 requests of this cell")),
                "{r:?}"
            );
        }
    }
}
