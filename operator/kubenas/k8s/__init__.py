"""The Kubernetes runtime: pure manifest builders, API access, metrics, and thin kopf handlers."""
