//! A userspace TCP proxy for fault injection (this kernel has no
//! `sch_netem`): listens on a free loopback port and forwards every
//! connection to an upstream port, with faults switched at run time:
//!
//! - **latency**: every chunk is held this long before it is written on
//!   (pipelined: the link's throughput is unchanged, only its delay);
//! - **loss**: a chunk is "lost" with a given probability and arrives only
//!   after a retransmission timeout, holding up everything behind it — what
//!   packet loss looks like to the ends of a TCP connection (head-of-line
//!   blocking, never missing bytes);
//! - **blackhole**: bytes are read and thrown away, nothing is forwarded
//!   (a link gone dark; total loss);
//! - **stall**: the proxy stops reading (the peer's writes block once the
//!   kernel's buffers are full);
//! - **cut**: every open connection is closed at once.
//!
//! Faults apply to both directions, to open and new connections alike.
//! Bytes forwarded and thrown away are counted each way.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What happens to bytes read from either end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Forwarded (with the latency and loss set).
    Pass = 0,
    /// Read and thrown away.
    Blackhole = 1,
    /// Not read at all.
    Stall = 2,
}

/// Bytes each way: toward the upstream server (`up`) and back (`down`).
#[derive(Default)]
pub struct Counters {
    pub up: AtomicU64,
    pub down: AtomicU64,
    /// Thrown away by the blackhole, both ways.
    pub blackholed: AtomicU64,
    /// Chunks held back by simulated loss.
    pub lost_chunks: AtomicU64,
    /// Connections accepted since start.
    pub connections: AtomicUsize,
}

#[derive(Default)]
struct Ctl {
    mode: AtomicU8,
    latency_us: AtomicU64,
    /// Probability of a loss per chunk, in millionths.
    loss_ppm: AtomicU64,
    /// Delay of a lost chunk (the retransmission timeout).
    rto_us: AtomicU64,
    upstream: AtomicU64,
    counters: Counters,
    conns: Mutex<Vec<Link>>,
}

/// One proxied connection's two sockets (clones, for `cut`).
struct Link {
    client: TcpStream,
    server: TcpStream,
    dead: Arc<AtomicBool>,
}

impl Link {
    fn close(&self) {
        self.dead.store(true, Ordering::Relaxed);
        let _ = self.client.shutdown(Shutdown::Both);
        let _ = self.server.shutdown(Shutdown::Both);
    }
}

/// A running proxy; it stops accepting when the test process ends.
pub struct Proxy {
    pub port: u16,
    ctl: Arc<Ctl>,
}

impl Proxy {
    /// Forwards 127.0.0.1:`port` (free, chosen here) to 127.0.0.1:`upstream`.
    pub fn start(upstream: u16) -> Proxy {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let ctl = Arc::new(Ctl::default());
        ctl.upstream.store(upstream as u64, Ordering::Relaxed);
        ctl.rto_us.store(200_000, Ordering::Relaxed);
        let c = ctl.clone();
        std::thread::spawn(move || {
            for conn in l.incoming().flatten() {
                let c = c.clone();
                std::thread::spawn(move || c.serve(conn));
            }
        });
        Proxy { port, ctl }
    }

    pub fn counters(&self) -> &Counters {
        &self.ctl.counters
    }

    pub fn set_mode(&self, m: Mode) {
        self.ctl.mode.store(m as u8, Ordering::Relaxed);
    }

    /// Latency added to every chunk, each way.
    pub fn set_latency(&self, d: Duration) {
        self.ctl
            .latency_us
            .store(d.as_micros() as u64, Ordering::Relaxed);
    }

    /// Share of chunks lost (0..=1) and the delay before a lost chunk is
    /// "retransmitted".
    pub fn set_loss(&self, share: f64, rto: Duration) {
        self.ctl
            .loss_ppm
            .store((share.clamp(0.0, 1.0) * 1e6) as u64, Ordering::Relaxed);
        self.ctl
            .rto_us
            .store(rto.as_micros() as u64, Ordering::Relaxed);
    }

    /// Back to a clean link: no latency, no loss, bytes forwarded.
    pub fn heal(&self) {
        self.set_mode(Mode::Pass);
        self.set_latency(Duration::ZERO);
        self.set_loss(0.0, Duration::from_millis(200));
    }

