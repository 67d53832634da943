//! Following the stderr of a `healthpull serve` process: every line kept, and the address
//! from its `healthpull listening on http://ADDR` line handed over once.

use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::ChildStderr;

/// What [`follow`] gives: the lines so far, the announced URL (once), the reading task.
pub struct Followed {
    /// Every line read, each ending with a newline.
    pub log: Arc<Mutex<String>>,
    /// The URL of the `healthpull listening on` line.
    pub url: tokio::sync::oneshot::Receiver<String>,
    /// The task reading stderr until the process closes it.
    pub reader: tokio::task::JoinHandle<()>,
}

/// Reads `stderr` line by line in a task of its own.
pub fn follow(stderr: ChildStderr) -> Followed {
    let log = Arc::new(Mutex::new(String::new()));
    let (tx, url) = tokio::sync::oneshot::channel::<String>();
    let reader = tokio::spawn({
        let log = log.clone();
        async move {
            let mut tx = Some(tx);
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(url) = line.strip_prefix("healthpull listening on ") {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(url.trim().to_owned());
                    }
                }
                let mut log = log.lock().unwrap_or_else(|e| e.into_inner());
                log.push_str(&line);
                log.push('\n');
            }
        }
    });
    Followed { log, url, reader }
}
