//! The connection phase of a cluster, done by pooch rather than by timely: every process
//! listens at its hostfile address and connects to the processes before it, twice (one
//! connection for timely's data, one for pooch's heartbeat), until every pair is joined.
//!
//! Unlike timely's own phase, this one ends: it gives up after the peer timeout, naming the
//! process that did not come and its address, and it returns as soon as a signal asks for a
//! stop. Each connection opens with a handshake (magic, cluster size, sender's index, which
//! connection it is), so a stray client or a process started with another `-n` is refused.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// The first bytes of every connection between pooch processes.
const MAGIC: [u8; 8] = *b"POOCH01\0";

/// How long an accepted connection has to send its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// How often the phase looks again for connections to make or accept.
const POLL: Duration = Duration::from_millis(50);

/// Which of a pair's two connections this is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Purpose {
    /// Timely's data and progress.
    Timely = 0,
    /// pooch's heartbeat (see `watch`).
    Heartbeat = 1,
}

/// Why the connection phase failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// This process's index is not in the hostfile.
    #[error("this process is -p {process}, but the cluster has {processes} processes (-n)")]
    Index {
        /// `-p`.
        process: usize,
        /// `-n`.
        processes: usize,
    },
    /// A hostfile line is not an address.
    #[error("process {process}'s address `{address}` does not resolve: {reason}")]
    Address {
        /// The process.
        process: usize,
        /// Its hostfile line.
        address: String,
        /// Why.
        reason: String,
    },
    /// This process cannot listen at its address.
    #[error("cannot listen at {address} (process {process}'s hostfile line): {source}")]
    Listen {
        /// This process.
        process: usize,
        /// Its address.
        address: String,
        /// Why.
        source: io::Error,
    },
    /// A peer did not join in time.
    #[error(
        "process {process} at {address} did not join within {waited_secs} s (--peer-timeout){}",
        last_error.as_ref().map(|error| format!("; last attempt: {error}")).unwrap_or_default()
    )]
    Missing {
        /// The missing process.
        process: usize,
        /// Its address.
        address: String,
        /// How long this process waited.
        waited_secs: u64,
        /// The last error connecting to it, when this process connects to it.
        last_error: Option<String>,
    },
    /// A peer's handshake was wrong.
    #[error("a connection to {address}: {reason}")]
    Handshake {
        /// Where it came from.
        address: String,
        /// What was wrong.
        reason: String,
    },
    /// This process's own communication could not start.
    #[error("cannot start this process's communication: {0}")]
    Local(String),
    /// A signal asked for a stop while the processes were joining.
    #[error("stopped by a signal while waiting for the other processes")]
    Stopped,
}

impl ConnectError {
    /// Whether the error is the caller's to fix (flags, hostfile) rather than a failure.
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            ConnectError::Index { .. } | ConnectError::Address { .. } | ConnectError::Listen { .. }
        )
    }
}

/// Every pair of processes joined: for each process, `None` for this one and a connection to
/// every other, in process order.
pub struct Joined {
    /// Timely's connections.
    pub timely: Vec<Option<TcpStream>>,
    /// The heartbeat connections.
    pub heartbeat: Vec<Option<TcpStream>>,
}

