# Checks a gate's policy data (data/<env>.json) against the keys and types the gate reads. Rego treats a
# missing key as undefined, and an undefined comparison never fires its deny rule: without this, a typo
# in a threshold's name would silently switch that check off. Each gate denies on every problem found.
package mlsec.lib.config

# where: the path of got in the data, as parts (["prod", "training"]); want: key -> type_name() of its
# value ("number", "boolean", "array", "object", "string"). Messages are built only for problems.
problems(where, got, want) := {msg |
	some key, type in want
	value := object.get(got, key, null)
	type_name(value) != type
	msg := describe(concat(".", array.concat(where, [key])), type, value)
}

describe(path, _, null) := sprintf("policy data %s is missing", [path])

describe(path, type, value) := sprintf("policy data %s: expected %s, found %s", [path, type, type_name(value)]) if {
	value != null
}
