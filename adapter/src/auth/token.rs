//! Bearer tokens authenticated by kube-apiserver's TokenReview (authentication.k8s.io/v1).
//!
//! A caller without a trusted client certificate (e.g. a ServiceAccount talking to the adapter
//! directly) sends `Authorization: Bearer <token>`; the adapter asks kube-apiserver who that is.
//! Answers are cached per token digest (SHA-256; the token itself is not kept): authenticated
//! for [`Config::allow_ttl`], unauthenticated for [`Config::deny_ttl`] (both 10 s by default,
//! as kube's delegating authenticator), in a bounded [`TtlCache`]. A review that cannot be made
//! is [`Rejection::Unavailable`] (503) and is not cached.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use http::HeaderMap;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec, TokenReviewStatus};
use kube::api::PostParams;
use sha2::{Digest, Sha256};

use super::{Rejection, User};
use crate::cache::TtlCache;

/// kube-apiserver's answer about a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenDecision {
    /// The token names this user.
    Authenticated(User),
    /// Not a valid token, with kube-apiserver's error text if it gave one.
    Unauthenticated(String),
}

/// Reviews a token; returns an error text when the review cannot be made.
pub type Review = Arc<dyn Fn(String) -> BoxFuture<'static, Result<TokenDecision, String>> + Send + Sync>;

/// Cache settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// How long an authenticated answer is reused.
    pub allow_ttl: Duration,
    /// How long an unauthenticated answer is reused.
    pub deny_ttl: Duration,
    /// Most cached answers.
    pub max_entries: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self { allow_ttl: Duration::from_secs(10), deny_ttl: Duration::from_secs(10), max_entries: 4096 }
    }
}

/// A cached TokenReview authenticator.
pub struct TokenAuthenticator {
    review: Review,
    config: Config,
    cache: TtlCache<[u8; 32], TokenDecision>,
}

impl std::fmt::Debug for TokenAuthenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenAuthenticator").field("config", &self.config).finish_non_exhaustive()
    }
}

impl TokenAuthenticator {
    /// An authenticator asking `review` on a cache miss.
    pub fn new(review: Review, config: Config) -> Self {
        let cache = TtlCache::new(config.max_entries);
        Self { review, config, cache }
    }

    /// An authenticator asking kube-apiserver with TokenReviews (needs `create tokenreviews`,
    /// e.g. the `system:auth-delegator` ClusterRole).
    pub fn token_review(client: kube::Client, config: Config) -> Self {
        let api: kube::Api<TokenReview> = kube::Api::all(client);
        let review: Review = Arc::new(move |token| {
            let api = api.clone();
            Box::pin(async move {
                let request = TokenReview {
                    spec: TokenReviewSpec { token: Some(token), ..TokenReviewSpec::default() },
                    ..TokenReview::default()
                };
                let created = api.create(&PostParams::default(), &request).await.map_err(|e| e.to_string())?;
                Ok(decision(created.status.unwrap_or_default()))
            })
        });
        Self::new(review, config)
    }

    /// Who `token` is, from the cache when it can.
    pub async fn authenticate(&self, token: &str) -> Result<User, Rejection> {
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let decision = match self.cache.get(&key) {
            Some(d) => d,
            None => {
                let d = (self.review)(token.to_owned()).await.map_err(Rejection::Unavailable)?;
                let ttl = match d {
                    TokenDecision::Authenticated(_) => self.config.allow_ttl,
                    TokenDecision::Unauthenticated(_) => self.config.deny_ttl,
                };
                self.cache.insert(key, d.clone(), ttl);
                d
            }
        };
        match decision {
            TokenDecision::Authenticated(user) => Ok(user),
            TokenDecision::Unauthenticated(reason) => Err(Rejection::InvalidToken(reason)),
        }
    }

    /// Number of cached answers.
    pub fn cached(&self) -> usize {
        self.cache.len()
    }
}

/// The answer in a TokenReview status (authenticated without a user name is not authenticated).
pub fn decision(status: TokenReviewStatus) -> TokenDecision {
    match (status.authenticated, status.user) {
        (Some(true), Some(info)) if info.username.as_deref().is_some_and(|n| !n.is_empty()) => {
            TokenDecision::Authenticated(User {
                name: info.username.unwrap_or_default(),
                groups: info.groups.unwrap_or_default(),
                extra: info.extra.unwrap_or_default(),
            })
        }
        _ => TokenDecision::Unauthenticated(status.error.unwrap_or_default()),
    }
}

