//! systemd's notification protocol (`sd_notify(3)`): datagrams such as
//! `READY=1` to the socket named by `NOTIFY_SOCKET`.
//!
//! Without `NOTIFY_SOCKET` (not started by systemd with `Type=notify`)
//! every call does nothing, so odin runs the same under systemd and
//! without it. A name starting with `@` is an abstract socket.

use std::io;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

/// A connection to systemd's notification socket, or nothing.
#[derive(Debug)]
pub struct Notifier {
    target: Option<(UnixDatagram, SocketAddr)>,
    watchdog: Option<Duration>,
}

impl Notifier {
    /// From the environment: `NOTIFY_SOCKET` and `WATCHDOG_USEC` (honoured
    /// only when `WATCHDOG_PID` is unset or this process).
    pub fn from_env() -> io::Result<Self> {
        let socket = std::env::var_os("NOTIFY_SOCKET");
        let watchdog = std::env::var("WATCHDOG_USEC")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .filter(|_| {
                std::env::var("WATCHDOG_PID")
                    .ok()
                    .and_then(|p| p.parse::<u32>().ok())
                    .is_none_or(|p| p == std::process::id())
            })
            .map(Duration::from_micros);
        let target = match socket {
            Some(name) => Some(Self::connect(name.to_str().ok_or_else(|| {
                io::Error::new(io::ErrorKind::InvalidInput, "NOTIFY_SOCKET is not UTF-8")
            })?)?),
            None => None,
        };
        Ok(Self { target, watchdog })
    }

    /// A notifier that sends nothing.
    pub fn disabled() -> Self {
        Self {
            target: None,
            watchdog: None,
        }
    }

    fn connect(name: &str) -> io::Result<(UnixDatagram, SocketAddr)> {
        let addr = match name.strip_prefix('@') {
            Some(abstract_name) => {
                use std::os::linux::net::SocketAddrExt;
                SocketAddr::from_abstract_name(abstract_name.as_bytes())?
            }
            None => SocketAddr::from_pathname(name)?,
        };
        // Never block the daemon on a receiver that does not read: a full
        // queue fails the send (WouldBlock) instead.
        let sock = UnixDatagram::unbound()?;
        sock.set_nonblocking(true)?;
        Ok((sock, addr))
    }

    /// Whether systemd listens.
    pub fn enabled(&self) -> bool {
        self.target.is_some()
    }

    /// How often systemd wants `WATCHDOG=1`; send at half this interval.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.watchdog
    }

    /// Sends one state string (lines `KEY=value`).
    pub fn send(&self, state: &str) -> io::Result<()> {
        match &self.target {
            Some((sock, addr)) => sock.send_to_addr(state.as_bytes(), addr).map(drop),
            None => Ok(()),
        }
    }

    /// `READY=1` with a status line.
    pub fn ready(&self, status: &str) -> io::Result<()> {
        self.send(&format!("READY=1\nSTATUS={status}"))
    }

    /// `RELOADING=1` with the monotonic time systemd expects.
    pub fn reloading(&self) -> io::Result<()> {
        self.send(&format!("RELOADING=1\nMONOTONIC_USEC={}", monotonic_usec()))
    }

    /// `STOPPING=1`.
    pub fn stopping(&self) -> io::Result<()> {
        self.send("STOPPING=1")
    }

    /// `STATUS=` for `systemctl status`.
    pub fn status(&self, status: &str) -> io::Result<()> {
        self.send(&format!("STATUS={status}"))
    }

    /// `WATCHDOG=1`.
    pub fn watchdog(&self) -> io::Result<()> {
        self.send("WATCHDOG=1")
    }
}

/// CLOCK_MONOTONIC in microseconds.
fn monotonic_usec() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec through a valid pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1_000
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recv(sock: &UnixDatagram) -> String {
        let mut buf = [0u8; 512];
        let n = sock.recv(&mut buf).unwrap();
        String::from_utf8(buf[..n].to_vec()).unwrap()
    }

    #[test]
    fn sends_the_protocol_to_a_path_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let listener = UnixDatagram::bind(&path).unwrap();
        let n = Notifier {
            target: Some(Notifier::connect(path.to_str().unwrap()).unwrap()),
            watchdog: None,
        };
        assert!(n.enabled());
        n.ready("2 stages").unwrap();
        assert_eq!(recv(&listener), "READY=1\nSTATUS=2 stages");
        let before = monotonic_usec();
        n.reloading().unwrap();
        let msg = recv(&listener);
        let usec: u64 = msg
            .strip_prefix("RELOADING=1\nMONOTONIC_USEC=")
            .unwrap()
            .parse()
            .unwrap();
        assert!(usec >= before && usec <= monotonic_usec());
        n.watchdog().unwrap();
        assert_eq!(recv(&listener), "WATCHDOG=1");
        n.stopping().unwrap();
        assert_eq!(recv(&listener), "STOPPING=1");
    }

    #[test]
    fn a_receiver_that_does_not_read_never_blocks_the_sender() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let _listener = UnixDatagram::bind(&path).unwrap();
        let n = Notifier {
            target: Some(Notifier::connect(path.to_str().unwrap()).unwrap()),
            watchdog: None,
        };
        // The kernel queues a few datagrams (net.unix.max_dgram_qlen), then
        // the send fails instead of waiting.
        let failed = (0..1000).filter_map(|_| n.status("x").err()).next();
        assert_eq!(failed.map(|e| e.kind()), Some(io::ErrorKind::WouldBlock));
    }

    #[test]
    fn abstract_sockets_work_too() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("odin-test-{}", std::process::id());
        let listener =
            UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap())
                .unwrap();
        let n = Notifier {
            target: Some(Notifier::connect(&format!("@{name}")).unwrap()),
            watchdog: None,
        };
        n.status("ok").unwrap();
        assert_eq!(recv(&listener), "STATUS=ok");
    }

    #[test]
    fn without_a_socket_nothing_is_sent_and_nothing_fails() {
        let n = Notifier::disabled();
        assert!(!n.enabled());
        n.ready("x").unwrap();
        n.stopping().unwrap();
        assert_eq!(n.watchdog_interval(), None);
    }
}
