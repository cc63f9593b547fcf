//! Disk use of the filesystem holding the data directory.

use serde::Serialize;
use std::path::Path;

/// One reading of a filesystem.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct DiskUsage {
    pub total_bytes: u64,
    /// Free to an unprivileged writer (what `df` calls available).
    pub available_bytes: u64,
    /// As `df` shows it: used ÷ (used + available).
    pub used_percent: f64,
}

/// How full a disk is, against the configured thresholds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DiskLevel {
    Ok,
    Warn,
    Critical,
}

impl DiskUsage {
    pub fn level(&self, warn_percent: f64, critical_percent: f64) -> DiskLevel {
        if self.used_percent >= critical_percent {
            DiskLevel::Critical
        } else if self.used_percent >= warn_percent {
            DiskLevel::Warn
        } else {
            DiskLevel::Ok
        }
    }
}

/// `statvfs(3)` of the filesystem holding `path`.
pub fn usage(path: &Path) -> std::io::Result<DiskUsage> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(std::io::Error::other)?;
    let mut stat = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `c_path` is a NUL-terminated string that outlives the call, and
    // `stat` is a properly sized buffer that statvfs fills on success.
    let rc = unsafe { libc::statvfs(c_path.as_ptr(), stat.as_mut_ptr()) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: statvfs returned 0, so it initialised `stat`.
    let stat = unsafe { stat.assume_init() };
    // The field types differ between targets (u32 or u64); on this one the
    // conversion may be a no-op.
    #[allow(clippy::useless_conversion)]
    let (fragment, blocks, free, available) =
        (u64::from(stat.f_frsize), u64::from(stat.f_blocks), u64::from(stat.f_bfree), u64::from(stat.f_bavail));
    let (total, free, available) = (blocks * fragment, free * fragment, available * fragment);
    let used = total.saturating_sub(free);
    let used_percent = if used + available == 0 { 0.0 } else { used as f64 * 100.0 / (used + available) as f64 };
    Ok(DiskUsage { total_bytes: total, available_bytes: available, used_percent })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_follow_the_thresholds_and_a_real_disk_reads() {
        let at = |p| DiskUsage { total_bytes: 100, available_bytes: 0, used_percent: p };
        assert_eq!(at(79.9).level(80.0, 90.0), DiskLevel::Ok);
        assert_eq!(at(80.0).level(80.0, 90.0), DiskLevel::Warn);
        assert_eq!(at(95.0).level(80.0, 90.0), DiskLevel::Critical);
        let here = usage(Path::new(".")).unwrap();
        assert!(here.total_bytes > 0 && (0.0..=100.0).contains(&here.used_percent));
        assert!(usage(Path::new("/no/such/dir")).is_err());
    }
}
