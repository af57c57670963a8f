//! Authorization of authenticated users by SubjectAccessReview, with a decision cache.
//!
//! An aggregated API server must not trust that kube-apiserver authorized the request, so after
//! [`crate::auth`] names the user the adapter asks kube-apiserver, as a delegated authorizer,
//! whether that user may do what kube-apiserver's request-info would call the request:
//! `list` of resource `<metric>` in group `external.metrics.k8s.io` in the namespace (a
//! collection path), or `get` of `<resource>/<metric>` (subresource) named `<name>` in group
//! `custom.metrics.k8s.io`. These are the rules of the built-in
//! `system:controller:horizontal-pod-autoscaler` role, so a stock HPA is allowed everywhere.
//!
//! Decisions are cached per (user, groups, extra, attributes): allowed for
//! [`Config::allow_ttl`] (default 5 min, far longer than the HPA's 15 s sync period, so the
//! steady state makes no API call), denied for [`Config::deny_ttl`] (30 s, so a new
//! RoleBinding takes effect soon). The cache holds at most [`Config::max_entries`]; when full,
//! expired entries go first, then everything (a burst of distinct users cannot grow memory).
//! An error asking (kube-apiserver unreachable, no permission to create SubjectAccessReviews) is
//! not cached and the request is answered 503: the HPA then keeps its replica count, as for
//! stale data, instead of acting on a value nobody authorized.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec, SubjectAccessReviewStatus,
};
use kube::api::PostParams;

use crate::auth::User;
use crate::cache::TtlCache;

/// What a request does, in kube-apiserver's authorization terms.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Attributes {
    /// `list` or `get`.
    pub verb: &'static str,
    /// API group.
    pub group: &'static str,
    /// API version.
    pub version: &'static str,
    /// Resource (the metric name for external metrics).
    pub resource: String,
    /// Subresource (the metric name for object metrics), or empty.
    pub subresource: String,
    /// Object name, or empty for a collection.
    pub name: String,
    /// Namespace.
    pub namespace: String,
}

impl Attributes {
    /// `list` of external metric `metric` in `namespace`.
    pub fn external(namespace: &str, metric: &str) -> Self {
        Self {
            verb: "list",
            group: "external.metrics.k8s.io",
            version: "v1beta1",
            resource: metric.into(),
            subresource: String::new(),
            name: String::new(),
            namespace: namespace.into(),
        }
    }

    /// `get` of object metric `metric` on `resource` `name` in `namespace`.
    pub fn object(namespace: &str, resource: &str, name: &str, metric: &str) -> Self {
        Self {
            verb: "get",
            group: "custom.metrics.k8s.io",
            version: "v1beta2",
            resource: resource.into(),
            subresource: metric.into(),
            name: name.into(),
            namespace: namespace.into(),
        }
    }

    /// `resource "x" in API group "g" in the namespace "ns"`, as kube-apiserver words it.
    pub fn describe(&self) -> String {
        let resource = if self.subresource.is_empty() {
            self.resource.clone()
        } else {
            format!("{}/{}", self.resource, self.subresource)
        };
        format!("resource {resource:?} in API group {:?} in the namespace {:?}", self.group, self.namespace)
    }
}

/// kube-apiserver's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Allowed.
    Allow,
    /// Not allowed (denied or no opinion), with the authorizer's reason if it gave one.
    Deny(String),
}

/// Why a request is not authorized.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The authorizer said no (answered 403).
    #[error("User {user:?} cannot {verb} {what}{}", reason_suffix(.reason))]
    Forbidden {
        /// User name.
        user: String,
        /// Verb.
        verb: &'static str,
        /// Resource, group and namespace in words.
        what: String,
        /// The authorizer's reason, possibly empty.
        reason: String,
    },
    /// The authorizer could not be asked (answered 503).
    #[error("cannot authorize user {user:?}: {error}")]
    Unavailable {
        /// User name.
        user: String,
        /// What went wrong.
        error: String,
    },
}

fn reason_suffix(reason: &str) -> String {
    if reason.is_empty() { String::new() } else { format!(": {reason}") }
}

/// Asks for a decision; returns an error text when the authorizer cannot be reached.
pub type Decide = Arc<dyn Fn(User, Attributes) -> BoxFuture<'static, Result<Decision, String>> + Send + Sync>;

/// Cache settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// How long an allow is reused.
    pub allow_ttl: Duration,
    /// How long a deny is reused.
    pub deny_ttl: Duration,
    /// Most cached decisions.
    pub max_entries: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self { allow_ttl: Duration::from_secs(300), deny_ttl: Duration::from_secs(30), max_entries: 4096 }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct CacheKey {
    user: String,
    groups: Vec<String>,
    extra: BTreeMap<String, Vec<String>>,
    attributes: Attributes,
}

