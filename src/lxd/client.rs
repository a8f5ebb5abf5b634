//! HTTP over the LXD unix socket: the request envelope, operations, projects.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokio::net::UnixStream;

use super::error::LxdError;
use super::types::{Envelope, Operation, ServerInfo};

/// Lifecycle operations running at once (see `Lxd::lifecycle`).
const LIFECYCLE_SLOTS: usize = 4;

/// Longest time one plain HTTP request to LXD may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// A handle on one LXD daemon and one LXD project. Cheap to clone.
///
/// Every request gets a connection of its own that carries the request the
/// moment it is open and is closed after the answer. LXD 5.0.2 accepts
/// connections on its socket one at a time and waits for each new one to
/// send its first bytes before it accepts the next: a pooled connection that
/// is opened but left idle (which a racing connection pool does) stops the
/// whole daemon from answering anyone until that connection closes.
#[derive(Clone)]
pub struct Lxd {
    socket: Arc<PathBuf>,
    project: Arc<str>,
    /// Bounds the lifecycle operations (create, start, stop, delete),
    /// instance listings and file or state reads running at once: each
    /// holds LXD's database and storage locks for a while, and a few at a
    /// time finish sooner than many.
    lifecycle: Arc<tokio::sync::Semaphore>,
    /// Commands attached to instances (see `attach`), by instance name.
    pub(super) attached:
        Arc<std::sync::Mutex<std::collections::HashMap<String, super::attach::Slot>>>,
    /// The daemon's folder of instance log folders, each removed after its
    /// instance is deleted (see `logs`); `None` leaves them.
    pub(super) log_dir: Option<Arc<PathBuf>>,
}

impl std::fmt::Debug for Lxd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lxd")
            .field("socket", &self.socket)
            .field("project", &self.project)
            .finish()
    }
}

impl Lxd {
    /// A client of the daemon at `socket`, working in LXD project `project`.
    /// Deleted instances' log folders are removed from the folder that
    /// goes with the socket (`logs::dir_for_socket`).
    pub fn new(socket: impl Into<PathBuf>, project: &str) -> Self {
        let socket: PathBuf = socket.into();
        Self {
            log_dir: super::logs::dir_for_socket(&socket).map(Arc::new),
            socket: Arc::new(socket),
            project: project.into(),
            lifecycle: Arc::new(tokio::sync::Semaphore::new(LIFECYCLE_SLOTS)),
            attached: Arc::default(),
        }
    }

    /// The same client, removing deleted instances' log folders from `dir`
    /// instead (`None`: leaving them).
    pub fn with_log_dir(mut self, dir: Option<PathBuf>) -> Self {
        self.log_dir = dir.map(Arc::new);
        self
    }