    /// Closes every open connection (new ones are still accepted).
    pub fn cut(&self) {
        let links = std::mem::take(&mut *self.ctl.conns.lock().unwrap());
        for l in &links {
            l.close();
        }
    }

    /// Connections open now.
    pub fn open_connections(&self) -> usize {
        let mut conns = self.ctl.conns.lock().unwrap();
        conns.retain(|l| !l.dead.load(Ordering::Relaxed));
        conns.len()
    }

    /// Forwards new connections to another upstream port (open ones stay).
    pub fn set_upstream(&self, port: u16) {
        self.ctl.upstream.store(port as u64, Ordering::Relaxed);
    }
}

impl Ctl {
    fn mode(&self) -> Mode {
        match self.mode.load(Ordering::Relaxed) {
            1 => Mode::Blackhole,
            2 => Mode::Stall,
            _ => Mode::Pass,
        }
    }

    fn serve(self: Arc<Self>, client: TcpStream) {
        self.counters.connections.fetch_add(1, Ordering::Relaxed);
        let upstream = self.upstream.load(Ordering::Relaxed) as u16;
        let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
            let _ = client.shutdown(Shutdown::Both);
            return;
        };
        let _ = client.set_nodelay(true);
        let _ = server.set_nodelay(true);
        let dead = Arc::new(AtomicBool::new(false));
        let (Ok(c2), Ok(s2)) = (client.try_clone(), server.try_clone()) else {
            return;
        };
        self.conns.lock().unwrap().push(Link {
            client: c2,
            server: s2,
            dead: dead.clone(),
        });
        let (Ok(c_rd), Ok(s_rd)) = (client.try_clone(), server.try_clone()) else {
            return;
        };
        let me = self.clone();
        let d = dead.clone();
        std::thread::spawn(move || me.pump(c_rd, server, true, &d));
        self.pump(s_rd, client, false, &dead);
    }

    /// Copies `from` → `to` through a queue: a reader applies the mode and
    /// stamps each chunk with when it may leave; the writer sends it then.
    fn pump(
        self: &Arc<Self>,
        mut from: TcpStream,
        to: TcpStream,
        up: bool,
        dead: &Arc<AtomicBool>,
    ) {
        let (tx, rx) = mpsc::channel::<(Instant, Vec<u8>)>();
        let d = dead.clone();
        let me = self.clone();
        let writer = std::thread::spawn(move || {
            let mut to = to;
            for (due, chunk) in rx {
                std::thread::sleep(due.saturating_duration_since(Instant::now()));
                if d.load(Ordering::Relaxed) || to.write_all(&chunk).is_err() {
                    break;
                }
                let n = chunk.len() as u64;
                if up {
                    me.counters.up.fetch_add(n, Ordering::Relaxed);
                } else {
                    me.counters.down.fetch_add(n, Ordering::Relaxed);
                }
            }
            d.store(true, Ordering::Relaxed);
            let _ = to.shutdown(Shutdown::Both);
        });
        let mut buf = vec![0u8; 64 * 1024];
        // Chunks leave in order: a lost one holds up those behind it.
        let mut last_due = Instant::now();
        while !dead.load(Ordering::Relaxed) {
            if self.mode() == Mode::Stall {
                std::thread::sleep(Duration::from_millis(20));
                continue;
            }
            let n = match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            // Read as a stall began: held until it ends.
            while self.mode() == Mode::Stall && !dead.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(20));
            }
            if self.mode() == Mode::Blackhole {
                self.counters
                    .blackholed
                    .fetch_add(n as u64, Ordering::Relaxed);
                continue;
            }
            let mut hold = Duration::from_micros(self.latency_us.load(Ordering::Relaxed));
            let ppm = self.loss_ppm.load(Ordering::Relaxed);
            if ppm > 0 && rand::random_range(0..1_000_000) < ppm {
                self.counters.lost_chunks.fetch_add(1, Ordering::Relaxed);
                hold += Duration::from_micros(self.rto_us.load(Ordering::Relaxed));
            }
            let due = (Instant::now() + hold).max(last_due);
            last_due = due;
            if tx.send((due, buf[..n].to_vec())).is_err() {
                break;
            }
        }
        // The writer sends what is queued, then closes both ends.
        drop(tx);
        let _ = writer.join();
        dead.store(true, Ordering::Relaxed);
        let _ = from.shutdown(Shutdown::Both);
    }
}
