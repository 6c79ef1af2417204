//! Numeric precision of the forward computations: `fp32` everywhere, or `bf16` automatic mixed
//! precision (libtorch's autocast) on CUDA and on CPUs with bfloat16 instructions.
//!
//! Under autocast, libtorch runs the matrix products (linear layers, attention scores, the
//! RNN kernels) in bfloat16 and keeps precision-sensitive operations (softmax, log-softmax,
//! losses, reductions) in float32. The parameters, their gradients and Adam's moments stay
//! float32 ("master weights"), so no loss scaling is needed: bfloat16 has float32's exponent
//! range. Checkpoints are float32 either way and load under any precision.
//!
//! tch can switch autocast on but cannot choose its type (libtorch's default on CUDA is
//! float16), so the switch is a few lines of C++ in `csrc/autocast.cpp`.
use std::fmt;

use tch::Device;

use crate::error::{Error, Result};

/// `--precision`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Precision {
    /// float32 everywhere.
    #[default]
    Fp32,
    /// bfloat16 autocast for the forward pass, float32 weights and optimizer (CUDA, or a
    /// CPU with bfloat16 instructions).
    Bf16,
    /// `bf16` on a CPU with bfloat16 instructions, `fp32` everywhere else (also on CUDA,
    /// where bf16 is a choice to make explicitly). [`Precision::resolved`] turns it into one
    /// of the two before use.
    Auto,
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Precision::Fp32 => "fp32",
            Precision::Bf16 => "bf16",
            Precision::Auto => "auto",
        })
    }
}

impl Precision {
    /// `Auto` resolved for `device` (`bf16` on a CPU with bfloat16 instructions, else
    /// `fp32`); the other two unchanged.
    pub fn resolved(self, device: Device) -> Precision {
        match self {
            Precision::Auto if device == Device::Cpu && cpu_has_bf16() => Precision::Bf16,
            Precision::Auto => Precision::Fp32,
            p => p,
        }
    }

    /// Whether this precision can run on `device`: `bf16` needs CUDA, or a CPU with bfloat16
    /// instructions (AVX512-BF16, which every CPU with AMX also has), where oneDNN runs the
    /// matrix products and the LSTM kernel in bfloat16 (on AMX tiles where present). Other
    /// CPUs would emulate bfloat16, slower than float32, so they refuse it. `auto` always
    /// can.
    pub fn check(self, device: Device) -> Result<()> {
        match (self.resolved(device), device) {
            (Precision::Bf16, Device::Cuda(_)) | (Precision::Fp32 | Precision::Auto, _) => Ok(()),
            (Precision::Bf16, Device::Cpu) if cpu_has_bf16() => Ok(()),
            (Precision::Bf16, d) => Err(Error::Config(format!(
                "--precision bf16 needs a CUDA device or a CPU with bfloat16 instructions \
                 (avx512_bf16), and this run uses {} without them; use --precision fp32 \
                 (the default)",
                crate::device::describe(d)
            ))),
        }
    }

    /// Runs `f` with this precision's autocast state on `device`: CUDA autocast for `bf16`
    /// there; nothing changes for `fp32` or on the CPU, where `bf16` is the model's own
    /// choice of parts ([`Precision::low_precision`]). Call [`Precision::check`] first.
    pub fn run<T>(self, device: Device, f: impl FnOnce() -> T) -> Result<T> {
        match (self.resolved(device), device) {
            (Precision::Bf16, Device::Cuda(_)) => with_autocast(true, LowPrecision::Bf16, f),
            _ => Ok(f()),
        }
    }
}

impl Precision {
    /// The type the model's encoder and output layer multiply in on `device`
    /// ([`crate::model::Seq2Seq::set_low_precision`]): bfloat16 for `bf16` on the CPU, else
    /// none (float32; on CUDA autocast lowers the whole forward pass).
    pub fn low_precision(self, device: Device) -> Option<tch::Kind> {
        (self.resolved(device) == Precision::Bf16 && device == Device::Cpu)
            .then_some(tch::Kind::BFloat16)
    }
}

/// Whether this CPU has native bfloat16 arithmetic (x86-64 AVX512-BF16).
pub fn cpu_has_bf16() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512bf16")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// The lower-precision type of an autocast region.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LowPrecision {
    Bf16,
    F16,
}

