//! Clusters of processes: joining them, detecting a lost or hung peer, and (`pooch
//! cluster`) launching and supervising them.
//!
//! | module | owns |
//! |---|---|
//! | [`connect`] | the connection phase: every pair joined within the peer timeout, or a stop |
//! | [`watch`] | the heartbeat between processes, and timely's communication panics as one line |
//! | [`supervise`] | `pooch cluster`: starting the processes, restarting them, the budget, the log |
//! | [`serve`] | `pooch cluster --http`: serving from the supervisor, following the snapshot store |
//!
//! [`communication`] puts them together for a run: for a cluster it joins the processes,
//! starts the watch, and hands timely the connections.

pub mod connect;
pub mod serve;
pub mod supervise;
pub mod watch;

use std::any::Any;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use timely::communication::allocator::zero_copy::initialize::initialize_networking_from_sockets;
use timely::communication::allocator::{AllocatorBuilder, ProcessBuilder};
use timely::communication::{Config as CommunicationConfig, Hooks};

use crate::cluster::connect::ConnectError;
use crate::cluster::watch::{Watch, WatchSettings};

/// How a process joins its cluster and watches it.
#[derive(Clone, Copy, Debug)]
pub struct ClusterSettings {
    /// How long to wait for every process to join.
    pub peer_timeout: Duration,
    /// A peer silent this long is stopped or hung.
    pub hang_timeout: Duration,
}

impl Default for ClusterSettings {
    fn default() -> Self {
        ClusterSettings {
            peer_timeout: Duration::from_secs(60),
            hang_timeout: Duration::from_secs(10),
        }
    }
}

/// Timely's allocators for this process, what must live as long as they do, and for a
/// cluster, the watch (to [`Watch::finish`] once the workers are done).
pub struct Communication {
    /// One per worker of this process.
    pub builders: Vec<AllocatorBuilder>,
    /// Timely's communication threads' guard.
    pub guard: Box<dyn Any + Send>,
    /// The heartbeat, for a cluster.
    pub watch: Option<Watch>,
}

/// Builds the communication for `config`: for a cluster, joins every process (within the peer
/// timeout, or until `stop`), starts the heartbeat and installs the panic hook.
pub fn communication(
    config: CommunicationConfig,
    settings: ClusterSettings,
    stop: &Arc<AtomicBool>,
) -> Result<Communication, ConnectError> {
    let CommunicationConfig::Cluster {
        threads,
        process,
        addresses,
        report: _,
        zerocopy,
    } = config
    else {
        let (builders, guard) = config.try_build().map_err(ConnectError::Local)?;
        return Ok(Communication {
            builders,
            guard,
            watch: None,
        });
    };
    let joined = connect::join(&addresses, process, settings.peer_timeout, stop)?;
    watch::install_panic_hook(&addresses);
    let local = |source: std::io::Error| ConnectError::Local(source.to_string());
    let watch = Watch::start(
        &addresses,
        joined.heartbeat,
        WatchSettings::new(settings.hang_timeout),
        Arc::clone(stop),
    )
    .map_err(local)?;
    let hooks = Hooks::default();
    let allocators = if zerocopy {
        ProcessBuilder::new_bytes_vector(threads, hooks.refill.clone(), hooks.spill.clone())
    } else {
        ProcessBuilder::new_typed_vector(threads, hooks.refill.clone(), hooks.spill.clone())
    };
    let (builders, guard) =
        initialize_networking_from_sockets(allocators, joined.timely, process, threads, hooks)
            .map_err(local)?;
    Ok(Communication {
        builders: builders.into_iter().map(AllocatorBuilder::Tcp).collect(),
        guard: Box::new(guard),
        watch: Some(watch),
    })
}
