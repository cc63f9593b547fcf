//! Helpers: start the binary, speak HTTP to it, wait on conditions with deadlines.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_smart-cctv");

pub fn repo_file(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(name)
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Polls `check` until it returns `Some` or the deadline passes.
pub fn wait_for<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// A minimal HTTP/1.1 GET: status and body.
pub fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let (status, body) = http_get_bytes(addr, path)?;
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// A minimal HTTP/1.1 GET: status and the body's bytes.
pub fn http_get_bytes(addr: SocketAddr, path: &str) -> std::io::Result<(u16, Vec<u8>)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(stream, "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let split = response.windows(4).position(|w| w == b"\r\n\r\n");
    let head = String::from_utf8_lossy(&response[..split.unwrap_or(response.len())]).into_owned();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad response: {head:?}")))?;
    let body = split.map(|i| response[i + 4..].to_vec()).unwrap_or_default();
    Ok((status, body))
}

/// A minimal HTTP/1.1 POST with no body: status and body.
pub fn http_post(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(stream, "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    let status = response.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default())
}

/// The value of an unlabelled metric in Prometheus text.
pub fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

pub fn signal(child: &Child, sig: libc::c_int) {
    signal_pid(child.id() as i32, sig);
}

pub fn signal_pid(pid: i32, sig: libc::c_int) {
    // SAFETY: kill(2) on a pid we own; no memory is involved.
    let rc = unsafe { libc::kill(pid as libc::pid_t, sig) };
    assert_eq!(rc, 0, "kill({pid}, {sig}) failed");
}

pub fn wait_exit(child: &mut Child, timeout: Duration) -> ExitStatus {
    wait_for("the process to exit", timeout, || child.try_wait().unwrap())
}

/// A running service in a temporary directory, killed when dropped.
pub struct Service {
    pub child: Child,
    pub dir: tempfile::TempDir,
    pub addr: SocketAddr,
    /// A command the binary runs under (`ip netns exec NS`), or none.
    pub wrapper: Vec<String>,
}

impl Service {
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("config.yaml")
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.data_dir().join("logs").join(name)).unwrap_or_default()
    }

    pub fn output(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr.txt")).unwrap_or_default()
    }

    /// Rewrites the config file (a YAML text containing `{listen}`), e.g. before a SIGHUP.
    pub fn write_config(&self, config: &str) {
        write_private(&self.config_path(), &config.replace("{listen}", &self.addr.to_string()));
    }

    pub fn get(&self, path: &str) -> (u16, String) {
        let answer = http_get(self.addr, path).unwrap_or_else(|e| panic!("GET {path}: {e}\n{}", self.output()));
        // Every answer the tests read is checked for leaked secrets at the end.
        let _ = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("answers.txt"))
            .and_then(|mut f| writeln!(f, "GET {path}: {}", answer.1));
        answer
    }

    /// Starts the binary with `config` (a YAML text containing `{listen}`).
    pub fn start(config: &str, env: &[(&str, &str)]) -> Self {
        Self::start_in(tempfile::tempdir().unwrap(), config, env)
    }

    /// Starts the binary in `dir` (its data under `dir/data`).
    pub fn start_in(dir: tempfile::TempDir, config: &str, env: &[(&str, &str)]) -> Self {
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        write_private(&dir.path().join("config.yaml"), &config.replace("{listen}", &addr.to_string()));
        let child = spawn(dir.path(), env, &[]);
        Self { child, dir, addr, wrapper: Vec::new() }
    }

    /// Starts the binary under `wrapper` (which must exec it, keeping its pid).
    pub fn start_wrapped(wrapper: &[&str], config: &str, env: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        write_private(&dir.path().join("config.yaml"), &config.replace("{listen}", &addr.to_string()));
        let wrapper: Vec<String> = wrapper.iter().map(|s| s.to_string()).collect();
        let child = spawn(dir.path(), env, &wrapper);
        Self { child, dir, addr, wrapper }
    }

    /// Starts a new process on the same directory, config and address,
    /// once the previous one has exited.
    pub fn restart(&mut self) {
        self.child = spawn(self.dir.path(), &[], &self.wrapper);
    }

    /// SIGKILL, then reap it.
    pub fn kill_hard(&mut self) {
        signal(&self.child, libc::SIGKILL);
        let _ = self.child.wait();
    }

    /// Waits until `/healthz` answers 200.
    pub fn wait_healthy(&self, timeout: Duration) {
        wait_for("the service to be healthy", timeout, || {
            http_get(self.addr, "/healthz").ok().filter(|(status, _)| *status == 200)
        });
    }
}

