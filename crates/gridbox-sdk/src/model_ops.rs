//! The ops language models need beyond the basics (spec/abi.md): SiLU, rotary position
//! embedding, causal attention, half-precision weights and their conversion, argmax. They are
//! newer than the first release, so a job's manifest names them in `[tensor] ops`
//! (`gridbox run --capability tensor` adds the ones a module imports).

use crate::{DType, Error, Result, Tensor, check_len, shape_u32, sys};

impl Tensor {
    /// SiLU (swish), `x * sigmoid(x)`: the gate of a SwiGLU MLP.
    ///
    /// # Errors
    ///
    /// As [`Tensor::neg`].
    ///
    /// ```no_run
    /// use gridbox_sdk::Tensor;
    ///
    /// let x = Tensor::from_slice(&[0.0, f32::NEG_INFINITY], &[2])?;
    /// assert_eq!(x.silu()?.to_vec()?, [0.0, -0.0]);
    /// # Ok::<(), gridbox_sdk::Error>(())
    /// ```
    pub fn silu(&self) -> Result<Tensor> {
        call_op!(Silu, &[self], &[])
    }

    /// The index of the largest element over the last axis, as an `i32` tensor of the other
    /// dims (`[..., D]` gives `[...]`): greedy decoding's next token. Ties go to the lowest
    /// index; NaN counts as larger than every number, so the first NaN wins.
    ///
    /// # Errors
    ///
    /// [`Error::ShapeMismatch`] for a scalar or an empty last
    /// axis (or one longer than 2^31); otherwise as [`Tensor::neg`].
    ///
    /// ```no_run
    /// use gridbox_sdk::Tensor;
    ///
    /// let logits = Tensor::from_slice(&[0.5, 2.0, 2.0, -1.0, 3.0, 0.0], &[2, 3])?;
    /// assert_eq!(logits.argmax()?.to_vec_i32()?, [1, 1]);
    /// # Ok::<(), gridbox_sdk::Error>(())
    /// ```
    pub fn argmax(&self) -> Result<Tensor> {
        call_op!(Argmax, &[self], &[])
    }

    /// Rotary position embedding (Llama's "rotate half" layout) of this `[..., T, D]` tensor:
    /// row `t` of the `T` axis is at position `offset + t`, and each pair `(i, i + D/2)` of its
    /// last axis turns by the angle `position * theta^(-2i/D)`:
    /// `(x_i cos - x_(i+D/2) sin, x_(i+D/2) cos + x_i sin)`. With a KV cache, `offset` is the
    /// number of tokens already cached.
    ///
    /// # Errors
    ///
    /// [`Error::ShapeMismatch`] for a rank below 2 or an odd `D`;
    /// [`Error::InvalidParameter`] for a `theta` that is not
    /// finite and positive or positions past 2^24; otherwise as [`Tensor::neg`].
    ///
    /// ```no_run
    /// use gridbox_sdk::Tensor;
    ///
    /// // One head, two positions, D = 4.
    /// let q = Tensor::from_slice(&[1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0], &[1, 2, 4])?;
    /// let rotated = q.rope(0, 10_000.0)?;
    /// // Position 0 does not turn; position 1 turns pair 0 by 1 radian.
    /// assert_eq!(rotated.to_vec()?[..4], [1.0, 0.0, 0.0, 0.0]);
    /// # Ok::<(), gridbox_sdk::Error>(())
    /// ```
    pub fn rope(&self, offset: usize, theta: f32) -> Result<Tensor> {
        let offset = i64::try_from(offset).unwrap_or(i64::MAX);
        call_op!(Rope, &[self], &[offset, theta.to_bits() as i64])
    }

    /// Causal attention of this query `[Hq, T, D]` over keys `k` and values `v` (`[Hkv, S, D]`,
    /// grouped-query heads: query head `h` uses key/value head `h / (Hq / Hkv)`): query row `t`
    /// sits at position `offset + t` and sees the keys `0..=offset + t`. The result, `[Hq, T,
    /// D]`, is that of `matmul` with `k` transposed, `mul` by `scale`, a causal mask, `softmax`
    /// and `matmul` with `v`, bit for bit, in one call. With a KV cache, `k` and `v` hold the
    /// cached positions and `offset` is how many came before this call's queries.
    ///
    /// # Errors
    ///
    /// [`Error::ShapeMismatch`] when a rank is not 3, the `D`s differ, `v` is not `k`'s shape,
    /// `Hq` is not a multiple of `Hkv` or there are queries and no keys;
    /// [`Error::InvalidParameter`] for a scale that is not finite; otherwise as [`Tensor::neg`].
    ///
    /// ```no_run
    /// use gridbox_sdk::Tensor;
    ///
    /// // Two query heads sharing one key/value head; two positions, D = 2.
    /// let q = Tensor::from_slice(&[1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 0.5, 0.5], &[2, 2, 2])?;
    /// let k = Tensor::from_slice(&[1.0, 0.0, 0.0, 1.0], &[1, 2, 2])?;
    /// let v = Tensor::from_slice(&[1.0, 2.0, 3.0, 4.0], &[1, 2, 2])?;
    /// let out = q.attention(&k, &v, 0, 1.0 / 2f32.sqrt())?;
    /// // Position 0 sees only key 0: its output is v's first row.
    /// assert_eq!(out.to_vec()?[..2], [1.0, 2.0]);
    /// # Ok::<(), gridbox_sdk::Error>(())
    /// ```
    pub fn attention(&self, k: &Tensor, v: &Tensor, offset: usize, scale: f32) -> Result<Tensor> {
        let offset = i64::try_from(offset).unwrap_or(i64::MAX);
        call_op!(Attention, &[self, k, v], &[offset, scale.to_bits() as i64])
    }

