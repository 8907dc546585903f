"""Real services as local processes: the Kubernetes control plane and the operator itself.

`credbridge dev`, the demo, the tests and the benchmarks all run credbridge against a real API
server started here (etcd, kube-apiserver, kube-controller-manager built from Go modules), never
against a fake. The binaries come from `hack/controlplane/build.sh` in a source checkout. The
operator runs from the checkout (`operator`) or from the image `make image` builds (`image`).
"""
