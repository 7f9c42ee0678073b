# Tests for steps 1-4 of the agent chain (decision.rego): blueprint and agent
# directory state, as copied into input by the gateway.
package agentgate_test

test_directory_agent_kinds_take_agent_chain if {
	decide(with_patch(agent_app, {"blueprint": {"known": false}})) == denied("unknown_blueprint")
	decide(with_patch(agent_obo, {"blueprint": {"known": false}})) == denied("unknown_blueprint")
	decide(with_patch(agent_user, {"blueprint": {"known": false}})) == denied("unknown_blueprint")
}

test_directory_non_agent_kinds_skip_agent_chain if {
	decide(with_patch(app, {"blueprint": {"known": false}})) == allowed
	decide(with_patch(user, {"blueprint": {"known": false}})) == denied("non_agent_denied")
	decide(with_patch(user, {"token": {"kind": "app_obo_agent_user"}, "blueprint": {"known": false}})) == denied("non_agent_denied")
}

test_directory_unknown_blueprint_denied if {
	data.agentgate.agent_decision(with_patch(agent_app, {"blueprint": {"known": false}})) == denied("unknown_blueprint")
	decide(with_patch(agent_app, {"blueprint": {"known": false}})) == denied("unknown_blueprint")
	decide(with_patch(agent_app, {"blueprint": {"known": null}})) == denied("unknown_blueprint")
	decide(with_patch(agent_app, {"blueprint": null})) == denied("unknown_blueprint")
}

test_directory_known_blueprint_allowed if {
	decide(agent_app) == allowed
}

test_directory_blueprint_disabled_denied if {
	data.agentgate.agent_decision(with_patch(agent_app, {"blueprint": {"disabled": true}})) == denied("blueprint_disabled")
	decide(with_patch(agent_app, {"blueprint": {"disabled": true}})) == denied("blueprint_disabled")
}

test_directory_blueprint_disabled_fails_closed if {
	decide(with_patch(agent_app, {"blueprint": {"disabled": null}})) == denied("blueprint_disabled")
	decide(with_patch(agent_app, {"blueprint": {"disabled": "false"}})) == denied("blueprint_disabled")
}

test_directory_blueprint_enabled_allowed if {
	decide(with_patch(agent_obo, {"blueprint": {"disabled": false}})) == allowed
}

test_directory_agent_disabled_denied if {
	data.agentgate.agent_decision(with_patch(agent_obo, {"agent": {"enabled": false}})) == denied("agent_disabled")
	decide(with_patch(agent_obo, {"agent": {"enabled": false}})) == denied("agent_disabled")
	decide(with_patch(agent_obo, {"agent": {"enabled": null}})) == denied("agent_disabled")
	decide(with_patch(agent_obo, {"agent": null})) == denied("agent_disabled")
}

test_directory_agent_enabled_allowed if {
	decide(with_patch(agent_obo, {"agent": {"enabled": true}})) == allowed
}

# An agent unknown to the directory under a known blueprint is not blocked.
test_directory_unknown_agent_of_known_blueprint_allowed if {
	decide(with_patch(agent_app, {"agent": {"id": "agent-new", "known": false, "display_name": null}})) == allowed
}

test_directory_agent_user_disabled_denied if {
	inp := with_patch(agent_user, {"user": {"enabled": false}})
	data.agentgate.agent_decision(inp) == denied("agent_user_disabled")
	decide(inp) == denied("agent_user_disabled")
	decide(with_patch(agent_user, {"user": null})) == denied("agent_user_disabled")
}

test_directory_agent_user_enabled_allowed if {
	decide(agent_user) == allowed
}

# The agent-user check is specific to kind agent_user.
test_directory_agent_user_check_only_for_agent_user_kind if {
	decide(with_patch(agent_obo, {"user": {"enabled": false}})) == allowed
}
