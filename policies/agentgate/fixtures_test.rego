# Shared fixtures for the policy tests: a small data.access document and
# input builders. No test_ rules live here.
#
# Tests refer to policy rules by full path (data.agentgate.x), not through
# `import data.agentgate`: in regorus 0.14.1 an import alias evaluates the
# whole package document, which is slow and, depending on file load order,
# can drop rules.
package agentgate_test

tenant := "aaaaaaaa-1111-1111-1111-000000000001"

# Thu 2026-01-01 15:00:00Z = 10:00 in New York (EST).
thu_15_utc := 1767279600000000000

access := {
	"named_locations": {
		"loopback": ["127.0.0.0/8", "::1/128"],
		"corp_network": ["10.0.0.0/8", "192.168.0.0/16"],
	},
	"blueprints": {
		"bp-sales": {"routes": {
			"orders": [
				{"methods": ["GET", "HEAD"], "path_prefixes": ["/orders"], "roles": ["Orders.Read.All"], "scopes": ["Orders.Read"]},
				{"methods": ["POST", "PUT", "PATCH"], "path_prefixes": ["/orders"], "roles": ["Orders.Write.All", "Orders.Admin"], "scopes": ["Orders.Write", "Orders.Admin"]},
			],
			"files": [{"methods": ["*"], "path_prefixes": ["/"], "roles": ["Files.All"], "scopes": ["Files.All"]}],
			"docs": [{"methods": ["GET"], "path_prefixes": ["/docs/"], "roles": ["Docs.Read"], "scopes": ["Docs.Read"]}],
		}},
		"bp-fenced": {
			"routes": {"orders": [{"methods": ["GET"], "path_prefixes": ["/orders"], "roles": ["Orders.Read.All"], "scopes": ["Orders.Read"]}]},
			"locations": ["corp_network"],
			"hours": {"time_zone": "America/New_York", "days": ["Mon", "Tue", "Wed", "Thu", "Fri"], "start": 7, "end": 19},
		},
	},
	"agents": {"agent-fenced": {"locations": ["loopback"], "hours": {"time_zone": "UTC", "start": 9, "end": 17}}},
	"non_agent": {"orders": [
		{"kinds": ["app"], "clients": ["client-1"], "methods": ["GET"], "path_prefixes": ["/orders"], "roles": ["Orders.Read.All"]},
		{"kinds": ["user"], "methods": ["GET"], "path_prefixes": ["/orders/public"], "scopes": ["Orders.Read"]},
	]},
}

# Agent calling with its own app-only token: allowed by bp-sales.
agent_app := {
	"request": {
		"method": "GET", "host": "api.contoso.example", "path": "/orders/42", "query": "",
		"client_ip": "127.0.0.1", "headers": {"user-agent": "curl/8"}, "time_ns": thu_15_utc,
	},
	"route": {"id": "orders", "path_prefix": "/orders"},
	"token": {
		"kind": "agent_app", "version": "2.0", "tenant": tenant,
		"issuer": "https://login.microsoftonline.com/aaaaaaaa-1111-1111-1111-000000000001/v2.0",
		"audience": "api://orders", "scopes": [], "roles": ["Orders.Read.All"],
		"facets": {"actor": [3, 9, 11], "subject": [3, 9, 11], "tenant": [3]},
		"idtyp": "app", "issued_at": 1767279000, "not_before": 1767279000, "expires_at": 1767282900,
	},
	"actor": {"tenant": tenant, "id": "agent-1"},
	"subject": {"tenant": tenant, "id": "agent-1"},
	"agent": {
		"id": "agent-1", "known": true, "display_name": "Sales Assistant - Test", "enabled": true,
		"sponsors": [], "risk": "none", "risk_state": "none", "agent_user": null,
	},
	"blueprint": {
		"id": "bp-sales", "known": true, "name": "Sales Assistant Agent", "publisher": "Contoso",
		"disabled": false, "risk": "low", "risk_state": "none",
		"roles": [], "permissions": [], "revoked_permissions": [],
	},
	"user": null,
}

# Agent acting on behalf of a human user (delegated: scopes).
agent_obo := object.union(agent_app, {
	"token": {"kind": "agent_obo", "idtyp": "user", "roles": [], "scopes": ["Orders.Read"]},
	"subject": {"id": "human-1"},
	"user": {"tenant": tenant, "id": "human-1", "type": "human", "known": false, "enabled": true,
		"risk": "none", "risk_state": "none"},
})

# Agent acting as its own agent user account (delegated: scopes).
agent_user := object.union(agent_obo, {
	"token": {"kind": "agent_user"},
	"subject": {"id": "agent-user-1"},
	"user": {"id": "agent-user-1", "type": "agent_user", "known": true},
})

# Plain client application (non-agent, app-only).
app := object.union(agent_app, {
	"token": {"kind": "app"},
	"actor": {"id": "client-1"},
	"subject": {"id": "client-1-sp"},
	"agent": null,
	"blueprint": null,
})

# Human user through a client application (non-agent, delegated).
user := object.union(app, {
	"token": {"kind": "user", "idtyp": "user", "roles": [], "scopes": ["Orders.Read"]},
	"subject": {"id": "human-1"},
	"user": {"tenant": tenant, "id": "human-1", "type": "human", "known": false, "enabled": true,
		"risk": "none", "risk_state": "none"},
})

with_patch(base, patch) := object.union(base, patch)

at(inp, time_ns) := with_patch(inp, {"request": {"time_ns": time_ns}})

from_ip(inp, ip) := with_patch(inp, {"request": {"client_ip": ip}})

request(inp, method, path) := with_patch(inp, {"request": {"method": method, "path": path}})

# The decision for inp against the fixture data.access.
decide(inp) := d if {
	d := data.agentgate.decision with input as inp with data.access as access
}

allowed := {"allow": true, "reason": "allowed"}

denied(reason) := {"allow": false, "status": 403, "reason": reason}

denied_scope(reason) := {"allow": false, "status": 403, "reason": reason, "error": "insufficient_scope"}

orders_read := access.blueprints["bp-sales"].routes.orders[0]

orders_write := access.blueprints["bp-sales"].routes.orders[1]
