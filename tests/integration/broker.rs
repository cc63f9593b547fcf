//! The MQTT broker of the tests: Debian's `mosquitto` on a loopback port,
//! and a subscriber that records everything it is sent.

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A mosquitto process on loopback, killed when dropped.
pub struct Broker {
    child: Option<Child>,
    pub port: u16,
    dir: tempfile::TempDir,
}

impl Broker {
    /// The broker's path, if it is installed.
    pub fn program() -> Option<PathBuf> {
        ["/usr/sbin/mosquitto", "/usr/bin/mosquitto"].into_iter().map(PathBuf::from).find(|p| p.is_file())
    }

    pub fn start(port: u16) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("mosquitto.conf"),
            format!("listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"),
        )
        .unwrap();
        let mut broker = Self { child: None, port, dir };
        broker.restart();
        broker
    }

    /// Starts it again on the same port after [`stop`](Self::stop). Retained
    /// messages are gone: it keeps nothing on disk.
    pub fn restart(&mut self) {
        let child = Command::new(Self::program().expect("mosquitto"))
            .arg("-c")
            .arg(self.dir.path().join("mosquitto.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot start mosquitto");
        self.child = Some(child);
        let port = self.port;
        crate::support::wait_for("mosquitto to listen", Duration::from_secs(10), || {
            TcpStream::connect(("127.0.0.1", port)).ok()
        });
    }

    /// The broker dies: connections drop and are refused.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One message as a subscriber got it.
#[derive(Debug, Clone)]
pub struct Received {
    pub topic: String,
    pub payload: Vec<u8>,
    pub retained: bool,
}

impl Received {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.payload).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.payload).unwrap_or(serde_json::Value::Null)
    }
}

/// A client subscribed to `filters` that keeps every message, with its own
/// thread driving the connection (rumqttc's blocking client).
pub struct Subscriber {
    client: rumqttc::Client,
    received: Arc<Mutex<Vec<Received>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Subscriber {
    pub fn connect(port: u16, filters: &[&str]) -> Self {
        let id = format!("test-{}-{}", std::process::id(), fastrand::u32(..));
        let mut options = rumqttc::MqttOptions::new(id, "127.0.0.1", port);
        options.set_max_packet_size(8 << 20, 1 << 20);
        let (client, mut connection) = rumqttc::Client::new(options, 64);
        for filter in filters {
            client.subscribe(*filter, rumqttc::QoS::AtLeastOnce).unwrap();
        }
        let received = Arc::new(Mutex::new(Vec::new()));
        let sink = received.clone();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            for event in connection.iter() {
                match event {
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) => sink.lock().unwrap().push(Received {
                        topic: p.topic.clone(),
                        payload: p.payload.to_vec(),
                        retained: p.retain,
                    }),
                    Ok(rumqttc::Event::Outgoing(rumqttc::Outgoing::Disconnect)) => break,
                    Ok(_) => {}
                    // The tests restart the broker: keep trying, slowly.
                    Err(_) if stopped.load(std::sync::atomic::Ordering::SeqCst) => break,
                    Err(_) => std::thread::sleep(Duration::from_millis(200)),
                }
            }
        });
        Self { client, received, stop, thread: Some(thread) }
    }

    pub fn publish(&self, topic: &str, payload: &str, retain: bool) {
        self.client.publish(topic, rumqttc::QoS::AtLeastOnce, retain, payload.as_bytes().to_vec()).unwrap();
    }

    pub fn all(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    /// Every message on `topic` so far.
    pub fn on(&self, topic: &str) -> Vec<Received> {
        self.all().into_iter().filter(|m| m.topic == topic).collect()
    }

    /// The last message on `topic`, as text.
    pub fn last_text(&self, topic: &str) -> Option<String> {
        self.on(topic).last().map(Received::text)
    }

    /// Waits until a message satisfies `check`; answers it.
    pub fn wait(&self, what: &str, timeout: Duration, check: impl Fn(&Received) -> bool) -> Received {
        crate::support::wait_for(what, timeout, || self.all().into_iter().find(|m| check(m)))
    }

    /// Waits until the last message on `topic` reads `text`.
    pub fn wait_last(&self, topic: &str, text: &str, timeout: Duration) {
        crate::support::wait_for(&format!("{topic} = {text}"), timeout, || {
            (self.last_text(topic).as_deref() == Some(text)).then_some(())
        });
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let _ = self.client.disconnect();
        if let Some(thread) = self.thread.take() {
            // The thread ends with the disconnect, or when the broker is gone.
            let _ = thread.join();
        }
    }
}
