"""Suite files and the matrix: from YAML to a validated plan of runs (dry-run printable)."""