/// Joins this process (`process` of `addresses.len()`) with every other, within `timeout`,
/// stopping early when `stop` becomes true.
pub fn join(
    addresses: &[String],
    process: usize,
    timeout: Duration,
    stop: &AtomicBool,
) -> Result<Joined, ConnectError> {
    let processes = addresses.len();
    if process >= processes {
        return Err(ConnectError::Index { process, processes });
    }
    let resolved = addresses
        .iter()
        .enumerate()
        .map(|(index, address)| resolve(index, address))
        .collect::<Result<Vec<_>, _>>()?;
    let own = addresses[process].trim();
    let listener = TcpListener::bind(resolved[process]).map_err(|source| ConnectError::Listen {
        process,
        address: own.to_owned(),
        source,
    })?;
    listener
        .set_nonblocking(true)
        .map_err(|source| ConnectError::Listen {
            process,
            address: own.to_owned(),
            source,
        })?;

    let mut timely: Vec<Option<TcpStream>> = (0..processes).map(|_| None).collect();
    let mut heartbeat: Vec<Option<TcpStream>> = (0..processes).map(|_| None).collect();
    let mut last_error: Vec<Option<String>> = vec![None; processes];
    let started = Instant::now();
    let mut reported = Instant::now();
    loop {
        if stop.load(Ordering::Relaxed) {
            return Err(ConnectError::Stopped);
        }
        // the processes before this one: connect to them
        for peer in 0..process {
            for purpose in [Purpose::Timely, Purpose::Heartbeat] {
                let slot = match purpose {
                    Purpose::Timely => &mut timely[peer],
                    Purpose::Heartbeat => &mut heartbeat[peer],
                };
                if slot.is_some() {
                    continue;
                }
                match dial(resolved[peer], processes, process, purpose) {
                    Ok(stream) => *slot = Some(stream),
                    Err(error) => last_error[peer] = Some(error.to_string()),
                }
            }
        }
        // the processes after this one: accept them
        loop {
            match listener.accept() {
                Ok((stream, from)) => match greet(&stream, from, processes, process) {
                    Ok((peer, purpose)) => {
                        let slot = match purpose {
                            Purpose::Timely => &mut timely[peer],
                            Purpose::Heartbeat => &mut heartbeat[peer],
                        };
                        *slot = Some(stream);
                    }
                    // a stranger (or a process of another cluster) does not end the phase
                    Err(error) => eprintln!("pooch: refused {error}"),
                },
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
                Err(error) => {
                    return Err(ConnectError::Listen {
                        process,
                        address: own.to_owned(),
                        source: error,
                    });
                }
            }
        }
        let missing: Vec<usize> = (0..processes)
            .filter(|&peer| {
                peer != process && (timely[peer].is_none() || heartbeat[peer].is_none())
            })
            .collect();
        let Some(&first_missing) = missing.first() else {
            break;
        };
        if started.elapsed() >= timeout {
            return Err(ConnectError::Missing {
                process: first_missing,
                address: addresses[first_missing].trim().to_owned(),
                waited_secs: timeout.as_secs(),
                last_error: last_error[first_missing].take(),
            });
        }
        if reported.elapsed() >= Duration::from_secs(5) {
            reported = Instant::now();
            let names: Vec<String> = missing
                .iter()
                .map(|&peer| format!("process {peer} at {}", addresses[peer].trim()))
                .collect();
            eprintln!(
                "pooch: waiting for {} ({} s of {} s)",
                names.join(", "),
                started.elapsed().as_secs(),
                timeout.as_secs()
            );
        }
        std::thread::sleep(POLL);
    }
    for stream in timely.iter().chain(heartbeat.iter()).flatten() {
        // best effort: a socket that refuses Nagle's switch still works
        let _ = stream.set_nodelay(true);
    }
    Ok(Joined { timely, heartbeat })
}

/// A hostfile line's socket address.
fn resolve(process: usize, address: &str) -> Result<SocketAddr, ConnectError> {
    let trimmed = address.trim();
    let error = |reason: String| ConnectError::Address {
        process,
        address: trimmed.to_owned(),
        reason,
    };
    trimmed
        .to_socket_addrs()
        .map_err(|e| error(e.to_string()))?
        .next()
        .ok_or_else(|| error("it names no address".to_owned()))
}

/// Connects to a process before this one and sends the handshake.
fn dial(
    address: SocketAddr,
    processes: usize,
    process: usize,
    purpose: Purpose,
) -> io::Result<TcpStream> {
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(1))?;
    let mut hello = Vec::with_capacity(32);
    hello.extend_from_slice(&MAGIC);
    hello.extend_from_slice(&(processes as u64).to_be_bytes());
    hello.extend_from_slice(&(process as u64).to_be_bytes());
    hello.extend_from_slice(&(purpose as u64).to_be_bytes());
    stream.write_all(&hello)?;
    Ok(stream)
}

