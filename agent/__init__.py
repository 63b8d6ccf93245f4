"""k8s-gpu-mcp agent: MCP over stdin/stdout, GPU facts through NVML. Standard library only."""

__version__ = "0.1.0"
