//! The trust from ConfigMap kube-system/extension-apiserver-authentication, watched.
//!
//! kube-apiserver publishes there what an aggregated server needs to authenticate it:
//! `requestheader-client-ca-file` (PEM), `requestheader-allowed-names`,
//! `requestheader-username-headers`, `requestheader-group-headers`,
//! `requestheader-extra-headers-prefix` (JSON arrays of strings; every header named counts)
//! and `client-ca-file` (PEM, optional: certificates signed by it name users directly). A
//! missing header list means Kubernetes' default (`X-Remote-User`, ...). [`Reloader::apply`]
//! swaps a new [`Trust`] in when the data changes; a malformed ConfigMap (bad PEM, bad JSON)
//! or a deleted one keeps the last good trust, logged and counted
//! (`derm_adapter_reloads_total{source="AuthenticationConfigMap",result="Rejected"}`).

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};

use super::{ClientCa, RequestHeader, SharedTrust, Trust};
use crate::admin::{ReloadMetrics, ReloadResult, ReloadSource};

/// Namespace of the ConfigMap.
pub const NAMESPACE: &str = "kube-system";
/// Name of the ConfigMap.
pub const NAME: &str = "extension-apiserver-authentication";

/// A field of the ConfigMap that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A header or name list that is not a JSON array of strings.
    #[error("{NAMESPACE}/{NAME} key {key}: {reason}")]
    List {
        /// The key.
        key: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// A CA bundle that does not parse.
    #[error("{NAMESPACE}/{NAME} key {key}")]
    Ca {
        /// The key.
        key: &'static str,
        /// Why.
        #[source]
        source: super::Error,
    },
}

fn list(data: &BTreeMap<String, String>, key: &'static str, default: &[&str]) -> Result<Vec<String>, Error> {
    let Some(text) = data.get(key).filter(|t| !t.trim().is_empty()) else {
        return Ok(default.iter().map(|s| (*s).to_owned()).collect());
    };
    let items: Vec<String> = serde_json::from_str(text)
        .map_err(|e| Error::List { key, reason: format!("not a JSON array of strings: {e}") })?;
    if items.iter().any(|i| i.trim().is_empty()) {
        return Err(Error::List { key, reason: "empty entry".into() });
    }
    Ok(if items.is_empty() { default.iter().map(|s| (*s).to_owned()).collect() } else { items })
}

fn lower(items: Vec<String>) -> Vec<String> {
    items.into_iter().map(|i| i.to_ascii_lowercase()).collect()
}

fn ca(data: &BTreeMap<String, String>, key: &'static str) -> Result<Option<ClientCa>, Error> {
    match data.get(key).filter(|t| !t.trim().is_empty()) {
        Some(pem) => ClientCa::from_pem(pem.as_bytes()).map(Some).map_err(|source| Error::Ca { key, source }),
        None => Ok(None),
    }
}

/// The trust a ConfigMap's data describes.
pub fn trust_from(data: &BTreeMap<String, String>) -> Result<Trust, Error> {
    let request_header = match ca(data, "requestheader-client-ca-file")? {
        Some(ca) => Some(RequestHeader {
            ca,
            allowed_names: list(data, "requestheader-allowed-names", &[])?,
            username_headers: lower(list(data, "requestheader-username-headers", &["X-Remote-User"])?),
            group_headers: lower(list(data, "requestheader-group-headers", &["X-Remote-Group"])?),
            extra_prefixes: lower(list(data, "requestheader-extra-headers-prefix", &["X-Remote-Extra-"])?),
        }),
        None => None,
    };
    Ok(Trust::new(request_header, ca(data, "client-ca-file")?))
}

/// Applies ConfigMap contents to the shared trust, keeping the last good one.
#[derive(Debug)]
pub struct Reloader {
    trust: SharedTrust,
    metrics: ReloadMetrics,
    last: Option<BTreeMap<String, String>>,
}

impl Reloader {
    /// A reloader of `trust`, which already holds what `initial` (the data it was built from) says.
    pub fn new(trust: SharedTrust, metrics: ReloadMetrics, initial: Option<BTreeMap<String, String>>) -> Self {
        Self { trust, metrics, last: initial }
    }

