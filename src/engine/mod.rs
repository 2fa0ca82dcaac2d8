//! The CNN engine: tensors, layers, models made of units, the model zoo.
//!
//! A [`Model`] is an ordered list of [`Unit`]s. A unit is the smallest piece
//! a pipeline partition can move between stages: one layer, or one whole
//! residual block. Running units `0..k` and then `k..N` on a frame gives
//! exactly the output of running `0..N`, bit for bit, which is what lets the
//! pipeline move cut points while frames are in flight.
//!
//! Every layer implements [`Layer`]: `forward` computes, `output_shape`
//! checks and propagates shapes, and `cost` (FLOPs and bytes) seeds the
//! cost profile before anything has been measured.

pub mod bf16;
pub mod isa;
pub mod npy;
pub mod onnx;
pub mod open;
pub mod ops;
pub mod profile;
pub mod tensor;
pub mod zoo;

use std::fmt;
use std::ops::{Add, AddAssign, Range};
use std::sync::Arc;

pub use tensor::{Shape, Tensor};

/// Why a layer cannot take an input of some shape.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{layer}: input {input}: {reason}")]
pub struct ShapeError {
    /// The layer's kind.
    pub layer: &'static str,
    /// The offending input shape.
    pub input: Shape,
    /// What is wrong with it.
    pub reason: String,
}

impl ShapeError {
    /// A shape error for `layer` on `input`.
    pub fn new(layer: &'static str, input: Shape, reason: impl Into<String>) -> Self {
        Self {
            layer,
            input,
            reason: reason.into(),
        }
    }
}

/// The static cost of running a layer once on a given input.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Cost {
    /// Multiply-accumulates of convolutions and dense layers.
    pub macs: u64,
    /// Floating-point operations: two per multiply-accumulate, plus bias,
    /// activation, pooling and residual work.
    pub flops: u64,
    /// Bytes of weights read.
    pub weight_bytes: u64,
    /// Bytes of activations read and written (input plus output).
    pub activation_bytes: u64,
}

impl Add for Cost {
    type Output = Cost;
    fn add(self, o: Cost) -> Cost {
        Cost {
            macs: self.macs + o.macs,
            flops: self.flops + o.flops,
            weight_bytes: self.weight_bytes + o.weight_bytes,
            activation_bytes: self.activation_bytes + o.activation_bytes,
        }
    }
}

impl AddAssign for Cost {
    fn add_assign(&mut self, o: Cost) {
        *self = *self + o;
    }
}

impl std::iter::Sum for Cost {
    fn sum<I: Iterator<Item = Cost>>(iter: I) -> Cost {
        iter.fold(Cost::default(), Add::add)
    }
}

/// Bytes of an f32 tensor of `shape`.
pub(crate) fn f32_bytes(elements: usize) -> u64 {
    (elements * std::mem::size_of::<f32>()) as u64
}

/// Scratch memory a thread reuses across layers and frames (im2col buffers
/// and the like), the activation buffers of layers just run, and the
/// threads a layer may spread its work over.
#[derive(Default, Debug)]
pub struct Workspace {
    scratch: Vec<f32>,
    pool: Option<Arc<rayon::ThreadPool>>,
    /// Buffers of activations already consumed, newest last: a layer's
    /// output goes into one of these, whose lines the layers just before
    /// touched, rather than into memory last written a frame ago (whose
    /// every store would first read its line from DRAM).
    spare: Vec<Vec<f32>>,
}

/// Consumed activation buffers a [`Workspace`] keeps.
const SPARE_BUFFERS: usize = 3;

impl Workspace {
    /// An empty workspace; layers run on the calling thread alone.
    pub fn new() -> Self {
        Self::default()
    }

    /// A workspace whose layers split their work over `pool`'s threads
    /// (intra-op parallelism). Results are bit-identical to [`Workspace::new`]:
    /// work is split over output channels, never over a sum.
    pub fn with_pool(pool: Arc<rayon::ThreadPool>) -> Self {
        Self {
            pool: Some(pool),
            ..Self::default()
        }
    }

