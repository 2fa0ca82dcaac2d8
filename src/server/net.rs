//! The network side: the REST and gRPC listeners on one small tokio
//! runtime.
//!
//! Problem: the server must not take CPU from the pipeline it feeds, nor
//! grow a thread per connection, and a shutdown must let the responses in
//! flight be written. It faces clients that may be slow or hostile: ones
//! that open connections and send nothing, trickle a request head a byte at
//! a time, stall a body, stop reading their answers, vanish without a FIN,
//! or open many HTTP/2 streams at once.
//!
//! Approach: a fixed number of worker threads (`server.threads`, default 2)
//! and at most one blocking thread serve every connection; each thread pins
//! itself at start to the CPUs no pipeline stage uses, when there are such
//! CPUs (on a machine whose every CPU runs a stage they float, and the
//! scheduler places them). They are threads of odin's process, so the
//! monitor counts their CPU time as odin's own, not as interference. The
//! listeners are bound before the runtime starts, so an address in use is
//! an error at start naming the address. [`Net::shutdown`] stops accepting,
//! lets the open exchanges finish for up to a grace period, then stops.
//!
//! Each port has its own accept loop that takes a slot of
//! [`Bounds::max_connections`] before it accepts, so one more client waits
//! in the kernel's backlog until a connection closes instead of starving
//! the accepted ones; an accept error such as EMFILE backs off for
//! [`ACCEPT_BACKOFF`] instead of spinning. Every accepted connection is a
//! [`Conn`], which holds its slot until the socket is closed and fails a
//! write that the client leaves unread for [`Bounds::read_timeout`]:
//!
//! ```text
//! listener --slot--> accept --Conn--> REST: hyper HTTP/1 (head deadline,
//!                                      |    head size, idle keep-alive),
//!                                      |    body deadline in rest.rs
//!                                      +-> gRPC: tonic over HTTP/2
//!                                           (handshake deadline in Conn,
//!                                           streams, header list, pings,
//!                                           body deadline: BodyDeadline)
//! ```

use std::future::Future;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, bounded};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio::time::Sleep;
use tonic::transport::server::{Connected, TcpConnectInfo};

use super::grpc::Inference;
use super::rest;
use super::service::Service;
use crate::cpulist::CpuSet;
use crate::pipeline::affinity::pin_current_thread;

/// Where and how to listen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listen {
    /// The REST address, if REST is on.
    pub http: Option<SocketAddr>,
    /// The gRPC address, if gRPC is on.
    pub grpc: Option<SocketAddr>,
    /// Worker threads.
    pub threads: usize,
    /// CPUs the threads run on; `None`: wherever the scheduler puts them.
    pub cpus: Option<CpuSet>,
    /// What every connection is held to.
    pub bounds: Bounds,
}

/// What a client is held to on both ports (`server.*` in the YAML).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bounds {
    /// Connections open at once on each port; one more waits in the
    /// kernel's backlog until one closes.
    pub max_connections: usize,
    /// Time to send an HTTP/1 request head (or, on an idle keep-alive
    /// connection, the next one), then its whole body, the HTTP/2
    /// handshake, or a ping's answer; and the longest a write may wait for
    /// the client to take bytes.
    pub read_timeout: Duration,
    /// An HTTP/2 connection silent this long is pinged.
    pub keepalive: Duration,
    /// Largest HTTP/1 request head or HTTP/2 header list, in bytes.
    pub max_header_bytes: usize,
    /// Concurrent HTTP/2 streams per connection, and gRPC calls served at
    /// once per connection.
    pub max_streams: u32,
}

impl Default for Bounds {
    fn default() -> Self {
        Self {
            max_connections: 256,
            read_timeout: Duration::from_secs(30),
            keepalive: Duration::from_secs(60),
            max_header_bytes: 16 << 10,
            max_streams: 64,
        }
    }
}

