"""A YAML subset reader and writer: pyyaml is not in the node image."""
from __future__ import annotations

import json
import re


class YamlError(ValueError):
    pass


def _strip_comment(line: str) -> str:
    quote = ""
    for index, char in enumerate(line):
        if quote:
            if char == quote:
                quote = ""
        elif char in "'\"" and (index == 0 or line[index - 1] in " \t[{,:-"):
            quote = char
        elif char == "#" and (index == 0 or line[index - 1] in " \t"):
            return line[:index].rstrip()
    return line.rstrip()


def _split_key(text: str) -> tuple[str, str] | None:
    """Split `key: value` at the first colon that ends the key, or None if the line is no map entry."""
    if text[:1] in "'\"":
        end = text.find(text[0], 1)
        while text[0] == "'" and end != -1 and text[end + 1:end + 2] == "'":
            end = text.find("'", end + 2)
        if end == -1:
            return None
        rest = text[end + 1:].lstrip()
        if rest.startswith(":") and (len(rest) == 1 or rest[1] in " \t"):
            return _scalar(text[:end + 1]), rest[1:].strip()
        return None
    if text[:1] in "[{":
        return None
    match = re.search(r":(\s|$)", text)
    if not match:
        return None
    return text[:match.start()].strip(), text[match.end():].strip()


def _scalar(text: str):
    text = text.strip()
    if text[:1] == '"':
        try:
            return json.loads(text)
        except ValueError as exc:
            raise YamlError(f"bad double-quoted string {text}") from exc
    if text[:1] == "'":
        if not text.endswith("'") or len(text) < 2:
            raise YamlError(f"unterminated single-quoted string {text}")
        return text[1:-1].replace("''", "'")
    if text in ("", "~", "null", "Null", "NULL"):
        return None
    if text in ("true", "True", "TRUE"):
        return True
    if text in ("false", "False", "FALSE"):
        return False
    if re.fullmatch(r"[-+]?[0-9]+", text):
        return int(text)
    if re.fullmatch(r"[-+]?([0-9]+\.[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?", text):
        return float(text)
    return text


class _FlowParser:
    def __init__(self, text: str):
        self.text, self.pos = text, 0

    def parse(self):
        value = self.value()
        self.skip()
        if self.pos != len(self.text):
            raise YamlError(f"unexpected text after flow value: {self.text[self.pos:]!r}")
        return value

    def skip(self):
        while self.pos < len(self.text) and self.text[self.pos] in " \t\r\n":
            self.pos += 1

    def value(self):
        self.skip()
        char = self.text[self.pos:self.pos + 1]
        if char == "[":
            return self.collection("]", list)
        if char == "{":
            return self.collection("}", dict)
        if char in "\"'":
            return self.quoted()
        start = self.pos
        while self.pos < len(self.text) and self.text[self.pos] not in ",]}":
            if self.text[self.pos] == ":" and self.text[self.pos + 1:self.pos + 2] in (" ", ""):
                break
            self.pos += 1
        return _scalar(self.text[start:self.pos])

    def quoted(self):
        quote, start = self.text[self.pos], self.pos
        self.pos += 1
        while self.pos < len(self.text):
            char = self.text[self.pos]
            if quote == '"' and char == "\\":
                self.pos += 2
                continue
            if char == quote:
                if quote == "'" and self.text[self.pos + 1:self.pos + 2] == "'":
                    self.pos += 2
                    continue
                self.pos += 1
                return _scalar(self.text[start:self.pos])
            self.pos += 1
        raise YamlError("unterminated quoted string in flow collection")

    def collection(self, closer, kind):
        self.pos += 1
        result = kind()
        while True:
            self.skip()
            if self.text[self.pos:self.pos + 1] == closer:
                self.pos += 1
                return result
            item = self.value()
            if kind is dict:
                self.skip()
                if self.text[self.pos:self.pos + 1] != ":":
                    raise YamlError(f"expected ':' in flow mapping at {self.text[self.pos:]!r}")
                self.pos += 1
                result[item] = self.value()
            else:
                result.append(item)
            self.skip()
            char = self.text[self.pos:self.pos + 1]
            if char == ",":
                self.pos += 1
            elif char != closer:
                raise YamlError(f"expected ',' or '{closer}' in flow collection")


def _value(text: str):
    if text[:1] in "[{":
        return _FlowParser(text).parse()
    return _scalar(text)


