"""DeconvNet in Caffe: the shared library code behind tools/ and data_prep/."""
