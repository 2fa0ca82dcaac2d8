//! The network side: the REST and gRPC listeners on one small tokio
//! runtime.
//!
//! Problem: the server must not take CPU from the pipeline it feeds, nor
//! grow a thread per connection, and a shutdown must let the responses in
//! flight be written.
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

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Receiver, bounded};
use tokio::sync::watch;

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
                rt.block_on(serve(service, http, grpc, stopped));
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

async fn serve(
    service: Arc<Service>,
    http: Option<TcpListener>,
    grpc: Option<TcpListener>,
    stopped: watch::Receiver<bool>,
) {
    let signal = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|&s| s).await;
    };
    let mut tasks = Vec::new();
    if let Some(l) = http {
        let router = rest::router(service.clone());
        let sig = signal(stopped.clone());
        tasks.push(tokio::spawn(async move {
            match tokio::net::TcpListener::from_std(l) {
                Ok(l) => {
                    if let Err(e) = axum::serve(l, router).with_graceful_shutdown(sig).await {
                        tracing::error!("REST server: {e}");
                    }
                }
                Err(e) => tracing::error!("REST listener: {e}"),
            }
        }));
    }
    if let Some(l) = grpc {
        let svc = Inference::new(service.clone()).into_server();
        let sig = signal(stopped.clone());
        tasks.push(tokio::spawn(async move {
            match tokio::net::TcpListener::from_std(l) {
                Ok(l) => {
                    let incoming = tonic::transport::server::TcpIncoming::from(l);
                    if let Err(e) = tonic::transport::Server::builder()
                        .serve_with_incoming_shutdown(svc, incoming, sig)
                        .await
                    {
                        tracing::error!("gRPC server: {e}");
                    }
                }
                Err(e) => tracing::error!("gRPC listener: {e}"),
            }
        }));
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
        use std::future::Future;
        use std::task::Poll;
        if all.as_mut().poll(cx).is_ready() || deadline.as_mut().poll(cx).is_ready() {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
    .await;
}
