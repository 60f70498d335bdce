"""Scoring (docs/PAPER.md, sections 5 and 6): the PASCAL VOC comp6
protocol, its table, and the paper's reference results (``scoring``), and
the recall of edge-box proposals (``proposal_recall``).

May import: deconvnet.common, deconvnet.data."""
