//! Peak memory of this process, for the reports of the binaries and benchmark scripts.

/// Peak resident set size in bytes (`VmHWM` of `/proc/self/status`), where Linux provides it.
/// It covers libtorch's CPU allocations; on CUDA, GPU memory is not included.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Memory the system can still give this process (`MemAvailable` of `/proc/meminfo`), where
/// Linux provides it.
pub fn available_bytes() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// `peak memory 1.23 GB`, or an empty string where unknown.
pub fn peak_report() -> String {
    match peak_rss_bytes() {
        Some(b) => format!("peak memory {:.2} GB", b as f64 / 1e9),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_a_plausible_peak() {
        if let Some(b) = super::peak_rss_bytes() {
            assert!(b > 1_000_000, "{b}");
            let big = vec![1u8; 64 << 20];
            let after = super::peak_rss_bytes().unwrap();
            assert!(
                after >= 64 << 20 && after >= b,
                "{after} after touching 64 MiB"
            );
            assert_eq!(big.iter().map(|&x| x as usize).sum::<usize>(), 64 << 20);
        }
    }
}
