"""Seeing inside the network, after Zeiler and Fergus (ECCV 2014;
docs/VISUALIZE.md): the projection net of a layer loaded with a forward
net's weights (``projector``), the image sets it looks through
(``sources``), the search for each unit's strongest activations
(``top9``), occlusion sensitivity (``occlusion``), the pictures
(``render``) and the figures tools/visualize.py and the demo write
(``views``). The projection net itself is generated in
deconvnet.net.projection.

May import: deconvnet.common, deconvnet.data, deconvnet.net, deconvnet.infer."""
