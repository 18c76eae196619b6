//! Which limits apply to one request, and what a set of window counts means for it.
//!
//! Resolution (SPEC §3): each window resolves on its own: the key's value, else the
//! org's, else the global one; a window left unset everywhere has no limit. The org
//! value is a default for each key, not a budget the org's keys share.
//!
//! Per-route limits (`routes[].rate_limit`) are an extra limit per key on that route:
//! each window the route sets is counted for (key, route) and must have room as well as
//! the key's own windows. They do not replace the key's limits and are not shared by
//! the keys calling the route. A route limit only narrows: it can never lift a key,
//! org or global limit.
//!
//! Counting: while any limit applies to a key, all five windows of the key (and of the
//! key on a limited route) are counted, so a limit set by an admin in the middle of a
//! window already counts the requests admitted earlier in it (on this replica since it
//! started, on Redis across replicas). A key with no limit at all is not counted.

use std::time::Duration;

use jiff::Timestamp;

use super::window::{Span, Window};
use crate::key::RateLimit;
use crate::refusal::Refusal;

/// A limit per window, in [`Window::ALL`] order; `None` is no limit.
pub type Limits = [Option<u64>; 5];

/// The limits of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan<'a> {
    /// The key's own windows: key value, else org, else global.
    pub key: Limits,
    /// The route's name and windows, when the route sets a limit.
    pub route: Option<(&'a str, Limits)>,
}

impl<'a> Plan<'a> {
    pub fn resolve(
        key: Option<&RateLimit>,
        org: Option<&RateLimit>,
        global: &RateLimit,
        route: Option<(&'a str, &RateLimit)>,
    ) -> Self {
        let key = Window::ALL.map(|w| {
            key.and_then(|l| w.of(l))
                .or_else(|| org.and_then(|l| w.of(l)))
                .or_else(|| w.of(global))
        });
        let route = route
            .map(|(name, l)| (name, Window::ALL.map(|w| w.of(l))))
            .filter(|(_, limits)| limits.iter().any(Option::is_some));
        Plan { key, route }
    }

    /// Nothing to enforce, nothing to count.
    pub fn is_unlimited(&self) -> bool {
        self.key.iter().all(Option::is_none) && self.route.is_none()
    }

    /// Every limited window of the plan, key windows first.
    pub fn limited(&self) -> impl Iterator<Item = (Window, u64)> + '_ {
        let route = self.route.iter().flat_map(|(_, l)| limited(l));
        limited(&self.key).chain(route)
    }
}

fn limited(limits: &Limits) -> impl Iterator<Item = (Window, u64)> + '_ {
    Window::ALL
        .iter()
        .zip(limits)
        .filter_map(|(w, l)| l.map(|l| (*w, l)))
}

/// What `RateLimit-Limit`, `RateLimit-Remaining` and `RateLimit-Reset` say: the window
/// with the least remaining after this request (on a tie, the one that resets last).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    pub limit: u64,
    pub remaining: u64,
    /// Time to that window's end, whole seconds rounded up.
    pub reset: Duration,
}

/// One limited window as a limiter saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Count {
    pub window: Window,
    pub limit: u64,
    /// Requests admitted in the window before this one.
    pub used: u64,
    pub span: Span,
}

/// A limiter's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// No limit applies: no headers.
    Unlimited,
    /// Admitted and counted in every window.
    Admitted(Quota),
    /// Refused; nothing was counted. `window` is the full window that resets last,
    /// since the request cannot pass before it does.
    Refused { window: Window, quota: Quota },
}

impl Decision {
    /// Decides from the counts before this request: refused if any limited window is
    /// full. The limiter counts the request only when this says `Admitted`.
    pub fn from_counts(counts: &[Count], now: Timestamp) -> Decision {
        let full = counts
            .iter()
            .filter(|c| c.used >= c.limit)
            .max_by_key(|c| (c.span.end, c.window));
        if let Some(c) = full {
            return Decision::Refused {
                window: c.window,
                quota: Quota {
                    limit: c.limit,
                    remaining: 0,
                    reset: c.span.reset_after(now),
                },
            };
        }
        match least_remaining(counts, 1, now) {
            Some(q) => Decision::Admitted(q),
            None => Decision::Unlimited,
        }
    }

    /// Where the key stands without counting anything (for refusals made before the
    /// limiter is reached).
    pub fn peek(counts: &[Count], now: Timestamp) -> Option<Quota> {
        least_remaining(counts, 0, now)
    }

    /// The headers to send, if any limit applies.
    pub fn quota(&self) -> Option<Quota> {
        match self {
            Decision::Unlimited => None,
            Decision::Admitted(q) | Decision::Refused { quota: q, .. } => Some(*q),
        }
    }

    /// `rate_limited` for second, minute and hour, `quota_exceeded` for day and month.
    pub fn refusal(&self) -> Option<Refusal> {
        match self {
            Decision::Refused { window, quota } => {
                let window_name = window.as_str();
                let retry_after = quota.reset;
                Some(if window.is_quota() {
                    Refusal::QuotaExceeded {
                        window: window_name,
                        retry_after,
                    }
                } else {
                    Refusal::RateLimited {
                        window: window_name,
                        retry_after,
                    }
                })
            }
            _ => None,
        }
    }
}

