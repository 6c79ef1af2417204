//! Device and thread selection shared by the binaries.
use tch::Device;

use crate::error::{Error, Result};
use crate::precision::Precision;

/// Where and how the binaries compute: `--device`, `--threads`, `--precision`, flattened into
/// each binary's command line (the defaults live here only).
#[derive(Debug, Clone, clap::Args)]
pub struct DeviceArgs {
    /// auto, cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// libtorch threads (default: one per physical core).
    #[arg(long)]
    pub threads: Option<usize>,
    /// fp32; bf16 (weights, gradients and Adam stay float32; on CUDA autocast for the
    /// forward passes; on a CPU with bfloat16 instructions the encoder and the output layer,
    /// and in decoding the decoder's products); or auto (bf16 on such a CPU, else fp32).
    /// Default: auto.
    #[arg(long = "precision", value_enum, value_name = "PRECISION")]
    pub precision_arg: Option<Precision>,
    /// The precision in use: `--precision`, else the binary's default, resolved for the
    /// device by [`DeviceArgs::apply`] (or set by the binary).
    #[arg(skip)]
    pub precision: Precision,
}

impl DeviceArgs {
    /// Sets the threads, parses the device, resolves `--precision` (else `default`, e.g.
    /// `auto` for the decoding binaries) for it and checks the precision on it.
    pub fn apply(&mut self, default: Precision) -> Result<Device> {
        set_threads(self.threads);
        let device = parse_device(&self.device)?;
        self.precision = self.precision_arg.unwrap_or(default).resolved(device);
        self.precision.check(device)?;
        Ok(device)
    }
}

/// Parses `auto` (CUDA when libtorch sees a GPU, else CPU), `cpu`, `cuda` or `cuda:N`.
pub fn parse_device(s: &str) -> Result<Device> {
    let bad = || {
        Error::Config(format!(
            "unknown device '{s}': use auto, cpu, cuda or cuda:N"
        ))
    };
    match s {
        "auto" => Ok(Device::cuda_if_available()),
        "cpu" => Ok(Device::Cpu),
        "cuda" => cuda(0),
        _ => match s.strip_prefix("cuda:") {
            Some(n) => cuda(n.parse().map_err(|_| bad())?),
            None => Err(bad()),
        },
    }
}

fn cuda(n: usize) -> Result<Device> {
    let count = tch::Cuda::device_count() as usize;
    if n >= count {
        return Err(Error::Config(format!(
            "cuda:{n} requested but libtorch sees {count} CUDA device(s)"
        )));
    }
    Ok(Device::Cuda(n))
}

/// Sets libtorch's intra-op threads (`None` keeps libtorch's default, one per physical core).
///
/// Also bounds oneDNN's cache of compiled kernels (see [`ONEDNN_KERNEL_CACHE`]) unless the
/// environment already sets `ONEDNN_PRIMITIVE_CACHE_CAPACITY`. Call it first thing, before
/// any tensor operation and before other threads exist.
pub fn set_threads(threads: Option<usize>) {
    if std::env::var_os("ONEDNN_PRIMITIVE_CACHE_CAPACITY").is_none() {
        std::env::set_var(
            "ONEDNN_PRIMITIVE_CACHE_CAPACITY",
            ONEDNN_KERNEL_CACHE.to_string(),
        );
    }
    if let Some(n) = threads {
        tch::set_num_threads(n.max(1) as i32);
    }
}

/// Kernels oneDNN keeps compiled (its default is 1024). On the CPU the encoder's LSTM runs
/// on oneDNN, which compiles a kernel, with its own buffers, for every batch shape it meets;
/// with the default, training the default model peaked at 1.70 GB against 1.00 GB with 64,
/// at the same speed (300 updates, README Speed).
pub const ONEDNN_KERNEL_CACHE: usize = 64;

/// A short description such as `cpu (2 threads)` or `cuda:0`.
pub fn describe(device: Device) -> String {
    match device {
        Device::Cpu => format!("cpu ({} threads)", tch::get_num_threads()),
        Device::Cuda(n) => format!("cuda:{n}"),
        d => format!("{d:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The binaries bound oneDNN's kernel cache, and leave a value from the environment alone.
    #[test]
    fn set_threads_bounds_the_onednn_kernel_cache() {
        let before = std::env::var("ONEDNN_PRIMITIVE_CACHE_CAPACITY").ok();
        set_threads(None);
        let after = std::env::var("ONEDNN_PRIMITIVE_CACHE_CAPACITY").unwrap();
        assert_eq!(
            after,
            before.unwrap_or_else(|| ONEDNN_KERNEL_CACHE.to_string())
        );
    }

    #[test]
    fn parses_devices() {
        assert_eq!(parse_device("cpu").unwrap(), Device::Cpu);
        assert!(parse_device("tpu").is_err());
        assert!(parse_device("cuda:x").is_err());
        if !tch::Cuda::is_available() {
            assert_eq!(parse_device("auto").unwrap(), Device::Cpu);
            assert!(parse_device("cuda:0")
                .unwrap_err()
                .to_string()
                .contains("0 CUDA"));
        }
    }
}