/// Starts the binary on `dir`: its config, data and stderr there, and its
/// supervision policy from `dir/supervision.toml` when a test wrote one.
fn spawn(dir: &Path, env: &[(&str, &str)], wrapper: &[String]) -> Child {
    let stderr = std::fs::OpenOptions::new().create(true).append(true).open(dir.join("stderr.txt")).unwrap();
    let own_policy = dir.join("supervision.toml");
    let policy = if own_policy.is_file() { own_policy } else { repo_file("supervision.toml") };
    let mut command = match wrapper.split_first() {
        Some((program, args)) => {
            let mut command = Command::new(program);
            command.args(args).arg(BIN);
            command
        }
        None => Command::new(BIN),
    };
    command
        .arg("--config")
        .arg(dir.join("config.yaml"))
        .arg("--data-dir")
        .arg(dir.join("data"))
        .arg("--supervision")
        .arg(policy)
        .arg("run")
        .current_dir(dir)
        .env_remove("RUST_LOG")
        .env_remove("NOTIFY_SOCKET")
        .env_remove("WATCHDOG_USEC")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr);
    for (k, v) in env {
        command.env(k, v);
    }
    command.spawn().unwrap()
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Everything it said, kept for the suite's leak check.
        let mut said = self.output();
        for log in ["app.log", "errors.log", "alerts.log"] {
            said.push_str(&self.log(log));
        }
        said.push_str(&std::fs::read_to_string(self.dir.path().join("answers.txt")).unwrap_or_default());
        let dir = leak_check_dir();
        let _ = std::fs::create_dir_all(&dir);
        let _ = std::fs::write(dir.join(format!("{}-{}.txt", std::process::id(), self.addr.port())), said);
    }
}

/// The passwords the tests give the service (camera URLs, SMTP, the hub's
/// endpoint): none may appear in anything it prints or answers.
pub const TEST_SECRETS: [&str; 6] =
    ["hunter2-secret", "Sup3r-s3cret", "WrongPa55word", "s3cret", "Backup-s3cret", "tok3n-secret"];

/// Where each service's logs, stderr and API answers are kept for the check.
pub fn leak_check_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("leak-check")
}

/// Files under [`leak_check_dir`] holding a test secret, with the secret.
pub fn leaked_secrets() -> Vec<(PathBuf, &'static str)> {
    let mut leaks = Vec::new();
    for entry in std::fs::read_dir(leak_check_dir()).into_iter().flatten().flatten() {
        let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
        leaks.extend(TEST_SECRETS.iter().filter(|s| text.contains(**s)).map(|s| (entry.path(), *s)));
    }
    leaks
}

/// Config files hold passwords; the service warns about group/world-readable ones.
pub fn write_private(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// A tmpfs of a given size mounted on a temporary directory (needs root,
/// which CI has); unmounted when dropped.
pub struct SmallDisk {
    pub dir: tempfile::TempDir,
}

impl SmallDisk {
    /// Mounts it (the test is registered with `Need::Tmpfs`).
    pub fn mount(size: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .expect("cannot run mount");
        assert!(out.status.success(), "cannot mount a tmpfs: {}", String::from_utf8_lossy(&out.stderr));
        Self { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Fills the disk with `name` until writing fails; answers the bytes written.
    pub fn fill(&self, name: &str) -> u64 {
        let mut file = std::fs::File::create(self.path().join(name)).unwrap();
        let chunk = vec![0u8; 64 * 1024];
        let mut written = 0;
        while let Ok(n) = file.write(&chunk) {
            if n == 0 {
                break;
            }
            written += n as u64;
        }
        written
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.dir.path()).status();
    }
}
