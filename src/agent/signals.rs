//! Signals as messages: a signal-hook thread turns SIGHUP, SIGTERM,
//! SIGINT and SIGUSR1 into [`Control`] messages for the daemon loop, which
//! waits on them together with frames and ticks. Nothing runs in a signal
//! handler except signal-hook's own self-pipe write.
//!
//! A second SIGTERM or SIGINT hurries the stop ([`hurried`]): the daemon
//! stops waiting for accepted requests, drains the pipeline and still
//! lifts its caps and removes its cgroups. If the process has not exited
//! [`FORCED_GRACE`] later (a drain that hangs), or at a third signal, the
//! signal thread runs the clean-up registered with [`on_forced_exit`]
//! (undo from the journal) itself and exits with [`FORCED_EXIT`].

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crossbeam_channel::{Receiver, unbounded};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR1};
use signal_hook::iterator::Signals;

/// What a signal asks the daemon to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Control {
    /// SIGHUP: re-read the configuration and apply it if valid.
    Reload,
    /// SIGTERM or SIGINT: drain, write the summary, exit 0.
    Stop(i32),
    /// SIGUSR1: log a dump of the state.
    Dump,
}

/// Exit status of a forced exit (128 + SIGINT, as a shell would).
pub const FORCED_EXIT: i32 = 130;

/// How long a hurried stop may take before the signal thread cleans up
/// and exits on its own.
pub const FORCED_GRACE: Duration = Duration::from_secs(10);

static HURRIED: AtomicBool = AtomicBool::new(false);

type Cleanup = Box<dyn Fn() + Send + Sync>;

static CLEANUP: Mutex<Option<Cleanup>> = Mutex::new(None);

/// Whether a second stop signal asked to cut the stop short.
pub fn hurried() -> bool {
    HURRIED.load(Ordering::Relaxed)
}

/// Registers what must happen before a forced exit (undoing odin's
/// cgroup changes); it replaces what was registered before.
pub fn on_forced_exit(f: impl Fn() + Send + Sync + 'static) {
    *CLEANUP.lock().unwrap_or_else(|e| e.into_inner()) = Some(Box::new(f));
}

/// Runs the registered clean-up and exits with [`FORCED_EXIT`].
fn forced_exit(why: &str) -> ! {
    eprintln!("odin: {why}: undoing cgroup changes and exiting without draining");
    if let Some(f) = CLEANUP.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
        f();
    }
    std::process::exit(FORCED_EXIT);
}

/// Installs the handlers and starts the thread; the receiver gets one
/// message per signal delivered (the kernel merges a burst of the same
/// signal that arrives before the thread reads it).
pub fn spawn() -> std::io::Result<Receiver<Control>> {
    let mut signals = Signals::new([SIGHUP, SIGINT, SIGTERM, SIGUSR1])?;
    let (tx, rx) = unbounded();
    std::thread::Builder::new()
        .name("odin-signals".into())
        .spawn(move || {
            let mut stops = 0;
            for s in signals.forever() {
                let msg = match s {
                    SIGHUP => Control::Reload,
                    SIGUSR1 => Control::Dump,
                    _ => {
                        stops += 1;
                        match stops {
                            1 => Control::Stop(s),
                            2 => {
                                eprintln!(
                                    "odin: second signal {s}: cutting the stop short \
                                     (a third exits at once)"
                                );
                                HURRIED.store(true, Ordering::Relaxed);
                                let _ = std::thread::Builder::new()
                                    .name("odin-forced-exit".into())
                                    .spawn(|| {
                                        std::thread::sleep(FORCED_GRACE);
                                        forced_exit("the stop is still not done");
                                    });
                                Control::Stop(s)
                            }
                            _ => forced_exit(&format!("signal {s} again")),
                        }
                    }
                };
                if tx.send(msg).is_err() {
                    // The daemon is gone; nothing listens any more.
                    break;
                }
            }
        })?;
    Ok(rx)
}
