//! The scrape endpoint: `GET /metrics` over plain HTTP/1.1.
//!
//! One accept thread hands each connection to a short-lived thread, at
//! most [`MAX_CLIENTS`] at once (one more is closed at once), so a slow
//! client never blocks a scrape. A request must arrive whole within
//! [`READ_DEADLINE`] and is bounded in size; the answer must be taken within
//! `WRITE_TIMEOUT`. Accept errors (EMFILE) back off instead of spinning.
//! Stopping the endpoint joins only the accept thread, so a reload that
//! moves it never waits for a client.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use super::metrics::Metrics;

/// Longest request head accepted.
const MAX_REQUEST: u64 = 8 * 1024;

/// Connections served at once.
pub const MAX_CLIENTS: usize = 4;

/// Time for a whole request head to arrive, from the connection.
pub const READ_DEADLINE: Duration = Duration::from_secs(2);

/// Time for each write of the answer.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// A running endpoint; stops when dropped.
pub struct Server {
    stop: Arc<AtomicBool>,
    addr: std::net::SocketAddr,
    handle: Option<JoinHandle<()>>,
}

impl Server {
    /// Serves `metrics` on `listener` until the server is dropped.
    pub fn start(listener: TcpListener, metrics: Arc<Metrics>) -> std::io::Result<Self> {
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::Builder::new()
            .name("odin-metrics".into())
            .spawn(move || {
                let clients = Arc::new(AtomicUsize::new(0));
                for conn in listener.incoming() {
                    if flag.load(Ordering::Acquire) {
                        break;
                    }
                    let stream = match conn {
                        Ok(s) => s,
                        Err(e) => {
                            // Out of descriptors or similar: wait rather than spin.
                            tracing::debug!("metrics accept: {e}");
                            std::thread::sleep(Duration::from_millis(100));
                            continue;
                        }
                    };
                    if clients.fetch_add(1, Ordering::AcqRel) >= MAX_CLIENTS {
                        clients.fetch_sub(1, Ordering::AcqRel);
                        continue;
                    }
                    let (metrics, count) = (metrics.clone(), clients.clone());
                    let spawned = std::thread::Builder::new()
                        .name("odin-scrape".into())
                        .spawn(move || {
                            if let Err(e) = serve(stream, &metrics) {
                                tracing::debug!("metrics request: {e}");
                            }
                            count.fetch_sub(1, Ordering::AcqRel);
                        });
                    if spawned.is_err() {
                        clients.fetch_sub(1, Ordering::AcqRel);
                    }
                }
            })?;
        Ok(Self {
            stop,
            addr,
            handle: Some(handle),
        })
    }

    /// The address it listens on.
    pub fn addr(&self) -> std::net::SocketAddr {
        self.addr
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200));
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// Reads a request head within [`READ_DEADLINE`] of `start`: each read may
/// wait only for what is left of it, so a client trickling bytes is cut off.
struct Deadline<'a> {
    stream: &'a TcpStream,
    end: std::time::Instant,
}

impl Read for Deadline<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let left = self
            .end
            .saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "request not received in time",
            ));
        }
        self.stream.set_read_timeout(Some(left))?;
        (&*self.stream).read(buf)
    }
}

