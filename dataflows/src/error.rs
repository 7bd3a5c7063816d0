//! Bad data inside the graph: the facts a stage could not use, each with the reason, in a
//! collection beside the one of what it could (Materialize's "oks and errs").
//!
//! Parsing sets aside what it cannot read before the graph (the root crate's dead letters). What
//! is read but cannot be used, such as a fact without its key or a value that does not fit fixed
//! point, is found here, and leaves the graph as [`crate::Graph::errors`]. A missing optional
//! value is not an error: it is [`crate::fact::Value::Missing`], which every stage reads as
//! "nothing here".

use differential_dataflow::{AsCollection, Data, VecCollection};
use serde::{Deserialize, Serialize};
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;

use crate::fact::{Fact, SourceId, Time};

/// A fact the graph could not use, and why.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct GraphError {
    /// The source the fact belongs to.
    pub source: SourceId,
    /// The fact's id (see [`crate::fact::Fact::id`]).
    pub fact: u64,
    /// The fact's event time.
    pub time: Time,
    /// What was wrong, naming the stage and the field.
    pub reason: String,
}

impl GraphError {
    /// The error of a fact, for a reason.
    pub fn of(fact: &Fact, reason: String) -> Self {
        GraphError {
            source: fact.source,
            fact: fact.id,
            time: fact.time,
            reason,
        }
    }
}

/// The errors of a stage, timestamped and counted as the facts that caused them: a withdrawn
/// fact withdraws its errors.
pub type Errors<'scope> = VecCollection<'scope, Time, GraphError>;

/// Maps each update to any number of oks and of errors, in one pass.
///
/// `logic` is handed each update `(datum, time, diff)` and two buffers to push whole updates
/// into (most keep the update's time and difference); both are emptied after each update.
pub fn split_errors<'scope, D, O, L>(
    updates: VecCollection<'scope, Time, D>,
    name: &str,
    mut logic: L,
) -> (VecCollection<'scope, Time, O>, Errors<'scope>)
where
    D: Data,
    O: Data,
    L: FnMut((D, Time, isize), &mut Vec<(O, Time, isize)>, &mut Vec<(GraphError, Time, isize)>)
        + 'static,
{
    let mut builder = OperatorBuilder::new(name.to_owned(), updates.scope());
    let mut input = builder.new_input(updates.inner, Pipeline);
    let (oks_out, oks) = builder.new_output::<Vec<(O, Time, isize)>>();
    let (errs_out, errs) = builder.new_output::<Vec<(GraphError, Time, isize)>>();
    let mut oks_out = OutputBuilder::from(oks_out);
    let mut errs_out = OutputBuilder::from(errs_out);
    builder.build(move |_| {
        let (mut found, mut failed) = (Vec::new(), Vec::new());
        move |_frontiers| {
            let mut oks_handle = oks_out.activate();
            let mut errs_handle = errs_out.activate();
            input.for_each(|capability, data| {
                let mut oks = oks_handle.session(&capability);
                let mut errs = errs_handle.session(&capability);
                for update in data.drain(..) {
                    logic(update, &mut found, &mut failed);
                    oks.give_iterator(found.drain(..));
                    errs.give_iterator(failed.drain(..));
                }
            });
        }
    });
    (oks.as_collection(), errs.as_collection())
}
