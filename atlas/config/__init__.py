"""The site config: its declared schema, loading with every error at once, name checks."""
