//! The built-in quota profiles: which class each operation counts against,
//! and each class's rate and burst.
//!
//! `aws` mirrors AWS KMS's published request quotas (docs/quotas.md has the
//! table and its source: the AWS KMS Developer Guide, "Request quotas",
//! requests-per-second.html): one bucket shared by the symmetric
//! cryptographic operations, sized by Region, and a bucket per management
//! operation at its own rate, each "in each one-second interval" (so the
//! burst is one second's worth). `kmsd` is the default: three classes sized
//! for a local daemon.

/// Every operation kmsd serves, by AWS's (or kmsd's own) name, in the
/// protocol's order: an operation's quota slot is its index there, found at
/// compile time ([`op_index`]), so that the data path looks nothing up by
/// name.
pub const OPERATIONS: &[&str] = &kms_proto::Operation::NAMES;

/// How many operations [`OPERATIONS`] has.
pub const OPERATION_COUNT: usize = OPERATIONS.len();

/// AWS's symmetric cryptographic operations (one shared quota).
const CRYPTOGRAPHIC: &[&str] = &[
    "Encrypt",
    "Decrypt",
    "ReEncrypt",
    "GenerateDataKey",
    "GenerateDataKeyWithoutPlaintext",
    "GenerateRandom",
];

/// kmsd's own operations (no AWS quota).
const KMSD_OWN_OPS: &[&str] = &["WhoAmI", "GetStatus", "VerifyAuditSeals"];

/// Management operations that only read (`kmsd` profile's
/// `management-read`); every other one writes. GetParametersForImport
/// makes and stores a wrapping key pair: a write.
fn reads(op: &str) -> bool {
    (op.starts_with("Describe") || op.starts_with("List") || op.starts_with("Get"))
        && op != "GetParametersForImport"
}

/// The index of `name` in [`OPERATIONS`]; a compile-time error for a name
/// that is not there.
pub const fn op_index(name: &str) -> usize {
    let mut i = 0;
    while i < OPERATIONS.len() {
        if str_eq(OPERATIONS[i], name) {
            return i;
        }
        i += 1;
    }
    panic!("an operation missing from kms_proto::Operation::NAMES");
}

const fn str_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// A class of a profile: its name, rate (requests a second, per principal)
/// and burst.
#[derive(Clone, Debug, PartialEq)]
pub struct ClassSpec {
    /// What configs and metrics call it.
    pub name: String,
    /// Requests a second.
    pub rate: f64,
    /// Most at once.
    pub burst: f64,
}

/// A profile: its classes, and the class of each operation.
#[derive(Clone, Debug)]
pub struct Profile {
    /// The classes, by class number.
    pub classes: Vec<ClassSpec>,
    /// The class number of each operation, by [`op_index`].
    pub op_class: [u16; OPERATION_COUNT],
}

/// The class of kmsd's own operations in both profiles (WhoAmI, GetStatus,
/// VerifyAuditSeals): cheap, and not AWS's.
const KMSD_OWN: (&str, f64) = ("kmsd", 1_000.0);

/// The `kmsd` profile (the default): per caller uid, cryptographic
/// operations 100,000 a second (about a quarter of what this daemon answers
/// single requests at on a 2-core machine; docs/quotas.md), management
/// reads 2,000 and writes 1,000 (a write is a store transaction with an
/// fsync), each with one second's burst.
pub fn kmsd() -> Profile {
    let classes = vec![
        spec("cryptographic", 100_000.0),
        spec("management-read", 2_000.0),
        spec("management-write", 1_000.0),
        spec(KMSD_OWN.0, KMSD_OWN.1),
    ];
    let mut op_class = [0u16; OPERATION_COUNT];
    for (c, op) in op_class.iter_mut().zip(OPERATIONS) {
        *c = if CRYPTOGRAPHIC.contains(op) {
            0
        } else if KMSD_OWN_OPS.contains(op) {
            3
        } else if reads(op) {
            1
        } else {
            2
        };
    }
    Profile { classes, op_class }
}

/// AWS's shared symmetric cryptographic quota in `region` (requests a
/// second): 100,000 in us-east-1, us-west-2 and eu-west-1; 20,000 in
/// us-east-2, ap-southeast-1, ap-southeast-2, ap-northeast-1, eu-central-1
/// and eu-west-2; 10,000 elsewhere (and with no Region given).
pub fn aws_symmetric_rate(region: Option<&str>) -> f64 {
    match region {
        Some("us-east-1" | "us-west-2" | "eu-west-1") => 100_000.0,
        Some(
            "us-east-2" | "ap-southeast-1" | "ap-southeast-2" | "ap-northeast-1" | "eu-central-1"
            | "eu-west-2",
        ) => 20_000.0,
        _ => 10_000.0,
    }
}

