# Tests for non_agent.rego: apps, users and app_obo_agent_user callers.
package agentgate_test

orders_app_rule := access.non_agent.orders[0]

orders_user_rule := access.non_agent.orders[1]

test_non_agent_app_rule_allowed if {
	data.agentgate.non_agent_decision(app, access.non_agent.orders) == allowed
	decide(app) == allowed
}

test_non_agent_app_other_client_denied if {
	inp := with_patch(app, {"actor": {"id": "client-2"}})
	not data.agentgate.non_agent_rule_applies(orders_app_rule, inp)
	decide(inp) == denied("non_agent_denied")
}

test_non_agent_method_or_path_denied if {
	decide(request(app, "POST", "/orders")) == denied("non_agent_denied")
	decide(request(app, "GET", "/ordersX")) == denied("non_agent_denied")
}

test_non_agent_route_without_rules_denied if {
	decide(with_patch(app, {"route": {"id": "crm"}})) == denied("non_agent_denied")
	data.agentgate.decision == denied("non_agent_denied") with input as app with data.access as {}
	data.agentgate.non_agent_decision(app, []) == denied("non_agent_denied")
}

test_non_agent_missing_role if {
	inp := with_patch(app, {"token": {"roles": ["Orders.Write.All"]}})
	data.agentgate.non_agent_rule_applies(orders_app_rule, inp)
	data.agentgate.non_agent_decision(inp, access.non_agent.orders) == denied_scope("missing_role")
	decide(inp) == denied_scope("missing_role")
}

test_non_agent_user_rule_without_clients_allowed if {
	inp := request(user, "GET", "/orders/public/catalog")
	decide(inp) == allowed
	decide(with_patch(inp, {"actor": {"id": "any-client"}})) == allowed
}

test_non_agent_user_outside_rule_denied if {
	decide(user) == denied("non_agent_denied") # /orders/42 is not under /orders/public
}

test_non_agent_user_missing_scope if {
	inp := with_patch(request(user, "GET", "/orders/public"), {"token": {"scopes": ["Orders.Write"], "roles": ["Orders.Read"]}})
	decide(inp) == denied_scope("missing_scope")
}

test_non_agent_kind_not_listed_denied if {
	inp := with_patch(user, {"token": {"kind": "app_obo_agent_user"}, "user": {"type": "agent_user"}})
	decide(request(inp, "GET", "/orders/public")) == denied("non_agent_denied")
	not data.agentgate.non_agent_rule_applies(orders_user_rule, request(inp, "GET", "/orders/public"))
}

test_non_agent_app_obo_agent_user_uses_scopes if {
	rules := [{"kinds": ["app_obo_agent_user"], "methods": ["GET"], "path_prefixes": ["/"], "roles": ["R"], "scopes": ["S"]}]
	inp := with_patch(user, {"token": {"kind": "app_obo_agent_user", "roles": ["R"], "scopes": ["S"]}})
	data.agentgate.non_agent_decision(inp, rules) == allowed
	data.agentgate.non_agent_decision(with_patch(inp, {"token": {"scopes": []}}), rules) == denied_scope("missing_scope")
}

# Unknown token kinds are never allowed, even if an operator lists them.
test_non_agent_unknown_kind_denied if {
	rules := [{"kinds": ["service"], "methods": ["*"], "path_prefixes": ["/"], "roles": ["Orders.Read.All"], "scopes": ["Orders.Read.All"]}]
	inp := with_patch(app, {"token": {"kind": "service"}})
	data.agentgate.non_agent_decision(inp, rules) == denied_scope("missing_scope")
	decide(inp) == denied("non_agent_denied")
}

test_non_agent_clients if {
	base := {"kinds": ["app"], "methods": ["GET"], "path_prefixes": ["/orders"]}
	data.agentgate.non_agent_rule_applies(base, app)
	data.agentgate.non_agent_rule_applies(object.union(base, {"clients": ["client-1"]}), app)
	not data.agentgate.non_agent_rule_applies(object.union(base, {"clients": ["client-2"]}), app)
	not data.agentgate.non_agent_rule_applies(object.union(base, {"clients": []}), app)
}
