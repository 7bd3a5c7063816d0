//! What pooch computes: one dataflow graph from facts to features, models and answers.
//!
//! The crate knows nothing of files, sockets or clocks. The root crate reads sources, feeds
//! facts and queries into the graph [`build`] makes, and writes what comes out.
//!
//! ```text
//!  facts ──► collect ──► features ──► examples ──► learn ──────► publish ──► serve ──► answers
//!  (each      (split by   (feature     (as-of       (score with    (versions   (as-of
//!   worker     source)     store:      lookups,      the servable   arranged    lookups,
//!   reads a                aggregates  delayed       model, train,  on every    newest
//!   share)                 by key)     labels)       merge rounds)  worker)     version)
//!                              │                          │                        ▲
//!                              └──── feature store ───────┼────────────────────────┘
//!                                                         └──► evaluate ──► epoch metrics
//!  queries ──────────────────────────────────────────────────────────────────┘
//! ```
//!
//! Every collection is timestamped with event time in seconds. Epochs are `tick_secs` long;
//! the readers close an epoch when their input has moved past it, and a training round is
//! merged at each epoch's close.

pub mod collect;
pub mod event;
pub mod fact;
pub mod fixed;
pub mod hashing;
pub mod learn;
pub mod plan;
pub mod publish;
pub mod serve;
pub mod transform;

use std::rc::Rc;
use std::sync::Arc;

use differential_dataflow::VecCollection;
use timely::dataflow::StreamVec;
use timely::dataflow::operators::Concat;

use crate::event::{Answer, Query};
use crate::fact::{Fact, Symbol, Time};
use crate::learn::evaluate::{self, EpochMetrics};
use crate::plan::Plan;
use crate::publish::model::ModelVersion;
use crate::publish::versions::{self, Models};
use crate::transform::lookup::Store;
use crate::transform::{examples, features, labels};

/// What the graph produces.
pub struct Graph<'scope> {
    /// Answers to queries, on the worker that answered each.
    pub answers: StreamVec<'scope, Time, Answer>,
    /// Progressive metrics of each epoch, at worker 0.
    pub epochs: StreamVec<'scope, Time, EpochMetrics>,
    /// Every version published, and retracted once it leaves the serving window; each worker
    /// publishes the same versions.
    pub versions: VecCollection<'scope, Time, (Symbol, Arc<ModelVersion>)>,
    /// The published versions held on this worker.
    pub models: Models<'scope>,
    /// The exact regression's report at the close of every epoch that changed its examples,
    /// at worker 0; `None` when the plan has no exact regression.
    pub exact: Option<StreamVec<'scope, Time, learn::ridge::ExactReport>>,
    /// The feature store, for inspection and tests. Drop it when not reading it: a held
    /// handle keeps the store from compacting.
    pub store: Store<'scope>,
}

/// How a run differs from others of the same plan.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settings {
    /// The number of the first version this run publishes; a run that continues a store of
    /// published versions starts after its newest.
    pub first_version: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings { first_version: 1 }
    }
}

/// Builds the whole pipeline over facts, their corrections, and queries.
///
/// `ends` carries each worker's report when its reading ends: from them training learns the
/// end of what was read, and does not learn labels due after it.
pub fn build<'scope>(
    plan: &Rc<Plan>,
    settings: Settings,
    facts: VecCollection<'scope, Time, Fact>,
    corrections: VecCollection<'scope, Time, collect::Correction>,
    queries: VecCollection<'scope, Time, Query>,
    ends: StreamVec<'scope, Time, learn::train::EndOfReading>,
) -> Graph<'scope> {
    // collect: one collection per source, corrections applied
    let sources = collect::split_sources(plan, facts, corrections);

    // transform: the feature store, the examples with their features, and their labels
    let store = features::feature_store(plan, &sources);
    let example_facts = sources[usize::from(plan.examples.source)].clone();
    let events = examples::example_events(plan, example_facts.clone());
    let exact = learn::exact::exact(plan, example_facts.clone());
    let examples = examples::with_features(plan, events.clone(), &store, |time| time, "examples");
    // one record out of the lookups per example in, or the join amplifies
    let join_counts = evaluate::count_records(events.inner, "Count: examples in", |count| {
        evaluate::JoinCounts {
            examples_in: count,
            lookup_outputs: 0,
        }
    })
    .concat(evaluate::count_records(
        examples.inner.clone(),
        "Count: lookup outputs",
        |count| evaluate::JoinCounts {
            examples_in: 0,
            lookup_outputs: count,
        },
    ));
    let label_requests = match labels::label_requests(plan, example_facts) {
        Some(requests) => labels::labels(plan, requests, &store),
        None => collect::empty(&examples),
    };

    // learn and publish
    let trained = learn::train::train(plan, settings.first_version, examples, label_requests, ends);
    let epochs = evaluate::evaluate(trained.outcomes, join_counts, plan.tick_secs);
    let versions = trained.versions;
    let models = versions::arrange_models(versions.clone());

    // serve: queries read the state complete at the start of their epoch
    let query_events = collect::query_events(plan, queries);
    let tick = plan.tick_secs;
    let query_events = examples::with_features(
        plan,
        query_events,
        &store,
        move |time| time - time % tick,
        "queries",
    );
    let answers = serve::answer::answer(plan, query_events, &models);

    Graph {
        answers,
        epochs,
        versions,
        models,
        exact,
        store,
    }
}
