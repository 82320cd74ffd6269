//! Which SIMD instructions this CPU has: the one place gridbox asks. Each answer is a proof
//! token that only its `detect` makes, so a kernel that takes one can call its
//! `#[target_feature]` code soundly. Results never depend on which kernel runs: the SIMD
//! kernels compute the spec's chains exactly (spec/determinism.md), and the tests compare each
//! with the portable code bit for bit.

/// Proof that the CPU has AVX2 and FMA: only [`Avx2Fma::detect`] makes one.
#[cfg(target_arch = "x86_64")]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Avx2Fma(());

#[cfg(target_arch = "x86_64")]
impl Avx2Fma {
    /// `Some` when AVX2 and FMA are both present at run time.
    pub(crate) fn detect() -> Option<Avx2Fma> {
        (std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")).then_some(Avx2Fma(()))
    }
}

/// Proof that the CPU has AVX-512F (and, as every AVX-512 CPU does, AVX2 and FMA): only
/// [`Avx512::detect`] makes one.
#[cfg(target_arch = "x86_64")]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Avx512(());

#[cfg(target_arch = "x86_64")]
impl Avx512 {
    /// `Some` when AVX-512F, AVX2 and FMA are present at run time.
    pub(crate) fn detect() -> Option<Avx512> {
        let present =
            std::arch::is_x86_feature_detected!("avx512f") && std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma");
        present.then_some(Avx512(()))
    }
}
