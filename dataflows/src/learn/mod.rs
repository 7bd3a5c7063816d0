//! Learning: the online learner, and the operator that trains it across workers.
pub mod logistic;
