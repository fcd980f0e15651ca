"""The aten op registry: which handler imports each aten op into the IR.

Each aten op family has a small module (aten_*.py) that registers handlers with
@aten("add.Tensor", ...). A handler gets the importer and the node's arguments,
with graph nodes replaced by IR Values, and returns the Value(s). The registry
sits apart from the importer so that the handler modules and the importer both
import it, and neither imports the other.
"""

ATEN: dict[str, callable] = {}


class Unsupported(Exception):
    """Raised by a handler for a variant of an op that kuma cannot compile."""


def aten(*names: str):
    def register(handler):
        for name in names:
            ATEN["aten." + name] = handler
        return handler
    return register
