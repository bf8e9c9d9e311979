"""Seeded short-answer questions over tiny generated stories (no arithmetic), and plain text.

The control task for toy-math: answering needs reading the story, not computing, so
sparsifying the FFN should hurt it far less than the arithmetic chains.

    question: "On Friday, Tom went to the beach with Sam. Ann's ball is red. Tom lives in Rome.
               Sam likes to swim. Where does Tom live?"
    answer:   "Tom lives in Rome.\n#### Rome"

A story states one fact of each kind (an object's colour, a home city, a pastime, the day of an
outing), each about some person, and the question asks for one kind. The answer is the one word
of that kind in the story: a lookup by the kind of word, the step attention does and the FFN
barely takes part in. The worked answer restates the fact, then gives the short answer after
`####`. (Measured: the first format, three colours per story keyed by the object two words
before them, stayed at chance level, 30%, for a model trained ~21 min on 2 CPU cores.)
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
    """Distinct names, colours, objects and cities (for the plain stories)."""
    k = PEOPLE_PER_STORY
    return [
        Character(*fields)
        for fields in zip(rng.sample(NAMES, k), rng.sample(COLOURS, k), rng.sample(OBJECTS, k), rng.sample(CITIES, k))
    ]


def story_facts(rng: random.Random) -> dict[str, tuple[str, str, str, str]]:
    """One fact per kind: kind -> (story sentence, question, short answer, restated answer). Each
    kind's answer word is the only word of that kind in the story, so a question has one answer."""
    ann, tom, sam = rng.sample(NAMES, 3)
    colour, obj, city = rng.choice(COLOURS), rng.choice(OBJECTS), rng.choice(CITIES)
    activity, day, place = rng.choice(ACTIVITIES), rng.choice(DAYS), rng.choice(PLACES)
    who = dict(zip(("colour", "city", "activity", "day"), rng.choices((ann, tom, sam), k=4)))
    return {
        "colour": (
            owns := f"{who['colour']}'s {obj} is {colour}.",
            f"What colour is {who['colour']}'s {obj}?",
            colour,
            owns,
        ),
        "city": (lives := f"{who['city']} lives in {city}.", f"Where does {who['city']} live?", city, lives),
        "activity": (
            likes := f"{who['activity']} likes to {activity}.",
            f"What does {who['activity']} like to do?",
            activity,
            likes,
        ),
        "day": (
            f"On {day}, {who['day']} went to the {place} with {sam if who['day'] != sam else ann}.",
            f"On which day did {who['day']} go to the {place}?",
            day,
            f"{who['day']} went to the {place} on {day}.",
        ),
    }


QUESTION_KINDS = ("colour", "city", "activity", "day")


def make_question(rng: random.Random) -> dict:
    facts = story_facts(rng)
    sentences = [fact[0] for fact in facts.values()]
    rng.shuffle(sentences)
    kind = rng.choice(QUESTION_KINDS)
    _, question, answer, restated = facts[kind]
    return {
        "question": " ".join(sentences) + " " + question,
        "answer": f"{restated}\n#### {answer}",
        "final_answer": answer,
        "kind": kind,
    }


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
