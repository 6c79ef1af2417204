//! Data-parallel training on libtorch's own c10d engine: a TCPStore rendezvous and a process
//! group (Gloo for CPU tensors, NCCL for CUDA tensors when built with it), reached through the
//! small C++ shim in `csrc/distributed.cpp` (tch has no distributed bindings).
//!
//! A run is distributed when `WORLD_SIZE` is set, as `torchrun --no-python` sets it together
//! with `RANK`, `LOCAL_RANK`, `MASTER_ADDR` and `MASTER_PORT` ([`Launch::from_env`]). Rank 0
//! then hosts the store unless torchrun's agent already does (`TORCHELASTIC_USE_AGENT_STORE`).
//!
//! Every collective waits at most the group's timeout, and Gloo fails at once when a peer's
//! connection closes: a rank that dies or hangs makes the others stop with an error naming
//! the operation, never wait for ever. A failed group is not destroyed (its worker threads
//! may still be blocked on the lost peer); the process is about to exit anyway.
use std::cell::Cell;
use std::ffi::{c_char, c_int, CStr, CString};
use std::time::Duration;

use tch::{Device, Kind, Tensor};
use torch_sys::C_tensor;

use crate::error::{Error, Result};

/// Gradients are flattened into buffers of at most this many bytes per all-reduce (as in
/// PyTorch's DistributedDataParallel, whose default bucket is 25 MiB).
pub const BUCKET_BYTES: i64 = 25 << 20;

/// Default for `rnmt-train --dist-timeout`: how long a rank waits for the others in one
/// collective (rank 0's validations included) before giving up.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30 * 60);

#[repr(C)]
struct RawGroup {
    _private: [u8; 0],
}

extern "C" {
    fn rnmt_dist_has_gloo() -> c_int;
    fn rnmt_dist_has_nccl() -> c_int;
    fn rnmt_dist_new(
        backend: *const c_char,
        host: *const c_char,
        port: c_int,
        rank: c_int,
        world_size: c_int,
        is_store_server: c_int,
        timeout_ms: i64,
        out: *mut *mut RawGroup,
    ) -> *mut c_char;
    fn rnmt_dist_free(pg: *mut RawGroup);
    fn rnmt_dist_free_error(message: *mut c_char);
    fn rnmt_dist_all_reduce_sum(
        pg: *mut RawGroup,
        tensors: *const *const C_tensor,
        n: usize,
        bucket_bytes: i64,
    ) -> *mut c_char;
    fn rnmt_dist_broadcast(
        pg: *mut RawGroup,
        tensors: *const *const C_tensor,
        n: usize,
        root: c_int,
    ) -> *mut c_char;
    fn rnmt_dist_barrier(pg: *mut RawGroup) -> *mut c_char;
}

/// Whether this build has the Gloo process group (CPU tensors).
pub fn has_gloo() -> bool {
    // SAFETY: no arguments, no state.
    unsafe { rnmt_dist_has_gloo() != 0 }
}

/// Whether this build has the NCCL process group (CUDA tensors).
pub fn has_nccl() -> bool {
    // SAFETY: no arguments, no state.
    unsafe { rnmt_dist_has_nccl() != 0 }
}

/// Where this process sits in a distributed run: what torchrun (or a user) put in the
/// environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launch {
    pub rank: usize,
    pub world_size: usize,
    /// The rank on this machine: the GPU it uses (`cuda:LOCAL_RANK`).
    pub local_rank: usize,
    pub master_addr: String,
    pub master_port: u16,
    /// torchrun's agent hosts the store (`TORCHELASTIC_USE_AGENT_STORE=True`): every rank
    /// connects to it as a client.
    pub agent_store: bool,
}

impl Launch {
    /// The launch described by the environment, `None` when `WORLD_SIZE` is unset (a plain
    /// single-process run). A missing or malformed variable is an error naming it.
    pub fn from_env() -> Result<Option<Launch>> {
        Self::from_vars(|k| std::env::var(k).ok())
    }