    /// Waits for the lifecycle slot (see the field's comment).
    pub(crate) async fn lifecycle_slot(&self) -> tokio::sync::SemaphorePermit<'_> {
        self.lifecycle
            .acquire()
            .await
            .expect("the semaphore is never closed")
    }

    pub fn project(&self) -> &str {
        &self.project
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// `path` with this client's project added to its query.
    pub(crate) fn url(&self, path: &str) -> String {
        let sep = if path.contains('?') { '&' } else { '?' };
        format!("{path}{sep}project={}", self.project)
    }

    fn connect_error(&self, source: std::io::Error) -> LxdError {
        LxdError::Connect {
            path: self.socket.display().to_string(),
            source,
        }
    }

    /// Sends one request and returns the raw status and body.
    pub(crate) async fn raw(
        &self,
        method: Method,
        path: &str,
        body: Bytes,
        content_type: &str,
    ) -> Result<(StatusCode, Bytes), LxdError> {
        let req = Request::builder()
            .method(method)
            .uri(self.url(path))
            .header("host", "lxd")
            .header("content-type", content_type)
            .body(Full::new(body))
            .map_err(|e| LxdError::Transport(e.to_string()))?;
        let fut = async {
            let stream = UnixStream::connect(&*self.socket)
                .await
                .map_err(|e| self.connect_error(e))?;
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .map_err(|e| LxdError::Transport(e.to_string()))?;
            // Drives the connection; it ends when the answer has been read
            // and `sender` is dropped.
            tokio::spawn(conn);
            let resp = sender
                .send_request(req)
                .await
                .map_err(|e| LxdError::Transport(e.to_string()))?;
            let status = resp.status();
            let bytes = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| LxdError::Transport(e.to_string()))?
                .to_bytes();
            Ok((status, bytes))
        };
        tokio::time::timeout(REQUEST_TIMEOUT, fut)
            .await
            .map_err(|_| LxdError::Timeout(REQUEST_TIMEOUT))?
    }

    /// Sends one request and decodes LXD's envelope; LXD errors become `LxdError::Api`.
    pub(crate) async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Envelope, LxdError> {
        let body = match body {
            Some(v) => {
                Bytes::from(serde_json::to_vec(&v).map_err(|e| LxdError::Decode(e.to_string()))?)
            }
            None => Bytes::new(),
        };
        let (status, bytes) = self.raw(method, path, body, "application/json").await?;
        let env: Envelope = serde_json::from_slice(&bytes).map_err(|e| {
            LxdError::Decode(format!(
                "{status} {e}: {}",
                String::from_utf8_lossy(&bytes[..bytes.len().min(200)])
            ))
        })?;
        if env.kind == "error" || status.is_client_error() || status.is_server_error() {
            let code = if env.error_code != 0 {
                env.error_code
            } else {
                status.as_u16()
            };
            return Err(LxdError::Api {
                status: code,
                message: env.error,
            });
        }
        Ok(env)
    }

    /// A synchronous call whose metadata decodes as `T`.
    pub(crate) async fn sync<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<T, LxdError> {
        let env = self.call(method, path, body).await?;
        serde_json::from_value(env.metadata).map_err(|e| LxdError::Decode(format!("{path}: {e}")))
    }

    /// A call that starts a background operation; returns the operation.
    pub(crate) async fn start_operation(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Operation, LxdError> {
        let env = self.call(method, path, body).await?;
        if env.kind != "async" {
            return Err(LxdError::Decode(format!(
                "{path}: expected a background operation, got {}",
                env.kind
            )));
        }
        serde_json::from_value(env.metadata)
            .map_err(|e| LxdError::Decode(format!("{path} operation: {e}")))
    }

    /// Waits up to `timeout` for an operation to end; a failed operation is an error.
    pub async fn wait(&self, id: &str, timeout: Duration) -> Result<Operation, LxdError> {
        let secs = timeout.as_secs().max(1);
        let path = format!("/1.0/operations/{id}/wait?timeout={secs}");
        let op: Operation = tokio::time::timeout(
            timeout + Duration::from_secs(5),
            self.sync(Method::GET, &path, None),
        )
        .await
        .map_err(|_| LxdError::Timeout(timeout))??;
        if op.failed() {
            return Err(LxdError::Operation { message: op.err });
        }
        if op.running() {
            return Err(LxdError::Timeout(timeout));
        }
        Ok(op)
    }

    /// Starts an operation and waits for it to succeed.
    pub(crate) async fn run_operation(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        timeout: Duration,
    ) -> Result<Operation, LxdError> {
        let op = self.start_operation(method, path, body).await?;
        self.wait(&op.id, timeout).await
    }

    /// `GET /1.0`: version, storage driver and API extensions.
    pub async fn server(&self) -> Result<ServerInfo, LxdError> {
        self.sync(Method::GET, "/1.0", None).await
    }

    /// Creates this client's project if it does not exist. The project shares
    /// the default project's images and profiles.
    pub async fn ensure_project(&self) -> Result<(), LxdError> {
        if self.project.as_ref() == "default" {
            return Ok(());
        }
        let path = format!("/1.0/projects/{}", self.project);
        match self.call(Method::GET, &path, None).await {
            Ok(_) => return Ok(()),
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e),
        }
        let body = json!({
            "name": self.project.as_ref(),
            "description": "unsandbox execution containers",
            "config": {
                "features.images": "false",
                "features.profiles": "false",
                "features.storage.volumes": "false",
            }
        });
        match self.call(Method::POST, "/1.0/projects", Some(body)).await {
            Ok(_) => Ok(()),
            Err(e) if e.is_conflict() => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Deletes this client's project (it must hold no instances).
    pub async fn delete_project(&self) -> Result<(), LxdError> {
        let path = format!("/1.0/projects/{}", self.project);
        match self.call(Method::DELETE, &path, None).await {
            Err(e) if e.is_not_found() => Ok(()),
            other => other.map(|_| ()),
        }
    }

    /// Connects a websocket of an operation over the unix socket.
    pub(crate) async fn websocket(
        &self,
        operation: &str,
        secret: &str,
    ) -> Result<tokio_tungstenite::WebSocketStream<UnixStream>, LxdError> {
        let stream = UnixStream::connect(&*self.socket)
            .await
            .map_err(|e| self.connect_error(e))?;
        let url = format!(
            "ws://lxd/1.0/operations/{operation}/websocket?secret={secret}&project={}",
            self.project
        );
        let (ws, _) = tokio_tungstenite::client_async(url, stream)
            .await
            .map_err(|e| LxdError::Stream(e.to_string()))?;
        Ok(ws)
    }
}
