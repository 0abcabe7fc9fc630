"""The classifier as tensors: backbones, preprocessing, training loop, metrics, splits, bundle, ONNX.

Torch only: no path to a GeoTIFF and no CRS ever reaches this package. `bundle` alone stays
torch-free so CPU prediction can read a bundle without importing torch.
"""
