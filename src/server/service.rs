//! What both transports serve: one model behind the admission queue.
//!
//! A transport parses its wire format into an [`InferRequest`] and hands it
//! to [`Service::infer`], which checks it against the model, turns it into
//! frames (one per batch row; a BYTES input of encoded pictures is
//! preprocessed first), queues them, waits for the outcome and joins the
//! rows' outputs into the [`InferResponse`]. Every request, answered or not,
//! is counted in [`ServingStats`], and the latency of every answered one goes
//! to the daemon for the SLO.
//!
//! The model is swapped whole when a reload rebuilds the pipeline
//! ([`Service::set_model`]); a request uses the model it was checked
//! against from start to end.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;

use super::admission::{Admission, Outcome, Refusal};
use super::image::{Labels, PreprocessConfig, preprocess};
use super::protocol::{
    DataType, InferRequest, InferResponse, Limits, ModelDescription, OutputTensor, ProtocolError,
    TensorData, TensorSpec, classify,
};
use super::stats::{Failure, ServingStats};
use crate::engine::open::ModelIo;
use crate::engine::{Shape, Tensor};

/// The version every served model has.
pub const VERSION: &str = "1";

/// A model as served: its description and how requests become its frames.
#[derive(Debug)]
pub struct ServedModel {
    /// What clients see.
    pub desc: ModelDescription,
    /// One frame, the model's input.
    frame: Shape,
    /// One frame's output dimensions (with the batch dimension of 1 when
    /// the model batches).
    output: Vec<usize>,
    /// For BYTES inputs holding pictures.
    preprocess: PreprocessConfig,
    labels: Option<Arc<Labels>>,
}

impl ServedModel {
    /// The model `name` of input `frame` and names and dimensions `io`,
    /// taking batches of up to `max_batch_size` rows when its input and
    /// output have a leading dimension of 1. `preprocess` (default:
    /// torchvision's recipe, laid out as the input is) turns pictures into
    /// its input; `labels` name the classes of its output.
    pub fn new(
        name: &str,
        platform: &str,
        frame: Shape,
        io: &ModelIo,
        max_batch_size: usize,
        preprocess: Option<PreprocessConfig>,
        labels: Option<Arc<Labels>>,
    ) -> Self {
        let (in_name, in_dims) = &io.input;
        let (out_name, out_dims) = &io.output;
        let batched =
            max_batch_size > 0 && in_dims.first() == Some(&1) && out_dims.first() == Some(&1);
        let spec = |name: &str, dims: &[usize]| TensorSpec {
            name: name.to_string(),
            datatype: DataType::Fp32,
            shape: dims
                .iter()
                .enumerate()
                .map(|(i, &d)| if batched && i == 0 { -1 } else { d as i64 })
                .collect(),
        };
        let preprocess = preprocess.unwrap_or_else(|| PreprocessConfig::for_input(frame.dims()));
        Self {
            desc: ModelDescription {
                name: name.to_string(),
                version: Some(VERSION.to_string()),
                platform: platform.to_string(),
                inputs: vec![spec(in_name, in_dims)],
                outputs: vec![spec(out_name, out_dims)],
                max_batch_size: if batched { max_batch_size } else { 0 },
            },
            frame,
            output: out_dims.clone(),
            preprocess,
            labels,
        }
    }

    fn batched(&self) -> bool {
        self.desc.max_batch_size > 0
    }

    /// The frames of a checked request: one per batch row.
    fn rows(&self, req: &InferRequest) -> Result<Vec<Tensor>, ProtocolError> {
        let spec = &self.desc.inputs[0];
        let input = req.input(&spec.name).ok_or_else(|| ProtocolError::Input {
            name: spec.name.clone(),
            reason: format!("missing; model {:?} needs it", self.desc.name),
        })?;
        if let TensorData::Bytes(pictures) = &input.data {
            return self.pictures(&input.name, &input.shape, pictures);
        }
        req.check(&self.desc)?;
        let values = input.to_f32()?;
        let batch = req.batch_size(&self.desc);
        let row = self.frame.len();
        if values.len() != batch * row {
            return Err(ProtocolError::Input {
                name: input.name.clone(),
                reason: format!(
                    "{} elements, but a batch of {batch} needs {}",
                    values.len(),
                    batch * row
                ),
            });
        }
        Ok(values
            .chunks_exact(row)
            .map(|r| Tensor::from_vec(self.frame, r.to_vec()))
            .collect())
    }

