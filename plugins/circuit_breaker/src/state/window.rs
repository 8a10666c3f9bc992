//! The sliding windows of a closed breaker: a ring of the last N outcomes (count-based) or
//! per-bucket counters (time-based), and the tally the thresholds are compared with.

use super::Call;
use crate::config::{Thresholds, WindowSpec};

/// Calls, failures and slow calls currently in a window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Tally {
    pub calls: u32,
    pub failed: u32,
    pub slow: u32,
}

impl Tally {
    fn rate(part: u32, calls: u32) -> f64 {
        if calls == 0 {
            0.0
        } else {
            f64::from(part) * 100.0 / f64::from(calls)
        }
    }

    pub fn failure_rate(&self) -> f64 {
        Tally::rate(self.failed, self.calls)
    }

    pub fn slow_rate(&self) -> f64 {
        Tally::rate(self.slow, self.calls)
    }

    /// Resilience4j's rule: either rate at or above its threshold trips.
    pub(super) fn trips(&self, t: &Thresholds) -> bool {
        self.failure_rate() >= t.failure_rate_threshold
            || self.slow_rate() >= t.slow_call_rate_threshold
    }
}

/// One time bucket's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Bucket {
    pub index: u32,
    pub calls: u32,
    pub failed: u32,
    pub slow: u32,
}

/// The sliding window of a closed breaker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Window {
    /// A ring of the last `size` outcomes, two bits each.
    Count {
        size: u32,
        head: u32,
        len: u32,
        failed: Vec<u8>,
        slow: Vec<u8>,
    },
    /// Per-bucket counters; a bucket is reused once its index is a whole window old.
    Time {
        bucket_ms: u64,
        buckets: Vec<Bucket>,
    },
}

fn set_bit(bits: &mut [u8], i: u32, on: bool) {
    if let Some(b) = bits.get_mut((i / 8) as usize) {
        if on {
            *b |= 1 << (i % 8);
        } else {
            *b &= !(1 << (i % 8));
        }
    }
}

fn popcount(bits: &[u8]) -> u32 {
    bits.iter().map(|b| b.count_ones()).sum()
}

impl Window {
    pub fn fresh(spec: &WindowSpec) -> Window {
        match *spec {
            WindowSpec::Count { size } => {
                let bytes = size.div_ceil(8) as usize;
                Window::Count {
                    size,
                    head: 0,
                    len: 0,
                    failed: vec![0; bytes],
                    slow: vec![0; bytes],
                }
            }
            WindowSpec::Time {
                buckets,
                bucket_secs,
            } => Window::Time {
                bucket_ms: u64::from(bucket_secs) * 1000,
                buckets: vec![Bucket::default(); buckets as usize],
            },
        }
    }

    pub(super) fn bucket_index(bucket_ms: u64, now_ms: u64) -> u32 {
        u32::try_from(now_ms / bucket_ms.max(1)).unwrap_or(u32::MAX)
    }

    /// The time bucket `now_ms` falls in, emptied first if it still holds an older index (from a
    /// whole window ago or more).
    pub(super) fn bucket_at(
        bucket_ms: u64,
        buckets: &mut [Bucket],
        now_ms: u64,
    ) -> Option<&mut Bucket> {
        let index = Window::bucket_index(bucket_ms, now_ms);
        let n = buckets.len().max(1);
        let b = buckets.get_mut(index as usize % n)?;
        if b.index != index {
            *b = Bucket {
                index,
                ..Bucket::default()
            };
        }
        Some(b)
    }

    pub fn record(&mut self, call: Call, now_ms: u64) {
        match self {
            Window::Count {
                size,
                head,
                len,
                failed,
                slow,
            } => {
                set_bit(failed, *head, call.failed);
                set_bit(slow, *head, call.slow);
                *head = (*head + 1) % (*size).max(1);
                *len = (*len + 1).min(*size);
            }
            Window::Time { bucket_ms, buckets } => {
                if let Some(b) = Window::bucket_at(*bucket_ms, buckets, now_ms) {
                    b.calls = b.calls.saturating_add(1);
                    b.failed = b.failed.saturating_add(u32::from(call.failed));
                    b.slow = b.slow.saturating_add(u32::from(call.slow));
                }
            }
        }
    }

    /// What the window holds at `now` (time-based windows drop buckets a window old).
    pub fn tally(&self, now_ms: u64) -> Tally {
        match self {
            Window::Count {
                len, failed, slow, ..
            } => Tally {
                calls: *len,
                failed: popcount(failed),
                slow: popcount(slow),
            },
            Window::Time { bucket_ms, buckets } => {
                let cur = Window::bucket_index(*bucket_ms, now_ms);
                let n = u32::try_from(buckets.len()).unwrap_or(u32::MAX);
                buckets
                    .iter()
                    // A bucket "from the future" (the clock stepped back) still counts.
                    .filter(|b| b.calls > 0 && cur.saturating_sub(b.index) < n)
                    .fold(Tally::default(), |t, b| Tally {
                        calls: t.calls.saturating_add(b.calls),
                        failed: t.failed.saturating_add(b.failed),
                        slow: t.slow.saturating_add(b.slow),
                    })
            }
        }
    }
}
