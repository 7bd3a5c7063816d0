//! What pooch computes: one dataflow graph from facts to features, models and answers.
//!
//! The crate knows nothing of files, sockets or clocks. The root crate reads sources, feeds
//! facts and queries into the graph [`build`] makes, and writes what comes out.
//!
//! Each component is a named timely region (`Collect`, `Transform`, `Learn`, `Publish`,
//! `Serve`) and a module of the same name, one stage per file:
//!
//! ```text
//!           facts, corrections                                     queries
//!                   │                                                 │
//!  ┌ Collect ───────▼─────────────────────────────────────────────────▼───────┐
//!  │  split_sources: one collection per source,        query_events: queries  │
//!  │  corrections applied                              as events              │
//!  └────────────┬─────────────────────────┬───────────────────────────┬───────┘
//!           sources                 example facts               query events
//!  ┌ Transform ─▼──────────────────────┐  │                           │
//!  │  feature_store ──► store ─────────┼──┼──────────────────┐        │
//!  │  example_events ─► with_features  │  │                  │        │
//!  │  label_requests ─► labels         │  │                  │        │
//!  │  count_records (join counts)      │  │                  │        │
//!  └───────┬──────────────────┬────────┘  │                  │        │
//!     examples, labels,     errors ───────┼──────────────────┼────────┼──► errors
//!     join counts     ends of reading     │                  │        │
//!  ┌ Learn ▼─────────────────▼────────────▼─┐                │        │
//!  │  train, merge rounds ──► outcomes      │                │        │
//!  │  evaluate (outcomes) ──────────────────┼────────────────┼────────┼──► epoch metrics
//!  │  exact (example facts) ────────────────┼────────────────┼────────┼──► exact reports
//!  └───────┬────────────────────────────────┘                │        │
//!      versions ─────────────────────────────────────────────┼────────┼──► versions
//!  ┌ Publish ▼──────────┐                                    │        │
//!  │  arrange_models    │                                    │        │
//!  └───────┬────────────┘                                    │        │
//!       models ──────────────────────────────────────────────┼────────┼──► models
//!  ┌ Serve ▼─────────────────────────────────────────────────▼────────▼───────┐
//!  │  with_features: the queries' aggregates as of the start of their epoch   │
//!  │  answer: scored by the newest version published by the query's time ─────┼──► answers
//!  └──────────────────────────────────────────────────────────────────────────┘
//! ```
//!
//! The store leaves the graph too ([`Graph::store`]), for [`serve::changes`], which keeps the
//! serving state outside the graph up to date. The records that travel beside facts are in
//! [`event`]; [`fact`], [`plan`], [`fixed`] and [`hashing`] are shared by every stage, and
//! [`error`] holds what the stages could not use.
//!
//! Every collection is timestamped with event time in seconds. Epochs are `tick_secs` long;
//! the readers close an epoch when their input has moved past it, and a training round is
//! merged at each epoch's close.

pub mod checkpoint;
pub mod collect;
pub mod error;
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

use differential_dataflow::{AsCollection, VecCollection};
use timely::dataflow::operators::vec::{Filter, Map};
use timely::dataflow::operators::{Concat, Enter, Leave};
use timely::dataflow::{Scope, StreamVec};

use crate::checkpoint::{Checkpointing, Part};
use crate::error::Errors;
use crate::event::{Answer, Event, LabelRequest, Query};
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
    /// The facts the graph could not use, with the reason, on the worker that found each: a
    /// fact without its key, a value that does not fit fixed point (see [`error`]).
    pub errors: Errors<'scope>,
    /// What each challenger learned, in the order of [`Plan::challengers`]; empty for a
    /// one-model plan.
    pub challengers: Vec<Challenger<'scope>>,
    /// Each challenger compared with the champion on the same examples, and the drifts
    /// detected on every variant's loss, at the close of each epoch that had any, at worker 0
    /// (see [`learn::compare`]).
    pub variant_reports: StreamVec<'scope, Time, learn::compare::VariantReport>,
}

/// What a challenger, a variant trained beside the champion, produces.
pub struct Challenger<'scope> {
    /// The challenger's name.
    pub name: String,
    /// Its progressive metrics of each epoch, at worker 0.
    pub epochs: StreamVec<'scope, Time, EpochMetrics>,
    /// Its versions, published and retracted as the champion's are; they are not served.
    pub versions: VecCollection<'scope, Time, (Symbol, Arc<ModelVersion>)>,
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

