//! The device rate limit: how many signed requests one enrolled device may send, as a token
//! bucket per device.
//!
//! Each bucket holds at most `burst` requests and refills at `per_second` requests a second. A
//! request takes one once its device is known to be enrolled and active and its signature
//! verified (so nobody without the device's key spends its budget), and before its nonce is
//! recorded or its handler runs: a refused request writes nothing. Workspace creation and joining
//! are signed by a device that is not enrolled yet and take nothing; agents' calls are not device
//! requests.
//!
//! The buckets live in the broker process's memory: each replica behind a load balancer keeps
//! its own, so a device may send up to the limit to each of them, and a restart refills every
//! bucket. A bucket that has refilled is dropped once the map grows past 1024 entries,
//! so the map holds the devices that sent requests recently, not every device ever seen.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use latchkey_core::ids::DeviceId;

use crate::auth::DeviceCaller;
use crate::error::{ApiError, ErrorCode};

/// A request's cost in the bucket's unit: buckets count thousandths of a request, so that a
/// refill over milliseconds stays exact in integers.
const REQUEST: u64 = 1000;

/// How many buckets the map holds before full ones are dropped; past that it is pruned again
/// each time it doubles since the last pruning, so pruning costs a constant per request.
pub(crate) const PRUNE_AT: usize = 1024;

/// The most requests a second the setting accepts.
pub const MAX_PER_SECOND: u32 = 100_000;

/// The largest burst the setting accepts.
pub const MAX_BURST: u32 = 1_000_000;

/// How many signed requests one device may send: `burst` at once, then `per_second` a second.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceRateLimit {
    per_second: u32,
    burst: u32,
}

impl DeviceRateLimit {
    /// The default: bursts of 3000 requests, 10 a second sustained. The largest burst a device
    /// sends in its normal work is a key rotation, which reads every credential of the key (a
    /// workspace holds at most 2000) and every device it is sent to, one request each, as fast as
    /// it can; a person, the CLI and the desktop app's polling stay far below. A device in a loop
    /// is held to 10 requests a second once its burst is spent.
    pub const DEFAULT: Self = Self { per_second: 10, burst: 3000 };

    /// A limit of `per_second` requests a second sustained and bursts of `burst`; `None` unless
    /// both are between 1 and [`MAX_PER_SECOND`] and [`MAX_BURST`].
    pub fn new(per_second: u32, burst: u32) -> Option<Self> {
        let fits = (1..=MAX_PER_SECOND).contains(&per_second) && (1..=MAX_BURST).contains(&burst);
        fits.then_some(Self { per_second, burst })
    }

    /// Requests a second a device may send sustained.
    pub fn per_second(self) -> u32 {
        self.per_second
    }

    /// Requests a device may send at once after a pause.
    pub fn burst(self) -> u32 {
        self.burst
    }

    /// The bucket's capacity, in thousandths of a request.
    fn capacity(self) -> u64 {
        u64::from(self.burst) * REQUEST
    }
}

impl Default for DeviceRateLimit {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// One device's bucket.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    /// What is left, in thousandths of a request, as of `at_ms`.
    left: u64,
    /// When `left` was last brought up to date (Unix milliseconds).
    at_ms: u64,
    /// The minute (Unix minutes) a refusal of this device was last logged in.
    logged_minute: Option<u64>,
}

impl Bucket {
    /// What the bucket holds at `now_ms`, never more than its capacity. A clock that went back
    /// refills nothing.
    fn level(&self, limit: DeviceRateLimit, now_ms: u64) -> u64 {
        let refill = now_ms.saturating_sub(self.at_ms).saturating_mul(u64::from(limit.per_second));
        self.left.saturating_add(refill).min(limit.capacity())
    }

    /// Takes one request, or says how many whole seconds (at least one) until one is there.
    fn take(&mut self, limit: DeviceRateLimit, now_ms: u64) -> Result<(), u64> {
        self.left = self.level(limit, now_ms);
        self.at_ms = now_ms;
        if self.left >= REQUEST {
            self.left -= REQUEST;
            return Ok(());
        }
        // `per_second` thousandths come back each millisecond.
        let wait_ms = (REQUEST - self.left).div_ceil(u64::from(limit.per_second));
        Err(wait_ms.div_ceil(1000).max(1))
    }

