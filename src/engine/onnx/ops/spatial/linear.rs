//! Gemm and MatMul over sgemm.

use std::any::Any;

use super::super::super::data::{Data, Fact, checked_len, fmt_dims};
use super::super::util::{broadcast, like};
use super::super::{Ctx, Op};
use super::{float_data, float_fact, opt_float_data, opt_float_fact, output, sgemm, slice};

/// `Y = alpha · op(A) · op(B) + beta · C` (ONNX `Gemm`), `op` transposing
/// when asked; C, optional, broadcasts to `[M, N]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Gemm {
    /// Scale of the product.
    pub alpha: f32,
    /// Scale of C.
    pub beta: f32,
    /// A is given as `[K, M]`.
    pub trans_a: bool,
    /// B is given as `[N, K]`.
    pub trans_b: bool,
}

impl Gemm {
    /// `(M, K, N)` for A, B and C of these dims.
    fn mkn(
        &self,
        a: &[usize],
        b: &[usize],
        c: Option<&[usize]>,
    ) -> Result<(usize, usize, usize), String> {
        for (name, d) in [("A", a), ("B", b)] {
            if d.len() != 2 {
                return Err(format!("input {name} must be 2-D, got {}", fmt_dims(d)));
            }
        }
        let (m, k) = if self.trans_a {
            (a[1], a[0])
        } else {
            (a[0], a[1])
        };
        let (k2, n) = if self.trans_b {
            (b[1], b[0])
        } else {
            (b[0], b[1])
        };
        if k != k2 {
            return Err(format!(
                "A {} (transA={}) and B {} (transB={}) do not agree on K: {k} and {k2}",
                fmt_dims(a),
                self.trans_a as u8,
                fmt_dims(b),
                self.trans_b as u8
            ));
        }
        if let Some(c) = c
            && (c.len() > 2 || broadcast(c, &[m, n]).ok().as_deref() != Some(&[m, n][..]))
        {
            return Err(format!(
                "C {} does not broadcast to [{m}, {n}]",
                fmt_dims(c)
            ));
        }
        checked_len(&[m, n])?;
        Ok((m, k, n))
    }
}

impl Op for Gemm {
    fn infer(&self, inputs: &[Option<&Fact>]) -> Result<Vec<Fact>, String> {
        let a = float_fact(inputs, 0, "A")?;
        let b = float_fact(inputs, 1, "B")?;
        let c = opt_float_fact(inputs, 2, "C")?;
        let (m, _, n) = self.mkn(&a.dims, &b.dims, c.map(|c| &c.dims[..]))?;
        Ok(vec![like(a, vec![m, n])?])
    }

    fn eval(&self, inputs: &[Option<&Data>]) -> Result<Vec<Data>, String> {
        let (a, b) = (float_data(inputs, 0)?, float_data(inputs, 1)?);
        let c = opt_float_data(inputs, 2)?;
        let (m, k, n) = self.mkn(a.shape(), b.shape(), c.map(|c| c.shape()))?;
        let mut y = vec![0.0; m * n];
        let mut beta = 0.0;
        if let Some(c) = c
            && self.beta != 0.0
            && n > 0
        {
            // C as [cm, cn], each 1 or the full size.
            let (cm, cn) = match c.shape() {
                [] => (1, 1),
                &[cn] => (1, cn),
                &[cm, cn] => (cm, cn),
                d => return Err(format!("C {} has rank > 2", fmt_dims(d))),
            };
            let cs = slice(c);
            for (i, row) in y.chunks_exact_mut(n).enumerate() {
                let src = &cs[if cm == 1 { 0 } else { i * cn }..][..cn];
                if cn == 1 {
                    row.fill(src[0]);
                } else {
                    row.copy_from_slice(src);
                }
            }
            beta = self.beta;
        }
        let sa = if self.trans_a { (1, m) } else { (k, 1) };
        let sb = if self.trans_b { (1, k) } else { (n, 1) };
        sgemm(
            (m, k, n),
            self.alpha,
            &slice(a),
            sa,
            &slice(b),
            sb,
            beta,
            &mut y,
            n,
        );
        Ok(vec![output(&[m, n], y)?])
    }

