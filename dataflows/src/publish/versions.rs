//! Publishing: the versions training publishes, arranged on every worker next to the
//! feature store, where serving reads them.

use std::sync::Arc;

use differential_dataflow::VecCollection;
use differential_dataflow::operators::arrange::arrangement::arrange_core;
use differential_dataflow::operators::arrange::{Arranged, TraceAgent};
use differential_dataflow::trace::implementations::{ValBatcher, ValSpine};
use timely::dataflow::channels::pact::Pipeline;

use crate::fact::{Symbol, Time};
use crate::publish::model::ModelVersion;

/// The trace of published versions: model name symbol to version.
pub type ModelTrace = ValSpine<Symbol, Arc<ModelVersion>, Time, isize>;

/// Published versions, arranged on every worker (each worker arranges its own copy).
pub type Models<'scope> = Arranged<'scope, TraceAgent<ModelTrace>>;

/// Arranges the versions each worker published, locally.
pub fn arrange_models<'scope>(
    versions: VecCollection<'scope, Time, (Symbol, Arc<ModelVersion>)>,
) -> Models<'scope> {
    arrange_core::<_, _, ValBatcher<Symbol, Arc<ModelVersion>, Time, isize>, ModelTrace>(
        versions.inner,
        Pipeline,
        "Arrange: Models",
        ValBatcher::new,
    )
}