    /// Whether the bucket can be forgotten at `now_ms`: it is full again, so a new one is the
    /// same, and no refusal of its device was logged this minute.
    fn forgettable(&self, limit: DeviceRateLimit, now_ms: u64) -> bool {
        self.level(limit, now_ms) >= limit.capacity() && self.logged_minute != Some(now_ms / 60_000)
    }
}

/// A request over its device's limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Refused {
    /// Whole seconds (at least one) until the device may send a request again.
    retry_after_secs: u64,
    /// Whether this is the device's first refusal logged this minute.
    log: bool,
}

/// The buckets of the devices that sent requests recently.
#[derive(Debug, Default)]
struct Buckets {
    by_device: HashMap<DeviceId, Bucket>,
    /// The size at which the map is pruned next.
    prune_at: usize,
}

impl Buckets {
    /// Drops the buckets that can be forgotten once the map has grown to `prune_at`.
    fn prune(&mut self, limit: DeviceRateLimit, now_ms: u64) {
        if self.by_device.len() < self.prune_at.max(PRUNE_AT) {
            return;
        }
        self.by_device.retain(|_, bucket| !bucket.forgettable(limit, now_ms));
        self.prune_at = PRUNE_AT.max(self.by_device.len().saturating_mul(2));
    }
}

/// Every device's bucket under one limit (`None`: no limit).
#[derive(Debug, Default)]
pub(crate) struct DeviceBudgets {
    limit: Option<DeviceRateLimit>,
    buckets: Mutex<Buckets>,
}

impl DeviceBudgets {
    /// Budgets under `limit`; `None` lets every request through.
    pub(crate) fn new(limit: Option<DeviceRateLimit>) -> Self {
        Self { limit, buckets: Mutex::default() }
    }

    /// Takes one request from `caller`'s device's budget at `now_ms` (Unix milliseconds), or
    /// refuses it with `429 rate_limited` and a `Retry-After`. The first refusal of a device in
    /// each minute is logged, naming its workspace, member and device.
    pub(crate) fn spend(&self, caller: &DeviceCaller, now_ms: u64) -> Result<(), ApiError> {
        let Some(limit) = self.limit else { return Ok(()) };
        let Err(refused) = self.take(limit, caller.device, now_ms) else { return Ok(()) };
        if refused.log {
            tracing::warn!(
                workspace = %caller.workspace, member = %caller.member, device = %caller.device,
                retry_after_secs = refused.retry_after_secs,
                "device requests refused over the device rate limit (at most one line per device and minute)"
            );
        }
        Err(refusal(limit, refused.retry_after_secs))
    }

    /// The bucket arithmetic of [`DeviceBudgets::spend`].
    fn take(&self, limit: DeviceRateLimit, device: DeviceId, now_ms: u64) -> Result<(), Refused> {
        // A poisoned map only means another thread panicked while counting; the counts stand.
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        if !buckets.by_device.contains_key(&device) {
            buckets.prune(limit, now_ms);
        }
        let full = Bucket { left: limit.capacity(), at_ms: now_ms, logged_minute: None };
        let bucket = buckets.by_device.entry(device).or_insert(full);
        bucket.take(limit, now_ms).map_err(|retry_after_secs| {
            let minute = now_ms / 60_000;
            let log = bucket.logged_minute != Some(minute);
            bucket.logged_minute = Some(minute);
            Refused { retry_after_secs, log }
        })
    }

    /// How many buckets are kept.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.buckets.lock().unwrap_or_else(PoisonError::into_inner).by_device.len()
    }
}

