"""A small training corpus that glassformer writes itself: village stories from a hand-made grammar.

`glassformer train lm` without `--data` trains on `bundled_corpus()`, so the first run needs
no download and no third-party text. Every word list, template and couplet below was written
for this project.

The text is built to be learnable by a small character-level model in about a minute:
a few hundred words recur in fixed frames (titles in capitals, "NAME: ..." dialogue, counting
from one upwards, seasons with their own weather), while random choices among names, places
and objects keep it from being memorised outright. A fixed seed gives the same text every time.
"""

from __future__ import annotations

import random

NAMES = """Anna Bram Cora Dov Elsa Finn Greta Hugo Ida Jonas Kira Lev Mira Nils Olga
    Pim Rosa Sami Tova Vera Wren Yara Zeno Ada Otto Lina Teo Nora Emil Juna""".split()
TOWN_HEADS = "Moss Ash Bright Cold Elder Fern Gull Hollow Iron Lark Mill Oak Pebble Reed Salt Thorn Willow Wind".split()
TOWN_TAILS = "ford by wick mere dale haven stead ton field combe".split()
PLACES = """river mill bridge market orchard harbour forest hill well garden
    bakery lighthouse meadow barn school tower pond cave library station""".split()
ROLES = """baker farmer sailor weaver potter teacher fisher miller painter carpenter
    shepherd gardener clockmaker beekeeper student tailor""".split()
TRAITS = "kind clever quiet brave curious patient cheerful shy busy careful stubborn gentle proud sleepy".split()
LIKES = """reading old maps|singing in the rain|baking plum bread|counting the stars|mending boats
    |feeding the ducks|drawing birds|climbing trees|telling long jokes|growing beans""".replace("\n    ", "").split("|")
THINGS = """lantern key map kettle fiddle ladder basket compass umbrella scarf drum kite bell
    boat book spoon mirror wagon clock whistle ring hat rope candle jar""".split()
LOOKS = """old small heavy shiny broken golden wooden painted tiny strange silver dusty round
    bright red blue green yellow little rusty""".split()
ANIMALS = "cat dog goat owl fox crow duck horse hen mouse rabbit heron donkey sheep frog".split()
DOINGS = "sleeping singing running watching hiding dancing waiting eating".split()
GOODS = "apples pears eggs stones candles shells buttons feathers loaves nails plums cups letters acorns onions".split()
HOLDERS = "basket box sack bucket pocket cart".split()
NUMBERS = "zero one two three four five six seven eight nine ten eleven twelve".split()
DAYS = "Monday Tuesday Wednesday Thursday Friday Saturday Sunday".split()
TIMES = "morning afternoon evening".split()
SEASONS = {
    "spring": ["the first buds opened on the trees", "warm rain fell on the fields", "the lambs ran in the meadow"],
    "summer": ["the sun was hot over the hills", "bees hummed in the clover", "the days were long and golden"],
    "autumn": ["red leaves blew along the lane", "the apples were ripe and heavy", "fog lay on the river at dawn"],
    "winter": ["snow covered every roof", "the pond was frozen hard", "the wind was cold and sharp"],
}
WEATHER_COMING = "rain|storm|snow|dark|fog|tide".split("|")
ENDINGS = [
    "and they laughed about it for the rest of the {season}",
    "and the {place} was quiet again",
    "and nobody in {town} ever forgot it",
    "and they went home to supper",
]

