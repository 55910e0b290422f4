# Checks a gate's policy data (data/<env>.json) against the keys and types the gate reads. Rego treats a
# missing key as undefined, and an undefined comparison never fires its deny rule: without this, a typo
# in a threshold's name would silently switch that check off. Each gate denies on every problem found.
package mlsec.lib.config

# want: key -> type_name() of its value ("number", "boolean", "array", "object", "string").
problems(where, got, want) := {msg |
	some key, type in want
	msg := problem(sprintf("%s.%s", [where, key]), type, object.get(got, key, null))
}

problem(path, _, null) := sprintf("policy data %s is missing", [path])

problem(path, type, value) := msg if {
	value != null
	type_name(value) != type
	msg := sprintf("policy data %s: expected %s, found %s", [path, type, type_name(value)])
}
