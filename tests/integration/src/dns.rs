//! A tiny authoritative DNS server on a loopback UDP port, for tests of DC discovery: answers
//! SRV and A questions from fixed tables, AAAA with no records, anything else with NXDOMAIN.
//! Enough of RFC 1035 for one question per message, no compression in what it reads.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// One SRV record: priority, weight, port, target host.
#[derive(Debug, Clone)]
pub struct Srv {
    pub priority: u16,
    pub weight: u16,
    pub port: u16,
    pub target: String,
}

/// The zone the server answers from. Names are compared without case and trailing dot.
#[derive(Debug, Clone, Default)]
pub struct Zone {
    pub srv: BTreeMap<String, Vec<Srv>>,
    pub a: BTreeMap<String, Ipv4Addr>,
}

fn key(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

impl Zone {
    pub fn with_srv(mut self, name: &str, records: Vec<Srv>) -> Zone {
        self.srv.insert(key(name), records);
        self
    }
    pub fn with_a(mut self, name: &str, ip: Ipv4Addr) -> Zone {
        self.a.insert(key(name), ip);
        self
    }
}

/// The running server; stops when dropped.
pub struct DnsServer {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

impl DnsServer {
    pub fn start(zone: Zone) -> DnsServer {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind DNS socket");
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .expect("socket timeout");
        let addr = socket.local_addr().expect("DNS addr");
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 1500];
            while !flag.load(Ordering::SeqCst) {
                let Ok((n, peer)) = socket.recv_from(&mut buf) else {
                    continue;
                };
                if let Some(reply) = answer(&zone, buf.get(..n).unwrap_or_default()) {
                    let _ = socket.send_to(&reply, peer);
                }
            }
        });
        DnsServer { addr, stop }
    }
}

const TYPE_A: u16 = 1;
const TYPE_AAAA: u16 = 28;
const TYPE_SRV: u16 = 33;

/// The question's name, type, and where the question ends.
fn question(msg: &[u8]) -> Option<(String, u16, usize)> {
    let mut at = 12;
    let mut labels = Vec::new();
    loop {
        let len = usize::from(*msg.get(at)?);
        at += 1;
        if len == 0 {
            break;
        }
        labels.push(String::from_utf8_lossy(msg.get(at..at + len)?).to_string());
        at += len;
    }
    let qtype = u16::from_be_bytes([*msg.get(at)?, *msg.get(at + 1)?]);
    Some((labels.join("."), qtype, at + 4))
}

fn encode_name(name: &str, out: &mut Vec<u8>) {
    // "." (the root, an SRV record's "no service") is the empty name: one zero byte.
    for label in name.split('.').filter(|l| !l.is_empty()) {
        out.push(label.len() as u8);
        out.extend_from_slice(label.as_bytes());
    }
    out.push(0);
}

fn answer(zone: &Zone, msg: &[u8]) -> Option<Vec<u8>> {
    let (name, qtype, end) = question(msg)?;
    let name = key(&name);
    let mut answers: Vec<(u16, Vec<u8>)> = Vec::new();
    let known = zone.srv.contains_key(&name) || zone.a.contains_key(&name);
    match qtype {
        TYPE_SRV => {
            for r in zone.srv.get(&name).into_iter().flatten() {
                let mut rdata = Vec::new();
                rdata.extend_from_slice(&r.priority.to_be_bytes());
                rdata.extend_from_slice(&r.weight.to_be_bytes());
                rdata.extend_from_slice(&r.port.to_be_bytes());
                encode_name(&r.target, &mut rdata);
                answers.push((TYPE_SRV, rdata));
            }
        }
        TYPE_A => {
            if let Some(ip) = zone.a.get(&name) {
                answers.push((TYPE_A, ip.octets().to_vec()));
            }
        }
        _ => {}
    }
    let mut out = Vec::with_capacity(512);
    out.extend_from_slice(msg.get(..2)?); // id
    let rd = msg.get(2).map(|b| b & 0x01).unwrap_or(0);
    out.push(0x84 | rd); // QR, AA, RD copied
    let nxdomain = !known && qtype != TYPE_AAAA;
    out.push(if nxdomain { 0x03 } else { 0x00 });
    out.extend_from_slice(&1u16.to_be_bytes());
    out.extend_from_slice(&(answers.len() as u16).to_be_bytes());
    out.extend_from_slice(&0u16.to_be_bytes());
    out.extend_from_slice(&0u16.to_be_bytes());
    out.extend_from_slice(msg.get(12..end)?);
    for (ty, rdata) in answers {
        out.extend_from_slice(&[0xC0, 0x0C]); // the question's name
        out.extend_from_slice(&ty.to_be_bytes());
        out.extend_from_slice(&1u16.to_be_bytes()); // IN
        out.extend_from_slice(&0u32.to_be_bytes()); // TTL 0: nothing to cache
        out.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
        out.extend_from_slice(&rdata);
    }
    Some(out)
}