    /// A new `f16` tensor from little-endian IEEE binary16 bytes (2 an element, as safetensors
    /// stores `F16` weights). The host keeps them as they are, at 2 bytes an element; layout ops
    /// (slice, permute, reshape, concat, gather) move them as stored and [`Tensor::cast`] makes
    /// f32 of them, exactly. Other ops refuse them with [`Error::UnsupportedDType`].
    ///
    /// # Errors
    ///
    /// [`Error::Usage`] when `bytes` is not 2 bytes for every element of `shape`; as
    /// [`Tensor::from_slice`] otherwise.
    ///
    /// ```no_run
    /// use gridbox_sdk::{DType, Tensor};
    ///
    /// // 1.0 and -2.0 in binary16.
    /// let w = Tensor::from_f16_bytes(&[0x00, 0x3C, 0x00, 0xC0], &[2])?;
    /// assert_eq!(w.dtype(), DType::F16);
    /// assert_eq!(w.cast(DType::F32)?.to_vec()?, [1.0, -2.0]);
    /// # Ok::<(), gridbox_sdk::Error>(())
    /// ```
    pub fn from_f16_bytes(bytes: &[u8], shape: &[usize]) -> Result<Tensor> {
        Tensor::from_half_bytes(DType::F16, bytes, shape)
    }

    /// A new `bf16` tensor from little-endian bfloat16 bytes (2 an element, the high half of an
    /// f32's bits, as safetensors stores `BF16` weights); held and used as
    /// [`Tensor::from_f16_bytes`] says.
    ///
    /// # Errors
    ///
    /// As [`Tensor::from_f16_bytes`].
    ///
    /// ```no_run
    /// use gridbox_sdk::{DType, Tensor};
    ///
    /// // 1.0 and -0.5 in bfloat16.
    /// let w = Tensor::from_bf16_bytes(&[0x80, 0x3F, 0x00, 0xBF], &[2])?;
    /// assert_eq!(w.cast(DType::F32)?.to_vec()?, [1.0, -0.5]);
    /// # Ok::<(), gridbox_sdk::Error>(())
    /// ```
    pub fn from_bf16_bytes(bytes: &[u8], shape: &[usize]) -> Result<Tensor> {
        Tensor::from_half_bytes(DType::BF16, bytes, shape)
    }

    fn from_half_bytes(dtype: DType, bytes: &[u8], shape: &[usize]) -> Result<Tensor> {
        if !bytes.len().is_multiple_of(2) {
            return Err(Error::Usage(format!("{} bytes are not whole {} elements (2 bytes each)", bytes.len(), dtype.name())));
        }
        check_len(bytes.len() / 2, shape)?;
        Tensor::from_handle(sys::create(dtype.code(), &shape_u32(shape)?, bytes)?)
    }

    /// This tensor converted to `dtype`: `f16` and `bf16` to `f32`, exactly (every value of
    /// either is an f32; NaNs become the canonical NaN).
    ///
    /// # Errors
    ///
    /// [`Error::UnsupportedDType`] for any other pair of dtypes; the quota errors.
    ///
    /// ```no_run
    /// use gridbox_sdk::{DType, Tensor};
    ///
    /// let w = Tensor::from_bf16_bytes(&[0x80, 0x3F], &[1])?;
    /// assert_eq!(w.cast(DType::F32)?.to_vec()?, [1.0]);
    /// assert!(Tensor::scalar(1.0)?.cast(DType::F16).is_err());
    /// # Ok::<(), gridbox_sdk::Error>(())
    /// ```
    pub fn cast(&self, dtype: DType) -> Result<Tensor> {
        call_op!(Cast, &[self], &[dtype.code() as i64])
    }

    /// A copy of the tensor's elements as the host holds them: little-endian, 4 bytes an
    /// element for `f32` and `i32`, 2 for `f16` and `bf16`.
    ///
    /// # Errors
    ///
    /// The host's refusals, as for [`Tensor::to_vec`].
    ///
    /// ```no_run
    /// use gridbox_sdk::Tensor;
    ///
    /// let w = Tensor::from_f16_bytes(&[0x00, 0x3C, 0x00, 0xC0], &[2])?;
    /// assert_eq!(w.slice(0, 1, 2)?.to_le_bytes()?, [0x00, 0xC0]);
    /// # Ok::<(), gridbox_sdk::Error>(())
    /// ```
    pub fn to_le_bytes(&self) -> Result<Vec<u8>> {
        self.bytes()
    }
}