/// A cached authorizer.
pub struct Authorizer {
    decide: Decide,
    config: Config,
    cache: TtlCache<CacheKey, Decision>,
}

impl std::fmt::Debug for Authorizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authorizer").field("config", &self.config).finish_non_exhaustive()
    }
}

impl Authorizer {
    /// An authorizer asking `decide` on a cache miss.
    pub fn new(decide: Decide, config: Config) -> Self {
        let cache = TtlCache::new(config.max_entries);
        Self { decide, config, cache }
    }

    /// An authorizer asking kube-apiserver with SubjectAccessReviews.
    pub fn subject_access_review(client: kube::Client, config: Config) -> Self {
        let api: kube::Api<SubjectAccessReview> = kube::Api::all(client);
        let decide: Decide = Arc::new(move |user, attributes| {
            let api = api.clone();
            Box::pin(async move {
                let review = review(&user, &attributes);
                let created = api.create(&PostParams::default(), &review).await.map_err(|e| e.to_string())?;
                Ok(decision(created.status.unwrap_or_default()))
            })
        });
        Self::new(decide, config)
    }

    /// Decides whether `user` may do `attributes`, from the cache when it can.
    pub async fn authorize(&self, user: &User, attributes: Attributes) -> Result<(), Refusal> {
        let key = CacheKey {
            user: user.name.clone(),
            groups: user.groups.clone(),
            extra: user.extra.clone(),
            attributes: attributes.clone(),
        };
        let decision = match self.cache.get(&key) {
            Some(d) => d,
            None => {
                let d = (self.decide)(user.clone(), attributes.clone())
                    .await
                    .map_err(|error| Refusal::Unavailable { user: user.name.clone(), error })?;
                self.remember(key, d.clone());
                d
            }
        };
        match decision {
            Decision::Allow => Ok(()),
            Decision::Deny(reason) => Err(Refusal::Forbidden {
                user: user.name.clone(),
                verb: attributes.verb,
                what: attributes.describe(),
                reason,
            }),
        }
    }

    fn remember(&self, key: CacheKey, decision: Decision) {
        let ttl = match decision {
            Decision::Allow => self.config.allow_ttl,
            Decision::Deny(_) => self.config.deny_ttl,
        };
        self.cache.insert(key, decision, ttl);
    }

    /// Number of cached decisions.
    pub fn cached(&self) -> usize {
        self.cache.len()
    }
}

/// The SubjectAccessReview asking whether `user` may do `attributes`.
pub fn review(user: &User, attributes: &Attributes) -> SubjectAccessReview {
    let some = |s: &str| (!s.is_empty()).then(|| s.to_owned());
    SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: Some(user.name.clone()),
            groups: (!user.groups.is_empty()).then(|| user.groups.clone()),
            extra: (!user.extra.is_empty()).then(|| user.extra.clone()),
            resource_attributes: Some(ResourceAttributes {
                verb: Some(attributes.verb.into()),
                group: Some(attributes.group.into()),
                version: Some(attributes.version.into()),
                resource: some(&attributes.resource),
                subresource: some(&attributes.subresource),
                name: some(&attributes.name),
                namespace: some(&attributes.namespace),
                ..ResourceAttributes::default()
            }),
            ..SubjectAccessReviewSpec::default()
        },
        ..SubjectAccessReview::default()
    }
}

