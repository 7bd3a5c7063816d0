//! Learning: the online learner, the operator that trains it across workers, and the merge of
//! the workers' replicas at each round.
pub mod logistic;
pub mod merge;
pub mod train;
