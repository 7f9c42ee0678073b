# Time windows: optional allowed hours per blueprint and per agent
# ("hours" in data.access.blueprints[id] / data.access.agents[id]):
#   {"time_zone": "Europe/London", "days": ["Mon", ...], "start": 7, "end": 19}
# allows local hours in [start, end); start > end wraps past midnight
# (22 to 6). days is optional (every day when absent), takes "Mon" or
# "Monday", and is the local day of the request. time_zone defaults to UTC;
# an unknown zone name is an evaluation error, so the request fails closed.
package agentgate

within_hours(hours, ns) if {
	at := [ns, object.get(hours, "time_zone", "UTC")]
	[hour, _, _] := time.clock(at)
	hour_in_window(hour, hours.start, hours.end)
	day_allowed(hours, at)
}

hour_in_window(hour, start, end) if {
	start <= end
	start <= hour
	hour < end
}

hour_in_window(hour, start, end) if {
	start > end
	hour >= start
}

hour_in_window(hour, start, end) if {
	start > end
	hour < end
}

day_allowed(hours, _) if not hours.days

# time.weekday gives "Monday"; its first three letters give "Mon".
day_allowed(hours, at) if {
	day := time.weekday(at)
	some allowed_day in hours.days
	allowed_day in {day, substring(day, 0, 3)}
}