/// Why the listeners did not start.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// An address could not be bound.
    #[error("{what} on {addr}: {source}")]
    Bind {
        /// `server.http` or `server.grpc`.
        what: &'static str,
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The runtime could not start.
    #[error("starting the server's threads: {0}")]
    Runtime(#[source] std::io::Error),
}

/// Running listeners; [`Net::shutdown`] stops them.
pub struct Net {
    http: Option<SocketAddr>,
    grpc: Option<SocketAddr>,
    stop: watch::Sender<bool>,
    done: Receiver<()>,
    thread: Option<JoinHandle<()>>,
}

fn bind(what: &'static str, addr: SocketAddr) -> Result<TcpListener, NetError> {
    let err = |source| NetError::Bind { what, addr, source };
    let l = TcpListener::bind(addr).map_err(err)?;
    l.set_nonblocking(true).map_err(err)?;
    Ok(l)
}

impl Net {
    /// Binds the addresses of `listen` and serves `service` on them.
    pub fn start(service: Arc<Service>, listen: &Listen) -> Result<Self, NetError> {
        let http = listen.http.map(|a| bind("server.http", a)).transpose()?;
        let grpc = listen.grpc.map(|a| bind("server.grpc", a)).transpose()?;
        let local = |l: &Option<TcpListener>| l.as_ref().and_then(|l| l.local_addr().ok());
        let (http_addr, grpc_addr) = (local(&http), local(&grpc));
        let cpus = listen.cpus.clone();
        let bounds = listen.bounds;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(listen.threads.max(1))
            .max_blocking_threads(1)
            .thread_name("odin-net")
            .on_thread_start(move || {
                if let Some(cpus) = &cpus
                    && let Err(e) = pin_current_thread(cpus)
                {
                    tracing::warn!("server thread not pinned to CPUs {cpus}: {e}");
                }
            })
            .enable_io()
            .enable_time()
            .build()
            .map_err(NetError::Runtime)?;
        let (stop, stopped) = watch::channel(false);
        let (done_tx, done) = bounded(1);
        let thread = std::thread::Builder::new()
            .name("odin-net-main".into())
            .spawn(move || {
                rt.block_on(serve(service, http, grpc, bounds, stopped));
                // Connections still open past the grace period are cut.
                rt.shutdown_timeout(Duration::from_millis(100));
                let _ = done_tx.send(());
            })
            .map_err(NetError::Runtime)?;
        Ok(Self {
            http: http_addr,
            grpc: grpc_addr,
            stop,
            done,
            thread: Some(thread),
        })
    }

    /// The REST address bound.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http
    }

    /// The gRPC address bound.
    pub fn grpc_addr(&self) -> Option<SocketAddr> {
        self.grpc
    }

    /// Stops accepting; exchanges in progress have up to [`GRACE`] to
    /// finish.
    pub fn shutdown(mut self) {
        self.stop_now();
    }

    fn stop_now(&mut self) {
        let _ = self.stop.send(true);
        if self
            .done
            .recv_timeout(GRACE + Duration::from_secs(1))
            .is_ok()
            && let Some(t) = self.thread.take()
        {
            let _ = t.join();
        }
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        if self.thread.is_some() {
            self.stop_now();
        }
    }
}

/// How long open exchanges may take after the stop.
pub const GRACE: Duration = Duration::from_secs(10);

/// How long the accept loop waits after an accept error that is not one
/// connection's own (EMFILE, ENFILE, ENOBUFS), so it never spins.
pub const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// The bytes of an HTTP/2 client preface and the first frame's header.
const H2_HEAD: usize = 24 + 9;

/// An accepted connection: the socket, the slot it holds, and its
/// deadlines.
///
/// The socket is declared before the slot, so it is closed before the slot
/// is given back. A write the client leaves pending for the stall time
/// fails. Until its handshake is read (for HTTP/2: the 24-byte preface and
/// the whole SETTINGS frame that must follow), a read still pending at the
/// handshake deadline fails, so a client that connects and sends nothing or
/// a partial preface is closed.
pub struct Conn {
    stream: TcpStream,
    _slot: OwnedSemaphorePermit,
    stall: Duration,
    write_timer: Option<Pin<Box<Sleep>>>,
    handshake: Option<Handshake>,
}

struct Handshake {
    deadline: Pin<Box<Sleep>>,
    head: [u8; H2_HEAD],
    seen: usize,
}

impl Handshake {
    /// Counts `bytes` read; whether the preface and first frame are whole.
    fn saw(&mut self, bytes: &[u8]) -> bool {
        if self.seen < H2_HEAD {
            let n = bytes.len().min(H2_HEAD - self.seen);
            self.head[self.seen..self.seen + n].copy_from_slice(&bytes[..n]);
        }
        self.seen += bytes.len();
        if self.seen < H2_HEAD {
            return false;
        }
        // The first frame's 24-bit payload length follows the preface.
        let len = usize::from(self.head[24]) << 16
            | usize::from(self.head[25]) << 8
            | usize::from(self.head[26]);
        self.seen >= H2_HEAD + len
    }
}

