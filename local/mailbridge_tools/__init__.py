"""Developer and operator tooling for mailbridge; not deployed."""
