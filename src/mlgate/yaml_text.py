"""YAML text read with PyYAML's safe loader, every failure of it one error: `yaml.YAMLError`.

PyYAML's safe constructors raise whatever their conversion raises for a value its scanner took for a typed
one (ValueError for `2020-13-01` or `!!int 0x`, KeyError for `!!bool ""`, IndexError for `!!int ""`,
AttributeError for `!!timestamp x`), and its parser RecursionError for collections nested too deep. The text
comes from people and models (mlgate.yaml, a snapshot's project section, a logged model's MLmodel): each
caller refuses a YAMLError in its own terms, never with a traceback.
"""

from __future__ import annotations

from typing import Any

import yaml


def load(text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        raise
    except Exception as exc:  # whichever it is, the text is not YAML this parser can read
        raise yaml.YAMLError(f"{type(exc).__name__}: {exc}") from None
