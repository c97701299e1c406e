//! The fuzzing loop: seeds first, then structure-aware mutations of a pool, every input checked
//! under `catch_unwind`; the run stops at the first panic or broken invariant and says how to
//! replay it.
//!
//! Everything a run does is fixed by its seed: the time budget only decides how many cases run,
//! never which ones, so `--seed S` reaches the same failing case again on any machine.

use crate::rng::Rng;
use std::cell::{Cell, RefCell};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// What a target made of an input (both are fine; the pool keeps more of the accepted ones).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The parser accepted the input.
    Accepted,
    /// The parser refused the input with an error value.
    Rejected,
}

/// Runs one input through the code under test; `Err` names the broken invariant.
pub type Check = fn(&[u8]) -> Result<Verdict, String>;

/// One fuzz target: the check and the input grammar it is fed with.
#[derive(Clone, Copy)]
pub struct Target {
    /// Name used on the command line and in the corpus folder.
    pub name: &'static str,
    /// One line: what is fuzzed and which invariants are checked.
    pub about: &'static str,
    /// The check.
    pub check: Check,
    /// Built-in seed inputs, run first, then mutated.
    pub seeds: fn() -> Vec<Vec<u8>>,
    /// A fresh structured input.
    pub generate: fn(&mut Rng) -> Vec<u8>,
    /// A structure-aware mutation of an input.
    pub mutate: fn(&mut Rng, &[u8]) -> Vec<u8>,
    /// Longest input worth trying: what can reach the parser in Envoy (longer ones only slow
    /// the run down).
    pub max_input: usize,
}

/// Most inputs kept for mutation besides the seeds.
const POOL: usize = 512;

/// How long and from which seed a run goes.
#[derive(Debug, Clone)]
pub struct Options {
    /// The seed; the whole run follows from it.
    pub seed: u64,
    /// Stop after this many cases.
    pub max_cases: Option<u64>,
    /// Stop after this much time.
    pub max_time: Option<Duration>,
    /// `corpus/<target>/*` files under this folder are run first (regression inputs).
    pub corpus: Option<PathBuf>,
    /// Write each input here before running it (to catch what aborts the process, e.g. a
    /// stack overflow, which no hook can report).
    pub trace: Option<PathBuf>,
    /// Save a failing input here as `<target>-<seed>-<case>.bin`.
    pub failures: Option<PathBuf>,
}

/// How a run ended.
#[derive(Debug)]
pub struct Summary {
    /// The target.
    pub target: &'static str,
    /// The seed.
    pub seed: u64,
    /// Cases run.
    pub cases: u64,
    /// Cases the parser accepted.
    pub accepted: u64,
    /// Inputs in the pool at the end (seeds included).
    pub pool: usize,
    /// Wall time.
    pub elapsed: Duration,
    /// The first failure, if any (the run stopped there).
    pub failure: Option<Failure>,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "fuzz {}: seed {:#x}, {} cases ({} accepted) in {:.1} s, pool {}, {}",
            self.target,
            self.seed,
            self.cases,
            self.accepted,
            self.elapsed.as_secs_f64(),
            self.pool,
            if self.failure.is_some() {
                "FAILED"
            } else {
                "no failure"
            }
        )
    }
}

/// A panic or a broken invariant, with everything needed to reproduce it.
#[derive(Debug, Clone)]
pub struct Failure {
    /// The target.
    pub target: &'static str,
    /// The run's seed.
    pub seed: u64,
    /// The case number within the run (0-based).
    pub case: u64,
    /// Panic or invariant.
    pub panicked: bool,
    /// The panic message or the invariant that broke.
    pub message: String,
    /// The input.
    pub input: Vec<u8>,
    /// Where the input was saved, if it was.
    pub saved: Option<PathBuf>,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        const SHOWN: usize = 2048;
        let what = if self.panicked {
            "PANIC"
        } else {
            "BROKEN INVARIANT"
        };
        writeln!(
            f,
            "fuzz target `{}`: {what} at case {} of seed {:#x}",
            self.target, self.case, self.seed
        )?;
        writeln!(f, "  {}", self.message)?;
        let shown = self.input.get(..SHOWN).unwrap_or(&self.input);
        let more = if shown.len() < self.input.len() {
            "…"
        } else {
            ""
        };
        writeln!(
            f,
            "  input ({} bytes): b\"{}\"{more}",
            self.input.len(),
            shown.escape_ascii()
        )?;
        write!(f, "  hex: ")?;
        for b in shown {
            write!(f, "{b:02x}")?;
        }
        writeln!(f, "{more}")?;
        writeln!(
            f,
            "  rerun the whole case sequence: make fuzz FUZZ_TARGETS={} FUZZ_SEED={:#x}",
            self.target, self.seed
        )?;
        if let Some(p) = &self.saved {
            writeln!(
                f,
                "  rerun this input alone: cargo run -p portcullis-fuzz -- --target {} --replay {}",
                self.target,
                p.display()
            )?;
            write!(
                f,
                "  once fixed, keep it as a regression input: cp {} fuzz/corpus/{}/",
                p.display(),
                self.target
            )?;
        }
        Ok(())
    }
}

