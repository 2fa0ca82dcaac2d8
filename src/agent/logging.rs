//! The daemon's output: tracing on stderr at a level a reload can change,
//! and status lines on stdout that never panic on a closed pipe.

use std::sync::OnceLock;

/// Set once stdout is gone (a closed pipe, `odin run | head`): the status
/// lines stop, the run goes on.
static STDOUT_GONE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Writes one line to stdout; a write error (EPIPE) never panics: it ends
/// the lines, says so once on stderr, and the run goes on.
pub(crate) fn say_line(args: std::fmt::Arguments<'_>) {
    use std::io::Write;
    use std::sync::atomic::Ordering;
    if STDOUT_GONE.load(Ordering::Relaxed) {
        return;
    }
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_fmt(args).and_then(|()| out.write_all(b"\n")) {
        STDOUT_GONE.store(true, Ordering::Relaxed);
        tracing::warn!("stdout closed ({e}): no more status lines; the run goes on");
    }
}

/// `println!` that never panics: see [`say_line`].
macro_rules! say {
    ($($arg:tt)*) => {
        $crate::agent::logging::say_line(format_args!($($arg)*))
    };
}
pub(crate) use say;

type LevelSetter =
    Box<dyn Fn(tracing::level_filters::LevelFilter) -> Result<(), String> + Send + Sync>;

static LOG_LEVEL: OnceLock<LevelSetter> = OnceLock::new();

/// Installs the process's tracing subscriber: one line per event on
/// stderr, at a level [`set_log_level`] can change while running.
pub fn init_logging() {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let (level, handle) =
        tracing_subscriber::reload::Layer::new(tracing::level_filters::LevelFilter::INFO);
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false);
    tracing_subscriber::registry().with(level).with(fmt).init();
    let _ = LOG_LEVEL.set(Box::new(move |l| {
        handle.modify(|f| *f = l).map_err(|e| e.to_string())
    }));
}

/// Sets the log level (`error` .. `trace`); without [`init_logging`]
/// (a library user with its own subscriber) it does nothing.
pub fn set_log_level(level: &str) {
    let Ok(l) = level.parse::<tracing::level_filters::LevelFilter>() else {
        tracing::warn!("log level {level:?} not understood");
        return;
    };
    if let Some(set) = LOG_LEVEL.get()
        && let Err(e) = set(l)
    {
        tracing::warn!("cannot change the log level: {e}");
    }
}
