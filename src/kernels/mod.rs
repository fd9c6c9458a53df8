//! The fast path: ggml's second table (`type_traits_cpu[]`). For each weight type, the type its
//! activations are quantized to and the dot product of one weight row with one activation row.
//!
//! `scalar.rs` is the specification every SIMD kernel is tested against; `x86_avx2.rs` and
//! `x86_avx512.rs` hold the SIMD kernels; `matmul.rs` multiplies a weight matrix by a batch of
//! activations with whatever table is active.
//!
//! Dispatch happens once, at run time: the first call of [`kernels`] (or [`init`]) picks an
//! instruction set — the best this CPU has, or the one
//! `KILN_KERNELS=scalar|avx2|avx512|neon|neon-dotprod` forces — and builds one [`KernelTable`]:
//! the scalar table with every type that instruction set has a kernel for replaced (an AVX-512
//! table also takes the AVX2 kernels AVX-512 does not improve).
//! `aarch64_neon.rs` builds its kernels twice: plain NEON ([`Isa::Neon`]) and with `dotprod`
//! ([`Isa::NeonDot`], on top of it).

#[cfg(target_arch = "aarch64")]
mod aarch64_neon;
mod act_quant;
mod gemm;
mod gemv;
pub mod matmul;
mod repack;
pub mod scalar;
#[cfg(target_arch = "x86_64")]
mod x86_avx2;
#[cfg(target_arch = "x86_64")]
mod x86_avx512;

pub use matmul::{
    matmul, matmul_many_with, matmul_with, quantize_activations, MatmulError, MatmulScratch,
    Parallel, ScopedThreads, WeightMatrix,
};

use ggml_compat::GgmlType;
use std::sync::OnceLock;

/// Dot product of `n` weights (`w`, whole blocks of the weight type) with `n` activations
/// (`a`, whole blocks of the weight type's `vec_dot_type`).
pub type VecDot = fn(n: usize, w: &[u8], a: &[u8]) -> f32;

/// The kernels of one weight type.
#[derive(Clone, Copy)]
pub struct TypeKernels {
    /// What activations are quantized to before the dot product (ggml's `vec_dot_type`).
    pub vec_dot_type: GgmlType,
    pub vec_dot: VecDot,
}

/// An instruction set kiln has kernels for. Each one's table builds on its [`Isa::base`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Isa {
    /// Portable Rust, the specification (ggml's `*_generic`).
    Scalar,
    /// x86-64 AVX2 + FMA + F16C (ggml's `__AVX2__` branches).
    Avx2,
    /// x86-64 AVX-512 F/BW/VL + VNNI, on top of AVX2 (ggml's `__AVX512F__`/`__AVX512VNNI__`).
    Avx512,
    /// aarch64 NEON (ggml's `__ARM_NEON` branches, `ggml_vdotq_s32` without `dotprod`).
    Neon,
    /// aarch64 NEON + `dotprod` (`sdot`, ggml's `__ARM_FEATURE_DOTPROD`), on top of NEON.
    NeonDot,
}

impl Isa {
    /// Every instruction set, in order of preference (best last).
    pub const ALL: [Isa; 5] = [Isa::Scalar, Isa::Avx2, Isa::Avx512, Isa::Neon, Isa::NeonDot];

    /// The instruction set whose table this one's starts from (its features are a subset of
    /// this one's), or `None` for `Scalar`.
    pub fn base(self) -> Option<Isa> {
        match self {
            Isa::Scalar => None,
            Isa::Avx2 => Some(Isa::Scalar),
            Isa::Avx512 => Some(Isa::Avx2),
            Isa::Neon => Some(Isa::Scalar),
            Isa::NeonDot => Some(Isa::Neon),
        }
    }

    /// The chain of instruction sets this one's table is built from: `Scalar` first, `self`
    /// last. A type takes the kernel of the last one in the chain that has one.
    pub fn layers(self) -> Vec<Isa> {
        let mut chain: Vec<Isa> = std::iter::successors(Some(self), |isa| isa.base()).collect();
        chain.reverse();
        chain
    }

