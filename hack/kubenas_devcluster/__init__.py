"""A real Kubernetes control plane on loopback, for kubenas' e2e tests.

``Cluster.start(workdir, gpus=2)`` runs etcd, kube-apiserver (RBAC on), controller-manager,
scheduler, our node agent, a Pushgateway and Prometheus; ``cluster.stop()`` ends them all.
"""

from kubenas_devcluster.cluster import BinariesMissing, Cluster

__all__ = ["BinariesMissing", "Cluster"]