    /// Frames from a BYTES input of encoded pictures, shape `[N]` or
    /// `[N, 1]` (N up to the batch limit, 1 when the model does not batch).
    fn pictures(
        &self,
        name: &str,
        shape: &[usize],
        pictures: &[Vec<u8>],
    ) -> Result<Vec<Tensor>, ProtocolError> {
        let err = |reason: String| ProtocolError::Input {
            name: name.to_string(),
            reason,
        };
        let n = pictures.len();
        let limit = self.desc.max_batch_size.max(1);
        let shape_ok = matches!(shape, [a] if *a == n) || matches!(shape, [a, 1] if *a == n);
        if !shape_ok || n == 0 || n > limit {
            return Err(err(format!(
                "a BYTES input holds encoded JPEG or PNG pictures, shape [N] or [N, 1] with N \
                 from 1 to {limit}; got shape {shape:?}"
            )));
        }
        pictures
            .iter()
            .enumerate()
            .map(|(i, bytes)| {
                preprocess(bytes, &self.preprocess, self.frame.dims())
                    .map(|v| Tensor::from_vec(self.frame, v))
                    .map_err(|e| err(format!("picture {i}: {e}")))
            })
            .collect()
    }

    /// The response of `req` from its rows' outputs.
    fn respond(
        &self,
        req: &InferRequest,
        outputs: Vec<Tensor>,
    ) -> Result<InferResponse, ProtocolError> {
        let spec = &self.desc.outputs[0];
        let rows = outputs.len();
        let mut values = Vec::with_capacity(outputs.iter().map(|t| t.as_slice().len()).sum());
        for t in outputs {
            values.extend_from_slice(t.as_slice());
        }
        let mut shape = self.output.clone();
        if self.batched() {
            shape[0] = rows;
        }
        let mut out = OutputTensor {
            name: spec.name.clone(),
            shape,
            data: TensorData::F32(values),
        };
        if let Some(k) = req.classification(&spec.name) {
            out = classify(&out, k, self.batched(), self.labels.as_deref())?;
        }
        Ok(InferResponse {
            model_name: self.desc.name.clone(),
            model_version: self.desc.version.clone(),
            id: req.id.clone(),
            outputs: if req.selects(&spec.name) {
                vec![out]
            } else {
                Vec::new()
            },
        })
    }
}

/// Settings a reload may change in place.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settings {
    /// Bounds on one request.
    pub limits: Limits,
    /// Queueing deadline of a request without its own `timeout`.
    pub timeout: Option<Duration>,
}

/// What a request answered with its outputs took, for the SLO.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Answered {
    /// Arrival to response.
    pub latency: Duration,
    /// Its batch rows.
    pub rows: usize,
}

/// The served model, its queue and its figures, shared by the transports.
pub struct Service {
    model: RwLock<Arc<ServedModel>>,
    admission: Arc<Admission>,
    settings: RwLock<Settings>,
    stats: Arc<ServingStats>,
    ready: AtomicBool,
    answered: Sender<Answered>,
}

impl Service {
    /// Serves `model` through `admission`; every answered request's latency
    /// goes to `answered`.
    pub fn new(
        model: ServedModel,
        admission: Arc<Admission>,
        settings: Settings,
        stats: Arc<ServingStats>,
        answered: Sender<Answered>,
    ) -> Arc<Self> {
        Arc::new(Self {
            model: RwLock::new(Arc::new(model)),
            admission,
            settings: RwLock::new(settings),
            stats,
            ready: AtomicBool::new(false),
            answered,
        })
    }

