//! Detection: a heartbeat between every pair of processes, and timely's communication
//! panics turned into one clear line.
//!
//! Every process writes a byte to every other on its heartbeat connection every
//! [`WatchSettings::interval`], from a thread of its own (not a worker's, so a busy worker
//! does not silence it), and reads theirs:
//!
//! - the connection closes or fails without a goodbye: the peer died (`kill -9`, a crash) or
//!   the network broke;
//! - nothing arrives for [`WatchSettings::silence`]: the peer is stopped (SIGSTOP) or hung;
//! - while this process is stopping on a signal, a peer silent for
//!   [`WatchSettings::stopping_silence`] ends it too: a clean end needs every process.
//!
//! A process whose run ends well says goodbye before it closes. On a failure the process
//! exits at once with status 1 and one line naming the peer, its address and what was seen
//! ([`fail`]): timely has no way to go on without a peer, and its workers would otherwise die
//! on its communication threads' panics, with backtraces. Those panics (a connection reset, a
//! poisoned queue) are caught by a panic hook ([`install_panic_hook`]) and reported the same
//! way.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Once, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A heartbeat byte.
const BEAT: u8 = 1;
/// The byte a process sends before it closes at the end of a good run.
const GOODBYE: u8 = 0xff;

/// How the heartbeat runs.
#[derive(Clone, Copy, Debug)]
pub struct WatchSettings {
    /// How often a process beats.
    pub interval: Duration,
    /// A peer silent this long is stopped or hung.
    pub silence: Duration,
    /// While this process stops on a signal, a peer silent this long ends it.
    pub stopping_silence: Duration,
}

impl WatchSettings {
    /// The settings for a hang timeout of `silence`.
    pub fn new(silence: Duration) -> Self {
        WatchSettings {
            interval: Duration::from_millis(250),
            silence,
            stopping_silence: silence.min(Duration::from_secs(5)),
        }
    }
}

/// Set once a failure is being reported: the process is exiting.
static FAILING: AtomicBool = AtomicBool::new(false);

/// The cluster's addresses, for the panic hook's message.
static ADDRESSES: OnceLock<Vec<String>> = OnceLock::new();

/// Reports a failure of the cluster in one line on stderr and exits with status 1. Only the
/// first caller reports; any other waits for the exit.
pub fn fail(line: &str) -> ! {
    if FAILING.swap(true, Ordering::SeqCst) {
        loop {
            std::thread::sleep(Duration::from_secs(1));
        }
    }
    eprintln!("pooch run: {line}");
    std::process::exit(1)
}

/// `process 1 at 127.0.0.1:2102`.
fn peer_name(addresses: &[String], peer: usize) -> String {
    match addresses.get(peer) {
        Some(address) => format!("process {peer} at {}", address.trim()),
        None => format!("process {peer}"),
    }
}

/// Turns the panics of timely's communication threads (named `timely:recv-P` and
/// `timely:send-P` for peer `P`) into [`fail`], and silences the panics they cause on the
/// workers (a poisoned queue) while the process exits. Other panics go to the hook that was
/// installed before. Installed once per process.
pub fn install_panic_hook(addresses: &[String]) {
    // a process runs one cluster: the first addresses stay
    let _ = ADDRESSES.set(addresses.to_vec());
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let message = info
                .payload()
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| info.payload().downcast_ref::<&str>().copied())
                .unwrap_or("(no message)");
            let thread = std::thread::current();
            let peer = thread.name().and_then(|name| {
                name.strip_prefix("timely:recv-")
                    .or_else(|| name.strip_prefix("timely:send-"))
                    .and_then(|peer| peer.parse::<usize>().ok())
            });
            let addresses = ADDRESSES.get().map(Vec::as_slice).unwrap_or(&[]);
            if let Some(peer) = peer {
                fail(&format!(
                    "{} was lost, its connection broke: {message}",
                    peer_name(addresses, peer)
                ));
            }
            if FAILING.load(Ordering::SeqCst) {
                // a consequence of the failure being reported: the process is exiting
                loop {
                    std::thread::sleep(Duration::from_secs(1));
                }
            }
            if message.contains("timely communication error") || message.contains("poisoned") {
                fail(&format!(
                    "the connections between processes failed: {message}"
                ));
            }
            previous(info);
        }));
    });
}

