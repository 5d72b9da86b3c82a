//! Keys and what names and describes them: CreateKey, DescribeKey,
//! ListKeys, aliases, tags, descriptions.

use crate::support::{names_key, new_key, Daemon};
use aws_sdk_kms::types::{KeySpec, KeyState, KeyUsageType, OriginType, Tag};
use std::collections::{BTreeMap, BTreeSet};

fn tag(key: &str, value: &str) -> Tag {
    Tag::builder()
        .tag_key(key)
        .tag_value(value)
        .build()
        .unwrap()
}

/// Tags as a map (AWS does not promise their order).
fn tag_map(tags: &[Tag]) -> BTreeMap<String, String> {
    tags.iter()
        .map(|t| (t.tag_key().to_owned(), t.tag_value().to_owned()))
        .collect()
}

#[tokio::test]
async fn create_key_with_a_description_and_tags_then_describe_it() {
    let d = Daemon::start();
    let kms = d.client();
    let created = kms
        .create_key()
        .description("orders service, data keys")
        .tags(tag("team", "payments"))
        .tags(tag("env", "test"))
        .send()
        .await
        .expect("CreateKey");
    let meta = created.key_metadata().expect("KeyMetadata");
    let id = meta.key_id().to_owned();
    uuid_like(&id);
    let arn = meta.arn().expect("Arn").to_owned();
    assert!(arn.ends_with(&format!(":key/{id}")), "{arn}");
    assert!(meta.enabled());
    assert_eq!(meta.description(), Some("orders service, data keys"));
    assert_eq!(meta.key_state(), Some(&KeyState::Enabled));
    assert_eq!(meta.key_usage(), Some(&KeyUsageType::EncryptDecrypt));
    assert_eq!(meta.key_spec(), Some(&KeySpec::SymmetricDefault));
    assert_eq!(meta.origin(), Some(&OriginType::AwsKms));
    assert!(meta.creation_date().is_some());

    // DescribeKey by id, by ARN: the same metadata.
    for name in [id.as_str(), arn.as_str()] {
        let described = kms.describe_key().key_id(name).send().await.expect(name);
        let m = described.key_metadata().expect("KeyMetadata");
        assert_eq!(m.key_id(), id);
        assert_eq!(m.arn(), Some(arn.as_str()));
        assert_eq!(m.description(), Some("orders service, data keys"));
        assert_eq!(m.creation_date(), meta.creation_date());
    }

    let tags = kms
        .list_resource_tags()
        .key_id(&id)
        .send()
        .await
        .expect("ListResourceTags");
    assert_eq!(
        tag_map(tags.tags()),
        BTreeMap::from([
            ("env".to_owned(), "test".to_owned()),
            ("team".to_owned(), "payments".to_owned())
        ])
    );
    assert!(!tags.truncated());
}

/// A key id is a UUID in its 36-character form.
fn uuid_like(id: &str) {
    let groups: Vec<usize> = id.split('-').map(str::len).collect();
    assert_eq!(groups, [8, 4, 4, 4, 12], "{id}");
    assert!(
        id.chars().all(|c| c == '-' || c.is_ascii_hexdigit()),
        "{id}"
    );
}

#[tokio::test]
async fn list_keys_pages_through_every_key_once() {
    let d = Daemon::start();
    let kms = d.client();
    let mut created = BTreeSet::new();
    for _ in 0..5 {
        created.insert(new_key(&kms).await);
    }

    // By hand: Limit 1, Marker from NextMarker while Truncated.
    let mut by_hand = Vec::new();
    let mut marker: Option<String> = None;
    let mut pages = 0;
    loop {
        let page = kms
            .list_keys()
            .limit(1)
            .set_marker(marker.take())
            .send()
            .await
            .expect("ListKeys");
        pages += 1;
        assert!(page.keys().len() <= 1, "Limit 1 gave {:?}", page.keys());
        for k in page.keys() {
            let id = k.key_id().expect("KeyId").to_owned();
            let arn = k.key_arn().expect("KeyArn");
            assert!(arn.ends_with(&format!(":key/{id}")), "{arn}");
            by_hand.push(id);
        }
        if !page.truncated() {
            assert_eq!(page.next_marker(), None);
            break;
        }
        marker = Some(
            page.next_marker()
                .expect("NextMarker when Truncated")
                .to_owned(),
        );
        assert!(pages <= 10, "ListKeys does not end: {by_hand:?}");
    }
    assert_eq!(
        sorted(&by_hand),
        created.iter().cloned().collect::<Vec<_>>()
    );

    // The SDK's paginator, which follows the same markers.
    let paged: Vec<String> = kms
        .list_keys()
        .limit(1)
        .into_paginator()
        .items()
        .send()
        .try_collect()
        .await
        .expect("ListKeys pages")
        .into_iter()
        .map(|k| k.key_id.expect("KeyId"))
        .collect();
    assert_eq!(sorted(&paged), created.iter().cloned().collect::<Vec<_>>());

    // One page with the default limit.
    let all = kms.list_keys().send().await.expect("ListKeys");
    assert!(!all.truncated());
    assert_eq!(all.keys().len(), created.len());
}

