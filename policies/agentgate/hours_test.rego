# Tests for hours.rego and step 7 of the agent chain: time windows on
# blueprints and agents.
package agentgate_test

# bp-fenced: Mon-Fri 07:00-19:00 America/New_York (UTC-5 in January).
fenced_hours := with_patch(agent_app, {"blueprint": {"id": "bp-fenced"}, "request": {"client_ip": "10.1.1.1"}})

test_hours_inside_window_allowed if {
	decide(fenced_hours) == allowed # Thu 10:00 local
	decide(at(fenced_hours, 1767268800000000000)) == allowed # Thu 07:00:00 local, start inclusive
	decide(at(fenced_hours, 1767311999000000000)) == allowed # Thu 18:59:59 local
}

test_hours_outside_window_denied if {
	decide(at(fenced_hours, 1767312000000000000)) == denied("outside_hours") # Thu 19:00 local, end exclusive
	decide(at(fenced_hours, 1767268799000000000)) == denied("outside_hours") # Thu 06:59:59 local
}

test_hours_day_not_listed_denied if {
	decide(at(fenced_hours, 1767452400000000000)) == denied("outside_hours") # Sat 10:00 local
}

# agent-fenced adds 09:00-17:00 UTC (and loopback) on top of bp-sales.
agent_hours := with_patch(agent_app, {"agent": {"id": "agent-fenced"}})

test_hours_agent_window_allowed if {
	decide(agent_hours) == allowed # 15:00Z
}

test_hours_agent_window_denied if {
	decide(at(agent_hours, 1767290400000000000)) == denied("outside_hours") # 18:00Z
}

test_hours_access_decision_hours if {
	closed := {"start": 0, "end": 1}
	data.agentgate.agent_access_decision(agent_app, {"hours": closed}, {}, {}) == denied("outside_hours")
	data.agentgate.agent_access_decision(agent_app, {}, {"hours": closed}, {}) == denied("outside_hours")
}

test_hours_no_window_configured_allowed if {
	decide(at(agent_app, 1767452400000000000)) == allowed
}

# Days are local: Fri 03:00Z is still Thursday evening in New York.
test_hours_day_is_local if {
	h := {"time_zone": "America/New_York", "days": ["Fri"], "start": 0, "end": 24}
	not data.agentgate.within_hours(h, 1767322800000000000)
	data.agentgate.within_hours(h, 1767412800000000000) # Sat 04:00Z = Fri 23:00 local
}

test_hours_full_day_names_accepted if {
	h := {"time_zone": "UTC", "days": ["Thursday"], "start": 0, "end": 24}
	data.agentgate.within_hours(h, thu_15_utc)
	not data.agentgate.within_hours(h, 1767452400000000000)
}

test_hours_days_absent_means_every_day if {
	h := {"time_zone": "UTC", "start": 9, "end": 17}
	data.agentgate.within_hours(h, 1767452400000000000) # Sat 15:00Z
	not data.agentgate.within_hours(h, 1767290400000000000) # Thu 18:00Z
}

test_hours_day_allowed if {
	at_thu := [thu_15_utc, "UTC"]
	data.agentgate.day_allowed({}, at_thu)
	data.agentgate.day_allowed({"days": ["Mon", "Thu"]}, at_thu)
	not data.agentgate.day_allowed({"days": ["Mon"]}, at_thu)
	not data.agentgate.day_allowed({"days": []}, at_thu)
}

test_hours_time_zone_defaults_to_utc if {
	data.agentgate.within_hours({"start": 15, "end": 16}, thu_15_utc)
	not data.agentgate.within_hours({"start": 16, "end": 17}, thu_15_utc)
	data.agentgate.within_hours({"start": 6, "end": 7}, 1782887400000000000) # 06:30Z in July
}

# Europe/London is UTC+1 in July: 06:30Z is 07:30 local.
test_hours_time_zone_applies_dst if {
	t := 1782887400000000000
	data.agentgate.within_hours({"time_zone": "Europe/London", "start": 7, "end": 19}, t)
	not data.agentgate.within_hours({"time_zone": "UTC", "start": 7, "end": 19}, t)
}

test_hours_overnight_window if {
	h := {"time_zone": "UTC", "start": 22, "end": 6}
	data.agentgate.within_hours(h, 1767308400000000000) # 23:00Z
	data.agentgate.within_hours(h, 1767236400000000000) # 03:00Z
	not data.agentgate.within_hours(h, thu_15_utc)
}

test_hours_hour_in_window if {
	data.agentgate.hour_in_window(7, 7, 19)
	not data.agentgate.hour_in_window(19, 7, 19)
	not data.agentgate.hour_in_window(6, 7, 19)
	data.agentgate.hour_in_window(0, 0, 24)
	data.agentgate.hour_in_window(22, 22, 6)
	not data.agentgate.hour_in_window(21, 22, 6)
	data.agentgate.hour_in_window(23, 22, 6)
	data.agentgate.hour_in_window(5, 22, 6)
	not data.agentgate.hour_in_window(6, 22, 6)
	not data.agentgate.hour_in_window(12, 5, 5)
}
