package mlsec.lib.config_test

import data.mlsec.lib.config

want := {"limit": "number", "strict": "boolean"}

test_good_data_has_no_problems if {
	count(config.problems(["dev", "gate"], {"limit": 3, "strict": true, "unused": "x"}, want)) == 0
}

test_missing_key_is_a_problem if {
	config.problems(["dev", "gate"], {"strict": true}, want) == {"policy data dev.gate.limit is missing"}
}

test_wrong_type_is_a_problem if {
	config.problems(["dev", "gate"], {"limit": "3", "strict": true}, want) == {"policy data dev.gate.limit: expected number, found string"}
}

test_null_counts_as_missing if {
	config.problems(["dev", "gate"], {"limit": null, "strict": true}, want) == {"policy data dev.gate.limit is missing"}
}
