"""The environment variables telehealth/settings.py reads, found in its source.

The settings read every variable through ``env.str/bool/int/list/choice("NAME", ...)``;
tests compare this set with .env.example and docker-compose.yml so neither can
drift from the settings.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SETTINGS_PY = ROOT / "telehealth" / "settings.py"

_READ = re.compile(r'\benv\.(?:str|bool|int|list|choice)\(\s*"([A-Z][A-Z0-9_]*)"')
_ANY_CALL = re.compile(r"\benv\.\w+\(")


def names_read_by_settings() -> set[str]:
    source = SETTINGS_PY.read_text()
    found = _READ.findall(source)
    # A read whose name is not a literal would escape every check built on this set.
    assert len(found) == len(_ANY_CALL.findall(source)), "settings.py reads a variable by a non-literal name"
    names = set(found)
    # Guard the guard: if the pattern stopped matching, every comparison would pass vacuously.
    assert {"SECRET_KEY", "DEBUG", "DATABASE_URL", "REDIS_URL", "ALLOWED_HOSTS"} <= names, names
    return names