    /// [`Launch::from_env`] over any variable lookup.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Option<Launch>> {
        let Some(world) = var("WORLD_SIZE") else {
            return Ok(None);
        };
        let bad = |name: &str, value: &str, want: &str| {
            Error::Distributed(format!("{name}={value:?} is not {want}"))
        };
        let number = |name: &str, value: &str| -> Result<usize> {
            value
                .trim()
                .parse()
                .map_err(|_| bad(name, value, "a non-negative integer"))
        };
        let world_size = number("WORLD_SIZE", &world)?;
        if world_size == 0 {
            return Err(bad("WORLD_SIZE", &world, "positive"));
        }
        let required = |name: &str| {
            var(name).ok_or_else(|| {
                Error::Distributed(format!(
                    "WORLD_SIZE is set but {name} is not (launch with torchrun, or set RANK, MASTER_ADDR and MASTER_PORT too)"
                ))
            })
        };
        let rank_text = required("RANK")?;
        let rank = number("RANK", &rank_text)?;
        if rank >= world_size {
            return Err(bad(
                "RANK",
                &rank_text,
                &format!("below WORLD_SIZE={world_size}"),
            ));
        }
        let local_rank = match var("LOCAL_RANK") {
            Some(v) => number("LOCAL_RANK", &v)?,
            None => rank,
        };
        let master_addr = required("MASTER_ADDR")?;
        let port_text = required("MASTER_PORT")?;
        let master_port: u16 = port_text
            .trim()
            .parse()
            .ok()
            .filter(|&p| p > 0)
            .ok_or_else(|| bad("MASTER_PORT", &port_text, "a port number (1-65535)"))?;
        Ok(Some(Launch {
            rank,
            world_size,
            local_rank,
            master_addr,
            master_port,
            agent_store: var("TORCHELASTIC_USE_AGENT_STORE").as_deref() == Some("True"),
        }))
    }
}

/// The communication library of a process group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Gloo: CPU tensors (and CUDA tensors, staged through host memory).
    Gloo,
    /// NCCL: CUDA tensors.
    Nccl,
}

impl Backend {
    /// `auto` picks NCCL for a CUDA device when this build has it, else Gloo.
    pub fn parse(s: &str, device: Device) -> Result<Backend> {
        match s {
            "auto" if device.is_cuda() && has_nccl() => Ok(Backend::Nccl),
            "auto" | "gloo" => Ok(Backend::Gloo),
            "nccl" => Ok(Backend::Nccl),
            _ => Err(Error::Config(format!(
                "unknown --dist-backend '{s}': use auto, gloo or nccl"
            ))),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Backend::Gloo => "gloo",
            Backend::Nccl => "nccl",
        }
    }
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A c10d process group: this process and its peers, joined through the store.
///
/// Every rank must call the same collectives in the same order with tensors of the same
/// shapes and kinds.
pub struct ProcessGroup {
    raw: *mut RawGroup,
    rank: usize,
    world_size: usize,
    backend: Backend,
    timeout: Duration,
    /// Where the small tensors of [`ProcessGroup::broadcast_bytes`] and [`ProcessGroup::any`]
    /// live: NCCL moves only CUDA tensors.
    control: Device,
    /// Set once a collective failed: the group is then left alone (see the module docs).
    broken: Cell<bool>,
}

/// Turns a message returned by the shim into an error, releasing it.
fn check(message: *mut c_char, what: &str) -> Result<()> {
    if message.is_null() {
        return Ok(());
    }
    // SAFETY: a non-null return of the shim is a NUL-terminated string it allocated.
    let text = unsafe { CStr::from_ptr(message) }
        .to_string_lossy()
        .into_owned();
    // SAFETY: released once, by the shim's allocator.
    unsafe { rnmt_dist_free_error(message) };
    // Gloo prefixes its messages with its source location: `[/path/pair.cc:553] ...`.
    let text = match text.strip_prefix('[').and_then(|t| t.split_once("] ")) {
        Some((location, rest)) if location.contains(':') => rest.to_string(),
        _ => text,
    };
    Err(Error::Distributed(format!("{what}: {text}")))
}

impl ProcessGroup {
    /// Joins the group described by `launch` for tensors on `device` (blocks until every rank
    /// has joined, at most `timeout`). `timeout` also bounds every later collective.
    pub fn new(
        launch: &Launch,
        backend: Backend,
        device: Device,
        timeout: Duration,
    ) -> Result<ProcessGroup> {
        let host = CString::new(launch.master_addr.as_str())
            .map_err(|_| Error::Distributed("MASTER_ADDR contains a NUL byte".into()))?;
        let name = CString::new(backend.name()).unwrap_or_default();
        let server = launch.rank == 0 && !launch.agent_store;
        let mut raw: *mut RawGroup = std::ptr::null_mut();
        // SAFETY: valid C strings for the call's duration; `raw` is written by the shim.
        let message = unsafe {
            rnmt_dist_new(
                name.as_ptr(),
                host.as_ptr(),
                launch.master_port as c_int,
                launch.rank as c_int,
                launch.world_size as c_int,
                server as c_int,
                timeout.as_millis().min(i64::MAX as u128) as i64,
                &mut raw,
            )
        };
        check(
            message,
            &format!(
                "joining {} processes at {}:{} as rank {} ({backend})",
                launch.world_size, launch.master_addr, launch.master_port, launch.rank
            ),
        )?;
        Ok(ProcessGroup {
            raw,
            rank: launch.rank,
            world_size: launch.world_size,
            backend,
            timeout,
            control: match backend {
                Backend::Nccl => device,
                Backend::Gloo => Device::Cpu,
            },
            broken: Cell::new(false),
        })
    }

