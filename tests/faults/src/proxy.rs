//! A TCP proxy between Writeback and the shared Samba DC, to break LDAP without touching the DC
//! that other tests use.
//!
//! TLS passes through unchanged: the client still verifies the DC's certificate, whose SAN names
//! 127.0.0.1 and localhost, so `ldaps://127.0.0.1:<proxy port>` verifies as the DC's own URL does.
//!
//! Faults are triggered by the bytes sent towards the DC (all connections together), so a run
//! can be cut at the same point of its conversation as a measured undisturbed run:
//! - [`Fault::Cut`]: at the trigger every open connection is closed (the bytes up to the trigger
//!   are forwarded, so a TLS record may be cut in the middle); new connections are accepted.
//! - [`Fault::Outage`]: the DC "stops": every connection is closed and the listening socket is
//!   closed too (connects are refused) for the given time, then the proxy listens again on the
//!   same port.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::watch;

/// What happens when the bytes sent to the DC reach the trigger.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Fault {
    /// Close the open connections; keep accepting.
    Cut,
    /// Close the open connections and refuse new ones for this long.
    Outage(Duration),
}

#[derive(Debug, Default)]
struct Shared {
    /// Bytes forwarded towards the DC since the start (or the last [`FaultProxy::arm`]).
    sent: AtomicU64,
    /// Connections accepted so far.
    accepted: AtomicU64,
    /// Faults fired so far.
    fired: AtomicU64,
    armed: Mutex<Option<(u64, Fault)>>,
}

/// A running proxy, on its own thread and runtime (so a test blocked on a child process does
/// not stall it). Stopped when dropped.
pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    /// Bumped to close every open connection; the listener closes itself while `down` is set.
    kill: watch::Sender<u64>,
    down: watch::Sender<Option<Duration>>,
    stop: watch::Sender<bool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FaultProxy {
    /// Listens on 127.0.0.1 (a free port) and forwards every connection to `target`.
    pub fn start(target: SocketAddr) -> io::Result<FaultProxy> {
        let shared = Arc::new(Shared::default());
        let (kill, kill_rx) = watch::channel(0u64);
        let (down, down_rx) = watch::channel(None);
        let (stop, stop_rx) = watch::channel(false);
        let ctx = Ctx {
            target,
            shared: shared.clone(),
            kill: kill.clone(),
            kill_rx,
            down: down.clone(),
        };
        // Bound on the proxy's own thread: a runtime cannot be entered from a test's runtime.
        let (bound_tx, bound_rx) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("fault-proxy".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(r) => r,
                    Err(e) => {
                        let _ = bound_tx.send(Err(e));
                        return;
                    }
                };
                runtime.block_on(async move {
                    let listener = bind(SocketAddr::from(([127, 0, 0, 1], 0))).await;
                    let listener = match listener.and_then(|l| l.local_addr().map(|a| (l, a))) {
                        Ok((l, addr)) => {
                            let _ = bound_tx.send(Ok(addr));
                            (l, addr)
                        }
                        Err(e) => {
                            let _ = bound_tx.send(Err(e));
                            return;
                        }
                    };
                    serve(listener.0, listener.1, ctx, down_rx, stop_rx).await;
                })
            })?;
        let addr = bound_rx
            .recv()
            .map_err(|_| io::Error::other("the proxy thread ended before it listened"))??;
        Ok(FaultProxy {
            addr,
            shared,
            kill,
            down,
            stop,
            thread: Some(thread),
        })
    }

    /// The port clients connect to.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Bytes forwarded towards the DC since the start or the last [`FaultProxy::arm`].
    pub fn bytes_sent(&self) -> u64 {
        self.shared.sent.load(Ordering::SeqCst)
    }

    pub fn connections_accepted(&self) -> u64 {
        self.shared.accepted.load(Ordering::SeqCst)
    }

    /// Faults fired so far.
    pub fn faults_fired(&self) -> u64 {
        self.shared.fired.load(Ordering::SeqCst)
    }

    /// Resets the byte count and fires `fault` once `after_bytes` more bytes went to the DC.
    pub fn arm(&self, after_bytes: u64, fault: Fault) {
        let mut armed = self.shared.armed.lock().unwrap_or_else(|e| e.into_inner());
        self.shared.sent.store(0, Ordering::SeqCst);
        *armed = Some((after_bytes, fault));
    }

    /// Closes every open connection now.
    pub fn cut_now(&self) {
        self.kill.send_modify(|g| *g += 1);
    }

    /// Stops the "DC" now for `duration`.
    pub fn outage_now(&self, duration: Duration) {
        self.kill.send_modify(|g| *g += 1);
        let _ = self.down.send(Some(duration));
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        self.kill.send_modify(|g| *g += 1);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[derive(Clone)]
struct Ctx {
    target: SocketAddr,
    shared: Arc<Shared>,
    kill: watch::Sender<u64>,
    kill_rx: watch::Receiver<u64>,
    down: watch::Sender<Option<Duration>>,
}

/// A listener that can take its port back right after it was closed.
async fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(64)
}

