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
    /// forward passes, on a CPU with bfloat16 instructions the encoder and the output layer
    /// in training); or auto (bf16 on such a CPU, else fp32).
    #[arg(long, value_enum, default_value_t = Precision::Fp32)]
    pub precision: Precision,
}

impl DeviceArgs {
    /// Sets the threads, parses the device, resolves `--precision auto` for it and checks
    /// the precision on it.
    pub fn apply(&mut self) -> Result<Device> {
        set_threads(self.threads);
        let device = parse_device(&self.device)?;
        self.precision = self.precision.resolved(device);
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
pub fn set_threads(threads: Option<usize>) {
    if let Some(n) = threads {
        tch::set_num_threads(n.max(1) as i32);
    }
}

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