/// Reads the handshake of a connection accepted from `from`: which process it is, and for
/// what.
fn greet(
    stream: &TcpStream,
    from: SocketAddr,
    processes: usize,
    process: usize,
) -> Result<(usize, Purpose), ConnectError> {
    let refuse = |reason: String| ConnectError::Handshake {
        address: from.to_string(),
        reason,
    };
    let setup = stream
        .set_nonblocking(false)
        .and_then(|()| stream.set_read_timeout(Some(HANDSHAKE_TIMEOUT)));
    setup.map_err(|error| refuse(error.to_string()))?;
    let mut hello = [0u8; 32];
    (&*stream)
        .read_exact(&mut hello)
        .map_err(|error| refuse(format!("no pooch handshake within 5 s ({error})")))?;
    stream
        .set_read_timeout(None)
        .map_err(|error| refuse(error.to_string()))?;
    if hello[..8] != MAGIC {
        return Err(refuse(
            "it is not a pooch process of this version (wrong handshake)".to_owned(),
        ));
    }
    let field = |at: usize| {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(&hello[at..at + 8]);
        u64::from_be_bytes(bytes)
    };
    let (their_processes, peer, purpose) = (field(8), field(16), field(24));
    if their_processes != processes as u64 {
        return Err(refuse(format!(
            "it was started with -n {their_processes}, this process with -n {processes}"
        )));
    }
    let peer = usize::try_from(peer).unwrap_or(usize::MAX);
    if peer <= process || peer >= processes {
        return Err(refuse(format!(
            "it says it is process {peer}; only processes {} to {} connect to process {process}",
            process + 1,
            processes - 1
        )));
    }
    let purpose = match purpose {
        0 => Purpose::Timely,
        1 => Purpose::Heartbeat,
        other => return Err(refuse(format!("unknown connection kind {other}"))),
    };
    Ok((peer, purpose))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn free_addresses(count: usize) -> Vec<String> {
        let listeners: Vec<TcpListener> = (0..count)
            .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind"))
            .collect();
        listeners
            .iter()
            .map(|listener| listener.local_addr().expect("address").to_string())
            .collect()
    }

    #[test]
    fn three_processes_join_pairwise() {
        let addresses = free_addresses(3);
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let handles: Vec<_> = (0..3)
            .map(|process| {
                let (addresses, stop) = (addresses.clone(), std::sync::Arc::clone(&stop));
                std::thread::spawn(move || {
                    join(&addresses, process, Duration::from_secs(20), &stop).map(|joined| {
                        (
                            joined
                                .timely
                                .iter()
                                .map(Option::is_some)
                                .collect::<Vec<_>>(),
                            joined
                                .heartbeat
                                .iter()
                                .map(Option::is_some)
                                .collect::<Vec<_>>(),
                        )
                    })
                })
            })
            .collect();
        for (process, handle) in handles.into_iter().enumerate() {
            let (timely, heartbeat) = handle.join().expect("thread").expect("joined");
            let expected: Vec<bool> = (0..3).map(|peer| peer != process).collect();
            assert_eq!(timely, expected);
            assert_eq!(heartbeat, expected);
        }
    }

    #[test]
    fn a_missing_process_is_named_with_its_address_after_the_timeout() {
        let addresses = free_addresses(2);
        let stop = AtomicBool::new(false);
        let started = Instant::now();
        let error = join(&addresses, 0, Duration::from_millis(300), &stop)
            .err()
            .expect("nobody joins");
        assert!(started.elapsed() < Duration::from_secs(5));
        let text = error.to_string();
        assert!(
            text.contains(&format!("process 1 at {}", addresses[1])),
            "{text}"
        );
        assert!(!error.is_usage());
    }

    #[test]
    fn a_stop_ends_the_wait() {
        let addresses = free_addresses(2);
        let stop = AtomicBool::new(true);
        let error = join(&addresses, 1, Duration::from_secs(60), &stop)
            .err()
            .expect("stopped");
        assert!(matches!(error, ConnectError::Stopped));
    }

    #[test]
    fn a_stranger_is_refused_and_the_processes_still_join() {
        let addresses = free_addresses(2);
        let first = {
            let addresses = addresses.clone();
            std::thread::spawn(move || {
                let stop = AtomicBool::new(false);
                join(&addresses, 0, Duration::from_secs(20), &stop).is_ok()
            })
        };
        let mut stranger = None;
        for _ in 0..200 {
            if let Ok(mut stream) = TcpStream::connect(&addresses[0]) {
                stream
                    .write_all(b"GET / HTTP/1.1\r\n\r\nxxxxxxxxxxxxxxxx")
                    .expect("write");
                stranger = Some(stream);
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(stranger.is_some(), "process 0 listens");
        let stop = AtomicBool::new(false);
        assert!(join(&addresses, 1, Duration::from_secs(20), &stop).is_ok());
        assert!(first.join().expect("first"));
    }
}
