//! What ends the process, and what drives `run`: signals, stdin lines and stdin EOF.
//!
//! Both come from threads of their own (a blocking read or a signal must never wait on the
//! runtime), and neither ever blocks on the runtime either: a stop request is a `watch` value
//! (set, never queued) and ticks are coalesced into a queue of one with `try_send`. So a stop
//! is seen in every phase, start-up included, and a second signal exits at once whatever the
//! runtime is doing.

use std::io::Read;

use tokio::sync::{mpsc, watch};

/// The asking side of a stop: set once, by whoever asks first.
#[derive(Clone)]
pub struct Stopper(std::sync::Arc<watch::Sender<Option<&'static str>>>);

/// The waiting side of a stop.
#[derive(Clone)]
pub struct StopRequest(watch::Receiver<Option<&'static str>>);

pub fn channel() -> (Stopper, StopRequest) {
    let (tx, rx) = watch::channel(None);
    (Stopper(std::sync::Arc::new(tx)), StopRequest(rx))
}

impl Stopper {
    /// Asks for a stop (the first reason is kept). Never blocks.
    pub fn request(&self, why: &'static str) {
        self.0.send_if_modified(|reason| {
            if reason.is_none() {
                *reason = Some(why);
                true
            } else {
                false
            }
        });
    }
}

impl StopRequest {
    /// Resolves with the reason once a stop was asked for (at once if it already was).
    pub async fn wait(&mut self) -> &'static str {
        match self.0.wait_for(Option::is_some).await {
            Ok(reason) => reason.unwrap_or("stop"),
            // Every asker is gone: nobody can ask any more, so this never resolves.
            Err(_) => std::future::pending().await,
        }
    }
}

/// SIGTERM / SIGINT via signal-hook on a thread of its own: the first asks for a clean stop,
/// the second exits at once (exit code 1), in every phase.
pub fn spawn_signal_watcher(stop: Stopper) -> anyhow::Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT])?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let mut seen = 0;
            for sig in signals.forever() {
                seen += 1;
                if seen > 1 {
                    eprintln!("E! second signal: exiting without a clean disconnect");
                    std::process::exit(super::EXIT_FAILURE);
                }
                stop.request(if sig == SIGTERM { "SIGTERM" } else { "SIGINT" });
            }
        })?;
    Ok(())
}

/// How much of stdin is read at a time. Lines are never kept: a tick is a newline, whatever
/// came before it, so a line of any length costs this much memory and no more.
const STDIN_CHUNK: usize = 4096;

/// Reads stdin on a thread of its own. Every chunk holding a newline is a tick, when `ticks`
/// is given (`signal = "STDIN"`; a tick already waiting absorbs it). EOF is a stop: Telegraf
/// wants us gone.
pub fn spawn_stdin_reader(ticks: Option<mpsc::Sender<()>>, stop: Stopper) {
    spawn_reader(std::io::stdin(), ticks, stop);
}

fn spawn_reader(
    mut input: impl Read + Send + 'static,
    ticks: Option<mpsc::Sender<()>>,
    stop: Stopper,
) {
    std::thread::Builder::new()
        .name("stdin".into())
        .spawn(move || {
            let mut chunk = [0u8; STDIN_CHUNK];
            loop {
                match input.read(&mut chunk) {
                    Ok(0) => break,
                    Ok(n) => {
                        let Some(ticks) = &ticks else { continue };
                        if chunk[..n].contains(&b'\n') {
                            match ticks.try_send(()) {
                                Ok(()) | Err(mpsc::error::TrySendError::Full(())) => {}
                                Err(mpsc::error::TrySendError::Closed(())) => return,
                            }
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        log::warn!("cannot read stdin ({e}): taking it as closed");
                        break;
                    }
                }
            }
            stop.request("stdin closed");
        })
        .expect("cannot start the stdin thread");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_first_reason_is_kept_and_a_late_waiter_sees_it() {
        let (stop, mut req) = channel();
        stop.request("SIGTERM");
        stop.request("stdin closed");
        assert_eq!(req.wait().await, "SIGTERM");
        assert_eq!(req.clone().wait().await, "SIGTERM");
    }

    #[tokio::test]
    async fn stdin_lines_are_ticks_and_eof_is_a_stop() {
        let (stop, mut req) = channel();
        let (tx, mut rx) = mpsc::channel(1);
        spawn_reader(&b"a\n"[..], Some(tx), stop);
        assert_eq!(rx.recv().await, Some(()));
        assert_eq!(req.wait().await, "stdin closed");
    }

    #[tokio::test]
    async fn without_ticks_lines_are_ignored_but_eof_still_stops() {
        let (stop, mut req) = channel();
        spawn_reader(&b"a\nb\n"[..], None, stop);
        assert_eq!(req.wait().await, "stdin closed");
    }

    /// A reader that gives these results in turn, then EOF.
    struct Scripted(std::collections::VecDeque<std::io::Result<&'static [u8]>>);

    impl Read for Scripted {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            match self.0.pop_front() {
                None => Ok(0),
                Some(Err(e)) => Err(e),
                Some(Ok(bytes)) => {
                    buf[..bytes.len()].copy_from_slice(bytes);
                    Ok(bytes.len())
                }
            }
        }
    }

    #[tokio::test]
    async fn an_interrupted_read_is_retried_and_another_error_is_a_stop() {
        use std::io::{Error, ErrorKind};
        // EINTR (a signal arrived during the read) is not the end of stdin: the line after it
        // is still a tick.
        let (stop, mut req) = channel();
        let (tx, mut rx) = mpsc::channel(1);
        let input = Scripted([Err(Error::from(ErrorKind::Interrupted)), Ok(&b"\n"[..])].into());
        spawn_reader(input, Some(tx), stop);
        assert_eq!(rx.recv().await, Some(()));
        assert_eq!(req.wait().await, "stdin closed");
        // Any other error is taken as a closed stdin, with what follows it never read.
        let (stop, mut req) = channel();
        let (tx, mut rx) = mpsc::channel(1);
        let input = Scripted([Err(Error::from(ErrorKind::InvalidData)), Ok(&b"\n"[..])].into());
        spawn_reader(input, Some(tx), stop);
        let why = tokio::time::timeout(std::time::Duration::from_secs(30), req.wait()).await;
        assert_eq!(why, Ok("stdin closed"));
        assert_eq!(rx.recv().await, None, "no tick after the error");
    }

    /// A reader that hands out a long line without a newline, then a newline, counting how
    /// much it was asked for at most in one read.
    struct LongLine {
        left: usize,
        largest_read: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    }

    impl Read for LongLine {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            use std::sync::atomic::Ordering;
            self.largest_read.fetch_max(buf.len(), Ordering::Relaxed);
            if self.left == 0 {
                return Ok(0);
            }
            let n = buf.len().min(self.left);
            buf[..n].fill(b'x');
            self.left -= n;
            if self.left == 0 {
                buf[n - 1] = b'\n';
            }
            Ok(n)
        }
    }

    #[tokio::test]
    async fn a_long_line_is_read_in_bounded_pieces_and_is_one_tick() {
        let largest = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (stop, mut req) = channel();
        let (tx, mut rx) = mpsc::channel(1);
        let input = LongLine {
            left: 8 << 20,
            largest_read: largest.clone(),
        };
        spawn_reader(input, Some(tx), stop);
        assert_eq!(rx.recv().await, Some(()));
        assert_eq!(req.wait().await, "stdin closed");
        let largest = largest.load(std::sync::atomic::Ordering::Relaxed);
        assert!(largest <= STDIN_CHUNK, "read {largest} bytes at once");
    }
}