impl Conn {
    fn new(
        stream: TcpStream,
        slot: OwnedSemaphorePermit,
        bounds: &Bounds,
        h2_handshake: bool,
    ) -> Self {
        Self {
            stream,
            _slot: slot,
            stall: bounds.read_timeout,
            write_timer: None,
            handshake: h2_handshake.then(|| Handshake {
                deadline: Box::pin(tokio::time::sleep(bounds.read_timeout)),
                head: [0; H2_HEAD],
                seen: 0,
            }),
        }
    }

    /// A write could not go on: fails once it has waited the stall time.
    fn stalled<T>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        let stall = self.stall;
        let timer = self
            .write_timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(stall)));
        if timer.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("the client took no bytes for {} ms", stall.as_millis()),
            )));
        }
        Poll::Pending
    }

    fn wrote<T>(&mut self, r: Poll<io::Result<T>>, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        match r {
            Poll::Pending => self.stalled(cx),
            ready => {
                self.write_timer = None;
                ready
            }
        }
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.stream).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if let Some(h) = &mut this.handshake
                    && h.saw(&buf.filled()[before..])
                {
                    this.handshake = None;
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending => {
                if let Some(h) = &mut this.handshake
                    && h.deadline.as_mut().poll(cx).is_ready()
                {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!(
                            "no HTTP/2 preface and settings within {} ms",
                            this.stall.as_millis()
                        ),
                    )));
                }
                Poll::Pending
            }
            err => err,
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.stream).poll_write(cx, buf);
        this.wrote(r, cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.stream).poll_write_vectored(cx, bufs);
        this.wrote(r, cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.stream).poll_flush(cx);
        this.wrote(r, cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.stream).poll_shutdown(cx);
        this.wrote(r, cx)
    }
}

impl Connected for Conn {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.stream.connect_info()
    }
}

/// Whether an accept error is one connection's own (the next accept may
/// well succeed) rather than the process's or the system's.
fn one_connections(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
            | io::ErrorKind::Interrupted
    )
}

/// Accepts on `listener` while a slot of `bounds.max_connections` is free
/// and hands each connection to `conns`, until `stopped` or until `conns`
/// is closed; the listener is closed when it returns.
async fn accept_loop(
    what: &'static str,
    listener: tokio::net::TcpListener,
    bounds: Bounds,
    h2: bool,
    conns: mpsc::Sender<io::Result<Conn>>,
    mut stopped: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(bounds.max_connections));
    let mut warned: Option<Instant> = None;
    loop {
        let next = async {
            let slot = slots
                .clone()
                .acquire_owned()
                .await
                .expect("the connection slots are never closed");
            loop {
                match listener.accept().await {
                    Ok((stream, _)) => return (stream, slot),
                    Err(e) if one_connections(&e) => continue,
                    Err(e) => {
                        if warned.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                            tracing::warn!(
                                "{what}: accepting a connection: {e}; backing off {} ms",
                                ACCEPT_BACKOFF.as_millis()
                            );
                            warned = Some(Instant::now());
                        }
                        tokio::time::sleep(ACCEPT_BACKOFF).await;
                    }
                }
            }
        };
        let (stream, slot) = tokio::select! {
            _ = stopped.wait_for(|&s| s) => break,
            c = next => c,
        };
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!("{what}: TCP_NODELAY: {e}");
        }
        if conns
            .send(Ok(Conn::new(stream, slot, &bounds, h2)))
            .await
            .is_err()
        {
            break;
        }
    }
}

/// Serves REST on each connection of `conns` through hyper's HTTP/1
/// server until `conns` ends, then lets the open ones finish.
async fn serve_rest(
    router: axum::Router,
    bounds: Bounds,
    mut conns: mpsc::Receiver<io::Result<Conn>>,
) {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(bounds.read_timeout)
        .max_header_size(bounds.max_header_bytes)
        .keep_alive(true);
    let graceful = GracefulShutdown::new();
    while let Some(Ok(conn)) = conns.recv().await {
        let service = TowerToHyperService::new(router.clone());
        let served = graceful.watch(http.serve_connection(TokioIo::new(conn), service));
        tokio::spawn(async move {
            if let Err(e) = served.await {
                tracing::debug!("REST connection: {e}");
            }
        });
    }
    graceful.shutdown().await;
}

