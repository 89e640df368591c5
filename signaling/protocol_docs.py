"""Generate docs/protocol.md and docs/protocol.schema.json from signaling.protocol.

    python -m signaling.protocol            write both files
    python -m signaling.protocol --check    exit 1 when the committed files differ

Only pydantic and the standard library: no Django needed. A test compares the
committed files with this output, so the documentation cannot drift from the code.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, create_model
from pydantic.json_schema import models_json_schema

from signaling import protocol as p

ROOT = Path(__file__).resolve().parent.parent
MARKDOWN = ROOT / "docs" / "protocol.md"
SCHEMA = ROOT / "docs" / "protocol.schema.json"
GENERATED = "Generated from signaling/protocol.py by `python -m signaling.protocol`: do not edit by hand."


def _camel(type_: str) -> str:
    return "".join(part.capitalize() for part in re.split(r"[._]", type_))


def client_models() -> dict[str, type[BaseModel]]:
    """One envelope model per client message type, for the schema and the tables."""
    models = {}
    for type_, (payload, needs_target, _) in p.CLIENT_MESSAGES.items():
        try:
            payload()
            data = (payload, Field(default_factory=payload))
        except Exception:
            data = (payload, ...)
        to = (p.MemberId, ...) if needs_target else (None, None)
        models[type_] = create_model(
            f"Client{_camel(type_)}",
            __doc__=payload.__doc__,
            __config__={"extra": "forbid"},
            v=(Literal[1], ...),
            type=(Literal[type_], ...),
            id=(p.ClientId, ...),
            to=to,
            data=data,
        )
    return models


def schema() -> dict:
    clients = client_models()
    everything = [(m, "validation") for m in clients.values()] + [(m, "validation") for m in p.SERVER_MESSAGES.values()]
    refs, definitions = models_json_schema(everything, ref_template="#/$defs/{model}")
    client_refs = [refs[(m, "validation")] for m in clients.values()]
    server_refs = [refs[(m, "validation")] for m in p.SERVER_MESSAGES.values()]
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"urn:telehealth:protocol:{p.SUBPROTOCOL}",
        "title": f"Session WebSocket protocol ({p.SUBPROTOCOL})",
        "description": GENERATED,
        "anyOf": [
            {"title": "Client message", "oneOf": client_refs},
            {"title": "Server message", "oneOf": server_refs},
        ],
        "$defs": definitions["$defs"],
    }


# --- markdown ------------------------------------------------------------------------------------


def _rst_to_md(text: str) -> str:
    """The module docstring in Markdown: ``code`` -> `code`, underlined titles -> ##, :: blocks -> fences."""
    lines = text.strip().splitlines()
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if i + 1 < len(lines) and lines[i + 1] and set(lines[i + 1]) == {"-"} and line.strip():
            out += [f"## {line.strip()}", ""]
            i += 2
            continue
        if line.endswith("::"):
            out += [_inline(line[:-1]), "", "```json"]
            i += 1
            while i < len(lines) and not lines[i].strip():
                i += 1
            while i < len(lines) and lines[i].startswith("    "):
                out.append(lines[i][4:])
                i += 1
            out += ["```"]
            continue
        out.append(_inline(line))
        i += 1
    return "\n".join(out)


def _inline(text: str) -> str:
    return re.sub(r"``([^`]+)``", r"`\1`", text)


def _type(prop: dict, defs: dict) -> str:
    if "$ref" in prop:
        return f"[{prop['$ref'].rsplit('/', 1)[-1]}](#{prop['$ref'].rsplit('/', 1)[-1].lower()})"
    if "const" in prop:
        return f"`{json.dumps(prop['const'])}`"
    if "enum" in prop:
        return " \\| ".join(f"`{json.dumps(v)}`" for v in prop["enum"])
    if "anyOf" in prop:
        return " or ".join(_type(option, defs) for option in prop["anyOf"])
    kind = prop.get("type", "any")
    if kind == "array":
        return f"list of {_type(prop.get('items', {}), defs)}"
    return kind


def _constraints(prop: dict) -> str:
    found = []
    options = prop.get("anyOf", [prop])
    for option in options:
        for key, label in (
            ("minLength", "min length"),
            ("maxLength", "max length"),
            ("minimum", "≥"),
            ("maximum", "≤"),
            ("pattern", "pattern"),
        ):
            if key in option:
                value = f"`{option[key]}`" if key == "pattern" else option[key]
                found.append(f"{label} {value}")
    return ", ".join(found)


