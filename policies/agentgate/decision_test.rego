# Tests for decision.rego: output shape, priority of the else chain, and that a
# decision is always defined.
package agentgate_test

test_decision_allows_each_agent_kind if {
	decide(agent_app) == allowed
	decide(agent_obo) == allowed
	decide(agent_user) == allowed
}

test_decision_deny_shape_without_scope_error if {
	d := decide(request(agent_app, "DELETE", "/orders/42"))
	d == {"allow": false, "status": 403, "reason": "route_not_allowed"}
	not d.error
}

test_decision_deny_shape_with_scope_error if {
	d := decide(with_patch(agent_app, {"token": {"roles": []}}))
	d == {"allow": false, "status": 403, "reason": "missing_role", "error": "insufficient_scope"}
}

test_decision_helpers if {
	data.agentgate.deny("x") == {"allow": false, "status": 403, "reason": "x"}
	data.agentgate.deny_insufficient_scope("y") == {"allow": false, "status": 403, "reason": "y", "error": "insufficient_scope"}
}

# Each step of the chain wins over every later one.
everything_wrong := with_patch(agent_user, {
	"request": {"method": "DELETE", "client_ip": "8.8.8.8", "time_ns": 1767452400000000000},
	"token": {"scopes": []},
	"agent": {"id": "agent-fenced", "enabled": false, "risk": "high", "risk_state": "confirmedCompromised"},
	"blueprint": {"id": "bp-fenced", "known": false, "disabled": true, "risk": "high", "revoked_permissions": ["Orders.Read"]},
	"user": {"enabled": false},
})

test_decision_priority_1_unknown_blueprint if {
	decide(everything_wrong) == denied("unknown_blueprint")
}

test_decision_priority_2_blueprint_disabled if {
	decide(with_patch(everything_wrong, {"blueprint": {"known": true}})) == denied("blueprint_disabled")
}

test_decision_priority_3_agent_disabled if {
	inp := with_patch(everything_wrong, {"blueprint": {"known": true, "disabled": false}})
	decide(inp) == denied("agent_disabled")
}

test_decision_priority_4_agent_user_disabled if {
	inp := with_patch(everything_wrong, {"blueprint": {"known": true, "disabled": false}, "agent": {"enabled": true}})
	decide(inp) == denied("agent_user_disabled")
}

test_decision_priority_5_risk_confirmed_compromised if {
	inp := with_patch(everything_wrong, {
		"blueprint": {"known": true, "disabled": false},
		"agent": {"enabled": true},
		"user": {"enabled": true},
	})
	decide(inp) == denied("risk_confirmed_compromised")
}

test_decision_priority_5_risk_high if {
	inp := with_patch(everything_wrong, {
		"blueprint": {"known": true, "disabled": false},
		"agent": {"enabled": true, "risk_state": "atRisk"},
		"user": {"enabled": true},
	})
	decide(inp) == denied("risk_high")
}

test_decision_priority_6_location_denied if {
	inp := with_patch(everything_wrong, {
		"blueprint": {"known": true, "disabled": false, "risk": "low"},
		"agent": {"enabled": true, "risk": "none", "risk_state": "none"},
		"user": {"enabled": true},
	})
	decide(inp) == denied("location_denied")
}

test_decision_priority_7_outside_hours if {
	inp := with_patch(everything_wrong, {
		"request": {"client_ip": "10.1.2.3"},
		"blueprint": {"known": true, "disabled": false, "risk": "low"},
		"agent": {"id": "agent-1", "enabled": true, "risk": "none", "risk_state": "none"},
		"user": {"enabled": true},
	})
	decide(inp) == denied("outside_hours")
}

test_decision_priority_8_route_not_allowed if {
	inp := with_patch(everything_wrong, {
		"request": {"client_ip": "10.1.2.3", "time_ns": thu_15_utc},
		"blueprint": {"known": true, "disabled": false, "risk": "low"},
		"agent": {"id": "agent-1", "enabled": true, "risk": "none", "risk_state": "none"},
		"user": {"enabled": true},
	})
	decide(inp) == denied("route_not_allowed")
}

test_decision_priority_9_permission_revoked_before_missing if {
	inp := with_patch(everything_wrong, {
		"request": {"method": "GET", "client_ip": "10.1.2.3", "time_ns": thu_15_utc},
		"token": {"scopes": ["Orders.Read"]},
		"blueprint": {"known": true, "disabled": false, "risk": "low"},
		"agent": {"id": "agent-1", "enabled": true, "risk": "none", "risk_state": "none"},
		"user": {"enabled": true},
	})
	decide(inp) == denied_scope("permission_revoked")
	decide(with_patch(inp, {"token": {"scopes": []}})) == denied_scope("missing_scope")
	decide(with_patch(inp, {"blueprint": {"revoked_permissions": []}})) == allowed
}

# Non-agent kinds never reach the agent steps, even with agent-looking fields.
test_decision_non_agent_skips_agent_steps if {
	inp := with_patch(app, {"blueprint": {"id": "bp-fenced", "known": false, "disabled": true, "risk": "high"}})
	decide(inp) == allowed
}

# Agents never fall through to data.access.non_agent rules.
test_decision_agent_ignores_non_agent_rules if {
	acc := object.union(access, {"non_agent": {"orders": [{"kinds": ["agent_app"], "methods": ["*"], "path_prefixes": ["/"], "roles": ["Orders.Read.All"]}]}})
	inp := with_patch(agent_app, {"blueprint": {"id": "bp-unlisted"}})
	data.agentgate.decision == denied("route_not_allowed") with input as inp with data.access as acc
}

test_decision_defined_for_empty_input_and_data if {
	# No request path at all is not a normalised path.
	data.agentgate.decision == {"allow": false, "status": 400, "reason": "invalid_path"} with input as {} with data.access as {}
	data.agentgate.decision == denied("non_agent_denied") with input as {"request": {"path": "/"}} with data.access as {}
}

test_decision_defined_for_malformed_agent_input if {
	data.agentgate.decision == denied("unknown_blueprint") with input as {"request": {"path": "/"}, "token": {"kind": "agent_app"}}
		with data.access as {}
	data.agentgate.decision == denied("agent_disabled") with input as {"request": {"path": "/"}, "token": {"kind": "agent_obo"}, "blueprint": {"known": true, "disabled": false}}
		with data.access as {}
	decide(with_patch(agent_app, {"route": null})) == denied("route_not_allowed")
	decide(with_patch(agent_app, {"route": {"id": null}})) == denied("route_not_allowed")
}

# Without any access data everything is denied, still with a defined decision.
test_decision_defined_without_access_data if {
	data.agentgate.decision == denied("route_not_allowed") with input as agent_app with data.access as {}
	data.agentgate.decision == denied("non_agent_denied") with input as app with data.access as {}
	data.agentgate.decision == denied("route_not_allowed") with input as agent_app with data.access as {"blueprints": {"bp-sales": {}}}
}

test_decision_agent_dispatch if {
	data.agentgate.agent_decision(agent_app) == allowed with data.access as access
	data.agentgate.agent_decision(with_patch(agent_app, {"agent": {"enabled": false}})) == denied("agent_disabled")
}

test_decision_defined_for_unknown_kind if {
	decide(with_patch(app, {"token": {"kind": "service"}})) == denied("non_agent_denied")
}
