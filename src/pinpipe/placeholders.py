"""The source's placeholder strings and categories (DATA_SPEC.md section 1).

The original scraper wrote these strings where it could not read a value. The synthetic source
writes them at the documented frequencies, and the cleaning rules turn them into nulls: both
import them from here so the two can never disagree.
"""

from __future__ import annotations

# The 13 pin categories, near-uniform in the source.
CATEGORIES: tuple[str, ...] = (
    "christmas",
    "tattoos",
    "quotes",
    "art",
    "education",
    "home-decor",
    "travel",
    "mens-fashion",
    "vehicles",
    "diy-and-crafts",
    "finance",
    "event-planning",
    "beauty",
)

STORY_DESCRIPTION = "No description available Story format"
"""The description of story-format posts (the most frequent placeholder)."""
NO_DESCRIPTION = "No description available"
UNTITLED = "Untitled"

# Placeholder by pin field. ``description`` has three, every other field one.
PLACEHOLDERS: dict[str, str | tuple[str, ...]] = {
    "title": "No Title Data Available",
    "description": (STORY_DESCRIPTION, NO_DESCRIPTION, UNTITLED),
    "poster_name": "User Info Error",
    "follower_count": "User Info Error",
    # The words "No Tags Available" spelled out with commas, as the scraper joined them.
    "tag_list": "N,o, ,T,a,g,s, ,A,v,a,i,l,a,b,l,e",
    "image_src": "Image src error.",
}


def placeholders_of(field: str) -> tuple[str, ...]:
    """Every placeholder of a pin field, as a tuple; empty for fields that have none."""
    value = PLACEHOLDERS.get(field, ())
    return (value,) if isinstance(value, str) else value
