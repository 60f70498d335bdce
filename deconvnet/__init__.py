"""DeconvNet in Caffe: the library behind tools/, data_prep/ and python_layers/.

Sub-packages follow the pipeline; each may import only those named beside it:

- ``common``: constants (classes, void label, mean, crop sizes), atomic
  writes, device choice, the tools' CLI helper. Imports nothing of ours.
- ``data``: VOC/SBD readers, image sets, synthetic data, proposals, crops,
  the crop LMDB, balancing, downloads, the data layers' ``param_str``.
  May import common.
- ``net``: architecture, NetSpec generators, solvers, VGG16 surgery,
  BatchNorm statistics, the PyTorch reference. May import common, data.
- ``eval``: comp6 scoring and the paper's reference numbers. May import
  common, data.
- ``train``: the pycaffe trainer (validation, learning-rate rules,
  snapshots) and training plots. May import common, data, net, eval.
- ``infer``: proposal inference (aggregation, dense CRF, the FCN-8s
  ensemble), outputs, figures. May import common, data, net.
- ``bench``: benchmarking programs outside the pipeline (the GPU kit's
  PyTorch timings, report and carried inputs). May import common, data,
  net.
- ``visualize``: Zeiler and Fergus's projections, top activations,
  filters and occlusion sensitivity (the projection net is generated in
  net). May import common, data, net, infer.

No module here imports ``tools``, ``data_prep`` or ``experiments``;
``tests/test_layout.py`` checks all of this.
"""