/// The heartbeat of this process with every other, while the run lasts.
pub struct Watch {
    /// Set when the watch ends: the threads return.
    done: Arc<AtomicBool>,
    /// The connections, to say goodbye on.
    streams: Vec<TcpStream>,
    threads: Vec<JoinHandle<()>>,
}

impl Watch {
    /// Starts beating on `connections` (one per peer, `None` for this process) and watching
    /// the peers' beats. `stop` is the run's stop flag (set by a signal).
    pub fn start(
        addresses: &[String],
        connections: Vec<Option<TcpStream>>,
        settings: WatchSettings,
        stop: Arc<AtomicBool>,
    ) -> std::io::Result<Watch> {
        let done = Arc::new(AtomicBool::new(false));
        let mut streams = Vec::new();
        let mut threads = Vec::new();
        for (peer, stream) in connections.into_iter().enumerate() {
            let Some(stream) = stream else { continue };
            stream.set_read_timeout(Some(settings.interval))?;
            stream.set_write_timeout(Some(Duration::from_secs(1)))?;
            let reader = stream.try_clone()?;
            streams.push(stream);
            let name = peer_name(addresses, peer);
            let (done, stop) = (Arc::clone(&done), Arc::clone(&stop));
            threads.push(
                std::thread::Builder::new()
                    .name(format!("pooch:watch-{peer}"))
                    .spawn(move || watch_peer(reader, &name, settings, &done, &stop))?,
            );
        }
        let mut writers = streams
            .iter()
            .map(TcpStream::try_clone)
            .collect::<std::io::Result<Vec<_>>>()?;
        let beating = Arc::clone(&done);
        threads.push(
            std::thread::Builder::new()
                .name("pooch:heartbeat".into())
                .spawn(move || {
                    while !beating.load(Ordering::SeqCst) {
                        for writer in &mut writers {
                            // a failed write is the watcher's to report, from the other end
                            let _ = writer.write_all(&[BEAT]);
                        }
                        std::thread::sleep(settings.interval);
                    }
                })?,
        );
        Ok(Watch {
            done,
            streams,
            threads,
        })
    }

    /// The run ended well on this process: says goodbye to every peer and stops watching.
    pub fn finish(mut self) {
        self.done.store(true, Ordering::SeqCst);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
        for stream in &mut self.streams {
            // a peer already gone needs no goodbye
            let _ = stream.write_all(&[GOODBYE]);
            let _ = stream.flush();
        }
    }
}

impl Drop for Watch {
    /// Without [`Watch::finish`] (this process failed on its own), the watch stops without a
    /// goodbye: the peers see this process lost.
    fn drop(&mut self) {
        self.done.store(true, Ordering::SeqCst);
    }
}

/// Reads one peer's beats until the watch is done or the peer says goodbye; fails the process
/// when the peer is lost or silent.
fn watch_peer(
    mut stream: TcpStream,
    name: &str,
    settings: WatchSettings,
    done: &AtomicBool,
    stop: &AtomicBool,
) {
    let mut heard = Instant::now();
    let mut buffer = [0u8; 256];
    while !done.load(Ordering::SeqCst) {
        match stream.read(&mut buffer) {
            Ok(0) => {
                if done.load(Ordering::SeqCst) {
                    return;
                }
                fail(&format!(
                    "{name} was lost: its connection closed without a goodbye (it died or was killed)"
                ));
            }
            Ok(read) => {
                if buffer[..read].contains(&GOODBYE) {
                    return;
                }
                heard = Instant::now();
            }
            Err(error) if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(error) if error.kind() == ErrorKind::Interrupted => {}
            Err(error) => {
                if done.load(Ordering::SeqCst) {
                    return;
                }
                fail(&format!("{name} was lost: its connection failed ({error})"));
            }
        }
        let silent = heard.elapsed();
        let stopping = stop.load(Ordering::Relaxed);
        let bound = if stopping {
            settings.stopping_silence
        } else {
            settings.silence
        };
        if silent >= bound && !done.load(Ordering::SeqCst) {
            let during = if stopping {
                "; this process was stopping on a signal and cannot end cleanly without it"
            } else {
                ""
            };
            fail(&format!(
                "{name} is not responding: nothing heard from it for {:.1} s (it is stopped or hung){during}",
                silent.as_secs_f64()
            ));
        }
    }
}
