//! The kernel without a process: netlink ([`netlink`]), /proc and /sys
//! ([`procfs`]), and threads that enter namespaces (`setns`) to observe
//! them ([`observer`]), set their sysctls ([`nswrite`]) or check upstreams
//! ([`probe`]); whether a host port is free ([`ports`]); the HA role from
//! address notifications ([`role`]); how full the sockets listening to
//! link events are ([`link_listeners`]).

pub mod link_listeners;
pub mod netlink;
pub mod nswrite;
pub mod observer;
pub mod ports;
pub mod probe;
pub mod procfs;
pub mod role;