    fn flops(&self, inputs: &[Option<&Fact>], outputs: &[Fact]) -> u64 {
        let (Some(a), Some(y)) = (inputs.first().copied().flatten(), outputs.first()) else {
            return 0;
        };
        let k = a.dims.get(usize::from(!self.trans_a)).copied().unwrap_or(0) as u64;
        let c = inputs.get(2).copied().flatten().is_some();
        2 * y.len() as u64 * k + if c { y.len() as u64 } else { 0 }
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// Matrix product with numpy semantics (ONNX `MatMul`): 1-D operands
/// promoted and their axis dropped again, leading axes broadcast.
#[derive(Clone, Debug, PartialEq)]
pub struct MatMul;

/// A MatMul's sizes.
struct Plan {
    m: usize,
    k: usize,
    n: usize,
    /// Broadcast batch dims, and A's and B's batch dims padded to their rank.
    batch: Vec<usize>,
    a_batch: Vec<usize>,
    b_batch: Vec<usize>,
    out: Vec<usize>,
}

impl MatMul {
    fn plan(a: &[usize], b: &[usize]) -> Result<Plan, String> {
        if a.is_empty() || b.is_empty() {
            return Err(format!(
                "inputs must have rank 1 or more, got {} and {}",
                fmt_dims(a),
                fmt_dims(b)
            ));
        }
        let a2 = if a.len() == 1 {
            vec![1, a[0]]
        } else {
            a.to_vec()
        };
        let b2 = if b.len() == 1 {
            vec![b[0], 1]
        } else {
            b.to_vec()
        };
        let (ra, rb) = (a2.len(), b2.len());
        let (m, k, k2, n) = (a2[ra - 2], a2[ra - 1], b2[rb - 2], b2[rb - 1]);
        if k != k2 {
            return Err(format!(
                "A {} and B {} do not agree on K: {k} and {k2}",
                fmt_dims(a),
                fmt_dims(b)
            ));
        }
        let batch = broadcast(&a2[..ra - 2], &b2[..rb - 2])?;
        let pad = |d: &[usize]| {
            let mut v = vec![1; batch.len() - d.len()];
            v.extend_from_slice(d);
            v
        };
        let mut out = batch.clone();
        if a.len() > 1 {
            out.push(m);
        }
        if b.len() > 1 {
            out.push(n);
        }
        checked_len(&out)?;
        Ok(Plan {
            m,
            k,
            n,
            a_batch: pad(&a2[..ra - 2]),
            b_batch: pad(&b2[..rb - 2]),
            batch,
            out,
        })
    }
}

impl Op for MatMul {
    fn infer(&self, inputs: &[Option<&Fact>]) -> Result<Vec<Fact>, String> {
        let a = float_fact(inputs, 0, "A")?;
        let b = float_fact(inputs, 1, "B")?;
        Ok(vec![like(a, Self::plan(&a.dims, &b.dims)?.out)?])
    }

    fn eval(&self, inputs: &[Option<&Data>]) -> Result<Vec<Data>, String> {
        let (a, b) = (float_data(inputs, 0)?, float_data(inputs, 1)?);
        let p = Self::plan(a.shape(), b.shape())?;
        let (a, b) = (slice(a), slice(b));
        let (m, k, n) = (p.m, p.k, p.n);
        let nb: usize = p.batch.iter().product();
        let mut y = vec![0.0; nb * m * n];
        if p.b_batch.iter().all(|&d| d == 1) {
            // One B for every batch: A's batches stack into one tall matrix.
            let rows = p.a_batch.iter().product::<usize>() * m;
            sgemm((rows, k, n), 1.0, &a, (k, 1), &b, (n, 1), 0.0, &mut y, n);
        } else {
            for (bi, yb) in y.chunks_mut((m * n).max(1)).enumerate() {
                let (mut rem, mut ai, mut bj) = (bi, 0, 0);
                let (mut sa, mut sb) = (1, 1);
                for ax in (0..p.batch.len()).rev() {
                    let i = rem % p.batch[ax];
                    rem /= p.batch[ax];
                    if p.a_batch[ax] != 1 {
                        ai += i * sa;
                    }
                    if p.b_batch[ax] != 1 {
                        bj += i * sb;
                    }
                    sa *= p.a_batch[ax];
                    sb *= p.b_batch[ax];
                }
                let (ab, bb) = (&a[ai * m * k..][..m * k], &b[bj * k * n..][..k * n]);
                sgemm((m, k, n), 1.0, ab, (k, 1), bb, (n, 1), 0.0, yb, n);
            }
        }
        Ok(vec![output(&p.out, y)?])
    }

    fn flops(&self, inputs: &[Option<&Fact>], outputs: &[Fact]) -> u64 {
        let (Some(a), Some(y)) = (inputs.first().copied().flatten(), outputs.first()) else {
            return 0;
        };
        2 * y.len() as u64 * a.dims.last().copied().unwrap_or(0) as u64
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// Builds `Gemm` (C required before opset 11).
pub(super) fn build_gemm(ctx: &Ctx) -> Result<Box<dyn Op>, String> {
    if ctx.opset < 11 && ctx.input(2).is_none() {
        return Err(format!(
            "input C is required before opset 11 (the model's is {})",
            ctx.opset
        ));
    }
    let flag = |name: &str| -> Result<bool, String> { Ok(ctx.attrs.int_or(name, 0)? != 0) };
    let op = Gemm {
        alpha: ctx.attrs.float_or("alpha", 1.0)?,
        beta: ctx.attrs.float_or("beta", 1.0)?,
        trans_a: flag("transA")?,
        trans_b: flag("transB")?,
    };
    op.infer(ctx.inputs)?;
    Ok(Box::new(op))
}

/// Builds `MatMul`.
pub(super) fn build_matmul(ctx: &Ctx) -> Result<Box<dyn Op>, String> {
    MatMul.infer(ctx.inputs)?;
    Ok(Box::new(MatMul))
}

#[cfg(test)]
mod tests {
    use ndarray::{ArrayD, IxDyn};
    use proptest::prelude::*;

    use super::super::super::testing::{
        In, assert_close, build, f32s, float, i64s, int, run, values,
    };
    use super::super::tests::rand;
    use super::*;

    /// Naive `[m, k] · [k, n]`.
    fn mm(a: &[f32], b: &[f32], (m, k, n): (usize, usize, usize)) -> Vec<f32> {
        let mut y = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                y[i * n + j] = (0..k).map(|t| a[i * k + t] * b[t * n + j]).sum();
            }
        }
        y
    }

    fn transpose(a: &[f32], rows: usize, cols: usize) -> Vec<f32> {
        (0..cols * rows)
            .map(|i| a[(i % rows) * cols + i / rows])
            .collect()
    }

    #[test]
    fn gemm_transposes_and_scales() {
        let (m, k, n) = (3, 4, 5);
        let a = rand(m * k, 1);
        let b = rand(k * n, 2);
        let c = rand(n, 3);
        let prod = mm(&a, &b, (m, k, n));
        for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
            let ad = if ta {
                f32s(&[k, m], transpose(&a, m, k))
            } else {
                f32s(&[m, k], a.clone())
            };
            let bd = if tb {
                f32s(&[n, k], transpose(&b, k, n))
            } else {
                f32s(&[k, n], b.clone())
            };
            let at = [
                int("transA", ta as i64),
                int("transB", tb as i64),
                float("alpha", 0.5),
                float("beta", -2.0),
            ];
            let ins = [
                In::Dynamic(ad),
                In::Const(bd),
                In::Const(f32s(&[n], c.clone())),
            ];
            let got = run("Gemm", 13, &at, &ins).unwrap();
            let want: Vec<f32> = prod
                .iter()
                .enumerate()
                .map(|(i, p)| 0.5 * p - 2.0 * c[i % n])
                .collect();
            assert_eq!(got[0].dims(), [m, n]);
            assert_close(&values(&got[0]), &want, 1e-5);
        }
        // C as a column [M, 1] and a scalar; C absent from opset 11.
        let ins = |c: Data| {
            [
                In::Dynamic(f32s(&[m, k], a.clone())),
                In::Const(f32s(&[k, n], b.clone())),
                In::Const(c),
            ]
        };
        let got = run("Gemm", 9, &[], &ins(f32s(&[m, 1], vec![1.0, 2.0, 3.0]))).unwrap();
        let want: Vec<f32> = prod
            .iter()
            .enumerate()
            .map(|(i, p)| p + (i / n + 1) as f32)
            .collect();
        assert_close(&values(&got[0]), &want, 1e-5);
        let got = run("Gemm", 9, &[], &ins(f32s(&[], vec![7.0]))).unwrap();
        assert_close(
            &values(&got[0]),
            &prod.iter().map(|p| p + 7.0).collect::<Vec<_>>(),
            1e-5,
        );
        let two = [
            In::Dynamic(f32s(&[m, k], a.clone())),
            In::Const(f32s(&[k, n], b.clone())),
        ];
        assert_close(
            &values(&run("Gemm", 11, &[], &two).unwrap()[0]),
            &prod,
            1e-5,
        );
        // beta = 0 ignores C, NaNs included.
        let got = run(
            "Gemm",
            11,
            &[float("beta", 0.0)],
            &ins(f32s(&[n], vec![f32::NAN; n])),
        )
        .unwrap();
        assert_close(&values(&got[0]), &prod, 1e-5);
    }

    #[test]
    fn gemm_errors_and_flops() {
        let err = |at: &[_], a: &[usize], b: &[usize], c: Option<&[usize]>, opset| {
            let mut ins = vec![
                In::Dynamic(f32s(a, vec![0.0; a.iter().product()])),
                In::Const(f32s(b, vec![0.0; b.iter().product()])),
            ];
            if let Some(c) = c {
                ins.push(In::Const(f32s(c, vec![0.0; c.iter().product()])));
            }
            run("Gemm", opset, at, &ins).unwrap_err()
        };
        assert!(err(&[], &[2, 3], &[3, 4], None, 9).contains("C is required before opset 11"));
        assert!(err(&[], &[2, 3], &[4, 3], None, 13).contains("do not agree on K: 3 and 4"));
        assert!(err(&[int("transB", 1)], &[2, 3], &[3, 4], None, 13).contains("K: 3 and 4"));
        assert!(err(&[], &[2, 3, 1], &[3, 4], None, 13).contains("A must be 2-D"));
        assert!(
            err(&[], &[2, 3], &[3, 4], Some(&[2, 2]), 13)
                .contains("C [2, 2] does not broadcast to [2, 4]")
        );
        assert!(err(&[], &[2, 3], &[3, 4], Some(&[1, 2, 4]), 13).contains("does not broadcast"));
        let ins = [
            In::Dynamic(f32s(&[2, 3], vec![0.0; 6])),
            In::Const(f32s(&[4, 3], vec![0.0; 12])),
            In::Const(f32s(&[4], vec![0.0; 4])),
        ];
        let op = build("Gemm", 13, &[int("transB", 1)], &ins, 1).unwrap();
        let facts = [
            Fact::f32(vec![2, 3]),
            Fact::f32(vec![4, 3]),
            Fact::f32(vec![4]),
        ];
        let refs: Vec<Option<&Fact>> = facts.iter().map(Some).collect();
        let out = op.infer(&refs).unwrap();
        assert_eq!(op.flops(&refs, &out), 2 * 2 * 3 * 4 + 8);
        assert!(op.as_any().downcast_ref::<Gemm>().unwrap().trans_b);
    }

    /// numpy matmul, naively: batch dims broadcast, 1-D promoted.
    fn naive_matmul(a: &ArrayD<f32>, b: &ArrayD<f32>) -> (Vec<usize>, Vec<f32>) {
        let a2 = if a.ndim() == 1 {
            a.clone().insert_axis(ndarray::Axis(0))
        } else {
            a.clone()
        };
        let b2 = if b.ndim() == 1 {
            b.clone().insert_axis(ndarray::Axis(1))
        } else {
            b.clone()
        };
        let (ra, rb) = (a2.ndim(), b2.ndim());
        let batch = broadcast(&a2.shape()[..ra - 2], &b2.shape()[..rb - 2]).unwrap();
        let (m, k, n) = (a2.shape()[ra - 2], a2.shape()[ra - 1], b2.shape()[rb - 1]);
        let mut full = batch.clone();
        full.extend([m, n]);
        let mut ash = batch.clone();
        ash.extend([m, k]);
        let mut bsh = batch.clone();
        bsh.extend([k, n]);
        let (ab, bb) = (
            a2.broadcast(IxDyn(&ash)).unwrap(),
            b2.broadcast(IxDyn(&bsh)).unwrap(),
        );
        let y = ArrayD::from_shape_fn(IxDyn(&full), |i| {
            let r = full.len();
            (0..k)
                .map(|t| {
                    let mut ai = i.clone();
                    ai[r - 1] = t;
                    let mut bi = i.clone();
                    bi[r - 2] = t;
                    ab[&ai] * bb[&bi]
                })
                .sum()
        });
        let mut out = batch;
        if a.ndim() > 1 {
            out.push(m);
        }
        if b.ndim() > 1 {
            out.push(n);
        }
        (out, y.iter().copied().collect())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        #[test]
        fn matmul_matches_naive(
            a_batch in proptest::collection::vec(prop_oneof![Just(1usize), Just(2), Just(3)], 0..=2),
            b_batch in proptest::collection::vec(prop_oneof![Just(1usize), Just(2), Just(3)], 0..=2),
            m in 1usize..=4, k in 0usize..=4, n in 1usize..=4,
            a_vec in any::<bool>(), b_vec in any::<bool>(), seed in any::<u64>(),
        ) {
            // Broadcastable batches: where both have an axis, make them agree or one 1.
            let mut b_batch = b_batch;
            let r = a_batch.len().min(b_batch.len());
            for i in 0..r {
                let (ai, bi) = (a_batch.len() - 1 - i, b_batch.len() - 1 - i);
                if a_batch[ai] != b_batch[bi] && a_batch[ai] != 1 {
                    b_batch[bi] = 1;
                }
            }
            let mut ad = if a_vec { vec![] } else { a_batch.clone() };
            ad.extend(if a_vec { vec![k] } else { vec![m, k] });
            let mut bd = if b_vec { vec![] } else { b_batch.clone() };
            bd.extend(if b_vec { vec![k] } else { vec![k, n] });
            let a = ArrayD::from_shape_vec(IxDyn(&ad), rand(ad.iter().product(), seed)).unwrap();
            let b = ArrayD::from_shape_vec(IxDyn(&bd), rand(bd.iter().product(), seed ^ 5)).unwrap();
            let got = run("MatMul", 13, &[], &[In::Dynamic(Data::F32(a.clone())), In::Const(Data::F32(b.clone()))]).unwrap();
            let (dims, want) = naive_matmul(&a, &b);
            prop_assert_eq!(got[0].dims(), &dims[..]);
            assert_close(&values(&got[0]), &want, 1e-5);
        }
    }

    #[test]
    fn matmul_shapes_and_errors() {
        let mk = |d: &[usize]| In::Dynamic(f32s(d, rand(d.iter().product(), 3)));
        let dims = |a: &[usize], b: &[usize]| {
            run("MatMul", 13, &[], &[mk(a), mk(b)]).map(|o| o[0].dims().to_vec())
        };
        assert_eq!(dims(&[2, 1, 3, 4], &[5, 4, 2]).unwrap(), [2, 5, 3, 2]);
        assert_eq!(dims(&[4], &[4]).unwrap(), Vec::<usize>::new());
        assert_eq!(dims(&[4], &[3, 4, 2]).unwrap(), [3, 2]);
        assert_eq!(dims(&[3, 2, 4], &[4]).unwrap(), [3, 2]);
        assert!(
            dims(&[2, 3], &[4, 2])
                .unwrap_err()
                .contains("do not agree on K: 3 and 4")
        );
        assert!(
            dims(&[2, 2, 3], &[3, 3, 2])
                .unwrap_err()
                .contains("do not broadcast")
        );
        assert!(dims(&[], &[3]).unwrap_err().contains("rank 1 or more"));
        let ints = [In::Dynamic(i64s(&[2, 2], vec![1; 4])), mk(&[2, 2])];
        assert!(
            run("MatMul", 13, &[], &ints)
                .unwrap_err()
                .contains("A must be a float tensor")
        );
        // Batch broadcast by value: B's two matrices against A's one.
        let a = f32s(&[1, 2], vec![1.0, 2.0]);
        let b = f32s(&[2, 2, 1], vec![1.0, 1.0, 10.0, -1.0]);
        let got = run("MatMul", 13, &[], &[In::Dynamic(a), In::Const(b)]).unwrap();
        assert_eq!(
            (got[0].dims(), values(&got[0])),
            (&[2, 1, 1][..], vec![3.0, 8.0])
        );
        let facts = [Fact::f32(vec![2, 3, 4]), Fact::f32(vec![4, 5])];
        let refs: Vec<Option<&Fact>> = facts.iter().map(Some).collect();
        let op = build("MatMul", 13, &[], &[mk(&[2, 3, 4]), mk(&[4, 5])], 1).unwrap();
        let out = op.infer(&refs).unwrap();
        assert_eq!(op.flops(&refs, &out), 2 * 2 * 3 * 5 * 4);
    }
}
