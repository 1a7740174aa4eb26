"""Raw records as clients send them (DATA_SPEC.md section 1) and their clean rows, by hand."""

from __future__ import annotations

from datetime import datetime, timezone


def pin(index: int, unique_id: str, **fields: object) -> dict:
    record = {
        "index": index,
        "unique_id": unique_id,
        "title": "Ideas for the garden",
        "description": "No description available Story format",
        "poster_name": "Maple Tree",
        "follower_count": "26k",
        "tag_list": "garden,ideas",
        "is_image_or_video": "image",
        "image_src": "https://i.pinimg.com/x.jpg",
        "downloaded": 1,
        "save_location": "Local save in /data/home-decor",
        "category": "home-decor",
    }
    record.update(fields)
    return record


def clean_pin(index: int, unique_id: str, **fields: object) -> dict:
    row = {
        "ind": index,
        "unique_id": unique_id,
        "title": "Ideas for the garden",
        "description": None,
        "follower_count": 26_000,
        "poster_name": "Maple Tree",
        "tag_list": "garden,ideas",
        "is_image_or_video": "image",
        "image_src": "https://i.pinimg.com/x.jpg",
        "save_location": "/data/home-decor",
        "category": "home-decor",
        "downloaded": 1,
    }
    row.update(fields)
    return row


def geo(ind: int, country: str = "Cote d'Ivoire") -> dict:
    return {"ind": ind, "timestamp": "2020-08-28T03:52:47Z", "latitude": -5.5, "longitude": 12.25,
            "country": country}


def clean_geo(ind: int, country: str = "Cote d'Ivoire") -> dict:
    return {"ind": ind, "country": country, "coordinates": [-5.5, 12.25],
            "timestamp": datetime(2020, 8, 28, 3, 52, 47, tzinfo=timezone.utc)}


def user(ind: int, first: str = "Ada", last: str = "Lovelace", age: int = 36) -> dict:
    return {"ind": ind, "first_name": first, "last_name": last, "age": age,
            "date_joined": "2016-01-02T03:04:05Z"}


def clean_user(ind: int, name: str = "Ada Lovelace", age: int = 36) -> dict:
    return {"ind": ind, "user_name": name, "age": age,
            "date_joined": datetime(2016, 1, 2, 3, 4, 5, tzinfo=timezone.utc)}
