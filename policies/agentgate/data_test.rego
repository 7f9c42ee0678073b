# Consistency checks for the shipped data files (policies/data/*.json). Run
# them after editing the data: they catch dangling ids, unknown location names,
# invalid CIDRs and time zones, and malformed access rules.
package agentgate_test

# An agent's blueprint need not be listed: Entra keeps the agents of a deleted
# blueprint principal for a day, and such an agent is denied unknown_blueprint.
test_data_agents_well_formed if {
	every id, agent in data.directory.agents {
		is_string(agent.blueprint)
		agent.enabled in {true, false}
		agent.risk in {"none", "low", "medium", "high"}
		object.get(agent, "risk_state", "none") in risk_states
		is_array(agent.sponsors)
		not object.get(agent, "agent_user", null) == id
	}
}

risk_states := {"none", "confirmedSafe", "remediated", "dismissed", "atRisk", "confirmedCompromised"}

# An agent user's parent agent need not be listed (Entra keeps agent users of a
# deleted agent); a listed parent names the user back.
test_data_agent_users_link_back if {
	every oid, u in data.directory.agent_users {
		parent_links_back(oid, u.parent_agent)
		u.enabled in {true, false}
		object.get(u, "risk", "none") in {"none", "low", "medium", "high"}
		object.get(u, "risk_state", "none") in risk_states
	}
	every id, agent in data.directory.agents {
		agent_user_linked(id, agent)
	}
}

parent_links_back(_, parent) if not data.directory.agents[parent]

parent_links_back(oid, parent) if data.directory.agents[parent].agent_user == oid

agent_user_linked(_, agent) if not agent.agent_user

agent_user_linked(id, agent) if data.directory.agent_users[agent.agent_user].parent_agent == id

test_data_blueprints_well_formed if {
	every _, bp in data.directory.blueprints {
		bp.disabled in {true, false}
		bp.risk in {"none", "low", "medium", "high"}
		object.get(bp, "risk_state", "none") in risk_states
		is_array(bp.revoked_permissions)
		every p in bp.revoked_permissions {
			p in bp.permissions
		}
	}
}

test_data_access_blueprints_are_in_directory if {
	every id, _ in data.access.blueprints {
		data.directory.blueprints[id]
	}
	every id, _ in data.access.agents {
		data.directory.agents[id]
	}
}

test_data_named_locations_valid if {
	every _, cidrs in data.access.named_locations {
		every cidr in cidrs {
			net.cidr_is_valid(cidr)
		}
	}
	every _, entry in object.union(data.access.blueprints, data.access.agents) {
		every name in object.get(entry, "locations", []) {
			data.access.named_locations[name]
		}
	}
}

test_data_hours_valid if {
	every _, entry in object.union(data.access.blueprints, data.access.agents) {
		hours_valid(object.get(entry, "hours", {"start": 0, "end": 24}))
	}
}

hours_valid(h) if {
	is_array(time.clock([0, object.get(h, "time_zone", "UTC")]))
	h.start >= 0
	h.end <= 24
	every d in object.get(h, "days", []) {
		d in week_days
	}
}

week_days := {
	"Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun",
	"Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday",
}

test_data_route_rules_well_formed if {
	every _, bp in data.access.blueprints {
		every _, rules in bp.routes {
			every rule in rules {
				rule_well_formed(rule)
			}
		}
	}
	every _, rules in data.access.non_agent {
		every rule in rules {
			rule_well_formed(rule)
			count(rule.kinds) > 0
		}
	}
}

rule_well_formed(rule) if {
	count(rule.methods) > 0
	count(rule.path_prefixes) > 0
	every p in rule.path_prefixes {
		startswith(p, "/")
	}
	count(object.get(rule, "roles", [])) + count(object.get(rule, "scopes", [])) > 0
}

test_data_rule_well_formed_rejects if {
	not rule_well_formed({"methods": [], "path_prefixes": ["/"], "roles": ["a"]})
	not rule_well_formed({"methods": ["GET"], "path_prefixes": ["orders"], "roles": ["a"]})
	not rule_well_formed({"methods": ["GET"], "path_prefixes": ["/"]})
	not hours_valid({"start": 0, "end": 25})
	not hours_valid({"start": 0, "end": 24, "days": ["Mo"]})
	hours_valid({"time_zone": "Europe/London", "start": 7, "end": 19, "days": ["Mon", "Sunday"]})
}
