"""Composed user lines for the end-of-turn head: an opening x a core x an optional tail.

    lines = composed_lines(rng, per_core=3)   # [(text, provenance "composed:<core>")]

The cores are what is asked for or stated; the openings are the many ways people start a request
or a wish ("could you", "i want to know", "do you know"); the tails are optional additions
("please", "for me", "{day}"), so the same core ends on different words. Every core fits every
opening of its kind. The validation split follows the core (distill's `is_held_out`).
"""

from __future__ import annotations

import numpy as np

from distill.prompts import fill

# kind -> openings; a core of that kind follows any of them ("" = the bare imperative / question)
OPENINGS: dict[str, tuple[str, ...]] = {
    "do": ("", "please", "could you", "would you", "will you", "can you please", "i want you to",
           "i'd like you to", "hey, could you", "go ahead and", "i need you to", "would you kindly"),
    "know": ("i want to know", "i'm wondering", "i was wondering", "do you know", "i need to know",
             "i'm curious", "any idea", "i'd love to know", "could you find out", "i have no idea",
             "help me figure out", "i forgot"),
    "want": ("i want", "i need", "i'd love", "i'm looking for", "we need", "i could use", "get me",
             "i'm in the mood for", "find me", "i'd like"),
}
CORES: dict[str, tuple[str, ...]] = {
    "do": (
        "tell me a story", "sing me a song", "read me a poem", "give me a fun fact", "tell me a riddle",
        "play some jazz", "recommend a good movie", "suggest a recipe", "explain {topic}", "describe {city}",
        "turn off the radio", "check my calendar", "order a pizza", "call a taxi", "close the blinds",
        "make it shorter", "say it again", "speak a little slower", "spell {word}", "count to {small}",
        "find a dentist nearby", "book a table", "set a reminder", "start the dishwasher",
        "tell me about {famous}", "give me directions to the airport", "look up {topic}",
        "teach me a new word", "help me with {activity}", "pick a number", "flip a coin", "roll a die",
        "tell me a bedtime story about {animal}", "write a haiku about {topic}", "summarize the news",
        "translate this into {language}", "cheer me up", "help me fall asleep", "quiz me on {topic}",
    ),
    "know": (
        "what {animal} eat", "how {topic} works", "who invented the telephone", "when the bank closes",
        "how far {city} is from {city2}", "what the weather will be {day}", "where my keys are",
        "what time the game starts", "how old {famous} was", "why {animal} sleep so much",
        "how to say goodbye in {language}", "if it will rain {day}", "what {word} means",
        "how long it takes to bake {food}", "what the score was", "who won the game last night",
        "how many people live in {country}", "which train goes to {city}", "what to cook tonight",
        "how to fix a flat tire", "when {occasion} starts", "whether {food} is healthy",
    ),
    "want": (
        "a cup of coffee", "some help with {activity}", "a good book about {topic}", "a new phone",
        "a recipe for {food}", "a quiet place to work", "a break", "some music", "a taxi",
        "a vacation in {country}", "a gift for {person}", "a hotel in {city}", "more information",
        "a better job", "some advice", "a new {instrument}", "something to eat", "a nap",
        "tickets to the concert", "a cheap flight to {city}", "a second opinion", "a hug",
    ),
}
TAILS: dict[str, tuple[str, ...]] = {
    "do": ("please", "for me", "right now", "{day}", "if you can", "again", "thanks"),
    "know": ("{day}", "by any chance", "right now", "exactly"),
    "want": ("{day}", "right now", "please", "for {person}", "soon"),
}
QUESTION_END = {"know": ("do you know", "any idea", "could you find out")}  # openings that ask


def composed_lines(rng: np.random.Generator, per_core: int = 3, tail_p: float = 0.3) -> list[tuple[str, str]]:
    """`per_core` random openings (and sometimes a tail) for every core: [(text, 'composed:<core>')]."""
    out = []
    for kind, cores in CORES.items():
        for core in cores:
            for opening in rng.choice(OPENINGS[kind], size=min(per_core, len(OPENINGS[kind])), replace=False):
                text = f"{opening} {core}".strip()
                if rng.random() < tail_p:
                    text += " " + str(rng.choice(TAILS[kind]))
                end = "?" if opening in QUESTION_END.get(kind, ()) or opening.startswith(("could", "would", "will",
                                                                                           "can")) else "."
                out.append((fill(text, rng) + end, f"composed:{core}"))
    return out
