//! Rate-limit windows and the clock they are read from.
//!
//! Second, minute and hour windows are fixed and aligned to UTC (a minute window runs
//! from `hh:mm:00.000` to the next minute); day and month windows are UTC calendar
//! days and months, so a month quota covers 28 to 31 days. Unix time has no leap
//! seconds, so every UTC day is exactly 86 400 s and only months need a calendar.
//!
//! Pure arithmetic: the caller passes `now`, so edges are tested with a fake clock.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use jiff::civil::{Date, Time};
use jiff::tz::Offset;
use jiff::{Timestamp, ToSpan};

use crate::key::RateLimit;

/// One of the five windows of a [`RateLimit`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Window {
    Second,
    Minute,
    Hour,
    Day,
    Month,
}

impl Window {
    pub const ALL: [Window; 5] = [
        Window::Second,
        Window::Minute,
        Window::Hour,
        Window::Day,
        Window::Month,
    ];

    /// The `window` of a refusal and the `kind` label of `keygate_rate_limited_total`.
    pub fn as_str(self) -> &'static str {
        match self {
            Window::Second => "second",
            Window::Minute => "minute",
            Window::Hour => "hour",
            Window::Day => "day",
            Window::Month => "month",
        }
    }

    /// Position in [`Window::ALL`], for per-window arrays.
    pub fn index(self) -> usize {
        self as usize
    }

    /// Day and month windows are quotas (`quota_exceeded`); the others are rates
    /// (`rate_limited`).
    pub fn is_quota(self) -> bool {
        matches!(self, Window::Day | Window::Month)
    }

    /// This window's value in a [`RateLimit`].
    pub fn of(self, limit: &RateLimit) -> Option<u64> {
        match self {
            Window::Second => limit.per_second,
            Window::Minute => limit.per_minute,
            Window::Hour => limit.per_hour,
            Window::Day => limit.per_day,
            Window::Month => limit.per_month,
        }
    }

    /// The window instance containing `now`.
    pub fn span(self, now: Timestamp) -> Span {
        let fixed = |len: i64| {
            let start = now.as_second().div_euclid(len) * len;
            Span {
                start,
                end: start + len,
            }
        };
        match self {
            Window::Second => fixed(1),
            Window::Minute => fixed(60),
            Window::Hour => fixed(3_600),
            Window::Day => fixed(86_400),
            // The calendar is asked once a month per thread: every request of a
            // limited key takes all five spans.
            Window::Month => MONTH.with(|month| {
                let second = now.as_second();
                let last = month.get();
                if (last.start..last.end).contains(&second) {
                    return last;
                }
                let span = month_span(now);
                month.set(span);
                span
            }),
        }
    }
}

thread_local! {
    /// The month [`Window::span`] gave last on this thread (none at first).
    static MONTH: std::cell::Cell<Span> = const { std::cell::Cell::new(Span { start: 0, end: 0 }) };
}

/// The UTC calendar month containing `now`.
fn month_span(now: Timestamp) -> Span {
    let date = Offset::UTC.to_datetime(now).date().first_of_month();
    // jiff's range (years -9999..=9999) is the only way these fail; a month that
    // cannot be computed is treated as ending a second later, which never admits
    // more than a day window would.
    let start = month_start(date).unwrap_or(now.as_second());
    let end = date
        .checked_add(1.month())
        .ok()
        .and_then(month_start)
        .unwrap_or(start + 1);
    Span { start, end }
}

fn month_start(first_day: Date) -> Option<i64> {
    Offset::UTC
        .to_timestamp(first_day.to_datetime(Time::midnight()))
        .ok()
        .map(|t| t.as_second())
}

/// One instance of a window: `[start, end)` in Unix seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span {
    /// Identifies the instance: counters of an older start are stale.
    pub start: i64,
    pub end: i64,
}

impl Span {
    /// Time from `now` to this window's end, rounded up to whole seconds (what
    /// `RateLimit-Reset` and `Retry-After` carry), at least 1 s.
    pub fn reset_after(&self, now: Timestamp) -> Duration {
        let end_ms = self.end.saturating_mul(1_000);
        let left_ms = end_ms.saturating_sub(now.as_millisecond()).max(1);
        // Whole seconds, rounded up: a client that waits this long is past the end.
        let secs = (left_ms + 999) / 1_000;
        Duration::from_secs(u64::try_from(secs).unwrap_or(1))
    }
}

/// Where the limiter reads the time; a fake in tests.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> Timestamp;
}

/// The system clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }
}

/// A clock that moves only when told to (tests).
#[derive(Debug)]
pub struct FakeClock {
    millis: AtomicI64,
}

impl FakeClock {
    pub fn at(t: Timestamp) -> Self {
        FakeClock {
            millis: AtomicI64::new(t.as_millisecond()),
        }
    }

    pub fn set(&self, t: Timestamp) {
        self.millis.store(t.as_millisecond(), Ordering::SeqCst);
    }

