"""Seeded short-answer questions over tiny generated stories (no arithmetic), and plain text.

The control task for toy-math: answering needs reading and copying from context, not
computing, so sparsifying the FFN should hurt it far less than the arithmetic chains.

    question: "Tom lives in Rome. Ann's ball is red. Ann lives in Oslo. Tom's kite is blue.
               What colour is Ann's ball?"
    answer:   "Ann's ball is red.\n#### red"

Every person owns a different object, so "ball is" appears once in the story and the answer is
the word that followed it there: a lookup by context, the kind of step attention does and the
FFN barely takes part in. (Measured: questions keyed by a name several words away from the
answer stayed at chance level for a CPU-budget model; this lookup it learns.) The worked answer
states the fact as a sentence, then gives the short answer after `####`.
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


@dataclass(frozen=True)
class Character:
    name: str
    colour: str
    obj: str
    city: str

    def owns(self) -> str:
        return f"{self.name}'s {self.obj} is {self.colour}."

    def lives(self) -> str:
        return f"{self.name} lives in {self.city}."

    def facts(self) -> list[str]:
        return [self.owns(), self.lives()]


def draw_characters(rng: random.Random) -> list[Character]:
    """Distinct names, colours, objects and cities, so every question has one answer."""
    k = PEOPLE_PER_STORY
    return [
        Character(*fields)
        for fields in zip(rng.sample(NAMES, k), rng.sample(COLOURS, k), rng.sample(OBJECTS, k), rng.sample(CITIES, k))
    ]


def make_question(rng: random.Random) -> dict:
    people = draw_characters(rng)
    facts = [fact for person in people for fact in person.facts()]
    rng.shuffle(facts)
    who = rng.choice(people)
    question = f"What colour is {who.name}'s {who.obj}?"
    return {"question": " ".join(facts) + " " + question, "answer": f"{who.owns()}\n#### {who.colour}", "final_answer": who.colour}


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
    facts = [fact for person in people for fact in person.facts()]
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