    /// The name `KILN_KERNELS` takes and `-v` prints.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512",
            Isa::Neon => "neon",
            Isa::NeonDot => "neon-dotprod",
        }
    }

    /// The instruction set called `name` (as [`Isa::name`] spells it).
    pub fn from_name(name: &str) -> Option<Isa> {
        Isa::ALL.into_iter().find(|isa| isa.name() == name)
    }

    /// The CPU features this instruction set's kernels are compiled with.
    pub fn features(self) -> &'static [&'static str] {
        match self {
            Isa::Scalar => &[],
            Isa::Avx2 => &["avx2", "fma", "f16c"],
            Isa::Avx512 => &[
                "avx2",
                "fma",
                "f16c",
                "avx512f",
                "avx512bw",
                "avx512vl",
                "avx512vnni",
            ],
            Isa::Neon => &["neon"],
            Isa::NeonDot => &["neon", "dotprod"],
        }
    }

    /// The first feature of [`Isa::features`] this CPU lacks, or `None` if it has them all.
    pub fn missing_feature(self) -> Option<&'static str> {
        self.features().iter().copied().find(|f| !cpu_has(f))
    }

    /// Whether this CPU can run this instruction set's kernels.
    pub fn is_available(self) -> bool {
        self.missing_feature().is_none()
    }

    /// The best instruction set this CPU can run.
    pub fn best() -> Isa {
        Isa::ALL
            .into_iter()
            .rev()
            .find(|isa| isa.is_available())
            .unwrap_or(Isa::Scalar)
    }

    /// This instruction set's own kernels (without those it inherits).
    ///
    /// # Safety
    /// The returned functions may execute the instructions of [`Isa::features`]: call only when
    /// [`Isa::is_available`] is true.
    unsafe fn own_kernels(self) -> &'static [(GgmlType, VecDot)] {
        match self {
            Isa::Scalar => &[],
            // SAFETY: forwarded from this function's contract (the CPU has the features).
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => unsafe { x86_avx2::kernels() },
            // SAFETY: as above.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => unsafe { x86_avx512::kernels() },
            #[cfg(not(target_arch = "x86_64"))]
            Isa::Avx2 | Isa::Avx512 => &[],
            // SAFETY: as above.
            #[cfg(target_arch = "aarch64")]
            Isa::Neon => unsafe { aarch64_neon::kernels() },
            // SAFETY: as above.
            #[cfg(target_arch = "aarch64")]
            Isa::NeonDot => unsafe { aarch64_neon::kernels_dotprod() },
            #[cfg(not(target_arch = "aarch64"))]
            Isa::Neon | Isa::NeonDot => &[],
        }
    }
}

impl std::fmt::Display for Isa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Run-time detection of one feature named as in [`Isa::features`].
fn cpu_has(feature: &str) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        match feature {
            "avx2" => std::arch::is_x86_feature_detected!("avx2"),
            "fma" => std::arch::is_x86_feature_detected!("fma"),
            "f16c" => std::arch::is_x86_feature_detected!("f16c"),
            "avx512f" => std::arch::is_x86_feature_detected!("avx512f"),
            "avx512bw" => std::arch::is_x86_feature_detected!("avx512bw"),
            "avx512vl" => std::arch::is_x86_feature_detected!("avx512vl"),
            "avx512vnni" => std::arch::is_x86_feature_detected!("avx512vnni"),
            _ => false,
        }
    }
    #[cfg(target_arch = "aarch64")]
    {
        match feature {
            "neon" => std::arch::is_aarch64_feature_detected!("neon"),
            "dotprod" => std::arch::is_aarch64_feature_detected!("dotprod"),
            _ => false,
        }
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        let _ = feature;
        false
    }
}

/// Why a kernel table could not be chosen.
#[derive(Debug, Clone, thiserror::Error)]
pub enum KernelsError {
    #[error("KILN_KERNELS={0:?} names no kernel set: use scalar, avx2, avx512, neon or neon-dotprod (or unset it)")]
    UnknownIsa(String),
    #[error(
        "{isa} kernels need the CPU feature {missing}, which this CPU lacks: \
         unset KILN_KERNELS to use the best available ({best})"
    )]
    Unavailable {
        isa: Isa,
        missing: &'static str,
        best: Isa,
    },
}

/// One entry of a [`KernelTable`].
#[derive(Clone, Copy)]
struct Entry {
    ty: GgmlType,
    kernels: TypeKernels,
    /// Which instruction set's kernel `kernels.vec_dot` is.
    isa: Isa,
}

/// The kernels of every supported type for one instruction set (ggml's `type_traits_cpu[]`).
pub struct KernelTable {
    isa: Isa,
    entries: Vec<Entry>,
}

