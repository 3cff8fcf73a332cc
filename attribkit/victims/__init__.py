"""Victim models: the networks attacks are crafted against."""

from .model import Victim
from .store import VictimRecord, load_victim, save_victim, victim_path

__all__ = ["Victim", "VictimRecord", "load_victim", "save_victim", "victim_path"]
