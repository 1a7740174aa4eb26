"""A deterministic synthetic copy of the original MySQL source (DATA_SPEC.md section 1).

The same ``seed`` and ``rows`` give identical tables. Randomness comes only from a
``random.Random(seed)`` and a Faker instance seeded with the same seed, never from the global
random state. Placeholders are written at the documented frequencies, scaled to ``rows``.
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from faker import Faker

from pinpipe.events import RAW_FIELDS, Table
from pinpipe.placeholders import (
    CATEGORIES,
    NO_DESCRIPTION,
    PLACEHOLDERS,
    STORY_DESCRIPTION,
    UNTITLED,
)
from pinpipe.source.tables import SourceTables

SPEC_ROWS = 11_154
"""Rows of the original source; the counts below are over this many rows."""

# How many of SPEC_ROWS posts carry each feature (DATA_SPEC.md section 1).
STORY_POSTS = 895  # media "multi-video(story page format)", description STORY_DESCRIPTION
BROKEN_POSTS = 88  # story posts with a placeholder in every text field (title and poster: 88)
VIDEO_POSTS = 335  # ~3%
UNKNOWN_MEDIA_POSTS = 6  # is_image_or_video null
NO_DESCRIPTION_POSTS = 182
UNTITLED_POSTS = 40
NO_TAGS_POSTS = 171  # the broken posts among them
IMAGE_SRC_ERROR_POSTS = 323  # the broken posts among them
IMAGE_SRC_NULL_POSTS = 7
NOT_DOWNLOADED_POSTS = 335  # ~3%, the broken posts among them

# The fields that are all placeholders at once in a broken story post.
BROKEN_FIELDS = ("title", "poster_name", "follower_count", "tag_list", "image_src")

IMAGE = "image"
VIDEO = "video"
STORY = "multi-video(story page format)"

REPEAT_PERSON = 0.3
"""Share of rows whose user is a person already seen (same name, age, date_joined, account)."""

POSTED_FROM, POSTED_UNTIL = datetime(2017, 1, 1), datetime(2022, 12, 31, 23, 59, 59)
JOINED_FROM, JOINED_UNTIL = datetime(2015, 1, 1), datetime(2017, 12, 31, 23, 59, 59)
SOUTHERN_SHARE = 0.75  # latitudes are mostly negative
MIN_AGE, MODE_AGE, MAX_AGE = 18, 26, 75

# Tags of each category: the vocabulary of tag lists and titles.
TAGS: dict[str, tuple[str, ...]] = {
    "christmas": (
        "Christmas Decorations",
        "Xmas Crafts",
        "Holiday Baking",
        "Christmas Tree",
        "Advent",
    ),
    "tattoos": ("Small Tattoos", "Sleeve Tattoo", "Minimalist Tattoo", "Fine Line", "Flash Art"),
    "quotes": ("Inspirational Quotes", "Life Quotes", "Motivation", "Love Quotes", "Wisdom"),
    "art": ("Watercolor", "Sketchbook", "Oil Painting", "Digital Art", "Abstract Art"),
    "education": ("Classroom Ideas", "Homeschool", "Study Tips", "Teaching Resources", "Math"),
    "home-decor": ("Living Room", "Boho Decor", "Kitchen Ideas", "Bedroom Inspo", "Plants"),
    "travel": ("Travel Tips", "Bucket List", "Road Trip", "Beach Holiday", "Backpacking"),
    "mens-fashion": ("Street Style", "Suits", "Casual Outfits", "Sneakers", "Grooming"),
    "vehicles": ("Classic Cars", "Motorcycles", "Camper Van", "Car Restoration", "JDM"),
    "diy-and-crafts": ("Paper Crafts", "Upcycling", "Knitting", "Resin Art", "Kids Crafts"),
    "finance": ("Budgeting", "Saving Money", "Investing", "Side Hustle", "Debt Free"),
    "event-planning": ("Wedding Ideas", "Party Decor", "Baby Shower", "Table Setting", "Birthday"),
    "beauty": ("Nail Art", "Makeup Tutorial", "Skincare", "Hairstyles", "Eyeliner"),
}

# Real-world text: non-Latin titles, emoji, and the characters scraped pages carry.
NON_LATIN_TEXT = (
    "Новогодний декор своими руками",
    "Идеи для маленьких татуировок",
    "Мотивирующие цитаты на каждый день",
    "クリスマスツリーの飾り付けアイデア",
    "かわいいネイルデザイン",
    "旅行の持ち物リスト",
    "手工折纸教程",
    "여행 사진 아이디어",
    "Μικρά τατουάζ για γυναίκες",
    "أفكار ديكور المنزل",
)
EMOJI = ("✨", "🎄", "❤️", "😍", "🔥", "🌸", "💅", "🚗", "📚", "💰", "🏡", "✈️")
ELLIPSIS = "…"
NBSP = "\u00a0"


@dataclass(frozen=True)
class _Person:
    """A user and the Pinterest account they post from."""

    first_name: str
    last_name: str
    age: int
    date_joined: datetime
    poster_name: str
    follower_count: str


def generate_tables(seed: int = 42, rows: int = SPEC_ROWS) -> SourceTables:
    """The three source tables, ``rows`` rows each, row numbers ``0 .. rows-1``."""
    if rows < 0:
        raise ValueError(f"rows must be >= 0, got {rows}")
    rng = random.Random(seed)
    fake = Faker("en_US")
    fake.seed_instance(seed)
    plan = _placeholder_plan(rng, rows)
    people: list[_Person] = []
    pins, geos, users = [], [], []
    for row in range(rows):
        if people and rng.random() < REPEAT_PERSON:
            person = rng.choice(people)
        else:
            person = _new_person(rng, fake)
            people.append(person)
        pins.append(_pin(rng, fake, row, person) | plan[row])
        geos.append(_geo(rng, fake, row))
        users.append(_user(row, person))
    return SourceTables(pin=pins, geo=geos, user=users)


def _scaled(count: int, rows: int) -> int:
    return round(count * rows / SPEC_ROWS)


def _pick(rng: random.Random, pool: list[int], *counts: int) -> list[list[int]]:
    """Disjoint random groups of ``pool``, one of each size in ``counts``."""
    chosen = rng.sample(pool, min(sum(counts), len(pool)))
    groups, start = [], 0
    for count in counts:
        groups.append(chosen[start : start + count])
        start += count
    return groups


def _placeholder_plan(rng: random.Random, rows: int) -> list[dict[str, Any]]:
    """Per row, the pin fields decided up front: non-image media and every placeholder."""
    plan: list[dict[str, Any]] = [{} for _ in range(rows)]

    def assign(group: list[int], **fields: Any) -> None:
        for row in group:
            plan[row].update(fields)

    def n(count: int) -> int:
        return _scaled(count, rows)

    broken, story, video, unknown = _pick(
        rng,
        list(range(rows)),
        n(BROKEN_POSTS),
        n(STORY_POSTS) - n(BROKEN_POSTS),
        n(VIDEO_POSTS),
        n(UNKNOWN_MEDIA_POSTS),
    )
    assign(broken + story, is_image_or_video=STORY, description=STORY_DESCRIPTION)
    assign(video, is_image_or_video=VIDEO)
    assign(unknown, is_image_or_video=None)
    assign(broken, **{field: PLACEHOLDERS[field] for field in BROKEN_FIELDS}, downloaded=0)

    story_rows = set(broken + story)
    not_story = [row for row in range(rows) if row not in story_rows]
    no_description, untitled = _pick(rng, not_story, n(NO_DESCRIPTION_POSTS), n(UNTITLED_POSTS))
    assign(no_description, description=NO_DESCRIPTION)
    assign(untitled, description=UNTITLED)

    broken_rows = set(broken)
    not_broken = [row for row in range(rows) if row not in broken_rows]
    (no_tags,) = _pick(rng, not_broken, n(NO_TAGS_POSTS) - len(broken))
    assign(no_tags, tag_list=PLACEHOLDERS["tag_list"])
    src_error, src_null = _pick(
        rng, not_broken, n(IMAGE_SRC_ERROR_POSTS) - len(broken), n(IMAGE_SRC_NULL_POSTS)
    )
    assign(src_error, image_src=PLACEHOLDERS["image_src"])
    assign(src_null, image_src=None)
    (not_downloaded,) = _pick(rng, not_broken, n(NOT_DOWNLOADED_POSTS) - len(broken))
    assign(not_downloaded, downloaded=0)
    return plan


def _new_person(rng: random.Random, fake: Faker) -> _Person:
    first_name, last_name = fake.first_name(), fake.last_name()
    style = rng.randrange(4)  # the account name: full name, "X | Y Ideas", company, handle
    if style == 0:
        account = f"{first_name} {last_name}"
    elif style == 1:
        account = f"{first_name} | {fake.word().title()} Ideas"
    elif style == 2:
        account = fake.company()
    else:
        account = fake.user_name()
    return _Person(
        first_name=first_name,
        last_name=last_name,
        age=int(rng.triangular(MIN_AGE, MAX_AGE + 1, MODE_AGE)),
        date_joined=_moment(rng, JOINED_FROM, JOINED_UNTIL),
        poster_name=account,
        follower_count=_follower_count(rng),
    )


def _follower_count(rng: random.Random) -> str:
    """A follower count in one of the source's spellings: ``0``, ``437``, ``1.2k``, ``26k``, ``1M``."""
    roll = rng.random()
    if roll < 0.02:
        return "0"
    if roll < 0.25:
        return str(rng.randint(1, 999))
    if roll < 0.27:
        return f"{rng.randint(1, 9)}.{rng.randint(1, 9)}k"
    if roll < 0.92:
        return f"{rng.randint(1, 999)}k"
    return f"{rng.randint(1, 9)}M"


