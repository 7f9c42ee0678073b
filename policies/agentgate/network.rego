# Named locations: optional IP allow-lists per blueprint and per agent
# ("locations": ["loopback", ...] in data.access.blueprints[id] /
# data.access.agents[id]), resolved through data.access.named_locations.
# A name missing from named_locations matches nothing and an empty list admits
# nobody (fail closed).
package agentgate

in_locations(names, ip, named_locations) if {
	addr := client_addr(ip)
	some name in names
	some cidr in named_locations[name]
	net.cidr_contains(cidr, addr)
}

# A dual-stack listener reports IPv4 clients as "::ffff:a.b.c.d"; unwrap them
# so IPv4 ranges apply.
client_addr(ip) := trim_prefix(ip, "::ffff:") if {
	contains(ip, ".")
} else := ip