/// Builds the whole pipeline over facts, their corrections, and queries: one named region per
/// component, in the order data flows through them.
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
    let checkpointing = Checkpointing::off();
    build_with(
        plan,
        settings,
        &checkpointing,
        facts,
        corrections,
        queries,
        ends,
    )
}

/// [`build`], resuming from the state `checkpointing` holds, and keeping what its next
/// checkpoints need when it exports (see [`checkpoint`]).
///
/// A graph that resumes from a cut `T` expects its inputs to give nothing before `T`.
pub fn build_with<'scope>(
    plan: &Rc<Plan>,
    settings: Settings,
    checkpointing: &Rc<Checkpointing>,
    facts: VecCollection<'scope, Time, Fact>,
    corrections: VecCollection<'scope, Time, collect::Correction>,
    queries: VecCollection<'scope, Time, Query>,
    ends: StreamVec<'scope, Time, learn::train::EndOfReading>,
) -> Graph<'scope> {
    let scope = facts.scope();
    checkpointing.set_layout(scope.index(), scope.peers());
    let cut = checkpointing.resumed_at();
    // what was given before the cut comes back just before it
    let (facts, corrections) = match cut {
        Some(cut) => {
            let at = checkpoint::before(cut);
            let restored = checkpointing
                .resume_with(|state| {
                    let facts = std::mem::take(&mut state.facts);
                    let corrections = std::mem::take(&mut state.corrections);
                    let facts_ahead = std::mem::take(&mut state.facts_ahead);
                    let corrections_ahead = std::mem::take(&mut state.corrections_ahead);
                    (facts, corrections, facts_ahead, corrections_ahead)
                })
                .unwrap_or_default();
            // what was given ahead of the cut is given again at its own time
            let old_facts = restored.0.into_iter().map(|(fact, diff)| (fact, at, diff));
            let old_facts = old_facts.chain(restored.2);
            let old_corrections = restored.1.into_iter().map(|(c, diff)| (c, at, diff));
            let old_corrections = old_corrections.chain(restored.3);
            let old_facts = checkpoint::resumed(&facts, old_facts.collect());
            let old_corrections = checkpoint::resumed(&facts, old_corrections.collect());
            (facts.concat(old_facts), corrections.concat(old_corrections))
        }
        None => (facts, corrections),
    };
    checkpoint::keep_consolidated(
        &facts,
        checkpointing,
        Part::Facts,
        "Checkpoint: facts",
        |state, (before, after)| (state.facts, state.facts_ahead) = (before, after),
    );
    checkpoint::keep_consolidated(
        &corrections,
        checkpointing,
        Part::Corrections,
        "Checkpoint: corrections",
        |state, (before, after)| (state.corrections, state.corrections_ahead) = (before, after),
    );
    let collected = collect_region(scope, plan, facts, corrections, queries);
    // examples, labels and the exact regression learn from what follows the cut only
    let example_facts = after(&collected.sources[usize::from(plan.examples.source)], cut);
    let transformed = transform_region(
        scope,
        plan,
        &collected.sources,
        &example_facts,
        checkpointing,
    );
    // the versions in the serving window at the cut are served again, but not published again
    let live = checkpointing
        .resume_with(|state| state.trainer.as_ref().map(|trainer| trainer.live.clone()))
        .flatten();
    let learned = learn_region(
        scope,
        plan,
        settings,
        &example_facts,
        transformed.clone(),
        ends,
        checkpointing,
    );
    let served = match live {
        Some(live) if !live.is_empty() => {
            let at = checkpoint::before(cut.unwrap_or(0));
            let model = hashing::symbol(plan.model.name.as_bytes());
            let live = live
                .into_iter()
                .map(|version| ((model, Arc::new(version)), at, 1))
                .collect();
            learned
                .versions
                .clone()
                .concat(checkpoint::resumed(&learned.versions, live))
        }
        _ => learned.versions.clone(),
    };
    let models = publish_region(scope, served);
    let answers = serve_region(scope, plan, collected.queries, &transformed.store, &models);
    Graph {
        answers,
        epochs: learned.epochs,
        versions: learned.versions,
        models,
        exact: learned.exact,
        store: transformed.store,
        errors: transformed.errors,
        challengers: learned.challengers,
        variant_reports: learned.variant_reports,
    }
}

