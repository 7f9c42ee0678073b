//! The one wall clock: every reading of the time of day goes through here, so tests and
//! tools (`agentgate eval --at`) can reason about it and `clippy.toml` can forbid the rest.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The time of day now.
#[allow(clippy::disallowed_methods)] // the one place that reads the wall clock
pub fn now() -> SystemTime {
    SystemTime::now()
}

/// Seconds since the Unix epoch of `t` (0 before it).
pub fn unix_secs(t: SystemTime) -> u64 {
    since_epoch(t).as_secs()
}

/// Nanoseconds since the Unix epoch of `t` (0 before it; saturating far in the future).
pub fn unix_nanos(t: SystemTime) -> u64 {
    u64::try_from(since_epoch(t).as_nanos()).unwrap_or(u64::MAX)
}

/// Seconds since the Unix epoch, now.
pub fn unix_now() -> u64 {
    unix_secs(now())
}

/// The monotonic instant at which the wall clock will read `secs` since the Unix epoch
/// (now, if it already has), for sleeping until then. A wall clock set later moves the
/// time of day, not the instant.
pub fn instant_at_unix_secs(secs: u64) -> Instant {
    let (wall, mono) = (now(), Instant::now());
    let at = UNIX_EPOCH + Duration::from_secs(secs);
    mono + at.duration_since(wall).unwrap_or_default()
}

fn since_epoch(t: SystemTime) -> Duration {
    t.duration_since(UNIX_EPOCH).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readings_are_since_the_epoch_and_never_negative() {
        let t = UNIX_EPOCH + Duration::from_millis(1_500);
        assert_eq!(unix_secs(t), 1);
        assert_eq!(unix_nanos(t), 1_500_000_000);
        assert_eq!(unix_secs(UNIX_EPOCH - Duration::from_secs(5)), 0);
        assert!(unix_now() > 1_767_225_600);
    }

    #[test]
    fn a_unix_second_becomes_the_instant_the_clock_reaches_it() {
        let start = Instant::now();
        let ahead = instant_at_unix_secs(unix_now() + 3);
        // About 2 to 3 s from now: the current second has partly gone.
        let wait = ahead - start;
        assert!(
            wait > Duration::from_millis(1_900)
                && wait <= Duration::from_secs(3) + Duration::from_millis(50),
            "{wait:?}"
        );
        let past = instant_at_unix_secs(unix_now() - 10);
        assert!(
            past >= start && past <= Instant::now(),
            "a past second is now"
        );
    }
}
