//! Redis, reached through one multiplexed connection that is (re)opened on demand: every call is
//! bounded by one deadline (connecting included), a broken connection is dropped so the next
//! call reconnects, and failed connects are not retried for a short backoff — so Redis down or
//! slow costs a request at most the deadline, and the service recovers by itself.

use crate::script::SCRIPT;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, Script};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex as StdMutex;
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

/// How long after a failed connect the next attempt waits (calls fail fast meanwhile).
const RECONNECT_BACKOFF: Duration = Duration::from_millis(100);

/// Why Redis gave no verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendError {
    /// The deadline passed (Redis slow, or unreachable without a quick refusal).
    Timeout,
    /// Redis refused or dropped the connection, or the script failed.
    Unavailable,
}

/// The Redis side of the service.
pub struct Backend {
    client: Client,
    script: Script,
    deadline: Duration,
    conn: Mutex<Option<MultiplexedConnection>>,
    last_failed_connect: StdMutex<Option<Instant>>,
    healthy: AtomicBool,
}

impl Backend {
    /// A backend for `url` (`redis://host:port/db`); nothing is connected yet.
    pub fn new(url: &str, deadline: Duration) -> Result<Backend, String> {
        let client = Client::open(url).map_err(|e| format!("--redis {url}: {e}"))?;
        Ok(Backend {
            client,
            script: Script::new(SCRIPT),
            deadline,
            conn: Mutex::new(None),
            last_failed_connect: StdMutex::new(None),
            healthy: AtomicBool::new(true),
        })
    }

    /// Runs the decision script for `keys` with `args`, within the deadline.
    pub async fn decide(&self, keys: &[String], args: &[u64]) -> Result<Vec<i64>, BackendError> {
        let r = match tokio::time::timeout(self.deadline, self.run(keys, args)).await {
            Ok(r) => r,
            Err(_) => Err(BackendError::Timeout),
        };
        match &r {
            Ok(_) => {
                if !self.healthy.swap(true, Ordering::Relaxed) {
                    eprintln!("portcullis-rls: redis answers again");
                }
            }
            Err(e) => {
                // A slow or broken connection is not reused: the next call reconnects.
                if let Ok(mut g) = self.conn.try_lock() {
                    *g = None;
                }
                if self.healthy.swap(false, Ordering::Relaxed) {
                    eprintln!("portcullis-rls: redis gives no verdict ({e:?}); answering UNAVAILABLE until it recovers");
                }
            }
        }
        r
    }

    async fn connection(&self) -> Result<MultiplexedConnection, BackendError> {
        let mut g = self.conn.lock().await;
        if let Some(c) = g.as_ref() {
            return Ok(c.clone());
        }
        let recent_failure = self
            .last_failed_connect
            .lock()
            .ok()
            .and_then(|t| *t)
            .is_some_and(|t| t.elapsed() < RECONNECT_BACKOFF);
        if recent_failure {
            return Err(BackendError::Unavailable);
        }
        let cfg = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.deadline))
            .set_response_timeout(Some(self.deadline));
        match self
            .client
            .get_multiplexed_async_connection_with_config(&cfg)
            .await
        {
            Ok(c) => {
                *g = Some(c.clone());
                Ok(c)
            }
            Err(_) => {
                if let Ok(mut t) = self.last_failed_connect.lock() {
                    *t = Some(Instant::now());
                }
                Err(BackendError::Unavailable)
            }
        }
    }

    async fn run(&self, keys: &[String], args: &[u64]) -> Result<Vec<i64>, BackendError> {
        let mut conn = self.connection().await?;
        let mut inv = self.script.prepare_invoke();
        for k in keys {
            inv.key(k);
        }
        for a in args {
            inv.arg(*a);
        }
        // EVALSHA; on NOSCRIPT (a restarted or flushed Redis) the script is loaded and retried.
        inv.invoke_async::<Vec<i64>>(&mut conn).await.map_err(|e| {
            if e.is_timeout() {
                BackendError::Timeout
            } else {
                BackendError::Unavailable
            }
        })
    }
}
