//! Serving: the state requests are answered from, the supervisor that decides which version
//! serves, the HTTP endpoint, and the `pooch models` commands.
//!
//! | module | owns |
//! |---|---|
//! | [`serving`] | [`ServingState`]: features as of the last complete epoch, and scoring requests |
//! | `supervision` | the versions the serving state holds, and applying the supervisor's decisions |
//! | [`supervisor`] | the rules that pick the version that serves, their log, the control file |
//! | [`http`] | the HTTP endpoint, over any [`http::Backend`] |
//! | [`console`] | the operator's console at `/` of the endpoint, and the journal it polls |
//! | [`memory`] | giving the memory of a request flood back to the operating system |
//! | [`models`] | the `pooch models` commands, on a snapshot store |

pub mod console;
pub mod http;
pub mod memory;
pub mod models;
pub mod serving;
mod supervision;
pub mod supervisor;

pub use serving::{ServeError, ServingState};
pub use supervisor::SupervisorError;

#[cfg(test)]
mod tests {
    use super::*;

    /// The runtime wraps these errors in its own, which cross threads.
    fn is_a_thread_safe_error<T: std::error::Error + Send + Sync + 'static>() {}

    #[test]
    fn serving_and_snapshot_errors_cross_threads() {
        is_a_thread_safe_error::<ServeError>();
        is_a_thread_safe_error::<SupervisorError>();
        is_a_thread_safe_error::<models::ModelsError>();
        is_a_thread_safe_error::<crate::publish::SnapshotError>();
        is_a_thread_safe_error::<crate::files::FileError>();
    }
}
