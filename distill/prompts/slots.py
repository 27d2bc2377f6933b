"""Slot fillers for the prompt templates (`{name}` in a template takes a value from SLOTS["name"]).

Written for Parley: everyday spoken English, short values that TTS voices read without trouble.
"""

from __future__ import annotations

SLOTS: dict[str, tuple[str, ...]] = {
    "name": (
        "Anna", "Ben", "Carlos", "Deepa", "Elena", "Farid", "Grace", "Hiro", "Ines", "Jamal", "Kate", "Liam",
        "Maria", "Noah", "Olga", "Priya", "Quinn", "Rosa", "Sam", "Tomas", "Uma", "Victor", "Wei", "Yusuf",
        "Zoe", "Aisha", "Bruno", "Chloe", "Dmitri", "Emma", "Fatima", "George", "Hannah", "Ivan", "Julia",
        "Kenji", "Lucy", "Mohammed", "Nina", "Oscar",
    ),
    "city": (
        "Paris", "Tokyo", "New York", "London", "Berlin", "Cairo", "Sydney", "Toronto", "Mumbai", "Rome",
        "Madrid", "Chicago", "Seoul", "Lisbon", "Nairobi", "Mexico City", "Dublin", "Vienna", "Boston",
        "Bangkok", "Prague", "Denver", "Oslo", "Lima", "Istanbul", "Seattle", "Athens", "Amsterdam",
    ),
    "country": (
        "France", "Japan", "Brazil", "Canada", "Kenya", "India", "Italy", "Mexico", "Norway", "Egypt",
        "Australia", "Spain", "Germany", "Peru", "Vietnam", "Ireland", "Greece", "Chile", "Turkey", "Iceland",
    ),
    "food": (
        "pasta", "pancakes", "curry", "sushi", "tacos", "lentil soup", "banana bread", "fried rice", "pizza",
        "a salad", "chili", "scrambled eggs", "apple pie", "hummus", "dumplings", "guacamole", "risotto",
        "chocolate cookies", "a smoothie", "grilled cheese",
    ),
    "animal": (
        "cats", "dogs", "octopuses", "penguins", "elephants", "bees", "owls", "dolphins", "horses", "frogs",
        "wolves", "parrots", "sharks", "bats", "turtles", "ants", "giraffes", "crows",
    ),
    "topic": (
        "black holes", "the moon", "rainbows", "volcanoes", "photosynthesis", "the internet", "gravity",
        "the ocean tides", "earthquakes", "vaccines", "electricity", "the weather", "dinosaurs", "music",
        "the stock market", "recycling", "sleep", "coffee", "batteries", "solar power", "language learning",
        "chess", "the pyramids", "glaciers", "clouds", "magnets", "bread yeast", "time zones",
    ),
    "activity": (
        "running", "cooking", "painting", "learning the guitar", "meditating", "gardening", "swimming",
        "reading more", "studying", "cycling", "writing a novel", "baking", "hiking", "yoga", "knitting",
        "learning to code", "public speaking", "saving money", "drawing", "dancing",
    ),
    "thing": (
        "my phone", "the car keys", "a birthday present", "my laptop", "an umbrella", "a new jacket",
        "the train tickets", "a coffee maker", "my passport", "a bicycle", "some headphones", "a tent",
        "a houseplant", "my wallet", "a good book",
    ),
    "day": ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday", "tomorrow", "tonight",
            "this weekend", "next week"),
    "time": ("seven in the morning", "noon", "half past three", "six thirty", "nine o'clock", "a quarter to five",
             "eight p m", "ten fifteen", "midnight", "two o'clock"),
    "color": ("red", "blue", "green", "yellow", "purple", "orange", "black", "white", "pink", "gray"),
    "feeling": ("tired", "happy", "stressed", "bored", "nervous", "excited", "a bit sad", "hungry", "sleepy",
                "great", "confused", "anxious"),
    "person": ("my mom", "my brother", "my boss", "my friend", "my neighbor", "my sister", "my dad", "my teacher",
               "my partner", "my grandmother", "my roommate", "my kids"),
    "occasion": ("a birthday", "a wedding", "a job interview", "a first date", "a dinner party", "a picnic",
                 "a road trip", "a camping trip", "a graduation", "a holiday"),
    "language": ("Spanish", "French", "German", "Japanese", "Italian", "Chinese", "Portuguese", "Korean",
                 "Arabic", "Hindi"),
    "word": ("serendipity", "ephemeral", "algorithm", "nostalgia", "gravity", "metaphor", "democracy", "entropy",
             "empathy", "irony", "photosynthesis", "paradox"),
    "sport": ("soccer", "tennis", "basketball", "baseball", "golf", "cricket", "hockey", "volleyball", "rugby"),
    "instrument": ("piano", "guitar", "violin", "drums", "flute", "trumpet", "cello", "ukulele"),
    "job": ("a nurse", "a pilot", "an engineer", "a teacher", "a chef", "a doctor", "a plumber", "a lawyer",
            "a farmer", "a musician"),
}


def number_slots(rng) -> dict[str, str]:
    """Fresh number-ish slot values (drawn per item, so numbers are not a fixed list)."""
    a, b = int(rng.integers(2, 100)), int(rng.integers(2, 13))
    return {
        "n": str(a),
        "m": str(b),
        "small": str(int(rng.integers(2, 10))),
        "big": f"{int(rng.integers(100, 10000)):,}",
        "year": str(int(rng.integers(1850, 2030))),
        "minutes": str(int(rng.choice([1, 2, 3, 5, 10, 12, 15, 20, 25, 30, 45, 90]))),
        "price": f"{int(rng.integers(1, 200))} dollars and {int(rng.integers(1, 99))} cents",
        "percent": f"{int(rng.integers(1, 100))} percent",
        "phone": " ".join(str(int(d)) for d in rng.integers(0, 10, 7)),
        "temp": str(int(rng.integers(-10, 40))),
        "decimal": f"{int(rng.integers(0, 100))} point {int(rng.integers(1, 10))}",
        "room": str(int(rng.integers(100, 999))),
    }