def _fields_table(model_schema: dict, defs: dict, skip: set[str] = frozenset()) -> list[str]:
    properties = {k: v for k, v in model_schema.get("properties", {}).items() if k not in skip}
    if not properties:
        return []
    required = set(model_schema.get("required", []))
    rows = ["| field | type | required | notes |", "|---|---|---|---|"]
    for name, prop in properties.items():
        notes = "; ".join(x for x in (prop.get("description", ""), _constraints(prop)) if x)
        if "default" in prop and name not in required:
            notes = "; ".join(x for x in (notes, f"default `{json.dumps(prop['default'])}`") if x)
        rows.append(f"| `{name}` | {_type(prop, defs)} | {'yes' if name in required else 'no'} | {notes} |")
    return rows


def _doc(model: type[BaseModel]) -> str:
    text = (model.__doc__ or "").strip()
    if not text or text.startswith(("!!!", "Usage docs")):
        return ""
    return _inline(re.sub(r"\s*\n\s*", " ", text))


def markdown() -> str:
    generated = schema()
    defs = generated["$defs"]
    lines = [
        f"# Session WebSocket protocol (`{p.SUBPROTOCOL}`)",
        "",
        f"> {GENERATED}",
        "",
        _rst_to_md(p.__doc__ or ""),
        "",
        "## Limits",
        "",
        "| limit | value |",
        "|---|---|",
        *(f"| `{name}` | {value} |" for name, value in p.LIMITS.model_dump().items()),
        "",
        "Over the frame size or one of the text caps (chat, SDP, candidate, waiting-room message): close 1009.",
        "Each connection also has a rate limit (a token bucket, `WS_RATE_PER_SECOND` and `WS_RATE_BURST`).",
        "",
        "## Client messages",
        "",
        "Every client frame is `{v, type, id, to, data}`; the tables list `data`.",
        "",
        "| type | who may send it | `to` |",
        "|---|---|---|",
    ]
    for type_, (_, needs_target, moderator_only) in p.CLIENT_MESSAGES.items():
        who = "therapists of the session" if moderator_only else "anyone admitted"
        if type_ in {"ping", "session.leave"}:
            who = "anyone (also in the waiting room)"
        lines.append(f"| [`{type_}`](#{type_.replace('.', '')}) | {who} | {'required' if needs_target else '—'} |")
    for type_, (payload, _, _) in p.CLIENT_MESSAGES.items():
        lines += ["", f"### `{type_}`", ""]
        if _doc(payload):
            lines += [_doc(payload), ""]
        lines += _fields_table(defs.get(payload.__name__, {}), defs)
    lines += [
        "",
        "## Server messages",
        "",
        "Every server frame has `v`, `type`, `ts` (server time), `from` (a member id or null) and `re`",
        "(the client message id it answers, or null); the tables list the other fields.",
        "",
    ]
    envelope = {"v", "type", "ts", "from", "re"}
    for type_, model in p.SERVER_MESSAGES.items():
        lines += [f"### `{type_}`", ""]
        if _doc(model):
            lines += [_doc(model), ""]
        lines += _fields_table(defs[model.__name__], defs, skip=envelope)
        lines.append("")
    lines += ["## Objects", ""]
    for name in ("MemberInfo", "WaitingEntry", "ChatEntry", "RoomState", "WaitingState", "IceServer", "Limits"):
        model = getattr(p, name)
        lines += [f"### {name}", ""]
        if _doc(model):
            lines += [_doc(model), ""]
        lines += _fields_table(defs[name], defs)
        lines.append("")
    lines += ["## Error codes", "", "| code | meaning |", "|---|---|"]
    lines += [f"| `{code}` | {meaning} |" for code, meaning in sorted(p.ERROR_CODES.items())]
    lines += ["", "## Close codes", "", "| code | meaning |", "|---|---|"]
    lines += [f"| {code} | {meaning} |" for code, meaning in sorted(p.CLOSE_CODES.items())]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).rstrip() + "\n"


def render() -> dict[Path, str]:
    return {
        MARKDOWN: markdown(),
        SCHEMA: json.dumps(schema(), indent=2, ensure_ascii=False) + "\n",
    }


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    outputs = render()
    if "--check" in argv:
        stale = [str(path.relative_to(ROOT)) for path, text in outputs.items() if _read(path) != text]
        if stale:
            print(f"out of date: {', '.join(stale)} (run python -m signaling.protocol)", file=sys.stderr)
            raise SystemExit(1)
        return
    for path, text in outputs.items():
        path.write_text(text, encoding="utf-8")
        print(f"wrote {path.relative_to(ROOT)}")


def _read(path: Path) -> str | None:
    return path.read_text(encoding="utf-8") if path.exists() else None