/// `ids` sorted, asserting none repeats.
fn sorted(ids: &[String]) -> Vec<String> {
    let set: BTreeSet<String> = ids.iter().cloned().collect();
    assert_eq!(set.len(), ids.len(), "a key listed twice: {ids:?}");
    set.into_iter().collect()
}

#[tokio::test]
async fn aliases_name_keys_until_deleted() {
    let d = Daemon::start();
    let kms = d.client();
    let first = new_key(&kms).await;
    let second = new_key(&kms).await;

    kms.create_alias()
        .alias_name("alias/orders")
        .target_key_id(&first)
        .send()
        .await
        .expect("CreateAlias");
    let described = kms
        .describe_key()
        .key_id("alias/orders")
        .send()
        .await
        .expect("DescribeKey by alias name");
    assert_eq!(described.key_metadata().unwrap().key_id(), first);
    let arn = described.key_metadata().unwrap().arn().unwrap().to_owned();
    // An alias ARN names the key too (arn:aws:kms:<region>:<account>:alias/orders).
    let alias_arn = arn.replace(&format!(":key/{first}"), ":alias/orders");
    let by_alias_arn = kms
        .describe_key()
        .key_id(&alias_arn)
        .send()
        .await
        .expect("DescribeKey by alias ARN");
    assert_eq!(by_alias_arn.key_metadata().unwrap().key_id(), first);

    // The same name again: AlreadyExistsException.
    let again = kms
        .create_alias()
        .alias_name("alias/orders")
        .target_key_id(&second)
        .send()
        .await
        .expect_err("CreateAlias of a name in use");
    assert!(
        again
            .as_service_error()
            .is_some_and(|e| e.is_already_exists_exception()),
        "{again:?}"
    );

    // Encrypt through the alias.
    let encrypted = kms
        .encrypt()
        .key_id("alias/orders")
        .plaintext(aws_sdk_kms::primitives::Blob::new(b"x".to_vec()))
        .send()
        .await
        .expect("Encrypt by alias");
    names_key(encrypted.key_id(), &first);

    // ListAliases: all of them, and those of one key.
    kms.create_alias()
        .alias_name("alias/billing")
        .target_key_id(&second)
        .send()
        .await
        .expect("CreateAlias");
    let listed = kms.list_aliases().send().await.expect("ListAliases");
    let names: BTreeMap<&str, Option<&str>> = listed
        .aliases()
        .iter()
        .map(|a| (a.alias_name().unwrap(), a.target_key_id()))
        .collect();
    assert_eq!(names.get("alias/orders"), Some(&Some(first.as_str())));
    assert_eq!(names.get("alias/billing"), Some(&Some(second.as_str())));
    for a in listed.aliases() {
        let name = a.alias_name().unwrap();
        assert!(
            a.alias_arn()
                .is_some_and(|arn| arn.ends_with(&format!(":{name}"))),
            "{a:?}"
        );
    }
    let of_first = kms
        .list_aliases()
        .key_id(&first)
        .send()
        .await
        .expect("ListAliases of a key");
    let names: Vec<_> = of_first
        .aliases()
        .iter()
        .filter_map(|a| a.alias_name())
        .collect();
    assert_eq!(names, ["alias/orders"]);
    let paged = kms
        .list_aliases()
        .limit(1)
        .into_paginator()
        .items()
        .send()
        .try_collect()
        .await
        .expect("ListAliases pages");
    assert_eq!(
        paged.len(),
        listed.aliases().len(),
        "{paged:?} / {listed:?}"
    );

    // UpdateAlias moves the name to the second key.
    kms.update_alias()
        .alias_name("alias/orders")
        .target_key_id(&second)
        .send()
        .await
        .expect("UpdateAlias");
    let moved = kms
        .describe_key()
        .key_id("alias/orders")
        .send()
        .await
        .unwrap();
    assert_eq!(moved.key_metadata().unwrap().key_id(), second);

    // DeleteAlias: the name no longer resolves.
    kms.delete_alias()
        .alias_name("alias/orders")
        .send()
        .await
        .expect("DeleteAlias");
    let gone = kms
        .describe_key()
        .key_id("alias/orders")
        .send()
        .await
        .expect_err("DescribeKey of a deleted alias");
    assert!(gone.into_service_error().is_not_found_exception());
    let deleted_again = kms
        .delete_alias()
        .alias_name("alias/orders")
        .send()
        .await
        .expect_err("DeleteAlias of a deleted alias");
    assert!(deleted_again.into_service_error().is_not_found_exception());
}

