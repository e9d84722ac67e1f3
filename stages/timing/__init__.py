"""Stage ``timing``: rounds of fresh processes per arm, the busy check, contention and the sittings record."""
