//! The broker's notion of time, injectable so tests can move it.

use std::fmt::Debug;
use std::sync::atomic::{AtomicU64, Ordering};

/// A source of the current time in unix seconds.
pub trait Clock: Send + Sync + Debug {
    /// Seconds since the unix epoch.
    fn now(&self) -> u64;

    /// Milliseconds since the unix epoch, for what needs finer steps than a second (the device
    /// rate limit). Clocks that only know seconds answer whole seconds.
    fn now_millis(&self) -> u64 {
        self.now().saturating_mul(1000)
    }
}

/// The system clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    }

    fn now_millis(&self) -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }
}

/// A clock that only moves when told to (for tests of expiry and windows).
#[derive(Debug)]
pub struct ManualClock(AtomicU64);

impl ManualClock {
    /// A clock reading `now`.
    pub fn new(now: u64) -> Self {
        Self(AtomicU64::new(now))
    }

    /// Moves the clock forward by `secs`.
    pub fn advance(&self, secs: u64) {
        self.0.fetch_add(secs, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}
