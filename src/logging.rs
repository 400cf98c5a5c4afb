//! Logs to stderr, one line each, prefixed with Telegraf's level markers (`E! `, `W! `, `I! `,
//! `D! `) so that `inputs.execd` routes them to the right level. Never to stdout.

use std::io::Write;

use log::{Level, LevelFilter, Metadata, Record};

struct StderrLogger {
    /// Level for blebatt's own messages.
    own: LevelFilter,
    /// Level for other crates' messages (btleplug, bluez-async, ...).
    others: LevelFilter,
}

fn prefix(level: Level) -> &'static str {
    match level {
        Level::Error => "E! ",
        Level::Warn => "W! ",
        Level::Info => "I! ",
        Level::Debug | Level::Trace => "D! ",
    }
}

impl log::Log for StderrLogger {
    fn enabled(&self, m: &Metadata) -> bool {
        let max = if m.target().starts_with("blebatt") {
            self.own
        } else {
            self.others
        };
        m.level() <= max
    }

    fn log(&self, record: &Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let msg = record.args().to_string();
        let mut err = std::io::stderr().lock();
        // One line per message: a newline inside would reach Telegraf as an unprefixed line.
        let _ = writeln!(
            err,
            "{}{}",
            prefix(record.level()),
            msg.replace('\n', " | ")
        );
    }

    fn flush(&self) {}
}

/// Installs the logger. `verbosity`: -1 quiet (errors and warnings), 0 info, 1 debug, 2 debug
/// including other crates.
pub fn init(verbosity: i8) {
    let own = match verbosity {
        i8::MIN..=-1 => LevelFilter::Warn,
        0 => LevelFilter::Info,
        _ => LevelFilter::Debug,
    };
    let others = if verbosity >= 2 {
        LevelFilter::Debug
    } else {
        LevelFilter::Warn
    };
    let logger = StderrLogger { own, others };
    if log::set_boxed_logger(Box::new(logger)).is_ok() {
        log::set_max_level(own.max(others));
    }
}

/// Installs the panic hook: a panic becomes one `E!` line for Telegraf, and under `-v` the
/// backtrace follows as `D!` lines (one per frame line, so that none reaches Telegraf
/// unprefixed). The process carries on: bluez-async 0.9 can panic inside a background task of
/// its own while everything else keeps working, and a panic in one of our device tasks is
/// noticed by the run loop, which then exits non-zero.
pub fn install_panic_hook(verbosity: i8) {
    let with_backtrace = verbosity >= 1;
    std::panic::set_hook(Box::new(move |info| {
        let backtrace =
            with_backtrace.then(|| std::backtrace::Backtrace::force_capture().to_string());
        let mut err = std::io::stderr().lock();
        for line in panic_lines(&info.to_string(), backtrace.as_deref()) {
            let _ = writeln!(err, "{line}");
        }
    }));
}

/// The stderr lines for a panic: the message on one `E!` line, then each non-empty line of
/// the backtrace, if any, as a `D!` line.
fn panic_lines(message: &str, backtrace: Option<&str>) -> Vec<String> {
    let mut lines = vec![format!(
        "E! internal error: {}",
        message.replace('\n', " | ")
    )];
    lines.extend(
        backtrace
            .unwrap_or_default()
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| format!("D! {l}")),
    );
    lines
}

#[cfg(test)]
mod tests {
    use super::panic_lines;

    #[test]
    fn a_panic_is_one_error_line_without_a_backtrace() {
        assert_eq!(
            panic_lines("panicked at src/x.rs:1:2:\nboom", None),
            ["E! internal error: panicked at src/x.rs:1:2: | boom"]
        );
    }

    #[test]
    fn a_backtrace_follows_as_debug_lines_each_prefixed() {
        let bt = "   0: blebatt::f\n             at ./src/x.rs:1:2\n\n   1: main\n";
        assert_eq!(
            panic_lines("boom", Some(bt)),
            [
                "E! internal error: boom",
                "D!    0: blebatt::f",
                "D!              at ./src/x.rs:1:2",
                "D!    1: main",
            ]
        );
    }
}
