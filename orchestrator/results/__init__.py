"""The results directory: its layout, schema validation, run outcomes and the sealed bundle."""
