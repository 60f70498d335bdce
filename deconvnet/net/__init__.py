"""Stage 2 of the pipeline, the networks (docs/PAPER.md, sections 1 and 3):
the architecture as data (``architecture``), NetSpec generators
(``nets``), Zeiler and Fergus's projection nets of any of them
(``projection``) and solvers (``solvers``) for everything in prototxt/
(``prototxt``), VGG16 weight surgery (``surgery``), BatchNorm population
statistics (``bn_stats``), folding them for inference (``fold_bn``, with the
exact layer rewrites of ``rewrite``), strict weight loading (``weights``),
the authors' released weights converted into our nets (``release``, over
the V1 wire-format reader ``v1_wire``), the stand-in VGG16, 2014 FCN-8s
and DeconvNet release caffemodels of rehearsals and tests
(``stand_in_weights``), and the PyTorch twin used by benchmarks
(``torch_reference``; the benchmarks themselves are deconvnet.bench).

May import: deconvnet.common, deconvnet.data."""
