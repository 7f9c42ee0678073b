# Entrypoint: data.agentgate.decision, the one value the gateway reads.
#
# Priority comes from `else` chains: the first clause whose body holds wins,
# and every chain ends in an unconditional clause, so the decision is always
# defined and can never conflict. Reason codes are a stable API.
#
# Steps 1-5 (directory state and risk) are checked inline here: the gateway
# has already copied them into input.blueprint / input.agent / input.user.
# They are fail-closed: a flag that is missing or not a boolean denies.
#
# Shape, for speed and for the compiled engine (regorus's RVM, which the
# gateway uses once it agrees with the interpreter): the body of a clause in
# an `else` chain never iterates and never assigns from a call that may be
# undefined. Iteration lives in boolean helpers, and lookups that may miss go
# through object.get with a default, so the next `else` is always reached.
# Data is only looked up by the caller's own ids.
package agentgate

decision := {"allow": false, "status": 400, "reason": "invalid_path"} if {
	# The gateway only hands over normalised paths; a policy set must not depend on it.
	not normal_path(object.get(input, ["request", "path"], ""))
} else := agent_decision(input) if {
	input.token.kind in {"agent_app", "agent_obo", "agent_user"}
} else := non_agent_decision(
	input,
	object.get(access_data, ["non_agent", object.get(input, ["route", "id"], "")], []),
)

agent_decision(inp) := deny("unknown_blueprint") if {
	not inp.blueprint.known == true
} else := deny("blueprint_disabled") if {
	not inp.blueprint.disabled == false
} else := deny("agent_disabled") if {
	not inp.agent.enabled == true
} else := deny("agent_user_disabled") if {
	# Only the agent's own user account; app_obo_agent_user is a non-agent kind.
	inp.token.kind == "agent_user"
	not inp.user.enabled == true
} else := deny("risk_confirmed_compromised") if {
	# An admin confirmed the compromise in Entra ID Protection (or the operator
	# says so locally): named apart from a detected high risk.
	inp.blueprint.risk_state == "confirmedCompromised"
} else := deny("risk_confirmed_compromised") if {
	inp.agent.risk_state == "confirmedCompromised"
} else := deny("risk_confirmed_compromised") if {
	inp.token.kind == "agent_user"
	inp.user.risk_state == "confirmedCompromised"
} else := deny("risk_high") if {
	inp.blueprint.risk == "high"
} else := deny("risk_high") if {
	inp.agent.risk == "high"
} else := deny("risk_high") if {
	inp.token.kind == "agent_user"
	inp.user.risk == "high"
} else := agent_access_decision(
	inp,
	object.get(access_data, ["blueprints", object.get(inp, ["blueprint", "id"], "")], {}),
	object.get(access_data, ["agents", object.get(inp, ["agent", "id"], "")], {}),
	object.get(access_data, "named_locations", {}),
)

# Steps 6-9, given the caller's entries in data.access.blueprints and
# data.access.agents ({} when absent) and data.access.named_locations.
# Agent conditions apply on top of the blueprint's.
agent_access_decision(inp, bp, ag, named_locations) := deny("location_denied") if {
	bp.locations
	not in_locations(bp.locations, inp.request.client_ip, named_locations)
} else := deny("location_denied") if {
	ag.locations
	not in_locations(ag.locations, inp.request.client_ip, named_locations)
} else := deny("outside_hours") if {
	bp.hours
	not within_hours(bp.hours, inp.request.time_ns)
} else := deny("outside_hours") if {
	ag.hours
	not within_hours(ag.hours, inp.request.time_ns)
} else := route_decision(
	inp,
	object.get(bp, ["routes", object.get(inp, ["route", "id"], "")], []),
	concat("", [object.get(inp, ["request", "path"], ""), "/"]),
	object.get({"agent_app": "roles"}, inp.token.kind, "scopes"),
	object.get(inp.blueprint, "revoked_permissions", []),
)

# data.access, or {} when the access document is missing.
default access_data := {}

access_data := data.access

deny(reason) := {"allow": false, "status": 403, "reason": reason}

# Missing or revoked role/scope: the gateway answers with an
# insufficient_scope challenge.
deny_insufficient_scope(reason) := {
	"allow": false,
	"status": 403,
	"reason": reason,
	"error": "insufficient_scope",
}
