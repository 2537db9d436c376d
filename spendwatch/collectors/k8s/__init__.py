"""Kubernetes sources: running workloads priced per node (``jobs`` with ``inventory``/``workloads``), OpenCost
allocations (``opencost``) and the label mapping both share (``costs``). This file imports none of them.
"""
