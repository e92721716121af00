//! The standard `process_*` metrics (CPU time, memory, file descriptors, threads, start time),
//! read from `/proc/self` when scraped. `prometheus-client` has none of its own. A value that
//! cannot be read is left out, not reported as zero.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use std::sync::OnceLock;

/// What `/proc/self/stat` tells.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stat {
    /// User and system CPU time, in clock ticks.
    cpu_ticks: u64,
    /// When the process started, in clock ticks after boot.
    start_ticks: u64,
}

/// What `/proc/self/status` tells.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Status {
    resident_bytes: Option<u64>,
    virtual_bytes: Option<u64>,
    threads: Option<u64>,
}

/// Reads `/proc/self/stat`. The command name, in parentheses, may itself hold spaces and
/// parentheses: fields are counted from the last `)`.
fn parse_stat(text: &str) -> Option<Stat> {
    let after_name = &text[text.rfind(')')? + 1..];
    // After the name: field 3 (state) is at index 0, so field n is at n - 3.
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    Some(Stat {
        cpu_ticks: field(14)? + field(15)?,
        start_ticks: field(22)?,
    })
}

/// Reads `/proc/self/status`, whose sizes are in kB (KiB).
fn parse_status(text: &str) -> Status {
    let mut status = Status::default();
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let number = || value.split_whitespace().next()?.parse::<u64>().ok();
        match key {
            "VmRSS" => status.resident_bytes = number().map(|kb| kb * 1024),
            "VmSize" => status.virtual_bytes = number().map(|kb| kb * 1024),
            "Threads" => status.threads = number(),
            _ => {}
        }
    }
    status
}

/// The boot time, in seconds since the Unix epoch, from `/proc/stat`.
fn parse_boot_time(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|line| line.strip_prefix("btime "))
        .and_then(|value| value.trim().parse().ok())
}

/// The soft limit on open files, from `/proc/self/limits`; `None` when unlimited.
fn parse_max_fds(text: &str) -> Option<u64> {
    let line = text
        .lines()
        .find_map(|line| line.strip_prefix("Max open files"))?;
    line.split_whitespace().next()?.parse().ok()
}

fn read(path: &str) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

/// Open file descriptors: the entries of `/proc/self/fd`, less the one listing them.
fn open_fds() -> Option<u64> {
    let entries = std::fs::read_dir("/proc/self/fd").ok()?;
    Some((entries.count() as u64).saturating_sub(1))
}

fn clock_ticks_per_second() -> f64 {
    rustix::param::clock_ticks_per_second() as f64
}

/// When the process started, in seconds since the Unix epoch; it never changes.
fn start_time() -> Option<f64> {
    static START: OnceLock<Option<f64>> = OnceLock::new();
    *START.get_or_init(|| {
        let boot = parse_boot_time(&read("/proc/stat")?)?;
        let stat = parse_stat(&read("/proc/self/stat")?)?;
        Some(boot as f64 + stat.start_ticks as f64 / clock_ticks_per_second())
    })
}

/// The collector of the `process_*` families.
#[derive(Debug, Default)]
pub struct Process;

impl Collector for Process {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let stat = read("/proc/self/stat").as_deref().and_then(parse_stat);
        let status = read("/proc/self/status")
            .as_deref()
            .map(parse_status)
            .unwrap_or_default();
        if let Some(stat) = stat {
            let seconds = stat.cpu_ticks as f64 / clock_ticks_per_second();
            ConstCounter::new(seconds).encode(encoder.encode_descriptor(
                "process_cpu_seconds",
                "User and system CPU time spent, in seconds.",
                None,
                MetricType::Counter,
            )?)?;
        }
        let gauges = [
            (
                "process_resident_memory_bytes",
                "Resident memory size, in bytes.",
                status.resident_bytes,
            ),
            (
                "process_virtual_memory_bytes",
                "Virtual memory size, in bytes (guard instances reserve address space, not memory).",
                status.virtual_bytes,
            ),
            ("process_open_fds", "Open file descriptors.", open_fds()),
            (
                "process_max_fds",
                "The limit on open file descriptors.",
                read("/proc/self/limits").as_deref().and_then(parse_max_fds),
            ),
            (
                "process_threads",
                "Operating system threads.",
                status.threads,
            ),
        ];
        for (name, help, value) in gauges {
            if let Some(value) = value {
                let value = i64::try_from(value).unwrap_or(i64::MAX);
                ConstGauge::new(value).encode(encoder.encode_descriptor(
                    name,
                    help,
                    None,
                    MetricType::Gauge,
                )?)?;
            }
        }
        if let Some(start) = start_time() {
            ConstGauge::new(start).encode(encoder.encode_descriptor(
                "process_start_time_seconds",
                "Start time of the process since the Unix epoch, in seconds.",
                None,
                MetricType::Gauge,
            )?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_command_name() {
        let text = "4242 (vigil (worker) 1) S 1 4242 4242 0 -1 4194560 2011 0 0 0 \
                    150 25 0 0 20 0 9 0 8123 52428800 3000 18446744073709551615 1 1 0 0 0 0 0 \
                    4096 17610 0 0 0 17 1 0 0 0 0 0\n";
        assert_eq!(
            parse_stat(text),
            Some(Stat {
                cpu_ticks: 175,
                start_ticks: 8123
            })
        );
        assert_eq!(parse_stat("4242 (cut short) S 1"), None);
        assert_eq!(parse_stat(""), None);
    }

    #[test]
    fn status_sizes_are_kibibytes() {
        let text =
            "Name:\tvigil\nVmPeak:\t  900000 kB\nVmSize:\t  819200 kB\nVmRSS:\t   20480 kB\n\
                    Threads:\t9\nSigQ:\t0/63476\n";
        assert_eq!(
            parse_status(text),
            Status {
                resident_bytes: Some(20480 * 1024),
                virtual_bytes: Some(819200 * 1024),
                threads: Some(9),
            }
        );
        assert_eq!(parse_status("Name:\tvigil\n"), Status::default());
    }

    #[test]
    fn boot_time_and_the_open_files_limit_are_found_by_name() {
        assert_eq!(
            parse_boot_time("cpu  1 2 3\nintr 5\nbtime 1700000000\nprocesses 9\n"),
            Some(1_700_000_000)
        );
        assert_eq!(parse_boot_time("cpu 1\n"), None);
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                      Max cpu time              unlimited            unlimited            seconds   \n\
                      Max open files            1024                 524288               files     \n";
        assert_eq!(parse_max_fds(limits), Some(1024));
        let unlimited =
            "Max open files            unlimited            unlimited            files     \n";
        assert_eq!(parse_max_fds(unlimited), None);
    }

    #[test]
    fn this_process_reads_as_alive() {
        let stat = parse_stat(&read("/proc/self/stat").unwrap()).unwrap();
        assert!(stat.start_ticks > 0);
        let status = parse_status(&read("/proc/self/status").unwrap());
        assert!(status.resident_bytes.unwrap() > 0 && status.threads.unwrap() >= 1);
        // Other tests open files meanwhile: only a lower bound holds.
        let file = std::fs::File::open("/proc/self/status").unwrap();
        assert!(open_fds().unwrap() >= 1);
        drop(file);
        let started = start_time().unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        assert!(
            started <= now + 1.0 && started > now - 86_400.0 * 365.0,
            "{started}"
        );
    }
}