/// AWS's per-operation quota of a management operation (requests a
/// second).
fn aws_management_rate(op: &str) -> f64 {
    match op {
        "DescribeKey" | "ListResourceTags" => 2_000.0,
        "GetKeyPolicy" | "GetKeyRotationStatus" => 1_000.0,
        "ListAliases" | "ListKeys" => 500.0,
        "ListGrants" | "ListKeyPolicies" | "ListKeyRotations" | "ListRetirableGrants" => 100.0,
        "CreateGrant" | "RetireGrant" | "RevokeGrant" => 50.0,
        "DeleteAlias" | "DeleteImportedKeyMaterial" | "EnableKeyRotation" | "ImportKeyMaterial"
        | "PutKeyPolicy" | "ScheduleKeyDeletion" => 15.0,
        "TagResource" => 10.0,
        "GetParametersForImport" => 1.0,
        // CancelKeyDeletion, CreateAlias, CreateKey, DisableKey,
        // DisableKeyRotation, EnableKey, RotateKeyOnDemand, UntagResource,
        // UpdateAlias, UpdateKeyDescription.
        _ => 5.0,
    }
}

/// The `aws` profile: the symmetric operations share one bucket
/// (`cryptographic`, sized by `region`), every management operation has
/// its own bucket named after it, kmsd's own operations share `kmsd`.
pub fn aws(region: Option<&str>) -> Profile {
    let mut classes = vec![spec("cryptographic", aws_symmetric_rate(region))];
    let mut op_class = [0u16; OPERATION_COUNT];
    let management = OPERATIONS
        .iter()
        .enumerate()
        .filter(|(_, op)| !CRYPTOGRAPHIC.contains(op) && !KMSD_OWN_OPS.contains(op));
    for (i, op) in management {
        op_class[i] = classes.len() as u16;
        classes.push(spec(op, aws_management_rate(op)));
    }
    let own = classes.len() as u16;
    classes.push(spec(KMSD_OWN.0, KMSD_OWN.1));
    for (c, op) in op_class.iter_mut().zip(OPERATIONS) {
        if KMSD_OWN_OPS.contains(op) {
            *c = own;
        }
    }
    Profile { classes, op_class }
}

fn spec(name: &str, rate: f64) -> ClassSpec {
    ClassSpec {
        name: name.to_owned(),
        rate,
        // "In each one-second interval": one second's worth at once.
        burst: rate.max(1.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_operation_has_a_class_in_both_profiles() {
        for p in [kmsd(), aws(None), aws(Some("us-east-1"))] {
            for (i, c) in p.op_class.iter().enumerate() {
                assert!((*c as usize) < p.classes.len(), "{}", OPERATIONS[i]);
            }
        }
        assert_eq!(OPERATIONS[op_index("Encrypt")], "Encrypt");
        assert_eq!(op_index("VerifyAuditSeals"), OPERATION_COUNT - 1);
        // The kmsd profile's classes, by what each operation does.
        let p = kmsd();
        let class = |op: &str| p.classes[p.op_class[op_index(op)] as usize].name.as_str();
        assert_eq!(class("GenerateRandom"), "cryptographic");
        assert_eq!(class("ListRetirableGrants"), "management-read");
        assert_eq!(class("GetKeyPolicy"), "management-read");
        assert_eq!(class("GetParametersForImport"), "management-write");
        assert_eq!(class("CreateGrant"), "management-write");
        assert_eq!(class("RevokeGrant"), "management-write");
        assert_eq!(class("GetStatus"), "kmsd");
    }

    #[test]
    fn aws_profile_has_aws_numbers() {
        let p = aws(Some("eu-central-1"));
        let class = |op: &str| &p.classes[p.op_class[op_index(op)] as usize];
        // The symmetric operations share one bucket.
        assert_eq!(class("Encrypt").name, "cryptographic");
        assert_eq!(class("GenerateRandom").name, "cryptographic");
        assert_eq!(class("Encrypt").rate, 20_000.0);
        assert_eq!(class("CreateKey").name, "CreateKey");
        assert_eq!(class("CreateKey").rate, 5.0);
        assert_eq!(class("DescribeKey").rate, 2_000.0);
        assert_eq!(class("GetParametersForImport").rate, 1.0);
        assert_eq!(class("RevokeGrant").rate, 50.0);
        assert_eq!(aws(None).classes[0].rate, 10_000.0);
        assert_eq!(aws(Some("us-west-2")).classes[0].rate, 100_000.0);
    }
}
