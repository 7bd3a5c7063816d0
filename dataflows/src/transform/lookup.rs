//! As-of lookups: each request reads the feature store as it stood strictly before its
//! `as_of` time, once, and leaves with what it found.
//!
//! A plain `join` of examples with features re-emits an example every time one of its features
//! changes later (8 to 22 updates per event in the prototype). Here a request is answered
//! exactly once, as soon as the store is complete up to its `as_of`, which is the half-join of
//! delta-query dataflows. It waits only for the store, never for the epoch its own record time
//! falls in, so a query asked while an epoch is being filled is answered at once from the
//! previous epoch's state.

use std::collections::BTreeMap;

use differential_dataflow::AsCollection;
use differential_dataflow::VecCollection;
use differential_dataflow::operators::arrange::{Arranged, TraceAgent};
use differential_dataflow::trace::TraceReader;
use differential_dataflow::trace::cursor::{Cursor, cursor_list};
use differential_dataflow::trace::implementations::ValSpine;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::{Exchange, Pipeline};
use timely::dataflow::operators::Capability;
use timely::dataflow::operators::generic::Operator;
use timely::progress::frontier::AntichainRef;

use crate::fact::{Symbol, Time};
use crate::fixed::Accum;

/// The feature store's trace: `(key, aggregate index) -> ()` with [`Accum`] differences.
pub type StoreTrace = ValSpine<(Symbol, u32), (), Time, Accum>;

/// The feature store: every aggregate of every key, arranged by key across workers.
pub type Store<'scope> = Arranged<'scope, TraceAgent<StoreTrace>>;

/// The worker-routing hash of a key. The store is partitioned by it, and so are lookups.
pub fn route(key: Symbol) -> u64 {
    key
}

/// The `as_of` of a request that wants the latest complete state, whatever it is when the
/// request arrives: a live query, answered at once and never made to wait.
pub const LATEST: Time = Time::MAX;

/// What a request's fill reads the store with: the aggregate of a key, by the aggregate's
/// index, as it stood just before the request's `as_of`.
pub type Read<'a> = dyn FnMut(Symbol, usize) -> Accum + 'a;

/// How a lookup reads its requests.
pub struct LookupSpec<K, A, F, W, S> {
    /// The operator's name, for logs and profiles.
    pub name: String,
    /// The store key of a request, which routes it to the worker that owns the key; `None`
    /// routes it anywhere. The fill must read under this key only.
    pub key: K,
    /// The request's `as_of`: aggregates count updates strictly before it.
    pub as_of: A,
    /// A lower bound on the `as_of` of any request whose record time is at least the argument,
    /// so that the store can forget history no future request will ask about.
    pub as_of_floor: F,
    /// Fills a request from the store, through the reader it is given (see
    /// [`super::fill::fill_aggregates`] for events).
    pub fill: W,
    /// Records the `as_of` a request was answered at (for a [`LATEST`] request, the store's
    /// frontier when it arrived).
    pub settle: S,
}