    /// An empty vector with room for `len` values: the newest consumed
    /// buffer that fits without wasting more than half of itself, else a
    /// new allocation.
    pub(crate) fn buffer(&mut self, len: usize) -> Vec<f32> {
        let fits = |v: &Vec<f32>| v.capacity() >= len && v.capacity() / 2 <= len;
        match self.spare.iter().rposition(fits) {
            Some(i) => {
                let mut v = self.spare.remove(i);
                v.clear();
                v
            }
            None => Vec::with_capacity(len),
        }
    }

    /// Keeps `t`'s buffer for [`Workspace::buffer`] (the oldest of more
    /// than [`SPARE_BUFFERS`] is freed).
    pub(crate) fn recycle(&mut self, t: Tensor) {
        if self.spare.len() == SPARE_BUFFERS {
            self.spare.remove(0);
        }
        self.spare.push(t.into_vec());
    }

    /// The pool layers may use, if any.
    pub fn pool(&self) -> Option<&rayon::ThreadPool> {
        self.pool.as_deref()
    }

    /// The pool itself, shared, to run work on its threads.
    pub fn pool_handle(&self) -> Option<Arc<rayon::ThreadPool>> {
        self.pool.clone()
    }

    /// Threads a layer may use (1 without a pool).
    pub fn threads(&self) -> usize {
        self.pool.as_ref().map_or(1, |p| p.current_num_threads())
    }

    /// A scratch buffer of at least `len` elements. Its contents are
    /// unspecified: callers overwrite what they read.
    pub fn scratch(&mut self, len: usize) -> &mut [f32] {
        if self.scratch.len() < len {
            self.scratch.resize(len, 0.0);
        }
        &mut self.scratch[..len]
    }

    /// The scratch buffer and the pool at once, for layers that use both.
    pub fn scratch_and_pool(&mut self, len: usize) -> (&mut [f32], Option<&rayon::ThreadPool>) {
        if self.scratch.len() < len {
            self.scratch.resize(len, 0.0);
        }
        (&mut self.scratch[..len], self.pool.as_deref())
    }
}

/// Runs `f` on the current worker of `pool` while every other worker
/// spins, running the jobs `f` forks as soon as they appear, until `f`
/// returns. A sleeping worker takes tens of microseconds to wake (longer on
/// a virtual CPU the host has to reschedule), once per layer; the PE's CPUs
/// are the stage's own for the frame anyway.
fn spinning<R: Send>(pool: &rayon::ThreadPool, f: impl FnOnce() -> R + Send) -> R {
    use std::sync::atomic::{AtomicBool, Ordering};
    let done = AtomicBool::new(false);
    let runner = rayon::current_thread_index();
    rayon::scope(|s| {
        for _ in 1..pool.current_num_threads() {
            s.spawn(|_| {
                // The runner itself may pop a spinner while it waits for a
                // split of `f`: spinning there would wait on itself.
                if rayon::current_thread_index() == runner {
                    return;
                }
                while !done.load(Ordering::Acquire) {
                    if rayon::yield_now() != Some(rayon::Yield::Executed) {
                        std::hint::spin_loop();
                    }
                }
            });
        }
        let out = f();
        done.store(true, Ordering::Release);
        out
    })
}

/// `layers` one after the other on `x` (`None` when there are none), a
/// pointwise convolution and the depthwise one that reads its output
/// fused where [`ops::Conv2d::fuses_with`] allows: the same values, without
/// the expanded tensor between them leaving the cache.
pub(crate) fn forward_layers(
    layers: &[Box<dyn Layer>],
    x: &Tensor,
    ws: &mut Workspace,
) -> Option<Tensor> {
    let mut h: Option<Tensor> = None;
    let mut i = 0;
    while i < layers.len() {
        let input = h.as_ref().unwrap_or(x);
        let pair = layers[i]
            .as_conv()
            .zip(layers.get(i + 1).and_then(|l| l.as_conv()));
        let next = if let Some((a, b)) = pair
            && a.fuses_with(b, input.shape())
        {
            i += 2;
            a.forward_fused(b, input, ws)
        } else {
            i += 1;
            layers[i - 1].forward(input, ws)
        };
        if let Some(done) = h.replace(next) {
            ws.recycle(done);
        }
    }
    h
}