extern "C" {
    fn rnmt_autocast_enter(cuda: i32, half: i32) -> i32;
    fn rnmt_autocast_exit(cuda: i32, previous: i32) -> i32;
}

/// Runs `f` with autocast on for CUDA (`cuda`) or the CPU, lowering to `low`; restores the
/// previous autocast state afterwards, also when `f` panics. Autocast is thread-local: it
/// affects the operations `f` runs on this thread (the backward pass needs no autocast).
pub fn with_autocast<T>(cuda: bool, low: LowPrecision, f: impl FnOnce() -> T) -> Result<T> {
    // SAFETY: the shim takes plain integers and catches every C++ exception.
    let previous =
        unsafe { rnmt_autocast_enter(i32::from(cuda), i32::from(low == LowPrecision::F16)) };
    if previous < 0 {
        return Err(Error::Config(
            "libtorch refused to enable autocast for --precision".into(),
        ));
    }
    struct Restore(i32, i32);
    impl Drop for Restore {
        fn drop(&mut self) {
            // SAFETY: as above; `self.1` is what rnmt_autocast_enter returned.
            unsafe { rnmt_autocast_exit(self.0, self.1) };
        }
    }
    let _restore = Restore(i32::from(cuda), previous);
    Ok(f())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Kind, Tensor};

    fn matmul_kind() -> Kind {
        let a = Tensor::ones([4, 3], (Kind::Float, Device::Cpu));
        let w = Tensor::ones([2, 3], (Kind::Float, Device::Cpu));
        a.linear::<Tensor>(&w, None).kind()
    }

    /// The shim switches autocast on with the requested type and restores the state after.
    #[test]
    fn autocast_lowers_matmuls_and_restores() {
        assert_eq!(matmul_kind(), Kind::Float);
        let inside = with_autocast(false, LowPrecision::Bf16, matmul_kind).unwrap();
        assert_eq!(inside, Kind::BFloat16);
        let nested = with_autocast(false, LowPrecision::F16, || {
            let k = matmul_kind();
            // Leaving the inner region restores the outer type.
            (
                k,
                with_autocast(false, LowPrecision::Bf16, matmul_kind).unwrap(),
            )
        })
        .unwrap();
        assert_eq!(nested, (Kind::Half, Kind::BFloat16));
        assert_eq!(matmul_kind(), Kind::Float);
        // A float32-policy op stays float32 inside the region.
        let softmax = with_autocast(false, LowPrecision::Bf16, || {
            Tensor::ones([2, 3], (Kind::Float, Device::Cpu))
                .log_softmax(-1, Kind::Float)
                .kind()
        })
        .unwrap();
        assert_eq!(softmax, Kind::Float);
    }

    #[test]
    fn bf16_on_the_cpu_only_with_bfloat16_instructions() {
        assert!(Precision::Fp32.check(Device::Cpu).is_ok());
        assert!(Precision::Bf16.check(Device::Cuda(0)).is_ok());
        assert_eq!(
            Precision::Bf16.low_precision(Device::Cpu),
            Some(Kind::BFloat16)
        );
        assert_eq!(Precision::Bf16.low_precision(Device::Cuda(0)), None);
        assert_eq!(Precision::Fp32.low_precision(Device::Cpu), None);
        assert_eq!(Precision::Auto.resolved(Device::Cuda(0)), Precision::Fp32);
        assert!(Precision::Auto.check(Device::Cpu).is_ok());
        assert_eq!(
            Precision::Auto.resolved(Device::Cpu),
            if cpu_has_bf16() {
                Precision::Bf16
            } else {
                Precision::Fp32
            }
        );
        if cpu_has_bf16() {
            assert!(Precision::Bf16.check(Device::Cpu).is_ok());
        } else {
            let e = Precision::Bf16.check(Device::Cpu).unwrap_err().to_string();
            assert!(e.contains("bfloat16 instructions"), "{e}");
        }
        // fp32 runs the closure unchanged.
        assert_eq!(
            Precision::Fp32.run(Device::Cpu, matmul_kind).unwrap(),
            Kind::Float
        );
    }
}
