//! Test harness for igw's system tests: network namespaces, veth links and processes are
//! values whose destructors clean up, also while a test panics. Names start with `igw` and
//! carry the test process id and a counter, so parallel tests and leftovers never collide.
//!
//! Traffic rules (../shared/TESTBED.md): tests send only to loopback or to addresses of the
//! namespaces they created here; nothing here adds routes in the root namespace.
#![forbid(unsafe_code)]

pub mod frr;

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Fails the test with a clear message unless it runs as root with every tool on PATH.
/// System tests never skip silently: a machine that cannot run them must say so.
pub fn require_root(tools: &[&str]) {
    // SAFETY-free check: /proc/self/status Uid line, so no libc call is needed.
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let euid = status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .and_then(|l| l.split_whitespace().nth(2))
        .unwrap_or("");
    assert!(
        euid == "0",
        "this system test needs root (network namespaces, nftables, conntrack): run it as root, e.g. `sudo -E cargo test`"
    );
    let missing: Vec<&str> = tools
        .iter()
        .copied()
        .filter(|t| which(t).is_none())
        .collect();
    assert!(
        missing.is_empty(),
        "this system test needs {missing:?} on PATH; install them (`make deps`, or see .ci/run)"
    );
}

/// Finds a program on PATH (or an absolute path that exists).
pub fn which(tool: &str) -> Option<PathBuf> {
    if tool.contains('/') {
        return Path::new(tool).exists().then(|| PathBuf::from(tool));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(
            ["/usr/sbin", "/sbin", "/usr/lib/frr"]
                .iter()
                .map(PathBuf::from),
        )
        .map(|d| d.join(tool))
        .find(|p| p.exists())
}

/// A unique name `igw<tag><pid>x<n>`, at most 15 characters (interface-name limit too).
pub fn unique_name(tag: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let pid = std::process::id() % 100_000;
    let tag: String = tag
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .take(4)
        .collect();
    format!("igw{tag}{pid}x{n}")
}

/// Runs a command to completion; panics with its stderr if it fails.
pub fn run(argv: &[&str]) -> Output {
    let out = try_run(argv);
    assert!(
        out.status.success(),
        "command failed: {argv:?}\nstatus: {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Runs a command to completion and returns its output, whatever the status.
pub fn try_run(argv: &[&str]) -> Output {
    Command::new(argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {argv:?}: {e}"))
}

/// A network namespace, deleted on drop after the processes spawned in it are killed.
#[derive(Clone)]
pub struct Netns {
    inner: Arc<NsInner>,
}

struct NsInner {
    name: String,
    procs: Mutex<Vec<u32>>,
}

impl fmt::Debug for Netns {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Netns({})", self.inner.name)
    }
}

impl Netns {
    /// Creates `igw<tag><pid>x<n>` with loopback up.
    pub fn new(tag: &str) -> Self {
        let name = unique_name(tag);
        run(&["ip", "netns", "add", &name]);
        let ns = Netns {
            inner: Arc::new(NsInner {
                name,
                procs: Mutex::new(Vec::new()),
            }),
        };
        ns.exec(&["ip", "link", "set", "lo", "up"]);
        ns
    }

    pub fn name(&self) -> &str {
        &self.inner.name
    }

    fn argv<'a>(&'a self, cmd: &[&'a str]) -> Vec<&'a str> {
        let mut v = vec!["ip", "netns", "exec", self.name()];
        v.extend_from_slice(cmd);
        v
    }

    /// Runs a command inside the namespace; panics with stderr on failure.
    pub fn exec(&self, cmd: &[&str]) -> Output {
        run(&self.argv(cmd))
    }

    /// Runs a command inside the namespace and returns its output whatever the status.
    pub fn try_exec(&self, cmd: &[&str]) -> Output {
        try_run(&self.argv(cmd))
    }

    /// Runs a command with `stdin` fed from `input`; panics on failure.
    pub fn exec_stdin(&self, cmd: &[&str], input: &[u8]) -> Output {
        use std::io::Write;
        let argv = self.argv(cmd);
        let mut child = Command::new(argv[0])
            .args(&argv[1..])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {argv:?}: {e}"));
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input)
            .expect("write stdin");
        let out = child.wait_with_output().expect("wait");
        assert!(
            out.status.success(),
            "command failed: {argv:?}\nstderr: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// Stdout of a command run inside the namespace, as a string.
    pub fn stdout(&self, cmd: &[&str]) -> String {
        String::from_utf8_lossy(&self.exec(cmd).stdout).into_owned()
    }

    /// Starts a long-running process inside the namespace. It is killed (by PID) when the
    /// returned guard or, at the latest, the namespace is dropped. Its stdout and stderr go
    /// to `log` if given (read it on failure), else are discarded.
    pub fn spawn(&self, cmd: &[&str], log: Option<&Path>) -> Proc {
        let argv = self.argv(cmd);
        let mut c = Command::new(argv[0]);
        c.args(&argv[1..]).stdin(Stdio::null());
        match log {
            Some(p) => {
                let f = std::fs::File::create(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
                let f2 = f.try_clone().expect("clone log fd");
                c.stdout(f).stderr(f2);
            }
            None => {
                c.stdout(Stdio::null()).stderr(Stdio::null());
            }
        }
        let child = c
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn {argv:?}: {e}"));
        self.inner.procs.lock().expect("procs").push(child.id());
        Proc {
            child: Some(child),
            log: log.map(Path::to_path_buf),
            argv: cmd.join(" "),
        }
    }

    /// Records a PID (e.g. a daemon that forked) to be killed when the namespace drops.
    pub fn adopt_pid(&self, pid: u32) {
        self.inner.procs.lock().expect("procs").push(pid);
    }

    /// Sets a sysctl inside the namespace (`net.ipv4.ip_forward=1`).
    pub fn sysctl(&self, kv: &str) {
        self.exec(&["sysctl", "-qw", kv]);
    }

    /// `ip <args>` inside the namespace.
    pub fn ip(&self, args: &[&str]) -> Output {
        let mut v = vec!["ip"];
        v.extend_from_slice(args);
        self.exec(&v)
    }
}

impl Drop for NsInner {
    fn drop(&mut self) {
        let pids = std::mem::take(&mut *self.procs.lock().unwrap_or_else(|e| e.into_inner()));
        for pid in pids {
            kill(pid);
        }
        // Any process still inside (a daemon that forked away from us) must die too, or the
        // namespace lingers; `ip netns pids` lists exactly those, by PID.
        let out = try_run(&["ip", "netns", "pids", &self.name]);
        for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            if let Ok(pid) = pid.parse() {
                kill(pid);
            }
        }
        let _ = try_run(&["ip", "netns", "del", &self.name]);
    }
}

fn kill(pid: u32) {
    let _ = Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .stderr(Stdio::null())
        .status();
}

/// A process started in a namespace; killed by PID on drop.
#[derive(Debug)]
pub struct Proc {
    child: Option<Child>,
    log: Option<PathBuf>,
    argv: String,
}

impl Proc {
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// The process's output so far (if started with a log file).
    pub fn log(&self) -> String {
        self.log
            .as_ref()
            .and_then(|p| std::fs::read_to_string(p).ok())
            .unwrap_or_default()
    }

    /// True while the process runs.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// Sends a signal by PID (e.g. "-TERM", "-STOP", "-CONT", "-HUP").
    pub fn signal(&self, sig: &str) {
        let _ = Command::new("kill")
            .args([sig, &self.pid().to_string()])
            .status();
    }

    /// Waits at most `limit` for the process to exit; returns its status if it did.
    pub fn wait_timeout(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Some(Ok(Some(s))) = self.child.as_mut().map(|c| c.try_wait()) {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Kills the process now and waits for it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn describe(&self) -> &str {
        &self.argv
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Creates a veth pair between two namespaces, with addresses (CIDR notation, may be
/// empty to leave a side unaddressed) and both ends up.
pub fn veth(a: &Netns, a_if: &str, a_addr: &str, b: &Netns, b_if: &str, b_addr: &str) {
    // Create in `a` directly, so no interface ever exists in the root namespace.
    a.ip(&[
        "link",
        "add",
        a_if,
        "type",
        "veth",
        "peer",
        "name",
        b_if,
        "netns",
        b.name(),
    ]);
    for (ns, ifname, addr) in [(a, a_if, a_addr), (b, b_if, b_addr)] {
        for one in addr.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let mut args = vec!["addr", "add", one, "dev", ifname];
            if one.contains(':') {
                args.push("nodad");
            }
            ns.ip(&args);
        }
        ns.ip(&["link", "set", ifname, "up"]);
    }
}

/// Polls `f` every 20 ms until it returns `Some`, for at most `limit`. Returns `None` on
/// timeout; the caller decides what that means (and prints diagnostics).
pub fn wait_for<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if start.elapsed() >= limit {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A temporary directory removed on drop (for configs, logs and sockets of one test).
#[derive(Debug)]
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    pub fn new(tag: &str) -> Self {
        let path = std::env::temp_dir().join(unique_name(tag));
        std::fs::create_dir_all(&path).expect("create temp dir");
        Self { path }
    }
    pub fn path(&self) -> &Path {
        &self.path
    }
    pub fn join(&self, p: &str) -> PathBuf {
        self.path.join(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::env::var_os("IGW_KEEP_TEMP").is_none() {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_short() {
        let a = unique_name("tenant");
        let b = unique_name("tenant");
        assert_ne!(a, b);
        assert!(a.starts_with("igwtena"));
        assert!(a.len() <= 15, "{a}");
    }

    #[test]
    fn frr_starts_in_a_namespace_and_answers() {
        let ns = Netns::new("frr");
        // A bfd block before router bgp: applied whole by vtysh, each part to its daemon.
        let conf = "frr defaults datacenter\nhostname t\nbfd\n profile p\n  detect-multiplier 3\n exit\nexit\nrouter bgp 65000\n bgp router-id 198.19.0.254\nexit\n";
        let frr = frr::Frr::start(&ns, conf, &["bfdd", "bgpd"]);
        let out = frr.vtysh(&["show bgp summary json"]);
        assert!(out.trim_start().starts_with('{'), "{out}");
        let running = frr.vtysh(&["show running-config"]);
        assert!(running.contains("router bgp 65000"), "{running}");
        assert!(running.contains("profile p"), "{running}");
    }

    #[test]
    fn namespaces_link_and_clean_up() {
        require_root(&["ip", "ping"]);
        let name;
        {
            let a = Netns::new("ha");
            let b = Netns::new("hb");
            name = a.name().to_string();
            veth(&a, "v0", "198.19.9.1/30", &b, "v1", "198.19.9.2/30");
            a.exec(&["ping", "-c", "1", "-W", "2", "198.19.9.2"]);
            let mut p = b.spawn(&["sleep", "30"], None);
            assert!(p.alive());
        }
        let list = String::from_utf8_lossy(&run(&["ip", "netns", "list"]).stdout).to_string();
        assert!(!list.contains(&name), "{name} left behind: {list}");
    }
}