/// Runs `f` on every item, spread over `pool`'s threads when there is a
/// pool and more than one item, else on the calling thread in order.
pub fn par_for_each<T: Send>(
    pool: Option<&rayon::ThreadPool>,
    items: Vec<T>,
    f: impl Fn(T) + Sync + Send,
) {
    use rayon::iter::{IntoParallelIterator, ParallelIterator};
    match pool {
        Some(pool) if items.len() > 1 => pool.install(|| items.into_par_iter().for_each(f)),
        _ => items.into_iter().for_each(f),
    }
}

thread_local! {
    static THREAD_SCRATCH: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Runs `f` with this thread's own scratch buffer of at least `len`
/// elements (contents unspecified), kept across calls: for work items
/// running on pool threads.
pub fn with_thread_scratch<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    THREAD_SCRATCH.with(|cell| {
        let mut buf = cell.borrow_mut();
        if buf.len() < len {
            buf.resize(len, 0.0);
        }
        f(&mut buf[..len])
    })
}

/// A network layer.
pub trait Layer: Send + Sync + fmt::Debug {
    /// Short kind name (`conv`, `dwconv`, `maxpool`, `dense`, `bottleneck`, ...).
    fn kind(&self) -> &'static str;

    /// The output shape for `input`, or why `input` is not acceptable.
    fn output_shape(&self, input: Shape) -> Result<Shape, ShapeError>;

    /// Computes the layer. `x` must have a shape `output_shape` accepts.
    fn forward(&self, x: &Tensor, ws: &mut Workspace) -> Tensor;

    /// FLOPs and bytes of one forward on `input`.
    fn cost(&self, input: Shape) -> Cost;

    /// Learnable parameters, counted as in the reference (PyTorch)
    /// definition: a convolution whose batch norm was folded in still counts
    /// the batch norm's scale and shift.
    fn params(&self) -> usize;

    /// Stores this layer's weights in `precision` where the layer has
    /// kernels for it on this CPU, and returns how many weights it
    /// converted (0 when it stays as it was). Layers without weights, or
    /// without reduced-precision kernels, keep the default.
    fn set_precision(&mut self, precision: Precision) -> usize {
        let _ = precision;
        0
    }
    /// This layer as a convolution, for callers that fuse work into a
    /// convolution's store (a residual join); `None` for other layers.
    fn as_conv(&self) -> Option<&ops::Conv2d> {
        None
    }
}

/// What [`Model::set_precision`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PrecisionReport {
    /// The precision asked for.
    pub asked: Precision,
    /// The precision the model now runs in (where any layer converted).
    pub running: Precision,
    /// Weights stored in the reduced precision.
    pub converted: usize,
    /// Why `running` is what it is, for the log.
    pub reason: String,
}

/// How a model's convolution and dense weights are stored and multiplied.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// 32-bit floats throughout (the default; bit-identical on every path
    /// of one machine).
    #[default]
    F32,
    /// bfloat16 weights (8 bits of mantissa), products accumulated in f32.
    Bf16,
}

impl Precision {
    /// The name the configuration uses.
    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
        }
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Layers run one after another, as one layer.
#[derive(Debug)]
pub struct Sequential {
    kind: &'static str,
    layers: Vec<Box<dyn Layer>>,
}

impl Sequential {
    /// A sequence reported under `kind`.
    pub fn new(kind: &'static str, layers: Vec<Box<dyn Layer>>) -> Self {
        Self { kind, layers }
    }

    /// The layers in order.
    pub fn layers(&self) -> &[Box<dyn Layer>] {
        &self.layers
    }
}

