//! Where each bench process runs: CPU pinning and scheduling priority.

use anyhow::{bail, Context};
use std::ffi::{OsStr, OsString};
use std::process::{Command, Stdio};

/// Scheduling priority of Envoy, wrk, the bench's in-process upstream and the knhk agent.
///
/// Measured on the shared 2-CPU machine of `docs/benchmarks.md`: with a compiler running at
/// nice 10 on Envoy's CPU, Envoy at nice -10 still got only ~50 % of that CPU (it sleeps and
/// wakes thousands of times a second, and a waking task waits for the running one's slice),
/// while `SCHED_RR` priority 1 gave it 97 %. Real-time throttling (`sched_rt_runtime_us`,
/// 95 % by default) still leaves other work a share of the pinned CPUs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Priority {
    /// `SCHED_RR` priority 1 (`chrt -r 1`): a waking Envoy preempts ordinary work at once.
    Rt,
    /// `nice -n -10`: ahead of ordinary work, but a waking task may wait out a running task's slice.
    Nice,
    /// The caller's own priority.
    None,
}

impl Priority {
    /// The wrapper command line that runs a program at this priority.
    fn wrapper(self) -> Vec<OsString> {
        match self {
            Priority::Rt => vec!["chrt".into(), "-r".into(), "1".into()],
            Priority::Nice => vec!["nice".into(), "-n".into(), "-10".into()],
            Priority::None => Vec::new(),
        }
    }

    /// The command that moves process (main thread) `pid` to this priority.
    fn apply_to(self, pid: &str) -> Option<Command> {
        let (program, args): (&str, [&str; 4]) = match self {
            Priority::Rt => ("chrt", ["-r", "-p", "1", pid]),
            Priority::Nice => ("renice", ["-n", "-10", "-p", pid]),
            Priority::None => return None,
        };
        let mut command = Command::new(program);
        command.args(args);
        Some(command)
    }

    /// Human-readable form for the header line.
    pub fn describe(self) -> &'static str {
        match self {
            Priority::Rt => "Envoy, wrk, upstream and agent at SCHED_RR 1",
            Priority::Nice => "Envoy, wrk, upstream and agent at nice -10",
            Priority::None => "default priority",
        }
    }

    /// Name used in the JSON record.
    pub fn name(self) -> &'static str {
        match self {
            Priority::Rt => "rt",
            Priority::Nice => "nice",
            Priority::None => "none",
        }
    }
}

/// CPU placement: Envoy alone on one CPU; wrk, the upstream and the knhk agent off it (all on
/// one other CPU with two CPUs, spread over the others with more).
///
/// The agent is never on Envoy's CPU: the ratios measure Envoy's throughput, and the agent's
/// work (receipt ingest, sealing, long-poll answers) is what a sidecar costs beside Envoy, not
/// inside it. Envoy's own side of receipts and polling (buffering, `dispatch_http_call`s) runs
/// on Envoy's CPU and is measured.
#[derive(Debug, Clone, Copy)]
pub struct Cpus {
    /// CPU of the Envoy under test.
    pub envoy: Option<usize>,
    /// CPU of wrk.
    pub load: Option<usize>,
    /// CPU of the in-process upstream (and the bench's own threads).
    pub upstream: Option<usize>,
    /// CPU of the knhk agent (variant knhk-agent).
    pub agent: Option<usize>,
}

impl Cpus {
    /// Plan placement for `cpus` online CPUs; everything unpinned without `taskset` or with one CPU.
    pub fn plan(cpus: usize, taskset: bool) -> Cpus {
        match (taskset, cpus) {
            (false, _) | (true, 0..=1) => Cpus {
                envoy: None,
                load: None,
                upstream: None,
                agent: None,
            },
            (true, 2) => Cpus {
                envoy: Some(0),
                load: Some(1),
                upstream: Some(1),
                agent: Some(1),
            },
            (true, 3) => Cpus {
                envoy: Some(0),
                load: Some(1),
                upstream: Some(2),
                agent: Some(2),
            },
            (true, _) => Cpus {
                envoy: Some(0),
                load: Some(1),
                upstream: Some(2),
                agent: Some(3),
            },
        }
    }

    /// `CPU n` or `unpinned`.
    pub fn describe(cpu: Option<usize>) -> String {
        cpu.map_or_else(|| "unpinned".to_string(), |c| format!("CPU {c}"))
    }
}

/// A command running `program`, pinned to `cpu` with `taskset` when given, at `priority`.
///
/// The wrappers (`taskset`, `chrt`, `nice`) `exec` the program, so the child's pid is the program's pid.
pub fn placed(program: &OsStr, cpu: Option<usize>, priority: Priority) -> Command {
    let mut argv: Vec<OsString> = Vec::new();
    if let Some(cpu) = cpu {
        argv.extend(["taskset".into(), "-c".into(), cpu.to_string().into()]);
    }
    argv.extend(priority.wrapper());
    argv.push(program.to_os_string());
    let mut command = Command::new(&argv[0]);
    command.args(&argv[1..]);
    command
}

/// Pin the calling (main) thread to `cpu` and move it to `priority`; threads it spawns afterwards inherit both.
pub fn place_self(cpu: Option<usize>, priority: Priority) -> anyhow::Result<()> {
    let pid = std::process::id().to_string();
    let mut commands: Vec<Command> = Vec::new();
    if let Some(cpu) = cpu {
        let mut c = Command::new("taskset");
        c.args(["-p", "-c", &cpu.to_string(), &pid]);
        commands.push(c);
    }
    commands.extend(priority.apply_to(&pid));
    for mut command in commands {
        let status = command
            .stdout(Stdio::null())
            .status()
            .with_context(|| format!("run {:?}", command.get_program()))?;
        if !status.success() {
            bail!(
                "{:?} on the bench process failed with {status}",
                command.get_program()
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two CPUs: Envoy alone on CPU 0, load, upstream and agent share CPU 1; more CPUs spread
    /// them, never onto Envoy's; no taskset: nothing pinned.
    #[test]
    fn cpu_plans() {
        let two = Cpus::plan(2, true);
        assert_eq!(
            (two.envoy, two.load, two.upstream, two.agent),
            (Some(0), Some(1), Some(1), Some(1))
        );
        let three = Cpus::plan(3, true);
        assert_eq!(
            (three.envoy, three.load, three.upstream, three.agent),
            (Some(0), Some(1), Some(2), Some(2))
        );
        let four = Cpus::plan(4, true);
        assert_eq!(
            (four.envoy, four.load, four.upstream, four.agent),
            (Some(0), Some(1), Some(2), Some(3))
        );
        let bare = Cpus::plan(8, false);
        assert_eq!(
            (bare.envoy, bare.load, bare.upstream, bare.agent),
            (None, None, None, None)
        );
    }

    /// Pinning and priority wrap the program in `taskset` then `chrt` or `nice`, which all exec it.
    #[test]
    fn placed_wraps_in_order() {
        let c = placed(OsStr::new("wrk"), Some(1), Priority::Rt);
        let args: Vec<&OsStr> = c.get_args().collect();
        assert_eq!(c.get_program(), "taskset");
        assert_eq!(args, ["-c", "1", "chrt", "-r", "1", "wrk"]);
        let c = placed(OsStr::new("wrk"), None, Priority::Nice);
        let args: Vec<&OsStr> = c.get_args().collect();
        assert_eq!(c.get_program(), "nice");
        assert_eq!(args, ["-n", "-10", "wrk"]);
        assert_eq!(
            placed(OsStr::new("wrk"), None, Priority::None).get_program(),
            "wrk"
        );
    }
}
