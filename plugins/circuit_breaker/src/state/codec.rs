//! The compact encoding of a breaker in one shared-data value (layout in the parent module's
//! docs), and [`Header`], its fixed part, read on the hot path without decoding the window.

use super::window::{Bucket, Window};
use super::{Breaker, Call, Phase, Probe};
use crate::config::WindowSpec;

const VERSION: u8 = 1;
const HEADER_LEN: usize = 33;
const PROBE_LEN: usize = 13;

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, rest) = self.0.split_at_checked(N)?;
        self.0 = rest;
        head.try_into().ok()
    }
    fn u8(&mut self) -> Option<u8> {
        self.take::<1>().map(|b| b[0])
    }
    fn u16(&mut self) -> Option<u16> {
        self.take().map(u16::from_le_bytes)
    }
    fn u32(&mut self) -> Option<u32> {
        self.take().map(u32::from_le_bytes)
    }
    fn u64(&mut self) -> Option<u64> {
        self.take().map(u64::from_le_bytes)
    }
    fn bytes(&mut self, n: usize) -> Option<Vec<u8>> {
        let (head, rest) = self.0.split_at_checked(n)?;
        self.0 = rest;
        Some(head.to_vec())
    }
}

/// The fixed part of an encoded breaker, readable without decoding the window: enough to admit a
/// call in the closed state (the hot path) without copying anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub owner: u64,
    pub phase: Phase,
    pub epoch: u32,
    pub open_until_ms: u64,
}

impl Header {
    /// Encoded length: version, phase, owner, epoch, open_until.
    const LEN: usize = 1 + 1 + 8 + 4 + 8;

    pub fn decode(bytes: &[u8]) -> Option<Header> {
        let mut r = Reader(bytes);
        if r.u8()? != VERSION {
            return None;
        }
        let phase = Phase::from_u8(r.u8()?)?;
        let owner = r.u64()?;
        let epoch = r.u32()?;
        let open_until_ms = r.u64()?;
        Some(Header {
            owner,
            phase,
            epoch,
            open_until_ms,
        })
    }

    /// The phase as the next request would find it: an open breaker whose wait is over is
    /// reported half-open (the next request moves it there). This is what the gauge shows.
    pub fn effective_phase(&self, now_ms: u64) -> Phase {
        if self.phase == Phase::Open && now_ms >= self.open_until_ms {
            Phase::HalfOpen
        } else {
            self.phase
        }
    }
}

impl Breaker {
    pub fn header(&self) -> Header {
        Header {
            owner: self.owner,
            phase: self.phase,
            epoch: self.epoch,
            open_until_ms: self.open_until_ms,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(HEADER_LEN + self.probes.len() * PROBE_LEN + 64);
        v.push(VERSION);
        v.push(self.phase as u8);
        v.extend_from_slice(&self.owner.to_le_bytes());
        v.extend_from_slice(&self.epoch.to_le_bytes());
        v.extend_from_slice(&self.open_until_ms.to_le_bytes());
        v.extend_from_slice(&self.opens.to_le_bytes());
        v.extend_from_slice(&self.consecutive_failures.to_le_bytes());
        v.extend_from_slice(&self.next_token.to_le_bytes());
        v.push(u8::try_from(self.probes.len()).unwrap_or(u8::MAX));
        for p in self.probes.iter().take(usize::from(u8::MAX)) {
            let (tag, a, b) = match *p {
                Probe::Free => (0u8, 0u32, 0u64),
                Probe::Leased { token, deadline_ms } => (1, token, deadline_ms),
                Probe::Done(c) => (2, u32::from(c.failed) | (u32::from(c.slow) << 1), 0),
            };
            v.push(tag);
            v.extend_from_slice(&a.to_le_bytes());
            v.extend_from_slice(&b.to_le_bytes());
        }
        match &self.window {
            Window::Count {
                head,
                len,
                failed,
                slow,
                ..
            } => {
                v.extend_from_slice(&head.to_le_bytes());
                v.extend_from_slice(&len.to_le_bytes());
                v.extend_from_slice(failed);
                v.extend_from_slice(slow);
            }
            Window::Time { buckets, .. } => {
                for b in buckets {
                    for x in [b.index, b.calls, b.failed, b.slow] {
                        v.extend_from_slice(&x.to_le_bytes());
                    }
                }
            }
        }
        v
    }

    /// Decode a value written by [`Breaker::encode`] for a window of shape `spec`; `None` if it
    /// is not one (absent, another version, another shape).
    pub fn decode(bytes: &[u8], spec: &WindowSpec) -> Option<Breaker> {
        let Header {
            owner,
            phase,
            epoch,
            open_until_ms,
        } = Header::decode(bytes)?;
        let mut r = Reader(bytes.get(Header::LEN..)?);
        let opens = r.u16()?;
        let consecutive_failures = r.u32()?;
        let next_token = r.u32()?;
        let n = r.u8()?;
        let mut probes = Vec::with_capacity(usize::from(n));
        for _ in 0..n {
            let tag = r.u8()?;
            let a = r.u32()?;
            let b = r.u64()?;
            probes.push(match tag {
                0 => Probe::Free,
                1 => Probe::Leased {
                    token: a,
                    deadline_ms: b,
                },
                2 => Probe::Done(Call {
                    failed: a & 1 != 0,
                    slow: a & 2 != 0,
                }),
                _ => return None,
            });
        }
        let window = match *spec {
            WindowSpec::Count { size } => {
                let bytes = size.div_ceil(8) as usize;
                let head = r.u32()?;
                let len = r.u32()?;
                if head >= size || len > size {
                    return None;
                }
                Window::Count {
                    size,
                    head,
                    len,
                    failed: r.bytes(bytes)?,
                    slow: r.bytes(bytes)?,
                }
            }
            WindowSpec::Time {
                buckets: count,
                bucket_secs,
            } => {
                let mut buckets = Vec::with_capacity(count as usize);
                for _ in 0..count {
                    buckets.push(Bucket {
                        index: r.u32()?,
                        calls: r.u32()?,
                        failed: r.u32()?,
                        slow: r.u32()?,
                    });
                }
                Window::Time {
                    bucket_ms: u64::from(bucket_secs) * 1000,
                    buckets,
                }
            }
        };
        if !r.0.is_empty() {
            return None;
        }
        Some(Breaker {
            owner,
            phase,
            epoch,
            open_until_ms,
            opens,
            consecutive_failures,
            next_token,
            probes,
            window,
        })
    }
}
