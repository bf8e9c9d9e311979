"""Seeded short-answer questions over tiny generated stories (no arithmetic), and plain text.

The control task for toy-math: answering needs reading and copying from context, not
computing, so sparsifying the FFN should hurt it far less than the arithmetic chains.

    question: "Tom has a blue kite and lives in Rome. Ann has a red ball and lives in Oslo.
               What colour is Ann's ball?"
    answer:   "Ann's ball is red.\n#### red"

Each person has one sentence (the name is the key to look up); the worked answer states the
looked-up fact as a sentence, then gives the short answer after `####`.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from ..errors import CapreseError
from .toy_math import PEOPLE

NAMES = tuple(person[0] for person in PEOPLE)
COLOURS = ("red", "blue", "green", "yellow", "black", "white", "pink", "brown", "grey", "orange")
OBJECTS = ("ball", "kite", "cup", "hat", "bike", "box", "bag", "car", "lamp", "coat", "book", "drum")
CITIES = ("Rome", "Oslo", "Paris", "Lima", "Cairo", "Tokyo", "Delhi", "Berlin", "Madrid", "Dublin")
PLACES = ("park", "garden", "market", "school", "library", "beach", "river", "forest")
ACTIVITIES = ("read", "sing", "swim", "paint", "run", "dance", "cook", "draw")
DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
PEOPLE_PER_STORY = 3
QUESTION_KINDS = ("colour", "object", "city")


@dataclass(frozen=True)
class Character:
    name: str
    colour: str
    obj: str
    city: str

    def fact(self) -> str:
        return f"{self.name} has a {self.colour} {self.obj} and lives in {self.city}."


def draw_characters(rng: random.Random) -> list[Character]:
    """Distinct names, colours, objects and cities, so every question has one answer."""
    k = PEOPLE_PER_STORY
    return [
        Character(*fields)
        for fields in zip(rng.sample(NAMES, k), rng.sample(COLOURS, k), rng.sample(OBJECTS, k), rng.sample(CITIES, k))
    ]


def ask(kind: str, who: Character) -> tuple[str, str, str]:
    """(question, answer sentence, short answer) for one question kind."""
    if kind == "colour":
        return f"What colour is {who.name}'s {who.obj}?", f"{who.name}'s {who.obj} is {who.colour}.", who.colour
    if kind == "object":
        return f"What does {who.name} have?", f"{who.name} has a {who.obj}.", who.obj
    if kind == "city":
        return f"Where does {who.name} live?", f"{who.name} lives in {who.city}.", who.city
    raise ValueError(f"unknown question kind {kind!r}")


def make_question(rng: random.Random) -> dict:
    people = draw_characters(rng)
    facts = [c.fact() for c in people]
    question, sentence, short = ask(rng.choice(QUESTION_KINDS), rng.choice(people))
    return {"question": " ".join(facts) + " " + question, "answer": f"{sentence}\n#### {short}", "final_answer": short}


def narrative_sentence(rng: random.Random, people: list[Character]) -> str:
    who, other = rng.sample(people, 2)
    choice = rng.randrange(4)
    if choice == 0:
        return f"{who.name} likes to {rng.choice(ACTIVITIES)} in the {rng.choice(PLACES)}."
    if choice == 1:
        return f"On {rng.choice(DAYS)}, {who.name} went to the {rng.choice(PLACES)} with {other.name}."
    if choice == 2:
        return f"{who.name} showed the {who.colour} {who.obj} to {other.name}."
    return f"{other.name} visited {who.name} in {who.city}."


def make_text(rng: random.Random, sentences: int = 8) -> str:
    """A short plain story (for perplexity), mixing facts and narrative sentences."""
    people = draw_characters(rng)
    facts = [c.fact() for c in people]
    body = facts + [narrative_sentence(rng, people) for _ in range(max(0, sentences - len(facts)))]
    rng.shuffle(body)
    return " ".join(body)


def split_rng(kind: str, split: str, seed: int) -> random.Random:
    return random.Random(f"toy-language/{kind}/{split}/{seed}")


def check_count(n: int) -> None:
    if n < 0:
        raise CapreseError(f"number of examples {n!r} must be >= 0")


def generate_rows(n: int, split: str = "test", seed: int = 0) -> list[dict]:
    """GSM8K-style rows (question, answer with `#### short`, final_answer)."""
    check_count(n)
    rng = split_rng("qa", split, seed)
    return [{"id": f"toy-language-{i}", **make_question(rng)} for i in range(n)]


def generate_texts(n: int, split: str = "test", seed: int = 0) -> list[dict]:
    """Plain-text rows {"id", "text"} for perplexity."""
    check_count(n)
    rng = split_rng("text", split, seed)
    return [{"id": f"toy-text-{i}", "text": make_text(rng)} for i in range(n)]
