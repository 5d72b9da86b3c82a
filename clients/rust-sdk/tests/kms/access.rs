//! Key policies and grants: GetKeyPolicy, PutKeyPolicy, ListKeyPolicies,
//! CreateGrant, ListGrants, ListRetirableGrants, RetireGrant, RevokeGrant.

use crate::support::{new_key, Daemon};
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{GrantConstraints, GrantOperation};

#[tokio::test]
async fn key_policies_are_listed_read_and_replaced() {
    let d = Daemon::start();
    let kms = d.client();
    let id = new_key(&kms).await;

    let names = kms
        .list_key_policies()
        .key_id(&id)
        .send()
        .await
        .expect("ListKeyPolicies");
    assert_eq!(names.policy_names(), ["default"]);
    assert!(!names.truncated());

    let policy = kms
        .get_key_policy()
        .key_id(&id)
        .policy_name("default")
        .send()
        .await
        .expect("GetKeyPolicy");
    let text = policy.policy().expect("Policy");
    assert!(text.contains("\"2012-10-17\""), "{text}");
    assert!(text.contains("\"kms:*\""), "{text}");
    // Without PolicyName: "default" (the field is optional since 2024).
    let unnamed = kms
        .get_key_policy()
        .key_id(&id)
        .send()
        .await
        .expect("GetKeyPolicy");
    assert_eq!(unnamed.policy(), Some(text));
    assert_eq!(policy.policy_name(), Some("default"));

    // A new policy: the administrators keep kms:*, the caller of this test
    // is one of them (uid 0, or the daemon's own uid), and uid 4242 may
    // Encrypt.
    let uid = current_uid();
    let new_policy = format!(
        r#"{{"Version":"2012-10-17","Id":"sdk-test","Statement":[
            {{"Sid":"admins","Effect":"Allow","Principal":{{"AWS":["uid:0","uid:{uid}"]}},"Action":"kms:*","Resource":"*"}},
            {{"Sid":"encrypt","Effect":"Allow","Principal":{{"AWS":"uid:4242"}},"Action":"kms:Encrypt","Resource":"*"}}]}}"#
    );
    kms.put_key_policy()
        .key_id(&id)
        .policy_name("default")
        .policy(&new_policy)
        .send()
        .await
        .expect("PutKeyPolicy");
    let read = kms.get_key_policy().key_id(&id).send().await.unwrap();
    let read = read.policy().unwrap();
    assert!(
        read.contains("sdk-test") && read.contains("uid:4242"),
        "{read}"
    );

    // Not JSON: MalformedPolicyDocumentException.
    let err = kms
        .put_key_policy()
        .key_id(&id)
        .policy("{not json")
        .send()
        .await
        .expect_err("PutKeyPolicy of a malformed document");
    let err = err.into_service_error();
    assert!(err.is_malformed_policy_document_exception(), "{err:?}");

    // A policy that locks the caller out (no PutKeyPolicy for it): refused
    // by the lockout safety check, MalformedPolicyDocumentException.
    let lockout = r#"{"Version":"2012-10-17","Statement":[
        {"Effect":"Allow","Principal":{"AWS":"uid:4242"},"Action":"kms:*","Resource":"*"}]}"#;
    if uid != 4242 {
        let err = kms
            .put_key_policy()
            .key_id(&id)
            .policy(lockout)
            .send()
            .await
            .expect_err("PutKeyPolicy that locks the caller out");
        let err = err.into_service_error();
        assert!(err.is_malformed_policy_document_exception(), "{err:?}");
    }
}

/// The uid this test runs as (the daemon's too: an administrator).
fn current_uid() -> u32 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").expect("/proc/self").uid()
}

