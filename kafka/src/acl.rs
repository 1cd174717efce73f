//! Kafka's authorization model (KIP-11, prefixed patterns from KIP-290): ACLs on
//! topics, groups, the cluster and transactional ids, stored in `acls.json` in the
//! data directory (a [`SharedFile`], so a change is durable before it is answered
//! or enforced, and every core sees it at once), and the [`Authorizer`] that judges
//! a principal's operation on a resource with them.
//!
//! The rules are Kafka's `AclAuthorizer`'s: a super user may do everything; a
//! DENY that matches the operation (or ALL) wins over any ALLOW; an ALLOW of the
//! operation (or ALL) allows it, and an ALLOW of READ, WRITE, DELETE or ALTER also
//! allows DESCRIBE, and ALTER_CONFIGS allows DESCRIBE_CONFIGS; an ACL matches a
//! resource when its name is the resource's (LITERAL), `*` (LITERAL, any), or a
//! prefix of it (PREFIXED); its principal is the client's or `User:*`, its host the
//! client's IP or `*`. Anything else is denied, unless
//! `allow_everyone_if_no_acl_found` and no ACL names the resource at all.
//!
//! Never: lets a change reach the cores before it is on disk, holds more than
//! [`ACLS_MAX`] ACLs, or judges anything when the authorizer is off (every call
//! allows, at no cost).

use crate::error::KafkaError;
use crate::shared_file::SharedFile;
use kafka_protocol::ResponseError;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, RwLock};

/// ACLs the file may hold.
pub const ACLS_MAX: usize = 100_000;

/// The file's name in the data directory.
pub const FILE: &str = "acls.json";

/// The one cluster resource's name, as Kafka names it.
pub const CLUSTER_NAME: &str = "kafka-cluster";

/// Every principal, in an ACL.
pub const ANY_USER: &str = "User:*";

macro_rules! coded {
    ($(#[$m:meta])* $name:ident { $($variant:ident = $code:expr),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(rename_all = "SCREAMING_SNAKE_CASE")]
        pub enum $name { $($variant),+ }

        impl $name {
            /// Kafka's code for it on the wire.
            pub fn code(self) -> i8 {
                match self { $($name::$variant => $code),+ }
            }

            pub fn of_code(code: i8) -> Option<$name> {
                match code { $($code => Some($name::$variant),)+ _ => None }
            }
        }
    };
}

coded!(
    /// What an ACL is on.
    ResourceType { Topic = 2, Group = 3, Cluster = 4, TransactionalId = 5 }
);
coded!(
    /// How an ACL's name matches a resource's.
    PatternType { Literal = 3, Prefixed = 4 }
);
coded!(
    /// What a principal does to a resource.
    Operation {
        All = 2,
        Read = 3,
        Write = 4,
        Create = 5,
        Delete = 6,
        Alter = 7,
        Describe = 8,
        ClusterAction = 9,
        DescribeConfigs = 10,
        AlterConfigs = 11,
        IdempotentWrite = 12,
    }
);
coded!(
    /// Whether an ACL allows or denies.
    Permission { Deny = 2, Allow = 3 }
);

/// One ACL, as CreateAcls makes it and `acls.json` keeps it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Acl {
    pub resource_type: ResourceType,
    pub name: String,
    pub pattern: PatternType,
    pub principal: String,
    pub host: String,
    pub operation: Operation,
    pub permission: Permission,
}

impl Acl {
    /// Whether this ACL's resource pattern covers a resource named `name`.
    fn covers(&self, name: &str) -> bool {
        match self.pattern {
            PatternType::Literal => self.name == name || self.name == "*",
            PatternType::Prefixed => name.starts_with(&self.name),
        }
    }

    /// Checks a new ACL as Kafka does: a cluster ACL names `kafka-cluster`, a
    /// principal is `User:<name>`, a host is `*` or an IP address.
    pub fn check(&self) -> Result<(), String> {
        if self.name.is_empty() {
            return Err("the resource name is empty".into());
        }
        if self.resource_type == ResourceType::Cluster && self.name != CLUSTER_NAME {
            return Err(format!("a CLUSTER ACL names {CLUSTER_NAME:?}"));
        }
        match self.principal.strip_prefix("User:") {
            Some(name) if !name.is_empty() => {}
            _ => {
                return Err(format!(
                    "principal {:?}: use User:<name> or User:*",
                    self.principal
                ))
            }
        }
        if self.host != "*" && self.host.parse::<std::net::IpAddr>().is_err() {
            return Err(format!("host {:?}: use * or an IP address", self.host));
        }
        Ok(())
    }

