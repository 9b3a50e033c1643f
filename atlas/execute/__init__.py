"""Executors: the planned jobs as tasks, run locally, as shards or on Dask workers."""
