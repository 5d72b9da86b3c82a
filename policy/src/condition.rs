//! The `Condition` element: operators, keys, their compiled values, and
//! how a condition holds for a request.

use crate::document::{Node, MAX_WILDCARDS};
use crate::error::{shown, PolicyError};
use crate::glob::Glob;
use crate::request::Request;

/// The most values one condition key may list. Evaluation compares each
/// request value with each of them, so this bounds its cost.
pub(crate) const MAX_CONDITION_VALUES: usize = 64;

/// An operator without its qualifiers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Base {
    StringEquals,
    StringNotEquals,
    StringEqualsIgnoreCase,
    StringNotEqualsIgnoreCase,
    StringLike,
    StringNotLike,
    NumericEquals,
    NumericNotEquals,
    NumericLessThan,
    NumericLessThanEquals,
    NumericGreaterThan,
    NumericGreaterThanEquals,
    Bool,
    Null,
}

const BASES: &[(&str, Base)] = &[
    ("StringEquals", Base::StringEquals),
    ("StringNotEquals", Base::StringNotEquals),
    ("StringEqualsIgnoreCase", Base::StringEqualsIgnoreCase),
    ("StringNotEqualsIgnoreCase", Base::StringNotEqualsIgnoreCase),
    ("StringLike", Base::StringLike),
    ("StringNotLike", Base::StringNotLike),
    ("NumericEquals", Base::NumericEquals),
    ("NumericNotEquals", Base::NumericNotEquals),
    ("NumericLessThan", Base::NumericLessThan),
    ("NumericLessThanEquals", Base::NumericLessThanEquals),
    ("NumericGreaterThan", Base::NumericGreaterThan),
    ("NumericGreaterThanEquals", Base::NumericGreaterThanEquals),
    ("Bool", Base::Bool),
    ("Null", Base::Null),
];

impl Base {
    /// Negated operators hold when no policy value matches (and, for a
    /// single-valued key, when the key is absent).
    fn negated(self) -> bool {
        matches!(
            self,
            Base::StringNotEquals
                | Base::StringNotEqualsIgnoreCase
                | Base::StringNotLike
                | Base::NumericNotEquals
        )
    }

    fn kind(self) -> Kind {
        match self {
            Base::StringEquals
            | Base::StringNotEquals
            | Base::StringEqualsIgnoreCase
            | Base::StringNotEqualsIgnoreCase
            | Base::StringLike
            | Base::StringNotLike => Kind::String,
            Base::NumericEquals
            | Base::NumericNotEquals
            | Base::NumericLessThan
            | Base::NumericLessThanEquals
            | Base::NumericGreaterThan
            | Base::NumericGreaterThanEquals => Kind::Number,
            Base::Bool => Kind::Bool,
            // Null looks at presence only; its values are booleans.
            Base::Null => Kind::Bool,
        }
    }
}

/// How a multi-valued key's values combine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Qualifier {
    /// A single-valued key.
    Single,
    /// `ForAnyValue:`: some request value satisfies the operator.
    ForAnyValue,
    /// `ForAllValues:`: every request value does (true when there are none).
    ForAllValues,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Operator {
    base: Base,
    qualifier: Qualifier,
    if_exists: bool,
}

/// Parses `[ForAnyValue:|ForAllValues:]Base[IfExists]`. Operator names are
/// matched exactly, as AWS writes them.
fn operator(name: &str) -> Option<Operator> {
    let (qualifier, rest) = if let Some(r) = name.strip_prefix("ForAnyValue:") {
        (Qualifier::ForAnyValue, r)
    } else if let Some(r) = name.strip_prefix("ForAllValues:") {
        (Qualifier::ForAllValues, r)
    } else {
        (Qualifier::Single, name)
    };
    let (if_exists, rest) = match rest.strip_suffix("IfExists") {
        Some(r) => (true, r),
        None => (false, rest),
    };
    let base = BASES.iter().find(|(n, _)| *n == rest)?.1;
    // Null asks whether the key is there: "IfExists" and set qualifiers
    // make no sense with it.
    if base == Base::Null && (if_exists || qualifier != Qualifier::Single) {
        return None;
    }
    Some(Operator {
        base,
        qualifier,
        if_exists,
    })
}

