"""medvlp_lib: the library behind the medvlp book on resource-efficient medical vision-language learning."""
from __future__ import annotations

__version__ = "0.1.0"