/// The updates of `collection` at or after `cut`, when there is one: a resumed graph's
/// updates before it are the state it resumed from.
fn after<'scope, D: differential_dataflow::Data>(
    collection: &VecCollection<'scope, Time, D>,
    cut: Option<Time>,
) -> VecCollection<'scope, Time, D> {
    match cut {
        Some(cut) => collection
            .inner
            .clone()
            .filter(move |(_, time, _)| *time >= cut)
            .as_collection(),
        None => collection.clone(),
    }
}

/// What collection hands on: one collection of facts per source, and the queries as events.
struct Collected<'scope> {
    sources: Vec<VecCollection<'scope, Time, Fact>>,
    queries: VecCollection<'scope, Time, Event>,
}

/// Collect: facts split by source with corrections applied, and queries made into events.
fn collect_region<'scope>(
    scope: Scope<'scope, Time>,
    plan: &Rc<Plan>,
    facts: VecCollection<'scope, Time, Fact>,
    corrections: VecCollection<'scope, Time, collect::Correction>,
    queries: VecCollection<'scope, Time, Query>,
) -> Collected<'scope> {
    scope.region_named("Collect", |region| {
        let facts = facts.enter_region(region);
        let corrections = corrections.enter_region(region);
        let sources = collect::split_sources(plan, facts, corrections);
        let queries = collect::query_events(plan, queries.enter_region(region));
        Collected {
            sources: sources
                .into_iter()
                .map(|source| source.leave_region(scope))
                .collect(),
            queries: queries.leave_region(scope),
        }
    })
}

/// What transformation hands on.
#[derive(Clone)]
struct Transformed<'scope> {
    /// The feature store, which serving reads too.
    store: Store<'scope>,
    /// Examples with their features as they stood just before each.
    examples: VecCollection<'scope, Time, Event>,
    /// Delayed labels, counted when due; empty when labels are known at once.
    labels: VecCollection<'scope, Time, LabelRequest>,
    /// Records into and out of the example lookups, to measure join amplification.
    join_counts: StreamVec<'scope, Time, evaluate::JoinCounts>,
    /// The facts transformation could not use.
    errors: Errors<'scope>,
}

/// Transform: the feature store, the examples with their features, and their labels.
fn transform_region<'scope>(
    scope: Scope<'scope, Time>,
    plan: &Rc<Plan>,
    sources: &[VecCollection<'scope, Time, Fact>],
    example_facts: &VecCollection<'scope, Time, Fact>,
    checkpointing: &Rc<Checkpointing>,
) -> Transformed<'scope> {
    let cut = checkpointing.resumed_at();
    scope.region_named("Transform", |region| {
        let sources: Vec<_> = sources
            .iter()
            .map(|source| source.clone().enter_region(region))
            .collect();
        let (store, store_errors) = features::feature_store(plan, &sources);
        // the errors of facts before a cut were found before it
        let store_errors = after(&store_errors, cut);
        let example_facts = example_facts.clone().enter_region(region);
        let (events, example_errors) = examples::example_events(plan, example_facts.clone());
        let examples =
            examples::with_features(plan, events.clone(), &store, |time| time, "examples");
        // one record out of the lookups per example in, or the join amplifies; examples are
        // counted when their facts are given, so those given ahead of a cut resumed from
        // were counted before it
        let given = checkpoint::sent_from(events.inner, cut);
        let join_counts =
            evaluate::count_records(given, "Count: examples in", |count| evaluate::JoinCounts {
                examples_in: count,
                lookup_outputs: 0,
            })
            .concat(evaluate::count_records(
                examples.inner.clone(),
                "Count: lookup outputs",
                |count| evaluate::JoinCounts {
                    examples_in: 0,
                    lookup_outputs: count,
                },
            ));
        let (labels, label_errors) = match labels::label_requests(plan, example_facts) {
            Some((requests, errors)) => {
                // the requests pending at the cut, due at their own times
                let pending = checkpointing
                    .resume_with(|state| std::mem::take(&mut state.labels))
                    .unwrap_or_default();
                let requests = requests.concat(checkpoint::resumed(&examples, pending));
                checkpoint::keep_pending_labels(&requests, checkpointing);
                (labels::labels(plan, requests, &store), errors)
            }
            None => (collect::empty(&examples), collect::empty(&examples)),
        };
        let errors = store_errors.concat(example_errors).concat(label_errors);
        Transformed {
            errors: errors.leave_region(scope),
            store: store.leave_region(scope),
            examples: examples.leave_region(scope),
            labels: labels.leave_region(scope),
            join_counts: join_counts.leave(scope),
        }
    })
}