/// The type of a key's values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    String,
    Number,
    Bool,
}

/// A supported condition key.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Key {
    /// `kms:EncryptionContext:<key>`, with `<key>` lower-cased: the key
    /// part is matched case-insensitively (AWS's rule).
    EncryptionContext(String),
    EncryptionContextKeys,
    RequestAlias,
    ResourceAliases,
    GrantOperations,
    GranteePrincipal,
    RetiringPrincipal,
    GrantConstraintType,
    CallerAccount,
    BypassPolicyLockoutSafetyCheck,
    CallerUid,
    CallerGid,
    CallerUnit,
}

const KEYS: &[(&str, Key)] = &[
    ("kms:EncryptionContextKeys", Key::EncryptionContextKeys),
    ("kms:RequestAlias", Key::RequestAlias),
    ("kms:ResourceAliases", Key::ResourceAliases),
    ("kms:GrantOperations", Key::GrantOperations),
    ("kms:GranteePrincipal", Key::GranteePrincipal),
    ("kms:RetiringPrincipal", Key::RetiringPrincipal),
    ("kms:GrantConstraintType", Key::GrantConstraintType),
    ("kms:CallerAccount", Key::CallerAccount),
    (
        "kms:BypassPolicyLockoutSafetyCheck",
        Key::BypassPolicyLockoutSafetyCheck,
    ),
    ("kmsd:CallerUid", Key::CallerUid),
    ("kmsd:CallerGid", Key::CallerGid),
    ("kmsd:CallerUnit", Key::CallerUnit),
];

const CONTEXT_PREFIX: &str = "kms:EncryptionContext:";

/// Unicode lower case, the folding `IgnoreCase` and the context key part
/// use.
pub(crate) fn fold(s: &str) -> String {
    s.chars().flat_map(char::to_lowercase).collect()
}

/// Whether `s` folds to `folded`, without allocating.
pub(crate) fn eq_folded(s: &str, folded: &str) -> bool {
    s.chars().flat_map(char::to_lowercase).eq(folded.chars())
}

impl Key {
    /// Parses a condition key; key names are case-insensitive (AWS's
    /// rule), the context key part is kept folded.
    fn parse(name: &str) -> Option<Key> {
        if name.len() > CONTEXT_PREFIX.len()
            && name.is_char_boundary(CONTEXT_PREFIX.len())
            && name[..CONTEXT_PREFIX.len()].eq_ignore_ascii_case(CONTEXT_PREFIX)
        {
            return Some(Key::EncryptionContext(fold(&name[CONTEXT_PREFIX.len()..])));
        }
        KEYS.iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, k)| k.clone())
    }

    fn kind(&self) -> Kind {
        match self {
            Key::CallerUid | Key::CallerGid => Kind::Number,
            Key::BypassPolicyLockoutSafetyCheck => Kind::Bool,
            _ => Kind::String,
        }
    }

    fn multi_valued(&self) -> bool {
        matches!(
            self,
            Key::EncryptionContextKeys | Key::ResourceAliases | Key::GrantOperations
        )
    }
}

/// A condition's policy values, compiled for its operator.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Values {
    /// `StringEquals`, `StringNotEquals`.
    Exact(Vec<String>),
    /// The `IgnoreCase` operators: folded.
    Folded(Vec<String>),
    /// `StringLike`, `StringNotLike`.
    Globs(Vec<Glob>),
    Numbers(Vec<i64>),
    /// `Bool`, and `Null` (true: the key must be absent).
    Bools(Vec<bool>),
}

/// One compiled operator-key pair of a `Condition` block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Condition {
    op: Operator,
    key: Key,
    values: Values,
}

