//! What ends the process, and what drives `run`: signals, stdin lines and stdin EOF.
//!
//! Signals come on a thread of their own (a second one must exit whatever the runtime is
//! doing). Stdin is read on the runtime when it is a pipe or a socket (Telegraf's case): one
//! task woken by epoll, no thread and no cross-thread wake-up per tick. A terminal or a file
//! is read on a thread instead. Nothing here ever blocks on the runtime: a stop request is a
//! `watch` value (set, never queued) and ticks are coalesced into a queue of one with
//! `try_send`. So a stop is seen in every phase, start-up included.

use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use tokio::io::unix::AsyncFd;

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

/// What one chunk of stdin means: a tick when it holds a newline and ticks are wanted (a tick
/// already waiting absorbs it). False when nobody takes ticks any more.
fn on_chunk(chunk: &[u8], ticks: Option<&mpsc::Sender<()>>) -> bool {
    let Some(ticks) = ticks else { return true };
    if chunk.contains(&b'\n') {
        match ticks.try_send(()) {
            Ok(()) | Err(mpsc::error::TrySendError::Full(())) => {}
            Err(mpsc::error::TrySendError::Closed(())) => return false,
        }
    }
    true
}

/// Reads stdin: every chunk holding a newline is a tick, when `ticks` is given
/// (`signal = "STDIN"`). EOF is a stop: Telegraf wants us gone. On the runtime when stdin is a
/// pipe or a socket; on a thread of its own otherwise. Call on the runtime.
pub fn spawn_stdin_reader(ticks: Option<mpsc::Sender<()>>, stop: Stopper) {
    match NonBlocking::pipe_or_socket(std::io::stdin().as_fd().try_clone_to_owned()) {
        Ok(input) => {
            tokio::spawn(read_on_runtime(input, ticks, stop));
        }
        Err(why) => {
            log::debug!("reading stdin on a thread: {why}");
            spawn_reader(std::io::stdin(), ticks, stop);
        }
    }
}

/// A pipe or socket in non-blocking mode, its original mode restored when dropped (the file
/// description is shared with whoever handed us the fd).
#[derive(Debug)]
struct NonBlocking {
    file: std::fs::File,
    flags: libc::c_int,
}

impl NonBlocking {
    fn pipe_or_socket(fd: std::io::Result<OwnedFd>) -> Result<Self, String> {
        use std::os::unix::fs::FileTypeExt;
        let file = std::fs::File::from(fd.map_err(|e| format!("cannot duplicate it: {e}"))?);
        let kind = file
            .metadata()
            .map_err(|e| format!("cannot stat it: {e}"))?
            .file_type();
        if !(kind.is_fifo() || kind.is_socket()) {
            return Err("it is neither a pipe nor a socket".into());
        }
        let fd = file.as_raw_fd();
        // SAFETY: fcntl on a descriptor this function owns; F_GETFL and F_SETFL touch no
        // memory.
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
        if flags < 0 || unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
            return Err(format!(
                "cannot make it non-blocking: {}",
                std::io::Error::last_os_error()
            ));
        }
        Ok(NonBlocking { file, flags })
    }
}

impl Drop for NonBlocking {
    fn drop(&mut self) {
        // SAFETY: as above; the descriptor is still ours until the File drops after this.
        unsafe { libc::fcntl(self.file.as_raw_fd(), libc::F_SETFL, self.flags) };
    }
}

impl AsRawFd for NonBlocking {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.file.as_raw_fd()
    }
}

/// The reader as a task: woken when the pipe has bytes (or its writer closed it).
async fn read_on_runtime(input: NonBlocking, ticks: Option<mpsc::Sender<()>>, stop: Stopper) {
    // SAFETY: `input` owns its descriptor (a `File`), which stays open and the same until
    // the `AsyncFd` drops it.
    let registered =
        unsafe { AsyncFd::register_with_interest(input, tokio::io::Interest::READABLE) };
    let input = match registered {
        Ok(fd) => fd,
        Err(e) => {
            log::warn!("cannot watch stdin ({e}): taking it as closed");
            stop.request("stdin closed");
            return;
        }
    };
    let mut chunk = [0u8; STDIN_CHUNK];
    loop {
        let mut ready = match input.readable().await {
            Ok(r) => r,
            Err(e) => {
                log::warn!("cannot watch stdin ({e}): taking it as closed");
                break;
            }
        };
        // Woken without bytes (`Err`): readiness is cleared, wait again.
        if let Ok(read) = ready.try_io(|fd| (&fd.get_ref().file).read(&mut chunk)) {
            match after_read(read, &chunk, ticks.as_ref()) {
                Next::Read => {}
                Next::Stop => break,
                Next::Quit => return,
            }
        }
    }
    stop.request("stdin closed");
}

