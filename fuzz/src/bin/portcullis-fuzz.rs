//! `portcullis-fuzz`: runs the in-tree fuzz targets for a time budget, or replays one input.
//!
//! `make fuzz FUZZ_SECONDS=600` is the usual way in; see `--help`.

use portcullis_fuzz::engine::{self, Options};
use portcullis_fuzz::{target, Target, TARGETS};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

const USAGE: &str = "\
usage: portcullis-fuzz [--seconds N] [--seed S] [--target NAME[,NAME…]] [--cases N] [--trace FILE]
       portcullis-fuzz --target NAME --replay FILE
       portcullis-fuzz --list

  --seconds N   total time budget, split evenly between the targets (default 60)
  --seed S      decimal or 0x-hex; the run is fixed by it (default: a fresh one, printed)
  --target T    only these targets (comma-separated; default: all)
  --cases N     stop each target after N cases as well
  --trace FILE  write each input to FILE before running it (to keep what kills the process)
  --replay FILE run one saved input through --target and report
  --list        list the targets

Regression inputs in fuzz/corpus/<target>/ run first. A failure prints the seed, the case and
the input, saves it under target/fuzz-failures/ and exits 1.";

struct Args {
    seconds: u64,
    seed: Option<u64>,
    targets: Vec<&'static Target>,
    cases: Option<u64>,
    trace: Option<PathBuf>,
    replay: Option<PathBuf>,
    list: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        seconds: 60,
        seed: None,
        targets: Vec::new(),
        cases: None,
        trace: None,
        replay: None,
        list: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--seconds" => {
                a.seconds = value()?
                    .parse()
                    .map_err(|_| "--seconds takes a whole number".to_owned())?
            }
            "--seed" => {
                let v = value()?;
                a.seed = Some(engine::parse_seed(&v).ok_or(format!("bad --seed `{v}`"))?);
            }
            "--target" => {
                for name in value()?.split(',').filter(|n| !n.is_empty()) {
                    let t = target(name).ok_or_else(|| {
                        format!("unknown target `{name}` (--list shows the targets)")
                    })?;
                    a.targets.push(t);
                }
            }
            "--cases" => {
                a.cases = Some(
                    value()?
                        .parse()
                        .map_err(|_| "--cases takes a whole number".to_owned())?,
                )
            }
            "--trace" => a.trace = Some(PathBuf::from(value()?)),
            "--replay" => a.replay = Some(PathBuf::from(value()?)),
            "--list" => a.list = true,
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    if a.targets.is_empty() {
        a.targets = TARGETS.iter().collect();
    }
    Ok(a)
}

/// The workspace's `target/` (or `CARGO_TARGET_DIR`), where failing inputs are saved.
fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../target")))
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) if e.is_empty() => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("portcullis-fuzz: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    if args.list {
        for t in TARGETS {
            println!("{:<20} {}", t.name, t.about);
        }
        return ExitCode::SUCCESS;
    }
    if let Some(file) = &args.replay {
        let [t] = args.targets.as_slice() else {
            eprintln!("portcullis-fuzz: --replay needs exactly one --target");
            return ExitCode::from(2);
        };
        let input = match std::fs::read(file) {
            Ok(i) => i,
            Err(e) => {
                eprintln!("portcullis-fuzz: {}: {e}", file.display());
                return ExitCode::from(2);
            }
        };
        return match engine::replay(t, &input) {
            Ok(v) => {
                println!("{}: {v:?}, no failure", t.name);
                ExitCode::SUCCESS
            }
            Err(f) => {
                eprintln!("{f}");
                ExitCode::FAILURE
            }
        };
    }
    let seed = args.seed.unwrap_or_else(engine::fresh_seed);
    let share = Duration::from_secs(args.seconds) / args.targets.len().max(1) as u32;
    println!(
        "portcullis-fuzz: seed {seed:#x}, {} s over {} target(s)",
        args.seconds,
        args.targets.len()
    );
    let mut failed = false;
    for t in &args.targets {
        let opts = Options {
            seed,
            max_cases: args.cases,
            max_time: Some(share),
            corpus: Some(PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/corpus"
            ))),
            trace: args.trace.clone(),
            failures: Some(target_dir().join("fuzz-failures")),
        };
        match engine::run(t, &opts) {
            Ok(summary) => {
                println!("{summary}");
                if let Some(f) = &summary.failure {
                    eprintln!("{f}");
                    failed = true;
                }
            }
            Err(e) => {
                eprintln!("portcullis-fuzz: {}: {e}", t.name);
                failed = true;
            }
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