/// Parses a statement's `Condition` element; `field` is its path.
pub(crate) fn parse_block(node: &Node, field: &str) -> Result<Vec<Condition>, PolicyError> {
    let Node::Object(ops) = node else {
        return Err(PolicyError::new(format!("{field}: must be an object")));
    };
    let mut out = Vec::new();
    for (op_name, keys) in ops {
        let f = format!("{field}.{op_name}");
        let op = operator(op_name).ok_or_else(|| {
            PolicyError::new(format!(
                "{field}: unsupported condition operator {}",
                shown(op_name)
            ))
        })?;
        let Node::Object(keys) = keys else {
            return Err(PolicyError::new(format!("{f}: must be an object")));
        };
        if keys.is_empty() {
            return Err(PolicyError::new(format!("{f}: names no condition key")));
        }
        for (key_name, value) in keys {
            out.push(parse_one(op, op_name, key_name, value, &f)?);
        }
    }
    Ok(out)
}

fn parse_one(
    op: Operator,
    op_name: &str,
    key_name: &str,
    value: &Node,
    field: &str,
) -> Result<Condition, PolicyError> {
    let key = Key::parse(key_name).ok_or_else(|| {
        PolicyError::new(format!(
            "{field}: unsupported condition key {}",
            shown(key_name)
        ))
    })?;
    let f = format!("{field}.{key_name}");
    let err = |why: String| PolicyError::new(format!("{f}: {why}"));
    if matches!(key, Key::EncryptionContext(_)) && op.qualifier == Qualifier::ForAllValues {
        // AWS refuses this pairing (OverlyPermissiveCondition): the key is
        // single-valued, so ForAllValues holds vacuously.
        return Err(err(
            "ForAllValues with kms:EncryptionContext:<key> is overly permissive".into(),
        ));
    }
    if op.base != Base::Null {
        if op.base.kind() != key.kind() {
            return Err(err(format!(
                "operator {} does not apply to this key",
                shown(op_name)
            )));
        }
        match (key.multi_valued(), op.qualifier) {
            (true, Qualifier::Single) => {
                return Err(err(
                    "a multi-valued key needs ForAnyValue: or ForAllValues:".into(),
                ))
            }
            (false, Qualifier::ForAnyValue | Qualifier::ForAllValues) => {
                return Err(err(
                    "ForAnyValue:/ForAllValues: apply to multi-valued keys only".into(),
                ))
            }
            _ => {}
        }
    }
    let items: Vec<&Node> = match value {
        Node::Array(a) => a.iter().collect(),
        one => vec![one],
    };
    if items.is_empty() {
        return Err(err("lists no value".into()));
    }
    if items.len() > MAX_CONDITION_VALUES {
        return Err(err(format!(
            "lists more than {MAX_CONDITION_VALUES} values"
        )));
    }
    let mut texts = Vec::with_capacity(items.len());
    for item in items {
        let t = match item {
            Node::String(s) => s.as_str(),
            Node::Number(n) => n.as_str(),
            Node::Bool(true) => "true",
            Node::Bool(false) => "false",
            _ => return Err(err("values must be strings, numbers or booleans".into())),
        };
        if t.contains("${") {
            return Err(err(format!(
                "policy variables are not supported: {}",
                shown(t)
            )));
        }
        texts.push(t);
    }
    let values = match op.base {
        Base::StringEquals | Base::StringNotEquals => {
            Values::Exact(texts.iter().map(|t| (*t).to_owned()).collect())
        }
        Base::StringEqualsIgnoreCase | Base::StringNotEqualsIgnoreCase => {
            Values::Folded(texts.iter().map(|t| fold(t)).collect())
        }
        Base::StringLike | Base::StringNotLike => {
            let mut globs = Vec::with_capacity(texts.len());
            for t in &texts {
                let g = Glob::new(t);
                if g.wildcards() > MAX_WILDCARDS {
                    return Err(err(format!(
                        "{} has more than {MAX_WILDCARDS} wildcards",
                        shown(t)
                    )));
                }
                globs.push(g);
            }
            Values::Globs(globs)
        }
        Base::NumericEquals
        | Base::NumericNotEquals
        | Base::NumericLessThan
        | Base::NumericLessThanEquals
        | Base::NumericGreaterThan
        | Base::NumericGreaterThanEquals => {
            let mut nums = Vec::with_capacity(texts.len());
            for t in &texts {
                let digits = t.strip_prefix('-').unwrap_or(t);
                let n = if !digits.is_empty()
                    && digits.len() <= 18
                    && digits.bytes().all(|b| b.is_ascii_digit())
                {
                    t.parse::<i64>().ok()
                } else {
                    None
                };
                nums.push(n.ok_or_else(|| err(format!("{} is not an integer", shown(t))))?);
            }
            Values::Numbers(nums)
        }
        Base::Bool | Base::Null => {
            let mut bools = Vec::with_capacity(texts.len());
            for t in &texts {
                let b = if t.eq_ignore_ascii_case("true") {
                    true
                } else if t.eq_ignore_ascii_case("false") {
                    false
                } else {
                    return Err(err(format!("{} is not true or false", shown(t))));
                };
                bools.push(b);
            }
            Values::Bools(bools)
        }
    };
    Ok(Condition { op, key, values })
}