def _pin(rng: random.Random, fake: Faker, row: int, person: _Person) -> dict[str, Any]:
    category = rng.choice(CATEGORIES)
    tags = rng.sample(TAGS[category], rng.randint(2, 5))
    title = " ".join([tags[0], *fake.words(rng.randint(1, 4))]).title()
    description = fake.sentence(nb_words=rng.randint(6, 24))
    values = {
        "index": row,
        "unique_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        "title": _real_world(rng, title),
        "description": _real_world(rng, description),
        "poster_name": person.poster_name,
        "follower_count": person.follower_count,
        "tag_list": ",".join(tags),
        "is_image_or_video": IMAGE,
        "image_src": _image_src(rng),
        "downloaded": 1,
        "save_location": f"Local save in /data/{category}",
        "category": category,
    }
    return {field: values[field] for field in RAW_FIELDS[Table.PIN]}


def _real_world(rng: random.Random, text: str) -> str:
    """Roughen generated text the way scraped text is: scripts, emoji, truncation, spacing."""
    roll = rng.random()
    if roll < 0.04:
        text = rng.choice(NON_LATIN_TEXT)
    elif roll < 0.07:
        text = text.rstrip(".")[: rng.randint(10, 40)].rstrip() + ELLIPSIS
    elif roll < 0.09:
        text = text.replace(" ", NBSP, 1)
    elif roll < 0.095:
        text = rng.choice((" ", "  ", "\n")) + text + rng.choice(("", " ", "\t"))
    elif roll < 0.097:
        return rng.choice(("", " ", "   "))
    if rng.random() < 0.07:
        text = f"{text} {rng.choice(EMOJI)}"
    return text


def _image_src(rng: random.Random) -> str:
    digest = f"{rng.getrandbits(128):032x}"
    extension = "png" if rng.random() < 0.1 else "jpg"
    return f"https://i.pinimg.com/originals/{digest[:2]}/{digest[2:4]}/{digest[4:6]}/{digest}.{extension}"


def _geo(rng: random.Random, fake: Faker, row: int) -> dict[str, Any]:
    latitude = rng.uniform(0, 90) * (-1 if rng.random() < SOUTHERN_SHARE else 1)
    return {
        "ind": row,
        "timestamp": _moment(rng, POSTED_FROM, POSTED_UNTIL),
        "latitude": round(latitude, 6),
        "longitude": round(rng.uniform(-180, 180), 6),
        "country": fake.country(),
    }


def _user(row: int, person: _Person) -> dict[str, Any]:
    return {
        "ind": row,
        "first_name": person.first_name,
        "last_name": person.last_name,
        "age": person.age,
        "date_joined": person.date_joined,
    }


def _moment(rng: random.Random, start: datetime, end: datetime) -> datetime:
    """A naive UTC datetime in ``start .. end`` inclusive, whole seconds."""
    return start + timedelta(seconds=rng.randint(0, int((end - start).total_seconds())))