# Rhyming couplets written for this corpus.
COUPLETS = [
    ("The kettle hums, the fire is bright,", "we sit together through the night."),
    ("The river runs to meet the sea,", "the sparrow sings inside the tree."),
    ("When lanterns glow along the lane,", "the tired walkers come home again."),
    ("Count the apples, one by one,", "and leave a few to warm in the sun."),
    ("The mill wheel turns, the grain is ground,", "the bread is warm and soft and round."),
    ("A key that is lost is not yet gone,", "it waits for someone to step upon."),
    ("The snow is deep, the path is white,", "the owl keeps watch with yellow light."),
    ("The boat is small, the sea is wide,", "but two good friends sit side by side."),
    ("The clock is slow, the bell is late,", "the goat is leaning on the gate."),
    ("Rain on the roof and wind in the wall,", "a candle is the best friend of all."),
    ("The map was torn, the road was long,", "they crossed the bridge and sang a song."),
    ("The market opens with the sun,", "and closes when the selling is done."),
    ("Leaves of red and leaves of gold", "are dancing now the days grow cold."),
    ("Five small stones upon the shore,", "the tide came in, and there were four."),
    ("The weaver weaves, the potter turns,", "the candle in the window burns."),
    ("A friend will share the bread, the rain,", "the heavy load, the long wet lane."),
]


def _a(word: str) -> str:
    """'a kite', 'an owl': the article English puts before a word."""
    return ("an " if word[0] in "aeiou" else "a ") + word


def _counting(n: int) -> str:
    """'one, two, three' for n = 3; the model sees the number words in order many times."""
    return ", ".join(NUMBERS[1 : n + 1])