    /// The ACL with its host written as clients' addresses are (an IPv4 address
    /// mapped into IPv6 as IPv4, IPv6 in its short form), so that one address is
    /// one string.
    pub fn canonical(mut self) -> Acl {
        if let Ok(ip) = self.host.parse::<std::net::IpAddr>() {
            self.host = ip.to_canonical().to_string();
        }
        self
    }
}

/// The ACLs by resource type, then by how their names match: what a check reads.
#[derive(Default)]
struct Index {
    by_type: HashMap<ResourceType, TypeIndex>,
}

#[derive(Default)]
struct TypeIndex {
    literal: HashMap<String, Vec<Acl>>,
    /// LITERAL `*`.
    every: Vec<Acl>,
    prefixed: Vec<Acl>,
}

impl Index {
    fn of(file: &AclFile) -> Index {
        let mut index = Index::default();
        for a in &file.acls {
            let t = index.by_type.entry(a.resource_type).or_default();
            match a.pattern {
                PatternType::Literal if a.name == "*" => t.every.push(a.clone()),
                PatternType::Literal => {
                    t.literal.entry(a.name.clone()).or_default().push(a.clone())
                }
                PatternType::Prefixed => t.prefixed.push(a.clone()),
            }
        }
        index
    }

    /// The ACLs that cover the resource.
    fn covering<'a>(
        &'a self,
        resource_type: ResourceType,
        name: &'a str,
    ) -> impl Iterator<Item = &'a Acl> {
        let t = self.by_type.get(&resource_type);
        let literal = t.and_then(|t| t.literal.get(name)).into_iter().flatten();
        let every = t.into_iter().flat_map(|t| t.every.iter());
        let prefixed = t
            .into_iter()
            .flat_map(|t| t.prefixed.iter())
            .filter(move |a| name.starts_with(&a.name));
        literal.chain(every).chain(prefixed)
    }

    /// Every ACL of the type.
    fn of_type(&self, resource_type: ResourceType) -> impl Iterator<Item = &Acl> {
        self.by_type.get(&resource_type).into_iter().flat_map(|t| {
            t.literal
                .values()
                .flatten()
                .chain(t.every.iter())
                .chain(t.prefixed.iter())
        })
    }
}

/// Which ACLs a DescribeAcls or DeleteAcls asks for; `None`: any.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    pub resource_type: Option<ResourceType>,
    pub name: Option<String>,
    pub pattern: PatternFilter,
    pub principal: Option<String>,
    pub host: Option<String>,
    pub operation: Option<Operation>,
    pub permission: Option<Permission>,
}

/// A filter's pattern type: one type, any, or MATCH (every ACL that would apply to
/// a resource of the filter's name).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PatternFilter {
    #[default]
    Any,
    Match,
    Only(PatternType),
}

impl Filter {
    /// A filter from the wire's codes (1: ANY; 2: MATCH for the pattern type).
    pub fn of_codes(
        (resource_type, name, pattern): (i8, Option<&str>, i8),
        (principal, host): (Option<&str>, Option<&str>),
        (operation, permission): (i8, i8),
    ) -> Result<Filter, String> {
        fn any_or<T>(
            code: i8,
            of: impl Fn(i8) -> Option<T>,
            what: &str,
        ) -> Result<Option<T>, String> {
            match code {
                1 => Ok(None),
                c => of(c)
                    .map(Some)
                    .ok_or_else(|| format!("{what} code {c} is not served")),
            }
        }
        let pattern = match pattern {
            1 => PatternFilter::Any,
            2 => PatternFilter::Match,
            c => PatternFilter::Only(
                PatternType::of_code(c)
                    .ok_or_else(|| format!("pattern type code {c} is not served"))?,
            ),
        };
        Ok(Filter {
            resource_type: any_or(resource_type, ResourceType::of_code, "resource type")?,
            name: name.map(str::to_string),
            pattern,
            principal: principal.map(str::to_string),
            host: host.map(str::to_string),
            operation: any_or(operation, Operation::of_code, "operation")?,
            permission: any_or(permission, Permission::of_code, "permission")?,
        })
    }