/// Reads, for each request, the aggregates of its key as they stood just before its `as_of`.
///
/// Requests are moved to the worker that owns their key, answered once the store is complete
/// up to their `as_of` (or at once, for [`LATEST`]), and emitted at their own record time.
pub fn lookup<'scope, R, K, A, F, W, S>(
    requests: VecCollection<'scope, Time, R>,
    store: &Store<'scope>,
    spec: LookupSpec<K, A, F, W, S>,
) -> VecCollection<'scope, Time, R>
where
    R: timely::ExchangeData + differential_dataflow::Data,
    K: Fn(&R) -> Option<Symbol> + Clone + 'static,
    A: Fn(&R) -> Time + 'static,
    F: Fn(Time) -> Time + 'static,
    W: Fn(&mut R, &mut Read<'_>) + 'static,
    S: Fn(&mut R, Time) + 'static,
{
    let LookupSpec {
        name,
        key,
        as_of,
        as_of_floor,
        fill,
        settle,
    } = spec;
    let mut trace = store.trace.clone();
    let route_key = {
        let key = key.clone();
        move |update: &(R, Time, isize)| route(key(&update.0).unwrap_or(0))
    };
    requests
        .inner
        .binary_frontier::<_, CapacityContainerBuilder<Vec<(R, Time, isize)>>, _, _, _, _>(
            store.stream.clone(),
            Exchange::new(route_key),
            Pipeline,
            &name,
            move |_capability, _info| {
                // Requests waiting for the store, by (as_of, record time).
                let mut pending: BTreeMap<(Time, Time), (Capability<Time>, Vec<(R, isize)>)> =
                    BTreeMap::new();
                move |(requests, request_frontier), (batches, store_frontier), output| {
                    requests.for_each_stamp(|capability, data| {
                        for container in data {
                            for (request, time, diff) in container.drain(..) {
                                let entry = pending
                                    .entry((as_of(&request), time))
                                    .or_insert_with(|| (capability.delayed(&time, 0), Vec::new()));
                                entry.1.push((request, diff));
                            }
                        }
                    });
                    // The batches themselves are read through the trace.
                    batches.for_each(|_, _| {});

                    // Requests whose `as_of` the store has reached; the latest-state requests
                    // read whatever is complete now.
                    let store_frontier = store_frontier.frontier();
                    let complete = store_frontier.first().copied().unwrap_or(LATEST);
                    let ready: Vec<(Time, Time)> = pending
                        .keys()
                        .take_while(|(as_of, _)| {
                            *as_of != LATEST && !store_frontier.less_than(as_of)
                        })
                        .chain(pending.range((LATEST, 0)..).map(|(slot, _)| slot))
                        .copied()
                        .collect();
                    if !ready.is_empty() {
                        let mut answered: Vec<(Capability<Time>, Time, R, isize)> = Vec::new();
                        for slot in ready {
                            if let Some((capability, requests)) = pending.remove(&slot) {
                                let as_of = if slot.0 == LATEST { complete } else { slot.0 };
                                for (mut request, diff) in requests {
                                    settle(&mut request, as_of);
                                    answered.push((capability.clone(), as_of, request, diff));
                                }
                            }
                        }
                        read_store(&mut trace, &mut answered, &key, &fill);
                        for (capability, _as_of, request, diff) in answered {
                            let time = *capability.time();
                            output.session(&capability).give((request, time, diff));
                        }
                    }

                    // Let the store forget what no request, present or future, can ask about.
                    let future = request_frontier
                        .frontier()
                        .iter()
                        .map(|&time| as_of_floor(time))
                        .min();
                    let waiting = pending.keys().next().map(|&(as_of, _)| as_of);
                    // never past what is complete: a latest-state request reads exactly that
                    let floor = future
                        .into_iter()
                        .chain(waiting)
                        .min()
                        .map(|floor| floor.min(complete));
                    match floor {
                        Some(floor) => {
                            let frontier = [floor.saturating_sub(1)];
                            trace.set_logical_compaction(AntichainRef::new(&frontier));
                            trace.set_physical_compaction(AntichainRef::new(&frontier));
                        }
                        None => {
                            trace.set_logical_compaction(AntichainRef::new(&[]));
                            trace.set_physical_compaction(AntichainRef::new(&[]));
                        }
                    }
                }
            },
        )
        .as_collection()
}

/// Fills answered requests from the store's current contents.
///
/// Requests are visited in key order, so the cursor only moves forward; the history of each
/// `(key, aggregate)` is read once for all the requests of that key, and summed for each
/// request's `as_of`.
fn read_store<R, K, W>(
    trace: &mut TraceAgent<StoreTrace>,
    answered: &mut [(Capability<Time>, Time, R, isize)],
    key: &K,
    fill: &W,
) where
    K: Fn(&R) -> Option<Symbol>,
    W: Fn(&mut R, &mut Read<'_>),
{
    answered.sort_by_key(|(_, _, request, _)| key(request));
    let Some(batches) = trace.batches_through(AntichainRef::new(&[])) else {
        return;
    };
    let (mut cursor, storage) = cursor_list(batches);
    // the histories read for the requests of the current key
    let mut histories: Vec<((Symbol, u32), Vec<(Time, Accum)>)> = Vec::new();
    let mut current: Option<Option<Symbol>> = None;
    let mut last_sought: Option<(Symbol, u32)> = None;
    for (_, as_of, request, _) in answered.iter_mut() {
        let this_key = key(request);
        if current != Some(this_key) {
            histories.clear();
            current = Some(this_key);
        }
        let as_of = *as_of;
        fill(request, &mut |symbol, aggregate| {
            let store_key = (symbol, aggregate as u32);
            let position = match histories.iter().position(|(read, _)| *read == store_key) {
                Some(position) => position,
                None => {
                    // a fill that reads out of key order makes the cursor start over
                    if last_sought.is_some_and(|last| store_key < last) {
                        cursor.rewind_keys(&storage);
                    }
                    last_sought = Some(store_key);
                    let mut history = Vec::new();
                    cursor.seek_key(&storage, &store_key);
                    if cursor.get_key(&storage) == Some(&store_key) {
                        cursor.rewind_vals(&storage);
                        while cursor.val_valid(&storage) {
                            cursor.map_times(&storage, |time, diff| history.push((*time, *diff)));
                            cursor.step_val(&storage);
                        }
                    }
                    histories.push((store_key, history));
                    histories.len() - 1
                }
            };
            let mut total: Accum = (0, 0);
            for &(time, (count, sum)) in &histories[position].1 {
                if time < as_of {
                    total.0 += count;
                    total.1 += sum;
                }
            }
            total
        });
    }
}
