//! The entry load to plan the next interval for, shared by the simulator's profile-based
//! policies and the adapter's online loop so both plan on the same forecast.

/// Intervals of entry rate the load trend is fitted on.
pub const TREND_POINTS: usize = 4;

/// Load to plan the next interval for, from per-interval entry rates (oldest first, one per
/// interval, no gaps): the last rate plus its rising trend (least-squares slope over the last
/// [`TREND_POINTS`] rates) carried to the end of the next interval, 1.5 intervals after the
/// last rate's midpoint. A falling trend is not extrapolated: the plan for a lower load comes
/// from the measured rate itself, so a forecast never scales below what was measured.
pub fn forecast(loads: &[f64]) -> f64 {
    let loads = &loads[loads.len().saturating_sub(TREND_POINTS)..];
    let Some(&last) = loads.last() else { return 0.0 };
    last + slope(loads).max(0.0) * 1.5
}

/// Least-squares slope of `loads` per interval (0 for fewer than two).
pub fn slope(loads: &[f64]) -> f64 {
    if loads.len() < 2 {
        return 0.0;
    }
    let n = loads.len() as f64;
    let mean_x = (n - 1.0) / 2.0;
    let mean_y = loads.iter().sum::<f64>() / n;
    let (mut sxy, mut sxx) = (0.0, 0.0);
    for (i, y) in loads.iter().enumerate() {
        let dx = i as f64 - mean_x;
        sxy += dx * (y - mean_y);
        sxx += dx * dx;
    }
    sxy / sxx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extrapolates_a_rising_load_only() {
        // Rising by 10 per interval: the last rate (40) plus 1.5 intervals of slope.
        assert!((forecast(&[10.0, 20.0, 30.0, 40.0]) - 55.0).abs() < 1e-9);
        // Falling or flat: the last rate itself.
        assert_eq!(forecast(&[40.0, 30.0, 20.0, 10.0]), 10.0);
        assert_eq!(forecast(&[25.0]), 25.0);
        assert_eq!(forecast(&[]), 0.0);
    }

    #[test]
    fn fits_only_the_last_trend_points() {
        // An old spike outside the last four rates does not flatten the fitted rise.
        assert!((forecast(&[500.0, 10.0, 20.0, 30.0, 40.0]) - 55.0).abs() < 1e-9);
    }
}
