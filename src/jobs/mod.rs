//! The job store on disk, the detached worker that runs a job, how a job is signalled and how
//! a job ends, waiting for it, a project job's git worktree, and the GPUs jobs wait for.

pub mod artifacts;
pub mod create;
pub mod gpu_ask;
pub mod gpu_queue;
pub mod gpus;
pub mod kill;
pub mod outcome;
pub mod prune;
pub mod slurm;
pub mod store;
pub mod sys;
pub mod timeline;
pub mod wait;
pub mod worker;
pub mod worktree;
