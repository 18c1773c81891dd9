"""The lab's Kubernetes API stand-in: a ``k3s`` that kubectl and the kubernetes client use unchanged.

Start it as K3s is started::

    python -m homelab_lab.kube --version
    python -m homelab_lab.kube server --bind-address 127.0.9.14 --data-dir /tmp/k3s \\
        --write-kubeconfig /tmp/k3s/k3s.yaml --node-name nappy --disable metrics-server
    python -m homelab_lab.kube kubectl get nodes       # kubectl with /etc/rancher/k3s/k3s.yaml

Flags (the same names, without dashes, are keys of ``/etc/rancher/k3s/config.yaml`` or ``--config``;
``config.yaml.d/*.yaml`` is read too; list keys may end in ``+`` to append):
``--data-dir`` (/var/lib/rancher/k3s), ``--bind-address`` (0.0.0.0), ``--advertise-address``,
``--node-ip``, ``--https-listen-port`` (6443), ``--tls-san`` (repeatable), ``--disable``
(coredns, traefik, local-storage, metrics-server, servicelb), ``--node-name`` (the hostname),
``--node-label k=v``, ``--node-taint k=v:Effect``, ``--cluster-cidr`` (10.42.0.0/16),
``--service-cidr`` (10.43.0.0/16), ``--token`` / ``--token-file`` / ``$K3S_TOKEN`` (kept in
``<data-dir>/server/token``; a different one is refused: "bootstrap data already found and encrypted
with different token"), ``--write-kubeconfig`` (/etc/rancher/k3s/k3s.yaml) and
``--write-kubeconfig-mode`` (600). Other K3s flags are accepted and ignored.

The lab's own knobs (config keys, or environment variables):

    lab-broken-charts   HOMELAB_K3S_BROKEN_CHARTS   charts whose helm-install Job fails (comma-separated)
    lab-node-cpu        HOMELAB_K3S_NODE_CPU        the node's cpu capacity (2)
    lab-node-memory     HOMELAB_K3S_NODE_MEMORY     the node's memory capacity (4Gi)
    lab-runtime         HOMELAB_K3S_RUNTIME         docker (pods run in the engine docker.from_env() reaches) or none
    lab-ingress-ports   HOMELAB_K3S_INGRESS_PORTS   traefik's http,https ports (80,443)
                        HOMELAB_K3S_VERSION         the K3s version reported (v1.31.4+k3s1)

Modules, one job each: ``resources`` (the kinds), ``schema`` (1.31 schemas, OpenAPI v3), ``store``
(objects, SQLite, watch history), ``cluster`` (the verbs' semantics), ``fields`` (managed fields,
server-side apply), ``patch``, ``validation``, ``defaults``, ``admission``, ``selectors``,
``tables``, ``discovery``, ``auth``, ``api`` (routing), ``server`` (HTTPS), ``controllers/``,
``runtime`` (Docker), ``ingress`` (traefik), ``system`` (what a fresh K3s holds), ``certs``,
``standin`` (assembly), ``cli``.

Known differences from K3s: one node; no CNI (pod IPs are the engine's bridge addresses; Service
cluster IPs are allocated but not routed: use the Ingress or a NodePort); liveness and startup
probes, init containers, exec/attach/port-forward are not served; CronJobs are stored but not
scheduled; HelmCharts run their install Job but do not create the chart's workloads; restart
and pull back-offs are shorter than the kubelet's.
"""

from homelab_lab.kube.config import Config
from homelab_lab.kube.standin import Standin

__all__ = ["Config", "Standin"]
