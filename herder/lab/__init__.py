"""herder lab: network-namespace topologies for demonstrations and integration tests.

Build a topology (shipped: ``flat``, ``routed``, ``vrrp``, ``distributed``, ``regions``;
or any TOML file, see :mod:`herder.lab.topology`) as network namespaces on this
machine, use its nodes, and remove it::

    from herder.lab import Lab
    with Lab.up("flat", name="demo") as lab:
        print(lab.node("client").requests("http://198.18.0.11/", count=3).counts)

Needs root. The command line is ``herder lab ...`` (:mod:`herder.lab.cli`); the pytest
fixture is ``lab_up`` (:mod:`herder.lab.pytest_plugin`). User guide: docs/lab.md.
"""

from herder.lab.lab import Lab, LabInfo, down, list_labs
from herder.lab.netns import LabError
from herder.lab.node import Neighbour, Node
from herder.lab.topology import Topology, TopologyError, load_topology, resolve_topology, shipped_topologies

__all__ = [
    "Lab",
    "LabError",
    "LabInfo",
    "Neighbour",
    "Node",
    "Topology",
    "TopologyError",
    "down",
    "list_labs",
    "load_topology",
    "resolve_topology",
    "shipped_topologies",
]
