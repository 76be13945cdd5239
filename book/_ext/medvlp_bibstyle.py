"""Sphinx extension: the reference list labels entries the way the text cites them, author-year.

The in-text style is sphinxcontrib-bibtex's ``author_year`` ("[Pham et al., 2025]"); pybtex's default
``alpha`` labels ("[PPL25]") would not match it. This registers a pybtex label style and a formatting style
(``plain`` with those labels, sorted by author, year, title) under the name ``medvlp_authoryear``;
``_config.yml`` selects it with ``bibtex_default_style``.
"""
from __future__ import annotations

from collections import Counter

from pybtex.plugin import register_plugin
from pybtex.style.formatting.plain import Style as PlainStyle
from pybtex.style.labels import BaseLabelStyle

NAME = "medvlp_authoryear"


def _names(entry) -> str:
    people = entry.persons.get("author") or entry.persons.get("editor") or []
    last = [" ".join(p.last_names).replace("{", "").replace("}", "") for p in people]
    if not last:
        return entry.key
    if len(last) == 1:
        return last[0]
    if len(last) == 2:
        return f"{last[0]} and {last[1]}"
    return f"{last[0]} et al."


class AuthorYearLabels(BaseLabelStyle):
    """``Pham et al., 2025``; a second label with the same text gets ``b``, a third ``c``, ..."""

    def format_labels(self, sorted_entries):
        sorted_entries = list(sorted_entries)
        base = [f"{_names(e)}, {e.fields.get('year', 'n.d.')}" for e in sorted_entries]
        counts, seen = Counter(base), Counter()
        for label in base:
            if counts[label] > 1:
                seen[label] += 1
                label += "abcdefghijklmnopqrstuvwxyz"[seen[label] - 1]
            yield label


class AuthorYearStyle(PlainStyle):
    default_label_style = NAME
    default_sorting_style = "author_year_title"


def setup(app):
    register_plugin("pybtex.style.labels", NAME, AuthorYearLabels)
    register_plugin("pybtex.style.formatting", NAME, AuthorYearStyle)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
