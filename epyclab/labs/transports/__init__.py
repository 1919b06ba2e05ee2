"""Where a ParallelLab sweep runs, and the one scheduler over all of it.

``contract`` (the transport contract and the registry of named transports),
``scheduler`` (chunk sizes and the sweep), ``deaths`` (the death policy
ParallelLab and ClusterLab share); the transports: ``cleanworkers`` (the
default, and clean loky workers), ``copies`` and ``forkedcopy`` (forked
copies of the user's process), ``coldstart``, ``localcluster``, ``warm``,
``reaper``, ``localclusterlog`` and ``enginestream`` (the process's local
ipyparallel cluster), ``ipyparallelclient`` (a client or cluster of the
user's), ``executors`` (any ``concurrent.futures`` executor, Dask's).
"""
