//! Who calls: the identity the kernel gives a connection at accept, passed
//! to every operation. It never changes after accept; key policies and
//! grants decide on it, and the pid is for logs only, never for decisions
//! (pids are reused).
//!
//! uid, gid and pid come from SO_PEERCRED; the supplementary groups
//! (SO_PEERGROUPS) and the cgroup and systemd unit (read through the
//! peer's pidfd, SO_PEERPIDFD) are [`PeerDetails`], read once at accept and
//! shared by every frame of the connection (an `Arc`: a frame clones a
//! pointer, not a group list).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// What the kernel says about a connection's peer beyond SO_PEERCRED.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeerDetails {
    /// Supplementary group ids (SO_PEERGROUPS), sorted, without
    /// duplicates; empty if the kernel does not say.
    pub groups: Vec<u32>,
    /// The peer's cgroup v2 path (`/system.slice/foo.service`), read
    /// without the pid-reuse race through its pidfd; `None` where that is
    /// impossible (never guessed from a pid).
    pub cgroup: Option<String>,
    /// The systemd service the cgroup path names (`foo.service`), if any.
    pub unit: Option<String>,
}

/// The caller's identity, read from the socket at accept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// User id.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
    /// Process id (at connect time; logged, never authorized on).
    pub pid: i32,
    /// This connection's number, unique in the daemon's life (from 1); 0
    /// for in-process callers. Cached authorization decisions are keyed by
    /// it: a connection's identity never changes.
    pub conn: u64,
    /// Groups, cgroup and unit (`None`: none known, as for in-process
    /// callers).
    pub details: Option<Arc<PeerDetails>>,
}

static NEXT_CONN: AtomicU64 = AtomicU64::new(1);

impl Identity {
    /// An identity with only SO_PEERCRED's fields (in-process callers,
    /// tests): no groups, cgroup or unit, no connection number.
    pub const fn local(uid: u32, gid: u32, pid: i32) -> Identity {
        Identity {
            uid,
            gid,
            pid,
            conn: 0,
            details: None,
        }
    }

    /// The identity of a newly accepted connection: its own connection
    /// number, and `details` shared by its frames.
    pub fn accepted(uid: u32, gid: u32, pid: i32, details: PeerDetails) -> Identity {
        Identity {
            uid,
            gid,
            pid,
            conn: NEXT_CONN.fetch_add(1, Ordering::Relaxed),
            details: Some(Arc::new(details)),
        }
    }

    /// Supplementary groups (sorted).
    pub fn groups(&self) -> &[u32] {
        self.details.as_deref().map_or(&[], |d| &d.groups)
    }

    /// The systemd unit, if known.
    pub fn unit(&self) -> Option<&str> {
        self.details.as_deref().and_then(|d| d.unit.as_deref())
    }

    /// The cgroup path, if known.
    pub fn cgroup(&self) -> Option<&str> {
        self.details.as_deref().and_then(|d| d.cgroup.as_deref())
    }

    /// The identity as key policies see it.
    pub fn caller(&self) -> kms_policy::Caller<'_> {
        kms_policy::Caller {
            uid: self.uid,
            gid: self.gid,
            supplementary_gids: self.groups(),
            unit: self.unit(),
            cgroup: self.cgroup(),
        }
    }

    /// How an AccessDeniedException names the caller: `uid:N` with its
    /// unit when it has one (never the pid: it is not what decided).
    pub fn principal(&self) -> String {
        match self.unit() {
            Some(u) => format!("uid:{} (unit:{u})", self.uid),
            None => format!("uid:{}", self.uid),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_accepted_connection_has_its_own_number() {
        let a = Identity::accepted(1, 1, 1, PeerDetails::default());
        let b = Identity::accepted(1, 1, 1, PeerDetails::default());
        assert_ne!(a.conn, 0);
        assert_ne!(a.conn, b.conn);
        assert_eq!(Identity::local(1, 1, 1).conn, 0);
    }

    #[test]
    fn a_policy_sees_groups_unit_and_cgroup() {
        let id = Identity::accepted(
            10,
            20,
            30,
            PeerDetails {
                groups: vec![5, 7],
                cgroup: Some("/system.slice/a.service".into()),
                unit: Some("a.service".into()),
            },
        );
        let c = id.caller();
        assert_eq!((c.uid, c.gid, c.supplementary_gids), (10, 20, &[5u32, 7][..]));
        assert_eq!(c.unit, Some("a.service"));
        assert_eq!(c.cgroup, Some("/system.slice/a.service"));
        assert_eq!(id.principal(), "uid:10 (unit:a.service)");
    }
}
