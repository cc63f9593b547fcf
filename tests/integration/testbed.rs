//! The RTSP camera of the tests: `tests/rtsp-server/rtsp_server.py`, the
//! project's own GStreamer RTSP server, started and stopped like a camera.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// A GStreamer RTSP server on loopback, killed when dropped.
pub struct RtspServer {
    child: Option<Child>,
    pub port: u16,
    args: Vec<String>,
    /// RTSP clients connected right now, as the server reports them.
    clients: Arc<AtomicUsize>,
}

impl RtspServer {
    /// `paths` as `name=SOURCE` (`cam=test:640x480@15`, `cam=/clip.mp4`);
    /// `auth` as `user:password` (digest, as most IP cameras ask).
    pub fn start(port: u16, auth: Option<&str>, paths: &[&str]) -> Self {
        let mut args = vec!["--port".to_owned(), port.to_string()];
        if let Some(auth) = auth {
            args.extend(["--auth".to_owned(), auth.to_owned()]);
        }
        args.extend(paths.iter().map(|p| p.to_string()));
        let mut server = Self { child: None, port, args, clients: Arc::default() };
        server.restart();
        server
    }

    fn script() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/rtsp-server/rtsp_server.py")
    }

    /// Starts it again on the same port after [`stop`](Self::stop).
    pub fn restart(&mut self) {
        let mut child = Command::new("/usr/bin/python3")
            .arg(Self::script())
            .args(&self.args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("cannot start tests/rtsp-server/rtsp_server.py");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = BufReader::new(stdout).lines();
        loop {
            match lines.next() {
                Some(Ok(line)) if line == "ready" => break,
                Some(Ok(_)) => continue,
                other => panic!("the RTSP server exited before it was ready: {other:?}"),
            }
        }
        // Keep reading, so the server never blocks on a full pipe, and
        // follow its client count.
        self.clients.store(0, Ordering::SeqCst);
        let clients = self.clients.clone();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                if let Some(n) = line.strip_prefix("clients ").and_then(|n| n.parse().ok()) {
                    clients.store(n, Ordering::SeqCst);
                }
            }
        });
        self.child = Some(child);
    }

    /// RTSP clients connected now.
    pub fn clients(&self) -> usize {
        self.clients.load(Ordering::SeqCst)
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().map_or(0, |c| c.id() as i32)
    }

    /// Camera offline: the process dies, connections are refused.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// A hung camera: connections stay open, no data comes.
    pub fn freeze(&self) {
        crate::support::signal_pid(self.pid(), libc::SIGSTOP);
    }

    /// The hung camera answers again (the backlog arrives in a burst).
    pub fn resume(&self) {
        crate::support::signal_pid(self.pid(), libc::SIGCONT);
    }

    pub fn url(&self, creds: &str, path: &str) -> String {
        format!("rtsp://{creds}127.0.0.1:{}/{path}", self.port)
    }
}

impl Drop for RtspServer {
    fn drop(&mut self) {
        if self.child.is_some() {
            // A stopped (SIGSTOP) server must be continued to die cleanly.
            self.resume();
        }
        self.stop();
    }
}
