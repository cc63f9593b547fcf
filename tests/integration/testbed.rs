//! The shared testbed's real peers (`../shared/testbed`): an RTSP server
//! with auth, started and stopped like a camera.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

pub fn dir() -> Option<PathBuf> {
    crate::fixtures::shared_dir("SMART_CCTV_TESTBED", "testbed", "rtsp-server")
}

/// `Some(dir)` or return from the test.
#[macro_export]
macro_rules! testbed_or_skip {
    () => {
        match $crate::testbed::dir() {
            Some(dir) => dir,
            None => return,
        }
    };
}

/// A GStreamer RTSP server on loopback, killed when dropped.
pub struct RtspServer {
    child: Option<Child>,
    pub port: u16,
    args: Vec<String>,
    script: PathBuf,
}

impl RtspServer {
    /// `paths` as `name=SOURCE` (`cam=test:640x480@15`, `cam=/clip.mp4`).
    pub fn start(testbed: &std::path::Path, port: u16, auth: Option<&str>, paths: &[&str]) -> Self {
        let mut args = vec!["--port".to_owned(), port.to_string()];
        if let Some(auth) = auth {
            args.extend(["--auth".to_owned(), auth.to_owned()]);
        }
        args.extend(paths.iter().map(|p| p.to_string()));
        let mut server = Self { child: None, port, args, script: testbed.join("rtsp-server") };
        server.restart();
        server
    }

    /// Starts it again on the same port after [`stop`](Self::stop).
    pub fn restart(&mut self) {
        let mut child = Command::new(&self.script)
            .args(&self.args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("cannot start the testbed rtsp-server");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = BufReader::new(stdout).lines();
        loop {
            match lines.next() {
                Some(Ok(line)) if line == "ready" => break,
                Some(Ok(_)) => continue,
                other => panic!("rtsp-server exited before ready: {other:?}"),
            }
        }
        // Keep draining so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        self.child = Some(child);
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

    pub fn url(&self, creds: &str, path: &str) -> String {
        format!("rtsp://{creds}127.0.0.1:{}/{path}", self.port)
    }
}

impl Drop for RtspServer {
    fn drop(&mut self) {
        if let Some(pid) = self.child.as_ref().map(|c| c.id() as i32) {
            // A stopped (SIGSTOP) server must be continued to die cleanly.
            // SAFETY: kill(2) on our own child.
            unsafe { libc::kill(pid, libc::SIGCONT) };
        }
        self.stop();
    }
}
