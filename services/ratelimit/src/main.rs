//! `portcullis-rls`: the rate limit service, and `portcullis-rls bench` to measure its decision
//! latency on loopback.

use portcullis_ratelimit::global::{descriptor, request};
use portcullis_ratelimit_service::backend::Backend;
use portcullis_ratelimit_service::client::Client;
use portcullis_ratelimit_service::config::ServiceConfig;
use portcullis_ratelimit_service::server::{self, Service};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

const USAGE: &str = "portcullis-rls — Envoy rate limit service (gRPC) with all state in Redis

USAGE:
  portcullis-rls --config FILE [options]
      --config FILE         limits per domain (`portcullis render --rls-out FILE` writes it)
      --listen ADDR         gRPC (HTTP/2, cleartext) address (default 127.0.0.1:8081; port 0 = any)
      --redis URL           redis://host:port/db (default redis://127.0.0.1:6379)
      --redis-timeout-ms N  deadline of one Redis decision, connecting included (default 50)
      --key-prefix P        prefix of every Redis key (default portcullis)
      --threads N           worker threads (default 2)
  portcullis-rls bench --target ADDR [--domain D --limit NAME --requests N --connections C]
      sends ShouldRateLimit calls for distinct tenants; prints decision latency percentiles
";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let r = match args.first().map(String::as_str) {
        Some("bench") => bench(&args[1..]),
        Some("help" | "-h" | "--help") => {
            print!("{USAGE}");
            Ok(())
        }
        _ => serve(&args),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("portcullis-rls: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `--name value` pairs.
fn opts(args: &[String], known: &[&str]) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let name = a
            .strip_prefix("--")
            .ok_or_else(|| format!("unexpected argument `{a}`; see --help"))?;
        if !known.contains(&name) {
            return Err(format!("unknown option --{name}; see --help"));
        }
        let v = it.next().ok_or_else(|| format!("--{name} needs a value"))?;
        out.push((name.to_string(), v.clone()));
    }
    Ok(out)
}

fn get<'a>(o: &'a [(String, String)], name: &str) -> Option<&'a str> {
    o.iter()
        .rev()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn num(o: &[(String, String)], name: &str, default: u64) -> Result<u64, String> {
    get(o, name).map_or(Ok(default), |v| {
        v.parse().map_err(|_| format!("--{name}: not a number"))
    })
}

fn runtime(threads: usize) -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .enable_all()
        .build()
        .map_err(|e| format!("runtime: {e}"))
}

fn serve(args: &[String]) -> Result<(), String> {
    let o = opts(
        args,
        &[
            "config",
            "listen",
            "redis",
            "redis-timeout-ms",
            "key-prefix",
            "threads",
        ],
    )?;
    let path = get(&o, "config").ok_or("--config FILE is required; see --help")?;
    let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
    let config = ServiceConfig::parse(&text)?;
    let timeout = num(&o, "redis-timeout-ms", 50)?;
    if timeout == 0 {
        return Err("--redis-timeout-ms must be at least 1".into());
    }
    let backend = Backend::new(
        get(&o, "redis").unwrap_or("redis://127.0.0.1:6379"),
        Duration::from_millis(timeout),
    )?;
    let prefix = get(&o, "key-prefix").unwrap_or("portcullis").to_string();
    if prefix.is_empty() || prefix.contains('|') {
        return Err("--key-prefix must be non-empty and without `|`".into());
    }
    let listen: SocketAddr = get(&o, "listen")
        .unwrap_or("127.0.0.1:8081")
        .parse()
        .map_err(|_| "--listen must be IP:PORT".to_string())?;
    let limits: usize = config.domains.values().map(|d| d.len()).sum();
    let svc = Arc::new(Service {
        config,
        prefix,
        backend,
    });
    let rt = runtime(usize::try_from(num(&o, "threads", 2)?).unwrap_or(2))?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|e| format!("{listen}: {e}"))?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        // Tests and scripts read this line to learn the port.
        println!("listening on {addr}");
        eprintln!(
            "portcullis-rls: {limits} global limit(s) in {} domain(s); redis deadline {timeout} ms",
            svc.config.domains.len()
        );
        tokio::select! {
            r = server::serve(listener, svc) => r.map_err(|e| e.to_string()),
            _ = tokio::signal::ctrl_c() => Ok(()),
        }
    })
}

fn bench(args: &[String]) -> Result<(), String> {
    let o = opts(
        args,
        &["target", "domain", "limit", "requests", "connections"],
    )?;
    let target: SocketAddr = get(&o, "target")
        .ok_or("--target ADDR is required")?
        .parse()
        .map_err(|_| "--target must be IP:PORT".to_string())?;
    let domain = get(&o, "domain").unwrap_or("portcullis.bench").to_string();
    let limit = get(&o, "limit").unwrap_or("tenant").to_string();
    let requests = num(&o, "requests", 20_000)?;
    let connections = num(&o, "connections", 4)?.max(1);
    let rt = runtime(2)?;
    rt.block_on(async move {
        let per = requests / connections;
        let mut tasks = Vec::new();
        let started = Instant::now();
        for c in 0..connections {
            let mut client = Client::connect(target).await?;
            let (domain, limit) = (domain.clone(), limit.clone());
            tasks.push(tokio::spawn(async move {
                let mut lat = Vec::with_capacity(per as usize);
                let mut errors = 0u64;
                for i in 0..per {
                    // Distinct tenants: every call is a real read-modify-write in Redis.
                    let key = format!("tenant:bench-{c}-{}", i % 1000);
                    let req = request(&domain, vec![(descriptor(&limit, None, &key), 1)]);
                    let t = Instant::now();
                    match client.should_rate_limit(&req).await {
                        Ok(_) => lat.push(t.elapsed()),
                        Err(_) => errors += 1,
                    }
                }
                (lat, errors)
            }));
        }
        let mut all = Vec::new();
        let mut errors = 0;
        for t in tasks {
            let (l, e) = t.await.map_err(|e| e.to_string())?;
            all.extend(l);
            errors += e;
        }
        let wall = started.elapsed();
        all.sort();
        let pct = |p: f64| {
            all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
                .map_or(0.0, |d| d.as_secs_f64() * 1e3)
        };
        println!(
            "calls={} errors={errors} connections={connections} rps={:.0} p50_ms={:.3} p90_ms={:.3} p99_ms={:.3} max_ms={:.3}",
            all.len(),
            all.len() as f64 / wall.as_secs_f64(),
            pct(0.50),
            pct(0.90),
            pct(0.99),
            all.last().map_or(0.0, |d| d.as_secs_f64() * 1e3),
        );
        Ok(())
    })
}
