//! The kernel module: the interface is a link like any other, the kernel
//! serves it; nothing runs beside it.

use futures_util::future::BoxFuture;

use super::{Driver, Source};
use crate::system::{SysError, System};

pub(super) struct Kernel;

impl Driver for Kernel {
    fn create_line(&self, iface: &str) -> Option<String> {
        Some(crate::system::netns::batch::wireguard_add(iface))
    }

    fn create<'a>(&'a self, sys: &'a System, iface: &'a str) -> BoxFuture<'a, Result<(), SysError>> {
        Box::pin(async move { sys.run(sys.tools.ip(["link", "add", iface, "type", "wireguard"])).await.map(drop) })
    }

    /// The link went with its namespace; nothing else served it.
    fn wait_gone<'a>(&'a self, _: &'a System, _: &'a str) -> BoxFuture<'a, Result<(), SysError>> {
        Box::pin(async { Ok(()) })
    }

    /// An untagged link is all an interrupted creation leaves.
    fn undo_unfinished<'a>(&'a self, _: &'a System, _: &'a str) -> BoxFuture<'a, Result<(), SysError>> {
        Box::pin(async { Ok(()) })
    }

    fn source(&self, _: &System, iface: &str) -> Source {
        Source::Genl(iface.to_string())
    }

    fn make_room(&self, _: &System, _: usize) -> Result<(), SysError> {
        Ok(())
    }
}