class _BlockParser:
    def __init__(self, lines: list[tuple[int, str]]):
        self.lines, self.index = lines, 0

    def parse(self):
        if not self.lines:
            return None
        value = self.node(self.lines[0][0])
        if self.index != len(self.lines):
            raise YamlError(f"bad indentation near {self.lines[self.index][1]!r}")
        return value

    def node(self, indent: int):
        text = self.lines[self.index][1]
        if text == "-" or text.startswith("- "):
            return self.sequence(indent)
        if _split_key(text) is not None:
            return self.mapping(indent)
        self.index += 1
        return _value(text)

    def child(self, parent_indent: int, allow_sequence_at_parent: bool):
        if self.index < len(self.lines):
            indent, text = self.lines[self.index]
            if indent > parent_indent:
                return self.node(indent)
            if allow_sequence_at_parent and indent == parent_indent and (text == "-" or text.startswith("- ")):
                return self.sequence(indent)
        return None

    def sequence(self, indent: int):
        items = []
        while self.index < len(self.lines):
            line_indent, text = self.lines[self.index]
            if line_indent != indent or not (text == "-" or text.startswith("- ")):
                break
            rest = text[1:].strip()
            if not rest:
                self.index += 1
                items.append(self.child(indent, False))
            elif rest.startswith("- ") or _split_key(rest) is not None:
                # "- key: v" opens a map (or nested list) whose column is that of its first key.
                self.lines[self.index] = (indent + len(text) - len(rest), rest)
                items.append(self.node(self.lines[self.index][0]))
            else:
                self.index += 1
                items.append(_value(rest))
        return items

    def mapping(self, indent: int):
        result = {}
        while self.index < len(self.lines):
            line_indent, text = self.lines[self.index]
            if line_indent != indent:
                if line_indent > indent:
                    raise YamlError(f"bad indentation near {text!r}")
                break
            entry = _split_key(text)
            if entry is None:
                raise YamlError(f"expected a 'key: value' line, got {text!r}")
            key, rest = entry
            if key in result:
                raise YamlError(f'mapping key "{key}" already defined')
            self.index += 1
            if rest in ("|", "|-", ">", ">-"):
                result[key] = self.block_scalar(indent, rest)
            elif rest:
                result[key] = _value(rest)
            else:
                result[key] = self.child(indent, True)
        return result

    def block_scalar(self, indent: int, style: str) -> str:
        collected = []
        while self.index < len(self.lines) and self.lines[self.index][0] > indent:
            collected.append(self.lines[self.index])
            self.index += 1
        if not collected:
            return ""
        base = min(level for level, _ in collected)
        text_lines = [" " * (level - base) + text for level, text in collected]
        text = ("\n" if style[0] == "|" else " ").join(text_lines)
        return text if style.endswith("-") else text + "\n"


def yaml_load_all(text: str) -> list:
    """Every document of a YAML (or JSON) stream, empty documents dropped."""
    documents, current = [], []
    pending_open = ""
    for raw in text.replace("\t", "    ").splitlines():
        if pending_open:
            pending_open += " " + _strip_comment(raw).strip()
            if _balanced(pending_open):
                current[-1] = (current[-1][0], pending_open)
                pending_open = ""
            continue
        if raw.startswith("---") or raw.startswith("..."):
            documents.append(current)
            current = []
            continue
        stripped = _strip_comment(raw)
        if not stripped.strip() or stripped.lstrip().startswith("%"):
            continue
        indent = len(stripped) - len(stripped.lstrip(" "))
        current.append((indent, stripped.strip()))
        if not _balanced(stripped):
            pending_open = stripped.strip()
    if pending_open:
        raise YamlError("unterminated flow collection")
    documents.append(current)
    return [doc for doc in (_BlockParser(lines).parse() for lines in documents if lines) if doc is not None]


def _balanced(text: str) -> bool:
    depth, quote = 0, ""
    for char in text:
        if quote:
            quote = "" if char == quote else quote
        elif char in "\"'":
            quote = char
        elif char in "[{":
            depth += 1
        elif char in "]}":
            depth -= 1
    return depth <= 0


def yaml_load(text: str):
    documents = yaml_load_all(text)
    if len(documents) > 1:
        raise YamlError("expected a single YAML document")
    return documents[0] if documents else None


_PLAIN_SAFE = re.compile(r"^[A-Za-z0-9_./+=()@$^~][A-Za-z0-9_./+=()@$^~ :,\-]*$")


def _emit_scalar(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    text = str(value)
    # Timestamps are quoted as Go's YAML encoder does, so that YAML 1.1 readers keep them strings.
    plain_ok = (_PLAIN_SAFE.match(text) and not re.match(r"\d{4}-\d\d-\d\d", text)
                and not text.endswith(" ") and ": " not in text
                and not text.endswith(":") and not isinstance(_scalar(text), (bool, int, float, type(None))))
    return text if plain_ok else json.dumps(text)


def yaml_dump(value, indent: int = 0) -> str:
    """Block-style YAML in the layout Go's sigs.k8s.io/yaml produces (lists flush with their key)."""
    pad = " " * indent
    if isinstance(value, dict):
        if not value:
            return pad + "{}\n"
        out = []
        for key, item in value.items():
            label = f"{pad}{_emit_scalar(key)}:"
            if isinstance(item, dict) and item:
                out.append(label + "\n" + yaml_dump(item, indent + 2))
            elif isinstance(item, list) and item:
                out.append(label + "\n" + yaml_dump(item, indent))
            else:
                out.append(label + " " + yaml_dump(item, 0))
        return "".join(out)
    if isinstance(value, list):
        if not value:
            return pad + "[]\n"
        out = []
        for item in value:
            if isinstance(item, (dict, list)) and item:
                nested = yaml_dump(item, indent + 2)
                out.append(pad + "- " + nested[indent + 2:])
            else:
                out.append(pad + "- " + yaml_dump(item, 0))
        return "".join(out)
    return pad + _emit_scalar(value) + "\n"


