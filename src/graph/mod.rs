//! Reading the agent directory (blueprints, agent identities, agent users, agent risk) from
//! Microsoft Graph.
//!
//! [`credential`] (the client credentials flow) and [`client`] (access token, bounded GETs,
//! paging, retries).

pub mod client;
pub mod credential;
pub mod error;
pub mod secret;

pub use client::{Deadline, GraphClient};
pub use error::GraphError;
pub use secret::Secret;
