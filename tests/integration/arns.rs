//! Key and alias ARNs end to end, on a daemon whose `[aws]` is not the
//! default (`eu-west-3`, account `123456789012`): every ARN it answers has
//! that Region and account, every place that takes a key takes them (and
//! the legacy `arn:kmsd:kms:local:` form), ARNs of another partition,
//! Region or account are NotFoundException, key policies name keys by
//! such ARNs, and kmsctl and the audit record follow. Then a restart under
//! another `[aws]`: the stored keys, aliases and policies still work.

use crate::audit::{audit_dir, records};
use crate::support::Daemon;
use kms_proto::client::{Client, ClientError};
use kms_proto::*;

const PARIS: &str = "[aws]\nregion = \"eu-west-3\"\naccount_id = \"123456789012\"\n";
const BASE: &str = "arn:aws:kms:eu-west-3:123456789012:";

/// A daemon started with `config` as its config file (kept in the
/// returned directory, so that a restart reads it again).
fn daemon(config: &str) -> (tempfile::TempDir, Daemon) {
    let conf = tempfile::tempdir().unwrap();
    let path = conf.path().join("kmsd.toml");
    std::fs::write(&path, config).unwrap();
    let d = Daemon::start(&["--config", path.to_str().unwrap()]);
    (conf, d)
}

fn refused(r: Result<impl std::fmt::Debug, ClientError>) -> KmsError {
    match r {
        Err(ClientError::Kms(e)) => e,
        other => panic!("expected an error, got {other:?}"),
    }
}

fn describe(c: &mut Client, key_id: &str) -> KeyMetadata {
    c.describe_key(key_id)
        .unwrap_or_else(|e| panic!("{key_id}: {e}"))
}

#[test]
fn arns_have_the_configured_region_and_account_on_every_protocol_path() {
    let (_conf, d) = daemon(PARIS);
    let mut c = d.client();

    // CreateKey answers the ARN; DescribeKey takes it.
    let m = c.create_key("paris").unwrap();
    let key = m.key_id.clone();
    let key_arn = format!("{BASE}key/{key}");
    assert_eq!(m.arn, key_arn);
    let by_arn = describe(&mut c, &key_arn);
    assert_eq!(
        (by_arn.key_id.as_str(), by_arn.arn.as_str()),
        (key.as_str(), key_arn.as_str())
    );
    assert_eq!(
        describe(&mut c, &format!("arn:kmsd:kms:local:key/{key}")).key_id,
        key,
        "legacy form"
    );

    // Aliases: ListAliases answers alias ARNs; Encrypt takes one, and
    // answers the key ARN as its KeyId, as AWS does.
    c.create_alias("alias/paris", &key_arn).unwrap();
    let aliases = c.list_aliases(None, 0, None).unwrap().aliases;
    assert_eq!(aliases.len(), 1);
    assert_eq!(aliases[0].alias_arn, format!("{BASE}alias/paris"));
    assert_eq!(aliases[0].target_key_id.as_deref(), Some(key.as_str()));
    let alias_arn = aliases[0].alias_arn.clone();
    let ctx = [("app", "arns")];
    let enc = c.encrypt(&alias_arn, b"bonjour", &ctx).unwrap();
    assert_eq!(enc.key_id, key_arn);
    let dec = c
        .decrypt(&enc.ciphertext_blob, Some(&alias_arn), &ctx)
        .unwrap();
    assert_eq!(
        (dec.key_id.as_str(), dec.plaintext.expose()),
        (key_arn.as_str(), &b"bonjour"[..])
    );
    let dec = c
        .decrypt(
            &enc.ciphertext_blob,
            Some("arn:kmsd:kms:local:alias/paris"),
            &ctx,
        )
        .unwrap();
    assert_eq!(dec.key_id, key_arn, "legacy alias ARN");
    assert_eq!(c.generate_data_key(&key, 32, &ctx).unwrap().key_id, key_arn);
    let other = c.create_key("other").unwrap().key_id;
    let re = c
        .re_encrypt(ReEncrypt {
            ciphertext_blob: &enc.ciphertext_blob,
            source_key_id: Some(&key_arn),
            source_context: ctx.to_vec(),
            destination_key_id: &other,
            destination_context: ctx.to_vec(),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(
        (re.source_key_id, re.key_id),
        (key_arn.clone(), format!("{BASE}key/{other}"))
    );

    // Every other answer that carries a key ARN.
    let keys = c.list_keys(1000, None).unwrap().keys;
    assert!(
        keys.iter()
            .all(|k| k.arn == format!("{BASE}key/{}", k.key_id)),
        "{keys:?}"
    );
    assert_eq!(c.get_key_rotation_status(&key_arn).unwrap().key_id, key_arn);
    assert_eq!(c.rotate_key_on_demand(&key_arn).unwrap().key_id, key_arn);
    let rotations = c.list_key_rotations(&key_arn, 0, None).unwrap().rotations;
    assert!(
        rotations.iter().all(|r| r.key_id == key_arn),
        "{rotations:?}"
    );
    c.create_grant(CreateGrant {
        key_id: &key_arn,
        grantee_principal: "uid:4242",
        operations: vec![GrantOperation::Decrypt],
        ..Default::default()
    })
    .unwrap();
    let grants = c
        .list_grants(ListGrants {
            key_id: &key_arn,
            ..Default::default()
        })
        .unwrap()
        .grants;
    assert_eq!(grants.len(), 1);
    assert_eq!(grants[0].key_id, key_arn);
    assert_eq!(
        c.schedule_key_deletion(&other, Some(7)).unwrap().key_id,
        format!("{BASE}key/{other}")
    );
    assert_eq!(
        c.cancel_key_deletion(&format!("{BASE}key/{other}"))
            .unwrap()
            .key_id,
        format!("{BASE}key/{other}")
    );

    // ARNs of another Region, account or partition name nothing here
    // (AWS: NotFoundException); nor does a malformed one of this form.
    for foreign in [
        format!("arn:aws:kms:us-east-1:123456789012:key/{key}"),
        format!("arn:aws:kms:eu-west-3:000000000000:key/{key}"),
        format!("arn:aws-cn:kms:eu-west-3:123456789012:key/{key}"),
        "arn:aws:kms:us-east-1:000000000000:alias/paris".to_owned(),
        format!("{BASE}key/not-a-key-id"),
    ] {
        let e = refused(c.describe_key(&foreign));
        assert_eq!(e.kind, ErrorKind::NotFound, "{foreign}: {e}");
        assert!(
            e.message.contains("KeyId") && e.message.contains(BASE),
            "{e}"
        );
        let e = refused(c.encrypt(&foreign, b"x", &[]));
        assert_eq!(e.kind, ErrorKind::NotFound, "{foreign}: {e}");
    }

    // Key policies: the configured form names the key; another Region's
    // is refused when given.
    let deny = |resource: &str| {
        format!(
            r#"{{"Statement":[{{"Effect":"Allow","Principal":"*","Action":"kms:*","Resource":"*"}},
            {{"Effect":"Deny","Principal":"*","Action":"kms:GenerateDataKey","Resource":"{resource}"}}]}}"#
        )
    };
    c.put_key_policy(&key_arn, &deny(&key_arn)).unwrap();
    let e = refused(c.generate_data_key(&alias_arn, 16, &[]));
    assert_eq!(e.kind, ErrorKind::AccessDenied, "{e}");
    assert!(e.message.contains(&key_arn), "{e}");
    let e = refused(c.put_key_policy(
        &key,
        &deny(&format!("arn:aws:kms:us-east-1:123456789012:key/{key}")),
    ));
    assert_eq!(e.kind, ErrorKind::MalformedPolicyDocument, "{e}");

    // kmsctl shows what the daemon answers.
    let out = d.kmsctl(&["--json", "describe-key", "--key-id", &alias_arn], None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["KeyMetadata"]["Arn"], key_arn.as_str());
    let out = d.kmsctl(&["--json", "list-aliases"], None);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["Aliases"][0]["AliasArn"], alias_arn.as_str());

    // The audit record's resource is the key ARN, in the configured
    // account.
    let r = records(&audit_dir(&d));
    let enc = r
        .iter()
        .find(|v| v["eventName"] == "Encrypt" && v.get("errorCode").is_none())
        .expect("an Encrypt record");
    assert_eq!(enc["requestParameters"]["keyId"], alias_arn.as_str());
    assert_eq!(enc["resources"][0]["ARN"], key_arn.as_str());
    assert_eq!(enc["resources"][0]["accountId"], "123456789012");
    assert_eq!(enc["additionalEventData"]["aliasUsed"], "alias/paris");
}

