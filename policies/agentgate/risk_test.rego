# Tests for step 5 of the agent chain (decision.rego): a confirmed compromise
# (risk_state "confirmedCompromised") or risk "high" on the blueprint, the agent,
# or the agent user of an agent_user token blocks; lower levels and the other
# risk states do not.
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

test_risk_high_agent_user_denied if {
	inp := with_patch(agent_user, {"user": {"risk": "high"}})
	data.agentgate.agent_decision(inp) == denied("risk_high")
	decide(inp) == denied("risk_high")
}

# Only the agent's own user account counts: a human's risk is Entra's business
# at sign-in, and the agent_obo fixture's user is a human.
test_risk_of_a_human_user_ignored if {
	decide(with_patch(agent_obo, {"user": {"risk": "high", "risk_state": "confirmedCompromised"}})) == allowed
}

test_risk_confirmed_compromised_blueprint_denied if {
	inp := with_patch(agent_app, {"blueprint": {"risk_state": "confirmedCompromised"}})
	data.agentgate.agent_decision(inp) == denied("risk_confirmed_compromised")
	decide(inp) == denied("risk_confirmed_compromised")
}

test_risk_confirmed_compromised_agent_denied if {
	inp := with_patch(agent_obo, {"agent": {"risk_state": "confirmedCompromised"}})
	data.agentgate.agent_decision(inp) == denied("risk_confirmed_compromised")
	decide(inp) == denied("risk_confirmed_compromised")
}

test_risk_confirmed_compromised_agent_user_denied if {
	inp := with_patch(agent_user, {"user": {"risk_state": "confirmedCompromised"}})
	data.agentgate.agent_decision(inp) == denied("risk_confirmed_compromised")
	decide(inp) == denied("risk_confirmed_compromised")
}

# Entra sets the level to high when an admin confirms a compromise; the
# confirmation is the more specific reason.
test_risk_confirmed_compromised_named_before_high if {
	inp := with_patch(agent_app, {"agent": {"risk": "high", "risk_state": "confirmedCompromised"}})
	decide(inp) == denied("risk_confirmed_compromised")
}

test_risk_other_states_allowed if {
	every state in ["none", "confirmedSafe", "remediated", "dismissed", "atRisk"] {
		decide(with_patch(agent_user, {
			"blueprint": {"risk_state": state},
			"agent": {"risk_state": state},
			"user": {"risk_state": state},
		})) == allowed
	}
}

# A missing risk state (an input built before the field existed) is no risk.
test_risk_state_absent_allowed if {
	inp := json.remove(agent_app, ["agent/risk_state", "blueprint/risk_state"])
	not inp.agent.risk_state
	decide(inp) == allowed
}
