# Tests for network.rego and step 6 of the agent chain: named locations on
# blueprints and agents.
package agentgate_test

# bp-fenced admits corp_network only (its hours allow thu_15_utc).
fenced := with_patch(agent_app, {"blueprint": {"id": "bp-fenced"}, "request": {"client_ip": "10.20.30.40"}})

test_network_blueprint_location_allowed if {
	decide(fenced) == allowed
	decide(from_ip(fenced, "192.168.1.7")) == allowed
}

test_network_blueprint_location_denied if {
	decide(from_ip(fenced, "127.0.0.1")) == denied("location_denied")
	decide(from_ip(fenced, "8.8.8.8")) == denied("location_denied")
	decide(from_ip(fenced, "::1")) == denied("location_denied")
}

# agent-fenced adds loopback on top of its blueprint (bp-sales has none).
agent_fenced := with_patch(agent_app, {"agent": {"id": "agent-fenced"}})

test_network_agent_location_allowed if {
	decide(agent_fenced) == allowed
	decide(from_ip(agent_fenced, "::1")) == allowed
}

test_network_agent_location_denied if {
	decide(from_ip(agent_fenced, "10.0.0.1")) == denied("location_denied")
}

# Blueprint and agent lists both apply: no address is in corp_network and loopback.
test_network_blueprint_and_agent_both_apply if {
	inp := with_patch(fenced, {"agent": {"id": "agent-fenced"}, "request": {"time_ns": 1767268800000000000}})
	decide(inp) == denied("location_denied")
	decide(from_ip(inp, "127.0.0.1")) == denied("location_denied")
}

test_network_no_locations_configured_allowed if {
	decide(from_ip(agent_app, "8.8.8.8")) == allowed
}

test_network_access_decision_locations if {
	named := access.named_locations
	data.agentgate.agent_access_decision(agent_app, {"locations": ["corp_network"]}, {}, named) == denied("location_denied")
	data.agentgate.agent_access_decision(agent_app, {}, {"locations": ["corp_network"]}, named) == denied("location_denied")
	data.agentgate.agent_access_decision(agent_app, {"locations": ["loopback"], "routes": {"orders": [orders_read]}}, {"locations": ["loopback"]}, named) == allowed
}

test_network_unknown_location_name_denied if {
	acc := object.union(access, {"blueprints": {"bp-sales": {"locations": ["no_such_place"]}}})
	data.agentgate.decision == denied("location_denied") with input as agent_app with data.access as acc
}

test_network_empty_location_list_denied if {
	acc := object.union(access, {"blueprints": {"bp-sales": {"locations": []}}})
	data.agentgate.decision == denied("location_denied") with input as agent_app with data.access as acc
}

# Without named_locations every location list matches nothing.
test_network_missing_named_locations_denied if {
	acc := object.remove(access, ["named_locations"])
	data.agentgate.decision == denied("location_denied") with input as fenced with data.access as acc
	data.agentgate.decision == allowed with input as agent_app with data.access as acc
}

test_network_ipv4_mapped_ipv6_client if {
	decide(from_ip(fenced, "::ffff:10.20.30.40")) == allowed
	decide(from_ip(fenced, "::ffff:8.8.8.8")) == denied("location_denied")
}

test_network_client_addr if {
	data.agentgate.client_addr("::ffff:10.20.30.40") == "10.20.30.40"
	data.agentgate.client_addr("::1") == "::1"
	data.agentgate.client_addr("::ffff:a:b") == "::ffff:a:b"
	data.agentgate.client_addr("127.0.0.1") == "127.0.0.1"
}

test_network_in_locations if {
	named := access.named_locations
	data.agentgate.in_locations(["loopback"], "127.0.0.1", named)
	data.agentgate.in_locations(["corp_network", "loopback"], "::1", named)
	data.agentgate.in_locations(["corp_network"], "::ffff:192.168.3.4", named)
	not data.agentgate.in_locations(["corp_network"], "127.0.0.1", named)
	not data.agentgate.in_locations([], "127.0.0.1", named)
	not data.agentgate.in_locations(["loopback"], "127.0.0.1", {})
}
