//! Where the SQLite writer runs.
//!
//! Every statement of a write is a hand-off between the writer thread and sqlx's thread for the
//! write connection, and a request's read is one between a runtime worker and a read
//! connection's thread. A hand-off to a thread on another CPU wakes that CPU (an
//! inter-processor interrupt, costly in a VM); on the same CPU it is a plain context switch.
//! So the writer and its connection's thread share one CPU, and `nervix serve` keeps the rest
//! of the server (runtime workers, read connections) on the other CPUs, where that work does
//! not delay the writer. Measured on the 2-vCPU machine: docs/PERFORMANCE.md.

use std::str::FromStr;

/// The CPU of the SQLite writer (`--sqlite-writer-cpu`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum WriterCpu {
    /// The last CPU this process may run on; nothing is pinned when it may run on only one.
    #[default]
    Auto,
    /// Leave every thread to the OS scheduler.
    Off,
    /// This CPU index (as `taskset` numbers them).
    Cpu(usize),
}

impl FromStr for WriterCpu {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(WriterCpu::Auto),
            "off" => Ok(WriterCpu::Off),
            n => n
                .parse()
                .map(WriterCpu::Cpu)
                .map_err(|_| format!("expected auto, off or a CPU index, got {n:?}")),
        }
    }
}

/// The writer's CPU for `choice`, given the CPUs the calling thread may use.
fn target(choice: WriterCpu, allowed: &[usize]) -> Option<usize> {
    match choice {
        WriterCpu::Off => None,
        WriterCpu::Auto if allowed.len() < 2 => None,
        WriterCpu::Auto => allowed.last().copied(),
        WriterCpu::Cpu(n) => Some(n),
    }
}

/// A CPU set aside for the writer by [`reserve_for_writer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reserved {
    pub writer: usize,
    /// How many CPUs the rest of the process keeps.
    pub others: usize,
}

/// Sets a CPU aside for the writer: the calling thread, and every thread started from it from
/// now on (the async runtime's workers, the read connections' threads), stay off it. Call it
/// on the main thread before building the runtime, and give the store
/// `WriterCpu::Cpu(reserved.writer)`. `None` when nothing was reserved: `choice` is `Off`, the
/// process may use only one CPU, or the OS refused.
pub fn reserve_for_writer(choice: WriterCpu) -> Option<Reserved> {
    let allowed = affinity::allowed();
    let writer = target(choice, &allowed)?;
    let others: Vec<usize> = allowed.into_iter().filter(|&c| c != writer).collect();
    if others.is_empty() || !affinity::confine(&others) {
        return None;
    }
    Some(Reserved {
        writer,
        others: others.len(),
    })
}

/// Pins the calling thread (the writer's) as `choice` says. Failing to is not an error: the
/// writer works anywhere, only slower.
pub(crate) fn pin_writer(choice: WriterCpu) {
    let Some(cpu) = target(choice, &affinity::allowed()) else {
        return;
    };
    if affinity::confine(&[cpu]) {
        tracing::debug!(cpu, "SQLite writer pinned");
    } else {
        tracing::warn!(
            cpu,
            "could not pin the SQLite writer to its CPU; it runs unpinned"
        );
    }
}

#[cfg(target_os = "linux")]
mod affinity {
    use nix::sched::{sched_getaffinity, sched_setaffinity, CpuSet};
    use nix::unistd::Pid;

    /// The CPUs the calling thread may run on, ascending.
    pub(super) fn allowed() -> Vec<usize> {
        match sched_getaffinity(Pid::from_raw(0)) {
            Ok(set) => (0..CpuSet::count())
                .filter(|&c| set.is_set(c).unwrap_or(false))
                .collect(),
            Err(_) => Vec::new(),
        }
    }

    /// Restricts the calling thread to `cpus`.
    pub(super) fn confine(cpus: &[usize]) -> bool {
        let mut set = CpuSet::new();
        cpus.iter().all(|&c| set.set(c).is_ok())
            && sched_setaffinity(Pid::from_raw(0), &set).is_ok()
    }
}

#[cfg(not(target_os = "linux"))]
mod affinity {
    pub(super) fn allowed() -> Vec<usize> {
        Vec::new()
    }

    pub(super) fn confine(_cpus: &[usize]) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_flag() {
        assert_eq!("auto".parse(), Ok(WriterCpu::Auto));
        assert_eq!("off".parse(), Ok(WriterCpu::Off));
        assert_eq!("3".parse(), Ok(WriterCpu::Cpu(3)));
        assert!("last".parse::<WriterCpu>().is_err());
        assert!("-1".parse::<WriterCpu>().is_err());
    }

    #[test]
    fn auto_takes_the_last_cpu_and_only_when_there_is_a_choice() {
        assert_eq!(target(WriterCpu::Auto, &[0, 1, 2, 3]), Some(3));
        assert_eq!(target(WriterCpu::Auto, &[2, 5]), Some(5));
        assert_eq!(target(WriterCpu::Auto, &[0]), None);
        assert_eq!(target(WriterCpu::Auto, &[]), None);
        assert_eq!(target(WriterCpu::Off, &[0, 1]), None);
        assert_eq!(target(WriterCpu::Cpu(0), &[0, 1]), Some(0));
    }

    /// Runs on a thread of its own: affinity is per thread, and the test harness's threads
    /// must keep theirs.
    #[cfg(target_os = "linux")]
    #[test]
    fn reserving_keeps_the_calling_thread_off_the_writer_cpu() {
        std::thread::spawn(|| {
            let before = affinity::allowed();
            match reserve_for_writer(WriterCpu::Auto) {
                Some(reserved) => {
                    let now = affinity::allowed();
                    assert!(!now.contains(&reserved.writer));
                    assert_eq!(now.len(), reserved.others);
                    assert_eq!(now.len() + 1, before.len());
                    // A thread started from here inherits the confinement; the writer's pin
                    // overrides it for its own thread.
                    let child = std::thread::spawn(affinity::allowed).join().ok();
                    assert_eq!(child.as_ref(), Some(&now));
                    let writer = std::thread::spawn(move || {
                        pin_writer(WriterCpu::Cpu(reserved.writer));
                        affinity::allowed()
                    })
                    .join()
                    .ok();
                    assert_eq!(writer, Some(vec![reserved.writer]));
                }
                None => assert!(before.len() < 2, "two or more CPUs but nothing reserved"),
            }
        })
        .join()
        .expect("the affinity test thread panicked");
    }
}
