//! Learning: the logistic model and its optimizers, the operator that trains it across
//! workers, and the merge of the workers' replicas at each round.
pub mod adagrad;
pub mod ftrl;
pub mod logistic;
pub mod merge;
pub mod optimizer;
pub mod sgd;
pub mod train;
