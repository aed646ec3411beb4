//! Where the monitor's CPU goes (`--stats-after`): each thread's CPU time from
//! `/proc/self/task`, grouped by thread name (the UI thread, the follower's thread, Mesa's
//! llvmpipe rasterizer threads), and, on the UI thread, the time spent in the frame's own
//! parts: taking the follower's records into the model (per-record work) and laying out
//! the widgets. What the UI thread spends besides is eframe's end of frame: tessellation,
//! the GL calls and llvmpipe's work that runs on the calling thread.

use std::time::Duration;

/// Time spent in the frame's parts, on the UI thread.
#[derive(Clone, Copy, Debug, Default)]
pub struct FrameTimes {
    /// Taking the inbox and ingesting it into the model.
    pub ingest: Duration,
    /// Laying out the panels and the table (egui's immediate-mode calls).
    pub layout: Duration,
}

/// CPU seconds per thread group of this process: `(group, seconds)`, largest first. A
/// group is a thread's name with a trailing `-N` or digits dropped (`llvmpipe-0` and
/// `llvmpipe-1` are `llvmpipe`).
pub fn cpu_by_thread() -> Vec<(String, f64)> {
    let mut groups: Vec<(String, f64)> = Vec::new();
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return groups;
    };
    for t in tasks.flatten() {
        let Ok(stat) = std::fs::read_to_string(t.path().join("stat")) else {
            continue;
        };
        let Some((name, secs)) = parse_stat(&stat) else {
            continue;
        };
        match groups.iter_mut().find(|(g, _)| *g == name) {
            Some((_, s)) => *s += secs,
            None => groups.push((name, secs)),
        }
    }
    groups.sort_by(|a, b| b.1.total_cmp(&a.1));
    groups
}

/// The unit of `/proc`'s CPU times: the kernel reports them in `USER_HZ`, 100 a second on
/// every architecture Linux runs on today, whatever its internal tick rate.
const USER_HZ: f64 = 100.0;

/// A thread's group name and CPU seconds (user + system) from its `stat` line.
fn parse_stat(stat: &str) -> Option<(String, f64)> {
    let open = stat.find('(')?;
    let (comm, rest) = stat[open + 1..].rsplit_once(')')?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 (utime, stime) counted from the pid; `rest` starts at field 3.
    let ticks = |i: usize| f.get(i - 3)?.parse::<f64>().ok();
    let secs = (ticks(14)? + ticks(15)?) / USER_HZ;
    let group = comm
        .trim_end_matches(|c: char| c.is_ascii_digit())
        .trim_end_matches(['-', ':', ' ']);
    let group = if group.is_empty() { comm } else { group };
    Some((group.to_string(), secs))
}

/// The profile as one line: each thread group's share of one core over `secs`, and the
/// UI thread's frame parts.
pub fn line(times: &FrameTimes, secs: f64) -> String {
    let pct = |s: f64| s * 100.0 / secs.max(1e-9);
    let threads: Vec<String> = cpu_by_thread()
        .iter()
        .filter(|(_, s)| *s > 0.0)
        .map(|(g, s)| format!("{g} {s:.1} s ({:.0}%)", pct(*s)))
        .collect();
    format!(
        "CPU by thread: {}; on the UI thread, ingest {:.1} s ({:.0}%), layout {:.1} s ({:.0}%)",
        threads.join(", "),
        times.ingest.as_secs_f64(),
        pct(times.ingest.as_secs_f64()),
        times.layout.as_secs_f64(),
        pct(times.layout.as_secs_f64()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_group_numbered_threads_and_names_with_parens() {
        let line =
            |comm: &str| format!("12 ({comm}) S 1 1 1 0 -1 4194304 10 0 0 0 200 100 0 0 20 0 9 0");
        assert_eq!(
            parse_stat(&line("llvmpipe-3")),
            Some(("llvmpipe".into(), 3.0))
        );
        assert_eq!(
            parse_stat(&line("firehose-gui")),
            Some(("firehose-gui".into(), 3.0))
        );
        assert_eq!(parse_stat(&line("a (b) c")), Some(("a (b) c".into(), 3.0)));
        assert_eq!(parse_stat(&line("123")), Some(("123".into(), 3.0)));
        assert!(parse_stat("garbage").is_none());
        // This process has at least the test's thread.
        assert!(!cpu_by_thread().is_empty());
    }
}
