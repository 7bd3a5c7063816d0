//! Learning: the online learner, the operator that trains it across workers, the merge of the
//! workers' replicas at each round, and the exact regression with its operator.
pub mod exact;
pub mod logistic;
pub mod merge;
pub mod ridge;
pub mod train;