    pub fn matches(&self, acl: &Acl) -> bool {
        let name = match (&self.name, self.pattern) {
            (None, _) => true,
            (Some(n), PatternFilter::Match) => acl.covers(n),
            (Some(n), _) => acl.name == *n,
        };
        let pattern = match self.pattern {
            PatternFilter::Any | PatternFilter::Match => true,
            PatternFilter::Only(p) => acl.pattern == p,
        };
        name && pattern
            && self.resource_type.is_none_or(|t| t == acl.resource_type)
            && self.principal.as_ref().is_none_or(|p| *p == acl.principal)
            && self.host.as_ref().is_none_or(|h| *h == acl.host)
            && self.operation.is_none_or(|o| o == acl.operation)
            && self.permission.is_none_or(|p| p == acl.permission)
    }
}

/// `acls.json`: every ACL, once.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AclFile {
    pub acls: BTreeSet<Acl>,
}

/// How the server authorizes, as configured.
#[derive(Clone, Debug, Default)]
pub struct AuthorizerConfig {
    /// `authorizer = "acl"`; off (`"none"`): everything is allowed.
    pub on: bool,
    /// Principals that may do everything (`super_users`).
    pub super_users: Vec<String>,
    /// Allow what no ACL names at all (Kafka's allow.everyone.if.no.acl.found), for
    /// the move from an open server.
    pub allow_everyone_if_no_acl_found: bool,
}

/// The server's authorizer, shared by every core.
pub struct Authorizer {
    on: bool,
    super_users: HashSet<String>,
    allow_if_none: bool,
    file: Arc<SharedFile<AclFile>>,
    /// The file's ACLs as checks read them; rebuilt after each change.
    index: RwLock<Arc<Index>>,
}

impl Authorizer {
    /// The authorizer of `config` with the ACLs in `data_dir`. Blocking: at start.
    pub fn open(data_dir: &Path, config: &AuthorizerConfig) -> Result<Authorizer, KafkaError> {
        let file = SharedFile::open(&data_dir.join(FILE), "an ACL file")?;
        Ok(Authorizer::of(config, file))
    }

    fn of(config: &AuthorizerConfig, file: SharedFile<AclFile>) -> Authorizer {
        let index = RwLock::new(Arc::new(Index::of(&file.get())));
        Authorizer {
            on: config.on,
            super_users: config.super_users.iter().cloned().collect(),
            allow_if_none: config.allow_everyone_if_no_acl_found,
            file: Arc::new(file),
            index,
        }
    }

