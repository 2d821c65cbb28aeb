//! Dry runs: the look and plan of an apply, described instead of executed.

use std::collections::BTreeMap;

use super::{Mode, Reconciler};
use crate::model::DryRunResponse;
use crate::plan::Action;
use crate::service::DryRunRequest;
use crate::spec::Desired;

impl Reconciler {
    /// Answers a dry run: what an apply of `request.desired` would do now.
    /// Only reads; run between passes, so it sees no half-done pass.
    pub async fn answer_dry_run(&self, request: DryRunRequest) {
        // As an apply would: what this host's role applies of it, without
        // the raw routes whose port another process holds.
        let desired = match self.shared.has_role() {
            true => std::borrow::Cow::Owned(crate::ha::view(&request.desired, self.shared.role())),
            false => std::borrow::Cow::Borrowed(&request.desired),
        };
        // The targets the last pass computed serve where a spec is the same.
        let (targets, _) = crate::target::Targets::build(&self.shared.system().layout, &desired, &self.targets);
        let (parts, _) = self.nginx_parts_of(&targets);
        let (nginx, left_out) = self.nginx_for(&parts);
        let (mut look, actions) = self.look_and_plan(Mode::Apply, &targets, &nginx, &mut super::Laps::new()).await;
        look.errors.extend(left_out.into_iter().map(|l| format!("network {}: {}: {}", l.network, l.route, l.error)));
        let response = describe(request.generation, &actions, look.errors, &request.desired);
        // The asker may have given up waiting: nothing to do then.
        let _ = request.answer.send(response);
    }
}

/// The planned actions, one line each, per network and shared.
pub fn describe(generation: i64, actions: &[Action], errors: Vec<String>, desired: &Desired) -> DryRunResponse {
    let mut changes: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut shared = Vec::new();
    let mut removed = Vec::new();
    for action in actions {
        match action.network() {
            Some(port) => {
                if !desired.networks.contains_key(&port) && !removed.contains(&port) {
                    removed.push(port);
                }
                changes.entry(port.to_string()).or_default().push(action.to_string());
            }
            None => shared.push(action.to_string()),
        }
    }
    let nginx_reload = actions.iter().any(|a| matches!(a, Action::WriteNginx(_) | Action::StartNginx));
    removed.sort_unstable();
    DryRunResponse { dry_run: true, generation, changes, shared, nginx_reload, removed, errors }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::converged_desired;

    #[test]
    fn actions_are_grouped_by_network_and_removals_named() {
        let d = converged_desired();
        let actions = [
            Action::CreateBridge,
            Action::SetWgLink { port: 51820, mtu: 1400 },
            Action::SetForwarding(51820),
            Action::WriteNginx(Default::default()),
            Action::DeleteNetwork(40000),
            Action::DeleteHostVeth(40000),
        ];
        let r = describe(7, &actions, vec![], &d);
        assert!(r.dry_run);
        assert_eq!(r.generation, 7);
        assert_eq!(r.changes["51820"], ["set mtu 1400 and up", "enable forwarding"]);
        assert_eq!(r.changes["40000"], ["delete the network (interface, namespace, rules)", "delete the veth"]);
        assert_eq!(r.changes.len(), 2);
        assert_eq!(r.shared, ["create the bridge", "write the nginx files, check and reload nginx"]);
        assert!(r.nginx_reload);
        assert_eq!(r.removed, [40000]);
        let r = describe(7, &[], vec![], &d);
        assert!(r.changes.is_empty() && r.shared.is_empty() && !r.nginx_reload && r.removed.is_empty());
    }
}
