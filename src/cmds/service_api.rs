//! How CLI commands reach the data: the event store file when the service is
//! stopped, its API when it runs (it then owns the file): over the ops
//! socket in the data directory, else loopback TCP. The file is never opened
//! by two processes.

use crate::store::{Query, Store, StoreError};
use anyhow::Context;
use std::path::Path;
use std::time::Duration;

/// Where records come from.
pub enum Source {
    /// The service is stopped: the file, opened by this process.
    File(Store),
    /// The service runs and answers on this address.
    Service(String),
}

impl Source {
    /// The service when it answers on `listen` (so this process never takes
    /// the file's lock from under a starting service), else the file; a
    /// file locked by a service that does not answer yet is the service.
    pub fn open(data_dir: &Path, listen: &str) -> anyhow::Result<Self> {
        let answers = listen
            .parse::<std::net::SocketAddr>()
            .is_ok_and(|addr| std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok());
        if answers {
            return Ok(Source::Service(listen.to_owned()));
        }
        match Store::open(&data_dir.join(crate::store::FILE)) {
            Ok(store) => Ok(Source::File(store)),
            Err(StoreError::InUse { .. }) => Ok(Source::Service(listen.to_owned())),
            Err(e) => Err(e.into()),
        }
    }
}

/// The filters `alerts list` and `events list` share.
#[derive(Debug, clap::Args)]
pub struct ListFilter {
    /// How far back: 7d, 12h, 30m
    #[arg(long)]
    pub since: Option<String>,
    #[arg(long)]
    pub camera: Option<String>,
    #[arg(long)]
    pub class: Option<String>,
    /// At most this many (the newest)
    #[arg(long, default_value_t = crate::http::routes::MAX_LIMIT)]
    pub limit: usize,
    /// One JSON object per line
    #[arg(long)]
    pub json: bool,
}

impl ListFilter {
    /// The store query, with `rule` for the records that have one.
    pub fn query(&self, rule: Option<String>) -> anyhow::Result<Query> {
        let ago = self
            .since
            .as_deref()
            .map(crate::base::duration::parse)
            .transpose()
            .map_err(|e| anyhow::anyhow!("--since: {e}"))?;
        Ok(Query {
            camera: self.camera.clone(),
            rule,
            class: self.class.clone(),
            limit: Some(self.limit),
            ..Query::default()
        }
        .since(ago))
    }
}

/// `query` as URL parameters, with `since` as the user wrote it.
pub fn query_string(since: Option<&str>, q: &Query) -> String {
    let mut params = Vec::new();
    for (k, v) in [
        ("since", since.map(str::to_owned)),
        ("camera", q.camera.clone()),
        ("rule", q.rule.clone()),
        ("class", q.class.clone()),
        ("limit", q.limit.map(|l| l.to_string())),
    ] {
        if let Some(v) = v {
            params.push(format!("{k}={}", url::form_urlencoded::byte_serialize(v.as_bytes()).collect::<String>()));
        }
    }
    params.join("&")
}

/// One request to the running service; answers the JSON body of a 200, and
/// the service's own error otherwise. Over the ops socket in `data_dir` when
/// it answers (the web login does not apply there: the socket admits only
/// root, the service's user and its group), else over loopback TCP.
pub fn call<T: serde::de::DeserializeOwned>(
    data_dir: &Path,
    listen: &str,
    method: &str,
    path: &str,
    timeout: Duration,
) -> anyhow::Result<T> {
    let socket = data_dir.join(crate::http::routes::OPS_SOCKET);
    let (status, body) = if std::os::unix::net::UnixStream::connect(&socket).is_ok() {
        exchange(Peer::Unix(&socket), method, path, timeout)?
    } else {
        request(listen, method, path, timeout)
            .with_context(|| format!("the event store is in use, but the service does not answer on {listen}"))?
    };
    answer(path, status, &body)
}

/// The JSON body of a 200, or the service's own error.
fn answer<T: serde::de::DeserializeOwned>(path: &str, status: u16, body: &str) -> anyhow::Result<T> {
    if status != 200 {
        let error = serde_json::from_str::<serde_json::Value>(body)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_owned))
            .unwrap_or_else(|| format!("HTTP {status}"));
        anyhow::bail!("the service answered {path}: {error}");
    }
    serde_json::from_str(body).with_context(|| format!("the service's answer to {path}"))
}

