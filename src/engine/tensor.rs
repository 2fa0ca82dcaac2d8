//! f32 NCHW tensors on ndarray.
//!
//! Every activation in odin is a 4-d tensor in NCHW order and standard
//! (row-major, contiguous) layout, so kernels can work on flat slices. Flat
//! results such as a dense layer's output are `[N, C, 1, 1]`.

use std::fmt;

use ndarray::{Array4, ArrayView4, ArrayViewMut4};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// The shape of an NCHW tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Shape {
    /// Batch size.
    pub n: usize,
    /// Channels.
    pub c: usize,
    /// Height.
    pub h: usize,
    /// Width.
    pub w: usize,
}

impl Shape {
    /// A shape from its four dimensions.
    pub const fn new(n: usize, c: usize, h: usize, w: usize) -> Self {
        Self { n, c, h, w }
    }

    /// Number of elements.
    pub const fn len(&self) -> usize {
        self.n * self.c * self.h * self.w
    }

    /// True when any dimension is zero.
    pub const fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Elements of one image (C * H * W).
    pub const fn per_image(&self) -> usize {
        self.c * self.h * self.w
    }

    /// The dimensions as an array, for ndarray.
    pub const fn dims(&self) -> [usize; 4] {
        [self.n, self.c, self.h, self.w]
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}x{}x{}x{}", self.n, self.c, self.h, self.w)
    }
}

/// A dense f32 tensor in NCHW order and standard layout.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    data: Array4<f32>,
}

impl Tensor {
    /// A tensor of zeros.
    pub fn zeros(shape: Shape) -> Self {
        Self {
            data: Array4::zeros(shape.dims()),
        }
    }

    /// A tensor over `values` (NCHW order). Panics if the length does not match.
    pub fn from_vec(shape: Shape, values: Vec<f32>) -> Self {
        let data =
            Array4::from_shape_vec(shape.dims(), values).expect("tensor length matches shape");
        Self { data }
    }

    /// A tensor from an ndarray array, copied into standard layout if needed.
    pub fn from_array(data: Array4<f32>) -> Self {
        let data = if data.is_standard_layout() {
            data
        } else {
            data.as_standard_layout().into_owned()
        };
        Self { data }
    }

    /// Values drawn uniformly from [-1, 1) by a generator seeded with `seed`.
    pub fn random(shape: Shape, seed: u64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let values = (0..shape.len())
            .map(|_| rng.random_range(-1.0f32..1.0))
            .collect();
        Self::from_vec(shape, values)
    }

    /// The tensor's shape.
    pub fn shape(&self) -> Shape {
        let d = self.data.dim();
        Shape::new(d.0, d.1, d.2, d.3)
    }

    /// The underlying array.
    pub fn array(&self) -> &Array4<f32> {
        &self.data
    }

    /// A view of the values.
    pub fn view(&self) -> ArrayView4<'_, f32> {
        self.data.view()
    }

    /// A mutable view of the values.
    pub fn view_mut(&mut self) -> ArrayViewMut4<'_, f32> {
        self.data.view_mut()
    }

    /// The values as one slice in NCHW order.
    pub fn as_slice(&self) -> &[f32] {
        self.data
            .as_slice()
            .expect("tensors are kept in standard layout")
    }

    /// The values as one mutable slice in NCHW order.
    pub fn as_mut_slice(&mut self) -> &mut [f32] {
        self.data
            .as_slice_mut()
            .expect("tensors are kept in standard layout")
    }

    /// The same values under another shape with as many elements.
    pub fn reshape(self, shape: Shape) -> Self {
        assert_eq!(
            self.shape().len(),
            shape.len(),
            "reshape keeps the element count"
        );
        let values = self.data.into_raw_vec_and_offset().0;
        Self::from_vec(shape, values)
    }

    /// Consumes the tensor and returns its values in NCHW order.
    pub fn into_vec(self) -> Vec<f32> {
        self.data.into_raw_vec_and_offset().0
    }

    /// Largest absolute difference to `other` (same shape required).
    pub fn max_abs_diff(&self, other: &Tensor) -> f32 {
        assert_eq!(self.shape(), other.shape());
        self.as_slice()
            .iter()
            .zip(other.as_slice())
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_is_seeded_and_in_range() {
        let s = Shape::new(1, 3, 5, 7);
        let a = Tensor::random(s, 7);
        assert_eq!(a, Tensor::random(s, 7));
        assert_ne!(a, Tensor::random(s, 8));
        assert!(a.as_slice().iter().all(|v| (-1.0..1.0).contains(v)));
    }

    #[test]
    fn reshape_keeps_order() {
        let s = Shape::new(1, 2, 2, 3);
        let t = Tensor::from_vec(s, (0..12).map(|v| v as f32).collect());
        let r = t.clone().reshape(Shape::new(1, 12, 1, 1));
        assert_eq!(r.as_slice(), t.as_slice());
        assert_eq!(r.shape().c, 12);
    }
}