class _Story:
    """The cast and setting of one story, drawn once so every sentence in it agrees."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.hero, self.friend = rng.sample(NAMES, 2)
        self.town = rng.choice(TOWN_HEADS) + rng.choice(TOWN_TAILS)
        self.season = rng.choice(list(SEASONS))
        self.place, self.other_place = rng.sample(PLACES, 2)
        self.thing, self.look = rng.choice(THINGS), rng.choice(LOOKS)
        self.animal = rng.choice(ANIMALS)
        self.goods = rng.choice(GOODS)
        self.time = rng.choice(TIMES)

    def say(self, speaker: str, line: str) -> str:
        return f"{speaker.upper()}: {line}"

    def opening(self) -> list[str]:
        r = self.rng
        return [
            f"It was {self.season} in {self.town}, and {r.choice(SEASONS[self.season])}.",
            f"{self.hero} was {_a(r.choice(TRAITS))} {r.choice(ROLES)} who liked {r.choice(LIKES)}.",
            f"{self.friend} lived near the {self.place}, and the two of them were good friends.",
        ]

    def lost(self) -> list[str]:
        h, f, r = self.hero, self.friend, self.rng
        thing, place, animal = self.thing, self.place, self.animal
        return [
            f"One {r.choice(DAYS)} {self.time}, {h} lost {_a(self.look)} {thing} somewhere near the {place}.",
            self.say(h, f"Good {self.time}, {f}. Have you seen my {thing}? It is {self.look} and I cannot find it."),
            self.say(f, f"I saw {_a(animal)} {r.choice(DOINGS)} by the {place}. Maybe the {animal} has it."),
            self.say(h, f"Then let us go to the {place} before the {r.choice(WEATHER_COMING)} comes."),
            f"They looked under the {r.choice(HOLDERS)}, behind the {self.other_place}, and at last by the {place}.",
            f"The {animal} was {r.choice(['sleeping', 'sitting', 'standing'])} on the {thing}, "
            "and it did not want to move.",
            self.say(f, f"Here is your {thing}, {h}. The {animal} was keeping it warm."),
            self.say(h, f"Thank you, {f}. You are a true friend."),
        ]

    def market(self) -> list[str]:
        h, f, r = self.hero, self.friend, self.rng
        want, price = r.randint(2, 9), r.randint(1, 5)
        have = r.randint(2, 12)
        lines = [
            f"One {r.choice(DAYS)} {self.time}, {h} went to the market with {NUMBERS[have]} coins.",
            self.say(f, f"Good {self.time}, {h}. What will you buy today?"),
            self.say(h, f"I need {NUMBERS[want]} {self.goods} for my {r.choice(HOLDERS)}. How much are they?"),
            self.say(f, f"They are {NUMBERS[price]} {'coin' if price == 1 else 'coins'} for all of them."),
            f"{h} counted the coins: {_counting(have)}.",
        ]
        if have >= price:
            left = have - price
            lines += [
                self.say(h, f"Here are {NUMBERS[price]}, and I still have {NUMBERS[left]} left."),
                f"{f} counted the {self.goods} into the basket: {_counting(want)}.",
            ]
        else:
            lines += [
                self.say(h, f"I have only {NUMBERS[have]}. Can I bring the rest on {r.choice(DAYS)}?"),
                self.say(f, f"Of course. Take the {self.goods} now, and pay me when you can."),
            ]
        return lines

    def found(self) -> list[str]:
        h, f, r = self.hero, self.friend, self.rng
        owner = r.choice(ROLES)
        return [
            f"One {r.choice(DAYS)} {self.time}, {h} found {_a(self.look)} {self.thing} in the {self.other_place}.",
            self.say(h, f"{f}, look what I found! Whose {self.thing} is this?"),
            self.say(f, f"I do not know. It is very {self.look}. Let us ask at the {self.place}."),
            f"At the {self.place} they met an old {owner} who was feeding {_a(self.animal)}.",
            self.say(h, f"Excuse me. Is this your {self.thing}?"),
            self.say(
                "the " + owner,
                f"Yes! I lost it last {self.season}. "
                f"Please take {NUMBERS[r.randint(2, 6)]} {self.goods} to say thank you.",
            ),
        ]

    def journey(self) -> list[str]:
        h, f, r = self.hero, self.friend, self.rng
        steps = r.sample(PLACES, 3)
        return [
            f"One {r.choice(DAYS)} {self.time}, {h} and {f} set out for the {steps[2]} with {_a(self.thing)}.",
            f"First they walked past the {steps[0]}, where {_a(self.animal)} was {r.choice(DOINGS)}.",
            f"Then they went through the {steps[1]}. All around them, {r.choice(SEASONS[self.season])}.",
            self.say(f, f"How far is it to the {steps[2]}?"),
            self.say(h, f"{NUMBERS[r.randint(2, 9)].capitalize()} more miles. Can you count the trees as we go?"),
            self.say(f, f"{_counting(r.randint(3, 10)).capitalize()}. That is enough trees for one {self.time}!"),
            f"At last they reached the {steps[2]}, and they rested there until the {r.choice(TIMES)}.",
        ]

    def closing(self) -> list[str]:
        r = self.rng
        ending = r.choice(ENDINGS).format(season=self.season, town=self.town, place=self.place)
        lines = [f"So the {self.time} ended, {ending}."]
        if r.random() < 0.5:
            first, second = r.choice(COUPLETS)
            lines += [f"That night {self.friend} sang a little song:", first, second]
        return lines

    def title(self) -> str:
        r = self.rng
        return r.choice(
            [
                f"THE {self.thing.upper()} OF {self.town.upper()}",
                f"{self.hero.upper()} AND THE {self.animal.upper()}",
                f"{_a(self.season).upper()} {self.time.upper()} IN {self.town.upper()}",
            ]
        )


def _story(rng: random.Random) -> str:
    story = _Story(rng)
    plot = rng.choice([story.lost, story.market, story.found, story.journey])
    lines = [story.title(), ""] + story.opening() + plot() + story.closing()
    return "\n".join(lines) + "\n\n"


def bundled_corpus(n_chars: int = 300_000, seed: int = 0) -> str:
    """Exactly n_chars characters of generated stories (ASCII, newline-separated); the same for the same seed."""
    if n_chars < 0:
        raise ValueError(f"n_chars must be >= 0, got {n_chars}")
    rng = random.Random(seed)
    stories: list[str] = []
    size = 0
    while size < n_chars:
        stories.append(_story(rng))
        size += len(stories[-1])
    return "".join(stories)[:n_chars]
