//! Runs the planned actions, one system operation each. A failing action
//! stops only the rest of its own network's actions.

use std::collections::BTreeSet;

use super::intent::{LinkIntent, LinkKind};
use super::netns::Change;
use super::{SysError, System};
use crate::plan::Action;
use crate::render::{self, Family, Jump, RuleSet};

#[derive(Debug, Default, Clone)]
pub struct ExecReport {
    /// Networks on which something was changed.
    pub changed: BTreeSet<u16>,
    /// Networks whose actions did not all succeed.
    pub failed: BTreeSet<u16>,
    pub errors: Vec<String>,
    pub nginx_reloaded: bool,
    /// A shared action (bridge, nginx) failed.
    pub global_failed: bool,
}

impl ExecReport {
    fn record(&mut self, action: &Action, result: Result<(), SysError>) {
        let net = action.network();
        let label = action.label();
        match (result, net) {
            (Ok(()), Some(p)) => {
                self.changed.insert(p);
            }
            (Ok(()), None) => {}
            (Err(e), Some(p)) => {
                tracing::warn!(network = p, action = %label, error = %e, "action failed; the network's other actions are skipped");
                self.errors.push(crate::model::pass_error(p, format_args!("{label}: {e}")));
                self.failed.insert(p);
            }
            (Err(e), None) => {
                tracing::warn!(action = %label, error = %e, "action failed");
                self.errors.push(format!("{label}: {e}"));
                self.global_failed = true;
            }
        }
    }
}

fn intent(name: &str, kind: LinkKind, network: Option<u16>) -> LinkIntent {
    LinkIntent { name: name.to_string(), kind, network }
}

impl System {
    /// Runs `actions` (each carries what it applies) one network at a time
    /// (tests; the daemon runs several at once).
    pub async fn execute(&self, actions: &[Action]) -> ExecReport {
        self.execute_concurrently(actions, 1).await
    }

    /// A shared action (the bridge, nginx): each on its own.
    async fn run_shared(&self, action: &Action, report: &mut ExecReport) -> Result<(), SysError> {
        let bridge = &self.layout.bridge;
        match action {
            Action::CreateBridge => self.create_tagged(intent(bridge, LinkKind::Bridge, None), self.create_bridge()).await,
            Action::AddBridgeAddress(c) => self.address(None, Change::Add, *c, bridge).await,
            Action::DelBridgeAddress(c) => self.address(None, Change::Del, *c, bridge).await,
            Action::BridgeUp => self.link_up(None, bridge, None).await,
            Action::DeleteBridge => self.delete_link(None, bridge).await.map(drop),
            Action::WriteNginx(files) => {
                report.nginx_reloaded = self.write_nginx(files).await?;
                Ok(())
            }
            Action::StartNginx => self.start_nginx().await,
            network => self.run_own(network).await,
        }
    }

    /// A network's action that runs on its own, not as a line of a batch
    /// (`batched::steps` says which).
    async fn run_own(&self, action: &Action) -> Result<(), SysError> {
        let l = &self.layout;
        match action {
            Action::RemoveStaleNamespace(p) => self.delete_namespace(&l.netns(*p)).await,
            Action::ConfigureWg(p, conf, changes) if changes.iter().any(crate::plan::WgChange::sets_peers_anew) => {
                self.wg_setconf(&l.netns(*p), &l.wg(*p), conf.text().to_string()).await
            }
            Action::ConfigureWg(p, conf, _) => self.wg_syncconf(&l.netns(*p), &l.wg(*p), conf.text().to_string()).await,
            Action::KickPeers { port, conf, .. } => self.wg_addconf(&l.netns(*port), &l.wg(*port), conf.text().to_string()).await,
            Action::SetForwarding(p) => self.set_namespace_sysctls(&l.netns(*p)).await,
            Action::SetRules { port, rules, missing_jumps } => self.set_rules(*port, rules, missing_jumps).await,
            Action::SetShaping { port, steps } => self.set_shaping(*port, steps).await,
            Action::DeleteNetwork(p) => self.delete_network(*p).await,
            Action::DeleteRootWg(p) => {
                self.delete_link(None, &l.wg(*p)).await?;
                self.wait_wireguard_go_gone(*p).await
            }
            other => Err(SysError::BatchOnly(other.label())),
        }
    }

    /// Both families' rules; IPv6 first, so IPv4's (the ingress path) are
    /// not replaced while IPv6's fail. Without IPv6 in the kernel, IPv4 alone.
    async fn set_rules(&self, port: u16, rules: &RuleSet, missing_jumps: &[Jump]) -> Result<(), SysError> {
        let ns = self.layout.netns(port);
        if self.ipv6 {
            self.iptables_restore(&ns, Family::Ipv6, render::iptables_restore(rules, Family::Ipv6, missing_jumps)).await?;
        }
        self.iptables_restore(&ns, Family::Ipv4, render::iptables_restore(rules, Family::Ipv4, missing_jumps)).await
    }

    /// Deletes the interface first, which makes wireguard-go exit now, not
    /// whenever the kernel gets round to tearing the namespace down; then
    /// the namespace (with its veth end and rules).
    async fn delete_network(&self, port: u16) -> Result<(), SysError> {
        let ns = self.layout.netns(port);
        let had_interface = self.delete_link(Some(&ns), &self.layout.wg(port)).await?;
        self.delete_namespace(&ns).await?;
        // The kernel takes the uplink's root end away with the namespace a
        // moment later, on a worker of its own: waited for (no process), so
        // the pass ends with nothing of the network left and a look right
        // after does not plan that veth's removal again. Past the bound,
        // the next pass removes it.
        let host_end = self.paths.sys_class_net.join(self.layout.veth_host(port));
        let _ = super::exec::wait::wait_for(|| !host_end.exists(), HOST_VETH_WAIT).await;
        // Without an interface in the namespace, a wireguard-go that is still
        // around holds one in the root namespace instead: DeleteRootWg's job.
        if had_interface {
            self.wait_wireguard_go_gone(port).await?;
        }
        Ok(())
    }
}

/// How long a deleted network's root veth end may take to go.
const HOST_VETH_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

mod batched;
mod concurrent;
#[cfg(test)]
mod tests;
