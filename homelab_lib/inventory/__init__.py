"""The typed model of the homelab, loaded from parameters/*.yaml."""

from homelab_lib.inventory.checks import NodeLoad, node_loads
from homelab_lib.inventory.load import load_inventory
from homelab_lib.inventory.model import Inventory, Node, Service, Vm

__all__ = ["Inventory", "Node", "NodeLoad", "Service", "Vm", "load_inventory", "node_loads"]