/// The request's values for a string key, borrowed, without allocating.
#[derive(Clone)]
enum Strs<'r> {
    One(Option<&'r str>),
    List(std::slice::Iter<'r, &'r str>),
    ContextKeys(std::slice::Iter<'r, (&'r str, &'r str)>),
    /// Values of the pairs whose key folds to the given one.
    ContextValues(std::slice::Iter<'r, (&'r str, &'r str)>, &'r str),
}

impl<'r> Iterator for Strs<'r> {
    type Item = &'r str;
    fn next(&mut self) -> Option<&'r str> {
        match self {
            Strs::One(v) => v.take(),
            Strs::List(it) => it.next().copied(),
            Strs::ContextKeys(it) => it.next().map(|(k, _)| *k),
            Strs::ContextValues(it, key) => it.find(|(k, _)| eq_folded(k, key)).map(|(_, v)| *v),
        }
    }
}

/// What a condition sees of one request: the request and the caller's
/// uid as text (`kms:CallerAccount`), formatted once per evaluation.
pub(crate) struct Ctx<'r> {
    pub(crate) req: &'r Request<'r>,
    pub(crate) account: &'r str,
}

/// Formats `n` in decimal into `buf`, without allocating.
pub(crate) fn decimal(mut n: u32, buf: &mut [u8; 10]) -> &str {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    // Only ASCII digits were written.
    std::str::from_utf8(&buf[i..]).unwrap_or("")
}

impl Condition {
    fn strs<'r>(&'r self, ctx: &Ctx<'r>) -> Strs<'r> {
        let r = ctx.req;
        match &self.key {
            Key::EncryptionContext(k) => Strs::ContextValues(r.encryption_context.iter(), k),
            Key::EncryptionContextKeys => Strs::ContextKeys(r.encryption_context.iter()),
            Key::RequestAlias => Strs::One(r.request_alias),
            Key::ResourceAliases => Strs::List(r.key_aliases.iter()),
            Key::GrantOperations => Strs::List(r.grant_operations.iter()),
            Key::GranteePrincipal => Strs::One(r.grantee_principal),
            Key::RetiringPrincipal => Strs::One(r.retiring_principal),
            Key::GrantConstraintType => Strs::One(r.grant_constraint_type.map(|t| t.name())),
            Key::CallerAccount => Strs::One(Some(ctx.account)),
            Key::CallerUnit => Strs::One(r.caller.unit),
            _ => Strs::One(None),
        }
    }

    fn number(&self, ctx: &Ctx<'_>) -> Option<i64> {
        match self.key {
            Key::CallerUid => Some(i64::from(ctx.req.caller.uid)),
            Key::CallerGid => Some(i64::from(ctx.req.caller.gid)),
            _ => None,
        }
    }

    fn boolean(&self, ctx: &Ctx<'_>) -> Option<bool> {
        match self.key {
            Key::BypassPolicyLockoutSafetyCheck => ctx.req.bypass_policy_lockout_safety_check,
            _ => None,
        }
    }

    /// Whether some policy value matches request value `v` (before any
    /// negation).
    fn str_matches(&self, v: &str) -> bool {
        match &self.values {
            Values::Exact(list) => list.iter().any(|c| c == v),
            Values::Folded(list) => list.iter().any(|c| eq_folded(v, c)),
            Values::Globs(list) => list.iter().any(|g| g.matches(v)),
            Values::Numbers(_) | Values::Bools(_) => false,
        }
    }

