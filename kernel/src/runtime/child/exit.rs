//! How a child ended, in words.

use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;

/// Name of a Linux signal number (signal(7), x86/ARM numbering).
pub fn signal_name(sig: i32) -> Option<&'static str> {
    Some(match sig {
        1 => "SIGHUP",
        2 => "SIGINT",
        3 => "SIGQUIT",
        4 => "SIGILL",
        5 => "SIGTRAP",
        6 => "SIGABRT",
        7 => "SIGBUS",
        8 => "SIGFPE",
        9 => "SIGKILL",
        10 => "SIGUSR1",
        11 => "SIGSEGV",
        12 => "SIGUSR2",
        13 => "SIGPIPE",
        14 => "SIGALRM",
        15 => "SIGTERM",
        24 => "SIGXCPU",
        25 => "SIGXFSZ",
        31 => "SIGSYS",
        _ => return None,
    })
}

/// How a child ended, in words: "exited with status 1", "killed by signal 9 (SIGKILL) — possibly
/// the OOM killer". `oom_killed`: the cgroup's `oom_kill` counter rose meanwhile (see
/// [`oom_kill_count`]), so a SIGKILL was the OOM killer's for sure.
pub fn describe_exit(status: ExitStatus, oom_killed: bool) -> String {
    if let Some(code) = status.code() {
        return format!("exited with status {code}");
    }
    let Some(sig) = status.signal() else {
        return format!("ended: {status}");
    };
    let name = signal_name(sig).unwrap_or("unknown signal");
    let mut s = format!("killed by signal {sig} ({name})");
    match sig {
        9 if oom_killed => s.push_str(" — by the OOM killer (out of memory)"),
        9 => s.push_str(" — possibly the OOM killer"),
        11 | 7 => s.push_str(" — a crash in native code"),
        6 => s.push_str(" — aborted"),
        _ => {}
    }
    if status.core_dumped() {
        s.push_str(", core dumped");
    }
    s
}

/// The `oom_kill` counter of the kernel's cgroup (v2 `memory.events`), when readable. Compared
/// before and after a child's death, it tells an OOM kill from any other SIGKILL.
pub fn oom_kill_count() -> Option<u64> {
    let cg = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    // cgroup v2 line: "0::/some/path" (cgroups(7))
    let rel = cg.lines().find_map(|l| l.strip_prefix("0::"))?;
    let mut dir = std::path::Path::new("/sys/fs/cgroup").join(rel.trim().trim_start_matches('/'));
    // the kernel's own cgroup (`carbon-kernel-<pid>`, see `cgroup`) has no memory controller:
    // the counter of the cgroup it was made in counts it (hierarchical, cgroup-v2.rst
    // "memory.events")
    if dir
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with("carbon-kernel-"))
        && let Some(p) = dir.parent()
    {
        dir = p.to_path_buf();
    }
    let events = std::fs::read_to_string(dir.join("memory.events")).ok()?;
    events
        .lines()
        .find_map(|l| l.strip_prefix("oom_kill "))
        .and_then(|v| v.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_descriptions_name_the_signal() {
        // raw wait statuses (wait(2)): low 7 bits = signal, 0x80 = core dumped, else code << 8
        let s = ExitStatus::from_raw(9);
        assert_eq!(
            describe_exit(s, false),
            "killed by signal 9 (SIGKILL) — possibly the OOM killer"
        );
        assert_eq!(
            describe_exit(s, true),
            "killed by signal 9 (SIGKILL) — by the OOM killer (out of memory)"
        );
        assert_eq!(
            describe_exit(ExitStatus::from_raw(11 | 0x80), false),
            "killed by signal 11 (SIGSEGV) — a crash in native code, core dumped"
        );
        assert_eq!(
            describe_exit(ExitStatus::from_raw(15), false),
            "killed by signal 15 (SIGTERM)"
        );
        assert_eq!(
            describe_exit(ExitStatus::from_raw(40), false),
            "killed by signal 40 (unknown signal)"
        );
        assert_eq!(
            describe_exit(ExitStatus::from_raw(1 << 8), false),
            "exited with status 1"
        );
    }
}