/// The token of an `Authorization: Bearer <token>` header, if there is one.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use k8s_openapi::api::authentication::v1::UserInfo;

    use super::*;

    /// A review knowing token `good` as `system:serviceaccount:shop:hpa`; `down` cannot be
    /// reviewed; every call counted.
    fn mock(calls: Arc<AtomicUsize>) -> Review {
        Arc::new(move |token: String| {
            calls.fetch_add(1, Ordering::SeqCst);
            Box::pin(async move {
                match token.as_str() {
                    "good" => Ok(TokenDecision::Authenticated(User {
                        name: "system:serviceaccount:shop:hpa".into(),
                        groups: vec!["system:serviceaccounts".into()],
                        ..User::default()
                    })),
                    "down" => Err("connection refused".into()),
                    _ => Ok(TokenDecision::Unauthenticated("token expired".into())),
                }
            })
        })
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread().build().unwrap()
    }

    #[test]
    fn answers_are_cached_and_errors_are_not() {
        let calls = Arc::new(AtomicUsize::new(0));
        let tokens = TokenAuthenticator::new(mock(calls.clone()), Config::default());
        rt().block_on(async {
            for _ in 0..3 {
                assert_eq!(tokens.authenticate("good").await.unwrap().name, "system:serviceaccount:shop:hpa");
            }
            assert_eq!(calls.load(Ordering::SeqCst), 1, "one review for a repeated token");
            for _ in 0..2 {
                assert_eq!(tokens.authenticate("stale").await, Err(Rejection::InvalidToken("token expired".into())));
            }
            assert_eq!(calls.load(Ordering::SeqCst), 2, "the negative answer is cached too");
            for _ in 0..2 {
                let err = tokens.authenticate("down").await.unwrap_err();
                assert_eq!(err, Rejection::Unavailable("connection refused".into()));
            }
            assert_eq!(calls.load(Ordering::SeqCst), 4, "errors are asked again");
            assert_eq!(tokens.cached(), 2);
        });
    }

    #[test]
    fn expired_answers_are_asked_again_and_the_cache_is_bounded() {
        let calls = Arc::new(AtomicUsize::new(0));
        let config = Config { allow_ttl: Duration::ZERO, deny_ttl: Duration::from_secs(60), max_entries: 3 };
        let tokens = TokenAuthenticator::new(mock(calls.clone()), config);
        rt().block_on(async {
            tokens.authenticate("good").await.unwrap();
            tokens.authenticate("good").await.unwrap();
            assert_eq!(calls.load(Ordering::SeqCst), 2);
            for i in 0..10 {
                let _ = tokens.authenticate(&format!("t{i}")).await;
                assert!(tokens.cached() <= 3);
            }
        });
    }

    #[test]
    fn statuses_and_headers() {
        let ok = TokenReviewStatus {
            authenticated: Some(true),
            user: Some(UserInfo {
                username: Some("jane".into()),
                groups: Some(vec!["g".into()]),
                ..UserInfo::default()
            }),
            ..TokenReviewStatus::default()
        };
        assert!(matches!(decision(ok), TokenDecision::Authenticated(u) if u.name == "jane" && u.groups == ["g"]));
        let nameless =
            TokenReviewStatus { authenticated: Some(true), user: Some(UserInfo::default()), ..Default::default() };
        assert!(matches!(decision(nameless), TokenDecision::Unauthenticated(_)));
        let no = TokenReviewStatus { error: Some("invalid".into()), ..TokenReviewStatus::default() };
        assert_eq!(decision(no), TokenDecision::Unauthenticated("invalid".into()));

        let mut h = HeaderMap::new();
        assert_eq!(bearer(&h), None);
        h.insert(http::header::AUTHORIZATION, http::HeaderValue::from_static("Bearer abc"));
        assert_eq!(bearer(&h), Some("abc"));
        h.insert(http::header::AUTHORIZATION, http::HeaderValue::from_static("bearer  xyz "));
        assert_eq!(bearer(&h), Some("xyz"));
        h.insert(http::header::AUTHORIZATION, http::HeaderValue::from_static("Basic abc"));
        assert_eq!(bearer(&h), None);
        h.insert(http::header::AUTHORIZATION, http::HeaderValue::from_static("Bearer "));
        assert_eq!(bearer(&h), None);
    }
}
