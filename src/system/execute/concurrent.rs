//! Networks converge side by side. The plan's order is kept where it
//! matters: a shared action (bridge, nginx) waits for every network action
//! before it and holds back every one after it, and inside a network the
//! actions run one after the other, the rest skipped after a failure. Up to
//! `limit` networks are worked on at once; the report is the same as one
//! network after the other would give (errors in network order). Their
//! link work is batched with the other networks' (see [`super::batched`]).

use tracing::Instrument;

use super::ExecReport;
use crate::plan::Action;
use crate::system::System;

/// A stretch of the plan: one shared action, or network actions by network
/// (each network's in plan order).
enum Segment<'a> {
    Shared(&'a Action),
    Networks(std::collections::BTreeMap<u16, Vec<&'a Action>>),
}

fn segments(actions: &[Action]) -> Vec<Segment<'_>> {
    let mut out = Vec::new();
    for action in actions {
        match (action.network(), out.last_mut()) {
            (None, _) => out.push(Segment::Shared(action)),
            (Some(p), Some(Segment::Networks(by_network))) => by_network.entry(p).or_default().push(action),
            (Some(p), _) => out.push(Segment::Networks([(p, vec![action])].into())),
        }
    }
    out
}

impl System {
    /// Runs the plan with up to `limit` networks at once (see the module).
    pub async fn execute_concurrently(&self, actions: &[Action], limit: usize) -> ExecReport {
        let mut report = ExecReport::default();
        let creates = actions.iter().filter(|a| matches!(a, Action::CreateWg(_))).count();
        if creates > 0 {
            // Room for the interfaces there and those to come.
            self.make_room_for_wg(self.namespaces().len() + creates);
        }
        for segment in segments(actions) {
            match segment {
                Segment::Shared(action) => {
                    let result = self.run_shared(action, &mut report).instrument(tracing::debug_span!("shared")).await;
                    report.record(action, result);
                }
                Segment::Networks(by_network) => {
                    let by_network = by_network.into_iter().filter(|(p, _)| !report.failed.contains(p)).collect();
                    report.merge(self.run_networks_batched(by_network, limit).await);
                }
            }
        }
        report
    }
}

impl ExecReport {
    pub(crate) fn merge(&mut self, other: ExecReport) {
        self.changed.extend(other.changed);
        self.failed.extend(other.failed);
        self.errors.extend(other.errors);
        self.nginx_reloaded |= other.nginx_reloaded;
        self.global_failed |= other.global_failed;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_actions_are_barriers_and_networks_keep_their_order() {
        let actions = [
            Action::CreateBridge,
            Action::CreateNamespace(2),
            Action::CreateNamespace(1),
            Action::CreateWg(2),
            Action::WriteNginx(Default::default()),
            Action::DeleteNetwork(3),
            Action::DeleteBridge,
        ];
        let s = segments(&actions);
        let shape: Vec<String> = s
            .iter()
            .map(|seg| match seg {
                Segment::Shared(a) => a.label(),
                Segment::Networks(n) => format!("{:?}", n.iter().map(|(p, a)| (*p, a.len())).collect::<Vec<_>>()),
            })
            .collect();
        assert_eq!(shape, ["CreateBridge", "[(1, 1), (2, 2)]", "WriteNginx", "[(3, 1)]", "DeleteBridge"]);
        let Segment::Networks(n) = &s[1] else { panic!() };
        assert_eq!(n[&2], [&Action::CreateNamespace(2), &Action::CreateWg(2)]);
    }
}
