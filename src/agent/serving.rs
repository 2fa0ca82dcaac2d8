//! The inference server: the service the transports share, and the
//! transports.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use crossbeam_channel::Receiver;

use super::config::{Config, ServerConfig};
use super::options::Refused;
use crate::cpulist::CpuSet;
use crate::engine::Model;
use crate::engine::open::{ModelIo, ModelSource};
use crate::server::admission::Admission;
use crate::server::image::Labels;
use crate::server::net::{Bounds, Listen, Net};
use crate::server::protocol::Limits;
use crate::server::service::{Answered, ServedModel, Service, Settings};
use crate::server::stats::ServingStats;

/// The inference server: the service the transports share, and the
/// transports.
pub(super) struct Serving {
    pub(super) service: Arc<Service>,
    pub(super) net: Net,
    pub(super) answered: Receiver<Answered>,
}

impl Serving {
    /// Starts the listeners `cfg` names for `model`.
    pub(super) fn start(
        cfg: &ServerConfig,
        model: ServedModel,
        pes: &[CpuSet],
        online: &CpuSet,
    ) -> Result<Self> {
        for (what, addr) in [("server.http", cfg.http), ("server.grpc", cfg.grpc)] {
            if let Some(a) = addr
                && !a.ip().is_loopback()
            {
                tracing::warn!(
                    "{what} is {a}, not a loopback address: anyone who reaches it can run the model; \
                     put a proxy with TLS and authentication in front"
                );
            }
        }
        let (tx, answered) = crossbeam_channel::bounded(4096);
        let service = Service::new(
            model,
            Admission::new(cfg.max_queue),
            server_settings(cfg),
            Arc::new(ServingStats::default()),
            tx,
        );
        let used: CpuSet = pes.iter().flat_map(|p| p.iter()).collect();
        let spare = online.difference(&used);
        let listen = Listen {
            http: cfg.http,
            grpc: cfg.grpc,
            threads: cfg.threads,
            cpus: (!spare.is_empty()).then_some(spare),
            bounds: Bounds {
                max_connections: cfg.max_connections,
                read_timeout: Duration::from_millis(cfg.read_timeout_ms),
                keepalive: Duration::from_millis(cfg.keepalive_ms),
                max_header_bytes: cfg.max_header_bytes,
                max_streams: cfg.max_streams,
            },
        };
        let net = Net::start(service.clone(), &listen).map_err(|e| Refused(e.to_string()))?;
        Ok(Self {
            service,
            net,
            answered,
        })
    }

    pub(super) fn describe(&self) -> String {
        let mut v = Vec::new();
        if let Some(a) = self.net.http_addr() {
            v.push(format!("REST on http://{a}"));
        }
        if let Some(a) = self.net.grpc_addr() {
            v.push(format!("gRPC on {a}"));
        }
        format!(
            "serving {:?} ({})",
            self.service.model().desc.name,
            v.join(", ")
        )
    }
}

/// The model as clients see it: named `server.model_name` or after the
/// model, batching up to `server.max_batch_size`, with `model.labels` and
/// `model.preprocess`.
pub(super) fn served_model(
    cfg: &Config,
    source: &ModelSource,
    model: &Model,
    io: &ModelIo,
) -> Result<ServedModel, Refused> {
    let labels = cfg
        .model
        .labels
        .as_deref()
        .map(Labels::load)
        .transpose()
        .map_err(|e| Refused(format!("model.labels: {e}")))?;
    let platform = match source {
        ModelSource::Builtin(_) => "odin_builtin",
        ModelSource::File(_) => "odin_onnx",
    };
    let name = cfg
        .server
        .model_name
        .clone()
        .unwrap_or_else(|| source.name());
    Ok(ServedModel::new(
        &name,
        platform,
        model.input(),
        io,
        cfg.server.max_batch_size,
        cfg.model.preprocess.clone(),
        labels.map(Arc::new),
    ))
}

/// The server's settings a reload may change in place.
pub(super) fn server_settings(s: &ServerConfig) -> Settings {
    Settings {
        limits: Limits {
            max_body_bytes: s.max_request_bytes,
            ..Limits::default()
        },
        timeout: s.timeout_ms.map(Duration::from_millis),
    }
}