thread_local! {
    /// Set while a target runs on this thread, so the hook records instead of printing.
    static ACTIVE: Cell<bool> = const { Cell::new(false) };
    /// The last panic message seen while active.
    static PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Installs (once per process) a panic hook that captures panics raised inside a target and
/// leaves every other panic to the previous hook (test failures keep their usual report).
fn install_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if ACTIVE.with(Cell::get) {
                let msg = info.to_string();
                // Under panic=abort nothing unwinds back to the engine: say it now.
                if cfg!(panic = "abort") {
                    eprintln!("fuzz: {msg} (panic=abort: rerun with --trace to keep the input)");
                }
                PANIC.with(|p| *p.borrow_mut() = Some(msg));
            } else {
                previous(info);
            }
        }));
    });
}

/// Runs one input; `Err((panicked, message))` on a failure.
fn run_one(check: Check, input: &[u8]) -> Result<Verdict, (bool, String)> {
    install_hook();
    ACTIVE.with(|a| a.set(true));
    let outcome = std::panic::catch_unwind(|| check(input));
    ACTIVE.with(|a| a.set(false));
    match outcome {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(broken)) => Err((false, broken)),
        Err(_) => Err((
            true,
            PANIC
                .with(|p| p.borrow_mut().take())
                .unwrap_or_else(|| "panic without a message".into()),
        )),
    }
}

/// Runs one saved input through a target (for `--replay`).
pub fn replay(target: &Target, input: &[u8]) -> Result<Verdict, Failure> {
    run_one(target.check, input).map_err(|(panicked, message)| Failure {
        target: target.name,
        seed: 0,
        case: 0,
        panicked,
        message,
        input: input.to_vec(),
        saved: None,
    })
}

/// The regression inputs of a target: `dir/<target>/*`, in name order. A missing folder is
/// an empty corpus; an unreadable file is an error.
pub fn load_corpus(dir: &Path, target: &str) -> Result<Vec<Vec<u8>>, String> {
    let dir = dir.join(target);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Ok(Vec::new());
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    paths.sort();
    paths
        .iter()
        .map(|p| std::fs::read(p).map_err(|e| format!("{}: {e}", p.display())))
        .collect()
}

/// Fuzzes one target until its budget is spent or something breaks.
pub fn run(target: &Target, opts: &Options) -> Result<Summary, String> {
    let start = Instant::now();
    let mut fixed = (target.seeds)();
    if let Some(dir) = &opts.corpus {
        fixed.extend(load_corpus(dir, target.name)?);
    }
    let mut pool: Vec<Vec<u8>> = fixed.clone();
    let n_fixed = pool.len();
    let mut rng = Rng::new(opts.seed);
    let (mut case, mut accepted) = (0u64, 0u64);
    let mut failure = None;
    loop {
        if opts.max_cases.is_some_and(|m| case >= m)
            || opts.max_time.is_some_and(|t| start.elapsed() >= t)
        {
            break;
        }
        let mut input = match usize::try_from(case).ok().and_then(|i| fixed.get(i)) {
            Some(seed_input) => seed_input.clone(),
            None if pool.is_empty() || rng.chance(1, 8) => (target.generate)(&mut rng),
            None => {
                let base = rng.pick(&pool).cloned().unwrap_or_default();
                let mut x = (target.mutate)(&mut rng, &base);
                for _ in 0..rng.below(3) {
                    x = (target.mutate)(&mut rng, &x);
                }
                x
            }
        };
        input.truncate(target.max_input);
        if let Some(t) = &opts.trace {
            std::fs::write(t, &input).map_err(|e| format!("--trace {}: {e}", t.display()))?;
        }
        match run_one(target.check, &input) {
            Ok(verdict) => {
                if verdict == Verdict::Accepted {
                    accepted += 1;
                }
                // Keep accepted inputs (they reach deeper code when mutated) and a few
                // refused ones (they sit on the boundary).
                let keep = verdict == Verdict::Accepted || rng.chance(1, 8);
                if keep && case >= n_fixed as u64 {
                    if pool.len() < n_fixed + POOL {
                        pool.push(input);
                    } else {
                        let slot = n_fixed + rng.below(POOL);
                        if let Some(s) = pool.get_mut(slot) {
                            *s = input;
                        }
                    }
                }
            }
            Err((panicked, message)) => {
                let saved = opts.failures.as_ref().and_then(|dir| {
                    let p = dir.join(format!("{}-{:x}-{case}.bin", target.name, opts.seed));
                    std::fs::create_dir_all(dir).ok()?;
                    std::fs::write(&p, &input).ok()?;
                    Some(p)
                });
                failure = Some(Failure {
                    target: target.name,
                    seed: opts.seed,
                    case,
                    panicked,
                    message,
                    input,
                    saved,
                });
                case += 1;
                break;
            }
        }
        case += 1;
    }
    Ok(Summary {
        target: target.name,
        seed: opts.seed,
        cases: case,
        accepted,
        pool: pool.len(),
        elapsed: start.elapsed(),
        failure,
    })
}

/// A seed for a run that was not given one: different on every run, and printed.
pub fn fresh_seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    Rng::new(nanos ^ u64::from(std::process::id()).rotate_left(32)).next_u64()
}

/// Parses a seed written in decimal or as `0x…` hex.
pub fn parse_seed(s: &str) -> Option<u64> {
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(h) => u64::from_str_radix(h, 16).ok(),
        None => s.parse().ok(),
    }
}