#[tokio::test]
async fn tags_are_added_replaced_and_removed() {
    let d = Daemon::start();
    let kms = d.client();
    let id = new_key(&kms).await;
    kms.tag_resource()
        .key_id(&id)
        .tags(tag("a", "1"))
        .tags(tag("b", "2"))
        .send()
        .await
        .expect("TagResource");
    // A key already tagged gets the new value.
    kms.tag_resource()
        .key_id(&id)
        .tags(tag("a", "3"))
        .send()
        .await
        .expect("TagResource");
    let tags = kms.list_resource_tags().key_id(&id).send().await.unwrap();
    assert_eq!(
        tag_map(tags.tags()),
        BTreeMap::from([("a".into(), "3".into()), ("b".into(), "2".into())])
    );
    // Paged one at a time.
    let paged = kms
        .list_resource_tags()
        .key_id(&id)
        .limit(1)
        .into_paginator()
        .items()
        .send()
        .try_collect()
        .await
        .expect("ListResourceTags pages");
    assert_eq!(tag_map(&paged), tag_map(tags.tags()));

    kms.untag_resource()
        .key_id(&id)
        .tag_keys("a")
        .send()
        .await
        .expect("UntagResource");
    let tags = kms.list_resource_tags().key_id(&id).send().await.unwrap();
    assert_eq!(
        tag_map(tags.tags()),
        BTreeMap::from([("b".into(), "2".into())])
    );

    // AWS reserves the aws: prefix: TagException.
    let reserved = kms
        .tag_resource()
        .key_id(&id)
        .tags(tag("aws:owner", "x"))
        .send()
        .await
        .expect_err("TagResource with an aws: key");
    assert!(
        reserved
            .as_service_error()
            .is_some_and(|e| e.is_tag_exception()),
        "{reserved:?}"
    );
}

#[tokio::test]
async fn update_key_description_is_what_describe_key_shows() {
    let d = Daemon::start();
    let kms = d.client();
    let id = new_key(&kms).await;
    let before = kms.describe_key().key_id(&id).send().await.unwrap();
    // AWS shows a key made without one with an empty description.
    assert_eq!(before.key_metadata().unwrap().description(), Some(""));
    kms.update_key_description()
        .key_id(&id)
        .description("rotated quarterly")
        .send()
        .await
        .expect("UpdateKeyDescription");
    let after = kms.describe_key().key_id(&id).send().await.unwrap();
    assert_eq!(
        after.key_metadata().unwrap().description(),
        Some("rotated quarterly")
    );
}

/// An ARN's six fields, `arn:partition:service:region:account:resource`
/// (AWS's general reference, "Amazon Resource Names"): what ARN parsers
/// (the `aws-arn` crate, botocore's `ArnParser`, the AWS CLI) split on.
fn arn_fields(arn: &str) -> Option<[&str; 6]> {
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    <[&str; 6]>::try_from(parts).ok()
}

#[tokio::test]
async fn key_and_alias_arns_have_the_six_fields_of_an_arn() {
    let d = Daemon::start();
    let kms = d.client();
    let id = new_key(&kms).await;
    kms.create_alias()
        .alias_name("alias/shape")
        .target_key_id(&id)
        .send()
        .await
        .expect("CreateAlias");
    let meta = kms
        .describe_key()
        .key_id(&id)
        .send()
        .await
        .unwrap()
        .key_metadata
        .unwrap();
    let arn = meta.arn().unwrap().to_owned();
    let fields = arn_fields(&arn);
    assert!(
        matches!(fields, Some(["arn", p, "kms", r, a, res])
            if !p.is_empty() && !r.is_empty() && !a.is_empty() && res == format!("key/{id}")),
        "the key ARN {arn} is not arn:<partition>:kms:<region>:<account>:key/<id>"
    );
    // AWSAccountId is the ARN's account field.
    let account = fields.map(|f| f[4]);
    assert_eq!(meta.aws_account_id(), account, "{arn}");

    let aliases = kms.list_aliases().key_id(&id).send().await.unwrap();
    let alias_arn = aliases.aliases()[0].alias_arn().unwrap().to_owned();
    let fields = arn_fields(&alias_arn);
    assert!(
        matches!(fields, Some(["arn", _, "kms", _, _, "alias/shape"])),
        "the alias ARN {alias_arn} is not arn:<partition>:kms:<region>:<account>:alias/shape"
    );
}

