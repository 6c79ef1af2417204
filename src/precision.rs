//! Numeric precision of the forward computations: `fp32` everywhere, or `bf16` automatic mixed
//! precision (libtorch's autocast) on CUDA.
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
    /// bfloat16 autocast for the forward pass, float32 weights and optimizer (CUDA only).
    Bf16,
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Precision::Fp32 => "fp32",
            Precision::Bf16 => "bf16",
        })
    }
}

impl Precision {
    /// Whether this precision can run on `device`: `bf16` needs CUDA. libtorch's CPU autocast
    /// runs the model (a library test does so), but it leaves the packed RNN kernels in
    /// float32, and its speed was measured on no CPU (the development machine has no
    /// bfloat16 instructions), so the CPU refuses it rather than run something unmeasured.
    pub fn check(self, device: Device) -> Result<()> {
        match (self, device) {
            (Precision::Bf16, Device::Cuda(_)) | (Precision::Fp32, _) => Ok(()),
            (Precision::Bf16, d) => Err(Error::Config(format!(
                "--precision bf16 needs a CUDA device, and this run uses {}; use --precision \
                 fp32 (the default) on the CPU",
                crate::device::describe(d)
            ))),
        }
    }

    /// Runs `f` with this precision's autocast state on `device` (nothing changes for
    /// `fp32`). Call [`Precision::check`] first; `bf16` on a device other than CUDA runs `f`
    /// unchanged.
    pub fn run<T>(self, device: Device, f: impl FnOnce() -> T) -> Result<T> {
        match (self, device) {
            (Precision::Bf16, Device::Cuda(_)) => with_autocast(true, LowPrecision::Bf16, f),
            _ => Ok(f()),
        }
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
    fn bf16_is_refused_on_the_cpu() {
        assert!(Precision::Fp32.check(Device::Cpu).is_ok());
        assert!(Precision::Bf16.check(Device::Cuda(0)).is_ok());
        let e = Precision::Bf16.check(Device::Cpu).unwrap_err().to_string();
        assert!(e.contains("needs a CUDA device"), "{e}");
        // fp32 runs the closure unchanged.
        assert_eq!(
            Precision::Fp32.run(Device::Cpu, matmul_kind).unwrap(),
            Kind::Float
        );
    }
}