impl KernelTable {
    /// Builds the table of `isa`: the scalar table, overridden by each instruction set of
    /// [`Isa::layers`] in turn.
    fn build(isa: Isa) -> Result<KernelTable, KernelsError> {
        if let Some(missing) = isa.missing_feature() {
            return Err(KernelsError::Unavailable {
                isa,
                missing,
                best: Isa::best(),
            });
        }
        let mut entries: Vec<Entry> = scalar::supported_types()
            .map(|ty| Entry {
                ty,
                kernels: *scalar::kernels(ty).expect("listed by scalar::supported_types"),
                isa: Isa::Scalar,
            })
            .collect();
        for layer in isa.layers() {
            // SAFETY: `layer`'s features are a subset of `isa`'s (each instruction set's list
            // extends its base's), and `isa.missing_feature()` was `None` above, so the CPU
            // runs every kernel installed here.
            for &(ty, vec_dot) in unsafe { layer.own_kernels() } {
                if let Some(e) = entries.iter_mut().find(|e| e.ty == ty) {
                    e.kernels.vec_dot = vec_dot;
                    e.isa = layer;
                }
            }
        }
        Ok(KernelTable { isa, entries })
    }

    /// The instruction set this table was built for.
    pub fn isa(&self) -> Isa {
        self.isa
    }

    /// The kernels of weight type `ty`, or `None` if kiln cannot multiply with it.
    pub fn get(&self, ty: GgmlType) -> Option<&TypeKernels> {
        self.entries.iter().find(|e| e.ty == ty).map(|e| &e.kernels)
    }

    /// Which instruction set's kernel this table uses for `ty` (`Scalar` when none of the
    /// table's SIMD files has one).
    pub fn kernel_isa(&self, ty: GgmlType) -> Option<Isa> {
        self.entries.iter().find(|e| e.ty == ty).map(|e| e.isa)
    }
}

/// The table of `isa`, built on first use, or why this CPU cannot run it.
pub fn table(isa: Isa) -> Result<&'static KernelTable, KernelsError> {
    static TABLES: [OnceLock<Result<KernelTable, KernelsError>>; Isa::ALL.len()] =
        [const { OnceLock::new() }; Isa::ALL.len()];
    // Discriminants are positions in `Isa::ALL`.
    TABLES[isa as usize]
        .get_or_init(|| KernelTable::build(isa))
        .as_ref()
        .map_err(Clone::clone)
}

/// The instruction set `KILN_KERNELS` asks for, or the best available one if it is unset.
fn requested_isa() -> Result<Isa, KernelsError> {
    match std::env::var("KILN_KERNELS") {
        Ok(name) if !name.is_empty() => Isa::from_name(&name).ok_or(KernelsError::UnknownIsa(name)),
        _ => Ok(Isa::best()),
    }
}

fn active() -> &'static Result<&'static KernelTable, KernelsError> {
    static ACTIVE: OnceLock<Result<&'static KernelTable, KernelsError>> = OnceLock::new();
    ACTIVE.get_or_init(|| table(requested_isa()?))
}

/// Chooses the active kernel table (from `KILN_KERNELS`, else the best this CPU runs) and
/// returns it, or the reason `KILN_KERNELS` cannot be honoured. Front ends call this at start-up
/// to report a bad `KILN_KERNELS` as an error; the choice is made once per process. ggml's
/// counterpart is the CPU backend's variant scoring at load (`ggml-cpu/arch/x86/cpu-feats.cpp`).
pub fn init() -> Result<&'static KernelTable, KernelsError> {
    active().clone()
}

/// The active table.
///
/// # Panics
/// If `KILN_KERNELS` names an unknown instruction set or one this CPU lacks: running other
/// kernels than the ones asked for would make timings and comparisons silently wrong. Call
/// [`init`] first to get that as an error instead.
fn active_table() -> &'static KernelTable {
    match active() {
        Ok(t) => t,
        Err(e) => panic!("{e}"),
    }
}

/// The name of the active instruction set ("scalar", "avx2", "avx512"), for `-v` output.
/// Panics as [`kernels`] does.
pub fn active_isa() -> &'static str {
    active_table().isa().name()
}

/// The kernels for weights of type `ty` in the active table, or `None` if kiln cannot multiply
/// with it. ggml's `ggml_get_type_traits_cpu(ty)`.
///
/// # Panics
/// On first use, if `KILN_KERNELS` cannot be honoured (see [`init`]).
pub fn kernels(ty: GgmlType) -> Option<&'static TypeKernels> {
    active_table().get(ty)
}

/// Every weight type [`kernels`] answers for.
pub fn supported_types() -> impl Iterator<Item = GgmlType> {
    scalar::supported_types()
}
