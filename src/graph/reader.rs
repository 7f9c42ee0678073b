//! One full read of the agent directory from Graph.
//!
//! Four collections, one after the other, every page of each (`$top` = the page size):
//!
//! 1. `GET /v1.0/servicePrincipals/microsoft.graph.agentIdentityBlueprintPrincipal`
//! 2. `GET /v1.0/servicePrincipals/microsoft.graph.agentIdentity?$expand=sponsors(...)`, then
//!    `GET /v1.0/servicePrincipals/{id}/microsoft.graph.agentIdentity/sponsors` for each agent
//!    whose expansion may have been cut at Graph's limit of 20
//! 3. `GET /v1.0/users/microsoft.graph.agentUser`
//! 4. `GET /beta/identityProtection/riskyAgents` with `Prefer: include-unknown-enum-members`
//!    (unless `read_risk = false`)
//!
//! The result is all or nothing: any failure fails the read, and the caller keeps what it had.

use super::client::{Deadline, GraphClient};
use super::error::GraphError;
use super::mapping::{
    needs_sponsor_list, AgentIdentityObject, DirectoryBuilder, GraphDirectory, AGENT_SELECT,
    AGENT_USER_SELECT, BLUEPRINT_SELECT, SPONSOR_SELECT,
};
use crate::guid::is_guid;

/// Asks Graph to name enum members added after v1 (`agentIdentityBlueprintPrincipal` as an
/// `identityType`) instead of `unknownFutureValue`.
const PREFER_UNKNOWN_ENUMS: (&str, &str) = ("prefer", "include-unknown-enum-members");

/// Reads blueprints, agents, agent users and (with `read_risk`) agent risk of `tenant`.
pub async fn read_directory(
    client: &GraphClient,
    tenant: &str,
    read_risk: bool,
    deadline: Deadline,
) -> Result<GraphDirectory, GraphError> {
    let top = client.page_size();
    let mut builder = DirectoryBuilder::new(tenant);

    client
        .for_each_page(
            &format!(
                "/v1.0/servicePrincipals/microsoft.graph.agentIdentityBlueprintPrincipal?$select={BLUEPRINT_SELECT}&$top={top}"
            ),
            &[],
            deadline,
            |page| {
                builder.add_blueprints(page);
                Ok(())
            },
        )
        .await?;

    let mut cut_sponsors = Vec::new();
    client
        .for_each_page(
            &format!(
                "/v1.0/servicePrincipals/microsoft.graph.agentIdentity?$select={AGENT_SELECT}&$expand=sponsors($select={SPONSOR_SELECT})&$top={top}"
            ),
            &[],
            deadline,
            |page: Vec<AgentIdentityObject>| {
                cut_sponsors.extend(
                    page.iter()
                        .filter(|a| needs_sponsor_list(a))
                        .map(|a| a.id.to_ascii_lowercase())
                        .filter(|id| is_guid(id)),
                );
                builder.add_agents(page);
                Ok(())
            },
        )
        .await?;
    for id in cut_sponsors {
        let mut sponsors = Vec::new();
        client
            .for_each_page(
                &format!(
                    "/v1.0/servicePrincipals/{id}/microsoft.graph.agentIdentity/sponsors?$select={SPONSOR_SELECT}&$top={top}"
                ),
                &[],
                deadline,
                |page| {
                    sponsors.extend(page);
                    Ok(())
                },
            )
            .await?;
        builder.set_sponsors(&id, sponsors);
    }

    client
        .for_each_page(
            &format!(
                "/v1.0/users/microsoft.graph.agentUser?$select={AGENT_USER_SELECT}&$top={top}"
            ),
            &[],
            deadline,
            |page| {
                builder.add_agent_users(page);
                Ok(())
            },
        )
        .await?;

    if read_risk {
        client
            .for_each_page(
                &format!("/beta/identityProtection/riskyAgents?$top={top}"),
                &[PREFER_UNKNOWN_ENUMS],
                deadline,
                |page| {
                    builder.add_risky_agents(page);
                    Ok(())
                },
            )
            .await?;
    }

    builder
        .finish()
        .map_err(|problems| GraphError::Mapping { problems })
}
