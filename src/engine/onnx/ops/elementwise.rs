//! Elementwise ops: activations, Clip, broadcasting arithmetic and comparisons, Sum/Max/Min/Mean, PRelu, Where.

use std::any::Any;

use ndarray::{ArrayD, IxDyn};

use super::super::data::{DType, Data, Fact, fmt_dims};
use super::util::{array, broadcast, broadcast_all, input, std_slice};
use super::{Builder, Ctx, Op};

/// The op types this family supports.
pub(super) const OPS: &[(&str, Builder)] = &[
    ("Relu", unary),
    ("LeakyRelu", unary),
    ("Sigmoid", unary),
    ("HardSigmoid", unary),
    ("HardSwish", unary),
    ("Tanh", unary),
    ("Erf", unary),
    ("Sqrt", unary),
    ("Exp", unary),
    ("Log", unary),
    ("Neg", unary),
    ("Abs", unary),
    ("Reciprocal", unary),
    ("Floor", unary),
    ("Ceil", unary),
    ("Elu", unary),
    ("Softplus", unary),
    ("Selu", unary),
    ("Gelu", unary),
    ("Not", unary),
    ("Clip", clip),
    ("Add", binary),
    ("Sub", binary),
    ("Mul", binary),
    ("Div", binary),
    ("Pow", binary),
    ("Equal", binary),
    ("Less", binary),
    ("Greater", binary),
    ("LessOrEqual", binary),
    ("GreaterOrEqual", binary),
    ("And", binary),
    ("Or", binary),
    ("Sum", variadic),
    ("Max", variadic),
    ("Min", variadic),
    ("Mean", variadic),
    ("PRelu", prelu),
    ("Where", where_op),
];

// ---------------------------------------------------------------- unary

/// A one-input activation or math function.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Unary {
    /// max(x, 0).
    Relu,
    /// x, or alpha * x below 0.
    LeakyRelu(f32),
    /// 1 / (1 + e^-x).
    Sigmoid,
    /// clamp(alpha * x + beta, 0, 1).
    HardSigmoid {
        /// Slope.
        alpha: f32,
        /// Offset.
        beta: f32,
    },
    /// x * clamp(x / 6 + 1/2, 0, 1).
    HardSwish,
    /// tanh(x).
    Tanh,
    /// The error function.
    Erf,
    /// Square root.
    Sqrt,
    /// e^x.
    Exp,
    /// Natural logarithm.
    Log,
    /// -x.
    Neg,
    /// |x|.
    Abs,
    /// 1 / x.
    Reciprocal,
    /// Round down.
    Floor,
    /// Round up.
    Ceil,
    /// x, or alpha * (e^x - 1) below 0.
    Elu(f32),
    /// ln(1 + e^x).
    Softplus,
    /// gamma * x, or gamma * alpha * (e^x - 1) at or below 0.
    Selu {
        /// Scale of the negative part.
        alpha: f32,
        /// Overall scale.
        gamma: f32,
    },
    /// x * Phi(x), exactly (with erf) or with the tanh approximation.
    Gelu {
        /// Use the tanh approximation.
        tanh: bool,
    },
    /// Logical not of a bool (0/1) tensor.
    Not,
}

/// erf(x) in f64 (a reference for [`erf_f32`]), with an absolute error below 1e-10: Chebyshev fits (in f64) of
/// erf(a)/a on [0, 1) and of e^(a^2) erfc(a) in 1/a on [1, 6); 1 beyond.
pub fn erf(x: f64) -> f64 {
    // Made with numpy 2 (numpy.polynomial.chebyshev.chebfit):
    //   u = np.linspace(0, 1, 40001); a = np.sqrt(u)
    //   y = [math.erf(v) / v if v > 0 else 2 / math.sqrt(math.pi) for v in a]
    //   SMALL = C.chebfit(2 * u - 1, y, 9)
    //   a = np.linspace(1, 6, 40001)
    //   LARGE = C.chebfit((12 / a - 7) / 5, [math.erfc(v) * math.exp(v * v) for v in a], 13)
    // Largest error against math.erf over 300001 points of [-7, 7]: 9e-11.
    const SMALL: [f64; 10] = [
        0.97547693938265,
        -0.14226120510371293,
        0.01003558218759423,
        -0.0005768764699760143,
        2.7419931245646768e-05,
        -1.1043175500209157e-06,
        3.848874755450582e-08,
        -1.1808576301027428e-09,
        3.232479666444289e-11,
        -7.986075887569049e-13,
    ];
    const LARGE: [f64; 14] = [
        0.2747746858910485,
        0.16699329118451584,
        -0.014778434922157009,
        0.0004607659955631026,
        0.00017657966392763146,
        -5.026984994936265e-05,
        7.426998031242186e-06,
        -3.518913384663289e-07,
        -1.7151803730785226e-07,
        6.705431919202296e-08,
        -1.4336509424358944e-08,
        1.7438534742578325e-09,
        4.6194062064782785e-11,
        -1.4808211993515672e-10,
    ];
    // Clenshaw's recurrence for sum c[k] T_k(t).
    fn cheb(c: &[f64], t: f64) -> f64 {
        let (mut b1, mut b2) = (0.0, 0.0);
        for &ck in c[1..].iter().rev() {
            let b0 = 2.0 * t * b1 - b2 + ck;
            b2 = b1;
            b1 = b0;
        }
        t * b1 - b2 + c[0]
    }
    let a = x.abs();
    let r = if a < 1.0 {
        a * cheb(&SMALL, 2.0 * a * a - 1.0)
    } else if a < 6.0 {
        1.0 - (-a * a).exp() * cheb(&LARGE, (12.0 / a - 7.0) / 5.0)
    } else if a.is_nan() {
        return x;
    } else {
        1.0
    };
    r.copysign(x)
}

/// erf(x) in f32 with an absolute error below 1.5e-7: x * P(x^2) below 1,
/// 1 - e^(-x^2) Q(1/x) from 1 to 4, 1 beyond. Branch-free (both fits are
/// evaluated, one is selected) so loops over it vectorise.
#[inline(always)]
#[allow(clippy::approx_constant, clippy::excessive_precision)] // fitted values as printed
pub fn erf_f32(x: f32) -> f32 {
    // Least-squares fits on 4001 Chebyshev nodes (numpy 2), rounded to f32:
    //   from numpy.polynomial import chebyshev as C, Polynomial as P
    //   u = np.cos(np.linspace(0, np.pi, 4001)) * 0.5 + 0.5; a = np.sqrt(u)
    //   y = [math.erf(v) / v if v > 0 else 2 / math.sqrt(math.pi) for v in a]
    //   S = P(C.cheb2poly(C.chebfit(2 * u - 1, y, 6)))(P([-1, 2])).coef
    //   t = np.cos(np.linspace(0, np.pi, 4001)) * 0.375 + 0.625
    //   y = [math.erfc(1 / v) * math.exp(1 / v**2) for v in t]
    //   L = np.polynomial.polynomial.polyfit(t, y, 8)
    // Error of this f32 evaluation against math.erf: 1.3e-7 below 1, 5e-8 above.
    const S: [f32; 7] = [
        1.128_379_1,
        -0.376_126_26,
        0.112_835_974,
        -0.026_854_329,
        0.005_189_312_6,
        -0.000_801_885_9,
        7.882_500_4e-5,
    ];
    const L: [f32; 9] = [
        0.000_292_609_97,
        0.558_677_1,
        0.044_516_187,
        -0.481_054_5,
        0.518_165_5,
        -0.271_449_57,
        0.048_697_01,
        0.016_846_45,
        -0.007_107_211_3,
    ];
    #[inline(always)]
    fn horner(c: &[f32], x: f32) -> f32 {
        c.iter().rev().fold(0.0, |acc, &k| acc * x + k)
    }
    let a = x.abs();
    let u = a * a;
    let small = a * horner(&S, u);
    let large = 1.0 - exp_f32(-u) * horner(&L, 1.0 / a);
    let r = if a < 1.0 {
        small
    } else if a < 4.0 {
        large
    } else if a >= 4.0 {
        1.0
    } else {
        a // NaN
    };
    r.copysign(x)
}

/// e^x in f32 within 2 ulp (Cephes' expf: x = n ln 2 + r, a degree-6
/// polynomial in r, 2^n built from bits), branch-free so loops over it
/// vectorise; overflows to +inf, underflows through subnormals to 0.
#[inline(always)]
#[allow(clippy::excessive_precision)] // Cephes' coefficients as published
pub fn exp_f32(x: f32) -> f32 {
    const ROUND: f32 = 12_582_912.0; // 1.5 * 2^23: adding it rounds to an integer.
    let x = if x < -104.0 { -104.0 } else { x };
    let x = if x > 89.0 { 89.0 } else { x };
    let k = x * std::f32::consts::LOG2_E + ROUND;
    let n = k - ROUND;
    let r = x - n * 0.693_359_375 - n * -2.121_944_4e-4;
    let p = ((((1.987_569_150_0e-4 * r + 1.398_199_950_7e-3) * r + 8.333_451_907_3e-3) * r
        + 4.166_579_589_4e-2)
        * r
        + 1.666_666_545_9e-1)
        * r
        + 5.000_000_120_1e-1;
    let y = p * r * r + r + 1.0;
    // n as an integer from k's mantissa (cheaper than a saturating cast),
    // and 2^n as two factors so n from -150 to 128 stays in range.
    let n = (k.to_bits() as i32).wrapping_sub(0x4b40_0000);
    let (n1, n2) = (n >> 1, n.wrapping_sub(n >> 1));
    let pow2 = |k: i32| f32::from_bits((k.wrapping_add(127) as u32) << 23);
    y * pow2(n1) * pow2(n2)
}

