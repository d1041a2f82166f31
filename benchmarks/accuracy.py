"""accuracy cases (being ported)."""

CASES = {}
TABLES = {}
