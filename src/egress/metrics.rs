//! The proxy's Prometheus metrics.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use super::record::Direction;

/// What became of a connection or request that reached the proxy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Allowed,
    NotAllowed,
    ForbiddenAddress,
    Unresolved,
    Budget,
    UpstreamFailed,
    BadRequest,
    /// Refused at accept: the container had too many connections open.
    TooManyConnections,
}

impl Outcome {
    fn label(self) -> &'static str {
        match self {
            Self::Allowed => "allowed",
            Self::NotAllowed => "not_allowed",
            Self::ForbiddenAddress => "forbidden_address",
            Self::Unresolved => "unresolved",
            Self::Budget => "budget",
            Self::UpstreamFailed => "upstream_failed",
            Self::BadRequest => "bad_request",
            Self::TooManyConnections => "too_many_connections",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    pool: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DirectionLabels {
    pool: String,
    direction: &'static str,
}

/// `egress_connections_total{pool, outcome}` and
/// `egress_bytes_total{pool, direction}` (`unsandbox_` in front in the
/// process registry).
#[derive(Clone, Debug, Default)]
pub struct EgressMetrics {
    connections: Family<OutcomeLabels, Counter>,
    bytes: Family<DirectionLabels, Counter>,
}

impl EgressMetrics {
    /// The metrics, registered in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        registry.register(
            "egress_connections",
            "Tunnels and HTTP requests through the egress proxy, by pool and outcome",
            metrics.connections.clone(),
        );
        registry.register(
            "egress_bytes",
            "Payload bytes through the egress proxy, by pool and direction (sent: from the program)",
            metrics.bytes.clone(),
        );
        metrics
    }

    pub fn outcome(&self, pool: &str, outcome: Outcome) {
        self.connections
            .get_or_create(&OutcomeLabels {
                pool: pool.to_string(),
                outcome: outcome.label(),
            })
            .inc();
    }

    pub fn bytes(&self, pool: &str, direction: Direction, n: u64) {
        let direction = match direction {
            Direction::Sent => "sent",
            Direction::Received => "received",
        };
        self.bytes
            .get_or_create(&DirectionLabels {
                pool: pool.to_string(),
                direction,
            })
            .inc_by(n);
    }
}
