//! The parts of LXD's JSON documents this project reads and writes.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// LXD's response envelope.
#[derive(Debug, Deserialize)]
pub(crate) struct Envelope {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub error: String,
    #[serde(default)]
    pub error_code: u16,
    #[serde(default)]
    pub metadata: Value,
}

/// `GET /1.0`.
#[derive(Debug, Clone, Deserialize)]
pub struct ServerInfo {
    #[serde(default)]
    pub api_extensions: Vec<String>,
    #[serde(default)]
    pub environment: ServerEnvironment,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct ServerEnvironment {
    #[serde(default)]
    pub server_version: String,
    #[serde(default)]
    pub storage: String,
}

/// A background operation.
#[derive(Debug, Clone, Deserialize)]
pub struct Operation {
    pub id: String,
    #[serde(default)]
    pub status_code: u16,
    #[serde(default)]
    pub err: String,
    #[serde(default)]
    pub metadata: Option<Value>,
}

impl Operation {
    /// Whether the operation is still running (LXD status codes 100-199).
    pub fn running(&self) -> bool {
        (100..200).contains(&self.status_code) || self.status_code == 0
    }
    /// Whether it ended in failure (400 failure, 401 cancelled).
    pub fn failed(&self) -> bool {
        self.status_code >= 400
    }
}

/// An image in the image store.
#[derive(Debug, Clone, Deserialize)]
pub struct ImageInfo {
    pub fingerprint: String,
    #[serde(default)]
    pub aliases: Vec<ImageAlias>,
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
    #[serde(default)]
    pub size: u64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ImageAlias {
    pub name: String,
}

/// An instance as listed with `recursion=1`.
#[derive(Debug, Clone, Deserialize)]
pub struct InstanceInfo {
    pub name: String,
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub config: BTreeMap<String, String>,
    #[serde(default)]
    pub ephemeral: bool,
}

impl InstanceInfo {
    pub fn is_running(&self) -> bool {
        self.status == "Running"
    }
}

/// `GET /1.0/instances/NAME/state` (the parts read here).
#[derive(Debug, Clone, Deserialize)]
pub struct InstanceState {
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub memory: Option<MemoryState>,
    #[serde(default)]
    pub processes: i64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct MemoryState {
    #[serde(default)]
    pub usage: u64,
}

/// What to create: a container from a local image or a copy of another.
#[derive(Debug, Clone, Serialize)]
pub struct InstanceCreate {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub ephemeral: bool,
    pub profiles: Vec<String>,
    pub config: BTreeMap<String, String>,
    pub devices: BTreeMap<String, BTreeMap<String, String>>,
    pub source: InstanceSource,
}

/// Where a new instance's root disk comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum InstanceSource {
    /// A local image.
    Image { fingerprint: String },
    /// A copy of another (stopped) instance in the same project: a
    /// copy-on-write snapshot whose files are already id-mapped.
    Copy { source: String, instance_only: bool },
}

impl InstanceCreate {
    /// The same definition, made as a copy of the instance `template`.
    pub fn copied_from(mut self, template: &str) -> Self {
        self.source = InstanceSource::Copy {
            source: template.to_string(),
            instance_only: true,
        };
        self
    }

    /// A container with no profiles, only a root disk on `pool`: no network
    /// device unless the caller adds one. Not ephemeral: the caller deletes it
    /// after a stop (LXD 5.0's own delete-on-stop of ephemeral instances was
    /// seen to stall the daemon when many stop at once).
    pub fn container(name: &str, fingerprint: &str, storage_pool: &str) -> Self {
        let root = BTreeMap::from([
            ("type".to_string(), "disk".to_string()),
            ("path".to_string(), "/".to_string()),
            ("pool".to_string(), storage_pool.to_string()),
        ]);
        Self {
            name: name.to_string(),
            kind: "container",
            ephemeral: false,
            profiles: vec![],
            config: BTreeMap::new(),
            devices: BTreeMap::from([("root".to_string(), root)]),
            source: InstanceSource::Image {
                fingerprint: fingerprint.to_string(),
            },
        }
    }
}
