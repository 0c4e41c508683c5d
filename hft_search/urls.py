"""Storage URLs as text: which kind a URL names, whether a spec may name it, and masking of its password.

Why a module of its own, importing nothing of the project: the spec (:mod:`hft_search.spec`) validates and
masks its URL-valued fields by their *type*, and the spec may import nothing but :mod:`hft_search.exceptions`;
:mod:`hft_search.storage`, which opens the storages, needs the same rules. One place holds them for both, so
what ``validate`` accepts is what ``run`` opens, and every URL is masked the same way.
"""

from __future__ import annotations

import re
import urllib.parse
from pathlib import Path

MASK = "***"

ACCEPTED_FORMS = (
    "sqlite:///PATH (a local file; the default), "
    "postgresql+psycopg://USER:PASSWORD@HOST:PORT/DB (workers on several machines), "
    "or journal:PATH (an Optuna journal file)"
)

_URL = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)(?P<rest>\S+)")
_PASSWORD_PARAMETER = re.compile(r"(?P<head>\bpassword=)(?P<password>[^&\s]*)", re.IGNORECASE)


def mask_url(text: str) -> str:
    """``text`` with the password of every URL in it, and every ``password=`` parameter, replaced by ``***``.

    Works on a bare URL and on free text (a log message, an error) that contains URLs. A URL's password is
    everything between ``user:`` and the *last* ``@`` of the URL (the URL ends at white space), so a password
    with a raw ``/``, ``:``, ``?``, ``#`` or ``@`` in it (it should be percent-encoded, and SQLAlchemy then
    reads only part of it) is masked whole: too much, never too little. A URL without a password, an SQLite
    or a journal path is returned unchanged.
    """
    masked = _URL.sub(_mask_match, text)
    return _PASSWORD_PARAMETER.sub(rf"\g<head>{MASK}", masked)


def _mask_match(match: re.Match[str]) -> str:
    rest = match["rest"]
    userinfo, at, after = rest.rpartition("@")
    user, colon, _ = userinfo.partition(":")
    if not at or not colon:
        return match[0]
    return f"{match['scheme']}{user}:{MASK}@{after}"


def url_password(url: str) -> str | None:
    """The password of ``url`` as written (what :func:`mask_url` hides), or None when it has none."""
    match = _URL.search(url)
    if match is None:
        return None
    _, colon, password = match["rest"].rpartition("@")[0].partition(":")
    return password if colon else None


def mask_error(text: str, url: str) -> str:
    """``text`` (a driver's error about ``url``) with URLs masked, and every piece of ``url``'s password too.

    A password with a raw ``@`` or ``/`` is misread by SQLAlchemy: part of it becomes the host or the database
    name, and the driver quotes that part (``could not translate host name "ss3cr3t@127.0.0.1"``) where no URL
    pattern can see it. So the password, its percent-decoded form and their pieces between such characters
    (three characters or more) are masked wherever they appear.
    """
    masked = mask_url(text)
    password = url_password(url)
    if password is None:
        return masked
    pieces = {piece for form in (password, urllib.parse.unquote(password))
              for piece in (form, *re.split(r"[@/:?#]", form)) if len(piece) >= 3}
    for piece in sorted(pieces, key=len, reverse=True):
        masked = masked.replace(piece, MASK)
    return masked


def storage_kind(url: str) -> str | None:
    """``sqlite``, ``postgresql`` or ``journal``: the storage ``url`` names by its scheme; None for any other."""
    scheme = url.partition(":")[0].lower()
    if scheme in ("sqlite", "journal"):
        return scheme
    if scheme == "postgresql" or scheme.startswith("postgresql+"):
        return "postgresql"
    return None


def storage_url_problem(url: str) -> str | None:
    """Why ``url`` cannot name a study storage, judged from its text alone; None when it may.

    Refused: a scheme hft-search does not open (``mysql://``: Optuna could, but hft-search's workers are
    tested on these three only), and an SQLite database in memory (``sqlite://``, ``sqlite:///:memory:``),
    which vanishes with the process while every command says the study is "stored" in it.
    """
    kind = storage_kind(url)
    if kind is None:
        return f"unsupported storage URL {mask_url(url)!r}: use {ACCEPTED_FORMS}"
    if kind == "sqlite" and url.partition("://")[2].split("?")[0] in ("", "/", "/:memory:"):
        return (f"{url!r} is an in-memory SQLite database: the study would vanish when the process ends; "
                "name a file, e.g. sqlite:///hft.db")
    return None


def absolute_file_url(url: str) -> str:
    """An SQLite or journal URL with an absolute path, any other URL as it is: Ray workers need not share the
    launcher's directory, and ``train`` finds the study of an exported spec from any folder."""
    scheme = url.partition(":")[0].lower()
    if scheme == "sqlite" and url.startswith("sqlite:///") and not url.startswith("sqlite:////"):
        path = url.removeprefix("sqlite:///")
        return url if path in ("", ":memory:") else f"sqlite:///{Path(path).resolve()}"
    if scheme == "journal":
        rest = url.partition(":")[2]
        return url if rest.startswith("//") else f"journal:{Path(rest).expanduser().resolve()}"
    return url