    fn num_matches(&self, v: i64) -> bool {
        let Values::Numbers(list) = &self.values else {
            return false;
        };
        list.iter().any(|&c| match self.op.base {
            Base::NumericEquals | Base::NumericNotEquals => v == c,
            Base::NumericLessThan => v < c,
            Base::NumericLessThanEquals => v <= c,
            Base::NumericGreaterThan => v > c,
            Base::NumericGreaterThanEquals => v >= c,
            _ => false,
        })
    }

    fn bool_matches(&self, v: bool) -> bool {
        let Values::Bools(list) = &self.values else {
            return false;
        };
        list.contains(&v)
    }

    /// Whether the condition holds for the request.
    pub(crate) fn holds(&self, ctx: &Ctx<'_>) -> bool {
        let negated = self.op.base.negated();
        let present = match self.key.kind() {
            Kind::String => self.strs(ctx).next().is_some(),
            Kind::Number => self.number(ctx).is_some(),
            Kind::Bool => self.boolean(ctx).is_some(),
        };
        if self.op.base == Base::Null {
            // "Null: true" asks for the key to be absent; an empty
            // multi-valued key counts as absent.
            return self.bool_matches(!present);
        }
        if !present {
            return self.op.if_exists
                || match self.op.qualifier {
                    Qualifier::ForAllValues => true,
                    Qualifier::ForAnyValue => false,
                    Qualifier::Single => negated,
                };
        }
        // The operator on one request value, negation applied.
        let one_str = |v: &str| self.str_matches(v) != negated;
        match self.key.kind() {
            Kind::Number => self
                .number(ctx)
                .is_some_and(|v| self.num_matches(v) != negated),
            Kind::Bool => self.boolean(ctx).is_some_and(|v| self.bool_matches(v)),
            Kind::String => match self.op.qualifier {
                Qualifier::ForAnyValue => self.strs(ctx).any(one_str),
                // A single-valued key has one value, except a context key
                // given in two cases (`Team` and `team`): then every value
                // must satisfy the operator, the stricter reading.
                Qualifier::ForAllValues | Qualifier::Single => self.strs(ctx).all(one_str),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{decimal, operator, Base, Key, Qualifier};

    #[test]
    fn operators() {
        let op = operator("ForAnyValue:StringLikeIfExists").unwrap();
        assert_eq!(op.base, Base::StringLike);
        assert_eq!(op.qualifier, Qualifier::ForAnyValue);
        assert!(op.if_exists);
        assert!(operator("NullIfExists").is_none());
        assert!(operator("ForAllValues:Null").is_none());
        assert!(operator("stringequals").is_none());
        assert!(operator("DateEquals").is_none());
        assert!(operator("ArnLike").is_none());
    }

    #[test]
    fn keys() {
        assert_eq!(
            Key::parse("KMS:encryptioncontext:Team"),
            Some(Key::EncryptionContext("team".into()))
        );
        assert_eq!(Key::parse("kms:EncryptionContext:"), None);
        assert_eq!(Key::parse("KMSD:calleruid"), Some(Key::CallerUid));
        assert_eq!(Key::parse("kms:ViaService"), None);
        assert_eq!(
            Key::parse("kms:granteeprincipal"),
            Some(Key::GranteePrincipal)
        );
        assert_eq!(
            Key::parse("kms:GrantConstraintType"),
            Some(Key::GrantConstraintType)
        );
        // It names AWS services, which kmsd has none of.
        assert_eq!(Key::parse("kms:GrantIsForAWSResource"), None);
        assert_eq!(Key::parse("aws:username"), None);
    }

    #[test]
    fn decimals() {
        let mut buf = [0u8; 10];
        assert_eq!(decimal(0, &mut buf), "0");
        assert_eq!(decimal(1000, &mut buf), "1000");
        assert_eq!(decimal(u32::MAX, &mut buf), "4294967295");
    }
}
