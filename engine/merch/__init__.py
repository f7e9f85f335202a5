"""Merchandising: synonyms on the lexical side, pin/boost/bury/hide rules on the ranked products, kept in the
registry database, versioned and audited (docs/merch.md)."""
from .errors import MerchError, MerchNotFound
from .live import MerchSource
from .rules import ACTIONS, MATCHES, Rule, shape
from .stage import RulesStage
from .store import MerchStore
from .synonyms import Expansion, Synonym, expand

__all__ = ["ACTIONS", "MATCHES", "Expansion", "MerchError", "MerchNotFound", "MerchSource", "MerchStore", "Rule",
           "RulesStage", "Synonym", "expand", "shape"]