/// The answer to a request over its device's limit: what to do now, and what to do if nobody on
/// the device sent that many.
fn refusal(limit: DeviceRateLimit, retry_after_secs: u64) -> ApiError {
    let seconds = if retry_after_secs == 1 { "second" } else { "seconds" };
    ApiError::new(
        ErrorCode::RateLimited,
        format!(
            "this device sent more requests than the broker accepts from one device ({} at once, \
             then {} a second); wait {retry_after_secs} {seconds} and retry. If nobody on this \
             device sent them, an admin should remove the device (latchkey device remove)",
            limit.burst, limit.per_second
        ),
    )
    .retry_after(retry_after_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0_MS: u64 = 1_800_000_000_000;

    fn limit(per_second: u32, burst: u32) -> DeviceRateLimit {
        DeviceRateLimit::new(per_second, burst).expect("a valid limit")
    }

    /// Takes `n` requests of `device` at `now_ms`; how many were let through.
    fn take_n(budgets: &DeviceBudgets, device: DeviceId, n: u32, now_ms: u64) -> u32 {
        let limit = budgets.limit.expect("limited");
        (0..n).filter(|_| budgets.take(limit, device, now_ms).is_ok()).count() as u32
    }

    #[test]
    fn a_new_device_gets_its_burst_then_waits_for_the_refill() {
        let budgets = DeviceBudgets::new(Some(limit(10, 300)));
        let device = DeviceId::random();
        assert_eq!(take_n(&budgets, device, 400, T0_MS), 300, "the burst, and not one more");
        let refused = budgets.take(limit(10, 300), device, T0_MS).unwrap_err();
        assert_eq!(
            refused.retry_after_secs, 1,
            "a tenth of a second brings one back; Retry-After is at least one whole second"
        );
        assert_eq!(take_n(&budgets, device, 5, T0_MS + 100), 1, "100 ms refill one request");
        assert_eq!(take_n(&budgets, device, 50, T0_MS + 2_100), 20, "two more seconds, 20");
    }

    #[test]
    fn the_refill_stops_at_the_burst() {
        let budgets = DeviceBudgets::new(Some(limit(10, 300)));
        let device = DeviceId::random();
        assert_eq!(take_n(&budgets, device, 300, T0_MS), 300);
        let an_hour_later = T0_MS + 3_600_000;
        assert_eq!(
            take_n(&budgets, device, 1000, an_hour_later),
            300,
            "an hour of rest gives back the burst, not 36000 requests"
        );
    }

    #[test]
    fn the_wait_is_rounded_up_to_whole_seconds() {
        let slow = limit(1, 2);
        let budgets = DeviceBudgets::new(Some(slow));
        let device = DeviceId::random();
        assert_eq!(take_n(&budgets, device, 2, T0_MS), 2);
        let refused = budgets.take(slow, device, T0_MS + 200).unwrap_err();
        assert_eq!(refused.retry_after_secs, 1, "800 ms to wait is announced as 1 s");
        let very_slow = limit(1, 1);
        let budgets = DeviceBudgets::new(Some(very_slow));
        assert_eq!(take_n(&budgets, device, 1, T0_MS), 1);
        assert!(budgets.take(very_slow, device, T0_MS + 999).is_err(), "not a whole request yet");
        assert!(budgets.take(very_slow, device, T0_MS + 1_000).is_ok(), "one second, one request");
    }

    #[test]
    fn a_clock_that_goes_back_refills_nothing_and_breaks_nothing() {
        let one = limit(1, 1);
        let budgets = DeviceBudgets::new(Some(one));
        let device = DeviceId::random();
        assert_eq!(take_n(&budgets, device, 1, T0_MS), 1);
        assert!(budgets.take(one, device, T0_MS - 60_000).is_err(), "no refill from going back");
        assert!(budgets.take(one, device, T0_MS - 59_000).is_ok(), "time counts from there on");
    }

    #[test]
    fn devices_have_budgets_of_their_own_and_no_limit_refuses_nothing() {
        let budgets = DeviceBudgets::new(Some(limit(1, 5)));
        let (busy, quiet) = (DeviceId::random(), DeviceId::random());
        assert_eq!(take_n(&budgets, busy, 10, T0_MS), 5);
        assert_eq!(take_n(&budgets, quiet, 10, T0_MS), 5, "another device's burst is untouched");
        let unlimited = DeviceBudgets::new(None);
        let caller = DeviceCaller {
            workspace: latchkey_core::ids::WorkspaceId::random(),
            device: busy,
            member: latchkey_core::ids::MemberId::random(),
            role: crate::store::devices::Role::Member,
        };
        assert!(
            (0..10_000).all(|_| unlimited.spend(&caller, T0_MS).is_ok()),
            "a broker without a limit refuses no request"
        );
        assert_eq!(unlimited.len(), 0, "and keeps no bucket");
    }

    #[test]
    fn a_refused_device_is_logged_once_a_minute() {
        let one = limit(1, 1);
        let budgets = DeviceBudgets::new(Some(one));
        let device = DeviceId::random();
        assert_eq!(take_n(&budgets, device, 1, T0_MS), 1);
        let logged: Vec<bool> =
            (0..5).map(|_| budgets.take(one, device, T0_MS).unwrap_err().log).collect();
        assert_eq!(logged, [true, false, false, false, false], "one line, not one per refusal");
        let next_minute = T0_MS + 60_000;
        assert_eq!(take_n(&budgets, device, 1, next_minute), 1);
        assert!(budgets.take(one, device, next_minute).unwrap_err().log, "a new minute, a line");
    }

    #[test]
    fn the_refusal_says_how_long_to_wait_and_what_to_do_otherwise() {
        let error = refusal(DeviceRateLimit::DEFAULT, 3);
        assert_eq!(error.code, ErrorCode::RateLimited);
        assert_eq!(error.code.status().as_u16(), 429);
        assert_eq!(error.retry_after, Some(3), "sent as Retry-After");
        assert!(error.message.contains("wait 3 seconds"), "{}", error.message);
        assert!(error.message.contains("remove the device"), "{}", error.message);
        assert!(refusal(DeviceRateLimit::DEFAULT, 1).message.contains("wait 1 second and"));
    }

    #[test]
    fn buckets_of_quiet_devices_are_dropped_so_the_map_stays_bounded() {
        let default = DeviceRateLimit::DEFAULT;
        let budgets = DeviceBudgets::new(Some(default));
        for _ in 0..PRUNE_AT {
            assert_eq!(take_n(&budgets, DeviceId::random(), 1, T0_MS), 1);
        }
        assert_eq!(budgets.len(), PRUNE_AT, "devices that just sent a request are kept");
        let busy = DeviceId::random();
        assert_eq!(take_n(&budgets, busy, 1, T0_MS), 1);
        assert_eq!(budgets.len(), PRUNE_AT + 1, "none of them has refilled yet: none is dropped");

        // A tenth of a second refills one request: a device that sent one is forgettable then.
        for round in 1..=3 * PRUNE_AT as u64 {
            let now = T0_MS + round * 100;
            assert_eq!(take_n(&budgets, DeviceId::random(), 1, now), 1);
            assert!(
                budgets.len() <= 2 * PRUNE_AT,
                "round {round}: {} buckets, where one device at a time sends: the map is pruned \
                 at twice what the last pruning kept",
                budgets.len()
            );
        }
        let burst = default.burst();
        assert_eq!(take_n(&budgets, busy, burst + 1, T0_MS + 600_000), burst, "a full burst");
    }

    #[test]
    fn limits_outside_the_accepted_range_are_not_made() {
        assert!(DeviceRateLimit::new(0, 300).is_none(), "0 a second lets nothing through");
        assert!(DeviceRateLimit::new(10, 0).is_none(), "a burst of 0 lets nothing through");
        assert!(DeviceRateLimit::new(MAX_PER_SECOND + 1, 300).is_none());
        assert!(DeviceRateLimit::new(10, MAX_BURST + 1).is_none());
        let most = DeviceRateLimit::new(MAX_PER_SECOND, MAX_BURST).expect("the largest limit");
        let budgets = DeviceBudgets::new(Some(most));
        let device = DeviceId::random();
        assert_eq!(take_n(&budgets, device, 10, u64::MAX - 1), 10, "no overflow at the extremes");
        assert_eq!(DeviceRateLimit::default(), DeviceRateLimit::DEFAULT);
        let default = DeviceRateLimit::DEFAULT;
        assert_eq!((default.per_second(), default.burst()), (10, 3000));
        assert!(
            default.burst() as usize > crate::store::credentials::MAX_CREDENTIALS + 2 * 100,
            "a rotation of a workspace at its 2000 credentials, sent to 100 members' devices, \
             fits in one burst"
        );
    }
}
