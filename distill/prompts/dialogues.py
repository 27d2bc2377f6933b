"""Scripted multi-turn dialogues: each is a list of user turns (slots allowed), spoken in order.

The agent's replies come from the LLM at generation time; each user turn may refer back to them.
"""

from __future__ import annotations

DIALOGUES: tuple[tuple[str, ...], ...] = (
    ("I'm planning a trip to {city}.", "What should I pack?", "And what food should I try there?"),
    ("I want to start {activity}.", "How often should I practice?", "Okay, what do I need to buy first?"),
    ("Can you help me cook dinner?", "I have {food} in mind.", "How long will it take?"),
    ("I'm feeling {feeling}.", "Yeah, it's been a long week.", "Thanks, that helps a little."),
    ("Tell me about {topic}.", "Why does that happen?", "Can you give me an everyday example?"),
    ("What's a good pet for a small apartment?", "What about {animal}?", "How much care do they need?"),
    ("I need a gift for {person}.", "They like {activity}.", "Something under fifty dollars."),
    ("Let's practice {language}.", "How do I say thank you?", "And good night?"),
    ("What is {n} times {m}?", "Now add {small} to that.", "And divide it by two."),
    ("My name is {pname}.", "What's my name?", "Nice. Can you spell it?"),
    ("I can't sleep.", "I already tried counting sheep.", "Maybe a story then?"),
    ("How do I get better at {sport}?", "I only have an hour a week.", "Okay, I'll try that."),
    ("I have {occasion} on {day}.", "I'm a bit nervous about it.", "What should I wear?"),
    ("Do you know anything about {famous}?", "When did they live?", "What else did they do?"),
    ("Set a timer for {minutes} minutes.", "Actually, make it {small} minutes.", "Thanks."),
    ("I want to learn the {instrument}.", "Is it hard for adults?", "How long until I can play a song?"),
)
