//! The policy document: bounded JSON in, a [`CompiledPolicy`] out.
//!
//! Parsing checks the limits before and while it reads (size, then depth
//! by a scan of the bytes, then strings and counts on the tree), refuses
//! duplicate object keys (two `Effect`s would make a document mean what
//! the last parser to read it decides), and compiles every statement:
//! actions to a bit set, principals to ids, conditions to typed values.

use std::collections::HashSet;
use std::fmt;

use serde::de::{Deserialize, Deserializer, Error as _, MapAccess, SeqAccess, Visitor};

use crate::action::ActionSet;
use crate::condition::{self, Condition};
use crate::error::{shown, PolicyError};
use crate::principal::{NameResolver, Principal};

/// The largest document, in bytes: AWS's key policy limit, 32 KiB.
pub const MAX_POLICY_BYTES: usize = 32 * 1024;
/// The deepest nesting of JSON arrays and objects. A policy needs 6
/// (document, `Statement`, statement, `Condition`, operator, values).
pub const MAX_DEPTH: usize = 8;
/// The most statements in one document.
pub const MAX_STATEMENTS: usize = 128;
/// The longest string (value or object key), in bytes.
pub const MAX_STRING_BYTES: usize = 1024;
/// The most wildcards (`*`, `?`) in one action or `StringLike` pattern.
pub const MAX_WILDCARDS: usize = 16;
/// The most entries in one statement's `Principal`, `Action` or
/// `Resource` list.
pub const MAX_LIST: usize = 64;

/// The policy versions AWS documents (the language has not changed since
/// 2012-10-17; 2008-10-17 differs only in policy variables, which kmsd
/// refuses anyway).
const VERSIONS: &[&str] = &["2012-10-17", "2008-10-17"];

/// Prefix of kmsd's key ARNs before it took AWS's form (still accepted).
const LEGACY_KEY_ARN_PREFIX: &str = "arn:kmsd:kms:local:key/";