fn serve(stream: TcpStream, metrics: &Metrics) -> std::io::Result<()> {
    stream.set_write_timeout(Some(WRITE_TIMEOUT))?;
    let source = Deadline {
        stream: &stream,
        end: std::time::Instant::now() + READ_DEADLINE,
    };
    let mut reader = BufReader::new(source.take(MAX_REQUEST));
    let mut request = String::new();
    reader.read_line(&mut request)?;
    // Drain the headers.
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" || line == "\n" {
            break;
        }
    }
    let mut parts = request.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let (status, ctype, body) = match (method, path.split('?').next().unwrap_or("")) {
        ("GET", "/metrics") => (
            "200 OK",
            "text/plain; version=0.0.4; charset=utf-8",
            metrics.render(),
        ),
        ("GET", _) => (
            "404 Not Found",
            "text/plain; charset=utf-8",
            "not found; try /metrics\n".into(),
        ),
        _ => (
            "405 Method Not Allowed",
            "text/plain; charset=utf-8",
            "only GET\n".into(),
        ),
    };
    let mut out = &stream;
    write!(
        out,
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::metrics::{PeMetric, Snapshot, StageMetric};

    fn get(addr: std::net::SocketAddr, path: &str) -> (String, String) {
        let mut s = TcpStream::connect(addr).unwrap();
        write!(s, "GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        (head.to_string(), body.to_string())
    }

    #[test]
    fn scrape_over_http_shows_every_family_with_help_and_type() {
        let metrics = Arc::new(Metrics::default());
        metrics.frame_done(0.02);
        metrics.frame_done(0.3);
        metrics.set_rejected(4);
        metrics.reconfigured("odin", "onset");
        metrics.publish(Snapshot {
            model: "resnet18".into(),
            policy: "odin".into(),
            throughput_fps: 33.5,
            stages: vec![
                StageMetric {
                    pe: "0".into(),
                    units: [0, 6],
                    service_seconds: 0.017,
                },
                StageMetric {
                    pe: "1".into(),
                    units: [6, 12],
                    service_seconds: 0.029,
                },
            ],
            pes: vec![
                PeMetric {
                    cpus: "0".into(),
                    ..Default::default()
                },
                PeMetric {
                    cpus: "1".into(),
                    interference: Some("cpu"),
                    run_delay_ratio: Some(0.45),
                    ..Default::default()
                },
            ],
            slo_attainment: Some(0.9),
            unavailable: vec![("hw_counters".into(), "no hardware PMU".into())],
        });
        let server = Server::start(TcpListener::bind("127.0.0.1:0").unwrap(), metrics).unwrap();
        let (head, body) = get(server.addr(), "/metrics");
        assert!(
            head.starts_with("HTTP/1.1 200") && head.contains("text/plain; version=0.0.4"),
            "{head}"
        );
        for line in [
            "odin_frames_total 2",
            "odin_frames_rejected_total 4",
            "odin_frame_latency_seconds_bucket{le=\"0.025\"} 1",
            "odin_frame_latency_seconds_bucket{le=\"0.5\"} 2",
            "odin_frame_latency_seconds_count 2",
            "odin_stage_service_seconds{stage=\"1\",pe=\"1\"} 0.029",
            "odin_stage_first_unit{stage=\"1\",pe=\"1\"} 6",
            "odin_reconfigurations_total{policy=\"odin\",reason=\"onset\"} 1",
            "odin_pe_interference{pe=\"1\",cpus=\"1\",kind=\"cpu\"} 1",
            "odin_pe_run_delay_ratio{pe=\"1\",cpus=\"1\"} 0.45",
            "odin_signal_unavailable{signal=\"hw_counters\",reason=\"no hardware PMU\"} 1",
            "odin_pipeline_info{model=\"resnet18\",policy=\"odin\"} 1",
        ] {
            assert!(
                body.lines().any(|l| l == line),
                "missing {line:?} in\n{body}"
            );
        }
        // Every sample's family has HELP and TYPE lines before it.
        let mut declared = std::collections::HashSet::new();
        for l in body.lines() {
            if let Some(rest) = l.strip_prefix("# TYPE ") {
                declared.insert(rest.split(' ').next().unwrap().to_string());
            } else if !l.starts_with('#') {
                let name = l.split(['{', ' ']).next().unwrap();
                let family = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|s| name.strip_suffix(s).filter(|f| declared.contains(*f)))
                    .unwrap_or(name);
                assert!(declared.contains(family), "{name} has no TYPE line");
            }
        }
        let (head, _) = get(server.addr(), "/other");
        assert!(head.starts_with("HTTP/1.1 404"), "{head}");
    }

    #[test]
    fn a_client_trickling_bytes_neither_blocks_a_scrape_nor_holds_its_connection() {
        let server = Server::start(
            TcpListener::bind("127.0.0.1:0").unwrap(),
            Arc::new(Metrics::default()),
        )
        .unwrap();
        let addr = server.addr();
        // A client that sends one byte at a time and never ends its head.
        let slow = TcpStream::connect(addr).unwrap();
        let trickle = std::thread::spawn(move || {
            let mut s = &slow;
            // 60 s of trickling at most; the deadline is 2 s.
            let head = b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: ";
            for b in head.iter().cycle().take(600) {
                if s.write_all(&[*b]).is_err() {
                    return true;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            false
        });
        // Others are served while it trickles.
        for _ in 0..3 {
            let (head, body) = get(addr, "/metrics");
            assert!(head.starts_with("HTTP/1.1 200"), "{head}");
            assert!(body.contains("odin_frames_total"));
        }
        // And the trickler is cut off (its writes start failing) well
        // before it would have finished.
        assert!(
            trickle.join().unwrap(),
            "the slow client was not disconnected"
        );
        // Stopping the endpoint does not wait for clients.
        let _hold = TcpStream::connect(addr).unwrap();
        drop(server);
    }

    #[test]
    fn promtool_accepts_the_exposition() {
        let metrics = Metrics::default();
        metrics.frame_done(0.05);
        metrics.reconfigured("lls", "onset");
        metrics.publish(Snapshot {
            model: "m".into(),
            policy: "lls".into(),
            stages: vec![StageMetric {
                pe: "0".into(),
                units: [0, 3],
                service_seconds: 0.01,
            }],
            pes: vec![PeMetric {
                cpus: "0".into(),
                ipc: Some(1.5),
                ..Default::default()
            }],
            ..Default::default()
        });
        crate::agent::metrics::lint_clean(&metrics.render());
    }
}