#[tokio::test]
async fn grants_are_created_listed_retired_and_revoked() {
    let d = Daemon::start();
    let kms = d.client();
    let id = new_key(&kms).await;

    let created = kms
        .create_grant()
        .key_id(&id)
        .grantee_principal("uid:4242")
        .retiring_principal("uid:4343")
        .operations(GrantOperation::Encrypt)
        .operations(GrantOperation::Decrypt)
        .constraints(
            GrantConstraints::builder()
                .encryption_context_subset("tenant", "acme")
                .build(),
        )
        .name("orders")
        .send()
        .await
        .expect("CreateGrant");
    let grant_id = created.grant_id().expect("GrantId").to_owned();
    let token = created.grant_token().expect("GrantToken").to_owned();
    assert!(!grant_id.is_empty() && !token.is_empty());

    // The same name and parameters: the same grant (AWS's idempotence).
    let again = kms
        .create_grant()
        .key_id(&id)
        .grantee_principal("uid:4242")
        .retiring_principal("uid:4343")
        .operations(GrantOperation::Encrypt)
        .operations(GrantOperation::Decrypt)
        .constraints(
            GrantConstraints::builder()
                .encryption_context_subset("tenant", "acme")
                .build(),
        )
        .name("orders")
        .send()
        .await
        .expect("CreateGrant again");
    assert_eq!(again.grant_id(), Some(grant_id.as_str()));

    let second = kms
        .create_grant()
        .key_id(&id)
        .grantee_principal("uid:4444")
        .operations(GrantOperation::GenerateDataKey)
        .send()
        .await
        .expect("CreateGrant");
    let second_id = second.grant_id().unwrap().to_owned();

    let listed = kms
        .list_grants()
        .key_id(&id)
        .send()
        .await
        .expect("ListGrants");
    assert_eq!(listed.grants().len(), 2, "{listed:?}");
    let g = listed
        .grants()
        .iter()
        .find(|g| g.grant_id() == Some(grant_id.as_str()))
        .expect("the first grant listed");
    assert_eq!(g.grantee_principal(), Some("uid:4242"));
    assert_eq!(g.retiring_principal(), Some("uid:4343"));
    assert_eq!(g.name(), Some("orders"));
    assert!(g.key_id().is_some_and(|k| k.ends_with(&id)), "{g:?}");
    assert!(g.creation_date().is_some());
    let mut ops = g.operations().to_vec();
    ops.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    assert_eq!(ops, [GrantOperation::Decrypt, GrantOperation::Encrypt]);
    let subset = g
        .constraints()
        .and_then(|c| c.encryption_context_subset())
        .expect("EncryptionContextSubset");
    assert_eq!(subset.get("tenant").map(String::as_str), Some("acme"));

    // By grant id, and paged.
    let one = kms
        .list_grants()
        .key_id(&id)
        .grant_id(&second_id)
        .send()
        .await
        .expect("ListGrants by id");
    assert_eq!(one.grants().len(), 1);
    assert_eq!(one.grants()[0].grantee_principal(), Some("uid:4444"));
    let paged = kms
        .list_grants()
        .key_id(&id)
        .limit(1)
        .into_paginator()
        .items()
        .send()
        .try_collect()
        .await
        .expect("ListGrants pages");
    assert_eq!(paged.len(), 2, "{paged:?}");

    let retirable = kms
        .list_retirable_grants()
        .retiring_principal("uid:4343")
        .send()
        .await
        .expect("ListRetirableGrants");
    let ids: Vec<_> = retirable
        .grants()
        .iter()
        .filter_map(|g| g.grant_id())
        .collect();
    assert_eq!(ids, [grant_id.as_str()]);

    // RetireGrant by key and grant id (the caller is an administrator).
    kms.retire_grant()
        .key_id(&id)
        .grant_id(&grant_id)
        .send()
        .await
        .expect("RetireGrant");
    // RevokeGrant.
    kms.revoke_grant()
        .key_id(&id)
        .grant_id(&second_id)
        .send()
        .await
        .expect("RevokeGrant");
    let listed = kms
        .list_grants()
        .key_id(&id)
        .send()
        .await
        .expect("ListGrants");
    assert!(listed.grants().is_empty(), "{listed:?}");

    // Revoking it again: NotFoundException.
    let err = kms
        .revoke_grant()
        .key_id(&id)
        .grant_id(&second_id)
        .send()
        .await
        .expect_err("RevokeGrant of a revoked grant");
    let err = err.into_service_error();
    assert!(err.is_not_found_exception(), "{err:?}");
}

#[tokio::test]
async fn a_grant_is_retired_by_its_token() {
    let d = Daemon::start();
    let kms = d.client();
    let id = new_key(&kms).await;
    let created = kms
        .create_grant()
        .key_id(&id)
        .grantee_principal("uid:4242")
        .operations(GrantOperation::Decrypt)
        .send()
        .await
        .expect("CreateGrant");
    // Grant tokens are accepted on the cryptographic operations.
    let token = created.grant_token().expect("GrantToken").to_owned();
    kms.encrypt()
        .key_id(&id)
        .plaintext(Blob::new(b"x".to_vec()))
        .grant_tokens(&token)
        .send()
        .await
        .expect("Encrypt with a grant token");
    kms.retire_grant()
        .grant_token(&token)
        .send()
        .await
        .expect("RetireGrant by token");
    let listed = kms
        .list_grants()
        .key_id(&id)
        .send()
        .await
        .expect("ListGrants");
    assert!(listed.grants().is_empty(), "{listed:?}");
}
