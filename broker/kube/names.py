"""The Kubernetes names the broker relies on: the chart's agent pod labels and default
namespace, and the labels and resources NVIDIA's GPU feature discovery and device plugin
put on GPU nodes. One place, so the chart, discovery and diagnosis cannot disagree."""

from __future__ import annotations

DEFAULT_NAMESPACE = "gpu-diagnostics"
AGENT_SELECTOR = "app.kubernetes.io/name=k8s-gpu-mcp,app.kubernetes.io/component=agent"

GPU_RESOURCE = "nvidia.com/gpu"
MIG_RESOURCE_PREFIX = "nvidia.com/mig-"
GPU_PRESENT_LABEL = "nvidia.com/gpu.present"
PRODUCT_LABEL = "nvidia.com/gpu.product"
COUNT_LABEL = "nvidia.com/gpu.count"
