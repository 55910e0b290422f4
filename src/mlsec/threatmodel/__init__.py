"""The project's own threat model, kept as data: each threat, its rating and the tests that prove its control."""
