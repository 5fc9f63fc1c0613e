//! The job store on disk, the detached worker that runs a job, and how a job is signalled.

pub mod kill;
pub mod outcome;
pub mod store;
pub mod sys;
pub mod worker;
