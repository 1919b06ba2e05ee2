"""Setting up ipyparallel clusters for epyclab (profiles, workers, controller and engines).

The ``epyclab cluster ...`` commands, as functions::

    from epyclab.clustersetup import initCluster, syncWorkers, startCluster, clusterStatus, stopCluster

    initCluster("lab")
    syncWorkers("lab", ["node1", "alice@node2:2222"])
    startCluster("lab", enginesPerWorker=4)
    startCluster("hpc", engines="slurm", batch=BatchOptions(engines=64, queue="compute", walltime="12:00:00"))
    print(clusterStatus("lab"))
    stopCluster("lab")

Each runs every remote step with plain ssh and rsync, logs each command at
INFO on the ``epyclab`` logger, and, when some hosts fail, finishes the others
before raising :class:`~epyclab.clustersetup.errors.HostFailures`.
"""

from epyclab.clustersetup.errors import ClusterSetupError, HostFailures, HostSpecError, RemoteCommandError
from epyclab.clustersetup.launchers import LAUNCHERS, BatchOptions
from epyclab.clustersetup.manage import ClusterStatus, clusterStatus, initCluster, startCluster, stopCluster
from epyclab.clustersetup.sync import syncWorkers

__all__ = [
    "initCluster",
    "syncWorkers",
    "startCluster",
    "stopCluster",
    "clusterStatus",
    "ClusterStatus",
    "BatchOptions",
    "LAUNCHERS",
    "ClusterSetupError",
    "HostFailures",
    "HostSpecError",
    "RemoteCommandError",
]
