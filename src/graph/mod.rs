//! Reading the agent directory (blueprints, agent identities, agent users, agent risk) from
//! Microsoft Graph.
//!
//! The pieces, in the order a sync uses them: [`credential`] (the client credentials
//! flow), [`client`] (access token, bounded GETs, paging, retries), [`reader`] (the four
//! collections) and [`mapping`] (Graph objects to directory entries).

pub mod client;
pub mod credential;
pub mod error;
pub mod mapping;
pub mod reader;
pub mod secret;

pub use client::{Deadline, GraphClient};
pub use error::GraphError;
pub use mapping::{GraphDirectory, ObjectCounts};
pub use reader::read_directory;
pub use secret::Secret;
