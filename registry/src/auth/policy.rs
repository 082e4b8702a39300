//! Authorization: which actions a user, a group member or an anonymous client may take
//! on which repositories.
//!
//! A rule names repository patterns, users and groups, and actions. Patterns match a
//! repository name segment by segment: `*` is exactly one segment, `**` any number
//! (including none), anything else a literal segment (`team-a/**`, `*/tools`, `**`). A
//! user may do what any rule naming them (or a group of theirs, or `*`: every
//! authenticated user) allows; admins may do everything. With no rules at all every
//! authenticated user may do everything, which is distribution's behaviour with an
//! htpasswd file.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use storage::RepositoryName;

use crate::config::auth::{AdminRoleConfig, AnonymousRuleConfig, RuleConfig};

/// What a request does to a repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Action {
    Pull,
    Push,
    Delete,
}

impl Action {
    pub const ALL: [Action; 3] = [Action::Pull, Action::Push, Action::Delete];

    pub fn as_str(self) -> &'static str {
        match self {
            Action::Pull => "pull",
            Action::Push => "push",
            Action::Delete => "delete",
        }
    }

    /// `pull`, `push`, `delete`; `None` for anything else.
    pub fn parse(s: &str) -> Option<Action> {
        match s {
            "pull" => Some(Action::Pull),
            "push" => Some(Action::Push),
            "delete" => Some(Action::Delete),
            _ => None,
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One segment of a [`Pattern`].
#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    /// `*`: exactly one segment.
    One,
    /// `**`: zero or more segments.
    Any,
}

/// A repository name pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    text: String,
    segments: Vec<Segment>,
}

impl Pattern {
    /// Parses `a/*/b/**`. Fails on an empty pattern or segment, and on a segment that
    /// mixes `*` with other characters (`team-*`), which would read as a glob it is not.
    pub fn parse(text: &str) -> Result<Pattern, String> {
        if text.is_empty() {
            return Err("an empty repository pattern".into());
        }
        let mut segments = Vec::new();
        for seg in text.split('/') {
            segments.push(match seg {
                "" => return Err(format!("repository pattern {text:?} has an empty segment")),
                "*" => Segment::One,
                "**" => Segment::Any,
                s if s.contains('*') => {
                    return Err(format!(
                        "repository pattern {text:?}: '*' must be a whole segment (* or **)"
                    ))
                }
                s => Segment::Literal(s.to_owned()),
            });
        }
        Ok(Pattern {
            text: text.to_owned(),
            segments,
        })
    }

    pub fn matches(&self, repo: &str) -> bool {
        let parts: Vec<&str> = repo.split('/').collect();
        match_segments(&self.segments, &parts)
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }
}

fn match_segments(pattern: &[Segment], parts: &[&str]) -> bool {
    let Some((first, rest)) = pattern.split_first() else {
        return parts.is_empty();
    };
    if *first == Segment::Any {
        return (0..=parts.len()).any(|i| match_segments(rest, &parts[i..]));
    }
    let Some((part, more)) = parts.split_first() else {
        return false;
    };
    let here = match first {
        Segment::Literal(l) => l == part,
        Segment::One | Segment::Any => true,
    };
    here && match_segments(rest, more)
}

#[derive(Debug, Clone)]
struct Rule {
    patterns: Vec<Pattern>,
    users: BTreeSet<String>,
    groups: BTreeSet<String>,
    actions: BTreeSet<Action>,
}

impl Rule {
    fn covers(&self, action: Action, repo: &str) -> bool {
        self.actions.contains(&action) && self.patterns.iter().any(|p| p.matches(repo))
    }
}

/// The parsed policy.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    rules: Vec<Rule>,
    anonymous: Vec<Rule>,
    /// group → members
    groups: BTreeMap<String, BTreeSet<String>>,
    admin_users: BTreeSet<String>,
    admin_groups: BTreeSet<String>,
}

fn parse_actions(list: &[String], at: &str, problems: &mut Vec<String>) -> BTreeSet<Action> {
    let mut out = BTreeSet::new();
    for a in list {
        match a.as_str() {
            "*" => out.extend(Action::ALL),
            other => match Action::parse(other) {
                Some(a) => {
                    out.insert(a);
                }
                None => problems.push(format!(
                    "{at}: unknown action {other:?} (pull, push, delete or *)"
                )),
            },
        }
    }
    if list.is_empty() {
        problems.push(format!("{at}: actions must not be empty"));
    }
    out
}

