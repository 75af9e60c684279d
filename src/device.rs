//! Where the models run, on the ground floor so that any layer can ask: the `--device` choice
//! (`cpu`, `cuda`, `cuda:N`) parsed once, and the free memory a GPU has left.

use crate::error::{Error, Result};
use candle_core::Device;
use std::fmt;
use std::str::FromStr;

/// Where the model runs: `cpu`, `cuda` or `cuda:N`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceSpec {
    /// The CPU.
    #[default]
    Cpu,
    /// CUDA device N.
    Cuda(usize),
}

impl FromStr for DeviceSpec {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let bad = || format!("`{s}`: expected cpu, cuda or cuda:N");
        match s {
            "cpu" => Ok(DeviceSpec::Cpu),
            "cuda" => Ok(DeviceSpec::Cuda(0)),
            _ => s
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(DeviceSpec::Cuda)
                .ok_or_else(bad),
        }
    }
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceSpec::Cpu => write!(f, "cpu"),
            DeviceSpec::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

impl DeviceSpec {
    /// Opens the device; a CUDA request in a build without CUDA is a usage error.
    pub fn device(self) -> Result<Device> {
        match self {
            DeviceSpec::Cpu => Ok(Device::Cpu),
            DeviceSpec::Cuda(n) => {
                if !candle_core::utils::cuda_is_available() {
                    return Err(Error::Usage(
                        "--device cuda: this build has no CUDA support; rebuild with `--features cuda`"
                            .into(),
                    ));
                }
                Device::new_cuda(n).map_err(|e| {
                    // candle's message carries a backtrace: keep its first line
                    let why = e.to_string().lines().next().unwrap_or_default().to_string();
                    Error::Usage(format!(
                        "--device cuda:{n}: no usable CUDA device ({why}); run where an NVIDIA GPU and its \
                         driver are, or use --device cpu"
                    ))
                })
            }
        }
    }
}

/// Free memory of a GPU in bytes; `None` on the CPU (or when the driver cannot say).
pub fn free_memory(device: &Device) -> Option<u64> {
    #[cfg(feature = "cuda")]
    if let Ok(cuda) = device.as_cuda_device() {
        return cuda
            .cuda_stream()
            .context()
            .mem_get_info()
            .ok()
            .map(|(free, _total)| free as u64);
    }
    let _ = device;
    None
}

/// The device's kind as run manifests and summaries name it (`cpu` or `cuda`).
pub fn kind_name(device: &Device) -> &'static str {
    if device.is_cpu() {
        "cpu"
    } else {
        "cuda"
    }
}

/// Keeps large CPU buffers on the heap (glibc only): by default glibc maps every allocation of
/// 32 MB or more afresh and unmaps it when freed, so each frame's activations are page-faulted
/// and zeroed by the kernel again (10–15 % of a CPU run in `perf`). Raising the mmap threshold
/// lets freed buffers be reused; the trim threshold keeps them from going back to the system
/// between frames. Call once, before the models run.
pub fn keep_large_allocations() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator thresholds; called before any model work.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 30);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_specs_parse_once() {
        assert_eq!("cpu".parse(), Ok(DeviceSpec::Cpu));
        assert_eq!("cuda".parse(), Ok(DeviceSpec::Cuda(0)));
        assert_eq!("cuda:3".parse(), Ok(DeviceSpec::Cuda(3)));
        assert!("gpu".parse::<DeviceSpec>().is_err() && "cuda:x".parse::<DeviceSpec>().is_err());
        assert_eq!(DeviceSpec::Cuda(2).to_string(), "cuda:2");
        assert_eq!(kind_name(&Device::Cpu), "cpu");
    }
}