    /// Swaps in the trust `data` describes if it changed and is valid. Returns whether it did.
    pub fn apply(&mut self, data: BTreeMap<String, String>) -> bool {
        if self.last.as_ref() == Some(&data) {
            return false;
        }
        match trust_from(&data) {
            Ok(trust) => {
                if !trust.has_ca() {
                    tracing::warn!("{NAMESPACE}/{NAME} has no CA: only bearer tokens can authenticate");
                }
                // Counted before it is visible: whoever observes the new trust also sees the count.
                self.metrics.record(ReloadSource::AuthenticationConfigMap, ReloadResult::Applied);
                self.trust.store(Arc::new(trust));
                self.last = Some(data);
                tracing::info!("{NAMESPACE}/{NAME} changed: new trust applied");
                true
            }
            Err(error) => {
                self.metrics.record(ReloadSource::AuthenticationConfigMap, ReloadResult::Rejected);
                tracing::warn!(error = %error_chain(&error), "{NAMESPACE}/{NAME} rejected; keeping the last good trust");
                false
            }
        }
    }
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Reads the ConfigMap once (at start: a cluster without it, or no permission, fails the start).
pub async fn load(client: Client) -> anyhow::Result<(Trust, BTreeMap<String, String>)> {
    use anyhow::Context as _;
    let api: Api<ConfigMap> = Api::namespaced(client, NAMESPACE);
    let cm = api.get(NAME).await.with_context(|| {
        format!(
            "cannot read ConfigMap {NAMESPACE}/{NAME} (bind Role {NAMESPACE}/extension-apiserver-authentication-reader \
             to the adapter, or pass --requestheader-client-ca)"
        )
    })?;
    let data = cm.data.unwrap_or_default();
    let trust = trust_from(&data)?;
    Ok((trust, data))
}

/// Watches the ConfigMap and applies every change; runs until dropped (errors retried with backoff).
pub async fn watch(client: Client, mut reloader: Reloader) {
    let api: Api<ConfigMap> = Api::namespaced(client, NAMESPACE);
    let config = watcher::Config::default().fields(&format!("metadata.name={NAME}"));
    let stream = watcher(api, config).default_backoff();
    let mut stream = std::pin::pin!(stream);
    while let Some(event) = stream.next().await {
        match event {
            Ok(watcher::Event::Apply(cm) | watcher::Event::InitApply(cm)) => {
                reloader.apply(cm.data.unwrap_or_default());
            }
            Ok(watcher::Event::Delete(_)) => {
                reloader.metrics.record(ReloadSource::AuthenticationConfigMap, ReloadResult::Rejected);
                tracing::warn!("{NAMESPACE}/{NAME} deleted; keeping the last good trust");
            }
            Ok(watcher::Event::Init | watcher::Event::InitDone) => {}
            Err(e) => tracing::warn!(error = %e, "{NAMESPACE}/{NAME} watch error; retrying with backoff"),
        }
    }
}

#[cfg(test)]
mod tests {
    use rcgen::{CertificateParams, DnType, KeyPair};

    use super::*;
    use crate::auth::Verdict;

    fn ca_pem(name: &str) -> (String, crate::test_pki::Issuer) {
        let issuer = crate::test_pki::ca(name);
        (issuer.pem(), issuer)
    }

    fn data(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn kube_apiserver_data_is_read() {
        let (front, _) = ca_pem("front-proxy-ca");
        let (cluster, _) = ca_pem("kubernetes");
        let trust = trust_from(&data(&[
            ("requestheader-client-ca-file", &front),
            ("requestheader-allowed-names", r#"["front-proxy-client"]"#),
            ("requestheader-username-headers", r#"["X-Remote-User"]"#),
            ("requestheader-group-headers", r#"["X-Remote-Group"]"#),
            ("requestheader-extra-headers-prefix", r#"["X-Remote-Extra-"]"#),
            ("client-ca-file", &cluster),
        ]))
        .unwrap();
        let rh = trust.request_header.as_ref().unwrap();
        assert_eq!(rh.allowed_names, ["front-proxy-client"]);
        assert_eq!(rh.username_headers, ["x-remote-user"]);
        assert_eq!(rh.extra_prefixes, ["x-remote-extra-"]);
        assert!(trust.client_ca.is_some());

        let defaults = trust_from(&data(&[("requestheader-client-ca-file", &front)])).unwrap();
        let rh = defaults.request_header.unwrap();
        assert!(rh.allowed_names.is_empty());
        assert_eq!(rh.group_headers, ["x-remote-group"]);
        assert!(trust_from(&BTreeMap::new()).unwrap().request_header.is_none());
    }

    #[test]
    fn malformed_fields_are_named() {
        let (front, _) = ca_pem("front-proxy-ca");
        let err = trust_from(&data(&[("requestheader-client-ca-file", "garbage")])).unwrap_err();
        assert!(err.to_string().contains("requestheader-client-ca-file"), "{err}");
        let err = trust_from(&data(&[
            ("requestheader-client-ca-file", &front),
            ("requestheader-allowed-names", "front-proxy-client"),
        ]))
        .unwrap_err();
        assert!(err.to_string().contains("requestheader-allowed-names"), "{err}");
        let err =
            trust_from(&data(&[("client-ca-file", "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")]));
        assert!(err.unwrap_err().to_string().contains("client-ca-file"));
    }

    #[test]
    fn a_bad_update_keeps_the_last_good_trust_and_is_counted() {
        let (old_pem, old) = ca_pem("old");
        let (new_pem, new) = ca_pem("new");
        let first = data(&[("requestheader-client-ca-file", &old_pem)]);
        let trust: SharedTrust = Arc::new(arc_swap::ArcSwap::from_pointee(trust_from(&first).unwrap()));
        let metrics = ReloadMetrics::default();
        let mut reloader = Reloader::new(trust.clone(), metrics.clone(), Some(first.clone()));
        let chain = |issuer: &crate::test_pki::Issuer| {
            let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
            params.distinguished_name.push(DnType::CommonName, "front-proxy-client");
            vec![params.signed_by(&KeyPair::generate().unwrap(), issuer).unwrap().der().clone()]
        };
        assert!(!reloader.apply(first), "unchanged data is not a reload");
        let generation = trust.load().generation;

        assert!(
            !reloader.apply(data(&[("requestheader-client-ca-file", &new_pem), ("requestheader-allowed-names", "[")]))
        );
        assert_eq!(trust.load().generation, generation, "the malformed update was not applied");
        assert_eq!(metrics.count(ReloadSource::AuthenticationConfigMap, ReloadResult::Rejected), 1);

        assert!(reloader.apply(data(&[("requestheader-client-ca-file", &new_pem)])));
        assert_eq!(metrics.count(ReloadSource::AuthenticationConfigMap, ReloadResult::Applied), 1);
        assert_eq!(trust.load().classify(&chain(&new)), Verdict::RequestHeader);
        assert_eq!(trust.load().classify(&chain(&old)), Verdict::Untrusted);
    }
}
