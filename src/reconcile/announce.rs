//! What a pass tells the event stream: `apply` for a new generation (or
//! its retry), `drift_repaired` for what a drift check put back.

use std::collections::BTreeMap;

use super::{Mode, Reconciler};
use crate::model::events::{ApplyEvent, DriftRepairedEvent};
use crate::plan::Action;
use crate::store::ApplyRecord;
use crate::system::ExecReport;

impl Reconciler {
    pub(super) fn announce_pass(&self, mode: Mode, record: &ApplyRecord) {
        if mode != Mode::Apply {
            return;
        }
        let event = ApplyEvent {
            generation: record.generation,
            result: if record.ok { "applied" } else { "failed" }.into(),
            changed_networks: record.changed.clone(),
            errors: record.errors.clone(),
            duration_ms: record.duration_ms,
        };
        self.shared.events().publish("apply", &event);
    }

    /// One `drift_repaired` per network a drift check repaired in full
    /// (and one for the shared steps), listing what it did.
    pub(super) fn announce_repairs(&self, actions: &[Action], report: &ExecReport) {
        for event in repairs(actions, report) {
            self.shared.events().publish("drift_repaired", &event);
        }
    }
}

/// The repairs of a drift check, per network (`None`: the shared steps).
pub fn repairs(actions: &[Action], report: &ExecReport) -> Vec<DriftRepairedEvent> {
    let mut by_network: BTreeMap<Option<u16>, Vec<String>> = BTreeMap::new();
    for action in actions {
        let done = match action.network() {
            Some(p) => report.changed.contains(&p) && !report.failed.contains(&p),
            None => !report.global_failed,
        };
        if done {
            by_network.entry(action.network()).or_default().push(action.to_string());
        }
    }
    by_network.into_iter().map(|(network, repaired)| DriftRepairedEvent { network, repaired }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repairs_name_each_fully_repaired_network_and_the_shared_steps() {
        let actions = [
            Action::StartNginx,
            Action::SetWgLink { port: 1, mtu: 1420 },
            Action::SetForwarding(1),
            Action::SetForwarding(2),
            Action::CreateNamespace(3),
        ];
        let mut report = ExecReport::default();
        report.changed.extend([1, 2]);
        report.failed.insert(2);
        let events = repairs(&actions, &report);
        assert_eq!(
            events,
            [
                DriftRepairedEvent { network: None, repaired: vec!["start nginx".into()] },
                DriftRepairedEvent { network: Some(1), repaired: vec!["set mtu 1420 and up".into(), "enable forwarding".into()] },
            ]
        );
        report.global_failed = true;
        assert_eq!(repairs(&actions, &report).len(), 1, "a failed shared step is no repair");
    }
}
