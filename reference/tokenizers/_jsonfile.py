"""Saving and loading a tokenizer as its JSON, shared by every tokenizer class here."""
import json


def parse_json(s, kinds, fields=None):
    """The JSON object of a tokenizer, checked: ``s`` is a JSON object whose ``"type"`` is one of ``kinds`` (a
    name or a tuple of names) and whose ``fields`` (name -> Python type) are present with those types. Raises
    ValueError (TypeError for a non-string ``s``) naming what was expected and what came."""
    kinds = (kinds,) if isinstance(kinds, str) else tuple(kinds)
    want = f"a tokenizer JSON object with \"type\" in {list(kinds)}"
    if not isinstance(s, (str, bytes, bytearray)):
        raise TypeError(f"expected {want} as a str, got {type(s).__name__}")
    try:
        obj = json.loads(s)
    except json.JSONDecodeError as err:
        raise ValueError(f"expected {want}, got text that is not JSON ({err})") from None
    if not isinstance(obj, dict):
        kind = {type(None): "null", list: "array", str: "string", bool: "boolean"}.get(type(obj), "number")
        raise ValueError(f"expected {want}, got a JSON {kind}: {json.dumps(obj)[:40]}")
    if obj.get("type") not in kinds:
        raise ValueError(f"expected {want}, got type {obj.get('type')!r}")
    for name, kind in (fields or {}).items():
        if not isinstance(obj.get(name), kind):
            got = type(obj[name]).__name__ if name in obj else "nothing"
            raise ValueError(f"{obj['type']} JSON: expected \"{name}\" to be a {kind.__name__}, got {got}")
    return obj


class JSONFile:
    """Gives a class with ``to_json()`` and ``from_json(s)`` a ``save(path)`` and a ``load(path)``."""

    def save(self, path):
        """Write ``to_json()`` to ``path`` (UTF-8)."""
        with open(path, "w", encoding="utf-8") as f:
            f.write(self.to_json())

    @classmethod
    def load(cls, path):
        """Read a tokenizer written by ``save``."""
        with open(path, encoding="utf-8") as f:
            return cls.from_json(f.read())
