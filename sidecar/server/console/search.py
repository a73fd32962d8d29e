"""Finding accounts by id, name or attribute value, a page at a time, among 100,000 or more.

A search is a scan of the live accounts (there is no index to keep in step with every admin
change and every sidecar of a shared database), made cheap by remembering each account's
lower-cased search text next to the account object it was made from: accounts are immutable,
so the text stays right exactly as long as the object is the one being served. Pages are
keyed by the last id shown (`after`), so a page costs one scan whatever its number.
"""

from __future__ import annotations

import heapq
import threading
from collections.abc import Mapping
from dataclasses import dataclass

from ...catalog.model import Account

PAGE_SIZE = 50


@dataclass(frozen=True, slots=True)
class Found:
    accounts: list[Account]
    total: int  # every match, not just this page
    next_after: str | None  # the `after` of the next page; None on the last one


def _search_text(account: Account) -> str:
    values = " ".join(str(v) for v in account.attributes.values())
    return f"{account.id}\n{account.name}\n{values}".lower()


class AccountSearch:
    """Scans with a per-account cache of search text; safe to call from several threads."""

    def __init__(self) -> None:
        self._texts: dict[str, tuple[Account, str]] = {}
        self._lock = threading.Lock()

    def _text(self, account: Account) -> str:
        cached = self._texts.get(account.id)
        if cached is not None and cached[0] is account:
            return cached[1]
        found = _search_text(account)
        with self._lock:
            self._texts[account.id] = (account, found)
        return found

    def find(
        self, accounts: Mapping[str, Account], query: str, after: str = "", size: int = PAGE_SIZE
    ) -> Found:
        q = query.strip().lower()
        if q:
            matches = [i for i, a in list(accounts.items()) if q in self._text(a)]
            if len(self._texts) > 2 * len(accounts):  # deleted accounts: drop their texts
                with self._lock:
                    self._texts = {k: v for k, v in self._texts.items() if k in accounts}
        else:
            matches = list(accounts)
        page_ids = heapq.nsmallest(size + 1, (i for i in matches if i > after))
        more = len(page_ids) > size
        page_ids = page_ids[:size]
        page = [accounts[i] for i in page_ids if i in accounts]
        return Found(page, len(matches), page_ids[-1] if more and page_ids else None)