async fn serve(
    service: Arc<Service>,
    http: Option<TcpListener>,
    grpc: Option<TcpListener>,
    bounds: Bounds,
    stopped: watch::Receiver<bool>,
) {
    let signal = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|&s| s).await;
    };
    let mut tasks = Vec::new();
    if let Some(l) = http {
        let router = rest::router(service.clone(), bounds.read_timeout);
        match tokio::net::TcpListener::from_std(l) {
            Ok(l) => {
                let (tx, rx) = mpsc::channel(1);
                tasks.push(tokio::spawn(accept_loop(
                    "server.http",
                    l,
                    bounds,
                    false,
                    tx,
                    stopped.clone(),
                )));
                tasks.push(tokio::spawn(serve_rest(router, bounds, rx)));
            }
            Err(e) => tracing::error!("REST listener: {e}"),
        }
    }
    if let Some(l) = grpc {
        let svc = BodyDeadline {
            inner: Inference::new(service.clone()).into_server(),
            timeout: bounds.read_timeout,
        };
        let sig = signal(stopped.clone());
        match tokio::net::TcpListener::from_std(l) {
            Ok(l) => {
                let (tx, rx) = mpsc::channel(1);
                tasks.push(tokio::spawn(accept_loop(
                    "server.grpc",
                    l,
                    bounds,
                    true,
                    tx,
                    stopped.clone(),
                )));
                let streams = bounds.max_streams;
                let header_list = u32::try_from(bounds.max_header_bytes).unwrap_or(u32::MAX);
                tasks.push(tokio::spawn(async move {
                    let incoming = tokio_stream::wrappers::ReceiverStream::new(rx);
                    if let Err(e) = tonic::transport::Server::builder()
                        .max_concurrent_streams(streams)
                        .concurrency_limit_per_connection(streams as usize)
                        .http2_max_header_list_size(header_list)
                        .http2_keepalive_interval(Some(bounds.keepalive))
                        .http2_keepalive_timeout(Some(bounds.read_timeout))
                        .serve_with_incoming_shutdown(svc, incoming, sig)
                        .await
                    {
                        tracing::error!("gRPC server: {e}");
                    }
                }));
            }
            Err(e) => tracing::error!("gRPC listener: {e}"),
        }
    }
    let all = async {
        for t in tasks {
            let _ = t.await;
        }
    };
    let mut rx = stopped;
    let deadline = async move {
        let _ = rx.wait_for(|&s| s).await;
        tokio::time::sleep(GRACE).await;
    };
    tokio::pin!(all);
    tokio::pin!(deadline);
    // Whichever comes first: every server done, or the grace period over.
    std::future::poll_fn(|cx| {
        if all.as_mut().poll(cx).is_ready() || deadline.as_mut().poll(cx).is_ready() {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
    .await;
}

/// The gRPC service with a deadline on each request's body: a call whose
/// message has not arrived whole [`Bounds::read_timeout`] after its
/// headers fails, and its stream (one of [`Bounds::max_streams`]) is freed.
/// Keep-alive pings cannot catch such a client: it is alive, only stalled.
#[derive(Clone, Debug)]
struct BodyDeadline<S> {
    inner: S,
    timeout: Duration,
}

impl<S> tonic::codegen::Service<tonic::codegen::http::Request<tonic::body::Body>>
    for BodyDeadline<S>
where
    S: tonic::codegen::Service<tonic::codegen::http::Request<DeadlineBody<tonic::body::Body>>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: tonic::codegen::http::Request<tonic::body::Body>) -> Self::Future {
        let timeout = self.timeout;
        self.inner.call(req.map(|body| DeadlineBody {
            body,
            deadline: Box::pin(tokio::time::sleep(timeout)),
            timeout,
            done: false,
        }))
    }
}

/// A request body that fails once its deadline passes before its end.
#[derive(Debug)]
struct DeadlineBody<B> {
    body: B,
    deadline: Pin<Box<Sleep>>,
    timeout: Duration,
    done: bool,
}

impl<B> tonic::codegen::Body for DeadlineBody<B>
where
    B: tonic::codegen::Body + Unpin,
    B::Error: Into<tonic::codegen::StdError>,
{
    type Data = B::Data;
    type Error = tonic::codegen::StdError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        if !this.done {
            match Pin::new(&mut this.body).poll_frame(cx) {
                Poll::Ready(None) => {
                    this.done = true;
                    return Poll::Ready(None);
                }
                Poll::Ready(Some(r)) => return Poll::Ready(Some(r.map_err(Into::into))),
                Poll::Pending => {}
            }
        }
        if this.done {
            return Poll::Ready(None);
        }
        match this.deadline.as_mut().poll(cx) {
            Poll::Ready(()) => {
                this.done = true;
                Poll::Ready(Some(Err(format!(
                    "the request body did not arrive within {} ms (server.read_timeout_ms)",
                    this.timeout.as_millis()
                )
                .into())))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done || self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}
