"""One small registry type for everything plugins register (methods, datasets, ...)."""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Callable, Iterable
from typing import Generic, TypeVar

T = TypeVar("T")


class UnknownNameError(KeyError):
    """A name that is not registered; the message lists the valid names and the closest match."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class Registry(Generic[T]):
    """Named items of one kind. Names are unique: registering a name twice is refused."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}
        self._owners: dict[str, str] = {}

    def register(self, name: str, item: T, owner: str = "") -> None:
        """Add ``item`` under ``name``; raise ValueError if the name is taken or malformed."""
        if not name or name != name.lower() or any(c.isspace() for c in name):
            raise ValueError(f"{self.kind} name {name!r} must be lowercase without spaces")
        if name in self._items:
            raise ValueError(
                f"{self.kind} {name!r} is registered twice (by {self._owners[name] or '?'} "
                f"and by {owner or '?'}); rename one of them"
            )
        self._items[name] = item
        self._owners[name] = owner

    def get(self, name: str) -> T:
        """The item called ``name``; UnknownNameError names the valid ones otherwise."""
        try:
            return self._items[name]
        except KeyError:
            raise UnknownNameError(self._unknown_message(name)) from None

    def owner(self, name: str) -> str:
        """The plugin that registered ``name``."""
        return self._owners[name]

    def names(self, include: Iterable[str] = ("*",), exclude: Iterable[str] = ()) -> list[str]:
        """Registered names (in registration order) matching any include and no exclude wildcard."""
        inc, exc = list(include), list(exclude)
        return [
            n
            for n in self._items
            if any(fnmatch.fnmatchcase(n, p) for p in inc)
            and not any(fnmatch.fnmatchcase(n, p) for p in exc)
        ]

    def items(self) -> list[tuple[str, T]]:
        return list(self._items.items())

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __len__(self) -> int:
        return len(self._items)

    def select(self, spec: str, groups: Callable[[str], list[str]] | None = None,
               all_names: list[str] | None = None) -> list[str]:
        """Resolve a comma list of names, wildcards, group names or ``all`` to registered names.

        ``all`` means ``all_names`` when given, else every name. Order follows the registry;
        duplicates are dropped. An item that matches nothing raises UnknownNameError naming
        the valid choices.
        """
        chosen: list[str] = []
        for raw in spec.split(","):
            item = raw.strip().lower()
            if not item:
                continue
            if item == "all":
                matched = self.names() if all_names is None else list(all_names)
            elif item in self._items:
                matched = [item]
            elif groups is not None and groups(item):
                matched = groups(item)
            elif any(c in item for c in "*?["):
                matched = self.names([item])
            else:
                matched = []
            if not matched:
                raise UnknownNameError(self._unknown_message(item))
            chosen.extend(m for m in matched if m not in chosen)
        if not chosen:
            raise UnknownNameError(f"no {self.kind} given; choose from: {', '.join(self._items)}")
        order = list(self._items)
        return sorted(chosen, key=order.index)

    def _unknown_message(self, name: str) -> str:
        valid = ", ".join(self._items) or "(none registered)"
        close = difflib.get_close_matches(name, list(self._items), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        return f"unknown {self.kind} {name!r}.{hint} Valid {self.kind}s: {valid}"
