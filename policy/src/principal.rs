//! Principals: the local identities a statement applies to.

use crate::error::{shown, PolicyError};
use crate::request::Caller;

/// Resolves user and group names to ids when a policy is parsed, so that
/// this crate makes no system calls and a stored policy's meaning does not
/// change when the name service does.
pub trait NameResolver {
    /// The uid of user `name`, or `None` if there is no such user.
    fn user(&self, name: &str) -> Option<u32>;
    /// The gid of group `name`, or `None` if there is no such group.
    fn group(&self, name: &str) -> Option<u32>;
}

/// A resolver that knows no names: `user:` and `group:` principals are
/// refused, ids and the other kinds are accepted.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoNames;

impl NameResolver for NoNames {
    fn user(&self, _: &str) -> Option<u32> {
        None
    }
    fn group(&self, _: &str) -> Option<u32> {
        None
    }
}

/// A resolver that resolves every name, to an id nothing has: for checking
/// a document's shape before its names are resolved for real (the default
/// policy builder's output is parsed again, with the daemon's resolver,
/// when it is stored).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct AnyName;

impl NameResolver for AnyName {
    fn user(&self, _: &str) -> Option<u32> {
        Some(u32::MAX)
    }
    fn group(&self, _: &str) -> Option<u32> {
        Some(u32::MAX)
    }
}

/// A compiled principal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Principal {
    /// `*`: every caller.
    Everyone,
    /// `uid:N` or `user:NAME`.
    Uid(u32),
    /// `gid:N` or `group:NAME`: the primary or a supplementary gid.
    Gid(u32),
    /// `unit:NAME.service`: the caller's systemd unit, exactly.
    Unit(String),
    /// `cgroup:PATH`: the caller's cgroup is PATH or below it.
    Cgroup(String),
}

/// The longest principal text (a cgroup path can be long, but not longer
/// than this in practice; the limit bounds the reason strings too).
const MAX_PRINCIPAL_BYTES: usize = 512;

/// Characters of a systemd unit name (systemd.unit(5): ASCII letters,
/// digits, `:`, `-`, `_`, `.`, `\`, and `@` for instances).
fn unit_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, ':' | '-' | '_' | '.' | '\\' | '@')
}

/// A name as `user:` and `group:` take it: the POSIX portable set plus
/// what common systems allow (`$` ends machine accounts).
fn account_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && !s.starts_with('-')
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '$'))
}

fn number(s: &str) -> Option<u32> {
    // Digits only: u32::from_str would take "+5".
    if s.is_empty() || s.len() > 10 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

impl Principal {
    /// Parses one principal; `field` names it in an error.
    pub(crate) fn parse(
        text: &str,
        field: &str,
        resolver: &dyn NameResolver,
    ) -> Result<Principal, PolicyError> {
        let bad = |why: &str| PolicyError::new(format!("{field}: {} {why}", shown(text)));
        if text.len() > MAX_PRINCIPAL_BYTES {
            return Err(bad("is too long"));
        }
        if text == "*" {
            return Ok(Principal::Everyone);
        }
        let Some((kind, rest)) = text.split_once(':') else {
            return Err(bad(
                "is not a principal (uid:N, gid:N, user:NAME, group:NAME, \
                 unit:NAME.service, cgroup:PATH or *)",
            ));
        };
        match kind {
            "uid" => number(rest)
                .map(Principal::Uid)
                .ok_or_else(|| bad("is not a uid (decimal, 0..=4294967295)")),
            "gid" => number(rest)
                .map(Principal::Gid)
                .ok_or_else(|| bad("is not a gid (decimal, 0..=4294967295)")),
            "user" | "group" => {
                if !account_name(rest) {
                    return Err(bad("is not a valid user or group name"));
                }
                if kind == "user" {
                    resolver
                        .user(rest)
                        .map(Principal::Uid)
                        .ok_or_else(|| bad("names no user"))
                } else {
                    resolver
                        .group(rest)
                        .map(Principal::Gid)
                        .ok_or_else(|| bad("names no group"))
                }
            }
            "unit" => {
                let name = rest.strip_suffix(".service").unwrap_or("");
                if name.is_empty() || !rest.chars().all(unit_char) {
                    return Err(bad("is not a systemd service unit (unit:NAME.service)"));
                }
                Ok(Principal::Unit(rest.to_owned()))
            }
            "cgroup" => {
                // An absolute path without empty, `.` or `..` components,
                // so that the subtree rule below cannot be tricked.
                let ok = rest.starts_with('/')
                    && (rest == "/"
                        || rest[1..]
                            .split('/')
                            .all(|c| !c.is_empty() && c != "." && c != ".."))
                    && !rest.chars().any(char::is_control);
                if !ok {
                    return Err(bad("is not an absolute cgroup path (cgroup:/a/b)"));
                }
                Ok(Principal::Cgroup(rest.to_owned()))
            }
            _ => Err(bad(
                "is not a principal (uid:N, gid:N, user:NAME, group:NAME, \
                 unit:NAME.service, cgroup:PATH or *)",
            )),
        }
    }

    /// Whether `caller` is this principal.
    pub(crate) fn matches(&self, caller: &Caller<'_>) -> bool {
        match self {
            Principal::Everyone => true,
            Principal::Uid(u) => caller.uid == *u,
            Principal::Gid(g) => caller.gid == *g || caller.supplementary_gids.contains(g),
            Principal::Unit(u) => caller.unit == Some(u.as_str()),
            Principal::Cgroup(p) => caller.cgroup.is_some_and(|c| {
                // The cgroup itself or one below it: a service's own
                // sub-cgroups (delegation) are still that service.
                p == "/"
                    || c.strip_prefix(p.as_str())
                        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
            }),
        }
    }
}