impl Layer for Sequential {
    fn kind(&self) -> &'static str {
        self.kind
    }

    fn output_shape(&self, input: Shape) -> Result<Shape, ShapeError> {
        self.layers.iter().try_fold(input, |s, l| l.output_shape(s))
    }

    fn forward(&self, x: &Tensor, ws: &mut Workspace) -> Tensor {
        forward_layers(&self.layers, x, ws).unwrap_or_else(|| x.clone())
    }

    fn cost(&self, input: Shape) -> Cost {
        let mut shape = input;
        let mut total = Cost::default();
        for l in &self.layers {
            total += l.cost(shape);
            // A layer that rejects its input costs nothing, as the ops do.
            let Ok(next) = l.output_shape(shape) else {
                return total;
            };
            shape = next;
        }
        total
    }

    fn params(&self) -> usize {
        self.layers.iter().map(|l| l.params()).sum()
    }

    fn set_precision(&mut self, precision: Precision) -> usize {
        self.layers
            .iter_mut()
            .map(|l| l.set_precision(precision))
            .sum()
    }
}

/// One movable piece of a model: a layer or a residual block.
#[derive(Debug)]
pub struct Unit {
    /// Name in the reference model (`features.0`, `layer3.2`, ...).
    pub name: String,
    /// The computation.
    pub layer: Box<dyn Layer>,
    /// Shape the unit takes.
    pub input: Shape,
    /// Shape the unit produces.
    pub output: Shape,
}

impl Unit {
    /// The unit's kind.
    pub fn kind(&self) -> &'static str {
        self.layer.kind()
    }

    /// The unit's static cost on its input.
    pub fn cost(&self) -> Cost {
        self.layer.cost(self.input)
    }
}

/// Why a model could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A unit does not accept the previous unit's output.
    #[error("model {model}, unit {index} ({name}): {source}")]
    Shape {
        /// Model name.
        model: String,
        /// Unit index.
        index: usize,
        /// Unit name.
        name: String,
        /// The shape mismatch.
        #[source]
        source: Box<ShapeError>,
    },
    /// The model name is not in the zoo.
    #[error("unknown model {0:?}; valid models: {valid}", valid = zoo::NAMES.join(", "))]
    Unknown(String),
}

/// A network as an ordered list of units.
#[derive(Debug)]
pub struct Model {
    name: String,
    input: Shape,
    units: Vec<Unit>,
    precision: Precision,
}

impl Model {
    /// An empty model taking `input`.
    pub fn new(name: impl Into<String>, input: Shape) -> Self {
        Self {
            name: name.into(),
            input,
            units: Vec::new(),
            precision: Precision::F32,
        }
    }

    /// Appends a unit, checking that it accepts the current output shape.
    pub fn push(
        &mut self,
        name: impl Into<String>,
        layer: impl Layer + 'static,
    ) -> Result<(), ModelError> {
        let name = name.into();
        let input = self.output();
        let output = layer
            .output_shape(input)
            .map_err(|source| ModelError::Shape {
                model: self.name.clone(),
                index: self.units.len(),
                name: name.clone(),
                source: Box::new(source),
            })?;
        self.units.push(Unit {
            name,
            layer: Box::new(layer),
            input,
            output,
        });
        Ok(())
    }

    /// The model's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Shape of the model's input.
    pub fn input(&self) -> Shape {
        self.input
    }

    /// Shape of the model's output.
    pub fn output(&self) -> Shape {
        self.units.last().map_or(self.input, |u| u.output)
    }

    /// The units in order.
    pub fn units(&self) -> &[Unit] {
        &self.units
    }

    /// Number of units.
    pub fn len(&self) -> usize {
        self.units.len()
    }

    /// True for a model without units.
    pub fn is_empty(&self) -> bool {
        self.units.is_empty()
    }

