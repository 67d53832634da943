//! The shared HTTP transport against a server that outlives the runtimes using it.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use healthpull::http::{HttpTransport, Limits};

/// A keep-alive HTTP/1.1 server on its own threads: every request on a connection gets
/// `200 ok` (after 300 ms for `/slow`); the count of accepted connections is returned beside the address.
fn keep_alive_server() -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("address");
    let connections = Arc::new(AtomicUsize::new(0));
    let counted = connections.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            counted.fetch_add(1, Ordering::SeqCst);
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().expect("clone"));
                loop {
                    let mut line = String::new();
                    let mut slow = false;
                    // Read one request head; the requests carry no body.
                    loop {
                        line.clear();
                        match reader.read_line(&mut line) {
                            Ok(0) | Err(_) => return,
                            Ok(_) if line == "\r\n" => break,
                            Ok(_) => slow |= line.starts_with("GET /slow "),
                        }
                    }
                    if slow {
                        std::thread::sleep(Duration::from_millis(300));
                    }
                    let answer = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                    if stream.write_all(answer.as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    (format!("http://{addr}/"), connections)
}

fn get(url: &str) -> healthpull::http::Request {
    http::Request::builder()
        .uri(url)
        .body(Bytes::new())
        .expect("request")
}

const LIMITS: Limits = Limits {
    timeout: Duration::from_secs(10),
    max_bytes: 1024,
};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime")
}

/// Two runtimes at once (as tests running side by side): a request of the second is
/// still waiting for its answer when the first runtime ends.
#[test]
fn shared_transport_survives_the_end_of_another_runtime() {
    let (url, connections) = keep_alive_server();
    let first = runtime();
    let second = runtime();
    let answer = first.block_on(HttpTransport::shared().send(get(&url), LIMITS));
    assert_eq!(answer.expect("first runtime").body().as_ref(), b"ok");
    // The idle connection goes back to the pool a moment after the answer.
    std::thread::sleep(Duration::from_millis(50));
    let slow = second.spawn(async move {
        HttpTransport::shared()
            .send(get(&format!("{url}slow")), LIMITS)
            .await
    });
    std::thread::sleep(Duration::from_millis(100));
    drop(first);
    let answer = second.block_on(slow).expect("task");
    assert_eq!(answer.expect("second runtime").body().as_ref(), b"ok");
    assert_eq!(connections.load(Ordering::SeqCst), 2);
}

#[test]
fn shared_transport_outlives_the_runtimes_that_used_it() {
    let (url, connections) = keep_alive_server();
    for round in 0..3 {
        let runtime = runtime();
        runtime.block_on(async {
            for _ in 0..2 {
                let answer = HttpTransport::shared()
                    .send(get(&url), LIMITS)
                    .await
                    .unwrap_or_else(|e| panic!("round {round}: {e}"));
                assert_eq!(answer.body().as_ref(), b"ok");
            }
        });
        drop(runtime);
    }
    // Each new runtime opens a connection of its own.
    assert!(connections.load(Ordering::SeqCst) >= 3);
}
