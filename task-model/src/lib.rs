//! The vocabulary of portal-sync: local tasks, subjects and users, portal tasks,
//! statuses and their forward-only transitions, validation, the job payload
//! (`SyncJob`) and queue name, the settings file, and the `TaskStore` trait with
//! its SQLite and PostgreSQL implementations.

pub mod job;
pub mod settings;
pub mod store;
pub mod task;
pub mod transition;
pub mod validate;

pub use job::{JobKind, PullPage, QUEUE_NAME, SyncJob};
pub use settings::{Env, Settings, SettingsError};
pub use task::{
    HostTask, LocalStatus, LocalTask, PortalDate, PortalState, PortalStatus, PortalTask, Subject,
    TaskError, TaskId, User,
};
pub use transition::{IgnoreReason, UpdateDecision, decide_update, decide_update_for};
pub use validate::{ValidationErrors, validate_task};
