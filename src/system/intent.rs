//! Crash-safe creation of the links the gateway recognises as its own by a
//! tag (the alias `gateway`) it sets right after creating them in the root
//! namespace: the bridge, the root end of each veth, and each WireGuard
//! interface until it moves. A crash between creating and tagging would
//! leave a link the gateway neither owns (so it never removes it) nor can
//! create again (and, with wireguard-go, a process holding it): the network
//! could never converge. So the intent is recorded (in the [`Journal`],
//! SQLite) before the link is created and forgotten once it is tagged; the
//! next pass undoes what an unfinished intent left
//! ([`System::undo_unfinished_links`]) before it plans anything, and plans
//! the link anew.

use std::future::Future;
use std::pin::Pin;

use super::kernel::procfs::read_trimmed;
use super::{SysError, System};
use crate::layout::OWNED_ALIAS;

/// What kind of link an intent is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkKind {
    Bridge,
    Veth,
    Wireguard,
}

impl LinkKind {
    pub fn as_str(self) -> &'static str {
        match self {
            LinkKind::Bridge => "bridge",
            LinkKind::Veth => "veth",
            LinkKind::Wireguard => "wireguard",
        }
    }

    pub fn parse(s: &str) -> Option<LinkKind> {
        [LinkKind::Bridge, LinkKind::Veth, LinkKind::Wireguard].into_iter().find(|k| k.as_str() == s)
    }
}

/// A root-namespace link about to be created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkIntent {
    pub name: String,
    pub kind: LinkKind,
    /// The network it belongs to (none for the bridge).
    pub network: Option<u16>,
}

/// What the journal answers: a boxed future, so the journal can be a trait
/// object held by [`System`].
pub type JournalFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, String>> + Send + 'a>>;

/// Where intents are kept across a crash (the store).
pub trait Journal: Send + Sync {
    fn record<'a>(&'a self, intent: &'a LinkIntent) -> JournalFuture<'a, ()>;
    fn forget<'a>(&'a self, name: &'a str) -> JournalFuture<'a, ()>;
    fn unfinished(&self) -> JournalFuture<'_, Vec<LinkIntent>>;
}

/// A journal that keeps nothing (tests whose system is scripted).
pub struct NoJournal;

impl Journal for NoJournal {
    fn record<'a>(&'a self, _: &'a LinkIntent) -> JournalFuture<'a, ()> {
        Box::pin(async { Ok(()) })
    }
    fn forget<'a>(&'a self, _: &'a str) -> JournalFuture<'a, ()> {
        Box::pin(async { Ok(()) })
    }
    fn unfinished(&self) -> JournalFuture<'_, Vec<LinkIntent>> {
        Box::pin(async { Ok(Vec::new()) })
    }
}

impl System {
    fn root_link_tagged(&self, name: &str) -> Option<bool> {
        let dir = self.paths.sys_class_net.join(name);
        dir.exists().then(|| read_trimmed(&dir.join("ifalias")).as_deref() == Some(OWNED_ALIAS))
    }

    /// Runs `create` (which creates the link and tags it) with its intent
    /// recorded around it. A link of that name that is there already is
    /// somebody else's: `create` then fails, and nothing is recorded.
    pub(super) async fn create_tagged(
        &self,
        intent: LinkIntent,
        create: impl Future<Output = Result<(), SysError>>,
    ) -> Result<(), SysError> {
        if self.root_link_tagged(&intent.name).is_some() {
            return create.await;
        }
        self.journal.record(&intent).await.map_err(SysError::Journal)?;
        create.await?;
        // Left recorded if this fails: the next pass finds the link tagged
        // and only forgets the intent.
        if let Err(e) = self.journal.forget(&intent.name).await {
            tracing::warn!(link = %intent.name, error = %e, "cannot forget a finished link creation; the next pass will");
        }
        Ok(())
    }

    /// The first half of [`create_tagged`](Self::create_tagged) when the
    /// creation runs in a batch: records the intent, unless a link of that
    /// name is there already (somebody else's: creating it fails).
    pub(super) async fn record_intent(&self, intent: &LinkIntent) -> Result<(), SysError> {
        if self.root_link_tagged(&intent.name).is_some() {
            return Ok(());
        }
        self.journal.record(intent).await.map_err(SysError::Journal)
    }

    /// The second half: the link is created and tagged.
    pub(super) async fn forget_intent(&self, name: &str) {
        if let Err(e) = self.journal.forget(name).await {
            tracing::warn!(link = %name, error = %e, "cannot forget a finished link creation; the next pass will");
        }
    }