fn parse_patterns(list: &[String], at: &str, problems: &mut Vec<String>) -> Vec<Pattern> {
    if list.is_empty() {
        problems.push(format!("{at}: repositories must not be empty"));
    }
    list.iter()
        .filter_map(|p| {
            Pattern::parse(p)
                .map_err(|e| problems.push(format!("{at}: {e}")))
                .ok()
        })
        .collect()
}

impl Policy {
    /// Builds the policy; every problem is reported (with the rule it is in).
    pub fn build(
        rules: &[RuleConfig],
        anonymous: &[AnonymousRuleConfig],
        groups: &BTreeMap<String, Vec<String>>,
        admin: &AdminRoleConfig,
    ) -> Result<Policy, Vec<String>> {
        let mut problems = Vec::new();
        let mut policy = Policy {
            groups: groups
                .iter()
                .map(|(g, members)| (g.clone(), members.iter().cloned().collect()))
                .collect(),
            admin_users: admin.users.iter().cloned().collect(),
            admin_groups: admin.groups.iter().cloned().collect(),
            ..Policy::default()
        };
        for (i, r) in rules.iter().enumerate() {
            let at = format!("auth.rules[{i}]");
            if r.users.is_empty() && r.groups.is_empty() {
                problems.push(format!("{at}: names no users or groups (use users = [\"*\"] for every authenticated user)"));
            }
            for g in &r.groups {
                if !groups.contains_key(g) {
                    problems.push(format!(
                        "{at}: unknown group {g:?} (define it in [auth.groups])"
                    ));
                }
            }
            policy.rules.push(Rule {
                patterns: parse_patterns(&r.repositories, &at, &mut problems),
                users: r.users.iter().cloned().collect(),
                groups: r.groups.iter().cloned().collect(),
                actions: parse_actions(&r.actions, &at, &mut problems),
            });
        }
        for (i, r) in anonymous.iter().enumerate() {
            let at = format!("auth.anonymous[{i}]");
            policy.anonymous.push(Rule {
                patterns: parse_patterns(&r.repositories, &at, &mut problems),
                users: BTreeSet::new(),
                groups: BTreeSet::new(),
                actions: parse_actions(&r.actions, &at, &mut problems),
            });
        }
        for g in &admin.groups {
            if !groups.contains_key(g) {
                problems.push(format!(
                    "auth.admin: unknown group {g:?} (define it in [auth.groups])"
                ));
            }
        }
        if problems.is_empty() {
            Ok(policy)
        } else {
            Err(problems)
        }
    }

    fn in_group(&self, user: &str, group: &str) -> bool {
        self.groups.get(group).is_some_and(|m| m.contains(user))
    }

    /// Whether `user` has the admin role.
    pub fn is_admin(&self, user: &str) -> bool {
        self.admin_users.contains(user) || self.admin_groups.iter().any(|g| self.in_group(user, g))
    }

    /// Whether the admin role has any member (the admin API exists for them).
    pub fn has_admins(&self) -> bool {
        !self.admin_users.is_empty() || !self.admin_groups.is_empty()
    }

    /// Whether authenticated `user` may take `action` on `repo`.
    pub fn user_allows(&self, user: &str, action: Action, repo: &str) -> bool {
        if self.rules.is_empty() || self.is_admin(user) {
            return true;
        }
        self.rules.iter().any(|r| {
            (r.users.contains("*")
                || r.users.contains(user)
                || r.groups.iter().any(|g| self.in_group(user, g)))
                && r.covers(action, repo)
        })
    }

    /// Whether a client without credentials may take `action` on `repo`.
    pub fn anonymous_allows(&self, action: Action, repo: &str) -> bool {
        self.anonymous.iter().any(|r| r.covers(action, repo))
    }

    /// Whether anonymous clients may do anything at all.
    pub fn has_anonymous(&self) -> bool {
        !self.anonymous.is_empty()
    }