/// Where AWS's API reference says an answer's `KeyId` is the key's ARN
/// (Encrypt, Decrypt, GenerateDataKey, GenerateDataKeyWithoutPlaintext,
/// ReEncrypt, ScheduleKeyDeletion, CancelKeyDeletion,
/// GetParametersForImport: "The Amazon Resource Name (key ARN) of the KMS
/// key ..."), kmsd answers the ARN, so that code that stores or compares
/// it works unchanged.
#[tokio::test]
async fn answers_name_keys_by_arn_where_aws_does() {
    use aws_sdk_kms::primitives::Blob;
    use aws_sdk_kms::types::{AlgorithmSpec, DataKeySpec, OriginType, WrappingKeySpec};
    let d = Daemon::start();
    let kms = d.client();
    let id = new_key(&kms).await;
    let other = new_key(&kms).await;
    let arn_of = |id: String| {
        let kms = kms.clone();
        async move {
            kms.describe_key()
                .key_id(id)
                .send()
                .await
                .unwrap()
                .key_metadata
                .unwrap()
                .arn
                .unwrap()
        }
    };
    let (arn, other_arn) = (arn_of(id.clone()).await, arn_of(other.clone()).await);
    let mut answers: Vec<(&str, Option<String>, &str)> = Vec::new();

    let encrypted = kms
        .encrypt()
        .key_id(&id)
        .plaintext(Blob::new(b"x".to_vec()))
        .send()
        .await
        .unwrap();
    answers.push(("Encrypt", encrypted.key_id.clone(), &arn));
    let blob = encrypted.ciphertext_blob.unwrap();
    let decrypted = kms
        .decrypt()
        .ciphertext_blob(blob.clone())
        .send()
        .await
        .unwrap();
    answers.push(("Decrypt", decrypted.key_id.clone(), &arn));
    let gdk = kms
        .generate_data_key()
        .key_id(&id)
        .key_spec(DataKeySpec::Aes256)
        .send()
        .await
        .unwrap();
    answers.push(("GenerateDataKey", gdk.key_id.clone(), &arn));
    let gdkwp = kms
        .generate_data_key_without_plaintext()
        .key_id(&id)
        .key_spec(DataKeySpec::Aes256)
        .send()
        .await
        .unwrap();
    answers.push((
        "GenerateDataKeyWithoutPlaintext",
        gdkwp.key_id.clone(),
        &arn,
    ));
    let moved = kms
        .re_encrypt()
        .ciphertext_blob(blob)
        .destination_key_id(&other)
        .send()
        .await
        .unwrap();
    answers.push(("ReEncrypt KeyId", moved.key_id.clone(), &other_arn));
    // SourceKeyId: "Unique identifier of the KMS key used to originally
    // encrypt the data"; AWS's own example answers the ARN.
    answers.push(("ReEncrypt SourceKeyId", moved.source_key_id.clone(), &arn));
    let scheduled = kms
        .schedule_key_deletion()
        .key_id(&other)
        .send()
        .await
        .unwrap();
    answers.push(("ScheduleKeyDeletion", scheduled.key_id.clone(), &other_arn));
    let cancelled = kms
        .cancel_key_deletion()
        .key_id(&other)
        .send()
        .await
        .unwrap();
    answers.push(("CancelKeyDeletion", cancelled.key_id.clone(), &other_arn));
    let external = kms
        .create_key()
        .origin(OriginType::External)
        .send()
        .await
        .unwrap()
        .key_metadata
        .unwrap();
    let params = kms
        .get_parameters_for_import()
        .key_id(external.key_id())
        .wrapping_algorithm(AlgorithmSpec::RsaesOaepSha256)
        .wrapping_key_spec(WrappingKeySpec::Rsa2048)
        .send()
        .await
        .unwrap();
    let external_arn = external.arn.clone().unwrap();
    answers.push((
        "GetParametersForImport",
        params.key_id.clone(),
        &external_arn,
    ));

    let wrong: Vec<String> = answers
        .iter()
        .filter(|(_, got, want)| got.as_deref() != Some(*want))
        .map(|(op, got, want)| format!("{op}: KeyId {got:?}, AWS answers the ARN {want}"))
        .collect();
    assert!(wrong.is_empty(), "\n{}", wrong.join("\n"));
}