impl Unary {
    /// True when the function is defined on tensors of `dtype`.
    pub fn accepts(&self, dtype: DType) -> bool {
        match self {
            Unary::Relu | Unary::Neg | Unary::Abs => true,
            Unary::Not => dtype == DType::I64,
            _ => dtype == DType::F32,
        }
    }

    /// The function at `v`.
    #[inline(always)]
    pub fn apply(&self, v: f32) -> f32 {
        match *self {
            Unary::Relu => {
                if v < 0.0 {
                    0.0
                } else {
                    v
                }
            }
            Unary::LeakyRelu(a) => {
                if v < 0.0 {
                    a * v
                } else {
                    v
                }
            }
            Unary::Sigmoid => 1.0 / (1.0 + exp_f32(-v)),
            Unary::HardSigmoid { alpha, beta } => (alpha * v + beta).clamp(0.0, 1.0),
            Unary::HardSwish => v * (v / 6.0 + 0.5).clamp(0.0, 1.0),
            Unary::Tanh => v.tanh(),
            Unary::Erf => erf_f32(v),
            Unary::Sqrt => v.sqrt(),
            Unary::Exp => v.exp(),
            Unary::Log => v.ln(),
            Unary::Neg => -v,
            Unary::Abs => v.abs(),
            Unary::Reciprocal => 1.0 / v,
            Unary::Floor => v.floor(),
            Unary::Ceil => v.ceil(),
            Unary::Elu(a) => {
                if v < 0.0 {
                    a * v.exp_m1()
                } else {
                    v
                }
            }
            Unary::Softplus => {
                if v > 0.0 {
                    v + (-v).exp().ln_1p()
                } else {
                    v.exp().ln_1p()
                }
            }
            Unary::Selu { alpha, gamma } => {
                if v > 0.0 {
                    gamma * v
                } else {
                    gamma * alpha * v.exp_m1()
                }
            }
            Unary::Gelu { tanh: false } => {
                0.5 * v * (1.0 + erf_f32(v * std::f32::consts::FRAC_1_SQRT_2))
            }
            // 0.5 (1 + tanh(y)) = sigmoid(2y), which has no cancellation.
            Unary::Gelu { tanh: true } => {
                let k = (2.0 / std::f32::consts::PI).sqrt();
                v / (1.0 + exp_f32(-2.0 * k * (v + 0.044_715 * v * v * v)))
            }
            Unary::Not => (v == 0.0) as i64 as f32,
        }
    }

    /// The function on an integer; `None` for functions of floats only.
    pub fn apply_i64(&self, v: i64) -> Option<i64> {
        match self {
            Unary::Relu => Some(v.max(0)),
            Unary::Neg => Some(v.wrapping_neg()),
            Unary::Abs => Some(v.wrapping_abs()),
            Unary::Not => Some((v == 0) as i64),
            _ => None,
        }
    }

    /// The function over every element of `v`, in place.
    pub fn apply_slice(&self, v: &mut [f32]) {
        #[inline(always)]
        fn each(v: &mut [f32], f: impl Fn(f32) -> f32) {
            for x in v {
                *x = f(*x);
            }
        }
        // One loop per variant, so each is specialised (and vectorised
        // where the function allows).
        match *self {
            Unary::Relu => each(v, |x| Unary::Relu.apply(x)),
            Unary::LeakyRelu(a) => each(v, |x| Unary::LeakyRelu(a).apply(x)),
            Unary::Sigmoid => each(v, |x| Unary::Sigmoid.apply(x)),
            Unary::HardSigmoid { alpha, beta } => {
                each(v, |x| Unary::HardSigmoid { alpha, beta }.apply(x))
            }
            Unary::HardSwish => each(v, |x| Unary::HardSwish.apply(x)),
            Unary::Tanh => each(v, f32::tanh),
            Unary::Erf => each(v, |x| Unary::Erf.apply(x)),
            Unary::Sqrt => each(v, f32::sqrt),
            Unary::Exp => each(v, f32::exp),
            Unary::Log => each(v, f32::ln),
            Unary::Neg => each(v, |x| -x),
            Unary::Abs => each(v, f32::abs),
            Unary::Reciprocal => each(v, |x| 1.0 / x),
            Unary::Floor => each(v, f32::floor),
            Unary::Ceil => each(v, f32::ceil),
            Unary::Elu(a) => each(v, |x| Unary::Elu(a).apply(x)),
            Unary::Softplus => each(v, |x| Unary::Softplus.apply(x)),
            Unary::Selu { alpha, gamma } => each(v, |x| Unary::Selu { alpha, gamma }.apply(x)),
            Unary::Gelu { tanh } => each(v, |x| Unary::Gelu { tanh }.apply(x)),
            Unary::Not => each(v, |x| Unary::Not.apply(x)),
        }
    }
}

/// A [`Unary`] function as an op.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct UnaryOp(pub Unary);

fn unary(ctx: &Ctx) -> Result<Box<dyn Op>, String> {
    let a = &ctx.attrs;
    let u = match ctx.op_type {
        "Relu" => Unary::Relu,
        "LeakyRelu" => Unary::LeakyRelu(a.float_or("alpha", 0.01)?),
        "Sigmoid" => Unary::Sigmoid,
        "HardSigmoid" => Unary::HardSigmoid {
            alpha: a.float_or("alpha", 0.2)?,
            beta: a.float_or("beta", 0.5)?,
        },
        "HardSwish" => Unary::HardSwish,
        "Tanh" => Unary::Tanh,
        "Erf" => Unary::Erf,
        "Sqrt" => Unary::Sqrt,
        "Exp" => Unary::Exp,
        "Log" => Unary::Log,
        "Neg" => Unary::Neg,
        "Abs" => Unary::Abs,
        "Reciprocal" => Unary::Reciprocal,
        "Floor" => Unary::Floor,
        "Ceil" => Unary::Ceil,
        "Elu" => Unary::Elu(a.float_or("alpha", 1.0)?),
        "Softplus" => Unary::Softplus,
        "Selu" => Unary::Selu {
            alpha: a.float_or("alpha", 1.673_263_2)?,
            gamma: a.float_or("gamma", 1.050_701)?,
        },
        "Gelu" => Unary::Gelu {
            tanh: match a.string_or("approximate", "none")?.as_str() {
                "none" => false,
                "tanh" => true,
                other => {
                    return Err(format!(
                        "attribute approximate must be \"none\" or \"tanh\", got {other:?}"
                    ));
                }
            },
        },
        "Not" => Unary::Not,
        other => return Err(format!("{other} is not a one-input function")),
    };
    ctx.required(0)?;
    Ok(Box::new(UnaryOp(u)))
}

impl Op for UnaryOp {
    fn infer(&self, inputs: &[Option<&Fact>]) -> Result<Vec<Fact>, String> {
        let x = input(inputs, 0)?;
        if !self.0.accepts(x.dtype) {
            return Err(format!("{:?} does not take {} input", self.0, x.dtype));
        }
        Ok(vec![Fact::new(x.dtype, x.dims.clone())])
    }

    fn eval(&self, inputs: &[Option<&Data>]) -> Result<Vec<Data>, String> {
        let x = input(inputs, 0)?;
        if !self.0.accepts(x.dtype()) {
            return Err(format!("{:?} does not take {} input", self.0, x.dtype()));
        }
        Ok(vec![match x {
            Data::F32(a) => {
                let mut out = a.as_standard_layout().into_owned();
                self.0
                    .apply_slice(out.as_slice_mut().expect("standard layout"));
                Data::F32(out)
            }
            Data::I64(a) => Data::I64(a.mapv(|v| self.0.apply_i64(v).unwrap_or(v))),
        }])
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

// ---------------------------------------------------------------- clip

/// Clamps to `[min, max]` (to `max` everywhere when `min > max`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Clip {
    /// Lower bound (`-inf`: none).
    pub min: f32,
    /// Upper bound (`+inf`: none).
    pub max: f32,
}

#[allow(
    clippy::cast_possible_truncation,
    reason = "the bound of an f32 tensor"
)]
fn clip(ctx: &Ctx) -> Result<Box<dyn Op>, String> {
    ctx.required(0)?;
    let (min, max) = if ctx.opset < 11 {
        (
            ctx.attrs.float_or("min", f32::NEG_INFINITY)?,
            ctx.attrs.float_or("max", f32::INFINITY)?,
        )
    } else {
        let bound = |i: usize, name: &str, default: f32| -> Result<f32, String> {
            match ctx.const_input(i)? {
                None => Ok(default),
                Some(d) => match d.to_f64_vec()[..] {
                    [v] => Ok(v as f32),
                    _ => Err(format!(
                        "input {i} ({name}) must be a scalar, got shape {}",
                        fmt_dims(d.dims())
                    )),
                },
            }
        };
        (
            bound(1, "min", f32::NEG_INFINITY)?,
            bound(2, "max", f32::INFINITY)?,
        )
    };
    Ok(Box::new(Clip { min, max }))
}