fn least_remaining(counts: &[Count], taking: u64, now: Timestamp) -> Option<Quota> {
    counts
        .iter()
        .map(|c| {
            (
                c.limit.saturating_sub(c.used.saturating_add(taking)),
                std::cmp::Reverse(c.span.end),
                c,
            )
        })
        .min_by_key(|(remaining, later_end, _)| (*remaining, *later_end))
        .map(|(remaining, _, c)| Quota {
            limit: c.limit,
            remaining,
            reset: c.span.reset_after(now),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rl(f: impl FnOnce(&mut RateLimit)) -> RateLimit {
        let mut l = RateLimit::default();
        f(&mut l);
        l
    }

    #[test]
    fn each_window_resolves_on_its_own() {
        let key = rl(|l| l.per_second = Some(5));
        let org = rl(|l| {
            l.per_second = Some(50);
            l.per_minute = Some(100);
        });
        let global = rl(|l| {
            l.per_minute = Some(600);
            l.per_day = Some(100_000);
        });
        let p = Plan::resolve(Some(&key), Some(&org), &global, None);
        assert_eq!(p.key, [Some(5), Some(100), None, Some(100_000), None]);
        let p = Plan::resolve(None, Some(&org), &global, None);
        assert_eq!(p.key, [Some(50), Some(100), None, Some(100_000), None]);
        let p = Plan::resolve(None, None, &global, None);
        assert_eq!(p.key, [None, Some(600), None, Some(100_000), None]);
        let p = Plan::resolve(None, None, &RateLimit::default(), None);
        assert!(p.is_unlimited());
    }

    #[test]
    fn a_route_limit_is_an_extra_limit_not_a_replacement() {
        let global = rl(|l| l.per_minute = Some(600));
        let route = rl(|l| l.per_second = Some(2));
        let p = Plan::resolve(None, None, &global, Some(("execute-flow", &route)));
        assert_eq!(p.key, [None, Some(600), None, None, None]);
        assert_eq!(
            p.route,
            Some(("execute-flow", [Some(2), None, None, None, None]))
        );
        assert_eq!(
            p.limited().collect::<Vec<_>>(),
            vec![(Window::Minute, 600), (Window::Second, 2)]
        );
        // A route whose limit sets no window is no route limit.
        let p = Plan::resolve(None, None, &global, Some(("r", &RateLimit::default())));
        assert_eq!(p.route, None);
    }

    fn count(window: Window, limit: u64, used: u64, start: i64, end: i64) -> Count {
        Count {
            window,
            limit,
            used,
            span: Span { start, end },
        }
    }

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap()
    }

    #[test]
    fn admitted_shows_the_window_with_the_least_remaining() {
        let counts = [
            count(Window::Minute, 10, 3, 0, 60),
            count(Window::Day, 100, 95, 0, 86_400),
        ];
        assert_eq!(
            Decision::from_counts(&counts, at(30)),
            Decision::Admitted(Quota {
                limit: 100,
                remaining: 4,
                reset: Duration::from_secs(86_370)
            })
        );
        // A tie goes to the window that resets last.
        let counts = [
            count(Window::Minute, 10, 5, 0, 60),
            count(Window::Day, 100, 95, 0, 86_400),
        ];
        assert_eq!(
            Decision::from_counts(&counts, at(30))
                .quota()
                .unwrap()
                .limit,
            100
        );
        assert_eq!(Decision::from_counts(&[], at(0)), Decision::Unlimited);
    }

    #[test]
    fn the_last_request_of_a_window_leaves_zero() {
        let counts = [count(Window::Minute, 10, 9, 0, 60)];
        assert_eq!(
            Decision::from_counts(&counts, at(59)),
            Decision::Admitted(Quota {
                limit: 10,
                remaining: 0,
                reset: Duration::from_secs(1)
            })
        );
    }

    #[test]
    fn refused_names_the_full_window_that_resets_last() {
        let counts = [
            count(Window::Second, 5, 5, 30, 31),
            count(Window::Minute, 10, 10, 0, 60),
            count(Window::Day, 100, 40, 0, 86_400),
        ];
        let d = Decision::from_counts(&counts, at(30));
        assert_eq!(
            d,
            Decision::Refused {
                window: Window::Minute,
                quota: Quota {
                    limit: 10,
                    remaining: 0,
                    reset: Duration::from_secs(30)
                }
            }
        );
        assert_eq!(
            d.refusal(),
            Some(Refusal::RateLimited {
                window: "minute",
                retry_after: Duration::from_secs(30)
            })
        );
        let quota = Decision::from_counts(&[count(Window::Month, 1, 1, 0, 100)], at(10));
        assert_eq!(
            quota.refusal(),
            Some(Refusal::QuotaExceeded {
                window: "month",
                retry_after: Duration::from_secs(90)
            })
        );
    }

    #[test]
    fn peek_counts_nothing() {
        let counts = [count(Window::Minute, 10, 3, 0, 60)];
        assert_eq!(
            Decision::peek(&counts, at(0)),
            Some(Quota {
                limit: 10,
                remaining: 7,
                reset: Duration::from_secs(60)
            })
        );
        let full = [count(Window::Minute, 10, 12, 0, 60)];
        assert_eq!(Decision::peek(&full, at(0)).unwrap().remaining, 0);
        assert_eq!(Decision::peek(&[], at(0)), None);
    }
}
