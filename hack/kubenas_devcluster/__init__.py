"""A real Kubernetes cluster on one machine, for kubenas' e2e tests and ``make cluster-up``.

``Cluster.start(workdir, gpus=2, node_kind="real")`` runs etcd, kube-apiserver (Node and RBAC
authorization), controller-manager, scheduler, a real node (containerd, kubelet, kube-proxy,
a fake GPU device plugin), a Pushgateway and Prometheus; ``cluster.stop()`` ends them all.
``node_kind="agent"`` puts our node agent, which runs pods as host processes, in the node's place
(for ``kubenas bench operator``: see :mod:`kubenas_devcluster.cluster`).
"""

from kubenas_devcluster.cluster import BinariesMissing, Cluster

__all__ = ["BinariesMissing", "Cluster"]