impl Clip {
    /// `v` clamped.
    #[inline(always)]
    pub fn apply(&self, v: f32) -> f32 {
        let v = if v < self.min { self.min } else { v };
        if v > self.max { self.max } else { v }
    }
}

impl Op for Clip {
    fn infer(&self, inputs: &[Option<&Fact>]) -> Result<Vec<Fact>, String> {
        let x = input(inputs, 0)?;
        Ok(vec![Fact::new(x.dtype, x.dims.clone())])
    }

    #[allow(
        clippy::cast_possible_truncation,
        reason = "saturating: infinite bounds become the i64 limits"
    )]
    fn eval(&self, inputs: &[Option<&Data>]) -> Result<Vec<Data>, String> {
        Ok(vec![match input(inputs, 0)? {
            Data::F32(a) => {
                let mut out = a.as_standard_layout().into_owned();
                for v in out.iter_mut() {
                    *v = self.apply(*v);
                }
                Data::F32(out)
            }
            Data::I64(a) => {
                // Saturating casts: infinite bounds become the i64 limits.
                let (lo, hi) = (self.min as i64, self.max as i64);
                Data::I64(a.mapv(|v| v.max(lo).min(hi)))
            }
        }])
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

// ---------------------------------------------------------------- binary

/// A two-operand elementwise function.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BinaryKind {
    /// a + b.
    Add,
    /// a - b.
    Sub,
    /// a * b.
    Mul,
    /// a / b (integers truncate toward zero).
    Div,
    /// a ^ b.
    Pow,
    /// The larger (NaN if either is).
    Max,
    /// The smaller (NaN if either is).
    Min,
    /// a == b, as 0/1.
    Equal,
    /// a < b, as 0/1.
    Less,
    /// a > b, as 0/1.
    Greater,
    /// a <= b, as 0/1.
    LessOrEqual,
    /// a >= b, as 0/1.
    GreaterOrEqual,
    /// Both non-zero, as 0/1.
    And,
    /// Either non-zero, as 0/1.
    Or,
}

impl BinaryKind {
    /// True for the comparisons and logical ops, whose output is bool (i64).
    pub fn is_logical(self) -> bool {
        use BinaryKind::*;
        matches!(
            self,
            Equal | Less | Greater | LessOrEqual | GreaterOrEqual | And | Or
        )
    }

    /// The output type for operands of types `a` and `b`.
    pub fn out_dtype(self, a: DType, b: DType) -> Result<DType, String> {
        match self {
            BinaryKind::And | BinaryKind::Or if (a, b) != (DType::I64, DType::I64) => {
                Err(format!("{self:?} needs bool operands, got {a} and {b}"))
            }
            BinaryKind::Pow => Ok(a),
            _ if a != b => Err(format!("operands have different types ({a} and {b})")),
            k if k.is_logical() => Ok(DType::I64),
            _ => Ok(a),
        }
    }
}

/// Where the small operand of a broadcast sits in the big one: the big
/// one's elements are `outer` repeats of `mid` runs of `inner`, and each run
/// takes one small element (the small operand has `mid` elements).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Spread {
    outer: usize,
    mid: usize,
    inner: usize,
}

/// The spread of an operand of shape `small` over the output shape `out`,
/// if its non-1 axes form one run equal to `out`'s (scalars, per-channel
/// `[C,1,1]`, `[N,C,1,1]`, same shape, row vectors).
fn spread(out: &[usize], small: &[usize]) -> Option<Spread> {
    let pad = out.len().checked_sub(small.len())?;
    let dim = |i: usize| if i < pad { 1 } else { small[i - pad] };
    let n: usize = out.iter().product();
    let Some(first) = (0..out.len()).find(|&i| dim(i) != 1) else {
        return Some(Spread {
            outer: 1,
            mid: 1,
            inner: n,
        });
    };
    let last = (0..out.len()).rfind(|&i| dim(i) != 1)?;
    (first..=last).all(|i| dim(i) == out[i]).then(|| Spread {
        outer: out[..first].iter().product(),
        mid: out[first..=last].iter().product(),
        inner: out[last + 1..].iter().product(),
    })
}

/// Appends `f(big, small)` over a spread (nothing empty).
#[inline(always)]
fn spread_into<A: Copy, B: Copy, O>(
    big: &[A],
    small: &[B],
    s: Spread,
    out: &mut Vec<O>,
    f: impl Fn(A, B) -> O,
) {
    if s.inner == 1 {
        for row in big.chunks_exact(s.mid) {
            out.extend(row.iter().zip(small).map(|(&x, &y)| f(x, y)));
        }
    } else {
        for (k, run) in big.chunks_exact(s.inner).enumerate() {
            let y = small[k % s.mid];
            out.extend(run.iter().map(|&x| f(x, y)));
        }
    }
}

/// `f` over `a` and `b` broadcast together.
fn map2<A: Copy, B: Copy, O>(
    a: &ArrayD<A>,
    b: &ArrayD<B>,
    f: impl Fn(A, B) -> O + Copy,
) -> Result<ArrayD<O>, String> {
    let dims = broadcast(a.shape(), b.shape())?;
    let n: usize = dims.iter().product();
    let mut out = Vec::with_capacity(n);
    if n == 0 {
        return array(&dims, out);
    }
    if a.len() == n
        && let Some(s) = spread(&dims, b.shape())
    {
        spread_into(&std_slice(a), &std_slice(b), s, &mut out, f);
    } else if b.len() == n
        && let Some(s) = spread(&dims, a.shape())
    {
        spread_into(&std_slice(b), &std_slice(a), s, &mut out, |y, x| f(x, y));
    } else {
        let d = IxDyn(&dims);
        let bad = || {
            format!(
                "shapes {} and {} do not broadcast",
                fmt_dims(a.shape()),
                fmt_dims(b.shape())
            )
        };
        let av = a.broadcast(d.clone()).ok_or_else(bad)?;
        let bv = b.broadcast(d).ok_or_else(bad)?;
        out.extend(av.iter().zip(bv.iter()).map(|(&x, &y)| f(x, y)));
    }
    array(&dims, out)
}

/// `a = f(a, b)` with `b` broadcast to `a`'s shape (checked by the caller).
fn map2_in_place(a: &mut ArrayD<f32>, b: &ArrayD<f32>, f: impl Fn(f32, f32) -> f32 + Copy) {
    if !a.is_standard_layout() {
        *a = a.as_standard_layout().into_owned();
    }
    if a.is_empty() {
        return;
    }
    match spread(a.shape(), b.shape()) {
        Some(s) => {
            let big = a.as_slice_mut().expect("standard layout");
            let small = std_slice(b);
            if s.inner == 1 {
                for row in big.chunks_exact_mut(s.mid) {
                    for (x, &y) in row.iter_mut().zip(small.iter()) {
                        *x = f(*x, y);
                    }
                }
            } else {
                for (k, run) in big.chunks_exact_mut(s.inner).enumerate() {
                    let y = small[k % s.mid];
                    for x in run {
                        *x = f(*x, y);
                    }
                }
            }
        }
        None => a.zip_mut_with(b, |x, &y| *x = f(*x, y)),
    }
}

#[inline(always)]
fn max_nan(x: f32, y: f32) -> f32 {
    if x >= y || x.is_nan() { x } else { y }
}

#[inline(always)]
fn min_nan(x: f32, y: f32) -> f32 {
    if x <= y || x.is_nan() { x } else { y }
}

#[inline(always)]
fn truth(c: bool) -> f32 {
    if c { 1.0 } else { 0.0 }
}

/// Runs `$body` with `$f` bound to the f32 function of `$kind`
/// (comparisons give 0.0/1.0), each kind its own monomorphised closure.
macro_rules! with_f32_fn {
    ($kind:expr, |$f:ident| $body:expr) => {
        match $kind {
            BinaryKind::Add => {
                let $f = |x: f32, y: f32| x + y;
                $body
            }
            BinaryKind::Sub => {
                let $f = |x: f32, y: f32| x - y;
                $body
            }
            BinaryKind::Mul => {
                let $f = |x: f32, y: f32| x * y;
                $body
            }
            BinaryKind::Div => {
                let $f = |x: f32, y: f32| x / y;
                $body
            }
            BinaryKind::Pow => {
                let $f = |x: f32, y: f32| x.powf(y);
                $body
            }
            BinaryKind::Max => {
                let $f = max_nan;
                $body
            }
            BinaryKind::Min => {
                let $f = min_nan;
                $body
            }
            BinaryKind::Equal => {
                let $f = |x: f32, y: f32| truth(x == y);
                $body
            }
            BinaryKind::Less => {
                let $f = |x: f32, y: f32| truth(x < y);
                $body
            }
            BinaryKind::Greater => {
                let $f = |x: f32, y: f32| truth(x > y);
                $body
            }
            BinaryKind::LessOrEqual => {
                let $f = |x: f32, y: f32| truth(x <= y);
                $body
            }
            BinaryKind::GreaterOrEqual => {
                let $f = |x: f32, y: f32| truth(x >= y);
                $body
            }
            BinaryKind::And => {
                let $f = |x: f32, y: f32| truth(x != 0.0 && y != 0.0);
                $body
            }
            BinaryKind::Or => {
                let $f = |x: f32, y: f32| truth(x != 0.0 || y != 0.0);
                $body
            }
        }
    };
}