/// `[aws]` changes take effect at the next start: the new ARNs are
/// answered and taken, the old ones name nothing, and what the store
/// holds (keys, aliases, a policy that named the key by its old ARN)
/// keeps working: a policy names its keys by key id.
#[test]
fn a_restart_under_another_region_keeps_stored_keys_aliases_and_policies() {
    let (conf, mut d) = daemon(PARIS);
    let mut c = d.client();
    let key = c.create_key("moves").unwrap().key_id;
    let paris_arn = format!("{BASE}key/{key}");
    c.create_alias("alias/moves", &key).unwrap();
    let policy = format!(
        r#"{{"Statement":[{{"Effect":"Allow","Principal":"*","Action":"kms:*","Resource":"*"}},
        {{"Effect":"Deny","Principal":"*","Action":"kms:GenerateDataKey","Resource":"{paris_arn}"}}]}}"#
    );
    c.put_key_policy(&key, &policy).unwrap();
    let blob = c
        .encrypt("alias/moves", b"kept", &[])
        .unwrap()
        .ciphertext_blob;
    drop(c);

    std::fs::write(
        conf.path().join("kmsd.toml"),
        "[aws]\nregion = \"us-gov-west-1\"\naccount_id = \"210987654321\"\n",
    )
    .unwrap();
    d.restart();
    let mut c = d.client();
    let gov = "arn:aws-us-gov:kms:us-gov-west-1:210987654321:";
    let gov_arn = format!("{gov}key/{key}");
    assert_eq!(describe(&mut c, &key).arn, gov_arn);
    assert_eq!(describe(&mut c, &format!("{gov}alias/moves")).key_id, key);
    assert_eq!(
        refused(c.describe_key(&paris_arn)).kind,
        ErrorKind::NotFound
    );
    let dec = c.decrypt(&blob, None, &[]).unwrap();
    assert_eq!(
        (dec.key_id.as_str(), dec.plaintext.expose()),
        (gov_arn.as_str(), &b"kept"[..])
    );
    // The stored Deny still names the key.
    let e = refused(c.generate_data_key(&key, 16, &[]));
    assert_eq!(e.kind, ErrorKind::AccessDenied, "{e}");
    assert_eq!(c.get_key_policy(&key, None).unwrap().policy, policy);
}

#[test]
fn a_bad_aws_section_stops_start_up_with_one_line() {
    for (config, needle) in [
        ("[aws]\nregion = \"local\"\n", "aws.region"),
        ("[aws]\naccount_id = \"1234\"\n", "aws.account_id"),
    ] {
        let conf = tempfile::tempdir().unwrap();
        let path = conf.path().join("kmsd.toml");
        std::fs::write(&path, config).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_kmsd"))
            .arg("--check-config")
            .arg(&path)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{config}");
        assert!(err.contains(needle), "{config}: {err}");
    }
}
