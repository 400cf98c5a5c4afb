//! `blebatt run`: the Telegraf `inputs.execd` contract.
//!
//! - A tick is a line on stdin (`signal = "STDIN"`) or the `--interval` timer (`signal = "none"`).
//! - Every tick polls every device that is not still busy with the previous tick (ticks are
//!   coalesced per device, so a slow device never delays the others).
//! - Each reading is written to stdout as soon as its device answers, and flushed.
//! - Stdin EOF, SIGTERM or SIGINT: stop ticking, let in-flight polls finish briefly,
//!   disconnect every device, exit 0. A second signal exits at once.

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tokio::sync::mpsc;

use super::printer::{Printed, Printer};
use super::stop;
use super::{EXIT_OK, STOP_GRACE, resolve, shutdown, start_devices};
use crate::cli::RunArgs;
use crate::output;

/// What drives the loop.
#[derive(Debug)]
enum Event {
    Tick,
    Stop(&'static str),
}

pub async fn run(args: RunArgs) -> anyhow::Result<i32> {
    let cfg = resolve(&args.devices)?;
    let interval = args.interval.or(cfg.interval);
    // The demo's counters are kept only where asked: a try-out leaves no files behind.
    let chosen = args.state_dir.clone().or(cfg.state_dir.clone());
    let metering = super::Metering {
        state_dir: if args.devices.demo && chosen.is_none() {
            None
        } else {
            crate::energy::state_dir(chosen.as_deref())
        },
        interval,
    };
    let (stopper, mut stop) = stop::channel();
    stop::spawn_signal_watcher(stopper.clone())?;
    // Ticks from stdin: a queue of one, coalesced at the sender.
    let (tick_tx, mut ticks) = mpsc::channel::<()>(1);
    // With --interval (signal = "none"), /dev/null as stdin (a service) gives EOF at once:
    // then stdin is not watched at all.
    if interval.is_none() || !stdin_is_null() {
        stop::spawn_stdin_reader(interval.is_none().then(|| tick_tx.clone()), stopper);
    }

    // Start-up waits on BlueZ (bounded, but for longer than Telegraf waits for us to stop):
    // a stop abandons it. No device task exists until every link is made.
    let super::Started {
        handles,
        mut failure,
        _bt,
    } = tokio::select! {
        started = start_devices(&cfg, args.devices.demo, &metering) => started?,
        why = stop.wait() => {
            log::info!("{why}: stopping before any device was started");
            return Ok(EXIT_OK);
        }
    };
    log::info!(
        "polling {} device(s) {}",
        handles.len(),
        match interval {
            Some(i) => format!("every {}", humantime::format_duration(i)),
            None => "on each line read from stdin".into(),
        }
    );

    let mut busy = vec![false; handles.len()];
    let mut in_flight = FuturesUnordered::new();
    let mut timer = interval.map(|i| {
        let mut t = tokio::time::interval(i);
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        t
    });
    let mut stdout = Printer::spawn(std::io::stdout());

    let mut failure_err: Option<anyhow::Error> = None;
    let why = loop {
        let tick = async {
            match timer.as_mut() {
                Some(t) => {
                    t.tick().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        let event = tokio::select! {
            why = stop.wait() => Event::Stop(why),
            Some(()) = ticks.recv() => Event::Tick,
            reason = failure.wait() => {
                failure_err = Some(anyhow::anyhow!("{reason}; exiting so that Telegraf restarts blebatt"));
                break "Bluetooth failed";
            }
            _ = tick => Event::Tick,
            Some((i, result)) = in_flight.next(), if !in_flight.is_empty() => {
                busy[i] = false;
                match emit(&mut stdout, result) {
                    Ok(true) => {}
                    Ok(false) => break "stdout closed",
                    Err(e) => {
                        failure_err = Some(e);
                        break "fatal error";
                    }
                }
                continue;
            }
        };
        let (tick, stop_why) = match event {
            Event::Tick => (true, None),
            // A line read before the EOF (or the signal) still asks for its readings: the stdin
            // reader queues its tick before it asks for the stop, so that tick is here now.
            Event::Stop(why) => (ticks.try_recv().is_ok(), Some(why)),
        };
        if tick {
            for (i, h) in handles.iter().enumerate() {
                if busy[i] {
                    log::debug!(
                        "{}: still busy with the previous tick; coalesced",
                        h.spec.name
                    );
                    continue;
                }
                busy[i] = true;
                in_flight.push(async move { (i, h.poll().await) });
            }
        }
        if let Some(why) = stop_why {
            break why;
        }
    };
    log::info!("{why}: stopping");
    drop(tick_tx);

    // Let polls that are nearly done finish, so their lines are not lost.
    let grace = tokio::time::sleep(STOP_GRACE);
    tokio::pin!(grace);
    while !in_flight.is_empty() {
        tokio::select! {
            // A reading that is ready is printed even when the grace has run out meanwhile.
            biased;
            Some((_, result)) = in_flight.next() => {
                match emit(&mut stdout, result) {
                    Ok(true) => {}
                    Ok(false) => break,
                    Err(e) => {
                        failure_err.get_or_insert(e);
                        break;
                    }
                }
            }
            _ = &mut grace => break,
        }
    }
    drop(in_flight);
    // Concurrently: the queued lines are written while the devices disconnect, so a stuck
    // stdout adds nothing to the time a stop takes (grace + shutdown grace, under 2 s).
    tokio::join!(shutdown(handles), stdout.finish());
    match failure_err {
        Some(e) => Err(e),
        None => Ok(EXIT_OK),
    }
}

/// Prints one poll result; `Ok(false)` when stdout is gone (Telegraf stopped reading).
/// A device task that died is an error: we exit non-zero so Telegraf restarts us.
fn emit(
    stdout: &mut Printer,
    result: Result<crate::reading::Reading, crate::device::DeviceError>,
) -> anyhow::Result<bool> {
    let reading = match result {
        Ok(r) => r,
        Err(e @ crate::device::DeviceError::TaskGone { .. }) => return Err(e.into()),
        // The device task already logged this once per state change.
        Err(e) => {
            log::debug!("{e}");
            return Ok(true);
        }
    };
    let mut line = Vec::with_capacity(512);
    output::write_line(&mut line, &reading);
    match stdout.print(line) {
        Printed::Queued | Printed::Dropped => Ok(true),
        Printed::Closed => Ok(false),
        Printed::Failed => anyhow::bail!("cannot write to stdout"),
    }
}

fn stdin_is_null() -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let (Ok(stdin), Ok(null)) = (
            std::fs::metadata("/dev/stdin"),
            std::fs::metadata("/dev/null"),
        ) else {
            return false;
        };
        stdin.rdev() == null.rdev() && stdin.ino() == null.ino()
    }
    #[cfg(not(unix))]
    false
}
