//! `supervision.toml`: the declared shape and policy of the tree.
//!
//! ```toml
//! [defaults]                       # for every child unless it says otherwise
//! restart = "permanent"
//! shutdown = "5s"
//! backoff = { initial = "500ms", max = "30s", multiplier = 2.0, jitter = 0.2 }
//!
//! [root]
//! strategy = "one_for_one"         # one_for_one | one_for_all | rest_for_one
//! max_restarts = 5                 # more than this many restarts ...
//! period = "60s"                   # ... within this period escalates
//!
//! [[root.children]]                # started in this order, stopped in reverse
//! id = "health"
//! ```
//! `on_start_failure = "retry"` lets a child that cannot start at first be
//! retried in the background while its siblings run (default `"fail"`).
//! A child may itself be a supervisor: give it a `[root.children.supervisor]`
//! table with the same keys as `[root]`. Every error names its key path.

use super::spec::{Backoff, ChildSpec, Intensity, Restart, StartFailure, StartFn, Strategy};
use crate::base::duration;
use serde::Deserialize;
use std::collections::HashSet;
use std::fmt;
use std::path::Path;
use std::time::Duration;

/// The default policy, used when no `supervision.toml` is found.
pub const EMBEDDED: &str = include_str!("../../supervision.toml");

/// One problem in a supervision file, with the key path it concerns.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}: {key}: {message}")]
pub struct PolicyError {
    pub file: String,
    pub key: String,
    pub message: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    defaults: RawDefaults,
    root: RawSupervisor,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDefaults {
    restart: Option<Restart>,
    #[serde(default, with = "duration::option")]
    shutdown: Option<Duration>,
    #[serde(default, with = "duration::option")]
    reset_after: Option<Duration>,
    backoff: Option<RawBackoff>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSupervisor {
    strategy: Strategy,
    max_restarts: u32,
    #[serde(with = "duration")]
    period: Duration,
    #[serde(default)]
    children: Vec<RawChild>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawChild {
    id: String,
    restart: Option<Restart>,
    #[serde(default, with = "duration::option")]
    shutdown: Option<Duration>,
    #[serde(default, with = "duration::option")]
    reset_after: Option<Duration>,
    backoff: Option<RawBackoff>,
    #[serde(default)]
    on_start_failure: StartFailure,
    supervisor: Option<RawSupervisor>,
}

#[derive(Debug, Default, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBackoff {
    #[serde(default, with = "duration::option")]
    initial: Option<Duration>,
    #[serde(default, with = "duration::option")]
    max: Option<Duration>,
    multiplier: Option<f64>,
    jitter: Option<f64>,
}

/// The whole tree's policy.
#[derive(Debug, Clone, PartialEq)]
pub struct SupervisionPolicy {
    /// Where it was read from, for messages.
    pub source: String,
    pub root: SupervisorPolicy,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SupervisorPolicy {
    pub strategy: Strategy,
    pub intensity: Intensity,
    pub children: Vec<ChildPolicy>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ChildPolicy {
    pub id: String,
    /// `root.children[2]`, for messages.
    pub key: String,
    pub restart: Restart,
    pub backoff: Backoff,
    pub shutdown: Duration,
    pub reset_after: Duration,
    pub on_start_failure: StartFailure,
    pub supervisor: Option<SupervisorPolicy>,
}

/// One line, so the log keeps its `time | LEVEL | target | message` layout:
/// `root(one_for_one, 5 in 1m)[health, http, cameras(one_for_one, 10 in 1m)[]]`.
impl fmt::Display for SupervisionPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn walk(f: &mut fmt::Formatter<'_>, name: &str, s: &SupervisorPolicy) -> fmt::Result {
            let strategy = match s.strategy {
                Strategy::OneForOne => "one_for_one",
                Strategy::OneForAll => "one_for_all",
                Strategy::RestForOne => "rest_for_one",
            };
            write!(
                f,
                "{name}({strategy}, {} in {})[",
                s.intensity.max_restarts,
                humantime::format_duration(s.intensity.period)
            )?;
            for (i, c) in s.children.iter().enumerate() {
                if i > 0 {
                    f.write_str(", ")?;
                }
                match &c.supervisor {
                    Some(sub) => walk(f, &c.id, sub)?,
                    None => f.write_str(&c.id)?,
                }
            }
            f.write_str("]")
        }
        walk(f, "root", &self.root)
    }
}

impl SupervisionPolicy {
    /// Reads `path`, or the embedded default when `path` is `None`.
    pub fn load(path: Option<&Path>) -> Result<Self, Vec<PolicyError>> {
        match path {
            None => Self::parse(EMBEDDED, "<embedded supervision.toml>"),
            Some(path) => {
                let name = path.display().to_string();
                let text = std::fs::read_to_string(path).map_err(|e| {
                    vec![PolicyError { file: name.clone(), key: "(file)".into(), message: e.to_string() }]
                })?;
                Self::parse(&text, &name)
            }
        }
    }

    /// Parses and validates; every error names its key path.
    pub fn parse(text: &str, file: &str) -> Result<Self, Vec<PolicyError>> {
        let error = |key: String, message: String| PolicyError { file: file.to_owned(), key, message };
        let deserializer =
            toml::Deserializer::parse(text).map_err(|e| vec![error("(syntax)".into(), e.message().to_owned())])?;
        let raw: RawFile = serde_path_to_error::deserialize(deserializer).map_err(|e| {
            let key = e.path().to_string();
            vec![error(if key == "." { "(top level)".into() } else { key }, e.into_inner().message().to_owned())]
        })?;

        let mut problems = Vec::new();
        let defaults = Defaults::from_raw(&raw.defaults, &mut |k, m| problems.push(error(k, m)));
        let root = build_supervisor(&raw.root, "root", &defaults, &mut |k, m| problems.push(error(k, m)));
        if problems.is_empty() { Ok(Self { source: file.to_owned(), root }) } else { Err(problems) }
    }

    /// Checks that every leaf child is a component this program knows, and
    /// that supervisors whose children come from the config (`dynamic`) list
    /// none of their own.
    pub fn check_components(&self, known: &[&str], dynamic: &[&str]) -> Result<(), Vec<PolicyError>> {
        let mut problems = Vec::new();
        let file = self.source.as_str();
        let mut problem =
            |key: String, message: String| problems.push(PolicyError { file: file.to_owned(), key, message });
        fn walk(s: &SupervisorPolicy, known: &[&str], dynamic: &[&str], problem: &mut dyn FnMut(String, String)) {
            for c in &s.children {
                let is_dynamic = dynamic.contains(&c.id.as_str());
                match &c.supervisor {
                    Some(sub) if is_dynamic && !sub.children.is_empty() => problem(
                        format!("{}.supervisor.children", c.key),
                        format!("`{}` takes its children from the configuration; list none here", c.id),
                    ),
                    Some(_) if is_dynamic => {}
                    Some(sub) => walk(sub, known, dynamic, problem),
                    None if is_dynamic => problem(
                        format!("{}.supervisor", c.key),
                        format!(
                            "`{}` is a supervisor: give it a [supervisor] table with its strategy and intensity",
                            c.id
                        ),
                    ),
                    None if !known.contains(&c.id.as_str()) => problem(
                        format!("{}.id", c.key),
                        format!("unknown component `{}`; known: {}", c.id, [known, dynamic].concat().join(", ")),
                    ),
                    None => {}
                }
            }
        }
        walk(&self.root, known, dynamic, &mut problem);
        if problems.is_empty() { Ok(()) } else { Err(problems) }
    }

    /// The longest a graceful stop of the whole tree may take.
    pub fn shutdown_budget(&self) -> Duration {
        fn sum(s: &SupervisorPolicy) -> Duration {
            s.children.iter().map(|c| c.supervisor.as_ref().map_or(c.shutdown, |sub| sum(sub).max(c.shutdown))).sum()
        }
        sum(&self.root)
    }
}

impl ChildPolicy {
    /// The spec for this child, started by `start`.
    pub fn spec(&self, start: StartFn) -> ChildSpec {
        ChildSpec {
            id: self.id.clone(),
            restart: self.restart,
            backoff: self.backoff,
            shutdown: self.shutdown,
            reset_after: self.reset_after,
            on_start_failure: self.on_start_failure,
            start,
        }
    }
}

struct Defaults {
    restart: Restart,
    shutdown: Duration,
    reset_after: Duration,
    backoff: Backoff,
}

impl Defaults {
    fn from_raw(raw: &RawDefaults, problem: &mut dyn FnMut(String, String)) -> Self {
        let base = Backoff::default();
        Self {
            restart: raw.restart.unwrap_or(Restart::Permanent),
            shutdown: raw.shutdown.unwrap_or(Duration::from_secs(5)),
            reset_after: raw.reset_after.unwrap_or(Duration::from_secs(60)),
            backoff: merge_backoff(base, raw.backoff, "defaults.backoff", problem),
        }
    }
}

fn merge_backoff(
    base: Backoff,
    raw: Option<RawBackoff>,
    key: &str,
    problem: &mut dyn FnMut(String, String),
) -> Backoff {
    let raw = raw.unwrap_or_default();
    let b = Backoff {
        initial: raw.initial.unwrap_or(base.initial),
        max: raw.max.unwrap_or(base.max),
        multiplier: raw.multiplier.unwrap_or(base.multiplier),
        jitter: raw.jitter.unwrap_or(base.jitter),
    };
    if b.initial.is_zero() {
        problem(format!("{key}.initial"), "must be greater than zero".into());
    }
    if b.max < b.initial {
        problem(
            format!("{key}.max"),
            format!(
                "{} is less than initial ({})",
                humantime::format_duration(b.max),
                humantime::format_duration(b.initial)
            ),
        );
    }
    if !(b.multiplier.is_finite() && b.multiplier >= 1.0) {
        problem(format!("{key}.multiplier"), format!("{} must be a number >= 1.0", b.multiplier));
    }
    if !(0.0..=1.0).contains(&b.jitter) {
        problem(format!("{key}.jitter"), format!("{} must be between 0.0 and 1.0", b.jitter));
    }
    b
}

fn build_supervisor(
    raw: &RawSupervisor,
    key: &str,
    defaults: &Defaults,
    problem: &mut dyn FnMut(String, String),
) -> SupervisorPolicy {
    if raw.period.is_zero() {
        problem(format!("{key}.period"), "must be greater than zero".into());
    }
    let mut seen = HashSet::new();
    let children = raw
        .children
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let ckey = format!("{key}.children[{i}]");
            if c.id.trim().is_empty() {
                problem(format!("{ckey}.id"), "must not be empty".into());
            } else if !seen.insert(c.id.clone()) {
                problem(format!("{ckey}.id"), format!("duplicate child id `{}`", c.id));
            }
            if c.id.contains('/') {
                problem(format!("{ckey}.id"), "must not contain `/`".into());
            }
            let shutdown = c.shutdown.unwrap_or(defaults.shutdown);
            if shutdown.is_zero() {
                problem(format!("{ckey}.shutdown"), "must be greater than zero".into());
            }
            ChildPolicy {
                id: c.id.clone(),
                restart: c.restart.unwrap_or(defaults.restart),
                backoff: match c.backoff {
                    Some(_) => merge_backoff(defaults.backoff, c.backoff, &format!("{ckey}.backoff"), problem),
                    None => defaults.backoff,
                },
                shutdown,
                reset_after: c.reset_after.unwrap_or(defaults.reset_after),
                on_start_failure: c.on_start_failure,
                supervisor: c
                    .supervisor
                    .as_ref()
                    .map(|s| build_supervisor(s, &format!("{ckey}.supervisor"), defaults, problem)),
                key: ckey,
            }
        })
        .collect();
    SupervisorPolicy {
        strategy: raw.strategy,
        intensity: Intensity { max_restarts: raw.max_restarts, period: raw.period },
        children,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(text: &str) -> Vec<String> {
        SupervisionPolicy::parse(text, "t.toml").unwrap_err().into_iter().map(|e| e.key).collect()
    }

    const ROOT: &str = "[root]\nstrategy = \"one_for_one\"\nmax_restarts = 3\nperiod = \"10s\"\n";

    #[test]
    fn embedded_default_is_valid() {
        let policy = SupervisionPolicy::load(None).unwrap();
        assert!(!policy.root.children.is_empty());
    }

    #[test]
    fn errors_name_the_key_path() {
        assert_eq!(keys("[root]\nstrategy = \"one_for_some\"\nmax_restarts = 1\nperiod = \"1s\""), ["root.strategy"]);
        assert_eq!(
            keys("[root]\nstrategy = \"one_for_one\"\nmax_restarts = -1\nperiod = \"1s\""),
            ["root.max_restarts"]
        );
        assert_eq!(keys("[root]\nstrategy = \"one_for_one\"\nmax_restarts = 1\nperiod = \"soon\""), ["root.period"]);
        assert_eq!(
            keys(&format!("{ROOT}[[root.children]]\nid = \"a\"\nbackoff = {{ jitter = 1.5 }}")),
            ["root.children[0].backoff.jitter"]
        );
        assert_eq!(
            keys(&format!("{ROOT}[[root.children]]\nid = \"a\"\n[[root.children]]\nid = \"a\"")),
            ["root.children[1].id"]
        );
        assert_eq!(
            keys(&format!("{ROOT}[[root.children]]\nid = \"a\"\nrestart = \"sometimes\"")),
            ["root.children[0].restart"]
        );
        assert_eq!(
            keys(&format!("{ROOT}[[root.children]]\nid = \"a\"\ncolour = \"red\"")),
            ["root.children[0].colour"]
        );
        assert_eq!(
            keys(&format!(
                "{ROOT}[[root.children]]\nid = \"s\"\n[root.children.supervisor]\nstrategy = \"rest_for_one\"\nmax_restarts = 1\nperiod = \"0s\""
            )),
            ["root.children[0].supervisor.period"]
        );
    }

    #[test]
    fn unknown_components_are_named() {
        let policy =
            SupervisionPolicy::parse(&format!("{ROOT}[[root.children]]\nid = \"teleporter\""), "t.toml").unwrap();
        let errors = policy.check_components(&["http"], &["cameras"]).unwrap_err();
        assert_eq!(errors[0].key, "root.children[0].id");
        assert!(errors[0].message.contains("teleporter"));
    }

    #[test]
    fn children_inherit_defaults() {
        let text = format!(
            "[defaults]\nrestart = \"transient\"\nshutdown = \"2s\"\nbackoff = {{ initial = \"1s\" }}\n{ROOT}[[root.children]]\nid = \"a\"\n[[root.children]]\nid = \"b\"\nbackoff = {{ max = \"5s\" }}"
        );
        let policy = SupervisionPolicy::parse(&text, "t.toml").unwrap();
        let [a, b] = &policy.root.children[..] else { panic!("two children") };
        assert_eq!(a.restart, Restart::Transient);
        assert_eq!(a.shutdown, Duration::from_secs(2));
        assert_eq!(a.backoff.initial, Duration::from_secs(1));
        assert_eq!(b.backoff.initial, Duration::from_secs(1));
        assert_eq!(b.backoff.max, Duration::from_secs(5));
    }
}
