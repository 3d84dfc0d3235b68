//! One subject under callgrind: its Envoy started under valgrind, then for each mode a warm-up and
//! two measured batches, each closed by a callgrind dump (which also zeroes the counters), and
//! last an idle period without requests.
//!
//! The idle period measures what Envoy executes per second of wall time on its own: its timers
//! and the filter's `on_tick`. Under callgrind a request takes some 50 times longer than
//! natively, so that time-driven work weighs about 50 times more per request than it does in
//! production; [`Idle`] lets the report take it out.

use super::callgrind;
use super::client::{Connection, Headers, Outcome};
use super::split::{Image, Split};
use super::Subject;
use crate::bench::envoy::Envoy;
use crate::bench::rig::{Bootstrap, Rig};
use crate::bench::Mode;
use crate::util::run_output;
use anyhow::{bail, Context};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// How long a dump may take to appear complete on disk after `callgrind_control` returns.
const DUMP_TIMEOUT: Duration = Duration::from_secs(120);
/// Lines of Envoy's log shown on failure.
const LOG_TAIL_LINES: usize = 30;

/// What to send in each mode.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Modes, in order; all run on the same Envoy.
    pub modes: Vec<Mode>,
    /// Requests before the counters are zeroed.
    pub warmup: u32,
    /// Requests per measured batch.
    pub requests: u32,
    /// Header set of every request.
    pub headers: Headers,
    /// Length of the idle period; zero skips it.
    pub idle: Duration,
}

/// One measured batch.
#[derive(Debug, Clone)]
pub struct Batch {
    /// Instructions of the whole batch (callgrind `totals:`).
    pub totals: u64,
    /// The self costs by category (sum = `self_total`).
    pub split: Split,
    /// Sum of all self costs in the dump; equals `totals` for a consistent dump.
    pub self_total: u64,
    /// Wall time the counters ran for: from the previous dump to this batch's dump.
    pub window_seconds: f64,
}

/// What Envoy executed without requests.
#[derive(Debug, Clone)]
pub struct Idle {
    /// Instructions of the idle period.
    pub totals: u64,
    /// Its wall time, dump to dump.
    pub window_seconds: f64,
}

impl Idle {
    /// Instructions per second of wall time.
    pub fn per_second(&self) -> f64 {
        if self.window_seconds > 0.0 {
            self.totals as f64 / self.window_seconds
        } else {
            0.0
        }
    }
}

/// The two batches of one mode.
#[derive(Debug, Clone)]
pub struct ModeRun {
    /// The mode.
    pub mode: Mode,
    /// Batch 1 and batch 2.
    pub batches: [Batch; 2],
}

/// Everything measured on one subject.
#[derive(Debug, Clone)]
pub struct SubjectRun {
    /// The subject.
    pub subject: Subject,
    /// One entry per mode of the plan.
    pub modes: Vec<ModeRun>,
    /// The idle period after the modes, unless the plan skips it.
    pub idle: Option<Idle>,
    /// Seconds until Envoy was ready under valgrind.
    pub startup_seconds: f64,
    /// Seconds for the whole subject.
    pub seconds: f64,
}

