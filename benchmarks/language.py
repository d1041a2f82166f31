"""language cases (being ported)."""

CASES = {}
TABLES = {}
