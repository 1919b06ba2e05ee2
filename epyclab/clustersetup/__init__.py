"""Setting up ipyparallel clusters for epyclab: profiles, controller and engines (batch jobs, mpiexec, ssh, local).

The ``epyclab cluster ...`` commands, as functions::

    from epyclab.clustersetup import initCluster, syncWorkers, startCluster, clusterStatus, stopCluster

    initCluster("lab")
    syncWorkers("lab", ["node1", "alice@node2:2222"])
    startCluster("lab", enginesPerWorker=4)
    startCluster("hpc", engines="slurm", batch=BatchOptions(engines=64, queue="compute", walltime="12:00:00"))
    # 64 engines in jobs of 8, kept up across walltimes by a keeper until stopCluster("hpc")
    startCluster("hpc", engines="slurm", batch=BatchOptions(engines=64, enginesPerJob=8, walltime="12:00:00",
                                                            keep=True))
    print(clusterStatus("lab"))
    stopCluster("lab")

Engines start as Slurm or PBS batch jobs (``sbatch``/``qsub`` from the login
node), under ``mpiexec``, on workers over plain ssh and rsync, or on this
machine alone. Each function logs every command at DEBUG on the ``epyclab``
logger and, when some hosts fail, finishes the others before raising
:class:`~epyclab.clustersetup.errors.HostFailures`.
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