/// Start `subject`'s Envoy under `rig` (whose wrapper is callgrind), run `plan` on it and kill it.
pub fn measure(
    rig: &Rig,
    subject: &Subject,
    bootstrap: &Bootstrap,
    plan: &Plan,
) -> anyhow::Result<SubjectRun> {
    let started = Instant::now();
    let tag = subject.tag();
    let envoy = rig
        .start_bootstrap(bootstrap, 1, &tag)
        .with_context(|| format!("start Envoy under callgrind for {}", subject.name()))?;
    if let Subject::Variant(variant) = subject {
        if variant.uses_agent() {
            rig.wait_config_applied(&envoy, *variant, 1)?;
        }
    }
    let startup_seconds = started.elapsed().as_secs_f64();
    println!(
        "[{}] ready under callgrind after {startup_seconds:.0} s (pid {})",
        subject.name(),
        envoy.pid()
    );
    let measured = measure_modes(rig, &envoy, &tag, subject, plan).map_err(|e| {
        e.context(format!(
            "{} failed; Envoy log tail ({}):\n{}\n",
            subject.name(),
            rig.run_dir.join(format!("{tag}.log")).display(),
            envoy.log_tail(LOG_TAIL_LINES)
        ))
    })?;
    drop(envoy);
    let (modes, idle) = measured;
    Ok(SubjectRun {
        subject: subject.clone(),
        modes,
        idle,
        startup_seconds,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Every mode of the plan on the running Envoy, then the idle period.
fn measure_modes(
    rig: &Rig,
    envoy: &Envoy,
    tag: &str,
    subject: &Subject,
    plan: &Plan,
) -> anyhow::Result<(Vec<ModeRun>, Option<Idle>)> {
    let mut m = Measurer {
        envoy,
        image: Image::load(&rig.envoy_bin, envoy.pid())?,
        dumps: Dumps::new(&rig.run_dir, envoy.pid()),
        extra: plan.headers.extra(),
        tag,
        name: subject.name(),
        plan,
    };
    let mut runs = Vec::new();
    for &mode in &plan.modes {
        runs.push(m.mode(mode)?);
    }
    let idle = m.idle()?;
    m.dumps.clean_up();
    Ok((runs, idle))
}

/// The measuring of one running Envoy.
struct Measurer<'a> {
    envoy: &'a Envoy,
    image: Image,
    dumps: Dumps,
    extra: Vec<(&'static str, String)>,
    tag: &'a str,
    name: String,
    plan: &'a Plan,
}

impl Measurer<'_> {
    /// Warm-up and two batches of `mode` on a new connection.
    fn mode(&mut self, mode: Mode) -> anyhow::Result<ModeRun> {
        let mut conn = Connection::open(self.envoy.listener())?;
        let warmup = conn.batch(
            mode.path(),
            &format!("{}-w", mode.name()),
            &self.extra,
            self.plan.warmup,
        )?;
        expect_all_ok(&warmup, "warm-up")?;
        self.dumps
            .take(&format!("{}.{}.warmup", self.tag, mode.name()))?;
        let first = self.batch(&mut conn, mode, 1)?;
        let second = self.batch(&mut conn, mode, 2)?;
        Ok(ModeRun {
            mode,
            batches: [first, second],
        })
    }

    /// One measured batch, ended by a dump.
    fn batch(&mut self, conn: &mut Connection, mode: Mode, number: u32) -> anyhow::Result<Batch> {
        let requests = self.plan.requests;
        let key_prefix = format!("{}-b{number}", mode.name());
        let outcome = conn.batch(mode.path(), &key_prefix, &self.extra, requests)?;
        expect_all_ok(&outcome, &format!("batch {number}"))?;
        let (file, window_seconds) =
            self.dumps
                .take(&format!("{}.{}.batch{number}", self.tag, mode.name()))?;
        let profile = callgrind::read(&file)?;
        println!(
            "[{}] {} batch {number}: {:.0} instructions/request ({window_seconds:.1} s)",
            self.name,
            mode.name(),
            profile.totals as f64 / f64::from(requests)
        );
        Ok(Batch {
            totals: profile.totals,
            split: self.image.split(&profile),
            self_total: profile.self_total(),
            window_seconds,
        })
    }

    /// The idle period, unless the plan skips it.
    fn idle(&mut self) -> anyhow::Result<Option<Idle>> {
        if self.plan.idle.is_zero() {
            return Ok(None);
        }
        std::thread::sleep(self.plan.idle);
        let (file, window_seconds) = self.dumps.take(&format!("{}.idle", self.tag))?;
        let idle = Idle {
            totals: callgrind::read(&file)?.totals,
            window_seconds,
        };
        println!(
            "[{}] idle: {:.0} instructions/s over {window_seconds:.1} s",
            self.name,
            idle.per_second()
        );
        Ok(Some(idle))
    }
}

/// Fail unless every response of a batch was 200.
fn expect_all_ok(outcome: &Outcome, what: &str) -> anyhow::Result<()> {
    if let Some(bad) = &outcome.first_bad {
        bail!(
            "{what}: {} of {} responses were not 200 (first: {} {:?})",
            outcome.bad,
            outcome.bad + outcome.ok,
            bad.status,
            bad.body
        );
    }
    Ok(())
}

/// The dumps of one callgrind process: `callgrind.out.<pid>.<n>` (valgrind's `%p` in
/// `--callgrind-out-file`), each renamed after it is written.
struct Dumps {
    base: PathBuf,
    dir: PathBuf,
    pid: u32,
    taken: u32,
    /// When the previous dump zeroed the counters (as near as can be told: when it returned).
    last: Instant,
}

impl Dumps {
    fn new(dir: &Path, pid: u32) -> Dumps {
        Dumps {
            base: dir.join(format!("callgrind.out.{pid}")),
            dir: dir.to_path_buf(),
            pid,
            taken: 0,
            last: Instant::now(),
        }
    }

    /// Dump (zeroing the counters), wait until the file is complete, and rename it
    /// `<name>.callgrind`; also the seconds since the previous dump.
    fn take(&mut self, name: &str) -> anyhow::Result<(PathBuf, f64)> {
        run_output(
            Command::new("callgrind_control")
                .arg(format!("--dump={name}"))
                .arg(self.pid.to_string()),
        )?;
        let now = Instant::now();
        let window_seconds = now.duration_since(self.last).as_secs_f64();
        self.last = now;
        self.taken += 1;
        let written = PathBuf::from(format!("{}.{}", self.base.display(), self.taken));
        wait_complete(&written)?;
        let kept = self.dir.join(format!("{name}.callgrind"));
        std::fs::rename(&written, &kept)
            .with_context(|| format!("rename {} to {}", written.display(), kept.display()))?;
        Ok((kept, window_seconds))
    }

    /// Remove the empty file callgrind creates at start for its final dump (never written: Envoy is killed).
    fn clean_up(&self) {
        if std::fs::metadata(&self.base).is_ok_and(|m| m.len() == 0) {
            let _ = std::fs::remove_file(&self.base);
        }
    }
}

/// Wait until `path` exists and ends with its `totals:` line.
fn wait_complete(path: &Path) -> anyhow::Result<()> {
    let deadline = Instant::now() + DUMP_TIMEOUT;
    loop {
        if let Ok(text) = std::fs::read_to_string(path) {
            if text.lines().any(|l| l.starts_with("totals:")) {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            bail!(
                "callgrind dump {} not complete after {DUMP_TIMEOUT:?}",
                path.display()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
