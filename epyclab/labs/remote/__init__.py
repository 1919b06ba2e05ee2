"""ClusterLab's remote job policy: collecting jobs by id, their records on the hub, lost and stranded tasks.

``collect``, ``jobs``, ``stranded``, ``hub`` (ipyparallel's private API, kept
here), ``hubprobe`` (is a controller listening?), ``placement`` (points bound
to a host).
"""
