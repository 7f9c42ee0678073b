# Non-agent callers (app, user, app_obo_agent_user): allowed only by an
# explicit rule in data.access.non_agent[route id] (passed in as rules) that
# matches the token kind, the client (when "clients" is listed), the method,
# the path and a permission (a role for "app", a scope for delegated kinds).
# Unknown token kinds have no permission field and are never allowed.
package agentgate

non_agent_decision(inp, rules) := {"allow": true, "reason": "allowed"} if {
	non_agent_grants(inp, rules)
} else := deny_insufficient_scope(object.get({"app": "missing_role"}, inp.token.kind, "missing_scope")) if {
	any_non_agent_rule_applies(inp, rules)
} else := deny("non_agent_denied")

# Some applicable rule asks for a permission the token holds.
non_agent_grants(inp, rules) if {
	field := {"app": "roles", "user": "scopes", "app_obo_agent_user": "scopes"}[inp.token.kind]
	some rule in rules
	non_agent_rule_applies(rule, inp)
	some permission in rule[field]
	permission in inp.token[field]
}

any_non_agent_rule_applies(inp, rules) if {
	some rule in rules
	non_agent_rule_applies(rule, inp)
}

# Everything but the permission. No "clients" key admits any client; an
# empty list admits none.
non_agent_rule_applies(rule, inp) if {
	inp.token.kind in rule.kinds
	inp.actor.id in object.get(rule, "clients", [inp.actor.id])
	rule_matches(rule, inp.request.method, concat("", [inp.request.path, "/"]))
}
