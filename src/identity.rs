//! Who calls: the identity the kernel gives a connection at accept
//! (SO_PEERCRED), passed to every operation. It never changes after accept;
//! key policies and grants (later) decide on it, and the pid is for logs
//! only, never for decisions (pids are reused).

/// The caller's identity, read from the socket with SO_PEERCRED at accept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Identity {
    /// User id.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
    /// Process id (at connect time; logged, never authorized on).
    pub pid: i32,
}
