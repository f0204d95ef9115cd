"""Loader for Zammad's email-parser fixtures in ``<repo>/../shared/corpus/zammad-mail``.

The corpus is AGPL test data that stays outside this repository; it is read in place. Each
``mailNNN.box`` (raw message) has a ``mailNNN.yml`` with what Zammad's parser extracted. The YAML
was written by Ruby and carries tags PyYAML does not know (``!ruby/hash:...`` on every mapping,
``!binary`` for base64-encoded byte strings), so a SafeLoader subclass maps them to plain data.
"""
from __future__ import annotations

import base64
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
CORPUS_DIR = REPO_ROOT.parent / "shared" / "corpus" / "zammad-mail"


class RubyYamlLoader(yaml.SafeLoader):
    """SafeLoader that turns Ruby-tagged nodes into plain dicts, lists and strings."""


def _ruby_node(loader: RubyYamlLoader, suffix: str, node: yaml.Node) -> Any:
    if isinstance(node, yaml.MappingNode):
        return loader.construct_mapping(node, deep=True)
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node, deep=True)
    return loader.construct_scalar(node)


def _binary(loader: RubyYamlLoader, node: yaml.Node) -> bytes:
    return base64.b64decode(loader.construct_scalar(node))  # type: ignore[arg-type]


RubyYamlLoader.add_multi_constructor("!ruby/", _ruby_node)
RubyYamlLoader.add_constructor("!binary", _binary)


@dataclass(frozen=True)
class CorpusMail:
    name: str              # file stem, e.g. "mail072"
    raw: bytes
    expected: dict[str, Any]

    def attachment_data(self) -> list[tuple[str, bytes, dict[str, Any]]]:
        """(filename, data as bytes, preferences) of each expected attachment.

        Ruby wrote valid-UTF-8 data as YAML strings and other data as ``!binary``; both are the
        attachment's bytes, so strings are encoded back to UTF-8.
        """
        out = []
        for att in self.expected.get("attachments") or []:
            data = att.get("data")
            if data is None:
                data = b""
            elif isinstance(data, str):
                data = data.encode("utf-8")
            out.append((str(att.get("filename")), data, dict(att.get("preferences") or {})))
        return out


def load_yaml(path: Path) -> dict[str, Any]:
    with path.open("rb") as fh:
        data = yaml.load(fh, Loader=RubyYamlLoader)  # noqa: S506 - SafeLoader subclass
    return data or {}


def corpus_names(directory: Path = CORPUS_DIR) -> list[str]:
    """Stems of all ``.box`` files that have a ``.yml`` next to them, sorted."""
    if not directory.is_dir():
        return []
    return sorted(p.stem for p in directory.glob("*.box") if p.with_suffix(".yml").is_file())


def load_mail(name: str, directory: Path = CORPUS_DIR) -> CorpusMail:
    box = directory / f"{name}.box"
    return CorpusMail(name, box.read_bytes(), load_yaml(box.with_suffix(".yml")))