/// A JSON value as policies use it, object members in document order.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Node {
    Null,
    Bool(bool),
    /// A number, as its decimal text.
    Number(String),
    String(String),
    Array(Vec<Node>),
    Object(Vec<(String, Node)>),
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Node, D::Error> {
        d.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

fn bounded<E: serde::de::Error>(s: &str) -> Result<String, E> {
    if s.len() > MAX_STRING_BYTES {
        return Err(E::custom(format!(
            "a string is longer than {MAX_STRING_BYTES} bytes"
        )));
    }
    Ok(s.to_owned())
}

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_unit<E>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }
    fn visit_bool<E>(self, v: bool) -> Result<Node, E> {
        Ok(Node::Bool(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Node, E> {
        Ok(Node::Number(v.to_string()))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Node, E> {
        Ok(Node::Number(v.to_string()))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Node, E> {
        Ok(Node::Number(v.to_string()))
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Node, E> {
        bounded(v).map(Node::String)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut items = Vec::new();
        while let Some(n) = seq.next_element()? {
            items.push(n);
        }
        Ok(Node::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let mut members: Vec<(String, Node)> = Vec::new();
        let mut seen = HashSet::new();
        while let Some(k) = map.next_key::<String>()? {
            let k = bounded(&k)?;
            if !seen.insert(k.clone()) {
                return Err(A::Error::custom(format!("duplicate key {}", shown(&k))));
            }
            let v = map.next_value()?;
            members.push((k, v));
        }
        Ok(Node::Object(members))
    }
}

/// The deepest nesting of `[`/`{` outside strings: a linear scan, so that
/// the recursive parser never goes deeper than [`MAX_DEPTH`].
fn depth(text: &str) -> usize {
    let (mut depth, mut max, mut in_string, mut escaped) = (0usize, 0usize, false, false);
    for b in text.bytes() {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                max = max.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

/// Whether an allowed statement element matches, or a deny's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Effect {
    Allow,
    Deny,
}

/// A statement's `Resource`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Resource {
    /// `*`.
    Any,
    /// Key ARNs (their key ids in lower case), one of which must name the
    /// request's key: matched by key id ([`same_key`]).
    Keys(Vec<String>),
}

/// One compiled statement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Statement {
    pub(crate) effect: Effect,
    pub(crate) principals: Vec<Principal>,
    pub(crate) actions: ActionSet,
    pub(crate) resource: Resource,
    pub(crate) conditions: Vec<Condition>,
}

/// A parsed, validated key policy, ready to evaluate requests
/// ([`CompiledPolicy::evaluate`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompiledPolicy {
    pub(crate) statements: Vec<Statement>,
}

/// The entry point: `Policy::parse(text, &resolver)`.
#[derive(Clone, Copy, Debug)]
pub struct Policy;

impl Policy {
    /// Parses and validates a key policy document, resolving `user:` and
    /// `group:` principals through `resolver` (a name it does not know is
    /// refused). Every refusal is a [`PolicyError`] naming the field.
    pub fn parse(text: &str, resolver: &dyn NameResolver) -> Result<CompiledPolicy, PolicyError> {
        parse(text, resolver)
    }
}

fn parse(text: &str, resolver: &dyn NameResolver) -> Result<CompiledPolicy, PolicyError> {
    if text.len() > MAX_POLICY_BYTES {
        return Err(PolicyError::new(format!(
            "the document is longer than {MAX_POLICY_BYTES} bytes"
        )));
    }
    if depth(text) > MAX_DEPTH {
        return Err(PolicyError::new(format!(
            "the document nests deeper than {MAX_DEPTH} levels"
        )));
    }
    let root: Node = serde_json::from_str(text)
        .map_err(|e| PolicyError::new(format!("the document is not valid JSON: {e}")))?;
    let Node::Object(members) = root else {
        return Err(PolicyError::new("the document must be a JSON object"));
    };
    let mut statements = None;
    for (name, value) in &members {
        match name.as_str() {
            "Version" => match value {
                Node::String(v) if VERSIONS.contains(&v.as_str()) => {}
                _ => {
                    return Err(PolicyError::new(
                        "Version: must be \"2012-10-17\" or \"2008-10-17\"",
                    ))
                }
            },
            "Id" => {
                if !matches!(value, Node::String(_)) {
                    return Err(PolicyError::new("Id: must be a string"));
                }
            }
            "Statement" => statements = Some(value),
            other => {
                return Err(PolicyError::new(format!(
                    "unsupported policy element {}",
                    shown(other)
                )))
            }
        }
    }
    let list: Vec<&Node> = match statements {
        None => return Err(PolicyError::new("Statement: missing")),
        Some(Node::Array(a)) => a.iter().collect(),
        Some(one @ Node::Object(_)) => vec![one],
        Some(_) => {
            return Err(PolicyError::new(
                "Statement: must be an object or an array of objects",
            ))
        }
    };
    if list.is_empty() {
        return Err(PolicyError::new("Statement: is empty"));
    }
    if list.len() > MAX_STATEMENTS {
        return Err(PolicyError::new(format!(
            "Statement: more than {MAX_STATEMENTS} statements"
        )));
    }
    let mut sids = HashSet::new();
    let statements = list
        .iter()
        .enumerate()
        .map(|(i, s)| statement(s, &format!("Statement[{i}]"), resolver, &mut sids))
        .collect::<Result<_, _>>()?;
    Ok(CompiledPolicy { statements })
}

/// A string or a non-empty array of strings, at most [`MAX_LIST`].
fn strings<'n>(node: &'n Node, field: &str) -> Result<Vec<&'n str>, PolicyError> {
    let items: Vec<&Node> = match node {
        Node::Array(a) => a.iter().collect(),
        one => vec![one],
    };
    if items.is_empty() {
        return Err(PolicyError::new(format!("{field}: is empty")));
    }
    if items.len() > MAX_LIST {
        return Err(PolicyError::new(format!(
            "{field}: more than {MAX_LIST} entries"
        )));
    }
    items
        .into_iter()
        .map(|n| match n {
            Node::String(s) => Ok(s.as_str()),
            _ => Err(PolicyError::new(format!(
                "{field}: must be a string or an array of strings"
            ))),
        })
        .collect()
}

fn statement(
    node: &Node,
    field: &str,
    resolver: &dyn NameResolver,
    sids: &mut HashSet<String>,
) -> Result<Statement, PolicyError> {
    let Node::Object(members) = node else {
        return Err(PolicyError::new(format!("{field}: must be an object")));
    };
    let get = |name: &str| members.iter().find(|(k, _)| k == name).map(|(_, v)| v);
    for (name, _) in members {
        match name.as_str() {
            "Sid" | "Effect" | "Principal" | "Action" | "Resource" | "Condition" => {}
            "NotPrincipal" | "NotAction" | "NotResource" => {
                return Err(PolicyError::new(format!(
                    "{field}.{name}: is not supported (use {} with a Deny)",
                    &name[3..]
                )))
            }
            other => {
                return Err(PolicyError::new(format!(
                    "{field}: unsupported statement element {}",
                    shown(other)
                )))
            }
        }
    }
    let missing = |name: &str| PolicyError::new(format!("{field}.{name}: missing"));
    if let Some(sid) = get("Sid") {
        // Sids may contain spaces in key policies (unlike IAM's); they
        // must be unique so that a message or audit line can name one.
        let Node::String(sid) = sid else {
            return Err(PolicyError::new(format!("{field}.Sid: must be a string")));
        };
        if !sid.is_empty() && !sids.insert(sid.clone()) {
            return Err(PolicyError::new(format!(
                "{field}.Sid: {} is not unique",
                shown(sid)
            )));
        }
    }
    let effect = match get("Effect").ok_or_else(|| missing("Effect"))? {
        Node::String(s) if s == "Allow" => Effect::Allow,
        Node::String(s) if s == "Deny" => Effect::Deny,
        _ => {
            return Err(PolicyError::new(format!(
                "{field}.Effect: must be \"Allow\" or \"Deny\""
            )))
        }
    };
    let principals = principals(
        get("Principal").ok_or_else(|| missing("Principal"))?,
        field,
        resolver,
    )?;

    let f = format!("{field}.Action");
    let mut actions = ActionSet::default();
    for pattern in strings(get("Action").ok_or_else(|| missing("Action"))?, &f)? {
        let set = ActionSet::matching(pattern);
        if crate::glob::Glob::new(pattern).wildcards() > MAX_WILDCARDS {
            return Err(PolicyError::new(format!(
                "{f}: {} has more than {MAX_WILDCARDS} wildcards",
                shown(pattern)
            )));
        }
        if set.is_empty() {
            // A typo (`kms:Encypt`) would otherwise silently allow or
            // deny nothing.
            return Err(PolicyError::new(format!(
                "{f}: {} names no kmsd action",
                shown(pattern)
            )));
        }
        actions = actions.union(set);
    }

    let f = format!("{field}.Resource");
    let mut any = false;
    let mut keys = Vec::new();
    for r in strings(get("Resource").ok_or_else(|| missing("Resource"))?, &f)? {
        if r == "*" {
            any = true;
        } else if let Some(id) = key_arn_id(r) {
            let prefix = &r[..r.len() - id.len()];
            keys.push(format!("{prefix}{}", id.to_ascii_lowercase()));
        } else {
            return Err(PolicyError::new(format!(
                "{f}: {} is neither * nor a key ARN \
                 (arn:<partition>:kms:<region>:<account>:key/<key id>)",
                shown(r)
            )));
        }
    }
    let resource = if any {
        Resource::Any
    } else {
        Resource::Keys(keys)
    };

    let conditions = match get("Condition") {
        Some(c) => condition::parse_block(c, &format!("{field}.Condition"))?,
        None => Vec::new(),
    };
    Ok(Statement {
        effect,
        principals,
        actions,
        resource,
        conditions,
    })
}

/// The key id of key ARN `r`, if it is one: AWS's form
/// `arn:<partition>:kms:<region>:<account>:key/<key id>`, of any
/// partition (`aws`, `aws-...`), region (lower-case letters, digits,
/// hyphens) and account (12 digits), or kmsd's legacy
/// `arn:kmsd:kms:local:key/<key id>`. Which of them name the daemon's keys
/// is the daemon's to say when a policy is given
/// ([`CompiledPolicy::key_arns`]); a stored policy names its keys by id.
fn key_arn_id(r: &str) -> Option<&str> {
    let id = match r.strip_prefix(LEGACY_KEY_ARN_PREFIX) {
        Some(id) => id,
        None => {
            let mut parts = r.splitn(6, ':');
            let mut next = || parts.next();
            let (arn, partition, service, region, account, resource) =
                (next()?, next()?, next()?, next()?, next()?, next()?);
            let lower = |s: &str, also: &[u8]| {
                !s.is_empty()
                    && s.bytes()
                        .all(|b| b.is_ascii_lowercase() || also.contains(&b))
            };
            let ok = arn == "arn"
                && (partition == "aws"
                    || partition
                        .strip_prefix("aws-")
                        .is_some_and(|p| lower(p, b"-")))
                && service == "kms"
                && lower(region, b"-0123456789")
                && account.len() == 12
                && account.bytes().all(|b| b.is_ascii_digit());
            if !ok {
                return None;
            }
            resource.strip_prefix("key/")?
        }
    };
    uuid_text(id).then_some(id)
}

/// Whether a compiled key ARN `k` names the key whose ARN is `arn` (the
/// request's): by key id, the last 36 characters of both. A policy stored
/// when kmsd's ARNs had another form (the legacy one, another `[aws]`
/// region or account) keeps naming the same keys, for its `Deny`s as for
/// its `Allow`s.
pub(crate) fn same_key(k: &str, arn: &str) -> bool {
    let (k, arn) = (k.as_bytes(), arn.as_bytes());
    arn.len() >= 36
        && k.len() >= 36
        && k[k.len() - 36..].eq_ignore_ascii_case(&arn[arn.len() - 36..])
}

/// A hyphenated UUID (8-4-4-4-12 hex digits), kmsd's key id.
fn uuid_text(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

/// `"*"`, or `{"AWS": ...}` / `{"kmsd": ...}` with a string or a list.
fn principals(
    node: &Node,
    field: &str,
    resolver: &dyn NameResolver,
) -> Result<Vec<Principal>, PolicyError> {
    let f = format!("{field}.Principal");
    let texts: Vec<(&str, String)> = match node {
        Node::String(s) if s == "*" => vec![("*", f.clone())],
        Node::Object(members) if !members.is_empty() => {
            let mut out = Vec::new();
            for (kind, value) in members {
                if kind != "AWS" && kind != "kmsd" {
                    return Err(PolicyError::new(format!(
                        "{f}: unsupported principal type {} (AWS or kmsd)",
                        shown(kind)
                    )));
                }
                let ff = format!("{f}.{kind}");
                for s in strings(value, &ff)? {
                    out.push((s, ff.clone()));
                }
            }
            if out.len() > MAX_LIST {
                return Err(PolicyError::new(format!(
                    "{f}: more than {MAX_LIST} entries"
                )));
            }
            out
        }
        _ => {
            return Err(PolicyError::new(format!(
                "{f}: must be \"*\" or an object {{\"AWS\": ...}}"
            )))
        }
    };
    texts
        .iter()
        .map(|(t, ff)| Principal::parse(t, ff, resolver))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::depth;

    #[test]
    fn depth_ignores_strings() {
        assert_eq!(depth("{}"), 1);
        assert_eq!(depth(r#"{"a":[{"b":"[[[[{{{"}]}"#), 3);
        assert_eq!(depth(r#"{"a":"\"[["}"#), 1);
        assert_eq!(depth("[[[[]]]]"), 4);
    }
}