async fn serve(
    listener: TcpListener,
    addr: SocketAddr,
    ctx: Ctx,
    mut down_rx: watch::Receiver<Option<Duration>>,
    mut stop_rx: watch::Receiver<bool>,
) {
    let mut listener = Some(listener);
    loop {
        if *stop_rx.borrow() {
            return;
        }
        let outage = *down_rx.borrow_and_update();
        if let Some(pause) = outage {
            // Closed socket: connects are refused, as by a stopped DC.
            listener = None;
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = stop_rx.changed() => return,
            }
            let _ = ctx.down.send(None);
            let _ = down_rx.borrow_and_update();
            // The port may be briefly busy; try until it is ours again.
            for _ in 0..100 {
                match bind(addr).await {
                    Ok(l) => {
                        listener = Some(l);
                        break;
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                }
            }
            if listener.is_none() {
                return;
            }
        }
        let Some(l) = listener.as_ref() else { return };
        tokio::select! {
            accepted = l.accept() => {
                if let Ok((client, _)) = accepted {
                    ctx.shared.accepted.fetch_add(1, Ordering::SeqCst);
                    tokio::spawn(pump(client, ctx.clone()));
                }
            }
            _ = down_rx.changed() => {}
            _ = stop_rx.changed() => return,
        }
    }
}

/// Forwards one connection until either side closes or a fault closes it.
async fn pump(client: TcpStream, ctx: Ctx) {
    let mut kill_rx = ctx.kill_rx.clone();
    let _ = kill_rx.borrow_and_update();
    let Ok(server) = TcpStream::connect(ctx.target).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (mut client_rd, mut client_wr) = client.into_split();
    let (mut server_rd, mut server_wr) = server.into_split();
    let up = async {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = match client_rd.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            let (forward, fire) = ctx.shared.account(n);
            if forward > 0 && server_wr.write_all(&buf[..forward]).await.is_err() {
                return;
            }
            if let Some(fault) = fire {
                ctx.shared.fired.fetch_add(1, Ordering::SeqCst);
                if let Fault::Outage(pause) = fault {
                    let _ = ctx.down.send(Some(pause));
                }
                ctx.kill.send_modify(|g| *g += 1);
                return;
            }
        }
    };
    let down = tokio::io::copy(&mut server_rd, &mut client_wr);
    tokio::select! {
        _ = up => {}
        _ = down => {}
        _ = kill_rx.changed() => {}
    }
    // Dropping both halves of both sockets closes the connection.
}

impl Shared {
    /// Counts `n` bytes about to go to the DC: how many to forward, and the fault to fire
    /// when the trigger falls inside them.
    fn account(&self, n: usize) -> (usize, Option<Fault>) {
        let mut armed = self.armed.lock().unwrap_or_else(|e| e.into_inner());
        let before = self.sent.fetch_add(n as u64, Ordering::SeqCst);
        match *armed {
            Some((at, fault)) if before + n as u64 >= at => {
                *armed = None;
                let forward = at.saturating_sub(before).min(n as u64) as usize;
                (forward, Some(fault))
            }
            _ => (n, None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_trigger_forwards_the_bytes_before_it() {
        let s = Shared::default();
        *s.armed.lock().unwrap() = Some((10, Fault::Cut));
        assert_eq!(s.account(4), (4, None));
        assert_eq!(s.account(20), (6, Some(Fault::Cut)));
        assert_eq!(s.account(5), (5, None), "fires once");
    }
}
