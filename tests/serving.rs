//! `odin run` as an Open Inference Protocol server, driven by the official
//! Triton clients (`tritonclient` 2.41, HTTP with binary data, HTTP JSON,
//! gRPC) through `tests/serving/client.py`, and by raw HTTP for the
//! protocol's edge cases.
//!
//! The Python clients come from the virtualenv `.ci/run` makes (`.venv`,
//! or `ODIN_TEST_PYTHON`); outside CI a test without them says so and
//! returns, in CI it fails.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, unbounded};
use odin::engine::npy;
use serde_json::Value;

/// One odin server at a time: each runs a pinned two-stage pipeline on
/// this small machine.
static SERIAL: Mutex<()> = Mutex::new(());

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The Python with `tritonclient`, or `None` (with a note) outside CI.
fn python() -> Option<PathBuf> {
    common::python_with(
        "tritonclient.http, tritonclient.grpc, numpy",
        "tritonclient[http,grpc]==2.41.0",
    )
}

fn client(py: &Path, args: &[&str]) -> Value {
    let out = Command::new(py)
        .arg(root().join("tests/serving/client.py"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "client.py {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A running `odin run` serving on ephemeral ports.
struct Server {
    child: Child,
    http: String,
    grpc: String,
    metrics: String,
    /// stdout and stderr lines.
    lines: Receiver<String>,
    log: Vec<String>,
    dir: tempfile::TempDir,
}

impl Server {
    /// Starts odin with `model` and `yaml` appended to a config that puts
    /// the metrics and both transports on ephemeral loopback ports.
    fn start(model: &str, server_yaml: &str, top_yaml: &str) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("odin.yaml");
        // Each agent has its own state directory.
        let state = format!(
            "cgroup:\n  state_dir: {}\n",
            dir.path().join("state").display()
        );
        std::fs::write(&config, config_text(server_yaml, &(state + top_yaml))).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_odin"))
            .args(["run", "--model", model, "--config"])
            .arg(&config)
            .arg("--json-summary")
            .arg(dir.path().join("summary.json"))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, lines) = unbounded();
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    let _ = tx.send(line);
                }
            });
        }
        let mut s = Server {
            child,
            http: String::new(),
            grpc: String::new(),
            metrics: String::new(),
            lines,
            log: Vec::new(),
            dir,
        };
        let line = s.wait_for("odin run:");
        let after = |key: &str, end: char| {
            let rest =
                &line[line.find(key).unwrap_or_else(|| panic!("{key} in {line}")) + key.len()..];
            rest[..rest.find(end).unwrap_or(rest.len())].to_string()
        };
        s.http = after("REST on http://", ',');
        s.grpc = after("gRPC on ", ')');
        s.metrics = after("metrics on http://", '/');
        s
    }

    /// The next line containing `needle` (every line is kept in `log`).
    fn wait_for(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    self.log.push(l.clone());
                    if l.contains(needle) {
                        return l;
                    }
                }
                Err(_) => panic!("no line with {needle:?}; output:\n{}", self.log.join("\n")),
            }
        }
    }

    fn config(&self) -> PathBuf {
        self.dir.path().join("odin.yaml")
    }

    fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.child.id() as i32), sig).unwrap();
    }

    /// SIGTERM, then the exit status and every remaining line.
    fn stop(mut self) -> (std::process::ExitStatus, Vec<String>, Value) {
        self.signal(nix::sys::signal::Signal::SIGTERM);
        let status = self.child.wait().unwrap();
        while let Ok(l) = self.lines.recv_timeout(Duration::from_secs(5)) {
            self.log.push(l);
        }
        let summary = std::fs::read_to_string(self.dir.path().join("summary.json"))
            .map(|t| serde_json::from_str(&t).unwrap())
            .unwrap_or(Value::Null);
        (status, std::mem::take(&mut self.log), summary)
    }

    /// A sample of the metrics endpoint: the value of the series whose
    /// line starts with `series`, 0 when absent.
    fn metric(&self, series: &str) -> f64 {
        let (_, body) = http(
            &self.metrics,
            "GET /metrics HTTP/1.1\r\nHost: odin\r\nConnection: close\r\n\r\n",
            b"",
        );
        String::from_utf8_lossy(&body)
            .lines()
            .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
            .unwrap_or(0.0)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn config_text(server_yaml: &str, top_yaml: &str) -> String {
    let indented: String = server_yaml.lines().map(|l| format!("  {l}\n")).collect();
    format!(
        "metrics:\n  listen: 127.0.0.1:0\nserver:\n  enabled: true\n  http: 127.0.0.1:0\n  grpc: 127.0.0.1:0\n{indented}{top_yaml}"
    )
}

/// One raw HTTP/1.1 exchange: the status and the body.
fn http(addr: &str, head: &str, body: &[u8]) -> (u16, Vec<u8>) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    s.write_all(head.as_bytes()).unwrap();
    // The server may answer (and close) before the whole body is sent.
    let _ = s.write_all(body);
    let mut resp = Vec::new();
    let _ = s.read_to_end(&mut resp);
    let text = String::from_utf8_lossy(&resp);
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status in {text:?}"));
    let at = resp
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(resp.len(), |i| i + 4);
    (status, resp[at..].to_vec())
}