    fn index(&self) -> Arc<Index> {
        match self.index.read() {
            Ok(i) => i.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn reindex(&self) {
        let fresh = Arc::new(Index::of(&self.file.get()));
        match self.index.write() {
            Ok(mut i) => *i = fresh,
            Err(poisoned) => *poisoned.into_inner() = fresh,
        }
    }

    pub fn is_on(&self) -> bool {
        self.on
    }

    /// Whether `principal`, from `host`, may do `operation` to the resource.
    pub fn allows(
        &self,
        (principal, host): (&str, &str),
        operation: Operation,
        (resource_type, name): (ResourceType, &str),
    ) -> bool {
        if !self.on || self.super_users.contains(principal) {
            return true;
        }
        let index = self.index();
        let mut named = false;
        let mut allowed = false;
        for acl in index.covering(resource_type, name) {
            named = true;
            if !(acl.principal == principal || acl.principal == ANY_USER)
                || !(acl.host == "*" || acl.host == host)
            {
                continue;
            }
            match acl.permission {
                Permission::Deny
                    if matches!(acl.operation, Operation::All) || acl.operation == operation =>
                {
                    return false
                }
                Permission::Deny => {}
                Permission::Allow => allowed |= implies(acl.operation, operation),
            }
        }
        allowed || (!named && self.allow_if_none)
    }

    /// Whether `principal` may do `operation` to some resource of the type: an
    /// ALLOW for it (of any name) and no DENY of it on every name (`*`), as Kafka's
    /// `authorizeByResourceType` judges it.
    pub fn allows_some(
        &self,
        (principal, host): (&str, &str),
        operation: Operation,
        resource_type: ResourceType,
    ) -> bool {
        if !self.on || self.super_users.contains(principal) {
            return true;
        }
        let index = self.index();
        if self.allow_if_none && index.of_type(resource_type).next().is_none() {
            return true;
        }
        let applies = |a: &&Acl| {
            (a.principal == principal || a.principal == ANY_USER)
                && (a.host == "*" || a.host == host)
        };
        let denied_everywhere = index.of_type(resource_type).filter(applies).any(|a| {
            a.permission == Permission::Deny
                && (a.operation == operation || a.operation == Operation::All)
                && a.pattern == PatternType::Literal
                && a.name == "*"
        });
        !denied_everywhere
            && index
                .of_type(resource_type)
                .filter(applies)
                .any(|a| a.permission == Permission::Allow && implies(a.operation, operation))
    }

    /// Every ACL now.
    pub fn acls(&self) -> Arc<AclFile> {
        self.file.get()
    }

    /// Adds `acls` (those already there stay once), durably.
    pub async fn create(&self, acls: Vec<Acl>) -> Result<(), KafkaError> {
        let made = self
            .file
            .change(move |file| {
                file.acls.extend(acls);
                if file.acls.len() > ACLS_MAX {
                    return Err(KafkaError::new(
                        ResponseError::PolicyViolation,
                        format!("a server holds at most {ACLS_MAX} ACLs"),
                    ));
                }
                Ok(())
            })
            .await;
        self.reindex();
        made
    }

    /// Removes the ACLs each filter matches, durably: what each removed.
    pub async fn delete(&self, filters: Vec<Filter>) -> Result<Vec<Vec<Acl>>, KafkaError> {
        let removed = self
            .file
            .change(move |file| {
                let removed: Vec<Vec<Acl>> = filters
                    .iter()
                    .map(|f| file.acls.iter().filter(|a| f.matches(a)).cloned().collect())
                    .collect();
                file.acls.retain(|a| !filters.iter().any(|f| f.matches(a)));
                Ok(removed)
            })
            .await;
        self.reindex();
        removed
    }
}

/// Whether an ALLOW of `granted` allows `asked`.
fn implies(granted: Operation, asked: Operation) -> bool {
    use Operation::*;
    granted == All
        || granted == asked
        || (asked == Describe && matches!(granted, Read | Write | Delete | Alter))
        || (asked == DescribeConfigs && granted == AlterConfigs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acl(
        t: ResourceType,
        name: &str,
        pattern: PatternType,
        who: &str,
        op: Operation,
        p: Permission,
    ) -> Acl {
        Acl {
            resource_type: t,
            name: name.into(),
            pattern,
            principal: who.into(),
            host: "*".into(),
            operation: op,
            permission: p,
        }
    }

    fn authorizer(acls: Vec<Acl>, allow_if_none: bool) -> Authorizer {
        let dir = tempfile_dir();
        let mut file = SharedFile::<AclFile>::open(&dir.join(FILE), "an ACL file").unwrap();
        file.init(|f| f.acls.extend(acls));
        let config = AuthorizerConfig {
            on: true,
            super_users: vec!["User:admin".to_string()],
            allow_everyone_if_no_acl_found: allow_if_none,
        };
        Authorizer::of(&config, file)
    }

    fn tempfile_dir() -> std::path::PathBuf {
        std::env::temp_dir().join("tidewater-acl-tests-never-written")
    }

    #[test]
    fn kafka_rules_deny_by_default_deny_wins_and_some_operations_imply_others() {
        use Operation::*;
        use PatternType::*;
        use Permission::*;
        use ResourceType::*;
        let a = authorizer(
            vec![
                acl(Topic, "events", Literal, "User:alice", Write, Allow),
                acl(Topic, "iot.", Prefixed, "User:bob", Read, Allow),
                acl(Topic, "iot.secret", Literal, "User:bob", Read, Deny),
                acl(Topic, "*", Literal, ANY_USER, Describe, Allow),
                acl(Group, "g", Literal, "User:bob", All, Allow),
                acl(Topic, "open", Literal, "User:carol", AlterConfigs, Allow),
            ],
            false,
        );
        let can = |who: &str, op, t, name| a.allows((who, "10.0.0.1"), op, (t, name));
        assert!(can("User:alice", Write, Topic, "events"));
        assert!(!can("User:alice", Read, Topic, "events"), "not granted");
        assert!(
            !can("User:alice", Write, Topic, "events2"),
            "literal is exact"
        );
        assert!(can("User:bob", Read, Topic, "iot.temp"), "prefixed");
        assert!(!can("User:bob", Read, Topic, "iot.secret"), "deny wins");
        assert!(
            can("User:bob", Describe, Topic, "iot.secret"),
            "a deny of READ leaves DESCRIBE"
        );
        assert!(
            can("User:mallory", Describe, Topic, "anything"),
            "wildcard name and user"
        );
        assert!(can("User:bob", Read, Group, "g") && can("User:bob", Delete, Group, "g"));
        assert!(can("User:carol", DescribeConfigs, Topic, "open"));
        assert!(!can("User:carol", Alter, Topic, "open"));
        assert!(
            can("User:admin", Delete, Cluster, CLUSTER_NAME),
            "super user"
        );
        assert!(!can("User:nobody", Read, Group, "h"), "no ACL: denied");
        let open = authorizer(
            vec![acl(Topic, "events", Literal, "User:alice", Write, Allow)],
            true,
        );
        assert!(
            open.allows(("User:x", "h"), Read, (Group, "h")),
            "nothing names it"
        );
        assert!(
            !open.allows(("User:x", "h"), Write, (Topic, "events")),
            "an ACL names it"
        );
        let mut host = acl(Topic, "events", Literal, "User:dave", Read, Allow);
        host.host = "10.0.0.2".into();
        let by_host = authorizer(vec![host], false);
        assert!(by_host.allows(("User:dave", "10.0.0.2"), Read, (Topic, "events")));
        assert!(!by_host.allows(("User:dave", "10.0.0.3"), Read, (Topic, "events")));
        let mut mapped = acl(Topic, "events", Literal, "User:dave", Read, Allow);
        mapped.host = "::ffff:10.0.0.2".into();
        assert_eq!(
            mapped.canonical().host,
            "10.0.0.2",
            "one address, one string"
        );
        // KIP-679: WRITE on some topic, with deny on every topic winning.
        assert!(a.allows_some(("User:alice", "h"), Write, Topic));
        assert!(!a.allows_some(("User:bob", "h"), Write, Topic));
        let denied = authorizer(
            vec![
                acl(Topic, "events", Literal, "User:alice", Write, Allow),
                acl(Topic, "*", Literal, "User:alice", Write, Deny),
            ],
            false,
        );
        assert!(!denied.allows_some(("User:alice", "h"), Write, Topic));
        assert!(
            open.allows_some(("User:x", "h"), Read, Group),
            "no group ACL at all"
        );
    }

    #[test]
    fn filters_and_checks() {
        use Operation::*;
        use PatternType::*;
        use Permission::*;
        use ResourceType::*;
        let prefixed = acl(Topic, "iot.", Prefixed, "User:bob", Read, Allow);
        let literal = acl(Topic, "iot.temp", Literal, "User:bob", Read, Allow);
        let matching = Filter::of_codes((2, Some("iot.temp"), 2), (None, None), (1, 1)).unwrap();
        assert!(matching.matches(&prefixed) && matching.matches(&literal));
        let exact = Filter::of_codes((2, Some("iot.temp"), 3), (None, None), (1, 1)).unwrap();
        assert!(!exact.matches(&prefixed) && exact.matches(&literal));
        let by_user = Filter::of_codes((1, None, 1), (Some("User:eve"), None), (1, 1)).unwrap();
        assert!(!by_user.matches(&literal));
        assert!(Filter::of_codes((9, None, 1), (None, None), (1, 1)).is_err());
        assert!(literal.check().is_ok());
        let mut bad = literal.clone();
        bad.principal = "alice".into();
        assert!(bad.check().is_err());
        bad = literal.clone();
        bad.host = "somewhere".into();
        assert!(bad.check().is_err());
        let cluster = acl(Cluster, "other", Literal, "User:a", Alter, Allow);
        assert!(cluster.check().is_err());
        assert_eq!(Operation::of_code(12), Some(IdempotentWrite));
        assert_eq!(
            Operation::of_code(1),
            None,
            "ANY is a filter's, not an ACL's"
        );
    }
}
