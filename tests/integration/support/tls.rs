//! A TLS front for the fake provider: HTTPS on a loopback port with the fixture
//! certificate of `localhost` (`tests/fixtures/tls/`, signed by the fixture's own CA),
//! each request passed to a plain HTTP server and its answer passed back. What a real
//! provider's TLS endpoint is to the client; the fake stays plain HTTP.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::env::root;

/// The fixture CA that signed the front's certificate (`SSL_CERT_FILE` for a client
/// that should trust it).
pub fn ca_file() -> PathBuf {
    root().join("tests/fixtures/tls/ca.pem")
}

/// Starts the front for `backend` on its own threads; its port on 127.0.0.1.
pub fn front(backend: SocketAddr) -> u16 {
    let dir = root().join("tests/fixtures/tls");
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_file_iter(dir.join("localhost.pem"))
            .expect("read the fixture certificate")
            .collect::<Result<_, _>>()
            .expect("parse the fixture certificate");
    let key = PrivateKeyDer::from_pem_file(dir.join("localhost.key")).expect("the fixture key");
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("TLS versions")
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .expect("the fixture certificate and key");
    let config = Arc::new(config);
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind the TLS front");
    let port = listener.local_addr().expect("address").port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let config = config.clone();
            std::thread::spawn(move || {
                let Ok(connection) = rustls::ServerConnection::new(config) else {
                    return;
                };
                let tls = rustls::StreamOwned::new(connection, stream);
                pass_requests(tls, backend);
            });
        }
    });
    port
}

/// Each request read from the client goes to `backend` on a connection of its own
/// (`Connection: close`); the whole answer comes back as it was sent.
fn pass_requests(
    tls: rustls::StreamOwned<rustls::ServerConnection, TcpStream>,
    backend: SocketAddr,
) {
    let mut client = BufReader::new(tls);
    loop {
        let mut head = String::new();
        let mut length = 0usize;
        loop {
            let mut line = String::new();
            match client.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            if line == "\r\n" {
                break;
            }
            let lower = line.to_ascii_lowercase();
            if let Some(value) = lower.strip_prefix("content-length:") {
                length = value.trim().parse().unwrap_or(0);
            }
            if !lower.starts_with("connection:") {
                head.push_str(&line);
            }
        }
        let mut body = vec![0; length];
        if client.read_exact(&mut body).is_err() {
            return;
        }
        let Ok(mut upstream) = TcpStream::connect(backend) else {
            return;
        };
        head.push_str("connection: close\r\n\r\n");
        if upstream.write_all(head.as_bytes()).is_err() || upstream.write_all(&body).is_err() {
            return;
        }
        let mut answer = Vec::new();
        if upstream.read_to_end(&mut answer).is_err() {
            return;
        }
        let tls = client.get_mut();
        if tls.write_all(&answer).is_err() || tls.flush().is_err() {
            return;
        }
    }
}