/// One request on loopback TCP: the status and the body as text.
pub fn request(listen: &str, method: &str, path: &str, timeout: Duration) -> anyhow::Result<(u16, String)> {
    exchange(Peer::Tcp(listen), method, path, timeout)
}

/// An ops request (`db-copy`, `compact`) to the running service, over its
/// Unix socket in the data directory: never over TCP, where anything could
/// be listening.
pub fn call_ops<T: serde::de::DeserializeOwned>(data_dir: &Path, path: &str, timeout: Duration) -> anyhow::Result<T> {
    let socket = data_dir.join(crate::http::routes::OPS_SOCKET);
    let (status, body) = exchange(Peer::Unix(&socket), "POST", path, timeout).with_context(|| {
        format!(
            "the service runs, but its ops socket {} cannot be reached (run as root, its user or its group)",
            socket.display()
        )
    })?;
    answer(path, status, &body)
}

/// Where the service answers.
enum Peer<'a> {
    Tcp(&'a str),
    Unix(&'a Path),
}

/// One HTTP/1.1 exchange with hyper's client, on a runtime of its own (the
/// CLI is synchronous), within `timeout` from connect to the last byte.
fn exchange(peer: Peer<'_>, method: &str, path: &str, timeout: Duration) -> anyhow::Result<(u16, String)> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        let exchanged = async {
            match peer {
                Peer::Tcp(listen) => send(tokio::net::TcpStream::connect(listen).await?, method, path).await,
                Peer::Unix(socket) => send(tokio::net::UnixStream::connect(socket).await?, method, path).await,
            }
        };
        tokio::time::timeout(timeout, exchanged)
            .await
            .map_err(|_| anyhow::anyhow!("no answer to {path} within {}", humantime::format_duration(timeout)))?
    })
}

async fn send<S>(stream: S, method: &str, path: &str) -> anyhow::Result<(u16, String)>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    use http_body_util::BodyExt;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    // The connection's own task, owned here: it ends when the answer is read
    // and is aborted if anything fails first.
    let driver = AbortOnDrop(tokio::spawn(connection));
    let request = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header(hyper::header::HOST, "localhost")
        .body(http_body_util::Empty::<bytes::Bytes>::new())?;
    let response = sender.send_request(request).await?;
    let status = response.status().as_u16();
    let body = response.into_body().collect().await?.to_bytes();
    drop(driver);
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

struct AbortOnDrop(tokio::task::JoinHandle<Result<(), hyper::Error>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Records as listed: from this node alone, or from every edge of a cluster
/// (each with its node), with what each edge answered.
pub struct Listed<T> {
    pub records: Vec<(Option<String>, T)>,
    /// Per node: `ok`, or why it did not answer.
    pub nodes: std::collections::BTreeMap<String, String>,
}

impl<T: serde::de::DeserializeOwned> Listed<T> {
    pub fn local(records: Vec<T>) -> Self {
        Self { records: records.into_iter().map(|r| (None, r)).collect(), nodes: Default::default() }
    }

    /// `/api/cluster/alerts` or `/api/cluster/events` from the running service.
    pub fn merged(data_dir: &Path, listen: &str, kind: &str, query: &str) -> anyhow::Result<Self> {
        let path = format!("/api/cluster/{kind}?{query}");
        let merged: crate::cluster::records::Merged = call(data_dir, listen, "GET", &path, Duration::from_secs(20))?;
        let records = merged
            .records
            .into_iter()
            .map(|value| {
                let node = value["node"].as_str().map(str::to_owned);
                Ok((node, serde_json::from_value(value)?))
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(Self { records, nodes: merged.nodes })
    }

    /// Names, on stderr, every node that did not answer: the list is what
    /// the others had.
    pub fn report_unreachable(&self) {
        for (node, answer) in self.nodes.iter().filter(|(_, a)| *a != "ok") {
            eprintln!("{node}: {answer} (its records are not in this list)");
        }
    }
}

/// One record as a JSON line, with its node when it came from a cluster list.
pub fn json_line<T: serde::Serialize>(node: Option<&str>, record: &T) -> anyhow::Result<String> {
    let mut value = serde_json::to_value(record)?;
    if let (Some(node), Some(object)) = (node, value.as_object_mut()) {
        object.insert("node".into(), serde_json::Value::String(node.to_owned()));
    }
    Ok(value.to_string())
}
