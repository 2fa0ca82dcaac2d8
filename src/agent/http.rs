//! The scrape endpoint: `GET /metrics` over plain HTTP/1.1 on one thread.
//!
//! Prometheus scrapes rarely and one at a time, so one thread serving one
//! connection at a time is enough; requests are bounded in size and time
//! so a slow or hostile client cannot hold the endpoint.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use super::metrics::Metrics;

/// Longest request head accepted.
const MAX_REQUEST: u64 = 8 * 1024;

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
                for conn in listener.incoming() {
                    if flag.load(Ordering::Acquire) {
                        break;
                    }
                    if let Ok(stream) = conn
                        && let Err(e) = serve(stream, &metrics)
                    {
                        tracing::debug!("metrics request: {e}");
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

fn serve(stream: TcpStream, metrics: &Metrics) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.set_write_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new((&stream).take(MAX_REQUEST));
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