    /// The model being served.
    pub fn model(&self) -> Arc<ServedModel> {
        self.model.read().expect("model lock").clone()
    }

    /// Serves `model` from now on (after a rebuild).
    pub fn set_model(&self, model: ServedModel) {
        *self.model.write().expect("model lock") = Arc::new(model);
    }

    /// The settings in force.
    pub fn settings(&self) -> Settings {
        *self.settings.read().expect("settings lock")
    }

    /// Changes the settings (a reload).
    pub fn set_settings(&self, s: Settings) {
        *self.settings.write().expect("settings lock") = s;
    }

    /// The figures.
    pub fn stats(&self) -> &Arc<ServingStats> {
        &self.stats
    }

    /// The queue.
    pub fn admission(&self) -> &Arc<Admission> {
        &self.admission
    }

    /// Whether requests are being taken (`/v2/health/ready`).
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire) && !self.admission.is_closed()
    }

    /// Marks the server ready, or not.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
    }

    /// The model called `name` at `version` (empty: any), or Triton's
    /// unknown-model error.
    pub fn lookup(&self, name: &str, version: &str) -> Result<Arc<ServedModel>, ProtocolError> {
        let m = self.model();
        if m.desc.name == name && (version.is_empty() || version == VERSION) {
            Ok(m)
        } else {
            let name = if version.is_empty() {
                name.to_string()
            } else {
                format!("{name}' version '{version}")
            };
            Err(ProtocolError::ModelNotFound { name })
        }
    }

    /// Counts a request to `model` that failed before reaching
    /// [`Service::infer`] (it did not parse, or named another model).
    pub fn refused(&self, model: &str, e: &ProtocolError) {
        self.stats.failed(model, failure(e));
    }

    /// Serves one request that arrived at `arrived`, to start before
    /// `deadline` if the transport has one (gRPC's `grpc-timeout`).
    pub async fn infer(
        &self,
        model: &ServedModel,
        req: InferRequest,
        arrived: Instant,
        deadline: Option<Instant>,
    ) -> Result<InferResponse, ProtocolError> {
        let name = &model.desc.name;
        let result = self.run(model, &req, arrived, deadline).await;
        match &result {
            Ok((resp, rows, queue, compute)) => {
                let latency = arrived.elapsed();
                self.stats.succeeded(name, *rows, *queue, *compute, latency);
                let _ = self.answered.try_send(Answered {
                    latency,
                    rows: *rows,
                });
                tracing::trace!(model = %name, rows, outputs = resp.outputs.len(), "answered");
            }
            Err(Failed(_, why)) => self.stats.failed(name, *why),
        }
        result.map(|(resp, ..)| resp).map_err(|Failed(e, _)| e)
    }

    async fn run(
        &self,
        model: &ServedModel,
        req: &InferRequest,
        arrived: Instant,
        deadline: Option<Instant>,
    ) -> Result<(InferResponse, usize, Duration, Duration), Failed> {
        let rows = model.rows(req)?;
        let n = rows.len();
        let settings = self.settings();
        let own = req.timeout.or(settings.timeout).map(|t| arrived + t);
        let deadline = match (own, deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let ticket = self.admission.submit(rows, deadline).map_err(refusal)?;
        let mut pending = Pending::new(&self.stats, &model.desc.name);
        let outcome = ticket.outcome().await;
        pending.answered();
        match outcome {
            Outcome::Done {
                outputs,
                queue,
                compute,
            } => {
                if outputs.len() != n {
                    return Err(ProtocolError::Internal(format!(
                        "{} outputs for {n} rows",
                        outputs.len()
                    ))
                    .into());
                }
                Ok((model.respond(req, outputs)?, n, queue, compute))
            }
            Outcome::Refused(r) => Err(refusal(r)),
        }
    }
}

