"""Types that carry secret values without ever printing them.

A secret that reaches a log line, an Event or an exception message is a leak, and the easiest
way to leak one is to format an object that holds it. Wrapping values in these types makes the
safe behaviour the default: their repr, str and format show `<redacted>`, and reading the value
takes an explicit call (`reveal()`, or indexing a `SecretFields`) that stands out in review.
"""

from __future__ import annotations

import collections.abc
import hmac
import types

REDACTED = "<redacted>"
"""What every redacting type prints instead of its value."""


class Redacted:
    """Holds one secret string and prints `<redacted>` wherever it is formatted."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        """Wraps `value`; only `reveal()` gives it back."""
        self._value = value

    def reveal(self) -> str:
        """Returns the wrapped value; call it only where the value must leave the process."""
        return self._value

    def __repr__(self) -> str:
        return REDACTED

    def __str__(self) -> str:
        return REDACTED

    def __format__(self, format_spec: str) -> str:
        return REDACTED

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Redacted):
            return NotImplemented
        # Constant-time comparison: equality on secrets must not reveal a common prefix by timing.
        return hmac.compare_digest(
            self._value.encode("utf-8", "surrogatepass"), other._value.encode("utf-8", "surrogatepass")
        )

    def __hash__(self) -> int:
        return hash((Redacted, self._value))


class SecretFields(collections.abc.Mapping[str, str]):
    """An immutable mapping of field name to plaintext value whose repr names only the fields.

    It is what an opened envelope decodes to and what validation hands to sealing: the values
    are reachable by indexing, as in any mapping, but formatting the mapping never shows them.
    """

    __slots__ = ("_fields",)

    def __init__(
        self, fields: collections.abc.Mapping[str, str] | collections.abc.Iterable[tuple[str, str]] = ()
    ) -> None:
        """Copies `fields`, so later changes to the source do not reach this mapping."""
        self._fields: collections.abc.Mapping[str, str] = types.MappingProxyType(dict(fields))

    def __getitem__(self, field: str) -> str:
        return self._fields[field]

    def __iter__(self) -> collections.abc.Iterator[str]:
        return iter(self._fields)

    def __len__(self) -> int:
        return len(self._fields)

    def __hash__(self) -> int:
        return hash(frozenset(self._fields.items()))

    def redacted(self, field: str) -> Redacted:
        """Returns the value of `field` wrapped, for code that passes it on without reading it."""
        return Redacted(self._fields[field])

    def __repr__(self) -> str:
        return f"SecretFields(fields={sorted(self._fields)!r}, values={REDACTED})"

    def __str__(self) -> str:
        return self.__repr__()

    def __format__(self, format_spec: str) -> str:
        return self.__repr__()
