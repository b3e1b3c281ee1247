"""Saving and loading a tokenizer as its JSON, shared by every tokenizer class here."""


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