/// True when `b` is the single value `v` (a `Pow` exponent worth a fast path).
fn is_scalar(b: &ArrayD<f32>, v: f32) -> bool {
    b.len() == 1 && b.iter().next() == Some(&v)
}

/// `kind` over two f32 arrays, broadcast together. Comparisons and the
/// logical kinds give 0.0/1.0.
pub fn binary_f32(
    kind: BinaryKind,
    a: &ArrayD<f32>,
    b: &ArrayD<f32>,
) -> Result<ArrayD<f32>, String> {
    if kind == BinaryKind::Pow && is_scalar(b, 2.0) {
        return map2(a, b, |x, _| x * x);
    }
    with_f32_fn!(kind, |f| map2(a, b, f))
}

/// `a = kind(a, b)` in place; `b` must broadcast to `a`'s shape exactly.
pub fn binary_f32_in_place(
    kind: BinaryKind,
    a: &mut ArrayD<f32>,
    b: &ArrayD<f32>,
) -> Result<(), String> {
    if broadcast(a.shape(), b.shape())? != a.shape() {
        return Err(format!(
            "shape {} does not broadcast to {} in place",
            fmt_dims(b.shape()),
            fmt_dims(a.shape())
        ));
    }
    if kind == BinaryKind::Pow && is_scalar(b, 2.0) {
        map2_in_place(a, b, |x, _| x * x);
    } else {
        with_f32_fn!(kind, |f| map2_in_place(a, b, f));
    }
    Ok(())
}

/// An integer `x ^ e` (wrapping; negative exponents truncate toward zero).
#[allow(
    clippy::cast_possible_truncation,
    reason = "an integer power that overflows saturates, as the float computation does"
)]
fn pow_i64(x: i64, e: i64) -> i64 {
    match u32::try_from(e) {
        Ok(e) => x.wrapping_pow(e),
        Err(_) if e < 0 => match x {
            1 => 1,
            -1 => {
                if e % 2 == 0 {
                    1
                } else {
                    -1
                }
            }
            _ => (x as f64).powf(e as f64) as i64,
        },
        Err(_) => (x as f64).powf(e as f64) as i64,
    }
}

fn logical<T: Copy + PartialOrd + Default>(
    kind: BinaryKind,
    a: &ArrayD<T>,
    b: &ArrayD<T>,
) -> Result<ArrayD<i64>, String> {
    let z = T::default();
    let t = |c: bool| c as i64;
    match kind {
        BinaryKind::Equal => map2(a, b, move |x, y| t(x == y)),
        BinaryKind::Less => map2(a, b, move |x, y| t(x < y)),
        BinaryKind::Greater => map2(a, b, move |x, y| t(x > y)),
        BinaryKind::LessOrEqual => map2(a, b, move |x, y| t(x <= y)),
        BinaryKind::GreaterOrEqual => map2(a, b, move |x, y| t(x >= y)),
        BinaryKind::And => map2(a, b, move |x, y| t(x != z && y != z)),
        BinaryKind::Or => map2(a, b, move |x, y| t(x != z || y != z)),
        k => Err(format!("{k:?} is not a comparison")),
    }
}

fn arith_i64(kind: BinaryKind, a: &ArrayD<i64>, b: &ArrayD<i64>) -> Result<ArrayD<i64>, String> {
    match kind {
        BinaryKind::Add => map2(a, b, i64::wrapping_add),
        BinaryKind::Sub => map2(a, b, i64::wrapping_sub),
        BinaryKind::Mul => map2(a, b, i64::wrapping_mul),
        BinaryKind::Div => {
            if b.iter().any(|&v| v == 0) {
                return Err("integer division by zero".into());
            }
            map2(a, b, i64::wrapping_div)
        }
        BinaryKind::Pow => map2(a, b, pow_i64),
        BinaryKind::Max => map2(a, b, i64::max),
        BinaryKind::Min => map2(a, b, i64::min),
        k => logical(k, a, b),
    }
}

/// `kind` over two values, broadcast together.
#[allow(
    clippy::cast_possible_truncation,
    reason = "an integer power that overflows saturates, as the float computation does"
)]
pub fn binary_data(kind: BinaryKind, a: &Data, b: &Data) -> Result<Data, String> {
    kind.out_dtype(a.dtype(), b.dtype())?;
    Ok(match (a, b) {
        (Data::F32(x), Data::F32(y)) if kind.is_logical() => Data::I64(logical(kind, x, y)?),
        (Data::F32(x), Data::F32(y)) => Data::F32(binary_f32(kind, x, y)?),
        (Data::I64(x), Data::I64(y)) => Data::I64(arith_i64(kind, x, y)?),
        (Data::F32(x), Data::I64(e)) => Data::F32(map2(x, e, |x, e| x.powf(e as f32))?),
        (Data::I64(x), Data::F32(e)) => {
            Data::I64(map2(x, e, |x, e| (x as f64).powf(e as f64) as i64)?)
        }
    })
}

/// A two-operand elementwise op with numpy broadcasting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Binary(pub BinaryKind);

fn binary(ctx: &Ctx) -> Result<Box<dyn Op>, String> {
    let kind = match ctx.op_type {
        "Add" => BinaryKind::Add,
        "Sub" => BinaryKind::Sub,
        "Mul" => BinaryKind::Mul,
        "Div" => BinaryKind::Div,
        "Pow" => BinaryKind::Pow,
        "Equal" => BinaryKind::Equal,
        "Less" => BinaryKind::Less,
        "Greater" => BinaryKind::Greater,
        "LessOrEqual" => BinaryKind::LessOrEqual,
        "GreaterOrEqual" => BinaryKind::GreaterOrEqual,
        "And" => BinaryKind::And,
        "Or" => BinaryKind::Or,
        other => return Err(format!("{other} is not a two-operand function")),
    };
    ctx.required(0)?;
    ctx.required(1)?;
    Ok(Box::new(Binary(kind)))
}

impl Op for Binary {
    fn infer(&self, inputs: &[Option<&Fact>]) -> Result<Vec<Fact>, String> {
        let (a, b) = (input(inputs, 0)?, input(inputs, 1)?);
        let dtype = self.0.out_dtype(a.dtype, b.dtype)?;
        Ok(vec![Fact::new(dtype, broadcast(&a.dims, &b.dims)?)])
    }

