# Tests for step 5 of the agent chain (decision.rego): risk "high" on the
# blueprint or the agent blocks; lower levels do not.
package agentgate_test

test_risk_high_blueprint_denied if {
	inp := with_patch(agent_app, {"blueprint": {"risk": "high"}})
	data.agentgate.agent_decision(inp) == denied("risk_high")
	decide(inp) == denied("risk_high")
}

test_risk_high_agent_denied if {
	inp := with_patch(agent_obo, {"agent": {"risk": "high"}})
	data.agentgate.agent_decision(inp) == denied("risk_high")
	decide(inp) == denied("risk_high")
}

test_risk_below_high_allowed if {
	decide(with_patch(agent_app, {"blueprint": {"risk": "medium"}, "agent": {"risk": "medium"}})) == allowed
	decide(with_patch(agent_app, {"blueprint": {"risk": "none"}, "agent": {"risk": "low"}})) == allowed
}
