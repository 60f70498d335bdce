"""Helpers every stage shares: ``constants`` (the classes, the void label,
VGG16's mean, crop sizes), ``atomic`` (files that appear whole or not at
all), ``machine`` (CPU name, usable cores, Caffe device choice), ``blas``
(the thread count of Caffe's OpenBLAS), ``processes``
(workers that die with their parent), ``sharding`` (the
K-th of N parts of a list, from a flag or a Slurm array), ``cli`` (what the
command-line tools share, and flags generated from dataclasses) and
``recipes`` (the release and paper recipes: every choice on which the
paper's text and the authors' release differ).

May import: nothing else of deconvnet."""