/// What a reader does after one read.
enum Next {
    Read,
    /// EOF, or an error taken as one: ask for a stop.
    Stop,
    /// Nobody takes ticks any more: end quietly.
    Quit,
}

/// What one read of stdin means, for both readers: EINTR (a signal arrived during the read)
/// is not the end of stdin; any other error is taken as a closed stdin.
fn after_read(
    read: std::io::Result<usize>,
    chunk: &[u8],
    ticks: Option<&mpsc::Sender<()>>,
) -> Next {
    match read {
        Ok(0) => Next::Stop,
        Ok(n) if on_chunk(&chunk[..n], ticks) => Next::Read,
        Ok(_) => Next::Quit,
        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => Next::Read,
        Err(e) => {
            log::warn!("cannot read stdin ({e}): taking it as closed");
            Next::Stop
        }
    }
}

/// Reads on a thread of its own (a terminal, a file, or a test's reader).
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
                match after_read(input.read(&mut chunk), &chunk, ticks.as_ref()) {
                    Next::Read => {}
                    Next::Stop => break,
                    Next::Quit => return,
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

    /// A pipe read on the runtime, as Telegraf's stdin is: each line is a tick as it is
    /// written, a line split across writes is one tick, and closing the write end is a stop.
    #[tokio::test]
    async fn a_pipe_is_read_on_the_runtime_line_by_line_until_it_closes() {
        use std::io::Write;
        let (reader, mut writer) = std::io::pipe().unwrap();
        let input = NonBlocking::pipe_or_socket(Ok(OwnedFd::from(reader))).unwrap();
        let (stop, mut req) = channel();
        let (tx, mut rx) = mpsc::channel(1);
        let task = tokio::spawn(read_on_runtime(input, Some(tx), stop));
        for _ in 0..3 {
            writer.write_all(b"tick\n").unwrap();
            assert_eq!(rx.recv().await, Some(()));
        }
        writer.write_all(b"half a ").unwrap();
        writer.write_all(b"line\n").unwrap();
        assert_eq!(rx.recv().await, Some(()));
        drop(writer);
        assert_eq!(req.wait().await, "stdin closed");
        task.await.unwrap();
        assert_eq!(rx.recv().await, None, "the reader is gone");
    }

    #[test]
    fn a_file_is_not_read_on_the_runtime_and_a_pipe_gets_its_mode_back() {
        let file = tempfile::tempfile().unwrap();
        let err = NonBlocking::pipe_or_socket(Ok(OwnedFd::from(file))).unwrap_err();
        assert!(err.contains("neither a pipe nor a socket"), "{err}");
        let (reader, _writer) = std::io::pipe().unwrap();
        let flags = |fd: &dyn AsRawFd| unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) };
        let before = flags(&reader);
        let input = NonBlocking::pipe_or_socket(reader.as_fd().try_clone_to_owned()).unwrap();
        assert_ne!(
            flags(&reader) & libc::O_NONBLOCK,
            0,
            "non-blocking while read"
        );
        drop(input);
        assert_eq!(
            flags(&reader),
            before,
            "the shared description is as it was"
        );
        // One handed over non-blocking already stays so, during and after.
        unsafe { libc::fcntl(reader.as_raw_fd(), libc::F_SETFL, before | libc::O_NONBLOCK) };
        let input = NonBlocking::pipe_or_socket(reader.as_fd().try_clone_to_owned()).unwrap();
        assert_ne!(flags(&reader) & libc::O_NONBLOCK, 0);
        drop(input);
        assert_eq!(flags(&reader), before | libc::O_NONBLOCK);
    }
}
