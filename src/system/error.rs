use super::exec::runner::CmdError;

/// Why a system operation failed, with what a person needs to act on it.
#[derive(Debug, thiserror::Error)]
pub enum SysError {
    #[error(transparent)]
    Command(#[from] CmdError),
    #[error("writing {path}: {source}")]
    Write { path: String, source: std::io::Error },
    #[error("wireguard-go's socket {sock} did not answer within {secs} s")]
    WireguardGoSilent { sock: String, secs: u64 },
    #[error("wireguard-go for {iface} exited while starting (its interface went away before it answered on its socket): {hint}")]
    WireguardGoDied { iface: String, hint: String },
    #[error("wireguard-go for {iface} did not exit within {secs} s")]
    WireguardGoLingers { iface: String, secs: u64 },
    #[error("nginx config check failed: {0}")]
    NginxCheck(CmdError),
    #[error("nginx did not load the new configuration within {secs} s (see its error log, e.g. a port in use)")]
    NginxNotReloaded { secs: u64 },
    #[error("{0}; the previous nginx files were restored")]
    NginxRestored(Box<SysError>),
    #[error("network {0} is not in the desired state")]
    NotDesired(u16),
    #[error("reading {what}: {detail}")]
    Unreadable { what: String, detail: String },
    #[error("recording a link about to be created: {0}")]
    Journal(String),
    /// An action given to be run alone that only runs as a line of an `ip
    /// -batch` (`execute::batched::steps`): a bug, said as such.
    #[error("internal error: {0} runs only as a line of an ip batch")]
    BatchOnly(String),
}
