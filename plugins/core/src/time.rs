//! Time as an input.
//!
//! Policies never read a clock: the caller passes `now`. The host adapter reads the proxy's wall
//! clock, which can step backwards (NTP); every policy must treat a `now` earlier than a stored
//! timestamp as "no time has passed", which [`Timestamp::saturating_since`] makes the easy path.

use std::time::Duration;

/// A point in time, in nanoseconds since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(u64);

impl Timestamp {
    /// The epoch itself; useful as "never" for stored state.
    pub const ZERO: Timestamp = Timestamp(0);

    pub const fn from_nanos(nanos: u64) -> Self {
        Timestamp(nanos)
    }

    pub const fn from_millis(millis: u64) -> Self {
        Timestamp(millis.saturating_mul(1_000_000))
    }

    pub const fn from_secs(secs: u64) -> Self {
        Timestamp(secs.saturating_mul(1_000_000_000))
    }

    pub const fn as_nanos(self) -> u64 {
        self.0
    }

    pub const fn as_millis(self) -> u64 {
        self.0 / 1_000_000
    }

    /// Time elapsed since `earlier`; zero if `earlier` is in the future (clock stepped back).
    pub fn saturating_since(self, earlier: Timestamp) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }

    /// This instant moved forward by `d`, saturating at the far future.
    pub fn saturating_add(self, d: Duration) -> Timestamp {
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        Timestamp(self.0.saturating_add(nanos))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elapsed_time_is_zero_when_the_clock_steps_backwards() {
        let later = Timestamp::from_secs(10);
        let earlier = Timestamp::from_secs(5);
        assert_eq!(earlier.saturating_since(later), Duration::ZERO);
        assert_eq!(later.saturating_since(earlier), Duration::from_secs(5));
    }

    #[test]
    fn adding_a_huge_duration_saturates_instead_of_wrapping() {
        let t = Timestamp::from_secs(1).saturating_add(Duration::from_secs(u64::MAX));
        assert_eq!(t.as_nanos(), u64::MAX);
    }

    #[test]
    fn unit_constructors_agree() {
        assert_eq!(Timestamp::from_secs(2), Timestamp::from_millis(2_000));
        assert_eq!(Timestamp::from_millis(3).as_nanos(), 3_000_000);
        assert_eq!(Timestamp::from_nanos(5_000_000).as_millis(), 5);
    }
}