    pub fn rank(&self) -> usize {
        self.rank
    }

    pub fn world_size(&self) -> usize {
        self.world_size
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    fn result(&self, message: *mut c_char, what: &str) -> Result<()> {
        match check(message, &format!("{what} (rank {})", self.rank)) {
            Ok(()) => Ok(()),
            // Gloo's own timeout ("Application timeout caused pair closure", "Timed out
            // waiting 5000ms for recv operation to complete") or the wait's.
            Err(Error::Distributed(text))
                if text.to_lowercase().contains("timed out") || text.contains("timeout") =>
            {
                self.broken.set(true);
                Err(Error::Distributed(format!(
                    "{text} (no answer from another rank within {}s, --dist-timeout)",
                    self.timeout.as_secs_f64()
                )))
            }
            Err(e) => {
                self.broken.set(true);
                Err(e)
            }
        }
    }

    /// Sums each tensor over all ranks, in place (any shapes and kinds; the same list on every
    /// rank). Tensors of one kind and device are flattened into buckets of at most
    /// [`BUCKET_BYTES`].
    pub fn all_reduce_sum(&self, tensors: &[Tensor]) -> Result<()> {
        let ptrs: Vec<*const C_tensor> = tensors.iter().map(Tensor::as_ptr).collect();
        // SAFETY: the tensors outlive the call; the shim only reads the pointers.
        let message =
            unsafe { rnmt_dist_all_reduce_sum(self.raw, ptrs.as_ptr(), ptrs.len(), BUCKET_BYTES) };
        self.result(message, "all-reduce")
    }

    /// Copies each of rank `root`'s tensors into the same tensors of every other rank, in
    /// place (contiguous tensors of equal shapes on every rank).
    pub fn broadcast(&self, tensors: &[Tensor], root: usize) -> Result<()> {
        let ptrs: Vec<*const C_tensor> = tensors.iter().map(Tensor::as_ptr).collect();
        // SAFETY: as in all_reduce_sum.
        let message =
            unsafe { rnmt_dist_broadcast(self.raw, ptrs.as_ptr(), ptrs.len(), root as c_int) };
        self.result(message, "broadcast")
    }

    /// Waits until every rank is here.
    pub fn barrier(&self) -> Result<()> {
        // SAFETY: a live group.
        let message = unsafe { rnmt_dist_barrier(self.raw) };
        self.result(message, "barrier")
    }

    /// Rank 0's `bytes` on every rank (the other ranks' argument is ignored).
    pub fn broadcast_bytes(&self, bytes: &[u8]) -> Result<Vec<u8>> {
        let len = Tensor::from_slice(&[bytes.len() as i64]).to_device(self.control);
        self.broadcast(std::slice::from_ref(&len), 0)?;
        let n = len.int64_value(&[0]).max(0) as usize;
        if n == 0 {
            return Ok(Vec::new());
        }
        let data = if self.rank == 0 {
            Tensor::from_slice(bytes).to_device(self.control)
        } else {
            Tensor::zeros([n as i64], (Kind::Uint8, self.control))
        };
        self.broadcast(std::slice::from_ref(&data), 0)?;
        Vec::<u8>::try_from(&data.to_device(Device::Cpu)).map_err(|source| Error::ToHost {
            what: "broadcast bytes".into(),
            source,
        })
    }

    /// Rank 0's outcome on every rank: rank 0 passes `Ok(bytes)` or `Err(message)` (its
    /// error), the others anything; all get rank 0's bytes, or an error quoting its message.
    /// This is how a failure on rank 0 stops the other ranks instead of leaving them waiting.
    pub fn from_rank0(&self, sent: std::result::Result<Vec<u8>, String>) -> Result<Vec<u8>> {
        let mut bytes = Vec::new();
        if self.rank == 0 {
            match sent {
                Ok(payload) => {
                    bytes.push(1);
                    bytes.extend(payload);
                }
                Err(message) => {
                    bytes.push(0);
                    bytes.extend(message.into_bytes());
                }
            }
        }
        let got = self.broadcast_bytes(&bytes)?;
        match got.split_first() {
            Some((1, payload)) => Ok(payload.to_vec()),
            Some((_, message)) => Err(Error::Distributed(format!(
                "rank 0 stopped: {}",
                String::from_utf8_lossy(message)
            ))),
            None => Err(Error::Distributed("rank 0 sent nothing".into())),
        }
    }

    /// Each value summed over all ranks, in double precision (exact for counts, and for a
    /// value only one rank contributes while the others give 0).
    pub fn sum_f64(&self, values: &[f64]) -> Result<Vec<f64>> {
        let t = Tensor::from_slice(values).to_device(self.control);
        self.all_reduce_sum(std::slice::from_ref(&t))?;
        Vec::<f64>::try_from(&t.to_device(Device::Cpu)).map_err(|source| Error::ToHost {
            what: "summed values".into(),
            source,
        })
    }

    /// For each flag, whether it is set on any rank.
    pub fn any(&self, flags: &[bool]) -> Result<Vec<bool>> {
        let counts: Vec<i64> = flags.iter().map(|&f| f as i64).collect();
        let t = Tensor::from_slice(&counts).to_device(self.control);
        self.all_reduce_sum(std::slice::from_ref(&t))?;
        let summed =
            Vec::<i64>::try_from(&t.to_device(Device::Cpu)).map_err(|source| Error::ToHost {
                what: "flags".into(),
                source,
            })?;
        Ok(summed.into_iter().map(|c| c > 0).collect())
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        if !self.broken.get() {
            // SAFETY: created by rnmt_dist_new, released once.
            unsafe { rnmt_dist_free(self.raw) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn launch(vars: &[(&str, &str)]) -> Result<Option<Launch>> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Launch::from_vars(|k| map.get(k).cloned())
    }

    #[test]
    fn launch_from_torchrun_variables() {
        assert_eq!(launch(&[]).unwrap(), None);
        let l = launch(&[
            ("WORLD_SIZE", "4"),
            ("RANK", "3"),
            ("LOCAL_RANK", "1"),
            ("MASTER_ADDR", "10.0.0.1"),
            ("MASTER_PORT", "29500"),
            ("TORCHELASTIC_USE_AGENT_STORE", "True"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!((l.rank, l.world_size, l.local_rank), (3, 4, 1));
        assert_eq!((l.master_addr.as_str(), l.master_port), ("10.0.0.1", 29500));
        assert!(l.agent_store);
    }

    #[test]
    fn bad_launch_variables_name_the_variable() {
        let base = [
            ("WORLD_SIZE", "2"),
            ("RANK", "0"),
            ("MASTER_ADDR", "127.0.0.1"),
            ("MASTER_PORT", "29500"),
        ];
        let with = |k: &str, v: &str| {
            let mut vars: Vec<(&str, &str)> =
                base.iter().filter(|(n, _)| *n != k).copied().collect();
            if !v.is_empty() {
                vars.push((k, v));
            }
            launch(&vars).unwrap_err().to_string()
        };
        assert!(
            with("RANK", "2").contains("RANK=\"2\""),
            "{}",
            with("RANK", "2")
        );
        assert!(with("RANK", "").contains("RANK is not"));
        assert!(with("MASTER_PORT", "0").contains("MASTER_PORT"));
        assert!(with("MASTER_PORT", "99999").contains("MASTER_PORT"));
        assert!(with("WORLD_SIZE", "x").contains("WORLD_SIZE"));
        assert!(with("MASTER_ADDR", "").contains("MASTER_ADDR is not"));
    }
}
