"""k8s-gpu-mcp broker: cluster-wide MCP over Kubernetes exec streams to node agents."""

__version__ = "0.1.0"
