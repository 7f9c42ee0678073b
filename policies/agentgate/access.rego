# Route access: the rules of the caller's blueprint for this route
# (data.access.blueprints[id].routes[route id]) and the method/path matching
# shared with non_agent.rego.
#
# A rule matches when the method is listed (or "*" is) and some path prefix
# matches. Prefix p matches when the path is p, starts with p + "/", or, when p
# ends in "/", starts with p; "/" matches everything. Prefix matching on a raw
# path can be walked out of with "/orders/../x", so the decision refuses any
# path that is not normalised (normal_path) before matching; the gateway itself
# only ever hands over normalised paths (README, "How a request is decided").
package agentgate

# A normalised path: absolute, no "." or ".." segment, no "//", no backslash,
# no ";" path parameter, and no encoded ".", "/" or "\" (plain or encoded
# twice). Anything else could be resolved outside the prefix that matched.
normal_path(path) if {
	is_string(path)
	startswith(path, "/")
	not contains(path, "//")
	not contains_any(concat("", [lower(path), "/"]), {"/./", "/../", "\\", ";", "%2e", "%2f", "%5c", "%252e", "%252f", "%255c"})
}

# Whether s contains any of parts.
contains_any(s, parts) if {
	some part in parts
	contains(s, part)
}

# Steps 8-9 for agents. path is the request path plus "/"; field is "roles"
# for app-only tokens and "scopes" for delegated ones; revoked lists the
# blueprint's revoked permissions. `allowed` is tried first: it needs a
# matching rule, so it never overrides route_not_allowed.
route_decision(inp, rules, path, field, revoked) := {"allow": true, "reason": "allowed"} if {
	route_grants(inp, rules, path, field, revoked)
} else := deny("route_not_allowed") if {
	not any_rule_matches(rules, inp.request.method, path)
} else := deny_insufficient_scope("permission_revoked") if {
	# The token holds a permission the rule asks for, but it is revoked.
	route_grants_revoked(inp, rules, path, field, revoked)
} else := deny_insufficient_scope(object.get({"roles": "missing_role"}, field, "missing_scope"))

# Some matching rule asks for a permission the token holds and that is not revoked.
route_grants(inp, rules, path, field, revoked) if {
	some rule in rules
	rule_matches(rule, inp.request.method, path)
	some permission in rule[field]
	permission in inp.token[field]
	not permission in revoked
}

# Some matching rule asks for a permission the token holds, but it is revoked.
route_grants_revoked(inp, rules, path, field, revoked) if {
	some rule in rules
	rule_matches(rule, inp.request.method, path)
	some permission in rule[field]
	permission in inp.token[field]
	permission in revoked
}

any_rule_matches(rules, method, path) if {
	some rule in rules
	rule_matches(rule, method, path)
}

# path carries a trailing "/", so one startswith covers "equal to p" and
# "under p/"; the last line keeps "/docs/" from matching "/docs".
rule_matches(rule, method, path) if {
	method_listed(rule.methods, method)
	some prefix in rule.path_prefixes
	startswith(path, concat("", [trim_suffix(prefix, "/"), "/"]))
	path != prefix
}

method_listed(methods, method) if method in methods

method_listed(methods, _) if "*" in methods
