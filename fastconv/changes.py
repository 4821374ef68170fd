"""A mark that moves whenever a model is changed: what lets the inference
plan (:mod:`fastconv.plan`) skip its full staleness check on a run when
nothing changed since the last one.

The plan holds a model's live objects and must never run stale. Its full
check compares by identity every attribute, param and buffer it read (about
100 objects for the MNIST CNN): 3.4 us alone, but 5-10 us inside a batch-1
pass, whose other work pushes those objects out of cache (Intel Xeon, an
eighth of cnn's pass). So the parts of a model note their changes here:

* a :class:`Watched` object (every :class:`~fastconv.layers.Layer`, the
  :class:`~fastconv.model.Sequential` and its fusion steps) notes an
  assignment to any public attribute but the gradients' (``grads`` and
  ``needs_input_grad``, set by each training step and read by no plan); a
  plain ``dict`` or ``list`` it is given becomes a :class:`WatchedDict` or
  :class:`WatchedList` (``params``, ``buffers``, ``steps``, ``layers``);
* those note every change made through their methods.

A change replaces :data:`mark` with a new object. A plan keeps the mark it
last checked at (read before it checked): the same object, nothing was
changed through these; another, it runs its full check. A change that goes
around them (``object.__setattr__``, ``dict.__setitem__(layer.params, ...)``,
a layer's ``__dict__`` written directly) is seen only at the next full
check, after any other change.
"""
from __future__ import annotations

mark = object()
"""Replaced by a new object on every change (see the module docstring)."""

UNWATCHED = frozenset({"grads", "needs_input_grad"})
"""Public attributes whose assignment is not a change: set by every
training step, read by no plan."""


def note() -> None:
    """Record a change: a new :data:`mark` (an assignment, atomic under the
    GIL; every change made before it is visible to a check that follows)."""
    global mark
    mark = object()


class Watched:
    """A model part whose public attributes are watched (see the module
    docstring)."""

    def __setattr__(self, name, value):
        if name[0] == "_" or name in UNWATCHED:
            object.__setattr__(self, name, value)
            return
        if type(value) is dict:
            value = WatchedDict(value)
        elif type(value) is list:
            value = WatchedList(value)
        object.__setattr__(self, name, value)
        note()

    def __delattr__(self, name):
        object.__delattr__(self, name)
        note()


def _noting(method):
    """``method`` of dict or list, followed by :func:`note`."""

    def changed(self, *args, **kwargs):
        result = method(self, *args, **kwargs)
        note()
        return result

    changed.__name__, changed.__doc__ = method.__name__, method.__doc__
    return changed


def _watching(base, changing):
    """A subclass of ``base`` (dict or list) whose methods named in
    ``changing`` each do what base's does, then note a change."""
    namespace = {name: _noting(getattr(base, name)) for name in changing}
    namespace.update(__module__=__name__, __doc__=f"A {base.__name__} that notes every change made through its methods.")
    return type(f"Watched{base.__name__.capitalize()}", (base,), namespace)


WatchedDict = _watching(dict, ("__setitem__", "__delitem__", "__ior__", "clear", "pop", "popitem", "setdefault",
                               "update"))
WatchedList = _watching(list, ("__setitem__", "__delitem__", "__iadd__", "__imul__", "append", "clear", "extend",
                               "insert", "pop", "remove", "reverse", "sort"))
