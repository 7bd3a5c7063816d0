//! Serving: queries answered inside the graph, and the feature changes that keep the serving
//! state outside it up to date.
pub mod answer;
pub mod changes;