/// What learning hands on.
struct Learned<'scope> {
    versions: VecCollection<'scope, Time, (Symbol, Arc<ModelVersion>)>,
    epochs: StreamVec<'scope, Time, EpochMetrics>,
    exact: Option<StreamVec<'scope, Time, learn::ridge::ExactReport>>,
    challengers: Vec<Challenger<'scope>>,
    variant_reports: StreamVec<'scope, Time, learn::compare::VariantReport>,
}

/// Learn: training with merge rounds, its progressive validation, and the exact regression.
fn learn_region<'scope>(
    scope: Scope<'scope, Time>,
    plan: &Rc<Plan>,
    settings: Settings,
    example_facts: &VecCollection<'scope, Time, Fact>,
    transformed: Transformed<'scope>,
    ends: StreamVec<'scope, Time, learn::train::EndOfReading>,
    checkpointing: &Rc<Checkpointing>,
) -> Learned<'scope> {
    scope.region_named("Learn", |region| {
        let examples = transformed.examples.enter_region(region);
        let labels = transformed.labels.enter_region(region);
        let ends = ends.enter(region);
        let join_counts = transformed.join_counts.enter(region);
        // every variant trains on the same examples and labels, each featurising its own
        let mut variants = (0..=plan.challengers.len()).map(|variant| {
            let variant_plan = match variant {
                0 => Rc::clone(plan),
                _ => Rc::new(plan.for_variant(variant)),
            };
            let trained = learn::train::train(
                &variant_plan,
                variant,
                settings.first_version,
                examples.clone(),
                labels.clone(),
                ends.clone(),
                checkpointing,
            );
            let tagged = trained
                .outcomes
                .clone()
                .map(move |outcome| (variant, outcome));
            let epochs = evaluate::evaluate(
                variant,
                trained.outcomes,
                join_counts.clone(),
                plan.tick_secs,
                checkpointing,
            );
            (
                variant_plan.model.name.clone(),
                trained.versions,
                epochs,
                tagged,
            )
        });
        let (champion, champion_versions, epochs, mut tagged) =
            variants.next().expect("the champion");
        let mut names = vec![champion];
        let mut challengers = Vec::new();
        for (name, versions, epochs, outcomes) in variants {
            names.push(name.clone());
            tagged = tagged.concat(outcomes);
            challengers.push(Challenger {
                name,
                versions: versions.leave_region(scope),
                epochs: epochs.leave(scope),
            });
        }
        // every variant scored every example: compare them in pairs, and watch for drift
        let variant_reports = learn::compare::compare(names, tagged, plan.tick_secs, checkpointing);
        // the exact regression reads the example facts themselves, retractions included
        let exact = plan.exact.as_ref().and_then(|_| {
            learn::exact::exact(
                plan,
                example_facts.clone().enter_region(region),
                checkpointing,
            )
        });
        Learned {
            versions: champion_versions.leave_region(scope),
            epochs: epochs.leave(scope),
            exact: exact.map(|reports| reports.leave(scope)),
            challengers,
            variant_reports: variant_reports.leave(scope),
        }
    })
}

/// Publish: the versions arranged on every worker.
fn publish_region<'scope>(
    scope: Scope<'scope, Time>,
    versions: VecCollection<'scope, Time, (Symbol, Arc<ModelVersion>)>,
) -> Models<'scope> {
    scope.region_named("Publish", |region| {
        versions::arrange_models(versions.enter_region(region)).leave_region(scope)
    })
}

/// Serve: queries read the feature store as of the start of their epoch, and are answered by
/// the newest version published by then.
fn serve_region<'scope>(
    scope: Scope<'scope, Time>,
    plan: &Rc<Plan>,
    queries: VecCollection<'scope, Time, Event>,
    store: &Store<'scope>,
    models: &Models<'scope>,
) -> StreamVec<'scope, Time, Answer> {
    scope.region_named("Serve", |region| {
        let store = store.clone().enter_region(region);
        let models = models.clone().enter_region(region);
        let tick = plan.tick_secs;
        let queries = examples::with_features(
            plan,
            queries.enter_region(region),
            &store,
            move |time| time - time % tick,
            "queries",
        );
        serve::answer::answer(plan, queries, &models).leave(scope)
    })
}
