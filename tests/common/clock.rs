//! Where the wall clock stands in the fixed windows of rate limits, for tests whose
//! counts must all fall in one window: a window that ends under a test resets its counts.

use std::time::Duration;

/// Seconds left in the current UTC minute.
pub fn left_in_minute() -> f64 {
    let ms = jiff::Timestamp::now().as_millisecond().rem_euclid(60_000);
    (60_000 - ms) as f64 / 1000.0
}

/// Returns with at least `need` seconds left in the current UTC minute, waiting for the
/// next minute if need be.
pub async fn fresh_minute(need: f64) {
    let left = left_in_minute();
    if left < need {
        tokio::time::sleep(Duration::from_secs_f64(left + 0.05)).await;
    }
}
