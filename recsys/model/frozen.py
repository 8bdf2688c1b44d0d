"""A mapping a frozen config holds (``CFConfig.event_weights``, ``FusionConfig.weights``...).

A frozen dataclass stops its fields from being set, not a dict field from being changed in
place: ``config.event_weights["view"] = -1`` went past the checks the config made when it was
built, and the config could not be hashed. ``FrozenDict`` reads, compares and serializes as a
dict (JSON, ``dataclasses.asdict``, pickle for Ray), but refuses changes and hashes."""

from __future__ import annotations

from typing import Any, NoReturn


class FrozenDict(dict):
    """A dict that cannot be changed in place; ``dataclasses.replace`` the config with a
    new one instead."""

    def _refuse(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise TypeError(
            "a config's mapping cannot be changed in place (the config checked it when it was "
            "built); build a new config with dataclasses.replace(config, field={...})"
        )

    __setitem__ = __delitem__ = _refuse
    clear = pop = popitem = setdefault = update = _refuse
    __ior__ = _refuse

    def __hash__(self) -> int:  # type: ignore[override]
        return hash(frozenset(self.items()))

    def __reduce__(self):  # pickled as its items: unpickling sets none one by one
        return (type(self), (dict(self),))

    def __copy__(self) -> FrozenDict:
        return self

    def __deepcopy__(self, memo: dict) -> FrozenDict:
        return self
