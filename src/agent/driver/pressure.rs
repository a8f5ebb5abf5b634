//! Whether the host is short of memory: less than a tenth of it available
//! (`MemAvailable` in `/proc/meminfo`). Autoscaled pools then keep their
//! minimum, so warm capacity shrinks before anything running is hurt.

/// The share of memory below which the host counts as short.
const SHORT_BELOW: f64 = 0.10;

/// Whether `/proc/meminfo` says memory is short; `false` when it cannot be
/// read (no decision rests on a guess).
pub fn memory_short() -> bool {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| available_share(&text))
        .is_some_and(|share| share < SHORT_BELOW)
}

/// `MemAvailable / MemTotal` from the text of `/proc/meminfo`. Pure.
pub fn available_share(meminfo: &str) -> Option<f64> {
    let (total, available) = (
        kib_field(meminfo, "MemTotal")?,
        kib_field(meminfo, "MemAvailable")?,
    );
    (total > 0).then(|| available as f64 / total as f64)
}

/// A `Key: N kB` field of `/proc/meminfo` or `/proc/PID/status`, in KiB.
/// Pure.
pub fn kib_field(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let rest = l.strip_prefix(key)?.strip_prefix(':')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_available_share_comes_from_meminfo() {
        let text = "MemTotal:       24000000 kB\nMemFree:  100 kB\nMemAvailable:    1200000 kB\n";
        assert_eq!(available_share(text), Some(0.05));
        assert_eq!(
            available_share("MemTotal: 0 kB\nMemAvailable: 0 kB\n"),
            None
        );
        assert_eq!(available_share("nothing"), None);
        // This host, whatever it has, gives a share.
        if let Ok(text) = std::fs::read_to_string("/proc/meminfo") {
            assert!(available_share(&text).is_some_and(|s| (0.0..=1.0).contains(&s)));
        }
    }
}