    /// The subset of `wanted` that `user` (`None`: anonymous) may take on `repo`.
    pub fn allowed_actions(
        &self,
        user: Option<&str>,
        repo: &RepositoryName,
        wanted: &BTreeSet<Action>,
    ) -> BTreeSet<Action> {
        wanted
            .iter()
            .copied()
            .filter(|a| match user {
                Some(u) => self.user_allows(u, *a, repo.as_str()),
                None => self.anonymous_allows(*a, repo.as_str()),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Pattern {
        Pattern::parse(s).expect("pattern")
    }

    #[test]
    fn patterns_match_by_segment() {
        assert!(p("**").matches("a"));
        assert!(p("**").matches("a/b/c"));
        assert!(p("team-a/**").matches("team-a/x"));
        assert!(p("team-a/**").matches("team-a/x/y"));
        assert!(p("team-a/**").matches("team-a"), "** matches zero segments");
        assert!(!p("team-a/**").matches("team-ab/x"));
        assert!(!p("team-a/**").matches("team-b/x"));
        assert!(p("*").matches("alpine"));
        assert!(!p("*").matches("library/alpine"));
        assert!(p("*/tools").matches("x/tools"));
        assert!(!p("*/tools").matches("x/y/tools"));
        assert!(p("a/**/z").matches("a/z"));
        assert!(p("a/**/z").matches("a/b/c/z"));
        assert!(!p("a/**/z").matches("a/b/c"));
        assert!(p("exact/name").matches("exact/name"));
        assert!(!p("exact/name").matches("exact/name/more"));
    }

    #[test]
    fn bad_patterns_are_refused() {
        for bad in ["", "a//b", "/a", "a/", "team-*", "a/**x"] {
            assert!(Pattern::parse(bad).is_err(), "{bad:?}");
        }
    }

    fn rule(repos: &[&str], users: &[&str], groups: &[&str], actions: &[&str]) -> RuleConfig {
        let v = |x: &[&str]| x.iter().map(|s| s.to_string()).collect();
        RuleConfig {
            repositories: v(repos),
            users: v(users),
            groups: v(groups),
            actions: v(actions),
        }
    }

    #[test]
    fn rules_users_groups_admins_and_anonymous() {
        let groups = BTreeMap::from([
            ("team-a".to_string(), vec!["bob".to_string()]),
            ("ops".to_string(), vec!["olga".to_string()]),
        ]);
        let policy = Policy::build(
            &[
                rule(&["**"], &["*"], &[], &["pull"]),
                rule(&["team-a/**"], &["alice"], &["team-a"], &["push", "delete"]),
            ],
            &[AnonymousRuleConfig {
                repositories: vec!["public/**".into()],
                actions: vec!["pull".into()],
            }],
            &groups,
            &AdminRoleConfig {
                users: vec!["root".into()],
                groups: vec!["ops".into()],
            },
        )
        .expect("policy");
        assert!(policy.user_allows("carol", Action::Pull, "team-a/x"));
        assert!(!policy.user_allows("carol", Action::Push, "team-a/x"));
        assert!(policy.user_allows("alice", Action::Push, "team-a/x"));
        assert!(
            policy.user_allows("bob", Action::Delete, "team-a/x"),
            "via group"
        );
        assert!(!policy.user_allows("bob", Action::Push, "team-b/x"));
        assert!(policy.user_allows("root", Action::Delete, "anything"));
        assert!(
            policy.user_allows("olga", Action::Push, "team-b/x"),
            "admin group"
        );
        assert!(policy.is_admin("olga") && !policy.is_admin("bob"));
        assert!(policy.anonymous_allows(Action::Pull, "public/x"));
        assert!(!policy.anonymous_allows(Action::Push, "public/x"));
        assert!(!policy.anonymous_allows(Action::Pull, "team-a/x"));
    }

    #[test]
    fn no_rules_means_every_user_everything() {
        let policy =
            Policy::build(&[], &[], &BTreeMap::new(), &AdminRoleConfig::default()).expect("policy");
        assert!(policy.user_allows("anyone", Action::Delete, "a/b"));
        assert!(!policy.anonymous_allows(Action::Pull, "a/b"));
    }

    #[test]
    fn every_problem_is_reported() {
        let e = Policy::build(
            &[
                rule(&["team-*"], &["a"], &["nogroup"], &["pull", "fly"]),
                rule(&[], &[], &[], &[]),
            ],
            &[],
            &BTreeMap::new(),
            &AdminRoleConfig {
                users: vec![],
                groups: vec!["nope".into()],
            },
        )
        .expect_err("invalid");
        assert_eq!(e.len(), 7, "{e:?}");
        assert!(e
            .iter()
            .any(|p| p.contains("auth.rules[0]") && p.contains("fly")));
    }
}
