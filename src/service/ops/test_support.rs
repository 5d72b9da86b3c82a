//! A service in this process for the operations' unit tests: in-memory
//! store, a file root with a fixed key, and shorthands for the calls the
//! tests repeat.

use crate::service::LifecycleLimits;
use crate::crypto::KeyMaterial;
use crate::identity::Identity;
use crate::keystore::Keystore;
use crate::root::FileRoot;
use crate::service::{Service, ServiceOptions};
use kms_proto::*;
use std::sync::Arc;

/// A key id no key has.
pub const MISSING_KEY: &str = "00000000-0000-4000-8000-000000000000";

const PEER: Identity = Identity::local(0, 0, 1);

/// A service over an in-memory store.
pub struct TestService {
    /// The service.
    pub svc: Service,
}

impl TestService {
    /// With the default limits.
    pub fn new() -> TestService {
        TestService::with_limits(LifecycleLimits::default())
    }

    /// With `limits`.
    pub fn with_limits(limits: LifecycleLimits) -> TestService {
        let svc = Service::with_options(
            Keystore::open_in_memory().unwrap(),
            Arc::new(FileRoot::from_key(KeyMaterial::from_bytes([7; 32]))),
            ServiceOptions {
                access: Default::default(),
                limits: Default::default(),
                max_keys: crate::config::LimitsConfig::default().max_keys,
                cache: Default::default(),
                loader_threads: 1,
                queue_capacity: 64,
                clock: Arc::new(crate::clock::SystemClock),
                lifecycle_limits: limits,
                hsm_invocation_limit: crate::service::backing::HSM_INVOCATION_LIMIT,
                arns: Default::default(),
            },
        )
        .unwrap();
        TestService { svc }
    }

    /// Runs `op` to completion.
    pub fn call(&self, op: Operation<'_>) -> Result<Output, KmsError> {
        self.svc.call(&op, &PEER)
    }

    /// The ARN of the key whose id is `key_id` (the default `[aws]`: what
    /// the cryptographic operations answer as KeyId).
    pub fn arn(&self, key_id: &str) -> String {
        let id = self.svc.parse_key_id(key_id).unwrap();
        self.svc.arns().key_arn(&id)
    }

    /// Creates a key (origin KMSD); returns its id.
    pub fn create_key(&self) -> String {
        self.create(CreateKey::default()).key_id
    }

    /// Creates a key as asked.
    pub fn create(&self, req: CreateKey<'_>) -> KeyMetadata {
        match self.call(Operation::CreateKey(req)).unwrap() {
            Output::CreateKey(m) => m,
            o => panic!("unexpected {o:?}"),
        }
    }

    /// DescribeKey.
    pub fn describe(&self, key_id: &str) -> KeyMetadata {
        match self
            .call(Operation::DescribeKey(DescribeKey {
                key_id,
                ..Default::default()
            }))
            .unwrap()
        {
            Output::DescribeKey(m) => m,
            o => panic!("unexpected {o:?}"),
        }
    }

    /// CreateAlias, which must succeed.
    pub fn alias(&self, alias_name: &str, target_key_id: &str) {
        self.call(Operation::CreateAlias(CreateAlias {
            alias_name,
            target_key_id,
        }))
        .unwrap();
    }

    /// Every alias (name, target key id), in name order.
    pub fn aliases(&self) -> Vec<(String, String)> {
        match self
            .call(Operation::ListAliases(ListAliases {
                key_id: None,
                limit: 1000,
                marker: None,
            }))
            .unwrap()
        {
            Output::ListAliases(o) => o
                .aliases
                .into_iter()
                .map(|a| (a.alias_name, a.target_key_id.unwrap_or_default()))
                .collect(),
            o => panic!("unexpected {o:?}"),
        }
    }

    /// Every tag of a key, in tag-key order.
    pub fn tags(&self, key_id: &str) -> Vec<(String, String)> {
        match self
            .call(Operation::ListResourceTags(ListResourceTags {
                key_id,
                limit: 50,
                marker: None,
            }))
            .unwrap()
        {
            Output::ListResourceTags(o) => {
                o.tags.into_iter().map(|t| (t.key, t.value)).collect()
            }
            o => panic!("unexpected {o:?}"),
        }
    }

    /// Sets a key's stored state (the lifecycle operations that do it are
    /// another file's), then invalidates it, as they do.
    pub fn set_state(&self, key_id: &str, state: KeyState) {
        let id = crate::service::Arns::default().parse_key_id(key_id).unwrap();
        self.svc.store().set_state(&id, state).unwrap();
        self.svc.invalidate(&id);
    }
}

/// `Tag`s from pairs.
pub fn tags<'a>(pairs: &[(&'a str, &'a str)]) -> Vec<Tag<'a>> {
    pairs.iter().map(|&(key, value)| Tag { key, value }).collect()
}
