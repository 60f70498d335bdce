"""Caffe Python layers, referenced from prototxt as python_layers.<module>."""
