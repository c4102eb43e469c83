"""kubedistill: distil reasoning from teacher LLMs into small students, as Kubeflow Pipelines."""

__version__ = "0.1.0"