    fn eval(&self, inputs: &[Option<&Data>]) -> Result<Vec<Data>, String> {
        Ok(vec![binary_data(
            self.0,
            input(inputs, 0)?,
            input(inputs, 1)?,
        )?])
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

// ---------------------------------------------------------------- variadic

/// `Sum` (`Add`), `Max` or `Min` over one or more inputs, broadcast together.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Variadic(pub BinaryKind);

/// `Mean` over one or more f32 inputs: their broadcast sum over their count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mean;

fn variadic(ctx: &Ctx) -> Result<Box<dyn Op>, String> {
    if ctx.inputs.is_empty() {
        return Err("needs at least one input".into());
    }
    for i in 0..ctx.inputs.len() {
        ctx.required(i)?;
    }
    Ok(match ctx.op_type {
        "Sum" => Box::new(Variadic(BinaryKind::Add)),
        "Max" => Box::new(Variadic(BinaryKind::Max)),
        "Min" => Box::new(Variadic(BinaryKind::Min)),
        "Mean" => Box::new(Mean),
        other => return Err(format!("{other} is not a variadic op")),
    })
}

fn infer_variadic(kind: BinaryKind, inputs: &[Option<&Fact>]) -> Result<Fact, String> {
    let first = input(inputs, 0)?;
    let mut dims = first.dims.clone();
    for i in 1..inputs.len() {
        let f = input(inputs, i)?;
        kind.out_dtype(first.dtype, f.dtype)
            .map_err(|e| format!("input {i}: {e}"))?;
        dims = broadcast(&dims, &f.dims)?;
    }
    Ok(Fact::new(first.dtype, dims))
}

fn eval_variadic(kind: BinaryKind, inputs: &[Option<&Data>]) -> Result<Data, String> {
    let mut acc = input(inputs, 0)?.clone();
    for i in 1..inputs.len() {
        let x = input(inputs, i)?;
        if let (Data::F32(a), Data::F32(b)) = (&mut acc, x)
            && broadcast(a.shape(), b.shape())? == a.shape()
        {
            binary_f32_in_place(kind, a, b)?;
        } else {
            acc = binary_data(kind, &acc, x)?;
        }
    }
    Ok(acc)
}

impl Op for Variadic {
    fn infer(&self, inputs: &[Option<&Fact>]) -> Result<Vec<Fact>, String> {
        Ok(vec![infer_variadic(self.0, inputs)?])
    }

    fn eval(&self, inputs: &[Option<&Data>]) -> Result<Vec<Data>, String> {
        Ok(vec![eval_variadic(self.0, inputs)?])
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

impl Op for Mean {
    fn infer(&self, inputs: &[Option<&Fact>]) -> Result<Vec<Fact>, String> {
        let f = infer_variadic(BinaryKind::Add, inputs)?;
        if f.dtype != DType::F32 {
            return Err(format!("Mean needs float inputs, got {}", f.dtype));
        }
        Ok(vec![f])
    }

    fn eval(&self, inputs: &[Option<&Data>]) -> Result<Vec<Data>, String> {
        let Data::F32(mut sum) = eval_variadic(BinaryKind::Add, inputs)? else {
            return Err("Mean needs float inputs, got i64".into());
        };
        let n = inputs.len() as f32;
        sum.mapv_inplace(|v| v / n);
        Ok(vec![Data::F32(sum)])
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

// ---------------------------------------------------------------- PRelu

/// x, or slope * x below 0; the slope broadcasts to x (numpy rules, or a
/// 1-D slope of x's channel count as per-channel).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PRelu;

impl PRelu {
    /// The dimensions the slope takes against x: its own when it broadcasts
    /// to x, `[C, 1, ...]` for a per-channel 1-D slope of length `x[1]`.
    pub fn slope_dims(x: &[usize], slope: &[usize]) -> Result<Vec<usize>, String> {
        if broadcast(x, slope).is_ok_and(|d| d == x) {
            Ok(slope.to_vec())
        } else if slope.len() == 1 && x.len() >= 2 && slope[0] == x[1] {
            let mut d = vec![1; x.len() - 1];
            d[0] = slope[0];
            Ok(d)
        } else {
            Err(format!(
                "slope of shape {} does not broadcast to X of shape {}",
                fmt_dims(slope),
                fmt_dims(x)
            ))
        }
    }
}

fn prelu(ctx: &Ctx) -> Result<Box<dyn Op>, String> {
    ctx.required(0)?;
    ctx.required(1)?;
    Ok(Box::new(PRelu))
}

impl Op for PRelu {
    fn infer(&self, inputs: &[Option<&Fact>]) -> Result<Vec<Fact>, String> {
        let (x, s) = (input(inputs, 0)?, input(inputs, 1)?);
        if (x.dtype, s.dtype) != (DType::F32, DType::F32) {
            return Err(format!(
                "PRelu needs float X and slope, got {} and {}",
                x.dtype, s.dtype
            ));
        }
        PRelu::slope_dims(&x.dims, &s.dims)?;
        Ok(vec![Fact::f32(x.dims.clone())])
    }

    fn eval(&self, inputs: &[Option<&Data>]) -> Result<Vec<Data>, String> {
        let x = input(inputs, 0)?.f32()?;
        let s = input(inputs, 1)?.f32()?;
        let dims = PRelu::slope_dims(x.shape(), s.shape())?;
        let s = array(&dims, std_slice(s).into_owned())?;
        let f = |x: f32, s: f32| if x < 0.0 { x * s } else { x };
        Ok(vec![Data::F32(map2(x, &s, f)?)])
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

// ---------------------------------------------------------------- Where

/// `cond ? x : y` elementwise, all three broadcast together.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Where;

fn where_op(ctx: &Ctx) -> Result<Box<dyn Op>, String> {
    for i in 0..3 {
        ctx.required(i)?;
    }
    Ok(Box::new(Where))
}

fn select<T: Copy>(c: &ArrayD<i64>, x: &ArrayD<T>, y: &ArrayD<T>) -> Result<ArrayD<T>, String> {
    let dims = broadcast_all([c.shape(), x.shape(), y.shape()])?;
    let d = IxDyn(&dims);
    let bad = || "operands do not broadcast".to_string();
    let (cv, xv, yv) = (
        c.broadcast(d.clone()).ok_or_else(bad)?,
        x.broadcast(d.clone()).ok_or_else(bad)?,
        y.broadcast(d).ok_or_else(bad)?,
    );
    let v = cv
        .iter()
        .zip(xv.iter().zip(yv.iter()))
        .map(|(&c, (&x, &y))| if c != 0 { x } else { y })
        .collect();
    array(&dims, v)
}

impl Op for Where {
    fn infer(&self, inputs: &[Option<&Fact>]) -> Result<Vec<Fact>, String> {
        let (c, x, y) = (input(inputs, 0)?, input(inputs, 1)?, input(inputs, 2)?);
        if c.dtype != DType::I64 {
            return Err("condition (input 0) must be bool, got f32".into());
        }
        if x.dtype != y.dtype {
            return Err(format!(
                "X and Y have different types ({} and {})",
                x.dtype, y.dtype
            ));
        }
        let dims = broadcast_all([&c.dims[..], &x.dims[..], &y.dims[..]])?;
        Ok(vec![Fact::new(x.dtype, dims)])
    }

    fn eval(&self, inputs: &[Option<&Data>]) -> Result<Vec<Data>, String> {
        let c = input(inputs, 0)?
            .i64()
            .map_err(|e| format!("condition: {e}"))?;
        Ok(vec![match (input(inputs, 1)?, input(inputs, 2)?) {
            (Data::F32(x), Data::F32(y)) => Data::F32(select(c, x, y)?),
            (Data::I64(x), Data::I64(y)) => Data::I64(select(c, x, y)?),
            _ => return Err("X and Y have different types".into()),
        }])
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{
        In, assert_close, build, f32s, float, i64s, run, run_n, string, values,
    };
    use super::*;
    use proptest::prelude::*;

    fn dynf(dims: &[usize], v: Vec<f32>) -> In {
        In::Dynamic(f32s(dims, v))
    }

    fn ints_of(d: &Data) -> Vec<i64> {
        d.i64().expect("i64 output").iter().copied().collect()
    }

    #[test]
    fn erf_known_values() {
        for (x, want) in [
            (0.5, 0.5204998778),
            (1.0, 0.8427007929),
            (-2.0, -0.9953222650),
            (3.0, 0.9999779095),
            (0.0, 0.0),
            (0.1, 0.1124629160),
            (-0.999, -0.8422852),
            (5.9, 0.9999999999999999),
            (7.0, 1.0),
        ] {
            assert!(
                (erf(x) - want).abs() < 1e-7,
                "erf({x}) = {}, want {want}",
                erf(x)
            );
        }
        // Continuity at the pieces' seams.
        for s in [1.0f64, 6.0] {
            assert!((erf(s - 1e-12) - erf(s)).abs() < 1e-9);
        }
        assert!(erf(f64::NAN).is_nan());
        assert_eq!(erf(-f64::INFINITY), -1.0);
    }

    #[test]
    #[allow(clippy::approx_constant, clippy::excessive_precision)] // golden values as printed
    fn unary_against_onnxruntime() {
        // import numpy as np, onnxruntime as ort; from onnx import helper as h, TensorProto as T
        // x = np.array([-3, -1.5, -0.5, 0, 0.25, 1, 2.5], np.float32)
        // pos = np.array([0.1, 0.5, 1, 2, 4.5, 9, 100], np.float32)
        // for each (op, attrs, inp): a one-node opset-20 model run by onnxruntime 1.32 on inp.
        let x = vec![-3.0, -1.5, -0.5, 0.0, 0.25, 1.0, 2.5];
        let pos = vec![0.1, 0.5, 1.0, 2.0, 4.5, 9.0, 100.0];
        let alpha = [float("alpha", 0.3)];
        let tanh = [string("approximate", "tanh")];
        let cases: &[(&str, &[_], bool, [f32; 7])] = &[
            ("Relu", &[], false, [0.0, 0.0, 0.0, 0.0, 0.25, 1.0, 2.5]),
            (
                "LeakyRelu",
                &[],
                false,
                [-0.03, -0.015, -0.005, 0.0, 0.25, 1.0, 2.5],
            ),
            (
                "LeakyRelu",
                &alpha,
                false,
                [-0.9, -0.45, -0.15, 0.0, 0.25, 1.0, 2.5],
            ),
            (
                "Sigmoid",
                &[],
                false,
                [
                    0.047425866,
                    0.18242556,
                    0.3775407,
                    0.5,
                    0.56217647,
                    0.7310586,
                    0.9241418,
                ],
            ),
            (
                "HardSigmoid",
                &[],
                false,
                [0.0, 0.2, 0.4, 0.5, 0.55, 0.7, 1.0],
            ),
            (
                "HardSwish",
                &[],
                false,
                [
                    0.0,
                    -0.375,
                    -0.20833333,
                    0.0,
                    0.13541667,
                    0.6666667,
                    2.2916667,
                ],
            ),
            (
                "Tanh",
                &[],
                false,
                [
                    -0.9950547,
                    -0.9051482,
                    -0.46211717,
                    0.0,
                    0.24491866,
                    0.7615942,
                    0.98661435,
                ],
            ),
            (
                "Erf",
                &[],
                false,
                [
                    -0.9999779,
                    -0.96610516,
                    -0.5204999,
                    0.0,
                    0.27632639,
                    0.8427008,
                    0.9995931,
                ],
            ),
            (
                "Sqrt",
                &[],
                true,
                [0.31622776, 0.70710677, 1.0, 1.4142135, 2.1213202, 3.0, 10.0],
            ),
            (
                "Exp",
                &[],
                false,
                [
                    0.049787067,
                    0.22313017,
                    0.60653067,
                    1.0,
                    1.2840254,
                    2.7182817,
                    12.182494,
                ],
            ),
            (
                "Log",
                &[],
                true,
                [
                    -2.3025851, -0.6931472, 0.0, 0.6931472, 1.5040774, 2.1972246, 4.60517,
                ],
            ),
            ("Neg", &[], false, [3.0, 1.5, 0.5, -0.0, -0.25, -1.0, -2.5]),
            ("Abs", &[], false, [3.0, 1.5, 0.5, 0.0, 0.25, 1.0, 2.5]),
            (
                "Reciprocal",
                &[],
                true,
                [10.0, 2.0, 1.0, 0.5, 0.22222222, 0.11111111, 0.01],
            ),
            ("Floor", &[], false, [-3.0, -2.0, -1.0, 0.0, 0.0, 1.0, 2.0]),
            ("Ceil", &[], false, [-3.0, -1.0, -0.0, 0.0, 1.0, 1.0, 3.0]),
            (
                "Elu",
                &[],
                false,
                [-0.95021296, -0.77686983, -0.39346933, 0.0, 0.25, 1.0, 2.5],
            ),
            (
                "Softplus",
                &[],
                false,
                [
                    0.048587356,
                    0.20141326,
                    0.474077,
                    0.6931472,
                    0.8259394,
                    1.3132617,
                    2.5788898,
                ],
            ),
            (
                "Selu",
                &[],
                false,
                [
                    -1.6705687,
                    -1.3658143,
                    -0.69175816,
                    0.0,
                    0.26267526,
                    1.050701,
                    2.6267526,
                ],
            ),
            (
                "Gelu",
                &[],
                false,
                [
                    -0.0040496886,
                    -0.10021082,
                    -0.15426877,
                    0.0,
                    0.14967658,
                    0.8413447,
                    2.484476,
                ],
            ),
            (
                "Gelu",
                &tanh,
                false,
                [
                    -0.0036375225,
                    -0.10042843,
                    -0.154286,
                    0.0,
                    0.14967535,
                    0.841192,
                    2.4849157,
                ],
            ),
        ];
        for (op, attrs, positive, want) in cases {
            let inp = if *positive { pos.clone() } else { x.clone() };
            let got = run(op, 20, attrs, &[dynf(&[7], inp.clone())]).unwrap();
            assert_close(&values(&got[0]), want, 2e-6);
            // The per-element form agrees with the slice form.
            let u = build(op, 20, attrs, &[dynf(&[7], inp.clone())], 1).unwrap();
            let u = u.as_any().downcast_ref::<UnaryOp>().unwrap().0;
            let one: Vec<f32> = inp.iter().map(|&v| u.apply(v)).collect();
            assert_eq!(one, values(&got[0]), "{op}");
        }
    }

    #[test]
    fn exp_f32_is_close() {
        let mut x = -110.0f32;
        while x < 95.0 {
            let (got, want) = (exp_f32(x) as f64, (x as f64).exp());
            if want >= f32::MIN_POSITIVE as f64 && want <= f32::MAX as f64 {
                assert!(
                    (got - want).abs() <= 2.5e-7 * want,
                    "exp({x}) = {got}, want {want}"
                );
            } else if want < f32::MIN_POSITIVE as f64 {
                assert!((got - want).abs() <= 2e-45, "exp({x}) = {got}, want {want}");
            } else {
                assert_eq!(got, f64::INFINITY, "exp({x})");
            }
            x += 0.000_37;
        }
        assert_eq!(exp_f32(0.0), 1.0);
        assert_eq!(exp_f32(-200.0), 0.0);
        assert_eq!(exp_f32(f32::INFINITY), f32::INFINITY);
        assert_eq!(exp_f32(f32::NEG_INFINITY), 0.0);
        assert!(exp_f32(f32::NAN).is_nan());
    }

    #[test]
    fn unary_types_and_attributes() {
        let x = i64s(&[4], vec![-2, 0, 3, i64::MIN]);
        let relu = run("Relu", 14, &[], &[In::Dynamic(x.clone())]).unwrap();
        assert_eq!(ints_of(&relu[0]), vec![0, 0, 3, 0]);
        let abs = run("Abs", 13, &[], &[In::Dynamic(x.clone())]).unwrap();
        assert_eq!(ints_of(&abs[0]), vec![2, 0, 3, i64::MIN]);
        let neg = run("Neg", 13, &[], &[In::Dynamic(x.clone())]).unwrap();
        assert_eq!(ints_of(&neg[0]), vec![2, 0, -3, i64::MIN]);
        let not = run("Not", 13, &[], &[In::Dynamic(i64s(&[3], vec![0, 1, 0]))]).unwrap();
        assert_eq!(ints_of(&not[0]), vec![1, 0, 1]);
        let err = run("Sigmoid", 13, &[], &[In::Dynamic(x)]).unwrap_err();
        assert!(err.contains("Sigmoid") && err.contains("i64"), "{err}");
        assert!(run("Not", 13, &[], &[dynf(&[1], vec![0.0])]).is_err());
        let err = run(
            "Gelu",
            20,
            &[string("approximate", "fast")],
            &[dynf(&[1], vec![0.0])],
        )
        .unwrap_err();
        assert!(err.contains("approximate") && err.contains("fast"), "{err}");
        let err = run("Relu", 13, &[float("alpha", 1.0)], &[In::Absent]).unwrap_err();
        assert!(err.contains("input 0 is required"), "{err}");
        // Custom HardSigmoid, Elu and Selu parameters reach the function.
        let hs = [float("alpha", 0.5), float("beta", 0.25)];
        let got = run("HardSigmoid", 6, &hs, &[dynf(&[3], vec![-1.0, 0.5, 4.0])]).unwrap();
        assert_eq!(values(&got[0]), vec![0.0, 0.5, 1.0]);
        let got = run("Elu", 6, &[float("alpha", 2.0)], &[dynf(&[1], vec![-1.0])]).unwrap();
        assert_close(&values(&got[0]), &[2.0 * ((-1f32).exp() - 1.0)], 1e-6);
        let selu = [float("alpha", 2.0), float("gamma", 3.0)];
        let got = run("Selu", 6, &selu, &[dynf(&[2], vec![-1.0, 2.0])]).unwrap();
        assert_close(&values(&got[0]), &[6.0 * ((-1f32).exp() - 1.0), 6.0], 1e-6);
        // Extremes stay finite where they should.
        let got = run("Sigmoid", 13, &[], &[dynf(&[2], vec![-200.0, 200.0])]).unwrap();
        assert_eq!(values(&got[0]), vec![0.0, 1.0]);
        let got = run("Softplus", 13, &[], &[dynf(&[2], vec![-200.0, 200.0])]).unwrap();
        assert_eq!(values(&got[0]), vec![0.0, 200.0]);
    }

    #[test]
    fn clip_forms() {
        let x = || dynf(&[5], vec![-2.0, -0.5, 0.0, 3.0, 7.0]);
        // Opset 6: attributes.
        let got = run("Clip", 6, &[float("min", 0.0), float("max", 6.0)], &[x()]).unwrap();
        assert_eq!(values(&got[0]), vec![0.0, 0.0, 0.0, 3.0, 6.0]);
        let got = run("Clip", 6, &[float("max", 1.0)], &[x()]).unwrap();
        assert_eq!(values(&got[0]), vec![-2.0, -0.5, 0.0, 1.0, 1.0]);
        // Opset 11+: constant inputs, either absent.
        let c = |v: f32| In::Const(f32s(&[], vec![v]));
        let got = run("Clip", 13, &[], &[x(), c(-1.0), c(6.0)]).unwrap();
        assert_eq!(values(&got[0]), vec![-1.0, -0.5, 0.0, 3.0, 6.0]);
        let got = run("Clip", 11, &[], &[x(), In::Absent, c(0.0)]).unwrap();
        assert_eq!(values(&got[0]), vec![-2.0, -0.5, 0.0, 0.0, 0.0]);
        let got = run("Clip", 12, &[], &[x()]).unwrap();
        assert_eq!(values(&got[0]), vec![-2.0, -0.5, 0.0, 3.0, 7.0]);
        // Attributes are ignored from opset 11; min > max gives max.
        let got = run("Clip", 13, &[float("min", 0.0)], &[x(), c(2.0), c(1.0)]).unwrap();
        assert_eq!(values(&got[0]), vec![1.0; 5]);
        // i64, with i64 bounds.
        let xi = In::Dynamic(i64s(&[4], vec![-9, 0, 5, 100]));
        let lo = In::Const(i64s(&[], vec![-1]));
        let got = run("Clip", 13, &[], &[xi, lo, In::Const(i64s(&[1], vec![10]))]).unwrap();
        assert_eq!(ints_of(&got[0]), vec![-1, 0, 5, 10]);
        let got = run(
            "Clip",
            13,
            &[],
            &[In::Dynamic(i64s(&[2], vec![i64::MIN, i64::MAX]))],
        )
        .unwrap();
        assert_eq!(ints_of(&got[0]), vec![i64::MIN, i64::MAX]);
        // Bounds must be constant scalars.
        let err = run("Clip", 13, &[], &[x(), dynf(&[], vec![0.0])]).unwrap_err();
        assert!(err.contains("input 1") && err.contains("constant"), "{err}");
        let err = run(
            "Clip",
            13,
            &[],
            &[x(), In::Absent, In::Const(f32s(&[2], vec![1.0, 2.0]))],
        )
        .unwrap_err();
        assert!(
            err.contains("input 2 (max)") && err.contains("[2]"),
            "{err}"
        );
    }

    /// Naive numpy broadcasting: the value of `a` at each index of `dims`.
    fn naive<T: Copy, O>(a: &ArrayD<T>, b: &ArrayD<T>, f: impl Fn(T, T) -> O) -> Vec<O> {
        let dims = broadcast(a.shape(), b.shape()).unwrap();
        let at = |x: &ArrayD<T>, idx: &[usize]| {
            let pad = idx.len() - x.ndim();
            let i: Vec<usize> = (0..x.ndim())
                .map(|k| if x.shape()[k] == 1 { 0 } else { idx[k + pad] })
                .collect();
            x[IxDyn(&i)]
        };
        let n: usize = dims.iter().product();
        (0..n)
            .map(|mut flat| {
                let mut idx = vec![0; dims.len()];
                for k in (0..dims.len()).rev() {
                    idx[k] = flat % dims[k];
                    flat /= dims[k];
                }
                f(at(a, &idx), at(b, &idx))
            })
            .collect()
    }

    fn filled(dims: &[usize], seed: f32) -> ArrayD<f32> {
        let n: usize = dims.iter().product();
        let v = (0..n)
            .map(|i| ((i as f32 + seed) * 0.731).sin() * 3.0)
            .collect();
        ArrayD::from_shape_vec(IxDyn(dims), v).unwrap()
    }

    /// An operand of rank at most `out`'s whose dims are `out`'s or 1.
    fn operand(out: &[usize], rank: usize, ones: &[bool]) -> Vec<usize> {
        let rank = rank.min(out.len());
        (out.len() - rank..out.len())
            .map(|i| if ones[i] { 1 } else { out[i] })
            .collect()
    }

    const KINDS: [BinaryKind; 9] = [
        BinaryKind::Add,
        BinaryKind::Sub,
        BinaryKind::Mul,
        BinaryKind::Div,
        BinaryKind::Pow,
        BinaryKind::Max,
        BinaryKind::Min,
        BinaryKind::Less,
        BinaryKind::GreaterOrEqual,
    ];

    fn scalar_fn(k: BinaryKind) -> fn(f32, f32) -> f32 {
        match k {
            BinaryKind::Add => |x, y| x + y,
            BinaryKind::Sub => |x, y| x - y,
            BinaryKind::Mul => |x, y| x * y,
            BinaryKind::Div => |x, y| x / y,
            BinaryKind::Pow => |x, y| x.powf(y),
            BinaryKind::Max => f32::max,
            BinaryKind::Min => f32::min,
            BinaryKind::Less => |x, y| (x < y) as i64 as f32,
            _ => |x, y| (x >= y) as i64 as f32,
        }
    }

    fn same(got: &[f32], want: &[f32]) -> bool {
        got.len() == want.len()
            && got
                .iter()
                .zip(want)
                .all(|(g, w)| g == w || (g.is_nan() && w.is_nan()))
    }

    proptest! {
        #[test]
        fn broadcast_matches_naive(
            out in prop::collection::vec(0usize..4, 0..=4),
            ra in 0usize..=4, rb in 0usize..=4,
            oa in prop::collection::vec(any::<bool>(), 4),
            ob in prop::collection::vec(any::<bool>(), 4),
            k in 0usize..KINDS.len(),
        ) {
            let (da, db) = (operand(&out, ra, &oa), operand(&out, rb, &ob));
            let (a, b) = (filled(&da, 0.0), filled(&db, 5.0));
            let kind = KINDS[k];
            let want = naive(&a, &b, scalar_fn(kind));
            let got = binary_f32(kind, &a, &b).unwrap();
            prop_assert_eq!(got.shape(), &broadcast(&da, &db).unwrap()[..]);
            prop_assert!(same(got.as_slice().unwrap(), &want), "{:?} {:?} {:?}", kind, da, db);
            // In place, when b broadcasts to a.
            if broadcast(&da, &db).unwrap() == da {
                let mut a2 = a.clone();
                binary_f32_in_place(kind, &mut a2, &b).unwrap();
                prop_assert!(same(a2.as_slice().unwrap(), &want));
            } else {
                prop_assert!(binary_f32_in_place(kind, &mut a.clone(), &b).is_err());
            }
            // i64 through the op, against the same reference.
            let (ai, bi) = (a.mapv(|v| v as i64), b.mapv(|v| v as i64 + 1));
            let want: Vec<i64> = naive(&ai, &bi, |x, y| x.wrapping_sub(y) * 2);
            let sub = binary_data(BinaryKind::Sub, &Data::I64(ai), &Data::I64(bi)).unwrap();
            let got: Vec<i64> = sub.i64().unwrap().iter().map(|v| v * 2).collect();
            prop_assert_eq!(got, want);
        }
    }

    #[test]
    fn fast_paths() {
        // Every fast-path shape against the naive reference, both operand
        // orders, through the op and in place; also a non-standard layout.
        let x = filled(&[2, 3, 4, 5], 1.0);
        for small in [
            vec![1, 3, 1, 1],
            vec![3, 1, 1],
            vec![2, 3, 1, 1],
            vec![],
            vec![1],
            vec![5],
            vec![4, 5],
            vec![2, 3, 4, 5],
            vec![1, 3, 4, 1],
        ] {
            let s = filled(&small, 7.0);
            for kind in [BinaryKind::Sub, BinaryKind::Div, BinaryKind::Mul] {
                let f = scalar_fn(kind);
                let got = binary_f32(kind, &x, &s).unwrap();
                assert!(
                    same(got.as_slice().unwrap(), &naive(&x, &s, f)),
                    "{small:?}"
                );
                let got = binary_f32(kind, &s, &x).unwrap();
                assert!(
                    same(got.as_slice().unwrap(), &naive(&s, &x, f)),
                    "{small:?}"
                );
                let mut y = x.clone();
                binary_f32_in_place(kind, &mut y, &s).unwrap();
                assert!(same(y.as_slice().unwrap(), &naive(&x, &s, f)), "{small:?}");
            }
        }
        let t = filled(&[5, 4], 0.0).reversed_axes().into_dyn();
        let got = binary_f32(BinaryKind::Add, &t, &filled(&[4, 1], 0.0)).unwrap();
        assert!(same(
            got.as_slice().unwrap(),
            &naive(&t, &filled(&[4, 1], 0.0), |a, b| a + b)
        ));
        let mut u = t.clone();
        binary_f32_in_place(BinaryKind::Mul, &mut u, &filled(&[5], 2.0)).unwrap();
        assert!(same(
            u.as_slice().unwrap(),
            &naive(&t, &filled(&[5], 2.0), |a, b| a * b)
        ));
        // Pow by a scalar 2 is the square, also for negative bases.
        let sq = binary_f32(
            BinaryKind::Pow,
            &filled(&[3], 0.0),
            &ArrayD::from_elem(IxDyn(&[]), 2.0),
        )
        .unwrap();
        let base = filled(&[3], 0.0);
        assert_eq!(
            sq.as_slice().unwrap(),
            &naive(&base, &ArrayD::from_elem(IxDyn(&[]), 2.0), |a, _| a * a)[..]
        );
    }

    #[test]
    fn binary_ops_and_types() {
        let a = || In::Dynamic(i64s(&[4], vec![-7, 7, 9, i64::MIN]));
        let b = || In::Dynamic(i64s(&[4], vec![2, -2, 3, -1]));
        let got = run("Div", 13, &[], &[a(), b()]).unwrap();
        assert_eq!(ints_of(&got[0]), vec![-3, -3, 3, i64::MIN]);
        let got = run("Add", 13, &[], &[a(), In::Const(i64s(&[], vec![-1]))]).unwrap();
        assert_eq!(ints_of(&got[0]), vec![-8, 6, 8, i64::MAX]);
        let got = run(
            "Pow",
            13,
            &[],
            &[
                In::Dynamic(i64s(&[3], vec![2, -3, 5])),
                In::Dynamic(i64s(&[3], vec![10, 3, -1])),
            ],
        )
        .unwrap();
        assert_eq!(ints_of(&got[0]), vec![1024, -27, 0]);
        let err = run("Div", 13, &[], &[a(), In::Dynamic(i64s(&[1], vec![0]))]).unwrap_err();
        assert!(err.contains("division by zero"), "{err}");
        // Float division by zero is IEEE.
        let got = run(
            "Div",
            13,
            &[],
            &[dynf(&[2], vec![1.0, -1.0]), dynf(&[], vec![0.0])],
        )
        .unwrap();
        assert_eq!(values(&got[0]), vec![f32::INFINITY, f32::NEG_INFINITY]);
        // Mixed types: refused, except Pow's exponent.
        let err = run("Mul", 13, &[], &[dynf(&[1], vec![1.0]), b()]).unwrap_err();
        assert!(err.contains("different types"), "{err}");
        let got = run(
            "Pow",
            15,
            &[],
            &[dynf(&[2], vec![3.0, 4.0]), In::Dynamic(i64s(&[1], vec![2]))],
        )
        .unwrap();
        assert_eq!(values(&got[0]), vec![9.0, 16.0]);
        let got = run("Pow", 15, &[], &[b(), dynf(&[], vec![0.5])]).unwrap();
        assert_eq!(got[0].dtype(), DType::I64);
        assert_eq!(ints_of(&got[0])[2], 1); // sqrt(3) truncated
        // Comparisons give bools (i64), for both types.
        let x = || dynf(&[2, 2], vec![1.0, 2.0, 3.0, f32::NAN]);
        let y = || dynf(&[2], vec![2.0, 2.0]);
        for (op, want) in [
            ("Equal", [0, 1, 0, 0]),
            ("Less", [1, 0, 0, 0]),
            ("Greater", [0, 0, 1, 0]),
            ("LessOrEqual", [1, 1, 0, 0]),
            ("GreaterOrEqual", [0, 1, 1, 0]),
        ] {
            let got = run(op, 16, &[], &[x(), y()]).unwrap();
            assert_eq!(ints_of(&got[0]), want, "{op}");
        }
        let got = run("Less", 13, &[], &[a(), b()]).unwrap();
        assert_eq!(ints_of(&got[0]), vec![1, 0, 0, 1]);
        let p = || In::Dynamic(i64s(&[4], vec![0, 0, 1, 1]));
        let q = || In::Dynamic(i64s(&[4], vec![0, 1, 0, 1]));
        assert_eq!(
            ints_of(&run("And", 7, &[], &[p(), q()]).unwrap()[0]),
            vec![0, 0, 0, 1]
        );
        assert_eq!(
            ints_of(&run("Or", 7, &[], &[p(), q()]).unwrap()[0]),
            vec![0, 1, 1, 1]
        );
        let err = run("And", 7, &[], &[x(), y()]).unwrap_err();
        assert!(err.contains("bool"), "{err}");
        let err = run(
            "Add",
            13,
            &[],
            &[dynf(&[2, 3], vec![0.0; 6]), dynf(&[2], vec![0.0; 2])],
        )
        .unwrap_err();
        assert!(err.contains("do not broadcast"), "{err}");
        let err = run("Add", 13, &[], &[dynf(&[2], vec![0.0; 2])]).unwrap_err();
        assert!(err.contains("input 1 is required"), "{err}");
        // Huge broadcasts are refused before allocating.
        let big = |d: &[usize]| In::Dynamic(Data::F32(ArrayD::zeros(IxDyn(d))));
        let err = build("Add", 13, &[], &[big(&[1 << 15, 1]), big(&[1, 1 << 15])], 1)
            .unwrap()
            .infer(&[
                Some(&Fact::f32(vec![1 << 15, 1])),
                Some(&Fact::f32(vec![1, 1 << 15])),
            ])
            .unwrap_err();
        assert!(err.contains("more than"), "{err}");
    }

    #[test]
    fn variadic_ops() {
        let a = || dynf(&[2, 1], vec![1.0, -4.0]);
        let b = || dynf(&[3], vec![0.5, 2.0, -1.0]);
        let c = || dynf(&[], vec![10.0]);
        let got = run("Sum", 13, &[], &[a(), b(), c()]).unwrap();
        assert_eq!(got[0].dims(), &[2, 3]);
        assert_eq!(values(&got[0]), vec![11.5, 13.0, 10.0, 6.5, 8.0, 5.0]);
        let got = run("Max", 13, &[], &[a(), b()]).unwrap();
        assert_eq!(values(&got[0]), vec![1.0, 2.0, 1.0, 0.5, 2.0, -1.0]);
        let got = run("Min", 13, &[], &[c(), a(), b()]).unwrap();
        assert_eq!(values(&got[0]), vec![0.5, 1.0, -1.0, -4.0, -4.0, -4.0]);
        let got = run("Mean", 13, &[], &[a(), b()]).unwrap();
        assert_eq!(values(&got[0]), vec![0.75, 1.5, 0.0, -1.75, -1.0, -2.5]);
        let got = run("Sum", 13, &[], &[a()]).unwrap();
        assert_eq!(values(&got[0]), vec![1.0, -4.0]);
        let got = run(
            "Max",
            13,
            &[],
            &[
                dynf(&[2], vec![f32::NAN, 1.0]),
                dynf(&[2], vec![0.0, f32::NAN]),
            ],
        )
        .unwrap();
        assert!(values(&got[0]).iter().all(|v| v.is_nan()));
        let i = |v: Vec<i64>| In::Dynamic(i64s(&[v.len()], v));
        let got = run(
            "Max",
            13,
            &[],
            &[i(vec![1, 5]), i(vec![3, 2]), i(vec![0, 9])],
        )
        .unwrap();
        assert_eq!(ints_of(&got[0]), vec![3, 9]);
        let err = run("Mean", 13, &[], &[i(vec![1]), i(vec![2])]).unwrap_err();
        assert!(err.contains("float"), "{err}");
        let err = run("Sum", 13, &[], &[a(), i(vec![1])]).unwrap_err();
        assert!(
            err.contains("input 1") && err.contains("different types"),
            "{err}"
        );
        assert!(
            run("Sum", 13, &[], &[])
                .unwrap_err()
                .contains("at least one")
        );
        assert!(run_n("Sum", 13, &[], &[a(), In::Absent], 1).is_err());
    }

    #[test]
    fn prelu_slopes() {
        // numpy-style [C,1,1] and caffe2-style [C] against NCHW (W != C).
        let x: Vec<f32> = (0..12).map(|i| i as f32 - 6.0).collect();
        let want: Vec<f32> = x
            .iter()
            .enumerate()
            .map(|(i, &v)| {
                if v < 0.0 {
                    v * [0.1, 0.2, 0.3][i / 4]
                } else {
                    v
                }
            })
            .collect();
        let s = vec![0.1, 0.2, 0.3];
        for sd in [vec![3, 1, 1], vec![3]] {
            let got = run(
                "PRelu",
                9,
                &[],
                &[
                    dynf(&[1, 3, 2, 2], x.clone()),
                    In::Const(f32s(&sd, s.clone())),
                ],
            )
            .unwrap();
            assert_close(&values(&got[0]), &want, 1e-7);
        }
        // A slope over the last axis broadcasts numpy-style.
        let got = run(
            "PRelu",
            16,
            &[],
            &[
                dynf(&[2, 2], vec![-1.0, -1.0, 1.0, -2.0]),
                dynf(&[2], vec![0.5, 3.0]),
            ],
        )
        .unwrap();
        assert_eq!(values(&got[0]), vec![-0.5, -3.0, 1.0, -6.0]);
        let err = run(
            "PRelu",
            16,
            &[],
            &[dynf(&[1, 3, 2, 2], x), dynf(&[4], vec![0.0; 4])],
        )
        .unwrap_err();
        assert!(err.contains("slope of shape [4]"), "{err}");
    }

    #[test]
    fn where_selects() {
        let c = In::Dynamic(i64s(&[2, 1], vec![1, 0]));
        let got = run(
            "Where",
            16,
            &[],
            &[c, dynf(&[3], vec![1.0, 2.0, 3.0]), dynf(&[], vec![-1.0])],
        )
        .unwrap();
        assert_eq!(got[0].dims(), &[2, 3]);
        assert_eq!(values(&got[0]), vec![1.0, 2.0, 3.0, -1.0, -1.0, -1.0]);
        let c = In::Const(i64s(&[3], vec![0, 1, 1]));
        let got = run(
            "Where",
            9,
            &[],
            &[
                c,
                In::Const(i64s(&[3], vec![4, 5, 6])),
                In::Const(i64s(&[1], vec![0])),
            ],
        )
        .unwrap();
        assert_eq!(ints_of(&got[0]), vec![0, 5, 6]);
        let err = run(
            "Where",
            9,
            &[],
            &[
                dynf(&[1], vec![1.0]),
                dynf(&[1], vec![1.0]),
                dynf(&[1], vec![1.0]),
            ],
        )
        .unwrap_err();
        assert!(err.contains("condition"), "{err}");
        let c = || In::Dynamic(i64s(&[1], vec![1]));
        let err = run(
            "Where",
            9,
            &[],
            &[c(), dynf(&[1], vec![1.0]), In::Dynamic(i64s(&[1], vec![1]))],
        )
        .unwrap_err();
        assert!(err.contains("different types"), "{err}");
    }
}
