//! Leader election on a `coordination.k8s.io/v1` Lease, so that one controller writes status.
//!
//! The usual protocol: whoever holds an unexpired Lease renews it; anyone may take it once
//! `renewTime + leaseDurationSeconds` has passed. Every write carries the Lease's
//! `resourceVersion`, so two candidates racing for an expired Lease cannot both win (the loser
//! gets 409 Conflict and stays a follower).

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease as LeaseObject, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, PostParams};
use kube::{Client, Error};

/// One candidate for one Lease.
#[derive(Debug, Clone)]
pub struct Lease {
    api: Api<LeaseObject>,
    name: String,
    identity: String,
    duration: Duration,
}

impl Lease {
    /// Candidate `identity` for Lease `namespace/name`, held for `duration` without renewal.
    pub fn new(client: Client, namespace: &str, name: &str, identity: &str, duration: Duration) -> Self {
        Lease {
            api: Api::namespaced(client, namespace),
            name: name.to_owned(),
            identity: identity.to_owned(),
            duration,
        }
    }

    /// Takes or renews the Lease; `Ok(true)` while this candidate leads.
    pub async fn acquire_or_renew(&self) -> Result<bool, Error> {
        let now = Timestamp::now();
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            let lease = LeaseObject {
                metadata: ObjectMeta { name: Some(self.name.clone()), ..ObjectMeta::default() },
                spec: Some(self.spec(now, now, 0)),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(Error::Api(e)) if e.code == 409 => Ok(false),
                Err(e) => Err(e),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.as_deref();
        let mine = holder == Some(self.identity.as_str());
        if !mine && !expired(&spec, now) {
            return Ok(false);
        }
        let acquired = if mine { spec.acquire_time.map_or(now, |t| t.0) } else { now };
        let transitions = spec.lease_transitions.unwrap_or(0) + i32::from(!mine);
        lease.spec = Some(self.spec(now, acquired, transitions));
        match self.api.replace(&self.name, &PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            Err(Error::Api(e)) if e.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn spec(&self, now: Timestamp, acquired: Timestamp, transitions: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(self.duration.as_secs().max(1) as i32),
            acquire_time: Some(MicroTime(acquired)),
            renew_time: Some(MicroTime(now)),
            lease_transitions: Some(transitions),
            ..LeaseSpec::default()
        }
    }
}

/// Whether a Lease's holder has stopped renewing (or there is none).
fn expired(spec: &LeaseSpec, now: Timestamp) -> bool {
    let (Some(renewed), Some(secs)) = (&spec.renew_time, spec.lease_duration_seconds) else {
        return true;
    };
    spec.holder_identity.as_deref().is_none_or(str::is_empty)
        || renewed.0 + SignedDuration::from_secs(i64::from(secs)) < now
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(holder: Option<&str>, renewed_secs_ago: i64, duration: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: holder.map(str::to_owned),
            lease_duration_seconds: Some(duration),
            renew_time: Some(MicroTime(Timestamp::now() - SignedDuration::from_secs(renewed_secs_ago))),
            ..LeaseSpec::default()
        }
    }

    #[test]
    fn expiry() {
        let now = Timestamp::now();
        assert!(!expired(&spec(Some("a"), 5, 15), now));
        assert!(expired(&spec(Some("a"), 20, 15), now));
        assert!(expired(&spec(None, 0, 15), now));
        assert!(expired(&spec(Some(""), 0, 15), now));
        assert!(expired(&LeaseSpec::default(), now));
    }
}
