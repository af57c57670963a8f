//! Which refitted profiles replace the ones in use.
//!
//! A refit on a few unusual windows can move a service's line far: the simulator saw refits
//! on the overload windows after a degraded-mode exit flatten a line into one 3-6x slower at
//! the loads planned for ([`derm_core::profile::plausible_refit`]). The adapter has no
//! profiling phase to hold refits against, so it holds them against the profile in use: a
//! refit that jumps beyond the plausible range is held back, and replaces the profile only
//! when [`CONFIRM`] refits in a row jump too (the service really changed, e.g. a new release).
//! A transient episode then never moves a profile; a lasting change does, [`CONFIRM`] refits
//! later.
//!
//! The trust region's base (`w_max_rps` of the profile in use, see
//! [`derm_core::optimize::trust`]) survives a plausible refit and grows only through the
//! refit's levels that the profile in use predicted ([`trust::carry`]): taken as is,
//! it followed each refit's highest level, down when the refit's samples are only the newest
//! (after a restart) and up through an overload episode's saturated throughput. A new
//! service, and a confirmed jump (the service changed), take the refit's own.

use std::collections::BTreeMap;

use derm_core::optimize::trust;
use derm_core::profile::{Profiles, plausible_refit};

/// Refits in a row that must jump away from the profile in use before the newest replaces it.
pub const CONFIRM: u32 = 3;

/// Services whose last refits jumped, and how many in a row.
#[derive(Debug, Default, Clone)]
pub struct Refits {
    jumps: BTreeMap<String, u32>,
}

impl Refits {
    /// Merges `fitted` into `current`. A service without a fitted profile in use takes the
    /// refit; a fallback line never replaces a fitted profile; a plausible refit replaces it;
    /// a jump is held until it is confirmed.
    pub fn merge(&mut self, current: &mut Profiles, fitted: Profiles) {
        for (svc, p) in fitted.services {
            let Some(old) = current.services.get(&svc).filter(|old| !old.fallback) else {
                self.jumps.remove(&svc);
                current.services.insert(svc, p);
                continue;
            };
            if p.fallback {
                continue;
            }
            if plausible_refit(old, &p) {
                self.jumps.remove(&svc);
                let carried = trust::carry(old, p);
                current.services.insert(svc, carried);
                continue;
            }
            let n = self.jumps.get(&svc).copied().unwrap_or(0) + 1;
            if n >= CONFIRM {
                tracing::info!(service = %svc, refits = n, "profile moved beyond the plausible range in {n} refits in a row; taking the newest");
                self.jumps.remove(&svc);
                current.services.insert(svc, p);
            } else {
                tracing::warn!(service = %svc, refits = n, "refit far from the profile in use; held until {CONFIRM} in a row");
                self.jumps.insert(svc, n);
            }
        }
    }

    /// Services whose newest refit is held back, with the jumps in a row so far.
    pub fn held(&self) -> impl Iterator<Item = (&str, u32)> {
        self.jumps.iter().map(|(s, n)| (s.as_str(), *n))
    }
}

#[cfg(test)]
mod tests {
    use derm_core::profile::Profile;

    use super::*;

    /// `ts-config-service`'s line in the simulator (see the module docs).
    fn line(a: f64, b: f64) -> Profile {
        Profile::line(0.3, a, b, 34.1)
    }

    fn profiles(p: &[(&str, Profile)]) -> Profiles {
        Profiles { services: p.iter().map(|(s, p)| ((*s).to_owned(), p.clone())).collect() }
    }

    #[test]
    fn a_jump_is_held_until_confirmed() {
        let (base, flat) = (line(-0.00091, 0.048), line(-0.00026, 0.0098));
        let mut current = profiles(&[("config", base.clone())]);
        let mut refits = Refits::default();
        for n in 1..CONFIRM {
            refits.merge(&mut current, profiles(&[("config", flat.clone())]));
            assert_eq!(refits.held().collect::<Vec<_>>(), vec![("config", n)]);
            assert_eq!(current.services["config"], base, "held after {n} jumps");
        }
        refits.merge(&mut current, profiles(&[("config", flat.clone())]));
        assert_eq!(current.services["config"], flat, "confirmed");
        assert_eq!(refits.held().count(), 0);
    }

    #[test]
    fn a_plausible_refit_in_between_resets_the_count() {
        let (base, flat, near) = (line(-0.00091, 0.048), line(-0.00026, 0.0098), line(-0.00083, 0.0452));
        let mut current = profiles(&[("config", base)]);
        let mut refits = Refits::default();
        for _ in 0..CONFIRM - 1 {
            refits.merge(&mut current, profiles(&[("config", flat.clone())]));
        }
        refits.merge(&mut current, profiles(&[("config", near.clone())]));
        assert_eq!(current.services["config"], near);
        refits.merge(&mut current, profiles(&[("config", flat)]));
        assert_eq!(refits.held().collect::<Vec<_>>(), vec![("config", 1)], "counting starts again");
        assert_eq!(current.services["config"], near);
    }

    #[test]
    fn fallbacks_and_new_services() {
        let base = line(-0.00091, 0.048);
        let fallback = Profile { fallback: true, ..line(-0.0001, 0.01) };
        let mut current = profiles(&[("config", base.clone()), ("seat", fallback.clone())]);
        let mut refits = Refits::default();
        // A fallback line never replaces a fit; a fit replaces a fallback however far it is;
        // a new service takes its first profile.
        refits.merge(
            &mut current,
            profiles(&[("config", fallback.clone()), ("seat", base.clone()), ("new", fallback.clone())]),
        );
        assert_eq!(refits.held().count(), 0);
        assert_eq!(current.services["config"], base);
        assert_eq!(current.services["seat"], base);
        assert_eq!(current.services["new"], fallback);
    }

    #[test]
    fn the_trusted_load_grows_where_predicted_and_never_shrinks() {
        use derm_core::profile::Level;
        let level = |w_rps: f64, rate_per_ms: f64| Level { w_rps, samples: 300, rate_per_ms, ks: 0.05 };
        let refit = |top: &[Level]| {
            let mut fit = vec![level(10.0, 0.039), level(20.0, 0.030)];
            fit.extend_from_slice(top);
            let w_max_rps = fit.iter().map(|l| l.w_rps).fold(0.0, f64::max);
            Profile { fit, ..Profile::line(0.3, -0.00091, 0.048, w_max_rps) }
        };
        let mut current = profiles(&[("config", line(-0.00091, 0.048))]);
        let mut refits = Refits::default();
        // 37 rps measured at 0.0135/ms, predicted 0.0143: the region's base moves there.
        refits.merge(&mut current, profiles(&[("config", refit(&[level(37.0, 0.0135)]))]));
        assert_eq!(current.services["config"].w_max_rps, 37.0);
        // An overload episode up to 45 rps (its requests took minutes): the line is refitted,
        // the base stays.
        refits.merge(&mut current, profiles(&[("config", refit(&[level(37.0, 0.0135), level(45.0, 0.0004)]))]));
        assert_eq!(current.services["config"].w_max_rps, 37.0);
        assert_eq!(current.services["config"].fit.len(), 4, "the refit itself was taken");
        // Only low-load samples since a restart: the base does not shrink.
        refits.merge(&mut current, profiles(&[("config", refit(&[]))]));
        assert_eq!(current.services["config"].w_max_rps, 37.0);
    }
}
