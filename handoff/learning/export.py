"""Turning reviewed agent labels into Rasa training data: a pure function, no I/O.

:func:`build_export` takes approved candidates (NLU examples, new responses, stories) and what
the training data already holds, and returns Rasa 3.x training-data documents plus the
domain additions. Before anything is written, personal data is redacted and Rasa's
entity-markup characters are neutralised; examples are merged without duplicates (by
normalised text) and conflicts (one text, two intents) are refused, never guessed.
Serialising the result to YAML files is the caller's job.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "IN_HELDOUT",
    "ApprovedExample",
    "ApprovedResponse",
    "ApprovedStory",
    "ExistingData",
    "Export",
    "HeldOut",
    "Skipped",
    "build_export",
    "build_heldout",
    "clean_example",
    "escape_markup",
    "merge_learned",
    "merge_nlu",
    "normalize",
    "redact",
    "response_name",
]

RASA_DATA_VERSION = "3.1"
IN_HELDOUT = "in the held-out test set (training on it would inflate the scores)"
MIN_EXAMPLES_PER_NEW_INTENT = 2
"""Rasa needs at least two examples to train an intent; a new intent with fewer waits."""


@dataclass(frozen=True)
class ApprovedExample:
    candidate_id: int
    text: str
    intent: str


@dataclass(frozen=True)
class ApprovedResponse:
    candidate_id: int
    intent: str
    text: str


@dataclass(frozen=True)
class ApprovedStory:
    candidate_id: int
    name: str
    turns: Sequence[tuple[str, str]]
    """(intent, response name) pairs, in order."""


@dataclass(frozen=True)
class ExistingData:
    """What the training data and domain hold already."""

    examples: Mapping[str, str] = field(default_factory=dict)
    """normalised example text -> intent"""
    intents: frozenset[str] = frozenset()
    responses: frozenset[str] = frozenset()
    heldout: Mapping[str, str] = field(default_factory=dict)
    """normalised example text -> intent, of the held-out test set (never trained on)"""


@dataclass(frozen=True)
class Skipped:
    candidate_id: int
    reason: str


@dataclass(frozen=True)
class Export:
    nlu: dict[str, Any]
    """A Rasa NLU document: ``{"version", "nlu": [{"intent", "examples"}]}``."""
    stories: dict[str, Any]
    """A Rasa stories document: ``{"version", "stories": [...]}``."""
    rules: dict[str, Any]
    """A Rasa rules document: one rule per new response (``intent -> utter_<intent>``)."""
    domain: dict[str, Any]
    """Domain additions: ``{"version", "intents": [...], "responses": {...}}``."""
    written: list[int]
    """Candidate ids whose content is in the export."""
    skipped: list[Skipped]
    held: list[Skipped] = field(default_factory=list)
    """Candidates left for a later export (a new intent with too few examples yet)."""


@dataclass(frozen=True)
class HeldOut:
    """Examples reviewers held out, as NLU blocks for the held-out test set."""

    nlu: list[dict[str, Any]]
    """``[{"intent", "examples"}]`` blocks, to merge with :func:`merge_nlu`."""
    written: list[int]
    skipped: list[Skipped]
    held: list[Skipped]
    """Held-out examples of an intent the training data does not have yet: they wait."""


# Personal data ------------------------------------------------------------------------------

DEFAULT_REDACTIONS: tuple[tuple[str, str], ...] = (
    ("<email>", r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+"),
    ("<iban>", r"\b[A-Z]{2}\d{2}(?:[ ]?[A-Z0-9]{4}){2,7}(?:[ ]?[A-Z0-9]{1,3})?\b"),
    ("<card_number>", r"\b(?:\d[ -]?){12,18}\d\b"),
    ("<phone>", r"(?<![\w+])\+?\d[\d ()./-]{6,}\d\b"),
)
"""(placeholder, pattern) pairs applied in order: IBANs and card numbers before phone
numbers, which would otherwise swallow them."""


def redact(text: str, extra_patterns: Iterable[tuple[str, str]] = ()) -> str:
    """Replace emails, IBANs, payment card numbers, phone numbers and ``extra_patterns``
    (placeholder, regex) with placeholders such as ``<email>``."""
    for placeholder, pattern in (*DEFAULT_REDACTIONS, *extra_patterns):
        text = re.sub(pattern, placeholder, text)
    return text


# Text ---------------------------------------------------------------------------------------

_SPACES = re.compile(r"\s+")
_EDGE_PUNCTUATION = " \t.,!?;:\"'"


def normalize(text: str) -> str:
    """The form duplicates are compared in: case-folded, spaces collapsed, edge punctuation
    stripped."""
    return _SPACES.sub(" ", text).strip(_EDGE_PUNCTUATION).casefold()


def escape_markup(text: str) -> str:
    """Make user text safe inside a Rasa example: one line, and no ``[...]`` / ``{...}`` that
    Rasa would read as entity annotations (Rasa has no escape syntax, so brackets and braces
    become parentheses)."""
    text = _SPACES.sub(" ", text).strip()
    return text.translate(str.maketrans("[]{}", "()()"))


def clean_example(text: str, extra_patterns: Iterable[tuple[str, str]] = ()) -> str:
    return escape_markup(redact(text, extra_patterns))


# The export ---------------------------------------------------------------------------------


def response_name(intent: str) -> str:
    return f"utter_{intent}"


def build_export(
    examples: Sequence[ApprovedExample],
    responses: Sequence[ApprovedResponse],
    stories: Sequence[ApprovedStory],
    existing: ExistingData,
    extra_redactions: Sequence[tuple[str, str]] = (),
) -> Export:
    """Build the training data for approved candidates (see the module docstring)."""
    written: list[int] = []
    skipped: list[Skipped] = []
    seen: dict[str, str] = dict(existing.examples)
    by_intent: dict[str, list[str]] = {}
    new_intents: list[str] = []

    for example in sorted(examples, key=lambda e: e.candidate_id):
        text = clean_example(example.text, extra_redactions)
        key = normalize(text)
        if not key:
            skipped.append(Skipped(example.candidate_id, "empty after redaction"))
            continue
        known = seen.get(key)
        if known == example.intent:
            skipped.append(Skipped(example.candidate_id, "duplicate"))
            continue
        if key in existing.heldout:
            skipped.append(Skipped(example.candidate_id, IN_HELDOUT))
            continue
        if known is not None:
            skipped.append(
                Skipped(example.candidate_id, f"conflict: already an example of {known}")
            )
            continue
        seen[key] = example.intent
        by_intent.setdefault(example.intent, []).append(text)
        if example.intent not in existing.intents and example.intent not in new_intents:
            new_intents.append(example.intent)
        written.append(example.candidate_id)

    held: list[Skipped] = []
    existing_counts: dict[str, int] = {}
    for intent in existing.examples.values():
        existing_counts[intent] = existing_counts.get(intent, 0) + 1
    thin = {
        intent
        for intent in new_intents
        if existing_counts.get(intent, 0) + len(by_intent.get(intent, []))
        < MIN_EXAMPLES_PER_NEW_INTENT
    }
    if thin:
        reason = f"a new intent needs at least {MIN_EXAMPLES_PER_NEW_INTENT} examples"
        for example in examples:
            if example.intent in thin and example.candidate_id in written:
                written.remove(example.candidate_id)
                held.append(Skipped(example.candidate_id, reason))
        for intent in thin:
            by_intent.pop(intent, None)
        new_intents = [intent for intent in new_intents if intent not in thin]

    new_responses: dict[str, list[dict[str, str]]] = {}
    for response in sorted(responses, key=lambda r: r.candidate_id):
        if response.intent in thin or (
            response.intent not in existing.intents and response.intent not in new_intents
        ):
            held.append(Skipped(response.candidate_id, f"no examples of {response.intent} yet"))
            continue
        name = response_name(response.intent)
        if name in existing.responses or name in new_responses:
            skipped.append(Skipped(response.candidate_id, f"{name} exists already"))
            continue
        text = redact(response.text, extra_redactions).strip()
        if not text:
            skipped.append(Skipped(response.candidate_id, "empty after redaction"))
            continue
        new_responses[name] = [{"text": text}]
        if response.intent not in existing.intents and response.intent not in new_intents:
            new_intents.append(response.intent)
        written.append(response.candidate_id)

    known_intents = existing.intents | set(new_intents)
    known_responses = existing.responses | set(new_responses)
    story_documents = []
    for story in sorted(stories, key=lambda s: s.candidate_id):
        if any(intent in thin for intent, _ in story.turns):
            held.append(Skipped(story.candidate_id, "waits for a new intent's examples"))
            continue
        problems = [
            f"unknown intent {intent}" for intent, _ in story.turns if intent not in known_intents
        ] + [f"unknown response {name}" for _, name in story.turns if name not in known_responses]
        if not story.turns or problems:
            skipped.append(Skipped(story.candidate_id, "; ".join(problems) or "no turns"))
            continue
        steps: list[dict[str, str]] = []
        for intent, name in story.turns:
            steps += [{"intent": intent}, {"action": name}]
        story_documents.append({"story": story.name, "steps": steps})
        written.append(story.candidate_id)

    nlu = {"version": RASA_DATA_VERSION, "nlu": _nlu_blocks(by_intent)}
    domain: dict[str, Any] = {"version": RASA_DATA_VERSION}
    if new_intents:
        domain["intents"] = sorted(new_intents)
    if new_responses:
        domain["responses"] = dict(sorted(new_responses.items()))
    rules = [
        {
            "rule": f"answer {name.removeprefix('utter_')}",
            "steps": [{"intent": name.removeprefix("utter_")}, {"action": name}],
        }
        for name in sorted(new_responses)
    ]
    return Export(
        nlu=nlu,
        stories={"version": RASA_DATA_VERSION, "stories": story_documents},
        rules={"version": RASA_DATA_VERSION, "rules": rules},
        domain=domain,
        written=sorted(written),
        skipped=skipped,
        held=held,
    )


def build_heldout(
    examples: Sequence[ApprovedExample],
    existing: ExistingData,
    trainable: Iterable[str] = (),
    extra_redactions: Sequence[tuple[str, str]] = (),
) -> HeldOut:
    """The held-out additions for examples reviewers held out: cleaned as training examples
    are, never one already in the training data or the held-out set, and only for intents
    the model can learn (``existing.intents`` plus ``trainable``, e.g. this export's new
    ones); the others wait."""
    known = existing.intents | frozenset(trainable)
    written: list[int] = []
    skipped: list[Skipped] = []
    held: list[Skipped] = []
    seen = dict(existing.heldout)
    by_intent: dict[str, list[str]] = {}
    for example in sorted(examples, key=lambda e: e.candidate_id):
        text = clean_example(example.text, extra_redactions)
        key = normalize(text)
        if not key:
            skipped.append(Skipped(example.candidate_id, "empty after redaction"))
        elif key in existing.examples:
            skipped.append(Skipped(example.candidate_id, "already a training example"))
        elif seen.get(key) == example.intent:
            skipped.append(Skipped(example.candidate_id, "duplicate"))
        elif key in seen:
            reason = f"conflict: already held out as {seen[key]}"
            skipped.append(Skipped(example.candidate_id, reason))
        elif example.intent not in known:
            held.append(
                Skipped(example.candidate_id, f"no training examples of {example.intent} yet")
            )
        else:
            seen[key] = example.intent
            by_intent.setdefault(example.intent, []).append(text)
            written.append(example.candidate_id)
    return HeldOut(_nlu_blocks(by_intent), written, skipped, held)


def _nlu_blocks(by_intent: Mapping[str, Sequence[str]]) -> list[dict[str, Any]]:
    """Rasa NLU blocks, one per intent (sorted), examples as a ``- text`` list."""
    return [
        {"intent": intent, "examples": "".join(f"- {text}\n" for text in texts)}
        for intent, texts in sorted(by_intent.items())
    ]


# Merging into the learned files ---------------------------------------------------------------


def merge_nlu(document: Mapping[str, Any], blocks: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """An NLU document with ``blocks``' examples appended under their intents (new intents as
    new blocks, sorted by intent); other keys of ``document`` (version, synonyms, ...) and
    blocks without an intent are kept."""
    nlu_blocks = [dict(block) for block in document.get("nlu", [])]
    by_intent = {block["intent"]: block for block in nlu_blocks if "intent" in block}
    for block in blocks:
        if block["intent"] in by_intent:
            target = by_intent[block["intent"]]
            target["examples"] = target["examples"] + block["examples"]
        else:
            new_block = dict(block)
            nlu_blocks.append(new_block)
            by_intent[block["intent"]] = new_block
    return {
        **document,
        "version": document.get("version", RASA_DATA_VERSION),
        "nlu": sorted(nlu_blocks, key=lambda b: str(b.get("intent", ""))),
    }


def merge_learned(
    learned: Mapping[str, dict[str, Any]], export: Export
) -> dict[str, dict[str, Any]]:
    """Merge an export into the current learned documents (``nlu``, ``stories``, ``rules``,
    ``domain``; missing ones count as empty) and return the new documents. Examples are
    appended under their intent; stories and rules with a name already present are kept as
    they are; domain intents and responses are unioned."""
    nlu_document = merge_nlu(learned.get("nlu", {}), export.nlu["nlu"])

    def merged(kind: str, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        current = list(learned.get(kind, {}).get(kind, []))
        key = "story" if kind == "stories" else "rule"
        names = {item.get(key) for item in current}
        return current + [item for item in items if item[key] not in names]

    domain = learned.get("domain", {})
    intents = sorted(set(domain.get("intents", [])) | set(export.domain.get("intents", [])))
    responses = {**domain.get("responses", {}), **export.domain.get("responses", {})}
    domain_document: dict[str, Any] = {"version": RASA_DATA_VERSION}
    if intents:
        domain_document["intents"] = intents
    if responses:
        domain_document["responses"] = dict(sorted(responses.items()))
    return {
        "nlu": nlu_document,
        "stories": {
            "version": RASA_DATA_VERSION,
            "stories": merged("stories", export.stories["stories"]),
        },
        "rules": {"version": RASA_DATA_VERSION, "rules": merged("rules", export.rules["rules"])},
        "domain": domain_document,
    }