/// An accepted request not yet answered, in the pending gauge until it is;
/// one whose client went away first (its transport dropped the future)
/// counts as cancelled.
struct Pending<'a> {
    stats: &'a ServingStats,
    model: &'a str,
    answered: bool,
}

impl<'a> Pending<'a> {
    fn new(stats: &'a ServingStats, model: &'a str) -> Self {
        stats.pending(model, 1);
        Self {
            stats,
            model,
            answered: false,
        }
    }

    fn answered(&mut self) {
        self.answered = true;
    }
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        self.stats.pending(self.model, -1);
        if !self.answered {
            self.stats.failed(self.model, Failure::Cancelled);
        }
    }
}

/// A request that failed: the error its client gets and the reason it is
/// counted under.
struct Failed(ProtocolError, Failure);

impl From<ProtocolError> for Failed {
    fn from(e: ProtocolError) -> Self {
        let why = failure(&e);
        Failed(e, why)
    }
}

/// The protocol error and the reason of a refusal.
fn refusal(r: Refusal) -> Failed {
    let message = r.to_string();
    match r {
        Refusal::DeadlineExceeded => {
            Failed(ProtocolError::DeadlineExceeded(message), Failure::Timeout)
        }
        Refusal::QueueFull => Failed(ProtocolError::Unavailable(message), Failure::QueueFull),
        Refusal::ShuttingDown | Refusal::ModelChanged => {
            Failed(ProtocolError::Unavailable(message), Failure::Unavailable)
        }
    }
}

