//! The HTTP endpoint of a run (process 0, with `--http`): the server, while the run lasts and
//! after the input is read.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::runtime::serving_setup::start_serving;
use crate::runtime::{RunError, RunOptions};
use crate::serve::http::{HttpConfig, HttpServer};
use crate::serve::serving::ServingState;
use crate::spec::Spec;

/// The endpoint while it listens.
pub struct Endpoint {
    server: HttpServer,
    serving: Arc<ServingState>,
}

impl Endpoint {
    /// Sets up the serving state, then listens, telling `options.http_bound` where.
    pub fn start(spec: &Spec, options: &RunOptions, http: HttpConfig) -> Result<Self, RunError> {
        let serving = start_serving(spec, options)?;
        let server =
            crate::serve::http::spawn(http, Arc::clone(&serving) as _).map_err(RunError::Http)?;
        eprintln!("pooch: serving on http://{}", server.local_addr());
        if let Some(bound) = &options.http_bound {
            // the caller may have stopped listening for it: the endpoint serves regardless
            let _ = bound.send(server.local_addr());
        }
        Ok(Endpoint { server, serving })
    }

    /// The serving state, for the graph to keep up to date.
    pub fn serving(&self) -> Arc<ServingState> {
        Arc::clone(&self.serving)
    }

    /// Goes on serving after the input is read, taking commands from the control file, until
    /// `stop` is set.
    pub fn serve_until(&self, stop: &AtomicBool) {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        eprintln!(
            "pooch: the input is read; still serving on http://{} until SIGINT or SIGTERM",
            self.server.local_addr()
        );
        while !stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(100));
            self.serving.poll_control();
        }
    }

    /// Stops listening and waits for the server to end.
    pub fn shutdown(self) {
        self.server.shutdown();
    }
}
