//! Signals as messages: a signal-hook thread turns SIGHUP, SIGTERM,
//! SIGINT and SIGUSR1 into [`Control`] messages for the daemon loop, which
//! waits on them together with frames and ticks. Nothing runs in a signal
//! handler except signal-hook's own self-pipe write.
//!
//! A second SIGTERM or SIGINT exits at once, without draining: the way out
//! when a drain hangs.

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

/// Exit status of the second stop signal (128 + SIGINT, as a shell would).
pub const FORCED_EXIT: i32 = 130;

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
                        if stops > 1 {
                            eprintln!("odin: second signal {s}, exiting without draining");
                            std::process::exit(FORCED_EXIT);
                        }
                        Control::Stop(s)
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
