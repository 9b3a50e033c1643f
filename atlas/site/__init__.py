"""The site: one module per page kind, the writer, search, charts, serve."""
