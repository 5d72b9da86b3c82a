//! User and group names in policies: resolved through the system's user
//! database (NSS: `getpwnam_r`/`getgrnam_r`) when a policy is stored, the
//! numbers kept beside the text, and read back from there when the policy
//! is loaded, so a stored policy means what it meant when it was accepted.

use kms_policy::NameResolver;
use std::cell::RefCell;
use std::collections::BTreeMap;

/// The system's user database. Blocking (NSS may ask a directory
/// service): the control plane only.
pub struct SystemNames;

impl NameResolver for SystemNames {
    fn user(&self, name: &str) -> Option<u32> {
        nix::unistd::User::from_name(name)
            .ok()
            .flatten()
            .map(|u| u.uid.as_raw())
    }
    fn group(&self, name: &str) -> Option<u32> {
        nix::unistd::Group::from_name(name)
            .ok()
            .flatten()
            .map(|g| g.gid.as_raw())
    }
}

/// Resolves through another resolver and records what it resolved, as the
/// JSON object stored beside the policy (`{"user:alice": 1000}`).
pub struct Recording<'r> {
    inner: &'r dyn NameResolver,
    seen: RefCell<BTreeMap<String, u32>>,
}

impl<'r> Recording<'r> {
    /// Records what `inner` resolves.
    pub fn new(inner: &'r dyn NameResolver) -> Recording<'r> {
        Recording {
            inner,
            seen: RefCell::default(),
        }
    }

    /// What was resolved, as stored.
    pub fn into_json(self) -> String {
        serde_json::to_string(&self.seen.into_inner()).expect("a map of numbers serializes")
    }
}

impl NameResolver for Recording<'_> {
    fn user(&self, name: &str) -> Option<u32> {
        let id = self.inner.user(name)?;
        self.seen.borrow_mut().insert(format!("user:{name}"), id);
        Some(id)
    }
    fn group(&self, name: &str) -> Option<u32> {
        let id = self.inner.group(name)?;
        self.seen.borrow_mut().insert(format!("group:{name}"), id);
        Some(id)
    }
}

/// The names a stored policy used, as they were resolved when it was
/// stored.
pub struct StoredNames(BTreeMap<String, u32>);

impl StoredNames {
    /// Reads the stored JSON object.
    pub fn parse(json: &str) -> Result<StoredNames, serde_json::Error> {
        serde_json::from_str(json).map(StoredNames)
    }
}

impl NameResolver for StoredNames {
    fn user(&self, name: &str) -> Option<u32> {
        self.0.get(&format!("user:{name}")).copied()
    }
    fn group(&self, name: &str) -> Option<u32> {
        self.0.get(&format!("group:{name}")).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_resolves_and_what_was_resolved_is_read_back() {
        // Every Linux user database has root (uid 0, group 0).
        let rec = Recording::new(&SystemNames);
        assert_eq!(rec.user("root"), Some(0));
        assert_eq!(rec.group("root"), Some(0));
        assert_eq!(rec.user("no-such-user-kmsd-test"), None);
        let json = rec.into_json();
        assert_eq!(json, r#"{"group:root":0,"user:root":0}"#);
        let back = StoredNames::parse(&json).unwrap();
        assert_eq!(back.user("root"), Some(0));
        assert_eq!(back.group("root"), Some(0));
        assert_eq!(back.user("alice"), None);
    }
}
