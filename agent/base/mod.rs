//! Leaf helpers every layer may use (backoff, secrets, diagnostics, log
//! throttling); this module imports nothing from the rest of the crate.

pub mod backoff;
pub mod diag;
pub mod secret;
pub mod throttle;

/// Seconds as a `Duration`, never panicking: NaN and negatives are zero,
/// infinite or huge values are capped at a year. (`Duration::from_secs_f64`
/// panics on them; config checks refuse them, this is the second line.)
pub fn secs(v: f64) -> std::time::Duration {
    const YEAR: f64 = 365.0 * 86_400.0;
    if v.is_nan() || v <= 0.0 {
        std::time::Duration::ZERO
    } else {
        std::time::Duration::from_secs_f64(v.min(YEAR))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn secs_never_panics() {
        use std::time::Duration;
        assert_eq!(super::secs(f64::NAN), Duration::ZERO);
        assert_eq!(super::secs(-3.0), Duration::ZERO);
        assert_eq!(
            super::secs(f64::INFINITY),
            Duration::from_secs(365 * 86_400)
        );
        assert_eq!(super::secs(1e19), Duration::from_secs(365 * 86_400));
        assert_eq!(super::secs(1.5), Duration::from_millis(1500));
    }
}
