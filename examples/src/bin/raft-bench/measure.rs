//! Measuring: latencies, process CPU time and peak memory, and the progress bar.

use std::time::Duration;

/// Latency percentiles of a run.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub(crate) struct Latency {
    pub(crate) mean_us: f64,
    pub(crate) p50_us: f64,
    pub(crate) p99_us: f64,
    pub(crate) max_us: f64,
}

impl Latency {
    /// Summarizes latencies given in nanoseconds.
    pub(crate) fn of(mut nanos: Vec<u64>) -> Latency {
        if nanos.is_empty() {
            return Latency::default();
        }
        nanos.sort_unstable();
        let at = |q: f64| nanos[((nanos.len() - 1) as f64 * q).round() as usize] as f64 / 1000.0;
        Latency {
            mean_us: nanos.iter().sum::<u64>() as f64 / nanos.len() as f64 / 1000.0,
            p50_us: at(0.50),
            p99_us: at(0.99),
            max_us: at(1.0),
        }
    }
}

/// What handing a job to a blocking thread costs, as the file store hands it each append
/// (`blocking::unblock`, which `smol::unblock` is): `rounds` round trips of an empty job
/// from a task of `runtime`, each after 100 µs without one (a durable write at one
/// client appends every 200-300 µs, so the blocking thread is asleep when the job
/// comes). Returns the round trip, and the part of it before the job started.
pub(crate) async fn blocking_handoff<Rt: raft_traits::Runtime>(
    runtime: &Rt,
    rounds: usize,
) -> Result<(Latency, Latency), raft_traits::JoinError> {
    let (round_trips, to_job) = runtime
        .spawn(async move {
            const WARM_UP: usize = 20;
            let mut round_trips = Vec::with_capacity(rounds);
            let mut to_job = Vec::with_capacity(rounds);
            for round in 0..rounds + WARM_UP {
                // Busy, as a pool thread is between two writes: the job needs another.
                let idle = std::time::Instant::now();
                while idle.elapsed() < Duration::from_micros(100) {
                    std::hint::spin_loop();
                }
                let start = std::time::Instant::now();
                let began = smol::unblock(std::time::Instant::now).await;
                if round >= WARM_UP {
                    round_trips.push(nanos(start.elapsed()));
                    to_job.push(nanos(began.saturating_duration_since(start)));
                }
            }
            (round_trips, to_job)
        })
        .await?;
    Ok((Latency::of(round_trips), Latency::of(to_job)))
}

/// `took` in nanoseconds, as [`Latency::of`] takes them (saturating, after 584 years).
pub(crate) fn nanos(took: Duration) -> u64 {
    u64::try_from(took.as_nanos()).unwrap_or(u64::MAX)
}

/// User plus system CPU time of this process so far, from `/proc/self/stat`.
pub(crate) fn cpu_time() -> Duration {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return Duration::ZERO;
    };
    // Fields after the command name (which is in parentheses and may hold spaces).
    let Some(rest) = stat.rfind(')').map(|at| &stat[at + 2..]) else {
        return Duration::ZERO;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 after the name.
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i).and_then(|f| f.parse::<u64>().ok()))
        .sum();
    // The kernel reports clock ticks; USER_HZ is 100 on Linux.
    Duration::from_millis(ticks * 10)
}

/// The peak resident set size of this process, in MiB, from `/proc/self/status`.
pub(crate) fn peak_rss_mib() -> f64 {
    status_kib("VmHWM:") as f64 / 1024.0
}

/// The current resident set size of this process, in MiB.
pub(crate) fn rss_mib() -> f64 {
    status_kib("VmRSS:") as f64 / 1024.0
}

/// A field of /proc/self/status counted in KiB (`VmRSS:`, `VmHWM:`), 0 if unknown.
pub(crate) fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|line| line.starts_with(field))
                .and_then(|line| line.split_whitespace().nth(1))
                .and_then(|kib| kib.parse().ok())
        })
        .unwrap_or(0)
}

/// A progress bar on stderr, hidden when stderr is not a terminal.
pub(crate) use raft_examples::progress::{Goal, Progress};

/// The disk's own latency for what a durable write needs: `writers` threads at once
/// (the nodes of a cluster sharing one disk) each append `bytes` to a file of its own
/// in `dir` and `fdatasync` it, `rounds` times, in step. The floor of a durable write is
/// one such round, so the durable scenario prints it beside its own latency.
///
/// `in_place`: the file is filled with zeros first and the records overwrite them, as
/// the file store writes its log (room allocated ahead), so that a sync writes the data
/// without the inode; otherwise every append grows the file.
pub(crate) fn disk_fsync(
    dir: &std::path::Path,
    writers: usize,
    rounds: usize,
    bytes: usize,
    in_place: bool,
) -> std::io::Result<Latency> {
    use std::io::Write as _;
    let barrier = std::sync::Barrier::new(writers);
    let record = vec![0x5a_u8; bytes];
    let per_writer: Vec<std::io::Result<Vec<u64>>> = std::thread::scope(|scope| {
        let threads: Vec<_> = (0..writers)
            .map(|writer| {
                let (barrier, record) = (&barrier, &record);
                scope.spawn(move || -> std::io::Result<Vec<u64>> {
                    let path = dir.join(format!("fsync-probe-{writer}"));
                    // The first rounds create the file and its first blocks: not timed.
                    const WARM_UP: usize = 20;
                    let mut file = std::fs::OpenOptions::new()
                        .create(true)
                        .truncate(true)
                        .write(true)
                        .open(&path)?;
                    if in_place {
                        file.write_all(&vec![0u8; (rounds + WARM_UP) * record.len()])?;
                        file.sync_all()?;
                        std::io::Seek::rewind(&mut file)?;
                    }
                    let mut nanos = Vec::with_capacity(rounds);
                    for round in 0..rounds + WARM_UP {
                        barrier.wait();
                        let start = std::time::Instant::now();
                        file.write_all(record)?;
                        file.sync_data()?;
                        if round >= WARM_UP {
                            nanos.push(self::nanos(start.elapsed()));
                        }
                    }
                    drop(file);
                    std::fs::remove_file(&path)?;
                    Ok(nanos)
                })
            })
            .collect();
        threads
            .into_iter()
            .map(|thread| {
                thread
                    .join()
                    .unwrap_or_else(|_| Err(std::io::Error::other("fsync probe thread panicked")))
            })
            .collect()
    });
    let mut all = Vec::with_capacity(writers * rounds);
    for nanos in per_writer {
        all.extend(nanos?);
    }
    Ok(Latency::of(all))
}
