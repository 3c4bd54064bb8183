"""Phalanx inside other engines (Dask), and executors over a daemon."""
