"""Adapters that let other parallel tools run their work as hpcexec jobs.

- :mod:`hpcexec.adapters.joblib`: a joblib parallel backend named ``"hpcexec"`` (registered
  on import), so ``joblib.Parallel`` and scikit-learn submit their batches as jobs.
- :mod:`hpcexec.adapters.dask`: :class:`~hpcexec.adapters.dask.HPCCluster`, a Dask cluster
  manager whose workers are jobs.

Both are built only on the public :class:`hpcexec.Executor` API. Each is imported on its own,
so that neither joblib nor Dask is needed unless it is used.
"""