    /// Stores the model's weights in `precision` where this CPU has the
    /// kernels for it, and says what runs (meant for a model just opened:
    /// converted weights are not widened back). bf16 needs AVX512-BF16 (and
    /// `ODIN_ISA` not below avx512); without it the model stays f32 and the
    /// report gives the reason.
    pub fn set_precision(&mut self, precision: Precision) -> PrecisionReport {
        let unchanged = |reason: String| PrecisionReport {
            asked: precision,
            running: Precision::F32,
            converted: 0,
            reason,
        };
        match precision {
            Precision::F32 if self.precision == Precision::Bf16 => PrecisionReport {
                asked: precision,
                running: Precision::Bf16,
                converted: 0,
                reason: "f32 asked of a model already in bf16; open it again for f32".into(),
            },
            Precision::F32 => unchanged("f32 as configured".into()),
            Precision::Bf16 if !isa::bf16_detected() => {
                unchanged("bf16 asked, but the CPU lacks AVX512-BF16; running f32".into())
            }
            Precision::Bf16 if !isa::Isa::bf16() => unchanged(format!(
                "bf16 asked, but the kernels run {} ({}); running f32",
                isa::Isa::active(),
                isa::Isa::active_reason()
            )),
            Precision::Bf16 => {
                let converted: usize = self
                    .units
                    .iter_mut()
                    .map(|u| u.layer.set_precision(precision))
                    .sum();
                self.precision = Precision::Bf16;
                if converted == 0 {
                    self.precision = Precision::F32;
                    unchanged(
                        "bf16 asked, but no layer of this model has bf16 kernels; running f32"
                            .into(),
                    )
                } else {
                    PrecisionReport {
                        asked: precision,
                        running: Precision::Bf16,
                        converted,
                        reason: format!(
                            "bf16: {converted} of {} weights converted (AVX512-BF16)",
                            self.params()
                        ),
                    }
                }
            }
        }
    }

    /// The precision the weights run in.
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// Learnable parameters, counted as in the reference definition.
    pub fn params(&self) -> usize {
        self.units.iter().map(|u| u.layer.params()).sum()
    }

    /// Total static cost of one forward pass.
    pub fn cost(&self) -> Cost {
        self.units.iter().map(Unit::cost).sum()
    }

    /// Runs units `range` on `x`, which must have the shape unit
    /// `range.start` takes.
    pub fn forward_range(&self, range: Range<usize>, x: &Tensor, ws: &mut Workspace) -> Tensor {
        let units = &self.units[range.clone()];
        let Some((first, rest)) = units.split_first() else {
            return x.clone();
        };
        assert_eq!(
            x.shape(),
            first.input,
            "input shape of unit {}",
            range.start
        );
        let run = |ws: &mut Workspace| {
            rest.iter().fold(first.layer.forward(x, ws), |x, u| {
                let y = u.layer.forward(&x, ws);
                ws.recycle(x);
                y
            })
        };
        match ws.pool_handle() {
            // The units run on one of the pool's workers, so each layer's
            // split forks from inside the pool (a job on that worker's own
            // queue, which the others steal) rather than being injected
            // from outside while the calling thread waits on a latch.
            Some(pool) => pool.install(|| spinning(&pool, || run(ws))),
            None => run(ws),
        }
    }

