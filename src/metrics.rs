//! Prometheus metrics, encoded by `prometheus-client`.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PeerLabels {
    /// The network's listen port.
    pub network: String,
    /// The peer's public key.
    pub peer: String,
}

pub struct Metrics {
    registry: Registry,
    pub peer_rx: Family<PeerLabels, Counter>,
    pub peer_tx: Family<PeerLabels, Counter>,
    pub peer_handshake: Family<PeerLabels, Gauge>,
    pub networks: Gauge,
    pub peers: Gauge,
    pub apply_duration: Histogram,
    pub apply_failures: Counter,
    pub last_success: Gauge,
    pub poll_errors: Counter,
    pub poll_duration: Gauge<f64, AtomicU64>,
    /// Processes the daemon started: the runner's own count.
    pub commands: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new(Counter::default())
    }
}

impl Metrics {
    /// `commands`: the runner's count of commands run.
    pub fn new(commands: Counter) -> Self {
        let mut registry = Registry::with_prefix("gateway");
        let m = Metrics {
            registry: Registry::default(),
            peer_rx: Family::default(),
            peer_tx: Family::default(),
            peer_handshake: Family::default(),
            networks: Gauge::default(),
            peers: Gauge::default(),
            apply_duration: Histogram::new(exponential_buckets(0.005, 2.0, 14)),
            apply_failures: Counter::default(),
            last_success: Gauge::default(),
            poll_errors: Counter::default(),
            poll_duration: Gauge::default(),
            commands,
        };
        registry.register("peer_receive_bytes", "Bytes received from a peer (counted by the gateway's poller)", m.peer_rx.clone());
        registry.register("peer_transmit_bytes", "Bytes sent to a peer (counted by the gateway's poller)", m.peer_tx.clone());
        registry.register(
            "peer_latest_handshake_seconds",
            "Unix time of the latest WireGuard handshake with a peer (0 = never)",
            m.peer_handshake.clone(),
        );
        registry.register("networks", "Networks in the desired state", m.networks.clone());
        registry.register("peers", "Peers in the desired state", m.peers.clone());
        registry.register("apply_duration_seconds", "Duration of reconcile passes", m.apply_duration.clone());
        registry.register("apply_failures", "Reconcile passes that ended with an error", m.apply_failures.clone());
        registry.register(
            "last_successful_reconcile_timestamp_seconds",
            "Unix time of the last reconcile pass without error",
            m.last_success.clone(),
        );
        registry.register("poll_errors", "Traffic poll ticks or lines that failed", m.poll_errors.clone());
        registry.register("poll_duration_seconds", "Duration of the last traffic poll tick (storing)", m.poll_duration.clone());
        registry.register("commands_started", "Processes the daemon started (every tool it runs; reads run none)", m.commands.clone());
        Metrics { registry, ..m }
    }

    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut s = String::new();
        prometheus_client::encoding::text::encode(&mut s, &self.registry)?;
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_has_conventional_names() {
        let m = Metrics::default();
        let l = PeerLabels { network: "51820".into(), peer: "k".into() };
        m.peer_rx.get_or_create(&l).inc_by(5);
        m.apply_failures.inc();
        let text = m.encode().unwrap();
        assert!(text.contains("# TYPE gateway_peer_receive_bytes counter"), "{text}");
        assert!(text.contains(r#"gateway_peer_receive_bytes_total{network="51820",peer="k"} 5"#), "{text}");
        assert!(text.contains("gateway_apply_failures_total 1"), "{text}");
        assert!(text.contains("# TYPE gateway_apply_duration_seconds histogram"), "{text}");
        assert!(text.ends_with("# EOF\n"));
    }
}
