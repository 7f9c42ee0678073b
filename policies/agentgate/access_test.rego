# Tests for access.rego and steps 8-9 of the agent chain: route, method, path
# and permission matching.
package agentgate_test

test_access_route_matched_allowed if {
	decide(request(agent_app, "HEAD", "/orders")) == allowed
	data.agentgate.any_rule_matches([orders_write, orders_read], "GET", "/orders/42/")
}

test_access_route_not_configured_denied if {
	decide(with_patch(agent_app, {"route": {"id": "billing"}})) == denied("route_not_allowed")
	not data.agentgate.any_rule_matches([orders_write], "GET", "/orders/42/")
	not data.agentgate.any_rule_matches([], "GET", "/orders/42/")
}

# A known blueprint without an entry in data.access may do nothing.
test_access_blueprint_without_access_entry_denied if {
	decide(with_patch(agent_app, {"blueprint": {"id": "bp-unlisted"}})) == denied("route_not_allowed")
}

test_access_method_listed_allowed if {
	data.agentgate.rule_matches(orders_read, "HEAD", "/orders/")
	decide(with_patch(request(agent_app, "PATCH", "/orders/42"), {"token": {"roles": ["Orders.Write.All"]}})) == allowed
}

test_access_method_not_listed_denied if {
	not data.agentgate.rule_matches(orders_read, "POST", "/orders/")
	decide(request(agent_app, "DELETE", "/orders/42")) == denied("route_not_allowed")
	decide(request(agent_app, "get", "/orders/42")) == denied("route_not_allowed")
}

test_access_method_wildcard if {
	data.agentgate.rule_matches({"methods": ["*"], "path_prefixes": ["/"]}, "PURGE", "/x/")
	inp := with_patch(request(agent_app, "DELETE", "/anything/at/all"), {"route": {"id": "files"}, "token": {"roles": ["Files.All"]}})
	decide(inp) == allowed
}

# rule_matches takes the request path with a "/" appended.
test_access_prefix_matches if {
	every prefix_and_path in [
		["/", "/anything"], ["/", "/"], ["/orders", "/orders"], ["/orders", "/orders/42"],
		["/orders", "/orders/"], ["/docs/", "/docs/a"], ["/docs/", "/docs/"], ["/a/b", "/a/b/c"],
	] {
		[prefix, path] := prefix_and_path
		data.agentgate.rule_matches({"methods": ["GET"], "path_prefixes": [prefix]}, "GET", concat("", [path, "/"]))
	}
}

test_access_prefix_mismatches if {
	every prefix_and_path in [
		["/orders", "/ordersX"], ["/orders", "/order"], ["/orders", "/"], ["/docs/", "/docs"],
		["/orders/42", "/orders/420"], ["/a/b", "/a"],
	] {
		[prefix, path] := prefix_and_path
		not data.agentgate.rule_matches({"methods": ["GET"], "path_prefixes": [prefix]}, "GET", concat("", [path, "/"]))
	}
}

test_access_any_listed_prefix if {
	rule := {"methods": ["GET"], "path_prefixes": ["/a", "/b/"]}
	data.agentgate.rule_matches(rule, "GET", "/b/x/")
	not data.agentgate.rule_matches(rule, "GET", "/c/")
	not data.agentgate.rule_matches({"methods": ["GET"], "path_prefixes": []}, "GET", "/a/")
	not data.agentgate.rule_matches({"path_prefixes": ["/"]}, "GET", "/a/")
}

test_access_path_allowed if {
	decide(request(agent_app, "GET", "/orders")) == allowed
	decide(with_patch(request(agent_app, "GET", "/docs/readme"), {"route": {"id": "docs"}, "token": {"roles": ["Docs.Read"]}})) == allowed
}

test_access_path_denied if {
	decide(request(agent_app, "GET", "/ordersX")) == denied("route_not_allowed")
	decide(with_patch(request(agent_app, "GET", "/docs"), {"route": {"id": "docs"}, "token": {"roles": ["Docs.Read"]}})) == denied("route_not_allowed")
}

test_access_app_only_uses_roles if {
	decide(agent_app) == allowed
	decide(with_patch(agent_app, {"token": {"roles": [], "scopes": ["Orders.Read"]}})) == denied_scope("missing_role")
}