    /// The whole forward pass.
    pub fn forward(&self, x: &Tensor, ws: &mut Workspace) -> Tensor {
        self.forward_range(0..self.units.len(), x, ws)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Output of every unit on one input, unit by unit.
    fn trace(model: &Model, x: &Tensor) -> Vec<Tensor> {
        let mut ws = Workspace::new();
        let mut outs: Vec<Tensor> = Vec::with_capacity(model.len());
        for i in 0..model.len() {
            let input = outs.last().unwrap_or(x);
            let y = model.forward_range(i..i + 1, input, &mut ws);
            assert_eq!(y.shape(), model.units()[i].output, "unit {i}");
            outs.push(y);
        }
        outs
    }

    /// Every split `0..k, k..N` gives the whole forward pass bit for bit,
    /// with the second half on a fresh workspace as another stage would be;
    /// and the seeded weights keep every activation finite and bounded.
    fn check_model(name: &str, split_step: usize) {
        let model = zoo::build(name, 1).unwrap();
        let x = Tensor::random(model.input(), 11);
        let outs = trace(&model, &x);
        for (i, y) in outs.iter().enumerate() {
            let max = y.as_slice().iter().fold(0.0f32, |m, v| m.max(v.abs()));
            assert!(
                y.as_slice().iter().all(|v| v.is_finite()) && max < 1e4,
                "{name} unit {i}: max |y| {max}"
            );
        }
        let out = outs.last().unwrap();
        let mean = out.as_slice().iter().sum::<f32>() / out.shape().len() as f32;
        let var = out
            .as_slice()
            .iter()
            .map(|v| (v - mean).powi(2))
            .sum::<f32>()
            / out.shape().len() as f32;
        assert!(var > 1e-6, "{name}: logits are degenerate (variance {var})");

        let n = model.len();
        let whole = model.forward(&x, &mut Workspace::new());
        assert_eq!(&whole, out, "{name}: forward = unit by unit");
        let mut splits: Vec<usize> = (1..n).step_by(split_step).collect();
        splits.push(n - 1);
        for k in splits {
            let tail = model.forward_range(k..n, &outs[k - 1], &mut Workspace::new());
            assert!(tail == whole, "{name}: split at {k} differs");
        }
        assert_eq!(model.forward_range(0..0, &x, &mut Workspace::new()), x);
    }

    #[test]
    fn resnet18_splits_are_bit_identical() {
        check_model("resnet18", 1);
    }

    #[test]
    fn mobilenet_v2_splits_are_bit_identical() {
        check_model("mobilenet_v2", 1);
    }

    #[test]
    fn alexnet_splits_are_bit_identical() {
        check_model("alexnet", 1);
    }

    #[test]
    fn resnet50_splits_are_bit_identical() {
        check_model("resnet50", 3);
    }

    #[test]
    fn resnet152_splits_are_bit_identical() {
        check_model("resnet152", 9);
    }

    #[test]
    fn vgg16_splits_are_bit_identical() {
        check_model("vgg16", 4);
    }

    /// Intra-op parallelism splits work over output channels or output
    /// positions, never over the depth of a sum, so a pool of any size
    /// gives the single-threaded output bit for bit.
    #[test]
    fn thread_pools_give_bit_identical_outputs() {
        for name in ["resnet50", "mobilenet_v2", "alexnet"] {
            let model = zoo::build(name, 1).unwrap();
            let x = Tensor::random(model.input(), 5);
            let alone = model.forward(&x, &mut Workspace::new());
            for threads in [2, 3] {
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .unwrap();
                let mut ws = Workspace::with_pool(Arc::new(pool));
                assert_eq!(ws.threads(), threads);
                let shared = model.forward(&x, &mut ws);
                assert!(shared == alone, "{name} with {threads} threads differs");
            }
        }
    }

    #[test]
    fn consumed_buffers_are_reused_newest_first_and_bounded() {
        let mut ws = Workspace::new();
        let tensor = |len: usize| Tensor::from_vec(Shape::new(1, 1, 1, len), vec![1.0; len]);
        let (a, b) = (tensor(1000), tensor(1000));
        let (a_ptr, b_ptr) = (a.as_slice().as_ptr(), b.as_slice().as_ptr());
        ws.recycle(a);
        ws.recycle(b);
        // The newest that fits, emptied.
        let v = ws.buffer(900);
        assert_eq!((v.as_ptr(), v.len()), (b_ptr, 0));
        assert!(v.capacity() >= 900);
        // Not one more than twice the request, nor one too small...
        let (small, large) = (ws.buffer(400), ws.buffer(1001));
        assert!(small.as_ptr() != a_ptr && large.as_ptr() != a_ptr);
        // ...but one that fits.
        let fits = ws.buffer(600);
        assert_eq!(fits.as_ptr(), a_ptr);
        for _ in 0..SPARE_BUFFERS + 2 {
            ws.recycle(tensor(10));
        }
        assert_eq!(
            ws.spare.len(),
            SPARE_BUFFERS,
            "at most {SPARE_BUFFERS} kept"
        );
    }

    #[test]
    fn push_rejects_a_unit_that_does_not_fit() {
        let mut m = Model::new("t", Shape::new(1, 3, 8, 8));
        m.push("flat", ops::Flatten).unwrap();
        let err = m
            .push("pool", ops::MaxPool2d(ops::PoolConfig::new(3, 1)))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("unit 1") && err.contains("pool") && err.contains("1x192x1x1"),
            "{err}"
        );
        assert_eq!(m.len(), 1);
    }
}