/// The decision in a SubjectAccessReview status (an evaluation error with no allow is a deny).
pub fn decision(status: SubjectAccessReviewStatus) -> Decision {
    if status.allowed && status.denied != Some(true) {
        return Decision::Allow;
    }
    let reason = status.reason.or(status.evaluation_error).unwrap_or_default();
    Decision::Deny(reason)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// A decision function allowing `allowed`, counting its calls; `None` answers an error.
    fn mock(allowed: Option<&'static str>, calls: Arc<AtomicUsize>) -> Decide {
        Arc::new(move |user: User, _| {
            calls.fetch_add(1, Ordering::SeqCst);
            Box::pin(async move {
                match allowed {
                    None => Err("connection refused".to_owned()),
                    Some(name) if user.name == name => Ok(Decision::Allow),
                    Some(_) => Ok(Decision::Deny("no RBAC policy matched".into())),
                }
            })
        })
    }

    fn user(name: &str) -> User {
        User { name: name.into(), groups: vec!["system:authenticated".into()], ..User::default() }
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread().build().unwrap()
    }

    #[test]
    fn allow_and_deny_are_cached_per_user_and_attributes() {
        let calls = Arc::new(AtomicUsize::new(0));
        let authz = Authorizer::new(mock(Some("hpa"), calls.clone()), Config::default());
        let attrs = Attributes::external("shop", "derm_desired_replicas");
        rt().block_on(async {
            for _ in 0..3 {
                authz.authorize(&user("hpa"), attrs.clone()).await.unwrap();
            }
            assert_eq!(calls.load(Ordering::SeqCst), 1, "one review for repeated allowed requests");
            let err = authz.authorize(&user("mallory"), attrs.clone()).await.unwrap_err();
            let text = err.to_string();
            assert!(matches!(err, Refusal::Forbidden { .. }));
            assert!(text.contains("\"mallory\"") && text.contains("cannot list"), "{text}");
            assert!(text.contains("derm_desired_replicas") && text.contains("external.metrics.k8s.io"), "{text}");
            assert!(text.contains("no RBAC policy matched"), "{text}");
            authz.authorize(&user("mallory"), attrs.clone()).await.unwrap_err();
            assert_eq!(calls.load(Ordering::SeqCst), 2, "the deny is cached too");
            authz.authorize(&user("hpa"), Attributes::external("other", "derm_desired_replicas")).await.unwrap();
            assert_eq!(calls.load(Ordering::SeqCst), 3, "another namespace is another question");
        });
    }

    #[test]
    fn expired_decisions_are_asked_again() {
        let calls = Arc::new(AtomicUsize::new(0));
        let config = Config { allow_ttl: Duration::ZERO, deny_ttl: Duration::ZERO, max_entries: 8 };
        let authz = Authorizer::new(mock(Some("hpa"), calls.clone()), config);
        rt().block_on(async {
            for _ in 0..2 {
                authz.authorize(&user("hpa"), Attributes::external("shop", "m")).await.unwrap();
            }
        });
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn errors_are_unavailable_and_not_cached() {
        let calls = Arc::new(AtomicUsize::new(0));
        let authz = Authorizer::new(mock(None, calls.clone()), Config::default());
        rt().block_on(async {
            for _ in 0..2 {
                let err = authz.authorize(&user("hpa"), Attributes::external("shop", "m")).await.unwrap_err();
                assert!(matches!(&err, Refusal::Unavailable { error, .. } if error == "connection refused"), "{err}");
            }
        });
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        assert_eq!(authz.cached(), 0);
    }

    #[test]
    fn the_cache_is_bounded() {
        let calls = Arc::new(AtomicUsize::new(0));
        let config = Config { max_entries: 4, ..Config::default() };
        let authz = Authorizer::new(mock(Some("hpa"), calls), config);
        rt().block_on(async {
            for i in 0..10 {
                let _ = authz.authorize(&user(&format!("u{i}")), Attributes::external("shop", "m")).await;
                assert!(authz.cached() <= 4);
            }
        });
    }

    #[test]
    fn reviews_carry_the_user_and_kube_apiserver_attributes() {
        let mut u = user("system:serviceaccount:kube-system:horizontal-pod-autoscaler");
        u.extra.insert("scopes".into(), vec!["a".into()]);
        let r = review(&u, &Attributes::object("shop", "deployments.apps", "cart", "derm_desired_replicas"));
        assert_eq!(r.spec.user.as_deref(), Some("system:serviceaccount:kube-system:horizontal-pod-autoscaler"));
        assert_eq!(r.spec.extra.unwrap()["scopes"], ["a"]);
        let a = r.spec.resource_attributes.unwrap();
        assert_eq!(a.verb.as_deref(), Some("get"));
        assert_eq!(a.group.as_deref(), Some("custom.metrics.k8s.io"));
        assert_eq!(a.resource.as_deref(), Some("deployments.apps"));
        assert_eq!(a.subresource.as_deref(), Some("derm_desired_replicas"));
        assert_eq!(a.name.as_deref(), Some("cart"));
        let e = review(&u, &Attributes::external("shop", "derm_desired_replicas")).spec.resource_attributes.unwrap();
        assert_eq!((e.verb.as_deref(), e.name), (Some("list"), None));
    }

    #[test]
    fn status_decisions() {
        let allowed = SubjectAccessReviewStatus { allowed: true, ..SubjectAccessReviewStatus::default() };
        assert_eq!(decision(allowed), Decision::Allow);
        let no_opinion = SubjectAccessReviewStatus {
            allowed: false,
            reason: Some("nope".into()),
            ..SubjectAccessReviewStatus::default()
        };
        assert_eq!(decision(no_opinion), Decision::Deny("nope".into()));
        let contradictory = SubjectAccessReviewStatus { allowed: true, denied: Some(true), ..Default::default() };
        assert!(matches!(decision(contradictory), Decision::Deny(_)));
    }
}
