//! tc on the two ends of a network's veth (see `render::tc`): read with
//! one `tc -batch` per end, changed with one `tc qdisc del` where a root
//! qdisc must go and one `tc -batch` that builds the tree. Only networks
//! with a bandwidth field, or whose ends were seen holding HTB, get here.
//! The pure part (trees from the spec, tc's text both ways) is [`shape`].

pub mod shape;

use super::exec::runner::Cmd;
use super::{SysError, System};
use crate::layout::VETH_NS_NAME;
use shape::{ObservedTc, ShapingStep, Side, parse_tc_show, tc_batch, tc_show_batch};

impl System {
    /// `tc ARGS`, inside the network's namespace for its end of the veth.
    fn tc(&self, port: u16, side: Side, args: &[&str]) -> Cmd {
        let ns = self.layout.netns(port);
        let prefix: &[&str] = match side {
            Side::TowardNodes => &[],
            Side::TowardClients => &["-n", &ns],
        };
        Cmd::new(&self.tools.tc, prefix.iter().chain(args).map(|a| a.to_string()))
    }

    /// The veth end a side's traffic leaves by.
    fn shaped_dev(&self, port: u16, side: Side) -> String {
        match side {
            Side::TowardNodes => self.layout.veth_host(port),
            Side::TowardClients => VETH_NS_NAME.to_string(),
        }
    }

    /// Both ends' qdiscs, classes and filters (two processes).
    pub async fn observe_shaping(&self, port: u16) -> Result<ObservedTc, SysError> {
        let mut out = ObservedTc::default();
        for side in [Side::TowardNodes, Side::TowardClients] {
            let cmd = self.tc(port, side, &["-batch", "-"]).stdin(tc_show_batch(&self.shaped_dev(port, side))).read_only();
            let seen = parse_tc_show(&self.run(cmd).await?, side);
            match side {
                Side::TowardNodes => out.toward_nodes = seen,
                Side::TowardClients => out.toward_clients = seen,
            }
        }
        Ok(out)
    }

    /// Runs the planned steps in their order (see `render::tc::steps`).
    pub async fn set_shaping(&self, port: u16, steps: &[ShapingStep]) -> Result<(), SysError> {
        for step in steps {
            let dev = self.shaped_dev(port, step.side);
            if step.clear {
                // Already gone (the veth made anew, a hand's `tc qdisc del`) is done.
                match self.runner.run(&self.tc(port, step.side, &["qdisc", "del", "dev", &dev, "root"])).await {
                    Err(e) if e.kind() != super::FailureKind::Missing => return Err(e.into()),
                    _ => {}
                }
            }
            if let Some(tree) = &step.set {
                self.run(self.tc(port, step.side, &["-batch", "-"]).stdin(tc_batch(&dev, step.side, tree))).await?;
            }
        }
        Ok(())
    }
}
