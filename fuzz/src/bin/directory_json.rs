//! `Directory::parse` on arbitrary text: the operator's directory file.
//!
//! An accepted directory must be consistent: every id a lower-case GUID, and an agent that
//! names its agent user must find it listed with itself as the parent. (An agent's blueprint
//! and an agent user's parent need not be listed: Entra keeps such orphans, and the gateway
//! refuses them as `unknown_blueprint`.) Written back out as JSON, it must parse again to
//! the same entries. A refusal must say why.

#![no_main]

use agentgate::directory::{Directory, DirectoryError, DirectoryFile};
use agentgate::guid::is_guid;
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fn lower_guid(id: &str) -> bool {
    is_guid(id) && !id.bytes().any(|b| b.is_ascii_uppercase())
}

/// The directory as a file, in a fixed order (the file's maps are sorted).
fn written_out(directory: &Directory) -> String {
    let file = DirectoryFile {
        blueprints: directory.blueprints.clone().into_iter().collect(),
        agents: directory.agents.clone().into_iter().collect(),
        agent_users: directory.agent_users.clone().into_iter().collect(),
    };
    serde_json::to_string(&file).expect("an accepted directory serialises")
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let file = Path::new("directory.json");
    let directory = match Directory::parse(text, file) {
        Ok(directory) => directory,
        Err(DirectoryError::Invalid { problems, .. }) => {
            assert!(!problems.is_empty(), "refused without a problem");
            return;
        }
        Err(_) => return,
    };
    for id in directory.blueprints.keys() {
        assert!(lower_guid(id));
    }
    for (id, agent) in &directory.agents {
        assert!(lower_guid(id) && lower_guid(&agent.blueprint));
        assert!(agent.sponsors.iter().all(|s| lower_guid(&s.id)));
        if let Some(user) = &agent.agent_user {
            let parent = directory.agent_users.get(user).map(|u| &u.parent_agent);
            assert_eq!(
                parent,
                Some(id),
                "agent {id} names an agent user that is not its own"
            );
        }
    }
    for (id, user) in &directory.agent_users {
        assert!(lower_guid(id) && lower_guid(&user.parent_agent));
    }

    let json = written_out(&directory);
    let again = Directory::parse(&json, file).expect("a written directory parses again");
    assert_eq!(
        written_out(&again),
        json,
        "the directory changed on the way round"
    );
});