    /// Undoes what creations interrupted by a crash (or a failure) left:
    /// each link not tagged is deleted, with the wireguard-go serving it;
    /// tagged ones were finished. Returns the problems met (the pass reports
    /// them; the intents stay for the next pass).
    pub async fn undo_unfinished_links(&self) -> Vec<String> {
        let intents = match self.journal.unfinished().await {
            Ok(intents) => intents,
            Err(e) => return vec![format!("reading unfinished link creations: {e}")],
        };
        let mut problems = Vec::new();
        for intent in intents {
            let undone = match self.undo_unfinished(&intent).await {
                Ok(()) => self.journal.forget(&intent.name).await.map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            if let Err(e) = undone {
                problems.push(format!("undoing the unfinished creation of {} {}: {e}", intent.kind.as_str(), intent.name));
            }
        }
        problems
    }

    async fn undo_unfinished(&self, intent: &LinkIntent) -> Result<(), SysError> {
        match self.root_link_tagged(&intent.name) {
            Some(true) => return Ok(()),
            Some(false) => {
                tracing::warn!(link = %intent.name, kind = intent.kind.as_str(), "removing a link an interrupted pass created but never tagged");
                self.delete_link(None, &intent.name).await?;
            }
            None => {}
        }
        if intent.kind == LinkKind::Wireguard {
            self.undo_unfinished_wg(&intent.name).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::store::Store;
    use crate::system::{Backend, Reply, Script};
    use crate::testing::FakeHost;

    async fn journaled(host: &FakeHost, script: Script) -> (System, Store) {
        let store = Store::open(None).await.unwrap();
        let mut system = host.system(script, Backend::Kernel);
        system.journal = Arc::new(store.clone());
        (system, store)
    }

    fn wg(port: u16) -> LinkIntent {
        LinkIntent { name: format!("wg{port}"), kind: LinkKind::Wireguard, network: Some(port) }
    }

    #[tokio::test]
    async fn the_intent_is_recorded_before_the_link_is_made_and_forgotten_once_tagged() {
        let host = FakeHost::new();
        let (system, store) = journaled(&host, Script::new()).await;
        let create = async {
            assert_eq!(store.unfinished().await.unwrap(), [wg(51820)], "recorded before the command runs");
            Ok(())
        };
        system.create_tagged(wg(51820), create).await.unwrap();
        assert!(store.unfinished().await.unwrap().is_empty(), "forgotten once created and tagged");
        let failing = async { Err(SysError::NotDesired(51821)) };
        assert!(system.create_tagged(wg(51821), failing).await.is_err());
        assert_eq!(store.unfinished().await.unwrap(), [wg(51821)], "kept when the creation did not finish");
        host.add_link("wg51822", false);
        let someone_elses = async { Err(SysError::NotDesired(51822)) };
        assert!(system.create_tagged(wg(51822), someone_elses).await.is_err());
        assert_eq!(store.unfinished().await.unwrap(), [wg(51821)], "a link that was there is not ours to undo");
    }

    #[tokio::test]
    async fn unfinished_links_are_deleted_unless_tagged() {
        let host = FakeHost::new();
        let (system, store) =
            journaled(&host, Script::new().on("link del gwv51823", Reply::fail(2, "RTNETLINK answers: Operation not permitted"))).await;
        let bridge = LinkIntent { name: "gwbr0".into(), kind: LinkKind::Bridge, network: None };
        let veth = |port: u16| LinkIntent { name: format!("gwv{port}"), kind: LinkKind::Veth, network: Some(port) };
        for intent in [bridge, wg(51820), veth(51821), veth(51823)] {
            store.record(&intent).await.unwrap();
        }
        host.add_link("gwbr0", false);
        host.add_link("wg51820", true);
        host.add_link("gwv51823", false);
        system.runner.take_records();
        let problems = system.undo_unfinished_links().await;
        let ran: Vec<String> = system.runner.take_records().into_iter().map(|r| r.line).collect();
        assert_eq!(ran, ["ip link del gwbr0", "ip link del gwv51823"], "only untagged leftovers are deleted");
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("gwv51823") && problems[0].contains("not permitted"), "{problems:?}");
        let left: Vec<String> = store.unfinished().await.unwrap().into_iter().map(|i| i.name).collect();
        assert_eq!(left, ["gwv51823"], "kept for the next pass only where undoing failed");
    }
}