    pub fn advance(&self, d: Duration) {
        let ms = i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        self.millis.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Clock for FakeClock {
    fn now(&self) -> Timestamp {
        Timestamp::from_millisecond(self.millis.load(Ordering::SeqCst))
            .unwrap_or(Timestamp::UNIX_EPOCH)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn secs(s: &str) -> i64 {
        ts(s).as_second()
    }

    #[test]
    fn fixed_windows_are_aligned_to_utc() {
        let now = ts("2024-03-10T12:34:56.789Z");
        let rows = [
            (
                Window::Second,
                "2024-03-10T12:34:56Z",
                "2024-03-10T12:34:57Z",
            ),
            (
                Window::Minute,
                "2024-03-10T12:34:00Z",
                "2024-03-10T12:35:00Z",
            ),
            (Window::Hour, "2024-03-10T12:00:00Z", "2024-03-10T13:00:00Z"),
            (Window::Day, "2024-03-10T00:00:00Z", "2024-03-11T00:00:00Z"),
            (
                Window::Month,
                "2024-03-01T00:00:00Z",
                "2024-04-01T00:00:00Z",
            ),
        ];
        for (w, start, end) in rows {
            assert_eq!(
                w.span(now),
                Span {
                    start: secs(start),
                    end: secs(end)
                },
                "{w:?}"
            );
        }
    }

    #[test]
    fn the_last_millisecond_of_a_minute_is_in_it_and_the_next_is_not() {
        let last = Window::Minute.span(ts("2024-03-10T12:34:59.999Z"));
        let next = Window::Minute.span(ts("2024-03-10T12:35:00Z"));
        assert_eq!(last.end, next.start);
        assert_ne!(last.start, next.start);
        assert_eq!(
            last.reset_after(ts("2024-03-10T12:34:59.999Z")),
            Duration::from_secs(1)
        );
        assert_eq!(
            next.reset_after(ts("2024-03-10T12:35:00Z")),
            Duration::from_secs(60)
        );
        assert_eq!(
            next.reset_after(ts("2024-03-10T12:35:00.001Z")),
            Duration::from_secs(60)
        );
        assert_eq!(
            next.reset_after(ts("2024-03-10T12:35:01Z")),
            Duration::from_secs(59)
        );
    }

    #[test]
    fn months_follow_the_calendar() {
        let rows = [
            // Leap year February: 29 days.
            (
                "2024-02-29T23:59:59.999Z",
                "2024-02-01T00:00:00Z",
                "2024-03-01T00:00:00Z",
            ),
            (
                "2023-02-28T10:00:00Z",
                "2023-02-01T00:00:00Z",
                "2023-03-01T00:00:00Z",
            ),
            // Year end.
            (
                "2024-12-31T23:59:59.999Z",
                "2024-12-01T00:00:00Z",
                "2025-01-01T00:00:00Z",
            ),
            (
                "2025-01-01T00:00:00Z",
                "2025-01-01T00:00:00Z",
                "2025-02-01T00:00:00Z",
            ),
            (
                "2024-04-30T12:00:00Z",
                "2024-04-01T00:00:00Z",
                "2024-05-01T00:00:00Z",
            ),
        ];
        for (now, start, end) in rows {
            assert_eq!(
                Window::Month.span(ts(now)),
                Span {
                    start: secs(start),
                    end: secs(end)
                },
                "{now}"
            );
        }
        let feb = Window::Month.span(ts("2024-02-10T00:00:00Z"));
        assert_eq!(feb.end - feb.start, 29 * 86_400);
    }

    #[test]
    fn the_month_kept_per_thread_is_the_calendar_s() {
        // In this order on one thread: the kept month must end exactly at its end,
        // and a clock that goes back gets its own month again.
        for now in [
            "2024-02-29T23:59:59.999Z",
            "2024-03-01T00:00:00Z",
            "2024-02-29T23:59:59.999Z",
            "2024-02-01T00:00:00Z",
            "2024-01-31T23:59:59.999Z",
            "1970-01-01T00:00:00Z",
            "1969-12-31T23:59:59Z",
            "2024-02-10T00:00:00Z",
        ] {
            assert_eq!(Window::Month.span(ts(now)), month_span(ts(now)), "{now}");
        }
    }

    #[test]
    fn the_leap_day_is_a_day_of_its_own() {
        let leap = Window::Day.span(ts("2024-02-29T00:00:00Z"));
        assert_eq!(leap.start, secs("2024-02-29T00:00:00Z"));
        assert_eq!(leap.end, secs("2024-03-01T00:00:00Z"));
        let before = Window::Day.span(ts("2024-02-28T23:59:59.999Z"));
        assert_eq!(before.end, leap.start);
        assert_eq!(
            before.reset_after(ts("2024-02-28T23:59:59.999Z")),
            Duration::from_secs(1)
        );
    }

    #[test]
    fn reset_is_whole_seconds_rounded_up_and_at_least_one() {
        let s = Span { start: 0, end: 60 };
        let at = |ms| Timestamp::from_millisecond(ms).unwrap();
        assert_eq!(s.reset_after(at(0)), Duration::from_secs(60));
        assert_eq!(s.reset_after(at(500)), Duration::from_secs(60));
        assert_eq!(s.reset_after(at(59_001)), Duration::from_secs(1));
        // At or past the end (a clock step): never 0, which clients read as "now".
        assert_eq!(s.reset_after(at(60_000)), Duration::from_secs(1));
    }

    #[test]
    fn the_fake_clock_moves_when_told() {
        let c = FakeClock::at(ts("2024-01-01T00:00:59.999Z"));
        assert_eq!(c.now(), ts("2024-01-01T00:00:59.999Z"));
        c.advance(Duration::from_millis(1));
        assert_eq!(c.now(), ts("2024-01-01T00:01:00Z"));
        c.set(ts("2030-01-01T00:00:00Z"));
        assert_eq!(c.now(), ts("2030-01-01T00:00:00Z"));
    }
}
