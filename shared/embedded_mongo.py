"""nx-27017, started with one correction to the SQLite engine beneath it (neosqlite).

neosqlite's SQL fast path for ``update_one`` stores a top-level ``$set`` of a datetime as a naive
string (so it no longer compares as a date: ``$lte now`` on ``next_transition_at``, say) and of a
boolean as 0 or 1. Updates that set either take neosqlite's own Python path instead, which stores
them as MongoDB does. The store-conformance suite checks the result.
"""

import sys
from datetime import date, datetime
from typing import Any

MANGLED_TYPES = (date, datetime, bool)


def _sets_a_mangled_type(update_spec: dict[str, Any]) -> bool:
    for operator in ("$set", "$setOnInsert", "$max", "$min"):
        values = update_spec.get(operator)
        if isinstance(values, dict) and any(isinstance(v, MANGLED_TYPES) for v in values.values()):
            return True
    return False


def patch_neosqlite() -> None:
    from neosqlite.collection.query_helper._sql_updates import SqlUpdatesMixin

    original = SqlUpdatesMixin._can_use_sql_updates
    if getattr(original, "_selfex_patched", False):
        return

    def _can_use_sql_updates(self, update_spec, doc_id, original_doc=None):
        if _sets_a_mangled_type(update_spec):
            return False
        return original(self, update_spec, doc_id, original_doc)

    _can_use_sql_updates._selfex_patched = True  # type: ignore[attr-defined]
    SqlUpdatesMixin._can_use_sql_updates = _can_use_sql_updates


def main() -> int:
    patch_neosqlite()
    from nx_27017.nx_27017 import main as nx_main

    sys.argv[0] = "nx-27017"
    return nx_main()


if __name__ == "__main__":
    sys.exit(main())
