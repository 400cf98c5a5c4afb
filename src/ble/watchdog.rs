//! Never a silent zombie: a task that keeps asking BlueZ about the adapters in use. If BlueZ
//! does not answer, an adapter is gone, or the D-Bus connection is lost, for longer than a
//! bluetoothd restart takes, the Bluetooth side has failed for good: `run` and `once` then
//! exit 1 and Telegraf starts a fresh blebatt (which re-establishes everything).
//!
//! Nothing else would notice: btleplug drops bluez-async's "D-Bus connection lost" handle,
//! its signal streams stay open but silent, and a device task only sees its own replies
//! time out, forever.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

use crate::transport::FailureSender;

/// How often BlueZ is asked.
pub const EVERY: Duration = Duration::from_secs(4);
/// Bound on one question (a property read BlueZ answers from memory).
pub const PROBE_BOUND: Duration = Duration::from_secs(4);
/// Failing this long in a row is failing for good. A bluetoothd restart takes a second or
/// two; with [`EVERY`] and [`PROBE_BOUND`] the exit comes within about 20 s of the loss,
/// inside the 30 s the issue of record allows.
pub const GIVE_UP_AFTER: Duration = Duration::from_secs(12);

/// Asks `probe` every [`EVERY`]; once it has failed for [`GIVE_UP_AFTER`] in a row, reports
/// the failure on `failed` and returns. A probe that answers again ends the episode; each
/// answer calls `answered`.
pub async fn watch<P, F>(
    mut probe: P,
    mut answered: impl FnMut(),
    failed: std::sync::Arc<FailureSender>,
) where
    P: FnMut() -> F,
    F: Future<Output = Result<(), String>>,
{
    let mut ticks = tokio::time::interval(EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick is immediate; BlueZ just answered `open`.
    ticks.tick().await;
    let mut failing_since: Option<Instant> = None;
    loop {
        ticks.tick().await;
        let asked = Instant::now();
        let answer = match tokio::time::timeout(PROBE_BOUND, probe()).await {
            Ok(answer) => answer,
            Err(_) => Err(format!("BlueZ did not answer within {PROBE_BOUND:?}")),
        };
        match answer {
            Ok(()) => {
                if failing_since.take().is_some() {
                    log::info!("BlueZ answers again");
                }
                answered();
            }
            Err(problem) => {
                let since = *failing_since.get_or_insert_with(|| {
                    log::warn!(
                        "{problem}; blebatt exits if this lasts {GIVE_UP_AFTER:?}. Hint: is bluetoothd running (`systemctl status bluetooth`)?"
                    );
                    asked
                });
                if since.elapsed() >= GIVE_UP_AFTER {
                    let _ = failed.send(Some(format!(
                        "{problem}, for {:?} in a row",
                        since.elapsed()
                    )));
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;
    use crate::transport::Failure;

    /// A probe answering from a script: `true` is an answer, `false` an error; then it hangs
    /// (a BlueZ that never answers) once the script runs out, if `then_hang`.
    fn scripted(
        script: Vec<bool>,
        then_hang: bool,
        asked: Arc<AtomicU32>,
    ) -> impl FnMut() -> std::pin::Pin<Box<dyn Future<Output = Result<(), String>> + Send>> {
        move || {
            let i = asked.fetch_add(1, Ordering::SeqCst) as usize;
            match script.get(i) {
                Some(true) => Box::pin(async { Ok(()) }),
                Some(false) => Box::pin(async { Err("adapter hci0 is gone".to_string()) }),
                None if then_hang => Box::pin(std::future::pending()),
                None => Box::pin(async { Ok(()) }),
            }
        }
    }

    /// (failure reported, when, probes asked, probes answered)
    async fn outcome(script: Vec<bool>, then_hang: bool) -> (Option<String>, Duration, u32, u32) {
        let (tx, mut failure) = Failure::channel();
        let asked = Arc::new(AtomicU32::new(0));
        let answered = Arc::new(AtomicU32::new(0));
        let count = answered.clone();
        let start = Instant::now();
        let watcher = tokio::spawn(watch(
            scripted(script, then_hang, asked.clone()),
            move || {
                count.fetch_add(1, Ordering::SeqCst);
            },
            Arc::new(tx),
        ));
        let reason = tokio::select! {
            r = failure.wait() => Some(r),
            _ = tokio::time::sleep(Duration::from_secs(600)) => None,
        };
        watcher.abort();
        (
            reason,
            start.elapsed(),
            asked.load(Ordering::SeqCst),
            answered.load(Ordering::SeqCst),
        )
    }

    #[tokio::test(start_paused = true)]
    async fn a_bluez_that_never_answers_is_a_failure_within_30_s() {
        let (reason, after, _, answered) = outcome(vec![true], true).await;
        assert_eq!(answered, 1);
        let reason = reason.expect("no failure reported");
        assert!(reason.contains("did not answer"), "{reason}");
        assert!(
            after >= GIVE_UP_AFTER && after <= Duration::from_secs(30),
            "{after:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn errors_in_a_row_are_a_failure_naming_the_problem() {
        let (reason, after, asked, answered) = outcome(
            vec![true; 3].into_iter().chain([false; 100]).collect(),
            false,
        )
        .await;
        let reason = reason.expect("no failure reported");
        assert!(reason.contains("adapter hci0 is gone"), "{reason}");
        assert!(after <= Duration::from_secs(30), "{after:?}");
        // Healthy answers first, then failures for GIVE_UP_AFTER: 3 + 4 probes.
        assert_eq!(asked, 3 + 4);
        assert_eq!(answered, 3);
    }

    #[tokio::test(start_paused = true)]
    async fn a_short_outage_like_a_bluetoothd_restart_is_ridden_out() {
        // Two failed probes (8 s), an answer, two more failures, then answers for ever.
        let script = vec![true, false, false, true, false, false];
        let (reason, _, asked, answered) = outcome(script, false).await;
        assert_eq!(reason, None);
        assert!(
            asked > 100,
            "the watchdog stopped asking after {asked} probes"
        );
        assert_eq!(answered, asked - 4, "every answer is passed on");
    }
}
