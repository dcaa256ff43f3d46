"""The registries of everything users extend: candidate operations, attention modules, data sets,
search strategies and fast kernels.

An op is built as `OPS[name](C, stride, affine)`, an attention as `ATTENTIONS[name](C, height,
width)`; both keep C channels (an op divides the spatial size by `stride`).  A data set is a
`datasets.DatasetSpec` (`datasets.register_dataset`), a search strategy a `search.Strategy`
subclass, a fast kernel the fast subclass of a plain module class (`kernels.register`).  The
built-in entries register themselves where they are defined (`operations.py`, `attention.py`,
`datasets.py`, `search.py`, `rsws.py`, `kernels/`), in the order that fixes the columns of the
architecture tables and the order of the command-line choices.  This module imports none of them
until a table is read, so that genotype files can be read without building a network.  A user's
module registers its own entries the same way, and `--plugins MODULE` imports it before any
command-line choice is built (docs/extending.md).  Adding an attention:

    @ATTENTIONS.register('MyAttention')
    class MyAttention(nn.Module):
        def __init__(self, C, height=None, width=None): ...

Every registered attention is a candidate of the attention layers of the Att-DARTS search space;
an op is a candidate where a `--primitives` set lists it.  `kernels/__init__.py` documents how a
candidate opts into the fast implementation; without that it runs its plain `forward` in both.
"""
import importlib


class Registry:
    """An ordered name -> constructor table whose built-in entries are registered by `defined_in`
    (the modules defining them, by name) the first time the table is read."""

    def __init__(self, kind, *defined_in):
        self.kind, self._defined_in, self._entries = kind, defined_in, {}

    def register(self, name, constructor=None):
        """Add `constructor` under `name`; without it, a decorator that does."""
        def add(constructor):
            if name in self._entries and self._entries[name] is not constructor:
                raise ValueError(f"{self.kind} '{name}' is already registered")
            self._entries[name] = constructor
            return constructor
        return add if constructor is None else add(constructor)

    def unregister(self, name):
        del self._entries[name]

    def _table(self):
        for module in self._defined_in:
            importlib.import_module(module)
        return self._entries

    def __getitem__(self, name):
        table = self._table()
        if name not in table:
            raise KeyError(f"unknown {self.kind} '{name}'; known: {', '.join(table)}")
        return table[name]

    def __contains__(self, name):
        return name in self._table()

    def __iter__(self):
        return iter(list(self._table()))

    def __len__(self):
        return len(self._table())

    def names(self):
        return list(self._table())

    def items(self):
        return list(self._table().items())


OPS = Registry('op', 'operations')
ATTENTIONS = Registry('attention', 'attention')
DATASETS = Registry('data set', 'datasets')
STRATEGIES = Registry('search strategy', 'search', 'rsws')
# Keyed by the plain module class; the entry is its fast subclass.
FAST_KERNELS = Registry('fast kernel', 'kernels')
