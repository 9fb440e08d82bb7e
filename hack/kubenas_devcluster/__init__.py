"""A real Kubernetes control plane on loopback, for kubenas' e2e tests."""
