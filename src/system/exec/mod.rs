//! Processes: the one command runner ([`runner`]) and every tool's command
//! line ([`tools`]); waiting for what the system reaches on its own ([`wait`]).

pub mod runner;
pub mod tools;
pub(crate) mod wait;

use super::{SysError, System};
use runner::Cmd;

impl System {
    pub(crate) async fn run(&self, cmd: Cmd) -> Result<String, SysError> {
        Ok(self.runner.run(&cmd).await?)
    }
}