fn post(addr: &str, path: &str, headers: &str, body: &[u8]) -> (u16, Value) {
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: odin\r\nConnection: close\r\nContent-Length: {}\r\n{headers}\r\n",
        body.len()
    );
    let (status, body) = http(addr, &head, body);
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

/// A 1x3x224x224 input from `seed`, written as `.npy`.
fn input(dir: &Path, name: &str, batch: usize, seed: u64) -> (PathBuf, Vec<f32>) {
    let n = batch * 3 * 224 * 224;
    let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
    let values: Vec<f32> = (0..n)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect();
    let path = dir.join(name);
    npy::write(&path, &[batch, 3, 224, 224], &values).unwrap();
    (path, values)
}

fn odin(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_odin"))
        .args(args)
        .output()
        .unwrap()
}

/// `odin infer`'s output for the tensor at `x` (same model, same seed).
fn reference(model: &str, x: &Path, out: &Path) -> npy::Npy {
    let o = odin(&[
        "infer",
        "--model",
        model,
        "--input",
        x.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    npy::read(out).unwrap()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn tritonclient_over_http_binary_http_json_and_grpc_gets_what_odin_infer_computes() {
    let Some(py) = python() else { return };
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let srv = Server::start("resnet18", "", "");
    let dir = srv.dir.path().to_path_buf();

    // Health, metadata and Triton's model config as the clients read them.
    let c = client(
        &py,
        &[
            "check", "--http", &srv.http, "--grpc", &srv.grpc, "--model", "resnet18",
        ],
    );
    for k in [
        "http_live",
        "http_ready",
        "http_model_ready",
        "grpc_live",
        "grpc_ready",
        "grpc_model_ready",
    ] {
        assert_eq!(c[k], true, "{k}: {c}");
    }
    assert_eq!(c["http_unknown_ready"], false);
    let ext = c["http_server_metadata"]["extensions"].as_array().unwrap();
    for e in [
        "binary_tensor_data",
        "classification",
        "model_configuration",
    ] {
        assert!(ext.iter().any(|x| x == e), "{e} in {ext:?}");
    }
    // gRPC's messages printed as JSON have their int64 dimensions as strings.
    let dims = |v: &Value| -> Vec<i64> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_i64().or_else(|| d.as_str()?.parse().ok()).unwrap())
            .collect()
    };
    for p in ["http", "grpc"] {
        let md = &c[format!("{p}_model_metadata")];
        assert_eq!(
            dims(&md["inputs"][0]["shape"]),
            [-1, 3, 224, 224],
            "{p}: {md}"
        );
        assert_eq!(dims(&md["outputs"][0]["shape"]), [-1, 1000], "{p}: {md}");
        assert_eq!(md["inputs"][0]["datatype"], "FP32");
    }
    assert_eq!(c["http_model_config"]["max_batch_size"], 8);
    assert_eq!(
        dims(&c["http_model_config"]["input"][0]["dims"]),
        [3, 224, 224]
    );
    let g = &c["grpc_model_config"]["config"];
    assert_eq!(g["max_batch_size"], 8, "{g}");
    assert_eq!(dims(&g["input"][0]["dims"]), [3, 224, 224], "{g}");
    assert_eq!(c["http_unknown_error"]["status"], "404", "{c}");
    assert_eq!(
        c["grpc_unknown_error"]["status"], "StatusCode.NOT_FOUND",
        "{c}"
    );

    // One tensor three ways, equal to odin infer on the same tensor.
    let (x, values) = input(&dir, "x.npy", 1, 7);
    let want = reference("resnet18", &x, &dir.join("want.npy"));
    for (name, args) in [
        (
            "http-binary",
            vec!["--url", &srv.http, "--protocol", "http"],
        ),
        (
            "http-json",
            vec!["--url", &srv.http, "--protocol", "http", "--json"],
        ),
        ("grpc", vec!["--url", &srv.grpc, "--protocol", "grpc"]),
    ] {
        let out = dir.join(format!("{name}.npy"));
        let mut a = vec![
            "infer",
            "--model",
            "resnet18",
            "--input",
            s(&x),
            "--output",
            s(&out),
        ];
        a.extend(args);
        let r = client(&py, &a);
        assert_eq!(r["id"], "req-7", "{name}: the request id comes back");
        let got = npy::read(&out).unwrap();
        assert_eq!(got.dims, vec![1, 1000], "{name}");
        assert_eq!(
            got.values, want.values,
            "{name}: the served output is odin infer's"
        );
    }

    // FP16 in, converted on entry: odin infer on the same rounded values.
    let rounded: Vec<f32> = values
        .iter()
        .map(|&v| odin::engine::onnx::data::f16_to_f32(f32_to_f16(v)))
        .collect();
    let xr = dir.join("x16.npy");
    npy::write(&xr, &[1, 3, 224, 224], &rounded).unwrap();
    let want16 = reference("resnet18", &xr, &dir.join("want16.npy"));
    let out = dir.join("fp16.npy");
    client(
        &py,
        &[
            "infer",
            "--url",
            &srv.grpc,
            "--protocol",
            "grpc",
            "--model",
            "resnet18",
            "--input",
            s(&x),
            "--output",
            s(&out),
            "--datatype",
            "FP16",
        ],
    );
    assert_eq!(npy::read(&out).unwrap().values, want16.values, "FP16 input");

    // A batch of 2 becomes two frames whose outputs are joined in order.
    let (xb, vb) = input(&dir, "xb.npy", 2, 11);
    let half = vb.len() / 2;
    let mut rows = Vec::new();
    for (i, part) in [&vb[..half], &vb[half..]].iter().enumerate() {
        let p = dir.join(format!("row{i}.npy"));
        npy::write(&p, &[1, 3, 224, 224], part).unwrap();
        rows.extend(reference("resnet18", &p, &dir.join(format!("want{i}.npy"))).values);
    }
    let out = dir.join("batch.npy");
    client(
        &py,
        &[
            "infer",
            "--url",
            &srv.grpc,
            "--protocol",
            "grpc",
            "--model",
            "resnet18",
            "--input",
            s(&xb),
            "--output",
            s(&out),
        ],
    );
    let got = npy::read(&out).unwrap();
    assert_eq!(got.dims, vec![2, 1000]);
    assert_eq!(got.values, rows, "batch rows in order");

    let frames = srv.metric("odin_frames_total");
    let (status, _, summary) = srv.stop();
    assert!(status.success(), "{status}");
    // 3 + 1 + 2 rows ran, no synthetic frame.
    assert_eq!(frames, 6.0);
    assert_eq!(summary["frames"], 6, "{summary}");
}

/// IEEE half of `v`, round to nearest even (as numpy's astype).
fn f32_to_f16(v: f32) -> u16 {
    let b = v.to_bits();
    let sign = ((b >> 16) & 0x8000) as u16;
    let exp = ((b >> 23) & 0xff) as i32 - 127 + 15;
    let mant = b & 0x7f_ffff;
    if exp >= 31 {
        return sign | 0x7c00;
    }
    if exp <= 0 {
        if exp < -10 {
            return sign;
        }
        let m = mant | 0x80_0000;
        let shift = (14 - exp) as u32;
        let half = m >> shift;
        let rem = m & ((1 << shift) - 1);
        let mid = 1 << (shift - 1);
        let round = u32::from(rem > mid || (rem == mid && half & 1 == 1));
        return sign | (half + round) as u16;
    }
    let half = ((exp as u32) << 10) | (mant >> 13);
    let rem = mant & 0x1fff;
    let round = u32::from(rem > 0x1000 || (rem == 0x1000 && half & 1 == 1));
    sign | (half + round) as u16
}

#[test]
fn a_full_queue_and_an_expired_deadline_get_503_and_their_frames_never_run() {
    let Some(py) = python() else { return };
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let srv = Server::start("resnet18", "max_queue: 1", "");
    let dir = srv.dir.path().to_path_buf();
    let (x, _) = input(&dir, "x.npy", 1, 3);
    let want = reference("resnet18", &x, &dir.join("want.npy"));
    let _ = want;

    // Eight clients against a queue of one: some are refused at once.
    let r = client(
        &py,
        &[
            "flood",
            "--url",
            &srv.http,
            "--protocol",
            "http",
            "--model",
            "resnet18",
            "--input",
            s(&x),
            "--requests",
            "24",
            "--concurrency",
            "8",
        ],
    );
    let o = r["outcomes"].as_object().unwrap();
    let ok = o.get("ok").and_then(Value::as_u64).unwrap_or(0);
    let full = o
        .get("503: Exceeds maximum queue size")
        .and_then(Value::as_u64)
        .unwrap_or(0);
    assert!(ok >= 1 && full >= 1, "{r}");
    assert_eq!(
        ok + full,
        24,
        "every request answered, ok or queue full: {r}"
    );

    // A 1 ms deadline on batches of 8: while one batch's rows enter the
    // pipeline (it holds fewer than 8 frames), the next waits in the queue
    // and expires (gRPC DEADLINE_EXCEEDED); none of its frames runs.
    let g = client(
        &py,
        &[
            "flood",
            "--url",
            &srv.grpc,
            "--protocol",
            "grpc",
            "--model",
            "resnet18",
            "--input",
            s(&x),
            "--requests",
            "9",
            "--concurrency",
            "3",
            "--batch",
            "8",
            "--timeout-us",
            "1000",
        ],
    );
    let go = g["outcomes"].as_object().unwrap();
    let g_ok = go.get("ok").and_then(Value::as_u64).unwrap_or(0);
    let expired = go
        .get("StatusCode.DEADLINE_EXCEEDED: Request timeout expired")
        .and_then(Value::as_u64)
        .unwrap_or(0);
    let g_full = go
        .get("StatusCode.UNAVAILABLE: Exceeds maximum queue size")
        .and_then(Value::as_u64)
        .unwrap_or(0);
    assert!(expired >= 1, "{g}");
    assert_eq!(g_ok + expired + g_full, 9, "{g}");

    // What the metrics say agrees, and only the answered requests' frames ran.
    let m = |k: &str| srv.metric(k);
    assert_eq!(
        m("odin_inference_request_success_total{model=\"resnet18\"}"),
        (ok + g_ok) as f64
    );
    assert_eq!(
        m("odin_inference_request_failure_total{model=\"resnet18\",reason=\"queue_full\"}"),
        (full + g_full) as f64
    );
    assert_eq!(
        m("odin_inference_request_failure_total{model=\"resnet18\",reason=\"timeout\"}"),
        expired as f64
    );
    assert_eq!(
        m("odin_frames_total"),
        (ok + 8 * g_ok) as f64,
        "expired and refused requests ran no frame"
    );
    assert_eq!(
        m("odin_inference_count_total{model=\"resnet18\"}"),
        (ok + 8 * g_ok) as f64
    );
    assert_eq!(
        m("odin_inference_pending_requests{model=\"resnet18\"}"),
        0.0
    );
    let (status, _, _) = srv.stop();
    assert!(status.success());
}

#[test]
fn a_jpeg_is_decoded_preprocessed_and_classified_with_labels() {
    let Some(py) = python() else { return };
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let tmp = tempfile::tempdir().unwrap();
    let labels = tmp.path().join("labels.txt");
    std::fs::write(
        &labels,
        (0..1000)
            .map(|i| format!("class {i}\n"))
            .collect::<String>(),
    )
    .unwrap();
    let img = image::RgbImage::from_fn(320, 240, |x, y| {
        image::Rgb([(x % 256) as u8, (y % 256) as u8, ((x * y) % 256) as u8])
    });
    let jpeg = tmp.path().join("pic.jpg");
    img.save(&jpeg).unwrap();
    let top = tmp.path().join("top.npy");
    let o = odin(&[
        "infer",
        "--model",
        "resnet18",
        "--image",
        s(&jpeg),
        "--labels",
        s(&labels),
        "--output",
        s(&top),
    ]);
    assert!(o.status.success());
    let stdout = String::from_utf8_lossy(&o.stdout).to_string();
    let line = stdout.lines().find(|l| l.contains("top-5")).unwrap();
    let want: Vec<String> = line
        .split("top-5 ")
        .nth(1)
        .unwrap()
        .split(", ")
        .take(3)
        .map(String::from)
        .collect();

    let srv = Server::start(
        "resnet18",
        "",
        &format!("model:\n  labels: {}\n", labels.display()),
    );
    for (url, proto) in [(&srv.http, "http"), (&srv.grpc, "grpc")] {
        let r = client(
            &py,
            &[
                "classify",
                "--url",
                url,
                "--protocol",
                proto,
                "--model",
                "resnet18",
                "--image",
                s(&jpeg),
                "--k",
                "3",
            ],
        );
        assert_eq!(r["shape"], serde_json::json!([1, 3]), "{proto}: {r}");
        let got: Vec<String> = r["classes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect();
        assert_eq!(
            got, want,
            "{proto}: the server's top-3 is odin infer --image's"
        );
        assert!(got[0].ends_with(&format!(":class {}", got[0].split(':').nth(1).unwrap())));
    }
    let (status, _, _) = srv.stop();
    assert!(status.success());
}

#[test]
fn sighup_rebuild_and_sigterm_under_load_answer_every_request() {
    let Some(py) = python() else { return };
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut srv = Server::start("resnet18", "", "pes: [\"0\", \"1\"]\n");
    let dir = srv.dir.path().to_path_buf();
    let (x, _) = input(&dir, "x.npy", 1, 5);
    let want = reference("resnet18", &x, &dir.join("want.npy"));
    npy::write(&dir.join("expect.npy"), &want.dims, &want.values).unwrap();
    let ready = dir.join("load-started");
    let load = Command::new(&py)
        .arg(root().join("tests/serving/client.py"))
        .args([
            "flood",
            "--url",
            &srv.grpc,
            "--protocol",
            "grpc",
            "--model",
            "resnet18",
            "--input",
            s(&x),
            "--expect",
            s(&dir.join("expect.npy")),
            "--concurrency",
            "4",
            "--until-refused",
            "--ready-file",
            s(&ready),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let success = "odin_inference_request_success_total{model=\"resnet18\"}";
    let wait_successes = |srv: &Server, n: f64| {
        let deadline = Instant::now() + Duration::from_secs(120);
        while srv.metric(success) < n {
            assert!(Instant::now() < deadline, "fewer than {n} requests served");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    wait_successes(&srv, 5.0);

    // A reload that rebuilds the pipeline (the stages swap CPUs) while
    // requests keep coming.
    let text = std::fs::read_to_string(srv.config())
        .unwrap()
        .replace("pes: [\"0\", \"1\"]", "pes: [\"1\", \"0\"]");
    std::fs::write(srv.config(), text).unwrap();
    let before = srv.metric(success);
    srv.signal(nix::sys::signal::Signal::SIGHUP);
    let line = srv.wait_for("reloaded");
    assert!(line.contains("pipeline rebuilt"), "{line}");
    wait_successes(&srv, before + 5.0);

    let (status, log, summary) = srv.stop();
    assert!(status.success(), "{status}: {}", log.join("\n"));
    let out = load.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    let o = r["outcomes"].as_object().unwrap();
    let ok = o["ok"].as_u64().unwrap();
    assert_eq!(
        r["mismatched"], 0,
        "every answer is the model's output: {r}"
    );
    // Nothing but answers and refusals once stopping.
    for k in o.keys() {
        assert!(
            k == "ok" || k == "refused" || k.starts_with("StatusCode.UNAVAILABLE"),
            "{k}: {r}"
        );
    }
    let served = log
        .iter()
        .find(|l| l.starts_with("served "))
        .unwrap_or_else(|| panic!("{}", log.join("\n")));
    assert!(
        served.contains(&format!(": {ok} requests answered")),
        "client saw {ok} answers; odin: {served}"
    );
    assert_eq!(summary["frames"], summary["admitted"], "{summary}");
    assert_eq!(
        summary["frames"], ok,
        "every frame belonged to an answered request"
    );
}

#[test]
fn malformed_requests_get_400_with_a_message_and_the_server_stays_up() {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let srv = Server::start("resnet18", "max_request_bytes: 1048576", "");
    let infer = "/v2/models/resnet18/infer";
    let huge = br#"{"inputs":[{"name":"input","shape":[100000,100000,3,224],"datatype":"FP32","parameters":{"binary_data_size":16}}]}"#;
    let huge_header = format!("Inference-Header-Content-Length: {}\r\n", huge.len());
    let huge_body = [&huge[..], b"0123456789abcdef"].concat();
    let cases: Vec<(&str, String, Vec<u8>, u16, &str)> = vec![
        (
            "malformed JSON",
            String::new(),
            b"{\"inputs\": [".to_vec(),
            400,
            "line 1",
        ),
        (
            "wrong shape",
            String::new(),
            br#"{"inputs":[{"name":"input","shape":[1,3,224,225],"datatype":"FP32","data":[0]}]}"#
                .to_vec(),
            400,
            "shape",
        ),
        (
            "unknown datatype",
            String::new(),
            br#"{"inputs":[{"name":"input","shape":[1,3,224,224],"datatype":"FP99","data":[0]}]}"#
                .to_vec(),
            400,
            "FP99",
        ),
        (
            "wrong input name",
            String::new(),
            br#"{"inputs":[{"name":"pixels","shape":[1,3,224,224],"datatype":"FP32","data":[0]}]}"#
                .to_vec(),
            400,
            "pixels",
        ),
        (
            "not a picture",
            String::new(),
            br#"{"inputs":[{"name":"input","shape":[1],"datatype":"BYTES","data":["hello"]}]}"#
                .to_vec(),
            400,
            "picture 0",
        ),
        (
            "header length beyond the body",
            "Inference-Header-Content-Length: 5000\r\n".into(),
            b"{}".to_vec(),
            400,
            "Inference-Header-Content-Length",
        ),
        (
            "huge declared tensor",
            huge_header,
            huge_body,
            400,
            "elements",
        ),
    ];
    for (what, headers, body, want, needle) in &cases {
        let (status, v) = post(&srv.http, infer, headers, body);
        assert_eq!(status, *want, "{what}: {v}");
        let msg = v["error"]
            .as_str()
            .unwrap_or_else(|| panic!("{what}: no error message in {v}"));
        assert!(
            msg.contains(needle),
            "{what}: {msg:?} should mention {needle:?}"
        );
    }
    // A body declared larger than the limit is refused before it is read.
    let (status, body) = http(
        &srv.http,
        &format!(
            "POST {infer} HTTP/1.1\r\nHost: odin\r\nConnection: close\r\nContent-Length: 100000000000\r\n\r\n"
        ),
        b"{",
    );
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(status, 400, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("more than the 1048576 allowed"),
        "{v}"
    );
    // Unknown model and endpoint: 404 with a message.
    let (status, v) = post(&srv.http, "/v2/models/nope/infer", "", b"{}");
    assert_eq!(status, 404);
    assert!(v["error"].as_str().unwrap().contains("nope"));
    let (status, _) = http(
        &srv.http,
        "GET /v3 HTTP/1.1\r\nHost: odin\r\nConnection: close\r\n\r\n",
        b"",
    );
    assert_eq!(status, 404);
    // Still serving.
    let (status, body) = http(
        &srv.http,
        "GET /v2/health/ready HTTP/1.1\r\nHost: odin\r\nConnection: close\r\n\r\n",
        b"",
    );
    assert_eq!((status, body.as_slice()), (200, &b"{\"ready\":true}"[..]));
    assert_eq!(
        srv.metric("odin_inference_request_failure_total{model=\"resnet18\",reason=\"invalid\"}"),
        (cases.len() + 1) as f64
    );
    assert_eq!(srv.metric("odin_frames_total"), 0.0, "no frame ran");

    // Clients that go away while their request is queued or running cost
    // its frame at most; the server answers the next one.
    let header = br#"{"inputs":[{"name":"input","shape":[1,3,224,224],"datatype":"FP32","parameters":{"binary_data_size":602112}}]}"#;
    let body = [&header[..], &vec![0u8; 602_112]].concat();
    let pending = "odin_inference_pending_requests{model=\"resnet18\"}";
    let success = "odin_inference_request_success_total{model=\"resnet18\"}";
    let until = |what: &str, f: &dyn Fn() -> bool| {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !f() {
            assert!(Instant::now() < deadline, "{what}");
            std::thread::sleep(Duration::from_millis(5));
        }
    };
    for _ in 0..3 {
        until("the last abandoned request leaves the gauge", &|| {
            srv.metric(pending) == 0.0
        });
        let before = srv.metric(success);
        let mut c = TcpStream::connect(&srv.http).unwrap();
        write!(
            c,
            "POST {infer} HTTP/1.1\r\nHost: odin\r\nContent-Length: {}\r\nInference-Header-Content-Length: {}\r\n\r\n",
            body.len(),
            header.len()
        )
        .unwrap();
        c.write_all(&body).unwrap();
        until("the request is accepted", &|| {
            srv.metric(pending) >= 1.0 || srv.metric(success) > before
        });
        drop(c);
    }
    until("requests of gone clients leave the gauge", &|| {
        srv.metric(pending) == 0.0
    });
    let h = format!("Inference-Header-Content-Length: {}\r\n", header.len());
    let (status, v) = post(&srv.http, infer, &h, &body);
    assert_eq!(status, 200, "{v}");
    until("the answered request's frame is counted", &|| {
        srv.metric("odin_frames_total") >= 1.0
    });
    let frames = srv.metric("odin_frames_total");
    assert!(
        frames <= 4.0,
        "{frames} frames for 1 answered and 3 abandoned requests"
    );
    // Each abandoned request is counted once: cancelled, or answered to
    // nobody if it finished before its connection was seen closed.
    let cancelled =
        srv.metric("odin_inference_request_failure_total{model=\"resnet18\",reason=\"cancelled\"}");
    let answered = srv.metric(success);
    assert_eq!(
        cancelled + answered,
        4.0,
        "{cancelled} cancelled, {answered} answered"
    );
    eprintln!("gone clients: {cancelled} cancelled");
    let (status, _, _) = srv.stop();
    assert!(status.success());
}

/// What the server sent before it closed the connection (EOF or reset).
/// The read timeout is only a bound far past any deadline under test, so a
/// server that never closes fails the test instead of hanging it.
fn until_closed(s: &mut TcpStream) -> Vec<u8> {
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                return got;
            }
            Err(e) => panic!("the server kept the connection open ({e}) after {got:?}"),
        }
    }
}

fn status_of(bytes: &[u8]) -> Option<u16> {
    String::from_utf8_lossy(bytes)
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
}

/// One response read off a keep-alive connection: its status and body
/// (which must have a Content-Length).
fn response(s: &mut TcpStream) -> (u16, Vec<u8>) {
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut r = BufReader::new(s);
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    let status = status_of(line.as_bytes()).unwrap_or_else(|| panic!("status line {line:?}"));
    let mut length = 0;
    loop {
        let mut h = String::new();
        r.read_line(&mut h).unwrap();
        if h == "\r\n" || h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':')
            && k.eq_ignore_ascii_case("content-length")
        {
            length = v.trim().parse().unwrap();
        }
    }
    let mut body = vec![0; length];
    r.read_exact(&mut body).unwrap();
    assert!(r.buffer().is_empty(), "bytes after the response");
    (status, body)
}

const LIVE: &str = "GET /v2/health/live HTTP/1.1\r\nHost: odin\r\n\r\n";

#[test]
fn slow_and_stalled_http_clients_are_closed_and_never_block_others() {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let py = python();
    let srv = Server::start("resnet18", "read_timeout_ms: 3000", "");
    let connect = || TcpStream::connect(&srv.http).unwrap();
    // Connections that send nothing.
    let mut idle: Vec<TcpStream> = (0..4).map(|_| connect()).collect();
    // Connections that trickle a request head, a byte every 100 ms, until
    // the server closes them.
    let tricklers: Vec<_> = (0..4)
        .map(|_| {
            let mut s = connect();
            let mut w = s.try_clone().unwrap();
            let writer = std::thread::spawn(move || {
                let head = b"GET /v2/health/live HTTP/1.1\r\nHost: odin\r\n";
                let filler = b"X-Slow: a\r\n".iter().cycle();
                for &b in head.iter().chain(filler).take(1200) {
                    if w.write_all(&[b]).is_err() {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            });
            s.write_all(b"G").unwrap();
            (s, writer)
        })
        .collect();
    // Connections that send a request head, part of the body, and stall.
    let mut stalled: Vec<TcpStream> = (0..2)
        .map(|_| {
            let mut s = connect();
            s.write_all(
                b"POST /v2/models/resnet18/infer HTTP/1.1\r\nHost: odin\r\nContent-Length: 1000\r\n\r\n{\"inputs\"",
            )
            .unwrap();
            s
        })
        .collect();
    // Meanwhile other clients are served: raw HTTP, and Triton's clients
    // over HTTP and gRPC.
    let (status, body) = http(
        &srv.http,
        "GET /v2/health/ready HTTP/1.1\r\nHost: odin\r\nConnection: close\r\n\r\n",
        b"",
    );
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    if let Some(py) = &py {
        let out = client(
            py,
            &[
                "check", "--http", &srv.http, "--grpc", &srv.grpc, "--model", "resnet18",
            ],
        );
        assert_eq!(
            (&out["http_live"], &out["grpc_live"]),
            (
                &serde_json::Value::Bool(true),
                &serde_json::Value::Bool(true)
            ),
            "{out}"
        );
    }
    // The server closes every one of them: the idle and trickling ones
    // without an answer, the stalled bodies with 408.
    for s in &mut idle {
        assert_eq!(until_closed(s), Vec::<u8>::new());
    }
    for (mut s, writer) in tricklers {
        let got = until_closed(&mut s);
        assert!(
            got.is_empty() || status_of(&got) == Some(408),
            "{}",
            String::from_utf8_lossy(&got)
        );
        writer.join().unwrap();
    }
    for s in &mut stalled {
        let got = until_closed(s);
        let text = String::from_utf8_lossy(&got);
        assert_eq!(status_of(&got), Some(408), "{text}");
        assert!(
            text.contains("did not arrive whole within 3000 ms"),
            "{text}"
        );
    }
    // An idle keep-alive connection is closed too, after its answer.
    let mut kept = connect();
    kept.write_all(LIVE.as_bytes()).unwrap();
    assert_eq!(response(&mut kept).0, 200);
    assert_eq!(until_closed(&mut kept), Vec::<u8>::new());
    // A head larger than server.max_header_bytes (16 KiB) is refused with
    // 431; one within it is served.
    let big = |n: usize| {
        format!(
            "GET /v2/health/live HTTP/1.1\r\nHost: odin\r\nConnection: close\r\nX-Big: {}\r\n\r\n",
            "a".repeat(n)
        )
    };
    assert_eq!(http(&srv.http, &big(32 << 10), b"").0, 431);
    assert_eq!(http(&srv.http, &big(8 << 10), b"").0, 200);
    // Every stalled body counted as an invalid request.
    assert!(
        srv.metric("odin_inference_request_failure_total{model=\"resnet18\",reason=\"invalid\"}")
            >= 2.0
    );
    let (status, log, _) = srv.stop();
    assert!(status.success(), "{}", log.join("\n"));
}

#[test]
fn a_connection_beyond_max_connections_waits_without_starving_the_accepted_one() {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let srv = Server::start("resnet18", "max_connections: 1", "");
    // The one slot: a keep-alive connection that has been answered.
    let mut first = TcpStream::connect(&srv.http).unwrap();
    first.write_all(LIVE.as_bytes()).unwrap();
    assert_eq!(response(&mut first).0, 200);
    // A second connection completes its TCP handshake (the kernel's
    // backlog) and sends a whole request.
    let mut second = TcpStream::connect(&srv.http).unwrap();
    second
        .write_all(b"GET /v2/health/live HTTP/1.1\r\nHost: odin\r\nConnection: close\r\n\r\n")
        .unwrap();
    // The accepted connection is still served...
    first.write_all(LIVE.as_bytes()).unwrap();
    assert_eq!(response(&mut first).0, 200);
    // ...while the second has had no answer: it was not accepted.
    second.set_nonblocking(true).unwrap();
    let mut b = [0u8; 1];
    let peek = second.peek(&mut b);
    assert!(
        matches!(&peek, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "the second connection was served past max_connections: {peek:?}"
    );
    second.set_nonblocking(false).unwrap();
    // Once the first closes, the second gets its slot and its answer.
    drop(first);
    let got = until_closed(&mut second);
    assert_eq!(
        status_of(&got),
        Some(200),
        "{}",
        String::from_utf8_lossy(&got)
    );
    let (status, log, _) = srv.stop();
    assert!(status.success(), "{}", log.join("\n"));
}

/// One HTTP/2 frame.
fn h2_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// The next frame (type, flags, stream, payload), or `None` once the server
/// has closed the connection.
fn h2_read(s: &mut TcpStream) -> Option<(u8, u8, u32, Vec<u8>)> {
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut head = [0u8; 9];
    match s.read_exact(&mut head) {
        Ok(()) => {}
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset
            ) =>
        {
            return None;
        }
        Err(e) => panic!("the server kept the HTTP/2 connection open: {e}"),
    }
    let len = usize::from(head[0]) << 16 | usize::from(head[1]) << 8 | usize::from(head[2]);
    let mut payload = vec![0; len];
    s.read_exact(&mut payload).ok()?;
    let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
    Some((head[3], head[4], stream, payload))
}

/// An HPACK integer with an `bits`-bit prefix after `flags`.
fn hpack_int(flags: u8, bits: u32, v: usize) -> Vec<u8> {
    let max = (1usize << bits) - 1;
    if v < max {
        return vec![flags | v as u8];
    }
    let mut out = vec![flags | max as u8];
    let mut rest = v - max;
    while rest >= 128 {
        out.push((rest % 128) as u8 | 0x80);
        rest /= 128;
    }
    out.push(rest as u8);
    out
}

fn hpack_str(s: &str) -> Vec<u8> {
    [hpack_int(0, 7, s.len()), s.as_bytes().to_vec()].concat()
}

/// A gRPC call's request headers (HPACK, no Huffman, no indexing), with
/// `extra` ones.
fn grpc_headers(extra: &[(&str, &str)]) -> Vec<u8> {
    // :method POST, :scheme http (static table 3 and 6).
    let mut b = vec![0x83, 0x86];
    // :path, a literal with the static table's name 4.
    b.extend(hpack_int(0, 4, 4));
    b.extend(hpack_str("/inference.GRPCInferenceService/ServerLive"));
    for (k, v) in [("content-type", "application/grpc"), ("te", "trailers")]
        .iter()
        .chain(extra)
    {
        b.push(0);
        b.extend(hpack_str(k));
        b.extend(hpack_str(v));
    }
    b
}

/// Sends the client preface and empty SETTINGS; returns the server's
/// settings (id, value) after acknowledging them.
fn h2_handshake(s: &mut TcpStream) -> Vec<(u16, u32)> {
    s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").unwrap();
    s.write_all(&h2_frame(4, 0, 0, &[])).unwrap();
    loop {
        let (kind, flags, _, payload) = h2_read(s).expect("server SETTINGS");
        if kind == 4 && flags & 1 == 0 {
            s.write_all(&h2_frame(4, 1, 0, &[])).unwrap();
            return payload
                .chunks(6)
                .map(|c| {
                    (
                        u16::from_be_bytes([c[0], c[1]]),
                        u32::from_be_bytes([c[2], c[3], c[4], c[5]]),
                    )
                })
                .collect();
        }
    }
}

/// The server's first answer on `stream`: a RST_STREAM (3) or HEADERS (1)
/// frame's type and payload.
fn h2_answer_of(s: &mut TcpStream, stream: u32) -> (u8, Vec<u8>) {
    loop {
        match h2_read(s) {
            Some((kind @ (1 | 3), _, id, p)) if id == stream => return (kind, p),
            Some(_) => {}
            None => panic!("connection closed before stream {stream} was answered"),
        }
    }
}

const REFUSED_STREAM: u32 = 7;

#[test]
fn grpc_bounds_streams_headers_handshakes_and_dead_peers() {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let srv = Server::start(
        "resnet18",
        "read_timeout_ms: 1000\nkeepalive_ms: 500\nmax_streams: 2\nmax_header_bytes: 4096",
        "",
    );
    let connect = || TcpStream::connect(&srv.grpc).unwrap();
    // No preface at all, and half a preface: closed at the handshake
    // deadline.
    let mut silent = connect();
    let mut partial = connect();
    partial.write_all(b"PRI * HTTP/2.0\r\n").unwrap();
    // (The server's own SETTINGS may come first: it sends them at once.)
    for s in [&mut silent, &mut partial] {
        let got = until_closed(s);
        assert!(got.is_empty() || got[3] == 4, "{got:?}");
    }

    // The server announces its stream and header list bounds...
    let mut c = connect();
    let settings = h2_handshake(&mut c);
    assert!(
        settings.contains(&(3, 2)),
        "MAX_CONCURRENT_STREAMS in {settings:?}"
    );
    assert!(
        settings.contains(&(6, 4096)),
        "MAX_HEADER_LIST_SIZE in {settings:?}"
    );
    // ...and holds a client that opens more streams to them: two calls
    // that never finish their request, then a third, refused.
    for id in [1, 3, 5] {
        c.write_all(&h2_frame(1, 4, id, &grpc_headers(&[])))
            .unwrap();
    }
    assert_eq!(
        h2_answer_of(&mut c, 5),
        (3, REFUSED_STREAM.to_be_bytes().to_vec())
    );
    // A live client (it answers pings) whose two calls stall in their
    // bodies: each is ended at the body deadline (read_timeout_ms), which
    // frees its stream, so a next call on the connection is served.
    let mut ended = Vec::new();
    while ended.len() < 2 {
        match h2_read(&mut c) {
            Some((6, flags, 0, payload)) if flags & 1 == 0 => {
                c.write_all(&h2_frame(6, 1, 0, &payload)).unwrap();
            }
            Some((1 | 3, _, id @ (1 | 3), _)) if !ended.contains(&id) => ended.push(id),
            Some(_) => {}
            None => panic!("closed before the stalled calls ended: {ended:?}"),
        }
    }
    c.write_all(&h2_frame(1, 4, 7, &grpc_headers(&[]))).unwrap();
    // An empty ServerLiveRequest: no compression, length 0; END_STREAM.
    c.write_all(&h2_frame(0, 1, 7, &[0, 0, 0, 0, 0])).unwrap();
    loop {
        match h2_read(&mut c) {
            Some((6, flags, 0, payload)) if flags & 1 == 0 => {
                c.write_all(&h2_frame(6, 1, 0, &payload)).unwrap();
            }
            Some((kind @ (1 | 3), _, 7, _)) => {
                assert_eq!(kind, 1, "the call after the stalled ones was reset");
                break;
            }
            Some(_) => {}
            None => panic!("closed before the next call was answered"),
        }
    }

    // A header list above max_header_bytes is refused on its own: answered
    // (431 or a reset) before its request body, which a call within the
    // bounds would wait for.
    let mut c = connect();
    h2_handshake(&mut c);
    let big = "a".repeat(6000);
    c.write_all(&h2_frame(1, 4, 1, &grpc_headers(&[("x-big", &big)])))
        .unwrap();
    h2_answer_of(&mut c, 1);

    // A peer that stops answering pings is dropped: the server pings it
    // after keepalive_ms of silence and closes it read_timeout_ms later.
    let mut dead = connect();
    h2_handshake(&mut dead);
    let mut pinged = false;
    while let Some((kind, flags, _, _)) = h2_read(&mut dead) {
        pinged |= kind == 6 && flags & 1 == 0;
    }
    assert!(pinged, "closed without a ping");

    let (status, log, _) = srv.stop();
    assert!(status.success(), "{}", log.join("\n"));
}