test_access_delegated_uses_scopes if {
	decide(agent_obo) == allowed
	decide(with_patch(agent_obo, {"token": {"scopes": [], "roles": ["Orders.Read.All"]}})) == denied_scope("missing_scope")
	decide(with_patch(agent_user, {"token": {"scopes": ["Orders.Write"]}})) == denied_scope("missing_scope")
}

# GET matches only the read rule; a write role does not help, and vice versa.
test_access_permission_must_come_from_matching_rule if {
	decide(with_patch(agent_app, {"token": {"roles": ["Orders.Write.All"]}})) == denied_scope("missing_role")
	decide(with_patch(request(agent_app, "POST", "/orders"), {"token": {"roles": ["Orders.Read.All"]}})) == denied_scope("missing_role")
}

write := request(agent_app, "POST", "/orders")

write_revoked := with_patch(write, {"blueprint": {"revoked_permissions": ["Orders.Write.All", "Orders.Write"]}})

test_access_permission_revoked_denied if {
	decide(with_patch(write_revoked, {"token": {"roles": ["Orders.Write.All"]}})) == denied_scope("permission_revoked")
}

test_access_permission_revoked_delegated_denied if {
	inp := with_patch(request(agent_obo, "PUT", "/orders/1"), {
		"token": {"scopes": ["Orders.Write"]},
		"blueprint": {"revoked_permissions": ["Orders.Write"]},
	})
	decide(inp) == denied_scope("permission_revoked")
}

# Another permission of the matching rule still satisfies it.
test_access_revoked_but_other_permission_allowed if {
	decide(with_patch(write_revoked, {"token": {"roles": ["Orders.Write.All", "Orders.Admin"]}})) == allowed
}

test_access_revoked_not_in_token_is_missing if {
	decide(with_patch(write_revoked, {"token": {"roles": ["Orders.Read.All"]}})) == denied_scope("missing_role")
}

test_access_permission_granted if {
	decide(with_patch(write, {"token": {"roles": ["Orders.Write.All"]}})) == allowed
}

# A missing revoked_permissions list means nothing is revoked.
test_access_revoked_list_absent if {
	inp := object.remove(agent_app, ["blueprint"])
	decide(object.union(inp, {"blueprint": object.remove(agent_app.blueprint, ["revoked_permissions"])})) == allowed
}

test_access_route_decision if {
	rules := [orders_read, orders_write]
	get := agent_app
	post := request(agent_app, "POST", "/orders")
	data.agentgate.route_decision(get, rules, "/orders/42/", "roles", []) == allowed
	data.agentgate.route_decision(get, rules, "/orders/42/", "roles", ["Orders.Read.All"]) == denied_scope("permission_revoked")
	data.agentgate.route_decision(get, rules, "/orders/42/", "scopes", []) == denied_scope("missing_scope")
	data.agentgate.route_decision(post, rules, "/orders/", "roles", []) == denied_scope("missing_role")
	data.agentgate.route_decision(get, rules, "/other/", "roles", []) == denied("route_not_allowed")
	data.agentgate.route_decision(get, [], "/orders/42/", "roles", []) == denied("route_not_allowed")
}

# Paths that are not normalised never reach rule matching, whatever built the
# input: the decision is a 400 invalid_path, as the gateway's own answer.
test_access_paths_that_are_not_normalised_are_refused if {
	every path in [
		"/orders/../admin", "/orders/..", "/orders/./42", "/orders//42", "//orders",
		"/orders/..;/admin", "/orders;x/42", "/orders/%2e%2e/admin", "/orders/%2E%2E",
		"/orders%2fadmin", "/orders/%5Cadmin", "/orders/%252e%252e/admin",
		"/orders\\..\\admin", "orders/42", "",
	] {
		decide(request(agent_app, "GET", path)) == {"allow": false, "status": 400, "reason": "invalid_path"}
		decide(request(app, "GET", path)) == {"allow": false, "status": 400, "reason": "invalid_path"}
	}
	decide(request(agent_app, "GET", "/orders/42")) == allowed
	decide(request(agent_app, "GET", "/orders/")) == allowed
	decide(request(agent_app, "GET", "/orders/50%25off")) == allowed
	# Not a string at all: the same answer, never an evaluation error.
	decide(request(agent_app, "GET", 3)) == {"allow": false, "status": 400, "reason": "invalid_path"}
}
