//! stdout for `run`: a bounded queue and a writer thread of its own, so that a Telegraf that
//! stops reading (a full pipe: the write blocks) never holds up the runtime, its device tasks,
//! timers or the stop path. When the queue is full, readings are dropped and counted: one
//! `W!` per episode, with the count, once the queue takes readings again (or at the end).

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::time::Duration;

/// Lines that may wait for the writer (a few ticks of a few devices).
pub const QUEUE_LINES: usize = 64;

/// How long the end of `run` waits for queued lines to be written.
const DRAIN_BOUND: Duration = Duration::from_millis(300);

/// The writer's state, shared with the printer.
const OPEN: u8 = 0;
/// The reader is gone (EPIPE): a normal end.
const CLOSED: u8 = 1;
/// Some other write error.
const FAILED: u8 = 2;

/// What became of a line handed to [`Printer::print`].
#[derive(Debug, PartialEq, Eq)]
pub enum Printed {
    Queued,
    /// The queue was full: the line was dropped (and counted).
    Dropped,
    /// stdout is closed: nobody will ever read us again.
    Closed,
    /// Writing failed for another reason (logged by the writer).
    Failed,
}

pub struct Printer {
    queue: Option<SyncSender<Vec<u8>>>,
    state: Arc<AtomicU8>,
    /// Lines dropped in the current episode of a full queue.
    dropped: u64,
    done: Option<tokio::sync::oneshot::Receiver<()>>,
}

impl Printer {
    /// A printer writing to `out` on a thread of its own.
    pub fn spawn(mut out: impl Write + Send + 'static) -> Printer {
        let (queue, lines) = mpsc::sync_channel::<Vec<u8>>(QUEUE_LINES);
        let state = Arc::new(AtomicU8::new(OPEN));
        let (done_tx, done) = tokio::sync::oneshot::channel();
        let shared = state.clone();
        std::thread::Builder::new()
            .name("stdout".into())
            .spawn(move || {
                for line in lines {
                    if let Err(e) = out.write_all(&line).and_then(|()| out.flush()) {
                        if e.kind() == std::io::ErrorKind::BrokenPipe {
                            shared.store(CLOSED, Ordering::SeqCst);
                        } else {
                            log::error!("cannot write to stdout: {e}");
                            shared.store(FAILED, Ordering::SeqCst);
                        }
                        break;
                    }
                }
                let _ = done_tx.send(());
            })
            .expect("cannot start the stdout thread");
        Printer {
            queue: Some(queue),
            state,
            dropped: 0,
            done: Some(done),
        }
    }

    /// Queues one or more complete lines; never blocks.
    pub fn print(&mut self, lines: Vec<u8>) -> Printed {
        // A writer that stopped (closed or failed stdout) has dropped the queue's receiver:
        // the send below says so.
        let Some(queue) = &self.queue else {
            return Printed::Closed;
        };
        match queue.try_send(lines) {
            Ok(()) => {
                self.end_episode();
                Printed::Queued
            }
            Err(TrySendError::Full(_)) => {
                if self.dropped == 0 {
                    log::debug!("stdout is not being read: dropping readings");
                }
                self.dropped += 1;
                Printed::Dropped
            }
            Err(TrySendError::Disconnected(_)) => match self.state.load(Ordering::SeqCst) {
                FAILED => Printed::Failed,
                _ => Printed::Closed,
            },
        }
    }

    fn end_episode(&mut self) {
        if self.dropped > 0 {
            log::warn!(
                "stdout was not read (is Telegraf stuck?): {} reading(s) dropped",
                self.dropped
            );
            self.dropped = 0;
        }
    }

    /// Ends printing: lets the writer write what is queued (bounded: a reader that is gone
    /// for good must not hold up the exit), and reports drops not yet reported.
    pub async fn finish(mut self) {
        self.end_episode();
        drop(self.queue.take());
        if let Some(done) = self.done.take() {
            let _ = tokio::time::timeout(DRAIN_BOUND, done).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Waits (bounded, generously) until `cond` holds; the writer is another thread.
    fn eventually(mut cond: impl FnMut() -> bool) {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while !cond() {
            assert!(std::time::Instant::now() < deadline, "condition never held");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// A stdout whose reader does not read until it is let go.
    struct Stuck(
        std::sync::mpsc::Receiver<()>,
        Arc<std::sync::Mutex<Vec<u8>>>,
    );

    impl Write for Stuck {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let _ = self.0.recv();
            self.1.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn a_stuck_reader_costs_dropped_lines_never_a_blocked_caller() {
        crate::log_capture::start();
        let (unstick, rx) = std::sync::mpsc::channel();
        let written = Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut p = Printer::spawn(Stuck(rx, written.clone()));
        // The writer holds a line or two (std's bounded channel may take one more than its
        // capacity while a receiver is between two receives), the queue QUEUE_LINES; the
        // rest are dropped.
        let results: Vec<_> = (0..QUEUE_LINES + 50)
            .map(|i| p.print(format!("{i}\n").into_bytes()))
            .collect();
        let dropped = results.iter().filter(|r| **r == Printed::Dropped).count();
        assert!(dropped >= 47, "{dropped} dropped");
        assert_eq!(
            results.iter().filter(|r| **r == Printed::Queued).count() + dropped,
            QUEUE_LINES + 50
        );
        assert_eq!(p.dropped, dropped as u64);
        // Let it go: the next line is queued again and the episode is over.
        for _ in 0..1000 {
            let _ = unstick.send(());
        }
        eventually(|| p.print(b"last\n".to_vec()) == Printed::Queued);
        assert_eq!(p.dropped, 0);
        // One episode: its start at debug, its end at warning with the count, once each (the
        // count may exceed `dropped`: `eventually` can print into a still full queue).
        let count = crate::log_capture::count;
        assert_eq!(count(log::Level::Debug, "stdout is not being read"), 1);
        let warning = "stdout was not read (is Telegraf stuck?): ";
        assert_eq!(count(log::Level::Warn, warning), 1);
        assert_eq!(count(log::Level::Warn, " reading(s) dropped"), 1);
        p.finish().await;
        let out = String::from_utf8(written.lock().unwrap().clone()).unwrap();
        assert!(out.starts_with("0\n1\n"), "{out}");
        assert!(out.ends_with("last\n"), "{out}");
    }

    /// A stdout whose every write fails with this error.
    struct Failing(std::io::ErrorKind);

    impl Write for Failing {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(self.0.into())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// What the printer says, once its writer has met `error`.
    async fn outcome_after(error: std::io::ErrorKind, want: Printed) {
        let mut p = Printer::spawn(Failing(error));
        p.print(b"a\n".to_vec());
        eventually(|| p.print(b"b\n".to_vec()) == want);
        p.finish().await;
    }

    #[tokio::test]
    async fn a_stdout_that_fails_otherwise_is_reported_as_failed() {
        outcome_after(std::io::ErrorKind::StorageFull, Printed::Failed).await;
    }

    #[tokio::test]
    async fn a_closed_stdout_is_reported_as_closed() {
        outcome_after(std::io::ErrorKind::BrokenPipe, Printed::Closed).await;
    }
}
