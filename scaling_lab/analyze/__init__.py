"""Analyzers: params, MACs/FLOPs (analytic, thop, fvcore), later latency and memory."""
