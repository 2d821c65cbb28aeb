//! Waiting for a condition the system reaches on its own (a socket that
//! answers, a process that exits), polled, with a bound.

use std::time::Duration;

/// Polls `cond` every 20 ms until it holds or `limit` has passed.
pub async fn wait_for_async<F: std::future::Future<Output = bool>>(cond: impl Fn() -> F, limit: Duration) -> Result<(), ()> {
    let start = std::time::Instant::now();
    while !cond().await {
        if start.elapsed() > limit {
            return Err(());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

pub async fn wait_for(cond: impl Fn() -> bool, limit: Duration) -> Result<(), ()> {
    wait_for_async(|| std::future::ready(cond()), limit).await
}