/// The `reason` label of an error.
fn failure(e: &ProtocolError) -> Failure {
    match e {
        ProtocolError::ModelNotFound { .. } => Failure::NotFound,
        ProtocolError::DeadlineExceeded(_) => Failure::Timeout,
        ProtocolError::Unavailable(_) => Failure::Unavailable,
        ProtocolError::Internal(_) => Failure::Internal,
        _ => Failure::Invalid,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::protocol::{InputTensor, RequestedOutput};
    use serde_json::Map;

    fn io(input: &[usize], output: &[usize]) -> ModelIo {
        ModelIo {
            input: ("x".into(), input.to_vec()),
            output: ("y".into(), output.to_vec()),
        }
    }

    fn request(shape: &[usize], data: TensorData) -> InferRequest {
        InferRequest {
            id: Some("a".into()),
            inputs: vec![InputTensor {
                name: "x".into(),
                shape: shape.to_vec(),
                data,
                parameters: Map::new(),
            }],
            outputs: Vec::new(),
            binary_output_default: true,
            timeout: None,
            priority: None,
            parameters: Map::new(),
        }
    }

    #[test]
    fn a_batch_becomes_one_frame_a_row_and_the_outputs_are_joined() {
        let m = ServedModel::new(
            "m",
            "odin_onnx",
            Shape::new(1, 2, 1, 1),
            &io(&[1, 2], &[1, 3]),
            4,
            None,
            None,
        );
        assert_eq!(m.desc.max_batch_size, 4);
        assert_eq!(m.desc.inputs[0].shape, vec![-1, 2]);
        assert_eq!(m.desc.outputs[0].shape, vec![-1, 3]);
        // UINT8 converted on entry.
        let req = request(&[3, 2], TensorData::U8(vec![1, 2, 3, 4, 5, 6]));
        let rows = m.rows(&req).unwrap();
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[2].as_slice(), &[5.0, 6.0]);
        let outs: Vec<Tensor> = (0..3)
            .map(|i| Tensor::from_vec(Shape::new(1, 3, 1, 1), vec![i as f32; 3]))
            .collect();
        let resp = m.respond(&req, outs).unwrap();
        assert_eq!(resp.id.as_deref(), Some("a"));
        assert_eq!(resp.outputs[0].shape, vec![3, 3]);
        assert_eq!(
            resp.outputs[0].data,
            TensorData::F32(vec![0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 2.0, 2.0, 2.0])
        );
        // Beyond the batch limit, or the wrong row shape: 400.
        let big = request(&[5, 2], TensorData::F32(vec![0.0; 10]));
        assert!(
            m.rows(&big)
                .unwrap_err()
                .to_string()
                .contains("batch size 5")
        );
        let wrong = request(&[1, 3], TensorData::F32(vec![0.0; 3]));
        assert_eq!(m.rows(&wrong).unwrap_err().status(), 400);
    }

    #[test]
    fn a_model_without_a_unit_batch_dimension_takes_its_input_whole() {
        let m = ServedModel::new(
            "m",
            "odin_onnx",
            Shape::new(1, 2, 1, 2),
            &io(&[2, 2], &[2]),
            8,
            None,
            None,
        );
        assert_eq!(m.desc.max_batch_size, 0);
        assert_eq!(m.desc.inputs[0].shape, vec![2, 2]);
        let req = request(&[2, 2], TensorData::F32(vec![1.0, 2.0, 3.0, 4.0]));
        assert_eq!(m.rows(&req).unwrap().len(), 1);
        let out = vec![Tensor::from_vec(Shape::new(1, 2, 1, 1), vec![9.0, 8.0])];
        assert_eq!(m.respond(&req, out).unwrap().outputs[0].shape, vec![2]);
    }

    #[test]
    fn pictures_are_checked_and_classification_and_output_selection_apply() {
        let labels = Arc::new(Labels::parse("cat\ndog\nfox\n"));
        let m = ServedModel::new(
            "m",
            "odin_builtin",
            Shape::new(1, 3, 224, 224),
            &io(&[1, 3, 224, 224], &[1, 3]),
            2,
            None,
            Some(labels),
        );
        for (shape, n) in [(vec![3usize], 3usize), (vec![1, 2], 1), (vec![], 1)] {
            let req = request(&shape, TensorData::Bytes(vec![b"x".to_vec(); n]));
            let e = m.rows(&req).unwrap_err().to_string();
            assert!(e.contains("shape [N] or [N, 1]"), "{shape:?}: {e}");
        }
        let req = request(&[1], TensorData::Bytes(vec![b"not a picture".to_vec()]));
        assert!(m.rows(&req).unwrap_err().to_string().contains("picture 0"));

        let mut req = request(&[1, 3, 224, 224], TensorData::F32(vec![0.0; 3 * 224 * 224]));
        req.outputs.push(RequestedOutput {
            name: "y".into(),
            binary_data: None,
            classification: Some(2),
            parameters: Map::new(),
        });
        let out = vec![Tensor::from_vec(
            Shape::new(1, 3, 1, 1),
            vec![0.1, 0.7, 0.2],
        )];
        let resp = m.respond(&req, out).unwrap();
        assert_eq!(resp.outputs[0].shape, vec![1, 2]);
        assert_eq!(
            resp.outputs[0].data,
            TensorData::Bytes(vec![b"0.700000:1:dog".to_vec(), b"0.200000:2:fox".to_vec()])
        );
    }

    #[test]
    fn lookup_knows_the_name_and_version_one_only() {
        let m = ServedModel::new(
            "resnet",
            "odin_builtin",
            Shape::new(1, 2, 1, 1),
            &io(&[1, 2], &[1, 2]),
            8,
            None,
            None,
        );
        let (tx, _rx) = crossbeam_channel::bounded(1);
        let s = Service::new(
            m,
            Admission::new(1),
            Settings {
                limits: Limits::default(),
                timeout: None,
            },
            Arc::new(ServingStats::default()),
            tx,
        );
        assert!(s.lookup("resnet", "").is_ok());
        assert!(s.lookup("resnet", "1").is_ok());
        assert_eq!(s.lookup("resnet", "2").unwrap_err().status(), 404);
        assert_eq!(s.lookup("other", "").unwrap_err().status(), 404);
        assert!(!s.is_ready(), "not ready before the pipeline runs");
        s.set_ready(true);
        assert!(s.is_ready());
        s.admission().close();
        assert!(!s.is_ready(), "not ready once stopping");
    }
}
