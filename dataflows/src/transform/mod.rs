//! Transformation: facts become the feature store, examples with their features as they stood
//! just before each, and delayed labels; and an event becomes the vector a model scores.
pub mod examples;
pub mod features;
pub mod featurize;
pub mod fill;
pub mod labels;
pub mod lookup;
