//! An HTTP receiver on 127.0.0.1 for the triggers the rules post: it records each request
//! (method, path, JSON body, the `Idempotency-Key` and `Authorization` headers) and answers
//! 204, or fails or hangs on purpose.

use serde_json::Value;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    pub path: String,
    pub body: Value,
    /// The `Idempotency-Key` header, if any.
    pub key: Option<String>,
    /// The `Authorization` header, if any.
    pub authorization: Option<String>,
}

/// An HTTP receiver on 127.0.0.1 in a thread of its own (the tests block on the binary).
pub struct Receiver {
    pub url: String,
    got: Arc<Mutex<Vec<Received>>>,
}

/// How a receiver answers.
#[derive(Debug, Clone, Copy, Default)]
pub struct Behaviour {
    /// The first this many requests are answered 500.
    pub fail_first: usize,
    /// The first request gets no answer for this long (the caller is killed meanwhile).
    pub hang_first: Option<Duration>,
}

impl Receiver {
    pub fn start() -> Receiver {
        Receiver::with(Behaviour::default())
    }

    pub fn with(behaviour: Behaviour) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind receiver");
        let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
        let got = Arc::new(Mutex::new(Vec::new()));
        let log = got.clone();
        std::thread::spawn(move || {
            for (n, conn) in listener.incoming().enumerate() {
                let Ok(mut sock) = conn else { continue };
                let _ = sock.set_read_timeout(Some(Duration::from_secs(5)));
                if let Some(r) = read_request(&mut sock) {
                    log.lock().expect("lock").push(r);
                }
                let answer: &[u8] = if n < behaviour.fail_first {
                    b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                } else {
                    b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n"
                };
                match behaviour.hang_first.filter(|_| n == 0) {
                    // Held open on a thread of its own: later requests are answered meanwhile.
                    Some(d) => drop(std::thread::spawn(move || {
                        std::thread::sleep(d);
                        drop(sock);
                    })),
                    None => {
                        let _ = sock.write_all(answer);
                    }
                }
            }
        });
        Receiver { url, got }
    }

    pub fn received(&self) -> Vec<Received> {
        self.got.lock().expect("lock").clone()
    }
}

fn read_request(sock: &mut std::net::TcpStream) -> Option<Received> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        let n = sock.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let len: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0);
    while buf.len() < head_end + 4 + len {
        let n = sock.read(&mut chunk).ok()?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let mut first = head.lines().next().unwrap_or_default().split(' ');
    let body = &buf[head_end + 4..];
    let header = |name: &str| {
        head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    };
    Some(Received {
        key: header("idempotency-key"),
        authorization: header("authorization"),
        method: first.next().unwrap_or_default().to_string(),
        path: first.next().unwrap_or_default().to_string(),
        body: serde_json::from_slice(body)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(body).into_owned())),
    })
}
